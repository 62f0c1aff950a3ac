/* submit: validates a batch file completely, then streams it to the broker
 * in chunks, with at most LQ_SUBMIT_WINDOW chunks unacknowledged. A chunk is
 * acknowledged only once its jobs are in Redis; chunks not acknowledged in
 * time are sent again (the broker stores jobs by index, so a repeat is not
 * stored twice). Memory: the window of chunks plus the reader's id set. */
#include "client.h"
#include "jsonl.h"

#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LQ_SUBMIT_WINDOW 4
#define LQ_CHUNK_JOBS 1000
#define LQ_CHUNK_BYTES (2u * 1024u * 1024u)
#define LQ_MAX_REPORTED_ERRORS 20

typedef struct {
    int64_t first;
    size_t n;
    lq_job_spec_t jobs[LQ_CHUNK_JOBS];
    char *strings[LQ_CHUNK_JOBS * 3];
    size_t bytes;
    uint64_t req;
} s_chunk_t;

static void s_chunk_clear(s_chunk_t *c)
{
    for (size_t i = 0; i < c->n * 3; i++)
        free(c->strings[i]);
    c->n = 0;
    c->bytes = 0;
    c->req = 0;
}

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

static uint64_t s_chunk_send(lq_rpc_t *rpc, const char *batch, s_chunk_t *c)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_CHUNK;
    m.u.chunk.batch = batch;
    m.u.chunk.first = c->first;
    m.u.chunk.jobs = c->jobs;
    m.u.chunk.njobs = c->n;
    c->req = lq_rpc_send(rpc, &m);
    return c->req;
}

static uint64_t s_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Removes an unnamed, half-submitted batch (it cannot be resumed): cancels
 * it so its stored jobs do not run (and cost) for nothing, then deletes it
 * once its running jobs are done (up to 10 s). Returns 1 if it is gone, 0 if
 * it was only cancelled, -1 if not even that. */
static int s_abandon(const lq_client_opts_t *o, const char *batch)
{
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc)
        return -1;
    lq_msg_t m = {0}, r;
    m.cmd = LQ_C_CANCEL;
    m.u.batch_req.batch = batch;
    int gone = -1;
    if (lq_rpc_call(rpc, &m, &r, 3000) == 1) {
        gone = 0;
        lq_msg_clear(&r);
        m.cmd = LQ_C_DELETE;
        for (int i = 0; i < 50 && gone == 0; i++) {
            if (lq_rpc_call(rpc, &m, &r, 3000) != 1)
                break;
            gone = r.cmd == LQ_C_DELETED;
            lq_msg_clear(&r);
            if (!gone)
                usleep(200000); /* still cancelling: jobs in flight finish */
        }
    }
    lq_rpc_destroy(&rpc);
    return gone;
}

/* First pass: every line checked, errors listed, and a fingerprint of the
 * jobs (count and a hash of ids, urls and bodies) written to fp, so that a
 * --name reused for another input is refused. Returns total jobs or -1. */
static long long s_validate(lq_jsonl_t *r, const char *path, char *fp, size_t fplen)
{
    lq_job_spec_t job;
    long long errors = 0;
    uint64_t h = 1469598103934665603ull;
    for (;;) {
        int rc = lq_jsonl_next(r, &job);
        if (rc == LQ_JSONL_EOF)
            break;
        if (rc == LQ_JSONL_FATAL) {
            fprintf(stderr, "llmq: %s\n", lq_jsonl_error(r));
            return -1;
        }
        if (rc == LQ_JSONL_BAD) {
            if (errors < LQ_MAX_REPORTED_ERRORS)
                fprintf(stderr, "%s\n", lq_jsonl_error(r));
            errors++;
            continue;
        }
        h = s_fnv(h, job.custom_id, strlen(job.custom_id) + 1);
        h = s_fnv(h, job.url, strlen(job.url) + 1);
        h = s_fnv(h, job.body, job.body_len);
    }
    snprintf(fp, fplen, "v1-%lld-%016llx", lq_jsonl_count(r), (unsigned long long)h);
    if (errors > 0) {
        if (errors > LQ_MAX_REPORTED_ERRORS)
            fprintf(stderr, "... and %lld more\n", errors - LQ_MAX_REPORTED_ERRORS);
        fprintf(stderr, "llmq: %s: %lld invalid line%s; nothing was submitted\n", path, errors,
                errors == 1 ? "" : "s");
        return -1;
    }
    return lq_jsonl_count(r);
}

int lq_cmd_submit(const lq_client_opts_t *o, const char *file, char *batch_out, size_t batch_len)
{
    lq_jsonl_opts_t jo = {0};
    const char *path = file;
    if (o->prompts) {
        jo.mode = LQ_JSONL_PROMPTS;
        jo.model = o->model;
        jo.system = o->system;
        jo.max_tokens = o->max_tokens;
        path = o->prompts;
        if (!o->model) {
            fprintf(stderr, "llmq: --prompts needs --model\n");
            return LQ_EXIT_USAGE;
        }
    }
    if (!path) {
        fprintf(stderr, "llmq: submit needs a FILE (or --prompts FILE --model M)\n");
        return LQ_EXIT_USAGE;
    }
    lq_jsonl_t *r = lq_jsonl_new(path, &jo);
    char fingerprint[64];
    long long total = s_validate(r, path, fingerprint, sizeof fingerprint);
    if (total < 0) {
        lq_jsonl_destroy(&r);
        return LQ_EXIT_USAGE;
    }
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc) {
        lq_jsonl_destroy(&r);
        return LQ_EXIT_RUNTIME;
    }
    int rc = LQ_EXIT_RUNTIME;
    lq_msg_t m = {0}, reply = {0};
    m.cmd = LQ_C_OPEN;
    m.u.open.name = o->name;
    m.u.open.upstream = o->upstream;
    m.u.open.max_attempts = o->max_attempts;
    m.u.open.timeout_ms = o->timeout_s * 1000;
    m.u.open.priority = o->priority;
    m.u.open.fingerprint = fingerprint;
    s_chunk_t *window = xcalloc(LQ_SUBMIT_WINDOW, sizeof *window);
    int got = lq_client_call(rpc, o, &m, &reply, 1);
    if (got <= 0)
        goto out;
    if (reply.cmd == LQ_C_ERROR) {
        fprintf(stderr, "llmq: the broker refused the batch: %s (%s)\n", reply.u.error.message,
                reply.u.error.code);
        rc = LQ_EXIT_USAGE;
        lq_msg_clear(&reply);
        goto out;
    }
    if (reply.cmd != LQ_C_OPENED)
        goto out;
    char batch[LQ_MAX_ID + 1];
    snprintf(batch, sizeof batch, "%s", reply.u.opened.batch);
    int64_t next = reply.u.opened.next_index;
    int already_closed = strcmp(reply.u.opened.state, "submitting") != 0;
    if (!reply.u.opened.created && !o->quiet)
        fprintf(stderr, "llmq: resuming batch %s (%s, %lld jobs stored)\n", batch,
                reply.u.opened.state, (long long)next);
    lq_msg_clear(&reply);
    if (already_closed) {
        snprintf(batch_out, batch_len, "%s", batch);
        rc = LQ_EXIT_OK;
        goto out;
    }
    if (lq_jsonl_rewind(r) < 0) {
        fprintf(stderr, "llmq: %s\n", lq_jsonl_error(r));
        rc = LQ_EXIT_USAGE;
        goto out;
    }
    /* Stream: fill chunks, keep up to WINDOW unacked, resend on silence. */
    lq_job_spec_t job;
    int64_t index = 0, acked = next;
    size_t head = 0, count = 0; /* ring of outstanding chunks */
    int eof = 0;
    while (!eof || count > 0) {
        while (!eof && count < LQ_SUBMIT_WINDOW) {
            s_chunk_t *c = &window[(head + count) % LQ_SUBMIT_WINDOW];
            s_chunk_clear(c);
            c->first = index > next ? index : next;
            while (c->n < LQ_CHUNK_JOBS && c->bytes < LQ_CHUNK_BYTES) {
                int jr = lq_jsonl_next(r, &job);
                if (jr == LQ_JSONL_EOF) {
                    eof = 1;
                    break;
                }
                if (jr != LQ_JSONL_JOB) {
                    fprintf(stderr, "llmq: %s\n", lq_jsonl_error(r));
                    rc = LQ_EXIT_USAGE;
                    goto out;
                }
                if (index++ < next)
                    continue; /* stored by an earlier run */
                s_chunk_add(c, &job);
            }
            if (c->n == 0)
                break;
            s_chunk_send(rpc, batch, c);
            count++;
        }
        if (count == 0)
            break;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (size_t i = 0; i < count; i++) {
            uint64_t q = window[(head + i) % LQ_SUBMIT_WINDOW].req;
            lo = q && q < lo ? q : lo;
            hi = q > hi ? q : hi;
        }
        int w = lq_rpc_recv(rpc, lo == UINT64_MAX ? 0 : lo, hi, &reply, 5000);
        if (w < 0) {
            rc = LQ_EXIT_INTERRUPTED;
            if (o->name) {
                fprintf(stderr, "\nllmq: interrupted; run the same command again to resume "
                                "batch %s (--name %s)\n", batch, o->name);
                goto out;
            }
            /* An unnamed half-submitted batch cannot be resumed: cancel it so
             * that its stored jobs do not run (and cost) for nothing. */
            lq_msg_t cm = {0}, cr;
            cm.cmd = LQ_C_CANCEL;
            cm.u.batch_req.batch = batch;
            lq_rpc_t *fresh = lq_client_connect(o); /* the old one saw SIGINT */
            int ok = fresh && lq_rpc_call(fresh, &cm, &cr, 3000) == 1;
            if (ok)
                lq_msg_clear(&cr);
            lq_rpc_destroy(&fresh);
            fprintf(stderr, "\nllmq: interrupted; the partly submitted batch %s was %s. "
                            "Use --name NAME to make a submission resumable.\n",
                    batch, ok ? "cancelled" : "left behind (cancel it with llmq cancel)");
            goto out;
        }
        if (w == 0 || reply.cmd == LQ_C_ERROR) {
            if (w == 1 && strcmp(reply.u.error.code, "gap") != 0 &&
                strcmp(reply.u.error.code, "unavailable") != 0) {
                fprintf(stderr, "llmq: the broker refused a chunk: %s (%s)\n",
                        reply.u.error.message, reply.u.error.code);
                lq_msg_clear(&reply);
                if (o->name) {
                    fprintf(stderr, "llmq: batch %s keeps the jobs stored so far; run the same "
                                    "command again to resume it (--name %s)\n",
                            batch, o->name);
                } else {
                    int gone = s_abandon(o, batch);
                    fprintf(stderr, "llmq: the partly submitted batch %s was %s\n", batch,
                            gone > 0    ? "removed"
                            : gone == 0 ? "cancelled (remove it with llmq delete)"
                                        : "left behind (cancel it with llmq cancel)");
                }
                goto out;
            }
            if (w == 1)
                lq_msg_clear(&reply);
            else if (!o->quiet)
                fprintf(stderr, "llmq: no acknowledgement from the broker; sending again\n");
            /* Re-send everything outstanding, in order. */
            for (size_t i = 0; i < count; i++)
                s_chunk_send(rpc, batch, &window[(head + i) % LQ_SUBMIT_WINDOW]);
            if (w == 1)
                usleep(200000);
            continue;
        }
        if (reply.cmd == LQ_C_CHUNK_ACK && reply.u.chunk_ack.next_index > acked)
            acked = reply.u.chunk_ack.next_index;
        lq_msg_clear(&reply);
        while (count > 0) {
            s_chunk_t *c = &window[head];
            if (c->first + (int64_t)c->n > acked)
                break;
            s_chunk_clear(c);
            head = (head + 1) % LQ_SUBMIT_WINDOW;
            count--;
        }
    }
    m.cmd = LQ_C_CLOSE;
    memset(&m.u, 0, sizeof m.u);
    m.u.close.batch = batch;
    m.u.close.total = total;
    got = lq_client_call(rpc, o, &m, &reply, 0);
    if (got <= 0)
        goto out;
    if (reply.cmd == LQ_C_ERROR) {
        fprintf(stderr, "llmq: closing the batch failed: %s (%s)\n", reply.u.error.message,
                reply.u.error.code);
        lq_msg_clear(&reply);
        goto out;
    }
    lq_msg_clear(&reply);
    snprintf(batch_out, batch_len, "%s", batch);
    rc = LQ_EXIT_OK;
out:
    for (size_t i = 0; i < LQ_SUBMIT_WINDOW; i++)
        s_chunk_clear(&window[i]);
    free(window);
    lq_rpc_destroy(&rpc);
    lq_jsonl_destroy(&r);
    return rc;
}
