/* headers: pure parsers for the upstream response headers a worker reports.
 *
 * Owns nothing but the fixed-size lq_resp_headers_t the caller embeds: the
 * request id, the retry hints (Retry-After as delta-seconds or an HTTP date,
 * retry-after-ms) and the OpenAI rate-limit headers
 * (x-ratelimit-{limit,remaining,reset}-{requests,tokens}; resets are
 * durations such as "1s",
 * "6m0s", "250ms", "1h2m3.5s"). No I/O, no allocation, no clock: "now" is a
 * parameter, so every function here is deterministic and unit-tested. */
#ifndef LQ_WORKER_HEADERS_H
#define LQ_WORKER_HEADERS_H

#include <stddef.h>
#include <stdint.h>

/* Longest request id kept (longer ones are truncated); fits LQ_MAX_ID. */
#define LQ_REQUEST_ID_MAX 127
/* Upper bound for every duration we report (7 days), to keep sums safe. */
#define LQ_DURATION_MAX_MS (7LL * 86400LL * 1000LL)

typedef struct {
    char request_id[LQ_REQUEST_ID_MAX + 1]; /* "" when absent */
    int64_t retry_after_ms;                 /* from Retry-After, -1 when absent/invalid */
    int64_t retry_after_ms_hdr;             /* from retry-after-ms, -1 when absent/invalid */
    int64_t rl_remaining_requests, rl_remaining_tokens; /* -1 unknown */
    int64_t rl_reset_requests_ms, rl_reset_tokens_ms;   /* -1 unknown */
    int64_t rl_limit_requests, rl_limit_tokens;         /* -1 unknown */
    int64_t content_length;                             /* -1 unknown */
    int have_x_request_id; /* x-request-id seen (wins over request-id) */
} lq_resp_headers_t;

/* Sets every field to "absent". Can't fail. */
void lq_headers_init(lq_resp_headers_t *h);

/* Feeds one raw header line as libcurl delivers it ("Name: value\r\n", not
 * NUL-terminated). A status line ("HTTP/...") starts a new response and
 * resets h (so 100-continue or redirect headers never leak into the final
 * response). Unknown headers and unparsable values are ignored. now_s is
 * the wall clock in Unix seconds, for HTTP dates. Can't fail. */
void lq_headers_feed(lq_resp_headers_t *h, const char *line, size_t len, int64_t now_s);

/* The retry hint to report in ms: retry-after-ms wins over Retry-After;
 * -1 when neither was given. Can't fail. */
int64_t lq_headers_retry_after(const lq_resp_headers_t *h);

/* Parses a Retry-After value: delta-seconds (a fraction is tolerated) or an
 * HTTP date, converted to ms from now_s (a date in the past gives 0).
 * Returns 0 and stores *out_ms (capped at LQ_DURATION_MAX_MS), or -1. */
int lq_parse_retry_after(const char *v, size_t len, int64_t now_s, int64_t *out_ms);

/* Parses a non-negative decimal number of milliseconds ("20", "1.5"),
 * rounded up. Returns 0 and stores *out_ms (capped), or -1. */
int lq_parse_ms(const char *v, size_t len, int64_t *out_ms);

/* Parses an OpenAI/Go duration: a sequence of <decimal><unit> with units
 * h, m, s, ms, us (or µs), ns, e.g. "6m0s", "1h2m3.5s", "250ms"; a bare
 * number means seconds. Rounded up to whole ms. Returns 0 and stores
 * *out_ms (capped), or -1. */
int lq_parse_duration_ms(const char *v, size_t len, int64_t *out_ms);

/* Parses a non-negative integer counter ("59", "149984"). Returns 0 or -1. */
int lq_parse_count(const char *v, size_t len, int64_t *out);

/* Parses an RFC 3339 time ("2026-11-29T17:30:00.250Z", or with a +hh:mm
 * offset), as in Anthropic's anthropic-ratelimit-*-reset, into *out_ms:
 * milliseconds from wall second now_s until then (0 if past, capped).
 * Returns 0 or -1. */
int lq_parse_rfc3339(const char *v, size_t len, int64_t now_s, int64_t *out_ms);

#endif
