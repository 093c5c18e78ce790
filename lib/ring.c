/*
 * ring.c - consistent-hash ring with virtual nodes (see ring.h).
 *
 * A ring owns a private copy of the node ids and two parallel arrays of
 * npos = nodes * vnodes entries: pos[] (ring positions, sorted ascending)
 * and owner[] (the node index holding each position). Invariants, fixed at
 * build time and never changed afterwards:
 *  - pos[] is sorted ascending; equal positions are ordered by node id
 *    (strcmp), then vnode index, so the order is a function of the id set
 *    alone and never of the order the ids were passed in;
 *  - every node owns exactly vnodes entries, so a walk of npos steps from
 *    anywhere meets every node;
 *  - by_id[] lists the node indices sorted by id (no two ids are equal).
 * Position k owns the arc (pos[k-1], pos[k]] (for k == 0, the arc that wraps
 * from pos[npos-1]); when positions tie, the first in the order above owns
 * the point and the others own an empty arc.
 *
 * Nothing here is global and nothing is written after ring_build(), which is
 * what makes concurrent readers safe without locks.
 */
#include "ring.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct ring {
    size_t nnodes;
    unsigned vnodes;
    size_t npos;
    char **ids;      /* nnodes private copies */
    uint32_t *by_id; /* node indices sorted by id */
    uint64_t *pos;   /* npos positions, ascending */
    uint32_t *owner; /* owner[k] is the node at pos[k] */
};

/* pos[] is kept apart from owner[] so the binary search touches only a dense
 * array of 8-byte keys (256 KiB at 16 nodes x 2048 vnodes), whose top levels
 * stay in cache; owner[] is read only for the few positions a walk visits. */

/* Build-time only: the sort key of one position. */
struct build_ent {
    uint64_t pos;
    const char *id;
    uint32_t node;
    uint32_t vidx;
};

struct id_ent {
    const char *id;
    uint32_t node;
};

/* Walks track nodes already emitted in a stack bitmap up to this many nodes
 * (512 bytes): O(1) per step and no allocation on the lookup path. Larger
 * clusters fall back to scanning the output, which is still cheap for the
 * short lists (N plus a few fallbacks) requests ask for. */
#define SEEN_BITS 4096u

/*
 * Position v of a node is XXH3_64bits_withSeed(id, len, v). Seeding by the
 * vnode index gives `vnodes` independent-looking 64-bit values per id
 * without formatting "id#v" strings, and depends on nothing but the id. It
 * is the same function family as key points, which is harmless: a key equal
 * to a node id simply lands exactly on that node's vnode 0 and is owned by
 * it. XXH3's output is frozen since xxHash 0.8.0, which keeps placement
 * stable across library versions (the test suite pins it).
 */
static uint64_t vnode_position(const char *id, size_t len, uint32_t vidx)
{
    return XXH3_64bits_withSeed(id, len, (XXH64_hash_t)vidx);
}

static int cmp_build_ent(const void *pa, const void *pb)
{
    const struct build_ent *a = pa;
    const struct build_ent *b = pb;

    if (a->pos != b->pos) {
        return a->pos < b->pos ? -1 : 1;
    }
    /* A 64-bit collision is astronomically rare, but when it happens every
     * node must break it the same way, so use only order-free data. */
    int c = strcmp(a->id, b->id);
    if (c != 0) {
        return c;
    }
    if (a->vidx != b->vidx) {
        return a->vidx < b->vidx ? -1 : 1;
    }
    return 0;
}

static int cmp_id_ent(const void *pa, const void *pb)
{
    const struct id_ent *a = pa;
    const struct id_ent *b = pb;

    return strcmp(a->id, b->id);
}

/* strdup() is POSIX, not C11. */
static char *copy_string(const char *s)
{
    size_t len = strlen(s) + 1;
    char *p = malloc(len);

    if (p != NULL) {
        memcpy(p, s, len);
    }
    return p;
}

void ring_free(ring_t *r)
{
    if (r == NULL) {
        return;
    }
    if (r->ids != NULL) {
        for (size_t i = 0; i < r->nnodes; i++) {
            free(r->ids[i]);
        }
    }
    free(r->ids);
    free(r->by_id);
    free(r->pos);
    free(r->owner);
    free(r);
}

/* Fills by_id and rejects duplicate ids. */
static int index_ids(ring_t *r)
{
    struct id_ent *ents = malloc(r->nnodes * sizeof(*ents));

    if (ents == NULL) {
        return RING_ENOMEM;
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        ents[i].id = r->ids[i];
        ents[i].node = (uint32_t)i;
    }
    qsort(ents, r->nnodes, sizeof(*ents), cmp_id_ent);
    for (size_t i = 0; i < r->nnodes; i++) {
        if (i > 0 && strcmp(ents[i - 1].id, ents[i].id) == 0) {
            free(ents);
            return RING_EINVAL;
        }
        r->by_id[i] = ents[i].node;
    }
    free(ents);
    return RING_OK;
}

static int place_positions(ring_t *r)
{
    struct build_ent *ents = malloc(r->npos * sizeof(*ents));
    size_t k = 0;

    if (ents == NULL) {
        return RING_ENOMEM;
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        size_t len = strlen(r->ids[i]);
        for (uint32_t v = 0; v < r->vnodes; v++) {
            ents[k].pos = vnode_position(r->ids[i], len, v);
            ents[k].id = r->ids[i];
            ents[k].node = (uint32_t)i;
            ents[k].vidx = v;
            k++;
        }
    }
    qsort(ents, r->npos, sizeof(*ents), cmp_build_ent);
    for (k = 0; k < r->npos; k++) {
        r->pos[k] = ents[k].pos;
        r->owner[k] = ents[k].node;
    }
    free(ents);
    return RING_OK;
}

int ring_build(const char *const *ids, size_t n, unsigned vnodes, ring_t **out)
{
    ring_t *r;
    int rc;

    if (out != NULL) {
        *out = NULL;
    }
    if (ids == NULL || out == NULL || n == 0 || n > UINT32_MAX || vnodes == 0 ||
        vnodes > RING_MAX_VNODES) {
        return RING_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == NULL || ids[i][0] == '\0') {
            return RING_EINVAL;
        }
    }
    /* The largest allocation is the build array; if that size fits, the
     * others (smaller per element) do too. */
    if (n > SIZE_MAX / vnodes / sizeof(struct build_ent)) {
        return RING_ENOMEM;
    }

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return RING_ENOMEM;
    }
    r->vnodes = vnodes;
    r->npos = n * vnodes;
    r->ids = calloc(n, sizeof(*r->ids));
    if (r->ids == NULL) {
        free(r);
        return RING_ENOMEM;
    }
    /* Set only now so that ring_free() frees exactly the ids slots. */
    r->nnodes = n;
    r->by_id = malloc(n * sizeof(*r->by_id));
    r->pos = malloc(r->npos * sizeof(*r->pos));
    r->owner = malloc(r->npos * sizeof(*r->owner));
    if (r->by_id == NULL || r->pos == NULL || r->owner == NULL) {
        ring_free(r);
        return RING_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        r->ids[i] = copy_string(ids[i]);
        if (r->ids[i] == NULL) {
            ring_free(r);
            return RING_ENOMEM;
        }
    }

    rc = index_ids(r);
    if (rc == RING_OK) {
        rc = place_positions(r);
    }
    if (rc != RING_OK) {
        ring_free(r);
        return rc;
    }
    *out = r;
    return RING_OK;
}

size_t ring_node_count(const ring_t *r)
{
    return r == NULL ? 0 : r->nnodes;
}

unsigned ring_vnodes(const ring_t *r)
{
    return r == NULL ? 0 : r->vnodes;
}

const char *ring_node_id(const ring_t *r, size_t idx)
{
    if (r == NULL || idx >= r->nnodes) {
        return NULL;
    }
    return r->ids[idx];
}

int ring_node_index(const ring_t *r, const char *id, size_t *idx)
{
    size_t lo = 0;
    size_t hi;

    if (r == NULL || id == NULL || idx == NULL) {
        return RING_EINVAL;
    }
    hi = r->nnodes;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->ids[r->by_id[mid]], id);
        if (c == 0) {
            *idx = r->by_id[mid];
            return RING_OK;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return RING_ENOTFOUND;
}

uint64_t ring_hash_key(const void *key, size_t klen)
{
    return XXH3_64bits(key, klen);
}

/* The index of the first position >= point, wrapping to 0 past the end. */
static size_t first_at_or_after(const ring_t *r, uint64_t point)
{
    size_t lo = 0;
    size_t hi = r->npos;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pos[mid] < point) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == r->npos ? 0 : lo;
}

static int already_listed(const size_t *out, size_t k, size_t node)
{
    for (size_t j = 0; j < k; j++) {
        if (out[j] == node) {
            return 1;
        }
    }
    return 0;
}

/* Collects up to max distinct nodes clockwise from position `start`. At
 * most npos steps: one full turn meets every node (each has a position). */
static size_t walk(const ring_t *r, size_t start, size_t *out, size_t max)
{
    size_t want = max < r->nnodes ? max : r->nnodes;
    size_t k = 0;
    size_t i = start;

    if (want == 0) {
        return 0;
    }
    if (r->nnodes <= SEEN_BITS) {
        uint64_t seen[SEEN_BITS / 64];
        memset(seen, 0, ((r->nnodes + 63) / 64) * sizeof(seen[0]));
        for (size_t step = 0; step < r->npos && k < want; step++) {
            uint32_t node = r->owner[i];
            uint64_t bit = UINT64_C(1) << (node & 63);
            if ((seen[node >> 6] & bit) == 0) {
                seen[node >> 6] |= bit;
                out[k++] = node;
            }
            if (++i == r->npos) {
                i = 0;
            }
        }
    } else {
        for (size_t step = 0; step < r->npos && k < want; step++) {
            uint32_t node = r->owner[i];
            if (!already_listed(out, k, node)) {
                out[k++] = node;
            }
            if (++i == r->npos) {
                i = 0;
            }
        }
    }
    return k;
}

size_t ring_successors_at(const ring_t *r, uint64_t point, size_t *out,
                          size_t max)
{
    if (r == NULL || out == NULL || max == 0) {
        return 0;
    }
    return walk(r, first_at_or_after(r, point), out, max);
}

size_t ring_successors(const ring_t *r, const void *key, size_t klen,
                       size_t *out, size_t max)
{
    if (r == NULL || out == NULL || max == 0 || (key == NULL && klen > 0)) {
        return 0;
    }
    return walk(r, first_at_or_after(r, ring_hash_key(key, klen)), out, max);
}

/* True when every position is the same point, so position 0 owns the whole
 * ring and the wrap arc pos[0] - pos[npos-1] (== 0) understates it. Always
 * the case for a single position; otherwise needs 64-bit collisions. */
static int all_positions_equal(const ring_t *r)
{
    return r->pos[0] == r->pos[r->npos - 1];
}

double ring_ownership(const ring_t *r, size_t idx)
{
    uint64_t sum = 0;

    if (r == NULL || idx >= r->nnodes) {
        return 0.0;
    }
    if (all_positions_equal(r)) {
        return r->owner[0] == idx ? 1.0 : 0.0;
    }
    for (size_t k = 0; k < r->npos; k++) {
        if (r->owner[k] != idx) {
            continue;
        }
        /* Unsigned wrap-around makes the k == 0 arc come out right. */
        uint64_t prev = r->pos[k == 0 ? r->npos - 1 : k - 1];
        uint64_t arc = r->pos[k] - prev;
        sum += arc;
        if (sum < arc) {
            /* The arcs of one node sum to 2^64 only if it owns everything. */
            return 1.0;
        }
    }
    /* Exact integer sum, one rounding: the shares add up to 1 within ~1e-16
     * per node. */
    return (double)sum * 0x1p-64;
}

int ring_range_contains(uint64_t start, uint64_t end, uint64_t p)
{
    /* Offsets from start, modulo 2^64: p is in (start, end] iff
     * 0 < p - start <= end - start, i.e. p - start - 1 < end - start. */
    return (uint64_t)(p - start - 1) < (uint64_t)(end - start);
}

static int walk_includes(const ring_t *r, size_t start, size_t idx, size_t *buf,
                         size_t want)
{
    size_t k = walk(r, start, buf, want);

    return already_listed(buf, k, idx);
}

/* Appends (start, end], growing the arrays when needed. */
static int push_range(uint64_t **s, uint64_t **e, size_t *cnt, size_t *cap,
                      uint64_t start, uint64_t end)
{
    if (*cnt == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        uint64_t *ns;
        uint64_t *ne;
        if (ncap > SIZE_MAX / sizeof(uint64_t)) {
            return RING_ENOMEM;
        }
        ns = realloc(*s, ncap * sizeof(uint64_t));
        if (ns == NULL) {
            return RING_ENOMEM;
        }
        *s = ns;
        ne = realloc(*e, ncap * sizeof(uint64_t));
        if (ne == NULL) {
            return RING_ENOMEM;
        }
        *e = ne;
        *cap = ncap;
    }
    (*s)[*cnt] = start;
    (*e)[*cnt] = end;
    (*cnt)++;
    return RING_OK;
}

/* The whole ring as two non-empty halves, since (x, x] would be empty. */
static size_t whole_ring(uint64_t **starts, uint64_t **ends)
{
    uint64_t *s = malloc(2 * sizeof(*s));
    uint64_t *e = malloc(2 * sizeof(*e));
    const uint64_t half = UINT64_C(1) << 63;

    if (s == NULL || e == NULL) {
        free(s);
        free(e);
        return 0;
    }
    s[0] = 0;
    e[0] = half;
    s[1] = half;
    e[1] = 0;
    *starts = s;
    *ends = e;
    return 2;
}

size_t ring_ranges_for(const ring_t *r, size_t idx, size_t n, uint64_t **starts,
                       uint64_t **ends)
{
    uint64_t *s = NULL;
    uint64_t *e = NULL;
    size_t cnt = 0;
    size_t cap = 0;
    size_t want;
    size_t *buf;
    int open = 0;

    if (starts != NULL) {
        *starts = NULL;
    }
    if (ends != NULL) {
        *ends = NULL;
    }
    if (r == NULL || idx >= r->nnodes || n == 0 || starts == NULL ||
        ends == NULL) {
        return 0;
    }
    want = n < r->nnodes ? n : r->nnodes;
    if (want == r->nnodes) {
        return whole_ring(starts, ends);
    }
    buf = malloc(want * sizeof(*buf));
    if (buf == NULL) {
        return 0;
    }
    if (all_positions_equal(r)) {
        int in = walk_includes(r, 0, idx, buf, want);
        free(buf);
        return in ? whole_ring(starts, ends) : 0;
    }

    /* Every point of one arc has the same successor list (the walk from
     * that arc's position), so test each non-empty arc once and merge runs
     * of included arcs; empty arcs (tied positions) are skipped without
     * breaking a run. */
    for (size_t k = 0; k < r->npos; k++) {
        uint64_t prev = r->pos[k == 0 ? r->npos - 1 : k - 1];
        if (k > 0 && r->pos[k] == prev) {
            continue;
        }
        if (!walk_includes(r, k, idx, buf, want)) {
            open = 0;
            continue;
        }
        if (open) {
            e[cnt - 1] = r->pos[k];
        } else if (push_range(&s, &e, &cnt, &cap, prev, r->pos[k]) != RING_OK) {
            free(buf);
            free(s);
            free(e);
            return 0;
        } else {
            open = 1;
        }
    }
    free(buf);

    if (cnt == 1 && s[0] == e[0]) {
        /* One run covering every arc: idx replicates the whole ring. */
        free(s);
        free(e);
        return whole_ring(starts, ends);
    }
    /* A run ending at the last position continues into the run that starts
     * with the wrap arc: merge them into one range crossing zero. */
    if (cnt >= 2 && open && s[0] == r->pos[r->npos - 1]) {
        s[0] = s[cnt - 1];
        cnt--;
    }
    if (cnt == 0) {
        free(s);
        free(e);
        return 0;
    }
    *starts = s;
    *ends = e;
    return cnt;
}

size_t ring_position_of(const ring_t *r, uint64_t p)
{
    return first_at_or_after(r, p);
}

size_t ring_positions(const ring_t *r)
{
    return r->npos;
}

uint64_t ring_position(const ring_t *r, size_t i)
{
    return r->pos[i];
}
