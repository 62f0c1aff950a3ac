/* ratelimit: fleet-wide pacing of one upstream, owned by the broker.
 *
 * Every job dispatched to an upstream passes lq_rl_admit(); every result
 * from it is fed back with lq_rl_on_result(). Four mechanisms combine:
 *
 *  1. Configured budgets (--limit NAME:rpm=N,tpm=N): token buckets refilled
 *     continuously at rpm/60 requests and tpm/60 tokens per second. A job
 *     takes one request token and its estimated tokens; the estimate is
 *     corrected by the real usage when the result arrives (the bucket may go
 *     negative, which delays later jobs).
 *  2. The provider's own numbers: x-ratelimit-limit-requests/-tokens cap the
 *     request/token rates at 97% of what the provider says; a response that
 *     says remaining 0 pauses dispatch until its reset time.
 *  3. 429s: a 429 with Retry-After pauses the whole upstream that long. A
 *     429 (at most one reaction per 200 ms) also cuts the learned request
 *     rate to 95% of the rate of successes over the last 300 ms, which right
 *     after an overload is the provider's rate (multiplicative decrease).
 *     The first 429 only gives a rough rate (90% of the successes so far)
 *     and starts a ramp of +50% per 100 ms that ends at the next 429.
 *     A 429 during or just after a long pause (Retry-After >= 250 ms) does
 *     not measure (the pause skews the rate): it halves at most once a second.
 *  4. Growth: a learned rate grows by 1% per 100 ms without a 429 (additive
 *     probing), 0.1% when the provider answers 429s with long pauses (each
 *     probe then costs a pause), never while paused. Until the limit is
 *     known, a concurrency window starts at 32 requests in flight and
 *     doubles every 50 ms while full (answers of LLMs take seconds, so
 *     growing per answer would take minutes) and
 *     by one per success while full, so the first moments against an
 *     unknown provider are not a blast of thousands of requests.
 *
 * Times are monotonic milliseconds passed in by the caller (testable). */
#ifndef LQ_RATELIMIT_H
#define LQ_RATELIMIT_H

#include <stdint.h>

typedef struct lq_rl lq_rl_t;

typedef struct {
    double rpm; /* configured requests/min, 0 = none */
    double tpm; /* configured tokens/min, 0 = none */
    int use_headers; /* trust x-ratelimit-* headers (default 1) */
} lq_rl_config_t;

typedef struct {
    int status;                  /* HTTP status, 0 = none (connection error) */
    int64_t retry_after_ms;      /* -1 none */
    int64_t est_tokens;          /* what admit() charged */
    int64_t used_tokens;         /* prompt+completion from usage, -1 unknown */
    int64_t limit_requests;      /* x-ratelimit-limit-requests, -1 unknown */
    int64_t limit_tokens;        /* x-ratelimit-limit-tokens, -1 unknown */
    int64_t remaining_requests;  /* -1 unknown */
    int64_t remaining_tokens;    /* -1 unknown */
    int64_t reset_requests_ms;   /* -1 unknown */
    int64_t reset_tokens_ms;     /* -1 unknown */
} lq_rl_result_t;

typedef struct {
    double rate_limit;   /* requests/s currently enforced, 0 = unlimited */
    double learned_rps;  /* from 429s or headers, 0 = none yet */
    double ok_rps;       /* successes over the last second */
    double window;       /* concurrency window */
    int64_t inflight;
    int64_t n429, nok, nerr;
    int64_t paused_ms;   /* remaining pause, 0 = none */
} lq_rl_stats_t;

/* Creates a limiter. Can't fail. */
lq_rl_t *lq_rl_new(const lq_rl_config_t *cfg, uint64_t now_ms);
void lq_rl_destroy(lq_rl_t **rl);

/* Returns 1 and charges one request and est_tokens if a job may start now;
 * 0 if not (then *retry_ms says when to ask again, at least 1). */
int lq_rl_admit(lq_rl_t *rl, uint64_t now_ms, int64_t est_tokens, uint64_t *retry_ms);

/* A job admitted earlier ended with this result (counts it out of flight). */
void lq_rl_on_result(lq_rl_t *rl, uint64_t now_ms, const lq_rl_result_t *res);

/* A job admitted earlier ended without a result (worker lost). */
void lq_rl_on_lost(lq_rl_t *rl);

/* Current state for status displays. */
void lq_rl_stats(lq_rl_t *rl, uint64_t now_ms, lq_rl_stats_t *out);

/* Parses "rpm=N,tpm=N" (either may be missing). Returns 0 or -1. */
int lq_rl_parse(const char *spec, lq_rl_config_t *cfg);

#endif
