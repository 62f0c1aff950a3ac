/* Unit tests for broker/dispatch.c, driven alone: the owner's side (clock,
 * LEASE, REQUEUE, sends, wake-ups) is a recorder in this file, so every
 * rule — credit, fair share, strict priority, demand-driven leasing, loss
 * of a worker, cancel — is checked without sockets or Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/dispatch.h"
#include "broker/payload.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 4096

typedef struct {
    char batch[64];
    int64_t index;
    uint8_t worker; /* first byte of the ident */
} s_sent_t;

typedef struct {
    uint64_t now;
    s_sent_t sent[MAX_EVENTS];
    size_t nsent;
    char lease_batch[64][64];
    int64_t lease_n[64];
    size_t nleases;
    int redis_down;
    char requeued[MAX_EVENTS][LQ_MEMBER_MAX];
    char requeue_code[32];
    size_t nrequeued;
    uint64_t wake_ms;
    size_t nwakes;
} s_owner_t;

static uint64_t s_now(void *arg)
{
    return ((s_owner_t *)arg)->now;
}

static int s_lease(void *arg, const char *batch, int64_t n)
{
    s_owner_t *o = arg;
    if (o->redis_down)
        return -1;
    assert_true(o->nleases < 64);
    snprintf(o->lease_batch[o->nleases], 64, "%s", batch);
    o->lease_n[o->nleases++] = n;
    return 0;
}

static void s_requeue(void *arg, const char *const *members, size_t n, const char *code,
                      const char *why)
{
    s_owner_t *o = arg;
    (void)why;
    snprintf(o->requeue_code, sizeof o->requeue_code, "%s", code);
    for (size_t i = 0; i < n; i++) {
        assert_true(o->nrequeued < MAX_EVENTS);
        snprintf(o->requeued[o->nrequeued++], LQ_MEMBER_MAX, "%s", members[i]);
    }
}

static void s_send(void *arg, const uint8_t *ident, size_t len, const lq_w_job_t *job)
{
    s_owner_t *o = arg;
    assert_true(len >= 1);
    assert_true(o->nsent < MAX_EVENTS);
    s_sent_t *s = &o->sent[o->nsent++];
    snprintf(s->batch, sizeof s->batch, "%s", job->batch);
    s->index = job->index;
    s->worker = ident[0];
    /* the job carries what the payload held */
    char want[64];
    snprintf(want, sizeof want, "{\"n\":%lld}", (long long)job->index);
    assert_int_equal(job->body_len, strlen(want));
    assert_memory_equal(job->body, want, job->body_len);
    assert_string_equal(job->url, "/v1/chat/completions");
}

static void s_wake(void *arg, uint64_t delay_ms)
{
    s_owner_t *o = arg;
    o->wake_ms = delay_ms;
    o->nwakes++;
}

static lq_dispatch_t *s_new(s_owner_t *o, const char *const *limits, size_t nlimits)
{
    memset(o, 0, sizeof *o);
    o->now = 1000;
    lq_dispatch_ops_t ops = {s_now, s_lease, s_requeue, s_send, s_wake, o};
    lq_dispatch_opts_t opts = {16, limits, nlimits, 0};
    return lq_dispatch_new(&ops, &opts);
}

/* Registers worker `name` (its ident is the name) serving "default". */
static void s_worker(lq_dispatch_t *d, const char *name, int64_t credit)
{
    const char *ups[] = {"default"};
    lq_w_ready_t r = {name, credit, credit, ups, 1};
    lq_dispatch_worker_ready(d, (const uint8_t *)name, strlen(name), &r);
}

/* Answers a lease call for batch with jobs [first, first+n). */
static void s_give(lq_dispatch_t *d, const char *batch, int64_t first, size_t n, int more)
{
    lq_leased_t *jobs = calloc(n + 1, sizeof *jobs);
    char **bufs = calloc(n + 1, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        char cid[32], body[64];
        snprintf(cid, sizeof cid, "c%lld", (long long)(first + (int64_t)i));
        snprintf(body, sizeof body, "{\"n\":%lld}", (long long)(first + (int64_t)i));
        bufs[i] = lq_payload_encode(cid, "/v1/chat/completions", 10, body, strlen(body),
                                    &jobs[i].payload_len);
        jobs[i].payload = bufs[i];
        jobs[i].index = first + (int64_t)i;
        jobs[i].attempt = 1;
    }
    lq_dispatch_leased(d, batch, more, jobs, n);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(jobs);
}

/* A worker's result for (batch, index); returns lq_dispatch_result's value. */
static int s_result(lq_dispatch_t *d, const char *worker, const char *batch, int64_t index)
{
    lq_w_result_t res = {0};
    res.batch = batch;
    res.index = index;
    res.attempt = 1;
    res.status = 200;
    res.retry_after_ms = -1;
    res.prompt_tokens = res.completion_tokens = -1;
    res.rl_remaining_requests = res.rl_remaining_tokens = -1;
    res.rl_reset_requests_ms = res.rl_reset_tokens_ms = -1;
    char *cid = NULL;
    int rc = lq_dispatch_result(d, (const uint8_t *)worker, strlen(worker), &res, &cid);
    char want[32];
    snprintf(want, sizeof want, "c%lld", (long long)index);
    assert_string_equal(cid, rc ? want : cid);
    free(cid);
    return rc;
}

static size_t s_sent_of(const s_owner_t *o, const char *batch, size_t from)
{
    size_t n = 0;
    for (size_t i = from; i < o->nsent; i++)
        n += strcmp(o->sent[i].batch, batch) == 0;
    return n;
}

/* A worker never holds more jobs than the credit it gave. */
static void test_credit_never_exceeded(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    s_worker(d, "w", 3);
    lq_dispatch_batch(d, "b1", "default", 0, 0);
    lq_dispatch_ready(d, "b1");
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, 1);
    assert_int_equal(o.lease_n[0], 3 + 16); /* free credit + prefetch */
    s_give(d, "b1", 0, 19, 1);
    assert_int_equal(o.nsent, 3);
    /* results do not give credit back; only CREDIT does */
    assert_int_equal(s_result(d, "w", "b1", 0), 1);
    lq_dispatch_run(d);
    assert_int_equal(o.nsent, 3);
    assert_int_equal(lq_dispatch_worker_credit(d, (const uint8_t *)"w", 1, 2), 0);
    lq_dispatch_run(d);
    assert_int_equal(o.nsent, 5);
    lq_dispatch_stats_t st;
    lq_dispatch_stats(d, &st);
    assert_int_equal(st.credit, 0);
    assert_int_equal(st.inflight, 4);
    assert_int_equal(st.queued, 14);
    /* credit from an unknown worker is refused */
    assert_int_equal(lq_dispatch_worker_credit(d, (const uint8_t *)"x", 1, 5), -1);
    lq_dispatch_destroy(&d);
    assert_null(d);
}

/* Equal priorities share dispatch one job at a time. */
static void test_fair_share(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    const char *ids[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        lq_dispatch_batch(d, ids[i], "default", 0, 0);
        lq_dispatch_ready(d, ids[i]);
    }
    s_worker(d, "w", 0);
    lq_dispatch_run(d);
    /* the need (no credit yet + 16 prefetch) is split over the three batches */
    assert_int_equal(o.nleases, 3);
    assert_int_equal(o.lease_n[0] + o.lease_n[1] + o.lease_n[2], 16);
    for (size_t i = 0; i < 3; i++)
        assert_true(o.lease_n[i] == 5 || o.lease_n[i] == 6);
    for (size_t i = 0; i < 3; i++)
        s_give(d, o.lease_batch[i], 0, 16, 1);
    assert_int_equal(o.nsent, 0);
    lq_dispatch_worker_credit(d, (const uint8_t *)"w", 1, 30);
    lq_dispatch_run(d);
    assert_int_equal(o.nsent, 30);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_sent_of(&o, ids[i], 0), 10);
    /* turns alternate: no batch gets two jobs in a row while others wait */
    for (size_t i = 0; i + 1 < o.nsent; i++)
        assert_string_not_equal(o.sent[i].batch, o.sent[i + 1].batch);
    /* the 30 answer (keeping the limiter's start-up window open) */
    for (size_t i = 0; i < 30; i++)
        assert_int_equal(s_result(d, "w", o.sent[i].batch, o.sent[i].index), 1);
    /* a small batch that arrives later takes its turn at once, and its
     * share: the first send, then one in four */
    lq_dispatch_batch(d, "small", "default", 0, 0);
    lq_dispatch_ready(d, "small");
    lq_dispatch_run(d);
    s_give(d, "small", 0, 2, 0);
    lq_dispatch_worker_credit(d, (const uint8_t *)"w", 1, 8);
    lq_dispatch_run(d);
    assert_string_equal(o.sent[30].batch, "small");
    assert_int_equal(s_sent_of(&o, "small", 30), 2);
    lq_dispatch_destroy(&d);
}

/* A batch of higher priority is leased for and served first. */
static void test_strict_priority(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    s_worker(d, "w", 10);
    lq_dispatch_batch(d, "low", "default", 0, 0);
    lq_dispatch_batch(d, "high", "default", 5, 0);
    lq_dispatch_ready(d, "low");
    lq_dispatch_ready(d, "high");
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, 1);
    assert_string_equal(o.lease_batch[0], "high");
    s_give(d, "high", 0, 4, 0); /* high has only 4 jobs */
    assert_int_equal(s_sent_of(&o, "high", 0), 4);
    /* high has nothing left: low may lease now */
    assert_int_equal(o.nleases, 2);
    assert_string_equal(o.lease_batch[1], "low");
    s_give(d, "low", 0, 20, 1);
    assert_int_equal(s_sent_of(&o, "low", 0), 6);
    /* both queued: high goes first whatever was served last */
    lq_dispatch_ready(d, "high");
    lq_dispatch_run(d);
    s_give(d, "high", 4, 3, 0);
    lq_dispatch_worker_credit(d, (const uint8_t *)"w", 1, 5);
    size_t before = o.nsent;
    lq_dispatch_run(d);
    assert_int_equal(s_sent_of(&o, "high", before), 3);
    assert_int_equal(s_sent_of(&o, "low", before), 2);
    lq_dispatch_destroy(&d);
}

/* A lost worker's jobs go back to Redis at once and the batch leases again. */
static void test_worker_loss_requeues(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    s_worker(d, "w1", 5);
    s_worker(d, "w2", 5);
    lq_dispatch_batch(d, "b", "default", 0, 0);
    lq_dispatch_ready(d, "b");
    lq_dispatch_run(d);
    s_give(d, "b", 0, 10, 0);
    assert_int_equal(o.nsent, 10);
    size_t on_w1 = 0;
    for (size_t i = 0; i < o.nsent; i++)
        on_w1 += o.sent[i].worker == 'w' && o.sent[i].batch[0] == 'b';
    lq_dispatch_worker_remove(d, (const uint8_t *)"w1", 2, "missed its heartbeats");
    assert_int_equal(o.nrequeued, 5);
    assert_string_equal(o.requeue_code, "worker_lost");
    for (size_t i = 0; i < o.nrequeued; i++)
        assert_non_null(strstr(o.requeued[i], "b|"));
    /* its late result is not taken as the job's */
    assert_int_equal(s_result(d, "w1", "b", 0), 0);
    lq_dispatch_stats_t st;
    lq_dispatch_stats(d, &st);
    assert_int_equal(st.workers, 1);
    assert_int_equal(st.inflight, 5);
    /* the batch is ready again: the next round leases */
    size_t leases = o.nleases;
    lq_dispatch_worker_credit(d, (const uint8_t *)"w2", 2, 5);
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, leases + 1);
    (void)on_w1;
    lq_dispatch_destroy(&d);
}

/* Cancel: the queue goes back, nothing more is sent, running jobs finish. */
static void test_cancel_mid_flight(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    s_worker(d, "w", 4);
    lq_dispatch_batch(d, "b", "default", 0, 0);
    lq_dispatch_ready(d, "b");
    lq_dispatch_run(d);
    s_give(d, "b", 0, 12, 1);
    assert_int_equal(o.nsent, 4);
    lq_dispatch_cancel(d, "b");
    assert_int_equal(o.nrequeued, 8);
    assert_string_equal(o.requeue_code, "cancelled");
    assert_int_equal(lq_dispatch_queued(d, "b"), 0);
    lq_dispatch_worker_credit(d, (const uint8_t *)"w", 1, 10);
    size_t leases = o.nleases;
    lq_dispatch_ready(d, "b"); /* ignored: cancelled */
    lq_dispatch_run(d);
    assert_int_equal(o.nsent, 4);
    assert_int_equal(o.nleases, leases);
    assert_int_equal(s_result(d, "w", "b", 2), 1);
    /* a lease answered after the cancel is given back whole */
    s_give(d, "b", 12, 3, 1);
    assert_int_equal(o.nrequeued, 11);
    lq_dispatch_destroy(&d);
}

/* Malformed payloads are requeued, never sent. Redis down: no lease. */
static void test_corrupt_payload_and_redis_down(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    s_worker(d, "w", 4);
    lq_dispatch_batch(d, "b", "default", 0, 0);
    lq_dispatch_ready(d, "b");
    lq_dispatch_run(d);
    lq_leased_t bad = {7, 1, "x:garbage", 9};
    lq_dispatch_leased(d, "b", 1, &bad, 1);
    assert_int_equal(o.nsent, 0);
    assert_int_equal(o.nrequeued, 1);
    assert_string_equal(o.requeued[0], "b|7");
    o.redis_down = 1;
    lq_dispatch_redis_lost(d);
    size_t leases = o.nleases;
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, leases);
    o.redis_down = 0;
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, leases + 1);
    lq_dispatch_destroy(&d);
}

/* A configured budget holds jobs back and asks to be woken. */
static void test_limiter_paces(void **state)
{
    (void)state;
    s_owner_t o;
    const char *limits[] = {"default:rpm=60"};
    lq_dispatch_t *d = s_new(&o, limits, 1);
    s_worker(d, "w", 100);
    lq_dispatch_batch(d, "b", NULL, 0, 0);
    lq_dispatch_ready(d, "b");
    lq_dispatch_run(d);
    s_give(d, "b", 0, 50, 0);
    size_t first = o.nsent;
    assert_true(first >= 1 && first < 50);
    assert_true(o.nwakes >= 1);
    assert_true(o.wake_ms > 0 && o.wake_ms <= 1000);
    o.now += 5000; /* 5 s at 1/s */
    lq_dispatch_run(d);
    assert_true(o.nsent > first && o.nsent <= first + 6);
    lq_upstream_info_t *ups;
    assert_int_equal(lq_dispatch_upstreams(d, &ups), 1);
    assert_string_equal(ups[0].name, "default");
    assert_int_equal(ups[0].limit_rpm, 60);
    free(ups);
    lq_dispatch_destroy(&d);
}

/* A worker serving other upstreams gets nothing of this batch. */
static void test_upstream_routing(void **state)
{
    (void)state;
    s_owner_t o;
    lq_dispatch_t *d = s_new(&o, NULL, 0);
    const char *ups[] = {"other"};
    lq_w_ready_t r = {"x", 8, 8, ups, 1};
    lq_dispatch_worker_ready(d, (const uint8_t *)"x", 1, &r);
    lq_dispatch_batch(d, "b", "default", 0, 0);
    lq_dispatch_ready(d, "b");
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, 0); /* nobody serves "default": no lease */
    s_worker(d, "w", 2);
    lq_dispatch_run(d);
    assert_int_equal(o.nleases, 1);
    s_give(d, "b", 0, 5, 0);
    assert_int_equal(o.nsent, 2);
    for (size_t i = 0; i < o.nsent; i++)
        assert_int_equal(o.sent[i].worker, 'w');
    lq_dispatch_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credit_never_exceeded),
        cmocka_unit_test(test_fair_share),
        cmocka_unit_test(test_strict_priority),
        cmocka_unit_test(test_worker_loss_requeues),
        cmocka_unit_test(test_cancel_mid_flight),
        cmocka_unit_test(test_corrupt_payload_and_redis_down),
        cmocka_unit_test(test_limiter_paces),
        cmocka_unit_test(test_upstream_routing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
