/*
 * cluster.c - membership and the ring.
 *
 * Owns the member list (sorted by node id), the ring built from it, and the
 * background thread that joins seeds. Invariants: the ring always matches
 * the member list (rebuilt under the write lock on every change); the list
 * is persisted in the meta column family on every change, so a restarted
 * node knows the cluster without its seeds; a member's rpc_peer_t, once
 * created, lives until the node closes, so routes may hold peer pointers
 * without a lock.
 *
 * Joining (until gossip arrives): a node sends JOIN(itself) to each seed;
 * the seed adds it and answers with its member list; the node learns each
 * member and, for every member new to it, sends JOIN(itself) there too, so
 * every node that is told about another introduces itself to it. A client
 * (role=client) is not a member: it asks the seeds for the list (MEMBERS)
 * and refreshes it periodically.
 */
#include "cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "ring.h"
#include "store.h"
#include "wire.h"

#define CLUSTER_META_KEY "members"
#define CLUSTER_TICK_MS 500

typedef struct member {
    char id[WIRE_MAX_ID + 1];
    char url[WIRE_MAX_URL + 1];
    rpc_peer_t *peer; /* NULL for this node */
    bool self;
} member_t;

struct cluster {
    pthread_rwlock_t lock; /* protects members, nmembers, ring */
    member_t *members;
    size_t nmembers;
    ring_t *ring;

    pthread_t ticker;
    bool ticker_started;
    pthread_mutex_t tick_mu; /* protects stop, joined */
    pthread_cond_t tick_cv;
    bool stop;
    bool joined; /* a seed answered */
};

/* ----------------------------------------------------------- internals */

/* Rebuilds the ring from the member list. Caller holds the write lock. */
static int cluster_rebuild(kv_t *kv, struct cluster *c)
{
    if (c->nmembers == 0) {
        ring_free(c->ring);
        c->ring = NULL;
        return 0;
    }
    const char **ids = malloc(c->nmembers * sizeof(*ids));
    if (ids == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < c->nmembers; i++) {
        ids[i] = c->members[i].id;
    }
    ring_t *r = NULL;
    int rc = ring_build(ids, c->nmembers, kv->cfg.vnodes, &r);
    free(ids);
    if (rc != 0) {
        return rc == RING_ENOMEM ? KV_ENOMEM : KV_EINTERNAL;
    }
    ring_free(c->ring);
    c->ring = r;
    return 0;
}

/* Persists the list: 'K' 'M' version, member list, checksum. Caller holds
 * the lock (read or write). */
static void cluster_persist(kv_t *kv, struct cluster *c)
{
    if (kv->store == NULL) {
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_put_u8(&b, 'K');
    buf_put_u8(&b, 'M');
    buf_put_u8(&b, 1);
    buf_put_varint(&b, c->nmembers);
    for (size_t i = 0; i < c->nmembers; i++) {
        wire_put_member(&b, c->members[i].id, c->members[i].url, 0);
    }
    if (!b.oom) {
        buf_put_u32(&b, (uint32_t)XXH3_64bits(b.p, b.len));
    }
    if (b.oom || store_put(kv->store, STORE_CF_META, CLUSTER_META_KEY,
                           strlen(CLUSTER_META_KEY), b.p, b.len) != 0) {
        KV_LOG(&kv->log, KV_LOG_WARN, "cluster: could not save members");
    }
    buf_free(&b);
}

static void cluster_send_join(kv_t *kv, rpc_peer_t *peer);

/* Adds or updates a member. Returns the new member's peer when it is new
 * (so the caller can introduce itself), else NULL. Takes the lock. */
static rpc_peer_t *cluster_add(kv_t *kv, const char *id, const char *url)
{
    struct cluster *c = kv->cluster;
    bool is_self = kv->cfg.role == KV_ROLE_PEER &&
                   strcmp(id, kv->cfg.node_id) == 0;
    rpc_peer_t *peer = NULL;
    if (!is_self) {
        peer = rpc_peer(kv->rpc, url);
        if (peer == NULL) {
            return NULL;
        }
    }
    pthread_rwlock_wrlock(&c->lock);
    size_t i = 0;
    while (i < c->nmembers && strcmp(c->members[i].id, id) < 0) {
        i++;
    }
    rpc_peer_t *fresh = NULL;
    if (i < c->nmembers && strcmp(c->members[i].id, id) == 0) {
        /* Known: a node that moved keeps its id and gets its new URL. */
        if (!is_self && strcmp(c->members[i].url, url) != 0) {
            snprintf(c->members[i].url, sizeof(c->members[i].url), "%s", url);
            c->members[i].peer = peer;
            cluster_persist(kv, c);
            fresh = peer;
        }
        pthread_rwlock_unlock(&c->lock);
        return fresh;
    }
    member_t *m = realloc(c->members, (c->nmembers + 1) * sizeof(*m));
    if (m == NULL) {
        pthread_rwlock_unlock(&c->lock);
        return NULL;
    }
    c->members = m;
    memmove(&m[i + 1], &m[i], (c->nmembers - i) * sizeof(*m));
    memset(&m[i], 0, sizeof(m[i]));
    snprintf(m[i].id, sizeof(m[i].id), "%s", id);
    snprintf(m[i].url, sizeof(m[i].url), "%s", url);
    m[i].peer = peer;
    m[i].self = is_self;
    c->nmembers++;
    if (cluster_rebuild(kv, c) != 0) {
        /* Keep the ring consistent with the list: undo. */
        memmove(&m[i], &m[i + 1], (c->nmembers - i - 1) * sizeof(*m));
        c->nmembers--;
        pthread_rwlock_unlock(&c->lock);
        return NULL;
    }
    cluster_persist(kv, c);
    pthread_rwlock_unlock(&c->lock);
    KV_LOG(&kv->log, KV_LOG_NOTICE, "cluster: member %s at %s", id, url);
    return peer;
}

void cluster_learn(kv_t *kv, const uint8_t *id, size_t idlen,
                   const uint8_t *url, size_t urllen)
{
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
    rpc_peer_t *fresh = cluster_add(kv, sid, surl);
    if (fresh != NULL && kv->cfg.role == KV_ROLE_PEER) {
        cluster_send_join(kv, fresh);
    }
}

void cluster_learn_list(kv_t *kv, const uint8_t *p, size_t len)
{
    rd_t r;
    rd_init(&r, p, len);
    wire_member_t m;
    while (wire_next_member(&r, &m)) {
        cluster_learn(kv, m.id, m.idlen, m.url, m.urllen);
    }
}

void cluster_encode_members(kv_t *kv, buf_t *b)
{
    struct cluster *c = kv->cluster;
    pthread_rwlock_rdlock(&c->lock);
    buf_put_varint(b, c->nmembers);
    for (size_t i = 0; i < c->nmembers; i++) {
        const member_t *m = &c->members[i];
        int status = (m->self || rpc_peer_connected(m->peer))
                         ? KV_MEMBER_UP
                         : KV_MEMBER_DOWN;
        wire_put_member(b, m->id, m->url, (uint8_t)status);
    }
    pthread_rwlock_unlock(&c->lock);
}

static void on_members_reply(void *arg, int rc, const wire_msg_t *reply)
{
    kv_t *kv = arg;
    if (rc != 0 || reply->status != 0) {
        return;
    }
    cluster_learn_list(kv, reply->members, reply->memberslen);
    struct cluster *c = kv->cluster;
    pthread_mutex_lock(&c->tick_mu);
    c->joined = true;
    pthread_cond_broadcast(&c->tick_cv);
    pthread_mutex_unlock(&c->tick_mu);
}

static void cluster_send_join(kv_t *kv, rpc_peer_t *peer)
{
    buf_t b;
    buf_init(&b);
    if (kv->cfg.role == KV_ROLE_PEER) {
        wire_header(&b, WIRE_JOIN, rpc_next_id(kv->rpc), 0, 0);
        wire_put_member(&b, kv->cfg.node_id, kv->cfg.listen, KV_MEMBER_UP);
    } else {
        wire_build_simple(&b, WIRE_MEMBERS, rpc_next_id(kv->rpc), 0);
    }
    if (rpc_call(kv->rpc, peer, &b, kv->cfg.timeout_ms, on_members_reply,
                 kv) != 0) {
        buf_free(&b);
    }
}

/* Contacts every seed (JOIN for a peer, MEMBERS for a client). */
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
            /* Never join ourselves through our own listen URL. */
            if (kv->cfg.listen == NULL || strcmp(url, kv->cfg.listen) != 0) {
                rpc_peer_t *p = rpc_peer(kv->rpc, url);
                if (p != NULL) {
                    cluster_send_join(kv, p);
                }
            }
        }
        s = comma ? comma + 1 : NULL;
    }
}

static void *cluster_ticker(void *arg)
{
    kv_t *kv = arg;
    struct cluster *c = kv->cluster;
    unsigned tick = 0;
    pthread_mutex_lock(&c->tick_mu);
    while (!c->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += CLUSTER_TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&c->tick_cv, &c->tick_mu, &ts);
        if (c->stop) {
            break;
        }
        tick++;
        /* Until a seed has answered, keep asking; a client refreshes its
         * view every few seconds. */
        bool again = !c->joined ||
                     (kv->cfg.role == KV_ROLE_CLIENT && tick % 10 == 0);
        if (again) {
            pthread_mutex_unlock(&c->tick_mu);
            cluster_contact_seeds(kv);
            pthread_mutex_lock(&c->tick_mu);
        }
    }
    pthread_mutex_unlock(&c->tick_mu);
    return NULL;
}

/* Loads the persisted list; a damaged one is ignored (the seeds teach the
 * node again), never trusted. */
static void cluster_load(kv_t *kv)
{
    if (kv->store == NULL) {
        return;
    }
    void *raw = NULL;
    size_t len = 0;
    if (store_get(kv->store, STORE_CF_META, CLUSTER_META_KEY,
                  strlen(CLUSTER_META_KEY), &raw, &len) != 0) {
        return;
    }
    const uint8_t *p = raw;
    rd_t sum;
    if (len < 3 + 1 + 4 || p[0] != 'K' || p[1] != 'M' || p[2] != 1) {
        goto bad;
    }
    rd_init(&sum, p + len - 4, 4);
    if ((uint32_t)XXH3_64bits(p, len - 4) != rd_u32(&sum)) {
        goto bad;
    }
    rd_t r;
    rd_init(&r, p + 3, len - 3 - 4);
    uint64_t n = rd_varint(&r);
    if (r.err || n > WIRE_MAX_MEMBERS) {
        goto bad;
    }
    for (uint64_t i = 0; i < n; i++) {
        wire_member_t m;
        if (!wire_next_member(&r, &m)) {
            goto bad;
        }
        char sid[WIRE_MAX_ID + 1];
        char surl[WIRE_MAX_URL + 1];
        memcpy(sid, m.id, m.idlen);
        sid[m.idlen] = '\0';
        memcpy(surl, m.url, m.urllen);
        surl[m.urllen] = '\0';
        if (strcmp(sid, kv->cfg.node_id) != 0) {
            (void)cluster_add(kv, sid, surl);
        }
    }
    free(raw);
    return;
bad:
    KV_LOG(&kv->log, KV_LOG_WARN,
           "cluster: saved member list is damaged; relearning from seeds");
    free(raw);
}

int cluster_open(kv_t *kv)
{
    struct cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return KV_ENOMEM;
    }
    pthread_rwlock_init(&c->lock, NULL);
    pthread_mutex_init(&c->tick_mu, NULL);
    pthread_cond_init(&c->tick_cv, NULL);
    kv->cluster = c;
    if (kv->cfg.role == KV_ROLE_PEER) {
        const char *url = kv->cfg.listen ? kv->cfg.listen : "";
        if (cluster_add(kv, kv->cfg.node_id, url) != NULL) {
            return KV_EINTERNAL; /* self never has a peer */
        }
        if (c->nmembers != 1) {
            return KV_ENOMEM;
        }
        if (kv->rpc != NULL) {
            cluster_load(kv);
        }
    }
    if (kv->cfg.join == NULL) {
        c->joined = true;
    }
    if (kv->rpc == NULL) {
        return 0; /* embedded: a one-node cluster with nothing to join */
    }
    /* Introduce ourselves to every member we already know (a restart). */
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->nmembers;
    rpc_peer_t **known = calloc(n ? n : 1, sizeof(*known));
    for (size_t i = 0; known != NULL && i < n; i++) {
        known[i] = c->members[i].peer;
    }
    pthread_rwlock_unlock(&c->lock);
    for (size_t i = 0; known != NULL && i < n; i++) {
        if (known[i] != NULL) {
            cluster_send_join(kv, known[i]);
        }
    }
    free(known);
    cluster_contact_seeds(kv);
    if (pthread_create(&c->ticker, NULL, cluster_ticker, kv) != 0) {
        return KV_ENOMEM;
    }
    c->ticker_started = true;
    if (kv->cfg.role == KV_ROLE_CLIENT) {
        /* A client is useless until it knows the members: wait, bounded. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += kv->cfg.timeout_ms / 1000;
        ts.tv_nsec += (kv->cfg.timeout_ms % 1000) * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&c->tick_mu);
        int rc = 0;
        while (!c->joined && rc == 0) {
            rc = pthread_cond_timedwait(&c->tick_cv, &c->tick_mu, &ts);
        }
        bool joined = c->joined;
        pthread_mutex_unlock(&c->tick_mu);
        if (!joined) {
            KV_LOG(&kv->log, KV_LOG_ERROR,
                   "cluster: no seed answered within %d ms", kv->cfg.timeout_ms);
            return KV_EUNAVAIL;
        }
    }
    return 0;
}

void cluster_stop(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    if (c == NULL || !c->ticker_started) {
        return;
    }
    pthread_mutex_lock(&c->tick_mu);
    c->stop = true;
    pthread_cond_broadcast(&c->tick_cv);
    pthread_mutex_unlock(&c->tick_mu);
    pthread_join(c->ticker, NULL);
    c->ticker_started = false;
}

void cluster_close(kv_t *kv)
{
    struct cluster *c = kv->cluster;
    if (c == NULL) {
        return;
    }
    cluster_stop(kv);
    ring_free(c->ring);
    free(c->members);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->tick_mu);
    pthread_cond_destroy(&c->tick_cv);
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

int cluster_route(kv_t *kv, const void *key, size_t klen,
                  cluster_route_t *out)
{
    struct cluster *c = kv->cluster;
    size_t idx[CLUSTER_MAX_ROUTE];
    pthread_rwlock_rdlock(&c->lock);
    if (c->ring == NULL) {
        pthread_rwlock_unlock(&c->lock);
        out->n = 0;
        return KV_EUNAVAIL;
    }
    size_t want = (size_t)kv->cfg.n;
    size_t got = ring_successors(c->ring, key, klen, idx, want);
    for (size_t i = 0; i < got; i++) {
        const member_t *m = &c->members[idx[i]];
        out->node[i].peer = m->peer;
        out->node[i].self = m->self;
        snprintf(out->node[i].id, sizeof(out->node[i].id), "%s", m->id);
    }
    out->n = got;
    pthread_rwlock_unlock(&c->lock);
    return 0;
}

static void fill_member(kv_member_t *dst, const member_t *m)
{
    snprintf(dst->id, sizeof(dst->id), "%s", m->id);
    snprintf(dst->url, sizeof(dst->url), "%s", m->url);
    dst->self = m->self ? 1 : 0;
    dst->status = (m->self || rpc_peer_connected(m->peer)) ? KV_MEMBER_UP
                                                           : KV_MEMBER_DOWN;
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
    size_t got = c->ring ? ring_successors(c->ring, key, klen, idx,
                                           (size_t)kv->cfg.n)
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
