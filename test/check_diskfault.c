/*
 * check_diskfault.c - disk faults (issue 15, store.h "Disk faults"): a
 * small tmpfs filled by puts, and a data directory turned read-only under
 * a running node. Each test asserts that the failing request gets KV_EIO,
 * that nothing aborts, that /health answers 503 "degraded" with the reason
 * during the fault, that writes resume by themselves within a bound once
 * the fault clears (polled, no fixed sleeps), and that every acknowledged
 * write reads back, also after the node is reopened. Also an iterator that
 * lives across the store's reopen.
 *
 * The tests mount file systems, so they need root (CI runs as root); without
 * it they fail, unless KVDIST_SKIP_MOUNT_TESTS=1, when each says it was
 * skipped. A file system cannot be remounted read-only while RocksDB holds
 * files open for writing (the kernel answers EBUSY), so "read-only" is a
 * read-only bind mount of the data directory over itself: every file the
 * store creates from then on (a new WAL, a table) fails with EROFS, as on
 * a file system the kernel turned read-only. Whatever a test mounts, the
 * tcase's teardown (in the runner's process, so also after a failed or
 * timed-out test) detaches.
 */
#include "check_kvdist.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvdist.h"
#include "node.h"
#include "store.h"

/* How long writes may take to resume once the fault is gone: the store
 * retries at most 1 s apart, and a reopen replays a few MB of WAL. */
#define RECOVERY_BOUND_MS 10000

/* The tcase's scratch directory (made by the fixture in the runner's
 * process, inherited by each test's fork) and the mount point in it. */
static char g_dir[256];
static char g_mnt[300];

static void detach_all(const char *path)
{
    for (int i = 0; i < 8 && umount2(path, MNT_DETACH) == 0; i++) {
    }
}

static void fault_setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/kvdist-diskfault-XXXXXX",
             base != NULL && *base != '\0' ? base : "/tmp");
    if (mkdtemp(g_dir) == NULL) {
        fprintf(stderr, "diskfault: mkdtemp %s: %s\n", g_dir, strerror(errno));
        abort();
    }
    snprintf(g_mnt, sizeof(g_mnt), "%s/mnt", g_dir);
    if (mkdir(g_mnt, 0700) != 0) {
        fprintf(stderr, "diskfault: mkdir %s: %s\n", g_mnt, strerror(errno));
        abort();
    }
}

static void fault_teardown(void)
{
    char data[400];
    snprintf(data, sizeof(data), "%s/data", g_mnt);
    detach_all(data); /* the read-only bind, if a test left it */
    detach_all(g_mnt);
    util_rmtree(g_dir);
}

/* Mounts a tmpfs of `size` on g_mnt. false: not root and
 * KVDIST_SKIP_MOUNT_TESTS is set (the test then returns, saying so). */
static bool mount_tmpfs(const char *test, const char *size)
{
    char data[400];
    snprintf(data, sizeof(data), "%s/data", g_mnt);
    detach_all(data);
    detach_all(g_mnt);
    char opts[64];
    snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, opts) == 0) {
        return true;
    }
    int err = errno;
    const char *skip = getenv("KVDIST_SKIP_MOUNT_TESTS");
    if ((err == EPERM || err == EACCES) && skip != NULL && *skip != '\0' &&
        strcmp(skip, "0") != 0) {
        printf("diskfault: %s SKIPPED: mounting a tmpfs needs root "
               "(KVDIST_SKIP_MOUNT_TESTS is set)\n",
               test);
        return false;
    }
    ck_abort_msg("%s: cannot mount a tmpfs on %s: %s (the disk fault tests "
                 "need root; set KVDIST_SKIP_MOUNT_TESTS=1 to skip them)",
                 test, g_mnt, strerror(err));
    return false;
}

/* A file of `bytes` on the tmpfs: the space an operator frees later. */
static void write_ballast(const char *path, size_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    char block[65536];
    memset(block, 0xb5, sizeof(block));
    for (size_t done = 0; done < bytes; done += sizeof(block)) {
        ck_assert_int_eq(write(fd, block, sizeof(block)),
                         (ssize_t)sizeof(block));
    }
    close(fd);
}

/* ------------------------------------------------------------ helpers */

/* The value written under key i: its index in every byte pattern, so a
 * value read back under the wrong key or half-written is caught. */
static void value_of(int i, char *v, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        v[k] = (char)('a' + (i + (int)k) % 26);
    }
}

/* Keys of klen bytes, distinct by their first digits. */
static size_t key_of(int i, char *k, size_t klen)
{
    int n = snprintf(k, klen, "k%07d-", i);
    memset(k + n, 'x', klen - (size_t)n);
    return klen;
}

static kv_t *open_embedded(const char *dir, const char *sync, int http_port)
{
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "cache_size", "8MiB"), 0);
    ck_assert_int_eq(kv_options_set(o, "sync", sync), 0);
    if (http_port > 0) {
        char addr[32];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_port);
        ck_assert_int_eq(kv_options_set(o, "http", addr), 0);
    }
    kv_t *kv = NULL;
    int rc = kv_open(o, &kv);
    ck_assert_msg(rc == 0, "kv_open %s: %s", dir, kv_strerror(rc));
    kv_options_destroy(o);
    return kv;
}

/* /health's status code, and its "status" and "reason" (copied). */
static long health(int port, char *status, size_t ssize, char *reason,
                   size_t rsize)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", port);
    httpc_resp_t r = httpc("GET", url, NULL, 0, NULL, NULL);
    ck_assert_msg(r.curl_rc == 0, "GET %s: curl error %d", url, r.curl_rc);
    status[0] = reason[0] = '\0';
    json_t *j = json_loads(r.body != NULL ? r.body : "", 0, NULL);
    ck_assert_msg(j != NULL, "/health body is not JSON: %s", r.body);
    const char *s = json_string_value(json_object_get(j, "status"));
    const char *why = json_string_value(json_object_get(j, "reason"));
    snprintf(status, ssize, "%s", s != NULL ? s : "");
    snprintf(reason, rsize, "%s", why != NULL ? why : "");
    json_decref(j);
    long code = r.status;
    httpc_free(&r);
    return code;
}

static void expect_degraded(int port, const char *want_reason)
{
    char status[32], reason[256];
    long code = health(port, status, sizeof(status), reason, sizeof(reason));
    ck_assert_msg(code == 503 && strcmp(status, "degraded") == 0 &&
                      strstr(reason, want_reason) != NULL &&
                      strncmp(reason, "store: ", 7) == 0,
                  "/health during the fault: %ld %s \"%s\" (want 503 degraded "
                  "\"store: ...%s\")",
                  code, status, reason, want_reason);
}

/* Every key below n reads back with its value. */
static void expect_all(kv_t *kv, int n, size_t klen, size_t vlen,
                       const char *when)
{
    char k[2048], v[8192];
    for (int i = 0; i < n; i++) {
        key_of(i, k, klen);
        value_of(i, v, vlen);
        void *got = NULL;
        size_t len = 0;
        int rc = kv_get(kv, k, klen, &got, &len);
        ck_assert_msg(rc == 0 && len == vlen && memcmp(got, v, vlen) == 0,
                      "%s: acknowledged key %d of %d: %s (%zu bytes)", when, i,
                      n, kv_strerror(rc), len);
        kv_free(got);
    }
}

/* Puts keys from *n on until one fails (at most `max`): the failure's
 * code. *n counts the acknowledged ones. */
static int put_until_failure(kv_t *kv, int *n, int max, size_t klen,
                             size_t vlen)
{
    char k[2048], v[8192];
    for (; *n < max; (*n)++) {
        key_of(*n, k, klen);
        value_of(*n, v, vlen);
        int rc = kv_put(kv, k, klen, v, vlen);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/*
 * After the fault is gone: polls (bounded) until a put goes through and
 * /health is 200 again. Returns the milliseconds it took. The new key is
 * acknowledged too: *n counts it.
 */
static int64_t wait_recovered(kv_t *kv, int port, int *n, size_t klen,
                              size_t vlen)
{
    int64_t t0 = harness_now_ms();
    char k[2048], v[8192];
    key_of(*n, k, klen);
    value_of(*n, v, vlen);
    int rc = -1;
    long code = 0;
    char status[32] = "", reason[256] = "";
    while (harness_now_ms() - t0 < RECOVERY_BOUND_MS) {
        if (rc != 0) {
            rc = kv_put(kv, k, klen, v, vlen);
        }
        if (rc == 0) {
            code = health(port, status, sizeof(status), reason, sizeof(reason));
            if (code == 200) {
                break;
            }
        }
        harness_sleep_ms(20);
    }
    ck_assert_msg(rc == 0 && code == 200,
                  "writes did not resume within %d ms of the fault clearing: "
                  "put %s, /health %ld %s \"%s\"",
                  RECOVERY_BOUND_MS, kv_strerror(rc), code, status, reason);
    (*n)++;
    return harness_now_ms() - t0;
}

/* ------------------------------------------------------------- tests */

/*
 * A 20 MB tmpfs, 12 MB of it a ballast file: puts of 4 KiB fill the rest.
 * The first failure is KV_EIO, reads go on, /health says why; deleting the
 * ballast (an operator freeing space) lets writes resume by themselves.
 */
START_TEST(test_disk_full_embedded)
{
    if (!mount_tmpfs("disk full (embedded)", "20m")) {
        return;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char data[400], ballast[400];
    snprintf(data, sizeof(data), "%s/data", g_mnt);
    snprintf(ballast, sizeof(ballast), "%s/ballast", g_mnt);
    write_ballast(ballast, 12u << 20);
    int port = harness_free_port();
    kv_t *kv = open_embedded(data, "wal", port);
    const size_t klen = 16, vlen = 4096;

    int n = 0;
    int rc = put_until_failure(kv, &n, 10000, klen, vlen);
    ck_assert_msg(rc == KV_EIO, "put %d on a full disk: %s (want KV_EIO)", n,
                  rc == 0 ? "no failure" : kv_strerror(rc));
    ck_assert_int_gt(n, 100);
    store_health_t sh;
    store_health(kv->store, &sh);
    ck_assert(sh.faulted);
    ck_assert_uint_eq(sh.faults, 1);
    /* Every write fails alike while the disk is full; reads go on. */
    char k[64], v[4096];
    key_of(n, k, klen);
    value_of(n, v, vlen);
    ck_assert_int_eq(kv_put(kv, k, klen, v, vlen), KV_EIO);
    expect_degraded(port, "No space left on device");
    expect_all(kv, n, klen, vlen, "during the fault");

    ck_assert_int_eq(unlink(ballast), 0);
    int64_t ms = wait_recovered(kv, port, &n, klen, vlen);
    store_health(kv->store, &sh);
    ck_assert(!sh.faulted);
    ck_assert_uint_eq(sh.recoveries, 1);
    printf("diskfault: disk full (embedded): %d puts acknowledged, writes "
           "resumed %" PRId64 " ms after the space was freed\n",
           n - 1, ms);
    expect_all(kv, n, klen, vlen, "after the fault");
    kv_close(kv);
    kv = open_embedded(data, "wal", 0);
    expect_all(kv, n, klen, vlen, "after a reopen");
    kv_close(kv);
    curl_global_cleanup();
    detach_all(g_mnt);
}
END_TEST

/*
 * The data directory turns read-only under a running store (sync=fsync):
 * the next file RocksDB creates (a WAL at a memtable switch, after ~4 MB of
 * anti-entropy index with 1000-byte keys) fails with EROFS. Remounting it
 * writable again lets writes resume by themselves.
 */
START_TEST(test_read_only_embedded)
{
    if (!mount_tmpfs("read-only (embedded)", "64m")) {
        return;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char data[400];
    snprintf(data, sizeof(data), "%s/data", g_mnt);
    int port = harness_free_port();
    kv_t *kv = open_embedded(data, "fsync", port);
    const size_t klen = 1000, vlen = 100;
    int n = 0;
    ck_assert_int_eq(put_until_failure(kv, &n, 200, klen, vlen), 0);

    ck_assert_msg(mount(data, data, NULL, MS_BIND, NULL) == 0 &&
                      mount(NULL, data, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY,
                            NULL) == 0,
                  "read-only bind mount of %s: %s", data, strerror(errno));
    int rc = put_until_failure(kv, &n, 40000, klen, vlen);
    ck_assert_msg(rc == KV_EIO, "put %d on a read-only disk: %s (want KV_EIO)",
                  n, rc == 0 ? "no failure" : kv_strerror(rc));
    expect_degraded(port, "Read-only file system");
    expect_all(kv, n, klen, vlen, "during the fault");

    ck_assert_msg(umount2(data, 0) == 0, "umount %s: %s", data,
                  strerror(errno));
    int64_t ms = wait_recovered(kv, port, &n, klen, vlen);
    printf("diskfault: read-only (embedded, fsync): %d puts acknowledged, "
           "writes resumed %" PRId64 " ms after the remount\n",
           n - 1, ms);
    expect_all(kv, n, klen, vlen, "after the fault");
    kv_close(kv);
    kv = open_embedded(data, "fsync", 0);
    expect_all(kv, n, klen, vlen, "after a reopen");
    kv_close(kv);
    curl_global_cleanup();
    detach_all(g_mnt);
}
END_TEST

/*
 * An iterator open across the reopen that ends a fault (anti-entropy's
 * rebuild scan keeps one across steps): it lets its raw iterator go at
 * its next step, seeks back afterwards, and the scan sees every key once,
 * in order.
 */
START_TEST(test_iterator_across_reopen)
{
    if (!mount_tmpfs("iterator across a reopen", "20m")) {
        return;
    }
    char data[400], ballast[400];
    snprintf(data, sizeof(data), "%s/data", g_mnt);
    snprintf(ballast, sizeof(ballast), "%s/ballast", g_mnt);
    write_ballast(ballast, 12u << 20);
    kvlog_t quiet = {0};
    store_config_t sc = {data, STORE_SYNC_WAL, 8u << 20};
    store_t *st = NULL;
    ck_assert_int_eq(store_open(&sc, &quiet, &st), 0);
    char k[32], v[4096];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "it-%05d", i);
        ck_assert_int_eq(store_put(st, STORE_CF_META, k, strlen(k), "x", 1), 0);
    }
    store_iter_t *it = store_iter_create(st, STORE_CF_META, "it-", 3);
    ck_assert_ptr_nonnull(it);
    int seen = 0;
    for (; seen < 500 && store_iter_valid(it); store_iter_next(it)) {
        size_t len = 0;
        const char *key = store_iter_key(it, &len);
        snprintf(k, sizeof(k), "it-%05d", seen);
        ck_assert(len == strlen(k) && memcmp(key, k, len) == 0);
        seen++;
    }
    ck_assert_int_eq(seen, 500);

    memset(v, 'v', sizeof(v));
    int rc = 0;
    for (int i = 0; i < 10000 && rc == 0; i++) {
        snprintf(k, sizeof(k), "fill-%05d", i);
        rc = store_put(st, STORE_CF_DATA, k, strlen(k), v, sizeof(v));
    }
    ck_assert_int_eq(rc, KV_EIO);
    ck_assert_int_eq(unlink(ballast), 0);
    /* The owner keeps stepping its scan (here: asking whether it is
     * valid) while the store recovers. */
    int64_t t0 = harness_now_ms();
    store_health_t sh;
    for (;;) {
        ck_assert(store_iter_valid(it));
        store_health(st, &sh);
        if (!sh.faulted) {
            break;
        }
        ck_assert_msg(harness_now_ms() - t0 < RECOVERY_BOUND_MS,
                      "no recovery within %d ms", RECOVERY_BOUND_MS);
        harness_sleep_ms(10);
    }
    ck_assert_uint_eq(sh.reopens, 1);
    for (; store_iter_valid(it); store_iter_next(it)) {
        size_t len = 0;
        const char *key = store_iter_key(it, &len);
        if (len < 3 || memcmp(key, "it-", 3) != 0) {
            break;
        }
        snprintf(k, sizeof(k), "it-%05d", seen);
        ck_assert_msg(len == strlen(k) && memcmp(key, k, len) == 0,
                      "after the reopen: key %.*s, want %s", (int)len, key, k);
        seen++;
    }
    ck_assert_int_eq(store_iter_status(it), 0);
    ck_assert_int_eq(seen, 1000);
    store_iter_destroy(it);
    ck_assert_int_eq(store_put(st, STORE_CF_META, "after", 5, "y", 1), 0);
    store_close(st);
    detach_all(g_mnt);
}
END_TEST

/* One HTTP request to a kvdistd; the status (-1: no answer) and, for an
 * error, the JSON body's code. */
static long http_do(int port, const char *method, int i, size_t vlen,
                    char *code, size_t csize, char **body)
{
    char url[128], k[64], v[8192];
    key_of(i, k, 16);
    k[16] = '\0';
    value_of(i, v, vlen);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/data/%s", port, k);
    httpc_resp_t r = httpc(method, url, strcmp(method, "PUT") == 0 ? v : NULL,
                           strcmp(method, "PUT") == 0 ? vlen : 0, NULL, NULL);
    long st = r.curl_rc == 0 ? r.status : -1;
    if (code != NULL) {
        code[0] = '\0';
        json_t *j = json_loads(r.body != NULL ? r.body : "", 0, NULL);
        const char *c = json_string_value(json_object_get(j, "code"));
        snprintf(code, csize, "%s", c != NULL ? c : "");
        json_decref(j);
    }
    if (body != NULL) {
        *body = r.body;
        r.body = NULL;
    }
    httpc_free(&r);
    return st;
}

static void expect_all_http(int port, int n, size_t vlen, const char *when)
{
    char v[8192];
    for (int i = 0; i < n; i++) {
        char *body = NULL;
        long st = http_do(port, "GET", i, vlen, NULL, 0, &body);
        value_of(i, v, vlen);
        ck_assert_msg(st == 200 && body != NULL && memcmp(body, v, vlen) == 0,
                      "%s: acknowledged key %d of %d: GET %ld", when, i, n, st);
        free(body);
    }
}

/*
 * kvdistd with its data directory on a full tmpfs, through the HTTP API:
 * 500 KV_EIO, /health 503 with the reason, the process alive; freeing the
 * space brings it back; a clean stop and a restart keep every write.
 */
START_TEST(test_disk_full_daemon)
{
    if (!mount_tmpfs("disk full (kvdistd)", "20m")) {
        return;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    harness_t *h = harness_create(1);
    h->n = h->r = h->w = 1;
    snprintf(h->node[0].data, sizeof(h->node[0].data), "%s/data", g_mnt);
    char ballast[400];
    snprintf(ballast, sizeof(ballast), "%s/ballast", g_mnt);
    write_ballast(ballast, 12u << 20);
    int port = harness_start_http(h, 0, NULL);
    const size_t vlen = 4096;

    int n = 0;
    long st = 0;
    char code[32] = "";
    for (; n < 10000; n++) {
        st = http_do(port, "PUT", n, vlen, code, sizeof(code), NULL);
        if (st != 204) {
            break;
        }
    }
    ck_assert_msg(st == 500 && strcmp(code, "KV_EIO") == 0,
                  "PUT %d on a full disk: %ld %s (want 500 KV_EIO)", n, st,
                  code);
    ck_assert_int_gt(n, 100);
    expect_degraded(port, "No space left on device");
    int status = 0;
    ck_assert_msg(waitpid(h->node[0].pid, &status, WNOHANG) == 0,
                  "kvdistd ended during the fault (status 0x%x)", status);

    ck_assert_int_eq(unlink(ballast), 0);
    int64_t t0 = harness_now_ms();
    char hs[32] = "", why[256] = "";
    for (;;) {
        st = http_do(port, "PUT", n, vlen, code, sizeof(code), NULL);
        if (st == 204 &&
            health(port, hs, sizeof(hs), why, sizeof(why)) == 200) {
            break;
        }
        ck_assert_msg(harness_now_ms() - t0 < RECOVERY_BOUND_MS,
                      "kvdistd: writes did not resume within %d ms: PUT %ld "
                      "%s, /health %s \"%s\"",
                      RECOVERY_BOUND_MS, st, code, hs, why);
        harness_sleep_ms(20);
    }
    n++;
    printf("diskfault: disk full (kvdistd): %d PUTs acknowledged, writes "
           "resumed %" PRId64 " ms after the space was freed\n",
           n - 1, harness_now_ms() - t0);
    expect_all_http(port, n, vlen, "after the fault");
    ck_assert_int_eq(harness_stop_status(h, 0), 0);
    port = harness_start_http(h, 0, NULL);
    expect_all_http(port, n, vlen, "after a restart");
    ck_assert_int_eq(harness_stop_status(h, 0), 0);
    detach_all(g_mnt);
    harness_destroy(h);
    curl_global_cleanup();
}
END_TEST

Suite *diskfault_suite(void)
{
    Suite *s = suite_create("diskfault");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, fault_setup, fault_teardown);
    tcase_add_test(tc, test_disk_full_embedded);
    tcase_add_test(tc, test_read_only_embedded);
    tcase_add_test(tc, test_iterator_across_reopen);
    tcase_add_test(tc, test_disk_full_daemon);
    suite_add_tcase(s, tc);
    return s;
}
