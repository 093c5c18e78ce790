/*
 * check_object.c - objects with siblings: the DVV rules, the join, encoding
 * round trips and rejection of corrupt bytes, and a randomized simulation
 * of replicas and clients checked against a brute-force model that tracks
 * exact causal histories (sets of dots) instead of version vectors.
 */
#include "check_kvdist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvdist.h"
#include "object.h"

#include <xxhash.h>

static const obj_limits_t lim = {1 << 20, 1024, 1024};

static void write_str(obj_t *o, const vc_t *ctx, uint64_t actor,
                      uint64_t counter, const char *v)
{
    ck_assert_int_eq(obj_update(o, ctx, (vc_dot_t){actor, counter}, 1, 0,
                                v, v ? strlen(v) : 0, v == NULL),
                     0);
}

static int has_value(const obj_t *o, const char *v)
{
    for (size_t i = 0; i < o->n; i++) {
        if (o->sib[i].vlen == strlen(v) &&
            memcmp(o->sib[i].val, v, o->sib[i].vlen) == 0) {
            return 1;
        }
    }
    return 0;
}

START_TEST(test_dvv_rules)
{
    obj_t o;
    obj_init(&o);
    vc_t ctx;
    vc_init(&ctx);
    /* a chain of writes each with the previous read's context: 1 sibling */
    write_str(&o, &ctx, 1, 1, "a");
    for (uint64_t i = 2; i < 20; i++) {
        ck_assert_int_eq(vc_copy(&ctx, &o.cc), 0);
        char v[16];
        snprintf(v, sizeof(v), "v%llu", (unsigned long long)i);
        write_str(&o, &ctx, 1, i, v);
        ck_assert_uint_eq(o.n, 1);
    }
    /* two writes with the same context: two siblings */
    ck_assert_int_eq(vc_copy(&ctx, &o.cc), 0);
    write_str(&o, &ctx, 1, 20, "x");
    write_str(&o, &ctx, 2, 1, "y");
    ck_assert_uint_eq(o.n, 2);
    ck_assert(has_value(&o, "x") && has_value(&o, "y"));
    /* a write whose context covers only x drops exactly x */
    vc_t only_x;
    vc_init(&only_x);
    ck_assert_int_eq(vc_copy(&only_x, &ctx), 0);
    ck_assert_int_eq(vc_raise(&only_x, 1, 20), 0);
    write_str(&o, &only_x, 1, 21, "z");
    ck_assert_uint_eq(o.n, 2);
    ck_assert(has_value(&o, "y") && has_value(&o, "z") && !has_value(&o, "x"));
    /* an empty context drops nothing */
    vc_t empty;
    vc_init(&empty);
    write_str(&o, &empty, 3, 1, "w");
    ck_assert_uint_eq(o.n, 3);
    /* a delete with the full context leaves one tombstone, no live value */
    ck_assert_int_eq(vc_copy(&ctx, &o.cc), 0);
    write_str(&o, &ctx, 1, 22, NULL);
    ck_assert_uint_eq(o.n, 1);
    ck_assert_uint_eq(obj_live(&o), 0);
    /* every sibling's dot stays covered by the context */
    ck_assert(vc_covers(&o.cc, o.sib[0].dot));
    vc_free(&ctx);
    vc_free(&only_x);
    vc_free(&empty);
    obj_free(&o);
}
END_TEST

START_TEST(test_join_keeps_concurrent)
{
    obj_t a;
    obj_t b;
    obj_init(&a);
    obj_init(&b);
    vc_t empty;
    vc_init(&empty);
    write_str(&a, &empty, 1, 1, "base");
    bool changed = false;
    ck_assert_int_eq(obj_join(&b, &a, &changed), 0);
    ck_assert(changed);
    /* both replicas overwrite "base" concurrently */
    vc_t ctx;
    vc_init(&ctx);
    ck_assert_int_eq(vc_copy(&ctx, &a.cc), 0);
    write_str(&a, &ctx, 1, 2, "left");
    write_str(&b, &ctx, 2, 1, "right");
    obj_t a2;
    obj_init(&a2);
    ck_assert_int_eq(obj_join(&a2, &a, NULL), 0);
    ck_assert_int_eq(obj_join(&a, &b, &changed), 0);
    ck_assert(changed);
    ck_assert_int_eq(obj_join(&b, &a2, NULL), 0);
    /* both sides converge to {left, right}, base is gone */
    ck_assert(obj_equal(&a, &b));
    ck_assert_uint_eq(a.n, 2);
    ck_assert(has_value(&a, "left") && has_value(&a, "right"));
    ck_assert(!has_value(&a, "base"));
    /* joining again changes nothing */
    ck_assert_int_eq(obj_join(&a, &b, &changed), 0);
    ck_assert(!changed);
    vc_free(&ctx);
    vc_free(&empty);
    obj_free(&a);
    obj_free(&a2);
    obj_free(&b);
}
END_TEST

/* A forwarded write retried on a second coordinator is applied twice,
 * under two dots, with one token: every replica keeps the sibling with the
 * lower dot, whatever order the copies meet in, and the context keeps
 * both dots (a later write that saw either supersedes the write). */
START_TEST(test_retried_write_token)
{
    const uint64_t tok = 0x5eed5eed5eedULL;
    obj_t base, a, b, ab, ba;
    obj_init(&base);
    write_str(&base, NULL, 1, 1, "old");
    obj_init(&a);
    obj_init(&b);
    ck_assert_int_eq(obj_join(&a, &base, NULL), 0);
    ck_assert_int_eq(obj_join(&b, &base, NULL), 0);
    vc_t ctx;
    vc_init(&ctx);
    ck_assert_int_eq(vc_copy(&ctx, &base.cc), 0);
    /* coordinator 3 and coordinator 2 each apply the same client write */
    ck_assert_int_eq(obj_update(&a, &ctx, (vc_dot_t){3, 1}, 1, tok, "new", 3,
                                false),
                     0);
    ck_assert_int_eq(obj_update(&b, &ctx, (vc_dot_t){2, 1}, 1, tok, "new", 3,
                                false),
                     0);
    ck_assert_uint_eq(a.n, 1);
    ck_assert_uint_eq(b.n, 1);
    obj_init(&ab);
    obj_init(&ba);
    ck_assert_int_eq(obj_join(&ab, &a, NULL), 0);
    bool changed = false;
    ck_assert_int_eq(obj_join(&ab, &b, &changed), 0);
    ck_assert(changed);
    ck_assert_int_eq(obj_join(&ba, &b, NULL), 0);
    ck_assert_int_eq(obj_join(&ba, &a, NULL), 0);
    ck_assert_uint_eq(ab.n, 1);
    ck_assert(obj_equal(&ab, &ba));
    ck_assert(ab.sib[0].dot.actor == 2 && ab.sib[0].token == tok);
    ck_assert(vc_covers(&ab.cc, (vc_dot_t){3, 1}));
    /* a replica that held only the dropped copy converges too */
    ck_assert_int_eq(obj_join(&a, &ab, &changed), 0);
    ck_assert(changed && obj_equal(&a, &ab));
    /* two client writes with distinct tokens stay two siblings */
    obj_t c;
    obj_init(&c);
    ck_assert_int_eq(obj_join(&c, &base, NULL), 0);
    ck_assert_int_eq(obj_update(&c, &ctx, (vc_dot_t){4, 1}, 1, tok + 1, "x", 1,
                                false),
                     0);
    ck_assert_int_eq(obj_join(&c, &ab, NULL), 0);
    ck_assert_uint_eq(c.n, 2);
    /* the token survives the encoding; a token of 0 does not decode */
    buf_t enc;
    buf_init(&enc);
    ck_assert_int_eq(obj_encode(&c, &enc), 0);
    obj_t d;
    obj_init(&d);
    ck_assert_int_eq(obj_decode(enc.p, enc.len, &lim, &d), 0);
    ck_assert(obj_equal(&c, &d));
    ck_assert(d.sib[0].token != 0 && d.sib[1].token != 0);
    obj_t z;
    obj_init(&z);
    write_str(&z, NULL, 1, 1, "v");
    buf_t zb;
    buf_init(&zb);
    ck_assert_int_eq(obj_encode(&z, &zb), 0);
    /* set the token flag on its one sibling, with no token behind it:
     * flags sit after 'K' 'O' ver flg, clock {1, (1,1)}, count 1, dot, ts */
    size_t flags_at = 4 + 1 + 8 + 1 + 1 + 8 + 1 + 8;
    ck_assert_uint_eq(zb.p[flags_at], 0);
    zb.p[flags_at] = OBJ_SIB_TOKEN;
    ck_assert_int_eq(obj_decode(zb.p, zb.len, &lim, &d), KV_ECORRUPT);
    buf_free(&zb);
    buf_free(&enc);
    obj_free(&z);
    obj_free(&d);
    obj_free(&c);
    obj_free(&ab);
    obj_free(&ba);
    obj_free(&a);
    obj_free(&b);
    obj_free(&base);
    vc_free(&ctx);
}
END_TEST

START_TEST(test_encode_roundtrip_and_corruption)
{
    obj_t o;
    obj_init(&o);
    vc_t empty;
    vc_init(&empty);
    write_str(&o, &empty, 5, 1, "hello");
    write_str(&o, &empty, 6, 1, NULL);
    ck_assert_int_eq(obj_update(&o, &empty, (vc_dot_t){7, 3}, -5, 0,
                                "\0bin\0", 5, false),
                     0);
    ck_assert_int_eq(obj_update(&o, &empty, (vc_dot_t){8, 1}, 0, 0, NULL, 0,
                                false),
                     0); /* an empty value is not a tombstone */
    buf_t b;
    buf_init(&b);
    ck_assert_int_eq(obj_encode(&o, &b), 0);
    obj_t d;
    obj_init(&d);
    ck_assert_int_eq(obj_decode(b.p, b.len, &lim, &d), 0);
    ck_assert(obj_equal(&o, &d));
    ck_assert_uint_eq(obj_live(&d), 3);
    /* equal objects encode to equal bytes */
    buf_t b2;
    buf_init(&b2);
    ck_assert_int_eq(obj_encode(&d, &b2), 0);
    ck_assert_uint_eq(b.len, b2.len);
    ck_assert_int_eq(memcmp(b.p, b2.p, b.len), 0);
    buf_free(&b2);
    /* every truncation, every appended byte and every bit flip fails */
    for (size_t cut = 0; cut < b.len; cut++) {
        ck_assert_int_eq(obj_decode(b.p, cut, &lim, &d), KV_ECORRUPT);
    }
    uint8_t *longer = malloc(b.len + 1);
    memcpy(longer, b.p, b.len);
    longer[b.len] = 0;
    ck_assert_int_eq(obj_decode(longer, b.len + 1, &lim, &d), KV_ECORRUPT);
    free(longer);
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.p[i] ^= (uint8_t)(1u << bit);
            ck_assert_int_eq(obj_decode(b.p, b.len, &lim, &d), KV_ECORRUPT);
            b.p[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* limits are enforced even with a valid checksum */
    obj_limits_t small = {4, 1024, 1024};
    ck_assert_int_eq(obj_decode(b.p, b.len, &small, &d), KV_ECORRUPT);
    obj_limits_t few = {1 << 20, 2, 1024};
    ck_assert_int_eq(obj_decode(b.p, b.len, &few, &d), KV_ECORRUPT);
    ck_assert_uint_eq(d.n, 0);
    buf_free(&b);
    vc_free(&empty);
    obj_free(&o);
    obj_free(&d);
}
END_TEST

START_TEST(test_random_bytes_never_crash)
{
    /* Garbage with a valid header and checksum reaches the field checks. */
    uint64_t seed = 7;
    obj_t d;
    obj_init(&d);
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 8 + util_rand(&seed) % 80;
        uint8_t *p = malloc(len);
        for (size_t i = 0; i < len; i++) {
            p[i] = (uint8_t)util_rand(&seed);
        }
        p[0] = 'K';
        p[1] = 'O';
        p[2] = 1;
        p[3] = 0;
        if (iter % 2 == 0) {
            p[4] = (uint8_t)(util_rand(&seed) % 3); /* plausible counts */
        }
        uint32_t sum = (uint32_t)XXH3_64bits(p, len - 4);
        for (int i = 0; i < 4; i++) {
            p[len - 4 + (size_t)i] = (uint8_t)(sum >> (8 * i));
        }
        int rc = obj_decode(p, len, &lim, &d);
        ck_assert(rc == 0 || rc == KV_ECORRUPT);
        if (rc == 0) {
            accepted++;
            for (size_t i = 0; i < d.n; i++) {
                ck_assert(vc_covers(&d.cc, d.sib[i].dot));
            }
        }
        free(p);
    }
    obj_free(&d);
    (void)accepted;
}
END_TEST

/* ---- model-based simulation ---------------------------------------- */

#define SIM_REPLICAS 3
#define SIM_MAXDOTS 512

typedef struct {
    vc_dot_t dot;
    char val[16];
} msib_t;

/* Model replica: exact set of seen dots and the sibling list. */
typedef struct {
    vc_dot_t seen[SIM_MAXDOTS];
    size_t nseen;
    msib_t sib[SIM_MAXDOTS];
    size_t nsib;
} mrep_t;

static bool mseen(const vc_dot_t *set, size_t n, vc_dot_t d)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i].actor == d.actor && set[i].counter == d.counter) {
            return true;
        }
    }
    return false;
}

static void madd_seen(vc_dot_t *set, size_t *n, vc_dot_t d)
{
    if (!mseen(set, *n, d)) {
        ck_assert_uint_lt(*n, SIM_MAXDOTS);
        set[(*n)++] = d;
    }
}

static bool mhas_sib(const mrep_t *m, vc_dot_t d)
{
    for (size_t i = 0; i < m->nsib; i++) {
        if (m->sib[i].dot.actor == d.actor &&
            m->sib[i].dot.counter == d.counter) {
            return true;
        }
    }
    return false;
}

static void check_same(const obj_t *o, const mrep_t *m)
{
    ck_assert_uint_eq(o->n, m->nsib);
    for (size_t i = 0; i < o->n; i++) {
        ck_assert(mhas_sib(m, o->sib[i].dot));
        for (size_t j = 0; j < m->nsib; j++) {
            if (m->sib[j].dot.actor == o->sib[i].dot.actor &&
                m->sib[j].dot.counter == o->sib[i].dot.counter) {
                ck_assert_uint_eq(o->sib[i].vlen, strlen(m->sib[j].val));
                ck_assert(o->sib[i].vlen == 0 ||
                          memcmp(o->sib[i].val, m->sib[j].val,
                                 o->sib[i].vlen) == 0);
            }
        }
    }
}

START_TEST(test_model_simulation)
{
    uint64_t seed = 1234 + (uint64_t)_i;
    obj_t rep[SIM_REPLICAS];
    mrep_t *mrep = calloc(SIM_REPLICAS, sizeof(*mrep));
    uint64_t counter[SIM_REPLICAS] = {0};
    /* contexts clients hold: implementation and model side */
    vc_t cctx[4];
    vc_dot_t (*mctx)[SIM_MAXDOTS] = calloc(4, sizeof(*mctx));
    size_t mctxn[4] = {0};
    for (int i = 0; i < SIM_REPLICAS; i++) {
        obj_init(&rep[i]);
    }
    for (int i = 0; i < 4; i++) {
        vc_init(&cctx[i]);
    }
    for (int step = 0; step < 150; step++) {
        int r = (int)(util_rand(&seed) % SIM_REPLICAS);
        int c = (int)(util_rand(&seed) % 4);
        int op = (int)(util_rand(&seed) % 4);
        if (op == 0) { /* client c reads replica r */
            ck_assert_int_eq(vc_copy(&cctx[c], &rep[r].cc), 0);
            memcpy(mctx[c], mrep[r].seen, sizeof(mctx[c]));
            mctxn[c] = mrep[r].nseen;
        } else if (op == 1 || op == 2) { /* client c writes through r */
            vc_dot_t d = {(uint64_t)r + 1, ++counter[r]};
            char v[16];
            snprintf(v, sizeof(v), "s%d", step);
            bool tomb = util_rand(&seed) % 8 == 0;
            ck_assert_int_eq(obj_update(&rep[r], &cctx[c], d, step, 0,
                                        tomb ? NULL : v,
                                        tomb ? 0 : strlen(v), tomb),
                             0);
            mrep_t *m = &mrep[r];
            size_t k = 0;
            for (size_t i = 0; i < m->nsib; i++) {
                if (!mseen(mctx[c], mctxn[c], m->sib[i].dot)) {
                    m->sib[k++] = m->sib[i];
                }
            }
            m->nsib = k;
            m->sib[m->nsib].dot = d;
            snprintf(m->sib[m->nsib].val, sizeof(m->sib[0].val), "%s",
                     tomb ? "" : v);
            m->nsib++;
            for (size_t i = 0; i < mctxn[c]; i++) {
                madd_seen(m->seen, &m->nseen, mctx[c][i]);
            }
            madd_seen(m->seen, &m->nseen, d);
        } else { /* anti-entropy: replica r pulls from replica q */
            int q = (int)(util_rand(&seed) % SIM_REPLICAS);
            ck_assert_int_eq(obj_join(&rep[r], &rep[q], NULL), 0);
            mrep_t *a = &mrep[r];
            const mrep_t *b = &mrep[q];
            msib_t out[SIM_MAXDOTS];
            size_t k = 0;
            for (size_t i = 0; i < a->nsib; i++) {
                if (mhas_sib(b, a->sib[i].dot) ||
                    !mseen(b->seen, b->nseen, a->sib[i].dot)) {
                    out[k++] = a->sib[i];
                }
            }
            for (size_t i = 0; i < b->nsib; i++) {
                if (!mhas_sib(a, b->sib[i].dot) &&
                    !mseen(a->seen, a->nseen, b->sib[i].dot)) {
                    out[k++] = b->sib[i];
                }
            }
            memcpy(a->sib, out, k * sizeof(out[0]));
            a->nsib = k;
            for (size_t i = 0; i < b->nseen; i++) {
                madd_seen(a->seen, &a->nseen, b->seen[i]);
            }
        }
        for (int i = 0; i < SIM_REPLICAS; i++) {
            check_same(&rep[i], &mrep[i]);
        }
    }
    /* full exchange: every replica converges to the same object */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < SIM_REPLICAS; i++) {
            for (int j = 0; j < SIM_REPLICAS; j++) {
                ck_assert_int_eq(obj_join(&rep[i], &rep[j], NULL), 0);
            }
        }
    }
    for (int i = 1; i < SIM_REPLICAS; i++) {
        ck_assert(obj_equal(&rep[0], &rep[i]));
    }
    for (int i = 0; i < SIM_REPLICAS; i++) {
        obj_free(&rep[i]);
    }
    for (int i = 0; i < 4; i++) {
        vc_free(&cctx[i]);
    }
    free(mrep);
    free(mctx);
}
END_TEST

Suite *object_suite(void)
{
    Suite *s = suite_create("object");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_dvv_rules);
    tcase_add_test(tc, test_join_keeps_concurrent);
    tcase_add_test(tc, test_retried_write_token);
    tcase_add_test(tc, test_encode_roundtrip_and_corruption);
    tcase_add_test(tc, test_random_bytes_never_crash);
    tcase_add_loop_test(tc, test_model_simulation, 0, 40);
    suite_add_tcase(s, tc);
    return s;
}
