/*
 * error.c - names for the KV_E* codes. The table is indexed by code; codes
 * are fixed forever, so a new one is only ever appended.
 */
#include "kvdist.h"

static const char *const error_names[] = {
    [KV_OK] = "success",
    [KV_ENOTFOUND] = "not found",
    [KV_EINVAL] = "invalid argument",
    [KV_ETOOBIG] = "value too large",
    [KV_EKEYTOOBIG] = "key too long",
    [KV_EQUORUM] = "quorum not reached (the write may exist on some replicas)",
    [KV_ETIMEDOUT] = "timed out",
    [KV_EIO] = "I/O error in the local store",
    [KV_ECORRUPT] = "corrupt data",
    [KV_ENOMEM] = "out of memory",
    [KV_ECLOSED] = "handle closed",
    [KV_EBADOPT] = "unknown option",
    [KV_EBUSY] = "data directory in use by another process",
    [KV_EUNAVAIL] = "no node available",
    [KV_EPROTO] = "protocol error",
    [KV_EADDRINUSE] = "address in use",
    [KV_ENOTSUP] = "not supported",
    [KV_EINTERNAL] = "internal error",
    [KV_EAUTH] = "authentication required",
};

const char *kv_strerror(int err)
{
    if (err < 0 ||
        (unsigned)err >= sizeof(error_names) / sizeof(error_names[0]) ||
        error_names[err] == NULL) {
        return "unknown error";
    }
    return error_names[err];
}

const char *kv_version(void)
{
    return KV_VERSION_STRING;
}
