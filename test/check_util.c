/*
 * check_util.c - helpers shared by the suites: scratch directories and a
 * deterministic PRNG.
 */
#include "check_kvdist.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "rand.h"

char *util_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/kvdist-%s-XXXXXX",
                              base && *base ? base : "/tmp", tag),
                     0);
    ck_assert_ptr_nonnull(mkdtemp(path));
    return path;
}

static int rm_one(const char *path, const struct stat *st, int type,
                  struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

char *util_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *text = NULL;
    size_t cap = 0;
    ssize_t got = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (got < 0) {
        free(text);
        text = strdup(""); /* an empty file */
    }
    ck_assert_ptr_nonnull(text);
    return text;
}

void util_rmtree(const char *path)
{
    if (path != NULL) {
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
}

void util_copytree(const char *from, const char *to)
{
    ck_assert_int_eq(mkdir(to, 0700) == 0 || access(to, F_OK) == 0, 1);
    DIR *d = opendir(from);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' &&
            (e->d_name[1] == '\0' ||
             (e->d_name[1] == '.' && e->d_name[2] == '\0'))) {
            continue;
        }
        char *src = NULL;
        char *dst = NULL;
        ck_assert_int_ge(asprintf(&src, "%s/%s", from, e->d_name), 0);
        ck_assert_int_ge(asprintf(&dst, "%s/%s", to, e->d_name), 0);
        struct stat st;
        ck_assert_int_eq(stat(src, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            util_copytree(src, dst);
        } else if (S_ISREG(st.st_mode)) {
            int in = open(src, O_RDONLY);
            int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            ck_assert_int_ge(in, 0);
            ck_assert_int_ge(out, 0);
            char buf[65536];
            ssize_t n;
            while ((n = read(in, buf, sizeof(buf))) > 0) {
                ck_assert_int_eq(write(out, buf, (size_t)n), n);
            }
            ck_assert_int_eq(n, 0);
            close(in);
            close(out);
        }
        free(src);
        free(dst);
    }
    closedir(d);
}

uint64_t util_rand(uint64_t *state)
{
    return rand_next(state);
}
