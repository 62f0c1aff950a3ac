/* zsock: see zsock.h. */
#include "zsock.h"

#include "frames.h"

#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct lq_zsock {
    lq_loop_t *loop;
    void *sock;
    int type;
    int fd;
    int watching;
    lq_zsock_msg_cb cb;
    void *arg;
    lq_timer_t again; /* 0 ms timer when more messages remain */
    lq_buf_t buf;
    uint64_t dropped;
    int in_pump;
};

static void s_drain(lq_zsock_t *s);

static void s_on_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    s_drain(arg);
}

static void s_on_again(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_drain(arg);
}

lq_zsock_t *lq_zsock_new(lq_loop_t *loop, void *zctx, int type, lq_zsock_msg_cb cb, void *arg)
{
    void *sock = zmq_socket(zctx, type);
    if (!sock)
        return NULL;
    int zero = 0, one = 1;
    int64_t maxsize = (int64_t)LQ_MAX_BODY + 4096;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    lq_zsock_t *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->sock = sock;
    s->type = type;
    s->fd = -1;
    s->cb = cb;
    s->arg = arg;
    lq_timer_init(&s->again, s_on_again, s);
    return s;
}

void *lq_zsock_raw(lq_zsock_t *s)
{
    return s->sock;
}

static int s_watch(lq_zsock_t *s)
{
    if (s->watching)
        return 0;
    size_t len = sizeof s->fd;
    if (zmq_getsockopt(s->sock, ZMQ_FD, &s->fd, &len) < 0)
        return -1;
    if (lq_loop_watch(s->loop, s->fd, LQ_READABLE, s_on_fd, s) < 0)
        return -1;
    s->watching = 1;
    /* ZMQ_FD is edge-triggered: a message already queued raised no edge,
     * so look once on the next iteration. */
    lq_timer_start(s->loop, &s->again, 0);
    return 0;
}

int lq_zsock_bind(lq_zsock_t *s, const char *endpoint)
{
    if (zmq_bind(s->sock, endpoint) < 0)
        return -1;
    return s_watch(s);
}

int lq_zsock_connect(lq_zsock_t *s, const char *endpoint)
{
    if (zmq_connect(s->sock, endpoint) < 0)
        return -1;
    return s_watch(s);
}

int lq_zsock_send(lq_zsock_t *s, const uint8_t *ident, size_t ident_len, const lq_msg_t *m)
{
    if (lq_msg_encode(m, &s->buf) < 0) {
        errno = EINVAL;
        return -1;
    }
    return lq_zsock_send_body(s, ident, ident_len, m->cmd, s->buf.data, s->buf.len);
}

int lq_zsock_send_body(lq_zsock_t *s, const uint8_t *ident, size_t ident_len, uint8_t cmd,
                       const void *body, size_t len)
{
    if (s->type == ZMQ_ROUTER) {
        if (zmq_send(s->sock, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
            return -1;
    }
    /* Once the first frame is accepted the rest of the message is queued
     * atomically by ZeroMQ, so these sends do not fail with EAGAIN. */
    if (zmq_send_const(s->sock, LQ_PROTO_SIGNATURE, 5, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send(s->sock, &cmd, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send(s->sock, body, len, ZMQ_DONTWAIT) < 0)
        return -1;
    /* Sending may consume the edge on ZMQ_FD: make sure we look again. */
    if (!lq_timer_active(&s->again) && s->watching)
        lq_timer_start(s->loop, &s->again, 0);
    return 0;
}

static void s_drop(lq_zsock_t *s, const char *why)
{
    s->dropped++;
    LQ_WARN("dropped a malformed message: %s", why);
}

/* Returns why the message in f is not an llmq message ("" when it is one),
 * in err. base is 1 on a ROUTER (identity frame first). */
static void s_check(lq_frames_t *f, int base, char *err, size_t errlen)
{
    zmq_msg_t *parts = f->part;
    err[0] = '\0';
    if (f->truncated)
        snprintf(err, errlen, "truncated multipart message");
    else if (f->total != base + 3)
        snprintf(err, errlen, "expected %d frames, got %d", base + 3, f->total);
    else if (zmq_msg_size(&parts[base]) != 5 ||
             memcmp(zmq_msg_data(&parts[base]), LQ_PROTO_SIGNATURE, 5) != 0)
        snprintf(err, errlen, "bad signature frame");
    else if (zmq_msg_size(&parts[base + 1]) != 1)
        snprintf(err, errlen, "command frame is not one byte");
    else if (zmq_msg_size(&parts[base + 2]) > LQ_MAX_BODY)
        snprintf(err, errlen, "body of %zu bytes over the limit", zmq_msg_size(&parts[base + 2]));
    else if (base && zmq_msg_size(&parts[0]) > LQ_MAX_IDENT)
        snprintf(err, errlen, "identity too long");
}

/* Reads one whole multipart message and delivers or drops it. Returns 1
 * handled (or dropped), 0 nothing pending. */
static int s_read_one(lq_zsock_t *s)
{
    lq_frames_t f;
    if (!lq_frames_recv(&f, s->sock))
        return 0;
    int base = s->type == ZMQ_ROUTER ? 1 : 0;
    char err[160];
    s_check(&f, base, err, sizeof err);
    if (!err[0]) {
        lq_msg_t m;
        zmq_msg_t *parts = f.part;
        uint8_t cmd = *(const uint8_t *)zmq_msg_data(&parts[base + 1]);
        char derr[128];
        if (lq_msg_decode(cmd, zmq_msg_data(&parts[base + 2]), zmq_msg_size(&parts[base + 2]), &m,
                          derr, sizeof derr) < 0) {
            snprintf(err, sizeof err, "%s: %s", lq_cmd_name(cmd), derr);
        } else {
            const uint8_t *ident = base ? zmq_msg_data(&parts[0]) : NULL;
            size_t ident_len = base ? zmq_msg_size(&parts[0]) : 0;
            s->cb(s, ident, ident_len, &m, s->arg);
            lq_msg_clear(&m);
        }
    }
    if (err[0])
        s_drop(s, err);
    lq_frames_clear(&f);
    return 1;
}

static void s_drain(lq_zsock_t *s)
{
    if (s->in_pump)
        return;
    s->in_pump = 1;
    int n = 0;
    while (n < LQ_ZSOCK_BATCH && s_read_one(s))
        n++;
    s->in_pump = 0;
    int events = 0;
    size_t len = sizeof events;
    if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN))
        lq_timer_start(s->loop, &s->again, 0);
}

uint64_t lq_zsock_dropped(const lq_zsock_t *s)
{
    return s->dropped;
}

void lq_zsock_destroy(lq_zsock_t **p)
{
    if (!p || !*p)
        return;
    lq_zsock_t *s = *p;
    if (s->watching)
        lq_loop_unwatch(s->loop, s->fd);
    lq_timer_stop(s->loop, &s->again);
    zmq_close(s->sock);
    lq_buf_clear(&s->buf);
    free(s);
    *p = NULL;
}
