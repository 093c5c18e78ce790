/*
 * check_cluster.c - replication across real kvdistd processes on
 * 127.0.0.1, plus peers living in this process (several kv_t in one
 * process, which the library supports by design).
 *
 * What each node holds locally is read with the peer protocol's debug
 * request (WIRE_LOCAL_GET) over a plain NNG req socket, exactly as another
 * node would ask.
 *
 * The CLI's status and stats commands run the real kvdist binary
 * (KVDIST_BUILD/examples/kvdist) against such a cluster; its --help is
 * checked against the commands table read from examples/kvdist.c.
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
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
    /* The coordinator sees it cannot reach W replicas and refuses before
     * writing anything: "not written", at once, not "indeterminate" at
     * the deadline. */
    int64_t took = harness_now_ms() - t0;
    ck_assert_msg(rc == KV_EUNAVAIL, "put with two down: %s", kv_strerror(rc));
    ck_assert_int_eq(call.acked, 0);
    ck_assert_int_eq(call.needed, 2);
    ck_assert_msg(took < 400, "refused after %lld ms", (long long)took);
    printf("quorum: put with 2 of 3 down refused (not written) after %lld "
           "ms\n",
           (long long)took);
    kv_siblings_t *s = NULL;
    call = (kv_call_t)KV_CALL_INIT;
    call.timeout_ms = 800;
    ck_assert_int_eq(kv_get_siblings(c, "before", 6, &call, &s), KV_EUNAVAIL);
    ck_assert_ptr_null(s);
    /* Not written: the survivor does not hold it. */
    call.r = 1;
    ck_assert_int_eq(kv_get_siblings(c, "two-down", 8, &call, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 0);
    kv_siblings_free(s);
    s = NULL;
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
    /* a read that reaches it repairs it in the background. R=3 needs the
     * coordinator's own connection to n3, which NNG redials with its
     * backoff (NNG_OPT_RECONNMAXT 1 s): the client may see n3 up through
     * gossip before that. In about 1 run of 15 no coordinator had
     * redialled n3 2 s after its restart (traced: no new pipe at all), so
     * the read is retried, bounded, until one reaches it; what is
     * asserted is the repair, below. */
    call = (kv_call_t)KV_CALL_INIT;
    call.r = 3;
    kv_siblings_t *s = NULL;
    int64_t until = harness_now_ms() + 10000;
    int rrc;
    while ((rrc = kv_get_siblings(c, "k", 1, &call, &s)) == KV_ETIMEDOUT &&
           harness_now_ms() < until) {
        harness_sleep_ms(20);
    }
    ck_assert_int_eq(rrc, 0);
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
    ck_assert_int_eq(harness_run_daemon(h, bad_n, err), 2);
    expect_one_line(err, "--n");
    /* an unknown flag */
    const char *unknown[] = {"--frobnicate", NULL};
    ck_assert_int_eq(harness_run_daemon(h, unknown, err), 2);
    /* an address in use (node 1's) */
    const char *in_use[] = {"--id", "x", "--listen", h->node[0].url,
                            "--data", other, "--log-level", "error", NULL};
    ck_assert_int_eq(harness_run_daemon(h, in_use, err), 1);
    expect_one_line(err, "in use");
    /* a data dir held by the running node */
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", harness_free_port());
    const char *busy[] = {"--id", "x", "--listen", url, "--data",
                          h->node[0].data, "--log-level", "error", NULL};
    ck_assert_int_eq(harness_run_daemon(h, busy, err), 1);
    expect_one_line(err, "in use by another process");
    /* a data dir that is a regular file */
    snprintf(other, sizeof(other), "%s/plainfile", h->dir);
    FILE *f = fopen(other, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    const char *file[] = {"--id", "x", "--listen", url, "--data", other,
                          "--log-level", "error", NULL};
    ck_assert_int_eq(harness_run_daemon(h, file, err), 1);
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

/* ------------------------------------------------ the CLI: status, stats */

/* The output and exit status of one kvdist run. */
typedef struct cli_run {
    int code;        /* exit status */
    int64_t ms;      /* how long it took */
    char out[65536]; /* stdout, NUL-terminated */
} cli_run_t;

/* Runs the CLI (KVDIST_BUILD/examples/kvdist) with args; its stderr goes to
 * the test's. Kills it by pid after bound_ms and fails the test. */
static void run_cli(cli_run_t *r, int bound_ms, const char *const *args)
{
    const char *build = getenv("KVDIST_BUILD");
    char path[512];
    snprintf(path, sizeof(path), "%s/examples/kvdist",
             build && *build ? build : "build");
    const char *argv[32];
    int a = 0;
    argv[a++] = path;
    for (int i = 0; args[i] != NULL && a < 31; i++) {
        argv[a++] = args[i];
    }
    argv[a] = NULL;
    int po[2];
    ck_assert_int_eq(pipe(po), 0);
    int64_t t0 = harness_now_ms();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(po[1], 1);
        close(po[0]);
        close(po[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    size_t got = 0;
    for (;;) {
        int64_t left = t0 + bound_ms - harness_now_ms();
        struct pollfd pf = {po[0], POLLIN, 0};
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(po[0]);
            ck_abort_msg("kvdist %s did not finish within %d ms", args[0],
                         bound_ms);
        }
        if (poll(&pf, 1, (int)left) <= 0) {
            continue;
        }
        char tmp[4096];
        ssize_t n = read(po[0], tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        size_t room = sizeof(r->out) - 1 - got;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(r->out + got, tmp, take);
        got += take;
    }
    close(po[0]);
    r->out[got] = '\0';
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    r->ms = harness_now_ms() - t0;
    ck_assert(WIFEXITED(status));
    r->code = WEXITSTATUS(status);
}

/* One line of `kvdist --exact status`, split at whitespace (the
 * anti-entropy column, which has spaces, is kept whole). */
typedef struct status_line {
    char id[72], url[512], status[16], share[16], keys[32], bytes[32],
        hints[32], aae[128];
} status_line_t;

/* Parses the status output into lines[] (header checked); returns how
 * many member lines there were. */
static int parse_status(const char *out, status_line_t *lines, int max)
{
    const char *nl = strchr(out, '\n');
    ck_assert_ptr_nonnull(nl);
    ck_assert_msg(strncmp(out, "ID ", 3) == 0 &&
                      strstr(out, "ANTI-ENTROPY") != NULL &&
                      strstr(out, "ANTI-ENTROPY") < nl,
                  "no header line in:\n%s", out);
    int n = 0;
    for (const char *l = nl + 1; *l != '\0' && n < max; n++) {
        status_line_t *s = &lines[n];
        int used = 0;
        int got =
            sscanf(l, "%71s %511s %15s %15s %31s %31s %31s %n", s->id, s->url,
                   s->status, s->share, s->keys, s->bytes, s->hints, &used);
        ck_assert_msg(got == 7, "bad status line: %s", l);
        const char *end = strchr(l, '\n');
        ck_assert_ptr_nonnull(end);
        snprintf(s->aae, sizeof(s->aae), "%.*s", (int)(end - (l + used)),
                 l + used);
        l = end + 1;
    }
    return n;
}


/* Sends peer requests to one node as fast as it answers (COORD_PUT,
 * COORD_GET, MEMBERS, a hinted REPLICA_PUT, GOSSIP, STATS in turn), across
 * its restarts, and counts the answers. */
typedef struct restart_load {
    const char *url;
    atomic_bool stop;
    atomic_int answered;
    atomic_int sent;
} restart_load_t;

static void *restart_load_main(void *arg)
{
    restart_load_t *l = arg;
    /* A stored object, for the hinted replica writes (held for n9). */
    obj_t o;
    obj_init(&o);
    vc_t empty;
    vc_init(&empty);
    buf_t enc;
    buf_init(&enc);
    if (obj_update(&o, &empty, (vc_dot_t){0x5e57a47, 1}, 1, 0, "hint", 4,
                   false) != 0 ||
        obj_encode(&o, &enc) != 0) {
        obj_free(&o);
        return NULL;
    }
    obj_free(&o);
    for (uint64_t i = 0; !atomic_load(&l->stop); i++) {
        char key[32];
        snprintf(key, sizeof(key), "restart-%llu", (unsigned long long)(i % 64));
        buf_t b;
        buf_init(&b);
        switch (i % 6) {
        case 0:
            wire_build_coord_put(&b, i + 1, 0, key, strlen(key), "v", 1, NULL,
                                 0, 0, 1000, 0);
            break;
        case 1:
            wire_build_coord_get(&b, i + 1, key, strlen(key), 0, 1000);
            break;
        case 2:
            wire_build_simple(&b, WIRE_MEMBERS, i + 1, 0);
            break;
        case 3:
            wire_build_hinted(&b, WIRE_REPLICA_PUT, i + 1, "n9", key,
                              strlen(key), enc.p, enc.len);
            break;
        case 4:
            /* A gossip table naming only members it knows already. */
            wire_header(&b, WIRE_GOSSIP, i + 1, 0, 0);
            buf_put_varint(&b, 0);
            break;
        default:
            wire_build_simple(&b, WIRE_STATS, i + 1, 0);
            break;
        }
        atomic_fetch_add(&l->sent, 1);
        nng_msg *reply = harness_raw_request(l->url, b.p, b.len, 300);
        buf_free(&b);
        if (reply != NULL) {
            atomic_fetch_add(&l->answered, 1);
            nng_msg_free(reply);
        }
    }
    buf_free(&enc);
    return NULL;
}

/*
 * A node restarted 50 times while its peers gossip to it every 10 ms and
 * a client sends it coordinated writes and reads: every start completes,
 * every stop is clean (a crash would be a signal, not exit 0), and it
 * answers between restarts. Before the modules opened ahead of the
 * listener, a message in the window between listening and opening the
 * member list or the hint store dereferenced NULL.
 */
START_TEST(test_restart_under_traffic)
{
    /* A request on a connection the stopping node closes must fail, not
     * kill the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    harness_t *h = harness_create(3);
    const char *fast[] = {"--gossip-interval-ms", "10", NULL};
    harness_start_all(h, fast);
    harness_wait_converged(h);
    restart_load_t load = {.url = h->node[1].url};
    atomic_init(&load.stop, false);
    atomic_init(&load.answered, 0);
    atomic_init(&load.sent, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, restart_load_main, &load), 0);
    int restarts = 0, unclean = 0, silent = 0;
    for (; restarts < 50; restarts++) {
        int before = atomic_load(&load.answered);
        /* Up until it has answered a request, bounded. */
        int64_t deadline = harness_now_ms() + 5000;
        while (atomic_load(&load.answered) == before &&
               harness_now_ms() < deadline) {
            harness_sleep_ms(5);
        }
        silent += atomic_load(&load.answered) == before;
        if (harness_stop_status(h, 1) != 0) {
            unclean++;
            break;
        }
        harness_start(h, 1, fast);
    }
    atomic_store(&load.stop, true);
    pthread_join(t, NULL);
    int answered = atomic_load(&load.answered);
    harness_wait_converged(h);
    char *log = util_read_file(h->node[1].log);
    bool sanitizer = strstr(log, "Sanitizer") != NULL ||
                     strstr(log, "runtime error") != NULL;
    /* Not asserted: this load keeps sending to n2 while it closes, which
     * no announcement can stop (a peer would have stopped), and NNG 1.5.2
     * can wedge a close then (rpc_destroy). The figure is printed. */
    int abandoned = 0;
    for (const char *a = log; (a = strstr(a, "abandoning")) != NULL; a++) {
        abandoned++;
    }
    free(log);
    harness_destroy(h);
    ck_assert_msg(unclean == 0, "node n2 stopped uncleanly after %d restarts",
                  restarts);
    ck_assert_int_eq(restarts, 50);
    ck_assert_msg(!sanitizer, "a sanitizer report in n2's log");
    /* It answered after every start, not only before the first. */
    ck_assert_msg(silent == 0, "%d of 50 starts answered nothing in 5 s",
                  silent);
    printf("restart: n2 restarted 50 times under gossip and %d requests, "
           "%d answered, every stop clean, %d of 50 needed the close bound\n",
           atomic_load(&load.sent), answered, abandoned);
}
END_TEST

/* `name value` of a stats output line, or -1. */
static long long stats_value(const char *out, const char *name)
{
    size_t len = strlen(name);
    for (const char *l = out; l != NULL && *l != '\0';) {
        if (strncmp(l, name, len) == 0 && l[len] == ' ') {
            return atoll(l + len + 1);
        }
        l = strchr(l, '\n');
        l = l != NULL ? l + 1 : NULL;
    }
    return -1;
}

START_TEST(test_cli_status_and_stats)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 5000);
    for (int i = 0; i < 40; i++) {
        char k[32];
        snprintf(k, sizeof(k), "status-key-%d", i);
        put_ok(c, k, "some value");
    }

    /* The library call: another member's text; unknown and empty ids. */
    char *text = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_node_metrics(c, "n2", &text, &len), 0);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_nonnull(strstr(text, "\nkvdist_replica_writes_total "));
    ck_assert_ptr_nonnull(strstr(text, "# TYPE kvdist_store_bytes gauge\n"));
    ck_assert_ptr_nonnull(
        strstr(text, "# TYPE kvdist_ring_share_ratio gauge\n"));
    kv_free(text);
    text = (char *)"untouched";
    ck_assert_int_eq(kv_node_metrics(c, "no-such-node", &text, &len),
                     KV_EUNAVAIL);
    ck_assert_ptr_null(text);
    ck_assert_int_eq(kv_node_metrics(c, "", &text, NULL), KV_EINVAL);
    ck_assert_int_eq(kv_node_metrics(c, "n1", NULL, NULL), KV_EINVAL);
    kv_close(c);

    /* Every member up with its figures. With n=3 every node holds every
     * key; RocksDB's key estimate counts memtable entries, so it is > 0
     * without a flush, but it is polled in case a node lags behind. */
    const char *url1 = h->node[0].url;
    cli_run_t *r = malloc(sizeof(*r));
    ck_assert_ptr_nonnull(r);
    status_line_t lines[8];
    int64_t deadline = harness_now_ms() + 20000;
    for (;;) {
        const char *args[] = {"-c", url1, "--exact", "status", NULL};
        run_cli(r, 15000, args);
        ck_assert_msg(r->code == 0, "status exited %d", r->code);
        ck_assert_int_eq(parse_status(r->out, lines, 8), 3);
        int ready = 0;
        for (int i = 0; i < 3; i++) {
            ready +=
                atoll(lines[i].keys) > 0 && strcmp(lines[i].status, "up") == 0;
        }
        if (ready == 3) {
            break;
        }
        ck_assert_msg(harness_now_ms() < deadline,
                      "status never showed keys on 3 nodes:\n%s", r->out);
        harness_sleep_ms(200);
    }
    double share_sum = 0;
    for (int i = 0; i < 3; i++) {
        status_line_t *s = &lines[i];
        ck_assert_str_eq(s->id, h->node[i].id);
        ck_assert_str_eq(s->url, h->node[i].url);
        char *pct = strchr(s->share, '%');
        ck_assert_msg(pct != NULL && pct[1] == '\0', "share %s", s->share);
        double share = atof(s->share);
        ck_assert_msg(share > 10 && share < 60, "share %s", s->share);
        share_sum += share;
        ck_assert_int_le(atoll(s->keys), 40);
        ck_assert_int_gt(atoll(s->bytes), 0);
        ck_assert_str_eq(s->hints, "0");
        ck_assert_msg(strncmp(s->aae, "idle", 4) == 0 ||
                          strncmp(s->aae, "running ", 8) == 0 ||
                          strcmp(s->aae, "building trees") == 0,
                      "anti-entropy '%s'", s->aae);
    }
    ck_assert_msg(share_sum > 99.6 && share_sum < 100.4, "shares sum to %f",
                  share_sum);
    /* Without --exact, sizes carry a unit. */
    {
        const char *args[] = {"-c", url1, "status", NULL};
        run_cli(r, 15000, args);
        ck_assert_int_eq(r->code, 0);
        ck_assert_msg(strstr(r->out, " KiB ") != NULL ||
                          strstr(r->out, " MiB ") != NULL ||
                          strstr(r->out, " B ") != NULL,
                      "no unit in:\n%s", r->out);
    }

    /* stats NODE: samples only, and the replica writes n2 took. */
    {
        const char *args[] = {"-c", url1, "stats", "n2", NULL};
        run_cli(r, 15000, args);
        ck_assert_int_eq(r->code, 0);
        ck_assert_ptr_null(strchr(r->out, '#'));
        for (const char *l = r->out; *l != '\0';) {
            const char *sp = strchr(l, ' ');
            const char *nl = strchr(l, '\n');
            const char *sp2 = sp != NULL ? strchr(sp + 1, ' ') : NULL;
            ck_assert_msg(nl != NULL && sp != NULL && sp < nl && sp > l &&
                              sp + 1 < nl && (sp2 == NULL || sp2 > nl),
                          "not 'name value': %s", l);
            l = nl + 1;
        }
    }
    long long n2_writes = stats_value(r->out, "kvdist_replica_writes_total");
    ck_assert_int_gt(n2_writes, 0);
    ck_assert_int_eq(stats_value(r->out, "kvdist_store_keys_estimate") > 0, 1);
    ck_assert_ptr_nonnull(strstr(r->out, "\nkvdist_member_up{id=\"n3\"} 1\n"));
    /* Without NODE: the contacted node, the member at the -c URL. */
    {
        const char *args[] = {"-c", h->node[1].url, "stats", NULL};
        run_cli(r, 15000, args);
        ck_assert_int_eq(r->code, 0);
        ck_assert_int_eq(stats_value(r->out, "kvdist_replica_writes_total"),
                         n2_writes);
    }
    {
        const char *args[] = {"-c", url1, "stats", "n9", NULL};
        run_cli(r, 15000, args);
        ck_assert_int_eq(r->code, 1);
        ck_assert_str_eq(r->out, "");
    }

    /* n3 dies: its line says down with "-" figures (its ring share is
     * the contacted node's and stays), and the command still answers, in
     * a bounded time: a member seen down is not asked. One seen up that
     * does not answer costs at most --timeout, asked with the others. */
    harness_kill(h, 2);
    deadline = harness_now_ms() + 30000;
    for (;;) {
        const char *args[] = {"-c",      url1,     "--timeout", "2000",
                              "--exact", "status", NULL};
        run_cli(r, 15000, args);
        ck_assert_msg(r->code == 0, "status exited %d", r->code);
        ck_assert_int_eq(parse_status(r->out, lines, 8), 3);
        ck_assert_msg(r->ms < 3 * 2000 + 2000, "status took %lld ms",
                      (long long)r->ms);
        if (strcmp(lines[2].status, "down") == 0) {
            break;
        }
        ck_assert_str_eq(lines[2].status, "up");
        ck_assert_msg(harness_now_ms() < deadline, "n3 never shown down");
        harness_sleep_ms(100);
    }
    ck_assert_msg(r->ms < 2000, "status with n3 down took %lld ms",
                  (long long)r->ms);
    ck_assert_str_eq(lines[2].id, "n3");
    ck_assert_str_eq(lines[2].keys, "-");
    ck_assert_str_eq(lines[2].bytes, "-");
    ck_assert_str_eq(lines[2].hints, "-");
    ck_assert_str_eq(lines[2].aae, "-");
    ck_assert_msg(atof(lines[2].share) > 10, "n3 share %s", lines[2].share);
    for (int i = 0; i < 2; i++) {
        ck_assert_str_eq(lines[i].status, "up");
        ck_assert_int_gt(atoll(lines[i].keys), 0);
    }
    {
        const char *args[] = {"-c",    url1, "--timeout", "1000",
                              "stats", "n3", NULL};
        run_cli(r, 15000, args);
        ck_assert_int_eq(r->code, 4);
        ck_assert_msg(r->ms < 1000 + 2000, "stats n3 took %lld ms",
                      (long long)r->ms);
    }
    free(r);
    harness_destroy(h);
}
END_TEST

/* The names in examples/kvdist.c's commands table, read from the source
 * so that a command added there without help fails below. */
static int cli_table_names(char names[][32], int max)
{
    char src[1024];
    snprintf(src, sizeof(src), "%s", __FILE__);
    char path[1100];
    snprintf(path, sizeof(path), "%s/../examples/kvdist.c", dirname(src));
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    char line[512];
    int in = 0;
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "command_t commands[] = {") != NULL) {
            in = 1;
            continue;
        }
        if (in && strncmp(line, "};", 2) == 0) {
            break;
        }
        char name[32];
        if (in && n < max && sscanf(line, " {\"%31[^\"]\"", name) == 1) {
            snprintf(names[n++], sizeof(names[0]), "%s", name);
        }
    }
    fclose(f);
    ck_assert_msg(in, "no commands table in %s", path);
    return n;
}

START_TEST(test_cli_help_lists_every_command)
{
    static const char *const expected[] = {
        "put",    "get",   "del",    "members",       "where",
        "status", "stats", "repair", "repair-status", NULL};
    char names[64][32];
    int n = cli_table_names(names, 64);
    for (int e = 0; expected[e] != NULL; e++) {
        int found = 0;
        for (int i = 0; i < n; i++) {
            found |= strcmp(names[i], expected[e]) == 0;
        }
        ck_assert_msg(found, "command %s not in the table", expected[e]);
    }
    cli_run_t *r = malloc(sizeof(*r));
    ck_assert_ptr_nonnull(r);
    const char *help[] = {"--help", NULL};
    run_cli(r, 10000, help);
    ck_assert_int_eq(r->code, 0);
    const char *cmds = strstr(r->out, "\ncommands:\n");
    const char *opts = strstr(r->out, "\noptions:\n");
    ck_assert_ptr_nonnull(cmds);
    ck_assert_ptr_nonnull(opts);
    for (int i = 0; i < n; i++) {
        /* "  NAME[ ARGS]  description" within the commands section. */
        char pat[64];
        snprintf(pat, sizeof(pat), "\n  %.31s ", names[i]);
        const char *at = strstr(cmds, pat);
        ck_assert_msg(at != NULL && at < opts, "--help has no line for %s",
                      names[i]);
        const char *eol = strchr(at + 1, '\n');
        const char *gap = strstr(at + strlen(pat) - 1, "  ");
        ck_assert_msg(gap != NULL && gap < eol && gap + 2 < eol &&
                          gap[strspn(gap, " ")] != '\n',
                      "--help line of %s has no description", names[i]);
    }
    const char *unknown[] = {"no-such-command", NULL};
    run_cli(r, 10000, unknown);
    ck_assert_int_eq(r->code, 2);
    const char *extra[] = {"status", "extra", NULL};
    run_cli(r, 10000, extra);
    ck_assert_int_eq(r->code, 2);
    free(r);
}
END_TEST

START_TEST(test_node_metrics_local)
{
    /* An embedded store: NULL and its own id are kv_metrics; any other id
     * is no member it can reach. */
    char *dir = util_tmpdir("nodemetrics");
    kv_options_t *o = kv_options_create();
    char path[512];
    snprintf(path, sizeof(path), "%s/a", dir);
    ck_assert_int_eq(kv_options_set(o, "data_dir", path), 0);
    ck_assert_int_eq(kv_options_set(o, "node_id", "a"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_options_destroy(o);
    put_ok(kv, "k", "v");
    char *mine = NULL;
    char *text = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_metrics(kv, &mine, NULL), 0);
    ck_assert_int_eq(kv_node_metrics(kv, NULL, &text, &len), 0);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_nonnull(strstr(text, "\nkvdist_puts_total 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nkvdist_store_keys_estimate "));
    kv_free(text);
    ck_assert_int_eq(kv_node_metrics(kv, "a", &text, NULL), 0);
    ck_assert_ptr_nonnull(strstr(text, "\nkvdist_puts_total 1\n"));
    kv_free(text);
    ck_assert_int_eq(kv_node_metrics(kv, "b", &text, &len), KV_EUNAVAIL);
    ck_assert_ptr_null(text);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(kv_node_metrics(NULL, NULL, &text, NULL), KV_EINVAL);
    kv_free(mine);
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
    tcase_add_test(tc, test_cli_status_and_stats);
    suite_add_tcase(s, tc);
    TCase *rs = tcase_create("restart");
    tcase_set_timeout(rs, 300);
    tcase_add_test(rs, test_restart_under_traffic);
    suite_add_tcase(s, rs);
    TCase *ip = tcase_create("inprocess");
    tcase_set_timeout(ip, 120);
    tcase_add_test(ip, test_concurrent_coordinators_make_siblings);
    tcase_add_test(ip, test_malformed_counted_in_process);
    tcase_add_test(ip, test_node_metrics_local);
    tcase_add_test(ip, test_cli_help_lists_every_command);
    suite_add_tcase(s, ip);
    return s;
}
