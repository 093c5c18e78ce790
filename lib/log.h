/*
 * log.h - the library's logging: messages go to the callback the
 * application installed (kv_options_set_logger), or nowhere. The level is
 * checked before anything is formatted, so a silent logger costs one branch.
 *
 * A message identical to the one before it (same level, same text) is not
 * delivered again: the repeats are counted and reported as one line
 * ("last message repeated N times") when a different message comes, or
 * every LOG_REPEAT_REPORT_MS while the repeats go on. One failing accept
 * loop or full disk must not write gigabytes of log.
 */
#ifndef KV_LOG_H
#define KV_LOG_H

#include "kvdist.h"

/* While a line keeps repeating, its count is reported this often. */
#define LOG_REPEAT_REPORT_MS 10000

struct log_repeat;

typedef struct kvlog {
    kv_log_fn fn;
    void *arg;
    int level;               /* most verbose level delivered */
    struct log_repeat *rep;  /* repeat suppression; NULL: every line */
} kvlog_t;

/* Sets up lg with repeat suppression. Returns 0 or KV_ENOMEM (lg is then
 * still usable, without suppression). */
int log_init(kvlog_t *lg, kv_log_fn fn, void *arg, int level);
/* Reports a pending repeat count and frees what log_init allocated. */
void log_fini(kvlog_t *lg);

void log_emit(const kvlog_t *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KV_LOG(lg, lvl, ...)                                                   \
    do {                                                                       \
        if ((lg)->fn != NULL && (lvl) <= (lg)->level) {                        \
            log_emit((lg), (lvl), __VA_ARGS__);                                \
        }                                                                      \
    } while (0)

#endif /* KV_LOG_H */
