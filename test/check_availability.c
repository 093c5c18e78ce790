/*
 * check_availability.c - "always writable": while one node is dead
 * (kill -9) or paused (SIGSTOP), requests for keys whose preference list
 * starts with it succeed, each in under a second, through every path a
 * user has: the C API in client role, the kvdist CLI, and HTTP and RESP on
 * a node that is a replica of the keys and (5 nodes) on one that is not.
 *
 * Each path runs in its own thread, one write and one read (which must
 * return what the path wrote last for that key) every 50 ms, from 2 s
 * before the fault to 15 s after it. The threads only record; the test's
 * thread asserts, after joining them: no request failed, none started
 * after the fault took 1000 ms or more. Each path's figures (requests,
 * p50, p99, max) are printed for README's table. A CLI request is a whole
 * kvdist process, kv_open to kv_close: its close is bounded too.
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include "kvdist.h"

#define AV_KEYS 4            /* keys per path */
#define AV_PERIOD_MS 50      /* one round (a write and a read) per period */
#define AV_BEFORE_MS 2000    /* rounds before the fault */
#define AV_AFTER_MS 15000    /* rounds measured after it */
#define AV_BOUND_MS 1000     /* no request after the fault may take this */
#define AV_MAX_OPS 2048
#define AV_OP_TIMEOUT_MS 10000

enum path_kind { P_API, P_CLI, P_HTTP, P_RESP };

typedef struct path {
    const char *name;
    enum path_kind kind;
    kv_t *c;          /* P_API */
    char urls[256];   /* P_CLI: -c */
    int port;         /* P_HTTP, P_RESP */
    int fd;           /* P_RESP's connection, -1: none */
    CURL *curl;       /* P_HTTP */
    char key[AV_KEYS][32];
    _Atomic int64_t *fault_at; /* 0 until the fault */
    int64_t end_at;            /* set once the fault is */
    /* results, read after join */
    int ops;       /* requests started after the fault */
    int failed;    /* of those */
    int failed_before;
    int lat[AV_MAX_OPS];
    char why[2200]; /* the first failure */
} path_t;

static void record(path_t *p, int64_t started, int64_t took, int rc,
                   const char *what)
{
    int64_t fault = atomic_load(p->fault_at);
    bool after = fault != 0 && started >= fault;
    if ((rc != 0 || took >= AV_BOUND_MS) && p->why[0] == '\0') {
        snprintf(p->why, sizeof(p->why), "%s the fault, %lld ms: %s",
                 after ? "after" : "before", (long long)took, what);
    }
    if (!after) {
        p->failed_before += rc != 0;
        return;
    }
    if (p->ops < AV_MAX_OPS) {
        p->lat[p->ops] = (int)took;
    }
    p->ops++;
    p->failed += rc != 0;
}

/* ------------------------------------------------------------- the CLI */

/* Runs `kvdist -c URLS args...`; 0 when it exits 0 (out: its stdout). */
static int cli(path_t *p, const char *a1, const char *a2, const char *a3,
               char *out, size_t outsz, char *err, size_t errsz)
{
    const char *build = getenv("KVDIST_BUILD");
    char path[512];
    snprintf(path, sizeof(path), "%s/examples/kvdist",
             build && *build ? build : "build");
    const char *argv[] = {path, "-c", p->urls, a1, a2, a3, NULL};
    int po[2];
    int pe[2];
    if (pipe(po) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe(pe) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    if (pid < 0) {
        snprintf(err, errsz, "fork: %s", strerror(errno));
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    size_t got = 0;
    size_t egot = 0;
    int64_t deadline = harness_now_ms() + AV_OP_TIMEOUT_MS;
    bool open_o = true;
    bool open_e = true;
    while (open_o || open_e) {
        int64_t left = deadline - harness_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL); /* by pid: the one this call started */
            break;
        }
        struct pollfd pf[2] = {{open_o ? po[0] : -1, POLLIN, 0},
                               {open_e ? pe[0] : -1, POLLIN, 0}};
        if (poll(pf, 2, (int)left) <= 0) {
            continue;
        }
        char tmp[512];
        if (pf[0].revents) {
            ssize_t n = read(po[0], tmp, sizeof(tmp));
            if (n <= 0) {
                open_o = false;
            } else {
                size_t k = (size_t)n < outsz - 1 - got ? (size_t)n
                                                       : outsz - 1 - got;
                memcpy(out + got, tmp, k);
                got += k;
            }
        }
        if (pf[1].revents) {
            ssize_t n = read(pe[0], tmp, sizeof(tmp));
            if (n <= 0) {
                open_e = false;
            } else {
                size_t k = (size_t)n < errsz - 1 - egot ? (size_t)n
                                                        : errsz - 1 - egot;
                memcpy(err + egot, tmp, k);
                egot += k;
            }
        }
    }
    out[got] = '\0';
    err[egot] = '\0';
    close(po[0]);
    close(pe[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        snprintf(err + egot, errsz - egot, "waitpid: %s", strerror(errno));
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return 0;
    }
    /* Say how it ended: a silent exit or a signal has no stderr. */
    if (WIFSIGNALED(status)) {
        snprintf(err + egot, errsz - egot, " [killed by signal %d]",
                 WTERMSIG(status));
    } else {
        snprintf(err + egot, errsz - egot, " [exit %d]",
                 WEXITSTATUS(status));
    }
    return -1;
}

/* ---------------------------------------------------------------- RESP */

static int resp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Sends a command and reads one reply into buf (NUL-terminated). */
static int resp_call(path_t *p, const char *cmd, size_t len, char *buf,
                     size_t bufsz)
{
    if (p->fd < 0 && (p->fd = resp_connect(p->port)) < 0) {
        snprintf(buf, bufsz, "connect: %s", strerror(errno));
        return -1;
    }
    if (write(p->fd, cmd, len) != (ssize_t)len) {
        snprintf(buf, bufsz, "write: %s", strerror(errno));
        close(p->fd);
        p->fd = -1;
        return -1;
    }
    size_t got = 0;
    int64_t deadline = harness_now_ms() + AV_OP_TIMEOUT_MS;
    for (;;) {
        /* A whole reply: a line, or a bulk header line and its bytes. */
        char *nl = got > 0 ? memchr(buf, '\n', got) : NULL;
        if (nl != NULL && buf[0] != '$') {
            break;
        }
        if (nl != NULL) {
            long n = atol(buf + 1);
            size_t need = (size_t)(nl - buf) + 1 + (n >= 0 ? (size_t)n + 2 : 0);
            if (got >= need) {
                break;
            }
        }
        int64_t left = deadline - harness_now_ms();
        struct pollfd pf = {p->fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
            snprintf(buf, bufsz, "no reply in %d ms", AV_OP_TIMEOUT_MS);
            close(p->fd);
            p->fd = -1;
            return -1;
        }
        ssize_t n = read(p->fd, buf + got, bufsz - 1 - got);
        if (n <= 0) {
            snprintf(buf, bufsz, "connection closed");
            close(p->fd);
            p->fd = -1;
            return -1;
        }
        got += (size_t)n;
        buf[got] = '\0';
    }
    buf[got] = '\0';
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

typedef struct body {
    char p[256];
    size_t len;
} body_t;

static size_t body_cb(char *d, size_t sz, size_t n, void *arg)
{
    body_t *b = arg;
    size_t k = sz * n;
    size_t fit = k < sizeof(b->p) - 1 - b->len ? k : sizeof(b->p) - 1 - b->len;
    memcpy(b->p + b->len, d, fit);
    b->len += fit;
    b->p[b->len] = '\0';
    return k;
}

static long http(path_t *p, const char *method, const char *key,
                 const char *val, body_t *out)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/data/%s", p->port, key);
    CURL *c = p->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (val != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, val);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)strlen(val));
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)AV_OP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    out->len = 0;
    out->p[0] = '\0';
    long st = 0;
    if (curl_easy_perform(c) != CURLE_OK ||
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st) != CURLE_OK) {
        return -1;
    }
    return st;
}

/* ----------------------------------------------------------- one round */

/* Writes val to key, then reads it back, through p; records both. */
static void round_trip(path_t *p, const char *key, const char *val)
{
    char why[2048] = "";
    char out[256] = "";
    char err[2000] = ""; /* a sanitizer's report too, when the CLI has one */
    for (int op = 0; op < 2; op++) {
        int64_t t0 = harness_now_ms();
        int rc = 0;
        why[0] = '\0';
        switch (p->kind) {
        case P_API:
            if (op == 0) {
                rc = kv_put(p->c, key, strlen(key), val, strlen(val));
            } else {
                void *got = NULL;
                size_t len = 0;
                rc = kv_get(p->c, key, strlen(key), &got, &len);
                if (rc == 0 && (len != strlen(val) || memcmp(got, val, len))) {
                    rc = -1;
                    snprintf(why, sizeof(why), "read %.*s, wrote %s",
                             (int)len, (char *)got, val);
                }
                kv_free(got);
            }
            if (rc > 0) {
                snprintf(why, sizeof(why), "%s", kv_strerror(rc));
            }
            break;
        case P_CLI:
            rc = op == 0 ? cli(p, "put", key, val, out, sizeof(out), err,
                               sizeof(err))
                         : cli(p, "get", key, NULL, out, sizeof(out), err,
                               sizeof(err));
            if (rc != 0) {
                snprintf(why, sizeof(why), "%s", err);
            } else if (op == 1 && strcmp(out, val) != 0) {
                rc = -1;
                snprintf(why, sizeof(why), "read %s, wrote %s", out, val);
            }
            break;
        case P_HTTP: {
            body_t b;
            long st = http(p, op == 0 ? "PUT" : "GET", key,
                           op == 0 ? val : NULL, &b);
            long want = op == 0 ? 204 : 200;
            if (st != want || (op == 1 && strcmp(b.p, val) != 0)) {
                rc = -1;
                snprintf(why, sizeof(why), "status %ld: %s", st, b.p);
            }
            break;
        }
        case P_RESP: {
            char cmd[160];
            int n = op == 0 ? snprintf(cmd, sizeof(cmd),
                                       "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu"
                                       "\r\n%s\r\n",
                                       strlen(key), key, strlen(val), val)
                            : snprintf(cmd, sizeof(cmd),
                                       "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n",
                                       strlen(key), key);
            char want[96];
            if (op == 0) {
                snprintf(want, sizeof(want), "+OK\r\n");
            } else {
                snprintf(want, sizeof(want), "$%zu\r\n%s\r\n", strlen(val),
                         val);
            }
            rc = resp_call(p, cmd, (size_t)n, out, sizeof(out));
            if (rc == 0 && strcmp(out, want) != 0) {
                rc = -1;
            }
            if (rc != 0) {
                snprintf(why, sizeof(why), "%s", out);
            }
            break;
        }
        }
        char what[2100];
        snprintf(what, sizeof(what), "%s %s: %s", op == 0 ? "write" : "read",
                 key, why);
        record(p, t0, harness_now_ms() - t0, rc, what);
    }
}

static void *path_main(void *arg)
{
    path_t *p = arg;
    int64_t start = harness_now_ms();
    for (int r = 0;; r++) {
        int64_t at = start + (int64_t)r * AV_PERIOD_MS;
        int64_t fault = atomic_load(p->fault_at);
        if (fault != 0 && at >= fault + AV_AFTER_MS) {
            break;
        }
        while (harness_now_ms() < at) {
            harness_sleep_ms(1); /* the schedule, not a synchronisation */
        }
        char val[32];
        snprintf(val, sizeof(val), "%s-%d", p->name, r);
        for (char *c = val; *c; c++) {
            *c = (*c == ' ') ? '_' : *c;
        }
        round_trip(p, p->key[r % AV_KEYS], val);
    }
    return NULL;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a;
    int y = *(const int *)b;
    return (x > y) - (x < y);
}

/* -------------------------------------------------------------- a case */

/* Keys whose preference list starts with `first`, holds `replica` and
 * (when not NULL) not `outsider`. */
static void pick_keys(kv_t *c, const char *first, const char *replica,
                      const char *outsider, path_t *paths, int npaths)
{
    int need = npaths * AV_KEYS;
    int have = 0;
    for (int k = 0; k < 20000 && have < need; k++) {
        char cand[32];
        snprintf(cand, sizeof(cand), "av-%d", k);
        kv_member_t *pl = NULL;
        size_t n = 0;
        ck_assert_int_eq(kv_preference_list(c, cand, strlen(cand), &pl, &n),
                         0);
        bool ok = n == 3 && strcmp(pl[0].id, first) == 0;
        bool has_replica = false;
        bool has_outsider = false;
        for (size_t i = 0; i < n; i++) {
            has_replica = has_replica || strcmp(pl[i].id, replica) == 0;
            has_outsider = has_outsider ||
                           (outsider != NULL && strcmp(pl[i].id, outsider) == 0);
        }
        kv_free(pl);
        if (ok && has_replica && !has_outsider) {
            path_t *p = &paths[have / AV_KEYS];
            snprintf(p->key[have % AV_KEYS], sizeof(p->key[0]), "%s", cand);
            have++;
        }
    }
    ck_assert_msg(have == need, "only %d of %d keys led by %s", have, need,
                  first);
}

static void run_case(int nodes, bool pause)
{
    harness_t *h = harness_create(nodes);
    h->n = 3;
    h->r = 2;
    h->w = 2;
    /* n1 (a replica of every key picked) and, with 5 nodes, n5 (none of
     * them) serve HTTP and RESP. */
    int entry[2] = {0, nodes == 5 ? 4 : -1};
    int hport[2] = {0, 0};
    int rport[2] = {0, 0};
    for (int i = 0; i < nodes; i++) {
        int e = i == entry[0] ? 0 : i == entry[1] ? 1 : -1;
        if (e < 0) {
            harness_start(h, i, NULL);
            continue;
        }
        char resp[32];
        rport[e] = harness_free_port();
        snprintf(resp, sizeof(resp), "127.0.0.1:%d", rport[e]);
        const char *flags[] = {"--resp", resp, NULL};
        hport[e] = harness_start_http(h, i, flags);
    }
    harness_wait_converged(h);
    kv_t *c = harness_client(h, 5000);
    harness_wait_members(c, (size_t)nodes);

    _Atomic int64_t fault_at = 0;
    path_t paths[6];
    int np = 0;
    memset(paths, 0, sizeof(paths));
    paths[np++] = (path_t){.name = "C API (client role)", .kind = P_API};
    paths[np++] = (path_t){.name = "CLI", .kind = P_CLI};
    paths[np++] = (path_t){.name = "HTTP on a replica", .kind = P_HTTP,
                           .port = hport[0]};
    paths[np++] = (path_t){.name = "RESP on a replica", .kind = P_RESP,
                           .port = rport[0]};
    if (nodes == 5) {
        paths[np++] = (path_t){.name = "HTTP on a non-replica",
                               .kind = P_HTTP, .port = hport[1]};
        paths[np++] = (path_t){.name = "RESP on a non-replica",
                               .kind = P_RESP, .port = rport[1]};
    }
    pick_keys(c, "n3", "n1", nodes == 5 ? "n5" : NULL, paths, np);
    kv_t *api[6] = {NULL};
    for (int i = 0; i < np; i++) {
        paths[i].fault_at = &fault_at;
        paths[i].fd = -1;
        snprintf(paths[i].urls, sizeof(paths[i].urls), "%s,%s",
                 h->node[0].url, h->node[1].url);
        if (paths[i].kind == P_API) {
            api[i] = harness_client(h, 5000);
            harness_wait_members(api[i], (size_t)nodes);
            paths[i].c = api[i];
        }
        if (paths[i].kind == P_HTTP) {
            paths[i].curl = curl_easy_init();
            ck_assert_ptr_nonnull(paths[i].curl);
        }
    }
    pthread_t t[6];
    for (int i = 0; i < np; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, path_main, &paths[i]), 0);
    }
    harness_sleep_ms(AV_BEFORE_MS); /* the schedule: rounds before */
    pid_t victim = h->node[2].pid;
    atomic_store(&fault_at, harness_now_ms());
    if (pause) {
        ck_assert_int_eq(kill(victim, SIGSTOP), 0);
    } else {
        harness_kill(h, 2);
    }
    for (int i = 0; i < np; i++) {
        pthread_join(t[i], NULL);
    }
    if (pause) {
        kill(victim, SIGCONT);
    }
    const char *fault = pause ? "SIGSTOP" : "kill -9";
    int bad = 0;
    char first[2400] = "";
    for (int i = 0; i < np; i++) {
        path_t *p = &paths[i];
        int n = p->ops < AV_MAX_OPS ? p->ops : AV_MAX_OPS;
        qsort(p->lat, (size_t)n, sizeof(int), cmp_int);
        int p50 = n ? p->lat[n / 2] : -1;
        int p99 = n ? p->lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] : -1;
        int max = n ? p->lat[n - 1] : -1;
        printf("availability %d nodes %s: %s: %d of %d requests ok after the "
               "fault (writes and reads), p50 %d ms, p99 %d ms, max %d ms; "
               "%d failed before it\n",
               nodes, fault, p->name, p->ops - p->failed, p->ops, p50, p99, max,
               p->failed_before);
        if (p->why[0] != '\0') {
            printf("  first failure: %s\n", p->why);
        }
        fflush(stdout); /* before a failed assertion ends the process */
        bool slow = max >= AV_BOUND_MS;
        if ((p->failed > 0 || p->failed_before > 0 || slow || n == 0) &&
            bad++ == 0) {
            snprintf(first, sizeof(first),
                     "%s: %d failed, max %d ms; first failure: %s", p->name,
                     p->failed + p->failed_before, max, p->why);
        }
    }
    for (int i = 0; i < np; i++) {
        if (paths[i].fd >= 0) {
            close(paths[i].fd);
        }
        if (paths[i].curl != NULL) {
            curl_easy_cleanup(paths[i].curl);
        }
        if (api[i] != NULL) {
            kv_close(api[i]);
        }
    }
    kv_close(c);
    harness_destroy(h);
    ck_assert_msg(bad == 0, "%d nodes, %s of n3: %d paths failed; %s", nodes,
                  fault, bad, first);
}

START_TEST(test_3_nodes_kill)
{
    run_case(3, false);
}
END_TEST

START_TEST(test_3_nodes_pause)
{
    run_case(3, true);
}
END_TEST

START_TEST(test_5_nodes_kill)
{
    run_case(5, false);
}
END_TEST

START_TEST(test_5_nodes_pause)
{
    run_case(5, true);
}
END_TEST

Suite *availability_suite(void)
{
    Suite *s = suite_create("availability");
    TCase *tc = tcase_create("multiprocess");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_3_nodes_kill);
    tcase_add_test(tc, test_3_nodes_pause);
    tcase_add_test(tc, test_5_nodes_kill);
    tcase_add_test(tc, test_5_nodes_pause);
    suite_add_tcase(s, tc);
    return s;
}
