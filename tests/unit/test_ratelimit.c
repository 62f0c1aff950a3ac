/* Unit tests for broker/ratelimit.c against simulated providers: the
 * older tests below run their own token bucket; the tests of issue 12 run
 * the shapes of tests/sim/rl_sim.c (through the public header only). The
 * clock is simulated, so the figures are deterministic and do not depend on
 * the machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/ratelimit.h"
#include "tests/sim/rl_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double rate, burst, tokens;
    uint64_t last;
} s_provider_t;

/* 1 if the provider accepts a request at now_ms. */
static int s_provider_take(s_provider_t *p, uint64_t now_ms)
{
    p->tokens += p->rate * (double)(now_ms - p->last) / 1000.0;
    if (p->tokens > p->burst)
        p->tokens = p->burst;
    p->last = now_ms;
    if (p->tokens >= 1.0) {
        p->tokens -= 1.0;
        return 1;
    }
    return 0;
}

typedef struct {
    uint64_t wall_ms;
    int64_t n429;
    double rate_after_drop;
} s_run_t;

/* Runs n jobs through a limiter against the provider with a fixed latency,
 * at most `slots` in flight (the workers' concurrency). Headers: when
 * with_headers, each response carries x-ratelimit-limit-requests. */
static double s_drop_at_ms = 0, s_drop_to = 0;
static int64_t s_retry_after_ms = 5; /* what the provider's 429s say */

static s_run_t s_simulate(lq_rl_config_t cfg, double rate, int n, int slots, uint64_t latency,
                          int with_headers)
{
    s_provider_t p = {rate, rate / 20 > 1 ? rate / 20 : 1, rate / 20 > 1 ? rate / 20 : 1, 0};
    lq_rl_t *rl = lq_rl_new(&cfg, 0);
    enum { MAXQ = 4096 };
    uint64_t due[MAXQ], sent[MAXQ];
    int status[MAXQ];
    int inflight = 0, done = 0, pending = n;
    s_run_t r = {0, 0};
    for (uint64_t now = 1; done < n && now < 3600000; now++) { /* sent_ms 0 = unknown */
        /* complete due requests */
        for (int i = 0; i < inflight;) {
            if (due[i] <= now) {
                lq_rl_result_t res = {status[i], status[i] == 429 ? s_retry_after_ms : -1, 10, 10,
                                      with_headers ? (int64_t)(rate * 60) : -1, -1, -1, -1, -1, -1,
                                      sent[i]};
                lq_rl_on_result(rl, now, &res);
                if (status[i] == 429) {
                    r.n429++;
                    pending++; /* retried */
                } else {
                    done++;
                }
                due[i] = due[inflight - 1];
                sent[i] = sent[inflight - 1];
                status[i] = status[inflight - 1];
                inflight--;
            } else {
                i++;
            }
        }
        if (s_drop_at_ms > 0 && (double)now == s_drop_at_ms) {
            p.rate = s_drop_to;
            p.burst = s_drop_to / 20 > 1 ? s_drop_to / 20 : 1;
            if (p.tokens > p.burst)
                p.tokens = p.burst;
        }
        if (s_drop_at_ms > 0 && (double)now == s_drop_at_ms + 3000) {
            lq_rl_stats_t st;
            lq_rl_stats(rl, now, &st);
            r.rate_after_drop = st.rate_limit;
        }
        uint64_t retry;
        while (pending > 0 && inflight < slots && lq_rl_admit(rl, now, 10, &retry)) {
            status[inflight] = s_provider_take(&p, now) ? 200 : 429;
            /* a 429 comes back at once; an answer takes the latency */
            due[inflight] = now + (status[inflight] == 429 && latency > 5 ? 5 : latency);
            sent[inflight] = now;
            inflight++;
            pending--;
        }
        r.wall_ms = now;
        if (getenv("RL_TRACE") && now % 1000 == 0) {
            lq_rl_stats_t st;
            lq_rl_stats(rl, now, &st);
            print_message("t=%llu rate=%.1f ok=%.1f win=%.1f 429=%lld\n", (unsigned long long)now,
                          st.rate_limit, st.ok_rps, st.window, (long long)st.n429);
        }
    }
    lq_rl_destroy(&rl);
    return r;
}

static void test_configured_budget_no_429_and_near_budget(void **state)
{
    (void)state;
    lq_rl_config_t cfg;
    assert_int_equal(lq_rl_parse("rpm=6000", &cfg), 0); /* 100/s, provider allows 120/s */
    s_run_t r = s_simulate(cfg, 120, 2000, 500, 50, 0);
    assert_int_equal(r.n429, 0);
    double ideal = 2000.0 / 100.0 * 1000.0;
    assert_true(r.wall_ms <= ideal * 1.05);
    assert_true(r.wall_ms >= ideal * 0.95);
}

static void test_learns_limit_without_headers(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    for (int latency = 0; latency <= 200; latency += 100) {
        s_run_t r = s_simulate(cfg, 200, 5000, 400, (uint64_t)latency, 0);
        double ideal = 5000.0 / 200.0 * 1000.0;
        print_message("no headers, latency %d ms: wall %.2fx ideal, 429s %.2f%%\n", latency,
                      r.wall_ms / ideal, 100.0 * (double)r.n429 / (5000.0 + (double)r.n429));
        assert_true(r.wall_ms <= ideal * 1.1);
        assert_true((double)r.n429 <= 0.05 * 5000);
    }
}

/* Providers whose Retry-After is whole seconds (or an HTTP date): each 429
 * pauses the upstream for a second; the rate must not collapse. */
static void test_long_retry_after_does_not_collapse_the_rate(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    s_retry_after_ms = 1000;
    s_run_t r = s_simulate(cfg, 200, 5000, 400, 50, 0);
    s_retry_after_ms = 5;
    double ideal = 5000.0 / 200.0 * 1000.0;
    print_message("Retry-After 1 s: wall %.2fx ideal, 429s %lld\n", r.wall_ms / ideal,
                  (long long)r.n429);
    assert_true(r.wall_ms <= ideal * 1.25);
    assert_true((double)r.n429 <= 0.05 * 5000);
}

static void test_uses_provider_headers(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    s_run_t r = s_simulate(cfg, 200, 5000, 400, 20, 1);
    double ideal = 5000.0 / 200.0 * 1000.0;
    print_message("headers: wall %.2fx ideal, 429s %lld\n", r.wall_ms / ideal, (long long)r.n429);
    assert_true(r.wall_ms <= ideal * 1.1);
    assert_true((double)r.n429 <= 0.05 * 5000);
}

static void test_follows_a_limit_that_drops(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    s_drop_at_ms = 10000;
    s_drop_to = 100;
    s_run_t r = s_simulate(cfg, 200, 5000, 400, 50, 0);
    s_drop_at_ms = 0;
    print_message("limit 200/s -> 100/s at 10 s: enforced %.1f/s 3 s later, 429s %lld\n",
                  r.rate_after_drop, (long long)r.n429);
    assert_true(r.rate_after_drop > 85 && r.rate_after_drop < 110);
    /* 2,000 jobs at 200/s, then 3,000 at 100/s: ideal 40 s */
    assert_true(r.wall_ms <= 40000 * 1.1);
}

static void test_retry_after_pauses_upstream(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    uint64_t retry;
    assert_int_equal(lq_rl_admit(rl, 1000, 0, &retry), 1);
    lq_rl_result_t res = {429, 3000, 0, -1, -1, -1, -1, -1, -1, -1, 1000};
    lq_rl_on_result(rl, 1000, &res);
    /* paused; single probes go out at 50, 150, 350 ms ... */
    assert_int_equal(lq_rl_admit(rl, 1010, 0, &retry), 0);
    assert_int_equal(retry, 40);
    assert_int_equal(lq_rl_admit(rl, 1050, 0, &retry), 1);
    assert_int_equal(lq_rl_admit(rl, 1051, 0, &retry), 0);
    /* the probe is refused too: the pause holds */
    lq_rl_result_t probe = {429, 3000, 0, -1, -1, -1, -1, -1, -1, -1, 1050};
    lq_rl_on_result(rl, 1055, &probe);
    assert_int_equal(lq_rl_admit(rl, 1100, 0, &retry), 0);
    assert_int_equal(retry, 55);
    lq_rl_stats_t st;
    lq_rl_stats(rl, 1100, &st);
    assert_true(st.paused_ms > 2900);
    /* a short Retry-After (< 250 ms) is not probed */
    lq_rl_t *rl2 = lq_rl_new(&cfg, 1000);
    assert_int_equal(lq_rl_admit(rl2, 1000, 0, &retry), 1);
    lq_rl_result_t shortra = {429, 200, 0, -1, -1, -1, -1, -1, -1, -1, 1000};
    lq_rl_on_result(rl2, 1000, &shortra);
    assert_int_equal(lq_rl_admit(rl2, 1100, 0, &retry), 0);
    assert_int_equal(retry, 100);
    assert_int_equal(lq_rl_admit(rl2, 1200, 0, &retry), 1);
    lq_rl_destroy(&rl2);
    lq_rl_stats(rl, 4100, &st);
    assert_int_equal(st.n429, 2);
    lq_rl_destroy(&rl);
    assert_null(rl);
}

static void test_token_budget_is_corrected_by_usage(void **state)
{
    (void)state;
    lq_rl_config_t cfg;
    assert_int_equal(lq_rl_parse("tpm=6000", &cfg), 0); /* 100 tokens/s */
    lq_rl_t *rl = lq_rl_new(&cfg, 0);
    uint64_t retry;
    assert_int_equal(lq_rl_admit(rl, 0, 100, &retry), 1); /* bucket starts at 1 s worth */
    assert_int_equal(lq_rl_admit(rl, 0, 100, &retry), 1); /* may go negative once */
    assert_int_equal(lq_rl_admit(rl, 0, 100, &retry), 0);
    assert_true(retry >= 900 && retry <= 1100);
    /* the first job really used 10 tokens: 90 come back */
    lq_rl_result_t res = {200, -1, 100, 10, -1, -1, -1, -1, -1, -1};
    lq_rl_on_result(rl, 0, &res);
    assert_int_equal(lq_rl_admit(rl, 100, 100, &retry), 1);
    lq_rl_destroy(&rl);
}

static void test_parse(void **state)
{
    (void)state;
    lq_rl_config_t cfg;
    assert_int_equal(lq_rl_parse("rpm=10,tpm=2000", &cfg), 0);
    assert_true(cfg.rpm == 10 && cfg.tpm == 2000);
    assert_int_equal(lq_rl_parse("rpm=x", &cfg), -1);
    assert_int_equal(lq_rl_parse("rps=1", &cfg), -1);
    assert_int_equal(lq_rl_parse("rpm", &cfg), -1);
    assert_int_equal(lq_rl_parse("rpm=0", &cfg), -1);
}


/* ---- issue 12: one test per limiter shape, through tests/sim/rl_sim.c ---- */

/* Runs n jobs (400 slots, 20 ms answers) against p; prints the figures. */
static lq_sim_result_t s_shape(const char *what, const lq_sim_provider_t *p, int n, int64_t est,
                               int64_t used, const char *import, double *x_ideal, double *pct429)
{
    lq_sim_cfg_t cfg = {n, 400, 20, est, used, {0, 0, 1}, import, NULL, NULL};
    lq_sim_result_t r;
    lq_sim_run(p, &cfg, &r);
    double ideal = lq_sim_ideal_ms(p, n, used);
    *x_ideal = (double)r.wall_ms / ideal;
    *pct429 = 100.0 * (double)r.n429 / (double)r.requests;
    print_message("%s: %.3fx ideal, %.2f%% 429s, lost %lld\n", what, *x_ideal, *pct429,
                  (long long)r.lost);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.done, n);
    return r;
}

/* Shape 1: bucket 500/s, burst 50, 429 + "Retry-After: 1", no headers. */
static void test_shape_bucket_constant_retry_after(void **state)
{
    (void)state;
    lq_sim_provider_t p = {500, 50, 0, 0, 1000, 0, 0, {{0, 0}}, 0};
    double x, pct;
    s_shape("shape 1", &p, 5000, 10, 10, NULL, &x, &pct);
    assert_true(x <= 1.1);
    assert_true(pct <= 2.0);
}

/* Shapes 2 and 3: the provider's headers give the limit. */
static void test_shape_headers(void **state)
{
    (void)state;
    lq_sim_provider_t p = {500, 0, 0, 0, -1, 1, 0, {{0, 0}}, 0};
    double x, pct;
    s_shape("shape 2/3", &p, 5000, 10, 10, NULL, &x, &pct);
    assert_true(x <= 1.05);
    assert_true(pct <= 0.5);
}

/* Shape 4: a token limit binds first; the estimate is 60% of the usage. */
static void test_shape_tokens_bind_first(void **state)
{
    (void)state;
    lq_sim_provider_t p = {500, 0, 250000, 0, -1, 1, 0, {{0, 0}}, 0};
    double x, pct;
    s_shape("shape 4, headers", &p, 5000, 600, 1000, NULL, &x, &pct);
    assert_true(x <= 1.1);
    p.headers = 0;
    s_shape("shape 4, 429s only", &p, 5000, 600, 1000, NULL, &x, &pct);
    assert_true(x <= 1.1);
}

/* Shape 5: 429s without headers for the first second; the rate is never
 * cut below half of what the provider then sustains, and at most 0.5 s is
 * lost. */
static void s_cold_trace(void *arg, const lq_sim_sample_t *s)
{
    double *min_pace = arg;
    if (s->t_ms >= 1300 && s->t_ms <= 3000 && s->pace_rps < *min_pace)
        *min_pace = s->pace_rps;
}

static void test_shape_cold_start(void **state)
{
    (void)state;
    lq_sim_provider_t p = {500, 0, 0, 0, -2, 0, 1000, {{0, 0}}, 0};
    double min_pace = 1e9;
    lq_sim_cfg_t cfg = {5000, 400, 20, 10, 10, {0, 0, 1}, NULL, s_cold_trace, &min_pace};
    lq_sim_result_t r;
    lq_sim_run(&p, &cfg, &r);
    double ideal = lq_sim_ideal_ms(&p, 5000, 10);
    print_message("shape 5: lost %.0f ms, lowest pace after the cold start %.0f/s\n",
                  (double)r.wall_ms - ideal, min_pace);
    assert_int_equal(r.lost, 0);
    assert_true((double)r.wall_ms - ideal <= 500);
    assert_true(min_pace >= 250);
    /* the old bug: four 429s, then one success, must not learn a tiny rate */
    lq_rl_config_t c = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&c, 1000);
    uint64_t retry;
    for (int i = 0; i < 5; i++)
        assert_int_equal(lq_rl_admit(rl, 1000, 0, &retry), 1);
    lq_rl_result_t no = {429, -1, 0, -1, -1, -1, -1, -1, -1, -1, 1000};
    for (int i = 0; i < 4; i++)
        lq_rl_on_result(rl, 1001, &no);
    lq_rl_result_t ok = {200, -1, 0, 10, -1, -1, -1, -1, -1, -1, 1000};
    lq_rl_on_result(rl, 1020, &ok);
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 1020, &pace);
    assert_int_not_equal(pace.source, LQ_RL_LEARNED);
    lq_rl_destroy(&rl);
}

/* Shape 6: the limit drops from 400/s to 200/s and rises again; the pace
 * follows within 3 s each way. */
typedef struct {
    double down_ms, up_ms;
} s_follow_t;

static void s_follow_trace(void *arg, const lq_sim_sample_t *s)
{
    s_follow_t *f = arg;
    if (s->t_ms >= 5000 && f->down_ms < 0 && s->pace_rps <= 200)
        f->down_ms = (double)s->t_ms - 5000;
    if (s->t_ms >= 12000 && f->up_ms < 0 && s->ok_rps >= 0.9 * 400)
        f->up_ms = (double)s->t_ms - 12000;
}

static void test_shape_limit_drops_and_rises(void **state)
{
    (void)state;
    lq_sim_provider_t p = {400, 0, 0, 0, -1, 0, 0, {{5000, 200}, {12000, 400}}, 2};
    s_follow_t f = {-1, -1};
    lq_sim_cfg_t cfg = {7000, 400, 20, 10, 10, {0, 0, 1}, NULL, s_follow_trace, &f};
    lq_sim_result_t r;
    lq_sim_run(&p, &cfg, &r);
    print_message("shape 6: followed down in %.1f s, up in %.1f s, %.3fx ideal\n",
                  f.down_ms / 1000, f.up_ms / 1000,
                  (double)r.wall_ms / lq_sim_ideal_ms(&p, 7000, 10));
    assert_int_equal(r.lost, 0);
    assert_true(f.down_ms >= 0 && f.down_ms <= 3000);
    assert_true(f.up_ms >= 0 && f.up_ms <= 3000);
}

/* Shape 7: two upstreams, two limiters, each at its own limit. */
static void test_shape_two_upstreams(void **state)
{
    (void)state;
    lq_sim_provider_t a = {500, 0, 0, 0, 1000, 0, 0, {{0, 0}}, 0};
    lq_sim_provider_t b = {100, 0, 0, 0, 1000, 0, 0, {{0, 0}}, 0};
    double x, pct;
    s_shape("shape 7, A 500/s", &a, 5000, 10, 10, NULL, &x, &pct);
    assert_true(x <= 1.1);
    s_shape("shape 7, B 100/s", &b, 1000, 10, 10, NULL, &x, &pct);
    assert_true(x <= 1.1);
}

/* A rate learned and never tested (the workers send less than it) does not
 * grow: an upstream that has never said no shows its observed rate. */
static void test_no_unbounded_estimate(void **state)
{
    (void)state;
    lq_rl_config_t c = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&c, 1000);
    uint64_t retry, now = 1000;
    /* 50 jobs/s for 10 s, never a 429 */
    for (; now < 11000; now += 20) {
        assert_int_equal(lq_rl_admit(rl, now, 0, &retry), 1);
        lq_rl_result_t ok = {200, -1, 0, 10, -1, -1, -1, -1, -1, -1, now};
        lq_rl_on_result(rl, now + 1, &ok);
    }
    lq_rl_pace_t pace;
    lq_rl_pace(rl, now, &pace);
    assert_int_equal(pace.source, LQ_RL_OBSERVED);
    assert_true(pace.rpm >= 40 * 60 && pace.rpm <= 60 * 60);
    assert_string_equal(lq_rl_source_name(pace.source), "observed");
    /* one 429 teaches a rate; 30 s at 50/s after it must not inflate it */
    lq_rl_result_t no = {429, -1, 0, -1, -1, -1, -1, -1, -1, -1, now};
    assert_int_equal(lq_rl_admit(rl, now, 0, &retry), 1);
    lq_rl_on_result(rl, now, &no);
    for (uint64_t end = now + 30000; now < end; now += 20) {
        if (lq_rl_admit(rl, now, 0, &retry)) {
            lq_rl_result_t ok = {200, -1, 0, 10, -1, -1, -1, -1, -1, -1, now};
            lq_rl_on_result(rl, now + 1, &ok);
        }
    }
    lq_rl_pace(rl, now, &pace);
    assert_int_equal(pace.source, LQ_RL_LEARNED);
    print_message("learned after 30 s below it: %.0f/min\n", pace.rpm);
    assert_true(pace.rpm <= 2 * 60 * 60);
    lq_rl_destroy(&rl);
}

/* Learned state goes out as a string and comes back; bad strings change
 * nothing. A restarted broker starts from what was learned. */
static void test_export_import(void **state)
{
    (void)state;
    lq_sim_provider_t p = {500, 50, 0, 0, 1000, 0, 0, {{0, 0}}, 0};
    double x1, x2, pct1, pct2;
    lq_sim_result_t r = s_shape("learning", &p, 3000, 10, 10, NULL, &x1, &pct1);
    assert_true(strncmp(r.exported, "v1 rps=", 7) == 0);
    lq_sim_result_t r2 = s_shape("restarted from it", &p, 3000, 10, 10, r.exported, &x2, &pct2);
    assert_true(r2.n429 <= r.n429);
    lq_rl_config_t c = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&c, 1000);
    char out[128];
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=nan hrps=0 htps=0 ratio=1"), -1);
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=5 hrps=0 htps=0 ratio=1 junk"), -1);
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=-5 hrps=0 htps=0 ratio=1"), -1);
    assert_int_equal(lq_rl_import(rl, 1000, "rps=5"), -1);
    assert_int_equal(lq_rl_import(rl, 1000, NULL), -1);
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 0);
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=100.000 hrps=0.000 htps=0.000 ratio=1.0000"),
                     0);
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 1000, &pace);
    assert_int_equal(pace.source, LQ_RL_LEARNED);
    assert_true(pace.rpm > 5999 && pace.rpm < 6001);
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 1);
    assert_string_equal(out, "v1 rps=100.000 hrps=0.000 htps=0.000 ratio=1.0000");
    lq_rl_destroy(&rl);
}

/* A probe that gets through ends a Retry-After pause early; then the jobs
 * answered 429 wait 250 ms instead of the whole Retry-After. */
static void test_probe_ends_pessimistic_pause(void **state)
{
    (void)state;
    lq_rl_config_t c = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&c, 1000);
    uint64_t retry;
    assert_int_equal(lq_rl_retry_delay(rl, 1000, 1000), 1000);
    assert_int_equal(lq_rl_admit(rl, 1000, 0, &retry), 1);
    lq_rl_result_t no = {429, 1000, 0, -1, -1, -1, -1, -1, -1, -1, 1000};
    lq_rl_on_result(rl, 1005, &no);
    assert_int_equal(lq_rl_admit(rl, 1010, 0, &retry), 0);
    assert_int_equal(retry, 45); /* the first probe, 50 ms into the pause */
    assert_int_equal(lq_rl_admit(rl, 1055, 0, &retry), 1);
    assert_int_equal(lq_rl_admit(rl, 1056, 0, &retry), 0); /* one probe at a time */
    lq_rl_result_t ok = {200, -1, 0, 10, -1, -1, -1, -1, -1, -1, 1055};
    lq_rl_on_result(rl, 1075, &ok);
    assert_int_equal(lq_rl_admit(rl, 1076, 0, &retry), 1); /* pause over */
    assert_int_equal(lq_rl_retry_delay(rl, 1076, 1000), 250);
    assert_int_equal(lq_rl_retry_delay(rl, 1076, 100), 100);
    assert_int_equal(lq_rl_retry_delay(rl, 1076, -1), -1);
    lq_rl_destroy(&rl);
}

/* Thousands of slots against a slow upstream: with nothing known, the
 * window doubles every 50 ms while it is full even before the first answer
 * (a 1 s upstream answers nothing for a second), so 5,000 jobs are in
 * flight within half a second; a 429 since the last doubling stops it. */
static void test_window_fills_before_the_first_answer(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 0);
    int64_t inflight = 0;
    uint64_t retry;
    uint64_t now = 1;
    for (; now <= 500 && inflight < 5000; now++)
        while (inflight < 5000 && lq_rl_admit(rl, now, 0, &retry))
            inflight++;
    assert_int_equal(inflight, 5000);
    assert_true(now <= 500);
    lq_rl_destroy(&rl);

    /* 429s keep coming back (one every 40 ms, as from a provider that
     * refuses everything): the window never doubles again */
    rl = lq_rl_new(&cfg, 0);
    inflight = 0;
    for (now = 1; now <= 120; now++)
        while (lq_rl_admit(rl, now, 0, &retry))
            inflight++;
    lq_rl_result_t r429 = {.status = 429, .retry_after_ms = -1, .used_tokens = -1,
                           .limit_requests = -1, .limit_tokens = -1, .remaining_requests = -1,
                           .remaining_tokens = -1, .reset_requests_ms = -1,
                           .reset_tokens_ms = -1, .sent_ms = 1};
    lq_rl_on_result(rl, now, &r429);
    inflight--;
    lq_rl_stats_t st;
    lq_rl_stats(rl, now, &st);
    double w = st.window;
    for (uint64_t end = now + 400; now < end; now++) {
        if (now % 40 == 0) {
            r429.sent_ms = now - 1;
            lq_rl_on_result(rl, now, &r429);
            inflight--;
        }
        while (lq_rl_admit(rl, now, 0, &retry))
            inflight++;
    }
    lq_rl_stats(rl, now, &st);
    assert_true(st.window <= w);
    lq_rl_destroy(&rl);
}

/* ---- several brokers: the share ---- */

/* Admits as many jobs as the limiters allow from t0 for ms, each answered
 * 200 at once; returns the count over all n limiters. */
static int64_t s_admit_for(lq_rl_t **rls, int n, uint64_t t0, uint64_t ms)
{
    int64_t admitted = 0;
    for (uint64_t now = t0; now < t0 + ms; now++)
        for (int i = 0; i < n; i++) {
            uint64_t retry;
            while (lq_rl_admit(rls[i], now, 0, &retry)) {
                lq_rl_result_t ok = {200, -1, 0, -1, -1, -1, -1, -1, -1, -1, now};
                lq_rl_on_result(rls[i], now, &ok);
                admitted++;
            }
        }
    return admitted;
}

/* Two brokers with the same --limit at share 1/2 each send, together, the
 * configured budget (at share 1 they would send twice it); the pace shown
 * is this broker's part; a share back at 1 restores the full budget. */
static void test_share_splits_configured_budget(void **state)
{
    (void)state;
    lq_rl_config_t cfg;
    assert_int_equal(lq_rl_parse("rpm=30000,tpm=600000", &cfg), 0); /* 500/s */
    lq_rl_t *rls[2] = {lq_rl_new(&cfg, 1000), lq_rl_new(&cfg, 1000)};
    assert_true(lq_rl_share(rls[0]) == 1.0);
    int64_t alone = s_admit_for(rls, 2, 1000, 10000);
    print_message("rpm=30000 on two brokers, share 1: %lld jobs in 10 s\n", (long long)alone);
    assert_true(alone >= 9900 && alone <= 10100); /* today: twice the budget */
    for (int i = 0; i < 2; i++)
        lq_rl_set_share(rls[i], 0.5, 11000);
    lq_rl_pace_t pace;
    lq_rl_pace(rls[0], 11000, &pace);
    assert_int_equal(pace.source, LQ_RL_CONFIGURED);
    assert_true(pace.rpm > 14999 && pace.rpm < 15001);
    assert_true(pace.tpm > 299999 && pace.tpm < 300001);
    int64_t shared = s_admit_for(rls, 2, 11000, 10000);
    print_message("rpm=30000 on two brokers, share 1/2: %lld jobs in 10 s\n", (long long)shared);
    assert_true(shared >= 4950 && shared <= 5050 + 2 * 13); /* + the buckets' bursts */
    lq_rl_set_share(rls[0], 1.0, 21000);
    lq_rl_pace(rls[0], 21000, &pace);
    assert_true(pace.rpm > 29999 && pace.rpm < 30001);
    /* out-of-range shares are clamped */
    lq_rl_set_share(rls[1], 7.0, 21000);
    assert_true(lq_rl_share(rls[1]) == 1.0);
    lq_rl_set_share(rls[1], 0.0, 21000);
    assert_true(lq_rl_share(rls[1]) > 0 && lq_rl_share(rls[1]) <= 0.001);
    lq_rl_destroy(&rls[0]);
    lq_rl_destroy(&rls[1]);
}

/* The provider's header limits are the fleet's: each broker paces at its
 * share of them. */
static void test_share_scales_header_limits(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    uint64_t retry;
    assert_int_equal(lq_rl_admit(rl, 1000, 10, &retry), 1);
    lq_rl_result_t ok = {200, -1, 10, 10, 6000, 600000, 6000, 600000, -1, -1, 1000};
    lq_rl_on_result(rl, 1001, &ok);
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 1001, &pace);
    assert_int_equal(pace.source, LQ_RL_HEADERS);
    assert_true(pace.rpm > 5999 && pace.rpm < 6001);
    lq_rl_set_share(rl, 1.0 / 3.0, 1002);
    lq_rl_pace(rl, 1002, &pace);
    assert_int_equal(pace.source, LQ_RL_HEADERS);
    assert_true(pace.rpm > 1999 && pace.rpm < 2001);
    assert_true(pace.tpm > 199999 && pace.tpm < 200001);
    char out[128];
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 1);
    assert_string_equal(out, "v1 rps=0.000 hrps=100.000 htps=10000.000 ratio=1.0000");
    lq_rl_destroy(&rl);
}

/* A learned rate is this broker's own: the share rescales it, and Redis
 * gets (and gives) the fleet's, learned / share. */
static void test_share_rescales_learned_rate(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    lq_rl_set_share(rl, 0.5, 1000);
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=200.000 hrps=0.000 htps=0.000 ratio=1.0000"),
                     0);
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 1000, &pace);
    assert_int_equal(pace.source, LQ_RL_LEARNED);
    assert_true(pace.rpm > 5999 && pace.rpm < 6001); /* 100/s: half the fleet's 200/s */
    char out[128];
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 1);
    assert_string_equal(out, "v1 rps=200.000 hrps=0.000 htps=0.000 ratio=1.0000");
    lq_rl_set_share(rl, 0.25, 1000); /* a broker joined */
    lq_rl_pace(rl, 1000, &pace);
    assert_true(pace.rpm > 2999 && pace.rpm < 3001);
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 1);
    assert_string_equal(out, "v1 rps=200.000 hrps=0.000 htps=0.000 ratio=1.0000");
    lq_rl_set_share(rl, 1.0, 1000); /* the others died */
    lq_rl_pace(rl, 1000, &pace);
    assert_true(pace.rpm > 11999 && pace.rpm < 12001);
    lq_rl_destroy(&rl);
}

/* A learned rate that grew past the share while the other brokers sent
 * less is not the fleet's: Redis gets the last measured fleet rate (or the
 * broker's own, if more), and a larger share raises it only that far. */
static void test_share_growth_past_the_share(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    lq_rl_set_share(rl, 0.5, 1000);
    assert_int_equal(lq_rl_import(rl, 1000, "v1 rps=200.000 hrps=0.000 htps=0.000 ratio=1.0000"),
                     0);
    s_admit_for(&rl, 1, 1000, 5000); /* saturated, no 429: it grows */
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 6000, &pace);
    double grown = pace.rpm / 60.0;
    print_message("learned at share 1/2 grew from 100/s to %.1f/s\n", grown);
    assert_true(grown > 150);
    char out[128];
    double rps = 0;
    assert_int_equal(lq_rl_export(rl, out, sizeof out), 1);
    assert_int_equal(sscanf(out, "v1 rps=%lf", &rps), 1);
    assert_true(rps < 2 * grown - 1); /* not learned / share */
    assert_true(rps >= (grown > 200 ? grown : 200) - 0.01);
    lq_rl_set_share(rl, 1.0, 6000); /* the other broker left */
    lq_rl_pace(rl, 6000, &pace);
    assert_true(pace.rpm / 60.0 <= (grown > 200 ? grown : 200) + 0.01);
    lq_rl_destroy(&rl);
}

/* A lower fleet rate learned elsewhere is taken; a higher one, or
 * garbage, is not. Cuts are counted, so they can be published. */
static void test_adopt_lower_fleet_rate(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    lq_rl_set_share(rl, 0.5, 1000);
    assert_int_equal(lq_rl_adopt(rl, 1000, 300.0), 1); /* nothing learned yet: 150/s */
    lq_rl_pace_t pace;
    lq_rl_pace(rl, 1000, &pace);
    assert_int_equal(pace.source, LQ_RL_LEARNED);
    assert_true(pace.rpm > 8999 && pace.rpm < 9001);
    assert_int_equal(lq_rl_adopt(rl, 1010, 400.0), 0);
    assert_int_equal(lq_rl_adopt(rl, 1010, 0.0), 0);
    assert_int_equal(lq_rl_adopt(rl, 1010, -1.0), 0);
    assert_int_equal(lq_rl_adopt(rl, 1010, 1.0 / 0.0), 0);
    assert_int_equal(lq_rl_adopt(rl, 1020, 200.0), 1);
    lq_rl_pace(rl, 1020, &pace);
    assert_true(pace.rpm > 5999 && pace.rpm < 6001);
    assert_int_equal(lq_rl_adopt(rl, 1030, 20.0), 1); /* at most halved at once */
    lq_rl_pace(rl, 1030, &pace);
    assert_true(pace.rpm > 2999 && pace.rpm < 3001);
    /* a 429 that measures cuts, and is counted */
    assert_int_equal(lq_rl_cuts(rl), 0);
    uint64_t retry, now = 1100;
    for (; now < 2100; now++)
        if (lq_rl_admit(rl, now, 0, &retry)) {
            lq_rl_result_t ok = {200, -1, 0, -1, -1, -1, -1, -1, -1, -1, now};
            lq_rl_on_result(rl, now, &ok);
        }
    assert_int_equal(lq_rl_admit(rl, now, 0, &retry) || lq_rl_admit(rl, now + 20, 0, &retry), 1);
    lq_rl_result_t no = {429, -1, 0, -1, -1, -1, -1, -1, -1, -1, now};
    lq_rl_on_result(rl, now + 21, &no);
    assert_int_equal(lq_rl_cuts(rl), 1);
    lq_rl_destroy(&rl);
}

/* Demand: jobs in flight, or admit() asked lately. */
static void test_demand(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {0, 0, 1};
    lq_rl_t *rl = lq_rl_new(&cfg, 1000);
    assert_int_equal(lq_rl_demand(rl, 1000, 1000), 0);
    uint64_t retry;
    assert_int_equal(lq_rl_admit(rl, 1000, 0, &retry), 1);
    assert_int_equal(lq_rl_demand(rl, 5000, 1000), 1); /* in flight */
    lq_rl_on_lost(rl);
    assert_int_equal(lq_rl_demand(rl, 1500, 1000), 1); /* asked lately */
    assert_int_equal(lq_rl_demand(rl, 2000, 1000), 0);
    lq_rl_destroy(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configured_budget_no_429_and_near_budget),
        cmocka_unit_test(test_learns_limit_without_headers),
        cmocka_unit_test(test_uses_provider_headers),
        cmocka_unit_test(test_long_retry_after_does_not_collapse_the_rate),
        cmocka_unit_test(test_follows_a_limit_that_drops),
        cmocka_unit_test(test_retry_after_pauses_upstream),
        cmocka_unit_test(test_token_budget_is_corrected_by_usage),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_shape_bucket_constant_retry_after),
        cmocka_unit_test(test_shape_headers),
        cmocka_unit_test(test_shape_tokens_bind_first),
        cmocka_unit_test(test_shape_cold_start),
        cmocka_unit_test(test_shape_limit_drops_and_rises),
        cmocka_unit_test(test_shape_two_upstreams),
        cmocka_unit_test(test_no_unbounded_estimate),
        cmocka_unit_test(test_export_import),
        cmocka_unit_test(test_probe_ends_pessimistic_pause),
        cmocka_unit_test(test_window_fills_before_the_first_answer),
        cmocka_unit_test(test_share_splits_configured_budget),
        cmocka_unit_test(test_share_scales_header_limits),
        cmocka_unit_test(test_share_rescales_learned_rate),
        cmocka_unit_test(test_share_growth_past_the_share),
        cmocka_unit_test(test_adopt_lower_fleet_rate),
        cmocka_unit_test(test_demand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
