/*
 * check_rpc.c - the transport's batching (rpc.c), in one process over
 * ipc://: requests that queue behind messages in flight travel as one
 * batch and each gets its own reply; replies too large to share a batch
 * reply are sent again alone and still answered correctly; shutdown fails
 * what is still queued; a refused dial is seen at once. The wire framing
 * itself is tested in check_wire.c.
 * Also the monotonic timed waits every module's threads use (clock.h), and
 * a synchronous call's bounded wait for its verdict (waiter.c).
 */
#include "check_kvdist.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "kvdist.h"
#include "log.h"
#include "object.h"
#include "rpc.h"
#include "waiter.h"
#include "wire.h"

/* Large replies: bigger than WIRE_SMALL_REPLY (64 KiB), and two of them
 * exceed the single-message limit these limits give (about 300 KiB). */
#define BIG_REPLY (160 * 1024)

static const wire_limits_t rpc_lim = {64, 100 * 1024, 200 * 1024};

typedef struct server {
    rpc_t *rpc;
    metrics_t metrics;
    kvlog_t log;
    pthread_mutex_t mu;
    rpc_req_t *held[RPC_INFLIGHT]; /* the first requests, answered late */
    uint64_t held_id[RPC_INFLIGHT];
    int nheld;
    atomic_int seen;
} server_t;

static void fill(uint8_t *p, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(id * 31 + i);
    }
}

/* STATS requests get a BIG_REPLY payload derived from their id; PINGs an
 * empty reply. The first RPC_INFLIGHT requests (what the client sends
 * at once) are held, so the client queues the ones behind them. */
static void answer(rpc_req_t *req, uint8_t type, uint64_t id)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, type | WIRE_REPLY, id, 0, 0);
    if (type == WIRE_STATS) {
        uint8_t *p = malloc(BIG_REPLY);
        fill(p, BIG_REPLY, id);
        wire_put_bytes(&b, p, BIG_REPLY);
        free(p);
    }
    rpc_reply(req, &b);
}

static void server_handle(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    server_t *s = arg;
    atomic_fetch_add(&s->seen, 1);
    pthread_mutex_lock(&s->mu);
    if (s->nheld < RPC_INFLIGHT) {
        s->held[s->nheld] = req;
        s->held_id[s->nheld] = m->id;
        s->nheld++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    answer(req, m->type, m->id);
}

static void server_start(server_t *s, const char *url)
{
    memset(s, 0, sizeof(*s));
    metrics_init(&s->metrics);
    s->log.level = KV_LOG_ERROR;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->seen, 0);
    rpc_config_t cfg = {.limits = rpc_lim,
                        .log = &s->log,
                        .metrics = &s->metrics,
                        .listen_url = url};
    ck_assert_int_eq(rpc_create(&cfg, &s->rpc), 0);
    ck_assert_int_eq(rpc_handle(s->rpc, WIRE_PING, server_handle, s, RPC_RUN_INLINE), 0);
    ck_assert_int_eq(rpc_handle(s->rpc, WIRE_STATS, server_handle, s, RPC_RUN_INLINE), 0);
    /* One handler a type; replies are never handled. */
    ck_assert_int_eq(rpc_handle(s->rpc, WIRE_PING, server_handle, s, RPC_RUN_INLINE),
                     KV_EINVAL);
    ck_assert_int_eq(
        rpc_handle(s->rpc, WIRE_PING | WIRE_REPLY, server_handle, s, RPC_RUN_INLINE),
        KV_EINVAL);
    ck_assert_int_eq(rpc_listen(s->rpc, url), 0);
    /* The table is fixed once the node listens. */
    ck_assert_int_eq(rpc_handle(s->rpc, WIRE_GOSSIP, server_handle, s, RPC_RUN_INLINE),
                     KV_EINVAL);
}

/* Answers the held requests (they carried type). */
static void server_release(server_t *s, uint8_t type)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nheld;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        answer(s->held[i], type, s->held_id[i]);
    }
}

typedef struct call {
    uint64_t id;
    atomic_int done;
    int rc;
    bool ok; /* the reply was this call's own */
} call_t;

static void call_done(void *arg, int rc, const wire_msg_t *reply)
{
    call_t *c = arg;
    c->rc = rc;
    if (rc == 0) {
        c->ok = reply->id == c->id && reply->status == 0;
        if (c->ok && (reply->type & ~WIRE_REPLY) == WIRE_STATS) {
            uint8_t *want = malloc(BIG_REPLY);
            fill(want, BIG_REPLY, c->id);
            c->ok = reply->objlen == BIG_REPLY &&
                    memcmp(reply->obj, want, BIG_REPLY) == 0;
            free(want);
        }
    }
    atomic_store(&c->done, 1);
}

static rpc_t *client_new(metrics_t *m, kvlog_t *log)
{
    metrics_init(m);
    log->level = KV_LOG_ERROR;
    rpc_config_t cfg = {.limits = rpc_lim, .log = log, .metrics = m};
    rpc_t *rpc = NULL;
    ck_assert_int_eq(rpc_create(&cfg, &rpc), 0);
    return rpc;
}

/* Starts one request of type to p as c; rpc_call's result (0: c is
 * answered through call_done). */
static int call_start(rpc_t *cli, rpc_peer_t *p, uint8_t type, call_t *c)
{
    memset(c, 0, sizeof(*c));
    atomic_init(&c->done, 0);
    c->id = rpc_next_id(cli);
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, type, c->id, 0);
    return rpc_call(cli, p, &b, 10000, call_done, c);
}

/* Sends n requests of type from this thread, back to back. */
static void send_calls(rpc_t *cli, rpc_peer_t *p, uint8_t type, call_t *c,
                       int n)
{
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(call_start(cli, p, type, &c[i]), 0);
    }
}

static void wait_seen(server_t *s, int n)
{
    int64_t deadline = harness_now_ms() + 10000;
    while (atomic_load(&s->seen) < n) {
        ck_assert_msg(harness_now_ms() < deadline,
                      "server saw %d requests, expected %d",
                      atomic_load(&s->seen), n);
        harness_sleep_ms(2);
    }
}

static void wait_calls(call_t *c, int n)
{
    int64_t deadline = harness_now_ms() + 10000;
    for (int i = 0; i < n; i++) {
        while (!atomic_load(&c[i].done)) {
            ck_assert_msg(harness_now_ms() < deadline, "call %d unanswered",
                          i);
            harness_sleep_ms(2);
        }
    }
}

/* A server and a client rpc over ipc:// in a fresh directory. */
typedef struct fixture {
    char *dir;
    server_t s;
    metrics_t cm;
    kvlog_t clog;
    rpc_t *cli; /* NULL once destroyed */
    rpc_peer_t *p;
} fixture_t;

static void fixture_open(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    f->dir = util_tmpdir("rpc");
    char url[512];
    snprintf(url, sizeof(url), "ipc://%s/rpc.sock", f->dir);
    server_start(&f->s, url);
    f->cli = client_new(&f->cm, &f->clog);
    f->p = rpc_peer(f->cli, url, NULL);
    ck_assert_ptr_nonnull(f->p);
}

static void fixture_close(fixture_t *f)
{
    rpc_destroy(f->cli);
    rpc_destroy(f->s.rpc);
    pthread_mutex_destroy(&f->s.mu);
    util_rmtree(f->dir);
    free(f->dir);
}

/* Ten requests from one thread: RPC_INFLIGHT go out at once and are
 * held, the others queue and go as one batch once the held ones return. Each must get its
 * own large reply; all but one of the batched ones come back empty and
 * are sent again alone. */
static void run_batch(uint8_t type, int *batches, int *resends)
{
    fixture_t f;
    fixture_open(&f);
    enum { N = 10 };
    call_t c[N];
    send_calls(f.cli, f.p, type, c, N);
    wait_seen(&f.s, RPC_INFLIGHT);
    harness_sleep_ms(50); /* the others are queued by now */
    server_release(&f.s, type);
    wait_calls(c, N);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(c[i].rc == 0 && c[i].ok, "call %d: rc %d ok %d", i,
                      c[i].rc, c[i].ok);
    }
    uint64_t v = 0;
    ck_assert_int_eq(metrics_lookup(&f.cm, "kvdist_rpc_batches_total", &v),
                     0);
    *batches = (int)v;
    ck_assert_int_eq(metrics_lookup(&f.cm, "kvdist_rpc_resent_total", &v), 0);
    *resends = (int)v;
    fixture_close(&f);
}

START_TEST(test_queued_requests_share_a_batch)
{
    int batches = 0;
    int resends = 0;
    run_batch(WIRE_PING, &batches, &resends);
    ck_assert_int_ge(batches, 1);
    ck_assert_int_eq(resends, 0); /* small replies always fit */
}
END_TEST

START_TEST(test_large_replies_sent_again_alone)
{
    int batches = 0;
    int resends = 0;
    run_batch(WIRE_STATS, &batches, &resends);
    ck_assert_int_ge(batches, 1);
    /* Only one large reply fits a batch reply: every batch of k entries
     * sends k - 1 of them again. */
    ck_assert_int_ge(resends, 1);
}
END_TEST

/* Closing with requests queued behind held ones fails every one of them,
 * exactly once, with KV_ECLOSED. */
START_TEST(test_destroy_fails_queued_requests)
{
    fixture_t f;
    fixture_open(&f);
    enum { N = 6 };
    call_t c[N];
    send_calls(f.cli, f.p, WIRE_PING, c, N);
    wait_seen(&f.s, RPC_INFLIGHT);
    rpc_destroy(f.cli); /* RPC_INFLIGHT in flight, the others queued */
    f.cli = NULL;
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&c[i].done), 1);
        ck_assert_int_eq(c[i].rc, KV_ECLOSED);
    }
    server_release(&f.s, WIRE_PING); /* answers that nobody waits for */
    fixture_close(&f);
}
END_TEST

/* A refused dial makes its peer unreachable at once, not at the end of
 * RPC_CONNECT_GRACE_MS, whichever of the process's dialers it is: NNG
 * 1.5.2's nng_stat_find_dialer returns the first dialer whatever the id,
 * so the refusals of every later one went unseen (a fresh kvdist CLI
 * waited a whole hop on a killed node). The live peer, dialled first,
 * stays reachable, and a call to the refusing one fails as not sent. */
START_TEST(test_refused_dial_seen_at_once)
{
    fixture_t f;
    fixture_open(&f);
    int64_t deadline = harness_now_ms() + 10000;
    while (!rpc_peer_connected(f.p)) {
        ck_assert_msg(harness_now_ms() < deadline, "no connection");
        harness_sleep_ms(2);
    }
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", harness_free_port());
    int64_t t0 = harness_now_ms();
    rpc_peer_t *dead = rpc_peer(f.cli, url, NULL);
    ck_assert_ptr_nonnull(dead);
    while (rpc_peer_reachable(dead)) {
        ck_assert_msg(harness_now_ms() < deadline, "%s still reachable", url);
        harness_sleep_ms(2);
    }
    int64_t took = harness_now_ms() - t0;
    ck_assert_msg(took < RPC_CONNECT_GRACE_MS,
                  "the refusal was seen after %lld ms, when the grace ended",
                  (long long)took);
    ck_assert(rpc_peer_reachable(f.p));
    call_t c;
    int rc = call_start(f.cli, dead, WIRE_PING, &c);
    if (rc == 0) {
        wait_calls(&c, 1);
        rc = c.rc;
    }
    ck_assert_int_eq(rc, KV_EUNAVAIL);
    fixture_close(&f);
}
END_TEST

/* A condition made by clk_cond_init measures clk_deadline on the
 * monotonic clock: the wait lasts its full length. On a CLOCK_REALTIME
 * condition the same deadline (seconds since boot) lies decades in the
 * past and the wait returns at once, so this fails if either helper
 * drifts from the other. */
START_TEST(test_monotonic_timed_wait)
{
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_init(&mu, NULL);
    ck_assert_int_eq(clk_cond_init(&cv), 0);
    struct timespec before;
    clock_gettime(CLOCK_MONOTONIC, &before);
    struct timespec dl = clk_deadline(150);
    int64_t want = (int64_t)before.tv_sec * 1000 + before.tv_nsec / 1000000 +
                   150;
    int64_t got = (int64_t)dl.tv_sec * 1000 + dl.tv_nsec / 1000000;
    ck_assert_int_ge(got, want);
    ck_assert_int_lt(got, want + 1000);
    ck_assert_int_lt(dl.tv_nsec, 1000000000L);
    int64_t t0 = clk_mono_ms();
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc == 0) { /* a spurious wake-up waits again */
        rc = pthread_cond_timedwait(&cv, &mu, &dl);
    }
    pthread_mutex_unlock(&mu);
    int64_t waited = clk_mono_ms() - t0;
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_msg(waited >= 140, "returned after %lld ms", (long long)waited);
    /* A negative length is "now", not a wait of years. */
    dl = clk_deadline(-5000);
    pthread_mutex_lock(&mu);
    rc = pthread_cond_timedwait(&cv, &mu, &dl);
    pthread_mutex_unlock(&mu);
    ck_assert_int_eq(rc, ETIMEDOUT);
    pthread_cond_destroy(&cv);
    pthread_mutex_destroy(&mu);
}
END_TEST

/* Collects what the library logs at error level (one test at a time). */
typedef struct logcap {
    pthread_mutex_t mu;
    char text[1024];
} logcap_t;

static void logcap_fn(void *arg, int level, const char *msg)
{
    logcap_t *c = arg;
    pthread_mutex_lock(&c->mu);
    if (level <= KV_LOG_ERROR) {
        size_t n = strlen(c->text);
        snprintf(c->text + n, sizeof(c->text) - n, "%s\n", msg);
    }
    pthread_mutex_unlock(&c->mu);
}

/* An object with one sibling holding val, as a read's result. */
static void one_sibling(obj_t *o, const char *val)
{
    obj_init(o);
    vc_dot_t dot = {.actor = 7, .counter = 1};
    ck_assert_int_eq(obj_update(o, NULL, dot, 1, 0, val, strlen(val), false), 0);
}

/* A verdict that never comes: the wait ends at its bound with
 * KV_ETIMEDOUT, leaves the outputs alone and says why at error level; the
 * verdict arriving afterwards lands in the waiter, which it then frees
 * (under SANITIZE=1 a waiter freed with the caller's frame would be a
 * use-after-free here, and one never freed a leak). */
START_TEST(test_waiter_bound_passes)
{
    logcap_t cap = {.mu = PTHREAD_MUTEX_INITIALIZER, .text = ""};
    kvlog_t lg = {.fn = logcap_fn, .arg = &cap, .level = KV_LOG_ERROR};
    waiter_t *w = waiter_new();
    ck_assert_ptr_nonnull(w);
    int acked = -1, needed = -1;
    obj_t got;
    obj_init(&got);
    int64_t t0 = clk_mono_ms();
    int rc = waiter_wait(w, 150, &lg, &acked, &needed, &got);
    int64_t waited = clk_mono_ms() - t0;
    ck_assert_int_eq(rc, KV_ETIMEDOUT);
    ck_assert_msg(waited >= 140, "gave up after %lld ms", (long long)waited);
    ck_assert_int_eq(acked, -1);
    ck_assert_int_eq(needed, -1);
    ck_assert_uint_eq(got.n, 0);
    ck_assert_msg(strstr(cap.text, "no verdict") != NULL &&
                      strstr(cap.text, "150 ms") != NULL,
                  "logged: '%s'", cap.text);
    obj_t late;
    one_sibling(&late, "late");
    waiter_done(w, 0, 2, 2, &late); /* the waiting thread is gone */
    ck_assert_uint_eq(late.n, 0);   /* moved into the waiter, freed there */
    obj_free(&late);
}
END_TEST

typedef struct verdict_arg {
    waiter_t *w;
    obj_t result;
} verdict_arg_t;

static void *verdict_later(void *arg)
{
    verdict_arg_t *v = arg;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    waiter_done(v->w, KV_EQUORUM, 1, 2, &v->result);
    return NULL;
}

/* A verdict from another thread before the bound: its code, counts and
 * result reach the caller, and nothing is logged. */
START_TEST(test_waiter_verdict_arrives)
{
    logcap_t cap = {.mu = PTHREAD_MUTEX_INITIALIZER, .text = ""};
    kvlog_t lg = {.fn = logcap_fn, .arg = &cap, .level = KV_LOG_ERROR};
    verdict_arg_t v;
    v.w = waiter_new();
    ck_assert_ptr_nonnull(v.w);
    one_sibling(&v.result, "value");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, verdict_later, &v), 0);
    int acked = -1, needed = -1;
    obj_t got;
    obj_init(&got);
    int64_t t0 = clk_mono_ms();
    int rc = waiter_wait(v.w, 20000, &lg, &acked, &needed, &got);
    int64_t waited = clk_mono_ms() - t0;
    pthread_join(t, NULL);
    ck_assert_int_eq(rc, KV_EQUORUM);
    ck_assert_int_eq(acked, 1);
    ck_assert_int_eq(needed, 2);
    ck_assert_msg(waited < 15000, "waited %lld ms", (long long)waited);
    ck_assert_uint_eq(got.n, 1);
    ck_assert_uint_eq(got.sib[0].vlen, 5);
    ck_assert_int_eq(memcmp(got.sib[0].val, "value", 5), 0);
    ck_assert_str_eq(cap.text, "");
    obj_free(&got);
    obj_free(&v.result);
}
END_TEST

Suite *rpc_suite(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc = tcase_create("batching");
    tcase_add_test(tc, test_queued_requests_share_a_batch);
    tcase_add_test(tc, test_large_replies_sent_again_alone);
    tcase_add_test(tc, test_destroy_fails_queued_requests);
    tcase_add_test(tc, test_refused_dial_seen_at_once);
    suite_add_tcase(s, tc);
    TCase *clk = tcase_create("waits");
    tcase_add_test(clk, test_monotonic_timed_wait);
    tcase_add_test(clk, test_waiter_bound_passes);
    tcase_add_test(clk, test_waiter_verdict_arrives);
    suite_add_tcase(s, clk);
    return s;
}
