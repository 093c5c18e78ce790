/*
 * options.h - the typed configuration behind kv_options_t (options.c).
 */
#ifndef KV_OPTIONS_H
#define KV_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvdist.h"

/* Hard ceilings: far above any sensible setting, low enough that a typo
 * cannot make the node allocate absurd buffers. */
#define OPTIONS_MAX_KEY_CEIL (16u << 20)
#define OPTIONS_MAX_VALUE_CEIL (1024u << 20)

enum kv_role { KV_ROLE_PEER = 0, KV_ROLE_CLIENT = 1 };

/* Every setting a node runs with. Strings are owned (malloc'd). */
typedef struct kv_config {
    char *data_dir;
    char *node_id;
    int role;     /* enum kv_role */
    char *listen; /* NULL: not listening */
    char *join;   /* comma-separated URLs, NULL: none */
    char *resp;   /* RESP front end HOST:PORT, NULL: off */
    int n;
    int r;
    int w;
    unsigned vnodes;
    int sync; /* enum store_sync */
    size_t cache_size;
    size_t max_key_size;
    size_t max_value_size;
    size_t clock_max;
    int timeout_ms;
    int gossip_interval_ms;
    int phi_convict;
    bool sloppy_quorum;
    bool hinted_handoff;
    int handoff_rate; /* hints delivered per second, per node */
    bool anti_entropy;
    int aae_interval_ms;        /* between background exchange passes */
    int aae_rebuild_rate;       /* index entries per second in a rebuild */
    int64_t tombstone_grace_ms; /* before a fully replicated delete is purged */
    char *http;       /* HOST:PORT of the HTTP API (http.c), NULL: none */
    char *http_tls_cert_file; /* PEM: with the key, the HTTP API is HTTPS */
    char *http_tls_key_file;
    char *auth_password;      /* secret (auth.c); never read back */
    char *auth_password_file; /* or the file that holds it */
    int max_clients;  /* HTTP + RESP connections; 0: derived at kv_open */
    int max_members;  /* rows of the member table, this node's included */
    size_t peer_buffer_budget; /* inbound peer messages held (budget.h) */
    char *tls_ca_file;   /* PEM: the cluster's CA, for tls+tcp:// peers */
    char *tls_cert_file; /* PEM: this node's (or client's) certificate */
    char *tls_key_file;  /* PEM: its private key */
    char *fault_file; /* testing: rpc.c's fault hook reads it, NULL: off */
    kv_log_fn log_fn;
    void *log_arg;
    int log_level;
    kv_resolve_fn resolve_fn;
    void *resolve_arg;
} kv_config_t;

/* The checks options apply to node_id and URLs, for cluster.c to apply
 * to the ids and URLs that gossip brings from the network. */
bool options_valid_node_id(const char *s);
bool options_valid_url(const char *s);
/* Whether option name is write-only (auth_password: reads back as ""). */
bool options_is_secret(const char *name);

struct kv_options {
    kv_config_t cfg;
    char errmsg[256];
};

/* Deep copy (strings duplicated). Returns 0 or KV_ENOMEM. */
int options_config_copy(kv_config_t *dst, const kv_config_t *src);
void options_config_free(kv_config_t *cfg);
/* Checks settings that depend on each other; writes the reason to why.
 * Returns 0 or KV_EINVAL. */
int options_config_validate(const kv_config_t *cfg, char *why, size_t size);

/* Parses a byte size with an optional k/KiB/M/MiB/G/GiB suffix (powers of
 * 1024). Returns 0 or KV_EINVAL. */
int options_parse_size(const char *s, uint64_t *out);

#endif /* KV_OPTIONS_H */
