/*
 * ticker.c - the background thread of ticker.h: start, timed naps on the
 * monotonic clock, kick, stop and join.
 *
 * Owns only the ticker's mutex and condition; see ticker.h for the lock
 * and the lifecycle.
 */
#include "ticker.h"

#include "clock.h"
#include "kvdist.h"

static void *ticker_main(void *arg)
{
    ticker_t *t = arg;
    t->fn(t->arg);
    return NULL;
}

int ticker_init(ticker_t *t)
{
    t->stop = false;
    t->kicked = false;
    t->started = false;
    t->fn = NULL;
    t->arg = NULL;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        return KV_ENOMEM;
    }
    if (clk_cond_init(&t->cv) != 0) {
        pthread_mutex_destroy(&t->mu);
        return KV_ENOMEM;
    }
    return 0;
}

int ticker_start(ticker_t *t, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&t->mu);
    t->stop = false;
    t->kicked = false;
    pthread_mutex_unlock(&t->mu);
    t->fn = fn;
    t->arg = arg;
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        return KV_ENOMEM;
    }
    t->started = true;
    return 0;
}

bool ticker_wait(ticker_t *t, int64_t ms)
{
    struct timespec ts = clk_deadline(ms);
    pthread_mutex_lock(&t->mu);
    int rc = 0;
    /* Loop: a spurious wakeup must not cut a nap short. */
    while (!t->stop && !t->kicked && rc == 0) {
        rc = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    t->kicked = false;
    bool go = !t->stop;
    pthread_mutex_unlock(&t->mu);
    return go;
}

bool ticker_stopping(ticker_t *t)
{
    pthread_mutex_lock(&t->mu);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    return stop;
}

void ticker_kick(ticker_t *t)
{
    pthread_mutex_lock(&t->mu);
    t->kicked = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void ticker_stop(ticker_t *t)
{
    if (!t->started) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    t->started = false;
}

void ticker_destroy(ticker_t *t)
{
    ticker_stop(t);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}
