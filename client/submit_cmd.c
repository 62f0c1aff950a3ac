/* submit_cmd: `llmq submit`, a thin caller of the submit library
 * (client/submit.h) that does the printing: invalid lines to stderr, the
 * batch id to the caller, and the cancel of an unnamed half-submitted
 * batch on Ctrl-C. */
#include "client.h"
#include "submit.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LQ_MAX_REPORTED_ERRORS 20

/* Prints one invalid line (or a file error, line 0). */
static void s_print_error(void *arg, long long line, const char *message)
{
    (void)arg;
    fprintf(stderr, line > 0 ? "%s\n" : "llmq: %s\n", message);
}

/* Prints a notice unless quiet. */
static void s_print_notice(void *arg, const char *message)
{
    const lq_client_opts_t *o = arg;
    if (!o->quiet)
        fprintf(stderr, "llmq: %s\n", message);
}

/* Step: the reader options of the command line; path gets the file to read.
 * Returns 0, or -1 after printing a usage error. */
static int s_reader_opts(const lq_client_opts_t *o, const char *file, lq_jsonl_opts_t *jo,
                         const char **path)
{
    memset(jo, 0, sizeof *jo);
    *path = file;
    if (o->prompts) {
        if (!o->model) {
            fprintf(stderr, "llmq: --prompts needs --model\n");
            return -1;
        }
        jo->mode = LQ_JSONL_PROMPTS;
        jo->model = o->model;
        jo->system = o->system;
        jo->max_tokens = o->max_tokens;
        *path = o->prompts;
    }
    if (!*path) {
        fprintf(stderr, "llmq: submit needs a FILE (or --prompts FILE --model M)\n");
        return -1;
    }
    return 0;
}

/* Step: validation, with the summary line when lines are invalid.
 * Returns 0 or -1. */
static int s_validate(lq_submit_t *sub, const char *path)
{
    if (lq_submit_validate(sub, LQ_MAX_REPORTED_ERRORS, s_print_error, NULL) >= 0)
        return 0;
    long long bad = lq_submit_invalid_lines(sub);
    if (bad > LQ_MAX_REPORTED_ERRORS)
        fprintf(stderr, "... and %lld more\n", bad - LQ_MAX_REPORTED_ERRORS);
    if (bad > 0)
        fprintf(stderr, "llmq: %s: %lld invalid line%s; nothing was submitted\n", path, bad,
                bad == 1 ? "" : "s");
    return -1;
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

/* Step: the broker refused part of the batch (e.g. Redis full). A named
 * batch keeps what was stored and resumes when run again; an unnamed one is
 * removed. */
static void s_refused_midway(const lq_client_opts_t *o, const char *batch)
{
    if (o->name) {
        fprintf(stderr, "llmq: batch %s keeps the jobs stored so far; run the same command "
                        "again to resume it (--name %s)\n",
                batch, o->name);
        return;
    }
    int gone = s_abandon(o, batch);
    fprintf(stderr, "llmq: the partly submitted batch %s was %s\n", batch,
            gone > 0    ? "removed"
            : gone == 0 ? "cancelled (remove it with llmq delete)"
                        : "left behind (cancel it with llmq cancel)");
}

/* Step: after Ctrl-C. A named batch is resumable; an unnamed half-submitted
 * one cannot be resumed, so it is cancelled so that its stored jobs do not
 * run (and cost) for nothing. */
static void s_interrupted(const lq_client_opts_t *o, const char *batch)
{
    if (o->name) {
        fprintf(stderr, "\nllmq: interrupted; run the same command again to resume "
                        "batch %s (--name %s)\n", batch, o->name);
        return;
    }
    if (!*batch)
        return;
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
}

int lq_cmd_submit(const lq_client_opts_t *o, const char *file, char *batch_out, size_t batch_len)
{
    lq_jsonl_opts_t jo;
    const char *path;
    if (s_reader_opts(o, file, &jo, &path) < 0)
        return LQ_EXIT_USAGE;
    lq_submit_t *sub = lq_submit_new(path, &jo);
    if (s_validate(sub, path) < 0) {
        lq_submit_destroy(&sub);
        return LQ_EXIT_USAGE;
    }
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc) {
        lq_submit_destroy(&sub);
        return LQ_EXIT_RUNTIME;
    }
    lq_submit_params_t p = {
        .name = o->name,
        .upstream = o->upstream,
        .max_attempts = o->max_attempts,
        .timeout_s = o->timeout_s,
        .priority = o->priority,
        .connect_timeout_s = o->connect_timeout_s,
        .retry_window_s = o->retry_window_s,
        .cache = o->cache,
        .notice = s_print_notice,
        .notice_arg = (void *)o,
    };
    lq_submit_rc_t src = lq_submit_send(sub, rpc, &p);
    lq_rpc_destroy(&rpc);
    int rc = LQ_EXIT_OK;
    if (src == LQ_SUBMIT_OK) {
        snprintf(batch_out, batch_len, "%s", lq_submit_batch(sub));
    } else if (src == LQ_SUBMIT_INTERRUPTED) {
        s_interrupted(o, lq_submit_batch(sub));
        rc = LQ_EXIT_INTERRUPTED;
    } else {
        fprintf(stderr, "llmq: %s%s%s\n", src == LQ_SUBMIT_UNREACHABLE ? o->broker : "",
                src == LQ_SUBMIT_UNREACHABLE ? ": " : "", lq_submit_error(sub));
        rc = src == LQ_SUBMIT_REFUSED ? LQ_EXIT_USAGE : LQ_EXIT_RUNTIME;
        if (*lq_submit_batch(sub))
            s_refused_midway(o, lq_submit_batch(sub));
    }
    lq_submit_destroy(&sub);
    return rc;
}
