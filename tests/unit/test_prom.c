/* Unit tests of common/prom.c: buffer growth, label escaping, histogram
 * series (cumulative buckets, +Inf, _sum, _count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"

static void test_printf_grows_and_header(void **state)
{
    (void)state;
    lq_prom_buf_t b = {0};
    for (int i = 0; i < 2000; i++)
        lq_prom_printf(&b, "x%d\n", i);
    assert_non_null(strstr(b.data, "x0\nx1\n"));
    assert_non_null(strstr(b.data, "x1999\n"));
    assert_int_equal(b.len, strlen(b.data));
    lq_prom_buf_clear(&b);
    assert_null(b.data);
    lq_prom_header(&b, "llmq_x_total", "counter", "Things.");
    assert_string_equal(b.data, "# HELP llmq_x_total Things.\n# TYPE llmq_x_total counter\n");
    lq_prom_buf_clear(&b);
}

static void test_label_escaping(void **state)
{
    (void)state;
    lq_prom_buf_t b = {0};
    lq_prom_label(&b, "a\"b\\c\nd");
    assert_string_equal(b.data, "a\\\"b\\\\c\\nd");
    lq_prom_buf_clear(&b);
}

static void test_histogram(void **state)
{
    (void)state;
    lq_prom_hist_t h = {0};
    lq_prom_hist_observe(&h, 0.01); /* first bucket */
    lq_prom_hist_observe(&h, 0.05); /* le is inclusive */
    lq_prom_hist_observe(&h, 3);    /* le=5 */
    lq_prom_hist_observe(&h, 5000); /* only +Inf */
    lq_prom_buf_t b = {0};
    lq_prom_hist_write(&b, "lat_seconds", "upstream=\"a\"", &h);
    assert_non_null(strstr(b.data, "lat_seconds_bucket{upstream=\"a\",le=\"0.05\"} 2\n"));
    assert_non_null(strstr(b.data, "lat_seconds_bucket{upstream=\"a\",le=\"2\"} 2\n"));
    assert_non_null(strstr(b.data, "lat_seconds_bucket{upstream=\"a\",le=\"5\"} 3\n"));
    assert_non_null(strstr(b.data, "lat_seconds_bucket{upstream=\"a\",le=\"1800\"} 3\n"));
    assert_non_null(strstr(b.data, "lat_seconds_bucket{upstream=\"a\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(b.data, "lat_seconds_sum{upstream=\"a\"} 5003.060000\n"));
    assert_non_null(strstr(b.data, "lat_seconds_count{upstream=\"a\"} 4\n"));
    lq_prom_buf_clear(&b);
    lq_prom_hist_write(&b, "plain", "", &h);
    assert_non_null(strstr(b.data, "plain_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(b.data, "plain_count 4\n"));
    lq_prom_buf_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printf_grows_and_header),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
