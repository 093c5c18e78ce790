/*
 * ticker.h - a background thread that naps between rounds and stops on
 * request: the shape of the gossip ticker (cluster.c) and the hint
 * delivery thread (handoff.c).
 *
 * The thread's function loops on ticker_wait, which sleeps on the
 * monotonic clock (clock.h) until a deadline, a ticker_kick or
 * ticker_stop, and returns false once the ticker is stopping. Its round
 * of work runs without the ticker's lock, so ticker_stop waits at most
 * for the round in progress. A kick is remembered until the next
 * ticker_wait returns, so a kick that arrives while the thread is busy
 * is not lost.
 *
 * Lifecycle: ticker_init, ticker_start (optional: a node without peers
 * never starts its threads), ticker_stop (waits for the thread; again is
 * a no-op), ticker_destroy. ticker_kick and ticker_stopping may be called
 * from any thread between init and destroy, started or not.
 *
 * Lock: mu protects stop and kicked. thread and started belong to the
 * owner's thread that calls ticker_start and ticker_stop.
 */
#ifndef KV_TICKER_H
#define KV_TICKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ticker {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC (clk_cond_init) */
    bool stop;         /* under mu */
    bool kicked;       /* under mu */
    bool started;      /* owner's thread only */
    pthread_t thread;
    void (*fn)(void *arg);
    void *arg;
} ticker_t;

/* Prepares t (its lock and monotonic condition). Returns 0 or KV_ENOMEM
 * (nothing to destroy). */
int ticker_init(ticker_t *t);

/* Starts a thread running fn(arg) on an initialised ticker that is not
 * running. Returns 0 or KV_ENOMEM (no thread: t stays not started). */
int ticker_start(ticker_t *t, void (*fn)(void *arg), void *arg);

/* On the ticker's thread: sleeps until ms milliseconds have passed (a
 * negative ms counts as 0), a kick, or a stop. Returns true to go on with
 * the next round, false when the ticker is stopping. */
bool ticker_wait(ticker_t *t, int64_t ms);

/* Whether ticker_stop was called: for long rounds that check between
 * steps. */
bool ticker_stopping(ticker_t *t);

/* Ends the current or next ticker_wait early. */
void ticker_kick(ticker_t *t);

/* Asks the thread to stop and waits for it to return; later waits return
 * false at once. Not from the ticker's own thread. No-op when the thread
 * is not running. */
void ticker_stop(ticker_t *t);

/* Stops the ticker if it runs and frees its lock and condition. */
void ticker_destroy(ticker_t *t);

#endif /* KV_TICKER_H */
