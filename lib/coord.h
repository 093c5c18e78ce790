/*
 * coord.h - quorum reads and writes across a key's replicas, and the
 * handler for requests from peers (coord.c).
 */
#ifndef KV_COORD_H
#define KV_COORD_H

#include <stdbool.h>
#include <stddef.h>

#include "node.h"
#include "object.h"
#include "rpc.h"
#include "vclock.h"

/* How much longer a forwarder waits than the coordinator it forwarded to,
 * so that the coordinator's own verdict (e.g. quorum not reached) arrives
 * before the forwarder gives up. A verdict therefore comes within a call's
 * timeout plus this margin (kv.c bounds its wait by it). */
#define COORD_FORWARD_MARGIN_MS 500

/* Called exactly once per coord_write/coord_read, possibly before they
 * return, possibly on an NNG thread. For reads, result is the merged
 * object (the callee may move it out and obj_init() the original). */
typedef void (*coord_done_fn)(void *arg, int rc, int acked, int needed,
                              obj_t *result);

/*
 * A write: coordinated here if this node is in the key's preference list
 * (draws the dot, stores locally, sends the object to the other replicas,
 * completes on w acknowledgements), else forwarded to a node that is
 * (unless !may_forward: a write forwarded here is never forwarded again,
 * it fails with KV_EUNAVAIL).
 * ctx NULL: supersede what the coordinator holds (kv_put semantics).
 * w and timeout_ms of 0 mean the node defaults.
 * in: the peer's request this write is made for, while its handler runs
 * (a forwarded COORD_PUT), or NULL. For an entry of a received batch the
 * local write joins the batch's write group (durable when the batch's
 * dispatch ends, acknowledged then) and the replica writes are corked
 * with the batch's other requests; otherwise the local write is durable
 * before this returns. coord_read's `in` corks its replica reads alike.
 */
void coord_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                 const void *val, size_t vlen, bool tombstone, uint64_t token,
                 int w, int timeout_ms, bool may_forward, const rpc_req_t *in,
                 coord_done_fn done, void *arg);

/* A read: asks the key's replicas, completes on r replies with their
 * objects merged, then read-repairs replicas that were behind.
 * may_block: the caller's thread may wait for the disk (an application's
 * thread); otherwise (NNG's threads) a local read that must read a file is
 * handed to the pool, and nothing here blocks. */
void coord_read(kv_t *kv, const void *key, size_t klen, int r, int timeout_ms,
                bool may_block, const rpc_req_t *in, coord_done_fn done,
                void *arg);

/* Registers the handlers of the replica requests (REPLICA_PUT/GET,
 * LOCAL_GET) on a node that holds data. Returns 0 or KV_EINVAL. */
int coord_open(kv_t *kv);

/* Answers req with an object (o NULL or empty: absent) and, for COORD_*
 * replies, the quorum counts. */
void coord_reply_obj(rpc_req_t *req, uint8_t type, uint64_t id, int rc,
                     int acked, int needed, const obj_t *o);

/* rpc batch hooks (arg is the kv): the replica writes of one received
 * batch are applied as one group (replica.h), which is the batch's
 * context: handlers find it with replica_group_of(req). */
void *coord_batch_begin(void *arg);
void coord_batch_end(void *arg, void *ctx);

#endif /* KV_COORD_H */
