/*
 * metrics.h - the node's counters: one atomic per metric, kept from the
 * first release so that operators (and tests) can see what the node did.
 */
#ifndef KV_METRICS_H
#define KV_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "codec.h"

/* Adding a metric: append an id here and a row in metrics.c's table. */
enum metric_id {
    M_PUTS,
    M_GETS,
    M_DELETES,
    M_PUT_ERRORS,
    M_GET_ERRORS,
    M_DELETE_ERRORS,
    M_NOT_FOUND,
    M_SIBLING_READS,
    M_SIBLINGS_CREATED,
    M_CORRUPT_OBJECTS,
    M_CLOCK_PRUNED,
    M_BYTES_WRITTEN,
    M_BYTES_READ,
    M_WIRE_MALFORMED,
    M_RPC_CALLS,
    M_RPC_BATCHES,
    M_RPC_RESENDS,
    M_RPC_ERRORS,
    M_RPC_TIMEOUTS,
    M_RPC_UNSENT,
    M_REPLICA_WRITES,
    M_REPLICA_READS,
    M_FORWARDS,
    M_FORWARD_RETRIES,
    M_FORWARD_RACES,
    M_QUORUM_FAILURES,
    M_READ_REPAIRS,
    M_SIBLINGS_REFUSED,
    M_HINTS_STORED,
    M_HINTS_DELIVERED,
    M_HINTS_FAILED,
    M_HINTED_WRITES,
    M_AAE_EXCHANGES,
    M_AAE_TREE_NODES,
    M_AAE_KEYS_COMPARED,
    M_AAE_OBJECTS_SENT,
    M_AAE_BYTES_SENT,
    M_AAE_KEYS_REPAIRED,
    M_AAE_TREE_REBUILDS,
    M_AAE_TREE_LOADS,
    M_AAE_TREE_CORRUPT,
    M_AAE_INDEX_REPAIRED,
    M_TOMBSTONES_PURGED,
    M_HINTS_EXPIRED,
    M_HTTP_REQUESTS, /* the HTTP API (http.c): every request answered */
    M_HTTP_2XX,
    M_HTTP_3XX,
    M_HTTP_4XX,
    M_HTTP_5XX,
    M_HTTP_REJECTED, /* connections refused: max_clients (http.c) */
    M_RESP_CONNECTIONS, /* the RESP front end (resp.c) */
    M_RESP_REJECTED,
    M_RESP_ACCEPT_ERRORS,
    M_RESP_COMMANDS,
    M_POOL_REFUSED, /* work the node's worker pool refused: full (node.c) */
    M_GOSSIP_REFUSED, /* forged gossip rows (cluster.c) */
    M_MEMBERS_REFUSED, /* members or moves not admitted (cluster.c) */
    M_MEMBER_PROBES,
    M_RPC_NOT_MEMBER, /* members-only requests refused (rpc.c, TLS) */
    M_PEER_CONNS_REFUSED, /* peer_buffer_budget refusals (rpc.c) */
    M_PEER_MSGS_REFUSED,
    M__COUNT
};

typedef struct metrics {
    _Atomic uint64_t v[M__COUNT];
} metrics_t;

static inline void metric_add(metrics_t *m, enum metric_id id, uint64_t n)
{
    atomic_fetch_add_explicit(&m->v[id], n, memory_order_relaxed);
}

static inline void metric_inc(metrics_t *m, enum metric_id id)
{
    metric_add(m, id, 1);
}

void metrics_init(metrics_t *m);
/* Finds a metric by its exposition name. Returns 0 or KV_ENOTFOUND. */
int metrics_lookup(const metrics_t *m, const char *name, uint64_t *value);
/* Appends every counter in the Prometheus text format. */
void metrics_render(const metrics_t *m, buf_t *b);
/* Appends one gauge line (with HELP and TYPE). */
void metrics_render_gauge(buf_t *b, const char *name, const char *help,
                          uint64_t value);
/* Appends one counter a module keeps itself (with HELP and TYPE). */
void metrics_render_counter(buf_t *b, const char *name, const char *help,
                            uint64_t value);

#endif /* KV_METRICS_H */
