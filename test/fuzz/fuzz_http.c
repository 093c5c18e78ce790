/*
 * fuzz_http.c - the HTTP API's text codecs: percent-decoding of the key in
 * /v1/data/{key} (http_pct_decode) and the strict base64 of X-Kv-Context
 * (http_b64_decode), then the context inside (vc_context_decode), as
 * parse_target and parse_context in http.c call them.
 *
 * Input: the text of a path segment or header value. Output buffers are
 * exactly as large as each function promises to need, so that ASan sees
 * one byte too many. A key that decodes must come back from its
 * re-encoding (every byte outside the unreserved set as %XX) and be two
 * bytes shorter per '%'; a base64 text that decodes must be the one
 * encoding of its bytes (http_b64_encode gives the input back) and need
 * all of the room it reports. The other way round, the input itself,
 * encoded either way, must decode to itself.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "http.h"
#include "kvdist.h"
#include "vclock.h"

static bool unreserved(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* Percent-encodes n bytes: 3 * n + 1 bytes at most (with a NUL). */
static char *pct_encode(const uint8_t *p, size_t n, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(3 * n + 1);
    FUZZ_CHECK(out != NULL);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (unreserved(p[i])) {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '%';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

static void check_pct(const char *in, size_t n)
{
    uint8_t *out = malloc(n ? n : 1);
    FUZZ_CHECK(out != NULL);
    size_t olen = 12345;
    int rc = http_pct_decode(in, n, out, &olen);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_EINVAL && olen == 0);
        free(out);
        return;
    }
    size_t pct = 0;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(in[i] != '/');
        pct += in[i] == '%';
    }
    FUZZ_CHECK(olen == n - 2 * pct);
    size_t elen = 0;
    char *enc = pct_encode(out, olen, &elen);
    uint8_t *back = malloc(elen ? elen : 1);
    FUZZ_CHECK(back != NULL);
    size_t blen = 0;
    FUZZ_CHECK(http_pct_decode(enc, elen, back, &blen) == 0);
    FUZZ_CHECK(blen == olen && memcmp(back, out, olen) == 0);
    free(back);
    free(enc);
    free(out);
}

static void check_b64(const char *in, size_t n)
{
    size_t room = n / 4 * 3;
    uint8_t *out = malloc(room ? room : 1);
    FUZZ_CHECK(out != NULL);
    size_t olen = 12345;
    int rc = http_b64_decode(in, n, out, room, &olen);
    if (rc != 0) {
        FUZZ_CHECK(rc == KV_EINVAL && olen == 0);
        free(out);
        return;
    }
    FUZZ_CHECK(olen <= room && http_b64_len(olen) == n);
    char *enc = malloc(http_b64_len(olen) + 1);
    FUZZ_CHECK(enc != NULL);
    http_b64_encode(out, olen, enc);
    FUZZ_CHECK(strlen(enc) == n && memcmp(enc, in, n) == 0);
    free(enc);
    if (olen > 0) {
        size_t short_len = 0;
        FUZZ_CHECK(http_b64_decode(in, n, out, olen - 1, &short_len) ==
                   KV_EINVAL);
    }
    /* What parse_context does next: a context or KV_EINVAL, nothing else. */
    vc_t v;
    vc_init(&v);
    rc = vc_context_decode(out, olen, &v);
    FUZZ_CHECK(rc == 0 || (rc == KV_EINVAL && v.n == 0));
    vc_free(&v);
    free(out);
}

/* The input as bytes: each encoder's output decodes back to it. */
static void check_encoders(const uint8_t *p, size_t n)
{
    size_t elen = 0;
    char *enc = pct_encode(p, n, &elen);
    uint8_t *back = malloc(elen ? elen : 1);
    FUZZ_CHECK(back != NULL);
    size_t blen = 0;
    FUZZ_CHECK(http_pct_decode(enc, elen, back, &blen) == 0);
    FUZZ_CHECK(blen == n && (n == 0 || memcmp(back, p, n) == 0));
    free(back);
    free(enc);

    char *b64 = malloc(http_b64_len(n) + 1);
    FUZZ_CHECK(b64 != NULL);
    http_b64_encode(p, n, b64);
    FUZZ_CHECK(strlen(b64) == http_b64_len(n));
    uint8_t *raw = malloc(n ? n : 1);
    FUZZ_CHECK(raw != NULL);
    FUZZ_CHECK(http_b64_decode(b64, http_b64_len(n), raw, n, &blen) == 0);
    FUZZ_CHECK(blen == n && (n == 0 || memcmp(raw, p, n) == 0));
    free(raw);
    free(b64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: reading past it is a finding. */
    char *in = malloc(size ? size : 1);
    FUZZ_CHECK(in != NULL);
    if (size > 0) {
        memcpy(in, data, size);
    }
    check_pct(in, size);
    check_b64(in, size);
    check_encoders(data, size);
    free(in);
    return 0;
}
