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
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvdist.h"
#include "object.h"
#include "wire.h"

#include <nng/nng.h>

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
    /* Fast gossip so failures are detected in about 2 s, not 9. */
    argv[a++] = "--gossip-interval-ms";
    argv[a++] = "100";
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
    /* The child calls nothing of Check's: a thread of the test may have
     * held Check's lock (taken by every ck_assert) when it forked, and
     * the child would wait for it forever. */
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
    ck_assert_int_ge(pid, 0);
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

int harness_stop_status(harness_t *h, int i)
{
    harness_node_t *n = &h->node[i];
    if (n->pid <= 0) {
        return -1;
    }
    kill(n->pid, SIGTERM);
    int64_t deadline = harness_now_ms() + 30000;
    while (harness_now_ms() < deadline) {
        int status;
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
            n->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        harness_sleep_ms(10);
    }
    kill(n->pid, SIGKILL);
    waitpid(n->pid, NULL, 0);
    n->pid = 0;
    return -1;
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
    ck_assert_int_eq(kv_options_set(o, "gossip_interval_ms", "100"), 0);
    const struct {
        const char *name;
        int v;
    } q[] = {{"n", h->n}, {"r", h->r}, {"w", h->w}};
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        if (q[i].v > 0) {
            char nb[16];
            snprintf(nb, sizeof(nb), "%d", q[i].v);
            ck_assert_int_eq(kv_options_set(o, q[i].name, nb), 0);
        }
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

void harness_wait_status(kv_t *kv, const char *id, int status)
{
    int64_t deadline = harness_now_ms() + 15000;
    for (;;) {
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
        ck_assert_msg(harness_now_ms() < deadline, "%s never seen %s", id,
                      kv_member_status_name(status));
        harness_sleep_ms(20);
    }
}

const wire_limits_t harness_big_limits = {1 << 16, 1 << 24, 1 << 26};

/* Sends one raw message to url and returns the reply (nng_msg to free),
 * or NULL when nothing came back within timeout_ms. */
/* Reads exactly n bytes (bounded by the socket's receive timeout). */
static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

nng_msg *harness_raw_request(const char *url, const void *p, size_t len,
                             int timeout_ms)
{
    /*
     * Speaks the SP-over-TCP framing by hand (an 8-byte handshake naming
     * the req0 protocol, then 8-byte big-endian lengths; a req0 body starts
     * with a 4-byte request id that the reply echoes), so that the test
     * process opens no NNG socket of its own beside the library's.
     */
    int port = 0;
    ck_assert_int_eq(sscanf(url, "tcp://127.0.0.1:%d", &port), 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    nng_msg *reply = NULL;
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
    uint8_t peer[8];
    uint8_t hdr[12];
    uint64_t n = len + 4;
    for (int i = 0; i < 8; i++) {
        hdr[i] = (uint8_t)(n >> (56 - 8 * i));
    }
    hdr[8] = 0x80; /* request id 0x80000001 */
    hdr[9] = 0;
    hdr[10] = 0;
    hdr[11] = 1;
    /* send(MSG_NOSIGNAL): a node that closes the connection (a full
     * peer_buffer_budget) must fail the request, not kill the test. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        send(fd, hello, 8, MSG_NOSIGNAL) == 8 && read_full(fd, peer, 8) == 0 &&
        send(fd, hdr, 12, MSG_NOSIGNAL) == 12 &&
        (len == 0 || send(fd, p, len, MSG_NOSIGNAL) == (ssize_t)len)) {
        uint8_t lenb[8];
        uint8_t id[4];
        if (read_full(fd, lenb, 8) == 0) {
            uint64_t rl = 0;
            for (int i = 0; i < 8; i++) {
                rl = (rl << 8) | lenb[i];
            }
            if (rl >= 4 && rl < (1u << 26) && read_full(fd, id, 4) == 0 &&
                nng_msg_alloc(&reply, rl - 4) == 0 &&
                read_full(fd, nng_msg_body(reply), rl - 4) != 0) {
                nng_msg_free(reply);
                reply = NULL;
            }
        }
    }
    close(fd);
    return reply;
}

/* Writes raw bytes to 127.0.0.1:port and returns 1 if the node then
 * closes the connection within 3 s, 0 if it keeps it open. */
int harness_raw_tcp(int port, const void *p, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(write(fd, p, len), (ssize_t)len);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[256];
    ssize_t n;
    int closed = 0;
    /* the node may answer the handshake first; read until EOF or timeout */
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
    }
    closed = n == 0 || (n < 0 && errno == ECONNRESET);
    close(fd);
    return closed;
}

/* What node `url` holds for key in its own store: the number of live
 * siblings (-1 if the request failed); *val gets the first live value. */
int harness_local_get(const char *url, const char *key, char *val,
                     size_t valsize)
{
    buf_t b;
    buf_init(&b);
    wire_build_key(&b, WIRE_LOCAL_GET, 1, key, strlen(key));
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 2000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    wire_msg_t m;
    int live = -1;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply), &harness_big_limits,
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
int harness_wait_local_value(const char *url, const char *key,
                            const char *want, int bound_ms)
{
    int64_t deadline = harness_now_ms() + bound_ms;
    while (harness_now_ms() < deadline) {
        char v[256] = "";
        if (harness_local_get(url, key, v, sizeof(v)) == 1 && strcmp(v, want) == 0) {
            return 1;
        }
        harness_sleep_ms(20);
    }
    return 0;
}

/* One counter from node url's metrics (WIRE_STATS), or -1. */
long long harness_remote_stat(const char *url, const char *name)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_STATS, 1, 0);
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 2000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    long long v = -1;
    wire_msg_t m;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply), &harness_big_limits,
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

/* Sum of a metric over the running nodes. */
long long harness_sum_stat(harness_t *h, const char *name)
{
    long long sum = 0;
    for (int i = 0; i < h->nnodes; i++) {
        if (h->node[i].pid > 0) {
            long long v = harness_remote_stat(h->node[i].url, name);
            sum += v > 0 ? v : 0;
        }
    }
    return sum;
}

/* Node url's view of member id: KV_MEMBER_UP/DOWN, or -1 if unknown or
 * the node did not answer. Also the number of members it lists. */
int harness_remote_status(const char *url, const char *id, size_t *count)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_MEMBERS, 1, 0);
    nng_msg *reply = harness_raw_request(url, b.p, b.len, 2000);
    buf_free(&b);
    if (count != NULL) {
        *count = 0;
    }
    if (reply == NULL) {
        return -1;
    }
    int status = -1;
    wire_msg_t m;
    if (wire_decode(nng_msg_body(reply), nng_msg_len(reply),
                    &harness_big_limits, &m) == 0 &&
        m.status == 0) {
        if (count != NULL) {
            *count = m.nmembers;
        }
        rd_t r;
        rd_init(&r, m.members, m.memberslen);
        wire_member_t mem;
        while (wire_next_member(&r, &mem)) {
            if (mem.idlen == strlen(id) && memcmp(mem.id, id, mem.idlen) == 0) {
                status = mem.status;
            }
        }
    }
    nng_msg_free(reply);
    return status;
}

void harness_wait_converged(harness_t *h)
{
    int64_t deadline = harness_now_ms() + 15000;
    for (int i = 0; i < h->nnodes; i++) {
        if (h->node[i].pid <= 0) {
            continue;
        }
        for (int j = 0; j < h->nnodes; j++) {
            if (h->node[j].pid <= 0) {
                continue;
            }
            size_t count = 0;
            while (harness_remote_status(h->node[i].url, h->node[j].id,
                                         &count) != KV_MEMBER_UP ||
                   count != (size_t)h->nnodes) {
                ck_assert_msg(harness_now_ms() < deadline,
                              "%s does not see %s up among %d members",
                              h->node[i].id, h->node[j].id, h->nnodes);
                harness_sleep_ms(20);
            }
        }
    }
}

/* Starts node i serving the HTTP API on 127.0.0.1 at a port picked here
 * (plus extra flags); returns that port. */
int harness_start_http(harness_t *h, int i, const char *const *extra)
{
    int port = harness_free_port();
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    const char *argv[40];
    int a = 0;
    argv[a++] = "--http";
    argv[a++] = addr;
    for (int k = 0; extra != NULL && extra[k] != NULL && a < 39; k++) {
        argv[a++] = extra[k];
    }
    argv[a] = NULL;
    harness_start(h, i, argv);
    return port;
}

/* Runs kvdistd with argv to completion (bounded) and returns its exit
 * status; its stderr goes to errpath. */
int harness_run_daemon(const harness_t *h, const char *const *args,
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
