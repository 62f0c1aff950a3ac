/* rpc: see rpc.h. */
#include "rpc.h"

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "wire/curve.h"
#include "wire/zsock.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define S_MAX_ENDPOINTS 16
#define S_FAILOVER_MS 3000 /* silence that moves a waiting call to the next broker */

typedef struct s_pending {
    struct s_pending *next;
    lq_msg_t msg;
} s_pending_t;

struct lq_rpc {
    lq_loop_t *loop;
    void *zctx;
    lq_zsock_t *sock;
    char *eps[S_MAX_ENDPOINTS]; /* the brokers ("a,b,..."); sock talks to eps[cur] */
    size_t neps, cur;
    char *server_key, *client_secret;
    uint64_t unanswered_ms; /* monotonic: first send since the last message heard; 0: none */
    int move_on;            /* the broker answered "unavailable": next send goes elsewhere */
    uint64_t next_req;
    s_pending_t *head, *tail; /* replies received, not yet taken */
    int interrupted;
};

static int s_watch_sigint = 1;

void lq_rpc_watch_sigint(int on)
{
    s_watch_sigint = on;
}

static void s_on_msg(lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)s;
    (void)ident;
    (void)len;
    lq_rpc_t *r = arg;
    r->unanswered_ms = 0;
    if (m->cmd == LQ_C_ERROR && m->u.error.code && strcmp(m->u.error.code, "unavailable") == 0)
        r->move_on = r->neps > 1;
    if (lq_msg_req(m) == 0)
        return;
    s_pending_t *p = xcalloc(1, sizeof *p);
    p->msg = *m;
    memset(m, 0, sizeof *m); /* moved: the zsock's destroy frees nothing */
    if (r->tail)
        r->tail->next = p;
    else
        r->head = p;
    r->tail = p;
}

static void s_on_sigint(lq_loop_t *loop, void *arg)
{
    (void)loop;
    ((lq_rpc_t *)arg)->interrupted = 1;
}

/* Creates the DEALER and connects it to eps[cur]. Returns 0, or -1 with
 * err set (no socket then). */
static int s_open(lq_rpc_t *r, char *err, size_t errlen)
{
    r->sock = lq_zsock_new(r->loop, r->zctx, ZMQ_DEALER, s_on_msg, r);
    if (!r->sock) {
        snprintf(err, errlen, "cannot create a socket: %s", zmq_strerror(errno));
        return -1;
    }
    if (r->server_key &&
        lq_curve_client(r->sock, r->server_key, r->client_secret, err, errlen) < 0) {
        lq_zsock_destroy(&r->sock);
        return -1;
    }
    int ivl = 100, max = 1000, linger = 0;
    zmq_setsockopt(lq_zsock_raw(r->sock), ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(lq_zsock_raw(r->sock), ZMQ_RECONNECT_IVL_MAX, &max, sizeof max);
    zmq_setsockopt(lq_zsock_raw(r->sock), ZMQ_LINGER, &linger, sizeof linger);
    if (lq_zsock_connect(r->sock, r->eps[r->cur]) < 0) {
        snprintf(err, errlen, "bad broker endpoint '%s': %s", r->eps[r->cur],
                 zmq_strerror(errno));
        lq_zsock_destroy(&r->sock);
        return -1;
    }
    return 0;
}

/* Splits endpoint at commas into r->eps. Returns 0, or -1 with err set
 * when the list is empty or too long. */
static int s_parse_endpoints(lq_rpc_t *r, const char *endpoint, char *err, size_t errlen)
{
    const char *p = endpoint ? endpoint : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n > 0) {
            if (r->neps == S_MAX_ENDPOINTS) {
                snprintf(err, errlen, "too many broker endpoints (at most %d)", S_MAX_ENDPOINTS);
                return -1;
            }
            r->eps[r->neps++] = xstrndup(p, n);
        }
        p += n + (p[n] == ',');
    }
    if (r->neps == 0) {
        snprintf(err, errlen, "no broker endpoint given");
        return -1;
    }
    return 0;
}

lq_rpc_t *lq_rpc_new(const char *endpoint, const char *server_key, const char *client_secret,
                     char *err, size_t errlen)
{
    lq_rpc_t *r = xcalloc(1, sizeof *r);
    r->loop = lq_loop_new();
    r->zctx = zmq_ctx_new();
    r->server_key = server_key ? xstrdup(server_key) : NULL;
    r->client_secret = client_secret ? xstrdup(client_secret) : NULL;
    if (!r->loop || !r->zctx) {
        snprintf(err, errlen, "cannot create a socket: %s", zmq_strerror(errno));
        lq_rpc_destroy(&r);
        return NULL;
    }
    if (s_parse_endpoints(r, endpoint, err, errlen) < 0) {
        lq_rpc_destroy(&r);
        return NULL;
    }
    /* several brokers: each client starts at its own, so clients spread */
    r->cur = (size_t)getpid() % r->neps;
    if (s_open(r, err, errlen) < 0) {
        lq_rpc_destroy(&r);
        return NULL;
    }
    if (s_watch_sigint)
        lq_loop_on_signal(r->loop, SIGINT, s_on_sigint, r);
    r->next_req = ((uint64_t)lq_wall_ms() << 8) & 0x7fffffffffffull;
    return r;
}

/* Moves to the next broker of the list (the current one is silent).
 * Replies still owed by the old one are lost: callers resend on timeout,
 * and every request is safe to repeat. Returns 0, or -1 (no socket: later
 * sends fail until the next switch). */
static int s_next_broker(lq_rpc_t *r)
{
    char err[256];
    const char *old = r->eps[r->cur];
    lq_zsock_destroy(&r->sock);
    r->unanswered_ms = 0;
    r->move_on = 0;
    r->cur = (r->cur + 1) % r->neps;
    LQ_DEBUG("broker %s silent: trying %s", old, r->eps[r->cur]);
    if (s_open(r, err, sizeof err) < 0) {
        LQ_WARN("%s", err);
        return -1;
    }
    return 0;
}

const char *lq_rpc_endpoint(const lq_rpc_t *r)
{
    return r->eps[r->cur];
}

void lq_rpc_destroy(lq_rpc_t **p)
{
    if (!p || !*p)
        return;
    lq_rpc_t *r = *p;
    while (r->head) {
        s_pending_t *n = r->head->next;
        lq_msg_clear(&r->head->msg);
        free(r->head);
        r->head = n;
    }
    lq_zsock_destroy(&r->sock);
    for (size_t i = 0; i < r->neps; i++)
        free(r->eps[i]);
    free(r->server_key);
    free(r->client_secret);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    lq_loop_destroy(&r->loop);
    free(r);
    *p = NULL;
}

uint64_t lq_rpc_send(lq_rpc_t *r, lq_msg_t *m)
{
    uint64_t req = ++r->next_req;
    uint64_t *field = lq_msg_req_field(m);
    if (field)
        *field = req;
    if ((!r->sock || r->move_on) && s_next_broker(r) < 0)
        return 0;
    if (lq_zsock_send(r->sock, NULL, 0, m) < 0)
        return 0;
    if (!r->unanswered_ms)
        r->unanswered_ms = lq_mono_ms();
    return req;
}

/* Takes the first pending reply with a request id in [min_req, max_req]
 * into *reply (the caller owns it), dropping on the way the replies older
 * than min_req (nobody waits for them any more). Returns 1, or 0 when none
 * is pending. */
static int s_take(lq_rpc_t *r, uint64_t min_req, uint64_t max_req, lq_msg_t *reply)
{
    s_pending_t **pp = &r->head, *prev = NULL;
    while (*pp) {
        s_pending_t *p = *pp;
        uint64_t req = lq_msg_req(&p->msg);
        if (req > max_req) { /* a reply for later */
            prev = p;
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        if (r->tail == p)
            r->tail = prev;
        if (req >= min_req) {
            *reply = p->msg;
            free(p);
            return 1;
        }
        lq_msg_clear(&p->msg);
        free(p);
    }
    return 0;
}

int lq_rpc_recv(lq_rpc_t *r, uint64_t min_req, uint64_t max_req, lq_msg_t *reply, int timeout_ms)
{
    uint64_t deadline = lq_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    /* waiting for a reply (not just sleeping) may move to the next broker */
    int failover = r->neps > 1 && min_req <= max_req && min_req != UINT64_MAX;
    for (;;) {
        if (s_take(r, min_req, max_req, reply))
            return 1;
        if (r->interrupted)
            return -1;
        uint64_t now = lq_mono_ms();
        if (failover && r->unanswered_ms && now - r->unanswered_ms >= S_FAILOVER_MS) {
            s_next_broker(r);
            return 0; /* the caller resends, now to the next broker */
        }
        if (now >= deadline)
            return 0;
        uint64_t left = deadline - now;
        lq_loop_run_once(r->loop, (int)(left > 100 ? 100 : left));
    }
}

int lq_rpc_call(lq_rpc_t *r, lq_msg_t *m, lq_msg_t *reply, int timeout_ms)
{
    uint64_t req = lq_rpc_send(r, m);
    if (!req)
        return 0;
    return lq_rpc_recv(r, req, req, reply, timeout_ms);
}

int lq_rpc_interrupted(const lq_rpc_t *r)
{
    return r->interrupted;
}
