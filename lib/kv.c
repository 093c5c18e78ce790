/*
 * kv.c - the public entry points: the handle's lifecycle (open, shutdown,
 * close), argument checking and limits, the simple and conflict-aware
 * calls, sibling resolution and the stats calls.
 *
 * Owns struct kv's lifecycle fields. Invariants: every public call that
 * touches the node enters through node_enter() and leaves through
 * node_leave(), so kv_shutdown() can wait for calls in progress; arguments
 * are checked and limits enforced here, before anything reaches the store,
 * so a rejected call changes nothing.
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

int64_t node_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

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
    handoff_stop(kv);
    aae_stop(kv);
    rpc_destroy(kv->rpc);
    kv->rpc = NULL;
    aae_close(kv); /* saves the trees: after the last handler */
    handoff_close(kv);
    cluster_close(kv);
    store_close(kv->store);
    for (int i = 0; i < NODE_KEY_LOCKS; i++) {
        pthread_mutex_destroy(&kv->key_locks[i]);
    }
    pthread_mutex_destroy(&kv->life_mu);
    pthread_cond_destroy(&kv->life_cv);
    options_config_free(&kv->cfg);
    log_fini(&kv->log);
    free(kv);
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

    if (kv->cfg.role == KV_ROLE_PEER) {
        store_config_t sc = {kv->cfg.data_dir, kv->cfg.sync,
                             kv->cfg.cache_size};
        rc = store_open(&sc, &kv->log, &kv->store);
        if (rc == 0) {
            rc = aae_open(kv);
        }
        if (rc != 0) {
            node_free(kv);
            return rc;
        }
    }
    if (kv->cfg.role == KV_ROLE_CLIENT || kv->cfg.listen != NULL ||
        kv->cfg.join != NULL) {
        /* Objects on the wire may carry several siblings: allow a few
         * full-size values per message. */
        rpc_config_t rc_cfg = {
            .limits = {kv->cfg.max_key_size, kv->cfg.max_value_size,
                       4 * kv->cfg.max_value_size + (1u << 20)},
            .log = &kv->log,
            .metrics = &kv->metrics,
            .handler = coord_handle,
            .handler_arg = kv,
            .batch_begin = coord_batch_begin,
            .batch_end = coord_batch_end,
            .fault_file = kv->cfg.fault_file,
        };
        rc = rpc_create(&rc_cfg, &kv->rpc);
        if (rc == 0 && kv->cfg.listen != NULL) {
            rc = rpc_listen(kv->rpc, kv->cfg.listen);
        }
        if (rc != 0) {
            node_free(kv);
            return rc;
        }
    }
    rc = cluster_open(kv);
    if (rc == 0 && kv->store != NULL) {
        rc = handoff_open(kv);
    }
    if (rc == 0 && kv->store != NULL) {
        rc = aae_start(kv);
    }
    if (rc == 0 && kv->cfg.resp != NULL) {
        rc = resp_start(kv);
    }
    if (rc == 0 && kv->cfg.http != NULL) {
        rc = http_start(kv); /* last: it serves requests at once */
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
static int check_key(const kv_t *kv, const void *key, size_t klen)
{
    if (key == NULL || klen == 0) {
        return KV_EINVAL;
    }
    if (klen > kv->cfg.max_key_size) {
        return KV_EKEYTOOBIG;
    }
    return 0;
}

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

static int do_write(kv_t *kv, const void *key, size_t klen, const void *val,
                    size_t vlen, bool tombstone, bool has_ctx, const void *ctx,
                    size_t ctxlen, kv_call_t *call)
{
    if (kv == NULL) {
        return KV_EINVAL;
    }
    /* Entered for the whole call, metrics included, so that kv_shutdown
     * returning means nothing touches the node any more. */
    int rc = node_enter(kv);
    if (rc != 0) {
        return rc;
    }
    rc = check_key(kv, key, klen);
    if (rc == 0 && !tombstone && val == NULL && vlen > 0) {
        rc = KV_EINVAL;
    }
    if (rc == 0 && !tombstone && vlen > kv->cfg.max_value_size) {
        rc = KV_ETOOBIG;
    }
    if (rc == 0 && has_ctx && ctx == NULL && ctxlen > 0) {
        rc = KV_EINVAL;
    }
    if (rc == 0) {
        rc = check_call(kv, call);
    }
    vc_t cv;
    vc_init(&cv);
    int acked = 0;
    int needed = 0;
    if (rc == 0 && has_ctx) {
        rc = vc_context_decode(ctx, ctxlen, &cv);
    }
    if (rc == 0 && kv->rpc == NULL) {
        /* Embedded: the local replica is every replica. */
        rc = replica_write(kv, key, klen, has_ctx ? &cv : NULL, val, vlen,
                           tombstone, NULL);
        acked = rc == 0;
        needed = 1;
    } else if (rc == 0) {
        waiter_t *w = waiter_new();
        if (w == NULL) {
            rc = KV_ENOMEM;
        } else {
            coord_write(kv, key, klen, has_ctx ? &cv : NULL, val, vlen,
                        tombstone, call ? call->w : 0,
                        call ? call->timeout_ms : 0, waiter_done, w);
            rc = waiter_wait(w, verdict_bound_ms(kv, call), &kv->log, &acked,
                             &needed, NULL);
        }
    }
    vc_free(&cv);
    call_done(call, acked, needed);
    metric_inc(&kv->metrics, tombstone ? (rc == 0 ? M_DELETES : M_DELETE_ERRORS)
                                       : (rc == 0 ? M_PUTS : M_PUT_ERRORS));
    node_leave(kv);
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
 * the merge of r replicas' objects. The caller has entered the node. */
static int do_read(kv_t *kv, const void *key, size_t klen, kv_call_t *call,
                   obj_t *o)
{
    int acked = 0;
    int needed = 0;
    int rc = check_key(kv, key, klen);
    if (rc == 0) {
        rc = check_call(kv, call);
    }
    if (rc == 0 && kv->rpc == NULL) {
        rc = replica_read(kv, key, klen, o);
        acked = rc == 0;
        needed = 1;
    } else if (rc == 0) {
        waiter_t *w = waiter_new();
        if (w == NULL) {
            rc = KV_ENOMEM;
        } else {
            coord_read(kv, key, klen, call ? call->r : 0,
                       call ? call->timeout_ms : 0, waiter_done, w);
            rc = waiter_wait(w, verdict_bound_ms(kv, call), &kv->log, &acked,
                             &needed, o);
        }
    }
    call_done(call, acked, needed);
    if (rc != 0) {
        metric_inc(&kv->metrics, M_GET_ERRORS);
    } else if (rc == 0) {
        metric_inc(&kv->metrics, M_GETS);
        size_t live = obj_live(o);
        if (live == 0) {
            metric_inc(&kv->metrics, M_NOT_FOUND);
        } else if (live > 1) {
            metric_inc(&kv->metrics, M_SIBLING_READS);
        }
    }
    return rc;
}

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
        s->sib[s->n].val = o.sib[i].val ? o.sib[i].val : dup_bytes(NULL, 0);
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
    metrics_render(&kv->metrics, &b);
    int rc = node_enter(kv);
    if (rc == 0 && kv->store != NULL) {
        metrics_render_gauge(
            &b, "kvdist_store_keys_estimate",
            "RocksDB's estimate of keys in the store.",
            store_property(kv->store, "rocksdb.estimate-num-keys"));
        /* Live SST files (those of the current version: not files a
         * compaction has replaced but an iterator still pins) plus the
         * memtables, of the data column family: what the node holds now. */
        uint64_t sst = store_property(kv->store, "rocksdb.live-sst-files-size");
        uint64_t mem =
            store_property(kv->store, "rocksdb.cur-size-all-mem-tables");
        metrics_render_gauge(&b, "kvdist_store_memtable_bytes",
                             "Bytes in RocksDB memtables.", mem);
        metrics_render_gauge(&b, "kvdist_store_sst_bytes",
                             "Bytes of the live SST files of the data.", sst);
        metrics_render_gauge(&b, "kvdist_store_bytes",
                             "Bytes of data stored: live SST files plus "
                             "memtables.",
                             sst + mem);
        metrics_render_gauge(
            &b, "kvdist_store_cache_bytes", "Bytes in use in the block cache.",
            store_property(kv->store, "rocksdb.block-cache-usage"));
    }
    if (rc == 0) {
        if (kv->cluster != NULL) {
            cluster_render_metrics(kv, &b);
        }
        if (kv->handoff != NULL) {
            handoff_render_metrics(kv, &b);
        }
        if (kv->aae != NULL) {
            aae_render_metrics(kv, &b);
        }
        node_leave(kv);
    }
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
    switch (status) {
    case KV_MEMBER_UP:
        return "up";
    case KV_MEMBER_DOWN:
        return "down";
    case KV_MEMBER_JOINING:
        return "joining";
    case KV_MEMBER_LEAVING:
        return "leaving";
    default:
        return "unknown";
    }
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
    int rc = check_key(kv, key, klen);
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
