/*
 * history.c - loads a nemesis history (format in history.h) and checks it
 * against what a Dynamo-style store promises:
 *
 *  1. lost: every acknowledged put is in the final read-back (as the value
 *     or a sibling) unless a later put or delete whose context covered it
 *     superseded it. "Covered" is known exactly because every value is
 *     unique and the workload writes with the context of a read it made
 *     itself: the context covers the values that read returned. A
 *     superseding op that was acknowledged, or indeterminate but observed,
 *     settles it; one that was indeterminate and never observed (it may
 *     have applied) excuses the absence, and is counted, not hidden.
 *  2. resurrected: a value that an acknowledged put or delete superseded
 *     never appears in the read-back or in any replica's copy.
 *  3. phantom / failed-visible: every value read was written by some put,
 *     and never by one that failed definitely (an error other than
 *     KV_EQUORUM or KV_ETIMEDOUT means nothing was written, kv_put(3)).
 *  4. stale read (strict phase, R+W>N): a read that started after a put was
 *     acknowledged returns it, unless an op that covers it started before
 *     the read ended.
 *  5. divergent / not converged / readback: after healing, the Merkle roots
 *     agree, and each preference-list replica holds exactly the read-back.
 *  6. crash: no node exits unless the nemesis stopped it.
 *
 * It owns nothing outside the hist_t it builds. All sizes are bounded by
 * the file; lines that do not parse make hist_load fail with the line
 * number, so a truncated or hand-edited history is never half-checked.
 */
#include "history.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kvdist.h"

typedef struct hop {
    int client;
    int kind;
    int phase; /* 0 strict, 1 sloppy */
    int rc;
    int64_t start, end;
    char *key;
    char *value;
    char **covers;
    size_t ncovers;
    char **seen;
    size_t nseen;
    size_t line;
    /* derived */
    bool sup_certain;   /* superseded by an acked or observed op */
    bool sup_maybe;     /* ...or by an indeterminate, unobserved one */
    int64_t sup_start;  /* earliest start of any op that may supersede it */
    size_t sup_by;      /* index of one superseding op (for messages) */
    bool observed;      /* its value was seen by a read or the read-back */
    bool in_final;      /* its value is in the final read-back */
} hop_t;

typedef struct hlist {
    char *node; /* NULL for the R=N read-back */
    char *key;
    int rc;
    char **vals;
    size_t n;
    size_t line;
} hlist_t;

struct hist {
    hop_t *op;
    size_t nop, capop;
    hlist_t *fin;
    size_t nfin, capfin;
    int converged;
    int64_t converge_ms;
    size_t ncrash;
    char crash[8][64]; /* the first few, for the message */
    size_t nfk;
    char fkind[HIST_MAX_FAULT_KINDS][24];
    size_t fcount[HIST_MAX_FAULT_KINDS];
    /* value -> index of the put that wrote it (open addressing) */
    size_t *tab;
    size_t tabcap;
};

const char *hist_anomaly_name(int a)
{
    static const char *names[HIST_ANOMALIES] = {
        "lost-write",   "resurrected", "phantom-value", "failed-write-visible",
        "stale-read",   "divergent",   "not-converged", "readback-failed",
        "node-crash"};
    return a >= 0 && a < HIST_ANOMALIES ? names[a] : "unknown";
}

const char *hist_kind_name(int k)
{
    static const char *names[HIST_KINDS] = {"put", "read", "delete"};
    return k >= 0 && k < HIST_KINDS ? names[k] : "unknown";
}

int hist_outcome_of(int rc)
{
    if (rc == KV_OK) {
        return HIST_OK;
    }
    return rc == KV_EQUORUM || rc == KV_ETIMEDOUT ? HIST_INDET : HIST_FAIL;
}

/* ------------------------------------------------------------- parsing */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Splits a comma list ("-" is empty) into a new vector. */
static int split_list(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (strcmp(s, "-") == 0) {
        return 0;
    }
    size_t cap = 1;
    for (const char *p = s; *p; p++) {
        cap += *p == ',';
    }
    char **v = calloc(cap, sizeof(*v));
    if (v == NULL) {
        return -1;
    }
    size_t k = 0;
    const char *p = s;
    while (k < cap) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (v[k] = strndup(p, len)) == NULL) {
            strv_free(v, k);
            return -1;
        }
        k++;
        if (e == NULL) {
            break;
        }
        p = e + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

static int parse_op(hist_t *h, char **tok, int ntok, size_t line)
{
    if (ntok != 12) {
        return -1;
    }
    hop_t o;
    memset(&o, 0, sizeof(o));
    char *end;
    o.client = (int)strtol(tok[1], &end, 10);
    if (*end) {
        return -1;
    }
    if (strcmp(tok[2], "put") == 0) {
        o.kind = HIST_PUT;
    } else if (strcmp(tok[2], "read") == 0) {
        o.kind = HIST_READ;
    } else if (strcmp(tok[2], "delete") == 0) {
        o.kind = HIST_DELETE;
    } else {
        return -1;
    }
    if (strcmp(tok[4], "strict") == 0) {
        o.phase = 0;
    } else if (strcmp(tok[4], "sloppy") == 0) {
        o.phase = 1;
    } else {
        return -1;
    }
    o.start = strtoll(tok[5], &end, 10);
    if (*end) {
        return -1;
    }
    o.end = strtoll(tok[6], &end, 10);
    if (*end || o.end < o.start) {
        return -1;
    }
    o.rc = (int)strtol(tok[7], &end, 10);
    if (*end) {
        return -1;
    }
    if ((o.kind == HIST_PUT) == (strcmp(tok[8], "-") == 0)) {
        return -1; /* a put has a value, nothing else does */
    }
    o.line = line;
    o.sup_start = INT64_MAX;
    o.key = strdup(tok[3]);
    o.value = o.kind == HIST_PUT ? strdup(tok[8]) : NULL;
    if (o.key == NULL || (o.kind == HIST_PUT && o.value == NULL) ||
        split_list(tok[9], &o.covers, &o.ncovers) != 0 ||
        split_list(tok[10], &o.seen, &o.nseen) != 0) {
        free(o.key);
        free(o.value);
        strv_free(o.covers, o.ncovers);
        return -1;
    }
    if (h->nop == h->capop) {
        size_t cap = h->capop ? 2 * h->capop : 1024;
        hop_t *p = realloc(h->op, cap * sizeof(*p));
        if (p == NULL) {
            return -1;
        }
        h->op = p;
        h->capop = cap;
    }
    h->op[h->nop++] = o;
    return 0;
}

static int parse_list(hist_t *h, char **tok, int ntok, size_t line)
{
    bool local = strcmp(tok[0], "local") == 0;
    if (ntok != (local ? 5 : 4)) {
        return -1;
    }
    hlist_t f;
    memset(&f, 0, sizeof(f));
    int k = 1;
    char *end;
    f.line = line;
    f.node = local ? strdup(tok[k++]) : NULL;
    f.key = strdup(tok[k++]);
    f.rc = (int)strtol(tok[k++], &end, 10);
    if (*end || f.key == NULL || (local && f.node == NULL) ||
        split_list(tok[k], &f.vals, &f.n) != 0) {
        free(f.node);
        free(f.key);
        return -1;
    }
    if (h->nfin == h->capfin) {
        size_t cap = h->capfin ? 2 * h->capfin : 256;
        hlist_t *p = realloc(h->fin, cap * sizeof(*p));
        if (p == NULL) {
            return -1;
        }
        h->fin = p;
        h->capfin = cap;
    }
    h->fin[h->nfin++] = f;
    return 0;
}

static int parse_fault(hist_t *h, char **tok, int ntok)
{
    if (ntok < 4) {
        return -1;
    }
    size_t i;
    for (i = 0; i < h->nfk; i++) {
        if (strcmp(h->fkind[i], tok[1]) == 0) {
            break;
        }
    }
    if (i == h->nfk) {
        if (h->nfk == HIST_MAX_FAULT_KINDS ||
            strlen(tok[1]) >= sizeof(h->fkind[0])) {
            return -1;
        }
        strcpy(h->fkind[h->nfk++], tok[1]);
    }
    h->fcount[i]++;
    return 0;
}

hist_t *hist_load(const char *path, char *err, size_t errsize)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        return NULL;
    }
    hist_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        fclose(f);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    h->converged = -1;
    char *line = NULL;
    size_t cap = 0;
    size_t lineno = 0;
    ssize_t len;
    int bad = 0;
    while (!bad && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n') {
            line[--len] = '\0';
        }
        if (len == 0 || line[0] == '#') {
            continue;
        }
        char *tok[16];
        int ntok = 0;
        char *save = NULL;
        for (char *t = strtok_r(line, " ", &save); t != NULL;
             t = strtok_r(NULL, " ", &save)) {
            if (ntok == 16) {
                bad = 1;
                break;
            }
            tok[ntok++] = t;
        }
        if (bad || ntok == 0) {
            bad = 1;
        } else if (strcmp(tok[0], "op") == 0) {
            bad = parse_op(h, tok, ntok, lineno) != 0;
        } else if (strcmp(tok[0], "final") == 0 ||
                   strcmp(tok[0], "local") == 0) {
            bad = parse_list(h, tok, ntok, lineno) != 0;
        } else if (strcmp(tok[0], "fault") == 0) {
            bad = parse_fault(h, tok, ntok) != 0;
        } else if (strcmp(tok[0], "crash") == 0 && ntok == 3) {
            if (h->ncrash < 8) {
                snprintf(h->crash[h->ncrash], sizeof(h->crash[0]), "%.20s %.30s",
                         tok[1], tok[2]);
            }
            h->ncrash++;
        } else if (strcmp(tok[0], "converge") == 0 && ntok == 3) {
            h->converge_ms = strtoll(tok[1], NULL, 10);
            h->converged = atoi(tok[2]) != 0;
        } else {
            bad = 1;
        }
    }
    free(line);
    fclose(f);
    if (bad) {
        snprintf(err, errsize, "%s:%zu: malformed record", path, lineno);
        hist_free(h);
        return NULL;
    }
    return h;
}

void hist_free(hist_t *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->nop; i++) {
        free(h->op[i].key);
        free(h->op[i].value);
        strv_free(h->op[i].covers, h->op[i].ncovers);
        strv_free(h->op[i].seen, h->op[i].nseen);
    }
    for (size_t i = 0; i < h->nfin; i++) {
        free(h->fin[i].node);
        free(h->fin[i].key);
        strv_free(h->fin[i].vals, h->fin[i].n);
    }
    free(h->op);
    free(h->fin);
    free(h->tab);
    free(h);
}

/* ------------------------------------------------------------ indexing */

static uint64_t str_hash(const char *s)
{
    uint64_t x = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        x = (x ^ (uint8_t)*s) * 1099511628211ULL;
    }
    return x;
}

#define NONE ((size_t)-1)

static int index_writes(hist_t *h)
{
    size_t cap = 16;
    while (cap < 2 * h->nop + 16) {
        cap *= 2;
    }
    h->tab = malloc(cap * sizeof(*h->tab));
    if (h->tab == NULL) {
        return -1;
    }
    h->tabcap = cap;
    for (size_t i = 0; i < cap; i++) {
        h->tab[i] = NONE;
    }
    for (size_t i = 0; i < h->nop; i++) {
        if (h->op[i].kind != HIST_PUT) {
            continue;
        }
        size_t s = str_hash(h->op[i].value) & (cap - 1);
        while (h->tab[s] != NONE) {
            s = (s + 1) & (cap - 1);
        }
        h->tab[s] = i;
    }
    return 0;
}

/* The put that wrote value v to key, or NONE. */
static size_t writer_of(const hist_t *h, const char *key, const char *v)
{
    size_t s = str_hash(v) & (h->tabcap - 1);
    while (h->tab[s] != NONE) {
        const hop_t *o = &h->op[h->tab[s]];
        if (strcmp(o->value, v) == 0 && strcmp(o->key, key) == 0) {
            return h->tab[s];
        }
        s = (s + 1) & (h->tabcap - 1);
    }
    return NONE;
}

/* ------------------------------------------------------------ checking */

typedef struct ctx {
    hist_t *h;
    FILE *out;
    size_t max_print;
    hist_report_t *rep;
} ctx_t;

static void print_op(const ctx_t *c, const char *role, size_t i)
{
    const hop_t *o = &c->h->op[i];
    fprintf(c->out,
            "    %-10s line %zu: client %d %s %s%s%s [%s] %lld..%lld us "
            "rc %d (%s)%s",
            role, o->line, o->client, hist_kind_name(o->kind), o->key,
            o->value ? " = " : "", o->value ? o->value : "",
            o->phase ? "sloppy" : "strict", (long long)o->start,
            (long long)o->end, o->rc, kv_strerror(o->rc),
            o->ncovers ? " covering" : "");
    for (size_t k = 0; k < o->ncovers; k++) {
        fprintf(c->out, "%s%s", k ? "," : " ", o->covers[k]);
    }
    if (o->kind == HIST_READ && o->rc == 0) {
        fprintf(c->out, " saw");
        for (size_t k = 0; k < o->nseen; k++) {
            fprintf(c->out, "%s%s", k ? "," : " ", o->seen[k]);
        }
        if (o->nseen == 0) {
            fprintf(c->out, " nothing");
        }
    }
    fputc('\n', c->out);
}

/* Records one anomaly; prints it with up to two ops involved. */
static void anomaly(ctx_t *c, int kind, const char *what, size_t a, size_t b)
{
    c->rep->anomalies[kind]++;
    c->rep->total_anomalies++;
    if (c->out == NULL || c->rep->total_anomalies > c->max_print) {
        return;
    }
    fprintf(c->out, "ANOMALY %s: %s\n", hist_anomaly_name(kind), what);
    if (a != NONE) {
        print_op(c, "operation", a);
    }
    if (b != NONE) {
        print_op(c, "involving", b);
    }
}

/* Marks what each put/delete supersedes, and what was observed. */
static void derive(ctx_t *c)
{
    hist_t *h = c->h;
    for (size_t i = 0; i < h->nop; i++) {
        hop_t *o = &h->op[i];
        if (o->kind == HIST_READ && o->rc == 0) {
            for (size_t k = 0; k < o->nseen; k++) {
                size_t w = writer_of(h, o->key, o->seen[k]);
                if (w != NONE) {
                    h->op[w].observed = true;
                }
            }
        }
    }
    for (size_t i = 0; i < h->nfin; i++) {
        for (size_t k = 0; k < h->fin[i].n; k++) {
            size_t w = writer_of(h, h->fin[i].key, h->fin[i].vals[k]);
            if (w != NONE) {
                h->op[w].observed = true;
                h->op[w].in_final |= h->fin[i].node == NULL;
            }
        }
    }
    for (size_t i = 0; i < h->nop; i++) {
        hop_t *s = &h->op[i];
        int oc = hist_outcome_of(s->rc);
        if (s->kind == HIST_READ || oc == HIST_FAIL) {
            continue;
        }
        bool certain = oc == HIST_OK || (s->kind == HIST_PUT && s->observed);
        for (size_t k = 0; k < s->ncovers; k++) {
            size_t w = writer_of(h, s->key, s->covers[k]);
            if (w == NONE) {
                continue; /* a phantom read: reported by the read */
            }
            hop_t *t = &h->op[w];
            if (certain) {
                t->sup_certain = true;
                t->sup_by = i;
            } else if (!t->sup_certain) {
                t->sup_maybe = true;
                t->sup_by = i;
            }
            if (s->start < t->sup_start) {
                t->sup_start = s->start;
            }
        }
    }
}

static void check_values(ctx_t *c, const char *key, char **vals, size_t n,
                         size_t reader, const char *where)
{
    for (size_t k = 0; k < n; k++) {
        size_t w = writer_of(c->h, key, vals[k]);
        char what[512];
        if (w == NONE) {
            snprintf(what, sizeof(what), "%s returned %s for %s, never written",
                     where, vals[k], key);
            anomaly(c, HIST_A_PHANTOM, what, reader, NONE);
        } else if (hist_outcome_of(c->h->op[w].rc) == HIST_FAIL) {
            snprintf(what, sizeof(what),
                     "%s returned %s, whose put failed definitely", where,
                     vals[k]);
            anomaly(c, HIST_A_FAILED_VISIBLE, what, w, reader);
        }
    }
}

static bool has_value(char **vals, size_t n, const char *v)
{
    for (size_t k = 0; k < n; k++) {
        if (strcmp(vals[k], v) == 0) {
            return true;
        }
    }
    return false;
}

static const hlist_t *final_of(const hist_t *h, const char *key)
{
    for (size_t i = 0; i < h->nfin; i++) {
        if (h->fin[i].node == NULL && strcmp(h->fin[i].key, key) == 0) {
            return &h->fin[i];
        }
    }
    return NULL;
}

static int cmp_start(const void *a, const void *b, void *arg)
{
    const hist_t *h = arg;
    const hop_t *x = &h->op[*(const size_t *)a];
    const hop_t *y = &h->op[*(const size_t *)b];
    int k = strcmp(x->key, y->key);
    if (k != 0) {
        return k;
    }
    return x->start < y->start ? -1 : x->start > y->start;
}

static int cmp_end(const void *a, const void *b, void *arg)
{
    const hist_t *h = arg;
    const hop_t *x = &h->op[*(const size_t *)a];
    const hop_t *y = &h->op[*(const size_t *)b];
    int k = strcmp(x->key, y->key);
    if (k != 0) {
        return k;
    }
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Rule 4, per key: reads sorted by start, acked strict puts by ack time;
 * `req` holds the puts acked before the current read began and not yet
 * covered by an op that started before it (so it stays as small as the
 * key's sibling count). */
static void check_stale_reads(ctx_t *c)
{
    hist_t *h = c->h;
    size_t nr = 0, nw = 0;
    size_t *rd = malloc((h->nop + 1) * sizeof(*rd));
    size_t *wr = malloc((h->nop + 1) * sizeof(*wr));
    size_t *req = malloc((h->nop + 1) * sizeof(*req));
    if (rd == NULL || wr == NULL || req == NULL) {
        free(rd);
        free(wr);
        free(req);
        return;
    }
    for (size_t i = 0; i < h->nop; i++) {
        const hop_t *o = &h->op[i];
        if (o->phase != 0 || o->rc != 0) {
            continue;
        }
        if (o->kind == HIST_READ) {
            rd[nr++] = i;
        } else if (o->kind == HIST_PUT) {
            wr[nw++] = i;
        }
    }
    qsort_r(rd, nr, sizeof(*rd), cmp_start, h);
    qsort_r(wr, nw, sizeof(*wr), cmp_end, h);
    size_t wi = 0, nreq = 0;
    const char *curkey = NULL;
    for (size_t ri = 0; ri < nr; ri++) {
        const hop_t *r = &h->op[rd[ri]];
        if (curkey == NULL || strcmp(curkey, r->key) != 0) {
            curkey = r->key;
            nreq = 0;
            while (wi < nw && strcmp(h->op[wr[wi]].key, curkey) < 0) {
                wi++;
            }
        }
        while (wi < nw && strcmp(h->op[wr[wi]].key, curkey) == 0 &&
               h->op[wr[wi]].end < r->start) {
            req[nreq++] = wr[wi++];
        }
        size_t keep = 0;
        for (size_t k = 0; k < nreq; k++) {
            if (h->op[req[k]].sup_start >= r->start) {
                req[keep++] = req[k];
            }
        }
        nreq = keep;
        c->rep->reads_checked++;
        for (size_t k = 0; k < nreq; k++) {
            const hop_t *w = &h->op[req[k]];
            if (has_value(r->seen, r->nseen, w->value) ||
                w->sup_start < r->end) {
                continue;
            }
            char what[512];
            snprintf(what, sizeof(what),
                     "read of %s began after %s was acknowledged and "
                     "did not return it (nothing superseded it)",
                     r->key, w->value);
            anomaly(c, HIST_A_STALE_READ, what, rd[ri], req[k]);
        }
    }
    free(rd);
    free(wr);
    free(req);
}

size_t hist_check(hist_t *h, FILE *out, size_t max_print, hist_report_t *rep)
{
    memset(rep, 0, sizeof(*rep));
    rep->converged = h->converged;
    rep->converge_ms = h->converge_ms;
    rep->nfault_kinds = h->nfk;
    memcpy(rep->fault_kind, h->fkind, sizeof(h->fkind));
    memcpy(rep->fault_count, h->fcount, sizeof(h->fcount));
    ctx_t c = {h, out, max_print, rep};
    rep->ops = h->nop;
    for (size_t i = 0; i < h->nop; i++) {
        rep->by_outcome[h->op[i].kind][hist_outcome_of(h->op[i].rc)]++;
    }
    if (index_writes(h) != 0) {
        anomaly(&c, HIST_A_READBACK, "out of memory indexing the history",
                NONE, NONE);
        return rep->total_anomalies;
    }
    derive(&c);

    /* 3: every value anyone read was written, by a put that may apply. */
    for (size_t i = 0; i < h->nop; i++) {
        if (h->op[i].kind == HIST_READ && h->op[i].rc == 0) {
            check_values(&c, h->op[i].key, h->op[i].seen, h->op[i].nseen, i,
                         "a read");
        }
    }
    for (size_t i = 0; i < h->nfin; i++) {
        const hlist_t *f = &h->fin[i];
        char where[128];
        snprintf(where, sizeof(where), "%s%s (line %zu)",
                 f->node ? "the local copy of " : "the read-back",
                 f->node ? f->node : "", f->line);
        if (f->rc != 0) {
            char what[256];
            snprintf(what, sizeof(what), "%s of %s failed: %s", where, f->key,
                     kv_strerror(f->rc));
            anomaly(&c, HIST_A_READBACK, what, NONE, NONE);
            continue;
        }
        check_values(&c, f->key, f->vals, f->n, NONE, where);
    }

    /* 1: acknowledged puts survive unless superseded. */
    for (size_t i = 0; i < h->nop; i++) {
        const hop_t *o = &h->op[i];
        if (o->kind != HIST_PUT || o->rc != 0) {
            continue;
        }
        const hlist_t *f = final_of(h, o->key);
        if (f == NULL || f->rc != 0) {
            continue; /* no read-back of this key: reported above or absent */
        }
        rep->writes_checked++;
        if (o->in_final || o->sup_certain) {
            continue;
        }
        if (o->sup_maybe) {
            rep->excused++;
            continue;
        }
        char what[256];
        snprintf(what, sizeof(what),
                 "acknowledged %s = %s is not in the read-back and nothing "
                 "superseded it",
                 o->key, o->value);
        anomaly(&c, HIST_A_LOST, what, i, NONE);
    }

    /* 2: what an acknowledged put/delete superseded stays gone. */
    for (size_t i = 0; i < h->nop; i++) {
        const hop_t *s = &h->op[i];
        if (s->kind == HIST_READ || s->rc != 0) {
            continue;
        }
        rep->deletes_checked += s->kind == HIST_DELETE;
        for (size_t k = 0; k < s->ncovers; k++) {
            size_t w = writer_of(h, s->key, s->covers[k]);
            if (w == NONE) {
                continue;
            }
            bool back = h->op[w].in_final;
            for (size_t f = 0; !back && f < h->nfin; f++) {
                back = h->fin[f].node != NULL && h->fin[f].rc == 0 &&
                       strcmp(h->fin[f].key, s->key) == 0 &&
                       has_value(h->fin[f].vals, h->fin[f].n, s->covers[k]);
            }
            if (back) {
                char what[256];
                snprintf(what, sizeof(what),
                         "%s = %s came back after an acknowledged %s "
                         "superseded it",
                         s->key, s->covers[k], hist_kind_name(s->kind));
                anomaly(&c, HIST_A_RESURRECTED, what, i, w);
            }
        }
    }

    /* 4: strict quorums give read-your-acknowledged-writes. */
    check_stale_reads(&c);

    /* 6: nodes only stop when the nemesis stops them. */
    for (size_t i = 0; i < h->ncrash; i++) {
        char what[128];
        snprintf(what, sizeof(what), "node %s died on its own",
                 i < 8 ? h->crash[i]
                       : "(one more: see the history's crash lines)");
        anomaly(&c, HIST_A_CRASH, what, NONE, NONE);
    }

    /* 5: replicas agree with each other and with the read-back. */
    if (h->converged == 0) {
        char what[128];
        snprintf(what, sizeof(what),
                 "Merkle roots still differed %lld ms after healing",
                 (long long)h->converge_ms);
        anomaly(&c, HIST_A_NOT_CONVERGED, what, NONE, NONE);
    }
    for (size_t i = 0; i < h->nfin; i++) {
        const hlist_t *l = &h->fin[i];
        if (l->node == NULL || l->rc != 0) {
            continue;
        }
        const hlist_t *f = final_of(h, l->key);
        if (f == NULL || f->rc != 0) {
            continue;
        }
        bool same = f->n == l->n;
        for (size_t k = 0; same && k < l->n; k++) {
            same = has_value(f->vals, f->n, l->vals[k]);
        }
        if (!same) {
            char what[256];
            snprintf(what, sizeof(what),
                     "%s holds %zu live values of %s, the read-back %zu "
                     "(lines %zu, %zu)",
                     l->node, l->n, l->key, f->n, l->line, f->line);
            anomaly(&c, HIST_A_DIVERGENT, what, NONE, NONE);
        }
    }
    return rep->total_anomalies;
}

void hist_print_report(const hist_report_t *rep, FILE *out)
{
    static const char *oc[HIST_OUTCOMES] = {"ok", "indeterminate", "failed"};
    fprintf(out, "operations: %zu\n", rep->ops);
    for (int k = 0; k < HIST_KINDS; k++) {
        fprintf(out, "  %-7s", hist_kind_name(k));
        for (int o = 0; o < HIST_OUTCOMES; o++) {
            fprintf(out, " %s %zu", oc[o], rep->by_outcome[k][o]);
        }
        fputc('\n', out);
    }
    fprintf(out, "faults:");
    for (size_t i = 0; i < rep->nfault_kinds; i++) {
        fprintf(out, " %s %zu", rep->fault_kind[i], rep->fault_count[i]);
    }
    fprintf(out, "%s\n", rep->nfault_kinds ? "" : " none");
    fprintf(out,
            "checked: %zu acknowledged puts, %zu acknowledged deletes, "
            "%zu strict reads; %zu absent puts excused by an indeterminate "
            "superseding op\n",
            rep->writes_checked, rep->deletes_checked, rep->reads_checked,
            rep->excused);
    if (rep->converged < 0) {
        fprintf(out, "convergence: not measured\n");
    } else {
        fprintf(out, "convergence: %s in %lld ms\n",
                rep->converged ? "equal Merkle roots" : "NOT converged",
                (long long)rep->converge_ms);
    }
    fprintf(out, "anomalies: %zu", rep->total_anomalies);
    for (int a = 0; a < HIST_ANOMALIES; a++) {
        if (rep->anomalies[a] != 0) {
            fprintf(out, " %s %zu", hist_anomaly_name(a), rep->anomalies[a]);
        }
    }
    fputc('\n', out);
}
