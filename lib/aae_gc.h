/*
 * aae_gc.h - tombstone collection (aae_gc.c): purging deletes every
 * replica of a range is known to hold.
 */
#ifndef KV_AAE_GC_H
#define KV_AAE_GC_H

#include "codec.h"
#include "node.h"
#include "replica.h"

/* One sweep: purges the tombstones past tombstone_grace_ms that this node
 * is the first owner of, where every owner holds the same object. Runs on
 * the runner thread, after a pass of exchanges. */
void aae_sweep(kv_t *kv);

/* The answers to a peer's AAE_OP_TOMB_CHECK (one byte per tombstone: held
 * exactly) and AAE_OP_TOMB_PURGE (the count purged here). Bounds-checked:
 * KV_EPROTO. */
int aae_handle_tomb_check(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);
int aae_handle_tomb_purge(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);

#endif /* KV_AAE_GC_H */
