/* Unit tests: the worker's validating JSON scanner (worker/jsonscan.c):
 * it accepts exactly what jansson accepts (checked against jansson on
 * fixed cases and on many mutated bodies), and reads the top-level
 * "usage" object the way the jansson code it replaced did. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proto/msg.h"
#include "worker/jsonscan.h"
#include "worker/outcome.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_jansson_ok(const char *s, size_t n)
{
    json_error_t e;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    json_decref(j);
    return j != NULL;
}

/* The scan's verdict must be jansson's wherever it gives one (it may ask,
 * -1), and the body lq_json_body keeps follows jansson's verdict: the text
 * itself (trimmed) when jansson accepts it, a JSON string otherwise. */
static void s_same(const char *s, size_t n)
{
    int want = n > 0 && s_jansson_ok(s, n);
    int got = lq_json_scan(s, n, NULL);
    if (got >= 0 && want != got)
        fail_msg("jansson says %d, scan says %d for [%.*s]", want, got, (int)n, s);
    size_t a = 0, z = n, blen = 0;
    while (a < z && strchr(" \t\r\n", s[a]) && s[a])
        a++;
    while (z > a && strchr(" \t\r\n", s[z - 1]) && s[z - 1])
        z--;
    char *b = lq_json_body(s, n, &blen);
    if (!b) {
        assert_int_equal(a, z);
        return;
    }
    if (!s_jansson_ok(b, blen))
        fail_msg("body not JSON: [%.*s]", (int)blen, b);
    int verbatim = blen == z - a && memcmp(b, s + a, blen) == 0;
    if (want != verbatim)
        fail_msg("body of [%.*s] kept %s", (int)n, s, verbatim ? "verbatim" : "quoted");
    free(b);
}

static void test_fixed_cases(void **state)
{
    (void)state;
    static const char *cases[] = {
        "{}", "[]", " {} ", "\n[1,2,3]\r\n", "0", "-0", "1.5e+3", "-1E-2", "true", "false",
        "null", "\"x\"", "\"\\u0000\"", "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ude00\"",
        "\"\\ud83dx\"", "\"\xc3\xa9\"", "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\t\"", "\"\\q\"",
        "{\"a\":1,}", "[1,]", "[,1]", "{,}", "{\"a\" 1}", "{\"a\":}", "{1:2}", "01", "1.",
        ".5", "1e", "-", "+1", "tru", "nul", "[1 2]", "{} {}", "[", "]", "{\"a\":[{}]}",
        "\"abc", "[\"a\",{\"b\":null,\"c\":[true,false,-1.25e-7]}]", "\"\\/\\b\\f\\n\\r\\t\"",
        "{\"usage\":{\"prompt_tokens\":1}}", " ", "[1]x", "NaN", "Infinity", "[-]",
        "{\"a\":1 \"b\":2}", "\"\\u12\"", "\"\\u12G4\"",
        "{\"a\\u0000b\":1}", "{\"a\":\"\\u0000\"}", "[\"\\u0000\"]",
        /* numbers at jansson's limits: 64-bit integers, doubles */
        "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "-9223372036854775809", "123456789012345678901234567890", "1e308", "1e309",
        "-1.5e999", "1e-999", "0.0e999", "[1,2e400]", "{\"usage\":{\"prompt_tokens\":1e999}}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_same(cases[i], strlen(cases[i]));
    s_same("\"a\0b\"", 5); /* a raw NUL in a string */
    /* every byte that matters, at every offset of a long string (the scan
     * reads strings 8 bytes at a time) */
    static const unsigned char odd[] = {'"', '\\', 0x01, 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xff};
    for (size_t at = 1; at < 40; at++) {
        for (size_t k = 0; k < sizeof odd; k++) {
            char b[48];
            memset(b, 'a', sizeof b);
            b[0] = '"';
            b[41] = '"';
            b[at] = (char)odd[k];
            s_same(b, 42);
        }
    }
    s_same("[1]\0", 4);
}

static void test_depth(void **state)
{
    (void)state;
    size_t n = LQ_JSONSCAN_MAX_DEPTH + 1;
    char *b = malloc(2 * n);
    memset(b, '[', n);
    memset(b + n, ']', n);
    s_same(b, 2 * n);             /* one level too deep for both */
    s_same(b + 1, 2 * n - 2);     /* at the limit */
    free(b);
}

/* Mutations of a realistic body: every single-byte change to a few
 * characters that matter to the grammar must be judged alike. */
static void test_mutations(void **state)
{
    (void)state;
    const char *base =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"h\\u00e9llo \\\"x\\\"\"},"
        "\"finish_reason\":null,\"x\":[true,false,-1.5e3]}],"
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}";
    size_t n = strlen(base);
    static const char subst[] = "{}[],:\"\\ 0-.eEtfnu\x01\xc3\x80x";
    char *b = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof subst - 1; k++) {
            memcpy(b, base, n);
            b[i] = subst[k];
            s_same(b, n);
        }
        /* deletion and truncation */
        memcpy(b, base, i);
        memcpy(b + i, base + i + 1, n - i - 1);
        s_same(b, n - 1);
        s_same(base, i);
    }
    free(b);
}

static lq_json_usage_t s_usage(const char *s, int want_valid)
{
    lq_json_usage_t u;
    assert_int_equal(lq_json_scan(s, strlen(s), &u), want_valid);
    return u;
}

static void test_usage(void **state)
{
    (void)state;
    lq_json_usage_t u = s_usage(
        "{\"a\":{\"usage\":{\"prompt_tokens\":9}},\"usage\":{\"prompt_tokens\":12,"
        "\"x\":{\"completion_tokens\":5},\"completion_tokens\":34}}",
        1);
    assert_int_equal(u.prompt_tokens, 12);
    assert_int_equal(u.completion_tokens, 34);
    assert_int_equal(u.input_tokens, -1);
    u = s_usage("{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}", 1);
    assert_int_equal(u.input_tokens, 3);
    assert_int_equal(u.output_tokens, 4);
    assert_int_equal(u.prompt_tokens, -1);
    /* negative, fractional, string, repeated: as json_is_integer/last wins */
    u = s_usage("{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1.0,"
                "\"input_tokens\":\"3\",\"output_tokens\":4,\"output_tokens\":null}}",
                1);
    assert_int_equal(u.prompt_tokens, -1);
    assert_int_equal(u.completion_tokens, -1);
    assert_int_equal(u.input_tokens, -1);
    assert_int_equal(u.output_tokens, -1);
    /* the last "usage" wins, also when it is not an object */
    u = s_usage("{\"usage\":{\"prompt_tokens\":1},\"usage\":[{\"prompt_tokens\":2}]}", 1);
    assert_int_equal(u.prompt_tokens, -1);
    u = s_usage("{\"usage\":{\"prompt_tokens\":1},\"usage\":{\"prompt_tokens\":2}}", 1);
    assert_int_equal(u.prompt_tokens, 2);
    /* only the top level counts */
    u = s_usage("[{\"usage\":{\"prompt_tokens\":1}}]", 1);
    assert_int_equal(u.prompt_tokens, -1);
    u = s_usage("{\"usage\":{\"prompt_tokens\":1}", 0);
    /* a number jansson may refuse: the scan asks (-1) */
    u = s_usage("{\"usage\":{\"prompt_tokens\":99999999999999999999}}", -1);
    assert_int_equal(u.prompt_tokens, -1);
    u = s_usage("[1.5e-300]", -1);
    u = s_usage("[1.5e-30, 12345678901234567, -0.25]", 1);
}

static void test_outcome_ok(void **state)
{
    (void)state;
    const char *body = "{\"usage\":{\"input_tokens\":7,\"completion_tokens\":8}}\n";
    lq_outcome_in_t in = {.status = 200, .body = body, .body_len = strlen(body)};
    lq_outcome_res_t r;
    lq_outcome_classify(&in, &r);
    assert_int_equal(r.outcome, LQ_OUTCOME_OK);
    assert_int_equal(r.prompt_tokens, 7);
    assert_int_equal(r.completion_tokens, 8);
    assert_int_equal(r.body_len, strlen(body) - 1);
    lq_outcome_res_clear(&r);
    in.body = "not json";
    in.body_len = 8;
    lq_outcome_classify(&in, &r);
    assert_int_equal(r.outcome, LQ_OUTCOME_OK);
    assert_string_equal(r.body, "\"not json\"");
    assert_int_equal(r.prompt_tokens, -1);
    lq_outcome_res_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_cases), cmocka_unit_test(test_depth),
        cmocka_unit_test(test_mutations),   cmocka_unit_test(test_usage),
        cmocka_unit_test(test_outcome_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
