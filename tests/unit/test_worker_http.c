/* Unit tests for the libcurl multi engine (worker/http.c) and the runner
 * (worker/runner.c) against a tiny HTTP/1.1 server living on the same
 * event loop: request headers and body as sent, response headers captured,
 * connection reuse, the response size cap (announced and chunked), the
 * per-request timeout, connection refused, unknown upstreams. */
#define _GNU_SOURCE
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "worker/http.h"
#include "worker/runner.h"
#include "worker/upstream.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MODE_OK, MODE_BIG, MODE_BIG_CHUNKED, MODE_HANG, MODE_429 };

typedef struct {
    lq_loop_t *loop;
    int lfd;
    int port;
    int mode;
    char req[8192]; /* last full request received */
    size_t req_len;
    int nreq, naccept;
    /* Per-connection buffers, indexed by fd. */
    char *cbuf[1024];
    size_t clen[1024];
} srv_t;

static srv_t srv;

/* Sends the canned response for the current mode. */
static void srv_respond(int fd)
{
    char out[16384];
    int n = 0;
    if (srv.mode == MODE_HANG)
        return;
    if (srv.mode == MODE_OK) {
        const char *body =
            "{\"id\":\"c1\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req_%d\r\n"
                     "x-ratelimit-remaining-requests: 99\r\nx-ratelimit-reset-tokens: 1m30s\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     srv.nreq, strlen(body), body);
    } else if (srv.mode == MODE_429) {
        const char *body = "{\"error\":{\"message\":\"Rate limit reached\"}}";
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\nretry-after-ms: 1500\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    } else if (srv.mode == MODE_BIG) {
        n = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
        memset(out + n, 'x', 5000);
        n += 5000;
    } else if (srv.mode == MODE_BIG_CHUNKED) {
        n = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (int c = 0; c < 5; c++) {
            n += snprintf(out + n, sizeof out - (size_t)n, "3e8\r\n");
            memset(out + n, 'y', 1000);
            n += 1000;
            n += snprintf(out + n, sizeof out - (size_t)n, "\r\n");
        }
        n += snprintf(out + n, sizeof out - (size_t)n, "0\r\n\r\n");
    }
    ssize_t w = write(fd, out, (size_t)n);
    (void)w;
}

/* Reads from a connection; answers each complete request. */
static void srv_on_conn(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    (void)arg;
    char tmp[4096];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
            return;
        lq_loop_unwatch(loop, fd);
        close(fd);
        free(srv.cbuf[fd]);
        srv.cbuf[fd] = NULL;
        srv.clen[fd] = 0;
        return;
    }
    srv.cbuf[fd] = xrealloc(srv.cbuf[fd], srv.clen[fd] + (size_t)r + 1);
    memcpy(srv.cbuf[fd] + srv.clen[fd], tmp, (size_t)r);
    srv.clen[fd] += (size_t)r;
    srv.cbuf[fd][srv.clen[fd]] = '\0';
    char *end = strstr(srv.cbuf[fd], "\r\n\r\n");
    if (!end)
        return;
    size_t hlen = (size_t)(end + 4 - srv.cbuf[fd]);
    const char *cl = strcasestr(srv.cbuf[fd], "content-length:");
    size_t blen = cl && cl < end ? (size_t)atol(cl + 15) : 0;
    if (srv.clen[fd] < hlen + blen)
        return;
    size_t total = hlen + blen;
    srv.req_len = total < sizeof srv.req - 1 ? total : sizeof srv.req - 1;
    memcpy(srv.req, srv.cbuf[fd], srv.req_len);
    srv.req[srv.req_len] = '\0';
    srv.nreq++;
    memmove(srv.cbuf[fd], srv.cbuf[fd] + total, srv.clen[fd] - total);
    srv.clen[fd] -= total;
    srv_respond(fd);
}

static void srv_on_accept(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    (void)arg;
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return;
    assert_true(c < 1024);
    fcntl(c, F_SETFL, O_NONBLOCK);
    srv.naccept++;
    lq_loop_watch(loop, c, LQ_READABLE, srv_on_conn, NULL);
}

static void srv_start(lq_loop_t *loop)
{
    memset(&srv, 0, sizeof srv);
    srv.loop = loop;
    srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(srv.lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(srv.lfd, 64), 0);
    socklen_t len = sizeof a;
    getsockname(srv.lfd, (struct sockaddr *)&a, &len);
    srv.port = ntohs(a.sin_port);
    fcntl(srv.lfd, F_SETFL, O_NONBLOCK);
    lq_loop_watch(loop, srv.lfd, LQ_READABLE, srv_on_accept, NULL);
}

static void srv_stop(void)
{
    for (int fd = 0; fd < 1024; fd++) {
        if (srv.cbuf[fd] || srv.clen[fd]) {
            free(srv.cbuf[fd]);
        }
    }
    lq_loop_unwatch(srv.loop, srv.lfd);
    close(srv.lfd);
}

/* ---- http engine ---- */

typedef struct {
    int done;
    int curl_code;
    long status;
    char body[8192];
    size_t body_len;
    int too_large;
    lq_resp_headers_t hdr;
    int new_connection;
} got_t;

static void on_done(const lq_http_resp_t *r, void *arg)
{
    got_t *g = arg;
    g->done++;
    g->curl_code = r->curl_code;
    g->status = r->status;
    g->body_len = r->body_len < sizeof g->body ? r->body_len : sizeof g->body;
    if (r->body)
        memcpy(g->body, r->body, g->body_len);
    g->too_large = r->too_large;
    g->hdr = *r->headers;
    g->new_connection = r->new_connection;
}

static void run_until(lq_loop_t *loop, const int *flag, int want, int max_ms)
{
    uint64_t end = lq_mono_ms() + (uint64_t)max_ms;
    while (*flag < want && lq_mono_ms() < end)
        lq_loop_run_once(loop, 10);
}

static lq_http_t *http_new(lq_loop_t *loop, size_t max)
{
    lq_http_config_t cfg = {.connect_timeout_ms = 2000, .max_response_bytes = max};
    return lq_http_new(loop, &cfg);
}

static void test_post_and_reuse(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    srv_start(loop);
    lq_http_t *h = http_new(loop, 4096);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", srv.port);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Authorization: Bearer sk-unit");
    hdrs = curl_slist_append(hdrs, "Expect:");
    const char *body = "{\"model\":\"m\",\"messages\":[]}";
    for (int i = 0; i < 3; i++) {
        got_t g = {0};
        lq_http_req_t req = {url, hdrs, body, strlen(body), 5000};
        assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
        assert_int_equal(g.done, 0); /* never synchronous */
        assert_int_equal(lq_http_active(h), 1);
        run_until(loop, &g.done, 1, 5000);
        assert_int_equal(g.done, 1);
        assert_int_equal(g.curl_code, 0);
        assert_int_equal(g.status, 200);
        assert_int_equal(g.too_large, 0);
        assert_non_null(memmem(g.body, g.body_len, "\"prompt_tokens\":3", 17));
        char rid[16];
        snprintf(rid, sizeof rid, "req_%d", i + 1);
        assert_string_equal(g.hdr.request_id, rid);
        assert_int_equal(g.hdr.rl_remaining_requests, 99);
        assert_int_equal(g.hdr.rl_reset_tokens_ms, 90000);
        assert_int_equal(g.new_connection, i == 0);
    }
    assert_int_equal(lq_http_active(h), 0);
    assert_int_equal(srv.naccept, 1); /* one connection, reused */
    assert_int_equal(lq_http_connections(h), 1);
    assert_non_null(strstr(srv.req, "POST /v1/chat/completions HTTP/1.1\r\n"));
    assert_non_null(strstr(srv.req, "Authorization: Bearer sk-unit\r\n"));
    assert_non_null(strstr(srv.req, "Content-Type: application/json\r\n"));
    assert_null(strstr(srv.req, "Expect:"));
    assert_non_null(strstr(srv.req, "\r\n\r\n{\"model\":\"m\",\"messages\":[]}"));
    curl_slist_free_all(hdrs);
    lq_http_destroy(&h);
    assert_null(h);
    srv_stop();
    lq_loop_destroy(&loop);
}

/* Transfers spread over multi handles of max_per_multi, each keeping its
 * own connections: two waves of 5 parallel transfers on multis of 2 open
 * 5 connections once and reuse all of them; recycled handles and their
 * buffers give each transfer its own response. */
static void test_multis_and_handle_reuse(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    srv_start(loop);
    lq_http_config_t cfg = {.connect_timeout_ms = 2000, .max_response_bytes = 65536,
                            .max_per_multi = 2};
    lq_http_t *h = lq_http_new(loop, &cfg);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", srv.port);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    const char *body = "{}";
    for (int wave = 0; wave < 2; wave++) {
        got_t g[5] = {{0}};
        int done = 0;
        for (int i = 0; i < 5; i++) {
            lq_http_req_t req = {url, hdrs, body, 2, 5000};
            assert_int_equal(lq_http_post(h, &req, on_done, &g[i]), 0);
        }
        assert_int_equal(lq_http_active(h), 5);
        uint64_t end = lq_mono_ms() + 5000;
        while (done < 5 && lq_mono_ms() < end) {
            lq_loop_run_once(loop, 10);
            done = 0;
            for (int i = 0; i < 5; i++)
                done += g[i].done;
        }
        int seen[16] = {0};
        for (int i = 0; i < 5; i++) {
            assert_int_equal(g[i].done, 1);
            assert_int_equal(g[i].status, 200);
            assert_int_equal(g[i].new_connection, wave == 0);
            assert_non_null(memmem(g[i].body, g[i].body_len, "\"prompt_tokens\":3", 17));
            int rid = atoi(g[i].hdr.request_id + 4); /* "req_N": each its own response */
            assert_true(rid >= 1 && rid <= 10 && !seen[rid]);
            seen[rid] = 1;
        }
    }
    assert_int_equal(srv.naccept, 5);
    assert_int_equal(lq_http_connections(h), 5);
    /* A big answer (5,000 bytes) and a small one on recycled handles. */
    srv.mode = MODE_BIG;
    got_t big = {0};
    lq_http_req_t req = {url, hdrs, body, 2, 5000};
    assert_int_equal(lq_http_post(h, &req, on_done, &big), 0);
    run_until(loop, &big.done, 1, 5000);
    assert_int_equal(big.status, 200);
    assert_int_equal(big.body_len, sizeof big.body < 5000 ? sizeof big.body : 5000);
    srv.mode = MODE_OK;
    got_t small = {0};
    assert_int_equal(lq_http_post(h, &req, on_done, &small), 0);
    run_until(loop, &small.done, 1, 5000);
    assert_int_equal(small.status, 200);
    assert_non_null(memmem(small.body, small.body_len, "\"prompt_tokens\":3", 17));
    curl_slist_free_all(hdrs);
    lq_http_destroy(&h);
    srv_stop();
    lq_loop_destroy(&loop);
}

/* The proxy variables are honoured when set (the engine tells libcurl "no
 * proxy" only when none was set at its creation). */
static void test_env_proxy(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    srv_start(loop);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", srv.port);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    for (int with_proxy = 1; with_proxy >= 0; with_proxy--) {
        if (with_proxy)
            setenv("http_proxy", "http://127.0.0.1:1", 1); /* nothing listens there */
        lq_http_t *h = http_new(loop, 4096);
        got_t g = {0};
        lq_http_req_t req = {url, hdrs, "{}", 2, 5000};
        assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
        run_until(loop, &g.done, 1, 5000);
        unsetenv("http_proxy");
        assert_int_equal(g.done, 1);
        if (with_proxy) {
            assert_int_equal(g.curl_code, CURLE_COULDNT_CONNECT); /* went to the proxy */
        } else {
            assert_int_equal(g.curl_code, 0);
            assert_int_equal(g.status, 200);
        }
        lq_http_destroy(&h);
    }
    curl_slist_free_all(hdrs);
    srv_stop();
    lq_loop_destroy(&loop);
}

static void test_size_cap_and_timeout(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    srv_start(loop);
    lq_http_t *h = http_new(loop, 4096);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", srv.port);
    lq_http_req_t req = {url, NULL, "{}", 2, 5000};
    /* Announced too large: aborted from the header callback. */
    srv.mode = MODE_BIG;
    got_t g = {0};
    assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
    run_until(loop, &g.done, 1, 5000);
    assert_int_equal(g.too_large, 1);
    assert_int_not_equal(g.curl_code, 0);
    /* Chunked, no length: aborted from the write callback at the cap. */
    srv.mode = MODE_BIG_CHUNKED;
    memset(&g, 0, sizeof g);
    assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
    run_until(loop, &g.done, 1, 5000);
    assert_int_equal(g.too_large, 1);
    assert_int_equal(g.curl_code, CURLE_WRITE_ERROR);
    assert_true(g.body_len <= 4096);
    /* No answer: the per-request timeout. */
    srv.mode = MODE_HANG;
    memset(&g, 0, sizeof g);
    req.timeout_ms = 200;
    uint64_t t0 = lq_mono_ms();
    assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
    run_until(loop, &g.done, 1, 5000);
    assert_int_equal(g.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_true(lq_mono_ms() - t0 >= 190);
    assert_true(lq_mono_ms() - t0 < 2000);
    /* Several hanging transfers are aborted without callbacks by destroy. */
    for (int i = 0; i < 5; i++) {
        req.timeout_ms = 60000;
        assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
    }
    for (int i = 0; i < 20; i++)
        lq_loop_run_once(loop, 5);
    assert_int_equal(lq_http_active(h), 5);
    lq_http_destroy(&h);
    srv_stop();
    lq_loop_destroy(&loop);
}

static void test_refused(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    lq_http_t *h = http_new(loop, 4096);
    /* A port nobody listens on: bind one, close it, use its number. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    lq_http_req_t req = {url, NULL, "{}", 2, 5000};
    got_t g = {0};
    assert_int_equal(lq_http_post(h, &req, on_done, &g), 0);
    run_until(loop, &g.done, 1, 5000);
    assert_int_equal(g.curl_code, CURLE_COULDNT_CONNECT);
    assert_int_equal(g.status, 0);
    lq_http_destroy(&h);
    lq_loop_destroy(&loop);
}

/* ---- runner ---- */

static int r_done;
static lq_wjob_t *r_job;

static void on_runner_done(lq_wjob_t *job, void *arg)
{
    (void)arg;
    r_done++;
    r_job = job;
}

static lq_wjob_t *new_job(const char *upstream, const char *url)
{
    lq_w_job_t m = {.batch = "b",
                    .index = 1,
                    .attempt = 1,
                    .upstream = upstream,
                    .url = url,
                    .body = "{\"x\":1}",
                    .body_len = 7,
                    .timeout_ms = 0};
    return lq_wjob_new(&m, 0);
}

static void test_runner(void **state)
{
    (void)state;
    lq_loop_t *loop = lq_loop_new();
    srv_start(loop);
    lq_http_t *h = http_new(loop, 4096);
    char base[128], err[256];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", srv.port);
    setenv("LLMQ_API_KEY", "sk-runner", 1);
    lq_upstreams_t *ups = lq_upstreams_new();
    assert_int_equal(lq_upstreams_add(ups, "default", base, err, sizeof err), 0);
    assert_int_equal(lq_upstreams_finish(ups, err, sizeof err), 0);
    unsetenv("LLMQ_API_KEY");
    lq_runner_t *r = lq_runner_new(loop, h, ups, 5000, on_runner_done, NULL);

    /* OK: URL joined without a double /v1, key sent, result filled. */
    srv.mode = MODE_OK;
    lq_wjob_t *j = new_job("default", "/v1/chat/completions");
    r_done = 0;
    lq_runner_start(r, j);
    assert_int_equal(r_done, 0);
    run_until(loop, &r_done, 1, 5000);
    assert_int_equal(r_done, 1);
    assert_ptr_equal(r_job, j);
    assert_int_equal(j->state, LQ_WJOB_DONE);
    assert_null(j->body); /* released once done */
    assert_int_equal(j->res.outcome, LQ_OUTCOME_OK);
    assert_int_equal(j->status, 200);
    assert_int_equal(j->res.prompt_tokens, 3);
    assert_int_equal(j->res.completion_tokens, 4);
    assert_string_equal(j->hdr.request_id, "req_1");
    assert_non_null(strstr(srv.req, "POST /v1/chat/completions HTTP/1.1"));
    assert_non_null(strstr(srv.req, "Authorization: Bearer sk-runner"));
    assert_non_null(strstr(srv.req, "\r\nUser-Agent: " LQ_USER_AGENT "\r\n"));
    assert_non_null(strstr(srv.req, "\r\nAccept-Encoding: gzip\r\n"));
    assert_int_equal(strstr(strstr(srv.req, "User-Agent:") + 1, "User-Agent:"), NULL);
    assert_non_null(strstr(srv.req, "{\"x\":1}"));
    lq_wjob_destroy(&j);

    /* 429 with both retry hints: retry-after-ms wins. */
    srv.mode = MODE_429;
    j = new_job(NULL, "/v1/chat/completions");
    r_done = 0;
    lq_runner_start(r, j);
    run_until(loop, &r_done, 1, 5000);
    assert_int_equal(j->res.outcome, LQ_OUTCOME_RETRYABLE);
    assert_string_equal(j->res.error_code, "http_429");
    assert_string_equal(j->res.error_message, "Rate limit reached");
    assert_int_equal(lq_headers_retry_after(&j->hdr), 1500);
    lq_msg_t m = {0};
    lq_wjob_result_msg(j, &m);
    assert_int_equal(m.u.result.retry_after_ms, 1500);
    assert_int_equal(m.u.result.status, 429);
    lq_wjob_destroy(&j);

    /* Unknown upstream and a url that is not a path: at once, no HTTP. */
    int before = srv.nreq;
    j = new_job("nope", "/v1/x");
    r_done = 0;
    lq_runner_start(r, j);
    assert_int_equal(r_done, 1);
    assert_int_equal(j->res.outcome, LQ_OUTCOME_FATAL);
    assert_string_equal(j->res.error_code, "unknown_upstream");
    assert_non_null(strstr(j->res.error_message, "nope"));
    lq_wjob_destroy(&j);
    j = new_job("default", "http://evil.example/x");
    r_done = 0;
    lq_runner_start(r, j);
    assert_int_equal(r_done, 1);
    assert_string_equal(j->res.error_code, "invalid_url");
    lq_wjob_destroy(&j);
    assert_int_equal(srv.nreq, before);

    lq_runner_destroy(&r);
    lq_http_destroy(&h);
    lq_upstreams_destroy(&ups);
    srv_stop();
    lq_loop_destroy(&loop);
}

int main(void)
{
    lq_log_set_level(LQ_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_and_reuse),
        cmocka_unit_test(test_multis_and_handle_reuse),
        cmocka_unit_test(test_env_proxy),
        cmocka_unit_test(test_size_cap_and_timeout),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_runner),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
