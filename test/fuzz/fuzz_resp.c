/*
 * fuzz_resp.c - the RESP request parser (resp_parse_request), which reads
 * every byte a Redis client sends to the `resp` front end.
 *
 * Input: a byte choosing the limits (from tiny, so that small inputs hit
 * "invalid bulk length" and "request too large", to a node's defaults),
 * then the client's byte stream. Requests are parsed one after another as
 * a connection does (pipelining). Each complete one must lie inside the
 * input and within the limits; every strict prefix of it must be
 * incomplete (a connection receives in arbitrary pieces, so where a read
 * ends must not change what is parsed); written again as a multibulk
 * array it must parse back to the same arguments. A refusal must say why.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "resp.h"

static const struct {
    size_t max_bulk;
    size_t max_request;
} limits[4] = {
    {8, 48},
    {64, 256},
    {1024, 4096},
    /* resp_start's with the default max_key_size and max_value_size */
    {16u << 20, (16u << 20) + 2 * 65536 + (64u << 10)},
};

static void encode_multibulk(const resp_args_t *a, buf_t *b)
{
    char line[32];
    int n = snprintf(line, sizeof(line), "*%zu\r\n", a->argc);
    buf_put(b, line, (size_t)n);
    for (size_t i = 0; i < a->argc; i++) {
        n = snprintf(line, sizeof(line), "$%zu\r\n", a->argv[i].len);
        buf_put(b, line, (size_t)n);
        buf_put(b, a->argv[i].p, a->argv[i].len);
        buf_put(b, "\r\n", 2);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t max_bulk = limits[data[0] & 3].max_bulk;
    size_t max_request = limits[data[0] & 3].max_request;
    bool authed = (data[0] & 4) == 0; /* else Redis's smaller bounds */
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    resp_args_t a = {NULL, 0, 0};
    resp_args_t again = {NULL, 0, 0};
    resp_args_t part = {NULL, 0, 0};

    for (int requests = 0; requests < 64; requests++) {
        size_t used = 0;
        const char *why = NULL;
        int r = resp_parse_request(p, left, max_bulk, max_request, authed, &a,
                                   &used, &why);
        if (r < 0) {
            FUZZ_CHECK(why != NULL && used == 0);
            break;
        }
        if (r == 0) {
            FUZZ_CHECK(used == 0 && a.argc == 0);
            break;
        }
        FUZZ_CHECK(r == 1 && used >= 1 && used <= left);
        bool multibulk = p[0] == '*';
        if (multibulk) {
            FUZZ_CHECK(used <= max_request);
        }
        for (size_t i = 0; i < a.argc; i++) {
            const resp_arg_t *x = &a.argv[i];
            FUZZ_CHECK(x->p >= p && x->p + x->len <= p + used);
            FUZZ_CHECK(!multibulk || x->len <= max_bulk);
            FUZZ_CHECK(multibulk || x->len > 0);
        }

        /* Where a read ends must not matter: a strict prefix is never a
         * request, nor refused. */
        size_t cuts[3] = {used - 1, used / 2, (size_t)data[0] % used};
        for (int k = 0; k < 3; k++) {
            size_t pused = 0;
            const char *pwhy = NULL;
            int pr = resp_parse_request(p, cuts[k], max_bulk, max_request,
                                        authed, &part, &pused, &pwhy);
            FUZZ_CHECK(pr == 0 && pused == 0);
        }

        /* The same arguments as a multibulk array, parsed again without
         * limits, are the same request. */
        buf_t b;
        buf_init(&b);
        encode_multibulk(&a, &b);
        FUZZ_CHECK(!b.oom);
        size_t used2 = 0;
        const char *why2 = NULL;
        int r2 = resp_parse_request(b.p, b.len, SIZE_MAX / 4, SIZE_MAX / 4,
                                    true, &again, &used2, &why2);
        FUZZ_CHECK(r2 == 1 && used2 == b.len && again.argc == a.argc);
        for (size_t i = 0; i < a.argc; i++) {
            FUZZ_CHECK(again.argv[i].len == a.argv[i].len &&
                       memcmp(again.argv[i].p, a.argv[i].p, a.argv[i].len) ==
                           0);
        }
        buf_free(&b);

        p += used;
        left -= used;
    }
    free(a.argv);
    free(again.argv);
    free(part.argv);
    return 0;
}
