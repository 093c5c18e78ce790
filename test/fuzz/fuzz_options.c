/*
 * fuzz_options.c - the option parser (kv_options_set and the table of
 * options.c behind it), which reads kvdistd's flags and --config lines.
 *
 * Input: lines of "name=value" (split at the first '='), applied in order
 * to one option set, as kvdistd applies a config file. A refused value
 * must change nothing (every option reads back as before) and leave a
 * reason; an accepted one must read back (kv_options_get) as text that is
 * accepted again and reads back the same (what --print-config writes,
 * --config reads). Every value options_parse_size accepts must print and
 * parse back to itself. The options that result are then validated
 * together (options_config_validate): accepted, or refused with a reason.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "kvdist.h"
#include "options.h"

/* Room for any option's text: data_dir takes up to 4000 bytes, and a join
 * list at most the whole input. */
static size_t val_max;

static size_t n_options(void)
{
    size_t n = 0;
    while (kv_options_name(n) != NULL) {
        n++;
    }
    return n;
}

/* Every option's text, one val_max slot each. */
static void snapshot(const kv_options_t *o, char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(kv_options_get(o, kv_options_name(i), out + i * val_max,
                                  val_max) == 0);
    }
}

static bool same(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a + i * val_max, b + i * val_max) != 0) {
            return false;
        }
    }
    return true;
}

static void check_size(const char *value)
{
    uint64_t v = 0;
    if (options_parse_size(value, &v) != 0) {
        return;
    }
    char text[32];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)v);
    uint64_t back = 0;
    FUZZ_CHECK(options_parse_size(text, &back) == 0 && back == v);
}

static void apply(kv_options_t *o, const char *name, const char *value,
                  char *before, char *after, size_t n)
{
    snapshot(o, before, n);
    int rc = kv_options_set(o, name, value);
    FUZZ_CHECK(rc == 0 || rc == KV_EINVAL || rc == KV_EBADOPT);
    if (rc != 0) {
        snapshot(o, after, n);
        FUZZ_CHECK(same(before, after, n));
        FUZZ_CHECK(kv_options_errmsg(o)[0] != '\0');
        FUZZ_CHECK(kv_options_doc(name) == NULL || rc == KV_EINVAL);
        return;
    }
    FUZZ_CHECK(kv_options_doc(name) != NULL);
    char *text = malloc(val_max);
    char *again = malloc(val_max);
    FUZZ_CHECK(text != NULL && again != NULL);
    FUZZ_CHECK(kv_options_get(o, name, text, val_max) == 0);
    if (options_is_secret(name)) {
        /* Write-only: it never reads back, so there is nothing to set
         * again. */
        FUZZ_CHECK(text[0] == '\0');
    } else {
        FUZZ_CHECK(kv_options_set(o, name, text) == 0);
        FUZZ_CHECK(kv_options_get(o, name, again, val_max) == 0);
        FUZZ_CHECK(strcmp(text, again) == 0);
    }
    free(text);
    free(again);
    /* Setting one option changes no other. */
    snapshot(o, after, n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv_options_name(i), name) != 0) {
            FUZZ_CHECK(strcmp(before + i * val_max, after + i * val_max) ==
                       0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = n_options();
    val_max = size + 4096 + 64;
    kv_options_t *o = kv_options_create();
    char *before = malloc(n * val_max);
    char *after = malloc(n * val_max);
    char *text = malloc(size + 1);
    FUZZ_CHECK(o != NULL && before != NULL && after != NULL && text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    /* Lines end at '\n' or a NUL (a C string ends there anyway). */
    char *line = text;
    char *end = text + size;
    while (line < end) {
        size_t len = strcspn(line, "\n");
        line[len] = '\0';
        char *eq = strchr(line, '=');
        if (eq != NULL) {
            *eq = '\0';
            apply(o, line, eq + 1, before, after, n);
            check_size(eq + 1);
        }
        line += len + 1;
    }

    char why[256] = "";
    int rc = options_config_validate(&o->cfg, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || (rc == KV_EINVAL && why[0] != '\0'));
    kv_options_t *copy = kv_options_create();
    FUZZ_CHECK(copy != NULL);
    options_config_free(&copy->cfg);
    FUZZ_CHECK(options_config_copy(&copy->cfg, &o->cfg) == 0);
    snapshot(o, before, n);
    snapshot(copy, after, n);
    FUZZ_CHECK(same(before, after, n));
    kv_options_destroy(copy);
    kv_options_destroy(o);
    free(before);
    free(after);
    free(text);
    return 0;
}
