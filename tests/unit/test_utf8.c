/* Unit tests for common/utf8.c: the decoder, the checker with its column
 * and reason, the code-point counter and the cleaner. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

/* Each sequence length decodes; each kind of bad sequence is named. */
static void test_seq(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        const char *why; /* NULL: valid, len bytes long */
    } cases[] = {
        {"a", 1, NULL},
        {"\xc3\xa9", 2, NULL},
        {"\xe2\x82\xac", 3, NULL},
        {"\xf0\x9f\x98\x80", 4, NULL},
        {"\xf4\x8f\xbf\xbf", 4, NULL}, /* U+10FFFF */
        {"\xc0\xaf", 2, "overlong encoding"},
        {"\xe0\x80\xaf", 3, "overlong encoding"},
        {"\xed\xa0\x80", 3, "surrogate code point"},
        {"\xe2\x82", 2, "truncated sequence"},
        {"\xe2\x41\x41", 3, "truncated sequence"},
        {"\x80", 1, "unexpected continuation byte"},
        {"\xff", 1, "byte that never appears in UTF-8"},
        {"\xf4\x90\x80\x80", 4, "code point above U+10FFFF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        size_t n = lq_utf8_seq((const unsigned char *)cases[i].s, cases[i].len, &why);
        if (cases[i].why) {
            assert_int_equal(n, 0);
            assert_string_equal(why, cases[i].why);
        } else {
            assert_int_equal(n, cases[i].len);
        }
    }
    assert_int_equal(lq_utf8_seq((const unsigned char *)"\xc3", 1, NULL), 0);
}

/* The checker reports the character column, also past the ASCII fast path. */
static void test_check_and_chars(void **state)
{
    (void)state;
    long long col = 0;
    const char *why = NULL;
    const char *ok = "\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xc2\x80";
    assert_int_equal(lq_utf8_check(ok, strlen(ok), &col, &why), 0);
    const char *bad = "abcdefghij\xc3\xa9k\xed\xa0\x80";
    assert_int_equal(lq_utf8_check(bad, strlen(bad), &col, &why), -1);
    assert_int_equal(col, 13);
    assert_string_equal(why, "surrogate code point");
    assert_int_equal(lq_utf8_chars("a\xc3\xa9\xf0\x9f\x98\x80", 7), 3);
    assert_int_equal(lq_utf8_chars("", 0), 0);
}

/* Bad bytes become '?', controls spaces, and no character is cut. */
static void test_clean(void **state)
{
    (void)state;
    char *c = lq_utf8_clean("h\xe2\x82\xac\xffllo\tx", 10, 100);
    assert_string_equal(c, "h\xe2\x82\xac?llo x");
    free(c);
    c = lq_utf8_clean("ab\xe2\x82\xac", 5, 4);
    assert_string_equal(c, "ab");
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq),
        cmocka_unit_test(test_check_and_chars),
        cmocka_unit_test(test_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
