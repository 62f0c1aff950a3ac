/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"

#include "../common/httpd.h"
#include "../common/log.h"
#include "../common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lq_metrics {
    lq_broker_t *b;
    lq_httpd_t *httpd;
};

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
static char *s_render(lq_broker_t *b, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *s = xmalloc(cap);
    int64_t credit = 0, inflight = 0;
    size_t pos = 0;
    void *v;
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v)) {
        credit += ((lq_worker_t *)v)->credit;
        inflight += ((lq_worker_t *)v)->inflight;
    }
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
             lq_map_len(b->workers), (long long)credit, (long long)inflight,
             (long long)b->queued_total, lq_map_len(b->batches),
             (unsigned long long)b->stat_dispatched, (unsigned long long)b->stat_results,
             (unsigned long long)b->stat_dups, lq_redis_up(b->redis), lq_redis_pending(b->redis),
             (unsigned long long)lq_zsock_dropped(b->front),
             (unsigned long long)lq_zsock_dropped(b->back));
    s_append(&s, &len, &cap,
             "# TYPE llmq_upstream_limit_rpm gauge\n# TYPE llmq_upstream_learned_rpm gauge\n"
             "# TYPE llmq_upstream_in_flight gauge\n# TYPE llmq_upstream_responses_total "
             "counter\n");
    pos = 0;
    const void *key;
    uint64_t now = lq_loop_now(b->loop);
    while (lq_map_next(b->limiters, &pos, &key, NULL, &v)) {
        lq_rl_stats_t st;
        lq_rl_stats(v, now, &st);
        const char *u = key;
        s_append(&s, &len, &cap,
                 "llmq_upstream_limit_rpm{upstream=\"%s\"} %.0f\n"
                 "llmq_upstream_learned_rpm{upstream=\"%s\"} %.0f\n"
                 "llmq_upstream_in_flight{upstream=\"%s\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"ok\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"429\"} %lld\n"
                 "llmq_upstream_responses_total{upstream=\"%s\",class=\"other\"} %lld\n",
                 u, st.rate_limit * 60, u, st.learned_rps * 60, u, (long long)st.inflight, u,
                 (long long)st.nok, u, (long long)st.n429, u, (long long)st.nerr);
    }
    *out_len = len;
    return s;
}

/* The HTTP handler: GET /metrics renders the broker's state; any other
 * path is left as 404. */
static void s_handle(const lq_http_req_t *req, lq_http_resp_t *resp, void *arg)
{
    lq_metrics_t *m = arg;
    if (strcmp(req->path, "/metrics") != 0)
        return;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    resp->body = s_render(m->b, &resp->body_len);
}

lq_metrics_t *lq_metrics_new(lq_broker_t *b, const char *hostport, char *err, size_t errlen)
{
    lq_metrics_t *m = xcalloc(1, sizeof *m);
    m->b = b;
    char e[256];
    m->httpd = lq_httpd_new(b->loop, hostport, NULL, s_handle, m, e, sizeof e);
    if (!m->httpd) {
        snprintf(err, errlen, "--metrics %s", e);
        free(m);
        return NULL;
    }
    return m;
}

void lq_metrics_destroy(lq_metrics_t **p)
{
    if (!p || !*p)
        return;
    lq_httpd_destroy(&(*p)->httpd);
    free(*p);
    *p = NULL;
}
