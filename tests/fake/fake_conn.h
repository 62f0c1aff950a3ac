/* fake_conn: the fake upstream's listening socket and its HTTP/1.1
 * connections, on an lq_loop (non-blocking sockets, level-triggered).
 *
 * Each connection reads into its own buffer, parses requests with
 * fake_http, asks fake_behaviour what to answer and writes the responses in
 * request order (pipelining): a response held back by latency, or one that
 * never comes (hang), holds back the ones behind it on that connection.
 * Closed connections are freed from a before-sleep hook, never inside a
 * callback. The server owns its connections and the listening fd; the loop
 * and the behaviour are borrowed. */
#ifndef LQ_FAKE_CONN_H
#define LQ_FAKE_CONN_H

#include "fake_behaviour.h"

#include "common/loop.h"

#include <stddef.h>

typedef struct lq_fake_srv lq_fake_srv_t;

/* Starts serving on listen_fd (bound, listening, non-blocking; the server
 * takes ownership of it). Request bodies above max_body bytes get 413.
 * Returns NULL if the fd cannot be watched or the hook not added (listen_fd
 * is closed then). */
lq_fake_srv_t *lq_fake_srv_new(lq_loop_t *loop, int listen_fd, lq_fake_bhv_t *bhv, size_t max_body);

/* Closes every connection and the listening socket and frees the server.
 * Call it only once the loop will not run again (its before-sleep hook
 * cannot be removed). Safe on NULL; clears *srv. */
void lq_fake_srv_destroy(lq_fake_srv_t **srv);

#endif
