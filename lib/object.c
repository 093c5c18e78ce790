/*
 * object.c - versioned objects: the unit that is stored, replicated, read
 * repaired and compared by anti-entropy.
 *
 * An object is a causal context (a version vector, vclock.c) and a set of
 * siblings, each named by the dot of the write that created it and holding
 * either a value or a tombstone. Invariants every function keeps:
 *   - every sibling's dot is covered by the context;
 *   - dots are distinct and siblings are sorted by dot, so that equal
 *     objects encode to equal bytes on every node (Merkle digests rely on
 *     it);
 *   - a sibling leaves only when a write whose context covers its dot, or a
 *     join with an object that has seen the dot and dropped it, removes it,
 *     or when a sibling with a lower dot carries the same write token (the
 *     same client write, applied twice by a retried forward: obj_update).
 *     Nothing else (no timestamp, no size limit) ever discards a version.
 *
 * On-disk / on-wire encoding, version 1 (integers little-endian, varints
 * LEB128):
 *     'K' 'O' version:u8 flags:u8
 *     context: count:varint { actor:u64 counter:varint }*
 *     siblings: count:varint
 *       { actor:u64 counter:varint ts_us:u64 flags:u8 [token:u64]
 *         vlen:varint bytes }*
 *       flags: 0x01 tombstone, 0x02 a token follows (nonzero)
 *     checksum:u32   low 32 bits of XXH3-64 over every byte before it
 * A decoder rejects anything else; see obj_decode.
 */
#include "object.h"

#include <stdlib.h>
#include <string.h>

#include "kvdist.h"

#define OBJ_MAGIC0 'K'
#define OBJ_MAGIC1 'O'
#define OBJ_VERSION 1

void obj_init(obj_t *o)
{
    vc_init(&o->cc);
    o->n = 0;
    o->cap = 0;
    o->sib = NULL;
}

static void obj_clear_sibs(obj_t *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->sib[i].val);
    }
    o->n = 0;
}

void obj_free(obj_t *o)
{
    obj_clear_sibs(o);
    free(o->sib);
    vc_free(&o->cc);
    obj_init(o);
}

static int dot_cmp(vc_dot_t a, vc_dot_t b)
{
    if (a.actor != b.actor) {
        return a.actor < b.actor ? -1 : 1;
    }
    if (a.counter != b.counter) {
        return a.counter < b.counter ? -1 : 1;
    }
    return 0;
}

static int sib_copy(obj_sib_t *dst, const obj_sib_t *src)
{
    *dst = *src;
    dst->val = NULL;
    if (src->vlen > 0) {
        dst->val = malloc(src->vlen);
        if (dst->val == NULL) {
            return KV_ENOMEM;
        }
        memcpy(dst->val, src->val, src->vlen);
    }
    return 0;
}

/* Drops every sibling whose token a sibling with a lower dot carries
 * (siblings are in dot order, so the first of each token stays). Returns
 * how many it dropped. */
static size_t obj_drop_retried(obj_t *o)
{
    size_t k = 0;
    for (size_t i = 0; i < o->n; i++) {
        obj_sib_t *s = &o->sib[i];
        bool dup = false;
        for (size_t j = 0; j < k && s->token != 0 && !dup; j++) {
            dup = o->sib[j].token == s->token;
        }
        if (dup) {
            free(s->val);
            continue;
        }
        o->sib[k++] = *s;
    }
    size_t dropped = o->n - k;
    o->n = k;
    return dropped;
}

int obj_update(obj_t *o, const vc_t *ctx, vc_dot_t dot, int64_t ts_us,
               uint64_t token, const void *val, size_t vlen, bool tombstone)
{
    vc_t cc;
    vc_init(&cc);
    obj_sib_t *out = malloc((o->n + 1) * sizeof(*out));
    if (out == NULL || vc_copy(&cc, &o->cc) != 0 ||
        (ctx != NULL && vc_merge(&cc, ctx) != 0) ||
        vc_raise(&cc, dot.actor, dot.counter) != 0) {
        free(out);
        vc_free(&cc);
        return KV_ENOMEM;
    }
    obj_sib_t fresh = {dot, ts_us, token, tombstone ? OBJ_SIB_TOMBSTONE : 0,
                       0, NULL};
    if (!tombstone && vlen > 0) {
        fresh.val = malloc(vlen);
        if (fresh.val == NULL) {
            free(out);
            vc_free(&cc);
            return KV_ENOMEM;
        }
        memcpy(fresh.val, val, vlen);
        fresh.vlen = vlen;
    }
    /* Keep the siblings ctx has not seen; insert the new one in dot order.
     * Its dot is new, so no kept sibling can share it. */
    size_t k = 0;
    bool placed = false;
    for (size_t i = 0; i < o->n; i++) {
        obj_sib_t *s = &o->sib[i];
        if (ctx != NULL && vc_covers(ctx, s->dot)) {
            free(s->val);
            continue;
        }
        if (!placed && dot_cmp(fresh.dot, s->dot) < 0) {
            out[k++] = fresh;
            placed = true;
        }
        out[k++] = *s;
    }
    if (!placed) {
        out[k++] = fresh;
    }
    /* The values moved into out; drop the old array without freeing them. */
    free(o->sib);
    o->sib = out;
    o->n = k;
    o->cap = k;
    vc_free(&o->cc);
    o->cc = cc;
    (void)obj_drop_retried(o);
    return 0;
}

int obj_join(obj_t *dst, const obj_t *src, bool *changed)
{
    /* Build the result beside dst first (shallow references to dst's
     * values, deep copies of src's), so that running out of memory halfway
     * leaves dst exactly as it was. */
    size_t cap = dst->n + src->n;
    obj_sib_t *out = cap ? malloc(cap * sizeof(*out)) : NULL;
    bool *from_src = cap ? calloc(cap, sizeof(*from_src)) : NULL;
    vc_t cc;
    vc_init(&cc);
    if ((cap && (out == NULL || from_src == NULL)) ||
        vc_copy(&cc, &dst->cc) != 0 || vc_merge(&cc, &src->cc) != 0) {
        goto oom;
    }
    /* A sibling on one side only survives if the other side has not seen
     * its dot; one held by both sides survives. */
    size_t i = 0;
    size_t j = 0;
    size_t k = 0;
    bool sibs_changed = false;
    while (i < dst->n || j < src->n) {
        int c;
        if (i == dst->n) {
            c = 1;
        } else if (j == src->n) {
            c = -1;
        } else {
            c = dot_cmp(dst->sib[i].dot, src->sib[j].dot);
        }
        if (c == 0) {
            out[k++] = dst->sib[i++];
            j++;
        } else if (c < 0) {
            if (!vc_covers(&src->cc, dst->sib[i].dot)) {
                out[k++] = dst->sib[i];
            } else {
                sibs_changed = true;
            }
            i++;
        } else {
            if (!vc_covers(&dst->cc, src->sib[j].dot)) {
                if (sib_copy(&out[k], &src->sib[j]) != 0) {
                    goto oom;
                }
                from_src[k++] = true;
                sibs_changed = true;
            }
            j++;
        }
    }
    /* Commit: free the values of dst siblings that did not survive. */
    for (size_t d = 0, m = 0; d < dst->n; d++) {
        while (m < k &&
               (from_src[m] || dot_cmp(out[m].dot, dst->sib[d].dot) < 0)) {
            m++;
        }
        if (m == k || dot_cmp(out[m].dot, dst->sib[d].dot) != 0) {
            free(dst->sib[d].val);
        }
    }
    bool cc_changed = vc_compare(&cc, &dst->cc) != VC_EQUAL;
    free(dst->sib);
    dst->sib = out;
    dst->n = k;
    dst->cap = cap;
    vc_free(&dst->cc);
    dst->cc = cc;
    free(from_src);
    sibs_changed = obj_drop_retried(dst) > 0 || sibs_changed;
    if (changed != NULL) {
        *changed = cc_changed || sibs_changed;
    }
    return 0;

oom:
    if (out != NULL && from_src != NULL) {
        for (size_t m = 0; m < cap; m++) {
            if (from_src[m]) {
                free(out[m].val);
            }
        }
    }
    free(out);
    free(from_src);
    vc_free(&cc);
    return KV_ENOMEM;
}

size_t obj_live(const obj_t *o)
{
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (!(o->sib[i].flags & OBJ_SIB_TOMBSTONE)) {
            n++;
        }
    }
    return n;
}

bool obj_equal(const obj_t *a, const obj_t *b)
{
    if (a->n != b->n || vc_compare(&a->cc, &b->cc) != VC_EQUAL) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const obj_sib_t *x = &a->sib[i];
        const obj_sib_t *y = &b->sib[i];
        if (dot_cmp(x->dot, y->dot) != 0 || x->flags != y->flags ||
            x->token != y->token ||
            x->ts_us != y->ts_us || x->vlen != y->vlen ||
            (x->vlen && memcmp(x->val, y->val, x->vlen) != 0)) {
            return false;
        }
    }
    return true;
}

size_t obj_prune(obj_t *o, size_t max)
{
    if (o->cc.n <= max) {
        return 0;
    }
    /* Rare (only past clock_max entries), so a plain allocation is fine. */
    uint64_t *keep = malloc((o->n ? o->n : 1) * sizeof(*keep));
    if (keep == NULL) {
        return 0; /* pruning is an optimisation: skip it rather than fail */
    }
    for (size_t i = 0; i < o->n; i++) {
        keep[i] = o->sib[i].dot.actor;
    }
    size_t dropped = vc_prune(&o->cc, max, keep, o->n);
    free(keep);
    return dropped;
}

static const uint8_t obj_prefix[4] = {OBJ_MAGIC0, OBJ_MAGIC1, OBJ_VERSION, 0};

int obj_encode(const obj_t *o, buf_t *b)
{
    size_t start = b->len;
    buf_put(b, obj_prefix, sizeof(obj_prefix));
    vc_encode(&o->cc, b);
    buf_put_varint(b, o->n);
    for (size_t i = 0; i < o->n; i++) {
        const obj_sib_t *s = &o->sib[i];
        buf_put_u64(b, s->dot.actor);
        buf_put_varint(b, s->dot.counter);
        buf_put_u64(b, (uint64_t)s->ts_us);
        buf_put_u8(b, (uint8_t)(s->flags | (s->token ? OBJ_SIB_TOKEN : 0)));
        if (s->token != 0) {
            buf_put_u64(b, s->token);
        }
        buf_put_varint(b, s->vlen);
        buf_put(b, s->val, s->vlen);
    }
    buf_seal(b, start);
    return b->oom ? KV_ENOMEM : 0;
}

int obj_decode(const void *p, size_t len, const obj_limits_t *lim, obj_t *o)
{
    obj_free(o);
    rd_t r;
    if (!rd_unseal(&r, p, len, obj_prefix, sizeof(obj_prefix))) {
        return KV_ECORRUPT;
    }
    size_t max_clock =
        lim->max_clock < VC_DECODE_MAX ? lim->max_clock : VC_DECODE_MAX;
    int rc = vc_decode(&r, &o->cc, max_clock);
    if (rc != 0) {
        obj_free(o);
        return rc;
    }
    uint64_t n = rd_varint(&r);
    size_t max_sibs = lim->max_siblings < OBJ_DECODE_MAX_SIBLINGS
                          ? lim->max_siblings
                          : OBJ_DECODE_MAX_SIBLINGS;
    /* A sibling takes at least 19 bytes: never allocate for more than the
     * input can hold. */
    if (r.err || n > max_sibs || n > rd_left(&r) / 19) {
        obj_free(o);
        return KV_ECORRUPT;
    }
    if (n > 0) {
        o->sib = calloc((size_t)n, sizeof(*o->sib));
        if (o->sib == NULL) {
            obj_free(o);
            return KV_ENOMEM;
        }
        o->cap = (size_t)n;
    }
    for (uint64_t i = 0; i < n; i++) {
        obj_sib_t *s = &o->sib[i];
        s->dot.actor = rd_u64(&r);
        s->dot.counter = rd_varint(&r);
        s->ts_us = (int64_t)rd_u64(&r);
        s->flags = rd_u8(&r);
        if (s->flags & OBJ_SIB_TOKEN) {
            s->token = rd_u64(&r);
            s->flags &= (uint8_t)~OBJ_SIB_TOKEN;
            if (s->token == 0) {
                r.err = true; /* a token is never 0: 0 means none */
            }
        }
        uint64_t vlen = rd_varint(&r);
        if (r.err || s->dot.counter == 0 || (s->flags & ~OBJ_SIB_TOMBSTONE) ||
            vlen > lim->max_value || vlen > rd_left(&r) ||
            ((s->flags & OBJ_SIB_TOMBSTONE) && vlen != 0) ||
            !vc_covers(&o->cc, s->dot) ||
            (i > 0 && dot_cmp(o->sib[i - 1].dot, s->dot) >= 0)) {
            obj_free(o);
            return KV_ECORRUPT;
        }
        const uint8_t *v = rd_bytes(&r, (size_t)vlen);
        o->n = (size_t)i + 1;
        if (vlen > 0) {
            s->val = malloc((size_t)vlen);
            if (s->val == NULL) {
                obj_free(o);
                return KV_ENOMEM;
            }
            memcpy(s->val, v, (size_t)vlen);
            s->vlen = (size_t)vlen;
        }
    }
    if (r.err || rd_left(&r) != 0) {
        obj_free(o);
        return KV_ECORRUPT;
    }
    return 0;
}
