/*
 * node.h - struct kv, the state of one node, shared by the files that
 * implement it (kv.c: the public entry points and the handle's lifecycle;
 * replica.c: the local replica). Everything hangs off this struct: there is
 * no mutable global state, so several nodes can live in one process.
 */
#ifndef KV_NODE_H
#define KV_NODE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "kvdist.h"
#include "log.h"
#include "metrics.h"
#include "object.h"
#include "options.h"
#include "store.h"

/* The worker pool (pool.h): threads, because RocksDB calls block (on the
 * WAL, a key's lock, a fsync with sync=fsync), so more workers than cores
 * keep the cores busy; and the tasks that may wait, after which a node
 * answers KV_EBUSY rather than queue past every caller's deadline. */
#define NODE_WORKERS 8
#define NODE_WORK_QUEUE 4096

/* Lock stripes serialising read-modify-write of one key (a power of two). */
#define NODE_KEY_LOCKS 1024

struct kv {
    kv_config_t cfg;     /* immutable after kv_open */
    kvlog_t log;         /* immutable after kv_open */
    obj_limits_t limits; /* immutable after kv_open */
    auth_t auth;         /* the front ends' password; immutable after
                            kv_open */
    store_t *store;      /* NULL for role=client */
    metrics_t metrics;

    /* This incarnation's actor id and its dot counter (vclock.c explains
     * why both are new at every open). */
    uint64_t actor;
    _Atomic uint64_t counter;

    pthread_mutex_t key_locks[NODE_KEY_LOCKS];

    /* The peer layer; both NULL for an embedded one-node store (no listen,
     * no join). */
    struct rpc *rpc;
    struct cluster *cluster;
    struct handoff *handoff; /* NULL for role=client */
    struct aae *aae;         /* NULL for role=client */
    struct resp *resp;       /* the RESP front end; NULL unless resp is set */
    struct pool *pool;       /* replica work off NNG's threads (pool.h); NULL
                                for an embedded store with no front end */
    struct http *http;       /* NULL unless the http option is set */

    /* Client connections (HTTP + RESP) open now, against max_clients
     * (resolved at kv_open: never 0 there). Atomic: admitted and released
     * from the front ends' NNG callbacks without a lock. */
    _Atomic unsigned clients;
    unsigned max_clients;

    /* Lifecycle: life_mu protects closed and inflight. */
    pthread_mutex_t life_mu;
    pthread_cond_t life_cv;
    bool closed;
    unsigned inflight;
};

/* Every call that touches the node from outside (the public API, the RESP
 * front end) is bracketed by these, so kv_shutdown can wait for it.
 * node_enter returns 0 or KV_ECLOSED. */
int node_enter(kv_t *kv);
void node_leave(kv_t *kv);

/* A front end admits each client connection it accepts: true when it
 * fits under max_clients (the caller then owns one slot and gives it back
 * with node_client_release), false when the node is full (nothing
 * taken: answer "max number of clients reached" and close). */
bool node_client_admit(kv_t *kv);
void node_client_release(kv_t *kv);

/* ------------------------------------------------------- operations */

struct rpc_req; /* a peer's request being handled (rpc.h) */

/* Who asked, which decides where the operation runs and whether it is
 * counted:
 *  - NODE_FROM_API: the public synchronous calls; runs on the caller's
 *    thread, which may block on the store.
 *  - NODE_FROM_FRONTEND: HTTP and RESP, on an NNG thread that must not
 *    block: handed to the node's worker pool (KV_EBUSY when it is full).
 *  - NODE_FROM_PEER: a peer forwarded a client's request here; runs on
 *    the pool thread that handles it, is never forwarded again and is not
 *    counted (the client's node counted it).
 * API and front-end requests count in kvdist_puts_total and the rest. */
enum node_origin {
    NODE_FROM_API = 0,
    NODE_FROM_FRONTEND = 1,
    NODE_FROM_PEER = 2
};

/* Called exactly once per node_read / node_write, possibly before they
 * return, possibly on another thread, with the node still entered. For
 * reads, result is the merged object (the callee may move it out and
 * obj_init() the original); NULL on error. acked/needed: the quorum. */
typedef void (*node_done_fn)(void *arg, int rc, int acked, int needed,
                             obj_t *result);

/*
 * A write (tombstone: a delete) of key: checked against the limits
 * (KV_EINVAL, KV_EKEYTOOBIG, KV_ETOOBIG), applied to the local replica of
 * an embedded store or coordinated across the replicas (coord.c). ctx NULL
 * supersedes what the coordinator holds (kv_put semantics); w and
 * timeout_ms of 0 mean the node's defaults. ctx and the bytes are not used
 * after this returns (copied when the operation is handed to the pool).
 * in: for NODE_FROM_PEER, the forwarded request, from its handler (the
 * coordinator joins it to its batch: coord_write); NULL otherwise. token:
 * the forwarded write's (WIRE_F_TOKEN, obj_update), 0 from a front end.
 */
void node_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                const void *val, size_t vlen, bool tombstone, uint64_t token,
                int w, int timeout_ms, enum node_origin origin,
                const struct rpc_req *in, node_done_fn done, void *arg);
/* A read of key: the local replica's object, or the merge of r replicas'. */
void node_read(kv_t *kv, const void *key, size_t klen, int r, int timeout_ms,
               enum node_origin origin, const struct rpc_req *in,
               node_done_fn done, void *arg);

/* The checks every keyed call shares: KV_EINVAL (no key), KV_EKEYTOOBIG,
 * or 0. Nothing is touched before they pass. */
int node_check_key(const kv_t *kv, const void *key, size_t klen);

/* rpc_config_t's submit for the node's pool (arg is the kv). Counts a
 * refusal. */
int node_submit(void *arg, void (*fn)(void *task), void *task);

/* Registers the node's own peer handlers (STATS, and COORD_GET/PUT on a
 * node that holds data). Returns 0 or KV_EINVAL. */
int node_open(kv_t *kv);

/* Appends every metric of the node in the Prometheus text format, with no
 * NUL. */
void node_render_metrics(kv_t *kv, buf_t *out);

/* The single value a get returns for object o: its live value, or the
 * resolver's pick among siblings. *valp is malloc'd. Returns 0,
 * KV_ENOTFOUND, KV_ENOMEM or the resolver's error. */
int node_resolve(kv_t *kv, const obj_t *o, void **valp, size_t *vlenp);

#endif /* KV_NODE_H */
