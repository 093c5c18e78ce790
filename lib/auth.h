/*
 * auth.h - the client password of a node's front ends (auth.c): Redis's
 * requirepass for RESP's AUTH and HELLO, and HTTP's Authorization header.
 */
#ifndef KV_AUTH_H
#define KV_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvlimits.h"
#include "log.h"
#include "options.h"

/* XXH3's secret: above its 136-byte minimum. */
#define AUTH_KEY_SIZE 192

/* Immutable once auth_open returned: read by every front-end thread
 * without a lock. */
typedef struct auth {
    bool required;              /* a password is set */
    uint8_t key[AUTH_KEY_SIZE]; /* random at every open */
    uint8_t digest[16];         /* XXH3-128 of the password under key */
    uint8_t *secret;            /* the password itself (len bytes) */
    size_t len;
} auth_t;

/* Takes the password from cfg: auth_password, or the first line of the
 * file auth_password_file names (read now: a missing, unreadable or empty
 * file refuses to open; one that group or others may read is logged as a
 * warning). Neither set: nothing required. Returns 0, KV_EINVAL (why
 * says what is wrong, without the password) or KV_ENOMEM. */
int auth_open(auth_t *a, const kv_config_t *cfg, const kvlog_t *log, char *why,
              size_t size);
/* Wipes and frees what auth_open kept. Safe on a zeroed auth_t. */
void auth_close(auth_t *a);

/* Whether pw is the password: true for any pw when none is required. Its
 * time depends on len only, never on how much of pw matches or on the
 * password's length (see auth.c). Thread-safe. */
bool auth_check(const auth_t *a, const void *pw, size_t len);

#endif /* KV_AUTH_H */
