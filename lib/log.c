/*
 * log.c - formats a message and hands it to the application's logger,
 * folding identical consecutive lines into a count (log.h says why).
 *
 * Owns struct log_repeat: the last line delivered and how often it has
 * been repeated since; its mutex guards every field. The logger and its
 * argument belong to the application. The logger is called outside the
 * mutex, so a logger that itself logs (or blocks) cannot deadlock us; two
 * threads may then deliver their lines in either order, as before.
 */
#include "log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_LINE_MAX 1024

struct log_repeat {
    pthread_mutex_t mu;
    char last[LOG_LINE_MAX]; /* "" before the first line */
    int last_level;
    uint64_t repeats;  /* suppressed copies of last, not yet reported */
    int64_t since_ms;  /* when the count was last reported (monotonic) */
};

static int64_t log_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int log_init(kvlog_t *lg, kv_log_fn fn, void *arg, int level)
{
    *lg = (kvlog_t){fn, arg, level, NULL};
    if (fn == NULL) {
        return 0; /* nothing is delivered, nothing to fold */
    }
    struct log_repeat *rep = calloc(1, sizeof(*rep));
    if (rep == NULL) {
        return KV_ENOMEM;
    }
    pthread_mutex_init(&rep->mu, NULL);
    lg->rep = rep;
    return 0;
}

static void log_report(const kvlog_t *lg, int level, uint64_t repeats,
                       int64_t ms)
{
    char msg[128];
    snprintf(msg, sizeof(msg),
             "last message repeated %" PRIu64 " times in %" PRId64 " ms",
             repeats, ms);
    lg->fn(lg->arg, level, msg);
}

void log_fini(kvlog_t *lg)
{
    struct log_repeat *rep = lg->rep;
    if (rep == NULL) {
        return;
    }
    if (rep->repeats > 0) {
        log_report(lg, rep->last_level, rep->repeats,
                   log_now_ms() - rep->since_ms);
    }
    pthread_mutex_destroy(&rep->mu);
    free(rep);
    lg->rep = NULL;
}

void log_emit(const kvlog_t *lg, int level, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is acceptable for a log line; it never overflows. */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct log_repeat *rep = lg->rep;
    if (rep == NULL) {
        lg->fn(lg->arg, level, msg);
        return;
    }
    uint64_t report = 0;
    int report_level = 0;
    int64_t report_ms = 0;
    bool deliver = true;
    int64_t now = log_now_ms();
    pthread_mutex_lock(&rep->mu);
    if (level == rep->last_level && strcmp(msg, rep->last) == 0) {
        deliver = false;
        rep->repeats++;
        if (now - rep->since_ms >= LOG_REPEAT_REPORT_MS) {
            report = rep->repeats;
            report_level = level;
            report_ms = now - rep->since_ms;
            rep->repeats = 0;
            rep->since_ms = now;
        }
    } else {
        report = rep->repeats;
        report_level = rep->last_level;
        report_ms = now - rep->since_ms;
        memcpy(rep->last, msg, sizeof(msg));
        rep->last_level = level;
        rep->repeats = 0;
        rep->since_ms = now;
    }
    pthread_mutex_unlock(&rep->mu);
    if (report > 0) {
        log_report(lg, report_level, report, report_ms);
    }
    if (deliver) {
        lg->fn(lg->arg, level, msg);
    }
}
