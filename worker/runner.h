/* runner: executes one job attempt: picks the upstream, builds the URL,
 * POSTs the body through the http engine and turns the response into the
 * job's result (outcome.h).
 *
 * The runner borrows the loop, the http engine and the upstream table (all
 * must outlive it). It does not own jobs: the caller keeps the record alive
 * until the done callback, which receives it DONE (result filled, request
 * body released). */
#ifndef LQ_WORKER_RUNNER_H
#define LQ_WORKER_RUNNER_H

#include "../common/loop.h"
#include "http.h"
#include "jobs.h"
#include "upstream.h"

#include <stdint.h>

typedef struct lq_runner lq_runner_t;

/* Called once per started job, with the job DONE. */
typedef void (*lq_runner_done_cb)(lq_wjob_t *job, void *arg);

/* Creates a runner. default_timeout_ms applies to jobs without one.
 * Can't fail. */
lq_runner_t *lq_runner_new(lq_loop_t *loop, lq_http_t *http, const lq_upstreams_t *ups,
                           int64_t default_timeout_ms, lq_runner_done_cb cb, void *arg);
/* Frees the runner (not the jobs). Safe on NULL; clears *r. */
void lq_runner_destroy(lq_runner_t **r);

/* Starts job (RUNNING). Failures that need no HTTP call (unknown upstream,
 * bad url, libcurl refusing the transfer) complete the job at once: the
 * done callback then runs before this returns. Can't fail. */
void lq_runner_start(lq_runner_t *r, lq_wjob_t *job);

#endif
