/* ratelimit: see ratelimit.h. */
#include "ratelimit.h"

#include "../common/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SLOTS 10 /* rate windows: 10 x 100 ms */
#define S_SLOT_MS 100
#define S_INITIAL_WINDOW 32.0
#define S_WINDOW_DOUBLING_MS 50
#define S_MAX_WINDOW 1e9
#define S_HEADER_MARGIN 0.97
#define S_CUT_FIRST 0.9   /* first 429: a rough estimate, then a ramp */
#define S_CUT 0.95        /* later 429s: measured at overload */
#define S_SETTLE_MS 300   /* no growth this long after a cut */
#define S_GENTLE_STEPS 5  /* then 1% per step this many steps ... */
#define S_GROWTH 0.01     /* ... then +1% more per step */
#define S_GROWTH_MAX 0.25 /* per step */
#define S_SATURATED 0.8   /* grow only while sending >= 80% of the rate */
#define S_PROBE_PAUSE_MS 250 /* pauses this long are probed */
#define S_PROBE_FIRST_MS 50
#define S_PROBE_MAX_GAP_MS 4000
#define S_COLD_OK 8          /* successes needed before a 429 measures */
#define S_COLD_AGE_MS 2000   /* ... or this age */
#define S_COLD_GAP_MS 25     /* first back-off of a cold 429, doubling */
#define S_COLD_MAX_GAP_MS 100
#define S_COLD_MIN_WINDOW 8.0
#define S_MIN_RPS 0.5
#define S_EARLY_RETRY_MS 250 /* a job's wait once Retry-After proved pessimistic */
#define S_MIN_SHARE 1e-3

struct lq_rl {
    lq_rl_config_t cfg;
    /* buckets: what is available now and when they were last refilled */
    double req_tokens, tok_tokens;
    uint64_t refilled_ms, created_ms;
    /* what is known about the provider */
    double learned_rps; /* from 429s, 0 = none */
    double header_rps;  /* from the limit headers, 0 = none */
    double header_tps;
    double tok_ratio; /* real usage / estimate, smoothed; 1 until measured */
    int ramping;      /* after the first measured 429: +50% per 100 ms */
    uint64_t last_cut_ms, last_growth_ms;
    /* pauses: [pause_start_ms, pause_until_ms); probing ones send single
     * jobs at probe_at_ms, the gap doubling */
    uint64_t pause_start_ms, pause_until_ms, probe_at_ms, probe_gap_ms;
    int pause_probe;
    uint64_t cold_gap_ms;
    int64_t ra_early; /* pauses a probe ended before half their Retry-After */
    /* the window until a rate is known */
    double window;
    uint64_t window_full_ms;
    int64_t bad_at_double; /* 429s + errors when it last doubled */
    int64_t inflight;
    /* successes and admissions per 100 ms slot */
    uint32_t ok_slots[S_SLOTS], sent_slots[S_SLOTS];
    uint64_t slot_epoch;
    uint64_t first_ok_ms;
    int64_t n429, nok, nerr;
    /* the fleet: this broker's part of every limit (1 alone), when admit()
     * was last asked, and the measured cuts so far */
    double share;
    uint64_t asked_ms;
    uint64_t ncuts;
    /* the fleet's rate at the last measurement (cut, adopted or imported
     * rate), 0 = none: a learned rate grown past the share while the other
     * brokers sent less than theirs says nothing of the fleet's */
    double fleet_rps;
};

lq_rl_t *lq_rl_new(const lq_rl_config_t *cfg, uint64_t now_ms)
{
    lq_rl_t *rl = xcalloc(1, sizeof *rl);
    rl->cfg = *cfg;
    rl->window = S_INITIAL_WINDOW;
    rl->refilled_ms = now_ms;
    rl->created_ms = now_ms;
    rl->last_growth_ms = now_ms;
    rl->slot_epoch = now_ms / S_SLOT_MS;
    rl->req_tokens = 1;
    rl->tok_tokens = cfg->tpm > 0 ? cfg->tpm / 60.0 : 0;
    rl->tok_ratio = 1.0;
    rl->share = 1.0;
    return rl;
}

void lq_rl_destroy(lq_rl_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* ---- rates in force ---- */

/* The request rate (per second) in force now and its source; 0 = none. */

/* A delay in whole ms for admit(): at least 1, at most LQ_RL_MAX_MS (a bucket
 * driven far below zero by huge reported usage must not overflow the
 * conversion). Can't fail. */
static uint64_t s_delay_ms(double need)
{
    return need < 1 ? 1 : need > (double)LQ_RL_MAX_MS ? (uint64_t)LQ_RL_MAX_MS : (uint64_t)ceil(need);
}
static double s_req_rate_src(const lq_rl_t *rl, lq_rl_source_t *src)
{
    double r = 0;
    lq_rl_source_t s = LQ_RL_OBSERVED;
    if (rl->cfg.rpm > 0) {
        r = rl->cfg.rpm / 60.0 * rl->share;
        s = LQ_RL_CONFIGURED;
    }
    double h = rl->header_rps * rl->share;
    if (h > 0 && (r == 0 || h < r)) {
        r = h;
        s = LQ_RL_HEADERS;
    }
    if (rl->learned_rps > 0 && (r == 0 || rl->learned_rps < r)) {
        r = rl->learned_rps;
        s = LQ_RL_LEARNED;
    }
    if (src)
        *src = s;
    return r;
}

static double s_req_rate(const lq_rl_t *rl)
{
    return s_req_rate_src(rl, NULL);
}

/* The token rate (per second) in force and its source; 0 = none. */
static double s_tok_rate_src(const lq_rl_t *rl, lq_rl_source_t *src)
{
    double r = rl->cfg.tpm > 0 ? rl->cfg.tpm / 60.0 * rl->share : 0;
    lq_rl_source_t s = r > 0 ? LQ_RL_CONFIGURED : LQ_RL_OBSERVED;
    double h = rl->header_tps * rl->share;
    if (h > 0 && (r == 0 || h < r)) {
        r = h;
        s = LQ_RL_HEADERS;
    }
    if (src)
        *src = s;
    return r;
}

/* Request bucket size: a twentieth of a second (at least one). */
static double s_req_cap(double rate)
{
    return rate / 20.0 > 1.0 ? rate / 20.0 : 1.0;
}

/* ---- rate windows ---- */

/* Moves the slot ring to now, zeroing the slots skipped. Can't fail. */
static void s_roll_slots(lq_rl_t *rl, uint64_t now_ms)
{
    uint64_t epoch = now_ms / S_SLOT_MS;
    if (epoch <= rl->slot_epoch)
        return;
    uint64_t gap = epoch - rl->slot_epoch;
    for (uint64_t i = 1; i <= gap && i <= S_SLOTS; i++) {
        rl->ok_slots[(rl->slot_epoch + i) % S_SLOTS] = 0;
        rl->sent_slots[(rl->slot_epoch + i) % S_SLOTS] = 0;
    }
    rl->slot_epoch = epoch;
}

/* Successes per second over the last second. */
static double s_ok_rps(lq_rl_t *rl, uint64_t now_ms)
{
    s_roll_slots(rl, now_ms);
    uint64_t sum = 0;
    for (int i = 0; i < S_SLOTS; i++)
        sum += rl->ok_slots[i];
    return (double)sum * 1000.0 / (S_SLOTS * S_SLOT_MS);
}

/* Admissions per second over the last three complete slots. */
static double s_sent_rps(lq_rl_t *rl, uint64_t now_ms)
{
    s_roll_slots(rl, now_ms);
    uint64_t sum = 0;
    for (uint64_t i = 1; i <= 3; i++)
        sum += rl->sent_slots[(rl->slot_epoch + S_SLOTS - i) % S_SLOTS];
    return (double)sum * 1000.0 / (3 * S_SLOT_MS);
}

/* Milliseconds of [from, to) spent paused (the last pause only). */
static double s_paused_within(const lq_rl_t *rl, uint64_t from, uint64_t to)
{
    uint64_t a = rl->pause_start_ms > from ? rl->pause_start_ms : from;
    uint64_t e = rl->pause_until_ms < to ? rl->pause_until_ms : to;
    return e > a ? (double)(e - a) : 0.0;
}

/* Per second over the last 300 ms and the current slot, time spent paused
 * left out (over the time since the first success while that is short),
 * of the slots given: successes or admissions. Right after sending faster
 * than the provider allows, the rate of successes is the provider's. */
static double s_recent(lq_rl_t *rl, uint64_t now_ms, const uint32_t *slots)
{
    s_roll_slots(rl, now_ms);
    uint64_t sum = 0;
    uint64_t age = now_ms - (rl->first_ok_ms ? rl->first_ok_ms : rl->created_ms);
    if (age < 400) { /* young: everything so far */
        for (uint64_t i = 0; i < S_SLOTS; i++)
            sum += slots[i];
        return (double)sum * 1000.0 / (age > 100 ? (double)age : 100.0);
    }
    for (uint64_t i = 0; i <= 3; i++)
        sum += slots[(rl->slot_epoch + S_SLOTS - i) % S_SLOTS];
    uint64_t from = rl->slot_epoch * S_SLOT_MS - 300;
    double span = (double)(now_ms - from) - s_paused_within(rl, from, now_ms);
    return (double)sum * 1000.0 / (span > 100.0 ? span : 100.0);
}

static double s_delivered(lq_rl_t *rl, uint64_t now_ms)
{
    return s_recent(rl, now_ms, rl->ok_slots);
}

/* ---- growth ---- */

/* Grows a learned rate by the steps of 100 ms since the last growth:
 * +50% while ramping, else after S_SETTLE_MS 1% per step, faster the
 * longer no 429 came; never while paused, and only while the upstream is
 * sent at least S_SATURATED of the rate (else the estimate is untested). */
static void s_grow(lq_rl_t *rl, uint64_t now_ms)
{
    if (rl->learned_rps <= 0) {
        rl->last_growth_ms = now_ms;
        return;
    }
    if (now_ms - rl->last_growth_ms < S_SLOT_MS)
        return;
    int saturated = s_sent_rps(rl, now_ms) >= S_SATURATED * rl->learned_rps;
    while (now_ms - rl->last_growth_ms >= S_SLOT_MS) {
        rl->last_growth_ms += S_SLOT_MS;
        if (rl->last_growth_ms < rl->pause_until_ms || !saturated)
            continue;
        if (rl->ramping) {
            rl->learned_rps *= 1.5;
            continue;
        }
        if (rl->last_growth_ms < rl->last_cut_ms + S_SETTLE_MS)
            continue;
        uint64_t steps = (rl->last_growth_ms - rl->last_cut_ms - S_SETTLE_MS) / S_SLOT_MS;
        double g = steps < S_GENTLE_STEPS ? S_GROWTH
                                          : S_GROWTH * (double)(steps - S_GENTLE_STEPS + 2);
        rl->learned_rps *= 1.0 + (g < S_GROWTH_MAX ? g : S_GROWTH_MAX);
    }
    /* a ramp with no 429 for minutes would reach +inf */
    if (rl->learned_rps > LQ_RL_MAX_RPS)
        rl->learned_rps = LQ_RL_MAX_RPS;
}

/* Refills the buckets up to now and grows a learned rate. Can't fail. */
static void s_refill(lq_rl_t *rl, uint64_t now_ms)
{
    if (now_ms <= rl->refilled_ms)
        return;
    s_grow(rl, now_ms);
    double dt = (double)(now_ms - rl->refilled_ms) / 1000.0;
    rl->refilled_ms = now_ms;
    double rr = s_req_rate(rl);
    if (rr > 0) {
        rl->req_tokens += rr * dt;
        if (rl->req_tokens > s_req_cap(rr))
            rl->req_tokens = s_req_cap(rr);
    }
    double tr = s_tok_rate_src(rl, NULL);
    if (tr > 0) {
        rl->tok_tokens += tr * dt;
        if (rl->tok_tokens > tr)
            rl->tok_tokens = tr;
    }
}

/* ---- admission ---- */

/* While paused: 1 if a probe may go now, else 0 with *retry_ms set. */
static int s_paused_admit(lq_rl_t *rl, uint64_t now_ms, uint64_t *retry_ms)
{
    if (rl->pause_probe && now_ms >= rl->probe_at_ms) {
        rl->probe_gap_ms *= 2;
        if (rl->probe_gap_ms > S_PROBE_MAX_GAP_MS)
            rl->probe_gap_ms = S_PROBE_MAX_GAP_MS;
        rl->probe_at_ms = now_ms + rl->probe_gap_ms;
        return 1;
    }
    uint64_t until = rl->pause_until_ms;
    if (rl->pause_probe && rl->probe_at_ms < until)
        until = rl->probe_at_ms;
    *retry_ms = until - now_ms;
    return 0;
}

/* The window while no rate is known: 1 if it has room, else 0 (and it
 * doubles by the clock while full, unless a 429 or an error came back since
 * it last doubled: LLM answers take seconds, and doubling per answer (or
 * only after a success) would take several round trips to fill thousands
 * of slots; a provider that refuses answers its 429s long before that). */
static int s_window_admit(lq_rl_t *rl, uint64_t now_ms, uint64_t *retry_ms)
{
    int rate_known = rl->learned_rps > 0 || (rl->header_rps > 0 && rl->cfg.use_headers);
    if (rate_known || (double)rl->inflight < rl->window * rl->share)
        return 1;
    if (!rl->window_full_ms || now_ms - rl->window_full_ms >= S_WINDOW_DOUBLING_MS) {
        int64_t bad = rl->n429 + rl->nerr;
        if (rl->window_full_ms && rl->window < S_MAX_WINDOW / 2 && bad == rl->bad_at_double)
            rl->window *= 2;
        rl->bad_at_double = bad;
        rl->window_full_ms = now_ms;
    }
    *retry_ms = 5; /* a result will come; this is just a backstop */
    return 0;
}

int lq_rl_admit(lq_rl_t *rl, uint64_t now_ms, int64_t est_tokens, uint64_t *retry_ms)
{
    s_refill(rl, now_ms);
    *retry_ms = 1;
    rl->asked_ms = now_ms ? now_ms : 1;
    int probe = 0;
    if (now_ms < rl->pause_until_ms) {
        if (!s_paused_admit(rl, now_ms, retry_ms))
            return 0;
        probe = 1;
    }
    if (!probe && !s_window_admit(rl, now_ms, retry_ms))
        return 0;
    double rr = s_req_rate(rl);
    if (!probe && rr > 0 && rl->req_tokens < 1.0) {
        double need = (1.0 - rl->req_tokens) / rr * 1000.0;
        *retry_ms = s_delay_ms(need);
        return 0;
    }
    double tr = s_tok_rate_src(rl, NULL);
    if (tr > 0 && rl->tok_tokens < 0) {
        double need = -rl->tok_tokens / tr * 1000.0;
        *retry_ms = s_delay_ms(need);
        return 0;
    }
    if (rr > 0)
        rl->req_tokens -= 1.0;
    if (tr > 0)
        rl->tok_tokens -= (double)(est_tokens > 0 ? est_tokens : 0) * rl->tok_ratio;
    rl->inflight++;
    s_roll_slots(rl, now_ms);
    rl->sent_slots[rl->slot_epoch % S_SLOTS]++;
    return 1;
}

/* ---- reactions ---- */

/* Pauses the upstream until now + ms (never shortens a pause). Pauses from
 * a Retry-After of S_PROBE_PAUSE_MS or more are probed. */
static void s_pause(lq_rl_t *rl, uint64_t now_ms, int64_t ms, int from_retry_after)
{
    if (ms <= 0 || now_ms + (uint64_t)ms <= rl->pause_until_ms)
        return;
    if (now_ms >= rl->pause_until_ms) { /* a new pause */
        rl->pause_start_ms = now_ms;
        rl->probe_gap_ms = S_PROBE_FIRST_MS;
        rl->probe_at_ms = now_ms + S_PROBE_FIRST_MS;
        rl->pause_probe = 0;
    }
    rl->pause_until_ms = now_ms + (uint64_t)ms;
    if (from_retry_after && ms >= S_PROBE_PAUSE_MS)
        rl->pause_probe = 1;
}

/* 1 if a job sent at sent_ms went out during the current/last pause. */
static int s_sent_in_pause(const lq_rl_t *rl, uint64_t sent_ms)
{
    return sent_ms && rl->pause_start_ms && sent_ms >= rl->pause_start_ms &&
           sent_ms < rl->pause_until_ms;
}

/* Multiplicative decrease on a 429 that measures: the first gives a rough
 * rate and starts a ramp, later ones cut to 95% of the rate delivered
 * (never below half at once: a quiet spell is not the provider's rate). */
static void s_cut(lq_rl_t *rl, uint64_t now_ms)
{
    rl->last_cut_ms = now_ms;
    rl->ncuts++;
    double delivered = s_delivered(rl, now_ms);
    if (rl->learned_rps == 0) {
        /* the successes may still be few (the window was ramping): half
         * of what was sent, up to 1.5 times the successes, is a floor for
         * the ramp to start from */
        double sent = s_recent(rl, now_ms, rl->sent_slots) / 2;
        if (sent > 1.5 * delivered)
            sent = 1.5 * delivered;
        rl->learned_rps = delivered * S_CUT_FIRST > sent ? delivered * S_CUT_FIRST : sent;
        rl->ramping = 1;
    } else {
        double base = rl->ramping || delivered < rl->learned_rps ? delivered : rl->learned_rps;
        if (base < rl->learned_rps / 2)
            base = rl->learned_rps / 2;
        rl->learned_rps = base * S_CUT;
        rl->ramping = 0;
    }
    if (rl->learned_rps < S_MIN_RPS)
        rl->learned_rps = S_MIN_RPS;
    rl->fleet_rps = rl->learned_rps / rl->share;
    if (rl->req_tokens > 0)
        rl->req_tokens = 0;
}

/* Reacts to a 429: a cut once per congestion event (a job sent before the
 * last cut, or a probe sent during a pause, belongs to an event already
 * answered), a short back-off while too little is known to measure (a
 * cold start), and the pause its Retry-After asks for. */
static void s_on_429(lq_rl_t *rl, uint64_t now_ms, const lq_rl_result_t *res)
{
    rl->n429++;
    int cold = rl->learned_rps == 0 && rl->nok < S_COLD_OK &&
               now_ms - rl->created_ms < S_COLD_AGE_MS;
    int same_event = res->sent_ms
                         ? res->sent_ms < rl->last_cut_ms || s_sent_in_pause(rl, res->sent_ms)
                         : rl->last_cut_ms && now_ms - rl->last_cut_ms < 200;
    if (cold) {
        rl->cold_gap_ms = rl->cold_gap_ms ? rl->cold_gap_ms * 2 : S_COLD_GAP_MS;
        if (rl->cold_gap_ms > S_COLD_MAX_GAP_MS)
            rl->cold_gap_ms = S_COLD_MAX_GAP_MS;
        if (!same_event) {
            s_pause(rl, now_ms, (int64_t)rl->cold_gap_ms, 0);
            rl->window = rl->window / 2 > S_COLD_MIN_WINDOW ? rl->window / 2 : S_COLD_MIN_WINDOW;
        }
        rl->last_cut_ms = now_ms;
    } else if (!same_event) {
        s_cut(rl, now_ms);
    }
    if (res->retry_after_ms > 0) {
        if (s_sent_in_pause(rl, res->sent_ms) && now_ms < rl->pause_until_ms)
            rl->probe_at_ms = now_ms + rl->probe_gap_ms; /* a probe failed */
        s_pause(rl, now_ms, res->retry_after_ms, 1);
    }
}

/* Takes in the provider's rate-limit headers. */
static void s_on_headers(lq_rl_t *rl, uint64_t now_ms, const lq_rl_result_t *res)
{
    /* 97% of the limit, or all of it while more than half of it remains
     * (the provider's bucket is not being drained) */
    if (res->limit_requests > 0)
        rl->header_rps = (double)res->limit_requests / 60.0 *
                         (res->remaining_requests * 2 > res->limit_requests ? 1.0
                                                                             : S_HEADER_MARGIN);
    if (res->limit_tokens > 0)
        rl->header_tps = (double)res->limit_tokens / 60.0 *
                         (res->remaining_tokens * 2 > res->limit_tokens ? 1.0 : S_HEADER_MARGIN);
    if (res->remaining_requests == 0 && res->reset_requests_ms > 0)
        s_pause(rl, now_ms, res->reset_requests_ms, 0);
    if (res->remaining_tokens == 0 && res->reset_tokens_ms > 0)
        s_pause(rl, now_ms, res->reset_tokens_ms, 0);
}

/* Corrects the token bucket by the real usage and learns the ratio of
 * usage to estimate. */
static void s_on_usage(lq_rl_t *rl, const lq_rl_result_t *res)
{
    if (res->used_tokens < 0 || res->est_tokens <= 0)
        return;
    if (s_tok_rate_src(rl, NULL) > 0)
        rl->tok_tokens += (double)res->est_tokens * rl->tok_ratio - (double)res->used_tokens;
    double r = (double)res->used_tokens / (double)res->est_tokens;
    r = r < 0.05 ? 0.05 : r > 20 ? 20 : r;
    rl->tok_ratio = 0.9 * rl->tok_ratio + 0.1 * r;
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
    s_on_usage(rl, res);
    if (rl->cfg.use_headers)
        s_on_headers(rl, now_ms, res);
    if (res->status == 429) {
        s_on_429(rl, now_ms, res);
        return;
    }
    if (res->status < 200 || res->status >= 300) {
        rl->nerr++;
        return;
    }
    rl->nok++;
    rl->cold_gap_ms = 0;
    if (!rl->first_ok_ms)
        rl->first_ok_ms = now_ms;
    s_roll_slots(rl, now_ms);
    rl->ok_slots[rl->slot_epoch % S_SLOTS]++;
    /* a probe got through: the provider takes requests again */
    if (rl->pause_probe && s_sent_in_pause(rl, res->sent_ms) && now_ms < rl->pause_until_ms) {
        if (now_ms - rl->pause_start_ms < (rl->pause_until_ms - rl->pause_start_ms) / 2)
            rl->ra_early++;
        rl->pause_until_ms = now_ms;
    }
    /* the window grows only while it is what limits us (it was full within
     * the last second): one per success */
    if (rl->window_full_ms && now_ms - rl->window_full_ms < 1000 && rl->window < S_MAX_WINDOW)
        rl->window += 1.0;
}

int64_t lq_rl_retry_delay(lq_rl_t *rl, uint64_t now_ms, int64_t retry_after_ms)
{
    (void)now_ms;
    if (retry_after_ms > S_EARLY_RETRY_MS && rl->ra_early > 0)
        return S_EARLY_RETRY_MS;
    return retry_after_ms;
}

void lq_rl_on_lost(lq_rl_t *rl)
{
    if (rl->inflight > 0)
        rl->inflight--;
}

/* ---- reporting and persistence ---- */

void lq_rl_stats(lq_rl_t *rl, uint64_t now_ms, lq_rl_stats_t *out)
{
    s_refill(rl, now_ms);
    memset(out, 0, sizeof *out);
    out->rate_limit = s_req_rate(rl);
    out->learned_rps = rl->header_rps > 0 ? rl->header_rps * rl->share : rl->learned_rps;
    out->ok_rps = s_ok_rps(rl, now_ms);
    out->window = rl->window;
    out->inflight = rl->inflight;
    out->n429 = rl->n429;
    out->nok = rl->nok;
    out->nerr = rl->nerr;
    out->paused_ms = now_ms < rl->pause_until_ms ? (int64_t)(rl->pause_until_ms - now_ms) : 0;
}

void lq_rl_pace(lq_rl_t *rl, uint64_t now_ms, lq_rl_pace_t *out)
{
    s_refill(rl, now_ms);
    memset(out, 0, sizeof *out);
    out->observed_rpm = s_ok_rps(rl, now_ms) * 60.0;
    out->rpm = s_req_rate_src(rl, &out->source) * 60.0;
    if (out->source == LQ_RL_OBSERVED)
        out->rpm = out->observed_rpm;
    out->tpm = s_tok_rate_src(rl, &out->tpm_source) * 60.0;
    out->paused_ms = now_ms < rl->pause_until_ms ? (int64_t)(rl->pause_until_ms - now_ms) : 0;
}

const char *lq_rl_source_name(lq_rl_source_t s)
{
    switch (s) {
    case LQ_RL_CONFIGURED:
        return "configured";
    case LQ_RL_HEADERS:
        return "headers";
    case LQ_RL_LEARNED:
        return "learned";
    case LQ_RL_OBSERVED:
    default:
        return "observed";
    }
}

/* The fleet's learned rate: learned / share; while the share is below 1,
 * at most the last measured fleet rate or this broker's own rate, if more
 * (its rate may have grown past its share while the others sent less). */
static double s_fleet_learned(const lq_rl_t *rl)
{
    double r = rl->learned_rps / rl->share;
    if (rl->share < 1.0 && rl->fleet_rps > 0) {
        double cap = rl->fleet_rps > rl->learned_rps ? rl->fleet_rps : rl->learned_rps;
        if (r > cap)
            r = cap;
    }
    return r;
}

int lq_rl_export(const lq_rl_t *rl, char *out, size_t n)
{
    if (n == 0)
        return 0;
    out[0] = '\0';
    if (rl->learned_rps <= 0 && rl->header_rps <= 0 && rl->header_tps <= 0 &&
        fabs(rl->tok_ratio - 1.0) < 1e-3)
        return 0;
    snprintf(out, n, "v1 rps=%.3f hrps=%.3f htps=%.3f ratio=%.4f", s_fleet_learned(rl),
             rl->header_rps, rl->header_tps, rl->tok_ratio);
    return 1;
}

int lq_rl_import(lq_rl_t *rl, uint64_t now_ms, const char *s)
{
    double rps, hrps, htps, ratio;
    int used = -1;
    if (!s || sscanf(s, "v1 rps=%lf hrps=%lf htps=%lf ratio=%lf%n", &rps, &hrps, &htps, &ratio,
                     &used) != 4 ||
        used < 0 || s[used] != '\0')
        return -1;
    if (!isfinite(rps) || !isfinite(hrps) || !isfinite(htps) || !isfinite(ratio) || rps < 0 ||
        hrps < 0 || htps < 0 || rps > 1e9 || hrps > 1e9 || htps > 1e12 || ratio < 0.05 ||
        ratio > 20)
        return -1;
    rl->fleet_rps = rps; /* Redis keeps the fleet's rate */
    rps *= rl->share;
    rl->learned_rps = rps > 0 && rps < S_MIN_RPS ? S_MIN_RPS : rps;
    if (rl->cfg.use_headers) {
        rl->header_rps = hrps;
        rl->header_tps = htps;
    }
    rl->tok_ratio = ratio;
    rl->ramping = 0;
    rl->last_cut_ms = now_ms; /* probe upward gently from what was learned */
    rl->last_growth_ms = now_ms;
    return 0;
}

/* ---- the fleet ---- */

/* Clamps the buckets to the caps of the rates in force (after these
 * shrank). Can't fail. */
static void s_clamp_buckets(lq_rl_t *rl)
{
    double rr = s_req_rate(rl);
    if (rr > 0 && rl->req_tokens > s_req_cap(rr))
        rl->req_tokens = s_req_cap(rr);
    double tr = s_tok_rate_src(rl, NULL);
    if (tr > 0 && rl->tok_tokens > tr)
        rl->tok_tokens = tr;
}

void lq_rl_set_share(lq_rl_t *rl, double share, uint64_t now_ms)
{
    if (!isfinite(share) || share > 1.0)
        share = 1.0;
    if (share < S_MIN_SHARE)
        share = S_MIN_SHARE;
    if (share == rl->share)
        return;
    s_refill(rl, now_ms); /* what accrued so far, at the old share */
    if (rl->learned_rps > 0) {
        double was = rl->learned_rps;
        rl->learned_rps *= share / rl->share;
        /* a larger share: up to the fleet's measured rate at it, or the
         * rate this broker reached already, not more */
        double cap = rl->fleet_rps * share > was ? rl->fleet_rps * share : was;
        if (share > rl->share && rl->fleet_rps > 0 && rl->learned_rps > cap)
            rl->learned_rps = cap;
        if (rl->learned_rps < S_MIN_RPS)
            rl->learned_rps = S_MIN_RPS;
        if (rl->learned_rps > LQ_RL_MAX_RPS)
            rl->learned_rps = LQ_RL_MAX_RPS;
    }
    rl->share = share;
    s_clamp_buckets(rl);
}

double lq_rl_share(const lq_rl_t *rl)
{
    return rl->share;
}

int lq_rl_adopt(lq_rl_t *rl, uint64_t now_ms, double fleet_rps)
{
    if (!isfinite(fleet_rps) || fleet_rps <= 0)
        return 0;
    double mine = fleet_rps * rl->share;
    if (mine < S_MIN_RPS)
        mine = S_MIN_RPS;
    if (mine > LQ_RL_MAX_RPS)
        mine = LQ_RL_MAX_RPS;
    if (rl->learned_rps > 0 && mine >= rl->learned_rps)
        return 0;
    if (mine < rl->learned_rps / 2) /* never more than halved at once, as by a cut */
        mine = rl->learned_rps / 2;
    s_refill(rl, now_ms);
    rl->learned_rps = mine;
    rl->fleet_rps = mine / rl->share;
    rl->ramping = 0;
    rl->last_cut_ms = now_ms; /* settle, then probe upward gently, as after a cut */
    rl->last_growth_ms = now_ms;
    s_clamp_buckets(rl);
    return 1;
}

uint64_t lq_rl_cuts(const lq_rl_t *rl)
{
    return rl->ncuts;
}

int lq_rl_demand(const lq_rl_t *rl, uint64_t now_ms, uint64_t within_ms)
{
    return rl->inflight > 0 || (rl->asked_ms && now_ms - rl->asked_ms < within_ms);
}

int lq_rl_parse(const char *spec, lq_rl_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->use_headers = 1;
    char buf[256];
    if (strlen(spec) >= sizeof buf)
        return -1;
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
