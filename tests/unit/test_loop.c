/* Unit tests for common/loop.c: timers (order, stop, restart, injected
 * clock), fd events, before-sleep hooks, signals, stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/loop.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static uint64_t s_fake_now;
static uint64_t s_clock(void *arg)
{
    (void)arg;
    return s_fake_now;
}

static int s_order[16];
static int s_norder;

static void s_record(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_order[s_norder++] = (int)(intptr_t)arg;
}

static void test_timers_fire_in_deadline_order(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    lq_loop_set_clock(loop, s_clock, NULL);
    s_fake_now = 1000;
    s_norder = 0;
    lq_timer_t t[5];
    uint64_t after[5] = {50, 10, 30, 10, 0};
    for (int i = 0; i < 5; i++) {
        lq_timer_init(&t[i], s_record, (void *)(intptr_t)i);
        lq_timer_start(loop, &t[i], after[i]);
    }
    assert_int_equal(lq_loop_run_once(loop, 0), 1); /* only the 0 ms one */
    assert_int_equal(s_order[0], 4);
    s_fake_now = 1010;
    lq_loop_run_once(loop, 0);
    assert_int_equal(s_norder, 3);
    assert_int_equal(s_order[1], 1); /* same deadline: started first fires first */
    assert_int_equal(s_order[2], 3);
    s_fake_now = 1100;
    lq_loop_run_once(loop, 0);
    assert_int_equal(s_norder, 5);
    assert_int_equal(s_order[3], 2);
    assert_int_equal(s_order[4], 0);
    for (int i = 0; i < 5; i++)
        assert_false(lq_timer_active(&t[i]));
    lq_loop_destroy(&loop);
    assert_null(loop);
}

static void test_timer_stop_and_restart(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    lq_loop_set_clock(loop, s_clock, NULL);
    s_fake_now = 0;
    s_norder = 0;
    lq_timer_t a, b, c;
    lq_timer_init(&a, s_record, (void *)1);
    lq_timer_init(&b, s_record, (void *)2);
    lq_timer_init(&c, s_record, (void *)3);
    lq_timer_start(loop, &a, 10);
    lq_timer_start(loop, &b, 20);
    lq_timer_start(loop, &c, 30);
    lq_timer_stop(loop, &b);
    lq_timer_stop(loop, &b); /* twice is fine */
    assert_false(lq_timer_active(&b));
    lq_timer_start(loop, &a, 40); /* restart moves it later */
    s_fake_now = 35;
    lq_loop_run_once(loop, 0);
    assert_int_equal(s_norder, 1);
    assert_int_equal(s_order[0], 3);
    s_fake_now = 40;
    lq_loop_run_once(loop, 0);
    assert_int_equal(s_norder, 2);
    assert_int_equal(s_order[1], 1);
    lq_loop_destroy(&loop);
}

static void s_rearm_zero(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    int *count = arg;
    if (++*count < 3)
        lq_timer_start(loop, t, 0);
}

static void test_zero_timer_rearmed_in_callback_waits_an_iteration(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    int count = 0;
    lq_timer_t t;
    lq_timer_init(&t, s_rearm_zero, &count);
    lq_timer_start(loop, &t, 0);
    lq_loop_run_once(loop, 0);
    assert_int_equal(count, 1); /* no livelock inside one iteration */
    lq_loop_run_once(loop, 0);
    lq_loop_run_once(loop, 0);
    assert_int_equal(count, 3);
    lq_loop_destroy(&loop);
}

static int s_fd_events, s_fd_calls;
static void s_on_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)arg;
    s_fd_calls++;
    s_fd_events |= events;
    char buf[16];
    if (events & LQ_READABLE) {
        ssize_t n = read(fd, buf, sizeof buf);
        (void)n;
    }
}

static void test_fd_readable_writable_and_unwatch(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    int p[2];
    assert_int_equal(pipe(p), 0);
    s_fd_events = s_fd_calls = 0;
    assert_int_equal(lq_loop_watch(loop, p[0], LQ_READABLE, s_on_fd, NULL), 0);
    assert_int_equal(lq_loop_run_once(loop, 0), 0); /* nothing to read */
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(lq_loop_run_once(loop, 100), 1);
    assert_true(s_fd_events & LQ_READABLE);
    /* writable end */
    s_fd_events = 0;
    assert_int_equal(lq_loop_watch(loop, p[1], LQ_WRITABLE, s_on_fd, NULL), 0);
    lq_loop_run_once(loop, 100);
    assert_true(s_fd_events & LQ_WRITABLE);
    lq_loop_unwatch(loop, p[1]);
    lq_loop_unwatch(loop, p[1]); /* twice is fine */
    s_fd_calls = 0;
    lq_loop_unwatch(loop, p[0]);
    assert_int_equal(write(p[1], "y", 1), 1);
    assert_int_equal(lq_loop_run_once(loop, 0), 0);
    assert_int_equal(s_fd_calls, 0);
    /* level-triggered: unread data keeps reporting */
    lq_loop_watch(loop, p[0], LQ_READABLE, s_on_fd, NULL);
    assert_int_equal(write(p[1], "zzzzzzzzzzzzzzzzzzzzzzzz", 24), 24);
    lq_loop_run_once(loop, 0);
    lq_loop_run_once(loop, 0);
    assert_true(s_fd_calls >= 2);
    close(p[0]);
    close(p[1]);
    lq_loop_destroy(&loop);
}

static int s_hook_calls;
static void s_hook(lq_loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    s_hook_calls++;
}

static void test_before_sleep_runs_every_iteration(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    s_hook_calls = 0;
    assert_int_equal(lq_loop_add_before_sleep(loop, s_hook, NULL), 0);
    for (int i = 0; i < 5; i++)
        lq_loop_run_once(loop, 0);
    assert_int_equal(s_hook_calls, 5);
    lq_loop_destroy(&loop);
}

static void s_stop_cb(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)t;
    (void)arg;
    lq_loop_stop(loop);
}

static void s_on_usr1(lq_loop_t *loop, void *arg)
{
    (void)loop;
    *(int *)arg += 1;
}

static void test_run_stops_and_signals_arrive(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    int got = 0;
    assert_int_equal(lq_loop_on_signal(loop, SIGUSR1, s_on_usr1, &got), 0);
    raise(SIGUSR1);
    lq_timer_t t;
    lq_timer_init(&t, s_stop_cb, NULL);
    lq_timer_start(loop, &t, 20);
    assert_int_equal(lq_loop_run(loop), 0);
    assert_int_equal(got, 1);
    lq_loop_destroy(&loop);
    lq_loop_destroy(&loop); /* safe on NULL */
}

static void test_many_timers_heap_stays_ordered(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    lq_loop_set_clock(loop, s_clock, NULL);
    s_fake_now = 0;
    enum { N = 1000 };
    static lq_timer_t t[N];
    static int fired[N];
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        lq_timer_init(&t[i], s_record, NULL);
        lq_timer_start(loop, &t[i], x % 500);
    }
    for (int i = 0; i < N; i += 3)
        lq_timer_stop(loop, &t[i]);
    uint64_t last = 0;
    for (s_fake_now = 0; s_fake_now <= 500; s_fake_now++) {
        s_norder = 0;
        lq_loop_run_once(loop, 0);
        for (int i = 0; i < N; i++)
            if (!lq_timer_active(&t[i]) && i % 3 && !fired[i]) {
                fired[i] = 1;
                assert_true(t[i].due_ms <= s_fake_now);
                assert_true(t[i].due_ms >= last);
            }
        last = s_fake_now;
    }
    for (int i = 0; i < N; i++)
        assert_false(lq_timer_active(&t[i]));
    lq_loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_timer_stop_and_restart),
        cmocka_unit_test(test_zero_timer_rearmed_in_callback_waits_an_iteration),
        cmocka_unit_test(test_fd_readable_writable_and_unwatch),
        cmocka_unit_test(test_before_sleep_runs_every_iteration),
        cmocka_unit_test(test_run_stops_and_signals_arrive),
        cmocka_unit_test(test_many_timers_heap_stays_ordered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
