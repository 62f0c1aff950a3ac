/* rlstore: see rlstore.h. */
#include "rlstore.h"

#include "../common/log.h"
#include "../common/map.h"
#include "../common/util.h"
#include "scripts.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_TICK_MS 50        /* one RLSHARE call */
#define S_POLL_MS 20        /* a limiter that gains demand is shared this soon */
#define S_STALE_MS 2000     /* a broker not seen this long is gone */
#define S_DEMAND_MS 1000    /* admit() asked this recently: demand */
#define S_CUT_FRESH_MS 2000 /* a cut older than this is history, not news */
#define S_RETRY_MS 2000     /* a call unanswered this long is given up */

/* What this broker knows of one upstream's shared state. */
typedef struct {
    char *saved;       /* the state last written (owned), or NULL */
    uint64_t cuts;     /* the limiter's cuts already published */
    char *cut_seen;    /* the last cut entry read (owned), or NULL */
    int64_t others;    /* other brokers with demand, at the last call */
    int demand;        /* the demand sent in the last call */
} s_up_t;

struct lq_rlstore {
    lq_loop_t *loop;
    lq_redis_t *redis;
    lq_dispatch_t *d;
    const char *prefix;
    char key[256];
    char id[128];
    lq_timer_t timer;
    lq_map_t *ups;       /* upstream -> s_up_t (owned) */
    uint64_t pending_ms; /* an RLSHARE call is unanswered since then, 0 = none */
    uint64_t shared_ms;  /* when the last call was sent */
    int recheck;         /* the last call registered new demand: call again soon */
    int failing;         /* the last call failed (warned once until one succeeds) */
};

/* One RLSHARE call in flight: the upstreams asked about, in order. */
typedef struct {
    lq_rlstore_t *s;
    size_t n;
    char **names;
} s_call_t;

static void s_call_free(s_call_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->names[i]);
    free(c->names);
    free(c);
}

/* The bookkeeping of an upstream (created on first use). */
static s_up_t *s_up(lq_rlstore_t *s, const char *name)
{
    s_up_t *u = lq_map_gets(s->ups, name);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        lq_map_puts(s->ups, name, u);
    }
    return u;
}

/* Replaces an owned string. */
static void s_set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? xstrdup(v) : NULL;
}

/* ---- the RLSHARE reply ---- */

/* Sets the limiter's share from the number of other brokers with demand. */
static void s_apply_share(lq_rlstore_t *s, const char *name, lq_rl_t *rl, s_up_t *u,
                          int64_t others)
{
    if (others < 0)
        others = 0;
    if (others != u->others)
        LQ_INFO("upstream %s: %lld other broker(s) with demand, pacing at 1/%lld of its limits",
                name, (long long)others, (long long)others + 1);
    u->others = others;
    lq_rl_set_share(rl, 1.0 / (double)(others + 1), lq_loop_now(s->loop));
}

/* Starts the limiter of an upstream (created if need be) from the
 * fleet's learned limits, unless it has learned something itself (its own
 * state is newer). Returns 1 if it did. */
static int s_start_from(lq_rlstore_t *s, const char *name, const char *state)
{
    if (!state[0] || strlen(name) > LQ_MAX_ID)
        return 0;
    lq_rl_t *rl = lq_dispatch_limiter(s->d, name);
    s_up_t *u = s_up(s, name);
    char cur[128];
    if (lq_rl_export(rl, cur, sizeof cur) || (u->saved && strcmp(u->saved, state) == 0))
        return 0; /* learned itself (its own state is newer), or seen and refused */
    s_set_str(&u->saved, state);
    if (lq_rl_import(rl, lq_loop_now(s->loop), state) < 0) {
        LQ_WARN("ignoring malformed learned rate limit of upstream %s in Redis", name);
        return 0;
    }
    LQ_INFO("upstream %s: starting from the fleet's learned limits in Redis (%s)", name, state);
    return 1;
}

/* A cut another broker published lately lowers this one's learned rate. */
static void s_apply_cut(lq_rlstore_t *s, const char *name, lq_rl_t *rl, s_up_t *u,
                        const char *cut, long long redis_now)
{
    if (!cut[0] || (u->cut_seen && strcmp(u->cut_seen, cut) == 0))
        return;
    s_set_str(&u->cut_seen, cut);
    long long at;
    double rps;
    char who[128];
    if (sscanf(cut, "%lld %lf %127s", &at, &rps, who) != 3 || strcmp(who, s->id) == 0 ||
        redis_now - at > S_CUT_FRESH_MS)
        return;
    if (lq_rl_adopt(rl, lq_loop_now(s->loop), rps))
        LQ_DEBUG("upstream %s: lowered to %.1f/s of the fleet's %.1f/s after a 429 at broker %s",
                name, rps * lq_rl_share(rl), rps, who);
}

/* An integer or a string reply as a number. */
static long long s_num(const redisReply *e)
{
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    return e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
}

static const char *s_str(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING ? e->str : "";
}

static void s_on_shared(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_call_t *c = arg;
    if (!reply) { /* connection lost or shutting down: s may be gone */
        s_call_free(c);
        return;
    }
    lq_rlstore_t *s = c->s;
    s->pending_ms = 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < c->n * LQ_RLSHARE_OUT + 1) {
        if (!s->failing)
            LQ_WARN("sharing rate limits with the other brokers failed (each keeps its last "
                    "share): %s",
                    reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        s->failing = 1;
        s_call_free(c);
        return;
    }
    if (s->failing)
        LQ_INFO("sharing rate limits with the other brokers again");
    s->failing = 0;
    size_t tail = c->n * LQ_RLSHARE_OUT;
    long long redis_now = s_num(reply->element[tail]);
    for (size_t i = 0; i < c->n; i++) {
        redisReply **e = reply->element + i * LQ_RLSHARE_OUT;
        lq_rl_t *rl = lq_dispatch_limiter(s->d, c->names[i]);
        s_up_t *u = s_up(s, c->names[i]);
        s_apply_share(s, c->names[i], rl, u, s_num(e[0]));
        s_start_from(s, c->names[i], s_str(e[1]));
        s_apply_cut(s, c->names[i], rl, u, s_str(e[2]), redis_now);
    }
    /* upstreams the fleet learned and this broker has no limiter for */
    for (size_t i = tail + 1; i + 1 < reply->elements; i += 2)
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            s_start_from(s, reply->element[i]->str, s_str(reply->element[i + 1]));
    s_call_free(c);
}

/* ---- the RLSHARE call ---- */

/* The four arguments of one upstream: name, demand, changed state, cut.
 * state and cut are the caller's buffers. */
static void s_up_args(lq_rlstore_t *s, const char *name, lq_rl_t *rl, const char **argv,
                      char *state, size_t state_n, char *cut, size_t cut_n)
{
    s_up_t *u = s_up(s, name);
    argv[0] = name;
    int was = u->demand;
    u->demand = lq_rl_demand(rl, lq_loop_now(s->loop), S_DEMAND_MS);
    s->recheck |= u->demand && !was;
    argv[1] = u->demand ? "1" : "0";
    argv[2] = argv[3] = "";
    if (lq_rl_export(rl, state, state_n) && !(u->saved && strcmp(u->saved, state) == 0)) {
        argv[2] = state;
        s_set_str(&u->saved, state); /* a lost write is redone when it changes again */
    }
    uint64_t cuts = lq_rl_cuts(rl);
    double rps;
    if (cuts != u->cuts && state[0] && sscanf(state, "v1 rps=%lf", &rps) == 1 && rps > 0) {
        snprintf(cut, cut_n, "%.3f", rps);
        argv[3] = cut;
    }
    u->cuts = cuts;
}

/* Sends one RLSHARE call for every upstream this broker has a limiter for. */
static void s_share(lq_rlstore_t *s)
{
    uint64_t now = lq_loop_now(s->loop);
    if (!lq_redis_up(s->redis) || (s->pending_ms && now - s->pending_ms < S_RETRY_MS))
        return;
    size_t n = 0, pos = 0;
    const char *name;
    lq_rl_t *rl;
    while (lq_dispatch_limiter_next(s->d, &pos, &name, &rl))
        n++;
    if (n == 0)
        return;
    s_call_t *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->names = xcalloc(n, sizeof *c->names);
    size_t argc = 3 + n * LQ_RLSHARE_ARGS;
    const char **argv = xcalloc(argc, sizeof *argv);
    char(*states)[128] = xcalloc(n, sizeof *states);
    char(*cuts)[32] = xcalloc(n, sizeof *cuts);
    char stale[24];
    snprintf(stale, sizeof stale, "%d", S_STALE_MS);
    argv[0] = s->prefix;
    argv[1] = s->id;
    argv[2] = stale;
    pos = 0;
    s->recheck = 0;
    while (c->n < n && lq_dispatch_limiter_next(s->d, &pos, &name, &rl)) {
        c->names[c->n] = xstrdup(name);
        s_up_args(s, name, rl, argv + 3 + c->n * LQ_RLSHARE_ARGS, states[c->n],
                  sizeof states[c->n], cuts[c->n], sizeof cuts[c->n]);
        c->n++;
    }
    if (lq_redis_eval(s->redis, LQ_SCRIPT_RLSHARE, s_on_shared, c, 0, (int)argc, argv, NULL) < 0)
        s_call_free(c);
    else
        s->pending_ms = now ? now : 1;
    s->shared_ms = now;
    free(argv);
    free(states);
    free(cuts);
}

/* 1 if a limiter has demand that the last call did not register. */
static int s_new_demand(lq_rlstore_t *s, uint64_t now)
{
    size_t pos = 0;
    const char *name;
    lq_rl_t *rl;
    while (lq_dispatch_limiter_next(s->d, &pos, &name, &rl)) {
        const s_up_t *u = lq_map_gets(s->ups, name);
        if ((!u || !u->demand) && lq_rl_demand(rl, now, S_DEMAND_MS))
            return 1;
    }
    return 0;
}

/* Timer, every S_POLL_MS: shares every S_TICK_MS while Redis is up, at
 * once when a limiter gains demand, and once more S_POLL_MS after that
 * (brokers that gain demand together each register before the other looks:
 * the second call sees them all), so that shares shrink before much is
 * sent. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_rlstore_t *s = arg;
    lq_timer_start(loop, t, S_POLL_MS);
    uint64_t now = lq_loop_now(loop);
    if (now - s->shared_ms >= S_TICK_MS || s->recheck || s_new_demand(s, now))
        s_share(s);
}

/* ---- the read at connect ---- */

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
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
            s_start_from(s, f->str, v->str);
    }
}

/* ---- life cycle ---- */

/* host:pid:random, with only [A-Za-z0-9.:_-] (the cut entry is split at
 * spaces). */
static void s_make_id(char *out, size_t n)
{
    char host[64] = "";
    if (gethostname(host, sizeof host) < 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
            *p = '_';
    snprintf(out, n, "%s:%ld:%08lx", host[0] ? host : "broker", (long)getpid(),
             (unsigned long)random() & 0xffffffffUL);
}

lq_rlstore_t *lq_rlstore_new(lq_loop_t *loop, lq_redis_t *redis, lq_dispatch_t *d,
                             const char *prefix)
{
    lq_rlstore_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->redis = redis;
    s->d = d;
    s->prefix = prefix;
    snprintf(s->key, sizeof s->key, "%sratelimits", prefix);
    s_make_id(s->id, sizeof s->id);
    s->ups = lq_map_new();
    lq_timer_init(&s->timer, s_on_timer, s);
    lq_timer_start(loop, &s->timer, S_POLL_MS);
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
    while (lq_map_next(s->ups, &pos, NULL, NULL, &v)) {
        s_up_t *u = v;
        free(u->saved);
        free(u->cut_seen);
        free(u);
    }
    lq_map_destroy(&s->ups);
    free(s);
    *p = NULL;
}

void lq_rlstore_load(lq_rlstore_t *s)
{
    const char *argv[2] = {"HGETALL", s->key};
    s->pending_ms = 0; /* a call sent before the reconnect will not be answered */
    if (lq_redis_command(s->redis, s_on_loaded, s, 2, argv, NULL) < 0)
        LQ_WARN("cannot read learned rate limits: Redis is not up");
    s_share(s);
}
