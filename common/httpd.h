/* httpd: a small, hostile-network-safe HTTP/1.x listener on the event loop,
 * for read-only endpoints such as the broker's /metrics.
 *
 * One request per connection (the response says "Connection: close"); no
 * request bodies. Every limit is fixed up front so nothing a peer does can
 * block the loop or grow memory without bound:
 *   - at most max_conns connections are open; when a new one arrives with
 *     all slots taken, the OLDEST connection is closed to make room (a flood
 *     of idle connections cannot lock out a real scraper for long);
 *   - each connection has one deadline from its accept (timeout_ms), not an
 *     idle timer, so a slow sender (slowloris) is closed however it
 *     trickles; the response must be written within the same deadline;
 *   - a request (line + headers) over max_request bytes gets 431 and is
 *     closed; a malformed one gets 400;
 *   - sockets are non-blocking; each wake accepts and reads a bounded amount.
 * The listener owns its sockets and connection records; the handler owns
 * nothing across calls: it returns a body that the listener frees.
 * lq_http_parse() is the pure request parser (fuzz_http). */
#ifndef LQ_HTTPD_H
#define LQ_HTTPD_H

#include "loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_httpd lq_httpd_t;

#define LQ_HTTP_METHOD_MAX 15
#define LQ_HTTP_TARGET_MAX 1023

/* A parsed request head. */
typedef struct {
    char method[LQ_HTTP_METHOD_MAX + 1]; /* "GET", "HEAD", ... */
    char path[LQ_HTTP_TARGET_MAX + 1];   /* the target up to '?' */
    char query[LQ_HTTP_TARGET_MAX + 1];  /* after '?', "" if none */
    int minor;                           /* HTTP/1.<minor>: 0 or 1 */
} lq_httpd_req_t;

/* Results of lq_http_parse(). */
#define LQ_HTTP_OK 1         /* a complete, valid head */
#define LQ_HTTP_MORE 0       /* valid so far, incomplete */
#define LQ_HTTP_BAD -1       /* malformed: answer 400 */
#define LQ_HTTP_TOO_LARGE -2 /* no end of head within max bytes: answer 431 */

/* Parses the request head in buf[0..len) (need not be NUL-terminated):
 * "METHOD SP /target SP HTTP/1.x" CRLF, header lines "Name: value" CRLF,
 * an empty line (bare LF accepted for CRLF). Method: 1-15 uppercase
 * letters; target: starts with '/', printable ASCII without spaces, at most
 * LQ_HTTP_TARGET_MAX bytes; header names are tokens; no control characters
 * but TAB anywhere. Returns one of LQ_HTTP_*; *req is filled on LQ_HTTP_OK.
 * Pure; can't fail. */
int lq_http_parse(const char *buf, size_t len, size_t max, lq_httpd_req_t *req);

/* What a handler answers: status, content type (static string) and a body
 * the listener takes over (free()d after sending; NULL for none). */
typedef struct {
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
} lq_httpd_resp_t;

/* Called on the loop for each valid request; fills *resp (status 0 means
 * 404). Must not block. */
typedef void (*lq_httpd_handler)(const lq_httpd_req_t *req, lq_httpd_resp_t *resp, void *arg);

typedef struct {
    int max_conns;      /* open connections; default 64 */
    int timeout_ms;     /* deadline per connection from accept; default 5000 */
    size_t max_request; /* bytes of request head; default 8192 */
} lq_httpd_opts_t;

/* Counters, for tests and metrics. */
typedef struct {
    uint64_t accepted;  /* connections accepted */
    uint64_t evicted;   /* closed to make room for a newer one */
    uint64_t timed_out; /* closed at their deadline */
    uint64_t bad;       /* answered 400 */
    uint64_t too_large; /* answered 431 */
    uint64_t served;    /* handed to the handler */
    int open;           /* connections open now */
} lq_httpd_stats_t;

/* Splits a --metrics style address: "HOST:PORT", "*:PORT" (all
 * interfaces), ":PORT" or "PORT" (127.0.0.1: loopback unless told
 * otherwise). "[v6]:PORT" is accepted. Writes the host (NULL for all
 * interfaces, else into host[hostcap]) and port. Returns 0, or -1 with err. */
int lq_httpd_split_addr(const char *addr, char *host, size_t hostcap, const char **host_out,
                        char *port, size_t portcap, char *err, size_t errlen);

/* Listens on addr (see lq_httpd_split_addr) with opts (NULL: defaults) and
 * calls handler for each request. Returns NULL with a message in err. */
lq_httpd_t *lq_httpd_new(lq_loop_t *loop, const char *addr, const lq_httpd_opts_t *opts,
                         lq_httpd_handler handler, void *arg, char *err, size_t errlen);

/* The bound port (useful after binding port 0). Can't fail. */
int lq_httpd_port(const lq_httpd_t *h);

/* Copies the counters. Can't fail. */
void lq_httpd_stats(const lq_httpd_t *h, lq_httpd_stats_t *out);

/* Closes the listener and every connection. Safe on NULL; clears *h. */
void lq_httpd_destroy(lq_httpd_t **h);

#endif
