/*
 * cluster.h - membership and the ring: who is in the cluster, where each
 * key lives, and how a node joins (cluster.c).
 */
#ifndef KV_CLUSTER_H
#define KV_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"
#include "kvdist.h"
#include "node.h"
#include "rpc.h"

#define CLUSTER_MAX_ROUTE 16 /* n is at most 16 (options.c) */

/* A routing snapshot for one key: the first `n` entries are its
 * preference list (n = min(configured n, members)). */
typedef struct cluster_route {
    size_t n;     /* the preference list: node[0..n) */
    size_t count; /* then the fallbacks, in ring order: node[n..count) */
    struct {
        rpc_peer_t *peer; /* NULL for this node itself */
        bool self;
        bool up; /* as this node's failure detector sees it */
        bool reach; /* as this node's transport sees it (rpc_peer_reachable) */
        bool conn;  /* it has a connection now (rpc_peer_connected) */
        char id[72];
    } node[CLUSTER_MAX_ROUTE];
} cluster_route_t;

/* Starts membership: loads the persisted member list, adds this node,
 * builds the ring and starts joining the seeds in the background. For
 * role=client it asks the seeds for the member list and waits (bounded by
 * timeout_ms) for the first answer. Returns 0, KV_EUNAVAIL (client: no
 * seed answered), KV_ENOMEM. */
int cluster_open(kv_t *kv);
/* Stops the background thread (before the transport goes away). */
void cluster_stop(kv_t *kv);
/* After cluster_stop, for a peer: tells every member not known to have
 * stopped that this node is shutting down (WIRE_SHUTDOWN), in parallel,
 * and waits for their answers, at most about 500 ms. They mark it down at
 * once, route nothing more to it and stop gossiping with it, so its
 * sockets go quiet before they close and its keys move to their fallbacks
 * without the failure detector's wait. Does nothing for a client or an
 * embedded store. */
void cluster_announce_stop(kv_t *kv);
/* Frees the state (after the transport is gone). Safe with NULL state. */
void cluster_close(kv_t *kv);

int cluster_route(kv_t *kv, const void *key, size_t klen, cluster_route_t *out);
size_t cluster_size(kv_t *kv);

bool cluster_is_up(kv_t *kv, const char *id);
/* The member's peer, NULL for this node or an unknown id. */
rpc_peer_t *cluster_peer(kv_t *kv, const char *id);
/* Appends the kvdist_member_up{id=...} and kvdist_ring_share_ratio{id=...}
 * gauges of every member. */
void cluster_render_metrics(kv_t *kv, buf_t *b);

int cluster_members(kv_t *kv, kv_member_t **out, size_t *count);
/* A member status's name (kv_member_status_name): "up", "down",
 * "joining", "leaving" or "unknown". */
const char *cluster_status_name(int status);
int cluster_preference_list(kv_t *kv, const void *key, size_t klen,
                            kv_member_t **out, size_t *count);

/*
 * Tells fn(arg) of every rebuild of the ring (a member joined, left or
 * changed its id), so a module above membership (anti-entropy) can follow
 * the ring without cluster.c calling up into it. One listener; fn NULL
 * removes it. fn runs on the thread that changed the membership with the
 * cluster's write lock held: it must not block or call cluster_*. Safe
 * with NULL state.
 */
typedef void (*cluster_ring_fn)(void *arg);
void cluster_on_ring_change(kv_t *kv, cluster_ring_fn fn, void *arg);

/* The fraction of the ring member id owns as primary (ring_ownership),
 * 0 for an unknown id. */
double cluster_ring_share(kv_t *kv, const char *id);

#endif /* KV_CLUSTER_H */
