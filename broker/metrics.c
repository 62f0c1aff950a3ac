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
    const lq_frontend_t *front;
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
             "# TYPE llmq_redis_memory_used_bytes gauge\nllmq_redis_memory_used_bytes %lld\n"
             "# TYPE llmq_redis_memory_max_bytes gauge\nllmq_redis_memory_max_bytes %lld\n"
             "# TYPE llmq_admission_open gauge\nllmq_admission_open %d\n"
             "# TYPE llmq_results_blocked gauge\nllmq_results_blocked %d\n"
             "# TYPE llmq_results_held gauge\nllmq_results_held %lld\n"
             "# TYPE llmq_results_refused_total counter\nllmq_results_refused_total %llu\n"
             "# TYPE llmq_batches_expired_total counter\nllmq_batches_expired_total %llu\n"
             "# TYPE llmq_cache_hits_total counter\nllmq_cache_hits_total %lld\n"
             "# TYPE llmq_cache_misses_total counter\nllmq_cache_misses_total %lld\n"
             "# TYPE llmq_cache_stores_total counter\nllmq_cache_stores_total %lld\n"
             "# TYPE llmq_cache_tokens_saved_total counter\nllmq_cache_tokens_saved_total %lld\n",
             (long long)st.redis.used_bytes, (long long)st.redis.max_bytes, st.redis.accepting,
             st.redis.results_blocked, (long long)st.redis.results_held,
             (unsigned long long)st.results_refused, (unsigned long long)st.batches_expired,
             (long long)st.cache_hits, (long long)st.cache_misses, (long long)st.cache_stores,
             (long long)st.cache_tokens_saved);
    s_append(&s, &len, &cap,
             "# TYPE llmq_upstream_limit_rpm gauge\n# TYPE llmq_upstream_learned_rpm gauge\n"
             "# TYPE llmq_upstream_in_flight gauge\n# TYPE llmq_upstream_responses_total "
             "counter\n# HELP llmq_upstream_pace_rpm requests/min in force (source: configured, "
             "headers, learned; observed = no limit known, the rate seen)\n"
             "# TYPE llmq_upstream_pace_rpm gauge\n# TYPE llmq_upstream_pace_tpm gauge\n");
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
        s_append(&s, &len, &cap,
                 "llmq_upstream_pace_rpm{upstream=\"%s\",source=\"%s\"} %lld\n"
                 "llmq_upstream_pace_tpm{upstream=\"%s\"} %lld\n",
                 u, x->pace_source ? x->pace_source : "observed", (long long)x->pace_rpm, u,
                 (long long)x->pace_tpm);
    }
    free(ups);
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
    resp->body = s_render(m, &resp->body_len);
}

lq_metrics_t *lq_metrics_new(lq_loop_t *loop, lq_broker_t *b, const lq_frontend_t *front,
                             const char *hostport, char *err, size_t errlen)
{
    lq_metrics_t *m = xcalloc(1, sizeof *m);
    m->b = b;
    m->front = front;
    char e[256];
    m->httpd = lq_httpd_new(loop, hostport, NULL, s_handle, m, e, sizeof e);
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
