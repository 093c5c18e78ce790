/*
 * check_nemesis.c - the history checker's self-test: synthetic histories,
 * each with one deliberate fault (a lost write, a resurrected delete, a
 * phantom value, ...), must each be reported as exactly that anomaly, and
 * a clean history as none. The harness that records real histories is
 * test/nemesis.c; this suite only exercises history.c, so it runs in
 * milliseconds and opens no socket.
 */
#include "check_kvdist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "history.h"

/* A clean base: k1 written blind (a), read, overwritten with the read's
 * context (b supersedes a), k2 written (c), read, deleted; the read-back
 * and both replicas agree. Each test appends or alters a few lines. */
static const char *base =
    "# synthetic history\n"
    "op 0 put k1 strict 100 200 0 a - - -\n"
    "op 0 read k1 strict 300 400 0 - - a 01\n"
    "op 0 put k1 strict 400 500 0 b a - 01\n"
    "op 1 put k2 strict 100 250 0 c - - -\n"
    "op 1 read k2 strict 600 700 0 - - c 02\n"
    "op 1 delete k2 strict 700 800 0 - c - 02\n"
    "op 2 read k1 strict 900 950 0 - - b 03\n"
    "fault kill 150 450 n1\n"
    "converge 1234 1\n";

static const char *base_final = "final k1 0 b\n"
                                "local n1 k1 0 b\n"
                                "local n2 k1 0 b\n"
                                "final k2 0 -\n"
                                "local n1 k2 0 -\n";

/* Writes text to a temporary file, checks it, returns the report. */
static hist_report_t check_text(const char *text)
{
    char *dir = util_tmpdir("hist");
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/history.txt", dir), 0);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    char err[256];
    hist_t *h = hist_load(path, err, sizeof(err));
    ck_assert_msg(h != NULL, "load: %s", err);
    hist_report_t rep;
    FILE *devnull = fopen("/dev/null", "w");
    size_t n = hist_check(h, devnull, 100, &rep);
    fclose(devnull);
    ck_assert_uint_eq(n, rep.total_anomalies);
    hist_free(h);
    unlink(path);
    util_rmtree(dir);
    free(path);
    free(dir);
    return rep;
}

static char *join3(const char *a, const char *b, const char *c)
{
    char *s = NULL;
    ck_assert_int_ge(asprintf(&s, "%s%s%s", a, b, c), 0);
    return s;
}

/* Exactly one anomaly, of kind `want`. */
static void expect_only(const hist_report_t *rep, int want)
{
    for (int a = 0; a < HIST_ANOMALIES; a++) {
        ck_assert_msg(rep->anomalies[a] == (a == want ? 1u : 0u),
                      "%s: %zu (expected only one %s)", hist_anomaly_name(a),
                      rep->anomalies[a], hist_anomaly_name(want));
    }
    ck_assert_uint_eq(rep->total_anomalies, 1);
}

START_TEST(clean_history_passes)
{
    char *t = join3(base, base_final, "");
    hist_report_t rep = check_text(t);
    ck_assert_uint_eq(rep.total_anomalies, 0);
    ck_assert_uint_eq(rep.ops, 7);
    ck_assert_uint_eq(rep.by_outcome[HIST_PUT][HIST_OK], 3);
    ck_assert_uint_eq(rep.by_outcome[HIST_READ][HIST_OK], 3);
    ck_assert_uint_eq(rep.writes_checked, 3);
    ck_assert_uint_eq(rep.deletes_checked, 1);
    ck_assert_uint_eq(rep.reads_checked, 3);
    ck_assert_int_eq(rep.converged, 1);
    ck_assert_int_eq(rep.converge_ms, 1234);
    ck_assert_uint_eq(rep.nfault_kinds, 1);
    ck_assert_str_eq(rep.fault_kind[0], "kill");
    free(t);
}
END_TEST

START_TEST(lost_write_is_reported)
{
    /* d acknowledged on k3, never superseded, absent from the read-back */
    char *t = join3(base, base_final,
                    "op 3 put k3 sloppy 1000 1100 0 d - - -\n"
                    "final k3 0 -\n");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_LOST);
    free(t);
}
END_TEST

START_TEST(indeterminate_superseder_excuses_but_is_counted)
{
    /* d is covered by a delete that timed out: it may have applied */
    char *t = join3(base, base_final,
                    "op 3 put k3 sloppy 1000 1100 0 d - - -\n"
                    "op 3 read k3 sloppy 1200 1300 0 - - d 04\n"
                    "op 3 delete k3 sloppy 1300 4300 6 - d - 04\n"
                    "final k3 0 -\n");
    hist_report_t rep = check_text(t);
    ck_assert_uint_eq(rep.total_anomalies, 0);
    ck_assert_uint_eq(rep.excused, 1);
    ck_assert_uint_eq(rep.by_outcome[HIST_DELETE][HIST_INDET], 1);
    free(t);
}
END_TEST

START_TEST(resurrected_delete_is_reported)
{
    /* c was deleted (acknowledged) but is back in the read-back */
    char *t = join3(base,
                    "final k1 0 b\n"
                    "final k2 0 c\n",
                    "");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_RESURRECTED);
    free(t);
}
END_TEST

START_TEST(resurrection_on_one_replica_is_reported)
{
    /* the read-back is right, but one replica still holds the deleted c:
     * both a resurrection and a divergence */
    char *t = join3(base, base_final, "local n3 k2 0 c\n");
    hist_report_t rep = check_text(t);
    ck_assert_uint_eq(rep.anomalies[HIST_A_RESURRECTED], 1);
    ck_assert_uint_eq(rep.anomalies[HIST_A_DIVERGENT], 1);
    ck_assert_uint_eq(rep.total_anomalies, 2);
    free(t);
}
END_TEST

START_TEST(phantom_value_is_reported)
{
    /* a read returns a value nobody wrote */
    char *t = join3(base, base_final,
                    "op 4 read k1 sloppy 2000 2100 0 - - b,zz 05\n");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_PHANTOM);
    free(t);
}
END_TEST

START_TEST(failed_write_visible_is_reported)
{
    /* a put that failed definitely (KV_EUNAVAIL) shows up */
    char *t = join3(base, base_final,
                    "op 4 put k4 sloppy 2000 2100 13 e - - -\n"
                    "final k4 0 e\n");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_FAILED_VISIBLE);
    free(t);
}
END_TEST

START_TEST(stale_strict_read_is_reported)
{
    /* strict: a read starting after b's ack returns the older a */
    char *t = join3(base, base_final,
                    "op 5 read k1 strict 600 650 0 - - a 06\n");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_STALE_READ);
    free(t);
}
END_TEST

START_TEST(stale_read_rules_respect_phase_and_overlap)
{
    /* the same stale answer in the sloppy phase is allowed, and so is a
     * strict read that began before b was acknowledged */
    char *t = join3(base, base_final,
                    "op 5 read k1 sloppy 600 650 0 - - a 06\n"
                    "op 6 read k1 strict 450 650 0 - - a 06\n");
    hist_report_t rep = check_text(t);
    ck_assert_uint_eq(rep.total_anomalies, 0);
    free(t);
}
END_TEST

START_TEST(divergence_and_no_convergence_are_reported)
{
    char *t = join3(base,
                    "final k1 0 b\n"
                    "local n1 k1 0 a,b\n"
                    "final k2 0 -\n",
                    "converge 90000 0\n");
    hist_report_t rep = check_text(t);
    /* a on n1 is both divergent and a superseded value come back */
    ck_assert_uint_eq(rep.anomalies[HIST_A_DIVERGENT], 1);
    ck_assert_uint_eq(rep.anomalies[HIST_A_NOT_CONVERGED], 1);
    ck_assert_uint_eq(rep.anomalies[HIST_A_RESURRECTED], 1);
    ck_assert_int_eq(rep.converged, 0);
    free(t);
}
END_TEST

START_TEST(failed_readback_is_reported)
{
    char *t = join3(base, "final k1 5 -\nfinal k2 0 -\n", "");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_READBACK);
    free(t);
}
END_TEST

START_TEST(node_crash_is_reported)
{
    char *t = join3(base, base_final, "crash n3 signal-11\n");
    hist_report_t rep = check_text(t);
    expect_only(&rep, HIST_A_CRASH);
    free(t);
}
END_TEST

START_TEST(malformed_history_is_rejected)
{
    static const char *bad[] = {
        "op 0 put k1 strict 100 200 0 a - -\n",        /* a field short */
        "op 0 put k1 strict 300 200 0 a - - -\n",      /* ends before start */
        "op 0 read k1 strict 100 200 0 a - - -\n",     /* a read with a value */
        "op 0 put k1 middle 100 200 0 a - - -\n",      /* unknown phase */
        "op 0 put k1 strict 100 200 0 a x,,y - -\n",   /* empty list item */
        "bogus line\n",
    };
    char *dir = util_tmpdir("hist");
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/h.txt", dir), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(bad[i], f);
        fclose(f);
        char err[256] = "";
        hist_t *h = hist_load(path, err, sizeof(err));
        ck_assert_msg(h == NULL, "accepted: %s", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, ":1:"));
    }
    char err[256];
    ck_assert_ptr_null(hist_load("/nonexistent/h.txt", err, sizeof(err)));
    unlink(path);
    util_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

Suite *nemesis_suite(void)
{
    Suite *s = suite_create("nemesis-checker");
    TCase *tc = tcase_create("checker");
    tcase_add_test(tc, clean_history_passes);
    tcase_add_test(tc, lost_write_is_reported);
    tcase_add_test(tc, indeterminate_superseder_excuses_but_is_counted);
    tcase_add_test(tc, resurrected_delete_is_reported);
    tcase_add_test(tc, resurrection_on_one_replica_is_reported);
    tcase_add_test(tc, phantom_value_is_reported);
    tcase_add_test(tc, failed_write_visible_is_reported);
    tcase_add_test(tc, stale_strict_read_is_reported);
    tcase_add_test(tc, stale_read_rules_respect_phase_and_overlap);
    tcase_add_test(tc, divergence_and_no_convergence_are_reported);
    tcase_add_test(tc, failed_readback_is_reported);
    tcase_add_test(tc, node_crash_is_reported);
    tcase_add_test(tc, malformed_history_is_rejected);
    suite_add_tcase(s, tc);
    return s;
}
