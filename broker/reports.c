/* reports: see reports.h. */
#include "reports.h"

#include "../common/log.h"
#include "../common/util.h"
#include "../wire/zsock.h"
#include "scripts.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define LQ_REPORT_MAX 500 /* results per REPORT call */

typedef struct {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    char batch[LQ_MAX_ID + 1];
    int64_t index, attempt, outcome;
    char *cid;  /* custom_id if known, else "" */
    char *resp; /* JSON or "" */
    char *err;  /* JSON or "" */
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
    free(rep->cid);
    free(rep->resp);
    free(rep->err);
    rep->cid = rep->resp = rep->err = NULL;
}

static void s_call_destroy(s_call_t **p)
{
    for (size_t i = 0; i < (*p)->n; i++)
        s_report_clear(&(*p)->items[i]);
    free((*p)->items);
    free(*p);
    *p = NULL;
}

/* A JSON string literal of s[0..n). Caller frees. Can't fail. */
static char *s_json_str(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (!j)
        j = json_string("(invalid UTF-8)");
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return out ? out : xstrdup("\"\"");
}

char *lq_error_json(const char *code, const char *message)
{
    char *c = s_json_str(code, strlen(code));
    char *m = s_json_str(message ? message : "", message ? strlen(message) : 0);
    char *out = xasprintf("{\"code\":%s,\"message\":%s}", c, m);
    free(c);
    free(m);
    return out;
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

/* The "response" object of an output line, or "" when there was no HTTP
 * response. Caller frees. */
static char *s_response_json(const lq_w_result_t *res)
{
    if (res->status <= 0)
        return xstrdup("");
    /* Always a string (OpenAI's output format): "" when the provider sent
     * no x-request-id. */
    const char *id = res->request_id ? res->request_id : "";
    char *rid = s_json_str(id, strlen(id));
    char *out = xasprintf("{\"status_code\":%lld,\"request_id\":%s,\"body\":%.*s}",
                          (long long)res->status, rid, res->body ? (int)res->body_len : 4,
                          res->body ? res->body : "null");
    free(rid);
    return out;
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
    memset(rep, 0, sizeof *rep);
    rep->cid = cid;
    if (ident_len > sizeof rep->ident)
        ident_len = sizeof rep->ident;
    memcpy(rep->ident, ident, ident_len);
    rep->ident_len = ident_len;
    snprintf(rep->batch, sizeof rep->batch, "%s", res->batch);
    rep->index = res->index;
    rep->attempt = res->attempt;
    rep->outcome = res->outcome;
    rep->ptok = res->outcome == LQ_OUTCOME_OK ? res->prompt_tokens : 0;
    rep->ctok = res->outcome == LQ_OUTCOME_OK ? res->completion_tokens : 0;
    rep->delay_ms = lq_reports_retry_delay(&r->opts, res->attempt, res->retry_after_ms);
    rep->status = res->status;
    rep->latency_ms = res->latency_ms;
    rep->retry_after_ms = res->retry_after_ms;
    snprintf(rep->code, sizeof rep->code, "%s",
             res->outcome != LQ_OUTCOME_OK && res->error_code ? res->error_code : "");
    rep->resp = s_response_json(res);
    rep->err = res->outcome != LQ_OUTCOME_OK
                   ? lq_error_json(res->error_code ? res->error_code : "error",
                                   res->error_message ? res->error_message : "")
                   : xstrdup("");
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

static void s_on_report(lq_redis_t *redis, redisReply *reply, void *arg)
{
    (void)redis;
    s_call_t *call = arg;
    lq_reports_t *r = call->r;
    r->calls--;
    if (!reply) /* lost (connection, or WAIT not met): the workers re-send them */
        r->lost = 1;
    if (reply && (reply->type != REDIS_REPLY_ARRAY || reply->elements != call->n)) {
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
        const char *code = reply->element[i]->str ? reply->element[i]->str : "";
        r->stats.results++;
        r->stats.duplicates += strcmp(code, "dup") == 0;
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

/* Sends items[0..n) as one REPORT call; takes them over (the caller's copy
 * must not be cleared). */
static void s_send_call(lq_reports_t *r, const s_report_t *items, size_t n)
{
    size_t argc = 3 + n * LQ_REPORT_FIELDS;
    const char **argv = xmalloc(argc * sizeof *argv);
    char (*nums)[6][24] = xmalloc(n * sizeof *nums);
    char now[32], ttl[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    snprintf(ttl, sizeof ttl, "%lld", r->no_cache ? 0LL : (long long)r->opts.cache_ttl_s);
    argv[0] = r->opts.prefix;
    argv[1] = now;
    argv[2] = ttl;
    for (size_t i = 0; i < n; i++) {
        const s_report_t *rep = &items[i];
        const char **a = argv + 3 + i * LQ_REPORT_FIELDS;
        const int64_t v[6] = {rep->index, rep->attempt, rep->outcome,
                              rep->ptok,  rep->ctok,    rep->delay_ms};
        for (int k = 0; k < 6; k++)
            snprintf(nums[i][k], 24, "%lld", (long long)v[k]);
        a[0] = rep->batch;
        a[1] = nums[i][0];
        a[2] = nums[i][1];
        a[3] = nums[i][2];
        a[4] = rep->resp;
        a[5] = rep->err;
        a[6] = nums[i][3];
        a[7] = nums[i][4];
        a[8] = nums[i][5];
        a[9] = rep->cid;
    }
    s_call_t *call = xmalloc(sizeof *call);
    call->r = r;
    call->n = n;
    call->items = xmalloc(n * sizeof *call->items);
    memcpy(call->items, items, n * sizeof *call->items);
    /* On failure the connection just went away: the workers re-send after
     * they register again, so these can go. */
    if (lq_redis_eval(r->redis, LQ_SCRIPT_REPORT, s_on_report, call, 0, (int)argc, argv, NULL) < 0)
        s_call_destroy(&call);
    else
        r->calls++;
    free(argv);
    free(nums);
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
        size_t n = r->n > LQ_REPORT_MAX ? LQ_REPORT_MAX : r->n;
        s_send_call(r, r->items, n);
        memmove(r->items, r->items + n, (r->n - n) * sizeof *r->items);
        r->n -= n;
        return;
    }
    for (size_t done = 0; done < r->n;) {
        size_t n = r->n - done > LQ_REPORT_MAX ? LQ_REPORT_MAX : r->n - done;
        s_send_call(r, r->items + done, n);
        done += n;
    }
    r->n = 0;
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
