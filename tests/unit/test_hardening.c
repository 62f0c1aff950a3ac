/* Regression tests for what fuzzing and the hardening review (issue 18)
 * found in the parsers of untrusted bytes; each test names its finding.
 *   - ratelimit: a learned rate ramping with no 429 for minutes reached
 *     +inf (fuzz_ratelimit); a worker reporting huge usage overflowed the
 *     double -> uint64 conversion of the admit delay (UBSan); a --limit
 *     spec over 255 bytes was cut before parsing (review).
 *   - redis URL: a long password was silently cut (wrong password sent);
 *     the port was cut to 15 characters before parsing; the error message
 *     for a wrong scheme echoed the whole URL, password included.
 *   - CURVE key files: lines over 255 bytes were split by fgets, so the
 *     tail of a long comment line could become an allowed key; trailing
 *     text after a key was ignored.
 * The broker modules are included whole (they are not in a library yet). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/ratelimit.h"
#include "broker/redis.h"
#include "wire/curve.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ---- ratelimit ---- */

static lq_rl_result_t s_result(int status)
{
    lq_rl_result_t r = {.status = status, .retry_after_ms = -1, .used_tokens = -1,
                        .limit_requests = -1, .limit_tokens = -1, .remaining_requests = -1,
                        .remaining_tokens = -1, .reset_requests_ms = -1, .reset_tokens_ms = -1};
    return r;
}

static void test_rl_ramp_stays_finite(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {.use_headers = 1};
    uint64_t now = 1000;
    lq_rl_t *rl = lq_rl_new(&cfg, now);
    uint64_t retry;
    /* some successes, then one 429: the ramp starts (+50% per 100 ms) */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(lq_rl_admit(rl, now, 10, &retry), 1);
        lq_rl_result_t ok = s_result(200);
        lq_rl_on_result(rl, now, &ok);
        now += 10;
    }
    lq_rl_result_t r429 = s_result(429);
    lq_rl_on_result(rl, now, &r429);
    /* ten quiet minutes: before the fix, learned_rps overflowed to inf */
    now += 600000;
    lq_rl_stats_t st;
    lq_rl_stats(rl, now, &st);
    assert_true(isfinite(st.learned_rps));
    assert_true(isfinite(st.rate_limit));
    assert_true(st.learned_rps <= LQ_RL_MAX_RPS);
    assert_int_equal(lq_rl_admit(rl, now, 10, &retry), 1);
    lq_rl_destroy(&rl);
}

static void test_rl_huge_reported_values(void **state)
{
    (void)state;
    lq_rl_config_t cfg = {.tpm = 60, .use_headers = 1};
    uint64_t now = 1000, retry = 0;
    lq_rl_t *rl = lq_rl_new(&cfg, now);
    for (int i = 0; i < 1000; i++) {
        lq_rl_admit(rl, now, 1, &retry);
        lq_rl_result_t r = s_result(200);
        r.est_tokens = 1;
        r.used_tokens = INT64_MAX; /* a hostile worker, or upstream usage */
        r.reset_requests_ms = INT64_MAX;
        r.remaining_requests = 0;
        r.limit_requests = INT64_MAX;
        lq_rl_on_result(rl, now, &r);
    }
    retry = 0;
    assert_int_equal(lq_rl_admit(rl, now, 1, &retry), 0);
    assert_true(retry >= 1 && retry <= (uint64_t)LQ_RL_MAX_MS);
    lq_rl_stats_t st;
    lq_rl_stats(rl, now, &st);
    assert_true(st.paused_ms <= LQ_RL_MAX_MS);
    assert_true(isfinite(st.rate_limit));
    lq_rl_destroy(&rl);
}

static void test_rl_long_spec_refused(void **state)
{
    (void)state;
    lq_rl_config_t cfg;
    char spec[400];
    /* 250 bytes of a valid spec, then a tpm that a 255-byte cut would shorten */
    int n = snprintf(spec, sizeof spec, "rpm=1");
    while (n < 246)
        n += snprintf(spec + n, sizeof spec - (size_t)n, ",rpm=1");
    snprintf(spec + n, sizeof spec - (size_t)n, ",tpm=5000000");
    assert_int_equal(lq_rl_parse(spec, &cfg), -1); /* was: accepted as tpm=5 or so */
    assert_int_equal(lq_rl_parse("rpm=60,tpm=1000", &cfg), 0);
    assert_true(cfg.rpm == 60 && cfg.tpm == 1000);
}

/* ---- redis URL ---- */

static void test_redis_url_valid(void **state)
{
    (void)state;
    lq_redis_url_t u;
    char err[256];
    assert_int_equal(lq_redis_url_parse("redis://llmq:p@ss@w0rd@h.example:6380/3", &u, err,
                                        sizeof err), 0);
    assert_string_equal(u.user, "llmq");
    assert_string_equal(u.pass, "p@ss@w0rd");
    assert_string_equal(u.host, "h.example");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_int_equal(lq_redis_url_parse("redis://:pw@h", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "pw");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(lq_redis_url_parse("redis://h/", &u, err, sizeof err), 0);
}

static void test_redis_url_no_silent_cut(void **state)
{
    (void)state;
    lq_redis_url_t u;
    char err[256], url[1024];
    char pw[400];
    memset(pw, 'x', sizeof pw - 1);
    pw[sizeof pw - 1] = '\0';
    snprintf(url, sizeof url, "redis://u:%s@h:1/0", pw);
    assert_int_equal(lq_redis_url_parse(url, &u, err, sizeof err), -1); /* was: cut to 255 */
    assert_null(strstr(err, "xxxxxx"));
    /* the old parser copied the port into 16 bytes before parsing */
    assert_int_equal(lq_redis_url_parse("redis://h:000000000000080garbage/0", &u, err, sizeof err),
                     -1);
    assert_int_equal(lq_redis_url_parse("redis://h: 80", &u, err, sizeof err), -1);
    assert_int_equal(lq_redis_url_parse("redis://h:+80", &u, err, sizeof err), -1);
    assert_int_equal(lq_redis_url_parse("redis://h:80/ 1", &u, err, sizeof err), -1);
    assert_int_equal(lq_redis_url_parse("redis://h\n:80", &u, err, sizeof err), -1);
    assert_int_equal(lq_redis_url_parse("redis://:80", &u, err, sizeof err), -1);
}

static void test_redis_url_error_hides_password(void **state)
{
    (void)state;
    lq_redis_url_t u;
    char err[256];
    assert_int_equal(lq_redis_url_parse("rediss://llmq:hunter2-secret@h:6380", &u, err, sizeof err),
                     -1);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "rediss"));
    /* the fuzz finding: a "scheme" with ':' and '@' in it */
    assert_int_equal(lq_redis_url_parse("redis:c//h:edis:c//h:@b@c:*/s://h8", &u, err, sizeof err),
                     -1);
    assert_null(strstr(err, "edis:c//h:"));
}

/* ---- CURVE key files ---- */

static void test_curve_long_comment_is_not_a_key(void **state)
{
    (void)state;
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    /* a 300-byte comment whose tail is a key: fgets(256) used to split it */
    char text[1024];
    int n = snprintf(text, sizeof text, "# %.*s%s\n", 254, "", pub);
    memset(text + 2, 'c', 254);
    size_t pos = 0;
    int line = 0;
    char key[41];
    assert_int_equal(lq_curve_next_key(text, (size_t)n, &pos, &line, key), 0);
    /* the same key on its own line, with blanks and CRLF, is read */
    n = snprintf(text, sizeof text, "\n  # c\n\t%s \r\n", pub);
    pos = 0;
    line = 0;
    assert_int_equal(lq_curve_next_key(text, (size_t)n, &pos, &line, key), 1);
    assert_string_equal(key, pub);
    assert_int_equal(line, 3);
    assert_int_equal(lq_curve_next_key(text, (size_t)n, &pos, &line, key), 0);
}

static void test_curve_trailing_text_refused(void **state)
{
    (void)state;
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    char text[256];
    int n = snprintf(text, sizeof text, "%s trailing\n", pub);
    size_t pos = 0;
    int line = 0;
    char key[41];
    assert_int_equal(lq_curve_next_key(text, (size_t)n, &pos, &line, key), -1);
    assert_int_equal(line, 1);
    n = snprintf(text, sizeof text, "%.39s\n", pub);
    pos = 0;
    line = 0;
    assert_int_equal(lq_curve_next_key(text, (size_t)n, &pos, &line, key), -1);
    /* a NUL inside a key line */
    memcpy(text, pub, 40);
    text[10] = '\0';
    pos = 0;
    line = 0;
    assert_int_equal(lq_curve_next_key(text, 40, &pos, &line, key), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rl_ramp_stays_finite),
        cmocka_unit_test(test_rl_huge_reported_values),
        cmocka_unit_test(test_rl_long_spec_refused),
        cmocka_unit_test(test_redis_url_valid),
        cmocka_unit_test(test_redis_url_no_silent_cut),
        cmocka_unit_test(test_redis_url_error_hides_password),
        cmocka_unit_test(test_curve_long_comment_is_not_a_key),
        cmocka_unit_test(test_curve_trailing_text_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
