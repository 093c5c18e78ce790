/*
 * store.c - the local storage engine: RocksDB through its C API.
 *
 * This is the only file that includes rocksdb/c.h. It owns the database
 * handle, its four column families (data, hints, meta, aae: store.h says
 * what each holds), the shared LRU block cache and the write options that
 * implement the `sync` durability modes:
 *   none  - WAL disabled: writes live in the memtable until a flush, so a
 *           process crash loses them (replication is the only protection);
 *           a clean close flushes.
 *   wal   - every write is appended to the WAL before it returns: survives
 *           a crash of the process, not of the machine (the OS page cache
 *           holds the WAL until it writes it back).
 *   fsync - the WAL is fsynced before a write returns: survives power loss.
 *           Concurrent writers share one fsync through RocksDB's group
 *           commit, so throughput scales with concurrency.
 * RocksDB error strings are turned into KV_E* codes here, logged and freed.
 * Every function is safe to call from many threads (RocksDB is).
 *
 * RocksDB's info LOG stays empty. Debian 12's librocksdb 7.8 is built
 * with assertions, and its LOG writer asserts (writable_file_writer.h:312,
 * `sync_without_flush_called_`) on the line after one it failed to write:
 * with the LOG in the data directory, a full or read-only disk aborted the
 * process on RocksDB's next warning, or at the next open of a full disk
 * (fixed upstream in 8.1, RocksDB PR #11314). The C API cannot install
 * another logger, so the level is HEADER, above every message (7.8's file
 * logger writes even its header lines at INFO): RocksDB never writes the
 * LOG, and every error it returns still reaches the application's logger
 * through this file.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <rocksdb/c.h>

#include "kvdist.h"

static const char *const store_cf_names[STORE_CF_COUNT] = {"default", "hints",
                                                           "meta", "aae"};

/* RocksDB's InfoLogLevel::HEADER_LEVEL: nothing reaches the LOG (see the
 * top of the file). */
#define STORE_INFO_LOG_HEADER_ONLY 5

struct store {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_options_t *cf_opts[STORE_CF_COUNT];
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_column_family_handle_t *cf[STORE_CF_COUNT];
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    rocksdb_readoptions_t *ropts_cached; /* read_tier: block cache only */
    int sync;
    const kvlog_t *log;
    int (*delay_fn)(void *arg); /* the fault hook's write stall, or NULL */
    void *delay_arg;
};

void store_set_write_delay(store_t *st, int (*fn)(void *arg), void *arg)
{
    st->delay_fn = fn;
    st->delay_arg = arg;
}

/* The fault hook's stall before a write (testing only). */
static void store_stall(const store_t *st)
{
    if (st->delay_fn == NULL) {
        return;
    }
    int ms = st->delay_fn(st->delay_arg);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

/* Maps a RocksDB status string to a code (its prefixes are stable:
 * Status::ToString), logs it and frees it. */
static int store_error(const store_t *st, const kvlog_t *log, const char *op,
                       char *err)
{
    int rc = KV_EIO;
    if (strncmp(err, "Corruption", 10) == 0) {
        rc = KV_ECORRUPT;
    } else if (strstr(err, "lock") != NULL &&
               (strstr(err, "Resource temporarily unavailable") != NULL ||
                strstr(err, "No locks available") != NULL)) {
        rc = KV_EBUSY;
    }
    if (st != NULL) {
        log = st->log;
    }
    KV_LOG(log, KV_LOG_ERROR, "store: %s: %s", op, err);
    rocksdb_free(err);
    return rc;
}

static void store_release(store_t *st)
{
    for (int i = 0; i < STORE_CF_COUNT; i++) {
        if (st->cf[i] != NULL) {
            rocksdb_column_family_handle_destroy(st->cf[i]);
        }
    }
    if (st->db != NULL) {
        rocksdb_close(st->db);
    }
    for (int i = 0; i < STORE_CF_COUNT; i++) {
        if (st->cf_opts[i] != NULL) {
            rocksdb_options_destroy(st->cf_opts[i]);
        }
    }
    if (st->opts != NULL) {
        rocksdb_options_destroy(st->opts);
    }
    if (st->table != NULL) {
        rocksdb_block_based_options_destroy(st->table);
    }
    if (st->cache != NULL) {
        rocksdb_cache_destroy(st->cache);
    }
    if (st->wopts != NULL) {
        rocksdb_writeoptions_destroy(st->wopts);
    }
    if (st->ropts_cached != NULL) {
        rocksdb_readoptions_destroy(st->ropts_cached);
    }
    if (st->ropts != NULL) {
        rocksdb_readoptions_destroy(st->ropts);
    }
    free(st);
}

/*
 * The data directory is private to the process's user, whatever its umask
 * (as PostgreSQL and Redis do): created 0700 here before RocksDB would
 * create it 0777 & ~umask. That is what keeps the store from other local
 * users: RocksDB creates its files 0644 & ~umask and offers no C API to
 * change that (kvdistd sets umask 077 so its files are 0600 too). An
 * existing directory keeps its mode (the operator chose it), but one that
 * others can write gets a warning: they could replace or delete the store.
 */
static int store_prepare_dir(const char *path, const kvlog_t *log)
{
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode) && (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
            KV_LOG(log, KV_LOG_WARN,
                   "store: data directory %s is %s-writable (mode %04o): "
                   "other local users can change or remove the store; "
                   "chmod 0700 it",
                   path, (sb.st_mode & S_IWOTH) != 0 ? "world" : "group",
                   (unsigned)(sb.st_mode & 07777));
        }
        return 0; /* not a directory: RocksDB's open says so */
    }
    if (errno != ENOENT) {
        KV_LOG(log, KV_LOG_ERROR, "store: %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    /* mkdir applies the umask (0700 & ~umask may lack bits the owner
     * needs); chmod sets the mode exactly. */
    if ((mkdir(path, 0700) != 0 && errno != EEXIST) || chmod(path, 0700) != 0) {
        KV_LOG(log, KV_LOG_ERROR, "store: cannot create data directory %s: %s",
               path, strerror(errno));
        return KV_EIO;
    }
    return 0;
}

int store_open(const store_config_t *cfg, const kvlog_t *log, store_t **out)
{
    *out = NULL;
    int prc = store_prepare_dir(cfg->path, log);
    if (prc != 0) {
        return prc;
    }
    store_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return KV_ENOMEM;
    }
    st->log = log;
    st->sync = cfg->sync;

    /* One LRU cache shared by every column family: its size is the single
     * knob for hot data (cache_size), as the README promises. */
    st->cache = rocksdb_cache_create_lru(cfg->cache_size);
    st->table = rocksdb_block_based_options_create();
    st->opts = rocksdb_options_create();
    st->wopts = rocksdb_writeoptions_create();
    st->ropts = rocksdb_readoptions_create();
    st->ropts_cached = rocksdb_readoptions_create();
    if (!st->cache || !st->table || !st->opts || !st->wopts || !st->ropts ||
        !st->ropts_cached) {
        store_release(st);
        return KV_ENOMEM;
    }
    rocksdb_readoptions_set_read_tier(st->ropts_cached, 1); /* kBlockCacheTier */
    rocksdb_block_based_options_set_block_cache(st->table, st->cache);
    /* Bloom filters make a get for an absent key (every first write) cost
     * no disk read. */
    rocksdb_block_based_options_set_filter_policy(
        st->table, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(st->table, 1);
    /* Partitioned index and filters (RocksDB wiki, "Partitioned Index
     * Filters"): a table's index and filter are split into 4 KiB
     * partitions cached like data blocks, under a small pinned top level.
     * Without it, once the index and filter blocks of all tables outgrow
     * the cache, a lookup reads and parses a table's whole index or
     * filter from the file: 1M keys with an 8 MiB cache fell to ~5k
     * puts/s and gets/s; with it, 26k and 97k (README). */
    rocksdb_block_based_options_set_index_type(
        st->table, rocksdb_block_based_table_index_type_two_level_index_search);
    rocksdb_block_based_options_set_partition_filters(st->table, 1);
    rocksdb_block_based_options_set_metadata_block_size(st->table, 4096);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
        st->table, 1);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(st->table, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(
        st->table, 1);

    rocksdb_options_set_create_if_missing(st->opts, 1);
    rocksdb_options_set_create_missing_column_families(st->opts, 1);
    rocksdb_options_increase_parallelism(st->opts, 2);
    /* Nothing goes to RocksDB's LOG: see the top of the file (a LOG line
     * after a failed one aborts Debian's 7.8). */
    rocksdb_options_set_info_log_level(st->opts, STORE_INFO_LOG_HEADER_ONLY);
    rocksdb_options_set_keep_log_file_num(st->opts, 2);

    for (int i = 0; i < STORE_CF_COUNT; i++) {
        st->cf_opts[i] = rocksdb_options_create_copy(st->opts);
        if (st->cf_opts[i] == NULL) {
            store_release(st);
            return KV_ENOMEM;
        }
        rocksdb_options_set_block_based_table_factory(st->cf_opts[i],
                                                      st->table);
        /* Data gets the large memtables; hints and metadata are small. */
        rocksdb_options_set_write_buffer_size(
            st->cf_opts[i], i == STORE_CF_DATA ? 32u << 20 : 4u << 20);
        rocksdb_options_set_max_write_buffer_number(st->cf_opts[i], 2);
        if (i == STORE_CF_DATA) {
            /* A whole-key bloom filter on the memtables: every write reads
             * the old object first, and most of those reads miss the
             * memtables (32 MiB of a larger data set); without it each miss
             * walks the skiplist. Costs ~3 MiB of each data memtable. */
            rocksdb_options_set_memtable_whole_key_filtering(st->cf_opts[i], 1);
            rocksdb_options_set_memtable_prefix_bloom_size_ratio(st->cf_opts[i],
                                                                 0.1);
        }
    }

    if (cfg->sync == STORE_SYNC_NONE) {
        rocksdb_writeoptions_disable_WAL(st->wopts, 1);
    } else if (cfg->sync == STORE_SYNC_FSYNC) {
        rocksdb_writeoptions_set_sync(st->wopts, 1);
    }

    char *err = NULL;
    st->db = rocksdb_open_column_families(
        st->opts, cfg->path, STORE_CF_COUNT, store_cf_names,
        (const rocksdb_options_t *const *)st->cf_opts, st->cf, &err);
    if (err != NULL) {
        int rc = store_error(NULL, log, "open", err);
        st->db = NULL;
        store_release(st);
        return rc;
    }
    *out = st;
    return 0;
}

void store_close(store_t *st)
{
    if (st == NULL) {
        return;
    }
    if (st->sync == STORE_SYNC_NONE) {
        /* Without a WAL the memtables are the only copy: flush them so a
         * clean close keeps every write. */
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        if (fo != NULL) {
            for (int i = 0; i < STORE_CF_COUNT; i++) {
                char *err = NULL;
                rocksdb_flush_cf(st->db, fo, st->cf[i], &err);
                if (err != NULL) {
                    store_error(st, NULL, "flush", err);
                }
            }
            rocksdb_flushoptions_destroy(fo);
        }
    }
    store_release(st);
}

int store_get(store_t *st, int cf, const void *key, size_t klen, void **val,
              size_t *vlen)
{
    char *err = NULL;
    size_t len = 0;
    char *v =
        rocksdb_get_cf(st->db, st->ropts, st->cf[cf], key, klen, &len, &err);
    *val = NULL;
    *vlen = 0;
    if (err != NULL) {
        return store_error(st, NULL, "get", err);
    }
    if (v == NULL) {
        return KV_ENOTFOUND;
    }
    *val = v; /* rocksdb_get_cf allocates with malloc: free() releases it */
    *vlen = len;
    return 0;
}

int store_get_cached(store_t *st, int cf, const void *key, size_t klen,
                     void **val, size_t *vlen)
{
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get_cf(st->db, st->ropts_cached, st->cf[cf], key, klen,
                             &len, &err);
    *val = NULL;
    *vlen = 0;
    if (err != NULL) {
        /* Status::Incomplete ("Result incomplete: ..."): the block cache
         * does not hold it. */
        if (strncmp(err, "Result incomplete", 17) == 0) {
            free(err);
            return STORE_EWOULDBLOCK;
        }
        return store_error(st, NULL, "get", err);
    }
    if (v == NULL) {
        return KV_ENOTFOUND;
    }
    *val = v;
    *vlen = len;
    return 0;
}

int store_put(store_t *st, int cf, const void *key, size_t klen,
              const void *val, size_t vlen)
{
    store_stall(st);
    char *err = NULL;
    rocksdb_put_cf(st->db, st->wopts, st->cf[cf], key, klen, val, vlen, &err);
    return err != NULL ? store_error(st, NULL, "put", err) : 0;
}

int store_delete(store_t *st, int cf, const void *key, size_t klen)
{
    store_stall(st);
    char *err = NULL;
    rocksdb_delete_cf(st->db, st->wopts, st->cf[cf], key, klen, &err);
    return err != NULL ? store_error(st, NULL, "delete", err) : 0;
}

struct store_batch {
    rocksdb_writebatch_t *wb;
    store_t *st;
};

store_batch_t *store_batch_create(store_t *st)
{
    store_batch_t *b = malloc(sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->st = st;
    b->wb = rocksdb_writebatch_create();
    if (b->wb == NULL) {
        free(b);
        return NULL;
    }
    return b;
}

void store_batch_put(store_batch_t *b, int cf, const void *key, size_t klen,
                     const void *val, size_t vlen)
{
    rocksdb_writebatch_put_cf(b->wb, b->st->cf[cf], key, klen, val, vlen);
}

void store_batch_delete(store_batch_t *b, int cf, const void *key, size_t klen)
{
    rocksdb_writebatch_delete_cf(b->wb, b->st->cf[cf], key, klen);
}

int store_batch_write(store_batch_t *b)
{
    store_stall(b->st);
    char *err = NULL;
    rocksdb_write(b->st->db, b->st->wopts, b->wb, &err);
    return err != NULL ? store_error(b->st, NULL, "write", err) : 0;
}

void store_batch_clear(store_batch_t *b)
{
    rocksdb_writebatch_clear(b->wb);
}

void store_batch_destroy(store_batch_t *b)
{
    if (b != NULL) {
        rocksdb_writebatch_destroy(b->wb);
        free(b);
    }
}

struct store_iter {
    rocksdb_iterator_t *it;
    store_t *st;
};

store_iter_t *store_iter_create(store_t *st, int cf, const void *start,
                                size_t slen)
{
    store_iter_t *si = malloc(sizeof(*si));
    if (si == NULL) {
        return NULL;
    }
    si->st = st;
    si->it = rocksdb_create_iterator_cf(st->db, st->ropts, st->cf[cf]);
    if (si->it == NULL) {
        free(si);
        return NULL;
    }
    if (start != NULL) {
        rocksdb_iter_seek(si->it, start, slen);
    } else {
        rocksdb_iter_seek_to_first(si->it);
    }
    return si;
}

bool store_iter_valid(store_iter_t *it)
{
    return rocksdb_iter_valid(it->it) != 0;
}

void store_iter_next(store_iter_t *it)
{
    rocksdb_iter_next(it->it);
}

const void *store_iter_key(store_iter_t *it, size_t *len)
{
    return rocksdb_iter_key(it->it, len);
}

const void *store_iter_value(store_iter_t *it, size_t *len)
{
    return rocksdb_iter_value(it->it, len);
}

int store_iter_status(store_iter_t *it)
{
    char *err = NULL;
    rocksdb_iter_get_error(it->it, &err);
    return err != NULL ? store_error(it->st, NULL, "iterate", err) : 0;
}

void store_iter_destroy(store_iter_t *it)
{
    if (it != NULL) {
        rocksdb_iter_destroy(it->it);
        free(it);
    }
}

uint64_t store_property(store_t *st, const char *name)
{
    uint64_t v = 0;
    if (rocksdb_property_int(st->db, name, &v) != 0) {
        return 0;
    }
    return v;
}

uint64_t store_latest_seq(store_t *st)
{
    return rocksdb_get_latest_sequence_number(st->db);
}
