/*
 * check_cluster.c - replication across real kvdistd processes on
 * 127.0.0.1, plus peers living in this process (several kv_t in one
 * process, which the library supports by design).
 *
 * What each node holds locally is read with the peer protocol's debug
 * request (WIRE_LOCAL_GET) over a plain NNG req socket, exactly as another
 * node would ask.
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/nng.h>

#include "kvdist.h"
#include "object.h"
#include "wire.h"

static void put_ok(kv_t *kv, const char *k, const char *v)
{
    int rc = kv_put(kv, k, strlen(k), v, strlen(v));
    ck_assert_msg(rc == 0, "put %s: %s", k, kv_strerror(rc));
}

static void get_expect(kv_t *kv, const char *k, const char *v)
{
    void *got = NULL;
    size_t len = 0;
    int rc = kv_get(kv, k, strlen(k), &got, &len);
    ck_assert_msg(rc == 0, "get %s: %s", k, kv_strerror(rc));
    ck_assert_uint_eq(len, strlen(v));
    ck_assert_int_eq(memcmp(got, v, len), 0);
    kv_free(got);
}

START_TEST(test_write_lands_on_preference_list)
{
    harness_t *h = harness_create(4);
    h->n = 3;
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 3000);
    harness_wait_members(c, 4);
    int held_by_non_owner = 0;
    for (int k = 0; k < 40; k++) {
        char key[32];
        char val[32];
        snprintf(key, sizeof(key), "key-%d", k);
        snprintf(val, sizeof(val), "val-%d", k);
        put_ok(c, key, val);
        kv_member_t *pl = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_preference_list(c, key, strlen(key), &pl, &n), 0);
        ck_assert_uint_eq(n, 3);
        for (int i = 0; i < h->nnodes; i++) {
            int owner = 0;
            for (size_t j = 0; j < n; j++) {
                owner |= strcmp(pl[j].id, h->node[i].id) == 0;
            }
            if (owner) {
                ck_assert_msg(harness_wait_local_value(h->node[i].url, key, val, 5000),
                              "%s missing on owner %s", key, h->node[i].id);
            }
        }
        /* every owner has it now; a non-owner never gets a copy */
        for (int i = 0; i < h->nnodes; i++) {
            int owner = 0;
            for (size_t j = 0; j < n; j++) {
                owner |= strcmp(pl[j].id, h->node[i].id) == 0;
            }
            if (!owner) {
                held_by_non_owner += harness_local_get(h->node[i].url, key, NULL, 0);
            }
        }
        kv_free(pl);
    }
    ck_assert_int_eq(held_by_non_owner, 0);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_quorum_with_nodes_down)
{
    harness_t *h = harness_create(3);
    h->n = 3;
    h->r = 2;
    h->w = 2;
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 3);
    put_ok(c, "before", "1");

    harness_stop(h, 2);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    kv_call_t call = KV_CALL_INIT;
    ck_assert_int_eq(kv_put_ctx(c, "one-down", 8, "2", 1, NULL, 0, &call), 0);
    ck_assert_int_eq(call.needed, 2);
    ck_assert_int_ge(call.acked, 2);
    get_expect(c, "one-down", "2");
    get_expect(c, "before", "1");

    harness_stop(h, 1);
    harness_wait_status(c, "n2", KV_MEMBER_DOWN);
    int64_t t0 = harness_now_ms();
    call = (kv_call_t)KV_CALL_INIT;
    call.timeout_ms = 800;
    int rc = kv_put_ctx(c, "two-down", 8, "3", 1, NULL, 0, &call);
    ck_assert_msg(rc == KV_EQUORUM, "put with two down: %s", kv_strerror(rc));
    ck_assert_int_eq(call.acked, 1);
    ck_assert_int_eq(call.needed, 2);
    printf("quorum: put with 2 of 3 down failed after %lld ms, %d of %d "
           "acked\n",
           (long long)(harness_now_ms() - t0), call.acked, call.needed);
    kv_siblings_t *s = NULL;
    call = (kv_call_t)KV_CALL_INIT;
    call.timeout_ms = 800;
    ck_assert_int_eq(kv_get_siblings(c, "before", 6, &call, &s), KV_EQUORUM);
    ck_assert_ptr_null(s);
    /* R=1 still reads what the survivor holds */
    call.r = 1;
    ck_assert_int_eq(kv_get_siblings(c, "before", 6, &call, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 1);
    kv_siblings_free(s);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_read_repair)
{
    harness_t *h = harness_create(3);
    /* hints would bring n3 up to date on their own: test read repair */
    const char *no_hints[] = {"--hinted-handoff", "off", NULL};
    harness_start_all(h, no_hints);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000);
    harness_wait_members(c, 3);
    put_ok(c, "k", "old");
    ck_assert(harness_wait_local_value(h->node[2].url, "k", "old", 5000));
    harness_stop(h, 2);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    /* Both possible coordinators must see it down, or one may still send
     * it the write (NNG queues it and delivers it if n3 is back before
     * the write's deadline). */
    for (int i = 0; i < 2; i++) {
        int64_t deadline = harness_now_ms() + 15000;
        while (harness_remote_status(h->node[i].url, "n3", NULL) !=
               KV_MEMBER_DOWN) {
            ck_assert_msg(harness_now_ms() < deadline, "n%d never saw n3 down",
                          i + 1);
            harness_sleep_ms(20);
        }
    }
    kv_call_t call = KV_CALL_INIT;
    call.timeout_ms = 300;
    /* overwrite what was read (an empty context would keep a sibling) */
    kv_siblings_t *s0 = NULL;
    ck_assert_int_eq(kv_get_siblings(c, "k", 1, NULL, &s0), 0);
    size_t cl = 0;
    const void *cx = kv_siblings_context(s0, &cl);
    ck_assert_int_eq(kv_put_ctx(c, "k", 1, "new", 3, cx, cl, &call), 0);
    kv_siblings_free(s0);
    ck_assert_int_eq(kv_put_ctx(c, "fresh", 5, "only-two", 8, NULL, 0, &call),
                     0);
    /* the coordinators saw n3 down, so nothing was queued for it; and
     * whatever was, its 300 ms deadline has passed before n3 is back */
    int64_t lapse = harness_now_ms() + 400;
    while (harness_now_ms() < lapse) {
        harness_sleep_ms(20);
    }
    harness_start(h, 2, no_hints);
    harness_wait_status(c, "n3", KV_MEMBER_UP);
    /* n3 missed both writes */
    char v[64] = "";
    ck_assert_int_eq(harness_local_get(h->node[2].url, "k", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "old");
    ck_assert_int_eq(harness_local_get(h->node[2].url, "fresh", NULL, 0), 0);
    /* a read that reaches it repairs it in the background */
    call = (kv_call_t)KV_CALL_INIT;
    call.r = 3;
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(c, "k", 1, &call, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 1);
    kv_siblings_free(s);
    get_expect(c, "fresh", "only-two");
    ck_assert(harness_wait_local_value(h->node[2].url, "k", "new", 5000));
    ck_assert(harness_wait_local_value(h->node[2].url, "fresh", "only-two", 5000));
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_malformed_messages_leave_node_serving)
{
    harness_t *h = harness_create(1);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    const char *url = h->node[0].url;
    uint64_t seed = 5;
    int replies = 0;
    /* random payloads, valid SP framing */
    for (int i = 0; i < 50; i++) {
        uint8_t p[128];
        size_t len = 1 + util_rand(&seed) % sizeof(p);
        for (size_t j = 0; j < len; j++) {
            p[j] = (uint8_t)util_rand(&seed);
        }
        nng_msg *r = harness_raw_request(url, p, len, 2000);
        if (r != NULL) {
            wire_msg_t m;
            ck_assert_int_eq(wire_decode(nng_msg_body(r), nng_msg_len(r),
                                         &harness_big_limits, &m),
                             0);
            ck_assert_uint_eq(m.status, KV_EPROTO);
            replies++;
            nng_msg_free(r);
        }
    }
    ck_assert_int_eq(replies, 50);
    buf_t b;
    buf_init(&b);
    wire_build_replica_put(&b, 1, "key", 3, "not an object", 13);
    /* truncated */
    nng_msg *r = harness_raw_request(url, b.p, b.len - 3, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    /* well-formed message, corrupt object: refused, nothing stored */
    r = harness_raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(nng_msg_body(r), nng_msg_len(r), &harness_big_limits,
                                 &m),
                     0);
    ck_assert_uint_eq(m.status, KV_ECORRUPT);
    nng_msg_free(r);
    ck_assert_int_eq(harness_local_get(url, "key", NULL, 0), 0);
    /* wrong version */
    b.p[2] = 99;
    r = harness_raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    buf_free(&b);
    /* a huge length prefix */
    wire_header(&b, WIRE_REPLICA_GET, 1, 0, 0);
    buf_put_varint(&b, UINT64_MAX / 2);
    r = harness_raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    buf_free(&b);
    /* A frame whose length is over the receive limit is cut off by the
     * transport before anything is allocated: SP handshake for a req0
     * peer, then a 100 MiB length header. (Sent by hand: the NNG client
     * itself can hang closing a socket with such a send in flight.) */
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
    uint8_t frame[8 + 8 + 16] = {0};
    memcpy(frame, hello, 8);
    uint64_t huge = (uint64_t)100 << 20;
    for (int i = 0; i < 8; i++) {
        frame[8 + i] = (uint8_t)(huge >> (56 - 8 * i));
    }
    ck_assert_int_eq(harness_raw_tcp(h->node[0].port, frame, sizeof(frame)), 1);
    /* raw TCP garbage, not even the SP handshake */
    char junk[4096];
    memset(junk, 0xa5, sizeof(junk));
    ck_assert_int_eq(harness_raw_tcp(h->node[0].port, junk, sizeof(junk)), 1);
    /* still serving */
    ck_assert_int_eq(kill(h->node[0].pid, 0), 0);
    kv_t *c = harness_client(h, 2000);
    put_ok(c, "after", "still-here");
    get_expect(c, "after", "still-here");
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* Runs kvdistd with argv to completion (bounded) and returns its exit
 * status; its stderr goes to errpath. */
static int run_daemon(const harness_t *h, const char *const *args,
                      const char *errpath)
{
    const char *argv[32];
    int a = 0;
    argv[a++] = h->daemon;
    for (int i = 0; args[i] != NULL && a < 31; i++) {
        argv[a++] = args[i];
    }
    argv[a] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *f = freopen(errpath, "w", stderr);
        (void)f;
        execv(h->daemon, (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = harness_now_ms() + 10000;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (harness_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ck_abort_msg("kvdistd did not exit");
        }
        harness_sleep_ms(10);
    }
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The daemon's error output: exactly one line, containing `needle`. */
static void expect_one_line(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    int lines = 0;
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lines++;
        found |= strstr(line, needle) != NULL;
    }
    fclose(f);
    ck_assert_msg(found, "no line with '%s' in %s", needle, path);
    ck_assert_int_eq(lines, 1);
}

START_TEST(test_daemon_refuses_bad_starts)
{
    harness_t *h = harness_create(1);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    char err[600];
    snprintf(err, sizeof(err), "%s/err.txt", h->dir);
    char other[600];
    snprintf(other, sizeof(other), "%s/other", h->dir);
    /* a bad flag value */
    const char *bad_n[] = {"--id", "x", "--listen", "tcp://127.0.0.1:1",
                           "--data", other, "--n", "0", NULL};
    ck_assert_int_eq(run_daemon(h, bad_n, err), 2);
    expect_one_line(err, "--n");
    /* an unknown flag */
    const char *unknown[] = {"--frobnicate", NULL};
    ck_assert_int_eq(run_daemon(h, unknown, err), 2);
    /* an address in use (node 1's) */
    const char *in_use[] = {"--id", "x", "--listen", h->node[0].url,
                            "--data", other, "--log-level", "error", NULL};
    ck_assert_int_eq(run_daemon(h, in_use, err), 1);
    expect_one_line(err, "in use");
    /* a data dir held by the running node */
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", harness_free_port());
    const char *busy[] = {"--id", "x", "--listen", url, "--data",
                          h->node[0].data, "--log-level", "error", NULL};
    ck_assert_int_eq(run_daemon(h, busy, err), 1);
    expect_one_line(err, "in use by another process");
    /* a data dir that is a regular file */
    snprintf(other, sizeof(other), "%s/plainfile", h->dir);
    FILE *f = fopen(other, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    const char *file[] = {"--id", "x", "--listen", url, "--data", other,
                          "--log-level", "error", NULL};
    ck_assert_int_eq(run_daemon(h, file, err), 1);
    expect_one_line(err, "kvdistd");
    ck_assert_int_eq(kill(h->node[0].pid, 0), 0);
    harness_destroy(h);
}
END_TEST

/* ---- peers in this process ---- */

static kv_t *open_peer(const char *dir, const char *id, const char *url,
                       const char *join)
{
    kv_options_t *o = kv_options_create();
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, id);
    ck_assert_int_eq(kv_options_set(o, "data_dir", path), 0);
    ck_assert_int_eq(kv_options_set(o, "node_id", id), 0);
    ck_assert_int_eq(kv_options_set(o, "listen", url), 0);
    ck_assert_int_eq(kv_options_set(o, "cache_size", "4MiB"), 0);
    if (join != NULL) {
        ck_assert_int_eq(kv_options_set(o, "join", join), 0);
    }
    kv_t *kv = NULL;
    int rc = kv_open(o, &kv);
    ck_assert_msg(rc == 0, "open %s: %s", id, kv_strerror(rc));
    kv_options_destroy(o);
    return kv;
}

static size_t count_siblings(kv_t *kv, const char *key, kv_siblings_t **keep)
{
    kv_siblings_t *s = NULL;
    kv_call_t call = KV_CALL_INIT;
    call.r = 3;
    ck_assert_int_eq(kv_get_siblings(kv, key, strlen(key), &call, &s), 0);
    size_t n = kv_siblings_count(s);
    if (keep != NULL) {
        *keep = s;
    } else {
        kv_siblings_free(s);
    }
    return n;
}

START_TEST(test_concurrent_coordinators_make_siblings)
{
    char *dir = util_tmpdir("inproc");
    char url[3][600];
    const char *ids[3] = {"a", "b", "c"};
    kv_t *kv[3];
    for (int i = 0; i < 3; i++) {
        snprintf(url[i], sizeof(url[i]), "tcp://127.0.0.1:%d",
                 harness_free_port());
        kv[i] = open_peer(dir, ids[i], url[i], i > 0 ? url[0] : NULL);
    }
    for (int i = 0; i < 3; i++) {
        harness_wait_members(kv[i], 3);
    }
    /* both coordinators read the same version ... */
    put_ok(kv[0], "doc", "v0");
    kv_siblings_t *s = NULL;
    ck_assert_uint_eq(count_siblings(kv[0], "doc", &s), 1);
    size_t clen = 0;
    const void *ctx = kv_siblings_context(s, &clen);
    /* ... and write concurrently through different coordinators */
    kv_call_t call = KV_CALL_INIT;
    call.w = 3;
    ck_assert_int_eq(kv_put_ctx(kv[1], "doc", 3, "from-b", 6, ctx, clen,
                                &call),
                     0);
    ck_assert_int_eq(kv_put_ctx(kv[2], "doc", 3, "from-c", 6, ctx, clen,
                                &call),
                     0);
    kv_siblings_free(s);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(count_siblings(kv[i], "doc", NULL), 2);
    }
    /* a write carrying the merged context resolves them everywhere */
    ck_assert_uint_eq(count_siblings(kv[0], "doc", &s), 2);
    ctx = kv_siblings_context(s, &clen);
    ck_assert_int_eq(kv_put_ctx(kv[0], "doc", 3, "merged", 6, ctx, clen,
                                &call),
                     0);
    kv_siblings_free(s);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(count_siblings(kv[i], "doc", NULL), 1);
        get_expect(kv[i], "doc", "merged");
    }
    uint64_t writes = 0;
    ck_assert_int_eq(kv_stat(kv[1], "kvdist_replica_writes_total", &writes), 0);
    ck_assert_uint_ge(writes, 2);
    for (int i = 2; i >= 0; i--) {
        kv_close(kv[i]);
    }
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_malformed_counted_in_process)
{
    char *dir = util_tmpdir("malformed");
    char url[600];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", harness_free_port());
    kv_t *kv = open_peer(dir, "a", url, NULL);
    for (int i = 0; i < 5; i++) {
        nng_msg *r = harness_raw_request(url, "garbage", 7, 2000);
        ck_assert_ptr_nonnull(r);
        nng_msg_free(r);
    }
    uint64_t n = 0;
    ck_assert_int_eq(kv_stat(kv, "kvdist_wire_malformed_total", &n), 0);
    ck_assert_uint_eq(n, 5);
    put_ok(kv, "k", "v");
    get_expect(kv, "k", "v");
    kv_close(kv);
    util_rmtree(dir);
    free(dir);
}
END_TEST

Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("multiprocess");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_write_lands_on_preference_list);
    tcase_add_test(tc, test_quorum_with_nodes_down);
    tcase_add_test(tc, test_read_repair);
    tcase_add_test(tc, test_malformed_messages_leave_node_serving);
    tcase_add_test(tc, test_daemon_refuses_bad_starts);
    suite_add_tcase(s, tc);
    TCase *ip = tcase_create("inprocess");
    tcase_set_timeout(ip, 120);
    tcase_add_test(ip, test_concurrent_coordinators_make_siblings);
    tcase_add_test(ip, test_malformed_counted_in_process);
    suite_add_tcase(s, ip);
    return s;
}
