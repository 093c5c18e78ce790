/*
 * check_wire.c - the peer message codec: round trips of every message
 * type, and rejection of truncated, oversized, trailing, wrong-version,
 * unknown-type and random inputs without crashing or overreading.
 */
#include "check_kvdist.h"

#include <stdlib.h>
#include <string.h>

#include "kvdist.h"
#include "wire.h"

static const wire_limits_t lim = {64, 1024, 4096};

static void roundtrip_all(buf_t *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        wire_msg_t m;
        ck_assert_int_eq(wire_decode(msgs[i].p, msgs[i].len, &lim, &m), 0);
        /* every strict prefix is refused */
        for (size_t cut = 0; cut < msgs[i].len; cut++) {
            ck_assert_msg(wire_decode(msgs[i].p, cut, &lim, &m) == KV_EPROTO,
                          "msg %zu accepted at %zu of %zu bytes", i, cut,
                          msgs[i].len);
        }
        /* a trailing byte is refused */
        uint8_t *longer = malloc(msgs[i].len + 1);
        memcpy(longer, msgs[i].p, msgs[i].len);
        longer[msgs[i].len] = 0;
        ck_assert_int_eq(wire_decode(longer, msgs[i].len + 1, &lim, &m),
                         KV_EPROTO);
        /* another version is refused */
        longer[2] = WIRE_VERSION + 1;
        ck_assert_int_eq(wire_decode(longer, msgs[i].len, &lim, &m),
                         KV_EPROTO);
        free(longer);
    }
}

START_TEST(test_roundtrips)
{
    buf_t b[8];
    for (int i = 0; i < 8; i++) {
        buf_init(&b[i]);
    }
    wire_build_simple(&b[0], WIRE_PING, 1, 0);
    wire_build_key(&b[1], WIRE_REPLICA_GET, 2, "key", 3);
    wire_build_replica_put(&b[2], 3, "k\0y", 3, "objbytes", 8);
    wire_build_coord_put(&b[3], 4, WIRE_F_HAS_CTX, "k", 1, "value", 5, "ctx",
                         3, 2, 1500, 0);
    wire_build_coord_get(&b[4], 5, "k", 1, 3, 250);
    wire_build_obj_reply(&b[5], WIRE_COORD_GET, 6, KV_EQUORUM, 1, 2, "o", 1);
    wire_header(&b[6], WIRE_JOIN, 7, 0, 0);
    wire_put_member(&b[6], "n1", "tcp://127.0.0.1:1", KV_MEMBER_UP);
    wire_header(&b[7], WIRE_MEMBERS | WIRE_REPLY, 8, 0, 0);
    buf_put_varint(&b[7], 2);
    wire_put_member(&b[7], "a", "ipc:///a", KV_MEMBER_UP);
    wire_put_member(&b[7], "b", "ipc:///b", KV_MEMBER_DOWN);
    roundtrip_all(b, 8);

    wire_msg_t m;
    ck_assert_int_eq(wire_decode(b[3].p, b[3].len, &lim, &m), 0);
    ck_assert_uint_eq(m.type, WIRE_COORD_PUT);
    ck_assert_uint_eq(m.id, 4);
    ck_assert_uint_eq(m.flags, WIRE_F_HAS_CTX);
    ck_assert(m.klen == 1 && m.key[0] == 'k');
    ck_assert(m.vlen == 5 && memcmp(m.val, "value", 5) == 0);
    ck_assert(m.ctxlen == 3 && memcmp(m.ctx, "ctx", 3) == 0);
    ck_assert_uint_eq(m.quorum, 2);
    ck_assert_uint_eq(m.timeout_ms, 1500);
    ck_assert_uint_eq(m.token, 0);

    /* A write's token travels in the COORD_PUT; 0 is never sent. */
    buf_t t;
    buf_init(&t);
    wire_build_coord_put(&t, 9, 0, "k", 1, "v", 1, NULL, 0, 0, 100,
                         0xfeedfacecafeULL);
    ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m), 0);
    ck_assert_uint_eq(m.flags, WIRE_F_TOKEN);
    ck_assert(m.token == 0xfeedfacecafeULL);
    ck_assert_uint_eq(m.timeout_ms, 100);
    memset(t.p + t.len - 8, 0, 8);
    ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m), KV_EPROTO);
    buf_free(&t);

    ck_assert_int_eq(wire_decode(b[2].p, b[2].len, &lim, &m), 0);
    ck_assert(m.klen == 3 && memcmp(m.key, "k\0y", 3) == 0);
    ck_assert(m.objlen == 8 && memcmp(m.obj, "objbytes", 8) == 0);

    ck_assert_int_eq(wire_decode(b[5].p, b[5].len, &lim, &m), 0);
    ck_assert_uint_eq(m.type, WIRE_COORD_GET | WIRE_REPLY);
    ck_assert_uint_eq(m.status, KV_EQUORUM);
    ck_assert(m.acked == 1 && m.needed == 2 && m.objlen == 1);

    ck_assert_int_eq(wire_decode(b[7].p, b[7].len, &lim, &m), 0);
    ck_assert_uint_eq(m.nmembers, 2);
    rd_t r;
    rd_init(&r, m.members, m.memberslen);
    wire_member_t mem;
    ck_assert_int_eq(wire_next_member(&r, &mem), 1);
    ck_assert(mem.idlen == 1 && mem.id[0] == 'a');
    ck_assert_int_eq(wire_next_member(&r, &mem), 1);
    ck_assert(mem.status == KV_MEMBER_DOWN);
    ck_assert_int_eq(wire_next_member(&r, &mem), 0);

    for (int i = 0; i < 8; i++) {
        buf_free(&b[i]);
    }

    /* A SHUTDOWN carries exactly one gossip row; its reply a status. */
    for (uint64_t rows = 0; rows <= 2; rows++) {
        buf_init(&t);
        wire_header(&t, WIRE_SHUTDOWN, 10, 0, 0);
        buf_put_varint(&t, rows);
        for (uint64_t i = 0; i < rows; i++) {
            wire_put_gossip(&t, "n3", "tcp://127.0.0.1:3", 77, 9 + i);
        }
        ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m),
                         rows == 1 ? 0 : KV_EPROTO);
        buf_free(&t);
    }
    buf_init(&t);
    wire_header(&t, WIRE_SHUTDOWN, 11, 0, 0);
    buf_put_varint(&t, 1);
    wire_put_gossip(&t, "n3", "tcp://127.0.0.1:3", 77, 9);
    ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m), 0);
    rd_init(&r, m.members, m.memberslen);
    wire_gossip_t g;
    ck_assert_int_eq(wire_next_gossip(&r, &g), 1);
    ck_assert(g.idlen == 2 && memcmp(g.id, "n3", 2) == 0);
    ck_assert(g.incarnation == 77 && g.heartbeat == 9);
    t.len--; /* cut short */
    ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m), KV_EPROTO);
    buf_free(&t);
    wire_build_simple(&t, WIRE_SHUTDOWN | WIRE_REPLY, 11, KV_EINVAL);
    ck_assert_int_eq(wire_decode(t.p, t.len, &lim, &m), 0);
    ck_assert_uint_eq(m.status, KV_EINVAL);
    buf_free(&t);
}
END_TEST

START_TEST(test_limits_and_bad_fields)
{
    wire_msg_t m;
    buf_t b;
    char big[2048];
    memset(big, 'x', sizeof(big));
    /* key over the limit */
    buf_init(&b);
    wire_build_key(&b, WIRE_REPLICA_GET, 1, big, 65);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* empty key */
    wire_build_key(&b, WIRE_REPLICA_GET, 1, big, 0);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* value over the limit */
    wire_build_coord_put(&b, 1, 0, "k", 1, big, 1025, NULL, 0, 0, 0, 0);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* unknown flags */
    wire_build_coord_put(&b, 1, 0x80, "k", 1, "v", 1, NULL, 0, 0, 0, 0);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* a hint with another flag beside it (found by fuzz_wire) */
    wire_build_hinted(&b, WIRE_REPLICA_PUT, 1, "n2", "k", 1, "OB", 2);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), 0);
    b.p[15] = 0x20; /* flags, high byte: WIRE_F_HINT | 0x2000 */
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    wire_build_hinted(&b, WIRE_REPLICA_GET, 1, "n2", "k", 1, NULL, 0);
    b.p[14] |= 0x01; /* WIRE_F_HINT | WIRE_F_TOMBSTONE */
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* unknown type */
    wire_build_simple(&b, 0x33, 1, 0);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* bad magic */
    wire_build_simple(&b, WIRE_PING, 1, 0);
    b.p[0] = 'X';
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* a huge length prefix with nothing behind it */
    wire_header(&b, WIRE_REPLICA_GET, 1, 0, 0);
    buf_put_varint(&b, UINT64_MAX);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* a member list claiming more members than allowed */
    wire_header(&b, WIRE_MEMBERS | WIRE_REPLY, 1, 0, 0);
    buf_put_varint(&b, WIRE_MAX_MEMBERS + 1);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    /* a member id with a NUL inside */
    wire_header(&b, WIRE_JOIN, 1, 0, 0);
    wire_put_bytes(&b, "a\0b", 3);
    wire_put_bytes(&b, "tcp://x:1", 9);
    buf_put_u8(&b, 0);
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    buf_free(&b);
    ck_assert_int_eq(wire_decode(NULL, 0, &lim, &m), KV_EPROTO);
}
END_TEST

START_TEST(test_random_bytes)
{
    uint64_t seed = 99;
    int accepted = 0;
    for (int i = 0; i < 200000; i++) {
        uint8_t p[64];
        size_t len = util_rand(&seed) % sizeof(p);
        for (size_t j = 0; j < len; j++) {
            p[j] = (uint8_t)util_rand(&seed);
        }
        if (len >= 4 && i % 2 == 0) {
            /* a valid preamble so the body decoders are reached */
            p[0] = 'K';
            p[1] = 'W';
            p[2] = WIRE_VERSION;
            p[3] = (uint8_t)(util_rand(&seed) % 9) |
                   (uint8_t)(util_rand(&seed) % 2 ? WIRE_REPLY : 0);
        }
        wire_msg_t m;
        int rc = wire_decode(p, len, &lim, &m);
        if (rc != 0 && rc != KV_EPROTO) { /* Check is slow per assert */
            ck_abort_msg("decode returned %d", rc);
        }
        accepted += rc == 0;
    }
    /* some random messages must be well formed, or the test proves little */
    ck_assert_int_gt(accepted, 0);
}
END_TEST

/* A batch of three messages: framing accepted whole, refused when cut,
 * padded, empty, over the count or entry limit, or with an empty entry in
 * a request; entries come back byte for byte and decode on their own. */
START_TEST(test_batches)
{
    buf_t e[3];
    for (int i = 0; i < 3; i++) {
        buf_init(&e[i]);
    }
    wire_build_simple(&e[0], WIRE_PING, 11, 0);
    wire_build_key(&e[1], WIRE_REPLICA_GET, 12, "key", 3);
    wire_build_replica_put(&e[2], 13, "k", 1, "objbytes", 8);
    buf_t b;
    buf_init(&b);
    wire_batch_header(&b, false, 99, 3);
    for (int i = 0; i < 3; i++) {
        wire_put_bytes(&b, e[i].p, e[i].len);
    }
    ck_assert(wire_is_batch(b.p, b.len));
    ck_assert(!wire_is_batch(e[0].p, e[0].len));
    wire_msg_t m;
    ck_assert_int_eq(wire_decode(b.p, b.len, &lim, &m), KV_EPROTO);
    uint64_t id = 0;
    size_t n = 0;
    rd_t r;
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 4096, &id, &n, &r), 0);
    ck_assert_uint_eq(id, 99);
    ck_assert_uint_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        size_t len = 0;
        const uint8_t *p = wire_batch_next(&r, &len);
        ck_assert_uint_eq(len, e[i].len);
        ck_assert_int_eq(memcmp(p, e[i].p, len), 0);
        ck_assert_int_eq(wire_decode(p, len, &lim, &m), 0);
        ck_assert_uint_eq(m.id, 11 + (uint64_t)i);
    }
    /* a request batch is not a reply batch, and the reverse */
    ck_assert_int_eq(wire_batch_open(b.p, b.len, true, 4096, &id, &n, &r),
                     KV_EPROTO);
    /* every strict prefix, and a trailing byte, are refused */
    for (size_t cut = 0; cut < b.len; cut++) {
        ck_assert_msg(wire_batch_open(b.p, cut, false, 4096, &id, &n, &r) ==
                          KV_EPROTO,
                      "batch accepted at %zu of %zu bytes", cut, b.len);
    }
    buf_put_u8(&b, 0);
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 4096, &id, &n, &r),
                     KV_EPROTO);
    /* an entry over the limit */
    b.len--;
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 8, &id, &n, &r),
                     KV_EPROTO);
    buf_free(&b);
    /* no entries, too many entries */
    wire_batch_header(&b, false, 1, 0);
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 4096, &id, &n, &r),
                     KV_EPROTO);
    buf_free(&b);
    wire_batch_header(&b, false, 1, WIRE_BATCH_MAX + 1);
    for (int i = 0; i < WIRE_BATCH_MAX + 1; i++) {
        wire_put_bytes(&b, e[0].p, e[0].len);
    }
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 4096, &id, &n, &r),
                     KV_EPROTO);
    buf_free(&b);
    /* an empty entry: "send again alone" in a reply, malformed in a
     * request */
    wire_batch_header(&b, true, 1, 2);
    wire_put_bytes(&b, e[0].p, e[0].len);
    wire_put_bytes(&b, NULL, 0);
    ck_assert_int_eq(wire_batch_open(b.p, b.len, true, 4096, &id, &n, &r), 0);
    b.p[3] = WIRE_BATCH;
    ck_assert_int_eq(wire_batch_open(b.p, b.len, false, 4096, &id, &n, &r),
                     KV_EPROTO);
    buf_free(&b);
    for (int i = 0; i < 3; i++) {
        buf_free(&e[i]);
    }
}
END_TEST

/* Random bodies behind a batch header: refused or walked, never overread
 * (run under the sanitizers by make SANITIZE=1 check). */
START_TEST(test_random_batches)
{
    uint64_t seed = 7;
    int opened = 0;
    for (int i = 0; i < 100000; i++) {
        uint8_t p[48];
        size_t len = util_rand(&seed) % sizeof(p);
        for (size_t j = 0; j < len; j++) {
            p[j] = (uint8_t)util_rand(&seed);
        }
        if (len >= WIRE_HEADER_SIZE + 1) {
            memset(p, 0, WIRE_HEADER_SIZE);
            p[0] = 'K';
            p[1] = 'W';
            p[2] = WIRE_VERSION;
            p[3] = WIRE_BATCH | (i % 2 ? WIRE_REPLY : 0);
            p[WIRE_HEADER_SIZE] = (uint8_t)(util_rand(&seed) % 4);
        }
        uint64_t id;
        size_t n;
        rd_t r;
        if (wire_batch_open(p, len, i % 2, 16, &id, &n, &r) != 0) {
            continue;
        }
        opened++;
        for (size_t k = 0; k < n; k++) {
            size_t elen = 0;
            const uint8_t *e = wire_batch_next(&r, &elen);
            wire_msg_t m;
            (void)wire_decode(e, elen, &lim, &m);
        }
        if (rd_left(&r) != 0) {
            ck_abort_msg("batch of %zu entries left %zu bytes", n,
                         rd_left(&r));
        }
    }
    ck_assert_int_gt(opened, 0);
}
END_TEST

Suite *wire_suite(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_roundtrips);
    tcase_add_test(tc, test_limits_and_bad_fields);
    tcase_add_test(tc, test_random_bytes);
    tcase_add_test(tc, test_batches);
    tcase_add_test(tc, test_random_batches);
    suite_add_tcase(s, tc);
    return s;
}
