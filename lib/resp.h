/*
 * resp.h - the Redis-protocol (RESP2) front end of a peer node (resp.c).
 */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "node.h"

/* Starts listening on kv->cfg.resp (HOST:PORT). Returns 0, KV_EADDRINUSE,
 * KV_EINVAL (address NNG cannot resolve), KV_ENOMEM, KV_EIO. */
int resp_start(kv_t *kv);

/* Stops accepting, closes every connection and waits until none is left
 * (operations in flight finish first: each has a deadline). Idempotent and
 * safe to call concurrently; a no-op when resp_start was not called. */
void resp_stop(kv_t *kv);

/* One argument of a request: it points into the bytes it was parsed from. */
typedef struct resp_arg {
    const uint8_t *p;
    size_t len;
} resp_arg_t;

/* A request's arguments; argv grows as needed and is reused from request
 * to request (free it when done). */
typedef struct resp_args {
    resp_arg_t *argv;
    size_t argc;
    size_t cap;
} resp_args_t;

/*
 * Parses one request (a RESP multibulk array of bulk strings, or an inline
 * command line) from the len bytes at p, with no I/O, so the fuzz target
 * (test/fuzz/fuzz_resp.c) runs the parser the connections use. Returns 1
 * (complete: *used bytes make it, a->argc set; argc 0 is an empty request
 * to skip), 0 (incomplete: more bytes are needed, *used is 0), or -1
 * (malformed: *why says how; the connection answers it and closes). Bulk
 * strings longer than max_bulk, and requests that span more than
 * max_request bytes, are malformed; so are, while the connection is not
 * authed (auth_password), more than RESP_UNAUTH_MAX_ARGS arguments or a
 * bulk string over RESP_UNAUTH_MAX_BULK bytes (Redis's bounds).
 */
int resp_parse_request(const uint8_t *p, size_t len, size_t max_bulk,
                       size_t max_request, bool authed, resp_args_t *a,
                       size_t *used, const char **why);

#endif /* KV_RESP_H */
