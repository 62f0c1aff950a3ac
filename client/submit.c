/* submit: see submit.h. This module owns the validation pass, the chunk
 * window and the OPEN / CHUNK / CLOSE dialogue with the broker; it never
 * prints (the `llmq submit` command lives in submit_cmd.c). */
#include "submit.h"

#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LQ_SUBMIT_WINDOW 4
#define LQ_CHUNK_JOBS 1000
#define LQ_CHUNK_BYTES (2u * 1024u * 1024u)
#define LQ_ACK_WAIT_MS 5000

typedef struct {
    int64_t first;
    size_t n;
    lq_job_spec_t jobs[LQ_CHUNK_JOBS];
    char *strings[LQ_CHUNK_JOBS * 3];
    size_t bytes;
    uint64_t req;
} s_chunk_t;

struct lq_submit {
    lq_jsonl_t *reader;
    char *path;
    char *expect_url; /* NULL: any url */
    long long total;   /* jobs, once validated; -1 before */
    long long invalid; /* invalid lines found by the validation */
    char fingerprint[64];
    char batch[LQ_MAX_ID + 1];
    int resumed;
    char error[512];
    /* during send */
    lq_rpc_t *rpc;
    const lq_submit_params_t *p;
    s_chunk_t *window; /* ring of LQ_SUBMIT_WINDOW chunks */
    size_t head, count;
    int64_t next, acked, index;
    int eof;
};

/* Keeps the message of a failure on the object. */
static void s_fail(lq_submit_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_fail(lq_submit_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
}

/* Formats a notice for the caller's notice callback, if any. */
static void s_notice(const lq_submit_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void s_notice(const lq_submit_t *s, const char *fmt, ...)
{
    if (!s->p->notice)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->p->notice(s->p->notice_arg, buf);
}

lq_submit_t *lq_submit_new(const char *path, const lq_jsonl_opts_t *opts)
{
    lq_submit_t *s = xcalloc(1, sizeof *s);
    s->reader = lq_jsonl_new(path, opts);
    s->path = xstrdup(path);
    s->total = -1;
    return s;
}

void lq_submit_expect_url(lq_submit_t *s, const char *url)
{
    free(s->expect_url);
    s->expect_url = xstrdup(url);
}

void lq_submit_destroy(lq_submit_t **p)
{
    if (!p || !*p)
        return;
    lq_submit_t *s = *p;
    lq_jsonl_destroy(&s->reader);
    free(s->path);
    free(s->expect_url);
    free(s->window);
    free(s);
    *p = NULL;
}

/* ---- step 1: validation ---- */

/* The fingerprint's hash starts where llmq's first releases started it (one
 * digit short of FNV-1a's offset basis), so that a --name given to a batch
 * opened by an older client still resumes. */
#define S_FP_SEED 1469598103934665603ull

long long lq_submit_validate(lq_submit_t *s, size_t max_reported, lq_submit_error_fn *on_error,
                             void *arg)
{
    lq_job_spec_t job;
    uint64_t h = S_FP_SEED;
    s->invalid = 0;
    for (;;) {
        int rc = lq_jsonl_next(s->reader, &job);
        if (rc == LQ_JSONL_EOF)
            break;
        if (rc == LQ_JSONL_FATAL) {
            s_fail(s, "%s", lq_jsonl_error(s->reader));
            if (on_error)
                on_error(arg, 0, s->error);
            return -1;
        }
        if (rc == LQ_JSONL_JOB && s->expect_url && strcmp(job.url, s->expect_url) != 0) {
            if ((size_t)s->invalid < max_reported && on_error) {
                char *msg = xasprintf("%s:%lld: url \"%.200s\" is not the batch's endpoint %s",
                                      s->path, lq_jsonl_line(s->reader), job.url, s->expect_url);
                on_error(arg, lq_jsonl_line(s->reader), msg);
                free(msg);
            }
            s->invalid++;
            continue;
        }
        if (rc == LQ_JSONL_BAD) {
            if ((size_t)s->invalid < max_reported && on_error)
                on_error(arg, lq_jsonl_line(s->reader), lq_jsonl_error(s->reader));
            s->invalid++;
            continue;
        }
        h = lq_fnv1a64_add(h, job.custom_id, strlen(job.custom_id) + 1);
        h = lq_fnv1a64_add(h, job.url, strlen(job.url) + 1);
        h = lq_fnv1a64_add(h, job.body, job.body_len);
    }
    snprintf(s->fingerprint, sizeof s->fingerprint, "v1-%lld-%016llx",
             lq_jsonl_count(s->reader), (unsigned long long)h);
    if (s->invalid > 0) {
        s_fail(s, "%lld invalid line%s", s->invalid, s->invalid == 1 ? "" : "s");
        return -1;
    }
    s->total = lq_jsonl_count(s->reader);
    return s->total;
}

long long lq_submit_invalid_lines(const lq_submit_t *s)
{
    return s->invalid;
}

/* ---- broker calls ---- */

/* Sends m and waits for its reply, resending within the retry window (the
 * connect timeout when first) and riding out "unavailable" answers.
 * Returns 1 with a reply (maybe LQ_C_ERROR; the caller destroys it), 0 if
 * the broker stayed silent (message set), -1 on SIGINT. */
static int s_call(lq_submit_t *s, lq_msg_t *m, lq_msg_t *reply, int first)
{
    long long window = first ? s->p->connect_timeout_s : s->p->retry_window_s;
    uint64_t deadline = lq_mono_ms() + (uint64_t)(window > 0 ? window : 1) * 1000u;
    int warned = 0;
    for (;;) {
        uint64_t now = lq_mono_ms();
        uint64_t slice = first ? deadline - now : 3000;
        if (now + slice > deadline)
            slice = deadline - now;
        int rc = lq_rpc_call(s->rpc, m, reply, slice > 0 ? (int)slice : 1);
        if (rc < 0)
            return -1;
        if (rc == 1 && reply->cmd == LQ_C_ERROR &&
            strcmp(reply->u.error.code, "unavailable") == 0 && lq_mono_ms() < deadline) {
            lq_msg_clear(reply);
            usleep(300000);
            continue;
        }
        if (rc == 1) {
            if (warned)
                s_notice(s, "broker reachable again");
            return 1;
        }
        if (lq_mono_ms() >= deadline) {
            s_fail(s, "broker unreachable (no answer in %llds)", window);
            return 0;
        }
        if (!warned)
            s_notice(s, "broker not answering; retrying for up to %llds", s->p->retry_window_s);
        warned = 1;
    }
}

/* Maps an s_call() result that is not a usable reply to a return code. */
static lq_submit_rc_t s_call_failed(int got)
{
    return got < 0 ? LQ_SUBMIT_INTERRUPTED : LQ_SUBMIT_UNREACHABLE;
}

/* OPEN: creates or resumes the batch; sets batch, resumed and next.
 * Returns OK, or another code with the message set. *closed is set when the
 * batch was already closed by an earlier run (nothing left to send). */
static lq_submit_rc_t s_open(lq_submit_t *s, int *closed)
{
    lq_msg_t m = {0}, reply = {0};
    m.cmd = LQ_C_OPEN;
    m.u.open.name = s->p->name;
    m.u.open.upstream = s->p->upstream;
    m.u.open.max_attempts = s->p->max_attempts;
    m.u.open.timeout_ms = s->p->timeout_s * 1000;
    m.u.open.priority = s->p->priority;
    m.u.open.fingerprint = s->fingerprint;
    m.u.open.cache = s->p->cache;
    int got = s_call(s, &m, &reply, 1);
    if (got <= 0)
        return s_call_failed(got);
    lq_submit_rc_t rc = LQ_SUBMIT_OK;
    if (reply.cmd == LQ_C_ERROR) {
        s_fail(s, "the broker refused the batch: %s (%s)", reply.u.error.message,
               reply.u.error.code);
        /* a full Redis is a runtime condition, not bad input */
        rc = strcmp(reply.u.error.code, "redis_full") == 0 ? LQ_SUBMIT_UNREACHABLE
                                                            : LQ_SUBMIT_REFUSED;
    } else if (reply.cmd != LQ_C_OPENED) {
        s_fail(s, "unexpected reply %s to OPEN", lq_cmd_name(reply.cmd));
        rc = LQ_SUBMIT_UNREACHABLE;
    } else {
        snprintf(s->batch, sizeof s->batch, "%s", reply.u.opened.batch);
        s->next = reply.u.opened.next_index;
        s->resumed = !reply.u.opened.created;
        *closed = strcmp(reply.u.opened.state, "submitting") != 0;
        if (s->resumed)
            s_notice(s, "resuming batch %s (%s, %lld jobs stored)", s->batch,
                     reply.u.opened.state, (long long)s->next);
    }
    lq_msg_clear(&reply);
    return rc;
}

/* Frees a chunk's copies of its jobs; the chunk is empty after. */
static void s_chunk_clear(s_chunk_t *c)
{
    for (size_t i = 0; i < c->n * 3; i++)
        free(c->strings[i]);
    c->n = 0;
    c->bytes = 0;
    c->req = 0;
}

/* Copies a job (the reader owns its strings) into the chunk. */
static void s_chunk_add(s_chunk_t *c, const lq_job_spec_t *j)
{
    lq_job_spec_t *d = &c->jobs[c->n];
    c->strings[c->n * 3] = xstrdup(j->custom_id);
    c->strings[c->n * 3 + 1] = xstrdup(j->url);
    c->strings[c->n * 3 + 2] = xstrndup(j->body, j->body_len);
    d->custom_id = c->strings[c->n * 3];
    d->url = c->strings[c->n * 3 + 1];
    d->body = c->strings[c->n * 3 + 2];
    d->body_len = j->body_len;
    d->est_tokens = j->est_tokens;
    c->bytes += j->body_len + strlen(j->custom_id) + strlen(j->url) + 16;
    c->n++;
}

/* Sends the chunk without waiting; remembers its request id. */
static void s_chunk_send(lq_submit_t *s, s_chunk_t *c)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_CHUNK;
    m.u.chunk.batch = s->batch;
    m.u.chunk.first = c->first;
    m.u.chunk.jobs = c->jobs;
    m.u.chunk.njobs = c->n;
    m.u.chunk.cache = s->p->cache;
    c->req = lq_rpc_send(s->rpc, &m);
}

/* Fills and sends chunks until the window is full or the file ends, skipping
 * the jobs an earlier run stored. Returns 0, or -1 (message set) when the
 * file cannot be read again. */
static int s_fill_window(lq_submit_t *s)
{
    lq_job_spec_t job;
    while (!s->eof && s->count < LQ_SUBMIT_WINDOW) {
        s_chunk_t *c = &s->window[(s->head + s->count) % LQ_SUBMIT_WINDOW];
        s_chunk_clear(c);
        c->first = s->index > s->next ? s->index : s->next;
        while (c->n < LQ_CHUNK_JOBS && c->bytes < LQ_CHUNK_BYTES) {
            int jr = lq_jsonl_next(s->reader, &job);
            if (jr == LQ_JSONL_EOF) {
                s->eof = 1;
                break;
            }
            if (jr != LQ_JSONL_JOB) {
                s_fail(s, "%s", lq_jsonl_error(s->reader));
                return -1;
            }
            if (s->index++ < s->next)
                continue; /* stored by an earlier run */
            s_chunk_add(c, &job);
        }
        if (c->n == 0)
            break;
        s_chunk_send(s, c);
        s->count++;
    }
    return 0;
}

/* Drops the chunks at the head of the window that the broker acknowledged.
 * Can't fail. */
static void s_drop_acked(lq_submit_t *s)
{
    while (s->count > 0) {
        s_chunk_t *c = &s->window[s->head];
        if (c->first + (int64_t)c->n > s->acked)
            break;
        s_chunk_clear(c);
        s->head = (s->head + 1) % LQ_SUBMIT_WINDOW;
        s->count--;
    }
}

/* Waits for one acknowledgement of an outstanding chunk; on silence or a
 * retryable error resends the whole window in order. Returns OK, or another
 * code with the message set. */
static lq_submit_rc_t s_await_ack(lq_submit_t *s)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < s->count; i++) {
        uint64_t q = s->window[(s->head + i) % LQ_SUBMIT_WINDOW].req;
        lo = q && q < lo ? q : lo;
        hi = q > hi ? q : hi;
    }
    lq_msg_t reply = {0};
    int w = lq_rpc_recv(s->rpc, lo == UINT64_MAX ? 0 : lo, hi, &reply, LQ_ACK_WAIT_MS);
    if (w < 0) {
        s_fail(s, "interrupted");
        return LQ_SUBMIT_INTERRUPTED;
    }
    if (w == 1 && reply.cmd == LQ_C_CHUNK_ACK) {
        if (reply.u.chunk_ack.next_index > s->acked)
            s->acked = reply.u.chunk_ack.next_index;
        lq_msg_clear(&reply);
        s_drop_acked(s);
        return LQ_SUBMIT_OK;
    }
    if (w == 1 && reply.cmd == LQ_C_ERROR && strcmp(reply.u.error.code, "gap") != 0 &&
        strcmp(reply.u.error.code, "unavailable") != 0) {
        s_fail(s, "the broker refused a chunk: %s (%s)", reply.u.error.message,
               reply.u.error.code);
        lq_msg_clear(&reply);
        return LQ_SUBMIT_UNREACHABLE;
    }
    if (w == 1)
        lq_msg_clear(&reply);
    else
        s_notice(s, "no acknowledgement from the broker; sending again");
    for (size_t i = 0; i < s->count; i++)
        s_chunk_send(s, &s->window[(s->head + i) % LQ_SUBMIT_WINDOW]);
    if (w == 1)
        usleep(200000);
    return LQ_SUBMIT_OK;
}

/* Streams every job not stored yet, keeping up to LQ_SUBMIT_WINDOW chunks
 * unacknowledged. Returns OK, or another code with the message set. */
static lq_submit_rc_t s_stream(lq_submit_t *s)
{
    if (lq_jsonl_rewind(s->reader) < 0) {
        s_fail(s, "%s", lq_jsonl_error(s->reader));
        return LQ_SUBMIT_REFUSED;
    }
    if (!s->window)
        s->window = xcalloc(LQ_SUBMIT_WINDOW, sizeof *s->window);
    s->head = s->count = 0;
    s->index = 0;
    s->acked = s->next;
    s->eof = 0;
    lq_submit_rc_t rc = LQ_SUBMIT_OK;
    while (rc == LQ_SUBMIT_OK && (!s->eof || s->count > 0)) {
        if (s_fill_window(s) < 0)
            rc = LQ_SUBMIT_REFUSED;
        else if (s->count == 0)
            break;
        else
            rc = s_await_ack(s);
    }
    for (size_t i = 0; i < LQ_SUBMIT_WINDOW; i++)
        s_chunk_clear(&s->window[i]);
    return rc;
}

/* CLOSE: tells the broker the total; the batch becomes visible to dispatch.
 * Returns OK, or another code with the message set. */
static lq_submit_rc_t s_close(lq_submit_t *s)
{
    lq_msg_t m = {0}, reply = {0};
    m.cmd = LQ_C_CLOSE;
    m.u.close.batch = s->batch;
    m.u.close.total = s->total;
    int got = s_call(s, &m, &reply, 0);
    if (got <= 0)
        return s_call_failed(got);
    lq_submit_rc_t rc = LQ_SUBMIT_OK;
    if (reply.cmd == LQ_C_ERROR) {
        s_fail(s, "closing the batch failed: %s (%s)", reply.u.error.message, reply.u.error.code);
        rc = LQ_SUBMIT_UNREACHABLE;
    }
    lq_msg_clear(&reply);
    return rc;
}

lq_submit_rc_t lq_submit_send(lq_submit_t *s, lq_rpc_t *rpc, const lq_submit_params_t *p)
{
    if (s->total < 0) {
        s_fail(s, "the file was not validated");
        return LQ_SUBMIT_REFUSED;
    }
    s->rpc = rpc;
    s->p = p;
    s->error[0] = '\0';
    int closed = 0;
    lq_submit_rc_t rc = s_open(s, &closed);
    if (rc == LQ_SUBMIT_OK && !closed)
        rc = s_stream(s);
    if (rc == LQ_SUBMIT_OK && !closed)
        rc = s_close(s);
    s->rpc = NULL;
    s->p = NULL;
    return rc;
}

const char *lq_submit_batch(const lq_submit_t *s)
{
    return s->batch;
}

int lq_submit_resumed(const lq_submit_t *s)
{
    return s->resumed;
}

const char *lq_submit_error(const lq_submit_t *s)
{
    return s->error;
}
