/* http: the libcurl multi_socket engine on lq_loop.
 *
 * Long-lived CURLM handles, each with its own connection cache, so that
 * connections and HTTP/2 streams are reused across requests. A new transfer
 * goes on the first multi of its kind (http:// or https://) with fewer than
 * max_per_multi (max_per_multi_tls) transfers; more are made as needed and
 * kept. http://: libcurl 7.88 scans a host's connections linearly when it
 * starts and ends a transfer, so a few thousand transfers on one multi cost
 * O(connections^2) at start-up. https://: an HTTP/2 upstream carries all
 * the transfers of one multi on one connection (PIPEWAIT, at most
 * max_per_multi_tls streams each), so 250 transfers need 3 connections. libcurl tells us which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION -> lq_loop_watch, level-
 * triggered) and when to wake it (CURLMOPT_TIMERFUNCTION -> one lq_timer_t
 * per multi). Those callbacks only (un)register with the loop: every
 * curl_multi_* call happens from our own fd/timer handlers, and completed
 * transfers are collected with curl_multi_info_read after
 * curl_multi_socket_action has returned, removed from the multi, reported,
 * and their easy handles kept, configured, on a free list: the options that
 * never change are set once per handle, not per request, and a small body
 * buffer is reused.
 *
 * Ownership: the engine owns its easy handles, the response buffers and
 * the per-transfer state. The caller owns the request (URL, header list,
 * body), which must stay valid until the completion callback has run or
 * the engine is destroyed. No limit on parallel transfers here: admission
 * control is the caller's (--concurrency). */
#ifndef LQ_WORKER_HTTP_H
#define LQ_WORKER_HTTP_H

#include "../common/loop.h"
#include "headers.h"

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lq_http lq_http_t;

typedef struct {
    long connect_timeout_ms;   /* CURLOPT_CONNECTTIMEOUT_MS */
    size_t max_response_bytes; /* body cap; over it the transfer is aborted */
    long max_connects;         /* connection cache size per multi; 0 = max_per_multi */
    size_t max_per_multi;      /* http:// transfers per multi handle; 0 = 256 */
    size_t max_per_multi_tls;  /* https:// transfers per multi handle; 0 = 100 */
    const char *user_agent;    /* NULL: none (the caller's header list may carry one) */
    const char *ca_file;       /* CA bundle for TLS; NULL: the system's */
} lq_http_config_t;

typedef struct {
    const char *url;
    const struct curl_slist *headers;
    const char *body; /* POSTed as is; must outlive the transfer */
    size_t body_len;
    long timeout_ms; /* whole attempt, CURLOPT_TIMEOUT_MS */
} lq_http_req_t;

typedef struct {
    int curl_code;          /* CURLcode, 0 when the transfer completed */
    const char *curl_error; /* libcurl's detail text, "" when none */
    long status;            /* HTTP status, 0 when none was received */
    const char *body;       /* response body (not NUL-terminated), may be NULL */
    size_t body_len;
    int too_large; /* aborted at the --max-response-bytes cap */
    const lq_resp_headers_t *headers;
    uint64_t latency_ms;
    int new_connection; /* 1 if this transfer opened a connection */
} lq_http_resp_t;

/* Completion callback: resp and everything it points to are valid only
 * during the call. Never called from inside lq_http_post(). The callback
 * may start new requests. */
typedef void (*lq_http_done_cb)(const lq_http_resp_t *resp, void *arg);

/* Creates the engine on loop. Call curl_global_init() once before.
 * Returns NULL when libcurl cannot create a multi handle. */
lq_http_t *lq_http_new(lq_loop_t *loop, const lq_http_config_t *cfg);

/* Starts a POST of req. Returns 0 (cb will run exactly once, later), or -1
 * when libcurl refuses the transfer (cb will not run). */
int lq_http_post(lq_http_t *h, const lq_http_req_t *req, lq_http_done_cb cb, void *arg);

/* Transfers in progress. */
size_t lq_http_active(const lq_http_t *h);
/* Connections opened so far (a measure of reuse). */
uint64_t lq_http_connections(const lq_http_t *h);

/* Aborts every transfer (no callbacks) and frees the engine. Must not be
 * called from a completion callback. Safe on NULL; clears *h. */
void lq_http_destroy(lq_http_t **h);

#endif
