/*
 * pool.h - the node's worker threads (pool.c): where replica work runs
 * (RocksDB reads and writes, waits on a key's lock, merges), so that NNG's
 * few callback threads only hand work over and a slow disk never stalls
 * the transport, gossip or the front ends.
 */
#ifndef KV_POOL_H
#define KV_POOL_H

#include <stddef.h>

typedef struct pool pool_t;
typedef void (*pool_fn)(void *arg);

/* Starts `threads` workers with room for `queue_max` waiting tasks.
 * Returns 0, KV_ENOMEM. */
int pool_create(unsigned threads, size_t queue_max, pool_t **out);
/*
 * Queues fn(arg) to run on a worker. Returns 0, or (nothing queued, fn
 * never called) KV_EBUSY when queue_max tasks are waiting already, or
 * KV_ECLOSED once pool_stop has begun. Never blocks.
 */
int pool_submit(pool_t *p, pool_fn fn, void *arg);
/* Refuses new tasks, runs every task already queued, and joins the
 * workers. NULL is a no-op; calling it twice too. */
void pool_stop(pool_t *p);
/* Frees a stopped pool. NULL is a no-op. */
void pool_free(pool_t *p);

#endif /* KV_POOL_H */
