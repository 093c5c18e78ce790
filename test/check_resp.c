/*
 * check_resp.c - the Redis-protocol front end (lib/resp.c), driven the way
 * users drive it: Debian's redis-cli (forked and exec'd, its output read
 * back) and raw TCP sockets for pipelining, binary values and bad input,
 * against kvdistd processes the harness starts with --resp.
 *
 * The test process speaks plain sockets only (never NNG: see
 * check_harness.c).
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec.h"

#define REDIS_CLI "redis-cli"

/* Runs argv with `in` on its stdin; its stdout (NUL-terminated) goes to
 * out. Returns the exit status; kills the child (by pid) after 20 s. */
static int run_capture(const char *const *argv, const void *in, size_t inlen,
                       char *out, size_t outsize)
{
    int pin[2];
    int pout[2];
    ck_assert_int_eq(pipe(pin), 0);
    ck_assert_int_eq(pipe(pout), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        close(pin[0]);
        close(pin[1]);
        close(pout[0]);
        close(pout[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);
    size_t sent = 0;
    size_t got = 0;
    bool in_open = true;
    if (inlen == 0) {
        close(pin[1]);
        in_open = false;
    }
    int64_t deadline = harness_now_ms() + 20000;
    for (;;) {
        struct pollfd pf[2] = {{pout[0], POLLIN, 0}, {pin[1], POLLOUT, 0}};
        int nf = in_open ? 2 : 1;
        int64_t left = deadline - harness_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            ck_abort_msg("%s did not finish within 20 s", argv[0]);
        }
        if (poll(pf, (nfds_t)nf, (int)left) < 0 && errno != EINTR) {
            break;
        }
        if (in_open && (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(pin[1], (const char *)in + sent, inlen - sent);
            if (n > 0) {
                sent += (size_t)n;
            }
            if (n < 0 && errno != EAGAIN) {
                sent = inlen;
            }
            if (sent == inlen) {
                close(pin[1]);
                in_open = false;
            }
        }
        if (pf[0].revents & (POLLIN | POLLHUP)) {
            char tmp[4096];
            ssize_t n = read(pout[0], tmp, sizeof(tmp));
            if (n <= 0) {
                break;
            }
            size_t keep = (size_t)n;
            if (got + keep >= outsize) {
                keep = outsize - 1 - got;
            }
            memcpy(out + got, tmp, keep);
            got += keep;
        }
    }
    out[got] = '\0';
    if (in_open) {
        close(pin[1]);
    }
    close(pout[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* redis-cli -p port ARGS...: its output, trailing newline removed. */
static void cli(int port, char *out, size_t outsize, const char *a1,
                const char *a2, const char *a3)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {REDIS_CLI, "-h", "127.0.0.1", "-p", p,
                          a1,        a2,   a3,          NULL};
    int st = run_capture(argv, NULL, 0, out, outsize);
    ck_assert_msg(st == 0, "redis-cli %s exited %d: %s", a1, st, out);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) {
        out[--n] = '\0';
    }
}

static void cli_expect(int port, const char *want, const char *a1,
                       const char *a2, const char *a3)
{
    char out[4096];
    cli(port, out, sizeof(out), a1, a2, a3);
    ck_assert_msg(strcmp(out, want) == 0,
                  "redis-cli %s %s: got '%s', want '%s'", a1, a2 ? a2 : "", out,
                  want);
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void tcp_send(int fd, const void *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, (const char *)p + off, len - off);
        ck_assert_msg(n > 0, "write: %s", strerror(errno));
        off += (size_t)n;
    }
}

/* Reads exactly len bytes (bounded: 10 s); returns how many came before
 * EOF or the deadline. */
static size_t tcp_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    int64_t deadline = harness_now_ms() + 10000;
    while (got < len) {
        int64_t left = deadline - harness_now_ms();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
            break;
        }
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    return got;
}

/* Sends req in one write and expects exactly `want` back. */
static void raw_expect(int fd, const void *req, size_t reqlen, const void *want,
                       size_t wantlen)
{
    tcp_send(fd, req, reqlen);
    char *got = malloc(wantlen + 1);
    size_t n = tcp_read(fd, got, wantlen);
    ck_assert_msg(n == wantlen && memcmp(got, want, wantlen) == 0,
                  "reply: got %zu bytes '%.*s', want '%.*s'", n, (int)n, got,
                  (int)wantlen, (const char *)want);
    free(got);
}

/* True if the peer closes within 5 s, after any bytes it still sends. */
static bool tcp_closed(int fd)
{
    char buf[512];
    int64_t deadline = harness_now_ms() + 5000;
    while (harness_now_ms() < deadline) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 200) <= 0) {
            continue;
        }
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return true;
        }
    }
    return false;
}

/* Starts nodes 0..count-1 of h, node i serving RESP on resp[i]. */
static void start_with_resp(harness_t *h, int *resp)
{
    for (int i = 0; i < h->nnodes; i++) {
        char addr[64];
        resp[i] = harness_free_port();
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", resp[i]);
        const char *extra[] = {"--resp", addr, NULL};
        harness_start(h, i, extra);
    }
}

/* The commands a user types, through redis-cli, on a 3-node cluster:
 * written through one node, read through another. */
static void check_cli_commands(int p0, int p1)
{
    cli_expect(p0, "PONG", "PING", NULL, NULL);
    cli_expect(p0, "OK", "SET", "fruit", "apple");
    cli_expect(p1, "apple", "GET", "fruit", NULL);
    cli_expect(p1, "1", "EXISTS", "fruit", NULL);
    cli_expect(p1, "", "GET", "nothing-here", NULL);
    cli_expect(p0, "OK", "SET", "fruit", "pear");
    cli_expect(p1, "pear", "GET", "fruit", NULL);
    cli_expect(p0, "1", "DEL", "fruit", "nothing-here");
    cli_expect(p1, "0", "EXISTS", "fruit", NULL);
    cli_expect(p1, "0", "DEL", "fruit", NULL);
    char out[4096];
    cli(p0, out, sizeof(out), "FLUSHALL", NULL, NULL);
    ck_assert_msg(strstr(out, "ERR unknown command") != NULL, "%s", out);
    cli(p0, out, sizeof(out), "SET", "k", "v");
    ck_assert_str_eq(out, "OK");
    const char *argv_ex[] = {REDIS_CLI, "-p", NULL, "SET", "k",
                             "v",       "EX", "10", NULL};
    char p[16];
    snprintf(p, sizeof(p), "%d", p0);
    argv_ex[2] = p;
    run_capture(argv_ex, NULL, 0, out, sizeof(out));
    ck_assert_msg(strstr(out, "ERR") != NULL && strstr(out, "not supported"),
                  "SET EX: %s", out);
    cli(p0, out, sizeof(out), "INFO", NULL, NULL);
    ck_assert_msg(strstr(out, "redis_version:") != NULL &&
                      strstr(out, "kvdist_puts_total:") != NULL,
                  "INFO: %s", out);
}

/* Several requests in one write, arrays and inline mixed, binary bytes
 * (NUL, CR, LF) in keys and values: replies come back in request order. */
static void check_pipelining(int port, int other)
{
    int fd = tcp_connect(port);
    static const char req[] =
        "*3\r\n$3\r\nSET\r\n$4\r\nb\0\r\n\r\n$6\r\nx\r\n\0y\xff\r\n"
        "PING\r\n"
        "*2\r\n$3\r\nGET\r\n$4\r\nb\0\r\n\r\n"
        "*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n"
        "*2\r\n$6\r\nEXISTS\r\n$4\r\nb\0\r\n\r\n"
        "*1\r\n$4\r\nNOPE\r\n"
        "ECHO   hello\r\n"
        "*2\r\n$6\r\nCLIENT\r\n$7\r\nGETNAME\r\n"
        "CLIENT SETNAME bench\r\n"
        "CLIENT GETNAME\r\n";
    static const char want[] = "+OK\r\n"
                               "+PONG\r\n"
                               "$6\r\nx\r\n\0y\xff\r\n"
                               "$-1\r\n"
                               ":1\r\n"
                               "-ERR unknown command 'NOPE'\r\n"
                               "$5\r\nhello\r\n"
                               "$-1\r\n"
                               "+OK\r\n"
                               "$5\r\nbench\r\n";
    raw_expect(fd, req, sizeof(req) - 1, want, sizeof(want) - 1);

    /* A request split across writes at every awkward place. */
    static const char split[] = "*2\r\n$3\r\nGET\r\n$4\r\nb\0\r\n\r\n";
    for (size_t cut = 1; cut < sizeof(split) - 1; cut += 3) {
        tcp_send(fd, split, cut);
        harness_sleep_ms(1); /* lets the node see the part alone */
        static const char wantb[] = "$6\r\nx\r\n\0y\xff\r\n";
        raw_expect(fd, split + cut, sizeof(split) - 1 - cut, wantb,
                   sizeof(wantb) - 1);
    }
    raw_expect(fd, "QUIT\r\n", 6, "+OK\r\n", 5);
    ck_assert(tcp_closed(fd));
    close(fd);

    /* Another node's RESP port sees the same binary value. */
    fd = tcp_connect(other);
    static const char get[] = "*2\r\n$3\r\nGET\r\n$4\r\nb\0\r\n\r\n";
    static const char wantg[] = "$6\r\nx\r\n\0y\xff\r\n";
    raw_expect(fd, get, sizeof(get) - 1, wantg, sizeof(wantg) - 1);
    close(fd);
}

/* redis-cli --pipe: many commands streamed as fast as the pipe goes. */
static void check_cli_pipe(int port, int other)
{
    enum { COUNT = 500 };
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < COUNT; i++) {
        char line[128];
        char key[32];
        char val[32];
        int kl = snprintf(key, sizeof(key), "pipe:%d", i);
        int vl = snprintf(val, sizeof(val), "value-%d", i * 7);
        int n = snprintf(line, sizeof(line),
                         "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kl,
                         key, vl, val);
        buf_put(&b, line, (size_t)n);
    }
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {REDIS_CLI, "-p", p, "--pipe", NULL};
    char out[4096];
    int st = run_capture(argv, b.p, b.len, out, sizeof(out));
    buf_free(&b);
    ck_assert_msg(st == 0, "redis-cli --pipe exited %d: %s", st, out);
    char want[64];
    snprintf(want, sizeof(want), "errors: 0, replies: %d", COUNT);
    ck_assert_msg(strstr(out, want) != NULL, "--pipe: %s", out);
    for (int i = 0; i < COUNT; i += 97) {
        char key[32];
        char val[32];
        snprintf(key, sizeof(key), "pipe:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        cli_expect(other, val, "GET", key, NULL);
    }
}

/* Malformed input: an error reply, the connection closed, the node still
 * serving. */
static void check_bad_input(int port)
{
    static const struct {
        const char *req;
        const char *why;
    } bad[] = {
        {"*abc\r\n", "invalid multibulk length"},
        {"*2\r\n+GET\r\n", "expected '$'"},
        {"*2\r\n$3\r\nGET\r\n$99999999999\r\n", "invalid bulk length"},
        {"*2\r\n$3\r\nGETxx$1\r\nk\r\n", "not terminated"},
        {"*999999\r\n", "invalid multibulk length"},
        {"*1\r\n$-5\r\n", "invalid bulk length"},
        {"*1\r\n$100000000000000000000000\r\n", "invalid bulk length"},
        {"*1\r\n$12345678901234567890123456789012345\r\n",
         "invalid bulk length"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = tcp_connect(port);
        tcp_send(fd, bad[i].req, strlen(bad[i].req));
        char got[256] = "";
        size_t n = tcp_read(fd, got, 6);
        ck_assert_msg(n == 6 && memcmp(got, "-ERR P", 6) == 0,
                      "case %zu: no error reply ('%.*s')", i, (int)n, got);
        ssize_t m = read(fd, got + 6, sizeof(got) - 7);
        got[m > 0 ? 6 + m : 6] = '\0';
        ck_assert_msg(strstr(got, bad[i].why) != NULL, "case %zu: '%s'", i,
                      got);
        ck_assert_msg(tcp_closed(fd), "case %zu: connection left open", i);
        close(fd);
    }
    /* An inline line with no end, past the inline limit. */
    size_t big = (64u << 10) + 16;
    char *junk = malloc(big);
    memset(junk, 'a', big);
    int fd = tcp_connect(port);
    tcp_send(fd, junk, big);
    char got[64] = "";
    size_t n = tcp_read(fd, got, 6);
    ck_assert_msg(n == 6 && memcmp(got, "-ERR P", 6) == 0, "long inline");
    ck_assert(tcp_closed(fd));
    close(fd);
    free(junk);
    /* A connection dropped mid-request leaves nothing behind. */
    fd = tcp_connect(port);
    static const char cut[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc";
    tcp_send(fd, cut, sizeof(cut) - 1);
    close(fd);
    cli_expect(port, "PONG", "PING", NULL, NULL);
}

START_TEST(test_resp_cluster)
{
    harness_t *h = harness_create(3);
    h->n = 3;
    h->r = 2;
    h->w = 2;
    int resp[3];
    start_with_resp(h, resp);
    harness_wait_converged(h);
    check_cli_commands(resp[0], resp[1]);
    check_pipelining(resp[1], resp[2]);
    check_cli_pipe(resp[2], resp[0]);
    check_bad_input(resp[0]);
    /* Every node still answers after all that. */
    for (int i = 0; i < 3; i++) {
        cli_expect(resp[i], "PONG", "PING", NULL, NULL);
    }
    harness_destroy(h);
}
END_TEST

/* A node without peers answers from its local replica on the spot (the
 * synchronous path): the same behaviour, including big values at the
 * limit and one over it. */
START_TEST(test_resp_single_node)
{
    harness_t *h = harness_create(1);
    int resp[1];
    resp[0] = harness_free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", resp[0]);
    const char *extra[] = {"--resp", addr, "--max-value-size", "100000", NULL};
    harness_start(h, 0, extra);
    check_cli_commands(resp[0], resp[0]);
    check_pipelining(resp[0], resp[0]);
    check_bad_input(resp[0]);

    int fd = tcp_connect(resp[0]);
    size_t vlen = 100000;
    char *req = malloc(vlen + 64);
    int hl =
        snprintf(req, 64, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%zu\r\n", vlen);
    for (size_t i = 0; i < vlen; i++) {
        req[hl + (int)i] = (char)(i * 31);
    }
    memcpy(req + hl + vlen, "\r\n", 2);
    raw_expect(fd, req, (size_t)hl + vlen + 2, "+OK\r\n", 5);
    char *want = malloc(vlen + 64);
    int wl = snprintf(want, 64, "$%zu\r\n", vlen);
    memcpy(want + wl, req + hl, vlen);
    memcpy(want + wl + vlen, "\r\n", 2);
    raw_expect(fd, "GET big\r\n", 9, want, (size_t)wl + vlen + 2);
    /* One byte over max_value_size: refused as a bulk length. */
    hl =
        snprintf(req, 64, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%zu\r\n", vlen + 1);
    tcp_send(fd, req, (size_t)hl);
    char got[64] = "";
    size_t n = tcp_read(fd, got, 6);
    ck_assert_msg(n == 6 && memcmp(got, "-ERR P", 6) == 0, "over-long value");
    ck_assert(tcp_closed(fd));
    close(fd);
    free(req);
    free(want);
    cli_expect(resp[0], "PONG", "PING", NULL, NULL);
    harness_destroy(h);
}
END_TEST

Suite *resp_suite(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("redis-cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_resp_single_node);
    tcase_add_test(tc, test_resp_cluster);
    suite_add_tcase(s, tc);
    return s;
}
