/* rl_sim: a deterministic simulator of one upstream's provider limiter
 * driving broker/ratelimit.c exactly as the broker does (admit, result,
 * retry after the job's own Retry-After), on a simulated millisecond clock.
 *
 * Provider shapes: a request token bucket (rate, burst) whose rate may step
 * at given times; an optional token bucket for tokens/s; 429 with a constant
 * Retry-After, the bucket's own wait, or none; limit/remaining/reset
 * headers or none; a cold start that rejects everything for a while. Used by
 * tests/unit/test_ratelimit.c (assertions) and bench/rl_sim_main.c (figures
 * and the plots of docs/architecture.md). Owns nothing after a run returns;
 * knows only the public ratelimit.h. */
#ifndef LQ_RL_SIM_H
#define LQ_RL_SIM_H

#include "broker/ratelimit.h"

#include <stdint.h>

#define LQ_SIM_MAX_STEPS 4

typedef struct {
    double rate;             /* requests/s */
    double burst;            /* bucket size; <= 0: max(1, rate/20) */
    double tok_rate;         /* tokens/s, 0 = no token limit */
    double tok_burst;        /* <= 0: tok_rate/20 */
    int64_t retry_after_ms;  /* on 429: >= 0 constant, -1 the bucket's wait, -2 none */
    int headers;             /* 1: x-ratelimit-limit/remaining/reset on every answer */
    uint64_t cold_ms;        /* reject everything (no headers) before this */
    struct {
        uint64_t at_ms;
        double rate;
    } steps[LQ_SIM_MAX_STEPS]; /* the rate changes at these times */
    int nsteps;
} lq_sim_provider_t;

typedef struct {
    uint64_t t_ms;      /* since the start */
    double pace_rps;    /* the limiter's pace in force (observed if none) */
    double ok_rps;      /* successes over the last 100 ms */
    double provider_rps; /* the provider's rate now */
    int64_t n429;       /* so far */
} lq_sim_sample_t;

typedef void lq_sim_trace_fn(void *arg, const lq_sim_sample_t *s);

typedef struct {
    int jobs;
    int slots;           /* the workers' concurrency */
    uint64_t latency_ms; /* of an answer (a 429 comes after min(latency, 5)) */
    int64_t est_tokens;  /* the broker's estimate per job */
    int64_t used_tokens; /* what a job really uses */
    lq_rl_config_t cfg;
    const char *import;  /* learned state to start from, or NULL */
    lq_sim_trace_fn *trace; /* every 100 ms, or NULL */
    void *trace_arg;
} lq_sim_cfg_t;

typedef struct {
    uint64_t wall_ms;
    int64_t n429;
    int64_t requests;
    int64_t done;
    int64_t lost; /* jobs not done when the simulation gave up (1 h) */
    double final_pace_rps;
    char exported[128];
} lq_sim_result_t;

/* Runs cfg->jobs jobs against the provider. Can't fail (aborts on
 * out-of-memory). */
void lq_sim_run(const lq_sim_provider_t *p, const lq_sim_cfg_t *cfg, lq_sim_result_t *out);

/* Ideal wall time (ms) of n jobs of used_tokens each against p: the burst
 * at once, the rest at the rate (following its steps, and the token limit),
 * after the cold start. */
double lq_sim_ideal_ms(const lq_sim_provider_t *p, int n, int64_t used_tokens);

#endif
