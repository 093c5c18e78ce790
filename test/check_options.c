/*
 * check_options.c - the option parser: defaults, every option's accepted
 * and refused values, unknown names, and that a refused value changes
 * nothing; the option table's enumeration (kv_options_name/doc) and
 * that kvdist.h, kv_options_set(3) and kvdistd --help name every option
 * (the tests run from the repository top); and kvdistd's configuration
 * file, --print-config, --help and open-file limit, by running
 * build/examples/kvdistd (KVDIST_BUILD) as a child process that each test
 * waits for with a bound.
 */
#include "check_kvdist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvdist.h"

static void expect(kv_options_t *o, const char *name, const char *want)
{
    char buf[256];
    ck_assert_int_eq(kv_options_get(o, name, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, want);
}

START_TEST(test_defaults)
{
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    expect(o, "n", "3");
    expect(o, "r", "2");
    expect(o, "w", "2");
    expect(o, "sync", "wal");
    expect(o, "role", "peer");
    expect(o, "max_key_size", "65536");
    expect(o, "max_value_size", "16777216");
    expect(o, "cache_size", "67108864");
    expect(o, "listen", "");
    ck_assert_str_eq(kv_options_errmsg(o), "");
    kv_options_destroy(o);
    kv_options_destroy(NULL); /* no-op */
}
END_TEST

START_TEST(test_accepts)
{
    kv_options_t *o = kv_options_create();
    static const char *const ok[][3] = {
        {"data_dir", "/tmp/x", "/tmp/x"},
        {"node_id", "n-1.a_b", "n-1.a_b"},
        {"role", "client", "client"},
        {"listen", "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7000"},
        {"listen", "ipc:///tmp/kv.sock", "ipc:///tmp/kv.sock"},
        {"join", "tcp://a:1,ipc:///b", "tcp://a:1,ipc:///b"},
        {"n", "5", "5"},
        {"r", "1", "1"},
        {"w", "16", "16"},
        {"vnodes", "64", "64"},
        {"sync", "fsync", "fsync"},
        {"sync", "none", "none"},
        {"cache_size", "8MiB", "8388608"},
        {"cache_size", "2G", "2147483648"},
        {"cache_size", "0", "0"},
        {"max_key_size", "1k", "1024"},
        {"max_value_size", "0", "0"},
        {"clock_max", "10", "10"},
        {"timeout_ms", "250", "250"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ck_assert_msg(kv_options_set(o, ok[i][0], ok[i][1]) == 0, "%s=%s",
                      ok[i][0], ok[i][1]);
        expect(o, ok[i][0], ok[i][2]);
    }
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_refuses)
{
    kv_options_t *o = kv_options_create();
    static const char *const bad[][2] = {
        {"data_dir", ""},         {"node_id", ""},
        {"node_id", "has space"}, {"node_id", "slash/no"},
        {"role", "server"},       {"listen", "http://x"},
        {"listen", "tcp://"},     {"join", "tcp://a,,"},
        {"join", "tcp://a,udp://b"}, {"n", "0"},
        {"n", "17"},              {"r", "-1"},
        {"w", "2x"},              {"w", ""},
        {"n", " 3"},              {"vnodes", "0"},
        {"vnodes", "70000"},      {"sync", "WAL"},
        {"cache_size", "1X"},     {"cache_size", "-5"},
        {"cache_size", "99999999999999999999"},
        {"cache_size", "2TiB"},   {"max_key_size", "0"},
        {"max_key_size", "17MiB"}, {"max_value_size", "2GiB"},
        {"clock_max", "3"},       {"timeout_ms", "0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char before[256];
        ck_assert_int_eq(kv_options_get(o, bad[i][0], before, sizeof(before)),
                         0);
        ck_assert_msg(kv_options_set(o, bad[i][0], bad[i][1]) == KV_EINVAL,
                      "%s=%s accepted", bad[i][0], bad[i][1]);
        ck_assert_msg(strlen(kv_options_errmsg(o)) > 0, "no reason given");
        ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), bad[i][0]));
        expect(o, bad[i][0], before); /* nothing changed */
    }
    ck_assert_int_eq(kv_options_set(o, "no_such_option", "1"), KV_EBADOPT);
    ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), "no_such_option"));
    ck_assert_int_eq(kv_options_set(NULL, "n", "1"), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, NULL, "1"), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, "n", NULL), KV_EINVAL);
    char buf[8];
    ck_assert_int_eq(kv_options_get(o, "nope", buf, sizeof(buf)), KV_EBADOPT);
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_open_validates)
{
    kv_t *kv = (kv_t *)1;
    ck_assert_int_eq(kv_open(NULL, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_t *o = kv_options_create();
    /* peer without data_dir */
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    /* r > n */
    char *dir = util_tmpdir("opts");
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "n", "2"), 0);
    ck_assert_int_eq(kv_options_set(o, "r", "3"), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_int_eq(kv_options_set(o, "r", "2"), 0);
    ck_assert_int_eq(kv_open(o, &kv), 0);
    kv_close(kv);
    kv_close(NULL); /* no-op */
    kv_options_destroy(o);
    util_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_http_option)
{
    kv_options_t *o = kv_options_create();
    char buf[300];
    ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "");
    const char *good[] = {"127.0.0.1:8080", "localhost:1", "[::1]:65535",
                          "node-1.example.org:443"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_msg(kv_options_set(o, "http", good[i]) == 0, "refused %s",
                      good[i]);
        ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, good[i]);
    }
    const char *bad[] = {"",         "8080",        ":8080",     "h:0",
                         "h:65536",  "h:x",         "h:",        "a/b:80",
                         "::1:80",   "[::1:80",     "[]:80",     "h :80",
                         "h:80 ",    "http://h:80", "h:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(kv_options_set(o, "http", bad[i]) == KV_EINVAL,
                      "accepted '%s'", bad[i]);
        ck_assert_str_ne(kv_options_errmsg(o), "");
        /* a refused value leaves the previous one */
        ck_assert_int_eq(kv_options_get(o, "http", buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, good[3]);
    }
    /* Peers only: a client with http does not open. */
    kv_t *kv = (kv_t *)1;
    ck_assert_int_eq(kv_options_set(o, "role", "client"), 0);
    ck_assert_int_eq(kv_options_set(o, "join", "tcp://127.0.0.1:1"), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_strerror)
{
    for (int e = 0; e <= KV_EAUTH; e++) {
        ck_assert_ptr_nonnull(kv_strerror(e));
        ck_assert_str_ne(kv_strerror(e), "unknown error");
    }
    ck_assert_str_eq(kv_strerror(-1), "unknown error");
    ck_assert_str_eq(kv_strerror(1000), "unknown error");
    ck_assert_str_eq(kv_version(), KV_VERSION_STRING);
}
END_TEST

/* The fault hook's file: unset (off) by default, a non-empty path when
 * set, read back as given; the empty path is refused and changes nothing.
 * That it turns the hook on (and the environment does not) is tested in
 * the failover suite. */
START_TEST(test_fault_file_option)
{
    kv_options_t *o = kv_options_create();
    expect(o, "fault_file", "");
    ck_assert_int_eq(kv_options_set(o, "fault_file", "/tmp/n1.fault"), 0);
    expect(o, "fault_file", "/tmp/n1.fault");
    ck_assert_int_eq(kv_options_set(o, "fault_file", ""), KV_EINVAL);
    ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), "fault_file"));
    expect(o, "fault_file", "/tmp/n1.fault");
    ck_assert_ptr_nonnull(strstr(kv_options_doc("fault_file"), "testing"));
    kv_options_destroy(o);
}
END_TEST

/* The RESP listener address: HOST:PORT, refused otherwise (the old value
 * stays), and only for a peer. */
START_TEST(test_resp_option)
{
    kv_options_t *o = kv_options_create();
    expect(o, "resp", "");
    ck_assert_int_eq(kv_options_set(o, "resp", "127.0.0.1:6379"), 0);
    expect(o, "resp", "127.0.0.1:6379");
    ck_assert_int_eq(kv_options_set(o, "resp", "[::1]:0"), 0);
    ck_assert_int_eq(kv_options_set(o, "resp", "localhost:65535"), 0);
    static const char *const bad[] = {"",           "6379",      ":6379",
                                      "host:",      "host:-1",   "host:65536",
                                      "host:6x",    "tcp://h:1", "a b:1",
                                      "host: 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(kv_options_set(o, "resp", bad[i]) == KV_EINVAL,
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(kv_options_errmsg(o), "resp"));
        expect(o, "resp", "localhost:65535");
    }
    /* A client serves nothing: open refuses the combination. */
    ck_assert_int_eq(kv_options_set(o, "role", "client"), 0);
    ck_assert_int_eq(kv_options_set(o, "join", "tcp://127.0.0.1:1"), 0);
    kv_t *kv = NULL;
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);
}
END_TEST

/* ------------------------------------------------- the client password */

/* auth_password is write-only: set, it reads back as ""; a refused value
 * (empty, a line break, over 1024 bytes) keeps the old one and the reason
 * does not echo it. The file and the HTTPS options read back as given,
 * and kv_open refuses the combinations that cannot work. */
START_TEST(test_auth_options)
{
    kv_options_t *o = kv_options_create();
    static const char *const unset[] = {"auth_password", "auth_password_file",
                                        "http_tls_cert_file",
                                        "http_tls_key_file"};
    for (size_t i = 0; i < 4; i++) {
        expect(o, unset[i], "");
    }
    ck_assert_int_eq(kv_options_set(o, "auth_password", "s3cret-one"), 0);
    expect(o, "auth_password", "");
    char big[1100];
    memset(big, 'p', sizeof(big));
    big[1024] = '\0';
    ck_assert_int_eq(kv_options_set(o, "auth_password", big), 0);
    big[1024] = 'p';
    big[1025] = '\0';
    static const char *const bad[] = {"", "two\nlines-secret", "cr\rsecret"};
    for (size_t i = 0; i < 4; i++) {
        const char *v = i < 3 ? bad[i] : big;
        ck_assert_msg(kv_options_set(o, "auth_password", v) == KV_EINVAL,
                      "accepted bad password %zu", i);
        const char *why = kv_options_errmsg(o);
        ck_assert_ptr_nonnull(strstr(why, "auth_password"));
        ck_assert_ptr_null(strstr(why, "secret"));
        ck_assert_ptr_null(strstr(why, "pppp"));
        expect(o, "auth_password", "");
    }
    ck_assert_ptr_nonnull(
        strstr(kv_options_doc("auth_password"), "never printed"));
    ck_assert_int_eq(kv_options_set(o, "auth_password_file", "/etc/kv/pw"), 0);
    expect(o, "auth_password_file", "/etc/kv/pw");
    ck_assert_int_eq(kv_options_set(o, "auth_password_file", ""), KV_EINVAL);
    expect(o, "auth_password_file", "/etc/kv/pw");

    /* Both forms at once: refused at open, before any file is read. */
    char *dir = util_tmpdir("auth");
    kv_t *kv = (kv_t *)1;
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);

    /* HTTPS: both files, and only with http. */
    o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "http_tls_cert_file", "/x.crt"), 0);
    expect(o, "http_tls_cert_file", "/x.crt");
    ck_assert_int_eq(kv_options_set(o, "http", "127.0.0.1:1"), 0);
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL); /* no key */
    kv_options_destroy(o);
    o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
    ck_assert_int_eq(kv_options_set(o, "http_tls_cert_file", "/x.crt"), 0);
    ck_assert_int_eq(kv_options_set(o, "http_tls_key_file", "/x.key"), 0);
    expect(o, "http_tls_key_file", "/x.key");
    ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL); /* no http */
    ck_assert_ptr_null(kv);
    kv_options_destroy(o);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Every line the library logs, joined (a logger for kv_options_set_logger). */
typedef struct logbuf {
    char text[16384];
    size_t len;
} logbuf_t;

static void log_collect(void *arg, int level, const char *msg)
{
    (void)level;
    logbuf_t *lb = arg;
    int n =
        snprintf(lb->text + lb->len, sizeof(lb->text) - lb->len, "%s\n", msg);
    if (n > 0 && lb->len + (size_t)n < sizeof(lb->text)) {
        lb->len += (size_t)n;
    }
}

/* tls+tcp:// needs the three TLS files and they need it; all of listen
 * and join or none; IPv4 only. Each refusal says why. */
START_TEST(test_tls_options_validate)
{
    char *dir = util_tmpdir("tlsopts");
    static const struct {
        const char *listen, *join;
        bool files;
        const char *why;
    } cases[] = {
        {"tls+tcp://127.0.0.1:7100", NULL, false, "needs all of"},
        {"tls+tcp://127.0.0.1:7100", "tcp://127.0.0.1:7101", true,
         "must all be tls+tcp://"},
        {"tcp://127.0.0.1:7100", NULL, true, "are not tls+tcp:// URLs"},
        {"tls+tcp://[::1]:7100", NULL, true, "IPv6"},
        {NULL, "tls+tcp://[::1]:7100", true, "IPv6"}, /* a join alone */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kv_options_t *o = kv_options_create();
        ck_assert_int_eq(kv_options_set(o, "data_dir", dir), 0);
        if (cases[i].listen != NULL) {
            ck_assert_int_eq(kv_options_set(o, "listen", cases[i].listen),
                             0);
        }
        if (cases[i].join != NULL) {
            ck_assert_int_eq(kv_options_set(o, "join", cases[i].join), 0);
        }
        if (cases[i].files) {
            ck_assert_int_eq(
                kv_options_set(o, "tls_ca_file", "/nonexistent/ca.pem"), 0);
            ck_assert_int_eq(
                kv_options_set(o, "tls_cert_file", "/nonexistent/n.pem"), 0);
            ck_assert_int_eq(
                kv_options_set(o, "tls_key_file", "/nonexistent/n.key"), 0);
        }
        logbuf_t lb = {.len = 0};
        lb.text[0] = '\0';
        kv_options_set_logger(o, log_collect, &lb, KV_LOG_DEBUG);
        kv_t *kv = (kv_t *)1;
        ck_assert_int_eq(kv_open(o, &kv), KV_EINVAL);
        ck_assert_ptr_null(kv);
        ck_assert_msg(strstr(lb.text, cases[i].why) != NULL,
                      "case %zu: the log lacks '%s': %s", i, cases[i].why,
                      lb.text);
        kv_options_destroy(o);
    }
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Opens an embedded node in dir/data with auth_password_file = path; the
 * log goes to lb (emptied first). Returns kv_open's code (closes the
 * node). */
static int open_with_password_file(const char *dir, const char *path,
                                   logbuf_t *lb)
{
    char data[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    lb->len = 0;
    lb->text[0] = '\0';
    kv_options_t *o = kv_options_create();
    ck_assert_int_eq(kv_options_set(o, "data_dir", data), 0);
    ck_assert_int_eq(kv_options_set(o, "auth_password_file", path), 0);
    kv_options_set_logger(o, log_collect, lb, KV_LOG_DEBUG);
    kv_t *kv = NULL;
    int rc = kv_open(o, &kv);
    kv_options_destroy(o);
    kv_close(kv);
    return rc;
}

static void write_mode(const char *path, const char *text, size_t len,
                       mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    ck_assert_int_eq(fchmod(fd, mode), 0);
    close(fd);
}

/* auth_password_file is read by kv_open: a missing, empty, multi-line,
 * over-long or non-regular file stops the open with a reason that names
 * the file; a good one opens (its trailing newline dropped), with a
 * warning when group or others may read it. The password itself is in
 * no log line, at any level. */
START_TEST(test_auth_password_file)
{
    char *dir = util_tmpdir("authfile");
    char path[600];
    snprintf(path, sizeof(path), "%s/pw", dir);
    logbuf_t lb;

    ck_assert_int_eq(open_with_password_file(dir, path, &lb), KV_EINVAL);
    ck_assert_msg(strstr(lb.text, path) != NULL &&
                      strstr(lb.text, "No such file") != NULL,
                  "log: %s", lb.text);
    ck_assert_int_eq(open_with_password_file(dir, dir, &lb), KV_EINVAL);
    ck_assert_msg(strstr(lb.text, "not a regular file") != NULL, "log: %s",
                  lb.text);
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {{"", "empty"},
               {"\n", "empty"},
               {"\r\n", "empty"},
               {"first-secret\nsecond\n", "more than one line"},
               {"nul\0secret\n", "NUL"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = i == 4 ? 11 : strlen(bad[i].text);
        write_mode(path, bad[i].text, len, 0600);
        ck_assert_int_eq(open_with_password_file(dir, path, &lb), KV_EINVAL);
        ck_assert_msg(strstr(lb.text, bad[i].why) != NULL &&
                          strstr(lb.text, "auth_password_file") != NULL,
                      "case %zu: log: %s", i, lb.text);
        ck_assert_ptr_null(strstr(lb.text, "secret"));
    }
    char big[1100];
    memset(big, 'q', sizeof(big));
    write_mode(path, big, 1025, 0600);
    ck_assert_int_eq(open_with_password_file(dir, path, &lb), KV_EINVAL);
    ck_assert_ptr_nonnull(strstr(lb.text, "longer than 1024"));
    write_mode(path, big, 1024, 0600); /* the longest, no newline */
    ck_assert_int_eq(open_with_password_file(dir, path, &lb), 0);

    write_mode(path, "file-secret-7\n", 14, 0644);
    ck_assert_int_eq(open_with_password_file(dir, path, &lb), 0);
    ck_assert_msg(strstr(lb.text, "open to group or others (mode 0644)") !=
                          NULL &&
                      strstr(lb.text, path) != NULL,
                  "no warning: %s", lb.text);
    ck_assert_ptr_null(strstr(lb.text, "file-secret-7"));
    write_mode(path, "file-secret-7\r\n", 15, 0600);
    ck_assert_int_eq(open_with_password_file(dir, path, &lb), 0);
    ck_assert_msg(strstr(lb.text, "open to group") == NULL, "warned: %s",
                  lb.text);
    ck_assert_ptr_null(strstr(lb.text, "file-secret-7"));
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------ the option table */

/* Every option kvdist.h documents, in the table's order: an option added
 * or dropped without updating the documentation fails here. */
static const char *const all_options[] = {
    "data_dir",       "node_id",           "role",
    "listen",         "join",              "n",
    "r",              "w",                 "vnodes",
    "sync",           "cache_size",        "max_key_size",
    "max_value_size", "clock_max",         "timeout_ms",
    "gossip_interval_ms", "phi_convict",   "sloppy_quorum",
    "hinted_handoff", "handoff_rate",      "anti_entropy",
    "aae_interval_ms", "aae_rebuild_rate", "tombstone_grace_ms",
    "resp",           "http",              "http_tls_cert_file",
    "http_tls_key_file", "auth_password",  "auth_password_file",
    "max_clients",    "max_members",       "peer_buffer_budget",
    "tls_ca_file",
    "tls_cert_file",  "tls_key_file",      "fault_file",
};

#define N_ALL_OPTIONS (sizeof(all_options) / sizeof(all_options[0]))

START_TEST(test_enumeration)
{
    size_t count = 0;
    while (kv_options_name(count) != NULL) {
        count++;
    }
    ck_assert_uint_eq(count, N_ALL_OPTIONS);
    ck_assert_ptr_null(kv_options_name(count + 1));
    ck_assert_ptr_null(kv_options_name((size_t)-1));
    kv_options_t *o = kv_options_create();
    ck_assert_ptr_nonnull(o);
    for (size_t i = 0; i < count; i++) {
        const char *name = kv_options_name(i);
        ck_assert_str_eq(name, all_options[i]);
        for (size_t j = 0; j < i; j++) {
            ck_assert_str_ne(name, kv_options_name(j)); /* unique */
        }
        const char *doc = kv_options_doc(name);
        ck_assert_msg(doc != NULL && doc[0] != '\0', "%s: no doc", name);
        ck_assert_msg(strchr(doc, '\n') == NULL, "%s: doc not one line", name);
        /* The default reads back as text that sets it again unchanged
         * (what --print-config relies on); unset strings read as "",
         * which is refused and changes nothing. */
        char def[256], again[256];
        ck_assert_int_eq(kv_options_get(o, name, def, sizeof(def)), 0);
        int rc = kv_options_set(o, name, def);
        if (def[0] == '\0') {
            ck_assert_msg(rc == KV_EINVAL, "%s: empty value accepted", name);
        } else {
            ck_assert_msg(rc == 0, "%s: default '%s' refused: %s", name, def,
                          kv_options_errmsg(o));
        }
        ck_assert_int_eq(kv_options_get(o, name, again, sizeof(again)), 0);
        ck_assert_str_eq(again, def);
    }
    ck_assert_ptr_null(kv_options_doc("no_such_option"));
    ck_assert_ptr_null(kv_options_doc(NULL));
    ck_assert_ptr_null(kv_options_doc(""));
    kv_options_destroy(o);
}
END_TEST

START_TEST(test_max_clients_option)
{
    kv_options_t *o = kv_options_create();
    expect(o, "max_clients", "0");
    ck_assert_int_eq(kv_options_set(o, "max_clients", "1000000"), 0);
    expect(o, "max_clients", "1000000");
    ck_assert_int_eq(kv_options_set(o, "max_clients", "1000001"), KV_EINVAL);
    ck_assert_str_eq(kv_options_errmsg(o),
                     "max_clients: must be an integer from 0 (derived from "
                     "the open-file limit) to 1000000");
    ck_assert_int_eq(kv_options_set(o, "max_clients", "-1"), KV_EINVAL);
    expect(o, "max_clients", "1000000");
    ck_assert_int_eq(kv_options_set(o, "sync", "WAL"), KV_EINVAL);
    ck_assert_str_eq(kv_options_errmsg(o),
                     "sync: must be 'none', 'wal' or 'fsync'");
    kv_options_destroy(o);
}
END_TEST

/* ------------------------------------------- kvdistd's configuration file */

/* Output of one short daemon run. */
typedef struct run {
    int status; /* exit status, or -1 if it did not exit by itself */
    char *out;  /* stdout, NUL-terminated */
    char *err;  /* stderr */
} run_t;

static void daemon_path(char *buf, size_t size)
{
    const char *build = getenv("KVDIST_BUILD");
    snprintf(buf, size, "%s/examples/kvdistd",
             build && *build ? build : "build");
    ck_assert_msg(access(buf, X_OK) == 0, "no daemon at %s", buf);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(m);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        fwrite(chunk, 1, n, m);
    }
    fclose(f);
    fclose(m);
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* Starts the daemon with args (NULL-terminated, argv[0] excluded), its
 * stdout and stderr in files of dir. nofile > 0 lowers the child's soft
 * open-file limit first. Returns the pid. */
static pid_t spawn_daemon(const char *dir, const char *const *args,
                          rlim_t nofile)
{
    char daemon[512];
    daemon_path(daemon, sizeof(daemon));
    const char *argv[32] = {daemon};
    size_t argc = 1;
    for (; args[argc - 1] != NULL; argc++) {
        ck_assert_uint_lt(argc, 31);
        argv[argc] = args[argc - 1];
    }
    argv[argc] = NULL;
    char out[600], err[600];
    snprintf(out, sizeof(out), "%s/stdout", dir);
    snprintf(err, sizeof(err), "%s/stderr", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0) {
            _exit(127);
        }
        if (nofile > 0) {
            struct rlimit rl;
            if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max > nofile) {
                rl.rlim_cur = nofile;
                setrlimit(RLIMIT_NOFILE, &rl);
            }
        }
        execv(daemon, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to ms; SIGKILLs it after that. Returns the exit status,
 * or -1 if it had to be killed or died of a signal. */
static int wait_bounded(pid_t pid, int ms)
{
    int status = 0;
    for (int waited = 0; waited < ms; waited += 10) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Runs a daemon invocation that exits by itself (--print-config, --help,
 * errors), bounded at 60 s (sanitizer builds are slow to start). */
static run_t run_daemon(const char *dir, const char *const *args)
{
    pid_t pid = spawn_daemon(dir, args, 0);
    run_t r;
    r.status = wait_bounded(pid, 60000);
    char path[600];
    snprintf(path, sizeof(path), "%s/stdout", dir);
    r.out = slurp(path);
    snprintf(path, sizeof(path), "%s/stderr", dir);
    r.err = slurp(path);
    return r;
}

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

/* The value of "name = value" in print-config output, "" for a commented
 * "# name =" line, NULL if the option is missing. Caller frees. */
static char *printed_value(const char *out, const char *name)
{
    char set[128], unset[128];
    snprintf(set, sizeof(set), "\n%s = ", name);
    snprintf(unset, sizeof(unset), "\n# %s =\n", name);
    const char *p = strstr(out, set);
    if (p != NULL) {
        p += strlen(set);
        return strndup(p, strcspn(p, "\n"));
    }
    return strstr(out, unset) != NULL ? strdup("") : NULL;
}

static void expect_printed(const char *out, const char *name,
                           const char *want)
{
    char *got = printed_value(out, name);
    ck_assert_msg(got != NULL, "%s missing from:\n%s", name, out);
    ck_assert_msg(strcmp(got, want) == 0, "%s = '%s', want '%s'", name, got,
                  want);
    free(got);
}

START_TEST(test_config_good_file)
{
    char *dir = util_tmpdir("conf");
    char conf[600], want_dir[600];
    snprintf(conf, sizeof(conf), "%s/good.conf", dir);
    snprintf(want_dir, sizeof(want_dir), "%s/kv#1", dir);
    /* comments, blank lines, tabs, CRLF, spaces around names and values,
     * no spaces at all, a '#' inside a word kept as part of the value */
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "# a comment line\n"
                              "\n"
                              "   \t  \n"
                              "   # an indented comment\n"
                              "data_dir = %s   # trailing comment\n"
                              "\tnode_id\t=\tconf-1\t\n"
                              "sync=fsync\n"
                              "n = 5\r\n"
                              "cache_size = 8MiB\n"
                              "r = 3#4\n",
                              want_dir),
                     0);
    /* The last line's '#' follows a digit, so it is part of the value and
     * r is refused: check that first, then drop the line. */
    write_text(conf, text);
    const char *args[] = {"--config", conf, "--print-config", NULL};
    run_t r = run_daemon(dir, args);
    ck_assert_int_eq(r.status, 2);
    char want[700];
    snprintf(want, sizeof(want), "kvdistd: %s:10: r: must be an integer", conf);
    ck_assert_msg(strstr(r.err, want) != NULL, "stderr: %s", r.err);
    run_free(&r);

    *strstr(text, "r = 3#4") = '\0';
    write_text(conf, text);
    r = run_daemon(dir, args);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    ck_assert_str_eq(r.err, "");
    expect_printed(r.out, "data_dir", want_dir);
    expect_printed(r.out, "node_id", "conf-1");
    expect_printed(r.out, "sync", "fsync");
    expect_printed(r.out, "n", "5");
    expect_printed(r.out, "cache_size", "8388608");
    expect_printed(r.out, "r", "2");     /* untouched: the default */
    expect_printed(r.out, "listen", ""); /* unset: "# listen =" */
    run_free(&r);
    free(text);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* A bad line fails with exit 2, "kvdistd: FILE:LINE: REASON", and prints
 * nothing on stdout. */
START_TEST(test_config_bad_lines)
{
    static const struct {
        const char *text;
        const char *reason; /* after "FILE:" */
    } cases[] = {
        {"n = 3\n\n# fine so far\ncolour = blue\n",
         "4: unknown option 'colour'"},
        {"node_id = a\nsync = always\n",
         "2: sync: must be 'none', 'wal' or 'fsync'"},
        {"# no equals sign\nn 3\n", "2: expected 'name = value'"},
        {"= 3\n", "1: expected 'name = value': no name"},
        {"n = 3\nn = 0\n", "2: n: must be an integer from 1 to 16"},
        {"n = # the value is a comment\n", "1: n: must be an integer"},
        {"listen =\n", "1: listen: must be a tcp://, ipc:// or tls+tcp:// URL"},
        {"max_clients = lots\n",
         "1: max_clients: must be an integer from 0 (derived from the "
         "open-file limit) to 1000000"},
        {"Sync = wal\n", "1: unknown option 'Sync'"},
        {"n = 3\nnot an option = 1\n", "2: unknown option 'not an option'"},
    };
    char *dir = util_tmpdir("conf");
    char conf[600];
    snprintf(conf, sizeof(conf), "%s/bad.conf", dir);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_text(conf, cases[i].text);
        const char *args[] = {"--config", conf, "--print-config", NULL};
        run_t r = run_daemon(dir, args);
        char want[800];
        snprintf(want, sizeof(want), "kvdistd: %s:%s", conf, cases[i].reason);
        ck_assert_msg(r.status == 2, "case %zu: status %d", i, r.status);
        ck_assert_msg(strncmp(r.err, want, strlen(want)) == 0,
                      "case %zu: stderr '%s', want '%s'", i, r.err, want);
        ck_assert_msg(strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
                      "case %zu: not one line: %s", i, r.err);
        ck_assert_str_eq(r.out, "");
        run_free(&r);
    }
    /* Unreadable: missing, a directory. */
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/no-such.conf", dir);
    const char *paths[] = {missing, dir};
    const char *why[] = {"No such file or directory", "Is a directory"};
    for (size_t i = 0; i < 2; i++) {
        const char *args[] = {"--config", paths[i], "--print-config", NULL};
        run_t r = run_daemon(dir, args);
        char want[800];
        snprintf(want, sizeof(want),
                 "kvdistd: cannot read config file %s: %s\n", paths[i],
                 why[i]);
        ck_assert_int_eq(r.status, 2);
        ck_assert_str_eq(r.err, want);
        ck_assert_str_eq(r.out, "");
        run_free(&r);
    }
    /* --config twice is refused rather than silently picking one. */
    write_text(conf, "n = 3\n");
    const char *twice[] = {"--config", conf, "--config", conf,
                           "--print-config", NULL};
    run_t r = run_daemon(dir, twice);
    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "--config: given more than once"));
    run_free(&r);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Flags override the file whatever their order; a refused flag still
 * names the flag. */
START_TEST(test_config_flags_override)
{
    char *dir = util_tmpdir("conf");
    char conf[600];
    snprintf(conf, sizeof(conf), "%s/base.conf", dir);
    write_text(conf, "node_id = from-file\nsync = fsync\nn = 5\nw = 1\n"
                     "max_clients = 10\n");
    const char *args[] = {"--sync", "none", "--n", "4", "--config", conf,
                          "--max-clients", "7", "--print-config", NULL};
    run_t r = run_daemon(dir, args);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    expect_printed(r.out, "sync", "none");      /* flag before --config */
    expect_printed(r.out, "max_clients", "7");  /* flag after --config */
    expect_printed(r.out, "n", "4");
    expect_printed(r.out, "node_id", "from-file"); /* file only */
    expect_printed(r.out, "w", "1");
    run_free(&r);

    const char *bad[] = {"--config", conf, "--n", "99", "--print-config",
                         NULL};
    r = run_daemon(dir, bad);
    ck_assert_int_eq(r.status, 2);
    ck_assert_str_eq(r.err, "kvdistd: --n: must be an integer from 1 to 16\n");
    run_free(&r);

    /* data_dir is required from the file or a flag. */
    const char *nodata[] = {"--config", conf, NULL};
    r = run_daemon(dir, nodata);
    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "is required"));
    run_free(&r);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* --print-config prints every option in table order with its doc above it,
 * and its output read back through --config prints the same again. */
START_TEST(test_print_config_roundtrip)
{
    char *dir = util_tmpdir("conf");
    char conf[600], first[600], kvdir[600];
    snprintf(conf, sizeof(conf), "%s/in.conf", dir);
    snprintf(first, sizeof(first), "%s/first.conf", dir);
    snprintf(kvdir, sizeof(kvdir), "%s/data", dir);
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "data_dir = %s\nhinted_handoff = no\n"
                              "join = tcp://127.0.0.1:1,ipc:///tmp/x\n"
                              "max_value_size = 1k\nrole = peer\n",
                              kvdir),
                     0);
    write_text(conf, text);
    free(text);
    const char *args[] = {"--config",      conf, "--listen",
                          "ipc:///tmp/kv-roundtrip.sock", "--http",
                          "127.0.0.1:8080", "--print-config", NULL};
    run_t r1 = run_daemon(dir, args);
    ck_assert_msg(r1.status == 0, "status %d: %s", r1.status, r1.err);
    expect_printed(r1.out, "hinted_handoff", "off");
    expect_printed(r1.out, "max_value_size", "1024");
    expect_printed(r1.out, "resp", "");
    /* Every option once, in table order, each under its doc comment. */
    const char *at = r1.out;
    for (size_t i = 0; kv_options_name(i) != NULL; i++) {
        const char *name = kv_options_name(i);
        char *value = printed_value(r1.out, name);
        ck_assert_msg(value != NULL, "%s not printed", name);
        char line[300];
        if (value[0] == '\0') {
            snprintf(line, sizeof(line), "\n# %s\n# %s =\n",
                     kv_options_doc(name), name);
        } else {
            snprintf(line, sizeof(line), "\n# %s\n%s = ",
                     kv_options_doc(name), name);
        }
        free(value);
        const char *p = strstr(at, line);
        ck_assert_msg(p != NULL, "%s: not under its doc, or out of order",
                      name);
        at = p + 1;
    }
    write_text(first, r1.out);
    const char *again[] = {"--config", first, "--print-config", NULL};
    run_t r2 = run_daemon(dir, again);
    ck_assert_msg(r2.status == 0, "status %d: %s", r2.status, r2.err);
    ck_assert_str_eq(r2.out, r1.out);
    run_free(&r2);
    run_free(&r1);

    /* A data_dir the format cannot carry back is refused, not printed
     * wrong. */
    static const char *const unprintable[] = {" /lead", "/trail ", "/a #b",
                                              "/a\nb"};
    for (size_t i = 0; i < 4; i++) {
        const char *bad[] = {"--data", unprintable[i], "--print-config", NULL};
        run_t rb = run_daemon(dir, bad);
        ck_assert_msg(rb.status == 1, "'%s': status %d", unprintable[i],
                      rb.status);
        ck_assert_ptr_nonnull(
            strstr(rb.err, "kvdistd: data_dir: value cannot"));
        run_free(&rb);
    }

    /* The defaults alone round-trip as well. */
    const char *defaults[] = {"--print-config", NULL};
    r1 = run_daemon(dir, defaults);
    ck_assert_int_eq(r1.status, 0);
    expect_printed(r1.out, "data_dir", "");
    expect_printed(r1.out, "node_id", "node");
    write_text(first, r1.out);
    r2 = run_daemon(dir, again);
    ck_assert_int_eq(r2.status, 0);
    ck_assert_str_eq(r2.out, r1.out);
    run_free(&r2);
    run_free(&r1);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* examples/kvdistd.conf names every option, shows the true default on
 * each line it leaves commented out (or a valid example for an option
 * that is off by default), and reads. Tests run from the top of
 * the repository, as make check does. */
START_TEST(test_example_conf)
{
    char *text = slurp("examples/kvdistd.conf");
    kv_options_t *o = kv_options_create();
    for (size_t i = 0; kv_options_name(i) != NULL; i++) {
        const char *name = kv_options_name(i);
        char set[128], commented[128];
        snprintf(set, sizeof(set), "\n%s = ", name);
        snprintf(commented, sizeof(commented), "\n# %s = ", name);
        const char *p = strstr(text, set);
        if (p == NULL) {
            p = strstr(text, commented);
            ck_assert_msg(p != NULL, "examples/kvdistd.conf lacks %s", name);
            p += strlen(commented);
            char def[256];
            ck_assert_int_eq(kv_options_get(o, name, def, sizeof(def)), 0);
            char *shown = strndup(p, strcspn(p, "\n"));
            if (def[0] != '\0') {
                ck_assert_msg(strcmp(shown, def) == 0,
                              "%s: commented default '%s', library says '%s'",
                              name, shown, def);
            } else {
                /* No default (off): the line shows an example, which must
                 * be a value the option accepts. */
                ck_assert_msg(kv_options_set(o, name, shown) == 0,
                              "%s: example '%s' refused: %s", name, shown,
                              kv_options_errmsg(o));
            }
            free(shown);
        }
    }
    kv_options_destroy(o);
    free(text);

    char *dir = util_tmpdir("conf");
    const char *args[] = {"--config", "examples/kvdistd.conf",
                          "--print-config", NULL};
    run_t r = run_daemon(dir, args);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    expect_printed(r.out, "data_dir", "/var/lib/kvdist/n1");
    expect_printed(r.out, "cache_size", "268435456");
    run_free(&r);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* Every option of kv_options_name(), in order, as a NULL-terminated
 * array of static strings. */
static const char **option_names(size_t *count)
{
    size_t n = 0;
    while (kv_options_name(n) != NULL) {
        n++;
    }
    const char **names = calloc(n + 1, sizeof(*names));
    ck_assert_ptr_nonnull(names);
    for (size_t i = 0; i < n; i++) {
        names[i] = kv_options_name(i);
    }
    *count = n;
    return names;
}

/* A growable list of names read from a document (owned strings). */
typedef struct name_list {
    char **v;
    size_t n;
} name_list_t;

static void names_add(name_list_t *l, const char *s, size_t len)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    ck_assert_ptr_nonnull(v);
    l->v = v;
    l->v[l->n] = strndup(s, len);
    ck_assert_ptr_nonnull(l->v[l->n]);
    l->n++;
}

static bool names_has(const name_list_t *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static void names_free(name_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* The document names exactly the options of kv_options_name(), each once
 * and in that order (both documents promise that order). */
static void expect_option_order(const name_list_t *got, const char *where)
{
    size_t n = 0;
    const char **want = option_names(&n);
    for (size_t i = 0; i < got->n; i++) {
        ck_assert_msg(kv_options_doc(got->v[i]) != NULL,
                      "%s names '%s', which is no option", where, got->v[i]);
    }
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(names_has(got, want[i]), "%s lacks option %s", where,
                      want[i]);
    }
    ck_assert_msg(got->n == n, "%s names %zu options, the library has %zu",
                  where, got->n, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(strcmp(got->v[i], want[i]) == 0,
                      "%s: option %zu is %s, kv_options_name(%zu) is %s",
                      where, i, got->v[i], i, want[i]);
    }
    free(want);
}

static size_t ident_len(const char *p)
{
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || p[n] == '_') {
        n++;
    }
    return n;
}

/* kvdist.h: the list in the comment above kv_options_set. An entry line is
 * " *   NAME..." (continuations are indented further); NAME may be a group
 * such as "n, r, w". */
START_TEST(test_header_lists_options)
{
    char *text = slurp("include/kvdist.h");
    const char *head = "Options, in the order kv_options_name() enumerates";
    char *p = strstr(text, head);
    ck_assert_msg(p != NULL, "include/kvdist.h: no option list");
    char *end = strstr(p, "*/");
    ck_assert_ptr_nonnull(end);
    ck_assert_msg(strncmp(end, "*/\nKV_API int kv_options_set(", 29) == 0,
                  "the option list is not the comment of kv_options_set");
    *end = '\0';
    name_list_t got = {NULL, 0};
    for (char *line = strchr(p, '\n'); line != NULL;
         line = strchr(line + 1, '\n')) {
        const char *q = line + 1;
        if (strncmp(q, " *   ", 5) != 0 || q[5] == ' ') {
            continue;
        }
        q += 5;
        for (;;) {
            size_t len = ident_len(q);
            ck_assert_msg(len > 0, "kvdist.h: odd option line '%.40s'", q);
            names_add(&got, q, len);
            q += len;
            if (strncmp(q, ", ", 2) != 0 || ident_len(q + 2) == 0) {
                break;
            }
            q += 2;
        }
    }
    expect_option_order(&got, "include/kvdist.h");
    names_free(&got);
    free(text);
}
END_TEST

/* The lines of the roff section `title` (".SH title" up to the next
 * ".SH"), NUL-terminated in place within text. */
static char *man_section(char *text, const char *title)
{
    char mark[128];
    snprintf(mark, sizeof(mark), "\n.SH %s\n", title);
    char *p = strstr(text, mark);
    ck_assert_msg(p != NULL, "no section %s", title);
    p += strlen(mark);
    char *end = strstr(p, "\n.SH ");
    if (end != NULL) {
        end[1] = '\0';
    }
    return p;
}

/* The ".TP" / ".B name" entries of a roff fragment, from the first line
 * containing `after` (NULL: the start) up to the next .PP (stop_at_pp) or
 * the end. */
static void man_entries(const char *p, const char *after, bool stop_at_pp,
                        name_list_t *out)
{
    if (after != NULL) {
        p = strstr(p, after);
        ck_assert_msg(p != NULL, "no '%s' in the man page", after);
    }
    bool tp = false;
    for (const char *line = p; line != NULL && *line != '\0';
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (stop_at_pp && strncmp(line, ".PP", 3) == 0) {
            break;
        }
        if (tp && strncmp(line, ".B ", 3) == 0) {
            size_t len = strcspn(line + 3, " \n");
            names_add(out, line + 3, len);
        }
        tp = strncmp(line, ".TP\n", 4) == 0;
    }
}

/* kv_options_set(3): one .TP entry per option under OPTIONS. */
START_TEST(test_man_lists_options)
{
    char *text = slurp("man/kv_options_set.3");
    name_list_t got = {NULL, 0};
    man_entries(man_section(text, "OPTIONS"), NULL, false, &got);
    expect_option_order(&got, "man/kv_options_set.3");
    names_free(&got);
    free(text);
}
END_TEST

/* kvdistd --help has a flag line for every option, whose text is the
 * option's kv_options_doc, except the options it names as set only in a
 * --config file; those have no flag and kvdistd(1) documents them as
 * such. The docs are told apart by their text, so none may contain
 * another. */
START_TEST(test_daemon_help)
{
    size_t n = 0;
    const char **names = option_names(&n);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            ck_assert_msg(i == j || strstr(kv_options_doc(names[i]),
                                           kv_options_doc(names[j])) == NULL,
                          "the doc of %s contains that of %s", names[i],
                          names[j]);
        }
    }
    char *dir = util_tmpdir("conf");
    const char *args[] = {"--help", NULL};
    run_t r = run_daemon(dir, args);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "\n  --config FILE "));
    ck_assert_ptr_nonnull(strstr(r.out, "\n  --print-config "));
    ck_assert_ptr_nonnull(strstr(r.out, "\n  --max-clients N "));

    /* "Set only in a --config file (no flag): a, b." */
    const char *mark = "\nSet only in a --config file (no flag): ";
    const char *fo = strstr(r.out, mark);
    ck_assert_msg(fo != NULL, "--help names no file-only options:\n%s", r.out);
    fo += strlen(mark);
    name_list_t file_only = {NULL, 0};
    for (;;) {
        size_t len = ident_len(fo);
        ck_assert_msg(len > 0, "odd file-only list: %.40s", fo);
        names_add(&file_only, fo, len);
        fo += len;
        if (strncmp(fo, ", ", 2) != 0) {
            break;
        }
        fo += 2;
    }
    ck_assert_msg(*fo == '.', "odd end of the file-only list: %.20s", fo);

    for (size_t i = 0; i < n; i++) {
        const char *doc = kv_options_doc(names[i]);
        bool flag = false;
        for (const char *line = r.out; line != NULL;
             line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            if (strncmp(line, "  --", 4) != 0) {
                continue;
            }
            size_t len = strcspn(line, "\n");
            const char *d = strstr(line, doc);
            if (d != NULL && d < line + len && d[-1] == ' ' &&
                (d[strlen(doc)] == '\n' ||
                 strncmp(d + strlen(doc), " (default ", 10) == 0)) {
                flag = true;
            }
        }
        bool listed = names_has(&file_only, names[i]);
        ck_assert_msg(flag || listed,
                      "--help has no flag for %s and does not name it "
                      "file-only",
                      names[i]);
        ck_assert_msg(!(flag && listed), "%s has a flag and is file-only",
                      names[i]);
    }
    for (size_t i = 0; i < file_only.n; i++) {
        ck_assert_msg(kv_options_doc(file_only.v[i]) != NULL,
                      "--help names '%s' file-only: no such option",
                      file_only.v[i]);
    }

    /* kvdistd(1) lists the same options as set only in the file. */
    char *man = slurp("man/kvdistd.1");
    name_list_t documented = {NULL, 0};
    man_entries(man_section(man, "CONFIGURATION FILE"),
                "Options set only in the file", true, &documented);
    ck_assert_uint_eq(documented.n, file_only.n);
    for (size_t i = 0; i < file_only.n; i++) {
        ck_assert_msg(names_has(&documented, file_only.v[i]),
                      "kvdistd(1) does not document %s as file-only",
                      file_only.v[i]);
    }
    names_free(&documented);
    free(man);
    names_free(&file_only);
    free(names);
    run_free(&r);
    util_rmtree(dir);
    free(dir);
}
END_TEST

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

/* Every file under path is 0600 and every directory 0700 (the store is
 * private to its user); returns how many files were seen. */
static int assert_private_tree(const char *path)
{
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "%s: %s", path, strerror(errno));
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char sub[1200];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        struct stat sb;
        ck_assert_int_eq(lstat(sub, &sb), 0);
        if (S_ISDIR(sb.st_mode)) {
            ck_assert_msg((sb.st_mode & 07777) == 0700, "%s: mode %04o", sub,
                          (unsigned)(sb.st_mode & 07777));
            files += assert_private_tree(sub);
        } else {
            ck_assert_msg((sb.st_mode & 07777) == 0600, "%s: mode %04o", sub,
                          (unsigned)(sb.st_mode & 07777));
            files++;
        }
    }
    closedir(d);
    return files;
}

/* A node started from a file alone (no --data flag) serves with the
 * file's settings, and raised its soft open-file limit to the hard one
 * before it opened. Started under umask 000, its data directory is still
 * 0700 and every file in it 0600. The daemon is stopped before anything
 * is asserted. */
START_TEST(test_daemon_starts_from_config)
{
    umask(000); /* this test's own process (Check forks one per test) */
    char *dir = util_tmpdir("conf");
    char conf[600], err[600], kvdir[600];
    snprintf(conf, sizeof(conf), "%s/node.conf", dir);
    snprintf(err, sizeof(err), "%s/stderr", dir);
    snprintf(kvdir, sizeof(kvdir), "%s/data", dir);
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "data_dir = %s\nnode_id = cf1\nn = 1\nr = 1\n"
                              "w = 1\nsync = fsync\n",
                              kvdir),
                     0);
    write_text(conf, text);
    free(text);
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t soft = rl.rlim_max > 256 ? 256 : rl.rlim_max;
    const char *args[] = {"--config", conf, "--sync", "wal", NULL};
    pid_t pid = spawn_daemon(dir, args, 256);

    bool ready = false;
    for (int waited = 0; waited < 60000 && !ready; waited += 20) {
        ready = file_has(err, "ready");
        if (!ready) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = 0;
                break;
            }
            usleep(20000);
        }
    }
    char limits[64] = "";
    if (ready) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
        FILE *f = fopen(path, "r");
        char line[256];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            unsigned long long s = 0, h = 0;
            if (sscanf(line, "Max open files %llu %llu", &s, &h) == 2) {
                snprintf(limits, sizeof(limits), "%llu %llu", s, h);
            }
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    int status = -2;
    if (pid > 0) {
        kill(pid, SIGTERM);
        status = wait_bounded(pid, 30000);
    }
    char *log = slurp(err);
    ck_assert_msg(ready, "never ready: %s", log);
    ck_assert_int_eq(status, 0);
    char want[900];
    snprintf(want, sizeof(want),
             "kvdistd: node cf1 ready, not listening (data %s, n=1 r=1 w=1, "
             "sync wal)",
             kvdir);
    ck_assert_msg(strstr(log, want) != NULL, "log: %s", log);
    if (soft < rl.rlim_max) {
        snprintf(want, sizeof(want),
                 "NOTICE [cf1] kvdistd: open files: soft limit %llu -> %llu",
                 (unsigned long long)soft, (unsigned long long)rl.rlim_max);
    } else {
        snprintf(want, sizeof(want),
                 "NOTICE [cf1] kvdistd: open files: soft limit %llu (the hard "
                 "limit)",
                 (unsigned long long)soft);
    }
    ck_assert_msg(strstr(log, want) != NULL, "want '%s' in: %s", want, log);
    /* The line comes before the node opens (the library reads the limit
     * at open). */
    const char *lim = strstr(log, "open files:");
    ck_assert_ptr_nonnull(lim);
    ck_assert_int_eq(lim < strstr(log, "ready"), 1);
    char want_limits[64];
    snprintf(want_limits, sizeof(want_limits), "%llu %llu",
             (unsigned long long)rl.rlim_max, (unsigned long long)rl.rlim_max);
    ck_assert_str_eq(limits, want_limits);
    free(log);
    struct stat sb;
    ck_assert_int_eq(stat(kvdir, &sb), 0);
    ck_assert_msg((sb.st_mode & 07777) == 0700, "data dir mode %04o",
                  (unsigned)(sb.st_mode & 07777));
    ck_assert_int_gt(assert_private_tree(kvdir), 3);
    util_rmtree(dir);
    free(dir);
}
END_TEST

/* kvdistd with a password: --print-config never shows it; a missing
 * password file or both forms at once stop the daemon with exit status 2
 * and a message naming the option; a refused --auth-password does not
 * echo the value. */
START_TEST(test_daemon_auth)
{
    char *dir = util_tmpdir("conf");
    char data[600], missing[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(missing, sizeof(missing), "%s/no-such-password", dir);
    const char *print[] = {"--data",          data,
                           "--auth-password", "hush-hush-1",
                           "--print-config",  NULL};
    run_t r = run_daemon(dir, print);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    expect_printed(r.out, "auth_password", "");
    ck_assert_ptr_null(strstr(r.out, "hush-hush-1"));
    ck_assert_ptr_null(strstr(r.err, "hush-hush-1"));
    run_free(&r);

    const char *nofile[] = {"--data", data, "--auth-password-file", missing,
                            NULL};
    r = run_daemon(dir, nofile);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "auth_password_file") != NULL &&
                      strstr(r.err, missing) != NULL &&
                      strstr(r.err, "No such file") != NULL,
                  "stderr: %s", r.err);
    run_free(&r);

    char pw[600];
    snprintf(pw, sizeof(pw), "%s/pw", dir);
    write_mode(pw, "hush-hush-2\n", 12, 0600);
    const char *both[] = {
        "--data",      data, "--auth-password-file", pw, "--auth-password",
        "hush-hush-1", NULL};
    r = run_daemon(dir, both);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "both set") != NULL, "stderr: %s", r.err);
    ck_assert_ptr_null(strstr(r.err, "hush-hush"));
    run_free(&r);

    const char *bad[] = {"--data", data, "--auth-password", "", NULL};
    r = run_daemon(dir, bad);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "kvdistd: --auth-password: must be 1 to "
                                "1024 bytes") != NULL,
                  "stderr: %s", r.err);
    run_free(&r);
    util_rmtree(dir);
    free(dir);
}
END_TEST

Suite *options_suite(void)
{
    Suite *s = suite_create("options");
    TCase *rt = tcase_create("resp");
    tcase_add_test(rt, test_resp_option);
    tcase_add_test(rt, test_fault_file_option);
    suite_add_tcase(s, rt);
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_accepts);
    tcase_add_test(tc, test_refuses);
    tcase_add_test(tc, test_open_validates);
    tcase_add_test(tc, test_tls_options_validate);
    tcase_add_test(tc, test_http_option);
    tcase_add_test(tc, test_strerror);
    tcase_add_test(tc, test_enumeration);
    tcase_add_test(tc, test_header_lists_options);
    tcase_add_test(tc, test_man_lists_options);
    tcase_add_test(tc, test_max_clients_option);
    tcase_add_test(tc, test_auth_options);
    tcase_add_test(tc, test_auth_password_file);
    suite_add_tcase(s, tc);
    TCase *dc = tcase_create("daemon_config");
    tcase_set_timeout(dc, 300);
    tcase_add_test(dc, test_config_good_file);
    tcase_add_test(dc, test_config_bad_lines);
    tcase_add_test(dc, test_config_flags_override);
    tcase_add_test(dc, test_print_config_roundtrip);
    tcase_add_test(dc, test_example_conf);
    tcase_add_test(dc, test_daemon_help);
    tcase_add_test(dc, test_daemon_starts_from_config);
    tcase_add_test(dc, test_daemon_auth);
    suite_add_tcase(s, dc);
    return s;
}
