/* fake_limiter: the fake upstream's provider limiter, in the shapes of
 * issue 12: a token bucket of requests (--rate-limit, --burst) whose rate
 * may step at given times (--rate-steps), a token bucket of tokens
 * (--token-limit), a cold start that rejects everything (--cold-ms), the
 * rate-limit headers of OpenAI or Anthropic or none (--headers), and the
 * Retry-After of a 429 (--retry-after-format, --retry-after-fixed-ms).
 *
 * Knows no sockets and no requests: the behaviour (fake_behaviour.c) asks
 * it what a request costs and has it write headers. Owns its buckets; the
 * config is copied. */
#ifndef LQ_FAKE_LIMITER_H
#define LQ_FAKE_LIMITER_H

#include "fake_behaviour.h"
#include "fake_http.h"

#include <stdint.h>

typedef struct lq_fake_lim lq_fake_lim_t;

typedef enum {
    LQ_FAKE_LIM_OK = 0,   /* taken */
    LQ_FAKE_LIM_COLD,     /* --cold-ms: 429 without any header */
    LQ_FAKE_LIM_REQUESTS, /* no request token: 429 */
    LQ_FAKE_LIM_TOKENS,   /* too few tokens: 429 */
} lq_fake_lim_verdict_t;

/* Creates the limiter for cfg (copied). Can't fail. */
lq_fake_lim_t *lq_fake_lim_new(const lq_fake_cfg_t *cfg);
/* Frees it. Safe on NULL; clears *l. */
void lq_fake_lim_destroy(lq_fake_lim_t **l);
/* Full buckets, and --cold-ms and --rate-steps start again at the next
 * request. Can't fail. */
void lq_fake_lim_reset(lq_fake_lim_t *l);

/* 1 if requests cost tokens (--token-limit), so the caller should count
 * them. */
int lq_fake_lim_counts_tokens(const lq_fake_lim_t *l);
/* Takes one request costing `tokens` from the buckets, or returns why not
 * (*wait_ms: when it would fit, for REQUESTS and TOKENS). Can't fail. */
lq_fake_lim_verdict_t lq_fake_lim_take(lq_fake_lim_t *l, double tokens, uint64_t *wait_ms);
/* Appends the rate-limit headers describing the buckets now (none with
 * --headers none or without limits). Can't fail. */
void lq_fake_lim_headers(lq_fake_lim_t *l, lq_fake_buf_t *h);
/* Appends the Retry-After headers of a 429 that should wait wait_ms.
 * Can't fail. */
void lq_fake_lim_retry_after(const lq_fake_lim_t *l, uint64_t wait_ms, lq_fake_buf_t *h);

/* Formats unix second t as an IMF-fixdate into out (>= 30 bytes). */
void lq_fake_http_date(int64_t t, char *out, size_t n);

/* Formats a duration like OpenAI's reset headers: "250ms", "1.5s", "2m30s".
 * Can't fail (truncates to n). */
void lq_fake_duration(uint64_t ms, char *out, size_t n);

#endif
