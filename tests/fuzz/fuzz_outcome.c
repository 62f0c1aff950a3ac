/* fuzz_outcome: libFuzzer target for the worker's outcome classification
 * (worker/outcome.c): what an upstream (or a proxy in front of it) sends
 * back becomes a result the broker stores and the client prints.
 *
 * Input: byte 0 the curl code (mod 100), bytes 1-2 the HTTP status, byte 3
 * bit 0 "too large"; the rest is the response body. Properties: the
 * outcome is OK / RETRYABLE / FATAL; a body, when there is one, is valid
 * JSON text on one line; the error message is valid UTF-8 on one line,
 * within LQ_ERROR_MESSAGE_MAX bytes; lq_json_quote always gives a JSON
 * string and lq_utf8_clean valid UTF-8; lq_json_scan (worker/jsonscan.c)
 * and jansson agree on every body the scan decides. Seeds: tests/fuzz/seeds/outcome/. */
#include "proto/msg.h"
#include "common/utf8.h"
#include "worker/jsonscan.h"
#include "worker/outcome.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_outcome: %s\n", what);
    abort();
}

/* 1 when s[0..n) is valid UTF-8 without control characters. */
static int s_clean_line(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x20)
            return 0;
        size_t k = lq_utf8_seq((const unsigned char *)s + i, n - i, NULL);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* 1 when s[0..n) is one JSON text on one line. */
static int s_json_line(const char *s, size_t n, int want_string)
{
    if (memchr(s, '\n', n) || memchr(s, '\r', n))
        return 0;
    json_error_t e;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    int ok = j != NULL && (!want_string || json_is_string(j));
    json_decref(j);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4 || size > 1 << 18)
        return 0;
    lq_outcome_in_t in = {0};
    in.curl_code = data[0] % 100;
    in.curl_detail = (data[0] & 0x80) ? "detail" : NULL;
    in.status = (long)((data[1] << 8) | data[2]) % 1000;
    in.too_large = data[3] & 1;
    size_t n = size - 4;
    char *body = malloc(n ? n : 1);
    memcpy(body, data + 4, n);
    in.body = body;
    in.body_len = n;
    lq_outcome_res_t r = {0};
    lq_outcome_classify(&in, &r);
    if (r.outcome != LQ_OUTCOME_OK && r.outcome != LQ_OUTCOME_RETRYABLE &&
        r.outcome != LQ_OUTCOME_FATAL)
        s_die("unknown outcome");
    if (r.body && !s_json_line(r.body, r.body_len, 0))
        s_die("body is not one line of JSON");
    if (r.error_message && (strlen(r.error_message) > LQ_ERROR_MESSAGE_MAX ||
                            !s_clean_line(r.error_message, strlen(r.error_message))))
        s_die("error message not clean");
    if ((r.outcome == LQ_OUTCOME_OK) != (r.error_code == NULL))
        s_die("error code and outcome disagree");
    lq_outcome_res_clear(&r);
    size_t ql;
    char *q = lq_json_quote(body, n, &ql);
    if (!s_json_line(q, ql, 1))
        s_die("quote is not a JSON string");
    free(q);
    /* The worker's scan of 2xx bodies agrees with jansson wherever it
     * answers (it may ask jansson: -1). */
    int scan = lq_json_scan(body, n, NULL);
    if (scan >= 0) {
        json_error_t e;
        json_t *j = n ? json_loadb(body, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e) : NULL;
        json_decref(j);
        /* jansson 2.14 skips a raw NUL byte right after a number ("[1\0]"
         * is [1]); the scan refuses a raw NUL anywhere, which
         * only ever turns such a body into a JSON string. */
        if (scan != (j != NULL) && !(scan == 0 && memchr(body, '\0', n)))
            s_die("lq_json_scan and jansson disagree");
    }
    char *c = lq_utf8_clean(body, n, 100);
    if (strlen(c) > 100 || !s_clean_line(c, strlen(c)))
        s_die("utf8_clean not clean");
    free(c);
    free(body);
    return 0;
}
