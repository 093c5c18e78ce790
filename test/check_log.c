/*
 * check_log.c - the library's log: repeated identical lines are folded
 * into one count (log.c), different lines always pass.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_kvdist.h"
#include "log.h"

#define SEEN_MAX 64

typedef struct seen {
    int n;
    int level[SEEN_MAX];
    char line[SEEN_MAX][160];
} seen_t;

static void collect(void *arg, int level, const char *msg)
{
    seen_t *s = arg;
    ck_assert_int_lt(s->n, SEEN_MAX);
    s->level[s->n] = level;
    snprintf(s->line[s->n], sizeof(s->line[0]), "%s", msg);
    s->n++;
}

START_TEST(test_repeats_folded)
{
    seen_t s = {0};
    kvlog_t lg;
    ck_assert_int_eq(log_init(&lg, collect, &s, KV_LOG_DEBUG), 0);
    for (int i = 0; i < 1000; i++) {
        KV_LOG(&lg, KV_LOG_WARN, "accept: %s", "Out of files");
    }
    KV_LOG(&lg, KV_LOG_NOTICE, "recovered");
    ck_assert_int_eq(s.n, 3);
    ck_assert_str_eq(s.line[0], "accept: Out of files");
    ck_assert_int_eq(s.level[0], KV_LOG_WARN);
    ck_assert_msg(strncmp(s.line[1], "last message repeated 999 times in ",
                          35) == 0,
                  "got '%s'", s.line[1]);
    ck_assert_int_eq(s.level[1], KV_LOG_WARN);
    ck_assert_str_eq(s.line[2], "recovered");
    /* A repeat still pending at the end is reported, not lost. */
    KV_LOG(&lg, KV_LOG_NOTICE, "recovered");
    KV_LOG(&lg, KV_LOG_NOTICE, "recovered");
    ck_assert_int_eq(s.n, 3);
    log_fini(&lg);
    ck_assert_int_eq(s.n, 4);
    ck_assert_msg(strncmp(s.line[3], "last message repeated 2 times", 29) == 0,
                  "got '%s'", s.line[3]);
}
END_TEST

START_TEST(test_distinct_lines_pass)
{
    seen_t s = {0};
    kvlog_t lg;
    ck_assert_int_eq(log_init(&lg, collect, &s, KV_LOG_DEBUG), 0);
    KV_LOG(&lg, KV_LOG_WARN, "a");
    KV_LOG(&lg, KV_LOG_ERROR, "a"); /* same text, other level: a new line */
    KV_LOG(&lg, KV_LOG_WARN, "b");
    KV_LOG(&lg, KV_LOG_WARN, "a");
    KV_LOG(&lg, KV_LOG_DEBUG + 1, "too verbose"); /* above the level */
    ck_assert_int_eq(s.n, 4);
    ck_assert_str_eq(s.line[0], "a");
    ck_assert_str_eq(s.line[1], "a");
    ck_assert_int_eq(s.level[1], KV_LOG_ERROR);
    ck_assert_str_eq(s.line[2], "b");
    ck_assert_str_eq(s.line[3], "a");
    log_fini(&lg);
    ck_assert_int_eq(s.n, 4); /* nothing pending */
}
END_TEST

START_TEST(test_silent_logger)
{
    kvlog_t lg;
    ck_assert_int_eq(log_init(&lg, NULL, NULL, KV_LOG_DEBUG), 0);
    ck_assert_ptr_null(lg.rep);
    KV_LOG(&lg, KV_LOG_ERROR, "nowhere");
    log_fini(&lg);
}
END_TEST

Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("repeats");
    tcase_add_test(tc, test_repeats_folded);
    tcase_add_test(tc, test_distinct_lines_pass);
    tcase_add_test(tc, test_silent_logger);
    suite_add_tcase(s, tc);
    return s;
}
