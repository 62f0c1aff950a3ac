/* fake_behaviour: what the fake upstream answers. Given one complete
 * request (parsed head + body) it routes it, applies the configured
 * misbehaviour (auth, rate limit, failure probabilities, prefixes, latency)
 * and writes the whole HTTP response into a caller's buffer; it also keeps
 * the statistics and the per-job request counts served by /stats and
 * /counts.
 *
 * It knows no sockets and no loop: the connection module (fake_conn.c)
 * decides when the bytes go out, following the returned decision (send
 * after a delay, drop the connection, or hang). The behaviour object owns
 * its statistics, its counts table and its random generator; the config
 * strings are borrowed and must outlive it. */
#ifndef LQ_FAKE_BEHAVIOUR_H
#define LQ_FAKE_BEHAVIOUR_H

#include "fake_http.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_fake_bhv lq_fake_bhv_t;

typedef enum {
    LQ_FAKE_RA_SECONDS = 0, /* retry-after: whole seconds (rounded up) + retry-after-ms */
    LQ_FAKE_RA_DATE,        /* retry-after: an HTTP-date, no retry-after-ms */
    LQ_FAKE_RA_NONE,        /* neither header */
} lq_fake_ra_format_t;

typedef struct {
    long long latency_ms, jitter_ms;     /* delay = latency + uniform 0..jitter */
    double p_500, p_503, p_drop, p_hang; /* probabilities, summing to <= 1 */
    double rate_limit;                   /* requests/s, 0 = unlimited */
    double burst;                        /* bucket size; <= 0: max(1, rate/20) */
    lq_fake_ra_format_t retry_after_format;
    const char *always_fail_prefix; /* NULL or "": off */
    const char *bad_request_prefix; /* NULL or "": off */
    const char *api_key;            /* NULL or "": no auth */
    long long body_bytes;           /* minimum 200 body size, 0 = off */
    uint64_t seed;
} lq_fake_cfg_t;

typedef enum {
    LQ_FAKE_SEND = 0, /* write the response (after delay_ms) */
    LQ_FAKE_DROP,     /* close the connection without a response (after delay_ms) */
    LQ_FAKE_HANG,     /* never answer; keep the connection open */
} lq_fake_action_t;

typedef struct {
    lq_fake_action_t action;
    int status;        /* the status written, for SEND */
    uint64_t delay_ms; /* how long to hold the response back */
    int api;           /* 1: an API request, in flight until lq_fake_bhv_done() */
} lq_fake_decision_t;

/* Creates the behaviour for cfg (copied; its strings are borrowed).
 * Can't fail (aborts on out-of-memory). */
lq_fake_bhv_t *lq_fake_bhv_new(const lq_fake_cfg_t *cfg);
/* Frees it. Safe on NULL; clears *b. */
void lq_fake_bhv_destroy(lq_fake_bhv_t **b);

/* Handles one complete request: req is its head, body[0..body_len) its
 * body, keep_alive whether the connection stays open after the response.
 * Appends the full HTTP response to out (nothing for DROP and HANG) and
 * fills *d. Can't fail. */
void lq_fake_bhv_handle(lq_fake_bhv_t *b, const lq_fake_req_t *req, const char *body,
                        size_t body_len, int keep_alive, lq_fake_buf_t *out, lq_fake_decision_t *d);

/* Appends a protocol-level error response (400, 411, 413, 431, 505) with
 * an OpenAI-style body and "Connection: close", and counts it. Can't fail. */
void lq_fake_bhv_error(lq_fake_bhv_t *b, int status, const char *message, lq_fake_buf_t *out);

/* Tells it that an API request (decision.api) left flight: answered,
 * dropped, or its connection closed. Can't fail. */
void lq_fake_bhv_done(lq_fake_bhv_t *b);

/* Tells it that a connection was accepted (opened = 1) or closed (0). */
void lq_fake_bhv_conn(lq_fake_bhv_t *b, int opened);

/* Formats a duration like OpenAI's reset headers ("250ms", "1.5s",
 * "2m30s") into out[0..n). Can't fail. */
void lq_fake_bhv_duration(uint64_t ms, char *out, size_t n);

#endif
