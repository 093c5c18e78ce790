/*
 * nemesis.c - the fault-injection harness (kvdist-nemesis(1)): a 5-node
 * kvdistd cluster, concurrent clients recording every operation, a
 * nemesis injecting faults on a schedule drawn from a seed, and then the
 * checker of history.c over what was recorded.
 *
 *   nemesis run [--duration S] [--seed N] [--clients K] [--keys K] [--keep]
 *               [--hook-only]
 *   nemesis check HISTORY
 *
 * Processes. The controller (this program's `run`) forks kvdistd nodes and
 * two helper processes of its own program (`_client`, the workload, and
 * `_verify`, the read-back), and never opens an NNG socket itself: NNG is
 * not fork-safe. The helpers open one role=client kv_t each and never fork.
 * Every child gets PR_SET_PDEATHSIG, and the controller stops every PID it
 * started (atexit, SIGINT/SIGTERM/SIGHUP handlers) and removes its network
 * namespace, also on failure.
 *
 * Network. Run as root on Linux, the controller creates a network namespace
 * of its own (kvnem-PID), enters it (setns) before forking anything, and
 * runs node i on 127.0.0.(11+i); nodes dial from their listen address
 * (rpc.c), so nftables rules in the namespace's own output chain can cut
 * or thin the link between any two nodes. The host's network is never
 * touched. Delays use the fault hook of rpc.c (--fault-file) because
 * tc netem needs sch_netem, which is probed and reported. Without root or
 * namespaces, the harness says so and uses the hook for partitions and
 * drops as well (each node's requests to a cut peer are dropped).
 *
 * Owns: the namespace, the nft table inside it, the nodes' and helpers'
 * PIDs, and a work directory (kept when a check fails).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aae.h"
#include "codec.h"
#include "history.h"
#include "kvdist.h"
#include "object.h"
#include "rand.h"
#include "wire.h"

#define NODES 5
#define MAX_CLIENTS 32
#define READY_BOUND_MS 20000
#define CMD_BOUND_MS 10000

/* ------------------------------------------------------------- helpers */

/* snprintf into an array, refusing to truncate (a path that does not fit
 * is a setup error, never a silently wrong path). */
#define FMT(arr, ...)                                                          \
    do {                                                                       \
        int fmt_n_ = snprintf((arr), sizeof(arr), __VA_ARGS__);                \
        if (fmt_n_ < 0 || (size_t)fmt_n_ >= sizeof(arr)) {                     \
            fprintf(stderr, "nemesis: %s:%d: string too long\n", __FILE__,    \
                    __LINE__);                                                 \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int rnd_in(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rand_next(s) % (uint64_t)(hi - lo + 1));
}

/* Appends one line to fd with a single write(2): O_APPEND keeps lines from
 * several processes whole. */
static void append_line(int fd, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n > 0 && write(fd, s, (size_t)n) != n) {
        fprintf(stderr, "nemesis: history write failed: %s\n",
                strerror(errno));
    }
    free(s);
}

/* Parses tcp://A.B.C.D:PORT. */
static int url_addr(const char *url, struct sockaddr_in *sa)
{
    char host[64];
    int port;
    if (sscanf(url, "tcp://%63[0-9.]:%d", host, &port) != 2) {
        return -1;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static const wire_limits_t big_limits = {1 << 16, 1 << 24, 1 << 26};

/*
 * One request to a node over SP-over-TCP spoken by hand (the framing of
 * test/check_harness.c): plain sockets, so no NNG socket in this process
 * beside the library's own. Returns the reply body (free it) or NULL.
 */
static uint8_t *raw_request(const char *url, const buf_t *req, size_t *lenp,
                            int timeout_ms)
{
    struct sockaddr_in sa;
    if (url_addr(url, &sa) != 0) {
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return NULL;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
    uint8_t peer[8];
    uint8_t hdr[12];
    uint64_t n = req->len + 4;
    for (int i = 0; i < 8; i++) {
        hdr[i] = (uint8_t)(n >> (56 - 8 * i));
    }
    hdr[8] = 0x80; /* request id 0x80000001 */
    hdr[9] = 0;
    hdr[10] = 0;
    hdr[11] = 1;
    uint8_t *body = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, hello, 8) == 8 && read_full(fd, peer, 8) == 0 &&
        write(fd, hdr, 12) == 12 &&
        write(fd, req->p, req->len) == (ssize_t)req->len) {
        uint8_t lenb[8];
        uint8_t id[4];
        if (read_full(fd, lenb, 8) == 0) {
            uint64_t rl = 0;
            for (int i = 0; i < 8; i++) {
                rl = (rl << 8) | lenb[i];
            }
            if (rl >= 4 && rl < (1u << 26) && read_full(fd, id, 4) == 0 &&
                (body = malloc(rl - 4 + 1)) != NULL) {
                if (read_full(fd, body, rl - 4) != 0) {
                    free(body);
                    body = NULL;
                } else {
                    *lenp = rl - 4;
                }
            }
        }
    }
    close(fd);
    return body;
}

/* How many members node `url` lists and how many it sees up (-1: no
 * answer). */
static int remote_up(const char *url, int *listed)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_MEMBERS, 1, 0);
    size_t len = 0;
    uint8_t *reply = raw_request(url, &b, &len, 2000);
    buf_free(&b);
    *listed = 0;
    if (reply == NULL) {
        return -1;
    }
    int up = -1;
    wire_msg_t m;
    if (wire_decode(reply, len, &big_limits, &m) == 0 && m.status == 0) {
        rd_t r;
        rd_init(&r, m.members, m.memberslen);
        wire_member_t mem;
        up = 0;
        while (wire_next_member(&r, &mem)) {
            (*listed)++;
            up += mem.status == KV_MEMBER_UP;
        }
    }
    free(reply);
    return up;
}

/* Node url's Merkle root per range (AAE STATUS); -1 if it did not answer
 * or its trees are not built yet. */
static int remote_roots(const char *url, uint64_t *gid, uint64_t *root,
                        size_t max, size_t *n)
{
    buf_t b;
    buf_init(&b);
    wire_header(&b, WIRE_AE, 1, 0, AAE_OP_STATUS);
    wire_put_bytes(&b, NULL, 0);
    size_t len = 0;
    uint8_t *reply = raw_request(url, &b, &len, 3000);
    buf_free(&b);
    if (reply == NULL) {
        return -1;
    }
    int rc = -1;
    wire_msg_t m;
    if (wire_decode(reply, len, &big_limits, &m) == 0 && m.status == 0) {
        rd_t r;
        rd_init(&r, m.obj, m.objlen);
        int ready = rd_u8(&r);
        for (int i = 0; i < 7; i++) {
            (void)rd_varint(&r);
        }
        (void)rd_u64(&r);
        uint64_t cnt = rd_varint(&r);
        if (!r.err && cnt <= max) {
            for (uint64_t i = 0; i < cnt; i++) {
                gid[i] = rd_u64(&r);
                root[i] = rd_u64(&r);
            }
            if (!r.err && rd_left(&r) == 0 && ready) {
                *n = (size_t)cnt;
                rc = 0;
            }
        }
    }
    free(reply);
    return rc;
}

/* What node url holds for key in its own store: appends its live values,
 * comma-separated, to out ("-" if none). Returns 0 or a KV_E* code. */
static int remote_local_values(const char *url, const char *key, char *out,
                               size_t outsize)
{
    buf_t b;
    buf_init(&b);
    wire_build_key(&b, WIRE_LOCAL_GET, 1, key, strlen(key));
    size_t len = 0;
    uint8_t *reply = raw_request(url, &b, &len, 3000);
    buf_free(&b);
    snprintf(out, outsize, "-");
    if (reply == NULL) {
        return KV_EUNAVAIL;
    }
    int rc = KV_EPROTO;
    wire_msg_t m;
    if (wire_decode(reply, len, &big_limits, &m) == 0) {
        rc = m.status;
        obj_t o;
        obj_init(&o);
        obj_limits_t lim = {1 << 24, 1024, 4096};
        if (rc == 0 && m.objlen > 0 &&
            (rc = obj_decode(m.obj, m.objlen, &lim, &o)) == 0) {
            size_t used = 0;
            for (size_t i = 0; i < o.n; i++) {
                if (o.sib[i].flags & OBJ_SIB_TOMBSTONE) {
                    continue;
                }
                int w = snprintf(out + used, outsize - used, "%s%.*s",
                                 used ? "," : "", (int)o.sib[i].vlen,
                                 (const char *)o.sib[i].val);
                if (w < 0 || (size_t)w >= outsize - used) {
                    rc = KV_ETOOBIG;
                    break;
                }
                used += (size_t)w;
            }
        }
        obj_free(&o);
    }
    free(reply);
    return rc;
}

/* ------------------------------------------------------- the workload */

typedef struct workload {
    kv_t *kv;
    int fd; /* history, O_APPEND */
    const char *phase;
    int64_t until_us;
    int nkeys;
    uint64_t seed;
    int client;
    size_t ops;
} workload_t;

/* Joins the values of a read into "a,b,c" ("-" if none). */
static char *values_of(const kv_siblings_t *s)
{
    size_t n = s ? kv_siblings_count(s) : 0;
    if (n == 0) {
        return strdup("-");
    }
    size_t size = 1;
    for (size_t i = 0; i < n; i++) {
        const void *v;
        size_t len;
        kv_siblings_value(s, i, &v, &len);
        size += len + 1;
    }
    char *out = malloc(size);
    if (out == NULL) {
        return NULL;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const void *v;
        size_t len;
        kv_siblings_value(s, i, &v, &len);
        if (used) {
            out[used++] = ',';
        }
        memcpy(out + used, v, len);
        used += len;
    }
    out[used] = '\0';
    return out;
}

static char *hex_of(const void *p, size_t len)
{
    if (len == 0) {
        return strdup("-");
    }
    char *out = malloc(2 * len + 1);
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", ((const uint8_t *)p)[i]);
    }
    return out;
}

static void record(workload_t *w, const char *kind, const char *key,
                   int64_t start, int rc, const char *value,
                   const char *covers, const char *seen, const char *ctx)
{
    append_line(w->fd, "op %d %s %s %s %lld %lld %d %s %s %s %s\n", w->client,
                kind, key, w->phase, (long long)start, (long long)now_us(), rc,
                value ? value : "-", covers ? covers : "-", seen ? seen : "-",
                ctx ? ctx : "-");
    w->ops++;
}

static void *workload_main(void *arg)
{
    workload_t *w = arg;
    uint64_t rng = w->seed;
    char phasech = w->phase[1] == 't' ? 's' : 'l'; /* strict / loose */
    unsigned seq = 0;
    while (now_us() < w->until_us) {
        char key[16];
        snprintf(key, sizeof(key), "k%02d",
                 (int)(rand_next(&rng) % (uint64_t)w->nkeys));
        int what = (int)(rand_next(&rng) % 100);
        kv_call_t call = KV_CALL_INIT;
        call.timeout_ms = 3000;
        char val[32];
        snprintf(val, sizeof(val), "%c%d.%u", phasech, w->client, ++seq);
        if (what < 30) {
            /* a blind write: an empty context covers nothing */
            int64_t t = now_us();
            int rc = kv_put_ctx(w->kv, key, strlen(key), val, strlen(val), NULL,
                                0, &call);
            record(w, "put", key, t, rc, val, NULL, NULL, NULL);
        } else {
            int64_t t = now_us();
            kv_siblings_t *s = NULL;
            int rc = kv_get_siblings(w->kv, key, strlen(key), &call, &s);
            char *seen = rc == 0 ? values_of(s) : NULL;
            size_t clen = 0;
            const void *ctx = rc == 0 ? kv_siblings_context(s, &clen) : NULL;
            char *hex = rc == 0 ? hex_of(ctx, clen) : NULL;
            record(w, "read", key, t, rc, NULL, NULL, seen, hex);
            if (rc == 0 && what < 65) {
                /* read-modify-write or delete, with the read's context:
                 * it supersedes exactly the values the read returned */
                call = (kv_call_t)KV_CALL_INIT;
                call.timeout_ms = 3000;
                t = now_us();
                if (what < 57) {
                    rc = kv_put_ctx(w->kv, key, strlen(key), val, strlen(val),
                                    ctx, clen, &call);
                    record(w, "put", key, t, rc, val, seen, NULL, hex);
                } else {
                    rc = kv_delete_ctx(w->kv, key, strlen(key), ctx, clen,
                                       &call);
                    record(w, "delete", key, t, rc, NULL, seen, NULL, hex);
                }
            }
            free(seen);
            free(hex);
            kv_siblings_free(s);
        }
        /* pace the clients so five nodes and the workload share two
         * cores without starving the failure detector */
        sleep_ms(5 + (int)(rand_next(&rng) % 30));
    }
    return NULL;
}

static kv_t *open_client(const char *join, const char *sloppy)
{
    kv_options_t *o = kv_options_create();
    if (o == NULL || kv_options_set(o, "role", "client") != 0 ||
        kv_options_set(o, "join", join) != 0 ||
        kv_options_set(o, "timeout_ms", "3000") != 0 ||
        kv_options_set(o, "gossip_interval_ms", "100") != 0 ||
        kv_options_set(o, "sloppy_quorum", sloppy) != 0) {
        kv_options_destroy(o);
        return NULL;
    }
    kv_t *kv = NULL;
    int64_t deadline = now_us() + READY_BOUND_MS * 1000LL;
    int rc;
    while ((rc = kv_open(o, &kv)) != 0 && now_us() < deadline) {
        sleep_ms(200);
    }
    kv_options_destroy(o);
    if (rc != 0) {
        fprintf(stderr, "nemesis: client cannot open: %s\n", kv_strerror(rc));
    }
    return kv;
}

/* nemesis _client HISTORY PHASE DURATION_MS CLIENTS SEED NKEYS JOIN */
static int client_main(int argc, char **argv)
{
    if (argc != 9) {
        return 2;
    }
    int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    const char *phase = argv[3];
    int64_t dur = atoll(argv[4]);
    int nclients = atoi(argv[5]);
    uint64_t seed = strtoull(argv[6], NULL, 10);
    int nkeys = atoi(argv[7]);
    if (fd < 0 || nclients < 1 || nclients > MAX_CLIENTS || nkeys < 1) {
        return 2;
    }
    kv_t *kv = open_client(argv[8], strcmp(phase, "strict") == 0 ? "off" : "on");
    if (kv == NULL) {
        return 1;
    }
    workload_t w[MAX_CLIENTS];
    pthread_t t[MAX_CLIENTS];
    int64_t until = now_us() + dur * 1000;
    for (int i = 0; i < nclients; i++) {
        w[i] = (workload_t){kv, fd, phase, until, nkeys,
                            seed * 1000003ULL + (uint64_t)i + 1,
                            (phase[1] == 't' ? 0 : 100) + i, 0};
        pthread_create(&t[i], NULL, workload_main, &w[i]);
    }
    size_t ops = 0;
    for (int i = 0; i < nclients; i++) {
        pthread_join(t[i], NULL);
        ops += w[i].ops;
    }
    fsync(fd);
    close(fd);
    printf("nemesis: %s phase: %zu operations by %d clients\n", phase, ops,
           nclients);
    fflush(stdout);
    kv_close(kv);
    return 0;
}

/* ------------------------------------------------------- the read-back */

/* Whether every pair of nodes agrees on the root of every range both
 * replicate (and they share some). */
static bool roots_agree(char **urls, int n)
{
    static uint64_t gid[NODES][256], root[NODES][256];
    size_t cnt[NODES];
    for (int i = 0; i < n; i++) {
        if (remote_roots(urls[i], gid[i], root[i], 256, &cnt[i]) != 0) {
            return false;
        }
    }
    int shared = 0;
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            for (size_t a = 0; a < cnt[i]; a++) {
                for (size_t b = 0; b < cnt[j]; b++) {
                    if (gid[i][a] != gid[j][b]) {
                        continue;
                    }
                    shared++;
                    if (root[i][a] != root[j][b]) {
                        return false;
                    }
                }
            }
        }
    }
    return shared > 0;
}

/* One anti-entropy pass on node id, waited for (bounded). */
static void repair_pass(kv_t *kv, const char *id, int64_t deadline)
{
    kv_repair_status_t st;
    while (now_us() < deadline) {
        if (kv_repair_status(kv, id, &st) == 0 && st.trees_ready) {
            break;
        }
        sleep_ms(50);
    }
    if (kv_repair_status(kv, id, &st) != 0) {
        return;
    }
    uint64_t want = st.passes + (st.running ? 2 : 1);
    if (kv_repair(kv, id) != 0) {
        return;
    }
    while (now_us() < deadline) {
        if (kv_repair_status(kv, id, &st) == 0 && st.passes >= want) {
            return;
        }
        sleep_ms(50);
    }
}

/* nemesis _verify HISTORY NKEYS BOUND_MS HEAL_US JOIN ID=URL... */
static int verify_main(int argc, char **argv)
{
    if (argc < 8 || argc - 7 > NODES) {
        return 2;
    }
    int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    int nkeys = atoi(argv[3]);
    int64_t bound_ms = atoll(argv[4]);
    int64_t heal_us = atoll(argv[5]);
    int n = argc - 7;
    char *ids[NODES], *urls[NODES];
    for (int i = 0; i < n; i++) {
        ids[i] = argv[7 + i];
        char *eq = strchr(ids[i], '=');
        if (eq == NULL) {
            return 2;
        }
        *eq = '\0';
        urls[i] = eq + 1;
    }
    kv_t *kv = fd >= 0 ? open_client(argv[6], "on") : NULL;
    if (kv == NULL) {
        return 1;
    }
    /* Repair every node in turn until the roots agree. */
    int64_t deadline = heal_us + bound_ms * 1000;
    bool agree = false;
    int rounds = 0;
    while (!(agree = roots_agree(urls, n)) && now_us() < deadline) {
        for (int i = 0; i < n; i++) {
            repair_pass(kv, ids[i], deadline);
        }
        rounds++;
    }
    int64_t conv_ms = (now_us() - heal_us) / 1000;
    append_line(fd, "converge %lld %d\n", (long long)conv_ms, agree ? 1 : 0);
    printf("nemesis: Merkle roots %s %lld ms after healing (%d repair "
           "rounds)\n",
           agree ? "equal" : "STILL DIFFER", (long long)conv_ms, rounds);
    fflush(stdout);

    /* Read every key back from all N replicas, then each replica's own
     * copy (after the read, whose read repair is part of the system). */
    for (int k = 0; k < nkeys; k++) {
        char key[16];
        snprintf(key, sizeof(key), "k%02d", k);
        kv_siblings_t *s = NULL;
        int rc = KV_EUNAVAIL;
        for (int attempt = 0; attempt < 5 && rc != 0; attempt++) {
            kv_call_t call = KV_CALL_INIT;
            call.r = 3;
            call.timeout_ms = 5000;
            rc = kv_get_siblings(kv, key, strlen(key), &call, &s);
        }
        char *vals = rc == 0 ? values_of(s) : strdup("-");
        append_line(fd, "final %s %d %s\n", key, rc, vals ? vals : "-");
        free(vals);
        kv_siblings_free(s);
        kv_member_t *pl = NULL;
        size_t npl = 0;
        if (kv_preference_list(kv, key, strlen(key), &pl, &npl) != 0) {
            continue;
        }
        for (size_t i = 0; i < npl; i++) {
            char local[65536];
            int lrc = remote_local_values(pl[i].url, key, local, sizeof(local));
            append_line(fd, "local %s %s %d %s\n", pl[i].id, key, lrc, local);
        }
        kv_free(pl);
    }
    fsync(fd);
    close(fd);
    kv_close(kv);
    return 0;
}

/* ------------------------------------------------------ the controller */

typedef struct node {
    char id[8];
    char addr[16];
    char url[64];
    char data[512];
    char snap[512];
    char log[512];
    char fault[512];
    pid_t pid;
    bool paused;
    bool has_snap;
} node_t;

typedef struct nem {
    char dir[256];
    char history[512];
    char daemon[512];
    char self[512];
    char ns[32];
    bool netns;  /* partitions and drops by nftables in our namespace */
    bool in_ns;  /* entered it: remove on exit */
    node_t node[NODES];
    pid_t helper; /* _client or _verify while one runs */
    int hfd;      /* history, O_APPEND */
    uint64_t rng;
    int64_t t0;
    /* the current network faults */
    bool cut[NODES][NODES];
    int drop_pct;
    int delay_ms;
} nem_t;

static nem_t *live; /* for the exit and signal handlers only */

static void say(const nem_t *nm, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%7.1fs] ", (double)(now_us() - nm->t0) / 1e6);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Runs a command (argv) with stdout/stderr to the work dir's cmd.log;
 * bounded. Returns its exit status, or -1. */
static int run_cmd(const nem_t *nm, const char *const *argv)
{
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char path[600];
        snprintf(path, sizeof(path), "%s/cmd.log", nm->dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = now_us() + CMD_BOUND_MS * 1000LL;
    int status;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (now_us() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_ms(5);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int nft_script(const nem_t *nm, const char *script)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/rules.nft", nm->dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fputs(script, f);
    fclose(f);
    const char *argv[] = {"nft", "-f", path, NULL};
    return run_cmd(nm, argv);
}

/* Whether node i died without the nemesis stopping it: then it is
 * recorded as a crash (an anomaly) and restarted by the caller. */
static bool node_crashed(nem_t *nm, int i);

/* Stops a process we started: SIGCONT (it may be paused), `sig`, a
 * bounded wait, then SIGKILL. Returns 1 if SIGKILL was needed. */
static int reap(pid_t *pid, int sig, int bound_ms)
{
    if (*pid <= 0) {
        return 0;
    }
    kill(*pid, SIGCONT);
    kill(*pid, sig);
    int64_t deadline = now_us() + bound_ms * 1000LL;
    while (now_us() < deadline) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return 0;
        }
        sleep_ms(10);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
    return sig != SIGKILL;
}

/* Async-signal-safe part of the cleanup: kill what we started and drop
 * the namespace's name (the namespace itself goes with its last process,
 * which is us). */
static void cleanup_fast(void)
{
    nem_t *nm = live;
    if (nm == NULL) {
        return;
    }
    for (int i = 0; i < NODES; i++) {
        if (nm->node[i].pid > 0) {
            kill(nm->node[i].pid, SIGKILL);
        }
    }
    if (nm->helper > 0) {
        kill(nm->helper, SIGKILL);
    }
    if (nm->in_ns) {
        char path[64] = "/run/netns/";
        strcat(path, nm->ns);
        umount2(path, MNT_DETACH);
        unlink(path);
        nm->in_ns = false;
    }
}

static void on_exit_cleanup(void)
{
    nem_t *nm = live;
    if (nm == NULL) {
        return;
    }
    for (int i = 0; i < NODES; i++) {
        reap(&nm->node[i].pid, SIGKILL, 5000);
    }
    reap(&nm->helper, SIGKILL, 5000);
    cleanup_fast();
    live = NULL;
}

static void on_signal(int sig)
{
    cleanup_fast();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Creates and enters kvnem-PID, brings lo up and installs our nft table.
 * On failure says why and returns -1 (hook-only mode). */
static int netns_setup(nem_t *nm, char *why, size_t whysize)
{
    if (geteuid() != 0) {
        snprintf(why, whysize, "not running as root");
        return -1;
    }
    snprintf(nm->ns, sizeof(nm->ns), "kvnem-%d", (int)getpid());
    const char *add[] = {"ip", "netns", "add", nm->ns, NULL};
    if (run_cmd(nm, add) != 0) {
        snprintf(why, whysize, "`ip netns add` failed (see cmd.log)");
        return -1;
    }
    nm->in_ns = true; /* from here the name is ours to remove */
    char path[64];
    snprintf(path, sizeof(path), "/run/netns/%s", nm->ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        snprintf(why, whysize, "setns(%s): %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    const char *up[] = {"ip", "link", "set", "lo", "up", NULL};
    if (run_cmd(nm, up) != 0) {
        snprintf(why, whysize, "`ip link set lo up` failed in %s", nm->ns);
        return -1;
    }
    if (nft_script(nm, "table inet kvnem {\n"
                       "  chain out { type filter hook output priority 0; "
                       "policy accept; }\n"
                       "}\n") != 0) {
        snprintf(why, whysize, "nft cannot create a table in %s", nm->ns);
        return -1;
    }
    return 0;
}

static void write_fault_file(const nem_t *nm, int i)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", nm->node[i].fault);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return;
    }
    if (nm->delay_ms > 0) {
        fprintf(f, "delay %d\n", nm->delay_ms);
    }
    if (!nm->netns) {
        if (nm->drop_pct > 0) {
            fprintf(f, "drop %d\n", nm->drop_pct);
        }
        for (int j = 0; j < NODES; j++) {
            if (nm->cut[i][j]) {
                fprintf(f, "block //%s:\n", nm->node[j].addr);
            }
        }
    }
    fclose(f);
    rename(tmp, nm->node[i].fault);
}

/* Puts the current network faults in place: nft rules in the namespace
 * (partitions, drops) and every node's fault file (delays; everything in
 * hook-only mode). */
static int apply_network(nem_t *nm)
{
    int rc = 0;
    if (nm->netns) {
        char script[8192];
        size_t used = (size_t)snprintf(script, sizeof(script),
                                       "flush chain inet kvnem out\n");
        for (int i = 0; i < NODES; i++) {
            for (int j = 0; j < NODES; j++) {
                if (nm->cut[i][j]) {
                    used += (size_t)snprintf(
                        script + used, sizeof(script) - used,
                        "add rule inet kvnem out ip saddr %s ip daddr %s "
                        "drop\n",
                        nm->node[i].addr, nm->node[j].addr);
                }
            }
        }
        if (nm->drop_pct > 0) {
            char set[128] = "";
            for (int i = 0; i < NODES; i++) {
                strcat(set, i ? ", " : "");
                strcat(set, nm->node[i].addr);
            }
            snprintf(script + used, sizeof(script) - used,
                     "add rule inet kvnem out ip saddr { %s } ip daddr { %s } "
                     "numgen random mod 100 < %d drop\n",
                     set, set, nm->drop_pct);
        }
        rc = nft_script(nm, script);
    }
    for (int i = 0; i < NODES; i++) {
        write_fault_file(nm, i);
    }
    return rc;
}

static bool log_ready_after(const char *path, long offset)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    fseek(f, offset, SEEK_SET);
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, " ready on ") != NULL;
    }
    fclose(f);
    return found;
}

/* Starts node i and waits (bounded) for its "ready" line. */
static int node_start(nem_t *nm, int i, bool sloppy)
{
    node_t *n = &nm->node[i];
    char join[512] = "";
    for (int j = 0; j < NODES; j++) {
        if (j != i) {
            strcat(join, join[0] ? "," : "");
            strcat(join, nm->node[j].url);
        }
    }
    struct stat st;
    long offset = stat(n->log, &st) == 0 ? (long)st.st_size : 0;
    const char *argv[] = {nm->daemon,
                          "--id", n->id,
                          "--listen", n->url,
                          "--data", n->data,
                          "--join", join,
                          "--n", "3", "--r", "2", "--w", "2",
                          "--log-level", "notice",
                          "--cache-size", "8MiB",
                          "--timeout-ms", "2000",
                          "--gossip-interval-ms", "100",
                          "--aae-interval-ms", "20000",
                          "--sloppy-quorum", sloppy ? "on" : "off",
                          "--fault-file", n->fault,
                          NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            close(devnull);
        }
        /* a node that crashes leaves a core in the work dir (where the
         * kernel's core_pattern allows): the stack is the finding */
        struct rlimit core = {RLIM_INFINITY, RLIM_INFINITY};
        setrlimit(RLIMIT_CORE, &core);
        if (chdir(nm->dir) != 0) {
            _exit(127);
        }
        execv(nm->daemon, (char *const *)argv);
        _exit(127);
    }
    n->pid = pid;
    n->paused = false;
    int64_t deadline = now_us() + READY_BOUND_MS * 1000LL;
    while (now_us() < deadline) {
        if (log_ready_after(n->log, offset)) {
            return 0;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            n->pid = 0;
            break;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "nemesis: node %s did not start (log %s)\n", n->id,
            n->log);
    return -1;
}

/* Polls until every node sees all NODES members up (bounded); says so if
 * they do not, and goes on (the run still means something). */
static void wait_membership(nem_t *nm, int bound_ms)
{
    int64_t deadline = now_us() + bound_ms * 1000LL;
    while (now_us() < deadline) {
        int ok = 0;
        for (int i = 0; i < NODES; i++) {
            int listed;
            ok += remote_up(nm->node[i].url, &listed) == NODES &&
                  listed == NODES;
        }
        if (ok == NODES) {
            return;
        }
        sleep_ms(50);
    }
    say(nm, "warning: membership not converged after %d ms", bound_ms);
}

static int start_all(nem_t *nm, bool sloppy)
{
    for (int i = 0; i < NODES; i++) {
        if (node_start(nm, i, sloppy) != 0) {
            return -1;
        }
    }
    wait_membership(nm, 20000);
    return 0;
}

static bool node_crashed(nem_t *nm, int i)
{
    node_t *n = &nm->node[i];
    int status;
    if (n->pid <= 0 || waitpid(n->pid, &status, WNOHANG) != n->pid) {
        return false;
    }
    n->pid = 0;
    char how[32];
    if (WIFSIGNALED(status)) {
        snprintf(how, sizeof(how), "signal-%d", WTERMSIG(status));
    } else {
        snprintf(how, sizeof(how), "exit-%d", WEXITSTATUS(status));
    }
    say(nm, "ANOMALY: %s died on its own (%s); log %s", n->id, how, n->log);
    append_line(nm->hfd, "crash %s %s\n", n->id, how);
    return true;
}

/* A clean stop; a node that does not stop within 10 s of SIGTERM is
 * killed, and that is reported (kvdistd(1) promises a clean stop). */
static void stop_node(nem_t *nm, int i)
{
    node_t *n = &nm->node[i];
    if (node_crashed(nm, i) || n->pid <= 0) {
        return;
    }
    kill(n->pid, SIGCONT);
    kill(n->pid, SIGTERM);
    int64_t deadline = now_us() + 10000000;
    while (now_us() < deadline) {
        int status;
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
            n->pid = 0;
            if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
                /* a clean stop must end cleanly, too */
                char how[48];
                snprintf(how, sizeof(how), "%s-%d-during-stop",
                         WIFSIGNALED(status) ? "signal" : "exit",
                         WIFSIGNALED(status) ? WTERMSIG(status)
                                             : WEXITSTATUS(status));
                say(nm, "ANOMALY: %s ended with %s; log %s", n->id, how,
                    n->log);
                append_line(nm->hfd, "crash %s %s\n", n->id, how);
            }
            return;
        }
        sleep_ms(10);
    }
    /* Hung in shutdown: keep every thread's stack for the report (gdb,
     * if installed; bounded like every command), then kill it. */
    char pid[16], out[600];
    snprintf(pid, sizeof(pid), "%d", (int)n->pid);
    FMT(out, "%s/%s.stop-hang-%lld.txt", nm->dir, n->id,
        (long long)(now_us() / 1000000));
    const char *gdb[] = {"sh", "-c",
                         "command -v gdb >/dev/null && gdb -p \"$0\" -batch "
                         "-ex 'thread apply all bt' > \"$1\" 2>&1",
                         pid, out, NULL};
    run_cmd(nm, gdb);
    reap(&n->pid, SIGKILL, 5000);
    say(nm, "warning: %s did not stop within 10 s of SIGTERM: killed "
            "(stacks in %s)",
        n->id, out);
    append_line(nm->hfd, "# %s did not stop within 10 s of SIGTERM\n",
                n->id);
}

static void stop_all(nem_t *nm)
{
    for (int i = 0; i < NODES; i++) {
        stop_node(nm, i);
    }
}

static int copy_dir(nem_t *nm, const char *from, const char *to)
{
    const char *rm[] = {"rm", "-rf", to, NULL};
    const char *cp[] = {"cp", "-a", from, to, NULL};
    return run_cmd(nm, rm) == 0 && run_cmd(nm, cp) == 0 ? 0 : -1;
}

static void heal_network(nem_t *nm)
{
    memset(nm->cut, 0, sizeof(nm->cut));
    nm->drop_pct = 0;
    nm->delay_ms = 0;
    apply_network(nm);
}

/* Cuts every link between side a and the rest (in both directions). */
static void cut_sides(nem_t *nm, const bool *side)
{
    for (int i = 0; i < NODES; i++) {
        for (int j = 0; j < NODES; j++) {
            nm->cut[i][j] = side[i] != side[j];
        }
    }
}

enum {
    F_KILL,
    F_PAUSE,
    F_PARTITION,
    F_BRIDGE,
    F_ISOLATE,
    F_DROP,
    F_DELAY,
    F_RESTORE,
    F_KINDS
};

/* One nemesis step: inject, hold, heal. Returns -1 if a node cannot be
 * brought back (the run is then aborted). */
static int nemesis_step(nem_t *nm, bool sloppy, int64_t phase_end)
{
    int kind =
        (int)(rand_next(&nm->rng) % (sloppy ? F_KINDS : F_KINDS - 1));
    int x = (int)(rand_next(&nm->rng) % NODES);
    int hold = rnd_in(&nm->rng, 1000, 4000);
    int64_t left = (phase_end - now_us()) / 1000;
    if (hold > left) {
        hold = left > 200 ? (int)left : 200;
    }
    char detail[128] = "";
    const char *name = "";
    int64_t start = now_us();
    int rc = 0;
    node_t *n = &nm->node[x];
    switch (kind) {
    case F_KILL:
        name = "kill";
        snprintf(detail, sizeof(detail), "%s", n->id);
        reap(&n->pid, SIGKILL, 5000);
        sleep_ms(hold);
        rc = node_start(nm, x, sloppy);
        break;
    case F_PAUSE:
        name = "pause";
        snprintf(detail, sizeof(detail), "%s", n->id);
        kill(n->pid, SIGSTOP);
        sleep_ms(hold);
        kill(n->pid, SIGCONT);
        break;
    case F_PARTITION: {
        /* majority | minority: two random nodes against three */
        name = "partition";
        bool side[NODES] = {false};
        int y =
            (x + 1 + (int)(rand_next(&nm->rng) % (NODES - 1))) % NODES;
        side[x] = side[y] = true;
        snprintf(detail, sizeof(detail), "%s,%s|rest", n->id,
                 nm->node[y].id);
        cut_sides(nm, side);
        apply_network(nm);
        sleep_ms(hold);
        heal_network(nm);
        break;
    }
    case F_BRIDGE: {
        /* x sees everyone; the others split 2|2 and only meet through x */
        name = "bridge";
        int k = 0;
        memset(nm->cut, 0, sizeof(nm->cut));
        int others[NODES - 1];
        for (int i = 0; i < NODES; i++) {
            if (i != x) {
                others[k++] = i;
            }
        }
        for (int a = 0; a < 2; a++) {
            for (int b = 2; b < 4; b++) {
                nm->cut[others[a]][others[b]] = true;
                nm->cut[others[b]][others[a]] = true;
            }
        }
        snprintf(detail, sizeof(detail), "%s,%s|%s|%s,%s",
                 nm->node[others[0]].id, nm->node[others[1]].id, n->id,
                 nm->node[others[2]].id, nm->node[others[3]].id);
        apply_network(nm);
        sleep_ms(hold);
        heal_network(nm);
        break;
    }
    case F_ISOLATE: {
        name = "isolate";
        bool side[NODES] = {false};
        side[x] = true;
        snprintf(detail, sizeof(detail), "%s", n->id);
        cut_sides(nm, side);
        apply_network(nm);
        sleep_ms(hold);
        heal_network(nm);
        break;
    }
    case F_DROP:
        name = "drop";
        nm->drop_pct = rnd_in(&nm->rng, 10, 50);
        snprintf(detail, sizeof(detail), "%d%%", nm->drop_pct);
        apply_network(nm);
        sleep_ms(hold);
        heal_network(nm);
        break;
    case F_DELAY:
        name = "delay";
        nm->delay_ms = rnd_in(&nm->rng, 20, 300);
        snprintf(detail, sizeof(detail), "%dms", nm->delay_ms);
        apply_network(nm);
        sleep_ms(hold);
        heal_network(nm);
        break;
    case F_RESTORE:
        /* the first time: a clean stop and a copy of the data dir; the
         * next time: a clean stop and that older copy put back (half the
         * time the step picks a node that has a copy) */
        if (rand_next(&nm->rng) % 2) {
            for (int i = 0; i < NODES; i++) {
                if (nm->node[i].has_snap) {
                    x = i;
                    n = &nm->node[i];
                    break;
                }
            }
        }
        stop_node(nm, x);
        if (!n->has_snap) {
            name = "snapshot";
            rc = copy_dir(nm, n->data, n->snap);
            n->has_snap = rc == 0;
        } else {
            name = "restore-old-copy";
            rc = copy_dir(nm, n->snap, n->data);
            n->has_snap = false;
        }
        snprintf(detail, sizeof(detail), "%s", n->id);
        if (rc == 0) {
            rc = node_start(nm, x, sloppy);
        }
        break;
    }
    int64_t end = now_us();
    append_line(nm->hfd, "fault %s %lld %lld %s\n", name, (long long)start,
                (long long)end, detail[0] ? detail : "-");
    say(nm, "%-16s %-18s %.1f s", name, detail, (double)(end - start) / 1e6);
    return rc;
}

/* Waits (bounded) for the helper to exit; kills it past the bound. */
static int wait_helper(nem_t *nm, int64_t bound_ms)
{
    int64_t deadline = now_us() + bound_ms * 1000;
    int status = 0;
    while (waitpid(nm->helper, &status, WNOHANG) != nm->helper) {
        if (now_us() > deadline) {
            say(nm, "helper %d did not finish in time: killed",
                (int)nm->helper);
            reap(&nm->helper, SIGKILL, 5000);
            return -1;
        }
        sleep_ms(20);
    }
    nm->helper = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static pid_t spawn_helper(nem_t *nm, const char *const *argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        execv(nm->self, (char *const *)argv);
        _exit(127);
    }
    nm->helper = pid > 0 ? pid : 0;
    return pid;
}

static char *join_list(const nem_t *nm)
{
    static char join[512];
    join[0] = '\0';
    for (int j = 0; j < NODES; j++) {
        strcat(join, j ? "," : "");
        strcat(join, nm->node[j].url);
    }
    return join;
}

/* One phase: nodes up with the phase's quorum mode, the workload in a
 * helper, the nemesis here, then everything healed. */
static int run_phase(nem_t *nm, bool sloppy, int64_t dur_ms, int clients,
                     int nkeys, uint64_t seed, size_t *steps)
{
    const char *phase = sloppy ? "sloppy" : "strict";
    say(nm, "phase %s: %lld s, %d clients, %d keys", phase,
        (long long)dur_ms / 1000, clients, nkeys);
    if (start_all(nm, sloppy) != 0) {
        return -1;
    }
    char dur[32], ncl[16], sd[32], nk[16];
    snprintf(dur, sizeof(dur), "%lld", (long long)dur_ms);
    snprintf(ncl, sizeof(ncl), "%d", clients);
    snprintf(sd, sizeof(sd), "%llu", (unsigned long long)seed + sloppy);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    const char *argv[] = {nm->self, "_client", nm->history, phase, dur,
                          ncl,      sd,        nk,          join_list(nm),
                          NULL};
    if (spawn_helper(nm, argv) <= 0) {
        return -1;
    }
    int64_t phase_end = now_us() + dur_ms * 1000;
    int rc = 0;
    /* let the clients start before the first fault */
    sleep_ms(1000);
    while (rc == 0 && now_us() + 700000 < phase_end) {
        for (int i = 0; i < NODES && rc == 0; i++) {
            if (node_crashed(nm, i)) {
                rc = node_start(nm, i, sloppy);
            }
        }
        rc = rc != 0 ? rc : nemesis_step(nm, sloppy, phase_end);
        (*steps)++;
        int64_t left = (phase_end - now_us()) / 1000;
        int gap = rnd_in(&nm->rng, 300, 1500);
        sleep_ms(left < gap ? (left > 0 ? (int)left : 0) : gap);
    }
    heal_network(nm);
    for (int i = 0; i < NODES; i++) {
        if (nm->node[i].pid > 0) {
            kill(nm->node[i].pid, SIGCONT);
        }
    }
    int crc = wait_helper(nm, dur_ms + 60000);
    if (rc != 0 || crc != 0) {
        say(nm, "phase %s failed (nemesis %d, clients %d)", phase, rc, crc);
        return -1;
    }
    stop_all(nm);
    return 0;
}

static int self_path(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0) {
        return -1;
    }
    out[n] = '\0';
    return 0;
}

static int check_main(const char *path, hist_report_t *rep)
{
    char err[512];
    hist_t *h = hist_load(path, err, sizeof(err));
    if (h == NULL) {
        fprintf(stderr, "nemesis: %s\n", err);
        return 2;
    }
    hist_check(h, stdout, 50, rep);
    hist_free(h);
    hist_print_report(rep, stdout);
    return rep->total_anomalies ? 1 : 0;
}

static long env_or(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static int run_main(int argc, char **argv)
{
    static nem_t nmem;
    nem_t *nm = &nmem;
    long duration = env_or("NEMESIS_DURATION", 60);
    uint64_t seed = (uint64_t)env_or("NEMESIS_SEED", 0);
    int clients = (int)env_or("NEMESIS_CLIENTS", 4);
    int nkeys = (int)env_or("NEMESIS_KEYS", 12);
    bool keep = false;
    bool hook_only = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
            duration = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            clients = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            nkeys = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--keep") == 0) {
            keep = true;
        } else if (strcmp(argv[i], "--hook-only") == 0) {
            hook_only = true;
        } else {
            fprintf(stderr, "nemesis: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (duration < 10 || clients < 1 || clients > MAX_CLIENTS || nkeys < 1 ||
        nkeys > 100) {
        fprintf(stderr, "nemesis: duration >= 10 s, 1..%d clients, 1..100 "
                        "keys\n",
                MAX_CLIENTS);
        return 2;
    }
    if (seed == 0) {
        seed = (uint64_t)time(NULL);
    }
    nm->rng = seed;
    nm->t0 = now_us();
    const char *tmp = getenv("TMPDIR");
    snprintf(nm->dir, sizeof(nm->dir), "%s/kvnem-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(nm->dir) == NULL || self_path(nm->self, sizeof(nm->self))) {
        fprintf(stderr, "nemesis: cannot make a work dir\n");
        return 2;
    }
    const char *build = getenv("KVDIST_BUILD");
    if (build && *build) {
        FMT(nm->daemon, "%s/examples/kvdistd", build);
    } else {
        char d[512];
        FMT(d, "%s", nm->self);
        char *slash = strrchr(d, '/');
        if (slash) {
            *slash = '\0';
        }
        FMT(nm->daemon, "%s/../examples/kvdistd", d);
    }
    /* absolute paths: nodes run with the work dir as their cwd (cores) */
    char abs[PATH_MAX];
    if (access(nm->daemon, X_OK) != 0 || realpath(nm->daemon, abs) == NULL) {
        fprintf(stderr, "nemesis: no daemon at %s\n", nm->daemon);
        return 2;
    }
    FMT(nm->daemon, "%s", abs);
    if (realpath(nm->dir, abs) == NULL) {
        return 2;
    }
    FMT(nm->dir, "%s", abs);
    FMT(nm->history, "%s/history.txt", nm->dir);
    nm->hfd = open(nm->history, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (nm->hfd < 0) {
        return 2;
    }
    live = nm;
    atexit(on_exit_cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    /* respect nohup: a run started with SIGHUP ignored keeps ignoring it */
    if (signal(SIGHUP, on_signal) == SIG_IGN) {
        signal(SIGHUP, SIG_IGN);
    }
    signal(SIGPIPE, SIG_IGN);

    char why[256] = "";
    if (hook_only) {
        snprintf(why, sizeof(why), "--hook-only given");
    } else {
        nm->netns = netns_setup(nm, why, sizeof(why)) == 0;
    }
    printf("nemesis: seed %llu, %ld s, %d clients, %d keys, work dir %s\n",
           (unsigned long long)seed, duration, clients, nkeys, nm->dir);
    if (nm->netns) {
        printf("nemesis: network namespace %s, nodes on 127.0.0.11-15, "
               "partitions and drops by nftables\n",
               nm->ns);
        const char *netem[] = {"tc", "qdisc", "add", "dev", "lo", "root",
                               "netem", "delay", "1ms", NULL};
        if (run_cmd(nm, netem) == 0) {
            const char *del[] = {"tc", "qdisc", "del", "dev", "lo", "root",
                                 NULL};
            run_cmd(nm, del);
            printf("nemesis: tc netem works here, but delays use the fault "
                   "hook (--fault-file) so both modes inject the same "
                   "way\n");
        } else {
            printf("nemesis: tc netem unavailable (no sch_netem): delays use "
                   "the fault hook on peer links (--fault-file)\n");
        }
    } else {
        printf("nemesis: HOOK-ONLY MODE: no network namespace (%s); "
               "partitions, drops and delays use the fault hook on peer "
               "links (--fault-file), nodes on 127.0.0.11-15 of the "
               "host's loopback\n",
               why);
    }
    fflush(stdout);
    append_line(nm->hfd, "# nemesis history: seed %llu, %ld s, %d clients, "
                         "%s mode\n",
                (unsigned long long)seed, duration, clients,
                nm->netns ? "netns" : "hook-only");
    for (int i = 0; i < NODES; i++) {
        node_t *n = &nm->node[i];
        FMT(n->id, "n%d", i + 1);
        FMT(n->addr, "127.0.0.%d", 11 + i);
        /* a port free on that address at run time */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        inet_pton(AF_INET, n->addr, &sa.sin_addr);
        socklen_t len = sizeof(sa);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
            fprintf(stderr, "nemesis: cannot bind %s\n", n->addr);
            return 2;
        }
        close(fd);
        char host[sizeof(n->addr)];
        memcpy(host, n->addr, sizeof(host));
        FMT(n->url, "tcp://%s:%d", host, ntohs(sa.sin_port));
        /* local copies: the fields share one object with the targets */
        char dir[sizeof(nm->dir)], id[sizeof(n->id)];
        memcpy(dir, nm->dir, sizeof(dir));
        memcpy(id, n->id, sizeof(id));
        FMT(n->data, "%s/%s", dir, id);
        FMT(n->snap, "%s/%s.old", dir, id);
        FMT(n->log, "%s/%s.log", dir, id);
        FMT(n->fault, "%s/%s.fault", dir, id);
    }
    heal_network(nm);

    int64_t phase_ms = duration * 1000 / 2;
    size_t steps = 0;
    int rc = run_phase(nm, false, phase_ms, clients, nkeys, seed, &steps);
    if (rc == 0) {
        rc = run_phase(nm, true, phase_ms, clients, nkeys, seed, &steps);
    }
    if (rc != 0) {
        fprintf(stderr, "nemesis: run aborted; work dir kept: %s\n", nm->dir);
        return 2;
    }
    /* Heal everything, restart every node, let anti-entropy settle, and
     * read everything back. */
    heal_network(nm);
    int64_t heal = now_us();
    say(nm, "healed; restarting all nodes for the read-back");
    if (start_all(nm, true) != 0) {
        fprintf(stderr, "nemesis: restart failed; work dir kept: %s\n",
                nm->dir);
        return 2;
    }
    char nk[16], bound[16], healbuf[32];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    snprintf(bound, sizeof(bound), "%d", duration >= 600 ? 180000 : 90000);
    snprintf(healbuf, sizeof(healbuf), "%lld", (long long)heal);
    char ids[NODES][128];
    const char *vargv[8 + NODES] = {nm->self, "_verify", nm->history, nk,
                                    bound,    healbuf,   join_list(nm)};
    for (int i = 0; i < NODES; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%s=%s", nm->node[i].id,
                 nm->node[i].url);
        vargv[7 + i] = ids[i];
    }
    vargv[7 + NODES] = NULL;
    if (spawn_helper(nm, vargv) <= 0 || wait_helper(nm, 300000) != 0) {
        fprintf(stderr, "nemesis: read-back failed; work dir kept: %s\n",
                nm->dir);
        return 2;
    }
    stop_all(nm);
    say(nm, "checking %s", nm->history);
    hist_report_t rep;
    rc = check_main(nm->history, &rep);
    printf("nemesis: %zu nemesis steps; seed %llu; reproduce with "
           "NEMESIS_SEED=%llu NEMESIS_DURATION=%ld\n",
           steps, (unsigned long long)seed, (unsigned long long)seed,
           duration);
    if (rc != 0 || keep) {
        printf("nemesis: work dir kept: %s\n", nm->dir);
    } else {
        const char *rm[] = {"rm", "-rf", nm->dir, NULL};
        run_cmd(nm, rm);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        return run_main(argc, argv);
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        hist_report_t rep;
        return check_main(argv[2], &rep);
    }
    if (argc >= 2 && strcmp(argv[1], "_client") == 0) {
        return client_main(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "_verify") == 0) {
        return verify_main(argc, argv);
    }
    fprintf(stderr, "usage: nemesis run [--duration S] [--seed N] "
                    "[--clients K] [--keys K] [--keep] [--hook-only]\n"
                    "       nemesis check HISTORY\n"
                    "See kvdist-nemesis(1).\n");
    return 2;
}
