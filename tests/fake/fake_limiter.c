/* fake_limiter: see fake_limiter.h. */
#include "fake_limiter.h"

#include "common/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct lq_fake_lim {
    lq_fake_cfg_t cfg;
    double rate, base_rate; /* requests/s now and before any step */
    double burst, tokens;
    uint64_t bucket_us;
    double tburst, ttokens; /* --token-limit bucket */
    uint64_t tbucket_us;
    uint64_t first_us; /* first request (--cold-ms, --rate-steps) */
};

/* Returns the bucket size for a request rate. */
static double s_burst_for(const lq_fake_lim_t *l, double rate)
{
    return l->cfg.burst > 0 ? l->cfg.burst : fmax(1.0, rate / 20.0);
}

lq_fake_lim_t *lq_fake_lim_new(const lq_fake_cfg_t *cfg)
{
    lq_fake_lim_t *l = xcalloc(1, sizeof *l);
    l->cfg = *cfg;
    l->rate = l->base_rate = cfg->rate_limit;
    l->burst = s_burst_for(l, l->rate);
    l->tburst = cfg->token_limit / 20.0;
    lq_fake_lim_reset(l);
    return l;
}

void lq_fake_lim_destroy(lq_fake_lim_t **l)
{
    if (!l || !*l)
        return;
    free(*l);
    *l = NULL;
}

void lq_fake_lim_reset(lq_fake_lim_t *l)
{
    l->tokens = l->burst;
    l->ttokens = l->tburst;
    l->bucket_us = l->tbucket_us = lq_mono_us();
    l->first_us = 0;
}

int lq_fake_lim_counts_tokens(const lq_fake_lim_t *l)
{
    return l->cfg.token_limit > 0;
}

/* Adds what the buckets earned since their last refill, up to their size,
 * and applies --rate-steps (the rate in force since the first request). */
static void s_refill(lq_fake_lim_t *l)
{
    uint64_t now = lq_mono_us();
    l->tokens = fmin(l->burst, l->tokens + (double)(now - l->bucket_us) * l->rate / 1e6);
    l->bucket_us = now;
    l->ttokens = fmin(l->tburst, l->ttokens + (double)(now - l->tbucket_us) *
                                                  l->cfg.token_limit / 1e6);
    l->tbucket_us = now;
    double rate = l->base_rate;
    for (int i = 0; l->first_us && i < l->cfg.nsteps; i++)
        if (now - l->first_us >= (uint64_t)l->cfg.step_ms[i] * 1000)
            rate = l->cfg.step_rate[i];
    if (rate != l->rate) {
        l->rate = rate;
        l->burst = s_burst_for(l, rate);
        l->tokens = fmin(l->tokens, l->burst);
    }
}

lq_fake_lim_verdict_t lq_fake_lim_take(lq_fake_lim_t *l, double tokens, uint64_t *wait_ms)
{
    uint64_t now = lq_mono_us();
    if (!l->first_us)
        l->first_us = now;
    if (l->cfg.cold_ms > 0 && now - l->first_us < (uint64_t)l->cfg.cold_ms * 1000)
        return LQ_FAKE_LIM_COLD;
    s_refill(l);
    if (l->rate > 0 && l->tokens < 1.0) {
        double ms = ceil((1.0 - l->tokens) / l->rate * 1000.0);
        *wait_ms = ms < 1 ? 1 : (uint64_t)ms;
        return LQ_FAKE_LIM_REQUESTS;
    }
    double need = fmin(tokens, l->tburst); /* a job larger than the bucket waits for a full one */
    if (l->cfg.token_limit > 0 && l->ttokens < need) {
        double ms = ceil((need - l->ttokens) / l->cfg.token_limit * 1000.0);
        *wait_ms = ms < 1 ? 1 : (uint64_t)ms;
        return LQ_FAKE_LIM_TOKENS;
    }
    if (l->rate > 0)
        l->tokens -= 1.0;
    if (l->cfg.token_limit > 0)
        l->ttokens -= tokens;
    return LQ_FAKE_LIM_OK;
}

/* See fake_limiter.h. */
void lq_fake_duration(uint64_t ms, char *out, size_t n)
{
    if (ms < 1000) {
        snprintf(out, n, "%llums", (unsigned long long)ms);
    } else if (ms < 60000) {
        int len = snprintf(out, n, "%llu.%03llu", (unsigned long long)(ms / 1000),
                           (unsigned long long)(ms % 1000));
        while (len > 0 && out[len - 1] == '0')
            len--;
        if (len > 0 && out[len - 1] == '.')
            len--;
        snprintf(out + len, n - (size_t)len, "s");
    } else {
        snprintf(out, n, "%llum%llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms % 60000 / 1000));
    }
}

/* Formats the wall-clock time now + ms as RFC 3339 with milliseconds. */
static void s_rfc3339(uint64_t ms, char *out, size_t n)
{
    int64_t t = lq_wall_ms() + (int64_t)ms;
    time_t tt = (time_t)(t / 1000);
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(t % 1000));
}

/* Appends one family (requests or tokens) of rate-limit headers in the
 * configured style: limit per minute, remaining on that scale, reset. */
static void s_family(const lq_fake_lim_t *l, lq_fake_buf_t *h, const char *what, double rate,
                     double tokens, double burst)
{
    double limit = round(rate * 60.0);
    double remaining = fmax(0, floor(tokens / burst * limit));
    uint64_t reset_ms = (uint64_t)ceil(fmax(0, burst - tokens) / rate * 1000.0);
    char reset[48];
    if (l->cfg.header_style == LQ_FAKE_HDR_ANTHROPIC) {
        s_rfc3339(reset_ms, reset, sizeof reset);
        lq_fake_buf_printf(h,
                           "anthropic-ratelimit-%s-limit: %.0f\r\n"
                           "anthropic-ratelimit-%s-remaining: %.0f\r\n"
                           "anthropic-ratelimit-%s-reset: %s\r\n",
                           what, limit, what, remaining, what, reset);
        return;
    }
    lq_fake_duration(reset_ms, reset, sizeof reset);
    lq_fake_buf_printf(h,
                       "x-ratelimit-limit-%s: %.0f\r\n"
                       "x-ratelimit-remaining-%s: %.0f\r\n"
                       "x-ratelimit-reset-%s: %s\r\n",
                       what, limit, what, remaining, what, reset);
}

void lq_fake_lim_headers(lq_fake_lim_t *l, lq_fake_buf_t *h)
{
    if (l->cfg.header_style == LQ_FAKE_HDR_NONE)
        return;
    s_refill(l);
    if (l->rate > 0)
        s_family(l, h, "requests", l->rate, l->tokens, l->burst);
    if (l->cfg.token_limit > 0)
        s_family(l, h, "tokens", l->cfg.token_limit, l->ttokens, l->tburst);
}

void lq_fake_lim_retry_after(const lq_fake_lim_t *l, uint64_t wait_ms, lq_fake_buf_t *h)
{
    if (l->cfg.retry_after_fixed_ms > 0)
        wait_ms = (uint64_t)l->cfg.retry_after_fixed_ms;
    if (l->cfg.retry_after_format == LQ_FAKE_RA_SECONDS) {
        lq_fake_buf_printf(h, "retry-after: %llu\r\n",
                           (unsigned long long)((wait_ms + 999) / 1000));
        if (l->cfg.header_style == LQ_FAKE_HDR_OPENAI && l->cfg.retry_after_fixed_ms <= 0)
            lq_fake_buf_printf(h, "retry-after-ms: %llu\r\n", (unsigned long long)wait_ms);
    } else if (l->cfg.retry_after_format == LQ_FAKE_RA_DATE) {
        char date[40];
        lq_fake_http_date((lq_wall_ms() + (int64_t)wait_ms + 999) / 1000, date, sizeof date);
        lq_fake_buf_printf(h, "retry-after: %s\r\n", date);
    }
}

void lq_fake_http_date(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}
