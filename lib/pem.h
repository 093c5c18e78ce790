/*
 * pem.h - the PEM files of the TLS options a node reads (pem.c): the peer
 * transport's (rpc.c: tls_ca_file, tls_cert_file, tls_key_file) and the HTTP
 * API's (http.c: http_tls_cert_file, http_tls_key_file).
 */
#ifndef KV_PEM_H
#define KV_PEM_H

#include "log.h"

/* A PEM file is a few KiB; this bounds a wrong one. */
#define PEM_MAX (1u << 20)

/* The whole of the PEM file at path, NUL-terminated (free it), or NULL
 * with the reason logged as "<who>: <option> <path>: <why>". */
char *pem_read(const kvlog_t *log, const char *who, const char *option,
               const char *path);

#endif /* KV_PEM_H */
