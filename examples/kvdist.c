/*
 * kvdist.c - the libkvdist command-line client: put, get and delete keys in
 * a running cluster, show its members and which of them hold a key, the
 * state of every member (status) and one node's counters (stats), and run
 * anti-entropy repair.
 *
 * The client opens the library with role=client: it holds no data and hands
 * each request to a node of the cluster (found through the -c URLs), which
 * coordinates it with the replicas. Each invocation is one request (two for
 * put and del, see below; one per member for status) and prints nothing but
 * the result on stdout, so it composes in shell pipelines; every message
 * goes to stderr.
 *
 * Writes are read-modify-write: put and del first read the key's siblings
 * for their causal context, then write with that context, so the write
 * supersedes what was read and sequential puts overwrite rather than pile
 * up as siblings (kv_put_ctx with an empty context would add one).
 *
 * The contacted node (status, and stats without NODE) is the member whose
 * URL is the first -c URL that answers; if no -c URL is a member's URL as
 * written (a host name for an address), the first member in id order the
 * client sees up that answers.
 *
 * The commands table is the one list of commands: --help is printed from
 * it, so a command cannot exist without its line of help.
 *
 * Exit codes: 0 ok, 1 not found (get: the key; stats: no member NODE),
 * 2 usage error, 3 any other error, 4 cannot reach the cluster (stats
 * NODE: that member).
 *
 * Run:
 *     kvdist -c tcp://127.0.0.1:7000 put colour red
 *     kvdist get colour
 *     tar c dir | kvdist put backup -
 *     kvdist status
 *     kvdist stats n2 | grep replica
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kvdist.h>

#define DEFAULT_URL "tcp://127.0.0.1:7000"

enum {
    EXIT_NOTFOUND = 1,
    EXIT_USAGE = 2,
    EXIT_ERROR = 3,
    EXIT_UNREACHABLE = 4
};

/* What one invocation was asked to do. */
typedef struct cli {
    const char *urls; /* the -c list, as given */
    const char *from; /* where urls came from: "-c " or "KVDIST_URL=" */
    kv_call_t call;   /* r, w, timeout_ms for every request; a template */
    int timeout_ms;   /* 0: the library's default */
    int verbose;      /* -v count: library log lines on stderr */
    int exact;        /* --exact: sizes in bytes, not KiB/MiB/... */
    const char *cmd;
    /* --tls-ca-file, --tls-cert-file, --tls-key-file: a client
     * certificate for a tls+tcp:// cluster (NULL: none). */
    const char *tls[3];
} cli_t;

/* The TLS flags and the library options they set, in cli_t.tls order. */
static const char *const tls_options[3] = {"tls_ca_file", "tls_cert_file",
                                           "tls_key_file"};

typedef int (*cmd_fn)(const cli_t *cli, kv_t *kv, char **args, int nargs);

/* One row per command: its name, its argument bounds and their synopsis,
 * its line of help, and its handler. */
typedef struct command {
    const char *name;
    int min, max; /* arguments after the command name */
    const char *args;
    const char *help;
    cmd_fn run;
} command_t;

/* Printed from the commands table, defined after it. */
static void usage(FILE *f);

static void usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "kvdist: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see kvdist --help)\n");
    exit(EXIT_USAGE);
}

/* A whole-string decimal integer in [min, max], or -1. */
static int parse_int(const char *s, int min, int max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || v < min ||
        v > max) {
        return -1;
    }
    return (int)v;
}

static void parse_flags(int argc, char **argv, cli_t *cli)
{
    enum { FLAG_TIMEOUT = 1000, FLAG_EXACT, FLAG_TLS };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, 'c'},
        {"tls-ca-file", required_argument, NULL, FLAG_TLS + 0},
        {"tls-cert-file", required_argument, NULL, FLAG_TLS + 1},
        {"tls-key-file", required_argument, NULL, FLAG_TLS + 2},
        {"timeout", required_argument, NULL, FLAG_TIMEOUT},
        {"exact", no_argument, NULL, FLAG_EXACT},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("KVDIST_URL");
    cli->urls = env != NULL && env[0] != '\0' ? env : DEFAULT_URL;
    cli->from = "KVDIST_URL=";

    opterr = 0; /* our own one-line messages */
    for (;;) {
        /* '+': stop at the command, so a value such as "-5" is not taken
         * for a flag. */
        int c = getopt_long(argc, argv, "+:c:r:w:vhV", longopts, NULL);
        if (c == -1) {
            break;
        }
        switch (c) {
        case 'c':
            cli->urls = optarg;
            cli->from = "-c ";
            break;
        case 'r':
            /* 16 is the library's ceiling for n; the node refuses an r
             * above its own n. */
            if ((cli->call.r = parse_int(optarg, 1, 16)) < 0) {
                usage_error("-r: must be an integer from 1 to 16, not '%s'",
                            optarg);
            }
            break;
        case 'w':
            if ((cli->call.w = parse_int(optarg, 1, 16)) < 0) {
                usage_error("-w: must be an integer from 1 to 16, not '%s'",
                            optarg);
            }
            break;
        case FLAG_TIMEOUT:
            cli->timeout_ms = parse_int(optarg, 1, 3600000);
            if (cli->timeout_ms < 0) {
                usage_error("--timeout: must be milliseconds from 1 to "
                            "3600000, not '%s'",
                            optarg);
            }
            cli->call.timeout_ms = cli->timeout_ms;
            break;
        case FLAG_EXACT:
            cli->exact = 1;
            break;
        case FLAG_TLS + 0:
        case FLAG_TLS + 1:
        case FLAG_TLS + 2:
            cli->tls[c - FLAG_TLS] = optarg;
            break;
        case 'v':
            cli->verbose++;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("kvdist (libkvdist) %s\n", kv_version());
            exit(0);
        case ':':
            usage_error("%s: missing value", argv[optind - 1]);
            break;
        default:
            if (strncmp(argv[optind - 1], "--", 2) == 0) {
                usage_error("%s: unknown flag", argv[optind - 1]);
            }
            char s[3] = {'-', (char)optopt, '\0'};
            usage_error("%s: unknown flag", s);
        }
    }
}

/* With -v, the library's log: one fprintf per line, so lines from its
 * threads do not interleave. */
static void log_line(void *arg, int level, const char *msg)
{
    (void)arg;
    static const char *const names[] = {"error", "warn", "notice", "info",
                                        "debug"};
    const char *name = level >= KV_LOG_ERROR && level <= KV_LOG_DEBUG
                           ? names[level - KV_LOG_ERROR]
                           : "log";
    fprintf(stderr, "kvdist: %s: %s\n", name, msg);
}

/* What a request was, for the message its failure gets. */
typedef enum {
    REQ_READ,   /* get: a plain read */
    REQ_CTX,    /* the read before a put or del: nothing written yet */
    REQ_WRITE,  /* a write: its failure may leave it on some replicas */
    REQ_CLUSTER /* members, where */
} req_t;

/* Prints what went wrong with rc and returns the exit code it deserves.
 * call holds the replica counts of the failed request, or is NULL. */
static int report(const cli_t *cli, const kv_call_t *call, req_t req,
                  const char *key, int rc)
{
    switch (rc) {
    case KV_OK:
        return 0;
    case KV_ENOTFOUND:
        fprintf(stderr, "kvdist: %s: not found\n", key);
        return EXIT_NOTFOUND;
    case KV_EUNAVAIL:
        /* Nothing reached enough replicas: a write was not applied
         * anywhere and may be sent again as it is. */
        fprintf(stderr, "kvdist: cannot reach the cluster at %s: %s%s\n",
                cli->urls, kv_strerror(rc),
                req == REQ_WRITE ? " (not written)" : "");
        return EXIT_UNREACHABLE;
    case KV_EQUORUM:
    case KV_ETIMEDOUT: {
        char counts[64] = "";
        if (call != NULL && call->needed > 0) {
            snprintf(counts, sizeof(counts), ": %d of %d replicas %s",
                     call->acked, call->needed,
                     req == REQ_WRITE ? "acknowledged" : "answered");
        }
        const char *tail = "";
        if (req == REQ_WRITE) {
            tail = " (the write may exist on some replicas)";
        } else if (req == REQ_CTX) {
            tail = " (reading the key before writing it; nothing was written)";
        }
        fprintf(stderr, "kvdist: %s%s%s\n",
                rc == KV_EQUORUM ? "quorum not reached" : "timed out", counts,
                tail);
        return EXIT_ERROR;
    }
    default:
        /* The node refuses a quorum above its n with KV_EINVAL, and the
         * client cannot check it beforehand. */
        fprintf(stderr, "kvdist: %s%s%s: %s%s\n", cli->cmd, key ? " " : "",
                key ? key : "", kv_strerror(rc),
                rc == KV_EINVAL && (cli->call.r > 0 || cli->call.w > 0)
                    ? " (is -r or -w above the cluster's n?)"
                    : "");
        return EXIT_ERROR;
    }
}

/* Opens the library as a client of the -c nodes; returns an exit code. */
static int open_client(const cli_t *cli, kv_t **kvp)
{
    kv_options_t *o = kv_options_create();
    if (o == NULL) {
        fprintf(stderr, "kvdist: %s\n", kv_strerror(KV_ENOMEM));
        return EXIT_ERROR;
    }
    int rc = kv_options_set(o, "role", "client");
    if (rc == 0 && (rc = kv_options_set(o, "join", cli->urls)) != 0) {
        /* The library's reason starts with the option's name, "join: ". */
        const char *why = kv_options_errmsg(o);
        if (strncmp(why, "join: ", 6) == 0) {
            why += 6;
        }
        fprintf(stderr, "kvdist: %s%s: %s\n", cli->from, cli->urls, why);
        kv_options_destroy(o);
        return EXIT_USAGE;
    }
    if (rc == 0 && cli->timeout_ms > 0) {
        /* Also the deadline of requests that take no kv_call_t (members,
         * where). */
        char ms[16];
        snprintf(ms, sizeof(ms), "%d", cli->timeout_ms);
        rc = kv_options_set(o, "timeout_ms", ms);
    }
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (cli->tls[i] != NULL) {
            rc = kv_options_set(o, tls_options[i], cli->tls[i]);
        }
    }
    if (rc != 0) {
        fprintf(stderr, "kvdist: options: %s\n", kv_options_errmsg(o));
        kv_options_destroy(o);
        return EXIT_ERROR;
    }
    if (cli->verbose > 0) {
        kv_options_set_logger(o, log_line, NULL,
                              cli->verbose > 1 ? KV_LOG_DEBUG : KV_LOG_INFO);
    }
    rc = kv_open(o, kvp);
    kv_options_destroy(o);
    if (rc == KV_EUNAVAIL) {
        return report(cli, NULL, REQ_CLUSTER, NULL, rc);
    }
    if (rc != 0) {
        fprintf(stderr, "kvdist: cannot connect to %s: %s%s%s\n", cli->urls,
                kv_strerror(rc), rc == KV_ENOTSUP ? " by libkvdist " : "",
                rc == KV_ENOTSUP ? kv_version() : "");
        return EXIT_ERROR;
    }
    return 0;
}

/* All of stdin, binary-safe, or NULL after saying why. The caller frees it
 * with free(). */
static void *read_stdin(size_t *lenp)
{
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, stdin);
        if (len < cap) {
            break; /* end of input or an error, told apart below */
        }
        char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (bigger == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (buf == NULL) {
        fprintf(stderr, "kvdist: reading the value from stdin: %s\n",
                kv_strerror(KV_ENOMEM));
        return NULL;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "kvdist: reading the value from stdin: %s\n",
                strerror(errno));
        free(buf);
        return NULL;
    }
    *lenp = len;
    return buf;
}

/* The sibling kv_get() would return under the default resolver: greatest
 * timestamp, ties by the byte-wise greatest value, then the longer one. */
static size_t newest_sibling(const kv_siblings_t *s)
{
    size_t best = 0;
    for (size_t i = 1; i < kv_siblings_count(s); i++) {
        const void *a, *b;
        size_t alen, blen;
        int64_t ta = kv_siblings_timestamp(s, i);
        int64_t tb = kv_siblings_timestamp(s, best);
        kv_siblings_value(s, i, &a, &alen);
        kv_siblings_value(s, best, &b, &blen);
        int cmp = memcmp(a, b, alen < blen ? alen : blen);
        if (ta > tb || (ta == tb && (cmp > 0 || (cmp == 0 && alen > blen)))) {
            best = i;
        }
    }
    return best;
}

static int cmd_get(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)nargs;
    kv_call_t call = cli->call;
    kv_siblings_t *s = NULL;
    int rc = kv_get_siblings(kv, args[0], strlen(args[0]), &call, &s);
    if (rc != 0) {
        return report(cli, &call, REQ_READ, args[0], rc);
    }
    size_t n = kv_siblings_count(s);
    if (n == 0) {
        kv_siblings_free(s);
        return report(cli, NULL, REQ_READ, args[0], KV_ENOTFOUND);
    }
    if (n > 1) {
        fprintf(stderr, "kvdist: note: %zu siblings, showing the newest\n", n);
    }
    const void *val;
    size_t len;
    kv_siblings_value(s, newest_sibling(s), &val, &len);
    size_t put = len > 0 ? fwrite(val, 1, len, stdout) : 0;
    kv_siblings_free(s);
    if (put < len) {
        fprintf(stderr, "kvdist: writing to stdout: %s\n", strerror(errno));
        return EXIT_ERROR;
    }
    return 0;
}

/* put and del: read for the context, then write as its successor. val NULL
 * means delete. */
static int write_key(const cli_t *cli, kv_t *kv, const char *key,
                     const void *val, size_t vlen)
{
    kv_call_t call = cli->call;
    kv_siblings_t *s = NULL;
    int rc = kv_get_siblings(kv, key, strlen(key), &call, &s);
    if (rc != 0) {
        return report(cli, &call, REQ_CTX, key, rc);
    }
    size_t clen = 0;
    const void *ctx = kv_siblings_context(s, &clen);
    call = cli->call;
    if (val != NULL) {
        rc = kv_put_ctx(kv, key, strlen(key), val, vlen, ctx, clen, &call);
    } else {
        rc = kv_delete_ctx(kv, key, strlen(key), ctx, clen, &call);
    }
    kv_siblings_free(s);
    return report(cli, &call, REQ_WRITE, key, rc);
}

static int cmd_put(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    if (nargs == 1 || strcmp(args[1], "-") == 0) {
        size_t len = 0;
        void *val = read_stdin(&len);
        if (val == NULL) {
            return EXIT_ERROR;
        }
        int code = write_key(cli, kv, args[0], val, len);
        free(val);
        return code;
    }
    return write_key(cli, kv, args[0], args[1], strlen(args[1]));
}

static int cmd_del(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)nargs;
    return write_key(cli, kv, args[0], NULL, 0);
}

/* One line per member, "id url status". A client that knows no member has
 * not reached any node. */
static int print_members(const cli_t *cli, int rc, kv_member_t *m, size_t count,
                         const char *key)
{
    if (rc == 0 && count == 0) {
        rc = KV_EUNAVAIL;
    }
    for (size_t i = 0; rc == 0 && i < count; i++) {
        printf("%s %s %s\n", m[i].id, m[i].url,
               kv_member_status_name(m[i].status));
    }
    kv_free(m);
    return report(cli, NULL, REQ_CLUSTER, key, rc);
}

static int cmd_members(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    kv_member_t *m = NULL;
    size_t count = 0;
    int rc = kv_members(kv, &m, &count);
    return print_members(cli, rc, m, count, NULL);
}

static int cmd_where(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)nargs;
    kv_member_t *m = NULL;
    size_t count = 0;
    int rc = kv_preference_list(kv, args[0], strlen(args[0]), &m, &count);
    return print_members(cli, rc, m, count, args[0]);
}

static void print_repair(const char *node, const kv_repair_status_t *st)
{
    printf("%s: trees %s, %s, pass %llu: %llu/%llu exchanges; totals: %llu "
           "keys repaired, %llu objects sent, %llu bytes sent, %llu "
           "tombstones purged\n",
           node, st->trees_ready ? "ready" : "building",
           st->running ? "running" : "idle", (unsigned long long)st->passes,
           (unsigned long long)st->exchanges_done,
           (unsigned long long)st->exchanges_total,
           (unsigned long long)st->keys_repaired,
           (unsigned long long)st->objects_sent,
           (unsigned long long)st->bytes_sent,
           (unsigned long long)st->tombstones_purged);
    fflush(stdout);
}

static int cmd_repair_status(const cli_t *cli, kv_t *kv, char **args,
                             int nargs)
{
    (void)nargs;
    kv_repair_status_t st;
    int rc = kv_repair_status(kv, args[0], &st);
    if (rc == 0) {
        print_repair(args[0], &st);
    }
    return report(cli, NULL, REQ_CLUSTER, args[0], rc);
}

/* Starts a pass on the node and follows it to its end, printing progress
 * whenever it moves. A pass already running when asked is let finish and
 * followed by the requested one. */
static int cmd_repair(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)nargs;
    kv_repair_status_t st;
    int rc = kv_repair_status(kv, args[0], &st);
    uint64_t want = st.passes + (st.running ? 2 : 1);
    if (rc == 0) {
        rc = kv_repair(kv, args[0]);
    }
    uint64_t shown = UINT64_MAX;
    while (rc == 0 && (rc = kv_repair_status(kv, args[0], &st)) == 0) {
        if (st.passes >= want) {
            break;
        }
        if (st.exchanges_done != shown) {
            shown = st.exchanges_done;
            print_repair(args[0], &st);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc == 0) {
        print_repair(args[0], &st);
    }
    return report(cli, NULL, REQ_CLUSTER, args[0], rc);
}

/* ------------------------------------------------------ status, stats */

/* The value of metric `name` (with label id="ID" when id is not NULL) in a
 * metrics text, or -1 when absent. Gauges here are counts, bytes, 0/1 and
 * ratios: never negative. */
static double metric_value(const char *text, const char *name, const char *id)
{
    char want[256];
    if (id != NULL) {
        snprintf(want, sizeof(want), "%s{id=\"%s\"} ", name, id);
    } else {
        snprintf(want, sizeof(want), "%s ", name);
    }
    size_t wlen = strlen(want);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, want, wlen) == 0) {
            char *end = NULL;
            double v = strtod(line + wlen, &end);
            return end != line + wlen && v >= 0 ? v : -1;
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return -1;
}

/* "1.2 MiB", or the exact count with --exact. */
static void format_bytes(const cli_t *cli, double v, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (v < 0) {
        snprintf(buf, size, "-");
        return;
    }
    if (cli->exact || v < 1024) {
        snprintf(buf, size, cli->exact ? "%.0f" : "%.0f B", v);
        return;
    }
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, "%.1f %s", v, units[u]);
}

static void format_count(double v, char *buf, size_t size)
{
    if (v < 0) {
        snprintf(buf, size, "-");
    } else {
        snprintf(buf, size, "%.0f", v);
    }
}

/* "12s", "5m", "3h", "2d": how long ago the Unix time `when` was. */
static void format_ago(double when, char *buf, size_t size)
{
    double d = (double)time(NULL) - when;
    d = d < 0 ? 0 : d;
    if (d < 120) {
        snprintf(buf, size, "%.0fs", d);
    } else if (d < 2 * 3600) {
        snprintf(buf, size, "%.0fm", d / 60);
    } else if (d < 2 * 86400) {
        snprintf(buf, size, "%.0fh", d / 3600);
    } else {
        snprintf(buf, size, "%.0fd", d / 86400);
    }
}

/* A member's anti-entropy state from its own metrics: "off", "building
 * trees", "running 2/4", "idle, pass 3, 12s ago", "idle, no pass yet". */
static void format_aae(const char *text, char *buf, size_t size)
{
    if (text == NULL) {
        snprintf(buf, size, "-");
        return;
    }
    double ready = metric_value(text, "kvdist_aae_trees_ready", NULL);
    if (metric_value(text, "kvdist_aae_enabled", NULL) == 0 || ready < 0) {
        snprintf(buf, size, "off");
    } else if (ready == 0) {
        snprintf(buf, size, "building trees");
    } else if (metric_value(text, "kvdist_aae_running", NULL) > 0) {
        snprintf(buf, size, "running %.0f/%.0f",
                 metric_value(text, "kvdist_aae_pass_exchanges_done", NULL),
                 metric_value(text, "kvdist_aae_pass_exchanges", NULL));
    } else {
        double passes = metric_value(text, "kvdist_aae_passes", NULL);
        double last =
            metric_value(text, "kvdist_aae_last_full_pass_seconds", NULL);
        if (passes <= 0 || last <= 0) {
            snprintf(buf, size, "idle, no pass yet");
        } else {
            char ago[32];
            format_ago(last, ago, sizeof(ago));
            snprintf(buf, size, "idle, pass %.0f, %s ago", passes, ago);
        }
    }
}

/* One member's metrics, asked on a thread of its own so that members that
 * do not answer are waited for together, not one after another. */
typedef struct ask {
    kv_t *kv;
    const char *id;
    char *text; /* kv_free */
    int rc;
    pthread_t thread;
    int started;
} ask_t;

static void *ask_run(void *arg)
{
    ask_t *a = arg;
    a->rc = kv_node_metrics(a->kv, a->id, &a->text, NULL);
    return NULL;
}

/* Finds the contacted node (see the file comment) among the members m:
 * its index in *idx and its metrics in *text. Returns 0 or the last
 * error. */
static int contact(const cli_t *cli, kv_t *kv, const kv_member_t *m,
                   size_t count, size_t *idx, char **text)
{
    int rc = KV_EUNAVAIL;
    int named = 0; /* a -c URL named a member */
    for (const char *s = cli->urls; s != NULL && *s != '\0';) {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        for (size_t i = 0; i < count; i++) {
            if (strlen(m[i].url) == n && strncmp(m[i].url, s, n) == 0) {
                named = 1;
                if ((rc = kv_node_metrics(kv, m[i].id, text, NULL)) == 0) {
                    *idx = i;
                    return 0;
                }
            }
        }
        s = comma != NULL ? comma + 1 : NULL;
    }
    for (size_t i = 0; !named && i < count; i++) {
        if (m[i].status == KV_MEMBER_UP &&
            (rc = kv_node_metrics(kv, m[i].id, text, NULL)) == 0) {
            *idx = i;
            return 0;
        }
    }
    return rc;
}

/* The members kv_members lists, or an exit code after saying why (a
 * client that knows no member has reached no node). */
static int list_members(const cli_t *cli, kv_t *kv, kv_member_t **m,
                        size_t *count)
{
    int rc = kv_members(kv, m, count);
    if (rc == 0 && *count == 0) {
        kv_free(*m);
        *m = NULL;
        rc = KV_EUNAVAIL;
    }
    return rc != 0 ? report(cli, NULL, REQ_CLUSTER, NULL, rc) : 0;
}

typedef struct row {
    char f[8][600]; /* the columns, as printed */
} row_t;

static const char *const status_head[8] = {"ID",    "ADDRESS",     "STATUS",
                                           "SHARE", "KEYS",        "BYTES",
                                           "HINTS", "ANTI-ENTROPY"};

static int cmd_status(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    kv_member_t *m = NULL;
    size_t count = 0;
    int code = list_members(cli, kv, &m, &count);
    if (code != 0) {
        return code;
    }
    ask_t *ask = calloc(count, sizeof(*ask));
    row_t *rows = calloc(count, sizeof(*rows));
    if (ask == NULL || rows == NULL) {
        free(ask);
        free(rows);
        kv_free(m);
        return report(cli, NULL, REQ_CLUSTER, NULL, KV_ENOMEM);
    }
    size_t me = 0;
    char *view = NULL; /* the contacted node's metrics */
    int rc = contact(cli, kv, m, count, &me, &view);
    if (rc != 0) {
        free(ask);
        free(rows);
        kv_free(m);
        return report(cli, NULL, REQ_CLUSTER, NULL,
                      rc == KV_ETIMEDOUT ? KV_EUNAVAIL : rc);
    }
    /* Everyone the contacted node sees up is asked at once; one it sees
     * down is not asked: it would only cost the whole timeout. */
    for (size_t i = 0; i < count; i++) {
        ask[i].kv = kv;
        ask[i].id = m[i].id;
        ask[i].rc = KV_EUNAVAIL;
        double up = metric_value(view, "kvdist_member_up", m[i].id);
        if (up >= 0) {
            m[i].status = up > 0 ? KV_MEMBER_UP : KV_MEMBER_DOWN;
        }
        if (i == me) {
            ask[i].text = view;
            ask[i].rc = 0;
        } else if (m[i].status == KV_MEMBER_UP) {
            ask[i].started =
                pthread_create(&ask[i].thread, NULL, ask_run, &ask[i]) == 0;
            if (!ask[i].started) {
                ask_run(&ask[i]);
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (ask[i].started) {
            pthread_join(ask[i].thread, NULL);
        }
        if (ask[i].rc != 0 && m[i].status == KV_MEMBER_UP) {
            fprintf(stderr, "kvdist: status: %s: %s\n", m[i].id,
                    kv_strerror(ask[i].rc));
        }
        const char *t = ask[i].rc == 0 ? ask[i].text : NULL;
        row_t *r = &rows[i];
        snprintf(r->f[0], sizeof(r->f[0]), "%s", m[i].id);
        snprintf(r->f[1], sizeof(r->f[1]), "%s", m[i].url);
        snprintf(r->f[2], sizeof(r->f[2]), "%s",
                 kv_member_status_name(m[i].status));
        double share = metric_value(view, "kvdist_ring_share_ratio", m[i].id);
        if (share >= 0) {
            snprintf(r->f[3], sizeof(r->f[3]), "%.1f%%", 100 * share);
        } else {
            snprintf(r->f[3], sizeof(r->f[3]), "-");
        }
        format_count(t ? metric_value(t, "kvdist_store_keys_estimate", NULL)
                       : -1,
                     r->f[4], sizeof(r->f[4]));
        format_bytes(cli, t ? metric_value(t, "kvdist_store_bytes", NULL) : -1,
                     r->f[5], sizeof(r->f[5]));
        format_count(t ? metric_value(t, "kvdist_hints_pending", NULL) : -1,
                     r->f[6], sizeof(r->f[6]));
        format_aae(t, r->f[7], sizeof(r->f[7]));
    }
    for (size_t i = 0; i < count; i++) {
        kv_free(ask[i].text); /* view among them */
    }
    int width[8];
    for (int c = 0; c < 8; c++) {
        width[c] = (int)strlen(status_head[c]);
        for (size_t i = 0; i < count; i++) {
            int w = (int)strlen(rows[i].f[c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (size_t i = 0; i <= count; i++) {
        for (int c = 0; c < 8; c++) {
            const char *f = i == 0 ? status_head[c] : rows[i - 1].f[c];
            if (c < 7) {
                printf("%-*s  ", width[c], f);
            } else {
                printf("%s\n", f);
            }
        }
    }
    free(ask);
    free(rows);
    kv_free(m);
    return 0;
}

/* The metrics text without its # HELP / # TYPE lines: "name value" (with
 * labels, if any) per line. */
static void print_samples(const char *text)
{
    for (const char *line = text; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);
        if (n > 0 && line[0] != '#') {
            printf("%.*s\n", (int)n, line);
        }
        line += n + (nl != NULL);
    }
}

static int cmd_stats(const cli_t *cli, kv_t *kv, char **args, int nargs)
{
    kv_member_t *m = NULL;
    size_t count = 0;
    int code = list_members(cli, kv, &m, &count);
    if (code != 0) {
        return code;
    }
    char *text = NULL;
    int rc = 0;
    if (nargs == 0) {
        size_t me = 0;
        rc = contact(cli, kv, m, count, &me, &text);
        if (rc != 0) {
            kv_free(m);
            return report(cli, NULL, REQ_CLUSTER, NULL,
                          rc == KV_ETIMEDOUT ? KV_EUNAVAIL : rc);
        }
    } else {
        size_t i = 0;
        while (i < count && strcmp(m[i].id, args[0]) != 0) {
            i++;
        }
        if (i == count) {
            fprintf(stderr,
                    "kvdist: stats: no member '%s' (see kvdist "
                    "members)\n",
                    args[0]);
            kv_free(m);
            return EXIT_NOTFOUND;
        }
        rc = kv_node_metrics(kv, args[0], &text, NULL);
        if (rc == KV_EUNAVAIL || rc == KV_ETIMEDOUT) {
            fprintf(stderr, "kvdist: stats: cannot reach member %s at %s: %s\n",
                    args[0], m[i].url, kv_strerror(rc));
            kv_free(m);
            return EXIT_UNREACHABLE;
        }
    }
    kv_free(m);
    if (rc == 0) {
        print_samples(text);
    }
    kv_free(text);
    return report(cli, NULL, REQ_CLUSTER, nargs > 0 ? args[0] : NULL, rc);
}

static const command_t commands[] = {
    {"put", 1, 2, "KEY [VALUE|-]", "store VALUE (or stdin if - or absent)",
     cmd_put},
    {"get", 1, 1, "KEY", "print the value, byte for byte", cmd_get},
    {"del", 1, 1, "KEY", "delete the key", cmd_del},
    {"members", 0, 0, "", "list the members: id url status", cmd_members},
    {"where", 1, 1, "KEY", "list the members holding KEY, in ring order",
     cmd_where},
    {"status", 0, 0, "",
     "one line per member: status, ring share, keys, bytes, hints, "
     "anti-entropy",
     cmd_status},
    {"stats", 0, 1, "[NODE]",
     "print NODE's counters and gauges, one 'name value' a line", cmd_stats},
    {"repair", 1, 1, "NODE", "run an anti-entropy pass on NODE and follow it",
     cmd_repair},
    {"repair-status", 1, 1, "NODE", "print NODE's anti-entropy progress",
     cmd_repair_status},
};

static const size_t ncommands = sizeof(commands) / sizeof(commands[0]);

static void usage(FILE *f)
{
    fprintf(f, "usage: kvdist [-c URL[,URL...]] [-r R] [-w W] [--timeout MS] "
               "COMMAND ...\n"
               "\n"
               "commands:\n");
    int width = 0;
    for (size_t i = 0; i < ncommands; i++) {
        int w = (int)(strlen(commands[i].name) + 1 + strlen(commands[i].args));
        width = w > width ? w : width;
    }
    for (size_t i = 0; i < ncommands; i++) {
        char syn[64];
        snprintf(syn, sizeof(syn), "%s%s%s", commands[i].name,
                 commands[i].args[0] ? " " : "", commands[i].args);
        fprintf(f, "  %-*s  %s\n", width, syn, commands[i].help);
    }
    fprintf(
        f, "\n"
           "options:\n"
           "  -c, --connect URLS  nodes to reach the cluster through\n"
           "                      (default $KVDIST_URL, else " DEFAULT_URL ")\n"
           "  -r R                read quorum of this request\n"
           "  -w W                write quorum of this request\n"
           "  --timeout MS        deadline of each request, in milliseconds\n"
           "  --exact             status: sizes in bytes, not KiB, MiB...\n"
           "  --tls-ca-file PATH  tls+tcp:// cluster: its CA (PEM)\n"
           "  --tls-cert-file PATH  this client's certificate (PEM)\n"
           "  --tls-key-file PATH   its private key (PEM)\n"
           "  -v, --verbose       show the library's log (twice: debug)\n"
           "  -h, --help          print this help and exit\n"
           "  -V, --version       print the version and exit\n"
           "\n"
           "exit status: 0 ok, 1 not found, 2 usage error, 3 other error, "
           "4 cluster (or member) unreachable\n");
}

int main(int argc, char **argv)
{
    cli_t cli = {NULL, NULL, KV_CALL_INIT, 0, 0, 0, NULL, {NULL, NULL, NULL}};
    parse_flags(argc, argv, &cli);
    if (optind >= argc) {
        usage_error("%s", "no command given");
    }
    cli.cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    const command_t *cmd = NULL;
    for (size_t i = 0; i < ncommands; i++) {
        if (strcmp(commands[i].name, cli.cmd) == 0) {
            cmd = &commands[i];
        }
    }
    if (cmd == NULL) {
        usage_error("unknown command '%s'", cli.cmd);
    }
    if (nargs < cmd->min || nargs > cmd->max) {
        fprintf(stderr, "kvdist: usage: kvdist [FLAG...] %s%s%s\n", cmd->name,
                cmd->args[0] ? " " : "", cmd->args);
        return EXIT_USAGE;
    }
    if (nargs > 0 && args[0][0] == '\0') {
        usage_error("%s: KEY must not be empty", cmd->name);
    }

    kv_t *kv = NULL;
    int code = open_client(&cli, &kv);
    if (code != 0) {
        return code;
    }
    code = cmd->run(&cli, kv, args, nargs);
    /* Output only counts once it reached stdout: a full disk is an error,
     * not a success. */
    if (code == 0 && fflush(stdout) != 0) {
        fprintf(stderr, "kvdist: writing to stdout: %s\n", strerror(errno));
        code = EXIT_ERROR;
    }
    /* Closed on every path before returning: the library's threads must not
     * race with exit(). */
    kv_close(kv);
    return code;
}
