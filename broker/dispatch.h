/* dispatch: which leased job goes to which worker, and when.
 *
 * Owns the broker's in-memory view of work: the batches it knows, each with
 * a small prefetch queue of leased jobs; the hot list (the batches that may
 * have work: dispatch looks only there); the live workers with their credit;
 * the jobs in flight; one rate limiter per upstream. It does no I/O: the
 * clock, the Redis calls (LEASE, REQUEUE), the sends to workers and the
 * wake-up timer belong to the owner, who registers them in
 * lq_dispatch_ops_t. tests/unit/test_dispatch.c drives it alone.
 *
 * Rules it keeps:
 * - credit: a worker never holds more jobs than the credit it gave;
 * - priority: a batch of higher priority is always served (and leased for)
 *   before one of lower priority, as long as a worker serves its upstream;
 * - fair share: among batches of equal priority, the one served longest
 *   ago goes next, one job at a time; leases split the need evenly;
 * - demand: it leases only to cover free credit plus a small prefetch;
 * - loss: a lost worker's jobs and a cancelled batch's queue go back to
 *   Redis at once (REQUEUE), never silently dropped. */
#ifndef LQ_DISPATCH_H
#define LQ_DISPATCH_H

#include "../proto/msg.h"
#include "ratelimit.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_dispatch lq_dispatch_t;

/* The owner's side. arg is passed back to every callback. */
typedef struct {
    /* Monotonic clock, ms. */
    uint64_t (*now)(void *arg);
    /* Starts a LEASE of at most n jobs of batch. Returns 0 (the answer comes
     * back through lq_dispatch_leased or lq_dispatch_lease_failed), or -1
     * when Redis cannot be reached now. */
    int (*lease)(void *arg, const char *batch, int64_t n);
    /* Gives leases back to Redis; code/why describe the error recorded for a
     * job with no attempts left. Members are borrowed for the call. */
    void (*requeue)(void *arg, const char *const *members, size_t n, const char *code,
                    const char *why);
    /* Sends one job to the worker of that routing identity. */
    void (*send)(void *arg, const uint8_t *ident, size_t ident_len, const lq_w_job_t *job);
    /* Asks for lq_dispatch_run() after delay_ms (a limiter admits then). */
    void (*wake)(void *arg, uint64_t delay_ms);
    void *arg;
} lq_dispatch_ops_t;

typedef struct {
    int64_t prefetch;           /* jobs leased ahead of free credit */
    const char *const *limits;  /* "NAME:rpm=N,tpm=N", validated by the caller */
    size_t nlimits;
    int ignore_ratelimit_headers;
} lq_dispatch_opts_t;

/* One job as LEASE returned it (borrowed for the call). */
typedef struct {
    int64_t index, attempt;
    const char *payload; /* payload.h format */
    size_t payload_len;
} lq_leased_t;

typedef struct {
    size_t workers, batches;
    int64_t credit;   /* free credit over all workers */
    int64_t inflight; /* jobs sent and not answered */
    int64_t queued;   /* leased jobs waiting in prefetch queues */
    uint64_t dispatched;
} lq_dispatch_stats_t;

/* Creates an empty dispatcher; ops and opts are copied (the strings they
 * point to must outlive it). Can't fail. */
lq_dispatch_t *lq_dispatch_new(const lq_dispatch_ops_t *ops, const lq_dispatch_opts_t *opts);
/* Frees everything it holds (no callbacks). Safe on NULL; clears *d. */
void lq_dispatch_destroy(lq_dispatch_t **d);

/* Hands queued jobs to workers with credit, then leases more where needed.
 * Call it after anything that may have created work or credit. */
void lq_dispatch_run(lq_dispatch_t *d);

/* While held, nothing is sent to workers and nothing is leased (the owner
 * holds dispatch while Redis cannot record results). */
void lq_dispatch_hold(lq_dispatch_t *d, int held);

/* ---- batches ---- */

/* Makes the batch known (no-op if it is). upstream "" or NULL = "default",
 * timeout_ms <= 0 = 600000. */
void lq_dispatch_batch(lq_dispatch_t *d, const char *id, const char *upstream, int64_t priority,
                       int64_t timeout_ms);
/* Notes that Redis may hold jobs of a known, uncancelled batch. */
void lq_dispatch_ready(lq_dispatch_t *d, const char *id);
/* Stops dispatching a batch and requeues its prefetch queue. */
void lq_dispatch_cancel(lq_dispatch_t *d, const char *id);
/* The upstream of a known batch, or NULL. */
const char *lq_dispatch_batch_upstream(const lq_dispatch_t *d, const char *id);
/* Jobs of the batch waiting in its prefetch queue (0 if unknown). */
size_t lq_dispatch_queued(const lq_dispatch_t *d, const char *id);
/* The answer to a lease call: more = Redis holds more jobs. Jobs of an
 * unknown or cancelled batch, and malformed payloads, are requeued. */
void lq_dispatch_leased(lq_dispatch_t *d, const char *id, int more, const lq_leased_t *jobs,
                        size_t n);
/* A lease call failed (error reply or lost connection). */
void lq_dispatch_lease_failed(lq_dispatch_t *d, const char *id);
/* The Redis connection went away: no lease call will be answered. */
void lq_dispatch_redis_lost(lq_dispatch_t *d);
/* Calls fn with the lease member of every job held (queued or in flight). */
void lq_dispatch_each_member(const lq_dispatch_t *d, void (*fn)(void *arg, const char *member),
                             void *arg);

/* ---- workers ---- */

/* A worker (re)registered. Returns 1 if it is new. */
int lq_dispatch_worker_ready(lq_dispatch_t *d, const uint8_t *ident, size_t len,
                             const lq_w_ready_t *r);
/* Adds credit. Returns 0, or -1 if the worker is unknown. */
int lq_dispatch_worker_credit(lq_dispatch_t *d, const uint8_t *ident, size_t len, int64_t credit);
/* Notes a message from the worker. Returns 1 if it is known, else 0. */
int lq_dispatch_worker_seen(lq_dispatch_t *d, const uint8_t *ident, size_t len);
/* Removes a worker; its jobs in flight are requeued at once. */
void lq_dispatch_worker_remove(lq_dispatch_t *d, const uint8_t *ident, size_t len, const char *why);
/* Iterates workers: start with *pos = 0; returns 1 and fills info (strings
 * valid until the next call that changes workers) and the identity. */
int lq_dispatch_worker_next(const lq_dispatch_t *d, size_t *pos, lq_worker_info_t *info,
                            const uint8_t **ident, size_t *ident_len);

/* A worker's result. If it answers a job this worker holds, the job leaves
 * flight, its upstream's limiter learns from it, and *cid receives its
 * custom_id (caller frees); otherwise *cid is "" (still the caller's).
 * Returns 1 if the job was in flight on this worker, else 0. */
int lq_dispatch_result(lq_dispatch_t *d, const uint8_t *ident, size_t len,
                       const lq_w_result_t *res, char **cid);

/* ---- observation ---- */

void lq_dispatch_stats(const lq_dispatch_t *d, lq_dispatch_stats_t *st);
/* The limiter of an upstream (created on first use with its budget). */
lq_rl_t *lq_dispatch_limiter(lq_dispatch_t *d, const char *upstream);
/* Fills a new array (caller frees) with the state of every upstream seen;
 * names point into the dispatcher. Returns the count. */
size_t lq_dispatch_upstreams(lq_dispatch_t *d, lq_upstream_info_t **out);

#endif
