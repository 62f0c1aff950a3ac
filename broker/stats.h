/* stats: what the broker's /metrics reports beyond the dispatcher's gauges.
 *
 * Two sources. (1) Every result Redis recorded (reports.c's observer): per
 * upstream, attempts by outcome class, jobs completed / failed / retried,
 * the upstream latency reported by the workers, the end-to-end job latency
 * (from the batch's submission to the job's final result), tokens, and 429s
 * that carried Retry-After (each pauses the upstream). (2) A poll of Redis
 * every poll_ms: each active batch's counters (pending = submitted minus
 * finished minus leased). The poll answers are cached; a scrape reads the
 * cache and never waits for Redis. (Redis memory and admission are the
 * core's: lq_broker_stats.)
 *
 * Owns its counters, the batch cache and its poll timer; borrows the loop
 * and the Redis connection (both outlive it). */
#ifndef LQ_BROKER_STATS_H
#define LQ_BROKER_STATS_H

#include "../common/loop.h"
#include "../common/prom.h"
#include "../proto/msg.h"
#include "redis.h"
#include "reports.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_bstats lq_bstats_t;

/* One active batch as last polled (strings owned by the cache). */
typedef struct {
    char id[LQ_MAX_ID + 1];
    char name[LQ_MAX_ID + 1];
    char upstream[LQ_MAX_ID + 1];
    char state[24];
    int64_t total, completed, failed, leased;
    int64_t pending;    /* in Redis, not leased (prefetched jobs are leased) */
    int64_t created_at; /* unix seconds */
} lq_bstats_batch_t;

/* Resolves the upstream of a batch the poll has not seen yet (NULL: unknown). */
typedef const char *(*lq_bstats_upstream_fn)(void *arg, const char *batch);

/* Creates the module and starts polling every poll_ms (> 0). prefix is
 * copied. Can't fail. */
lq_bstats_t *lq_bstats_new(lq_loop_t *loop, lq_redis_t *redis, const char *prefix,
                           uint64_t poll_ms, lq_bstats_upstream_fn upstream_of, void *arg);
/* Stops the timer and frees everything. Safe on NULL; clears *s. */
void lq_bstats_destroy(lq_bstats_t **s);

/* The reports observer (lq_reports_observe(r, lq_bstats_on_report, s)). */
void lq_bstats_on_report(void *s, const lq_report_seen_t *seen);

/* The batches of the last poll; *out borrowed until the next poll. */
size_t lq_bstats_batches(const lq_bstats_t *s, const lq_bstats_batch_t **out);

/* Appends the per-upstream result families (attempts, jobs, latency
 * histograms, tokens, pauses) to b. Can't fail. */
void lq_bstats_render(const lq_bstats_t *s, lq_prom_buf_t *b);

#endif
