/*
 * check_failover.c - failure detection, gossip, sloppy quorum and hinted
 * handoff, with real kvdistd processes on 127.0.0.1: kill -9, SIGSTOP,
 * hint holders dying before delivery, strict quorum, and gossip
 * convergence from a single seed; and that the transport's fault hook
 * obeys the fault_file option only. Nodes gossip every 100 ms here, so the
 * detector (phi_convict 8) marks a silent node down after about 2-4 s.
 */
#include "check_kvdist.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include "kvdist.h"
#include "wire.h"

/* Polls until every running node in h except `skip` sees member id as
 * `status`; returns the milliseconds it took. */
static int64_t wait_all_see(harness_t *h, int skip, const char *id,
                            int status, int bound_ms)
{
    int64_t t0 = harness_now_ms();
    for (;;) {
        int agree = 1;
        for (int i = 0; i < h->nnodes; i++) {
            if (i == skip || h->node[i].pid <= 0) {
                continue;
            }
            if (harness_remote_status(h->node[i].url, id, NULL) != status) {
                agree = 0;
                break;
            }
        }
        int64_t took = harness_now_ms() - t0;
        if (agree) {
            return took;
        }
        ck_assert_msg(took < bound_ms, "%s not seen %s by all within %d ms",
                      id, kv_member_status_name(status), bound_ms);
        harness_sleep_ms(20);
    }
}

static void wait_hints_drained(harness_t *h, int bound_ms)
{
    int64_t deadline = harness_now_ms() + bound_ms;
    while (harness_sum_stat(h, "kvdist_hints_pending") > 0) {
        ck_assert_msg(harness_now_ms() < deadline,
                      "hints still pending after %d ms", bound_ms);
        harness_sleep_ms(50);
    }
}

static int try_put(kv_t *c, int i, char *key, size_t ksize)
{
    char val[32];
    snprintf(key, ksize, "key-%04d", i);
    snprintf(val, sizeof(val), "val-%04d", i);
    return kv_put(c, key, strlen(key), val, strlen(val));
}

/* Every key in acked[] is readable through the cluster with its value,
 * and held locally by node `holder` (all nodes are owners with N=3 of 3). */
static void check_all_present(harness_t *h, kv_t *c, const int *acked,
                              int nacked, int holder)
{
    for (int k = 0; k < nacked; k++) {
        char key[32];
        char val[32];
        snprintf(key, sizeof(key), "key-%04d", acked[k]);
        snprintf(val, sizeof(val), "val-%04d", acked[k]);
        void *got = NULL;
        size_t len = 0;
        int rc = kv_get(c, key, strlen(key), &got, &len);
        ck_assert_msg(rc == 0, "%s lost: %s", key, kv_strerror(rc));
        ck_assert(len == strlen(val) && memcmp(got, val, len) == 0);
        kv_free(got);
        if (holder >= 0) {
            ck_assert_msg(harness_wait_local_value(h->node[holder].url, key,
                                                   val, 5000),
                          "%s missing on %s", key, h->node[holder].id);
        }
    }
}

START_TEST(test_kill9_during_writes)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000);
    harness_wait_members(c, 3);
    int acked[300];
    int nacked = 0;
    int failed = 0;
    for (int i = 0; i < 300; i++) {
        if (i == 100) {
            harness_kill(h, 2);
        }
        if (i == 200) {
            /* The hundred writes take well under a second, less than the
             * heartbeat grace in which the coordinators still expect n3's
             * redial: its copies wait in the transport until the grace
             * ends and fail as not sent, and only then become hints.
             * Restart n3 once they have, so that it is hinted handoff
             * that brings them back. */
            int64_t until = harness_now_ms() + 10000;
            while (harness_sum_stat(h, "kvdist_hints_stored_total") == 0) {
                ck_assert_msg(harness_now_ms() < until,
                              "no hint stored 10 s after n3 was killed");
                harness_sleep_ms(20);
            }
            harness_start(h, 2, NULL);
        }
        char key[32];
        int rc = try_put(c, i, key, sizeof(key));
        if (rc == 0) {
            acked[nacked++] = i;
        } else {
            failed++;
        }
    }
    printf("failover kill -9: %d of 300 writes acknowledged (%d failed) "
           "with n3 killed at 100 and restarted at 200\n",
           nacked, failed);
    /* Always writable: not one write may fail while n3 is dead (the
     * client fails over to the next coordinator, issue 14). */
    ck_assert_msg(nacked == 300, "%d of 300 writes failed with n3 killed",
                  failed);
    wait_all_see(h, -1, "n3", KV_MEMBER_UP, 15000);
    wait_hints_drained(h, 20000);
    ck_assert_int_gt(harness_sum_stat(h, "kvdist_hints_delivered_total"), 0);
    check_all_present(h, c, acked, nacked, 2);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_sigstop_and_resume)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 3);
    kill(h->node[2].pid, SIGSTOP);
    int64_t took = wait_all_see(h, 2, "n3", KV_MEMBER_DOWN, 15000);
    printf("failover SIGSTOP: n3 seen down by n1 and n2 after %lld ms\n",
           (long long)took);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    int acked[100];
    int nacked = 0;
    for (int i = 0; i < 100; i++) {
        char key[32];
        int rc = try_put(c, i, key, sizeof(key));
        ck_assert_msg(rc == 0, "put %d with n3 paused: %s", i,
                      kv_strerror(rc));
        acked[nacked++] = i;
    }
    ck_assert_int_ge(harness_sum_stat(h, "kvdist_hints_pending"), 100);
    kill(h->node[2].pid, SIGCONT);
    took = wait_all_see(h, -1, "n3", KV_MEMBER_UP, 15000);
    printf("failover SIGCONT: n3 seen up again after %lld ms\n",
           (long long)took);
    wait_hints_drained(h, 20000);
    check_all_present(h, c, acked, nacked, 2);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_hint_holder_killed_before_delivery)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 3);
    harness_stop(h, 2);
    wait_all_see(h, 2, "n3", KV_MEMBER_DOWN, 15000);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    int acked[50];
    int nacked = 0;
    for (int i = 0; i < 50; i++) {
        char key[32];
        ck_assert_int_eq(try_put(c, i, key, sizeof(key)), 0);
        acked[nacked++] = i;
    }
    long long pending = harness_sum_stat(h, "kvdist_hints_pending");
    ck_assert_int_ge(pending, 50);
    kv_close(c);
    /* both hint holders die before n3 is back */
    harness_kill(h, 0);
    harness_kill(h, 1);
    harness_start(h, 0, NULL);
    harness_start(h, 1, NULL);
    ck_assert_int_eq(harness_sum_stat(h, "kvdist_hints_pending"), pending);
    harness_start(h, 2, NULL);
    c = harness_client(h, 1500);
    wait_all_see(h, -1, "n3", KV_MEMBER_UP, 15000);
    wait_hints_drained(h, 20000);
    printf("failover: %lld hints survived kill -9 of their holders and were "
           "delivered\n",
           pending);
    check_all_present(h, c, acked, nacked, 2);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_strict_quorum)
{
    harness_t *h = harness_create(4);
    h->n = 3;
    h->w = 2;
    const char *strict[] = {"--sloppy-quorum", "off", NULL};
    harness_start_all(h, strict);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 4);
    harness_stop(h, 2);
    harness_stop(h, 3);
    wait_all_see(h, 2, "n3", KV_MEMBER_DOWN, 15000);
    wait_all_see(h, 3, "n4", KV_MEMBER_DOWN, 15000);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    harness_wait_status(c, "n4", KV_MEMBER_DOWN);
    int both_down = 0;
    int ok = 0;
    for (int i = 0; i < 60; i++) {
        char key[32];
        kv_member_t *pl = NULL;
        size_t n = 0;
        snprintf(key, sizeof(key), "key-%04d", i);
        ck_assert_int_eq(kv_preference_list(c, key, strlen(key), &pl, &n), 0);
        int live_owners = 0;
        for (size_t j = 0; j < n; j++) {
            live_owners += strcmp(pl[j].id, "n1") == 0 ||
                           strcmp(pl[j].id, "n2") == 0;
        }
        kv_call_t call = KV_CALL_INIT;
        int rc = kv_put_ctx(c, key, strlen(key), "v", 1, NULL, 0, &call);
        if (live_owners < 2) {
            /* two of three owners down: strict quorum refuses, even though
             * n1/n2 could stand in */
            ck_assert_msg(rc == KV_EQUORUM || rc == KV_EUNAVAIL,
                          "%s acknowledged with %d live owners: %s", key,
                          live_owners, kv_strerror(rc));
            both_down++;
        } else {
            ck_assert_msg(rc == 0, "%s: %s", key, kv_strerror(rc));
            /* acknowledged: stored on W owners, checked on each */
            for (size_t j = 0; j < n; j++) {
                for (int k = 0; k < 2; k++) {
                    if (strcmp(pl[j].id, h->node[k].id) == 0) {
                        ck_assert(harness_wait_local_value(
                            h->node[k].url, key, "v", 5000));
                    }
                }
            }
            ok++;
        }
        kv_free(pl);
    }
    printf("strict quorum: %d writes acknowledged, %d refused (two owners "
           "down)\n",
           ok, both_down);
    ck_assert_int_gt(both_down, 0);
    ck_assert_int_gt(ok, 0);
    /* no fallback stood in */
    ck_assert_int_eq(harness_sum_stat(h, "kvdist_hinted_writes_total"), 0);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_sloppy_quorum_uses_fallbacks)
{
    harness_t *h = harness_create(4);
    h->n = 3;
    h->w = 2;
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 1500);
    harness_wait_members(c, 4);
    harness_stop(h, 2);
    harness_stop(h, 3);
    wait_all_see(h, 2, "n3", KV_MEMBER_DOWN, 15000);
    wait_all_see(h, 3, "n4", KV_MEMBER_DOWN, 15000);
    harness_wait_status(c, "n3", KV_MEMBER_DOWN);
    harness_wait_status(c, "n4", KV_MEMBER_DOWN);
    for (int i = 0; i < 30; i++) {
        char key[32];
        ck_assert_int_eq(try_put(c, i, key, sizeof(key)), 0);
    }
    ck_assert_int_gt(harness_sum_stat(h, "kvdist_hinted_writes_total"), 0);
    /* and reads with R=2 still succeed through the fallback */
    for (int i = 0; i < 30; i++) {
        char key[32];
        char val[32];
        snprintf(key, sizeof(key), "key-%04d", i);
        snprintf(val, sizeof(val), "val-%04d", i);
        void *got = NULL;
        size_t len = 0;
        ck_assert_int_eq(kv_get(c, key, strlen(key), &got, &len), 0);
        ck_assert(len == strlen(val) && memcmp(got, val, len) == 0);
        kv_free(got);
    }
    harness_start(h, 2, NULL);
    harness_start(h, 3, NULL);
    wait_all_see(h, -1, "n3", KV_MEMBER_UP, 15000);
    wait_all_see(h, -1, "n4", KV_MEMBER_UP, 15000);
    wait_hints_drained(h, 20000);
    /* every owner now holds what it missed */
    for (int i = 0; i < 30; i++) {
        char key[32];
        char val[32];
        snprintf(key, sizeof(key), "key-%04d", i);
        snprintf(val, sizeof(val), "val-%04d", i);
        kv_member_t *pl = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_preference_list(c, key, strlen(key), &pl, &n), 0);
        for (size_t j = 0; j < n; j++) {
            for (int k = 0; k < h->nnodes; k++) {
                if (strcmp(pl[j].id, h->node[k].id) == 0) {
                    ck_assert_msg(harness_wait_local_value(h->node[k].url, key,
                                                           val, 5000),
                                  "%s missing on owner %s", key, pl[j].id);
                }
            }
        }
        kv_free(pl);
    }
    kv_close(c);
    harness_destroy(h);
}
END_TEST

START_TEST(test_gossip_single_seed)
{
    harness_t *h = harness_create(5);
    harness_start_all(h, NULL); /* every node joins through n1 only */
    int64_t t0 = harness_now_ms();
    for (int i = 0; i < h->nnodes; i++) {
        for (int j = 0; j < h->nnodes; j++) {
            int64_t deadline = harness_now_ms() + 10000;
            size_t count = 0;
            while (harness_remote_status(h->node[i].url, h->node[j].id,
                                         &count) != KV_MEMBER_UP ||
                   count != 5) {
                ck_assert_msg(harness_now_ms() < deadline,
                              "%s does not see %s up among 5", h->node[i].id,
                              h->node[j].id);
                harness_sleep_ms(20);
            }
        }
    }
    printf("gossip: 5 nodes from one seed agree on 5 members after %lld ms\n",
           (long long)(harness_now_ms() - t0));
    harness_kill(h, 4);
    /* documented bound: ~18.4 mean heartbeat intervals plus a round */
    int64_t took = wait_all_see(h, 4, "n5", KV_MEMBER_DOWN, 10000);
    printf("gossip: killed n5 seen down by all 4 others after %lld ms\n",
           (long long)took);
    harness_destroy(h);
}
END_TEST

/* A key whose first replica, as c routes it, is `first`. */
static void key_led_by(kv_t *c, const char *first, char *key, size_t size)
{
    for (int i = 0;; i++) {
        snprintf(key, size, "probe-%d", i);
        kv_member_t *pl = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_preference_list(c, key, strlen(key), &pl, &n), 0);
        bool hit = n > 0 && strcmp(pl[0].id, first) == 0;
        kv_free(pl);
        if (hit) {
            return;
        }
    }
}

/* Sends b (freed) to `at` and decodes the reply into *m, which points
 * into the returned message (the caller frees it). */
static nng_msg *raw_call(const char *at, buf_t *b, wire_msg_t *m)
{
    nng_msg *reply = harness_raw_request(at, b->p, b->len, 2000);
    buf_free(b);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                                 &harness_big_limits, m),
                     0);
    return reply;
}

/* The incarnation and heartbeat `at` knows of member id (from its gossip
 * table, asked with an empty one). */
static void gossip_row_of(const char *at, const char *id, uint64_t *inc,
                          uint64_t *hb)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, WIRE_GOSSIP, 1, 0, 0);
    buf_put_varint(&b, 0);
    wire_msg_t m;
    nng_msg *reply = raw_call(at, &b, &m);
    rd_t r;
    rd_init(&r, m.members, m.memberslen);
    wire_gossip_t g;
    bool found = false;
    while (wire_next_gossip(&r, &g)) {
        if (g.idlen == strlen(id) && memcmp(g.id, id, g.idlen) == 0) {
            *inc = g.incarnation;
            *hb = g.heartbeat;
            found = true;
        }
    }
    nng_msg_free(reply);
    ck_assert_msg(found, "%s does not know %s", at, id);
}

/* Sends `at` a SHUTDOWN announcement with the given row; returns the
 * reply's status. */
static int announce(const char *at, const char *id, const char *url,
                    uint64_t inc, uint64_t hb)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, WIRE_SHUTDOWN, 2, 0, 0);
    buf_put_varint(&b, 1);
    wire_put_gossip(&b, id, url, inc, hb);
    wire_msg_t m;
    nng_msg *reply = raw_call(at, &b, &m);
    ck_assert_int_eq(m.type, WIRE_SHUTDOWN | WIRE_REPLY);
    int status = m.status;
    nng_msg_free(reply);
    return status;
}

/*
 * A node stopped with SIGTERM tells its peers before it closes
 * (WIRE_SHUTDOWN): once its process has exited, both peers already see it
 * down (the detector alone needs 2-4 s of silence here), its stop did not
 * need the transport's close bound, writes of keys it leads succeed at
 * once, and its next start brings it back up. Announcements that do not
 * match what a peer knows (another URL, incarnation or member, a
 * heartbeat far ahead) are refused and leave the member up.
 */
START_TEST(test_graceful_stop_is_announced)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    const char *n1 = h->node[0].url;
    uint64_t inc = 0, hb = 0;
    gossip_row_of(n1, "n3", &inc, &hb);
    ck_assert_int_eq(announce(n1, "n3", "tcp://127.0.0.1:1", inc, hb),
                     KV_EINVAL);
    ck_assert_int_eq(announce(n1, "n3", h->node[2].url, inc - 1, hb),
                     KV_EINVAL);
    ck_assert_int_eq(announce(n1, "n3", h->node[2].url, inc + 1, hb),
                     KV_EINVAL);
    ck_assert_int_eq(announce(n1, "n3", h->node[2].url, inc, hb + 100000),
                     KV_EINVAL);
    ck_assert_int_eq(announce(n1, "n9", h->node[2].url, inc, hb), KV_EINVAL);
    ck_assert_int_eq(announce(n1, "n1", n1, inc, hb), KV_EINVAL);
    ck_assert_int_eq(harness_remote_status(n1, "n3", NULL), KV_MEMBER_UP);

    kv_t *c = harness_client(h, 2000);
    harness_wait_members(c, 3);
    char key[32];
    key_led_by(c, "n3", key, sizeof(key));
    int64_t t0 = harness_now_ms();
    ck_assert_int_eq(harness_stop_status(h, 2), 0);
    int64_t stop_ms = harness_now_ms() - t0;
    /* No polling: the peers knew before the process was gone. */
    ck_assert_int_eq(harness_remote_status(h->node[0].url, "n3", NULL),
                     KV_MEMBER_DOWN);
    ck_assert_int_eq(harness_remote_status(h->node[1].url, "n3", NULL),
                     KV_MEMBER_DOWN);
    char *log = util_read_file(h->node[2].log);
    bool told = strstr(log, "2 of 2 members took the news") != NULL;
    bool abandoned = strstr(log, "abandoning") != NULL;
    free(log);
    ck_assert_msg(told, "n3 did not tell both peers it was stopping");
    ck_assert_msg(!abandoned, "n3's stop needed the close bound");
    int64_t worst = 0;
    for (int i = 0; i < 20; i++) {
        char val[16];
        snprintf(val, sizeof(val), "v%d", i);
        int64_t s = harness_now_ms();
        int rc = kv_put(c, key, strlen(key), val, strlen(val));
        int64_t took = harness_now_ms() - s;
        ck_assert_msg(rc == 0, "write %d with n3 stopped: %s", i,
                      kv_strerror(rc));
        worst = took > worst ? took : worst;
    }
    ck_assert_msg(worst < 1000, "a write took %lld ms with n3 stopped",
                  (long long)worst);
    harness_start(h, 2, NULL);
    int64_t back = wait_all_see(h, -1, "n3", KV_MEMBER_UP, 10000);
    printf("failover: n3's SIGTERM stop took %lld ms and was seen by both "
           "peers at once; 20 writes of a key it leads, slowest %lld ms; "
           "up again %lld ms after its restart\n",
           (long long)stop_ms, (long long)worst, (long long)back);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* A client's read whose coordinator is paused (and not yet convicted) is
 * retried on the next replica within the same deadline. */
START_TEST(test_read_retries_past_paused_coordinator)
{
    harness_t *h = harness_create(3);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 2000);
    harness_wait_members(c, 3);
    /* a key whose first replica, as the client routes it, is n1 */
    char key[32];
    key_led_by(c, "n1", key, sizeof(key));
    ck_assert_int_eq(kv_put(c, key, strlen(key), "v", 1), 0);
    ck_assert(harness_wait_local_value(h->node[1].url, key, "v", 5000));
    ck_assert(harness_wait_local_value(h->node[2].url, key, "v", 5000));
    kill(h->node[0].pid, SIGSTOP);
    int64_t t0 = harness_now_ms();
    void *got = NULL;
    size_t len = 0;
    int rc = kv_get(c, key, strlen(key), &got, &len);
    int64_t took = harness_now_ms() - t0;
    kill(h->node[0].pid, SIGCONT);
    ck_assert_msg(rc == 0, "read with its coordinator paused: %s",
                  kv_strerror(rc));
    ck_assert(len == 1 && memcmp(got, "v", 1) == 0);
    kv_free(got);
    printf("failover: read retried past a paused coordinator in %lld ms\n",
           (long long)took);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

static bool log_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

/*
 * Speculative retry: a client's read whose coordinator is alive but slow
 * (n1's requests to the other replicas wait 1.5 s in the fault hook, so
 * its R = 2 read cannot answer sooner, while it still answers gossip at
 * once) is also sent to the next candidate once n1 has taken longer than
 * the latency observed to it, and the faster answer wins. The race is
 * counted on the client; n1's late answer is dropped when it comes.
 */
START_TEST(test_read_races_slow_coordinator)
{
    harness_t *h = harness_create(3);
    char fault[600];
    snprintf(fault, sizeof(fault), "%s/slow-n1.fault", h->dir);
    const char *flag[] = {"--fault-file", fault, NULL};
    harness_start(h, 0, flag); /* no file yet: no fault */
    harness_start(h, 1, NULL);
    harness_start(h, 2, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 5000);
    harness_wait_members(c, 3);
    char key[32];
    key_led_by(c, "n1", key, sizeof(key));
    ck_assert_int_eq(kv_put(c, key, strlen(key), "v", 1), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(harness_wait_local_value(h->node[i].url, key, "v", 5000));
    }
    FILE *f = fopen(fault, "w");
    ck_assert_ptr_nonnull(f);
    fputs("delay 1500\n", f);
    fclose(f);
    int64_t deadline = harness_now_ms() + 15000;
    while (!log_has(h->node[0].log, "fault hook: delay 1500 ms")) {
        ck_assert_msg(harness_now_ms() < deadline, "n1 never read %s", fault);
        harness_sleep_ms(20);
    }
    uint64_t races0 = 0;
    uint64_t tmo0 = 0;
    ck_assert_int_eq(kv_stat(c, "kvdist_forward_races_total", &races0), 0);
    ck_assert_int_eq(kv_stat(c, "kvdist_rpc_timeouts_total", &tmo0), 0);
    int64_t t0 = harness_now_ms();
    void *got = NULL;
    size_t len = 0;
    int rc = kv_get(c, key, strlen(key), &got, &len);
    int64_t took = harness_now_ms() - t0;
    uint64_t races = 0;
    ck_assert_int_eq(kv_stat(c, "kvdist_forward_races_total", &races), 0);
    printf("failover: read raced past a coordinator 1.5 s slow in %lld ms "
           "(%llu race)\n",
           (long long)took, (unsigned long long)(races - races0));
    ck_assert_msg(rc == 0, "read with a slow coordinator: %s",
                  kv_strerror(rc));
    ck_assert(len == 1 && memcmp(got, "v", 1) == 0);
    kv_free(got);
    ck_assert_uint_ge(races - races0, 1);
    ck_assert_msg(took < 1500, "the read waited for the slow coordinator "
                  "(%lld ms)", (long long)took);
    /* The losing hop to n1 ends after the read is over (its hop time
     * runs out): its callback finds the answer given, and drops it. */
    uint64_t tmo = tmo0;
    deadline = harness_now_ms() + 5000;
    while (kv_stat(c, "kvdist_rpc_timeouts_total", &tmo) == 0 &&
           tmo == tmo0) {
        ck_assert_msg(harness_now_ms() < deadline,
                      "the hop to n1 never ended");
        harness_sleep_ms(10);
    }
    ck_assert_int_eq(unlink(fault), 0);
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* The fault hook is switched on by the fault_file option only. A file that
 * drops every request, named by KVDIST_FAULT_FILE in the environment of
 * this process (whose client embeds the library) and of the nodes it
 * starts, has no effect: writes and reads at w = r = 2 succeed and no node
 * says the hook is on. Started with --fault-file and the same file, a node
 * says so, reads the file, and a write it coordinates misses its quorum
 * because its request to the other replica is dropped. */
START_TEST(test_fault_hook_only_by_option)
{
    harness_t *h = harness_create(2);
    h->n = 2;
    h->r = 2;
    h->w = 2;
    char fault[600];
    snprintf(fault, sizeof(fault), "%s/drop-all.fault", h->dir);
    FILE *f = fopen(fault, "w");
    ck_assert_ptr_nonnull(f);
    fputs("drop 100\n", f);
    fclose(f);
    ck_assert_int_eq(setenv("KVDIST_FAULT_FILE", fault, 1), 0);
    harness_start_all(h, NULL);
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 3000);
    harness_wait_members(c, 2);
    int acked[20];
    for (int i = 0; i < 20; i++) {
        char key[32];
        int rc = try_put(c, i, key, sizeof(key));
        ck_assert_msg(rc == 0, "put %d with KVDIST_FAULT_FILE set: %s", i,
                      kv_strerror(rc));
        acked[i] = i;
    }
    check_all_present(h, c, acked, 20, 1); /* n2 holds all: n = 2 of 2 */
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(!log_has(h->node[i].log, "fault injection on") &&
                          !log_has(h->node[i].log, "fault hook"),
                      "%s read the variable (log %s)", h->node[i].id,
                      h->node[i].log);
    }
    ck_assert_int_eq(unsetenv("KVDIST_FAULT_FILE"), 0);

    harness_stop(h, 1);
    const char *flag[] = {"--fault-file", fault, NULL};
    harness_start(h, 1, flag);
    char on[700];
    snprintf(on, sizeof(on), "fault injection on, from %s", fault);
    ck_assert_msg(log_has(h->node[1].log, on), "no '%s' in %s", on,
                  h->node[1].log);
    /* The file is read at the first request the node sends (gossip). */
    int64_t deadline = harness_now_ms() + 15000;
    while (!log_has(h->node[1].log, "fault hook: delay 0 ms, drop 100%")) {
        ck_assert_msg(harness_now_ms() < deadline, "%s never read %s",
                      h->node[1].id, fault);
        harness_sleep_ms(20);
    }
    /* A key n2 coordinates: the client forwards to the first member of
     * the preference list it sees up. */
    harness_wait_status(c, "n2", KV_MEMBER_UP);
    char key[32] = "";
    for (int k = 0; k < 1000 && key[0] == '\0'; k++) {
        char cand[32];
        snprintf(cand, sizeof(cand), "pick-%d", k);
        kv_member_t *pl = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_preference_list(c, cand, strlen(cand), &pl, &n),
                         0);
        if (n > 0 && strcmp(pl[0].id, "n2") == 0) {
            snprintf(key, sizeof(key), "%s", cand);
        }
        kv_free(pl);
    }
    ck_assert_msg(key[0] != '\0', "no key led by n2 in 1000 tries");
    /* Asked to coordinate, n2 cannot reach n1 (its requests are dropped):
     * the hook is on. */
    buf_t b;
    buf_init(&b);
    wire_build_coord_put(&b, 7, 0, key, strlen(key), "v", 1, NULL, 0, 2, 1000,
                         0);
    nng_msg *reply = harness_raw_request(h->node[1].url, b.p, b.len, 5000);
    buf_free(&b);
    ck_assert_ptr_nonnull(reply);
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                                 &harness_big_limits, &m),
                     0);
    int rc = m.status;
    nng_msg_free(reply);
    ck_assert_msg(rc == KV_EQUORUM || rc == KV_ETIMEDOUT,
                  "write coordinated by a node dropping every request: %s",
                  kv_strerror(rc));
    /* The client, whose write n2 does not answer in time, sends it on to
     * n1, which reaches n2: the write succeeds. n1 must see n2 up first:
     * n2 announced its stop, and its own gossip is dropped now, so n1
     * learns of its return only when it gossips to n2 again, after the
     * few seconds it leaves a stopping member alone. */
    wait_all_see(h, 1, "n2", KV_MEMBER_UP, 15000);
    kv_call_t call = KV_CALL_INIT;
    call.timeout_ms = 1000;
    int crc = kv_put_ctx(c, key, strlen(key), "v", 1, NULL, 0, &call);
    ck_assert_msg(crc == 0, "client write past n2: %s", kv_strerror(crc));
    printf("failover: fault_file on n2 (drop 100): its own write got %s; "
           "the client's, sent on to n1, succeeded\n",
           kv_strerror(rc));
    kv_close(c);
    harness_destroy(h);
}
END_TEST

/* Writes keys through a client until told to stop, counting outcomes. */
typedef struct slow_writer {
    kv_t *c;
    atomic_bool stop;
    atomic_int ok;
    atomic_int failed;
} slow_writer_t;

static void *slow_writer_main(void *arg)
{
    slow_writer_t *w = arg;
    for (int i = 0; !atomic_load(&w->stop); i++) {
        char key[32];
        snprintf(key, sizeof(key), "slow-%d", i);
        int rc = kv_put(w->c, key, strlen(key), "v", 1);
        atomic_fetch_add(rc == 0 ? &w->ok : &w->failed, 1);
    }
    return NULL;
}

/*
 * Nothing blocks the transport's threads: while every store write of n3
 * stalls 200 ms (the fault hook's store_delay) under a stream of writes
 * that all replicate to it, n1 and n2 keep seeing n3 up (its gossip is
 * answered on NNG's threads, its replica work waits on its own pool) and
 * n3's /health answers within 50 ms. Before the pool, replica writes ran
 * on NNG's few callback threads, and one slow disk stalled them all.
 */
START_TEST(test_slow_store_keeps_node_responsive)
{
    harness_t *h = harness_create(3);
    char fault[600];
    snprintf(fault, sizeof(fault), "%s/slow-store.fault", h->dir);
    FILE *f = fopen(fault, "w");
    ck_assert_ptr_nonnull(f);
    fputs("store_delay 200\n", f);
    fclose(f);
    harness_start(h, 0, NULL);
    harness_start(h, 1, NULL);
    const char *flag[] = {"--fault-file", fault, NULL};
    int port = harness_start_http(h, 2, flag);
    harness_wait_converged(h);
    int64_t deadline = harness_now_ms() + 15000;
    while (!log_has(h->node[2].log, "store writes stalled 200 ms")) {
        ck_assert_msg(harness_now_ms() < deadline, "n3 never read %s", fault);
        harness_sleep_ms(20);
    }
    kv_t *c = harness_client(h, 5000);
    harness_wait_members(c, 3);
    slow_writer_t w = {.c = c};
    atomic_init(&w.stop, false);
    atomic_init(&w.ok, 0);
    atomic_init(&w.failed, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, slow_writer_main, &w), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", port);
    int64_t worst = 0;
    int polls = 0, slow = 0, down = 0, unhealthy = 0;
    int64_t end = harness_now_ms() + 6000;
    while (harness_now_ms() < end) {
        int64_t t0 = harness_now_ms();
        httpc_resp_t r = httpc("GET", url, NULL, 0, NULL, NULL);
        int64_t took = harness_now_ms() - t0;
        unhealthy += r.curl_rc != 0 || r.status != 200;
        httpc_free(&r);
        worst = took > worst ? took : worst;
        slow += took >= 50;
        for (int i = 0; i < 2; i++) {
            size_t count = 0;
            down += harness_remote_status(h->node[i].url, "n3", &count) !=
                    KV_MEMBER_UP;
        }
        polls++;
        harness_sleep_ms(100);
    }
    atomic_store(&w.stop, true);
    pthread_join(t, NULL);
    long long replica_writes =
        harness_remote_stat(h->node[2].url, "kvdist_replica_writes_total");
    kv_close(c);
    harness_destroy(h);
    printf("failover: n3's store writes stalled 200 ms: %d writes ok, %d "
           "failed; /health worst %lld ms over %d polls; n3 seen down %d "
           "times; n3 applied %lld replica writes\n",
           atomic_load(&w.ok), atomic_load(&w.failed), (long long)worst, polls,
           down, replica_writes);
    ck_assert_int_gt(replica_writes, 5); /* the slow path was exercised */
    ck_assert_int_eq(unhealthy, 0);
    ck_assert_msg(down == 0, "n1 or n2 saw n3 down %d times", down);
    ck_assert_msg(slow == 0, "%d of %d /health answers took 50 ms or more "
                  "(worst %lld ms)", slow, polls, (long long)worst);
    ck_assert_int_eq(atomic_load(&w.failed), 0);
}
END_TEST

Suite *failover_suite(void)
{
    Suite *s = suite_create("failover");
    TCase *tc = tcase_create("multiprocess");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_kill9_during_writes);
    tcase_add_test(tc, test_sigstop_and_resume);
    tcase_add_test(tc, test_hint_holder_killed_before_delivery);
    tcase_add_test(tc, test_strict_quorum);
    tcase_add_test(tc, test_sloppy_quorum_uses_fallbacks);
    tcase_add_test(tc, test_gossip_single_seed);
    tcase_add_test(tc, test_read_retries_past_paused_coordinator);
    tcase_add_test(tc, test_read_races_slow_coordinator);
    tcase_add_test(tc, test_graceful_stop_is_announced);
    tcase_add_test(tc, test_fault_hook_only_by_option);
    tcase_add_test(tc, test_slow_store_keeps_node_responsive);
    suite_add_tcase(s, tc);
    return s;
}
