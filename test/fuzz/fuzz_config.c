/*
 * fuzz_config.c - kvdistd's --config file reader (read_config) and its
 * inverse, --print-config (print_config), the text form of the options.
 *
 * Both are static functions of the daemon (examples/kvdistd.c), which is
 * written against the public header only; this target compiles that file
 * itself, its main renamed, rather than copying the code.
 *
 * Input: a config file. A file read_config accepts must print (unless a
 * value cannot be written in the format, which print_config refuses with
 * a reason: the path options, data_dir and fault_file, can hold such
 * text), and what it prints must
 * read back to the same options and print the same text again: the file
 * --print-config writes is one --config takes unchanged. A refused file
 * ends with status 2. The daemon's messages go to /dev/null (glibc lets a
 * program reassign stderr and stdout) while the sanitizers still report
 * on file descriptor 2.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define main kvdistd_main
int kvdistd_main(int argc, char **argv);
#include "../../examples/kvdistd.c"
#undef main

#include "fuzz.h"

/* Where a file's text is put for read_config to open by name. */
static int input_fd = -1;
static char input_path[64];
static FILE *quiet;
static FILE *real_stderr;

static void load(const void *p, size_t n)
{
    FUZZ_CHECK(ftruncate(input_fd, 0) == 0);
    FUZZ_CHECK(n == 0 || pwrite(input_fd, p, n, 0) == (ssize_t)n);
}

/* read_config on the text, its messages silenced. */
static int read_text(const void *p, size_t n, kv_options_t *o)
{
    load(p, n);
    stderr = quiet;
    int rc = read_config(input_path, o);
    stderr = real_stderr;
    return rc;
}

/* print_config into a string (free it); 1 when it refused. */
static int print_text(const kv_options_t *o, char **text, size_t *len)
{
    FILE *real_stdout = stdout;
    FILE *mem = open_memstream(text, len);
    FUZZ_CHECK(mem != NULL);
    stdout = mem;
    stderr = quiet;
    int rc = print_config(o);
    stdout = real_stdout;
    stderr = real_stderr;
    FUZZ_CHECK(fclose(mem) == 0);
    return rc;
}

static void same_options(const kv_options_t *a, const kv_options_t *b)
{
    static char va[16384];
    static char vb[16384];
    for (size_t i = 0; kv_options_name(i) != NULL; i++) {
        FUZZ_CHECK(kv_options_get(a, kv_options_name(i), va, sizeof(va)) ==
                   0);
        FUZZ_CHECK(kv_options_get(b, kv_options_name(i), vb, sizeof(vb)) ==
                   0);
        FUZZ_CHECK(strcmp(va, vb) == 0);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    input_fd = memfd_create("fuzz-config", 0);
    FUZZ_CHECK(input_fd >= 0);
    snprintf(input_path, sizeof(input_path), "/proc/self/fd/%d", input_fd);
    quiet = fopen("/dev/null", "w");
    FUZZ_CHECK(quiet != NULL);
    real_stderr = stderr;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kv_options_t *o = kv_options_create();
    FUZZ_CHECK(o != NULL);
    int rc = read_text(data, size, o);
    FUZZ_CHECK(rc == 0 || rc == 2);
    if (rc != 0) {
        kv_options_destroy(o);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (print_text(o, &text, &len) != 0) {
        /* Refused: only for a value the format cannot carry. */
        static char v[16384];
        bool unrepresentable = false;
        for (size_t i = 0; kv_options_name(i) != NULL; i++) {
            FUZZ_CHECK(kv_options_get(o, kv_options_name(i), v, sizeof(v)) ==
                       0);
            unrepresentable = unrepresentable || !conf_representable(v);
        }
        FUZZ_CHECK(unrepresentable);
        free(text);
        kv_options_destroy(o);
        return 0;
    }
    kv_options_t *back = kv_options_create();
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(read_text(text, len, back) == 0);
    same_options(o, back);
    char *again = NULL;
    size_t alen = 0;
    FUZZ_CHECK(print_text(back, &again, &alen) == 0);
    FUZZ_CHECK(alen == len && memcmp(again, text, len) == 0);
    free(again);
    free(text);
    kv_options_destroy(back);
    kv_options_destroy(o);
    return 0;
}
