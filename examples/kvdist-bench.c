/*
 * kvdist-bench - YCSB-style load generator for libkvdist and its peers.
 *
 * One tool, several targets measured the same way:
 *   raw       RocksDB's C API directly, with the options libkvdist's store
 *             uses (lib/store.c): the local limit
 *   embedded  a one-node libkvdist store in this process (kv_put/kv_get)
 *   cluster   a role=client handle against a cluster: 3 kvdistd started on
 *             127.0.0.1 (ports chosen at run time, stopped by PID), or the
 *             nodes given with --urls
 *   resp      the Redis protocol: kvdistd --resp (started as for cluster)
 *             or any Redis server given with --addr (--wait N sends
 *             WAIT N 0 after every SET, as a Redis replica setup needs)
 *   http      libkvdist's HTTP API (/v1/data/{key}) at --url, HTTP/1.1
 *             keep-alive, one connection per outstanding request
 * --password (or --password-file) is sent to a node that requires one
 * (auth_password): AUTH on each RESP connection, Authorization: Bearer on
 * each HTTP request; the cluster resp starts requires it then too.
 * Workloads A (50% read, 50% update), B (95/5), C (read only), W (write
 * only), D (95% read of recent keys, 5% insert); uniform or zipfian key
 * choice; a load phase writes every key first (not measured).
 *
 * The public API is synchronous, so concurrency is threads: --threads for
 * the in-process targets, --outstanding (one thread and one request each)
 * for the others. Latency goes into log-bucketed histograms (32 buckets per
 * power of two: within 3%), one per thread and operation, merged at the
 * end. --suite runs raw, embedded and cluster back to back and prints a
 * markdown table with ratios to raw (make bench).
 *
 * Written against the public header, plus rocksdb/c.h for the raw target.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "kvdist.h"

/* ---- small helpers ---- */

static void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void stop_cluster(void);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvdist-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    stop_cluster();
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv64(uint64_t v)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= (v >> (i * 8)) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- latency histogram ---- */

#define H_SUB 32 /* buckets per power of two */
#define H_LINEAR 64
#define H_BUCKETS (H_LINEAR + 40 * H_SUB)

typedef struct hist {
    uint64_t n;
    uint64_t max;
    double sum;
    uint64_t b[H_BUCKETS];
} hist_t;

static int hist_index(uint64_t v)
{
    if (v < H_LINEAR) {
        return (int)v;
    }
    int e = 63 - __builtin_clzll(v); /* >= 6 */
    int sub = (int)((v >> (e - 5)) & (H_SUB - 1));
    int i = H_LINEAR + (e - 6) * H_SUB + sub;
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

/* The largest value a bucket holds (what a percentile reports). */
static uint64_t hist_upper(int i)
{
    if (i < H_LINEAR) {
        return (uint64_t)i;
    }
    int e = (i - H_LINEAR) / H_SUB + 6;
    int sub = (i - H_LINEAR) % H_SUB;
    return (((uint64_t)(H_SUB + sub + 1)) << (e - 5)) - 1;
}

static void hist_add(hist_t *h, uint64_t ns)
{
    h->n++;
    h->sum += (double)ns;
    if (ns > h->max) {
        h->max = ns;
    }
    h->b[hist_index(ns)]++;
}

static void hist_merge(hist_t *to, const hist_t *from)
{
    to->n += from->n;
    to->sum += from->sum;
    if (from->max > to->max) {
        to->max = from->max;
    }
    for (int i = 0; i < H_BUCKETS; i++) {
        to->b[i] += from->b[i];
    }
}

static double hist_pct_us(const hist_t *h, double p)
{
    if (h->n == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->n);
    if (want == 0) {
        want = 1;
    }
    uint64_t seen = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return (double)(u < h->max ? u : h->max) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---- configuration ---- */

enum op { OP_READ, OP_UPDATE, OP_INSERT, OP__COUNT };
static const char *const op_names[OP__COUNT] = {"read", "update", "insert"};

/* Error slots: the KV_E* codes, then what only remote targets see. */
#define ERR_NET 18   /* connection refused, reset, short read */
#define ERR_REPLY 19 /* a reply the protocol does not allow */
#define ERR__COUNT 20

static const char *err_name(int i)
{
    return i == ERR_NET     ? "network error"
           : i == ERR_REPLY ? "unexpected reply"
                            : kv_strerror(i);
}

typedef struct config {
    const char *target;
    char workload;
    bool zipfian;
    uint64_t keys;
    size_t value_size;
    int threads;
    int outstanding;
    double duration_s;
    uint64_t ops;
    bool load;
    const char *data_dir;
    const char *urls;  /* cluster: given nodes */
    const char *addr;  /* resp: given server */
    const char *url;   /* http */
    const char *password; /* resp, http: the node's auth_password */
    int wait_replicas; /* resp: WAIT n 0 after each SET */
    double rate;       /* ops/s for all workers together, 0: flat out */
    int nodes;
    const char *n, *r, *w;
    const char *sync;
    const char *cache_size;
    const char *kvdistd;
    bool json;
    bool quiet;
    bool suite;
} config_t;

static config_t cfg = {
    .target = "embedded",
    .workload = 'A',
    .keys = 100000,
    .value_size = 1024,
    .threads = 2,
    .outstanding = 64,
    .duration_s = 20,
    .load = true,
    .nodes = 3,
    .n = "3",
    .r = "2",
    .w = "2",
    .sync = "wal",
    .cache_size = "64M",
};

/* ---- targets ---- */

typedef struct target {
    const char *name;
    bool remote; /* concurrency from --outstanding, not --threads */
    void (*open)(void);
    void *(*thread_open)(void);
    /* 0, KV_ENOTFOUND (get only), a KV_E* code, ERR_NET or ERR_REPLY */
    int (*put)(void *t, const char *k, size_t kl, const void *v, size_t vl);
    int (*get)(void *t, const char *k, size_t kl);
    void (*thread_close)(void *t);
    void (*close)(void);
} target_t;

static char *tmp_dir; /* what this run created: removed at the end */

static void rmtree(const char *path)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) {
        waitpid(pid, NULL, 0);
    }
}

static const char *data_path(const char *leaf, char *buf, size_t size)
{
    if (cfg.data_dir != NULL) {
        mkdir(cfg.data_dir, 0755);
        snprintf(buf, size, "%s/%s", cfg.data_dir, leaf);
    } else {
        if (tmp_dir == NULL) {
            char tmpl[] = "/tmp/kvdist-bench.XXXXXX";
            const char *base = getenv("TMPDIR");
            char path[512];
            snprintf(path, sizeof(path), "%s/kvdist-bench.XXXXXX",
                     base && *base ? base : "/tmp");
            char *d = mkdtemp(path);
            if (d == NULL) {
                d = mkdtemp(tmpl);
            }
            if (d == NULL) {
                die("cannot create a temporary directory: %s", strerror(errno));
            }
            tmp_dir = strdup(d);
        }
        snprintf(buf, size, "%s/%s", tmp_dir, leaf);
    }
    return buf;
}

/* raw: RocksDB with lib/store.c's options (default column family). */
static struct {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
} raw;

static uint64_t parse_size(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K') {
        mul = 1u << 10;
    } else if (*end == 'm' || *end == 'M') {
        mul = 1u << 20;
    } else if (*end == 'g' || *end == 'G') {
        mul = 1u << 30;
    }
    return (uint64_t)(v * (double)mul);
}

static void raw_open(void)
{
    char path[600];
    data_path("raw", path, sizeof(path));
    raw.cache = rocksdb_cache_create_lru(parse_size(cfg.cache_size));
    raw.table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(raw.table, raw.cache);
    rocksdb_block_based_options_set_filter_policy(
        raw.table, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(raw.table, 1);
    /* store.c's partitioned index and filters. */
    rocksdb_block_based_options_set_index_type(
        raw.table, rocksdb_block_based_table_index_type_two_level_index_search);
    rocksdb_block_based_options_set_partition_filters(raw.table, 1);
    rocksdb_block_based_options_set_metadata_block_size(raw.table, 4096);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
        raw.table, 1);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(raw.table, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(
        raw.table, 1);
    raw.opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(raw.opts, 1);
    rocksdb_options_increase_parallelism(raw.opts, 2);
    rocksdb_options_set_info_log_level(raw.opts, 2);
    rocksdb_options_set_keep_log_file_num(raw.opts, 2);
    rocksdb_options_set_block_based_table_factory(raw.opts, raw.table);
    rocksdb_options_set_write_buffer_size(raw.opts, 32u << 20);
    rocksdb_options_set_max_write_buffer_number(raw.opts, 2);
    /* store.c's memtable bloom filter on the data column family. */
    rocksdb_options_set_memtable_whole_key_filtering(raw.opts, 1);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(raw.opts, 0.1);
    raw.wopts = rocksdb_writeoptions_create();
    if (strcmp(cfg.sync, "none") == 0) {
        rocksdb_writeoptions_disable_WAL(raw.wopts, 1);
    } else if (strcmp(cfg.sync, "fsync") == 0) {
        rocksdb_writeoptions_set_sync(raw.wopts, 1);
    }
    raw.ropts = rocksdb_readoptions_create();
    char *err = NULL;
    raw.db = rocksdb_open(raw.opts, path, &err);
    if (err != NULL) {
        die("raw: rocksdb_open %s: %s", path, err);
    }
}

static void *no_thread(void)
{
    return NULL;
}

static void no_thread_close(void *t)
{
    (void)t;
}

static int raw_put(void *t, const char *k, size_t kl, const void *v, size_t vl)
{
    (void)t;
    char *err = NULL;
    rocksdb_put(raw.db, raw.wopts, k, kl, v, vl, &err);
    if (err != NULL) {
        rocksdb_free(err);
        return KV_EIO;
    }
    return 0;
}

static int raw_get(void *t, const char *k, size_t kl)
{
    (void)t;
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(raw.db, raw.ropts, k, kl, &len, &err);
    if (err != NULL) {
        rocksdb_free(err);
        return KV_EIO;
    }
    if (v == NULL) {
        return KV_ENOTFOUND;
    }
    rocksdb_free(v);
    return 0;
}

static void raw_close(void)
{
    rocksdb_close(raw.db);
    rocksdb_writeoptions_destroy(raw.wopts);
    rocksdb_readoptions_destroy(raw.ropts);
    rocksdb_options_destroy(raw.opts);
    rocksdb_block_based_options_destroy(raw.table);
    rocksdb_cache_destroy(raw.cache);
}

/* embedded and cluster: one kv_t shared by every thread. */
static kv_t *kv;

static void set_opt(kv_options_t *o, const char *name, const char *value)
{
    if (kv_options_set(o, name, value) != 0) {
        die("option %s=%s: %s", name, value, kv_options_errmsg(o));
    }
}

static void embedded_open(void)
{
    char path[600];
    kv_options_t *o = kv_options_create();
    set_opt(o, "data_dir", data_path("embedded", path, sizeof(path)));
    set_opt(o, "sync", cfg.sync);
    set_opt(o, "cache_size", cfg.cache_size);
    int rc = kv_open(o, &kv);
    kv_options_destroy(o);
    if (rc != 0) {
        die("kv_open: %s", kv_strerror(rc));
    }
}

static int kv_target_put(void *t, const char *k, size_t kl, const void *v,
                         size_t vl)
{
    (void)t;
    return kv_put(kv, k, kl, v, vl);
}

static int kv_target_get(void *t, const char *k, size_t kl)
{
    (void)t;
    void *v = NULL;
    size_t vl = 0;
    int rc = kv_get(kv, k, kl, &v, &vl);
    kv_free(v);
    return rc;
}

static void kv_target_close(void)
{
    kv_close(kv);
    kv = NULL;
}

/* The cluster this run started: stopped by PID, also when it dies. */
#define MAX_NODES 9
static struct {
    int count;
    pid_t pid[MAX_NODES];
    int port[MAX_NODES];
    int resp_port[MAX_NODES];
    char log[MAX_NODES][700];
    char urls[MAX_NODES * 40];
} cl;

static void stop_cluster(void)
{
    for (int i = 0; i < cl.count; i++) {
        if (cl.pid[i] > 0) {
            kill(cl.pid[i], SIGTERM);
        }
    }
    for (int i = 0; i < cl.count; i++) {
        if (cl.pid[i] <= 0) {
            continue;
        }
        int64_t deadline = now_ns() + 10000000000LL;
        while (now_ns() < deadline && waitpid(cl.pid[i], NULL, WNOHANG) == 0) {
            sleep_ms(10);
        }
        if (waitpid(cl.pid[i], NULL, WNOHANG) == 0) {
            kill(cl.pid[i], SIGKILL);
            waitpid(cl.pid[i], NULL, 0);
        }
        cl.pid[i] = 0;
    }
    cl.count = 0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        die("cannot pick a free port: %s", strerror(errno));
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static bool file_contains(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, what) != NULL;
    }
    fclose(f);
    return found;
}

static const char *kvdistd_path(void)
{
    static char path[4096];
    if (cfg.kvdistd != NULL) {
        return cfg.kvdistd;
    }
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
    if (n > 0) {
        path[n] = '\0';
        char *slash = strrchr(path, '/');
        if (slash != NULL) {
            strcpy(slash + 1, "kvdistd");
            if (access(path, X_OK) == 0) {
                return path;
            }
        }
    }
    return "kvdistd"; /* from PATH */
}

static void start_cluster(bool with_resp)
{
    if (cfg.nodes < 1 || cfg.nodes > MAX_NODES) {
        die("--nodes must be 1 to %d", MAX_NODES);
    }
    const char *daemon = kvdistd_path();
    cl.urls[0] = '\0';
    for (int i = 0; i < cfg.nodes; i++) {
        char id[16], data[600], listen[64], resp[64], join[64];
        snprintf(id, sizeof(id), "n%d", i + 1);
        data_path(id, data, sizeof(data));
        snprintf(cl.log[i], sizeof(cl.log[i]), "%s.log", data);
        for (int attempt = 0;; attempt++) {
            cl.port[i] = free_port();
            cl.resp_port[i] = with_resp ? free_port() : 0;
            snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", cl.port[i]);
            snprintf(resp, sizeof(resp), "127.0.0.1:%d", cl.resp_port[i]);
            snprintf(join, sizeof(join), "tcp://127.0.0.1:%d", cl.port[0]);
            const char *argv[32];
            int a = 0;
            argv[a++] = daemon;
            argv[a++] = "--id";
            argv[a++] = id;
            argv[a++] = "--data";
            argv[a++] = data;
            argv[a++] = "--listen";
            argv[a++] = listen;
            if (i > 0) {
                argv[a++] = "--join";
                argv[a++] = join;
            }
            argv[a++] = "--n";
            argv[a++] = cfg.n;
            argv[a++] = "--r";
            argv[a++] = cfg.r;
            argv[a++] = "--w";
            argv[a++] = cfg.w;
            argv[a++] = "--sync";
            argv[a++] = cfg.sync;
            argv[a++] = "--cache-size";
            argv[a++] = cfg.cache_size;
            if (with_resp) {
                argv[a++] = "--resp";
                argv[a++] = resp;
            }
            char pwfile[600];
            if (with_resp && cfg.password != NULL) {
                /* In a file, as a deployment would give it. */
                data_path("password", pwfile, sizeof(pwfile));
                int fd = open(pwfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                size_t len = strlen(cfg.password);
                if (fd < 0 || write(fd, cfg.password, len) != (ssize_t)len ||
                    close(fd) != 0) {
                    die("%s: %s", pwfile, strerror(errno));
                }
                argv[a++] = "--auth-password-file";
                argv[a++] = pwfile;
            }
            argv[a] = NULL;
            pid_t pid = fork();
            if (pid < 0) {
                die("fork: %s", strerror(errno));
            }
            if (pid == 0) {
                int fd = open(cl.log[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd >= 0) {
                    dup2(fd, 1);
                    dup2(fd, 2);
                    close(fd);
                }
                setpgid(0, 0); /* a ^C on the terminal stops us, we stop it */
                execvp(daemon, (char *const *)argv);
                _exit(127);
            }
            cl.pid[i] = pid;
            cl.count = i + 1;
            int64_t deadline = now_ns() + 15000000000LL;
            bool ready = false;
            bool exited = false;
            while (now_ns() < deadline) {
                if (file_contains(cl.log[i], "ready")) {
                    ready = true;
                    break;
                }
                if (waitpid(pid, NULL, WNOHANG) == pid) {
                    exited = true;
                    cl.pid[i] = 0;
                    break;
                }
                sleep_ms(20);
            }
            if (ready) {
                break;
            }
            if (!exited || attempt == 2 ||
                !file_contains(cl.log[i], "in use")) {
                die("node %s did not start (log %s)", id, cl.log[i]);
            }
        }
        size_t off = strlen(cl.urls);
        snprintf(cl.urls + off, sizeof(cl.urls) - off, "%stcp://127.0.0.1:%d",
                 i ? "," : "", cl.port[i]);
    }
}

static void wait_members(size_t want)
{
    int64_t deadline = now_ns() + 20000000000LL;
    while (now_ns() < deadline) {
        kv_member_t *m = NULL;
        size_t n = 0;
        size_t up = 0;
        if (kv_members(kv, &m, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                up += m[i].status == KV_MEMBER_UP;
            }
            kv_free(m);
        }
        if (up >= want) {
            return;
        }
        sleep_ms(50);
    }
    die("the cluster did not converge to %zu members up", want);
}

static void client_open(const char *urls)
{
    kv_options_t *o = kv_options_create();
    set_opt(o, "role", "client");
    set_opt(o, "join", urls);
    set_opt(o, "n", cfg.n);
    set_opt(o, "r", cfg.r);
    set_opt(o, "w", cfg.w);
    int rc = kv_open(o, &kv);
    kv_options_destroy(o);
    if (rc != 0) {
        die("kv_open (client, join %s): %s", urls, kv_strerror(rc));
    }
}

static void cluster_open(void)
{
    if (cfg.urls != NULL) {
        client_open(cfg.urls);
        return;
    }
    start_cluster(false);
    client_open(cl.urls);
    wait_members((size_t)cfg.nodes);
}

static void cluster_close(void)
{
    kv_target_close();
    stop_cluster();
}

/* ---- socket targets (resp, http): one connection per thread ---- */

typedef struct conn {
    int fd;
    char *in;
    size_t cap;
    size_t len; /* bytes in `in` */
    size_t off; /* consumed */
    char *req;  /* the request being built: reqlen bytes */
    size_t reqcap;
    size_t reqlen;
} conn_t;

static struct sockaddr_storage sock_addr;
static socklen_t sock_addrlen;
static char http_host[300];

static void resolve_addr(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
        die("address %s: want HOST:PORT", hostport);
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {0};
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *ai = NULL;
    int rv = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rv != 0) {
        die("address %s: %s", hostport, gai_strerror(rv));
    }
    memcpy(&sock_addr, ai->ai_addr, ai->ai_addrlen);
    sock_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
}

static void *conn_open(void)
{
    conn_t *c = calloc(1, sizeof(*c));
    c->cap = 1u << 16;
    c->in = malloc(c->cap);
    c->fd = socket(sock_addr.ss_family, SOCK_STREAM, 0);
    if (c->fd < 0 ||
        connect(c->fd, (struct sockaddr *)&sock_addr, sock_addrlen) != 0) {
        die("connect: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

static void conn_close(void *t)
{
    conn_t *c = t;
    close(c->fd);
    free(c->in);
    free(c->req);
    free(c);
}

static void req_put(conn_t *c, const void *p, size_t n)
{
    if (c->reqlen + n > c->reqcap) {
        size_t cap = c->reqcap ? c->reqcap : 4096;
        while (cap < c->reqlen + n) {
            cap *= 2;
        }
        c->req = realloc(c->req, cap);
        c->reqcap = cap;
    }
    memcpy(c->req + c->reqlen, p, n);
    c->reqlen += n;
}

static int conn_send(conn_t *c, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(c->fd, p + off, n - off);
        if (w <= 0) {
            return ERR_NET;
        }
        off += (size_t)w;
    }
    return 0;
}

/* Makes at least n unconsumed bytes available. */
static int conn_fill(conn_t *c, size_t n)
{
    if (c->off > 0 && c->len - c->off < n) {
        memmove(c->in, c->in + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    while (c->len - c->off < n) {
        if (c->len == c->cap) {
            c->cap *= 2;
            c->in = realloc(c->in, c->cap);
        }
        ssize_t r = read(c->fd, c->in + c->len, c->cap - c->len);
        if (r <= 0) {
            return ERR_NET;
        }
        c->len += (size_t)r;
    }
    return 0;
}

/* A CRLF-terminated line at the read position: its length (without CRLF),
 * or -1 on a network error. */
static ssize_t conn_line(conn_t *c, const char **line)
{
    size_t scanned = 0;
    for (;;) {
        char *p = c->in + c->off;
        size_t avail = c->len - c->off;
        for (size_t i = scanned; i + 1 < avail; i++) {
            if (p[i] == '\r' && p[i + 1] == '\n') {
                *line = p;
                c->off += i + 2;
                return (ssize_t)i;
            }
        }
        scanned = avail ? avail - 1 : 0;
        if (conn_fill(c, avail + 1) != 0) {
            return -1;
        }
    }
}

/* resp: SET k v [then WAIT n 0], GET k. */
static void resp_open(void)
{
    if (cfg.addr != NULL) {
        resolve_addr(cfg.addr);
        return;
    }
    start_cluster(true);
    /* Membership must be complete before the first request: wait through
     * a client handle, then drive node 1's RESP port. */
    client_open(cl.urls);
    wait_members((size_t)cfg.nodes);
    kv_target_close();
    char a[64];
    snprintf(a, sizeof(a), "127.0.0.1:%d", cl.resp_port[0]);
    resolve_addr(a);
}

static void resp_close(void)
{
    stop_cluster();
}

static void resp_bulk(conn_t *c, const void *p, size_t n)
{
    char hdr[32];
    int h = snprintf(hdr, sizeof(hdr), "$%zu\r\n", n);
    req_put(c, hdr, (size_t)h);
    req_put(c, p, n);
    req_put(c, "\r\n", 2);
}

static int resp_reply(conn_t *c);

/* A connection that gives the password first, if there is one. */
static void *resp_conn_open(void)
{
    conn_t *c = conn_open();
    if (cfg.password == NULL) {
        return c;
    }
    c->reqlen = 0;
    req_put(c, "*2\r\n$4\r\nAUTH\r\n", 14);
    resp_bulk(c, cfg.password, strlen(cfg.password));
    if (conn_send(c, c->req, c->reqlen) != 0 || resp_reply(c) != 0) {
        die("AUTH with --password was refused (or the connection failed)");
    }
    return c;
}

/* Reads one reply: 0 for +/: replies and bulk strings, KV_ENOTFOUND for a
 * nil bulk, ERR_REPLY for -ERR and anything else. */
static int resp_reply(conn_t *c)
{
    const char *line = NULL;
    ssize_t n = conn_line(c, &line);
    if (n < 1) {
        return ERR_NET;
    }
    switch (line[0]) {
    case '+':
    case ':':
        return 0;
    case '-':
        if (strstr(line, "quorum") != NULL) {
            return KV_EQUORUM;
        }
        return ERR_REPLY;
    case '$': {
        long len = strtol(line + 1, NULL, 10);
        if (len < 0) {
            return KV_ENOTFOUND;
        }
        if (conn_fill(c, (size_t)len + 2) != 0) {
            return ERR_NET;
        }
        c->off += (size_t)len + 2;
        return 0;
    }
    default:
        return ERR_REPLY;
    }
}

static int resp_put(void *t, const char *k, size_t kl, const void *v, size_t vl)
{
    conn_t *c = t;
    c->reqlen = 0;
    req_put(c, "*3\r\n$3\r\nSET\r\n", 13);
    resp_bulk(c, k, kl);
    resp_bulk(c, v, vl);
    if (cfg.wait_replicas > 0) {
        char w[64];
        int n = snprintf(w, sizeof(w),
                         "*3\r\n$4\r\nWAIT\r\n$%d\r\n%d\r\n$1\r\n0\r\n",
                         cfg.wait_replicas >= 10 ? 2 : 1, cfg.wait_replicas);
        req_put(c, w, (size_t)n);
    }
    int rc = conn_send(c, c->req, c->reqlen);
    if (rc == 0) {
        rc = resp_reply(c);
    }
    if (rc == 0 && cfg.wait_replicas > 0) {
        /* WAIT answers how many replicas acknowledged, 0 on timeout
         * (never with a 0 timeout: it blocks until enough did). */
        rc = resp_reply(c);
    }
    return rc;
}

static int resp_get(void *t, const char *k, size_t kl)
{
    conn_t *c = t;
    c->reqlen = 0;
    req_put(c, "*2\r\n$3\r\nGET\r\n", 13);
    resp_bulk(c, k, kl);
    int rc = conn_send(c, c->req, c->reqlen);
    return rc == 0 ? resp_reply(c) : rc;
}

/* http: PUT/GET /v1/data/{percent-encoded key}. */
static void http_open(void)
{
    if (cfg.url == NULL || strncmp(cfg.url, "http://", 7) != 0) {
        die("--target http needs --url http://HOST:PORT");
    }
    snprintf(http_host, sizeof(http_host), "%s", cfg.url + 7);
    char *slash = strchr(http_host, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    resolve_addr(http_host);
}

static void no_close(void)
{
}

static void http_path(conn_t *c, const char *method, const char *k, size_t kl)
{
    req_put(c, method, strlen(method));
    req_put(c, " /v1/data/", 10);
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < kl; i++) {
        unsigned char ch = (unsigned char)k[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
            ch == '~') {
            req_put(c, &k[i], 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            req_put(c, e, 3);
        }
    }
    char h[400];
    int n = snprintf(h, sizeof(h), " HTTP/1.1\r\nHost: %s\r\n", http_host);
    req_put(c, h, (size_t)n);
    if (cfg.password != NULL) {
        req_put(c, "Authorization: Bearer ", 22);
        req_put(c, cfg.password, strlen(cfg.password));
        req_put(c, "\r\n", 2);
    }
}

/* Reads a response: its status, the body skipped. */
static int http_response(conn_t *c, int *status)
{
    const char *line = NULL;
    ssize_t n = conn_line(c, &line);
    if (n < 12 || strncmp(line, "HTTP/1.", 7) != 0) {
        return n < 0 ? ERR_NET : ERR_REPLY;
    }
    *status = atoi(line + 9);
    long clen = 0;
    bool chunked = false;
    for (;;) {
        n = conn_line(c, &line);
        if (n < 0) {
            return ERR_NET;
        }
        if (n == 0) {
            break;
        }
        if (strncasecmp(line, "content-length:", 15) == 0) {
            clen = strtol(line + 15, NULL, 10);
        } else if (strncasecmp(line, "transfer-encoding:", 18) == 0 &&
                   strstr(line, "chunked") != NULL) {
            chunked = true;
        }
    }
    if (chunked) {
        for (;;) {
            n = conn_line(c, &line);
            if (n < 1) {
                return ERR_NET;
            }
            long sz = strtol(line, NULL, 16);
            if (conn_fill(c, (size_t)sz + 2) != 0) {
                return ERR_NET;
            }
            c->off += (size_t)sz + 2;
            if (sz == 0) {
                break;
            }
        }
    } else if (clen > 0) {
        if (conn_fill(c, (size_t)clen) != 0) {
            return ERR_NET;
        }
        c->off += (size_t)clen;
    }
    return 0;
}

static int http_status_code(int status)
{
    if (status >= 200 && status < 300) {
        return 0;
    }
    switch (status) {
    case 401:
        die("HTTP 401: the node requires a password (--password or "
            "--password-file), or the one given is wrong");
    case 404:
        return KV_ENOTFOUND;
    case 413:
        return KV_ETOOBIG;
    case 503:
        return KV_EUNAVAIL;
    case 504:
        return KV_ETIMEDOUT;
    default:
        return ERR_REPLY;
    }
}

static int http_put(void *t, const char *k, size_t kl, const void *v, size_t vl)
{
    conn_t *c = t;
    c->reqlen = 0;
    http_path(c, "PUT", k, kl);
    char h[96];
    int n = snprintf(h, sizeof(h),
                     "Content-Type: application/octet-stream\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     vl);
    req_put(c, h, (size_t)n);
    req_put(c, v, vl);
    int status = 0;
    int rc = conn_send(c, c->req, c->reqlen);
    if (rc == 0) {
        rc = http_response(c, &status);
    }
    return rc != 0 ? rc : http_status_code(status);
}

static int http_get(void *t, const char *k, size_t kl)
{
    conn_t *c = t;
    c->reqlen = 0;
    http_path(c, "GET", k, kl);
    req_put(c, "\r\n", 2);
    int status = 0;
    int rc = conn_send(c, c->req, c->reqlen);
    if (rc == 0) {
        rc = http_response(c, &status);
    }
    return rc != 0 ? rc : http_status_code(status);
}

static const target_t targets[] = {
    {"raw", false, raw_open, no_thread, raw_put, raw_get, no_thread_close,
     raw_close},
    {"embedded", false, embedded_open, no_thread, kv_target_put, kv_target_get,
     no_thread_close, kv_target_close},
    {"cluster", true, cluster_open, no_thread, kv_target_put, kv_target_get,
     no_thread_close, cluster_close},
    {"resp", true, resp_open, resp_conn_open, resp_put, resp_get, conn_close,
     resp_close},
    {"http", true, http_open, conn_open, http_put, http_get, conn_close,
     no_close},
};

/* ---- key choice ---- */

/* YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record
 * synthetic databases"), theta 0.99, over [0, items). */
typedef struct zipf {
    uint64_t items;
    double theta, alpha, zetan, eta, zeta2;
} zipf_t;

static zipf_t zipf;

static void zipf_init(zipf_t *z, uint64_t items)
{
    z->items = items;
    z->theta = 0.99;
    z->zeta2 = 1.0 + pow(0.5, z->theta);
    double sum = 0;
    for (uint64_t i = 1; i <= items; i++) {
        sum += 1.0 / pow((double)i, z->theta);
    }
    z->zetan = sum;
    z->alpha = 1.0 / (1.0 - z->theta);
    z->eta = (1.0 - pow(2.0 / (double)items, 1.0 - z->theta)) /
             (1.0 - z->zeta2 / z->zetan);
}

static uint64_t zipf_next(const zipf_t *z, uint64_t *rng)
{
    double u = (double)(splitmix(rng) >> 11) / 9007199254740992.0;
    double uz = u * z->zetan;
    if (uz < 1.0) {
        return 0;
    }
    if (uz < z->zeta2) {
        return 1;
    }
    uint64_t v =
        (uint64_t)((double)z->items * pow(z->eta * u - z->eta + 1.0, z->alpha));
    return v < z->items ? v : z->items - 1;
}

static _Atomic uint64_t inserted; /* keys [0, inserted) exist */

static size_t key_of(uint64_t i, char *buf)
{
    /* Hashed so consecutive ids scatter over the ring and the LSM tree,
     * like YCSB's "user" keys. */
    return (size_t)sprintf(buf, "user%016" PRIx64, fnv64(i));
}

static uint64_t pick_existing(uint64_t *rng)
{
    uint64_t n = atomic_load_explicit(&inserted, memory_order_relaxed);
    if (n == 0) {
        return 0;
    }
    if (cfg.workload == 'D') {
        /* read latest: recent keys are the hot ones */
        uint64_t z = zipf_next(&zipf, rng);
        return z < n ? n - 1 - z : n - 1;
    }
    if (cfg.zipfian) {
        /* scrambled zipfian: hot keys spread over the key space */
        return fnv64(zipf_next(&zipf, rng)) % n;
    }
    return splitmix(rng) % n;
}

/* ---- the run ---- */

typedef struct worker {
    pthread_t th;
    int id;
    int nworkers;
    void *t;
    uint64_t rng;
    hist_t *hist[OP__COUNT];
    uint64_t errors[ERR__COUNT];
    uint64_t misses;
    _Atomic uint64_t done;
    _Atomic uint64_t failed;
} worker_t;

static const target_t *tgt;
static _Atomic bool stop_flag;
static _Atomic uint64_t op_budget; /* --ops: operations left to start */
static bool loading;
static _Atomic uint64_t load_next;
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    atomic_store(&stop_flag, true);
}

static enum op choose_op(uint64_t *rng)
{
    unsigned r = (unsigned)(splitmix(rng) % 100);
    switch (cfg.workload) {
    case 'A':
        return r < 50 ? OP_READ : OP_UPDATE;
    case 'B':
        return r < 95 ? OP_READ : OP_UPDATE;
    case 'C':
        return OP_READ;
    case 'W':
        return OP_UPDATE;
    case 'D':
        return r < 95 ? OP_READ : OP_INSERT;
    default:
        return OP_READ;
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    char key[64];
    uint8_t *val = malloc(cfg.value_size + 8);
    for (size_t i = 0; i < cfg.value_size + 8; i++) {
        val[i] = (uint8_t)splitmix(&w->rng);
    }
    /* --rate: each worker keeps its share of a fixed schedule, and latency
     * counts from the scheduled start, so a stall is not hidden by the
     * requests it delayed (no coordinated omission). */
    int64_t interval = 0;
    int64_t next = now_ns();
    if (cfg.rate > 0 && !loading) {
        interval = (int64_t)(1e9 * (double)w->nworkers / cfg.rate);
        next += interval * w->id / w->nworkers;
    }
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        enum op op;
        uint64_t id;
        int64_t sched = 0;
        if (interval > 0) {
            int64_t t = now_ns();
            if (next > t) {
                struct timespec ts = {(time_t)((next - t) / 1000000000),
                                      (long)((next - t) % 1000000000)};
                nanosleep(&ts, NULL);
            }
            sched = next;
            next += interval;
        }
        if (loading) {
            id = atomic_fetch_add(&load_next, 1);
            if (id >= cfg.keys) {
                break;
            }
            op = OP_INSERT;
        } else {
            if (cfg.ops > 0 && atomic_fetch_sub(&op_budget, 1) - 1 >= cfg.ops) {
                break; /* wrapped below zero: the budget is spent */
            }
            op = choose_op(&w->rng);
            id = op == OP_INSERT ? atomic_fetch_add(&load_next, 1)
                                 : pick_existing(&w->rng);
        }
        size_t kl = key_of(id, key);
        /* A different value every time (its first 8 bytes). */
        uint64_t stamp = splitmix(&w->rng);
        memcpy(val, &stamp, 8);
        int64_t t0 = sched > 0 ? sched : now_ns();
        int rc = op == OP_READ ? tgt->get(w->t, key, kl)
                               : tgt->put(w->t, key, kl, val, cfg.value_size);
        int64_t t1 = now_ns();
        if (op == OP_INSERT && !loading && rc == 0) {
            /* published once written, so readers find it (an insert that
             * finishes before a lower one publishes past it: a few reads
             * may miss; YCSB waits for the lower ones, this does not) */
            uint64_t n = atomic_load(&inserted);
            while (n < id + 1 &&
                   !atomic_compare_exchange_weak(&inserted, &n, id + 1)) {
            }
        }
        if (rc == KV_ENOTFOUND && op == OP_READ) {
            w->misses++;
            rc = 0;
        }
        if (rc != 0) {
            w->errors[rc > 0 && rc < ERR__COUNT ? rc : ERR_REPLY]++;
            atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
            if (rc == ERR_NET) {
                break; /* the connection is gone */
            }
        }
        hist_add(w->hist[op], (uint64_t)(t1 - t0));
        atomic_fetch_add_explicit(&w->done, 1, memory_order_relaxed);
    }
    free(val);
    return NULL;
}

typedef struct result {
    double secs;
    uint64_t ops;
    hist_t hist[OP__COUNT];
    uint64_t errors[ERR__COUNT];
    uint64_t misses;
    long rss_kb_nodes; /* sum over started nodes, 0 if none */
    double cpu_self_s;  /* CPU time of this process during the phase */
    double cpu_nodes_s; /* of the nodes it started (0 if none) */
} result_t;

/* CPU time (user + system) this process has used, in seconds. */
static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU time of a child process (utime + stime of /proc/PID/stat). CPU per
 * operation is the figure that survives a shared machine: throughput
 * halves when another job takes a core, the work per operation does not. */
static double cpu_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from its ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_nodes(void);

static long rss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    long kb = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kb;
}

/* Runs nworkers threads until the duration or op budget ends (or, when
 * loading, every key is written). */
static void run_phase(int nworkers, bool load, result_t *res, const char *label)
{
    worker_t *w = calloc((size_t)nworkers, sizeof(*w));
    loading = load;
    atomic_store(&stop_flag, false);
    atomic_store(&op_budget, cfg.ops);
    if (load) {
        atomic_store(&load_next, 0);
    }
    double self0 = cpu_self();
    double nodes0 = cpu_nodes();
    int64_t t0 = now_ns();
    for (int i = 0; i < nworkers; i++) {
        w[i].id = i;
        w[i].nworkers = nworkers;
        w[i].rng = fnv64((uint64_t)i * 7919 + (uint64_t)t0);
        for (int o = 0; o < OP__COUNT; o++) {
            w[i].hist[o] = calloc(1, sizeof(hist_t));
        }
        w[i].t = tgt->thread_open();
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0) {
            die("cannot start thread %d", i);
        }
    }
    bool tty = isatty(2) && !cfg.quiet;
    int64_t end =
        load || cfg.ops > 0 ? INT64_MAX : t0 + (int64_t)(cfg.duration_s * 1e9);
    uint64_t last = 0;
    int64_t last_t = t0;
    for (;;) {
        sleep_ms(50);
        int64_t t = now_ns();
        uint64_t done = 0, failed = 0;
        for (int i = 0; i < nworkers; i++) {
            done += atomic_load_explicit(&w[i].done, memory_order_relaxed);
            failed += atomic_load_explicit(&w[i].failed, memory_order_relaxed);
        }
        bool finished = t >= end || interrupted ||
                        (load && atomic_load(&load_next) >=
                                     cfg.keys + (uint64_t)nworkers) ||
                        (cfg.ops > 0 && !load && done >= cfg.ops);
        if (tty && (t - last_t >= 1000000000 || finished)) {
            fprintf(stderr,
                    "\r%-9s %-9s %6.1fs %10" PRIu64 " ops %9.0f ops/s now "
                    "%9.0f avg, %" PRIu64 " errors   ",
                    tgt->name, label, (double)(t - t0) / 1e9, done,
                    (double)(done - last) * 1e9 / (double)(t - last_t),
                    (double)done * 1e9 / (double)(t - t0), failed);
            last = done;
            last_t = t;
        }
        if (finished) {
            break;
        }
        /* every worker gone (load finished, budget spent, errors) */
        bool alive = false;
        for (int i = 0; i < nworkers && !alive; i++) {
            alive = pthread_tryjoin_np(w[i].th, NULL) == EBUSY;
            if (!alive) {
                w[i].th = 0;
            }
        }
        if (!alive) {
            break;
        }
    }
    atomic_store(&stop_flag, true);
    memset(res, 0, sizeof(*res));
    for (int i = 0; i < nworkers; i++) {
        if (w[i].th != 0) {
            pthread_join(w[i].th, NULL);
        }
    }
    res->secs = (double)(now_ns() - t0) / 1e9;
    res->cpu_self_s = cpu_self() - self0;
    res->cpu_nodes_s = cpu_nodes() - nodes0;
    if (tty) {
        fprintf(stderr, "\n");
    }
    for (int i = 0; i < nworkers; i++) {
        tgt->thread_close(w[i].t);
        for (int o = 0; o < OP__COUNT; o++) {
            hist_merge(&res->hist[o], w[i].hist[o]);
            res->ops += w[i].hist[o]->n;
            free(w[i].hist[o]);
        }
        for (int e = 0; e < ERR__COUNT; e++) {
            res->errors[e] += w[i].errors[e];
        }
        res->misses += w[i].misses;
    }
    for (int i = 0; i < cl.count; i++) {
        res->rss_kb_nodes += rss_kb(cl.pid[i]);
    }
    free(w);
}

static double cpu_nodes(void)
{
    double t = 0;
    for (int i = 0; i < cl.count; i++) {
        t += cpu_of(cl.pid[i]);
    }
    return t;
}

static void print_config(FILE *f, int nworkers)
{
    fprintf(f,
            "target=%s workload=%c dist=%s keys=%" PRIu64 " value=%zu "
            "%s=%d sync=%s cache=%s",
            tgt->name, cfg.workload, cfg.zipfian ? "zipfian" : "uniform",
            cfg.keys, cfg.value_size, tgt->remote ? "outstanding" : "threads",
            nworkers, cfg.sync, cfg.cache_size);
    if (strcmp(tgt->name, "cluster") == 0 ||
        (strcmp(tgt->name, "resp") == 0 && cfg.addr == NULL)) {
        fprintf(f, " nodes=%d n=%s r=%s w=%s", cfg.urls ? 0 : cfg.nodes, cfg.n,
                cfg.r, cfg.w);
    }
    if (cfg.wait_replicas > 0) {
        fprintf(f, " wait=%d", cfg.wait_replicas);
    }
    if (cfg.rate > 0) {
        fprintf(f, " rate=%.0f", cfg.rate);
    }
}

static void report_text(const result_t *r, int nworkers)
{
    printf("# ");
    print_config(stdout, nworkers);
    printf("\n%.1f s, %" PRIu64 " ops, %.0f ops/s", r->secs, r->ops,
           (double)r->ops / r->secs);
    if (r->rss_kb_nodes > 0) {
        printf(", node RSS %.1f MiB total", (double)r->rss_kb_nodes / 1024);
    }
    if (r->ops > 0) {
        printf("\nCPU per op: %.1f us in this process",
               r->cpu_self_s * 1e6 / (double)r->ops);
        if (cl.count > 0) {
            printf(", %.1f us in the %d nodes",
                   r->cpu_nodes_s * 1e6 / (double)r->ops, cl.count);
        }
    }
    printf("\n%-7s %10s %10s %9s %9s %9s %9s %9s %9s (latency in ms)\n", "op",
           "count", "ops/s", "mean", "p50", "p95", "p99", "p99.9", "max");
    for (int o = 0; o < OP__COUNT; o++) {
        const hist_t *h = &r->hist[o];
        if (h->n == 0) {
            continue;
        }
        printf("%-7s %10" PRIu64
               " %10.0f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n",
               op_names[o], h->n, (double)h->n / r->secs,
               h->sum / (double)h->n / 1e6, hist_pct_us(h, 50) / 1000,
               hist_pct_us(h, 95) / 1000, hist_pct_us(h, 99) / 1000,
               hist_pct_us(h, 99.9) / 1000, (double)h->max / 1e6);
    }
    if (r->misses > 0) {
        printf("reads of absent keys: %" PRIu64 "\n", r->misses);
    }
    for (int e = 0; e < ERR__COUNT; e++) {
        if (r->errors[e] > 0) {
            printf("errors: %" PRIu64 " x %s\n", r->errors[e], err_name(e));
        }
    }
}

static void report_json(const result_t *r, int nworkers)
{
    printf("{\"target\":\"%s\",\"workload\":\"%c\",\"dist\":\"%s\","
           "\"keys\":%" PRIu64 ",\"value_size\":%zu,\"concurrency\":%d,"
           "\"sync\":\"%s\",\"cache_size\":\"%s\",\"n\":%s,\"r\":%s,\"w\":%s,"
           "\"wait\":%d,\"rate\":%.0f,\"seconds\":%.3f,\"ops\":%" PRIu64 ","
           "\"ops_per_s\":%.1f,\"misses\":%" PRIu64 ",\"node_rss_kb\":%ld,"
           "\"cpu_us_per_op\":%.1f,\"node_cpu_us_per_op\":%.1f,\"op\":{",
           tgt->name, cfg.workload, cfg.zipfian ? "zipfian" : "uniform",
           cfg.keys, cfg.value_size, nworkers, cfg.sync, cfg.cache_size, cfg.n,
           cfg.r, cfg.w, cfg.wait_replicas, cfg.rate, r->secs, r->ops,
           (double)r->ops / r->secs, r->misses, r->rss_kb_nodes,
           r->ops > 0 ? r->cpu_self_s * 1e6 / (double)r->ops : 0.0,
           r->ops > 0 ? r->cpu_nodes_s * 1e6 / (double)r->ops : 0.0);
    bool first = true;
    for (int o = 0; o < OP__COUNT; o++) {
        const hist_t *h = &r->hist[o];
        if (h->n == 0) {
            continue;
        }
        printf("%s\"%s\":{\"count\":%" PRIu64 ",\"ops_per_s\":%.1f,"
               "\"mean_us\":%.1f,\"p50_us\":%.1f,\"p95_us\":%.1f,"
               "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}",
               first ? "" : ",", op_names[o], h->n, (double)h->n / r->secs,
               h->sum / (double)h->n / 1e3, hist_pct_us(h, 50),
               hist_pct_us(h, 95), hist_pct_us(h, 99), hist_pct_us(h, 99.9),
               (double)h->max / 1e3);
        first = false;
    }
    printf("},\"errors\":{");
    first = true;
    for (int e = 0; e < ERR__COUNT; e++) {
        if (r->errors[e] > 0) {
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", err_name(e),
                   r->errors[e]);
            first = false;
        }
    }
    printf("}}\n");
    fflush(stdout);
}

static const target_t *find_target(const char *name)
{
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        if (strcmp(targets[i].name, name) == 0) {
            return &targets[i];
        }
    }
    die("unknown target '%s' (raw, embedded, cluster, resp, http)", name);
}

static int workers_for(const target_t *t)
{
    return t->remote ? cfg.outstanding : cfg.threads;
}

/* Opens the target, loads it if asked, runs the workload. */
static void run_one(const target_t *t, result_t *load_res, result_t *res)
{
    tgt = t;
    int nw = workers_for(t);
    tgt->open();
    atomic_store(&inserted, 0);
    if (cfg.load) {
        run_phase(nw, true, load_res, "load");
        atomic_store(&inserted, cfg.keys);
    } else {
        atomic_store(&inserted, cfg.keys);
        atomic_store(&load_next, cfg.keys);
    }
    if (!interrupted) {
        run_phase(nw, false, res, "run");
    }
}

/* --suite: raw, embedded and cluster; write-only then read-only each;
 * a markdown table with ratios to raw. */
static void run_suite(void)
{
    static const char *const names[] = {"raw", "embedded", "cluster"};
    double put[3] = {0}, get[3] = {0}, put99[3] = {0}, get99[3] = {0};
    double putcpu[3] = {0}, getcpu[3] = {0}; /* us per op, nodes included */
    double total = cfg.duration_s;
    for (int i = 0; i < 3 && !interrupted; i++) {
        const target_t *t = find_target(names[i]);
        result_t lr, wr, rr;
        tgt = t;
        int nw = workers_for(t);
        t->open();
        atomic_store(&inserted, 0);
        run_phase(nw, true, &lr, "load");
        atomic_store(&inserted, cfg.keys);
        atomic_store(&load_next, cfg.keys);
        cfg.duration_s = total / 2;
        cfg.workload = 'W';
        run_phase(nw, false, &wr, "put");
        cfg.workload = 'C';
        run_phase(nw, false, &rr, "get");
        t->close();
        put[i] = (double)wr.hist[OP_UPDATE].n / wr.secs;
        get[i] = (double)rr.hist[OP_READ].n / rr.secs;
        put99[i] = hist_pct_us(&wr.hist[OP_UPDATE], 99) / 1000;
        get99[i] = hist_pct_us(&rr.hist[OP_READ], 99) / 1000;
        putcpu[i] = wr.ops > 0 ? (wr.cpu_self_s + wr.cpu_nodes_s) * 1e6 /
                                     (double)wr.ops
                               : 0;
        getcpu[i] = rr.ops > 0 ? (rr.cpu_self_s + rr.cpu_nodes_s) * 1e6 /
                                     (double)rr.ops
                               : 0;
        if (cfg.json) {
            cfg.workload = 'W';
            report_json(&wr, nw);
            cfg.workload = 'C';
            report_json(&rr, nw);
        }
        uint64_t errs = 0;
        for (int e = 0; e < ERR__COUNT; e++) {
            errs += wr.errors[e] + rr.errors[e];
        }
        if (errs > 0) {
            fprintf(stderr, "kvdist-bench: %s: %" PRIu64 " errors\n", names[i],
                    errs);
        }
    }
    cfg.duration_s = total;
    printf("\n%" PRIu64 " keys, %zu-byte values, %s, sync=%s, cache %s; "
           "raw/embedded: %d threads; cluster: %d nodes n=%s r=%s w=%s on "
           "127.0.0.1, %d outstanding (client role)\n\n",
           cfg.keys, cfg.value_size, cfg.zipfian ? "zipfian" : "uniform",
           cfg.sync, cfg.cache_size, cfg.threads, cfg.nodes, cfg.n, cfg.r,
           cfg.w, cfg.outstanding);
    printf("| target | put ops/s | put p99 ms | get ops/s | get p99 ms | "
           "put vs raw | get vs raw | put CPU us/op | get CPU us/op |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < 3; i++) {
        printf("| %s | %.0f | %.2f | %.0f | %.2f | %.2fx | %.2fx | %.1f | "
               "%.1f |\n",
               names[i], put[i], put99[i], get[i], get99[i],
               put[0] > 0 ? put[i] / put[0] : 0,
               get[0] > 0 ? get[i] / get[0] : 0, putcpu[i], getcpu[i]);
    }
    printf("\nCPU us/op: CPU time (user + system) of this process and, for "
           "the cluster, its nodes, per operation: the cost that a busy or "
           "shared machine does not change.\n");
}

/* The first line of path (its newline dropped), for --password-file. */
static const char *read_password(const char *path)
{
    static char pw[1100];
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(pw, sizeof(pw), f) == NULL) {
        die("--password-file %s: %s", path,
            f == NULL ? strerror(errno) : "empty");
    }
    fclose(f);
    pw[strcspn(pw, "\r\n")] = '\0';
    if (pw[0] == '\0') {
        die("--password-file %s: empty first line", path);
    }
    return pw;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: kvdist-bench [--target raw|embedded|cluster|resp|http] "
        "[OPTION...]\n"
        "       kvdist-bench --suite [OPTION...]   (raw, embedded, cluster: "
        "markdown table)\n\n"
        "  --workload A|B|C|W|D   A 50/50 read/update, B 95/5, C read, W "
        "write,\n"
        "                         D 95%% read-latest/5%% insert (default A)\n"
        "  --dist uniform|zipfian key choice (default uniform)\n"
        "  --keys N               key count (default 100000)\n"
        "  --value-size BYTES     (default 1024)\n"
        "  --threads T            workers for raw/embedded (default 2)\n"
        "  --outstanding O        concurrent requests for cluster/resp/http, "
        "one\n"
        "                         thread each (default 64)\n"
        "  --duration S           seconds to run (default 20; --suite splits "
        "it)\n"
        "  --ops N                run N operations instead\n"
        "  --rate OPS             a fixed schedule of OPS/s (latency from "
        "the\n"
        "                         scheduled start), default flat out\n"
        "  --no-load              skip the load phase (keys already there)\n"
        "  --data DIR             where stores go (default a fresh temp "
        "dir)\n"
        "  --sync none|wal|fsync  durability (default wal)\n"
        "  --cache-size BYTES     block cache (default 64M)\n"
        "  --nodes N --n N --r R --w W   the cluster started (default 3, "
        "3/2/2)\n"
        "  --urls URL[,URL]       cluster: use these nodes, start none\n"
        "  --addr HOST:PORT       resp: use this server, start none\n"
        "  --wait N               resp: send WAIT N 0 after every SET\n"
        "  --url http://HOST:PORT http: the node to drive\n"
        "  --password PW          resp, http: the node's auth_password (the\n"
        "                         cluster resp starts requires it too)\n"
        "  --password-file FILE   the same, read from FILE's first line\n"
        "  --kvdistd PATH         daemon to start (default: next to this "
        "program)\n"
        "  --json                 one JSON object per run on stdout\n"
        "  --quiet                no progress line\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 't'},
        {"workload", required_argument, NULL, 'W'},
        {"dist", required_argument, NULL, 'z'},
        {"keys", required_argument, NULL, 'k'},
        {"value-size", required_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 'T'},
        {"outstanding", required_argument, NULL, 'o'},
        {"duration", required_argument, NULL, 'd'},
        {"ops", required_argument, NULL, 'O'},
        {"no-load", no_argument, NULL, 'L'},
        {"data", required_argument, NULL, 'D'},
        {"sync", required_argument, NULL, 's'},
        {"cache-size", required_argument, NULL, 'c'},
        {"nodes", required_argument, NULL, 'N'},
        {"n", required_argument, NULL, 'n'},
        {"r", required_argument, NULL, 'r'},
        {"w", required_argument, NULL, 'w'},
        {"urls", required_argument, NULL, 'U'},
        {"addr", required_argument, NULL, 'a'},
        {"wait", required_argument, NULL, 'A'},
        {"rate", required_argument, NULL, 'R'},
        {"url", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'P'},
        {"password-file", required_argument, NULL, 'F'},
        {"kvdistd", required_argument, NULL, 'K'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"suite", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 't':
            cfg.target = optarg;
            break;
        case 'W':
            cfg.workload = optarg[0];
            if (strchr("ABCWD", cfg.workload) == NULL || optarg[1] != '\0') {
                die("--workload: A, B, C, W or D");
            }
            break;
        case 'z':
            if (strcmp(optarg, "zipfian") == 0) {
                cfg.zipfian = true;
            } else if (strcmp(optarg, "uniform") != 0) {
                die("--dist: uniform or zipfian");
            }
            break;
        case 'k':
            cfg.keys = strtoull(optarg, NULL, 10);
            break;
        case 'v':
            cfg.value_size = (size_t)parse_size(optarg);
            break;
        case 'T':
            cfg.threads = atoi(optarg);
            break;
        case 'o':
            cfg.outstanding = atoi(optarg);
            break;
        case 'd':
            cfg.duration_s = atof(optarg);
            break;
        case 'O':
            cfg.ops = strtoull(optarg, NULL, 10);
            break;
        case 'L':
            cfg.load = false;
            break;
        case 'D':
            cfg.data_dir = optarg;
            break;
        case 's':
            cfg.sync = optarg;
            break;
        case 'c':
            cfg.cache_size = optarg;
            break;
        case 'N':
            cfg.nodes = atoi(optarg);
            break;
        case 'n':
            cfg.n = optarg;
            break;
        case 'r':
            cfg.r = optarg;
            break;
        case 'w':
            cfg.w = optarg;
            break;
        case 'U':
            cfg.urls = optarg;
            break;
        case 'a':
            cfg.addr = optarg;
            break;
        case 'A':
            cfg.wait_replicas = atoi(optarg);
            break;
        case 'R':
            cfg.rate = atof(optarg);
            break;
        case 'u':
            cfg.url = optarg;
            break;
        case 'P':
            cfg.password = optarg;
            break;
        case 'F':
            cfg.password = read_password(optarg);
            break;
        case 'K':
            cfg.kvdistd = optarg;
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'q':
            cfg.quiet = true;
            break;
        case 'S':
            cfg.suite = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (cfg.keys == 0 || cfg.threads < 1 || cfg.outstanding < 1 ||
        cfg.outstanding > 4096 || cfg.threads > 4096 || cfg.duration_s <= 0) {
        die("--keys, --threads, --outstanding and --duration must be positive");
    }
    if (cfg.zipfian || cfg.workload == 'D') {
        zipf_init(&zipf, cfg.keys);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (cfg.suite) {
        run_suite();
    } else {
        const target_t *t = find_target(cfg.target);
        result_t lr, res;
        memset(&res, 0, sizeof(res));
        run_one(t, &lr, &res);
        if (cfg.json) {
            report_json(&res, workers_for(t));
        } else {
            report_text(&res, workers_for(t));
        }
        t->close();
    }
    stop_cluster();
    if (tmp_dir != NULL) {
        rmtree(tmp_dir);
        free(tmp_dir);
    }
    return interrupted ? 130 : 0;
}
