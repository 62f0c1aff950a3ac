/* Unit tests for broker/ratelimit.c against a simulated provider: a token
 * bucket of R requests/s with a small burst, answering 429 when empty. The
 * clock is simulated, so the figures are deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/ratelimit.h"

#include <stdlib.h>

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
    uint64_t due[MAXQ];
    int status[MAXQ];
    int inflight = 0, done = 0, pending = n;
    s_run_t r = {0, 0};
    for (uint64_t now = 0; done < n && now < 3600000; now++) {
        /* complete due requests */
        for (int i = 0; i < inflight;) {
            if (due[i] <= now) {
                lq_rl_result_t res = {status[i], status[i] == 429 ? s_retry_after_ms : -1, 10, 10,
                                      with_headers ? (int64_t)(rate * 60) : -1, -1, -1, -1, -1, -1};
                lq_rl_on_result(rl, now, &res);
                if (status[i] == 429) {
                    r.n429++;
                    pending++; /* retried */
                } else {
                    done++;
                }
                due[i] = due[inflight - 1];
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
    lq_rl_result_t res = {429, 3000, 0, -1, -1, -1, -1, -1, -1, -1};
    lq_rl_on_result(rl, 1000, &res);
    assert_int_equal(lq_rl_admit(rl, 1500, 0, &retry), 0);
    assert_int_equal(retry, 2500);
    assert_int_equal(lq_rl_admit(rl, 4000, 0, &retry), 1);
    lq_rl_stats_t st;
    lq_rl_stats(rl, 4000, &st);
    assert_int_equal(st.n429, 1);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
