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

#define SEQ(s) lq_utf8_seq((const unsigned char *)(s), sizeof(s) - 1, &why)

/* Each sequence length decodes; each kind of bad sequence is named. */
static void test_seq(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(SEQ("a"), 1);
    assert_int_equal(SEQ("\xc3\xa9"), 2);
    assert_int_equal(SEQ("\xe2\x82\xac"), 3);
    assert_int_equal(SEQ("\xf0\x9f\x98\x80"), 4);
    assert_int_equal(SEQ("\xf4\x8f\xbf\xbf"), 4); /* U+10FFFF */
    assert_int_equal(SEQ("\xc0\xaf"), 0);
    assert_string_equal(why, "overlong encoding");
    assert_int_equal(SEQ("\xe0\x80\xaf"), 0);
    assert_string_equal(why, "overlong encoding");
    assert_int_equal(SEQ("\xed\xa0\x80"), 0);
    assert_string_equal(why, "surrogate code point");
    assert_int_equal(SEQ("\xe2\x82"), 0);
    assert_string_equal(why, "truncated sequence");
    assert_int_equal(SEQ("\xe2\x41\x41"), 0);
    assert_string_equal(why, "truncated sequence");
    assert_int_equal(SEQ("\x80"), 0);
    assert_string_equal(why, "unexpected continuation byte");
    assert_int_equal(SEQ("\xff"), 0);
    assert_string_equal(why, "byte that never appears in UTF-8");
    assert_int_equal(SEQ("\xf4\x90\x80\x80"), 0);
    assert_string_equal(why, "code point above U+10FFFF");
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
