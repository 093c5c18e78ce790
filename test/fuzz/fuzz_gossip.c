/*
 * fuzz_gossip.c - gossip rows and member rows (wire.c's rd_list, walked by
 * wire_next_gossip and wire_next_member), the lists cluster.c merges into
 * its member table.
 *
 * Input: the body of a list, a varint count then the rows. It is framed as
 * each message that carries rows (a GOSSIP request, a SHUTDOWN request with
 * its one row, a MEMBERS reply, and a JOIN request's single member) and
 * decoded by wire_decode; a list that decodes must walk to its count, hold
 * ids and URLs within the limits cluster.c's fixed arrays rely on (no NUL,
 * not empty, kvlimits.h), and be written back byte for byte by the
 * encoders cluster.c uses (wire_put_gossip, wire_put_member).
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "wire.h"

static const wire_limits_t lim = {64, 1024, 2048};

static char *cstr(const uint8_t *p, size_t n)
{
    FUZZ_CHECK(n >= 1 && memchr(p, 0, n) == NULL);
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Frames body as a message of this type and decodes it. */
static int decode_as(uint8_t type, uint16_t status, const uint8_t *body,
                     size_t n, buf_t *msg, wire_msg_t *m)
{
    buf_free(msg);
    wire_header(msg, type, 7, status, 0);
    buf_put(msg, body, n);
    FUZZ_CHECK(!msg->oom);
    return wire_decode(msg->p, msg->len, &lim, m);
}

static void check_list(const wire_msg_t *m, bool gossip, const uint8_t *body,
                       size_t n)
{
    FUZZ_CHECK(m->nmembers <= WIRE_MAX_MEMBERS);
    buf_t b;
    buf_init(&b);
    buf_put_varint(&b, m->nmembers);
    rd_t r;
    rd_init(&r, m->members, m->memberslen);
    size_t rows = 0;
    wire_gossip_t g;
    wire_member_t mem;
    while (gossip ? wire_next_gossip(&r, &g) : wire_next_member(&r, &mem)) {
        const uint8_t *id = gossip ? g.id : mem.id;
        size_t idlen = gossip ? g.idlen : mem.idlen;
        const uint8_t *url = gossip ? g.url : mem.url;
        size_t urllen = gossip ? g.urllen : mem.urllen;
        FUZZ_CHECK(idlen <= KV_ID_MAX && urllen <= KV_URL_MAX);
        char *sid = cstr(id, idlen);
        char *surl = cstr(url, urllen);
        if (gossip) {
            wire_put_gossip(&b, sid, surl, g.incarnation, g.heartbeat);
        } else {
            FUZZ_CHECK(mem.status <= 3);
            wire_put_member(&b, sid, surl, mem.status);
        }
        free(sid);
        free(surl);
        rows++;
    }
    FUZZ_CHECK(rows == m->nmembers && rd_left(&r) == 0);
    FUZZ_CHECK(!b.oom && b.len == n && memcmp(b.p, body, n) == 0);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf_t msg;
    buf_init(&msg);
    wire_msg_t m;

    if (decode_as(WIRE_GOSSIP, 0, data, size, &msg, &m) == 0) {
        check_list(&m, true, data, size);
    }
    if (decode_as(WIRE_GOSSIP | WIRE_REPLY, 0, data, size, &msg, &m) == 0) {
        check_list(&m, true, data, size);
    }
    if (decode_as(WIRE_SHUTDOWN, 0, data, size, &msg, &m) == 0) {
        FUZZ_CHECK(m.nmembers == 1);
        check_list(&m, true, data, size);
    }
    if (decode_as(WIRE_MEMBERS | WIRE_REPLY, 0, data, size, &msg, &m) == 0) {
        check_list(&m, false, data, size);
    }
    if (decode_as(WIRE_JOIN | WIRE_REPLY, 0, data, size, &msg, &m) == 0) {
        check_list(&m, false, data, size);
    }
    /* A JOIN request: the body is one member row, no count. */
    if (decode_as(WIRE_JOIN, 0, data, size, &msg, &m) == 0) {
        buf_t b;
        buf_init(&b);
        char *id = cstr(m.member.id, m.member.idlen);
        char *url = cstr(m.member.url, m.member.urllen);
        FUZZ_CHECK(m.member.idlen <= KV_ID_MAX &&
                   m.member.urllen <= KV_URL_MAX && m.member.status <= 3);
        wire_put_member(&b, id, url, m.member.status);
        FUZZ_CHECK(!b.oom && b.len == size && memcmp(b.p, data, size) == 0);
        free(id);
        free(url);
        buf_free(&b);
    }
    buf_free(&msg);
    return 0;
}
