/*
 * kvlimits.h - the size limits several modules must agree on.
 *
 * A node id or URL crosses options parsing (options.c), the peer protocol
 * (wire.c decodes no longer one), the member table (cluster.c), hint keys
 * (handoff.c) and the public kv_member_t, whose char arrays are ABI and
 * must each hold the limit plus a NUL (checked in cluster.c, which fills
 * them). Changing a limit changes what peers accept: raise it only
 * together with the wire version.
 *
 * Named kvlimits.h, not limits.h: lib/ is on the include path, and a
 * lib/limits.h would stand in for the C library's <limits.h>.
 *
 * Owns no state.
 */
#ifndef KV_LIMITS_H
#define KV_LIMITS_H

/* The longest node id, in bytes, without its NUL. */
#define KV_ID_MAX 64
/* The longest peer URL, in bytes, without its NUL. */
#define KV_URL_MAX 511
/* The longest client password (auth_password, auth_password_file), in
 * bytes: options.c refuses a longer option, auth.c a longer file. */
#define KV_PASSWORD_MAX 1024
#define KV_PASSWORD_MAX_TEXT "1024" /* for messages */
/* The most members a cluster may have: the most rows one gossip message
 * carries, and so the ceiling of the max_members option. */
#define KV_MEMBERS_MAX 1024

#endif /* KV_LIMITS_H */
