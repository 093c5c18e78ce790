/*
 * wire.h - the peer protocol's messages: encoding and bounds-checked
 * decoding (wire.c). No I/O here; rpc.c moves the bytes.
 */
#ifndef KV_WIRE_H
#define KV_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "kvlimits.h"

#define WIRE_VERSION 1
#define WIRE_HEADER_SIZE 16
#define WIRE_REPLY 0x80u

enum wire_type {
    WIRE_PING = 1,        /* liveness; empty body; reply: the answering
                             peer's own gossip row (none from a client) */
    WIRE_JOIN = 2,        /* body: one member (the sender) */
    WIRE_MEMBERS = 3,     /* empty body; reply: member list */
    WIRE_REPLICA_PUT = 4, /* key, object: join it into the local replica */
    WIRE_REPLICA_GET = 5, /* key; reply: object (empty when absent) */
    WIRE_COORD_PUT = 6,   /* coordinate a write (forwarded by a non-owner) */
    WIRE_COORD_GET = 7,   /* coordinate a read */
    WIRE_LOCAL_GET = 8,   /* debug: the local replica's object only */
    WIRE_ERROR = 9,       /* reply only: the request did not decode */
    WIRE_STATS = 10,      /* empty; reply: the metrics text (in obj) */
    WIRE_GOSSIP = 11,     /* body and reply: the sender's gossip table */
    WIRE_AE = 12,         /* anti-entropy: flags is the operation, obj its
                             payload (aae.c's table dispatches it) */
    WIRE_BATCH = 13,      /* rpc.c's envelope: several whole messages to one
                             peer, answered by as many replies in order */
    WIRE_SHUTDOWN = 14,   /* body: one gossip row, the sender's own with
                             its last heartbeat: it is shutting down;
                             reply: status only */
    WIRE_CONN_CHECK = 15  /* key: "IP:PORT"; reply status 0 if the
                             answering node has a connection open from
                             that local address (rpc.c: who sent it) */
};

/* Flags in a COORD_PUT. */
#define WIRE_F_TOMBSTONE 0x1u /* a delete */
#define WIRE_F_HAS_CTX                                                         \
    0x2u /* ctx is the write's context (else: the                              \
            coordinator's own, kv_put semantics) */
/* Flag in a REPLICA_PUT / REPLICA_GET: the receiver stands in for `owner`
 * (sloppy quorum): it keeps the object as a hint for that node. */
#define WIRE_F_HINT 0x4u
/* Flag in a COORD_PUT: token:u64 follows the timeout, the client write's
 * token (object.h, obj_update): a forward sent again to the next
 * coordinator carries the same one. */
#define WIRE_F_TOKEN 0x8u

/* One row of a gossip table. */
typedef struct wire_gossip {
    const uint8_t *id;
    size_t idlen;
    const uint8_t *url;
    size_t urllen;
    uint64_t incarnation;
    uint64_t heartbeat;
} wire_gossip_t;

typedef struct wire_member {
    const uint8_t *id;
    size_t idlen;
    const uint8_t *url;
    size_t urllen;
    uint8_t status;
} wire_member_t;

/* A decoded message. Pointers point into the bytes it was decoded from and
 * are valid as long as they are. */
typedef struct wire_msg {
    uint8_t type;    /* enum wire_type, | WIRE_REPLY for replies */
    uint64_t id;     /* request id, echoed by the reply */
    uint16_t status; /* replies: a KV_E* code */
    uint16_t flags;
    const uint8_t *key;
    size_t klen;
    const uint8_t *obj; /* REPLICA_PUT, replies to *_GET */
    size_t objlen;
    const uint8_t *val; /* COORD_PUT */
    size_t vlen;
    const uint8_t *ctx; /* COORD_PUT */
    size_t ctxlen;
    uint8_t quorum;       /* COORD_*: w or r, 0 = node default */
    uint32_t timeout_ms;  /* COORD_*: 0 = node default */
    uint64_t token;       /* COORD_PUT with WIRE_F_TOKEN, else 0 */
    uint8_t acked;        /* COORD_* replies */
    uint8_t needed;       /* COORD_* replies */
    wire_member_t member; /* JOIN */
    const uint8_t *owner; /* REPLICA_* with WIRE_F_HINT */
    size_t ownerlen;
    const uint8_t *members; /* MEMBERS/JOIN replies, GOSSIP: encoded list */
    size_t memberslen;
    size_t nmembers;
} wire_msg_t;

/* Limits a decoder enforces: anything larger is refused as malformed. */
typedef struct wire_limits {
    size_t max_key;
    size_t max_value;
    size_t max_object;
} wire_limits_t;

#define WIRE_MAX_MEMBERS KV_MEMBERS_MAX
#define WIRE_MAX_STATS (1u << 20)
/* The longest "IP:PORT" of a CONN_CHECK ([IPv6]:port fits). */
#define WIRE_MAX_ADDR 64
/* A member's id and URL: the limits every module shares (kvlimits.h). */
#define WIRE_MAX_ID KV_ID_MAX
#define WIRE_MAX_URL KV_URL_MAX

/* Appends a header; the body follows via the encoders below. */
void wire_header(buf_t *b, uint8_t type, uint64_t id, uint16_t status,
                 uint16_t flags);
void wire_put_bytes(buf_t *b, const void *p, size_t n);
void wire_put_member(buf_t *b, const char *id, const char *url, uint8_t status);

void wire_put_gossip(buf_t *b, const char *id, const char *url,
                     uint64_t incarnation, uint64_t heartbeat);

/* Message builders (each appends a whole message to b). */
void wire_build_simple(buf_t *b, uint8_t type, uint64_t id, uint16_t status);
/* A reply to a request of `type` that says only its status (most often
 * a refusal before any handler ran), in the shape the type's replies
 * take (an empty table, payload or object where one is due), so that
 * every decoder reads it. */
void wire_build_status(buf_t *b, uint8_t type, uint64_t id, uint16_t status);
void wire_build_key(buf_t *b, uint8_t type, uint64_t id, const void *key,
                    size_t klen);
void wire_build_replica_put(buf_t *b, uint64_t id, const void *key, size_t klen,
                            const void *obj, size_t objlen);
/* A REPLICA_PUT or REPLICA_GET on behalf of owner (WIRE_F_HINT). */
void wire_build_hinted(buf_t *b, uint8_t type, uint64_t id, const char *owner,
                       const void *key, size_t klen, const void *obj,
                       size_t objlen);
void wire_build_coord_put(buf_t *b, uint64_t id, uint16_t flags,
                          const void *key, size_t klen, const void *val,
                          size_t vlen, const void *ctx, size_t ctxlen,
                          uint8_t w, uint32_t timeout_ms, uint64_t token);
void wire_build_coord_get(buf_t *b, uint64_t id, const void *key, size_t klen,
                          uint8_t r, uint32_t timeout_ms);
/* A reply carrying an object (may be empty) and, for COORD_* replies, the
 * quorum counts. */
void wire_build_obj_reply(buf_t *b, uint8_t type, uint64_t id, uint16_t status,
                          uint8_t acked, uint8_t needed, const void *obj,
                          size_t objlen);

/*
 * Decodes a whole message. Returns 0, or KV_EPROTO for anything malformed:
 * short or bad header, unknown version or type, a field over the limits,
 * truncated or trailing bytes. Never reads outside [p, p+len).
 */
int wire_decode(const void *p, size_t len, const wire_limits_t *lim,
                wire_msg_t *m);

/*
 * Batches (rpc.c): a header of type WIRE_BATCH (| WIRE_REPLY), then a
 * varint count (1..WIRE_BATCH_MAX), then that many byte strings, each a
 * whole message of its own (never another batch). In a reply an empty
 * string stands for "not answered here: send that request again alone"
 * (rpc.c uses it for replies too large to share a message).
 */
#define WIRE_BATCH_MAX 64

/*
 * Framing sizes: every bound on what a message or a batch may hold lives
 * here, so the sender (which fills batches) and the receiver (which caps
 * what a socket accepts) cannot disagree.
 */
/* A reply this small always fits a batch reply; larger ones share one
 * only up to wire_msg_max in all (and are sent again alone beyond). */
#define WIRE_SMALL_REPLY (64 * 1024)
/* What a batch spends besides its entries' bytes, at most: the header,
 * the count and the first entry's length (WIRE_BATCH_HEADER_MAX), and
 * each further entry's varint length (WIRE_BATCH_ENTRY_MAX). */
#define WIRE_BATCH_HEADER_MAX 32
#define WIRE_BATCH_ENTRY_MAX 10

/* The largest single message (request or reply) a node sends, and so the
 * largest entry of a batch; a batch request holds at most that much. */
size_t wire_msg_max(const wire_limits_t *l);
/* What a node accepts in one message: a single message, or a batch reply
 * of wire_msg_max plus WIRE_BATCH_MAX small replies. */
size_t wire_recv_max(const wire_limits_t *l);

/* Appends a batch header and count; the entries follow, each appended with
 * wire_put_bytes. */
void wire_batch_header(buf_t *b, bool reply, uint64_t id, size_t count);
/* Whether the bytes carry a batch (reply or request), judged by the
 * header alone. */
bool wire_is_batch(const void *p, size_t len);
/* Checks a whole batch's framing: header, count, and that its entries
 * (each at most max_entry bytes; empty ones only in replies) fill it
 * exactly. Returns 0 with *id, *count and r set to the first entry, or
 * KV_EPROTO. The entries themselves are decoded by wire_decode. */
int wire_batch_open(const void *p, size_t len, bool reply, size_t max_entry,
                    uint64_t *id, size_t *count, rd_t *r);
/* The type byte of an encoded message (0 when it is too short to have a
 * header); the rest is checked by wire_decode. */
uint8_t wire_peek_type(const uint8_t *p, size_t len);

/* The next entry of an opened batch (valid: checked by wire_batch_open). */
const uint8_t *wire_batch_next(rd_t *r, size_t *len);

/* Iterates a decoded member list: returns 1 and fills *out for the next
 * member, 0 at the end. The list was validated by wire_decode. */
int wire_next_member(rd_t *r, wire_member_t *out);
/* The same for a gossip table. */
int wire_next_gossip(rd_t *r, wire_gossip_t *out);

#endif /* KV_WIRE_H */
