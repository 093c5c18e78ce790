/*
 * fuzz_object.c - stored objects (obj_decode) and the version vectors and
 * dots inside them (vc_decode), as read from RocksDB and from peers.
 *
 * Input: a mode byte, then two objects framed by fuzz_split (fuzz.h). With
 * bit 0 of the mode set, each object's checksum is written afresh so that
 * mutations of the body reach the decoder. A decoded object must keep
 * object.c's invariants (siblings sorted by distinct dots the context
 * covers, counters from 1, no value under a tombstone) and encode back to
 * the same bytes (Merkle digests need one encoding per object). Two
 * decoded objects are joined both ways, the results must be equal (the
 * join commutes), absorb either side again without change (it is a least
 * upper bound) and survive an encode-decode round trip; a write on top
 * (obj_update) and pruning (obj_prune) must keep the invariants.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "object.h"

/* Small limits, so that inputs of a few KiB reach every bound. */
static const obj_limits_t lim = {256, 16, 24};
/* What a node itself accepts (kv.c): results of joins are checked
 * against it, as they may exceed the small limits. */
static const obj_limits_t node_lim = {1u << 30, OBJ_DECODE_MAX_SIBLINGS,
                                      VC_DECODE_MAX};

static int dot_cmp(vc_dot_t a, vc_dot_t b)
{
    if (a.actor != b.actor) {
        return a.actor < b.actor ? -1 : 1;
    }
    return a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0;
}

static void check_invariants(const obj_t *o)
{
    for (size_t i = 0; i < o->cc.n; i++) {
        FUZZ_CHECK(o->cc.e[i].counter >= 1);
        FUZZ_CHECK(i == 0 || o->cc.e[i - 1].actor < o->cc.e[i].actor);
    }
    for (size_t i = 0; i < o->n; i++) {
        const obj_sib_t *s = &o->sib[i];
        FUZZ_CHECK(s->dot.counter >= 1 && vc_covers(&o->cc, s->dot));
        FUZZ_CHECK(i == 0 || dot_cmp(o->sib[i - 1].dot, s->dot) < 0);
        FUZZ_CHECK((s->flags & ~OBJ_SIB_TOMBSTONE) == 0);
        FUZZ_CHECK(!(s->flags & OBJ_SIB_TOMBSTONE) || s->vlen == 0);
        FUZZ_CHECK((s->vlen == 0) == (s->val == NULL));
    }
    FUZZ_CHECK(obj_live(o) <= o->n);
}

/* Whether no two siblings carry the same write token (what obj_update and
 * obj_join leave behind). */
static bool tokens_distinct(const obj_t *o)
{
    for (size_t i = 0; i < o->n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (o->sib[i].token != 0 && o->sib[i].token == o->sib[j].token) {
                return false;
            }
        }
    }
    return true;
}

/* Encodes o, checks the bytes decode to an equal object, returns them. */
static void round_trip(const obj_t *o, buf_t *b)
{
    FUZZ_CHECK(obj_encode(o, b) == 0);
    obj_t back;
    obj_init(&back);
    FUZZ_CHECK(obj_decode(b->p, b->len, &node_lim, &back) == 0);
    FUZZ_CHECK(obj_equal(o, &back));
    obj_free(&back);
}

static void copy(obj_t *dst, const obj_t *src)
{
    buf_t b;
    buf_init(&b);
    round_trip(src, &b);
    FUZZ_CHECK(obj_decode(b.p, b.len, &node_lim, dst) == 0);
    buf_free(&b);
}

/* Decodes one side; 1 when it decoded (and re-encoded to the same bytes). */
static int decode_side(const uint8_t *p, size_t n, int reseal, obj_t *o)
{
    uint8_t *c = fuzz_sealed(p, n, reseal);
    FUZZ_CHECK(c != NULL);
    int rc = obj_decode(c, n, &lim, o);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_ECORRUPT);
        FUZZ_CHECK(o->n == 0 && o->cc.n == 0);
        free(c);
        return 0;
    }
    check_invariants(o);
    FUZZ_CHECK(o->n <= lim.max_siblings && o->cc.n <= lim.max_clock);
    buf_t b;
    buf_init(&b);
    round_trip(o, &b);
    FUZZ_CHECK(b.len == n && memcmp(b.p, c, n) == 0);
    buf_free(&b);
    free(c);
    return 1;
}

/* Whether a dot both sides hold names the same sibling on both. Dots are
 * never reused (vclock.c), so any two replicas agree; a decoder cannot
 * tell, and a join of disagreeing sides keeps its own (it is then not
 * commutative, and nothing should expect it to be). */
static bool dots_agree(const obj_t *a, const obj_t *b)
{
    size_t i = 0;
    size_t j = 0;
    while (i < a->n && j < b->n) {
        int c = dot_cmp(a->sib[i].dot, b->sib[j].dot);
        if (c == 0) {
            const obj_sib_t *x = &a->sib[i++];
            const obj_sib_t *y = &b->sib[j++];
            if (x->flags != y->flags || x->token != y->token ||
                x->ts_us != y->ts_us || x->vlen != y->vlen ||
                (x->vlen > 0 && memcmp(x->val, y->val, x->vlen) != 0)) {
                return false;
            }
        } else if (c < 0) {
            i++;
        } else {
            j++;
        }
    }
    return true;
}

static void check_join(const obj_t *a, const obj_t *b)
{
    bool agree = dots_agree(a, b);
    obj_t ab;
    obj_t ba;
    obj_init(&ab);
    obj_init(&ba);
    copy(&ab, a);
    copy(&ba, b);
    bool changed = false;
    FUZZ_CHECK(obj_join(&ab, b, &changed) == 0);
    FUZZ_CHECK(obj_join(&ba, a, NULL) == 0);
    check_invariants(&ab);
    check_invariants(&ba);
    FUZZ_CHECK(!agree || obj_equal(&ab, &ba));
    /* The join is an upper bound of both sides: its context descends
     * theirs, and joining either side again changes nothing. */
    FUZZ_CHECK(vc_descends(&ab.cc, &a->cc) && vc_descends(&ab.cc, &b->cc));
    FUZZ_CHECK(obj_join(&ab, a, &changed) == 0 && !changed);
    FUZZ_CHECK(!agree || (obj_join(&ab, b, &changed) == 0 && !changed));
    FUZZ_CHECK(!agree || obj_equal(&ab, &ba));
    /* A side that is its own join (distinct tokens) is unchanged by
     * joining itself. */
    if (tokens_distinct(a)) {
        obj_t aa;
        obj_init(&aa);
        copy(&aa, a);
        FUZZ_CHECK(obj_join(&aa, a, &changed) == 0 && !changed);
        FUZZ_CHECK(obj_equal(&aa, a));
        obj_free(&aa);
    }
    buf_t enc;
    buf_init(&enc);
    round_trip(&ab, &enc);
    buf_free(&enc);

    /* A write on top of the join with b's context as the client's: the
     * new dot is the next of an actor taken from b (or a fresh one). */
    uint64_t actor = b->n > 0 ? b->sib[0].dot.actor : 0x5eedu;
    uint64_t next = vc_get(&ab.cc, actor);
    if (next < UINT64_MAX) {
        vc_dot_t dot = {actor, next + 1};
        uint64_t token = a->n > 0 ? a->sib[0].token : 0;
        FUZZ_CHECK(obj_update(&ab, &b->cc, dot, 1, token, "v", 1,
                              b->n % 2 == 1) == 0);
        check_invariants(&ab);
        FUZZ_CHECK(vc_covers(&ab.cc, dot));
        for (size_t i = 0; i < ab.n; i++) {
            FUZZ_CHECK(dot_cmp(ab.sib[i].dot, dot) == 0 ||
                       !vc_covers(&b->cc, ab.sib[i].dot));
        }
        round_trip(&ab, &enc);
        buf_free(&enc);
    }
    /* Pruning never drops the entry of a sibling's actor. */
    (void)obj_prune(&ab, 1);
    check_invariants(&ab);
    obj_free(&ab);
    obj_free(&ba);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int reseal = data[0] & 1;
    const uint8_t *pa;
    const uint8_t *pb;
    size_t na;
    size_t nb;
    fuzz_split(data + 1, size - 1, &pa, &na, &pb, &nb);
    obj_t a;
    obj_t b;
    obj_init(&a);
    obj_init(&b);
    int ok_a = decode_side(pa, na, reseal, &a);
    int ok_b = decode_side(pb, nb, reseal, &b);
    if (ok_a && ok_b) {
        check_join(&a, &b);
    }
    obj_free(&a);
    obj_free(&b);
    return 0;
}
