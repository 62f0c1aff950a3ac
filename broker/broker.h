/* broker: the broker's state and the parts that share it.
 *
 * One single-threaded process. It owns: the two ROUTER sockets (frontend for
 * clients, backend for workers), the Redis connection, the table of live
 * workers, the table of active batches with their small prefetch queues of
 * leased jobs, and the map of jobs in flight. Redis is the source of truth;
 * everything here can be rebuilt from it after a restart (see
 * docs/architecture.md). broker.c runs dispatch and the worker dialogue,
 * frontend.c answers clients, main.c wires it up. */
#ifndef LQ_BROKER_H
#define LQ_BROKER_H

#include "../common/loop.h"
#include "../common/map.h"
#include "../proto/msg.h"
#include "../wire/zsock.h"
#include "ratelimit.h"
#include "redis.h"

#include <stdint.h>

typedef struct lq_bjob lq_bjob_t;
typedef struct lq_batch lq_batch_t;
typedef struct lq_worker lq_worker_t;

/* A leased job: in a batch's prefetch queue (worker NULL) or in flight. */
struct lq_bjob {
    lq_bjob_t *next; /* prefetch queue link */
    lq_batch_t *batch;
    int64_t index;
    int64_t attempt;
    char *url;
    char *cid;  /* custom_id, passed back with the result (saves a Redis read) */
    char *body; /* freed once sent */
    size_t body_len;
    int64_t est_tokens;
    lq_worker_t *worker;
    int admitted; /* counted in flight by its upstream's limiter */
    char member[LQ_MAX_ID + 24]; /* "batch|index", the lease member */
};

struct lq_batch {
    char id[LQ_MAX_ID + 1];
    char upstream[LQ_MAX_ID + 1];
    int64_t priority;
    int64_t timeout_ms;
    int maybe_ready;  /* Redis may have jobs to lease */
    int fetching;     /* a LEASE call is outstanding */
    int cancelled;    /* stop dispatching its queue */
    int rr_skip;      /* no worker for it in this dispatch round */
    int hot;          /* in b->hot: may have work (queued, ready or fetching) */
    lq_bjob_t *head, *tail; /* prefetch queue */
    size_t queued;
    uint64_t rr; /* last time it was served (fair share) */
};

struct lq_worker {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    char id[LQ_MAX_ID + 1];
    int64_t concurrency;
    int64_t credit;
    int64_t inflight;
    int64_t completed;
    uint64_t last_seen_ms;
    char **upstreams;
    size_t nupstreams;
    lq_job_ref_t *acks; /* results stored, ack pending */
    size_t nacks, acks_cap;
};

typedef struct {
    const char *frontend;
    const char *backend;
    const char *redis_url;
    const char *prefix;
    int64_t heartbeat_ms;
    int64_t liveness;
    int64_t lease_ms;
    int64_t prefetch;
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    const char **limits; /* "NAME:rpm=N,tpm=N" */
    size_t nlimits;
    int ignore_ratelimit_headers;
    const char *curve_secret;       /* Z85 secret key: CURVE on both ports, NULL = off */
    const char *curve_clients_file; /* allowed client public keys, NULL = any */
} lq_broker_opts_t;

typedef struct {
    lq_loop_t *loop;
    void *zctx;
    struct lq_zap *zap;
    lq_zsock_t *front, *back;
    lq_redis_t *redis;
    lq_broker_opts_t opts;
    lq_map_t *workers;  /* ident -> lq_worker_t */
    lq_map_t *batches;  /* id -> lq_batch_t */
    lq_batch_t **hot;   /* batches that may have work; dispatch looks only here */
    size_t nhot, hot_cap;
    lq_map_t *inflight; /* member -> lq_bjob_t (sent to a worker) */
    lq_map_t *limiters; /* upstream name -> lq_rl_t */
    lq_timer_t rl_timer; /* dispatch again when a limiter allows */
    int64_t total_credit;
    int64_t queued_total;
    int fetches;
    int64_t fetch_priority; /* only batches this important may lease now */
    uint64_t rr_clock;
    /* pending result reports, flushed as one REPORT call per iteration */
    struct s_report *reports;
    size_t nreports, reports_cap;
    lq_timer_t heartbeat_timer, renew_timer, expire_timer, promote_timer;
    int redis_was_down;
    uint64_t stat_results, stat_dups, stat_dispatched;
} lq_broker_t;

/* Creates the broker: binds both sockets, starts connecting to Redis.
 * Returns NULL with a message in err. */
lq_broker_t *lq_broker_new(lq_loop_t *loop, const lq_broker_opts_t *opts, char *err, size_t errlen);
void lq_broker_destroy(lq_broker_t **b);

/* Finds or adds the in-memory record of a batch (it exists in Redis). */
lq_batch_t *lq_broker_batch(lq_broker_t *b, const char *id, const char *upstream, int64_t priority,
                            int64_t timeout_ms);
/* Marks a batch as having work to lease and runs dispatch. */
void lq_broker_kick(lq_broker_t *b, lq_batch_t *batch);
/* Stops dispatching a cancelled batch and releases its prefetched leases. */
void lq_broker_cancel_local(lq_broker_t *b, const char *id);

/* frontend.c: handles one client message. */
void lq_frontend_handle(lq_broker_t *b, const uint8_t *ident, size_t ident_len, lq_msg_t *m);

/* The limiter of an upstream (created on first use). */
lq_rl_t *lq_broker_limiter(lq_broker_t *b, const char *upstream);

/* Fills info from a flat HGETALL-style array of Redis strings. */
void lq_batch_info_from_reply(lq_batch_info_t *info, const char *id, redisReply *flat);

#endif
