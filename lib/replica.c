/*
 * replica.c - the local replica: the only code that reads, modifies and
 * writes objects in this node's store.
 *
 * Owns the per-key lock stripes in struct kv. Invariant: every
 * read-modify-write of a key's object happens under that key's stripe, so
 * two writes to one key on this node are applied one after the other and a
 * dot drawn for a write is stored before any later dot of this actor for
 * the same key (the object's context can then safely cover all of this
 * actor's dots up to the highest one it holds). Writes become durable
 * according to the store's sync mode before these functions return.
 *
 * Every store write here is one RocksDB batch holding the object and its
 * anti-entropy index entry (replica_stage: the entry comes from
 * aae_index.c, which also writes the batch, aae_commit, so its trees see
 * the batch whole). replica.c calls down into the index, never into the
 * rest of anti-entropy, which calls replica_merge, replica_purge and
 * replica_reindex from above.
 *
 * Write groups: a received batch of replica writes is applied as one
 * RocksDB batch (one WAL write instead of one per entry). coord.c's batch
 * hooks open a group for each batch the transport dispatches (it is the
 * batch's context, so handlers find it through their request:
 * replica_group_of); a grouped write or merge takes its key's stripe,
 * stages its object and keeps the stripe until the group commits, and its
 * done function runs after the commit. Holding stripes across calls is
 * what could deadlock: a call on the group's thread that waits for a
 * stripe the group holds (or that another thread holds while it waits for
 * one of the group's) would wait forever. So the group is passed to every
 * stripe-taking call made while it is open (the grouped calls join it; the
 * others get it as `open`), and replica_lock_group commits it first
 * whenever the call could wait: a call outside the group, a stripe the
 * group holds already, or one another thread holds (trylock). Nothing
 * about a group is kept per thread: a call not given the group cannot
 * reach it, which is why every caller inside a batch's dispatch passes it.
 */
#include "replica.h"

#include <stdlib.h>

#include "aae_index.h"
#include "clock.h"
#include "rpc.h"

#include <xxhash.h>

/* Sibling counts that draw a warning and that refuse a new write. */
#define REPLICA_SIBLINGS_WARN 25
#define REPLICA_SIBLINGS_REFUSE 100

typedef struct replica_done {
    replica_done_fn fn;
    void *arg;
    uint64_t u;
} replica_done_t;

struct replica_group {
    kv_t *kv;
    store_batch_t *b;
    aae_toggle_t *tog; /* one per staged write */
    size_t ntog;
    size_t togcap;
    replica_done_t *done; /* called at commit */
    size_t ndone;
    size_t donecap;
    uint64_t bytes;
    uint64_t held[NODE_KEY_LOCKS / 64]; /* stripes taken */
    size_t nheld;
};

static int group_flush(replica_group_t *g);

/* Takes the key's stripe, for the group g or (g NULL) for the caller to
 * release. Commits the group open on this thread (g itself, or `open` for
 * a call outside any group) first whenever holding its stripes could make
 * this wait or deadlock (see the top of the file). */
static pthread_mutex_t *replica_lock_group(kv_t *kv, const void *key,
                                           size_t klen, replica_group_t *g,
                                           replica_group_t *open)
{
    size_t i = (size_t)(XXH3_64bits(key, klen) & (NODE_KEY_LOCKS - 1));
    pthread_mutex_t *mu = &kv->key_locks[i];
    replica_group_t *cur = g != NULL ? g : open;
    bool mine = g != NULL && ((g->held[i / 64] >> (i % 64)) & 1u);
    if (cur != NULL && cur->kv == kv && cur->nheld > 0) {
        if (g == NULL || mine || pthread_mutex_trylock(mu) != 0) {
            group_flush(cur);
        } else {
            g->held[i / 64] |= 1ull << (i % 64);
            g->nheld++;
            return mu;
        }
    }
    pthread_mutex_lock(mu);
    if (g != NULL) {
        g->held[i / 64] |= 1ull << (i % 64);
        g->nheld++;
    }
    return mu;
}

/* Takes the key's stripe, outside any group (committing `open` first if
 * need be); the caller releases it. */
static pthread_mutex_t *replica_lock(kv_t *kv, replica_group_t *open,
                                     const void *key, size_t klen)
{
    return replica_lock_group(kv, key, klen, NULL, open);
}

/* What replica_save replaces: the stored object's digest, if any. */
typedef struct replica_old {
    bool present;
    uint64_t digest;
} replica_old_t;

/* Loads the object under key into o (left empty when absent). */
static int replica_load_from(kv_t *kv, const void *key, size_t klen, obj_t *o,
                             replica_old_t *old, bool cached)
{
    void *raw = NULL;
    size_t len = 0;
    int rc = cached ? store_get_cached(kv->store, STORE_CF_DATA, key, klen,
                                       &raw, &len)
                    : store_get(kv->store, STORE_CF_DATA, key, klen, &raw,
                                &len);
    if (rc == STORE_EWOULDBLOCK) {
        return rc;
    }
    if (old != NULL) {
        old->present = rc == 0;
        old->digest = rc == 0 ? aae_digest(raw, len) : 0;
    }
    if (rc == KV_ENOTFOUND) {
        obj_free(o);
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    metric_add(&kv->metrics, M_BYTES_READ, len);
    rc = obj_decode(raw, len, &kv->limits, o);
    free(raw);
    if (rc == KV_ECORRUPT) {
        metric_inc(&kv->metrics, M_CORRUPT_OBJECTS);
        KV_LOG(&kv->log, KV_LOG_ERROR,
               "replica: stored object (key of %zu bytes) failed validation",
               klen);
    }
    return rc;
}

static int replica_load(kv_t *kv, const void *key, size_t klen, obj_t *o,
                        replica_old_t *old)
{
    return replica_load_from(kv, key, klen, o, old, false);
}

/* Makes room for one more element in a growing array: the array (perhaps
 * moved), or NULL when out of memory (the old one is left as it was). */
static void *group_grow(void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap) {
        return arr;
    }
    size_t c = *cap ? 2 * *cap : 16;
    void *p = realloc(arr, c * elem);
    if (p != NULL) {
        *cap = c;
    }
    return p;
}

/* Room for one more staged write (tog) or waiting done function. */
static int group_reserve(replica_group_t *g, bool tog)
{
    if (tog) {
        aae_toggle_t *t = group_grow(g->tog, g->ntog, &g->togcap, sizeof(*t));
        g->tog = t != NULL ? t : g->tog;
        return t != NULL ? 0 : KV_ENOMEM;
    }
    replica_done_t *d = group_grow(g->done, g->ndone, &g->donecap, sizeof(*d));
    g->done = d != NULL ? d : g->done;
    return d != NULL ? 0 : KV_ENOMEM;
}

/* Adds to b the object under key (enc, the encoding of o; enc NULL
 * deletes it) and its index entry, replacing the object of digest
 * *old_digest (NULL: none); fills *t for aae_commit. The entry goes first:
 * when it fails (KV_ENOMEM) nothing is added. */
static int replica_stage(kv_t *kv, store_batch_t *b, const void *key,
                         size_t klen, const obj_t *o, const void *enc,
                         size_t enclen, const uint64_t *old_digest,
                         aae_toggle_t *t)
{
    int rc = aae_stage(kv, b, key, klen, o, enc, enclen, old_digest, t);
    if (rc == 0 && enc != NULL) {
        store_batch_put(b, STORE_CF_DATA, key, klen, enc, enclen);
    } else if (rc == 0) {
        store_batch_delete(b, STORE_CF_DATA, key, klen);
    }
    return rc;
}

/* replica_stage and aae_commit of one write in its own batch. */
static int replica_store(kv_t *kv, const void *key, size_t klen, const obj_t *o,
                         const void *enc, size_t enclen,
                         const uint64_t *old_digest)
{
    store_batch_t *b = store_batch_create(kv->store);
    if (b == NULL) {
        return KV_ENOMEM;
    }
    aae_toggle_t t;
    int rc = replica_stage(kv, b, key, klen, o, enc, enclen, old_digest, &t);
    if (rc == 0) {
        rc = aae_commit(kv, b, &t, 1);
    }
    store_batch_destroy(b);
    return rc;
}

/* Stores o (replacing `old`): at once, or staged into g. keep (may be
 * NULL) receives o's encoding, which RocksDB has copied: a coordinator
 * sends those bytes to the other replicas rather than encode o again. */
static int replica_save(kv_t *kv, replica_group_t *g, const void *key,
                        size_t klen, obj_t *o, const replica_old_t *old,
                        buf_t *keep)
{
    size_t pruned = obj_prune(o, kv->cfg.clock_max);
    if (pruned > 0) {
        metric_add(&kv->metrics, M_CLOCK_PRUNED, pruned);
    }
    buf_t b;
    buf_init(&b);
    int rc = obj_encode(o, &b);
    if (rc == 0 && g != NULL) {
        rc = group_reserve(g, true);
        if (rc == 0) {
            rc = replica_stage(kv, g->b, key, klen, o, b.p, b.len,
                               old->present ? &old->digest : NULL,
                               &g->tog[g->ntog]);
        }
        if (rc == 0) {
            g->ntog++;
            g->bytes += b.len;
        }
    } else if (rc == 0) {
        rc = replica_store(kv, key, klen, o, b.p, b.len,
                           old->present ? &old->digest : NULL);
        if (rc == 0) {
            metric_add(&kv->metrics, M_BYTES_WRITTEN, b.len);
        }
    }
    if (rc == 0 && keep != NULL) {
        buf_free(keep);
        *keep = b;
    } else {
        buf_free(&b);
    }
    return rc;
}

/* A write into the group g, or (g NULL) stored at once, committing the
 * open group first if need be. */
static int replica_write_impl(kv_t *kv, replica_group_t *g,
                              replica_group_t *open, const void *key,
                              size_t klen, const vc_t *ctx, const void *val,
                              size_t vlen, bool tombstone, uint64_t token,
                              obj_t *result, buf_t *enc)
{
    obj_t o;
    obj_init(&o);
    pthread_mutex_t *mu = replica_lock_group(kv, key, klen, g, open);
    replica_old_t old;
    int rc = replica_load(kv, key, klen, &o, &old);
    if (rc == 0) {
        vc_dot_t dot = {kv->actor, atomic_fetch_add(&kv->counter, 1) + 1};
        /* Without a context the write supersedes what this replica holds:
         * its own causal context is exactly that. */
        rc = obj_update(&o, ctx != NULL ? ctx : &o.cc, dot, clk_wall_us(),
                        token, val, vlen, tombstone);
    }
    if (rc == 0 && o.n > REPLICA_SIBLINGS_REFUSE) {
        /* Refuse the write that would grow the object past the limit
         * (Riak: warn at 25, refuse at 100); merges are never refused, so
         * read repair and anti-entropy still converge (riak_kv#1156). */
        KV_LOG(&kv->log, KV_LOG_WARN,
               "replica: write refused: key would have %zu siblings", o.n);
        metric_inc(&kv->metrics, M_SIBLINGS_REFUSED);
        rc = KV_ETOOBIG;
    } else if (rc == 0 && o.n > REPLICA_SIBLINGS_WARN) {
        KV_LOG(&kv->log, KV_LOG_WARN, "replica: key has %zu siblings", o.n);
    }
    if (rc == 0) {
        rc = replica_save(kv, g, key, klen, &o, &old, enc);
    }
    if (g == NULL) {
        pthread_mutex_unlock(mu);
    }
    if (rc == 0 && obj_live(&o) > 1) {
        metric_inc(&kv->metrics, M_SIBLINGS_CREATED);
    }
    if (rc == 0 && result != NULL) {
        obj_free(result);
        *result = o;
    } else {
        obj_free(&o);
    }
    return rc;
}

int replica_write(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  const vc_t *ctx, const void *val, size_t vlen, bool tombstone,
                  uint64_t token, obj_t *result, buf_t *enc)
{
    return replica_write_impl(kv, NULL, open, key, klen, ctx, val, vlen,
                              tombstone, token, result, enc);
}

int replica_read_cached(kv_t *kv, const void *key, size_t klen, obj_t *out)
{
    return replica_load_from(kv, key, klen, out, NULL, true);
}

int replica_read(kv_t *kv, const void *key, size_t klen, obj_t *out)
{
    /* No lock: RocksDB gives a consistent snapshot of the single value. */
    return replica_load(kv, key, klen, out, NULL);
}

/* A merge into the group g, or (g NULL) stored at once, committing the
 * open group first if need be. */
static int replica_merge_impl(kv_t *kv, replica_group_t *g,
                              replica_group_t *open, const void *key,
                              size_t klen, const obj_t *in, bool *changed)
{
    obj_t o;
    obj_init(&o);
    bool did = false;
    pthread_mutex_t *mu = replica_lock_group(kv, key, klen, g, open);
    replica_old_t old;
    int rc = replica_load(kv, key, klen, &o, &old);
    if (rc == 0) {
        rc = obj_join(&o, in, &did);
    }
    if (rc == 0 && did) {
        rc = replica_save(kv, g, key, klen, &o, &old, NULL);
    }
    if (g == NULL) {
        pthread_mutex_unlock(mu);
    }
    obj_free(&o);
    if (changed != NULL) {
        *changed = rc == 0 && did;
    }
    return rc;
}

int replica_merge(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  const obj_t *in, bool *changed)
{
    return replica_merge_impl(kv, NULL, open, key, klen, in, changed);
}

/* ---------------------------------------------------------- write groups */

replica_group_t *replica_group_of(const struct rpc_req *req)
{
    return rpc_req_batch_ctx(req);
}

replica_group_t *replica_group_begin(kv_t *kv)
{
    if (kv->store == NULL) {
        return NULL;
    }
    replica_group_t *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->b = store_batch_create(kv->store)) == NULL) {
        free(g); /* out of memory: the batch's writes go one by one */
        return NULL;
    }
    g->kv = kv;
    return g;
}

/* Commits what g staged, releases its stripes, then tells each waiting
 * write how it went. */
static int group_flush(replica_group_t *g)
{
    kv_t *kv = g->kv;
    int rc = 0;
    if (g->ntog > 0) {
        rc = aae_commit(kv, g->b, g->tog, g->ntog);
        if (rc == 0) {
            metric_add(&kv->metrics, M_BYTES_WRITTEN, g->bytes);
        }
        store_batch_clear(g->b);
    }
    g->ntog = 0;
    g->bytes = 0;
    for (size_t w = 0; g->nheld > 0 && w < NODE_KEY_LOCKS / 64; w++) {
        while (g->held[w] != 0) {
            unsigned bit = (unsigned)__builtin_ctzll(g->held[w]);
            g->held[w] &= g->held[w] - 1;
            pthread_mutex_unlock(&kv->key_locks[w * 64 + bit]);
            g->nheld--;
        }
    }
    /* Call from a copy, in case a done function stages more into g;
     * keep the array for the next round otherwise. */
    replica_done_t *done = g->done;
    size_t n = g->ndone;
    size_t cap = g->donecap;
    g->done = NULL;
    g->ndone = g->donecap = 0;
    for (size_t i = 0; i < n; i++) {
        done[i].fn(done[i].arg, done[i].u, rc);
    }
    if (g->done == NULL) {
        g->done = done;
        g->donecap = cap;
    } else {
        free(done);
    }
    return rc;
}

void replica_group_end(replica_group_t *g)
{
    if (g == NULL) {
        return;
    }
    while (g->nheld > 0 || g->ndone > 0) {
        group_flush(g);
    }
    store_batch_destroy(g->b);
    free(g->tog);
    free(g->done);
    free(g);
}

/* Registers fn for the commit of what the group staged so far (or, out
 * of memory for that, commits now and calls it). */
static void group_on_commit(replica_group_t *g, replica_done_fn fn, void *arg,
                            uint64_t u)
{
    if (group_reserve(g, false) != 0) {
        fn(arg, u, group_flush(g));
        return;
    }
    g->done[g->ndone++] = (replica_done_t){fn, arg, u};
}

int replica_write_grouped(replica_group_t *g, const void *key, size_t klen,
                          const vc_t *ctx, const void *val, size_t vlen,
                          bool tombstone, uint64_t token, obj_t *result,
                          buf_t *enc, replica_done_fn fn, void *arg,
                          uint64_t u)
{
    int rc = replica_write_impl(g->kv, g, g, key, klen, ctx, val, vlen,
                                tombstone, token, result, enc);
    if (rc == 0) {
        group_on_commit(g, fn, arg, u);
    }
    return rc;
}

int replica_merge_grouped(replica_group_t *g, const void *key, size_t klen,
                          const obj_t *in, replica_done_fn fn, void *arg,
                          uint64_t u)
{
    int rc = replica_merge_impl(g->kv, g, g, key, klen, in, NULL);
    if (rc == 0) {
        group_on_commit(g, fn, arg, u);
    }
    return rc;
}

int replica_purge(kv_t *kv, replica_group_t *open, const void *key, size_t klen,
                  uint64_t digest, bool *purged)
{
    *purged = false;
    pthread_mutex_t *mu = replica_lock(kv, open, key, klen);
    void *raw = NULL;
    size_t len = 0;
    int rc = store_get(kv->store, STORE_CF_DATA, key, klen, &raw, &len);
    if (rc == 0 && aae_digest(raw, len) == digest) {
        rc = replica_store(kv, key, klen, NULL, NULL, 0, &digest);
        *purged = rc == 0;
    } else if (rc == KV_ENOTFOUND) {
        rc = 0; /* already gone */
    }
    pthread_mutex_unlock(mu);
    free(raw);
    return rc;
}

int replica_reindex(kv_t *kv, replica_group_t *open, const void *key,
                    size_t klen)
{
    pthread_mutex_t *mu = replica_lock(kv, open, key, klen);
    void *raw = NULL;
    size_t len = 0;
    obj_t o;
    obj_init(&o);
    int rc = store_get(kv->store, STORE_CF_DATA, key, klen, &raw, &len);
    if (rc == 0) {
        rc = obj_decode(raw, len, &kv->limits, &o);
        if (rc == 0) {
            /* The damaged entry was never counted in a tree: no old. */
            rc = replica_store(kv, key, klen, &o, raw, len, NULL);
        }
    } else if (rc == KV_ENOTFOUND) {
        /* An entry without an object: deleting both is deleting it. */
        rc = replica_store(kv, key, klen, NULL, NULL, 0, NULL);
    }
    pthread_mutex_unlock(mu);
    obj_free(&o);
    free(raw);
    return rc;
}
