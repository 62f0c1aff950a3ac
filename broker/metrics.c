/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"
#include "stats.h"

#include "../common/httpd.h"
#include "../common/log.h"
#include "../common/prom.h"
#include "../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lq_metrics {
    lq_broker_t *b;
    const lq_frontend_t *front;
    lq_httpd_t *httpd;
};

/* Appends the core's gauges and counters (workers, credit, flight,
 * results, Redis connection, dropped messages). */
static void s_render_core(lq_metrics_t *m, lq_prom_buf_t *b)
{
    lq_broker_stats_t st;
    lq_broker_stats(m->b, &st);
    lq_prom_printf(b,
                   "# HELP llmq_workers Workers connected.\n# TYPE llmq_workers gauge\n"
                   "llmq_workers %zu\n"
                   "# HELP llmq_worker_free_credit Free job slots over all workers.\n"
                   "# TYPE llmq_worker_free_credit gauge\nllmq_worker_free_credit %lld\n"
                   "# HELP llmq_jobs_in_flight Jobs sent to workers and not answered.\n"
                   "# TYPE llmq_jobs_in_flight gauge\nllmq_jobs_in_flight %lld\n"
                   "# HELP llmq_jobs_prefetched Jobs leased into the broker's prefetch queues.\n"
                   "# TYPE llmq_jobs_prefetched gauge\nllmq_jobs_prefetched %lld\n"
                   "# HELP llmq_active_batches Batches the dispatcher knows.\n"
                   "# TYPE llmq_active_batches gauge\nllmq_active_batches %zu\n"
                   "# HELP llmq_jobs_dispatched_total Jobs sent to workers.\n"
                   "# TYPE llmq_jobs_dispatched_total counter\nllmq_jobs_dispatched_total %llu\n"
                   "# HELP llmq_results_recorded_total Results written to Redis.\n"
                   "# TYPE llmq_results_recorded_total counter\n"
                   "llmq_results_recorded_total %llu\n"
                   "# HELP llmq_duplicate_results_total Results dropped as duplicates.\n"
                   "# TYPE llmq_duplicate_results_total counter\n"
                   "llmq_duplicate_results_total %llu\n"
                   "# HELP llmq_redis_up 1 when connected to Redis with the scripts loaded.\n"
                   "# TYPE llmq_redis_up gauge\nllmq_redis_up %d\n"
                   "# HELP llmq_redis_pending_commands Redis commands sent, not answered.\n"
                   "# TYPE llmq_redis_pending_commands gauge\nllmq_redis_pending_commands %d\n"
                   "# HELP llmq_dropped_messages_total Malformed or oversized messages dropped.\n"
                   "# TYPE llmq_dropped_messages_total counter\n"
                   "llmq_dropped_messages_total{socket=\"frontend\"} %llu\n"
                   "llmq_dropped_messages_total{socket=\"backend\"} %llu\n",
                   st.workers, (long long)st.credit, (long long)st.inflight,
                   (long long)st.prefetched, st.batches, (unsigned long long)st.dispatched,
                   (unsigned long long)st.results, (unsigned long long)st.duplicates, st.redis_up,
                   st.redis_pending,
                   (unsigned long long)(m->front ? lq_frontend_dropped(m->front) : 0),
                   (unsigned long long)st.dropped);
    lq_prom_printf(
        b,
        "# HELP llmq_redis_memory_used_bytes Redis used_memory.\n"
        "# TYPE llmq_redis_memory_used_bytes gauge\nllmq_redis_memory_used_bytes %lld\n"
        "# HELP llmq_redis_memory_max_bytes Redis maxmemory (0: none).\n"
        "# TYPE llmq_redis_memory_max_bytes gauge\nllmq_redis_memory_max_bytes %lld\n"
        "# HELP llmq_admission_open 1 while new jobs are accepted (Redis under the high water).\n"
        "# TYPE llmq_admission_open gauge\nllmq_admission_open %d\n"
        "# HELP llmq_results_blocked 1 while Redis refuses results (they are held and retried).\n"
        "# TYPE llmq_results_blocked gauge\nllmq_results_blocked %d\n"
        "# HELP llmq_results_held Results held in memory: waiting for the REPORT call in progress, or refused by Redis.\n"
        "# TYPE llmq_results_held gauge\nllmq_results_held %lld\n"
        "# HELP llmq_results_refused_total Result writes Redis refused.\n"
        "# TYPE llmq_results_refused_total counter\nllmq_results_refused_total %llu\n"
        "# HELP llmq_batches_expired_total Batches removed by retention.\n"
        "# TYPE llmq_batches_expired_total counter\nllmq_batches_expired_total %llu\n",
        (long long)st.redis.used_bytes, (long long)st.redis.max_bytes, st.redis.accepting,
        st.redis.results_blocked, (long long)st.redis.results_held,
        (unsigned long long)st.results_refused, (unsigned long long)st.batches_expired);
    lq_prom_printf(
        b,
        "# HELP llmq_cache_hits_total Jobs answered from the response cache (fleet-wide).\n"
        "# TYPE llmq_cache_hits_total counter\nllmq_cache_hits_total %lld\n"
        "# HELP llmq_cache_misses_total Jobs of cache batches not found in the cache.\n"
        "# TYPE llmq_cache_misses_total counter\nllmq_cache_misses_total %lld\n"
        "# HELP llmq_cache_stores_total Responses stored in the cache.\n"
        "# TYPE llmq_cache_stores_total counter\nllmq_cache_stores_total %lld\n"
        "# HELP llmq_cache_tokens_saved_total Prompt+completion tokens of cache hits.\n"
        "# TYPE llmq_cache_tokens_saved_total counter\nllmq_cache_tokens_saved_total %lld\n",
        (long long)st.cache_hits, (long long)st.cache_misses, (long long)st.cache_stores,
        (long long)st.cache_tokens_saved);
}

/* Appends one series "name{upstream="u"} v". */
static void s_up_series(lq_prom_buf_t *b, const char *name, const char *u, long long v)
{
    lq_prom_printf(b, "%s{upstream=\"", name);
    lq_prom_label(b, u);
    lq_prom_printf(b, "\"} %lld\n", v);
}

/* Appends the pending jobs (the autoscaling signal): all, per upstream, and
 * per batch for the first 50 active batches. Pending = waiting in Redis
 * plus leased into the prefetch queues (not yet on a worker). */
static void s_render_pending(lq_metrics_t *m, lq_prom_buf_t *b)
{
    const lq_bstats_t *bs = lq_broker_observed(m->b);
    const lq_bstats_batch_t *bt;
    size_t n = lq_bstats_batches(bs, &bt);
    const char *names[64];
    long long per[64], total = 0;
    size_t nup = 0;
    lq_prom_header(b, "llmq_batch_jobs", "gauge",
                   "Jobs of an active batch by state (first 50 active batches).");
    for (size_t i = 0; i < n; i++) {
        long long queued = (long long)lq_broker_prefetched(m->b, bt[i].id);
        long long pending = bt[i].pending + queued;
        total += pending;
        size_t k = 0;
        while (k < nup && strcmp(names[k], bt[i].upstream) != 0)
            k++;
        if (k == nup && nup < 64) {
            names[nup] = bt[i].upstream;
            per[nup++] = 0;
        }
        if (k < nup)
            per[k] += pending;
        if (i >= 50)
            continue;
        const char *state[] = {"total", "pending", "in_flight", "completed", "failed"};
        long long v[] = {bt[i].total, pending, bt[i].leased - queued, bt[i].completed,
                         bt[i].failed};
        for (int s = 0; s < 5; s++) {
            lq_prom_printf(b, "llmq_batch_jobs{batch=\"");
            lq_prom_label(b, bt[i].id);
            lq_prom_printf(b, "\",name=\"");
            lq_prom_label(b, bt[i].name);
            lq_prom_printf(b, "\",upstream=\"");
            lq_prom_label(b, bt[i].upstream);
            lq_prom_printf(b, "\",state=\"%s\"} %lld\n", state[s], v[s] > 0 ? v[s] : 0);
        }
    }
    lq_prom_header(b, "llmq_jobs_pending", "gauge",
                   "Jobs waiting for a worker, all batches (the autoscaling signal).");
    lq_prom_printf(b, "llmq_jobs_pending %lld\n", total);
    lq_prom_header(b, "llmq_upstream_jobs_pending", "gauge", "Jobs waiting, by upstream.");
    for (size_t k = 0; k < nup; k++)
        s_up_series(b, "llmq_upstream_jobs_pending", names[k], per[k]);
}

/* Appends the per-worker credit and flight as the broker sees them. */
static void s_render_workers(lq_metrics_t *m, lq_prom_buf_t *b)
{
    lq_worker_info_t *ws;
    size_t n = lq_broker_workers(m->b, &ws);
    const char *fam[] = {"llmq_broker_worker_credit", "llmq_broker_worker_in_flight"};
    const char *help[] = {"Free job slots a worker offered.", "Jobs a worker holds."};
    for (int f = 0; f < 2; f++) {
        lq_prom_header(b, fam[f], "gauge", help[f]);
        for (size_t i = 0; i < n; i++) {
            lq_prom_printf(b, "%s{worker=\"", fam[f]);
            lq_prom_label(b, ws[i].id);
            lq_prom_printf(b, "\"} %lld\n", (long long)(f == 0 ? ws[i].credit : ws[i].inflight));
        }
    }
    free(ws);
}

/* Appends the rate-limit state of every upstream. */
static void s_render_upstreams(lq_metrics_t *m, lq_prom_buf_t *b)
{
    lq_upstream_info_t *ups;
    size_t n = lq_broker_upstreams(m->b, &ups);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"llmq_upstream_limit_rpm", "gauge", "Requests/min enforced now (0: unlimited)."},
        {"llmq_upstream_learned_rpm", "gauge", "Requests/min learned from the provider."},
        {"llmq_upstream_ok_rpm", "gauge", "Successes over the last second, per minute (pace)."},
        {"llmq_upstream_in_flight", "gauge", "Jobs of the upstream on workers."},
        {"llmq_upstream_window", "gauge", "Jobs the limiter admits in flight at once."},
        {"llmq_upstream_paused_seconds", "gauge", "Retry-After pause left (admission closed)."},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        lq_prom_header(b, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < n; i++) {
            const lq_upstream_info_t *x = &ups[i];
            long long v[] = {x->limit_rpm, x->learned_rpm, x->ok_rpm, x->inflight, x->window};
            if (f < 5) {
                s_up_series(b, fam[f].name, x->name, v[f]);
                continue;
            }
            lq_prom_printf(b, "llmq_upstream_paused_seconds{upstream=\"");
            lq_prom_label(b, x->name);
            lq_prom_printf(b, "\"} %.3f\n", (double)x->paused_ms / 1000.0);
        }
    }
    lq_prom_header(b, "llmq_upstream_responses_total", "counter",
                   "Results by upstream: ok, 429, other.");
    for (size_t i = 0; i < n; i++) {
        const char *cls[] = {"ok", "429", "other"};
        long long v[] = {ups[i].nok, ups[i].n429, ups[i].nerr};
        for (int c = 0; c < 3; c++) {
            lq_prom_printf(b, "llmq_upstream_responses_total{upstream=\"");
            lq_prom_label(b, ups[i].name);
            lq_prom_printf(b, "\",class=\"%s\"} %lld\n", cls[c], v[c]);
        }
    }
    lq_prom_header(b, "llmq_upstream_pace_rpm", "gauge",
                   "Requests/min in force (source: configured, headers, learned; observed = no "
                   "limit known, the rate seen).");
    for (size_t i = 0; i < n; i++) {
        lq_prom_printf(b, "llmq_upstream_pace_rpm{upstream=\"");
        lq_prom_label(b, ups[i].name);
        lq_prom_printf(b, "\",source=\"%s\"} %lld\n",
                       ups[i].pace_source ? ups[i].pace_source : "observed",
                       (long long)ups[i].pace_rpm);
    }
    lq_prom_header(b, "llmq_upstream_pace_tpm", "gauge", "Tokens/min in force (0: none).");
    for (size_t i = 0; i < n; i++)
        s_up_series(b, "llmq_upstream_pace_tpm", ups[i].name, (long long)ups[i].pace_tpm);
    free(ups);
}

/* Renders the metrics text. Caller frees. */
static char *s_render(lq_metrics_t *m, size_t *out_len)
{
    lq_prom_buf_t b = {0};
    s_render_core(m, &b);
    s_render_pending(m, &b);
    s_render_workers(m, &b);
    s_render_upstreams(m, &b);
    lq_bstats_render(lq_broker_observed(m->b), &b);
    *out_len = b.len;
    return b.data;
}

/* The HTTP handler: GET /metrics renders the broker's state; any other
 * path is left as 404. */
static void s_handle(const lq_httpd_req_t *req, lq_httpd_resp_t *resp, void *arg)
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
