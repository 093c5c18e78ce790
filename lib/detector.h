/*
 * detector.h - the phi-accrual failure detector (detector.c).
 */
#ifndef KV_DETECTOR_H
#define KV_DETECTOR_H

#include <stdbool.h>
#include <stdint.h>

#define DETECTOR_WINDOW 64

/* Heartbeat arrival history of one member. Not thread-safe: the owner
 * (cluster.c) holds its lock. */
typedef struct detector {
    int64_t last_ms;                  /* last arrival, monotonic ms */
    uint32_t n;                       /* samples in the window */
    uint32_t next;                    /* ring index of the next sample */
    double sum;                       /* sum of the samples in the window */
    double interval[DETECTOR_WINDOW]; /* inter-arrival times, ms */
    double floor_ms;                  /* mean never below this */
} detector_t;

/* Starts a history as if a heartbeat had just arrived at now_ms, with
 * expected_ms (the gossip interval) as the first sample and the floor. */
void detector_init(detector_t *d, int64_t now_ms, double expected_ms);
/* Records a heartbeat arrival. */
void detector_heartbeat(detector_t *d, int64_t now_ms);
/* Suspicion that the member is down: phi = -log10(P(no heartbeat for this
 * long)), with exponentially distributed inter-arrival times. */
double detector_phi(const detector_t *d, int64_t now_ms);
double detector_mean(const detector_t *d);

#endif /* KV_DETECTOR_H */
