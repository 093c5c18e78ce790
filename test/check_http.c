/*
 * check_http.c - the HTTP API (kvdist-http(7)) of real kvdistd processes,
 * driven with libcurl and, for input curl will not send, raw sockets:
 * every route and status, binary keys and values, siblings answered as 300
 * and resolved with their context, bad input, concurrent clients. Also
 * the library's base64 and percent decoders (lib/http.c) on their own.
 */
#include "check_kvdist.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http.h"

/* ------------------------------------------------------------ client */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    httpc_resp_t *r = arg;
    size_t len = size * n;
    char *grown = realloc(r->body, r->len + len + 1);
    ck_assert_ptr_nonnull(grown);
    r->body = grown;
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static void copy_header(const char *line, size_t len, const char *name,
                        char *out, size_t size)
{
    size_t nlen = strlen(name);
    if (len <= nlen + 1 || strncasecmp(line, name, nlen) != 0 ||
        line[nlen] != ':') {
        return;
    }
    const char *v = line + nlen + 1;
    const char *end = line + len;
    while (v < end && *v == ' ') {
        v++;
    }
    while (end > v && (end[-1] == '\r' || end[-1] == '\n')) {
        end--;
    }
    size_t vlen = (size_t)(end - v) < size - 1 ? (size_t)(end - v) : size - 1;
    memcpy(out, v, vlen);
    out[vlen] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    httpc_resp_t *r = arg;
    size_t len = size * n;
    copy_header(p, len, "X-Kv-Context", r->ctx, sizeof(r->ctx));
    copy_header(p, len, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_header(p, len, "Connection", r->connection, sizeof(r->connection));
    copy_header(p, len, "WWW-Authenticate", r->www_auth, sizeof(r->www_auth));
    return len;
}

httpc_resp_t httpc(const char *method, const char *url, const void *body,
                   size_t len, const char *ctx, const char *cainfo)
{
    return httpc_h(method, url, body, len, ctx, cainfo, NULL);
}

httpc_resp_t httpc_h(const char *method, const char *url, const void *body,
                     size_t len, const char *ctx, const char *cainfo,
                     const char *const *headers)
{
    httpc_resp_t r;
    memset(&r, 0, sizeof(r));
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    char ctxh[1200];
    if (ctx != NULL) {
        snprintf(ctxh, sizeof(ctxh), "X-Kv-Context: %s", ctx);
        hdrs = curl_slist_append(hdrs, ctxh);
    }
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        hdrs = curl_slist_append(hdrs, headers[i]);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (cainfo != NULL) {
        /* The self-signed certificate is the only one trusted. */
        curl_easy_setopt(c, CURLOPT_CAINFO, cainfo);
    }
    CURLcode rc = curl_easy_perform(c);
    r.curl_rc = (int)rc;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return r;
}

void httpc_free(httpc_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* The "code" of a JSON error body ("" if none). */
static void json_code(const httpc_resp_t *r, char *out, size_t size)
{
    out[0] = '\0';
    json_t *j = r->body != NULL ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    const char *code = j != NULL ? json_string_value(json_object_get(j, "code"))
                                 : NULL;
    if (code != NULL) {
        snprintf(out, size, "%s", code);
    }
    json_decref(j);
}

/* Percent-encodes every byte outside the unreserved set. */
static char *pct(const void *p, size_t len)
{
    const uint8_t *b = p;
    char *out = malloc(len * 3 + 1);
    ck_assert_ptr_nonnull(out);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if ((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z') ||
            (b[i] >= '0' && b[i] <= '9') ||
            (b[i] != 0 && strchr("-._~", b[i]) != NULL)) {
            out[o++] = (char)b[i];
        } else {
            o += (size_t)sprintf(out + o, "%%%02X", b[i]);
        }
    }
    out[o] = '\0';
    return out;
}

static char *data_url(int port, const char *enc_key, const char *query)
{
    char *u = malloc(strlen(enc_key) + 128);
    ck_assert_ptr_nonnull(u);
    sprintf(u, "http://127.0.0.1:%d/v1/data/%s%s%s", port, enc_key,
            query ? "?" : "", query ? query : "");
    return u;
}

/* One request by method on key (raw bytes) at node port; answers the
 * status, fills *r when r != NULL (free it), else frees. */
static long req(int port, const char *method, const void *key, size_t klen,
                const char *query, const void *val, size_t vlen,
                const char *ctx, httpc_resp_t *out)
{
    char *k = pct(key, klen);
    char *u = data_url(port, k, query);
    httpc_resp_t r = httpc(method, u, val, vlen, ctx, NULL);
    free(k);
    free(u);
    ck_assert_msg(r.curl_rc == 0, "%s %s: curl error %d", method, u,
                  r.curl_rc);
    long status = r.status;
    if (out != NULL) {
        *out = r;
    } else {
        httpc_free(&r);
    }
    return status;
}

/* Polls url until it answers want (bounded). */
static void wait_status(const char *url, long want, int bound_ms)
{
    int64_t deadline = harness_now_ms() + bound_ms;
    long got = -1;
    while (harness_now_ms() < deadline) {
        httpc_resp_t r = httpc("GET", url, NULL, 0, NULL, NULL);
        got = r.curl_rc == 0 ? r.status : -1;
        httpc_free(&r);
        if (got == want) {
            return;
        }
        harness_sleep_ms(50);
    }
    ck_abort_msg("%s: wanted %ld, last got %ld", url, want, got);
}

/* ------------------------------------------------------- raw sockets */

/* Sends p; shut_wr half-closes the sending side. Reads until EOF or 3 s of
 * silence into out (NUL-terminated); returns 1 if the node closed the
 * connection, 0 if it kept it open. */
static int raw_http(int port, const void *p, size_t len, int shut_wr,
                    char *out, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, (const char *)p + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            break; /* the node may close while we still send */
        }
        sent += (size_t)n;
    }
    if (shut_wr) {
        shutdown(fd, SHUT_WR);
    }
    size_t got = 0;
    ssize_t n = 0;
    char sink[512];
    for (;;) {
        char *dst = got + 1 < size ? out + got : sink;
        size_t room = got + 1 < size ? size - 1 - got : sizeof(sink);
        n = read(fd, dst, room);
        if (n <= 0) {
            break;
        }
        if (dst != sink) {
            got += (size_t)n;
        }
    }
    out[got] = '\0';
    int closed = n == 0 || (n < 0 && errno == ECONNRESET);
    close(fd);
    return closed;
}

static int status_of_raw(const char *text)
{
    int status = 0;
    return sscanf(text, "HTTP/1.%*d %d", &status) == 1 ? status : 0;
}

/* A connection of our own, for tests that keep one open across requests
 * (curl's easy handles hide when they reconnect). 5 s timeouts. */
static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Sends one request on fd and reads one whole answer (head, then
 * Content-Length bytes) into out. Returns its status, 0 if the node
 * closed (or reset) the connection before a whole answer came. */
static int raw_ask(int fd, const char *text, size_t len, char *out,
                   size_t size)
{
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, text + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            break; /* the node may close while we still send */
        }
        sent += (size_t)n;
    }
    size_t got = 0;
    size_t want = 0; /* head + body, once the head is in */
    out[0] = '\0';
    while (want == 0 || got < want) {
        if (got + 1 >= size) {
            return 0;
        }
        ssize_t n = read(fd, out + got, size - 1 - got);
        if (n <= 0) {
            return 0;
        }
        got += (size_t)n;
        out[got] = '\0';
        const char *end = strstr(out, "\r\n\r\n");
        if (want == 0 && end != NULL) {
            const char *cl = strcasestr(out, "\r\nContent-Length:");
            size_t body = cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10)
                                                 : 0;
            want = (size_t)(end + 4 - out) + body;
        }
    }
    return status_of_raw(out);
}

/* Whether the node closes fd (EOF or reset) within 5 s, sending nothing. */
static int raw_closed_silently(int fd)
{
    char c;
    ssize_t n = read(fd, &c, 1);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* The body of a raw answer parsed as JSON; its "code" into out. */
static void raw_json_code(const char *answer, char *out, size_t size)
{
    out[0] = '\0';
    const char *body = strstr(answer, "\r\n\r\n");
    json_t *j = body != NULL ? json_loads(body + 4, 0, NULL) : NULL;
    const char *code =
        j != NULL ? json_string_value(json_object_get(j, "code")) : NULL;
    if (code != NULL) {
        snprintf(out, size, "%s", code);
    }
    json_decref(j);
}

/* ------------------------------------------------------------- units */

START_TEST(test_b64)
{
    uint64_t seed = 7;
    for (size_t n = 0; n < 40; n++) {
        uint8_t in[40];
        for (size_t i = 0; i < n; i++) {
            in[i] = (uint8_t)util_rand(&seed);
        }
        char enc[64];
        http_b64_encode(in, n, enc);
        ck_assert_uint_eq(strlen(enc), http_b64_len(n));
        uint8_t dec[40];
        size_t dlen = 99;
        ck_assert_int_eq(http_b64_decode(enc, strlen(enc), dec, sizeof(dec),
                                         &dlen),
                         0);
        ck_assert_uint_eq(dlen, n);
        ck_assert(n == 0 || memcmp(dec, in, n) == 0);
        /* One byte too little room is refused, not overrun. */
        if (n > 0) {
            ck_assert_int_eq(
                http_b64_decode(enc, strlen(enc), dec, n - 1, &dlen),
                KV_EINVAL);
        }
    }
    uint8_t out[16];
    size_t olen;
    const char *bad[] = {"A",    "AB",   "ABC",      "AB=C", "A===",
                         "AB!D", "=AAA", "AA==AAAA", "AB==", "ABC=",
                         "Zg=",  "Zh==", "Zm9=",     "Zm 9v"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = http_b64_decode(bad[i], strlen(bad[i]), out, sizeof(out),
                                 &olen);
        /* AB== and ABC= leave non-zero bits under the padding. */
        ck_assert_msg(rc == KV_EINVAL, "accepted '%s'", bad[i]);
    }
    ck_assert_int_eq(http_b64_decode("Zg==", 4, out, sizeof(out), &olen), 0);
    ck_assert_uint_eq(olen, 1);
    ck_assert_int_eq(out[0], 'f');
}
END_TEST

START_TEST(test_pct)
{
    uint8_t out[32];
    size_t n = 0;
    ck_assert_int_eq(http_pct_decode("a%00b%2F%ff", 11, out, &n), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "a\0b/\xff", 5);
    const char *bad[] = {"%", "%2", "%zz", "a/b", "%g0", "ab%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(http_pct_decode(bad[i], strlen(bad[i]), out, &n) ==
                          KV_EINVAL,
                      "accepted '%s'", bad[i]);
    }
}
END_TEST

/* The password of an Authorization value, per http_auth_password: the
 * password, or NULL when the header is refused. */
static void expect_auth(const char *value, const char *want)
{
    uint8_t out[64];
    size_t len = 99;
    int rc = http_auth_password(value, out, sizeof(out), &len);
    if (want == NULL) {
        ck_assert_msg(rc == KV_EINVAL, "'%s' accepted", value);
        return;
    }
    ck_assert_msg(rc == 0, "'%s' refused", value);
    ck_assert_msg(len == strlen(want) && memcmp(out, want, len) == 0,
                  "'%s': got '%.*s', want '%s'", value, (int)len, out, want);
}

START_TEST(test_auth_header)
{
    expect_auth("Bearer s3cret", "s3cret");
    expect_auth("bearer s3cret", "s3cret");
    expect_auth("BEARER   s3cret  ", "s3cret");
    expect_auth("Bearer a:b", "a:b");
    /* "u:p", ":p", "default:p:q" (the password has a colon). */
    expect_auth("Basic dTpw", "p");
    expect_auth("basic OnA=", "p");
    expect_auth("Basic ZGVmYXVsdDpwOnE=", "p:q");
    expect_auth("Basic dTo=", "");
    expect_auth("Bearer", NULL);
    expect_auth("Bearer ", NULL);
    expect_auth("Basic dXNlcg==", NULL); /* "user": no colon */
    expect_auth("Basic dTpw=", NULL);    /* not base64 */
    expect_auth("Basic", NULL);
    expect_auth("Token s3cret", NULL);
    expect_auth("Bearers3cret", NULL);
    expect_auth("", NULL);
    /* Larger than the buffer: refused, nothing written past it. */
    char big[200] = "Bearer ";
    memset(big + 7, 'x', 100);
    big[107] = '\0';
    expect_auth(big, NULL);
}
END_TEST

/* ------------------------------------------------------------ cluster */

static const char *const small_limits[] = {"--max-value-size", "1024",
                                           "--max-key-size", "64", NULL};

static harness_t *start_cluster(int nodes, int n, int *ports)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(nodes);
    h->n = n;
    h->r = n < 2 ? n : 2;
    h->w = n < 2 ? n : 2;
    for (int i = 0; i < nodes; i++) {
        ports[i] = harness_start_http(h, i, small_limits);
    }
    harness_wait_converged(h);
    for (int i = 0; i < nodes; i++) {
        char u[64];
        snprintf(u, sizeof(u), "http://127.0.0.1:%d/health", ports[i]);
        wait_status(u, 200, 15000);
    }
    return h;
}

START_TEST(test_routes)
{
    int port[3];
    harness_t *h = start_cluster(3, 3, port);
    char code[32];
    httpc_resp_t r;

    /* Binary key (NUL, '/', '%', '?', 0xff) and binary value. */
    const uint8_t key[] = {0, 1, '/', '%', '?', ' ', 0xff, 'k'};
    uint8_t val[300];
    for (size_t i = 0; i < sizeof(val); i++) {
        val[i] = (uint8_t)(i * 7);
    }
    ck_assert_int_eq(req(port[0], "GET", key, sizeof(key), NULL, NULL, 0,
                         NULL, &r),
                     404);
    json_code(&r, code, sizeof(code));
    ck_assert_str_eq(code, "KV_ENOTFOUND");
    ck_assert_str_eq(r.ctype, "application/json");
    ck_assert(r.ctx[0] != '\0'); /* even absent keys have a context */
    httpc_free(&r);
    ck_assert_int_eq(req(port[0], "PUT", key, sizeof(key), NULL, val,
                         sizeof(val), NULL, NULL),
                     204);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(req(port[i], "GET", key, sizeof(key), "r=3", NULL,
                             0, NULL, &r),
                         200);
        ck_assert_uint_eq(r.len, sizeof(val));
        ck_assert_mem_eq(r.body, val, sizeof(val));
        ck_assert_str_eq(r.ctype, "application/octet-stream");
        ck_assert(r.ctx[0] != '\0');
        httpc_free(&r);
    }
    /* HEAD is a GET without the body. */
    {
        char *k = pct(key, sizeof(key));
        char *u = data_url(port[1], k, NULL);
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, u);
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
        long st = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        ck_assert_int_eq(st, 200);
        curl_easy_cleanup(c);
        free(u);
        free(k);
    }
    /* An empty value is a value. */
    ck_assert_int_eq(req(port[1], "PUT", "e", 1, "w=3", "", 0, NULL, NULL),
                     204);
    ck_assert_int_eq(req(port[2], "GET", "e", 1, NULL, NULL, 0, NULL, &r),
                     200);
    ck_assert_uint_eq(r.len, 0);
    httpc_free(&r);

    /* DELETE, idempotent; then 404. */
    ck_assert_int_eq(req(port[1], "DELETE", key, sizeof(key), "w=3", NULL, 0,
                         NULL, NULL),
                     204);
    ck_assert_int_eq(req(port[2], "GET", key, sizeof(key), NULL, NULL, 0,
                         NULL, NULL),
                     404);
    ck_assert_int_eq(req(port[2], "DELETE", key, sizeof(key), NULL, NULL, 0,
                         NULL, NULL),
                     204);
    ck_assert_int_eq(req(port[0], "DELETE", "never", 5, NULL, NULL, 0, NULL,
                         NULL),
                     204);

    /* Limits: 413 value, 414 key; the node keeps serving. */
    uint8_t big[1025];
    memset(big, 'x', sizeof(big));
    ck_assert_int_eq(req(port[0], "PUT", "big", 3, NULL, big, sizeof(big),
                         NULL, &r),
                     413);
    json_code(&r, code, sizeof(code));
    ck_assert_str_eq(code, "KV_ETOOBIG");
    httpc_free(&r);
    ck_assert_int_eq(req(port[0], "PUT", "big", 3, NULL, big, 1024, NULL,
                         NULL),
                     204);
    char longkey[65];
    memset(longkey, 'k', sizeof(longkey));
    ck_assert_int_eq(req(port[0], "GET", longkey, sizeof(longkey), NULL,
                         NULL, 0, NULL, &r),
                     414);
    json_code(&r, code, sizeof(code));
    ck_assert_str_eq(code, "KV_EKEYTOOBIG");
    httpc_free(&r);
    ck_assert_int_eq(req(port[0], "GET", longkey, 64, NULL, NULL, 0, NULL,
                         NULL),
                     404);

    /* 400: parameters, context, percent-encoding, empty key. */
    const char *badq[] = {"r=0", "r=4",    "w=x",          "timeout_ms=0",
                          "r",   "bogus=1", "r=1&r=2",     "timeout_ms=-5",
                          "w=",  "r=1&",   "w=99999999999"};
    for (size_t i = 0; i < sizeof(badq) / sizeof(badq[0]); i++) {
        long st = req(port[0], "GET", "k", 1, badq[i], NULL, 0, NULL, &r);
        json_code(&r, code, sizeof(code));
        ck_assert_msg(st == 400 && strcmp(code, "KV_EINVAL") == 0,
                      "?%s: %ld %s", badq[i], st, code);
        httpc_free(&r);
    }
    ck_assert_int_eq(req(port[0], "GET", "k", 1,
                         "r=1&w=1&timeout_ms=2000", NULL, 0, NULL, NULL),
                     404);
    const char *badctx[] = {"!!!!", "AAAA", "S0MB", "S0MBAJVGvXZ="};
    for (size_t i = 0; i < sizeof(badctx) / sizeof(badctx[0]); i++) {
        ck_assert_int_eq(req(port[0], "PUT", "k", 1, NULL, "v", 1, badctx[i],
                             NULL),
                         400);
    }
    const char *badpath[] = {"/v1/data/a%zz", "/v1/data/a%2", "/v1/data/",
                             "/v1/data/a/b"};
    for (size_t i = 0; i < sizeof(badpath) / sizeof(badpath[0]); i++) {
        char u[128];
        snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", port[1], badpath[i]);
        r = httpc("GET", u, NULL, 0, NULL, NULL);
        json_code(&r, code, sizeof(code));
        ck_assert_msg(r.status == 400 && strcmp(code, "KV_EINVAL") == 0,
                      "%s: %ld", badpath[i], r.status);
        httpc_free(&r);
    }
    /* Unknown paths: 404, unknown methods: 405 with Allow; JSON bodies,
     * as a connection's first request and as a later one. */
    long long bad4_before =
        harness_remote_stat(h->node[0].url, "kvdist_http_4xx_total");
    long long bad5_before =
        harness_remote_stat(h->node[0].url, "kvdist_http_5xx_total");
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/v2/nothing", port[0]);
    r = httpc("GET", u, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.ctype, "application/json");
    json_code(&r, code, sizeof(code));
    ck_assert_str_eq(code, "KV_ENOTFOUND");
    httpc_free(&r);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/v1/data/k", port[0]);
    r = httpc("POST", u, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.ctype, "application/json");
    json_code(&r, code, sizeof(code));
    ck_assert_str_eq(code, "KV_ENOTSUP");
    httpc_free(&r);
    {
        static const struct {
            const char *req;
            int status;
            const char *code;
            const char *header; /* must be in the answer's head */
        } cases[] = {
            {"POST /v1/data/k HTTP/1.1\r\nHost: x\r\n\r\n", 405,
             "KV_ENOTSUP", "\r\nAllow: GET, HEAD, PUT, DELETE\r\n"},
            {"PATCH /v1/data HTTP/1.1\r\nHost: x\r\n\r\n", 405,
             "KV_ENOTSUP", "\r\nAllow: GET, HEAD, PUT, DELETE\r\n"},
            {"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 405,
             "KV_ENOTSUP", "\r\nAllow: GET, HEAD\r\n"},
            {"PUT /v1/cluster HTTP/1.1\r\nHost: x\r\n"
             "Content-Length: 3\r\n\r\nabc",
             405, "KV_ENOTSUP", "\r\nAllow: GET, HEAD\r\n"},
            {"GET /v1/other HTTP/1.1\r\nHost: x\r\n\r\n", 404,
             "KV_ENOTFOUND", "\r\nContent-Type: application/json\r\n"},
            {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404,
             "KV_ENOTFOUND", "\r\nContent-Type: application/json\r\n"},
            {"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 404, "KV_ENOTFOUND",
             "\r\nContent-Type: application/json\r\n"},
        };
        int fd = raw_connect(port[0]);
        /* Opened with a good request, so that each case below is a later
         * request on a kept-alive connection (served by http.c's own
         * loop, not by NNG's server). */
        const char hello[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        char ans[4096];
        ck_assert_int_eq(raw_ask(fd, hello, strlen(hello), ans, sizeof(ans)),
                         200);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            for (int first = 0; first < 2; first++) {
                int c = first ? raw_connect(port[0]) : fd;
                int st = raw_ask(c, cases[i].req, strlen(cases[i].req), ans,
                                 sizeof(ans));
                raw_json_code(ans, code, sizeof(code));
                ck_assert_msg(st == cases[i].status &&
                                  strcmp(code, cases[i].code) == 0 &&
                                  strstr(ans, cases[i].header) != NULL,
                              "%s (first %d): %d %s\n%s", cases[i].req, first,
                              st, code, ans);
                if (first) {
                    close(c);
                }
            }
        }
        /* The connection still serves. */
        ck_assert_int_eq(raw_ask(fd, hello, strlen(hello), ans, sizeof(ans)),
                         200);
        /* A later request without Host or of another version: JSON
         * 400 / 505, and 505 closes. */
        const char nohost[] = "GET /health HTTP/1.1\r\n\r\n";
        ck_assert_int_eq(raw_ask(fd, nohost, strlen(nohost), ans, sizeof(ans)),
                         400);
        raw_json_code(ans, code, sizeof(code));
        ck_assert_str_eq(code, "KV_EINVAL");
        ck_assert_ptr_nonnull(
            strstr(ans, "\r\nContent-Type: application/json\r\n"));
        const char v2[] = "GET /health HTTP/2.0\r\nHost: x\r\n\r\n";
        ck_assert_int_eq(raw_ask(fd, v2, strlen(v2), ans, sizeof(ans)), 505);
        raw_json_code(ans, code, sizeof(code));
        ck_assert_str_eq(code, "KV_ENOTSUP");
        ck_assert(raw_closed_silently(fd));
        close(fd);
        /* The same as a first request: NNG's server answers these before
         * the node sees them; the body is still the JSON error. */
        fd = raw_connect(port[0]);
        ck_assert_int_eq(raw_ask(fd, nohost, strlen(nohost), ans, sizeof(ans)),
                         400);
        raw_json_code(ans, code, sizeof(code));
        ck_assert_str_eq(code, "KV_EINVAL");
        close(fd);
        fd = raw_connect(port[0]);
        ck_assert_int_eq(raw_ask(fd, v2, strlen(v2), ans, sizeof(ans)), 505);
        raw_json_code(ans, code, sizeof(code));
        ck_assert_str_eq(code, "KV_ENOTSUP");
        close(fd);
        /* HEAD: the GET's head, Content-Length included, no body. */
        fd = raw_connect(port[0]);
        const char head[] = "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n";
        size_t sent = (size_t)send(fd, head, strlen(head), MSG_NOSIGNAL);
        ck_assert_uint_eq(sent, strlen(head));
        ssize_t n = read(fd, ans, sizeof(ans) - 1);
        ck_assert_int_gt(n, 0);
        ans[n] = '\0';
        ck_assert_int_eq(status_of_raw(ans), 200);
        const char *cl = strcasestr(ans, "\r\nContent-Length: ");
        ck_assert_ptr_nonnull(cl);
        ck_assert_int_gt(atoi(cl + 18), 10);
        ck_assert_str_eq(strstr(ans, "\r\n\r\n"), "\r\n\r\n");
        /* ... and the connection goes on. */
        ck_assert_int_eq(raw_ask(fd, hello, strlen(hello), ans, sizeof(ans)),
                         200);
        close(fd);
    }
    /* Counted as answers: 2 by curl, 14 cases, the later 400 (the 505 is
     * a 5xx); NNG's own answers to a first request are not seen. */
    ck_assert_int_eq(harness_remote_stat(h->node[0].url,
                                         "kvdist_http_4xx_total") -
                         bad4_before,
                     2 + 14 + 1);
    ck_assert_int_eq(harness_remote_stat(h->node[0].url,
                                         "kvdist_http_5xx_total") -
                         bad5_before,
                     1);

    /* /health and /v1/cluster. */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/health", port[2]);
    r = httpc("GET", u, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "up")), 3);
    json_decref(j);
    httpc_free(&r);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/v1/cluster", port[1]);
    r = httpc("GET", u, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    j = json_loadb(r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *members = json_object_get(j, "members");
    ck_assert_uint_eq(json_array_size(members), 3);
    double sum = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *m = json_array_get(members, i);
        double share = json_real_value(json_object_get(m, "ring_share"));
        ck_assert(share > 0.1 && share < 0.6);
        sum += share;
        ck_assert_str_eq(json_string_value(json_object_get(m, "status")),
                         "up");
        ck_assert_str_eq(json_string_value(json_object_get(m, "id")),
                         h->node[i].id);
        ck_assert_int_eq(json_is_true(json_object_get(m, "self")), i == 1);
    }
    ck_assert(fabs(sum - 1.0) < 1e-9);
    json_decref(j);
    httpc_free(&r);

    /* Counters by status class (answered by this node). */
    long long ok2 = harness_remote_stat(h->node[0].url, "kvdist_http_2xx_total");
    long long bad4 =
        harness_remote_stat(h->node[0].url, "kvdist_http_4xx_total");
    ck_assert_int_ge(ok2, 3);
    ck_assert_int_ge(bad4, 20);

    /* No quorum possible: 503 from /health and from a write. */
    harness_kill(h, 1);
    harness_kill(h, 2);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/health", port[0]);
    wait_status(u, 503, 15000);
    ck_assert_int_eq(req(port[0], "PUT", "q", 1, "timeout_ms=1000", "v", 1,
                         NULL, &r),
                     503);
    json_code(&r, code, sizeof(code));
    ck_assert_msg(strcmp(code, "KV_EQUORUM") == 0 ||
                      strcmp(code, "KV_EUNAVAIL") == 0,
                  "code %s", code);
    httpc_free(&r);
    ck_assert_int_ge(
        harness_remote_stat(h->node[0].url, "kvdist_http_5xx_total"), 1);
    harness_destroy(h);
}
END_TEST

/* Finds the parts of a multipart/mixed body; returns how many, values in
 * vals (pointers into body). */
static size_t parse_parts(const httpc_resp_t *r, const char **vals,
                          size_t *lens, size_t max)
{
    const char *b = strstr(r->ctype, "boundary=");
    ck_assert_ptr_nonnull(b);
    char delim[96];
    snprintf(delim, sizeof(delim), "--%s", b + 9);
    size_t dl = strlen(delim);
    const char *p = r->body;
    const char *end = r->body + r->len;
    size_t n = 0;
    while (p != NULL && p + dl <= end && memcmp(p, delim, dl) == 0) {
        if (p + dl + 2 <= end && memcmp(p + dl, "--", 2) == 0) {
            return n; /* closing delimiter */
        }
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        ck_assert_ptr_nonnull(hdr_end);
        const char *cl = memmem(p, (size_t)(hdr_end - p), "Content-Length: ",
                                16);
        ck_assert_ptr_nonnull(cl);
        size_t len = strtoul(cl + 16, NULL, 10);
        const char *v = hdr_end + 4;
        ck_assert(v + len + 2 <= end);
        ck_assert_uint_lt(n, max);
        vals[n] = v;
        lens[n] = len;
        n++;
        p = v + len + 2; /* CRLF before the next delimiter */
    }
    ck_abort_msg("multipart body without its closing delimiter");
    return 0;
}

START_TEST(test_siblings)
{
    int port[3];
    harness_t *h = start_cluster(3, 3, port);
    httpc_resp_t r;
    /* The context of a read of an absent key, used twice: two writes
     * that each saw nothing become two siblings. */
    ck_assert_int_eq(req(port[0], "GET", "s", 1, NULL, NULL, 0, NULL, &r),
                     404);
    char ctx0[1024];
    snprintf(ctx0, sizeof(ctx0), "%s", r.ctx);
    httpc_free(&r);
    const char v1[] = "one\r\n--kvdist-siblings-";
    const char v2[] = "two\0two";
    ck_assert_int_eq(req(port[0], "PUT", "s", 1, "w=3", v1, sizeof(v1) - 1,
                         ctx0, NULL),
                     204);
    ck_assert_int_eq(req(port[1], "PUT", "s", 1, "w=3", v2, sizeof(v2) - 1,
                         ctx0, NULL),
                     204);
    ck_assert_int_eq(req(port[2], "GET", "s", 1, "r=3", NULL, 0, NULL, &r),
                     300);
    ck_assert(strncmp(r.ctype, "multipart/mixed; boundary=", 26) == 0);
    const char *vals[4];
    size_t lens[4];
    size_t n = parse_parts(&r, vals, lens, 4);
    ck_assert_uint_eq(n, 2);
    int seen1 = 0, seen2 = 0;
    for (size_t i = 0; i < n; i++) {
        seen1 |= lens[i] == sizeof(v1) - 1 && memcmp(vals[i], v1, lens[i]) == 0;
        seen2 |= lens[i] == sizeof(v2) - 1 && memcmp(vals[i], v2, lens[i]) == 0;
    }
    ck_assert(seen1 && seen2);
    char ctx[1024];
    snprintf(ctx, sizeof(ctx), "%s", r.ctx);
    ck_assert(ctx[0] != '\0');
    httpc_free(&r);
    /* Resolve: a write carrying the 300's context replaces both. */
    ck_assert_int_eq(req(port[1], "PUT", "s", 1, "w=3", "merged", 6, ctx,
                         NULL),
                     204);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(req(port[i], "GET", "s", 1, "r=3", NULL, 0, NULL, &r),
                         200);
        ck_assert_uint_eq(r.len, 6);
        ck_assert_mem_eq(r.body, "merged", 6);
        httpc_free(&r);
    }
    /* DELETE with a context, then a sibling delete leaves a 404. */
    ck_assert_int_eq(req(port[0], "GET", "s", 1, NULL, NULL, 0, NULL, &r),
                     200);
    snprintf(ctx, sizeof(ctx), "%s", r.ctx);
    httpc_free(&r);
    ck_assert_int_eq(req(port[0], "DELETE", "s", 1, "w=3", NULL, 0, ctx, NULL),
                     204);
    ck_assert_int_eq(req(port[2], "GET", "s", 1, "r=3", NULL, 0, NULL, NULL),
                     404);
    harness_destroy(h);
}
END_TEST

START_TEST(test_bad_input)
{
    int port[1];
    harness_t *h = start_cluster(1, 1, port);
    char out[4096];
    char health[64];
    snprintf(health, sizeof(health), "http://127.0.0.1:%d/health", port[0]);
    int p = port[0];

    /* A PUT without Content-Length: 411, connection kept. */
    const char nolen[] = "PUT /v1/data/k HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_http(p, nolen, strlen(nolen), 1, out, sizeof(out));
    ck_assert_int_eq(status_of_raw(out), 411);
    /* Chunked: 411 and the connection closes (its bytes are no request). */
    const char chunked[] = "PUT /v1/data/k HTTP/1.1\r\nHost: x\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n0\r\n\r\n";
    ck_assert_int_eq(raw_http(p, chunked, strlen(chunked), 0, out,
                              sizeof(out)),
                     1);
    ck_assert_int_eq(status_of_raw(out), 411);
    ck_assert_ptr_nonnull(strstr(out, "Connection: close"));
    /* A huge Content-Length: 413 at once, nothing buffered, closed. */
    const char huge[] = "PUT /v1/data/k HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 999999999999\r\n\r\nabc";
    ck_assert_int_eq(raw_http(p, huge, strlen(huge), 0, out, sizeof(out)), 1);
    ck_assert_int_eq(status_of_raw(out), 413);
    /* A malformed Content-Length: 400. */
    const char badlen[] = "PUT /v1/data/k HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 12abc\r\n\r\n";
    raw_http(p, badlen, strlen(badlen), 1, out, sizeof(out));
    ck_assert_int_eq(status_of_raw(out), 400);
    /* Not HTTP at all. */
    const char junk[] = "\x16\x03\x01 definitely not http\r\n\r\n";
    ck_assert_int_eq(raw_http(p, junk, strlen(junk), 0, out, sizeof(out)), 1);
    /* An over-long request line and over-long headers: NNG closes the
     * connection without an answer (kvdist-http(7)), never a hang. */
    size_t biglen = 200000;
    char *bigreq = malloc(biglen + 64);
    ck_assert_ptr_nonnull(bigreq);
    strcpy(bigreq, "GET /v1/data/");
    size_t at = strlen(bigreq);
    memset(bigreq + at, 'a', biglen);
    strcpy(bigreq + at + biglen, " HTTP/1.1\r\nHost: x\r\n\r\n");
    int closed = raw_http(p, bigreq, strlen(bigreq), 0, out, sizeof(out));
    ck_assert_msg(closed && out[0] == '\0', "long line: %s", out);
    strcpy(bigreq, "GET /health HTTP/1.1\r\nHost: x\r\n");
    at = strlen(bigreq);
    for (size_t i = 0; at + 40 < biglen; i++) {
        at += (size_t)sprintf(bigreq + at, "X-Filler-%zu: %s\r\n", i,
                              "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    }
    strcpy(bigreq + at, "\r\n");
    closed = raw_http(p, bigreq, strlen(bigreq), 0, out, sizeof(out));
    ck_assert_msg(closed && out[0] == '\0', "long headers: %s", out);
    free(bigreq);
    /* Half-closed after a whole request: the answer still comes, then the
     * node closes. */
    const char get[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(raw_http(p, get, strlen(get), 1, out, sizeof(out)), 1);
    ck_assert_int_eq(status_of_raw(out), 200);
    /* Half-closed in the middle of a request or of a body: closed. */
    ck_assert_int_eq(raw_http(p, get, 10, 1, out, sizeof(out)), 1);
    const char part[] = "PUT /v1/data/k HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 100\r\n\r\nonly-some";
    ck_assert_int_eq(raw_http(p, part, strlen(part), 1, out, sizeof(out)), 1);
    ck_assert_int_eq(status_of_raw(out), 0);

    /* Slow clients hold a connection each, not the node: with several
     * stalled mid-request (and one mid-body), requests still succeed. */
    int slow[4];
    for (int i = 0; i < 4; i++) {
        slow[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)p);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(slow[i], (struct sockaddr *)&sa, sizeof(sa)),
                         0);
        const char *s = i == 0 ? part : "GET /v1/da";
        ck_assert_int_gt(send(slow[i], s, strlen(s), MSG_NOSIGNAL), 0);
    }
    ck_assert_int_eq(req(p, "PUT", "fine", 4, NULL, "yes", 3, NULL, NULL),
                     204);
    httpc_resp_t r;
    ck_assert_int_eq(req(p, "GET", "fine", 4, NULL, NULL, 0, NULL, &r), 200);
    ck_assert_mem_eq(r.body, "yes", 3);
    httpc_free(&r);
    /* The stalled body read has a deadline (timeout_ms): its connection
     * is closed by the node, not held forever. */
    struct timeval tv = {15, 0};
    setsockopt(slow[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    ssize_t got = read(slow[0], &c, 1);
    ck_assert_msg(got == 0 || (got < 0 && errno == ECONNRESET),
                  "stalled body not closed (read %zd, errno %d)", got, errno);
    for (int i = 0; i < 4; i++) {
        close(slow[i]);
    }
    wait_status(health, 200, 5000);
    harness_destroy(h);
}
END_TEST

typedef struct worker {
    int port;
    int id;
    int ok;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 25; i++) {
        char key[32];
        char val[64];
        snprintf(key, sizeof(key), "w%d-%d", w->id, i);
        snprintf(val, sizeof(val), "value %d of worker %d", i, w->id);
        /* Not ck_assert: Check's assertions are not for other threads. */
        httpc_resp_t r;
        char *k = pct(key, strlen(key));
        char *u = data_url(w->port, k, NULL);
        r = httpc("PUT", u, val, strlen(val), NULL, NULL);
        int put_ok = r.curl_rc == 0 && r.status == 204;
        httpc_free(&r);
        r = httpc("GET", u, NULL, 0, NULL, NULL);
        int get_ok = r.curl_rc == 0 && r.status == 200 &&
                     r.len == strlen(val) && memcmp(r.body, val, r.len) == 0;
        httpc_free(&r);
        free(u);
        free(k);
        w->ok += put_ok && get_ok;
    }
    return NULL;
}

START_TEST(test_concurrent)
{
    int port[3];
    harness_t *h = start_cluster(3, 3, port);
    long long before = 0;
    for (int i = 0; i < 3; i++) {
        before += harness_remote_stat(h->node[i].url, "kvdist_http_2xx_total");
    }
    enum { NW = 6 };
    pthread_t t[NW];
    worker_t w[NW];
    for (int i = 0; i < NW; i++) {
        w[i] = (worker_t){port[i % 3], i, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < NW; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
    }
    ck_assert_int_eq(ok, NW * 25);
    long long after = 0;
    for (int i = 0; i < 3; i++) {
        after += harness_remote_stat(h->node[i].url, "kvdist_http_2xx_total");
    }
    ck_assert_int_ge(after - before, NW * 25 * 2);
    harness_destroy(h);
}
END_TEST

/* A forwarded write whose only replica is stopped: 504 within the
 * request's timeout_ms. */
START_TEST(test_timeout)
{
    int port[3];
    harness_t *h = start_cluster(3, 1, port);
    ck_assert_int_eq(kill(h->node[2].pid, SIGSTOP), 0);
    int timeouts = 0;
    for (int i = 0; i < 40 && timeouts == 0; i++) {
        char key[16];
        snprintf(key, sizeof(key), "t%d", i);
        httpc_resp_t r;
        int64_t t0 = harness_now_ms();
        long st = req(port[0], "PUT", key, strlen(key), "timeout_ms=300", "v",
                      1, NULL, &r);
        int64_t took = harness_now_ms() - t0;
        char code[32];
        json_code(&r, code, sizeof(code));
        httpc_free(&r);
        ck_assert_msg(st == 204 || st == 504, "status %ld", st);
        if (st == 504) {
            ck_assert_str_eq(code, "KV_ETIMEDOUT");
            ck_assert_int_lt(took, 5000);
            timeouts++;
        }
    }
    kill(h->node[2].pid, SIGCONT);
    ck_assert_int_eq(timeouts, 1);
    harness_destroy(h);
}
END_TEST

/* A node whose seed is not up yet is "starting" (503) until it joins. */
START_TEST(test_health_starting)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(2);
    int p2 = harness_start_http(h, 1, NULL); /* joins n1, not running */
    char u[96];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/health", p2);
    httpc_resp_t r = httpc("GET", u, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.curl_rc, 0);
    ck_assert_int_eq(r.status, 503);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")),
                     "starting");
    ck_assert_ptr_nonnull(json_object_get(j, "reason"));
    json_decref(j);
    httpc_free(&r);
    harness_start_http(h, 0, NULL);
    wait_status(u, 200, 15000);
    harness_destroy(h);
}
END_TEST

/* A request of exactly `total` bytes of head: method, /v1/data/ and a key
 * of 'k's as long as it takes, Host, the extra header lines, blank line;
 * then body. Returns malloc'd text, its length in *len. */
static char *head_of(const char *method, size_t total, const char *extra,
                     const char *body, size_t *len)
{
    size_t fixed = strlen(method) + strlen(" /v1/data/") +
                   strlen(" HTTP/1.1\r\nHost: x\r\n") + strlen(extra) + 2;
    ck_assert_uint_gt(total, fixed);
    size_t klen = total - fixed;
    char *t = malloc(total + strlen(body) + 1);
    ck_assert_ptr_nonnull(t);
    int n = sprintf(t, "%s /v1/data/", method);
    memset(t + n, 'k', klen);
    sprintf(t + n + klen, " HTTP/1.1\r\nHost: x\r\n%s\r\n%s", extra, body);
    *len = strlen(t);
    ck_assert_uint_eq(*len, total + strlen(body));
    return t;
}

/* NNG's server reads a request head (request line, headers, blank line)
 * into one 8192-byte buffer: a head of 8192 bytes is served, one of 8193
 * gets the connection closed with nothing sent (kvdist-http(7)), as a
 * connection's first request and as a later one. */
static void request_head_limit(int port)
{
    char ans[16384];
    char code[32];
    size_t len = 0;
    /* The longest PUT head: its key (8136 bytes) is stored... */
    char *put = head_of("PUT", 8192, "Content-Length: 1\r\n", "v", &len);
    int fd = raw_connect(port);
    ck_assert_int_eq(raw_ask(fd, put, len, ans, sizeof(ans)), 204);
    free(put);
    /* ... and read back on the same connection (a shorter GET head). */
    char *get = head_of("GET", 8192 - 19, "", "", &len);
    ck_assert_int_eq(raw_ask(fd, get, len, ans, sizeof(ans)), 200);
    ck_assert_str_eq(strstr(ans, "\r\n\r\n"), "\r\n\r\nv");
    free(get);
    /* A GET head of exactly 8192 bytes is answered (an absent key)... */
    get = head_of("GET", 8192, "", "", &len);
    ck_assert_int_eq(raw_ask(fd, get, len, ans, sizeof(ans)), 404);
    raw_json_code(ans, code, sizeof(code));
    ck_assert_str_eq(code, "KV_ENOTFOUND");
    free(get);
    /* ... one byte more closes a kept-alive connection, no answer... */
    get = head_of("GET", 8193, "", "", &len);
    ck_assert_int_eq(raw_ask(fd, get, len, ans, sizeof(ans)), 0);
    ck_assert_str_eq(ans, "");
    close(fd);
    /* ... and a new one the same way; headers count as the line does. */
    fd = raw_connect(port);
    ck_assert_int_eq(raw_ask(fd, get, len, ans, sizeof(ans)), 0);
    ck_assert_str_eq(ans, "");
    close(fd);
    free(get);
    get = head_of("GET", 8193, "X-Pad: 1\r\n", "", &len);
    fd = raw_connect(port);
    ck_assert_int_eq(raw_ask(fd, get, len, ans, sizeof(ans)), 0);
    close(fd);
    free(get);
    /* The node goes on serving. */
    fd = raw_connect(port);
    const char hello[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(raw_ask(fd, hello, strlen(hello), ans, sizeof(ans)), 200);
    close(fd);
}

/* A daemon without --listen or --join: the one-node store answers inline
 * (no coordinator), the path an embedded node takes. Started and stopped
 * by PID here, as the harness always gives its nodes --listen. */
START_TEST(test_embedded_node)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(1); /* for its directory and daemon path */
    int port = harness_free_port();
    char addr[32], data[600], log[600];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(data, sizeof(data), "%s/solo", h->dir);
    snprintf(log, sizeof(log), "%s/solo.log", h->dir);
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
            dup2(fd, 2);
            close(fd);
        }
        execl(h->daemon, h->daemon, "--id", "solo", "--data", data, "--http",
              addr, "--max-value-size", "64", (char *)NULL);
        _exit(127);
    }
    /* Stopped by the harness's safety net too if an assertion fails. */
    h->node[0].pid = pid;
    char u[96];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/health", port);
    int64_t deadline = harness_now_ms() + 15000;
    long st = -1;
    while (st != 200 && harness_now_ms() < deadline) {
        httpc_resp_t r = httpc("GET", u, NULL, 0, NULL, NULL);
        st = r.curl_rc == 0 ? r.status : -1;
        httpc_free(&r);
        if (st != 200) {
            ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0,
                          "daemon exited (log %s)", log);
            harness_sleep_ms(50);
        }
    }
    ck_assert_int_eq(st, 200);

    httpc_resp_t r;
    const uint8_t key[] = {'e', 0, 0xfe};
    ck_assert_int_eq(req(port, "GET", key, 3, NULL, NULL, 0, NULL, &r), 404);
    char ctx0[1024];
    snprintf(ctx0, sizeof(ctx0), "%s", r.ctx);
    httpc_free(&r);
    ck_assert_int_eq(req(port, "PUT", key, 3, NULL, "a\0b", 3, NULL, NULL),
                     204);
    ck_assert_int_eq(req(port, "GET", key, 3, NULL, NULL, 0, NULL, &r), 200);
    ck_assert_uint_eq(r.len, 3);
    ck_assert_mem_eq(r.body, "a\0b", 3);
    httpc_free(&r);
    /* Two writes with the context of "absent": siblings, then resolved. */
    ck_assert_int_eq(req(port, "PUT", "s", 1, NULL, "x", 1, ctx0, NULL), 204);
    ck_assert_int_eq(req(port, "PUT", "s", 1, NULL, "y", 1, ctx0, NULL), 204);
    ck_assert_int_eq(req(port, "GET", "s", 1, NULL, NULL, 0, NULL, &r), 300);
    const char *vals[4];
    size_t lens[4];
    ck_assert_uint_eq(parse_parts(&r, vals, lens, 4), 2);
    char ctx[1024];
    snprintf(ctx, sizeof(ctx), "%s", r.ctx);
    httpc_free(&r);
    ck_assert_int_eq(req(port, "PUT", "s", 1, NULL, "xy", 2, ctx, NULL), 204);
    ck_assert_int_eq(req(port, "GET", "s", 1, NULL, NULL, 0, NULL, &r), 200);
    ck_assert_mem_eq(r.body, "xy", 2);
    httpc_free(&r);
    uint8_t big[65];
    memset(big, 'b', sizeof(big));
    ck_assert_int_eq(req(port, "PUT", "b", 1, NULL, big, sizeof(big), NULL,
                         NULL),
                     413);
    ck_assert_int_eq(req(port, "DELETE", key, 3, NULL, NULL, 0, NULL, NULL),
                     204);
    ck_assert_int_eq(req(port, "GET", key, 3, NULL, NULL, 0, NULL, NULL), 404);
    request_head_limit(port);
    harness_destroy(h); /* SIGTERM to the daemon, by PID */
}
END_TEST

/* max_clients 3: three kept-alive connections are served, a fourth gets
 * 503 (JSON, KV_EBUSY) and is closed while the three still work; a
 * closed one frees its slot; a flood of refusals leaves the log small. */
START_TEST(test_max_clients)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(1);
    h->n = 1;
    h->r = 1;
    h->w = 1;
    const char *const extra[] = {"--max-clients", "3", NULL};
    int port = harness_start_http(h, 0, extra);
    char health[64];
    snprintf(health, sizeof(health), "http://127.0.0.1:%d/health", port);
    wait_status(health, 200, 15000);

    const char get[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    char ans[4096];
    char code[32];
    int fd[3];
    for (int i = 0; i < 3; i++) {
        fd[i] = raw_connect(port);
        ck_assert_int_eq(raw_ask(fd[i], get, strlen(get), ans, sizeof(ans)),
                         200);
    }
    /* A connection that has sent no request holds no slot... */
    int idle = raw_connect(port);
    /* ... but one that does, over the limit, is refused and closed. The
     * slots of curl's connections (wait_status) are given back when the
     * node sees them close: bounded wait for that. */
    int st = 0;
    int64_t deadline = harness_now_ms() + 10000;
    int extra_fd = -1;
    for (;;) {
        extra_fd = raw_connect(port);
        st = raw_ask(extra_fd, get, strlen(get), ans, sizeof(ans));
        if (st == 503 || harness_now_ms() > deadline) {
            break;
        }
        /* Served: a slot was still free (not expected with three held). */
        close(extra_fd);
        harness_sleep_ms(50);
    }
    ck_assert_int_eq(st, 503);
    raw_json_code(ans, code, sizeof(code));
    ck_assert_str_eq(code, "KV_EBUSY");
    ck_assert_ptr_nonnull(strstr(ans, "max number of clients reached"));
    ck_assert_ptr_nonnull(strstr(ans, "\r\nConnection: close\r\n"));
    ck_assert_ptr_nonnull(
        strstr(ans, "\r\nContent-Type: application/json\r\n"));
    ck_assert(raw_closed_silently(extra_fd));
    close(extra_fd);
    /* The three go on being served. */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(raw_ask(fd[i], get, strlen(get), ans, sizeof(ans)),
                         200);
    }
    /* A flood of refused connections: each counted, the log stays small. */
    long long rejected0 =
        harness_remote_stat(h->node[0].url, "kvdist_http_rejected_total");
    ck_assert_int_ge(rejected0, 1);
    for (int i = 0; i < 300; i++) {
        int c = raw_connect(port);
        ck_assert_int_eq(raw_ask(c, get, strlen(get), ans, sizeof(ans)), 503);
        close(c);
    }
    ck_assert_int_eq(
        harness_remote_stat(h->node[0].url, "kvdist_http_rejected_total"),
        rejected0 + 300);
    struct stat sb;
    ck_assert_int_eq(stat(h->node[0].log, &sb), 0);
    ck_assert_msg(sb.st_size < 16384, "log %s is %lld bytes", h->node[0].log,
                  (long long)sb.st_size);
    /* The idle connection, now sending, is refused too (the node is full). */
    ck_assert_int_eq(raw_ask(idle, get, strlen(get), ans, sizeof(ans)), 503);
    close(idle);
    /* Closing one frees its slot for a new connection (once the node has
     * seen the close: bounded polling). */
    close(fd[0]);
    deadline = harness_now_ms() + 10000;
    do {
        fd[0] = raw_connect(port);
        st = raw_ask(fd[0], get, strlen(get), ans, sizeof(ans));
        if (st != 200) {
            close(fd[0]);
            harness_sleep_ms(50);
        }
    } while (st != 200 && harness_now_ms() < deadline);
    ck_assert_int_eq(st, 200);
    /* And the node is full again. */
    int c = raw_connect(port);
    ck_assert_int_eq(raw_ask(c, get, strlen(get), ans, sizeof(ans)), 503);
    close(c);
    for (int i = 0; i < 3; i++) {
        close(fd[i]);
    }
    harness_destroy(h);
}
END_TEST

/* ------------------------------------------------------ authentication */

/* Lines of a log file that contain needle. */
static int log_count_http(const char *path, const char *needle)
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

/* Runs node 0's daemon with HTTPS files that must stop it, its stderr in
 * the node's log; returns the exit status (-1: killed after 60 s). */
static int start_failing(harness_t *h, int port, const char *cert,
                         const char *key)
{
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int fd = open(h->node[0].log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(h->daemon, h->daemon, "--id", "n1", "--data", h->node[0].data,
              "--http", addr, "--http-tls-cert-file", cert,
              "--http-tls-key-file", key, (char *)NULL);
        _exit(127);
    }
    int64_t deadline = harness_now_ms() + 60000;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (harness_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        harness_sleep_ms(20);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Writes the one-line password file of a node (mode 0600); returns its
 * path (free it). */
static char *password_file(const harness_t *h, const char *pw)
{
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/password", h->dir), 0);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s\n", pw);
    fclose(f);
    ck_assert_int_eq(chmod(path, 0600), 0);
    return path;
}

/* One request with an Authorization header (auth NULL: none); checks a
 * 401's body and WWW-Authenticate; returns the status. */
static long authed(const char *method, const char *url, const char *auth,
                   const char *body, const char *cainfo, httpc_resp_t *out)
{
    char hdr[300];
    snprintf(hdr, sizeof(hdr), "Authorization: %s", auth != NULL ? auth : "");
    const char *const hdrs[] = {hdr, NULL};
    httpc_resp_t r = httpc_h(method, url, body, body ? strlen(body) : 0, NULL,
                             cainfo, auth != NULL ? hdrs : NULL);
    ck_assert_msg(r.curl_rc == 0, "%s %s: curl error %d", method, url,
                  r.curl_rc);
    if (r.status == 401) {
        char code[32];
        json_code(&r, code, sizeof(code));
        ck_assert_str_eq(code, "KV_EAUTH");
        ck_assert_str_eq(r.ctype, "application/json");
        ck_assert_msg(strstr(r.www_auth, "Basic realm=\"kvdist\"") != NULL &&
                          strstr(r.www_auth, "Bearer") != NULL,
                      "WWW-Authenticate: '%s'", r.www_auth);
    }
    long st = r.status;
    if (out != NULL) {
        *out = r;
    } else {
        httpc_free(&r);
    }
    return st;
}

/* "Basic " + base64(user:pw). */
static void basic(const char *user, const char *pw, char *out, size_t size)
{
    char pair[256];
    snprintf(pair, sizeof(pair), "%s:%s", user, pw);
    ck_assert_uint_lt(http_b64_len(strlen(pair)) + 7, size);
    memcpy(out, "Basic ", 6);
    http_b64_encode(pair, strlen(pair), out + 6);
}

/* auth_password (from a file): every path but /health answers 401 (JSON,
 * KV_EAUTH, WWW-Authenticate) without credentials and with wrong ones,
 * paths that do not exist too; Bearer and Basic with the password are
 * served; nothing an unauthenticated PUT or DELETE sent took effect. HTTP
 * has no connection state: each request on a kept-alive connection is
 * checked on its own. */
START_TEST(test_auth)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(1);
    h->n = 1;
    h->r = 1;
    h->w = 1;
    static const char pw[] = "tr0ub4dor&3";
    char *file = password_file(h, pw);
    const char *const extra[] = {"--auth-password-file", file, NULL};
    int port = harness_start_http(h, 0, extra);
    char health[64], data[96], cluster[64], other[64];
    snprintf(health, sizeof(health), "http://127.0.0.1:%d/health", port);
    snprintf(data, sizeof(data), "http://127.0.0.1:%d/v1/data/auth-k", port);
    snprintf(cluster, sizeof(cluster), "http://127.0.0.1:%d/v1/cluster", port);
    snprintf(other, sizeof(other), "http://127.0.0.1:%d/metrics", port);
    wait_status(health, 200, 15000); /* open: no credentials */
    static const char head[] =
        "HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char text[2048];
    raw_http(port, head, strlen(head), 0, text, sizeof(text));
    ck_assert_int_eq(status_of_raw(text), 200);
    static const char head_data[] = "HEAD /v1/data/auth-k HTTP/1.1\r\nHost: "
                                    "x\r\nConnection: close\r\n\r\n";
    raw_http(port, head_data, strlen(head_data), 0, text, sizeof(text));
    ck_assert_int_eq(status_of_raw(text), 401);
    ck_assert_msg(strstr(text, "\r\n\r\n") != NULL &&
                      strstr(text, "\r\n\r\n")[4] == '\0',
                  "HEAD answered with a body: %s", text);

    char bearer[64], good[128], wrong[128], nocolon[64];
    snprintf(bearer, sizeof(bearer), "Bearer %s", pw);
    basic("any-user", pw, good, sizeof(good));
    basic("any-user", "tr0ub4dor&", wrong, sizeof(wrong));
    snprintf(nocolon, sizeof(nocolon), "Basic ");
    http_b64_encode(pw, strlen(pw), nocolon + 6);
    /* Without, and with wrong credentials. */
    const char *const refused[] = {
        NULL,    "Bearer tr0ub4dor&", "Bearer tr0ub4dor&33", "Bearer ", wrong,
        nocolon, "Token tr0ub4dor&3", "tr0ub4dor&3"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        const char *a = refused[i];
        ck_assert_int_eq(authed("GET", data, a, NULL, NULL, NULL), 401);
        ck_assert_int_eq(authed("PUT", data, a, "stolen", NULL, NULL), 401);
        ck_assert_int_eq(authed("DELETE", data, a, NULL, NULL, NULL), 401);
        ck_assert_int_eq(authed("GET", cluster, a, NULL, NULL, NULL), 401);
        /* No 404 or 405 without the password: it tells nothing. */
        ck_assert_int_eq(authed("GET", other, a, NULL, NULL, NULL), 401);
        ck_assert_int_eq(authed("POST", data, a, NULL, NULL, NULL), 401);
    }
    httpc_resp_t r;
    ck_assert_int_eq(authed("GET", data, NULL, NULL, NULL, &r), 401);
    ck_assert_ptr_nonnull(strstr(r.body, "authentication required"));
    httpc_free(&r);
    ck_assert_int_eq(authed("GET", data, "Bearer nope", NULL, NULL, &r), 401);
    ck_assert_ptr_nonnull(strstr(r.body, "wrong password"));
    httpc_free(&r);
    /* Right: the unauthenticated PUTs wrote nothing. */
    ck_assert_int_eq(authed("GET", data, bearer, NULL, NULL, NULL), 404);
    ck_assert_int_eq(authed("PUT", data, bearer, "mine", NULL, NULL), 204);
    ck_assert_int_eq(authed("GET", data, good, NULL, NULL, &r), 200);
    ck_assert_str_eq(r.body, "mine");
    httpc_free(&r);
    char lower[64];
    snprintf(lower, sizeof(lower), "bearer %s", pw);
    ck_assert_int_eq(authed("GET", data, lower, NULL, NULL, NULL), 200);
    basic("", pw, good, sizeof(good));
    ck_assert_int_eq(authed("GET", cluster, good, NULL, NULL, NULL), 200);
    ck_assert_int_eq(authed("GET", other, good, NULL, NULL, NULL), 404);
    ck_assert_int_eq(authed("DELETE", data, NULL, NULL, NULL, NULL), 401);
    ck_assert_int_eq(authed("GET", data, bearer, NULL, NULL, NULL), 200);
    ck_assert_int_eq(authed("DELETE", data, bearer, NULL, NULL, NULL), 204);
    ck_assert_int_eq(authed("GET", data, bearer, NULL, NULL, NULL), 404);

    /* One kept-alive connection: an authorized request does not open the
     * next; a refused PUT with a body closes (the body was not read). */
    int fd = raw_connect(port);
    char req[512], ans[4096];
    int n = snprintf(req, sizeof(req),
                     "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: %s\r\n\r\n",
                     bearer);
    ck_assert_int_eq(raw_ask(fd, req, (size_t)n, ans, sizeof(ans)), 200);
    static const char plain[] = "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(raw_ask(fd, plain, strlen(plain), ans, sizeof(ans)), 401);
    ck_assert_ptr_nonnull(strstr(ans, "\r\nWWW-Authenticate: Basic"));
    ck_assert_int_eq(raw_ask(fd, req, (size_t)n, ans, sizeof(ans)), 200);
    static const char put[] = "PUT /v1/data/raw HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 5\r\n\r\nhello";
    ck_assert_int_eq(raw_ask(fd, put, strlen(put), ans, sizeof(ans)), 401);
    ck_assert_ptr_nonnull(strstr(ans, "\r\nConnection: close\r\n"));
    ck_assert(raw_closed_silently(fd));
    close(fd);
    char rawurl[96];
    snprintf(rawurl, sizeof(rawurl), "http://127.0.0.1:%d/v1/data/raw", port);
    ck_assert_int_eq(authed("GET", rawurl, bearer, NULL, NULL, NULL), 404);
    /* Refusals are answers like any other: counted as 4xx. */
    ck_assert_int_ge(
        harness_remote_stat(h->node[0].url, "kvdist_http_4xx_total"), 40);
    free(file);
    harness_destroy(h);
}
END_TEST

/* HTTPS on the http address itself (http_tls_cert_file/key_file), with a
 * self-signed certificate made here by openssl: GET, PUT and DELETE with
 * the certificate pinned, the password still checked and /health still
 * open; plain HTTP to the port and an unpinned client get nothing. A
 * certificate file that cannot be read stops the node from starting. */
START_TEST(test_https)
{
    ck_assert_msg(system("command -v openssl >/dev/null") == 0,
                  "openssl is needed (make deps)");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(1);
    h->n = 1;
    h->r = 1;
    h->w = 1;
    char cert[600], key[600], cmd[2048];
    snprintf(cert, sizeof(cert), "%s/http.crt", h->dir);
    snprintf(key, sizeof(key), "%s/http.key", h->dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
             "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
             "-keyout '%s' -out '%s' 2>/dev/null",
             key, cert);
    ck_assert_int_eq(system(cmd), 0);
    static const char pw[] = "https-pass-1";
    char *file = password_file(h, pw);
    const char *const extra[] = {"--http-tls-cert-file",
                                 cert,
                                 "--http-tls-key-file",
                                 key,
                                 "--auth-password-file",
                                 file,
                                 NULL};
    int port = harness_start_http(h, 0, extra);
    ck_assert_int_ge(log_count_http(h->node[0].log, "HTTP API on https://"), 1);
    char health[64], data[96];
    snprintf(health, sizeof(health), "https://127.0.0.1:%d/health", port);
    snprintf(data, sizeof(data), "https://127.0.0.1:%d/v1/data/tls-k", port);
    /* Bounded: the node serves once its ready line is out, but a slow
     * (sanitizer) build may take a moment more. */
    int64_t deadline = harness_now_ms() + 15000;
    httpc_resp_t r;
    do {
        r = httpc("GET", health, NULL, 0, NULL, cert);
        if (r.curl_rc != 0 || r.status != 200) {
            httpc_free(&r);
            harness_sleep_ms(50);
        }
    } while ((r.curl_rc != 0 || r.status != 200) &&
             harness_now_ms() < deadline);
    ck_assert_msg(r.curl_rc == 0 && r.status == 200, "GET /health: %d %ld",
                  r.curl_rc, r.status);
    ck_assert_ptr_nonnull(strstr(r.body, "\"status\":\"ok\""));
    httpc_free(&r);

    char bearer[64];
    snprintf(bearer, sizeof(bearer), "Bearer %s", pw);
    /* A refused PUT closes its connection after the 401: the whole
     * answer must reach the client every time (the close must not cut
     * the TLS stream's last bytes off). */
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(authed("PUT", data, NULL, "x", cert, NULL), 401);
    }
    ck_assert_int_eq(authed("PUT", data, "Bearer wrong", "x", cert, NULL), 401);
    ck_assert_int_eq(authed("PUT", data, bearer, "over tls", cert, NULL), 204);
    ck_assert_int_eq(authed("GET", data, bearer, NULL, cert, &r), 200);
    ck_assert_str_eq(r.body, "over tls");
    ck_assert(r.ctx[0] != '\0');
    httpc_free(&r);
    ck_assert_int_eq(authed("GET", data, NULL, NULL, cert, NULL), 401);
    /* A value large enough to span TLS records, both ways. */
    char *big = malloc(100001);
    for (size_t i = 0; i < 100000; i++) {
        big[i] = (char)('a' + i % 26);
    }
    big[100000] = '\0';
    ck_assert_int_eq(authed("PUT", data, bearer, big, cert, NULL), 204);
    ck_assert_int_eq(authed("GET", data, bearer, NULL, cert, &r), 200);
    ck_assert_uint_eq(r.len, 100000);
    ck_assert_str_eq(r.body, big);
    httpc_free(&r);
    free(big);
    ck_assert_int_eq(authed("DELETE", data, bearer, NULL, cert, NULL), 204);
    ck_assert_int_eq(authed("GET", data, bearer, NULL, cert, NULL), 404);

    /* Not pinned: curl does not trust the certificate. */
    r = httpc("GET", health, NULL, 0, NULL, NULL);
    ck_assert_int_eq(r.curl_rc, CURLE_PEER_FAILED_VERIFICATION);
    httpc_free(&r);
    /* Plain HTTP to the HTTPS port: no HTTP answer at all. */
    char plain[64];
    snprintf(plain, sizeof(plain), "http://127.0.0.1:%d/health", port);
    r = httpc("GET", plain, NULL, 0, NULL, NULL);
    ck_assert_msg(r.curl_rc != 0 || r.status == 0, "plain HTTP: %d %ld",
                  r.curl_rc, r.status);
    httpc_free(&r);
    harness_stop(h, 0);

    /* The node does not start with a certificate it cannot read. */
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/none.crt", h->dir);
    int status = start_failing(h, port, missing, key);
    ck_assert_int_eq(status, 2);
    ck_assert_msg(log_count_http(h->node[0].log, "http_tls_cert_file") >= 1 &&
                      log_count_http(h->node[0].log, "No such file") >= 1,
                  "log %s", h->node[0].log);
    /* Nor with a key that is no key. */
    status = start_failing(h, port, cert, cert);
    ck_assert_int_eq(status, 2);
    ck_assert_int_ge(log_count_http(h->node[0].log, "refused"), 1);
    free(file);
    harness_destroy(h);
}
END_TEST

Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *u = tcase_create("codecs");
    tcase_add_test(u, test_b64);
    tcase_add_test(u, test_pct);
    tcase_add_test(u, test_auth_header);
    suite_add_tcase(s, u);
    TCase *tc = tcase_create("multiprocess");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_routes);
    tcase_add_test(tc, test_siblings);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_concurrent);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_embedded_node);
    tcase_add_test(tc, test_health_starting);
    tcase_add_test(tc, test_max_clients);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_https);
    suite_add_tcase(s, tc);
    return s;
}
