/*
 * object.h - a stored object: a causal context plus its siblings, and its
 * versioned, checksummed binary encoding (see object.c).
 */
#ifndef KV_OBJECT_H
#define KV_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "vclock.h"

#define OBJ_SIB_TOMBSTONE 0x01u
/* In the encoding only: a token:u64 follows the flags. */
#define OBJ_SIB_TOKEN 0x02u

typedef struct obj_sib {
    vc_dot_t dot;
    int64_t ts_us;  /* coordinator's wall clock: informative only */
    uint64_t token; /* the client write it came from (0: none), see
                       obj_update */
    uint8_t flags;  /* OBJ_SIB_TOMBSTONE */
    size_t vlen;
    uint8_t *val; /* owned; NULL when vlen == 0 */
} obj_sib_t;

typedef struct obj {
    vc_t cc; /* causal context: covers every sibling's dot */
    size_t n;
    size_t cap;
    obj_sib_t *sib; /* sorted by (actor, counter), dots distinct */
} obj_t;

/* What a decoder accepts. */
typedef struct obj_limits {
    size_t max_value;    /* largest sibling value */
    size_t max_siblings; /* most siblings */
    size_t max_clock;    /* most clock entries */
} obj_limits_t;

/* Hard ceiling on siblings a decoder accepts; the write path warns long
 * before (see kv.c), but never refuses a merge because of it, so read
 * repair and handoff are not blocked by a large object (riak_kv#1156). */
#define OBJ_DECODE_MAX_SIBLINGS 65536

void obj_init(obj_t *o);
void obj_free(obj_t *o);

/*
 * A local write: drops every sibling whose dot ctx covers, adds a sibling
 * (dot, ts, value or tombstone) and raises the context by ctx and the dot.
 * The caller must hold the key's lock and must have drawn dot from an actor
 * counter that was never used before. Returns 0 or KV_ENOMEM (o unchanged).
 *
 * token (0: none) names the client's write: a forwarded write that a
 * coordinator did not answer is sent again to the next one with the same
 * token, and may so be applied twice under two dots. Of siblings that
 * carry the same token only the one with the lowest dot is kept (here and
 * in obj_join), on every replica alike, so the retry costs no duplicate
 * version; the other's dot stays in the context, as if it had been
 * overwritten.
 */
int obj_update(obj_t *o, const vc_t *ctx, vc_dot_t dot, int64_t ts_us,
               uint64_t token, const void *val, size_t vlen, bool tombstone);

/*
 * Joins src into dst (the dot-kernel join of delta-CRDTs): a sibling
 * survives if the other side also holds it or has not seen its dot; the
 * contexts are merged. Commutative, associative and idempotent, so replicas
 * that exchange objects in any order converge. *changed (may be NULL) says
 * whether dst differs afterwards. Returns 0 or KV_ENOMEM (dst unchanged).
 */
int obj_join(obj_t *dst, const obj_t *src, bool *changed);

/* Number of non-tombstone siblings. */
size_t obj_live(const obj_t *o);

/* True if both objects hold the same context and siblings. */
bool obj_equal(const obj_t *a, const obj_t *b);

/* Prunes the context to at most max entries, keeping sibling actors. */
size_t obj_prune(obj_t *o, size_t max);

/* Appends the encoding of o to b. Returns 0 or KV_ENOMEM. */
int obj_encode(const obj_t *o, buf_t *b);

/*
 * Decodes len bytes into o (initialised; old contents are replaced).
 * Returns 0, KV_ECORRUPT (bad magic or version, truncated, trailing bytes,
 * checksum mismatch, a value or count over the limits, unsorted or
 * duplicate dots, a dot the context does not cover, a tombstone with a
 * value), or KV_ENOMEM. Never reads outside [p, p+len).
 */
int obj_decode(const void *p, size_t len, const obj_limits_t *lim, obj_t *o);

#endif /* KV_OBJECT_H */
