/* rlstore: see rlstore.h. */
#include "rlstore.h"

#include "../common/log.h"
#include "../common/map.h"
#include "../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SAVE_MS 1000

struct lq_rlstore {
    lq_loop_t *loop;
    lq_redis_t *redis;
    lq_dispatch_t *d;
    char key[256];
    lq_timer_t timer;
    lq_map_t *saved; /* upstream -> last string written (owned) */
};

/* Reply of an HSET: nothing to do (a lost write is redone when the state
 * changes again, or lost with the broker: only a head start). */
static void s_on_saved(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    (void)arg;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        LQ_WARN("saving learned rate limits: %s", reply->str);
}

/* Writes the states that changed since the last write. */
static void s_save(lq_rlstore_t *s)
{
    size_t pos = 0;
    const char *name;
    lq_rl_t *rl;
    while (lq_dispatch_limiter_next(s->d, &pos, &name, &rl)) {
        char state[128];
        if (!lq_rl_export(rl, state, sizeof state))
            continue;
        char *old = lq_map_gets(s->saved, name);
        if (old && strcmp(old, state) == 0)
            continue;
        const char *argv[4] = {"HSET", s->key, name, state};
        if (lq_redis_command(s->redis, s_on_saved, NULL, 4, argv, NULL) < 0)
            return;
        free(lq_map_puts(s->saved, name, xstrdup(state)));
    }
}

/* Timer: saves once a second while Redis is up. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_rlstore_t *s = arg;
    lq_timer_start(loop, t, S_SAVE_MS);
    if (lq_redis_up(s->redis))
        s_save(s);
}

/* Reply of the HGETALL: field/value pairs. */
static void s_on_loaded(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    if (!reply)
        return; /* connection lost (or shutting down): arg may be gone */
    lq_rlstore_t *s = arg;
    if (reply->type != REDIS_REPLY_ARRAY) {
        LQ_WARN("reading learned rate limits: %s",
                reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *f = reply->element[i], *v = reply->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len > LQ_MAX_ID)
            continue;
        lq_rl_t *rl = lq_dispatch_limiter(s->d, f->str);
        char cur[128];
        if (lq_rl_export(rl, cur, sizeof cur))
            continue; /* this broker learned already: its own state is newer */
        if (lq_rl_import(rl, lq_loop_now(s->loop), v->str) < 0) {
            LQ_WARN("ignoring malformed learned rate limit of upstream %s in Redis", f->str);
            continue;
        }
        free(lq_map_puts(s->saved, f->str, xstrdup(v->str)));
        LQ_INFO("upstream %s: starting from the learned limits in Redis (%s)", f->str, v->str);
    }
}

lq_rlstore_t *lq_rlstore_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *d,
                             const char *prefix)
{
    lq_rlstore_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->redis = redis;
    s->d = d;
    snprintf(s->key, sizeof s->key, "%sratelimits", prefix);
    s->saved = lq_map_new();
    lq_timer_init(&s->timer, s_on_timer, s);
    lq_timer_start(loop, &s->timer, S_SAVE_MS);
    return s;
}

void lq_rlstore_destroy(lq_rlstore_t **p)
{
    if (!p || !*p)
        return;
    lq_rlstore_t *s = *p;
    lq_timer_stop(s->loop, &s->timer);
    size_t pos = 0;
    void *v;
    while (lq_map_next(s->saved, &pos, NULL, NULL, &v))
        free(v);
    lq_map_destroy(&s->saved);
    free(s);
    *p = NULL;
}

void lq_rlstore_load(lq_rlstore_t *s)
{
    const char *argv[2] = {"HGETALL", s->key};
    if (lq_redis_command(s->redis, s_on_loaded, s, 2, argv, NULL) < 0)
        LQ_WARN("cannot read learned rate limits: Redis is not up");
}
