/*
 * check_vclock.c - version vectors: unit cases, encoding, contexts, pruning,
 * and randomized properties against a brute-force model (dense arrays over a
 * small actor set, where every operation is a plain loop).
 */
#include "check_kvdist.h"

#include <string.h>

#include "kvdist.h"
#include "vclock.h"

#define NACT 5

static const uint64_t actors[NACT] = {3, 17, 0x100000000ull, 99999,
                                      0xffffffffffffffffull};

/* The model: counters[i] is actors[i]'s entry (0 = absent). */
typedef struct {
    uint64_t c[NACT];
} model_t;

static void model_to_vc(const model_t *m, vc_t *vc)
{
    vc_clear(vc);
    for (int i = 0; i < NACT; i++) {
        ck_assert_int_eq(vc_raise(vc, actors[i], m->c[i]), 0);
    }
}

static int model_compare(const model_t *a, const model_t *b)
{
    int more_a = 0;
    int more_b = 0;
    for (int i = 0; i < NACT; i++) {
        more_a |= a->c[i] > b->c[i];
        more_b |= a->c[i] < b->c[i];
    }
    return more_a && more_b ? VC_CONCURRENT
           : more_a         ? VC_AFTER
           : more_b         ? VC_BEFORE
                            : VC_EQUAL;
}

static void model_random(model_t *m, uint64_t *seed)
{
    for (int i = 0; i < NACT; i++) {
        /* Mostly small counters so equal and absent entries are common. */
        uint64_t r = util_rand(seed);
        m->c[i] = (r % 3 == 0) ? 0 : (r >> 8) % 4;
        if (r % 97 == 0) {
            m->c[i] = UINT64_MAX - (r >> 40);
        }
    }
}

START_TEST(test_basic_ops)
{
    vc_t a;
    vc_t b;
    vc_init(&a);
    vc_init(&b);
    ck_assert_int_eq(vc_compare(&a, &b), VC_EQUAL);
    ck_assert_int_eq(vc_raise(&a, 7, 2), 0);
    ck_assert_uint_eq(vc_get(&a, 7), 2);
    ck_assert_uint_eq(vc_get(&a, 8), 0);
    ck_assert_int_eq(vc_compare(&a, &b), VC_AFTER);
    ck_assert_int_eq(vc_compare(&b, &a), VC_BEFORE);
    ck_assert_int_eq(vc_raise(&b, 9, 1), 0);
    ck_assert_int_eq(vc_compare(&a, &b), VC_CONCURRENT);
    ck_assert(!vc_descends(&a, &b));
    /* raise never lowers */
    ck_assert_int_eq(vc_raise(&a, 7, 1), 0);
    ck_assert_uint_eq(vc_get(&a, 7), 2);
    ck_assert_int_eq(vc_merge(&a, &b), 0);
    ck_assert(vc_descends(&a, &b));
    ck_assert(vc_covers(&a, (vc_dot_t){9, 1}));
    ck_assert(!vc_covers(&a, (vc_dot_t){9, 2}));
    ck_assert(!vc_covers(&a, (vc_dot_t){10, 1}));
    vc_free(&a);
    vc_free(&b);
}
END_TEST

START_TEST(test_model_properties)
{
    uint64_t seed = 42;
    vc_t a;
    vc_t b;
    vc_t c;
    vc_init(&a);
    vc_init(&b);
    vc_init(&c);
    for (int iter = 0; iter < 4000; iter++) {
        model_t ma;
        model_t mb;
        model_random(&ma, &seed);
        model_random(&mb, &seed);
        model_to_vc(&ma, &a);
        model_to_vc(&mb, &b);

        /* compare and descends agree with the model */
        ck_assert_int_eq(vc_compare(&a, &b), model_compare(&ma, &mb));
        int o = model_compare(&ma, &mb);
        ck_assert_int_eq(vc_descends(&a, &b), o == VC_EQUAL || o == VC_AFTER);

        /* covers agrees for every actor and a range of counters */
        for (int i = 0; i < NACT; i++) {
            uint64_t k = util_rand(&seed) % 6;
            ck_assert_int_eq(vc_covers(&a, (vc_dot_t){actors[i], k + 1}),
                             k + 1 <= ma.c[i]);
        }

        /* merge is the pointwise max, commutative, and dominates both */
        ck_assert_int_eq(vc_copy(&c, &a), 0);
        ck_assert_int_eq(vc_merge(&c, &b), 0);
        for (int i = 0; i < NACT; i++) {
            uint64_t mx = ma.c[i] > mb.c[i] ? ma.c[i] : mb.c[i];
            ck_assert_uint_eq(vc_get(&c, actors[i]), mx);
        }
        ck_assert(vc_descends(&c, &a));
        ck_assert(vc_descends(&c, &b));
        vc_t d;
        vc_init(&d);
        ck_assert_int_eq(vc_copy(&d, &b), 0);
        ck_assert_int_eq(vc_merge(&d, &a), 0);
        ck_assert_int_eq(vc_compare(&c, &d), VC_EQUAL);
        /* idempotent */
        ck_assert_int_eq(vc_merge(&d, &a), 0);
        ck_assert_int_eq(vc_compare(&c, &d), VC_EQUAL);
        vc_free(&d);

        /* entries stay sorted and positive */
        for (size_t i = 0; i < c.n; i++) {
            ck_assert_uint_gt(c.e[i].counter, 0);
            if (i > 0) {
                ck_assert_uint_lt(c.e[i - 1].actor, c.e[i].actor);
            }
        }

        /* encode/decode round trip */
        buf_t buf;
        buf_init(&buf);
        vc_encode(&c, &buf);
        rd_t r;
        rd_init(&r, buf.p, buf.len);
        vc_t e;
        vc_init(&e);
        ck_assert_int_eq(vc_decode(&r, &e, VC_DECODE_MAX), 0);
        ck_assert_uint_eq(rd_left(&r), 0);
        ck_assert_int_eq(vc_compare(&c, &e), VC_EQUAL);
        vc_free(&e);
        buf_free(&buf);
    }
    vc_free(&a);
    vc_free(&b);
    vc_free(&c);
}
END_TEST

START_TEST(test_decode_rejects)
{
    vc_t v;
    vc_init(&v);
    /* unsorted actors */
    buf_t b;
    buf_init(&b);
    buf_put_varint(&b, 2);
    buf_put_u64(&b, 5);
    buf_put_varint(&b, 1);
    buf_put_u64(&b, 4);
    buf_put_varint(&b, 1);
    rd_t r;
    rd_init(&r, b.p, b.len);
    ck_assert_int_eq(vc_decode(&r, &v, 100), KV_ECORRUPT);
    buf_free(&b);
    /* zero counter */
    buf_put_varint(&b, 1);
    buf_put_u64(&b, 5);
    buf_put_varint(&b, 0);
    rd_init(&r, b.p, b.len);
    ck_assert_int_eq(vc_decode(&r, &v, 100), KV_ECORRUPT);
    buf_free(&b);
    /* a huge count with no bytes behind it must not allocate or overread */
    buf_put_varint(&b, UINT64_MAX);
    rd_init(&r, b.p, b.len);
    ck_assert_int_eq(vc_decode(&r, &v, VC_DECODE_MAX), KV_ECORRUPT);
    buf_free(&b);
    /* more entries than allowed */
    buf_put_varint(&b, 3);
    for (int i = 0; i < 3; i++) {
        buf_put_u64(&b, (uint64_t)i + 1);
        buf_put_varint(&b, 1);
    }
    rd_init(&r, b.p, b.len);
    ck_assert_int_eq(vc_decode(&r, &v, 2), KV_ECORRUPT);
    /* every truncation of a valid encoding is rejected */
    for (size_t cut = 0; cut < b.len; cut++) {
        rd_init(&r, b.p, cut);
        ck_assert_int_eq(vc_decode(&r, &v, 100), KV_ECORRUPT);
    }
    /* overlong varint (0x80 0x00) */
    uint8_t overlong[] = {0x80, 0x00};
    rd_init(&r, overlong, sizeof(overlong));
    (void)rd_varint(&r);
    ck_assert(r.err);
    buf_free(&b);
    vc_free(&v);
}
END_TEST

START_TEST(test_context_framing)
{
    vc_t v;
    vc_t w;
    vc_init(&v);
    vc_init(&w);
    ck_assert_int_eq(vc_raise(&v, 1, 10), 0);
    ck_assert_int_eq(vc_raise(&v, 2, 20), 0);
    buf_t b;
    buf_init(&b);
    ck_assert_int_eq(vc_context_encode(&v, &b), 0);
    ck_assert_int_eq(vc_context_decode(b.p, b.len, &w), 0);
    ck_assert_int_eq(vc_compare(&v, &w), VC_EQUAL);
    /* empty context covers nothing */
    ck_assert_int_eq(vc_context_decode(NULL, 0, &w), 0);
    ck_assert_uint_eq(w.n, 0);
    /* every single-bit flip and every truncation is refused */
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.p[i] ^= (uint8_t)(1u << bit);
            ck_assert_int_eq(vc_context_decode(b.p, b.len, &w), KV_EINVAL);
            b.p[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (size_t cut = 1; cut < b.len; cut++) {
        ck_assert_int_eq(vc_context_decode(b.p, cut, &w), KV_EINVAL);
    }
    buf_free(&b);
    vc_free(&v);
    vc_free(&w);
}
END_TEST

START_TEST(test_prune)
{
    vc_t v;
    vc_init(&v);
    /* 10 incarnations started at seconds 100..109 */
    for (uint32_t i = 0; i < 10; i++) {
        ck_assert_int_eq(vc_raise(&v, vc_actor_make(100 + i, 7 * i), 5), 0);
    }
    uint64_t keep[1] = {vc_actor_make(100, 0)}; /* the oldest is live */
    ck_assert_uint_eq(vc_prune(&v, 4, keep, 1), 6);
    ck_assert_uint_eq(v.n, 4);
    /* the kept one survived, and the rest are the newest three */
    ck_assert_uint_eq(vc_get(&v, keep[0]), 5);
    for (uint32_t i = 7; i < 10; i++) {
        ck_assert_uint_eq(vc_get(&v, vc_actor_make(100 + i, 7 * i)), 5);
    }
    /* nothing to drop when every entry is kept */
    uint64_t all[4];
    for (size_t i = 0; i < 4; i++) {
        all[i] = v.e[i].actor;
    }
    ck_assert_uint_eq(vc_prune(&v, 1, all, 4), 0);
    ck_assert_uint_eq(v.n, 4);
    vc_free(&v);
}
END_TEST

Suite *vclock_suite(void)
{
    Suite *s = suite_create("vclock");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_basic_ops);
    tcase_add_test(tc, test_model_properties);
    tcase_add_test(tc, test_decode_rejects);
    tcase_add_test(tc, test_context_framing);
    tcase_add_test(tc, test_prune);
    suite_add_tcase(s, tc);
    return s;
}
