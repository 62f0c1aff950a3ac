/* broker: dispatch, the worker dialogue and the periodic duties (heartbeats,
 * lease renewal and expiry, promotion of delayed retries). See broker.h.
 *
 * Flow of a job: LEASE (Redis) -> batch prefetch queue -> JOB to a worker
 * with credit (in flight) -> RESULT -> REPORT (Redis) -> RESULT_ACK. */
#include "broker.h"

#include "../common/log.h"
#include "../common/util.h"
#include "scripts.h"
#include "../wire/curve.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LQ_LEASE_MAX 1000    /* jobs per LEASE call */
#define LQ_REPORT_MAX 500    /* results per REPORT call */
#define LQ_RENEW_BATCH 500   /* members per ZADD XX */

struct s_report {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    char batch[LQ_MAX_ID + 1];
    int64_t index, attempt, outcome;
    char *cid;  /* custom_id if known, else "" (the script reads the payload) */
    char *resp; /* JSON or "" */
    char *err;  /* JSON or "" */
    int64_t ptok, ctok, delay_ms;
};

typedef struct {
    lq_broker_t *b;
    struct s_report *items;
    size_t n;
} s_report_call_t;

typedef struct {
    lq_broker_t *b;
    char id[LQ_MAX_ID + 1];
} s_lease_call_t;

static void s_dispatch(lq_broker_t *b);

/* ---- small helpers ---- */

static char *s_json_str(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (!j)
        j = json_string("(invalid UTF-8)");
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return out ? out : xstrdup("\"\"");
}

/* Builds the "error" object of an output line. Caller frees. */
static char *s_error_json(const char *code, const char *message)
{
    char *c = s_json_str(code, strlen(code));
    char *m = s_json_str(message ? message : "", message ? strlen(message) : 0);
    char *out = xasprintf("{\"code\":%s,\"message\":%s}", c, m);
    free(c);
    free(m);
    return out;
}

static void s_send(lq_broker_t *b, lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m)
{
    if (lq_zsock_send(s, ident, len, m) < 0 && errno != EHOSTUNREACH)
        LQ_WARN("send %s failed: %s", lq_cmd_name(m->cmd), zmq_strerror(errno));
    (void)b;
}

static void s_send_simple(lq_broker_t *b, const uint8_t *ident, size_t len, uint8_t cmd)
{
    lq_msg_t m = {0};
    m.cmd = cmd;
    s_send(b, b->back, ident, len, &m);
}

static void s_bjob_free(lq_bjob_t *j)
{
    if (!j)
        return;
    free(j->url);
    free(j->cid);
    free(j->body);
    free(j);
}

/* ---- batches ---- */

lq_batch_t *lq_broker_batch(lq_broker_t *b, const char *id, const char *upstream, int64_t priority,
                            int64_t timeout_ms)
{
    lq_batch_t *batch = lq_map_gets(b->batches, id);
    if (batch)
        return batch;
    batch = xcalloc(1, sizeof *batch);
    snprintf(batch->id, sizeof batch->id, "%s", id);
    snprintf(batch->upstream, sizeof batch->upstream, "%s",
             upstream && *upstream ? upstream : "default");
    batch->priority = priority;
    batch->timeout_ms = timeout_ms > 0 ? timeout_ms : 600000;
    lq_map_puts(b->batches, id, batch);
    return batch;
}

/* Puts a batch on the hot list (dispatch ignores the others, so a broker
 * that has seen many finished batches does not slow down). */
static void s_heat(lq_broker_t *b, lq_batch_t *batch)
{
    if (batch->hot)
        return;
    if (b->nhot == b->hot_cap) {
        b->hot_cap = b->hot_cap ? b->hot_cap * 2 : 16;
        b->hot = xrealloc(b->hot, b->hot_cap * sizeof *b->hot);
    }
    b->hot[b->nhot++] = batch;
    batch->hot = 1;
}

static void s_ready(lq_broker_t *b, lq_batch_t *batch)
{
    batch->maybe_ready = 1;
    s_heat(b, batch);
}

/* Drops batches with nothing queued, nothing to lease and no lease call. */
static void s_hot_compact(lq_broker_t *b)
{
    size_t k = 0;
    for (size_t i = 0; i < b->nhot; i++) {
        lq_batch_t *x = b->hot[i];
        if (x->queued > 0 || x->maybe_ready || x->fetching)
            b->hot[k++] = x;
        else
            x->hot = 0;
    }
    b->nhot = k;
}

void lq_broker_kick(lq_broker_t *b, lq_batch_t *batch)
{
    if (batch)
        s_ready(b, batch);
    s_dispatch(b);
}

static void s_on_ignore(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    (void)reply;
    (void)arg;
}

/* Gives leases back to Redis (worker lost, batch cancelled). */
static void s_requeue(lq_broker_t *b, const char **members, size_t n, const char *code,
                      const char *why)
{
    if (n == 0)
        return;
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    char *err = s_error_json(code, why);
    const char **argv = xmalloc((n + 3) * sizeof *argv);
    argv[0] = b->opts.prefix;
    argv[1] = now;
    argv[2] = err;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = members[i];
    if (lq_redis_eval(b->redis, LQ_SCRIPT_REQUEUE, s_on_ignore, NULL, 0, (int)(n + 3), argv, NULL) <
        0)
        LQ_WARN("redis down: %zu leases will be requeued when they expire", n);
    free(argv);
    free(err);
}

void lq_broker_cancel_local(lq_broker_t *b, const char *id)
{
    lq_batch_t *batch = lq_map_gets(b->batches, id);
    if (!batch)
        return;
    batch->cancelled = 1;
    batch->maybe_ready = 0;
    const char **members = xmalloc((batch->queued + 1) * sizeof *members);
    size_t n = 0;
    for (lq_bjob_t *j = batch->head; j; j = j->next)
        members[n++] = j->member;
    s_requeue(b, members, n, "cancelled", "batch cancelled");
    free(members);
    while (batch->head) {
        lq_bjob_t *j = batch->head;
        batch->head = j->next;
        s_bjob_free(j);
    }
    batch->tail = NULL;
    b->queued_total -= (int64_t)batch->queued;
    batch->queued = 0;
}

/* ---- rate limits ---- */

lq_rl_t *lq_broker_limiter(lq_broker_t *b, const char *upstream)
{
    lq_rl_t *rl = lq_map_gets(b->limiters, upstream);
    if (rl)
        return rl;
    lq_rl_config_t cfg = {0, 0, 1};
    size_t nlen = strlen(upstream);
    for (size_t i = 0; i < b->opts.nlimits; i++) {
        const char *spec = b->opts.limits[i];
        if (strncmp(spec, upstream, nlen) == 0 && spec[nlen] == ':')
            lq_rl_parse(spec + nlen + 1, &cfg); /* validated at start-up */
    }
    cfg.use_headers = !b->opts.ignore_ratelimit_headers;
    rl = lq_rl_new(&cfg, lq_loop_now(b->loop));
    lq_map_puts(b->limiters, upstream, rl);
    return rl;
}

static void s_on_rl_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_dispatch(arg);
}

/* ---- workers ---- */

static lq_worker_t *s_worker(lq_broker_t *b, const uint8_t *ident, size_t len)
{
    return lq_map_get(b->workers, ident, len);
}

static int s_worker_serves(const lq_worker_t *w, const char *upstream)
{
    for (size_t i = 0; i < w->nupstreams; i++)
        if (strcmp(w->upstreams[i], upstream) == 0)
            return 1;
    return 0;
}

static void s_worker_free(lq_worker_t *w)
{
    for (size_t i = 0; i < w->nupstreams; i++)
        free(w->upstreams[i]);
    free(w->upstreams);
    for (size_t i = 0; i < w->nacks; i++)
        free((char *)w->acks[i].batch);
    free(w->acks);
    free(w);
}

/* Removes a worker; its jobs in flight go back to the queue at once. */
static void s_worker_remove(lq_broker_t *b, lq_worker_t *w, const char *why)
{
    size_t cap = 0, n = 0, pos = 0;
    void *v;
    while (lq_map_next(b->inflight, &pos, NULL, NULL, &v))
        cap += ((lq_bjob_t *)v)->worker == w;
    const char **members = xmalloc((cap + 1) * sizeof *members);
    lq_bjob_t **jobs = xmalloc((cap + 1) * sizeof *jobs);
    pos = 0;
    while (lq_map_next(b->inflight, &pos, NULL, NULL, &v)) {
        lq_bjob_t *j = v;
        if (j->worker == w && n < cap) {
            jobs[n] = j;
            members[n++] = j->member;
        }
    }
    LQ_WARN("worker %s %s: requeueing %zu jobs", w->id, why, n);
    s_requeue(b, members, n, "worker_lost", "the worker running this job was lost");
    for (size_t i = 0; i < n; i++) {
        lq_batch_t *batch = jobs[i]->batch;
        if (jobs[i]->admitted && batch)
            lq_rl_on_lost(lq_broker_limiter(b, batch->upstream));
        lq_map_dels(b->inflight, jobs[i]->member);
        s_bjob_free(jobs[i]);
        if (batch && !batch->cancelled)
            s_ready(b, batch);
    }
    free(members);
    free(jobs);
    b->total_credit -= w->credit;
    lq_map_del(b->workers, w->ident, w->ident_len);
    s_worker_free(w);
}

static void s_on_ready(lq_broker_t *b, const uint8_t *ident, size_t len, const lq_w_ready_t *r)
{
    lq_worker_t *w = s_worker(b, ident, len);
    if (!w) {
        w = xcalloc(1, sizeof *w);
        memcpy(w->ident, ident, len);
        w->ident_len = len;
        lq_map_put(b->workers, ident, len, w);
        LQ_INFO("worker %s joined: concurrency %lld, credit %lld", r->worker,
                (long long)r->concurrency, (long long)r->credit);
    } else {
        for (size_t i = 0; i < w->nupstreams; i++)
            free(w->upstreams[i]);
        free(w->upstreams);
    }
    snprintf(w->id, sizeof w->id, "%s", r->worker);
    w->last_seen_ms = lq_loop_now(b->loop);
    w->concurrency = r->concurrency;
    b->total_credit += r->credit - w->credit;
    w->credit = r->credit;
    w->nupstreams = r->nupstreams;
    w->upstreams = xcalloc(r->nupstreams + 1, sizeof *w->upstreams);
    for (size_t i = 0; i < r->nupstreams; i++)
        w->upstreams[i] = xstrdup(r->upstreams[i]);
}

/* ---- results ---- */

static void s_on_report(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_report_call_t *call = arg;
    lq_broker_t *b = call->b;
    int ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == call->n;
    if (reply && !ok)
        LQ_ERROR("REPORT failed: %s", reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    for (size_t i = 0; i < call->n; i++) {
        struct s_report *rep = &call->items[i];
        if (ok) {
            const char *code = reply->element[i]->str ? reply->element[i]->str : "";
            if (strcmp(code, "dup") == 0)
                b->stat_dups++;
            b->stat_results++;
            lq_worker_t *w = s_worker(b, rep->ident, rep->ident_len);
            if (w) {
                if (w->nacks == w->acks_cap) {
                    w->acks_cap = w->acks_cap ? w->acks_cap * 2 : 64;
                    w->acks = xrealloc(w->acks, w->acks_cap * sizeof *w->acks);
                }
                w->acks[w->nacks].batch = xstrdup(rep->batch);
                w->acks[w->nacks].index = rep->index;
                w->nacks++;
            } else {
                lq_job_ref_t ref = {rep->batch, rep->index};
                lq_msg_t m = {0};
                m.cmd = LQ_W_RESULT_ACK;
                m.u.result_ack.jobs = &ref;
                m.u.result_ack.njobs = 1;
                s_send(b, b->back, rep->ident, rep->ident_len, &m);
            }
            if (strcmp(code, "retry") == 0 && rep->delay_ms < 1000 &&
                (!lq_timer_active(&b->promote_timer) ||
                 b->promote_timer.due_ms > lq_loop_now(b->loop) + (uint64_t)rep->delay_ms))
                lq_timer_start(b->loop, &b->promote_timer, (uint64_t)rep->delay_ms);
        }
        free(rep->cid);
        free(rep->resp);
        free(rep->err);
    }
    free(call->items);
    free(call);
}

/* Sends the pending reports to Redis in calls of at most LQ_REPORT_MAX. */
static void s_flush_reports(lq_broker_t *b)
{
    if (b->nreports == 0 || !lq_redis_up(b->redis))
        return;
    size_t done = 0;
    while (done < b->nreports) {
        size_t n = b->nreports - done;
        if (n > LQ_REPORT_MAX)
            n = LQ_REPORT_MAX;
        size_t argc = 2 + n * LQ_REPORT_FIELDS;
        const char **argv = xmalloc(argc * sizeof *argv);
        size_t *lens = xmalloc(argc * sizeof *lens);
        char (*nums)[6][24] = xmalloc(n * sizeof *nums);
        char now[32];
        snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
        argv[0] = b->opts.prefix;
        argv[1] = now;
        for (size_t i = 0; i < n; i++) {
            struct s_report *rep = &b->reports[done + i];
            const char **a = argv + 2 + i * LQ_REPORT_FIELDS;
            snprintf(nums[i][0], 24, "%lld", (long long)rep->index);
            snprintf(nums[i][1], 24, "%lld", (long long)rep->attempt);
            snprintf(nums[i][2], 24, "%lld", (long long)rep->outcome);
            snprintf(nums[i][3], 24, "%lld", (long long)rep->ptok);
            snprintf(nums[i][4], 24, "%lld", (long long)rep->ctok);
            snprintf(nums[i][5], 24, "%lld", (long long)rep->delay_ms);
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
        for (size_t i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        s_report_call_t *call = xmalloc(sizeof *call);
        call->b = b;
        call->n = n;
        call->items = xmalloc(n * sizeof *call->items);
        memcpy(call->items, b->reports + done, n * sizeof *call->items);
        if (lq_redis_eval(b->redis, LQ_SCRIPT_REPORT, s_on_report, call, 0, (int)argc, argv, lens) <
            0) {
            /* Connection just went away: the workers re-send after they
             * re-register, so these can go. */
            for (size_t i = 0; i < n; i++) {
                free(call->items[i].cid);
                free(call->items[i].resp);
                free(call->items[i].err);
            }
            free(call->items);
            free(call);
        }
        free(argv);
        free(lens);
        free(nums);
        done += n;
    }
    b->nreports = 0;
}

/* Delay before a retry: Retry-After when given, else full jitter over an
 * exponential ceiling (base * 2^(attempt-1), capped). */
static int64_t s_retry_delay(const lq_broker_t *b, int64_t attempt, int64_t retry_after_ms)
{
    if (retry_after_ms >= 0)
        return retry_after_ms > 3600000 ? 3600000 : retry_after_ms;
    int64_t ceil = b->opts.retry_base_ms;
    for (int64_t i = 1; i < attempt && ceil < b->opts.retry_cap_ms; i++)
        ceil *= 2;
    if (ceil > b->opts.retry_cap_ms)
        ceil = b->opts.retry_cap_ms;
    return ceil > 0 ? (int64_t)((uint64_t)random() % (uint64_t)(ceil + 1)) : 0;
}

static void s_on_result(lq_broker_t *b, const uint8_t *ident, size_t len, lq_worker_t *w,
                        const lq_w_result_t *res)
{
    char member[LQ_MAX_ID + 24];
    snprintf(member, sizeof member, "%s|%lld", res->batch, (long long)res->index);
    lq_bjob_t *j = lq_map_gets(b->inflight, member);
    char *cid = xstrdup(j && j->cid ? j->cid : "");
    if (j && j->worker == w) {
        if (j->admitted && j->batch) {
            lq_rl_result_t rr = {
                .status = (int)res->status,
                .retry_after_ms = res->retry_after_ms,
                .est_tokens = j->est_tokens,
                .used_tokens = res->prompt_tokens >= 0 && res->completion_tokens >= 0
                                   ? res->prompt_tokens + res->completion_tokens
                                   : -1,
                .limit_requests = res->rl_limit_requests > 0 ? res->rl_limit_requests : -1,
                .limit_tokens = res->rl_limit_tokens > 0 ? res->rl_limit_tokens : -1,
                .remaining_requests = res->rl_remaining_requests,
                .remaining_tokens = res->rl_remaining_tokens,
                .reset_requests_ms = res->rl_reset_requests_ms,
                .reset_tokens_ms = res->rl_reset_tokens_ms,
            };
            lq_rl_on_result(lq_broker_limiter(b, j->batch->upstream), lq_loop_now(b->loop), &rr);
        }
        lq_map_dels(b->inflight, member);
        if (w)
            w->inflight--;
        s_bjob_free(j);
    }
    if (w)
        w->completed++;
    if (b->nreports == b->reports_cap) {
        b->reports_cap = b->reports_cap ? b->reports_cap * 2 : 256;
        b->reports = xrealloc(b->reports, b->reports_cap * sizeof *b->reports);
    }
    struct s_report *rep = &b->reports[b->nreports++];
    rep->cid = cid;
    memcpy(rep->ident, ident, len);
    rep->ident_len = len;
    snprintf(rep->batch, sizeof rep->batch, "%s", res->batch);
    rep->index = res->index;
    rep->attempt = res->attempt;
    rep->outcome = res->outcome;
    rep->ptok = res->outcome == LQ_OUTCOME_OK ? res->prompt_tokens : 0;
    rep->ctok = res->outcome == LQ_OUTCOME_OK ? res->completion_tokens : 0;
    rep->delay_ms = s_retry_delay(b, res->attempt, res->retry_after_ms);
    if (res->status > 0) {
        char *rid = res->request_id ? s_json_str(res->request_id, strlen(res->request_id))
                                    : xstrdup("null");
        rep->resp = xasprintf("{\"status_code\":%lld,\"request_id\":%s,\"body\":%.*s}",
                              (long long)res->status, rid, res->body ? (int)res->body_len : 4,
                              res->body ? res->body : "null");
        free(rid);
    } else {
        rep->resp = xstrdup("");
    }
    if (res->outcome != LQ_OUTCOME_OK)
        rep->err = s_error_json(res->error_code ? res->error_code : "error",
                                res->error_message ? res->error_message : "");
    else
        rep->err = xstrdup("");
}

/* ---- worker dialogue ---- */

static void s_on_backend(lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)s;
    lq_broker_t *b = arg;
    lq_worker_t *w = s_worker(b, ident, len);
    if (w)
        w->last_seen_ms = lq_loop_now(b->loop);
    switch (m->cmd) {
    case LQ_W_READY:
        s_on_ready(b, ident, len, &m->u.ready);
        break;
    case LQ_W_CREDIT:
        if (!w) {
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
            break;
        }
        w->credit += m->u.credit.credit;
        b->total_credit += m->u.credit.credit;
        break;
    case LQ_W_RESULT:
        s_on_result(b, ident, len, w, &m->u.result);
        if (!w)
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
        break;
    case LQ_W_HEARTBEAT:
        if (!w)
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
        break;
    case LQ_W_DISCONNECT:
        if (w)
            s_worker_remove(b, w, "left");
        break;
    default:
        LQ_WARN("unexpected %s on the backend", lq_cmd_name(m->cmd));
        break;
    }
}

/* ---- dispatch ---- */

static lq_worker_t *s_pick_worker(lq_broker_t *b, const char *upstream)
{
    lq_worker_t *best = NULL;
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v)) {
        lq_worker_t *w = v;
        if (w->credit > 0 && (!best || w->credit > best->credit) && s_worker_serves(w, upstream))
            best = w;
    }
    return best;
}

/* The batch to serve next among those passing `want`: highest priority,
 * then the one served longest ago. */
static lq_batch_t *s_next_batch(lq_broker_t *b, int (*want)(const lq_broker_t *, const lq_batch_t *))
{
    lq_batch_t *best = NULL;
    for (size_t i = 0; i < b->nhot; i++) {
        lq_batch_t *x = b->hot[i];
        if (!want(b, x))
            continue;
        if (!best || x->priority > best->priority ||
            (x->priority == best->priority && x->rr < best->rr))
            best = x;
    }
    return best;
}

static int s_has_worker_for(const lq_broker_t *b, const char *upstream)
{
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v))
        if (s_worker_serves(v, upstream))
            return 1;
    return 0;
}

static int s_want_send(const lq_broker_t *b, const lq_batch_t *x)
{
    (void)b;
    return x->queued > 0 && !x->cancelled && !x->rr_skip;
}

/* Strict priority for leasing: only batches of the highest priority that
 * has work (or a lease call in progress) may lease (b->fetch_priority). */
static int s_want_fetch(const lq_broker_t *b, const lq_batch_t *x)
{
    return x->maybe_ready && !x->fetching && !x->cancelled && x->priority >= b->fetch_priority &&
           s_has_worker_for(b, x->upstream);
}

static int64_t s_top_priority(const lq_broker_t *b)
{
    int64_t top = INT64_MIN;
    for (size_t i = 0; i < b->nhot; i++) {
        const lq_batch_t *x = b->hot[i];
        if ((x->maybe_ready || x->fetching) && !x->cancelled && x->priority > top &&
            s_has_worker_for(b, x->upstream))
            top = x->priority;
    }
    return top;
}

static void s_on_lease(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_lease_call_t *call = arg;
    lq_broker_t *b = call->b;
    b->fetches--;
    lq_batch_t *batch = lq_map_gets(b->batches, call->id);
    if (batch)
        batch->fetching = 0;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        if (reply)
            LQ_ERROR("LEASE %s failed: %s", call->id,
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
        free(call);
        return;
    }
    if (batch) {
        batch->maybe_ready = reply->element[0]->integer != 0;
        s_heat(b, batch);
    }
    const char **release = NULL;
    size_t nrelease = 0;
    for (size_t i = 1; i + 2 < reply->elements; i += 3) {
        redisReply *ri = reply->element[i], *ra = reply->element[i + 1], *rp = reply->element[i + 2];
        if (ri->type != REDIS_REPLY_INTEGER || ra->type != REDIS_REPLY_INTEGER ||
            rp->type != REDIS_REPLY_STRING)
            continue;
        lq_bjob_t *j = xcalloc(1, sizeof *j);
        j->batch = batch;
        j->index = ri->integer;
        j->attempt = ra->integer;
        snprintf(j->member, sizeof j->member, "%s|%lld", call->id, (long long)j->index);
        /* payload: "<n>:<cid><n>:<url><est>:<body>" */
        const char *p = rp->str, *end = rp->str + rp->len;
        char *colon;
        unsigned long long n1 = strtoull(p, &colon, 10);
        const char *url = colon + 1 + n1;
        unsigned long long n2 = url < end ? strtoull(url, &colon, 10) : 0;
        const char *urlp = colon + 1;
        const char *est = urlp + n2;
        long long e = est < end ? strtoll(est, &colon, 10) : 0;
        const char *body = colon + 1;
        if (!batch || batch->cancelled || url >= end || est > end || body > end) {
            if (batch && !batch->cancelled)
                LQ_ERROR("corrupt payload for %s", j->member);
            release = xrealloc(release, (nrelease + 1) * sizeof *release);
            release[nrelease++] = xstrdup(j->member);
            free(j);
            continue;
        }
        j->url = xstrndup(urlp, n2);
        j->cid = xstrndup(url - n1, n1); /* the custom_id precedes the url field */
        j->est_tokens = e;
        j->body_len = (size_t)(end - body);
        j->body = xstrndup(body, j->body_len);
        if (batch->tail)
            batch->tail->next = j;
        else
            batch->head = j;
        batch->tail = j;
        batch->queued++;
        b->queued_total++;
    }
    s_requeue(b, release, nrelease, "cancelled", "batch cancelled");
    for (size_t i = 0; i < nrelease; i++)
        free((char *)release[i]);
    free(release);
    free(call);
    s_dispatch(b);
}

static void s_send_job(lq_broker_t *b, lq_worker_t *w, lq_bjob_t *j)
{
    lq_msg_t m = {0};
    m.cmd = LQ_W_JOB;
    m.u.job.batch = j->batch->id;
    m.u.job.index = j->index;
    m.u.job.attempt = j->attempt;
    m.u.job.upstream = j->batch->upstream;
    m.u.job.url = j->url;
    m.u.job.body = j->body;
    m.u.job.body_len = j->body_len;
    m.u.job.timeout_ms = j->batch->timeout_ms;
    if (lq_zsock_send(b->back, w->ident, w->ident_len, &m) < 0) {
        /* The worker is gone or full: it will be detected by heartbeats;
         * the lease brings the job back. */
        LQ_WARN("could not send a job to %s: %s", w->id, zmq_strerror(errno));
    }
    free(j->body);
    j->body = NULL;
    j->worker = w;
    w->credit--;
    w->inflight++;
    b->total_credit--;
    b->stat_dispatched++;
    lq_bjob_t *old = lq_map_puts(b->inflight, j->member, j);
    if (old && old != j) {
        if (old->worker)
            old->worker->inflight--;
        s_bjob_free(old);
    }
}

static void s_dispatch(lq_broker_t *b)
{
    /* 1. Hand prefetched jobs to workers with credit. */
    s_hot_compact(b);
    for (size_t i = 0; i < b->nhot; i++)
        b->hot[i]->rr_skip = 0;
    while (b->total_credit > 0 && b->queued_total > 0) {
        lq_batch_t *batch = s_next_batch(b, s_want_send);
        if (!batch)
            break;
        lq_worker_t *w = s_pick_worker(b, batch->upstream);
        if (!w) {
            batch->rr_skip = 1;
            continue;
        }
        uint64_t retry_ms;
        uint64_t now = lq_loop_now(b->loop);
        if (!lq_rl_admit(lq_broker_limiter(b, batch->upstream), now, batch->head->est_tokens,
                         &retry_ms)) {
            batch->rr_skip = 1;
            if (!lq_timer_active(&b->rl_timer) || b->rl_timer.due_ms > now + retry_ms)
                lq_timer_start(b->loop, &b->rl_timer, retry_ms);
            continue;
        }
        batch->head->admitted = 1;
        lq_bjob_t *j = batch->head;
        batch->head = j->next;
        if (!batch->head)
            batch->tail = NULL;
        j->next = NULL;
        batch->queued--;
        b->queued_total--;
        batch->rr = ++b->rr_clock;
        s_send_job(b, w, j);
    }
    /* 2. Lease more so that the queues cover the free credit plus a small
     *    prefetch, splitting the need over the batches of top priority. */
    if (!lq_redis_up(b->redis))
        return;
    int64_t need = b->total_credit + b->opts.prefetch - b->queued_total;
    b->fetch_priority = s_top_priority(b);
    while (need > 0 && b->fetches < 8) {
        lq_batch_t *batch = s_next_batch(b, s_want_fetch);
        if (!batch)
            break;
        int peers = 0;
        for (size_t i = 0; i < b->nhot; i++) {
            lq_batch_t *x = b->hot[i];
            if (x->priority == batch->priority && s_want_fetch(b, x))
                peers++;
        }
        int64_t n = peers > 1 ? (need + peers - 1) / peers : need;
        if (n > LQ_LEASE_MAX)
            n = LQ_LEASE_MAX;
        char nbuf[24], deadline[32];
        snprintf(nbuf, sizeof nbuf, "%lld", (long long)n);
        snprintf(deadline, sizeof deadline, "%lld", (long long)(lq_wall_ms() + b->opts.lease_ms));
        const char *argv[4] = {b->opts.prefix, batch->id, nbuf, deadline};
        s_lease_call_t *call = xcalloc(1, sizeof *call);
        call->b = b;
        snprintf(call->id, sizeof call->id, "%s", batch->id);
        if (lq_redis_eval(b->redis, LQ_SCRIPT_LEASE, s_on_lease, call, 0, 4, argv, NULL) < 0) {
            free(call);
            break;
        }
        batch->fetching = 1;
        batch->rr = ++b->rr_clock;
        b->fetches++;
        need -= n;
    }
}

/* ---- loop duties ---- */

static void s_before_sleep(lq_loop_t *loop, void *arg)
{
    (void)loop;
    lq_broker_t *b = arg;
    s_flush_reports(b);
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v)) {
        lq_worker_t *w = v;
        if (w->nacks == 0)
            continue;
        lq_msg_t m = {0};
        m.cmd = LQ_W_RESULT_ACK;
        m.u.result_ack.jobs = w->acks;
        m.u.result_ack.njobs = w->nacks;
        s_send(b, b->back, w->ident, w->ident_len, &m);
        for (size_t i = 0; i < w->nacks; i++)
            free((char *)w->acks[i].batch);
        w->nacks = 0;
    }
    s_dispatch(b);
}

static void s_on_heartbeat(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    uint64_t now = lq_loop_now(loop);
    uint64_t dead_after = (uint64_t)(b->opts.heartbeat_ms * b->opts.liveness);
    lq_worker_t *dead[64];
    size_t ndead = 0, pos = 0;
    void *v;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v)) {
        lq_worker_t *w = v;
        if (now - w->last_seen_ms > dead_after) {
            if (ndead < 64)
                dead[ndead++] = w;
        } else {
            s_send_simple(b, w->ident, w->ident_len, LQ_W_HEARTBEAT);
        }
    }
    for (size_t i = 0; i < ndead; i++)
        s_worker_remove(b, dead[i], "missed its heartbeats");
    lq_timer_start(loop, t, (uint64_t)b->opts.heartbeat_ms);
}

/* Pushes the lease deadline of every job we hold (queued or in flight). */
static void s_on_renew(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    lq_timer_start(loop, t, (uint64_t)(b->opts.lease_ms / 3));
    if (!lq_redis_up(b->redis))
        return;
    char key[LQ_MAX_ID + 16], deadline[32];
    snprintf(key, sizeof key, "%sleases", b->opts.prefix);
    snprintf(deadline, sizeof deadline, "%lld", (long long)(lq_wall_ms() + b->opts.lease_ms));
    const char *argv[3 + 2 * LQ_RENEW_BATCH];
    argv[0] = "ZADD";
    argv[1] = key;
    argv[2] = "XX";
    int argc = 3;
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->inflight, &pos, NULL, NULL, &v)) {
        argv[argc++] = deadline;
        argv[argc++] = ((lq_bjob_t *)v)->member;
        if (argc == 3 + 2 * LQ_RENEW_BATCH) {
            lq_redis_command(b->redis, s_on_ignore, NULL, argc, argv, NULL);
            argc = 3;
        }
    }
    for (size_t i = 0; i < b->nhot; i++) {
        for (lq_bjob_t *j = b->hot[i]->head; j; j = j->next) {
            argv[argc++] = deadline;
            argv[argc++] = j->member;
            if (argc == 3 + 2 * LQ_RENEW_BATCH) {
                lq_redis_command(b->redis, s_on_ignore, NULL, argc, argv, NULL);
                argc = 3;
            }
        }
    }
    if (argc > 3)
        lq_redis_command(b->redis, s_on_ignore, NULL, argc, argv, NULL);
}

static void s_kick_ids(lq_broker_t *b, redisReply *reply, size_t first)
{
    for (size_t i = first; i < reply->elements; i++) {
        redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        lq_batch_t *batch = lq_map_gets(b->batches, e->str);
        if (batch && !batch->cancelled)
            s_ready(b, batch);
    }
    s_dispatch(b);
}

static void s_on_expired(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        s_kick_ids(arg, reply, 0);
}

static void s_on_expire_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    lq_timer_start(loop, t, 1000);
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    char *err = s_error_json("lease_expired", "no result before the job's lease expired");
    const char *argv[4] = {b->opts.prefix, now, err, "1000"};
    lq_redis_eval(b->redis, LQ_SCRIPT_EXPIRE, s_on_expired, b, 0, 4, argv, NULL);
    free(err);
}

static void s_on_promoted(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_broker_t *b = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return;
    long long next = reply->element[0]->integer;
    if (next >= 0) {
        long long wait = next - (long long)lq_wall_ms();
        if (wait < 0)
            wait = 0;
        if (wait < 100)
            lq_timer_start(b->loop, &b->promote_timer, (uint64_t)wait);
    }
    s_kick_ids(b, reply, 1);
}

static void s_on_promote_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    lq_timer_start(loop, t, 100);
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    const char *argv[3] = {b->opts.prefix, now, "1000"};
    lq_redis_eval(b->redis, LQ_SCRIPT_PROMOTE, s_on_promoted, b, 0, 3, argv, NULL);
}

/* ---- start-up and Redis state ---- */

static const char *s_field(redisReply *flat, const char *name)
{
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->str && strcmp(flat->element[i]->str, name) == 0)
            return flat->element[i + 1]->str;
    return NULL;
}

static int64_t s_field_ll(redisReply *flat, const char *name)
{
    const char *s = s_field(flat, name);
    return s ? strtoll(s, NULL, 10) : 0;
}

void lq_batch_info_from_reply(lq_batch_info_t *info, const char *id, redisReply *flat)
{
    memset(info, 0, sizeof *info);
    info->id = id;
    info->name = s_field(flat, "name") ? s_field(flat, "name") : "";
    info->state = s_field(flat, "state") ? s_field(flat, "state") : "unknown";
    info->upstream = s_field(flat, "upstream") ? s_field(flat, "upstream") : "default";
    int64_t closed = s_field_ll(flat, "closed");
    int64_t submitted = s_field_ll(flat, "submitted");
    info->total = closed ? s_field_ll(flat, "total") : submitted;
    info->completed = s_field_ll(flat, "completed");
    info->failed = s_field_ll(flat, "failed");
    info->retried = s_field_ll(flat, "retried");
    info->duplicates = s_field_ll(flat, "duplicates");
    info->inflight = s_field_ll(flat, "leased");
    info->pending = submitted - info->completed - info->failed - info->inflight;
    if (info->pending < 0 || strcmp(info->state, "cancelled") == 0 ||
        strcmp(info->state, "completed") == 0)
        info->pending = 0;
    info->prompt_tokens = s_field_ll(flat, "prompt_tokens");
    info->completion_tokens = s_field_ll(flat, "completion_tokens");
    info->created_at = s_field_ll(flat, "created_at");
    info->finished_at = s_field_ll(flat, "finished_at");
    info->priority = s_field_ll(flat, "priority");
    info->max_attempts = s_field_ll(flat, "max_attempts");
    info->timeout_ms = s_field_ll(flat, "timeout_ms");
}

static void s_on_active(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_broker_t *b = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *flat = reply->element[i];
        const char *id = s_field(flat, "id");
        const char *state = s_field(flat, "state");
        if (!id || !state)
            continue;
        lq_batch_t *batch = lq_broker_batch(b, id, s_field(flat, "upstream"),
                                            s_field_ll(flat, "priority"),
                                            s_field_ll(flat, "timeout_ms"));
        batch->fetching = 0;
        if (strcmp(state, "submitting") == 0 || strcmp(state, "in_progress") == 0)
            s_ready(b, batch);
    }
    LQ_INFO("%zu active batches", lq_map_len(b->batches));
    s_dispatch(b);
}

static void s_on_redis_state(lq_redis_t *r, int up, void *arg)
{
    lq_broker_t *b = arg;
    if (!up) {
        b->redis_was_down = 1;
        b->fetches = 0;
        size_t pos = 0;
        void *v;
        while (lq_map_next(b->batches, &pos, NULL, NULL, &v))
            ((lq_batch_t *)v)->fetching = 0;
        return;
    }
    const char *argv[3] = {b->opts.prefix, "0", "1"};
    lq_redis_eval(r, LQ_SCRIPT_LIST, s_on_active, b, 0, 3, argv, NULL);
    if (b->redis_was_down) {
        /* Results sent while Redis was away were not acknowledged: make
         * every worker register again and re-send them. */
        size_t pos = 0;
        void *v;
        while (lq_map_next(b->workers, &pos, NULL, NULL, &v)) {
            lq_worker_t *w = v;
            s_send_simple(b, w->ident, w->ident_len, LQ_W_DISCONNECT);
        }
    }
}

static void s_on_frontend(lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)s;
    lq_frontend_handle(arg, ident, len, m);
}

lq_broker_t *lq_broker_new(lq_loop_t *loop, const lq_broker_opts_t *opts, char *err, size_t errlen)
{
    lq_broker_t *b = xcalloc(1, sizeof *b);
    b->loop = loop;
    b->opts = *opts;
    b->workers = lq_map_new();
    b->batches = lq_map_new();
    b->inflight = lq_map_new();
    b->limiters = lq_map_new();
    lq_timer_init(&b->rl_timer, s_on_rl_timer, b);
    b->zctx = zmq_ctx_new();
    b->front = lq_zsock_new(loop, b->zctx, ZMQ_ROUTER, s_on_frontend, b);
    b->back = lq_zsock_new(loop, b->zctx, ZMQ_ROUTER, s_on_backend, b);
    if (!b->front || !b->back) {
        snprintf(err, errlen, "cannot create sockets: %s", zmq_strerror(errno));
        lq_broker_destroy(&b);
        return NULL;
    }
    if (opts->curve_clients_file &&
        !(b->zap = lq_zap_new(loop, b->zctx, opts->curve_clients_file, err, errlen))) {
        lq_broker_destroy(&b);
        return NULL;
    }
    if (opts->curve_secret &&
        (lq_curve_server(b->front, opts->curve_secret) < 0 ||
         lq_curve_server(b->back, opts->curve_secret) < 0)) {
        snprintf(err, errlen, "cannot enable CURVE: %s", zmq_strerror(errno));
        lq_broker_destroy(&b);
        return NULL;
    }
    int hwm = 1000000, one = 1;
    /* A worker that reconnects with its stable id takes its route over at
     * once instead of being refused until the old one times out. */
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (lq_zsock_bind(b->front, opts->frontend) < 0) {
        snprintf(err, errlen, "cannot bind frontend %s: %s", opts->frontend, zmq_strerror(errno));
        lq_broker_destroy(&b);
        return NULL;
    }
    if (lq_zsock_bind(b->back, opts->backend) < 0) {
        snprintf(err, errlen, "cannot bind backend %s: %s", opts->backend, zmq_strerror(errno));
        lq_broker_destroy(&b);
        return NULL;
    }
    lq_redis_opts_t ropts = {.url = opts->redis_url, .scripts = lq_scripts};
    b->redis = lq_redis_new(loop, &ropts, s_on_redis_state, b, err, errlen);
    if (!b->redis) {
        lq_broker_destroy(&b);
        return NULL;
    }
    lq_loop_add_before_sleep(loop, s_before_sleep, b);
    lq_timer_init(&b->heartbeat_timer, s_on_heartbeat, b);
    lq_timer_init(&b->renew_timer, s_on_renew, b);
    lq_timer_init(&b->expire_timer, s_on_expire_timer, b);
    lq_timer_init(&b->promote_timer, s_on_promote_timer, b);
    lq_timer_start(loop, &b->heartbeat_timer, (uint64_t)opts->heartbeat_ms);
    lq_timer_start(loop, &b->renew_timer, (uint64_t)(opts->lease_ms / 3));
    lq_timer_start(loop, &b->expire_timer, 1000);
    lq_timer_start(loop, &b->promote_timer, 100);
    return b;
}

void lq_broker_destroy(lq_broker_t **p)
{
    if (!p || !*p)
        return;
    lq_broker_t *b = *p;
    lq_timer_stop(b->loop, &b->heartbeat_timer);
    lq_timer_stop(b->loop, &b->renew_timer);
    lq_timer_stop(b->loop, &b->expire_timer);
    lq_timer_stop(b->loop, &b->promote_timer);
    lq_timer_stop(b->loop, &b->rl_timer);
    lq_redis_destroy(&b->redis);
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->inflight, &pos, NULL, NULL, &v))
        s_bjob_free(v);
    pos = 0;
    while (lq_map_next(b->batches, &pos, NULL, NULL, &v)) {
        lq_batch_t *batch = v;
        while (batch->head) {
            lq_bjob_t *j = batch->head;
            batch->head = j->next;
            s_bjob_free(j);
        }
        free(batch);
    }
    pos = 0;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v))
        s_worker_free(v);
    for (size_t i = 0; i < b->nreports; i++) {
        free(b->reports[i].cid);
        free(b->reports[i].resp);
        free(b->reports[i].err);
    }
    free(b->reports);
    pos = 0;
    while (lq_map_next(b->limiters, &pos, NULL, NULL, &v)) {
        lq_rl_t *rl = v;
        lq_rl_destroy(&rl);
    }
    lq_map_destroy(&b->limiters);
    lq_map_destroy(&b->inflight);
    lq_map_destroy(&b->batches);
    free(b->hot);
    lq_map_destroy(&b->workers);
    lq_zsock_destroy(&b->front);
    lq_zsock_destroy(&b->back);
    lq_zap_destroy(&b->zap);
    if (b->zctx)
        zmq_ctx_term(b->zctx);
    free(b);
    *p = NULL;
}
