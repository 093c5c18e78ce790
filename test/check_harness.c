/*
 * check_harness.c - starts and stops real kvdistd processes for the
 * multi-process suites.
 *
 * Nodes listen on tcp://127.0.0.1 with ports chosen at run time (bound to
 * port 0 by the kernel, then handed to the daemon; a daemon that loses the
 * race for its port is restarted on another). Every wait is a bounded poll
 * on a condition. Processes are stopped by PID: explicitly, by an atexit
 * handler when an assertion ends the test early, and by the kernel
 * (PR_SET_PDEATHSIG) if the test process dies outright.
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvdist.h"

static harness_t *live_harness; /* for the atexit safety net only */

static void harness_atexit(void)
{
    if (live_harness != NULL) {
        harness_stop_all(live_harness);
    }
}

int64_t harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int harness_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

harness_t *harness_create(int nodes)
{
    ck_assert_int_le(nodes, HARNESS_MAX_NODES);
    harness_t *h = calloc(1, sizeof(*h));
    ck_assert_ptr_nonnull(h);
    h->dir = util_tmpdir("cluster");
    h->nnodes = nodes;
    const char *build = getenv("KVDIST_BUILD");
    snprintf(h->daemon, sizeof(h->daemon), "%s/examples/kvdistd",
             build && *build ? build : "build");
    ck_assert_msg(access(h->daemon, X_OK) == 0, "no daemon at %s", h->daemon);
    for (int i = 0; i < nodes; i++) {
        harness_node_t *n = &h->node[i];
        snprintf(n->id, sizeof(n->id), "n%d", i + 1);
        snprintf(n->data, sizeof(n->data), "%s/n%d", h->dir, i + 1);
        snprintf(n->log, sizeof(n->log), "%s/n%d.log", h->dir, i + 1);
        n->port = harness_free_port();
        snprintf(n->url, sizeof(n->url), "tcp://127.0.0.1:%d", n->port);
    }
    live_harness = h;
    static int registered;
    if (!registered) {
        atexit(harness_atexit);
        registered = 1;
    }
    return h;
}

static int log_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

static pid_t spawn(harness_t *h, int i, const char *const *extra)
{
    harness_node_t *n = &h->node[i];
    const char *argv[64];
    int a = 0;
    char nbuf[16];
    char rbuf[16];
    char wbuf[16];
    snprintf(nbuf, sizeof(nbuf), "%d", h->n);
    snprintf(rbuf, sizeof(rbuf), "%d", h->r);
    snprintf(wbuf, sizeof(wbuf), "%d", h->w);
    argv[a++] = h->daemon;
    argv[a++] = "--id";
    argv[a++] = n->id;
    argv[a++] = "--listen";
    argv[a++] = n->url;
    argv[a++] = "--data";
    argv[a++] = n->data;
    argv[a++] = "--log-level";
    argv[a++] = "info";
    argv[a++] = "--cache-size";
    argv[a++] = "8MiB";
    if (h->n > 0) {
        argv[a++] = "--n";
        argv[a++] = nbuf;
    }
    if (h->r > 0) {
        argv[a++] = "--r";
        argv[a++] = rbuf;
    }
    if (h->w > 0) {
        argv[a++] = "--w";
        argv[a++] = wbuf;
    }
    if (i > 0) {
        argv[a++] = "--join";
        argv[a++] = h->node[0].url;
    }
    for (int k = 0; extra != NULL && extra[k] != NULL && a < 62; k++) {
        argv[a++] = extra[k];
    }
    argv[a] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Die with the test process, whatever kills it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            close(devnull);
        }
        execv(h->daemon, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

void harness_start(harness_t *h, int i, const char *const *extra)
{
    harness_node_t *n = &h->node[i];
    for (int attempt = 0; attempt < 3; attempt++) {
        truncate(n->log, 0);
        n->pid = spawn(h, i, extra);
        int64_t deadline = harness_now_ms() + 15000;
        while (harness_now_ms() < deadline) {
            if (log_contains(n->log, "ready")) {
                return;
            }
            int status;
            if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
                n->pid = 0;
                break;
            }
            harness_sleep_ms(20);
        }
        if (n->pid != 0) {
            ck_abort_msg("node %s not ready within 15 s (log %s)", n->id,
                         n->log);
        }
        if (!log_contains(n->log, "in use")) {
            ck_abort_msg("node %s exited at start (log %s)", n->id, n->log);
        }
        /* lost the race for the port: try another */
        n->port = harness_free_port();
        snprintf(n->url, sizeof(n->url), "tcp://127.0.0.1:%d", n->port);
    }
    ck_abort_msg("node %s: no free port after 3 attempts", n->id);
}

void harness_start_all(harness_t *h, const char *const *extra)
{
    for (int i = 0; i < h->nnodes; i++) {
        harness_start(h, i, extra);
    }
}

static void reap(harness_node_t *n, int sig, int bound_ms)
{
    if (n->pid <= 0) {
        return;
    }
    kill(n->pid, sig);
    int64_t deadline = harness_now_ms() + bound_ms;
    while (harness_now_ms() < deadline) {
        int status;
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
            n->pid = 0;
            return;
        }
        harness_sleep_ms(10);
    }
    kill(n->pid, SIGKILL);
    waitpid(n->pid, NULL, 0);
    n->pid = 0;
}

void harness_stop(harness_t *h, int i)
{
    reap(&h->node[i], SIGTERM, 10000);
}

void harness_kill(harness_t *h, int i)
{
    reap(&h->node[i], SIGKILL, 5000);
}

void harness_stop_all(harness_t *h)
{
    for (int i = 0; i < h->nnodes; i++) {
        if (h->node[i].pid > 0 && kill(h->node[i].pid, SIGCONT) != 0) {
            h->node[i].pid = 0;
        }
        harness_stop(h, i);
    }
}

void harness_destroy(harness_t *h)
{
    harness_stop_all(h);
    if (live_harness == h) {
        live_harness = NULL;
    }
    util_rmtree(h->dir);
    free(h->dir);
    free(h);
}

char *harness_join_list(const harness_t *h)
{
    size_t size = 1;
    for (int i = 0; i < h->nnodes; i++) {
        size += strlen(h->node[i].url) + 1;
    }
    char *s = calloc(1, size);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < h->nnodes; i++) {
        if (i > 0) {
            strcat(s, ",");
        }
        strcat(s, h->node[i].url);
    }
    return s;
}

kv_t *harness_client(const harness_t *h, int timeout_ms)
{
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    char *join = harness_join_list(h);
    char tmo[16];
    snprintf(tmo, sizeof(tmo), "%d", timeout_ms);
    ck_assert_int_eq(kv_options_set(o, "role", "client"), 0);
    ck_assert_int_eq(kv_options_set(o, "join", join), 0);
    ck_assert_int_eq(kv_options_set(o, "timeout_ms", tmo), 0);
    if (h->n > 0) {
        char nb[16];
        snprintf(nb, sizeof(nb), "%d", h->n);
        ck_assert_int_eq(kv_options_set(o, "n", nb), 0);
    }
    kv_t *kv = NULL;
    int rc = kv_open(o, &kv);
    ck_assert_msg(rc == 0, "client open: %s", kv_strerror(rc));
    kv_options_destroy(o);
    free(join);
    return kv;
}

void harness_wait_members(kv_t *kv, size_t want)
{
    int64_t deadline = harness_now_ms() + 15000;
    size_t got = 0;
    size_t up = 0;
    while (harness_now_ms() < deadline) {
        kv_member_t *m = NULL;
        ck_assert_int_eq(kv_members(kv, &m, &got), 0);
        up = 0;
        for (size_t i = 0; i < got; i++) {
            up += m[i].status == KV_MEMBER_UP;
        }
        kv_free(m);
        if (got == want && up == want) {
            return;
        }
        harness_sleep_ms(20);
    }
    ck_abort_msg("membership did not reach %zu members up (saw %zu, %zu up)",
                 want, got, up);
}
