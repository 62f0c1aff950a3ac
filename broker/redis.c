/* redis: see redis.h. */
#include "redis.h"

#include "../common/log.h"
#include "../common/util.h"
#include "sentinel.h"

#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LQ_REDIS_MAX_SCRIPTS 32 /* scripts.h has LQ_SCRIPT_COUNT of them: keep above it */

typedef struct {
    lq_redis_t *r;
    lq_redis_cb cb;
    void *arg;
    unsigned gen;
} s_call_t;

struct lq_redis {
    lq_loop_t *loop;
    redisAsyncContext *ac;
    char host[256];
    int port;
    int db;
    char user[128];
    char pass[256];
    int connect_timeout_ms;
    int command_timeout_ms;
    const char *const *scripts;
    int nscripts;
    char sha[LQ_REDIS_MAX_SCRIPTS][41];
    int nsha_loaded;
    int connected; /* TCP up */
    int up;        /* scripts loaded, usable */
    int want_read, want_write;
    int fd; /* of the current context, -1 when none */
    int pending;
    int closing;
    uint64_t last_progress_ms;
    unsigned gen; /* bumps on every new connection */
    int backoff_ms;
    lq_timer_t reconnect_timer;
    lq_timer_t watchdog;
    lq_redis_state_cb on_state;
    void *arg;
    int use_sentinel; /* host/port come from the sentinels before each connect */
    lq_sentinel_t sentinel;
    int wait_replicas, wait_timeout_ms;
    unsigned durable_mask; /* scripts whose replies wait for WAIT */
};

/* A durable script call: its reply (copied) is handed over once WAIT
 * confirmed enough replicas. */
typedef struct {
    lq_redis_cb cb;
    void *arg;
    redisReply *copy;
    int failed; /* the script's reply was lost */
} s_durable_t;

static void s_connect(lq_redis_t *r);

/* ---- URL ---- */

/* Copies p[0..n) into out[cap] as a string. Returns 0, or -1 if it does
 * not fit or holds a NUL or control character (never truncates). */
static int s_copy_part(char *out, size_t cap, const char *p, size_t n)
{
    if (n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* Parses the decimal digits p[0..n) (no sign, no spaces) into [min, max].
 * Returns 0 or -1. */
static int s_digits(const char *p, size_t n, long long min, long long max, long long *out)
{
    if (n == 0 || n > 9)
        return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Splits "[user:]pass" (before the last '@') into out. 0 or -1 with err. */
static int s_parse_userinfo(const char *p, size_t n, lq_redis_url_t *out, char *err,
                            size_t errlen)
{
    const char *colon = memchr(p, ':', n);
    size_t ul = colon ? (size_t)(colon - p) : 0;
    const char *pw = colon ? colon + 1 : p;
    size_t pl = n - (size_t)(pw - p);
    if (s_copy_part(out->user, sizeof out->user, p, ul) < 0 ||
        s_copy_part(out->pass, sizeof out->pass, pw, pl) < 0) {
        snprintf(err, errlen, "bad user or password in redis URL (too long or control characters)");
        return -1;
    }
    return 0;
}

int lq_redis_url_parse(const char *url, lq_redis_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0) {
        /* name the scheme only: the rest may hold a password */
        size_t sl = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        if (sl > 32 || strncmp(url + sl, "://", 3) != 0)
            sl = 0;
        snprintf(err, errlen, "redis URL must start with redis:// (got scheme '%.*s')", (int)sl, url);
        return -1;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        if (s_parse_userinfo(p, (size_t)(at - p), out, err, errlen) < 0)
            return -1;
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    const char *colon = memchr(p, ':', hostport);
    size_t hl = colon ? (size_t)(colon - p) : hostport;
    long long v;
    if (colon) {
        if (s_digits(colon + 1, hostport - hl - 1, 1, 65535, &v) < 0) {
            snprintf(err, errlen, "bad port in redis URL");
            return -1;
        }
        out->port = (int)v;
    }
    if (hl == 0 || s_copy_part(out->host, sizeof out->host, p, hl) < 0) {
        snprintf(err, errlen, "bad host in redis URL");
        return -1;
    }
    if (slash && slash[1]) {
        if (s_digits(slash + 1, strlen(slash + 1), 0, 1000000, &v) < 0) {
            snprintf(err, errlen, "bad database number in redis URL");
            return -1;
        }
        out->db = (int)v;
    }
    return 0;
}

/* Parses url into r's connection fields. 0 or -1 with err. */
static int s_parse_url(lq_redis_t *r, const char *url, char *err, size_t errlen)
{
    lq_redis_url_t u;
    if (lq_redis_url_parse(url, &u, err, errlen) < 0)
        return -1;
    memcpy(r->host, u.host, sizeof r->host);
    memcpy(r->user, u.user, sizeof r->user);
    memcpy(r->pass, u.pass, sizeof r->pass);
    r->port = u.port;
    r->db = u.db;
    memset(&u, 0, sizeof u); /* the password */
    return 0;
}

/* ---- adapter ---- */

static void s_on_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    lq_redis_t *r = arg;
    /* Handle write first: while connecting, hiredis completes the connect
     * in its write handler. Re-check r->ac: a handler may free it. */
    if ((events & LQ_WRITABLE) && r->ac)
        redisAsyncHandleWrite(r->ac);
    if ((events & (LQ_READABLE | LQ_ERROR_EV)) && r->ac)
        redisAsyncHandleRead(r->ac);
}

static void s_update_watch(lq_redis_t *r)
{
    if (r->fd < 0)
        return;
    int fd = r->fd;
    int ev = (r->want_read ? LQ_READABLE : 0) | (r->want_write ? LQ_WRITABLE : 0);
    if (ev)
        lq_loop_watch(r->loop, fd, ev, s_on_fd, r);
    else
        lq_loop_unwatch(r->loop, fd);
}

static void s_add_read(void *p)
{
    lq_redis_t *r = p;
    r->want_read = 1;
    s_update_watch(r);
}

static void s_del_read(void *p)
{
    lq_redis_t *r = p;
    r->want_read = 0;
    s_update_watch(r);
}

static void s_add_write(void *p)
{
    lq_redis_t *r = p;
    r->want_write = 1;
    s_update_watch(r);
}

static void s_del_write(void *p)
{
    lq_redis_t *r = p;
    r->want_write = 0;
    s_update_watch(r);
}

static void s_cleanup(void *p)
{
    lq_redis_t *r = p;
    if (r->fd >= 0)
        lq_loop_unwatch(r->loop, r->fd);
    r->fd = -1;
    r->want_read = r->want_write = 0;
}

/* ---- lifecycle ---- */

static void s_schedule_reconnect(lq_redis_t *r)
{
    r->ac = NULL;
    if (r->closing)
        return;
    int was_up = r->up;
    r->connected = 0;
    r->up = 0;
    r->pending = 0;
    r->gen++;
    if (was_up && r->on_state)
        r->on_state(r, 0, r->arg);
    lq_timer_start(r->loop, &r->reconnect_timer, (uint64_t)r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > 2000 ? 2000 : r->backoff_ms * 2;
}

static void s_on_disconnect(const redisAsyncContext *ac, int status)
{
    lq_redis_t *r = ac->ev.data;
    if (!r)
        return;
    LQ_WARN("redis %s:%d disconnected%s%s", r->host, r->port, status ? ": " : "",
            status ? ac->errstr : "");
    s_schedule_reconnect(r);
}

static void s_on_connect(const redisAsyncContext *ac, int status)
{
    lq_redis_t *r = ac->ev.data;
    if (!r)
        return;
    if (status != REDIS_OK) {
        LQ_WARN("redis %s:%d connect failed: %s", r->host, r->port, ac->errstr);
        /* hiredis frees the context after this callback. */
        s_schedule_reconnect(r);
        return;
    }
    r->connected = 1;
    r->last_progress_ms = lq_loop_now(r->loop);
}

static void s_on_script_loaded(lq_redis_t *r, redisReply *reply, void *arg)
{
    int idx = (int)(intptr_t)arg;
    if (!reply)
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        LQ_ERROR("redis SCRIPT LOAD of script %d failed: %s", idx,
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        if (r->ac)
            redisAsyncFree(r->ac); /* retried on reconnect */
        return;
    }
    memcpy(r->sha[idx], reply->str, 40);
    r->sha[idx][40] = '\0';
    if (++r->nsha_loaded == r->nscripts) {
        r->up = 1;
        r->backoff_ms = 100;
        LQ_INFO("redis %s:%d db %d ready", r->host, r->port, r->db);
        if (r->on_state)
            r->on_state(r, 1, r->arg);
    }
}

static void s_on_setup_reply(lq_redis_t *r, redisReply *reply, void *arg)
{
    const char *what = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        LQ_ERROR("redis %s failed: %s", what, reply->str);
        if (r->ac)
            redisAsyncFree(r->ac);
    }
}

static void s_dispatch_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    s_call_t *call = priv;
    lq_redis_t *r = call->r;
    if (call->gen == r->gen) {
        r->pending--;
        r->last_progress_ms = lq_loop_now(r->loop);
    }
    call->cb(r, reply, call->arg);
    free(call);
}

/* Queues one call: a command in RESP form (formatted, copied by hiredis)
 * or, with cmd NULL, argv. Returns 0 (cb called once) or -1. */
static int s_queue(lq_redis_t *r, lq_redis_cb cb, void *arg, const char *cmd, size_t len,
                   int argc, const char **argv, const size_t *argvlen)
{
    if (!r->ac)
        return -1;
    s_call_t *call = xmalloc(sizeof *call);
    call->r = r;
    call->cb = cb;
    call->arg = arg;
    call->gen = r->gen;
    int rc = cmd ? redisAsyncFormattedCommand(r->ac, s_dispatch_reply, call, cmd, len)
                 : redisAsyncCommandArgv(r->ac, s_dispatch_reply, call, argc, argv, argvlen);
    if (rc != REDIS_OK) {
        free(call);
        return -1;
    }
    if (r->pending++ == 0)
        r->last_progress_ms = lq_loop_now(r->loop);
    return 0;
}

static int s_send(lq_redis_t *r, lq_redis_cb cb, void *arg, int argc, const char **argv,
                  const size_t *argvlen)
{
    return s_queue(r, cb, arg, NULL, 0, argc, argv, argvlen);
}

/* Asks the sentinels where the master is now. Returns 0, or -1 (a
 * reconnect is scheduled). */
static int s_find_master(lq_redis_t *r)
{
    char host[256];
    int port;
    if (lq_sentinel_master(&r->sentinel, 500, host, sizeof host, &port) < 0) {
        LQ_WARN("no sentinel names the master '%s': retrying", r->sentinel.master);
        s_schedule_reconnect(r);
        return -1;
    }
    if (strcmp(host, r->host) != 0 || port != r->port)
        LQ_INFO("sentinels: master '%s' is %s:%d", r->sentinel.master, host, port);
    snprintf(r->host, sizeof r->host, "%s", host);
    r->port = port;
    return 0;
}

/* ROLE after connecting through the sentinels: a server that is no longer
 * the master (the sentinels had not seen the failover yet) is left. */
static void s_on_role(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return;
    const redisReply *role = reply->element[0];
    if (role->type == REDIS_REPLY_STRING && strcmp(role->str, "master") != 0) {
        LQ_WARN("redis %s:%d is a %s, not the master: asking the sentinels again", r->host,
                r->port, role->str);
        if (r->ac)
            redisAsyncFree(r->ac);
    }
}

static void s_connect(lq_redis_t *r)
{
    r->gen++;
    r->nsha_loaded = 0;
    if (r->use_sentinel && s_find_master(r) < 0)
        return;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac) {
        s_schedule_reconnect(r);
        return;
    }
    if (ac->err) {
        LQ_WARN("redis %s:%d: %s", r->host, r->port, ac->errstr);
        redisAsyncFree(ac);
        s_schedule_reconnect(r);
        return;
    }
    r->ac = ac;
    r->fd = ac->c.fd;
    r->want_read = r->want_write = 0;
    ac->ev.data = r;
    ac->ev.addRead = s_add_read;
    ac->ev.delRead = s_del_read;
    ac->ev.addWrite = s_add_write;
    ac->ev.delWrite = s_del_write;
    ac->ev.cleanup = s_cleanup;
    redisAsyncSetConnectCallback(ac, s_on_connect);
    redisAsyncSetDisconnectCallback(ac, s_on_disconnect);
    r->last_progress_ms = lq_loop_now(r->loop);
    r->pending = 0;
    /* Queue the set-up; hiredis sends it once connected, in order, before
     * anything the owner sends after on_up. */
    if (r->pass[0]) {
        const char *argv[3] = {"AUTH", r->user[0] ? r->user : r->pass, r->pass};
        int argc = r->user[0] ? 3 : 2;
        s_send(r, s_on_setup_reply, "AUTH", argc, argv, NULL);
    }
    if (r->use_sentinel) {
        const char *argv[1] = {"ROLE"};
        s_send(r, s_on_role, NULL, 1, argv, NULL);
    }
    if (r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[2] = {"SELECT", db};
        s_send(r, s_on_setup_reply, "SELECT", 2, argv, NULL);
    }
    for (int i = 0; i < r->nscripts; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", r->scripts[i]};
        s_send(r, s_on_script_loaded, (void *)(intptr_t)i, 3, argv, NULL);
    }
    s_add_write(r);
}

static void s_on_reconnect_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_connect(arg);
}

/* Fails the connection when connecting or a reply takes too long. */
static void s_on_watchdog(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    lq_redis_t *r = arg;
    uint64_t now = lq_loop_now(loop);
    if (r->ac) {
        int limit = r->connected ? r->command_timeout_ms : r->connect_timeout_ms;
        int waiting = !r->connected || r->pending > 0;
        if (waiting && now - r->last_progress_ms > (uint64_t)limit) {
            LQ_WARN("redis %s:%d: no %s for %d ms, reconnecting", r->host, r->port,
                    r->connected ? "reply" : "connection", limit);
            redisAsyncContext *ac = r->ac;
            int was_connected = r->connected;
            redisAsyncFree(ac); /* pending callbacks get NULL */
            /* hiredis calls the disconnect callback only for a connected
             * context; otherwise reconnect ourselves. */
            if (!was_connected || r->ac == ac)
                s_schedule_reconnect(r);
        }
    }
    lq_timer_start(loop, t, 250);
}

lq_redis_t *lq_redis_new(lq_loop_t *loop, const lq_redis_opts_t *opts, lq_redis_state_cb on_state,
                         void *arg, char *err, size_t errlen)
{
    lq_redis_t *r = xcalloc(1, sizeof *r);
    if (lq_sentinel_is_url(opts->url)) {
        if (lq_sentinel_parse(&r->sentinel, opts->url, err, errlen) < 0) {
            free(r);
            return NULL;
        }
        r->use_sentinel = 1;
        snprintf(r->user, sizeof r->user, "%s", r->sentinel.user);
        snprintf(r->pass, sizeof r->pass, "%s", r->sentinel.pass);
        r->db = r->sentinel.db;
    } else if (s_parse_url(r, opts->url, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    r->wait_replicas = opts->wait_replicas > 0 ? opts->wait_replicas : 0;
    r->wait_timeout_ms = opts->wait_timeout_ms > 0 ? opts->wait_timeout_ms : 1000;
    r->durable_mask = opts->durable_mask;
    r->loop = loop;
    r->fd = -1;
    r->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 2000;
    r->command_timeout_ms = opts->command_timeout_ms > 0 ? opts->command_timeout_ms : 10000;
    r->scripts = opts->scripts;
    while (r->scripts && r->scripts[r->nscripts] && r->nscripts < LQ_REDIS_MAX_SCRIPTS)
        r->nscripts++;
    r->on_state = on_state;
    r->arg = arg;
    r->backoff_ms = 100;
    lq_timer_init(&r->reconnect_timer, s_on_reconnect_timer, r);
    lq_timer_init(&r->watchdog, s_on_watchdog, r);
    lq_timer_start(loop, &r->watchdog, 250);
    s_connect(r);
    return r;
}

int lq_redis_up(const lq_redis_t *r)
{
    return r->up;
}

int lq_redis_pending(const lq_redis_t *r)
{
    return r->pending;
}

int lq_redis_command(lq_redis_t *r, lq_redis_cb cb, void *arg, int argc, const char **argv,
                     const size_t *argvlen)
{
    if (!r->up)
        return -1;
    return s_send(r, cb, arg, argc, argv, argvlen);
}

/* A deep copy of a reply (freeReplyObject frees it). */
static redisReply *s_copy(const redisReply *src)
{
    redisReply *c = xcalloc(1, sizeof *c);
    c->type = src->type;
    c->integer = src->integer;
    if (src->str) {
        c->str = xmalloc(src->len + 1);
        memcpy(c->str, src->str, src->len);
        c->str[src->len] = '\0';
        c->len = src->len;
    }
    if (src->elements) {
        c->element = xcalloc(src->elements, sizeof *c->element);
        c->elements = src->elements;
        for (size_t i = 0; i < src->elements; i++)
            c->element[i] = s_copy(src->element[i]);
    }
    return c;
}

/* 1 when script idx is acknowledged only after WAIT. */
static int s_durable(const lq_redis_t *r, int idx)
{
    return r->wait_replicas > 0 && idx < 32 && (r->durable_mask & (1u << idx));
}

/* The script's reply: kept until WAIT answers. */
static void s_on_durable_reply(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_durable_t *d = arg;
    if (reply)
        d->copy = s_copy(reply);
    else
        d->failed = 1;
}

/* WAIT's answer: the script's reply goes to its caller if enough replicas
 * have it; otherwise the caller hears "lost" (NULL) and does what it does
 * on a lost connection (the client resends the chunk, workers re-send the
 * results; both are stored once). */
static void s_on_wait(lq_redis_t *r, redisReply *reply, void *arg)
{
    s_durable_t *d = arg;
    int ok = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer >= r->wait_replicas;
    if (reply && !ok)
        LQ_WARN("redis WAIT: %lld of %d replicas within %d ms: write not acknowledged",
                reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL, r->wait_replicas,
                r->wait_timeout_ms);
    d->cb(r, ok && !d->failed ? d->copy : NULL, d->arg);
    if (d->copy)
        freeReplyObject(d->copy);
    free(d);
}

/* Sends a script call (RESP bytes) followed by WAIT on the same
 * connection. Returns 0 (cb called once, after WAIT), or -1 (cb not
 * called). */
static int s_send_durable(lq_redis_t *r, lq_redis_cb cb, void *arg, const char *cmd, size_t len)
{
    s_durable_t *d = xcalloc(1, sizeof *d);
    d->cb = cb;
    d->arg = arg;
    if (s_queue(r, s_on_durable_reply, d, cmd, len, 0, NULL, NULL) < 0) {
        free(d);
        return -1;
    }
    char n[16], ms[16];
    snprintf(n, sizeof n, "%d", r->wait_replicas);
    snprintf(ms, sizeof ms, "%d", r->wait_timeout_ms);
    const char *wargv[3] = {"WAIT", n, ms};
    if (s_send(r, s_on_wait, d, 3, wargv, NULL) < 0) {
        /* cannot happen once the first was queued; fail the call late */
        d->failed = 1;
        LQ_ERROR("redis: could not queue WAIT");
    }
    return 0;
}

/* Sends the RESP bytes of a call of script idx. */
static int s_send_script(lq_redis_t *r, int idx, lq_redis_cb cb, void *arg, const char *cmd,
                         size_t len)
{
    return s_durable(r, idx) ? s_send_durable(r, cb, arg, cmd, len)
                             : s_queue(r, cb, arg, cmd, len, 0, NULL, NULL);
}

int lq_redis_eval(lq_redis_t *r, int idx, lq_redis_cb cb, void *arg, int nkeys, int argc,
                  const char **argv, const size_t *argvlen)
{
    if (!r->up || idx < 0 || idx >= r->nscripts)
        return -1;
    enum { STACK = 64 };
    const char *sargv[STACK];
    size_t slen[STACK];
    const char **av = sargv;
    size_t *al = slen;
    if (argc + 3 > STACK) {
        av = xmalloc((size_t)(argc + 3) * sizeof *av);
        al = xmalloc((size_t)(argc + 3) * sizeof *al);
    }
    char nk[16];
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = r->sha[idx];
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        al[i + 3] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    int rc;
    if (s_durable(r, idx)) {
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, argc + 3, av, al);
        rc = len < 0 ? -1 : s_send_durable(r, cb, arg, cmd, (size_t)len);
        redisFreeCommand(cmd);
    } else {
        rc = s_send(r, cb, arg, argc + 3, av, al);
    }
    if (av != sargv) {
        free(av);
        free(al);
    }
    return rc;
}

/* ---- script arguments in RESP form ---- */

static void s_args_reserve(lq_redis_args_t *a, size_t more)
{
    if (a->len + more <= a->cap)
        return;
    size_t cap = a->cap * 2;
    if (cap < a->len + more)
        cap = a->len + more;
    a->buf = xrealloc(a->buf, cap);
    a->cap = cap;
}

void lq_redis_args_init(lq_redis_args_t *a, size_t size_hint)
{
    a->cap = LQ_REDIS_ARGS_HEAD + (size_hint ? size_hint : 256);
    a->buf = xmalloc(a->cap);
    a->len = LQ_REDIS_ARGS_HEAD;
    a->argc = 0;
}

void lq_redis_args_add(lq_redis_args_t *a, const char *s, size_t n)
{
    s_args_reserve(a, n + 32);
    char *w = a->buf + a->len;
    *w++ = '$';
    w += lq_fmt_int(w, (int64_t)n);
    *w++ = '\r';
    *w++ = '\n';
    if (n)
        memcpy(w, s, n);
    w += n;
    *w++ = '\r';
    *w++ = '\n';
    a->len = (size_t)(w - a->buf);
    a->argc++;
}

void lq_redis_args_str(lq_redis_args_t *a, const char *s)
{
    lq_redis_args_add(a, s, strlen(s));
}

void lq_redis_args_int(lq_redis_args_t *a, int64_t v)
{
    char num[24];
    lq_redis_args_add(a, num, lq_fmt_int(num, v));
}

void lq_redis_args_clear(lq_redis_args_t *a)
{
    free(a->buf);
    memset(a, 0, sizeof *a);
}

int lq_redis_eval_args(lq_redis_t *r, int idx, lq_redis_cb cb, void *arg, lq_redis_args_t *a)
{
    int rc = -1;
    if (r->up && idx >= 0 && idx < r->nscripts) {
        /* the header, right-aligned in the reserved space:
         * *<argc>, EVALSHA, <sha>, 0 (no keys) */
        char head[LQ_REDIS_ARGS_HEAD], *w = head;
        *w++ = '*';
        w += lq_fmt_int(w, (int64_t)a->argc + 3);
        static const char mid[] = "\r\n$7\r\nEVALSHA\r\n$40\r\n", tail[] = "\r\n$1\r\n0\r\n";
        memcpy(w, mid, sizeof mid - 1);
        w += sizeof mid - 1;
        memcpy(w, r->sha[idx], 40);
        w += 40;
        memcpy(w, tail, sizeof tail - 1);
        w += sizeof tail - 1;
        size_t hl = (size_t)(w - head);
        char *start = a->buf + LQ_REDIS_ARGS_HEAD - hl;
        memcpy(start, head, hl);
        rc = s_send_script(r, idx, cb, arg, start, a->len - (LQ_REDIS_ARGS_HEAD - hl));
    }
    lq_redis_args_clear(a);
    return rc;
}

void lq_redis_destroy(lq_redis_t **p)
{
    if (!p || !*p)
        return;
    lq_redis_t *r = *p;
    r->closing = 1;
    r->on_state = NULL;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac);
    }
    lq_timer_stop(r->loop, &r->reconnect_timer);
    lq_timer_stop(r->loop, &r->watchdog);
    free(r);
    *p = NULL;
}
