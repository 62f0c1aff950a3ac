/* Unit tests for broker/payload.c: the job payload and the lease member,
 * encoded and decoded in C, and read back by the Lua side (LQ_PAYLOAD_LUA)
 * inside a real redis-server that this test starts on a free loopback port
 * and stops (also when a test fails: group teardown and atexit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/payload.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t s_redis_pid = -1;
static redisContext *s_redis;

static void s_stop_redis(void)
{
    if (s_redis)
        redisFree(s_redis);
    s_redis = NULL;
    if (s_redis_pid > 0) {
        kill(s_redis_pid, SIGKILL);
        waitpid(s_redis_pid, NULL, 0);
    }
    s_redis_pid = -1;
}

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static int s_setup(void **state)
{
    (void)state;
    int port = s_free_port();
    if (port < 0)
        return -1;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    s_redis_pid = fork();
    if (s_redis_pid == 0) {
        execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    atexit(s_stop_redis);
    for (int i = 0; i < 100 && !s_redis; i++) {
        usleep(50000);
        redisContext *c = redisConnect("127.0.0.1", port);
        if (c && !c->err)
            s_redis = c;
        else if (c)
            redisFree(c);
    }
    if (!s_redis)
        fprintf(stderr, "test_payload: redis-server did not start on port %d\n", port);
    return s_redis ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    s_stop_redis();
    return 0;
}

/* Runs LQ_PAYLOAD_LUA followed by body with the given arguments. */
static redisReply *s_lua(const char *body, int nargs, const char **args, const size_t *lens)
{
    char *script = xasprintf("%s%s", LQ_PAYLOAD_LUA, body);
    const char *argv[8] = {"EVAL", script, "0"};
    size_t argl[8] = {4, strlen(script), 1};
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        argl[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    redisReply *r = redisCommandArgv(s_redis, 3 + nargs, argv, argl);
    free(script);
    assert_non_null(r);
    return r;
}

typedef struct {
    const char *cid, *url;
    int64_t est;
    const char *body;
    size_t body_len;
} s_case_t;

static const s_case_t s_cases[] = {
    {"r1", "/v1/chat/completions", 12, "{\"model\":\"m\"}", 13},
    {"", "/", 0, "", 0},
    {"a:b|c:12:", "/v1/x?y=1:2", 99999999, "12:34:{}", 8},
    {"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80", "/v1/embeddings", 7, "{\"a\":\"\\u0000\"}", 14},
    {"bin", "/v1/b", 1, "a\0b\0c", 5},
};

/* C encode -> C decode gives back every field. */
static void test_c_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_cases / sizeof *s_cases; i++) {
        const s_case_t *c = &s_cases[i];
        size_t len;
        char *p = lq_payload_encode(c->cid, c->url, c->est, c->body, c->body_len, &len);
        lq_payload_t d;
        assert_int_equal(lq_payload_decode(p, len, &d), 0);
        assert_int_equal(d.cid_len, strlen(c->cid));
        assert_memory_equal(d.cid, c->cid, d.cid_len);
        assert_int_equal(d.url_len, strlen(c->url));
        assert_memory_equal(d.url, c->url, d.url_len);
        assert_int_equal(d.est_tokens, c->est);
        assert_int_equal(d.body_len, c->body_len);
        if (c->body_len)
            assert_memory_equal(d.body, c->body, c->body_len);
        free(p);
    }
}

/* Malformed payloads are refused, never read past their end. */
static void test_c_rejects_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"", "x", "5:ab", "2:ab", "2:ab3:/v", "2:ab2:/vx", "2:ab2:/v-:",
                         "-1:a1:/1:b", "99999999999999999999:a", "2:ab2:/v12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lq_payload_t d;
        assert_int_equal(lq_payload_decode(bad[i], strlen(bad[i]), &d), -1);
    }
    lq_payload_t d;
    assert_int_equal(lq_payload_decode("0:0:-5:", 7, &d), 0);
    assert_int_equal(d.est_tokens, -5);
    assert_int_equal(d.body_len, 0);
}

static void test_member_c(void **state)
{
    (void)state;
    char buf[LQ_MEMBER_MAX], batch[LQ_MEMBER_MAX];
    int64_t idx;
    assert_int_equal(lq_member_format(buf, sizeof buf, "batch_0123", 42), 13);
    assert_string_equal(buf, "batch_0123|42");
    assert_int_equal(lq_member_parse(buf, batch, sizeof batch, &idx), 0);
    assert_string_equal(batch, "batch_0123");
    assert_int_equal(idx, 42);
    assert_int_equal(lq_member_format(buf, 8, "batch_0123", 42), -1);
    const char *bad[] = {"", "|1", "b|", "b|x", "b|-1", "b", "b|1 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(lq_member_parse(bad[i], batch, sizeof batch, &idx), -1);
}

/* The Lua side reads the custom_id the C side wrote, byte for byte. */
static void test_lua_reads_c_payload(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_cases / sizeof *s_cases; i++) {
        const s_case_t *c = &s_cases[i];
        size_t len;
        char *p = lq_payload_encode(c->cid, c->url, c->est, c->body, c->body_len, &len);
        const char *args[1] = {p};
        size_t lens[1] = {len};
        redisReply *r = s_lua("return cid_of(ARGV[1])", 1, args, lens);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_int_equal(r->len, strlen(c->cid));
        assert_memory_equal(r->str, c->cid, r->len);
        freeReplyObject(r);
        free(p);
    }
}

/* member_of and split_member agree with lq_member_format/parse. */
static void test_lua_member_agrees(void **state)
{
    (void)state;
    const char *ids[] = {"batch_00ff", "b.1-x_y", "x"};
    const int64_t idx[] = {0, 7, 1234567890123LL};
    for (size_t i = 0; i < 3; i++) {
        char want[LQ_MEMBER_MAX], num[24];
        lq_member_format(want, sizeof want, ids[i], idx[i]);
        snprintf(num, sizeof num, "%lld", (long long)idx[i]);
        const char *args[2] = {ids[i], num};
        redisReply *r = s_lua("return member_of(ARGV[1], ARGV[2])", 2, args, NULL);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, want);
        freeReplyObject(r);
        const char *margs[1] = {want};
        r = s_lua("local id, n = split_member(ARGV[1]) return {id, n}", 1, margs, NULL);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 2);
        char batch[LQ_MEMBER_MAX];
        int64_t got;
        assert_int_equal(lq_member_parse(want, batch, sizeof batch, &got), 0);
        assert_string_equal(r->element[0]->str, batch);
        assert_int_equal(strtoll(r->element[1]->str, NULL, 10), got);
        freeReplyObject(r);
    }
    const char *bad[1] = {"no-bar"};
    redisReply *r = s_lua("local id = split_member(ARGV[1]) return id == nil and 1 or 0", 1, bad,
                          NULL);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c_roundtrip),
        cmocka_unit_test(test_c_rejects_malformed),
        cmocka_unit_test(test_member_c),
        cmocka_unit_test(test_lua_reads_c_payload),
        cmocka_unit_test(test_lua_member_agrees),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
