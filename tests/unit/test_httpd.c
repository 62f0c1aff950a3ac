/* Unit tests for common/httpd.c: the request parser, the address rule
 * (loopback unless told otherwise), and the listener against hostile
 * clients on loopback -- a slow sender (slowloris), an oversized request
 * line, garbage, a flood of idle connections -- with the loop stepped by
 * hand and its clock injected, so deadlines are exact, not timed. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/httpd.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the parser ---- */

static int s_parse(const char *s, size_t max, lq_httpd_req_t *req)
{
    return lq_http_parse(s, strlen(s), max, req);
}

static void test_parse_valid(void **state)
{
    (void)state;
    lq_httpd_req_t r;
    assert_int_equal(s_parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 8192, &r), LQ_HTTP_OK);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.path, "/metrics");
    assert_string_equal(r.query, "");
    assert_int_equal(r.minor, 1);
    assert_int_equal(s_parse("HEAD /m?a=1&b HTTP/1.0\n\n", 8192, &r), LQ_HTTP_OK);
    assert_string_equal(r.path, "/m");
    assert_string_equal(r.query, "a=1&b");
    assert_int_equal(r.minor, 0);
    assert_int_equal(s_parse("GET / HTTP/1.1\r\nA:\tb c\r\nX-Y: \r\n\r\n", 8192, &r), LQ_HTTP_OK);
}

static void test_parse_incomplete(void **state)
{
    (void)state;
    lq_httpd_req_t r;
    assert_int_equal(s_parse("", 8192, &r), LQ_HTTP_MORE);
    assert_int_equal(s_parse("GET /metr", 8192, &r), LQ_HTTP_MORE);
    assert_int_equal(s_parse("GET /metrics HTTP/1.1\r\n", 8192, &r), LQ_HTTP_MORE);
    assert_int_equal(s_parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", 8192, &r), LQ_HTTP_MORE);
}

static void test_parse_bad(void **state)
{
    (void)state;
    lq_httpd_req_t r;
    const char *bad[] = {
        "get /metrics HTTP/1.1\r\n\r\n",      "GET metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",      "GET /metrics\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",     "GET /metrics HTTP/1.1 \r\n\r\n",
        "GET /a\x01 HTTP/1.1\r\n\r\n",         "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n: v\r\n\r\n", "GET /metrics HTTP/1.1\r\nA: \x01\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA b: c\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (s_parse(bad[i], 8192, &r) != LQ_HTTP_BAD)
            fail_msg("accepted bad request %zu", i);
    }
    /* a NUL in the request line, before any LF */
    assert_int_equal(lq_http_parse("GET /\0x", 7, 8192, &r), LQ_HTTP_BAD);
}

static void test_parse_limits(void **state)
{
    (void)state;
    lq_httpd_req_t r;
    char *big = xmalloc(20000);
    memset(big, 'a', 20000);
    memcpy(big, "GET /", 5);
    assert_int_equal(lq_http_parse(big, 20000, 8192, &r), LQ_HTTP_TOO_LARGE);
    assert_int_equal(lq_http_parse(big, 8191, 8192, &r), LQ_HTTP_MORE);
    /* a target over LQ_HTTP_TARGET_MAX in a complete line is bad */
    snprintf(big + 2000, 20, " HTTP/1.1\r\n\r\n");
    assert_int_equal(lq_http_parse(big, strlen(big), 8192, &r), LQ_HTTP_BAD);
    free(big);
}

static void test_split_addr(void **state)
{
    (void)state;
    char host[64], port[8], err[128];
    const char *hp;
    assert_int_equal(lq_httpd_split_addr("9100", host, sizeof host, &hp, port, sizeof port, err,
                                         sizeof err), 0);
    assert_string_equal(hp, "127.0.0.1");
    assert_string_equal(port, "9100");
    assert_int_equal(lq_httpd_split_addr(":9100", host, sizeof host, &hp, port, sizeof port, err,
                                         sizeof err), 0);
    assert_string_equal(hp, "127.0.0.1");
    assert_int_equal(lq_httpd_split_addr("*:9100", host, sizeof host, &hp, port, sizeof port, err,
                                         sizeof err), 0);
    assert_null(hp);
    assert_int_equal(lq_httpd_split_addr("[::1]:80", host, sizeof host, &hp, port, sizeof port,
                                         err, sizeof err), 0);
    assert_string_equal(hp, "::1");
    assert_int_equal(lq_httpd_split_addr("0.0.0.0:1", host, sizeof host, &hp, port, sizeof port,
                                         err, sizeof err), 0);
    assert_string_equal(hp, "0.0.0.0");
    const char *bad[] = {"", "host:", "host:abc", "h:99999", "h:-1", "h: 80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(lq_httpd_split_addr(bad[i], host, sizeof host, &hp, port, sizeof port,
                                             err, sizeof err), -1);
}

/* ---- the listener ---- */

static uint64_t s_now;
static uint64_t s_clock(void *arg)
{
    (void)arg;
    return s_now;
}

static int s_handled;

static void s_handler(const lq_httpd_req_t *req, lq_httpd_resp_t *resp, void *arg)
{
    (void)arg;
    s_handled++;
    if (strcmp(req->path, "/metrics") != 0)
        return;
    resp->status = 200;
    resp->body = xstrdup("llmq_up 1\n");
    resp->body_len = strlen(resp->body);
}

typedef struct {
    lq_loop_t *loop;
    lq_httpd_t *h;
} s_fix_t;

static void s_setup(s_fix_t *f, int max_conns)
{
    f->loop = lq_loop_new();
    s_now = 1000000;
    lq_loop_set_clock(f->loop, s_clock, NULL);
    lq_httpd_opts_t o = {.max_conns = max_conns, .timeout_ms = 5000, .max_request = 8192};
    char err[256];
    f->h = lq_httpd_new(f->loop, "127.0.0.1:0", &o, s_handler, NULL, err, sizeof err);
    assert_non_null(f->h);
    s_handled = 0;
}

static void s_teardown(s_fix_t *f)
{
    lq_httpd_destroy(&f->h);
    assert_null(f->h);
    lq_loop_destroy(&f->loop);
}

/* Runs a few loop iterations without sleeping. */
static void s_pump(s_fix_t *f, int n)
{
    for (int i = 0; i < n; i++)
        lq_loop_run_once(f->loop, 1);
}

static int s_connect(const s_fix_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lq_httpd_port(f->h))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Reads what the server sent (non-blocking, after pumping). Returns the
 * byte count, 0 at EOF, -1 when nothing is there yet. */
static ssize_t s_recv(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap - 1, MSG_DONTWAIT);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

static void test_serves_and_404(void **state)
{
    (void)state;
    s_fix_t f;
    s_setup(&f, 8);
    int a = s_connect(&f), b = s_connect(&f), c = s_connect(&f);
    assert_int_equal(send(a, "GET /metrics HTTP/1.1\r\n\r\n", 25, 0), 25);
    assert_int_equal(send(b, "GET /other HTTP/1.1\r\n\r\n", 23, 0), 23);
    assert_int_equal(send(c, "POST /metrics HTTP/1.1\r\n\r\n", 26, 0), 26);
    s_pump(&f, 10);
    char buf[512];
    assert_true(s_recv(a, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nllmq_up 1\n"));
    assert_true(s_recv(b, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 404"));
    assert_true(s_recv(c, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 405"));
    assert_int_equal(s_handled, 2);
    lq_httpd_stats_t st;
    lq_httpd_stats(f.h, &st);
    assert_int_equal(st.open, 0);
    close(a);
    close(b);
    close(c);
    s_teardown(&f);
}

static void test_slowloris_closed_at_deadline(void **state)
{
    (void)state;
    s_fix_t f;
    s_setup(&f, 8);
    int fd = s_connect(&f);
    const char *req = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaa";
    char buf[256];
    /* one byte every 100 ms: each byte is progress, yet the deadline holds */
    for (size_t i = 0; i < strlen(req) && s_now < 1000000 + 4900; i++) {
        assert_int_equal(send(fd, req + i, 1, 0), 1);
        s_pump(&f, 2);
        s_now += 100;
        assert_int_equal(s_recv(fd, buf, sizeof buf), -1); /* still open, no answer */
    }
    s_now = 1000000 + 5000;
    s_pump(&f, 3);
    assert_int_equal(s_recv(fd, buf, sizeof buf), 0); /* closed */
    lq_httpd_stats_t st;
    lq_httpd_stats(f.h, &st);
    assert_int_equal(st.timed_out, 1);
    assert_int_equal(st.open, 0);
    assert_int_equal(s_handled, 0);
    close(fd);
    s_teardown(&f);
}

static void test_oversized_and_garbage(void **state)
{
    (void)state;
    s_fix_t f;
    s_setup(&f, 8);
    int big = s_connect(&f), junk = s_connect(&f), tls = s_connect(&f);
    char *line = xmalloc(9000);
    memset(line, 'a', 9000);
    memcpy(line, "GET /", 5);
    assert_int_equal(send(big, line, 9000, 0), 9000);
    assert_int_equal(send(junk, "\x00\x01\x02garbage\r\n\r\n", 14, 0), 14);
    assert_int_equal(send(tls, "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11, 0), 11);
    s_pump(&f, 10);
    char buf[256];
    assert_true(s_recv(big, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 431"));
    assert_true(s_recv(junk, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 400"));
    assert_true(s_recv(tls, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.1 400"));
    lq_httpd_stats_t st;
    lq_httpd_stats(f.h, &st);
    assert_int_equal(st.too_large, 1);
    assert_int_equal(st.bad, 2);
    assert_int_equal(st.open, 0);
    assert_int_equal(s_handled, 0);
    free(line);
    close(big);
    close(junk);
    close(tls);
    s_teardown(&f);
}

static void test_idle_flood_bounded(void **state)
{
    (void)state;
    enum { N = 2000, MAXC = 16 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < N + 100) {
        rl.rlim_cur = rl.rlim_max < N + 100 ? rl.rlim_max : N + 100;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int n = rl.rlim_cur > 200 ? (int)(rl.rlim_cur - 100 < N ? rl.rlim_cur - 100 : N) : 100;
    s_fix_t f;
    s_setup(&f, MAXC);
    int *fds = xmalloc(sizeof(int) * (size_t)n);
    lq_httpd_stats_t st;
    for (int i = 0; i < n; i++) {
        fds[i] = s_connect(&f);
        if (i % 50 == 49) {
            s_pump(&f, 2);
            lq_httpd_stats(f.h, &st);
            assert_true(st.open <= MAXC);
        }
    }
    s_pump(&f, n / 32 + 10);
    lq_httpd_stats(f.h, &st);
    assert_int_equal(st.accepted, n);
    assert_int_equal(st.open, MAXC);
    assert_int_equal(st.evicted, n - MAXC);
    /* a real scraper still gets its answer: it evicts the oldest idler */
    int ok = s_connect(&f);
    assert_int_equal(send(ok, "GET /metrics HTTP/1.1\r\n\r\n", 25, 0), 25);
    s_pump(&f, 5);
    char buf[256];
    assert_true(s_recv(ok, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "200 OK"));
    /* and the idlers left go at their deadline */
    s_now += 5000;
    s_pump(&f, 3);
    lq_httpd_stats(f.h, &st);
    assert_int_equal(st.open, 0);
    close(ok);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    s_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_incomplete),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_split_addr),
        cmocka_unit_test(test_serves_and_404),
        cmocka_unit_test(test_slowloris_closed_at_deadline),
        cmocka_unit_test(test_oversized_and_garbage),
        cmocka_unit_test(test_idle_flood_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
