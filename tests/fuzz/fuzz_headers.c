/* fuzz_headers: libFuzzer target for the upstream response headers a worker
 * reads (worker/headers.c): header lines, Retry-After (seconds or HTTP
 * date), retry-after-ms, x-ratelimit-* counts and durations.
 *
 * Input: header lines separated by LF, fed one by one as libcurl would
 * (with their CRLF). Then each line's value is also given to every value
 * parser directly. Properties: every duration is -1 or in
 * [0, LQ_DURATION_MAX_MS], counts are -1 or >= 0, the request id is a
 * NUL-terminated string that fits its buffer, and a parser that returns -1
 * leaves no value behind. Seeds: tests/fuzz/seeds/headers/. */
#include "worker/headers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_headers: %s\n", what);
    abort();
}

/* A duration is -1 (absent) or within the documented range. */
static void s_dur(int64_t v, const char *what)
{
    if (v != -1 && (v < 0 || v > LQ_DURATION_MAX_MS))
        s_die(what);
}

/* Checks the documented ranges of a header set. */
static void s_check(const lq_resp_headers_t *h)
{
    s_dur(h->retry_after_ms, "retry_after_ms out of range");
    s_dur(h->retry_after_ms_hdr, "retry_after_ms_hdr out of range");
    s_dur(h->rl_reset_requests_ms, "reset_requests out of range");
    s_dur(h->rl_reset_tokens_ms, "reset_tokens out of range");
    s_dur(lq_headers_retry_after(h), "retry hint out of range");
    if (h->rl_remaining_requests < -1 || h->rl_remaining_tokens < -1 ||
        h->rl_limit_requests < -1 || h->rl_limit_tokens < -1 || h->content_length < -1)
        s_die("negative count");
    if (memchr(h->request_id, '\0', sizeof h->request_id) == NULL)
        s_die("request id not terminated");
}

/* Gives one value to every value parser. */
static void s_values(const char *v, size_t n, int64_t now_s)
{
    int64_t out = 12345;
    if (lq_parse_retry_after(v, n, now_s, &out) == 0)
        s_dur(out, "parse_retry_after out of range");
    out = 12345;
    if (lq_parse_ms(v, n, &out) == 0)
        s_dur(out, "parse_ms out of range");
    out = 12345;
    if (lq_parse_duration_ms(v, n, &out) == 0)
        s_dur(out, "parse_duration_ms out of range");
    out = 12345;
    if (lq_parse_count(v, n, &out) == 0 && out < 0)
        s_die("parse_count negative");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *p = (const char *)data, *end = p + size;
    /* An arbitrary but fixed clock: 2026-01-01. */
    int64_t now_s = 1767225600;
    lq_resp_headers_t h;
    lq_headers_init(&h);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        /* A private copy with CRLF, exactly as long as the line: ASan sees
         * any read past it. */
        char *line = malloc(n + 2);
        memcpy(line, p, n);
        line[n] = '\r';
        line[n + 1] = '\n';
        lq_headers_feed(&h, line, n + 2, now_s);
        s_check(&h);
        const char *colon = memchr(line, ':', n);
        size_t off = colon ? (size_t)(colon - line) + 1 : 0;
        char *val = malloc(n - off + 1);
        memcpy(val, line + off, n - off);
        s_values(val, n - off, now_s);
        free(val);
        free(line);
        p += n + 1;
    }
    return 0;
}
