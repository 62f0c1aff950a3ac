/* http: the gateway's HTTP/1.1 server, libmicrohttpd on our epoll loop
 * (see http.c). Owns the MHD daemon; requests are routed to files.c and
 * batches.c. */
#ifndef LQ_HTTP_H
#define LQ_HTTP_H

#include "gateway.h"

#include <stddef.h>

typedef struct lq_http lq_http_t;

/* Listens on listen ("IPV4:PORT", "*:PORT") and registers with gw->loop.
 * Returns NULL with err set. */
lq_http_t *lq_http_new(lq_gw_t *gw, const char *listen, char *err, size_t errlen);
/* The port listened on (useful with port 0), or -1. */
int lq_http_port(const lq_http_t *h);
/* Stops the daemon (open connections are closed) and clears *h. Safe on
 * NULL. */
void lq_http_destroy(lq_http_t **h);

#endif
