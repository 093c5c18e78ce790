/*
 * store.h - the local storage engine (RocksDB), behind a small interface.
 * store.c is the only file that includes rocksdb/c.h.
 */
#ifndef KV_STORE_H
#define KV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

typedef struct store store_t;

/* Column families: data (objects by key), hints (hinted handoff, keyed by
 * owner), meta (node metadata: membership, ring, ...), aae (anti-entropy's
 * index: ring hash + key -> object digest, written with every object). */
enum store_cf {
    STORE_CF_DATA = 0,
    STORE_CF_HINTS = 1,
    STORE_CF_META = 2,
    STORE_CF_AAE = 3
};
#define STORE_CF_COUNT 4

enum store_sync {
    STORE_SYNC_NONE = 0, /* no WAL: a crash loses unflushed writes */
    STORE_SYNC_WAL = 1,  /* WAL written before a write returns */
    STORE_SYNC_FSYNC = 2 /* WAL fsynced before a write returns */
};

typedef struct store_config {
    const char *path;
    int sync;          /* enum store_sync */
    size_t cache_size; /* block cache bytes */
} store_config_t;

/* Opens (creating if needed) the store. Returns 0, KV_EBUSY (locked by
 * another process), KV_ECORRUPT, KV_EIO, KV_ENOMEM. Starts the store's
 * watcher thread (disk faults, below). */
int store_open(const store_config_t *cfg, const kvlog_t *log, store_t **out);
/* Flushes and closes. NULL is a no-op. */
void store_close(store_t *st);

/* Testing: fn(arg), when set, is asked before every write how many
 * milliseconds to stall it (the fault hook's "store_delay", kvdist(7)
 * FAULT INJECTION): a slow disk, on demand. Set before the store is
 * shared; fn NULL (the default) costs one test per write. */
void store_set_write_delay(store_t *st, int (*fn)(void *arg), void *arg);

/* *val is malloc'd (free() it). Returns 0, KV_ENOTFOUND, KV_EIO, ... */
int store_get(store_t *st, int cf, const void *key, size_t klen, void **val,
              size_t *vlen);

/* What store_get_cached returns when answering would read a file: not an
 * error (nothing is logged), a request to ask again with store_get where
 * blocking is allowed. Outside the range of the KV_E* codes. */
#define STORE_EWOULDBLOCK 1000

/* store_get from memory only (memtables and the block cache, RocksDB's
 * kBlockCacheTier): never does I/O, so an NNG thread may call it; returns
 * STORE_EWOULDBLOCK when the value (or its absence) is not in memory. */
int store_get_cached(store_t *st, int cf, const void *key, size_t klen,
                     void **val, size_t *vlen);
int store_put(store_t *st, int cf, const void *key, size_t klen,
              const void *val, size_t vlen);
int store_delete(store_t *st, int cf, const void *key, size_t klen);

/* An atomic group of writes to any column families. */
typedef struct store_batch store_batch_t;
store_batch_t *store_batch_create(store_t *st);
void store_batch_put(store_batch_t *b, int cf, const void *key, size_t klen,
                     const void *val, size_t vlen);
void store_batch_delete(store_batch_t *b, int cf, const void *key, size_t klen);
int store_batch_write(store_batch_t *b);
/* Empties a batch for reuse. */
void store_batch_clear(store_batch_t *b);
void store_batch_destroy(store_batch_t *b);

/* A forward iterator over one column family from a start key (NULL: the
 * first key). Key and value pointers stay valid until the next step. */
typedef struct store_iter store_iter_t;
store_iter_t *store_iter_create(store_t *st, int cf, const void *start,
                                size_t slen);
bool store_iter_valid(store_iter_t *it);
void store_iter_next(store_iter_t *it);
const void *store_iter_key(store_iter_t *it, size_t *len);
const void *store_iter_value(store_iter_t *it, size_t *len);
/* 0 if the iteration ended cleanly, else the engine's error as a code. */
int store_iter_status(store_iter_t *it);
void store_iter_destroy(store_iter_t *it);

/* The sequence number of the last write (RocksDB's): anything written
 * since a recorded value makes it differ. */
uint64_t store_latest_seq(store_t *st);

/*
 * Disk faults. A write the engine refuses (disk full, read-only or failing
 * file system) fails with KV_EIO and makes the store faulted: every write
 * fails until the fault clears, reads go on. The store's watcher then
 * retries at most a second apart and, once the file system takes writes
 * again, reopens the engine (a WAL replay: nothing acknowledged is lost);
 * writes resume by themselves. A call that meets a reopen (milliseconds
 * to a second) waits for it, at most 3 s, then fails with KV_EIO;
 * store_get_cached answers STORE_EWOULDBLOCK; iterators seek back to where
 * they were.
 */
#define STORE_REASON_MAX 160
typedef struct store_health {
    bool faulted; /* writes fail now */
    /* While faulted: the reason in the system's words ("No space left on
     * device"), and for how long. */
    char reason[STORE_REASON_MAX];
    int64_t faulted_ms;
    uint64_t faults;     /* times the store became faulted */
    uint64_t recoveries; /* times writes resumed by themselves */
    uint64_t reopens;    /* reopens that succeeded (part of recoveries) */
} store_health_t;
void store_health(store_t *st, store_health_t *h);

/* Approximate engine figures for metrics (0 when unavailable). */
uint64_t store_property(store_t *st, const char *name);

#endif /* KV_STORE_H */
