/*
 * check_options.c - the option parser: defaults, every option's accepted
 * and refused values, unknown names, and that a refused value changes
 * nothing.
 */
#include "check_kvdist.h"

#include <stdlib.h>
#include <string.h>

#include "kvdist.h"

static void expect(kv_options_t *o, const char *name, const char *want)
{
    char buf[256];
    ck_assert_int_eq(kv_options_get(o, name, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, want);
}

START_TEST(test_defaults)
{
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    expect(o, "n", "3");
    expect(o, "r", "2");
    expect(o, "w", "2");
    expect(o, "sync", "wal");
    expect(o, "role", "peer");
    expect(o, "max_key_size", "65536");
    expect(o, "max_value_size", "16777216");
    expect(o, "cache_size", "67108864");
    expect(o, "listen", "");
    ck_assert_str_eq(kv_options_errmsg(o), "");
    kv_options_destroy(o);
    kv_options_destroy(NULL); /* no-op */
}
END_TEST

START_TEST(test_accepts)
{
    kv_options_t *o = kv_options_create();
    static const char *const ok[][3] = {
        {"data_dir", "/tmp/x", "/tmp/x"},
        {"node_id", "n-1.a_b", "n-1.a_b"},
        {"role", "client", "client"},
        {"listen", "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7000"},
        {"listen", "ipc:///tmp/kv.sock", "ipc:///tmp/kv.sock"},
        {"join", "tcp://a:1,ipc:///b", "tcp://a:1,ipc:///b"},
        {"n", "5", "5"},
        {"r", "1", "1"},
        {"w", "16", "16"},
        {"vnodes", "64", "64"},
        {"sync", "fsync", "fsync"},
        {"sync", "none", "none"},
        {"cache_size", "8MiB", "8388608"},
        {"cache_size", "2G", "2147483648"},
        {"cache_size", "0", "0"},
        {"max_key_size", "1k", "1024"},
        {"max_value_size", "0", "0"},
        {"clock_max", "10", "10"},
        {"timeout_ms", "250", "250"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ck_assert_msg(kv_options_set(o, ok[i][0], ok[i][1]) == 0, "%s=%s",
                      ok[i][0], ok[i][1]);
        expect(o, ok[i][0], ok[i][2]);
    }
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_refuses)
{
    kv_options_t *o = kv_options_create();
    static const char *const bad[][2] = {
        {"data_dir", ""},         {"node_id", ""},
        {"node_id", "has space"}, {"node_id", "slash/no"},
        {"role", "server"},       {"listen", "http://x"},
        {"listen", "tcp://"},     {"join", "tcp://a,,"},
        {"join", "tcp://a,udp://b"}, {"n", "0"},
        {"n", "17"},              {"r", "-1"},
        {"w", "2x"},              {"w", ""},
        {"n", " 3"},              {"vnodes", "0"},
        {"vnodes", "70000"},      {"sync", "WAL"},
        {"cache_size", "1X"},     {"cache_size", "-5"},
        {"cache_size", "99999999999999999999"},
        {"cache_size", "2TiB"},   {"max_key_size", "0"},
        {"max_key_size", "17MiB"}, {"max_value_size", "2GiB"},
        {"clock_max", "3"},       {"timeout_ms", "0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char before[256];
        ck_assert_int_eq(kv_options_get(o, bad[i][0], before, sizeof(before)),
                         0);
        ck_assert_msg(kv_options_set(o, bad[i][0], bad[i][1]) == KV_EINVAL,
                      "%s=%s accepted", bad[i][0], bad[i][1]);
        ck_assert_msg(strlen(kv_options_errmsg(o)) > 0, "no reason given");
        ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), bad[i][0]));
        expect(o, bad[i][0], before); /* nothing changed */
    }
    ck_assert_int_eq(kv_options_set(o, "no_such_option", "1"), KV_EBADOPT);
    ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), "no_such_option"));
    ck_assert_int_eq(kv_options_set(NULL, "n", "1"), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, NULL, "1"), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, "n", NULL), KV_EINVAL);
    char buf[8];
    ck_assert_int_eq(kv_options_get(o, "nope", buf, sizeof(buf)), KV_EBADOPT);
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_open_validates)
{
    kv_t *kv = (kv_t *)1;
    ck_assert_int_eq(kv_open(NULL, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_t *o = kv_options_create();
    /* peer without data_dir */
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    /* r > n */
    char *dir = util_tmpdir("opts");
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "n", "2"), 0);
    ck_assert_int_eq(kv_options_set(o, "r", "3"), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, "r", "2"), 0);
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_close(kv);
    kv_close(NULL); /* no-op */
    kv_options_destroy(o);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_http_option)
{
    kv_options_t *o = kv_options_create();
    char buf[300];
    ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "");
    const char *good[] = {"127.0.0.1:8080", "localhost:1", "[::1]:65535",
                          "node-1.example.org:443"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_msg(kv_options_set(o, "http", good[i]) == 0, "refused %s",
                      good[i]);
        ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, good[i]);
    }
    const char *bad[] = {"",         "8080",        ":8080",     "h:0",
                         "h:65536",  "h:x",         "h:",        "a/b:80",
                         "::1:80",   "[::1:80",     "[]:80",     "h :80",
                         "h:80 ",    "http://h:80", "h:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(kv_options_set(o, "http", bad[i]) == KV_EINVAL,
                      "accepted '%s'", bad[i]);
        ck_assert_str_ne(kv_options_errmsg(o), "");
        /* a refused value leaves the previous one */
        ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, good[3]);
    }
    /* Peers only: a client with http does not open. */
    kv_t *kv = (kv_t *)1;
    ck_assert_int_eq(kv_options_set(o, "role", "client"), 0);
    ck_assert_int_eq(kv_options_set(o, "join", "tcp://127.0.0.1:1"), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_strerror)
{
    for (int e = 0; e <= KV_EINTERNAL; e++) {
        ck_assert_ptr_nonnull(kv_strerror(e));
        ck_assert_str_ne(kv_strerror(e), "unknown error");
    }
    ck_assert_str_eq(kv_strerror(-1), "unknown error");
    ck_assert_str_eq(kv_strerror(1000), "unknown error");
    ck_assert_str_eq(kv_version(), KV_VERSION_STRING);
}
END_TEST

/* The RESP listener address: HOST:PORT, refused otherwise (the old value
 * stays), and only for a peer. */
START_TEST(test_resp_option)
{
    kv_options_t *o = kv_options_create();
    expect(o, "resp", "");
    ck_assert_int_eq(kv_options_set(o, "resp", "127.0.0.1:6379"), 0);
    expect(o, "resp", "127.0.0.1:6379");
    ck_assert_int_eq(kv_options_set(o, "resp", "[::1]:0"), 0);
    ck_assert_int_eq(kv_options_set(o, "resp", "localhost:65535"), 0);
    static const char *const bad[] = {"",           "6379",      ":6379",
                                      "host:",      "host:-1",   "host:65536",
                                      "host:6x",    "tcp://h:1", "a b:1",
                                      "host: 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(kv_options_set(o, "resp", bad[i]) == KV_EINVAL,
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), "resp"));
        expect(o, "resp", "localhost:65535");
    }
    /* A client serves nothing: open refuses the combination. */
    ck_assert_int_eq(kv_options_set(o, "role", "client"), 0);
    ck_assert_int_eq(kv_options_set(o, "join", "tcp://127.0.0.1:1"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);
}
END_TEST

Suite *options_suite(void)
{
    Suite *s = suite_create("options");
    TCase *rt = tcase_create("resp");
    tcase_add_test(rt, test_resp_option);
    suite_add_tcase(s, rt);
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_accepts);
    tcase_add_test(tc, test_refuses);
    tcase_add_test(tc, test_open_validates);
    tcase_add_test(tc, test_http_option);
    tcase_add_test(tc, test_strerror);
    suite_add_tcase(s, tc);
    return s;
}
