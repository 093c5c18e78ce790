/*
 * handoff.c - hinted handoff (Dynamo section 4.6).
 *
 * Owns the hints column family and the delivery thread. A hint is the
 * object a replica missed, stored under (owner id, NUL, key): hints for the
 * same key and owner are joined into one object, so a hint never grows
 * beyond the object itself and delivering it twice is harmless (the owner
 * joins it, and a join is idempotent). Hints are written with the node's
 * sync mode before they are acknowledged, so they survive a restart of the
 * node holding them.
 *
 * Delivery: every HANDOFF_TICK_MS the thread looks at the owners with
 * pending hints that the failure detector sees up, reads a batch of their
 * hints, and sends each as a plain replica write, at most handoff_rate per
 * second. A hint is deleted only after the owner acknowledged (it has then
 * applied it durably), and only if it did not change meanwhile (a newer
 * write for the same key merged into it is delivered next round). A crash
 * of either side mid-delivery therefore loses nothing and duplicates
 * nothing.
 *
 * Locks: stripe[] serialises read-modify-write of one hint key; mu
 * protects the pending table. The delivery thread is a ticker (ticker.h).
 */
#include "handoff.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "clock.h"
#include "cluster.h"
#include "rpc.h"
#include "store.h"
#include "ticker.h"
#include "wire.h"

#define HANDOFF_TICK_MS 100
#define HANDOFF_BATCH 64
#define HANDOFF_STRIPES 64
#define HANDOFF_MAX_OWNERS 1024

typedef struct pending {
    char owner[WIRE_MAX_ID + 1];
    uint64_t count;
} pending_t;

struct handoff {
    pthread_mutex_t stripe[HANDOFF_STRIPES];
    pthread_mutex_t mu; /* protects pending, npending */
    pending_t *pending;
    size_t npending;
    ticker_t ticker; /* delivery, every HANDOFF_TICK_MS */
};

static struct handoff *hs(kv_t *kv)
{
    return kv->handoff;
}

/* owner '\0' key */
static uint8_t *hint_key(const char *owner, const void *key, size_t klen,
                         size_t *len)
{
    size_t olen = strlen(owner);
    uint8_t *k = malloc(olen + 1 + klen);
    if (k != NULL) {
        memcpy(k, owner, olen + 1);
        memcpy(k + olen + 1, key, klen);
        *len = olen + 1 + klen;
    }
    return k;
}

static pthread_mutex_t *hint_lock(struct handoff *h, const uint8_t *hk,
                                  size_t len)
{
    return &h->stripe[XXH3_64bits(hk, len) % HANDOFF_STRIPES];
}

/* Adjusts an owner's pending count. Caller holds h->mu. */
static void pending_add(struct handoff *h, const char *owner, int64_t delta)
{
    for (size_t i = 0; i < h->npending; i++) {
        if (strcmp(h->pending[i].owner, owner) == 0) {
            if (delta < 0 && h->pending[i].count < (uint64_t)-delta) {
                h->pending[i].count = 0;
            } else {
                h->pending[i].count += (uint64_t)delta;
            }
            return;
        }
    }
    if (delta <= 0 || h->npending == HANDOFF_MAX_OWNERS) {
        return;
    }
    pending_t *p = realloc(h->pending, (h->npending + 1) * sizeof(*p));
    if (p == NULL) {
        return;
    }
    h->pending = p;
    snprintf(p[h->npending].owner, sizeof(p[0].owner), "%s", owner);
    p[h->npending].count = (uint64_t)delta;
    h->npending++;
}

int handoff_store(kv_t *kv, const char *owner, const void *key, size_t klen,
                  const obj_t *o)
{
    struct handoff *h = hs(kv);
    size_t hlen = 0;
    uint8_t *hk = hint_key(owner, key, klen, &hlen);
    if (hk == NULL) {
        return KV_ENOMEM;
    }
    obj_t cur;
    obj_init(&cur);
    bool fresh = false;
    pthread_mutex_t *mu = hint_lock(h, hk, hlen);
    pthread_mutex_lock(mu);
    void *raw = NULL;
    size_t len = 0;
    int rc = store_get(kv->store, STORE_CF_HINTS, hk, hlen, &raw, &len);
    if (rc == KV_ENOTFOUND) {
        fresh = true;
        rc = 0;
    } else if (rc == 0) {
        rc = obj_decode(raw, len, &kv->limits, &cur);
        if (rc == KV_ECORRUPT) {
            /* A damaged hint is replaced, not trusted; the new object is
             * still delivered and anti-entropy covers what it held. */
            KV_LOG(&kv->log, KV_LOG_WARN, "handoff: damaged hint for %s",
                   owner);
            obj_free(&cur);
            rc = 0;
        }
    }
    free(raw);
    if (rc == 0) {
        rc = obj_join(&cur, o, NULL);
    }
    buf_t b;
    buf_init(&b);
    if (rc == 0) {
        rc = obj_encode(&cur, &b);
    }
    if (rc == 0) {
        rc = store_put(kv->store, STORE_CF_HINTS, hk, hlen, b.p, b.len);
    }
    if (rc == 0 && fresh) {
        /* Counted under the hint's lock, so a delivery that deletes it
         * right after cannot run before the count is up. */
        pthread_mutex_lock(&h->mu);
        pending_add(h, owner, 1);
        pthread_mutex_unlock(&h->mu);
        ticker_kick(&h->ticker); /* deliver now if the owner is up */
    }
    pthread_mutex_unlock(mu);
    buf_free(&b);
    obj_free(&cur);
    free(hk);
    if (rc == 0) {
        metric_inc(&kv->metrics, M_HINTS_STORED);
    } else {
        KV_LOG(&kv->log, KV_LOG_ERROR, "handoff: cannot store hint for %s: %s",
               owner, kv_strerror(rc));
    }
    return rc;
}

int handoff_read(kv_t *kv, const char *owner, const void *key, size_t klen,
                 obj_t *out)
{
    size_t hlen = 0;
    uint8_t *hk = hint_key(owner, key, klen, &hlen);
    if (hk == NULL) {
        return KV_ENOMEM;
    }
    void *raw = NULL;
    size_t len = 0;
    int rc = store_get(kv->store, STORE_CF_HINTS, hk, hlen, &raw, &len);
    free(hk);
    if (rc == KV_ENOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    obj_t o;
    obj_init(&o);
    rc = obj_decode(raw, len, &kv->limits, &o);
    free(raw);
    if (rc == 0) {
        rc = obj_join(out, &o, NULL);
    }
    obj_free(&o);
    return rc;
}

/* ------------------------------------------------------------- delivery */

/* Sends one hint to its owner and waits (bounded by timeout_ms) for the
 * acknowledgement. */
static int deliver_one(kv_t *kv, rpc_peer_t *peer, const uint8_t *key,
                       size_t klen, const void *obj, size_t objlen)
{
    buf_t b;
    buf_init(&b);
    wire_build_replica_put(&b, rpc_next_id(kv->rpc), key, klen, obj, objlen);
    uint8_t *ack = NULL;
    size_t acklen = 0;
    int rc = rpc_call_wait(kv->rpc, peer, &b, kv->cfg.timeout_ms,
                           WIRE_REPLICA_PUT, &ack, &acklen);
    free(ack); /* an acknowledgement carries no object */
    return rc;
}

/* Deletes the hint if it still holds exactly what was delivered, and
 * uncounts it under the same lock. */
static bool delete_if_unchanged(kv_t *kv, const char *owner, const uint8_t *hk,
                                size_t hlen, const void *val, size_t vlen)
{
    struct handoff *h = hs(kv);
    pthread_mutex_t *mu = hint_lock(h, hk, hlen);
    pthread_mutex_lock(mu);
    void *raw = NULL;
    size_t len = 0;
    bool same =
        store_get(kv->store, STORE_CF_HINTS, hk, hlen, &raw, &len) == 0 &&
        len == vlen && memcmp(raw, val, len) == 0;
    free(raw);
    bool deleted =
        same && store_delete(kv->store, STORE_CF_HINTS, hk, hlen) == 0;
    if (deleted) {
        pthread_mutex_lock(&h->mu);
        pending_add(h, owner, -1);
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_unlock(mu);
    return deleted;
}

/* A hint whose newest version is older than the tombstone grace period
 * is dropped, not delivered: the owner may have purged a delete of the
 * key since, and an old value must not come back through handoff. */
static bool hint_expired(kv_t *kv, const void *val, size_t vlen)
{
    obj_t o;
    obj_init(&o);
    if (obj_decode(val, vlen, &kv->limits, &o) != 0) {
        obj_free(&o);
        return false; /* the owner rejects it; nothing to judge here */
    }
    int64_t newest = 0;
    for (size_t i = 0; i < o.n; i++) {
        newest = o.sib[i].ts_us > newest ? o.sib[i].ts_us : newest;
    }
    obj_free(&o);
    return newest < clk_wall_us() - kv->cfg.tombstone_grace_ms * 1000;
}

typedef struct batch_item {
    uint8_t *hk;
    size_t hlen;
    uint8_t *val;
    size_t vlen;
} batch_item_t;

/* Delivers up to `budget` hints of one owner. Returns how many were sent;
 * stops at the first failure (the owner is probably unreachable). */
static int deliver_owner(kv_t *kv, const char *owner, int budget)
{
    rpc_peer_t *peer = cluster_peer(kv, owner);
    if (peer == NULL || budget <= 0) {
        return 0;
    }
    size_t olen = strlen(owner);
    batch_item_t items[HANDOFF_BATCH];
    size_t n = 0;
    store_iter_t *it =
        store_iter_create(kv->store, STORE_CF_HINTS, owner, olen + 1);
    if (it == NULL) {
        return 0;
    }
    for (; store_iter_valid(it) && n < HANDOFF_BATCH && (int)n < budget;
         store_iter_next(it)) {
        size_t kl = 0;
        size_t vl = 0;
        const uint8_t *k = store_iter_key(it, &kl);
        const uint8_t *v = store_iter_value(it, &vl);
        if (kl <= olen + 1 || memcmp(k, owner, olen) != 0 || k[olen] != 0) {
            break; /* past this owner's prefix */
        }
        items[n].hk = malloc(kl);
        items[n].val = malloc(vl ? vl : 1);
        if (items[n].hk == NULL || items[n].val == NULL) {
            free(items[n].hk);
            free(items[n].val);
            break;
        }
        memcpy(items[n].hk, k, kl);
        memcpy(items[n].val, v, vl);
        items[n].hlen = kl;
        items[n].vlen = vl;
        n++;
    }
    (void)store_iter_status(it);
    store_iter_destroy(it);

    int sent = 0;
    bool failed = false;
    for (size_t i = 0; i < n; i++) {
        if (!failed && hint_expired(kv, items[i].val, items[i].vlen)) {
            if (delete_if_unchanged(kv, owner, items[i].hk, items[i].hlen,
                                    items[i].val, items[i].vlen)) {
                metric_inc(&kv->metrics, M_HINTS_EXPIRED);
                KV_LOG(&kv->log, KV_LOG_WARN,
                       "handoff: a hint for %s outlived the tombstone grace "
                       "period; dropped",
                       owner);
            }
        } else if (!failed) {
            int rc = deliver_one(kv, peer, items[i].hk + olen + 1,
                                 items[i].hlen - olen - 1, items[i].val,
                                 items[i].vlen);
            if (rc == 0) {
                sent++;
                metric_inc(&kv->metrics, M_HINTS_DELIVERED);
                (void)delete_if_unchanged(kv, owner, items[i].hk, items[i].hlen,
                                          items[i].val, items[i].vlen);
            } else {
                failed = true;
                metric_inc(&kv->metrics, M_HINTS_FAILED);
                KV_LOG(&kv->log, KV_LOG_INFO,
                       "handoff: delivery to %s failed: %s", owner,
                       kv_strerror(rc));
            }
        }
        free(items[i].hk);
        free(items[i].val);
    }
    return sent;
}

static void handoff_thread(void *arg)
{
    kv_t *kv = arg;
    struct handoff *h = hs(kv);
    /* A token bucket refilled every tick keeps delivery at handoff_rate. */
    double tokens = 0;
    double per_tick = kv->cfg.handoff_rate * HANDOFF_TICK_MS / 1000.0;
    /* Allow a burst of one second's worth (at least one hint). */
    double burst = per_tick * (1000.0 / HANDOFF_TICK_MS);
    if (burst < 1) {
        burst = 1;
    }
    while (ticker_wait(&h->ticker, HANDOFF_TICK_MS)) {
        tokens += per_tick;
        if (tokens > burst) {
            tokens = burst;
        }
        /* Snapshot the owners with work; deliver without the lock. */
        pthread_mutex_lock(&h->mu);
        size_t n = h->npending;
        char(*owners)[WIRE_MAX_ID + 1] = calloc(n ? n : 1, sizeof(*owners));
        size_t k = 0;
        for (size_t i = 0; owners != NULL && i < n; i++) {
            if (h->pending[i].count > 0) {
                memcpy(owners[k++], h->pending[i].owner, sizeof(owners[0]));
            }
        }
        pthread_mutex_unlock(&h->mu);
        for (size_t i = 0; i < k && tokens >= 1; i++) {
            if (cluster_is_up(kv, owners[i])) {
                /* Batches until the owner has nothing left, a delivery
                 * fails, or the tokens run out. */
                int sent;
                do {
                    sent = deliver_owner(kv, owners[i], (int)tokens);
                    tokens -= sent;
                } while (sent == HANDOFF_BATCH && tokens >= 1);
            }
        }
        free(owners);
    }
}

int handoff_open(kv_t *kv)
{
    struct handoff *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return KV_ENOMEM;
    }
    for (int i = 0; i < HANDOFF_STRIPES; i++) {
        pthread_mutex_init(&h->stripe[i], NULL);
    }
    pthread_mutex_init(&h->mu, NULL);
    if (ticker_init(&h->ticker) != 0) {
        for (int i = 0; i < HANDOFF_STRIPES; i++) {
            pthread_mutex_destroy(&h->stripe[i]);
        }
        pthread_mutex_destroy(&h->mu);
        free(h);
        return KV_ENOMEM;
    }
    kv->handoff = h;
    if (kv->store == NULL) {
        return 0;
    }
    /* Count what earlier runs left: hints survive restarts. */
    store_iter_t *it = store_iter_create(kv->store, STORE_CF_HINTS, NULL, 0);
    if (it == NULL) {
        return KV_ENOMEM;
    }
    for (; store_iter_valid(it); store_iter_next(it)) {
        size_t kl = 0;
        const uint8_t *k = store_iter_key(it, &kl);
        const uint8_t *nul = memchr(k, 0, kl);
        if (nul == NULL || nul == k || (size_t)(nul - k) > WIRE_MAX_ID) {
            continue;
        }
        char owner[WIRE_MAX_ID + 1];
        memcpy(owner, k, (size_t)(nul - k));
        owner[nul - k] = '\0';
        pending_add(h, owner, 1);
    }
    int rc = store_iter_status(it);
    store_iter_destroy(it);
    if (rc != 0) {
        return rc;
    }
    if (kv->rpc != NULL) {
        return ticker_start(&h->ticker, handoff_thread, kv);
    }
    return 0;
}

void handoff_stop(kv_t *kv)
{
    struct handoff *h = hs(kv);
    if (h != NULL) {
        ticker_stop(&h->ticker);
    }
}

void handoff_close(kv_t *kv)
{
    struct handoff *h = hs(kv);
    if (h == NULL) {
        return;
    }
    ticker_destroy(&h->ticker);
    for (int i = 0; i < HANDOFF_STRIPES; i++) {
        pthread_mutex_destroy(&h->stripe[i]);
    }
    pthread_mutex_destroy(&h->mu);
    free(h->pending);
    free(h);
    kv->handoff = NULL;
}

void handoff_render_metrics(kv_t *kv, buf_t *b)
{
    struct handoff *h = hs(kv);
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    uint64_t total = 0;
    for (size_t i = 0; i < h->npending; i++) {
        total += h->pending[i].count;
    }
    metrics_render_gauge(b, "kvdist_hints_pending",
                         "Hints held here and not yet delivered.", total);
    if (h->npending > 0) {
        const char *head =
            "# HELP kvdist_hints_pending_owner Hints held here for each "
            "member they belong to.\n"
            "# TYPE kvdist_hints_pending_owner gauge\n";
        buf_put(b, head, strlen(head));
    }
    for (size_t i = 0; i < h->npending; i++) {
        char line[160];
        int n =
            snprintf(line, sizeof(line),
                     "kvdist_hints_pending_owner{owner=\"%s\"} %" PRIu64 "\n",
                     h->pending[i].owner, h->pending[i].count);
        if (n > 0 && (size_t)n < sizeof(line)) {
            buf_put(b, line, (size_t)n);
        }
    }
    pthread_mutex_unlock(&h->mu);
}
