/*
 * check_haproxy.c - real HAProxy (Debian's haproxy) in front of a 3-node
 * cluster, configured by examples/haproxy/ (render.sh, mkcert.sh): PUT,
 * GET and DELETE over HTTPS with the generated certificate pinned, then a
 * node is killed and requests keep succeeding once HAProxy's health check
 * (GET /health) has marked it down. The nodes require a password
 * (auth_password): HAProxy passes the client's Authorization header on,
 * and its health check needs none.
 *
 * HAProxy runs in the foreground (-db) as a child of the test, on ports
 * picked at run time, and is stopped by PID (also by PR_SET_PDEATHSIG if
 * the test process dies).
 */
#include "check_kvdist.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t haproxy_pid;

static void haproxy_stop(void)
{
    if (haproxy_pid <= 0) {
        return;
    }
    kill(haproxy_pid, SIGTERM);
    int64_t deadline = harness_now_ms() + 5000;
    while (harness_now_ms() < deadline) {
        if (waitpid(haproxy_pid, NULL, WNOHANG) == haproxy_pid) {
            haproxy_pid = 0;
            return;
        }
        harness_sleep_ms(10);
    }
    kill(haproxy_pid, SIGKILL);
    waitpid(haproxy_pid, NULL, 0);
    haproxy_pid = 0;
}

static pid_t haproxy_start(const char *cfg, const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("haproxy", "haproxy", "-f", cfg, "-db", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* "show stat" on the admin socket: the status column of server `sv` of
 * the kvdist_nodes backend ("UP", "DOWN", ...), "" if not found. */
static void server_status(const char *sock, const char *sv, char *out,
                          size_t size)
{
    out[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return;
    }
    static char text[65536];
    size_t got = 0;
    ssize_t n = write(fd, "show stat\n", 10);
    while (n > 0 && got + 1 < sizeof(text) &&
           (n = read(fd, text + got, sizeof(text) - 1 - got)) > 0) {
        got += (size_t)n;
    }
    text[got] = '\0';
    close(fd);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "\nkvdist_nodes,%s,", sv);
    char *line = strstr(text, prefix);
    if (line == NULL) {
        return;
    }
    /* status is the 18th comma-separated field */
    char *p = line + 1;
    for (int field = 0; field < 17 && p != NULL; field++) {
        p = strchr(p, ',');
        p = p != NULL ? p + 1 : NULL;
    }
    if (p != NULL) {
        size_t len = strcspn(p, ",\n");
        len = len < size - 1 ? len : size - 1;
        memcpy(out, p, len);
        out[len] = '\0';
    }
}

static void wait_server(const char *sock, const char *sv, const char *want)
{
    char st[32] = "";
    int64_t deadline = harness_now_ms() + 15000;
    while (harness_now_ms() < deadline) {
        server_status(sock, sv, st, sizeof(st));
        if (strncmp(st, want, strlen(want)) == 0) {
            return;
        }
        harness_sleep_ms(50);
    }
    ck_abort_msg("haproxy: server %s is '%s', wanted %s", sv, st, want);
}

#define HAPROXY_PASSWORD "through-the-balancer"

/* One request through HAProxy with the nodes' password (auth false:
 * without it). */
static long https_as(const char *method, const char *base, const char *key,
                     const char *val, const char *ca, bool auth,
                     httpc_resp_t *out)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/data/%s", base, key);
    static const char *const hdrs[] = {
        "Authorization: Bearer " HAPROXY_PASSWORD, NULL};
    httpc_resp_t r = httpc_h(method, url, val, val != NULL ? strlen(val) : 0,
                             NULL, ca, auth ? hdrs : NULL);
    ck_assert_msg(r.curl_rc == 0, "%s %s: curl error %d (%s)", method, url,
                  r.curl_rc, curl_easy_strerror((CURLcode)r.curl_rc));
    long st = r.status;
    if (out != NULL) {
        *out = r;
    } else {
        httpc_free(&r);
    }
    return st;
}

static long https(const char *method, const char *base, const char *key,
                  const char *val, const char *ca, httpc_resp_t *out)
{
    return https_as(method, base, key, val, ca, true, out);
}

START_TEST(test_haproxy_failover)
{
    ck_assert_msg(system("command -v haproxy >/dev/null && "
                         "command -v openssl >/dev/null") == 0,
                  "haproxy and openssl are needed (make deps)");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *src = getenv("KVDIST_SRC");
    char scripts[512];
    snprintf(scripts, sizeof(scripts), "%s/examples/haproxy",
             src != NULL && *src ? src : ".");

    harness_t *h = harness_create(3);
    h->n = 3;
    h->r = 2;
    h->w = 2;
    int port[3];
    char pwfile[600];
    snprintf(pwfile, sizeof(pwfile), "%s/password", h->dir);
    FILE *f = fopen(pwfile, "w");
    ck_assert_ptr_nonnull(f);
    fputs(HAPROXY_PASSWORD "\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(pwfile, 0600), 0);
    const char *const extra[] = {"--auth-password-file", pwfile, NULL};
    for (int i = 0; i < 3; i++) {
        port[i] = harness_start_http(h, i, extra);
    }
    harness_wait_converged(h);

    /* Certificate, configuration, HAProxy. */
    char cmd[4096], cfg[600], log[600], sock[600], pem[600], ca[600];
    snprintf(cmd, sizeof(cmd), "sh %s/mkcert.sh %s/tls", scripts, h->dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(pem, sizeof(pem), "%s/tls/kvdist-local.pem", h->dir);
    snprintf(ca, sizeof(ca), "%s/tls/kvdist-local.crt", h->dir);
    snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", h->dir);
    snprintf(log, sizeof(log), "%s/haproxy.log", h->dir);
    snprintf(sock, sizeof(sock), "%s/haproxy.sock", h->dir);
    int front = harness_free_port();
    snprintf(cmd, sizeof(cmd),
             "sh %s/render.sh 127.0.0.1:%d %s %s 127.0.0.1:%d 127.0.0.1:%d "
             "127.0.0.1:%d > %s",
             scripts, front, sock, pem, port[0], port[1], port[2], cfg);
    ck_assert_int_eq(system(cmd), 0);
    atexit(haproxy_stop);
    haproxy_pid = haproxy_start(cfg, log);
    for (int i = 0; i < 3; i++) {
        char sv[16];
        snprintf(sv, sizeof(sv), "n%d", i + 1);
        wait_server(sock, sv, "UP");
    }
    char base[64];
    snprintf(base, sizeof(base), "https://127.0.0.1:%d", front);

    /* Through the balancer, over TLS, the certificate pinned; the nodes
     * answer 401 to a client without the password. */
    httpc_resp_t r;
    ck_assert_int_eq(https_as("PUT", base, "lb-key", "stolen", ca, false, NULL),
                     401);
    ck_assert_int_eq(https_as("GET", base, "lb-key", NULL, ca, false, NULL),
                     401);
    ck_assert_int_eq(https("PUT", base, "lb-key", "through haproxy", ca, NULL),
                     204);
    /* Three reads: round-robin sends one to each node. */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(https("GET", base, "lb-key", NULL, ca, &r), 200);
        ck_assert_str_eq(r.body, "through haproxy");
        ck_assert(r.ctx[0] != '\0');
        httpc_free(&r);
    }
    ck_assert_int_eq(https("DELETE", base, "lb-key", NULL, ca, NULL), 204);
    ck_assert_int_eq(https("GET", base, "lb-key", NULL, ca, NULL), 404);
    /* The certificate is checked: without the pin curl refuses it. */
    char url[128];
    snprintf(url, sizeof(url), "%s/health", base);
    r = httpc("GET", url, NULL, 0, NULL, NULL);
    ck_assert_int_ne(r.curl_rc, 0);
    httpc_free(&r);

    /* One node dies; once its health check fails, every request goes to
     * the other two and succeeds (W = R = 2 of 3). */
    harness_kill(h, 1);
    wait_server(sock, "n2", "DOWN");
    for (int i = 0; i < 12; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "after-%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        ck_assert_int_eq(https("PUT", base, key, val, ca, NULL), 204);
        ck_assert_int_eq(https("GET", base, key, NULL, ca, &r), 200);
        ck_assert_str_eq(r.body, val);
        httpc_free(&r);
    }
    ck_assert_int_eq(https("DELETE", base, "after-0", NULL, ca, NULL), 204);
    haproxy_stop();
    harness_destroy(h);
}
END_TEST

Suite *haproxy_suite(void)
{
    Suite *s = suite_create("haproxy");
    TCase *tc = tcase_create("multiprocess");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_haproxy_failover);
    suite_add_tcase(s, tc);
    return s;
}
