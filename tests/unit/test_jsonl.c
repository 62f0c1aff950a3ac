/* Tests of the submit input reader: client/jsonl.c, with client/jobline.c,
 * client/jobscan.c and client/idset.c, through their headers (the test
 * links llmq_client_core).
 *
 * Most tests write an input to a temp file (mkstemp, removed after) and
 * compare a transcript of everything lq_jsonl_next() returned: one line per
 * call, "LINE ID EST" for a job, the error without its FILE prefix for an
 * error, "EOF" or "FATAL..." at the end. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/idset.h"
#include "client/jobline.h"
#include "client/jobscan.h"
#include "client/jsonl.h"
#include "common/utf8.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---- */

/* Writes data to a new temp file; returns its path (heap). */
static char *t_tmp(const char *data, size_t n)
{
    char tmpl[] = "/tmp/test_jsonl_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(fd, data + off, n - off);
        assert_true(k > 0);
        off += (size_t)k;
    }
    close(fd);
    return xstrdup(tmpl);
}

typedef struct {
    char *s;
    size_t n;
} t_out_t;

static void t_add(t_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void t_add(t_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *piece = NULL;
    assert_true(vasprintf(&piece, fmt, ap) >= 0);
    va_end(ap);
    size_t k = strlen(piece);
    o->s = xrealloc(o->s, o->n + k + 1);
    memcpy(o->s + o->n, piece, k + 1);
    o->n += k;
    free(piece);
}

/* Runs r to the end (at most max calls); returns the transcript (heap). */
static char *t_drain(lq_jsonl_t *r, const char *path, int max)
{
    t_out_t o = {xstrdup(""), 0};
    size_t plen = strlen(path);
    for (int i = 0; i < max; i++) {
        lq_job_spec_t s;
        int rc = lq_jsonl_next(r, &s);
        const char *err = lq_jsonl_error(r);
        if (rc == LQ_JSONL_JOB) {
            assert_int_equal(strlen(s.body), s.body_len);
            t_add(&o, "%lld %s %lld\n", lq_jsonl_line(r), s.custom_id, (long long)s.est_tokens);
            continue;
        }
        if (rc != LQ_JSONL_EOF)
            assert_memory_equal(err, path, plen);
        if (rc == LQ_JSONL_BAD) {
            t_add(&o, "%s\n", err + plen);
            continue;
        }
        t_add(&o, rc == LQ_JSONL_EOF ? "EOF\n" : "FATAL%s\n", err + plen);
        break;
    }
    return o.s;
}

/* Writes data, reads it all with opts, removes the file. */
static char *t_run(const char *data, size_t n, const lq_jsonl_opts_t *opts)
{
    char *path = t_tmp(data, n);
    lq_jsonl_t *r = lq_jsonl_new(path, opts);
    char *out = t_drain(r, path, 100000);
    lq_jsonl_destroy(&r);
    assert_null(r);
    unlink(path);
    free(path);
    return out;
}

#define T_EXPECT(data, opts, want)                                                                 \
    do {                                                                                           \
        char *got_ = t_run(data, sizeof(data) - 1, opts);                                          \
        assert_string_equal(got_, want);                                                           \
        free(got_);                                                                                \
    } while (0)

#define L(id)                                                                                      \
    "{\"custom_id\":\"" id "\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","              \
    "\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"abcd\"}]}}"

/* ---- the happy path ---- */

static void test_valid_file(void **state)
{
    (void)state;
    T_EXPECT(L("a") "\n" L("b") "\n" L("c") "\n", NULL, "1 a 17\n2 b 17\n3 c 17\nEOF\n");
}

static void test_spec_fields(void **state)
{
    (void)state;
    const char data[] =
        "{\"custom_id\":\"x\\u00e9\", \"method\":\"POST\", \"url\":\"/v1/embeddings\","
        " \"body\": {\"input\":\"abcdefgh\",\"model\":\"e\",\"t\":0.7} , \"extra\":1}\n";
    char *path = t_tmp(data, sizeof data - 1);
    lq_jsonl_t *r = lq_jsonl_new(path, NULL);
    lq_job_spec_t s;
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.custom_id, "x\xc3\xa9"); /* escapes decoded */
    assert_string_equal(s.url, "/v1/embeddings");
    /* the exact bytes of the body: 0.7 stays 0.7 */
    assert_string_equal(s.body, "{\"input\":\"abcdefgh\",\"model\":\"e\",\"t\":0.7}");
    assert_int_equal(s.body_len, strlen(s.body));
    assert_int_equal(s.est_tokens, 2); /* 8 chars / 4, no output for embeddings */
    assert_int_equal(lq_jsonl_count(r), 1);
    assert_int_equal(lq_jsonl_offset(r), sizeof data - 1);
    assert_int_equal(lq_jsonl_size(r), sizeof data - 1);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_EOF);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_EOF); /* stays at EOF */
    assert_string_equal(lq_jsonl_error(r), "");
    lq_jsonl_destroy(&r);
    lq_jsonl_destroy(&r); /* safe on NULL */
    unlink(path);
    free(path);
}

static void test_escaped_body_key(void **state)
{
    (void)state;
    /* "b\u006fdy" is "body": no literal span, so the body is re-serialised */
    const char data[] = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\","
                        "\"b\\u006fdy\":{ \"k\" : [1, 2] }}";
    char *path = t_tmp(data, sizeof data - 1);
    lq_jsonl_t *r = lq_jsonl_new(path, NULL);
    lq_job_spec_t s;
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.body, "{\"k\":[1,2]}");
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);
}

static void test_crlf_and_no_final_newline(void **state)
{
    (void)state;
    T_EXPECT(L("a") "\r\n" L("b") "\r\n" L("c"), NULL, "1 a 17\n2 b 17\n3 c 17\nEOF\n");
    T_EXPECT(L("a") "\n" L("b"), NULL, "1 a 17\n2 b 17\nEOF\n");
    /* a byte order mark at the start is skipped */
    T_EXPECT("\xEF\xBB\xBF" L("a") "\n", NULL, "1 a 17\nEOF\n");
}

/* ---- line structure ---- */

static void test_blank_lines(void **state)
{
    (void)state;
    T_EXPECT(L("a") "\n\n" L("b") "\n", NULL,
             "1 a 17\n:2: empty line (blank lines are only allowed at the end of the file)\n"
             "3 b 17\nEOF\n");
    T_EXPECT(L("a") "\n  \t\r\n\n" L("b") "\n", NULL,
             "1 a 17\n:2: empty line (blank lines are only allowed at the end of the file)\n"
             "4 b 17\nEOF\n");
    T_EXPECT("\n" L("a") "\n", NULL,
             ":1: empty line (blank lines are only allowed at the end of the file)\n"
             "2 a 17\nEOF\n");
    /* blank lines at the end are fine */
    T_EXPECT(L("a") "\n\n\r\n  \n", NULL, "1 a 17\nEOF\n");
}

static void test_empty_and_missing_file(void **state)
{
    (void)state;
    T_EXPECT("", NULL, "FATAL: no jobs in the file (it is empty)\n");
    T_EXPECT("\n\n \n", NULL, "FATAL: no jobs in the file (it is empty)\n");

    lq_job_spec_t s;
    lq_jsonl_t *r = lq_jsonl_new("/nonexistent/dir/x.jsonl", NULL);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_FATAL);
    assert_string_equal(lq_jsonl_error(r),
                        "/nonexistent/dir/x.jsonl: cannot open: No such file or directory");
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_FATAL); /* sticky */
    assert_int_equal(lq_jsonl_rewind(r), -1);
    assert_int_equal(lq_jsonl_size(r), 0);
    lq_jsonl_destroy(&r);

    r = lq_jsonl_new("/tmp", NULL);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_FATAL);
    assert_string_equal(lq_jsonl_error(r), "/tmp: is a directory");
    lq_jsonl_destroy(&r);
}

static void test_long_lines(void **state)
{
    (void)state;
    lq_jsonl_opts_t o = {.max_line = 180};
    /* L("a") is 129 bytes: fits; line 2 is 200 bytes, line 4 301 bytes without LF */
    t_out_t in = {xstrdup(""), 0};
    t_add(&in, "%s\n{\"x\":\"%0194d\n%s\r\n{%0300d", L("a"), 0, L("b"), 0);
    assert_int_equal(in.n, 130 + 201 + 131 + 301);
    char *got = t_run(in.s, in.n, &o);
    free(in.s);
    assert_string_equal(got, "1 a 17\n"
                             ":2: line too long (more than 180 bytes)\n"
                             "3 b 17\n"
                             ":4: line too long (more than 180 bytes)\n"
                             "EOF\n");
    free(got);

    /* exactly max_line bytes (+ CRLF) is accepted */
    o.max_line = strlen(L("a"));
    T_EXPECT(L("a") "\r\n" L("b") "\n", &o, "1 a 17\n2 b 17\nEOF\n");
    o.max_line--;
    T_EXPECT(L("a") "\r\n" L("b") "\n", &o,
             ":1: line too long (more than 128 bytes)\n:2: line too long (more than 128 bytes)\n"
             "EOF\n");

    /* a 3 MB line, far over the limit and over the read buffer, is skipped
     * block by block; the reader never grows its buffer for it */
    size_t n = 3u * 1024u * 1024u;
    char *huge = xmalloc(n + 400);
    memset(huge, 'z', n);
    huge[n] = '\n';
    strcpy(huge + n + 1, L("c") "\n");
    o.max_line = 1000;
    char *path = t_tmp(huge, strlen(huge));
    lq_jsonl_t *r = lq_jsonl_new(path, &o);
    got = t_drain(r, path, 10);
    assert_string_equal(got, ":1: line too long (more than 1000 bytes)\n2 c 17\nEOF\n");
    assert_true(lq_jsonl_buffer_bytes(r) <= LQ_JSONL_READ_BLOCK);
    free(got);
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);
    free(huge);
}

static void test_line_over_read_block(void **state)
{
    (void)state;
    /* a valid 600 KB line: the buffer grows and lines around it survive
     * the slide to the front of the buffer */
    size_t n = 600u * 1024u;
    char *text = xmalloc(n + 1);
    memset(text, 'q', n);
    text[n] = '\0';
    char *data =
        xasprintf("%s\n{\"custom_id\":\"big\",\"method\":\"POST\",\"url\":\"/v1/completions\","
                  "\"body\":{\"prompt\":\"%s\",\"max_tokens\":1}}\n%s\n",
                  L("a"), text, L("b"));
    char *got = t_run(data, strlen(data), NULL);
    char *want = xasprintf("1 a 17\n2 big %zu\n3 b 17\nEOF\n", n / 4 + 1);
    assert_string_equal(got, want);
    free(want);
    free(got);
    free(data);
    free(text);
}

/* ---- UTF-8 ---- */

static void test_invalid_utf8(void **state)
{
    (void)state;
#define U(bytes) "{\"custom_id\":\"\xc3\xa9" bytes "\"}\n" /* the bad bytes are character 16 */
    T_EXPECT(U("\xc0\xaf") U("\xe0\x80\xaf") U("\xf0\x80\x80\xaf"), NULL,
             ":1:16: invalid UTF-8 (overlong encoding)\n"
             ":2:16: invalid UTF-8 (overlong encoding)\n"
             ":3:16: invalid UTF-8 (overlong encoding)\nEOF\n");
    T_EXPECT(U("\xed\xa0\x80") U("\xed\xbf\xbf"), NULL,
             ":1:16: invalid UTF-8 (surrogate code point)\n"
             ":2:16: invalid UTF-8 (surrogate code point)\nEOF\n");
    T_EXPECT(U("\xe2\x82") U("\xe2\x41") U("\xf0\x9f\x98"), NULL,
             ":1:16: invalid UTF-8 (truncated sequence)\n"
             ":2:16: invalid UTF-8 (truncated sequence)\n"
             ":3:16: invalid UTF-8 (truncated sequence)\nEOF\n");
    T_EXPECT(U("\x80") U("\xff") U("\xf4\x90\x80\x80"), NULL,
             ":1:16: invalid UTF-8 (unexpected continuation byte)\n"
             ":2:16: invalid UTF-8 (byte that never appears in UTF-8)\n"
             ":3:16: invalid UTF-8 (code point above U+10FFFF)\nEOF\n");
    /* a truncated sequence at the very end of the last line */
    T_EXPECT(L("a") "\n\xe2\x82", NULL, "1 a 17\n:2:1: invalid UTF-8 (truncated sequence)\nEOF\n");
#undef U
    /* the largest valid forms pass the UTF-8 check */
    long long col;
    const char *why;
    assert_int_equal(
        lq_utf8_check("\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xc2\x80", 12, &col, &why), 0);
    assert_int_equal(lq_utf8_chars("a\xc3\xa9\xf0\x9f\x98\x80", 7), 3);
}

/* ---- JSON and fields ---- */

static void test_invalid_json(void **state)
{
    (void)state;
    T_EXPECT(L("a") "\n{\"custom_id\":\"a\",}\n", NULL,
             "1 a 17\n:2:18: invalid JSON: string or '}' expected near '}'\nEOF\n");
    /* columns count characters: the two-byte characters count one each */
    T_EXPECT("{\"\xc3\xa9\":\"\xc3\xbc\",x}\n", NULL,
             ":1:10: invalid JSON: string or '}' expected near 'x'\nEOF\n");
    T_EXPECT("{\"custom_id\":\"a\"\n{\"a\":1}x\n", NULL,
             ":1:16: invalid JSON: '}' expected near end of file\n"
             ":2:8: invalid JSON: end of file expected near 'x'\nEOF\n");
    T_EXPECT("{\"custom_id\":\"a\",\"custom_id\":\"b\"}\n", NULL,
             ":1:28: invalid JSON: duplicate object key near '\"custom_id\"'\nEOF\n");
    T_EXPECT("{\"a\":\"x\\u0000\"}\n{\"a\":99999999999999999999}\n", NULL,
             ":1:14: invalid JSON: \\u0000 is not allowed without JSON_ALLOW_NUL near "
             "'\"x\\u0000\"'\n"
             ":2:25: invalid JSON: too big integer near '99999999999999999999'\nEOF\n");
}

static void test_not_object(void **state)
{
    (void)state;
    T_EXPECT("[1,2]\n\"x\"\n42\nnull\n", NULL,
             ":1: line is not a JSON object (it is an array)\n"
             ":2: line is not a JSON object (it is a string)\n"
             ":3: line is not a JSON object (it is a number)\n"
             ":4: line is not a JSON object (it is null)\nEOF\n");
}

#define TAIL ",\"method\":\"POST\",\"url\":\"/v1/x\",\"body\":{}}\n"

static void test_custom_id_rules(void **state)
{
    (void)state;
    T_EXPECT("{\"method\":\"POST\",\"url\":\"/v1/x\",\"body\":{}}\n"
             "{\"custom_id\":\"\"" TAIL "{\"custom_id\":7" TAIL "{\"custom_id\":null" TAIL
             "{\"custom_id\":[\"a\"]" TAIL,
             NULL,
             ":1: missing \"custom_id\"\n"
             ":2: \"custom_id\" is empty\n"
             ":3: \"custom_id\" must be a string, not a number\n"
             ":4: \"custom_id\" must be a string, not null\n"
             ":5: \"custom_id\" must be a string, not an array\nEOF\n");

    char id[LQ_MAX_CUSTOM_ID + 2];
    memset(id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    char *data = xasprintf("{\"custom_id\":\"%s\"" TAIL "{\"custom_id\":\"%s\"" TAIL, id, id + 1);
    char *got = t_run(data, strlen(data), NULL);
    char *want =
        xasprintf(":1: \"custom_id\" is too long (513 bytes, limit 512)\n2 %s 16\nEOF\n", id + 1);
    assert_string_equal(got, want);
    free(want);
    free(got);
    free(data);
}

static void test_duplicate_custom_id(void **state)
{
    (void)state;
    T_EXPECT(L("a") "\n" L("b") "\n" L("a") "\n" L("b") "\n" L("c") "\n", NULL,
             "1 a 17\n2 b 17\n"
             ":3: duplicate custom_id \"a\" (first seen on line 1)\n"
             ":4: duplicate custom_id \"b\" (first seen on line 2)\n"
             "5 c 17\nEOF\n");
    /* ids are compared after decoding; quotes in the message are escaped */
    T_EXPECT("{\"custom_id\":\"q\\\"\"" TAIL "{\"custom_id\":\"\\u0071\\\"\"" TAIL, NULL,
             "1 q\" 16\n:2: duplicate custom_id \"q\\x22\" (first seen on line 1)\nEOF\n");
    /* a line with another error registers no id */
    T_EXPECT("{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/x\",\"body\":{}}\n" L("a") "\n",
             NULL, ":1: \"method\" must be \"POST\", not \"GET\"\n2 a 17\nEOF\n");
}

/* Many ids, far apart (several checkpoints), with only 2 or 1 hash bits so
 * that nearly every insertion meets equal hashes: only real duplicates may
 * be reported, each naming the right earlier line. */
static void test_duplicates_with_collisions(void **state)
{
    (void)state;
    for (unsigned bits = 1; bits <= 64; bits += 63) {
        t_out_t in = {xstrdup(""), 0}, want = {xstrdup(""), 0};
        int n = bits == 64 ? 5000 : 1200;
        for (int i = 1; i <= n; i++) {
            /* line i has id "id-i", except every 97th line repeats line i - 300 */
            int dup = i > 300 && i % 97 == 0;
            char id[32];
            snprintf(id, sizeof id, "id-%d", dup ? i - 300 : i);
            t_add(&in, "{\"custom_id\":\"%s\"" TAIL, id);
            if (dup)
                t_add(&want, ":%d: duplicate custom_id \"%s\" (first seen on line %d)\n", i, id,
                      i - 300);
            else
                t_add(&want, "%d %s 16\n", i, id);
        }
        t_add(&want, "EOF\n");
        lq_jsonl_opts_t o = {.id_hash_bits = bits == 64 ? 0 : bits};
        char *got = t_run(in.s, in.n, &o);
        assert_string_equal(got, want.s);
        free(got);
        free(in.s);
        free(want.s);
    }
}

static void test_method_url_body_rules(void **state)
{
    (void)state;
    T_EXPECT("{\"custom_id\":\"a\",\"url\":\"/x\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"post\",\"url\":\"/x\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":1,\"url\":\"/x\",\"body\":{}}\n",
             NULL,
             ":1: missing \"method\"\n"
             ":2: \"method\" must be \"POST\", not \"post\"\n"
             ":3: \"method\" must be a string, not a number\nEOF\n");
    T_EXPECT("{\"custom_id\":\"a\",\"method\":\"POST\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"v1/x\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":{},\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/a b\",\"body\":{}}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/\\n\",\"body\":{}}\n",
             NULL,
             ":1: missing \"url\"\n"
             ":2: \"url\" must start with \"/\" (a path such as /v1/chat/completions)\n"
             ":3: \"url\" must start with \"/\" (a path such as /v1/chat/completions)\n"
             ":4: \"url\" must be a string, not an object\n"
             ":5: \"url\" contains a space or control character\n"
             ":6: \"url\" contains a space or control character\nEOF\n");
    T_EXPECT("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\"}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\",\"body\":[]}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\",\"body\":\"{}\"}\n"
             "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\",\"body\":null}\n",
             NULL,
             ":1: missing \"body\"\n"
             ":2: \"body\" must be a JSON object, not an array\n"
             ":3: \"body\" must be a JSON object, not a string\n"
             ":4: \"body\" must be a JSON object, not null\nEOF\n");

    char url[LQ_MAX_URL + 2];
    memset(url, 'u', sizeof url - 1);
    url[0] = '/';
    url[sizeof url - 1] = '\0'; /* 2049 bytes */
    char *data =
        xasprintf("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"%s\",\"body\":{}}\n"
                  "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"%.2048s\",\"body\":{}}\n",
                  url, url);
    char *got = t_run(data, strlen(data), NULL);
    assert_string_equal(got, ":1: \"url\" is too long (2049 bytes, limit 2048)\n2 a 16\nEOF\n");
    free(got);
    free(data);
}

static void test_body_too_large(void **state)
{
    (void)state;
    size_t n = LQ_MAX_JOB_BODY;
    char *text = xmalloc(n + 1);
    memset(text, 'w', n);
    text[n] = '\0';
    char *data = xasprintf("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/x\",\"body\":"
                           "{\"prompt\":\"%s\"}}\n%s\n",
                           text, L("b"));
    char *got = t_run(data, strlen(data), NULL);
    assert_string_equal(got, ":1: \"body\" is too large (4194317 bytes, limit 4194304)\n"
                             "2 b 17\nEOF\n");
    free(got);
    free(data);
    free(text);
}

/* ---- the token estimate ---- */

/* est_tokens of a line with this url and body, by both parse paths. */
static long long t_est(const char *url, const char *body)
{
    char *line = xasprintf("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"%s\",\"body\":%s}",
                           url, body);
    char *copy = xstrdup(line);
    lq_jobline_t jl = {0}, jj = {0};
    assert_int_equal(lq_jobline_parse(&jl, line, strlen(line)), 0);
    assert_int_equal(lq_jobline_parse_json(&jj, copy, strlen(copy)), 0);
    assert_int_equal(jl.spec.est_tokens, jj.spec.est_tokens);
    long long est = jl.spec.est_tokens;
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    assert_int_equal(lq_jobline_estimate(url, b), est);
    json_decref(b);
    lq_jobline_clear(&jl);
    lq_jobline_clear(&jj);
    free(line);
    free(copy);
    return est;
}

static void test_token_estimate(void **state)
{
    (void)state;
    const char *chat = "/v1/chat/completions";
    /* 8 characters -> 2, plus the default 16 */
    assert_int_equal(t_est(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}]}"),
                     18);
    /* system + user, characters not bytes (5 + 3 = 8), max_tokens */
    assert_int_equal(t_est(chat, "{\"messages\":[{\"role\":\"system\",\"content\":\"abc\"},"
                                 "{\"role\":\"user\",\"content\":\"h\xc3\xa9llo\"}],"
                                 "\"max_tokens\":100}"),
                     102);
    /* content parts: text counts, images do not; max_completion_tokens wins */
    assert_int_equal(t_est(chat, "{\"messages\":[{\"role\":\"user\",\"content\":["
                                 "{\"type\":\"text\",\"text\":\"abcd\"},{\"type\":\"image_url\","
                                 "\"image_url\":{\"url\":\"http://example.com/a.png\"}}]}],"
                                 "\"max_tokens\":99,\"max_completion_tokens\":10}"),
                     11);
    /* rounding up: 9 characters -> 3 */
    assert_int_equal(t_est("/v1/completions", "{\"prompt\":\"abcdefghi\",\"max_tokens\":5}"), 8);
    assert_int_equal(t_est("/v1/completions", "{\"prompt\":[\"ab\",\"cd\"]}"), 17);
    /* token ids count one token each */
    assert_int_equal(t_est("/v1/completions", "{\"prompt\":[1,2,3]}"), 19);
    /* embeddings: no output tokens */
    assert_int_equal(t_est("/v1/embeddings", "{\"input\":\"abcd\",\"model\":\"e\"}"), 1);
    assert_int_equal(t_est("/v1/embeddings", "{\"input\":[\"abcd\",\"efgh\"]}"), 2);
    /* n choices multiply the output */
    assert_int_equal(
        t_est(chat, "{\"messages\":[{\"content\":\"abcd\"}],\"max_tokens\":10,\"n\":3}"), 31);
    /* escapes count as the characters they stand for; a pair is one */
    assert_int_equal(t_est(chat, "{\"messages\":[{\"content\":\"a\\nb\\u00e9\\ud83d\\ude00\"}]}"),
                     16 + 2);
    /* negative max_tokens counts 0; a real is not an integer: default */
    assert_int_equal(t_est(chat, "{\"messages\":[{\"content\":\"abcd\"}],\"max_tokens\":-5}"), 1);
    assert_int_equal(t_est(chat, "{\"messages\":[{\"content\":\"abcd\"}],\"max_tokens\":16.0}"),
                     17);
    /* responses API input items */
    assert_int_equal(t_est("/v1/responses", "{\"input\":[{\"role\":\"user\",\"content\":["
                                            "{\"type\":\"input_text\",\"text\":\"abcdefgh\"}]}],"
                                            "\"max_output_tokens\":50}"),
                     52);
    /* no prompt at all */
    assert_int_equal(t_est(chat, "{}"), 16);
    /* the walk stops at depth 16: deeper text does not count */
    char deep[512] = "{\"messages\":";
    for (int i = 0; i < 20; i++)
        strcat(deep, "[");
    strcat(deep, "\"abcdefgh\"");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    assert_int_equal(t_est(chat, deep), 16);
}

/* ---- the fast path agrees with jansson ---- */

static uint64_t t_rand_state = 0x9E3779B97F4A7C15ull;
static uint64_t t_rand(void)
{
    t_rand_state ^= t_rand_state << 13;
    t_rand_state ^= t_rand_state >> 7;
    t_rand_state ^= t_rand_state << 17;
    return t_rand_state;
}

/* Parses line both ways; when the fast path accepts, jansson must accept
 * with the same job. Returns 1 if the fast path accepted. */
static int t_compare(const char *line, size_t n, int *json_ok)
{
    char *a = xmalloc(n + 1), *b = xmalloc(n + 1);
    memcpy(a, line, n);
    memcpy(b, line, n);
    a[n] = b[n] = '\0';
    lq_job_spec_t fs = {0};
    long long col;
    const char *why;
    int fast = lq_utf8_check(a, n, &col, &why) == 0 && lq_jobscan(a, n, &fs);
    if (!fast)
        assert_memory_equal(a, line, n); /* unsure: untouched */
    lq_jobline_t jl = {0};
    *json_ok = lq_jobline_parse_json(&jl, b, n) == 0;
    if (fast) {
        if (!*json_ok)
            fail_msg("fast path accepted a line jansson refuses (%s): %.*s", jl.err, (int)n, line);
        assert_string_equal(fs.custom_id, jl.spec.custom_id);
        assert_string_equal(fs.url, jl.spec.url);
        assert_int_equal(fs.body_len, jl.spec.body_len);
        assert_memory_equal(fs.body, jl.spec.body, fs.body_len);
        assert_int_equal(fs.est_tokens, jl.spec.est_tokens);
    }
    lq_jobline_clear(&jl);
    free(a);
    free(b);
    return fast;
}

static void test_fast_path_matches_jansson(void **state)
{
    (void)state;
    static const char *corpus[] = {
        L("a"),
        "{\"custom_id\":\"r1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{"
        "\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
        "\\\"brief\\\""
        ".\\n\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"caf\xc3\xa9 \\u00e9"
        "\\ud83d\\ude00 \\/ \\\\ \\t\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}],"
        "\"temperature\":0.7,\"top_p\":1e-2,\"seed\":-12,\"n\":2,\"max_tokens\":123,"
        "\"logit_bias\":{\"50256\":-100},\"stop\":null,\"stream\":false,\"logprobs\":true,"
        "\"metadata\":{\"custom_id\":\"r1\",\"k\":[[],{},[{}],0,-0,1.5E+3]}}}",
        " { \"body\" : { \"prompt\" : [ 1 , 2 , [3,4] ] , \"max_tokens\" : 0 } ,\t\"url\":\"/v1/"
        "completions\" , \"method\" : \"POST\" ,\r \"custom_id\" : \"\xe2\x82\xac-1\" } ",
        "{\"custom_id\":\"e\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"input\":"
        "[\"a\",\"bb\",{\"text\":\"ccc\",\"content\":[\"dddd\"]}],\"model\":\"x\"}}",
        "{\"custom_id\":\"x\",\"method\":\"POST\",\"url\":\"/v1/responses\",\"body\":{\"input\":[{"
        "\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"}]}],"
        "\"max_output_tokens\":7,\"max_tokens\":\"no\",\"max_completion_tokens\":1.0}}",
        "{\"custom_id\":\"k\",\"method\":\"POST\",\"url\":\"/v1/x\",\"body\":{\"a\":{\"a\":{\"a\":"
        "1}},\"b\":[\"\\u0041\"],\"\xc3\xa9\":2,\"\xc3\xa9\xc3\xa9\":3,\"messages\":[[[[\"abc\"]]]]"
        "},"
        "\"extra\":{\"custom_id\":1}}",
    };
    /* bytes that make interesting mutations */
    static const char alphabet[] = "{}[]\":,\\ \t\r0123456789-+.eEu\"aflnrstu/\x01\x7f\xc3\xa9";
    int fast_valid = 0, accepted = 0, json_accepted = 0;
    for (size_t c = 0; c < sizeof corpus / sizeof *corpus; c++) {
        const char *line = corpus[c];
        size_t n = strlen(line);
        int ok;
        fast_valid += t_compare(line, n, &ok);
        assert_true(ok);
        char *m = xmalloc(n + 64);
        for (int iter = 0; iter < 4000; iter++) {
            memcpy(m, line, n);
            size_t mn = n;
            int edits = 1 + (int)(t_rand() % 3);
            for (int k = 0; k < edits && mn > 0; k++) {
                size_t pos = t_rand() % mn;
                char ch = alphabet[t_rand() % (sizeof alphabet - 1)];
                switch (t_rand() % 4) {
                case 0: /* replace */
                case 1:
                    m[pos] = ch;
                    break;
                case 2: /* delete */
                    memmove(m + pos, m + pos + 1, mn - pos - 1);
                    mn--;
                    break;
                default: /* insert */
                    memmove(m + pos + 1, m + pos, mn - pos);
                    m[pos] = ch;
                    mn++;
                    break;
                }
            }
            accepted += t_compare(m, mn, &ok);
            json_accepted += ok;
        }
        free(m);
    }
    /* every corpus line takes the fast path, and mutants often do too */
    assert_int_equal(fast_valid, sizeof corpus / sizeof *corpus);
    assert_true(accepted > 1000);
    assert_true(json_accepted >= accepted);
}

/* ---- prompts mode ---- */

static void test_prompts(void **state)
{
    (void)state;
    const char data[] = "Hello\n\nWorld \xc3\xa9\r\n   \nsay \"hi\" \\ \t\x01\nlast";
    char *path = t_tmp(data, sizeof data - 1);
    lq_jsonl_opts_t o = {
        .mode = LQ_JSONL_PROMPTS, .model = "m1", .system = "Be brief", .max_tokens = 7};
    lq_jsonl_t *r = lq_jsonl_new(path, &o);
    lq_job_spec_t s;
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.custom_id, "line-1");
    assert_string_equal(s.url, "/v1/chat/completions");
    assert_string_equal(s.body, "{\"model\":\"m1\",\"messages\":[{\"role\":\"system\",\"content\":"
                                "\"Be brief\"},{\"role\":\"user\",\"content\":\"Hello\"}],"
                                "\"max_tokens\":7}");
    assert_int_equal(s.body_len, strlen(s.body));
    assert_int_equal(s.est_tokens, (8 + 5 + 3) / 4 + 7);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.custom_id, "line-3"); /* line numbers stay true */
    assert_int_equal(lq_jsonl_line(r), 3);
    assert_non_null(strstr(s.body, "\"content\":\"World \xc3\xa9\"}")); /* no CR */
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.custom_id, "line-5");
    json_t *b = json_loads(s.body, 0, NULL); /* quotes, backslashes, controls escaped */
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(b, "messages"), 1), "content")),
                        "say \"hi\" \\ \t\x01");
    json_decref(b);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.custom_id, "line-6");
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_EOF);
    /* a second pass gives the same jobs */
    assert_int_equal(lq_jsonl_rewind(r), 0);
    char *got = t_drain(r, path, 100);
    assert_string_equal(got, "1 line-1 11\n3 line-3 11\n5 line-5 13\n6 line-6 10\nEOF\n");
    free(got);
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);

    /* no system text, no max_tokens */
    lq_jsonl_opts_t p = {.mode = LQ_JSONL_PROMPTS, .model = "m"};
    path = t_tmp("Hi\n", 3);
    r = lq_jsonl_new(path, &p);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_string_equal(s.body,
                        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}");
    assert_int_equal(s.est_tokens, 1 + 16);
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);
}

static void test_prompts_errors(void **state)
{
    (void)state;
    lq_jsonl_opts_t o = {.mode = LQ_JSONL_PROMPTS, .model = "m", .max_line = 10};
    T_EXPECT("ok\nab\xc3\n0123456789A\n\nfine\n", &o,
             "1 line-1 17\n"
             ":2:3: invalid UTF-8 (truncated sequence)\n"
             ":3: line too long (more than 10 bytes)\n"
             "5 line-5 17\nEOF\n");
    T_EXPECT("\n \n\r\n", &o, "FATAL: no prompts in the file (it is empty)\n");
    lq_jsonl_opts_t nm = {.mode = LQ_JSONL_PROMPTS};
    T_EXPECT("x\n", &nm, "FATAL: prompts mode needs a model name (--model) in valid UTF-8\n");
    lq_jsonl_opts_t bad = {.mode = LQ_JSONL_PROMPTS, .model = "m", .system = "\xff"};
    T_EXPECT("x\n", &bad, "FATAL: the system prompt (--system) is not valid UTF-8\n");
}

/* ---- passes ---- */

static void test_rewind(void **state)
{
    (void)state;
    const char data[] = L("a") "\n" L("b") "\n" L("c") "\n";
    char *path = t_tmp(data, sizeof data - 1);
    lq_jsonl_t *r = lq_jsonl_new(path, NULL);
    lq_job_spec_t s;

    /* a partial first pass, then a rewind: the id set starts again, so
     * line 1 is not a duplicate of itself */
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_JOB);
    assert_int_equal(lq_jsonl_rewind(r), 0);
    assert_int_equal(lq_jsonl_count(r), 0);
    assert_int_equal(lq_jsonl_line(r), 0);
    char *got = t_drain(r, path, 100);
    assert_string_equal(got, "1 a 17\n2 b 17\n3 c 17\nEOF\n");
    free(got);
    assert_true(lq_jsonl_idset_bytes(r) > 0);

    /* after a complete pass the set is freed; later passes stream alike */
    assert_int_equal(lq_jsonl_rewind(r), 0);
    assert_int_equal(lq_jsonl_idset_bytes(r), 0);
    for (int pass = 0; pass < 2; pass++) {
        got = t_drain(r, path, 100);
        assert_string_equal(got, "1 a 17\n2 b 17\n3 c 17\nEOF\n");
        free(got);
        assert_int_equal(lq_jsonl_rewind(r), 0);
    }

    /* a file that changed since it was opened is refused */
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs(L("d") "\n", f);
    fclose(f);
    assert_int_equal(lq_jsonl_rewind(r), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: the file changed since it was opened", path);
    assert_string_equal(lq_jsonl_error(r), want);
    assert_int_equal(lq_jsonl_next(r, &s), LQ_JSONL_FATAL);
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);
}

static void test_errors_continue(void **state)
{
    (void)state;
    const char data[] = "nope\n" L("a") "\n[]\n" L("b") "\n";
    char *path = t_tmp(data, sizeof data - 1);
    lq_jsonl_t *r = lq_jsonl_new(path, NULL);
    char *got = t_drain(r, path, 100);
    assert_string_equal(got, ":1:4: invalid JSON: invalid token near 'nope'\n2 a 17\n"
                             ":3: line is not a JSON object (it is an array)\n4 b 17\nEOF\n");
    assert_int_equal(lq_jsonl_errors(r), 2);
    assert_int_equal(lq_jsonl_count(r), 2);
    free(got);
    lq_jsonl_destroy(&r);
    unlink(path);
    free(path);
}

/* ---- the id set alone ---- */

static void test_idset(void **state)
{
    (void)state;
    lq_idset_t *s = lq_idset_new(0);
    char id[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof id, "req-%d", i);
        assert_int_equal(lq_idset_add(s, id, strlen(id), i + 1, NULL, NULL), 0);
    }
    assert_int_equal(lq_idset_count(s), 100000);
    assert_int_equal(lq_idset_add(s, "req-77", 6, 200000, NULL, NULL), 78);
    assert_int_equal(lq_idset_add(s, "x", 1, 0, NULL, NULL), -1);
    assert_int_equal(lq_idset_add(s, "x", 1, 1ll << 32, NULL, NULL), -1);
    /* 2^17 slots of 4 bytes + 12 bytes per id, with growth slack */
    assert_true(lq_idset_bytes(s) <= 262144u * 4u + 130000u * 12u);
    lq_idset_destroy(&s);
    assert_null(s);
    lq_idset_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_spec_fields),
        cmocka_unit_test(test_escaped_body_key),
        cmocka_unit_test(test_crlf_and_no_final_newline),
        cmocka_unit_test(test_blank_lines),
        cmocka_unit_test(test_empty_and_missing_file),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_line_over_read_block),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_custom_id_rules),
        cmocka_unit_test(test_duplicate_custom_id),
        cmocka_unit_test(test_duplicates_with_collisions),
        cmocka_unit_test(test_method_url_body_rules),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_token_estimate),
        cmocka_unit_test(test_fast_path_matches_jansson),
        cmocka_unit_test(test_prompts),
        cmocka_unit_test(test_prompts_errors),
        cmocka_unit_test(test_rewind),
        cmocka_unit_test(test_errors_continue),
        cmocka_unit_test(test_idset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
