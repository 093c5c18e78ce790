/*
 * coord.c - coordination of quorum reads and writes (Dynamo section 4.5),
 * and the handlers of the replica requests, registered by coord_open:
 * REPLICA_PUT on the node's pool, REPLICA_GET and LOCAL_GET on the NNG
 * thread (answered from memory, or handed to the pool to read a file).
 *
 * Owns coord_op_t: one in-flight quorum operation. An operation sends its
 * requests to every replica at once and completes on the first w (or r)
 * successes; the remaining replies still arrive and are used (a read
 * repairs the replicas that answered with an older object once everything
 * is in). No thread waits per replica: completion is driven by rpc
 * callbacks, which run on NNG threads and so hand the store work they
 * start (the local part of a read repair, a hint) to the pool.
 *
 * Effective quorums: a key has n = min(configured n, cluster members)
 * replicas; r and w are capped at that n. So a one- or two-node cluster
 * still works with the defaults (N=3, R=2, W=2), with fewer copies.
 *
 * A write that misses w is reported as KV_EQUORUM, and it is
 * indeterminate: the replicas that did apply it keep it, and it may become
 * visible later (read repair, anti-entropy). Callers must treat it as
 * "maybe written", as Dynamo does.
 *
 * Batches: the transport dispatches a received batch entry by entry on
 * one pool thread, and coord_batch_begin opens a replica write group for
 * it (replica.h), the batch's context. Nothing of it is kept per thread:
 * each handler passes its request down (a forwarded COORD_PUT through
 * node_write to coord_write's `in`), and from the request come the group
 * its replica writes join (replica_group_of) and the cork of the requests
 * made for it (rpc_call_in), so a batch of forwarded writes becomes one
 * RocksDB batch here and one batch of REPLICA_PUTs per replica.
 *
 * Lock: op->mu protects every mutable field of an op; callbacks run with
 * it released. Only the fields filled in while the op is built (needed,
 * timeout_ms, nslots, outstanding and the slots' targets) are written
 * without it, before its first request is sent or its local write joins a
 * group: until then no other thread can reach the op. A forward (fwd_t)
 * has a lock of its own, over the state its hops and its race timer share.
 */
#include "coord.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <nng/nng.h>

#include "clock.h"
#include "cluster.h"
#include "handoff.h"
#include "pool.h"
#include "replica.h"
#include "wire.h"

typedef struct coord_op coord_op_t;

typedef struct coord_slot {
    coord_op_t *op;
    bool replied;
    bool ok;
    bool self;
    rpc_peer_t *peer; /* who was asked: the replica, or its fallback */
    bool fallback;    /* peer stands in for owner (sloppy quorum) */
    char owner[72];   /* the preference-list node this slot is for */
    obj_t obj;        /* reads: what was answered */
} coord_slot_t;

struct coord_op {
    kv_t *kv;
    pthread_mutex_t mu;
    int refs;
    bool is_read;
    bool done;
    int needed;
    int acked;
    int outstanding;
    int timeout_ms;
    coord_done_fn cb;
    void *arg;
    uint8_t *key;
    size_t klen;
    obj_t merged;
    size_t nslots;
    coord_slot_t slot[CLUSTER_MAX_ROUTE];
};

static int eff_quorum(int asked, int dflt, size_t n)
{
    int q = asked > 0 ? asked : dflt;
    return q > (int)n ? (int)n : q;
}

static coord_op_t *op_new(kv_t *kv, const void *key, size_t klen, bool is_read,
                          coord_done_fn cb, void *arg)
{
    coord_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL || (op->key = malloc(klen)) == NULL) {
        free(op);
        return NULL;
    }
    memcpy(op->key, key, klen);
    op->klen = klen;
    op->kv = kv;
    op->is_read = is_read;
    op->cb = cb;
    op->arg = arg;
    op->refs = 1; /* the initiator's, until dispatch is over */
    obj_init(&op->merged);
    pthread_mutex_init(&op->mu, NULL);
    for (size_t i = 0; i < CLUSTER_MAX_ROUTE; i++) {
        op->slot[i].op = op;
        obj_init(&op->slot[i].obj);
    }
    return op;
}

static void op_free(coord_op_t *op)
{
    for (size_t i = 0; i < CLUSTER_MAX_ROUTE; i++) {
        obj_free(&op->slot[i].obj);
    }
    obj_free(&op->merged);
    pthread_mutex_destroy(&op->mu);
    free(op->key);
    free(op);
}

static void op_hold(coord_op_t *op)
{
    pthread_mutex_lock(&op->mu);
    op->refs++;
    pthread_mutex_unlock(&op->mu);
}

static void op_release(coord_op_t *op)
{
    pthread_mutex_lock(&op->mu);
    bool gone = --op->refs == 0;
    pthread_mutex_unlock(&op->mu);
    if (gone) {
        op_free(op);
    }
}

static void repair_done(void *arg, int rc, const wire_msg_t *reply)
{
    (void)arg;
    (void)rc;
    (void)reply;
}

/* Store work that starts in a reply callback (an NNG thread, which must
 * not write the store) runs on the pool: the local replica's part of a
 * read repair, or a hint for a replica that did not answer. */
typedef struct local_work {
    kv_t *kv;
    obj_t obj;
    bool hint;                    /* a hint for owner, else a merge */
    char owner[WIRE_MAX_ID + 1];
    size_t klen;
    uint8_t key[];
} local_work_t;

static void local_work_apply(kv_t *kv, bool hint, const char *owner,
                             const void *key, size_t klen, const obj_t *o)
{
    if (hint) {
        (void)handoff_store(kv, owner, key, klen, o);
    } else {
        (void)replica_merge(kv, NULL, key, klen, o, NULL); /* no group */
    }
}

static void local_work_run(void *arg)
{
    local_work_t *w = arg;
    local_work_apply(w->kv, w->hint, w->owner, w->key, w->klen, &w->obj);
    obj_free(&w->obj);
    free(w);
}

/* Both are best effort: a hint or a repair lost here (memory, a full
 * queue, a node stopping) is made good by anti-entropy. */
static void local_work(kv_t *kv, const coord_op_t *op, const char *owner)
{
    if (kv->pool == NULL) {
        local_work_apply(kv, owner != NULL, owner, op->key, op->klen,
                         &op->merged);
        return;
    }
    local_work_t *w = malloc(sizeof(*w) + op->klen);
    if (w == NULL) {
        return;
    }
    w->kv = kv;
    w->hint = owner != NULL;
    snprintf(w->owner, sizeof(w->owner), "%s", owner != NULL ? owner : "");
    w->klen = op->klen;
    memcpy(w->key, op->key, op->klen);
    obj_init(&w->obj);
    if (obj_join(&w->obj, &op->merged, NULL) != 0 ||
        pool_submit(kv->pool, local_work_run, w) != 0) {
        obj_free(&w->obj);
        free(w);
    }
}

/* Sends the merged object to every replica that answered with something
 * else (Dynamo's read repair). Runs once, after the last reply. */
static void op_read_repair(coord_op_t *op)
{
    kv_t *kv = op->kv;
    buf_t enc;
    buf_init(&enc);
    if (obj_encode(&op->merged, &enc) != 0) {
        buf_free(&enc);
        return;
    }
    for (size_t i = 0; i < op->nslots; i++) {
        coord_slot_t *s = &op->slot[i];
        if (!s->ok || s->fallback || obj_equal(&s->obj, &op->merged)) {
            continue;
        }
        metric_inc(&kv->metrics, M_READ_REPAIRS);
        if (s->self) {
            local_work(kv, op, NULL);
            continue;
        }
        buf_t b;
        buf_init(&b);
        wire_build_replica_put(&b, rpc_next_id(kv->rpc), op->key, op->klen,
                               enc.p, enc.len);
        if (rpc_call(kv->rpc, s->peer, &b, kv->cfg.timeout_ms, repair_done,
                     NULL) != 0) {
            buf_free(&b);
        }
    }
    buf_free(&enc);
}

/* Records one replica's answer and fires the callback when the verdict is
 * known. Drops the reference the answer held. */
static void op_settle(coord_op_t *op, coord_slot_t *s, bool ok,
                      const obj_t *obj)
{
    pthread_mutex_lock(&op->mu);
    if (s != NULL) {
        s->replied = true;
        op->outstanding--;
        if (ok && obj != NULL && obj_join(&op->merged, obj, NULL) != 0) {
            ok = false; /* out of memory: do not count what we lost */
        }
        if (ok && obj != NULL) {
            obj_free(&s->obj);
            (void)obj_join(&s->obj, obj, NULL);
        }
        s->ok = ok;
        if (ok) {
            op->acked++;
        }
    }
    bool fire = false;
    int rc = 0;
    obj_t result;
    obj_init(&result);
    if (!op->done) {
        if (op->acked >= op->needed) {
            fire = true;
            if (op->is_read && obj_join(&result, &op->merged, NULL) != 0) {
                rc = KV_ENOMEM;
            }
        } else if (op->acked + op->outstanding < op->needed) {
            fire = true;
            rc = KV_EQUORUM;
            metric_inc(&op->kv->metrics, M_QUORUM_FAILURES);
        }
        op->done = fire;
    }
    int acked = op->acked;
    int needed = op->needed;
    bool last = s != NULL && op->outstanding == 0;
    bool release = s != NULL;
    pthread_mutex_unlock(&op->mu);

    if (fire) {
        op->cb(op->arg, rc, acked, needed, op->is_read ? &result : NULL);
    }
    obj_free(&result);
    if (last && op->is_read) {
        op_read_repair(op);
    }
    if (release) {
        op_release(op);
    }
}

/* A replica that did not acknowledge a write in time gets a hint kept
 * here, even when a fallback was tried (Cassandra does the same), so that
 * it gets back what it missed without waiting for anti-entropy. */
static void op_hint_locally(coord_op_t *op, coord_slot_t *s)
{
    kv_t *kv = op->kv;
    if (op->is_read || !kv->cfg.hinted_handoff || kv->handoff == NULL) {
        return;
    }
    local_work(kv, op, s->owner);
}

static void on_replica_reply(void *arg, int rc, const wire_msg_t *reply)
{
    coord_slot_t *s = arg;
    coord_op_t *op = s->op;
    if (rc != 0 || reply->status != 0) {
        /* Only a replica that did not answer gets a hint: one that refused
         * the write (its own limits, a damaged object) would refuse the
         * hint forever. */
        if (rc != 0) {
            op_hint_locally(op, s);
        }
        op_settle(op, s, false, NULL);
        return;
    }
    if (!op->is_read) {
        op_settle(op, s, true, NULL);
        return;
    }
    obj_t o;
    obj_init(&o);
    bool ok = reply->objlen == 0 ||
              obj_decode(reply->obj, reply->objlen, &op->kv->limits, &o) == 0;
    op_settle(op, s, ok, &o);
    obj_free(&o);
}

/* Drops the initiator's reference; also settles an op that had nothing to
 * wait for. */
static void op_dispatched(coord_op_t *op)
{
    op_settle(op, NULL, false, NULL);
    op_release(op);
}

/* Settles a slot that was never sent (no peer, no memory). Every settle
 * of a slot drops one reference, so take the one a send would have. */
static void op_fail_unsent(coord_op_t *op, coord_slot_t *s)
{
    op_hold(op);
    op_hint_locally(op, s);
    op_settle(op, s, false, NULL);
}

/* Sends msg (taken over, as rpc_call_in takes it) to slot i's peer, for
 * the request `in` (corked with its batch; NULL: none); on failure to
 * start, settles it as failed. */
static void op_send(coord_op_t *op, size_t i, buf_t *msg, const rpc_req_t *in)
{
    kv_t *kv = op->kv;
    op_hold(op);
    if (rpc_call_in(kv->rpc, in, op->slot[i].peer, msg, op->timeout_ms,
                    on_replica_reply, &op->slot[i]) != 0) {
        op_hint_locally(op, &op->slot[i]);
        op_settle(op, &op->slot[i], false, NULL);
    }
}

/* Picks the next healthy fallback beyond the preference list, for a
 * replica the failure detector sees down or the transport cannot reach
 * (sloppy quorum, Dynamo 4.6).
 * *cursor walks the fallbacks so each is used at most once. Returns its
 * index or rt->count if there is none. */
static size_t next_fallback(const cluster_route_t *rt, size_t *cursor)
{
    while (*cursor < rt->count) {
        size_t j = (*cursor)++;
        if (rt->node[j].up && rt->node[j].reach && !rt->node[j].self) {
            return j;
        }
    }
    return rt->count;
}

/* Fills slot i for preference-list node i: the node itself if it is up
 * and reachable, else (sloppy quorum) a fallback that stands in for it,
 * else nobody (peer NULL). A node this one cannot reach (rpc_peer_reachable:
 * no connection and a failed redial, or unanswered requests) is treated as
 * down at once, before the detector convicts it, so the quorum does not
 * wait on it and its copy goes to a fallback with a hint now. */
static void op_assign(coord_op_t *op, const cluster_route_t *rt, size_t i,
                      size_t *cursor)
{
    coord_slot_t *s = &op->slot[i];
    s->self = rt->node[i].self;
    snprintf(s->owner, sizeof(s->owner), "%s", rt->node[i].id);
    s->peer = rt->node[i].peer;
    s->fallback = false;
    if (s->self || (rt->node[i].up && rt->node[i].reach)) {
        return;
    }
    s->peer = NULL;
    if (op->kv->cfg.sloppy_quorum) {
        size_t j = next_fallback(rt, cursor);
        if (j < rt->count) {
            s->peer = rt->node[j].peer;
            s->fallback = true;
        }
    }
}

/* When fewer than `needed` replicas (fallbacks included) can be asked,
 * the op cannot succeed: it fails now with KV_EUNAVAIL before anything is
 * written or sent (Cassandra's UnavailableException), so that a write
 * refused this way is known not written, instead of being applied here
 * and reported indeterminate after waiting for its deadline. Frees op
 * (nothing else holds it yet) and returns true then. */
static bool op_unavailable(coord_op_t *op, int needed, coord_done_fn done,
                           void *arg)
{
    int live = 0;
    for (size_t i = 0; i < op->nslots; i++) {
        live += op->slot[i].self || op->slot[i].peer != NULL;
    }
    if (live >= needed) {
        return false;
    }
    metric_inc(&op->kv->metrics, M_QUORUM_FAILURES);
    op_release(op);
    done(arg, KV_EUNAVAIL, 0, needed, NULL);
    return true;
}

/* ------------------------------------------------------------ forwarding */

typedef struct fwd {
    kv_t *kv;
    bool is_read;
    coord_done_fn cb;
    void *arg;
    /* The replicas, best first (coord_forward). A hop that was not sent
     * (KV_EUNAVAIL: it reached no connection) goes to the next candidate
     * at once; one sent and not answered within its hop's time (twice the
     * round trip observed to that peer, rpc_peer_hop_ms) goes there too.
     * For a write that is the only retry, and it carries its client
     * write's token (WIRE_F_TOKEN), so if both coordinators apply it the
     * replicas keep one of the two siblings (obj_update). A read also
     * races (Cassandra's speculative retry): when its candidate has not
     * answered within the latency bound observed to it (half the hop:
     * srtt + 4 rttvar), the next candidate is asked as well, and the
     * first answer wins. The last candidate gets all the time left. */
    rpc_peer_t *cand[CLUSTER_MAX_ROUTE];
    size_t ncand;
    uint8_t *msg;
    size_t msglen;
    int64_t deadline_ms;
    nng_aio *race; /* reads: the timer that races the next candidate */
    /* Under mu (callbacks of several hops and the timer race): */
    pthread_mutex_t mu;
    int refs;      /* hops in flight, the armed timer, and the sender's */
    size_t next;   /* the next candidate to ask */
    int inflight;  /* hops sent and not yet called back */
    bool armed;    /* the timer is running */
    bool answered; /* the caller has its answer: later ones are dropped */
    bool sent_any; /* some hop may have reached a coordinator */
    bool refused;  /* a coordinator refused (KV_EUNAVAIL), with: */
    int refused_acked;
    int refused_needed;
} fwd_t;

/* A client write's token: random, so that two clients never share one
 * (a shared token would merge two writes into one version); never 0. */
static uint64_t write_token(void)
{
    uint64_t t = 0;
    while (t == 0) {
        if (getrandom(&t, sizeof(t), 0) != (ssize_t)sizeof(t)) {
            t = (uint64_t)clk_mono_ms() * UINT64_C(0x9e3779b97f4a7c15) ^
                (uint64_t)(uintptr_t)&t;
        }
    }
    return t;
}

static void on_forward_reply(void *arg, int rc, const wire_msg_t *reply);

/* Sends the request to the next candidate that takes it (called with
 * f->mu held; released around rpc_call, which may call back at once).
 * Returns 0 when some hop is in flight (this one or an earlier one) or
 * the answer was given meanwhile, else why none can be: KV_EUNAVAIL when
 * nothing reached a coordinator, KV_ETIMEDOUT when one may have or the
 * deadline has passed. */
static int fwd_send_locked(fwd_t *f, bool race)
{
    for (;;) {
        if (f->answered) {
            return 0;
        }
        int64_t left = f->deadline_ms - clk_mono_ms();
        if (left <= 0 || f->next >= f->ncand) {
            if (f->inflight > 0) {
                return 0;
            }
            /* Nothing sent and unanswered: nothing was written, unless
             * the deadline passed with no coordinator's refusal heard. */
            bool unwritten = !f->sent_any && (left > 0 || f->refused);
            return unwritten ? KV_EUNAVAIL : KV_ETIMEDOUT;
        }
        rpc_peer_t *target = f->cand[f->next++];
        int hop = rpc_peer_hop_ms(target);
        int64_t tmo = f->next < f->ncand && hop < left ? hop : left;
        if (race) {
            metric_inc(&f->kv->metrics, M_FORWARD_RACES);
            race = false; /* a candidate after it is a plain retry */
        } else if (f->next > 1) {
            metric_inc(&f->kv->metrics, M_FORWARD_RETRIES);
        }
        buf_t b;
        buf_init(&b);
        buf_put(&b, f->msg, f->msglen);
        metric_inc(&f->kv->metrics, M_FORWARDS);
        f->inflight++;
        f->refs++;
        pthread_mutex_unlock(&f->mu);
        int rc = rpc_call(f->kv->rpc, target, &b, (int)(tmo > 0 ? tmo : 1),
                          on_forward_reply, f);
        pthread_mutex_lock(&f->mu);
        if (rc == 0) {
            int64_t wait = hop / 2;
            if (f->race != NULL && !f->armed && !f->answered &&
                f->next < f->ncand && wait < left) {
                f->armed = true;
                f->refs++;
                nng_sleep_aio((nng_duration)wait, f->race);
            }
            return 0;
        }
        f->inflight--;
        f->refs--;
        if (rc != KV_EUNAVAIL) {
            return f->inflight > 0 || f->answered ? 0 : rc;
        }
        /* Not sent (the peer has no connection): the next one, now. */
    }
}

static void fwd_unref(fwd_t *f)
{
    pthread_mutex_lock(&f->mu);
    bool gone = --f->refs == 0;
    pthread_mutex_unlock(&f->mu);
    if (gone) {
        if (f->race != NULL) {
            nng_aio_reap(f->race); /* may be its own callback running */
        }
        pthread_mutex_destroy(&f->mu);
        free(f->msg);
        free(f);
    }
}

/* Gives the caller its answer: rc with reply (a coordinator's, or NULL). */
static void fwd_answer(fwd_t *f, int rc, const wire_msg_t *reply)
{
    if (f->race != NULL) {
        nng_aio_cancel(f->race); /* its callback drops its reference */
    }
    obj_t o;
    obj_init(&o);
    int acked = 0;
    int needed = 0;
    if (rc == 0) {
        rc = reply->status;
        acked = reply->acked;
        needed = reply->needed;
        if (rc == 0 && f->is_read && reply->objlen > 0) {
            rc = obj_decode(reply->obj, reply->objlen, &f->kv->limits, &o);
            if (rc == KV_ECORRUPT) {
                rc = KV_EPROTO;
            }
        }
    } else if (rc == KV_EUNAVAIL || rc == KV_ECLOSED) {
        /* Nothing reached a coordinator: nothing was written. A refusal
         * says how many replicas the coordinator could ask. */
        if (rc == KV_EUNAVAIL && f->refused) {
            acked = f->refused_acked;
            needed = f->refused_needed;
        }
    } else if (rc != KV_ETIMEDOUT && !f->is_read) {
        /* A write a coordinator may have received and applied is
         * indeterminate, not "nothing written" (found by the nemesis
         * harness: a coordinator killed right after applying a write made
         * its client report KV_EUNAVAIL for a value that then stayed
         * visible). */
        rc = KV_EQUORUM;
    }
    f->cb(f->arg, rc, acked, needed, f->is_read ? &o : NULL);
    obj_free(&o);
}

static void on_forward_reply(void *arg, int rc, const wire_msg_t *reply)
{
    fwd_t *f = arg;
    /* A coordinator that answers KV_EUNAVAIL wrote nothing (it could not
     * ask enough replicas, or is none): another may do better. */
    bool refused = rc == 0 && reply->status == KV_EUNAVAIL;
    pthread_mutex_lock(&f->mu);
    f->inflight--;
    bool answer = !f->answered;
    if (answer && (rc == KV_EUNAVAIL || rc == KV_ETIMEDOUT || refused)) {
        if (rc == KV_ETIMEDOUT) {
            f->sent_any = true;
        }
        if (refused) {
            f->refused = true;
            f->refused_acked = reply->acked;
            f->refused_needed = reply->needed;
        }
        int again = fwd_send_locked(f, false);
        answer = again != 0; /* else another hop will answer */
        rc = again;
        reply = NULL;
    }
    f->answered = f->answered || answer;
    pthread_mutex_unlock(&f->mu);
    if (answer) {
        fwd_answer(f, rc, reply);
    }
    fwd_unref(f);
}

/* The race timer: the hop in flight is slower than its peer usually is,
 * so the next candidate is asked too (or the timer was cancelled). */
static void on_race(void *arg)
{
    fwd_t *f = arg;
    bool fired = nng_aio_result(f->race) == 0;
    pthread_mutex_lock(&f->mu);
    f->armed = false;
    int rc = 0;
    if (fired && !f->answered) {
        rc = fwd_send_locked(f, true);
        f->answered = f->answered || rc != 0; /* may be answered meanwhile */
    }
    pthread_mutex_unlock(&f->mu);
    if (rc != 0) {
        fwd_answer(f, rc, NULL);
    }
    fwd_unref(f);
}

/* Hands the request to a replica: first those this node's failure
 * detector sees up and its transport can reach, in ring order; then those
 * it can reach though the detector says down (a view may lag); those it
 * cannot reach last. One seen down that has no connection is not asked at
 * all: a hop to it would only wait for a dial to a node the detector (or,
 * for a client, the member it asked) already judged gone, which for a
 * node that just stopped takes up to the transport's 1 s connect grace. */
static void coord_forward(kv_t *kv, const cluster_route_t *rt, buf_t *msg,
                          bool is_read, int timeout_ms, coord_done_fn done,
                          void *arg)
{
    fwd_t *f = calloc(1, sizeof(*f));
    if (f == NULL || msg->oom) {
        free(f);
        buf_free(msg);
        done(arg, KV_ENOMEM, 0, 0, NULL);
        return;
    }
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < rt->n; i++) {
            int rank = !rt->node[i].reach ? 2 : rt->node[i].up ? 0 : 1;
            bool gone = !rt->node[i].up && !rt->node[i].conn;
            if (!rt->node[i].self && !gone && rank == pass) {
                f->cand[f->ncand++] = rt->node[i].peer;
            }
        }
    }
    if (f->ncand == 0) {
        free(f);
        buf_free(msg);
        done(arg, KV_EUNAVAIL, 0, 0, NULL);
        return;
    }
    f->kv = kv;
    f->is_read = is_read;
    f->cb = done;
    f->arg = arg;
    f->msg = buf_steal(msg, &f->msglen);
    f->deadline_ms = clk_mono_ms() + timeout_ms + COORD_FORWARD_MARGIN_MS;
    pthread_mutex_init(&f->mu, NULL);
    f->refs = 1; /* ours, until the first hop is on its way */
    if (is_read && f->ncand > 1 && nng_aio_alloc(&f->race, on_race, f) != 0) {
        f->race = NULL; /* no memory for a timer: hop after hop, no race */
    }
    pthread_mutex_lock(&f->mu);
    int rc = fwd_send_locked(f, false);
    f->answered = f->answered || rc != 0; /* may be answered meanwhile */
    pthread_mutex_unlock(&f->mu);
    if (rc != 0) {
        fwd_answer(f, rc, NULL);
    }
    fwd_unref(f);
}

/* ------------------------------------------------------------ operations */

/* The coordinator's own grouped write has committed (or failed). */
static void on_local_applied(void *arg, uint64_t u, int rc)
{
    (void)u;
    coord_op_t *op = arg;
    coord_slot_t *s = NULL;
    for (size_t i = 0; i < op->nslots && s == NULL; i++) {
        s = op->slot[i].self ? &op->slot[i] : NULL;
    }
    if (s == NULL) {
        op_release(op); /* cannot happen: a coordinator owns the key */
        return;
    }
    op_settle(op, s, rc == 0, NULL);
}

void coord_write(kv_t *kv, const void *key, size_t klen, const vc_t *ctx,
                 const void *val, size_t vlen, bool tombstone, uint64_t token,
                 int w, int timeout_ms, bool may_forward, const rpc_req_t *in,
                 coord_done_fn done, void *arg)
{
    cluster_route_t rt;
    int rc = cluster_route(kv, key, klen, &rt);
    if (rc != 0) {
        done(arg, rc, 0, 0, NULL);
        return;
    }
    int tmo = timeout_ms > 0 ? timeout_ms : kv->cfg.timeout_ms;
    bool owner = false;
    for (size_t i = 0; i < rt.n; i++) {
        owner = owner || rt.node[i].self;
    }
    if (!owner && (!may_forward || kv->rpc == NULL)) {
        /* A forwarded write is never forwarded again: views of the ring
         * that disagree must not bounce a request around. */
        done(arg, KV_EUNAVAIL, 0, 0, NULL);
        return;
    }
    if (!owner) {
        buf_t ctxb;
        buf_init(&ctxb);
        if (ctx != NULL && vc_context_encode(ctx, &ctxb) != 0) {
            buf_free(&ctxb);
            done(arg, KV_ENOMEM, 0, 0, NULL);
            return;
        }
        buf_t b;
        buf_init(&b);
        uint16_t flags = (uint16_t)((tombstone ? WIRE_F_TOMBSTONE : 0) |
                                    (ctx != NULL ? WIRE_F_HAS_CTX : 0));
        wire_build_coord_put(&b, rpc_next_id(kv->rpc), flags, key, klen, val,
                             vlen, ctxb.p, ctxb.len, (uint8_t)w, (uint32_t)tmo,
                             token != 0 ? token : write_token());
        buf_free(&ctxb);
        coord_forward(kv, &rt, &b, false, tmo, done, arg);
        return;
    }

    coord_op_t *op = op_new(kv, key, klen, false, done, arg);
    if (op == NULL) {
        done(arg, KV_ENOMEM, 0, 0, NULL);
        return;
    }
    int needed = eff_quorum(w, kv->cfg.w, rt.n);
    op->needed = needed;
    op->timeout_ms = tmo;
    /* For an entry of a received batch the local write joins the batch's
     * group, and counts once the group commits (on_local_applied), like a
     * replica's acknowledgement; otherwise it is durable now. */
    replica_group_t *g = replica_group_of(in);
    op->nslots = rt.n;
    size_t cursor = rt.n;
    for (size_t i = 0; i < rt.n; i++) {
        op_assign(op, &rt, i, &cursor);
        if (!op->slot[i].self || g != NULL) {
            op->outstanding++;
        }
    }
    if (op_unavailable(op, needed, done, arg)) {
        return;
    }
    obj_t o;
    obj_init(&o);
    buf_t enc; /* o as stored: what the other replicas are sent */
    buf_init(&enc);
    buf_t *encp = rt.n > 1 ? &enc : NULL;
    if (g != NULL) {
        op_hold(op);
        rc = replica_write_grouped(g, key, klen, ctx, val, vlen, tombstone,
                                   token, &o, encp, on_local_applied, op, 0);
        if (rc != 0) {
            op_release(op);
        }
    } else {
        rc = replica_write(kv, NULL, key, klen, ctx, val, vlen, tombstone,
                           token, &o, encp);
    }
    if (rc != 0) {
        obj_free(&o);
        buf_free(&enc);
        /* The verdict is given here: no settle may give another. */
        pthread_mutex_lock(&op->mu);
        op->done = true;
        pthread_mutex_unlock(&op->mu);
        op_dispatched(op);
        done(arg, rc, 0, needed, NULL);
        return;
    }
    /* Under the lock: a grouped local write may already be settling on
     * the group's thread (on_local_applied). merged is kept for hints to
     * replicas that do not acknowledge. */
    pthread_mutex_lock(&op->mu);
    if (g == NULL) {
        op->acked = 1;
    }
    obj_free(&op->merged);
    op->merged = o;
    pthread_mutex_unlock(&op->mu);
    for (size_t i = 0; i < rt.n; i++) {
        coord_slot_t *s = &op->slot[i];
        if (s->self) {
            continue;
        }
        if (s->peer == NULL) {
            op_fail_unsent(op, s);
            continue;
        }
        buf_t msg;
        buf_init(&msg);
        if (s->fallback) {
            metric_inc(&kv->metrics, M_HINTED_WRITES);
            wire_build_hinted(&msg, WIRE_REPLICA_PUT, rpc_next_id(kv->rpc),
                              s->owner, key, klen, enc.p, enc.len);
        } else {
            wire_build_replica_put(&msg, rpc_next_id(kv->rpc), key, klen, enc.p,
                                   enc.len);
        }
        op_send(op, i, &msg, in);
    }
    buf_free(&enc);
    op_dispatched(op);
}

/* The local replica's part of a read that must read a file, on the pool. */
static void self_read_run(void *arg)
{
    coord_slot_t *s = arg;
    coord_op_t *op = s->op;
    obj_t o;
    obj_init(&o);
    int rc = replica_read(op->kv, op->key, op->klen, &o);
    op_settle(op, s, rc == 0, &o);
    obj_free(&o);
}

/* Reads the local replica for slot s. From memory where it can (the
 * memtables and the block cache), so that a read started on an NNG thread
 * costs no hand-off in the common case; a read that needs a file runs here
 * if the caller may block, else on the pool (a full queue fails the slot
 * with KV_EBUSY, as a busy replica would answer). */
static void op_read_self(coord_op_t *op, coord_slot_t *s, bool may_block)
{
    kv_t *kv = op->kv;
    obj_t o;
    obj_init(&o);
    op_hold(op); /* the answer's reference, dropped by op_settle */
    int rc = may_block || kv->pool == NULL
                 ? replica_read(kv, op->key, op->klen, &o)
                 : replica_read_cached(kv, op->key, op->klen, &o);
    if (rc == STORE_EWOULDBLOCK) {
        rc = pool_submit(kv->pool, self_read_run, s);
        if (rc == 0) {
            obj_free(&o);
            return;
        }
        if (rc == KV_EBUSY) {
            metric_inc(&kv->metrics, M_POOL_REFUSED);
        }
    }
    op_settle(op, s, rc == 0, &o);
    obj_free(&o);
}

void coord_read(kv_t *kv, const void *key, size_t klen, int r, int timeout_ms,
                bool may_block, const rpc_req_t *in, coord_done_fn done,
                void *arg)
{
    cluster_route_t rt;
    int rc = cluster_route(kv, key, klen, &rt);
    if (rc != 0) {
        done(arg, rc, 0, 0, NULL);
        return;
    }
    int tmo = timeout_ms > 0 ? timeout_ms : kv->cfg.timeout_ms;
    bool owner = false;
    for (size_t i = 0; i < rt.n; i++) {
        owner = owner || rt.node[i].self;
    }
    if (kv->store == NULL || (!owner && in == NULL)) {
        /* A client holds no data, and a node that is no replica of the
         * key hands the read to one that is, as it does a write: the
         * same coordinator then picks the same fallbacks for both (a
         * coordinator never picks itself), so a read finds the hint a
         * write left on a fallback. A forwarded read (in) is never
         * forwarded again. */
        buf_t b;
        buf_init(&b);
        wire_build_coord_get(&b, rpc_next_id(kv->rpc), key, klen, (uint8_t)r,
                             (uint32_t)tmo);
        coord_forward(kv, &rt, &b, true, tmo, done, arg);
        return;
    }
    coord_op_t *op = op_new(kv, key, klen, true, done, arg);
    if (op == NULL) {
        done(arg, KV_ENOMEM, 0, 0, NULL);
        return;
    }
    op->needed = eff_quorum(r, kv->cfg.r, rt.n);
    op->timeout_ms = tmo;
    op->nslots = rt.n;
    size_t cursor = rt.n;
    for (size_t i = 0; i < rt.n; i++) {
        op_assign(op, &rt, i, &cursor);
        op->outstanding++;
    }
    if (op_unavailable(op, op->needed, done, arg)) {
        return;
    }
    coord_slot_t *self = NULL;
    for (size_t i = 0; i < rt.n; i++) {
        coord_slot_t *s = &op->slot[i];
        if (s->self) {
            self = s; /* read after the requests are on their way */
            continue;
        }
        if (s->peer == NULL) {
            op_fail_unsent(op, s);
            continue;
        }
        buf_t msg;
        buf_init(&msg);
        if (s->fallback) {
            wire_build_hinted(&msg, WIRE_REPLICA_GET, rpc_next_id(kv->rpc),
                              s->owner, key, klen, NULL, 0);
        } else {
            wire_build_key(&msg, WIRE_REPLICA_GET, rpc_next_id(kv->rpc), key,
                           klen);
        }
        op_send(op, i, &msg, in);
    }
    if (self != NULL) {
        op_read_self(op, self, may_block);
    }
    op_dispatched(op);
}

/* --------------------------------------------------------------- handler */


void coord_reply_obj(rpc_req_t *req, uint8_t type, uint64_t id, int rc,
                     int acked, int needed, const obj_t *o)
{
    buf_t enc;
    buf_init(&enc);
    /* An absent key travels as an empty object. */
    if (rc == 0 && o != NULL && (o->n > 0 || o->cc.n > 0) &&
        obj_encode(o, &enc) != 0) {
        rc = KV_ENOMEM;
        buf_free(&enc);
    }
    buf_t b;
    buf_init(&b);
    wire_build_obj_reply(&b, type, id, (uint16_t)rc, (uint8_t)acked,
                         (uint8_t)needed, enc.p, enc.len);
    buf_free(&enc);
    rpc_reply(req, &b);
}

static void on_replica_put_applied(void *arg, uint64_t id, int rc)
{
    rpc_reply_status(arg, WIRE_REPLICA_PUT, id, rc);
}

void *coord_batch_begin(void *arg)
{
    return replica_group_begin(arg);
}

void coord_batch_end(void *arg, void *ctx)
{
    (void)arg;
    replica_group_end(ctx);
}


/* The checks every keyed request to a replica shares. */
static bool replica_request_ok(kv_t *kv, rpc_req_t *req, const wire_msg_t *m)
{
    if (m->klen > kv->cfg.max_key_size) {
        coord_reply_obj(req, m->type, m->id, KV_EKEYTOOBIG, 0, 0, NULL);
        return false;
    }
    return true;
}

/* Copies a message's owner id (a hinted request) into a string. */
static void owner_string(const wire_msg_t *m, char owner[WIRE_MAX_ID + 1])
{
    memcpy(owner, m->owner, m->ownerlen);
    owner[m->ownerlen] = '\0';
}

/* REPLICA_PUT: join the object into this replica, or keep it as a hint
 * for the owner this node stands in for (sloppy quorum). */
static void handle_replica_put(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    if (!replica_request_ok(kv, req, m)) {
        return;
    }
    obj_t o;
    obj_init(&o);
    int rc = obj_decode(m->obj, m->objlen, &kv->limits, &o);
    replica_group_t *g = replica_group_of(req);
    if (rc == 0 && m->owner != NULL) {
        /* A hint takes the hint's lock, never a key's stripe, so it cannot
         * wait for the batch's group: it needs no part in it. */
        char owner[WIRE_MAX_ID + 1];
        owner_string(m, owner);
        rc = handoff_store(kv, owner, m->key, m->klen, &o);
    } else if (rc == 0) {
        metric_inc(&kv->metrics, M_REPLICA_WRITES);
        if (g != NULL) {
            rc = replica_merge_grouped(g, m->key, m->klen, &o,
                                       on_replica_put_applied, req, m->id);
            obj_free(&o);
            if (rc != 0) {
                rpc_reply_status(req, m->type, m->id, rc);
            }
            return; /* answered once the group commits */
        }
        rc = replica_merge(kv, NULL, m->key, m->klen, &o, NULL);
    }
    obj_free(&o);
    rpc_reply_status(req, m->type, m->id, rc);
}

/* Answers a REPLICA_GET or LOCAL_GET with this replica's object (merged
 * with the hint kept for owner, when not NULL). May read the store's
 * files: on the pool only. */
static void replica_get_answer(kv_t *kv, rpc_req_t *req, uint8_t type,
                               uint64_t id, const char *owner, const void *key,
                               size_t klen)
{
    obj_t o;
    obj_init(&o);
    int rc = replica_read(kv, key, klen, &o);
    if (rc == 0 && owner != NULL) {
        rc = handoff_read(kv, owner, key, klen, &o);
    }
    metric_inc(&kv->metrics, M_REPLICA_READS);
    coord_reply_obj(req, type, id, rc, rc == 0, 1, &o);
    obj_free(&o);
}

/* A read that needs the store's files (or a hint), handed to the pool. */
typedef struct deferred_get {
    kv_t *kv;
    rpc_req_t *req;
    uint8_t type;
    uint64_t id;
    bool hinted;
    char owner[WIRE_MAX_ID + 1];
    size_t klen;
    uint8_t key[];
} deferred_get_t;

static void deferred_get_run(void *arg)
{
    deferred_get_t *d = arg;
    replica_get_answer(d->kv, d->req, d->type, d->id,
                       d->hinted ? d->owner : NULL, d->key, d->klen);
    free(d);
}

/*
 * REPLICA_GET and LOCAL_GET: this replica's object (or the hint kept for
 * the owner named in the request). Registered to run on the NNG thread:
 * a read the memtables and the block cache can answer (most of them) is
 * answered here, with no hand-off; one that would read a file, or needs
 * the hints, goes to the pool, so the thread never waits for a disk.
 */
static void handle_replica_get(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    if (!replica_request_ok(kv, req, m)) {
        return;
    }
    if (m->owner == NULL) {
        obj_t o;
        obj_init(&o);
        int rc = replica_read_cached(kv, m->key, m->klen, &o);
        if (rc != STORE_EWOULDBLOCK) {
            metric_inc(&kv->metrics, M_REPLICA_READS);
            coord_reply_obj(req, m->type, m->id, rc, rc == 0, 1, &o);
            obj_free(&o);
            return;
        }
        obj_free(&o);
    }
    deferred_get_t *d = malloc(sizeof(*d) + m->klen);
    int rc = KV_ENOMEM;
    if (d != NULL) {
        *d = (deferred_get_t){kv, req, m->type, m->id, m->owner != NULL, "",
                              m->klen};
        if (d->hinted) {
            owner_string(m, d->owner);
        }
        memcpy(d->key, m->key, m->klen);
        rc = kv->pool != NULL ? pool_submit(kv->pool, deferred_get_run, d)
                              : (deferred_get_run(d), 0);
        if (rc == 0) {
            return;
        }
        free(d);
    }
    coord_reply_obj(req, m->type, m->id, rc, 0, 0, NULL);
}

/* The requests this module answers; only a node that holds data (not a
 * client) registers them. */
static const struct {
    uint8_t type;
    unsigned run; /* enum rpc_run, | RPC_FROM_NODES */
    rpc_handler_fn fn;
} coord_handlers[] = {
    /* Replica traffic comes from members only (TLS); LOCAL_GET is a read
     * for clients and tests. */
    {WIRE_REPLICA_PUT, RPC_RUN_POOLED | RPC_FROM_NODES, handle_replica_put},
    /* Inline: they answer from memory or hand themselves to the pool. */
    {WIRE_REPLICA_GET, RPC_RUN_INLINE | RPC_FROM_NODES, handle_replica_get},
    {WIRE_LOCAL_GET, RPC_RUN_INLINE, handle_replica_get},
};

int coord_open(kv_t *kv)
{
    if (kv->rpc == NULL || kv->store == NULL) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(coord_handlers) / sizeof(coord_handlers[0]);
         i++) {
        int rc =
            rpc_handle(kv->rpc, coord_handlers[i].type, coord_handlers[i].fn, kv,
                       coord_handlers[i].run);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
