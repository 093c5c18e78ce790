/*
 * node.c - the operation layer of a node: every read, write and delete,
 * whoever asks (the public API in kv.c, the HTTP and RESP front ends, a
 * peer forwarding a client's request), goes through node_read and
 * node_write, which own what each of them needs: admission (the node is
 * entered for the whole operation, so kv_shutdown waits for it), the
 * limits, the choice between the local replica (a one-node embedded
 * store) and the coordinator (coord.c), and the counters of client
 * requests. Also the node's small shared services: client connection
 * slots, the sibling resolver, and the metrics text with its peer message.
 *
 * Owns struct kv's lifecycle fields (life_mu protects closed and inflight;
 * clients is atomic). An operation allocates a node_op_t that lives until
 * its callback has run: the callback runs with the node still entered, and
 * the node is left right after it.
 */
#include "node.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aae.h"
#include "cluster.h"
#include "coord.h"
#include "handoff.h"
#include "pool.h"
#include "replica.h"
#include "rpc.h"
#include "wire.h"

int node_enter(kv_t *kv)
{
    pthread_mutex_lock(&kv->life_mu);
    if (kv->closed) {
        pthread_mutex_unlock(&kv->life_mu);
        return KV_ECLOSED;
    }
    kv->inflight++;
    pthread_mutex_unlock(&kv->life_mu);
    return 0;
}

void node_leave(kv_t *kv)
{
    pthread_mutex_lock(&kv->life_mu);
    if (--kv->inflight == 0 && kv->closed) {
        pthread_cond_broadcast(&kv->life_cv);
    }
    pthread_mutex_unlock(&kv->life_mu);
}

bool node_client_admit(kv_t *kv)
{
    unsigned now = atomic_load_explicit(&kv->clients, memory_order_relaxed);
    do {
        if (now >= kv->max_clients) {
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(
        &kv->clients, &now, now + 1, memory_order_relaxed,
        memory_order_relaxed));
    return true;
}

void node_client_release(kv_t *kv)
{
    atomic_fetch_sub_explicit(&kv->clients, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------ operations */

/* One read or write in progress: what to tell whom once it is done. */
typedef struct node_op {
    kv_t *kv;
    node_done_fn done;
    void *arg;
    enum node_origin origin;
    bool read;
    bool tombstone;
    uint64_t token; /* a forwarded write's (obj_update), else 0 */
} node_op_t;

/* Counts a finished client request, as kv_stat and INFO report it. */
static void node_count(kv_t *kv, const node_op_t *op, int rc,
                       const obj_t *result)
{
    if (op->origin == NODE_FROM_PEER) {
        return; /* the client's own node counted it */
    }
    if (!op->read) {
        metric_inc(&kv->metrics,
                   op->tombstone ? (rc == 0 ? M_DELETES : M_DELETE_ERRORS)
                                 : (rc == 0 ? M_PUTS : M_PUT_ERRORS));
        return;
    }
    if (rc != 0) {
        metric_inc(&kv->metrics, M_GET_ERRORS);
        return;
    }
    metric_inc(&kv->metrics, M_GETS);
    size_t live = result != NULL ? obj_live(result) : 0;
    if (live == 0) {
        metric_inc(&kv->metrics, M_NOT_FOUND);
    } else if (live > 1) {
        metric_inc(&kv->metrics, M_SIBLING_READS);
    }
}

static void node_op_done(void *arg, int rc, int acked, int needed,
                         obj_t *result)
{
    node_op_t *op = arg;
    kv_t *kv = op->kv;
    node_count(kv, op, rc, result);
    op->done(op->arg, rc, acked, needed, result);
    free(op);
    node_leave(kv); /* last: kv may go away right after */
}

int node_check_key(const kv_t *kv, const void *key, size_t klen)
{
    if (key == NULL || klen == 0) {
        return KV_EINVAL;
    }
    if (klen > kv->cfg.max_key_size) {
        return KV_EKEYTOOBIG;
    }
    return 0;
}

/* Checks shared by reads and writes; then enters the node and allocates
 * the operation. Returns NULL after calling done with the error. */
static node_op_t *node_op_begin(kv_t *kv, const void *key, size_t klen,
                                int quorum, int timeout_ms,
                                enum node_origin origin, bool read,
                                node_done_fn done, void *arg)
{
    int rc = node_check_key(kv, key, klen);
    if (rc == 0 && (quorum < 0 || quorum > kv->cfg.n || timeout_ms < 0)) {
        rc = KV_EINVAL;
    }
    if (rc == 0) {
        rc = node_enter(kv);
    }
    node_op_t *op = NULL;
    if (rc == 0 && (op = malloc(sizeof(*op))) == NULL) {
        node_leave(kv);
        rc = KV_ENOMEM;
    }
    if (rc != 0) {
        node_op_t failed = {kv, done, arg, origin, read, false, 0};
        node_count(kv, &failed, rc, NULL);
        done(arg, rc, 0, 0, NULL);
        return NULL;
    }
    *op = (node_op_t){kv, done, arg, origin, read, false, 0};
    return op;
}

/* Runs a checked operation where it was started: the local replica of
 * an embedded store, or the coordinator. */
static void node_op_start(node_op_t *op, const rpc_req_t *in, const void *key,
                          size_t klen, const vc_t *ctx, const void *val,
                          size_t vlen, int q, int timeout_ms)
{
    kv_t *kv = op->kv;
    if (kv->rpc == NULL && op->read) {
        obj_t o;
        obj_init(&o);
        int rc = replica_read(kv, key, klen, &o);
        node_op_done(op, rc, rc == 0, 1, &o);
        obj_free(&o);
    } else if (kv->rpc == NULL) {
        /* Embedded: the local replica is every replica. */
        int rc = replica_write(kv, NULL, key, klen, ctx, val, vlen,
                               op->tombstone, 0, NULL, NULL);
        node_op_done(op, rc, rc == 0, 1, NULL);
    } else if (op->read) {
        coord_read(kv, key, klen, q, timeout_ms, op->origin == NODE_FROM_API,
                   in, node_op_done, op);
    } else {
        /* A forwarded write is never forwarded again: views of the ring
         * that disagree must not bounce a request around. */
        coord_write(kv, key, klen, ctx, val, vlen, op->tombstone, op->token, q,
                    timeout_ms, op->origin != NODE_FROM_PEER, in, node_op_done,
                    op);
    }
}

/* An operation a front end started on an NNG thread, handed to the pool
 * with copies of its arguments (the caller's may be gone by then). */
typedef struct node_task {
    node_op_t *op;
    int q;
    int timeout_ms;
    bool has_ctx;
    vc_t ctx;
    size_t klen;
    size_t vlen;
    uint8_t bytes[]; /* key, then value */
} node_task_t;

static void node_task_run(void *arg)
{
    node_task_t *t = arg;
    node_op_start(t->op, NULL, t->bytes, t->klen, t->has_ctx ? &t->ctx : NULL,
                  t->bytes + t->klen, t->vlen, t->q, t->timeout_ms);
    vc_free(&t->ctx);
    free(t);
}

/* Starts op here or on the pool. Here: the application's calls and a
 * peer's forwarded writes (their threads may block: the caller's own, or
 * a pool thread), and every coordinated read (coord_read does not block
 * its caller). On the pool: the front ends' writes and embedded reads,
 * which would touch the store on NNG's thread. */
static void node_op_dispatch(node_op_t *op, const rpc_req_t *in,
                             const void *key, size_t klen, const vc_t *ctx,
                             const void *val, size_t vlen, int q,
                             int timeout_ms)
{
    kv_t *kv = op->kv;
    if (op->origin != NODE_FROM_FRONTEND || kv->pool == NULL ||
        (op->read && kv->rpc != NULL)) {
        node_op_start(op, in, key, klen, ctx, val, vlen, q, timeout_ms);
        return;
    }
    node_task_t *t = malloc(sizeof(*t) + klen + vlen);
    int rc = KV_ENOMEM;
    if (t != NULL) {
        *t = (node_task_t){op, q, timeout_ms, ctx != NULL, {0}, klen, vlen};
        vc_init(&t->ctx);
        memcpy(t->bytes, key, klen);
        if (vlen > 0) {
            memcpy(t->bytes + klen, val, vlen);
        }
        rc = ctx != NULL ? vc_copy(&t->ctx, ctx) : 0;
        if (rc == 0) {
            rc = pool_submit(kv->pool, node_task_run, t);
        }
        if (rc == 0) {
            return;
        }
        vc_free(&t->ctx);
        free(t);
    }
    if (rc == KV_EBUSY) {
        metric_inc(&kv->metrics, M_POOL_REFUSED);
    }
    node_op_done(op, rc, 0, 0, NULL);
}

void node_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                const void *val, size_t vlen, bool tombstone, uint64_t token,
                int w, int timeout_ms, enum node_origin origin,
                const rpc_req_t *in, node_done_fn done, void *arg)
{
    if (!tombstone && ((val == NULL && vlen > 0) ||
                       vlen > kv->cfg.max_value_size)) {
        node_op_t failed = {kv, done, arg, origin, false, false, 0};
        int rc = val == NULL && vlen > 0 ? KV_EINVAL : KV_ETOOBIG;
        node_count(kv, &failed, rc, NULL);
        done(arg, rc, 0, 0, NULL);
        return;
    }
    node_op_t *op = node_op_begin(kv, key, klen, w, timeout_ms, origin, false,
                                  done, arg);
    if (op == NULL) {
        return;
    }
    op->tombstone = tombstone;
    op->token = token;
    node_op_dispatch(op, in, key, klen, ctx, tombstone ? NULL : val,
                     tombstone ? 0 : vlen, w, timeout_ms);
}

void node_read(kv_t *kv, const void *key, size_t klen, int r, int timeout_ms,
               enum node_origin origin, const rpc_req_t *in, node_done_fn done,
               void *arg)
{
    node_op_t *op =
        node_op_begin(kv, key, klen, r, timeout_ms, origin, true, done, arg);
    if (op != NULL) {
        node_op_dispatch(op, in, key, klen, NULL, NULL, 0, r, timeout_ms);
    }
}

int node_submit(void *arg, void (*fn)(void *task), void *task)
{
    kv_t *kv = arg;
    int rc = pool_submit(kv->pool, fn, task);
    if (rc == KV_EBUSY) {
        metric_inc(&kv->metrics, M_POOL_REFUSED);
    }
    return rc;
}

/* ------------------------------------------------- forwarded requests */

/* A peer's COORD_GET or COORD_PUT, answered when the operation is done. */
typedef struct node_forwarded {
    rpc_req_t *req;
    uint8_t type;
    uint64_t id;
} node_forwarded_t;


static void on_forwarded_done(void *arg, int rc, int acked, int needed,
                              obj_t *result)
{
    node_forwarded_t *p = arg;
    coord_reply_obj(p->req, p->type, p->id, rc, acked, needed, result);
    free(p);
}

/* A forwarded request's deadline: the sender's, if sensible. */
static int forwarded_timeout(const wire_msg_t *m)
{
    return (int)(m->timeout_ms > 0 && m->timeout_ms <= 3600000 ? m->timeout_ms
                                                               : 0);
}

static node_forwarded_t *forwarded_new(rpc_req_t *req, const wire_msg_t *m)
{
    node_forwarded_t *p = malloc(sizeof(*p));
    if (p == NULL) {
        coord_reply_obj(req, m->type, m->id, KV_ENOMEM, 0, 0, NULL);
        return NULL;
    }
    *p = (node_forwarded_t){req, m->type, m->id};
    return p;
}

/* COORD_GET: coordinate a read forwarded by a node that is no replica. */
static void handle_coord_get(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    node_forwarded_t *p = forwarded_new(req, m);
    if (p != NULL) {
        node_read(arg, m->key, m->klen, m->quorum, forwarded_timeout(m),
                  NODE_FROM_PEER, req, on_forwarded_done, p);
    }
}

/* COORD_PUT: coordinate a write forwarded by a node that is no replica. */
static void handle_coord_put(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    vc_t ctx;
    vc_init(&ctx);
    bool has_ctx = (m->flags & WIRE_F_HAS_CTX) != 0;
    if (has_ctx && vc_context_decode(m->ctx, m->ctxlen, &ctx) != 0) {
        vc_free(&ctx);
        coord_reply_obj(req, m->type, m->id, KV_EINVAL, 0, 0, NULL);
        return;
    }
    node_forwarded_t *p = forwarded_new(req, m);
    if (p != NULL) {
        node_write(arg, m->key, m->klen, has_ctx ? &ctx : NULL, m->val, m->vlen,
                   (m->flags & WIRE_F_TOMBSTONE) != 0, m->token, m->quorum,
                   forwarded_timeout(m), NODE_FROM_PEER, req, on_forwarded_done,
                   p);
    }
    vc_free(&ctx);
}

/* ---------------------------------------------------------- resolving */

static void *dup_bytes(const void *p, size_t len)
{
    /* Never NULL for a successful zero-length copy: callers can tell an
     * empty value from an error. */
    void *out = malloc(len ? len : 1);
    if (out != NULL && len > 0) {
        memcpy(out, p, len);
    }
    return out;
}

/* The documented default: greatest timestamp, then greatest bytes, then
 * longest. Deterministic on every node for the same siblings. */
static int default_resolve(void *arg, const kv_sibling_t *s, size_t n,
                           void **out, size_t *outlen)
{
    (void)arg;
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        const kv_sibling_t *a = &s[i];
        const kv_sibling_t *b = &s[best];
        int c = 0;
        if (a->timestamp_us != b->timestamp_us) {
            c = a->timestamp_us > b->timestamp_us ? 1 : -1;
        } else {
            size_t m = a->len < b->len ? a->len : b->len;
            c = m ? memcmp(a->value, b->value, m) : 0;
            if (c == 0 && a->len != b->len) {
                c = a->len > b->len ? 1 : -1;
            }
        }
        if (c > 0) {
            best = i;
        }
    }
    *out = dup_bytes(s[best].value, s[best].len);
    if (*out == NULL) {
        return KV_ENOMEM;
    }
    *outlen = s[best].len;
    return 0;
}

/* One value from an object read: the live value, or the resolver's pick
 * among siblings (default_resolve unless the application set one). */
int node_resolve(kv_t *kv, const obj_t *o, void **valp, size_t *vlenp)
{
    int rc = 0;
    *valp = NULL;
    *vlenp = 0;
    size_t live = obj_live(o);
    if (live == 0) {
        rc = KV_ENOTFOUND;
    } else if (live == 1) {
        for (size_t i = 0; i < o->n; i++) {
            if (!(o->sib[i].flags & OBJ_SIB_TOMBSTONE)) {
                *valp = dup_bytes(o->sib[i].val, o->sib[i].vlen);
                *vlenp = o->sib[i].vlen;
                break;
            }
        }
        rc = *valp != NULL ? 0 : KV_ENOMEM;
    } else {
        kv_sibling_t *s = malloc(live * sizeof(*s));
        if (s == NULL) {
            rc = KV_ENOMEM;
        } else {
            size_t k = 0;
            for (size_t i = 0; i < o->n; i++) {
                if (!(o->sib[i].flags & OBJ_SIB_TOMBSTONE)) {
                    s[k].value = o->sib[i].val;
                    s[k].len = o->sib[i].vlen;
                    s[k].timestamp_us = o->sib[i].ts_us;
                    k++;
                }
            }
            kv_resolve_fn fn =
                kv->cfg.resolve_fn ? kv->cfg.resolve_fn : default_resolve;
            void *out = NULL;
            size_t outlen = 0;
            rc = fn(kv->cfg.resolve_fn ? kv->cfg.resolve_arg : NULL, s, live,
                    &out, &outlen);
            if (rc == 0 && out == NULL) {
                rc = KV_EINTERNAL; /* a resolver broke its contract */
            }
            if (rc == 0) {
                *valp = out;
                *vlenp = outlen;
            } else {
                free(out);
            }
            free(s);
        }
    }
    if (rc != 0) {
        *vlenp = 0;
    }
    return rc;
}

/* ------------------------------------------------------------ metrics */

/* Appends every metric of the node (counters, then the modules' gauges)
 * in the Prometheus text format, with no NUL. */
void node_render_metrics(kv_t *kv, buf_t *out)
{
    metrics_render(&kv->metrics, out);
    int rc = node_enter(kv);
    if (rc == 0 && kv->store != NULL) {
        metrics_render_gauge(
            out, "kvdist_store_keys_estimate",
            "RocksDB's estimate of keys in the store.",
            store_property(kv->store, "rocksdb.estimate-num-keys"));
        /* Live SST files (those of the current version: not files a
         * compaction has replaced but an iterator still pins) plus the
         * memtables, of the data column family: what the node holds now. */
        uint64_t sst = store_property(kv->store, "rocksdb.live-sst-files-size");
        uint64_t mem =
            store_property(kv->store, "rocksdb.cur-size-all-mem-tables");
        metrics_render_gauge(out, "kvdist_store_memtable_bytes",
                             "Bytes in RocksDB memtables.", mem);
        metrics_render_gauge(out, "kvdist_store_sst_bytes",
                             "Bytes of the live SST files of the data.", sst);
        metrics_render_gauge(out, "kvdist_store_bytes",
                             "Bytes of data stored: live SST files plus "
                             "memtables.",
                             sst + mem);
        metrics_render_gauge(
            out, "kvdist_store_cache_bytes", "Bytes in use in the block cache.",
            store_property(kv->store, "rocksdb.block-cache-usage"));
        store_health_t sh;
        store_health(kv->store, &sh);
        metrics_render_gauge(out, "kvdist_store_faulted",
                             "1 while the local store refuses writes (disk "
                             "full, read-only or failing), else 0.",
                             sh.faulted ? 1 : 0);
        metrics_render_counter(out, "kvdist_store_faults_total",
                               "Times the local store began refusing writes.",
                               sh.faults);
        metrics_render_counter(out, "kvdist_store_recoveries_total",
                               "Times the local store took writes again by "
                               "itself after a fault.",
                               sh.recoveries);
        metrics_render_counter(out, "kvdist_store_reopens_total",
                               "Recoveries that reopened the store (a WAL "
                               "replay).",
                               sh.reopens);
    }
    if (rc == 0) {
        if (kv->cluster != NULL) {
            cluster_render_metrics(kv, out);
        }
        if (kv->handoff != NULL) {
            handoff_render_metrics(kv, out);
        }
        if (kv->aae != NULL) {
            aae_render_metrics(kv, out);
        }
        node_leave(kv);
    }
}

/* WIRE_STATS: the node's metrics text, cut at WIRE_MAX_STATS. */
static void node_handle_stats(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    buf_t text;
    buf_init(&text);
    node_render_metrics(kv, &text);
    int rc = text.oom ? KV_ENOMEM : 0;
    size_t len = rc == 0 ? text.len : 0;
    if (len > WIRE_MAX_STATS) {
        len = WIRE_MAX_STATS;
    }
    buf_t b;
    buf_init(&b);
    wire_header(&b, m->type | WIRE_REPLY, m->id, (uint16_t)rc, 0);
    wire_put_bytes(&b, text.p, len);
    buf_free(&text);
    rpc_reply(req, &b);
}

/* ------------------------------------------------------------ opening */

/* STATS is answered on the NNG thread (counters and RocksDB's in-memory
 * properties: an operator must see a node that is busy with slow disks),
 * and so is COORD_GET (a coordinated read does not block: coord_read hands
 * a local read that needs a file to the pool); COORD_PUT writes the local
 * replica, so on the pool. */
static const struct {
    uint8_t type;
    bool needs_store; /* only a node that holds data coordinates */
    enum rpc_run run;
    rpc_handler_fn fn;
} node_handlers[] = {
    {WIRE_STATS, false, RPC_RUN_INLINE, node_handle_stats},
    {WIRE_COORD_GET, true, RPC_RUN_INLINE, handle_coord_get},
    {WIRE_COORD_PUT, true, RPC_RUN_POOLED, handle_coord_put},
};

int node_open(kv_t *kv)
{
    if (kv->rpc == NULL) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(node_handlers) / sizeof(node_handlers[0]);
         i++) {
        if (node_handlers[i].needs_store && kv->store == NULL) {
            continue;
        }
        int rc = rpc_handle(kv->rpc, node_handlers[i].type, node_handlers[i].fn,
                            kv, node_handlers[i].run);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
