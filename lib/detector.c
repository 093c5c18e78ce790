/*
 * detector.c - phi-accrual failure detection (Hayashibara et al., as in
 * Cassandra's FailureDetector).
 *
 * Owns nothing but the arithmetic: each member's history of heartbeat
 * inter-arrival times (a window of the last DETECTOR_WINDOW samples) and
 * the suspicion level phi computed from it. Like Cassandra, the arrivals
 * are modelled as exponentially distributed, so
 *     phi(t) = (t - last) / (mean * ln 10)
 * and a member is convicted when phi exceeds phi_convict (8 by default):
 * about 18.4 mean intervals of silence. The mean adapts to how often
 * heartbeats really arrive through gossip, so a slow but alive link is not
 * convicted by a fixed timeout (Voldemort's banning of a node after one
 * error is the failure this avoids); the floor keeps a burst of fast
 * arrivals from making the detector hair-trigger.
 */
#include "detector.h"

#include <math.h>

void detector_init(detector_t *d, int64_t now_ms, double expected_ms)
{
    d->last_ms = now_ms;
    d->n = 0;
    d->next = 0;
    d->sum = 0;
    d->floor_ms = expected_ms > 1 ? expected_ms : 1;
    d->interval[d->next] = d->floor_ms;
    d->next = 1;
    d->n = 1;
    d->sum = d->floor_ms;
}

void detector_heartbeat(detector_t *d, int64_t now_ms)
{
    double gap = (double)(now_ms - d->last_ms);
    if (gap < 0) {
        gap = 0;
    }
    d->last_ms = now_ms;
    if (d->n == DETECTOR_WINDOW) {
        d->sum -= d->interval[d->next];
    } else {
        d->n++;
    }
    d->interval[d->next] = gap;
    d->sum += gap;
    d->next = (d->next + 1) % DETECTOR_WINDOW;
}

double detector_mean(const detector_t *d)
{
    double mean = d->n > 0 ? d->sum / d->n : d->floor_ms;
    return mean < d->floor_ms ? d->floor_ms : mean;
}

double detector_phi(const detector_t *d, int64_t now_ms)
{
    double silent = (double)(now_ms - d->last_ms);
    if (silent <= 0) {
        return 0;
    }
    return silent / (detector_mean(d) * log(10.0));
}
