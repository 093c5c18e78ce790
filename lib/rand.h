/*
 * rand.h - splitmix64, the one small pseudo-random generator of libkvdist.
 *
 * For choices that must be cheap and well spread but need not be secret
 * or reproducible across versions: the gossip partner (cluster.c), the
 * packets a fault file drops (rpc.c), a multipart boundary (http.c); the
 * tests use it for reproducible random input. Steele, Lea and Flood,
 * "Fast splittable pseudorandom number generators" (OOPSLA 2014); the
 * constants are Vigna's. Seed it from getrandom(2) where an attacker
 * must not guess the stream.
 *
 * Owns no state: the caller keeps the 64-bit state and the lock (if any)
 * that guards it.
 */
#ifndef KV_RAND_H
#define KV_RAND_H

#include <stdint.h>

/* Advances *state and returns the next number of its stream. Any seed,
 * 0 included, gives a full-period stream. */
static inline uint64_t rand_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

#endif /* KV_RAND_H */
