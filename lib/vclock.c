/*
 * vclock.c - version vectors with dotted-version-vector semantics.
 *
 * What it owns: the representation of causal history. A stored object keeps
 * one version vector (its causal context, "cc") plus one dot per sibling;
 * object.c combines them as in "Dotted Version Vectors" (Preguica, Baquero et
 * al.) and Riak 2.0's dvv_enabled: a write carrying context C drops exactly
 * the siblings whose dots C covers, so concurrent writes become siblings and
 * a chain of read-modify-writes never does.
 *
 * Actors and why dots are never reused: an actor id is chosen anew every
 * time a node opens (vc_actor_make: the start time in the high 32 bits,
 * random bits in the low 32), and that actor's counter starts at 0 in
 * memory. A node whose data directory is wiped or restored from an old copy
 * therefore never repeats a dot it issued before, so its new writes can
 * never look older than data that already exists elsewhere - the failure of
 * Riak's vnode counters in riak_kv#679. The cost is one clock entry per
 * incarnation that wrote a key.
 *
 * Bounded size: vc_prune keeps at most clock_max entries (50 by default, as
 * Riak's small/big_vclock), dropping the oldest incarnations first (the
 * start time is in the id, so no per-entry timestamp is stored) and never an
 * entry that dots a live sibling. Pruning forgets history, so it can only
 * ever produce a false sibling (never lose a write): that happens when a
 * replica still holds a version written by an incarnation that has been
 * pruned, i.e. a replica stale by more than clock_max incarnations.
 *
 * Wall-clock time never orders versions here.
 */
#include "vclock.h"

#include <stdlib.h>
#include <string.h>

#include "kvdist.h"

void vc_init(vc_t *vc)
{
    vc->n = 0;
    vc->cap = 0;
    vc->e = NULL;
}

void vc_free(vc_t *vc)
{
    free(vc->e);
    vc_init(vc);
}

void vc_clear(vc_t *vc)
{
    vc->n = 0;
}

static int vc_reserve(vc_t *vc, size_t n)
{
    if (n <= vc->cap) {
        return 0;
    }
    size_t cap = vc->cap ? vc->cap * 2 : 4;
    if (cap < n) {
        cap = n;
    }
    vc_dot_t *e = realloc(vc->e, cap * sizeof(*e));
    if (e == NULL) {
        return KV_ENOMEM;
    }
    vc->e = e;
    vc->cap = cap;
    return 0;
}

int vc_copy(vc_t *dst, const vc_t *src)
{
    if (vc_reserve(dst, src->n) != 0) {
        return KV_ENOMEM;
    }
    if (src->n > 0) {
        memcpy(dst->e, src->e, src->n * sizeof(*src->e));
    }
    dst->n = src->n;
    return 0;
}

/* Index of the first entry with actor >= the given one. */
static size_t vc_lower(const vc_t *vc, uint64_t actor)
{
    size_t lo = 0;
    size_t hi = vc->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vc->e[mid].actor < actor) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

uint64_t vc_get(const vc_t *vc, uint64_t actor)
{
    size_t i = vc_lower(vc, actor);
    return (i < vc->n && vc->e[i].actor == actor) ? vc->e[i].counter : 0;
}

int vc_raise(vc_t *vc, uint64_t actor, uint64_t counter)
{
    if (counter == 0) {
        return 0;
    }
    size_t i = vc_lower(vc, actor);
    if (i < vc->n && vc->e[i].actor == actor) {
        if (vc->e[i].counter < counter) {
            vc->e[i].counter = counter;
        }
        return 0;
    }
    if (vc_reserve(vc, vc->n + 1) != 0) {
        return KV_ENOMEM;
    }
    memmove(&vc->e[i + 1], &vc->e[i], (vc->n - i) * sizeof(*vc->e));
    vc->e[i].actor = actor;
    vc->e[i].counter = counter;
    vc->n++;
    return 0;
}

int vc_merge(vc_t *dst, const vc_t *src)
{
    /* Merge two sorted lists into a fresh array: O(n + m), one allocation. */
    if (src->n == 0) {
        return 0;
    }
    size_t cap = dst->n + src->n;
    vc_dot_t *out = malloc(cap * sizeof(*out));
    if (out == NULL) {
        return KV_ENOMEM;
    }
    size_t i = 0;
    size_t j = 0;
    size_t k = 0;
    while (i < dst->n || j < src->n) {
        if (j == src->n || (i < dst->n && dst->e[i].actor < src->e[j].actor)) {
            out[k++] = dst->e[i++];
        } else if (i == dst->n || src->e[j].actor < dst->e[i].actor) {
            out[k++] = src->e[j++];
        } else {
            out[k] = dst->e[i];
            if (src->e[j].counter > out[k].counter) {
                out[k].counter = src->e[j].counter;
            }
            k++;
            i++;
            j++;
        }
    }
    free(dst->e);
    dst->e = out;
    dst->n = k;
    dst->cap = cap;
    return 0;
}

bool vc_covers(const vc_t *vc, vc_dot_t dot)
{
    return dot.counter <= vc_get(vc, dot.actor);
}

int vc_compare(const vc_t *a, const vc_t *b)
{
    bool a_more = false;
    bool b_more = false;
    size_t i = 0;
    size_t j = 0;
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->e[i].actor < b->e[j].actor)) {
            a_more = true;
            i++;
        } else if (i == a->n || b->e[j].actor < a->e[i].actor) {
            b_more = true;
            j++;
        } else {
            if (a->e[i].counter > b->e[j].counter) {
                a_more = true;
            } else if (a->e[i].counter < b->e[j].counter) {
                b_more = true;
            }
            i++;
            j++;
        }
    }
    if (a_more && b_more) {
        return VC_CONCURRENT;
    }
    if (a_more) {
        return VC_AFTER;
    }
    if (b_more) {
        return VC_BEFORE;
    }
    return VC_EQUAL;
}

bool vc_descends(const vc_t *a, const vc_t *b)
{
    int o = vc_compare(a, b);
    return o == VC_EQUAL || o == VC_AFTER;
}

void vc_encode(const vc_t *vc, buf_t *b)
{
    buf_put_varint(b, vc->n);
    for (size_t i = 0; i < vc->n; i++) {
        buf_put_u64(b, vc->e[i].actor);
        buf_put_varint(b, vc->e[i].counter);
    }
}

int vc_decode(rd_t *r, vc_t *vc, size_t max)
{
    vc_clear(vc);
    uint64_t n = rd_varint(r);
    /* Each entry takes at least 9 bytes: refuse counts the input cannot
     * hold before allocating for them. */
    if (r->err || n > max || n > rd_left(r) / 9) {
        r->err = true;
        return KV_ECORRUPT;
    }
    if (vc_reserve(vc, (size_t)n) != 0) {
        return KV_ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t actor = rd_u64(r);
        uint64_t counter = rd_varint(r);
        if (r->err || counter == 0 || (i > 0 && actor <= vc->e[i - 1].actor)) {
            r->err = true;
            vc_clear(vc);
            return KV_ECORRUPT;
        }
        vc->e[i].actor = actor;
        vc->e[i].counter = counter;
    }
    vc->n = (size_t)n;
    return 0;
}

/* Context framing: 'K' 'C' version, then the clock, then the low 32 bits of
 * XXH3-64 over everything before it. */
#define VC_CTX_MAGIC0 'K'
#define VC_CTX_MAGIC1 'C'
#define VC_CTX_VERSION 1

static const uint8_t vc_ctx_prefix[3] = {VC_CTX_MAGIC0, VC_CTX_MAGIC1,
                                         VC_CTX_VERSION};

int vc_context_encode(const vc_t *vc, buf_t *b)
{
    size_t start = b->len;
    buf_put(b, vc_ctx_prefix, sizeof(vc_ctx_prefix));
    vc_encode(vc, b);
    buf_seal(b, start);
    return b->oom ? KV_ENOMEM : 0;
}

int vc_context_decode(const void *p, size_t len, vc_t *vc)
{
    vc_clear(vc);
    if (len == 0) {
        return 0; /* the empty context covers nothing */
    }
    rd_t r;
    if (!rd_unseal(&r, p, len, vc_ctx_prefix, sizeof(vc_ctx_prefix))) {
        return KV_EINVAL;
    }
    int rc = vc_decode(&r, vc, VC_DECODE_MAX);
    if (rc == KV_ENOMEM) {
        return rc;
    }
    if (rc != 0 || rd_left(&r) != 0) {
        vc_clear(vc);
        return KV_EINVAL;
    }
    return 0;
}

uint64_t vc_actor_make(uint32_t start_seconds, uint32_t random_bits)
{
    return ((uint64_t)start_seconds << 32) | random_bits;
}

uint32_t vc_actor_start(uint64_t actor)
{
    return (uint32_t)(actor >> 32);
}

static bool vc_kept(uint64_t actor, const uint64_t *keep, size_t nkeep)
{
    for (size_t i = 0; i < nkeep; i++) {
        if (keep[i] == actor) {
            return true;
        }
    }
    return false;
}

size_t vc_prune(vc_t *vc, size_t max, const uint64_t *keep, size_t nkeep)
{
    size_t dropped = 0;
    while (vc->n > max) {
        /* Oldest incarnation first; the actor id breaks ties so that every
         * replica prunes the same entry. */
        size_t victim = vc->n;
        for (size_t i = 0; i < vc->n; i++) {
            if (vc_kept(vc->e[i].actor, keep, nkeep)) {
                continue;
            }
            if (victim == vc->n || vc_actor_start(vc->e[i].actor) <
                                       vc_actor_start(vc->e[victim].actor)) {
                victim = i;
            }
        }
        if (victim == vc->n) {
            break; /* every remaining entry dots a live sibling */
        }
        memmove(&vc->e[victim], &vc->e[victim + 1],
                (vc->n - victim - 1) * sizeof(*vc->e));
        vc->n--;
        dropped++;
    }
    return dropped;
}
