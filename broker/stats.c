/* stats: see stats.h. Counting first, then the Redis poll, then rendering. */
#include "stats.h"

#include "scripts.h"

#include "../common/log.h"
#include "../common/util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_UPSTREAMS 64 /* later upstreams are counted as "other" */
#define S_MAX_BATCHES 1000 /* active batches read per poll */

/* Outcome classes of one attempt (the `class` label). */
enum {
    C_OK,
    C_RATE_LIMITED,
    C_SERVER_ERROR,
    C_CLIENT_ERROR,
    C_TIMEOUT,
    C_CONNECTION,
    C_OTHER,
    NCLASS
};
static const char *const s_class_name[NCLASS] = {
    "ok", "rate_limited", "server_error", "client_error", "timeout", "connection_error", "other",
};

typedef struct {
    char name[LQ_MAX_ID + 1];
    uint64_t attempts[NCLASS], failed[NCLASS], retried[NCLASS];
    uint64_t completed, pauses, prompt_tokens, completion_tokens;
    lq_prom_hist_t latency, e2e;
} s_up_t;

struct lq_bstats {
    lq_loop_t *loop;
    lq_redis_t *redis;
    char prefix[LQ_MAX_ID + 1];
    uint64_t poll_ms;
    lq_timer_t timer;
    int polling;          /* replies outstanding */
    uint64_t last_poll_ms; /* loop time of the last poll sent */
    lq_bstats_upstream_fn upstream_of;
    void *arg;
    s_up_t ups[S_MAX_UPSTREAMS];
    size_t nups;
    lq_bstats_batch_t *batches;
    size_t nbatches;
};

/* Polls every active batch's counters: returns a flat array, per batch its
 * id then the fields below, for at most ARGV[2] batches. */
/* The STATS script (scripts.c) returns, per active batch, its id then 10
 * fields. */
#define S_POLL_FIELDS 11

static void s_poll(lq_bstats_t *s);

/* ---- counting ---------------------------------------------------------- */

/* The record of upstream name (the last slot takes the overflow as
 * "other"). Can't fail. */
static s_up_t *s_up(lq_bstats_t *s, const char *name)
{
    for (size_t i = 0; i < s->nups; i++)
        if (strcmp(s->ups[i].name, name) == 0)
            return &s->ups[i];
    if (s->nups == S_MAX_UPSTREAMS)
        return &s->ups[S_MAX_UPSTREAMS - 1];
    s_up_t *u = &s->ups[s->nups++];
    snprintf(u->name, sizeof u->name, "%s", s->nups == S_MAX_UPSTREAMS ? "other" : name);
    return u;
}

/* The class of one attempt from its outcome, status and error code. */
static int s_class(const lq_report_seen_t *x)
{
    if (x->outcome == LQ_OUTCOME_OK)
        return C_OK;
    if (x->status == 429)
        return C_RATE_LIMITED;
    if (x->status >= 500 || x->status == 408 || x->status == 409)
        return C_SERVER_ERROR;
    if (x->status > 0)
        return C_CLIENT_ERROR;
    if (strcmp(x->error_code, "timeout") == 0)
        return C_TIMEOUT;
    if (strcmp(x->error_code, "connection_error") == 0)
        return C_CONNECTION;
    return C_OTHER;
}

/* The cached batch of that id, or NULL. */
static const lq_bstats_batch_t *s_batch(const lq_bstats_t *s, const char *id)
{
    for (size_t i = 0; i < s->nbatches; i++)
        if (strcmp(s->batches[i].id, id) == 0)
            return &s->batches[i];
    return NULL;
}

void lq_bstats_on_report(void *arg, const lq_report_seen_t *x)
{
    lq_bstats_t *s = arg;
    const lq_bstats_batch_t *bt = s_batch(s, x->batch);
    const char *name = bt ? bt->upstream : s->upstream_of ? s->upstream_of(s->arg, x->batch) : NULL;
    s_up_t *u = s_up(s, name && name[0] ? name : "default");
    int c = s_class(x);
    u->attempts[c]++;
    if (x->status > 0 || c == C_TIMEOUT)
        lq_prom_hist_observe(&u->latency, (double)x->latency_ms / 1000.0);
    if (x->status == 429 && x->retry_after_ms >= 0)
        u->pauses++;
    if (strcmp(x->verdict, "retry") == 0) {
        u->retried[c]++;
        return;
    }
    int ok = strcmp(x->verdict, "ok") == 0;
    if (!ok && strcmp(x->verdict, "failed") != 0)
        return; /* dup, stale, resent, gone: not a final result */
    if (ok)
        u->completed++;
    else
        u->failed[c]++;
    if (x->prompt_tokens > 0)
        u->prompt_tokens += (uint64_t)x->prompt_tokens;
    if (x->completion_tokens > 0)
        u->completion_tokens += (uint64_t)x->completion_tokens;
    if (bt && bt->created_at > 0) {
        double e2e = (double)lq_wall_ms() / 1000.0 - (double)bt->created_at;
        lq_prom_hist_observe(&u->e2e, e2e > 0 ? e2e : 0);
    } else if (!bt) {
        s_poll(s); /* a batch newer than the last poll: learn it now (10/s at most) */
    }
}

/* ---- the Redis poll ---------------------------------------------------- */

/* Reads a number field of a poll reply ("" = 0). */
static int64_t s_num(const redisReply *r)
{
    return r && r->str ? strtoll(r->str, NULL, 10) : 0;
}

/* Copies a string field of a poll reply into dst. */
static void s_str(char *dst, size_t cap, const redisReply *r, const char *dflt)
{
    snprintf(dst, cap, "%s", r && r->str && r->str[0] ? r->str : dflt);
}

/* Fills one cached batch from the S_POLL_FIELDS entries at e. */
static void s_batch_from(lq_bstats_batch_t *bt, redisReply **e)
{
    s_str(bt->id, sizeof bt->id, e[0], "");
    s_str(bt->name, sizeof bt->name, e[1], "");
    s_str(bt->upstream, sizeof bt->upstream, e[2], "default");
    s_str(bt->state, sizeof bt->state, e[3], "unknown");
    int64_t closed = s_num(e[4]), submitted = s_num(e[6]);
    bt->total = closed ? s_num(e[5]) : submitted;
    bt->completed = s_num(e[7]);
    bt->failed = s_num(e[8]);
    bt->leased = s_num(e[9]);
    bt->created_at = s_num(e[10]);
    bt->pending = submitted - bt->completed - bt->failed - bt->leased;
    if (bt->pending < 0 || strcmp(bt->state, "cancelled") == 0 ||
        strcmp(bt->state, "cancelling") == 0 || strcmp(bt->state, "completed") == 0)
        bt->pending = 0;
}

/* The answer to the batch poll: replaces the cache. */
static void s_on_poll(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_bstats_t *s = arg;
    s->polling--;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            LQ_DEBUG("metrics poll failed: %s", reply->str);
        return;
    }
    size_t n = reply->elements / S_POLL_FIELDS;
    s->batches = xrealloc(s->batches, (n ? n : 1) * sizeof *s->batches);
    for (size_t i = 0; i < n; i++)
        s_batch_from(&s->batches[i], reply->element + i * S_POLL_FIELDS);
    s->nbatches = n;
}

/* Asks Redis for the batch counters (skipped while the last poll is
 * unanswered or Redis is down). Can't fail. */
static void s_poll(lq_bstats_t *s)
{
    uint64_t now = lq_loop_now(s->loop);
    if (s->polling > 0 || !lq_redis_up(s->redis) ||
        (s->last_poll_ms && now < s->last_poll_ms + 100))
        return;
    s->last_poll_ms = now;
    char max[16];
    snprintf(max, sizeof max, "%d", S_MAX_BATCHES);
    const char *poll[] = {s->prefix, max};
    if (lq_redis_eval(s->redis, LQ_SCRIPT_STATS, s_on_poll, s, 0, 2, poll, NULL) == 0)
        s->polling++;
}

/* Every poll_ms: polls. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_bstats_t *s = arg;
    lq_timer_start(loop, t, s->poll_ms);
    s_poll(s);
}

lq_bstats_t *lq_bstats_new(lq_loop_t *loop, lq_redis_t *redis, const char *prefix,
                           uint64_t poll_ms, lq_bstats_upstream_fn upstream_of, void *arg)
{
    lq_bstats_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->redis = redis;
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    s->poll_ms = poll_ms;
    s->upstream_of = upstream_of;
    s->arg = arg;
    lq_timer_init(&s->timer, s_on_timer, s);
    lq_timer_start(loop, &s->timer, 0);
    return s;
}

void lq_bstats_destroy(lq_bstats_t **p)
{
    if (!p || !*p)
        return;
    lq_timer_stop((*p)->loop, &(*p)->timer);
    free((*p)->batches);
    free(*p);
    *p = NULL;
}

size_t lq_bstats_batches(const lq_bstats_t *s, const lq_bstats_batch_t **out)
{
    *out = s->batches;
    return s->nbatches;
}

/* ---- rendering --------------------------------------------------------- */

/* Appends 'upstream="NAME"' (escaped) to b. */
static void s_up_label(lq_prom_buf_t *b, const s_up_t *u)
{
    lq_prom_printf(b, "upstream=\"");
    lq_prom_label(b, u->name);
    lq_prom_printf(b, "\"");
}

/* Appends one series per upstream and class of a per-class counter. */
static void s_render_classes(const lq_bstats_t *s, lq_prom_buf_t *b, const char *name,
                             size_t offset, int first)
{
    for (size_t i = 0; i < s->nups; i++) {
        const uint64_t *v = (const uint64_t *)((const char *)&s->ups[i] + offset);
        for (int c = first; c < NCLASS; c++) {
            lq_prom_printf(b, "%s{", name);
            s_up_label(b, &s->ups[i]);
            lq_prom_printf(b, ",class=\"%s\"} %llu\n", s_class_name[c], (unsigned long long)v[c]);
        }
    }
}

/* Appends one series per upstream of a plain counter (extra: more labels). */
static void s_render_plain(const lq_bstats_t *s, lq_prom_buf_t *b, const char *name,
                           size_t offset, const char *extra)
{
    for (size_t i = 0; i < s->nups; i++) {
        const uint64_t *v = (const uint64_t *)((const char *)&s->ups[i] + offset);
        lq_prom_printf(b, "%s{", name);
        s_up_label(b, &s->ups[i]);
        lq_prom_printf(b, "%s} %llu\n", extra, (unsigned long long)*v);
    }
}

/* Appends the two histograms of every upstream. */
static void s_render_hists(const lq_bstats_t *s, lq_prom_buf_t *b)
{
    lq_prom_buf_t lbl = {0};
    lq_prom_header(b, "llmq_upstream_request_duration_seconds", "histogram",
                   "Duration of one HTTP attempt as the worker measured it, by upstream.");
    for (size_t i = 0; i < s->nups; i++) {
        lbl.len = 0;
        s_up_label(&lbl, &s->ups[i]);
        lq_prom_hist_write(b, "llmq_upstream_request_duration_seconds", lbl.data,
                           &s->ups[i].latency);
    }
    lq_prom_header(b, "llmq_job_duration_seconds", "histogram",
                   "From the batch's submission to the job's final result, by upstream.");
    for (size_t i = 0; i < s->nups; i++) {
        lbl.len = 0;
        s_up_label(&lbl, &s->ups[i]);
        lq_prom_hist_write(b, "llmq_job_duration_seconds", lbl.data, &s->ups[i].e2e);
    }
    lq_prom_buf_clear(&lbl);
}

void lq_bstats_render(const lq_bstats_t *s, lq_prom_buf_t *b)
{
    lq_prom_header(b, "llmq_attempts_total", "counter",
                   "Attempts whose result was recorded, by upstream and outcome class.");
    s_render_classes(s, b, "llmq_attempts_total", offsetof(s_up_t, attempts), C_OK);
    lq_prom_header(b, "llmq_jobs_completed_total", "counter", "Jobs that ended in success.");
    s_render_plain(s, b, "llmq_jobs_completed_total", offsetof(s_up_t, completed), "");
    lq_prom_header(b, "llmq_jobs_failed_total", "counter",
                   "Jobs that ended in failure, by the class of their last attempt.");
    s_render_classes(s, b, "llmq_jobs_failed_total", offsetof(s_up_t, failed), C_OK + 1);
    lq_prom_header(b, "llmq_jobs_retried_total", "counter",
                   "Attempts scheduled for a retry, by the class of the failed attempt.");
    s_render_classes(s, b, "llmq_jobs_retried_total", offsetof(s_up_t, retried), C_OK + 1);
    lq_prom_header(b, "llmq_tokens_total", "counter", "Tokens of final results, by kind.");
    s_render_plain(s, b, "llmq_tokens_total", offsetof(s_up_t, prompt_tokens),
                   ",kind=\"prompt\"");
    s_render_plain(s, b, "llmq_tokens_total", offsetof(s_up_t, completion_tokens),
                   ",kind=\"completion\"");
    lq_prom_header(b, "llmq_upstream_pauses_total", "counter",
                   "429 answers carrying Retry-After (each pauses the upstream).");
    s_render_plain(s, b, "llmq_upstream_pauses_total", offsetof(s_up_t, pauses), "");
    s_render_hists(s, b);
}
