/*
 * resp.c - the Redis-protocol (RESP2) front end of a peer node: a TCP
 * listener (option `resp`, HOST:PORT) that speaks enough of Redis for
 * redis-cli, redis-benchmark and ordinary client libraries: GET, MGET,
 * SET, MSET, DEL, EXISTS, DBSIZE, PING, ECHO, INFO, SELECT 0, QUIT,
 * AUTH, HELLO 2, CLIENT SETNAME/GETNAME, explicit refusals of
 * MULTI/EXEC/DISCARD/WATCH, and the start-up probes those tools send
 * (COMMAND, CONFIG GET). The commands are rows of resp_cmds (name,
 * handler, arity), as in Redis.
 *
 * Owns the listener, every connection and their buffers. The transport is
 * NNG's byte-stream API, so NNG stays the one network library and its
 * threads drive everything: nothing here blocks waiting for a quorum. A
 * GET or SET starts an asynchronous operation of the node
 * (node_read/node_write, node.c: a quorum operation, or the local replica
 * of a one-node store) whose callback writes the reply. MGET, MSET, DEL
 * and EXISTS run one such operation per key, one after another.
 *
 * Invariants:
 * - A connection does one thing at a time: receive, send, or one
 *   operation. Requests are parsed from the input buffer and executed in
 *   order, their replies appended in order, so pipelined requests are
 *   answered in order. (One operation in flight per connection: throughput
 *   comes from many connections, as with redis-benchmark -c.) Nothing is
 *   sent while an operation is in flight, so an operation may take back
 *   the replies it appended (MGET does on an error).
 * - The parsed arguments point into the input buffer, which is only
 *   compacted or grown before a receive, i.e. when no operation is using
 *   them.
 * - Every length read from the network is bounded before use: arrays by
 *   RESP_MAX_ARGS, bulk strings by the node's key and value limits, inline
 *   commands by RESP_MAX_INLINE, a whole request by max_request, and an
 *   MGET reply by max_request too. Malformed input gets "-ERR Protocol
 *   error: ..." and the connection is closed after that reply; the node
 *   keeps serving everyone else.
 * - Every accepted connection asks node_client_admit for one of the
 *   node's max_clients slots (shared with the HTTP API). A refused one is
 *   still a resp_conn_t: it only sends "-ERR max number of clients
 *   reached" (with a send deadline) and closes. An admitted one gives its
 *   slot back exactly once, in the reaper, after its socket is freed.
 * - With auth_password set, a connection starts unauthenticated (authed
 *   false) and cmd_execute answers -NOAUTH to every command but the
 *   no_auth rows (AUTH, HELLO, QUIT) until AUTH or HELLO ... AUTH gives
 *   the password (auth.c compares it): one check at the entry, none in
 *   the handlers. Until then the parser holds a request to Redis's
 *   unauthenticated bounds (RESP_UNAUTH_MAX_ARGS, RESP_UNAUTH_MAX_BULK).
 *   The state is the connection's own, under its mu like the rest.
 * - A connection whose last activity ended is handed to the reaper thread,
 *   which frees it: NNG forbids freeing an aio from its own callback.
 * - A failed accept is retried after a back-off (RESP_BACKOFF_MIN doubling
 *   to RESP_BACKOFF_MAX, reset by a successful accept), never at once: an
 *   exhausted open-file limit would otherwise spin. Those failures and the
 *   refusals are logged through a resp_report_t: one line when they
 *   start, then at most one per RESP_REPORT_MS with a count, whatever the
 *   logger does.
 */
#include "resp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>


#define RESP_MAX_ARGS 1024
#define RESP_MAX_INLINE (64u << 10) /* Redis's own inline limit */
#define RESP_LINE_MAX 32            /* "*<n>\r\n" and "$<n>\r\n" headers */
#define RESP_OUT_FLUSH (64u << 10)  /* send once this much reply is queued */
#define RESP_IN_MIN (16u << 10)     /* first input buffer */
#define RESP_BACKOFF_MIN 10         /* ms before the first accept retry */
#define RESP_BACKOFF_MAX 1000       /* ms: the back-off stops doubling here */
#define RESP_REPORT_MS 5000         /* at most one line per episode per 5 s */
#define RESP_REFUSE_SEND_MS 1000    /* deadline of the "max clients" reply */
/* Before AUTH, with a password set: Redis's own bounds (CVE-2021-32675),
 * so that a client without the password cannot make the node buffer a
 * whole max_request. */
#define RESP_UNAUTH_MAX_ARGS 10
#define RESP_UNAUTH_MAX_BULK 16384

enum resp_op { OP_NONE, OP_GET, OP_MGET, OP_SET, OP_MSET, OP_DEL, OP_EXISTS };

/* Rate-limited reporting of a repeated failure (accept errors, refused
 * connections): the first one is logged, later ones are counted and
 * logged as a number at most once per RESP_REPORT_MS, and the end of an
 * episode is logged once if its failures were not all reported. Touched
 * only by the accept callback (one accept is in flight at a time). */
typedef struct resp_report {
    int64_t last_ms;   /* when the last line was logged; -1: never */
    int64_t since_ms;  /* when the first unlogged failure happened */
    uint64_t unlogged; /* failures since that line */
    bool active;       /* the last event was a failure */
    bool owed;         /* a line was logged in this episode: owe its end */
} resp_report_t;

typedef struct resp_conn resp_conn_t;
typedef struct resp resp_t;

struct resp_conn {
    resp_t *rs;
    nng_stream *stream;
    nng_aio *rx;
    nng_aio *tx;

    pthread_mutex_t mu; /* protects everything below */
    uint8_t *in;        /* received bytes; [in_off, in_len) not parsed yet */
    size_t in_cap;
    size_t in_off;
    size_t in_len;
    buf_t out; /* replies; [out_sent, out.len) not sent yet */
    size_t out_sent;
    resp_arg_t *argv; /* the request being executed */
    size_t argc;
    size_t argv_cap;

    bool rx_busy;
    bool tx_busy;
    bool op_busy; /* an operation owns argv until it replies */
    bool op_next; /* the operation's next step is ready to issue */
    bool running; /* conn_run is active (on some thread) */
    bool again;   /* something changed while it was */
    bool eof;     /* the peer closed its side (or receiving failed) */
    bool closing; /* reply what is queued, then close (QUIT, bad input) */
    bool broken;  /* finished: nothing more is sent or received */

    bool admitted;  /* holds a max_clients slot (immutable once set) */
    bool authed;    /* gave the password (AUTH, HELLO AUTH), or none is set */
    bool in_multi;  /* MULTI was refused: refuse all until EXEC/DISCARD */
    uint64_t id;    /* HELLO's "id": 1, 2, ... in accept order */
    char name[128]; /* CLIENT SETNAME */
    size_t namelen;

    enum resp_op op; /* the operation in progress */
    size_t op_i;     /* its current key: argv[op_i] */
    long long op_count;
    bool op_deleting; /* DEL: the key was found, its tombstone is going */
    size_t op_mark;   /* MGET: where its reply starts in out */

    resp_conn_t *prev; /* rs->conns or rs->dead, under rs->mu */
    resp_conn_t *next;
};

struct resp {
    kv_t *kv;
    nng_stream_listener *listener;
    nng_aio *accept;
    nng_aio *retry;     /* the back-off sleep after a failed accept */
    size_t max_bulk;    /* the longest bulk string accepted */
    size_t max_request; /* the most bytes one request (or MGET reply) spans */
    int port;
    int64_t started_ms; /* monotonic: INFO's uptime */
    _Atomic bool stopping;
    _Atomic uint64_t last_id; /* of the last connection accepted */

    /* Accept callback only (one accept in flight at a time). */
    nng_duration backoff; /* 0, or the last back-off in ms */
    int last_accept_error;
    resp_report_t accept_report;
    resp_report_t refuse_report;

    pthread_mutex_t mu; /* protects the lists and counts below */
    pthread_cond_t cv;
    resp_conn_t *conns; /* live connections */
    resp_conn_t *dead;  /* waiting for the reaper */
    size_t nconns;      /* live + dead: resp_stop waits for 0 */
    size_t nclients;    /* of those, admitted (INFO connected_clients) */
    bool reaper_exit;
    pthread_t reaper;
};

static void conn_step(resp_conn_t *c);

/* ---- replies ---- */

static void reply_raw(resp_conn_t *c, const char *s)
{
    buf_put(&c->out, s, strlen(s));
}

static void reply_fmt(resp_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reply_fmt(resp_conn_t *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    buf_put(&c->out, line,
            (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void reply_bulk(resp_conn_t *c, const void *p, size_t len)
{
    reply_fmt(c, "$%zu\r\n", len);
    buf_put(&c->out, p, len);
    reply_raw(c, "\r\n");
}

static void reply_kv_error(resp_conn_t *c, int rc)
{
    reply_fmt(c, "-ERR kvdist: %s\r\n", kv_strerror(rc));
}

/* A write's failure says whether it may have been applied: "not written"
 * (safe to send again as it is) or "indeterminate" (it may exist on some
 * replicas and become visible). */
static void reply_write_error(resp_conn_t *c, int rc)
{
    if (rc == KV_EQUORUM || rc == KV_ETIMEDOUT) {
        reply_fmt(c,
                  "-ERR kvdist: indeterminate: %s; the write may exist on "
                  "some replicas\r\n",
                  rc == KV_EQUORUM ? "quorum not reached" : "timed out");
    } else if (rc == KV_EUNAVAIL) {
        reply_raw(c, "-ERR kvdist: not written: not enough replicas can be "
                     "reached\r\n");
    } else {
        reply_kv_error(c, rc);
    }
}

/* A command name or argument quoted into an error line: printable bytes
 * only, truncated, so a reply never carries CR/LF from the request. */
static void quote_arg(const resp_arg_t *a, char *out, size_t size)
{
    size_t k = 0;
    for (size_t i = 0; i < a->len && k + 5 < size; i++) {
        unsigned char ch = a->p[i];
        if (isprint(ch) && ch != '\'') {
            out[k++] = (char)ch;
        } else {
            k += (size_t)snprintf(out + k, size - k, "\\x%02x", ch);
        }
    }
    out[k] = '\0';
}

static bool arg_is(const resp_arg_t *a, const char *s)
{
    size_t n = strlen(s);
    return a->len == n && strncasecmp((const char *)a->p, s, n) == 0;
}

/* ---- connection lifecycle ---- */

static void conn_free(resp_conn_t *c)
{
    if (c->rx != NULL) {
        nng_aio_free(c->rx);
    }
    if (c->tx != NULL) {
        nng_aio_free(c->tx);
    }
    if (c->stream != NULL) {
        nng_stream_free(c->stream);
    }
    free(c->in);
    free(c->argv);
    buf_free(&c->out);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void list_remove(resp_conn_t **head, resp_conn_t *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        *head = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void list_push(resp_conn_t **head, resp_conn_t *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head != NULL) {
        (*head)->prev = c;
    }
    *head = c;
}

/* Called once the connection has nothing in progress and never will: from
 * here on only the reaper touches it. */
static void conn_retire(resp_conn_t *c)
{
    resp_t *rs = c->rs;
    pthread_mutex_lock(&rs->mu);
    list_remove(&rs->conns, c);
    list_push(&rs->dead, c);
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

static void *resp_reaper(void *arg)
{
    resp_t *rs = arg;
    pthread_mutex_lock(&rs->mu);
    for (;;) {
        while (rs->dead != NULL) {
            resp_conn_t *c = rs->dead;
            list_remove(&rs->dead, c);
            bool admitted = c->admitted;
            pthread_mutex_unlock(&rs->mu);
            conn_free(c); /* waits for its aio callbacks to return */
            if (admitted) {
                /* The one place a slot is given back: every way a
                 * connection ends leads here once, its socket closed.
                 * Uncounted first, so INFO never shows the connection a
                 * freed slot admits on top of the one that freed it. */
                pthread_mutex_lock(&rs->mu);
                rs->nclients--;
                pthread_mutex_unlock(&rs->mu);
                node_client_release(rs->kv);
            }
            pthread_mutex_lock(&rs->mu);
            rs->nconns--;
            pthread_cond_broadcast(&rs->cv);
        }
        if (rs->reaper_exit) {
            break;
        }
        pthread_cond_wait(&rs->cv, &rs->mu);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

/* Runs the connection's state machine with c->mu held. Returns true when
 * the connection is finished: the caller retires it after unlocking. */
static bool conn_run(resp_conn_t *c)
{
    if (c->running) {
        c->again = true;
        return false;
    }
    c->running = true;
    do {
        c->again = false;
        conn_step(c);
    } while (c->again);
    c->running = false;
    return c->broken && !c->rx_busy && !c->tx_busy && !c->op_busy;
}

static void conn_kick(resp_conn_t *c)
{
    bool done = conn_run(c);
    pthread_mutex_unlock(&c->mu);
    if (done) {
        conn_retire(c);
    }
}

static void conn_rx_cb(void *arg)
{
    resp_conn_t *c = arg;
    int rv = nng_aio_result(c->rx);
    pthread_mutex_lock(&c->mu);
    c->rx_busy = false;
    if (rv == 0) {
        c->in_len += nng_aio_count(c->rx);
    } else if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
        c->broken = true; /* we closed it */
    } else {
        c->eof = true; /* answer what arrived, then close */
    }
    conn_kick(c);
}

static void conn_tx_cb(void *arg)
{
    resp_conn_t *c = arg;
    int rv = nng_aio_result(c->tx);
    pthread_mutex_lock(&c->mu);
    c->tx_busy = false;
    if (rv != 0) {
        c->broken = true;
    } else {
        c->out_sent += nng_aio_count(c->tx);
        if (c->out_sent >= c->out.len) {
            /* Keep a modest buffer for the next replies; give back a big
             * one (a large GET) at once. */
            if (c->out.cap > (1u << 20)) {
                buf_free(&c->out);
            }
            c->out.len = 0;
            c->out_sent = 0;
        }
    }
    conn_kick(c);
}

static void conn_start_send(resp_conn_t *c)
{
    nng_iov iov = {c->out.p + c->out_sent, c->out.len - c->out_sent};
    nng_aio_set_iov(c->tx, 1, &iov);
    c->tx_busy = true;
    nng_stream_send(c->stream, c->tx);
}

static void conn_start_recv(resp_conn_t *c)
{
    if (c->in_off == c->in_len && c->in_cap > (1u << 20)) {
        /* Idle after a large request: give the memory back. */
        free(c->in);
        c->in = NULL;
        c->in_cap = c->in_len = c->in_off = 0;
    }
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_cap - c->in_len < RESP_IN_MIN / 4) {
        /* The parser refuses a request longer than max_request, so the
         * buffer never needs to grow past that plus one read's worth. */
        size_t cap = c->in_cap ? c->in_cap * 2 : RESP_IN_MIN;
        size_t ceil = c->rs->max_request + RESP_IN_MIN;
        if (cap > ceil) {
            cap = ceil;
        }
        uint8_t *p = cap > c->in_cap ? realloc(c->in, cap) : NULL;
        if (p == NULL) {
            if (c->in_cap - c->in_len == 0) {
                reply_raw(c, "-ERR kvdist: out of memory\r\n");
                c->closing = true;
                c->again = true;
                return;
            }
        } else {
            c->in = p;
            c->in_cap = cap;
        }
    }
    nng_iov iov = {c->in + c->in_len, c->in_cap - c->in_len};
    nng_aio_set_iov(c->rx, 1, &iov);
    c->rx_busy = true;
    nng_stream_recv(c->stream, c->rx);
}

/* ---- the parser ---- */

static bool argv_reserve(resp_args_t *a, size_t n)
{
    if (n <= a->cap) {
        return true;
    }
    size_t cap = a->cap ? a->cap : 8;
    while (cap < n) {
        cap *= 2;
    }
    resp_arg_t *p = realloc(a->argv, cap * sizeof(*p));
    if (p == NULL) {
        return false;
    }
    a->argv = p;
    a->cap = cap;
    return true;
}

/* Parses "<digits>\r\n" in [p, end): 1 with *v, 0 if the line is not
 * complete yet, -1 if it is not a number line. */
static int parse_count_line(const uint8_t *p, const uint8_t *end, long long *v,
                            const uint8_t **next)
{
    size_t avail = (size_t)(end - p);
    const uint8_t *nl =
        memchr(p, '\n', avail < RESP_LINE_MAX ? avail : RESP_LINE_MAX);
    if (nl == NULL) {
        return avail >= RESP_LINE_MAX ? -1 : 0;
    }
    if (nl == p || nl[-1] != '\r') {
        return -1;
    }
    const uint8_t *q = p;
    bool neg = false;
    if (q < nl - 1 && *q == '-') {
        neg = true;
        q++;
    }
    if (q == nl - 1) {
        return -1;
    }
    long long n = 0;
    for (; q < nl - 1; q++) {
        if (!isdigit(*q) || n > 100000000000LL) {
            return -1;
        }
        n = n * 10 + (*q - '0');
    }
    *v = neg ? -n : n;
    *next = nl + 1;
    return 1;
}

int resp_parse_request(const uint8_t *start, size_t len, size_t max_bulk,
                       size_t max_request, bool authed, resp_args_t *a,
                       size_t *used, const char **why)
{
    const uint8_t *end = start + len;
    *used = 0;
    a->argc = 0;
    if (len == 0) {
        return 0;
    }
    if (*start != '*') {
        size_t avail = len;
        const uint8_t *nl = memchr(
            start, '\n', avail < RESP_MAX_INLINE ? avail : RESP_MAX_INLINE);
        if (nl == NULL) {
            if (avail >= RESP_MAX_INLINE) {
                *why = "too big inline request";
                return -1;
            }
            return 0;
        }
        const uint8_t *lend = (nl > start && nl[-1] == '\r') ? nl - 1 : nl;
        const uint8_t *q = start;
        while (q < lend) {
            while (q < lend && (*q == ' ' || *q == '\t')) {
                q++;
            }
            if (q == lend) {
                break;
            }
            const uint8_t *w = q;
            while (q < lend && *q != ' ' && *q != '\t') {
                q++;
            }
            if (a->argc == RESP_MAX_ARGS || !argv_reserve(a, a->argc + 1)) {
                *why = "too many arguments in inline request";
                a->argc = 0;
                return -1;
            }
            a->argv[a->argc].p = w;
            a->argv[a->argc].len = (size_t)(q - w);
            a->argc++;
        }
        *used = (size_t)(nl + 1 - start);
        return 1;
    }
    long long n = 0;
    const uint8_t *q = NULL;
    int r = parse_count_line(start + 1, end, &n, &q);
    if (r <= 0) {
        *why = "invalid multibulk length";
        return r;
    }
    if (n > RESP_MAX_ARGS) {
        *why = "invalid multibulk length";
        return -1;
    }
    if (n > RESP_UNAUTH_MAX_ARGS && !authed) {
        *why = "unauthenticated multibulk length";
        return -1;
    }
    if (n <= 0) {
        *used = (size_t)(q - start); /* "*0" and "*-1": nothing to do */
        return 1;
    }
    if (!argv_reserve(a, (size_t)n)) {
        *why = "out of memory";
        return -1;
    }
    for (long long i = 0; i < n; i++) {
        if (q == end) {
            goto incomplete;
        }
        if (*q != '$') {
            *why = "expected '$'";
            return -1;
        }
        long long blen = 0;
        const uint8_t *data = NULL;
        r = parse_count_line(q + 1, end, &blen, &data);
        if (r < 0 || (r > 0 && (blen < 0 || (size_t)blen > max_bulk))) {
            *why = "invalid bulk length";
            return -1;
        }
        if (r > 0 && blen > RESP_UNAUTH_MAX_BULK && !authed) {
            *why = "unauthenticated bulk length";
            return -1;
        }
        if (r == 0) {
            goto incomplete;
        }
        if ((size_t)(end - data) < (size_t)blen + 2) {
            goto incomplete;
        }
        if (data[blen] != '\r' || data[blen + 1] != '\n') {
            *why = "bulk string not terminated by CRLF";
            return -1;
        }
        a->argv[i].p = data;
        a->argv[i].len = (size_t)blen;
        q = data + blen + 2;
        if ((size_t)(q - start) > max_request) {
            *why = "request too large";
            return -1;
        }
    }
    a->argc = (size_t)n;
    *used = (size_t)(q - start);
    return 1;
incomplete:
    if (len > max_request) {
        *why = "request too large";
        return -1;
    }
    return 0;
}

/* Parses one request at c->in + c->in_off into argv (resp_parse_request)
 * and consumes it. */
static int parse_request(resp_conn_t *c, const char **why)
{
    resp_args_t a = {c->argv, 0, c->argv_cap};
    size_t used = 0;
    int r = resp_parse_request(c->in + c->in_off, c->in_len - c->in_off,
                               c->rs->max_bulk, c->rs->max_request, c->authed,
                               &a, &used, why);
    c->argv = a.argv;
    c->argv_cap = a.cap;
    c->argc = a.argc;
    c->in_off += used;
    return r;
}

/* ---- commands ---- */

static void op_begin(resp_conn_t *c, enum resp_op op)
{
    int rc = node_enter(c->rs->kv);
    if (rc != 0) {
        reply_kv_error(c, rc);
        return;
    }
    c->op = op;
    c->op_i = 1;
    c->op_count = 0;
    c->op_deleting = false;
    c->op_busy = true;
    c->op_next = true;
}

static void op_finish(resp_conn_t *c)
{
    node_leave(c->rs->kv);
    c->op = OP_NONE;
    c->op_busy = false;
}

/* A read's value as GET replies it (a bulk string, or nil when absent;
 * node_read counted it). Returns 0 once replied, else the error to reply
 * instead. */
static int reply_read(resp_conn_t *c, int rc, obj_t *result)
{
    kv_t *kv = c->rs->kv;
    if (rc != 0) {
        return rc;
    }
    size_t live = result != NULL ? obj_live(result) : 0;
    if (live == 0) {
        reply_raw(c, "$-1\r\n");
        return 0;
    }
    void *val = NULL;
    size_t vlen = 0;
    rc = node_resolve(kv, result, &val, &vlen);
    if (rc == 0) {
        reply_bulk(c, val, vlen);
    } else if (rc == KV_ENOTFOUND) {
        reply_raw(c, "$-1\r\n");
        rc = 0;
    }
    free(val);
    return rc;
}

/* MGET's reply so far is taken back (nothing was sent since op_mark: see
 * the file comment) and replaced by one error: the command either answers
 * every key or fails as a whole, as a Redis command does. */
static void mget_fail(resp_conn_t *c, const char *why)
{
    c->out.len = c->op_mark;
    reply_fmt(c, "-ERR kvdist: %s (MGET key %zu of %zu)\r\n", why, c->op_i,
              c->argc - 1);
}

static void op_done(void *arg, int rc, int acked, int needed, obj_t *result)
{
    (void)acked;
    (void)needed;
    resp_conn_t *c = arg;
    pthread_mutex_lock(&c->mu);
    size_t live = (rc == 0 && result != NULL) ? obj_live(result) : 0;
    switch (c->op) {
    case OP_GET:
        rc = reply_read(c, rc, result);
        if (rc != 0) {
            reply_kv_error(c, rc);
        }
        op_finish(c);
        break;
    case OP_MGET:
        if (c->op_i == 1) {
            /* Marked here, not in op_begin: a send started after
             * op_begin may have emptied out before the first read. */
            c->op_mark = c->out.len;
            reply_fmt(c, "*%zu\r\n", c->argc - 1);
        }
        rc = reply_read(c, rc, result);
        if (rc != 0) {
            mget_fail(c, kv_strerror(rc));
            op_finish(c);
        } else if (c->out.len - c->op_mark > c->rs->max_request) {
            char why[160];
            snprintf(why, sizeof(why),
                     "the reply would exceed %zu bytes; ask for fewer keys",
                     c->rs->max_request);
            mget_fail(c, why);
            op_finish(c);
        } else if (++c->op_i >= c->argc) {
            op_finish(c);
        } else {
            c->op_next = true;
        }
        break;
    case OP_SET:
        if (rc == 0) {
            reply_raw(c, "+OK\r\n");
        } else {
            reply_write_error(c, rc);
        }
        op_finish(c);
        break;
    case OP_MSET:
        /* Key by key, stopping at the first failure: the keys before it
         * are written, it may be on some replicas, the rest are not. */
        if (rc != 0) {
            size_t done = (c->op_i - 1) / 2;
            reply_fmt(c,
                      "-ERR kvdist: MSET wrote %zu of %zu keys; key %zu "
                      "failed: %s\r\n",
                      done, (c->argc - 1) / 2, done + 1, kv_strerror(rc));
            op_finish(c);
        } else if ((c->op_i += 2) >= c->argc) {
            reply_raw(c, "+OK\r\n");
            op_finish(c);
        } else {
            c->op_next = true;
        }
        break;
    case OP_EXISTS:
    case OP_DEL: {
        bool wrote = c->op_deleting; /* rc is the tombstone write's */
        if (c->op_deleting) {
            c->op_deleting = false;
            c->op_count += rc == 0;
        } else {
            if (rc == 0 && live > 0) {
                if (c->op == OP_DEL) {
                    c->op_deleting = true; /* same key: its tombstone next */
                } else {
                    c->op_count++;
                }
            }
        }
        if (rc != 0 && wrote) {
            reply_write_error(c, rc);
            op_finish(c);
        } else if (rc != 0) {
            reply_kv_error(c, rc);
            op_finish(c);
        } else if (!c->op_deleting && ++c->op_i >= c->argc) {
            reply_fmt(c, ":%lld\r\n", c->op_count);
            op_finish(c);
        } else {
            c->op_next = true;
        }
        break;
    }
    case OP_NONE:
        break;
    }
    conn_kick(c);
}

/* Starts the next step of the operation; c->mu is not held (the callback
 * may run before this returns), and only the operation touches argv. */
static void op_issue(resp_conn_t *c)
{
    kv_t *kv = c->rs->kv;
    const resp_arg_t *k = &c->argv[c->op_i];
    bool set = c->op == OP_SET || c->op == OP_MSET;
    bool write = set || (c->op == OP_DEL && c->op_deleting);
    bool tomb = c->op == OP_DEL;
    const void *val = set ? c->argv[c->op_i + 1].p : NULL;
    size_t vlen = set ? c->argv[c->op_i + 1].len : 0;
    if (write) {
        node_write(kv, k->p, k->len, NULL, val, vlen, tomb, 0, 0, 0,
                   NODE_FROM_FRONTEND, NULL, op_done, c);
    } else {
        node_read(kv, k->p, k->len, 0, 0, NODE_FROM_FRONTEND, NULL, op_done, c);
    }
}

/* Keys are argv[from, to) every `step`th: libkvdist refuses empty and
 * over-long keys (and MSET's values over max_value_size), all checked
 * before the first key is touched. */
static bool check_keys(resp_conn_t *c, size_t from, size_t to, size_t step)
{
    for (size_t i = from; i < to; i += step) {
        if (c->argv[i].len == 0) {
            reply_raw(c, "-ERR kvdist: empty keys are not supported\r\n");
            return false;
        }
        if (c->argv[i].len > c->rs->kv->cfg.max_key_size) {
            reply_kv_error(c, KV_EKEYTOOBIG);
            return false;
        }
        if (step == 2 && c->argv[i + 1].len > c->rs->kv->cfg.max_value_size) {
            reply_kv_error(c, KV_ETOOBIG);
            return false;
        }
    }
    return true;
}

static void cmd_wrong_args(resp_conn_t *c)
{
    char name[64];
    quote_arg(&c->argv[0], name, sizeof(name));
    for (char *p = name; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    reply_fmt(c, "-ERR wrong number of arguments for '%s' command\r\n", name);
}

static void cmd_get(resp_conn_t *c)
{
    if (check_keys(c, 1, 2, 1)) {
        op_begin(c, OP_GET);
    }
}

static void cmd_mget(resp_conn_t *c)
{
    if (check_keys(c, 1, c->argc, 1)) {
        op_begin(c, OP_MGET);
    }
}

static void cmd_set(resp_conn_t *c)
{
    if (c->argc > 3) {
        /* EX/PX need expiry and NX/XX a conditional write: neither
         * exists in libkvdist, so refuse rather than ignore them. */
        reply_raw(c, "-ERR kvdist: SET options (EX, PX, NX, XX, ...) are "
                     "not supported; use SET key value\r\n");
    } else if (check_keys(c, 1, 2, 2)) {
        op_begin(c, OP_SET);
    }
}

static void cmd_mset(resp_conn_t *c)
{
    if (c->argc % 2 == 0) {
        cmd_wrong_args(c);
    } else if (check_keys(c, 1, c->argc, 2)) {
        op_begin(c, OP_MSET);
    }
}

static void cmd_del(resp_conn_t *c)
{
    if (check_keys(c, 1, c->argc, 1)) {
        op_begin(c, OP_DEL);
    }
}

static void cmd_exists(resp_conn_t *c)
{
    if (check_keys(c, 1, c->argc, 1)) {
        op_begin(c, OP_EXISTS);
    }
}

/* RocksDB's estimate of the keys in this node's store: the replicas it
 * holds (tombstones not yet purged included), not the cluster's distinct
 * keys, which no node knows without asking every other. */
static uint64_t node_keys_estimate(kv_t *kv)
{
    uint64_t n = 0;
    if (kv->store != NULL && node_enter(kv) == 0) {
        n = store_property(kv->store, "rocksdb.estimate-num-keys");
        node_leave(kv);
    }
    return n;
}

static void cmd_dbsize(resp_conn_t *c)
{
    reply_fmt(c, ":%" PRIu64 "\r\n", node_keys_estimate(c->rs->kv));
}

static void cmd_ping(resp_conn_t *c)
{
    if (c->argc == 1) {
        reply_raw(c, "+PONG\r\n");
    } else if (c->argc == 2) {
        reply_bulk(c, c->argv[1].p, c->argv[1].len);
    } else {
        cmd_wrong_args(c);
    }
}

static void cmd_echo(resp_conn_t *c)
{
    reply_bulk(c, c->argv[1].p, c->argv[1].len);
}

static void cmd_quit(resp_conn_t *c)
{
    reply_raw(c, "+OK\r\n");
    c->closing = true;
}

static void cmd_select(resp_conn_t *c)
{
    const resp_arg_t *a = &c->argv[1];
    size_t i = a->len > 0 && (a->p[0] == '-' || a->p[0] == '+');
    bool digits = a->len > i && a->len < 20;
    bool zero = true;
    for (; i < a->len; i++) {
        digits &= isdigit(a->p[i]) != 0;
        zero &= a->p[i] == '0';
    }
    if (!digits) {
        reply_raw(c, "-ERR value is not an integer or out of range\r\n");
    } else if (zero) {
        reply_raw(c, "+OK\r\n");
    } else {
        reply_raw(c, "-ERR DB index is out of range (libkvdist has one "
                     "keyspace: database 0)\r\n");
    }
}

/* CLIENT SETNAME and HELLO SETNAME: false after replying the error. */
static bool conn_set_name(resp_conn_t *c, const resp_arg_t *name)
{
    if (name->len >= sizeof(c->name) ||
        memchr(name->p, ' ', name->len) != NULL) {
        reply_raw(c, "-ERR Client names cannot contain spaces, "
                     "newlines or special characters, and are at "
                     "most 127 bytes\r\n");
        return false;
    }
    memcpy(c->name, name->p, name->len);
    c->namelen = name->len;
    return true;
}

static void cmd_client(resp_conn_t *c)
{
    const resp_arg_t *a = c->argv;
    if (arg_is(&a[1], "SETNAME") && c->argc == 3) {
        if (conn_set_name(c, &a[2])) {
            reply_raw(c, "+OK\r\n");
        }
    } else if (arg_is(&a[1], "GETNAME") && c->argc == 2) {
        if (c->namelen == 0) {
            reply_raw(c, "$-1\r\n");
        } else {
            reply_bulk(c, c->name, c->namelen);
        }
    } else if (arg_is(&a[1], "SETINFO") && c->argc == 4) {
        /* Newer clients (redis-py 5, Jedis 5) announce themselves; noted
         * nowhere, accepted so their start-up stays quiet. */
        reply_raw(c, "+OK\r\n");
    } else {
        reply_raw(c, "-ERR kvdist: only CLIENT SETNAME, GETNAME and SETINFO "
                     "are supported\r\n");
    }
}

/* ---- authentication (auth_password; auth.c compares) ---- */

#define RESP_WRONGPASS                                                         \
    "-WRONGPASS invalid username-password pair or user is disabled.\r\n"

/* Redis 6's ACL with only its "default" user: the password of AUTH pw,
 * AUTH default pw and HELLO ... AUTH default pw; any other user name is
 * refused. With no password set, "default" takes any password, as Redis's
 * "nopass" default user does. A failed attempt leaves the connection as it
 * was (authenticated or not), as in Redis. */
static bool conn_login(resp_conn_t *c, const resp_arg_t *user,
                       const resp_arg_t *pw)
{
    bool ok = auth_check(&c->rs->kv->auth, pw->p, pw->len);
    /* Compared after the password, whatever the name: the same time. */
    if (user != NULL &&
        (user->len != 7 || memcmp(user->p, "default", 7) != 0)) {
        ok = false;
    }
    if (ok) {
        c->authed = true;
    }
    return ok;
}

static void cmd_auth(resp_conn_t *c)
{
    if (c->argc > 3) {
        reply_raw(c, "-ERR syntax error\r\n");
    } else if (c->argc == 2 && !c->rs->kv->auth.required) {
        reply_raw(c, "-ERR AUTH <password> called without any password "
                     "configured for the default user. Are you sure your "
                     "configuration is correct?\r\n");
    } else if (conn_login(c, c->argc == 3 ? &c->argv[1] : NULL,
                          &c->argv[c->argc - 1])) {
        reply_raw(c, "+OK\r\n");
    } else {
        reply_raw(c, RESP_WRONGPASS);
    }
}

/* HELLO [protover [AUTH user password] [SETNAME name]], in Redis's order
 * of checks. Only RESP2 is spoken: HELLO 3 gets NOPROTO, which is what
 * clients that try RESP3 first (go-redis, Lettuce) fall back from to
 * AUTH and RESP2. The answer is Redis 7's, as a RESP2 flat array. */
static void cmd_hello(resp_conn_t *c)
{
    const resp_arg_t *a = c->argv;
    size_t i = 1;
    if (c->argc >= 2) {
        long long ver = 0;
        size_t k = a[1].len > 1 && a[1].p[0] == '-'; /* an integer still */
        bool digits = a[1].len > k && a[1].len < 19;
        for (; digits && k < a[1].len; k++) {
            digits = isdigit(a[1].p[k]) != 0;
            ver = ver * 10 + (a[1].p[k] - '0');
        }
        if (!digits) {
            reply_raw(c, "-ERR Protocol version is not an integer or out "
                         "of range\r\n");
            return;
        }
        if (ver != 2) {
            reply_raw(c, "-NOPROTO unsupported protocol version\r\n");
            return;
        }
        i = 2;
    }
    const resp_arg_t *user = NULL, *pw = NULL, *name = NULL;
    for (; i < c->argc; i++) {
        size_t more = c->argc - i - 1;
        if (arg_is(&a[i], "AUTH") && more >= 2) {
            user = &a[i + 1];
            pw = &a[i + 2];
            i += 2;
        } else if (arg_is(&a[i], "SETNAME") && more >= 1) {
            name = &a[i + 1];
            i += 1;
        } else {
            char opt[64];
            quote_arg(&a[i], opt, sizeof(opt));
            reply_fmt(c, "-ERR Syntax error in HELLO option '%s'\r\n", opt);
            return;
        }
    }
    if (!c->authed && pw == NULL) {
        reply_raw(c, "-NOAUTH HELLO must be called with the client already "
                     "authenticated, otherwise the HELLO AUTH <user> <pass> "
                     "option can be used to authenticate the client and "
                     "select the RESP protocol version at the same "
                     "time\r\n");
        return;
    }
    if (pw != NULL && !conn_login(c, user, pw)) {
        reply_raw(c, RESP_WRONGPASS);
        return;
    }
    if (name != NULL && !conn_set_name(c, name)) {
        return;
    }
    /* As INFO's redis_version: the release these commands answer like. */
    reply_fmt(c,
              "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"
              "$5\r\n7.0.0\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:%" PRIu64
              "\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n"
              "$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
              c->id);
}

static void cmd_command(resp_conn_t *c)
{
    /* redis-cli 7 asks for COMMAND DOCS to offer hints; an empty answer
     * means "no hints", which is true. */
    if (c->argc >= 2 && arg_is(&c->argv[1], "COUNT")) {
        reply_raw(c, ":0\r\n");
    } else {
        reply_raw(c, "*0\r\n");
    }
}

static void cmd_config(resp_conn_t *c)
{
    /* redis-benchmark reads these two at start-up. Nothing is saved the
     * Redis way; durability is the node's sync option. */
    const resp_arg_t *a = c->argv;
    if (!arg_is(&a[1], "GET") || c->argc != 3) {
        reply_raw(c, "-ERR kvdist: only CONFIG GET is supported\r\n");
    } else if (arg_is(&a[2], "save")) {
        reply_raw(c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    } else if (arg_is(&a[2], "appendonly")) {
        reply_raw(c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    } else {
        reply_raw(c, "*0\r\n");
    }
}

/* Transactions. MULTI is refused, and so is every command after it until
 * EXEC or DISCARD: a client that sent MULTI expects its commands queued,
 * not run, and treats a failed EXEC as "nothing happened" (redis-py's
 * pipeline() does), so running them would surprise it. EXEC then answers
 * EXECABORT as Redis does for a transaction with an error, which makes
 * redis-py raise the MULTI error itself. */
#define RESP_NO_TX                                                             \
    "libkvdist has no transactions; send the commands without MULTI (a "       \
    "non-transactional pipeline, e.g. redis-py pipeline(transaction=False))"

static void cmd_multi(resp_conn_t *c)
{
    c->in_multi = true;
    reply_raw(c, "-ERR MULTI is not supported: " RESP_NO_TX "\r\n");
}

static void cmd_exec(resp_conn_t *c)
{
    if (c->in_multi) {
        c->in_multi = false;
        reply_raw(c, "-EXECABORT Transaction discarded: MULTI is not "
                     "supported, and no command since it was run\r\n");
    } else {
        reply_raw(c, "-ERR EXEC is not supported: " RESP_NO_TX "\r\n");
    }
}

static void cmd_discard(resp_conn_t *c)
{
    if (c->in_multi) {
        c->in_multi = false;
        reply_raw(c, "+OK\r\n"); /* true: nothing was queued, nothing run */
    } else {
        reply_raw(c, "-ERR DISCARD is not supported: " RESP_NO_TX "\r\n");
    }
}

static void cmd_watch(resp_conn_t *c)
{
    reply_raw(c, "-ERR WATCH is not supported: libkvdist has no "
                 "transactions (concurrent writes become siblings, resolved "
                 "on read)\r\n");
}

static void cmd_unwatch(resp_conn_t *c)
{
    reply_raw(c, "+OK\r\n"); /* nothing can be watched, so nothing is */
}

static void cmd_info(resp_conn_t *c);

/* The command table, as Redis's: arity is the exact argc, or at least
 * -arity when negative; in_multi marks what still runs after a refused
 * MULTI; no_auth what runs before the password is given (Redis's
 * no-auth flag). Argument counts are bounded by RESP_MAX_ARGS (the
 * parser), so MGET/DEL/EXISTS take at most 1023 keys and MSET 511
 * pairs. */
typedef struct resp_cmd {
    const char *name;
    void (*fn)(resp_conn_t *c);
    int arity;
    bool in_multi;
    bool no_auth;
} resp_cmd_t;

static const resp_cmd_t resp_cmds[] = {
    {"GET", cmd_get, 2, false, false},
    {"SET", cmd_set, -3, false, false},
    {"MGET", cmd_mget, -2, false, false},
    {"MSET", cmd_mset, -3, false, false},
    {"DEL", cmd_del, -2, false, false},
    {"UNLINK", cmd_del, -2, false, false},
    {"EXISTS", cmd_exists, -2, false, false},
    {"DBSIZE", cmd_dbsize, 1, false, false},
    {"PING", cmd_ping, -1, false, false},
    {"ECHO", cmd_echo, 2, false, false},
    {"INFO", cmd_info, -1, false, false},
    {"SELECT", cmd_select, 2, false, false},
    {"QUIT", cmd_quit, -1, true, true},
    {"AUTH", cmd_auth, -2, false, true},
    {"HELLO", cmd_hello, -1, false, true},
    {"CLIENT", cmd_client, -2, false, false},
    {"COMMAND", cmd_command, -1, false, false},
    {"CONFIG", cmd_config, -2, false, false},
    {"MULTI", cmd_multi, 1, true, false},
    {"EXEC", cmd_exec, 1, true, false},
    {"DISCARD", cmd_discard, 1, true, false},
    {"WATCH", cmd_watch, -2, false, false},
    {"UNWATCH", cmd_unwatch, 1, false, false},
};

static void cmd_execute(resp_conn_t *c)
{
    if (c->argc == 0) {
        return;
    }
    metric_inc(&c->rs->kv->metrics, M_RESP_COMMANDS);
    const resp_cmd_t *cmd = NULL;
    for (size_t i = 0; i < sizeof(resp_cmds) / sizeof(resp_cmds[0]); i++) {
        if (arg_is(&c->argv[0], resp_cmds[i].name)) {
            cmd = &resp_cmds[i];
            break;
        }
    }
    if (!c->authed && (cmd == NULL || !cmd->no_auth)) {
        /* The one check, before the name or the arity is looked at: a
         * client without the password learns nothing of the commands. */
        reply_raw(c, "-NOAUTH Authentication required.\r\n");
    } else if (cmd == NULL) {
        char name[64];
        quote_arg(&c->argv[0], name, sizeof(name));
        reply_fmt(c, "-ERR unknown command '%s'\r\n", name);
    } else if (c->in_multi && !cmd->in_multi) {
        reply_raw(c, "-ERR kvdist: not run: this connection sent MULTI, "
                     "which is not supported; send DISCARD (or EXEC), then "
                     "the commands without MULTI\r\n");
    } else if (cmd->arity >= 0 ? c->argc != (size_t)cmd->arity
                               : c->argc < (size_t)-cmd->arity) {
        cmd_wrong_args(c);
    } else {
        cmd->fn(c);
    }
}

/* ---- INFO ---- */

static int64_t resp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void info_line(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void info_line(buf_t *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0) {
        buf_put(b, line,
                (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
        buf_put(b, "\r\n", 2);
    }
}

/* Redis's used_memory_human style: 1.23M. */
static void info_human(char *out, size_t size, uint64_t n)
{
    static const char units[] = "BKMGTP";
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) - 1) {
        v /= 1024;
        u++;
    }
    if (u == 0) {
        snprintf(out, size, "%" PRIu64 "B", n);
    } else {
        snprintf(out, size, "%.2f%c", v, units[u]);
    }
}

/* The process's resident set: libkvdist has no allocator of its own to
 * ask, and RocksDB's memory (memtables, block cache) is most of it. */
static uint64_t info_rss(void)
{
    uint64_t rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        unsigned long long size = 0;
        unsigned long long res = 0;
        if (fscanf(f, "%llu %llu", &size, &res) == 2) {
            rss = (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
        }
        fclose(f);
    }
    if (rss == 0) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) {
            rss = (uint64_t)ru.ru_maxrss * 1024;
        }
    }
    return rss;
}

static void info_server(resp_conn_t *c, buf_t *b)
{
    resp_t *rs = c->rs;
    kv_t *kv = rs->kv;
    struct utsname u;
    if (uname(&u) != 0) {
        memset(&u, 0, sizeof(u));
    }
    int64_t up = (resp_now_ms() - rs->started_ms) / 1000;
    /* redis_version: the Redis release whose commands these answer like,
     * for clients that check it; kvdist_version says what really runs. */
    info_line(b, "redis_version:7.0.0");
    info_line(b, "kvdist_version:%s", kv_version());
    info_line(b, "redis_mode:standalone");
    info_line(b, "os:%s %s %s", u.sysname, u.release, u.machine);
    info_line(b, "arch_bits:%zu", sizeof(void *) * 8);
    info_line(b, "process_id:%ld", (long)getpid());
    info_line(b, "tcp_port:%d", rs->port);
    info_line(b, "uptime_in_seconds:%" PRId64, up);
    info_line(b, "uptime_in_days:%" PRId64, up / 86400);
    info_line(b, "kvdist_node_id:%s", kv->cfg.node_id);
    info_line(b, "kvdist_n:%d", kv->cfg.n);
    info_line(b, "kvdist_r:%d", kv->cfg.r);
    info_line(b, "kvdist_w:%d", kv->cfg.w);
}

static void info_clients(resp_conn_t *c, buf_t *b)
{
    resp_t *rs = c->rs;
    pthread_mutex_lock(&rs->mu);
    size_t clients = rs->nclients;
    pthread_mutex_unlock(&rs->mu);
    info_line(b, "connected_clients:%zu", clients);
    info_line(b, "maxclients:%u", rs->kv->max_clients);
    info_line(b, "blocked_clients:0");
    /* max_clients counts the HTTP API's connections too. */
    info_line(b, "kvdist_clients_http_and_resp:%u",
              atomic_load_explicit(&rs->kv->clients, memory_order_relaxed));
}

static void info_memory(resp_conn_t *c, buf_t *b)
{
    kv_t *kv = c->rs->kv;
    uint64_t rss = info_rss();
    uint64_t peak = 0;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        peak = (uint64_t)ru.ru_maxrss * 1024;
    }
    char h[32];
    char hp[32];
    info_human(h, sizeof(h), rss);
    info_human(hp, sizeof(hp), peak);
    info_line(b, "used_memory:%" PRIu64, rss);
    info_line(b, "used_memory_human:%s", h);
    info_line(b, "used_memory_rss:%" PRIu64, rss);
    info_line(b, "used_memory_peak:%" PRIu64, peak);
    info_line(b, "used_memory_peak_human:%s", hp);
    info_line(b, "maxmemory:0");
    info_line(b, "maxmemory_policy:noeviction");
    if (kv->store != NULL && node_enter(kv) == 0) {
        info_line(b, "kvdist_store_memtable_bytes:%" PRIu64,
                  store_property(kv->store, "rocksdb.cur-size-all-mem-tables"));
        info_line(b, "kvdist_store_cache_bytes:%" PRIu64,
                  store_property(kv->store, "rocksdb.block-cache-usage"));
        node_leave(kv);
    }
}

static void info_stats(resp_conn_t *c, buf_t *b)
{
    kv_t *kv = c->rs->kv;
    uint64_t v[M__COUNT];
    for (int i = 0; i < M__COUNT; i++) {
        v[i] = atomic_load_explicit(&kv->metrics.v[i], memory_order_relaxed);
    }
    info_line(b, "total_connections_received:%" PRIu64, v[M_RESP_CONNECTIONS]);
    info_line(b, "total_commands_processed:%" PRIu64, v[M_RESP_COMMANDS]);
    info_line(b, "rejected_connections:%" PRIu64, v[M_RESP_REJECTED]);
    /* Two relaxed loads: a get counted between them must not wrap. */
    info_line(b, "keyspace_hits:%" PRIu64,
              v[M_GETS] > v[M_NOT_FOUND] ? v[M_GETS] - v[M_NOT_FOUND] : 0);
    info_line(b, "keyspace_misses:%" PRIu64, v[M_NOT_FOUND]);
    /* The node's counters (every front end's), Prometheus lines turned
     * into Redis's name:value. */
    buf_t m;
    buf_init(&m);
    metrics_render(&kv->metrics, &m);
    size_t i = 0;
    while (i < m.len) {
        const uint8_t *nl = memchr(m.p + i, '\n', m.len - i);
        size_t e = nl ? (size_t)(nl - m.p) : m.len;
        if (m.p[i] != '#') {
            const uint8_t *sp = memchr(m.p + i, ' ', e - i);
            if (sp != NULL) {
                buf_put(b, m.p + i, (size_t)(sp - (m.p + i)));
                buf_put_u8(b, ':');
                buf_put(b, sp + 1, e - (size_t)(sp + 1 - m.p));
                buf_put(b, "\r\n", 2);
            }
        }
        i = e + 1;
    }
    b->oom |= m.oom;
    buf_free(&m);
}

static void info_replication(resp_conn_t *c, buf_t *b)
{
    (void)c;
    /* Every node takes writes: each is a "master" of no replica in
     * Redis's sense (replication is the ring's, see kvdist(7)). */
    info_line(b, "role:master");
    info_line(b, "connected_slaves:0");
}

static void info_cpu(resp_conn_t *c, buf_t *b)
{
    (void)c;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) {
        memset(&ru, 0, sizeof(ru));
    }
    info_line(b, "used_cpu_sys:%ld.%06ld", (long)ru.ru_stime.tv_sec,
              (long)ru.ru_stime.tv_usec);
    info_line(b, "used_cpu_user:%ld.%06ld", (long)ru.ru_utime.tv_sec,
              (long)ru.ru_utime.tv_usec);
}

static void info_keyspace(resp_conn_t *c, buf_t *b)
{
    uint64_t keys = node_keys_estimate(c->rs->kv);
    if (keys > 0) { /* Redis lists only databases that hold keys */
        info_line(b, "db0:keys=%" PRIu64 ",expires=0,avg_ttl=0", keys);
    }
}

/* INFO's sections in Redis's order; "default", "all" and "everything"
 * are every one of them (libkvdist has no modules or per-command stats,
 * Redis's non-default sections). */
static const struct {
    const char *name;
    const char *title;
    void (*fn)(resp_conn_t *c, buf_t *b);
} info_sections[] = {
    {"server", "Server", info_server},
    {"clients", "Clients", info_clients},
    {"memory", "Memory", info_memory},
    {"stats", "Stats", info_stats},
    {"replication", "Replication", info_replication},
    {"cpu", "CPU", info_cpu},
    {"keyspace", "Keyspace", info_keyspace},
};
#define INFO_NSECTIONS (sizeof(info_sections) / sizeof(info_sections[0]))

/* INFO [section ...]: the sections named (case-insensitive, as Redis 7
 * takes several), every one for none or all/default/everything; a name
 * that matches none adds nothing, so an unknown section alone gives an
 * empty bulk string, as Redis does. */
static void cmd_info(resp_conn_t *c)
{
    bool want[INFO_NSECTIONS] = {false};
    for (size_t i = 1; i < c->argc; i++) {
        const resp_arg_t *a = &c->argv[i];
        bool every = arg_is(a, "all") || arg_is(a, "default") ||
                     arg_is(a, "everything");
        for (size_t s = 0; s < INFO_NSECTIONS; s++) {
            want[s] |= every || arg_is(a, info_sections[s].name);
        }
    }
    buf_t b;
    buf_init(&b);
    for (size_t s = 0; s < INFO_NSECTIONS; s++) {
        if (c->argc == 1 || want[s]) {
            if (b.len > 0) {
                buf_put(&b, "\r\n", 2); /* a blank line between sections */
            }
            info_line(&b, "# %s", info_sections[s].title);
            info_sections[s].fn(c, &b);
        }
    }
    if (b.oom) {
        reply_kv_error(c, KV_ENOMEM);
    } else {
        reply_bulk(c, b.p, b.len);
    }
    buf_free(&b);
}

/* One pass of the state machine (c->mu held): issue the operation's next
 * step, or execute buffered requests until one needs to wait, then send
 * what is queued, or receive more. */
static void conn_step(resp_conn_t *c)
{
    for (;;) {
        if (c->rx_busy || c->tx_busy) {
            return;
        }
        if (c->op_busy) {
            if (!c->op_next) {
                return;
            }
            c->op_next = false;
            pthread_mutex_unlock(&c->mu);
            op_issue(c);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (atomic_load(&c->rs->stopping)) {
            c->broken = true;
        }
        if (c->broken) {
            nng_stream_close(c->stream);
            return;
        }
        if (!c->closing) {
            const char *why = NULL;
            int r = parse_request(c, &why);
            if (r > 0) {
                cmd_execute(c);
                if (c->out.oom) {
                    c->broken = true; /* a reply was lost: cannot go on */
                    continue;
                }
                if (c->out.len - c->out_sent >= RESP_OUT_FLUSH) {
                    conn_start_send(c);
                    return;
                }
                continue;
            }
            if (r < 0) {
                reply_fmt(c, "-ERR Protocol error: %s\r\n", why);
                c->closing = true;
            } else if (c->eof) {
                c->closing = true;
            }
        }
        if (c->out.len > c->out_sent) {
            conn_start_send(c);
            return;
        }
        if (c->closing || c->eof) {
            c->broken = true;
            continue;
        }
        conn_start_recv(c);
        return;
    }
}

/* ---- listener ---- */

/* A failure of the kind r reports: true when it is to be logged now (the
 * first of an episode, or the first after RESP_REPORT_MS); *more is then
 * how many went unlogged before it and *secs over how long. */
static bool report_failure(resp_report_t *r, int64_t now, uint64_t *more,
                           double *secs)
{
    r->active = true;
    if (r->last_ms >= 0 && now - r->last_ms < RESP_REPORT_MS) {
        if (r->unlogged++ == 0) {
            r->since_ms = now;
        }
        return false;
    }
    *more = r->unlogged;
    *secs = r->unlogged > 0 ? (double)(now - r->since_ms) / 1000.0 : 0;
    r->unlogged = 0;
    r->last_ms = now;
    r->owed = true;
    return true;
}

/* A success after failures: true when the episode's end is to be logged,
 * which is once per logged failure line, so a flapping condition costs at
 * most two lines per RESP_REPORT_MS. */
static bool report_success(resp_report_t *r, int64_t now, uint64_t *more,
                           double *secs)
{
    if (!r->active) {
        return false;
    }
    r->active = false;
    if (!r->owed) {
        return false; /* its failures are counted in the next line */
    }
    r->owed = false;
    *more = r->unlogged;
    *secs = r->unlogged > 0 ? (double)(now - r->since_ms) / 1000.0 : 0;
    r->unlogged = 0;
    r->last_ms = now;
    return true;
}

static void report_init(resp_report_t *r)
{
    memset(r, 0, sizeof(*r));
    r->last_ms = -1;
}

static void resp_accept_next(resp_t *rs)
{
    if (!atomic_load(&rs->stopping)) {
        nng_stream_listener_accept(rs->listener, rs->accept);
    }
}

static void resp_retry_cb(void *arg)
{
    resp_t *rs = arg;
    if (nng_aio_result(rs->retry) == 0) {
        resp_accept_next(rs);
    }
}

/* An accept failed (out of files, out of memory, ...): try again after a
 * back-off instead of at once, logging the episode sparingly. */
static void resp_accept_failed(resp_t *rs, int rv)
{
    kv_t *kv = rs->kv;
    metric_inc(&kv->metrics, M_RESP_ACCEPT_ERRORS);
    rs->backoff = rs->backoff == 0 ? RESP_BACKOFF_MIN
                  : rs->backoff * 2 > RESP_BACKOFF_MAX ? RESP_BACKOFF_MAX
                                                       : rs->backoff * 2;
    rs->last_accept_error = rv;
    uint64_t more = 0;
    double secs = 0;
    if (report_failure(&rs->accept_report, resp_now_ms(), &more, &secs)) {
        if (more == 0) {
            KV_LOG(&kv->log, KV_LOG_WARN,
                   "resp: accept: %s (retrying after %d ms, backing off to "
                   "%d ms)",
                   nng_strerror(rv), (int)rs->backoff, RESP_BACKOFF_MAX);
        } else {
            KV_LOG(&kv->log, KV_LOG_WARN,
                   "resp: accept: %s (%" PRIu64 " more in the last %.1fs)",
                   nng_strerror(rv), more, secs);
        }
    }
    nng_sleep_aio(rs->backoff, rs->retry);
}

/* The one path of a new connection: admitted (a max_clients slot), or
 * refused with Redis's answer, sent with a deadline, then closed. Either
 * way it is a resp_conn_t on rs->conns, so resp_stop sees it. */
static void resp_accepted(resp_t *rs, nng_stream *s)
{
    kv_t *kv = rs->kv;
    int64_t now = resp_now_ms();
    uint64_t more = 0;
    double secs = 0;
    if (report_success(&rs->accept_report, now, &more, &secs)) {
        KV_LOG(&kv->log, KV_LOG_NOTICE,
               "resp: accept: working again (%" PRIu64
               " more failures, the last '%s', in %.1fs)",
               more, nng_strerror(rs->last_accept_error), secs);
    }
    rs->backoff = 0;

    bool admitted = node_client_admit(kv);
    resp_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || nng_aio_alloc(&c->rx, conn_rx_cb, c) != 0 ||
        nng_aio_alloc(&c->tx, conn_tx_cb, c) != 0) {
        KV_LOG(&kv->log, KV_LOG_WARN, "resp: out of memory for a client");
        if (c != NULL) {
            nng_aio_free(c->rx);
            free(c);
        }
        nng_stream_free(s);
        if (admitted) {
            node_client_release(kv);
        }
        return;
    }
    c->rs = rs;
    c->stream = s;
    c->admitted = admitted;
    c->authed = !kv->auth.required;
    c->id = atomic_fetch_add(&rs->last_id, 1) + 1;
    pthread_mutex_init(&c->mu, NULL);
    buf_init(&c->out);
    if (admitted) {
        metric_inc(&kv->metrics, M_RESP_CONNECTIONS);
        if (report_success(&rs->refuse_report, now, &more, &secs)) {
            KV_LOG(&kv->log, KV_LOG_NOTICE,
                   "resp: admitting new clients again (%" PRIu64
                   " more refused in %.1fs)",
                   more, secs);
        }
    } else {
        metric_inc(&kv->metrics, M_RESP_REJECTED);
        if (report_failure(&rs->refuse_report, now, &more, &secs)) {
            if (more == 0) {
                KV_LOG(&kv->log, KV_LOG_WARN,
                       "resp: max_clients %u reached (HTTP and RESP "
                       "connections): refusing new clients",
                       kv->max_clients);
            } else {
                KV_LOG(&kv->log, KV_LOG_WARN,
                       "resp: max_clients %u reached: refusing new clients "
                       "(%" PRIu64 " more refused in the last %.1fs)",
                       kv->max_clients, more, secs);
            }
        }
        /* Redis's answer, then close: never read, and a client that does
         * not read it cannot hold the slot-less connection for long. */
        reply_raw(c, "-ERR max number of clients reached\r\n");
        c->closing = true;
        nng_aio_set_timeout(c->tx, RESP_REFUSE_SEND_MS);
    }
    pthread_mutex_lock(&rs->mu);
    list_push(&rs->conns, c);
    rs->nconns++;
    rs->nclients += admitted;
    pthread_mutex_unlock(&rs->mu);
    pthread_mutex_lock(&c->mu);
    conn_kick(c);
}

static void resp_accept_cb(void *arg)
{
    resp_t *rs = arg;
    int rv = nng_aio_result(rs->accept);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED ||
        atomic_load(&rs->stopping)) {
        if (rv == 0) {
            nng_stream_free(nng_aio_get_output(rs->accept, 0));
        }
        return;
    }
    if (rv != 0) {
        resp_accept_failed(rs, rv);
        return;
    }
    resp_accepted(rs, nng_aio_get_output(rs->accept, 0));
    resp_accept_next(rs);
}

static int resp_code(int rv)
{
    switch (rv) {
    case NNG_EADDRINUSE:
        return KV_EADDRINUSE;
    case NNG_ENOMEM:
        return KV_ENOMEM;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
        return KV_EINVAL;
    default:
        return KV_EIO;
    }
}

int resp_start(kv_t *kv)
{
    resp_t *rs = calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return KV_ENOMEM;
    }
    rs->kv = kv;
    size_t kmax = kv->cfg.max_key_size;
    size_t vmax = kv->cfg.max_value_size;
    rs->max_bulk = kmax > vmax ? kmax : vmax;
    rs->max_request = vmax + 2 * kmax + (64u << 10);
    rs->started_ms = resp_now_ms();
    report_init(&rs->accept_report);
    report_init(&rs->refuse_report);
    atomic_init(&rs->stopping, false);
    pthread_mutex_init(&rs->mu, NULL);
    pthread_cond_init(&rs->cv, NULL);

    char url[300];
    snprintf(url, sizeof(url), "tcp://%s", kv->cfg.resp);
    int rv = nng_stream_listener_alloc(&rs->listener, url);
    if (rv == 0) {
        rv = nng_stream_listener_listen(rs->listener);
    }
    if (rv == 0) {
        rv = nng_aio_alloc(&rs->accept, resp_accept_cb, rs);
    }
    if (rv == 0) {
        rv = nng_aio_alloc(&rs->retry, resp_retry_cb, rs);
    }
    if (rv == 0 && pthread_create(&rs->reaper, NULL, resp_reaper, rs) != 0) {
        rv = NNG_ENOMEM;
    }
    if (rv != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "resp: cannot listen on %s: %s",
               kv->cfg.resp, nng_strerror(rv));
        if (rs->accept != NULL) {
            nng_aio_free(rs->accept);
        }
        if (rs->retry != NULL) {
            nng_aio_free(rs->retry);
        }
        if (rs->listener != NULL) {
            nng_stream_listener_free(rs->listener);
        }
        pthread_mutex_destroy(&rs->mu);
        pthread_cond_destroy(&rs->cv);
        free(rs);
        return resp_code(rv);
    }
    nng_stream_listener_get_int(rs->listener, NNG_OPT_TCP_BOUND_PORT,
                                &rs->port);
    KV_LOG(&kv->log, KV_LOG_NOTICE, "resp: serving RESP2 on %s (port %d)",
           kv->cfg.resp, rs->port);
    pthread_mutex_lock(&kv->life_mu);
    kv->resp = rs;
    pthread_mutex_unlock(&kv->life_mu);
    nng_stream_listener_accept(rs->listener, rs->accept);
    return 0;
}

void resp_stop(kv_t *kv)
{
    pthread_mutex_lock(&kv->life_mu);
    resp_t *rs = kv->resp;
    kv->resp = NULL;
    pthread_mutex_unlock(&kv->life_mu);
    if (rs == NULL) {
        return;
    }
    atomic_store(&rs->stopping, true);
    nng_stream_listener_close(rs->listener);
    /* Both stay stopped (NNG refuses to start a stopped aio), so neither
     * callback can start the other again after this. */
    nng_aio_stop(rs->accept);
    nng_aio_stop(rs->retry);
    pthread_mutex_lock(&rs->mu);
    /* Closing fails the receive each idle connection has pending; one
     * with an operation in flight finishes it first (it has a deadline). */
    for (resp_conn_t *c = rs->conns; c != NULL; c = c->next) {
        nng_stream_close(c->stream);
    }
    while (rs->nconns > 0) {
        pthread_cond_wait(&rs->cv, &rs->mu);
    }
    rs->reaper_exit = true;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
    pthread_join(rs->reaper, NULL);
    nng_aio_free(rs->accept);
    nng_aio_free(rs->retry);
    nng_stream_listener_free(rs->listener);
    pthread_mutex_destroy(&rs->mu);
    pthread_cond_destroy(&rs->cv);
    free(rs);
}
