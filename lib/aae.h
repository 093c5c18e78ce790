/*
 * aae.h - active anti-entropy: the per-key digest index, the Merkle trees
 * of the ranges this node replicates, exchanges with the other replicas,
 * and tombstone garbage collection (aae.c).
 */
#ifndef KV_AAE_H
#define KV_AAE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"
#include "object.h"
#include "rpc.h"
#include "wire.h"

/* Operations of a WIRE_AE message (its flags field). */
enum aae_op {
    AAE_OP_HASHES = 1,     /* tree nodes under given parents */
    AAE_OP_KEYS = 2,       /* (key, digest) pairs of given leaves */
    AAE_OP_FETCH = 3,      /* objects of given keys */
    AAE_OP_PUSH = 4,       /* objects to merge */
    AAE_OP_TOMB_CHECK = 5, /* does the replica hold these tombstones? */
    AAE_OP_TOMB_PURGE = 6, /* purge them if unchanged */
    AAE_OP_REPAIR = 7,     /* start a pass now */
    AAE_OP_STATUS = 8      /* progress and each range's root */
};

/* Sets up the index (a store is required) and registers the WIRE_AE
 * handler when the node has a transport; trees come with aae_start. */
int aae_open(kv_t *kv);
/* Builds the ring view, loads the trees saved by the last clean close or
 * schedules a rebuild, and starts the background thread (cluster only). */
int aae_start(kv_t *kv);
/* Stops the thread (before the transport goes away). */
void aae_stop(kv_t *kv);
/* Saves the trees when they are complete, frees everything (before the
 * store closes). Safe with NULL state. */
void aae_close(kv_t *kv);

/* The digest stored in the index for an encoded object. */
uint64_t aae_digest(const void *enc, size_t len);

/*
 * Writes an object (enc) and its index entry in one atomic batch and
 * updates the tree; old_digest is the digest of the object it replaces
 * (NULL: none). enc NULL deletes the key. The caller holds the key's lock.
 */
int aae_write(kv_t *kv, const void *key, size_t klen, const obj_t *o,
              const void *enc, size_t enclen, const uint64_t *old_digest);

/* A write's change to its Merkle leaf, applied once its batch is written. */
typedef struct aae_toggle {
    uint64_t h; /* the key's ring hash */
    uint64_t x; /* XOR of the entries it removes and adds */
} aae_toggle_t;

/* aae_write in two steps, so several writes share one RocksDB batch (a
 * replica applying a batch of writes from a peer): aae_stage adds one
 * write to b and fills *t; aae_commit writes b and applies n toggles.
 * Returns 0, KV_ENOMEM (stage); 0, KV_EIO (commit). */
int aae_stage(kv_t *kv, store_batch_t *b, const void *key, size_t klen,
              const obj_t *o, const void *enc, size_t enclen,
              const uint64_t *old_digest, aae_toggle_t *t);
int aae_commit(kv_t *kv, store_batch_t *b, const aae_toggle_t *t, size_t n);


/* kv_repair / kv_repair_status on this node. */
int aae_repair(kv_t *kv);
int aae_status(kv_t *kv, kv_repair_status_t *st);
/* The same on another node, over the wire. */
int aae_remote(kv_t *kv, const char *node_id, uint16_t op,
               kv_repair_status_t *st);

/* Appends the anti-entropy gauges. */
void aae_render_metrics(kv_t *kv, buf_t *b);

#endif /* KV_AAE_H */
