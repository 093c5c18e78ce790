/*
 * rpc.c - the transport between peers: NNG req/rep sockets with contexts
 * and asynchronous I/O. This is the only file that includes nng.h, so the
 * choice of transport (tcp://, ipc://, and tls+tcp:// once TLS is
 * configured here) lives in one place.
 *
 * Server side: one rep0 socket listening on the node's URL, with a fixed
 * pool of workers, each an NNG context plus an aio, cycling
 * receive -> handle -> reply. A handler may finish later (a coordinated
 * write waits for its replicas), so the worker stays with its request until
 * rpc_reply(); no thread is created per request. Bytes that do not decode
 * are counted and answered with an EPROTO reply; they never reach a handler.
 *
 * Client side: one req0 socket per peer, dialled without blocking and
 * redialled by NNG after failures. Each call opens a context on it, sends,
 * receives, and finishes through its callback; req0's automatic resend is
 * turned off because a resent coordinated write would get a second dot.
 *
 * Shutdown (rpc_destroy): close the listening socket, cancel the calls in
 * flight and wait for their callbacks, and only then close the peer
 * sockets, when no context is open on them any more: closing an NNG 1.5
 * socket while contexts are still being torn down can hang nng_close (seen
 * here; nanomsg/nng#1543 describes the same family of close races). The
 * lock `mu` protects peers, calls, ncalls and closing.
 *
 * A node that listens on tcp://A.B.C.D:port also dials its peers from
 * A.B.C.D (NNG_OPT_LOCADDR), so every link between two nodes is named by
 * their two addresses: firewall rules (the nemesis harness's partitions)
 * can tell the links apart, and a multi-homed host answers from the address
 * it was configured with.
 *
 * Fault-injection hook (tests only, off unless the environment variable
 * KVDIST_FAULT_FILE names a file when the node opens; kvdist(7) FAULT
 * INJECTION): the file holds lines "delay MS", "drop PERCENT" and
 * "block SUBSTRING" (a peer URL containing it is cut off). It is re-read
 * when it changes, at most every 100 ms. A delayed request waits on an
 * aio of its own (nng_sleep_aio on the slot's hold aio, never on the
 * context's aio: NNG 1.5 leaves a slept aio in a state where a later
 * receive timeout completes as success with no message, which crashed
 * nodes in the first nemesis runs) before it is sent; a dropped one is
 * never sent
 * and times out at its deadline, as a lost packet would. Only outgoing
 * requests are affected, so a symmetric fault is written on both ends.
 * The lock `fault_mu` protects the fault fields.
 */
#include "rpc.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "kvdist.h"

#define RPC_WORKERS 64
#define RPC_FAULT_BLOCKS 8
#define RPC_FAULT_RECHECK_MS 100

struct rpc_call;

struct rpc_peer {
    struct rpc_peer *next;
    char *url;
    nng_socket sock;
    struct rpc_call *idle; /* reusable context+aio pairs (under rpc->mu) */
};

enum worker_state { W_RECV, W_HANDLING, W_SEND, W_STOPPED };

struct rpc_req {
    rpc_t *rpc;
    nng_ctx ctx;
    nng_aio *aio;
    int state;
};

struct rpc {
    rpc_config_t cfg;
    nng_socket server;
    bool listening;
    _Atomic bool stopping; /* the server's workers take no new request */
    struct rpc_req workers[RPC_WORKERS];
    _Atomic uint64_t next_id;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_peer_t *peers;
    struct rpc_call *calls; /* in flight, so shutdown can cancel them */
    unsigned ncalls;
    bool closing;

    nng_sockaddr local; /* dial from here (the listen host) when set */
    bool have_local;

    /* Fault-injection hook, see the top of this file (under fault_mu). */
    pthread_mutex_t fault_mu;
    char *fault_path; /* NULL: the hook is off */
    nng_time fault_checked;
    struct timespec fault_mtime;
    off_t fault_size;
    int fault_delay_ms;
    int fault_drop_pct;
    int fault_nblocks;
    char fault_block[RPC_FAULT_BLOCKS][64];
    uint64_t fault_rng;
};

static size_t rpc_recv_max(const wire_limits_t *l)
{
    return l->max_object + l->max_key + l->max_value + 4096;
}

static int rpc_code(int nng_rv)
{
    switch (nng_rv) {
    case 0:
        return 0;
    case NNG_ETIMEDOUT:
        return KV_ETIMEDOUT;
    case NNG_ECLOSED:
    case NNG_ECANCELED:
        return KV_ECLOSED;
    case NNG_ENOMEM:
        return KV_ENOMEM;
    case NNG_EADDRINUSE:
        return KV_EADDRINUSE;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return KV_EINVAL;
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_EUNREACHABLE:
        return KV_EUNAVAIL;
    default:
        return KV_EIO;
    }
}

/* ------------------------------------------------------------- server */

static void worker_recv(struct rpc_req *w)
{
    w->state = W_RECV;
    nng_ctx_recv(w->ctx, w->aio);
}

static void worker_send(struct rpc_req *w, buf_t *msg)
{
    nng_msg *m = NULL;
    if (msg->oom || nng_msg_alloc(&m, 0) != 0 ||
        nng_msg_append(m, msg->p, msg->len) != 0) {
        /* Cannot answer: drop the request (the caller times out). */
        if (m != NULL) {
            nng_msg_free(m);
        }
        buf_free(msg);
        worker_recv(w);
        return;
    }
    buf_free(msg);
    w->state = W_SEND;
    nng_aio_set_msg(w->aio, m);
    nng_ctx_send(w->ctx, w->aio);
}

static void worker_cb(void *arg)
{
    struct rpc_req *w = arg;
    rpc_t *rpc = w->rpc;
    int rv = nng_aio_result(w->aio);
    if (atomic_load(&rpc->stopping)) {
        /* Shutting down: drop what arrived or did not go out; no re-arm. */
        if ((w->state == W_SEND && rv != 0) ||
            (w->state == W_RECV && rv == 0)) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        w->state = W_STOPPED;
        return;
    }
    if (w->state == W_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        if (rv == NNG_ECLOSED) {
            w->state = W_STOPPED;
            return;
        }
        worker_recv(w);
        return;
    }
    if (w->state != W_RECV) {
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED) {
            w->state = W_STOPPED;
            return;
        }
        worker_recv(w);
        return;
    }
    nng_msg *m = nng_aio_get_msg(w->aio);
    wire_msg_t msg;
    int rc =
        wire_decode(nng_msg_body(m), nng_msg_len(m), &rpc->cfg.limits, &msg);
    if (rc != 0 || (msg.type & WIRE_REPLY)) {
        metric_inc(rpc->cfg.metrics, M_WIRE_MALFORMED);
        KV_LOG(rpc->cfg.log, KV_LOG_DEBUG,
               "rpc: dropped a malformed message of %zu bytes", nng_msg_len(m));
        nng_msg_free(m);
        buf_t reply;
        buf_init(&reply);
        wire_build_simple(&reply, WIRE_ERROR | WIRE_REPLY, 0, KV_EPROTO);
        worker_send(w, &reply);
        return;
    }
    w->state = W_HANDLING;
    rpc->cfg.handler(rpc->cfg.handler_arg, w, &msg);
    nng_msg_free(m);
}

void rpc_reply(rpc_req_t *req, buf_t *msg)
{
    worker_send(req, msg);
}

/* ------------------------------------------------------------- client */

/* One request slot: a context and an aio on a peer's socket, reused from
 * call to call (opened once, closed with the socket), because opening and
 * closing a context per request is slower and, with NNG 1.5, is what made
 * nng_close occasionally hang in our tests. */
struct rpc_call {
    struct rpc_call *prev; /* in flight list, or the idle list (next) */
    struct rpc_call *next;
    rpc_peer_t *peer;
    rpc_t *rpc;
    nng_ctx ctx;
    nng_aio *aio;
    bool sent;
    nng_aio *hold; /* the fault hook's wait (allocated on first use) */
    nng_msg *held; /* the request it holds back */
    bool drop;
    nng_time deadline;
    rpc_done_fn done;
    void *arg;
};

static void call_finish(struct rpc_call *c, int rc, const wire_msg_t *reply)
{
    rpc_t *rpc = c->rpc;
    if (rc != 0) {
        metric_inc(rpc->cfg.metrics,
                   rc == KV_ETIMEDOUT ? M_RPC_TIMEOUTS : M_RPC_ERRORS);
    }
    c->done(c->arg, rc, reply);
    /* Back to the peer's idle list: the last thing done with c here. */
    pthread_mutex_lock(&rpc->mu);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        rpc->calls = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = NULL;
    c->next = c->peer->idle;
    c->peer->idle = c;
    if (--rpc->ncalls == 0) {
        pthread_cond_broadcast(&rpc->cv);
    }
    pthread_mutex_unlock(&rpc->mu);
}

/* The fault hook's wait is over (or was cancelled): send the held
 * request on the slot's own aio, or fail it as a lost one. */
static void hold_cb(void *arg)
{
    struct rpc_call *c = arg;
    int rv = nng_aio_result(c->hold);
    nng_msg *m = c->held;
    c->held = NULL;
    if (rv == NNG_ETIMEDOUT) {
        rv = 0; /* the wait ran its full length */
    }
    if (rv != 0 || c->drop) {
        nng_msg_free(m);
        call_finish(c, rv != 0 ? rpc_code(rv) : KV_ETIMEDOUT, NULL);
        return;
    }
    nng_time now = nng_clock();
    nng_aio_set_timeout(
        c->aio, c->deadline > now ? (nng_duration)(c->deadline - now) : 1);
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static void call_cb(void *arg)
{
    struct rpc_call *c = arg;
    int rv = nng_aio_result(c->aio);
    if (!c->sent) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            call_finish(c, rv == NNG_ETIMEDOUT ? KV_ETIMEDOUT : rpc_code(rv),
                        NULL);
            return;
        }
        c->sent = true;
        nng_time now = nng_clock();
        nng_aio_set_timeout(
            c->aio, c->deadline > now ? (nng_duration)(c->deadline - now) : 1);
        /* Always receive: a request on a req context is only released
         * (and its message freed) by its receive finishing. During
         * shutdown that receive is cancelled at once. */
        nng_ctx_recv(c->ctx, c->aio);
        pthread_mutex_lock(&c->rpc->mu);
        bool closing = c->rpc->closing;
        pthread_mutex_unlock(&c->rpc->mu);
        if (closing) {
            nng_aio_cancel(c->aio);
        }
        return;
    }
    if (rv != 0) {
        call_finish(c, rpc_code(rv), NULL);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    wire_msg_t reply;
    int rc = wire_decode(nng_msg_body(m), nng_msg_len(m), &c->rpc->cfg.limits,
                         &reply);
    if (rc != 0 || !(reply.type & WIRE_REPLY)) {
        metric_inc(c->rpc->cfg.metrics, M_WIRE_MALFORMED);
        call_finish(c, KV_EPROTO, NULL);
    } else {
        call_finish(c, 0, &reply);
    }
    nng_msg_free(m);
}

/* ----------------------------------------------------- fault injection */

/* Re-reads the fault file if it changed (at most every 100 ms); a missing
 * or unreadable file means no fault. Called under fault_mu. */
static void fault_reload(rpc_t *rpc)
{
    nng_time now = nng_clock();
    if (rpc->fault_checked != 0 &&
        now - rpc->fault_checked < RPC_FAULT_RECHECK_MS) {
        return;
    }
    rpc->fault_checked = now;
    struct stat st;
    if (stat(rpc->fault_path, &st) != 0) {
        rpc->fault_delay_ms = 0;
        rpc->fault_drop_pct = 0;
        rpc->fault_nblocks = 0;
        rpc->fault_size = -1;
        return;
    }
    if (st.st_size == rpc->fault_size &&
        st.st_mtim.tv_sec == rpc->fault_mtime.tv_sec &&
        st.st_mtim.tv_nsec == rpc->fault_mtime.tv_nsec) {
        return;
    }
    FILE *f = fopen(rpc->fault_path, "r");
    if (f == NULL) {
        return;
    }
    rpc->fault_mtime = st.st_mtim;
    rpc->fault_size = st.st_size;
    rpc->fault_delay_ms = 0;
    rpc->fault_drop_pct = 0;
    rpc->fault_nblocks = 0;
    char line[128];
    while (fgets(line, sizeof(line), f) != NULL) {
        char word[16];
        char arg[64];
        if (sscanf(line, "%15s %63s", word, arg) != 2) {
            continue;
        }
        int v = atoi(arg);
        if (strcmp(word, "delay") == 0 && v > 0 && v <= 600000) {
            rpc->fault_delay_ms = v;
        } else if (strcmp(word, "drop") == 0 && v > 0 && v <= 100) {
            rpc->fault_drop_pct = v;
        } else if (strcmp(word, "block") == 0 &&
                   rpc->fault_nblocks < RPC_FAULT_BLOCKS) {
            memcpy(rpc->fault_block[rpc->fault_nblocks++], arg,
                   strlen(arg) + 1);
        }
    }
    fclose(f);
    KV_LOG(rpc->cfg.log, KV_LOG_NOTICE,
           "rpc: fault hook: delay %d ms, drop %d%%, %d blocked peers",
           rpc->fault_delay_ms, rpc->fault_drop_pct, rpc->fault_nblocks);
}

/* Whether the fault hook holds this request back: *delay_ms before it is
 * sent, or *drop (never sent). */
static bool fault_decide(rpc_t *rpc, const rpc_peer_t *p, int *delay_ms,
                         bool *drop)
{
    pthread_mutex_lock(&rpc->fault_mu);
    fault_reload(rpc);
    *delay_ms = rpc->fault_delay_ms;
    *drop = false;
    for (int i = 0; i < rpc->fault_nblocks; i++) {
        if (strstr(p->url, rpc->fault_block[i]) != NULL) {
            *drop = true;
        }
    }
    if (rpc->fault_drop_pct > 0) {
        /* splitmix64: cheap, and good enough to pick packets to lose */
        uint64_t z = (rpc->fault_rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        *drop = *drop || (int)(z % 100) < rpc->fault_drop_pct;
    }
    pthread_mutex_unlock(&rpc->fault_mu);
    return *drop || *delay_ms > 0;
}

int rpc_call(rpc_t *rpc, rpc_peer_t *p, buf_t *msg, int timeout_ms,
             rpc_done_fn done, void *arg)
{
    if (msg->oom) {
        buf_free(msg);
        return KV_ENOMEM;
    }
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, msg->p, msg->len) != 0) {
        if (m != NULL) {
            nng_msg_free(m);
        }
        buf_free(msg);
        return KV_ENOMEM;
    }
    buf_free(msg);
    pthread_mutex_lock(&rpc->mu);
    if (rpc->closing) {
        pthread_mutex_unlock(&rpc->mu);
        nng_msg_free(m);
        return KV_ECLOSED;
    }
    struct rpc_call *c = p->idle;
    if (c != NULL) {
        p->idle = c->next;
    } else {
        /* A new slot; opened under mu so shutdown never races it. */
        c = calloc(1, sizeof(*c));
        int rv = c == NULL ? NNG_ENOMEM : nng_ctx_open(&c->ctx, p->sock);
        if (rv == 0) {
            rv = nng_aio_alloc(&c->aio, call_cb, c);
            if (rv != 0) {
                nng_ctx_close(c->ctx);
            }
        }
        if (rv != 0) {
            pthread_mutex_unlock(&rpc->mu);
            free(c);
            nng_msg_free(m);
            return rpc_code(rv);
        }
        c->peer = p;
        c->rpc = rpc;
    }
    c->sent = false;
    c->done = done;
    c->arg = arg;
    c->deadline = nng_clock() + (nng_time)(timeout_ms > 0 ? timeout_ms : 1);
    rpc->ncalls++;
    c->prev = NULL;
    c->next = rpc->calls;
    if (rpc->calls != NULL) {
        rpc->calls->prev = c;
    }
    rpc->calls = c;
    pthread_mutex_unlock(&rpc->mu);
    metric_inc(rpc->cfg.metrics, M_RPC_CALLS);
    int delay = 0;
    c->drop = false;
    if (rpc->fault_path != NULL && fault_decide(rpc, p, &delay, &c->drop) &&
        (c->hold != NULL || nng_aio_alloc(&c->hold, hold_cb, c) == 0)) {
        int left = timeout_ms > 0 ? timeout_ms : 1;
        c->held = m;
        nng_aio_set_timeout(c->hold, NNG_DURATION_INFINITE);
        nng_sleep_aio(c->drop || delay > left ? left : delay, c->hold);
        return 0;
    }
    nng_aio_set_timeout(c->aio, timeout_ms > 0 ? timeout_ms : 1);
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
    return 0;
}

rpc_peer_t *rpc_peer(rpc_t *rpc, const char *url)
{
    pthread_mutex_lock(&rpc->mu);
    if (rpc->closing) {
        /* A reply callback still running during rpc_destroy may learn of
         * a member; a peer made now would never be closed or freed. */
        pthread_mutex_unlock(&rpc->mu);
        return NULL;
    }
    for (rpc_peer_t *p = rpc->peers; p != NULL; p = p->next) {
        if (strcmp(p->url, url) == 0) {
            pthread_mutex_unlock(&rpc->mu);
            return p;
        }
    }
    rpc_peer_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->url = strdup(url)) == NULL ||
        nng_req0_open(&p->sock) != 0) {
        if (p != NULL) {
            free(p->url);
        }
        free(p);
        pthread_mutex_unlock(&rpc->mu);
        return NULL;
    }
    nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ,
                        rpc_recv_max(&rpc->cfg.limits));
    nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 1000);
    int rv;
    if (rpc->have_local && strncmp(url, "tcp://", 6) == 0) {
        nng_dialer d;
        rv = nng_dialer_create(&d, p->sock, url);
        if (rv == 0) {
            int lrv = nng_dialer_set_addr(d, NNG_OPT_LOCADDR, &rpc->local);
            if (lrv != 0) {
                KV_LOG(rpc->cfg.log, KV_LOG_DEBUG,
                       "rpc: cannot dial %s from the listen address: %s", url,
                       nng_strerror(lrv));
            }
            rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
        }
    } else {
        rv = nng_dial(p->sock, url, NULL, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        KV_LOG(rpc->cfg.log, KV_LOG_WARN, "rpc: cannot dial %s: %s", url,
               nng_strerror(rv));
        nng_close(p->sock);
        free(p->url);
        free(p);
        pthread_mutex_unlock(&rpc->mu);
        return NULL;
    }
    p->next = rpc->peers;
    rpc->peers = p;
    pthread_mutex_unlock(&rpc->mu);
    return p;
}

const char *rpc_peer_url(const rpc_peer_t *p)
{
    return p->url;
}

uint64_t rpc_next_id(rpc_t *rpc)
{
    return atomic_fetch_add(&rpc->next_id, 1) + 1;
}

/* ------------------------------------------------------------ lifecycle */

/* Closing the peer sockets happens on a thread of its own, waited for with
 * a bound: NNG 1.5's nng_close on a req socket that had many short-lived
 * contexts occasionally never returns (seen in this project's tests; the
 * nng_close races of nanomsg/nng#1543 and #1813 are the same family). A
 * close that does not finish in time is abandoned with the peers it still
 * references, instead of hanging the application's kv_close. */
typedef struct closer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool has_server;
    nng_socket server;
    rpc_peer_t *peers;
    bool done;
    bool abandoned;
} closer_t;

static void peers_free(rpc_peer_t *peers)
{
    while (peers != NULL) {
        rpc_peer_t *next = peers->next;
        while (peers->idle != NULL) {
            struct rpc_call *c = peers->idle;
            peers->idle = c->next;
            free(c);
        }
        free(peers->url);
        free(peers);
        peers = next;
    }
}

static void closer_free(closer_t *c)
{
    peers_free(c->peers);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void *closer_main(void *arg)
{
    closer_t *c = arg;
    if (c->has_server) {
        nng_close(c->server);
    }
    for (rpc_peer_t *p = c->peers; p != NULL; p = p->next) {
        nng_close(p->sock);
    }
    pthread_mutex_lock(&c->mu);
    c->done = true;
    bool abandoned = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (abandoned) {
        closer_free(c);
    }
    return NULL;
}

#define RPC_CLOSE_BOUND_MS 3000

/* Closes the server socket (when listening) and the peers' sockets,
 * bounded; returns false if the close was abandoned. */
static bool close_sockets(rpc_t *rpc, rpc_peer_t *peers)
{
    closer_t *c = calloc(1, sizeof(*c));
    pthread_t t;
    if (c == NULL) {
        return false; /* out of memory at shutdown: leave them open */
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->has_server = rpc->listening;
    c->server = rpc->server;
    c->peers = peers;
    if (pthread_create(&t, NULL, closer_main, c) != 0) {
        closer_main(c);
        closer_free(c);
        return true;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += RPC_CLOSE_BOUND_MS / 1000;
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    while (!c->done && rc == 0) {
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    bool done = c->done;
    c->abandoned = !done;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        pthread_join(t, NULL);
        closer_free(c);
    } else {
        pthread_detach(t);
        KV_LOG(rpc->cfg.log, KV_LOG_WARN,
               "rpc: closing sockets did not finish in %d ms; "
               "abandoning them (an NNG close race)",
               RPC_CLOSE_BOUND_MS);
    }
    return done;
}

int rpc_create(const rpc_config_t *cfg, rpc_t **out)
{
    *out = NULL;
    rpc_t *rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        return KV_ENOMEM;
    }
    rpc->cfg = *cfg;
    pthread_mutex_init(&rpc->mu, NULL);
    pthread_cond_init(&rpc->cv, NULL);
    pthread_mutex_init(&rpc->fault_mu, NULL);
    atomic_init(&rpc->next_id, 0);
    atomic_init(&rpc->stopping, false);
    const char *fault = getenv("KVDIST_FAULT_FILE");
    if (fault != NULL && *fault != '\0') {
        rpc->fault_path = strdup(fault);
        if (rpc->fault_path == NULL) {
            rpc_destroy(rpc);
            return KV_ENOMEM;
        }
        rpc->fault_size = -1;
        rpc->fault_rng = (uint64_t)getpid() ^ (uint64_t)nng_clock() << 20;
        KV_LOG(rpc->cfg.log, KV_LOG_WARN,
               "rpc: fault injection on, from %s (KVDIST_FAULT_FILE)",
               rpc->fault_path);
    }
    *out = rpc;
    return 0;
}

/* The numeric IPv4 host of a tcp:// URL that names one address (not
 * 0.0.0.0 or a name), so peers are dialled from it. */
static void rpc_set_local(rpc_t *rpc, const char *url)
{
    char host[64];
    const char *colon;
    if (strncmp(url, "tcp://", 6) != 0 ||
        (colon = strrchr(url + 6, ':')) == NULL ||
        (size_t)(colon - (url + 6)) >= sizeof(host)) {
        return;
    }
    memcpy(host, url + 6, (size_t)(colon - (url + 6)));
    host[colon - (url + 6)] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1 || a.s_addr == htonl(INADDR_ANY)) {
        return;
    }
    memset(&rpc->local, 0, sizeof(rpc->local));
    rpc->local.s_in.sa_family = NNG_AF_INET;
    rpc->local.s_in.sa_addr = a.s_addr;
    rpc->local.s_in.sa_port = 0;
    rpc->have_local = true;
}

int rpc_listen(rpc_t *rpc, const char *url)
{
    int rv = nng_rep0_open(&rpc->server);
    if (rv != 0) {
        return rpc_code(rv);
    }
    nng_socket_set_size(rpc->server, NNG_OPT_RECVMAXSZ,
                        rpc_recv_max(&rpc->cfg.limits));
    rv = nng_listen(rpc->server, url, NULL, 0);
    if (rv != 0) {
        KV_LOG(rpc->cfg.log, KV_LOG_ERROR, "rpc: cannot listen on %s: %s", url,
               nng_strerror(rv));
        nng_close(rpc->server);
        return rpc_code(rv);
    }
    for (int i = 0; i < RPC_WORKERS; i++) {
        struct rpc_req *w = &rpc->workers[i];
        w->rpc = rpc;
        w->state = W_STOPPED;
        if (nng_ctx_open(&w->ctx, rpc->server) != 0 ||
            nng_aio_alloc(&w->aio, worker_cb, w) != 0) {
            w->aio = NULL;
            continue;
        }
        worker_recv(w);
    }
    rpc->listening = true;
    rpc_set_local(rpc, url);
    return 0;
}

void rpc_destroy(rpc_t *rpc)
{
    if (rpc == NULL) {
        return;
    }
    if (rpc->listening) {
        /* Stop the workers before the socket: once nng_aio_stop returns no
         * callback of ours runs for a request, so the socket's close may
         * be bounded and abandoned like the peers' (NNG 1.5's close of a
         * rep socket with open contexts can wedge, as the req ones do). */
        atomic_store(&rpc->stopping, true);
        for (int i = 0; i < RPC_WORKERS; i++) {
            if (rpc->workers[i].aio != NULL) {
                nng_aio_stop(rpc->workers[i].aio);
            }
        }
    }
    pthread_mutex_lock(&rpc->mu);
    rpc->closing = true;
    /* Cancelling only schedules the callback (on an NNG thread), and a
     * call leaves the list under mu, so none is freed while we walk. */
    for (struct rpc_call *c = rpc->calls; c != NULL; c = c->next) {
        nng_aio_cancel(c->aio);
        if (c->hold != NULL) {
            nng_aio_cancel(c->hold);
        }
    }
    while (rpc->ncalls > 0) {
        pthread_cond_wait(&rpc->cv, &rpc->mu);
    }
    rpc_peer_t *peers = rpc->peers;
    rpc->peers = NULL;
    pthread_mutex_unlock(&rpc->mu);
    /* Every slot is idle now: free their aios (no callback can run), and
     * let nng_close close their contexts with the sockets. */
    for (rpc_peer_t *p = peers; p != NULL; p = p->next) {
        for (struct rpc_call *c = p->idle; c != NULL; c = c->next) {
            nng_aio_free(c->aio);
            c->aio = NULL;
            if (c->hold != NULL) {
                nng_aio_free(c->hold);
                c->hold = NULL;
            }
        }
    }
    bool closed = close_sockets(rpc, peers);
    /* An abandoned close may still touch the workers' aios: leave them. */
    for (int i = 0; closed && rpc->listening && i < RPC_WORKERS; i++) {
        if (rpc->workers[i].aio != NULL) {
            nng_aio_free(rpc->workers[i].aio);
        }
    }
    pthread_cond_destroy(&rpc->cv);
    pthread_mutex_destroy(&rpc->mu);
    pthread_mutex_destroy(&rpc->fault_mu);
    free(rpc->fault_path);
    free(rpc);
}
