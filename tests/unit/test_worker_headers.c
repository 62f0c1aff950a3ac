/* Unit tests for the worker's pure parts: response-header parsing
 * (worker/headers.c), outcome classification and JSON bodies
 * (worker/outcome.c), URL joining, key files and upstream configuration
 * (worker/upstream.c). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "proto/msg.h"
#include "worker/headers.h"
#include "worker/outcome.h"
#include "worker/upstream.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* 2015-10-21T07:28:00Z */
#define T_DATE_S 1445412480LL

/* Feeds "line\r\n" to h. */
static void feed(lq_resp_headers_t *h, const char *line, int64_t now_s)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s\r\n", line);
    lq_headers_feed(h, buf, strlen(buf), now_s);
}

static int64_t dur(const char *s)
{
    int64_t ms = -2;
    if (lq_parse_duration_ms(s, strlen(s), &ms) < 0)
        return -1;
    return ms;
}

static void test_duration(void **state)
{
    (void)state;
    assert_int_equal(dur("1s"), 1000);
    assert_int_equal(dur("6m0s"), 360000);
    assert_int_equal(dur("250ms"), 250);
    assert_int_equal(dur("1h2m3.5s"), 3723500);
    assert_int_equal(dur("0s"), 0);
    assert_int_equal(dur("59.999s"), 59999);
    assert_int_equal(dur("1.5ms"), 2); /* rounded up */
    assert_int_equal(dur("100us"), 1);
    assert_int_equal(dur("20\xc2\xb5s"), 1);
    assert_int_equal(dur("1ns"), 1);
    assert_int_equal(dur("7.66s"), 7660);
    assert_int_equal(dur(" 2s "), 2000);
    assert_int_equal(dur("12"), 12000); /* bare number: seconds */
    assert_int_equal(dur("0.5"), 500);
    assert_int_equal(dur(""), -1);
    assert_int_equal(dur("s"), -1);
    assert_int_equal(dur("5x"), -1);
    assert_int_equal(dur("1h-2m"), -1);
    assert_int_equal(dur("-1s"), -1);
    assert_int_equal(dur("1s2"), -1);
    /* Huge values saturate instead of overflowing. */
    assert_int_equal(dur("99999999999999999999h"), LQ_DURATION_MAX_MS);
    assert_int_equal(dur("9999999999999999999999999"), LQ_DURATION_MAX_MS);
}

static void test_retry_after_values(void **state)
{
    (void)state;
    int64_t ms = -2;
    assert_int_equal(lq_parse_retry_after("120", 3, 0, &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(lq_parse_retry_after(" 0 ", 3, 0, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(lq_parse_retry_after("1.5", 3, 0, &ms), 0);
    assert_int_equal(ms, 1500);
    const char *date = "Wed, 21 Oct 2015 07:28:00 GMT";
    assert_int_equal(lq_parse_retry_after(date, strlen(date), T_DATE_S - 120, &ms), 0);
    assert_int_equal(ms, 120000);
    /* A date in the past means "now". */
    assert_int_equal(lq_parse_retry_after(date, strlen(date), T_DATE_S + 50, &ms), 0);
    assert_int_equal(ms, 0);
    /* Other date formats curl_getdate knows (RFC 850). */
    const char *rfc850 = "Wednesday, 21-Oct-15 07:28:05 GMT";
    assert_int_equal(lq_parse_retry_after(rfc850, strlen(rfc850), T_DATE_S, &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(lq_parse_retry_after("soon", 4, 0, &ms), -1);
    assert_int_equal(lq_parse_retry_after("", 0, 0, &ms), -1);
    assert_int_equal(lq_parse_retry_after("-5", 2, 0, &ms), -1);
    assert_int_equal(lq_parse_retry_after("5 s", 3, 0, &ms), -1);
    assert_int_equal(lq_parse_ms("20", 2, &ms), 0);
    assert_int_equal(ms, 20);
    assert_int_equal(lq_parse_ms("20.2", 4, &ms), 0);
    assert_int_equal(ms, 21);
    assert_int_equal(lq_parse_ms("x", 1, &ms), -1);
}

static void test_retry_after_precedence(void **state)
{
    (void)state;
    lq_resp_headers_t h;
    lq_headers_init(&h);
    assert_int_equal(lq_headers_retry_after(&h), -1);
    feed(&h, "Retry-After: 3", 0);
    assert_int_equal(lq_headers_retry_after(&h), 3000);
    feed(&h, "retry-after-ms: 1234", 0);
    assert_int_equal(lq_headers_retry_after(&h), 1234);
    /* Order does not matter: retry-after-ms wins. */
    lq_headers_init(&h);
    feed(&h, "RETRY-AFTER-MS: 50", 0);
    feed(&h, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT", T_DATE_S - 10);
    assert_int_equal(h.retry_after_ms, 10000);
    assert_int_equal(lq_headers_retry_after(&h), 50);
    /* An invalid retry-after-ms does not hide a valid Retry-After. */
    lq_headers_init(&h);
    feed(&h, "retry-after-ms: never", 0);
    feed(&h, "retry-after: 2", 0);
    assert_int_equal(lq_headers_retry_after(&h), 2000);
}

static void test_header_lines(void **state)
{
    (void)state;
    lq_resp_headers_t h;
    lq_headers_init(&h);
    feed(&h, "HTTP/1.1 100 Continue", 0);
    feed(&h, "x-request-id: early", 0);
    feed(&h, "HTTP/2 429", 0); /* a new response resets everything */
    assert_string_equal(h.request_id, "");
    feed(&h, "X-Request-Id:   req_abc123  ", 0);
    feed(&h, "request-id: other", 0); /* x-request-id wins */
    feed(&h, "x-ratelimit-remaining-requests: 59", 0);
    feed(&h, "x-ratelimit-remaining-tokens: 149984", 0);
    feed(&h, "x-ratelimit-reset-requests: 1s", 0);
    feed(&h, "x-ratelimit-reset-tokens: 6m0s", 0);
    feed(&h, "x-ratelimit-limit-requests: 60", 0);
    feed(&h, "x-ratelimit-limit-tokens: 150000", 0);
    feed(&h, "content-length: 77", 0);
    feed(&h, "x-unrelated: 5", 0);
    feed(&h, "no colon here", 0);
    assert_string_equal(h.request_id, "req_abc123");
    assert_int_equal(h.rl_remaining_requests, 59);
    assert_int_equal(h.rl_remaining_tokens, 149984);
    assert_int_equal(h.rl_reset_requests_ms, 1000);
    assert_int_equal(h.rl_reset_tokens_ms, 360000);
    assert_int_equal(h.rl_limit_requests, 60);
    assert_int_equal(h.rl_limit_tokens, 150000);
    assert_int_equal(h.content_length, 77);
    /* request-id alone is used; bad counters are ignored. */
    lq_headers_init(&h);
    feed(&h, "request-id: r-9", 0);
    feed(&h, "x-ratelimit-remaining-requests: lots", 0);
    feed(&h, "x-ratelimit-reset-tokens: later", 0);
    assert_string_equal(h.request_id, "r-9");
    assert_int_equal(h.rl_remaining_requests, -1);
    assert_int_equal(h.rl_reset_tokens_ms, -1);
    /* A long request id is cut; control characters dropped. */
    char line[400] = "x-request-id: ";
    memset(line + strlen(line), 'a', 300);
    feed(&h, line, 0);
    assert_int_equal(strlen(h.request_id), LQ_REQUEST_ID_MAX);
    /* Without CRLF, not NUL-terminated. */
    lq_headers_init(&h);
    const char raw[] = "retry-after: 7XXXX";
    lq_headers_feed(&h, raw, strlen("retry-after: 7"), 0);
    assert_int_equal(h.retry_after_ms, 7000);
}

/* Classifies a completed HTTP response. */
static void classify(lq_outcome_res_t *r, long status, const char *body)
{
    lq_outcome_in_t in = {0};
    in.status = status;
    in.body = body;
    in.body_len = body ? strlen(body) : 0;
    lq_outcome_classify(&in, r);
}

static void classify_curl(lq_outcome_res_t *r, int code, const char *detail)
{
    lq_outcome_in_t in = {0};
    in.curl_code = code;
    in.curl_detail = detail;
    in.status = 0;
    lq_outcome_classify(&in, r);
}

/* Anthropic-style headers map onto the same fields as OpenAI's; resets
 * are RFC 3339 times. */
static void test_anthropic_headers(void **state)
{
    (void)state;
    int64_t ms = -1;
    const int64_t now = 1700000000; /* 2023-11-14T22:13:20Z */
    assert_int_equal(lq_parse_rfc3339("2023-11-14T22:13:21.250Z", 24, now, &ms), 0);
    assert_int_equal(ms, 1250);
    assert_int_equal(lq_parse_rfc3339("2023-11-14T23:13:22+01:00", 25, now, &ms), 0);
    assert_int_equal(ms, 2000);
    assert_int_equal(lq_parse_rfc3339("2023-11-14T22:13:19Z", 20, now, &ms), 0);
    assert_int_equal(ms, 0); /* past */
    assert_int_equal(lq_parse_rfc3339("2023-11-14 22:13:21Z", 20, now, &ms), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(lq_parse_rfc3339("2023-13-14T22:13:21Z", 20, now, &ms), -1);
    assert_int_equal(lq_parse_rfc3339("2023-11-14T22:13:21", 19, now, &ms), -1);
    assert_int_equal(lq_parse_rfc3339("2023-11-14T22:13:21Zjunk", 24, now, &ms), -1);
    assert_int_equal(lq_parse_rfc3339("soon", 4, now, &ms), -1);
    lq_resp_headers_t h;
    lq_headers_init(&h);
    const char *lines[] = {
        "anthropic-ratelimit-requests-limit: 50",
        "anthropic-ratelimit-requests-remaining: 0",
        "anthropic-ratelimit-requests-reset: 2023-11-14T22:13:20.500Z",
        "anthropic-ratelimit-tokens-limit: 40000",
        "Anthropic-RateLimit-Tokens-Remaining: 39000",
        "anthropic-ratelimit-tokens-reset: 2023-11-14T22:13:23Z",
        "retry-after: 2",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        lq_headers_feed(&h, lines[i], strlen(lines[i]), now);
    assert_int_equal(h.rl_limit_requests, 50);
    assert_int_equal(h.rl_remaining_requests, 0);
    assert_int_equal(h.rl_reset_requests_ms, 500);
    assert_int_equal(h.rl_limit_tokens, 40000);
    assert_int_equal(h.rl_remaining_tokens, 39000);
    assert_int_equal(h.rl_reset_tokens_ms, 3000);
    assert_int_equal(lq_headers_retry_after(&h), 2000);
}

static void test_classify_http(void **state)
{
    (void)state;
    lq_outcome_res_t r;
    const char *ok = "{\"id\":\"x\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,"
                     "\"total_tokens\":46}}";
    const long oks[] = {200, 201, 299};
    for (size_t i = 0; i < sizeof oks / sizeof *oks; i++) {
        classify(&r, oks[i], ok);
        assert_int_equal(r.outcome, LQ_OUTCOME_OK);
        assert_null(r.error_code);
        assert_null(r.error_message);
        assert_int_equal(r.prompt_tokens, 12);
        assert_int_equal(r.completion_tokens, 34);
        assert_string_equal(r.body, ok);
        lq_outcome_res_clear(&r);
    }
    /* Usage under the Responses API names; none at all. */
    classify(&r, 200, "{\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}");
    assert_int_equal(r.prompt_tokens, 5);
    assert_int_equal(r.completion_tokens, 6);
    lq_outcome_res_clear(&r);
    classify(&r, 200, "{\"usage\":{\"prompt_tokens\":\"5\"}}");
    assert_int_equal(r.prompt_tokens, -1);
    assert_int_equal(r.completion_tokens, -1);
    lq_outcome_res_clear(&r);
    classify(&r, 200, "not json");
    assert_int_equal(r.outcome, LQ_OUTCOME_OK);
    assert_int_equal(r.prompt_tokens, -1);
    assert_string_equal(r.body, "\"not json\"");
    lq_outcome_res_clear(&r);

    const long retryable[] = {408, 409, 429, 500, 502, 503, 504, 599};
    for (size_t i = 0; i < sizeof retryable / sizeof *retryable; i++) {
        classify(&r, retryable[i], "{\"error\":{\"message\":\"slow down\",\"type\":\"x\"}}");
        assert_int_equal(r.outcome, LQ_OUTCOME_RETRYABLE);
        char code[16];
        snprintf(code, sizeof code, "http_%ld", retryable[i]);
        assert_string_equal(r.error_code, code);
        assert_string_equal(r.error_message, "slow down");
        assert_int_equal(r.prompt_tokens, -1);
        assert_non_null(r.body);
        lq_outcome_res_clear(&r);
    }
    const long fatal[] = {100, 101, 301, 304, 400, 401, 403, 404, 410, 413, 422, 499, 600, 999};
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++) {
        classify(&r, fatal[i], "{\"error\":{\"message\":\"bad\"}}");
        assert_int_equal(r.outcome, LQ_OUTCOME_FATAL);
        char code[16];
        snprintf(code, sizeof code, "http_%ld", fatal[i]);
        assert_string_equal(r.error_code, code);
        lq_outcome_res_clear(&r);
    }
    /* Messages: error as a string, top-level message, none, non-JSON. */
    classify(&r, 400, "{\"error\":\"plain string\"}");
    assert_string_equal(r.error_message, "plain string");
    lq_outcome_res_clear(&r);
    classify(&r, 400, "{\"message\":\"top\"}");
    assert_string_equal(r.error_message, "top");
    lq_outcome_res_clear(&r);
    /* error.message wins over a short error string and a top-level one;
     * a top-level message wins over a bare error code string. */
    classify(&r, 429,
             "{\"message\":\"top\",\"error\":{\"message\":\"nested\",\"code\":\"x\"}}");
    assert_string_equal(r.error_message, "nested");
    lq_outcome_res_clear(&r);
    classify(&r, 429,
             "{\"error\":\"rate_limited\",\"message\":\"Too many requests, retry in 2s\"}");
    assert_string_equal(r.error_message, "Too many requests, retry in 2s");
    lq_outcome_res_clear(&r);
    classify(&r, 400, "{\"error\":{\"message\":\"\"},\"message\":\"fallback\"}");
    assert_string_equal(r.error_message, "fallback");
    lq_outcome_res_clear(&r);
    classify(&r, 503, "{\"error\":{}}");
    assert_string_equal(r.error_message, "HTTP 503");
    lq_outcome_res_clear(&r);
    classify(&r, 502, "<html>Bad\ngateway</html>");
    assert_string_equal(r.error_message, "HTTP 502: <html>Bad gateway</html>");
    assert_string_equal(r.body, "\"<html>Bad\\ngateway</html>\"");
    lq_outcome_res_clear(&r);
    classify(&r, 500, NULL);
    assert_string_equal(r.error_message, "HTTP 500");
    assert_null(r.body);
    lq_outcome_res_clear(&r);
    /* No status although the transfer completed. */
    classify(&r, 0, NULL);
    assert_int_equal(r.outcome, LQ_OUTCOME_RETRYABLE);
    assert_string_equal(r.error_code, "connection_error");
    lq_outcome_res_clear(&r);
}

static void test_classify_curl(void **state)
{
    (void)state;
    lq_outcome_res_t r;
    classify_curl(&r, CURLE_OPERATION_TIMEDOUT, "Operation timed out after 1000 milliseconds");
    assert_int_equal(r.outcome, LQ_OUTCOME_RETRYABLE);
    assert_string_equal(r.error_code, "timeout");
    assert_non_null(strstr(r.error_message, "after 1000 milliseconds"));
    assert_null(r.body);
    lq_outcome_res_clear(&r);
    const int conn[] = {CURLE_COULDNT_CONNECT,
                        CURLE_COULDNT_RESOLVE_HOST,
                        CURLE_SSL_CONNECT_ERROR,
                        CURLE_GOT_NOTHING,
                        CURLE_PARTIAL_FILE,
                        CURLE_RECV_ERROR,
                        CURLE_SEND_ERROR,
                        CURLE_PEER_FAILED_VERIFICATION,
                        CURLE_HTTP2,
                        CURLE_HTTP2_STREAM,
                        CURLE_SSL_CACERT_BADFILE,
                        CURLE_COULDNT_RESOLVE_PROXY,
                        CURLE_WEIRD_SERVER_REPLY};
    for (size_t i = 0; i < sizeof conn / sizeof *conn; i++) {
        classify_curl(&r, conn[i], i % 2 ? "Connection refused" : "");
        assert_int_equal(r.outcome, LQ_OUTCOME_RETRYABLE);
        assert_string_equal(r.error_code, "connection_error");
        const char *base = curl_easy_strerror((CURLcode)conn[i]);
        assert_memory_equal(r.error_message, base, strlen(base));
        if (i % 2)
            assert_non_null(strstr(r.error_message, ": Connection refused"));
        else
            assert_string_equal(r.error_message, base);
        lq_outcome_res_clear(&r);
    }
    classify_curl(&r, CURLE_URL_MALFORMAT, NULL);
    assert_int_equal(r.outcome, LQ_OUTCOME_FATAL);
    assert_string_equal(r.error_code, "invalid_url");
    lq_outcome_res_clear(&r);
    /* A partial body after a 200 is still a connection error, no body. */
    lq_outcome_in_t in = {
        .curl_code = CURLE_PARTIAL_FILE, .status = 200, .body = "{\"a\":", .body_len = 5};
    lq_outcome_classify(&in, &r);
    assert_int_equal(r.outcome, LQ_OUTCOME_RETRYABLE);
    assert_string_equal(r.error_code, "connection_error");
    assert_null(r.body);
    lq_outcome_res_clear(&r);
    /* Too large wins over the curl write error it causes. */
    lq_outcome_in_t big = {.curl_code = CURLE_WRITE_ERROR, .status = 200, .too_large = 1};
    lq_outcome_classify(&big, &r);
    assert_int_equal(r.outcome, LQ_OUTCOME_FATAL);
    assert_string_equal(r.error_code, "response_too_large");
    assert_null(r.body);
    lq_outcome_res_clear(&r);
    lq_outcome_local(&r, LQ_OUTCOME_FATAL, "unknown_upstream", "no\nsuch");
    assert_string_equal(r.error_message, "no such");
    lq_outcome_res_clear(&r);
}

/* Asserts that text is valid JSON on one line. */
static void assert_json_line(const char *text, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    assert_non_null(j);
    json_decref(j);
    assert_null(memchr(text, '\n', len));
    assert_null(memchr(text, '\r', len));
}

static void test_json_body(void **state)
{
    (void)state;
    size_t n = 0;
    char *b = lq_json_body("{\"a\": 1}", 8, &n);
    assert_string_equal(b, "{\"a\": 1}"); /* verbatim */
    assert_int_equal(n, 8);
    free(b);
    const char *pretty = "{\n  \"a\": \"x\\ny\",\r\n  \"b\": [1,\n2]\n}\n";
    b = lq_json_body(pretty, strlen(pretty), &n);
    assert_string_equal(b, "{   \"a\": \"x\\ny\",    \"b\": [1, 2] }");
    assert_json_line(b, n);
    free(b);
    b = lq_json_body("  42 ", 5, &n);
    assert_string_equal(b, "42");
    free(b);
    b = lq_json_body("\"str\"", 5, &n);
    assert_string_equal(b, "\"str\"");
    free(b);
    assert_null(lq_json_body("", 0, &n));
    assert_int_equal(n, 0);
    assert_null(lq_json_body(" \r\n ", 4, &n));
    /* Not JSON: quoted, escapes and invalid UTF-8 handled. */
    const char raw[] = "a\"b\\c\td\x01\xff\xc3\xa9\x00z";
    b = lq_json_body(raw, sizeof raw - 1, &n);
    assert_string_equal(b, "\"a\\\"b\\\\c\\td\\u0001\\ufffd\xc3\xa9\\u0000z\"");
    assert_json_line(b, n);
    free(b);
    b = lq_json_body("{\"a\":1", 6, &n); /* truncated JSON */
    assert_string_equal(b, "\"{\\\"a\\\":1\"");
    free(b);
    b = lq_json_body("{} {}", 5, &n); /* two values */
    assert_string_equal(b, "\"{} {}\"");
    free(b);
    /* Every byte value round-trips into valid JSON. */
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    b = lq_json_quote(all, sizeof all, &n);
    assert_json_line(b, n);
    free(b);
}

static char *join(const char *base, const char *url)
{
    char err[256];
    return lq_url_join(base, url, err, sizeof err);
}

static void expect_join(const char *base, const char *url, const char *want)
{
    char *got = join(base, url);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_url_join(void **state)
{
    (void)state;
    const char *cc = "/v1/chat/completions";
    expect_join("https://api.openai.com", cc, "https://api.openai.com/v1/chat/completions");
    expect_join("https://api.openai.com/", cc, "https://api.openai.com/v1/chat/completions");
    expect_join("https://api.openai.com/v1", cc, "https://api.openai.com/v1/chat/completions");
    expect_join("https://api.openai.com/v1/", cc, "https://api.openai.com/v1/chat/completions");
    expect_join("https://api.openai.com/v1//", cc, "https://api.openai.com/v1/chat/completions");
    expect_join("http://127.0.0.1:8080", cc, "http://127.0.0.1:8080/v1/chat/completions");
    expect_join("https://x.example/openai/v1", cc, "https://x.example/openai/v1/chat/completions");
    expect_join("https://x.example/v1beta", "/v1beta/models", "https://x.example/v1beta/models");
    /* Different versions, or a non-version segment, are not merged. */
    expect_join("https://x.example/v2", cc, "https://x.example/v2/v1/chat/completions");
    expect_join("https://x.example/api", "/api/x", "https://x.example/api/api/x");
    expect_join("https://x.example/v1", "/v1x/y", "https://x.example/v1/v1x/y");
    expect_join("https://x.example/v1", "/v1", "https://x.example/v1");
    expect_join("https://x.example/v1", "/v1?a=1", "https://x.example/v1?a=1");
    expect_join("https://v1", "/v1/a", "https://v1/v1/a"); /* host, not a path */
    /* Query strings on the base are kept after the path. */
    expect_join("https://az.example/openai/deployments/d?api-version=2024-06-01",
                "/chat/completions",
                "https://az.example/openai/deployments/d/chat/completions?api-version=2024-06-01");
    expect_join("https://az.example/x/?k=v", "/y?z=1", "https://az.example/x/y?z=1&k=v");
    /* The url must be a path. */
    assert_null(join("https://x.example", "v1/chat"));
    assert_null(join("https://x.example", "https://evil.example/steal"));
    assert_null(join("https://x.example", ""));
    assert_null(join("https://x.example", NULL));
    assert_null(join("https://x.example", "/a b"));
    assert_null(join("https://x.example", "/a\r\nHost: evil"));
}

/* Writes content to a temporary file; returns its path (static buffer). */
static const char *tmpfile_with(const char *content, size_t len)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/lq_test_key_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_key_file(void **state)
{
    (void)state;
    char err[256];
    const char *p = tmpfile_with("sk-test-123\n", 12);
    char *k = lq_read_key_file(p, err, sizeof err);
    assert_string_equal(k, "sk-test-123");
    free(k);
    unlink(p);
    p = tmpfile_with("  sk-abc\r\n\n", 11);
    k = lq_read_key_file(p, err, sizeof err);
    assert_string_equal(k, "sk-abc");
    free(k);
    unlink(p);
    p = tmpfile_with("sk-nonl", 7);
    k = lq_read_key_file(p, err, sizeof err);
    assert_string_equal(k, "sk-nonl");
    free(k);
    unlink(p);
    p = tmpfile_with("\n", 1);
    assert_null(lq_read_key_file(p, err, sizeof err));
    assert_non_null(strstr(err, "empty"));
    unlink(p);
    p = tmpfile_with("sk-a\nsk-b\n", 10); /* two lines: refused, not leaked */
    assert_null(lq_read_key_file(p, err, sizeof err));
    assert_null(strstr(err, "sk-"));
    unlink(p);
    assert_null(lq_read_key_file("/nonexistent/key", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/key"));
}

/* Returns the Authorization line of u's upstream name, or NULL. */
static const char *auth_of(const lq_upstreams_t *u, const char *name)
{
    const lq_upstream_t *up = lq_upstreams_find(u, name);
    assert_non_null(up);
    for (const struct curl_slist *l = up->headers; l; l = l->next)
        if (strncmp(l->data, "Authorization:", 14) == 0)
            return l->data;
    return NULL;
}

static void test_upstreams(void **state)
{
    (void)state;
    char err[256];
    char name[64];
    lq_key_env_name("LLMQ_API_KEY_", "fast-eu.1", name, sizeof name);
    assert_string_equal(name, "LLMQ_API_KEY_FAST_EU_1");

    unsetenv("LLMQ_API_KEY_FILE");
    unsetenv("LLMQ_API_KEY_DEFAULT");
    unsetenv("LLMQ_API_KEY_FILE_DEFAULT");
    unsetenv("LLMQ_API_KEY_FILE_FAST");
    setenv("LLMQ_API_KEY", "sk-default", 1);
    const char *p = tmpfile_with("sk-fast\n", 8);
    setenv("LLMQ_API_KEY_FILE_FAST", p, 1);
    unsetenv("LLMQ_API_KEY_FAST");
    unsetenv("LLMQ_API_KEY_LOCAL");
    unsetenv("LLMQ_API_KEY_FILE_LOCAL");

    lq_upstreams_t *u = lq_upstreams_new();
    assert_int_equal(lq_upstreams_add(u, "default", "https://api.openai.com/v1", err, sizeof err),
                     0);
    assert_int_equal(lq_upstreams_add_spec(u, "fast=http://127.0.0.1:9/", err, sizeof err), 0);
    assert_int_equal(lq_upstreams_add_spec(u, "local=http://localhost:8000", err, sizeof err), 0);
    assert_int_equal(lq_upstreams_add_spec(u, "fast=http://other", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add_spec(u, "noequals", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add_spec(u, "bad name=http://x", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add(u, "ftp", "ftp://x", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add(u, "nohost", "https://", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add_header(u, "OpenAI-Organization: org-1", err, sizeof err), 0);
    assert_int_equal(lq_upstreams_add_header(u, "Authorization: Bearer sk-x", err, sizeof err), -1);
    assert_null(strstr(err, "sk-x"));
    assert_int_equal(lq_upstreams_add_header(u, "no colon", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_add_header(u, "Bad Name: v", err, sizeof err), -1);
    assert_int_equal(lq_upstreams_finish(u, err, sizeof err), 0);
    assert_int_equal(lq_upstreams_count(u), 3);
    assert_string_equal(auth_of(u, "default"), "Authorization: Bearer sk-default");
    assert_string_equal(auth_of(u, NULL), "Authorization: Bearer sk-default");
    assert_string_equal(auth_of(u, "fast"), "Authorization: Bearer sk-fast");
    assert_null(auth_of(u, "local")); /* no fallback to the default key */
    assert_null(lq_upstreams_find(u, "missing"));
    int org = 0, ct = 0, ua = 0;
    for (const struct curl_slist *l = lq_upstreams_find(u, "local")->headers; l; l = l->next) {
        org += strcmp(l->data, "OpenAI-Organization: org-1") == 0;
        ct += strcmp(l->data, "Content-Type: application/json") == 0;
        ua += strcmp(l->data, "User-Agent: " LQ_USER_AGENT) == 0;
    }
    assert_int_equal(org, 1);
    assert_int_equal(ct, 1);
    assert_int_equal(ua, 1);

    /* A --header User-Agent replaces ours. */
    lq_upstreams_t *u2 = lq_upstreams_new();
    assert_int_equal(lq_upstreams_add(u2, "default", "http://x", err, sizeof err), 0);
    assert_int_equal(lq_upstreams_add_header(u2, "user-agent: mine/2", err, sizeof err), 0);
    assert_int_equal(lq_upstreams_finish(u2, err, sizeof err), 0);
    int uas = 0;
    for (const struct curl_slist *l = lq_upstreams_find(u2, NULL)->headers; l; l = l->next)
        uas += strncasecmp(l->data, "user-agent:", 11) == 0;
    assert_int_equal(uas, 1);
    lq_upstreams_destroy(&u2);

    /* A per-name key wins over LLMQ_API_KEY; both forms at once is an error. */
    setenv("LLMQ_API_KEY_DEFAULT", "sk-named-default", 1);
    assert_int_equal(lq_upstreams_finish(u, err, sizeof err), 0);
    assert_string_equal(auth_of(u, "default"), "Authorization: Bearer sk-named-default");
    setenv("LLMQ_API_KEY_FAST", "sk-both", 1);
    assert_int_equal(lq_upstreams_finish(u, err, sizeof err), -1);
    assert_non_null(strstr(err, "LLMQ_API_KEY_FAST"));
    assert_null(strstr(err, "sk-"));
    unsetenv("LLMQ_API_KEY_FAST");
    setenv("LLMQ_API_KEY_LOCAL", "bad key", 1);
    assert_int_equal(lq_upstreams_finish(u, err, sizeof err), -1);
    assert_null(strstr(err, "bad key"));
    unsetenv("LLMQ_API_KEY_LOCAL");
    lq_upstreams_destroy(&u);
    assert_null(u);
    unlink(p);
    unsetenv("LLMQ_API_KEY");
    unsetenv("LLMQ_API_KEY_DEFAULT");
    unsetenv("LLMQ_API_KEY_FILE_FAST");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_retry_after_values),
        cmocka_unit_test(test_retry_after_precedence),
        cmocka_unit_test(test_header_lines),
        cmocka_unit_test(test_anthropic_headers),
        cmocka_unit_test(test_classify_http),
        cmocka_unit_test(test_classify_curl),
        cmocka_unit_test(test_json_body),
        cmocka_unit_test(test_url_join),
        cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_upstreams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
