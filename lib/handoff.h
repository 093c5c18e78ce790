/*
 * handoff.h - hinted handoff: hints kept for replicas that missed writes,
 * and their delivery when those replicas return (handoff.c).
 */
#ifndef KV_HANDOFF_H
#define KV_HANDOFF_H

#include <stddef.h>

#include "codec.h"
#include "node.h"
#include "object.h"

/* Loads the pending counts from the hints column family and, for a node
 * with peers, starts the delivery thread. Returns 0 or a KV_E* code. */
int handoff_open(kv_t *kv);
/* Stops the delivery thread (before the transport goes away). */
void handoff_stop(kv_t *kv);
void handoff_close(kv_t *kv);

/* Merges o into the hint for (owner, key), durably. Returns 0 or a code. */
int handoff_store(kv_t *kv, const char *owner, const void *key, size_t klen,
                  const obj_t *o);
/* Joins the hint for (owner, key), if any, into out. */
int handoff_read(kv_t *kv, const char *owner, const void *key, size_t klen,
                 obj_t *out);
/* Appends the pending-hint gauges. */
void handoff_render_metrics(kv_t *kv, buf_t *b);

#endif /* KV_HANDOFF_H */
