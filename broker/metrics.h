/* metrics: the broker's Prometheus endpoint: GET /metrics answers with
 * Prometheus text (workers, credit, jobs in flight, results, duplicates,
 * dropped messages, Redis state, per-upstream rate-limit state); any other
 * path gets 404. The HTTP side -- bounded connections, a deadline per
 * connection, a request-size cap, loopback unless told otherwise -- is
 * common/httpd.h; this module owns only the rendering. */
#ifndef LQ_METRICS_H
#define LQ_METRICS_H

#include "../common/loop.h"
#include "broker.h"
#include "frontend.h"

typedef struct lq_metrics lq_metrics_t;

/* Listens on "HOST:PORT" ("PORT" alone: 127.0.0.1; "*:PORT": every
 * interface) and renders the state of b (and the drop count of front, which
 * may be NULL). Returns NULL with a message in err. */
lq_metrics_t *lq_metrics_new(lq_loop_t *loop, lq_broker_t *b, const lq_frontend_t *front,
                             const char *hostport, char *err, size_t errlen);
/* Closes the listener and any open connections. Safe on NULL; clears *m. */
void lq_metrics_destroy(lq_metrics_t **m);

#endif
