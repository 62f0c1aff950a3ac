/* Unit tests for broker/sentinel.c: parsing redis-sentinel:// URLs (the
 * query itself runs against real sentinels in tests/system/test_ha.py). */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "broker/sentinel.h"

#include <string.h>

static void test_full_url(void **state)
{
    (void)state;
    lq_sentinel_t s;
    char err[256] = "";
    assert_int_equal(lq_sentinel_parse(&s, "redis-sentinel://bob:s3cr@t@a:26379,b,c:26381/mq/3",
                                       err, sizeof err),
                     0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.host[0], "a");
    assert_int_equal(s.port[0], 26379);
    assert_string_equal(s.host[1], "b");
    assert_int_equal(s.port[1], 26379); /* default */
    assert_string_equal(s.host[2], "c");
    assert_int_equal(s.port[2], 26381);
    assert_string_equal(s.master, "mq");
    assert_int_equal(s.db, 3);
    assert_string_equal(s.user, "bob");
    assert_string_equal(s.pass, "s3cr@t"); /* the last @ ends the credentials */
}

static void test_minimal_url(void **state)
{
    (void)state;
    lq_sentinel_t s;
    char err[256] = "";
    assert_true(lq_sentinel_is_url("redis-sentinel://h/m"));
    assert_false(lq_sentinel_is_url("redis://h:6379/0"));
    assert_int_equal(lq_sentinel_parse(&s, "redis-sentinel://h/m", err, sizeof err), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.master, "m");
    assert_int_equal(s.db, 0);
    assert_string_equal(s.pass, "");
}

static void test_bad_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url, *msg;
    } bad[] = {
        {"redis-sentinel://h:26379", "master's name"},
        {"redis-sentinel://h:26379/", "master's name"},
        {"redis-sentinel:///m", "no sentinel"},
        {"redis-sentinel://h:0/m", "bad sentinel port"},
        {"redis-sentinel://h:x/m", "bad sentinel port"},
        {"redis-sentinel://:1/m", "bad sentinel host"},
        {"redis-sentinel://h/m/x", "bad database"},
        {"redis://h/m", "not a redis-sentinel"},
        {"redis-sentinel://a,b,c,d,e,f,g,h,i/m", "too many"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lq_sentinel_t s;
        char err[256] = "";
        assert_int_equal(lq_sentinel_parse(&s, bad[i].url, err, sizeof err), -1);
        if (!strstr(err, bad[i].msg))
            fail_msg("%s: got '%s', wanted '%s'", bad[i].url, err, bad[i].msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_url),
        cmocka_unit_test(test_minimal_url),
        cmocka_unit_test(test_bad_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
