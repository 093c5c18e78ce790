/*
 * fuzz_wire.c - the peer message decoder (wire_decode), which reads every
 * byte a peer sends.
 *
 * Input: one message as it arrives. Besides memory safety, a message that
 * decodes must be the one encoding of what was decoded: the fields are
 * written again with the encoders rpc.c and the modules use (wire_header,
 * wire_put_*, and the wire_build_* builder of that message where one
 * applies) and must give the input back byte for byte, so a decoder that
 * skipped, misread or ignored a byte is found; its member or gossip list
 * must walk (wire_next_*) to exactly the count it announced, and the
 * flags of a request whose flags the decoder checks must be ones a sender
 * sets.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "wire.h"

/* Small limits, so that inputs of a few KiB reach every bound. */
static const wire_limits_t lim = {64, 1024, 2048};

/* A NUL-terminated copy of a decoded id or URL (never holding a NUL). */
static char *cstr(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    FUZZ_CHECK(strlen(s) == n);
    return s;
}

/* Walks the decoded list and writes it again with the encoders. */
static void put_list(buf_t *b, const wire_msg_t *m, bool gossip)
{
    buf_put_varint(b, m->nmembers);
    rd_t r;
    rd_init(&r, m->members, m->memberslen);
    size_t n = 0;
    for (;;) {
        char *id;
        char *url;
        if (gossip) {
            wire_gossip_t g;
            if (!wire_next_gossip(&r, &g)) {
                break;
            }
            id = cstr(g.id, g.idlen);
            url = cstr(g.url, g.urllen);
            FUZZ_CHECK(g.idlen <= WIRE_MAX_ID && g.urllen <= WIRE_MAX_URL);
            wire_put_gossip(b, id, url, g.incarnation, g.heartbeat);
        } else {
            wire_member_t mem;
            if (!wire_next_member(&r, &mem)) {
                break;
            }
            id = cstr(mem.id, mem.idlen);
            url = cstr(mem.url, mem.urllen);
            FUZZ_CHECK(mem.status <= 3);
            wire_put_member(b, id, url, mem.status);
        }
        free(id);
        free(url);
        n++;
    }
    FUZZ_CHECK(!r.err && rd_left(&r) == 0);
    FUZZ_CHECK(n == m->nmembers && n <= WIRE_MAX_MEMBERS);
}

/* The generic re-encoding: the layout wire.c documents, field by field. */
static void reencode(const wire_msg_t *m, buf_t *b)
{
    bool reply = (m->type & WIRE_REPLY) != 0;
    uint8_t base = m->type & (uint8_t)~WIRE_REPLY;
    wire_header(b, m->type, m->id, m->status, m->flags);
    switch (base) {
    case WIRE_PING:
        /* A peer's answer: its own row, as a list (absent from a
         * client's). */
        if (reply && m->members != NULL) {
            FUZZ_CHECK(m->status == 0 && m->nmembers <= 1);
            put_list(b, m, true);
        }
        break;
    case WIRE_CONN_CHECK:
        if (!reply) {
            FUZZ_CHECK(m->klen > 0 && m->klen <= WIRE_MAX_ADDR);
            wire_put_bytes(b, m->key, m->klen);
        }
        break;
    case WIRE_GOSSIP:
        put_list(b, m, true);
        break;
    case WIRE_SHUTDOWN:
        if (!reply) {
            FUZZ_CHECK(m->nmembers == 1);
            put_list(b, m, true);
        }
        break;
    case WIRE_AE:
        wire_put_bytes(b, m->obj, m->objlen);
        break;
    case WIRE_STATS:
        if (reply) {
            wire_put_bytes(b, m->obj, m->objlen);
        }
        break;
    case WIRE_JOIN:
    case WIRE_MEMBERS:
        if (!reply && base == WIRE_JOIN) {
            char *id = cstr(m->member.id, m->member.idlen);
            char *url = cstr(m->member.url, m->member.urllen);
            wire_put_member(b, id, url, m->member.status);
            free(id);
            free(url);
        } else if (reply && m->status == 0) {
            put_list(b, m, false);
        }
        break;
    case WIRE_REPLICA_PUT:
    case WIRE_REPLICA_GET:
    case WIRE_LOCAL_GET:
    case WIRE_COORD_GET:
    case WIRE_COORD_PUT:
        if (reply) {
            if (base != WIRE_REPLICA_PUT) {
                buf_put_u8(b, m->acked);
                buf_put_u8(b, m->needed);
                wire_put_bytes(b, m->obj, m->objlen);
            }
            break;
        }
        FUZZ_CHECK(m->klen > 0 && m->klen <= lim.max_key);
        wire_put_bytes(b, m->key, m->klen);
        if (base == WIRE_REPLICA_PUT) {
            wire_put_bytes(b, m->obj, m->objlen);
        }
        if (m->owner != NULL) {
            char *owner = cstr(m->owner, m->ownerlen);
            FUZZ_CHECK(m->ownerlen > 0);
            wire_put_bytes(b, owner, m->ownerlen);
            free(owner);
        }
        if (base == WIRE_COORD_PUT) {
            FUZZ_CHECK(m->vlen <= lim.max_value);
            wire_put_bytes(b, m->val, m->vlen);
            wire_put_bytes(b, m->ctx, m->ctxlen);
            buf_put_u8(b, m->quorum);
            buf_put_u32(b, m->timeout_ms);
            FUZZ_CHECK((m->token != 0) == ((m->flags & WIRE_F_TOKEN) != 0));
            if (m->flags & WIRE_F_TOKEN) {
                buf_put_u64(b, m->token);
            }
        } else if (base == WIRE_COORD_GET) {
            buf_put_u8(b, m->quorum);
            buf_put_u32(b, m->timeout_ms);
        }
        break;
    default:
        break;
    }
    FUZZ_CHECK(m->objlen <= lim.max_object && m->ctxlen <= lim.max_object);
}

/* The builder the sending module uses for this message, where one builds
 * exactly these fields; false when none applies. */
static bool rebuild(const wire_msg_t *m, buf_t *b)
{
    bool reply = (m->type & WIRE_REPLY) != 0;
    uint8_t base = m->type & (uint8_t)~WIRE_REPLY;
    if (reply) {
        if (m->flags != 0) {
            return false;
        }
        switch (base) {
        case WIRE_REPLICA_GET:
        case WIRE_LOCAL_GET:
        case WIRE_COORD_GET:
        case WIRE_COORD_PUT:
            wire_build_obj_reply(b, base, m->id, m->status, m->acked,
                                 m->needed, m->obj, m->objlen);
            return true;
        case WIRE_PING:
            if (m->members != NULL) {
                return false; /* cluster.c appends the row itself */
            }
            wire_build_simple(b, m->type, m->id, m->status);
            return true;
        case WIRE_ERROR:
        case WIRE_REPLICA_PUT:
        case WIRE_CONN_CHECK:
            wire_build_simple(b, m->type, m->id, m->status);
            return true;
        default:
            return false;
        }
    }
    if (m->status != 0) {
        return false;
    }
    switch (base) {
    case WIRE_PING:
    case WIRE_MEMBERS:
        if (m->flags != 0) {
            return false; /* flags the decoder lets pass; none are sent */
        }
        wire_build_simple(b, base, m->id, 0);
        return true;
    case WIRE_CONN_CHECK:
        if (m->flags != 0) {
            return false;
        }
        wire_build_key(b, base, m->id, m->key, m->klen);
        return true;
    case WIRE_REPLICA_GET:
    case WIRE_LOCAL_GET:
        if (m->flags == 0) {
            wire_build_key(b, base, m->id, m->key, m->klen);
            return true;
        }
        /* fall through: a hinted REPLICA_GET */
    case WIRE_REPLICA_PUT:
        if (m->flags == 0) {
            wire_build_replica_put(b, m->id, m->key, m->klen, m->obj,
                                   m->objlen);
            return true;
        }
        if (m->flags == WIRE_F_HINT && base != WIRE_LOCAL_GET) {
            char *owner = cstr(m->owner, m->ownerlen);
            wire_build_hinted(b, base, m->id, owner, m->key, m->klen, m->obj,
                              m->objlen);
            free(owner);
            return true;
        }
        return false;
    case WIRE_COORD_PUT:
        wire_build_coord_put(b, m->id, m->flags, m->key, m->klen, m->val,
                             m->vlen, m->ctx, m->ctxlen, m->quorum,
                             m->timeout_ms, m->token);
        return true;
    case WIRE_COORD_GET:
        if (m->flags != 0) {
            return false;
        }
        wire_build_coord_get(b, m->id, m->key, m->klen, m->quorum,
                             m->timeout_ms);
        return true;
    default:
        return false;
    }
}

/* Where the decoder polices a request's flags, only what a sender sets
 * passes: REPLICA_* plain or hinted (wire_build_hinted), LOCAL_GET none,
 * COORD_PUT the three it knows. */
static void check_flags(const wire_msg_t *m)
{
    switch (m->type) {
    case WIRE_REPLICA_PUT:
    case WIRE_REPLICA_GET:
        FUZZ_CHECK(m->flags == 0 || m->flags == WIRE_F_HINT);
        FUZZ_CHECK((m->owner != NULL) == (m->flags == WIRE_F_HINT));
        break;
    case WIRE_LOCAL_GET:
        FUZZ_CHECK(m->flags == 0);
        break;
    case WIRE_COORD_PUT:
        FUZZ_CHECK((m->flags & ~(WIRE_F_TOMBSTONE | WIRE_F_HAS_CTX |
                                 WIRE_F_TOKEN)) == 0);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_msg_t m;
    int rc = wire_decode(data, size, &lim, &m);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_EPROTO);
        return 0;
    }
    FUZZ_CHECK(wire_peek_type(data, size) == m.type);
    FUZZ_CHECK(!wire_is_batch(data, size));
    check_flags(&m);

    buf_t b;
    buf_init(&b);
    reencode(&m, &b);
    FUZZ_CHECK(!b.oom);
    FUZZ_CHECK(b.len == size && memcmp(b.p, data, size) == 0);
    buf_free(&b);

    if (rebuild(&m, &b)) {
        FUZZ_CHECK(!b.oom);
        FUZZ_CHECK(b.len == size && memcmp(b.p, data, size) == 0);
    }
    buf_free(&b);
    return 0;
}
