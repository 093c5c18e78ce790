/*
 * http.h - the HTTP API a peer serves when the `http` option is set
 * (http.c), and the small text codecs it needs (exposed for the tests).
 */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "node.h"

/* Starts serving kv->cfg.http. Called by kv_open once the node is ready.
 * Returns 0, KV_EINVAL (address NNG cannot parse), KV_EADDRINUSE,
 * KV_ENOMEM. */
int http_start(kv_t *kv);

/* Stops the server and waits until no handler runs on kv any more. Safe
 * when never started. Called first by node_free. */
void http_stop(kv_t *kv);

/* Standard base64 (RFC 4648, with padding). The encoder writes
 * http_b64_len(n) bytes plus a NUL into out. The decoder is strict: length
 * a multiple of 4, padding only at the end, no other characters, unused
 * bits zero (one encoding per byte string). It writes at most
 * 3 * inlen / 4 bytes to out (outsize) and returns 0 or KV_EINVAL. */
size_t http_b64_len(size_t n);
void http_b64_encode(const void *in, size_t n, char *out);
int http_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t outsize,
                    size_t *outlen);

/* Decodes a percent-encoded path segment or query value. A '%' must be
 * followed by two hex digits; a raw '/' is refused (a key is one segment:
 * send it as %2F). Writes at most inlen bytes. Returns 0 or KV_EINVAL. */
int http_pct_decode(const char *in, size_t inlen, uint8_t *out, size_t *outlen);

/* The password of an Authorization header's value: "Bearer <password>"
 * (the bytes as sent), or "Basic <base64(user:password)>" with any user
 * name; schemes in any case. Writes at most outsize bytes to out. Returns
 * 0, or KV_EINVAL for another scheme, no credentials, bad base64, a Basic
 * pair without a colon or one larger than outsize. */
int http_auth_password(const char *value, uint8_t *out, size_t outsize,
                       size_t *outlen);

#endif /* KV_HTTP_H */
