/*
 * vclock.h - version vectors and dots, the causality metadata of every
 * stored object (see vclock.c for the semantics and the pruning rule).
 */
#ifndef KV_VCLOCK_H
#define KV_VCLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* A dot names one write: the actor that coordinated it and that actor's
 * counter at the time. Dots are never reused (see vc_actor_make). */
typedef struct vc_dot {
    uint64_t actor;
    uint64_t counter;
} vc_dot_t;

/* A version vector: for each actor, the highest counter seen. Entries are
 * kept sorted by actor, with counters >= 1; an absent actor means 0. */
typedef struct vc {
    size_t n;
    size_t cap;
    vc_dot_t *e;
} vc_t;

enum vc_order {
    VC_EQUAL = 0,
    VC_BEFORE = 1,    /* a < b: b has seen everything a has, and more */
    VC_AFTER = 2,     /* a > b */
    VC_CONCURRENT = 3 /* each has seen something the other has not */
};

/* Hard ceiling on entries a decoder accepts, whatever clock_max is: a clock
 * from a peer with a larger clock_max still decodes, a hostile one cannot
 * make us allocate without bound. */
#define VC_DECODE_MAX 4096

void vc_init(vc_t *vc);
void vc_free(vc_t *vc);
void vc_clear(vc_t *vc);
int vc_copy(vc_t *dst, const vc_t *src);
uint64_t vc_get(const vc_t *vc, uint64_t actor);
/* Raises actor's entry to at least counter. Returns 0 or KV_ENOMEM. */
int vc_raise(vc_t *vc, uint64_t actor, uint64_t counter);
/* dst := pointwise max(dst, src). Returns 0 or KV_ENOMEM. */
int vc_merge(vc_t *dst, const vc_t *src);
bool vc_covers(const vc_t *vc, vc_dot_t dot);
int vc_compare(const vc_t *a, const vc_t *b);
/* a has seen everything b has (a >= b). */
bool vc_descends(const vc_t *a, const vc_t *b);

void vc_encode(const vc_t *vc, buf_t *b);
/* Decodes one clock at the reader's position into vc (which must be
 * initialised; its old contents are replaced). Rejects more than max
 * entries, unsorted or duplicate actors and zero counters with
 * KV_ECORRUPT. */
int vc_decode(rd_t *r, vc_t *vc, size_t max);

/* An opaque causal context as handed to applications: the clock framed with
 * a magic, a version and a checksum, so that a mangled context is an error
 * rather than a silently wrong write. */
int vc_context_encode(const vc_t *vc, buf_t *b);
int vc_context_decode(const void *p, size_t len, vc_t *vc);

/* Builds an actor id from a start time (seconds) and random bits. */
uint64_t vc_actor_make(uint32_t start_seconds, uint32_t random_bits);
uint32_t vc_actor_start(uint64_t actor);

/* Drops entries until at most max remain, oldest incarnation first, never
 * an entry whose actor is in keep[0..nkeep). Returns the number dropped. */
size_t vc_prune(vc_t *vc, size_t max, const uint64_t *keep, size_t nkeep);

#endif /* KV_VCLOCK_H */
