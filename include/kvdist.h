/*
 * kvdist.h - the public interface of libkvdist, an embeddable Dynamo-style
 * distributed key-value store.
 *
 * This is the only public header and the authoritative reference for the
 * API: every function below documents its parameters, its return value, the
 * errors it returns, who owns each pointer and until when, and whether it is
 * thread-safe. The man pages kvdist(3) and kvdist(7) repeat and expand it.
 *
 * Conventions used throughout:
 *  - Functions returning int return 0 (KV_OK) on success or one of the
 *    KV_E* codes below. The codes have fixed values that never change.
 *  - Keys and values are binary-safe byte strings (NUL bytes allowed). Every
 *    input is copied before the call returns; the caller keeps ownership.
 *  - Buffers the library returns through a void ** are owned by the caller
 *    and released with kv_free(). Objects returned as opaque handles have
 *    their own *_free / *_destroy function.
 *  - A kv_t handle is safe to share between threads; option objects are not.
 */
#ifndef KVDIST_H
#define KVDIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KV_BUILDING_LIBRARY) && defined(__GNUC__)
#define KV_API __attribute__((visibility("default")))
#else
#define KV_API
#endif

/* The library version. The Makefile reads these three lines. */
#define KV_VERSION_MAJOR 0
#define KV_VERSION_MINOR 1
#define KV_VERSION_PATCH 0
#define KV_VERSION_STRING "0.1.0"

/* Returns KV_VERSION_STRING as compiled into the library (which may differ
 * from the header the caller compiled against). Static string. */
KV_API const char *kv_version(void);

/*
 * Error codes. 0 is success; every other value is one of these and keeps its
 * number forever (new codes are only ever appended).
 */
enum kv_error {
    KV_OK = 0,
    KV_ENOTFOUND = 1,   /* no live value for the key (absent or deleted) */
    KV_EINVAL = 2,      /* invalid argument: NULL pointer, empty key, bad
                           option value, malformed context */
    KV_ETOOBIG = 3,     /* value larger than max_value_size */
    KV_EKEYTOOBIG = 4,  /* key longer than max_key_size */
    KV_EQUORUM = 5,     /* fewer than W (or R) replicas answered in time; a
                           write that returns this is INDETERMINATE: it may
                           exist on some replicas and may become visible */
    KV_ETIMEDOUT = 6,   /* the call's deadline passed */
    KV_EIO = 7,         /* the local storage engine failed */
    KV_ECORRUPT = 8,    /* stored or received bytes failed validation */
    KV_ENOMEM = 9,      /* out of memory */
    KV_ECLOSED = 10,    /* the handle was shut down */
    KV_EBADOPT = 11,    /* unknown option name */
    KV_EBUSY = 12,      /* data directory locked by another process */
    KV_EUNAVAIL = 13,   /* no node able to serve the request is reachable,
                           or fewer than W (R) replicas could be asked: a
                           write that returns this was NOT WRITTEN (no
                           replica received it) and may be sent again */
    KV_EPROTO = 14,     /* a peer sent a malformed or unexpected message */
    KV_EADDRINUSE = 15, /* the listen address is already in use */
    KV_ENOTSUP = 16,    /* not supported in this configuration */
    KV_EINTERNAL = 17,  /* a bug: an invariant of the library failed */
    KV_EAUTH = 18       /* a front end's client gave no password, or a
                           wrong one (auth_password): HTTP's 401; over
                           TLS, a peer's refusal of a request only
                           members may send */
};

/* Returns a static, human-readable name for an error code; never NULL.
 * Unknown codes give "unknown error". Thread-safe. */
KV_API const char *kv_strerror(int err);

/* ---------------------------------------------------------------- options */

typedef struct kv_options kv_options_t; /* string-keyed settings */

/* Log levels, syslog-style. */
enum kv_log_level {
    KV_LOG_ERROR = 3,
    KV_LOG_WARN = 4,
    KV_LOG_NOTICE = 5,
    KV_LOG_INFO = 6,
    KV_LOG_DEBUG = 7
};

/* A logger: called from any library thread, possibly concurrently, with a
 * NUL-terminated message (no trailing newline) that is only valid during the
 * call. It may be called while the library holds internal locks: it must
 * not call back into the library. The library never writes to stdout or
 * stderr itself and opens no log files of its own (RocksDB keeps its LOG
 * files inside data_dir): without a logger it is silent. */
typedef void (*kv_log_fn)(void *arg, int level, const char *msg);

/* One sibling as seen by a resolver. `value` is valid only during the call. */
typedef struct kv_sibling {
    const void *value;
    size_t len;
    int64_t timestamp_us; /* wall-clock time its coordinator accepted it */
} kv_sibling_t;

/* A resolver merges n >= 2 concurrent siblings into the single value that
 * kv_get() returns. It must set *out to a buffer allocated with malloc()
 * (the library frees it) and *outlen to its length, and return 0; any other
 * return value makes kv_get() fail with that code. It is called from the
 * calling thread of kv_get(), possibly concurrently. It does not change what
 * is stored: siblings stay until a write whose context covers them. */
typedef int (*kv_resolve_fn)(void *arg, const kv_sibling_t *siblings, size_t n,
                             void **out, size_t *outlen);

/* Creates an option set with every option at its default. Returns NULL only
 * when out of memory. Not thread-safe: use one option set from one thread. */
KV_API kv_options_t *kv_options_create(void);

/*
 * Sets option `name` to `value` (both NUL-terminated; copied).
 * Returns 0, KV_EBADOPT for an unknown name, KV_EINVAL for a value that does
 * not parse or is out of range (nothing changes then; kv_options_errmsg()
 * says why), KV_ENOMEM.
 *
 * Options, in the order kv_options_name() enumerates them (each kvdistd
 * flag and each line of its --config file sets one of these):
 *   data_dir        directory of the local store (required for role=peer)
 *   node_id         this node's name in the cluster (default: "node")
 *   role            peer | client (default peer; a client holds no data)
 *   listen          URL peers reach this node at (tcp://, ipc://); none by
 *                   default: with neither listen nor join a node is a
 *                   one-node cluster, the embedded default
 *   join            comma-separated seed peer URLs
 *   n, r, w         replicas, read quorum, write quorum (defaults 3, 2, 2;
 *                   each 1..16, r and w at most n)
 *   vnodes          ring positions per node (1..65536; default chosen from
 *                   the ring's balance measurements, see kvdist(7))
 *   sync            none | wal | fsync (default wal): see kvdist(7)
 *   cache_size      RocksDB block cache bytes (default 64MiB; k/KiB, M/MiB,
 *                   G/GiB suffixes accepted)
 *   max_key_size    largest key in bytes (default 65536)
 *   max_value_size  largest value in bytes (default 16MiB)
 *   clock_max       vector clock entries kept per key before pruning
 *                   (default 50, at least 4)
 *   timeout_ms      default per-request deadline (default 5000)
 *   gossip_interval_ms  how often a node gossips its membership table with
 *                   one random peer (default 500, 10..60000)
 *   phi_convict     phi-accrual threshold above which a silent member is
 *                   marked down (default 8, as Cassandra; 1..100): a member
 *                   is down after about 18.4 x its mean heartbeat interval
 *                   of silence (see kvdist(7))
 *   sloppy_quorum   on | off (default on): a write or read for a replica
 *                   that is down goes to the next healthy node beyond the
 *                   preference list, which keeps it as a hint and counts
 *                   toward W/R (availability); off: only preference-list
 *                   nodes count, and calls fail when fewer than W/R of them
 *                   answer (consistency)
 *   hinted_handoff  on | off (default on): a coordinator keeps a hint for
 *                   every replica that did not answer a write, and delivers
 *                   it when the replica returns; off leaves such replicas
 *                   to read repair (fallbacks standing in under sloppy
 *                   quorum still deliver what they hold)
 *   handoff_rate    hints delivered per second by one node (default 1000)
 *   anti_entropy    on | off (default on): replicas compare Merkle trees of
 *                   the ranges they share and exchange what differs
 *   aae_interval_ms pause between background anti-entropy passes (default
 *                   60000; kv_repair() starts one at once)
 *   aae_rebuild_rate  index entries per second when a tree is rebuilt from
 *                   the store at start-up or after a membership change
 *                   (default 200000), so a rebuild does not starve requests
 *   tombstone_grace_ms  how long a delete's tombstone is kept at least
 *                   (default 864000000, ten days); it is purged only after
 *                   that and only once every replica holds it. A node
 *                   restored from a backup older than this can bring
 *                   deleted keys back (kvdist(7))
 *   resp            HOST:PORT to serve the Redis protocol (RESP2) at
 *                   (kvdist-resp(7)); none by default; role=peer only
 *   http            HOST:PORT to serve the HTTP API at (kvdist-http(7));
 *                   none by default; role=peer only. kv_open returns
 *                   KV_EADDRINUSE if the port is taken
 *   http_tls_cert_file  PEM certificate (a chain: the server's first) of
 *                   the HTTP API; with http_tls_key_file the API is served
 *                   over HTTPS only (NNG's TLS), at the same http address.
 *                   Both or neither, and only with http (else kv_open
 *                   returns KV_EINVAL); a file that cannot be read or
 *                   loaded also fails kv_open (KV_EINVAL, logged)
 *   http_tls_key_file  PEM private key of that certificate, unencrypted
 *   auth_password   the password every HTTP and RESP client must give,
 *                   as Redis's requirepass (1 to 1024 bytes, no line
 *                   break; unset by default: no password). RESP: AUTH
 *                   [default] PASSWORD or HELLO 2 AUTH default PASSWORD,
 *                   else -NOAUTH; HTTP: Authorization: Bearer PASSWORD or
 *                   Basic with any user name, else 401 (KV_EAUTH); /health
 *                   needs none. Write-only: kv_options_get reads it back
 *                   as "", and no log line shows it. Peers do not use it
 *   auth_password_file  a file whose one line (a trailing newline is
 *                   dropped) is auth_password, read by kv_open, which
 *                   fails with KV_EINVAL if the file is missing,
 *                   unreadable, empty or longer than one line, and logs a
 *                   warning if group or others may read it. Not with
 *                   auth_password (KV_EINVAL)
 *   max_clients     HTTP plus RESP connections served at once (0..1000000;
 *                   default 0: half the soft open-file limit, at most
 *                   10000); one more is answered "max number of clients
 *                   reached" and closed
 *   max_members     members the cluster may have, this node included
 *                   (default 128, 1..1024): a gossip row for one more is
 *                   refused, logged and counted
 *                   (kvdist_gossip_rows_refused_total)
 *   peer_buffer_budget bytes of inbound peer messages the node holds at
 *                   once, all connections together (default 1GiB, 8MiB
 *                   to 1TiB, at least 6 x (max_value_size + max_key_size
 *                   + 1MiB)): half for messages being received, half for
 *                   those being handled; a connection beyond it is
 *                   closed, a message beyond it answered KV_EBUSY, and a
 *                   message above max_value_size + max_key_size + 1MiB
 *                   (siblings) is not sent (KV_ETOOBIG); kvdist(7)
 *   tls_ca_file     PEM file of the CA that signs the cluster's
 *                   certificates; with tls_cert_file and tls_key_file it
 *                   is required by tls+tcp:// URLs (and they by it):
 *                   peers and clients then use mutual TLS (kvdist(7)
 *                   SECURITY)
 *   tls_cert_file   PEM file of this node's certificate, whose CN or a
 *                   subjectAltName is its node_id and which allows
 *                   serverAuth and clientAuth (kv_open checks it), or of a
 *                   client's certificate (clientAuth)
 *   tls_key_file    PEM file of that certificate's private key
 *   fault_file      for tests only: a file of transport faults (delays,
 *                   drops, cut peers; kvdist(7) FAULT INJECTION) that the
 *                   node's outgoing peer requests obey; unset (the
 *                   default) turns the hook off. Nothing else, in
 *                   particular no environment variable, turns it on
 */
KV_API int kv_options_set(kv_options_t *o, const char *name, const char *value);

/* Reads back option `name` as text into buf (NUL-terminated, truncated to
 * size). Returns 0, KV_EBADOPT, KV_EINVAL (NULL argument). */
KV_API int kv_options_get(const kv_options_t *o, const char *name, char *buf,
                          size_t size);

/*
 * Enumerates the options kv_options_set() accepts, so that programs (a
 * daemon's config file, --help, a GUI) need not repeat the list.
 * kv_options_name(i) returns the name of option i, for i from 0 up, in a
 * fixed order (the order of the list above), and NULL once i is past the
 * last one. kv_options_doc(name) returns a one-line description of option
 * `name` (no newline, no trailing period), or NULL if name is NULL or not
 * an option. Both return static strings that stay valid for the life of
 * the process; both are thread-safe and need no option set. A default is
 * read with kv_options_get() on a fresh kv_options_create().
 */
KV_API const char *kv_options_name(size_t i);
KV_API const char *kv_options_doc(const char *name);

/* The reason the last kv_options_set() on `o` failed, or "" if it did not.
 * Valid until the next call on `o`. Never NULL. */
KV_API const char *kv_options_errmsg(const kv_options_t *o);

/* Installs a logger and the most verbose level it wants (messages above it
 * are never formatted). fn NULL silences the library (the default). */
KV_API void kv_options_set_logger(kv_options_t *o, kv_log_fn fn, void *arg,
                                  int level);

/* Installs the sibling resolver used by kv_get(). fn NULL restores the
 * default: the sibling with the greatest timestamp_us wins, ties broken by
 * the byte-wise greatest value (then the longer one), so every node resolves
 * the same siblings to the same value. */
KV_API void kv_options_set_resolver(kv_options_t *o, kv_resolve_fn fn,
                                    void *arg);

/* Frees an option set. NULL is a no-op. A kv_t opened from it does not keep
 * a reference: the options may be destroyed right after kv_open(). */
KV_API void kv_options_destroy(kv_options_t *o);

/* ------------------------------------------------------------ the handle */

typedef struct kv kv_t; /* one node; safe to share between threads */

/*
 * Opens a node with the given options (copied). On success *kvp is the new
 * handle. Returns 0, KV_EINVAL (o or kvp NULL, inconsistent options, e.g.
 * role=peer without data_dir, role=client without join, r or w above n,
 * a listen URL NNG cannot parse), KV_EBUSY (data_dir in use by another
 * process), KV_EIO (the store cannot be opened or created), KV_ECORRUPT
 * (the store failed validation), KV_EADDRINUSE (listen address taken),
 * KV_EUNAVAIL (role=client: no seed answered within timeout_ms),
 * KV_ENOMEM. The reason for a KV_EINVAL is logged through the logger.
 *
 * A peer with `join` contacts its seeds in the background (and keeps
 * retrying until one answers); the member list it learns is saved in the
 * data directory, so a restarted node finds the cluster by itself.
 * On failure *kvp is set to NULL.
 */
KV_API int kv_open(const kv_options_t *o, kv_t **kvp);

/*
 * Stops serving: calls that start afterwards fail with KV_ECLOSED, and the
 * call returns once every call already in progress on other threads has
 * finished (including its resolver and its metrics). The handle stays
 * valid until kv_close(); kv_stat() and kv_metrics() keep working on it
 * (the counters stay readable), everything else returns KV_ECLOSED.
 * Idempotent.
 */
KV_API void kv_shutdown(kv_t *kv);

/* kv_shutdown() then frees everything, flushing and closing the store.
 * NULL is a no-op. No call may use kv after (or race with) kv_close. */
KV_API void kv_close(kv_t *kv);

/* ------------------------------------------------------- simple key/value */

/*
 * Stores val under key. The write supersedes every version of the key that
 * the coordinating replica holds (so sequential puts overwrite, as users
 * expect); versions that replica has not seen stay as siblings.
 * Returns 0 once the write is durable per the `sync` option on W replicas,
 * or KV_EINVAL (kv/key NULL, klen 0, val NULL with vlen > 0), KV_EKEYTOOBIG,
 * KV_ETOOBIG (value over max_value_size; for kv_put_ctx, also a write
 * that would leave the key more than 100 siblings: resolve them with a
 * context covering them first),
 * KV_EQUORUM (indeterminate, see above; also a forwarded write whose link
 * to its coordinator failed), KV_ETIMEDOUT (indeterminate too),
 * KV_EUNAVAIL (no replica of the key could be given it), KV_ECORRUPT (the stored
 * object failed validation), KV_EIO (the store failed: while a disk is
 * full, read-only or failing every write fails so, until the store, which
 * retries by itself, takes writes again; kvdist(7), DISK FAULTS),
 * KV_ECLOSED, KV_ENOMEM. On any error other than KV_EQUORUM and
 * KV_ETIMEDOUT nothing was written. Thread-safe.
 */
KV_API int kv_put(kv_t *kv, const void *key, size_t klen, const void *val,
                  size_t vlen);

/*
 * Reads key. On success *valp is a buffer of *vlenp bytes that the caller
 * frees with kv_free() (a zero-length value gives a valid non-NULL buffer).
 * If the key has concurrent siblings, they are merged by the resolver
 * installed at open time (see kv_options_set_resolver). Returns 0,
 * KV_ENOTFOUND (absent or deleted), KV_EINVAL, KV_EKEYTOOBIG, KV_EQUORUM,
 * KV_ETIMEDOUT, KV_EUNAVAIL, KV_EPROTO, KV_EIO, KV_ECORRUPT, KV_ECLOSED,
 * KV_ENOMEM or the resolver's error. *valp is NULL on any error. Thread-safe.
 */
KV_API int kv_get(kv_t *kv, const void *key, size_t klen, void **valp,
                  size_t *vlenp);

/*
 * Deletes key by writing a tombstone that supersedes every version the
 * coordinating replica holds. Deleting an absent key succeeds. Errors as for
 * kv_put(). Thread-safe.
 */
KV_API int kv_delete(kv_t *kv, const void *key, size_t klen);

/* Frees a buffer returned by the library. NULL is a no-op. */
KV_API void kv_free(void *p);

/* ---------------------------------------------------- conflict-aware calls */

/*
 * Per-call settings and results. Zero in an input field means "the node's
 * default". Initialise with KV_CALL_INIT or memset to 0. A kv_call_t may be
 * reused after a call returns, but not shared between concurrent calls.
 */
typedef struct kv_call {
    /* in */
    int r;          /* read quorum (1..n) */
    int w;          /* write quorum (1..n) */
    int timeout_ms; /* deadline for the whole call */
    int reserved_in[5];
    /* out: filled by every call that takes a kv_call_t */
    int acked;  /* replicas that acknowledged the write / answered the read */
    int needed; /* the quorum the call waited for */
    int reserved_out[6];
} kv_call_t;

#define KV_CALL_INIT                                                           \
    {                                                                          \
        0, 0, 0, {0}, 0, 0,                                                    \
        {                                                                      \
            0                                                                  \
        }                                                                      \
    }

/* The result of a conflict-aware read: every live sibling plus the causal
 * context that covers all of them (and any tombstones). Opaque. */
typedef struct kv_siblings kv_siblings_t;

/*
 * Reads every live sibling of key. Returns 0 with *out set even when the key
 * is absent or deleted: then kv_siblings_count() is 0, and the context (which
 * covers a tombstone, if any) can still be passed to a later write. call may
 * be NULL. Errors: KV_EINVAL, KV_EKEYTOOBIG, KV_EQUORUM, KV_ETIMEDOUT,
 * KV_EIO, KV_ECORRUPT, KV_ECLOSED, KV_ENOMEM; *out is NULL on error.
 * Free the result with kv_siblings_free(). Thread-safe.
 */
KV_API int kv_get_siblings(kv_t *kv, const void *key, size_t klen,
                           kv_call_t *call, kv_siblings_t **out);

/* Number of live siblings (0 = not found). */
KV_API size_t kv_siblings_count(const kv_siblings_t *s);

/* Sibling i (0-based) of s: *valp and *lenp point into s and stay valid until
 * kv_siblings_free(s). Returns 0 or KV_EINVAL (i out of range, NULL). */
KV_API int kv_siblings_value(const kv_siblings_t *s, size_t i,
                             const void **valp, size_t *lenp);

/* When sibling i's coordinator accepted it (microseconds since the epoch,
 * by that node's clock: informative only, never used to order versions).
 * Returns 0 for an out-of-range i. */
KV_API int64_t kv_siblings_timestamp(const kv_siblings_t *s, size_t i);

/* The opaque causal context of the read: *lenp bytes valid until
 * kv_siblings_free(s). Pass it unchanged to kv_put_ctx / kv_delete_ctx. It
 * is binary; encode it (e.g. base64) to carry it through text protocols. */
KV_API const void *kv_siblings_context(const kv_siblings_t *s, size_t *lenp);

/* Frees a read result. NULL is a no-op. */
KV_API void kv_siblings_free(kv_siblings_t *s);

/*
 * Writes val under key as the successor of exactly the versions ctx covers
 * (ctx comes from kv_siblings_context() of an earlier read). Siblings that
 * ctx does not cover are kept beside the new value. An empty context (ctx
 * NULL, ctxlen 0) covers nothing: the value is added as a sibling of every
 * existing version, as for a client that never read the key. Two writes
 * carrying the same context become two siblings; a chain of writes each
 * carrying the previous read's context never creates one. call may be NULL.
 * A context is not tied to its key: one read from another key discards
 * versions this key's reader never saw.
 * Returns as kv_put(), plus KV_EINVAL for a malformed context.
 */
KV_API int kv_put_ctx(kv_t *kv, const void *key, size_t klen, const void *val,
                      size_t vlen, const void *ctx, size_t ctxlen,
                      kv_call_t *call);

/* Deletes the versions ctx covers, by writing a tombstone sibling (siblings
 * ctx does not cover are kept). Returns as kv_put_ctx(). */
KV_API int kv_delete_ctx(kv_t *kv, const void *key, size_t klen,
                         const void *ctx, size_t ctxlen, kv_call_t *call);

/* --------------------------------------------------------------- cluster */

/* A member's status as this node sees it. */
enum kv_member_status {
    KV_MEMBER_UP = 0,      /* its heartbeats arrive (failure detector) */
    KV_MEMBER_DOWN = 1,    /* silent past phi_convict: suspected down */
    KV_MEMBER_JOINING = 2, /* reserved for online join */
    KV_MEMBER_LEAVING = 3  /* reserved for online leave */
};

/* One cluster member. The array sizes are fixed by the ABI: id holds a
 * node_id of up to 64 bytes and url a URL of up to 511, each with its NUL
 * (the library's KV_ID_MAX and KV_URL_MAX, checked where it fills them). */
typedef struct kv_member {
    char id[72];   /* node_id, NUL-terminated */
    char url[512]; /* the URL peers reach it at, NUL-terminated */
    int status;    /* enum kv_member_status */
    int self;      /* 1 for the node this handle is */
} kv_member_t;

/* Returns a static name for a member status: "up", "down", "joining",
 * "leaving" or "unknown". Never NULL. */
KV_API const char *kv_member_status_name(int status);

/*
 * Lists the members this node knows, sorted by id. *out is an array of
 * *count entries freed with kv_free(). A one-node embedded store lists
 * itself. Returns 0, KV_EINVAL, KV_ECLOSED, KV_ENOMEM. Thread-safe.
 */
KV_API int kv_members(kv_t *kv, kv_member_t **out, size_t *count);

/*
 * Lists the nodes that hold key (its preference list: the first n distinct
 * nodes clockwise from the key on the ring, fewer when the cluster has
 * fewer nodes), in ring order. *out is freed with kv_free(). Returns 0,
 * KV_EINVAL, KV_EKEYTOOBIG, KV_ECLOSED, KV_ENOMEM. Thread-safe.
 */
KV_API int kv_preference_list(kv_t *kv, const void *key, size_t klen,
                              kv_member_t **out, size_t *count);

/* ---------------------------------------------------------- anti-entropy */

/* Progress of a node's anti-entropy, as kv_repair_status() reports it.
 * Counters are totals since the node started. */
typedef struct kv_repair_status {
    int trees_ready;            /* 1 once its Merkle trees are built */
    int running;                /* 1 while a pass is in progress */
    uint64_t passes;            /* full passes completed */
    uint64_t exchanges_done;    /* exchanges of the current (or last) pass */
    uint64_t exchanges_total;   /* ...out of this many (range x peer) */
    uint64_t keys_repaired;     /* local objects changed by anti-entropy */
    uint64_t objects_sent;      /* objects fetched or pushed by its exchanges */
    uint64_t bytes_sent;        /* bytes of its exchange requests */
    uint64_t tombstones_purged; /* deletes garbage-collected */
    int64_t last_pass_us;       /* wall clock at the end of the last full
                                   pass (microseconds since 1970), 0 if none */
} kv_repair_status_t;

/*
 * Starts an anti-entropy pass on node_id (NULL: this node) over every
 * range it replicates, at once: it compares Merkle trees with each other
 * replica of each range and exchanges the objects that differ (merged by
 * version, siblings kept). Returns when the pass has been started (or is
 * already running); follow it with kv_repair_status(). Returns 0,
 * KV_EINVAL, KV_ENOTSUP (anti_entropy off, or an embedded store),
 * KV_EUNAVAIL (node unreachable or unknown), KV_ECLOSED.
 */
KV_API int kv_repair(kv_t *kv, const char *node_id);

/* Fills *st with node_id's anti-entropy progress (NULL: this node).
 * Returns 0, KV_EINVAL, KV_ENOTSUP, KV_EUNAVAIL, KV_ECLOSED. */
KV_API int kv_repair_status(kv_t *kv, const char *node_id,
                            kv_repair_status_t *st);

/* ----------------------------------------------------------------- stats */

/*
 * Reads one counter by name (the *_total names kv_metrics() lists; the
 * kvdist_store_* gauges are only rendered by kv_metrics()).
 * Returns 0, KV_EINVAL (NULL argument), KV_ENOTFOUND (no such metric).
 * Thread-safe; counters are read without stopping writers.
 */
KV_API int kv_stat(kv_t *kv, const char *name, uint64_t *value);

/*
 * Renders every metric in the Prometheus text exposition format into a new
 * NUL-terminated buffer (*outp, freed with kv_free; *lenp excludes the NUL,
 * lenp may be NULL). Returns 0, KV_EINVAL, KV_ENOMEM. Thread-safe.
 */
KV_API int kv_metrics(kv_t *kv, char **outp, size_t *lenp);

/*
 * kv_metrics() of another node: asks member node_id over the peer protocol
 * for its metrics text (as it renders it, cut at 1 MiB) and stores a copy in
 * a new NUL-terminated buffer (*outp, freed with kv_free; *lenp excludes
 * the NUL, lenp may be NULL). node_id NULL, or this node's own id, gives
 * this handle's own kv_metrics() (for a role=client handle: the client's
 * counters only). The member is found by id in this handle's member list,
 * so a role=client handle reaches any member its seeds told it of; the
 * request waits at most the handle's timeout_ms.
 * Returns 0, KV_EINVAL (kv or outp NULL, node_id empty), KV_EUNAVAIL
 * (node_id is not a member, the member cannot be dialled, or the handle is
 * an embedded store without a transport), KV_ETIMEDOUT (the member did not
 * answer within timeout_ms), KV_EPROTO (its answer was malformed),
 * KV_ECLOSED (the handle was shut down), KV_ENOMEM. *outp is NULL on
 * error. Thread-safe; several calls may wait on different members at once.
 */
KV_API int kv_node_metrics(kv_t *kv, const char *node_id, char **outp,
                           size_t *lenp);

#ifdef __cplusplus
}
#endif

#endif /* KVDIST_H */
