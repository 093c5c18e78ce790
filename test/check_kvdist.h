/*
 * check_kvdist.h - the suites of the libkvdist test runner and the helpers
 * they share (check_util.c).
 */
#ifndef KV_CHECK_KVDIST_H
#define KV_CHECK_KVDIST_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

Suite *vclock_suite(void);
Suite *log_suite(void);
Suite *object_suite(void);
Suite *options_suite(void);
Suite *store_suite(void);
Suite *diskfault_suite(void);
Suite *ring_suite(void);
Suite *wire_suite(void);
Suite *rpc_suite(void);
Suite *cluster_suite(void);
Suite *security_suite(void);
Suite *failover_suite(void);
Suite *availability_suite(void);
Suite *aae_suite(void);
Suite *resp_suite(void);
Suite *http_suite(void);
Suite *haproxy_suite(void);
Suite *nemesis_suite(void);

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the string
 * and removes the tree with util_rmtree. Aborts the test on failure. */
char *util_tmpdir(const char *tag);
void util_rmtree(const char *path);
/* The whole file at path, NUL-terminated (free it); aborts the test if it
 * cannot be read. */
char *util_read_file(const char *path);
/* Copies a directory tree (regular files only, as a data dir has). */
void util_copytree(const char *from, const char *to);
/* splitmix64 (lib/rand.h): a small deterministic PRNG for reproducible
 * random tests. */
uint64_t util_rand(uint64_t *state);

/* ---- multi-process harness (check_harness.c) ---- */

#include "kvdist.h"

#define HARNESS_MAX_NODES 8

typedef struct harness_node {
    char id[16];
    char url[64];
    char data[512];
    char log[512];
    int port;
    int pid; /* 0 when not running */
} harness_node_t;

typedef struct harness {
    char *dir;
    char daemon[512];
    int nnodes;
    int n, r, w; /* passed as --n/--r/--w when > 0 */
    harness_node_t node[HARNESS_MAX_NODES];
} harness_t;

/* Picks ports and directories for `nodes` nodes (n1..nN); starts nothing. */
harness_t *harness_create(int nodes);
/* Starts node i (joining node 0 unless i == 0) and waits for its "ready"
 * log line; extra is a NULL-terminated list of additional flags. */
void harness_start(harness_t *h, int i, const char *const *extra);
void harness_start_all(harness_t *h, const char *const *extra);
/* SIGTERM and wait (bounded, then SIGKILL). */
void harness_stop(harness_t *h, int i);
/* SIGTERM and wait (bounded at 30 s, then SIGKILL): the exit status of a
 * clean stop, or -1 for a crash (a signal), a hang or no process. */
int harness_stop_status(harness_t *h, int i);
/* SIGKILL and wait. */
void harness_kill(harness_t *h, int i);
void harness_stop_all(harness_t *h);
/* Stops everything and removes the directory. */
void harness_destroy(harness_t *h);
/* Every node's URL, comma-separated (free it). */
char *harness_join_list(const harness_t *h);
/* A role=client handle joined to every node. */
kv_t *harness_client(const harness_t *h, int timeout_ms);
/* Polls every running node until each lists all nnodes members and sees
 * every running one up (bounded): membership has converged. */
void harness_wait_converged(harness_t *h);
/* Polls kv_members until `want` members are all up (bounded). */
void harness_wait_members(kv_t *kv, size_t want);
/* Polls kv_members until member id has the given status (bounded). */
void harness_wait_status(kv_t *kv, const char *id, int status);
int harness_free_port(void);
/* Runs kvdistd with args (NULL-terminated) to completion, bounded at
 * 10 s, and returns its exit status; its stderr goes to errpath. */
int harness_run_daemon(const harness_t *h, const char *const *args,
                       const char *errpath);

/* Raw peer-protocol access, as another node would have it. */
struct nng_msg;
struct wire_limits;
/* Generous decode limits for what tests read back. */
extern const struct wire_limits harness_big_limits;
/* Sends bytes to url over a req0 socket; the reply (nng_msg_free it) or
 * NULL if none came within timeout_ms. */
struct nng_msg *harness_raw_request(const char *url, const void *p, size_t len,
                                    int timeout_ms);
/* Writes raw bytes to 127.0.0.1:port; 1 if the node then closes the
 * connection within 3 s. */
int harness_raw_tcp(int port, const void *p, size_t len);
/* Live siblings node url holds locally for key (-1: no answer); the first
 * live value goes to val. */
int harness_local_get(const char *url, const char *key, char *val,
                      size_t valsize);
/* Polls until node url holds exactly `want` as its single live value. */
int harness_wait_local_value(const char *url, const char *key,
                             const char *want, int bound_ms);
/* A counter or gauge from node url's metrics, or -1. */
long long harness_remote_stat(const char *url, const char *name);
/* The sum of a counter over the running nodes of h (absent counts 0). */
long long harness_sum_stat(harness_t *h, const char *name);
/* Node url's view of member id (KV_MEMBER_UP/DOWN, -1 unknown/no answer)
 * and how many members it lists. */
int harness_remote_status(const char *url, const char *id, size_t *count);
int64_t harness_now_ms(void);
void harness_sleep_ms(int ms);
/* Starts node i (as harness_start) with --http 127.0.0.1:PORT on a free
 * port, plus extra; returns the port. */
int harness_start_http(harness_t *h, int i, const char *const *extra);

/* ---- HTTP client for the HTTP API suites (check_http.c, libcurl) ---- */

typedef struct httpc_resp {
    int curl_rc; /* CURLcode; 0 when an answer came */
    long status;
    char *body; /* NUL-terminated copy (len excludes the NUL); free it */
    size_t len;
    char ctx[1024]; /* X-Kv-Context, "" if absent */
    char ctype[256];
    char connection[64];
    char www_auth[256]; /* WWW-Authenticate, "" if absent */
} httpc_resp_t;

/* One request; body/len for PUT, ctx as X-Kv-Context when non-NULL,
 * cainfo: the only CA trusted for https (NULL: the system's). */
httpc_resp_t httpc(const char *method, const char *url, const void *body,
                   size_t len, const char *ctx, const char *cainfo);
/* The same with more request headers: "Name: value" strings, NULL-ended
 * (headers itself may be NULL). */
httpc_resp_t httpc_h(const char *method, const char *url, const void *body,
                     size_t len, const char *ctx, const char *cainfo,
                     const char *const *headers);
void httpc_free(httpc_resp_t *r);

#endif /* KV_CHECK_KVDIST_H */
