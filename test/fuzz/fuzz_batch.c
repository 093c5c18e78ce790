/*
 * fuzz_batch.c - batch framing (wire_batch_open, wire_batch_next): the
 * envelope rpc.c puts several whole messages to one peer in.
 *
 * Input: one message as it arrives. It is opened both as a request batch
 * and as a reply batch (at most one can succeed: the type byte says which).
 * An opened batch must walk to exactly its count of entries, each within
 * the entry limit and non-empty in a request, and be the one encoding of
 * them (wire_batch_header and wire_put_bytes give the input back). Each
 * entry then goes through wire_decode as rpc.c does: none decodes as a
 * batch (a batch never nests) and what decodes stays inside the entry.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "wire.h"

static const wire_limits_t lim = {64, 1024, 2048};

static void check_batch(const uint8_t *data, size_t size, bool reply,
                        size_t max_entry)
{
    uint64_t id = 0;
    size_t count = 0;
    rd_t r;
    int rc = wire_batch_open(data, size, reply, max_entry, &id, &count, &r);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_EPROTO);
        return;
    }
    FUZZ_CHECK(wire_is_batch(data, size));
    FUZZ_CHECK(count >= 1 && count <= WIRE_BATCH_MAX);
    FUZZ_CHECK((wire_peek_type(data, size) & WIRE_REPLY) ==
               (reply ? WIRE_REPLY : 0));

    buf_t b;
    buf_init(&b);
    wire_batch_header(&b, reply, id, count);
    for (size_t i = 0; i < count; i++) {
        size_t len = 0;
        const uint8_t *e = wire_batch_next(&r, &len);
        FUZZ_CHECK(!r.err && len <= max_entry && (len > 0 || reply));
        FUZZ_CHECK(len == 0 || (e >= data && e + len <= data + size));
        wire_put_bytes(&b, e, len);

        wire_msg_t m;
        if (len > 0 && wire_decode(e, len, &lim, &m) == 0) {
            FUZZ_CHECK(!wire_is_batch(e, len));
            FUZZ_CHECK(m.klen == 0 || (m.key >= e && m.key + m.klen <= e + len));
            FUZZ_CHECK(m.objlen == 0 ||
                       (m.obj >= e && m.obj + m.objlen <= e + len));
        }
    }
    FUZZ_CHECK(rd_left(&r) == 0);
    FUZZ_CHECK(!b.oom && b.len == size && memcmp(b.p, data, size) == 0);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The receiver's bound on an entry (rpc.c), and a small one that
     * inputs of a few KiB can exceed. */
    size_t max_entry = wire_msg_max(&lim);
    uint64_t id;
    size_t count;
    rd_t r;
    bool as_request = wire_batch_open(data, size, false, max_entry, &id,
                                      &count, &r) == 0;
    bool as_reply = wire_batch_open(data, size, true, max_entry, &id, &count,
                                    &r) == 0;
    FUZZ_CHECK(!(as_request && as_reply));
    check_batch(data, size, false, max_entry);
    check_batch(data, size, true, max_entry);
    check_batch(data, size, true, 40);
    return 0;
}
