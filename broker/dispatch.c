/* dispatch: see dispatch.h.
 *
 * Flow of a job through here: lq_dispatch_leased() puts it in its batch's
 * prefetch queue; s_send_queued() moves it to a worker with credit (in
 * flight, keyed by its lease member); lq_dispatch_result() or the loss of its
 * worker takes it out. */
#include "dispatch.h"

#include "../common/log.h"
#include "../common/map.h"
#include "../common/util.h"
#include "../wire/zsock.h"
#include "payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LQ_LEASE_MAX 1000 /* jobs per LEASE call */
#define LQ_MAX_FETCHES 8  /* lease calls outstanding at once */

typedef struct s_batch s_batch_t;
typedef struct s_worker s_worker_t;

/* A leased job: in a batch's prefetch queue (worker NULL) or in flight. */
typedef struct s_job {
    struct s_job *next; /* prefetch queue link */
    s_batch_t *batch;
    int64_t index, attempt, est_tokens;
    char *url;  /* url and cid live in the job's own allocation (strs) */
    char *cid;  /* custom_id, passed back with the result */
    char *body; /* freed once sent */
    size_t body_len;
    s_worker_t *worker;
    int admitted; /* counted in flight by its upstream's limiter */
    uint64_t admitted_ms; /* when the limiter let it go */
    char member[LQ_MEMBER_MAX];
    char strs[]; /* url NUL cid NUL */
} s_job_t;

struct s_batch {
    char id[LQ_MAX_ID + 1];
    char upstream[LQ_MAX_ID + 1];
    int64_t priority, timeout_ms;
    int maybe_ready; /* Redis may have jobs to lease */
    int fetching;    /* a LEASE call is outstanding */
    int cancelled;   /* stop dispatching its queue */
    int rr_skip;     /* nothing can be sent for it in this round */
    int rate_held;   /* its upstream's limiter held its queue back this round */
    int hot;         /* on the hot list */
    s_job_t *head, *tail;
    size_t queued;
    uint64_t rr; /* when it was last served (fair share) */
};

struct s_worker {
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    char id[LQ_MAX_ID + 1];
    int64_t concurrency, credit, inflight, completed;
    uint64_t last_seen_ms;
    char **upstreams;
    size_t nupstreams;
};

struct lq_dispatch {
    lq_dispatch_ops_t ops;
    lq_dispatch_opts_t opts;
    lq_map_t *workers;  /* ident -> s_worker_t */
    lq_map_t *batches;  /* id -> s_batch_t */
    lq_map_t *inflight; /* member -> s_job_t */
    lq_map_t *limiters; /* upstream -> lq_rl_t */
    s_batch_t **hot;
    size_t nhot, hot_cap;
    int64_t total_credit, queued_total;
    int fetches;
    int64_t fetch_priority; /* only batches this important may lease now */
    uint64_t rr_clock, dispatched;
    int held; /* lq_dispatch_hold */
};

/* ---- jobs and batches ---- */

static void s_job_destroy(s_job_t **p)
{
    if (!*p)
        return;
    free((*p)->body);
    free(*p);
    *p = NULL;
}

static s_batch_t *s_batch(const lq_dispatch_t *d, const char *id)
{
    return lq_map_gets(d->batches, id);
}

/* Puts a batch on the hot list. Can't fail. */
static void s_heat(lq_dispatch_t *d, s_batch_t *b)
{
    if (b->hot)
        return;
    if (d->nhot == d->hot_cap) {
        d->hot_cap = d->hot_cap ? d->hot_cap * 2 : 16;
        d->hot = xrealloc(d->hot, d->hot_cap * sizeof *d->hot);
    }
    d->hot[d->nhot++] = b;
    b->hot = 1;
}

/* Drops batches with nothing queued, nothing to lease and no lease call. */
static void s_hot_compact(lq_dispatch_t *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->nhot; i++) {
        s_batch_t *x = d->hot[i];
        if (x->queued > 0 || x->maybe_ready || x->fetching)
            d->hot[k++] = x;
        else
            x->hot = 0;
    }
    d->nhot = k;
}

static void s_enqueue(lq_dispatch_t *d, s_batch_t *b, s_job_t *j)
{
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued++;
    d->queued_total++;
}

static s_job_t *s_dequeue(lq_dispatch_t *d, s_batch_t *b)
{
    s_job_t *j = b->head;
    b->head = j->next;
    if (!b->head)
        b->tail = NULL;
    j->next = NULL;
    b->queued--;
    d->queued_total--;
    return j;
}

void lq_dispatch_batch(lq_dispatch_t *d, const char *id, const char *upstream, int64_t priority,
                       int64_t timeout_ms)
{
    if (s_batch(d, id))
        return;
    s_batch_t *b = xcalloc(1, sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", id);
    snprintf(b->upstream, sizeof b->upstream, "%s", upstream && *upstream ? upstream : "default");
    b->priority = priority;
    b->timeout_ms = timeout_ms > 0 ? timeout_ms : 600000;
    lq_map_puts(d->batches, id, b);
}

void lq_dispatch_ready(lq_dispatch_t *d, const char *id)
{
    s_batch_t *b = id ? s_batch(d, id) : NULL;
    if (!b || b->cancelled)
        return;
    b->maybe_ready = 1;
    s_heat(d, b);
}

void lq_dispatch_cancel(lq_dispatch_t *d, const char *id)
{
    s_batch_t *b = s_batch(d, id);
    if (!b)
        return;
    b->cancelled = 1;
    b->maybe_ready = 0;
    const char **members = xmalloc((b->queued + 1) * sizeof *members);
    size_t n = 0;
    for (s_job_t *j = b->head; j; j = j->next)
        members[n++] = j->member;
    if (n)
        d->ops.requeue(d->ops.arg, members, n, "cancelled", "batch cancelled");
    free(members);
    while (b->head) {
        s_job_t *j = s_dequeue(d, b);
        s_job_destroy(&j);
    }
}

const char *lq_dispatch_batch_upstream(const lq_dispatch_t *d, const char *id)
{
    const s_batch_t *b = s_batch(d, id);
    return b ? b->upstream : NULL;
}

size_t lq_dispatch_queued(const lq_dispatch_t *d, const char *id)
{
    const s_batch_t *b = s_batch(d, id);
    return b ? b->queued : 0;
}

/* Builds a queued job from one leased entry. Returns NULL when the payload
 * is malformed. */
static s_job_t *s_job_from_lease(s_batch_t *b, const lq_leased_t *l)
{
    lq_payload_t p;
    if (lq_payload_decode(l->payload, l->payload_len, &p) < 0)
        return NULL;
    /* one allocation for the job, its url and its custom_id */
    s_job_t *j = xmalloc(sizeof *j + p.url_len + 1 + p.cid_len + 1);
    memset(j, 0, sizeof *j);
    j->batch = b;
    j->index = l->index;
    j->attempt = l->attempt;
    lq_member_format(j->member, sizeof j->member, b->id, l->index);
    j->url = j->strs;
    memcpy(j->url, p.url, p.url_len);
    j->url[p.url_len] = '\0';
    j->cid = j->url + p.url_len + 1;
    memcpy(j->cid, p.cid, p.cid_len);
    j->cid[p.cid_len] = '\0';
    j->est_tokens = p.est_tokens > 0 ? p.est_tokens : 0;
    j->body = xstrndup(p.body, p.body_len);
    j->body_len = p.body_len;
    return j;
}

void lq_dispatch_leased(lq_dispatch_t *d, const char *id, int more, const lq_leased_t *jobs,
                        size_t n)
{
    s_batch_t *b = s_batch(d, id);
    if (d->fetches > 0)
        d->fetches--;
    if (b) {
        b->fetching = 0;
        b->maybe_ready = more && !b->cancelled;
        s_heat(d, b);
    }
    char (*release)[LQ_MEMBER_MAX] = xmalloc((n + 1) * sizeof *release);
    const char **members = xmalloc((n + 1) * sizeof *members);
    size_t nrelease = 0;
    for (size_t i = 0; i < n; i++) {
        s_job_t *j = b && !b->cancelled ? s_job_from_lease(b, &jobs[i]) : NULL;
        if (j) {
            s_enqueue(d, b, j);
            continue;
        }
        if (b && !b->cancelled)
            LQ_ERROR("corrupt payload for %s|%lld", id, (long long)jobs[i].index);
        lq_member_format(release[nrelease], sizeof release[nrelease], id, jobs[i].index);
        members[nrelease] = release[nrelease];
        nrelease++;
    }
    if (nrelease)
        d->ops.requeue(d->ops.arg, members, nrelease, "cancelled", "batch cancelled");
    free(members);
    free(release);
    lq_dispatch_run(d);
}

void lq_dispatch_lease_failed(lq_dispatch_t *d, const char *id)
{
    s_batch_t *b = s_batch(d, id);
    if (d->fetches > 0)
        d->fetches--;
    if (b)
        b->fetching = 0;
}

void lq_dispatch_redis_lost(lq_dispatch_t *d)
{
    d->fetches = 0;
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->batches, &pos, NULL, NULL, &v))
        ((s_batch_t *)v)->fetching = 0;
}

void lq_dispatch_each_member(const lq_dispatch_t *d, void (*fn)(void *arg, const char *member),
                             void *arg)
{
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->inflight, &pos, NULL, NULL, &v))
        fn(arg, ((s_job_t *)v)->member);
    for (size_t i = 0; i < d->nhot; i++)
        for (s_job_t *j = d->hot[i]->head; j; j = j->next)
            fn(arg, j->member);
}

/* ---- rate limits ---- */

lq_rl_t *lq_dispatch_limiter(lq_dispatch_t *d, const char *upstream)
{
    lq_rl_t *rl = lq_map_gets(d->limiters, upstream);
    if (rl)
        return rl;
    lq_rl_config_t cfg = {0, 0, 1};
    size_t nlen = strlen(upstream);
    for (size_t i = 0; i < d->opts.nlimits; i++) {
        const char *spec = d->opts.limits[i];
        if (strncmp(spec, upstream, nlen) == 0 && spec[nlen] == ':')
            lq_rl_parse(spec + nlen + 1, &cfg); /* validated at start-up */
    }
    cfg.use_headers = !d->opts.ignore_ratelimit_headers;
    rl = lq_rl_new(&cfg, d->ops.now(d->ops.arg));
    lq_map_puts(d->limiters, upstream, rl);
    return rl;
}

/* Looks up the batch's timeout into *timeout_ms; returns -1 if the
 * Retry-After exceeds it, else 0 with the wait the limiter advises. */
static int s_retry_after(lq_dispatch_t *d, const char *batch, int64_t *retry_after_ms,
                            int64_t *timeout_ms)
{
    s_batch_t *b = s_batch(d, batch);
    if (!b || *retry_after_ms < 0)
        return 0;
    *timeout_ms = b->timeout_ms;
    if (*retry_after_ms > b->timeout_ms)
        return -1;
    *retry_after_ms = lq_rl_retry_delay(lq_dispatch_limiter(d, b->upstream),
                                        d->ops.now(d->ops.arg), *retry_after_ms);
    return 0;
}

void lq_dispatch_retry_policy(lq_dispatch_t *d, lq_w_result_t *res, char *msg, size_t n)
{
    int64_t ra = res->retry_after_ms, timeout_ms = 0;
    if (res->outcome != LQ_OUTCOME_RETRYABLE || res->status != 429 || ra < 0)
        return;
    if (s_retry_after(d, res->batch, &ra, &timeout_ms) < 0) {
        snprintf(msg, n,
                 "the provider answered 429 with a Retry-After of %.3g s, longer than the job's "
                 "timeout of %.3g s (--timeout): not retried",
                 (double)res->retry_after_ms / 1000.0, (double)timeout_ms / 1000.0);
        res->outcome = LQ_OUTCOME_FATAL;
        res->error_code = "retry_after_exceeds_timeout";
        res->error_message = msg;
        return;
    }
    snprintf(msg, n, "%s (the provider asked to retry after %.3g s)",
             res->error_message ? res->error_message : "rate limited (HTTP 429)",
             (double)res->retry_after_ms / 1000.0);
    res->error_message = msg;
    res->retry_after_ms = ra;
}

int lq_dispatch_limiter_next(const lq_dispatch_t *d, size_t *pos, const char **name,
                             lq_rl_t **rl)
{
    const void *key;
    void *v;
    if (!lq_map_next(d->limiters, pos, &key, NULL, &v))
        return 0;
    *name = key;
    *rl = v;
    return 1;
}

size_t lq_dispatch_upstreams(lq_dispatch_t *d, lq_upstream_info_t **out)
{
    size_t n = lq_map_len(d->limiters), k = 0, pos = 0;
    lq_upstream_info_t *ups = xcalloc(n + 1, sizeof *ups);
    uint64_t now = d->ops.now(d->ops.arg);
    const void *key;
    void *v;
    while (k < n && lq_map_next(d->limiters, &pos, &key, NULL, &v)) {
        lq_rl_stats_t st;
        lq_rl_stats(v, now, &st);
        ups[k].name = key;
        ups[k].limit_rpm = (int64_t)(st.rate_limit * 60.0);
        ups[k].learned_rpm = (int64_t)(st.learned_rps * 60.0);
        ups[k].ok_rpm = (int64_t)(st.ok_rps * 60.0);
        ups[k].inflight = st.inflight;
        ups[k].window = (int64_t)st.window;
        ups[k].n429 = st.n429;
        ups[k].nok = st.nok;
        ups[k].nerr = st.nerr;
        ups[k].paused_ms = st.paused_ms;
        lq_rl_pace_t pace;
        lq_rl_pace(v, now, &pace);
        ups[k].pace_rpm = (int64_t)(pace.rpm + 0.5);
        ups[k].pace_source = lq_rl_source_name(pace.source);
        ups[k].pace_tpm = (int64_t)(pace.tpm + 0.5);
        k++;
    }
    *out = ups;
    return k;
}

/* ---- workers ---- */

static s_worker_t *s_worker(const lq_dispatch_t *d, const uint8_t *ident, size_t len)
{
    return lq_map_get(d->workers, ident, len);
}

static int s_worker_serves(const s_worker_t *w, const char *upstream)
{
    for (size_t i = 0; i < w->nupstreams; i++)
        if (strcmp(w->upstreams[i], upstream) == 0)
            return 1;
    return 0;
}

static void s_worker_clear_upstreams(s_worker_t *w)
{
    for (size_t i = 0; i < w->nupstreams; i++)
        free(w->upstreams[i]);
    free(w->upstreams);
    w->upstreams = NULL;
    w->nupstreams = 0;
}

int lq_dispatch_worker_ready(lq_dispatch_t *d, const uint8_t *ident, size_t len,
                             const lq_w_ready_t *r)
{
    if (len > LQ_MAX_IDENT)
        return 0;
    s_worker_t *w = s_worker(d, ident, len);
    int fresh = !w;
    if (fresh) {
        w = xcalloc(1, sizeof *w);
        memcpy(w->ident, ident, len);
        w->ident_len = len;
        lq_map_put(d->workers, ident, len, w);
    }
    s_worker_clear_upstreams(w);
    snprintf(w->id, sizeof w->id, "%s", r->worker ? r->worker : "");
    w->last_seen_ms = d->ops.now(d->ops.arg);
    w->concurrency = r->concurrency;
    d->total_credit += r->credit - w->credit;
    w->credit = r->credit;
    w->nupstreams = r->nupstreams;
    w->upstreams = xcalloc(r->nupstreams + 1, sizeof *w->upstreams);
    for (size_t i = 0; i < r->nupstreams; i++)
        w->upstreams[i] = xstrdup(r->upstreams[i]);
    return fresh;
}

int lq_dispatch_worker_credit(lq_dispatch_t *d, const uint8_t *ident, size_t len, int64_t credit)
{
    s_worker_t *w = s_worker(d, ident, len);
    if (!w)
        return -1;
    w->credit += credit;
    d->total_credit += credit;
    return 0;
}

int lq_dispatch_worker_seen(lq_dispatch_t *d, const uint8_t *ident, size_t len)
{
    s_worker_t *w = s_worker(d, ident, len);
    if (w)
        w->last_seen_ms = d->ops.now(d->ops.arg);
    return w != NULL;
}

/* Collects the jobs in flight on w. Returns a new array (caller frees). */
static s_job_t **s_jobs_of(const lq_dispatch_t *d, const s_worker_t *w, size_t *n)
{
    size_t cap = 0, pos = 0;
    void *v;
    while (lq_map_next(d->inflight, &pos, NULL, NULL, &v))
        cap += ((s_job_t *)v)->worker == w;
    s_job_t **jobs = xmalloc((cap + 1) * sizeof *jobs);
    *n = 0;
    pos = 0;
    while (*n < cap && lq_map_next(d->inflight, &pos, NULL, NULL, &v))
        if (((s_job_t *)v)->worker == w)
            jobs[(*n)++] = v;
    return jobs;
}

void lq_dispatch_worker_remove(lq_dispatch_t *d, const uint8_t *ident, size_t len, const char *why)
{
    s_worker_t *w = s_worker(d, ident, len);
    if (!w)
        return;
    size_t n;
    s_job_t **jobs = s_jobs_of(d, w, &n);
    const char **members = xmalloc((n + 1) * sizeof *members);
    for (size_t i = 0; i < n; i++)
        members[i] = jobs[i]->member;
    LQ_WARN("worker %s %s: requeueing %zu jobs", w->id, why, n);
    if (n)
        d->ops.requeue(d->ops.arg, members, n, "worker_lost",
                       "the worker running this job was lost");
    for (size_t i = 0; i < n; i++) {
        s_batch_t *b = jobs[i]->batch;
        if (jobs[i]->admitted)
            lq_rl_on_lost(lq_dispatch_limiter(d, b->upstream));
        lq_map_dels(d->inflight, jobs[i]->member);
        s_job_destroy(&jobs[i]);
        if (!b->cancelled) {
            b->maybe_ready = 1;
            s_heat(d, b);
        }
    }
    free(members);
    free(jobs);
    d->total_credit -= w->credit;
    lq_map_del(d->workers, ident, len);
    s_worker_clear_upstreams(w);
    free(w);
}

int lq_dispatch_worker_next(const lq_dispatch_t *d, size_t *pos, lq_worker_info_t *info,
                            const uint8_t **ident, size_t *ident_len)
{
    void *v;
    if (!lq_map_next(d->workers, pos, NULL, NULL, &v))
        return 0;
    const s_worker_t *w = v;
    info->id = w->id;
    info->concurrency = w->concurrency;
    info->inflight = w->inflight;
    info->credit = w->credit;
    info->completed = w->completed;
    info->last_seen_ms = (int64_t)(d->ops.now(d->ops.arg) - w->last_seen_ms);
    if (ident)
        *ident = w->ident;
    if (ident_len)
        *ident_len = w->ident_len;
    return 1;
}

/* ---- results ---- */

/* Feeds one result to the limiter of the job's upstream. */
static void s_learn(lq_dispatch_t *d, const s_job_t *j, const lq_w_result_t *res)
{
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
        .sent_ms = j->admitted_ms,
    };
    lq_rl_on_result(lq_dispatch_limiter(d, j->batch->upstream), d->ops.now(d->ops.arg), &rr);
}

int lq_dispatch_result(lq_dispatch_t *d, const uint8_t *ident, size_t len,
                       const lq_w_result_t *res, char **cid)
{
    char member[LQ_MEMBER_MAX];
    s_worker_t *w = s_worker(d, ident, len);
    s_job_t *j = NULL;
    if (lq_member_format(member, sizeof member, res->batch, res->index) >= 0)
        j = lq_map_gets(d->inflight, member);
    *cid = xstrdup(j && j->cid ? j->cid : "");
    if (w)
        w->completed++;
    if (!j || !w || j->worker != w)
        return 0;
    if (j->admitted)
        s_learn(d, j, res);
    lq_map_dels(d->inflight, member);
    w->inflight--;
    s_job_destroy(&j);
    return 1;
}

/* ---- the dispatch round ---- */

/* The worker with the most free credit that serves upstream, or NULL. */
static s_worker_t *s_pick_worker(const lq_dispatch_t *d, const char *upstream)
{
    s_worker_t *best = NULL;
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->workers, &pos, NULL, NULL, &v)) {
        s_worker_t *w = v;
        if (w->credit > 0 && (!best || w->credit > best->credit) && s_worker_serves(w, upstream))
            best = w;
    }
    return best;
}

static int s_has_worker_for(const lq_dispatch_t *d, const char *upstream)
{
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->workers, &pos, NULL, NULL, &v))
        if (s_worker_serves(v, upstream))
            return 1;
    return 0;
}

/* The hot batch to serve next among those passing want: highest priority,
 * then the one served longest ago. */
static s_batch_t *s_next_batch(const lq_dispatch_t *d,
                               int (*want)(const lq_dispatch_t *, const s_batch_t *))
{
    s_batch_t *best = NULL;
    for (size_t i = 0; i < d->nhot; i++) {
        s_batch_t *x = d->hot[i];
        if (!want(d, x))
            continue;
        if (!best || x->priority > best->priority ||
            (x->priority == best->priority && x->rr < best->rr))
            best = x;
    }
    return best;
}

static int s_want_send(const lq_dispatch_t *d, const s_batch_t *x)
{
    (void)d;
    return x->queued > 0 && !x->cancelled && !x->rr_skip;
}

/* Strict priority for leasing: only batches of the highest priority that
 * has work (or a lease call in progress) may lease (d->fetch_priority). A
 * batch whose upstream's limiter is holding its queue back leases nothing
 * more for now: its queue would only take the lease capacity (free credit
 * plus prefetch) from batches of faster upstreams. */
static int s_want_fetch(const lq_dispatch_t *d, const s_batch_t *x)
{
    return x->maybe_ready && !x->fetching && !x->cancelled && x->priority >= d->fetch_priority &&
           !(x->rate_held && x->queued > 0) && s_has_worker_for(d, x->upstream);
}

static int64_t s_top_priority(const lq_dispatch_t *d)
{
    int64_t top = INT64_MIN;
    for (size_t i = 0; i < d->nhot; i++) {
        const s_batch_t *x = d->hot[i];
        if ((x->maybe_ready || x->fetching) && !x->cancelled && x->priority > top &&
            s_has_worker_for(d, x->upstream))
            top = x->priority;
    }
    return top;
}

/* Moves a job into flight on w and hands it to the owner. */
static void s_send_job(lq_dispatch_t *d, s_worker_t *w, s_job_t *j)
{
    lq_w_job_t job = {
        .batch = j->batch->id,
        .index = j->index,
        .attempt = j->attempt,
        .upstream = j->batch->upstream,
        .url = j->url,
        .body = j->body,
        .body_len = j->body_len,
        .timeout_ms = j->batch->timeout_ms,
    };
    d->ops.send(d->ops.arg, w->ident, w->ident_len, &job);
    free(j->body);
    j->body = NULL;
    j->worker = w;
    w->credit--;
    w->inflight++;
    d->total_credit--;
    d->dispatched++;
    s_job_t *old = lq_map_puts(d->inflight, j->member, j);
    if (old && old != j) {
        if (old->worker)
            old->worker->inflight--;
        s_job_destroy(&old);
    }
}

/* Step 1: hands prefetched jobs to workers with credit, one job per turn
 * to the batch due next, as far as each upstream's limiter admits. */
static void s_send_queued(lq_dispatch_t *d)
{
    for (size_t i = 0; i < d->nhot; i++)
        d->hot[i]->rr_skip = d->hot[i]->rate_held = 0;
    while (d->total_credit > 0 && d->queued_total > 0) {
        s_batch_t *b = s_next_batch(d, s_want_send);
        if (!b)
            break;
        s_worker_t *w = s_pick_worker(d, b->upstream);
        if (!w) {
            b->rr_skip = 1;
            continue;
        }
        uint64_t retry_ms;
        if (!lq_rl_admit(lq_dispatch_limiter(d, b->upstream), d->ops.now(d->ops.arg),
                         b->head->est_tokens, &retry_ms)) {
            b->rr_skip = b->rate_held = 1;
            d->ops.wake(d->ops.arg, retry_ms);
            continue;
        }
        s_job_t *j = s_dequeue(d, b);
        j->admitted = 1;
        j->admitted_ms = d->ops.now(d->ops.arg);
        b->rr = ++d->rr_clock;
        s_send_job(d, w, j);
    }
}

/* Step 2: leases more so that the queues cover the free credit plus the
 * prefetch, splitting the need over the batches of top priority. */
static void s_lease_more(lq_dispatch_t *d)
{
    int64_t need = d->total_credit + d->opts.prefetch - d->queued_total;
    d->fetch_priority = s_top_priority(d);
    while (need > 0 && d->fetches < LQ_MAX_FETCHES) {
        s_batch_t *b = s_next_batch(d, s_want_fetch);
        if (!b)
            break;
        int peers = 0;
        for (size_t i = 0; i < d->nhot; i++)
            peers += d->hot[i]->priority == b->priority && s_want_fetch(d, d->hot[i]);
        int64_t n = peers > 1 ? (need + peers - 1) / peers : need;
        if (n > LQ_LEASE_MAX)
            n = LQ_LEASE_MAX;
        if (d->ops.lease(d->ops.arg, b->id, n) < 0)
            break;
        b->fetching = 1;
        b->rr = ++d->rr_clock;
        d->fetches++;
        need -= n;
    }
}

void lq_dispatch_hold(lq_dispatch_t *d, int held)
{
    d->held = held;
}

void lq_dispatch_run(lq_dispatch_t *d)
{
    if (d->held)
        return;
    s_hot_compact(d);
    s_send_queued(d);
    s_lease_more(d);
}

/* ---- life cycle and observation ---- */

lq_dispatch_t *lq_dispatch_new(const lq_dispatch_ops_t *ops, const lq_dispatch_opts_t *opts)
{
    lq_dispatch_t *d = xcalloc(1, sizeof *d);
    d->ops = *ops;
    d->opts = *opts;
    d->workers = lq_map_new();
    d->batches = lq_map_new();
    d->inflight = lq_map_new();
    d->limiters = lq_map_new();
    return d;
}

void lq_dispatch_stats(const lq_dispatch_t *d, lq_dispatch_stats_t *st)
{
    memset(st, 0, sizeof *st);
    st->workers = lq_map_len(d->workers);
    st->batches = lq_map_len(d->batches);
    st->queued = d->queued_total;
    st->dispatched = d->dispatched;
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->workers, &pos, NULL, NULL, &v)) {
        st->credit += ((s_worker_t *)v)->credit;
        st->inflight += ((s_worker_t *)v)->inflight;
    }
}

void lq_dispatch_destroy(lq_dispatch_t **p)
{
    if (!p || !*p)
        return;
    lq_dispatch_t *d = *p;
    size_t pos = 0;
    void *v;
    while (lq_map_next(d->inflight, &pos, NULL, NULL, &v)) {
        s_job_t *j = v;
        s_job_destroy(&j);
    }
    pos = 0;
    while (lq_map_next(d->batches, &pos, NULL, NULL, &v)) {
        s_batch_t *b = v;
        while (b->head) {
            s_job_t *j = s_dequeue(d, b);
            s_job_destroy(&j);
        }
        free(b);
    }
    pos = 0;
    while (lq_map_next(d->workers, &pos, NULL, NULL, &v)) {
        s_worker_clear_upstreams(v);
        free(v);
    }
    pos = 0;
    while (lq_map_next(d->limiters, &pos, NULL, NULL, &v)) {
        lq_rl_t *rl = v;
        lq_rl_destroy(&rl);
    }
    lq_map_destroy(&d->limiters);
    lq_map_destroy(&d->inflight);
    lq_map_destroy(&d->batches);
    lq_map_destroy(&d->workers);
    free(d->hot);
    free(d);
    *p = NULL;
}
