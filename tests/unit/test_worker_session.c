/* Unit tests for the worker's broker dialogue (worker/session.c) and its
 * job table (worker/jobs.c): a real ROUTER on inproc plays the broker, the
 * loop is stepped by hand and its clock injected, so heartbeats, reconnects
 * and the drain timeout are deterministic. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "wire/zsock.h"
#include "worker/jobs.h"
#include "worker/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAXREC 4096

typedef struct {
    uint8_t cmd;
    int64_t credit;      /* READY, CREDIT */
    int64_t concurrency; /* READY */
    char batch[64];      /* RESULT */
    int64_t index, attempt, outcome;
    char code[64];
    size_t nupstreams;
    int64_t list_max; /* READY's batch */
    int in_list;      /* RESULT: came in a RESULT_LIST */
} rec_t;

typedef struct {
    lq_loop_t *loop;
    void *zctx;
    lq_zsock_t *router;
    lq_session_t *s;
    uint64_t now;
    rec_t recs[MAXREC];
    size_t nrecs;
    lq_wjob_t *running[MAXREC];
    size_t nrunning;
    int exited, exit_code;
    uint8_t ident[64];
    size_t ident_len;
    char endpoint[64];
    size_t nlists; /* RESULT_LIST messages received */
} fx_t;

static uint64_t fx_clock(void *arg)
{
    return ((fx_t *)arg)->now;
}

static void on_router(lq_zsock_t *z, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)z;
    fx_t *f = arg;
    memcpy(f->ident, ident, len);
    f->ident_len = len;
    if (f->nrecs == MAXREC || m->cmd == LQ_W_HEARTBEAT)
        return;
    if (m->cmd == LQ_W_RESULT_LIST) {
        /* recorded as the RESULTs it carries */
        f->nlists++;
        for (size_t i = 0; i < m->u.result_list.nresults && f->nrecs < MAXREC; i++) {
            const lq_w_result_t *res = &m->u.result_list.results[i];
            rec_t *r = &f->recs[f->nrecs++];
            memset(r, 0, sizeof *r);
            r->cmd = LQ_W_RESULT;
            r->in_list = 1;
            snprintf(r->batch, sizeof r->batch, "%s", res->batch);
            r->index = res->index;
            r->attempt = res->attempt;
            r->outcome = res->outcome;
        }
        return;
    }
    rec_t *r = &f->recs[f->nrecs++];
    memset(r, 0, sizeof *r);
    r->cmd = m->cmd;
    if (m->cmd == LQ_W_READY) {
        r->credit = m->u.ready.credit;
        r->concurrency = m->u.ready.concurrency;
        r->nupstreams = m->u.ready.nupstreams;
        r->list_max = m->u.ready.batch;
    } else if (m->cmd == LQ_W_CREDIT) {
        r->credit = m->u.credit.credit;
    } else if (m->cmd == LQ_W_RESULT) {
        snprintf(r->batch, sizeof r->batch, "%s", m->u.result.batch);
        r->index = m->u.result.index;
        r->attempt = m->u.result.attempt;
        r->outcome = m->u.result.outcome;
        snprintf(r->code, sizeof r->code, "%s",
                 m->u.result.error_code ? m->u.result.error_code : "");
    }
}

static void on_exec(lq_wjob_t *job, void *arg)
{
    fx_t *f = arg;
    f->running[f->nrunning++] = job;
}

static void on_exit_cb(int code, void *arg)
{
    fx_t *f = arg;
    f->exited = 1;
    f->exit_code = code;
}

static void before_sleep(lq_loop_t *loop, void *arg)
{
    (void)loop;
    fx_t *f = arg;
    if (f->s)
        lq_session_tick(f->s);
}

/* Steps the loop until nothing happens for a few rounds. */
static void pump(fx_t *f)
{
    int idle = 0;
    for (int i = 0; i < 500 && idle < 5; i++)
        idle = lq_loop_run_once(f->loop, 0) > 0 ? 0 : idle + 1;
}

static int fx_setup_n(void **state, int64_t concurrency)
{
    static int seq;
    fx_t *f = xcalloc(1, sizeof *f);
    f->loop = lq_loop_new();
    f->now = 1000000;
    lq_loop_set_clock(f->loop, fx_clock, f);
    f->zctx = zmq_ctx_new();
    snprintf(f->endpoint, sizeof f->endpoint, "inproc://broker-%d", seq++);
    f->router = lq_zsock_new(f->loop, f->zctx, ZMQ_ROUTER, on_router, f);
    /* A reconnecting worker reuses its routing id; inproc never retries a
     * refused connection, so let the new one take over at once. */
    int one = 1;
    zmq_setsockopt(lq_zsock_raw(f->router), ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    assert_int_equal(lq_zsock_bind(f->router, f->endpoint), 0);
    static const char *ups[] = {"default", "fast"};
    lq_session_config_t cfg = {
        .endpoint = f->endpoint,
        .id = "w-test",
        .concurrency = concurrency,
        .heartbeat_ms = 1000,
        .liveness = 3,
        .drain_timeout_ms = 30000,
        .upstreams = ups,
        .nupstreams = 2,
    };
    f->s = lq_session_new(f->loop, f->zctx, &cfg, on_exec, on_exit_cb, f);
    lq_loop_add_before_sleep(f->loop, before_sleep, f);
    assert_int_equal(lq_session_start(f->s), 0);
    pump(f);
    *state = f;
    return 0;
}

static int fx_setup(void **state)
{
    return fx_setup_n(state, 4);
}

static int fx_setup_2(void **state)
{
    return fx_setup_n(state, 2);
}

static fx_t *s_second; /* a second broker, when a test made one */

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    lq_session_destroy(&f->s, 0);
    if (s_second) {
        lq_zsock_destroy(&s_second->router);
        free(s_second);
        s_second = NULL;
    }
    lq_zsock_destroy(&f->router);
    zmq_ctx_term(f->zctx);
    lq_loop_destroy(&f->loop);
    free(f);
    return 0;
}

/* Broker -> worker helpers. */
static void send_job(fx_t *f, const char *batch, int64_t index, int64_t attempt)
{
    lq_msg_t m = {0};
    m.cmd = LQ_W_JOB;
    m.u.job.batch = batch;
    m.u.job.index = index;
    m.u.job.attempt = attempt;
    m.u.job.upstream = "default";
    m.u.job.url = "/v1/chat/completions";
    m.u.job.body = "{}";
    m.u.job.body_len = 2;
    m.u.job.timeout_ms = 1000;
    assert_int_equal(lq_zsock_send(f->router, f->ident, f->ident_len, &m), 0);
}

/* Sends n jobs (batch, first..first+n-1) in one JOB_LIST. */
static void send_job_list(fx_t *f, const char *batch, int64_t first, size_t n)
{
    lq_w_job_t jobs[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        jobs[i] = (lq_w_job_t){batch, first + (int64_t)i, 1, "default", "/v1/chat/completions",
                               "{}", 2, 1000};
    lq_msg_t m = {0};
    m.cmd = LQ_W_JOB_LIST;
    m.u.job_list = (lq_w_job_list_t){jobs, n};
    assert_int_equal(lq_zsock_send(f->router, f->ident, f->ident_len, &m), 0);
}

static void send_ack(fx_t *f, const char *batch, int64_t index)
{
    lq_job_ref_t ref = {batch, index};
    lq_msg_t m = {0};
    m.cmd = LQ_W_RESULT_ACK;
    m.u.result_ack.jobs = &ref;
    m.u.result_ack.njobs = 1;
    assert_int_equal(lq_zsock_send(f->router, f->ident, f->ident_len, &m), 0);
}

static void send_simple(fx_t *f, uint8_t cmd)
{
    lq_msg_t m = {0};
    m.cmd = cmd;
    assert_int_equal(lq_zsock_send(f->router, f->ident, f->ident_len, &m), 0);
}

/* Finishes the i-th job handed to exec with outcome. */
static void finish(fx_t *f, size_t i, int outcome)
{
    lq_wjob_t *j = f->running[i];
    assert_non_null(j);
    f->running[i] = NULL;
    lq_outcome_local(&j->res, outcome, outcome ? "http_500" : "x", "m");
    if (outcome == LQ_OUTCOME_OK) {
        free(j->res.error_code);
        free(j->res.error_message);
        j->res.error_code = j->res.error_message = NULL;
    }
    j->state = LQ_WJOB_DONE;
    free(j->body);
    j->body = NULL;
    lq_session_job_done(f->s, j);
}

/* Counts records of cmd from position from; sums their credit in *sum. */
static size_t count(const fx_t *f, size_t from, uint8_t cmd, int64_t *sum)
{
    size_t n = 0;
    if (sum)
        *sum = 0;
    for (size_t i = from; i < f->nrecs; i++) {
        if (f->recs[i].cmd == cmd) {
            n++;
            if (sum)
                *sum += f->recs[i].credit;
        }
    }
    return n;
}

static void test_ready_jobs_results_credit(void **state)
{
    fx_t *f = *state;
    assert_int_equal(f->nrecs, 1);
    assert_int_equal(f->recs[0].cmd, LQ_W_READY);
    assert_int_equal(f->recs[0].credit, 4);
    assert_int_equal(f->recs[0].concurrency, 4);
    assert_int_equal(f->recs[0].nupstreams, 2);
    assert_memory_equal(f->ident, "w-test", 6); /* ZMQ_ROUTING_ID = worker id */
    for (int i = 0; i < 4; i++)
        send_job(f, "b1", i, 1);
    pump(f);
    assert_int_equal(f->nrunning, 4);
    assert_string_equal(f->running[2]->url, "/v1/chat/completions");
    assert_int_equal(count(f, 0, LQ_W_CREDIT, NULL), 0); /* all slots busy */
    size_t mark = f->nrecs;
    finish(f, 0, LQ_OUTCOME_OK);
    finish(f, 1, LQ_OUTCOME_RETRYABLE);
    pump(f);
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 2);
    int64_t sum;
    assert_int_equal(count(f, mark, LQ_W_CREDIT, &sum), 1); /* coalesced */
    assert_int_equal(sum, 2);
    assert_int_equal(f->recs[mark].index, 0);
    assert_int_equal(f->recs[mark].outcome, LQ_OUTCOME_OK);
    assert_int_equal(f->recs[mark + 1].outcome, LQ_OUTCOME_RETRYABLE);
    assert_string_equal(f->recs[mark + 1].code, "http_500");
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.inflight, 2);
    assert_int_equal(st.unacked, 2);
    assert_int_equal(st.credit_out, 2);
    send_ack(f, "b1", 0);
    send_ack(f, "b1", 1);
    send_ack(f, "b1", 2); /* still running: ignored */
    send_ack(f, "zz", 9); /* unknown: ignored */
    pump(f);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.unacked, 0);
    assert_int_equal(st.acked, 2);
    assert_int_equal(st.inflight, 2);
    finish(f, 2, LQ_OUTCOME_FATAL);
    finish(f, 3, LQ_OUTCOME_OK);
    pump(f);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.credit_out, 4);
    assert_int_equal(st.ok, 2);
    assert_int_equal(st.retryable, 1);
    assert_int_equal(st.fatal, 1);
}

/* A broker that sends JOB_LIST gets the results of one loop iteration in
 * one RESULT_LIST; after a re-registration the worker sends single
 * RESULTs again until that broker sends a JOB_LIST (it may be an older
 * one). Credit and acks are as with JOB and RESULT. */
static void test_job_list_result_list(void **state)
{
    fx_t *f = *state;
    assert_int_equal(f->recs[0].cmd, LQ_W_READY);
    assert_int_equal(f->recs[0].list_max, LQ_MAX_BATCH);
    send_job_list(f, "b1", 0, 3);
    pump(f);
    assert_int_equal(f->nrunning, 3);
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.credit_out, 1); /* each job of the list took one credit */
    size_t mark = f->nrecs;
    finish(f, 0, LQ_OUTCOME_OK);
    finish(f, 2, LQ_OUTCOME_RETRYABLE);
    pump(f);
    assert_int_equal(f->nlists, 1); /* both results in one message */
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 2);
    assert_true(f->recs[mark].in_list && f->recs[mark + 1].in_list);
    assert_int_equal(f->recs[mark].index, 0);
    assert_int_equal(f->recs[mark + 1].index, 2);
    assert_int_equal(f->recs[mark + 1].outcome, LQ_OUTCOME_RETRYABLE);
    int64_t sum;
    assert_int_equal(count(f, mark, LQ_W_CREDIT, &sum), 1);
    assert_int_equal(sum, 2);
    send_ack(f, "b1", 0);
    pump(f);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.unacked, 1);
    /* "register again": READY, then the unacknowledged result alone */
    mark = f->nrecs;
    send_simple(f, LQ_W_DISCONNECT);
    pump(f);
    assert_int_equal(f->recs[mark].cmd, LQ_W_READY);
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 1);
    assert_int_equal(f->recs[mark + 1].cmd, LQ_W_RESULT);
    assert_false(f->recs[mark + 1].in_list);
    assert_int_equal(f->nlists, 1);
    /* a single JOB (an older broker): the result comes as RESULT */
    mark = f->nrecs;
    send_job(f, "b2", 5, 1);
    pump(f);
    finish(f, 3, LQ_OUTCOME_OK);
    pump(f);
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 1);
    assert_int_equal(f->nlists, 1);
    /* a JOB_LIST again: results go as RESULT_LIST */
    mark = f->nrecs;
    send_job_list(f, "b3", 0, 1);
    pump(f);
    finish(f, 1, LQ_OUTCOME_OK);
    finish(f, 4, LQ_OUTCOME_OK);
    pump(f);
    assert_int_equal(f->nlists, 2);
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 2);
}

static void test_duplicate_job(void **state)
{
    fx_t *f = *state;
    send_job(f, "b1", 7, 1);
    send_job(f, "b1", 8, 1);
    pump(f);
    assert_int_equal(f->nrunning, 2);
    size_t mark = f->nrecs;
    send_job(f, "b1", 7, 2); /* duplicate of a running job */
    pump(f);
    assert_int_equal(f->nrunning, 2);
    int64_t sum;
    assert_int_equal(count(f, mark, LQ_W_CREDIT, &sum), 1); /* its credit comes back */
    assert_int_equal(sum, 1);
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.credit_out, 2); /* 4 - 2 running */
    /* A new attempt of a job whose result is unacked supersedes it. */
    finish(f, 0, LQ_OUTCOME_RETRYABLE);
    pump(f);
    send_job(f, "b1", 7, 2);
    pump(f);
    assert_int_equal(f->nrunning, 3);
    assert_int_equal(f->running[2]->attempt, 2);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.superseded, 1);
    assert_int_equal(st.unacked, 0);
    assert_int_equal(st.inflight, 2);
    assert_int_equal(st.credit_out, 2);
}

static void test_unacked_cap(void **state)
{
    fx_t *f = *state; /* concurrency 2 */
    int64_t sum;
    for (int round = 0; round < 2; round++) {
        send_job(f, "b", 2 * round, 1);
        send_job(f, "b", 2 * round + 1, 1);
        pump(f);
        finish(f, 2 * (size_t)round, LQ_OUTCOME_OK);
        finish(f, 2 * (size_t)round + 1, LQ_OUTCOME_OK);
        pump(f);
    }
    /* 4 unacked > concurrency 2: the first round's results re-granted 2,
     * the second round's none. */
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.unacked, 4);
    assert_int_equal(st.credit_out, 0);
    assert_int_equal(count(f, 0, LQ_W_CREDIT, &sum), 1);
    size_t mark = f->nrecs;
    send_ack(f, "b", 0);
    send_ack(f, "b", 1);
    pump(f);
    assert_int_equal(count(f, mark, LQ_W_CREDIT, &sum), 1);
    assert_int_equal(sum, 2);
}

static void test_disconnect_reregisters(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 3; i++)
        send_job(f, "b2", i, 1);
    pump(f);
    finish(f, 0, LQ_OUTCOME_OK);
    finish(f, 1, LQ_OUTCOME_OK);
    pump(f);
    size_t mark = f->nrecs;
    send_simple(f, LQ_W_DISCONNECT);
    pump(f);
    /* READY with the absolute free slots, then both unacked results. */
    assert_true(f->nrecs >= mark + 3);
    assert_int_equal(f->recs[mark].cmd, LQ_W_READY);
    assert_int_equal(f->recs[mark].credit, 3); /* 4 - 1 running */
    assert_int_equal(f->recs[mark + 1].cmd, LQ_W_RESULT);
    assert_int_equal(f->recs[mark + 1].index, 0);
    assert_int_equal(f->recs[mark + 2].cmd, LQ_W_RESULT);
    assert_int_equal(f->recs[mark + 2].index, 1);
    assert_int_equal(count(f, mark, LQ_W_CREDIT, NULL), 0);
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.credit_out, 3);
    assert_int_equal(st.reregistrations, 1);
}

static void test_overload_refused(void **state)
{
    fx_t *f = *state; /* concurrency 2: more than 4 at once is refused */
    for (int i = 0; i < 5; i++)
        send_job(f, "b3", i, 1);
    pump(f);
    assert_int_equal(f->nrunning, 4);
    int found = 0;
    for (size_t i = 0; i < f->nrecs; i++)
        if (f->recs[i].cmd == LQ_W_RESULT && f->recs[i].index == 4) {
            assert_string_equal(f->recs[i].code, "worker_overloaded");
            assert_int_equal(f->recs[i].outcome, LQ_OUTCOME_RETRYABLE);
            found = 1;
        }
    assert_true(found);
}

/* Advances the clock a second at a time until the session reconnects;
 * returns the number of steps. */
static int steps_until_reconnect(fx_t *f)
{
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    uint64_t before = st.reconnects;
    for (int i = 1; i <= 100; i++) {
        f->now += 1000;
        pump(f);
        lq_session_stats(f->s, &st);
        if (st.reconnects != before)
            return i;
    }
    return -1;
}

static void test_heartbeat_and_reconnect(void **state)
{
    fx_t *f = *state;
    send_job(f, "b4", 0, 1);
    send_job(f, "b4", 1, 1);
    pump(f);
    finish(f, 0, LQ_OUTCOME_OK); /* unacked, to be re-sent */
    pump(f);
    /* The broker keeps talking: no reconnect however long it runs. */
    for (int i = 0; i < 10; i++) {
        f->now += 1000;
        send_simple(f, LQ_W_HEARTBEAT);
        pump(f);
    }
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.reconnects, 0);
    assert_int_equal(st.connected, 1);
    /* Silence for liveness intervals: a new socket, READY, the result again. */
    size_t mark = f->nrecs;
    for (int i = 0; i < 4; i++) {
        f->now += 1000;
        pump(f);
    }
    lq_session_stats(f->s, &st);
    assert_int_equal(st.reconnects, 1);
    assert_int_equal(st.connected, 0);
    assert_true(f->nrecs >= mark + 2);
    assert_int_equal(f->recs[mark].cmd, LQ_W_READY);
    assert_int_equal(f->recs[mark].credit, 3);
    assert_int_equal(f->recs[mark + 1].cmd, LQ_W_RESULT);
    assert_int_equal(f->recs[mark + 1].index, 0);
    /* The running job is untouched and reports on the new socket. */
    finish(f, 1, LQ_OUTCOME_OK);
    send_simple(f, LQ_W_HEARTBEAT);
    pump(f);
    assert_int_equal(f->recs[f->nrecs - 2].cmd, LQ_W_RESULT);
    assert_int_equal(f->recs[f->nrecs - 2].index, 1);
    assert_int_equal(f->recs[f->nrecs - 1].cmd, LQ_W_CREDIT);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.connected, 1);
    assert_int_equal(st.credit_out, 4);
    /* Backoff: with the broker gone, each silent period tolerated is one
     * heartbeat longer (3 s, then 3+1, then 3+2 ...). */
    assert_int_equal(steps_until_reconnect(f), 3); /* heard from it: no backoff */
    assert_int_equal(steps_until_reconnect(f), 4);
    assert_int_equal(steps_until_reconnect(f), 5);
    assert_int_equal(steps_until_reconnect(f), 7);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.reconnects, 5);
}

/* Two brokers: the session talks to one; when it goes silent the session
 * moves to the other, registers there and re-sends its unacked result. */
static void test_failover_to_next_broker(void **state)
{
    fx_t *f = *state;
    lq_session_destroy(&f->s, 0);
    fx_t *g = s_second = xcalloc(1, sizeof *g);
    g->loop = f->loop;
    snprintf(g->endpoint, sizeof g->endpoint, "%.60s-b", f->endpoint);
    g->router = lq_zsock_new(f->loop, f->zctx, ZMQ_ROUTER, on_router, g);
    int one = 1;
    zmq_setsockopt(lq_zsock_raw(g->router), ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    assert_int_equal(lq_zsock_bind(g->router, g->endpoint), 0);
    char list[160];
    snprintf(list, sizeof list, "%s,%s", f->endpoint, g->endpoint);
    static const char *ups[] = {"default"};
    lq_session_config_t cfg = {.endpoint = list, .id = "w-ha", .concurrency = 4,
                               .heartbeat_ms = 1000, .liveness = 3,
                               .drain_timeout_ms = 30000, .upstreams = ups, .nupstreams = 1};
    f->nrecs = 0;
    f->s = lq_session_new(f->loop, f->zctx, &cfg, on_exec, on_exit_cb, f);
    assert_int_equal(lq_session_start(f->s), 0);
    pump(f);
    /* one broker, picked by the id's hash, hears READY; the other nothing */
    fx_t *first = f->nrecs ? f : g, *second = first == f ? g : f;
    assert_true(first->nrecs >= 1);
    assert_int_equal(first->recs[0].cmd, LQ_W_READY);
    assert_int_equal(second->nrecs, 0);
    send_job(first, "bh", 7, 1);
    pump(f);
    finish(f, 0, LQ_OUTCOME_OK); /* its RESULT goes to first, never acked */
    pump(f);
    assert_int_equal(count(first, 0, LQ_W_RESULT, NULL), 1);
    for (int i = 0; i < 4; i++) { /* first goes silent */
        f->now += 1000;
        pump(f);
    }
    lq_session_stats_t st;
    lq_session_stats(f->s, &st);
    assert_int_equal(st.reconnects, 1);
    assert_true(second->nrecs >= 2);
    assert_int_equal(second->recs[0].cmd, LQ_W_READY);
    assert_int_equal(second->recs[1].cmd, LQ_W_RESULT);
    assert_int_equal(second->recs[1].index, 7);
    /* the second one acknowledges: the result is released */
    send_ack(second, "bh", 7);
    pump(f);
    lq_session_stats(f->s, &st);
    assert_int_equal(st.unacked, 0);
    assert_int_equal(st.connected, 1);
    lq_session_destroy(&f->s, 0);
}

static void test_drain(void **state)
{
    fx_t *f = *state;
    send_job(f, "b5", 0, 1);
    send_job(f, "b5", 1, 1);
    pump(f);
    size_t mark = f->nrecs;
    lq_session_drain(f->s);
    pump(f);
    assert_int_equal(f->recs[mark].cmd, LQ_W_READY);
    assert_int_equal(f->recs[mark].credit, 0);
    /* A JOB granted earlier still runs. */
    send_job(f, "b5", 2, 1);
    pump(f);
    assert_int_equal(f->nrunning, 3);
    finish(f, 0, LQ_OUTCOME_OK);
    finish(f, 1, LQ_OUTCOME_OK);
    finish(f, 2, LQ_OUTCOME_OK);
    pump(f);
    assert_int_equal(count(f, mark, LQ_W_RESULT, NULL), 3);
    assert_int_equal(count(f, mark, LQ_W_CREDIT, NULL), 0);
    assert_int_equal(f->exited, 0); /* waiting for the acks */
    send_ack(f, "b5", 0);
    send_ack(f, "b5", 1);
    pump(f);
    assert_int_equal(f->exited, 0);
    send_ack(f, "b5", 2);
    pump(f);
    assert_int_equal(f->exited, 1);
    assert_int_equal(f->exit_code, 0);
    assert_int_equal(f->recs[f->nrecs - 1].cmd, LQ_W_DISCONNECT);
}

static void test_drain_timeout(void **state)
{
    fx_t *f = *state;
    send_job(f, "b6", 0, 1);
    pump(f);
    lq_session_drain(f->s);
    pump(f);
    for (int i = 0; i < 29; i++) {
        f->now += 1000;
        send_simple(f, LQ_W_HEARTBEAT);
        pump(f);
    }
    assert_int_equal(f->exited, 0);
    f->now += 1000;
    pump(f);
    assert_int_equal(f->exited, 1);
    assert_int_equal(f->recs[f->nrecs - 1].cmd, LQ_W_DISCONNECT);
    /* The abandoned job is freed by lq_session_destroy (teardown). */
}

static void test_jobtab(void **state)
{
    (void)state;
    lq_jobtab_t *t = lq_jobtab_new();
    lq_wlist_t l;
    lq_wlist_init(&l, LQ_WL_SENDQ);
    char batch[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(batch, sizeof batch, "batch-%d", i % 7);
        lq_w_job_t m = {
            .batch = batch, .index = i, .attempt = 1, .url = "/x", .body = "{}", .body_len = 2};
        lq_wjob_t *j = lq_wjob_new(&m, 0);
        assert_null(lq_jobtab_find(t, batch, i));
        lq_jobtab_insert(t, j);
        if (i % 3 == 0)
            lq_wlist_push(&l, j);
    }
    assert_int_equal(lq_jobtab_count(t), 5000);
    assert_int_equal(l.len, 1667);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(batch, sizeof batch, "batch-%d", i % 7);
        lq_wjob_t *j = lq_jobtab_find(t, batch, i);
        assert_non_null(j);
        assert_int_equal(j->index, i);
        assert_null(lq_jobtab_find(t, "batch-x", i));
        lq_wlist_remove(&l, j);
        lq_wlist_remove(&l, j); /* twice is harmless */
        lq_jobtab_remove(t, j);
        lq_wjob_destroy(&j);
    }
    assert_int_equal(lq_jobtab_count(t), 2500);
    size_t n = 0;
    int64_t prev = -1;
    for (lq_wjob_t *j = l.head; j; j = j->link[LQ_WL_SENDQ].next, n++) {
        assert_true(j->index > prev); /* order kept */
        assert_int_equal(j->index % 2, 1);
        prev = j->index;
    }
    assert_int_equal(n, l.len);
    /* A DONE record's RESULT message. */
    lq_wjob_t *j = lq_jobtab_find(t, "batch-1", 1);
    assert_non_null(j);
    lq_msg_t m = {0};
    lq_wjob_result_msg(j, &m);
    assert_int_equal(m.cmd, LQ_W_RESULT);
    assert_int_equal(m.u.result.retry_after_ms, -1);
    assert_int_equal(m.u.result.rl_limit_tokens, -1);
    assert_int_equal(m.u.result.prompt_tokens, -1);
    assert_null(m.u.result.request_id);
    lq_jobtab_destroy(&t);
    assert_null(t);
}

int main(void)
{
    lq_log_set_level(LQ_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_jobs_results_credit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_job_list_result_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_job, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_unacked_cap, fx_setup_2, fx_teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_reregisters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_overload_refused, fx_setup_2, fx_teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_and_reconnect, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failover_to_next_broker, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_drain, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout, fx_setup, fx_teardown),
        cmocka_unit_test(test_jobtab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
