/* session: see session.h. */
#include "session.h"

#include "../common/log.h"
#include "../common/util.h"
#include "../wire/curve.h"
#include "../wire/zsock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define S_DEFAULT_HWM 100000
#define S_RETRY_MS 20          /* re-try a refused send after this long */
#define S_BACKOFF_MAX_MS 30000 /* extra silence tolerated after failed reconnects */
#define S_MAX_CREDIT 1000000
#define S_MAX_ENDPOINTS 16
/* A RESULT_LIST is sent before it passes this size with the next result. */
#define S_LIST_BYTES (4u * 1024u * 1024u)

struct lq_session {
    lq_loop_t *loop;
    void *zctx;
    lq_session_config_t cfg;
    lq_session_exec_cb exec;
    lq_session_exit_cb on_exit;
    void *arg;

    lq_zsock_t *sock;
    char *eps[S_MAX_ENDPOINTS]; /* the brokers, from cfg.endpoint "a,b,..." */
    size_t neps, cur;           /* cur: the one of this session */
    uint64_t fails;             /* reconnects since we last heard a broker */
    lq_jobtab_t *jobs;
    lq_wlist_t unacked; /* DONE records awaiting RESULT_ACK, completion order */
    lq_wlist_t sendq;   /* results the socket has not accepted yet */
    int64_t inflight;
    int64_t credit_out;
    int need_ready; /* READY must go out before anything else */
    int lists;      /* the broker sent JOB_LIST since our READY: it takes RESULT_LIST */
    lq_batch_t out; /* the RESULT_LIST being built */
    int heard;      /* a message arrived since the last (re)connect */
    int draining, finished;
    uint64_t last_recv_ms;
    uint64_t backoff_ms;
    lq_timer_t hb_timer, retry_timer, drain_timer;
    lq_session_stats_t st;
};

static void s_on_msg(lq_zsock_t *z, const uint8_t *ident, size_t ident_len, lq_msg_t *m, void *arg);
static void s_on_heartbeat(lq_loop_t *loop, lq_timer_t *t, void *arg);
static void s_on_retry(lq_loop_t *loop, lq_timer_t *t, void *arg);
static void s_on_drain_timeout(lq_loop_t *loop, lq_timer_t *t, void *arg);

/* Splits cfg.endpoint at commas into s->eps and picks the first broker
 * from the worker id's hash, so that workers spread over the brokers. */
static void s_parse_endpoints(lq_session_t *s)
{
    const char *p = s->cfg.endpoint ? s->cfg.endpoint : "";
    while (*p && s->neps < S_MAX_ENDPOINTS) {
        size_t n = strcspn(p, ",");
        if (n > 0)
            s->eps[s->neps++] = xstrndup(p, n);
        p += n + (p[n] == ',');
    }
    if (*p)
        LQ_WARN("more than %d broker endpoints: using the first %d", S_MAX_ENDPOINTS,
                S_MAX_ENDPOINTS);
    if (s->neps == 0)
        s->eps[s->neps++] = xstrdup(p);
    const char *id = s->cfg.id ? s->cfg.id : "";
    s->cur = (size_t)(lq_fnv1a64(id, strlen(id)) % s->neps);
}

/* The endpoint of the broker this session talks to. */
static const char *s_ep(const lq_session_t *s)
{
    return s->eps[s->cur];
}

lq_session_t *lq_session_new(lq_loop_t *loop, void *zctx, const lq_session_config_t *cfg,
                             lq_session_exec_cb exec, lq_session_exit_cb on_exit, void *arg)
{
    lq_session_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->zctx = zctx;
    s->cfg = *cfg;
    if (s->cfg.hwm <= 0)
        s->cfg.hwm = S_DEFAULT_HWM;
    s->exec = exec;
    s->on_exit = on_exit;
    s->arg = arg;
    s->jobs = lq_jobtab_new();
    s_parse_endpoints(s);
    lq_wlist_init(&s->unacked, LQ_WL_UNACKED);
    lq_wlist_init(&s->sendq, LQ_WL_SENDQ);
    lq_timer_init(&s->hb_timer, s_on_heartbeat, s);
    lq_timer_init(&s->retry_timer, s_on_retry, s);
    lq_timer_init(&s->drain_timer, s_on_drain_timeout, s);
    return s;
}

/* Sets one socket option, logging a refusal. Returns 0 or -1. */
static int s_opt(void *raw, int opt, const void *v, size_t len, const char *name)
{
    if (zmq_setsockopt(raw, opt, v, len) == 0)
        return 0;
    LQ_ERROR("broker socket: cannot set %s: %s", name, zmq_strerror(errno));
    return -1;
}

/* Creates and connects a new DEALER. Returns 0 or -1 (no socket then). */
static int s_connect(lq_session_t *s)
{
    lq_zsock_t *z = lq_zsock_new(s->loop, s->zctx, ZMQ_DEALER, s_on_msg, s);
    if (!z) {
        LQ_ERROR("broker socket: cannot create: %s", zmq_strerror(errno));
        return -1;
    }
    void *raw = lq_zsock_raw(z);
    int hwm = s->cfg.hwm, ivl = 100, ivl_max = 2000, one = 1;
    int rc = s_opt(raw, ZMQ_ROUTING_ID, s->cfg.id, strlen(s->cfg.id), "ZMQ_ROUTING_ID");
    rc |= s_opt(raw, ZMQ_SNDHWM, &hwm, sizeof hwm, "ZMQ_SNDHWM");
    rc |= s_opt(raw, ZMQ_RCVHWM, &hwm, sizeof hwm, "ZMQ_RCVHWM");
    rc |= s_opt(raw, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl, "ZMQ_RECONNECT_IVL");
    rc |= s_opt(raw, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max, "ZMQ_RECONNECT_IVL_MAX");
    rc |= s_opt(raw, ZMQ_TCP_KEEPALIVE, &one, sizeof one, "ZMQ_TCP_KEEPALIVE");
    char err[160];
    if (rc == 0 && s->cfg.curve_server_key &&
        lq_curve_client(z, s->cfg.curve_server_key, s->cfg.curve_secret_key, err, sizeof err) < 0) {
        LQ_ERROR("broker socket: %s", err);
        rc = -1;
    }
    if (rc == 0 && lq_zsock_connect(z, s_ep(s)) < 0) {
        LQ_ERROR("cannot connect to broker %s: %s", s_ep(s), zmq_strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        lq_zsock_destroy(&z);
        return -1;
    }
    s->sock = z;
    s->heard = 0;
    s->last_recv_ms = lq_loop_now(s->loop);
    return 0;
}

/* Arms the short timer that re-tries refused sends. Can't fail. */
static void s_retry_later(lq_session_t *s)
{
    if (!lq_timer_active(&s->retry_timer))
        lq_timer_start(s->loop, &s->retry_timer, S_RETRY_MS);
}

/* Free slots the broker may fill: 0 while draining or while too many
 * results await an ack. */
static int64_t s_capacity(const lq_session_t *s)
{
    if (s->draining || s->finished || (int64_t)s->unacked.len > s->cfg.concurrency)
        return 0;
    int64_t free_slots = s->cfg.concurrency - s->inflight;
    return free_slots > 0 ? free_slots : 0;
}

/* Sends one message. Returns 0, or -1 when the socket refused it (errno
 * EAGAIN when full). */
static int s_send(lq_session_t *s, const lq_msg_t *m)
{
    if (!s->sock) {
        errno = ENOTCONN;
        return -1;
    }
    if (lq_zsock_send(s->sock, NULL, 0, m) == 0)
        return 0;
    if (errno != EAGAIN)
        LQ_WARN("broker socket: cannot send %s: %s", lq_cmd_name(m->cmd), zmq_strerror(errno));
    return -1;
}

/* Sends READY with the current free slots. Returns 0 or -1. */
static int s_send_ready(lq_session_t *s)
{
    lq_msg_t m = {0};
    m.cmd = LQ_W_READY;
    m.u.ready.worker = s->cfg.id;
    m.u.ready.concurrency = s->cfg.concurrency;
    int64_t credit = s_capacity(s);
    if (credit > S_MAX_CREDIT)
        credit = S_MAX_CREDIT;
    m.u.ready.credit = credit;
    m.u.ready.upstreams = s->cfg.upstreams;
    m.u.ready.nupstreams = s->cfg.nupstreams;
    m.u.ready.batch = LQ_MAX_BATCH;
    if (s_send(s, &m) < 0)
        return -1;
    s->credit_out = credit;
    s->need_ready = 0;
    s->lists = 0; /* until this broker shows it speaks JOB_LIST */
    LQ_DEBUG("READY sent: credit %lld, %lld in flight, %zu unacknowledged", (long long)credit,
             (long long)s->inflight, s->unacked.len);
    return 0;
}

/* Sends one job's RESULT. Returns 0 or -1. */
static int s_send_result(lq_session_t *s, lq_wjob_t *j)
{
    lq_msg_t m = {0};
    lq_wjob_result_msg(j, &m);
    if (s_send(s, &m) < 0)
        return -1;
    s->st.results_sent++;
    return 0;
}

/* Sends the results at the head of the send queue as one RESULT_LIST (as
 * many as LQ_MAX_BATCH and S_LIST_BYTES allow). Returns 0 or -1. */
static int s_send_result_list(lq_session_t *s)
{
    lq_batch_begin(&s->out, LQ_W_RESULT_LIST);
    lq_wjob_t *j = s->sendq.head;
    for (; j && s->out.n < LQ_MAX_BATCH; j = j->link[LQ_WL_SENDQ].next) {
        size_t est = (j->res.body ? j->res.body_len : 0) +
                     (j->res.error_message ? strlen(j->res.error_message) : 0) + 512;
        if (s->out.n > 0 && lq_batch_size(&s->out) + est > S_LIST_BYTES)
            break;
        lq_msg_t m = {0};
        lq_wjob_result_msg(j, &m);
        lq_batch_add(&s->out, &m.u.result);
    }
    size_t len, n = s->out.n;
    const void *body = lq_batch_body(&s->out, &len);
    if (!s->sock) {
        errno = ENOTCONN;
        return -1;
    }
    if (lq_zsock_send_body(s->sock, NULL, 0, LQ_W_RESULT_LIST, body, len) < 0) {
        if (errno != EAGAIN)
            LQ_WARN("broker socket: cannot send RESULT_LIST: %s", zmq_strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        lq_wlist_remove(&s->sendq, s->sendq.head);
    s->st.results_sent += n;
    return 0;
}

/* Sends READY if due, then queued results, in order (one RESULT_LIST per
 * LQ_MAX_BATCH to a broker that takes them, else one RESULT each); stops
 * at the first refusal and re-tries shortly. Can't fail. */
static void s_flush(lq_session_t *s)
{
    if (!s->sock || s->finished)
        return;
    if (s->need_ready && s_send_ready(s) < 0) {
        s_retry_later(s);
        return;
    }
    while (s->sendq.head) {
        lq_wjob_t *j = s->sendq.head;
        if (s->lists) {
            if (s_send_result_list(s) < 0) {
                s_retry_later(s);
                return;
            }
            continue;
        }
        if (s_send_result(s, j) < 0) {
            s_retry_later(s);
            return;
        }
        lq_wlist_remove(&s->sendq, j);
    }
}

/* Re-registers: READY first, then every unacknowledged result again. */
static void s_register(lq_session_t *s)
{
    s->need_ready = 1;
    for (lq_wjob_t *j = s->unacked.head; j; j = j->link[LQ_WL_UNACKED].next)
        lq_wlist_push(&s->sendq, j);
    s_flush(s);
}

/* Forgets a DONE record (acknowledged or superseded). */
static void s_release(lq_session_t *s, lq_wjob_t *j)
{
    lq_wlist_remove(&s->unacked, j);
    lq_wlist_remove(&s->sendq, j);
    lq_jobtab_remove(s->jobs, j);
    lq_wjob_destroy(&j);
}

/* Ends the session: DISCONNECT, then the exit callback. */
static void s_finish(lq_session_t *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    lq_timer_stop(s->loop, &s->drain_timer);
    lq_timer_stop(s->loop, &s->hb_timer);
    lq_timer_stop(s->loop, &s->retry_timer);
    lq_msg_t m = {0};
    m.cmd = LQ_W_DISCONNECT;
    if (s_send(s, &m) == 0)
        LQ_INFO("sent DISCONNECT to the broker");
    s->on_exit(0, s->arg);
}

/* Ends a drain once nothing is running and everything is acknowledged. */
static void s_check_drained(lq_session_t *s)
{
    if (!s->draining || s->finished || s->inflight > 0 || s->unacked.len > 0)
        return;
    LQ_INFO("drain complete: every result delivered and acknowledged");
    s_finish(s);
}

/* Handles a JOB: a new attempt runs, a duplicate of a running one is
 * ignored (its credit comes back in the next CREDIT). */
static void s_on_job(lq_session_t *s, const lq_w_job_t *m)
{
    if (s->credit_out > 0)
        s->credit_out--;
    s->st.received++;
    if (s->finished)
        return;
    lq_wjob_t *j = lq_jobtab_find(s->jobs, m->batch, m->index);
    if (j && j->state == LQ_WJOB_RUNNING) {
        s->st.duplicates++;
        LQ_DEBUG("duplicate JOB %s/%lld (attempt %lld) ignored: already running attempt %lld",
                 m->batch, (long long)m->index, (long long)m->attempt, (long long)j->attempt);
        return;
    }
    if (j) {
        /* A newer attempt supersedes a result the broker has not acked. */
        s->st.superseded++;
        s_release(s, j);
    }
    j = lq_wjob_new(m, lq_loop_now(s->loop));
    lq_jobtab_insert(s->jobs, j);
    s->inflight++;
    if (s->inflight > 2 * s->cfg.concurrency) {
        /* More than any credit we granted can explain: refuse, don't run. */
        s->st.overloaded++;
        LQ_WARN("JOB %s/%lld over twice our concurrency: refused", m->batch, (long long)m->index);
        lq_outcome_local(&j->res, LQ_OUTCOME_RETRYABLE, "worker_overloaded",
                         "the worker received more jobs than the credit it granted");
        j->state = LQ_WJOB_DONE;
        lq_session_job_done(s, j);
        return;
    }
    s->exec(j, s->arg);
}

/* Handles every message from the broker. */
static void s_on_msg(lq_zsock_t *z, const uint8_t *ident, size_t ident_len, lq_msg_t *m, void *arg)
{
    (void)z;
    (void)ident;
    (void)ident_len;
    lq_session_t *s = arg;
    s->last_recv_ms = lq_loop_now(s->loop);
    if (!s->heard) {
        s->heard = 1;
        s->backoff_ms = 0;
        s->fails = 0;
        LQ_INFO("broker %s: connected", s_ep(s));
    }
    switch (m->cmd) {
    case LQ_W_JOB:
        s_on_job(s, &m->u.job);
        break;
    case LQ_W_JOB_LIST:
        s->lists = 1;
        for (size_t i = 0; i < m->u.job_list.njobs; i++)
            s_on_job(s, &m->u.job_list.jobs[i]);
        break;
    case LQ_W_RESULT_ACK:
        for (size_t i = 0; i < m->u.result_ack.njobs; i++) {
            const lq_job_ref_t *r = &m->u.result_ack.jobs[i];
            lq_wjob_t *j = lq_jobtab_find(s->jobs, r->batch, r->index);
            if (j && j->state == LQ_WJOB_DONE) {
                s->st.acked++;
                s_release(s, j);
            }
        }
        s_check_drained(s);
        break;
    case LQ_W_HEARTBEAT:
        break;
    case LQ_W_DISCONNECT:
        s->st.reregistrations++;
        LQ_INFO("broker does not know us: registering again, re-sending %zu results",
                s->unacked.len);
        s_register(s);
        break;
    default:
        LQ_WARN("unexpected %s from the broker ignored", lq_cmd_name(m->cmd));
        break;
    }
}

/* Replaces the DEALER after the broker went silent, moving to the next
 * broker of the list, and re-registers. The backoff grows once per round
 * over the whole list. */
static void s_reconnect(lq_session_t *s, uint64_t silent_ms)
{
    if (s->sock) {
        /* what it still queues is re-sent on the new socket: drop it, or it
         * would hold zmq_ctx_term (at exit) until that broker returns */
        int linger = 0;
        zmq_setsockopt(lq_zsock_raw(s->sock), ZMQ_LINGER, &linger, sizeof linger);
        s->st.dropped_msgs += lq_zsock_dropped(s->sock);
        lq_zsock_destroy(&s->sock);
    }
    s->st.reconnects++;
    const char *old = s_ep(s);
    s->cur = (s->cur + 1) % s->neps;
    if (++s->fails % s->neps == 0) {
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : (uint64_t)s->cfg.heartbeat_ms;
        if (s->backoff_ms > S_BACKOFF_MAX_MS)
            s->backoff_ms = S_BACKOFF_MAX_MS;
    }
    LQ_WARN("broker %s silent for %llu ms: connecting to %s (%zu results to re-send)", old,
            (unsigned long long)silent_ms, s_ep(s), s->unacked.len);
    if (s_connect(s) < 0) {
        s->last_recv_ms = lq_loop_now(s->loop);
        return;
    }
    s_register(s);
}

/* Every heartbeat_ms: HEARTBEAT to the broker, and the liveness check. */
static void s_on_heartbeat(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_session_t *s = arg;
    uint64_t now = lq_loop_now(loop);
    uint64_t silent = now > s->last_recv_ms ? now - s->last_recv_ms : 0;
    uint64_t limit = (uint64_t)(s->cfg.heartbeat_ms * s->cfg.liveness) + s->backoff_ms;
    if (silent >= limit) {
        if (s->heard)
            LQ_WARN("broker %s missed %lld heartbeats", s_ep(s),
                    (long long)s->cfg.liveness);
        s_reconnect(s, silent);
    } else if (s->sock && !s->need_ready) {
        lq_msg_t m = {0};
        m.cmd = LQ_W_HEARTBEAT;
        s_send(s, &m);
    }
    lq_timer_start(loop, t, (uint64_t)s->cfg.heartbeat_ms);
}

/* Re-tries sends the socket refused. */
static void s_on_retry(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_flush(arg);
}

/* The drain took too long: leave anyway. */
static void s_on_drain_timeout(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    lq_session_t *s = arg;
    LQ_WARN("drain timeout after %lld s: abandoning %lld jobs in flight and %zu "
            "unacknowledged results (the broker re-queues them)",
            (long long)(s->cfg.drain_timeout_ms / 1000), (long long)s->inflight, s->unacked.len);
    s_finish(s);
}

int lq_session_start(lq_session_t *s)
{
    if (s_connect(s) < 0)
        return -1;
    LQ_INFO("connecting to broker %s as %s", s_ep(s), s->cfg.id);
    s->need_ready = 1;
    s_flush(s);
    lq_timer_start(s->loop, &s->hb_timer, (uint64_t)s->cfg.heartbeat_ms);
    return 0;
}

void lq_session_tick(lq_session_t *s)
{
    if (s->finished || !s->sock)
        return;
    s_flush(s);
    if (s->need_ready || s->sendq.head)
        return;
    int64_t want = s_capacity(s) - s->credit_out;
    if (want <= 0)
        return;
    if (want > S_MAX_CREDIT)
        want = S_MAX_CREDIT;
    lq_msg_t m = {0};
    m.cmd = LQ_W_CREDIT;
    m.u.credit.credit = want;
    if (s_send(s, &m) < 0) {
        s_retry_later(s);
        return;
    }
    s->credit_out += want;
    s->st.credits_sent++;
}

void lq_session_job_done(lq_session_t *s, lq_wjob_t *j)
{
    s->inflight--;
    s->st.done++;
    if (j->res.outcome == LQ_OUTCOME_OK)
        s->st.ok++;
    else if (j->res.outcome == LQ_OUTCOME_RETRYABLE)
        s->st.retryable++;
    else
        s->st.fatal++;
    lq_wlist_push(&s->unacked, j);
    if (s->finished)
        return;
    if (s->lists) {
        /* sent with the others of this loop iteration by lq_session_tick() */
        lq_wlist_push(&s->sendq, j);
        return;
    }
    if (!s->sock || s->need_ready || s->sendq.head || s_send_result(s, j) < 0) {
        lq_wlist_push(&s->sendq, j);
        s_retry_later(s);
    }
}

void lq_session_drain(lq_session_t *s)
{
    if (s->draining || s->finished)
        return;
    s->draining = 1;
    LQ_INFO("draining: taking no new jobs; %lld in flight, %zu results unacknowledged; "
            "giving up after %lld s",
            (long long)s->inflight, s->unacked.len, (long long)(s->cfg.drain_timeout_ms / 1000));
    lq_timer_start(s->loop, &s->drain_timer, (uint64_t)s->cfg.drain_timeout_ms);
    s->need_ready = 1; /* READY with credit 0 */
    s_flush(s);
    s_check_drained(s);
}

void lq_session_stats(const lq_session_t *s, lq_session_stats_t *out)
{
    *out = s->st;
    out->inflight = s->inflight;
    out->unacked = (int64_t)s->unacked.len;
    out->queued = (int64_t)s->sendq.len;
    out->credit_out = s->credit_out;
    out->connected = s->heard;
    out->draining = s->draining;
    if (s->sock)
        out->dropped_msgs += lq_zsock_dropped(s->sock);
}

void lq_session_destroy(lq_session_t **p, int linger_ms)
{
    if (!p || !*p)
        return;
    lq_session_t *s = *p;
    lq_timer_stop(s->loop, &s->hb_timer);
    lq_timer_stop(s->loop, &s->retry_timer);
    lq_timer_stop(s->loop, &s->drain_timer);
    if (s->sock) {
        zmq_setsockopt(lq_zsock_raw(s->sock), ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        lq_zsock_destroy(&s->sock);
    }
    lq_jobtab_destroy(&s->jobs);
    lq_batch_clear(&s->out);
    for (size_t i = 0; i < s->neps; i++)
        free(s->eps[i]);
    free(s);
    *p = NULL;
}
