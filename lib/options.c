/*
 * options.c - string-keyed settings (kv_options_t): parsing, validation,
 * defaults, and the table that names them all.
 *
 * Owns the option table: one row per setting with its parser, so that
 * kv_options_set, kv_options_get, the daemon's flags and the man pages all
 * describe the same list. A failed set changes nothing and leaves a reason in
 * the option set's errmsg.
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

#include "ring.h"
#include "store.h"

#define OPT_MAX_REPLICAS 16

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
static bool valid_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) {
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

static bool valid_url(const char *s)
{
    static const char *const schemes[] = {"tcp://", "ipc://", "tls+tcp://"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(s, schemes[i], n) == 0 && s[n] != '\0' && strlen(s) < 512 &&
            strpbrk(s, ", \t\r\n") == NULL) {
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
    char url[512];
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (n == 0 || n >= sizeof(url)) {
            return false;
        }
        memcpy(url, s, n);
        url[n] = '\0';
        if (!valid_url(url)) {
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

static int set_string(char **field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        return KV_ENOMEM;
    }
    free(*field);
    *field = copy;
    return 0;
}

typedef enum {
    OPT_DATA_DIR,
    OPT_NODE_ID,
    OPT_ROLE,
    OPT_LISTEN,
    OPT_JOIN,
    OPT_N,
    OPT_R,
    OPT_W,
    OPT_VNODES,
    OPT_SYNC,
    OPT_CACHE_SIZE,
    OPT_MAX_KEY_SIZE,
    OPT_MAX_VALUE_SIZE,
    OPT_CLOCK_MAX,
    OPT_TIMEOUT_MS,
    OPT_GOSSIP_INTERVAL_MS,
    OPT_PHI_CONVICT,
    OPT_SLOPPY_QUORUM,
    OPT_HINTED_HANDOFF,
    OPT_HANDOFF_RATE,
    OPT_ANTI_ENTROPY,
    OPT_AAE_INTERVAL_MS,
    OPT_AAE_REBUILD_RATE,
    OPT_TOMBSTONE_GRACE_MS,
    OPT_RESP,
    OPT_HTTP,
    OPT_MAX_CLIENTS
} opt_id;

static const struct {
    const char *name;
    opt_id id;
} opt_table[] = {
    {"data_dir", OPT_DATA_DIR},
    {"node_id", OPT_NODE_ID},
    {"role", OPT_ROLE},
    {"listen", OPT_LISTEN},
    {"join", OPT_JOIN},
    {"n", OPT_N},
    {"r", OPT_R},
    {"w", OPT_W},
    {"vnodes", OPT_VNODES},
    {"sync", OPT_SYNC},
    {"cache_size", OPT_CACHE_SIZE},
    {"max_key_size", OPT_MAX_KEY_SIZE},
    {"max_value_size", OPT_MAX_VALUE_SIZE},
    {"clock_max", OPT_CLOCK_MAX},
    {"timeout_ms", OPT_TIMEOUT_MS},
    {"gossip_interval_ms", OPT_GOSSIP_INTERVAL_MS},
    {"phi_convict", OPT_PHI_CONVICT},
    {"sloppy_quorum", OPT_SLOPPY_QUORUM},
    {"hinted_handoff", OPT_HINTED_HANDOFF},
    {"handoff_rate", OPT_HANDOFF_RATE},
    {"anti_entropy", OPT_ANTI_ENTROPY},
    {"aae_interval_ms", OPT_AAE_INTERVAL_MS},
    {"aae_rebuild_rate", OPT_AAE_REBUILD_RATE},
    {"tombstone_grace_ms", OPT_TOMBSTONE_GRACE_MS},
    {"resp", OPT_RESP},
    {"http", OPT_HTTP},
    {"max_clients", OPT_MAX_CLIENTS},
};

static int opt_lookup(const char *name, opt_id *id)
{
    for (size_t i = 0; i < sizeof(opt_table) / sizeof(opt_table[0]); i++) {
        if (strcmp(opt_table[i].name, name) == 0) {
            *id = opt_table[i].id;
            return 0;
        }
    }
    return KV_EBADOPT;
}

static const char *const sync_names[] = {"none", "wal", "fsync"};

kv_options_t *kv_options_create(void)
{
    kv_options_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return NULL;
    }
    kv_config_t *c = &o->cfg;
    c->node_id = strdup("node");
    if (c->node_id == NULL) {
        free(o);
        return NULL;
    }
    c->role = KV_ROLE_PEER;
    c->n = 3;
    c->r = 2;
    c->w = 2;
    c->vnodes = RING_DEFAULT_VNODES;
    c->sync = STORE_SYNC_WAL;
    c->cache_size = 64u << 20;
    c->max_key_size = 64u << 10;
    c->max_value_size = 16u << 20;
    c->clock_max = 50;
    c->timeout_ms = 5000;
    c->gossip_interval_ms = 500;
    c->phi_convict = 8;
    c->sloppy_quorum = true;
    c->hinted_handoff = true;
    c->handoff_rate = 1000;
    c->anti_entropy = true;
    c->aae_interval_ms = 60000;
    c->aae_rebuild_rate = 200000;
    /* Ten days, Cassandra's gc_grace_seconds: longer than any outage that
     * should heal by restart, hints or anti-entropy (kvdist(7)). */
    c->tombstone_grace_ms = 10LL * 24 * 3600 * 1000;
    c->log_level = KV_LOG_NOTICE;
    return o;
}

int kv_options_set(kv_options_t *o, const char *name, const char *value)
{
    if (o == NULL || name == NULL || value == NULL) {
        return KV_EINVAL;
    }
    o->errmsg[0] = '\0';
    opt_id id;
    if (opt_lookup(name, &id) != 0) {
        opt_fail(o, "unknown option '%s'", name);
        return KV_EBADOPT;
    }
    kv_config_t *c = &o->cfg;
    long long v = 0;
    uint64_t size = 0;
    switch (id) {
    case OPT_DATA_DIR:
        if (*value == '\0' || strlen(value) > 4000) {
            opt_fail(o, "data_dir: must be a non-empty path");
            return KV_EINVAL;
        }
        return set_string(&c->data_dir, value);
    case OPT_NODE_ID:
        if (!valid_node_id(value)) {
            opt_fail(o, "node_id: 1 to 64 characters from A-Z a-z 0-9 . _ -");
            return KV_EINVAL;
        }
        return set_string(&c->node_id, value);
    case OPT_ROLE:
        if (strcmp(value, "peer") == 0) {
            c->role = KV_ROLE_PEER;
        } else if (strcmp(value, "client") == 0) {
            c->role = KV_ROLE_CLIENT;
        } else {
            opt_fail(o, "role: must be 'peer' or 'client'");
            return KV_EINVAL;
        }
        return 0;
    case OPT_LISTEN:
        if (!valid_url(value)) {
            opt_fail(o, "listen: must be a tcp://, ipc:// or tls+tcp:// URL");
            return KV_EINVAL;
        }
        return set_string(&c->listen, value);
    case OPT_JOIN:
        if (!valid_url_list(value)) {
            opt_fail(o, "join: must be comma-separated tcp://, ipc:// or "
                        "tls+tcp:// URLs");
            return KV_EINVAL;
        }
        return set_string(&c->join, value);
    case OPT_N:
    case OPT_R:
    case OPT_W:
        if (parse_int(value, 1, OPT_MAX_REPLICAS, &v) != 0) {
            opt_fail(o, "%s: must be an integer from 1 to %d", name,
                     OPT_MAX_REPLICAS);
            return KV_EINVAL;
        }
        *(id == OPT_N ? &c->n : id == OPT_R ? &c->r : &c->w) = (int)v;
        return 0;
    case OPT_VNODES:
        if (parse_int(value, 1, 65536, &v) != 0) {
            opt_fail(o, "vnodes: must be an integer from 1 to 65536");
            return KV_EINVAL;
        }
        c->vnodes = (unsigned)v;
        return 0;
    case OPT_SYNC:
        for (int i = 0; i < 3; i++) {
            if (strcmp(value, sync_names[i]) == 0) {
                c->sync = i;
                return 0;
            }
        }
        opt_fail(o, "sync: must be 'none', 'wal' or 'fsync'");
        return KV_EINVAL;
    case OPT_CACHE_SIZE:
        if (options_parse_size(value, &size) != 0 || size > (1ull << 40)) {
            opt_fail(o, "cache_size: must be a byte count up to 1TiB, with "
                        "an optional KiB/MiB/GiB suffix");
            return KV_EINVAL;
        }
        c->cache_size = (size_t)size;
        return 0;
    case OPT_MAX_KEY_SIZE:
        if (options_parse_size(value, &size) != 0 || size < 1 ||
            size > OPTIONS_MAX_KEY_CEIL) {
            opt_fail(o, "max_key_size: must be from 1 byte to 16MiB");
            return KV_EINVAL;
        }
        c->max_key_size = (size_t)size;
        return 0;
    case OPT_MAX_VALUE_SIZE:
        if (options_parse_size(value, &size) != 0 ||
            size > OPTIONS_MAX_VALUE_CEIL) {
            opt_fail(o, "max_value_size: must be from 0 bytes to 1GiB");
            return KV_EINVAL;
        }
        c->max_value_size = (size_t)size;
        return 0;
    case OPT_CLOCK_MAX:
        if (parse_int(value, 4, 1000, &v) != 0) {
            opt_fail(o, "clock_max: must be an integer from 4 to 1000");
            return KV_EINVAL;
        }
        c->clock_max = (size_t)v;
        return 0;
    case OPT_TIMEOUT_MS:
        if (parse_int(value, 1, 3600000, &v) != 0) {
            opt_fail(o, "timeout_ms: must be an integer from 1 to 3600000");
            return KV_EINVAL;
        }
        c->timeout_ms = (int)v;
        return 0;
    case OPT_GOSSIP_INTERVAL_MS:
        if (parse_int(value, 10, 60000, &v) != 0) {
            opt_fail(o, "gossip_interval_ms: must be an integer from 10 to "
                        "60000");
            return KV_EINVAL;
        }
        c->gossip_interval_ms = (int)v;
        return 0;
    case OPT_PHI_CONVICT:
        if (parse_int(value, 1, 100, &v) != 0) {
            opt_fail(o, "phi_convict: must be an integer from 1 to 100");
            return KV_EINVAL;
        }
        c->phi_convict = (int)v;
        return 0;
    case OPT_SLOPPY_QUORUM:
    case OPT_HINTED_HANDOFF: {
        bool b;
        if (parse_bool(value, &b) != 0) {
            opt_fail(o, "%s: must be on or off", name);
            return KV_EINVAL;
        }
        *(id == OPT_SLOPPY_QUORUM ? &c->sloppy_quorum : &c->hinted_handoff) = b;
        return 0;
    }
    case OPT_HANDOFF_RATE:
        if (parse_int(value, 1, 1000000, &v) != 0) {
            opt_fail(o, "handoff_rate: must be an integer from 1 to 1000000 "
                        "(hints per second)");
            return KV_EINVAL;
        }
        c->handoff_rate = (int)v;
        return 0;
    case OPT_ANTI_ENTROPY:
        if (parse_bool(value, &c->anti_entropy) != 0) {
            opt_fail(o, "anti_entropy: must be on or off");
            return KV_EINVAL;
        }
        return 0;
    case OPT_AAE_INTERVAL_MS:
        if (parse_int(value, 100, 86400000, &v) != 0) {
            opt_fail(o, "aae_interval_ms: must be an integer from 100 to "
                        "86400000");
            return KV_EINVAL;
        }
        c->aae_interval_ms = (int)v;
        return 0;
    case OPT_AAE_REBUILD_RATE:
        if (parse_int(value, 100, 100000000, &v) != 0) {
            opt_fail(o, "aae_rebuild_rate: must be an integer from 100 to "
                        "100000000 (keys per second)");
            return KV_EINVAL;
        }
        c->aae_rebuild_rate = (int)v;
        return 0;
    case OPT_TOMBSTONE_GRACE_MS:
        if (parse_int(value, 0, 3650LL * 24 * 3600 * 1000, &v) != 0) {
            opt_fail(o, "tombstone_grace_ms: must be an integer from 0 to "
                        "315360000000 (ten years)");
            return KV_EINVAL;
        }
        c->tombstone_grace_ms = v;
        return 0;
    case OPT_RESP:
        if (!valid_host_port(value, 0)) {
            opt_fail(o, "resp: must be HOST:PORT (port 0 to 65535), e.g. "
                        "127.0.0.1:6379");
            return KV_EINVAL;
        }
        return set_string(&c->resp, value);
    case OPT_HTTP:
        if (!valid_host_port(value, 1)) {
            opt_fail(o, "http: must be HOST:PORT (port 1..65535), e.g. "
                        "127.0.0.1:8080");
            return KV_EINVAL;
        }
        return set_string(&c->http, value);
    case OPT_MAX_CLIENTS:
        if (parse_int(value, 0, 1000000, &v) != 0) {
            opt_fail(o, "max_clients: must be an integer from 0 (derived from "
                        "the open-file limit) to 1000000");
            return KV_EINVAL;
        }
        c->max_clients = (int)v;
        return 0;
    }
    return KV_EINTERNAL;
}

int kv_options_get(const kv_options_t *o, const char *name, char *buf,
                   size_t size)
{
    if (o == NULL || name == NULL || buf == NULL || size == 0) {
        return KV_EINVAL;
    }
    opt_id id;
    if (opt_lookup(name, &id) != 0) {
        return KV_EBADOPT;
    }
    const kv_config_t *c = &o->cfg;
    switch (id) {
    case OPT_DATA_DIR:
        snprintf(buf, size, "%s", c->data_dir ? c->data_dir : "");
        break;
    case OPT_NODE_ID:
        snprintf(buf, size, "%s", c->node_id);
        break;
    case OPT_ROLE:
        snprintf(buf, size, "%s", c->role == KV_ROLE_PEER ? "peer" : "client");
        break;
    case OPT_LISTEN:
        snprintf(buf, size, "%s", c->listen ? c->listen : "");
        break;
    case OPT_JOIN:
        snprintf(buf, size, "%s", c->join ? c->join : "");
        break;
    case OPT_N:
        snprintf(buf, size, "%d", c->n);
        break;
    case OPT_R:
        snprintf(buf, size, "%d", c->r);
        break;
    case OPT_W:
        snprintf(buf, size, "%d", c->w);
        break;
    case OPT_VNODES:
        snprintf(buf, size, "%u", c->vnodes);
        break;
    case OPT_SYNC:
        snprintf(buf, size, "%s", sync_names[c->sync]);
        break;
    case OPT_CACHE_SIZE:
        snprintf(buf, size, "%zu", c->cache_size);
        break;
    case OPT_MAX_KEY_SIZE:
        snprintf(buf, size, "%zu", c->max_key_size);
        break;
    case OPT_MAX_VALUE_SIZE:
        snprintf(buf, size, "%zu", c->max_value_size);
        break;
    case OPT_CLOCK_MAX:
        snprintf(buf, size, "%zu", c->clock_max);
        break;
    case OPT_TIMEOUT_MS:
        snprintf(buf, size, "%d", c->timeout_ms);
        break;
    case OPT_GOSSIP_INTERVAL_MS:
        snprintf(buf, size, "%d", c->gossip_interval_ms);
        break;
    case OPT_PHI_CONVICT:
        snprintf(buf, size, "%d", c->phi_convict);
        break;
    case OPT_SLOPPY_QUORUM:
        snprintf(buf, size, "%s", c->sloppy_quorum ? "on" : "off");
        break;
    case OPT_HINTED_HANDOFF:
        snprintf(buf, size, "%s", c->hinted_handoff ? "on" : "off");
        break;
    case OPT_HANDOFF_RATE:
        snprintf(buf, size, "%d", c->handoff_rate);
        break;
    case OPT_ANTI_ENTROPY:
        snprintf(buf, size, "%s", c->anti_entropy ? "on" : "off");
        break;
    case OPT_AAE_INTERVAL_MS:
        snprintf(buf, size, "%d", c->aae_interval_ms);
        break;
    case OPT_AAE_REBUILD_RATE:
        snprintf(buf, size, "%d", c->aae_rebuild_rate);
        break;
    case OPT_TOMBSTONE_GRACE_MS:
        snprintf(buf, size, "%lld", (long long)c->tombstone_grace_ms);
        break;
    case OPT_RESP:
        snprintf(buf, size, "%s", c->resp ? c->resp : "");
        break;
    case OPT_HTTP:
        snprintf(buf, size, "%s", c->http ? c->http : "");
        break;
    case OPT_MAX_CLIENTS:
        snprintf(buf, size, "%d", c->max_clients);
        break;
    }
    return 0;
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
    free(c->data_dir);
    free(c->node_id);
    free(c->listen);
    free(c->join);
    free(c->resp);
    free(c->http);
    c->data_dir = c->node_id = c->listen = c->join = c->resp = c->http = NULL;
}

void kv_options_destroy(kv_options_t *o)
{
    if (o == NULL) {
        return;
    }
    options_config_free(&o->cfg);
    free(o);
}

static int dup_or_null(char **dst, const char *src)
{
    *dst = NULL;
    if (src != NULL && (*dst = strdup(src)) == NULL) {
        return KV_ENOMEM;
    }
    return 0;
}

int options_config_copy(kv_config_t *dst, const kv_config_t *src)
{
    *dst = *src;
    if (dup_or_null(&dst->data_dir, src->data_dir) != 0 ||
        dup_or_null(&dst->node_id, src->node_id) != 0 ||
        dup_or_null(&dst->listen, src->listen) != 0 ||
        dup_or_null(&dst->join, src->join) != 0 ||
        dup_or_null(&dst->resp, src->resp) != 0 ||
        dup_or_null(&dst->http, src->http) != 0) {
        options_config_free(dst);
        return KV_ENOMEM;
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
    return 0;
}
