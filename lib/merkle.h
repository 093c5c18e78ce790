/*
 * merkle.h - a hash tree over (key, object digest) pairs, maintained
 * incrementally (merkle.c).
 *
 * The tree has a fixed shape: fanout 16 and four levels below the root, so
 * 65,536 leaves. A key lives in the leaf named by the top 16 bits of its
 * ring hash. A leaf's hash is the XOR of merkle_entry(key, digest) over its
 * keys and an inner node's is the XOR of its children, so adding, removing
 * or changing a key is a constant-time toggle of five words and the order
 * in which keys arrive does not matter (Riak's "tictac" trees do the same).
 * Two trees over the same keys and digests have equal roots; a difference
 * shows up along the path of every differing key, which is what an
 * exchange descends.
 */
#ifndef KV_MERKLE_H
#define KV_MERKLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define MERKLE_FANOUT 16u
#define MERKLE_DEPTH 4u /* levels below the root */
#define MERKLE_LEAVES 65536u

typedef struct merkle merkle_t;

/* A zeroed (empty) tree, or NULL when out of memory. */
merkle_t *merkle_new(void);
void merkle_free(merkle_t *t);

/* The number of nodes at a level: 1, 16, 256, 4096, 65536. */
static inline uint32_t merkle_width(unsigned level)
{
    return 1u << (4 * level);
}

/* The leaf of a key with ring hash h. */
static inline uint32_t merkle_leaf_of(uint64_t h)
{
    return (uint32_t)(h >> 48);
}

/* What a (key, digest) pair contributes to its leaf. */
uint64_t merkle_entry(const void *key, size_t klen, uint64_t digest);

/* XORs v into a leaf and its ancestors: adds an entry, or removes it when
 * applied a second time. Safe from any thread (atomic XORs). */
void merkle_toggle(merkle_t *t, uint32_t leaf, uint64_t v);

/* A node's hash (level 0 is the root). idx < merkle_width(level). */
uint64_t merkle_node(const merkle_t *t, unsigned level, uint32_t idx);

/* Appends the leaf level; merkle_load rebuilds the inner levels from it.
 * Returns 0, or KV_ECORRUPT when the bytes are not a whole leaf level. */
void merkle_save(const merkle_t *t, buf_t *b);
int merkle_load(merkle_t *t, rd_t *r);

#endif /* KV_MERKLE_H */
