/*
 * metrics.c - names, help texts and Prometheus rendering of the counters in
 * metrics.h. Owns the metric table; the values live in each kv_t, so two
 * nodes in one process count separately.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kvdist.h"

static const struct {
    const char *name;
    const char *help;
} metric_table[M__COUNT] = {
    [M_PUTS] = {"kvdist_puts_total", "Put calls that succeeded."},
    [M_GETS] = {"kvdist_gets_total",
                "Get calls that completed (found or not)."},
    [M_DELETES] = {"kvdist_deletes_total", "Delete calls that succeeded."},
    [M_PUT_ERRORS] = {"kvdist_put_errors_total", "Put calls that failed."},
    [M_GET_ERRORS] = {"kvdist_get_errors_total", "Get calls that failed."},
    [M_DELETE_ERRORS] = {"kvdist_delete_errors_total",
                         "Delete calls that failed."},
    [M_NOT_FOUND] = {"kvdist_not_found_total",
                     "Gets that found no live value."},
    [M_SIBLING_READS] = {"kvdist_sibling_reads_total",
                         "Gets that found more than one live sibling."},
    [M_SIBLINGS_CREATED] = {"kvdist_siblings_created_total",
                            "Writes that left more than one sibling."},
    [M_CORRUPT_OBJECTS] = {"kvdist_corrupt_objects_total",
                           "Stored objects that failed validation."},
    [M_CLOCK_PRUNED] = {"kvdist_clock_entries_pruned_total",
                        "Vector clock entries dropped by pruning."},
    [M_BYTES_WRITTEN] = {"kvdist_bytes_written_total",
                         "Encoded object bytes written to the local store."},
    [M_BYTES_READ] = {"kvdist_bytes_read_total",
                      "Encoded object bytes read from the local store."},
    [M_WIRE_MALFORMED] = {"kvdist_wire_malformed_total",
                          "Peer messages dropped because they did not "
                          "decode."},
    [M_RPC_CALLS] = {"kvdist_rpc_calls_total", "Requests sent to peers."},
    [M_RPC_BATCHES] = {"kvdist_rpc_batches_total",
                       "Messages to peers that carried several requests."},
    [M_RPC_RESENDS] = {"kvdist_rpc_resent_total",
                       "Requests sent again alone: their replies were too "
                       "large to share a batch reply."},
    [M_RPC_ERRORS] = {"kvdist_rpc_errors_total",
                      "Requests to peers that failed (not timeouts)."},
    [M_RPC_TIMEOUTS] = {"kvdist_rpc_timeouts_total",
                        "Requests to peers that timed out."},
    [M_RPC_UNSENT] = {"kvdist_rpc_unsent_total",
                      "Requests failed at once, never sent: the peer had "
                      "no connection and its redial failed."},
    [M_REPLICA_WRITES] = {"kvdist_replica_writes_total",
                          "Replica writes applied for other coordinators."},
    [M_REPLICA_READS] = {"kvdist_replica_reads_total",
                         "Replica reads served for other coordinators."},
    [M_FORWARDS] = {"kvdist_forwards_total",
                    "Requests forwarded to a node that coordinates them."},
    [M_FORWARD_RETRIES] = {"kvdist_forward_retries_total",
                           "Forwarded requests sent again to the next "
                           "coordinator: the first was unreachable, or did "
                           "not answer within its hop's time."},
    [M_FORWARD_RACES] = {"kvdist_forward_races_total",
                         "Forwarded reads also sent to the next coordinator "
                         "because the first had not answered within the "
                         "latency observed to it (speculative retry)."},
    [M_QUORUM_FAILURES] = {"kvdist_quorum_failures_total",
                           "Reads and writes that missed their quorum."},
    [M_READ_REPAIRS] = {"kvdist_read_repairs_total",
                        "Replicas sent a merged object by read repair."},
    [M_SIBLINGS_REFUSED] = {"kvdist_siblings_refused_total",
                            "Writes refused because the key had too many "
                            "siblings."},
    [M_HINTS_STORED] = {"kvdist_hints_stored_total",
                        "Hints stored here for replicas that missed a "
                        "write."},
    [M_HINTS_DELIVERED] = {"kvdist_hints_delivered_total",
                           "Hints delivered to and acknowledged by their "
                           "owner."},
    [M_HINTS_FAILED] = {"kvdist_hints_failed_total",
                        "Hint deliveries that failed (retried later)."},
    [M_HINTED_WRITES] = {"kvdist_hinted_writes_total",
                         "Replica writes sent to a fallback node on behalf "
                         "of a down one (sloppy quorum)."},
    [M_AAE_EXCHANGES] = {"kvdist_aae_exchanges_total",
                         "Anti-entropy exchanges this node started."},
    [M_AAE_TREE_NODES] = {"kvdist_aae_tree_nodes_total",
                          "Merkle tree hashes received in its exchanges."},
    [M_AAE_KEYS_COMPARED] = {"kvdist_aae_keys_compared_total",
                             "(key, digest) pairs received from differing "
                             "leaves in its exchanges."},
    [M_AAE_OBJECTS_SENT] = {"kvdist_aae_objects_sent_total",
                            "Objects its exchanges fetched or pushed."},
    [M_AAE_BYTES_SENT] = {"kvdist_aae_bytes_sent_total",
                          "Bytes of its anti-entropy requests."},
    [M_AAE_KEYS_REPAIRED] = {"kvdist_aae_keys_repaired_total",
                             "Local objects changed by anti-entropy."},
    [M_AAE_TREE_REBUILDS] = {"kvdist_aae_tree_rebuilds_total",
                             "Merkle tree rebuilds from the index."},
    [M_AAE_TREE_LOADS] = {"kvdist_aae_tree_loads_total",
                          "Merkle trees loaded as saved at a clean close."},
    [M_AAE_TREE_CORRUPT] = {"kvdist_aae_tree_corrupt_total",
                            "Saved Merkle trees that failed validation "
                            "(rebuilt instead)."},
    [M_AAE_INDEX_REPAIRED] = {"kvdist_aae_index_repaired_total",
                              "Damaged index entries recomputed from their "
                              "object."},
    [M_TOMBSTONES_PURGED] = {"kvdist_tombstones_purged_total",
                             "Tombstones garbage-collected after their grace "
                             "period, once every replica held them."},
    [M_HINTS_EXPIRED] = {"kvdist_hints_expired_total",
                         "Hints dropped undelivered because they were older "
                         "than the tombstone grace period."},
    [M_HTTP_REQUESTS] = {"kvdist_http_requests_total",
                         "HTTP API requests answered by this node."},
    [M_HTTP_2XX] = {"kvdist_http_2xx_total",
                    "HTTP API answers with a 2xx status."},
    [M_HTTP_3XX] = {"kvdist_http_3xx_total",
                    "HTTP API answers with a 3xx status (siblings)."},
    [M_HTTP_4XX] = {"kvdist_http_4xx_total",
                    "HTTP API answers with a 4xx status (client errors)."},
    [M_HTTP_5XX] = {"kvdist_http_5xx_total",
                    "HTTP API answers with a 5xx status (node or quorum "
                    "errors)."},
    [M_HTTP_REJECTED] = {"kvdist_http_rejected_total",
                         "HTTP connections refused with 503 because "
                         "max_clients connections were open."},
    [M_RESP_CONNECTIONS] = {"kvdist_resp_connections_total",
                            "RESP connections accepted and admitted."},
    [M_RESP_REJECTED] = {"kvdist_resp_rejected_total",
                         "RESP connections refused because max_clients "
                         "connections were open."},
    [M_RESP_ACCEPT_ERRORS] = {"kvdist_resp_accept_errors_total",
                              "Failed accepts on the RESP port (such as out "
                              "of files), each followed by a back-off."},
    [M_RESP_COMMANDS] = {"kvdist_resp_commands_total",
                         "RESP requests executed (any command, including "
                         "refused ones)."},
    [M_POOL_REFUSED] = {"kvdist_pool_refused_total",
                        "Requests refused with KV_EBUSY because the node's "
                        "worker queue was full."},
    [M_GOSSIP_REFUSED] = {"kvdist_gossip_rows_refused_total",
                          "Gossip rows refused as forged: an id or URL no "
                          "node could have, an incarnation ahead of this "
                          "node's clock, or a heartbeat beyond its age."},
    [M_MEMBERS_REFUSED] = {"kvdist_members_refused_total",
                           "Rows for a new member or a member's new URL "
                           "not admitted: the table was full "
                           "(max_members), nobody answered as that member "
                           "there, or it still answers at its old URL."},
    [M_MEMBER_PROBES] = {"kvdist_member_probes_total",
                         "Probes asking who answers at a URL before a row "
                         "for it is admitted."},
    [M_RPC_NOT_MEMBER] = {"kvdist_rpc_not_member_total",
                          "Requests only members may send (replica reads "
                          "and writes, anti-entropy, SHUTDOWN) refused with "
                          "KV_EAUTH: over TLS, no member owns the "
                          "connection they came on."},
    [M_PEER_CONNS_REFUSED] = {"kvdist_peer_connections_refused_total",
                              "Connections to the peer port closed at once: "
                              "peer_buffer_budget holds no more (each one "
                              "may hold two messages of at least 1 MiB)."},
    [M_PEER_MSGS_REFUSED] = {"kvdist_peer_messages_refused_total",
                             "Peer messages answered KV_EBUSY unhandled: "
                             "the half of peer_buffer_budget for messages "
                             "being handled was full."},
};

void metrics_init(metrics_t *m)
{
    for (int i = 0; i < M__COUNT; i++) {
        atomic_init(&m->v[i], 0);
    }
}

int metrics_lookup(const metrics_t *m, const char *name, uint64_t *value)
{
    for (int i = 0; i < M__COUNT; i++) {
        if (strcmp(metric_table[i].name, name) == 0) {
            *value = atomic_load_explicit(&m->v[i], memory_order_relaxed);
            return 0;
        }
    }
    return KV_ENOTFOUND;
}

static void render_line(buf_t *b, const char *name, const char *help,
                        const char *type, uint64_t value)
{
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help,
                     name, type, name, value);
    if (n > 0) {
        buf_put(b, line,
                (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
}

void metrics_render(const metrics_t *m, buf_t *b)
{
    for (int i = 0; i < M__COUNT; i++) {
        render_line(b, metric_table[i].name, metric_table[i].help, "counter",
                    atomic_load_explicit(&m->v[i], memory_order_relaxed));
    }
}

void metrics_render_gauge(buf_t *b, const char *name, const char *help,
                          uint64_t value)
{
    render_line(b, name, help, "gauge", value);
}

void metrics_render_counter(buf_t *b, const char *name, const char *help,
                            uint64_t value)
{
    render_line(b, name, help, "counter", value);
}
