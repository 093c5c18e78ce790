/*
 * replica.h - the local replica: reads, coordinated writes and merges of
 * objects in this node's store (replica.c).
 */
#ifndef KV_REPLICA_H
#define KV_REPLICA_H

#include <stdbool.h>
#include <stddef.h>

#include "node.h"
#include "object.h"
#include "vclock.h"

struct rpc_req;

/*
 * Write groups (replica.c explains them): a group, from replica_group_begin
 * to replica_group_end on one thread, stages the writes and merges made
 * into it (the *_grouped calls) so that they become durable together;
 * each one's fn(arg, u, rc) is called once they are (rc 0) or failed to be
 * (KV_EIO), on that thread, at the latest from replica_group_end. An error
 * returned at once means nothing was staged and fn will not be called.
 *
 * While a group is open, every other replica call on its thread that
 * takes a key's stripe (write, merge, purge, reindex) is given it as
 * `open`: such a call commits the group first whenever it could wait for
 * (deadlock on) a stripe the group holds. NULL: no group is open.
 */
typedef struct replica_group replica_group_t;
typedef void (*replica_done_fn)(void *arg, uint64_t u, int rc);

/*
 * Coordinates a write on this replica: draws a new dot, drops the local
 * siblings that ctx covers (ctx NULL: every local sibling, i.e. the simple
 * kv_put semantics), stores the result durably. token (0: none) is the
 * client write's (obj_update). If result is not NULL it
 * receives the new object, and enc (if not NULL) its encoding: what
 * replication sends to the other replicas.
 * Returns 0, KV_ECORRUPT (the stored object is damaged: nothing written),
 * KV_EIO, KV_ENOMEM.
 */
int replica_write(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  const vc_t *ctx, const void *val, size_t vlen, bool tombstone,
                  uint64_t token, obj_t *result, buf_t *enc);

/* Reads the local object (empty if absent). Takes no stripe (RocksDB
 * reads one value consistently), so it needs no open group: it sees what
 * is durable, not what a group has staged. Returns 0, KV_ECORRUPT, KV_EIO,
 * KV_ENOMEM. */
int replica_read(kv_t *kv, const void *key, size_t klen, obj_t *out);
/* replica_read from memory only (store_get_cached), for NNG's threads:
 * STORE_EWOULDBLOCK when it would read a file. */
int replica_read_cached(kv_t *kv, const void *key, size_t klen, obj_t *out);

/* Joins a remote object into the local one and stores the result if it
 * changed (*changed, may be NULL). Returns as replica_write. */
int replica_merge(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  const obj_t *in, bool *changed);

/* Opens a group on the calling thread: NULL when kv holds no data or
 * memory is short (the caller's writes then go one by one). */
replica_group_t *replica_group_begin(kv_t *kv);
/* Commits what g staged (calling every waiting fn) and frees it. NULL is a
 * no-op. */
void replica_group_end(replica_group_t *g);
/* The group of the received batch req is an entry of, while that batch is
 * dispatched (coord.c's batch hooks open one per batch: the batch's
 * context, rpc_req_batch_ctx), else NULL. From req's handler only. */
replica_group_t *replica_group_of(const struct rpc_req *req);
int replica_write_grouped(replica_group_t *g, const void *key, size_t klen,
                          const vc_t *ctx, const void *val, size_t vlen,
                          bool tombstone, uint64_t token, obj_t *result,
                          buf_t *enc, replica_done_fn fn, void *arg,
                          uint64_t u);
int replica_merge_grouped(replica_group_t *g, const void *key, size_t klen,
                          const obj_t *in, replica_done_fn fn, void *arg,
                          uint64_t u);

/* Deletes the key's object if its digest is still `digest` (a tombstone
 * every replica was confirmed to hold). *purged says whether it did.
 * Returns 0, KV_EIO, KV_ENOMEM. */
int replica_purge(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  uint64_t digest, bool *purged);

/* Rewrites the key's anti-entropy index entry from its stored object (or
 * drops it when the object is gone). Returns 0, KV_EIO, KV_ENOMEM. */
int replica_reindex(kv_t *kv, replica_group_t *open, const void *key,
                    size_t klen);

#endif /* KV_REPLICA_H */
