/* test_msg: the proto/msg codec. Round trips of every message with every
 * field set, byte-exact encodings (so a format change fails loudly), every
 * kind of malformed body the decoder must refuse, and random mutations of
 * valid bodies (the decoder must return cleanly; what it accepts must
 * re-encode and decode again).
 *
 * `test_msg --write-seeds DIR` writes one fuzz seed per command (first byte
 * the command, then the body) instead of running the tests. */
#define _GNU_SOURCE
#include "proto/msg.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

static const uint8_t s_all_cmds[] = {
    LQ_C_OPEN,       LQ_C_CHUNK,     LQ_C_CLOSE,        LQ_C_STATUS,     LQ_C_RESULTS,
    LQ_C_CANCEL,     LQ_C_LIST,      LQ_C_WORKERS,      LQ_C_OPENED,     LQ_C_CHUNK_ACK,
    LQ_C_CLOSED,     LQ_C_BATCH,     LQ_C_RESULTS_PAGE, LQ_C_LIST_REPLY, LQ_C_WORKERS_REPLY,
    LQ_C_ERROR,      LQ_W_READY,     LQ_W_CREDIT,       LQ_W_JOB,        LQ_W_RESULT,
    LQ_W_RESULT_ACK, LQ_W_HEARTBEAT, LQ_W_DISCONNECT,   LQ_W_JOB_LIST,   LQ_W_RESULT_LIST,
};
#define NCMDS (sizeof s_all_cmds / sizeof s_all_cmds[0])

/* ---- sample messages ----------------------------------------------------- */

static lq_job_spec_t s_jobs[2] = {
    {"r1", "/v1/chat/completions", "{\"model\":\"m\"}", 13, 42},
    {"r-2", "/v1/embeddings", "{\"input\":\"a\\u0000b\"}", 20, 0},
};
static lq_result_item_t s_items[2] = {
    {0, 0, "{\"id\":\"x\",\"custom_id\":\"r1\"}", 27},
    {1, 1, "{\"custom_id\":\"r-2\",\"error\":{}}", 30},
};
static lq_batch_info_t s_infos[2] = {
    {"b-1", "nightly", "in_progress", "default", 1000, 900, 10, 30, 2, 80, 10, 123456, 654321,
     1700000000, 0, -5, 5, 600000},
    {"b-2", "", "completed", "openai", 3, 3, 0, 0, 0, 0, 0, 1, 2, 1700000001, 1700000100, 100, 1,
     1},
};
static lq_worker_info_t s_workers[2] = {
    {"w-a", 64, 10, 54, 99999, 120},
    {"w-b", 1, 0, 0, 0, 5000},
};
static const char *s_upstreams[3] = {"default", "openai", "azure-eu"};
static lq_job_ref_t s_refs[3] = {{"b-1", 0}, {"b-1", 7}, {"b-2", 1234567890123LL}};
static const char s_nul_body[] = "{\"a\":1}\0tail";
static lq_w_job_t s_wjobs[2] = {
    {"b-1", 17, 3, "openai", "/v1/chat/completions", s_nul_body, sizeof s_nul_body - 1, 86400000},
    {"b-2", 0, 1, "default", "/v1/embeddings", "{}", 2, 1},
};
static lq_w_result_t s_wresults[2] = {
    {"b-1", 17, 3, LQ_OUTCOME_RETRYABLE, 429, "{\"error\":{}}", 12, "req_1", "http_429",
     "429 Too Many Requests", 1500, -1, -1, 0, 1200, 250, 6000, 500, 200000, 812},
    {"b-2", 0, 1, LQ_OUTCOME_OK, 200, "{\"usage\":{}}", 12, NULL, NULL, NULL, -1, 10, 20, -1, -1,
     -1, -1, -1, -1, 3},
};

/* Fills m with a message of command cmd with every field set (pointers to
 * static storage). Returns 0, or -1 for a command it does not know. */
static int s_sample(uint8_t cmd, lq_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->cmd = cmd;
    switch (cmd) {
    case LQ_C_OPEN:
        m->u.open = (lq_c_open_t){77, "nightly", "openai", 5, 600000, -3};
        break;
    case LQ_C_OPENED:
        m->u.opened = (lq_c_opened_t){77, "b-1", 1, 1234, "submitting"};
        break;
    case LQ_C_CHUNK:
        m->u.chunk = (lq_c_chunk_t){78, "b-1", 1000, s_jobs, 2};
        break;
    case LQ_C_CHUNK_ACK:
        m->u.chunk_ack = (lq_c_chunk_ack_t){78, "b-1", 1002};
        break;
    case LQ_C_CLOSE:
        m->u.close = (lq_c_close_t){79, "b-1", 1002};
        break;
    case LQ_C_STATUS:
    case LQ_C_CANCEL:
    case LQ_C_CLOSED:
        m->u.batch_req = (lq_c_batch_req_t){80, "b-1"};
        break;
    case LQ_C_BATCH:
        m->u.batch.req = 81;
        m->u.batch.info = s_infos[0];
        break;
    case LQ_C_RESULTS:
        m->u.results = (lq_c_results_t){82, "b-1", 500, 10000};
        break;
    case LQ_C_RESULTS_PAGE:
        m->u.results_page = (lq_c_results_page_t){82, "b-1", 2, 1, s_items, 2};
        break;
    case LQ_C_LIST:
    case LQ_C_WORKERS:
    case LQ_W_HEARTBEAT:
    case LQ_W_DISCONNECT:
        m->u.simple.req = UINT64_MAX;
        break;
    case LQ_C_LIST_REPLY:
        m->u.list_reply = (lq_c_list_reply_t){83, s_infos, 2};
        break;
    case LQ_C_WORKERS_REPLY:
        m->u.workers_reply = (lq_c_workers_reply_t){84, s_workers, 2};
        break;
    case LQ_C_ERROR:
        m->u.error = (lq_c_error_t){85, "not_found", "no batch \"b-9\""};
        break;
    case LQ_W_READY:
        m->u.ready = (lq_w_ready_t){"worker-1", 64, 60, s_upstreams, 3, LQ_MAX_BATCH};
        break;
    case LQ_W_CREDIT:
        m->u.credit.credit = 1000000;
        break;
    case LQ_W_JOB:
        m->u.job = (lq_w_job_t){
            "b-1",   17, 3, "openai", "/v1/chat/completions", s_nul_body, sizeof s_nul_body - 1,
            86400000};
        break;
    case LQ_W_RESULT:
        m->u.result = (lq_w_result_t){"b-1",
                                      17,
                                      3,
                                      LQ_OUTCOME_RETRYABLE,
                                      429,
                                      "{\"error\":{\"message\":\"slow down\"}}",
                                      33,
                                      "req_abc123",
                                      "rate_limited",
                                      "429 Too Many Requests",
                                      1500,
                                      120,
                                      -1,
                                      9000,
                                      1200000,
                                      250,
                                      60000,
                                      812};
        break;
    case LQ_W_RESULT_ACK:
        m->u.result_ack = (lq_w_result_ack_t){s_refs, 3};
        break;
    case LQ_W_JOB_LIST:
        m->u.job_list = (lq_w_job_list_t){s_wjobs, 2};
        break;
    case LQ_W_RESULT_LIST:
        m->u.result_list = (lq_w_result_list_t){s_wresults, 2};
        break;
    default:
        return -1;
    }
    return 0;
}

/* Encodes m into a fresh buffer the caller frees with lq_buf_clear(). */
static lq_buf_t s_enc(const lq_msg_t *m)
{
    lq_buf_t b = {0};
    assert_int_equal(lq_msg_encode(m, &b), 0);
    return b;
}

/* Decodes b for cmd and fails the test with the reason if it is refused. */
static void s_dec_ok(uint8_t cmd, const void *b, size_t len, lq_msg_t *out)
{
    char err[128] = "";
    int rc = lq_msg_decode(cmd, b, len, out, err, sizeof err);
    if (rc != 0)
        fail_msg("decode %s failed: %s", lq_cmd_name(cmd), err);
}

/* Asserts that decoding is refused, that m is left empty and that the
 * reason contains want (when not NULL). */
static void s_dec_bad(uint8_t cmd, const void *b, size_t len, const char *want)
{
    lq_msg_t m;
    char err[128] = "";
    memset(&m, 0xab, sizeof m);
    assert_int_equal(lq_msg_decode(cmd, b, len, &m, err, sizeof err), -1);
    assert_null(m.arena_);
    assert_int_equal(m.cmd, 0);
    assert_true(err[0] != '\0');
    if (want && !strstr(err, want))
        fail_msg("%s: error \"%s\" does not mention \"%s\"", lq_cmd_name(cmd), err, want);
    lq_msg_clear(&m);
}

static void s_from_hex(const char *hex, uint8_t *out, size_t *len)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *len = n;
}

static void s_assert_hex(const lq_buf_t *b, const char *hex)
{
    uint8_t want[512];
    size_t n;
    s_from_hex(hex, want, &n);
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
}

/* ---- round trips ----------------------------------------------------------- */

#define STR_EQ(a, b) assert_string_equal((a), (b))
#define INT_EQ(a, b) assert_true((int64_t)(a) == (int64_t)(b))

static void s_info_eq(const lq_batch_info_t *a, const lq_batch_info_t *b)
{
    STR_EQ(a->id, b->id);
    STR_EQ(a->name, b->name);
    STR_EQ(a->state, b->state);
    STR_EQ(a->upstream, b->upstream);
    INT_EQ(a->total, b->total);
    INT_EQ(a->completed, b->completed);
    INT_EQ(a->failed, b->failed);
    INT_EQ(a->retried, b->retried);
    INT_EQ(a->duplicates, b->duplicates);
    INT_EQ(a->pending, b->pending);
    INT_EQ(a->inflight, b->inflight);
    INT_EQ(a->prompt_tokens, b->prompt_tokens);
    INT_EQ(a->completion_tokens, b->completion_tokens);
    INT_EQ(a->created_at, b->created_at);
    INT_EQ(a->finished_at, b->finished_at);
    INT_EQ(a->priority, b->priority);
    INT_EQ(a->max_attempts, b->max_attempts);
    INT_EQ(a->timeout_ms, b->timeout_ms);
}

static void s_job_eq(const lq_w_job_t *a, const lq_w_job_t *b)
{
    STR_EQ(a->batch, b->batch);
    INT_EQ(a->index, b->index);
    INT_EQ(a->attempt, b->attempt);
    STR_EQ(a->upstream, b->upstream);
    STR_EQ(a->url, b->url);
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
    INT_EQ(a->timeout_ms, b->timeout_ms);
}

/* Optional strings: both NULL or equal. */
static void s_opt_eq(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        STR_EQ(a, b);
}

static void s_result_eq(const lq_w_result_t *x, const lq_w_result_t *y)
{
    STR_EQ(x->batch, y->batch);
    INT_EQ(x->index, y->index);
    INT_EQ(x->attempt, y->attempt);
    INT_EQ(x->outcome, y->outcome);
    INT_EQ(x->status, y->status);
    assert_int_equal(x->body_len, y->body_len);
    assert_memory_equal(x->body, y->body, x->body_len);
    s_opt_eq(x->request_id, y->request_id);
    s_opt_eq(x->error_code, y->error_code);
    s_opt_eq(x->error_message, y->error_message);
    INT_EQ(x->retry_after_ms, y->retry_after_ms);
    INT_EQ(x->prompt_tokens, y->prompt_tokens);
    INT_EQ(x->completion_tokens, y->completion_tokens);
    INT_EQ(x->rl_remaining_requests, y->rl_remaining_requests);
    INT_EQ(x->rl_remaining_tokens, y->rl_remaining_tokens);
    INT_EQ(x->rl_reset_requests_ms, y->rl_reset_requests_ms);
    INT_EQ(x->rl_reset_tokens_ms, y->rl_reset_tokens_ms);
    INT_EQ(x->rl_limit_requests, y->rl_limit_requests);
    INT_EQ(x->rl_limit_tokens, y->rl_limit_tokens);
    INT_EQ(x->latency_ms, y->latency_ms);
}

/* Field-by-field equality of two messages of the same command. */
static void s_msg_eq(const lq_msg_t *a, const lq_msg_t *b)
{
    assert_int_equal(a->cmd, b->cmd);
    switch (a->cmd) {
    case LQ_C_OPEN:
        INT_EQ(a->u.open.req, b->u.open.req);
        STR_EQ(a->u.open.name, b->u.open.name);
        STR_EQ(a->u.open.upstream, b->u.open.upstream);
        INT_EQ(a->u.open.max_attempts, b->u.open.max_attempts);
        INT_EQ(a->u.open.timeout_ms, b->u.open.timeout_ms);
        INT_EQ(a->u.open.priority, b->u.open.priority);
        break;
    case LQ_C_OPENED:
        INT_EQ(a->u.opened.req, b->u.opened.req);
        STR_EQ(a->u.opened.batch, b->u.opened.batch);
        INT_EQ(a->u.opened.created, b->u.opened.created);
        INT_EQ(a->u.opened.next_index, b->u.opened.next_index);
        STR_EQ(a->u.opened.state, b->u.opened.state);
        break;
    case LQ_C_CHUNK:
        INT_EQ(a->u.chunk.req, b->u.chunk.req);
        STR_EQ(a->u.chunk.batch, b->u.chunk.batch);
        INT_EQ(a->u.chunk.first, b->u.chunk.first);
        assert_int_equal(a->u.chunk.njobs, b->u.chunk.njobs);
        for (size_t i = 0; i < a->u.chunk.njobs; i++) {
            const lq_job_spec_t *x = &a->u.chunk.jobs[i], *y = &b->u.chunk.jobs[i];
            STR_EQ(x->custom_id, y->custom_id);
            STR_EQ(x->url, y->url);
            assert_int_equal(x->body_len, y->body_len);
            assert_memory_equal(x->body, y->body, x->body_len);
            INT_EQ(x->est_tokens, y->est_tokens);
        }
        break;
    case LQ_C_CHUNK_ACK:
        INT_EQ(a->u.chunk_ack.req, b->u.chunk_ack.req);
        STR_EQ(a->u.chunk_ack.batch, b->u.chunk_ack.batch);
        INT_EQ(a->u.chunk_ack.next_index, b->u.chunk_ack.next_index);
        break;
    case LQ_C_CLOSE:
        INT_EQ(a->u.close.req, b->u.close.req);
        STR_EQ(a->u.close.batch, b->u.close.batch);
        INT_EQ(a->u.close.total, b->u.close.total);
        break;
    case LQ_C_STATUS:
    case LQ_C_CANCEL:
    case LQ_C_CLOSED:
        INT_EQ(a->u.batch_req.req, b->u.batch_req.req);
        STR_EQ(a->u.batch_req.batch, b->u.batch_req.batch);
        break;
    case LQ_C_BATCH:
        INT_EQ(a->u.batch.req, b->u.batch.req);
        s_info_eq(&a->u.batch.info, &b->u.batch.info);
        break;
    case LQ_C_RESULTS:
        INT_EQ(a->u.results.req, b->u.results.req);
        STR_EQ(a->u.results.batch, b->u.results.batch);
        INT_EQ(a->u.results.from, b->u.results.from);
        INT_EQ(a->u.results.max, b->u.results.max);
        break;
    case LQ_C_RESULTS_PAGE:
        INT_EQ(a->u.results_page.req, b->u.results_page.req);
        STR_EQ(a->u.results_page.batch, b->u.results_page.batch);
        INT_EQ(a->u.results_page.next, b->u.results_page.next);
        INT_EQ(a->u.results_page.done, b->u.results_page.done);
        assert_int_equal(a->u.results_page.nitems, b->u.results_page.nitems);
        for (size_t i = 0; i < a->u.results_page.nitems; i++) {
            const lq_result_item_t *x = &a->u.results_page.items[i];
            const lq_result_item_t *y = &b->u.results_page.items[i];
            INT_EQ(x->index, y->index);
            INT_EQ(x->failed, y->failed);
            assert_int_equal(x->line_len, y->line_len);
            assert_memory_equal(x->line, y->line, x->line_len);
        }
        break;
    case LQ_C_LIST:
    case LQ_C_WORKERS:
    case LQ_W_HEARTBEAT:
    case LQ_W_DISCONNECT:
        assert_true(a->u.simple.req == b->u.simple.req);
        break;
    case LQ_C_LIST_REPLY:
        INT_EQ(a->u.list_reply.req, b->u.list_reply.req);
        assert_int_equal(a->u.list_reply.nbatches, b->u.list_reply.nbatches);
        for (size_t i = 0; i < a->u.list_reply.nbatches; i++)
            s_info_eq(&a->u.list_reply.batches[i], &b->u.list_reply.batches[i]);
        break;
    case LQ_C_WORKERS_REPLY:
        INT_EQ(a->u.workers_reply.req, b->u.workers_reply.req);
        assert_int_equal(a->u.workers_reply.nworkers, b->u.workers_reply.nworkers);
        for (size_t i = 0; i < a->u.workers_reply.nworkers; i++) {
            const lq_worker_info_t *x = &a->u.workers_reply.workers[i];
            const lq_worker_info_t *y = &b->u.workers_reply.workers[i];
            STR_EQ(x->id, y->id);
            INT_EQ(x->concurrency, y->concurrency);
            INT_EQ(x->inflight, y->inflight);
            INT_EQ(x->credit, y->credit);
            INT_EQ(x->completed, y->completed);
            INT_EQ(x->last_seen_ms, y->last_seen_ms);
        }
        break;
    case LQ_C_ERROR:
        INT_EQ(a->u.error.req, b->u.error.req);
        STR_EQ(a->u.error.code, b->u.error.code);
        STR_EQ(a->u.error.message, b->u.error.message);
        break;
    case LQ_W_READY:
        STR_EQ(a->u.ready.worker, b->u.ready.worker);
        INT_EQ(a->u.ready.concurrency, b->u.ready.concurrency);
        INT_EQ(a->u.ready.credit, b->u.ready.credit);
        assert_int_equal(a->u.ready.nupstreams, b->u.ready.nupstreams);
        for (size_t i = 0; i < a->u.ready.nupstreams; i++)
            STR_EQ(a->u.ready.upstreams[i], b->u.ready.upstreams[i]);
        INT_EQ(a->u.ready.batch, b->u.ready.batch);
        break;
    case LQ_W_CREDIT:
        INT_EQ(a->u.credit.credit, b->u.credit.credit);
        break;
    case LQ_W_JOB:
        s_job_eq(&a->u.job, &b->u.job);
        break;
    case LQ_W_RESULT:
        s_result_eq(&a->u.result, &b->u.result);
        break;
    case LQ_W_JOB_LIST:
        assert_int_equal(a->u.job_list.njobs, b->u.job_list.njobs);
        for (size_t i = 0; i < a->u.job_list.njobs; i++)
            s_job_eq(&a->u.job_list.jobs[i], &b->u.job_list.jobs[i]);
        break;
    case LQ_W_RESULT_LIST:
        assert_int_equal(a->u.result_list.nresults, b->u.result_list.nresults);
        for (size_t i = 0; i < a->u.result_list.nresults; i++)
            s_result_eq(&a->u.result_list.results[i], &b->u.result_list.results[i]);
        break;
    case LQ_W_RESULT_ACK:
        assert_int_equal(a->u.result_ack.njobs, b->u.result_ack.njobs);
        for (size_t i = 0; i < a->u.result_ack.njobs; i++) {
            STR_EQ(a->u.result_ack.jobs[i].batch, b->u.result_ack.jobs[i].batch);
            INT_EQ(a->u.result_ack.jobs[i].index, b->u.result_ack.jobs[i].index);
        }
        break;
    default:
        fail_msg("no comparison for command 0x%02x", a->cmd);
    }
}

/* Every command: encode the full sample, decode, compare every field, and
 * check that re-encoding the decoded message gives the same bytes. */
static void test_roundtrip_all(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCMDS; i++) {
        lq_msg_t in, out;
        assert_int_equal(s_sample(s_all_cmds[i], &in), 0);
        lq_buf_t b = s_enc(&in);
        s_dec_ok(in.cmd, b.data, b.len, &out);
        s_msg_eq(&in, &out);
        lq_buf_t b2 = s_enc(&out);
        assert_int_equal(b.len, b2.len);
        assert_memory_equal(b.data, b2.data, b.len);
        lq_msg_clear(&out);
        assert_null(out.arena_);
        lq_buf_clear(&b);
        lq_buf_clear(&b2);
        assert_null(b.data);
    }
}

/* Extremes of the integer ranges survive, and a body with a NUL keeps its
 * length and bytes. */
static void test_roundtrip_extremes(void **state)
{
    (void)state;
    lq_msg_t in, out;
    s_sample(LQ_W_RESULT, &in);
    in.u.result.index = INT64_MAX;
    in.u.result.retry_after_ms = -1;
    in.u.result.latency_ms = 0;
    in.u.result.status = 0;
    lq_buf_t b = s_enc(&in);
    s_dec_ok(in.cmd, b.data, b.len, &out);
    s_msg_eq(&in, &out);
    lq_msg_clear(&out);

    s_sample(LQ_W_JOB, &in);
    lq_buf_clear(&b);
    b = s_enc(&in);
    s_dec_ok(in.cmd, b.data, b.len, &out);
    assert_int_equal(out.u.job.body_len, sizeof s_nul_body - 1);
    assert_memory_equal(out.u.job.body, s_nul_body, sizeof s_nul_body);
    lq_msg_clear(&out);

    s_sample(LQ_C_OPEN, &in);
    in.u.open.priority = -100;
    in.u.open.max_attempts = 100;
    lq_buf_clear(&b);
    b = s_enc(&in);
    s_dec_ok(in.cmd, b.data, b.len, &out);
    s_msg_eq(&in, &out);
    lq_msg_clear(&out);
    lq_buf_clear(&b);
}

/* Optional fields: NULL strings are left out and come back NULL (or "" for
 * batch info name/upstream); -1 defaults come back when absent. */
static void test_optional_fields(void **state)
{
    (void)state;
    lq_msg_t in, out;
    s_sample(LQ_C_OPEN, &in);
    in.u.open.name = NULL;
    in.u.open.upstream = NULL;
    lq_buf_t b = s_enc(&in);
    assert_null(memmem(b.data, b.len, "name", 4));
    s_dec_ok(in.cmd, b.data, b.len, &out);
    assert_null(out.u.open.name);
    assert_null(out.u.open.upstream);
    lq_msg_clear(&out);
    lq_buf_clear(&b);

    memset(&in, 0, sizeof in);
    in.cmd = LQ_W_RESULT;
    in.u.result = (lq_w_result_t){.batch = "b", .index = 1, .attempt = 1, .status = 200};
    b = s_enc(&in);
    s_dec_ok(in.cmd, b.data, b.len, &out);
    assert_null(out.u.result.body);
    assert_int_equal(out.u.result.body_len, 0);
    assert_null(out.u.result.request_id);
    assert_null(out.u.result.error_code);
    assert_null(out.u.result.error_message);
    lq_msg_clear(&out);
    lq_buf_clear(&b);

    /* -1 (unknown) fields are left out and come back as -1; others stay */
    memset(&in, 0, sizeof in);
    in.cmd = LQ_W_RESULT;
    in.u.result = (lq_w_result_t){"b", 1, 1, LQ_OUTCOME_OK, 200, NULL, 0, NULL, NULL, NULL,
                                  -1, 7, -1, -1, -1, -1, -1, -1, -1, 0};
    b = s_enc(&in);
    assert_null(memmem(b.data, b.len, "rl_", 3));
    assert_null(memmem(b.data, b.len, "retry_after_ms", 14));
    assert_null(memmem(b.data, b.len, "completion_tokens", 17));
    assert_non_null(memmem(b.data, b.len, "prompt_tokens", 13));
    assert_non_null(memmem(b.data, b.len, "latency_ms", 10));
    s_dec_ok(in.cmd, b.data, b.len, &out);
    s_msg_eq(&in, &out);
    lq_msg_clear(&out);
    lq_buf_clear(&b);

    /* RESULT with only the required keys: the -1 defaults apply. */
    uint8_t raw[128];
    size_t n;
    s_from_hex("85a56261746368a162a5696e64657801a7617474656d707401a76f7574636f6d6500"
               "a6737461747573ccc8",
               raw, &n);
    s_dec_ok(LQ_W_RESULT, raw, n, &out);
    assert_int_equal(out.u.result.status, 200);
    assert_int_equal(out.u.result.retry_after_ms, -1);
    assert_int_equal(out.u.result.prompt_tokens, -1);
    assert_int_equal(out.u.result.rl_reset_tokens_ms, -1);
    assert_int_equal(out.u.result.latency_ms, 0);
    lq_msg_clear(&out);

    /* BATCH info with only id and state: name/upstream are "". */
    s_from_hex("82a372657101a4696e666f82a26964a162a57374617465a474657374", raw, &n);
    s_dec_ok(LQ_C_BATCH, raw, n, &out);
    STR_EQ(out.u.batch.info.name, "");
    STR_EQ(out.u.batch.info.upstream, "");
    STR_EQ(out.u.batch.info.state, "test");
    INT_EQ(out.u.batch.info.total, 0);
    lq_msg_clear(&out);

    /* A zero body_len means strlen(body) to the encoder. */
    s_sample(LQ_W_JOB, &in);
    in.u.job.body = "{\"k\":true}";
    in.u.job.body_len = 0;
    b = s_enc(&in);
    s_dec_ok(in.cmd, b.data, b.len, &out);
    assert_int_equal(out.u.job.body_len, 10);
    STR_EQ(out.u.job.body, "{\"k\":true}");
    lq_msg_clear(&out);
    lq_buf_clear(&b);
}

/* ---- byte-exact vectors ------------------------------------------------ */

static void test_vectors(void **state)
{
    (void)state;
    lq_msg_t m;
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_HEARTBEAT;
    lq_buf_t b = s_enc(&m);
    s_assert_hex(&b, "80");
    m.u.simple.req = 7;
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "81a372657107");

    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_CREDIT;
    m.u.credit.credit = 5;
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "81a663726564697405");

    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_JOB;
    m.u.job = (lq_w_job_t){"b1", 3, 1, "default", "/v1/x", "{}", 2, 60000};
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "87a56261746368a26231a5696e64657803a7617474656d707401a87570737472"
                     "65616da764656661756c74a375726ca52f76312f78a4626f6479a27b7daa7469"
                     "6d656f75745f6d73cdea60");

    memset(&m, 0, sizeof m);
    m.cmd = LQ_C_CHUNK_ACK;
    m.u.chunk_ack = (lq_c_chunk_ack_t){7, "b1", 100};
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "83a372657107a56261746368a26231a46e65787464");

    lq_job_spec_t js = {"r1", "/v1/x", "{}", 2, 12};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_C_CHUNK;
    m.u.chunk = (lq_c_chunk_t){1, "b1", 0, &js, 1};
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "84a372657101a56261746368a26231a5666972737400a46a6f62739184a36369"
                     "64a27231a375726ca52f76312f78a4626f6479a27b7da36573740c");

    lq_job_ref_t ref = {"b1", 3};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_RESULT_ACK;
    m.u.result_ack = (lq_w_result_ack_t){&ref, 1};
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "81a46a6f62739182a56261746368a26231a5696e64657803");

    memset(&m, 0, sizeof m);
    m.cmd = LQ_C_OPEN;
    m.u.open = (lq_c_open_t){1, "nightly", NULL, 5, 600000, 0};
    lq_buf_clear(&b);
    b = s_enc(&m);
    s_assert_hex(&b, "85a372657101a46e616d65a76e696768746c79ac6d61785f617474656d707473"
                     "05aa74696d656f75745f6d73ce000927c0a87072696f7269747900");
    lq_buf_clear(&b);
}

/* ---- malformed input ---------------------------------------------------- */

/* Decodes a hex body for cmd and expects a refusal mentioning want. */
static void s_bad_hex(uint8_t cmd, const char *hex, const char *want)
{
    uint8_t raw[512];
    size_t n;
    s_from_hex(hex, raw, &n);
    s_dec_bad(cmd, raw, n, want);
}

static void test_bad_structure(void **state)
{
    (void)state;
    s_dec_bad(LQ_W_HEARTBEAT, NULL, 0, "empty");
    s_dec_bad(LQ_W_HEARTBEAT, "", 0, "empty");
    s_bad_hex(LQ_W_CREDIT, "05", "not a map");                    /* an int */
    s_bad_hex(LQ_W_CREDIT, "9105", "not a map");                  /* an array */
    s_bad_hex(LQ_W_CREDIT, "a3616263", "not a map");              /* a string */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974", "truncated");      /* value missing */
    s_bad_hex(LQ_W_CREDIT, "81a66372656469", "truncated");        /* key cut */
    s_bad_hex(LQ_W_CREDIT, "82a663726564697405", "truncated");    /* one pair short */
    s_bad_hex(LQ_W_CREDIT, "81a66372656469740580", "trailing");   /* a second map */
    s_bad_hex(LQ_W_CREDIT, "81a66372656469740500", "trailing");   /* one byte extra */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974c1", "invalid");      /* reserved byte */
    s_bad_hex(LQ_W_CREDIT, "8105a6637265646974", "not a string"); /* int key */
    /* Declared sizes far beyond the body are refused before anything is
     * allocated for them. */
    s_bad_hex(LQ_W_CREDIT, "dfffffffff", "larger than the body");
    s_bad_hex(LQ_W_CREDIT, "81a178ddffffffff", "larger than the body");
    s_bad_hex(LQ_W_CREDIT, "81a178dbffffffff", "truncated");
    s_bad_hex(LQ_W_CREDIT, "81a178c6ffffffff00", "truncated");
    /* Nesting: 16 levels inside an unknown key are fine, 17 are not. */
    uint8_t deep[64];
    size_t n = 0;
    deep[n++] = 0x82;
    memcpy(deep + n,
           "\xa6"
           "credit"
           "\x05"
           "\xa1x",
           10);
    n += 10;
    for (int i = 0; i < 15; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x90;
    lq_msg_t m;
    s_dec_ok(LQ_W_CREDIT, deep, n, &m);
    assert_int_equal(m.u.credit.credit, 5);
    lq_msg_clear(&m);
    deep[n - 1] = 0x91;
    deep[n++] = 0x90;
    s_dec_bad(LQ_W_CREDIT, deep, n, "deep");
}

static void test_bad_fields(void **state)
{
    (void)state;
    /* missing required keys */
    s_bad_hex(LQ_W_CREDIT, "80", "missing key 'credit'");
    s_bad_hex(LQ_C_CHUNK_ACK, "82a372657107a56261746368a26231", "missing key 'next'");
    s_bad_hex(LQ_C_CHUNK,
              "84a372657101a56261746368a26231a5666972737400a46a6f62739183a36369"
              "64a27231a375726ca52f76312f78a36573740c",
              "jobs[0]: missing key 'body'");
    /* wrong types */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974a135", "want an integer");               /* "5" */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974cb4014000000000000", "want an integer"); /* 5.0 */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974c0", "want an integer");                 /* nil */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974c3", "want an integer");                 /* true */
    s_bad_hex(LQ_C_CHUNK_ACK, "83a372657107a5626174636805a46e65787464", "want a string");
    s_bad_hex(LQ_C_OPENED,
              "85a372657101a56261746368a162a763726561746564"
              "01a46e65787400a57374617465a161",
              "want a boolean");
    s_bad_hex(LQ_W_RESULT_ACK, "81a46a6f627380", "want an array");
    s_bad_hex(LQ_W_RESULT_ACK, "81a46a6f62739101", "jobs[0]: want a map");
    s_bad_hex(LQ_C_BATCH, "82a372657101a4696e666f90", "info: want a map");
    /* integers out of range */
    s_bad_hex(LQ_W_CREDIT, "81a663726564697400", "out of range");         /* 0 */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974ce000f4241", "out of range"); /* 1000001 */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974ff", "out of range");         /* -1 */
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974cfffffffffffffffff", "out of range");
    s_bad_hex(LQ_W_CREDIT, "81a6637265646974cf8000000000000000", "out of range");
    s_bad_hex(LQ_C_CHUNK_ACK, "83a3726571ffa56261746368a26231a46e65787464", "negative");
    s_bad_hex(LQ_C_CHUNK_ACK, "83a372657107a56261746368a26231a46e657874ff", "out of range");
    /* a known key twice */
    s_bad_hex(LQ_W_CREDIT, "82a663726564697405a663726564697406", "duplicate key 'credit'");
    /* NUL inside an id */
    s_bad_hex(LQ_C_CHUNK_ACK, "83a372657107a56261746368a3620031a46e65787464", "NUL");
}

/* Unknown keys (any type, even nested) are skipped; bin is accepted where
 * a string is expected; negative-encoded non-negative ints are fine. */
static void test_lenient(void **state)
{
    (void)state;
    uint8_t raw[128];
    size_t n;
    lq_msg_t m;
    /* {"zz": {"a": [1, 2.5, nil]}, "credit": 5, "credit2": "x"} */
    s_from_hex("83a27a7a81a1619301cb4004000000000000c0a663726564697405a763726564697432a178", raw,
               &n);
    s_dec_ok(LQ_W_CREDIT, raw, n, &m);
    assert_int_equal(m.u.credit.credit, 5);
    lq_msg_clear(&m);
    /* unknown keys may repeat: they are never looked at */
    s_from_hex("83a178c0a178c0a663726564697405", raw, &n);
    s_dec_ok(LQ_W_CREDIT, raw, n, &m);
    lq_msg_clear(&m);
    /* batch as bin8, key as bin8, next as int8 0x64 */
    s_from_hex("83a372657107c4056261746368c4026231a46e657874d064", raw, &n);
    s_dec_ok(LQ_C_CHUNK_ACK, raw, n, &m);
    STR_EQ(m.u.chunk_ack.batch, "b1");
    INT_EQ(m.u.chunk_ack.next_index, 100);
    lq_msg_clear(&m);
    /* simple messages: req optional */
    s_from_hex("80", raw, &n);
    s_dec_ok(LQ_C_LIST, raw, n, &m);
    assert_true(m.u.simple.req == 0);
    lq_msg_clear(&m);
    s_from_hex("81a3726571cf0000000100000000", raw, &n);
    s_dec_ok(LQ_C_WORKERS, raw, n, &m);
    assert_true(m.u.simple.req == UINT64_C(1) << 32);
    lq_msg_clear(&m);
}

/* Builds a JOB body whose "body" string is n bytes of 'x'. */
static lq_buf_t s_job_with_body(size_t n)
{
    lq_msg_t m;
    s_sample(LQ_W_JOB, &m);
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    m.u.job.body = big;
    m.u.job.body_len = n;
    lq_buf_t b = s_enc(&m);
    free(big);
    return b;
}

static void test_limits(void **state)
{
    (void)state;
    lq_msg_t m, out;
    /* string limits: exactly at the limit passes, one more fails */
    char id[LQ_MAX_ID + 2];
    memset(id, 'i', sizeof id);
    id[LQ_MAX_ID] = '\0';
    s_sample(LQ_C_STATUS, &m);
    m.u.batch_req.batch = id;
    lq_buf_t b = s_enc(&m);
    s_dec_ok(m.cmd, b.data, b.len, &out);
    assert_int_equal(strlen(out.u.batch_req.batch), LQ_MAX_ID);
    lq_msg_clear(&out);
    lq_buf_clear(&b);
    id[LQ_MAX_ID] = 'i';
    id[LQ_MAX_ID + 1] = '\0';
    b = s_enc(&m);
    s_dec_bad(m.cmd, b.data, b.len, "over the limit");
    lq_buf_clear(&b);

    b = s_job_with_body(LQ_MAX_JOB_BODY);
    s_dec_ok(LQ_W_JOB, b.data, b.len, &out);
    assert_int_equal(out.u.job.body_len, LQ_MAX_JOB_BODY);
    lq_msg_clear(&out);
    lq_buf_clear(&b);
    b = s_job_with_body(LQ_MAX_JOB_BODY + 1);
    s_dec_bad(LQ_W_JOB, b.data, b.len, "'body': string of");
    lq_buf_clear(&b);

    /* array limits: CHUNK needs 1..LQ_MAX_ARRAY jobs */
    s_sample(LQ_C_CHUNK, &m);
    m.u.chunk.njobs = 0;
    b = s_enc(&m);
    s_dec_bad(m.cmd, b.data, b.len, "'jobs': 0 items");
    lq_buf_clear(&b);
    lq_job_ref_t *refs = calloc(LQ_MAX_ARRAY + 1, sizeof *refs);
    for (size_t i = 0; i <= LQ_MAX_ARRAY; i++)
        refs[i] = (lq_job_ref_t){"b", (int64_t)i};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_RESULT_ACK;
    m.u.result_ack = (lq_w_result_ack_t){refs, LQ_MAX_ARRAY};
    b = s_enc(&m);
    s_dec_ok(m.cmd, b.data, b.len, &out);
    assert_int_equal(out.u.result_ack.njobs, LQ_MAX_ARRAY);
    INT_EQ(out.u.result_ack.jobs[LQ_MAX_ARRAY - 1].index, LQ_MAX_ARRAY - 1);
    lq_msg_clear(&out);
    lq_buf_clear(&b);
    m.u.result_ack.njobs = LQ_MAX_ARRAY + 1;
    b = s_enc(&m);
    s_dec_bad(m.cmd, b.data, b.len, "100001 items");
    lq_buf_clear(&b);
    free(refs);

    /* at most 4 000 000 msgpack objects per body: {"x": [1, 1, ...]} holds
     * 3 + n objects */
    size_t cap = 4000000, blen = 8 + cap - 3;
    uint8_t *many = malloc(blen + 1);
    memcpy(many, "\x81\xa1x\xdd", 4);
    uint32_t cnt = (uint32_t)(cap - 3);
    for (int i = 0; i < 4; i++)
        many[4 + i] = (uint8_t)(cnt >> (24 - 8 * i));
    memset(many + 8, 1, cnt + 1);
    s_dec_ok(LQ_W_HEARTBEAT, many, blen, &out);
    lq_msg_clear(&out);
    cnt++;
    for (int i = 0; i < 4; i++)
        many[4 + i] = (uint8_t)(cnt >> (24 - 8 * i));
    s_dec_bad(LQ_W_HEARTBEAT, many, blen + 1, "too many objects");
    free(many);

    /* bodies over LQ_MAX_BODY are refused before any parsing */
    char *huge = calloc(1, (size_t)LQ_MAX_BODY + 1);
    huge[0] = (char)0x80;
    s_dec_bad(LQ_W_HEARTBEAT, huge, (size_t)LQ_MAX_BODY + 1, "over the limit");
    free(huge);
}

/* ---- the encoder writes what msgpack-c's packer writes ---------------------- */

static int s_pk_write(void *data, const char *buf, size_t len)
{
    msgpack_sbuffer *sb = data;
    return msgpack_sbuffer_write(sb, buf, len);
}

/* Asserts that b ends with what pack put into sb. */
static void s_assert_tail(const lq_buf_t *b, const msgpack_sbuffer *sb)
{
    assert_true(b->len >= sb->size);
    assert_memory_equal(b->data + b->len - sb->size, sb->data, sb->size);
}

static void test_encoder_matches_msgpack_c(void **state)
{
    (void)state;
    static const int64_t ints[] = {0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536,
                                   INT32_MAX, (int64_t)UINT32_MAX, (int64_t)UINT32_MAX + 1,
                                   INT64_MAX, -1, -31, -32, -33, -127, -128, -129, -32767,
                                   -32768, -32769, INT32_MIN, (int64_t)INT32_MIN - 1, INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        /* an int field last in its map: RESULT_ACK {"jobs": [{"batch", "index"}]} */
        lq_job_ref_t ref = {"b", ints[i]};
        lq_msg_t m;
        memset(&m, 0, sizeof m);
        m.cmd = LQ_W_RESULT_ACK;
        m.u.result_ack = (lq_w_result_ack_t){&ref, 1};
        lq_buf_t b = s_enc(&m);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, s_pk_write);
        msgpack_pack_int64(&pk, ints[i]);
        s_assert_tail(&b, &sb);
        lq_buf_clear(&b);
        /* and as an unsigned field (req) */
        if (ints[i] > 0) {
            memset(&m, 0, sizeof m);
            m.cmd = LQ_W_HEARTBEAT;
            m.u.simple.req = (uint64_t)ints[i];
            b = s_enc(&m);
            msgpack_sbuffer_clear(&sb);
            msgpack_pack_uint64(&pk, (uint64_t)ints[i]);
            s_assert_tail(&b, &sb);
            lq_buf_clear(&b);
        }
        msgpack_sbuffer_destroy(&sb);
    }
    static const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536, 70000};
    char *text = malloc(70001);
    memset(text, 'x', 70000);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        /* a string last in its map, and an array of that many strings */
        text[lens[i]] = '\0';
        lq_msg_t m;
        memset(&m, 0, sizeof m);
        m.cmd = LQ_C_ERROR;
        m.u.error = (lq_c_error_t){1, "c", text};
        lq_buf_t b = s_enc(&m);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, s_pk_write);
        msgpack_pack_str(&pk, lens[i]);
        msgpack_pack_str_body(&pk, text, lens[i]);
        s_assert_tail(&b, &sb);
        lq_buf_clear(&b);
        text[lens[i]] = 'x';
        if (lens[i] <= 65536) {
            const char **ups = calloc(lens[i] + 1, sizeof *ups);
            for (size_t k = 0; k < lens[i]; k++)
                ups[k] = "u";
            memset(&m, 0, sizeof m);
            m.cmd = LQ_W_READY;
            m.u.ready = (lq_w_ready_t){"w", 1, 1, ups, lens[i], 0};
            b = s_enc(&m);
            msgpack_sbuffer_clear(&sb);
            msgpack_pack_array(&pk, lens[i]);
            for (size_t k = 0; k < lens[i]; k++) {
                msgpack_pack_str(&pk, 1);
                msgpack_pack_str_body(&pk, "u", 1);
            }
            s_assert_tail(&b, &sb);
            lq_buf_clear(&b);
            free(ups);
        }
        msgpack_sbuffer_destroy(&sb);
    }
    free(text);
}

/* ---- JOB_LIST, RESULT_LIST and READY's batch ---------------------------------- */

/* Builds a body of n items of cmd with lq_batch_* and checks it equals
 * lq_msg_encode() of the same items and decodes to them. */
static void s_check_builder(lq_batch_t *bb, uint8_t cmd, size_t n)
{
    lq_w_job_t *jobs = calloc(n, sizeof *jobs);
    lq_w_result_t *res = calloc(n, sizeof *res);
    lq_batch_begin(bb, cmd);
    assert_int_equal(lq_batch_size(bb), 0);
    for (size_t i = 0; i < n; i++) {
        jobs[i] = s_wjobs[i % 2];
        jobs[i].index = (int64_t)i;
        res[i] = s_wresults[i % 2];
        res[i].index = (int64_t)i;
        size_t before = lq_batch_size(bb);
        lq_batch_add(bb, cmd == LQ_W_JOB_LIST ? (const void *)&jobs[i] : (const void *)&res[i]);
        assert_true(lq_batch_size(bb) > before);
    }
    assert_int_equal(bb->n, n);
    lq_msg_t m;
    memset(&m, 0, sizeof m);
    m.cmd = cmd;
    if (cmd == LQ_W_JOB_LIST)
        m.u.job_list = (lq_w_job_list_t){jobs, n};
    else
        m.u.result_list = (lq_w_result_list_t){res, n};
    lq_buf_t want = s_enc(&m);
    size_t len;
    const void *body = lq_batch_body(bb, &len);
    assert_int_equal(len, want.len);
    assert_memory_equal(body, want.data, len);
    lq_msg_t out;
    s_dec_ok(cmd, body, len, &out);
    s_msg_eq(&m, &out);
    lq_msg_clear(&out);
    lq_buf_clear(&want);
    free(jobs);
    free(res);
}

static void test_lists(void **state)
{
    (void)state;
    /* the builder gives lq_msg_encode's bytes: fixarray, array16 heads,
     * and again after a reuse */
    lq_batch_t bb = {0};
    size_t sizes[] = {1, 2, 15, 16, 300, LQ_MAX_BATCH, 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        s_check_builder(&bb, LQ_W_JOB_LIST, sizes[i]);
        s_check_builder(&bb, LQ_W_RESULT_LIST, sizes[i]);
    }
    lq_batch_clear(&bb);
    lq_batch_clear(&bb);

    /* vectors: a JOB_LIST of the JOB vector, a RESULT_LIST head */
    lq_msg_t m;
    lq_w_job_t job = {"b1", 3, 1, "default", "/v1/x", "{}", 2, 60000};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_JOB_LIST;
    m.u.job_list = (lq_w_job_list_t){&job, 1};
    lq_buf_t b = s_enc(&m);
    s_assert_hex(&b, "81a46a6f627391"
                     "87a56261746368a26231a5696e64657803a7617474656d707401a87570737472"
                     "65616da764656661756c74a375726ca52f76312f78a4626f6479a27b7daa7469"
                     "6d656f75745f6d73cdea60");
    lq_buf_clear(&b);
    lq_w_result_t r = {.batch = "b1", .index = 3, .attempt = 1, .status = 200};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_RESULT_LIST;
    m.u.result_list = (lq_w_result_list_t){&r, 1};
    b = s_enc(&m);
    assert_true(b.len > 10);
    assert_memory_equal(b.data, "\x81\xa7results\x91\x8f", 11);
    lq_buf_clear(&b);

    /* malformed lists */
    s_bad_hex(LQ_W_JOB_LIST, "80", "missing key 'jobs'");
    s_bad_hex(LQ_W_JOB_LIST, "81a46a6f627390", "'jobs': 0 items");
    s_bad_hex(LQ_W_JOB_LIST, "81a46a6f627380", "want an array");
    s_bad_hex(LQ_W_JOB_LIST, "81a46a6f62739101", "jobs[0]: want a map");
    s_bad_hex(LQ_W_RESULT_LIST, "81a46a6f627391" "80", "missing key 'results'");
    s_bad_hex(LQ_W_RESULT_LIST, "81a7726573756c747390", "'results': 0 items");
    /* the second job lacks its body */
    s_bad_hex(LQ_W_JOB_LIST,
              "81a46a6f627392"
              "87a56261746368a26231a5696e64657803a7617474656d707401a87570737472"
              "65616da764656661756c74a375726ca52f76312f78a4626f6479a27b7daa7469"
              "6d656f75745f6d73cdea60"
              "86a56261746368a26231a5696e64657804a7617474656d707401a87570737472"
              "65616da764656661756c74a375726ca52f76312f78aa74696d656f75745f6d73"
              "cdea60",
              "jobs[1]: missing key 'body'");
    /* the second result has outcome 3 */
    s_bad_hex(LQ_W_RESULT_LIST,
              "81a7726573756c747392"
              "85a56261746368a162a5696e64657801a7617474656d707401a76f7574636f6d6500"
              "a6737461747573ccc8"
              "85a56261746368a162a5696e64657802a7617474656d707401a76f7574636f6d6503"
              "a6737461747573ccc8",
              "results[1]: 'outcome': 3 out of range");
    /* over LQ_MAX_BATCH items */
    lq_w_job_t *many = calloc(LQ_MAX_BATCH + 1, sizeof *many);
    for (size_t i = 0; i <= LQ_MAX_BATCH; i++)
        many[i] = job;
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_JOB_LIST;
    m.u.job_list = (lq_w_job_list_t){many, LQ_MAX_BATCH + 1};
    b = s_enc(&m);
    s_dec_bad(m.cmd, b.data, b.len, "1025 items");
    lq_buf_clear(&b);
    free(many);

    /* READY: batch is left out when 0 (an old worker's READY), and is
     * 0..LQ_MAX_BATCH */
    const char *ups[1] = {"default"};
    memset(&m, 0, sizeof m);
    m.cmd = LQ_W_READY;
    m.u.ready = (lq_w_ready_t){"w1", 64, 64, ups, 1, 0};
    b = s_enc(&m);
    s_assert_hex(&b, "84a6776f726b6572a27731ab636f6e63757272656e637940a6637265646974"
                     "40a9757073747265616d7391a764656661756c74");
    lq_msg_t out;
    s_dec_ok(m.cmd, b.data, b.len, &out);
    INT_EQ(out.u.ready.batch, 0);
    lq_msg_clear(&out);
    lq_buf_clear(&b);
    m.u.ready.batch = 16;
    b = s_enc(&m);
    s_assert_hex(&b, "85a6776f726b6572a27731ab636f6e63757272656e637940a6637265646974"
                     "40a9757073747265616d7391a764656661756c74a5626174636810");
    lq_buf_clear(&b);
    s_bad_hex(LQ_W_READY,
              "85a6776f726b6572a27731ab636f6e63757272656e637940a6637265646974"
              "40a9757073747265616d7391a764656661756c74a56261746368cd0401",
              "'batch'");
    s_bad_hex(LQ_W_READY,
              "85a6776f726b6572a27731ab636f6e63757272656e637940a6637265646974"
              "40a9757073747265616d7391a764656661756c74a56261746368ff",
              "'batch': -1 out of range");
}

/* Every client request and reply has its request id where the codec puts
 * "req"; worker messages have none. */
static void test_req_field(void **state)
{
    (void)state;
    lq_msg_t m;
    memset(&m, 0, sizeof m);
    const struct {
        uint8_t cmd;
        uint64_t *field;
    } cases[] = {
        {LQ_C_OPEN, &m.u.open.req},       {LQ_C_CHUNK, &m.u.chunk.req},
        {LQ_C_CANCEL, &m.u.batch_req.req}, {LQ_C_RESULTS, &m.u.results.req},
        {LQ_C_WORKERS, &m.u.simple.req},  {LQ_C_BATCH, &m.u.batch.req},
        {LQ_C_RESULTS_PAGE, &m.u.results_page.req},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        m.cmd = cases[i].cmd;
        assert_ptr_equal(lq_msg_req_field(&m), cases[i].field);
    }
    m.cmd = LQ_C_ERROR;
    m.u.error.req = 42;
    assert_int_equal(lq_msg_req(&m), 42);
    m.cmd = LQ_W_JOB;
    assert_null(lq_msg_req_field(&m));
    assert_int_equal(lq_msg_req(&m), 0);
    m.cmd = 0x7e;
    assert_null(lq_msg_req_field(&m));
}

static void test_unknown_command(void **state)
{
    (void)state;
    lq_msg_t m;
    memset(&m, 0, sizeof m);
    m.cmd = 0x7e;
    lq_buf_t b = {0};
    assert_int_equal(lq_msg_encode(&m, &b), -1);
    assert_int_equal(b.len, 0);
    lq_buf_clear(&b);
    s_bad_hex(0x00, "80", "unknown command 0x00");
    s_bad_hex(0x86, "80", "unknown command 0x86");
    s_bad_hex(0xff, "80", "unknown command");
    STR_EQ(lq_cmd_name(0x86), "UNKNOWN");
    STR_EQ(lq_cmd_name(LQ_C_CHUNK_ACK), "CHUNK_ACK");
    STR_EQ(lq_cmd_name(LQ_W_DISCONNECT), "DISCONNECT");
    for (size_t i = 0; i < NCMDS; i++)
        assert_string_not_equal(lq_cmd_name(s_all_cmds[i]), "UNKNOWN");
    /* a NULL err buffer is allowed; destroy is safe twice */
    assert_int_equal(lq_msg_decode(0x7e, "\x80", 1, &m, NULL, 0), -1);
    lq_msg_clear(&m);
    lq_msg_clear(&m);
    lq_msg_clear(NULL);
    lq_buf_clear(NULL);
}

/* ---- random input -------------------------------------------------------- */

static uint64_t s_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

/* Decodes buf[0..n) as cmd; if accepted, re-encodes and decodes again,
 * which must succeed and give identical bytes the second time round.
 * Returns 1 when the first decode accepted. */
static int s_decode_checked(uint8_t cmd, const uint8_t *buf, size_t n)
{
    lq_msg_t m, m2;
    char err[128];
    if (lq_msg_decode(cmd, buf, n, &m, err, sizeof err) < 0) {
        assert_null(m.arena_);
        return 0;
    }
    lq_buf_t b = s_enc(&m);
    s_dec_ok(cmd, b.data, b.len, &m2);
    lq_buf_t b2 = s_enc(&m2);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    lq_msg_clear(&m);
    lq_msg_clear(&m2);
    lq_buf_clear(&b);
    lq_buf_clear(&b2);
    return 1;
}

static void test_random_mutations(void **state)
{
    (void)state;
    lq_buf_t valid[NCMDS];
    for (size_t i = 0; i < NCMDS; i++) {
        lq_msg_t m;
        s_sample(s_all_cmds[i], &m);
        valid[i] = s_enc(&m);
    }
    uint8_t buf[2048];
    int accepted = 0;
    const int rounds = 20000;
    for (int r = 0; r < rounds; r++) {
        size_t k = s_rand() % NCMDS;
        size_t n = valid[k].len;
        assert_true(n + 16 <= sizeof buf);
        memcpy(buf, valid[k].data, n);
        int edits = 1 + (int)(s_rand() % 4);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = s_rand() % n;
            switch (s_rand() % 6) {
            case 0: /* flip bits */
                buf[at] ^= (uint8_t)(1u << (s_rand() % 8));
                break;
            case 1: /* random byte */
                buf[at] = (uint8_t)s_rand();
                break;
            case 2: /* interesting byte */ {
                static const uint8_t v[] = {0x00, 0x7f, 0x80, 0xc0, 0xc1, 0xc3, 0xcf, 0xd3,
                                            0xdc, 0xdd, 0xde, 0xdf, 0xdb, 0xff, 0x90, 0xa0};
                buf[at] = v[s_rand() % sizeof v];
                break;
            }
            case 3: /* truncate */
                n = at;
                break;
            case 4: /* delete one byte */
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            case 5: /* insert one byte */
                if (n < sizeof buf - 1) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)s_rand();
                    n++;
                }
                break;
            }
        }
        /* Mostly the right command, sometimes another one. */
        uint8_t cmd = s_rand() % 8 ? s_all_cmds[k] : s_all_cmds[s_rand() % NCMDS];
        accepted += s_decode_checked(cmd, buf, n);
    }
    /* Pure garbage, too. */
    for (int r = 0; r < 5000; r++) {
        size_t n = s_rand() % 64;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)s_rand();
        if (n && s_rand() % 2)
            buf[0] = 0x80 | (uint8_t)(s_rand() % 16); /* start like a map */
        accepted += s_decode_checked(s_all_cmds[s_rand() % NCMDS], buf, n);
    }
    print_message("%d of %d random bodies accepted\n", accepted, rounds + 5000);
    /* Some mutants stay valid (e.g. a changed int); most must not. */
    assert_true(accepted > 0);
    assert_true(accepted < rounds);
    for (size_t i = 0; i < NCMDS; i++)
        lq_buf_clear(&valid[i]);
}

/* ---- seeds ------------------------------------------------------------------ */

/* Writes DIR/<name>.bin = command byte + body for every sample. */
static int s_write_seeds(const char *dir)
{
    for (size_t i = 0; i < NCMDS; i++) {
        lq_msg_t m;
        s_sample(s_all_cmds[i], &m);
        lq_buf_t b = {0};
        lq_msg_encode(&m, &b);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", dir, lq_cmd_name(m.cmd));
        FILE *f = fopen(path, "wb");
        if (!f) {
            perror(path);
            lq_buf_clear(&b);
            return 1;
        }
        fputc(m.cmd, f);
        fwrite(b.data, 1, b.len, f);
        fclose(f);
        lq_buf_clear(&b);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return s_write_seeds(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all),   cmocka_unit_test(test_roundtrip_extremes),
        cmocka_unit_test(test_optional_fields), cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_bad_structure),   cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_lenient),         cmocka_unit_test(test_limits),
        cmocka_unit_test(test_encoder_matches_msgpack_c),
        cmocka_unit_test(test_lists),           cmocka_unit_test(test_req_field),
        cmocka_unit_test(test_unknown_command), cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
