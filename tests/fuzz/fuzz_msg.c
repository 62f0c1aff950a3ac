/* fuzz_msg: libFuzzer target for the proto/msg decoder.
 *
 * Input: the first byte is the command, the rest the body. The decoder must
 * return cleanly on anything. When it accepts a body, the message is
 * encoded again and decoded again: that must succeed, give the same
 * command, the same key fields, and re-encode to identical bytes (the
 * encoding of a decoded message is canonical).
 *
 * Seeds (one valid body per command) live in tests/fuzz/seeds/msg/ and are
 * written by `test_msg --write-seeds tests/fuzz/seeds/msg`. Run with
 * `make fuzz FUZZ_TARGET=msg FUZZ_SECONDS=30`. */
#include "proto/msg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run with a message: libFuzzer reports the crashing input. */
static void s_die(const char *what, uint8_t cmd)
{
    fprintf(stderr, "fuzz_msg: %s (command %s)\n", what, lq_cmd_name(cmd));
    abort();
}

/* Compares a few fields that matter most between two decodes. */
static void s_compare(const lq_msg_t *a, const lq_msg_t *b)
{
    if (a->cmd != b->cmd)
        s_die("command changed", a->cmd);
    switch (a->cmd) {
    case LQ_C_CHUNK:
        if (a->u.chunk.njobs != b->u.chunk.njobs || a->u.chunk.first != b->u.chunk.first ||
            strcmp(a->u.chunk.batch, b->u.chunk.batch) != 0)
            s_die("chunk header changed", a->cmd);
        for (size_t i = 0; i < a->u.chunk.njobs; i++) {
            const lq_job_spec_t *x = &a->u.chunk.jobs[i], *y = &b->u.chunk.jobs[i];
            if (x->body_len != y->body_len || memcmp(x->body, y->body, x->body_len) != 0 ||
                strcmp(x->custom_id, y->custom_id) != 0 || x->est_tokens != y->est_tokens)
                s_die("chunk job changed", a->cmd);
        }
        break;
    case LQ_W_JOB:
        if (a->u.job.index != b->u.job.index || a->u.job.body_len != b->u.job.body_len ||
            memcmp(a->u.job.body, b->u.job.body, a->u.job.body_len) != 0 ||
            strcmp(a->u.job.url, b->u.job.url) != 0)
            s_die("job changed", a->cmd);
        break;
    case LQ_W_RESULT:
        if (a->u.result.index != b->u.result.index ||
            a->u.result.outcome != b->u.result.outcome ||
            a->u.result.body_len != b->u.result.body_len ||
            (a->u.result.body == NULL) != (b->u.result.body == NULL) ||
            a->u.result.retry_after_ms != b->u.result.retry_after_ms)
            s_die("result changed", a->cmd);
        break;
    case LQ_W_JOB_LIST:
        if (a->u.job_list.njobs != b->u.job_list.njobs)
            s_die("job list changed", a->cmd);
        for (size_t i = 0; i < a->u.job_list.njobs; i++) {
            const lq_w_job_t *x = &a->u.job_list.jobs[i], *y = &b->u.job_list.jobs[i];
            if (x->index != y->index || x->body_len != y->body_len ||
                memcmp(x->body, y->body, x->body_len) != 0 || strcmp(x->batch, y->batch) != 0)
                s_die("job list item changed", a->cmd);
        }
        break;
    case LQ_W_RESULT_LIST:
        if (a->u.result_list.nresults != b->u.result_list.nresults)
            s_die("result list changed", a->cmd);
        for (size_t i = 0; i < a->u.result_list.nresults; i++) {
            const lq_w_result_t *x = &a->u.result_list.results[i];
            const lq_w_result_t *y = &b->u.result_list.results[i];
            if (x->index != y->index || x->outcome != y->outcome || x->body_len != y->body_len ||
                (x->body == NULL) != (y->body == NULL) || strcmp(x->batch, y->batch) != 0)
                s_die("result list item changed", a->cmd);
        }
        break;
    case LQ_W_RESULT_ACK:
        if (a->u.result_ack.njobs != b->u.result_ack.njobs)
            s_die("ack changed", a->cmd);
        break;
    case LQ_W_READY:
        if (a->u.ready.nupstreams != b->u.ready.nupstreams ||
            a->u.ready.credit != b->u.ready.credit || strcmp(a->u.ready.worker, b->u.ready.worker))
            s_die("ready changed", a->cmd);
        break;
    case LQ_C_RESULTS_PAGE:
        if (a->u.results_page.nitems != b->u.results_page.nitems ||
            a->u.results_page.done != b->u.results_page.done)
            s_die("results page changed", a->cmd);
        break;
    case LQ_C_BATCH:
        if (strcmp(a->u.batch.info.id, b->u.batch.info.id) != 0 ||
            a->u.batch.info.total != b->u.batch.info.total)
            s_die("batch info changed", a->cmd);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cmd = data[0];
    lq_msg_t m, m2;
    char err[128];
    if (lq_msg_decode(cmd, data + 1, size - 1, &m, err, sizeof err) < 0) {
        if (m.arena_ != NULL || m.cmd != 0)
            s_die("refused decode left state behind", cmd);
        return 0;
    }
    if (m.cmd != cmd || strcmp(lq_cmd_name(cmd), "UNKNOWN") == 0)
        s_die("accepted with a wrong command", cmd);
    lq_buf_t b = {0}, b2 = {0};
    if (lq_msg_encode(&m, &b) < 0)
        s_die("re-encode failed", cmd);
    if (lq_msg_decode(cmd, b.data, b.len, &m2, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_msg: re-decode: %s\n", err);
        s_die("re-encoded body refused", cmd);
    }
    s_compare(&m, &m2);
    if (lq_msg_encode(&m2, &b2) < 0 || b.len != b2.len || memcmp(b.data, b2.data, b.len) != 0)
        s_die("encoding is not stable", cmd);
    lq_msg_clear(&m);
    lq_msg_clear(&m2);
    lq_buf_clear(&b);
    lq_buf_clear(&b2);
    return 0;
}
