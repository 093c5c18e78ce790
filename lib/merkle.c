/*
 * merkle.c - the hash tree used by anti-entropy (see merkle.h for the
 * shape and why it is XOR-combined). Owns nothing but its arrays.
 */
#include "merkle.h"

#include <stdlib.h>

#include <xxhash.h>

#include "kvdist.h"

struct merkle {
    _Atomic uint64_t *level[MERKLE_DEPTH + 1];
};

merkle_t *merkle_new(void)
{
    merkle_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    for (unsigned l = 0; l <= MERKLE_DEPTH; l++) {
        t->level[l] = calloc(merkle_width(l), sizeof(*t->level[l]));
        if (t->level[l] == NULL) {
            merkle_free(t);
            return NULL;
        }
    }
    return t;
}

void merkle_free(merkle_t *t)
{
    if (t == NULL) {
        return;
    }
    for (unsigned l = 0; l <= MERKLE_DEPTH; l++) {
        free(t->level[l]);
    }
    free(t);
}

uint64_t merkle_entry(const void *key, size_t klen, uint64_t digest)
{
    /* Seeding with the digest binds the key to its object version; the
     * result is never 0 in practice, so an entry cannot vanish in XOR. */
    return XXH3_64bits_withSeed(key, klen, digest);
}

void merkle_toggle(merkle_t *t, uint32_t leaf, uint64_t v)
{
    uint32_t idx = leaf;
    for (unsigned l = MERKLE_DEPTH + 1; l-- > 0;) {
        atomic_fetch_xor_explicit(&t->level[l][idx], v, memory_order_relaxed);
        idx /= MERKLE_FANOUT;
    }
}

uint64_t merkle_node(const merkle_t *t, unsigned level, uint32_t idx)
{
    return atomic_load_explicit(&t->level[level][idx], memory_order_relaxed);
}

void merkle_save(const merkle_t *t, buf_t *b)
{
    for (uint32_t i = 0; i < MERKLE_LEAVES; i++) {
        buf_put_u64(b, merkle_node(t, MERKLE_DEPTH, i));
    }
}

int merkle_load(merkle_t *t, rd_t *r)
{
    for (uint32_t i = 0; i < MERKLE_LEAVES; i++) {
        uint64_t v = rd_u64(r);
        if (r->err) {
            return KV_ECORRUPT;
        }
        if (v != 0) {
            merkle_toggle(t, i, v ^ merkle_node(t, MERKLE_DEPTH, i));
        }
    }
    return 0;
}
