/* broker: the core of llmq-broker — the worker port, Redis, and the
 * periodic duties that keep Redis and memory in step.
 *
 * Owns the backend ROUTER (workers), the Redis connection (redis.c), the
 * dispatcher (dispatch.c: batches, prefetch queues, workers, credit, jobs in
 * flight, rate limiters), the queue of results on their way to Redis
 * (reports.c), the acknowledgements owed to workers and the jobs owed to
 * them in this loop iteration (one JOB_LIST per worker that announced it
 * in READY, sent before the loop sleeps; JOB otherwise). Its timers send
 * heartbeats and drop silent workers, renew the leases of the jobs it
 * holds, requeue expired leases and promote delayed retries.
 *
 * It knows nothing of clients: main.c creates the frontend (frontend.c)
 * and the metrics endpoint (metrics.c), which reach the core only through
 * the functions below. Redis is the source of truth; everything here can be
 * rebuilt from it after a restart (docs/architecture.md). */
#ifndef LQ_BROKER_H
#define LQ_BROKER_H

#include "../common/loop.h"
#include "../proto/msg.h"
#include "redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_broker lq_broker_t;

typedef struct {
    const char *backend;   /* worker endpoint to bind */
    const char *redis_url; /* redis://[user:pass@]host:port/db or redis-sentinel://... */
    const char *prefix;    /* of every Redis key */
    int64_t heartbeat_ms;
    int64_t liveness; /* missed heartbeats before a worker is dead */
    int64_t lease_ms;
    int64_t prefetch;
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    const char *const *limits; /* "NAME:rpm=N,tpm=N", validated */
    size_t nlimits;
    int ignore_ratelimit_headers;
    const char *curve_secret; /* Z85 secret key: CURVE on the worker port, NULL = off */
    int64_t high_water_pct;   /* refuse submissions above this share of maxmemory (1..100) */
    int64_t retention_s;      /* remove finished batches after this long, 0 = never */
    int retain_unfetched;     /* 0: retention counts from the first complete fetch */
    int64_t cache_ttl_s;      /* lifetime of a cached response */
    int64_t redis_wait_replicas;   /* > 0: chunk and result acks wait for WAIT on this many */
    int64_t redis_wait_timeout_ms; /* WAIT's timeout (default 1000) */
} lq_broker_opts_t;

typedef struct {
    size_t workers, batches;
    int64_t credit, inflight, prefetched;
    uint64_t dispatched, results, duplicates;
    int redis_up, redis_pending;
    uint64_t dropped;        /* malformed messages on the worker port */
    uint64_t results_refused; /* REPORT calls Redis refused */
    uint64_t batches_expired; /* removed by retention */
    int64_t cache_hits, cache_misses, cache_stores, cache_tokens_saved; /* fleet-wide */
    lq_redis_state_t redis;
} lq_broker_stats_t;

/* Creates the core on a ZeroMQ context the caller owns: binds the worker
 * port and starts connecting to Redis. Returns NULL with a message in err.
 * The strings in opts must outlive the broker. */
lq_broker_t *lq_broker_new(lq_loop_t *loop, void *zctx, const lq_broker_opts_t *opts, char *err,
                           size_t errlen);
/* Closes the port and Redis, frees all state. Safe on NULL; clears *b. */
void lq_broker_destroy(lq_broker_t **b);
/* Why the broker stopped its loop on its own (e.g. a Redis eviction policy
 * that would lose jobs), or NULL. */
const char *lq_broker_fatal(const lq_broker_t *b);

/* ---- for the frontend ---- */

/* The Redis connection and key prefix, for the client requests. */
lq_redis_t *lq_broker_redis(const lq_broker_t *b);
const char *lq_broker_prefix(const lq_broker_t *b);
/* Makes a batch known to dispatch (it exists in Redis). */
void lq_broker_batch_open(lq_broker_t *b, const char *id, const char *upstream, int64_t priority,
                          int64_t timeout_ms);
/* Notes that a batch may have new jobs in Redis and dispatches. */
void lq_broker_kick(lq_broker_t *b, const char *id);
/* Stops dispatching a cancelled batch and releases its prefetched leases. */
void lq_broker_cancel_local(lq_broker_t *b, const char *id);
/* The upstream of a batch this broker knows, or NULL. */
const char *lq_broker_batch_upstream(const lq_broker_t *b, const char *id);
/* Jobs of the batch leased into the prefetch queue (not running yet). */
size_t lq_broker_prefetched(const lq_broker_t *b, const char *id);
/* Admission control: may bytes more of jobs be stored? Returns 0, or -1
 * with a message a user can act on (how full Redis is, the limit, what to
 * do). Counts the bytes against Redis's last reported use. */
int lq_broker_admit(lq_broker_t *b, size_t bytes, char *msg, size_t len);
/* How full Redis is, admission and the results queue. Can't fail. */
void lq_broker_redis_state(const lq_broker_t *b, lq_redis_state_t *st);
/* When a batch will be removed (unix s, 0 = not scheduled), from its
 * finished_at and fetched_at. */
int64_t lq_broker_expires_at(const lq_broker_t *b, int64_t finished_at, int64_t fetched_at);
/* New arrays (caller frees) describing the workers / the upstreams; the
 * strings they point to stay valid until the loop runs again. */
size_t lq_broker_workers(const lq_broker_t *b, lq_worker_info_t **out);
size_t lq_broker_upstreams(lq_broker_t *b, lq_upstream_info_t **out);

/* ---- for the metrics endpoint ---- */
void lq_broker_stats(const lq_broker_t *b, lq_broker_stats_t *st);
/* Result counters, histograms and the polled batch/Redis state (stats.h). */
struct lq_bstats;
const struct lq_bstats *lq_broker_observed(const lq_broker_t *b);

#endif
