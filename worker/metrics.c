/* metrics: see metrics.h. Keeps the counters and renders them; the HTTP
 * side is common/httpd (the broker's /metrics uses the same). */
#define _GNU_SOURCE
#include "metrics.h"

#include "../common/httpd.h"
#include "../common/log.h"
#include "../common/prom.h"
#include "../common/util.h"
#include "../common/version.h"
#include "../proto/msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_UPSTREAMS 64 /* distinct upstream labels; later ones count as "other" */
#define S_MAX_CODES 32     /* distinct status/error codes per upstream */

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

struct lq_wmetrics {
    lq_httpd_t *httpd;
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

/* ---- listener (common/httpd: bounded, deadlines, loopback by default) ---- */

/* GET /metrics renders the counters; any other path is left as 404. */
static void s_handle(const lq_httpd_req_t *req, lq_httpd_resp_t *resp, void *arg)
{
    if (strcmp(req->path, "/metrics") != 0)
        return;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    resp->body = lq_wmetrics_render(arg, &resp->body_len);
}

lq_wmetrics_t *lq_wmetrics_new(lq_loop_t *loop, const char *hostport, const char *worker_id,
                               int64_t concurrency, char *err, size_t errlen)
{
    lq_wmetrics_t *m = xcalloc(1, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", worker_id);
    m->concurrency = concurrency;
    m->ups = xcalloc(S_MAX_UPSTREAMS, sizeof *m->ups);
    char e[256];
    m->httpd = lq_httpd_new(loop, hostport, NULL, s_handle, m, e, sizeof e);
    if (!m->httpd) {
        snprintf(err, errlen, "--metrics %s", e);
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
    lq_httpd_destroy(&(*p)->httpd);
    free((*p)->ups);
    free(*p);
    *p = NULL;
}
