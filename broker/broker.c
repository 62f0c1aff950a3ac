/* broker: see broker.h.
 *
 * Flow of a job: LEASE (Redis) -> dispatch's prefetch queue -> JOB to a
 * worker with credit -> RESULT -> reports -> REPORT (Redis) -> RESULT_ACK. */
#include "broker.h"

#include "../common/log.h"
#include "../common/map.h"
#include "../common/util.h"
#include "../wire/curve.h"
#include "../wire/zsock.h"
#include "dispatch.h"
#include "fleet.h"
#include "reports.h"
#include "rlstore.h"
#include "stats.h"
#include "scripts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LQ_RENEW_BATCH 500 /* members per ZADD XX */
#define LQ_SWEEP_MAX 100   /* batches removed per SWEEP call */
/* A JOB_LIST is sent before it passes this size with the next job (a job
 * is at most ~4 MiB), so a body stays well under LQ_MAX_BODY. */
#define S_LIST_BYTES (8u * 1024u * 1024u)

/* Results stored in Redis whose acknowledgement a worker is owed. */
typedef struct {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    lq_job_ref_t *refs; /* their batch ids point into names */
    size_t n, cap;
    char **names; /* the batch ids, each copied once per run of results */
    size_t nnames, cap_names;
} s_acks_t;

/* The jobs dispatch handed one worker in this loop iteration, sent as one
 * JOB_LIST before the loop sleeps (docs/protocol.md 7.2). */
typedef struct {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    size_t max;      /* jobs per JOB_LIST the worker takes (its READY's batch) */
    lq_batch_t jobs; /* jobs.n > 0: on the broker's pending list */
} s_outq_t;

struct lq_broker {
    lq_loop_t *loop;
    lq_broker_opts_t opts;
    lq_zsock_t *back;
    lq_redis_t *redis;
    lq_dispatch_t *dispatch;
    lq_reports_t *reports;
    lq_rlstore_t *rlstore; /* learned rate limits in Redis */
    lq_bstats_t *stats; /* what /metrics adds to the gauges */
    lq_fleet_t *fleet; /* what the other brokers did: batches opened, fed, cancelled */
    lq_map_t *acks; /* worker ident -> s_acks_t */
    lq_map_t *outqs; /* worker ident -> s_outq_t, for workers that take JOB_LIST */
    s_outq_t **pending; /* outqs holding jobs not sent yet */
    size_t npending, cap_pending;
    lq_timer_t rl_timer, heartbeat_timer, renew_timer, expire_timer, promote_timer;
    lq_timer_t memory_timer, sweep_timer;
    int redis_was_down;
    uint64_t redis_down_since; /* monotonic ms; 0 while Redis is up */
    int cut_off;               /* Redis gone longer than a lease: silent to workers */
    /* Redis memory, from INFO memory once a second */
    int64_t used_bytes, max_bytes, admitted_since; /* bytes admitted since that INFO */
    int64_t cache_stats[4]; /* hits, misses, stores, tokens_saved (Redis, once a second) */
    uint64_t batches_expired;
    char fatal[256];
};

typedef struct {
    lq_broker_t *b;
    char id[LQ_MAX_ID + 1];
} s_lease_call_t;

static void s_on_ignore(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    (void)reply;
    (void)arg;
}

static void s_send_simple(lq_broker_t *b, const uint8_t *ident, size_t len, uint8_t cmd)
{
    lq_msg_t m = {0};
    m.cmd = cmd;
    if (lq_zsock_send(b->back, ident, len, &m) < 0 && errno != EHOSTUNREACH)
        LQ_WARN("send %s failed: %s", lq_cmd_name(cmd), zmq_strerror(errno));
}

/* ---- dispatch's side: the clock, Redis and the worker port ---- */

static uint64_t s_now(void *arg)
{
    return lq_loop_now(((lq_broker_t *)arg)->loop);
}

static void s_on_lease(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_lease_call_t *call = arg;
    lq_dispatch_t *d = call->b->dispatch;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        if (reply)
            LQ_ERROR("LEASE %s failed: %s", call->id,
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
        lq_dispatch_lease_failed(d, call->id);
        free(call);
        return;
    }
    /* {more, k, {idx, attempt, payload} x k, [first, payload...]}
     * (scripts.c, LEASE) */
    size_t n = 0, k = 0, at = 2;
    lq_leased_t *jobs = xmalloc(reply->elements * sizeof *jobs);
    if (reply->elements > 1 && reply->element[1]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->integer > 0)
        k = (size_t)reply->element[1]->integer;
    for (size_t j = 0; j < k && at + 2 < reply->elements; j++, at += 3) {
        redisReply *ri = reply->element[at], *ra = reply->element[at + 1];
        redisReply *rp = reply->element[at + 2];
        if (ri->type != REDIS_REPLY_INTEGER || ra->type != REDIS_REPLY_INTEGER ||
            rp->type != REDIS_REPLY_STRING)
            continue;
        jobs[n++] = (lq_leased_t){ri->integer, ra->integer, rp->str, rp->len};
    }
    if (at < reply->elements && reply->element[at]->type == REDIS_REPLY_INTEGER) {
        long long first = reply->element[at]->integer;
        for (size_t i = at + 1; i < reply->elements; i++) {
            redisReply *rp = reply->element[i];
            if (rp->type == REDIS_REPLY_STRING)
                jobs[n++] = (lq_leased_t){first + (long long)(i - at - 1), 1, rp->str, rp->len};
        }
    }
    lq_dispatch_leased(d, call->id, reply->element[0]->integer != 0, jobs, n);
    free(jobs);
    free(call);
}

static int s_lease(void *arg, const char *batch, int64_t n)
{
    lq_broker_t *b = arg;
    char nbuf[24], deadline[32], now[32];
    int64_t wall = lq_wall_ms();
    snprintf(nbuf, sizeof nbuf, "%lld", (long long)n);
    snprintf(deadline, sizeof deadline, "%lld", (long long)(wall + b->opts.lease_ms));
    snprintf(now, sizeof now, "%lld", (long long)wall);
    const char *argv[5] = {b->opts.prefix, batch, nbuf, deadline, now};
    s_lease_call_t *call = xcalloc(1, sizeof *call);
    call->b = b;
    snprintf(call->id, sizeof call->id, "%s", batch);
    if (lq_redis_eval(b->redis, LQ_SCRIPT_LEASE, s_on_lease, call, 0, 5, argv, NULL) < 0) {
        free(call);
        return -1;
    }
    return 0;
}

static void s_requeue(void *arg, const char *const *members, size_t n, const char *code,
                      const char *why)
{
    lq_broker_t *b = arg;
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    char *err = lq_error_json(code, why);
    const char **argv = xmalloc((n + 3) * sizeof *argv);
    argv[0] = b->opts.prefix;
    argv[1] = now;
    argv[2] = err;
    memcpy(argv + 3, members, n * sizeof *argv);
    if (lq_redis_eval(b->redis, LQ_SCRIPT_REQUEUE, s_on_ignore, NULL, 0, (int)(n + 3), argv, NULL) <
        0)
        LQ_WARN("redis down: %zu leases will be requeued when they expire", n);
    free(argv);
    free(err);
}

/* Sends what q holds as one JOB_LIST (q stays on the pending list). */
static void s_outq_send(lq_broker_t *b, s_outq_t *q)
{
    if (q->jobs.n == 0)
        return;
    size_t len;
    const void *body = lq_batch_body(&q->jobs, &len);
    /* A worker gone or full is found by its heartbeats; the leases bring
     * the jobs back. */
    if (lq_zsock_send_body(b->back, q->ident, q->ident_len, LQ_W_JOB_LIST, body, len) < 0)
        LQ_WARN("could not send %zu jobs: %s", q->jobs.n, zmq_strerror(errno));
    lq_batch_begin(&q->jobs, LQ_W_JOB_LIST);
    q->jobs.n = 0;
}

/* Sends every JOB_LIST this loop iteration gathered. */
static void s_flush_jobs(lq_broker_t *b)
{
    for (size_t i = 0; i < b->npending; i++)
        s_outq_send(b, b->pending[i]);
    b->npending = 0;
}

/* Forgets q's unsent jobs (its worker is gone: dispatch requeues them). */
static void s_outq_drop(lq_broker_t *b, s_outq_t *q)
{
    q->jobs.n = 0;
    for (size_t i = 0; i < b->npending; i++)
        if (b->pending[i] == q) {
            b->pending[i] = b->pending[--b->npending];
            break;
        }
}

static void s_send_job(void *arg, const uint8_t *ident, size_t len, const lq_w_job_t *job)
{
    lq_broker_t *b = arg;
    s_outq_t *q = lq_map_get(b->outqs, ident, len);
    if (!q || q->max == 0) {
        lq_msg_t m = {0};
        m.cmd = LQ_W_JOB;
        m.u.job = *job;
        if (lq_zsock_send(b->back, ident, len, &m) < 0)
            LQ_WARN("could not send a job: %s", zmq_strerror(errno));
        return;
    }
    size_t est = job->body_len + 256 + (job->url ? strlen(job->url) : 0);
    if (q->jobs.n > 0 && (q->jobs.n >= q->max || lq_batch_size(&q->jobs) + est > S_LIST_BYTES))
        s_outq_send(b, q);
    if (q->jobs.n == 0) {
        lq_batch_begin(&q->jobs, LQ_W_JOB_LIST);
        int listed = 0;
        for (size_t i = 0; i < b->npending && !listed; i++)
            listed = b->pending[i] == q;
        if (!listed) {
            if (b->npending == b->cap_pending) {
                b->cap_pending = b->cap_pending ? 2 * b->cap_pending : 16;
                b->pending = xrealloc(b->pending, b->cap_pending * sizeof *b->pending);
            }
            b->pending[b->npending++] = q;
        }
    }
    lq_batch_add(&q->jobs, job);
}

/* Records whether the worker of a READY takes JOB_LIST, and up to how many
 * jobs in one. Can't fail. */
static void s_outq_ready(lq_broker_t *b, const uint8_t *ident, size_t len, int64_t batch)
{
    s_outq_t *q = lq_map_get(b->outqs, ident, len);
    if (q)
        s_outq_send(b, q); /* jobs dispatched before this READY go first */
    if (batch <= 0) {
        if (q)
            q->max = 0;
        return;
    }
    if (!q) {
        q = xcalloc(1, sizeof *q);
        memcpy(q->ident, ident, len);
        q->ident_len = len;
        lq_map_put(b->outqs, ident, len, q);
    }
    q->max = batch > LQ_MAX_BATCH ? LQ_MAX_BATCH : (size_t)batch;
}

static void s_outq_remove(lq_broker_t *b, const uint8_t *ident, size_t len)
{
    s_outq_t *q = lq_map_del(b->outqs, ident, len);
    if (!q)
        return;
    s_outq_drop(b, q);
    lq_batch_clear(&q->jobs);
    free(q);
}

static void s_wake(void *arg, uint64_t delay_ms)
{
    lq_broker_t *b = arg;
    uint64_t due = lq_loop_now(b->loop) + delay_ms;
    if (!lq_timer_active(&b->rl_timer) || b->rl_timer.due_ms > due)
        lq_timer_start(b->loop, &b->rl_timer, delay_ms);
}

static void s_on_rl_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    lq_dispatch_run(((lq_broker_t *)arg)->dispatch);
}

/* ---- results and their acknowledgements ---- */

static void s_on_recorded(void *arg, const uint8_t *ident, size_t len, const char *batch,
                          int64_t index, const char *code, int64_t delay_ms)
{
    lq_broker_t *b = arg;
    s_acks_t *a = lq_map_get(b->acks, ident, len);
    if (!a) {
        a = xcalloc(1, sizeof *a);
        memcpy(a->ident, ident, len);
        a->ident_len = len;
        lq_map_put(b->acks, ident, len, a);
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->refs = xrealloc(a->refs, a->cap * sizeof *a->refs);
    }
    if (a->nnames == 0 || strcmp(a->names[a->nnames - 1], batch) != 0) {
        if (a->nnames == a->cap_names) {
            a->cap_names = a->cap_names ? a->cap_names * 2 : 4;
            a->names = xrealloc(a->names, a->cap_names * sizeof *a->names);
        }
        a->names[a->nnames++] = xstrdup(batch);
    }
    a->refs[a->n++] = (lq_job_ref_t){a->names[a->nnames - 1], index};
    /* A retry due soon: promote it on time rather than on the next tick. */
    if (strcmp(code, "retry") == 0 && delay_ms < 1000 &&
        (!lq_timer_active(&b->promote_timer) ||
         b->promote_timer.due_ms > lq_loop_now(b->loop) + (uint64_t)delay_ms))
        lq_timer_start(b->loop, &b->promote_timer, (uint64_t)delay_ms);
}

static void s_acks_clear(s_acks_t *a)
{
    for (size_t i = 0; i < a->nnames; i++)
        free(a->names[i]);
    a->nnames = 0;
    a->n = 0;
}

/* Sends every owed acknowledgement, one message per worker. */
static void s_flush_acks(lq_broker_t *b)
{
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->acks, &pos, NULL, NULL, &v)) {
        s_acks_t *a = v;
        if (a->n == 0)
            continue;
        lq_msg_t m = {0};
        m.cmd = LQ_W_RESULT_ACK;
        m.u.result_ack.jobs = a->refs;
        m.u.result_ack.njobs = a->n;
        if (lq_zsock_send(b->back, a->ident, a->ident_len, &m) < 0 && errno != EHOSTUNREACH)
            LQ_WARN("send RESULT_ACK failed: %s", zmq_strerror(errno));
        s_acks_clear(a);
    }
}

static void s_acks_drop(lq_broker_t *b, const uint8_t *ident, size_t len)
{
    s_acks_t *a = lq_map_del(b->acks, ident, len);
    if (!a)
        return;
    s_acks_clear(a);
    free(a->refs);
    free(a->names);
    free(a);
}

/* ---- the worker dialogue ---- */

static void s_remove_worker(lq_broker_t *b, const uint8_t *ident, size_t len, const char *why)
{
    s_flush_acks(b);
    s_acks_drop(b, ident, len);
    s_outq_remove(b, ident, len);
    lq_dispatch_worker_remove(b->dispatch, ident, len, why);
}

/* One result from the worker of ident: to dispatch (the job leaves
 * flight, the limiter learns), then to reports (recorded in Redis, then
 * acknowledged). */
static void s_on_result(lq_broker_t *b, const uint8_t *ident, size_t len, lq_w_result_t *res)
{
    char *cid, msg[512];
    lq_dispatch_result(b->dispatch, ident, len, res, &cid);
    lq_dispatch_retry_policy(b->dispatch, res, msg, sizeof msg);
    lq_reports_add(b->reports, ident, len, res, cid);
}

static void s_on_backend(lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)s;
    lq_broker_t *b = arg;
    int known = lq_dispatch_worker_seen(b->dispatch, ident, len);
    switch (m->cmd) {
    case LQ_W_READY:
        s_outq_ready(b, ident, len, m->u.ready.batch);
        if (lq_dispatch_worker_ready(b->dispatch, ident, len, &m->u.ready))
            LQ_INFO("worker %s joined: concurrency %lld, credit %lld", m->u.ready.worker,
                    (long long)m->u.ready.concurrency, (long long)m->u.ready.credit);
        break;
    case LQ_W_CREDIT:
        if (lq_dispatch_worker_credit(b->dispatch, ident, len, m->u.credit.credit) < 0 &&
            !b->cut_off)
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
        break;
    case LQ_W_RESULT:
    case LQ_W_RESULT_LIST: {
        int one = m->cmd == LQ_W_RESULT;
        lq_w_result_t *res = one ? &m->u.result : m->u.result_list.results;
        size_t n = one ? 1 : m->u.result_list.nresults;
        for (size_t i = 0; i < n; i++)
            s_on_result(b, ident, len, &res[i]);
        if (!known && !b->cut_off)
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
        break;
    }
    case LQ_W_HEARTBEAT:
        if (!known && !b->cut_off)
            s_send_simple(b, ident, len, LQ_W_DISCONNECT);
        break;
    case LQ_W_DISCONNECT:
        if (known)
            s_remove_worker(b, ident, len, "left");
        break;
    default:
        LQ_WARN("unexpected %s on the backend", lq_cmd_name(m->cmd));
        break;
    }
}

/* ---- loop duties ---- */

/* Asks every worker to register again and re-send what is unacknowledged. */
static void s_reregister_workers(lq_broker_t *b)
{
    size_t pos = 0, len;
    lq_worker_info_t info;
    const uint8_t *ident;
    while (lq_dispatch_worker_next(b->dispatch, &pos, &info, &ident, &len))
        s_send_simple(b, ident, len, LQ_W_DISCONNECT);
}

/* A broker cut off from Redis for longer than a lease holds nothing any
 * more (its leases expired; another broker may requeue them): it stops
 * dispatching and stops heartbeating its workers, which then move to the
 * next broker of their list. Returns 1 while cut off. */
static int s_check_cut_off(lq_broker_t *b)
{
    int cut = b->redis_down_since &&
              lq_loop_now(b->loop) - b->redis_down_since >= (uint64_t)b->opts.lease_ms;
    if (cut && !b->cut_off)
        LQ_WARN("cut off from Redis for %lld ms (a lease): no dispatch, and silent to workers "
                "so that they move to another broker",
                (long long)b->opts.lease_ms);
    else if (!cut && b->cut_off)
        LQ_INFO("Redis is back: dispatching and heartbeating again");
    b->cut_off = cut;
    return cut;
}

static void s_before_sleep(lq_loop_t *loop, void *arg)
{
    lq_broker_t *b = arg;
    lq_reports_flush(b->reports, lq_loop_now(loop));
    s_flush_acks(b);
    if (lq_reports_take_lost(b->reports))
        s_reregister_workers(b);
    /* results first: no new work while Redis refuses to record results, and
     * the cache gives way (no new entries) above the high-water mark */
    lq_dispatch_hold(b->dispatch, lq_reports_blocked(b->reports) || s_check_cut_off(b));
    lq_redis_state_t rs;
    lq_broker_redis_state(b, &rs);
    lq_reports_cache_writes(b->reports, rs.accepting && !rs.results_blocked);
    lq_dispatch_run(b->dispatch);
    s_flush_jobs(b); /* last: whatever dispatch handed out in this iteration */
}

/* Heartbeats every live worker and removes those silent too long. */
static void s_on_heartbeat(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    int64_t dead_after = b->opts.heartbeat_ms * b->opts.liveness;
    uint8_t dead[64][LQ_MAX_IDENT];
    size_t dead_len[64], ndead = 0, pos = 0, len;
    lq_worker_info_t info;
    const uint8_t *ident;
    int silent = s_check_cut_off(b);
    while (lq_dispatch_worker_next(b->dispatch, &pos, &info, &ident, &len)) {
        if (info.last_seen_ms <= dead_after) {
            if (!silent)
                s_send_simple(b, ident, len, LQ_W_HEARTBEAT);
        } else if (ndead < 64) {
            memcpy(dead[ndead], ident, len);
            dead_len[ndead++] = len;
        }
    }
    for (size_t i = 0; i < ndead; i++)
        s_remove_worker(b, dead[i], dead_len[i], "missed its heartbeats");
    lq_timer_start(loop, t, (uint64_t)b->opts.heartbeat_ms);
}

typedef struct {
    lq_broker_t *b;
    const char *deadline;
    const char *argv[3 + 2 * LQ_RENEW_BATCH];
    int argc;
} s_renew_t;

static void s_renew_one(void *arg, const char *member)
{
    s_renew_t *r = arg;
    r->argv[r->argc++] = r->deadline;
    r->argv[r->argc++] = member;
    if (r->argc == 3 + 2 * LQ_RENEW_BATCH) {
        lq_redis_command(r->b->redis, s_on_ignore, NULL, r->argc, r->argv, NULL);
        r->argc = 3;
    }
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
    s_renew_t *r = xmalloc(sizeof *r);
    r->b = b;
    r->argv[0] = "ZADD";
    r->argv[1] = key;
    r->argv[2] = "XX";
    r->deadline = deadline;
    r->argc = 3;
    lq_dispatch_each_member(b->dispatch, s_renew_one, r);
    if (r->argc > 3)
        lq_redis_command(b->redis, s_on_ignore, NULL, r->argc, r->argv, NULL);
    free(r);
}

/* Marks the batches named in reply (from element first on) ready. */
static void s_ready_ids(lq_broker_t *b, const redisReply *reply, size_t first)
{
    for (size_t i = first; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            lq_dispatch_ready(b->dispatch, reply->element[i]->str);
    lq_dispatch_run(b->dispatch);
}

static void s_on_expired(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        s_ready_ids(arg, reply, 0);
}

static void s_on_expire_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    lq_timer_start(loop, t, 1000);
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    char *err = lq_error_json("lease_expired", "no result before the job's lease expired");
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
        if (wait < 100)
            lq_timer_start(b->loop, &b->promote_timer, (uint64_t)(wait < 0 ? 0 : wait));
    }
    s_ready_ids(b, reply, 1);
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

/* ---- Redis memory: admission, eviction policy, retention ---- */

/* The value of "name:" in an INFO reply, or NULL. */
static const char *s_info_field(const char *info, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *p = info; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            *len = strcspn(p + n + 1, "\r\n");
            return p + n + 1;
        }
    }
    return NULL;
}

static void s_on_memory(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_broker_t *b = arg;
    if (!reply || reply->type != REDIS_REPLY_STRING)
        return;
    size_t len;
    const char *used = s_info_field(reply->str, "used_memory", &len);
    const char *max = s_info_field(reply->str, "maxmemory", &len);
    const char *policy = s_info_field(reply->str, "maxmemory_policy", &len);
    b->used_bytes = used ? strtoll(used, NULL, 10) : 0;
    b->max_bytes = max ? strtoll(max, NULL, 10) : 0;
    b->admitted_since = 0;
    if (policy && !(len == 10 && strncmp(policy, "noeviction", 10) == 0)) {
        snprintf(b->fatal, sizeof b->fatal,
                 "Redis has maxmemory-policy %.*s: it would evict jobs and results silently. "
                 "Set maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy "
                 "noeviction)",
                 (int)len, policy);
        LQ_ERROR("%s", b->fatal);
        lq_loop_stop(b->loop);
    }
}

static void s_on_cache_stats(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_broker_t *b = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
        return;
    for (size_t i = 0; i < 4; i++)
        b->cache_stats[i] = reply->element[i]->str ? strtoll(reply->element[i]->str, NULL, 10) : 0;
}

/* Reads Redis's memory use and policy, and the cache counters (now and
 * every second). */
static void s_poll_memory(lq_broker_t *b)
{
    const char *argv[2] = {"INFO", "memory"};
    lq_redis_command(b->redis, s_on_memory, b, 2, argv, NULL);
    char key[LQ_MAX_ID + 16];
    snprintf(key, sizeof key, "%scache_stats", b->opts.prefix);
    const char *hm[6] = {"HMGET", key, "hits", "misses", "stores", "tokens_saved"};
    lq_redis_command(b->redis, s_on_cache_stats, b, 6, hm, NULL);
}

static void s_on_memory_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_timer_start(loop, t, 1000);
    s_poll_memory(arg);
}

static void s_on_swept(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    lq_broker_t *b = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            LQ_INFO("batch %s removed: its retention ran out", reply->element[i]->str);
    b->batches_expired += reply->elements;
}

/* Removes the finished batches whose retention ran out. */
static void s_on_sweep_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_broker_t *b = arg;
    lq_timer_start(loop, t, 1000);
    char now[24], ret[24], max[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_s());
    snprintf(ret, sizeof ret, "%lld", (long long)b->opts.retention_s);
    snprintf(max, sizeof max, "%d", LQ_SWEEP_MAX);
    const char *argv[5] = {b->opts.prefix, now, ret, b->opts.retain_unfetched ? "0" : "1", max};
    lq_redis_eval(b->redis, LQ_SCRIPT_SWEEP, s_on_swept, b, 0, 5, argv, NULL);
}

int lq_broker_admit(lq_broker_t *b, size_t bytes, char *msg, size_t len)
{
    /* stored jobs take about twice their bytes in Redis (hash overhead) */
    int64_t est = b->used_bytes + 2 * (b->admitted_since + (int64_t)bytes);
    int64_t limit = b->max_bytes * b->opts.high_water_pct / 100;
    if (b->max_bytes > 0 && est > limit) {
        snprintf(msg, len,
                 "Redis is %lld%% full (%.1f MB used of maxmemory %.1f MB; new batches are "
                 "refused above %lld%%, the rest is kept for results). Free space with "
                 "`llmq delete BATCH...` of finished batches, or raise Redis's maxmemory",
                 (long long)(b->used_bytes * 100 / b->max_bytes), b->used_bytes / 1e6,
                 b->max_bytes / 1e6, (long long)b->opts.high_water_pct);
        return -1;
    }
    b->admitted_since += (int64_t)bytes;
    return 0;
}

void lq_broker_redis_state(const lq_broker_t *b, lq_redis_state_t *st)
{
    lq_reports_stats_t rs;
    lq_reports_stats(b->reports, &rs);
    st->used_bytes = b->used_bytes;
    st->max_bytes = b->max_bytes;
    st->high_water_pct = b->opts.high_water_pct;
    st->accepting = b->max_bytes == 0 ||
                    b->used_bytes + 2 * b->admitted_since <=
                        b->max_bytes * b->opts.high_water_pct / 100;
    st->results_blocked = rs.blocked;
    st->results_held = rs.held;
}

int64_t lq_broker_expires_at(const lq_broker_t *b, int64_t finished_at, int64_t fetched_at)
{
    if (b->opts.retention_s <= 0)
        return 0;
    if (fetched_at > 0)
        return fetched_at + b->opts.retention_s;
    if (b->opts.retain_unfetched && finished_at > 0)
        return finished_at + b->opts.retention_s;
    return 0;
}

const char *lq_broker_fatal(const lq_broker_t *b)
{
    return b->fatal[0] ? b->fatal : NULL;
}

/* ---- Redis state ---- */

static void s_on_redis_state(lq_redis_t *r, int up, void *arg)
{
    lq_broker_t *b = arg;
    b->redis_down_since = up ? 0 : lq_loop_now(b->loop);
    if (!up) {
        b->redis_was_down = 1;
        lq_dispatch_redis_lost(b->dispatch);
        return;
    }
    (void)r;
    if (b->fleet)
        lq_fleet_refresh(b->fleet, 1);
    lq_rlstore_load(b->rlstore);
    /* Results sent while Redis was away were not acknowledged: make every
     * worker register again and re-send them. */
    if (b->redis_was_down)
        s_reregister_workers(b);
    s_poll_memory(b);
}

/* ---- set-up ---- */

/* Creates and binds the worker port. Returns 0, or -1 with a message. */
static int s_bind_backend(lq_broker_t *b, void *zctx, char *err, size_t errlen)
{
    b->back = lq_zsock_new(b->loop, zctx, ZMQ_ROUTER, s_on_backend, b);
    if (!b->back) {
        snprintf(err, errlen, "cannot create the worker socket: %s", zmq_strerror(errno));
        return -1;
    }
    if (b->opts.curve_secret && lq_curve_server(b->back, b->opts.curve_secret) < 0) {
        snprintf(err, errlen, "cannot enable CURVE: %s", zmq_strerror(errno));
        return -1;
    }
    int hwm = 1000000, one = 1;
    /* A worker that reconnects with its stable id takes its route over at
     * once instead of being refused until the old one times out. */
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(lq_zsock_raw(b->back), ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (lq_zsock_bind(b->back, b->opts.backend) < 0) {
        snprintf(err, errlen, "cannot bind backend %s: %s", b->opts.backend, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* Initialises every timer (first thing: destroy stops them all). */
static void s_init_timers(lq_broker_t *b)
{
    lq_timer_init(&b->rl_timer, s_on_rl_timer, b);
    lq_timer_init(&b->heartbeat_timer, s_on_heartbeat, b);
    lq_timer_init(&b->renew_timer, s_on_renew, b);
    lq_timer_init(&b->expire_timer, s_on_expire_timer, b);
    lq_timer_init(&b->promote_timer, s_on_promote_timer, b);
    lq_timer_init(&b->memory_timer, s_on_memory_timer, b);
    lq_timer_init(&b->sweep_timer, s_on_sweep_timer, b);
}

static void s_start_timers(lq_broker_t *b)
{
    lq_timer_start(b->loop, &b->memory_timer, 1000);
    if (b->opts.retention_s > 0)
        lq_timer_start(b->loop, &b->sweep_timer, 1000);
    lq_timer_start(b->loop, &b->heartbeat_timer, (uint64_t)b->opts.heartbeat_ms);
    lq_timer_start(b->loop, &b->renew_timer, (uint64_t)(b->opts.lease_ms / 3));
    lq_timer_start(b->loop, &b->expire_timer, 1000);
    lq_timer_start(b->loop, &b->promote_timer, 100);
}

/* The stats module's fallback for a batch it has not polled yet. */
static const char *s_upstream_of(void *arg, const char *batch)
{
    lq_broker_t *b = arg;
    return lq_dispatch_batch_upstream(b->dispatch, batch);
}

lq_broker_t *lq_broker_new(lq_loop_t *loop, void *zctx, const lq_broker_opts_t *opts, char *err,
                           size_t errlen)
{
    lq_broker_t *b = xcalloc(1, sizeof *b);
    b->loop = loop;
    b->opts = *opts;
    b->acks = lq_map_new();
    b->outqs = lq_map_new();
    b->redis_down_since = lq_loop_now(loop); /* until the first connect */
    s_init_timers(b);
    lq_dispatch_ops_t ops = {s_now, s_lease, s_requeue, s_send_job, s_wake, b};
    lq_dispatch_opts_t dopts = {opts->prefetch, opts->limits, opts->nlimits,
                                opts->ignore_ratelimit_headers};
    b->dispatch = lq_dispatch_new(&ops, &dopts);
    if (s_bind_backend(b, zctx, err, errlen) < 0) {
        lq_broker_destroy(&b);
        return NULL;
    }
    /* with --redis-wait-replicas, what is acknowledged waits for WAIT */
    unsigned durable = 1u << LQ_SCRIPT_OPEN | 1u << LQ_SCRIPT_CHUNK | 1u << LQ_SCRIPT_CLOSE |
                       1u << LQ_SCRIPT_REPORT | 1u << LQ_SCRIPT_CANCEL;
    lq_redis_opts_t ropts = {.url = opts->redis_url,
                             .scripts = lq_scripts,
                             .wait_replicas = (int)opts->redis_wait_replicas,
                             .wait_timeout_ms = (int)opts->redis_wait_timeout_ms,
                             .durable_mask = durable};
    b->redis = lq_redis_new(loop, &ropts, s_on_redis_state, b, err, errlen);
    if (!b->redis) {
        lq_broker_destroy(&b);
        return NULL;
    }
    b->fleet = lq_fleet_new(loop, b->redis, b->dispatch, b->opts.prefix, 500);
    lq_reports_opts_t rep = {opts->prefix, opts->retry_base_ms, opts->retry_cap_ms,
                             opts->cache_ttl_s};
    b->reports = lq_reports_new(b->redis, &rep, s_on_recorded, b);
    b->rlstore = lq_rlstore_new(loop, b->redis, b->dispatch, opts->prefix);
    b->stats = lq_bstats_new(loop, b->redis, opts->prefix, 1000, s_upstream_of, b);
    lq_reports_observe(b->reports, lq_bstats_on_report, b->stats);
    lq_loop_add_before_sleep(loop, s_before_sleep, b);
    s_start_timers(b);
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
    lq_timer_stop(b->loop, &b->memory_timer);
    lq_timer_stop(b->loop, &b->sweep_timer);
    lq_rlstore_destroy(&b->rlstore);
    lq_redis_destroy(&b->redis); /* fails pending calls first */
    lq_fleet_destroy(&b->fleet);
    lq_reports_destroy(&b->reports);
    lq_bstats_destroy(&b->stats); /* after Redis: its pending polls are failed */
    lq_dispatch_destroy(&b->dispatch);
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->acks, &pos, NULL, NULL, &v)) {
        s_acks_clear(v);
        free(((s_acks_t *)v)->refs);
        free(((s_acks_t *)v)->names);
        free(v);
    }
    lq_map_destroy(&b->acks);
    pos = 0;
    while (lq_map_next(b->outqs, &pos, NULL, NULL, &v)) {
        lq_batch_clear(&((s_outq_t *)v)->jobs);
        free(v);
    }
    lq_map_destroy(&b->outqs);
    free(b->pending);
    lq_zsock_destroy(&b->back);
    free(b);
    *p = NULL;
}

/* ---- the interface for the frontend and the metrics endpoint ---- */

lq_redis_t *lq_broker_redis(const lq_broker_t *b)
{
    return b->redis;
}

const char *lq_broker_prefix(const lq_broker_t *b)
{
    return b->opts.prefix;
}

void lq_broker_batch_open(lq_broker_t *b, const char *id, const char *upstream, int64_t priority,
                          int64_t timeout_ms)
{
    lq_dispatch_batch(b->dispatch, id, upstream, priority, timeout_ms);
}

void lq_broker_kick(lq_broker_t *b, const char *id)
{
    lq_dispatch_ready(b->dispatch, id);
    lq_dispatch_run(b->dispatch);
}

void lq_broker_cancel_local(lq_broker_t *b, const char *id)
{
    lq_dispatch_cancel(b->dispatch, id);
}

const char *lq_broker_batch_upstream(const lq_broker_t *b, const char *id)
{
    return lq_dispatch_batch_upstream(b->dispatch, id);
}

size_t lq_broker_prefetched(const lq_broker_t *b, const char *id)
{
    return lq_dispatch_queued(b->dispatch, id);
}

size_t lq_broker_workers(const lq_broker_t *b, lq_worker_info_t **out)
{
    lq_dispatch_stats_t st;
    lq_dispatch_stats(b->dispatch, &st);
    lq_worker_info_t *infos = xcalloc(st.workers + 1, sizeof *infos);
    size_t n = 0, pos = 0;
    while (n < st.workers && lq_dispatch_worker_next(b->dispatch, &pos, &infos[n], NULL, NULL))
        n++;
    *out = infos;
    return n;
}

size_t lq_broker_upstreams(lq_broker_t *b, lq_upstream_info_t **out)
{
    return lq_dispatch_upstreams(b->dispatch, out);
}

const lq_bstats_t *lq_broker_observed(const lq_broker_t *b)
{
    return b->stats;
}

void lq_broker_stats(const lq_broker_t *b, lq_broker_stats_t *st)
{
    lq_dispatch_stats_t ds;
    lq_reports_stats_t rs;
    lq_dispatch_stats(b->dispatch, &ds);
    lq_reports_stats(b->reports, &rs);
    memset(st, 0, sizeof *st);
    st->workers = ds.workers;
    st->batches = ds.batches;
    st->credit = ds.credit;
    st->inflight = ds.inflight;
    st->prefetched = ds.queued;
    st->dispatched = ds.dispatched;
    st->results = rs.results;
    st->duplicates = rs.duplicates;
    st->redis_up = lq_redis_up(b->redis);
    st->redis_pending = lq_redis_pending(b->redis);
    st->dropped = lq_zsock_dropped(b->back);
    st->results_refused = rs.refused;
    st->batches_expired = b->batches_expired;
    st->cache_hits = b->cache_stats[0];
    st->cache_misses = b->cache_stats[1];
    st->cache_stores = b->cache_stats[2];
    st->cache_tokens_saved = b->cache_stats[3];
    lq_broker_redis_state(b, &st->redis);
}
