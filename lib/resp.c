/*
 * resp.c - the Redis-protocol (RESP2) front end of a peer node: a TCP
 * listener (option `resp`, HOST:PORT) that speaks enough of Redis for
 * redis-cli, redis-benchmark and ordinary client libraries: GET, SET, DEL,
 * EXISTS, PING, ECHO, INFO, QUIT, CLIENT SETNAME/GETNAME, and the start-up
 * probes those tools send (COMMAND, CONFIG GET, SELECT 0).
 *
 * Owns the listener, every connection and their buffers. The transport is
 * NNG's byte-stream API, so NNG stays the one network library and its
 * threads drive everything: nothing here blocks waiting for a quorum. A
 * GET or SET on a node with peers starts an asynchronous quorum operation
 * (coord_read/coord_write) whose callback writes the reply; a one-node
 * store answers from its local replica on the spot.
 *
 * Invariants:
 * - A connection does one thing at a time: receive, send, or one
 *   operation. Requests are parsed from the input buffer and executed in
 *   order, their replies appended in order, so pipelined requests are
 *   answered in order. (One operation in flight per connection: throughput
 *   comes from many connections, as with redis-benchmark -c.)
 * - The parsed arguments point into the input buffer, which is only
 *   compacted or grown before a receive, i.e. when no operation is using
 *   them.
 * - Every length read from the network is bounded before use: arrays by
 *   RESP_MAX_ARGS, bulk strings by the node's key and value limits, inline
 *   commands by RESP_MAX_INLINE, a whole request by max_request. Malformed
 *   input gets "-ERR Protocol error: ..." and the connection is closed
 *   after that reply; the node keeps serving everyone else.
 * - A connection whose last activity ended is handed to the reaper thread,
 *   which frees it: NNG forbids freeing an aio from its own callback.
 */
#include "resp.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>

#include "coord.h"
#include "replica.h"

#define RESP_MAX_ARGS 1024
#define RESP_MAX_INLINE (64u << 10) /* Redis's own inline limit */
#define RESP_LINE_MAX 32            /* "*<n>\r\n" and "$<n>\r\n" headers */
#define RESP_OUT_FLUSH (64u << 10)  /* send once this much reply is queued */
#define RESP_IN_MIN (16u << 10)     /* first input buffer */

typedef struct resp_arg {
    const uint8_t *p;
    size_t len;
} resp_arg_t;

enum resp_op { OP_NONE, OP_GET, OP_SET, OP_DEL, OP_EXISTS };

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

    char name[128]; /* CLIENT SETNAME */
    size_t namelen;

    enum resp_op op; /* the operation in progress */
    size_t op_i;     /* its current key: argv[op_i] */
    long long op_count;
    bool op_deleting; /* DEL: the key was found, its tombstone is going */

    resp_conn_t *prev; /* rs->conns or rs->dead, under rs->mu */
    resp_conn_t *next;
};

struct resp {
    kv_t *kv;
    nng_stream_listener *listener;
    nng_aio *accept;
    size_t max_bulk;    /* the longest bulk string accepted */
    size_t max_request; /* the most bytes one request may span */
    int port;
    _Atomic bool stopping;

    pthread_mutex_t mu; /* protects the lists and counts below */
    pthread_cond_t cv;
    resp_conn_t *conns; /* live connections */
    resp_conn_t *dead;  /* waiting for the reaper */
    size_t nconns;      /* live + dead: resp_stop waits for 0 */
    uint64_t accepted;
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
            pthread_mutex_unlock(&rs->mu);
            conn_free(c); /* waits for its aio callbacks to return */
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

static bool argv_reserve(resp_conn_t *c, size_t n)
{
    if (n <= c->argv_cap) {
        return true;
    }
    size_t cap = c->argv_cap ? c->argv_cap : 8;
    while (cap < n) {
        cap *= 2;
    }
    resp_arg_t *p = realloc(c->argv, cap * sizeof(*p));
    if (p == NULL) {
        return false;
    }
    c->argv = p;
    c->argv_cap = cap;
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

/* Parses one request at c->in + c->in_off into argv. Returns 1 (complete:
 * consumed, argc set; argc 0 is an empty request to skip), 0 (incomplete),
 * -1 (malformed: *why says how). */
static int parse_request(resp_conn_t *c, const char **why)
{
    const uint8_t *start = c->in + c->in_off;
    const uint8_t *end = c->in + c->in_len;
    if (start == end) {
        return 0;
    }
    c->argc = 0;
    if (*start != '*') {
        size_t avail = (size_t)(end - start);
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
            if (c->argc == RESP_MAX_ARGS || !argv_reserve(c, c->argc + 1)) {
                *why = "too many arguments in inline request";
                return -1;
            }
            c->argv[c->argc].p = w;
            c->argv[c->argc].len = (size_t)(q - w);
            c->argc++;
        }
        c->in_off = (size_t)(nl + 1 - c->in);
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
    if (n <= 0) {
        c->in_off = (size_t)(q - c->in); /* "*0" and "*-1": nothing to do */
        return 1;
    }
    if (!argv_reserve(c, (size_t)n)) {
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
        long long len = 0;
        const uint8_t *data = NULL;
        r = parse_count_line(q + 1, end, &len, &data);
        if (r < 0 || (r > 0 && (len < 0 || (size_t)len > c->rs->max_bulk))) {
            *why = "invalid bulk length";
            return -1;
        }
        if (r == 0) {
            goto incomplete;
        }
        if ((size_t)(end - data) < (size_t)len + 2) {
            goto incomplete;
        }
        if (data[len] != '\r' || data[len + 1] != '\n') {
            *why = "bulk string not terminated by CRLF";
            return -1;
        }
        c->argv[i].p = data;
        c->argv[i].len = (size_t)len;
        q = data + len + 2;
        if ((size_t)(q - start) > c->rs->max_request) {
            *why = "request too large";
            return -1;
        }
    }
    c->argc = (size_t)n;
    c->in_off = (size_t)(q - c->in);
    return 1;
incomplete:
    if ((size_t)(end - start) > c->rs->max_request) {
        *why = "request too large";
        return -1;
    }
    c->argc = 0;
    return 0;
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

static void op_done(void *arg, int rc, int acked, int needed, obj_t *result)
{
    (void)acked;
    (void)needed;
    resp_conn_t *c = arg;
    kv_t *kv = c->rs->kv;
    pthread_mutex_lock(&c->mu);
    size_t live = (rc == 0 && result != NULL) ? obj_live(result) : 0;
    switch (c->op) {
    case OP_GET:
        if (rc != 0) {
            metric_inc(&kv->metrics, M_GET_ERRORS);
            reply_kv_error(c, rc);
        } else {
            metric_inc(&kv->metrics, M_GETS);
            void *val = NULL;
            size_t vlen = 0;
            rc =
                live > 0 ? node_resolve(kv, result, &val, &vlen) : KV_ENOTFOUND;
            if (live == 0) {
                metric_inc(&kv->metrics, M_NOT_FOUND);
            } else if (live > 1) {
                metric_inc(&kv->metrics, M_SIBLING_READS);
            }
            if (rc == 0) {
                reply_bulk(c, val, vlen);
            } else if (rc == KV_ENOTFOUND) {
                reply_raw(c, "$-1\r\n");
            } else {
                reply_kv_error(c, rc);
            }
            free(val);
        }
        op_finish(c);
        break;
    case OP_SET:
        metric_inc(&kv->metrics, rc == 0 ? M_PUTS : M_PUT_ERRORS);
        if (rc == 0) {
            reply_raw(c, "+OK\r\n");
        } else {
            reply_kv_error(c, rc);
        }
        op_finish(c);
        break;
    case OP_EXISTS:
    case OP_DEL:
        if (c->op_deleting) {
            metric_inc(&kv->metrics, rc == 0 ? M_DELETES : M_DELETE_ERRORS);
            c->op_deleting = false;
            c->op_count += rc == 0;
        } else {
            metric_inc(&kv->metrics, rc == 0 ? M_GETS : M_GET_ERRORS);
            if (rc == 0 && live > 0) {
                if (c->op == OP_DEL) {
                    c->op_deleting = true; /* same key: its tombstone next */
                } else {
                    c->op_count++;
                }
            }
        }
        if (rc != 0) {
            reply_kv_error(c, rc);
            op_finish(c);
        } else if (!c->op_deleting && ++c->op_i >= c->argc) {
            reply_fmt(c, ":%lld\r\n", c->op_count);
            op_finish(c);
        } else {
            c->op_next = true;
        }
        break;
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
    bool write = c->op == OP_SET || (c->op == OP_DEL && c->op_deleting);
    bool tomb = c->op == OP_DEL;
    const void *val = c->op == OP_SET ? c->argv[2].p : NULL;
    size_t vlen = c->op == OP_SET ? c->argv[2].len : 0;
    if (write && kv->rpc == NULL) {
        int rc = replica_write(kv, k->p, k->len, NULL, val, vlen, tomb, NULL);
        op_done(c, rc, rc == 0, 1, NULL);
    } else if (write) {
        coord_write(kv, k->p, k->len, NULL, val, vlen, tomb, 0, 0, op_done, c);
    } else if (kv->rpc == NULL) {
        obj_t o;
        obj_init(&o);
        int rc = replica_read(kv, k->p, k->len, &o);
        op_done(c, rc, rc == 0, 1, &o);
        obj_free(&o);
    } else {
        coord_read(kv, k->p, k->len, 0, 0, op_done, c);
    }
}

/* Keys are argv[from, to): libkvdist refuses empty and over-long keys. */
static bool check_keys(resp_conn_t *c, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (c->argv[i].len == 0) {
            reply_raw(c, "-ERR kvdist: empty keys are not supported\r\n");
            return false;
        }
        if (c->argv[i].len > c->rs->kv->cfg.max_key_size) {
            reply_kv_error(c, KV_EKEYTOOBIG);
            return false;
        }
    }
    return true;
}

static void cmd_info(resp_conn_t *c)
{
    resp_t *rs = c->rs;
    kv_t *kv = rs->kv;
    pthread_mutex_lock(&rs->mu);
    size_t clients = rs->nconns;
    uint64_t accepted = rs->accepted;
    pthread_mutex_unlock(&rs->mu);
    buf_t b;
    buf_init(&b);
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "# Server\r\nredis_version:7.0.0\r\n"
                     "kvdist_version:%s\r\nredis_mode:standalone\r\n"
                     "process_id:%ld\r\ntcp_port:%d\r\nnode_id:%s\r\n"
                     "n:%d\r\nr:%d\r\nw:%d\r\n"
                     "# Clients\r\nconnected_clients:%zu\r\n"
                     "# Stats\r\ntotal_connections_received:%" PRIu64 "\r\n"
                     "# Replication\r\nrole:master\r\n# Kvdist\r\n",
                     kv_version(), (long)getpid(), rs->port, kv->cfg.node_id,
                     kv->cfg.n, kv->cfg.r, kv->cfg.w, clients, accepted);
    buf_put(&b, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
    /* The node's counters, Prometheus lines turned into Redis's name:value. */
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
                buf_put(&b, m.p + i, (size_t)(sp - (m.p + i)));
                buf_put_u8(&b, ':');
                buf_put(&b, sp + 1, e - (size_t)(sp + 1 - m.p));
                buf_put(&b, "\r\n", 2);
            }
        }
        i = e + 1;
    }
    buf_free(&m);
    if (b.oom) {
        reply_kv_error(c, KV_ENOMEM);
    } else {
        reply_bulk(c, b.p, b.len);
    }
    buf_free(&b);
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

static void cmd_execute(resp_conn_t *c)
{
    const resp_arg_t *a = c->argv;
    size_t argc = c->argc;
    if (argc == 0) {
        return;
    }
    if (arg_is(&a[0], "GET")) {
        if (argc != 2) {
            cmd_wrong_args(c);
        } else if (check_keys(c, 1, argc)) {
            op_begin(c, OP_GET);
        }
    } else if (arg_is(&a[0], "SET")) {
        if (argc < 3) {
            cmd_wrong_args(c);
        } else if (argc > 3) {
            /* EX/PX need expiry and NX/XX a conditional write: neither
             * exists in libkvdist, so refuse rather than ignore them. */
            reply_raw(c, "-ERR kvdist: SET options (EX, PX, NX, XX, ...) are "
                         "not supported; use SET key value\r\n");
        } else if (a[2].len > c->rs->kv->cfg.max_value_size) {
            reply_kv_error(c, KV_ETOOBIG);
        } else if (check_keys(c, 1, 2)) {
            op_begin(c, OP_SET);
        }
    } else if (arg_is(&a[0], "DEL") || arg_is(&a[0], "UNLINK")) {
        if (argc < 2) {
            cmd_wrong_args(c);
        } else if (check_keys(c, 1, argc)) {
            op_begin(c, OP_DEL);
        }
    } else if (arg_is(&a[0], "EXISTS")) {
        if (argc < 2) {
            cmd_wrong_args(c);
        } else if (check_keys(c, 1, argc)) {
            op_begin(c, OP_EXISTS);
        }
    } else if (arg_is(&a[0], "PING")) {
        if (argc == 1) {
            reply_raw(c, "+PONG\r\n");
        } else if (argc == 2) {
            reply_bulk(c, a[1].p, a[1].len);
        } else {
            cmd_wrong_args(c);
        }
    } else if (arg_is(&a[0], "ECHO")) {
        if (argc != 2) {
            cmd_wrong_args(c);
        } else {
            reply_bulk(c, a[1].p, a[1].len);
        }
    } else if (arg_is(&a[0], "QUIT")) {
        reply_raw(c, "+OK\r\n");
        c->closing = true;
    } else if (arg_is(&a[0], "INFO")) {
        cmd_info(c);
    } else if (arg_is(&a[0], "CLIENT") && argc >= 2) {
        if (arg_is(&a[1], "SETNAME") && argc == 3) {
            if (a[2].len >= sizeof(c->name) ||
                memchr(a[2].p, ' ', a[2].len) != NULL) {
                reply_raw(c, "-ERR Client names cannot contain spaces, "
                             "newlines or special characters, and are at "
                             "most 127 bytes\r\n");
            } else {
                memcpy(c->name, a[2].p, a[2].len);
                c->namelen = a[2].len;
                reply_raw(c, "+OK\r\n");
            }
        } else if (arg_is(&a[1], "GETNAME") && argc == 2) {
            if (c->namelen == 0) {
                reply_raw(c, "$-1\r\n");
            } else {
                reply_bulk(c, c->name, c->namelen);
            }
        } else {
            reply_raw(c, "-ERR kvdist: only CLIENT SETNAME and CLIENT "
                         "GETNAME are supported\r\n");
        }
    } else if (arg_is(&a[0], "COMMAND")) {
        /* redis-cli 7 asks for COMMAND DOCS to offer hints; an empty
         * answer means "no hints", which is true. */
        if (argc >= 2 && arg_is(&a[1], "COUNT")) {
            reply_raw(c, ":0\r\n");
        } else {
            reply_raw(c, "*0\r\n");
        }
    } else if (arg_is(&a[0], "CONFIG") && argc == 3 && arg_is(&a[1], "GET")) {
        /* redis-benchmark reads these two at start-up. Nothing is saved
         * the Redis way; durability is the node's sync option. */
        if (arg_is(&a[2], "save")) {
            reply_raw(c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        } else if (arg_is(&a[2], "appendonly")) {
            reply_raw(c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
        } else {
            reply_raw(c, "*0\r\n");
        }
    } else if (arg_is(&a[0], "SELECT") && argc == 2) {
        if (a[1].len == 1 && a[1].p[0] == '0') {
            reply_raw(c, "+OK\r\n");
        } else {
            reply_raw(c, "-ERR DB index is out of range\r\n");
        }
    } else {
        char name[64];
        quote_arg(&a[0], name, sizeof(name));
        reply_fmt(c, "-ERR unknown command '%s'\r\n", name);
    }
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

static void resp_accept_cb(void *arg)
{
    resp_t *rs = arg;
    int rv = nng_aio_result(rs->accept);
    if (rv != 0) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED &&
            !atomic_load(&rs->stopping)) {
            KV_LOG(&rs->kv->log, KV_LOG_WARN, "resp: accept: %s",
                   nng_strerror(rv));
            nng_stream_listener_accept(rs->listener, rs->accept);
        }
        return;
    }
    nng_stream *s = nng_aio_get_output(rs->accept, 0);
    resp_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || nng_aio_alloc(&c->rx, conn_rx_cb, c) != 0 ||
        nng_aio_alloc(&c->tx, conn_tx_cb, c) != 0) {
        KV_LOG(&rs->kv->log, KV_LOG_WARN, "resp: out of memory for a client");
        if (c != NULL) {
            nng_aio_free(c->rx);
            free(c);
        }
        nng_stream_free(s);
    } else {
        c->rs = rs;
        c->stream = s;
        pthread_mutex_init(&c->mu, NULL);
        buf_init(&c->out);
        pthread_mutex_lock(&rs->mu);
        list_push(&rs->conns, c);
        rs->nconns++;
        rs->accepted++;
        pthread_mutex_unlock(&rs->mu);
        pthread_mutex_lock(&c->mu);
        conn_kick(c);
    }
    if (!atomic_load(&rs->stopping)) {
        nng_stream_listener_accept(rs->listener, rs->accept);
    }
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
    if (rv == 0 && pthread_create(&rs->reaper, NULL, resp_reaper, rs) != 0) {
        rv = NNG_ENOMEM;
    }
    if (rv != 0) {
        KV_LOG(&kv->log, KV_LOG_ERROR, "resp: cannot listen on %s: %s",
               kv->cfg.resp, nng_strerror(rv));
        if (rs->accept != NULL) {
            nng_aio_free(rs->accept);
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
    nng_aio_stop(rs->accept); /* no accept callback runs after this */
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
    nng_stream_listener_free(rs->listener);
    pthread_mutex_destroy(&rs->mu);
    pthread_cond_destroy(&rs->cv);
    free(rs);
}
