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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec.h"
#include "resp.h"

#define REDIS_CLI "redis-cli"

/* Runs argv with `in` on its stdin; its stdout (and its stderr too if
 * with_stderr), NUL-terminated, goes to out. Returns the exit status; kills
 * the child (by pid) after 60 s. */
static int run_capture_all(const char *const *argv, const void *in,
                           size_t inlen, char *out, size_t outsize,
                           bool with_stderr)
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
        if (with_stderr) {
            dup2(pout[1], 2);
        }
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
    int64_t deadline = harness_now_ms() + 60000;
    for (;;) {
        struct pollfd pf[2] = {{pout[0], POLLIN, 0}, {pin[1], POLLOUT, 0}};
        int nf = in_open ? 2 : 1;
        int64_t left = deadline - harness_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            ck_abort_msg("%s did not finish within 60 s", argv[0]);
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

static int run_capture(const char *const *argv, const void *in, size_t inlen,
                       char *out, size_t outsize)
{
    return run_capture_all(argv, in, inlen, out, outsize, false);
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
    cli(p0, out, sizeof(out), "INFO", "server", NULL);
    char want[64];
    snprintf(want, sizeof(want), "kvdist_version:%s", kv_version());
    ck_assert_msg(strstr(out, "# Server") != NULL && strstr(out, want) &&
                      strstr(out, "# Stats") == NULL,
                  "INFO server: %s", out);
    cli_expect(p0, "OK", "MSET", "cli:a", "1");
    cli(p0, out, sizeof(out), "MGET", "cli:none", "cli:a");
    ck_assert_str_eq(out, "\n1");
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

/* Reads one bulk-string reply ("$<n>\r\n<n bytes>\r\n") into a malloc'd,
 * NUL-terminated string (free it). */
static char *read_bulk(int fd)
{
    char head[32];
    size_t k = 0;
    while (k + 1 < sizeof(head)) {
        ck_assert_msg(tcp_read(fd, head + k, 1) == 1, "bulk header cut");
        if (head[k++] == '\n') {
            break;
        }
    }
    head[k] = '\0';
    ck_assert_msg(head[0] == '$' && k >= 4 && head[k - 2] == '\r',
                  "not a bulk string: '%s'", head);
    size_t n = strtoul(head + 1, NULL, 10);
    char *body = malloc(n + 3);
    ck_assert_uint_eq(tcp_read(fd, body, n + 2), n + 2);
    ck_assert_msg(body[n] == '\r' && body[n + 1] == '\n', "bulk not CRLF'd");
    body[n] = '\0';
    return body;
}

/* INFO args... on fd: the section headers of its answer, "|"-joined. */
static void info_headers(int fd, const char *req, char *out, size_t size)
{
    tcp_send(fd, req, strlen(req));
    char *body = read_bulk(fd);
    out[0] = '\0';
    for (char *p = body; (p = strstr(p, "# ")) != NULL; p += 2) {
        if (p != body && p[-1] != '\n') {
            continue;
        }
        size_t n = strcspn(p + 2, "\r\n");
        snprintf(out + strlen(out), size - strlen(out), "%s%.*s",
                 out[0] ? "|" : "", (int)n, p + 2);
    }
    free(body);
}

/* MGET, MSET, SELECT and the transaction commands, exact bytes, on a
 * pipelined connection to p0; the keys written are then read through p1. */
static void check_multi_key_commands(int p0, int p1)
{
    int fd = tcp_connect(p0);
    static const char req[] =
        "*5\r\n$4\r\nMSET\r\n$3\r\nmk1\r\n$2\r\nv1\r\n"
        "$3\r\nmk2\r\n$6\r\nb\0\r\n\xff\r\r\n"
        "*4\r\n$4\r\nmget\r\n$3\r\nmk1\r\n$7\r\nmissing\r\n$3\r\nmk2\r\n"
        "MSET mk1 v1 mk2\r\n"
        "*3\r\n$4\r\nMSET\r\n$0\r\n\r\n$1\r\nv\r\n"
        "MGET\r\n"
        "*2\r\n$4\r\nMGET\r\n$0\r\n\r\n"
        "SELECT 0\r\n"
        "SELECT 1\r\n"
        "SELECT x\r\n"
        "MULTI\r\n"
        "SET tx:a 1\r\n"
        "GET mk1\r\n"
        "EXEC\r\n"
        "GET tx:a\r\n"
        "MULTI\r\n"
        "DISCARD\r\n"
        "DISCARD\r\n"
        "EXEC\r\n"
        "WATCH mk1\r\n"
        "UNWATCH\r\n"
        "MGET mk1\r\n";
    static const char want[] =
        "+OK\r\n"
        "*3\r\n$2\r\nv1\r\n$-1\r\n$6\r\nb\0\r\n\xff\r\r\n"
        "-ERR wrong number of arguments for 'mset' command\r\n"
        "-ERR kvdist: empty keys are not supported\r\n"
        "-ERR wrong number of arguments for 'mget' command\r\n"
        "-ERR kvdist: empty keys are not supported\r\n"
        "+OK\r\n"
        "-ERR DB index is out of range (libkvdist has one keyspace: "
        "database 0)\r\n"
        "-ERR value is not an integer or out of range\r\n"
        "-ERR MULTI is not supported: libkvdist has no transactions; send "
        "the commands without MULTI (a non-transactional pipeline, e.g. "
        "redis-py pipeline(transaction=False))\r\n"
        "-ERR kvdist: not run: this connection sent MULTI, which is not "
        "supported; send DISCARD (or EXEC), then the commands without "
        "MULTI\r\n"
        "-ERR kvdist: not run: this connection sent MULTI, which is not "
        "supported; send DISCARD (or EXEC), then the commands without "
        "MULTI\r\n"
        "-EXECABORT Transaction discarded: MULTI is not supported, and no "
        "command since it was run\r\n"
        "$-1\r\n"
        "-ERR MULTI is not supported: libkvdist has no transactions; send "
        "the commands without MULTI (a non-transactional pipeline, e.g. "
        "redis-py pipeline(transaction=False))\r\n"
        "+OK\r\n"
        "-ERR DISCARD is not supported: libkvdist has no transactions; send "
        "the commands without MULTI (a non-transactional pipeline, e.g. "
        "redis-py pipeline(transaction=False))\r\n"
        "-ERR EXEC is not supported: libkvdist has no transactions; send "
        "the commands without MULTI (a non-transactional pipeline, e.g. "
        "redis-py pipeline(transaction=False))\r\n"
        "-ERR WATCH is not supported: libkvdist has no transactions "
        "(concurrent writes become siblings, resolved on read)\r\n"
        "+OK\r\n"
        "*1\r\n$2\r\nv1\r\n";
    raw_expect(fd, req, sizeof(req) - 1, want, sizeof(want) - 1);
    close(fd);

    /* Another node reads what MSET wrote; a long MSET/MGET round trip. */
    fd = tcp_connect(p1);
    static const char get[] = "MGET mk2 mk1\r\n";
    static const char wantg[] = "*2\r\n$6\r\nb\0\r\n\xff\r\r\n$2\r\nv1\r\n";
    raw_expect(fd, get, sizeof(get) - 1, wantg, sizeof(wantg) - 1);
    enum { PAIRS = 300 };
    static const char fill[] = "abcdefghijklmnopqrstuvwxyz0123456789"
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    buf_t b;
    buf_t w;
    buf_init(&b);
    buf_init(&w);
    char line[128];
    int n = snprintf(line, sizeof(line), "*%d\r\n$4\r\nMSET\r\n", 1 + 2 * PAIRS);
    buf_put(&b, line, (size_t)n);
    for (int i = 0; i < PAIRS; i++) {
        n = snprintf(line, sizeof(line), "$7\r\nmk:%04d\r\n$%d\r\n%.*s\r\n", i,
                     i % 50, i % 50, fill + i % 7);
        buf_put(&b, line, (size_t)n);
    }
    n = snprintf(line, sizeof(line), "*%d\r\n$4\r\nMGET\r\n", 1 + PAIRS);
    buf_put(&b, line, (size_t)n);
    n = snprintf(line, sizeof(line), "+OK\r\n*%d\r\n", PAIRS);
    buf_put(&w, line, (size_t)n);
    for (int i = PAIRS - 1; i >= 0; i--) {
        n = snprintf(line, sizeof(line), "$7\r\nmk:%04d\r\n", i);
        buf_put(&b, line, (size_t)n);
        n = snprintf(line, sizeof(line), "$%d\r\n%.*s\r\n", i % 50, i % 50,
                     fill + i % 7);
        buf_put(&w, line, (size_t)n);
    }
    ck_assert(!b.oom && !w.oom);
    raw_expect(fd, b.p, b.len, w.p, w.len);
    buf_free(&b);
    buf_free(&w);
    close(fd);
}

/* INFO's sections, their selection, and DBSIZE/Keyspace agreeing. */
static void check_info_sections(int port)
{
    int fd = tcp_connect(port);
    char h[512];
    const char *all = "Server|Clients|Memory|Stats|Replication|CPU|Keyspace";
    info_headers(fd, "INFO\r\n", h, sizeof(h));
    ck_assert_str_eq(h, all);
    info_headers(fd, "INFO all\r\n", h, sizeof(h));
    ck_assert_str_eq(h, all);
    info_headers(fd, "INFO DEFAULT\r\n", h, sizeof(h));
    ck_assert_str_eq(h, all);
    info_headers(fd, "INFO everything\r\n", h, sizeof(h));
    ck_assert_str_eq(h, all);
    info_headers(fd, "INFO sErVeR\r\n", h, sizeof(h));
    ck_assert_str_eq(h, "Server");
    info_headers(fd, "INFO keyspace clients nope\r\n", h, sizeof(h));
    ck_assert_str_eq(h, "Clients|Keyspace");
    raw_expect(fd, "INFO nope\r\n", 11, "$0\r\n\r\n", 6);

    tcp_send(fd, "INFO server\r\n", 13);
    char *body = read_bulk(fd);
    char want[128];
    snprintf(want, sizeof(want), "\r\nkvdist_version:%s\r\n", kv_version());
    ck_assert_msg(strstr(body, want) != NULL, "INFO server: %s", body);
    snprintf(want, sizeof(want), "\r\ntcp_port:%d\r\n", port);
    ck_assert_msg(strstr(body, want) != NULL, "INFO server: %s", body);
    snprintf(want, sizeof(want), "\r\nprocess_id:");
    ck_assert_msg(strstr(body, "redis_version:") != NULL &&
                      strstr(body, "\r\nuptime_in_seconds:") != NULL &&
                      strstr(body, "\r\narch_bits:") != NULL &&
                      strstr(body, want) != NULL,
                  "INFO server: %s", body);
    free(body);

    /* Connections the previous checks closed are freed soon, not at
     * once: poll (bounded) until this one is the only one counted. */
    int64_t deadline = harness_now_ms() + 10000;
    for (;;) {
        tcp_send(fd, "INFO clients\r\n", 14);
        body = read_bulk(fd);
        ck_assert_msg(strstr(body, "\r\nmaxclients:") != NULL,
                      "INFO clients: %s", body);
        bool one = strstr(body, "\r\nconnected_clients:1\r\n") != NULL;
        ck_assert_msg(one || harness_now_ms() < deadline,
                      "INFO clients within 10 s: %s", body);
        free(body);
        if (one) {
            break;
        }
        harness_sleep_ms(20);
    }

    tcp_send(fd, "INFO memory\r\n", 13);
    body = read_bulk(fd);
    char *um = strstr(body, "\r\nused_memory:");
    ck_assert_msg(um != NULL && strtoull(um + 14, NULL, 10) > (1u << 20) &&
                      strstr(body, "\r\nmaxmemory:0\r\n") != NULL,
                  "INFO memory: %s", body);
    free(body);

    tcp_send(fd, "INFO stats\r\n", 12);
    body = read_bulk(fd);
    char *tc = strstr(body, "\r\ntotal_commands_processed:");
    ck_assert_msg(tc != NULL && strtoull(tc + 27, NULL, 10) >= 12 &&
                      strstr(body, "\r\ntotal_connections_received:") &&
                      strstr(body, "\r\nkvdist_puts_total:") != NULL,
                  "INFO stats: %s", body);
    free(body);

    /* DBSIZE and INFO keyspace report the same estimate. */
    char dbsize[64];
    tcp_send(fd, "DBSIZE\r\n", 8);
    size_t k = 0;
    while (k + 1 < sizeof(dbsize) && tcp_read(fd, dbsize + k, 1) == 1 &&
           dbsize[k++] != '\n') {
    }
    dbsize[k] = '\0';
    ck_assert_msg(dbsize[0] == ':', "DBSIZE: %s", dbsize);
    long long keys = strtoll(dbsize + 1, NULL, 10);
    ck_assert_int_gt(keys, 0);
    tcp_send(fd, "INFO keyspace\r\n", 15);
    body = read_bulk(fd);
    snprintf(want, sizeof(want),
             "# Keyspace\r\ndb0:keys=%lld,expires=0,avg_ttl=0\r\n", keys);
    ck_assert_str_eq(body, want);
    free(body);
    close(fd);
}

/* Debian's python3-redis (redis-py): test/redis_clients.py, which exits 0
 * when every check held and says on stderr which did not. password: the
 * node's auth_password, NULL when it has none. */
static void check_redis_py(int port, const char *password)
{
    static const char script[] = "test/redis_clients.py";
    ck_assert_msg(access(script, R_OK) == 0,
                  "%s not found: run from the source tree", script);
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {"/usr/bin/python3", script, p, password, NULL};
    static char out[16384];
    int st = run_capture_all(argv, NULL, 0, out, sizeof(out), true);
    ck_assert_msg(st == 0, "redis_clients.py exited %d:\n%s", st, out);
}

/* Lines of a node's log file that contain needle. */
static int log_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        n += strstr(line, needle) != NULL;
    }
    free(line);
    fclose(f);
    return n;
}

/* Polls (bounded: 10 s) until the log has a line with needle. */
static void wait_log(const char *path, const char *needle)
{
    int64_t deadline = harness_now_ms() + 10000;
    while (log_count(path, needle) == 0) {
        ck_assert_msg(harness_now_ms() < deadline,
                      "no '%s' in %s within 10 s", needle, path);
        harness_sleep_ms(20);
    }
}

/* A new connection is refused: exactly Redis's line, then closed. */
static void expect_refused(int port)
{
    static const char want[] = "-ERR max number of clients reached\r\n";
    int fd = tcp_connect(port);
    char got[sizeof(want) + 16];
    size_t n = tcp_read(fd, got, sizeof(want) - 1);
    ck_assert_msg(n == sizeof(want) - 1 && memcmp(got, want, n) == 0,
                  "refusal: got %zu bytes '%.*s'", n, (int)n, got);
    ck_assert_msg(tcp_closed(fd), "a refused connection was left open");
    close(fd);
}

/* Polls (bounded: 10 s) until a new connection is admitted (answers
 * PING); returns it. A slot is given back once the node has freed the
 * closed connection, which it does soon but not at once. */
static int connect_admitted(int port)
{
    int64_t deadline = harness_now_ms() + 10000;
    for (;;) {
        int fd = tcp_connect(port);
        (void)send(fd, "PING\r\n", 6, MSG_NOSIGNAL);
        char got[8];
        if (tcp_read(fd, got, 7) == 7 && memcmp(got, "+PONG\r\n", 7) == 0) {
            return fd;
        }
        close(fd);
        ck_assert_msg(harness_now_ms() < deadline,
                      "no connection admitted within 10 s");
        harness_sleep_ms(20);
    }
}

/* max_clients 4: a fifth connection gets Redis's refusal and is closed,
 * the four keep working, and a slot comes back exactly once however a
 * connection ends (client close, QUIT, protocol error): after each, one
 * more is admitted and the next is refused again. The log stays small. */
START_TEST(test_resp_max_clients)
{
    signal(SIGPIPE, SIG_IGN);
    harness_t *h = harness_create(1);
    int port = harness_free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    const char *extra[] = {"--resp", addr, "--max-clients", "4", NULL};
    harness_start(h, 0, extra);

    int fd[4];
    for (int i = 0; i < 4; i++) {
        fd[i] = connect_admitted(port);
    }
    expect_refused(port);
    raw_expect(fd[0], "SET mc v\r\nGET mc\r\n", 18, "+OK\r\n$1\r\nv\r\n", 12);
    enum { REFUSED = 200 };
    for (int i = 0; i < REFUSED; i++) {
        expect_refused(port);
    }
    for (int i = 0; i < 4; i++) {
        raw_expect(fd[i], "GET mc\r\n", 8, "$1\r\nv\r\n", 7);
    }
    ck_assert_int_eq(
        harness_remote_stat(h->node[0].url, "kvdist_resp_rejected_total"),
        REFUSED + 1);

    /* The client closes. */
    close(fd[1]);
    fd[1] = connect_admitted(port);
    expect_refused(port);
    /* QUIT. */
    raw_expect(fd[2], "QUIT\r\n", 6, "+OK\r\n", 5);
    ck_assert(tcp_closed(fd[2]));
    close(fd[2]);
    fd[2] = connect_admitted(port);
    expect_refused(port);
    /* A protocol error. */
    tcp_send(fd[3], "*abc\r\n", 6);
    ck_assert(tcp_closed(fd[3]));
    close(fd[3]);
    fd[3] = connect_admitted(port);
    expect_refused(port);

    tcp_send(fd[0], "INFO clients\r\n", 14);
    char *body = read_bulk(fd[0]);
    ck_assert_msg(strstr(body, "\r\nconnected_clients:4\r\n") != NULL &&
                      strstr(body, "\r\nmaxclients:4\r\n") != NULL,
                  "INFO clients: %s", body);
    free(body);
    for (int i = 0; i < 4; i++) {
        close(fd[i]);
    }

    /* 204 refusals, and the log says so in a few lines, not 204. */
    int lines = log_count(h->node[0].log, "clients");
    ck_assert_msg(lines >= 1 && lines < 20, "%d log lines mention clients",
                  lines);
    ck_assert_int_ge(log_count(h->node[0].log, "max_clients 4 reached"), 1);
    harness_destroy(h);
}
END_TEST

/* The lowest descriptor number process pid has free: the next it gets
 * (RLIMIT_NOFILE caps numbers, not counts, and holes are filled first). */
static int lowest_free_fd_of(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    static bool used[4096];
    memset(used, 0, sizeof(used));
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "%s: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int n = atoi(e->d_name);
        if (e->d_name[0] != '.' && n >= 0 && n < 4096) {
            used[n] = true;
        }
    }
    closedir(d);
    int n = 0;
    while (n < 4095 && used[n]) {
        n++;
    }
    return n;
}

/* Accept failing with "out of files": the node backs off instead of
 * spinning, logs a few lines, and serves again once descriptors are back.
 * The daemon's own limit is lowered under it with prlimit(2). */
START_TEST(test_resp_accept_backoff)
{
    signal(SIGPIPE, SIG_IGN);
    harness_t *h = harness_create(1);
    int port = harness_free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    const char *extra[] = {"--resp", addr, NULL};
    harness_start(h, 0, extra);
    int pid = h->node[0].pid;
    const char *log = h->node[0].log;

    struct rlimit old;
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, NULL, &old), 0);
    struct rlimit low = old;
    low.rlim_cur = (rlim_t)lowest_free_fd_of(pid) + 2; /* 2 clients at most */
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &low, NULL), 0);

    enum { CLIENTS = 40 };
    int fd[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fd[i] = tcp_connect(port); /* the kernel's backlog takes them */
    }
    wait_log(log, "resp: accept: Out of files");
    /* A window in which a retry at once would have logged hundreds of
     * thousands of lines (the bug this guards against); with the back-off
     * it is a handful of retries and at most a line or two. */
    harness_sleep_ms(2500);
    int during = log_count(log, "accept");
    ck_assert_msg(during >= 1 && during <= 3,
                  "%d log lines about accept while out of files", during);

    for (int i = 0; i < CLIENTS; i++) {
        close(fd[i]);
    }
    ck_assert_int_eq(prlimit(pid, RLIMIT_NOFILE, &old, NULL), 0);
    int c = connect_admitted(port);
    close(c);
    wait_log(log, "resp: accept: working again");
    long long errors =
        harness_remote_stat(h->node[0].url, "kvdist_resp_accept_errors_total");
    /* 10, 20, 40, ... 1000 ms: about eight retries in those 2.5 s. */
    ck_assert_msg(errors >= 2 && errors <= 40, "%lld accept errors", errors);
    ck_assert_int_le(log_count(log, "accept"), 5);
    harness_destroy(h);
}
END_TEST

/* ---- authentication (auth_password) ---- */

#define NOAUTH "-NOAUTH Authentication required.\r\n"
#define WRONGPASS                                                              \
    "-WRONGPASS invalid username-password pair or user is disabled.\r\n"

/* raw_expect with C strings. */
static void ask(int fd, const char *req, const char *want)
{
    raw_expect(fd, req, strlen(req), want, strlen(want));
}

/* HELLO 2's answer (Redis 7's map as a RESP2 array) for connection id. */
static void hello_reply(char *out, size_t size)
{
    snprintf(out, size,
             "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"
             "$5\r\n7.0.0\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:");
}

/* Reads HELLO 2's answer on fd: checks it up to the id, then the rest. */
static void expect_hello(int fd)
{
    char head[256];
    hello_reply(head, sizeof(head));
    size_t n = strlen(head);
    char got[512];
    ck_assert_uint_eq(tcp_read(fd, got, n), n);
    ck_assert_msg(memcmp(got, head, n) == 0, "HELLO: '%.*s'", (int)n, got);
    size_t k = 0;
    do {
        ck_assert_uint_eq(tcp_read(fd, got + k, 1), 1);
    } while (got[k++] != '\n' && k < 30);
    ck_assert_msg(k > 2 && got[0] != '0', "HELLO id: '%.*s'", (int)k, got);
    static const char tail[] =
        "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster"
        "\r\n$7\r\nmodules\r\n*0\r\n";
    ck_assert_uint_eq(tcp_read(fd, got, sizeof(tail) - 1), sizeof(tail) - 1);
    ck_assert_msg(memcmp(got, tail, sizeof(tail) - 1) == 0, "HELLO tail");
}

/* A node with auth_password pw on port, raw sockets: without the password
 * every command but AUTH, HELLO and QUIT gets -NOAUTH, unknown ones too;
 * a wrong one gets -WRONGPASS and changes nothing; the right one (AUTH
 * pw, AUTH default pw, HELLO 2 AUTH default pw) serves that connection
 * only; before it, requests are held to Redis's small bounds. */
static void check_auth_raw(int port, const char *pw)
{
    char req[256];
    int fd = tcp_connect(port);
    ask(fd, "GET k\r\n", NOAUTH);
    ask(fd, "SET auth:k v\r\nPING\r\nNOSUCHCOMMAND\r\nGET\r\n",
        NOAUTH NOAUTH NOAUTH NOAUTH);
    ask(fd, "*3\r\n$3\r\nSET\r\n$6\r\nauth:k\r\n$1\r\nv\r\n", NOAUTH);
    ask(fd, "MULTI\r\nCLIENT SETNAME x\r\nINFO\r\n", NOAUTH NOAUTH NOAUTH);
    /* Wrong. */
    snprintf(req, sizeof(req), "AUTH %sx\r\n", pw);
    ask(fd, req, WRONGPASS);
    ask(fd, "AUTH \r\n",
        "-ERR wrong number of arguments for 'auth' command\r\n");
    snprintf(req, sizeof(req), "AUTH bob %s\r\n", pw);
    ask(fd, req, WRONGPASS);
    snprintf(req, sizeof(req), "AUTH Default %s\r\n", pw);
    ask(fd, req, WRONGPASS); /* Redis's user names are case-sensitive */
    snprintf(req, sizeof(req), "AUTH default %s extra\r\n", pw);
    ask(fd, req, "-ERR syntax error\r\n");
    /* A prefix of the password, and the password with a byte more. */
    snprintf(req, sizeof(req), "AUTH %.*s\r\n", (int)strlen(pw) - 1, pw);
    ask(fd, req, WRONGPASS);
    ask(fd, "GET auth:k\r\n", NOAUTH);
    ask(fd, "HELLO\r\n",
        "-NOAUTH HELLO must be called with the client already "
        "authenticated, otherwise the HELLO AUTH <user> <pass> option can be "
        "used to authenticate the client and select the RESP protocol "
        "version at the same time\r\n");
    ask(fd, "HELLO 2 SETNAME app\r\n",
        "-NOAUTH HELLO must be called with the client already "
        "authenticated, otherwise the HELLO AUTH <user> <pass> option can be "
        "used to authenticate the client and select the RESP protocol "
        "version at the same time\r\n");
    snprintf(req, sizeof(req), "HELLO 2 AUTH default %s-\r\n", pw);
    ask(fd, req, WRONGPASS);
    /* RESP3 is not spoken: NOPROTO, and not authenticated by it. */
    snprintf(req, sizeof(req), "HELLO 3 AUTH default %s\r\n", pw);
    ask(fd, req, "-NOPROTO unsupported protocol version\r\n");
    ask(fd, "GET auth:k\r\n", NOAUTH);
    ask(fd, "HELLO 2 AUTH default\r\n",
        "-ERR Syntax error in HELLO option 'AUTH'\r\n");
    /* Right. */
    snprintf(req, sizeof(req), "AUTH %s\r\nSET auth:k v1\r\nGET auth:k\r\n",
             pw);
    ask(fd, req, "+OK\r\n+OK\r\n$2\r\nv1\r\n");
    /* A wrong AUTH afterwards leaves the connection authenticated, as in
     * Redis. */
    ask(fd, "AUTH nope\r\nGET auth:k\r\n", WRONGPASS "$2\r\nv1\r\n");
    /* The state is per connection: a second one starts without. */
    int fd2 = tcp_connect(port);
    ask(fd2, "GET auth:k\r\n", NOAUTH);
    snprintf(req, sizeof(req), "AUTH default %s\r\nGET auth:k\r\n", pw);
    ask(fd2, req, "+OK\r\n$2\r\nv1\r\n");
    close(fd2);
    int fd3 = tcp_connect(port);
    ask(fd3, "DEL auth:k\r\n", NOAUTH);
    snprintf(req, sizeof(req), "HELLO 2 AUTH default %s SETNAME app-1\r\n", pw);
    tcp_send(fd3, req, strlen(req));
    expect_hello(fd3);
    ask(fd3, "CLIENT GETNAME\r\nHELLO\r\n", "$5\r\napp-1\r\n");
    expect_hello(fd3); /* HELLO once authenticated needs no AUTH */
    /* After the password, a large request is no longer refused. */
    size_t vlen = 20000;
    char *big = malloc(vlen + 64);
    int hl =
        snprintf(big, 64, "*3\r\n$3\r\nSET\r\n$7\r\nauth:bg\r\n$%zu\r\n", vlen);
    memset(big + hl, 'b', vlen);
    memcpy(big + hl + vlen, "\r\n", 2);
    raw_expect(fd3, big, (size_t)hl + vlen + 2, "+OK\r\n", 5);
    close(fd3);
    close(fd);

    /* Before it: at most 10 arguments and 16 KiB bulk strings. */
    fd = tcp_connect(port);
    tcp_send(fd, big, (size_t)hl); /* the 20000-byte bulk length */
    static const char bulk[] =
        "-ERR Protocol error: unauthenticated bulk length\r\n";
    char got[128] = "";
    ck_assert_uint_eq(tcp_read(fd, got, sizeof(bulk) - 1), sizeof(bulk) - 1);
    ck_assert_str_eq(got, bulk);
    ck_assert(tcp_closed(fd));
    close(fd);
    free(big);
    fd = tcp_connect(port);
    static const char args[] =
        "-ERR Protocol error: unauthenticated multibulk length\r\n";
    tcp_send(fd, "*11\r\n", 5);
    memset(got, 0, sizeof(got));
    ck_assert_uint_eq(tcp_read(fd, got, sizeof(args) - 1), sizeof(args) - 1);
    ck_assert_str_eq(got, args);
    ck_assert(tcp_closed(fd));
    close(fd);
    /* QUIT needs no password. */
    fd = tcp_connect(port);
    ask(fd, "QUIT\r\n", "+OK\r\n");
    ck_assert(tcp_closed(fd));
    close(fd);
}

/* redis-cli against a node with password pw: without it the command is
 * refused (the "writes anyway"), with a wrong -a too, after
 * redis-cli's own "AUTH failed"; with -a pw or REDISCLI_AUTH it is
 * served. */
static void check_auth_cli(int port, const char *pw)
{
    char p[16], out[4096];
    snprintf(p, sizeof(p), "%d", port);
    const char *none[] = {REDIS_CLI, "-h",       "127.0.0.1", "-p", p,
                          "SET",     "auth:cli", "x",         NULL};
    run_capture_all(none, NULL, 0, out, sizeof(out), true);
    ck_assert_msg(strstr(out, "NOAUTH Authentication required.") != NULL,
                  "redis-cli without -a: %s", out);
    char wrong[128];
    snprintf(wrong, sizeof(wrong), "%s-wrong", pw);
    const char *bad[] = {
        REDIS_CLI,           "-h",  "127.0.0.1", "-p", p,   "-a", wrong,
        "--no-auth-warning", "SET", "auth:cli",  "x",  NULL};
    run_capture_all(bad, NULL, 0, out, sizeof(out), true);
    ck_assert_msg(strstr(out, "AUTH failed: WRONGPASS") != NULL &&
                      strstr(out, "NOAUTH") != NULL,
                  "redis-cli -a wrong: %s", out);
    const char *good[] = {
        REDIS_CLI,           "-h",  "127.0.0.1", "-p", p, "-a", pw,
        "--no-auth-warning", "GET", "auth:cli",  NULL};
    int st = run_capture(good, NULL, 0, out, sizeof(out));
    ck_assert_int_eq(st, 0);
    ck_assert_msg(strcmp(out, "\n") == 0, "auth:cli was written: '%s'", out);
    const char *set[] = {
        REDIS_CLI,           "-h",  "127.0.0.1", "-p", p,   "-a", pw,
        "--no-auth-warning", "SET", "auth:cli",  "y",  NULL};
    ck_assert_int_eq(run_capture(set, NULL, 0, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "OK\n");
    ck_assert_int_eq(setenv("REDISCLI_AUTH", pw, 1), 0);
    cli_expect(port, "y", "GET", "auth:cli", NULL);
    unsetenv("REDISCLI_AUTH");
}

/* A node without a password: AUTH PASSWORD is Redis's configuration
 * error, AUTH default ANY and HELLO 2 succeed (Redis's "nopass" default
 * user), any other user name is refused. */
static void check_no_password(int port)
{
    int fd = tcp_connect(port);
    ask(fd, "AUTH x\r\n",
        "-ERR AUTH <password> called without any password configured for "
        "the default user. Are you sure your configuration is correct?\r\n");
    ask(fd, "AUTH default anything\r\n", "+OK\r\n");
    ask(fd, "AUTH bob anything\r\n", WRONGPASS);
    ask(fd, "HELLO 2 AUTH bob x\r\n", WRONGPASS);
    ask(fd, "HELLO 4\r\nHELLO -1\r\n",
        "-NOPROTO unsupported protocol version\r\n"
        "-NOPROTO unsupported protocol version\r\n");
    ask(fd, "HELLO two\r\n",
        "-ERR Protocol version is not an integer or out of range\r\n");
    ask(fd, "HELLO 2 FOO\r\n", "-ERR Syntax error in HELLO option 'FOO'\r\n");
    tcp_send(fd, "HELLO\r\n", 7);
    expect_hello(fd);
    tcp_send(fd, "HELLO 2 AUTH default x\r\n", 24);
    expect_hello(fd);
    close(fd);
}

/* The password's whole life on a node: given in a file (nowhere on the
 * command line), then on the command line (overwritten there once read);
 * RESP without, with wrong and with right credentials, through raw
 * sockets, redis-cli and redis-py. */
START_TEST(test_resp_auth)
{
    signal(SIGPIPE, SIG_IGN);
    harness_t *h = harness_create(1);
    h->n = 1;
    h->r = 1;
    h->w = 1;
    static const char pw[] = "correct-horse-9";
    char file[600];
    snprintf(file, sizeof(file), "%s/password", h->dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s\n", pw);
    fclose(f);
    ck_assert_int_eq(chmod(file, 0600), 0);
    int port = harness_free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    const char *extra[] = {"--resp", addr, "--auth-password-file", file, NULL};
    harness_start(h, 0, extra);
    check_auth_raw(port, pw);
    check_auth_cli(port, pw);
    check_redis_py(port, pw);
    /* The log has no password, and no warning for a 0600 file. */
    ck_assert_int_eq(log_count(h->node[0].log, pw), 0);
    ck_assert_int_eq(log_count(h->node[0].log, "open to group"), 0);
    harness_stop(h, 0);

    /* On the command line: the daemon overwrites it in argv once read. */
    static const char pw2[] = "battery-staple-4";
    const char *flag[] = {"--resp", addr, "--auth-password", pw2, NULL};
    harness_start(h, 0, flag);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", h->node[0].pid);
    /* NUL-separated words; search each. */
    FILE *c = fopen(path, "r");
    ck_assert_ptr_nonnull(c);
    char word[512];
    size_t k = 0;
    int ch;
    bool seen_flag = false, leaked = false;
    while ((ch = fgetc(c)) != EOF) {
        if (ch != '\0' && k + 1 < sizeof(word)) {
            word[k++] = (char)ch;
            continue;
        }
        word[k] = '\0';
        leaked |= strstr(word, "battery") != NULL;
        seen_flag |= strcmp(word, "--auth-password") == 0;
        k = 0;
    }
    fclose(c);
    ck_assert(seen_flag);
    ck_assert_msg(!leaked, "the password is in %s", path);
    int fd = tcp_connect(port);
    ask(fd, "GET auth:cli\r\n", NOAUTH);
    ask(fd, "AUTH correct-horse-9\r\n", WRONGPASS);
    ask(fd, "AUTH battery-staple-4\r\nGET auth:cli\r\n", "+OK\r\n$1\r\ny\r\n");
    close(fd);
    harness_destroy(h);
}
END_TEST

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
    check_multi_key_commands(resp[1], resp[2]);
    check_info_sections(resp[0]);
    check_redis_py(resp[2], NULL);
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
    check_multi_key_commands(resp[0], resp[0]);
    check_info_sections(resp[0]);
    check_no_password(resp[0]);

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

/* The parser alone (resp_parse_request, also the fuzz target's entry):
 * pipelined requests one at a time, a request cut anywhere is incomplete,
 * and the limits refuse with a reason. */
START_TEST(test_resp_parse)
{
    static const char in[] = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING  x\r\n*0\r\n";
    const uint8_t *p = (const uint8_t *)in;
    size_t len = sizeof(in) - 1;
    resp_args_t a = {NULL, 0, 0};
    size_t used = 0;
    const char *why = NULL;
    ck_assert_int_eq(resp_parse_request(p, len, 16, 256, true, &a, &used, &why),
                     1);
    ck_assert_uint_eq(used, 20);
    ck_assert_uint_eq(a.argc, 2);
    ck_assert(a.argv[0].len == 3 && memcmp(a.argv[0].p, "GET", 3) == 0);
    ck_assert(a.argv[1].len == 1 && a.argv[1].p[0] == 'k');
    for (size_t cut = 0; cut < used; cut++) {
        size_t u = 1;
        ck_assert_int_eq(
            resp_parse_request(p, cut, 16, 256, true, &a, &u, &why), 0);
        ck_assert_uint_eq(u, 0);
    }
    ck_assert_int_eq(
        resp_parse_request(p + 20, len - 20, 16, 256, true, &a, &used, &why),
        1);
    ck_assert_uint_eq(used, 9);
    ck_assert_uint_eq(a.argc, 2);
    ck_assert(a.argv[1].len == 1 && a.argv[1].p[0] == 'x');
    ck_assert_int_eq(
        resp_parse_request(p + 29, len - 29, 16, 256, true, &a, &used, &why),
        1);
    ck_assert_uint_eq(used, 4);
    ck_assert_uint_eq(a.argc, 0);
    /* A bulk string over max_bulk, and a request over max_request. */
    why = NULL;
    ck_assert_int_eq(resp_parse_request(p, len, 2, 256, true, &a, &used, &why),
                     -1);
    ck_assert_str_eq(why, "invalid bulk length");
    why = NULL;
    ck_assert_int_eq(resp_parse_request(p, len, 16, 12, true, &a, &used, &why),
                     -1);
    ck_assert_str_eq(why, "request too large");
    /* Before AUTH, Redis's smaller bounds: 10 arguments. */
    static const char eleven[] = "*11\r\n";
    why = NULL;
    ck_assert_int_eq(resp_parse_request((const uint8_t *)eleven,
                                        sizeof(eleven) - 1, 16, 256, false, &a,
                                        &used, &why),
                     -1);
    ck_assert_str_eq(why, "unauthenticated multibulk length");
    free(a.argv);
}
END_TEST

Suite *resp_suite(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("redis-cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_resp_single_node);
    tcase_add_test(tc, test_resp_cluster);
    tcase_add_test(tc, test_resp_auth);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_set_timeout(lim, 120);
    tcase_add_test(lim, test_resp_max_clients);
    tcase_add_test(lim, test_resp_accept_backoff);
    suite_add_tcase(s, lim);
    TCase *parse = tcase_create("parser");
    tcase_add_test(parse, test_resp_parse);
    suite_add_tcase(s, parse);
    return s;
}
