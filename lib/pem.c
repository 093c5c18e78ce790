/*
 * pem.c - reads the PEM files of the node's TLS options, for rpc.c (the
 * peer transport) and http.c (HTTPS), which hand the texts to NNG's TLS
 * configuration. Owns no state.
 */
#include "pem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvdist.h"

char *pem_read(const kvlog_t *log, const char *who, const char *option,
               const char *path)
{
    FILE *f = fopen(path, "re");
    char *text = NULL;
    size_t len = 0;
    if (f != NULL) {
        text = malloc(PEM_MAX + 1);
        len = text != NULL ? fread(text, 1, PEM_MAX + 1, f) : 0;
    }
    const char *why = f == NULL       ? strerror(errno)
                      : text == NULL  ? kv_strerror(KV_ENOMEM)
                      : ferror(f)     ? "read error"
                      : len > PEM_MAX ? "larger than 1 MiB"
                      : len == 0      ? "empty"
                                      : NULL;
    if (f != NULL) {
        fclose(f);
    }
    if (why != NULL) {
        KV_LOG(log, KV_LOG_ERROR, "%s: %s %s: %s", who, option, path, why);
        free(text);
        return NULL;
    }
    text[len] = '\0';
    return text;
}
