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
 */
#include "replica.h"

#include <stdlib.h>

#include "aae.h"

#include <xxhash.h>

/* Sibling counts that draw a warning and that refuse a new write. */
#define REPLICA_SIBLINGS_WARN 25
#define REPLICA_SIBLINGS_REFUSE 100

static pthread_mutex_t *replica_lock(kv_t *kv, const void *key, size_t klen)
{
    uint64_t h = XXH3_64bits(key, klen);
    return &kv->key_locks[h & (NODE_KEY_LOCKS - 1)];
}

/* What replica_save replaces: the stored object's digest, if any. */
typedef struct replica_old {
    bool present;
    uint64_t digest;
} replica_old_t;

/* Loads the object under key into o (left empty when absent). */
static int replica_load(kv_t *kv, const void *key, size_t klen, obj_t *o,
                        replica_old_t *old)
{
    void *raw = NULL;
    size_t len = 0;
    int rc = store_get(kv->store, STORE_CF_DATA, key, klen, &raw, &len);
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

static int replica_save(kv_t *kv, const void *key, size_t klen, obj_t *o,
                        const replica_old_t *old)
{
    size_t pruned = obj_prune(o, kv->cfg.clock_max);
    if (pruned > 0) {
        metric_add(&kv->metrics, M_CLOCK_PRUNED, pruned);
    }
    buf_t b;
    buf_init(&b);
    int rc = obj_encode(o, &b);
    if (rc == 0) {
        /* The object and its anti-entropy index entry, in one batch. */
        rc = aae_write(kv, key, klen, o, b.p, b.len,
                       old->present ? &old->digest : NULL);
        if (rc == 0) {
            metric_add(&kv->metrics, M_BYTES_WRITTEN, b.len);
        }
    }
    buf_free(&b);
    return rc;
}

int replica_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                  const void *val, size_t vlen, bool tombstone, obj_t *result)
{
    obj_t o;
    obj_init(&o);
    pthread_mutex_t *mu = replica_lock(kv, key, klen);
    pthread_mutex_lock(mu);
    replica_old_t old;
    int rc = replica_load(kv, key, klen, &o, &old);
    if (rc == 0) {
        vc_dot_t dot = {kv->actor, atomic_fetch_add(&kv->counter, 1) + 1};
        /* Without a context the write supersedes what this replica holds:
         * its own causal context is exactly that. */
        rc = obj_update(&o, ctx != NULL ? ctx : &o.cc, dot, node_now_us(), val,
                        vlen, tombstone);
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
        rc = replica_save(kv, key, klen, &o, &old);
    }
    pthread_mutex_unlock(mu);
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

int replica_read(kv_t *kv, const void *key, size_t klen, obj_t *out)
{
    /* No lock: RocksDB gives a consistent snapshot of the single value. */
    return replica_load(kv, key, klen, out, NULL);
}

int replica_merge(kv_t *kv, const void *key, size_t klen, const obj_t *in,
                  bool *changed)
{
    obj_t o;
    obj_init(&o);
    bool did = false;
    pthread_mutex_t *mu = replica_lock(kv, key, klen);
    pthread_mutex_lock(mu);
    replica_old_t old;
    int rc = replica_load(kv, key, klen, &o, &old);
    if (rc == 0) {
        rc = obj_join(&o, in, &did);
    }
    if (rc == 0 && did) {
        rc = replica_save(kv, key, klen, &o, &old);
    }
    pthread_mutex_unlock(mu);
    obj_free(&o);
    if (changed != NULL) {
        *changed = rc == 0 && did;
    }
    return rc;
}

int replica_purge(kv_t *kv, const void *key, size_t klen, uint64_t digest,
                  bool *purged)
{
    *purged = false;
    pthread_mutex_t *mu = replica_lock(kv, key, klen);
    pthread_mutex_lock(mu);
    void *raw = NULL;
    size_t len = 0;
    int rc = store_get(kv->store, STORE_CF_DATA, key, klen, &raw, &len);
    if (rc == 0 && aae_digest(raw, len) == digest) {
        rc = aae_write(kv, key, klen, NULL, NULL, 0, &digest);
        *purged = rc == 0;
    } else if (rc == KV_ENOTFOUND) {
        rc = 0; /* already gone */
    }
    pthread_mutex_unlock(mu);
    free(raw);
    return rc;
}

int replica_reindex(kv_t *kv, const void *key, size_t klen)
{
    pthread_mutex_t *mu = replica_lock(kv, key, klen);
    pthread_mutex_lock(mu);
    void *raw = NULL;
    size_t len = 0;
    obj_t o;
    obj_init(&o);
    int rc = store_get(kv->store, STORE_CF_DATA, key, klen, &raw, &len);
    if (rc == 0) {
        rc = obj_decode(raw, len, &kv->limits, &o);
        if (rc == 0) {
            /* The damaged entry was never counted in a tree: no old. */
            rc = aae_write(kv, key, klen, &o, raw, len, NULL);
        }
    } else if (rc == KV_ENOTFOUND) {
        /* An entry without an object: deleting both is deleting it. */
        rc = aae_write(kv, key, klen, NULL, NULL, 0, NULL);
    }
    pthread_mutex_unlock(mu);
    obj_free(&o);
    free(raw);
    return rc;
}
