/* Unit tests of worker/metrics.c: attempts are counted per upstream and
 * status (or error code), latency and tokens, and a bad --metrics address
 * is a clear error. The scrape over HTTP is covered by system/test_ops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/loop.h"
#include "proto/msg.h"
#include "worker/metrics.h"

static void observe(lq_wmetrics_t *m, const char *upstream, int status, const char *code,
                    int latency_ms, int ptok)
{
    lq_wjob_t j;
    memset(&j, 0, sizeof j);
    j.upstream = (char *)upstream;
    j.status = status;
    j.latency_ms = latency_ms;
    j.res.outcome = status == 200 ? LQ_OUTCOME_OK : LQ_OUTCOME_RETRYABLE;
    j.res.error_code = (char *)code;
    j.res.prompt_tokens = ptok;
    j.res.completion_tokens = ptok ? 1 : -1;
    lq_wmetrics_observe(m, &j);
}

static void test_counts_and_render(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    char err[256];
    lq_wmetrics_t *m = lq_wmetrics_new(loop, "127.0.0.1:0", "w-\"1\"", 64, err, sizeof err);
    assert_non_null(m);
    observe(m, NULL, 200, NULL, 250, 7);
    observe(m, NULL, 200, NULL, 3000, 3);
    observe(m, "azure", 429, "http_429", 20, 0);
    observe(m, "azure", 0, "connection_error", 1, 0);
    observe(m, "azure", 0, "timeout", 600000, 0);
    lq_wmetrics_observe(NULL, NULL); /* safe on NULL */
    size_t len;
    char *text = lq_wmetrics_render(m, &len);
    const char *want[] = {
        "llmq_worker_info{worker=\"w-\\\"1\\\"\",version=\"",
        "llmq_worker_concurrency 64\n",
        "llmq_worker_broker_connected 0\n",
        "llmq_worker_upstream_responses_total{upstream=\"default\",code=\"200\"} 2\n",
        "llmq_worker_upstream_responses_total{upstream=\"azure\",code=\"429\"} 1\n",
        "llmq_worker_upstream_responses_total{upstream=\"azure\",code=\"connection_error\"} 1\n",
        "llmq_worker_upstream_responses_total{upstream=\"azure\",code=\"timeout\"} 1\n",
        "llmq_worker_upstream_tokens_total{upstream=\"default\",kind=\"prompt\"} 10\n",
        "llmq_worker_upstream_tokens_total{upstream=\"default\",kind=\"completion\"} 2\n",
        "llmq_worker_upstream_request_duration_seconds_bucket{upstream=\"default\",le=\"0.25\"} 1\n",
        "llmq_worker_upstream_request_duration_seconds_count{upstream=\"default\"} 2\n",
        /* 429 and timeout have a duration; a refused connection has none */
        "llmq_worker_upstream_request_duration_seconds_count{upstream=\"azure\"} 2\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(text, want[i]))
            fail_msg("missing: %s\nin:\n%s", want[i], text);
    assert_int_equal(len, strlen(text));
    free(text);
    lq_wmetrics_destroy(&m);
    assert_null(m);
    lq_wmetrics_destroy(&m);
    lq_loop_destroy(&loop);
}

static void test_bad_address(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    char err[256];
    assert_null(lq_wmetrics_new(loop, "nope", "w", 1, err, sizeof err));
    assert_non_null(strstr(err, "wants [HOST:]PORT"));
    assert_null(lq_wmetrics_new(loop, "127.0.0.1:notaport", "w", 1, err, sizeof err));
    assert_non_null(strstr(err, "--metrics"));
    lq_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_render),
        cmocka_unit_test(test_bad_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
