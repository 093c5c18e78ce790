/*
 * aae_gc.c - tombstone collection: when a delete may be forgotten.
 *
 * An object whose siblings are all deletes, older than tombstone_grace_ms,
 * is purged by its first owner once every owner confirms holding the same
 * object (AAE_OP_TOMB_CHECK: same digest), and then by each of them
 * (AAE_OP_TOMB_PURGE). A replica that was down during the delete cannot
 * confirm, so nothing is purged until anti-entropy has brought it the
 * tombstone: the key cannot come back from its old copy (the "zombie"
 * problem Cassandra's gc_grace_seconds and Riak's delete_mode address).
 * A purge is conditional (replica_purge: only if the digest is unchanged
 * under the key's lock), so a write racing the sweep wins.
 *
 * Owns no state; candidates are found from the index (aae_index.h) and
 * the requests go through aae_call (aae_exchange.h). Runs on the runner
 * thread (the sweep) and on the transport's threads (the answers).
 */
#include "aae_gc.h"

#include <stdlib.h>
#include <string.h>

#include "aae.h"
#include "aae_exchange.h"
#include "aae_index.h"
#include "clock.h"
#include "cluster.h"
#include "replica.h"

#define AAE_GC_MAX_KEYS 4096 /* candidates per sweep, and per request */

typedef struct aae_gc_cand {
    aae_group_t *g;
    aae_kdlist_t keys;
} aae_gc_cand_t;

/* Asks each other owner of g whether it holds exactly these tombstones;
 * ok[i] stays true only where all do. */
static int aae_tomb_check(kv_t *kv, aae_group_t *g, const aae_kdlist_t *l,
                          bool *ok)
{
    for (size_t m = 0; m < g->n; m++) {
        if (strcmp(g->ids[m], kv->cfg.node_id) == 0) {
            continue;
        }
        rpc_peer_t *peer = cluster_peer(kv, g->ids[m]);
        if (peer == NULL || !cluster_is_up(kv, g->ids[m])) {
            return KV_EUNAVAIL; /* an owner we cannot ask: keep them all */
        }
        buf_t q;
        buf_init(&q);
        buf_put_varint(&q, l->n);
        for (size_t i = 0; i < l->n; i++) {
            wire_put_bytes(&q, l->v[i].key, l->v[i].klen);
            buf_put_u64(&q, l->v[i].digest);
        }
        uint8_t *p = NULL;
        size_t len = 0;
        int rc = aae_call(kv, peer, AAE_OP_TOMB_CHECK, &q, &p, &len);
        buf_free(&q);
        if (rc == 0 && len != l->n) {
            rc = KV_EPROTO;
        }
        for (size_t i = 0; rc == 0 && i < l->n; i++) {
            ok[i] = ok[i] && p[i] == 1;
        }
        free(p);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void aae_tomb_purge(kv_t *kv, aae_group_t *g, const aae_kdlist_t *l,
                           const bool *ok)
{
    buf_t q;
    buf_init(&q);
    size_t cnt = 0;
    for (size_t i = 0; i < l->n; i++) {
        cnt += ok[i];
    }
    if (cnt == 0) {
        return;
    }
    buf_put_varint(&q, cnt);
    for (size_t i = 0; i < l->n; i++) {
        if (ok[i]) {
            wire_put_bytes(&q, l->v[i].key, l->v[i].klen);
            buf_put_u64(&q, l->v[i].digest);
        }
    }
    for (size_t m = 0; m < g->n; m++) {
        if (strcmp(g->ids[m], kv->cfg.node_id) == 0) {
            continue;
        }
        rpc_peer_t *peer = cluster_peer(kv, g->ids[m]);
        uint8_t *p = NULL;
        size_t len = 0;
        /* A replica that misses this keeps its tombstone; anti-entropy
         * then gives it back to the others and a later sweep retries. */
        if (peer != NULL) {
            (void)aae_call(kv, peer, AAE_OP_TOMB_PURGE, &q, &p, &len);
        }
        free(p);
    }
    buf_free(&q);
    for (size_t i = 0; i < l->n; i++) {
        bool purged = false;
        if (ok[i] &&
            replica_purge(kv, NULL, l->v[i].key, l->v[i].klen, l->v[i].digest,
                          &purged) == 0 &&
            purged) {
            metric_inc(&kv->metrics, M_TOMBSTONES_PURGED);
        }
    }
}

void aae_sweep(kv_t *kv)
{
    struct aae *a = kv->aae;
    int64_t cutoff = clk_wall_us() - kv->cfg.tombstone_grace_ms * 1000;
    aae_gc_cand_t *c = NULL;
    size_t nc = 0;
    store_iter_t *it = store_iter_create(kv->store, STORE_CF_AAE, NULL, 0);
    if (it == NULL) {
        return;
    }
    size_t total = 0;
    for (; store_iter_valid(it) && total < AAE_GC_MAX_KEYS;
         store_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = store_iter_key(it, &klen);
        const void *val = store_iter_value(it, &vlen);
        uint64_t h, digest;
        uint8_t flags;
        int64_t ts;
        if (!aae_index_entry(k, klen, val, vlen, &h, &digest, &flags, &ts) ||
            !(flags & AAE_IDX_TOMB) || ts >= cutoff) {
            continue;
        }
        size_t idx[CLUSTER_MAX_ROUTE];
        pthread_rwlock_rdlock(&a->lock);
        aae_group_t *g = aae_group_of(&a->v, h);
        bool first = g != NULL &&
                     ring_successors_at(a->v.ring, h, idx, 1) == 1 &&
                     idx[0] == a->v.self;
        pthread_rwlock_unlock(&a->lock);
        if (!first) {
            continue;
        }
        size_t ci = 0;
        while (ci < nc && c[ci].g != g) {
            ci++;
        }
        if (ci == nc) {
            aae_gc_cand_t *nc2 = realloc(c, (nc + 1) * sizeof(*c));
            if (nc2 == NULL) {
                break;
            }
            c = nc2;
            memset(&c[nc], 0, sizeof(c[nc]));
            c[nc++].g = g;
        }
        if (aae_kd_add(&c[ci].keys, k + 8, klen - 8, digest) == 0) {
            total++;
        }
    }
    store_iter_destroy(it);
    for (size_t i = 0; i < nc; i++) {
        bool *ok = malloc(c[i].keys.n * sizeof(*ok));
        if (ok != NULL) {
            for (size_t k = 0; k < c[i].keys.n; k++) {
                ok[k] = true;
            }
            if (aae_tomb_check(kv, c[i].g, &c[i].keys, ok) == 0) {
                aae_tomb_purge(kv, c[i].g, &c[i].keys, ok);
            }
        }
        free(ok);
        aae_kd_free(&c[i].keys);
    }
    free(c);
}

static int aae_handle_tomb(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out,
                           bool purge)
{
    uint64_t cnt = rd_varint(r);
    if (r->err || cnt == 0 || cnt > AAE_GC_MAX_KEYS) {
        return KV_EPROTO;
    }
    uint64_t purged_n = 0;
    for (uint64_t i = 0; i < cnt; i++) {
        size_t klen;
        const uint8_t *k = rd_string(r, kv->cfg.max_key_size, &klen);
        uint64_t digest = rd_u64(r);
        if (r->err || klen == 0) {
            return KV_EPROTO;
        }
        if (purge) {
            bool purged = false;
            if (replica_purge(kv, open, k, klen, digest, &purged) == 0 &&
                purged) {
                metric_inc(&kv->metrics, M_TOMBSTONES_PURGED);
                purged_n++;
            }
            continue;
        }
        void *raw = NULL;
        size_t len = 0;
        int grc = store_get(kv->store, STORE_CF_DATA, k, klen, &raw, &len);
        buf_put_u8(out, grc == 0 && aae_digest(raw, len) == digest);
        free(raw);
    }
    if (purge) {
        buf_put_varint(out, purged_n);
    }
    return 0;
}

int aae_handle_tomb_check(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    return aae_handle_tomb(kv, open, r, out, false);
}

int aae_handle_tomb_purge(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    return aae_handle_tomb(kv, open, r, out, true);
}
