/*
 * aae_index.h - the anti-entropy index and its Merkle trees (aae_index.c):
 * what replica.c needs to store "object and index entry in one batch", and
 * the view (ring, range groups, trees) the other aae_*.c files read.
 *
 * This is the bottom of anti-entropy: it calls the store, the ring and the
 * Merkle code, never the replica, the cluster or the exchange.
 */
#ifndef KV_AAE_INDEX_H
#define KV_AAE_INDEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h" /* CLUSTER_MAX_ROUTE */
#include "merkle.h"
#include "node.h"
#include "object.h"
#include "ring.h"
#include "store.h"
#include "wire.h"

/* Index entry flag: every sibling of the object is a delete. */
#define AAE_IDX_TOMB 0x1u

/* A range group: the ring points whose preference list is this set of
 * nodes, and the tree of the keys in them. */
typedef struct aae_group {
    uint64_t id; /* hash of the sorted member ids */
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

/*
 * kv->aae. The index part belongs to aae_index.c; `run` is the background
 * runner's state, owned by aae.c (opaque here).
 *
 * `lock` guards v: shared by writers (aae_commit) and handlers, exclusive
 * to swap the view. Only the runner thread (and aae_start before it
 * exists) swaps it, so that thread may read v without the lock. `scan` is
 * the runner's alone. cand* are written at open and consumed by the first
 * install, before the runner starts.
 */
struct aae {
    pthread_rwlock_t lock;
    aae_view_t v;
    _Atomic bool ready; /* the trees match the index */

    store_iter_t *scan; /* a pending rebuild's snapshot (runner only) */
    /* Trees saved by the last clean close, read at open, adopted at start
     * if nothing was written before the view existed. */
    uint64_t cand_sig;
    aae_group_t *cand;
    size_t ncand;
    _Atomic uint64_t unviewed; /* writes while no view was installed */

    struct aae_run *run; /* aae.c */
};

/* ------------------------------------------ what replica.c calls */

/* The digest stored in the index for an encoded object. */
uint64_t aae_digest(const void *enc, size_t len);

/* A write's change to its Merkle leaf, applied once its batch is written. */
typedef struct aae_toggle {
    uint64_t h; /* the key's ring hash */
    uint64_t x; /* XOR of the entries it removes and adds */
} aae_toggle_t;

/*
 * The index entry of a write, for the caller's batch (replica.c: the object
 * and its entry go into one RocksDB batch). aae_stage adds to b the entry
 * of key's new object o, encoded as enc (enc NULL: the key is deleted),
 * replacing the entry of digest *old_digest (NULL: none), and fills *t;
 * on failure nothing is added. aae_commit writes b, then applies the n
 * toggles of the entries it holds to the trees (under `lock` shared, so a
 * rebuild's snapshot holds all of a batch or none of it). The caller holds
 * the keys' locks. Returns 0, KV_ENOMEM (stage); 0, KV_EIO (commit).
 */
int aae_stage(kv_t *kv, store_batch_t *b, const void *key, size_t klen,
              const obj_t *o, const void *enc, size_t enclen,
              const uint64_t *old_digest, aae_toggle_t *t);
int aae_commit(kv_t *kv, store_batch_t *b, const aae_toggle_t *t, size_t n);

/* ------------------------------------------ for the aae_*.c files */

/* Allocates kv->aae (run NULL) and reads the trees the last clean close
 * saved, deleting the saved copy. Returns 0, KV_ENOMEM. */
int aae_index_open(kv_t *kv);
/* Saves the trees when they are complete (store still open), frees
 * kv->aae and sets it NULL. The runner must be gone. NULL-safe. */
void aae_index_close(kv_t *kv);

/* Builds the view for a member list (m, count: cluster_members): the ring
 * and an empty tree for every group this node is in. Returns 0,
 * KV_ENOMEM. */
int aae_view_build(kv_t *kv, const kv_member_t *m, size_t count,
                   aae_view_t *out);
void aae_view_free(aae_view_t *v);
aae_group_t *aae_group_find(const aae_view_t *v, uint64_t id);
/* The group of ring point h if this node replicates it, else NULL. */
aae_group_t *aae_group_of(const aae_view_t *v, uint64_t h);

/*
 * Swaps in *nv (taken; the old view is freed) and clears `ready`. With
 * try_load, the trees saved at the last clean close are taken if still
 * exact (ready again at once) and the saved candidates are released
 * either way; otherwise a snapshot of the index is taken in the same step
 * for aae_index_scan, so every write is either in the snapshot or toggles
 * the new trees.
 */
void aae_index_install(kv_t *kv, aae_view_t *nv, bool try_load);

/* A (key, digest) pair of a leaf listing or a candidate list. */
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

/* Appends a copy of key. Returns 0, KV_ENOMEM. */
int aae_kd_add(aae_kdlist_t *l, const void *key, size_t klen, uint64_t digest);
void aae_kd_free(aae_kdlist_t *l);
/* qsort order of aae_kd_t by key bytes. */
int aae_kd_cmp(const void *a, const void *b);

/*
 * Feeds up to max entries of the pending snapshot (a->scan) into the
 * trees; runner only, the caller paces the calls. Entries that fail to
 * parse are skipped and their keys added to *bad (for replica_reindex);
 * *fed counts the entries fed. Returns true when the snapshot is done:
 * it is released and *rc holds its status (0 or KV_EIO).
 */
bool aae_index_scan(kv_t *kv, size_t max, aae_kdlist_t *bad, uint64_t *fed,
                    int *rc);

/* Parses one index entry as an iterator over STORE_CF_AAE yields it: the
 * ring point h, the key (k + 8, klen - 8), digest, flags, newest sibling
 * timestamp. False for a damaged entry. */
bool aae_index_entry(const uint8_t *k, size_t klen, const void *val,
                     size_t vlen, uint64_t *h, uint64_t *digest, uint8_t *flags,
                     int64_t *ts);

/* Lists the index entries of one leaf that belong to group g, adding
 * about their size to *bytes. The caller holds `lock` shared. Returns 0,
 * KV_ENOMEM, KV_EIO. */
int aae_leaf_keys(kv_t *kv, const aae_view_t *v, const aae_group_t *g,
                  uint32_t leaf, aae_kdlist_t *out, size_t *bytes);

#endif /* KV_AAE_INDEX_H */
