/*
 * clock.h - the monotonic clock behind every timed wait in libkvdist.
 *
 * A deadline must not move when the wall clock is stepped (NTP, an
 * operator, a VM resumed): pthread_cond_timedwait measures against the
 * clock its condition variable was created with, CLOCK_REALTIME unless
 * told otherwise, so a condition variable that is waited on with a
 * deadline is created with clk_cond_init and its deadline computed with
 * clk_deadline. Both must agree; mixing them makes a wait return at once
 * or sleep for the length of the clock step.
 *
 * Wall-clock time that is data (the timestamps stored with values, the
 * time of the last anti-entropy pass shown to operators) stays
 * CLOCK_REALTIME: clk_wall_us, never used for a deadline.
 *
 * Owns no state; everything is inline.
 */
#ifndef KV_CLOCK_H
#define KV_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Wall-clock microseconds since 1970: informative timestamps only (a
 * sibling's time, the last pass of anti-entropy), never an order or a
 * deadline. */
static inline int64_t clk_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds on the monotonic clock: for intervals and deadlines only,
 * its origin means nothing. */
static inline int64_t clk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Microseconds on the monotonic clock, for measuring round trips. */
static inline int64_t clk_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The absolute monotonic time ms milliseconds from now, for
 * pthread_cond_timedwait on a condition made by clk_cond_init. A negative
 * ms counts as 0 (the wait returns at once). */
static inline struct timespec clk_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0) {
        ms = 0;
    }
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Initialises cv to measure timed waits on CLOCK_MONOTONIC. Returns 0 or
 * the pthread error (only ENOMEM in practice, as pthread_cond_init). */
static inline int clk_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0) {
        return rc;
    }
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(cv, &attr);
    }
    pthread_condattr_destroy(&attr);
    return rc;
}

#endif /* KV_CLOCK_H */
