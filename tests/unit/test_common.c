/* Unit tests for common/map.c, common/opts.c and common/util.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/map.h"
#include "common/opts.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_map_put_get_del_many(void **state)
{
    (void)state;
    lq_map_t *m = lq_map_new();
    enum { N = 20000 };
    char key[32];
    for (intptr_t i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        assert_null(lq_map_puts(m, key, (void *)(i + 1)));
    }
    assert_int_equal(lq_map_len(m), N);
    for (intptr_t i = 0; i < N; i += 2) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        assert_ptr_equal(lq_map_dels(m, key), (void *)(i + 1));
    }
    assert_int_equal(lq_map_len(m), N / 2);
    for (intptr_t i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        void *v = lq_map_gets(m, key);
        if (i % 2)
            assert_ptr_equal(v, (void *)(i + 1));
        else
            assert_null(v);
    }
    assert_ptr_equal(lq_map_puts(m, "k1", (void *)7), (void *)2); /* replace */
    size_t pos = 0, seen = 0;
    while (lq_map_next(m, &pos, NULL, NULL, NULL))
        seen++;
    assert_int_equal(seen, N / 2);
    assert_null(lq_map_dels(m, "absent"));
    /* binary keys with NULs */
    assert_null(lq_map_put(m, "a\0b", 3, (void *)9));
    assert_ptr_equal(lq_map_get(m, "a\0b", 3), (void *)9);
    assert_null(lq_map_get(m, "a\0c", 3));
    lq_map_destroy(&m);
    assert_null(m);
}

static void test_opts_flags_env_and_errors(void **state)
{
    (void)state;
    const char *name = NULL;
    long long n = 5;
    int flag = 0;
    lq_strlist_t list = {0};
    const lq_opt_t opts[] = {
        {"name", "LQ_TEST_NAME", LQ_OPT_STR, &name, "NAME", "a name"},
        {"n", "LQ_TEST_N", LQ_OPT_INT, &n, "N", "a number", 1, 10},
        {"flag", NULL, LQ_OPT_FLAG, &flag, NULL, "a flag"},
        {"item", NULL, LQ_OPT_LIST, &list, "X", "repeatable"},
        {NULL},
    };
    setenv("LQ_TEST_NAME", "from-env", 1);
    setenv("LQ_TEST_N", "3", 1);
    char *argv1[] = {"prog", "pos1", "--n=7", "--flag", "--item", "a", "--item", "b", "pos2"};
    lq_opts_result_t res;
    char err[128];
    assert_int_equal(lq_opts_parse(opts, 9, argv1, 1, &res, err, sizeof err), 0);
    assert_string_equal(name, "from-env"); /* env used when no flag */
    assert_int_equal(n, 7);                /* flag wins over env */
    assert_int_equal(flag, 1);
    assert_int_equal(list.len, 2);
    assert_int_equal(res.npositionals, 2);
    assert_string_equal(res.positionals[1], "pos2");
    lq_strlist_clear(&list);

    char *bad_int[] = {"prog", "--n", "11"};
    assert_int_equal(lq_opts_parse(opts, 3, bad_int, 1, &res, err, sizeof err), -1);
    assert_non_null(strstr(err, "--n"));
    char *unknown[] = {"prog", "--nope"};
    assert_int_equal(lq_opts_parse(opts, 2, unknown, 1, &res, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown option"));
    char *missing[] = {"prog", "--name"};
    assert_int_equal(lq_opts_parse(opts, 2, missing, 1, &res, err, sizeof err), -1);
    setenv("LQ_TEST_N", "zz", 1);
    char *none[] = {"prog"};
    assert_int_equal(lq_opts_parse(opts, 1, none, 1, &res, err, sizeof err), -1);
    assert_non_null(strstr(err, "LQ_TEST_N"));
    unsetenv("LQ_TEST_N");
    char *help[] = {"prog", "--help"};
    assert_int_equal(lq_opts_parse(opts, 2, help, 1, &res, err, sizeof err), 0);
    assert_int_equal(res.help, 1);
    unsetenv("LQ_TEST_NAME");
}

static void test_parse_ll(void **state)
{
    (void)state;
    long long v;
    assert_int_equal(lq_parse_ll("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(lq_parse_ll("", 0, 100, &v), -1);
    assert_int_equal(lq_parse_ll("4x", 0, 100, &v), -1);
    assert_int_equal(lq_parse_ll("101", 0, 100, &v), -1);
    assert_int_equal(lq_parse_ll("99999999999999999999999", 0, 100, &v), -1);
}

/* The published FNV-1a test vectors, chaining, and the finaliser. */
static void test_hash(void **state)
{
    (void)state;
    assert_int_equal(lq_fnv1a64("", 0), 0xcbf29ce484222325ull);
    assert_int_equal(lq_fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
    assert_int_equal(lq_fnv1a64("foobar", 6), 0x85944171f73967e8ull);
    uint64_t h = lq_fnv1a64_add(LQ_FNV1A64_INIT, "foo", 3);
    assert_int_equal(lq_fnv1a64_add(h, "bar", 3), lq_fnv1a64("foobar", 6));
    assert_int_equal(lq_hash_mix(0), 0);
    assert_int_equal(lq_hash64("foobar", 6), lq_hash_mix(0x85944171f73967e8ull));
    /* fmix64 of 1, a known murmur3 value. */
    assert_int_equal(lq_hash_mix(1), 0xb456bcfc34c2cb2cull);
    /* Keys differing in one byte differ in the low bits used by tables. */
    assert_int_not_equal(lq_hash64("k1", 2) & 0xff, lq_hash64("k2", 2) & 0xff);
}

/* JSON string literals: the escapes jansson writes, the length predicted
 * exactly, UTF-8 and plain runs kept as they are. */
static void test_json_escape(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain text", 10, "\"plain text\""},
        {"a\"b\\c", 5, "\"a\\\"b\\\\c\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"x\001y\037", 4, "\"x\\u0001y\\u001f\""},
        {"nul\0!", 5, "\"nul\\u0000!\""},
        {"caf\xc3\xa9 /", 7, "\"caf\xc3\xa9 /\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        size_t len = lq_json_escaped_len(cases[i].in, cases[i].n);
        assert_int_equal(lq_json_escape(out, cases[i].in, cases[i].n), len);
        assert_int_equal(len, strlen(cases[i].out));
        assert_memory_equal(out, cases[i].out, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_put_get_del_many),
        cmocka_unit_test(test_opts_flags_env_and_errors),
        cmocka_unit_test(test_parse_ll),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
