/* ratelimit: fleet-wide pacing of one upstream, owned by the broker.
 *
 * A pure controller: no I/O, the clock is passed in (monotonic ms), so the
 * simulator (tests/sim/rl_sim.c) and the unit tests drive it exactly as the
 * broker does. Every job dispatched to an upstream passes lq_rl_admit();
 * every result from it is fed back with lq_rl_on_result(), a job that ended
 * without a result with lq_rl_on_lost(). What it does, in short (the long
 * form with plots is the controller section of docs/architecture.md):
 *
 *  1. Configured budgets (--limit NAME:rpm=N,tpm=N): token buckets refilled
 *     continuously. A job takes one request and its estimated tokens (scaled
 *     by the measured usage/estimate ratio); the charge is corrected by the
 *     real usage when the result arrives.
 *  2. Provider headers (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*
 *     mapped onto the same fields by the worker): the limits cap the request
 *     and token rates (at 100% while more than half remains, else 97%);
 *     "remaining 0" pauses until the reset.
 *  3. 429s without headers: multiplicative decrease to 95% of the rate of
 *     successes just measured, once per congestion event (a 429 for a job
 *     sent before the last cut is the same event). 429s before enough
 *     successes to measure anything (a cold start) only back off briefly
 *     and never set a rate.
 *  4. Retry-After pauses the whole upstream; during a pause of 250 ms or
 *     more single probe jobs go out at growing gaps (50, 100, 200 ms...),
 *     and the first probe that succeeds ends the pause (a constant
 *     "Retry-After: 1" from a token bucket would otherwise cost a second of
 *     capacity per 429); once that has happened, lq_rl_retry_delay() lets
 *     the jobs answered 429 come back after 250 ms instead of the full
 *     Retry-After (the upstream's pause still holds them).
 *  5. Probing upward: a learned rate grows 1% per 100 ms for 500 ms after a
 *     cut, then faster each step (+1% more per 100 ms, up to +25%), but only
 *     while the upstream delivers at least 80% of it (an upstream limited by
 *     the workers' concurrency, not the provider, must not grow an
 *     unbounded estimate).
 *  6. Until any rate is known, a concurrency window (32 in flight, doubling
 *     every 50 ms while full and no 429 or error came back since it last
 *     doubled) keeps the first moments from being a blast.
 *
 * Learned state is exported as a short string (lq_rl_export) for the broker
 * to keep in Redis, and imported on start (lq_rl_import).
 *
 * Several brokers over one Redis pace one provider together: each enforces
 * its share of every limit (lq_rl_set_share; 1 alone, 1/n of n brokers with
 * demand, computed by broker/rlstore.c). The share scales the configured
 * budgets and the header limits (which stay the provider's, fleet-wide);
 * the learned rate is this broker's own (it was measured on its own
 * traffic), rescaled when the share changes, and exported/imported as the
 * fleet's (learned / share). lq_rl_adopt takes a lower fleet rate another
 * broker learned. */
#ifndef LQ_RATELIMIT_H
#define LQ_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

/* Bounds the controller keeps whatever workers report: a learned rate stops
 * growing at LQ_RL_MAX_RPS; durations over LQ_RL_MAX_MS (7 days) and counts
 * over LQ_RL_MAX_COUNT are clamped to them. */
#define LQ_RL_MAX_RPS 1e7
#define LQ_RL_MAX_MS (7LL * 86400LL * 1000LL)
#define LQ_RL_MAX_COUNT 1000000000000LL

typedef struct lq_rl lq_rl_t;

typedef struct {
    double rpm;      /* configured requests/min, 0 = none */
    double tpm;      /* configured tokens/min, 0 = none */
    int use_headers; /* trust rate-limit headers (default 1) */
} lq_rl_config_t;

typedef struct {
    int status;                 /* HTTP status, 0 = none (connection error) */
    int64_t retry_after_ms;     /* -1 none */
    int64_t est_tokens;         /* the estimate passed to admit() */
    int64_t used_tokens;        /* prompt+completion from usage, -1 unknown */
    int64_t limit_requests;     /* requests per minute the provider allows, -1 unknown */
    int64_t limit_tokens;       /* tokens per minute, -1 unknown */
    int64_t remaining_requests; /* -1 unknown */
    int64_t remaining_tokens;   /* -1 unknown */
    int64_t reset_requests_ms;  /* -1 unknown */
    int64_t reset_tokens_ms;    /* -1 unknown */
    uint64_t sent_ms;           /* when admit() let the job go; 0 = unknown */
} lq_rl_result_t;

typedef struct {
    double rate_limit;  /* requests/s currently enforced, 0 = unlimited */
    double learned_rps; /* from headers or 429s, 0 = none yet */
    double ok_rps;      /* successes over the last second */
    double window;      /* concurrency window */
    int64_t inflight;
    int64_t n429, nok, nerr;
    int64_t paused_ms; /* remaining pause, 0 = none */
} lq_rl_stats_t;

/* Where the pace in force comes from. */
typedef enum {
    LQ_RL_OBSERVED = 0, /* no limit known: the rate seen is shown */
    LQ_RL_CONFIGURED,   /* --limit */
    LQ_RL_HEADERS,      /* the provider's rate-limit headers */
    LQ_RL_LEARNED,      /* learned from 429s */
} lq_rl_source_t;

typedef struct {
    double rpm;            /* requests/min in force; the observed rate when source is OBSERVED */
    double tpm;            /* tokens/min in force, 0 = none */
    lq_rl_source_t source; /* of rpm */
    lq_rl_source_t tpm_source;
    double observed_rpm; /* successes over the last second, per minute */
    int64_t paused_ms;   /* remaining pause, 0 = none */
} lq_rl_pace_t;

/* Creates a limiter. Can't fail (aborts on out-of-memory). */
lq_rl_t *lq_rl_new(const lq_rl_config_t *cfg, uint64_t now_ms);
/* Frees it. Safe on NULL; clears *rl. */
void lq_rl_destroy(lq_rl_t **rl);

/* Returns 1 and charges one request and est_tokens if a job may start now;
 * 0 if not (then *retry_ms says when to ask again, at least 1). */
int lq_rl_admit(lq_rl_t *rl, uint64_t now_ms, int64_t est_tokens, uint64_t *retry_ms);

/* A job admitted earlier ended with this result (counts it out of flight).
 * Can't fail. */
void lq_rl_on_result(lq_rl_t *rl, uint64_t now_ms, const lq_rl_result_t *res);

/* How long a job answered 429 with this Retry-After (ms, -1 none) should
 * wait before it is retried. The Retry-After itself, unless probes have
 * shown that this provider's Retry-After is pessimistic (a probe got
 * through before half of it had passed): then at most 250 ms, since the
 * upstream's own pause still holds the job back. Can't fail. */
int64_t lq_rl_retry_delay(lq_rl_t *rl, uint64_t now_ms, int64_t retry_after_ms);

/* A job admitted earlier ended without a result (worker lost). */
void lq_rl_on_lost(lq_rl_t *rl);

/* Current state for status displays. Can't fail. */
void lq_rl_stats(lq_rl_t *rl, uint64_t now_ms, lq_rl_stats_t *out);

/* The pace in force and its source, in plain units. Can't fail. */
void lq_rl_pace(lq_rl_t *rl, uint64_t now_ms, lq_rl_pace_t *out);

/* Returns "observed", "configured", "headers" or "learned". */
const char *lq_rl_source_name(lq_rl_source_t s);

/* Writes the learned state ("v1 rps=.. hrps=.. htps=.. ratio=..", rps the
 * fleet's: learned / share, while the share is below 1 at most the fleet's
 * last measured rate or this broker's own, if more) into out (n bytes, 128
 * is enough). Returns 1 if there is anything worth keeping, 0 if not (out
 * is then ""). */
int lq_rl_export(const lq_rl_t *rl, char *out, size_t n);

/* Restores a state written by lq_rl_export (the learned rate at this
 * broker's share; probing restarts gently from it). Returns 0, or -1 on a
 * malformed string (nothing changed). */
int lq_rl_import(lq_rl_t *rl, uint64_t now_ms, const char *s);

/* Sets this broker's share of every limit, in (0, 1] (out-of-range values
 * are clamped; 1 = alone, the default): configured budgets and header
 * limits are multiplied by it, the learned rate is rescaled from the old
 * share to the new one (a larger share raises it at most to the fleet's
 * last measured rate at the new share, or keeps the rate it reached: it
 * may have grown past its share while the others sent less), and the
 * buckets are clamped to the new caps. Can't fail. */
void lq_rl_set_share(lq_rl_t *rl, double share, uint64_t now_ms);
/* The share in force (1 until set). */
double lq_rl_share(const lq_rl_t *rl);

/* Another broker learned that the fleet may send fleet_rps requests/s: if
 * this broker's part of it (fleet_rps x share) is lower than what it
 * enforces, it enforces that from now on (at most halving it at once, as a
 * cut of its own would; then settling and probing upward as after a cut)
 * and returns 1; else nothing changes, 0. */
int lq_rl_adopt(lq_rl_t *rl, uint64_t now_ms, double fleet_rps);

/* The measured cuts (429s that lowered the learned rate) so far: a change
 * tells the other brokers to lower theirs (lq_rl_adopt). */
uint64_t lq_rl_cuts(const lq_rl_t *rl);

/* 1 if this broker has demand for the upstream: jobs in flight, or
 * lq_rl_admit asked within the last within_ms (a job and a worker were
 * waiting); else 0. */
int lq_rl_demand(const lq_rl_t *rl, uint64_t now_ms, uint64_t within_ms);

/* Parses "rpm=N,tpm=N" (either may be missing). Returns 0 or -1. */
int lq_rl_parse(const char *spec, lq_rl_config_t *cfg);

#endif
