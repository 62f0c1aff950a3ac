/* test_fake_http: the pure parts of llmq-fake-upstream (tests/fake): the
 * HTTP/1.1 request-head parser (partial reads, pipelined requests, bad
 * input, random bytes), the byte buffer's JSON escaping, the open-addressing
 * count table, and the behaviour module's responses (routing, echo of the
 * custom_id, auth, rate limiting, prefixes, /counts).
 * Through their headers; the test links llmq_fake_core. */
#define _GNU_SOURCE
#include "common/util.h"
#include "tests/fake/fake_behaviour.h"
#include "tests/fake/fake_http.h"
#include "tests/fake/fake_table.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

static const char s_post[] = "POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
                             "Host: localhost\r\n"
                             "Content-Type: application/json\r\n"
                             "Authorization: Bearer k1\r\n"
                             "Content-Length: 11\r\n"
                             "\r\n"
                             "{\"a\":\"xyz\"}";

/* Parses a NUL-terminated string. */
static lq_fake_http_rc_t s_parse(const char *s, lq_fake_req_t *r)
{
    return lq_fake_http_parse(s, strlen(s), r, NULL);
}

/* ---- parser ---- */

/* A complete POST is parsed with all its fields. */
static void test_parse_post(void **state)
{
    (void)state;
    lq_fake_req_t r;
    assert_int_equal(s_parse(s_post, &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.method_len, 4);
    assert_memory_equal(r.method, "POST", 4);
    assert_int_equal(r.path_len, 20);
    assert_memory_equal(r.path, "/v1/chat/completions", 20);
    assert_int_equal(r.target_len, 24);
    assert_int_equal(r.version_minor, 1);
    assert_int_equal(r.content_length, 11);
    assert_int_equal(r.head_len, strlen(s_post) - 11);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(r.transfer_encoding, 0);
    assert_int_equal(r.nheaders, 4);
    assert_int_equal(r.authorization_len, 9);
    assert_memory_equal(r.authorization, "Bearer k1", 9);
}

/* Every strict prefix of the head is INCOMPLETE (a partial read), and the
 * whole head parses the same at every split of the byte stream. */
static void test_parse_partial(void **state)
{
    (void)state;
    lq_fake_req_t r;
    size_t head = strlen(s_post) - 11;
    for (size_t n = 0; n < head; n++)
        assert_int_equal(lq_fake_http_parse(s_post, n, &r, NULL), LQ_FAKE_HTTP_INCOMPLETE);
    for (size_t n = head; n <= strlen(s_post); n++) {
        assert_int_equal(lq_fake_http_parse(s_post, n, &r, NULL), LQ_FAKE_HTTP_DONE);
        assert_int_equal(r.head_len, head);
    }
}

/* Three pipelined requests in one buffer are parsed one after the other. */
static void test_parse_pipelined(void **state)
{
    (void)state;
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "%sGET /stats HTTP/1.1\r\n\r\nPOST /reset HTTP/1.1\r\nConnection: close\r\n"
                     "Content-Length: 0\r\n\r\n",
                     s_post);
    size_t pos = 0;
    lq_fake_req_t r;
    assert_int_equal(lq_fake_http_parse(buf + pos, (size_t)n - pos, &r, NULL), LQ_FAKE_HTTP_DONE);
    pos += r.head_len + (size_t)r.content_length;
    assert_int_equal(lq_fake_http_parse(buf + pos, (size_t)n - pos, &r, NULL), LQ_FAKE_HTTP_DONE);
    assert_memory_equal(r.method, "GET", 3);
    assert_int_equal(r.content_length, -1);
    assert_int_equal(r.keep_alive, 1);
    pos += r.head_len;
    assert_int_equal(lq_fake_http_parse(buf + pos, (size_t)n - pos, &r, NULL), LQ_FAKE_HTTP_DONE);
    assert_memory_equal(r.path, "/reset", 6);
    assert_int_equal(r.keep_alive, 0);
    pos += r.head_len;
    assert_int_equal(pos, (size_t)n);
}

/* Keep-alive rules: HTTP/1.0 closes unless asked, Connection lists. */
static void test_parse_keep_alive(void **state)
{
    (void)state;
    lq_fake_req_t r;
    assert_int_equal(s_parse("GET / HTTP/1.0\r\n\r\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.keep_alive, 0);
    assert_int_equal(s_parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r),
                     LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(s_parse("GET / HTTP/1.1\r\nconnection: upgrade, CLOSE \r\n\r\n", &r),
                     LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.keep_alive, 0);
    assert_int_equal(s_parse("GET / HTTP/1.1\nX: y\n\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(s_parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(s_parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
                     LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.transfer_encoding, 1);
    assert_int_equal(s_parse("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n", &r),
                     LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.expect_continue, 1);
    assert_int_equal(
        s_parse("GET / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", &r),
        LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.content_length, 5);
}

/* Request targets in absolute form and with queries give the bare path. */
static void test_parse_targets(void **state)
{
    (void)state;
    lq_fake_req_t r;
    assert_int_equal(s_parse("GET http://h:8000/stats?a=b HTTP/1.1\r\n\r\n", &r),
                     LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.path_len, 6);
    assert_memory_equal(r.path, "/stats", 6);
    assert_int_equal(s_parse("GET http://h HTTP/1.1\r\n\r\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.path_len, 1);
    assert_int_equal(s_parse("OPTIONS * HTTP/1.1\r\n\r\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(s_parse("GET /a#frag HTTP/1.1\r\n\r\n", &r), LQ_FAKE_HTTP_DONE);
    assert_int_equal(r.path_len, 2);
}

/* Malformed heads are refused with the right code, even when incomplete. */
static void test_parse_bad(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        lq_fake_http_rc_t rc;
    } cases[] = {
        {"\x16\x03\x01\x02\x00", LQ_FAKE_HTTP_BAD}, /* TLS hello, rejected early */
        {"GET", LQ_FAKE_HTTP_INCOMPLETE},
        {"G(T / HTTP/1.1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET  / HTTP/1.1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1 \r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET /\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/2.0\r\n\r\n", LQ_FAKE_HTTP_BAD_VERSION},
        {"GET / HTTP/1.2\r\n\r\n", LQ_FAKE_HTTP_BAD_VERSION},
        {"GET / HTTP/1.x\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / FTP/1.1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET foo HTTP/1.1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nName : x\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length:\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", LQ_FAKE_HTTP_BAD},
        {"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", LQ_FAKE_HTTP_BAD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lq_fake_req_t r;
        const char *why = NULL;
        lq_fake_http_rc_t rc = lq_fake_http_parse(cases[i].in, strlen(cases[i].in), &r, &why);
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): got %d, want %d", i, cases[i].in, rc, cases[i].rc);
        if (rc < 0)
            assert_non_null(why);
    }
    /* A NUL byte inside a header value. */
    static const char nul[] = "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n";
    lq_fake_req_t r;
    assert_int_equal(lq_fake_http_parse(nul, sizeof nul - 1, &r, NULL), LQ_FAKE_HTTP_BAD);
}

/* Oversized heads and too many headers give TOO_LARGE; an endless header
 * line gives it as soon as the limit is passed. */
static void test_parse_limits(void **state)
{
    (void)state;
    size_t n = LQ_FAKE_HTTP_MAX_HEAD + 100;
    char *buf = malloc(n);
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    memset(buf + 19, 'a', n - 19);
    lq_fake_req_t r;
    assert_int_equal(lq_fake_http_parse(buf, LQ_FAKE_HTTP_MAX_HEAD, &r, NULL),
                     LQ_FAKE_HTTP_INCOMPLETE);
    assert_int_equal(lq_fake_http_parse(buf, n, &r, NULL), LQ_FAKE_HTTP_TOO_LARGE);
    memcpy(buf + n - 4, "\r\n\r\n", 4);
    assert_int_equal(lq_fake_http_parse(buf, n, &r, NULL), LQ_FAKE_HTTP_TOO_LARGE);
    free(buf);

    lq_fake_buf_t b = {0};
    lq_fake_buf_puts(&b, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < LQ_FAKE_HTTP_MAX_HEADERS; i++)
        lq_fake_buf_printf(&b, "X-%d: v\r\n", i);
    lq_fake_buf_t b2 = {0};
    lq_fake_buf_append(&b2, b.data, b.len);
    lq_fake_buf_puts(&b, "\r\n");
    assert_int_equal(lq_fake_http_parse(b.data, b.len, &r, NULL), LQ_FAKE_HTTP_DONE);
    lq_fake_buf_puts(&b2, "X-last: v\r\n\r\n");
    assert_int_equal(lq_fake_http_parse(b2.data, b2.len, &r, NULL), LQ_FAKE_HTTP_TOO_LARGE);
    lq_fake_buf_clear(&b);
    lq_fake_buf_clear(&b2);
}

/* Random bytes and random mutations of valid requests never crash the
 * parser (run under ASan) and never report a head longer than the input. */
static void test_parse_random(void **state)
{
    (void)state;
    srand(12345);
    char buf[600];
    for (int iter = 0; iter < 200000; iter++) {
        size_t n;
        if (iter % 2) {
            n = (size_t)rand() % sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)(rand() % 256);
        } else {
            n = strlen(s_post);
            memcpy(buf, s_post, n);
            int muts = 1 + rand() % 4;
            for (int m = 0; m < muts; m++)
                buf[rand() % n] = (char)(rand() % 256);
            n = (size_t)rand() % (n + 1);
        }
        /* Give the parser an exact-size heap copy so that ASan sees overreads. */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        lq_fake_req_t r;
        lq_fake_http_rc_t rc = lq_fake_http_parse(copy, n, &r, NULL);
        assert_true(rc >= LQ_FAKE_HTTP_BAD_VERSION && rc <= LQ_FAKE_HTTP_DONE);
        if (rc == LQ_FAKE_HTTP_DONE) {
            assert_true(r.head_len <= n);
            assert_true(r.path >= copy && r.path + r.path_len <= copy + n);
        }
        free(copy);
    }
}

/* ---- buffer ---- */

/* JSON escaping of quotes, backslashes and control bytes; UTF-8 passes. */
static void test_buf_json(void **state)
{
    (void)state;
    lq_fake_buf_t b = {0};
    const char in[] = "a\"b\\c\n\x01\xc3\xa9";
    lq_fake_buf_json_str(&b, in, sizeof in - 1);
    lq_fake_buf_append(&b, "", 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
    b.len = 0;
    lq_fake_buf_u64(&b, 0);
    lq_fake_buf_u64(&b, UINT64_MAX);
    lq_fake_buf_append(&b, "", 1);
    assert_string_equal(b.data, "018446744073709551615");
    lq_fake_buf_clear(&b);
    assert_null(b.data);
}

/* ---- count table ---- */

/* Counting, growth past many resizes, lookup, foreach and clear. */
static void test_table(void **state)
{
    (void)state;
    lq_fake_table_t *t = lq_fake_table_new();
    char key[32];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(key, sizeof key, "id-%d", i);
            assert_int_equal(lq_fake_table_incr(t, key, (size_t)n), (uint64_t)round + 1);
        }
    }
    assert_int_equal(lq_fake_table_incr(t, "", 0), 1);
    assert_int_equal(lq_fake_table_size(t), 100001);
    assert_int_equal(lq_fake_table_get(t, "id-99999", 8), 2);
    assert_int_equal(lq_fake_table_get(t, "id-100000", 9), 0);
    assert_int_equal(lq_fake_table_get(t, "", 0), 1);
    lq_fake_table_clear(t);
    assert_int_equal(lq_fake_table_size(t), 0);
    assert_int_equal(lq_fake_table_get(t, "id-1", 4), 0);
    assert_int_equal(lq_fake_table_incr(t, "id-1", 4), 1);
    lq_fake_table_destroy(&t);
    assert_null(t);
    lq_fake_table_destroy(&t);
}

/* ---- behaviour ---- */

/* Runs one request string through the parser and the behaviour. Returns
 * the status and leaves the response (head + body) in *out. */
static int s_run(lq_fake_bhv_t *b, const char *raw, lq_fake_buf_t *out, lq_fake_decision_t *d)
{
    lq_fake_req_t r;
    size_t n = strlen(raw);
    assert_int_equal(lq_fake_http_parse(raw, n, &r, NULL), LQ_FAKE_HTTP_DONE);
    size_t cl = r.content_length < 0 ? 0 : (size_t)r.content_length;
    assert_int_equal(r.head_len + cl, n);
    out->len = 0;
    lq_fake_bhv_handle(b, &r, raw + r.head_len, cl, r.keep_alive, out, d);
    lq_fake_buf_append(out, "", 1);
    out->len--;
    return d->status;
}

/* Builds a chat request for custom_id cid with extra headers. */
static char *s_chat(const char *cid, const char *headers)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"model\":\"mx\",\"messages\":[{\"role\":\"user\",\"content\":\"12345678\"}],"
             "\"max_tokens\":3,\"metadata\":{\"custom_id\":\"%s\"}}",
             cid);
    return xasprintf("POST /v1/chat/completions HTTP/1.1\r\n%sContent-Length: %zu\r\n\r\n%s",
                     headers, strlen(body), body);
}

/* Returns the parsed JSON body of the response in out. */
static json_t *s_body(const lq_fake_buf_t *out)
{
    const char *p = strstr(out->data, "\r\n\r\n");
    assert_non_null(p);
    json_t *j = json_loads(p + 4, 0, NULL);
    assert_non_null(j);
    return j;
}

/* A chat request is answered 200 with the custom_id echoed and usage set. */
static void test_bhv_chat(void **state)
{
    (void)state;
    lq_fake_cfg_t cfg = {.seed = 1};
    lq_fake_bhv_t *b = lq_fake_bhv_new(&cfg);
    lq_fake_buf_t out = {0};
    lq_fake_decision_t d;
    char *req = s_chat("job-7", "");
    assert_int_equal(s_run(b, req, &out, &d), 200);
    assert_int_equal(d.action, LQ_FAKE_SEND);
    assert_int_equal(d.api, 1);
    assert_non_null(strstr(out.data, "x-request-id: req_1\r\n"));
    assert_non_null(strstr(out.data, "Content-Type: application/json\r\n"));
    json_t *j = s_body(&out);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "mx");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "echo:job-7");
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 2);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 5);
    json_decref(j);
    lq_fake_bhv_done(b);

    /* Malformed JSON: 400, counted under the FNV key of the body. */
    const char *bad = "POST /v1/embeddings HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x:";
    assert_int_equal(s_run(b, bad, &out, &d), 400);
    lq_fake_bhv_done(b);
    assert_int_equal(s_run(b, "GET /nope HTTP/1.1\r\n\r\n", &out, &d), 404);
    assert_int_equal(d.api, 0);

    assert_int_equal(s_run(b, "GET /counts HTTP/1.1\r\n\r\n", &out, &d), 200);
    j = s_body(&out);
    assert_int_equal(json_object_size(j), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "job-7")), 1);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)lq_fnv1a64("{x:", 3));
    assert_int_equal(json_integer_value(json_object_get(j, hex)), 1);
    json_decref(j);

    assert_int_equal(s_run(b, "GET /stats HTTP/1.1\r\n\r\n", &out, &d), 200);
    j = s_body(&out);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "distinct_ids")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "inflight")), 0);
    json_t *bs = json_object_get(j, "by_status");
    assert_int_equal(json_integer_value(json_object_get(bs, "200")), 1);
    assert_int_equal(json_integer_value(json_object_get(bs, "400")), 1);
    assert_int_equal(json_integer_value(json_object_get(bs, "404")), 1);
    json_decref(j);

    assert_int_equal(s_run(b, "POST /reset HTTP/1.1\r\n\r\n", &out, &d), 200);
    assert_int_equal(s_run(b, "GET /counts HTTP/1.1\r\n\r\n", &out, &d), 200);
    assert_non_null(strstr(out.data, "\r\n\r\n{}"));
    free(req);
    lq_fake_buf_clear(&out);
    lq_fake_bhv_destroy(&b);
    assert_null(b);
}

/* Auth, prefixes, rate limit with its headers, drop and hang. */
static void test_bhv_failures(void **state)
{
    (void)state;
    lq_fake_cfg_t cfg = {.seed = 1,
                         .api_key = "k1",
                         .always_fail_prefix = "f-",
                         .bad_request_prefix = "b-",
                         .rate_limit = 0.001,
                         .burst = 2,
                         .latency_ms = 5};
    lq_fake_bhv_t *b = lq_fake_bhv_new(&cfg);
    lq_fake_buf_t out = {0};
    lq_fake_decision_t d;
    char *r;

    r = s_chat("x", "Authorization: Bearer nope\r\n");
    assert_int_equal(s_run(b, r, &out, &d), 401);
    assert_int_equal(d.delay_ms, 5);
    free(r);
    r = s_chat("f-1", "Authorization: Bearer k1\r\n");
    assert_int_equal(s_run(b, r, &out, &d), 500);
    assert_non_null(strstr(out.data, "x-ratelimit-limit-requests: 0\r\n"));
    free(r);
    r = s_chat("b-1", "authorization: bearer   k1\r\n");
    assert_int_equal(s_run(b, r, &out, &d), 400);
    free(r);
    r = s_chat("ok", "Authorization: Bearer k1\r\n");
    assert_int_equal(s_run(b, r, &out, &d), 429);
    assert_int_equal(d.delay_ms, 0);
    assert_non_null(strstr(out.data, "retry-after-ms: "));
    assert_non_null(strstr(out.data, "\"code\":\"rate_limit_exceeded\""));
    free(r);
    lq_fake_bhv_destroy(&b);

    lq_fake_cfg_t cfg2 = {.seed = 3, .p_drop = 1};
    b = lq_fake_bhv_new(&cfg2);
    r = s_chat("d", "");
    s_run(b, r, &out, &d);
    assert_int_equal(d.action, LQ_FAKE_DROP);
    assert_int_equal(out.len, 0);
    free(r);
    lq_fake_bhv_destroy(&b);

    lq_fake_cfg_t cfg3 = {.seed = 3, .p_hang = 1};
    b = lq_fake_bhv_new(&cfg3);
    r = s_chat("h", "");
    s_run(b, r, &out, &d);
    assert_int_equal(d.action, LQ_FAKE_HANG);
    free(r);
    lq_fake_bhv_destroy(&b);
    lq_fake_buf_clear(&out);
}

/* Reset durations are formatted like OpenAI's. */
static void test_bhv_duration(void **state)
{
    (void)state;
    char s[32];
    lq_fake_bhv_duration(0, s, sizeof s);
    assert_string_equal(s, "0ms");
    lq_fake_bhv_duration(250, s, sizeof s);
    assert_string_equal(s, "250ms");
    lq_fake_bhv_duration(1000, s, sizeof s);
    assert_string_equal(s, "1s");
    lq_fake_bhv_duration(1500, s, sizeof s);
    assert_string_equal(s, "1.5s");
    lq_fake_bhv_duration(150000, s, sizeof s);
    assert_string_equal(s, "2m30s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_post),      cmocka_unit_test(test_parse_partial),
        cmocka_unit_test(test_parse_pipelined), cmocka_unit_test(test_parse_keep_alive),
        cmocka_unit_test(test_parse_targets),   cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_limits),    cmocka_unit_test(test_parse_random),
        cmocka_unit_test(test_buf_json),        cmocka_unit_test(test_table),
        cmocka_unit_test(test_bhv_chat),        cmocka_unit_test(test_bhv_failures),
        cmocka_unit_test(test_bhv_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
