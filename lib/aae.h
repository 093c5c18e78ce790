/*
 * aae.h - active anti-entropy as the node sees it (aae.c): open, start,
 * stop and close it, ask for a pass and its status, here or on another
 * node. The parts live in aae_index.h (the index and trees replica.c
 * writes through), aae_exchange.h (the exchange protocol) and aae_gc.h
 * (tombstone collection).
 */
#ifndef KV_AAE_H
#define KV_AAE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"
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
/* Follows the ring (cluster_on_ring_change), builds the ring view, loads
 * the trees saved by the last clean close or schedules a rebuild, and
 * starts the background thread. After cluster_open. */
int aae_start(kv_t *kv);
/* Stops the thread (before the transport goes away). */
void aae_stop(kv_t *kv);
/* Stops following the ring, saves the trees when they are complete, frees
 * everything (after the transport, before the cluster and the store
 * close). Safe with NULL state. */
void aae_close(kv_t *kv);

/* kv_repair / kv_repair_status on this node. */
int aae_repair(kv_t *kv);
int aae_status(kv_t *kv, kv_repair_status_t *st);
/* The same on another node, over the wire. */
int aae_remote(kv_t *kv, const char *node_id, uint16_t op,
               kv_repair_status_t *st);

/* Appends the anti-entropy gauges. */
void aae_render_metrics(kv_t *kv, buf_t *b);

#endif /* KV_AAE_H */
