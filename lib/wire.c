/*
 * wire.c - encoding and decoding of peer messages.
 *
 * Every message is a 16-byte header followed by a body whose fields depend
 * on the type:
 *     'K' 'W' version:u8 type:u8 id:u64 status:u16 flags:u16
 * Byte strings in bodies are varint length + bytes; integers are
 * little-endian. Replies set WIRE_REPLY in the type and echo the id.
 * The decoder is the only code that interprets bytes from the network. It
 * checks every length against the remaining input and the configured limits
 * before use and refuses trailing bytes, so a malformed, truncated,
 * oversized or unknown-version message becomes KV_EPROTO and nothing else.
 */
#include "wire.h"

#include <string.h>

#include "kvdist.h"

void wire_header(buf_t *b, uint8_t type, uint64_t id, uint16_t status,
                 uint16_t flags)
{
    buf_put_u8(b, 'K');
    buf_put_u8(b, 'W');
    buf_put_u8(b, WIRE_VERSION);
    buf_put_u8(b, type);
    buf_put_u64(b, id);
    uint8_t x[4] = {(uint8_t)status, (uint8_t)(status >> 8), (uint8_t)flags,
                    (uint8_t)(flags >> 8)};
    buf_put(b, x, 4);
}

void wire_put_bytes(buf_t *b, const void *p, size_t n)
{
    buf_put_varint(b, n);
    buf_put(b, p, n);
}

void wire_put_member(buf_t *b, const char *id, const char *url, uint8_t status)
{
    wire_put_bytes(b, id, strlen(id));
    wire_put_bytes(b, url, strlen(url));
    buf_put_u8(b, status);
}

void wire_put_gossip(buf_t *b, const char *id, const char *url,
                     uint64_t incarnation, uint64_t heartbeat)
{
    wire_put_bytes(b, id, strlen(id));
    wire_put_bytes(b, url, strlen(url));
    buf_put_u64(b, incarnation);
    buf_put_u64(b, heartbeat);
}

void wire_build_simple(buf_t *b, uint8_t type, uint64_t id, uint16_t status)
{
    wire_header(b, type, id, status, 0);
}

void wire_build_status(buf_t *b, uint8_t type, uint64_t id, uint16_t status)
{
    uint8_t base = type & (uint8_t)~WIRE_REPLY;
    wire_header(b, base | WIRE_REPLY, id, status, 0);
    switch (base) {
    case WIRE_GOSSIP:
        buf_put_varint(b, 0); /* an empty table */
        break;
    case WIRE_AE:
    case WIRE_STATS:
        wire_put_bytes(b, "", 0); /* an empty payload */
        break;
    case WIRE_REPLICA_GET:
    case WIRE_LOCAL_GET:
    case WIRE_COORD_GET:
    case WIRE_COORD_PUT:
        buf_put_u8(b, 0); /* acked */
        buf_put_u8(b, 0); /* needed */
        wire_put_bytes(b, "", 0);
        break;
    default:
        break; /* the status is the whole answer */
    }
}

void wire_build_key(buf_t *b, uint8_t type, uint64_t id, const void *key,
                    size_t klen)
{
    wire_header(b, type, id, 0, 0);
    wire_put_bytes(b, key, klen);
}

void wire_build_replica_put(buf_t *b, uint64_t id, const void *key, size_t klen,
                            const void *obj, size_t objlen)
{
    wire_header(b, WIRE_REPLICA_PUT, id, 0, 0);
    wire_put_bytes(b, key, klen);
    wire_put_bytes(b, obj, objlen);
}

void wire_build_hinted(buf_t *b, uint8_t type, uint64_t id, const char *owner,
                       const void *key, size_t klen, const void *obj,
                       size_t objlen)
{
    wire_header(b, type, id, 0, WIRE_F_HINT);
    wire_put_bytes(b, key, klen);
    if (type == WIRE_REPLICA_PUT) {
        wire_put_bytes(b, obj, objlen);
    }
    wire_put_bytes(b, owner, strlen(owner));
}

void wire_build_coord_put(buf_t *b, uint64_t id, uint16_t flags,
                          const void *key, size_t klen, const void *val,
                          size_t vlen, const void *ctx, size_t ctxlen,
                          uint8_t w, uint32_t timeout_ms, uint64_t token)
{
    flags = (uint16_t)(token != 0 ? flags | WIRE_F_TOKEN
                                  : flags & ~WIRE_F_TOKEN);
    wire_header(b, WIRE_COORD_PUT, id, 0, flags);
    wire_put_bytes(b, key, klen);
    wire_put_bytes(b, val, vlen);
    wire_put_bytes(b, ctx, ctxlen);
    buf_put_u8(b, w);
    buf_put_u32(b, timeout_ms);
    if (token != 0) {
        buf_put_u64(b, token);
    }
}

void wire_build_coord_get(buf_t *b, uint64_t id, const void *key, size_t klen,
                          uint8_t r, uint32_t timeout_ms)
{
    wire_header(b, WIRE_COORD_GET, id, 0, 0);
    wire_put_bytes(b, key, klen);
    buf_put_u8(b, r);
    buf_put_u32(b, timeout_ms);
}

void wire_build_obj_reply(buf_t *b, uint8_t type, uint64_t id, uint16_t status,
                          uint8_t acked, uint8_t needed, const void *obj,
                          size_t objlen)
{
    wire_header(b, type | WIRE_REPLY, id, status, 0);
    buf_put_u8(b, acked);
    buf_put_u8(b, needed);
    wire_put_bytes(b, obj, objlen);
}

static int rd_member(rd_t *r, wire_member_t *m)
{
    m->id = rd_string(r, WIRE_MAX_ID, &m->idlen);
    m->url = rd_string(r, WIRE_MAX_URL, &m->urllen);
    m->status = rd_u8(r);
    if (r->err || m->idlen == 0 || m->urllen == 0 || m->status > 3 ||
        memchr(m->id, 0, m->idlen) != NULL ||
        memchr(m->url, 0, m->urllen) != NULL) {
        r->err = true;
        return KV_EPROTO;
    }
    return 0;
}

static int rd_gossip(rd_t *r, wire_gossip_t *g)
{
    g->id = rd_string(r, WIRE_MAX_ID, &g->idlen);
    g->url = rd_string(r, WIRE_MAX_URL, &g->urllen);
    g->incarnation = rd_u64(r);
    g->heartbeat = rd_u64(r);
    if (r->err || g->idlen == 0 || g->urllen == 0 ||
        memchr(g->id, 0, g->idlen) != NULL ||
        memchr(g->url, 0, g->urllen) != NULL) {
        r->err = true;
        return KV_EPROTO;
    }
    return 0;
}

/* Validates a counted list of members (or gossip rows) and records where
 * it lies, so wire_next_* can walk it later without checks failing. */
static int rd_list(rd_t *r, wire_msg_t *m, bool gossip)
{
    uint64_t n = rd_varint(r);
    if (r->err || n > WIRE_MAX_MEMBERS) {
        return KV_EPROTO;
    }
    m->members = r->p + r->off;
    m->nmembers = (size_t)n;
    for (uint64_t i = 0; i < n; i++) {
        wire_gossip_t g;
        wire_member_t mem;
        if ((gossip ? rd_gossip(r, &g) : rd_member(r, &mem)) != 0) {
            return KV_EPROTO;
        }
    }
    m->memberslen = (size_t)(r->p + r->off - m->members);
    return 0;
}

int wire_next_gossip(rd_t *r, wire_gossip_t *out)
{
    if (rd_left(r) == 0) {
        return 0;
    }
    return rd_gossip(r, out) == 0 ? 1 : 0;
}

int wire_next_member(rd_t *r, wire_member_t *out)
{
    if (rd_left(r) == 0) {
        return 0;
    }
    return rd_member(r, out) == 0 ? 1 : 0;
}

int wire_decode(const void *p, size_t len, const wire_limits_t *lim,
                wire_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    if (p == NULL || len < WIRE_HEADER_SIZE) {
        return KV_EPROTO;
    }
    rd_t r;
    rd_init(&r, p, len);
    const uint8_t *magic = rd_bytes(&r, 2);
    uint8_t version = rd_u8(&r);
    m->type = rd_u8(&r);
    m->id = rd_u64(&r);
    const uint8_t *sf = rd_bytes(&r, 4);
    if (r.err || magic[0] != 'K' || magic[1] != 'W' ||
        version != WIRE_VERSION) {
        return KV_EPROTO;
    }
    m->status = (uint16_t)(sf[0] | (sf[1] << 8));
    m->flags = (uint16_t)(sf[2] | (sf[3] << 8));
    bool reply = (m->type & WIRE_REPLY) != 0;
    uint8_t base = m->type & (uint8_t)~WIRE_REPLY;

    switch (base) {
    case WIRE_PING:
        /* A peer's answer carries its own gossip row (cluster.c admits a
         * member only once it answered at its URL); a client's carries
         * none. */
        if (reply && m->status == 0 && rd_left(&r) > 0 &&
            (rd_list(&r, m, true) != 0 || m->nmembers > 1)) {
            return KV_EPROTO;
        }
        break;
    case WIRE_ERROR:
        if (!reply) {
            return KV_EPROTO;
        }
        break;
    case WIRE_GOSSIP:
        if (rd_list(&r, m, true) != 0) {
            return KV_EPROTO;
        }
        break;
    case WIRE_SHUTDOWN:
        /* Exactly one row: the sender's. The reply is a status. */
        if (!reply && (rd_list(&r, m, true) != 0 || m->nmembers != 1)) {
            return KV_EPROTO;
        }
        break;
    case WIRE_CONN_CHECK:
        if (!reply) {
            m->key = rd_string(&r, WIRE_MAX_ADDR, &m->klen);
            if (!r.err && m->klen == 0) {
                return KV_EPROTO;
            }
        }
        break;
    case WIRE_AE:
        m->obj = rd_string(&r, lim->max_object, &m->objlen);
        break;
    case WIRE_STATS:
        if (reply) {
            m->obj = rd_string(&r, WIRE_MAX_STATS, &m->objlen);
        }
        break;
    case WIRE_JOIN:
    case WIRE_MEMBERS:
        if (!reply && base == WIRE_JOIN) {
            if (rd_member(&r, &m->member) != 0) {
                return KV_EPROTO;
            }
        } else if (reply && m->status == 0 && rd_list(&r, m, false) != 0) {
            return KV_EPROTO;
        }
        break;
    case WIRE_REPLICA_PUT:
    case WIRE_REPLICA_GET:
    case WIRE_LOCAL_GET:
    case WIRE_COORD_GET:
    case WIRE_COORD_PUT:
        if (reply) {
            if (base == WIRE_REPLICA_PUT) {
                break; /* status only */
            }
            m->acked = rd_u8(&r);
            m->needed = rd_u8(&r);
            m->obj = rd_string(&r, lim->max_object, &m->objlen);
            break;
        }
        m->key = rd_string(&r, lim->max_key, &m->klen);
        if (!r.err && m->klen == 0) {
            return KV_EPROTO;
        }
        if (base == WIRE_REPLICA_PUT) {
            m->obj = rd_string(&r, lim->max_object, &m->objlen);
        }
        /* A hint is the only flag of REPLICA_*: with any other bit, the
         * message falls to the refusal below. */
        if ((base == WIRE_REPLICA_PUT || base == WIRE_REPLICA_GET) &&
            m->flags == WIRE_F_HINT) {
            m->owner = rd_string(&r, WIRE_MAX_ID, &m->ownerlen);
            if (!r.err && (m->ownerlen == 0 ||
                           memchr(m->owner, 0, m->ownerlen) != NULL)) {
                return KV_EPROTO;
            }
        } else if ((base == WIRE_REPLICA_PUT || base == WIRE_REPLICA_GET ||
                    base == WIRE_LOCAL_GET) &&
                   m->flags != 0) {
            return KV_EPROTO;
        }
        if (base == WIRE_COORD_PUT) {
            if (m->flags &
                ~(WIRE_F_TOMBSTONE | WIRE_F_HAS_CTX | WIRE_F_TOKEN)) {
                return KV_EPROTO;
            }
            m->val = rd_string(&r, lim->max_value, &m->vlen);
            m->ctx = rd_string(&r, lim->max_object, &m->ctxlen);
            m->quorum = rd_u8(&r);
            m->timeout_ms = rd_u32(&r);
            if (m->flags & WIRE_F_TOKEN) {
                m->token = rd_u64(&r);
                if (!r.err && m->token == 0) {
                    return KV_EPROTO; /* 0 means none: never sent */
                }
            }
        } else if (base == WIRE_COORD_GET) {
            m->quorum = rd_u8(&r);
            m->timeout_ms = rd_u32(&r);
        }
        break;
    default:
        return KV_EPROTO;
    }
    if (r.err || rd_left(&r) != 0) {
        return KV_EPROTO;
    }
    return 0;
}

/* ------------------------------------------------------------- batches */

size_t wire_msg_max(const wire_limits_t *l)
{
    /* The largest body (a COORD_PUT carries a key, a value and a context
     * no larger than an object; a REPLICA_PUT a key and an object) plus
     * room for the header and the length prefixes. */
    return l->max_object + l->max_key + l->max_value + 4096;
}

size_t wire_recv_max(const wire_limits_t *l)
{
    /* 16 per entry and 64 in all: rounded up from WIRE_BATCH_ENTRY_MAX
     * and WIRE_BATCH_HEADER_MAX. */
    return wire_msg_max(l) + WIRE_BATCH_MAX * (WIRE_SMALL_REPLY + 16) + 64;
}

void wire_batch_header(buf_t *b, bool reply, uint64_t id, size_t count)
{
    wire_header(b, (uint8_t)(WIRE_BATCH | (reply ? WIRE_REPLY : 0)), id, 0, 0);
    buf_put_varint(b, count);
}

bool wire_is_batch(const void *p, size_t len)
{
    const uint8_t *h = p;
    return p != NULL && len >= WIRE_HEADER_SIZE && h[0] == 'K' &&
           h[1] == 'W' && h[2] == WIRE_VERSION &&
           (h[3] & (uint8_t)~WIRE_REPLY) == WIRE_BATCH;
}

int wire_batch_open(const void *p, size_t len, bool reply, size_t max_entry,
                    uint64_t *id, size_t *count, rd_t *r)
{
    if (!wire_is_batch(p, len) ||
        (((const uint8_t *)p)[3] & WIRE_REPLY) != (reply ? WIRE_REPLY : 0)) {
        return KV_EPROTO;
    }
    rd_init(r, p, len);
    (void)rd_bytes(r, 4);
    *id = rd_u64(r);
    const uint8_t *sf = rd_bytes(r, 4);
    uint64_t n = rd_varint(r);
    if (r->err || sf[0] != 0 || sf[1] != 0 || sf[2] != 0 || sf[3] != 0 ||
        n == 0 || n > WIRE_BATCH_MAX) {
        return KV_EPROTO;
    }
    rd_t walk = *r;
    for (uint64_t i = 0; i < n; i++) {
        size_t elen = 0;
        (void)rd_string(&walk, max_entry, &elen);
        if (walk.err || (elen == 0 && !reply)) {
            return KV_EPROTO;
        }
    }
    if (rd_left(&walk) != 0) {
        return KV_EPROTO;
    }
    *count = (size_t)n;
    return 0;
}

uint8_t wire_peek_type(const uint8_t *p, size_t len)
{
    return len >= WIRE_HEADER_SIZE ? p[3] : 0;
}

const uint8_t *wire_batch_next(rd_t *r, size_t *len)
{
    return rd_string(r, SIZE_MAX, len);
}
