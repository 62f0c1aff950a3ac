/* httpd: see httpd.h. */
#define _GNU_SOURCE
#include "httpd.h"

#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LQ_HTTPD_ACCEPTS_PER_WAKE 64

typedef struct s_conn {
    struct s_conn *prev, *next; /* accept order: the list head is the oldest */
    lq_httpd_t *h;
    int fd;
    char *req; /* max_request + 1 bytes */
    size_t len;
    char *out; /* response being written, NULL while reading */
    size_t out_len, out_off;
    lq_timer_t deadline;
} s_conn_t;

struct lq_httpd {
    lq_loop_t *loop;
    int fd;
    int port;
    lq_httpd_opts_t o;
    lq_httpd_handler handler;
    void *arg;
    s_conn_t *head, *tail;
    lq_httpd_stats_t st;
};

/* ---- the parser ---- */

/* 1 for an HTTP token character (RFC 9110 tchar). */
static int s_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Finds the end of the line starting at p (LF, with an optional CR before
 * it). Returns the line length without its terminator and sets *next past
 * it, or -1 if there is no LF before end. */
static long s_line(const char *p, const char *end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return -1;
    *next = nl + 1;
    return (long)(nl > p && nl[-1] == '\r' ? nl - 1 - p : nl - p);
}

/* Parses "METHOD SP /target SP HTTP/1.x" (n bytes at p) into req.
 * Returns 0 or -1. */
static int s_request_line(const char *p, size_t n, lq_httpd_req_t *req)
{
    size_t i = 0;
    while (i < n && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    if (i == 0 || i > LQ_HTTP_METHOD_MAX || i >= n || p[i] != ' ')
        return -1;
    memcpy(req->method, p, i);
    req->method[i] = '\0';
    size_t t = ++i;
    while (i < n && p[i] > ' ' && p[i] < 0x7f)
        i++;
    size_t tl = i - t;
    if (tl == 0 || tl > LQ_HTTP_TARGET_MAX || p[t] != '/' || i >= n || p[i] != ' ')
        return -1;
    const char *q = memchr(p + t, '?', tl);
    size_t pl = q ? (size_t)(q - (p + t)) : tl;
    memcpy(req->path, p + t, pl);
    req->path[pl] = '\0';
    size_t ql = q ? tl - pl - 1 : 0;
    memcpy(req->query, q ? q + 1 : "", ql);
    req->query[ql] = '\0';
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '0' && p[i + 7] != '1'))
        return -1;
    req->minor = p[i + 7] - '0';
    return 0;
}

/* Checks one header line "Name: value" of n bytes. Returns 0 or -1. */
static int s_header_line(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && s_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return -1;
    for (i++; i < n; i++)
        if (((unsigned char)p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
            return -1;
    return 0;
}

int lq_http_parse(const char *buf, size_t len, size_t max, lq_httpd_req_t *req)
{
    const char *p = buf, *end = buf + (len < max ? len : max), *next;
    long n = s_line(p, end, &next);
    if (n < 0) {
        /* incomplete: still refuse what can never become valid */
        for (const char *c = p; c < end; c++)
            if ((unsigned char)*c < 0x20 && *c != '\r')
                return LQ_HTTP_BAD;
        return len >= max ? LQ_HTTP_TOO_LARGE : LQ_HTTP_MORE;
    }
    memset(req, 0, sizeof *req);
    if (s_request_line(p, (size_t)n, req) < 0)
        return LQ_HTTP_BAD;
    for (p = next;;) {
        n = s_line(p, end, &next);
        if (n < 0)
            return len >= max ? LQ_HTTP_TOO_LARGE : LQ_HTTP_MORE;
        if (n == 0)
            return LQ_HTTP_OK;
        if (s_header_line(p, (size_t)n) < 0)
            return LQ_HTTP_BAD;
        p = next;
    }
}

/* ---- connections ---- */

/* Unlinks, closes and frees c. Can't fail. */
static void s_conn_close(s_conn_t *c)
{
    lq_httpd_t *h = c->h;
    lq_loop_unwatch(h->loop, c->fd);
    lq_timer_stop(h->loop, &c->deadline);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        h->tail = c->prev;
    h->st.open--;
    free(c->req);
    free(c->out);
    free(c);
}

static void s_on_conn(lq_loop_t *loop, int fd, int events, void *arg);

/* Writes what the socket takes of c's response; closes c when all is sent
 * or the peer is gone. Can't fail. */
static void s_flush(s_conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return; /* the deadline still runs */
        if (w <= 0)
            break;
        c->out_off += (size_t)w;
    }
    s_conn_close(c);
}

/* Queues a response on c and starts writing it. Takes over body. */
static void s_respond(s_conn_t *c, int status, const char *ctype, char *body, size_t blen)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {{200, "OK"}, {400, "Bad Request"}, {404, "Not Found"},
                   {405, "Method Not Allowed"}, {431, "Request Header Fields Too Large"},
                   {500, "Internal Server Error"}};
    const char *reason = "Status";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].code == status)
            reason = reasons[i].text;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, reason, ctype ? ctype : "text/plain", blen);
    c->out = xmalloc((size_t)hl + blen);
    memcpy(c->out, head, (size_t)hl);
    if (blen)
        memcpy(c->out + hl, body, blen);
    c->out_len = (size_t)hl + blen;
    free(body);
    if (lq_loop_watch(c->h->loop, c->fd, LQ_WRITABLE, s_on_conn, c) < 0) {
        s_conn_close(c);
        return;
    }
    s_flush(c);
}

/* Answers an error status with a one-line text body. */
static void s_respond_error(s_conn_t *c, int status, const char *text)
{
    s_respond(c, status, "text/plain", xstrdup(text), strlen(text));
}

/* A complete head arrived: runs the handler (GET and HEAD only). */
static void s_dispatch(s_conn_t *c, const lq_httpd_req_t *req)
{
    lq_httpd_t *h = c->h;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        s_respond_error(c, 405, "only GET\n");
        return;
    }
    h->st.served++;
    lq_httpd_resp_t r = {0};
    h->handler(req, &r, h->arg);
    if (r.status == 0) {
        free(r.body);
        s_respond_error(c, 404, "not found\n");
        return;
    }
    if (strcmp(req->method, "HEAD") == 0) {
        free(r.body);
        r.body = NULL;
        r.body_len = 0;
    }
    s_respond(c, r.status, r.content_type, r.body, r.body_len);
}

/* Reads what is there (once per wake: bounded work) and answers when the
 * head is complete or can never be valid. */
static void s_read(s_conn_t *c)
{
    lq_httpd_t *h = c->h;
    /* c->len < max_request here: a full buffer has been answered (431) */
    ssize_t n = recv(c->fd, c->req + c->len, h->o.max_request - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        s_conn_close(c);
        return;
    }
    c->len += (size_t)n;
    lq_httpd_req_t req;
    int rc = lq_http_parse(c->req, c->len, h->o.max_request, &req);
    if (rc == LQ_HTTP_MORE)
        return;
    if (rc == LQ_HTTP_BAD) {
        h->st.bad++;
        s_respond_error(c, 400, "bad request\n");
    } else if (rc == LQ_HTTP_TOO_LARGE) {
        h->st.too_large++;
        s_respond_error(c, 431, "request too large\n");
    } else {
        s_dispatch(c, &req);
    }
}

/* fd callback of a connection: reading the request, or writing the answer. */
static void s_on_conn(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    s_conn_t *c = arg;
    if (c->out)
        s_flush(c);
    else if (events & (LQ_READABLE | LQ_ERROR_EV))
        s_read(c);
}

/* The per-connection deadline: slow senders and slow readers alike. */
static void s_on_deadline(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_conn_t *c = arg;
    c->h->st.timed_out++;
    s_conn_close(c);
}

/* Takes a new connection into the table, closing the oldest if full. */
static void s_adopt(lq_httpd_t *h, int cfd)
{
    if (h->st.open >= h->o.max_conns && h->head) {
        h->st.evicted++;
        s_conn_close(h->head);
    }
    s_conn_t *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->fd = cfd;
    c->req = xmalloc(h->o.max_request + 1);
    lq_timer_init(&c->deadline, s_on_deadline, c);
    if (lq_loop_watch(h->loop, cfd, LQ_READABLE, s_on_conn, c) < 0) {
        close(cfd);
        free(c->req);
        free(c);
        return;
    }
    lq_timer_start(h->loop, &c->deadline, (uint64_t)h->o.timeout_ms);
    c->prev = h->tail;
    if (h->tail)
        h->tail->next = c;
    else
        h->head = c;
    h->tail = c;
    h->st.open++;
    h->st.accepted++;
}

/* Listener callback: accepts a bounded number per wake (level-triggered:
 * the rest come on the next iteration, between other work). */
static void s_on_accept(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)events;
    lq_httpd_t *h = arg;
    for (int i = 0; i < LQ_HTTPD_ACCEPTS_PER_WAKE; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                LQ_WARN("http listener: out of file descriptors");
            return;
        }
        s_adopt(h, cfd);
    }
}

/* ---- the listener ---- */

int lq_httpd_split_addr(const char *addr, char *host, size_t hostcap, const char **host_out,
                        char *port, size_t portcap, char *err, size_t errlen)
{
    const char *colon = strrchr(addr, ':');
    const char *h = colon ? addr : "";
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    const char *p = colon ? colon + 1 : addr;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    size_t pl = strlen(p);
    int digits = pl > 0 && pl < portcap && strspn(p, "0123456789") == pl;
    if (!digits || hl >= hostcap || atoi(p) > 65535) {
        snprintf(err, errlen, "address wants [HOST:]PORT, got '%s'", addr);
        return -1;
    }
    memcpy(port, p, pl + 1);
    if (hl == 1 && h[0] == '*') {
        *host_out = NULL; /* all interfaces, by explicit request */
        return 0;
    }
    if (hl == 0) {
        h = "127.0.0.1";
        hl = strlen(h);
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *host_out = host;
    return 0;
}

/* Opens, binds and listens a non-blocking socket on addr. Returns the fd,
 * or -1 with err. */
static int s_listen(const char *addr, char *err, size_t errlen)
{
    char host[256], port[8];
    const char *hp;
    if (lq_httpd_split_addr(addr, host, sizeof host, &hp, port, sizeof port, err, errlen) < 0)
        return -1;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(hp, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        snprintf(err, errlen, "%s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* The port fd is bound to, or 0. */
static int s_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

lq_httpd_t *lq_httpd_new(lq_loop_t *loop, const char *addr, const lq_httpd_opts_t *opts,
                         lq_httpd_handler handler, void *arg, char *err, size_t errlen)
{
    int fd = s_listen(addr, err, errlen);
    if (fd < 0)
        return NULL;
    lq_httpd_t *h = xcalloc(1, sizeof *h);
    if (opts)
        h->o = *opts;
    if (h->o.max_conns <= 0)
        h->o.max_conns = 64;
    if (h->o.timeout_ms <= 0)
        h->o.timeout_ms = 5000;
    if (h->o.max_request < 64)
        h->o.max_request = 8192;
    h->loop = loop;
    h->fd = fd;
    h->port = s_bound_port(fd);
    h->handler = handler;
    h->arg = arg;
    if (lq_loop_watch(loop, fd, LQ_READABLE, s_on_accept, h) < 0) {
        snprintf(err, errlen, "%s: cannot watch the listener", addr);
        close(fd);
        free(h);
        return NULL;
    }
    return h;
}

int lq_httpd_port(const lq_httpd_t *h)
{
    return h->port;
}

void lq_httpd_stats(const lq_httpd_t *h, lq_httpd_stats_t *out)
{
    *out = h->st;
}

void lq_httpd_destroy(lq_httpd_t **p)
{
    if (!p || !*p)
        return;
    lq_httpd_t *h = *p;
    while (h->head)
        s_conn_close(h->head);
    lq_loop_unwatch(h->loop, h->fd);
    close(h->fd);
    free(h);
    *p = NULL;
}
