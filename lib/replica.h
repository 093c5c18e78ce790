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

/*
 * Coordinates a write on this replica: draws a new dot, drops the local
 * siblings that ctx covers (ctx NULL: every local sibling, i.e. the simple
 * kv_put semantics), stores the result durably. If result is not NULL it
 * receives the new object (what replication sends to the other replicas).
 * Returns 0, KV_ECORRUPT (the stored object is damaged: nothing written),
 * KV_EIO, KV_ENOMEM.
 */
int replica_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                  const void *val, size_t vlen, bool tombstone, obj_t *result);

/* Reads the local object (empty if absent). Returns 0, KV_ECORRUPT, KV_EIO,
 * KV_ENOMEM. */
int replica_read(kv_t *kv, const void *key, size_t klen, obj_t *out);

/* Joins a remote object into the local one and stores the result if it
 * changed (*changed, may be NULL). Returns as replica_write. */
int replica_merge(kv_t *kv, const void *key, size_t klen, const obj_t *in,
                  bool *changed);

/* Deletes the key's object if its digest is still `digest` (a tombstone
 * every replica was confirmed to hold). *purged says whether it did.
 * Returns 0, KV_EIO, KV_ENOMEM. */
int replica_purge(kv_t *kv, const void *key, size_t klen, uint64_t digest,
                  bool *purged);

/* Rewrites the key's anti-entropy index entry from its stored object (or
 * drops it when the object is gone). Returns 0, KV_EIO, KV_ENOMEM. */
int replica_reindex(kv_t *kv, const void *key, size_t klen);

#endif /* KV_REPLICA_H */
