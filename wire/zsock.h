/* zsock: an llmq message socket on the event loop.
 *
 * Wraps one ZeroMQ ROUTER or DEALER socket: frames every outgoing lq_msg_t
 * as ["LLMQ1", cmd, msgpack body] (after the peer identity on a ROUTER) and
 * decodes incoming ones strictly. Malformed or oversized messages are
 * dropped and counted, never delivered. ZMQ_FD is edge-triggered, so the
 * socket is drained on fd events and again from a 0 ms timer armed after
 * every send (a send may consume the edge) and whenever messages remain; a
 * drain reads at most LQ_ZSOCK_BATCH messages. The zsock owns the ZeroMQ socket; the caller owns the
 * context. */
#ifndef LQ_ZSOCK_H
#define LQ_ZSOCK_H

#include "../common/loop.h"
#include "../proto/msg.h"

#include <stddef.h>
#include <stdint.h>

#define LQ_ZSOCK_BATCH 512
#define LQ_MAX_IDENT 255

typedef struct lq_zsock lq_zsock_t;

/* Called once per valid message. ident is the peer identity on a ROUTER
 * (ident_len 0 on a DEALER). m is borrowed: destroyed after the callback
 * returns (move pointers out and NULL them if you want to keep them). The
 * callback may send; it must not destroy s. */
typedef void (*lq_zsock_msg_cb)(lq_zsock_t *s, const uint8_t *ident, size_t ident_len, lq_msg_t *m,
                                void *arg);

/* Creates a socket of type ZMQ_ROUTER or ZMQ_DEALER on loop. Sets linger 0,
 * ZMQ_MAXMSGSIZE and, for ROUTER, ZMQ_ROUTER_MANDATORY. Returns NULL on
 * failure. */
lq_zsock_t *lq_zsock_new(lq_loop_t *loop, void *zctx, int type, lq_zsock_msg_cb cb, void *arg);

/* The raw ZeroMQ socket, for options that must be set before bind/connect
 * (ZMQ_ROUTING_ID, CURVE keys, high-water marks). */
void *lq_zsock_raw(lq_zsock_t *s);

/* Binds / connects and starts watching the socket. Returns 0 or -1 (errno). */
int lq_zsock_bind(lq_zsock_t *s, const char *endpoint);
int lq_zsock_connect(lq_zsock_t *s, const char *endpoint);

/* Sends m to ident (ROUTER) or to the peer (DEALER, ident NULL), without
 * blocking. Returns 0, or -1 with errno (EAGAIN: peer full; EHOSTUNREACH:
 * unknown ROUTER peer). */
int lq_zsock_send(lq_zsock_t *s, const uint8_t *ident, size_t ident_len, const lq_msg_t *m);

/* The same with a body the caller encoded (lq_batch_body()): cmd and body
 * (len bytes, copied) are sent as they are. Returns 0, or -1 with errno. */
int lq_zsock_send_body(lq_zsock_t *s, const uint8_t *ident, size_t ident_len, uint8_t cmd,
                       const void *body, size_t len);

/* Number of incoming messages dropped as malformed or oversized. */
uint64_t lq_zsock_dropped(const lq_zsock_t *s);

/* Closes the socket and frees s. Must not be called from inside s's own
 * callback. Safe on NULL; clears *s. */
void lq_zsock_destroy(lq_zsock_t **s);

#endif
