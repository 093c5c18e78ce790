/*
 * aae_exchange.h - the WIRE_AE exchange protocol (aae_exchange.c): one
 * exchange of a range's tree with another replica, the requests that
 * carry it, and the answers to a peer's requests.
 */
#ifndef KV_AAE_EXCHANGE_H
#define KV_AAE_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "aae_index.h"
#include "codec.h"
#include "node.h"
#include "replica.h"
#include "rpc.h"

/* One synchronous WIRE_AE request of operation op (enum aae_op) with
 * payload q; *out (malloc'd, may be NULL when empty) is the reply's
 * payload. Returns 0 or the peer's / the transport's error. */
int aae_call(kv_t *kv, rpc_peer_t *peer, uint16_t op, const buf_t *q,
             uint8_t **out, size_t *outlen);

/* One exchange of group g with the replica at peer: descends the two
 * trees to the differing leaves, fetches and merges (replica_merge) what
 * the peer has differently or alone, and pushes back what it lacks. Runs
 * on the runner thread, which alone swaps the view g belongs to. */
int aae_exchange(kv_t *kv, aae_group_t *g, rpc_peer_t *peer);

/* The answers to a peer's AAE_OP_HASHES, _KEYS, _FETCH and _PUSH: each
 * decodes its request from r (bounds-checked: KV_EPROTO, nothing changed)
 * and appends its reply payload to out. open: the write group open on
 * this thread (the request is an entry of a received batch), which the
 * merges of a push are given (replica.h), or NULL. */
int aae_handle_hashes(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);
int aae_handle_keys(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);
int aae_handle_fetch(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);
int aae_handle_push(kv_t *kv, replica_group_t *open, rd_t *r, buf_t *out);

#endif /* KV_AAE_EXCHANGE_H */
