/*
 * auth.c - the client password of a node's front ends, as Redis's
 * requirepass: RESP's AUTH and HELLO AUTH (resp.c) and HTTP's
 * Authorization header (http.c) both ask auth_check, once per connection
 * or request, at the front end's entry.
 *
 * Owns the password for the life of the node: read at kv_open from the
 * auth_password option or from the file auth_password_file names (so
 * that the secret stays out of argv and `ps`), kept in an auth_t that
 * nothing changes afterwards, wiped at close. It never reaches a log
 * line: every message here names the file, not its contents.
 *
 * The comparison must not tell an attacker how much of a guess was
 * right, nor how long the password is. Both sides are first hashed with
 * XXH3-128 under a key drawn from getrandom(2) at every open (the hash's
 * time depends only on the length of its input, which for the guess the
 * attacker knows already), and the two 16-byte digests are compared with
 * no early exit. Only when the digests are equal, which a wrong guess
 * reaches with probability 2^-128 as it cannot know the key, are the bytes
 * themselves compared (again without an early exit), so that a collision
 * of the non-cryptographic hash cannot let a wrong password in. This is
 * the "double HMAC" verification (hash both sides under a secret key,
 * then compare), with a keyed fast hash in place of the HMAC.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "clock.h"

/* Equal iff every byte is; always looks at all n bytes. */
static bool equal_ct(const uint8_t *x, const uint8_t *y, size_t n)
{
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) {
        diff |= x[i] ^ y[i];
    }
    return diff == 0;
}

static void auth_digest(const auth_t *a, const void *p, size_t n,
                        uint8_t out[16])
{
    XXH128_hash_t h = XXH3_128bits_withSecret(p, n, a->key, sizeof(a->key));
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}

bool auth_check(const auth_t *a, const void *pw, size_t len)
{
    if (!a->required) {
        return true;
    }
    uint8_t d[16];
    auth_digest(a, pw != NULL ? pw : "", len, d);
    if (!equal_ct(d, a->digest, sizeof(d))) {
        return false;
    }
    /* Reached by the right password (or a collision, p = 2^-128). */
    return len == a->len && equal_ct(pw, a->secret, len);
}

/* Reads the password file: its contents, one trailing newline (LF or
 * CRLF) removed, must be 1 to KV_PASSWORD_MAX bytes with no other line break or
 * NUL. */
static int read_password_file(const char *path, const kvlog_t *log,
                              uint8_t *buf, size_t *len, char *why, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, size, "auth_password_file %s: %s", path, strerror(errno));
        return KV_EINVAL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(why, size, "auth_password_file %s: not a regular file", path);
        close(fd);
        return KV_EINVAL;
    }
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        KV_LOG(log, KV_LOG_WARN,
               "auth: auth_password_file %s is open to group or others "
               "(mode %04o): chmod 600 it",
               path, (unsigned)(sb.st_mode & 07777));
    }
    /* One byte more than a password and its CRLF: to see a longer file. */
    size_t got = 0;
    while (got < KV_PASSWORD_MAX + 3) {
        ssize_t n = read(fd, buf + got, KV_PASSWORD_MAX + 3 - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            snprintf(why, size, "auth_password_file %s: %s", path,
                     strerror(errno));
            close(fd);
            explicit_bzero(buf, KV_PASSWORD_MAX + 3);
            return KV_EINVAL;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (got > 0 && buf[got - 1] == '\n') {
        got--;
        if (got > 0 && buf[got - 1] == '\r') {
            got--;
        }
    }
    const char *bad = NULL;
    if (got == 0) {
        bad = "empty (the password is the file's first line)";
    } else if (got > KV_PASSWORD_MAX) {
        bad = "longer than " KV_PASSWORD_MAX_TEXT " bytes";
    } else if (memchr(buf, '\n', got) != NULL ||
               memchr(buf, '\r', got) != NULL ||
               memchr(buf, '\0', got) != NULL) {
        bad = "more than one line, or a NUL byte (the password is the "
              "file's only line)";
    }
    if (bad != NULL) {
        snprintf(why, size, "auth_password_file %s: %s", path, bad);
        explicit_bzero(buf, KV_PASSWORD_MAX + 3);
        return KV_EINVAL;
    }
    *len = got;
    return 0;
}

int auth_open(auth_t *a, const kv_config_t *cfg, const kvlog_t *log, char *why,
              size_t size)
{
    memset(a, 0, sizeof(*a));
    uint8_t buf[KV_PASSWORD_MAX + 3];
    size_t len = 0;
    if (cfg->auth_password != NULL) {
        len = strlen(cfg->auth_password); /* options.c bounds it */
        memcpy(buf, cfg->auth_password, len);
    } else if (cfg->auth_password_file != NULL) {
        int rc = read_password_file(cfg->auth_password_file, log, buf, &len,
                                    why, size);
        if (rc != 0) {
            return rc;
        }
    } else {
        return 0;
    }
    a->secret = malloc(len);
    if (a->secret == NULL) {
        explicit_bzero(buf, sizeof(buf));
        snprintf(why, size, "auth: %s", kv_strerror(KV_ENOMEM));
        return KV_ENOMEM;
    }
    memcpy(a->secret, buf, len);
    explicit_bzero(buf, sizeof(buf));
    a->len = len;
    /* getrandom blocks only before the kernel's pool is first seeded; a
     * failure leaves a weaker key, not a weaker check (the bytes are
     * compared too). */
    size_t got = 0;
    while (got < sizeof(a->key)) {
        ssize_t n = getrandom(a->key + got, sizeof(a->key) - got, 0);
        if (n <= 0) {
            uint64_t t = (uint64_t)clk_mono_us() ^ (uint64_t)(uintptr_t)a;
            for (; got < sizeof(a->key); got++) {
                a->key[got] = (uint8_t)(t >> (8 * (got % 8))) ^ (uint8_t)got;
            }
            break;
        }
        got += (size_t)n;
    }
    auth_digest(a, a->secret, a->len, a->digest);
    a->required = true;
    return 0;
}

void auth_close(auth_t *a)
{
    if (a->secret != NULL) {
        explicit_bzero(a->secret, a->len);
        free(a->secret);
    }
    explicit_bzero(a, sizeof(*a));
}
