/*
 * kv.c - the public entry points: the handle's lifecycle (open, shutdown,
 * close), the checks of each call's own arguments (NULL pointers, a
 * kv_call_t's quorums, a causal context), the simple and conflict-aware
 * calls as synchronous waits for the operation layer's verdict (node.c),
 * sibling access, and the stats, membership and repair calls.
 *
 * Owns the order in which a node's modules open (each registers its
 * handlers before the node listens) and close. Invariants: every public
 * call that touches the node is admitted by node_enter() and released by
 * node_leave() (node.c), so kv_shutdown() can wait for calls in progress;
 * key and value limits are enforced by the operation layer (node.c),
 * which the HTTP and RESP front ends go through too, before anything
 * reaches the store, so a rejected call changes nothing.
 */
#include "node.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "aae.h"
#include "cluster.h"
#include "coord.h"
#include "handoff.h"
#include "http.h"
#include "pool.h"
#include "replica.h"
#include "resp.h"
#include "rpc.h"
#include "waiter.h"

struct kv_siblings {
    size_t n;
    struct {
        uint8_t *val;
        size_t len;
        int64_t ts_us;
    } * sib;
    uint8_t *ctx;
    size_t ctxlen;
};






/*
 * max_clients 0 means "as many as the open-file limit safely allows": half
 * the soft RLIMIT_NOFILE (the other half is RocksDB's table files, the WAL,
 * peer pipes and the process's own), at most 10000 as Redis's default, at
 * least 1. kvdistd raises the soft limit to the hard one before kv_open.
 */
static unsigned node_max_clients(const kv_config_t *cfg)
{
    if (cfg->max_clients > 0) {
        return (unsigned)cfg->max_clients;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return 10000;
    }
    rlim_t half = rl.rlim_cur / 2;
    return half < 1 ? 1 : half > 10000 ? 10000 : (unsigned)half;
}

static uint64_t node_new_actor(void)
{
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        /* The start time alone still differs between incarnations that
         * start in different seconds; mix in what else varies. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rnd = (uint32_t)ts.tv_nsec ^ (uint32_t)getpid();
    }
    return vc_actor_make((uint32_t)time(NULL), rnd);
}

static void node_free(kv_t *kv)
{
    /* Order matters: the front ends (HTTP, RESP) start quorum operations;
     * the ticker uses the transport, the transport's callbacks use the
     * member list and the store. */
    http_stop(kv);
    resp_stop(kv);
    cluster_stop(kv);
    /* While this node still answers: its peers stop sending to it, so
     * nothing arrives while the transport closes its sockets. */
    cluster_announce_stop(kv);
    handoff_stop(kv);
    aae_stop(kv);
    /* Queued replica work still answers through the transport: it runs
     * to the end before the transport goes; requests that arrive after
     * are refused (KV_ECLOSED). */
    pool_stop(kv->pool);
    if (kv->store != NULL) {
        /* The fault hook's stall lives in the transport; the trees are
         * saved after it is gone. */
        store_set_write_delay(kv->store, NULL, NULL);
    }
    rpc_destroy(kv->rpc);
    kv->rpc = NULL;
    aae_close(kv); /* saves the trees: after the last handler */
    handoff_close(kv);
    cluster_close(kv);
    store_close(kv->store);
    pool_free(kv->pool);
    for (int i = 0; i < NODE_KEY_LOCKS; i++) {
        pthread_mutex_destroy(&kv->key_locks[i]);
    }
    pthread_mutex_destroy(&kv->life_mu);
    pthread_cond_destroy(&kv->life_cv);
    auth_close(&kv->auth);
    options_config_free(&kv->cfg);
    log_fini(&kv->log);
    free(kv);
}

/* rpc.c's view of the members (who owns a connection, over TLS): the
 * member table once it is open. */
static int node_members(void *arg, kv_member_t **out, size_t *count)
{
    kv_t *kv = arg;
    if (kv->cluster == NULL) {
        *out = NULL;
        *count = 0;
        return KV_EUNAVAIL;
    }
    return cluster_members(kv, out, count);
}

int kv_open(const kv_options_t *o, kv_t **kvp)
{
    if (kvp == NULL) {
        return KV_EINVAL;
    }
    *kvp = NULL;
    if (o == NULL) {
        return KV_EINVAL;
    }
    kv_t *kv = calloc(1, sizeof(*kv));
    if (kv == NULL) {
        return KV_ENOMEM;
    }
    if (options_config_copy(&kv->cfg, &o->cfg) != 0) {
        free(kv);
        return KV_ENOMEM;
    }
    /* Without memory for repeat suppression the log still works. */
    (void)log_init(&kv->log, kv->cfg.log_fn, kv->cfg.log_arg,
                   kv->cfg.log_level);
    for (int i = 0; i < NODE_KEY_LOCKS; i++) {
        pthread_mutex_init(&kv->key_locks[i], NULL);
    }
    pthread_mutex_init(&kv->life_mu, NULL);
    pthread_cond_init(&kv->life_cv, NULL);
    metrics_init(&kv->metrics);

    char why[256];
    int rc = options_config_validate(&kv->cfg, why, sizeof(why));
    if (rc == 0) {
        /* Before anything is opened: an unreadable password file must
         * stop a node that would otherwise serve without one. */
        rc = auth_open(&kv->auth, &kv->cfg, &kv->log, why, sizeof(why));
    }
    if (rc != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "open: %s", why);
        node_free(kv);
        return rc;
    }
    /* Stored and replicated objects decode against the hard ceilings, not
     * max_value_size: lowering that option must not make existing keys
     * unreadable; it only limits new writes (checked on entry). */
    kv->limits.max_value = OPTIONS_MAX_VALUE_CEIL;
    kv->limits.max_siblings = OBJ_DECODE_MAX_SIBLINGS;
    kv->limits.max_clock = VC_DECODE_MAX;
    kv->actor = node_new_actor();
    kv->max_clients = node_max_clients(&kv->cfg);
    atomic_init(&kv->counter, 0);

    /*
     * Every module opens (and registers the handlers of the messages it
     * owns) before the node listens: a peer's message can only reach a
     * node whose modules all exist. The front ends come last, as they
     * serve requests at once. node_free undoes it in the reverse order.
     */
    if (kv->cfg.role == KV_ROLE_PEER) {
        store_config_t sc = {kv->cfg.data_dir, kv->cfg.sync,
                             kv->cfg.cache_size};
        rc = store_open(&sc, &kv->log, &kv->store);
    }
    bool peers = kv->cfg.role == KV_ROLE_CLIENT || kv->cfg.listen != NULL ||
                 kv->cfg.join != NULL;
    /* Replica work from the transport and the front ends runs on the
     * node's own threads (pool.h); an embedded store without front ends
     * has no NNG thread to protect. */
    if (rc == 0 && kv->store != NULL &&
        (peers || kv->cfg.http != NULL || kv->cfg.resp != NULL)) {
        rc = pool_create(NODE_WORKERS, NODE_WORK_QUEUE, &kv->pool);
    }
    if (rc == 0 && peers) {
        /* Objects on the wire may carry several siblings: allow a few
         * full-size values per message. */
        rpc_config_t rc_cfg = {
            .limits = {kv->cfg.max_key_size, kv->cfg.max_value_size,
                       4 * kv->cfg.max_value_size + (1u << 20)},
            .buffer_budget = kv->cfg.peer_buffer_budget,
            .log = &kv->log,
            .metrics = &kv->metrics,
            .listen_url = kv->cfg.listen,
            .batch_begin = coord_batch_begin,
            .batch_end = coord_batch_end,
            .batch_arg = kv,
            .submit = kv->pool != NULL ? node_submit : NULL,
            .submit_arg = kv,
            .fault_file = kv->cfg.fault_file,
            .tls_ca_file = kv->cfg.tls_ca_file,
            .tls_cert_file = kv->cfg.tls_cert_file,
            .tls_key_file = kv->cfg.tls_key_file,
            .node_id = kv->cfg.role == KV_ROLE_PEER ? kv->cfg.node_id : NULL,
            .members = node_members,
            .members_arg = kv,
        };
        rc = rpc_create(&rc_cfg, &kv->rpc);
        if (rc == 0 && kv->store != NULL && rpc_fault_enabled(kv->rpc)) {
            store_set_write_delay(kv->store, rpc_fault_store_delay_ms,
                                  kv->rpc);
        }
    }
    if (rc == 0 && kv->store != NULL) {
        rc = aae_open(kv);
    }
    if (rc == 0) {
        rc = cluster_open(kv);
    }
    if (rc == 0 && kv->store != NULL) {
        rc = handoff_open(kv);
    }
    if (rc == 0) {
        rc = coord_open(kv);
    }
    if (rc == 0) {
        rc = node_open(kv);
    }
    if (rc == 0 && kv->store != NULL) {
        rc = aae_start(kv);
    }
    if (rc == 0 && kv->rpc != NULL && kv->cfg.listen != NULL) {
        rc = rpc_listen(kv->rpc, kv->cfg.listen);
    }
    if (rc == 0 && kv->cfg.resp != NULL) {
        rc = resp_start(kv);
    }
    if (rc == 0 && kv->cfg.http != NULL) {
        rc = http_start(kv);
    }
    if (rc != 0) {
        node_free(kv);
        return rc;
    }
    if (kv->cfg.resp != NULL || kv->cfg.http != NULL) {
        KV_LOG(&kv->log, KV_LOG_NOTICE, "open: max_clients %u%s",
               kv->max_clients,
               kv->cfg.max_clients > 0 ? "" : " (from the open-file limit)");
    }
    KV_LOG(&kv->log, KV_LOG_INFO, "open: node %s, data %s, actor %016" PRIx64,
           kv->cfg.node_id,
           kv->cfg.data_dir ? kv->cfg.data_dir : "(none: client)", kv->actor);
    *kvp = kv;
    return 0;
}

void kv_shutdown(kv_t *kv)
{
    if (kv == NULL) {
        return;
    }
    /* RESP connections hold quorum operations in flight: closed (and
     * drained) first, so nothing starts a new one after this returns. */
    resp_stop(kv);
    pthread_mutex_lock(&kv->life_mu);
    kv->closed = true;
    while (kv->inflight > 0) {
        pthread_cond_wait(&kv->life_cv, &kv->life_mu);
    }
    pthread_mutex_unlock(&kv->life_mu);
}

void kv_close(kv_t *kv)
{
    if (kv == NULL) {
        return;
    }
    kv_shutdown(kv);
    KV_LOG(&kv->log, KV_LOG_INFO, "close: node %s", kv->cfg.node_id);
    node_free(kv);
}

void kv_free(void *p)
{
    free(p);
}

/* The checks every keyed call shares; nothing is touched before they pass. */
static int check_call(const kv_t *kv, kv_call_t *call)
{
    if (call == NULL) {
        return 0;
    }
    if (call->r < 0 || call->r > kv->cfg.n || call->w < 0 ||
        call->w > kv->cfg.n || call->timeout_ms < 0) {
        return KV_EINVAL;
    }
    call->acked = 0;
    call->needed = 0;
    return 0;
}

/* How long a synchronous call waits for its verdict: the call's deadline,
 * the forwarding margin, and slack for a loaded machine's scheduling. The
 * verdict always comes sooner unless a completion was lost (waiter.h). */
#define NODE_VERDICT_SLACK_MS 2000

static int verdict_bound_ms(const kv_t *kv, const kv_call_t *call)
{
    int64_t tmo = call != NULL && call->timeout_ms > 0 ? call->timeout_ms
                                                       : kv->cfg.timeout_ms;
    int64_t bound = tmo + COORD_FORWARD_MARGIN_MS + NODE_VERDICT_SLACK_MS;
    return bound < INT_MAX ? (int)bound : INT_MAX;
}

static void call_done(kv_call_t *call, int acked, int needed)
{
    if (call != NULL) {
        call->needed = needed;
        call->acked = acked;
    }
}

/* The synchronous calls wait for the operation layer's verdict (node.c),
 * which owns admission, limits and the request counters. */
static int do_write(kv_t *kv, const void *key, size_t klen, const void *val,
                    size_t vlen, bool tombstone, bool has_ctx, const void *ctx,
                    size_t ctxlen, kv_call_t *call)
{
    if (kv == NULL) {
        return KV_EINVAL;
    }
    int rc = check_call(kv, call);
    vc_t cv;
    vc_init(&cv);
    if (rc == 0 && has_ctx) {
        rc = ctx == NULL && ctxlen > 0 ? KV_EINVAL
                                       : vc_context_decode(ctx, ctxlen, &cv);
    }
    waiter_t *w = NULL;
    if (rc == 0 && (w = waiter_new()) == NULL) {
        rc = KV_ENOMEM;
    }
    if (rc != 0) {
        metric_inc(&kv->metrics, tombstone ? M_DELETE_ERRORS : M_PUT_ERRORS);
        vc_free(&cv);
        return rc;
    }
    int acked = 0;
    int needed = 0;
    node_write(kv, key, klen, has_ctx ? &cv : NULL, val, vlen, tombstone, 0,
               call ? call->w : 0, call ? call->timeout_ms : 0, NODE_FROM_API,
               NULL, waiter_done, w);
    rc = waiter_wait(w, verdict_bound_ms(kv, call), &kv->log, &acked, &needed,
                     NULL);
    vc_free(&cv);
    call_done(call, acked, needed);
    return rc;
}

int kv_put(kv_t *kv, const void *key, size_t klen, const void *val, size_t vlen)
{
    return do_write(kv, key, klen, val, vlen, false, false, NULL, 0, NULL);
}

int kv_delete(kv_t *kv, const void *key, size_t klen)
{
    return do_write(kv, key, klen, NULL, 0, true, false, NULL, 0, NULL);
}

int kv_put_ctx(kv_t *kv, const void *key, size_t klen, const void *val,
               size_t vlen, const void *ctx, size_t ctxlen, kv_call_t *call)
{
    return do_write(kv, key, klen, val, vlen, false, true, ctx, ctxlen, call);
}

int kv_delete_ctx(kv_t *kv, const void *key, size_t klen, const void *ctx,
                  size_t ctxlen, kv_call_t *call)
{
    return do_write(kv, key, klen, NULL, 0, true, true, ctx, ctxlen, call);
}

/* Reads the object a get returns: the local replica's when embedded, else
 * the merge of r replicas' objects. */
static int do_read(kv_t *kv, const void *key, size_t klen, kv_call_t *call,
                   obj_t *o)
{
    int rc = check_call(kv, call);
    waiter_t *w = NULL;
    if (rc == 0 && (w = waiter_new()) == NULL) {
        rc = KV_ENOMEM;
    }
    if (rc != 0) {
        metric_inc(&kv->metrics, M_GET_ERRORS);
        return rc;
    }
    int acked = 0;
    int needed = 0;
    node_read(kv, key, klen, call ? call->r : 0, call ? call->timeout_ms : 0,
              NODE_FROM_API, NULL, waiter_done, w);
    rc = waiter_wait(w, verdict_bound_ms(kv, call), &kv->log, &acked, &needed,
                     o);
    call_done(call, acked, needed);
    return rc;
}

static int get_entered(kv_t *kv, const void *key, size_t klen, void **valp,
                       size_t *vlenp)
{
    if (valp != NULL) {
        *valp = NULL;
    }
    if (vlenp != NULL) {
        *vlenp = 0;
    }
    if (kv == NULL || valp == NULL || vlenp == NULL) {
        return KV_EINVAL;
    }
    obj_t o;
    obj_init(&o);
    int rc = do_read(kv, key, klen, NULL, &o);
    if (rc == 0) {
        rc = node_resolve(kv, &o, valp, vlenp);
    }
    obj_free(&o);
    return rc;
}

void kv_siblings_free(kv_siblings_t *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        free(s->sib[i].val);
    }
    free(s->sib);
    free(s->ctx);
    free(s);
}

static int get_siblings_entered(kv_t *kv, const void *key, size_t klen,
                                kv_call_t *call, kv_siblings_t **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (kv == NULL || out == NULL) {
        return KV_EINVAL;
    }
    obj_t o;
    obj_init(&o);
    int rc = do_read(kv, key, klen, call, &o);
    if (rc != 0) {
        obj_free(&o);
        return rc;
    }
    kv_siblings_t *s = calloc(1, sizeof(*s));
    size_t live = obj_live(&o);
    buf_t ctx;
    buf_init(&ctx);
    if (s == NULL ||
        (live > 0 && (s->sib = calloc(live, sizeof(*s->sib))) == NULL) ||
        vc_context_encode(&o.cc, &ctx) != 0) {
        rc = KV_ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < o.n; i++) {
        if (o.sib[i].flags & OBJ_SIB_TOMBSTONE) {
            continue;
        }
        /* The value moves from the decoded object to the result. */
        s->sib[s->n].val = o.sib[i].val ? o.sib[i].val : malloc(1);
        o.sib[i].val = NULL;
        if (s->sib[s->n].val == NULL) {
            rc = KV_ENOMEM;
            break;
        }
        s->sib[s->n].len = o.sib[i].vlen;
        s->sib[s->n].ts_us = o.sib[i].ts_us;
        s->n++;
    }
    obj_free(&o);
    if (rc != 0) {
        buf_free(&ctx);
        kv_siblings_free(s);
        return rc;
    }
    s->ctx = buf_steal(&ctx, &s->ctxlen);
    *out = s;
    return 0;
}

/* The public reads hold the node for the whole call: resolving and
 * copying included (see node_enter). */
int kv_get(kv_t *kv, const void *key, size_t klen, void **valp, size_t *vlenp)
{
    if (kv == NULL) {
        return get_entered(kv, key, klen, valp, vlenp);
    }
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    rc = get_entered(kv, key, klen, valp, vlenp);
    node_leave(kv);
    return rc;
}

int kv_get_siblings(kv_t *kv, const void *key, size_t klen, kv_call_t *call,
                    kv_siblings_t **out)
{
    if (kv == NULL) {
        return get_siblings_entered(kv, key, klen, call, out);
    }
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    rc = get_siblings_entered(kv, key, klen, call, out);
    node_leave(kv);
    return rc;
}

size_t kv_siblings_count(const kv_siblings_t *s)
{
    return s != NULL ? s->n : 0;
}

int kv_siblings_value(const kv_siblings_t *s, size_t i, const void **valp,
                      size_t *lenp)
{
    if (s == NULL || valp == NULL || lenp == NULL || i >= s->n) {
        return KV_EINVAL;
    }
    *valp = s->sib[i].val;
    *lenp = s->sib[i].len;
    return 0;
}

int64_t kv_siblings_timestamp(const kv_siblings_t *s, size_t i)
{
    return (s != NULL && i < s->n) ? s->sib[i].ts_us : 0;
}

const void *kv_siblings_context(const kv_siblings_t *s, size_t *lenp)
{
    if (s == NULL) {
        if (lenp != NULL) {
            *lenp = 0;
        }
        return NULL;
    }
    if (lenp != NULL) {
        *lenp = s->ctxlen;
    }
    return s->ctx;
}

int kv_stat(kv_t *kv, const char *name, uint64_t *value)
{
    if (kv == NULL || name == NULL || value == NULL) {
        return KV_EINVAL;
    }
    return metrics_lookup(&kv->metrics, name, value);
}


int kv_metrics(kv_t *kv, char **outp, size_t *lenp)
{
    if (kv == NULL || outp == NULL) {
        return KV_EINVAL;
    }
    *outp = NULL;
    buf_t b;
    buf_init(&b);
    node_render_metrics(kv, &b);
    buf_put_u8(&b, 0);
    if (b.oom) {
        buf_free(&b);
        return KV_ENOMEM;
    }
    size_t len = 0;
    *outp = (char *)buf_steal(&b, &len);
    if (lenp != NULL) {
        *lenp = len - 1;
    }
    return 0;
}


/* Another node's metrics text over the peer protocol (WIRE_STATS), found
 * by id as kv_repair_status finds it. The caller has entered the node. */
static int node_metrics_remote(kv_t *kv, const char *node_id, char **outp,
                               size_t *lenp)
{
    rpc_peer_t *peer = kv->rpc != NULL ? cluster_peer(kv, node_id) : NULL;
    if (peer == NULL) {
        return KV_EUNAVAIL; /* unknown id, or an embedded store */
    }
    buf_t q;
    buf_init(&q);
    wire_build_simple(&q, WIRE_STATS, rpc_next_id(kv->rpc), 0);
    uint8_t *p = NULL;
    size_t len = 0;
    int rc = rpc_call_wait(kv->rpc, peer, &q, kv->cfg.timeout_ms, WIRE_STATS,
                           &p, &len);
    if (rc != 0) {
        free(p);
        return rc;
    }
    /* The text is copied with a terminating NUL; a NUL inside it would cut
     * it short for the caller, so such a reply is refused. */
    char *text = malloc(len + 1);
    if (text == NULL) {
        free(p);
        return KV_ENOMEM;
    }
    if (len > 0) {
        memcpy(text, p, len);
    }
    text[len] = '\0';
    free(p);
    if (strlen(text) != len) {
        free(text);
        return KV_EPROTO;
    }
    *outp = text;
    if (lenp != NULL) {
        *lenp = len;
    }
    return 0;
}

int kv_node_metrics(kv_t *kv, const char *node_id, char **outp, size_t *lenp)
{
    if (outp != NULL) {
        *outp = NULL;
    }
    if (lenp != NULL) {
        *lenp = 0;
    }
    if (kv == NULL || outp == NULL || (node_id != NULL && node_id[0] == '\0')) {
        return KV_EINVAL;
    }
    if (node_id == NULL || (kv->cfg.role == KV_ROLE_PEER &&
                            strcmp(node_id, kv->cfg.node_id) == 0)) {
        return kv_metrics(kv, outp, lenp);
    }
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    rc = node_metrics_remote(kv, node_id, outp, lenp);
    node_leave(kv);
    return rc;
}

const char *kv_member_status_name(int status)
{
    return cluster_status_name(status);
}

int kv_members(kv_t *kv, kv_member_t **out, size_t *count)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (count != NULL) {
        *count = 0;
    }
    if (kv == NULL || out == NULL || count == NULL) {
        return KV_EINVAL;
    }
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    rc = cluster_members(kv, out, count);
    node_leave(kv);
    return rc;
}

int kv_preference_list(kv_t *kv, const void *key, size_t klen,
                       kv_member_t **out, size_t *count)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (count != NULL) {
        *count = 0;
    }
    if (kv == NULL || out == NULL || count == NULL) {
        return KV_EINVAL;
    }
    int rc = node_check_key(kv, key, klen);
    if (rc == 0) {
        rc = node_enter(kv);
    }
    if (rc != 0) {
        return rc;
    }
    rc = cluster_preference_list(kv, key, klen, out, count);
    node_leave(kv);
    return rc;
}

/* Anti-entropy on this node or, by id, on another one. */
static int repair_call(kv_t *kv, const char *node_id, uint16_t op,
                       kv_repair_status_t *st)
{
    if (kv == NULL || (op == AAE_OP_STATUS && st == NULL)) {
        return KV_EINVAL;
    }
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    bool self = node_id == NULL || (kv->cfg.role == KV_ROLE_PEER &&
                                    strcmp(node_id, kv->cfg.node_id) == 0);
    if (self && kv->cfg.role != KV_ROLE_PEER) {
        rc = KV_EINVAL; /* a client has no replica of its own */
    } else if (self) {
        rc = op == AAE_OP_REPAIR ? aae_repair(kv) : aae_status(kv, st);
    } else {
        rc = aae_remote(kv, node_id, op, st);
    }
    node_leave(kv);
    return rc;
}

int kv_repair(kv_t *kv, const char *node_id)
{
    return repair_call(kv, node_id, AAE_OP_REPAIR, NULL);
}

int kv_repair_status(kv_t *kv, const char *node_id, kv_repair_status_t *st)
{
    return repair_call(kv, node_id, AAE_OP_STATUS, st);
}
