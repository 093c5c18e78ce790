/*
 * aae.c - active anti-entropy (Dynamo §4.7) and tombstone garbage
 * collection.
 *
 * Owns the index column family, the ring view anti-entropy works from, one
 * Merkle tree per "range group", and the background thread.
 *
 * - Index: for every stored object, (ring hash big-endian ++ key) ->
 *   (digest of its encoded bytes, flags, newest sibling timestamp). It is
 *   written in the same atomic batch as the object (aae_write), so it is
 *   never out of step with the data, even across a crash. Ordered by ring
 *   hash, it lists the keys of a tree leaf with one short scan, and it is
 *   what a tree is rebuilt from (much smaller than the objects).
 * - Range groups: the ring points whose preference list is the same set of
 *   nodes. Two replicas compare exactly the keys they should both hold by
 *   comparing the tree of a group they are both in; a group is named by a
 *   hash of its sorted member ids, so both sides agree on it without a
 *   round trip (and refuse to compare when their rings differ).
 * - Trees live in memory. A clean close saves them with the store's
 *   sequence number; the next start trusts them only if nothing was
 *   written since and the ring is the same, and deletes them before serving
 *   so a crash cannot leave stale ones behind. Otherwise, and after every
 *   membership change, they are rebuilt from an index snapshot at a bounded
 *   rate while writes keep toggling the new trees (XOR commutes, so
 *   snapshot + later toggles is exactly the current state).
 * - Tombstones: an object whose siblings are all deletes, older than
 *   tombstone_grace_ms, is purged by its first owner once every owner
 *   confirms holding the same object, and then by each of them. A replica
 *   that was down during the delete cannot confirm, so nothing is purged
 *   until anti-entropy has brought it the tombstone: the key cannot come
 *   back from its old copy.
 *
 * Lock order: a key's lock stripe, then `lock` (shared), then the store.
 * `mu` guards the thread's flags and the status, never held across I/O.
 */
#include "aae.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "cluster.h"
#include "merkle.h"
#include "replica.h"
#include "ring.h"
#include "store.h"

#define AAE_IDX_VALUE 17 /* digest u64, flags u8, newest timestamp i64 */
#define AAE_IDX_TOMB 0x1u
#define AAE_BATCH_KEYS 256
#define AAE_BATCH_LEAVES 256
#define AAE_BATCH_PARENTS 1024
#define AAE_REPLY_BUDGET (512u << 10) /* soft bound on one reply's bytes */
#define AAE_TREES_KEY "aae.trees"
static const uint8_t aae_trees_prefix[3] = {'K', 'T', 1};

typedef struct aae_group {
    uint64_t id;
    size_t n;
    char ids[CLUSTER_MAX_ROUTE][WIRE_MAX_ID + 1];
    merkle_t *tree;
} aae_group_t;

/* A ring view and its groups, built off-lock and swapped in whole. */
typedef struct aae_view {
    ring_t *ring;
    size_t self;
    size_t n;
    uint64_t sig;
    aae_group_t *groups;
    size_t ngroups;
    /* For each ring position, the group of the points it owns, or -1 when
     * this node does not replicate them: one binary search per write. */
    int32_t *arc_group;
} aae_view_t;

struct aae {
    pthread_rwlock_t lock; /* view; shared by writers and handlers */
    aae_view_t v;
    _Atomic bool ready;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started;
    bool stop;
    bool changed;
    bool repair;
    store_iter_t *scan; /* a pending rebuild's snapshot (thread only) */
    /* Trees saved by the last clean close, read at open, adopted at start
     * if nothing was written before the view existed. */
    uint64_t cand_sig;
    aae_group_t *cand;
    size_t ncand;
    _Atomic uint64_t unviewed; /* writes while no view was installed */
    /* status */
    bool running;
    uint64_t passes;
    uint64_t ex_done;
    uint64_t ex_total;
    int64_t last_pass_us;
};

/* A (key, digest) pair of a leaf listing. */
typedef struct aae_kd {
    uint8_t *key;
    size_t klen;
    uint64_t digest;
} aae_kd_t;

typedef struct aae_kdlist {
    aae_kd_t *v;
    size_t n;
    size_t cap;
} aae_kdlist_t;

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

static int aae_kd_add(aae_kdlist_t *l, const void *key, size_t klen,
                      uint64_t digest)
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

static void aae_kd_free(aae_kdlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int aae_kd_cmp(const void *a, const void *b)
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

/* ---------------------------------------------------------- the view */

static void aae_view_free(aae_view_t *v)
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

static aae_group_t *aae_group_find(const aae_view_t *v, uint64_t id)
{
    for (size_t i = 0; i < v->ngroups; i++) {
        if (v->groups[i].id == id) {
            return &v->groups[i];
        }
    }
    return NULL;
}

/* The group of ring point h if this node replicates it, else NULL. */
static aae_group_t *aae_group_of(const aae_view_t *v, uint64_t h)
{
    if (v->ring == NULL || v->arc_group == NULL) {
        return NULL;
    }
    int32_t g = v->arc_group[ring_position_of(v->ring, h)];
    return g < 0 ? NULL : &v->groups[g];
}

/* Builds the view for the current member list: the ring, and an empty
 * tree for every group this node is in. */
static int aae_view_build(kv_t *kv, aae_view_t *out)
{
    memset(out, 0, sizeof(*out));
    kv_member_t *m = NULL;
    size_t count = 0;
    int rc = cluster_members(kv, &m, &count);
    if (rc != 0) {
        return rc;
    }
    const char **ids = calloc(count ? count : 1, sizeof(*ids));
    if (ids == NULL) {
        free(m);
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
    rc =
        ring_build(ids, count, kv->cfg.vnodes, &out->ring) == 0 ? 0 : KV_ENOMEM;
    free(ids);
    free(m);
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

/* ------------------------------------------------------- index writes */

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
        store_batch_put(b, STORE_CF_DATA, key, klen, enc, enclen);
        store_batch_put(b, STORE_CF_AAE, ik, 8 + klen, v, sizeof(v));
        t->x ^= merkle_entry(key, klen, digest);
    } else {
        store_batch_delete(b, STORE_CF_DATA, key, klen);
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

int aae_write(kv_t *kv, const void *key, size_t klen, const obj_t *o,
              const void *enc, size_t enclen, const uint64_t *old_digest)
{
    store_batch_t *b = store_batch_create(kv->store);
    if (b == NULL) {
        return KV_ENOMEM;
    }
    aae_toggle_t t;
    int rc = aae_stage(kv, b, key, klen, o, enc, enclen, old_digest, &t);
    if (rc == 0) {
        rc = aae_commit(kv, b, &t, 1);
    }
    store_batch_destroy(b);
    return rc;
}

/* Lists the index entries of one leaf that belong to group g. The caller
 * holds `lock` shared. */
static int aae_leaf_keys(kv_t *kv, const aae_view_t *v, const aae_group_t *g,
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

/* ------------------------------------------------------- rebuild, load */

static int64_t aae_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to ms on the thread's condition; false when asked to stop. */
static bool aae_nap(struct aae *a, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&a->mu);
    if (!a->stop) {
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    bool go = !a->stop;
    pthread_mutex_unlock(&a->mu);
    return go;
}

/* Swaps in a new view. With try_load, the trees saved at the last clean
 * close are taken if still exact; otherwise a snapshot for the rebuild is
 * taken in the same step, so every write is either in the snapshot or
 * toggles the new trees. */
static void aae_install(kv_t *kv, aae_view_t *nv, bool try_load)
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
    /* Nothing references the old view: writers and handlers use it only
     * under the lock, exchanges only on this thread. */
    aae_view_free(&old);
}

/* Feeds the pending snapshot into the trees, at most aae_rebuild_rate
 * entries per second. Returns true when complete. */
static bool aae_scan(kv_t *kv)
{
    struct aae *a = kv->aae;
    store_iter_t *it = a->scan;
    int64_t t0 = aae_mono_ms();
    uint64_t done = 0;
    aae_kdlist_t bad = {0};
    for (; store_iter_valid(it); store_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = store_iter_key(it, &klen);
        const void *val = store_iter_value(it, &vlen);
        uint64_t digest;
        uint8_t flags;
        int64_t ts;
        if (klen < 9 || !aae_idx_parse(val, vlen, &digest, &flags, &ts) ||
            aae_get_be64(k) != ring_hash_key(k + 8, klen - 8)) {
            if (klen >= 9) {
                (void)aae_kd_add(&bad, k + 8, klen - 8, 0);
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
        if (++done % 1024 == 0) {
            int64_t due = t0 + (int64_t)(done * 1000 /
                                         (uint64_t)kv->cfg.aae_rebuild_rate);
            int64_t now = aae_mono_ms();
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
    }
    int rc = store_iter_status(it);
    store_iter_destroy(it);
    a->scan = NULL;
    /* A damaged entry contributed nothing; recomputing it from its object
     * now goes through aae_write, which toggles the new trees. */
    for (size_t i = 0; i < bad.n; i++) {
        if (replica_reindex(kv, bad.v[i].key, bad.v[i].klen) == 0) {
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
    atomic_store(&a->ready, true);
    metric_inc(&kv->metrics, M_AAE_TREE_REBUILDS);
    KV_LOG(&kv->log, KV_LOG_INFO,
           "aae: %zu Merkle trees rebuilt from %" PRIu64 " index entries in "
           "%" PRId64 " ms",
           a->v.ngroups, done, aae_mono_ms() - t0);
    return true;
}

/* ------------------------------------------------------- rpc plumbing */

/* One synchronous request; *out (malloc'd, may be NULL when empty) is the
 * reply's payload. */
static int aae_call(kv_t *kv, rpc_peer_t *peer, uint16_t op, const buf_t *q,
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
static int aae_merge_bytes(kv_t *kv, const void *key, size_t klen,
                           const uint8_t *ob, size_t olen, bool *changed)
{
    obj_t o;
    obj_init(&o);
    *changed = false;
    int rc = obj_decode(ob, olen, &kv->limits, &o);
    if (rc == 0) {
        rc = replica_merge(kv, key, klen, &o, changed);
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
            rc = aae_merge_bytes(kv, keys[at + i].key, keys[at + i].klen, ob,
                                 olen, &changed);
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

/* One exchange of group g with the replica at peer. */
static int aae_exchange(kv_t *kv, aae_group_t *g, rpc_peer_t *peer)
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

/* ------------------------------------------------ tombstone collection */

typedef struct aae_cand {
    aae_group_t *g;
    aae_kdlist_t keys;
} aae_cand_t;

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
            replica_purge(kv, l->v[i].key, l->v[i].klen, l->v[i].digest,
                          &purged) == 0 &&
            purged) {
            metric_inc(&kv->metrics, M_TOMBSTONES_PURGED);
        }
    }
}

/* Purges the tombstones past their grace period that this node is the
 * first owner of, where every owner holds the same object. */
static void aae_sweep(kv_t *kv)
{
    struct aae *a = kv->aae;
    int64_t cutoff = node_now_us() - kv->cfg.tombstone_grace_ms * 1000;
    aae_cand_t *c = NULL;
    size_t nc = 0;
    store_iter_t *it = store_iter_create(kv->store, STORE_CF_AAE, NULL, 0);
    if (it == NULL) {
        return;
    }
    size_t total = 0;
    for (; store_iter_valid(it) && total < 4096; store_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = store_iter_key(it, &klen);
        const void *val = store_iter_value(it, &vlen);
        uint64_t digest;
        uint8_t flags;
        int64_t ts;
        if (klen < 9 || !aae_idx_parse(val, vlen, &digest, &flags, &ts) ||
            !(flags & AAE_IDX_TOMB) || ts >= cutoff) {
            continue;
        }
        uint64_t h = aae_get_be64(k);
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
            aae_cand_t *nc2 = realloc(c, (nc + 1) * sizeof(*c));
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

/* ------------------------------------------------------- the thread */

static void aae_pass(kv_t *kv)
{
    struct aae *a = kv->aae;
    /* Only this thread swaps the view, so the groups stay put. */
    uint64_t total = 0;
    for (size_t i = 0; i < a->v.ngroups; i++) {
        total += a->v.groups[i].n - 1;
    }
    pthread_mutex_lock(&a->mu);
    a->running = true;
    a->repair = false;
    a->ex_done = 0;
    a->ex_total = total;
    pthread_mutex_unlock(&a->mu);
    for (size_t i = 0; i < a->v.ngroups && kv->rpc != NULL; i++) {
        aae_group_t *g = &a->v.groups[i];
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
    a->last_pass_us = node_now_us();
    pthread_mutex_unlock(&a->mu);
}

static void *aae_main(void *arg)
{
    kv_t *kv = arg;
    struct aae *a = kv->aae;
    int64_t next_pass = aae_mono_ms() + kv->cfg.aae_interval_ms;
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
            if (aae_view_build(kv, &nv) == 0) {
                /* Gossip re-announces members it already has: rebuild only
                 * when the ring really changed. */
                if (nv.sig != a->v.sig || a->v.ring == NULL) {
                    KV_LOG(&kv->log, KV_LOG_INFO,
                           "aae: ring changed (%zu members, %zu ranges "
                           "here); rebuilding the trees",
                           ring_node_count(nv.ring), nv.ngroups);
                    aae_install(kv, &nv, false);
                } else {
                    aae_view_free(&nv);
                }
            }
        }
        if (a->scan != NULL && !aae_scan(kv)) {
            continue; /* stopped, or the members changed again */
        }
        pthread_mutex_lock(&a->mu);
        bool due = a->repair || aae_mono_ms() >= next_pass;
        pthread_mutex_unlock(&a->mu);
        if (due && atomic_load(&a->ready)) {
            aae_pass(kv);
            next_pass = aae_mono_ms() + kv->cfg.aae_interval_ms;
        }
        pthread_mutex_lock(&a->mu);
        if (!a->stop && !a->changed && !a->repair) {
            int64_t wait = next_pass - aae_mono_ms();
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            wait = wait < 1 ? 1 : wait;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        pthread_mutex_unlock(&a->mu);
    }
    return NULL;
}

/* ------------------------------------------------------- lifecycle */

static void aae_cand_free(struct aae *a)
{
    for (size_t i = 0; i < a->ncand; i++) {
        merkle_free(a->cand[i].tree);
    }
    free(a->cand);
    a->cand = NULL;
    a->ncand = 0;
}

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

static void aae_handle(void *arg, rpc_req_t *req, const wire_msg_t *m);

int aae_open(kv_t *kv)
{
    struct aae *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return KV_ENOMEM;
    }
    pthread_rwlock_init(&a->lock, NULL);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    atomic_init(&a->ready, false);
    atomic_init(&a->unviewed, 0);
    kv->aae = a;
    aae_read_saved(kv);
    if (kv->rpc != NULL) {
        return rpc_handle(kv->rpc, WIRE_AE, aae_handle, kv);
    }
    return 0;
}

/* The ring changed (cluster_on_ring_change: under the cluster's lock, so
 * it only flags the thread, which rebuilds the view from cluster_members). */
static void aae_ring_changed(void *arg)
{
    struct aae *a = arg;
    pthread_mutex_lock(&a->mu);
    a->changed = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int aae_start(kv_t *kv)
{
    struct aae *a = kv->aae;
    if (a == NULL || !kv->cfg.anti_entropy) {
        return 0;
    }
    /* Listening before the flag is cleared and the view built: a change
     * from here on is seen. */
    cluster_on_ring_change(kv, aae_ring_changed, a);
    pthread_mutex_lock(&a->mu);
    a->changed = false;
    pthread_mutex_unlock(&a->mu);
    aae_view_t nv;
    int rc = aae_view_build(kv, &nv);
    if (rc != 0) {
        return rc;
    }
    aae_install(kv, &nv, true);
    aae_cand_free(a);
    if (pthread_create(&a->thread, NULL, aae_main, kv) != 0) {
        return KV_ENOMEM;
    }
    a->started = true;
    return 0;
}

void aae_stop(kv_t *kv)
{
    struct aae *a = kv->aae;
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

void aae_close(kv_t *kv)
{
    struct aae *a = kv->aae;
    if (a == NULL) {
        return;
    }
    aae_stop(kv);
    cluster_on_ring_change(kv, NULL, NULL);
    if (kv->store != NULL) {
        aae_save(kv);
    }
    store_iter_destroy(a->scan);
    aae_view_free(&a->v);
    aae_cand_free(a);
    pthread_rwlock_destroy(&a->lock);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    kv->aae = NULL;
}

/* ------------------------------------------------------- status */

int aae_repair(kv_t *kv)
{
    struct aae *a = kv->aae;
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
    struct aae *a = kv->aae;
    memset(st, 0, sizeof(*st));
    if (a == NULL || !a->started) {
        return KV_ENOTSUP;
    }
    st->trees_ready = atomic_load(&a->ready);
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

static int aae_handle_hashes(kv_t *kv, rd_t *r, buf_t *out)
{
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

static int aae_handle_keys(kv_t *kv, rd_t *r, buf_t *out)
{
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

static int aae_handle_fetch(kv_t *kv, rd_t *r, buf_t *out)
{
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

static int aae_handle_push(kv_t *kv, rd_t *r, buf_t *out)
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
        int rc = aae_merge_bytes(kv, k, klen, ob, olen, &changed);
        if (rc != 0) {
            return rc;
        }
        changed_n += changed;
    }
    buf_put_varint(out, changed_n);
    return 0;
}

static int aae_handle_tomb(kv_t *kv, rd_t *r, buf_t *out, bool purge)
{
    uint64_t cnt = rd_varint(r);
    if (r->err || cnt == 0 || cnt > 4096) {
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
            if (replica_purge(kv, k, klen, digest, &purged) == 0 && purged) {
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
    } else {
        switch (m->flags) {
        case AAE_OP_HASHES:
            rc = aae_handle_hashes(kv, &r, &out);
            break;
        case AAE_OP_KEYS:
            rc = aae_handle_keys(kv, &r, &out);
            break;
        case AAE_OP_FETCH:
            rc = aae_handle_fetch(kv, &r, &out);
            break;
        case AAE_OP_PUSH:
            rc = aae_handle_push(kv, &r, &out);
            break;
        case AAE_OP_TOMB_CHECK:
        case AAE_OP_TOMB_PURGE:
            rc = aae_handle_tomb(kv, &r, &out, m->flags == AAE_OP_TOMB_PURGE);
            break;
        case AAE_OP_REPAIR:
            rc = aae_repair(kv);
            break;
        case AAE_OP_STATUS: {
            kv_repair_status_t st;
            rc = aae_status(kv, &st);
            if (rc == 0) {
                aae_put_status(&out, &st);
                /* Each range's root, for operators and tests comparing
                 * replicas. */
                struct aae *a = kv->aae;
                pthread_rwlock_rdlock(&a->lock);
                buf_put_varint(&out, a->v.ngroups);
                for (size_t i = 0; i < a->v.ngroups; i++) {
                    buf_put_u64(&out, a->v.groups[i].id);
                    buf_put_u64(&out, merkle_node(a->v.groups[i].tree, 0, 0));
                }
                pthread_rwlock_unlock(&a->lock);
            }
            break;
        }
        default:
            rc = KV_EPROTO;
            break;
        }
    }
    if (rc == KV_EPROTO) {
        metric_inc(&kv->metrics, M_WIRE_MALFORMED);
    }
    aae_reply(req, m->id, m->flags, rc, &out);
    buf_free(&out);
}
