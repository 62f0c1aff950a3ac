/* metrics: the worker's own Prometheus endpoint (`--metrics HOST:PORT`), so
 * a pod's health is visible without the broker: connection to the broker,
 * jobs in flight and held, credit, outcomes, and per upstream the responses
 * by status, the request latency histogram and the tokens used.
 *
 * Owns its listening socket, its client connections and the per-upstream
 * counters. Reads the session and the http engine (borrowed, set with
 * lq_wmetrics_attach) only while answering a scrape. A scrape is answered
 * in one non-blocking send from the loop; the listener allows 16 clients,
 * 4 KiB of request and 5 s per connection (a client over any of these is
 * dropped), so it never stalls the jobs. */
#ifndef LQ_WORKER_METRICS_H
#define LQ_WORKER_METRICS_H

#include "../common/loop.h"
#include "http.h"
#include "jobs.h"
#include "session.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_wmetrics lq_wmetrics_t;

/* Listens on "HOST:PORT" ("*:PORT" or ":PORT" for all addresses) and
 * serves GET /metrics on loop. worker_id and concurrency are copied.
 * Returns NULL with a message in err. */
lq_wmetrics_t *lq_wmetrics_new(lq_loop_t *loop, const char *hostport, const char *worker_id,
                               int64_t concurrency, char *err, size_t errlen);

/* Points the scrape at the live session and http engine (borrowed; either
 * may be NULL). Safe on a NULL m. */
void lq_wmetrics_attach(lq_wmetrics_t *m, lq_session_t *s, lq_http_t *h);

/* Counts one finished attempt (its upstream, status or error code, latency
 * and tokens). Safe on a NULL m; can't fail. */
void lq_wmetrics_observe(lq_wmetrics_t *m, const lq_wjob_t *job);

/* Renders the metrics text into a new string (caller frees). Can't fail. */
char *lq_wmetrics_render(lq_wmetrics_t *m, size_t *len);

/* Closes the listener and its connections. Safe on NULL; clears *m. */
void lq_wmetrics_destroy(lq_wmetrics_t **m);

#endif
