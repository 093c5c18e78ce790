/*
 * history.h - the operation history the nemesis harness records, and the
 * checker that judges it (history.c). Shared by test/nemesis.c (which
 * writes and checks histories) and the Check suite (which feeds the
 * checker corrupted histories and expects each anomaly to be found).
 *
 * The format is one record per line, space-separated tokens; values and
 * keys are printable and contain no spaces or commas (the workload makes
 * every written value unique, so a value names the write that made it):
 *
 *   op CLIENT KIND KEY PHASE START_US END_US RC VALUE COVERS SEEN CTX
 *      KIND put | read | delete; PHASE strict | sloppy; RC a kv error
 *      code; VALUE the value written ("-" for read/delete); COVERS the
 *      values the write's context covered, i.e. what the read it came from
 *      returned (comma-separated, "-" for none or an empty context); SEEN
 *      the values a read returned ("-" for none); CTX the context in hex
 *      ("-" for none). Times are CLOCK_MONOTONIC microseconds.
 *   fault KIND START_US END_US DETAIL     one nemesis step
 *   final KEY RC VALUES                   read back with R=N after healing
 *   local NODE KEY RC VALUES              a preference-list node's own copy
 *   converge MS OK                        anti-entropy settled in MS (OK 1)
 *   crash NODE HOW                        a node died on its own (HOW:
 *                                         signal-N or exit-N)
 */
#ifndef KV_HISTORY_H
#define KV_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum hist_kind { HIST_PUT = 0, HIST_READ = 1, HIST_DELETE = 2, HIST_KINDS };
enum hist_outcome {
    HIST_OK = 0,    /* acknowledged */
    HIST_INDET = 1, /* KV_EQUORUM / KV_ETIMEDOUT: may or may not apply */
    HIST_FAIL = 2,  /* any other error: nothing was written */
    HIST_OUTCOMES
};
enum hist_anomaly {
    HIST_A_LOST = 0,      /* acknowledged write missing, not superseded */
    HIST_A_RESURRECTED,   /* a value an acknowledged write or delete
                             superseded is back */
    HIST_A_PHANTOM,       /* a value nobody ever wrote */
    HIST_A_FAILED_VISIBLE, /* the value of a write that definitely failed */
    HIST_A_STALE_READ,    /* strict phase: a read missed an earlier ack */
    HIST_A_DIVERGENT,     /* a replica's copy differs from the read-back */
    HIST_A_NOT_CONVERGED, /* Merkle roots never agreed within the bound */
    HIST_A_READBACK,      /* the final read itself failed */
    HIST_A_CRASH,         /* a node exited that the nemesis did not stop */
    HIST_ANOMALIES
};

#define HIST_MAX_FAULT_KINDS 16

typedef struct hist_report {
    size_t ops;
    size_t by_outcome[HIST_KINDS][HIST_OUTCOMES];
    size_t writes_checked;   /* acknowledged puts judged for loss */
    size_t deletes_checked;  /* acknowledged deletes judged for resurrection */
    size_t reads_checked;    /* strict-phase reads judged for staleness */
    size_t excused;          /* acknowledged writes absent but covered by an
                                indeterminate (unobserved) write/delete */
    size_t anomalies[HIST_ANOMALIES];
    size_t total_anomalies;
    int converged; /* -1: no converge record */
    int64_t converge_ms;
    size_t nfault_kinds;
    char fault_kind[HIST_MAX_FAULT_KINDS][24];
    size_t fault_count[HIST_MAX_FAULT_KINDS];
} hist_report_t;

typedef struct hist hist_t;

/* Reads a history file. NULL on failure, with the reason in err. */
hist_t *hist_load(const char *path, char *err, size_t errsize);
void hist_free(hist_t *h);

/* Applies every rule (see kvdist-nemesis(1) CHECKER) and fills *rep. Each
 * anomaly is described on out (NULL: silent), with the operations
 * involved, at most max_print of them. Returns rep->total_anomalies. */
size_t hist_check(hist_t *h, FILE *out, size_t max_print, hist_report_t *rep);

/* Prints the report's counts as a short table. */
void hist_print_report(const hist_report_t *rep, FILE *out);

const char *hist_anomaly_name(int a);
const char *hist_kind_name(int k);
/* The outcome class of a kv error code. */
int hist_outcome_of(int rc);

#endif /* KV_HISTORY_H */
