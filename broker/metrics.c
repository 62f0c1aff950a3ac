/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"

#include "../common/log.h"
#include "../common/util.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LQ_METRICS_MAX_REQ 8192
#define LQ_METRICS_MAX_CONNS 64

typedef struct s_conn {
    struct s_conn *next;
    lq_metrics_t *m;
    int fd;
    char req[LQ_METRICS_MAX_REQ];
    size_t len;
    lq_timer_t timeout;
} s_conn_t;

struct lq_metrics {
    lq_loop_t *loop;
    lq_broker_t *b;
    const lq_frontend_t *front;
    int fd;
    s_conn_t *conns;
    int nconns;
};

static void s_conn_close(s_conn_t *c)
{
    lq_metrics_t *m = c->m;
    lq_loop_unwatch(m->loop, c->fd);
    lq_timer_stop(m->loop, &c->timeout);
    close(c->fd);
    for (s_conn_t **p = &m->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    m->nconns--;
    free(c);
}

static void s_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap *= 2;
        *buf = xrealloc(*buf, *cap);
    }
}

/* Renders the metrics text. Caller frees. */
static char *s_render(lq_metrics_t *m, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *s = xmalloc(cap);
    lq_broker_stats_t st;
    lq_broker_stats(m->b, &st);
    s_append(&s, &len, &cap,
             "# TYPE llmq_workers gauge\nllmq_workers %zu\n"
             "# TYPE llmq_worker_free_credit gauge\nllmq_worker_free_credit %lld\n"
             "# TYPE llmq_jobs_in_flight gauge\nllmq_jobs_in_flight %lld\n"
             "# TYPE llmq_jobs_prefetched gauge\nllmq_jobs_prefetched %lld\n"
             "# TYPE llmq_active_batches gauge\nllmq_active_batches %zu\n"
             "# TYPE llmq_jobs_dispatched_total counter\nllmq_jobs_dispatched_total %llu\n"
             "# TYPE llmq_results_recorded_total counter\nllmq_results_recorded_total %llu\n"
             "# TYPE llmq_duplicate_results_total counter\nllmq_duplicate_results_total %llu\n"
             "# TYPE llmq_redis_up gauge\nllmq_redis_up %d\n"
             "# TYPE llmq_redis_pending_commands gauge\nllmq_redis_pending_commands %d\n"
             "# TYPE llmq_dropped_messages_total counter\n"
             "llmq_dropped_messages_total{socket=\"frontend\"} %llu\n"
             "llmq_dropped_messages_total{socket=\"backend\"} %llu\n",
             st.workers, (long long)st.credit, (long long)st.inflight, (long long)st.prefetched,
             st.batches, (unsigned long long)st.dispatched, (unsigned long long)st.results,
             (unsigned long long)st.duplicates, st.redis_up, st.redis_pending,
             (unsigned long long)(m->front ? lq_frontend_dropped(m->front) : 0),
             (unsigned long long)st.dropped);
    s_append(&s, &len, &cap,
             "# TYPE llmq_upstream_limit_rpm gauge\n# TYPE llmq_upstream_learned_rpm gauge\n"
             "# TYPE llmq_upstream_in_flight gauge\n# TYPE llmq_upstream_responses_total "
             "counter\n");
    lq_upstream_info_t *ups;
    size_t nups = lq_broker_upstreams(m->b, &ups);
    for (size_t i = 0; i < nups; i++) {
        const lq_upstream_info_t *x = &ups[i];
        const char *u = x->name;
        s_append(&s, &len, &cap,
                 "llmq_upstream_limit_rpm{upstream=\"%s\"} %lld\n"
                 "llmq_upstream_learned_rpm{upstream=\"%s\"} %lld\n"
                 "llmq_upstream_in_flight{upstream=\"%s\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"ok\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"429\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"other\"} %lld\n",
                 u, (long long)x->limit_rpm, u, (long long)x->learned_rpm, u,
                 (long long)x->inflight, u, (long long)x->nok, u, (long long)x->n429, u,
                 (long long)x->nerr);
    }
    free(ups);
    *out_len = len;
    return s;
}

static void s_respond(s_conn_t *c)
{
    const char *status = "404 Not Found";
    char *body = NULL;
    size_t blen = 0;
    if (strncmp(c->req, "GET /metrics ", 13) == 0 || strncmp(c->req, "GET /metrics?", 13) == 0) {
        status = "200 OK";
        body = s_render(c->m, &blen);
    } else {
        body = xstrdup("not found\n");
        blen = strlen(body);
    }
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, blen);
    /* Small responses: a blocking-style best effort on a fresh socket is
     * enough; a slow reader loses its metrics, never the broker's time. */
    ssize_t w = send(c->fd, head, (size_t)hl, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w == hl)
        w = send(c->fd, body, blen, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    free(body);
    s_conn_close(c);
}

static void s_on_conn(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)events;
    s_conn_t *c = arg;
    ssize_t n = recv(fd, c->req + c->len, sizeof c->req - 1 - c->len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        s_conn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
        s_respond(c);
    else if (c->len >= sizeof c->req - 1)
        s_conn_close(c);
}

static void s_on_timeout(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_conn_close(arg);
}

static void s_on_accept(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    lq_metrics_t *m = arg;
    for (int i = 0; i < 16; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        if (m->nconns >= LQ_METRICS_MAX_CONNS) {
            close(cfd);
            continue;
        }
        s_conn_t *c = xcalloc(1, sizeof *c);
        c->m = m;
        c->fd = cfd;
        lq_timer_init(&c->timeout, s_on_timeout, c);
        if (lq_loop_watch(loop, cfd, LQ_READABLE, s_on_conn, c) < 0) {
            close(cfd);
            free(c);
            continue;
        }
        lq_timer_start(loop, &c->timeout, 5000);
        c->next = m->conns;
        m->conns = c;
        m->nconns++;
    }
}

lq_metrics_t *lq_metrics_new(lq_loop_t *loop, lq_broker_t *b, const lq_frontend_t *front,
                             const char *hostport, char *err, size_t errlen)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport) {
        snprintf(err, errlen, "--metrics wants HOST:PORT, got '%s'", hostport);
        return NULL;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, colon + 1, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "--metrics %s: %s", hostport, gai_strerror(rc));
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "--metrics %s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return NULL;
    }
    freeaddrinfo(ai);
    lq_metrics_t *m = xcalloc(1, sizeof *m);
    m->loop = loop;
    m->b = b;
    m->front = front;
    m->fd = fd;
    lq_loop_watch(loop, fd, LQ_READABLE, s_on_accept, m);
    return m;
}

void lq_metrics_destroy(lq_metrics_t **p)
{
    if (!p || !*p)
        return;
    lq_metrics_t *m = *p;
    while (m->conns)
        s_conn_close(m->conns);
    lq_loop_unwatch(m->loop, m->fd);
    close(m->fd);
    free(m);
    *p = NULL;
}
