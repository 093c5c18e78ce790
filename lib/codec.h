/*
 * codec.h - byte-level encoding helpers shared by every format libkvdist
 * writes to disk or to the network (objects, contexts, peer messages).
 *
 * Two small types: buf_t, a growable output buffer whose failures are sticky
 * (append freely, check buf->oom once at the end), and rd_t, a bounds-checked
 * reader whose failures are sticky too (a short or malformed input sets
 * rd->err and every later read returns zeros without touching memory past the
 * end). All fixed-width integers are little-endian; varints are LEB128 of at
 * most 10 bytes and reject overlong or overflowing encodings, so every value
 * has exactly one encoding (objects must encode identically on every node
 * for Merkle digests to agree).
 *
 * Sealed blobs (objects, causal contexts, the saved member list) share one
 * framing: a short prefix (magic bytes and a version), the body, then the
 * low 32 bits of XXH3-64 over everything before it. buf_seal writes the
 * trailer, rd_unseal checks prefix and trailer and yields the body.
 */
#ifndef KV_CODEC_H
#define KV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

typedef struct buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool oom; /* an allocation failed: the contents are incomplete */
} buf_t;

static inline void buf_init(buf_t *b)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = false;
}

static inline void buf_free(buf_t *b)
{
    free(b->p);
    buf_init(b);
}

/* Hands the bytes to the caller (free() them); the buffer is reset. */
static inline uint8_t *buf_steal(buf_t *b, size_t *len)
{
    uint8_t *p = b->p;
    *len = b->len;
    buf_init(b);
    return p;
}

static inline bool buf_reserve(buf_t *b, size_t extra)
{
    if (b->oom) {
        return false;
    }
    if (extra > SIZE_MAX - b->len) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra;
    if (need <= b->cap) {
        return true;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static inline void buf_put(buf_t *b, const void *data, size_t n)
{
    if (n == 0 || !buf_reserve(b, n)) {
        return;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static inline void buf_put_u8(buf_t *b, uint8_t v)
{
    buf_put(b, &v, 1);
}

static inline void buf_put_u32(buf_t *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++) {
        x[i] = (uint8_t)(v >> (8 * i));
    }
    buf_put(b, x, 4);
}

static inline void buf_put_u64(buf_t *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (uint8_t)(v >> (8 * i));
    }
    buf_put(b, x, 8);
}

static inline void buf_put_varint(buf_t *b, uint64_t v)
{
    uint8_t x[10];
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        x[n++] = v ? (uint8_t)(byte | 0x80) : byte;
    } while (v);
    buf_put(b, x, n);
}

/* Overwrites 4 bytes at off (which must already be in the buffer). */
static inline void buf_patch_u32(buf_t *b, size_t off, uint32_t v)
{
    if (b->oom || off + 4 > b->len) {
        return;
    }
    for (int i = 0; i < 4; i++) {
        b->p[off + i] = (uint8_t)(v >> (8 * i));
    }
}

typedef struct rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool err; /* the input was short or malformed */
} rd_t;

static inline void rd_init(rd_t *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->err = false;
}

static inline size_t rd_left(const rd_t *r)
{
    return r->err ? 0 : r->len - r->off;
}

/* Returns a pointer to the next n bytes, or NULL (and sets err) if fewer
 * remain. */
static inline const uint8_t *rd_bytes(rd_t *r, size_t n)
{
    if (r->err || n > r->len - r->off) {
        r->err = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static inline uint8_t rd_u8(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 1);
    return p ? p[0] : 0;
}

static inline uint32_t rd_u32(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 4);
    uint32_t v = 0;
    if (p) {
        for (int i = 0; i < 4; i++) {
            v |= (uint32_t)p[i] << (8 * i);
        }
    }
    return v;
}

static inline uint64_t rd_u64(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 8);
    uint64_t v = 0;
    if (p) {
        for (int i = 0; i < 8; i++) {
            v |= (uint64_t)p[i] << (8 * i);
        }
    }
    return v;
}

static inline uint64_t rd_varint(rd_t *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        const uint8_t *p = rd_bytes(r, 1);
        if (p == NULL) {
            return 0;
        }
        uint8_t byte = p[0];
        /* The 10th byte may only carry the top bit of a 64-bit value. */
        if (i == 9 && byte > 1) {
            break;
        }
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            /* A zero final byte after the first is an overlong encoding. */
            if (i > 0 && byte == 0) {
                break;
            }
            return v;
        }
    }
    r->err = true;
    return 0;
}

/* Reads a length-prefixed byte string of at most max bytes. */
static inline const uint8_t *rd_string(rd_t *r, size_t max, size_t *len)
{
    uint64_t n = rd_varint(r);
    if (r->err || n > max || n > rd_left(r)) {
        r->err = true;
        *len = 0;
        return NULL;
    }
    *len = (size_t)n;
    return rd_bytes(r, (size_t)n);
}

/* Appends the checksum trailer over b[start..len). */
static inline void buf_seal(buf_t *b, size_t start)
{
    if (!b->oom) {
        buf_put_u32(b, (uint32_t)XXH3_64bits(b->p + start, b->len - start));
    }
}

/* Checks that p starts with prefix and ends with a matching checksum; on
 * success body reads the bytes between. Never reads outside [p, p+len). */
static inline bool rd_unseal(rd_t *body, const void *p, size_t len,
                             const void *prefix, size_t plen)
{
    if (p == NULL || len < plen + 4 || memcmp(p, prefix, plen) != 0) {
        return false;
    }
    const uint8_t *bytes = p;
    rd_t sum;
    rd_init(&sum, bytes + len - 4, 4);
    if ((uint32_t)XXH3_64bits(bytes, len - 4) != rd_u32(&sum)) {
        return false;
    }
    rd_init(body, bytes + plen, len - plen - 4);
    return true;
}

#endif /* KV_CODEC_H */
