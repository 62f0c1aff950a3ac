/* frontend: the client port of llmq-broker.
 *
 * Owns the client ROUTER socket and answers client requests (open, chunk,
 * close, status, results, cancel, list, workers), mostly with one Lua
 * script call each on the core's Redis connection. It reaches the core only
 * through broker.h (batch open, kick, cancel, prefetch counts, worker and
 * upstream views); the core never calls it. A request that cannot be served
 * (Redis down, unknown batch, bad arguments) gets an ERROR reply with a code
 * and a message, and changes nothing. */
#ifndef LQ_FRONTEND_H
#define LQ_FRONTEND_H

#include "../common/loop.h"
#include "broker.h"

#include <stdint.h>

typedef struct lq_frontend lq_frontend_t;

typedef struct {
    const char *endpoint;     /* to bind, e.g. tcp://0.0.0.0:5555 */
    const char *curve_secret; /* Z85 secret key: CURVE on, NULL = off */
} lq_frontend_opts_t;

/* Creates and binds the client port on a ZeroMQ context the caller owns.
 * Returns NULL with a message in err. */
lq_frontend_t *lq_frontend_new(lq_loop_t *loop, void *zctx, lq_broker_t *b,
                               const lq_frontend_opts_t *opts, char *err, size_t errlen);
/* Closes the port. Safe on NULL; clears *f. */
void lq_frontend_destroy(lq_frontend_t **f);

/* Malformed messages dropped on the client port. */
uint64_t lq_frontend_dropped(const lq_frontend_t *f);

#endif
