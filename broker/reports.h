/* reports: worker results on their way into Redis.
 *
 * Owns the results received and not yet written: each one becomes the line
 * that Redis stores for it (the output line with its response and error
 * objects) plus its retry delay. lq_reports_flush (from the before-sleep
 * hook) sends them as REPORT calls of up to 500 results, Nagle style: at
 * most LQ_REPORTS_CALLS_MAX small calls are outstanding; results that
 * arrive meanwhile wait for an answer and go together in the next call, so
 * a lone result goes at once and the calls grow with the load (a full call
 * goes at once). When Redis answers, the owner's on_recorded handler learns the
 * script's verdict for each result (ok, failed, retry, dup, resent, stale,
 * gone) so that it can acknowledge it to the worker; a result whose call
 * was lost with the connection is not acknowledged, and the worker sends it
 * again.
 *
 * Results first: when Redis refuses a REPORT (an error reply: OOM when
 * maxmemory is reached, or anything else) its results are not dropped but
 * kept here and sent again every LQ_REPORTS_RETRY_MS; meanwhile
 * lq_reports_blocked() is true, so that the owner stops dispatching. What
 * is kept is bounded (LQ_REPORTS_HELD_MAX results); results past the bound
 * are left unacknowledged with their workers, and lq_reports_take_lost()
 * tells the owner to have the workers send them again once Redis takes
 * results. */
#ifndef LQ_REPORTS_H
#define LQ_REPORTS_H

#include "../proto/msg.h"
#include "redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_reports lq_reports_t;

/* One result's verdict: code is the REPORT script's; delay_ms the retry
 * delay that was scheduled (for code "retry"). */
typedef void (*lq_reports_recorded_cb)(void *arg, const uint8_t *ident, size_t ident_len,
                                       const char *batch, int64_t index, const char *code,
                                       int64_t delay_ms);

typedef struct {
    const char *prefix;    /* Redis key prefix (borrowed) */
    int64_t retry_base_ms; /* first backoff ceiling */
    int64_t retry_cap_ms;  /* largest backoff */
    int64_t cache_ttl_s;   /* lifetime of a response stored in the cache */
} lq_reports_opts_t;

#define LQ_REPORTS_RETRY_MS 500
/* REPORT calls outstanding at once before results wait (see flush) */
#define LQ_REPORTS_CALLS_MAX 1
#define LQ_REPORTS_HELD_MAX 200000

typedef struct {
    uint64_t results;    /* recorded by Redis */
    uint64_t duplicates; /* of which were duplicates */
    uint64_t refused;    /* REPORT calls Redis refused */
    int64_t held;        /* results waiting to be sent (refused, or behind the outstanding call) */
    int blocked;         /* Redis refuses results right now */
} lq_reports_stats_t;

/* What an observer learns of each result Redis recorded (borrowed for the
 * call). */
typedef struct {
    const char *batch;
    const char *verdict; /* the REPORT script's code: ok, failed, retry, dup, ... */
    int64_t outcome;     /* lq_outcome_t as the worker reported it */
    int64_t status;      /* HTTP status, 0 if none */
    const char *error_code; /* "" on OK */
    int64_t latency_ms;
    int64_t retry_after_ms; /* -1: none */
    int64_t prompt_tokens, completion_tokens; /* 0 or -1 when unknown */
} lq_report_seen_t;
typedef void (*lq_reports_seen_cb)(void *arg, const lq_report_seen_t *seen);

/* Creates the queue on a Redis connection the caller owns (and keeps alive
 * until after lq_reports_destroy's pending calls are failed by
 * lq_redis_destroy). Can't fail. */
lq_reports_t *lq_reports_new(lq_redis_t *redis, const lq_reports_opts_t *opts,
                             lq_reports_recorded_cb on_recorded, void *arg);
/* Frees unsent results. Safe on NULL; clears *r. */
void lq_reports_destroy(lq_reports_t **r);

/* Queues one result from the worker of that identity; cid is the job's
 * custom_id or "" (then the script reads it from the payload); takes
 * ownership of cid. Can't fail. */
void lq_reports_add(lq_reports_t *r, const uint8_t *ident, size_t ident_len,
                    const lq_w_result_t *res, char *cid);
/* Sends the queued results to Redis: full calls at once, the rest when
 * fewer than LQ_REPORTS_CALLS_MAX calls are outstanding (while blocked, one
 * call at a time, at most once every LQ_REPORTS_RETRY_MS of now_ms, a
 * monotonic clock). Can't fail: with Redis down they are dropped
 * unacknowledged (the workers send them again). */
void lq_reports_flush(lq_reports_t *r, uint64_t now_ms);
/* Whether final successes of cache batches are stored in the cache (on by
 * default; off while Redis is near full: the cache gives way first). */
void lq_reports_cache_writes(lq_reports_t *r, int on);
/* 1 while Redis refuses results (the last REPORT failed). */
int lq_reports_blocked(const lq_reports_t *r);
/* 1 (once) when results were left with their workers while blocked and
 * Redis now takes results again: the workers should re-send. */
int lq_reports_take_lost(lq_reports_t *r);
void lq_reports_stats(const lq_reports_t *r, lq_reports_stats_t *st);
/* Calls fn for every result Redis recorded, before on_recorded (metrics).
 * fn NULL: none. Can't fail. */
void lq_reports_observe(lq_reports_t *r, lq_reports_seen_cb fn, void *arg);

/* Retry delay of an attempt: Retry-After when given (retry_after_ms >= 0,
 * capped at an hour), else full jitter over base * 2^(attempt-1), capped. */
int64_t lq_reports_retry_delay(const lq_reports_opts_t *o, int64_t attempt,
                               int64_t retry_after_ms);

/* The "error" object of an output line, {"code":...,"message":...}, as a
 * new string (caller frees). Can't fail. */
char *lq_error_json(const char *code, const char *message);

#endif
