/*
 * check_ring.c - Check suite for the consistent-hash ring (lib/ring.c).
 *
 * Exports ring_suite() for the shared runner; there is no main() here.
 * Besides API contracts, it measures the properties the ring exists for
 * (Dynamo §4.2): load balance across nodes, minimal key movement when a node
 * joins or leaves, and placement that depends only on the membership set.
 * Every statistical test uses a fixed PRNG seed, so a failure is
 * reproducible, and prints one line with the figures it measured.
 */
#include "rand.h"
#include "ring.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define NKEYS 200000
#define MAX_NODES 40
#define ID_LEN 48

/* ------------------------------------------------------------- helpers */

/* Every passing ck_assert_*() reports its location to Check's parent
 * process (a write per call): fine for a few checks, far too slow inside
 * loops over 200,000 keys. Loops use REQUIRE, which calls into Check only
 * when the condition fails. */
#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond)) {                                                        \
            ck_abort_msg(__VA_ARGS__);                                        \
        }                                                                     \
    } while (0)

/* Check runs each test in a forked child; flush so figures are not lost. */
static void report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

struct idset {
    char buf[MAX_NODES][ID_LEN];
    const char *ids[MAX_NODES];
};

/* Several naming schemes, so a result is not an accident of one of them. */
static void make_ids(struct idset *s, int scheme, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (scheme) {
        case 0:
            snprintf(s->buf[i], ID_LEN, "node-%zu", i);
            break;
        case 1:
            snprintf(s->buf[i], ID_LEN, "10.0.%zu.%zu:7946", i / 8,
                     i % 8 + 10);
            break;
        default:
            snprintf(s->buf[i], ID_LEN, "kv%02zu.dc1.example.net", i + 1);
            break;
        }
        s->ids[i] = s->buf[i];
    }
}

/* Keys are 8-byte strings drawn from splitmix64 (rand.h). */
static uint64_t *make_keys(size_t count, uint64_t seed)
{
    uint64_t *keys = malloc(count * sizeof(*keys));

    ck_assert_ptr_nonnull(keys);
    for (size_t i = 0; i < count; i++) {
        keys[i] = rand_next(&seed);
    }
    return keys;
}

static ring_t *build_ok(const char *const *ids, size_t n, unsigned vnodes)
{
    ring_t *r = NULL;

    ck_assert_int_eq(ring_build(ids, n, vnodes, &r), RING_OK);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(ring_node_count(r), n);
    return r;
}

static size_t primary(const ring_t *r, uint64_t key)
{
    size_t out[1];

    REQUIRE(ring_successors(r, &key, sizeof(key), out, 1) == 1,
            "no successor");
    return out[0];
}

/* Newton's method, so the suite needs no -lm. */
static double root(double x)
{
    double g = x > 1.0 ? x : 1.0;

    if (x <= 0.0) {
        return 0.0;
    }
    for (int i = 0; i < 64; i++) {
        g = 0.5 * (g + x / g);
    }
    return g;
}

static int contains(const size_t *list, size_t len, size_t v)
{
    for (size_t i = 0; i < len; i++) {
        if (list[i] == v) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ bad input */

START_TEST(test_bad_input)
{
    const char *good[] = {"a", "b", "c"};
    const char *dup[] = {"a", "b", "a"};
    const char *empty[] = {"a", "", "c"};
    const char *null_id[] = {"a", NULL, "c"};
    static char sentinel;
    /* Non-NULL on entry, so the test sees ring_build() reset it. */
    ring_t *r = (ring_t *)(void *)&sentinel;

    ck_assert_int_eq(ring_build(good, 0, 8, &r), RING_EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(ring_build(dup, 3, 8, &r), RING_EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(ring_build(empty, 3, 8, &r), RING_EINVAL);
    ck_assert_int_eq(ring_build(null_id, 3, 8, &r), RING_EINVAL);
    ck_assert_int_eq(ring_build(good, 3, 0, &r), RING_EINVAL);
    ck_assert_int_eq(ring_build(good, 3, RING_MAX_VNODES + 1, &r),
                     RING_EINVAL);
    ck_assert_int_eq(ring_build(NULL, 3, 8, &r), RING_EINVAL);
    ck_assert_int_eq(ring_build(good, 3, 8, NULL), RING_EINVAL);
    ck_assert_ptr_null(r);

    /* The limits themselves are accepted. */
    ck_assert_int_eq(ring_build(good, 1, 1, &r), RING_OK);
    ring_free(r);
    ck_assert_int_eq(ring_build(good, 3, RING_MAX_VNODES, &r), RING_OK);
    ck_assert_uint_eq(ring_vnodes(r), RING_MAX_VNODES);
    ring_free(r);

    /* NULL-tolerant accessors. */
    ring_free(NULL);
    ck_assert_uint_eq(ring_node_count(NULL), 0);
    ck_assert_ptr_null(ring_node_id(NULL, 0));
    r = build_ok(good, 3, 8);
    ck_assert_ptr_null(ring_node_id(r, 3));
    ck_assert_double_eq(ring_ownership(r, 3), 0.0);
    size_t out[4];
    ck_assert_uint_eq(ring_successors(r, "k", 1, out, 0), 0);
    ck_assert_uint_eq(ring_successors(r, "k", 1, NULL, 4), 0);
    ck_assert_uint_eq(ring_successors(NULL, "k", 1, out, 4), 0);
    uint64_t *s = (uint64_t *)(void *)&sentinel;
    uint64_t *e = (uint64_t *)(void *)&sentinel;
    ck_assert_uint_eq(ring_ranges_for(r, 3, 3, &s, &e), 0);
    ck_assert_ptr_null(s);
    ck_assert_ptr_null(e);
    ck_assert_uint_eq(ring_ranges_for(r, 0, 0, &s, &e), 0);
    ring_free(r);
}
END_TEST

START_TEST(test_ids_copied_and_indexed)
{
    char a[] = "alpha";
    char b[] = "beta";
    const char *ids[] = {a, b, "gamma"};
    ring_t *r = build_ok(ids, 3, 16);
    size_t idx = 99;

    a[0] = 'X'; /* the ring keeps its own copy */
    ck_assert_str_eq(ring_node_id(r, 0), "alpha");
    ck_assert_str_eq(ring_node_id(r, 1), "beta");
    ck_assert_str_eq(ring_node_id(r, 2), "gamma");
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(ring_node_index(r, ring_node_id(r, i), &idx),
                         RING_OK);
        ck_assert_uint_eq(idx, i);
    }
    ck_assert_int_eq(ring_node_index(r, "Xlpha", &idx), RING_ENOTFOUND);
    ck_assert_int_eq(ring_node_index(r, "", &idx), RING_ENOTFOUND);
    ck_assert_int_eq(ring_node_index(r, NULL, &idx), RING_EINVAL);
    ring_free(r);
}
END_TEST

/* ------------------------------------------------ placement, pinned */

/*
 * An independent model of the ring: clockwise from point p, the first time
 * the walk meets a node is at that node's nearest position at or after p,
 * so the successor list is the nodes sorted by (clockwise distance of their
 * nearest position, id, vnode). Comparing against it checks the binary
 * search, the wrap past UINT64_MAX, the tie rule at exact positions, and
 * pins the placement function itself (positions are
 * XXH3_64bits_withSeed(id, vnode index)), whose change would silently move
 * data between nodes of a mixed-version cluster.
 */
struct model_node {
    uint64_t dist;
    const char *id;
    unsigned vidx;
    size_t idx;
};

static int cmp_model(const void *pa, const void *pb)
{
    const struct model_node *a = pa;
    const struct model_node *b = pb;

    if (a->dist != b->dist) {
        return a->dist < b->dist ? -1 : 1;
    }
    int c = strcmp(a->id, b->id);
    if (c != 0) {
        return c;
    }
    return a->vidx < b->vidx ? -1 : (a->vidx > b->vidx);
}

static void model_successors(const char *const *ids, size_t n,
                             unsigned vnodes, uint64_t point, size_t *out)
{
    struct model_node *m = malloc(n * sizeof(*m));

    REQUIRE(m != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        m[i].dist = UINT64_MAX;
        m[i].id = ids[i];
        m[i].idx = i;
        m[i].vidx = 0;
        for (unsigned v = 0; v < vnodes; v++) {
            uint64_t pos = XXH3_64bits_withSeed(ids[i], strlen(ids[i]), v);
            uint64_t d = pos - point;
            if (v == 0 || d < m[i].dist) {
                m[i].dist = d;
                m[i].vidx = v;
            }
        }
    }
    qsort(m, n, sizeof(m[0]), cmp_model);
    for (size_t i = 0; i < n; i++) {
        out[i] = m[i].idx;
    }
    free(m);
}

static void check_against_model(const ring_t *r, const char *const *ids,
                                 size_t n, unsigned vnodes, uint64_t point)
{
    size_t got[MAX_NODES];
    size_t want[MAX_NODES];

    REQUIRE(ring_successors_at(r, point, got, n) == n, "short list");
    model_successors(ids, n, vnodes, point, want);
    for (size_t i = 0; i < n; i++) {
        REQUIRE(got[i] == want[i],
                      "point %016llx: successor %zu is %s, model says %s",
                      (unsigned long long)point, i, ids[got[i]],
                      ids[want[i]]);
    }
}

START_TEST(test_placement_matches_model)
{
    const char *ids[] = {"alpha", "beta", "gamma", "delta", "epsilon"};
    const size_t n = 5;
    const unsigned vnodes = 16;
    ring_t *r = build_ok(ids, n, vnodes);
    uint64_t seed = 11;
    size_t checked = 0;

    /* XXH3 test vector (empty input) and a pinned key point: a different
     * hash, or a different libxxhash output, fails here first. */
    ck_assert_uint_eq(ring_hash_key("", 0), UINT64_C(0x2d06800538d394c2));
    ck_assert_uint_eq(ring_hash_key("kvdist", 6),
                      UINT64_C(0xb890bc1a09fc9c84));

    /* Exactly at, just before and just after every position. */
    for (size_t i = 0; i < n; i++) {
        for (unsigned v = 0; v < vnodes; v++) {
            uint64_t pos = XXH3_64bits_withSeed(ids[i], strlen(ids[i]), v);
            size_t first;
            check_against_model(r, ids, n, vnodes, pos - 1);
            check_against_model(r, ids, n, vnodes, pos);
            check_against_model(r, ids, n, vnodes, pos + 1);
            /* A point equal to a position belongs to that position. */
            REQUIRE(ring_successors_at(r, pos, &first, 1) == 1 &&
                        first == i,
                    "point at a position of %s is not owned by it", ids[i]);
            checked += 3;
        }
    }
    /* The wrap: the ends of the ring and random points. */
    check_against_model(r, ids, n, vnodes, 0);
    check_against_model(r, ids, n, vnodes, 1);
    check_against_model(r, ids, n, vnodes, UINT64_MAX);
    checked += 3;
    for (int i = 0; i < 20000; i++) {
        check_against_model(r, ids, n, vnodes, rand_next(&seed));
        checked++;
    }
    /* ring_successors hashes the key with ring_hash_key. */
    for (int i = 0; i < 1000; i++) {
        uint64_t key = rand_next(&seed);
        size_t a[5];
        size_t b[5];
        REQUIRE(ring_successors(r, &key, sizeof(key), a, 5) == 5 &&
                    ring_successors_at(r, ring_hash_key(&key, sizeof(key)),
                                       b, 5) == 5 &&
                    memcmp(a, b, sizeof(a)) == 0,
                "ring_successors disagrees with ring_successors_at");
    }
    report("ring placement: %zu points match the brute-force model "
           "(5 nodes x 16 vnodes)\n", checked);
    ring_free(r);
}
END_TEST

/* Above 4096 nodes walks track seen nodes by scanning their output instead
 * of a bitmap; run that path against the model too. */
START_TEST(test_large_cluster)
{
    const size_t n = 5000;
    const unsigned vnodes = 2;
    char *buf = malloc(n * 16);
    const char **ids = malloc(n * sizeof(*ids));
    size_t *got = malloc(n * sizeof(*got));
    size_t *want = malloc(n * sizeof(*want));
    uint64_t seed = 13;

    ck_assert(buf != NULL && ids != NULL && got != NULL && want != NULL);
    for (size_t i = 0; i < n; i++) {
        snprintf(buf + 16 * i, 16, "big-%zu", i);
        ids[i] = buf + 16 * i;
    }
    ring_t *r = build_ok(ids, n, vnodes);
    for (int i = 0; i < 100; i++) {
        uint64_t point = rand_next(&seed);
        size_t k = i == 0 ? n : 12; /* one full list, then short ones */
        REQUIRE(ring_successors_at(r, point, got, k) == k, "short list");
        model_successors(ids, n, vnodes, point, want);
        for (size_t j = 0; j < k; j++) {
            REQUIRE(got[j] == want[j], "successor %zu is %s, model says %s",
                    j, ids[got[j]], ids[want[j]]);
        }
    }
    report("ring large cluster: %zu nodes x %u vnodes match the model\n", n,
           vnodes);
    ring_free(r);
    free(want);
    free(got);
    free(ids);
    free(buf);
}
END_TEST

START_TEST(test_single_position)
{
    const char *ids[] = {"only"};
    ring_t *r = build_ok(ids, 1, 1);
    size_t out[4] = {7, 7, 7, 7};
    uint64_t *s;
    uint64_t *e;
    size_t cnt;

    ck_assert_uint_eq(ring_successors_at(r, 0, out, 4), 1);
    ck_assert_uint_eq(out[0], 0);
    ck_assert_uint_eq(out[1], 7);
    ck_assert_uint_eq(ring_successors_at(r, UINT64_MAX, out, 4), 1);
    ck_assert_uint_eq(out[0], 0);
    ck_assert_double_eq(ring_ownership(r, 0), 1.0);
    cnt = ring_ranges_for(r, 0, 3, &s, &e);
    ck_assert_uint_eq(cnt, 2);
    for (int i = 0; i < 1000; i++) {
        uint64_t p = (uint64_t)i * UINT64_C(0x9e3779b97f4a7c15);
        REQUIRE(ring_range_contains(s[0], e[0], p) +
                        ring_range_contains(s[1], e[1], p) ==
                    1,
                "point %llx not covered exactly once", (unsigned long long)p);
    }
    free(s);
    free(e);
    ring_free(r);
}
END_TEST

START_TEST(test_range_contains)
{
    ck_assert(ring_range_contains(10, 20, 11));
    ck_assert(ring_range_contains(10, 20, 20));
    ck_assert(!ring_range_contains(10, 20, 10));
    ck_assert(!ring_range_contains(10, 20, 21));
    /* Wrapping range. */
    ck_assert(ring_range_contains(UINT64_MAX - 5, 5, UINT64_MAX));
    ck_assert(ring_range_contains(UINT64_MAX - 5, 5, 0));
    ck_assert(ring_range_contains(UINT64_MAX - 5, 5, 5));
    ck_assert(!ring_range_contains(UINT64_MAX - 5, 5, UINT64_MAX - 5));
    ck_assert(!ring_range_contains(UINT64_MAX - 5, 5, 6));
    /* start == end is empty. */
    ck_assert(!ring_range_contains(7, 7, 7));
    ck_assert(!ring_range_contains(7, 7, 8));
}
END_TEST

/* ------------------------------------------------------ successor lists */

START_TEST(test_successor_lists)
{
    struct idset s;
    uint64_t seed = 5;

    for (size_t n = 1; n <= 12; n++) {
        make_ids(&s, 0, n);
        ring_t *r = build_ok(s.ids, n, 64);
        for (int i = 0; i < 2000; i++) {
            uint64_t key = rand_next(&seed);
            size_t out[MAX_NODES + 2];
            size_t got;

            /* N = 3 preference list: min(3, n) distinct nodes. */
            got = ring_successors(r, &key, sizeof(key), out, 3);
            REQUIRE(got == (n < 3 ? n : 3), "%zu nodes: N=3 gave %zu", n,
                    got);
            for (size_t a = 0; a < got; a++) {
                REQUIRE(out[a] < n && !contains(out, a, out[a]),
                        "bad or repeated node %zu", out[a]);
            }
            /* Asking for more than exist returns each node exactly once. */
            got = ring_successors(r, &key, sizeof(key), out, n + 2);
            REQUIRE(got == n, "%zu nodes: max %zu gave %zu", n, n + 2, got);
            int seen[MAX_NODES] = {0};
            for (size_t a = 0; a < got; a++) {
                REQUIRE(out[a] < n, "bad node %zu", out[a]);
                seen[out[a]]++;
            }
            for (size_t a = 0; a < n; a++) {
                REQUIRE(seen[a] == 1, "node %zu listed %d times", a,
                        seen[a]);
            }
            /* A shorter list is a prefix of the longer one. */
            size_t shorter[MAX_NODES];
            size_t k = n / 2 + 1;
            REQUIRE(ring_successors(r, &key, sizeof(key), shorter, k) == k &&
                        memcmp(shorter, out, k * sizeof(size_t)) == 0,
                    "the first %zu successors are not a prefix", k);
        }
        ring_free(r);
    }
}
END_TEST

/* -------------------------------------------------------------- balance */

START_TEST(test_balance)
{
    struct idset s;
    uint64_t *keys = make_keys(NKEYS, 1);
    double worst = 0.0;
    size_t worst_n = 0;

    make_ids(&s, 0, 16);
    for (size_t n = 3; n <= 16; n++) {
        ring_t *r = build_ok(s.ids, n, RING_DEFAULT_VNODES);
        size_t count[MAX_NODES] = {0};
        size_t max = 0;
        size_t min = NKEYS;
        for (size_t i = 0; i < NKEYS; i++) {
            count[primary(r, keys[i])]++;
        }
        for (size_t j = 0; j < n; j++) {
            max = count[j] > max ? count[j] : max;
            min = count[j] < min ? count[j] : min;
        }
        double mean = (double)NKEYS / (double)n;
        double ratio = (double)max / mean;
        report("ring balance: vnodes %u nodes %2zu keys %d: max/mean %.4f "
               "min/mean %.4f\n",
               RING_DEFAULT_VNODES, n, NKEYS, ratio, (double)min / mean);
        ck_assert_msg(ratio <= 1.10, "%zu nodes: max/mean %.4f > 1.10", n,
                      ratio);
        if (ratio > worst) {
            worst = ratio;
            worst_n = n;
        }
        ring_free(r);
    }
    report("ring balance: worst max/mean %.4f at %zu nodes (bound 1.10)\n",
           worst, worst_n);
    free(keys);
}
END_TEST

/* The same bound on exact shares for other naming schemes, so the default
 * is not tuned to one set of ids. */
START_TEST(test_balance_other_ids)
{
    struct idset s;
    double worst = 0.0;

    for (int scheme = 1; scheme <= 2; scheme++) {
        make_ids(&s, scheme, 16);
        for (size_t n = 3; n <= 16; n++) {
            ring_t *r = build_ok(s.ids, n, RING_DEFAULT_VNODES);
            for (size_t j = 0; j < n; j++) {
                double ratio = ring_ownership(r, j) * (double)n;
                ck_assert_msg(ratio <= 1.10,
                              "scheme %d, %zu nodes: node %zu owns %.4f of "
                              "the mean",
                              scheme, n, j, ratio);
                worst = ratio > worst ? ratio : worst;
            }
            ring_free(r);
        }
    }
    report("ring balance (ownership, 2 other id schemes, 3..16 nodes): "
           "worst max/mean %.4f (bound 1.10)\n", worst);
}
END_TEST

/* ------------------------------------------------------------- movement */

START_TEST(test_add_node)
{
    struct idset s;
    uint64_t *keys = make_keys(NKEYS, 2);
    double worst = 0.0;
    size_t worst_n = 0;
    size_t pref_changed_total = 0;

    make_ids(&s, 0, 16);
    for (size_t n = 3; n <= 15; n++) {
        ring_t *before = build_ok(s.ids, n, RING_DEFAULT_VNODES);
        ring_t *after = build_ok(s.ids, n + 1, RING_DEFAULT_VNODES);
        const size_t added = n; /* ids[n] is the new node */
        size_t moved = 0;
        size_t pref_changed = 0;

        for (size_t i = 0; i < NKEYS; i++) {
            size_t old3[3];
            size_t new3[3];
            size_t kept = 0;

            REQUIRE(ring_successors(before, &keys[i], 8, old3, 3) == 3 &&
                        ring_successors(after, &keys[i], 8, new3, 3) == 3,
                    "short preference list");
            if (old3[0] != new3[0]) {
                moved++;
                REQUIRE(new3[0] == added,
                              "key moved from %zu to %zu, not to the new "
                              "node %zu",
                              old3[0], new3[0], added);
            }
            /* The new list is the old one with the new node inserted
             * somewhere (and the last entry pushed out): old nodes keep
             * their relative order, none enters or leaves otherwise. */
            for (size_t a = 0; a < 3; a++) {
                if (new3[a] != added) {
                    REQUIRE(new3[a] == old3[kept],
                                  "preference list changed beyond the new "
                                  "node entering it");
                    kept++;
                }
            }
            if (kept < 3) {
                pref_changed++;
            }
        }
        double ideal = (double)NKEYS / (double)(n + 1);
        double ratio = (double)moved / ideal;
        report("ring add node: %2zu -> %2zu nodes: moved %6zu keys = %.4f "
               "of ideal 1/%zu, new node in %5.2f%% of N=3 lists\n",
               n, n + 1, moved, ratio, n + 1,
               100.0 * (double)pref_changed / NKEYS);
        ck_assert_msg(ratio <= 1.2, "%zu -> %zu nodes: moved %.4f x ideal",
                      n, n + 1, ratio);
        /* Ideally a newcomer enters 3/(n+1) of the N=3 lists. */
        ck_assert_double_le((double)pref_changed,
                            1.2 * 3.0 * (double)NKEYS / (double)(n + 1));
        if (ratio > worst) {
            worst = ratio;
            worst_n = n;
        }
        pref_changed_total += pref_changed;
        ring_free(before);
        ring_free(after);
    }
    report("ring add node: worst moved/ideal %.4f at %zu -> %zu nodes "
           "(bound 1.2); %zu preference lists changed in total\n",
           worst, worst_n, worst_n + 1, pref_changed_total);
    free(keys);
}
END_TEST

START_TEST(test_remove_node)
{
    struct idset s;
    struct idset rest;
    uint64_t *keys = make_keys(NKEYS / 2, 3);
    const size_t nkeys = NKEYS / 2;
    double worst = 0.0;

    make_ids(&s, 0, 16);
    for (size_t n = 4; n <= 16; n++) {
        const size_t victim = (3 * n) / 5; /* varies with n */
        ring_t *before = build_ok(s.ids, n, RING_DEFAULT_VNODES);
        size_t map[MAX_NODES]; /* index in `after` -> index in `before` */
        size_t m = 0;
        size_t moved = 0;
        size_t victim_keys = 0;

        for (size_t i = 0; i < n; i++) {
            if (i != victim) {
                rest.ids[m] = s.ids[i];
                map[m++] = i;
            }
        }
        ring_t *after = build_ok(rest.ids, m, RING_DEFAULT_VNODES);
        for (size_t i = 0; i < nkeys; i++) {
            size_t old4[4];
            size_t new3[3];
            REQUIRE(ring_successors(before, &keys[i], 8, old4, 4) == 4 &&
                        ring_successors(after, &keys[i], 8, new3, 3) == 3,
                    "short preference list");
            if (old4[0] == victim) {
                victim_keys++;
            }
            if (map[new3[0]] != old4[0]) {
                moved++;
                REQUIRE(old4[0] == victim,
                              "key moved off node %zu, not the removed %zu",
                              old4[0], victim);
            }
            /* The new preference list is the old one without the removed
             * node: its keys go to their old next-in-line. */
            for (size_t a = 0, b = 0; a < 3; a++, b++) {
                if (old4[b] == victim) {
                    b++;
                }
                REQUIRE(map[new3[a]] == old4[b],
                        "preference list changed beyond losing node %zu",
                        victim);
            }
        }
        ck_assert_uint_eq(moved, victim_keys);
        double ratio = (double)moved / ((double)nkeys / (double)n);
        worst = ratio > worst ? ratio : worst;
        report("ring remove node: %2zu -> %2zu nodes: moved %6zu keys, all "
               "from the removed node (%.4f of ideal 1/%zu)\n",
               n, m, moved, ratio, n);
        ring_free(before);
        ring_free(after);
    }
    report("ring remove node: worst moved/ideal %.4f\n", worst);
    free(keys);
}
END_TEST

/* ---------------------------------------------------------- determinism */

START_TEST(test_order_independent)
{
    struct idset s;
    const size_t n = 12;
    const char *reversed[MAX_NODES];
    const char *shuffled[MAX_NODES];
    uint64_t seed = 4;

    make_ids(&s, 2, n);
    for (size_t i = 0; i < n; i++) {
        reversed[i] = s.ids[n - 1 - i];
        shuffled[i] = s.ids[i];
    }
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)(rand_next(&seed) % (i + 1));
        const char *t = shuffled[i];
        shuffled[i] = shuffled[j];
        shuffled[j] = t;
    }
    ring_t *a = build_ok(s.ids, n, 256);
    ring_t *b = build_ok(reversed, n, 256);
    ring_t *c = build_ok(shuffled, n, 256);
    size_t compared = 0;

    for (int i = 0; i < 20000; i++) {
        uint64_t key = rand_next(&seed);
        size_t la[MAX_NODES];
        size_t lb[MAX_NODES];
        size_t lc[MAX_NODES];
        REQUIRE(ring_successors(a, &key, 8, la, n) == n &&
                    ring_successors(b, &key, 8, lb, n) == n &&
                    ring_successors(c, &key, 8, lc, n) == n,
                "short successor list");
        for (size_t k = 0; k < n; k++) {
            const char *ia = ring_node_id(a, la[k]);
            REQUIRE(strcmp(ia, ring_node_id(b, lb[k])) == 0 &&
                        strcmp(ia, ring_node_id(c, lc[k])) == 0,
                    "successor %zu differs between input orders", k);
            compared++;
        }
    }
    /* Same shares, bit for bit, under every order. */
    for (size_t i = 0; i < n; i++) {
        size_t jb;
        size_t jc;
        ck_assert_int_eq(ring_node_index(b, ring_node_id(a, i), &jb),
                         RING_OK);
        ck_assert_int_eq(ring_node_index(c, ring_node_id(a, i), &jc),
                         RING_OK);
        ck_assert(ring_ownership(a, i) == ring_ownership(b, jb));
        ck_assert(ring_ownership(a, i) == ring_ownership(c, jc));
    }
    report("ring determinism: %zu successor entries identical across 3 "
           "input orders\n", compared);
    ring_free(a);
    ring_free(b);
    ring_free(c);
}
END_TEST

/* ------------------------------------------------------------ ownership */

START_TEST(test_ownership)
{
    struct idset s;
    uint64_t *keys = make_keys(NKEYS, 6);
    double worst_dev = 0.0;
    double worst_sigma = 0.0;
    double worst_sum = 0.0;
    const size_t sizes[] = {2, 3, 5, 8, 13};
    const unsigned vn[] = {1, 7, 64, RING_DEFAULT_VNODES};

    make_ids(&s, 1, 13);
    for (size_t a = 0; a < sizeof(sizes) / sizeof(sizes[0]); a++) {
        for (size_t b = 0; b < sizeof(vn) / sizeof(vn[0]); b++) {
            size_t n = sizes[a];
            ring_t *r = build_ok(s.ids, n, vn[b]);
            size_t count[MAX_NODES] = {0};
            double sum = 0.0;
            for (size_t i = 0; i < NKEYS; i++) {
                count[primary(r, keys[i])]++;
            }
            for (size_t j = 0; j < n; j++) {
                double own = ring_ownership(r, j);
                double measured = (double)count[j] / NKEYS;
                REQUIRE(own >= 0.0 && own <= 1.0, "share %f", own);
                sum += own;
                /* With few vnodes a share can be tiny; its sampling error
                 * is about sqrt(share/NKEYS), so allow 5 sigma plus 3%. */
                double tol = 0.03 * own + 5.0 * root(own / NKEYS);
                double dev = measured - own;
                dev = dev < 0 ? -dev : dev;
                REQUIRE(dev <= tol,
                              "%zu nodes x %u vnodes: node %zu owns %.5f, "
                              "measured %.5f",
                              n, vn[b], j, own, measured);
                if (own > 0.01 && dev / own > worst_dev) {
                    worst_dev = dev / own;
                }
                if (own > 0.0 && own < 1.0) {
                    double sigma = root(own * (1.0 - own) / NKEYS);
                    if (dev / sigma > worst_sigma) {
                        worst_sigma = dev / sigma;
                    }
                }
            }
            double err = sum - 1.0;
            err = err < 0 ? -err : err;
            ck_assert_msg(err <= 1e-9, "shares sum to %.12f", sum);
            worst_sum = err > worst_sum ? err : worst_sum;
            ring_free(r);
        }
    }
    report("ring ownership: shares sum to 1 within %.2e; vs %d measured "
           "keys: worst relative gap %.2f%% (shares > 1%%), worst %.2f "
           "sigma\n",
           worst_sum, NKEYS, 100.0 * worst_dev, worst_sigma);
    free(keys);
}
END_TEST

/* --------------------------------------------------------------- ranges */

static int in_ranges(const uint64_t *s, const uint64_t *e, size_t cnt,
                     uint64_t p)
{
    int hits = 0;

    for (size_t i = 0; i < cnt; i++) {
        hits += ring_range_contains(s[i], e[i], p);
    }
    REQUIRE(hits <= 1, "ranges overlap at %llx", (unsigned long long)p);
    return hits;
}

START_TEST(test_ranges_for)
{
    struct idset s;
    uint64_t seed = 9;
    const size_t sizes[] = {2, 5, 8};
    const size_t reps[] = {1, 2, 3, 5, 9};
    size_t total_ranges = 0;
    size_t checked = 0;
    double worst_cover = 0.0;

    make_ids(&s, 0, 8);
    for (size_t a = 0; a < sizeof(sizes) / sizeof(sizes[0]); a++) {
        size_t n = sizes[a];
        ring_t *r = build_ok(s.ids, n, 128);
        for (size_t b = 0; b < sizeof(reps) / sizeof(reps[0]); b++) {
            size_t rf = reps[b];
            size_t want = rf < n ? rf : n;
            uint64_t *st[MAX_NODES];
            uint64_t *en[MAX_NODES];
            size_t cnt[MAX_NODES];
            double cover = 0.0;

            for (size_t j = 0; j < n; j++) {
                cnt[j] = ring_ranges_for(r, j, rf, &st[j], &en[j]);
                ck_assert_uint_gt(cnt[j], 0);
                total_ranges += cnt[j];
                for (size_t k = 0; k < cnt[j]; k++) {
                    uint64_t len = en[j][k] - st[j][k];
                    size_t out[MAX_NODES];
                    REQUIRE(len != 0, "empty range");
                    cover += (double)len * 0x1p-64;
                    /* The boundaries are exact: end is in, and for a
                     * node that does not hold everything, start is not
                     * (it is the end of an arc it does not replicate),
                     * nor is end + 1 (ranges are maximal). */
                    ring_successors_at(r, en[j][k], out, want);
                    REQUIRE(contains(out, want, j), "end not included");
                    ring_successors_at(r, st[j][k] + 1, out, want);
                    REQUIRE(contains(out, want, j), "start+1 not included");
                    if (want < n) {
                        ring_successors_at(r, st[j][k], out, want);
                        REQUIRE(!contains(out, want, j), "start included");
                        ring_successors_at(r, en[j][k] + 1, out, want);
                        REQUIRE(!contains(out, want, j), "end+1 included");
                    }
                }
            }
            /* Every point is replicated by exactly `want` nodes. */
            double err = cover - (double)want;
            err = err < 0 ? -err : err;
            ck_assert_msg(err < 1e-9, "ranges cover %.12f, want %zu", cover,
                          want);
            worst_cover = err > worst_cover ? err : worst_cover;
            /* Random keys: j holds the key iff its point is in j's ranges. */
            for (int i = 0; i < 3000; i++) {
                uint64_t key = rand_next(&seed);
                uint64_t p = ring_hash_key(&key, sizeof(key));
                size_t out[MAX_NODES];
                REQUIRE(ring_successors(r, &key, 8, out, rf) == want,
                        "short successor list");
                for (size_t j = 0; j < n; j++) {
                    REQUIRE(contains(out, want, j) ==
                                in_ranges(st[j], en[j], cnt[j], p),
                            "%zu nodes, N=%zu: node %zu membership of %llx "
                            "disagrees with its ranges",
                            n, rf, j, (unsigned long long)p);
                    checked++;
                }
            }
            for (size_t j = 0; j < n; j++) {
                free(st[j]);
                free(en[j]);
            }
        }
        ring_free(r);
    }
    report("ring ranges_for: %zu ranges, %zu key/node memberships agree, "
           "coverage error %.2e\n", total_ranges, checked, worst_cover);
}
END_TEST

/* ---------------------------------------------------------------- suite */

/* Also declared in check_kvdist.h; repeated here so this file builds on its
 * own (-Wmissing-prototypes) with nothing but lib/ on the include path. */
Suite *ring_suite(void);

Suite *ring_suite(void)
{
    Suite *s = suite_create("ring");
    TCase *api = tcase_create("api");
    TCase *stats = tcase_create("distribution");

    tcase_add_test(api, test_bad_input);
    tcase_add_test(api, test_ids_copied_and_indexed);
    tcase_add_test(api, test_placement_matches_model);
    tcase_add_test(api, test_large_cluster);
    tcase_add_test(api, test_single_position);
    tcase_add_test(api, test_range_contains);
    tcase_add_test(api, test_successor_lists);
    tcase_add_test(api, test_order_independent);
    tcase_add_test(api, test_ranges_for);
    tcase_set_timeout(api, 120);
    suite_add_tcase(s, api);

    tcase_add_test(stats, test_balance);
    tcase_add_test(stats, test_balance_other_ids);
    tcase_add_test(stats, test_add_node);
    tcase_add_test(stats, test_remove_node);
    tcase_add_test(stats, test_ownership);
    tcase_set_timeout(stats, 120);
    suite_add_tcase(s, stats);
    return s;
}
