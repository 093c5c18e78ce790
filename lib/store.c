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
 * Disk faults. A write that fails (disk full, read-only or failing file
 * system) leaves RocksDB in its background-error state: every later write
 * returns the same error, reads still work. The store is then "faulted"
 * (store_health) and its watcher thread retries at a bounded interval:
 * once the file system takes a probe file again and has room for the WALs
 * to be replayed, it reopens the database (7.8's C API has no
 * rocksdb_resume; a reopen replays the WAL, which holds every write that
 * was acknowledged, and clears any error state). RocksDB's own recovery
 * (SstFileManager, for "no space" only, and only with a write buffer's
 * worth of free space) may come first; a successful probe write then ends
 * the fault without a reopen. With sync none the memtables are the only
 * copy of recent writes, so the store never reopens: it waits for
 * RocksDB's own recovery.
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
 *
 * Locking: `lock` (read) is held by every call that uses db and cf; a
 * reopen holds it for writing, after setting `closing`: calls that come
 * meanwhile wait on `drain` for the reopen to end, not on the lock (a
 * reader-preferring rwlock would let them starve the reopen). Iterators
 * live across calls, so they do not hold it: a reopen sets `reopening`
 * and waits until every raw iterator is gone; each iterator gives its own
 * up at its next store_iter_valid (remembering its position) and seeks
 * back afterwards, so its owner never holds a pointer into a closed
 * database.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "clock.h"
#include "kvdist.h"

static const char *const store_cf_names[STORE_CF_COUNT] = {"default", "hints",
                                                           "meta", "aae"};

/* RocksDB's InfoLogLevel::HEADER_LEVEL: nothing reaches the LOG (see the
 * top of the file). */
#define STORE_INFO_LOG_HEADER_ONLY 5

/* While faulted the watcher retries after 100 ms, then doubling up to
 * 1 s: writes resume within about a second of the fault clearing. After a
 * reopen the next waits 1 s, doubling up to 8 s, and back to 1 s once the
 * store has taken writes for STORE_CALM_MS. */
#define STORE_RETRY_FIRST_MS 100
#define STORE_RETRY_MAX_MS 1000
#define STORE_REOPEN_FIRST_MS 1000
#define STORE_REOPEN_MAX_MS 8000
#define STORE_CALM_MS 60000
/* While healthy the watcher looks at RocksDB's background error count
 * this often, so that a failed flush shows in /health without a write. */
#define STORE_WATCH_MS 1000
/* How long a reopen waits for iterators to let go before it gives up (and
 * tries again at the next retry). */
#define STORE_DRAIN_MS 5000
/* How long a call waits for a reopen to end (a WAL replay: well under a
 * second for the memtables' worth of WAL) before it fails with KV_EIO. */
#define STORE_REOPEN_WAIT_MS 3000
/* What a reopen needs beyond the WALs it replays (1.1 times their size
 * as tables): OPTIONS and MANIFEST files, a new WAL's first pages. */
#define STORE_OPEN_HEADROOM (1u << 20)
#define STORE_PROBE_NAME "kvdist-probe.tmp"
#define STORE_PROBE_BYTES 4096

struct store {
    /* Set at open, then read-only. */
    char *path;
    rocksdb_options_t *opts;
    rocksdb_options_t *cf_opts[STORE_CF_COUNT];
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    rocksdb_readoptions_t *ropts_cached; /* read_tier: block cache only */
    rocksdb_writebatch_t *probe;         /* empty: the watcher's test write */
    int sync;
    const kvlog_t *log;
    int (*delay_fn)(void *arg); /* the fault hook's write stall, or NULL */
    void *delay_arg;

    /* The engine: replaced by a reopen, under lock (write). db is NULL
     * after a reopen that failed, until one succeeds. */
    pthread_rwlock_t lock;
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[STORE_CF_COUNT];
    atomic_bool closing;   /* a reopen is about to take lock */
    atomic_bool reopening; /* iterators: let go (set under mu) */

    pthread_mutex_t mu;   /* everything below */
    pthread_cond_t wake;  /* the watcher: a fault, or stop */
    pthread_cond_t drain; /* a raw iterator gone; a reopen ended */
    size_t live_iters;    /* raw RocksDB iterators in existence */
    bool faulted;
    int fault_rc; /* the code of the error that began it */
    char reason[STORE_REASON_MAX];
    int64_t fault_ms; /* clk_mono_ms when the fault began */
    uint64_t faults, recoveries, reopens;
    bool stop;
    bool watching; /* the watcher thread runs */
    pthread_t watcher;
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
 * Status::ToString). */
static int store_code(const char *err)
{
    if (strncmp(err, "Corruption", 10) == 0) {
        return KV_ECORRUPT;
    }
    if (strstr(err, "lock") != NULL &&
        (strstr(err, "Resource temporarily unavailable") != NULL ||
         strstr(err, "No locks available") != NULL)) {
        return KV_EBUSY;
    }
    return KV_EIO; /* IO error: no space, read-only, EIO; anything else */
}

/* Maps a RocksDB status string to a code, logs it and frees it. */
static int store_error(const store_t *st, const kvlog_t *log, const char *op,
                       char *err)
{
    int rc = store_code(err);
    if (st != NULL) {
        log = st->log;
    }
    KV_LOG(log, KV_LOG_ERROR, "store: %s: %s", op, err);
    rocksdb_free(err);
    return rc;
}

/* The short reason a fault is shown with: the operating system's words
 * for an I/O error (its message ends with strerror's text, as in "IO
 * error: While appending to file: /d/000004.log: No space left on
 * device"), else RocksDB's whole message. */
static void store_reason(const char *err, char *out, size_t size)
{
    const char *r = err;
    const char *last = strrchr(err, ':');
    if (strncmp(err, "IO error", 8) == 0 && last != NULL && last[1] == ' ' &&
        last[2] != '\0') {
        r = last + 2;
    }
    snprintf(out, size, "%s", r);
}

/* Records that writes fail (op's error err, RocksDB's message) and wakes
 * the watcher; logged once per fault, as every write fails alike until it
 * clears. Returns the error's code. */
static int store_fault(store_t *st, const char *op, const char *err)
{
    int rc = store_code(err);
    pthread_mutex_lock(&st->mu);
    bool was = st->faulted;
    if (!was) {
        st->faulted = true;
        st->fault_rc = rc;
        st->faults++;
        st->fault_ms = clk_mono_ms();
        store_reason(err, st->reason, sizeof(st->reason));
        pthread_cond_signal(&st->wake);
    }
    pthread_mutex_unlock(&st->mu);
    if (!was) {
        KV_LOG(st->log, KV_LOG_ERROR,
               "store: %s: %s; writes fail until the disk takes them again "
               "(retried every second at most)",
               op, err);
    } else {
        KV_LOG(st->log, KV_LOG_DEBUG, "store: %s: %s", op, err);
    }
    return rc;
}

/* A write's error: the store is faulted. Frees err. */
static int store_write_error(store_t *st, const char *op, char *err)
{
    int rc = store_fault(st, op, err);
    rocksdb_free(err);
    return rc;
}

void store_health(store_t *st, store_health_t *h)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_lock(&st->mu);
    h->faulted = st->faulted;
    if (st->faulted) {
        snprintf(h->reason, sizeof(h->reason), "%s", st->reason);
        h->faulted_ms = clk_mono_ms() - st->fault_ms;
    }
    h->faults = st->faults;
    h->recoveries = st->recoveries;
    h->reopens = st->reopens;
    pthread_mutex_unlock(&st->mu);
}

/* Every call that uses the engine brackets it with these. A call that
 * meets a reopen waits for it (bounded: STORE_REOPEN_WAIT_MS, then
 * KV_EIO), so that reads go on through a recovery; after a reopen that
 * failed, calls fail at once with KV_EIO: the store is faulted. */
static int store_enter(store_t *st)
{
    if (atomic_load_explicit(&st->closing, memory_order_acquire)) {
        struct timespec ts = clk_deadline(STORE_REOPEN_WAIT_MS);
        pthread_mutex_lock(&st->mu);
        while (atomic_load_explicit(&st->closing, memory_order_acquire) &&
               pthread_cond_timedwait(&st->drain, &st->mu, &ts) == 0) {
        }
        pthread_mutex_unlock(&st->mu);
        if (atomic_load_explicit(&st->closing, memory_order_acquire)) {
            return KV_EIO;
        }
    }
    pthread_rwlock_rdlock(&st->lock);
    if (st->db == NULL) {
        pthread_rwlock_unlock(&st->lock);
        return KV_EIO;
    }
    return 0;
}

static void store_leave(store_t *st)
{
    pthread_rwlock_unlock(&st->lock);
}

static void store_close_db(store_t *st)
{
    for (int i = 0; i < STORE_CF_COUNT; i++) {
        if (st->cf[i] != NULL) {
            rocksdb_column_family_handle_destroy(st->cf[i]);
            st->cf[i] = NULL;
        }
    }
    if (st->db != NULL) {
        rocksdb_close(st->db);
        st->db = NULL;
    }
}

/* The bytes of the write-ahead logs in the data directory: what an open
 * replays and writes out as tables. */
static uint64_t store_wal_bytes(const char *path)
{
    uint64_t total = 0;
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        struct stat sb;
        if (n > 4 && strcmp(e->d_name + n - 4, ".log") == 0 &&
            fstatat(dfd, e->d_name, &sb, 0) == 0 && S_ISREG(sb.st_mode)) {
            total += (uint64_t)sb.st_size;
        }
    }
    closedir(d);
    return total;
}

/*
 * Whether the data directory's file system would let a reopen through:
 * writable, with room for the WAL replay (each failed open leaves files
 * behind, so the store does not try one that cannot work), and a small
 * file can be written and synced. 0, or KV_EIO with why.
 */
static int store_probe_disk(const char *path, char *why, size_t size)
{
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) {
        snprintf(why, size, "%s: %s", path, strerror(errno));
        return KV_EIO;
    }
    if ((sv.f_flag & ST_RDONLY) != 0) {
        snprintf(why, size, "%s: %s", path, strerror(EROFS));
        return KV_EIO;
    }
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    uint64_t need = store_wal_bytes(path) / 10 * 11 + STORE_OPEN_HEADROOM;
    if (avail < need) {
        snprintf(why, size,
                 "%s: %" PRIu64 " bytes free, %" PRIu64
                 " needed to open the store (its WALs and log)",
                 path, avail, need);
        return KV_EIO;
    }
    char name[4096];
    snprintf(name, sizeof(name), "%s/%s", path, STORE_PROBE_NAME);
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, size, "%s/%s: %s", path, STORE_PROBE_NAME,
                 strerror(errno));
        return KV_EIO;
    }
    char block[STORE_PROBE_BYTES];
    memset(block, 0, sizeof(block));
    int rc = 0;
    errno = 0;
    if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block) ||
        fsync(fd) != 0) {
        snprintf(why, size, "%s/%s: %s", path, STORE_PROBE_NAME,
                 errno != 0 ? strerror(errno) : "short write");
        rc = KV_EIO;
    }
    close(fd);
    unlink(name);
    return rc;
}

/* Opens the database with the options store_open made. lock (write) is
 * held, or the store is not shared yet. */
static int store_open_db(store_t *st, const kvlog_t *log)
{
    char *err = NULL;
    st->db = rocksdb_open_column_families(
        st->opts, st->path, STORE_CF_COUNT, store_cf_names,
        (const rocksdb_options_t *const *)st->cf_opts, st->cf, &err);
    if (err != NULL) {
        st->db = NULL;
        for (int i = 0; i < STORE_CF_COUNT; i++) {
            st->cf[i] = NULL;
        }
        return store_error(NULL, log, "open", err);
    }
    return 0;
}

static void store_release(store_t *st)
{
    store_close_db(st);
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
    if (st->probe != NULL) {
        rocksdb_writebatch_destroy(st->probe);
    }
    pthread_cond_destroy(&st->drain);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->mu);
    pthread_rwlock_destroy(&st->lock);
    free(st->path);
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

/* ------------------------------------------------------------ faults */

/* RocksDB's answer to an empty write: 0 when writes go through (the
 * engine is out of its error state), else the error (logged at debug:
 * the fault was reported when it began). */
static int store_probe_write(store_t *st)
{
    int rc = store_enter(st);
    if (rc != 0) {
        return rc;
    }
    char *err = NULL;
    rocksdb_write(st->db, st->wopts, st->probe, &err);
    store_leave(st);
    if (err != NULL) {
        KV_LOG(st->log, KV_LOG_DEBUG, "store: probe write: %s", err);
        rocksdb_free(err);
        return KV_EIO;
    }
    return 0;
}

/*
 * Closes and opens the database again, which clears RocksDB's error
 * state and replays the WAL. Iterators are let go first (at most
 * STORE_DRAIN_MS: an owner that does not step its iterator postpones the
 * reopen to the next retry); calls wait while it runs (store_enter).
 */
static int store_reopen(store_t *st)
{
    pthread_mutex_lock(&st->mu);
    atomic_store_explicit(&st->reopening, true, memory_order_release);
    struct timespec ts = clk_deadline(STORE_DRAIN_MS);
    while (st->live_iters > 0 &&
           pthread_cond_timedwait(&st->drain, &st->mu, &ts) == 0) {
    }
    size_t left = st->live_iters;
    if (left > 0) {
        atomic_store_explicit(&st->reopening, false, memory_order_release);
        pthread_cond_broadcast(&st->drain);
        pthread_mutex_unlock(&st->mu);
        KV_LOG(st->log, KV_LOG_WARN,
               "store: reopen postponed: %zu iterators still open", left);
        return KV_EBUSY;
    }
    pthread_mutex_unlock(&st->mu);

    atomic_store_explicit(&st->closing, true, memory_order_release);
    pthread_rwlock_wrlock(&st->lock);
    int64_t t0 = clk_mono_ms();
    store_close_db(st);
    int rc = store_open_db(st, st->log);
    pthread_rwlock_unlock(&st->lock);
    atomic_store_explicit(&st->closing, false, memory_order_release);

    pthread_mutex_lock(&st->mu);
    atomic_store_explicit(&st->reopening, false, memory_order_release);
    st->reopens += rc == 0;
    pthread_cond_broadcast(&st->drain);
    pthread_mutex_unlock(&st->mu);
    KV_LOG(st->log, rc == 0 ? KV_LOG_NOTICE : KV_LOG_ERROR,
           "store: reopened %s in %" PRId64 " ms%s", st->path,
           clk_mono_ms() - t0, rc == 0 ? "" : ": failed, will retry");
    return rc;
}

/* The fault is over: writes go through again. */
static void store_recovered(store_t *st, const char *how)
{
    pthread_mutex_lock(&st->mu);
    int64_t ms = clk_mono_ms() - st->fault_ms;
    st->faulted = false;
    st->recoveries++;
    pthread_mutex_unlock(&st->mu);
    KV_LOG(st->log, KV_LOG_NOTICE,
           "store: writes resume after %" PRId64 ".%01" PRId64 " s (%s)",
           ms / 1000, (ms % 1000) / 100, how);
}

/* The watcher's state between retries (its own thread only). */
struct store_retry {
    int64_t wait_ms;       /* until the next retry */
    int64_t reopen_at;     /* clk_mono_ms: no reopen before */
    int64_t reopen_wait;   /* between reopens: doubles with each */
    int64_t healthy_since; /* clk_mono_ms, 0 while faulted */
    bool told;             /* said once that it will not reopen */
};

/* One retry while faulted: writes are back if both the disk takes a probe
 * file (so that writing goes on and an open has room) and RocksDB takes a
 * write, after reopening it if need be. */
static void store_retry(store_t *st, struct store_retry *r)
{
    char why[512];
    if (store_probe_disk(st->path, why, sizeof(why)) != 0) {
        KV_LOG(st->log, KV_LOG_DEBUG, "store: still faulted: %s", why);
        return;
    }
    if (store_probe_write(st) == 0) {
        store_recovered(st, "RocksDB resumed by itself");
        return;
    }
    pthread_mutex_lock(&st->mu);
    int fault_rc = st->fault_rc;
    pthread_mutex_unlock(&st->mu);
    if (st->sync == STORE_SYNC_NONE || fault_rc != KV_EIO) {
        if (!r->told) {
            r->told = true;
            KV_LOG(st->log, KV_LOG_WARN, "store: not reopening the store: %s",
                   fault_rc != KV_EIO
                       ? "the engine reports corruption, which a reopen "
                         "cannot repair (see kvdist(7), DISK FAULTS)"
                       : "with sync none its memtables hold the only copy "
                         "of recent writes; writes resume once RocksDB "
                         "recovers by itself");
        }
        return;
    }
    int64_t now = clk_mono_ms();
    if (now < r->reopen_at) {
        return;
    }
    /* Reopens are spaced too, also after one that worked: a disk that
     * fails again at once (a dying one) must not have its WALs replayed
     * ten times a second. */
    bool ok = store_reopen(st) == 0 && store_probe_write(st) == 0;
    r->reopen_at = clk_mono_ms() + r->reopen_wait;
    r->reopen_wait = r->reopen_wait * 2 > STORE_REOPEN_MAX_MS
                         ? STORE_REOPEN_MAX_MS
                         : r->reopen_wait * 2;
    if (ok) {
        store_recovered(st, "store reopened");
    }
}

/* While healthy: a background error (a failed flush or compaction)
 * counts as a fault when writes no longer go through. */
static void store_watch_background(store_t *st, uint64_t *seen)
{
    uint64_t n = store_property(st, "rocksdb.background-errors");
    if (n <= *seen || store_enter(st) != 0) {
        return;
    }
    *seen = n;
    char *err = NULL;
    rocksdb_write(st->db, st->wopts, st->probe, &err);
    store_leave(st);
    if (err != NULL) {
        store_write_error(st, "background error", err);
    }
}

static void *store_watch(void *arg)
{
    store_t *st = arg;
    struct store_retry r = {STORE_RETRY_FIRST_MS, 0, STORE_REOPEN_FIRST_MS,
                            clk_mono_ms(), false};
    uint64_t seen = store_property(st, "rocksdb.background-errors");
    pthread_mutex_lock(&st->mu);
    while (!st->stop) {
        bool faulted = st->faulted;
        struct timespec ts = clk_deadline(faulted ? r.wait_ms : STORE_WATCH_MS);
        pthread_cond_timedwait(&st->wake, &st->mu, &ts);
        if (st->stop) {
            break;
        }
        faulted = st->faulted;
        pthread_mutex_unlock(&st->mu);
        if (faulted) {
            r.healthy_since = 0;
            store_retry(st, &r);
            r.wait_ms = r.wait_ms * 2 > STORE_RETRY_MAX_MS ? STORE_RETRY_MAX_MS
                                                           : r.wait_ms * 2;
        } else {
            int64_t now = clk_mono_ms();
            if (r.healthy_since == 0) {
                r.healthy_since = now;
            } else if (now - r.healthy_since >= STORE_CALM_MS) {
                r.reopen_wait = STORE_REOPEN_FIRST_MS;
            }
            r.wait_ms = STORE_RETRY_FIRST_MS;
            r.told = false;
            store_watch_background(st, &seen);
        }
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
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
    if (pthread_rwlock_init(&st->lock, NULL) != 0) {
        free(st);
        return KV_ENOMEM;
    }
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        pthread_rwlock_destroy(&st->lock);
        free(st);
        return KV_ENOMEM;
    }
    if (clk_cond_init(&st->wake) != 0) {
        pthread_mutex_destroy(&st->mu);
        pthread_rwlock_destroy(&st->lock);
        free(st);
        return KV_ENOMEM;
    }
    if (clk_cond_init(&st->drain) != 0) {
        pthread_cond_destroy(&st->wake);
        pthread_mutex_destroy(&st->mu);
        pthread_rwlock_destroy(&st->lock);
        free(st);
        return KV_ENOMEM;
    }
    atomic_init(&st->closing, false);
    atomic_init(&st->reopening, false);
    st->log = log;
    st->sync = cfg->sync;
    st->path = strdup(cfg->path);

    /* One LRU cache shared by every column family: its size is the single
     * knob for hot data (cache_size), as the README promises. */
    st->cache = rocksdb_cache_create_lru(cfg->cache_size);
    st->table = rocksdb_block_based_options_create();
    st->opts = rocksdb_options_create();
    st->wopts = rocksdb_writeoptions_create();
    st->ropts = rocksdb_readoptions_create();
    st->ropts_cached = rocksdb_readoptions_create();
    st->probe = rocksdb_writebatch_create();
    if (!st->path || !st->cache || !st->table || !st->opts || !st->wopts ||
        !st->ropts || !st->ropts_cached || !st->probe) {
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

    int rc = store_open_db(st, log);
    if (rc != 0) {
        store_release(st);
        return rc;
    }
    if (pthread_create(&st->watcher, NULL, store_watch, st) != 0) {
        store_release(st);
        return KV_ENOMEM;
    }
    st->watching = true;
    *out = st;
    return 0;
}

void store_close(store_t *st)
{
    if (st == NULL) {
        return;
    }
    if (st->watching) {
        pthread_mutex_lock(&st->mu);
        st->stop = true;
        pthread_cond_signal(&st->wake);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->watcher, NULL);
    }
    if (st->sync == STORE_SYNC_NONE && st->db != NULL) {
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
    *val = NULL;
    *vlen = 0;
    int rc = store_enter(st);
    if (rc != 0) {
        return rc;
    }
    char *err = NULL;
    size_t len = 0;
    char *v =
        rocksdb_get_cf(st->db, st->ropts, st->cf[cf], key, klen, &len, &err);
    store_leave(st);
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
    *val = NULL;
    *vlen = 0;
    /* Never waits: not behind a reopen either (an NNG thread calls it). */
    if (atomic_load_explicit(&st->closing, memory_order_acquire) ||
        pthread_rwlock_tryrdlock(&st->lock) != 0) {
        return STORE_EWOULDBLOCK;
    }
    if (st->db == NULL) {
        store_leave(st);
        return STORE_EWOULDBLOCK;
    }
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get_cf(st->db, st->ropts_cached, st->cf[cf], key, klen,
                             &len, &err);
    store_leave(st);
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
    int rc = store_enter(st);
    if (rc != 0) {
        return rc;
    }
    char *err = NULL;
    rocksdb_put_cf(st->db, st->wopts, st->cf[cf], key, klen, val, vlen, &err);
    store_leave(st);
    return err != NULL ? store_write_error(st, "put", err) : 0;
}

int store_delete(store_t *st, int cf, const void *key, size_t klen)
{
    store_stall(st);
    int rc = store_enter(st);
    if (rc != 0) {
        return rc;
    }
    char *err = NULL;
    rocksdb_delete_cf(st->db, st->wopts, st->cf[cf], key, klen, &err);
    store_leave(st);
    return err != NULL ? store_write_error(st, "delete", err) : 0;
}

/* A batch holds column family ids, which a reopen keeps; the handles it
 * takes them from are the open database's, so each addition enters the
 * store. One that finds it closed fails the whole batch (rc). */
struct store_batch {
    rocksdb_writebatch_t *wb;
    store_t *st;
    int rc;
};

store_batch_t *store_batch_create(store_t *st)
{
    store_batch_t *b = malloc(sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->st = st;
    b->rc = 0;
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
    int rc = store_enter(b->st);
    if (rc != 0) {
        b->rc = rc;
        return;
    }
    rocksdb_writebatch_put_cf(b->wb, b->st->cf[cf], key, klen, val, vlen);
    store_leave(b->st);
}

void store_batch_delete(store_batch_t *b, int cf, const void *key, size_t klen)
{
    int rc = store_enter(b->st);
    if (rc != 0) {
        b->rc = rc;
        return;
    }
    rocksdb_writebatch_delete_cf(b->wb, b->st->cf[cf], key, klen);
    store_leave(b->st);
}

int store_batch_write(store_batch_t *b)
{
    store_t *st = b->st;
    if (b->rc != 0) {
        return b->rc;
    }
    store_stall(st);
    int rc = store_enter(st);
    if (rc != 0) {
        return rc;
    }
    char *err = NULL;
    rocksdb_write(st->db, st->wopts, b->wb, &err);
    store_leave(st);
    return err != NULL ? store_write_error(st, "write", err) : 0;
}

void store_batch_clear(store_batch_t *b)
{
    rocksdb_writebatch_clear(b->wb);
    b->rc = 0;
}

void store_batch_destroy(store_batch_t *b)
{
    if (b != NULL) {
        rocksdb_writebatch_destroy(b->wb);
        free(b);
    }
}

/* An iterator's raw RocksDB iterator (it) exists only between an attach
 * and a detach; detached, it keeps the key to seek back to (pos) or that
 * it was at the end, or its error (rc). */
struct store_iter {
    rocksdb_iterator_t *it;
    store_t *st;
    int cf;
    char *pos;
    size_t plen;
    bool at_end;
    int rc;
};

static void store_iter_attach(store_iter_t *si)
{
    store_t *st = si->st;
    pthread_mutex_lock(&st->mu);
    while (atomic_load_explicit(&st->reopening, memory_order_acquire)) {
        pthread_cond_wait(&st->drain, &st->mu);
    }
    st->live_iters++;
    pthread_mutex_unlock(&st->mu);
    pthread_rwlock_rdlock(&st->lock);
    if (st->db != NULL) {
        si->it = rocksdb_create_iterator_cf(st->db, st->ropts, st->cf[si->cf]);
    }
    pthread_rwlock_unlock(&st->lock);
    if (si->it == NULL) {
        pthread_mutex_lock(&st->mu);
        st->live_iters--;
        pthread_cond_broadcast(&st->drain);
        pthread_mutex_unlock(&st->mu);
        si->rc = KV_EIO; /* a reopen failed: the store is faulted */
        return;
    }
    if (si->pos != NULL) {
        rocksdb_iter_seek(si->it, si->pos, si->plen);
    } else {
        rocksdb_iter_seek_to_first(si->it);
    }
}

/* Gives the raw iterator up for a reopen, remembering where it was. */
static void store_iter_detach(store_iter_t *si)
{
    if (si->it == NULL) {
        return;
    }
    if (rocksdb_iter_valid(si->it)) {
        size_t len = 0;
        const char *k = rocksdb_iter_key(si->it, &len);
        char *copy = malloc(len > 0 ? len : 1);
        if (copy == NULL) {
            si->rc = KV_ENOMEM;
        } else {
            memcpy(copy, k, len);
            free(si->pos);
            si->pos = copy;
            si->plen = len;
        }
    } else {
        char *err = NULL;
        rocksdb_iter_get_error(si->it, &err);
        if (err != NULL) {
            si->rc = store_error(si->st, NULL, "iterate", err);
        } else {
            si->at_end = true;
        }
    }
    rocksdb_iter_destroy(si->it);
    si->it = NULL;
    store_t *st = si->st;
    pthread_mutex_lock(&st->mu);
    st->live_iters--;
    pthread_cond_broadcast(&st->drain);
    pthread_mutex_unlock(&st->mu);
}

store_iter_t *store_iter_create(store_t *st, int cf, const void *start,
                                size_t slen)
{
    store_iter_t *si = calloc(1, sizeof(*si));
    if (si == NULL) {
        return NULL;
    }
    si->st = st;
    si->cf = cf;
    if (start != NULL) {
        si->pos = malloc(slen > 0 ? slen : 1);
        if (si->pos == NULL) {
            free(si);
            return NULL;
        }
        memcpy(si->pos, start, slen);
        si->plen = slen;
    }
    store_iter_attach(si);
    return si;
}

bool store_iter_valid(store_iter_t *it)
{
    if (atomic_load_explicit(&it->st->reopening, memory_order_acquire) &&
        it->it != NULL) {
        /* The owner is between steps: nothing points into the old
         * database now. Seek back once the reopen is over. */
        store_iter_detach(it);
        if (it->rc == 0 && !it->at_end) {
            store_iter_attach(it);
        }
    }
    return it->it != NULL && rocksdb_iter_valid(it->it) != 0;
}

void store_iter_next(store_iter_t *it)
{
    if (it->it != NULL) {
        rocksdb_iter_next(it->it);
    }
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
    if (it->rc != 0) {
        return it->rc;
    }
    if (it->it == NULL) {
        return 0;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it->it, &err);
    return err != NULL ? store_error(it->st, NULL, "iterate", err) : 0;
}

void store_iter_destroy(store_iter_t *it)
{
    if (it == NULL) {
        return;
    }
    if (it->it != NULL) {
        rocksdb_iter_destroy(it->it);
        store_t *st = it->st;
        pthread_mutex_lock(&st->mu);
        st->live_iters--;
        pthread_cond_broadcast(&st->drain);
        pthread_mutex_unlock(&st->mu);
    }
    free(it->pos);
    free(it);
}

uint64_t store_property(store_t *st, const char *name)
{
    uint64_t v = 0;
    if (store_enter(st) != 0) {
        return 0;
    }
    int rc = rocksdb_property_int(st->db, name, &v);
    store_leave(st);
    return rc != 0 ? 0 : v;
}

uint64_t store_latest_seq(store_t *st)
{
    if (store_enter(st) != 0) {
        return 0;
    }
    uint64_t seq = rocksdb_get_latest_sequence_number(st->db);
    store_leave(st);
    return seq;
}
