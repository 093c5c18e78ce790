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
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "kvdist.h"
#include "object.h"
#include "wire.h"

static const wire_limits_t big_limits = {1 << 16, 1 << 24, 1 << 26};

/* Sends one raw message to url and returns the reply (nng_msg to free),
 * or NULL when nothing came back within timeout_ms. */
static nng_msg *raw_request(const char *url, const void *p, size_t len,
                            int timeout_ms)
{
    nng_socket s;
    ck_assert_int_eq(nng_req0_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_msg *reply = NULL;
    if (nng_dial(s, url, NULL, 0) == 0 && nng_send(s, (void *)p, len, 0) == 0) {
        if (nng_recvmsg(s, &reply, 0) != 0) {
            reply = NULL;
        }
    }
    nng_close(s);
    return reply;
}

/* What node `url` holds for key in its own store: the number of live
 * siblings (-1 if the request failed); *val gets the first live value. */
static int local_get(const char *url, const char *key, char *val,
                     size_t valsize)
{
    buf_t b;
    buf_init(&b);
    wire_build_key(&b, WIRE_LOCAL_GET, 1, key, strlen(key));
    nng_msg *reply = raw_request(url, b.p, b.len, 2000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    wire_msg_t m;
    int live = -1;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply), &big_limits,
                    &m) == 0 &&
        m.status == 0) {
        obj_t o;
        obj_init(&o);
        obj_limits_t lim = {1 << 24, 1024, 4096};
        if (m.objlen == 0) {
            live = 0;
        } else if (obj_decode(m.obj, m.objlen, &lim, &o) == 0) {
            live = (int)obj_live(&o);
            for (size_t i = 0; i < o.n && val != NULL; i++) {
                if (!(o.sib[i].flags & OBJ_SIB_TOMBSTONE)) {
                    size_t n = o.sib[i].vlen < valsize - 1 ? o.sib[i].vlen
                                                           : valsize - 1;
                    memcpy(val, o.sib[i].val, n);
                    val[n] = '\0';
                    break;
                }
            }
        }
        obj_free(&o);
    }
    nng_msg_free(reply);
    return live;
}

/* Polls until node url holds `want` as its single live value. */
static int wait_local_value(const char *url, const char *key,
                            const char *want, int bound_ms)
{
    int64_t deadline = harness_now_ms() + bound_ms;
    while (harness_now_ms() < deadline) {
        char v[256] = "";
        if (local_get(url, key, v, sizeof(v)) == 1 && strcmp(v, want) == 0) {
            return 1;
        }
        harness_sleep_ms(20);
    }
    return 0;
}

/* One counter from node url's metrics (WIRE_STATS), or -1. */
static long long remote_stat(const char *url, const char *name)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_STATS, 1, 0);
    nng_msg *reply = raw_request(url, b.p, b.len, 2000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    long long v = -1;
    wire_msg_t m;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply), &big_limits,
                    &m) == 0 &&
        m.status == 0) {
        char *text = strndup((const char *)m.obj, m.objlen);
        char pat[128];
        snprintf(pat, sizeof(pat), "\n%s ", name);
        char *at = strstr(text, pat);
        if (at != NULL) {
            v = atoll(at + strlen(pat));
        }
        free(text);
    }
    nng_msg_free(reply);
    return v;
}

static void wait_status(kv_t *kv, const char *id, int status)
{
    int64_t deadline = harness_now_ms() + 10000;
    while (harness_now_ms() < deadline) {
        kv_member_t *m = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_members(kv, &m, &n), 0);
        int seen = -1;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(m[i].id, id) == 0) {
                seen = m[i].status;
            }
        }
        kv_free(m);
        if (seen == status) {
            return;
        }
        harness_sleep_ms(20);
    }
    ck_abort_msg("%s never became %s", id, kv_member_status_name(status));
}

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
                ck_assert_msg(wait_local_value(h->node[i].url, key, val, 5000),
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
                held_by_non_owner += local_get(h->node[i].url, key, NULL, 0);
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
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 3);
    put_ok(c, "before", "1");

    harness_stop(h, 2);
    wait_status(c, "n3", KV_MEMBER_DOWN);
    kv_call_t call = KV_CALL_INIT;
    ck_assert_int_eq(kv_put_ctx(c, "one-down", 8, "2", 1, NULL, 0, &call), 0);
    ck_assert_int_eq(call.needed, 2);
    ck_assert_int_ge(call.acked, 2);
    get_expect(c, "one-down", "2");
    get_expect(c, "before", "1");

    harness_stop(h, 1);
    wait_status(c, "n2", KV_MEMBER_DOWN);
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
    harness_start_all(h, NULL);
    kv_t *c = harness_client(h, 2000);
    harness_wait_members(c, 3);
    put_ok(c, "k", "old");
    ck_assert(wait_local_value(h->node[2].url, "k", "old", 5000));
    harness_stop(h, 2);
    wait_status(c, "n3", KV_MEMBER_DOWN);
    long long before = remote_stat(h->node[0].url, "kvdist_rpc_timeouts_total") +
                       remote_stat(h->node[1].url, "kvdist_rpc_timeouts_total");
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
    /* the coordinators' requests to n3 must have timed out (not be queued
     * for its return) before it comes back */
    int64_t deadline = harness_now_ms() + 5000;
    while (remote_stat(h->node[0].url, "kvdist_rpc_timeouts_total") +
               remote_stat(h->node[1].url, "kvdist_rpc_timeouts_total") <
           before + 2) {
        ck_assert_int_lt(harness_now_ms(), deadline);
        harness_sleep_ms(20);
    }
    harness_start(h, 2, NULL);
    wait_status(c, "n3", KV_MEMBER_UP);
    /* n3 missed both writes */
    char v[64] = "";
    ck_assert_int_eq(local_get(h->node[2].url, "k", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "old");
    ck_assert_int_eq(local_get(h->node[2].url, "fresh", NULL, 0), 0);
    /* a read that reaches it repairs it in the background */
    call = (kv_call_t)KV_CALL_INIT;
    call.r = 3;
    kv_siblings_t *s = NULL;
    ck_assert_int_eq(kv_get_siblings(c, "k", 1, &call, &s), 0);
    ck_assert_uint_eq(kv_siblings_count(s), 1);
    kv_siblings_free(s);
    get_expect(c, "fresh", "only-two");
    ck_assert(wait_local_value(h->node[2].url, "k", "new", 5000));
    ck_assert(wait_local_value(h->node[2].url, "fresh", "only-two", 5000));
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_malformed_messages_leave_node_serving)
{
    harness_t *h = harness_create(1);
    harness_start_all(h, NULL);
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
        nng_msg *r = raw_request(url, p, len, 2000);
        if (r != NULL) {
            wire_msg_t m;
            ck_assert_int_eq(wire_decode(nng_msg_body(r), nng_msg_len(r),
                                         &big_limits, &m),
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
    nng_msg *r = raw_request(url, b.p, b.len - 3, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    /* well-formed message, corrupt object: refused, nothing stored */
    r = raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(nng_msg_body(r), nng_msg_len(r), &big_limits,
                                 &m),
                     0);
    ck_assert_uint_eq(m.status, KV_ECORRUPT);
    nng_msg_free(r);
    ck_assert_int_eq(local_get(url, "key", NULL, 0), 0);
    /* wrong version */
    b.p[2] = 99;
    r = raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    buf_free(&b);
    /* a huge length prefix */
    wire_header(&b, WIRE_REPLICA_GET, 1, 0, 0);
    buf_put_varint(&b, UINT64_MAX / 2);
    r = raw_request(url, b.p, b.len, 2000);
    ck_assert_ptr_nonnull(r);
    nng_msg_free(r);
    buf_free(&b);
    /* a message over the receive limit (default 16MiB values) is cut off
     * by the transport: no reply, connection dropped */
    size_t huge = (size_t)100 << 20;
    uint8_t *p = calloc(1, huge);
    ck_assert_ptr_nonnull(p);
    r = raw_request(url, p, huge, 2000);
    ck_assert_ptr_null(r);
    free(p);
    /* raw TCP garbage, not even the SP handshake */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)h->node[0].port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char junk[4096];
    memset(junk, 0xa5, sizeof(junk));
    ck_assert_int_gt(write(fd, junk, sizeof(junk)), 0);
    close(fd);
    /* still serving */
    ck_assert_int_eq(kill(h->node[0].pid, 0), 0);
    kv_t *c = harness_client(h, 2000);
    put_ok(c, "after", "still-here");
    get_expect(c, "after", "still-here");
    kv_close(c);
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
        snprintf(url[i], sizeof(url[i]), "ipc://%s/%s.sock", dir, ids[i]);
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
    snprintf(url, sizeof(url), "ipc://%s/a.sock", dir);
    kv_t *kv = open_peer(dir, "a", url, NULL);
    for (int i = 0; i < 5; i++) {
        nng_msg *r = raw_request(url, "garbage", 7, 2000);
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
    suite_add_tcase(s, tc);
    TCase *ip = tcase_create("inprocess");
    tcase_set_timeout(ip, 120);
    tcase_add_test(ip, test_concurrent_coordinators_make_siblings);
    tcase_add_test(ip, test_malformed_counted_in_process);
    suite_add_tcase(s, ip);
    return s;
}
