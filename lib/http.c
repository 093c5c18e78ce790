/*
 * http.c - the HTTP API of a peer (kvdist-http(7)): /v1/data/{key},
 * /health and /v1/cluster, served by NNG's own HTTP server.
 *
 * Owns the server, its handlers and struct http. Handlers run on NNG
 * threads and never wait for a quorum: a request starts an operation of
 * the node (node_read/node_write, node.c: limits, counters, local replica
 * or coordinator) and returns; the operation's callback builds the
 * response and finishes the server's aio.
 *
 * Lifetimes, the part a reader must keep straight:
 *  - A request that touches the node enters it (node_enter) before it
 *    starts and leaves it (node_leave) as the last thing it does, so
 *    kv_shutdown waits for every request in progress. A PUT gives the
 *    node back while its body arrives (a slow client must not hold up
 *    kv_shutdown) and enters again once the body is in; the read has the
 *    request's deadline, and http_stop ends it by closing the connection.
 *  - struct http outlives every handler call: it is reference-counted by
 *    the owner and by the registered handler (NNG holds a handler while
 *    calling it and runs its destructor after the last call). http_stop
 *    detaches the node (h->kv = NULL), aborts what each connection waits
 *    for, and waits until no handler is inside its callback, no body read
 *    is pending (h->active) and every connection has closed (h->clients),
 *    so none can reach a node being freed.
 *  - A connection (http_client_t) has one operation at a time: reading a
 *    request (rx), a handler's answer (cb), writing it (tx), and on one
 *    that closes after its answer, waiting for the client's close (rx
 *    again, client_linger). The callback of the last one closes it
 *    (client_close), which frees it and gives back its max_clients slot.
 * Lock: h->mu protects kv, active, refs, the clients list and each
 * client's body pointer, and is held while an operation starts on a
 * client's connection, so that http_stop's abort pass sees it.
 *
 * Connections. NNG 1.5's HTTP server has no hook on accept or on close of
 * a connection, and answers unknown paths and methods itself with HTML
 * pages. So it has one handler here, for every path and method
 * (handle_first), which sees a connection's first request, admits the
 * connection against max_clients (node_client_admit; 503 JSON and close
 * when the node is full), and takes it over with nng_http_hijack. From
 * then on the connection is served by the loop under "connections" (read
 * a request, route it in the routes table, answer, again), as NNG's own
 * http_server.c does, so this file knows when it closes and gives its
 * slot back, and answers every error itself in JSON (404, 405 with Allow,
 * 400, 505). What is counted against max_clients is therefore a
 * connection that has sent a request, from its first request until it
 * closes; one that never sends a request is held by NNG and not counted
 * (NNG offers nothing to see it). Before the first request, NNG answers
 * a missing Host (400) and a version other than HTTP/1.x (505) itself:
 * its error pages are set to the same JSON (labelled text/html by NNG).
 * Both sides read requests with NNG's parser, whose 8192-byte buffer
 * bounds a request head: a longer one makes NNG close the connection
 * before any code here sees it (no 414/431 possible; kvdist-http(7)).
 *
 * The body of a PUT is read here, not collected by NNG: NNG answers 400 to
 * a Content-Length above its limit, while the API promises 413 (and must
 * not buffer a body it will refuse).
 *
 * Authentication (auth_password) is one check in client_dispatch, before
 * routing: a request that is not for an open route (/health) and whose
 * Authorization header does not carry the password (auth.c compares it)
 * is answered 401 by handle_unauthorized in place of the route's
 * handler, so no handler checks anything itself and a route added later
 * is protected by default. HTTPS (http_tls_cert_file) is NNG's https
 * server with the node's certificate: below the connection loop, which
 * does not change.
 */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>

#include "auth.h"
#include "clock.h"
#include "cluster.h"
#include "codec.h"
#include "pem.h"
#include "rand.h"
#include "vclock.h"

#define HTTP_DATA_PATH "/v1/data"
#define HTTP_CTX_HEADER "X-Kv-Context"
/* GET and DELETE carry no body; NNG reads (and we ignore) a small one. */
#define HTTP_SMALL_BODY 4096
#define HTTP_MAX_TIMEOUT_MS 3600000
/* A connection that closes after its answer first reads (and drops) what
 * the client still sends, until the client closes or for this long
 * (client_linger). */
#define HTTP_LINGER_MS 2000

typedef struct http_client http_client_t;

struct http {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kv_t *kv;        /* NULL once stopping: handlers answer 503 */
    unsigned active; /* handlers inside their callback */
    unsigned refs;   /* owner + registered handlers */
    http_client_t *clients; /* connections taken over (http_client_t) */
    nng_http_server *srv;
};

/* One client connection, taken over from NNG's server at its first
 * request (nng_http_hijack) and served by the loop below until it closes.
 * At most one of rx, cb (a handler's answer), tx is in progress. */
struct http_client {
    struct http *h;
    kv_t *kv; /* holds one node_client_admit slot, for the release */
    nng_http_conn *conn;
    nng_http_req *req; /* the request being served */
    nng_http_res *res; /* the answer being written */
    nng_aio *rx;       /* reads a request, or a small body to discard */
    nng_aio *cb;       /* the handler's: finished with the answer */
    nng_aio *tx;       /* writes the answer */
    nng_aio *body;     /* a PUT body read in progress, under h->mu */
    uint8_t *sink;     /* discarded bodies land here */
    bool draining;     /* rx reads a body to discard, not a request */
    bool lingering;    /* rx drops bytes until close (client_linger) */
    int64_t linger_end; /* monotonic ms: lingering ends here */
    bool head;         /* HEAD: the answer is sent without its body */
    bool close;        /* close after this answer */
    bool admitted;     /* holds a max_clients slot */
    http_client_t *next, *prev; /* h->clients, under h->mu */
};

enum http_method { HM_GET, HM_PUT, HM_DELETE };

/* One request to /v1/data. refs: the thread that started the node's
 * operation and the operation's callback each hold one (the callback may
 * run before node_* returns, on another thread). */
typedef struct http_req {
    kv_t *kv;
    struct http *h;
    bool entered; /* holds the node (node_enter) */
    nng_aio *aio; /* the connection's (hc->cb): finished exactly once */
    http_client_t *hc;
    nng_aio *body_aio; /* reads a PUT body; NULL otherwise */
    int method;
    uint8_t *key;
    size_t klen;
    uint8_t *body;
    size_t blen;
    int r, w, timeout_ms;
    bool has_ctx;
    vc_t ctx;
    obj_t obj; /* a read's result */
    _Atomic int refs;
} http_req_t;

/* ------------------------------------------------------------- codecs */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t http_b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

void http_b64_encode(const void *in, size_t n, char *out)
{
    const uint8_t *p = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

static int b64_value(char c)
{
    const char *p = c != '\0' ? strchr(b64_alphabet, c) : NULL;
    return p != NULL ? (int)(p - b64_alphabet) : -1;
}

int http_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t outsize,
                    size_t *outlen)
{
    *outlen = 0;
    if (inlen % 4 != 0) {
        return KV_EINVAL;
    }
    size_t o = 0;
    for (size_t i = 0; i < inlen; i += 4) {
        bool last = i + 4 == inlen;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (v[k] = b64_value(in[i + k])) < 0) {
                return KV_EINVAL; /* data after padding, or not base64 */
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3 - (size_t)pad;
        /* The bits padding stands for must be zero: one encoding only. */
        if ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff))) {
            return KV_EINVAL;
        }
        if (o + n > outsize) {
            return KV_EINVAL;
        }
        out[o++] = (uint8_t)(x >> 16);
        if (n > 1) {
            out[o++] = (uint8_t)(x >> 8);
        }
        if (n > 2) {
            out[o++] = (uint8_t)x;
        }
    }
    *outlen = o;
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int http_pct_decode(const char *in, size_t inlen, uint8_t *out, size_t *outlen)
{
    size_t o = 0;
    *outlen = 0;
    for (size_t i = 0; i < inlen; i++) {
        if (in[i] == '/') {
            return KV_EINVAL;
        }
        if (in[i] != '%') {
            out[o++] = (uint8_t)in[i];
            continue;
        }
        int hi = i + 2 < inlen ? hex_value(in[i + 1]) : -1;
        int lo = i + 2 < inlen ? hex_value(in[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            return KV_EINVAL;
        }
        out[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *outlen = o;
    return 0;
}

/* The password in an Authorization header value: "Bearer <password>",
 * or "Basic <base64 of user:password>" with any user name (RFC 7617; the
 * password is everything after the first colon). Schemes are matched
 * without regard to case (RFC 7235). */
int http_auth_password(const char *value, uint8_t *out, size_t outsize,
                       size_t *outlen)
{
    *outlen = 0;
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    size_t slen = strcspn(value, " \t");
    const char *cred = value + slen;
    while (*cred == ' ' || *cred == '\t') {
        cred++;
    }
    size_t clen = strlen(cred);
    while (clen > 0 && (cred[clen - 1] == ' ' || cred[clen - 1] == '\t')) {
        clen--;
    }
    if (clen == 0) {
        return KV_EINVAL;
    }
    if (slen == 6 && strncasecmp(value, "Bearer", 6) == 0) {
        if (clen > outsize) {
            return KV_EINVAL;
        }
        memcpy(out, cred, clen);
        *outlen = clen;
        return 0;
    }
    if (slen != 5 || strncasecmp(value, "Basic", 5) != 0) {
        return KV_EINVAL;
    }
    size_t n = 0;
    if (http_b64_decode(cred, clen, out, outsize, &n) != 0) {
        return KV_EINVAL;
    }
    const uint8_t *colon = memchr(out, ':', n);
    if (colon == NULL) {
        explicit_bzero(out, n);
        return KV_EINVAL;
    }
    size_t skip = (size_t)(colon + 1 - out);
    memmove(out, colon + 1, n - skip);
    explicit_bzero(out + (n - skip), skip);
    *outlen = n - skip;
    return 0;
}

/* ----------------------------------------------------------- responses */

static const char *code_name(int rc)
{
    /* Designated: the codes' numbers are fixed in kvdist.h, but the names
     * must not depend on the order they are written in here. */
    static const char *const names[] = {
        [KV_OK] = "KV_OK",
        [KV_ENOTFOUND] = "KV_ENOTFOUND",
        [KV_EINVAL] = "KV_EINVAL",
        [KV_ETOOBIG] = "KV_ETOOBIG",
        [KV_EKEYTOOBIG] = "KV_EKEYTOOBIG",
        [KV_EQUORUM] = "KV_EQUORUM",
        [KV_ETIMEDOUT] = "KV_ETIMEDOUT",
        [KV_EIO] = "KV_EIO",
        [KV_ECORRUPT] = "KV_ECORRUPT",
        [KV_ENOMEM] = "KV_ENOMEM",
        [KV_ECLOSED] = "KV_ECLOSED",
        [KV_EBADOPT] = "KV_EBADOPT",
        [KV_EBUSY] = "KV_EBUSY",
        [KV_EUNAVAIL] = "KV_EUNAVAIL",
        [KV_EPROTO] = "KV_EPROTO",
        [KV_EADDRINUSE] = "KV_EADDRINUSE",
        [KV_ENOTSUP] = "KV_ENOTSUP",
        [KV_EINTERNAL] = "KV_EINTERNAL",
        [KV_EAUTH] = "KV_EAUTH",
    };
    if (rc >= 0 && (size_t)rc < sizeof(names) / sizeof(names[0]) &&
        names[rc] != NULL) {
        return names[rc];
    }
    return "KV_EINTERNAL";
}

/* The status each library error maps to (kvdist-http(7) lists them). */
static uint16_t status_of(int rc)
{
    switch (rc) {
    case KV_OK:
        return 200;
    case KV_ENOTFOUND:
        return 404;
    case KV_EINVAL:
        return 400;
    case KV_ETOOBIG:
        return 413;
    case KV_EKEYTOOBIG:
        return 414;
    case KV_EQUORUM:
    case KV_EUNAVAIL:
    case KV_ECLOSED:
        return 503;
    case KV_ETIMEDOUT:
        return 504;
    case KV_EAUTH:
        return 401;
    default:
        return 500;
    }
}

static void count_status(kv_t *kv, uint16_t status)
{
    if (kv == NULL) {
        return;
    }
    metric_inc(&kv->metrics, M_HTTP_REQUESTS);
    if (status >= 200 && status < 300) {
        metric_inc(&kv->metrics, M_HTTP_2XX);
    } else if (status >= 300 && status < 400) {
        metric_inc(&kv->metrics, M_HTTP_3XX);
    } else if (status >= 400 && status < 500) {
        metric_inc(&kv->metrics, M_HTTP_4XX);
    } else if (status >= 500) {
        metric_inc(&kv->metrics, M_HTTP_5XX);
    }
}

/* Finishes aio with res, or with an error (NNG then closes the connection)
 * when res is NULL. */
static void finish(nng_aio *aio, nng_http_res *res)
{
    if (res == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static nng_http_res *new_res(uint16_t status, const char *type,
                             const void *body, size_t len)
{
    nng_http_res *res = NULL;
    if (nng_http_res_alloc(&res) != 0) {
        return NULL;
    }
    /* NNG 1.5's reason table lacks or misnames these. */
    const char *reason = status == 413   ? "Payload Too Large"
                         : status == 414 ? "URI Too Long"
                         : status == 300 ? "Multiple Choices"
                                         : NULL;
    if (nng_http_res_set_status(res, status) != 0 ||
        (reason != NULL && nng_http_res_set_reason(res, reason) != 0) ||
        (type != NULL &&
         nng_http_res_set_header(res, "Content-Type", type) != 0) ||
        (len > 0 && nng_http_res_copy_data(res, body, len) != 0) ||
        /* NNG writes no length for an empty body: a 200 with an empty
         * value must still tell the client it is complete. */
        (len == 0 && status != 204 &&
         nng_http_res_set_header(res, "Content-Length", "0") != 0)) {
        nng_http_res_free(res);
        return NULL;
    }
    return res;
}

static nng_http_res *json_res(uint16_t status, json_t *j)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        return NULL;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the body is len + 1 bytes */
    nng_http_res *res = new_res(status, "application/json", text, len + 1);
    free(text);
    return res;
}

/* {"error": why, "code": "KV_E..."} with the status the code maps to
 * (status 0) or the one given. close: the request's body (if any) was
 * not read, so the connection cannot carry another request. */
static nng_http_res *error_res(uint16_t status, int rc, const char *why,
                               bool close)
{
    if (status == 0) {
        status = status_of(rc);
    }
    nng_http_res *res =
        json_res(status, json_pack("{s:s, s:s}", "error",
                                   why != NULL ? why : kv_strerror(rc), "code",
                                   code_name(rc)));
    if (res != NULL && close &&
        nng_http_res_set_header(res, "Connection", "close") != 0) {
        nng_http_res_free(res);
        res = NULL;
    }
    return res;
}

static void reply(kv_t *kv, nng_aio *aio, nng_http_res *res)
{
    count_status(kv, res != NULL ? nng_http_res_get_status(res) : 500);
    finish(aio, res);
}

static int set_header_u(nng_http_res *res, const char *name, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    return nng_http_res_set_header(res, name, num);
}

/* Adds X-Kv-Context: base64 of the encoded causal context. */
static int set_ctx_header(nng_http_res *res, const vc_t *cc)
{
    buf_t b;
    buf_init(&b);
    if (vc_context_encode(cc, &b) != 0 || b.oom) {
        buf_free(&b);
        return KV_ENOMEM;
    }
    char *text = malloc(http_b64_len(b.len) + 1);
    if (text == NULL) {
        buf_free(&b);
        return KV_ENOMEM;
    }
    http_b64_encode(b.p, b.len, text);
    int rc = nng_http_res_set_header(res, HTTP_CTX_HEADER, text) == 0
                 ? 0
                 : KV_ENOMEM;
    free(text);
    buf_free(&b);
    return rc;
}

/* Siblings as multipart/mixed (RFC 2046): one part per live sibling,
 * tombstones left out (the context covers them). The boundary is chosen
 * so that it occurs in no value. */
static nng_http_res *siblings_res(const obj_t *o)
{
    char boundary[48];
    for (uint64_t salt = 0;; salt++) {
        /* splitmix64 spreads the counter into boundary-looking bits. */
        uint64_t seed = salt ^ (uint64_t)clk_wall_us();
        snprintf(boundary, sizeof(boundary), "kvdist-siblings-%016" PRIx64,
                 rand_next(&seed));
        size_t blen = strlen(boundary);
        bool clash = false;
        for (size_t i = 0; i < o->n && !clash; i++) {
            clash = o->sib[i].vlen >= blen &&
                    memmem(o->sib[i].val, o->sib[i].vlen, boundary, blen);
        }
        if (!clash) {
            break;
        }
    }
    buf_t b;
    buf_init(&b);
    char line[160];
    for (size_t i = 0; i < o->n; i++) {
        const obj_sib_t *s = &o->sib[i];
        if (s->flags & OBJ_SIB_TOMBSTONE) {
            continue;
        }
        int n = snprintf(line, sizeof(line),
                         "--%s\r\nContent-Type: application/octet-stream\r\n"
                         "Content-Length: %zu\r\nX-Kv-Timestamp: %" PRId64
                         "\r\n\r\n",
                         boundary, s->vlen, s->ts_us);
        buf_put(&b, line, (size_t)n);
        buf_put(&b, s->val, s->vlen);
        buf_put(&b, "\r\n", 2);
    }
    int n = snprintf(line, sizeof(line), "--%s--\r\n", boundary);
    buf_put(&b, line, (size_t)n);
    char type[96];
    snprintf(type, sizeof(type), "multipart/mixed; boundary=%s", boundary);
    nng_http_res *res = b.oom ? NULL : new_res(300, type, b.p, b.len);
    buf_free(&b);
    return res;
}

/* ------------------------------------------------------ handler state */

static void http_unref(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    unsigned left = --h->refs;
    pthread_mutex_unlock(&h->mu);
    if (left == 0) {
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        free(h);
    }
}

/* The destructor NNG runs after a handler's last call. */
static void handler_dtor(void *arg)
{
    http_unref(arg);
}

/* A handler's aio: input 0 the request, 1 the connection
 * (http_client_t), as the loop in "connections" below sets them. */
static struct http *handler_http(nng_aio *aio)
{
    http_client_t *hc = nng_aio_get_input(aio, 1);
    return hc->h;
}

/* Marks a handler call in progress; returns the node, or NULL when the
 * server is stopping (the caller answers 503 without touching a node).
 * *hp is the server state, for http_end: read here, at the start, as the
 * aio's inputs may be reused once the aio is finished. */
static kv_t *handler_begin(nng_aio *aio, struct http **hp)
{
    struct http *h = handler_http(aio);
    *hp = h;
    pthread_mutex_lock(&h->mu);
    kv_t *kv = h->kv;
    if (kv != NULL) {
        h->active++;
    }
    pthread_mutex_unlock(&h->mu);
    return kv;
}

/* Ends what handler_begin started; the caller touches neither h nor the
 * node afterwards (http_stop may free them once active is 0). */
static void http_end(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    if (--h->active == 0) {
        pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
}

/* Reads a PUT body on hc's connection; aio fails at once when the server
 * is stopping. Registered (hc->body) so that http_stop can end the read
 * instead of waiting for a slow client. */
static void client_read_body(http_client_t *hc, nng_aio *aio)
{
    struct http *h = hc->h;
    pthread_mutex_lock(&h->mu);
    bool started = h->kv != NULL;
    if (started) {
        hc->body = aio;
        nng_http_conn_read_all(hc->conn, aio);
    }
    pthread_mutex_unlock(&h->mu);
    if (!started && nng_aio_begin(aio)) {
        nng_aio_finish(aio, NNG_ECLOSED); /* as a closed connection would */
    }
}

static void reply_stopping(nng_aio *aio)
{
    finish(aio, error_res(503, KV_ECLOSED, "node is shutting down", false));
}

/* ---------------------------------------------------------- /v1/data */

static void req_free(http_req_t *hr)
{
    kv_t *kv = hr->kv;
    if (hr->body_aio != NULL) {
        /* Possibly inside its own callback: let NNG free it later. */
        nng_aio_reap(hr->body_aio);
    }
    free(hr->key);
    free(hr->body);
    vc_free(&hr->ctx);
    obj_free(&hr->obj);
    bool entered = hr->entered;
    free(hr);
    if (entered) {
        node_leave(kv); /* last: kv may go away right after */
    }
}

static void req_unref(http_req_t *hr)
{
    if (atomic_fetch_sub(&hr->refs, 1) == 1) {
        req_free(hr);
    }
}

static void req_fail(http_req_t *hr, int rc, const char *why, bool close)
{
    reply(hr->kv, hr->aio, error_res(0, rc, why, close));
}

static void write_done(void *arg, int rc, int acked, int needed, obj_t *result)
{
    (void)result;
    http_req_t *hr = arg;
    kv_t *kv = hr->kv;
    if (rc == KV_EQUORUM || rc == KV_ETIMEDOUT) {
        /* Some replica may hold it: 504, never 503, which says "nothing
         * was written, send it again". */
        char why[160];
        snprintf(why, sizeof(why),
                 "indeterminate: %s; %d of %d replicas acknowledged, and the "
                 "write may exist on some replicas",
                 rc == KV_EQUORUM ? "quorum not reached" : "timed out", acked,
                 needed);
        reply(kv, hr->aio, error_res(504, rc, why, false));
    } else if (rc == KV_EUNAVAIL) {
        reply(kv, hr->aio,
              error_res(503, rc,
                        "not written: not enough replicas can be reached",
                        false));
    } else if (rc != 0) {
        req_fail(hr, rc, NULL, false);
    } else {
        nng_http_res *res = new_res(204, NULL, NULL, 0);
        if (res != NULL &&
            (set_header_u(res, "X-Kv-Acked", (uint64_t)acked) != 0 ||
             set_header_u(res, "X-Kv-Needed", (uint64_t)needed) != 0)) {
            nng_http_res_free(res);
            res = NULL;
        }
        reply(kv, hr->aio, res);
    }
    req_unref(hr);
}

static void read_done(void *arg, int rc, int acked, int needed, obj_t *result)
{
    (void)acked;
    (void)needed;
    http_req_t *hr = arg;
    kv_t *kv = hr->kv;
    if (rc == 0 && result != NULL) {
        obj_free(&hr->obj);
        hr->obj = *result;
        obj_init(result);
    }
    if (rc != 0) {
        req_fail(hr, rc, NULL, false);
        req_unref(hr);
        return;
    }
    const obj_t *o = &hr->obj;
    size_t live = obj_live(o);
    nng_http_res *res = NULL;
    if (live == 0) {
        res = error_res(404, KV_ENOTFOUND, NULL, false);
    } else if (live == 1) {
        for (size_t i = 0; i < o->n; i++) {
            if (!(o->sib[i].flags & OBJ_SIB_TOMBSTONE)) {
                res = new_res(200, "application/octet-stream", o->sib[i].val,
                              o->sib[i].vlen);
                if (res != NULL &&
                    set_header_u(res, "X-Kv-Timestamp",
                                 (uint64_t)o->sib[i].ts_us) != 0) {
                    nng_http_res_free(res);
                    res = NULL;
                }
                break;
            }
        }
    } else {
        res = siblings_res(o);
    }
    if (res != NULL && set_ctx_header(res, &o->cc) != 0) {
        nng_http_res_free(res);
        res = NULL;
    }
    reply(kv, hr->aio, res);
    req_unref(hr);
}

/* Starts the operation (node.c: the local replica of an embedded store, or
 * the coordinator). Consumes the caller's reference. */
static void req_run(http_req_t *hr)
{
    kv_t *kv = hr->kv;
    atomic_fetch_add(&hr->refs, 1); /* for the callback */
    if (hr->method == HM_GET) {
        node_read(kv, hr->key, hr->klen, hr->r, hr->timeout_ms,
                  NODE_FROM_FRONTEND, NULL, read_done, hr);
    } else {
        node_write(kv, hr->key, hr->klen, hr->has_ctx ? &hr->ctx : NULL,
                   hr->body, hr->blen, hr->method == HM_DELETE, 0, hr->w,
                   hr->timeout_ms, NODE_FROM_FRONTEND, NULL, write_done, hr);
    }
    req_unref(hr);
}

/* The body of a PUT has arrived (or not). The read held the server
 * (h->active) but not the node, so that kv_shutdown need not wait for a
 * slow client and http_stop, by closing the connections, ends it at once. */
static void body_done(void *arg)
{
    http_req_t *hr = arg;
    struct http *h = hr->h;
    kv_t *kv = hr->kv;
    int rv = nng_aio_result(hr->body_aio);
    pthread_mutex_lock(&h->mu);
    hr->hc->body = NULL;
    pthread_mutex_unlock(&h->mu);
    if (rv != 0) {
        /* Short, slow or closed: nothing to answer on this connection
         * (and so nothing counted as answered). */
        KV_LOG(&kv->log, KV_LOG_DEBUG, "http: body read failed: %s",
               nng_strerror(rv));
        nng_aio_finish(hr->aio, rv);
        req_unref(hr);
    } else if (node_enter(kv) != 0) {
        reply(kv, hr->aio,
              error_res(503, KV_ECLOSED, "node is shutting down", false));
        req_unref(hr);
    } else {
        hr->entered = true;
        req_run(hr);
    }
    http_end(h);
}

/* Parses one decimal parameter in [min, max]. */
static bool parse_param(const char *s, size_t len, long min, long max, int *out)
{
    if (len == 0 || len > 9) {
        return false;
    }
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max) {
        return false;
    }
    *out = (int)v;
    return true;
}

/* The query string: r, w and timeout_ms, each at most once. */
static const char *parse_query(http_req_t *hr, const char *q, size_t len)
{
    kv_t *kv = hr->kv;
    const char *end = q + len;
    if (len > 0 && end[-1] == '&') {
        return "query parameters must be name=value";
    }
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *item_end = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(item_end - q));
        if (eq == NULL) {
            return "query parameters must be name=value";
        }
        size_t nlen = (size_t)(eq - q);
        const char *v = eq + 1;
        size_t vlen = (size_t)(item_end - v);
        if (nlen == 1 && q[0] == 'r') {
            if (hr->r != 0 || !parse_param(v, vlen, 1, kv->cfg.n, &hr->r)) {
                return "r must be an integer from 1 to n, given once";
            }
        } else if (nlen == 1 && q[0] == 'w') {
            if (hr->w != 0 || !parse_param(v, vlen, 1, kv->cfg.n, &hr->w)) {
                return "w must be an integer from 1 to n, given once";
            }
        } else if (nlen == 10 && memcmp(q, "timeout_ms", 10) == 0) {
            if (hr->timeout_ms != 0 ||
                !parse_param(v, vlen, 1, HTTP_MAX_TIMEOUT_MS,
                             &hr->timeout_ms)) {
                return "timeout_ms must be an integer from 1 to 3600000, "
                       "given once";
            }
        } else {
            return "unknown query parameter (r, w and timeout_ms are "
                   "known)";
        }
        q = amp != NULL ? amp + 1 : end;
    }
    return NULL;
}

/* Splits the request target into the key and the query; fills hr.
 * Returns 0 or the error to answer (why set). */
static int parse_target(http_req_t *hr, const char *uri, const char **why)
{
    /* An absolute-form target (a proxy's) names scheme and host first. */
    if (strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0) {
        uri = strchr(strchr(uri, ':') + 3, '/');
        if (uri == NULL) {
            *why = "no key in the path";
            return KV_EINVAL;
        }
    }
    size_t plen = strlen(HTTP_DATA_PATH);
    if (strncmp(uri, HTTP_DATA_PATH "/", plen + 1) != 0) {
        *why = "the path must be /v1/data/{key}";
        return KV_EINVAL;
    }
    const char *seg = uri + plen + 1;
    const char *q = strchr(seg, '?');
    size_t slen = q != NULL ? (size_t)(q - seg) : strlen(seg);
    if (slen == 0) {
        *why = "empty key";
        return KV_EINVAL;
    }
    /* Decoding only shrinks: slen bytes are enough. */
    hr->key = malloc(slen);
    if (hr->key == NULL) {
        return KV_ENOMEM;
    }
    if (http_pct_decode(seg, slen, hr->key, &hr->klen) != 0) {
        *why = "the key must be one path segment: percent-encode '/', '%', "
               "'?' and every byte outside A-Z a-z 0-9 - . _ ~ as %XX";
        return KV_EINVAL;
    }
    if (hr->klen > hr->kv->cfg.max_key_size) {
        *why = "key longer than max_key_size";
        return KV_EKEYTOOBIG;
    }
    if (q != NULL && (*why = parse_query(hr, q + 1, strlen(q + 1))) != NULL) {
        return KV_EINVAL;
    }
    return 0;
}

static int parse_context(http_req_t *hr, const char *text, const char **why)
{
    size_t len = strlen(text);
    uint8_t *raw = malloc(len / 4 * 3 + 1);
    if (raw == NULL) {
        return KV_ENOMEM;
    }
    size_t rlen = 0;
    int rc = http_b64_decode(text, len, raw, len / 4 * 3 + 1, &rlen);
    if (rc == 0) {
        rc = vc_context_decode(raw, rlen, &hr->ctx);
    }
    free(raw);
    if (rc != 0) {
        *why = "malformed X-Kv-Context (pass back the header of a GET "
               "unchanged)";
        return KV_EINVAL;
    }
    hr->has_ctx = true;
    return 0;
}

/* Content-Length: digits only, no sign, no overflow. */
static bool parse_length(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!isdigit((unsigned char)*s) || v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

static void handle_data(nng_aio *aio, int method)
{
    struct http *h = NULL;
    kv_t *kv = handler_begin(aio, &h);
    if (kv == NULL) {
        reply_stopping(aio);
        return;
    }
    nng_http_req *req = nng_aio_get_input(aio, 0);
    const char *te = nng_http_req_get_header(req, "Transfer-Encoding");
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    /* The body of a PUT is still on the wire; any other method's is
     * already read. */
    bool unread = method == HM_PUT && cl != NULL;
    if (node_enter(kv) != 0) {
        count_status(kv, 503);
        finish(aio, error_res(503, KV_ECLOSED, "node is shutting down",
                              unread || te != NULL));
        http_end(h);
        return;
    }
    http_req_t *hr = calloc(1, sizeof(*hr));
    if (hr == NULL) {
        count_status(kv, 500);
        finish(aio, NULL);
        node_leave(kv);
        http_end(h);
        return;
    }
    hr->kv = kv;
    hr->h = h;
    hr->entered = true;
    hr->aio = aio;
    hr->hc = nng_aio_get_input(aio, 1);
    hr->method = method;
    vc_init(&hr->ctx);
    obj_init(&hr->obj);
    atomic_init(&hr->refs, 1);

    const char *why = NULL;
    const char *ctx = nng_http_req_get_header(req, HTTP_CTX_HEADER);
    uint64_t len = 0;
    int rc = 0;
    if (te != NULL) {
        /* NNG 1.5 cannot read chunked bodies; the bytes that follow are
         * not a request, so the connection closes after the answer. */
        reply(kv, aio,
              error_res(411, KV_EINVAL,
                        "Transfer-Encoding is not supported: send "
                        "Content-Length",
                        true));
        req_unref(hr);
        http_end(h);
        return;
    }
    if (method == HM_PUT && cl == NULL) {
        reply(kv, aio,
              error_res(411, KV_EINVAL, "PUT needs Content-Length", false));
        req_unref(hr);
        http_end(h);
        return;
    }
    if (method == HM_PUT && !parse_length(cl, &len)) {
        reply(kv, aio, error_res(400, KV_EINVAL, "bad Content-Length", true));
        req_unref(hr);
        http_end(h);
        return;
    }
    rc = parse_target(hr, nng_http_req_get_uri(req), &why);
    if (rc == 0 && method == HM_PUT && len > kv->cfg.max_value_size) {
        rc = KV_ETOOBIG;
        why = "value larger than max_value_size";
    }
    if (rc == 0 && method != HM_GET && ctx != NULL) {
        rc = parse_context(hr, ctx, &why);
    }
    if (rc != 0) {
        req_fail(hr, rc, why, unread && len > 0);
        req_unref(hr);
        http_end(h);
        return;
    }
    if (method == HM_PUT && len > 0) {
        hr->blen = (size_t)len;
        nng_iov iov;
        if ((hr->body = malloc(hr->blen)) == NULL ||
            nng_aio_alloc(&hr->body_aio, body_done, hr) != 0) {
            req_fail(hr, KV_ENOMEM, NULL, true);
            req_unref(hr);
            http_end(h);
            return;
        }
        iov.iov_buf = hr->body;
        iov.iov_len = hr->blen;
        nng_aio_set_iov(hr->body_aio, 1, &iov);
        /* A client that stops sending must not hold a connection forever. */
        nng_aio_set_timeout(hr->body_aio, hr->timeout_ms > 0
                                              ? hr->timeout_ms
                                              : kv->cfg.timeout_ms);
        /* The read keeps the server's hold (h->active, released by
         * body_done) and gives back the node's. */
        hr->entered = false;
        node_leave(kv);
        client_read_body(hr->hc, hr->body_aio);
        return;
    }
    req_run(hr);
    http_end(h);
}

static void handle_get(nng_aio *aio)
{
    handle_data(aio, HM_GET);
}

static void handle_put(nng_aio *aio)
{
    handle_data(aio, HM_PUT);
}

static void handle_delete(nng_aio *aio)
{
    handle_data(aio, HM_DELETE);
}

/* ------------------------------------------------ /health, /v1/cluster */

/* Whether the node can serve: open, joined (if it has seeds), enough
 * members up for the quorums to be reachable, and a local store that takes
 * writes (store.h, disk faults: "degraded" until they resume). */
static json_t *health_json(kv_t *kv, bool *ok, kv_member_t **mp, size_t *np)
{
    kv_member_t *m = NULL;
    size_t count = 0;
    size_t up = 0;
    const char *status = "ok";
    const char *reason = NULL;
    char store_why[STORE_REASON_MAX + 16];
    store_health_t sh = {0};
    if (kv->store != NULL) {
        store_health(kv->store, &sh);
    }
    if (cluster_members(kv, &m, &count) != 0) {
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        up += m[i].status == KV_MEMBER_UP;
    }
    size_t q = (size_t)(kv->cfg.r > kv->cfg.w ? kv->cfg.r : kv->cfg.w);
    size_t reach = count < (size_t)kv->cfg.n ? count : (size_t)kv->cfg.n;
    size_t needed = q < reach ? q : reach;
    if (kv->cfg.join != NULL && count <= 1) {
        status = "starting";
        reason = "not joined to the cluster yet";
    } else if (up < needed) {
        status = "unavailable";
        reason = "fewer members up than max(r, w): no quorum possible";
    } else if (sh.faulted) {
        status = "degraded";
        snprintf(store_why, sizeof(store_why), "store: %s", sh.reason);
        reason = store_why;
    }
    *ok = reason == NULL;
    json_t *j =
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:i, s:i}", "status", status,
                  "node", kv->cfg.node_id, "members", (json_int_t)count, "up",
                  (json_int_t)up, "needed", (json_int_t)needed, "n", kv->cfg.n,
                  "r", kv->cfg.r, "w", kv->cfg.w);
    if (j != NULL && reason != NULL) {
        json_object_set_new(j, "reason", json_string(reason));
    }
    if (mp != NULL) {
        *mp = m;
        *np = count;
    } else {
        free(m);
    }
    return j;
}

static void handle_health(nng_aio *aio)
{
    struct http *h = NULL;
    kv_t *kv = handler_begin(aio, &h);
    if (kv == NULL) {
        reply_stopping(aio);
        return;
    }
    if (node_enter(kv) != 0) {
        reply(kv, aio,
              json_res(503, json_pack("{s:s, s:s}", "status", "closing", "node",
                                      kv->cfg.node_id)));
        http_end(h);
        return;
    }
    bool ok = false;
    json_t *j = health_json(kv, &ok, NULL, NULL);
    reply(kv, aio, json_res(ok ? 200 : 503, j));
    node_leave(kv);
    http_end(h);
}

static void handle_cluster(nng_aio *aio)
{
    struct http *h = NULL;
    kv_t *kv = handler_begin(aio, &h);
    if (kv == NULL) {
        reply_stopping(aio);
        return;
    }
    if (node_enter(kv) != 0) {
        reply(kv, aio,
              error_res(503, KV_ECLOSED, "node is shutting down", false));
        http_end(h);
        return;
    }
    bool ok = false;
    kv_member_t *m = NULL;
    size_t count = 0;
    json_t *j = health_json(kv, &ok, &m, &count);
    json_t *list = json_array();
    for (size_t i = 0; j != NULL && list != NULL && i < count; i++) {
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:b, s:f}", "id",
                                        m[i].id, "url", m[i].url, "status",
                                        cluster_status_name(m[i].status),
                                        "self", m[i].self, "ring_share",
                                        cluster_ring_share(kv, m[i].id)));
    }
    free(m);
    if (j != NULL && list != NULL) {
        json_object_set_new(j, "members", list);
        json_object_set_new(j, "vnodes", json_integer(kv->cfg.vnodes));
    } else {
        json_decref(list);
        json_decref(j);
        j = NULL;
    }
    reply(kv, aio, json_res(200, j));
    node_leave(kv);
    http_end(h);
}

/* ---------------------------------------------------------- connections */

/* With auth_password set, every request but those of an open route
 * answers 401 without credentials: this handler stands in for the
 * route's (client_dispatch), so HEAD and Connection are treated alike. */
static void handle_unauthorized(nng_aio *aio)
{
    http_client_t *hc = nng_aio_get_input(aio, 1);
    nng_http_req *req = nng_aio_get_input(aio, 0);
    bool tried = nng_http_req_get_header(req, "Authorization") != NULL;
    nng_http_res *res = error_res(
        401, KV_EAUTH,
        tried ? "wrong password (Authorization: Bearer <password>, or "
                "Basic with any user name)"
              : "authentication required: send Authorization: Bearer "
                "<password>, or Basic with any user name",
        false);
    /* Basic first: a browser then asks for the password (any user). */
    if (res != NULL &&
        nng_http_res_set_header(res, "WWW-Authenticate",
                                "Basic realm=\"kvdist\", charset=\"UTF-8\", "
                                "Bearer realm=\"kvdist\"") != 0) {
        nng_http_res_free(res);
        res = NULL;
    }
    reply(hc->kv, aio, res);
}

/* Whether the request carries the password (auth.c compares it). */
static bool client_authorized(const http_client_t *hc)
{
    const auth_t *a = &hc->kv->auth;
    if (!a->required) {
        return true;
    }
    const char *value = nng_http_req_get_header(hc->req, "Authorization");
    /* A user name and a password of the longest kind, in base64. */
    uint8_t pw[4 * (KV_PASSWORD_MAX + 256) / 3 + 4];
    size_t len = 0;
    bool ok = value != NULL &&
              http_auth_password(value, pw, sizeof(pw), &len) == 0 &&
              auth_check(a, pw, len);
    explicit_bzero(pw, sizeof(pw));
    return ok;
}

/* The routes: a request goes to the row of its path and method. HEAD is
 * a GET whose answer leaves out the body (client_answered); the methods
 * of a path's rows make the Allow header of its 405. An open route is
 * served without the password (auth_password): /health, which HAProxy
 * and load balancers poll; every other path and method needs it, those
 * added later too, and so does a request that matches no route (no 404
 * or 405 tells an unauthenticated client what exists). */
static const struct route {
    const char *path;
    bool tree;        /* path/{anything} too (the key) */
    const char *method;
    bool reads_body;  /* the handler reads the body itself (PUT) */
    bool open;        /* no password needed */
    void (*cb)(nng_aio *);
} routes[] = {
    {HTTP_DATA_PATH, true, "GET", false, false, handle_get},
    {HTTP_DATA_PATH, true, "HEAD", false, false, handle_get},
    {HTTP_DATA_PATH, true, "PUT", true, false, handle_put},
    {HTTP_DATA_PATH, true, "DELETE", false, false, handle_delete},
    {"/health", false, "GET", false, true, handle_health},
    {"/health", false, "HEAD", false, true, handle_health},
    {"/v1/cluster", false, "GET", false, false, handle_cluster},
    {"/v1/cluster", false, "HEAD", false, false, handle_cluster},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Whether the request target's path (absolute form or not, query left
 * out) is route r's: the path itself, with a trailing '/', or (tree)
 * anything below it. */
static bool route_matches(const struct route *r, const char *uri)
{
    if (strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0) {
        uri = strchr(strchr(uri, ':') + 3, '/');
        if (uri == NULL) {
            uri = "/";
        }
    }
    size_t len = strlen(r->path);
    if (strncmp(uri, r->path, len) != 0) {
        return false;
    }
    const char *rest = uri + len;
    return *rest == '\0' || *rest == '?' ||
           (*rest == '/' && (r->tree || rest[1] == '\0' || rest[1] == '?'));
}

static void client_free(http_client_t *hc)
{
    nng_aio_reap(hc->rx); /* possibly from inside their own callbacks */
    nng_aio_reap(hc->cb);
    nng_aio_reap(hc->tx);
    if (hc->conn != NULL) {
        nng_http_conn_close(hc->conn); /* closes and frees it */
    }
    nng_http_req_free(hc->req);
    nng_http_res_free(hc->res);
    free(hc->sink);
    free(hc);
}

/* Ends the connection: nothing is in progress on it (the caller is the
 * callback of its last operation). Gives back its max_clients slot. */
static void client_close(http_client_t *hc)
{
    struct http *h = hc->h;
    if (hc->admitted) {
        node_client_release(hc->kv); /* the node outlives http_stop's wait */
    }
    pthread_mutex_lock(&h->mu);
    if (hc->prev != NULL) {
        hc->prev->next = hc->next;
    } else {
        h->clients = hc->next;
    }
    if (hc->next != NULL) {
        hc->next->prev = hc->prev;
    }
    if (h->clients == NULL) {
        pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
    client_free(hc); /* touches neither h nor the node */
}

/* Writes res (owned from here), unless the server is stopping. */
static void client_write(http_client_t *hc, nng_http_res *res)
{
    struct http *h = hc->h;
    pthread_mutex_lock(&h->mu);
    bool go = h->kv != NULL;
    if (go) {
        hc->res = res;
        nng_http_conn_write_res(hc->conn, res, hc->tx);
    }
    pthread_mutex_unlock(&h->mu);
    if (!go) {
        nng_http_res_free(res);
        client_close(hc);
    }
}

/* Answers an error the loop finds itself (no handler involved). */
static void client_error(http_client_t *hc, uint16_t status, int rc,
                         const char *why)
{
    nng_http_res *res = error_res(status, rc, why, hc->close);
    count_status(hc->kv, res != NULL ? status : 500);
    if (res == NULL) {
        client_close(hc);
        return;
    }
    client_write(hc, res);
}

/* Runs handler cb for the request read (the route's, or the 401). */
static void client_handle(http_client_t *hc, void (*cb)(nng_aio *))
{
    hc->head = strcmp(nng_http_req_get_method(hc->req), "HEAD") == 0;
    nng_aio_set_input(hc->cb, 0, hc->req);
    nng_aio_set_input(hc->cb, 1, hc);
    nng_aio_set_input(hc->cb, 2, hc->conn);
    if (!nng_aio_begin(hc->cb)) {
        client_close(hc);
        return;
    }
    cb(hc->cb);
}

/* 401 without the password (auth_password) unless the route is open,
 * 404 for a path the API does not serve, 405 (with Allow) for a method
 * its path does not take, else the route's handler. */
static void client_dispatch(http_client_t *hc)
{
    const char *uri = nng_http_req_get_uri(hc->req);
    const char *method = nng_http_req_get_method(hc->req);
    const struct route *match = NULL;
    char allow[64] = "";
    for (size_t i = 0; i < N_ROUTES && match == NULL; i++) {
        if (!route_matches(&routes[i], uri)) {
            continue;
        }
        if (strcmp(routes[i].method, method) == 0) {
            match = &routes[i];
        } else {
            size_t n = strlen(allow);
            snprintf(allow + n, sizeof(allow) - n, "%s%s", n > 0 ? ", " : "",
                     routes[i].method);
        }
    }
    if ((match == NULL || !match->open) && !client_authorized(hc)) {
        /* A body its handler would have read is still on the wire: the
         * connection cannot carry another request. */
        if (match != NULL && match->reads_body &&
            (nng_http_req_get_header(hc->req, "Content-Length") != NULL ||
             nng_http_req_get_header(hc->req, "Transfer-Encoding") != NULL)) {
            hc->close = true;
        }
        client_handle(hc, handle_unauthorized);
        return;
    }
    if (match == NULL && allow[0] == '\0') {
        client_error(hc, 404, KV_ENOTFOUND,
                     "no such path: the API serves /v1/data/{key}, /health "
                     "and /v1/cluster");
        return;
    }
    if (match == NULL) {
        char why[128];
        snprintf(why, sizeof(why), "method %.16s not allowed here (Allow: %s)",
                 method, allow);
        nng_http_res *res = error_res(405, KV_ENOTSUP, why, hc->close);
        if (res != NULL && nng_http_res_set_header(res, "Allow", allow) != 0) {
            nng_http_res_free(res);
            res = NULL;
        }
        count_status(hc->kv, res != NULL ? 405 : 500);
        if (res == NULL) {
            client_close(hc);
            return;
        }
        client_write(hc, res);
        return;
    }
    client_handle(hc, match->cb);
}

/* A request has been read: the checks NNG's server makes (RFC 7230), then
 * its body unless its handler reads it: one of at most HTTP_SMALL_BODY
 * bytes is read and dropped, a larger or chunked one closes the
 * connection after the answer (its bytes are not a next request). */
static void client_serve(http_client_t *hc)
{
    nng_http_req *req = hc->req;
    const char *version = nng_http_req_get_version(req);
    const char *conn = nng_http_req_get_header(req, "Connection");
    hc->head = false;
    hc->close = version == NULL || strcmp(version, "HTTP/1.1") != 0 ||
                (conn != NULL && strcasestr(conn, "close") != NULL);
    if (version == NULL || strncmp(version, "HTTP/1.", 7) != 0) {
        hc->close = true;
        client_error(hc, 505, KV_ENOTSUP, "only HTTP/1.0 and 1.1 are served");
        return;
    }
    if (strcmp(version, "HTTP/1.1") == 0 &&
        nng_http_req_get_header(req, "Host") == NULL) {
        client_error(hc, 400, KV_EINVAL, "HTTP/1.1 needs a Host header");
        return;
    }
    bool handler_reads = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        handler_reads |= routes[i].reads_body &&
                         strcmp(routes[i].method,
                                nng_http_req_get_method(req)) == 0 &&
                         route_matches(&routes[i], nng_http_req_get_uri(req));
    }
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    uint64_t len = 0;
    if (handler_reads || cl == NULL) {
        hc->close |= !handler_reads &&
                     nng_http_req_get_header(req, "Transfer-Encoding") != NULL;
        client_dispatch(hc);
        return;
    }
    if (!parse_length(cl, &len)) {
        hc->close = true;
        client_error(hc, 400, KV_EINVAL, "bad Content-Length");
        return;
    }
    if (len > HTTP_SMALL_BODY) {
        hc->close = true;
    }
    if (len == 0 || len > HTTP_SMALL_BODY) {
        client_dispatch(hc);
        return;
    }
    if (hc->sink == NULL && (hc->sink = malloc(HTTP_SMALL_BODY)) == NULL) {
        client_close(hc);
        return;
    }
    nng_iov iov = {.iov_buf = hc->sink, .iov_len = (size_t)len};
    nng_aio_set_iov(hc->rx, 1, &iov);
    hc->draining = true;
    struct http *h = hc->h;
    pthread_mutex_lock(&h->mu);
    bool go = h->kv != NULL;
    if (go) {
        nng_http_conn_read_all(hc->conn, hc->rx);
    }
    pthread_mutex_unlock(&h->mu);
    if (!go) {
        client_close(hc);
    }
}

/* Waits for the connection's next request, unless the server is
 * stopping. */
static void client_next(http_client_t *hc)
{
    struct http *h = hc->h;
    nng_http_req_reset(hc->req);
    pthread_mutex_lock(&h->mu);
    bool go = h->kv != NULL;
    if (go) {
        nng_http_conn_read_req(hc->conn, hc->req, hc->rx);
    }
    pthread_mutex_unlock(&h->mu);
    if (!go) {
        client_close(hc);
    }
}

/*
 * The answer is written and the connection is to close: the close waits
 * until the client has closed its side, or HTTP_LINGER_MS, reading and
 * dropping what it still sends. Closing at once loses the answer twice
 * over: NNG's TLS stream (1.5.2 tls_common.c, tls_close) closes the TCP
 * connection with the encrypted answer still in its send buffer, since a
 * write is done once mbedTLS has the bytes, and with unread bytes in the
 * receive buffer (a refused body) the kernel resets the connection, which
 * can make the client drop the answer it has received (lingering close,
 * as Apache and nginx do).
 */
static void client_linger(http_client_t *hc)
{
    int64_t left = hc->linger_end - clk_mono_ms();
    if (left <= 0 ||
        (hc->sink == NULL && (hc->sink = malloc(HTTP_SMALL_BODY)) == NULL)) {
        client_close(hc);
        return;
    }
    hc->lingering = true;
    nng_iov iov = {.iov_buf = hc->sink, .iov_len = HTTP_SMALL_BODY};
    nng_aio_set_iov(hc->rx, 1, &iov);
    nng_aio_set_timeout(hc->rx, (nng_duration)left);
    struct http *h = hc->h;
    pthread_mutex_lock(&h->mu);
    bool go = h->kv != NULL;
    if (go) {
        nng_http_conn_read(hc->conn, hc->rx);
    }
    pthread_mutex_unlock(&h->mu);
    if (!go) {
        client_close(hc);
    }
}

static void client_read_done(void *arg)
{
    http_client_t *hc = arg;
    if (hc->lingering) {
        /* The client closed (or reset, or went quiet until the end). */
        if (nng_aio_result(hc->rx) != 0) {
            client_close(hc);
        } else {
            client_linger(hc);
        }
    } else if (nng_aio_result(hc->rx) != 0) {
        /* The client closed, or its request head overflowed NNG's
         * 8 KiB buffer (NNG closes the connection itself, see
         * kvdist-http(7)), or http_stop ended the read. */
        client_close(hc);
    } else if (hc->draining) {
        hc->draining = false;
        client_dispatch(hc);
    } else {
        client_serve(hc);
    }
}

/* A handler finished hc->cb: its answer (or an error: hard close). */
static void client_answered(void *arg)
{
    http_client_t *hc = arg;
    nng_http_res *res =
        nng_aio_result(hc->cb) == 0 ? nng_aio_get_output(hc->cb, 0) : NULL;
    if (res == NULL) {
        client_close(hc);
        return;
    }
    const char *c = nng_http_res_get_header(res, "Connection");
    hc->close |= c != NULL && strcasestr(c, "close") != NULL;
    if (hc->close && nng_http_res_set_header(res, "Connection", "close") != 0) {
        nng_http_res_free(res);
        client_close(hc);
        return;
    }
    void *data = NULL;
    size_t size = 0;
    nng_http_res_get_data(res, &data, &size);
    if (hc->head && size > 0) {
        /* Keeps Content-Length: the size of the body a GET would get. */
        nng_http_res_set_data(res, NULL, size);
    }
    client_write(hc, res);
}

static void client_write_done(void *arg)
{
    http_client_t *hc = arg;
    nng_http_res_free(hc->res);
    hc->res = NULL;
    if (nng_aio_result(hc->tx) != 0) {
        client_close(hc);
    } else if (hc->close) {
        hc->linger_end = clk_mono_ms() + HTTP_LINGER_MS;
        client_linger(hc);
    } else {
        client_next(hc);
    }
}

/*
 * The only handler NNG's server has (every path, every method, no body
 * collected): it sees a connection's first request. It admits the
 * connection against max_clients, takes it over from NNG and serves that
 * request and every later one in the loop above; a connection the node
 * has no slot for is taken over too, answered 503 and closed.
 */
static void handle_first(nng_aio *aio)
{
    struct http *h = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_conn *conn = nng_aio_get_input(aio, 2);
    pthread_mutex_lock(&h->mu);
    kv_t *kv = h->kv;
    if (kv != NULL) {
        h->active++;
    }
    pthread_mutex_unlock(&h->mu);
    if (kv == NULL) {
        reply_stopping(aio);
        return;
    }
    bool admitted = node_client_admit(kv);
    http_client_t *hc = calloc(1, sizeof(*hc));
    if (hc == NULL || nng_aio_alloc(&hc->rx, client_read_done, hc) != 0 ||
        nng_aio_alloc(&hc->cb, client_answered, hc) != 0 ||
        nng_aio_alloc(&hc->tx, client_write_done, hc) != 0) {
        if (hc != NULL) {
            client_free(hc);
        }
        if (admitted) {
            node_client_release(kv);
        }
        count_status(kv, 500);
        finish(aio, NULL); /* NNG closes the connection */
        http_end(h);
        return;
    }
    hc->h = h;
    hc->kv = kv;
    hc->admitted = admitted;
    /* From here the connection and the request are this file's: NNG's
     * server forgets them when aio finishes without an answer. A refused
     * one too, so that its 503 is written and the connection closed as
     * every other (client_linger), not by NNG's immediate close. */
    nng_http_hijack(conn);
    hc->conn = conn;
    hc->req = req;
    pthread_mutex_lock(&h->mu);
    hc->next = h->clients;
    if (h->clients != NULL) {
        h->clients->prev = hc;
    }
    h->clients = hc;
    pthread_mutex_unlock(&h->mu);
    if (!admitted) {
        metric_inc(&kv->metrics, M_HTTP_REJECTED);
        /* Identical lines in a row are folded into a count (log.c), so a
         * flood of refusals costs a line per 10 s, not a line each. */
        KV_LOG(&kv->log, KV_LOG_WARN,
               "http: refused a connection: max_clients (%u) reached",
               kv->max_clients);
        nng_aio_finish(aio, 0);
        hc->close = true;
        client_error(hc, 503, KV_EBUSY, "max number of clients reached");
        http_end(h);
        return;
    }
    nng_aio_finish(aio, 0);
    client_serve(hc);
    http_end(h);
}

/* ------------------------------------------------------- start and stop */

static int nng_to_kv(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case NNG_ENOMEM:
        return KV_ENOMEM;
    case NNG_EADDRINUSE:
        return KV_EADDRINUSE;
    default:
        return KV_EINVAL;
    }
}

/* The answers NNG's server still gives itself, before handle_first sees a
 * connection's first request (http_server.c's rxdone): the same JSON as
 * ours, though NNG labels an error page text/html. */
static const struct {
    uint16_t status;
    const char *body;
} nng_errors[] = {
    {400, "{\"error\":\"bad request (HTTP/1.1 needs a Host header)\","
          "\"code\":\"KV_EINVAL\"}\n"},
    {404, "{\"error\":\"no such path: the API serves /v1/data/{key}, "
          "/health and /v1/cluster\",\"code\":\"KV_ENOTFOUND\"}\n"},
    {505, "{\"error\":\"only HTTP/1.0 and 1.1 are served\","
          "\"code\":\"KV_ENOTSUP\"}\n"},
};
#define N_NNG_ERRORS (sizeof(nng_errors) / sizeof(nng_errors[0]))

static int add_handler(struct http *h, const char *path, const char *method,
                       void (*cb)(nng_aio *), bool tree, size_t maxbody,
                       bool collect)
{
    nng_http_handler *hd = NULL;
    int rv = nng_http_handler_alloc(&hd, path, cb);
    if (rv != 0) {
        return nng_to_kv(rv);
    }
    if ((rv = nng_http_handler_set_method(hd, method)) != 0 ||
        (tree && (rv = nng_http_handler_set_tree(hd)) != 0) ||
        (rv = nng_http_handler_collect_body(hd, collect, maxbody)) != 0 ||
        (rv = nng_http_handler_set_data(hd, h, handler_dtor)) != 0) {
        nng_http_handler_free(hd);
        return nng_to_kv(rv);
    }
    /* From here the destructor drops this reference. */
    pthread_mutex_lock(&h->mu);
    h->refs++;
    pthread_mutex_unlock(&h->mu);
    if ((rv = nng_http_server_add_handler(h->srv, hd)) != 0) {
        nng_http_handler_free(hd); /* runs the destructor */
        return nng_to_kv(rv);
    }
    return 0;
}

/* HTTPS: NNG's TLS (mbedTLS in Debian's build) with the certificate and
 * key of http_tls_cert_file and http_tls_key_file. No client certificate
 * is asked for: clients authenticate with the password. */
static int http_set_tls(kv_t *kv, nng_http_server *srv)
{
    char *cert = pem_read(&kv->log, "http", "http_tls_cert_file",
                          kv->cfg.http_tls_cert_file);
    char *key = cert != NULL ? pem_read(&kv->log, "http", "http_tls_key_file",
                                        kv->cfg.http_tls_key_file)
                             : NULL;
    if (key == NULL) {
        free(cert);
        return KV_EINVAL;
    }
    nng_tls_config *tls = NULL;
    int rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_SERVER);
    const char *step = "TLS is not available in this NNG";
    if (rv == 0) {
        step = "the certificate or key is refused";
        rv = nng_tls_config_own_cert(tls, cert, key, NULL);
    }
    if (rv == 0) {
        step = "cannot set the server's TLS configuration";
        rv = nng_http_server_set_tls(srv, tls);
    }
    if (tls != NULL) {
        nng_tls_config_free(tls); /* the server holds its own reference */
    }
    explicit_bzero(key, strlen(key));
    free(key);
    free(cert);
    if (rv != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "http: https: %s: %s", step,
               nng_strerror(rv));
        return rv == NNG_ENOTSUP  ? KV_ENOTSUP
               : rv == NNG_ENOMEM ? KV_ENOMEM
                                  : KV_EINVAL;
    }
    return 0;
}

int http_start(kv_t *kv)
{
    struct http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return KV_ENOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->kv = kv;
    h->refs = 1;
    kv->http = h;

    bool tls = kv->cfg.http_tls_cert_file != NULL;
    char url[300];
    snprintf(url, sizeof(url), "%s://%s", tls ? "https" : "http", kv->cfg.http);
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv == 0) {
        rv = nng_http_server_hold(&h->srv, u);
        nng_url_free(u);
    }
    int rc = nng_to_kv(rv);
    if (rc == 0 && tls) {
        rc = http_set_tls(kv, h->srv);
        if (rc != 0) {
            return rc; /* logged; node_free calls http_stop */
        }
    }
    if (rc == 0) {
        /* Every path and method (NULL): routing is client_dispatch's. */
        rc = add_handler(h, "/", NULL, handle_first, true, 0, false);
    }
    for (size_t i = 0; rc == 0 && i < N_NNG_ERRORS; i++) {
        rc = nng_to_kv(nng_http_server_set_error_page(
            h->srv, nng_errors[i].status, nng_errors[i].body));
    }
    if (rc == 0) {
        rc = nng_to_kv(nng_http_server_start(h->srv));
    }
    if (rc != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "http: cannot serve %s: %s",
               kv->cfg.http, kv_strerror(rc));
        return rc; /* node_free calls http_stop */
    }
    KV_LOG(&kv->log, KV_LOG_INFO, "http: serving on %s://%s%s",
           tls ? "https" : "http", kv->cfg.http,
           kv->auth.required ? " (password required)" : "");
    return 0;
}

void http_stop(kv_t *kv)
{
    struct http *h = kv->http;
    if (h == NULL) {
        return;
    }
    kv->http = NULL;
    if (h->srv != NULL) {
        /* No new connection; NNG's own (before their first request) are
         * closed, and handle_first has finished with the others. */
        nng_http_server_stop(h->srv);
    }
    pthread_mutex_lock(&h->mu);
    h->kv = NULL;
    /* Every connection taken over ends now: what waits on the client is
     * aborted, and nothing new starts (h->kv is NULL). */
    for (http_client_t *hc = h->clients; hc != NULL; hc = hc->next) {
        nng_aio_abort(hc->rx, NNG_ECLOSED);
        nng_aio_abort(hc->tx, NNG_ECLOSED);
        if (hc->body != NULL) {
            nng_aio_abort(hc->body, NNG_ECLOSED);
        }
    }
    while (h->active > 0 || h->clients != NULL) {
        pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    if (h->srv != NULL) {
        nng_http_server_release(h->srv);
    }
    http_unref(h);
}
