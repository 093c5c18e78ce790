/*
 * aae_index.c - the anti-entropy index and the Merkle trees built from it
 * (Dynamo §4.7; the index is Riak's "AAE hashtree" kept beside the data).
 *
 * Owns the index column family (STORE_CF_AAE), the ring view anti-entropy
 * works from, one Merkle tree per range group, and the trees saved at a
 * clean close (a sealed blob in the meta column family).
 *
 * - Index: for every stored object, (ring hash big-endian ++ key) ->
 *   (digest of its encoded bytes, flags, newest sibling timestamp). It is
 *   written in the same atomic batch as the object (replica.c builds the
 *   batch under the key's lock: the object, plus the entry aae_stage
 *   adds; aae_commit writes it), so it is never out of step with the
 *   data, even across a crash. Ordered by ring hash, it
 *   lists the keys of a tree leaf with one short scan, and it is what a
 *   tree is rebuilt from (much smaller than the objects).
 * - Range groups: the ring points whose preference list is the same set of
 *   nodes. Two replicas compare exactly the keys they should both hold by
 *   comparing the tree of a group they are both in; a group is named by a
 *   hash of its sorted member ids, so both sides agree on it without a
 *   round trip (and refuse to compare when their rings differ).
 * - Trees live in memory. A clean close saves them with the store's
 *   sequence number; the next start trusts them only if nothing was
 *   written since and the ring is the same, and deletes them before serving
 *   so a crash cannot leave stale ones behind. Otherwise, and after every
 *   membership change, they are rebuilt from an index snapshot (paced by
 *   the runner in aae.c) while writes keep toggling the new trees (XOR
 *   commutes, so snapshot + later toggles is exactly the current state).
 *
 * Calls go down only: the store, the ring, merkle.c. A damaged entry found
 * by a rebuild is handed back to the caller, which repairs it through
 * replica_reindex (the key's lock is the replica's).
 *
 * Lock order: a key's lock stripe, then `lock` (shared), then the store.
 */
#include "aae_index.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#define AAE_IDX_VALUE 17 /* digest u64, flags u8, newest timestamp i64 */
#define AAE_TREES_KEY "aae.trees"
static const uint8_t aae_trees_prefix[3] = {'K', 'T', 1};

/* ------------------------------------------------------------- helpers */

uint64_t aae_digest(const void *enc, size_t len)
{
    return XXH3_64bits(enc, len);
}

static void aae_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static uint64_t aae_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int aae_kd_add(aae_kdlist_t *l, const void *key, size_t klen, uint64_t digest)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        aae_kd_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            return KV_ENOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    uint8_t *k = malloc(klen ? klen : 1);
    if (k == NULL) {
        return KV_ENOMEM;
    }
    memcpy(k, key, klen);
    l->v[l->n++] = (aae_kd_t){k, klen, digest};
    return 0;
}

void aae_kd_free(aae_kdlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int aae_kd_cmp(const void *a, const void *b)
{
    const aae_kd_t *x = a;
    const aae_kd_t *y = b;
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    if (c != 0) {
        return c;
    }
    return (x->klen > y->klen) - (x->klen < y->klen);
}

static bool aae_idx_parse(const void *val, size_t len, uint64_t *digest,
                          uint8_t *flags, int64_t *ts)
{
    if (len != AAE_IDX_VALUE) {
        return false;
    }
    rd_t r;
    rd_init(&r, val, len);
    *digest = rd_u64(&r);
    *flags = rd_u8(&r);
    *ts = (int64_t)rd_u64(&r);
    return !r.err && (*flags & ~AAE_IDX_TOMB) == 0;
}

bool aae_index_entry(const uint8_t *k, size_t klen, const void *val,
                     size_t vlen, uint64_t *h, uint64_t *digest, uint8_t *flags,
                     int64_t *ts)
{
    if (klen < 9 || !aae_idx_parse(val, vlen, digest, flags, ts)) {
        return false;
    }
    *h = aae_get_be64(k);
    return true;
}

/* ---------------------------------------------------------- the view */

void aae_view_free(aae_view_t *v)
{
    for (size_t i = 0; i < v->ngroups; i++) {
        merkle_free(v->groups[i].tree);
    }
    free(v->groups);
    free(v->arc_group);
    ring_free(v->ring);
    memset(v, 0, sizeof(*v));
}

/* The group id of a preference list, and whether self is in it. */
static uint64_t aae_group_id(const ring_t *r, const size_t *idx, size_t n,
                             size_t self, bool *has_self)
{
    const char *ids[CLUSTER_MAX_ROUTE];
    *has_self = false;
    for (size_t i = 0; i < n; i++) {
        ids[i] = ring_node_id(r, idx[i]);
        *has_self = *has_self || idx[i] == self;
    }
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            const char *t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    }
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t i = 0; i < n; i++) {
        XXH3_64bits_update(&st, ids[i], strlen(ids[i]) + 1);
    }
    return XXH3_64bits_digest(&st);
}

aae_group_t *aae_group_find(const aae_view_t *v, uint64_t id)
{
    for (size_t i = 0; i < v->ngroups; i++) {
        if (v->groups[i].id == id) {
            return &v->groups[i];
        }
    }
    return NULL;
}

aae_group_t *aae_group_of(const aae_view_t *v, uint64_t h)
{
    if (v->ring == NULL || v->arc_group == NULL) {
        return NULL;
    }
    int32_t g = v->arc_group[ring_position_of(v->ring, h)];
    return g < 0 ? NULL : &v->groups[g];
}

int aae_view_build(kv_t *kv, const kv_member_t *m, size_t count,
                   aae_view_t *out)
{
    memset(out, 0, sizeof(*out));
    const char **ids = calloc(count ? count : 1, sizeof(*ids));
    if (ids == NULL) {
        return KV_ENOMEM;
    }
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t i = 0; i < count; i++) {
        ids[i] = m[i].id;
        XXH3_64bits_update(&st, m[i].id, strlen(m[i].id) + 1);
    }
    out->n = (size_t)kv->cfg.n < count ? (size_t)kv->cfg.n : count;
    XXH3_64bits_update(&st, &out->n, sizeof(out->n));
    XXH3_64bits_update(&st, &kv->cfg.vnodes, sizeof(kv->cfg.vnodes));
    out->sig = XXH3_64bits_digest(&st);
    int rc =
        ring_build(ids, count, kv->cfg.vnodes, &out->ring) == 0 ? 0 : KV_ENOMEM;
    free(ids);
    if (rc != 0 || out->ring == NULL) {
        return rc != 0 ? rc : KV_ENOMEM;
    }
    if (ring_node_index(out->ring, kv->cfg.node_id, &out->self) != 0) {
        return 0; /* not (yet) a member: no groups */
    }
    size_t cap = 0;
    size_t npos = ring_positions(out->ring);
    out->arc_group = malloc((npos ? npos : 1) * sizeof(*out->arc_group));
    if (out->arc_group == NULL) {
        aae_view_free(out);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < npos; i++) {
        size_t idx[CLUSTER_MAX_ROUTE];
        size_t got = ring_successors_at(out->ring, ring_position(out->ring, i),
                                        idx, out->n);
        bool self;
        uint64_t id = aae_group_id(out->ring, idx, got, out->self, &self);
        aae_group_t *have = self ? aae_group_find(out, id) : NULL;
        out->arc_group[i] = !self          ? -1
                            : have != NULL ? (int32_t)(have - out->groups)
                                           : (int32_t)out->ngroups;
        if (!self || have != NULL) {
            continue;
        }
        if (out->ngroups == cap) {
            cap = cap ? 2 * cap : 8;
            aae_group_t *g = realloc(out->groups, cap * sizeof(*g));
            if (g == NULL) {
                aae_view_free(out);
                return KV_ENOMEM;
            }
            out->groups = g;
        }
        aae_group_t *g = &out->groups[out->ngroups];
        memset(g, 0, sizeof(*g));
        g->id = id;
        g->n = got;
        for (size_t k = 0; k < got; k++) {
            snprintf(g->ids[k], sizeof(g->ids[k]), "%s",
                     ring_node_id(out->ring, idx[k]));
        }
        g->tree = merkle_new();
        if (g->tree == NULL) {
            aae_view_free(out);
            return KV_ENOMEM;
        }
        out->ngroups++;
    }
    return 0;
}

/* ------------------------------------------------------- index entries */

int aae_stage(kv_t *kv, store_batch_t *b, const void *key, size_t klen,
              const obj_t *o, const void *enc, size_t enclen,
              const uint64_t *old_digest, aae_toggle_t *t)
{
    (void)kv;
    uint64_t h = ring_hash_key(key, klen);
    uint8_t small[256];
    uint8_t *ik = 8 + klen <= sizeof(small) ? small : malloc(8 + klen);
    if (ik == NULL) {
        return KV_ENOMEM;
    }
    aae_put_be64(ik, h);
    memcpy(ik + 8, key, klen);
    t->h = h;
    t->x = old_digest != NULL ? merkle_entry(key, klen, *old_digest) : 0;
    if (enc != NULL) {
        uint64_t digest = aae_digest(enc, enclen);
        uint8_t flags = o->n > 0 ? AAE_IDX_TOMB : 0;
        int64_t ts = 0;
        for (size_t i = 0; i < o->n; i++) {
            if (!(o->sib[i].flags & OBJ_SIB_TOMBSTONE)) {
                flags = 0;
            }
            ts = o->sib[i].ts_us > ts ? o->sib[i].ts_us : ts;
        }
        uint8_t v[17];
        for (int i = 0; i < 8; i++) {
            v[i] = (uint8_t)(digest >> (8 * i));
            v[9 + i] = (uint8_t)((uint64_t)ts >> (8 * i));
        }
        v[8] = flags;
        store_batch_put(b, STORE_CF_AAE, ik, 8 + klen, v, sizeof(v));
        t->x ^= merkle_entry(key, klen, digest);
    } else {
        store_batch_delete(b, STORE_CF_AAE, ik, 8 + klen);
    }
    if (ik != small) {
        free(ik);
    }
    return 0;
}

int aae_commit(kv_t *kv, store_batch_t *b, const aae_toggle_t *t, size_t n)
{
    struct aae *a = kv->aae;
    /* Shared: a rebuild (exclusive) must see either none or all of it. */
    pthread_rwlock_rdlock(&a->lock);
    int rc = store_batch_write(b);
    if (rc == 0 && a->v.ring == NULL) {
        atomic_fetch_add(&a->unviewed, 1);
    } else if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            aae_group_t *g = aae_group_of(&a->v, t[i].h);
            if (g != NULL && t[i].x != 0) {
                merkle_toggle(g->tree, merkle_leaf_of(t[i].h), t[i].x);
            }
        }
    }
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

/* Lists the index entries of one leaf that belong to group g. The caller
 * holds `lock` shared. */
int aae_leaf_keys(kv_t *kv, const aae_view_t *v, const aae_group_t *g,
                  uint32_t leaf, aae_kdlist_t *out, size_t *bytes)
{
    uint8_t start[8];
    aae_put_be64(start, (uint64_t)leaf << 48);
    store_iter_t *it = store_iter_create(kv->store, STORE_CF_AAE, start, 8);
    if (it == NULL) {
        return KV_ENOMEM;
    }
    int rc = 0;
    for (; rc == 0 && store_iter_valid(it); store_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = store_iter_key(it, &klen);
        const void *val = store_iter_value(it, &vlen);
        if (klen < 9) {
            continue; /* not ours to list; the rebuild repairs the index */
        }
        uint64_t h = aae_get_be64(k);
        if (merkle_leaf_of(h) != leaf) {
            break;
        }
        uint64_t digest;
        uint8_t flags;
        int64_t ts;
        if (!aae_idx_parse(val, vlen, &digest, &flags, &ts) ||
            aae_group_of(v, h) != g) {
            continue;
        }
        rc = aae_kd_add(out, k + 8, klen - 8, digest);
        *bytes += klen + 8;
    }
    if (rc == 0) {
        rc = store_iter_status(it);
    }
    store_iter_destroy(it);
    return rc;
}

/* ------------------------------------------------ install, rebuild */

static void aae_cand_free(struct aae *a)
{
    for (size_t i = 0; i < a->ncand; i++) {
        merkle_free(a->cand[i].tree);
    }
    free(a->cand);
    a->cand = NULL;
    a->ncand = 0;
}

void aae_index_install(kv_t *kv, aae_view_t *nv, bool try_load)
{
    struct aae *a = kv->aae;
    aae_view_t old;
    pthread_rwlock_wrlock(&a->lock);
    old = a->v;
    a->v = *nv;
    memset(nv, 0, sizeof(*nv));
    atomic_store(&a->ready, false);
    bool loaded = false;
    if (try_load && a->cand != NULL) {
        const char *why = NULL;
        KV_LOG(&kv->log, KV_LOG_DEBUG,
               "aae: saved sig %016" PRIx64 " (%zu trees), now %016" PRIx64
               " (%zu)",
               a->cand_sig, a->ncand, a->v.sig, a->v.ngroups);
        if (a->cand_sig != a->v.sig || a->ncand != a->v.ngroups) {
            why = "membership changed";
        } else if (atomic_load(&a->unviewed) != 0) {
            why = "written to before the ring was known";
        }
        for (size_t i = 0; why == NULL && i < a->ncand; i++) {
            if (aae_group_find(&a->v, a->cand[i].id) == NULL) {
                why = "membership changed";
            }
        }
        for (size_t i = 0; why == NULL && i < a->ncand; i++) {
            aae_group_t *g = aae_group_find(&a->v, a->cand[i].id);
            merkle_t *t = g->tree;
            g->tree = a->cand[i].tree;
            a->cand[i].tree = t;
        }
        if (why == NULL) {
            loaded = true;
            metric_inc(&kv->metrics, M_AAE_TREE_LOADS);
            KV_LOG(&kv->log, KV_LOG_INFO,
                   "aae: using %zu Merkle trees saved at the last close",
                   a->ncand);
        } else {
            KV_LOG(&kv->log, KV_LOG_INFO,
                   "aae: saved Merkle trees not used (%s); rebuilding", why);
        }
    }
    if (loaded) {
        atomic_store(&a->ready, true);
    } else {
        store_iter_destroy(a->scan);
        a->scan = store_iter_create(kv->store, STORE_CF_AAE, NULL, 0);
    }
    pthread_rwlock_unlock(&a->lock);
    if (try_load) {
        aae_cand_free(a);
    }
    /* Nothing references the old view: writers and handlers use it only
     * under the lock, exchanges only on this thread. */
    aae_view_free(&old);
}

bool aae_index_scan(kv_t *kv, size_t max, aae_kdlist_t *bad, uint64_t *fed,
                    int *rc)
{
    struct aae *a = kv->aae;
    store_iter_t *it = a->scan;
    size_t n = 0;
    for (; n < max && store_iter_valid(it); store_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = store_iter_key(it, &klen);
        const void *val = store_iter_value(it, &vlen);
        uint64_t digest;
        uint8_t flags;
        int64_t ts;
        if (klen < 9 || !aae_idx_parse(val, vlen, &digest, &flags, &ts) ||
            aae_get_be64(k) != ring_hash_key(k + 8, klen - 8)) {
            if (klen >= 9) {
                (void)aae_kd_add(bad, k + 8, klen - 8, 0);
            }
            continue;
        }
        uint64_t h = aae_get_be64(k);
        pthread_rwlock_rdlock(&a->lock);
        aae_group_t *g = aae_group_of(&a->v, h);
        if (g != NULL) {
            merkle_toggle(g->tree, merkle_leaf_of(h),
                          merkle_entry(k + 8, klen - 8, digest));
        }
        pthread_rwlock_unlock(&a->lock);
        n++;
    }
    *fed += n;
    if (store_iter_valid(it)) {
        return false;
    }
    *rc = store_iter_status(it);
    store_iter_destroy(it);
    a->scan = NULL;
    return true;
}

/* ------------------------------------------------------- save, load */

/* Reads the trees a clean close saved, before anything else can write:
 * they are kept only if the save was the store's last write. The saved
 * copy is deleted at once, so a crash from here on cannot find trees that
 * no longer match the data. */
static void aae_read_saved(kv_t *kv)
{
    struct aae *a = kv->aae;
    uint64_t seq = store_latest_seq(kv->store);
    void *raw = NULL;
    size_t len = 0;
    if (store_get(kv->store, STORE_CF_META, AAE_TREES_KEY,
                  strlen(AAE_TREES_KEY), &raw, &len) != 0) {
        return;
    }
    store_delete(kv->store, STORE_CF_META, AAE_TREES_KEY,
                 strlen(AAE_TREES_KEY));
    rd_t r;
    bool ok =
        rd_unseal(&r, raw, len, aae_trees_prefix, sizeof(aae_trees_prefix));
    uint64_t saved_seq = 0;
    uint64_t ng = 0;
    if (ok) {
        a->cand_sig = rd_u64(&r);
        saved_seq = rd_u64(&r);
        ng = rd_varint(&r);
        ok = !r.err && ng <= rd_left(&r) / (8 * MERKLE_LEAVES);
    }
    if (ok && saved_seq + 1 != seq) {
        KV_LOG(&kv->log, KV_LOG_INFO,
               "aae: saved Merkle trees are older than the store; "
               "rebuilding");
        free(raw);
        return;
    }
    if (ok) {
        a->cand = calloc(ng ? ng : 1, sizeof(*a->cand));
        ok = a->cand != NULL;
    }
    for (uint64_t i = 0; ok && i < ng; i++) {
        aae_group_t *g = &a->cand[a->ncand];
        g->id = rd_u64(&r);
        g->tree = merkle_new();
        if (g->tree == NULL) {
            ok = false;
            break;
        }
        a->ncand++;
        ok = !r.err && merkle_load(g->tree, &r) == 0;
    }
    if (ok && rd_left(&r) != 0) {
        ok = false;
    }
    if (!ok) {
        aae_cand_free(a);
        metric_inc(&kv->metrics, M_AAE_TREE_CORRUPT);
        KV_LOG(&kv->log, KV_LOG_WARN,
               "aae: saved Merkle trees failed validation; rebuilding "
               "from the store");
    }
    free(raw);
}

/* Saves complete trees with the sequence number the save itself follows. */
static void aae_save(kv_t *kv)
{
    struct aae *a = kv->aae;
    if (!atomic_load(&a->ready) || a->v.ring == NULL) {
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_put(&b, aae_trees_prefix, sizeof(aae_trees_prefix));
    buf_put_u64(&b, a->v.sig);
    buf_put_u64(&b, store_latest_seq(kv->store));
    buf_put_varint(&b, a->v.ngroups);
    for (size_t i = 0; i < a->v.ngroups; i++) {
        buf_put_u64(&b, a->v.groups[i].id);
        merkle_save(a->v.groups[i].tree, &b);
    }
    buf_seal(&b, 0);
    if (!b.oom) {
        (void)store_put(kv->store, STORE_CF_META, AAE_TREES_KEY,
                        strlen(AAE_TREES_KEY), b.p, b.len);
    }
    buf_free(&b);
}

int aae_index_open(kv_t *kv)
{
    struct aae *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return KV_ENOMEM;
    }
    pthread_rwlock_init(&a->lock, NULL);
    atomic_init(&a->ready, false);
    atomic_init(&a->unviewed, 0);
    kv->aae = a;
    aae_read_saved(kv);
    return 0;
}

void aae_index_close(kv_t *kv)
{
    struct aae *a = kv->aae;
    if (a == NULL) {
        return;
    }
    if (kv->store != NULL) {
        aae_save(kv);
    }
    store_iter_destroy(a->scan);
    aae_view_free(&a->v);
    aae_cand_free(a);
    pthread_rwlock_destroy(&a->lock);
    free(a);
    kv->aae = NULL;
}
