/*
 * waiter.c - one synchronous call's wait for its coordinator's verdict.
 *
 * Owns waiter_t. It lives on the heap and is reference-counted, the
 * waiting thread holding one reference and the verdict callback the
 * other, because the wait is bounded: a caller that gave up has returned,
 * and a verdict arriving after that must find the waiter still there
 * instead of the caller's freed stack frame. Whoever drops the last
 * reference frees it, with any result the late verdict left in it.
 *
 * Lock: w->mu protects every field after waiter_new returns (refs, done,
 * and the verdict: rc, acked, needed, obj). The condition measures the
 * monotonic clock (clock.h), so a step of the wall clock does not move the
 * bound.
 */
#include "waiter.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "clock.h"

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;  /* the waiting thread's and the callback's */
    bool done; /* the verdict is in */
    int rc;
    int acked;
    int needed;
    obj_t obj; /* a read's result, owned until the waiting thread takes it */
};

waiter_t *waiter_new(void)
{
    waiter_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        free(w);
        return NULL;
    }
    if (clk_cond_init(&w->cv) != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    w->refs = 2;
    obj_init(&w->obj);
    return w;
}

/* Drops one reference; the last one frees the waiter and what it holds. */
static void waiter_release(waiter_t *w)
{
    pthread_mutex_lock(&w->mu);
    bool gone = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (gone) {
        obj_free(&w->obj);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

void waiter_done(void *arg, int rc, int acked, int needed, obj_t *result)
{
    waiter_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->acked = acked;
    w->needed = needed;
    if (result != NULL) {
        obj_free(&w->obj);
        w->obj = *result;
        obj_init(result);
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    waiter_release(w);
}

int waiter_wait(waiter_t *w, int bound_ms, const kvlog_t *log, int *acked,
                int *needed, obj_t *obj)
{
    struct timespec deadline = clk_deadline(bound_ms);
    pthread_mutex_lock(&w->mu);
    int wrc = 0;
    while (!w->done && wrc == 0) {
        wrc = pthread_cond_timedwait(&w->cv, &w->mu, &deadline);
    }
    bool lost = !w->done;
    int rc = KV_ETIMEDOUT;
    if (!lost) {
        rc = w->rc;
        *acked = w->acked;
        *needed = w->needed;
        if (obj != NULL) {
            obj_free(obj);
            *obj = w->obj;
            obj_init(&w->obj);
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (lost) {
        KV_LOG(log, KV_LOG_ERROR,
               "kv: no verdict from the coordinator within %d ms; every "
               "request has a shorter deadline, so a completion was lost "
               "(a bug): the call returns KV_ETIMEDOUT",
               bound_ms);
    }
    waiter_release(w);
    return rc;
}
