/*
 * kvdistd.c - the libkvdist peer daemon: one node of a cluster, holding its
 * share of the data in a directory and serving its peers and clients.
 *
 * Each flag is one library option (--cache-size sets cache_size, ...), and
 * so is each line of a --config file (cache_size = 256MiB); the few options
 * without a flag (file_only_options) are named by --help. The library
 * does all validation and this program only translates its answers into
 * messages and exit codes: 0 after a clean stop, 1 when the node cannot
 * start, 2 for a usage or configuration error. The library's option table
 * (kv_options_name, kv_options_doc) provides the names --print-config
 * prints and the help text of each flag. It logs to stderr, one line per
 * event, and says "ready" once it serves, which is what scripts wait for.
 *
 * Precedence: defaults, then the --config file, then the flags, whatever
 * their order on the command line (flags are collected first and applied
 * after the file).
 *
 * The library runs its own threads. The main thread only parses flags,
 * opens the node, then sleeps in sigwait() until SIGINT or SIGTERM, so no
 * code runs in a signal handler and no global state is needed.
 *
 * Run:
 *     kvdistd --id n1 --listen tcp://127.0.0.1:7000 --data /var/lib/kv/n1
 *     kvdistd --id n2 --listen tcp://127.0.0.1:7001 --data /var/lib/kv/n2 \
 *             --join tcp://127.0.0.1:7000
 *     kvdistd --config /etc/kvdist/kvdistd.conf
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
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
 * index in this table is the getopt_long value of the flag. The help text
 * is the library's kv_options_doc() of the option, so the two agree. */
static const struct {
    const char *flag;
    const char *option;
    const char *arg;
} flag_options[] = {
    {"id", "node_id", "ID"},
    {"listen", "listen", "URL"},
    {"data", "data_dir", "DIR"},
    {"join", "join", "URL[,URL]"},
    {"n", "n", "N"},
    {"r", "r", "R"},
    {"w", "w", "W"},
    {"vnodes", "vnodes", "V"},
    {"sync", "sync", "MODE"},
    {"cache-size", "cache_size", "BYTES"},
    {"timeout-ms", "timeout_ms", "MS"},
    {"max-key-size", "max_key_size", "BYTES"},
    {"max-value-size", "max_value_size", "BYTES"},
    {"clock-max", "clock_max", "N"},
    {"gossip-interval-ms", "gossip_interval_ms", "MS"},
    {"phi-convict", "phi_convict", "PHI"},
    {"sloppy-quorum", "sloppy_quorum", "on|off"},
    {"hinted-handoff", "hinted_handoff", "on|off"},
    {"handoff-rate", "handoff_rate", "N"},
    {"anti-entropy", "anti_entropy", "on|off"},
    {"aae-interval-ms", "aae_interval_ms", "MS"},
    {"aae-rebuild-rate", "aae_rebuild_rate", "N"},
    {"tombstone-grace-ms", "tombstone_grace_ms", "MS"},
    {"resp", "resp", "HOST:PORT"},
    {"http", "http", "HOST:PORT"},
    {"http-tls-cert-file", "http_tls_cert_file", "PATH"},
    {"http-tls-key-file", "http_tls_key_file", "PATH"},
    {"auth-password", "auth_password", "PASSWORD"},
    {"auth-password-file", "auth_password_file", "PATH"},
    {"max-clients", "max_clients", "N"},
    {"max-members", "max_members", "N"},
    {"peer-buffer-budget", "peer_buffer_budget", "BYTES"},
    {"tls-ca-file", "tls_ca_file", "PATH"},
    {"tls-cert-file", "tls_cert_file", "PATH"},
    {"tls-key-file", "tls_key_file", "PATH"},
    {"fault-file", "fault_file", "PATH"},
};

#define N_FLAG_OPTIONS (sizeof(flag_options) / sizeof(flag_options[0]))

/* Library options that have no flag and are set only in a --config file
 * (kvdistd(1), CONFIGURATION FILE). role: a daemon is a peer; a client
 * holds no data and is no member, which is for programs that embed the
 * library, so it is not offered on the command line. Every option of
 * kv_options_name() is in flag_options or here (check_options.c). */
static const char *const file_only_options[] = {"role"};

#define N_FILE_ONLY_OPTIONS                                                    \
    (sizeof(file_only_options) / sizeof(file_only_options[0]))

/* The daemon's own flags, which are no library option. */
enum {
    FLAG_LOG_LEVEL = 1000, /* above every flag_options index */
    FLAG_CONFIG,
    FLAG_PRINT_CONFIG,
    FLAG_HELP = 'h',
    FLAG_VERSION = 'V'
};

static const struct {
    const char *flag;
    int has_arg;
    int val;
    const char *left; /* as --help shows it */
    const char *help;
} daemon_flags[] = {
    {"config", required_argument, FLAG_CONFIG, "--config FILE",
     "read options from FILE first (name = value lines)"},
    {"print-config", no_argument, FLAG_PRINT_CONFIG, "--print-config",
     "print the effective configuration and exit"},
    {"log-level", required_argument, FLAG_LOG_LEVEL, "--log-level LEVEL",
     "error | warn | notice | info | debug (default notice)"},
    {"help", no_argument, FLAG_HELP, "-h, --help", "print this help and exit"},
    {"version", no_argument, FLAG_VERSION, "-V, --version",
     "print the version and exit"},
};

#define N_DAEMON_FLAGS (sizeof(daemon_flags) / sizeof(daemon_flags[0]))

/* What the command line asked for besides options (no allocation, so
 * that an early exit leaks nothing). */
typedef struct cmdline {
    const char *config; /* --config FILE, NULL: none */
    bool print_config;
    struct option longopts[N_FLAG_OPTIONS + N_DAEMON_FLAGS + 1];
} cmdline_t;

static void usage(FILE *f)
{
    /* Defaults come from the library itself, so --help cannot go stale. */
    kv_options_t *defaults = kv_options_create();
    fprintf(f, "usage: kvdistd --data DIR [--id ID] [--listen URL] "
               "[--join URL[,URL...]] [FLAG...]\n"
               "       kvdistd --config FILE [FLAG...]\n"
               "       kvdistd [--config FILE] [FLAG...] --print-config\n\n");
    for (size_t i = 0; i < N_FLAG_OPTIONS; i++) {
        char def[128] = "";
        if (defaults != NULL) {
            kv_options_get(defaults, flag_options[i].option, def, sizeof(def));
        }
        const char *doc = kv_options_doc(flag_options[i].option);
        char left[64];
        snprintf(left, sizeof(left), "--%s %s", flag_options[i].flag,
                 flag_options[i].arg);
        fprintf(f, "  %-24s %s%s%s%s\n", left, doc != NULL ? doc : "",
                def[0] != '\0' ? " (default " : "", def,
                def[0] != '\0' ? ")" : "");
    }
    kv_options_destroy(defaults);
    for (size_t i = 0; i < N_DAEMON_FLAGS; i++) {
        fprintf(f, "  %-24s %s\n", daemon_flags[i].left, daemon_flags[i].help);
    }
    fprintf(f, "\nSet only in a --config file (no flag): ");
    for (size_t i = 0; i < N_FILE_ONLY_OPTIONS; i++) {
        fprintf(f, "%s%s", i > 0 ? ", " : "", file_only_options[i]);
    }
    fprintf(f, ".\n");
    fprintf(f, "\nFlags override the --config file whatever their order. "
               "Stops cleanly on\nSIGINT or SIGTERM. See kvdistd(1).\n");
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

/*
 * First pass over the command line: the daemon's own flags into cl, and
 * every word checked, without applying any option yet, so that the
 * --config file can be read first and the flags override it whatever
 * their order. --help, --version and malformed command lines end here.
 */
static void parse_flags(int argc, char **argv, cmdline_t *cl, logctx_t *lc)
{
    for (size_t i = 0; i < N_FLAG_OPTIONS; i++) {
        cl->longopts[i] = (struct option){flag_options[i].flag,
                                          required_argument, NULL, (int)i};
    }
    for (size_t i = 0; i < N_DAEMON_FLAGS; i++) {
        cl->longopts[N_FLAG_OPTIONS + i] =
            (struct option){daemon_flags[i].flag, daemon_flags[i].has_arg,
                            NULL, daemon_flags[i].val};
    }
    cl->longopts[N_FLAG_OPTIONS + N_DAEMON_FLAGS] =
        (struct option){NULL, 0, NULL, 0};

    opterr = 0; /* our own one-line messages, named "kvdistd" not argv[0] */
    for (;;) {
        int c = getopt_long(argc, argv, ":hV", cl->longopts, NULL);
        if (c == -1) {
            break;
        }
        if (c >= 0 && (size_t)c < N_FLAG_OPTIONS) {
            continue; /* applied by apply_flags, after the file */
        }
        switch (c) {
        case FLAG_CONFIG:
            if (cl->config != NULL) {
                usage_error("%s: given more than once", "--config");
            }
            cl->config = optarg;
            break;
        case FLAG_PRINT_CONFIG:
            cl->print_config = true;
            break;
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
}

/* Second pass: applies the option flags in the order given (the last of a
 * repeated flag wins). The first pass checked every word. Returns 0, or 2
 * after a one-line message for a refused value. */
static int apply_flags(int argc, char **argv, const cmdline_t *cl,
                       kv_options_t *o)
{
    optind = 0; /* glibc: start over, as on a fresh command line */
    for (;;) {
        int c = getopt_long(argc, argv, ":hV", cl->longopts, NULL);
        if (c == -1) {
            return 0;
        }
        if (c < 0 || (size_t)c >= N_FLAG_OPTIONS) {
            continue;
        }
        int rc = kv_options_set(o, flag_options[c].option, optarg);
        if (rc != 0) {
            fprintf(stderr, "kvdistd: --%s: %s\n", flag_options[c].flag,
                    option_reason(o, flag_options[c].option, rc));
            return 2;
        }
        if (strcmp(flag_options[c].option, "auth_password") == 0) {
            /* Out of /proc/PID/cmdline from now on, as MySQL's clients
             * do; ps may still have seen it before, which is why
             * --auth-password-file exists. */
            memset(optarg, 'x', strlen(optarg));
        }
    }
}

/* ------------------------------------------------------- the config file */

/* Space as the file format knows it; \r so that CRLF files read too. */
static bool conf_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims s[0..*n) of surrounding space; returns the new start. */
static char *conf_trim(char *s, size_t *n)
{
    while (*n > 0 && conf_space(*s)) {
        s++;
        (*n)--;
    }
    while (*n > 0 && conf_space(s[*n - 1])) {
        (*n)--;
    }
    s[*n] = '\0';
    return s;
}

/* The message of a bad line; returns read_config's status. */
static int conf_fail(const char *path, size_t line, const char *why)
{
    fprintf(stderr, "kvdistd: %s:%zu: %s\n", path, line, why);
    return 2;
}

/*
 * Reads a config file of "name = value" lines into o, in file order (a
 * name given twice: the later line wins). A '#' at the start of a line or
 * after a space or tab starts a comment to the end of the line; a '#'
 * inside a word ("/srv/kv#2") is part of the value. Blank lines and the
 * space around name and value are ignored. The first bad line stops the
 * reading with "kvdistd: FILE:LINE: REASON", the reason being the
 * library's own (kv_options_errmsg). Returns 0, or 2 (the exit status)
 * after that message.
 */
static int read_config(const char *path, kv_options_t *o)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kvdistd: cannot read config file %s: %s\n", path,
                strerror(errno));
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    size_t lineno = 0;
    ssize_t got;
    int status = 0;
    errno = 0;
    while (status == 0 && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        if (memchr(line, '\0', n) != NULL) {
            status = conf_fail(path, lineno, "line contains a NUL byte");
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' ||
                                   line[i - 1] == '\t')) {
                n = i;
                break;
            }
        }
        char *text = conf_trim(line, &n);
        if (n == 0) {
            continue;
        }
        char *eq = strchr(text, '=');
        if (eq == NULL) {
            status = conf_fail(path, lineno, "expected 'name = value'");
            break;
        }
        size_t nlen = (size_t)(eq - text);
        size_t vlen = n - nlen - 1;
        char *value = conf_trim(eq + 1, &vlen);
        char *name = conf_trim(text, &nlen);
        if (nlen == 0) {
            status =
                conf_fail(path, lineno, "expected 'name = value': no name");
            break;
        }
        int rc = kv_options_set(o, name, value);
        if (rc != 0) {
            const char *why = kv_options_errmsg(o);
            status = conf_fail(path, lineno,
                               why[0] != '\0' ? why : kv_strerror(rc));
            break;
        }
        errno = 0;
    }
    if (status == 0 && ferror(f)) {
        /* e.g. EISDIR: fopen opens a directory, reading it fails */
        fprintf(stderr, "kvdistd: cannot read config file %s: %s\n", path,
                strerror(errno != 0 ? errno : EIO));
        status = 2;
    }
    free(line);
    fclose(f);
    return status;
}

/* A value the file format can carry back unchanged: no line break, no
 * surrounding space (trimmed) and no " #" (a comment). Only the paths,
 * data_dir and fault_file, can hold such text; every other option refuses
 * it. */
static bool conf_representable(const char *v)
{
    size_t n = strlen(v);
    if (n > 0 && (conf_space(v[0]) || conf_space(v[n - 1]))) {
        return false;
    }
    return strpbrk(v, "\n") == NULL && strstr(v, " #") == NULL &&
           strstr(v, "\t#") == NULL && v[0] != '#';
}

/*
 * --print-config: every option in the library's order, its doc as a
 * comment above it, as --config reads it back. An option without a value
 * (an empty string: listen, join, http, resp, data_dir unset) is printed
 * commented out ("# join ="), since an empty value would be refused.
 */
static int print_config(const kv_options_t *o)
{
    printf("# kvdistd configuration (libkvdist %s): read it with "
           "kvdistd --config FILE\n",
           kv_version());
    char value[8192];
    for (size_t i = 0; kv_options_name(i) != NULL; i++) {
        const char *name = kv_options_name(i);
        /* A value that fills the buffer may be cut short (join has no
         * bound): refuse it rather than print half of it. */
        if (kv_options_get(o, name, value, sizeof(value)) != 0 ||
            strlen(value) >= sizeof(value) - 1) {
            fprintf(stderr, "kvdistd: %s: cannot read the option whole\n",
                    name);
            return 1;
        }
        if (!conf_representable(value)) {
            fprintf(stderr,
                    "kvdistd: %s: value cannot be written in a config file "
                    "(a line break, surrounding space or ' #')\n",
                    name);
            return 1;
        }
        if (value[0] == '\0') {
            printf("\n# %s\n# %s =\n", kv_options_doc(name), name);
        } else {
            printf("\n# %s\n%s = %s\n", kv_options_doc(name), name, value);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kvdistd: --print-config: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/*
 * Raises the soft open-file limit to the hard one before kv_open, which
 * derives max_clients (when 0) from the soft limit: 1024, the usual
 * default, is far too few for a node serving clients, RocksDB's files and
 * its peers (issue 12: 1,100 idle HTTP connections made the node
 * unreachable). A service manager sets the hard limit (LimitNOFILE=).
 */
static void raise_nofile(logctx_t *lc)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        daemon_log(lc, KV_LOG_WARN, "kvdistd: open files: getrlimit: %s",
                   strerror(errno));
        return;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max) {
        daemon_log(lc, KV_LOG_NOTICE,
                   "kvdistd: open files: soft limit %llu (the hard limit)",
                   (unsigned long long)before);
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        daemon_log(lc, KV_LOG_WARN,
                   "kvdistd: open files: cannot raise soft limit %llu to "
                   "%llu: %s; keeping %llu",
                   (unsigned long long)before, (unsigned long long)rl.rlim_max,
                   strerror(errno), (unsigned long long)before);
        return;
    }
    daemon_log(lc, KV_LOG_NOTICE,
               "kvdistd: open files: soft limit %llu -> %llu",
               (unsigned long long)before, (unsigned long long)rl.rlim_cur);
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
        /* Or a file an option names (auth_password_file, the HTTPS
         * certificate): the detail in brackets says which. */
        snprintf(buf, size,
                 " (inconsistent options, or a file an option "
                 "names)");
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
    cmdline_t cl = {.config = NULL, .print_config = false};
    parse_flags(argc, argv, &cl, &lc);
    kv_options_t *o = kv_options_create();
    if (o == NULL) {
        fprintf(stderr, "kvdistd: %s\n", kv_strerror(KV_ENOMEM));
        return 1;
    }
    /* Defaults, then the file, then the flags. */
    int status = cl.config != NULL ? read_config(cl.config, o) : 0;
    if (status == 0) {
        status = apply_flags(argc, argv, &cl, o);
    }
    if (status != 0) {
        kv_options_destroy(o);
        return status;
    }
    if (cl.print_config) {
        int prc = print_config(o);
        kv_options_destroy(o);
        return prc;
    }

    char listen[512], data[4096], http[300], cert[8];
    kv_options_get(o, "node_id", lc.id, sizeof(lc.id));
    kv_options_get(o, "http", http, sizeof(http));
    kv_options_get(o, "http_tls_cert_file", cert, sizeof(cert));
    kv_options_get(o, "listen", listen, sizeof(listen));
    kv_options_get(o, "data_dir", data, sizeof(data));
    if (data[0] == '\0') {
        kv_options_destroy(o);
        usage_error("%s is required", "--data DIR (or data_dir in --config)");
    }
    kv_options_set_logger(o, log_line, &lc, lc.level);
    raise_nofile(&lc);
    /* The store is for this user alone, whatever umask started us (as
     * PostgreSQL does): RocksDB creates its files 0644 & ~umask, so 077
     * makes them 0600; the library creates the directory 0700 itself. */
    umask(077);

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
        /* Every option came from a flag or the config file, so
         * inconsistent options are a usage error like a refused flag. */
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
        daemon_log(&lc, KV_LOG_NOTICE, "kvdistd: HTTP API on %s://%s/",
                   cert[0] != '\0' ? "https" : "http", http);
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
