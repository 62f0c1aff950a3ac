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
#include <zmq.h>

typedef struct s_pending {
    struct s_pending *next;
    lq_msg_t msg;
} s_pending_t;

struct lq_rpc {
    lq_loop_t *loop;
    void *zctx;
    lq_zsock_t *sock;
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

lq_rpc_t *lq_rpc_new(const char *endpoint, const char *server_key, const char *client_secret,
                     char *err, size_t errlen)
{
    lq_rpc_t *r = xcalloc(1, sizeof *r);
    r->loop = lq_loop_new();
    r->zctx = zmq_ctx_new();
    r->sock = r->loop && r->zctx ? lq_zsock_new(r->loop, r->zctx, ZMQ_DEALER, s_on_msg, r) : NULL;
    if (!r->sock) {
        snprintf(err, errlen, "cannot create a socket: %s", zmq_strerror(errno));
        lq_rpc_destroy(&r);
        return NULL;
    }
    if (server_key && lq_curve_client(r->sock, server_key, client_secret, err, errlen) < 0) {
        lq_rpc_destroy(&r);
        return NULL;
    }
    int ivl = 100, max = 1000;
    zmq_setsockopt(lq_zsock_raw(r->sock), ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(lq_zsock_raw(r->sock), ZMQ_RECONNECT_IVL_MAX, &max, sizeof max);
    if (lq_zsock_connect(r->sock, endpoint) < 0) {
        snprintf(err, errlen, "bad broker endpoint '%s': %s", endpoint, zmq_strerror(errno));
        lq_rpc_destroy(&r);
        return NULL;
    }
    if (s_watch_sigint)
        lq_loop_on_signal(r->loop, SIGINT, s_on_sigint, r);
    r->next_req = ((uint64_t)lq_wall_ms() << 8) & 0x7fffffffffffull;
    return r;
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
    if (lq_zsock_send(r->sock, NULL, 0, m) < 0)
        return 0;
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
    for (;;) {
        if (s_take(r, min_req, max_req, reply))
            return 1;
        if (r->interrupted)
            return -1;
        uint64_t now = lq_mono_ms();
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
