/*
 * cluster.c - membership: the member table, gossip, failure detection and
 * the ring.
 *
 * Owns the member table (sorted by node id), the ring built from it and the
 * background thread that gossips. Invariants: the ring always matches the
 * table (rebuilt under the write lock on every change of membership); the
 * table's ids and URLs are persisted in the meta column family on every
 * such change, so a restarted node knows the cluster without its seeds; a
 * member's rpc_peer_t, once created, lives until the node closes, so routes
 * may hold peer pointers without a lock.
 *
 * Gossip (Cassandra-style): each member has an incarnation (new at every
 * start, persisted so it only grows) and a heartbeat counter that its owner
 * increments every gossip_interval_ms. Every interval a node sends its whole
 * table to one random peer, which merges it and answers with its own; a row
 * wins if its (incarnation, heartbeat) is greater. A change therefore
 * reaches every node in O(log n) rounds. A node that knows no member yet
 * gossips with its seeds until one answers. Clients (role=client) are not
 * members: they ask a member for the list (MEMBERS) and take its view.
 *
 * Failure detection: each observed heartbeat increase is an arrival for
 * that member's phi-accrual detector (detector.c); a member is marked down
 * when phi exceeds phi_convict, and up again at its next arrival. The
 * verdict is local ("as this node sees it") and never gossiped, and a node
 * never marks itself down. A member that shuts down cleanly says so first
 * (cluster_announce_stop, WIRE_SHUTDOWN): the others mark it down at once
 * and their transports leave it alone while it closes.
 *
 * Admission (issue 15): gossip arrives from anyone who can reach the
 * port, so a relayed row may only spread what its member already said:
 * a heartbeat or a new incarnation of a member known at that URL. A row
 * for an unknown member, or one that puts a known member at another URL,
 * enters the table only once that member answered as itself at that URL
 * (a probe: WIRE_PING on a connection of its own, rpc_probe, whose answer
 * carries the member's own row), and a move only while the old address
 * no longer answers as it. A member's own row in the answer to our
 * exchange with it (direct) is authoritative, also against a relayed
 * row that claimed more. Rows whose incarnation is ahead of this node's
 * clock by more than CLUSTER_INC_AHEAD_S, or whose heartbeat is more
 * than that incarnation's age allows, are forged and refused, and the
 * table holds at most max_members rows. Probes run on a thread of their
 * own (prober), a bounded queue of them, so forged rows cost at most a
 * probe each and never a transport peer, a ring rebuild or a saved row.
 *
 * Locks: `lock` protects members, nmembers, ring, every member field,
 * `changes` and the ring-change listener (on_ring, on_ring_arg); save_mu
 * lets one save of the table run at a time and protects `saved`; join_mu
 * protects joined; probe_mu protects probes, nprobes, failed, nfailed
 * and refused_log (taken after `lock`, never before it). The gossip
 * thread is a ticker (ticker.h); it also saves
 * the member table when it changed, so the store is never written under
 * `lock` or on the thread that received the gossip.
 */
#include "cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <xxhash.h>

#include "clock.h"
#include "detector.h"
#include "kvlimits.h"
#include "options.h"
#include "rand.h"
#include "ring.h"
#include "store.h"
#include "ticker.h"
#include "wire.h"

#define CLUSTER_META_KEY "members"
#define CLUSTER_META_INCARNATION "incarnation"

/* The saved member list is a sealed blob (codec.h) with this prefix. */
static const uint8_t cluster_meta_prefix[3] = {'K', 'M', 1};

/* Incarnations are the wall clock in seconds at a node's start
 * (cluster_new_incarnation). A row's may be ahead of this node's clock by
 * twice this (clock skew, and a node that moved past a forged incarnation
 * of itself by one, see cluster_merge_row); this node moves past a
 * greater incarnation of itself only up to this far ahead. An
 * incarnation of 2^64-1 made a member's next one wrap to 0. */
#define CLUSTER_INC_AHEAD_S (24 * 3600)
/* A heartbeat counts gossip rounds, 10 ms apart at the fastest
 * (gossip_interval_ms), plus the early rounds a kick starts. */
#define CLUSTER_HB_PER_S 100
#define CLUSTER_HB_SLACK 10000
/* Rows waiting for their owner's answer; more are dropped (gossip brings
 * a real one again). */
#define CLUSTER_PROBES 8
/* (id, URL) pairs that did not answer, not probed again for a while. */
#define CLUSTER_FAILED 32
#define CLUSTER_RETRY_MS 2000
/* One probe's bound: a dead address costs the prober at most this. */
#define CLUSTER_PROBE_MS 500
/* One log line per reason per this many ms; the counters count all. */
#define CLUSTER_REFUSE_LOG_MS 10000

/* Why a row did not enter the table; row_refusals says it in words. */
typedef enum {
    REFUSE_NONE,
    REFUSE_MALFORMED,   /* id or URL not one options would accept */
    REFUSE_INCARNATION, /* ahead of this node's clock */
    REFUSE_HEARTBEAT,   /* more rounds than its incarnation's age allows */
    REFUSE_FULL,        /* max_members */
    REFUSE_UNANSWERED,  /* nobody answered as that member at that URL */
    REFUSE_MOVE,        /* the member still answers at its known URL */
    REFUSE__COUNT
} refuse_t;

static const struct {
    enum metric_id metric;
    const char *why;
} row_refusals[REFUSE__COUNT] = {
    [REFUSE_MALFORMED] = {M_GOSSIP_REFUSED, "not a valid node id and URL"},
    [REFUSE_INCARNATION] = {M_GOSSIP_REFUSED,
                            "incarnation ahead of this node's clock"},
    [REFUSE_HEARTBEAT] = {M_GOSSIP_REFUSED,
                          "heartbeat beyond what its incarnation's age "
                          "allows"},
    [REFUSE_FULL] = {M_MEMBERS_REFUSED,
                     "the member table is full (max_members)"},
    [REFUSE_UNANSWERED] = {M_MEMBERS_REFUSED,
                           "no node answered as that member at that URL"},
    [REFUSE_MOVE] = {M_MEMBERS_REFUSED,
                     "the member still answers at its known URL, or not "
                     "with a newer incarnation at the new one"},
};

/* A row that waits for its member's answer at its URL. */
typedef struct probe {
    char id[KV_ID_MAX + 1];
    char url[KV_URL_MAX + 1];
} probe_t;

/* An (id, URL) that did not answer, and when. */
typedef struct probe_failed {
    uint64_t hash;
    int64_t at_ms;
} probe_failed_t;

typedef struct member {
    char id[KV_ID_MAX + 1];
    char url[KV_URL_MAX + 1];
    rpc_peer_t *peer; /* NULL for this node */
    bool self;
    uint64_t incarnation;
    uint64_t heartbeat;
    detector_t fd;
    bool up;
} member_t;

struct cluster {
    pthread_rwlock_t lock;
    member_t *members;
    size_t nmembers;
    ring_t *ring;
    uint64_t changes; /* table versions, under lock */
    pthread_mutex_t save_mu; /* one save at a time; protects saved */
    uint64_t saved;          /* the version last written to the store */
    cluster_ring_fn on_ring; /* told of every rebuild (anti-entropy) */
    void *on_ring_arg;

    ticker_t ticker; /* one gossip round every gossip_interval_ms */
    uint64_t rng;    /* the ticker's thread only (seeded before it starts) */
    pthread_mutex_t join_mu; /* protects joined */
    pthread_cond_t join_cv;  /* a client's bounded wait for joined */
    bool joined;             /* a seed or member answered */

    ticker_t prober; /* asks rows' members to answer (admission) */
    pthread_mutex_t probe_mu;
    probe_t probes[CLUSTER_PROBES];
    size_t nprobes;
    probe_failed_t failed[CLUSTER_FAILED];
    size_t nfailed; /* next slot of failed[] to overwrite */
    int64_t refused_log[REFUSE__COUNT]; /* last log line per reason */
};

/* ----------------------------------------------------------- internals */

/* Rebuilds the ring from the table. Caller holds the write lock. */
static int cluster_rebuild(kv_t *kv, struct cluster *c)
{
    const char **ids = malloc((c->nmembers ? c->nmembers : 1) * sizeof(*ids));
    if (ids == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < c->nmembers; i++) {
        ids[i] = c->members[i].id;
    }
    ring_t *r = NULL;
    int rc = c->nmembers ? ring_build(ids, c->nmembers, kv->cfg.vnodes, &r) : 0;
    free(ids);
    if (rc != 0) {
        return rc == RING_ENOMEM ? KV_ENOMEM : KV_EINTERNAL;
    }
    ring_free(c->ring);
    c->ring = r;
    if (c->on_ring != NULL) {
        c->on_ring(c->on_ring_arg);
    }
    return 0;
}

/* Persists ids and URLs: 'K' 'M' version, member list, checksum. Caller
 * holds the lock. */
/* The member table changed and must be saved; caller holds the write
 * lock. The store is never written under the lock (every cluster_route
 * would wait for the disk): cluster_save does it, from the ticker. */
static void cluster_persist(kv_t *kv, struct cluster *c)
{
    (void)kv;
    c->changes++;
}

/* Saves the member table if it changed since the last save: encoded under
 * the read lock, written outside it, one save at a time (save_mu), never
 * an older table over a newer one. */
static void cluster_save(kv_t *kv, struct cluster *c)
{
    if (kv->store == NULL) {
        return;
    }
    pthread_mutex_lock(&c->save_mu);
    pthread_rwlock_rdlock(&c->lock);
    uint64_t gen = c->changes;
    if (gen == c->saved) {
        pthread_rwlock_unlock(&c->lock);
        pthread_mutex_unlock(&c->save_mu);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_put(&b, cluster_meta_prefix, sizeof(cluster_meta_prefix));
    buf_put_varint(&b, c->nmembers);
    for (size_t i = 0; i < c->nmembers; i++) {
        wire_put_member(&b, c->members[i].id, c->members[i].url, 0);
    }
    pthread_rwlock_unlock(&c->lock);
    buf_seal(&b, 0);
    if (b.oom || store_put(kv->store, STORE_CF_META, CLUSTER_META_KEY,
                           strlen(CLUSTER_META_KEY), b.p, b.len) != 0) {
        KV_LOG(&kv->log, KV_LOG_WARN, "cluster: could not save members");
    } else {
        c->saved = gen;
    }
    buf_free(&b);
    pthread_mutex_unlock(&c->save_mu);
}

static member_t *cluster_find(struct cluster *c, const char *id, size_t *at)
{
    size_t i = 0;
    while (i < c->nmembers && strcmp(c->members[i].id, id) < 0) {
        i++;
    }
    if (at != NULL) {
        *at = i;
    }
    return (i < c->nmembers && strcmp(c->members[i].id, id) == 0)
               ? &c->members[i]
               : NULL;
}

/* Counts a refused row and says why, once per reason per
 * CLUSTER_REFUSE_LOG_MS (a flood of forged rows must not flood the log).
 * May be called under `lock`. */
static void cluster_refuse(kv_t *kv, refuse_t why, const char *id,
                           const char *url)
{
    struct cluster *c = kv->cluster;
    metric_inc(&kv->metrics, row_refusals[why].metric);
    int64_t now = clk_mono_ms();
    pthread_mutex_lock(&c->probe_mu);
    bool say = c->refused_log[why] == 0 ||
               now - c->refused_log[why] >= CLUSTER_REFUSE_LOG_MS;
    if (say) {
        c->refused_log[why] = now;
    }
    pthread_mutex_unlock(&c->probe_mu);
    if (say) {
        KV_LOG(&kv->log, KV_LOG_WARN,
               "cluster: refused a row for member '%.64s' at '%.200s': %s "
               "(counted in %s; further refusals for this reason are not "
               "logged for %d s)",
               id, url, row_refusals[why].why,
               row_refusals[why].metric == M_GOSSIP_REFUSED
                   ? "kvdist_gossip_rows_refused_total"
                   : "kvdist_members_refused_total",
               CLUSTER_REFUSE_LOG_MS / 1000);
    }
}

/* What a row may claim, whoever sent it: REFUSE_NONE or the reason. */
static refuse_t cluster_row_check(const char *id, const char *url,
                                  uint64_t inc, uint64_t hb, bool self)
{
    if (!options_valid_node_id(id) || (!self && !options_valid_url(url))) {
        return REFUSE_MALFORMED;
    }
    uint64_t now = (uint64_t)time(NULL);
    uint64_t ceiling = now + 2 * CLUSTER_INC_AHEAD_S;
    if (inc > ceiling) {
        return REFUSE_INCARNATION;
    }
    /* A row without gossip state (0, 0) is a member list's. */
    if (hb > (ceiling - inc) * CLUSTER_HB_PER_S + CLUSTER_HB_SLACK) {
        return REFUSE_HEARTBEAT;
    }
    return REFUSE_NONE;
}

/*
 * Adds a member or merges what we heard about it. Returns true if the
 * member is new. A direct row (the member's own, in its answer to us)
 * replaces what we know of it, even a greater (incarnation, heartbeat)
 * that a relayed row claimed; any other wins only if greater. Only a
 * direct row moves a member to another URL (peer is its transport peer
 * there). Caller holds the write lock; peer was created outside it
 * (rpc_peer takes the transport's lock).
 */
static bool cluster_merge_row(kv_t *kv, struct cluster *c, const char *id,
                              const char *url, rpc_peer_t *peer, uint64_t inc,
                              uint64_t hb, bool direct, int64_t now)
{
    size_t at = 0;
    member_t *m = cluster_find(c, id, &at);
    if (m != NULL) {
        if (m->self) {
            /* Someone remembers a newer incarnation of us (our clock went
             * back): move past it, or our heartbeats would be ignored;
             * not past what the others accept (a forged one). */
            uint64_t limit = (uint64_t)time(NULL) + CLUSTER_INC_AHEAD_S;
            if (inc > m->incarnation && inc < limit) {
                m->incarnation = inc + 1;
                m->heartbeat = 0;
            }
            return false;
        }
        bool newer = direct ? inc != m->incarnation || hb != m->heartbeat
                            : inc > m->incarnation ||
                                  (inc == m->incarnation && hb > m->heartbeat);
        if (!newer) {
            return false;
        }
        if (inc != m->incarnation) {
            detector_init(&m->fd, now, kv->cfg.gossip_interval_ms);
        } else {
            detector_heartbeat(&m->fd, now);
        }
        /* Alive: the transport stops suspecting it while it redials. */
        rpc_peer_heard(m->peer);
        m->incarnation = inc;
        m->heartbeat = hb;
        if (direct && peer != NULL && strcmp(m->url, url) != 0) {
            KV_LOG(&kv->log, KV_LOG_NOTICE,
                   "cluster: member %s moved from %s to %s", id, m->url,
                   url);
            snprintf(m->url, sizeof(m->url), "%s", url);
            m->peer = peer;
            cluster_persist(kv, c);
        }
        if (!m->up) {
            m->up = true;
            KV_LOG(&kv->log, KV_LOG_NOTICE, "cluster: member %s is up", id);
        }
        return false;
    }
    if (c->nmembers >= (size_t)kv->cfg.max_members) {
        cluster_refuse(kv, REFUSE_FULL, id, url);
        return false;
    }
    member_t *arr = realloc(c->members, (c->nmembers + 1) * sizeof(*arr));
    if (arr == NULL) {
        return false;
    }
    c->members = arr;
    memmove(&arr[at + 1], &arr[at], (c->nmembers - at) * sizeof(*arr));
    member_t *n = &arr[at];
    memset(n, 0, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->url, sizeof(n->url), "%s", url);
    n->peer = peer;
    n->self = peer == NULL;
    n->incarnation = inc;
    n->heartbeat = hb;
    n->up = true;
    detector_init(&n->fd, now, kv->cfg.gossip_interval_ms);
    c->nmembers++;
    if (cluster_rebuild(kv, c) != 0) {
        memmove(&arr[at], &arr[at + 1], (c->nmembers - at - 1) * sizeof(*arr));
        c->nmembers--;
        return false;
    }
    cluster_persist(kv, c);
    KV_LOG(&kv->log, KV_LOG_NOTICE, "cluster: member %s at %s", id, url);
    return true;
}

static uint64_t probe_hash(const char *id, const char *url)
{
    return XXH3_64bits_withSeed(url, strlen(url),
                                XXH3_64bits(id, strlen(id)));
}

/* Queues a row for the prober, unless it is queued already, did not
 * answer a moment ago, or the queue is full (gossip brings it again). */
static void cluster_probe_add(kv_t *kv, const char *id, const char *url)
{
    struct cluster *c = kv->cluster;
    uint64_t h = probe_hash(id, url);
    int64_t now = clk_mono_ms();
    bool queued = false;
    pthread_mutex_lock(&c->probe_mu);
    for (size_t i = 0; i < CLUSTER_FAILED; i++) {
        if (c->failed[i].hash == h && c->failed[i].at_ms != 0 &&
            now - c->failed[i].at_ms < CLUSTER_RETRY_MS) {
            pthread_mutex_unlock(&c->probe_mu);
            return;
        }
    }
    bool dup = false;
    for (size_t i = 0; i < c->nprobes && !dup; i++) {
        dup = strcmp(c->probes[i].id, id) == 0 &&
              strcmp(c->probes[i].url, url) == 0;
    }
    if (!dup && c->nprobes < CLUSTER_PROBES) {
        probe_t *p = &c->probes[c->nprobes++];
        snprintf(p->id, sizeof(p->id), "%s", id);
        snprintf(p->url, sizeof(p->url), "%s", url);
        queued = true;
    }
    pthread_mutex_unlock(&c->probe_mu);
    if (queued) {
        ticker_kick(&c->prober);
    }
}

/*
 * Learns one row from the network. direct_url is the URL of the member
 * whose answer carried the row (NULL: relayed, or a member list): the
 * row is that member's own when it names the member known at that URL.
 * trusted rows (this node's saved table, a client's member list) enter
 * without a probe. spread false (a sender no member is known to own):
 * rows of known members at their URLs are ignored; the rest still go to
 * the prober.
 */
static void cluster_learn_row(kv_t *kv, const uint8_t *id, size_t idlen,
                              const uint8_t *url, size_t urllen, uint64_t inc,
                              uint64_t hb, const char *direct_url,
                              bool trusted, bool spread)
{
    struct cluster *c = kv->cluster;
    char sid[WIRE_MAX_ID + 1];
    char surl[WIRE_MAX_URL + 1];
    if (idlen == 0 || idlen > WIRE_MAX_ID || urllen == 0 ||
        urllen > WIRE_MAX_URL) {
        return;
    }
    memcpy(sid, id, idlen);
    sid[idlen] = '\0';
    memcpy(surl, url, urllen);
    surl[urllen] = '\0';
    bool is_self =
        kv->cfg.role == KV_ROLE_PEER && strcmp(sid, kv->cfg.node_id) == 0;
    refuse_t why = cluster_row_check(sid, surl, inc, hb, is_self);
    if (why != REFUSE_NONE) {
        cluster_refuse(kv, why, sid, surl);
        return;
    }
    rpc_peer_t *peer = NULL;
    if (!is_self && trusted) {
        peer = rpc_peer(kv->rpc, surl, sid);
        if (peer == NULL) {
            return;
        }
    }
    bool probe = false;
    pthread_rwlock_wrlock(&c->lock);
    member_t *m = cluster_find(c, sid, NULL);
    bool at_url = m != NULL && strcmp(m->url, surl) == 0;
    if (!spread && (is_self || at_url)) {
        /* nothing to spread from this sender, nothing to probe */
    } else if (is_self || trusted || at_url) {
        bool direct = at_url && direct_url != NULL &&
                      strcmp(direct_url, surl) == 0;
        (void)cluster_merge_row(kv, c, sid, surl, peer, inc, hb, direct,
                                clk_mono_ms());
    } else if (m == NULL && c->nmembers >= (size_t)kv->cfg.max_members) {
        cluster_refuse(kv, REFUSE_FULL, sid, surl);
    } else {
        probe = true; /* a new member, or a known one somewhere else */
    }
    pthread_rwlock_unlock(&c->lock);
    if (probe) {
        cluster_probe_add(kv, sid, surl);
    }
}

/* A trusted row: this node's saved table, a client's member list. */
static void cluster_learn(kv_t *kv, const uint8_t *id, size_t idlen,
                          const uint8_t *url, size_t urllen)
{
    /* A row without gossip state: known, but no news of its liveness. */
    cluster_learn_row(kv, id, idlen, url, urllen, 0, 0, NULL, true, true);
}

/* A client's view: the member list a member answered with. */
static void cluster_learn_list(kv_t *kv, const uint8_t *p, size_t len)
{
    rd_t r;
    rd_init(&r, p, len);
    wire_member_t m;
    struct cluster *c = kv->cluster;
    while (wire_next_member(&r, &m)) {
        cluster_learn(kv, m.id, m.idlen, m.url, m.urllen);
        if (kv->cfg.role == KV_ROLE_CLIENT) {
            /* A client has no detector: it takes the member's view. */
            char sid[WIRE_MAX_ID + 1];
            memcpy(sid, m.id, m.idlen);
            sid[m.idlen] = '\0';
            pthread_rwlock_wrlock(&c->lock);
            member_t *mm = cluster_find(c, sid, NULL);
            if (mm != NULL) {
                mm->up = m.status == KV_MEMBER_UP;
            }
            pthread_rwlock_unlock(&c->lock);
        }
    }
}

/* Merges a gossip table; from_url is the URL we exchanged with when the
 * table is its answer (NULL: a table someone sent us). */
static void cluster_merge_gossip(kv_t *kv, const uint8_t *p, size_t len,
                                 const char *from_url, bool spread)
{
    rd_t r;
    rd_init(&r, p, len);
    wire_gossip_t g;
    while (wire_next_gossip(&r, &g)) {
        cluster_learn_row(kv, g.id, g.idlen, g.url, g.urllen, g.incarnation,
                          g.heartbeat, from_url, false, spread);
    }
}

static void cluster_encode_gossip(kv_t *kv, buf_t *b)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    buf_put_varint(b, c->nmembers);
    for (size_t i = 0; i < c->nmembers; i++) {
        const member_t *m = &c->members[i];
        wire_put_gossip(b, m->id, m->url, m->incarnation, m->heartbeat);
    }
    pthread_rwlock_unlock(&c->lock);
}

static void cluster_encode_members(kv_t *kv, buf_t *b)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    buf_put_varint(b, c->nmembers);
    for (size_t i = 0; i < c->nmembers; i++) {
        const member_t *m = &c->members[i];
        wire_put_member(b, m->id, m->url,
                        (uint8_t)(m->up ? KV_MEMBER_UP : KV_MEMBER_DOWN));
    }
    pthread_rwlock_unlock(&c->lock);
}

static bool cluster_joined(struct cluster *c)
{
    pthread_mutex_lock(&c->join_mu);
    bool joined = c->joined;
    pthread_mutex_unlock(&c->join_mu);
    return joined;
}

/* Called at every gossip reply. Only the first one wakes the ticker (a
 * node that just found the cluster gossips with it at once); waking it at
 * every reply would gossip as fast as replies come back, not every
 * gossip_interval_ms. */
static void cluster_mark_joined(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    pthread_mutex_lock(&c->join_mu);
    bool first = !c->joined;
    c->joined = true;
    pthread_cond_broadcast(&c->join_cv);
    pthread_mutex_unlock(&c->join_mu);
    if (first) {
        ticker_kick(&c->ticker);
    }
}

/* One exchange in flight: whom it went to, for the reply. */
typedef struct exchange {
    kv_t *kv;
    rpc_peer_t *peer;
} exchange_t;

static void on_gossip_reply(void *arg, int rc, const wire_msg_t *reply)
{
    exchange_t *x = arg;
    kv_t *kv = x->kv;
    /* A peer takes a gossip table only, a client a member list only: a
     * peer must never take a list's rows as trusted. */
    uint8_t want = kv->cfg.role == KV_ROLE_PEER ? WIRE_GOSSIP : WIRE_MEMBERS;
    if (rc == 0 && reply->status == 0 &&
        reply->type == (uint8_t)(want | WIRE_REPLY)) {
        if (want == WIRE_GOSSIP) {
            cluster_merge_gossip(kv, reply->members, reply->memberslen,
                                 rpc_peer_url(x->peer), true);
        } else {
            cluster_learn_list(kv, reply->members, reply->memberslen);
        }
        cluster_mark_joined(kv);
    }
    free(x);
}

/* One exchange with peer: our table for a member, a list request for a
 * client. */
static void cluster_exchange(kv_t *kv, rpc_peer_t *peer)
{
    exchange_t *x = malloc(sizeof(*x));
    if (x == NULL) {
        return;
    }
    x->kv = kv;
    x->peer = peer;
    buf_t b;
    buf_init(&b);
    if (kv->cfg.role == KV_ROLE_PEER) {
        wire_header(&b, WIRE_GOSSIP, rpc_next_id(kv->rpc), 0, 0);
        cluster_encode_gossip(kv, &b);
    } else {
        wire_build_simple(&b, WIRE_MEMBERS, rpc_next_id(kv->rpc), 0);
    }
    /* A gossip exchange must not outlive a few rounds. */
    int tmo = 4 * kv->cfg.gossip_interval_ms;
    if (tmo > kv->cfg.timeout_ms) {
        tmo = kv->cfg.timeout_ms;
    }
    if (rpc_call(kv->rpc, peer, &b, tmo, on_gossip_reply, x) != 0) {
        buf_free(&b);
        free(x);
    }
}

/* Contacts every seed. */
static void cluster_contact_seeds(kv_t *kv)
{
    const char *s = kv->cfg.join;
    while (s != NULL && *s != '\0') {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        char url[WIRE_MAX_URL + 1];
        if (n > 0 && n <= WIRE_MAX_URL) {
            memcpy(url, s, n);
            url[n] = '\0';
            /* Never gossip with ourselves through our own listen URL. */
            if (kv->cfg.listen == NULL || strcmp(url, kv->cfg.listen) != 0) {
                rpc_peer_t *p = rpc_peer(kv->rpc, url, NULL); /* who: not known */
                if (p != NULL) {
                    cluster_exchange(kv, p);
                }
            }
        }
        s = comma ? comma + 1 : NULL;
    }
}

/* One gossip round: beat, judge, pick a partner. */
static void cluster_round(kv_t *kv, uint64_t r1, uint64_t r2)
{
    struct cluster *c = kv->cluster;
    int64_t now = clk_mono_ms();
    rpc_peer_t *target = NULL;
    pthread_rwlock_wrlock(&c->lock);
    size_t nup = 0;
    size_t ndown = 0;
    for (size_t i = 0; i < c->nmembers; i++) {
        member_t *m = &c->members[i];
        if (m->self) {
            m->heartbeat++;
            continue;
        }
        if (kv->cfg.role == KV_ROLE_PEER && m->up &&
            detector_phi(&m->fd, now) > kv->cfg.phi_convict) {
            m->up = false;
            KV_LOG(&kv->log, KV_LOG_NOTICE,
                   "cluster: member %s is down (silent for %lld ms, mean "
                   "heartbeat interval %.0f ms)",
                   m->id, (long long)(now - m->fd.last_ms),
                   detector_mean(&m->fd));
        }
        if (m->up) {
            nup++;
        } else if (!rpc_peer_is_stopping(m->peer)) {
            ndown++;
        }
    }
    /* Mostly a live member; now and then a down one, so that its return
     * is noticed even if nobody else talks to it (Cassandra does the
     * same). Not one that said it is shutting down, for a while (the
     * transport would refuse it anyway, rpc_peer_is_stopping). A
     * restarted node gossips with the members it saved, so its return is
     * noticed anyway, unless its own messages are lost. */
    bool pick_down = ndown > 0 && (nup == 0 || r1 % (nup + 1) == 0);
    size_t pool = pick_down ? ndown : nup;
    if (pool > 0) {
        size_t k = (size_t)(r2 % pool);
        for (size_t i = 0; i < c->nmembers; i++) {
            member_t *m = &c->members[i];
            if (m->self || rpc_peer_is_stopping(m->peer) ||
                m->up == pick_down) {
                continue;
            }
            if (k-- == 0) {
                target = m->peer;
                break;
            }
        }
    }
    pthread_rwlock_unlock(&c->lock);
    if (target != NULL) {
        cluster_exchange(kv, target);
    }
}

/* Asks url who answers there: true when a peer answered as member id at
 * that very URL, with a row no forger could claim (cluster_row_check);
 * *inc and *hb are its own. Blocks for at most CLUSTER_PROBE_MS. */
static bool cluster_ask(kv_t *kv, const char *url, const char *id,
                        uint64_t *inc, uint64_t *hb)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_PING, rpc_next_id(kv->rpc), 0);
    int tmo = CLUSTER_PROBE_MS < kv->cfg.timeout_ms ? CLUSTER_PROBE_MS
                                                    : kv->cfg.timeout_ms;
    wire_msg_t m;
    void *raw = NULL;
    bool ok = false;
    metric_inc(&kv->metrics, M_MEMBER_PROBES);
    if (rpc_probe(kv->rpc, url, id, &b, tmo, &m, &raw) == 0 &&
        m.type == (WIRE_PING | WIRE_REPLY) && m.status == 0 &&
        m.nmembers == 1) {
        rd_t r;
        rd_init(&r, m.members, m.memberslen);
        wire_gossip_t g;
        ok = wire_next_gossip(&r, &g) == 1 && g.idlen == strlen(id) &&
             memcmp(g.id, id, g.idlen) == 0 && g.urllen == strlen(url) &&
             memcmp(g.url, url, g.urllen) == 0 &&
             cluster_row_check(id, url, g.incarnation, g.heartbeat, false) ==
                 REFUSE_NONE;
        *inc = g.incarnation;
        *hb = g.heartbeat;
    }
    free(raw);
    return ok;
}

static bool cluster_probe_pop(struct cluster *c, probe_t *out)
{
    pthread_mutex_lock(&c->probe_mu);
    bool any = c->nprobes > 0;
    if (any) {
        *out = c->probes[0];
        memmove(&c->probes[0], &c->probes[1],
                (c->nprobes - 1) * sizeof(c->probes[0]));
        c->nprobes--;
    }
    pthread_mutex_unlock(&c->probe_mu);
    return any;
}

static void cluster_probe_failed(kv_t *kv, const probe_t *p, refuse_t why)
{
    struct cluster *c = kv->cluster;
    pthread_mutex_lock(&c->probe_mu);
    c->failed[c->nfailed].hash = probe_hash(p->id, p->url);
    c->failed[c->nfailed].at_ms = clk_mono_ms();
    c->nfailed = (c->nfailed + 1) % CLUSTER_FAILED;
    pthread_mutex_unlock(&c->probe_mu);
    cluster_refuse(kv, why, p->id, p->url);
}

/* Admits a probed row: a new member that answered as itself at its URL,
 * or a known one that answered at a new URL with a newer incarnation
 * while nothing answers as it at the old one (a relayed row cannot move
 * a live member). */
static void cluster_probe_run(kv_t *kv, const probe_t *p)
{
    struct cluster *c = kv->cluster;
    uint64_t inc = 0;
    uint64_t hb = 0;
    if (!cluster_ask(kv, p->url, p->id, &inc, &hb)) {
        cluster_probe_failed(kv, p, REFUSE_UNANSWERED);
        return;
    }
    char old[KV_URL_MAX + 1] = "";
    uint64_t known_inc = 0;
    pthread_rwlock_rdlock(&c->lock);
    const member_t *m = cluster_find(c, p->id, NULL);
    if (m != NULL) {
        snprintf(old, sizeof(old), "%s", m->url);
        known_inc = m->incarnation;
    }
    pthread_rwlock_unlock(&c->lock);
    if (old[0] != '\0' && strcmp(old, p->url) != 0) {
        uint64_t oinc = 0;
        uint64_t ohb = 0;
        if (inc <= known_inc || cluster_ask(kv, old, p->id, &oinc, &ohb)) {
            cluster_probe_failed(kv, p, REFUSE_MOVE);
            return;
        }
    }
    rpc_peer_t *peer = rpc_peer(kv->rpc, p->url, p->id);
    if (peer == NULL) {
        return;
    }
    pthread_rwlock_wrlock(&c->lock);
    (void)cluster_merge_row(kv, c, p->id, p->url, peer, inc, hb, true,
                            clk_mono_ms());
    pthread_rwlock_unlock(&c->lock);
}

/* The prober's thread: runs queued probes one at a time, woken by
 * cluster_probe_add. */
static void cluster_prober(void *arg)
{
    kv_t *kv = arg;
    struct cluster *c = kv->cluster;
    while (ticker_wait(&c->prober, 60000)) {
        probe_t p;
        while (!ticker_stopping(&c->prober) && cluster_probe_pop(c, &p)) {
            cluster_probe_run(kv, &p);
        }
    }
}

static void cluster_ticker(void *arg)
{
    kv_t *kv = arg;
    struct cluster *c = kv->cluster;
    while (ticker_wait(&c->ticker, kv->cfg.gossip_interval_ms)) {
        if (!cluster_joined(c)) {
            cluster_contact_seeds(kv);
        }
        uint64_t r1 = rand_next(&c->rng);
        uint64_t r2 = rand_next(&c->rng);
        cluster_round(kv, r1, r2);
        cluster_save(kv, c);
    }
}

/* Loads the persisted table; a damaged one is ignored (the seeds teach the
 * node again), never trusted. */
/* Learns the members saved by cluster_persist (raw is taken). */
static void cluster_load(kv_t *kv, void *raw, size_t len)
{
    if (raw == NULL) {
        return;
    }
    rd_t r;
    uint64_t n = 0;
    if (!rd_unseal(&r, raw, len, cluster_meta_prefix,
                   sizeof(cluster_meta_prefix))) {
        goto bad;
    }
    n = rd_varint(&r);
    if (r.err || n > WIRE_MAX_MEMBERS) {
        goto bad;
    }
    for (uint64_t i = 0; i < n; i++) {
        wire_member_t m;
        if (!wire_next_member(&r, &m)) {
            goto bad;
        }
        cluster_learn(kv, m.id, m.idlen, m.url, m.urllen);
    }
    free(raw);
    return;
bad:
    KV_LOG(&kv->log, KV_LOG_WARN,
           "cluster: saved member list is damaged; relearning from seeds");
    free(raw);
}

/* A new incarnation: greater than any this node used before (persisted)
 * and than the wall clock in seconds, so it grows even across a wiped
 * data dir. */
static uint64_t cluster_new_incarnation(kv_t *kv)
{
    uint64_t inc = (uint64_t)time(NULL);
    if (kv->store == NULL) {
        return inc;
    }
    void *raw = NULL;
    size_t len = 0;
    if (store_get(kv->store, STORE_CF_META, CLUSTER_META_INCARNATION,
                  strlen(CLUSTER_META_INCARNATION), &raw, &len) == 0 &&
        len == 8) {
        rd_t r;
        rd_init(&r, raw, len);
        uint64_t old = rd_u64(&r);
        if (old >= inc) {
            inc = old + 1;
        }
    }
    free(raw);
    buf_t b;
    buf_init(&b);
    buf_put_u64(&b, inc);
    if (b.oom || store_put(kv->store, STORE_CF_META, CLUSTER_META_INCARNATION,
                           strlen(CLUSTER_META_INCARNATION), b.p, b.len) != 0) {
        KV_LOG(&kv->log, KV_LOG_WARN, "cluster: could not save incarnation");
    }
    buf_free(&b);
    return inc;
}

const char *cluster_status_name(int status)
{
    static const char *const names[] = {
        [KV_MEMBER_UP] = "up",
        [KV_MEMBER_DOWN] = "down",
        [KV_MEMBER_JOINING] = "joining",
        [KV_MEMBER_LEAVING] = "leaving",
    };
    if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]) ||
        names[status] == NULL) {
        return "unknown";
    }
    return names[status];
}

/* ------------------------------------------------------------ handlers */

/* Liveness; a peer answers with its own row, which is how a probe learns
 * who answers at a URL (admission, above). */
static void handle_ping(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    struct cluster *c = kv->cluster;
    buf_t b;
    buf_init(&b);
    wire_header(&b, m->type | WIRE_REPLY, m->id, 0, 0);
    if (kv->cfg.role == KV_ROLE_PEER) {
        pthread_rwlock_rdlock(&c->lock);
        const member_t *self = cluster_find(c, kv->cfg.node_id, NULL);
        buf_put_varint(&b, self != NULL ? 1 : 0);
        if (self != NULL) {
            wire_put_gossip(&b, self->id, self->url, self->incarnation,
                            self->heartbeat);
        }
        pthread_rwlock_unlock(&c->lock);
    }
    rpc_reply(req, &b);
}

static void handle_members(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, m->type | WIRE_REPLY, m->id, 0, 0);
    cluster_encode_members(arg, &b);
    rpc_reply(req, &b);
}

/* A gossip exchange: merge the sender's table, answer with ours. Over
 * TLS, a table from a connection no member is known to own (a joining
 * node, a client certificate) spreads nothing: its rows can only start
 * probes, which the rows' members must answer with their certificates. */
static void handle_gossip(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    bool member = rpc_req_sender(req) == 0;
    cluster_merge_gossip(kv, m->members, m->memberslen, NULL, member);
    buf_t b;
    buf_init(&b);
    wire_header(&b, m->type | WIRE_REPLY, m->id, 0, 0);
    cluster_encode_gossip(kv, &b);
    rpc_reply(req, &b);
}

/*
 * A member is shutting down (cluster_announce_stop): mark it down now
 * rather than after the failure detector's ~9 s of silence, so that no
 * request is routed to it, and have the transport send it nothing for a
 * while (rpc_peer_stopping: hint deliveries, anti-entropy exchanges and
 * gossip already under way stop too). Its row carries its last
 * heartbeat: gossip still carrying an older one of the same
 * incarnation cannot bring it back up; only its next start (a greater
 * incarnation) or a later heartbeat does. A row for ourselves, for an
 * unknown member, at another URL, of another incarnation than the one we
 * know, or with a heartbeat far ahead of the last we heard is refused and
 * changes nothing: a forged row must not hold a live member down for
 * long. (Until peers authenticate each other, issue 15, a forged
 * heartbeat within the slack can hold it down that many intervals.)
 */
#define CLUSTER_SHUTDOWN_HB_SLACK 64
static void handle_shutdown(void *arg, rpc_req_t *req, const wire_msg_t *m)
{
    kv_t *kv = arg;
    struct cluster *c = kv->cluster;
    rd_t r;
    rd_init(&r, m->members, m->memberslen);
    wire_gossip_t g;
    char sid[WIRE_MAX_ID + 1];
    int rc = KV_EINVAL;
    if (kv->cfg.role == KV_ROLE_PEER && wire_next_gossip(&r, &g) == 1) {
        memcpy(sid, g.id, g.idlen);
        sid[g.idlen] = '\0';
        pthread_rwlock_wrlock(&c->lock);
        member_t *mm = cluster_find(c, sid, NULL);
        if (mm != NULL && !mm->self && strlen(mm->url) == g.urllen &&
            memcmp(mm->url, g.url, g.urllen) == 0 &&
            g.incarnation == mm->incarnation &&
            g.heartbeat <= mm->heartbeat + CLUSTER_SHUTDOWN_HB_SLACK) {
            if (g.heartbeat > mm->heartbeat) {
                mm->heartbeat = g.heartbeat;
            }
            bool was_up = mm->up;
            mm->up = false;
            /* Nothing more is sent to it, by any module, for a while. */
            rpc_peer_stopping(mm->peer);
            rc = 0;
            if (was_up) {
                KV_LOG(&kv->log, KV_LOG_NOTICE,
                       "cluster: member %s is down (it is shutting down)",
                       sid);
            }
        }
        pthread_rwlock_unlock(&c->lock);
    }
    rpc_reply_status(req, m->type, m->id, rc);
}

/* The membership requests this module answers. WIRE_JOIN has none: no node
 * sends it (a joining node gossips with its seeds), so it is answered
 * KV_ENOTSUP like any request nobody registered. */
static const struct {
    uint8_t type;
    unsigned who; /* RPC_FROM_NODES: members only (TLS) */
    rpc_handler_fn fn;
} cluster_handlers[] = {
    {WIRE_PING, 0, handle_ping},
    {WIRE_MEMBERS, 0, handle_members},
    /* A node that is not a member yet gossips to join: handle_gossip
     * takes rows from a connection no member owns only as news to
     * probe. */
    {WIRE_GOSSIP, 0, handle_gossip},
    {WIRE_SHUTDOWN, RPC_FROM_NODES, handle_shutdown},
};

static int cluster_register(kv_t *kv)
{
    for (size_t i = 0;
         i < sizeof(cluster_handlers) / sizeof(cluster_handlers[0]); i++) {
        /* On the NNG thread: none touches the store, and a node busy
         * with slow replica work must still answer gossip in time. */
        int rc = rpc_handle(kv->rpc, cluster_handlers[i].type,
                            cluster_handlers[i].fn, kv,
                            RPC_RUN_INLINE | cluster_handlers[i].who);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int cluster_open(kv_t *kv)
{
    struct cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return KV_ENOMEM;
    }
    pthread_rwlock_init(&c->lock, NULL);
    pthread_mutex_init(&c->save_mu, NULL);
    pthread_mutex_init(&c->join_mu, NULL);
    pthread_mutex_init(&c->probe_mu, NULL);
    clk_cond_init(&c->join_cv); /* a client's join wait has a deadline */
    bool ticker_ok = ticker_init(&c->ticker) == 0;
    if (!ticker_ok || ticker_init(&c->prober) != 0) {
        if (ticker_ok) {
            ticker_destroy(&c->ticker);
        }
        pthread_mutex_destroy(&c->probe_mu);
        pthread_cond_destroy(&c->join_cv);
        pthread_mutex_destroy(&c->join_mu);
        pthread_mutex_destroy(&c->save_mu);
        pthread_rwlock_destroy(&c->lock);
        free(c);
        return KV_ENOMEM;
    }
    if (getrandom(&c->rng, sizeof(c->rng), 0) != (ssize_t)sizeof(c->rng)) {
        c->rng = (uint64_t)clk_mono_ms() ^ kv->actor;
    }
    kv->cluster = c;
    if (kv->cfg.role == KV_ROLE_PEER) {
        /* Read before this node's own row is added: adding it saves the
         * table, which would overwrite the list with this node alone. */
        void *saved = NULL;
        size_t saved_len = 0;
        if (kv->rpc == NULL ||
            store_get(kv->store, STORE_CF_META, CLUSTER_META_KEY,
                      strlen(CLUSTER_META_KEY), &saved, &saved_len) != 0) {
            saved = NULL;
        }
        uint64_t inc = cluster_new_incarnation(kv);
        pthread_rwlock_wrlock(&c->lock);
        bool added = cluster_merge_row(kv, c, kv->cfg.node_id,
                                       kv->cfg.listen ? kv->cfg.listen : "",
                                       NULL, inc, 0, false, clk_mono_ms());
        pthread_rwlock_unlock(&c->lock);
        if (!added) {
            free(saved);
            return KV_ENOMEM;
        }
        cluster_load(kv, saved, saved_len);
        cluster_save(kv, c);
    }
    if (kv->rpc == NULL) {
        c->joined = true; /* no thread and no peer can see it yet */
        return 0; /* embedded: a one-node cluster with nothing to join */
    }
    int rrc = cluster_register(kv);
    if (rrc != 0) {
        return rrc;
    }
    /* Known members (after a restart) count as joined: gossip reaches
     * them; seeds are for nodes that know nobody. */
    bool known = kv->cfg.join == NULL || cluster_size(kv) > 1;
    pthread_mutex_lock(&c->join_mu);
    c->joined = c->joined || known;
    pthread_mutex_unlock(&c->join_mu);
    if (kv->cfg.role == KV_ROLE_PEER) {
        int prc = ticker_start(&c->prober, cluster_prober, kv);
        if (prc != 0) {
            return prc;
        }
    }
    cluster_contact_seeds(kv);
    int trc = ticker_start(&c->ticker, cluster_ticker, kv);
    if (trc != 0) {
        return trc;
    }
    if (kv->cfg.role == KV_ROLE_CLIENT) {
        /* A client is useless until it knows the members: wait, bounded. */
        struct timespec ts = clk_deadline(kv->cfg.timeout_ms);
        pthread_mutex_lock(&c->join_mu);
        int rc = 0;
        while (!c->joined && rc == 0) {
            rc = pthread_cond_timedwait(&c->join_cv, &c->join_mu, &ts);
        }
        bool joined = c->joined;
        pthread_mutex_unlock(&c->join_mu);
        if (!joined) {
            KV_LOG(&kv->log, KV_LOG_ERROR,
                   "cluster: no seed answered within %d ms",
                   kv->cfg.timeout_ms);
            return KV_EUNAVAIL;
        }
    }
    return 0;
}

void cluster_stop(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    if (c != NULL) {
        ticker_stop(&c->ticker);
        ticker_stop(&c->prober);
    }
}

/* The announcement's replies, counted on the closing thread's stack:
 * rpc_call calls back exactly once, within its timeout. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pending;
    size_t told;
} announce_t;

static void on_announced(void *arg, int rc, const wire_msg_t *reply)
{
    announce_t *a = arg;
    pthread_mutex_lock(&a->mu);
    if (rc == 0 && reply->status == 0) {
        a->told++;
    }
    a->pending--;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* An announcement that a member cannot take at once is not worth holding
 * the shutdown for: that member convicts this node by silence instead. */
#define CLUSTER_ANNOUNCE_MS 500

void cluster_announce_stop(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    if (c == NULL || kv->rpc == NULL || kv->cfg.role != KV_ROLE_PEER) {
        return;
    }
    /* The ticker has stopped (cluster_stop), so this heartbeat is the last
     * one of this incarnation. */
    buf_t row;
    buf_init(&row);
    rpc_peer_t **to = NULL;
    size_t nto = 0;
    pthread_rwlock_rdlock(&c->lock);
    to = calloc(c->nmembers, sizeof(*to));
    for (size_t i = 0; i < c->nmembers && to != NULL; i++) {
        const member_t *m = &c->members[i];
        if (m->self) {
            buf_put_varint(&row, 1);
            wire_put_gossip(&row, m->id, m->url, m->incarnation,
                            m->heartbeat);
        } else if (!rpc_peer_is_stopping(m->peer)) {
            to[nto++] = m->peer;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    announce_t a = {.pending = 0, .told = 0};
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    for (size_t i = 0; i < nto && !row.oom; i++) {
        buf_t b;
        buf_init(&b);
        wire_header(&b, WIRE_SHUTDOWN, rpc_next_id(kv->rpc), 0, 0);
        buf_put(&b, row.p, row.len);
        int tmo = rpc_peer_hop_ms(to[i]);
        tmo = tmo > CLUSTER_ANNOUNCE_MS ? CLUSTER_ANNOUNCE_MS : tmo;
        tmo = tmo > kv->cfg.timeout_ms ? kv->cfg.timeout_ms : tmo;
        pthread_mutex_lock(&a.mu);
        a.pending++;
        pthread_mutex_unlock(&a.mu);
        if (b.oom ||
            rpc_call(kv->rpc, to[i], &b, tmo, on_announced, &a) != 0) {
            buf_free(&b);
            pthread_mutex_lock(&a.mu);
            a.pending--;
            pthread_mutex_unlock(&a.mu);
        }
    }
    pthread_mutex_lock(&a.mu);
    while (a.pending > 0) {
        pthread_cond_wait(&a.cv, &a.mu);
    }
    size_t told = a.told;
    pthread_mutex_unlock(&a.mu);
    pthread_mutex_destroy(&a.mu);
    pthread_cond_destroy(&a.cv);
    KV_LOG(&kv->log, KV_LOG_INFO,
           "cluster: %zu of %zu members took the news of this shutdown",
           told, nto);
    free(to);
    buf_free(&row);
}

void cluster_close(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    if (c == NULL) {
        return;
    }
    cluster_stop(kv);
    cluster_save(kv, c);
    ticker_destroy(&c->ticker);
    ticker_destroy(&c->prober);
    pthread_mutex_destroy(&c->probe_mu);
    ring_free(c->ring);
    free(c->members);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->save_mu);
    pthread_mutex_destroy(&c->join_mu);
    pthread_cond_destroy(&c->join_cv);
    free(c);
    kv->cluster = NULL;
}

size_t cluster_size(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->nmembers;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

bool cluster_is_up(kv_t *kv, const char *id)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    member_t *m = cluster_find(c, id, NULL);
    bool up = m != NULL && m->up;
    pthread_rwlock_unlock(&c->lock);
    return up;
}

rpc_peer_t *cluster_peer(kv_t *kv, const char *id)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    member_t *m = cluster_find(c, id, NULL);
    rpc_peer_t *p = m != NULL ? m->peer : NULL;
    pthread_rwlock_unlock(&c->lock);
    return p;
}

int cluster_route(kv_t *kv, const void *key, size_t klen, cluster_route_t *out)
{
    struct cluster *c = kv->cluster;
    size_t idx[CLUSTER_MAX_ROUTE];
    pthread_rwlock_rdlock(&c->lock);
    if (c->ring == NULL) {
        pthread_rwlock_unlock(&c->lock);
        out->n = out->count = 0;
        return KV_EUNAVAIL;
    }
    size_t got = ring_successors(c->ring, key, klen, idx, CLUSTER_MAX_ROUTE);
    for (size_t i = 0; i < got; i++) {
        const member_t *m = &c->members[idx[i]];
        out->node[i].peer = m->peer;
        out->node[i].self = m->self;
        out->node[i].up = m->up;
        snprintf(out->node[i].id, sizeof(out->node[i].id), "%s", m->id);
    }
    out->count = got;
    out->n = got < (size_t)kv->cfg.n ? got : (size_t)kv->cfg.n;
    pthread_rwlock_unlock(&c->lock);
    /* Outside the lock: it may read NNG's statistics. */
    for (size_t i = 0; i < got; i++) {
        out->node[i].reach = rpc_peer_reachable(out->node[i].peer);
        out->node[i].conn = rpc_peer_connected(out->node[i].peer);
    }
    return 0;
}

/* kv_member_t's arrays are ABI (kvdist.h): they keep their sizes, and
 * must hold the longest id and URL a member can have plus the NUL. */
_Static_assert(sizeof(((kv_member_t *)0)->id) >= KV_ID_MAX + 1,
               "kv_member_t.id holds KV_ID_MAX + NUL");
_Static_assert(sizeof(((kv_member_t *)0)->url) >= KV_URL_MAX + 1,
               "kv_member_t.url holds KV_URL_MAX + NUL");

static void fill_member(kv_member_t *dst, const member_t *m)
{
    snprintf(dst->id, sizeof(dst->id), "%s", m->id);
    snprintf(dst->url, sizeof(dst->url), "%s", m->url);
    dst->self = m->self ? 1 : 0;
    dst->status = m->up ? KV_MEMBER_UP : KV_MEMBER_DOWN;
}

int cluster_members(kv_t *kv, kv_member_t **out, size_t *count)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    kv_member_t *list = calloc(c->nmembers ? c->nmembers : 1, sizeof(*list));
    if (list == NULL) {
        pthread_rwlock_unlock(&c->lock);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < c->nmembers; i++) {
        fill_member(&list[i], &c->members[i]);
    }
    *count = c->nmembers;
    pthread_rwlock_unlock(&c->lock);
    *out = list;
    return 0;
}

int cluster_preference_list(kv_t *kv, const void *key, size_t klen,
                            kv_member_t **out, size_t *count)
{
    struct cluster *c = kv->cluster;
    size_t idx[CLUSTER_MAX_ROUTE];
    pthread_rwlock_rdlock(&c->lock);
    size_t got =
        c->ring ? ring_successors(c->ring, key, klen, idx, (size_t)kv->cfg.n)
                : 0;
    kv_member_t *list = calloc(got ? got : 1, sizeof(*list));
    if (list == NULL) {
        pthread_rwlock_unlock(&c->lock);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < got; i++) {
        fill_member(&list[i], &c->members[idx[i]]);
    }
    pthread_rwlock_unlock(&c->lock);
    *out = list;
    *count = got;
    return 0;
}

void cluster_render_metrics(kv_t *kv, buf_t *b)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    const char *head = "# HELP kvdist_member_up Whether this node sees the "
                       "member up (1) or down (0).\n"
                       "# TYPE kvdist_member_up gauge\n";
    buf_put(b, head, strlen(head));
    for (size_t i = 0; i < c->nmembers; i++) {
        char line[160];
        int n = snprintf(line, sizeof(line), "kvdist_member_up{id=\"%s\"} %d\n",
                         c->members[i].id, c->members[i].up ? 1 : 0);
        if (n > 0 && (size_t)n < sizeof(line)) {
            buf_put(b, line, (size_t)n);
        }
    }
    /* Each member's share as this node's ring has it, so one node's
     * metrics describe the whole ring (kvdist status shows them). */
    head = "# HELP kvdist_ring_share_ratio The fraction of the ring each "
           "member owns as primary, as this node's ring has it.\n"
           "# TYPE kvdist_ring_share_ratio gauge\n";
    buf_put(b, head, strlen(head));
    for (size_t i = 0; c->ring != NULL && i < c->nmembers; i++) {
        size_t idx = 0;
        if (ring_node_index(c->ring, c->members[i].id, &idx) != 0) {
            continue;
        }
        char line[160];
        int n = snprintf(line, sizeof(line),
                         "kvdist_ring_share_ratio{id=\"%s\"} %.6f\n",
                         c->members[i].id, ring_ownership(c->ring, idx));
        if (n > 0 && (size_t)n < sizeof(line)) {
            buf_put(b, line, (size_t)n);
        }
    }
    pthread_rwlock_unlock(&c->lock);
}

void cluster_on_ring_change(kv_t *kv, cluster_ring_fn fn, void *arg)
{
    struct cluster *c = kv->cluster;
    if (c == NULL) {
        return;
    }
    pthread_rwlock_wrlock(&c->lock);
    c->on_ring = fn;
    c->on_ring_arg = arg;
    pthread_rwlock_unlock(&c->lock);
}

double cluster_ring_share(kv_t *kv, const char *id)
{
    struct cluster *c = kv->cluster;
    double share = 0;
    size_t idx = 0;
    pthread_rwlock_rdlock(&c->lock);
    if (c->ring != NULL && ring_node_index(c->ring, id, &idx) == 0) {
        share = ring_ownership(c->ring, idx);
    }
    pthread_rwlock_unlock(&c->lock);
    return share;
}
