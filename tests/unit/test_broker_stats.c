/* Unit tests of broker/stats.c without Redis: results observed through the
 * reports observer are counted by upstream, class and verdict, and render
 * as Prometheus text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "broker/stats.h"
#include "common/loop.h"

static const char *s_upstream_of(void *arg, const char *batch)
{
    (void)arg;
    return strcmp(batch, "b2") == 0 ? "azure" : NULL;
}

static void seen(lq_bstats_t *s, const char *batch, const char *verdict, int outcome, int status,
                 const char *code, int latency_ms, int ptok, int retry_after_ms)
{
    lq_report_seen_t x = {batch, verdict, outcome, status, code, latency_ms, retry_after_ms,
                          ptok, ptok ? 2 * ptok : 0};
    lq_bstats_on_report(s, &x);
}

static void test_counts_by_verdict_and_class(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    char err[128];
    lq_redis_opts_t ro = {.url = "redis://127.0.0.1:1/0"}; /* never connects: no poll */
    lq_redis_t *redis = lq_redis_new(loop, &ro, NULL, NULL, err, sizeof err);
    assert_non_null(redis);
    lq_bstats_t *s = lq_bstats_new(loop, redis, "llmq:", 1000, s_upstream_of, NULL);
    seen(s, "b1", "ok", LQ_OUTCOME_OK, 200, "", 1500, 10, -1);
    seen(s, "b1", "retry", LQ_OUTCOME_RETRYABLE, 429, "http_429", 100, 0, 2000);
    seen(s, "b1", "retry", LQ_OUTCOME_RETRYABLE, 0, "timeout", 600000, 0, -1);
    seen(s, "b1", "failed", LQ_OUTCOME_FATAL, 400, "http_400", 50, 0, -1);
    seen(s, "b1", "dup", LQ_OUTCOME_OK, 200, "", 10, 10, -1);
    seen(s, "b2", "failed", LQ_OUTCOME_RETRYABLE, 0, "connection_error", 5, 0, -1);
    lq_prom_buf_t b = {0};
    lq_bstats_render(s, &b);
    const char *want[] = {
        "llmq_attempts_total{upstream=\"default\",class=\"ok\"} 2\n",
        "llmq_attempts_total{upstream=\"default\",class=\"rate_limited\"} 1\n",
        "llmq_attempts_total{upstream=\"default\",class=\"timeout\"} 1\n",
        "llmq_attempts_total{upstream=\"default\",class=\"client_error\"} 1\n",
        "llmq_jobs_completed_total{upstream=\"default\"} 1\n",
        "llmq_jobs_failed_total{upstream=\"default\",class=\"client_error\"} 1\n",
        "llmq_jobs_retried_total{upstream=\"default\",class=\"rate_limited\"} 1\n",
        "llmq_jobs_retried_total{upstream=\"default\",class=\"timeout\"} 1\n",
        "llmq_jobs_failed_total{upstream=\"azure\",class=\"connection_error\"} 1\n",
        "llmq_tokens_total{upstream=\"default\",kind=\"prompt\"} 10\n",
        "llmq_tokens_total{upstream=\"default\",kind=\"completion\"} 20\n",
        "llmq_upstream_pauses_total{upstream=\"default\"} 1\n",
        /* answered or timed out: 200, 429, timeout, 400, dup's 200 */
        "llmq_upstream_request_duration_seconds_count{upstream=\"default\"} 5\n",
        "llmq_upstream_request_duration_seconds_bucket{upstream=\"default\",le=\"2\"} 4\n",
        "llmq_upstream_request_duration_seconds_count{upstream=\"azure\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(b.data, want[i]))
            fail_msg("missing: %s\nin:\n%s", want[i], b.data);
    assert_null(strstr(b.data, "llmq_jobs_failed_total{upstream=\"default\",class=\"ok\"}"));
    const lq_bstats_batch_t *bt;
    assert_int_equal(lq_bstats_batches(s, &bt), 0);
    lq_prom_buf_clear(&b);
    lq_redis_destroy(&redis);
    lq_bstats_destroy(&s);
    assert_null(s);
    lq_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_by_verdict_and_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
