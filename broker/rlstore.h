/* rlstore: the rate limits of every upstream, kept in and shared through
 * Redis.
 *
 * Several brokers over one Redis pace each provider together, so that the
 * fleet keeps under a limit (configured, from headers, or learned) that
 * each of them would otherwise enforce in full. Every 50 ms (and at once
 * when a limiter gains demand, then once more 20 ms later) one RLSHARE
 * script call (broker/scripts.c; one round trip for all upstreams):
 *
 *  - registers this broker, per upstream, while it has demand for it
 *    (lq_rl_demand: jobs in flight, or a job and a worker waiting within the
 *    last second) under <prefix>rlshare:<upstream>, and drops it when it has
 *    none; entries not refreshed for 2 s (a dead broker) are pruned;
 *  - sets each limiter's share to 1 / (1 + the other brokers with demand),
 *    so that a broker that joins changes the shares within ~50 ms, one that
 *    dies within ~2 s;
 *  - writes what each limiter learned (lq_rl_export: fleet totals) into the
 *    hash <prefix>ratelimits, field = upstream name, when it changed, and
 *    starts every limiter that has learned nothing yet from what is there
 *    (creating the limiters of upstreams the fleet learned);
 *  - publishes a limiter's cut (a 429 that lowered its learned rate) as the
 *    fleet rate, and lowers the other brokers' limiters to it
 *    (lq_rl_adopt): one broker's 429s teach the others.
 *
 * With Redis down nothing is sent and every share stays as it was; alone,
 * a broker's share is 1 and it paces exactly as without this module. Each
 * time the broker (re)connects it also reads the hash back at once
 * (lq_rlstore_load), so a restarted broker paces from what was learned.
 *
 * Owns its timer, its broker id and its per-upstream bookkeeping; borrows
 * the loop, the Redis connection and the dispatcher (they must outlive
 * it). */
#ifndef LQ_RLSTORE_H
#define LQ_RLSTORE_H

#include "../common/loop.h"
#include "dispatch.h"
#include "redis.h"

typedef struct lq_rlstore lq_rlstore_t;

/* Creates the store and starts its timer. prefix is borrowed. Can't fail. */
lq_rlstore_t *lq_rlstore_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *d,
                             const char *prefix);
/* Stops the timer and frees it. A reply still pending finds nothing. Safe
 * on NULL; clears *s. */
void lq_rlstore_destroy(lq_rlstore_t **s);

/* Redis came (back) up: reads the learned limits and restores them into
 * limiters that have learned nothing yet, and shares at once. Can't fail
 * (a failed read is logged; the next connect tries again). */
void lq_rlstore_load(lq_rlstore_t *s);

#endif
