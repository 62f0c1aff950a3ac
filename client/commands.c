/* commands: status, wait, results, cancel, list, workers, and the shared
 * connect/call helpers. */
#include "client.h"

#include "common/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define LQ_RESULTS_PAGE 1000

lq_rpc_t *lq_client_connect(const lq_client_opts_t *o)
{
    char err[256];
    lq_rpc_t *rpc = lq_rpc_new(o->broker, o->curve_server_key, o->curve_secret, err, sizeof err);
    if (!rpc)
        fprintf(stderr, "llmq: %s\n", err);
    return rpc;
}

int lq_client_call(lq_rpc_t *rpc, const lq_client_opts_t *o, lq_msg_t *m, lq_msg_t *reply,
                   int first)
{
    uint64_t deadline = lq_mono_ms() + (uint64_t)(first ? o->connect_timeout_s
                                                        : o->retry_window_s) * 1000u;
    int warned = 0;
    for (;;) {
        uint64_t now = lq_mono_ms();
        int slice = first ? (int)(deadline - now) : 3000;
        if (now + (uint64_t)slice > deadline)
            slice = (int)(deadline - now);
        int rc = lq_rpc_call(rpc, m, reply, slice > 0 ? slice : 1);
        if (rc == 1) {
            if (reply->cmd == LQ_C_ERROR && strcmp(reply->u.error.code, "unavailable") == 0 &&
                lq_mono_ms() < deadline) {
                lq_msg_clear(reply);
                usleep(300000);
                continue;
            }
            if (warned && !o->quiet)
                fprintf(stderr, "llmq: broker reachable again\n");
            return 1;
        }
        if (rc < 0)
            return -1;
        if (lq_mono_ms() >= deadline) {
            fprintf(stderr, "llmq: broker %s unreachable (no answer in %llds)\n", o->broker,
                    first ? o->connect_timeout_s : o->retry_window_s);
            return 0;
        }
        if (!warned && !o->quiet)
            fprintf(stderr, "llmq: broker not answering; retrying for up to %llds\n",
                    o->retry_window_s);
        warned = 1;
    }
}

/* Shows a successful reply on stdout. */
typedef void (*s_show_fn)(const lq_msg_t *reply, const lq_client_opts_t *o);

/* One request over a fresh connection: sends m, shows the reply with show
 * (an ERROR reply goes to stderr instead), closes. Returns the exit code. */
static int s_simple(const lq_client_opts_t *o, lq_msg_t *m, s_show_fn show)
{
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc)
        return LQ_EXIT_RUNTIME;
    lq_msg_t reply;
    int got = lq_client_call(rpc, o, m, &reply, 1);
    if (got <= 0) {
        lq_rpc_destroy(&rpc);
        return got < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_RUNTIME;
    }
    int code = LQ_EXIT_OK;
    if (reply.cmd == LQ_C_ERROR) {
        fprintf(stderr, "llmq: %s\n", reply.u.error.message);
        code = strcmp(reply.u.error.code, "not_found") == 0 ||
                       strcmp(reply.u.error.code, "bad_request") == 0 ||
                       strcmp(reply.u.error.code, "active") == 0
                   ? LQ_EXIT_USAGE
                   : LQ_EXIT_RUNTIME;
    } else {
        show(&reply, o);
    }
    lq_msg_clear(&reply);
    lq_rpc_destroy(&rpc);
    return code;
}

/* Prints j indented on stdout and releases it. */
static void s_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* ---- batch rendering ---- */

static void s_time(char *buf, size_t n, int64_t t)
{
    if (t <= 0) {
        snprintf(buf, n, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The batch as an OpenAI-style batch object plus llmq's own counters. */
static json_t *s_batch_json(const lq_batch_info_t *b)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(b->id));
    json_object_set_new(j, "object", json_string("batch"));
    json_object_set_new(j, "status", json_string(b->state));
    json_object_set_new(j, "created_at", json_integer(b->created_at));
    int finished = b->finished_at > 0;
    json_object_set_new(j, "completed_at", finished && strcmp(b->state, "completed") == 0
                                               ? json_integer(b->finished_at)
                                               : json_null());
    json_object_set_new(j, "cancelled_at", finished && strcmp(b->state, "cancelled") == 0
                                               ? json_integer(b->finished_at)
                                               : json_null());
    json_object_set_new(j, "expires_at", b->expires_at > 0 ? json_integer(b->expires_at)
                                                           : json_null());
    json_t *rc = json_object();
    json_object_set_new(rc, "total", json_integer(b->total));
    json_object_set_new(rc, "completed", json_integer(b->completed));
    json_object_set_new(rc, "failed", json_integer(b->failed));
    json_object_set_new(j, "request_counts", rc);
    json_t *usage = json_object();
    json_object_set_new(usage, "prompt_tokens", json_integer(b->prompt_tokens));
    json_object_set_new(usage, "completion_tokens", json_integer(b->completion_tokens));
    json_object_set_new(usage, "total_tokens",
                        json_integer(b->prompt_tokens + b->completion_tokens));
    json_object_set_new(j, "usage", usage);
    json_t *meta = json_object();
    if (b->name && *b->name)
        json_object_set_new(meta, "name", json_string(b->name));
    json_object_set_new(j, "metadata", meta);
    json_t *x = json_object();
    json_object_set_new(x, "pending", json_integer(b->pending));
    json_object_set_new(x, "in_flight", json_integer(b->inflight));
    json_object_set_new(x, "retried", json_integer(b->retried));
    json_object_set_new(x, "duplicates", json_integer(b->duplicates));
    json_object_set_new(x, "priority", json_integer(b->priority));
    json_object_set_new(x, "max_attempts", json_integer(b->max_attempts));
    json_object_set_new(x, "timeout_ms", json_integer(b->timeout_ms));
    json_object_set_new(x, "upstream", json_string(b->upstream));
    json_object_set_new(x, "cache", json_boolean(b->cache));
    json_object_set_new(x, "cached", json_integer(b->cached));
    json_object_set_new(x, "cached_prompt_tokens", json_integer(b->cached_prompt_tokens));
    json_object_set_new(x, "cached_completion_tokens", json_integer(b->cached_completion_tokens));
    json_object_set_new(j, "llmq", x);
    return j;
}

static void s_print_batch(const lq_batch_info_t *b)
{
    char created[32], finished[32];
    s_time(created, sizeof created, b->created_at);
    s_time(finished, sizeof finished, b->finished_at);
    int64_t end = b->finished_at > 0 ? b->finished_at : lq_wall_s();
    printf("%s  %s%s%s\n", b->id, b->state, b->name && *b->name ? "  name " : "",
           b->name ? b->name : "");
    printf("  jobs       total %lld  completed %lld  failed %lld  pending %lld  in flight %lld\n",
           (long long)b->total, (long long)b->completed, (long long)b->failed,
           (long long)b->pending, (long long)b->inflight);
    printf("  attempts   retried %lld  duplicates dropped %lld  max %lld per job\n",
           (long long)b->retried, (long long)b->duplicates, (long long)b->max_attempts);
    printf("  tokens     prompt %lld  completion %lld\n", (long long)b->prompt_tokens,
           (long long)b->completion_tokens);
    if (b->cache)
        printf("  cache      %lld jobs answered from the cache, saving %lld prompt and %lld "
               "completion tokens\n",
               (long long)b->cached, (long long)b->cached_prompt_tokens,
               (long long)b->cached_completion_tokens);
    printf("  time       created %s  finished %s  elapsed %llds\n", created, finished,
           (long long)(b->created_at > 0 ? end - b->created_at : 0));
    if (b->expires_at > 0) {
        char expires[32];
        s_time(expires, sizeof expires, b->expires_at);
        printf("  retention  removed from Redis at %s (llmq delete removes it now)\n", expires);
    }
}

static int s_finished(const char *state)
{
    return strcmp(state, "completed") == 0 || strcmp(state, "cancelled") == 0;
}

static int s_status_once(lq_rpc_t *rpc, const lq_client_opts_t *o, const char *batch,
                         lq_msg_t *reply, int first)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_STATUS;
    m.u.batch_req.batch = batch;
    int got = lq_client_call(rpc, o, &m, reply, first);
    if (got <= 0)
        return got < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_RUNTIME;
    if (reply->cmd == LQ_C_ERROR) {
        fprintf(stderr, "llmq: %s: %s\n", batch, reply->u.error.message);
        int code = strcmp(reply->u.error.code, "not_found") == 0 ? LQ_EXIT_USAGE
                                                                   : LQ_EXIT_RUNTIME;
        lq_msg_clear(reply);
        return code;
    }
    return LQ_EXIT_OK;
}

int lq_cmd_status(const lq_client_opts_t *o, const char *batch)
{
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc)
        return LQ_EXIT_RUNTIME;
    lq_msg_t reply;
    int rc = s_status_once(rpc, o, batch, &reply, 1);
    if (rc == LQ_EXIT_OK) {
        if (o->json) {
            s_print_json(s_batch_json(&reply.u.batch.info));
        } else {
            s_print_batch(&reply.u.batch.info);
        }
        lq_msg_clear(&reply);
    }
    lq_rpc_destroy(&rpc);
    return rc;
}

/* ---- wait ---- */

static void s_fmt_duration(char *buf, size_t n, double s)
{
    if (s < 0 || s > 8640000)
        snprintf(buf, n, "--");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* Columns of the terminal on stderr; 80 if unknown. Can't fail. */
static int s_term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* One progress line: bar, done/total, percent, rate, ETA, failed, retried.
 * rate < 0: not known yet (shown as --). On a terminal the line is redrawn
 * in place and must never wrap (a wrapped line cannot be rewritten with \r:
 * every redraw would leave a stale row behind), so it is cut to the width
 * less one column, the bar shrinking (or going) first. */
static void s_progress(const lq_batch_info_t *b, double rate, int tty)
{
    int64_t done = b->completed + b->failed;
    double pct = b->total > 0 ? 100.0 * (double)done / (double)b->total : 0.0;
    char eta[32], rtxt[32];
    s_fmt_duration(eta, sizeof eta, rate > 0 ? (double)(b->total - done) / rate : -1);
    if (rate >= 0)
        snprintf(rtxt, sizeof rtxt, "%.0f", rate);
    else
        snprintf(rtxt, sizeof rtxt, "--");
    if (tty) {
        char text[256], line[320];
        snprintf(text, sizeof text,
                 "%lld/%lld %5.1f%%  %s jobs/s  ETA %s  failed %lld  retried %lld", (long long)done,
                 (long long)b->total, pct, rtxt, eta, (long long)b->failed, (long long)b->retried);
        int width = s_term_width() - 1;
        int barw = width - (int)strlen(text) - 3; /* "[" bar "] " */
        if (barw > 30)
            barw = 30;
        size_t o = 0;
        if (barw >= 10) {
            int fill = (int)(pct * barw / 100);
            line[o++] = '[';
            for (int i = 0; i < barw; i++)
                line[o++] = i < fill ? '#' : '.';
            line[o++] = ']';
            line[o++] = ' ';
        }
        snprintf(line + o, sizeof line - o, "%s", text);
        fprintf(stderr, "\r%.*s\x1b[K", width > 0 ? width : 0, line);
    } else {
        fprintf(stderr,
                "llmq: %s %s %lld/%lld (%.1f%%) %s jobs/s eta %s failed %lld retried %lld\n", b->id,
                b->state, (long long)done, (long long)b->total, pct, rtxt, eta,
                (long long)b->failed, (long long)b->retried);
    }
    fflush(stderr);
}


/* The next status poll's delay: poll_ms, or less when the jobs left would
 * be done sooner at the rate of the last interval (d jobs in dt ms): a
 * quarter of that time, at least 10 ms. */
static int s_poll_near_end(int poll_ms, const lq_batch_info_t *b, int64_t d, uint64_t dt)
{
    int64_t left = b->total - b->completed - b->failed;
    if (d <= 0 || dt == 0 || left <= 0 || b->total <= 0)
        return poll_ms;
    double eta_ms = (double)left * (double)dt / (double)d;
    int ms = (int)(eta_ms / 4);
    if (ms < 10)
        ms = 10;
    return ms < poll_ms ? ms : poll_ms;
}

int lq_cmd_wait(const lq_client_opts_t *o, const char *batch)
{
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc)
        return LQ_EXIT_RUNTIME;
    int tty = isatty(STDERR_FILENO) && !o->quiet;
    uint64_t last_log = 0, start = lq_mono_ms();
    /* Rate over a sliding window of 10-20 s: anchor a (older) and b. */
    uint64_t ta = start, tb = start;
    int64_t da = -1, db = -1;
    double rate = -1;
    int rc, first = 1, poll_ms = 10;
    int64_t pdone = 0;
    uint64_t pnow = start;
    for (;;) {
        lq_msg_t reply;
        rc = s_status_once(rpc, o, batch, &reply, first);
        first = 0;
        if (rc != LQ_EXIT_OK)
            break;
        lq_batch_info_t *b = &reply.u.batch.info;
        int64_t done = b->completed + b->failed;
        uint64_t now = lq_mono_ms();
        int fin = s_finished(b->state);
        if (da < 0)
            da = db = done;
        if (now >= tb + 10000) {
            ta = tb, da = db;
            tb = now, db = done;
        }
        if (now >= start + 2000 || (fin && now > ta)) /* shorter: too noisy for an ETA */
            rate = (double)(done - da) * 1000.0 / (double)(now - ta);
        if (tty)
            s_progress(b, rate, 1);
        else if (!o->quiet && (fin || now - last_log >= 5000)) {
            s_progress(b, rate, 0);
            last_log = now;
        }
        if (fin) {
            if (tty)
                fprintf(stderr, "\n");
            if (strcmp(b->state, "cancelled") == 0) {
                if (!o->quiet)
                    fprintf(stderr, "llmq: batch %s was cancelled\n", batch);
                rc = LQ_EXIT_FAILED_JOBS;
            } else {
                rc = b->failed > 0 ? LQ_EXIT_FAILED_JOBS : LQ_EXIT_OK;
            }
            lq_msg_clear(&reply);
            break;
        }
        lq_msg_clear(&reply);
        /* Poll quickly at first (small batches finish fast), then every
         * 100 ms (the log lines stay every 5 s), watching for Ctrl-C; and
         * sooner again as the batch nears its end, so that `run` and `wait`
         * return within a few ms of the last result. */
        lq_msg_t dummy;
        poll_ms = poll_ms * 2 > 100 ? 100 : poll_ms * 2;
        poll_ms = s_poll_near_end(poll_ms, b, done - pdone, now - pnow);
        pdone = done, pnow = now;
        if (lq_rpc_recv(rpc, UINT64_MAX, UINT64_MAX, &dummy, poll_ms) < 0) {
            rc = LQ_EXIT_INTERRUPTED;
            break;
        }
    }
    if (rc == LQ_EXIT_INTERRUPTED || lq_rpc_interrupted(rpc))
        fprintf(stderr,
                "%sllmq: stopped waiting; batch %s keeps running. Resume with: llmq wait %s"
                "%s%s%s\n",
                tty ? "\n" : "", batch, batch, o->out ? " && llmq results " : "",
                o->out ? batch : "", o->out ? " -o OUT" : "");
    lq_rpc_destroy(&rpc);
    return rc;
}

/* ---- results ---- */

static FILE *s_open_tmp(const char *path, char **tmp)
{
    *tmp = xasprintf("%s.part", path);
    FILE *f = fopen(*tmp, "w");
    if (!f) {
        fprintf(stderr, "llmq: cannot write %s: %s\n", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }
    return f;
}

/* Where results go while they are fetched: OUT (or stdout) and ERRFILE,
 * written as PATH.part and renamed into place only on success. */
typedef struct {
    FILE *out, *errf;
    char *tmp_out, *tmp_err; /* NULL for stdout / no ERRFILE */
    int64_t written, failed;
} s_results_t;

/* Opens the outputs named in o. Returns 0, or -1 (message printed). */
static int s_results_open(s_results_t *r, const lq_client_opts_t *o)
{
    memset(r, 0, sizeof *r);
    r->out = strcmp(o->out, "-") == 0 ? stdout : s_open_tmp(o->out, &r->tmp_out);
    if (!r->out)
        return -1;
    if (o->errors && !(r->errf = s_open_tmp(o->errors, &r->tmp_err))) {
        if (r->out != stdout)
            fclose(r->out);
        free(r->tmp_out);
        return -1;
    }
    return 0;
}

/* Fetches every page of results of batch into r, in input order, waiting
 * for results not there yet. Returns the exit code. */
static int s_results_fetch(s_results_t *r, lq_rpc_t *rpc, const lq_client_opts_t *o,
                           const char *batch)
{
    int64_t from = 0;
    for (int first = 1;; first = 0) {
        lq_msg_t m = {0}, reply;
        m.cmd = LQ_C_RESULTS;
        m.u.results.batch = batch;
        m.u.results.from = from;
        m.u.results.max = LQ_RESULTS_PAGE;
        int got = lq_client_call(rpc, o, &m, &reply, first);
        if (got <= 0)
            return got < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_RUNTIME;
        if (reply.cmd == LQ_C_ERROR) {
            fprintf(stderr, "llmq: %s: %s\n", batch, reply.u.error.message);
            int rc = strcmp(reply.u.error.code, "not_found") == 0 ? LQ_EXIT_USAGE : LQ_EXIT_RUNTIME;
            lq_msg_clear(&reply);
            return rc;
        }
        const lq_c_results_page_t *p = &reply.u.results_page;
        for (size_t i = 0; i < p->nitems; i++) {
            FILE *dst = p->items[i].failed && r->errf ? r->errf : r->out;
            fwrite(p->items[i].line, 1, p->items[i].line_len, dst);
            fputc('\n', dst);
            r->failed += p->items[i].failed;
            r->written++;
        }
        int done = p->done;
        int progressed = p->next > from;
        from = p->next;
        lq_msg_clear(&reply);
        if (done)
            return LQ_EXIT_OK;
        if (!progressed) { /* results not there yet: wait for them */
            lq_msg_t dummy;
            if (lq_rpc_recv(rpc, UINT64_MAX, UINT64_MAX, &dummy, 500) < 0)
                return LQ_EXIT_INTERRUPTED;
        }
    }
}

/* Closes the outputs; a failed write turns an OK rc into a runtime error.
 * Returns the exit code. */
static int s_results_close(s_results_t *r, int rc)
{
    int write_failed = 0;
    if (r->out != stdout)
        write_failed |= fclose(r->out) != 0;
    else
        fflush(stdout);
    if (r->errf)
        write_failed |= fclose(r->errf) != 0;
    if (write_failed && rc == LQ_EXIT_OK) {
        fprintf(stderr, "llmq: writing the results failed: %s\n", strerror(errno));
        rc = LQ_EXIT_RUNTIME;
    }
    return rc;
}

/* Asks for batch's total and state (a cancelled batch gives fewer lines
 * than jobs). Leaves *total -1 when the broker does not answer. */
static void s_results_total(const lq_client_opts_t *o, const char *batch, int64_t *total,
                            char state[LQ_MAX_ID + 1])
{
    *total = -1;
    state[0] = '\0';
    lq_msg_t sm = {0}, sr;
    sm.cmd = LQ_C_STATUS;
    sm.u.batch_req.batch = batch;
    lq_rpc_t *rpc = lq_client_connect(o);
    if (rpc && lq_rpc_call(rpc, &sm, &sr, 5000) == 1) {
        if (sr.cmd == LQ_C_BATCH) {
            *total = sr.u.batch.info.total;
            snprintf(state, LQ_MAX_ID + 1, "%s", sr.u.batch.info.state);
        }
        lq_msg_clear(&sr);
    }
    lq_rpc_destroy(&rpc);
}

/* On success renames the .part files into place, says what was written
 * and turns rc into LQ_EXIT_FAILED_JOBS when jobs failed or have no
 * result; otherwise removes them. Frees r's names. Returns the exit code. */
static int s_results_finish(s_results_t *r, const lq_client_opts_t *o, const char *batch, int rc)
{
    if (rc == LQ_EXIT_OK) {
        int64_t total;
        char state[LQ_MAX_ID + 1];
        s_results_total(o, batch, &total, state);
        if (r->tmp_out)
            rename(r->tmp_out, o->out);
        if (r->tmp_err)
            rename(r->tmp_err, o->errors);
        if (!o->quiet)
            fprintf(stderr, "llmq: wrote %lld results (%lld failed) to %s\n",
                    (long long)r->written, (long long)r->failed, o->out);
        if (r->failed > 0)
            rc = LQ_EXIT_FAILED_JOBS;
        if (total >= 0 && r->written < total) {
            if (!o->quiet)
                fprintf(stderr, "llmq: batch %s is %s: %lld of %lld jobs have a result\n", batch,
                        state, (long long)r->written, (long long)total);
            rc = LQ_EXIT_FAILED_JOBS;
        }
    } else {
        if (r->tmp_out)
            unlink(r->tmp_out);
        if (r->tmp_err)
            unlink(r->tmp_err);
    }
    free(r->tmp_out);
    free(r->tmp_err);
    return rc;
}

int lq_cmd_results(const lq_client_opts_t *o, const char *batch)
{
    if (!o->out) {
        fprintf(stderr, "llmq: results needs -o OUT\n");
        return LQ_EXIT_USAGE;
    }
    s_results_t r;
    if (s_results_open(&r, o) < 0)
        return LQ_EXIT_USAGE;
    lq_rpc_t *rpc = lq_client_connect(o);
    int rc = rpc ? s_results_fetch(&r, rpc, o, batch) : LQ_EXIT_RUNTIME;
    lq_rpc_destroy(&rpc);
    rc = s_results_close(&r, rc);
    return s_results_finish(&r, o, batch, rc);
}

/* ---- cancel, list, workers ---- */

/* Shows the batch a CANCEL left. */
static void s_show_cancel(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    (void)o;
    printf("%s %s\n", reply->u.batch.info.id, reply->u.batch.info.state);
}

int lq_cmd_cancel(const lq_client_opts_t *o, const char *batch)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_CANCEL;
    m.u.batch_req.batch = batch;
    return s_simple(o, &m, s_show_cancel);
}

/* Shows the LIST reply as JSON or a table. */
static void s_show_list(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    const lq_c_list_reply_t *l = &reply->u.list_reply;
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l->nbatches; i++)
            json_array_append_new(arr, s_batch_json(&l->batches[i]));
        s_print_json(json_pack("{s:s,s:o}", "object", "list", "data", arr));
    } else {
        printf("%-24s %-12s %10s %10s %8s  %s\n", "BATCH", "STATE", "TOTAL", "DONE", "FAILED",
               "NAME");
        for (size_t i = 0; i < l->nbatches; i++) {
            const lq_batch_info_t *b = &l->batches[i];
            printf("%-24s %-12s %10lld %10lld %8lld  %s\n", b->id, b->state, (long long)b->total,
                   (long long)(b->completed + b->failed), (long long)b->failed, b->name);
        }
    }
}

int lq_cmd_list(const lq_client_opts_t *o)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_LIST;
    return s_simple(o, &m, s_show_list);
}

/* One paragraph on Redis memory, admission and the results queue. */
static void s_print_redis(const lq_redis_state_t *r)
{
    if (r->max_bytes > 0)
        printf("\nredis: %.1f MB used of maxmemory %.1f MB (%lld%%); new batches %s above %lld%%\n",
               r->used_bytes / 1e6, r->max_bytes / 1e6,
               (long long)(r->used_bytes * 100 / r->max_bytes),
               r->accepting ? "accepted up to" : "REFUSED: full", (long long)r->high_water_pct);
    else
        printf("\nredis: %.1f MB used, no maxmemory set\n", r->used_bytes / 1e6);
    if (r->results_blocked)
        printf("redis: REFUSES RESULTS: %lld results held by the broker, dispatch paused until "
               "Redis has room (llmq delete finished batches, or raise maxmemory)\n",
               (long long)r->results_held);
}

/* Shows the WORKERS reply (workers, then upstreams) as JSON or tables. */
static void s_show_workers(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    const lq_c_workers_reply_t *w = &reply->u.workers_reply;
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < w->nworkers; i++)
            json_array_append_new(
                arr, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I}", "id", w->workers[i].id, "concurrency",
                               (json_int_t)w->workers[i].concurrency, "in_flight",
                               (json_int_t)w->workers[i].inflight, "credit",
                               (json_int_t)w->workers[i].credit, "completed",
                               (json_int_t)w->workers[i].completed, "last_seen_ms",
                               (json_int_t)w->workers[i].last_seen_ms));
        json_t *ups = json_array();
        for (size_t i = 0; i < w->nupstreams; i++) {
            const lq_upstream_info_t *u = &w->upstreams[i];
            json_array_append_new(
                ups, json_pack("{s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "name",
                               u->name, "pace_rpm", (json_int_t)u->pace_rpm, "pace_source",
                               u->pace_source ? u->pace_source : "", "pace_tpm",
                               (json_int_t)u->pace_tpm, "limit_rpm", (json_int_t)u->limit_rpm,
                               "learned_rpm", (json_int_t)u->learned_rpm, "ok_rpm",
                               (json_int_t)u->ok_rpm, "in_flight", (json_int_t)u->inflight,
                               "window", (json_int_t)u->window, "responses_429",
                               (json_int_t)u->n429, "responses_ok", (json_int_t)u->nok,
                               "responses_other", (json_int_t)u->nerr, "paused_ms",
                               (json_int_t)u->paused_ms));
        }
        const lq_redis_state_t *r = &w->redis;
        json_t *red = json_pack("{s:I,s:I,s:I,s:b,s:b,s:I}", "used_bytes", (json_int_t)r->used_bytes,
                                "maxmemory", (json_int_t)r->max_bytes, "high_water_pct",
                                (json_int_t)r->high_water_pct, "accepting", r->accepting,
                                "results_blocked", r->results_blocked, "results_held",
                                (json_int_t)r->results_held);
        s_print_json(json_pack("{s:o,s:o,s:o}", "workers", arr, "upstreams", ups, "redis", red));
    } else {
        printf("%-32s %11s %9s %7s %10s %9s\n", "WORKER", "CONCURRENCY", "IN_FLIGHT", "CREDIT",
               "COMPLETED", "SEEN_MS");
        for (size_t i = 0; i < w->nworkers; i++)
            printf("%-32s %11lld %9lld %7lld %10lld %9lld\n", w->workers[i].id,
                   (long long)w->workers[i].concurrency, (long long)w->workers[i].inflight,
                   (long long)w->workers[i].credit, (long long)w->workers[i].completed,
                   (long long)w->workers[i].last_seen_ms);
        s_print_redis(&w->redis);
        if (w->nupstreams > 0) {
            printf("\n%-16s %12s %-10s %12s %9s %9s %8s %9s %9s\n", "UPSTREAM", "PACE_RPM",
                   "SOURCE", "PACE_TPM", "OK_RPM", "IN_FLIGHT", "429S", "OK", "PAUSED_MS");
            for (size_t i = 0; i < w->nupstreams; i++) {
                const lq_upstream_info_t *u = &w->upstreams[i];
                char tpm[24];
                if (u->pace_tpm > 0)
                    snprintf(tpm, sizeof tpm, "%lld", (long long)u->pace_tpm);
                else
                    snprintf(tpm, sizeof tpm, "none");
                printf("%-16s %12lld %-10s %12s %9lld %9lld %8lld %9lld %9lld\n", u->name,
                       (long long)u->pace_rpm, u->pace_source ? u->pace_source : "-", tpm,
                       (long long)u->ok_rpm, (long long)u->inflight, (long long)u->n429,
                       (long long)u->nok, (long long)u->paused_ms);
            }
        }
    }
}

int lq_cmd_workers(const lq_client_opts_t *o)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_WORKERS;
    return s_simple(o, &m, s_show_workers);
}

/* ---- delete, cache ---- */

static void s_show_deleted(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    (void)o;
    printf("%s deleted\n", reply->u.batch_req.batch);
}

int lq_cmd_delete(const lq_client_opts_t *o, const char *const *batches, size_t n)
{
    int rc = LQ_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        lq_msg_t m = {0};
        m.cmd = LQ_C_DELETE;
        m.u.batch_req.batch = batches[i];
        int got = s_simple(o, &m, s_show_deleted);
        if (got != LQ_EXIT_OK && (rc == LQ_EXIT_OK || got == LQ_EXIT_RUNTIME))
            rc = got;
    }
    return rc;
}

/* Shows CACHE_REPLY: what was cleared, or the stats (JSON or text). */
static void s_show_cache(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    const lq_c_cache_reply_t *c = &reply->u.cache_reply;
    if (o->json)
        s_print_json(json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "entries",
                               (json_int_t)c->entries, "bytes", (json_int_t)c->bytes, "hits",
                               (json_int_t)c->hits, "misses", (json_int_t)c->misses, "stores",
                               (json_int_t)c->stores, "tokens_saved", (json_int_t)c->tokens_saved,
                               "cleared", (json_int_t)c->cleared));
    else
        printf("cached responses  %lld (%.1f MB)\nhits              %lld\nmisses            "
               "%lld\nstored            %lld\ntokens saved      %lld\n",
               (long long)c->entries, c->bytes / 1e6, (long long)c->hits, (long long)c->misses,
               (long long)c->stores, (long long)c->tokens_saved);
}

static void s_show_cleared(const lq_msg_t *reply, const lq_client_opts_t *o)
{
    printf("cleared %lld cached responses%s%s\n", (long long)reply->u.cache_reply.cleared,
           o->upstream ? " of upstream " : "", o->upstream ? o->upstream : "");
}

int lq_cmd_cache(const lq_client_opts_t *o, const char *op)
{
    int clear = strcmp(op, "clear") == 0;
    if (!clear && strcmp(op, "stats") != 0) {
        fprintf(stderr, "llmq: cache wants stats or clear\n");
        return LQ_EXIT_USAGE;
    }
    lq_msg_t m = {0};
    m.cmd = LQ_C_CACHE;
    m.u.cache.op = op;
    m.u.cache.upstream = clear ? o->upstream : NULL;
    return s_simple(o, &m, clear ? s_show_cleared : s_show_cache);
}
