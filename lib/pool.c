/*
 * pool.c - a fixed set of worker threads taking tasks from one bounded
 * FIFO queue (pool.h says what runs there and why).
 *
 * Bounded, because a node that cannot keep up must say so (KV_EBUSY, an
 * answer the coordinator counts as a failed replica) rather than queue
 * without limit while its callers time out. The queue is a ring of
 * queue_max slots. Owns the threads and the ring; `mu` guards the ring,
 * `n`, `head` and `stopping`; `cv` wakes a worker for a task or the stop.
 */
#include "pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "kvdist.h"

typedef struct pool_task {
    pool_fn fn;
    void *arg;
} pool_task_t;

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pool_task_t *ring;
    size_t cap;
    size_t head; /* the oldest task */
    size_t n;    /* tasks waiting */
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
};

static void *pool_main(void *arg)
{
    pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->n == 0 && !p->stopping) {
            pthread_cond_wait(&p->cv, &p->mu);
        }
        if (p->n == 0) {
            break; /* stopping, and nothing left to run */
        }
        pool_task_t t = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->n--;
        pthread_mutex_unlock(&p->mu);
        t.fn(t.arg);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pool_create(unsigned threads, size_t queue_max, pool_t **out)
{
    *out = NULL;
    pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return KV_ENOMEM;
    }
    p->ring = calloc(queue_max, sizeof(*p->ring));
    p->threads = calloc(threads, sizeof(*p->threads));
    if (p->ring == NULL || p->threads == NULL) {
        free(p->ring);
        free(p->threads);
        free(p);
        return KV_ENOMEM;
    }
    p->cap = queue_max;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (; p->nthreads < threads; p->nthreads++) {
        if (pthread_create(&p->threads[p->nthreads], NULL, pool_main, p) != 0) {
            pool_stop(p);
            pool_free(p);
            return KV_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

int pool_submit(pool_t *p, pool_fn fn, void *arg)
{
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    if (p->stopping) {
        rc = KV_ECLOSED;
    } else if (p->n == p->cap) {
        rc = KV_EBUSY;
    } else {
        p->ring[(p->head + p->n) % p->cap] = (pool_task_t){fn, arg};
        p->n++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void pool_stop(pool_t *p)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    bool already = p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (already) {
        return;
    }
    for (unsigned i = 0; i < p->nthreads; i++) {
        pthread_join(p->threads[i], NULL);
    }
}

void pool_free(pool_t *p)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->ring);
    free(p->threads);
    free(p);
}
