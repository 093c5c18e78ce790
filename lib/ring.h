/*
 * ring.h - the consistent-hash ring with virtual nodes that decides which
 * nodes hold a key (Dynamo §4.2, "Partitioning Algorithm"; §4.3 for the
 * preference list).
 *
 * Each physical node gets `vnodes` positions on a 64-bit ring (the same idea
 * as Cassandra's num_tokens). A key hashes to a point; the nodes that hold
 * it are the first N distinct physical nodes met walking clockwise from that
 * point, and the nodes after them are the fallback order for sloppy quorum
 * and hinted handoff (Dynamo §4.6).
 *
 * Placement is a pure function of the SET of node ids: every node that
 * builds a ring from the same membership, in any order, gets the same ring.
 * Changing how positions or key points are computed therefore changes data
 * placement cluster-wide and is an on-disk/wire compatibility break.
 *
 * A ring_t is immutable after ring_build(); every read-only call below may
 * run concurrently from any number of threads on the same ring without
 * locking. Membership changes build a new ring and swap it in.
 */
#ifndef KV_RING_H
#define KV_RING_H

#include <stddef.h>
#include <stdint.h>

/* Return codes. The values equal KV_OK, KV_EINVAL, KV_ENOMEM and
 * KV_ENOTFOUND of kvdist.h, so callers can pass them through unchanged
 * without this header depending on the public one. */
#define RING_OK 0
#define RING_ENOTFOUND 1
#define RING_EINVAL 2
#define RING_ENOMEM 9

/* The accepted range of vnodes per node (the `vnodes` option: 1..65536). */
#define RING_MAX_VNODES 65536u

/*
 * Default positions per node, chosen by measurement: the smallest power of
 * two for which, over 200 random id sets, the most loaded of 3..16 nodes
 * never owned more than 1.10x the mean (p99 1.08; 1024 exceeded it for
 * 2.5% of id sets, 512 for 46%) and adding a node never moved more than
 * 1.07x the ideal 1/(n+1) of the keys. Random positions balance only as
 * 1/sqrt(vnodes) (Dynamo §6.2 reports the same weakness of its strategy 1;
 * Cassandra's num_tokens trades it the same way). Costs: 12 bytes per
 * position (24 KiB per node), lookups stay O(log(nodes * vnodes)), and a
 * node's replica ranges number about 0.8 * vnodes for N = 3.
 */
#define RING_DEFAULT_VNODES 2048u

typedef struct ring ring_t;

/*
 * Builds a ring over n distinct node ids (NUL-terminated, non-empty strings;
 * copied). Node index i in every other call refers to ids[i] as passed here;
 * placement itself does not depend on the order of ids.
 * Returns RING_OK with *out set, RING_EINVAL (ids or out NULL, an id NULL or
 * empty, duplicate ids, n == 0 or n > UINT32_MAX, vnodes == 0 or
 * > RING_MAX_VNODES) or RING_ENOMEM. *out is NULL on failure (if out is not
 * NULL).
 */
int ring_build(const char *const *ids, size_t n, unsigned vnodes, ring_t **out);

/* Frees a ring. NULL is a no-op. */
void ring_free(ring_t *r);

/* Number of physical nodes (the n given to ring_build). 0 for NULL. */
size_t ring_node_count(const ring_t *r);

/* Positions per node (the vnodes given to ring_build). 0 for NULL. */
unsigned ring_vnodes(const ring_t *r);

/* The id of node idx, owned by the ring and valid until ring_free(); NULL
 * if idx is out of range. */
const char *ring_node_id(const ring_t *r, size_t idx);

/* Looks up the index of a node by id in O(log n). Returns RING_OK with *idx
 * set, RING_ENOTFOUND, or RING_EINVAL for a NULL argument. */
int ring_node_index(const ring_t *r, const char *id, size_t *idx);

/* The ring point of a key: XXH3_64bits of its bytes. */
uint64_t ring_hash_key(const void *key, size_t klen);

/*
 * Writes up to max distinct node indices into out, in clockwise order
 * starting at the key's point, and returns how many were written:
 * min(max, node count). The first N are the key's preference list; the rest
 * are the fallback order for sloppy quorum. Does not allocate.
 */
size_t ring_successors(const ring_t *r, const void *key, size_t klen,
                       size_t *out, size_t max);

/* Same as ring_successors(), starting from a ring point: the owner of point
 * p is the first position >= p, wrapping past UINT64_MAX to the lowest. */
size_t ring_successors_at(const ring_t *r, uint64_t point, size_t *out,
                          size_t max);

/* The fraction of the 2^64 ring for which node idx is the primary owner
 * (first position clockwise), in [0, 1]; 0 for a bad idx. O(nodes*vnodes). */
double ring_ownership(const ring_t *r, size_t idx);

/*
 * The ranges of the ring that node idx replicates with replication factor
 * n, i.e. the points whose first min(n, node count) successors include idx
 * (for Merkle anti-entropy, Dynamo §4.7). Each range is (start, end]: the
 * points p with start < p <= end, wrapping modulo 2^64 when end < start.
 * Ranges are maximal (adjacent ones are merged), disjoint, and returned in
 * ring order. start == end never occurs: a node that replicates the whole
 * ring gets two half-ring ranges. On success *starts and *ends are arrays
 * allocated with malloc() (the caller frees both) and the count is
 * returned. Returns 0 with both set to NULL on a bad argument, n == 0, or
 * out of memory (or, barring 64-bit position collisions never, for a node
 * that replicates nothing).
 * O(nodes * vnodes * walk); meant for occasional use, not per request.
 */
size_t ring_ranges_for(const ring_t *r, size_t idx, size_t n, uint64_t **starts,
                       uint64_t **ends);

/* The number of positions on the ring (nodes x vnodes, fewer on
 * collisions) and position i of them, ascending: the preference list can
 * change only at a position, so walking them visits every distinct one. */
size_t ring_positions(const ring_t *r);
uint64_t ring_position(const ring_t *r, size_t i);
/* The index of the position that owns point p (the first at or after it,
 * wrapping to 0): points with the same one share a preference list. */
size_t ring_position_of(const ring_t *r, uint64_t p);

/* Whether point p lies in the ring range (start, end] as defined above.
 * start == end is the empty range. */
int ring_range_contains(uint64_t start, uint64_t end, uint64_t p);

#endif /* KV_RING_H */
