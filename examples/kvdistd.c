/*
 * kvdistd.c - the libkvdist peer daemon: one node of a cluster, holding its
 * share of the data in a directory and serving its peers and clients.
 *
 * Each flag is one library option (--cache-size sets cache_size, ...), so
 * the library does all validation and this program only translates its
 * answers into messages and exit codes: 0 after a clean stop, 1 when the
 * node cannot start, 2 for a usage error. It logs to stderr, one line per
 * event, and says "ready" once it serves, which is what scripts wait for.
 *
 * The library runs its own threads. The main thread only parses flags,
 * opens the node, then sleeps in sigwait() until SIGINT or SIGTERM, so no
 * code runs in a signal handler and no global state is needed.
 *
 * Run:
 *     kvdistd --id n1 --listen tcp://127.0.0.1:7000 --data /var/lib/kv/n1
 *     kvdistd --id n2 --listen tcp://127.0.0.1:7001 --data /var/lib/kv/n2 \
 *             --join tcp://127.0.0.1:7000
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kvdist.h>

/* What the logger needs; lives in main's frame, which outlasts the node. */
typedef struct logctx {
    int level;   /* most verbose level printed */
    char id[72]; /* node_id, as kv_member_t holds it */
    /* Until the node is open, errors are held back and folded into the
     * one line that says why it could not start. mu protects both. */
    pthread_mutex_t mu;
    bool opened;
    char held[512];
} logctx_t;

/* --log-level names and the tags log lines carry. */
static const struct {
    const char *name;
    const char *tag;
    int level;
} log_levels[] = {
    {"error", "ERROR", KV_LOG_ERROR},
    {"warn", "WARN", KV_LOG_WARN},
    {"notice", "NOTICE", KV_LOG_NOTICE},
    {"info", "INFO", KV_LOG_INFO},
    {"debug", "DEBUG", KV_LOG_DEBUG},
};

#define N_LOG_LEVELS (sizeof(log_levels) / sizeof(log_levels[0]))

static const char *level_tag(int level)
{
    for (size_t i = 0; i < N_LOG_LEVELS; i++) {
        if (log_levels[i].level == level) {
            return log_levels[i].tag;
        }
    }
    return "DEBUG"; /* a level the library added later: the least severe */
}

/*
 * The logger, called from any library thread. A single fprintf per line:
 * glibc holds the stream lock for the whole call, so lines written
 * concurrently never interleave.
 */
static void log_line(void *arg, int level, const char *msg)
{
    logctx_t *lc = arg;
    if (level > lc->level) {
        return;
    }
    if (level <= KV_LOG_ERROR) {
        pthread_mutex_lock(&lc->mu);
        bool hold = !lc->opened;
        if (hold) {
            snprintf(lc->held, sizeof(lc->held), "%s", msg);
        }
        pthread_mutex_unlock(&lc->mu);
        if (hold) {
            return;
        }
    }
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s [%s] %s\n", when, ts.tv_nsec / 1000000L,
            level_tag(level), lc->id, msg);
}

static void daemon_log(logctx_t *lc, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void daemon_log(logctx_t *lc, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line(lc, level, msg);
}

/* Flags that are library options, in the order --help lists them. The
 * index in this table is the getopt_long value of the flag. */
static const struct {
    const char *flag;
    const char *option;
    const char *arg;
    const char *help;
} flag_options[] = {
    {"id", "node_id", "ID", "this node's name in the cluster"},
    {"listen", "listen", "URL", "address peers and clients reach it at"},
    {"data", "data_dir", "DIR", "directory of the local store (required)"},
    {"join", "join", "URL[,URL]", "seed peers to join through"},
    {"n", "n", "N", "replicas of each key"},
    {"r", "r", "R", "read quorum"},
    {"w", "w", "W", "write quorum"},
    {"vnodes", "vnodes", "V", "ring positions of this node"},
    {"sync", "sync", "MODE", "none | wal | fsync"},
    {"cache-size", "cache_size", "BYTES", "RocksDB block cache (k/M/G)"},
    {"timeout-ms", "timeout_ms", "MS", "default request deadline"},
    {"max-key-size", "max_key_size", "BYTES", "largest key accepted"},
    {"max-value-size", "max_value_size", "BYTES", "largest value accepted"},
    {"clock-max", "clock_max", "N", "vector clock entries kept per key"},
    {"gossip-interval-ms", "gossip_interval_ms", "MS",
     "how often membership is gossiped"},
    {"phi-convict", "phi_convict", "PHI",
     "failure detector threshold (phi accrual)"},
    {"sloppy-quorum", "sloppy_quorum", "on|off",
     "let fallback nodes stand in for down replicas"},
    {"hinted-handoff", "hinted_handoff", "on|off",
     "keep and deliver hints for replicas that missed writes"},
    {"handoff-rate", "handoff_rate", "N", "hints delivered per second"},
    {"anti-entropy", "anti_entropy", "on|off",
     "compare Merkle trees with other replicas and repair"},
    {"aae-interval-ms", "aae_interval_ms", "MS",
     "pause between background anti-entropy passes"},
    {"aae-rebuild-rate", "aae_rebuild_rate", "N",
     "index entries per second when rebuilding trees"},
    {"tombstone-grace-ms", "tombstone_grace_ms", "MS",
     "keep deletes at least this long before purging them"},
    {"resp", "resp", "HOST:PORT",
     "also serve the Redis protocol (RESP2) here"},
    {"http", "http", "HOST:PORT", "serve the HTTP API there (kvdist-http(7))"},
    {"max-clients", "max_clients", "N",
     "HTTP + RESP connections at once (0: from the open-file limit)"},
};

#define N_FLAG_OPTIONS (sizeof(flag_options) / sizeof(flag_options[0]))

enum {
    FLAG_LOG_LEVEL = 1000, /* above every flag_options index */
    FLAG_HELP = 'h',
    FLAG_VERSION = 'V'
};

static void usage(FILE *f)
{
    /* Defaults come from the library itself, so --help cannot go stale. */
    kv_options_t *defaults = kv_options_create();
    fprintf(f, "usage: kvdistd --data DIR [--id ID] [--listen URL] "
               "[--join URL[,URL...]] [FLAG...]\n\n");
    for (size_t i = 0; i < N_FLAG_OPTIONS; i++) {
        char def[128] = "";
        if (defaults != NULL) {
            kv_options_get(defaults, flag_options[i].option, def, sizeof(def));
        }
        char left[64];
        snprintf(left, sizeof(left), "--%s %s", flag_options[i].flag,
                 flag_options[i].arg);
        fprintf(f, "  %-24s %s%s%s%s\n", left, flag_options[i].help,
                def[0] != '\0' ? " (default " : "", def,
                def[0] != '\0' ? ")" : "");
    }
    kv_options_destroy(defaults);
    fprintf(f, "  %-24s %s\n", "--log-level LEVEL",
            "error | warn | notice | info | debug (default notice)");
    fprintf(f, "  %-24s %s\n", "-h, --help", "print this help and exit");
    fprintf(f, "  %-24s %s\n", "-V, --version", "print the version and exit");
    fprintf(f, "\nStops cleanly on SIGINT or SIGTERM. See kvdistd(1).\n");
}

static void usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "kvdistd: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see kvdistd --help)\n");
    exit(2);
}

/*
 * The library's reason usually starts with the option's name ("sync: must
 * be ..."); the flag is already named in front of it, so drop the echo.
 */
static const char *option_reason(const kv_options_t *o, const char *option,
                                 int rc)
{
    const char *why = kv_options_errmsg(o);
    size_t n = strlen(option);
    if (strncmp(why, option, n) == 0 && why[n] == ':' && why[n + 1] == ' ') {
        why += n + 2;
    }
    return why[0] != '\0' ? why : kv_strerror(rc);
}

static int parse_level(const char *s)
{
    for (size_t i = 0; i < N_LOG_LEVELS; i++) {
        if (strcmp(s, log_levels[i].name) == 0) {
            return log_levels[i].level;
        }
    }
    return -1;
}

static void parse_flags(int argc, char **argv, kv_options_t *o, logctx_t *lc)
{
    struct option longopts[N_FLAG_OPTIONS + 4];
    for (size_t i = 0; i < N_FLAG_OPTIONS; i++) {
        longopts[i] = (struct option){flag_options[i].flag, required_argument,
                                      NULL, (int)i};
    }
    longopts[N_FLAG_OPTIONS] =
        (struct option){"log-level", required_argument, NULL, FLAG_LOG_LEVEL};
    longopts[N_FLAG_OPTIONS + 1] =
        (struct option){"help", no_argument, NULL, FLAG_HELP};
    longopts[N_FLAG_OPTIONS + 2] =
        (struct option){"version", no_argument, NULL, FLAG_VERSION};
    longopts[N_FLAG_OPTIONS + 3] = (struct option){NULL, 0, NULL, 0};

    int have_data = 0;
    opterr = 0; /* our own one-line messages, named "kvdistd" not argv[0] */
    for (;;) {
        int c = getopt_long(argc, argv, ":hV", longopts, NULL);
        if (c == -1) {
            break;
        }
        if (c >= 0 && (size_t)c < N_FLAG_OPTIONS) {
            int rc = kv_options_set(o, flag_options[c].option, optarg);
            if (rc != 0) {
                fprintf(stderr, "kvdistd: --%s: %s\n", flag_options[c].flag,
                        option_reason(o, flag_options[c].option, rc));
                exit(2);
            }
            have_data |= strcmp(flag_options[c].option, "data_dir") == 0;
            continue;
        }
        switch (c) {
        case FLAG_LOG_LEVEL:
            lc->level = parse_level(optarg);
            if (lc->level < 0) {
                fprintf(stderr, "kvdistd: --log-level: must be error, warn, "
                                "notice, info or debug\n");
                exit(2);
            }
            break;
        case FLAG_HELP:
            usage(stdout);
            exit(0);
        case FLAG_VERSION:
            printf("kvdistd (libkvdist) %s\n", kv_version());
            exit(0);
        case ':':
            usage_error("%s: missing value", argv[optind - 1]);
            break;
        default:
            /* optind has moved past the offending word. A long flag may be
             * unknown, an ambiguous abbreviation, or --help=x. */
            if (strncmp(argv[optind - 1], "--", 2) == 0) {
                usage_error(strchr(argv[optind - 1], '=') != NULL
                                ? "%s: unknown flag or one that takes no value"
                                : "%s: unknown or ambiguous flag",
                            argv[optind - 1]);
            }
            char s[3] = {'-', (char)optopt, '\0'};
            usage_error("%s: unknown flag", s);
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (!have_data) {
        usage_error("%s is required", "--data DIR");
    }
}

/* Why kv_open failed, in the terms of the flags the user gave. */
static void open_hint(int rc, const char *data, const char *listen,
                      const char *http, char *buf, size_t size)
{
    switch (rc) {
    case KV_EBUSY:
        snprintf(buf, size, " (another process holds %s)", data);
        break;
    case KV_EADDRINUSE:
        if (listen[0] != '\0' && http[0] != '\0') {
            snprintf(buf, size, " (%s or %s is taken)", listen, http);
        } else {
            snprintf(buf, size, " (%s is taken)", listen[0] ? listen : http);
        }
        break;
    case KV_EIO:
        snprintf(buf, size, " (cannot open or create data directory %s)", data);
        break;
    case KV_ECORRUPT:
        snprintf(buf, size, " (the store in %s is damaged)", data);
        break;
    case KV_EINVAL:
        snprintf(buf, size, " (inconsistent flags)");
        break;
    case KV_ENOTSUP:
        snprintf(buf, size, " (by libkvdist %s)", kv_version());
        break;
    default:
        buf[0] = '\0';
    }
}

int main(int argc, char **argv)
{
    /*
     * Block the stop signals before the library starts any thread: threads
     * inherit the mask, so the signals stay pending for sigwait() below
     * instead of killing the process from whichever thread gets them.
     * SIGPIPE is ignored so that a closed stderr or socket only fails a
     * write.
     */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    logctx_t lc = {KV_LOG_NOTICE, "", PTHREAD_MUTEX_INITIALIZER, false, ""};
    kv_options_t *o = kv_options_create();
    if (o == NULL) {
        fprintf(stderr, "kvdistd: %s\n", kv_strerror(KV_ENOMEM));
        return 1;
    }
    parse_flags(argc, argv, o, &lc);

    char listen[512], data[4096], http[300];
    kv_options_get(o, "node_id", lc.id, sizeof(lc.id));
    kv_options_get(o, "http", http, sizeof(http));
    kv_options_get(o, "listen", listen, sizeof(listen));
    kv_options_get(o, "data_dir", data, sizeof(data));
    kv_options_set_logger(o, log_line, &lc, lc.level);

    kv_t *kv = NULL;
    int rc = kv_open(o, &kv);
    if (rc != 0) {
        char hint[5200];
        open_hint(rc, data, listen, http, hint, sizeof(hint));
        pthread_mutex_lock(&lc.mu);
        fprintf(stderr, "kvdistd: cannot start node %s: %s%s%s%s%s\n", lc.id,
                kv_strerror(rc), hint, lc.held[0] ? " [" : "", lc.held,
                lc.held[0] ? "]" : "");
        pthread_mutex_unlock(&lc.mu);
        kv_options_destroy(o);
        /* Every option came from a flag, so inconsistent options are a
         * usage error like a refused flag. */
        return rc == KV_EINVAL ? 2 : 1;
    }

    pthread_mutex_lock(&lc.mu);
    lc.opened = true;
    pthread_mutex_unlock(&lc.mu);
    char n[16], r[16], w[16], sync[16];
    kv_options_get(o, "n", n, sizeof(n));
    kv_options_get(o, "r", r, sizeof(r));
    kv_options_get(o, "w", w, sizeof(w));
    kv_options_get(o, "sync", sync, sizeof(sync));
    kv_options_destroy(o);
    if (http[0] != '\0') {
        daemon_log(&lc, KV_LOG_NOTICE, "kvdistd: HTTP API on http://%s/",
                   http);
    }
    if (listen[0] != '\0') {
        daemon_log(&lc, KV_LOG_NOTICE,
                   "kvdistd: node %s ready on %s (data %s, n=%s r=%s w=%s, "
                   "sync %s)",
                   lc.id, listen, data, n, r, w, sync);
    } else {
        daemon_log(&lc, KV_LOG_NOTICE,
                   "kvdistd: node %s ready, not listening (data %s, n=%s r=%s "
                   "w=%s, sync %s)",
                   lc.id, data, n, r, w, sync);
    }

    int sig = 0;
    if (sigwait(&stop, &sig) != 0) {
        /* Cannot happen with a valid set; still close the store. */
        daemon_log(&lc, KV_LOG_ERROR, "kvdistd: sigwait failed, stopping");
    } else {
        daemon_log(&lc, KV_LOG_NOTICE, "kvdistd: %s received, stopping",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    /* Waits for calls in flight, then flushes and closes the store. */
    kv_close(kv);
    daemon_log(&lc, KV_LOG_NOTICE, "kvdistd: node %s stopped", lc.id);
    return 0;
}
