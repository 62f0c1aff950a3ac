/* ratelimit: see ratelimit.h. */
#include "ratelimit.h"

#include "../common/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LQ_RL_SLOTS 10         /* delivered-rate window: 10 x 100 ms */
#define LQ_RL_SLOT_MS 100
#define LQ_RL_INITIAL_WINDOW 32.0
#define LQ_RL_WINDOW_DOUBLING_MS 50
#define LQ_RL_MAX_WINDOW 1e9
#define LQ_RL_MAX_RPS 1e7 /* learned rates stop growing here */
#define LQ_RL_MAX_MS (7LL * 86400LL * 1000LL) /* longest pause or reset believed */
#define LQ_RL_MAX_COUNT 1000000000000LL      /* largest token/request count believed */

static uint64_t s_delay_ms(double need);
#define LQ_RL_DECREASE_GAP_MS 200
#define LQ_RL_HEADER_MARGIN 0.97
#define LQ_RL_CUT 0.9          /* first 429: rough estimate */
#define LQ_RL_CUT_STEADY 0.95  /* later 429s: measured at overload */
#define LQ_RL_GROWTH 0.01 /* per 100 ms without a 429 */

struct lq_rl {
    lq_rl_config_t cfg;
    /* buckets: tokens available now and when they were last refilled */
    double req_tokens, tok_tokens;
    uint64_t refilled_ms;
    uint64_t created_ms;
    /* adaptive state */
    double learned_rps; /* from 429s, 0 = none */
    double header_rps;  /* from x-ratelimit-limit-requests, 0 = none */
    double header_tps;  /* from x-ratelimit-limit-tokens, 0 = none */
    double window;
    int64_t inflight;
    uint64_t pause_until_ms;
    uint64_t last_decrease_ms, last_growth_ms;
    int ramping;    /* after the first 429: grow fast until the next one */
    int long_pause; /* the current/last pause is long enough to skew rates */
    int slow_probe; /* the provider pauses us for long: probe gently */
    uint64_t window_full_ms; /* last time admit() was refused by the window */
    uint32_t ok_slots[LQ_RL_SLOTS];
    uint64_t slot_epoch; /* index of the current 100 ms slot */
    int64_t n429, nok, nerr;
};

lq_rl_t *lq_rl_new(const lq_rl_config_t *cfg, uint64_t now_ms)
{
    lq_rl_t *rl = xcalloc(1, sizeof *rl);
    rl->cfg = *cfg;
    rl->window = LQ_RL_INITIAL_WINDOW;
    rl->refilled_ms = now_ms;
    rl->created_ms = now_ms;
    rl->last_growth_ms = now_ms;
    rl->slot_epoch = now_ms / LQ_RL_SLOT_MS;
    rl->req_tokens = 1;
    rl->tok_tokens = cfg->tpm > 0 ? cfg->tpm / 60.0 : 0;
    return rl;
}

void lq_rl_destroy(lq_rl_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* The request rate (per second) in force now; 0 = unlimited. */
static double s_req_rate(const lq_rl_t *rl)
{
    double r = 0;
    if (rl->cfg.rpm > 0)
        r = rl->cfg.rpm / 60.0;
    if (rl->header_rps > 0 && (r == 0 || rl->header_rps < r))
        r = rl->header_rps;
    if (rl->learned_rps > 0 && (r == 0 || rl->learned_rps < r))
        r = rl->learned_rps;
    return r;
}

static double s_tok_rate(const lq_rl_t *rl)
{
    double r = rl->cfg.tpm > 0 ? rl->cfg.tpm / 60.0 : 0;
    if (rl->header_tps > 0 && (r == 0 || rl->header_tps < r))
        r = rl->header_tps;
    return r;
}

/* Bucket sizes: a twentieth of a second of requests (at least one), one
 * second of tokens (at least one job's worth is allowed by going negative). */
static double s_req_cap(double rate)
{
    return rate / 20.0 > 1.0 ? rate / 20.0 : 1.0;
}

static void s_roll_slots(lq_rl_t *rl, uint64_t now_ms)
{
    uint64_t epoch = now_ms / LQ_RL_SLOT_MS;
    if (epoch <= rl->slot_epoch)
        return;
    uint64_t gap = epoch - rl->slot_epoch;
    for (uint64_t i = 1; i <= gap && i <= LQ_RL_SLOTS; i++)
        rl->ok_slots[(rl->slot_epoch + i) % LQ_RL_SLOTS] = 0;
    rl->slot_epoch = epoch;
}

static double s_ok_rps(lq_rl_t *rl, uint64_t now_ms)
{
    s_roll_slots(rl, now_ms);
    uint64_t sum = 0;
    for (int i = 0; i < LQ_RL_SLOTS; i++)
        sum += rl->ok_slots[i];
    return (double)sum * 1000.0 / (LQ_RL_SLOTS * LQ_RL_SLOT_MS);
}

static void s_refill(lq_rl_t *rl, uint64_t now_ms)
{
    if (now_ms <= rl->refilled_ms)
        return;
    double dt = (double)(now_ms - rl->refilled_ms) / 1000.0;
    rl->refilled_ms = now_ms;
    double rr = s_req_rate(rl);
    if (rr > 0) {
        rl->req_tokens += rr * dt;
        if (rl->req_tokens > s_req_cap(rr))
            rl->req_tokens = s_req_cap(rr);
    }
    double tr = s_tok_rate(rl);
    if (tr > 0) {
        rl->tok_tokens += tr * dt;
        if (rl->tok_tokens > tr)
            rl->tok_tokens = tr;
    }
    /* additive growth of a learned rate while no 429 arrives (and not
     * while paused: nothing is learned then). A provider that answers 429s
     * with long pauses makes each probe expensive: probe 10x slower. */
    if (rl->learned_rps > 0) {
        while (now_ms - rl->last_growth_ms >= LQ_RL_SLOT_MS) {
            rl->last_growth_ms += LQ_RL_SLOT_MS;
            if (rl->last_growth_ms < rl->pause_until_ms)
                continue;
            if (rl->ramping)
                rl->learned_rps *= 1.5;
            else if (rl->last_growth_ms > rl->last_decrease_ms + 300)
                rl->learned_rps *= 1.0 + (rl->slow_probe ? LQ_RL_GROWTH / 10 : LQ_RL_GROWTH);
            /* a ramp with no 429 for minutes would reach +inf (fuzz_ratelimit) */
            if (rl->learned_rps > LQ_RL_MAX_RPS)
                rl->learned_rps = LQ_RL_MAX_RPS;
        }
    } else {
        rl->last_growth_ms = now_ms;
    }
}

int lq_rl_admit(lq_rl_t *rl, uint64_t now_ms, int64_t est_tokens, uint64_t *retry_ms)
{
    s_refill(rl, now_ms);
    *retry_ms = 1;
    if (now_ms < rl->pause_until_ms) {
        *retry_ms = rl->pause_until_ms - now_ms;
        return 0;
    }
    /* The window only matters until the provider's limit is known (then the
     * rate governs): it keeps the first moments from being a blast. */
    int rate_known = rl->learned_rps > 0 || (rl->header_rps > 0 && rl->cfg.use_headers);
    if (!rate_known && (double)rl->inflight >= rl->window) {
        if (!rl->window_full_ms || now_ms - rl->window_full_ms >= LQ_RL_WINDOW_DOUBLING_MS) {
            /* slow start by the clock, not by answers: LLM answers take
             * seconds, and doubling per answer would take minutes */
            if (rl->window_full_ms && rl->window < LQ_RL_MAX_WINDOW / 2)
                rl->window *= 2;
            rl->window_full_ms = now_ms;
        }
        *retry_ms = 5; /* a result will come; this is just a backstop */
        return 0;
    }
    double rr = s_req_rate(rl);
    if (rr > 0 && rl->req_tokens < 1.0) {
        double need = (1.0 - rl->req_tokens) / rr * 1000.0;
        *retry_ms = s_delay_ms(need);
        return 0;
    }
    double tr = s_tok_rate(rl);
    if (tr > 0 && rl->tok_tokens < 0) {
        double need = -rl->tok_tokens / tr * 1000.0;
        *retry_ms = s_delay_ms(need);
        return 0;
    }
    if (rr > 0)
        rl->req_tokens -= 1.0;
    if (tr > 0)
        rl->tok_tokens -= (double)(est_tokens > 0 ? est_tokens : 0);
    rl->inflight++;
    return 1;
}

/* Successes per second over the last 300 ms (over the limiter's age, at
 * least 100 ms, while it is younger). Right after we sent faster than the
 * provider allows, this is the provider's rate. */
static double s_delivered(lq_rl_t *rl, uint64_t now_ms)
{
    s_roll_slots(rl, now_ms);
    uint64_t sum = 0;
    uint64_t age = now_ms - rl->created_ms;
    if (age < 400) { /* young: everything so far, current slot included */
        for (uint64_t i = 0; i < LQ_RL_SLOTS; i++)
            sum += rl->ok_slots[i];
        return (double)sum * 1000.0 / (age > 100 ? (double)age : 100.0);
    }
    /* the last three complete slots */
    for (uint64_t i = 1; i <= 3; i++)
        sum += rl->ok_slots[(rl->slot_epoch + LQ_RL_SLOTS - i) % LQ_RL_SLOTS];
    double span = 300.0;
    return (double)sum * 1000.0 / span;
}

/* Multiplicative decrease on a 429 (at most once per 200 ms). The first
 * one (from "unlimited") only gives a rough rate and starts a ramp that
 * grows 50% per 100 ms until the next 429 measures the provider's rate. */
static void s_decrease(lq_rl_t *rl, uint64_t now_ms)
{
    if (rl->last_decrease_ms && now_ms - rl->last_decrease_ms < LQ_RL_DECREASE_GAP_MS)
        return;
    rl->last_decrease_ms = now_ms;
    double delivered = s_delivered(rl, now_ms);
    if (rl->learned_rps == 0) {
        rl->learned_rps = delivered * LQ_RL_CUT;
        rl->ramping = 1;
    } else {
        double base = rl->ramping || delivered < rl->learned_rps ? delivered : rl->learned_rps;
        /* never more than halve at once: a quiet spell (a pause, a slow
         * upstream) must not be taken for the provider's rate */
        if (base < rl->learned_rps / 2)
            base = rl->learned_rps / 2;
        rl->learned_rps = base * (rl->slow_probe ? LQ_RL_CUT : LQ_RL_CUT_STEADY);
        rl->ramping = 0;
    }
    if (rl->learned_rps < 1.0)
        rl->learned_rps = 1.0;
    if (rl->req_tokens > 0)
        rl->req_tokens = 0;
}

/* A delay in whole ms for admit(): at least 1, at most LQ_RL_MAX_MS (a
 * bucket driven far below zero by huge reported usage must not overflow
 * the conversion). Can't fail. */
static uint64_t s_delay_ms(double need)
{
    return need < 1 ? 1 : need > (double)LQ_RL_MAX_MS ? (uint64_t)LQ_RL_MAX_MS : (uint64_t)ceil(need);
}

/* Clamps a value a worker reported (any int64 reaches us: from a hostile
 * worker, or from an upstream's headers and usage through an honest one)
 * to [-1, max], so no later arithmetic overflows. Can't fail. */
static int64_t s_sane(int64_t v, int64_t max)
{
    return v < -1 ? -1 : v > max ? max : v;
}

/* The result with every field clamped: durations to 7 days, counts to
 * LQ_RL_MAX_COUNT. Can't fail. */
static lq_rl_result_t s_sane_result(const lq_rl_result_t *in)
{
    lq_rl_result_t r = *in;
    r.retry_after_ms = s_sane(r.retry_after_ms, LQ_RL_MAX_MS);
    r.reset_requests_ms = s_sane(r.reset_requests_ms, LQ_RL_MAX_MS);
    r.reset_tokens_ms = s_sane(r.reset_tokens_ms, LQ_RL_MAX_MS);
    r.est_tokens = s_sane(r.est_tokens, LQ_RL_MAX_COUNT);
    r.used_tokens = s_sane(r.used_tokens, LQ_RL_MAX_COUNT);
    r.limit_requests = s_sane(r.limit_requests, LQ_RL_MAX_COUNT);
    r.limit_tokens = s_sane(r.limit_tokens, LQ_RL_MAX_COUNT);
    r.remaining_requests = s_sane(r.remaining_requests, LQ_RL_MAX_COUNT);
    r.remaining_tokens = s_sane(r.remaining_tokens, LQ_RL_MAX_COUNT);
    return r;
}

void lq_rl_on_result(lq_rl_t *rl, uint64_t now_ms, const lq_rl_result_t *res_in)
{
    lq_rl_result_t sane = s_sane_result(res_in);
    const lq_rl_result_t *res = &sane;
    if (rl->inflight > 0)
        rl->inflight--;
    s_refill(rl, now_ms);
    if (res->used_tokens >= 0 && s_tok_rate(rl) > 0)
        rl->tok_tokens += (double)(res->est_tokens - res->used_tokens);
    if (rl->cfg.use_headers) {
        if (res->limit_requests > 0)
            rl->header_rps = (double)res->limit_requests / 60.0 * LQ_RL_HEADER_MARGIN;
        if (res->limit_tokens > 0)
            rl->header_tps = (double)res->limit_tokens / 60.0 * LQ_RL_HEADER_MARGIN;
        if (res->remaining_requests == 0 && res->reset_requests_ms > 0 &&
            now_ms + (uint64_t)res->reset_requests_ms > rl->pause_until_ms)
            rl->pause_until_ms = now_ms + (uint64_t)res->reset_requests_ms;
        if (res->remaining_tokens == 0 && res->reset_tokens_ms > 0 &&
            now_ms + (uint64_t)res->reset_tokens_ms > rl->pause_until_ms)
            rl->pause_until_ms = now_ms + (uint64_t)res->reset_tokens_ms;
    }
    if (res->status == 429) {
        rl->n429++;
        /* A provider that publishes its limit is paced by it; only guess
         * from 429s when it does not. A 429 that comes during or just after
         * a Retry-After pause says nothing new (the pause was the reaction),
         * and the successes measured across a pause would be too low. */
        int recently_paused = rl->long_pause && now_ms < rl->pause_until_ms + 300;
        if (rl->header_rps == 0 || !rl->cfg.use_headers) {
            if (!recently_paused)
                s_decrease(rl, now_ms);
            else if (rl->learned_rps > 0 && now_ms - rl->last_decrease_ms >= 1000) {
                /* sent too fast right after a pause: halve, no measurement */
                rl->last_decrease_ms = now_ms;
                rl->learned_rps = rl->learned_rps / 2 > 1.0 ? rl->learned_rps / 2 : 1.0;
                rl->ramping = 0;
            }
        }
        if (res->retry_after_ms >= 250)
            rl->slow_probe = 1;
        if (res->retry_after_ms > 0 && now_ms + (uint64_t)res->retry_after_ms > rl->pause_until_ms) {
            rl->pause_until_ms = now_ms + (uint64_t)res->retry_after_ms;
            rl->long_pause = res->retry_after_ms >= 250;
        }
        return;
    }
    if (res->status >= 200 && res->status < 300) {
        rl->nok++;
        s_roll_slots(rl, now_ms);
        rl->ok_slots[rl->slot_epoch % LQ_RL_SLOTS]++;
        /* grow only while the window is what limits us (it was full
         * within the last second): one per success, twice per round trip */
        if (rl->window_full_ms && now_ms - rl->window_full_ms < 1000)
            rl->window += 1.0;
        if (rl->window > LQ_RL_MAX_WINDOW)
            rl->window = LQ_RL_MAX_WINDOW;
    } else {
        rl->nerr++;
    }
}

void lq_rl_on_lost(lq_rl_t *rl)
{
    if (rl->inflight > 0)
        rl->inflight--;
}

void lq_rl_stats(lq_rl_t *rl, uint64_t now_ms, lq_rl_stats_t *out)
{
    s_refill(rl, now_ms);
    memset(out, 0, sizeof *out);
    out->rate_limit = s_req_rate(rl);
    out->learned_rps = rl->header_rps > 0 ? rl->header_rps : rl->learned_rps;
    out->ok_rps = s_ok_rps(rl, now_ms);
    out->window = rl->window;
    out->inflight = rl->inflight;
    out->n429 = rl->n429;
    out->nok = rl->nok;
    out->nerr = rl->nerr;
    out->paused_ms = now_ms < rl->pause_until_ms ? (int64_t)(rl->pause_until_ms - now_ms) : 0;
}

int lq_rl_parse(const char *spec, lq_rl_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->use_headers = 1;
    char buf[256];
    if (strlen(spec) >= sizeof buf)
        return -1; /* never parse a silently cut spec */
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        long long v;
        if (lq_parse_ll(eq + 1, 1, 1000000000000LL, &v) < 0)
            return -1;
        if (strcmp(tok, "rpm") == 0)
            cfg->rpm = (double)v;
        else if (strcmp(tok, "tpm") == 0)
            cfg->tpm = (double)v;
        else
            return -1;
    }
    return 0;
}
