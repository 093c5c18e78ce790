/*
 * resp.h - the Redis-protocol (RESP2) front end of a peer node (resp.c).
 */
#ifndef KV_RESP_H
#define KV_RESP_H

#include "node.h"

/* Starts listening on kv->cfg.resp (HOST:PORT). Returns 0, KV_EADDRINUSE,
 * KV_EINVAL (address NNG cannot resolve), KV_ENOMEM, KV_EIO. */
int resp_start(kv_t *kv);

/* Stops accepting, closes every connection and waits until none is left
 * (operations in flight finish first: each has a deadline). Idempotent and
 * safe to call concurrently; a no-op when resp_start was not called. */
void resp_stop(kv_t *kv);

#endif /* KV_RESP_H */
