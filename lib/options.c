/*
 * options.c - string-keyed settings (kv_options_t): parsing, validation,
 * defaults, and the table that names them all.
 *
 * Owns the option table (opt_rows): one row per setting with its name, its
 * kind, its kv_config_t field, its bounds, its default text, the reason a
 * refused value gets and a one-line doc. kv_options_set, kv_options_get,
 * kv_options_create (the defaults), the enumeration (kv_options_name,
 * kv_options_doc) and the deep copy and free of a configuration all read
 * it, so the daemon's flags, its config file and --help describe the same
 * list. A failed set changes nothing and leaves a reason in the option
 * set's errmsg. A secret row (auth_password) is write-only: it reads back
 * as "" and its text is wiped when replaced or freed, so no --help,
 * --print-config or log built from the options shows it. The table is
 * constant; an option set is used by one thread at a time (kvdist.h), so
 * nothing here takes a lock.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvlimits.h"
#include "ring.h"
#include "store.h"

#define OPT_MAX_REPLICAS 16
#define OPT_STR_(x) #x
#define OPT_STR(x) OPT_STR_(x)

static void opt_fail(kv_options_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void opt_fail(kv_options_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->errmsg, sizeof(o->errmsg), fmt, ap);
    va_end(ap);
}

static int parse_int(const char *s, long long min, long long max,
                     long long *out)
{
    if (*s == '\0' || isspace((unsigned char)*s)) {
        return KV_EINVAL;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return KV_EINVAL;
    }
    *out = v;
    return 0;
}

int options_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s)) {
        return KV_EINVAL;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0) {
        return KV_EINVAL;
    }
    unsigned shift = 0;
    if (*end != '\0') {
        static const struct {
            const char *suffix;
            unsigned shift;
        } units[] = {{"k", 10}, {"K", 10}, {"KiB", 10}, {"KB", 10},
                     {"m", 20}, {"M", 20}, {"MiB", 20}, {"MB", 20},
                     {"g", 30}, {"G", 30}, {"GiB", 30}, {"GB", 30}};
        bool found = false;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(end, units[i].suffix) == 0) {
                shift = units[i].shift;
                found = true;
                break;
            }
        }
        if (!found) {
            return KV_EINVAL;
        }
    }
    if (shift > 0 && v > (UINT64_MAX >> shift)) {
        return KV_EINVAL;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

/* Node ids appear in URLs, metrics labels and logs: keep them plain. */
bool options_valid_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KV_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') {
            return false;
        }
    }
    return true;
}

bool options_valid_url(const char *s)
{
    static const char *const schemes[] = {"tcp://", "ipc://", "tls+tcp://"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(s, schemes[i], n) == 0 && s[n] != '\0' &&
            strlen(s) <= KV_URL_MAX && strpbrk(s, ", \t\r\n") == NULL) {
            return true;
        }
    }
    return false;
}

/* HOST:PORT for a front end (RESP, HTTP): a host name, IPv4 address or
 * [IPv6] literal, then a port from min_port to 65535. NNG resolves the
 * host when the node opens. */
static bool valid_host_port(const char *s, long long min_port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || strlen(s) > 255) {
        return false;
    }
    for (const char *p = s; p < colon; p++) {
        if (!isalnum((unsigned char)*p) && strchr(".-_[]:", *p) == NULL) {
            return false;
        }
    }
    bool bracketed = s[0] == '[' && colon[-1] == ']' && colon - s > 2;
    if ((s[0] == '[' || memchr(s, ':', (size_t)(colon - s)) != NULL) &&
        !bracketed) {
        return false; /* an IPv6 literal must be bracketed */
    }
    long long port = 0;
    return parse_int(colon + 1, min_port, 65535, &port) == 0;
}

static bool valid_url_list(const char *s)
{
    /* Split by hand: strtok would skip empty items ("a,,b") silently. */
    char url[KV_URL_MAX + 1];
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (n == 0 || n >= sizeof(url)) {
            return false;
        }
        memcpy(url, s, n);
        url[n] = '\0';
        if (!options_valid_url(url)) {
            return false;
        }
        if (comma == NULL) {
            return true;
        }
        s = comma + 1;
    }
}

static int parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0 ||
        strcmp(s, "yes") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 ||
        strcmp(s, "0") == 0 || strcmp(s, "no") == 0) {
        *out = false;
        return 0;
    }
    return KV_EINVAL;
}

/*
 * The option table. Each row holds everything about one option: its name,
 * how its text is parsed and printed (kind), the kv_config_t field it lives
 * in, its bounds, its default (as kv_options_get prints it, so a default
 * reads back as its own text), the reason given when a value is refused,
 * and a one-line doc for --help, config files and the like.
 *
 * kv_options_create applies the defaults through the same parser, so the
 * table is the only place a default is written down.
 */
typedef enum {
    KIND_STR,  /* owned string, checked by valid(); NULL until set */
    KIND_INT,  /* decimal integer from min to max */
    KIND_SIZE, /* byte count with an optional suffix, from min to max */
    KIND_BOOL, /* on/off and friends, printed on/off */
    KIND_ENUM  /* one of names[], stored as its index */
} opt_kind;

/* The C type of the field, chosen by _Generic from the field itself so a
 * row cannot disagree with kv_config_t. size_t and int64_t are each one of
 * these standard types on every platform. */
typedef enum {
    CT_BOOL,
    CT_INT,
    CT_UINT,
    CT_LONG,
    CT_ULONG,
    CT_LLONG,
    CT_ULLONG,
    CT_STR
} opt_ctype;

#define OPT_CTYPE(field)                                                     \
    _Generic(((kv_config_t *)0)->field,                                      \
        bool: CT_BOOL,                                                       \
        int: CT_INT,                                                         \
        unsigned: CT_UINT,                                                   \
        long: CT_LONG,                                                       \
        unsigned long: CT_ULONG,                                             \
        long long: CT_LLONG,                                                 \
        unsigned long long: CT_ULLONG,                                       \
        char *: CT_STR)

typedef struct opt_row {
    const char *name;
    opt_kind kind;
    size_t off; /* offsetof(kv_config_t, field) */
    opt_ctype ctype;
    long long min, max;             /* KIND_INT, KIND_SIZE */
    bool (*valid)(const char *);    /* KIND_STR */
    const char *const *names;       /* KIND_ENUM, NULL-terminated */
    const char *def;                /* default text; NULL: unset */
    const char *why;                /* after "name: " when refused */
    const char *doc;                /* one line, no trailing period */
    bool secret; /* KIND_STR: write-only, wiped when replaced or freed */
} opt_row;

#define ROW(nm, kd, field, lo, hi, vf, nms, df, wy, dc)                     \
    {nm, kd, offsetof(kv_config_t, field), OPT_CTYPE(field), lo, hi, vf,    \
     nms, df, wy, dc, false}
#define STR_OPT(nm, field, vf, wy, dc)                                      \
    ROW(nm, KIND_STR, field, 0, 0, vf, NULL, NULL, wy, dc)
#define INT_OPT(nm, field, lo, hi, df, wy, dc)                              \
    ROW(nm, KIND_INT, field, lo, hi, NULL, NULL, df, wy, dc)
#define SIZE_OPT(nm, field, lo, hi, df, wy, dc)                             \
    ROW(nm, KIND_SIZE, field, lo, hi, NULL, NULL, df, wy, dc)
#define BOOL_OPT(nm, field, df, dc)                                         \
    ROW(nm, KIND_BOOL, field, 0, 1, NULL, NULL, df, "must be on or off", dc)
#define ENUM_OPT(nm, field, nms, df, wy, dc)                                \
    ROW(nm, KIND_ENUM, field, 0, 0, NULL, nms, df, wy, dc)
#define PATH_OPT(nm, field, dc)                                             \
    STR_OPT(nm, field, valid_path, "must be a non-empty path", dc)
/* A password: kv_options_get reads it back as "", so that no --help,
 * config dump or log built from the options can show it. */
#define SECRET_OPT(nm, field, vf, wy, dc)                                   \
    {nm, KIND_STR, offsetof(kv_config_t, field), OPT_CTYPE(field), 0, 0,   \
     vf, NULL, NULL, wy, dc, true}

static bool valid_data_dir(const char *s)
{
    return *s != '\0' && strlen(s) <= 4000;
}

static bool valid_resp_addr(const char *s)
{
    return valid_host_port(s, 0); /* 0: let the kernel pick (tests) */
}

static bool valid_http_addr(const char *s)
{
    return valid_host_port(s, 1);
}

/* A path: fault_file, the TLS files and the password file. */
static bool valid_path(const char *s)
{
    return *s != '\0' && strlen(s) <= 4000;
}

/* Any bytes a RESP AUTH and an HTTP header can both carry: no line
 * break (a config file could not hold it either). */
static bool valid_password(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= KV_PASSWORD_MAX && strpbrk(s, "\r\n") == NULL;
}

/* Index order is the stored value: enum kv_role, enum store_sync. */
static const char *const role_names[] = {"peer", "client", NULL};
static const char *const sync_names[] = {"none", "wal", "fsync", NULL};
_Static_assert(KV_ROLE_PEER == 0 && KV_ROLE_CLIENT == 1, "role_names order");
_Static_assert(STORE_SYNC_NONE == 0 && STORE_SYNC_WAL == 1 &&
                   STORE_SYNC_FSYNC == 2,
               "sync_names order");
/* The vnodes row spells the default out as text. */
_Static_assert(RING_DEFAULT_VNODES == 2048, "vnodes default in opt_rows");

#define TEN_YEARS_MS (3650LL * 24 * 3600 * 1000)

static const opt_row opt_rows[] = {
    STR_OPT("data_dir", data_dir, valid_data_dir, "must be a non-empty path",
            "directory of the local store (required for a peer)"),
    ROW("node_id", KIND_STR, node_id, 0, 0, options_valid_node_id, NULL, "node",
        "1 to " OPT_STR(KV_ID_MAX) " characters from A-Z a-z 0-9 . _ -",
        "this node's name in the cluster"),
    ENUM_OPT("role", role, role_names, "peer", "must be 'peer' or 'client'",
             "peer (holds data) or client (holds none, uses join)"),
    STR_OPT("listen", listen, options_valid_url,
            "must be a tcp://, ipc:// or tls+tcp:// URL",
            "URL peers and clients reach this node at"),
    STR_OPT("join", join, valid_url_list,
            "must be comma-separated tcp://, ipc:// or tls+tcp:// URLs",
            "comma-separated seed peer URLs to join through"),
    INT_OPT("n", n, 1, OPT_MAX_REPLICAS, "3",
            "must be an integer from 1 to " OPT_STR(OPT_MAX_REPLICAS),
            "replicas of each key"),
    INT_OPT("r", r, 1, OPT_MAX_REPLICAS, "2",
            "must be an integer from 1 to " OPT_STR(OPT_MAX_REPLICAS),
            "read quorum: replicas that answer a read"),
    INT_OPT("w", w, 1, OPT_MAX_REPLICAS, "2",
            "must be an integer from 1 to " OPT_STR(OPT_MAX_REPLICAS),
            "write quorum: replicas that acknowledge a write"),
    INT_OPT("vnodes", vnodes, 1, 65536, "2048",
            "must be an integer from 1 to 65536",
            "ring positions of this node"),
    ENUM_OPT("sync", sync, sync_names, "wal",
             "must be 'none', 'wal' or 'fsync'",
             "when a write is durable: none | wal | fsync"),
    SIZE_OPT("cache_size", cache_size, 0, 1LL << 40, "67108864",
             "must be a byte count up to 1TiB, with an optional KiB/MiB/GiB "
             "suffix",
             "RocksDB block cache in bytes (k/M/G suffixes)"),
    SIZE_OPT("max_key_size", max_key_size, 1, OPTIONS_MAX_KEY_CEIL, "65536",
             "must be from 1 byte to 16MiB", "largest key accepted, in bytes"),
    SIZE_OPT("max_value_size", max_value_size, 0, OPTIONS_MAX_VALUE_CEIL,
             "16777216", "must be from 0 bytes to 1GiB",
             "largest value accepted, in bytes"),
    INT_OPT("clock_max", clock_max, 4, 1000, "50",
            "must be an integer from 4 to 1000",
            "vector clock entries kept per key"),
    INT_OPT("timeout_ms", timeout_ms, 1, 3600000, "5000",
            "must be an integer from 1 to 3600000",
            "default request deadline, in ms"),
    INT_OPT("gossip_interval_ms", gossip_interval_ms, 10, 60000, "500",
            "must be an integer from 10 to 60000",
            "how often membership is gossiped, in ms"),
    INT_OPT("phi_convict", phi_convict, 1, 100, "8",
            "must be an integer from 1 to 100",
            "failure detector threshold (phi accrual)"),
    BOOL_OPT("sloppy_quorum", sloppy_quorum, "on",
             "let fallback nodes stand in for down replicas"),
    BOOL_OPT("hinted_handoff", hinted_handoff, "on",
             "keep and deliver hints for replicas that missed writes"),
    INT_OPT("handoff_rate", handoff_rate, 1, 1000000, "1000",
            "must be an integer from 1 to 1000000 (hints per second)",
            "hints delivered per second"),
    BOOL_OPT("anti_entropy", anti_entropy, "on",
             "compare Merkle trees with other replicas and repair"),
    INT_OPT("aae_interval_ms", aae_interval_ms, 100, 86400000, "60000",
            "must be an integer from 100 to 86400000",
            "pause between background anti-entropy passes, in ms"),
    INT_OPT("aae_rebuild_rate", aae_rebuild_rate, 100, 100000000, "200000",
            "must be an integer from 100 to 100000000 (keys per second)",
            "index entries per second when rebuilding trees"),
    /* Ten days, Cassandra's gc_grace_seconds: longer than any outage that
     * should heal by restart, hints or anti-entropy (kvdist(7)). */
    INT_OPT("tombstone_grace_ms", tombstone_grace_ms, 0, TEN_YEARS_MS,
            "864000000",
            "must be an integer from 0 to 315360000000 (ten years)",
            "ms to keep a tombstone at least before purging it"),
    STR_OPT("resp", resp, valid_resp_addr,
            "must be HOST:PORT (port 0 to 65535), e.g. 127.0.0.1:6379",
            "also serve the Redis protocol (RESP2) at HOST:PORT"),
    STR_OPT("http", http, valid_http_addr,
            "must be HOST:PORT (port 1..65535), e.g. 127.0.0.1:8080",
            "serve the HTTP API at HOST:PORT"),
    PATH_OPT("http_tls_cert_file", http_tls_cert_file,
             "PEM certificate (chain) of the HTTP API: with the key, HTTPS"),
    PATH_OPT("http_tls_key_file", http_tls_key_file,
             "PEM private key (unencrypted) of http_tls_cert_file"),
    SECRET_OPT("auth_password", auth_password, valid_password,
               "must be 1 to " KV_PASSWORD_MAX_TEXT
               " bytes without a line break",
               "password HTTP and RESP clients must give (never printed; "
               "prefer the file)"),
    PATH_OPT("auth_password_file", auth_password_file,
             "file whose one line is the client password (read at open)"),
    INT_OPT("max_clients", max_clients, 0, 1000000, "0",
            "must be an integer from 0 (derived from the open-file limit) to "
            "1000000",
            "HTTP + RESP connections served (0: from open-file limit)"),
    /* Riak's and Dynomite's clusters stay well under this; a gossip row
     * for one member more is refused (cluster.c), so invented members
     * cannot grow the table, the ring and the transport without bound. */
    INT_OPT("max_members", max_members, 1, KV_MEMBERS_MAX, "128",
            "must be an integer from 1 to " OPT_STR(KV_MEMBERS_MAX),
            "members the cluster may have; rows for more are refused"),
    /* NNG allocates a peer message whole when its length arrives: this
     * bounds what all connections together can make the node allocate
     * (budget.h); options_config_validate checks it holds the largest
     * value. */
    SIZE_OPT("peer_buffer_budget", peer_buffer_budget, 8LL << 20, 1LL << 40,
             "1073741824",
             "must be a byte count from 8MiB to 1TiB, with an optional "
             "KiB/MiB/GiB suffix",
             "inbound peer messages held at once, all connections together"),
    /* tls+tcp:// URLs need all three (options_config_validate); the
     * files are read when the node opens (rpc.c). */
    PATH_OPT("tls_ca_file", tls_ca_file,
             "PEM file of the CA that signs the cluster's certificates"),
    PATH_OPT("tls_cert_file", tls_cert_file,
             "PEM file of this node's certificate (CN or SAN: its node id)"),
    PATH_OPT("tls_key_file", tls_key_file,
             "PEM file of this certificate's private key"),
    /* Never taken from the environment: an embedding program must not
     * have faults switched on behind its back (issue 13). */
    PATH_OPT("fault_file", fault_file,
             "testing only: inject the transport faults this file names"),
};

#define N_OPT_ROWS (sizeof(opt_rows) / sizeof(opt_rows[0]))

static const opt_row *opt_lookup(const char *name)
{
    for (size_t i = 0; i < N_OPT_ROWS; i++) {
        if (strcmp(opt_rows[i].name, name) == 0) {
            return &opt_rows[i];
        }
    }
    return NULL;
}

bool options_is_secret(const char *name)
{
    const opt_row *r = opt_lookup(name);
    return r != NULL && r->secret;
}

/* The field of row r in c, by its C type. Integers travel as long long:
 * every bound in the table fits. */
static void *field_ptr(const kv_config_t *c, const opt_row *r)
{
    return (char *)c + r->off;
}

static long long field_load(const kv_config_t *c, const opt_row *r)
{
    const void *p = field_ptr(c, r);
    switch (r->ctype) {
    case CT_BOOL:
        return *(const bool *)p;
    case CT_INT:
        return *(const int *)p;
    case CT_UINT:
        return *(const unsigned *)p;
    case CT_LONG:
        return *(const long *)p;
    case CT_ULONG:
        return (long long)*(const unsigned long *)p;
    case CT_LLONG:
        return *(const long long *)p;
    case CT_ULLONG:
        return (long long)*(const unsigned long long *)p;
    case CT_STR:
        break;
    }
    return 0;
}

static void field_store(kv_config_t *c, const opt_row *r, long long v)
{
    void *p = field_ptr(c, r);
    switch (r->ctype) {
    case CT_BOOL:
        *(bool *)p = v != 0;
        break;
    case CT_INT:
        *(int *)p = (int)v;
        break;
    case CT_UINT:
        *(unsigned *)p = (unsigned)v;
        break;
    case CT_LONG:
        *(long *)p = (long)v;
        break;
    case CT_ULONG:
        *(unsigned long *)p = (unsigned long)v;
        break;
    case CT_LLONG:
        *(long long *)p = v;
        break;
    case CT_ULLONG:
        *(unsigned long long *)p = (unsigned long long)v;
        break;
    case CT_STR:
        break;
    }
}

static char **field_str(const kv_config_t *c, const opt_row *r)
{
    return (char **)field_ptr(c, r);
}

/* Frees a string field's value; a secret is wiped first. */
static void str_free(char *s, const opt_row *r)
{
    if (s != NULL && r->secret) {
        explicit_bzero(s, strlen(s));
    }
    free(s);
}

/* Parses value per row r into c. Returns 0, KV_EINVAL (nothing changed) or
 * KV_ENOMEM (nothing changed). */
static int row_parse(kv_config_t *c, const opt_row *r, const char *value)
{
    long long v = 0;
    switch (r->kind) {
    case KIND_STR: {
        if (!r->valid(value)) {
            return KV_EINVAL;
        }
        char *copy = strdup(value);
        if (copy == NULL) {
            return KV_ENOMEM;
        }
        char **field = field_str(c, r);
        str_free(*field, r);
        *field = copy;
        return 0;
    }
    case KIND_INT:
        if (parse_int(value, r->min, r->max, &v) != 0) {
            return KV_EINVAL;
        }
        break;
    case KIND_SIZE: {
        uint64_t size = 0;
        if (options_parse_size(value, &size) != 0 ||
            size < (uint64_t)r->min || size > (uint64_t)r->max) {
            return KV_EINVAL;
        }
        v = (long long)size;
        break;
    }
    case KIND_BOOL: {
        bool b;
        if (parse_bool(value, &b) != 0) {
            return KV_EINVAL;
        }
        v = b;
        break;
    }
    case KIND_ENUM:
        for (v = 0; r->names[v] != NULL; v++) {
            if (strcmp(value, r->names[v]) == 0) {
                break;
            }
        }
        if (r->names[v] == NULL) {
            return KV_EINVAL;
        }
        break;
    }
    field_store(c, r, v);
    return 0;
}

static void row_format(const kv_config_t *c, const opt_row *r, char *buf,
                       size_t size)
{
    switch (r->kind) {
    case KIND_STR: {
        const char *s = r->secret ? NULL : *field_str(c, r);
        snprintf(buf, size, "%s", s != NULL ? s : "");
        return;
    }
    case KIND_INT:
    case KIND_SIZE:
        snprintf(buf, size, "%lld", field_load(c, r));
        return;
    case KIND_BOOL:
        snprintf(buf, size, "%s", field_load(c, r) ? "on" : "off");
        return;
    case KIND_ENUM:
        snprintf(buf, size, "%s", r->names[field_load(c, r)]);
        return;
    }
}

kv_options_t *kv_options_create(void)
{
    kv_options_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < N_OPT_ROWS; i++) {
        /* Only KV_ENOMEM can fail here: check_options sets every default
         * text through kv_options_set. */
        if (opt_rows[i].def != NULL &&
            row_parse(&o->cfg, &opt_rows[i], opt_rows[i].def) != 0) {
            kv_options_destroy(o);
            return NULL;
        }
    }
    o->cfg.log_level = KV_LOG_NOTICE;
    return o;
}

int kv_options_set(kv_options_t *o, const char *name, const char *value)
{
    if (o == NULL || name == NULL || value == NULL) {
        return KV_EINVAL;
    }
    o->errmsg[0] = '\0';
    const opt_row *r = opt_lookup(name);
    if (r == NULL) {
        opt_fail(o, "unknown option '%s'", name);
        return KV_EBADOPT;
    }
    int rc = row_parse(&o->cfg, r, value);
    if (rc == KV_EINVAL) {
        opt_fail(o, "%s: %s", r->name, r->why);
    }
    return rc;
}

int kv_options_get(const kv_options_t *o, const char *name, char *buf,
                   size_t size)
{
    if (o == NULL || name == NULL || buf == NULL || size == 0) {
        return KV_EINVAL;
    }
    const opt_row *r = opt_lookup(name);
    if (r == NULL) {
        return KV_EBADOPT;
    }
    row_format(&o->cfg, r, buf, size);
    return 0;
}

const char *kv_options_name(size_t i)
{
    return i < N_OPT_ROWS ? opt_rows[i].name : NULL;
}

const char *kv_options_doc(const char *name)
{
    const opt_row *r = name != NULL ? opt_lookup(name) : NULL;
    return r != NULL ? r->doc : NULL;
}

const char *kv_options_errmsg(const kv_options_t *o)
{
    return o != NULL ? o->errmsg : "";
}

void kv_options_set_logger(kv_options_t *o, kv_log_fn fn, void *arg, int level)
{
    if (o == NULL) {
        return;
    }
    o->cfg.log_fn = fn;
    o->cfg.log_arg = arg;
    o->cfg.log_level = level;
}

void kv_options_set_resolver(kv_options_t *o, kv_resolve_fn fn, void *arg)
{
    if (o == NULL) {
        return;
    }
    o->cfg.resolve_fn = fn;
    o->cfg.resolve_arg = arg;
}

void options_config_free(kv_config_t *c)
{
    for (size_t i = 0; i < N_OPT_ROWS; i++) {
        if (opt_rows[i].kind == KIND_STR) {
            char **field = field_str(c, &opt_rows[i]);
            str_free(*field, &opt_rows[i]);
            *field = NULL;
        }
    }
}

void kv_options_destroy(kv_options_t *o)
{
    if (o == NULL) {
        return;
    }
    options_config_free(&o->cfg);
    free(o);
}

int options_config_copy(kv_config_t *dst, const kv_config_t *src)
{
    *dst = *src;
    /* Every string field is an option: the table lists them all. Clear
     * them first so a failure part-way frees only our own copies. */
    for (size_t i = 0; i < N_OPT_ROWS; i++) {
        if (opt_rows[i].kind == KIND_STR) {
            *field_str(dst, &opt_rows[i]) = NULL;
        }
    }
    for (size_t i = 0; i < N_OPT_ROWS; i++) {
        if (opt_rows[i].kind != KIND_STR) {
            continue;
        }
        const char *s = *field_str(src, &opt_rows[i]);
        if (s != NULL && (*field_str(dst, &opt_rows[i]) = strdup(s)) == NULL) {
            options_config_free(dst);
            return KV_ENOMEM;
        }
    }
    return 0;
}

/* How many of listen and the join URLs are tls+tcp://, and how many in
 * all. */
static void count_tls_urls(const kv_config_t *c, int *tls, int *all)
{
    static const char scheme[] = "tls+tcp://";
    *tls = 0;
    *all = 0;
    if (c->listen != NULL) {
        (*all)++;
        *tls += strncmp(c->listen, scheme, sizeof(scheme) - 1) == 0;
    }
    for (const char *s = c->join; s != NULL && *s != '\0';) {
        (*all)++;
        *tls += strncmp(s, scheme, sizeof(scheme) - 1) == 0;
        s = strchr(s, ',');
        s = s != NULL ? s + 1 : NULL;
    }
}

/* A tls+tcp:// URL needs a certificate, its key and the CA; a node is
 * either all TLS or not at all (a plain seed would be an
 * unauthenticated way in). */
static int options_validate_tls(const kv_config_t *c, char *why, size_t size)
{
    int tls = 0;
    int all = 0;
    count_tls_urls(c, &tls, &all);
    bool files = c->tls_ca_file != NULL || c->tls_cert_file != NULL ||
                 c->tls_key_file != NULL;
    if (tls > 0 && tls < all) {
        snprintf(why, size,
                 "listen and join must all be tls+tcp:// URLs or none "
                 "(a plain one would let unauthenticated peers in)");
        return KV_EINVAL;
    }
    if ((tls > 0 || files) &&
        (c->tls_ca_file == NULL || c->tls_cert_file == NULL ||
         c->tls_key_file == NULL)) {
        snprintf(why, size,
                 "tls+tcp:// needs all of tls_ca_file, tls_cert_file and "
                 "tls_key_file (mutual TLS: every node and client shows a "
                 "certificate of the cluster's CA)");
        return KV_EINVAL;
    }
    /* Over TLS a node tells members from clients by the IPv4 address of
     * their connections (rpc.c, WIRE_CONN_CHECK). */
    static const char v6[] = "tls+tcp://[";
    if ((c->listen != NULL && strstr(c->listen, v6) != NULL) ||
        (c->join != NULL && strstr(c->join, v6) != NULL)) {
        snprintf(why, size,
                 "tls+tcp:// with an IPv6 address is not supported yet (a "
                 "node could not tell members from clients); use IPv4 "
                 "addresses or names that resolve to them");
        return KV_EINVAL;
    }
    if (files && tls == 0 && all > 0) {
        snprintf(why, size,
                 "tls_ca_file, tls_cert_file and tls_key_file are set but "
                 "listen and join are not tls+tcp:// URLs");
        return KV_EINVAL;
    }
    return 0;
}

int options_config_validate(const kv_config_t *c, char *why, size_t size)
{
    if (c->r > c->n || c->w > c->n) {
        snprintf(why, size, "r (%d) and w (%d) must not exceed n (%d)", c->r,
                 c->w, c->n);
        return KV_EINVAL;
    }
    if (c->role == KV_ROLE_PEER && c->data_dir == NULL) {
        snprintf(why, size, "data_dir is required for role=peer");
        return KV_EINVAL;
    }
    if (c->role == KV_ROLE_CLIENT && c->resp != NULL) {
        snprintf(why, size, "resp needs role=peer (a client serves nothing)");
        return KV_EINVAL;
    }
    if (c->role == KV_ROLE_CLIENT && c->join == NULL) {
        snprintf(why, size, "role=client needs join (the nodes to talk to)");
        return KV_EINVAL;
    }
    if (c->role == KV_ROLE_CLIENT && c->http != NULL) {
        snprintf(why, size, "http is served by peers only, not role=client");
        return KV_EINVAL;
    }
    if ((c->http_tls_cert_file == NULL) != (c->http_tls_key_file == NULL)) {
        snprintf(why, size,
                 "http_tls_cert_file and http_tls_key_file go together "
                 "(HTTPS needs both)");
        return KV_EINVAL;
    }
    if (c->http_tls_cert_file != NULL && c->http == NULL) {
        snprintf(why, size,
                 "http_tls_cert_file needs http (the API it serves over "
                 "HTTPS)");
        return KV_EINVAL;
    }
    if (c->auth_password != NULL && c->auth_password_file != NULL) {
        snprintf(why, size,
                 "auth_password and auth_password_file are both set: give "
                 "one");
        return KV_EINVAL;
    }
    /* At least one connection must take two messages with the largest
     * value out of three quarters of the transport's half (budget.h). */
    uint64_t need = 6 * ((uint64_t)c->max_value_size + c->max_key_size +
                         (1u << 20));
    if (c->role == KV_ROLE_PEER && c->peer_buffer_budget < need) {
        snprintf(why, size,
                 "peer_buffer_budget (%zu) must be at least 6 x (max_value_size"
                 " + max_key_size + 1MiB) = %" PRIu64
                 " bytes, so that a peer can send the largest value",
                 c->peer_buffer_budget, need);
        return KV_EINVAL;
    }
    return options_validate_tls(c, why, size);
}
