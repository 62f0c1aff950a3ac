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

uint64_t lq_msg_req(const lq_msg_t *m)
{
    switch (m->cmd) {
    case LQ_C_OPENED:
        return m->u.opened.req;
    case LQ_C_CHUNK_ACK:
        return m->u.chunk_ack.req;
    case LQ_C_CLOSED:
    case LQ_C_DELETED:
        return m->u.batch_req.req;
    case LQ_C_BATCH:
        return m->u.batch.req;
    case LQ_C_RESULTS_PAGE:
        return m->u.results_page.req;
    case LQ_C_LIST_REPLY:
        return m->u.list_reply.req;
    case LQ_C_WORKERS_REPLY:
        return m->u.workers_reply.req;
    case LQ_C_ERROR:
        return m->u.error.req;
    default:
        return 0;
    }
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

static void s_set_req(lq_msg_t *m, uint64_t req)
{
    switch (m->cmd) {
    case LQ_C_OPEN:
        m->u.open.req = req;
        break;
    case LQ_C_CHUNK:
        m->u.chunk.req = req;
        break;
    case LQ_C_CLOSE:
        m->u.close.req = req;
        break;
    case LQ_C_STATUS:
    case LQ_C_CANCEL:
    case LQ_C_DELETE:
        m->u.batch_req.req = req;
        break;
    case LQ_C_RESULTS:
        m->u.results.req = req;
        break;
    default:
        m->u.simple.req = req;
        break;
    }
}

uint64_t lq_rpc_send(lq_rpc_t *r, lq_msg_t *m)
{
    uint64_t req = ++r->next_req;
    s_set_req(m, req);
    if (lq_zsock_send(r->sock, NULL, 0, m) < 0)
        return 0;
    return req;
}

int lq_rpc_recv(lq_rpc_t *r, uint64_t min_req, uint64_t max_req, lq_msg_t *reply, int timeout_ms)
{
    uint64_t deadline = lq_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        s_pending_t *prev = NULL;
        for (s_pending_t *p = r->head; p;) {
            uint64_t req = lq_msg_req(&p->msg);
            s_pending_t *next = p->next;
            if (req >= min_req && req <= max_req) {
                if (prev)
                    prev->next = next;
                else
                    r->head = next;
                if (r->tail == p)
                    r->tail = prev;
                *reply = p->msg;
                free(p);
                return 1;
            }
            if (req < min_req) { /* a reply we no longer wait for */
                if (prev)
                    prev->next = next;
                else
                    r->head = next;
                if (r->tail == p)
                    r->tail = prev;
                lq_msg_clear(&p->msg);
                free(p);
            } else {
                prev = p;
            }
            p = next;
        }
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
