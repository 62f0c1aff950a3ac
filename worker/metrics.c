/* metrics: see metrics.h. The first half keeps the counters and renders
 * them; the second half is the small HTTP listener that serves them. */
#define _GNU_SOURCE
#include "metrics.h"

#include "../common/log.h"
#include "../common/prom.h"
#include "../common/util.h"
#include "../common/version.h"
#include "../proto/msg.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_MAX_UPSTREAMS 64 /* distinct upstream labels; later ones count as "other" */
#define S_MAX_CODES 32     /* distinct status/error codes per upstream */
#define S_MAX_CONNS 16
#define S_MAX_REQ 4096
#define S_CONN_MS 5000

typedef struct {
    char code[32];
    uint64_t n;
} s_code_t;

typedef struct {
    char name[LQ_MAX_ID + 1];
    lq_prom_hist_t latency;
    uint64_t prompt_tokens, completion_tokens;
    s_code_t codes[S_MAX_CODES];
    size_t ncodes;
} s_upstream_t;

typedef struct s_conn {
    struct s_conn *next;
    lq_wmetrics_t *m;
    int fd;
    char req[S_MAX_REQ];
    size_t len;
    lq_timer_t deadline;
} s_conn_t;

struct lq_wmetrics {
    lq_loop_t *loop;
    int fd;
    s_conn_t *conns;
    int nconns;
    char id[LQ_MAX_ID + 1];
    int64_t concurrency;
    lq_session_t *session;
    lq_http_t *http;
    s_upstream_t *ups;
    size_t nups;
};

/* ---- counters ---------------------------------------------------------- */

/* Finds or adds the record of upstream name (the last slot collects the
 * overflow as "other"). Can't fail. */
static s_upstream_t *s_upstream(lq_wmetrics_t *m, const char *name)
{
    for (size_t i = 0; i < m->nups; i++)
        if (strcmp(m->ups[i].name, name) == 0)
            return &m->ups[i];
    if (m->nups == S_MAX_UPSTREAMS)
        return &m->ups[S_MAX_UPSTREAMS - 1];
    s_upstream_t *u = &m->ups[m->nups++];
    snprintf(u->name, sizeof u->name, "%s", m->nups == S_MAX_UPSTREAMS ? "other" : name);
    return u;
}

/* Counts one response code on u (overflow into "other"). Can't fail. */
static void s_count_code(s_upstream_t *u, const char *code)
{
    for (size_t i = 0; i < u->ncodes; i++) {
        if (strcmp(u->codes[i].code, code) == 0) {
            u->codes[i].n++;
            return;
        }
    }
    s_code_t *c = u->ncodes < S_MAX_CODES ? &u->codes[u->ncodes++] : &u->codes[S_MAX_CODES - 1];
    if (c->n == 0)
        snprintf(c->code, sizeof c->code, "%s", u->ncodes == S_MAX_CODES ? "other" : code);
    c->n++;
}

void lq_wmetrics_attach(lq_wmetrics_t *m, lq_session_t *s, lq_http_t *h)
{
    if (!m)
        return;
    m->session = s;
    m->http = h;
}

void lq_wmetrics_observe(lq_wmetrics_t *m, const lq_wjob_t *job)
{
    if (!m)
        return;
    s_upstream_t *u = s_upstream(m, job->upstream ? job->upstream : "default");
    char code[32];
    if (job->status > 0)
        snprintf(code, sizeof code, "%lld", (long long)job->status);
    else
        snprintf(code, sizeof code, "%s", job->res.error_code ? job->res.error_code : "error");
    s_count_code(u, code);
    if (job->status > 0 || (job->res.error_code && strcmp(job->res.error_code, "timeout") == 0))
        lq_prom_hist_observe(&u->latency, (double)job->latency_ms / 1000.0);
    if (job->res.prompt_tokens > 0)
        u->prompt_tokens += (uint64_t)job->res.prompt_tokens;
    if (job->res.completion_tokens > 0)
        u->completion_tokens += (uint64_t)job->res.completion_tokens;
}

/* Renders the gauges and counters of the session. Can't fail. */
static void s_render_session(lq_wmetrics_t *m, lq_prom_buf_t *b)
{
    lq_session_stats_t st = {0};
    if (m->session)
        lq_session_stats(m->session, &st);
    lq_prom_header(b, "llmq_worker_info", "gauge", "Worker identity and version (always 1).");
    lq_prom_printf(b, "llmq_worker_info{worker=\"");
    lq_prom_label(b, m->id);
    lq_prom_printf(b, "\",version=\"");
    lq_prom_label(b, lq_version());
    lq_prom_printf(b, "\"} 1\n");
    lq_prom_header(b, "llmq_worker_broker_connected", "gauge",
                   "1 when the broker was heard from since the last (re)connect.");
    lq_prom_printf(b, "llmq_worker_broker_connected %d\n", st.connected ? 1 : 0);
    lq_prom_header(b, "llmq_worker_draining", "gauge", "1 while draining after SIGTERM.");
    lq_prom_printf(b, "llmq_worker_draining %d\n", st.draining ? 1 : 0);
    lq_prom_header(b, "llmq_worker_concurrency", "gauge", "Configured --concurrency.");
    lq_prom_printf(b, "llmq_worker_concurrency %lld\n", (long long)m->concurrency);
    lq_prom_header(b, "llmq_worker_jobs_in_flight", "gauge", "HTTP requests running now.");
    lq_prom_printf(b, "llmq_worker_jobs_in_flight %lld\n", (long long)st.inflight);
    lq_prom_header(b, "llmq_worker_results_unacked", "gauge",
                   "Results sent to the broker and not yet acknowledged.");
    lq_prom_printf(b, "llmq_worker_results_unacked %lld\n", (long long)st.unacked);
    lq_prom_header(b, "llmq_worker_credit", "gauge", "Job slots offered to the broker, unused.");
    lq_prom_printf(b, "llmq_worker_credit %lld\n", (long long)st.credit_out);
    lq_prom_header(b, "llmq_worker_jobs_total", "counter", "Finished attempts by outcome.");
    lq_prom_printf(b,
                   "llmq_worker_jobs_total{outcome=\"ok\"} %llu\n"
                   "llmq_worker_jobs_total{outcome=\"retryable\"} %llu\n"
                   "llmq_worker_jobs_total{outcome=\"fatal\"} %llu\n",
                   (unsigned long long)st.ok, (unsigned long long)st.retryable,
                   (unsigned long long)st.fatal);
    lq_prom_header(b, "llmq_worker_duplicate_jobs_total", "counter",
                   "Jobs the broker sent again while this worker held them.");
    lq_prom_printf(b, "llmq_worker_duplicate_jobs_total %llu\n", (unsigned long long)st.duplicates);
    lq_prom_header(b, "llmq_worker_reconnects_total", "counter", "Reconnections to the broker.");
    lq_prom_printf(b, "llmq_worker_reconnects_total %llu\n", (unsigned long long)st.reconnects);
    lq_prom_header(b, "llmq_worker_dropped_messages_total", "counter",
                   "Malformed or unexpected broker messages dropped.");
    lq_prom_printf(b, "llmq_worker_dropped_messages_total %llu\n",
                   (unsigned long long)st.dropped_msgs);
    lq_prom_header(b, "llmq_worker_http_connections_total", "counter",
                   "Connections opened to upstreams.");
    lq_prom_printf(b, "llmq_worker_http_connections_total %llu\n",
                   (unsigned long long)(m->http ? lq_http_connections(m->http) : 0));
}

/* Renders the per-upstream families. Can't fail. */
static void s_render_upstreams(lq_wmetrics_t *m, lq_prom_buf_t *b)
{
    lq_prom_buf_t lbl = {0};
    lq_prom_header(b, "llmq_worker_upstream_responses_total", "counter",
                   "Attempts by upstream and HTTP status (or error code when there was none).");
    for (size_t i = 0; i < m->nups; i++) {
        for (size_t k = 0; k < m->ups[i].ncodes; k++) {
            lq_prom_printf(b, "llmq_worker_upstream_responses_total{upstream=\"");
            lq_prom_label(b, m->ups[i].name);
            lq_prom_printf(b, "\",code=\"%s\"} %llu\n", m->ups[i].codes[k].code,
                           (unsigned long long)m->ups[i].codes[k].n);
        }
    }
    lq_prom_header(b, "llmq_worker_upstream_tokens_total", "counter",
                   "Tokens reported in responses' usage, by upstream and kind.");
    for (size_t i = 0; i < m->nups; i++) {
        lq_prom_printf(b, "llmq_worker_upstream_tokens_total{upstream=\"");
        lq_prom_label(b, m->ups[i].name);
        lq_prom_printf(b, "\",kind=\"prompt\"} %llu\n",
                       (unsigned long long)m->ups[i].prompt_tokens);
        lq_prom_printf(b, "llmq_worker_upstream_tokens_total{upstream=\"");
        lq_prom_label(b, m->ups[i].name);
        lq_prom_printf(b, "\",kind=\"completion\"} %llu\n",
                       (unsigned long long)m->ups[i].completion_tokens);
    }
    lq_prom_header(b, "llmq_worker_upstream_request_duration_seconds", "histogram",
                   "Duration of one HTTP attempt (answered or timed out), by upstream.");
    for (size_t i = 0; i < m->nups; i++) {
        lbl.len = 0;
        lq_prom_printf(&lbl, "upstream=\"");
        lq_prom_label(&lbl, m->ups[i].name);
        lq_prom_printf(&lbl, "\"");
        lq_prom_hist_write(b, "llmq_worker_upstream_request_duration_seconds", lbl.data,
                           &m->ups[i].latency);
    }
    lq_prom_buf_clear(&lbl);
}

char *lq_wmetrics_render(lq_wmetrics_t *m, size_t *len)
{
    lq_prom_buf_t b = {0};
    s_render_session(m, &b);
    s_render_upstreams(m, &b);
    *len = b.len;
    return b.data;
}

/* ---- listener ---------------------------------------------------------- */

/* Closes one client connection and unlinks it. Can't fail. */
static void s_conn_close(s_conn_t *c)
{
    lq_wmetrics_t *m = c->m;
    lq_loop_unwatch(m->loop, c->fd);
    lq_timer_stop(m->loop, &c->deadline);
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

/* Answers the complete request in c and closes it. A client that cannot
 * take the answer in one non-blocking send loses it. */
static void s_respond(s_conn_t *c)
{
    int ok = strncmp(c->req, "GET /metrics ", 13) == 0 || strncmp(c->req, "GET /metrics?", 13) == 0;
    size_t blen = 0;
    char *body = ok ? lq_wmetrics_render(c->m, &blen) : xstrdup("not found\n");
    if (!ok)
        blen = strlen(body);
    char *msg = xasprintf("HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          ok ? "200 OK" : "404 Not Found", blen, body);
    ssize_t w = send(c->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    free(msg);
    free(body);
    s_conn_close(c);
}

/* Reads request bytes; answers once the header is complete. */
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

/* A connection's deadline passed: drop it. */
static void s_on_deadline(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_conn_close(arg);
}

/* Accepts up to 16 pending connections per wake; over the cap they are
 * closed at once. */
static void s_on_accept(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    lq_wmetrics_t *m = arg;
    for (int i = 0; i < 16; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        if (m->nconns >= S_MAX_CONNS) {
            close(cfd);
            continue;
        }
        s_conn_t *c = xcalloc(1, sizeof *c);
        c->m = m;
        c->fd = cfd;
        lq_timer_init(&c->deadline, s_on_deadline, c);
        if (lq_loop_watch(loop, cfd, LQ_READABLE, s_on_conn, c) < 0) {
            close(cfd);
            free(c);
            continue;
        }
        lq_timer_start(loop, &c->deadline, S_CONN_MS);
        c->next = m->conns;
        m->conns = c;
        m->nconns++;
    }
}

/* Binds and listens on hostport. Returns the fd or -1 with err set. */
static int s_listen(const char *hostport, char *err, size_t errlen)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || !colon[1]) {
        snprintf(err, errlen, "--metrics wants HOST:PORT, got '%s'", hostport);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int any = host[0] == '\0' || strcmp(host, "*") == 0;
    int rc = getaddrinfo(any ? NULL : host, colon + 1, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "--metrics %s: %s", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "--metrics %s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

lq_wmetrics_t *lq_wmetrics_new(lq_loop_t *loop, const char *hostport, const char *worker_id,
                               int64_t concurrency, char *err, size_t errlen)
{
    int fd = s_listen(hostport, err, errlen);
    if (fd < 0)
        return NULL;
    lq_wmetrics_t *m = xcalloc(1, sizeof *m);
    m->loop = loop;
    m->fd = fd;
    snprintf(m->id, sizeof m->id, "%s", worker_id);
    m->concurrency = concurrency;
    m->ups = xcalloc(S_MAX_UPSTREAMS, sizeof *m->ups);
    if (lq_loop_watch(loop, fd, LQ_READABLE, s_on_accept, m) < 0) {
        snprintf(err, errlen, "--metrics %s: cannot watch the socket", hostport);
        close(fd);
        free(m->ups);
        free(m);
        return NULL;
    }
    return m;
}

void lq_wmetrics_destroy(lq_wmetrics_t **p)
{
    if (!p || !*p)
        return;
    lq_wmetrics_t *m = *p;
    while (m->conns)
        s_conn_close(m->conns);
    lq_loop_unwatch(m->loop, m->fd);
    close(m->fd);
    free(m->ups);
    free(m);
    *p = NULL;
}
