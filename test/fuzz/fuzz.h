/*
 * fuzz.h - what the libFuzzer targets in test/fuzz/ share: the check that
 * turns a broken invariant into a finding, and the small input framings
 * the targets and the seed generator (corpus.c) agree on.
 *
 * A target is one fuzz_<name>.c with LLVMFuzzerTestOneInput; it calls the
 * library's own decoders (linked from an instrumented build of lib/, see
 * the Makefile's fuzz rules) and checks, besides memory safety (ASan) and
 * undefined behaviour (UBSan), what each format promises: one encoding per
 * value (decode then encode gives the same bytes), and the algebra of what
 * is decoded (joins commute, merges are bounds). Owns no state.
 */
#ifndef KV_FUZZ_H
#define KV_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

/* A broken invariant: abort, which libFuzzer reports as a crash and saves
 * the input that caused it. */
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Inputs made of two parts (objects and contexts: the two sides of a join
 * or a merge): a 2-byte little-endian length of the first part, the first
 * part, then the second (the rest). A short input gives what it has.
 */
static inline void fuzz_split(const uint8_t *p, size_t n, const uint8_t **a,
                              size_t *alen, const uint8_t **b, size_t *blen)
{
    size_t first = n >= 2 ? (size_t)(p[0] | (p[1] << 8)) : 0;
    p += n >= 2 ? 2 : n;
    n -= n >= 2 ? 2 : n;
    if (first > n) {
        first = n;
    }
    *a = p;
    *alen = first;
    *b = p + first;
    *blen = n - first;
}

/*
 * A copy of a sealed blob (codec.h: prefix, body, XXH3 trailer) whose
 * trailer is written afresh when reseal is set, so that mutations of the
 * body reach the decoder instead of all failing the checksum. The caller
 * frees the copy; NULL only when malloc fails.
 */
static inline uint8_t *fuzz_sealed(const uint8_t *p, size_t n, int reseal)
{
    uint8_t *c = malloc(n ? n : 1);
    if (c == NULL) {
        return NULL;
    }
    if (n > 0) {
        memcpy(c, p, n);
    }
    if (reseal && n >= 4) {
        uint32_t sum = (uint32_t)XXH3_64bits(c, n - 4);
        for (int i = 0; i < 4; i++) {
            c[n - 4 + i] = (uint8_t)(sum >> (8 * i));
        }
    }
    return c;
}

#endif /* KV_FUZZ_H */
