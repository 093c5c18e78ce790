/*
 * fuzz_context.c - causal contexts (vc_context_decode): the opaque bytes a
 * client gets with a read and hands back with a write (the X-Kv-Context
 * header, kv_put's ctx, a COORD_PUT's ctx field), and the version vector
 * operations a decoded one meets.
 *
 * Input: a mode byte, then two contexts framed by fuzz_split (fuzz.h);
 * with bit 0 of the mode set each context's checksum is written afresh. A
 * context that decodes must be sorted with counters from 1 and encode
 * back to the same bytes. Two decoded clocks must order consistently
 * (vc_compare(a, b) mirrors vc_compare(b, a); vc_descends agrees with
 * vc_covers entry by entry), merge commutatively into their least upper
 * bound (vc_merge agrees with raising entry by entry, vc_raise), and prune
 * (vc_prune) to at most the bound without losing a kept actor.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "vclock.h"

static void check_clock(const vc_t *v)
{
    for (size_t i = 0; i < v->n; i++) {
        FUZZ_CHECK(v->e[i].counter >= 1);
        FUZZ_CHECK(i == 0 || v->e[i - 1].actor < v->e[i].actor);
        FUZZ_CHECK(vc_get(v, v->e[i].actor) == v->e[i].counter);
    }
}

static int decode_side(const uint8_t *p, size_t n, int reseal, vc_t *v)
{
    uint8_t *c = fuzz_sealed(p, n, reseal);
    FUZZ_CHECK(c != NULL);
    int rc = vc_context_decode(c, n, v);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_EINVAL && v->n == 0);
        free(c);
        return 0;
    }
    check_clock(v);
    FUZZ_CHECK(v->n <= VC_DECODE_MAX);
    if (n > 0) {
        buf_t b;
        buf_init(&b);
        FUZZ_CHECK(vc_context_encode(v, &b) == 0);
        FUZZ_CHECK(b.len == n && memcmp(b.p, c, n) == 0);
        buf_free(&b);
    } else {
        FUZZ_CHECK(v->n == 0); /* no bytes: the empty context */
    }
    free(c);
    return 1;
}

/* What b has that a lacks, entry by entry: the reference for vc_compare. */
static bool covers_all(const vc_t *a, const vc_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (!vc_covers(a, b->e[i])) {
            return false;
        }
    }
    return true;
}

static void check_pair(const vc_t *a, const vc_t *b)
{
    int ab = vc_compare(a, b);
    int ba = vc_compare(b, a);
    static const int mirror[4] = {VC_EQUAL, VC_AFTER, VC_BEFORE,
                                  VC_CONCURRENT};
    FUZZ_CHECK(ab >= VC_EQUAL && ab <= VC_CONCURRENT && ba == mirror[ab]);
    FUZZ_CHECK(vc_compare(a, a) == VC_EQUAL);
    bool a_ge = covers_all(a, b);
    bool b_ge = covers_all(b, a);
    FUZZ_CHECK(vc_descends(a, b) == a_ge && vc_descends(b, a) == b_ge);
    FUZZ_CHECK((ab == VC_EQUAL) == (a_ge && b_ge));
    FUZZ_CHECK((ab == VC_CONCURRENT) == (!a_ge && !b_ge));

    vc_t m1;
    vc_t m2;
    vc_t r;
    vc_init(&m1);
    vc_init(&m2);
    vc_init(&r);
    FUZZ_CHECK(vc_copy(&m1, a) == 0 && vc_merge(&m1, b) == 0);
    FUZZ_CHECK(vc_copy(&m2, b) == 0 && vc_merge(&m2, a) == 0);
    check_clock(&m1);
    FUZZ_CHECK(vc_compare(&m1, &m2) == VC_EQUAL);
    FUZZ_CHECK(vc_descends(&m1, a) && vc_descends(&m1, b));
    /* Least: every entry of the merge comes from a or b. */
    for (size_t i = 0; i < m1.n; i++) {
        uint64_t x = vc_get(a, m1.e[i].actor);
        uint64_t y = vc_get(b, m1.e[i].actor);
        FUZZ_CHECK(m1.e[i].counter == (x > y ? x : y));
    }
    FUZZ_CHECK(m1.n <= a->n + b->n);
    FUZZ_CHECK(vc_copy(&r, a) == 0);
    for (size_t i = 0; i < b->n; i++) {
        FUZZ_CHECK(vc_raise(&r, b->e[i].actor, b->e[i].counter) == 0);
    }
    FUZZ_CHECK(vc_compare(&r, &m1) == VC_EQUAL && r.n == m1.n);

    /* Pruning: at most max entries unless every one left is kept; kept
     * actors keep their counters; the original descends the pruned. */
    size_t max = b->n % 5;
    uint64_t keep[2] = {a->n > 0 ? a->e[0].actor : 0,
                        b->n > 0 ? b->e[b->n - 1].actor : 0};
    vc_t p;
    vc_init(&p);
    FUZZ_CHECK(vc_copy(&p, &m1) == 0);
    size_t dropped = vc_prune(&p, max, keep, 2);
    check_clock(&p);
    FUZZ_CHECK(p.n + dropped == m1.n);
    FUZZ_CHECK(vc_descends(&m1, &p));
    for (size_t k = 0; k < 2; k++) {
        FUZZ_CHECK(vc_get(&p, keep[k]) == vc_get(&m1, keep[k]));
    }
    if (p.n > max) {
        for (size_t i = 0; i < p.n; i++) {
            FUZZ_CHECK(p.e[i].actor == keep[0] || p.e[i].actor == keep[1]);
        }
    }
    vc_free(&p);
    vc_free(&m1);
    vc_free(&m2);
    vc_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int reseal = data[0] & 1;
    const uint8_t *pa;
    const uint8_t *pb;
    size_t na;
    size_t nb;
    fuzz_split(data + 1, size - 1, &pa, &na, &pb, &nb);
    vc_t a;
    vc_t b;
    vc_init(&a);
    vc_init(&b);
    if (decode_side(pa, na, reseal, &a) && decode_side(pb, nb, reseal, &b)) {
        check_pair(&a, &b);
    }
    vc_free(&a);
    vc_free(&b);
    return 0;
}
