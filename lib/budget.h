/*
 * budget.h - the bound on what the peer server holds of inbound messages
 * (the peer_buffer_budget option), as arithmetic rpc.c applies.
 *
 * NNG 1.5's transports allocate a whole message when its 8-byte length
 * header arrives (tcptran_pipe_recv_cb, nni_msg_alloc), before any code
 * here can see it, up to the receive limit (NNG_OPT_RECVMAXSZ) of the
 * listener, one limit for all its connections, applied by NNG at once to
 * those it has. So the budget is split in two halves:
 *  - the transport's: a connection holds at most two messages (one being
 *    received, one received that no worker has taken yet: rep0 receives
 *    the next only then), each no larger than the limit when its header
 *    came. So each connection is charged twice the largest limit in force
 *    since it opened (its "worst"), and the charges never exceed the
 *    half. The limit is a message with the largest value and key (and
 *    1 MiB for its clock, context or small siblings: value_msg) while
 *    that fits in three quarters of the half; then a new connection gets
 *    BUDGET_MSG_FLOOR, and so do the others (they stay charged with
 *    their worst); one that cannot get the floor is refused.
 *    When connections close, the limit goes back up as far as the
 *    charges (raised with it) allow, up to value_msg. So a sender never
 *    sends one message above value_msg (KV_ETOOBIG, rpc.c) and batches
 *    no more than the floor.
 *  - the workers': a message larger than BUDGET_SMALL a worker takes is
 *    held against the other half until the worker is done; one that does
 *    not fit is answered KV_EBUSY at once (smaller ones, at most one per
 *    worker, fit in the slack).
 * Replies to this node's own requests arrive on its dialers, one peer per
 * member, and are not counted here.
 *
 * Lock: mu guards pipes and limit; held is atomic.
 */
#ifndef KVDIST_BUDGET_H
#define KVDIST_BUDGET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The smallest receive limit a connection is admitted with: every
 * control message (gossip of KV_MEMBERS_MAX rows is about 100 KiB,
 * anti-entropy pages less) and values up to about 1 MiB fit. */
#define BUDGET_MSG_FLOOR ((size_t)1 << 20)
/* Messages up to this size are not counted against the workers' half. */
#define BUDGET_SMALL ((size_t)64 << 10)
/* The smallest budget: room for one connection at the floor and for one
 * message at the floor being handled. */
#define BUDGET_MIN (4 * BUDGET_MSG_FLOOR)

typedef struct budget_pipe {
    uint32_t id;
    size_t worst; /* twice the largest limit since it opened */
} budget_pipe_t;

typedef struct budget {
    size_t total;   /* the option */
    size_t msg_max; /* the largest message the wire limits allow */
    size_t value_msg; /* one carrying a value of the largest size */
    pthread_mutex_t mu;
    budget_pipe_t *pipes; /* connections admitted */
    size_t npipes, cap;
    size_t charged; /* sum of their worst */
    size_t limit;   /* the receive limit in force */
    _Atomic size_t held; /* by workers: messages above BUDGET_SMALL */
} budget_t;

/* total: the budget in bytes (at least BUDGET_MIN, or it is raised to
 * that); msg_max: the largest message the wire limits allow; value_msg:
 * one with the largest value and key (a write without siblings). */
void budget_init(budget_t *b, size_t total, size_t msg_max, size_t value_msg);
/* How many connections get a limit of at least value_msg, and how many
 * are admitted in all, when they arrive one after another and none
 * closes (for the log line at rpc_listen). */
void budget_capacity(size_t total, size_t msg_max, size_t value_msg,
                     unsigned *full, unsigned *all);
void budget_fini(budget_t *b);
/* The receive limit in force. */
size_t budget_limit(budget_t *b);
/* Connection id arrived: *limit gets the receive limit to set now (0: no
 * change). Returns false when it must be refused (nothing is charged). */
bool budget_pipe_added(budget_t *b, uint32_t id, size_t *limit);
/* Connection id closed (refused ones too: they are not found): *limit
 * as above. */
void budget_pipe_removed(budget_t *b, uint32_t id, size_t *limit);
/* A worker took a message of len bytes: true if it may be handled (then
 * budget_release(len) when done), false if it must be refused. */
bool budget_hold(budget_t *b, size_t len);
void budget_release(budget_t *b, size_t len);

#endif
