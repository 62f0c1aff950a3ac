/* fleet: what a broker learns from the other brokers sharing its Redis.
 *
 * Several brokers may serve one Redis at once (docs/operations.md, "Several
 * brokers"). A batch is opened, fed and cancelled on whichever broker the
 * client talks to; the others learn of it here: every period_ms (and at
 * once after each Redis (re)connect) one ACTIVE script reads the `active`
 * set with each batch's state, upstream, priority and timeout. A running
 * batch is made known to dispatch and marked ready (its jobs may have been
 * submitted, requeued or promoted elsewhere); a cancelling one drops its
 * prefetched jobs (lq_dispatch_cancel). Leases need nothing from here: each
 * broker renews only the members it holds, and any broker's EXPIRE
 * requeues those of a broker that died.
 *
 * Owns its timer and nothing else; the Redis connection and the
 * dispatcher are borrowed from the broker core. */
#ifndef LQ_FLEET_H
#define LQ_FLEET_H
#include "../common/loop.h"
#include "dispatch.h"
#include "redis.h"
#include <stdint.h>

typedef struct lq_fleet lq_fleet_t;

/* Starts the periodic refresh (period_ms <= 0: 500). redis, dispatch and
 * prefix are borrowed and must outlive it. Can't fail. */
lq_fleet_t *lq_fleet_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *dispatch,
                         const char *prefix, int64_t period_ms);
/* Reads the active batches now (after a Redis connect: logs their count).
 * Can't fail: with Redis down it does nothing. */
void lq_fleet_refresh(lq_fleet_t *f, int log_count);
/* Refreshes done since start (observation and tests). */
uint64_t lq_fleet_refreshes(const lq_fleet_t *f);
/* Stops the timer and frees. A reply still pending finds nothing (the Redis
 * connection must be destroyed first). Safe on NULL; clears *f. */
void lq_fleet_destroy(lq_fleet_t **f);

#endif
