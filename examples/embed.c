/*
 * embed.c - libkvdist embedded in a program: a one-node cluster in a
 * directory. Put, get, overwrite, delete, then close, reopen and read back.
 * Also shows the conflict-aware calls (siblings and contexts).
 *
 * Build against an installed libkvdist:
 *     cc embed.c -o embed $(pkg-config --cflags --libs kvdist)
 * Run:
 *     ./embed /tmp/embed-data
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvdist.h>

static void die(const char *what, int rc)
{
    fprintf(stderr, "embed: %s: %s\n", what, kv_strerror(rc));
    exit(1);
}

static void show(kv_t *kv, const char *key)
{
    void *val = NULL;
    size_t len = 0;
    int rc = kv_get(kv, key, strlen(key), &val, &len);
    if (rc == KV_ENOTFOUND) {
        printf("  get %-8s -> (not found)\n", key);
        return;
    }
    if (rc != 0) {
        die("get", rc);
    }
    printf("  get %-8s -> \"%.*s\"\n", key, (int)len, (const char *)val);
    kv_free(val);
}

static kv_t *open_at(const char *dir)
{
    kv_options_t *o = kv_options_create();
    if (o == NULL) {
        die("options", KV_ENOMEM);
    }
    int rc = kv_options_set(o, "data_dir", dir);
    if (rc == 0) {
        rc = kv_options_set(o, "sync", "wal");
    }
    if (rc != 0) {
        fprintf(stderr, "embed: %s\n", kv_options_errmsg(o));
        exit(1);
    }
    kv_t *kv = NULL;
    rc = kv_open(o, &kv);
    kv_options_destroy(o);
    if (rc != 0) {
        die("open", rc);
    }
    return kv;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: embed DATA_DIR\n");
        return 2;
    }
    printf("libkvdist %s, one-node cluster in %s\n", kv_version(), argv[1]);
    kv_t *kv = open_at(argv[1]);
    int rc;

    printf("put colour=red, put shape=circle\n");
    if ((rc = kv_put(kv, "colour", 6, "red", 3)) != 0 ||
        (rc = kv_put(kv, "shape", 5, "circle", 6)) != 0) {
        die("put", rc);
    }
    show(kv, "colour");
    printf("overwrite colour=blue\n");
    if ((rc = kv_put(kv, "colour", 6, "blue", 4)) != 0) {
        die("put", rc);
    }
    show(kv, "colour");
    printf("delete shape\n");
    if ((rc = kv_delete(kv, "shape", 5)) != 0) {
        die("delete", rc);
    }
    show(kv, "shape");

    /* Two writers that read the same version and both write: siblings. */
    printf("two concurrent writers on 'doc' (same context)\n");
    kv_siblings_t *s = NULL;
    if ((rc = kv_get_siblings(kv, "doc", 3, NULL, &s)) != 0) {
        die("get_siblings", rc);
    }
    size_t clen = 0;
    const void *ctx = kv_siblings_context(s, &clen);
    if ((rc = kv_put_ctx(kv, "doc", 3, "draft A", 7, ctx, clen, NULL)) != 0 ||
        (rc = kv_put_ctx(kv, "doc", 3, "draft B", 7, ctx, clen, NULL)) != 0) {
        die("put_ctx", rc);
    }
    kv_siblings_free(s);
    if ((rc = kv_get_siblings(kv, "doc", 3, NULL, &s)) != 0) {
        die("get_siblings", rc);
    }
    printf("  'doc' has %zu siblings:", kv_siblings_count(s));
    for (size_t i = 0; i < kv_siblings_count(s); i++) {
        const void *v;
        size_t vl;
        kv_siblings_value(s, i, &v, &vl);
        printf(" \"%.*s\"", (int)vl, (const char *)v);
    }
    printf("\n  resolve by writing with their context\n");
    ctx = kv_siblings_context(s, &clen);
    if ((rc = kv_put_ctx(kv, "doc", 3, "A+B", 3, ctx, clen, NULL)) != 0) {
        die("put_ctx", rc);
    }
    kv_siblings_free(s);
    show(kv, "doc");

    printf("close and reopen\n");
    kv_close(kv);
    kv = open_at(argv[1]);
    show(kv, "colour");
    show(kv, "shape");
    show(kv, "doc");
    kv_close(kv);
    printf("ok\n");
    return 0;
}
