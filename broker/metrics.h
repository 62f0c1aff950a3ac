/* metrics: a minimal HTTP endpoint on the broker's loop that answers
 * GET /metrics with Prometheus text (workers, credit, jobs in flight,
 * results, duplicates, dropped messages, Redis state, per-upstream rate-limit
 * state). One request per connection; anything else gets 404; a client that
 * sends more than 8 KiB or stays silent for 5 s is dropped. */
#ifndef LQ_METRICS_H
#define LQ_METRICS_H

#include "../common/loop.h"
#include "broker.h"
#include "frontend.h"

typedef struct lq_metrics lq_metrics_t;

/* Listens on "HOST:PORT" and renders the state of b (and the drop count
 * of front, which may be NULL). Returns NULL with a message in err. */
lq_metrics_t *lq_metrics_new(lq_loop_t *loop, lq_broker_t *b, const lq_frontend_t *front,
                             const char *hostport, char *err, size_t errlen);
/* Closes the listener and any open connections. Safe on NULL; clears *m. */
void lq_metrics_destroy(lq_metrics_t **m);

#endif
