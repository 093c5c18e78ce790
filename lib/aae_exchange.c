/*
 * aae_exchange.c - the anti-entropy exchange protocol (WIRE_AE): how two
 * replicas find and repair the keys of a range on which they differ.
 *
 * An exchange of one range group between this node and one peer: walk the
 * two Merkle trees from the root down, one level per round trip, asking
 * only for the children of nodes that differed (AAE_OP_HASHES); list the
 * (key, digest) pairs of the differing leaves on both sides (AAE_OP_KEYS,
 * from the index); fetch and merge here what the peer holds differently or
 * alone (AAE_OP_FETCH, then replica_merge: a merge, never an overwrite, so
 * concurrent writes survive); push back every differing key unless the
 * peer already holds exactly the merged object (AAE_OP_PUSH). Requests are
 * batched and each reply has a soft byte budget, so one exchange never
 * builds an unbounded message.
 *
 * Owns no state: it reads the view through aae_index.h (the tree of the
 * group it exchanges belongs to the runner thread's view, which only that
 * thread swaps; handlers take the view's lock shared). Sits above the
 * replica and the index, below aae.c's runner and handler table.
 */
#include "aae_exchange.h"

#include <stdlib.h>
#include <string.h>

#include "aae.h"
#include "replica.h"

#define AAE_BATCH_KEYS 256
#define AAE_BATCH_LEAVES 256
#define AAE_BATCH_PARENTS 1024
#define AAE_REPLY_BUDGET (512u << 10) /* soft bound on one reply's bytes */

/* ------------------------------------------------------- rpc plumbing */

int aae_call(kv_t *kv, rpc_peer_t *peer, uint16_t op, const buf_t *q,
             uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (q->oom) {
        return KV_ENOMEM;
    }
    buf_t b;
    buf_init(&b);
    wire_header(&b, WIRE_AE, rpc_next_id(kv->rpc), 0, op);
    wire_put_bytes(&b, q->p, q->len);
    metric_add(&kv->metrics, M_AAE_BYTES_SENT, b.len);
    return rpc_call_wait(kv->rpc, peer, &b, kv->cfg.timeout_ms, WIRE_AE, out,
                         outlen);
}

/* ------------------------------------------------------- the exchange */

/* Descends from the root to the differing leaves: *leaves (malloc'd). */
static int aae_descend(kv_t *kv, aae_group_t *g, rpc_peer_t *peer,
                       uint32_t **leaves, size_t *nleaves)
{
    uint32_t *diff = malloc(sizeof(*diff));
    size_t nd = 1;
    int rc = diff != NULL ? 0 : KV_ENOMEM;
    if (rc == 0) {
        diff[0] = 0;
    }
    for (unsigned level = 0; rc == 0 && nd > 0 && level <= MERKLE_DEPTH;
         level++) {
        /* Level 0 asks for the root; deeper ones for the children of the
         * nodes that differed one level up. */
        size_t per = level == 0 ? 1 : MERKLE_FANOUT;
        uint32_t *next = malloc(nd * per * sizeof(*next));
        size_t nn = 0;
        if (next == NULL) {
            rc = KV_ENOMEM;
            break;
        }
        for (size_t at = 0; rc == 0 && at < nd; at += AAE_BATCH_PARENTS) {
            size_t cnt =
                nd - at < AAE_BATCH_PARENTS ? nd - at : AAE_BATCH_PARENTS;
            buf_t q;
            buf_init(&q);
            buf_put_u64(&q, g->id);
            buf_put_u8(&q, (uint8_t)level);
            buf_put_varint(&q, level == 0 ? 0 : cnt);
            for (size_t i = 0; level > 0 && i < cnt; i++) {
                buf_put_varint(&q, diff[at + i]);
            }
            uint8_t *p = NULL;
            size_t len = 0;
            rc = aae_call(kv, peer, AAE_OP_HASHES, &q, &p, &len);
            buf_free(&q);
            rd_t r;
            rd_init(&r, p, len);
            uint64_t got = rd_varint(&r);
            if (rc == 0 && (r.err || got != (level == 0 ? 1 : cnt * per))) {
                rc = KV_EPROTO;
            }
            for (size_t i = 0; rc == 0 && i < got; i++) {
                uint32_t idx = level == 0 ? 0
                                          : diff[at + i / per] * MERKLE_FANOUT +
                                                (uint32_t)(i % per);
                uint64_t remote = rd_u64(&r);
                if (r.err) {
                    rc = KV_EPROTO;
                } else if (remote != merkle_node(g->tree, level, idx)) {
                    next[nn++] = idx;
                }
            }
            metric_add(&kv->metrics, M_AAE_TREE_NODES, rc == 0 ? got : 0);
            free(p);
        }
        free(diff);
        diff = next;
        nd = nn;
    }
    if (rc != 0) {
        free(diff);
        return rc;
    }
    *leaves = diff;
    *nleaves = nd;
    return 0;
}

/* The peer's (key, digest) pairs of the given leaves. */
static int aae_remote_keys(kv_t *kv, aae_group_t *g, rpc_peer_t *peer,
                           const uint32_t *leaves, size_t n, aae_kdlist_t *out)
{
    size_t at = 0;
    int rc = 0;
    while (rc == 0 && at < n) {
        size_t cnt = n - at < AAE_BATCH_LEAVES ? n - at : AAE_BATCH_LEAVES;
        buf_t q;
        buf_init(&q);
        buf_put_u64(&q, g->id);
        buf_put_varint(&q, cnt);
        for (size_t i = 0; i < cnt; i++) {
            buf_put_varint(&q, leaves[at + i]);
        }
        uint8_t *p = NULL;
        size_t len = 0;
        rc = aae_call(kv, peer, AAE_OP_KEYS, &q, &p, &len);
        buf_free(&q);
        rd_t r;
        rd_init(&r, p, len);
        uint64_t done = rd_varint(&r);
        uint64_t count = rd_varint(&r);
        if (rc == 0 && (r.err || done == 0 || done > cnt)) {
            rc = KV_EPROTO;
        }
        for (uint64_t i = 0; rc == 0 && i < count; i++) {
            size_t klen;
            const uint8_t *k = rd_string(&r, kv->cfg.max_key_size, &klen);
            uint64_t digest = rd_u64(&r);
            rc = r.err || klen == 0 ? KV_EPROTO
                                    : aae_kd_add(out, k, klen, digest);
        }
        if (rc == 0 && rd_left(&r) != 0) {
            rc = KV_EPROTO;
        }
        free(p);
        metric_add(&kv->metrics, M_AAE_KEYS_COMPARED, rc == 0 ? count : 0);
        at += rc == 0 ? (size_t)done : 0;
    }
    return rc;
}

/* Decodes an object that came from a peer and merges it into the local
 * replica; counts it when that changed the local object. */
static int aae_merge_bytes(kv_t *kv, replica_group_t *open, const void *key,
                           size_t klen, const uint8_t *ob, size_t olen,
                           bool *changed)
{
    obj_t o;
    obj_init(&o);
    *changed = false;
    int rc = obj_decode(ob, olen, &kv->limits, &o);
    if (rc == 0) {
        rc = replica_merge(kv, open, key, klen, &o, changed);
    }
    obj_free(&o);
    if (*changed) {
        metric_inc(&kv->metrics, M_AAE_KEYS_REPAIRED);
    }
    return rc;
}

/* Fetches the peer's objects for keys and merges each into this replica. */
static int aae_fetch(kv_t *kv, rpc_peer_t *peer, const aae_kd_t *keys, size_t n)
{
    size_t at = 0;
    int rc = 0;
    while (rc == 0 && at < n) {
        size_t cnt = n - at < AAE_BATCH_KEYS ? n - at : AAE_BATCH_KEYS;
        buf_t q;
        buf_init(&q);
        buf_put_varint(&q, cnt);
        for (size_t i = 0; i < cnt; i++) {
            wire_put_bytes(&q, keys[at + i].key, keys[at + i].klen);
        }
        uint8_t *p = NULL;
        size_t len = 0;
        rc = aae_call(kv, peer, AAE_OP_FETCH, &q, &p, &len);
        buf_free(&q);
        rd_t r;
        rd_init(&r, p, len);
        uint64_t got = rd_varint(&r);
        if (rc == 0 && (r.err || got == 0 || got > cnt)) {
            rc = KV_EPROTO;
        }
        for (uint64_t i = 0; rc == 0 && i < got; i++) {
            size_t olen;
            const uint8_t *ob = rd_string(&r, SIZE_MAX, &olen);
            if (r.err) {
                rc = KV_EPROTO;
                break;
            }
            if (olen == 0) {
                continue; /* gone on the peer since it listed it */
            }
            metric_inc(&kv->metrics, M_AAE_OBJECTS_SENT);
            bool changed;
            rc = aae_merge_bytes(kv, NULL, keys[at + i].key, keys[at + i].klen,
                                 ob, olen, &changed);
        }
        free(p);
        at += rc == 0 ? (size_t)got : 0;
    }
    return rc;
}

/* Pushes this replica's objects for keys, unless the peer already holds
 * exactly that object (its digest is in want[i].digest, 0 for none). */
static int aae_push(kv_t *kv, rpc_peer_t *peer, const aae_kd_t *want, size_t n)
{
    size_t at = 0;
    int rc = 0;
    while (rc == 0 && at < n) {
        buf_t q;
        buf_init(&q);
        buf_t items;
        buf_init(&items);
        size_t cnt = 0;
        while (at < n && cnt < AAE_BATCH_KEYS && items.len < AAE_REPLY_BUDGET) {
            const aae_kd_t *k = &want[at++];
            void *raw = NULL;
            size_t len = 0;
            int grc = store_get(kv->store, STORE_CF_DATA, k->key, k->klen, &raw,
                                &len);
            if (grc == 0 && aae_digest(raw, len) != k->digest) {
                wire_put_bytes(&items, k->key, k->klen);
                wire_put_bytes(&items, raw, len);
                cnt++;
            } else if (grc != 0 && grc != KV_ENOTFOUND) {
                rc = grc;
            }
            free(raw);
        }
        if (rc == 0 && cnt > 0) {
            buf_put_varint(&q, cnt);
            buf_put(&q, items.p, items.len);
            uint8_t *p = NULL;
            size_t len = 0;
            rc = aae_call(kv, peer, AAE_OP_PUSH, &q, &p, &len);
            free(p);
            metric_add(&kv->metrics, M_AAE_OBJECTS_SENT, rc == 0 ? cnt : 0);
        }
        buf_free(&q);
        buf_free(&items);
    }
    return rc;
}

int aae_exchange(kv_t *kv, aae_group_t *g, rpc_peer_t *peer)
{
    struct aae *a = kv->aae;
    metric_inc(&kv->metrics, M_AAE_EXCHANGES);
    uint32_t *leaves = NULL;
    size_t nleaves = 0;
    int rc = aae_descend(kv, g, peer, &leaves, &nleaves);
    aae_kdlist_t remote = {0};
    aae_kdlist_t local = {0};
    for (size_t at = 0; rc == 0 && at < nleaves; at += AAE_BATCH_LEAVES) {
        size_t cnt =
            nleaves - at < AAE_BATCH_LEAVES ? nleaves - at : AAE_BATCH_LEAVES;
        rc = aae_remote_keys(kv, g, peer, leaves + at, cnt, &remote);
        pthread_rwlock_rdlock(&a->lock);
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            size_t bytes = 0;
            rc = aae_leaf_keys(kv, &a->v, g, leaves[at + i], &local, &bytes);
        }
        pthread_rwlock_unlock(&a->lock);
    }
    free(leaves);
    /* Keys the peer has differently or alone are fetched and merged here;
     * then every key that differed is pushed back unless the peer already
     * holds the merged object. */
    aae_kdlist_t fetch = {0};
    aae_kdlist_t push = {0};
    if (rc == 0) {
        if (remote.n > 1) {
            qsort(remote.v, remote.n, sizeof(*remote.v), aae_kd_cmp);
        }
        if (local.n > 1) {
            qsort(local.v, local.n, sizeof(*local.v), aae_kd_cmp);
        }
        size_t i = 0, j = 0;
        while (rc == 0 && (i < local.n || j < remote.n)) {
            int c = i == local.n    ? 1
                    : j == remote.n ? -1
                                    : aae_kd_cmp(&local.v[i], &remote.v[j]);
            if (c < 0) {
                rc = aae_kd_add(&push, local.v[i].key, local.v[i].klen, 0);
                i++;
            } else if (c > 0) {
                rc = aae_kd_add(&fetch, remote.v[j].key, remote.v[j].klen, 0);
                if (rc == 0) {
                    rc = aae_kd_add(&push, remote.v[j].key, remote.v[j].klen,
                                    remote.v[j].digest);
                }
                j++;
            } else {
                if (local.v[i].digest != remote.v[j].digest) {
                    rc = aae_kd_add(&fetch, remote.v[j].key, remote.v[j].klen,
                                    0);
                    if (rc == 0) {
                        rc = aae_kd_add(&push, remote.v[j].key,
                                        remote.v[j].klen, remote.v[j].digest);
                    }
                }
                i++;
                j++;
            }
        }
    }
    if (rc == 0) {
        rc = aae_fetch(kv, peer, fetch.v, fetch.n);
    }
    if (rc == 0) {
        rc = aae_push(kv, peer, push.v, push.n);
    }
    aae_kd_free(&remote);
    aae_kd_free(&local);
    aae_kd_free(&fetch);
    aae_kd_free(&push);
    return rc;
}

/* ------------------------------------------------------- the answers */

int aae_handle_hashes(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    (void)open;
    struct aae *a = kv->aae;
    uint64_t gid = rd_u64(r);
    uint8_t level = rd_u8(r);
    uint64_t cnt = rd_varint(r);
    if (r->err || level > MERKLE_DEPTH || cnt > AAE_BATCH_PARENTS ||
        (level == 0) != (cnt == 0)) {
        return KV_EPROTO;
    }
    pthread_rwlock_rdlock(&a->lock);
    aae_group_t *g = aae_group_find(&a->v, gid);
    int rc = !atomic_load(&a->ready) ? KV_EUNAVAIL
             : g == NULL             ? KV_ENOTFOUND
                                     : 0;
    if (rc == 0 && level == 0) {
        buf_put_varint(out, 1);
        buf_put_u64(out, merkle_node(g->tree, 0, 0));
    } else if (rc == 0) {
        buf_put_varint(out, cnt * MERKLE_FANOUT);
        for (uint64_t i = 0; rc == 0 && i < cnt; i++) {
            uint64_t p = rd_varint(r);
            if (r->err || p >= merkle_width(level - 1)) {
                rc = KV_EPROTO;
                break;
            }
            for (uint32_t c = 0; c < MERKLE_FANOUT; c++) {
                buf_put_u64(out, merkle_node(g->tree, level,
                                             (uint32_t)p * MERKLE_FANOUT + c));
            }
        }
    }
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

int aae_handle_keys(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    (void)open;
    struct aae *a = kv->aae;
    uint64_t gid = rd_u64(r);
    uint64_t cnt = rd_varint(r);
    if (r->err || cnt == 0 || cnt > AAE_BATCH_LEAVES) {
        return KV_EPROTO;
    }
    aae_kdlist_t l = {0};
    size_t bytes = 0;
    uint64_t done = 0;
    pthread_rwlock_rdlock(&a->lock);
    aae_group_t *g = aae_group_find(&a->v, gid);
    int rc = !atomic_load(&a->ready) ? KV_EUNAVAIL
             : g == NULL             ? KV_ENOTFOUND
                                     : 0;
    /* Whole leaves only, and at least one, until the budget is spent. */
    for (; rc == 0 && done < cnt && (done == 0 || bytes < AAE_REPLY_BUDGET);
         done++) {
        uint64_t leaf = rd_varint(r);
        if (r->err || leaf >= MERKLE_LEAVES) {
            rc = KV_EPROTO;
            break;
        }
        rc = aae_leaf_keys(kv, &a->v, g, (uint32_t)leaf, &l, &bytes);
    }
    pthread_rwlock_unlock(&a->lock);
    if (rc == 0) {
        buf_put_varint(out, done);
        buf_put_varint(out, l.n);
        for (size_t i = 0; i < l.n; i++) {
            wire_put_bytes(out, l.v[i].key, l.v[i].klen);
            buf_put_u64(out, l.v[i].digest);
        }
    }
    aae_kd_free(&l);
    return rc;
}

int aae_handle_fetch(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    (void)open; /* reads only */
    uint64_t cnt = rd_varint(r);
    if (r->err || cnt == 0 || cnt > AAE_BATCH_KEYS) {
        return KV_EPROTO;
    }
    buf_t items;
    buf_init(&items);
    uint64_t done = 0;
    int rc = 0;
    for (; done < cnt && (done == 0 || items.len < AAE_REPLY_BUDGET); done++) {
        size_t klen;
        const uint8_t *k = rd_string(r, kv->cfg.max_key_size, &klen);
        if (r->err || klen == 0) {
            rc = KV_EPROTO;
            break;
        }
        void *raw = NULL;
        size_t len = 0;
        int grc = store_get(kv->store, STORE_CF_DATA, k, klen, &raw, &len);
        if (grc != 0 && grc != KV_ENOTFOUND) {
            rc = grc;
            break;
        }
        wire_put_bytes(&items, raw, grc == 0 ? len : 0);
        free(raw);
    }
    if (rc == 0) {
        buf_put_varint(out, done);
        buf_put(out, items.p, items.len);
    }
    buf_free(&items);
    return rc;
}

int aae_handle_push(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out)
{
    uint64_t cnt = rd_varint(r);
    if (r->err || cnt == 0 || cnt > AAE_BATCH_KEYS) {
        return KV_EPROTO;
    }
    uint64_t changed_n = 0;
    for (uint64_t i = 0; i < cnt; i++) {
        size_t klen, olen;
        const uint8_t *k = rd_string(r, kv->cfg.max_key_size, &klen);
        const uint8_t *ob = rd_string(r, SIZE_MAX, &olen);
        if (r->err || klen == 0) {
            return KV_EPROTO;
        }
        bool changed;
        int rc = aae_merge_bytes(kv, open, k, klen, ob, olen, &changed);
        if (rc != 0) {
            return rc;
        }
        changed_n += changed;
    }
    buf_put_varint(out, changed_n);
    return 0;
}
