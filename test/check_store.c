/*
 * check_store.c - the embedded one-node store through the public API:
 * put/get/delete, persistence across reopen, binary keys, limits and bad
 * arguments, siblings and contexts, the resolver, a data dir restored from
 * an old copy (riak_kv#679), corrupt stored objects, crash durability with
 * SIGKILL, and many threads sharing one handle.
 */
#include "check_kvdist.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvdist.h"
#include "replica.h"
#include "store.h"

static kv_t *open_node(const char *dir, const char *sync)
{
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "cache_size", "8MiB"), 0);
    if (sync != NULL) {
        ck_assert_int_eq(kv_options_set(o, "sync", sync), 0);
    }
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    return kv;
}

static void expect_value(kv_t *kv, const void *k, size_t kl, const void *v,
                         size_t vl)
{
    void *got = NULL;
    size_t len = 0;
    int rc = kv_get(kv, k, kl, &got, &len);
    ck_assert_msg(rc == 0, "get: %s", kv_strerror(rc));
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, vl);
    ck_assert_int_eq(memcmp(got, v, vl), 0);
    kv_free(got);
}

static void expect_absent(kv_t *kv, const void *k, size_t kl)
{
    void *got = (void *)1;
    size_t len = 7;
    ck_assert_int_eq(kv_get(kv, k, kl, &got, &len), KV_ENOTFOUND);
    ck_assert_ptr_null(got);
    ck_assert_uint_eq(len, 0);
}

START_TEST(test_put_get_delete_reopen)
{
    char *dir = util_tmpdir("store");
    kv_t *kv = open_node(dir, NULL);
    expect_absent(kv, "a", 1);
    ck_assert_int_eq(kv_put(kv, "a", 1, "one", 3), 0);
    expect_value(kv, "a", 1, "one", 3);
    ck_assert_int_eq(kv_put(kv, "a", 1, "two", 3), 0); /* overwrite */
    expect_value(kv, "a", 1, "two", 3);
    ck_assert_int_eq(kv_put(kv, "empty", 5, "", 0), 0); /* empty value */
    expect_value(kv, "empty", 5, "", 0);
    ck_assert_int_eq(kv_put(kv, "gone", 4, "x", 1), 0);
    ck_assert_int_eq(kv_delete(kv, "gone", 4), 0);
    expect_absent(kv, "gone", 4);
    ck_assert_int_eq(kv_delete(kv, "never", 5), 0); /* idempotent */
    ck_assert_int_eq(kv_delete(kv, "gone", 4), 0);
    uint64_t puts = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_puts_total", &puts), 0);
    ck_assert_uint_eq(puts, 4);
    kv_close(kv);

    kv = open_node(dir, NULL);
    expect_value(kv, "a", 1, "two", 3);
    expect_value(kv, "empty", 5, "", 0);
    expect_absent(kv, "gone", 4);
    /* a put after a delete brings the key back */
    ck_assert_int_eq(kv_put(kv, "gone", 4, "back", 4), 0);
    expect_value(kv, "gone", 4, "back", 4);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_binary_keys_and_values)
{
    char *dir = util_tmpdir("bin");
    kv_t *kv = open_node(dir, NULL);
    uint8_t k1[] = {0, 1, 2, 0};
    uint8_t k2[] = {0, 1, 2};
    uint8_t k3[] = {0xff, 0x00};
    uint8_t v[256];
    for (int i = 0; i < 256; i++) {
        v[i] = (uint8_t)i;
    }
    ck_assert_int_eq(kv_put(kv, k1, sizeof(k1), v, sizeof(v)), 0);
    ck_assert_int_eq(kv_put(kv, k2, sizeof(k2), v + 1, 10), 0);
    ck_assert_int_eq(kv_put(kv, k3, sizeof(k3), v, 1), 0);
    expect_value(kv, k1, sizeof(k1), v, sizeof(v));
    expect_value(kv, k2, sizeof(k2), v + 1, 10); /* prefix is distinct */
    expect_value(kv, k3, sizeof(k3), v, 1);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_limits_and_bad_arguments)
{
    char *dir = util_tmpdir("limits");
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "max_key_size", "8"), 0);
    ck_assert_int_eq(kv_options_set(o, "max_value_size", "16"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    char big[64] = {0};
    void *got = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_put(kv, "k", 0, "v", 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(kv, NULL, 1, "v", 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(kv, "k", 1, NULL, 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(NULL, "k", 1, "v", 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(kv, big, 9, "v", 1), KV_EKEYTOOBIG);
    ck_assert_int_eq(kv_put(kv, big, 8, "v", 1), 0); /* exactly the limit */
    ck_assert_int_eq(kv_put(kv, "k", 1, big, 17), KV_ETOOBIG);
    ck_assert_int_eq(kv_put(kv, "k", 1, big, 16), 0);
    ck_assert_int_eq(kv_get(kv, big, 9, &got, &len), KV_EKEYTOOBIG);
    ck_assert_int_eq(kv_get(kv, "k", 1, NULL, &len), KV_EINVAL);
    ck_assert_int_eq(kv_get(kv, "k", 1, &got, NULL), KV_EINVAL);
    ck_assert_int_eq(kv_delete(kv, big, 9), KV_EKEYTOOBIG);
    ck_assert_int_eq(kv_delete(kv, NULL, 1), KV_EINVAL);
    kv_call_t call = KV_CALL_INIT;
    call.w = 17;
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "v", 1, NULL, 0, &call),
                     KV_EINVAL);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "v", 1, NULL, 5, NULL),
                     KV_EINVAL);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "v", 1, "garbage", 7, NULL),
                     KV_EINVAL);
    /* nothing the refused calls carried was written */
    expect_value(kv, "k", 1, big, 16);
    uint64_t errors = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_put_errors_total", &errors), 0);
    ck_assert_uint_ge(errors, 8);
    ck_assert_int_eq(kv_stat(kv, "nope", &errors), KV_ENOTFOUND);
    /* a shut-down handle refuses calls but stays valid */
    kv_shutdown(kv);
    ck_assert_int_eq(kv_put(kv, "k", 1, "v", 1), KV_ECLOSED);
    ck_assert_int_eq(kv_get(kv, "k", 1, &got, &len), KV_ECLOSED);
    ck_assert_int_eq(kv_delete(kv, "k", 1), KV_ECLOSED);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

static size_t sibling_count(kv_t *kv, const char *key, void **ctx,
                            size_t *ctxlen)
{
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(kv, key, strlen(key), NULL, &s), 0);
    size_t n = kv_siblings_count(s);
    if (ctx != NULL) {
        const void *c = kv_siblings_context(s, ctxlen);
        *ctx = malloc(*ctxlen);
        memcpy(*ctx, c, *ctxlen);
    }
    kv_siblings_free(s);
    return n;
}

START_TEST(test_siblings_and_contexts)
{
    char *dir = util_tmpdir("sib");
    kv_t *kv = open_node(dir, NULL);
    void *ctx = NULL;
    size_t ctxlen = 0;
    ck_assert_uint_eq(sibling_count(kv, "k", &ctx, &ctxlen), 0);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "base", 4, ctx, ctxlen, NULL), 0);
    free(ctx);
    ck_assert_uint_eq(sibling_count(kv, "k", &ctx, &ctxlen), 1);
    /* two clients write with the same context: two siblings */
    kv_call_t call = KV_CALL_INIT;
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "alice", 5, ctx, ctxlen, &call),
                     0);
    ck_assert_int_eq(call.acked, 1);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "bob", 3, ctx, ctxlen, NULL), 0);
    free(ctx);
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(kv, "k", 1, NULL, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 2);
    const void *v0;
    const void *v1;
    size_t l0;
    size_t l1;
    ck_assert_int_eq(kv_siblings_value(s, 0, &v0, &l0), 0);
    ck_assert_int_eq(kv_siblings_value(s, 1, &v1, &l1), 0);
    ck_assert_int_eq(kv_siblings_value(s, 2, &v1, &l1), KV_EINVAL);
    ck_assert((l0 == 5 && l1 == 3) || (l0 == 3 && l1 == 5));
    ck_assert_int_gt(kv_siblings_timestamp(s, 0), 0);
    /* the default resolver is deterministic: the later timestamp wins */
    void *got = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_get(kv, "k", 1, &got, &len), 0);
    ck_assert(len == 3 && memcmp(got, "bob", 3) == 0);
    kv_free(got);
    /* a write carrying the read's context resolves them */
    const void *c = kv_siblings_context(s, &ctxlen);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "merged", 6, c, ctxlen, NULL), 0);
    kv_siblings_free(s);
    ck_assert_uint_eq(sibling_count(kv, "k", NULL, NULL), 1);
    expect_value(kv, "k", 1, "merged", 6);
    /* a blind write (empty context) is kept beside what exists */
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "blind", 5, NULL, 0, NULL), 0);
    ck_assert_uint_eq(sibling_count(kv, "k", &ctx, &ctxlen), 2);
    /* a contextless kv_put supersedes everything this replica holds */
    ck_assert_int_eq(kv_put(kv, "k", 1, "plain", 5), 0);
    ck_assert_uint_eq(sibling_count(kv, "k", NULL, NULL), 1);
    /* a delete with a stale context keeps the newer value */
    ck_assert_int_eq(kv_delete_ctx(kv, "k", 1, ctx, ctxlen, NULL), 0);
    expect_value(kv, "k", 1, "plain", 5);
    free(ctx);
    /* a delete with the current context removes it, and the context of
     * the tombstone still works for the next write */
    ck_assert_uint_eq(sibling_count(kv, "k", &ctx, &ctxlen), 1);
    ck_assert_int_eq(kv_delete_ctx(kv, "k", 1, ctx, ctxlen, NULL), 0);
    free(ctx);
    ck_assert_uint_eq(sibling_count(kv, "k", &ctx, &ctxlen), 0);
    expect_absent(kv, "k", 1);
    ck_assert_int_gt(ctxlen, 0);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "again", 5, ctx, ctxlen, NULL),
                     0);
    free(ctx);
    ck_assert_uint_eq(sibling_count(kv, "k", NULL, NULL), 1);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_sibling_limit)
{
    char *dir = util_tmpdir("siblimit");
    kv_t *kv = open_node(dir, NULL);
    /* blind writes (empty context) each add a sibling */
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(kv_put_ctx(kv, "hot", 3, "v", 1, NULL, 0, NULL), 0);
    }
    ck_assert_int_eq(kv_put_ctx(kv, "hot", 3, "v", 1, NULL, 0, NULL),
                     KV_ETOOBIG);
    uint64_t refused = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_siblings_refused_total", &refused),
                     0);
    ck_assert_uint_eq(refused, 1);
    void *ctx = NULL;
    size_t ctxlen = 0;
    ck_assert_uint_eq(sibling_count(kv, "hot", &ctx, &ctxlen), 100);
    /* a write that resolves them is always accepted */
    ck_assert_int_eq(kv_put_ctx(kv, "hot", 3, "one", 3, ctx, ctxlen, NULL), 0);
    free(ctx);
    ck_assert_uint_eq(sibling_count(kv, "hot", NULL, NULL), 1);
    expect_value(kv, "hot", 3, "one", 3);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_lower_value_limit_keeps_old_keys_readable)
{
    char *dir = util_tmpdir("lowerlimit");
    kv_t *kv = open_node(dir, NULL);
    char big[4096];
    memset(big, 'b', sizeof(big));
    ck_assert_int_eq(kv_put(kv, "big", 3, big, sizeof(big)), 0);
    kv_close(kv);
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "max_value_size", "1k"), 0);
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    expect_value(kv, "big", 3, big, sizeof(big));
    ck_assert_int_eq(kv_put(kv, "big", 3, big, sizeof(big)), KV_ETOOBIG);
    ck_assert_int_eq(kv_delete(kv, "big", 3), 0);
    expect_absent(kv, "big", 3);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

static int concat_resolver(void *arg, const kv_sibling_t *s, size_t n,
                           void **out, size_t *outlen)
{
    (*(int *)arg)++;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += s[i].len;
    }
    char *p = malloc(total + 1);
    size_t off = 0;
    /* order-independent: the sum of lengths and a marker */
    for (size_t i = 0; i < n; i++) {
        off += s[i].len;
    }
    *outlen = (size_t)snprintf(p, total + 1, "%zu", off);
    *out = p;
    return 0;
}

static int failing_resolver(void *arg, const kv_sibling_t *s, size_t n,
                            void **out, size_t *outlen)
{
    (void)arg;
    (void)s;
    (void)n;
    (void)out;
    (void)outlen;
    return KV_ENOTSUP;
}

START_TEST(test_custom_resolver)
{
    char *dir = util_tmpdir("resolve");
    int calls = 0;
    for (int pass = 0; pass < 2; pass++) {
        kv_options_t *o = kv_options_create();
        ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
        if (pass == 0) {
            kv_options_set_resolver(o, concat_resolver, &calls);
        } else {
            kv_options_set_resolver(o, failing_resolver, NULL);
        }
        kv_t *kv = NULL;
        ck_assert_int_eq(kv_open(o, &kv), 0);
        kv_options_destroy(o);
        if (pass == 0) {
            ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "aaa", 3, NULL, 0, NULL),
                             0);
            ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "bb", 2, NULL, 0, NULL),
                             0);
            expect_value(kv, "k", 1, "5", 1);
            ck_assert_int_eq(calls, 1);
            /* resolving does not change what is stored */
            ck_assert_uint_eq(sibling_count(kv, "k", NULL, NULL), 2);
        } else {
            void *got = NULL;
            size_t len = 0;
            ck_assert_int_eq(kv_get(kv, "k", 1, &got, &len), KV_ENOTSUP);
            ck_assert_ptr_null(got);
        }
        kv_close(kv);
    }
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* riak_kv#679: a node restored from an old copy of its data dir must not
 * reuse dots, or its new writes look older than what clients have seen and
 * are dropped. Here a client saw v2 (context c2); the node is then restored
 * to the copy holding only v1 and the client writes v3 with c2. v3 must be
 * what is stored: with reused dots its dot would be covered by c2 and a
 * later merge with any replica holding c2's history would drop it. */
START_TEST(test_restored_data_dir_never_reuses_dots)
{
    char *dir = util_tmpdir("restore");
    char *copy = NULL;
    ck_assert_int_ge(asprintf(&copy, "%s.copy", dir), 0);
    kv_t *kv = open_node(dir, NULL);
    ck_assert_int_eq(kv_put(kv, "k", 1, "v1", 2), 0);
    kv_close(kv);
    util_copytree(dir, copy);

    kv = open_node(dir, NULL);
    ck_assert_int_eq(kv_put(kv, "k", 1, "v2", 2), 0);
    void *c2 = NULL;
    size_t c2len = 0;
    ck_assert_uint_eq(sibling_count(kv, "k", &c2, &c2len), 1);
    kv_close(kv);

    util_rmtree(dir);
    util_copytree(copy, dir);
    kv = open_node(dir, NULL);
    expect_value(kv, "k", 1, "v1", 2); /* the restore took effect */
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "v3", 2, c2, c2len, NULL), 0);
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(kv, "k", 1, NULL, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 1);
    const void *v;
    size_t vl;
    ck_assert_int_eq(kv_siblings_value(s, 0, &v, &vl), 0);
    ck_assert(vl == 2 && memcmp(v, "v3", 2) == 0);
    /* and c2 does not cover the new version: a write carrying c2 again
     * must leave v3 as a sibling, not replace it */
    kv_siblings_free(s);
    ck_assert_int_eq(kv_put_ctx(kv, "k", 1, "v4", 2, c2, c2len, NULL), 0);
    ck_assert_uint_eq(sibling_count(kv, "k", NULL, NULL), 2);
    free(c2);
    kv_close(kv);
    util_rmtree(dir);
    util_rmtree(copy);
    free(dir);
    free(copy);
}
END_TEST

START_TEST(test_corrupt_stored_object)
{
    char *dir = util_tmpdir("corrupt");
    kv_t *kv = open_node(dir, NULL);
    ck_assert_int_eq(kv_put(kv, "good", 4, "v", 1), 0);
    kv_close(kv);
    /* damage one object behind the library's back */
    store_t *st = NULL;
    store_config_t sc = {dir, STORE_SYNC_WAL, 1 << 20};
    kvlog_t quiet = {NULL, NULL, 0, NULL};
    ck_assert_int_eq(store_open(&sc, &quiet, &st), 0);
    ck_assert_int_eq(store_put(st, STORE_CF_DATA, "bad", 3, "KO\1\0junk", 8),
                     0);
    store_close(st);
    kv = open_node(dir, NULL);
    void *got = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_get(kv, "bad", 3, &got, &len), KV_ECORRUPT);
    ck_assert_ptr_null(got);
    /* a write refuses rather than guessing at the lost history */
    ck_assert_int_eq(kv_put(kv, "bad", 3, "x", 1), KV_ECORRUPT);
    uint64_t n = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_corrupt_objects_total", &n), 0);
    ck_assert_uint_eq(n, 2);
    expect_value(kv, "good", 4, "v", 1);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_data_dir_locked)
{
    char *dir = util_tmpdir("lock");
    kv_t *a = open_node(dir, NULL);
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    kv_t *b = (kv_t *)1;
    ck_assert_int_eq(kv_open(o, &b), KV_EBUSY);
    ck_assert_ptr_null(b);
    kv_options_destroy(o);
    kv_close(a);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Collects the library's warnings for test_data_dir_modes. */
typedef struct warnings {
    int n;
    char last[512];
} warnings_t;

static void collect_warning(void *arg, int level, const char *msg)
{
    warnings_t *w = arg;
    if (level <= KV_LOG_WARN) {
        w->n++;
        snprintf(w->last, sizeof(w->last), "%s", msg);
    }
}

static kv_t *open_logged(const char *dir, warnings_t *w)
{
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    kv_options_set_logger(o, collect_warning, w, KV_LOG_WARN);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    return kv;
}

/* Under umask 000 (Check runs each test in a child, so the umask stays
 * there) a new data directory is still 0700, and an existing one that
 * others may write gets a warning naming it. */
START_TEST(test_data_dir_modes)
{
    umask(000);
    char *top = util_tmpdir("modes");
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/data", top);
    warnings_t w = {0, ""};
    kv_t *kv = open_logged(dir, &w);
    ck_assert_int_eq(kv_put(kv, "k", 1, "v", 1), 0);
    kv_close(kv);
    struct stat sb;
    ck_assert_int_eq(stat(dir, &sb), 0);
    ck_assert_msg((sb.st_mode & 07777) == 0700, "data dir mode %04o",
                  (unsigned)(sb.st_mode & 07777));
    ck_assert_msg(w.n == 0, "unexpected warning: %s", w.last);

    ck_assert_int_eq(chmod(dir, 0777), 0);
    kv = open_logged(dir, &w);
    expect_value(kv, "k", 1, "v", 1);
    kv_close(kv);
    ck_assert_int_eq(w.n, 1);
    ck_assert_msg(strstr(w.last, dir) != NULL &&
                      strstr(w.last, "world-writable") != NULL,
                  "warning: %s", w.last);
    /* The operator's mode is kept, not silently changed. */
    ck_assert_int_eq(stat(dir, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0777);

    ck_assert_int_eq(chmod(dir, 0750), 0);
    w.n = 0;
    kv = open_logged(dir, &w);
    kv_close(kv);
    ck_assert_msg(w.n == 0, "unexpected warning: %s", w.last);
    util_rmtree(top);
    free(top);
}
END_TEST

/* A child writes keys and reports each acknowledged index through a pipe;
 * the parent kills it with SIGKILL mid-stream and checks every
 * acknowledged key after reopening. */
static void crash_durability(const char *sync, int target)
{
    char *dir = util_tmpdir("crash");
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        kv_options_t *o = kv_options_create();
        kv_options_set(o, "data_dir", dir);
        kv_options_set(o, "sync", sync);
        kv_t *kv = NULL;
        if (kv_open(o, &kv) != 0) {
            _exit(2);
        }
        for (uint32_t i = 0;; i++) {
            char k[32];
            char v[64];
            int kl = snprintf(k, sizeof(k), "key-%u", i);
            int vl = snprintf(v, sizeof(v), "value-%u", i);
            if (kv_put(kv, k, (size_t)kl, v, (size_t)vl) != 0) {
                _exit(3);
            }
            if (write(fds[1], &i, sizeof(i)) != sizeof(i)) {
                _exit(4);
            }
        }
    }
    close(fds[1]);
    uint32_t last = 0;
    int acked = 0;
    while (acked < target) {
        ssize_t n = read(fds[0], &last, sizeof(last));
        ck_assert_int_eq(n, sizeof(last));
        acked++;
    }
    kill(pid, SIGKILL);
    /* drain what was acknowledged before the signal landed */
    uint32_t more;
    while (read(fds[0], &more, sizeof(more)) == sizeof(more)) {
        last = more;
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fds[0]);

    kv_t *kv = open_node(dir, sync);
    for (uint32_t i = 0; i <= last; i++) {
        char k[32];
        char v[64];
        int kl = snprintf(k, sizeof(k), "key-%u", i);
        int vl = snprintf(v, sizeof(v), "value-%u", i);
        expect_value(kv, k, (size_t)kl, v, (size_t)vl);
    }
    printf("crash durability (sync=%s): %u acknowledged puts all present "
           "after SIGKILL\n",
           sync, last + 1);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}

START_TEST(test_crash_wal)
{
    crash_durability("wal", 3000);
}
END_TEST

START_TEST(test_crash_fsync)
{
    crash_durability("fsync", 200);
}
END_TEST

#define THREADS 8
#define OPS 1500

typedef struct {
    kv_t *kv;
    int id;
    int failures;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < OPS; i++) {
        char k[32];
        char v[32];
        int kl = snprintf(k, sizeof(k), "own-%d-%d", w->id, i % 100);
        int vl = snprintf(v, sizeof(v), "%d-%d", w->id, i);
        if (kv_put(w->kv, k, (size_t)kl, v, (size_t)vl) != 0) {
            w->failures++;
        }
        /* everyone hammers the same few keys too */
        kl = snprintf(k, sizeof(k), "shared-%d", i % 5);
        if (kv_put(w->kv, k, (size_t)kl, v, (size_t)vl) != 0) {
            w->failures++;
        }
        void *got = NULL;
        size_t len = 0;
        /* another thread may have deleted it in between */
        int rc = kv_get(w->kv, k, (size_t)kl, &got, &len);
        if (rc != 0 && rc != KV_ENOTFOUND) {
            w->failures++;
        }
        kv_free(got);
        if (i % 50 == 0 && kv_delete(w->kv, k, (size_t)kl) != 0) {
            w->failures++;
        }
    }
    return NULL;
}

START_TEST(test_many_threads_one_handle)
{
    char *dir = util_tmpdir("threads");
    kv_t *kv = open_node(dir, NULL);
    pthread_t t[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){kv, i, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].failures, 0);
    }
    /* each thread's last write to its own keys is what is stored */
    for (int id = 0; id < THREADS; id++) {
        for (int j = 0; j < 100; j++) {
            char k[32];
            char v[32];
            int kl = snprintf(k, sizeof(k), "own-%d-%d", id, j);
            int vl = snprintf(v, sizeof(v), "%d-%d", id, OPS - 100 + j);
            expect_value(kv, k, (size_t)kl, v, (size_t)vl);
        }
    }
    /* contextless puts serialise on the replica: no siblings */
    for (int j = 0; j < 5; j++) {
        char k[32];
        snprintf(k, sizeof(k), "shared-%d", j);
        ck_assert_uint_le(sibling_count(kv, k, NULL, NULL), 1);
    }
    uint64_t puts = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_puts_total", &puts), 0);
    ck_assert_uint_eq(puts, THREADS * OPS * 2);
    char *text = NULL;
    size_t tl = 0;
    ck_assert_int_eq(kv_metrics(kv, &text, &tl), 0);
    ck_assert_uint_eq(strlen(text), tl);
    ck_assert_ptr_nonnull(strstr(text, "kvdist_puts_total 24000\n"));
    kv_free(text);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

typedef struct {
    kv_t *kv;
    int ok;
    int closed;
    int other;
} racer_t;

static void *racer(void *arg)
{
    racer_t *r = arg;
    for (int i = 0; i < 100000; i++) {
        int rc = kv_put(r->kv, "race", 4, "v", 1);
        if (rc == 0) {
            r->ok++;
        } else if (rc == KV_ECLOSED) {
            r->closed++;
            break;
        } else {
            r->other++;
        }
    }
    return NULL;
}

START_TEST(test_shutdown_waits_for_calls)
{
    char *dir = util_tmpdir("shutdown");
    kv_t *kv = open_node(dir, NULL);
    pthread_t t[4];
    racer_t r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer_t){kv, 0, 0, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    /* let some calls through, then shut down underneath them */
    while (1) {
        uint64_t puts = 0;
        kv_stat(kv, "kvdist_puts_total", &puts);
        if (puts >= 200) {
            break;
        }
        usleep(1000);
    }
    kv_shutdown(kv);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].other, 0);
        ck_assert_int_eq(r[i].closed, 1);
    }
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Write groups (replica.h), passed explicitly: a grouped write is staged,
 * and durable and acknowledged only when the group commits; a replica call
 * outside the group, given the open group, commits it first rather than
 * wait for a stripe the group holds (on this thread: it would wait
 * forever, and the test time out). */
typedef struct group_acks {
    int n;
    int rc;
    uint64_t u;
} group_acks_t;

static void group_ack(void *arg, uint64_t u, int rc)
{
    group_acks_t *a = arg;
    a->n++;
    a->rc = rc;
    a->u = u;
}

START_TEST(test_write_group_commits_before_outside_call)
{
    char *dir = util_tmpdir("group");
    kv_t *kv = open_node(dir, NULL);
    replica_group_t *g = replica_group_begin(kv);
    ck_assert_ptr_nonnull(g);
    group_acks_t acks = {0, -1, 0};
    obj_t o;
    obj_init(&o);
    ck_assert_int_eq(replica_write_grouped(g, "k", 1, NULL, "one", 3, false, 0,
                                           NULL, NULL, group_ack, &acks, 7),
                     0);
    ck_assert_int_eq(acks.n, 0); /* staged only */
    ck_assert_int_eq(replica_read(kv, "k", 1, &o), 0);
    ck_assert_uint_eq(obj_live(&o), 0);

    /* The same key outside the group: the group commits first. */
    ck_assert_int_eq(
        replica_write(kv, g, "k", 1, NULL, "two", 3, false, 0, NULL, NULL), 0);
    ck_assert_int_eq(acks.n, 1);
    ck_assert_int_eq(acks.rc, 0);
    ck_assert_uint_eq(acks.u, 7);
    expect_value(kv, "k", 1, "two", 3); /* "one", then superseded */

    /* The group goes on after a commit; a merge outside it commits it. */
    buf_t enc;
    buf_init(&enc);
    ck_assert_int_eq(replica_write_grouped(g, "j", 1, NULL, "three", 5, false, 0,
                                           &o, &enc, group_ack, &acks, 8),
                     0);
    ck_assert_int_eq(acks.n, 1);
    /* The encoding handed back is the object written (what a coordinator
     * sends its replicas instead of encoding it again). */
    obj_t sent;
    obj_init(&sent);
    ck_assert_int_eq(obj_decode(enc.p, enc.len, &kv->limits, &sent), 0);
    ck_assert(obj_equal(&sent, &o));
    obj_free(&sent);
    buf_free(&enc);
    bool changed = true;
    ck_assert_int_eq(replica_merge(kv, g, "j", 1, &o, &changed), 0);
    ck_assert(!changed); /* the object the group had just stored */
    ck_assert_int_eq(acks.n, 2);
    ck_assert_uint_eq(acks.u, 8);

    /* A purge of the key the group holds next commits it too. */
    ck_assert_int_eq(replica_write_grouped(g, "k", 1, NULL, NULL, 0, true, 0,
                                           NULL, NULL, group_ack, &acks, 9),
                     0);
    bool purged = true;
    ck_assert_int_eq(replica_purge(kv, g, "k", 1, 0, &purged), 0);
    ck_assert(!purged); /* the digest did not match: nothing purged */
    ck_assert_int_eq(acks.n, 3);
    expect_absent(kv, "k", 1); /* the grouped delete is durable */

    replica_group_end(g);
    ck_assert_int_eq(acks.n, 3); /* nothing was left to acknowledge */
    expect_value(kv, "j", 1, "three", 5);
    replica_group_end(NULL); /* a no-op */
    obj_free(&o);
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_put_get_delete_reopen);
    tcase_add_test(tc, test_binary_keys_and_values);
    tcase_add_test(tc, test_limits_and_bad_arguments);
    tcase_add_test(tc, test_siblings_and_contexts);
    tcase_add_test(tc, test_custom_resolver);
    tcase_add_test(tc, test_sibling_limit);
    tcase_add_test(tc, test_lower_value_limit_keeps_old_keys_readable);
    tcase_add_test(tc, test_restored_data_dir_never_reuses_dots);
    tcase_add_test(tc, test_corrupt_stored_object);
    tcase_add_test(tc, test_data_dir_locked);
    tcase_add_test(tc, test_data_dir_modes);
    tcase_add_test(tc, test_crash_wal);
    tcase_add_test(tc, test_crash_fsync);
    tcase_add_test(tc, test_many_threads_one_handle);
    tcase_add_test(tc, test_shutdown_waits_for_calls);
    tcase_add_test(tc, test_write_group_commits_before_outside_call);
    suite_add_tcase(s, tc);
    return s;
}
