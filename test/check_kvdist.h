/*
 * check_kvdist.h - the suites of the libkvdist test runner and the helpers
 * they share (check_util.c).
 */
#ifndef KV_CHECK_KVDIST_H
#define KV_CHECK_KVDIST_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

Suite *vclock_suite(void);
Suite *object_suite(void);
Suite *options_suite(void);
Suite *store_suite(void);
Suite *ring_suite(void);

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the string
 * and removes the tree with util_rmtree. Aborts the test on failure. */
char *util_tmpdir(const char *tag);
void util_rmtree(const char *path);
/* Copies a directory tree (regular files only, as a data dir has). */
void util_copytree(const char *from, const char *to);
/* splitmix64: a small deterministic PRNG for reproducible random tests. */
uint64_t util_rand(uint64_t *state);

#endif /* KV_CHECK_KVDIST_H */
