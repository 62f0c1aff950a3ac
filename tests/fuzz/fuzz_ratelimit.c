/* fuzz_ratelimit: libFuzzer target for the rate-limit inputs of the broker:
 * the --limit spec (lq_rl_parse) and the x-ratelimit-* / Retry-After
 * values that reach the limiter (broker/ratelimit.c), either parsed from
 * upstream header lines by the worker (worker/headers.c) or sent as raw
 * numbers by a worker (a hostile one can send any int64).
 *
 * Input: the first line is a --limit spec; then a program of one-byte
 * operations: admit, a result built from one header line, a result with
 * raw 64-bit values, a lost job, a clock step, a stats read.
 * Properties: the limiter's stats stay finite and non-negative, admit's
 * retry delay is at least 1 ms, and nothing crashes or overflows (UBSan).
 * Seeds: tests/fuzz/seeds/ratelimit/. */
#include "broker/ratelimit.h"
#include "worker/headers.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p, *end;
} s_in_t;

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_ratelimit: %s\n", what);
    abort();
}

/* Next byte of the program, 0 at the end. */
static uint8_t s_byte(s_in_t *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

/* Next 8 bytes as an int64 (zero-padded). */
static int64_t s_i64(s_in_t *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | s_byte(in);
    return (int64_t)v;
}

/* A result whose rate-limit fields come from one header line. */
static void s_from_header(s_in_t *in, lq_rl_result_t *res)
{
    const uint8_t *nl = memchr(in->p, '\n', (size_t)(in->end - in->p));
    size_t n = nl ? (size_t)(nl - in->p) : (size_t)(in->end - in->p);
    char *line = malloc(n + 1);
    memcpy(line, in->p, n);
    in->p += n + (nl != NULL);
    lq_resp_headers_t h;
    lq_headers_init(&h);
    lq_headers_feed(&h, line, n, 1767225600);
    free(line);
    res->retry_after_ms = lq_headers_retry_after(&h);
    res->limit_requests = h.rl_limit_requests;
    res->limit_tokens = h.rl_limit_tokens;
    res->remaining_requests = h.rl_remaining_requests;
    res->remaining_tokens = h.rl_remaining_tokens;
    res->reset_requests_ms = h.rl_reset_requests_ms;
    res->reset_tokens_ms = h.rl_reset_tokens_ms;
}

/* A result with raw values, as a worker could send them. */
static void s_raw(s_in_t *in, lq_rl_result_t *res)
{
    res->retry_after_ms = s_i64(in);
    res->used_tokens = s_i64(in);
    res->limit_requests = s_i64(in);
    res->limit_tokens = s_i64(in);
    res->remaining_requests = s_i64(in);
    res->remaining_tokens = s_i64(in);
    res->reset_requests_ms = s_i64(in);
    res->reset_tokens_ms = s_i64(in);
}

/* Stats must be finite and non-negative. */
static void s_check(lq_rl_t *rl, uint64_t now)
{
    lq_rl_stats_t st;
    lq_rl_stats(rl, now, &st);
    double d[] = {st.rate_limit, st.learned_rps, st.ok_rps, st.window};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (!isfinite(d[i]) || d[i] < 0) {
            fprintf(stderr, "stat %zu = %g\n", i, d[i]);
            s_die("stat not finite or negative");
        }
    if (st.inflight < 0 || st.paused_ms < 0)
        s_die("negative in-flight or pause");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 14)
        return 0;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t sl = nl ? (size_t)(nl - data) : size;
    char *spec = malloc(sl + 1);
    memcpy(spec, data, sl);
    spec[sl] = '\0';
    lq_rl_config_t cfg;
    if (lq_rl_parse(spec, &cfg) < 0)
        memset(&cfg, 0, sizeof cfg);
    free(spec);
    if (!isfinite(cfg.rpm) || !isfinite(cfg.tpm) || cfg.rpm < 0 || cfg.tpm < 0)
        s_die("spec gave a bad budget");
    cfg.use_headers = 1;
    s_in_t in = {data + sl + (nl != NULL), data + size};
    uint64_t now = 1000;
    lq_rl_t *rl = lq_rl_new(&cfg, now);
    while (in.p < in.end) {
        uint8_t op = s_byte(&in);
        lq_rl_result_t res = {.status = 200, .retry_after_ms = -1, .used_tokens = -1,
                              .limit_requests = -1, .limit_tokens = -1,
                              .remaining_requests = -1, .remaining_tokens = -1,
                              .reset_requests_ms = -1, .reset_tokens_ms = -1};
        uint64_t retry = 0;
        switch (op % 6) {
        case 0:
            if (!lq_rl_admit(rl, now, (int64_t)s_byte(&in) * 1000, &retry) && retry < 1)
                s_die("refused with a zero retry delay");
            break;
        case 1:
        case 2:
            res.status = (op & 0x10) ? 429 : (op & 0x20) ? 500 : 200;
            res.est_tokens = (int64_t)s_byte(&in) * 100;
            if (op % 6 == 1)
                s_from_header(&in, &res);
            else
                s_raw(&in, &res);
            lq_rl_on_result(rl, now, &res);
            break;
        case 3:
            lq_rl_on_lost(rl);
            break;
        case 4:
            now += (uint64_t)s_byte(&in) * (op & 0x80 ? 1000 : 10);
            break;
        default:
            s_check(rl, now);
        }
    }
    s_check(rl, now);
    lq_rl_destroy(&rl);
    return 0;
}
