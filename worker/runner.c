/* runner: see runner.h. */
#include "runner.h"

#include "../common/log.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>

struct lq_runner {
    lq_loop_t *loop;
    lq_http_t *http;
    const lq_upstreams_t *ups;
    int64_t default_timeout_ms;
    lq_runner_done_cb cb;
    void *arg;
    /* The last URL joined (almost every job of a batch has the same):
     * upstream, the job's path, the result. */
    const lq_upstream_t *last_up;
    char *last_path, *last_url;
};

lq_runner_t *lq_runner_new(lq_loop_t *loop, lq_http_t *http, const lq_upstreams_t *ups,
                           int64_t default_timeout_ms, lq_runner_done_cb cb, void *arg)
{
    lq_runner_t *r = xcalloc(1, sizeof *r);
    r->loop = loop;
    r->http = http;
    r->ups = ups;
    r->default_timeout_ms = default_timeout_ms;
    r->cb = cb;
    r->arg = arg;
    return r;
}

void lq_runner_destroy(lq_runner_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->last_path);
    free((*p)->last_url);
    free(*p);
    *p = NULL;
}

/* Marks job DONE, releases its request body and reports it. */
static void s_finish(lq_runner_t *r, lq_wjob_t *job)
{
    job->state = LQ_WJOB_DONE;
    job->runner = NULL;
    free(job->body);
    job->body = NULL;
    job->body_len = 0;
    r->cb(job, r->arg);
}

/* Completes job without an HTTP call. */
static void s_fail_local(lq_runner_t *r, lq_wjob_t *job, int outcome, const char *code,
                         const char *message)
{
    lq_outcome_res_clear(&job->res);
    lq_outcome_local(&job->res, outcome, code, message);
    job->status = 0;
    lq_headers_init(&job->hdr);
    job->latency_ms = 0;
    LQ_DEBUG("job %s/%lld: %s: %s", job->batch, (long long)job->index, code, message);
    s_finish(r, job);
}

/* http completion: classifies the response into the job's result. */
static void s_on_done(const lq_http_resp_t *resp, void *arg)
{
    lq_wjob_t *job = arg;
    lq_runner_t *r = job->runner;
    lq_outcome_in_t in = {
        .curl_code = resp->curl_code,
        .curl_detail = resp->curl_error,
        .status = resp->status,
        .body = resp->body,
        .body_len = resp->body_len,
        .too_large = resp->too_large,
    };
    lq_outcome_res_clear(&job->res);
    lq_outcome_classify(&in, &job->res);
    job->status = resp->status;
    job->hdr = *resp->headers;
    job->latency_ms = (int64_t)resp->latency_ms;
    if (job->res.outcome != LQ_OUTCOME_OK)
        LQ_DEBUG("job %s/%lld attempt %lld: %s (%s)", job->batch, (long long)job->index,
                 (long long)job->attempt, job->res.error_code ? job->res.error_code : "?",
                 job->res.error_message ? job->res.error_message : "");
    s_finish(r, job);
}

/* The full URL of path on up (lq_url_join), from the one-entry cache when
 * it is the same as last time. Returns a string the runner owns (valid
 * until the next call), or NULL with err. */
static const char *s_url(lq_runner_t *r, const lq_upstream_t *up, const char *path, char *err,
                         size_t errlen)
{
    if (r->last_url && up == r->last_up && path && strcmp(path, r->last_path) == 0)
        return r->last_url;
    char *url = lq_url_join(up->base_url, path, err, errlen);
    if (!url)
        return NULL;
    free(r->last_path);
    free(r->last_url);
    r->last_up = up;
    r->last_path = xstrdup(path);
    r->last_url = url;
    return url;
}

void lq_runner_start(lq_runner_t *r, lq_wjob_t *job)
{
    job->runner = r;
    const lq_upstream_t *up = lq_upstreams_find(r->ups, job->upstream);
    if (!up) {
        char msg[256];
        snprintf(msg, sizeof msg, "this worker has no upstream named '%.100s'",
                 job->upstream ? job->upstream : "default");
        s_fail_local(r, job, LQ_OUTCOME_FATAL, "unknown_upstream", msg);
        return;
    }
    char err[300];
    const char *url = s_url(r, up, job->url, err, sizeof err);
    if (!url) {
        s_fail_local(r, job, LQ_OUTCOME_FATAL, "invalid_url", err);
        return;
    }
    lq_http_req_t req = {
        .url = url,
        .headers = up->headers,
        .body = job->body,
        .body_len = job->body_len,
        .timeout_ms = (long)(job->timeout_ms > 0 ? job->timeout_ms : r->default_timeout_ms),
    };
    int rc = lq_http_post(r->http, &req, s_on_done, job); /* libcurl copies url */
    if (rc < 0)
        s_fail_local(r, job, LQ_OUTCOME_RETRYABLE, "worker_error",
                     "the worker could not start the HTTP transfer");
}
