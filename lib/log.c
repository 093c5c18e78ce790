/*
 * log.c - formats a message and hands it to the application's logger.
 * Owns nothing: the logger and its argument belong to the application.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

void log_emit(const kvlog_t *lg, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is acceptable for a log line; it never overflows. */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lg->fn(lg->arg, level, msg);
}
