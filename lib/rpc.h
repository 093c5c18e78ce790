/*
 * rpc.h - the transport: the only code that touches NNG sockets (rpc.c).
 * Requests and replies are wire.c messages; TLS will plug in here.
 */
#ifndef KV_RPC_H
#define KV_RPC_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "kvdist.h"
#include "log.h"
#include "metrics.h"
#include "wire.h"

/* Messages in flight to one peer before its requests queue for a batch.
 * One: with the node's worker pool every message costs a hand-off at the
 * far end, so the larger batches that a single message in flight lets
 * queue cost less CPU per request than a second message saves in
 * latency (measured in README, "Batching"; tests use it too). */
#define RPC_INFLIGHT 1

typedef struct rpc rpc_t;
typedef struct rpc_peer rpc_peer_t;
typedef struct rpc_req rpc_req_t;

/* Called once per rpc_call: rc is 0 with the decoded reply (valid only
 * during the call), or an error with reply NULL:
 *   KV_EUNAVAIL  never sent: it reached no connection, so the peer did
 *                nothing with it;
 *   KV_ETIMEDOUT sent and not answered (the deadline passed, or the
 *                connection closed under it): the peer may have acted;
 *   KV_EPROTO, KV_ECLOSED, KV_ENOMEM.
 * Runs on an NNG thread: must not block for long. */
typedef void (*rpc_done_fn)(void *arg, int rc, const wire_msg_t *reply);

/* Called for each well-formed request of the type it was registered for
 * (rpc_handle), on an NNG thread. The handler must eventually call
 * rpc_reply(req, ...) exactly once, now or later (from any thread); msg is
 * valid only during the call. */
typedef void (*rpc_handler_fn)(void *arg, rpc_req_t *req,
                               const wire_msg_t *msg);

/* Called on the dispatching thread before the first entry of a received
 * batch: returns the batch's context (NULL: none), which the entries'
 * handlers reach through rpc_req_batch_ctx while they run. batch_end gets
 * it back after the last entry: what the handlers deferred to it (grouped
 * writes) is done before the requests they made for the batch
 * (rpc_call_in) are sent and before the batch is answered. Either may be
 * NULL. */
typedef void *(*rpc_batch_begin_fn)(void *arg);
typedef void (*rpc_batch_end_fn)(void *arg, void *ctx);

typedef struct rpc_config {
    wire_limits_t limits;
    /* peer_buffer_budget: what the server may hold of inbound messages
     * (budget.h); below BUDGET_MIN it is raised to that. */
    size_t buffer_budget;
    const kvlog_t *log;
    metrics_t *metrics;
    /* The URL the node will listen on (NULL: none): peers are dialled
     * from its host from the start, before rpc_listen. */
    const char *listen_url;
    rpc_batch_begin_fn batch_begin;
    rpc_batch_end_fn batch_end;
    void *batch_arg;
    /* Where handlers that may block run (the node's worker pool): returns
     * 0 once fn(task) is queued, else an error (the request is answered
     * with it). NULL: every handler runs on the NNG thread. */
    int (*submit)(void *arg, void (*fn)(void *task), void *task);
    void *submit_arg;
    const char *fault_file; /* the fault hook's file (copied); NULL, "": off */
    /* tls+tcp:// (read at rpc_create; all three or none): the CA that
     * signs every certificate of the cluster, and this process's own
     * certificate and key. node_id: the name a peer's certificate must
     * carry (NULL for a client), checked against our own at rpc_listen. */
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *node_id;
    /* The members (malloc'd: free the array), for telling who sent a request
     * over TLS; NULL: nobody counts as a member. */
    int (*members)(void *arg, kv_member_t **out, size_t *count);
    void *members_arg;
} rpc_config_t;

int rpc_create(const rpc_config_t *cfg, rpc_t **out);
/* How a handler runs: on the NNG thread that received the request (it
 * must not block: no store, no lock another thread holds for long), or
 * handed to the submit function of rpc_config_t (replica work). A batch
 * is always handed over whole: its entries' handlers and the batch hooks
 * run on one worker, in order. */
enum rpc_run { RPC_RUN_INLINE = 0, RPC_RUN_POOLED = 1 };
/* Or-ed into rpc_handle's run: only members may send this request. Over
 * tls+tcp:// a request of this type from a connection no member owns is
 * answered KV_EAUTH (rpc_req_from_node says how it is known); without
 * TLS nobody can be told apart and every request is served. */
#define RPC_FROM_NODES 0x10u

/*
 * Registers the handler of one request type, as the module that owns the
 * message does when it opens; before rpc_listen (the table is then read
 * without a lock). A request of a type nobody registered is answered
 * KV_ENOTSUP. Returns 0, or KV_EINVAL (a reply type, one registered
 * already, or after rpc_listen).
 */
int rpc_handle(rpc_t *rpc, uint8_t type, rpc_handler_fn fn, void *arg,
               unsigned run);
/* Starts serving requests at url, with the handlers registered so far:
 * the last step of opening a node. Returns 0, KV_EADDRINUSE, KV_EINVAL
 * (bad URL), KV_EIO. */
int rpc_listen(rpc_t *rpc, const char *url);
/* Closes every socket, waits for outstanding calls and handlers to finish,
 * frees everything. NULL is a no-op. */
void rpc_destroy(rpc_t *rpc);

/* The peer at url, dialled in the background (and redialled after a
 * failure); created on first use, valid until rpc_destroy. NULL on ENOMEM
 * or a bad URL. name is the member id expected there (NULL: unknown, a
 * seed): over tls+tcp:// its certificate must carry that name (CN or
 * SAN); one peer per (url, name). */
rpc_peer_t *rpc_peer(rpc_t *rpc, const char *url, const char *name);
const char *rpc_peer_url(const rpc_peer_t *p);
/* This node's own view of p, never gossiped (the failure detector stays
 * the authority on up and down): false while p has no connection and
 * cannot get one (never connected within a grace, or a redial failed
 * since its connection closed), or after requests sent to it timed out
 * twice in a row (a paused process keeps its connections); true again on
 * a new connection or any answer. Routing ranks such peers last, and
 * rpc_call fails at once with KV_EUNAVAIL to a peer without connection. */
bool rpc_peer_reachable(rpc_peer_t *p);
/* That grace: how long a peer never connected yet may take to be dialled
 * before calls to it fail at once (a refused dial ends it sooner). */
#define RPC_CONNECT_GRACE_MS 1000
/* p has a connection open now (true for NULL, this node). */
bool rpc_peer_connected(rpc_peer_t *p);
/* p's heartbeat advanced (cluster.c's gossip): clears the suspicion, and
 * for a second requests to p wait for NNG's redial rather than fail. */
void rpc_peer_heard(rpc_peer_t *p);
/* p said it is shutting down (cluster.c's SHUTDOWN): for 5 s, or until
 * rpc_peer_heard, calls to it fail at once with KV_EUNAVAIL (not sent)
 * and it is unreachable, so that nothing arrives while it closes its
 * sockets. */
void rpc_peer_stopping(rpc_peer_t *p);
bool rpc_peer_is_stopping(rpc_peer_t *p);
/* How long one hop to p should be given before the caller tries another
 * peer: twice the round-trip bound observed (RFC 6298's srtt + 4 rttvar),
 * within [150, 2000] ms; 500 ms before any answer; 150 ms while p has no
 * connection. */
int rpc_peer_hop_ms(rpc_peer_t *p);

/* The fault hook's "store_delay MS" (0 when off), for store_set_write_delay
 * (arg is the rpc_t): the hook's file holds the faults of the node. */
int rpc_fault_store_delay_ms(void *arg);
/* True when the fault hook is on (the fault_file option). */
bool rpc_fault_enabled(const rpc_t *rpc);

/* A fresh request id. */
uint64_t rpc_next_id(rpc_t *rpc);

/* Sends the message in msg (taken: msg is reset) and waits for the reply
 * in the background, for at most timeout_ms in all. Returns 0 (done will
 * be called exactly once) or an error (done will not be called). */
int rpc_call(rpc_t *rpc, rpc_peer_t *p, buf_t *msg, int timeout_ms,
             rpc_done_fn done, void *arg);
/* rpc_call made on behalf of the request `in` (NULL: none), from its
 * handler while it runs and before it is answered. When in is an entry of
 * a received batch, the message is corked: it waits in p's queue and goes
 * out with the other requests that batch's handlers made, once its
 * dispatch ends (so a batch of coordinated writes becomes one batch of
 * replica writes per replica). Otherwise it is rpc_call. */
int rpc_call_in(rpc_t *rpc, const rpc_req_t *in, rpc_peer_t *p, buf_t *msg,
                int timeout_ms, rpc_done_fn done, void *arg);

/* Whether req came over a connection a member owns: always true without
 * TLS (nobody can be told apart). Over TLS the accepting side does not
 * see the other side's certificate (NNG 1.5.2), so the first time a
 * connection asks for what only members may do, the node asks the
 * members whose address it comes from, each over a connection of its
 * own that checks the member's certificate (WIRE_CONN_CHECK), whether
 * they have a connection open from that address; the answer is kept for
 * the connection's life. May block for that (500 ms per member asked):
 * call it from a handler that runs pooled. */
bool rpc_req_from_node(const rpc_req_t *req);
/* The same without waiting, for a handler on an NNG thread: 0 (a
 * member's connection, or no TLS), KV_EBUSY while it is being found out
 * (the check runs on the pool), KV_EAUTH when no member owns it. */
int rpc_req_sender(const rpc_req_t *req);

/* rpc_call on the calling thread: sends msg (taken) and blocks until the
 * reply or the deadline (timeout_ms; rpc_call's bound is the only wait, so
 * this always returns). Returns 0 when the peer answered with status 0 and
 * a reply of type `type`, with *out (malloc'd, NULL when empty: the
 * caller frees it) and *outlen set to the reply's obj; otherwise the call's
 * error, the reply's status, KV_EPROTO (a reply of another type) or
 * KV_ENOMEM. Must not be called from a callback of the transport. */
int rpc_call_wait(rpc_t *rpc, rpc_peer_t *p, buf_t *msg, int timeout_ms,
                  uint8_t type, uint8_t **out, size_t *outlen);

/* One request to url on a connection made for it alone and closed after
 * the reply: for an address that is not a member's yet (cluster.c asks
 * the owner of a row to answer at its URL before admitting it), whose
 * peer would otherwise live until rpc_destroy. Sends msg (taken), blocks
 * the calling thread for at most timeout_ms (never from a callback of
 * the transport). Returns 0 with *reply decoded from *raw (malloc'd: the
 * caller frees it, also on error, when it is NULL), or KV_EUNAVAIL (no
 * connection in time), KV_ETIMEDOUT, KV_EPROTO (a malformed answer) or
 * KV_ENOMEM. name: as for rpc_peer. */
int rpc_probe(rpc_t *rpc, const char *url, const char *name, buf_t *msg,
              int timeout_ms, wire_msg_t *reply, void **raw);

/* The context batch_begin returned for the received batch req is an
 * entry of (rpc_config_t), or NULL for a request of its own or a batch
 * without one. Only valid from req's handler while it runs (the context
 * ends with the batch's dispatch), before req is answered. */
void *rpc_req_batch_ctx(const rpc_req_t *req);

/* Sends a reply (msg taken) for req and frees req. */
void rpc_reply(rpc_req_t *req, buf_t *msg);
/* Replies with a status alone (wire_build_simple's message). */
void rpc_reply_status(rpc_req_t *req, uint8_t type, uint64_t id, int rc);

#endif /* KV_RPC_H */
