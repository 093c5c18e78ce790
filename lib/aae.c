/*
 * aae.c - active anti-entropy (Dynamo §4.7): the runner that keeps this
 * node's replicas converging, and the WIRE_AE message type.
 *
 * The work is split by concept: aae_index.c (the index and its Merkle
 * trees, written by replica.c with every object), aae_exchange.c (the
 * exchange protocol that compares trees with another replica and repairs
 * the differing keys), aae_gc.c (tombstone collection). This file ties
 * them together:
 *
 * - the runner thread: follows the ring (cluster_on_ring_change flags it,
 *   it rebuilds the view from cluster_members; gossip re-announcing the
 *   same members changes nothing), paces a tree rebuild at
 *   aae_rebuild_rate entries per second and repairs the damaged index
 *   entries it finds (replica_reindex), then every aae_interval_ms (or on
 *   kv_repair) runs a pass: one exchange per (range, other owner), then a
 *   tombstone sweep;
 * - the lifecycle (aae_open registers the WIRE_AE handler; the trees come
 *   with aae_start), repair and status, locally and over the wire;
 * - the WIRE_AE handler: a table from operation to the module that
 *   answers it.
 *
 * Locks: run->mu guards the runner's flags (stop, changed, repair) and the
 * status, never held across I/O; the view has its own lock (aae_index.h).
 */
#include "aae.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aae_exchange.h"
#include "aae_gc.h"
#include "aae_index.h"
#include "clock.h"
#include "cluster.h"
#include "replica.h"

#define AAE_REBUILD_STEP 1024 /* index entries between two pacing checks */

/* The runner's state (kv->aae->run). */
struct aae_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started;
    bool stop;
    bool changed;
    bool repair;
    /* status */
    bool running;
    uint64_t passes;
    uint64_t ex_done;
    uint64_t ex_total;
    int64_t last_pass_us;
};

/* ------------------------------------------------------- the runner */

/* Waits up to ms on the thread's condition; false when asked to stop. */
static bool aae_nap(struct aae_run *a, int64_t ms)
{
    struct timespec ts = clk_deadline(ms);
    pthread_mutex_lock(&a->mu);
    if (!a->stop) {
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    bool go = !a->stop;
    pthread_mutex_unlock(&a->mu);
    return go;
}

/* A view of the current member list. */
static int aae_view_current(kv_t *kv, aae_view_t *nv)
{
    kv_member_t *m = NULL;
    size_t count = 0;
    int rc = cluster_members(kv, &m, &count);
    if (rc == 0) {
        rc = aae_view_build(kv, m, count, nv);
    }
    free(m);
    return rc;
}

/* Feeds the pending snapshot into the trees, at most aae_rebuild_rate
 * entries per second, then recomputes the damaged index entries it met.
 * Returns true when complete (the trees are ready). */
static bool aae_rebuild(kv_t *kv)
{
    struct aae_run *a = kv->aae->run;
    int64_t t0 = clk_mono_ms();
    uint64_t done = 0;
    int rc = 0;
    aae_kdlist_t bad = {0};
    while (!aae_index_scan(kv, AAE_REBUILD_STEP, &bad, &done, &rc)) {
        int64_t due =
            t0 + (int64_t)(done * 1000 / (uint64_t)kv->cfg.aae_rebuild_rate);
        int64_t now = clk_mono_ms();
        if (due > now && !aae_nap(a, due - now)) {
            aae_kd_free(&bad);
            return false;
        }
        pthread_mutex_lock(&a->mu);
        bool abort = a->stop || a->changed;
        pthread_mutex_unlock(&a->mu);
        if (abort) {
            aae_kd_free(&bad);
            return false;
        }
    }
    /* A damaged entry contributed nothing; recomputing it from its object
     * now goes through aae_commit, which toggles the new trees. */
    for (size_t i = 0; i < bad.n; i++) {
        if (replica_reindex(kv, NULL, bad.v[i].key, bad.v[i].klen) == 0) {
            metric_inc(&kv->metrics, M_AAE_INDEX_REPAIRED);
        }
    }
    if (bad.n > 0) {
        KV_LOG(&kv->log, KV_LOG_WARN,
               "aae: %zu damaged index entries recomputed from their objects",
               bad.n);
    }
    aae_kd_free(&bad);
    if (rc != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "aae: index scan failed: %s",
               kv_strerror(rc));
        return false;
    }
    atomic_store(&kv->aae->ready, true);
    metric_inc(&kv->metrics, M_AAE_TREE_REBUILDS);
    KV_LOG(&kv->log, KV_LOG_INFO,
           "aae: %zu Merkle trees rebuilt from %" PRIu64 " index entries in "
           "%" PRId64 " ms",
           kv->aae->v.ngroups, done, clk_mono_ms() - t0);
    return true;
}

static void aae_pass(kv_t *kv)
{
    struct aae_run *a = kv->aae->run;
    /* Only this thread swaps the view, so the groups stay put. */
    const aae_view_t *v = &kv->aae->v;
    uint64_t total = 0;
    for (size_t i = 0; i < v->ngroups; i++) {
        total += v->groups[i].n - 1;
    }
    pthread_mutex_lock(&a->mu);
    a->running = true;
    a->repair = false;
    a->ex_done = 0;
    a->ex_total = total;
    pthread_mutex_unlock(&a->mu);
    for (size_t i = 0; i < v->ngroups && kv->rpc != NULL; i++) {
        aae_group_t *g = &v->groups[i];
        for (size_t m = 0; m < g->n; m++) {
            if (strcmp(g->ids[m], kv->cfg.node_id) == 0) {
                continue;
            }
            pthread_mutex_lock(&a->mu);
            bool stop = a->stop || a->changed;
            pthread_mutex_unlock(&a->mu);
            if (stop) {
                break;
            }
            rpc_peer_t *peer = cluster_peer(kv, g->ids[m]);
            if (peer != NULL && cluster_is_up(kv, g->ids[m])) {
                int rc = aae_exchange(kv, g, peer);
                if (rc != 0 && rc != KV_ENOTFOUND && rc != KV_EUNAVAIL) {
                    KV_LOG(&kv->log, KV_LOG_INFO,
                           "aae: exchange with %s failed: %s", g->ids[m],
                           kv_strerror(rc));
                }
            }
            pthread_mutex_lock(&a->mu);
            a->ex_done++;
            pthread_mutex_unlock(&a->mu);
        }
    }
    aae_sweep(kv);
    pthread_mutex_lock(&a->mu);
    a->running = false;
    a->passes++;
    a->last_pass_us = clk_wall_us();
    pthread_mutex_unlock(&a->mu);
}

static void *aae_main(void *arg)
{
    kv_t *kv = arg;
    struct aae *x = kv->aae;
    struct aae_run *a = x->run;
    int64_t next_pass = clk_mono_ms() + kv->cfg.aae_interval_ms;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool stop = a->stop;
        bool changed = a->changed;
        a->changed = false;
        pthread_mutex_unlock(&a->mu);
        if (stop) {
            break;
        }
        if (changed) {
            aae_view_t nv;
            if (aae_view_current(kv, &nv) == 0) {
                /* Gossip re-announces members it already has: rebuild only
                 * when the ring really changed. */
                if (nv.sig != x->v.sig || x->v.ring == NULL) {
                    KV_LOG(&kv->log, KV_LOG_INFO,
                           "aae: ring changed (%zu members, %zu ranges "
                           "here); rebuilding the trees",
                           ring_node_count(nv.ring), nv.ngroups);
                    aae_index_install(kv, &nv, false);
                } else {
                    aae_view_free(&nv);
                }
            }
        }
        if (x->scan != NULL && !aae_rebuild(kv)) {
            continue; /* stopped, or the members changed again */
        }
        pthread_mutex_lock(&a->mu);
        bool due = a->repair || clk_mono_ms() >= next_pass;
        pthread_mutex_unlock(&a->mu);
        if (due && atomic_load(&x->ready)) {
            aae_pass(kv);
            next_pass = clk_mono_ms() + kv->cfg.aae_interval_ms;
        }
        pthread_mutex_lock(&a->mu);
        if (!a->stop && !a->changed && !a->repair) {
            int64_t wait = next_pass - clk_mono_ms();
            struct timespec ts = clk_deadline(wait < 1 ? 1 : wait);
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        pthread_mutex_unlock(&a->mu);
    }
    return NULL;
}

/* ------------------------------------------------------- lifecycle */

static void aae_handle(void *arg, rpc_req_t *req, const wire_msg_t *m);

int aae_open(kv_t *kv)
{
    struct aae_run *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return KV_ENOMEM;
    }
    int rc = aae_index_open(kv);
    if (rc != 0) {
        free(a);
        return rc;
    }
    pthread_mutex_init(&a->mu, NULL);
    if (clk_cond_init(&a->cv) != 0) {
        pthread_mutex_destroy(&a->mu);
        free(a);
        return KV_ENOMEM;
    }
    kv->aae->run = a;
    if (kv->rpc != NULL) {
        /* Exchanges read and write the store: on the node's pool. */
        return rpc_handle(kv->rpc, WIRE_AE, aae_handle, kv, RPC_RUN_POOLED);
    }
    return 0;
}

/* The ring changed (cluster_on_ring_change: under the cluster's lock, so
 * it only flags the thread, which rebuilds the view from cluster_members). */
static void aae_ring_changed(void *arg)
{
    struct aae_run *a = arg;
    pthread_mutex_lock(&a->mu);
    a->changed = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int aae_start(kv_t *kv)
{
    if (kv->aae == NULL || !kv->cfg.anti_entropy) {
        return 0;
    }
    struct aae_run *a = kv->aae->run;
    /* Listening before the flag is cleared and the view built: a change
     * from here on is seen. */
    cluster_on_ring_change(kv, aae_ring_changed, a);
    pthread_mutex_lock(&a->mu);
    a->changed = false;
    pthread_mutex_unlock(&a->mu);
    aae_view_t nv;
    int rc = aae_view_current(kv, &nv);
    if (rc != 0) {
        return rc;
    }
    aae_index_install(kv, &nv, true);
    if (pthread_create(&a->thread, NULL, aae_main, kv) != 0) {
        return KV_ENOMEM;
    }
    a->started = true;
    return 0;
}

void aae_stop(kv_t *kv)
{
    struct aae_run *a = kv->aae != NULL ? kv->aae->run : NULL;
    if (a == NULL || !a->started) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = false;
}

void aae_close(kv_t *kv)
{
    if (kv->aae == NULL) {
        return;
    }
    struct aae_run *a = kv->aae->run;
    aae_stop(kv);
    cluster_on_ring_change(kv, NULL, NULL);
    if (a != NULL) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        free(a);
    }
    aae_index_close(kv);
}

/* ------------------------------------------------------- status */

int aae_repair(kv_t *kv)
{
    struct aae_run *a = kv->aae != NULL ? kv->aae->run : NULL;
    if (a == NULL || !a->started) {
        return KV_ENOTSUP;
    }
    pthread_mutex_lock(&a->mu);
    a->repair = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int aae_status(kv_t *kv, kv_repair_status_t *st)
{
    struct aae_run *a = kv->aae != NULL ? kv->aae->run : NULL;
    memset(st, 0, sizeof(*st));
    if (a == NULL || !a->started) {
        return KV_ENOTSUP;
    }
    st->trees_ready = atomic_load(&kv->aae->ready);
    pthread_mutex_lock(&a->mu);
    /* A requested pass counts as running until it has finished. */
    st->running = a->running || a->repair;
    st->passes = a->passes;
    st->exchanges_done = a->ex_done;
    st->exchanges_total = a->ex_total;
    st->last_pass_us = a->last_pass_us;
    pthread_mutex_unlock(&a->mu);
    st->keys_repaired = atomic_load(&kv->metrics.v[M_AAE_KEYS_REPAIRED]);
    st->objects_sent = atomic_load(&kv->metrics.v[M_AAE_OBJECTS_SENT]);
    st->bytes_sent = atomic_load(&kv->metrics.v[M_AAE_BYTES_SENT]);
    st->tombstones_purged = atomic_load(&kv->metrics.v[M_TOMBSTONES_PURGED]);
    return 0;
}

static void aae_put_status(buf_t *b, const kv_repair_status_t *st)
{
    buf_put_u8(b, (uint8_t)(st->trees_ready | (st->running << 1)));
    buf_put_varint(b, st->passes);
    buf_put_varint(b, st->exchanges_done);
    buf_put_varint(b, st->exchanges_total);
    buf_put_varint(b, st->keys_repaired);
    buf_put_varint(b, st->objects_sent);
    buf_put_varint(b, st->bytes_sent);
    buf_put_varint(b, st->tombstones_purged);
    buf_put_u64(b, (uint64_t)st->last_pass_us);
}

static int aae_get_status(rd_t *r, kv_repair_status_t *st)
{
    uint8_t f = rd_u8(r);
    st->trees_ready = f & 1;
    st->running = (f >> 1) & 1;
    st->passes = rd_varint(r);
    st->exchanges_done = rd_varint(r);
    st->exchanges_total = rd_varint(r);
    st->keys_repaired = rd_varint(r);
    st->objects_sent = rd_varint(r);
    st->bytes_sent = rd_varint(r);
    st->tombstones_purged = rd_varint(r);
    st->last_pass_us = (int64_t)rd_u64(r);
    return r->err || (f & ~3u) ? KV_EPROTO : 0;
}

int aae_remote(kv_t *kv, const char *node_id, uint16_t op,
               kv_repair_status_t *st)
{
    rpc_peer_t *peer = kv->rpc != NULL ? cluster_peer(kv, node_id) : NULL;
    if (peer == NULL) {
        return KV_EUNAVAIL;
    }
    buf_t q;
    buf_init(&q);
    uint8_t *p = NULL;
    size_t len = 0;
    int rc = aae_call(kv, peer, op, &q, &p, &len);
    buf_free(&q);
    if (rc == 0 && op == AAE_OP_STATUS) {
        rd_t r;
        rd_init(&r, p, len);
        rc = aae_get_status(&r, st);
    }
    free(p);
    return rc;
}

void aae_render_metrics(kv_t *kv, buf_t *b)
{
    kv_repair_status_t st;
    bool on = aae_status(kv, &st) == 0;
    metrics_render_gauge(b, "kvdist_aae_enabled",
                         "1 when anti-entropy runs on this node (option "
                         "anti_entropy).",
                         on ? 1 : 0);
    if (!on) {
        return;
    }
    metrics_render_gauge(b, "kvdist_aae_trees_ready",
                         "1 once the Merkle trees are built.",
                         (uint64_t)st.trees_ready);
    metrics_render_gauge(b, "kvdist_aae_running",
                         "1 while an anti-entropy pass is in progress (or "
                         "requested).",
                         (uint64_t)st.running);
    metrics_render_gauge(b, "kvdist_aae_pass_exchanges_done",
                         "Exchanges done in the current (or last) pass.",
                         st.exchanges_done);
    metrics_render_gauge(b, "kvdist_aae_pass_exchanges",
                         "Exchanges (range x peer) of the current (or last) "
                         "pass.",
                         st.exchanges_total);
    metrics_render_gauge(b, "kvdist_aae_passes",
                         "Full anti-entropy passes completed.", st.passes);
    metrics_render_gauge(b, "kvdist_aae_last_full_pass_seconds",
                         "Unix time the last full anti-entropy pass ended "
                         "(0: none yet).",
                         (uint64_t)(st.last_pass_us / 1000000));
}

/* ------------------------------------------------------- the handler */

static void aae_reply(rpc_req_t *req, uint64_t id, uint16_t op, int rc,
                      const buf_t *payload)
{
    buf_t b;
    buf_init(&b);
    int status =
        rc != 0 ? rc : (payload != NULL && payload->oom ? KV_ENOMEM : 0);
    wire_header(&b, WIRE_AE | WIRE_REPLY, id, (uint16_t)status, op);
    if (status == 0 && payload != NULL) {
        wire_put_bytes(&b, payload->p, payload->len);
    } else {
        wire_put_bytes(&b, NULL, 0);
    }
    rpc_reply(req, &b);
}

static int aae_handle_repair(kv_t *kv, replica_group_t *open, rd_t *r,
                             buf_t *out)
{
    (void)open;
    (void)r;
    (void)out;
    return aae_repair(kv);
}

static int aae_handle_status(kv_t *kv, replica_group_t *open, rd_t *r,
                             buf_t *out)
{
    (void)open;
    (void)r;
    kv_repair_status_t st;
    int rc = aae_status(kv, &st);
    if (rc == 0) {
        aae_put_status(out, &st);
        /* Each range's root, for operators and tests comparing
         * replicas. */
        struct aae *a = kv->aae;
        pthread_rwlock_rdlock(&a->lock);
        buf_put_varint(out, a->v.ngroups);
        for (size_t i = 0; i < a->v.ngroups; i++) {
            buf_put_u64(out, a->v.groups[i].id);
            buf_put_u64(out, merkle_node(a->v.groups[i].tree, 0, 0));
        }
        pthread_rwlock_unlock(&a->lock);
    }
    return rc;
}

/* Each operation of a WIRE_AE request (its flags field) and the module
 * that answers it; the index is the operation. Each gets the write group
 * of the batch the request came in (NULL: none), for the replica calls it
 * makes (replica.h: they commit it first when they could wait for it). */
typedef int (*aae_op_fn)(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);
static const aae_op_fn aae_ops[] = {
    [AAE_OP_HASHES] = aae_handle_hashes,         /* aae_exchange.c */
    [AAE_OP_KEYS] = aae_handle_keys,             /* aae_exchange.c */
    [AAE_OP_FETCH] = aae_handle_fetch,           /* aae_exchange.c */
    [AAE_OP_PUSH] = aae_handle_push,             /* aae_exchange.c */
    [AAE_OP_TOMB_CHECK] = aae_handle_tomb_check, /* aae_gc.c */
    [AAE_OP_TOMB_PURGE] = aae_handle_tomb_purge, /* aae_gc.c */
    [AAE_OP_REPAIR] = aae_handle_repair,
    [AAE_OP_STATUS] = aae_handle_status,
};

/* The rpc handler for WIRE_AE requests (registered by aae_open). */
static void aae_handle(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    rd_t r;
    rd_init(&r, m->obj, m->objlen);
    buf_t out;
    buf_init(&out);
    int rc = 0;
    if (kv->aae == NULL || kv->store == NULL) {
        rc = KV_ENOTSUP;
    } else if (m->flags >= sizeof(aae_ops) / sizeof(aae_ops[0]) ||
               aae_ops[m->flags] == NULL) {
        rc = KV_EPROTO;
    } else if (m->flags != AAE_OP_REPAIR && m->flags != AAE_OP_STATUS &&
               !rpc_req_from_node(req)) {
        /* Exchanges list, fetch and write replicas: members only (TLS);
         * starting a pass and its progress are for clients too. */
        metric_inc(&kv->metrics, M_RPC_NOT_MEMBER);
        rc = KV_EAUTH;
    } else {
        rc = aae_ops[m->flags](kv, replica_group_of(req), &r, &out);
    }
    if (rc == KV_EPROTO) {
        metric_inc(&kv->metrics, M_WIRE_MALFORMED);
    }
    aae_reply(req, m->id, m->flags, rc, &out);
    buf_free(&out);
}
