/* rlstore: the learned rate limits of every upstream, kept in Redis.
 *
 * Once a second it writes what each upstream's limiter has learned
 * (lq_rl_export: learned rate, header limits, usage/estimate ratio) into
 * the hash <prefix>ratelimits, field = upstream name, when it changed; each
 * time the broker (re)connects to Redis it reads the hash back and starts
 * every limiter that has learned nothing yet from it (lq_rl_import). So a
 * restarted broker, or a second one, paces from what was learned instead
 * of from zero. Owns its timer and its copy of the last strings written;
 * borrows the loop, the Redis connection and the dispatcher (they must
 * outlive it). */
#ifndef LQ_RLSTORE_H
#define LQ_RLSTORE_H

#include "../common/loop.h"
#include "dispatch.h"
#include "redis.h"

typedef struct lq_rlstore lq_rlstore_t;

/* Creates the store and starts its timer. prefix is borrowed. Can't fail. */
lq_rlstore_t *lq_rlstore_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *d,
                             const char *prefix);
/* Stops the timer and frees it. Safe on NULL; clears *s. */
void lq_rlstore_destroy(lq_rlstore_t **s);

/* Redis came (back) up: reads the learned limits and restores them into
 * limiters that have learned nothing yet. Can't fail (a failed read is
 * logged; the next connect tries again). */
void lq_rlstore_load(lq_rlstore_t *s);

#endif
