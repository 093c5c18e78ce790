/*
 * log.h - the library's logging: messages go to the callback the
 * application installed (kv_options_set_logger), or nowhere. The level is
 * checked before anything is formatted, so a silent logger costs one branch.
 */
#ifndef KV_LOG_H
#define KV_LOG_H

#include "kvdist.h"

typedef struct kvlog {
    kv_log_fn fn;
    void *arg;
    int level; /* most verbose level delivered */
} kvlog_t;

void log_emit(const kvlog_t *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KV_LOG(lg, lvl, ...)                                                   \
    do {                                                                       \
        if ((lg)->fn != NULL && (lvl) <= (lg)->level) {                        \
            log_emit((lg), (lvl), __VA_ARGS__);                                \
        }                                                                      \
    } while (0)

#endif /* KV_LOG_H */
