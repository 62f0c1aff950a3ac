/* fleet: see fleet.h. */
#include "fleet.h"

#include "../common/log.h"
#include "../common/util.h"
#include "scripts.h"

#include <stdlib.h>
#include <string.h>

#define S_FIELDS 5 /* id, state, upstream, priority, timeout_ms */

struct lq_fleet {
    lq_loop_t *loop;
    lq_redis_t *redis;
    lq_dispatch_t *dispatch;
    const char *prefix;
    int64_t period_ms;
    lq_timer_t timer;
    uint64_t refreshes;
};

typedef struct {
    lq_fleet_t *f;
    int log_count;
} s_call_t;

/* A string element of reply, or NULL. */
static const char *s_str(const redisReply *reply, size_t i)
{
    const redisReply *e = reply->element[i];
    return e->type == REDIS_REPLY_STRING ? e->str : NULL;
}

/* Applies one batch's state to dispatch. */
static void s_apply(lq_dispatch_t *d, const redisReply *reply, size_t i)
{
    const char *id = s_str(reply, i), *state = s_str(reply, i + 1);
    if (!id || !state)
        return;
    int running = strcmp(state, "submitting") == 0 || strcmp(state, "in_progress") == 0;
    if (running) {
        const char *up = s_str(reply, i + 2), *prio = s_str(reply, i + 3),
                   *tmo = s_str(reply, i + 4);
        lq_dispatch_batch(d, id, up, prio ? strtoll(prio, NULL, 10) : 0,
                          tmo ? strtoll(tmo, NULL, 10) : 0);
        lq_dispatch_ready(d, id);
    } else if (lq_dispatch_batch_upstream(d, id)) {
        /* cancelled on another broker: our prefetched jobs go back */
        lq_dispatch_cancel(d, id);
    }
}

/* The ACTIVE reply: a flat array of S_FIELDS per batch. */
static void s_on_active(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_call_t *call = arg;
    lq_fleet_t *f = call->f;
    int log_count = call->log_count;
    free(call);
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            LQ_WARN("ACTIVE failed: %s", reply->str);
        return;
    }
    size_t n = reply->elements / S_FIELDS;
    for (size_t i = 0; i < n; i++)
        s_apply(f->dispatch, reply, i * S_FIELDS);
    f->refreshes++;
    if (log_count)
        LQ_INFO("%zu active batches", n);
    lq_dispatch_run(f->dispatch);
}

void lq_fleet_refresh(lq_fleet_t *f, int log_count)
{
    if (!lq_redis_up(f->redis))
        return;
    s_call_t *call = xmalloc(sizeof *call);
    call->f = f;
    call->log_count = log_count;
    const char *argv[1] = {f->prefix};
    if (lq_redis_eval(f->redis, LQ_SCRIPT_ACTIVE, s_on_active, call, 0, 1, argv, NULL) < 0)
        free(call);
}

/* Every period_ms: the refresh. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_fleet_t *f = arg;
    lq_timer_start(loop, t, (uint64_t)f->period_ms);
    lq_fleet_refresh(f, 0);
}

lq_fleet_t *lq_fleet_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *dispatch,
                         const char *prefix, int64_t period_ms)
{
    lq_fleet_t *f = xcalloc(1, sizeof *f);
    f->loop = loop;
    f->redis = redis;
    f->dispatch = dispatch;
    f->prefix = prefix;
    f->period_ms = period_ms > 0 ? period_ms : 500;
    lq_timer_init(&f->timer, s_on_timer, f);
    lq_timer_start(loop, &f->timer, (uint64_t)f->period_ms);
    return f;
}

uint64_t lq_fleet_refreshes(const lq_fleet_t *f)
{
    return f->refreshes;
}

void lq_fleet_destroy(lq_fleet_t **p)
{
    if (!p || !*p)
        return;
    lq_fleet_t *f = *p;
    lq_timer_stop(f->loop, &f->timer);
    free(f);
    *p = NULL;
}
