/* rl_sim: see rl_sim.h. One step per simulated millisecond: answers due
 * now are fed back, the provider's rate steps, retries come due, then the
 * limiter admits what it allows into free slots. */
#include "rl_sim.h"

#include "common/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_T0 1000 /* the simulated clock starts here (0 means "unknown") */
#define S_GIVE_UP_MS 3600000ULL

typedef struct {
    double tokens, burst, rate;
    double ttokens, tburst, trate;
    uint64_t last;
} s_sim_bucket_t;

typedef struct {
    uint64_t due;
    uint64_t sent;
    int status;
    int64_t retry_after_ms;
    int64_t remaining, tremaining;
    int64_t reset_ms;
} s_sim_flight_t;

/* The provider's request rate at time t (since the start). */
static double s_sim_rate_at(const lq_sim_provider_t *p, uint64_t t)
{
    double r = p->rate;
    for (int i = 0; i < p->nsteps; i++)
        if (t >= p->steps[i].at_ms)
            r = p->steps[i].rate;
    return r;
}

/* The bucket size for a rate. */
static double s_sim_burst_for(const lq_sim_provider_t *p, double rate)
{
    if (p->burst > 0)
        return p->burst;
    return rate / 20 > 1 ? rate / 20 : 1;
}

/* Refills the provider's buckets to now. */
static void s_sim_refill(s_sim_bucket_t *b, uint64_t now)
{
    double dt = (double)(now - b->last) / 1000.0;
    b->last = now;
    b->tokens = fmin(b->burst, b->tokens + b->rate * dt);
    b->ttokens = fmin(b->tburst, b->ttokens + b->trate * dt);
}

/* Decides one request sent at t (since the start): fills the flight. */
static void s_sim_decide(const lq_sim_provider_t *p, s_sim_bucket_t *b, uint64_t t, int64_t used,
                         s_sim_flight_t *f)
{
    s_sim_refill(b, t + S_T0);
    int ok = t >= p->cold_ms && b->tokens >= 1.0 && (b->tburst <= 0 || b->ttokens >= (double)used);
    double wait_ms = 0;
    if (ok) {
        b->tokens -= 1.0;
        if (b->tburst > 0)
            b->ttokens -= (double)used;
    } else {
        double need_r = b->tokens >= 1.0 ? 0 : (1.0 - b->tokens) / b->rate * 1000.0;
        double need_t = b->tburst <= 0 || b->ttokens >= (double)used
                            ? 0
                            : ((double)used - b->ttokens) / b->trate * 1000.0;
        wait_ms = ceil(fmax(need_r, need_t));
    }
    f->status = ok ? 200 : 429;
    f->retry_after_ms = -1;
    if (!ok && t >= p->cold_ms)
        f->retry_after_ms = p->retry_after_ms >= 0 ? p->retry_after_ms
                            : p->retry_after_ms == -1 ? (int64_t)(wait_ms < 1 ? 1 : wait_ms)
                                                      : -1;
    f->remaining = (int64_t)floor(b->tokens / b->burst * b->rate * 60.0);
    f->tremaining = -1;
    if (b->tburst > 0)
        f->tremaining = (int64_t)floor(fmax(0, b->ttokens) / b->tburst * b->trate * 60.0);
    f->reset_ms = (int64_t)ceil((b->burst - b->tokens) / b->rate * 1000.0);
}

double lq_sim_ideal_ms(const lq_sim_provider_t *p, int n, int64_t used_tokens)
{
    double tjobs = 1e18, tburst = 1e18; /* what the token limit allows, in jobs */
    if (p->tok_rate > 0 && used_tokens > 0) {
        tjobs = p->tok_rate / (double)used_tokens;
        tburst = (p->tok_burst > 0 ? p->tok_burst : p->tok_rate / 20) / (double)used_tokens;
    }
    double done = fmin(s_sim_burst_for(p, s_sim_rate_at(p, 0)), tburst), t = (double)p->cold_ms;
    while (done < n) {
        done += fmin(s_sim_rate_at(p, (uint64_t)t), tjobs) / 1000.0;
        t += 1.0;
    }
    return t;
}

/* A pending retry: the job comes due at `due`. */
typedef struct {
    uint64_t *due;
    int n, cap;
} s_sim_retries_t;

/* Returns 1 if a retry is due at now (and takes it). */
static int s_sim_retry_take(s_sim_retries_t *r, uint64_t now)
{
    for (int i = 0; i < r->n; i++)
        if (r->due[i] <= now) {
            r->due[i] = r->due[--r->n];
            return 1;
        }
    return 0;
}

/* Feeds back the answers due at now. */
static void s_sim_complete(lq_rl_t *rl, const lq_sim_cfg_t *cfg, const lq_sim_provider_t *p,
                           s_sim_flight_t *fl, int *inflight, uint64_t now, s_sim_retries_t *rt,
                           lq_sim_result_t *out, int *ok_now)
{
    for (int i = 0; i < *inflight;) {
        s_sim_flight_t *f = &fl[i];
        if (f->due > now) {
            i++;
            continue;
        }
        int hdr = p->headers && f->status == 200;
        lq_rl_result_t res = {f->status, f->retry_after_ms, cfg->est_tokens,
                              f->status == 200 ? cfg->used_tokens : -1,
                              hdr ? (int64_t)(s_sim_rate_at(p, f->sent - S_T0) * 60) : -1,
                              hdr && p->tok_rate > 0 ? (int64_t)(p->tok_rate * 60) : -1,
                              hdr ? f->remaining : -1, hdr ? f->tremaining : -1,
                              hdr ? f->reset_ms : -1, -1, f->sent};
        lq_rl_on_result(rl, now, &res);
        if (f->status == 429) {
            out->n429++;
            if (rt->n == rt->cap) {
                rt->cap = rt->cap ? rt->cap * 2 : 64;
                rt->due = xrealloc(rt->due, (size_t)rt->cap * sizeof *rt->due);
            }
            int64_t d = lq_rl_retry_delay(rl, now, f->retry_after_ms);
            rt->due[rt->n++] = now + (uint64_t)(d >= 0 ? d : 100);
        } else {
            out->done++;
            (*ok_now)++;
        }
        *f = fl[--*inflight];
    }
}

/* Steps the provider's rate when its schedule says so. */
static void s_sim_step_provider(const lq_sim_provider_t *p, s_sim_bucket_t *b, uint64_t t)
{
    double r = s_sim_rate_at(p, t);
    if (r != b->rate) {
        s_sim_refill(b, t + S_T0);
        b->rate = r;
        b->burst = s_sim_burst_for(p, r);
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
}

/* Calls the trace with a sample at t. */
static void s_sim_sample(lq_rl_t *rl, const lq_sim_cfg_t *cfg, const lq_sim_provider_t *p,
                         uint64_t t, int ok_window, int64_t n429)
{
    lq_rl_pace_t pace;
    lq_rl_pace(rl, t + S_T0, &pace);
    lq_sim_sample_t s = {t, pace.rpm / 60.0, ok_window * 10.0, s_sim_rate_at(p, t), n429};
    cfg->trace(cfg->trace_arg, &s);
}

void lq_sim_run(const lq_sim_provider_t *p, const lq_sim_cfg_t *cfg, lq_sim_result_t *out)
{
    memset(out, 0, sizeof *out);
    lq_rl_t *rl = lq_rl_new(&cfg->cfg, S_T0);
    if (cfg->import)
        lq_rl_import(rl, S_T0, cfg->import);
    s_sim_bucket_t b = {0};
    b.rate = s_sim_rate_at(p, 0);
    b.burst = s_sim_burst_for(p, b.rate);
    b.tokens = b.burst;
    b.tburst = p->tok_rate > 0 ? (p->tok_burst > 0 ? p->tok_burst : p->tok_rate / 20) : 0;
    b.ttokens = b.tburst;
    b.trate = p->tok_rate;
    b.last = S_T0;
    s_sim_flight_t *fl = xcalloc((size_t)cfg->slots + 1, sizeof *fl);
    s_sim_retries_t rt = {0};
    int inflight = 0, fresh = cfg->jobs, ok_window = 0;
    uint64_t t = 0;
    for (; out->done < cfg->jobs && t < S_GIVE_UP_MS; t++) {
        uint64_t now = t + S_T0;
        s_sim_complete(rl, cfg, p, fl, &inflight, now, &rt, out, &ok_window);
        s_sim_step_provider(p, &b, t);
        uint64_t retry;
        while (inflight < cfg->slots && (fresh > 0 || rt.n > 0)) {
            int from_retry = rt.n > 0 ? s_sim_retry_take(&rt, now) : 0;
            if (!from_retry && fresh == 0)
                break;
            if (!lq_rl_admit(rl, now, cfg->est_tokens, &retry)) {
                if (from_retry)
                    rt.due[rt.n++] = now; /* back in line (room: it was just taken) */
                break;
            }
            if (!from_retry)
                fresh--;
            s_sim_flight_t *f = &fl[inflight++];
            s_sim_decide(p, &b, t, cfg->used_tokens, f);
            f->sent = now;
            f->due = now + (f->status == 429 && cfg->latency_ms > 5 ? 5 : cfg->latency_ms);
            out->requests++;
        }
        if (cfg->trace && t % 100 == 0) {
            s_sim_sample(rl, cfg, p, t, ok_window, out->n429);
            ok_window = 0;
        }
    }
    out->wall_ms = t;
    out->lost = cfg->jobs - out->done;
    lq_rl_pace_t pace;
    lq_rl_pace(rl, t + S_T0, &pace);
    out->final_pace_rps = pace.rpm / 60.0;
    lq_rl_export(rl, out->exported, sizeof out->exported);
    lq_rl_destroy(&rl);
    free(fl);
    free(rt.due);
}
