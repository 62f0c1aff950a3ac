/* fake_conn: see fake_conn.h.
 *
 * A connection moves through these states:
 *   OPEN      reading, parsing and answering requests;
 *   CLOSING   a response said "Connection: close": flush, then LINGER;
 *   DROPPING  the behaviour said drop: flush earlier responses, then close;
 *   LINGER    write side shut down; read and discard until EOF or 2 s, so
 *             that the peer sees our last response instead of a reset;
 *   DEAD      closed, waiting to be freed by the before-sleep hook.
 * Responses that are ready at once and have nothing queued ahead of them go
 * straight into the output buffer; others wait in a FIFO of slots, each
 * with its own timer. Reading pauses (back-pressure) while 1024 responses
 * are queued or 8 MiB of output is unsent. */
#define _GNU_SOURCE
#include "fake_conn.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_READ_CHUNK 16384
#define S_MAX_SLOTS 1024
#define S_MAX_OUT (8u << 20)
#define S_LINGER_MS 2000
#define S_ACCEPT_BATCH 256

enum { S_OPEN, S_CLOSING, S_DROPPING, S_LINGER, S_DEAD };

typedef struct s_conn s_conn_t;
typedef struct s_slot s_slot_t;

/* A response waiting for its turn (or its timer) on one connection. */
struct s_slot {
    s_slot_t *next;
    s_conn_t *c;
    lq_timer_t timer;
    int ready;
    lq_fake_action_t action;
    int close_after;
    int api;
    lq_fake_buf_t data;
};

struct s_conn {
    lq_fake_srv_t *srv;
    int fd;
    int state;
    int watched;       /* events currently registered with the loop */
    int read_eof;      /* the peer shut down its write side */
    int stop_parsing;  /* no more requests on this connection */
    int blocked;       /* parsing stopped by back-pressure */
    int continue_sent; /* 100 Continue sent for the request at in_pos */
    size_t want;       /* body bytes still missing for the request at in_pos */
    lq_fake_buf_t in;
    size_t in_pos;
    lq_fake_buf_t out;
    size_t out_pos;
    s_slot_t *head, *tail;
    size_t nslots;
    lq_timer_t linger;
    s_conn_t *prev, *next; /* live list; dead list uses next only */
};

struct lq_fake_srv {
    lq_loop_t *loop;
    lq_fake_bhv_t *bhv;
    int lfd;
    int reserve_fd; /* spare fd given up to shed a connection on EMFILE */
    size_t max_body;
    s_conn_t *live;
    s_conn_t *dead;
    lq_fake_buf_t scratch;
    uint64_t emfile_logged_ms;
};

static void s_on_event(lq_loop_t *loop, int fd, int events, void *arg);
static void s_close(s_conn_t *c);
static void s_settle(s_conn_t *c);
static void s_process(s_conn_t *c);

/* ---- life cycle ---- */

/* Returns 1 while the connection must not take more requests. */
static int s_backpressured(const s_conn_t *c)
{
    return c->nslots >= S_MAX_SLOTS || c->out.len - c->out_pos >= S_MAX_OUT;
}

/* Frees a slot (its timer must be stopped). Can't fail. */
static void s_slot_free(s_slot_t *s)
{
    lq_fake_buf_clear(&s->data);
    free(s);
}

/* Registers the events the connection needs now. Closes it if the loop
 * refuses. */
static void s_watch(s_conn_t *c)
{
    int ev = 0;
    if (c->state == S_LINGER)
        ev = LQ_READABLE;
    else if (c->state == S_OPEN && !c->read_eof && (c->stop_parsing || !s_backpressured(c)))
        ev = LQ_READABLE;
    if (c->state != S_LINGER && c->out_pos < c->out.len)
        ev |= LQ_WRITABLE;
    if (ev == c->watched)
        return;
    if (ev == 0) {
        lq_loop_unwatch(c->srv->loop, c->fd);
    } else if (lq_loop_watch(c->srv->loop, c->fd, ev, s_on_event, c) < 0) {
        LQ_WARN("epoll registration of fd %d failed: %s", c->fd, strerror(errno));
        s_close(c);
        return;
    }
    c->watched = ev;
}

/* Closes the connection: unwatches and closes the fd, stops its timers,
 * releases its queued responses and moves it to the dead list (freed by the
 * before-sleep hook). Safe to call twice. */
static void s_close(s_conn_t *c)
{
    if (c->state == S_DEAD)
        return;
    lq_fake_srv_t *srv = c->srv;
    lq_loop_unwatch(srv->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    c->watched = 0;
    lq_timer_stop(srv->loop, &c->linger);
    while (c->head) {
        s_slot_t *s = c->head;
        c->head = s->next;
        lq_timer_stop(srv->loop, &s->timer);
        if (s->api)
            lq_fake_bhv_done(srv->bhv);
        s_slot_free(s);
    }
    c->tail = NULL;
    c->nslots = 0;
    c->state = S_DEAD;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = srv->dead;
    srv->dead = c;
    lq_fake_bhv_conn(srv->bhv, 0);
}

/* Before-sleep hook: frees the connections closed during the iteration. */
static void s_reap(lq_loop_t *loop, void *arg)
{
    (void)loop;
    lq_fake_srv_t *srv = arg;
    while (srv->dead) {
        s_conn_t *c = srv->dead;
        srv->dead = c->next;
        lq_fake_buf_clear(&c->in);
        lq_fake_buf_clear(&c->out);
        free(c);
    }
}

/* Linger timer: gives up waiting for the peer's EOF. */
static void s_on_linger_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_close(arg);
}

/* Shuts down our write side and waits for the peer to close (LINGER). */
static void s_start_linger(s_conn_t *c)
{
    if (c->read_eof) {
        s_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = S_LINGER;
    lq_fake_buf_clear(&c->in);
    c->in_pos = 0;
    lq_timer_start(c->srv->loop, &c->linger, S_LINGER_MS);
    s_watch(c);
}

/* ---- output ---- */

/* Writes as much pending output as the socket takes. Closes the connection
 * on a write error. */
static void s_write(s_conn_t *c)
{
    while (c->out_pos < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_pos += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            s_close(c);
            return;
        }
    }
    if (c->out_pos == c->out.len) {
        c->out.len = c->out_pos = 0;
        if (c->out.cap > (1u << 20))
            lq_fake_buf_clear(&c->out);
    } else if (c->out_pos >= (1u << 20)) {
        memmove(c->out.data, c->out.data + c->out_pos, c->out.len - c->out_pos);
        c->out.len -= c->out_pos;
        c->out_pos = 0;
    }
}

/* Moves the ready responses at the head of the queue to the output
 * buffer, in order, and applies their close/drop. */
static void s_flush_slots(s_conn_t *c)
{
    while (c->state == S_OPEN && c->head && c->head->ready) {
        s_slot_t *s = c->head;
        c->head = s->next;
        if (!c->head)
            c->tail = NULL;
        c->nslots--;
        if (s->action == LQ_FAKE_SEND) {
            lq_fake_buf_append(&c->out, s->data.data, s->data.len);
            if (s->close_after)
                c->state = S_CLOSING;
        } else {
            c->state = S_DROPPING;
        }
        if (s->api)
            lq_fake_bhv_done(c->srv->bhv);
        s_slot_free(s);
    }
}

/* Slot timer: the response's delay is over. The slot is freed inside its
 * own callback, which the loop allows (it does not touch a timer after
 * calling it); the connection is only ever freed by s_reap. */
static void s_on_slot_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_slot_t *s = arg;
    s_conn_t *c = s->c;
    s->ready = 1;
    s_flush_slots(c);
    s_settle(c);
}

/* Queues the response in srv->scratch as decided by d; close_after: the
 * connection closes after it. */
static void s_enqueue(s_conn_t *c, const lq_fake_decision_t *d, int close_after)
{
    lq_fake_srv_t *srv = c->srv;
    if (d->action == LQ_FAKE_DROP || close_after)
        c->stop_parsing = 1;
    if (!c->head && d->delay_ms == 0 && d->action != LQ_FAKE_HANG) {
        if (d->action == LQ_FAKE_SEND) {
            lq_fake_buf_append(&c->out, srv->scratch.data, srv->scratch.len);
            if (close_after)
                c->state = S_CLOSING;
        } else {
            c->state = S_DROPPING;
        }
        if (d->api)
            lq_fake_bhv_done(srv->bhv);
        return;
    }
    s_slot_t *s = xcalloc(1, sizeof *s);
    s->c = c;
    s->action = d->action;
    s->close_after = close_after;
    s->api = d->api;
    lq_fake_buf_append(&s->data, srv->scratch.data, srv->scratch.len);
    lq_timer_init(&s->timer, s_on_slot_timer, s);
    if (d->action != LQ_FAKE_HANG) {
        if (d->delay_ms == 0)
            s->ready = 1;
        else
            lq_timer_start(srv->loop, &s->timer, d->delay_ms);
    }
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nslots++;
}

/* Answers a protocol error (status, why) and stops parsing. */
static void s_proto_error(s_conn_t *c, int status, const char *why)
{
    lq_fake_srv_t *srv = c->srv;
    LQ_DEBUG("fd %d: %d %s", c->fd, status, why ? why : "");
    srv->scratch.len = 0;
    lq_fake_bhv_error(srv->bhv, status, why, &srv->scratch);
    lq_fake_decision_t d = {.action = LQ_FAKE_SEND, .status = status};
    s_enqueue(c, &d, 1);
}

/* ---- input ---- */

/* Parses and answers every complete request in the input buffer, in
 * order, until the input runs out, the connection stops taking requests or
 * back-pressure applies. */
static void s_process(s_conn_t *c)
{
    lq_fake_srv_t *srv = c->srv;
    c->blocked = 0;
    while (c->state == S_OPEN && !c->stop_parsing && c->in_pos < c->in.len) {
        if (s_backpressured(c)) {
            c->blocked = 1;
            break;
        }
        const char *p = c->in.data + c->in_pos;
        size_t avail = c->in.len - c->in_pos;
        lq_fake_req_t req;
        const char *why = NULL;
        lq_fake_http_rc_t rc = lq_fake_http_parse(p, avail, &req, &why);
        if (rc == LQ_FAKE_HTTP_INCOMPLETE)
            break;
        if (rc != LQ_FAKE_HTTP_DONE) {
            int status = rc == LQ_FAKE_HTTP_TOO_LARGE     ? 431
                         : rc == LQ_FAKE_HTTP_BAD_VERSION ? 505
                                                          : 400;
            s_proto_error(c, status, why);
            break;
        }
        if (req.transfer_encoding) {
            s_proto_error(c, 411, "Transfer-Encoding is not supported; send a Content-Length body");
            break;
        }
        size_t cl = req.content_length < 0 ? 0 : (size_t)req.content_length;
        if (cl > srv->max_body) {
            s_proto_error(c, 413,
                          "Request body too large for the fake upstream "
                          "(--max-request-bytes).");
            break;
        }
        if (avail - req.head_len < cl) {
            c->want = cl - (avail - req.head_len);
            if (req.expect_continue && !c->continue_sent && !c->head) {
                lq_fake_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                c->continue_sent = 1;
            }
            break;
        }
        c->want = 0;
        c->continue_sent = 0;
        srv->scratch.len = 0;
        lq_fake_decision_t d;
        lq_fake_bhv_handle(srv->bhv, &req, p + req.head_len, cl, req.keep_alive, &srv->scratch, &d);
        c->in_pos += req.head_len + cl;
        s_enqueue(c, &d, !req.keep_alive);
        if (srv->scratch.cap > (1u << 20))
            lq_fake_buf_clear(&srv->scratch); /* after a big /counts */
    }
    if (c->in_pos == c->in.len) {
        c->in.len = c->in_pos = 0;
    } else if (c->in_pos > 0) {
        memmove(c->in.data, c->in.data + c->in_pos, c->in.len - c->in_pos);
        c->in.len -= c->in_pos;
        c->in_pos = 0;
    }
    if (c->in.len == 0 && c->in.cap > (1u << 20))
        lq_fake_buf_clear(&c->in);
}

/* Returns 1 if a hung response is queued (it will never be answered). */
static int s_has_hang(const s_conn_t *c)
{
    for (const s_slot_t *s = c->head; s; s = s->next)
        if (s->action == LQ_FAKE_HANG)
            return 1;
    return 0;
}

/* Reads what the socket has (a few chunks at most), then processes it.
 * Closes the connection on a read error. */
static void s_read(s_conn_t *c)
{
    for (int i = 0; i < 4; i++) {
        size_t want = c->want > S_READ_CHUNK ? c->want : S_READ_CHUNK;
        lq_fake_buf_reserve(&c->in, want);
        size_t room = c->in.cap - c->in.len;
        ssize_t n = recv(c->fd, c->in.data + c->in.len, room, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (c->stop_parsing)
                c->in.len = c->in_pos = 0; /* after "Connection: close": discard */
            if ((size_t)n < room)
                break;
        } else if (n == 0) {
            c->read_eof = 1;
            break;
        } else if (errno == EINTR) {
            i--;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            s_close(c);
            return;
        }
    }
    s_process(c);
    if (c->read_eof && s_has_hang(c)) {
        s_close(c);
        return;
    }
    s_settle(c);
}

/* After any event: resumes parsing if back-pressure is gone, writes,
 * finishes closing states and updates the watched events. */
static void s_settle(s_conn_t *c)
{
    if (c->state == S_DEAD)
        return;
    if (c->state == S_LINGER) {
        s_watch(c);
        return;
    }
    if (c->blocked && !s_backpressured(c))
        s_process(c);
    if (c->out_pos < c->out.len) {
        s_write(c);
        if (c->state == S_DEAD)
            return;
    }
    if (c->out_pos == c->out.len) {
        if (c->state == S_CLOSING) {
            s_start_linger(c);
            return;
        }
        if (c->state == S_DROPPING || (c->read_eof && !c->head)) {
            s_close(c);
            return;
        }
    }
    s_watch(c);
}

/* LINGER: discards whatever the peer still sends; closes on EOF/error. */
static void s_linger_read(s_conn_t *c)
{
    char sink[16384];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        s_close(c);
        return;
    }
}

/* Connection fd callback. */
static void s_on_event(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    s_conn_t *c = arg;
    if (c->state == S_LINGER) {
        s_linger_read(c);
        return;
    }
    if (events & LQ_WRITABLE) {
        s_write(c);
        if (c->state == S_DEAD)
            return;
    }
    if (events & LQ_READABLE)
        s_read(c);
    else
        s_settle(c);
}

/* ---- listener ---- */

/* Wraps an accepted fd in a connection and watches it. Closes fd on
 * failure. */
static void s_conn_new(lq_fake_srv_t *srv, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s_conn_t *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->fd = fd;
    c->state = S_OPEN;
    lq_timer_init(&c->linger, s_on_linger_timer, c);
    if (lq_loop_watch(srv->loop, fd, LQ_READABLE, s_on_event, c) < 0) {
        LQ_WARN("cannot watch accepted fd %d: %s", fd, strerror(errno));
        close(fd);
        free(c);
        return;
    }
    c->watched = LQ_READABLE;
    c->next = srv->live;
    if (srv->live)
        srv->live->prev = c;
    srv->live = c;
    lq_fake_bhv_conn(srv->bhv, 1);
}

/* Out of fds: frees the reserve fd, accepts and closes one pending
 * connection (so the listener stops being readable), takes the reserve
 * back. */
static void s_shed(lq_fake_srv_t *srv)
{
    uint64_t now = lq_mono_ms();
    if (now - srv->emfile_logged_ms > 1000) {
        LQ_WARN("out of file descriptors; refusing connections (raise ulimit -n)");
        srv->emfile_logged_ms = now;
    }
    if (srv->reserve_fd >= 0) {
        close(srv->reserve_fd);
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

/* Listening fd callback: accepts a batch of connections. */
static void s_on_accept(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)events;
    lq_fake_srv_t *srv = arg;
    for (int i = 0; i < S_ACCEPT_BATCH; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
            s_conn_new(srv, cfd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE)
            s_shed(srv);
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            LQ_WARN("accept: %s", strerror(errno));
        return;
    }
}

/* Creates the server. See fake_conn.h. */
lq_fake_srv_t *lq_fake_srv_new(lq_loop_t *loop, int listen_fd, lq_fake_bhv_t *bhv, size_t max_body)
{
    lq_fake_srv_t *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->bhv = bhv;
    srv->lfd = listen_fd;
    srv->max_body = max_body;
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (lq_loop_watch(loop, listen_fd, LQ_READABLE, s_on_accept, srv) < 0 ||
        lq_loop_add_before_sleep(loop, s_reap, srv) < 0) {
        lq_loop_unwatch(loop, listen_fd);
        close(listen_fd);
        if (srv->reserve_fd >= 0)
            close(srv->reserve_fd);
        free(srv);
        return NULL;
    }
    return srv;
}

/* Destroys the server. See fake_conn.h. */
void lq_fake_srv_destroy(lq_fake_srv_t **psrv)
{
    if (!psrv || !*psrv)
        return;
    lq_fake_srv_t *srv = *psrv;
    while (srv->live)
        s_close(srv->live);
    s_reap(srv->loop, srv);
    lq_loop_unwatch(srv->loop, srv->lfd);
    close(srv->lfd);
    if (srv->reserve_fd >= 0)
        close(srv->reserve_fd);
    lq_fake_buf_clear(&srv->scratch);
    free(srv);
    *psrv = NULL;
}
