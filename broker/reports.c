/* reports: see reports.h. */
#include "reports.h"

#include "../common/log.h"
#include "../common/util.h"
#include "../wire/zsock.h"
#include "scripts.h"

#include "../common/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LQ_REPORT_MAX 500 /* results per REPORT call */

typedef struct {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    char batch[LQ_MAX_ID + 1];
    int64_t index, attempt, outcome;
    char *value; /* what res stores: 'S'|'F', attempt, '|', output line */
    size_t value_len;
    size_t cid_at; /* 0 or where the script inserts the custom_id (REPORT) */
    int64_t ptok, ctok, delay_ms;
    int64_t status, latency_ms, retry_after_ms; /* for the observer */
    char code[32];                              /* error code, "" on OK */
} s_report_t;

typedef struct {
    lq_reports_t *r;
    s_report_t *items;
    size_t n;
} s_call_t;

struct lq_reports {
    lq_redis_t *redis;
    lq_reports_opts_t opts;
    lq_reports_recorded_cb on_recorded;
    void *arg;
    lq_reports_seen_cb on_seen; /* optional observer (metrics) */
    void *seen_arg;
    s_report_t *items; /* waiting to be sent; while blocked, the refused first */
    size_t n, cap;
    lq_reports_stats_t stats;
    size_t calls;      /* REPORT calls outstanding */
    uint64_t retry_at; /* while blocked: no send before this */
    int lost;          /* results were left with their workers */
    int no_cache;      /* lq_reports_cache_writes(r, 0) */
    char why[160];     /* Redis's last refusal */
};

static void s_report_clear(s_report_t *rep)
{
    free(rep->value);
    rep->value = NULL;
}

static void s_call_destroy(s_call_t **p)
{
    for (size_t i = 0; i < (*p)->n; i++)
        s_report_clear(&(*p)->items[i]);
    free((*p)->items);
    free(*p);
    *p = NULL;
}

/* ---- building an output line ---- */

/* A growing byte string. */
typedef struct {
    char *p;
    size_t len, cap;
} s_buf_t;

static void s_buf_reserve(s_buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap * 2 : 256;
    if (cap < b->len + more)
        cap = b->len + more;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void s_buf_add(s_buf_t *b, const char *s, size_t n)
{
    s_buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define s_buf_lit(b, lit) s_buf_add((b), (lit), sizeof(lit) - 1)

static void s_buf_int(s_buf_t *b, int64_t v)
{
    s_buf_reserve(b, 24);
    b->len += lq_fmt_int(b->p + b->len, v);
}

/* Appends s[0..n) as a JSON string literal (lq_json_escape: escaped as
 * jansson does it); bytes that are not valid UTF-8 give "(invalid UTF-8)". */
static void s_buf_json_str(s_buf_t *b, const char *s, size_t n)
{
    long long col;
    const char *why;
    if (!s)
        s = "", n = 0;
    if (lq_utf8_check(s, n, &col, &why) < 0)
        s = "(invalid UTF-8)", n = strlen(s);
    s_buf_reserve(b, lq_json_escaped_len(s, n));
    b->len += lq_json_escape(b->p + b->len, s, n);
}

/* Appends the "error" object (its last field is the message: REPORT
 * relies on it). */
static void s_buf_error(s_buf_t *b, const char *code, const char *message)
{
    s_buf_lit(b, "{\"code\":");
    s_buf_json_str(b, code, strlen(code));
    s_buf_lit(b, ",\"message\":");
    s_buf_json_str(b, message ? message : "", message ? strlen(message) : 0);
    s_buf_lit(b, "}");
}

char *lq_error_json(const char *code, const char *message)
{
    s_buf_t b = {0};
    s_buf_error(&b, code, message);
    s_buf_add(&b, "", 1);
    return b.p;
}

/* Builds rep's value (what res stores for a final result) and cid_at:
 * "<S|F><attempt>|{"id":"batch_req_<batch>_<index>","custom_id":<cid>,
 * "response":<response object or null>,"error":<error object or null>}".
 * The response object is {"status_code":..,"request_id":..,"body":..}
 * ("request_id" always a string, as in OpenAI's output format). */
static void s_build_value(s_report_t *rep, const lq_w_result_t *res, const char *cid)
{
    s_buf_t b = {0};
    s_buf_reserve(&b, 160 + (res->body ? res->body_len : 0));
    s_buf_add(&b, res->outcome == LQ_OUTCOME_OK ? "S" : "F", 1);
    s_buf_int(&b, res->attempt);
    s_buf_lit(&b, "|{\"id\":\"batch_req_");
    s_buf_add(&b, rep->batch, strlen(rep->batch));
    s_buf_lit(&b, "_");
    s_buf_int(&b, res->index);
    s_buf_lit(&b, "\",\"custom_id\":");
    size_t cid_at = 0;
    if (cid && cid[0])
        s_buf_json_str(&b, cid, strlen(cid));
    else
        cid_at = b.len; /* unknown here: the script reads it from the payload */
    s_buf_lit(&b, ",\"response\":");
    if (res->status > 0) {
        s_buf_lit(&b, "{\"status_code\":");
        s_buf_int(&b, res->status);
        s_buf_lit(&b, ",\"request_id\":");
        const char *id = res->request_id ? res->request_id : "";
        s_buf_json_str(&b, id, strlen(id));
        s_buf_lit(&b, ",\"body\":");
        if (res->body)
            s_buf_add(&b, res->body, res->body_len);
        else
            s_buf_lit(&b, "null");
        s_buf_lit(&b, "}");
    } else {
        s_buf_lit(&b, "null");
    }
    s_buf_lit(&b, ",\"error\":");
    if (res->outcome != LQ_OUTCOME_OK)
        s_buf_error(&b, res->error_code ? res->error_code : "error",
                    res->error_message ? res->error_message : "");
    else
        s_buf_lit(&b, "null");
    s_buf_lit(&b, "}");
    rep->value = b.p;
    rep->value_len = b.len;
    rep->cid_at = cid_at;
}

int64_t lq_reports_retry_delay(const lq_reports_opts_t *o, int64_t attempt,
                               int64_t retry_after_ms)
{
    if (retry_after_ms >= 0)
        return retry_after_ms > 3600000 ? 3600000 : retry_after_ms;
    int64_t ceil = o->retry_base_ms;
    for (int64_t i = 1; i < attempt && ceil < o->retry_cap_ms; i++)
        ceil *= 2;
    if (ceil > o->retry_cap_ms)
        ceil = o->retry_cap_ms;
    return ceil > 0 ? (int64_t)((uint64_t)random() % (uint64_t)(ceil + 1)) : 0;
}

void lq_reports_add(lq_reports_t *r, const uint8_t *ident, size_t ident_len,
                    const lq_w_result_t *res, char *cid)
{
    if (r->stats.blocked && r->n >= LQ_REPORTS_HELD_MAX) {
        /* bounded: this one stays with its worker, unacknowledged */
        r->lost = 1;
        free(cid);
        return;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->items = xrealloc(r->items, r->cap * sizeof *r->items);
    }
    s_report_t *rep = &r->items[r->n++];
    if (ident_len > sizeof rep->ident)
        ident_len = sizeof rep->ident;
    memcpy(rep->ident, ident, ident_len);
    rep->ident_len = ident_len;
    size_t bl = strlen(res->batch);
    if (bl > LQ_MAX_ID)
        bl = LQ_MAX_ID;
    memcpy(rep->batch, res->batch, bl);
    rep->batch[bl] = '\0';
    rep->index = res->index;
    rep->attempt = res->attempt;
    rep->outcome = res->outcome;
    int ok = res->outcome == LQ_OUTCOME_OK;
    rep->ptok = ok ? res->prompt_tokens : 0;
    rep->ctok = ok ? res->completion_tokens : 0;
    rep->delay_ms = lq_reports_retry_delay(&r->opts, res->attempt, res->retry_after_ms);
    rep->status = res->status;
    rep->latency_ms = res->latency_ms;
    rep->retry_after_ms = res->retry_after_ms;
    rep->code[0] = '\0';
    if (!ok && res->error_code)
        snprintf(rep->code, sizeof rep->code, "%s", res->error_code);
    s_build_value(rep, res, cid);
    free(cid);
}

/* Puts refused results back at the head of the queue, to be sent again. */
static void s_hold(lq_reports_t *r, s_call_t *call)
{
    if (r->n + call->n > r->cap) {
        r->cap = r->n + call->n + 256;
        r->items = xrealloc(r->items, r->cap * sizeof *r->items);
    }
    memmove(r->items + call->n, r->items, r->n * sizeof *r->items);
    memcpy(r->items, call->items, call->n * sizeof *r->items);
    r->n += call->n;
    free(call->items);
    free(call);
}

/* The script's letter for a result, as the verdict's name. */
static const char *s_verdict(char c)
{
    switch (c) {
    case 'o': return "ok";
    case 'f': return "failed";
    case 'r': return "retry";
    case 'd': return "dup";
    case 's': return "resent";
    case 't': return "stale";
    case 'g': return "gone";
    default: return "";
    }
}

static void s_on_report(lq_redis_t *redis, redisReply *reply, void *arg)
{
    (void)redis;
    s_call_t *call = arg;
    lq_reports_t *r = call->r;
    r->calls--;
    if (!reply) /* lost (connection, or WAIT not met): the workers re-send them */
        r->lost = 1;
    if (reply && (reply->type != REDIS_REPLY_STRING || reply->len != call->n)) {
        const char *why = reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply";
        if (!r->stats.blocked)
            LQ_ERROR("Redis refuses results (%s): keeping %zu results and holding dispatch "
                     "until it takes them",
                     why, call->n);
        snprintf(r->why, sizeof r->why, "%s", why);
        r->stats.blocked = 1;
        r->stats.refused++;
        s_hold(r, call);
        return;
    }
    if (reply && r->stats.blocked && r->calls == 0) {
        LQ_INFO("Redis takes results again: dispatch resumes");
        r->stats.blocked = 0;
    }
    for (size_t i = 0; reply && i < call->n; i++) {
        const s_report_t *rep = &call->items[i];
        const char *code = s_verdict(reply->str[i]);
        r->stats.results++;
        r->stats.duplicates += reply->str[i] == 'd';
        if (r->on_seen) {
            lq_report_seen_t seen = {rep->batch,     code,           rep->outcome,
                                     rep->status,    rep->code,      rep->latency_ms,
                                     rep->retry_after_ms, rep->ptok, rep->ctok};
            r->on_seen(r->seen_arg, &seen);
        }
        r->on_recorded(r->arg, rep->ident, rep->ident_len, rep->batch, rep->index, code,
                       rep->delay_ms);
    }
    s_call_destroy(&call);
}

/* Appends rep's ctl argument (scripts.c, REPORT): the outcome, and for a
 * retryable result or an unknown custom_id ",delay_ms,cid_at". */
static void s_add_ctl(lq_redis_args_t *a, const s_report_t *rep)
{
    char ctl[64], *w = ctl;
    *w++ = (char)('0' + (rep->outcome >= 0 && rep->outcome <= 9 ? rep->outcome : 2));
    if (rep->outcome == LQ_OUTCOME_RETRYABLE || rep->cid_at) {
        *w++ = ',';
        w += lq_fmt_int(w, rep->delay_ms > 0 ? rep->delay_ms : 0);
        *w++ = ',';
        w += lq_fmt_int(w, (int64_t)rep->cid_at);
    }
    lq_redis_args_add(a, ctl, (size_t)(w - ctl));
}

/* Sends items[0..n) as one REPORT call; takes them over (the caller's copy
 * must not be cleared). */
static void s_send_call(lq_reports_t *r, const s_report_t *items, size_t n)
{
    size_t bytes = 64;
    for (size_t i = 0; i < n; i++)
        bytes += items[i].value_len + 256;
    lq_redis_args_t a;
    lq_redis_args_init(&a, bytes);
    lq_redis_args_str(&a, r->opts.prefix);
    lq_redis_args_int(&a, lq_wall_ms());
    lq_redis_args_int(&a, r->no_cache ? 0 : r->opts.cache_ttl_s);
    for (size_t i = 0; i < n; i++) {
        const s_report_t *rep = &items[i];
        lq_redis_args_str(&a, rep->batch);
        lq_redis_args_int(&a, rep->index);
        lq_redis_args_add(&a, rep->value, rep->value_len);
        lq_redis_args_int(&a, rep->ptok > 0 ? rep->ptok : 0);
        lq_redis_args_int(&a, rep->ctok > 0 ? rep->ctok : 0);
        s_add_ctl(&a, rep);
    }
    s_call_t *call = xmalloc(sizeof *call);
    call->r = r;
    call->n = n;
    call->items = xmalloc(n * sizeof *call->items);
    memcpy(call->items, items, n * sizeof *call->items);
    /* On failure the connection just went away: the workers re-send after
     * they register again, so these can go. */
    if (lq_redis_eval_args(r->redis, LQ_SCRIPT_REPORT, s_on_report, call, &a) < 0)
        s_call_destroy(&call);
    else
        r->calls++;
}

/* Sends the first n waiting results as one call. */
static void s_send_head(lq_reports_t *r, size_t n)
{
    s_send_call(r, r->items, n);
    memmove(r->items, r->items + n, (r->n - n) * sizeof *r->items);
    r->n -= n;
}

void lq_reports_flush(lq_reports_t *r, uint64_t now_ms)
{
    if (r->n == 0 || !lq_redis_up(r->redis))
        return;
    if (r->stats.blocked) {
        /* one probe call at a time, every LQ_REPORTS_RETRY_MS */
        if (r->calls > 0 || now_ms < r->retry_at)
            return;
        r->retry_at = now_ms + LQ_REPORTS_RETRY_MS;
        s_send_head(r, r->n > LQ_REPORT_MAX ? LQ_REPORT_MAX : r->n);
        return;
    }
    /* Nagle: full calls go at once; the rest goes when no call is
     * outstanding, else it waits for the answer (and grows meanwhile). */
    size_t done = 0;
    while (r->n - done >= LQ_REPORT_MAX) {
        s_send_call(r, r->items + done, LQ_REPORT_MAX);
        done += LQ_REPORT_MAX;
    }
    if (done < r->n && r->calls < LQ_REPORTS_CALLS_MAX) {
        s_send_call(r, r->items + done, r->n - done);
        done = r->n;
    }
    memmove(r->items, r->items + done, (r->n - done) * sizeof *r->items);
    r->n -= done;
}

lq_reports_t *lq_reports_new(lq_redis_t *redis, const lq_reports_opts_t *opts,
                             lq_reports_recorded_cb on_recorded, void *arg)
{
    lq_reports_t *r = xcalloc(1, sizeof *r);
    r->redis = redis;
    r->opts = *opts;
    r->on_recorded = on_recorded;
    r->arg = arg;
    return r;
}

void lq_reports_observe(lq_reports_t *r, lq_reports_seen_cb fn, void *arg)
{
    r->on_seen = fn;
    r->seen_arg = arg;
}

void lq_reports_stats(const lq_reports_t *r, lq_reports_stats_t *st)
{
    *st = r->stats;
    st->held = (int64_t)r->n;
}

void lq_reports_cache_writes(lq_reports_t *r, int on)
{
    r->no_cache = !on;
}

int lq_reports_blocked(const lq_reports_t *r)
{
    return r->stats.blocked;
}

int lq_reports_take_lost(lq_reports_t *r)
{
    if (!r->lost || r->stats.blocked)
        return 0;
    r->lost = 0;
    return 1;
}

void lq_reports_destroy(lq_reports_t **p)
{
    if (!p || !*p)
        return;
    for (size_t i = 0; i < (*p)->n; i++)
        s_report_clear(&(*p)->items[i]);
    free((*p)->items);
    free(*p);
    *p = NULL;
}
