/*
 * check_aae.c - Merkle-tree anti-entropy and tombstone garbage collection:
 * the tree itself (in process), then real kvdistd processes whose replicas
 * are diverged on purpose (a node killed while writes go on, concurrent
 * writes on both sides of a split, a damaged saved tree) and brought back
 * together by `kv_repair`. Convergence is checked on each node's local
 * bytes and on equal Merkle roots, and the cost of an exchange is measured
 * against the number of differing keys.
 */
#include "check_kvdist.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include "aae.h"
#include "codec.h"
#include "kvdist.h"
#include "merkle.h"
#include "object.h"
#include "ring.h"
#include "store.h"
#include "wire.h"

/* ------------------------------------------------------------ the tree */

START_TEST(test_merkle_order_and_toggle)
{
    merkle_t *a = merkle_new();
    merkle_t *b = merkle_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    char key[32];
    /* The same entries in opposite orders give the same root. */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        merkle_toggle(a, merkle_leaf_of(ring_hash_key(key, strlen(key))),
                      merkle_entry(key, strlen(key), (uint64_t)i));
    }
    for (int i = 4999; i >= 0; i--) {
        snprintf(key, sizeof(key), "k%d", i);
        merkle_toggle(b, merkle_leaf_of(ring_hash_key(key, strlen(key))),
                      merkle_entry(key, strlen(key), (uint64_t)i));
    }
    ck_assert_uint_ne(merkle_node(a, 0, 0), 0);
    ck_assert_uint_eq(merkle_node(a, 0, 0), merkle_node(b, 0, 0));
    /* One changed digest: exactly one node differs at every level, on the
     * path of that key's leaf. */
    const char *k = "k1234";
    uint32_t leaf = merkle_leaf_of(ring_hash_key(k, strlen(k)));
    merkle_toggle(b, leaf,
                  merkle_entry(k, strlen(k), 1234) ^
                      merkle_entry(k, strlen(k), 99));
    for (unsigned level = 0; level <= MERKLE_DEPTH; level++) {
        uint32_t differ = 0;
        uint32_t where = 0;
        for (uint32_t i = 0; i < merkle_width(level); i++) {
            if (merkle_node(a, level, i) != merkle_node(b, level, i)) {
                differ++;
                where = i;
            }
        }
        ck_assert_uint_eq(differ, 1);
        ck_assert_uint_eq(where, leaf >> (4 * (MERKLE_DEPTH - level)));
    }
    /* Toggling back restores equality. */
    merkle_toggle(b, leaf,
                  merkle_entry(k, strlen(k), 1234) ^
                      merkle_entry(k, strlen(k), 99));
    ck_assert_uint_eq(merkle_node(a, 0, 0), merkle_node(b, 0, 0));
    merkle_free(a);
    merkle_free(b);
}
END_TEST

START_TEST(test_merkle_save_load)
{
    merkle_t *a = merkle_new();
    for (int i = 0; i < 1000; i++) {
        merkle_toggle(a, (uint32_t)(i * 37) % MERKLE_LEAVES,
                      merkle_entry(&i, sizeof(i), 7));
    }
    buf_t b;
    buf_init(&b);
    merkle_save(a, &b);
    ck_assert_uint_eq(b.len, 8u * MERKLE_LEAVES);
    merkle_t *c = merkle_new();
    rd_t r;
    rd_init(&r, b.p, b.len);
    ck_assert_int_eq(merkle_load(c, &r), 0);
    for (unsigned level = 0; level <= MERKLE_DEPTH; level++) {
        for (uint32_t i = 0; i < merkle_width(level); i += 97) {
            ck_assert_uint_eq(merkle_node(a, level, i),
                              merkle_node(c, level, i));
        }
    }
    /* A truncated leaf level is refused. */
    merkle_t *d = merkle_new();
    rd_init(&r, b.p, b.len - 1);
    ck_assert_int_eq(merkle_load(d, &r), KV_ECORRUPT);
    buf_free(&b);
    merkle_free(a);
    merkle_free(c);
    merkle_free(d);
}
END_TEST

/* An embedded store is a one-node cluster: it is the only replica of
 * every key, so its tombstones go once the grace period has passed. */
START_TEST(test_embedded_tombstone_gc)
{
    char *dir = util_tmpdir("aae-embedded");
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "tombstone_grace_ms", "300"), 0);
    ck_assert_int_eq(kv_options_set(o, "aae_interval_ms", "100"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    ck_assert_int_eq(kv_put(kv, "gone", 4, "v", 1), 0);
    ck_assert_int_eq(kv_put(kv, "kept", 4, "v", 1), 0);
    ck_assert_int_eq(kv_delete(kv, "gone", 4), 0);
    /* The tombstone is there at first: a context-carrying read sees it. */
    kv_siblings_t *s = NULL;
    size_t clen = 0;
    ck_assert_int_eq(kv_get_siblings(kv, "gone", 4, NULL, &s), 0);
    ck_assert_ptr_nonnull(kv_siblings_context(s, &clen));
    size_t tomb_clen = clen;
    kv_siblings_free(s);
    int64_t deadline = harness_now_ms() + 20000;
    uint64_t purged = 0;
    while (purged == 0) {
        ck_assert_msg(harness_now_ms() < deadline, "tombstone never purged");
        harness_sleep_ms(20);
        ck_assert_int_eq(kv_stat(kv, "kvdist_tombstones_purged_total", &purged),
                         0);
    }
    ck_assert_uint_eq(purged, 1);
    /* Gone entirely (its context no longer names the delete's dot), and
     * the live key untouched. */
    ck_assert_int_eq(kv_get_siblings(kv, "gone", 4, NULL, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 0);
    (void)kv_siblings_context(s, &clen);
    ck_assert_uint_lt(clen, tomb_clen);
    kv_siblings_free(s);
    void *v = NULL;
    size_t vlen = 0;
    ck_assert_int_eq(kv_get(kv, "kept", 4, &v, &vlen), 0);
    kv_free(v);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------- test helpers */

static const char *const quiet_flags[] = {
    "--hinted-handoff", "off", "--sloppy-quorum", "off",
    /* no background passes: each test starts the ones it measures */
    "--aae-interval-ms", "86400000",
    /* a replica write a dead node missed times out after this long */
    "--timeout-ms", "2000", NULL};

/* The object bytes node url holds for key: -1 no answer, 0 absent, 1
 * present (*obj malloc'd). */
static int local_raw(const char *url, const char *key, uint8_t **obj,
                     size_t *len)
{
    *obj = NULL;
    *len = 0;
    buf_t b;
    buf_init(&b);
    wire_build_key(&b, WIRE_LOCAL_GET, 1, key, strlen(key));
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 3000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    wire_msg_t m;
    int rc = -1;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                    &harness_big_limits, &m) == 0 &&
        m.status == 0) {
        rc = m.objlen > 0;
        if (rc) {
            *obj = malloc(m.objlen);
            memcpy(*obj, m.obj, m.objlen);
            *len = m.objlen;
        }
    }
    nng_msg_free(reply);
    return rc;
}

/* Live siblings of node url's local object for key (-1: absent), values
 * sorted into vals (a NUL-separated list). */
static int local_live(const char *url, const char *key, char *vals,
                      size_t size)
{
    uint8_t *p;
    size_t len;
    int rc = local_raw(url, key, &p, &len);
    ck_assert_int_ge(rc, 0);
    if (rc == 0) {
        return -1;
    }
    obj_t o;
    obj_init(&o);
    obj_limits_t lim = {1 << 24, 1024, 4096};
    ck_assert_int_eq(obj_decode(p, len, &lim, &o), 0);
    free(p);
    int live = 0;
    size_t at = 0;
    if (vals != NULL) {
        vals[0] = '\0';
    }
    for (size_t i = 0; i < o.n; i++) {
        if (o.sib[i].flags & OBJ_SIB_TOMBSTONE) {
            continue;
        }
        live++;
        if (vals != NULL && at + o.sib[i].vlen + 2 < size) {
            at += (size_t)snprintf(vals + at, size - at, "%s%.*s",
                                   at ? "," : "", (int)o.sib[i].vlen,
                                   (const char *)o.sib[i].val);
        }
    }
    obj_free(&o);
    return live;
}

/* Each range's (group, root) as node url reports them; returns the count. */
static size_t node_roots(const char *url, uint64_t *gid, uint64_t *root,
                         size_t max)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, WIRE_AE, 1, 0, AAE_OP_STATUS);
    wire_put_bytes(&b, NULL, 0);
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 3000);
    buf_free(&b);
    ck_assert_ptr_nonnull(reply);
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                                 &harness_big_limits, &m),
                     0);
    ck_assert_int_eq(m.status, 0);
    rd_t r;
    rd_init(&r, m.obj, m.objlen);
    (void)rd_u8(&r);
    for (int i = 0; i < 7; i++) {
        (void)rd_varint(&r);
    }
    (void)rd_u64(&r);
    uint64_t n = rd_varint(&r);
    ck_assert(!r.err && n <= max);
    for (uint64_t i = 0; i < n; i++) {
        gid[i] = rd_u64(&r);
        root[i] = rd_u64(&r);
    }
    ck_assert(!r.err && rd_left(&r) == 0);
    nng_msg_free(reply);
    return (size_t)n;
}

/* Whether every pair of running nodes agrees on the root of every range
 * both replicate (and they share at least one). */
static int roots_agree(harness_t *h)
{
    uint64_t gid[HARNESS_MAX_NODES][64], root[HARNESS_MAX_NODES][64];
    size_t n[HARNESS_MAX_NODES] = {0};
    for (int i = 0; i < h->nnodes; i++) {
        if (h->node[i].pid > 0) {
            n[i] = node_roots(h->node[i].url, gid[i], root[i], 64);
        }
    }
    int shared = 0;
    for (int i = 0; i < h->nnodes; i++) {
        for (int j = i + 1; j < h->nnodes; j++) {
            for (size_t a = 0; a < n[i]; a++) {
                for (size_t b = 0; b < n[j]; b++) {
                    if (gid[i][a] != gid[j][b]) {
                        continue;
                    }
                    shared++;
                    if (root[i][a] != root[j][b]) {
                        return 0;
                    }
                }
            }
        }
    }
    return shared > 0;
}

static void wait_trees_ready(kv_t *c, const char *node)
{
    int64_t deadline = harness_now_ms() + 60000;
    for (;;) {
        kv_repair_status_t st;
        int rc = kv_repair_status(c, node, &st);
        if (rc == 0 && st.trees_ready) {
            return;
        }
        ck_assert_msg(harness_now_ms() < deadline,
                      "%s: trees not ready within 60 s (rc %d)", node, rc);
        harness_sleep_ms(20);
    }
}

/* Runs one full anti-entropy pass on node and waits for its end. */
static void repair(kv_t *c, const char *node)
{
    wait_trees_ready(c, node);
    kv_repair_status_t st;
    ck_assert_int_eq(kv_repair_status(c, node, &st), 0);
    uint64_t want = st.passes + (st.running ? 2 : 1);
    ck_assert_int_eq(kv_repair(c, node), 0);
    int64_t deadline = harness_now_ms() + 90000;
    for (;;) {
        ck_assert_int_eq(kv_repair_status(c, node, &st), 0);
        if (st.passes >= want) {
            return;
        }
        ck_assert_msg(harness_now_ms() < deadline,
                      "%s: repair pass not done within 90 s", node);
        harness_sleep_ms(20);
    }
}

static void put_str(kv_t *c, const char *key, const char *val)
{
    int rc = kv_put(c, key, strlen(key), val, strlen(val));
    ck_assert_msg(rc == 0, "put %s: %s", key, kv_strerror(rc));
}

/* Whether every running node holds exactly the same bytes for key. */
static int same_everywhere(harness_t *h, const char *key)
{
    uint8_t *first = NULL;
    size_t flen = 0;
    int have = -2;
    int same = 1;
    for (int i = 0; i < h->nnodes && same; i++) {
        if (h->node[i].pid <= 0) {
            continue;
        }
        uint8_t *p;
        size_t len;
        int rc = local_raw(h->node[i].url, key, &p, &len);
        ck_assert_int_ge(rc, 0);
        if (have == -2) {
            have = rc;
            first = p;
            flen = len;
            continue;
        }
        same = rc == have && len == flen && (len == 0 || memcmp(p, first, len) == 0);
        free(p);
    }
    free(first);
    return same;
}

/* ------------------------------------------------- diverge, converge */

START_TEST(test_converge_after_missed_writes)
{
    harness_t *h = harness_create(3);
    h->n = 3;
    h->w = 2;
    harness_start_all(h, quiet_flags);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000); /* see the lapse below */
    char key[32], val[64];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        snprintf(val, sizeof(val), "v1-%d", i);
        put_str(c, key, val);
    }
    /* n3 misses overwrites, new keys and deletes: no hints, no fallbacks,
     * and nobody reads, so only anti-entropy can bring them. */
    harness_kill(h, 2);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    for (int i = 20; i < 60; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        snprintf(val, sizeof(val), "v2-%d", i);
        put_str(c, key, val);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        ck_assert_int_eq(kv_delete(c, key, strlen(key)), 0);
    }
    /* NNG would still deliver a replica write queued for n3 if n3 came
     * back before that write's deadline (the client's 2 s, which the
     * coordinator applies to its replica writes): let them lapse. */
    int64_t lapse = harness_now_ms() + 2500;
    while (harness_now_ms() < lapse) {
        harness_sleep_ms(50);
    }
    harness_start(h, 2, quiet_flags);
    harness_wait_converged(h);
    harness_wait_status(c, "n3", KV_MEMBER_UP);
    char got[256];
    ck_assert_int_eq(local_live(h->node[2].url, "k45", NULL, 0), -1);
    ck_assert_int_eq(local_live(h->node[2].url, "k25", got, sizeof(got)), 1);
    ck_assert_str_eq(got, "v1-25");
    wait_trees_ready(c, "n1");
    wait_trees_ready(c, "n3");
    ck_assert(!roots_agree(h));

    repair(c, "n3");
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        ck_assert_msg(same_everywhere(h, key), "%s differs after repair", key);
    }
    ck_assert_int_eq(local_live(h->node[2].url, "k45", got, sizeof(got)), 1);
    ck_assert_str_eq(got, "v2-45");
    ck_assert_int_eq(local_live(h->node[2].url, "k02", NULL, 0), 0);
    ck_assert(roots_agree(h));
    /* 20 new keys, 20 overwrites, 5 deletes came to n3. */
    ck_assert_int_ge(harness_remote_stat(h->node[2].url,
                                         "kvdist_aae_keys_repaired_total"),
                     45);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* A COORD_PUT straight to one node with w=1: it coordinates alone. */
static void put_at(const char *url, const char *key, const char *val)
{
    buf_t b;
    buf_init(&b);
    wire_build_coord_put(&b, 7, 0, key, strlen(key), val, strlen(val), NULL, 0,
                         1, 500, 0);
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 5000);
    buf_free(&b);
    ck_assert_ptr_nonnull(reply);
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                                 &harness_big_limits, &m),
                     0);
    ck_assert_int_eq(m.status, 0);
    nng_msg_free(reply);
}

START_TEST(test_concurrent_sides_become_siblings)
{
    harness_t *h = harness_create(2);
    h->n = 2;
    h->w = 1;
    h->r = 1;
    harness_start_all(h, quiet_flags);
    harness_wait_converged(h);
    /* Each side of the split writes while the other is down. */
    harness_kill(h, 1);
    put_at(h->node[0].url, "split", "left");
    harness_kill(h, 0);
    harness_start(h, 1, quiet_flags);
    put_at(h->node[1].url, "split", "right");
    /* NNG would deliver the replica write queued for n1 if n1 came back
     * before the write's 500 ms deadline: let it lapse. */
    int64_t lapse = harness_now_ms() + 800;
    while (harness_now_ms() < lapse) {
        harness_sleep_ms(20);
    }
    harness_start(h, 0, quiet_flags);
    harness_wait_converged(h);
    char got[256];
    ck_assert_int_eq(local_live(h->node[0].url, "split", got, sizeof(got)), 1);
    ck_assert_str_eq(got, "left");
    ck_assert_int_eq(local_live(h->node[1].url, "split", got, sizeof(got)), 1);
    ck_assert_str_eq(got, "right");

    kv_t *c = harness_client(h, 5000);
    repair(c, "n1");
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(local_live(h->node[i].url, "split", got, sizeof(got)),
                         2);
        ck_assert_msg(strcmp(got, "left,right") == 0 ||
                          strcmp(got, "right,left") == 0,
                      "n%d holds %s", i + 1, got);
    }
    ck_assert(same_everywhere(h, "split"));
    ck_assert(roots_agree(h));
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* ------------------------------------------------- the cost of a sync */

#define COST_KEYS 100000

static void cost_key(char *key, size_t size, int i)
{
    snprintf(key, size, "key%06d", i);
}

/* Writes `count` keys starting at `first` (stride `stride`) into the store
 * at dir through an embedded handle: what a node would hold. */
static void embedded_write(const char *dir, int first, int stride, int count,
                           const char *tag)
{
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "sync", "none"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    char key[32], val[128];
    memset(val, 'x', 100);
    for (int i = 0; i < count; i++) {
        int k = (first + i * stride) % COST_KEYS;
        cost_key(key, sizeof(key), k);
        int n = snprintf(val, sizeof(val), "%s-%d-", tag, k);
        val[n] = 'x';
        ck_assert_int_eq(kv_put(kv, key, strlen(key), val, 100), 0);
    }
    kv_close(kv);
}

START_TEST(test_exchange_cost)
{
    harness_t *h = harness_create(2);
    h->n = 2;
    h->w = 2;
    /* Both replicas start from one store written once: identical. */
    embedded_write(h->node[0].data, 0, 1, COST_KEYS, "base");
    util_copytree(h->node[0].data, h->node[1].data);
    static const int ds[] = {0, 10, 100, 1000};
    for (size_t round = 0; round < sizeof(ds) / sizeof(ds[0]); round++) {
        int d = ds[round];
        if (d > 0) {
            /* d keys change on n2 only, spread over the key space. */
            char tag[16];
            snprintf(tag, sizeof(tag), "r%zu", round);
            embedded_write(h->node[1].data, (int)round * 7, 97, d, tag);
        }
        harness_start_all(h, quiet_flags);
        harness_wait_converged(h);
        kv_t *c = harness_client(h, 5000);
        wait_trees_ready(c, "n1");
        wait_trees_ready(c, "n2");
        int64_t t0 = harness_now_ms();
        repair(c, "n1");
        int64_t took = harness_now_ms() - t0;
        const char *url = h->node[0].url;
        long long ex = harness_remote_stat(url, "kvdist_aae_exchanges_total");
        long long nodes = harness_remote_stat(url, "kvdist_aae_tree_nodes_total");
        long long keys =
            harness_remote_stat(url, "kvdist_aae_keys_compared_total");
        long long objs =
            harness_remote_stat(url, "kvdist_aae_objects_sent_total");
        long long bytes = harness_remote_stat(url, "kvdist_aae_bytes_sent_total");
        printf("aae cost: n=%d d=%d: %lld exchange(s), %lld tree hashes, "
               "%lld keys compared, %lld objects moved, %lld request bytes, "
               "%lld ms\n",
               COST_KEYS, d, ex, nodes, keys, objs, bytes, (long long)took);
        ck_assert_int_eq(ex, 1);
        if (d == 0) {
            /* Identical replicas: the root, nothing else. */
            ck_assert_int_eq(nodes, 1);
            ck_assert_int_eq(keys, 0);
            ck_assert_int_eq(objs, 0);
        } else {
            /* Every differing key moves once (n2's newer object comes to
             * n1; n2 already has the result, so nothing goes back). */
            ck_assert_int_ge(objs, d);
            ck_assert_int_le(objs, 2 * d);
            /* Leaves hold ~1.5 keys here: keys listed stay O(d). */
            ck_assert_int_le(keys, 4 * d + 16);
            /* At most 16 hashes per differing node per level. */
            ck_assert_int_le(nodes, 1 + 16LL * d * MERKLE_DEPTH);
        }
        ck_assert(roots_agree(h));
        kv_close(c);
        harness_stop_all(h);
    }
    harness_destroy(h);
}
END_TEST

/* --------------------------------------------------------- tombstones */

static int local_state(harness_t *h, int i, const char *key)
{
    char got[64];
    return local_live(h->node[i].url, key, got, sizeof(got));
}

/* One full pass on every node of h, one node after the other. */
static void repair_all(kv_t *c, harness_t *h)
{
    for (int i = 0; i < h->nnodes; i++) {
        repair(c, h->node[i].id);
    }
}

/* No node of h holds anything for key, not even a tombstone. */
static void assert_absent_everywhere(harness_t *h, const char *key)
{
    for (int i = 0; i < h->nnodes; i++) {
        uint8_t *p;
        size_t len;
        ck_assert_int_eq(local_raw(h->node[i].url, key, &p, &len), 0);
    }
}

START_TEST(test_tombstone_gc_no_resurrection)
{
    harness_t *h = harness_create(3);
    h->n = 3;
    h->w = 2;
    h->r = 2;
    static const char *const flags[] = {"--hinted-handoff",
                                        "off",
                                        "--sloppy-quorum",
                                        "off",
                                        "--aae-interval-ms",
                                        "86400000",
                                        "--tombstone-grace-ms",
                                        "1500",
                                        "--timeout-ms",
                                        "2000",
                                        NULL};
    harness_start_all(h, flags);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000); /* see the lapse below */
    const char *key = "doomed";
    kv_call_t all = KV_CALL_INIT;
    all.w = 3;
    ck_assert_int_eq(kv_put_ctx(c, key, strlen(key), "alive", 5, NULL, 0, &all),
                     0);
    /* Delete while n3 is down; let the grace period pass. */
    harness_kill(h, 2);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    ck_assert_int_eq(kv_delete(c, key, strlen(key)), 0);
    /* Past the grace period, and past the deadline (the client's 2 s) of
     * the replica write for n3 that NNG still holds, so n3 really misses
     * the delete. */
    int64_t deleted = harness_now_ms();
    while (harness_now_ms() < deleted + 2500) {
        harness_sleep_ms(50);
    }
    /* The sweeps cannot purge: n3 cannot confirm it holds the delete. */
    repair(c, "n1");
    repair(c, "n2");
    ck_assert_int_eq(local_state(h, 0, key), 0); /* a tombstone */
    ck_assert_int_eq(local_state(h, 1, key), 0);
    ck_assert_int_eq(harness_remote_stat(h->node[0].url,
                                         "kvdist_tombstones_purged_total"),
                     0);

    /* n3 comes back with its old copy, still "alive". */
    harness_start(h, 2, flags);
    harness_wait_converged(h);
    harness_wait_status(c, "n3", KV_MEMBER_UP);
    ck_assert_int_eq(local_state(h, 2, key), 1);
    repair(c, "n3");
    ck_assert_int_eq(local_state(h, 2, key), 0);
    kv_call_t strong = KV_CALL_INIT;
    strong.r = 3;
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(c, key, strlen(key), &strong, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 0);
    kv_siblings_free(s);

    /* Now every replica holds it: the first owner's sweep purges it
     * everywhere (each node runs a pass; only the first owner acts). */
    repair_all(c, h);
    assert_absent_everywhere(h, key);
    ck_assert_int_eq(harness_sum_stat(h, "kvdist_tombstones_purged_total"), 3);
    /* And it stays gone through more anti-entropy and a strong read. */
    repair_all(c, h);
    assert_absent_everywhere(h, key);
    void *v = NULL;
    size_t vlen = 0;
    ck_assert_int_eq(kv_get(c, key, strlen(key), &v, &vlen), KV_ENOTFOUND);
    ck_assert(roots_agree(h));
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* A hint older than the grace period is dropped, never delivered: the
 * owner may have purged a later delete of the key in the meantime. */
START_TEST(test_expired_hints_dropped)
{
    harness_t *h = harness_create(3);
    h->n = 3;
    h->w = 2;
    static const char *const flags[] = {"--sloppy-quorum", "off",
                                        "--aae-interval-ms", "86400000",
                                        "--tombstone-grace-ms", "1000",
                                        "--timeout-ms", "2000", NULL};
    harness_start_all(h, flags);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000);
    harness_kill(h, 2);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    put_str(c, "late", "v");
    /* The coordinator keeps the hint once its call to n3 has failed,
     * which may be after the client has its answer. */
    long long stored = 0;
    int64_t hinted_by = harness_now_ms() + 10000;
    while (stored < 1) {
        ck_assert_msg(harness_now_ms() < hinted_by, "no hint stored for n3");
        harness_sleep_ms(20);
        stored = harness_sum_stat(h, "kvdist_hints_stored_total");
    }
    /* Past the grace period (and the write's 2 s deadline) before n3 is
     * back and its hint could go out. */
    int64_t lapse = harness_now_ms() + 2500;
    while (harness_now_ms() < lapse) {
        harness_sleep_ms(50);
    }
    harness_start(h, 2, flags);
    harness_wait_converged(h);
    int64_t deadline = harness_now_ms() + 20000;
    long long expired = 0;
    while (expired < stored) {
        ck_assert_msg(harness_now_ms() < deadline, "hints not dropped");
        harness_sleep_ms(50);
        expired = harness_sum_stat(h, "kvdist_hints_expired_total");
    }
    ck_assert_int_eq(harness_sum_stat(h, "kvdist_hints_delivered_total"), 0);
    uint8_t *p;
    size_t len;
    ck_assert_int_eq(local_raw(h->node[2].url, "late", &p, &len), 0);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* ------------------------------------------------- a damaged saved tree */

/* Replaces the trees node i saved at its clean close by damaged bytes. */
static void damage_saved_trees(harness_t *h, int i, int truncate_it)
{
    store_config_t sc = {h->node[i].data, STORE_SYNC_WAL, 1 << 20};
    kvlog_t log = {NULL, NULL, 0, NULL};
    store_t *st = NULL;
    ck_assert_int_eq(store_open(&sc, &log, &st), 0);
    void *raw = NULL;
    size_t len = 0;
    ck_assert_int_eq(store_get(st, STORE_CF_META, "aae.trees", 9, &raw, &len),
                     0);
    ck_assert_uint_gt(len, 1000);
    if (truncate_it) {
        len /= 2;
    } else {
        ((uint8_t *)raw)[len / 2] ^= 0x40;
    }
    ck_assert_int_eq(store_put(st, STORE_CF_META, "aae.trees", 9, raw, len), 0);
    free(raw);
    store_close(st);
}

START_TEST(test_damaged_saved_tree_rebuilt)
{
    harness_t *h = harness_create(2);
    h->n = 2;
    h->w = 2;
    harness_start_all(h, quiet_flags);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 5000);
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "t%03d", i);
        put_str(c, key, "v");
    }
    wait_trees_ready(c, "n1");
    kv_close(c);
    /* A clean stop and start: the saved trees are used as they are. */
    harness_stop(h, 0);
    harness_start(h, 0, quiet_flags);
    c = harness_client(h, 5000);
    wait_trees_ready(c, "n1");
    ck_assert_int_eq(harness_remote_stat(h->node[0].url,
                                         "kvdist_aae_tree_loads_total"),
                     1);
    ck_assert_int_eq(harness_remote_stat(h->node[0].url,
                                         "kvdist_aae_tree_rebuilds_total"),
                     0);
    kv_close(c);
    for (int variant = 0; variant < 2; variant++) {
        harness_stop(h, 0);
        damage_saved_trees(h, 0, variant == 0);
        harness_start(h, 0, quiet_flags);
        harness_wait_converged(h);
        c = harness_client(h, 5000);
        wait_trees_ready(c, "n1");
        const char *url = h->node[0].url;
        ck_assert_int_eq(
            harness_remote_stat(url, "kvdist_aae_tree_corrupt_total"), 1);
        ck_assert_int_eq(harness_remote_stat(url, "kvdist_aae_tree_loads_total"),
                         0);
        ck_assert_int_eq(
            harness_remote_stat(url, "kvdist_aae_tree_rebuilds_total"), 1);
        /* The rebuilt tree matches the other replica's exactly. */
        repair(c, "n1");
        ck_assert(roots_agree(h));
        ck_assert_int_eq(
            harness_remote_stat(url, "kvdist_aae_objects_sent_total"), 0);
        kv_close(c);
    }
    harness_destroy(h);
}
END_TEST

Suite *aae_suite(void)
{
    Suite *s = suite_create("aae");
    TCase *t = tcase_create("merkle");
    tcase_add_test(t, test_merkle_order_and_toggle);
    tcase_add_test(t, test_merkle_save_load);
    tcase_add_test(t, test_embedded_tombstone_gc);
    suite_add_tcase(s, t);
    t = tcase_create("multiprocess");
    tcase_set_timeout(t, 240);
    tcase_add_test(t, test_converge_after_missed_writes);
    tcase_add_test(t, test_concurrent_sides_become_siblings);
    tcase_add_test(t, test_tombstone_gc_no_resurrection);
    tcase_add_test(t, test_damaged_saved_tree_rebuilt);
    tcase_add_test(t, test_expired_hints_dropped);
    tcase_add_test(t, test_exchange_cost);
    suite_add_tcase(s, t);
    return s;
}
