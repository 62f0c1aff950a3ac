/* rpc: the client's request/reply channel to the broker.
 *
 * One DEALER socket on a private event loop. Requests carry a fresh "req"
 * id; replies are matched by it, and stale replies (to requests that timed
 * out earlier) are dropped. Calls block the caller, running the loop, up to
 * a timeout. ZeroMQ reconnects by itself, so a broker restart shows up as a
 * few timed-out calls that the caller may retry.
 *
 * Several brokers ("tcp://a:5555,tcp://b:5555"): the channel talks to one
 * at a time, starting at one picked by the process id (clients spread).
 * When a request has waited 3 s and nothing at all was heard from that
 * broker since it was sent, a wait moves the channel to the next broker of
 * the list and returns 0 (timeout) at once,
 * so the caller's usual resend goes there; every request is safe to repeat
 * (chunks by index, cancel and delete by state, reads). A reply "unavailable"
 * (that broker cannot reach Redis) sends the next request to the next
 * broker too. */
#ifndef LQ_RPC_H
#define LQ_RPC_H

#include "proto/msg.h"

#include <stdint.h>

typedef struct lq_rpc lq_rpc_t;

/* Creates the channel and starts connecting; with server_key (Z85) the
 * connection is CURVE-encrypted, as client_secret (Z85, NULL = ephemeral).
 * Returns NULL with err set. */
lq_rpc_t *lq_rpc_new(const char *endpoint, const char *server_key, const char *client_secret,
                     char *err, size_t errlen);
void lq_rpc_destroy(lq_rpc_t **r);
/* The endpoint of the broker the channel talks to now. */
const char *lq_rpc_endpoint(const lq_rpc_t *r);

/* Sets the request id of m to a fresh one, sends it without waiting and
 * returns that id (0 on a send failure). */
uint64_t lq_rpc_send(lq_rpc_t *r, lq_msg_t *m);

/* Waits up to timeout_ms for the reply to any outstanding request id in
 * [min_req, max_req]. Returns 1 with the reply moved into *reply (caller
 * destroys it), 0 on timeout, -1 on interrupt (SIGINT). An LQ_C_ERROR
 * reply is returned like any other. */
int lq_rpc_recv(lq_rpc_t *r, uint64_t min_req, uint64_t max_req, lq_msg_t *reply, int timeout_ms);

/* Sends m and waits for its reply: lq_rpc_send + lq_rpc_recv. */
int lq_rpc_call(lq_rpc_t *r, lq_msg_t *m, lq_msg_t *reply, int timeout_ms);

/* Whether channels created from now on watch SIGINT (default 1: a call
 * returns -1 on Ctrl-C). A process that handles SIGINT itself, with
 * several channels in several threads (llmq-gateway), turns it off once at
 * start-up, before creating any. Can't fail. */
void lq_rpc_watch_sigint(int on);

/* 1 once SIGINT was received while waiting. */
int lq_rpc_interrupted(const lq_rpc_t *r);


#endif
