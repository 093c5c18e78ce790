/*
 * waiter.h - a synchronous caller's wait for a coordinator's verdict
 * (waiter.c): the bridge between coord_write/coord_read, which complete
 * through a callback, and the blocking kv_* calls.
 */
#ifndef KV_WAITER_H
#define KV_WAITER_H

#include "log.h"
#include "object.h"

typedef struct waiter waiter_t;

/* A new waiter holding two references: the waiting thread's (dropped by
 * waiter_wait) and the callback's (dropped by waiter_done). NULL when out
 * of memory. */
waiter_t *waiter_new(void);

/* A coord_done_fn (arg is the waiter): records the verdict, moves *result
 * (may be NULL) into the waiter, wakes the waiting thread and drops the
 * callback's reference. Never blocks beyond the waiter's own lock, so it
 * may run on an NNG thread; harmless after waiter_wait gave up. */
void waiter_done(void *arg, int rc, int acked, int needed, obj_t *result);

/*
 * Waits up to bound_ms (monotonic) for waiter_done, then drops the waiting
 * thread's reference: w must not be used afterwards. Returns the verdict's
 * code with *acked, *needed and *obj (obj may be NULL: the result is freed)
 * filled in; or, if the bound passed first, KV_ETIMEDOUT with them left
 * unchanged and an error logged to log: every request the coordinator
 * sends has a deadline below the bound, so a verdict that never came is a
 * bug somewhere. A late verdict then only frees the waiter.
 */
int waiter_wait(waiter_t *w, int bound_ms, const kvlog_t *log, int *acked,
                int *needed, obj_t *obj);

#endif /* KV_WAITER_H */
