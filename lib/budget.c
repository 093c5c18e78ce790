/*
 * budget.c - the arithmetic of peer_buffer_budget (budget.h says how the
 * budget is split and why). Owns the charges of the connections; rpc.c
 * applies the limits to its listener and refuses what does not fit.
 */
#include "budget.h"

#include <stdlib.h>

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

void budget_init(budget_t *b, size_t total, size_t msg_max, size_t value_msg)
{
    b->total = total < BUDGET_MIN ? BUDGET_MIN : total;
    b->msg_max = msg_max;
    b->value_msg = min_size(value_msg, msg_max);
    pthread_mutex_init(&b->mu, NULL);
    b->pipes = NULL;
    b->npipes = b->cap = 0;
    b->charged = 0;
    b->limit = b->value_msg;
    atomic_init(&b->held, 0);
}

void budget_fini(budget_t *b)
{
    free(b->pipes);
    pthread_mutex_destroy(&b->mu);
}

size_t budget_limit(budget_t *b)
{
    pthread_mutex_lock(&b->mu);
    size_t limit = b->limit;
    pthread_mutex_unlock(&b->mu);
    return limit;
}

/* What the charges would sum to with the limit at l. */
static size_t charges_at(const budget_t *b, size_t l)
{
    size_t sum = 0;
    for (size_t i = 0; i < b->npipes; i++) {
        sum += b->pipes[i].worst > 2 * l ? b->pipes[i].worst : 2 * l;
    }
    return sum;
}

bool budget_pipe_added(budget_t *b, uint32_t id, size_t *limit)
{
    *limit = 0;
    pthread_mutex_lock(&b->mu);
    size_t half = b->total / 2;
    size_t left = half - b->charged; /* charged never exceeds half */
    /* A message with the largest value while two fit in all but a
     * quarter of the half (kept for connections at the floor: gossip and
     * small values go on), then the floor while two fit. */
    size_t floor = min_size(BUDGET_MSG_FLOOR, b->value_msg);
    size_t keep = half / 4;
    size_t l = left > keep && (left - keep) / 2 >= b->value_msg
                   ? b->value_msg
                   : left / 2 / floor > 0 ? floor : 0;
    l = min_size(b->limit, l);
    bool ok = l >= floor;
    if (ok && b->npipes == b->cap) {
        size_t cap = b->cap != 0 ? 2 * b->cap : 16;
        budget_pipe_t *p = realloc(b->pipes, cap * sizeof(*p));
        ok = p != NULL;
        if (ok) {
            b->pipes = p;
            b->cap = cap;
        }
    }
    if (ok) {
        b->pipes[b->npipes++] = (budget_pipe_t){id, 2 * l};
        b->charged += 2 * l;
        if (l != b->limit) {
            b->limit = l; /* the others keep their charge */
            *limit = l;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void budget_pipe_removed(budget_t *b, uint32_t id, size_t *limit)
{
    *limit = 0;
    pthread_mutex_lock(&b->mu);
    size_t i = 0;
    while (i < b->npipes && b->pipes[i].id != id) {
        i++;
    }
    if (i == b->npipes) {
        pthread_mutex_unlock(&b->mu); /* refused: never charged */
        return;
    }
    b->charged -= b->pipes[i].worst;
    b->pipes[i] = b->pipes[--b->npipes];
    /* The highest limit whose charges fit: a binary search between the
     * one in force (it fits: charges only went down) and the largest
     * message, each step O(connections); closes are rare. */
    size_t half = b->total / 2;
    size_t cap = b->value_msg;
    size_t lo = b->limit, hi = cap > lo ? cap : lo;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (charges_at(b, mid) <= half) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if (lo != b->limit) {
        for (size_t k = 0; k < b->npipes; k++) {
            if (b->pipes[k].worst < 2 * lo) {
                b->pipes[k].worst = 2 * lo;
            }
        }
        b->charged = charges_at(b, lo);
        b->limit = lo;
        *limit = lo;
    }
    pthread_mutex_unlock(&b->mu);
}

bool budget_hold(budget_t *b, size_t len)
{
    if (len <= BUDGET_SMALL) {
        return true;
    }
    size_t half = b->total / 2;
    size_t held = atomic_load(&b->held); /* never above half */
    do {
        if (len > half - held) {
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->held, &held, held + len));
    return true;
}

void budget_release(budget_t *b, size_t len)
{
    if (len > BUDGET_SMALL) {
        atomic_fetch_sub(&b->held, len);
    }
}

void budget_capacity(size_t total, size_t msg_max, size_t value_msg,
                     unsigned *full, unsigned *all)
{
    budget_t b;
    budget_init(&b, total, msg_max, value_msg);
    size_t limit = 0;
    *full = *all = 0;
    while (*all < 1000000 && budget_pipe_added(&b, *all + 1, &limit)) {
        ++*all;
        *full += b.limit >= b.value_msg;
    }
    budget_fini(&b);
}
