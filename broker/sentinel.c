/* sentinel: see sentinel.h. */
#include "sentinel.h"

#include "../common/log.h"
#include "../common/util.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#define S_SCHEME "redis-sentinel://"

int lq_sentinel_is_url(const char *url)
{
    return url && strncmp(url, S_SCHEME, strlen(S_SCHEME)) == 0;
}

/* Parses "host:port" (port defaults to 26379) of length n into entry i.
 * Returns 0 or -1 with err set. */
static int s_parse_addr(lq_sentinel_t *s, const char *p, size_t n, char *err, size_t errlen)
{
    if (s->n == LQ_SENTINEL_MAX) {
        snprintf(err, errlen, "too many sentinels in redis URL (at most %d)", LQ_SENTINEL_MAX);
        return -1;
    }
    const char *colon = memchr(p, ':', n);
    size_t hlen = colon ? (size_t)(colon - p) : n;
    long long port = 26379;
    if (colon) {
        char buf[16];
        snprintf(buf, sizeof buf, "%.*s", (int)(n - hlen - 1), colon + 1);
        if (lq_parse_ll(buf, 1, 65535, &port) < 0) {
            snprintf(err, errlen, "bad sentinel port in redis URL");
            return -1;
        }
    }
    if (hlen == 0 || hlen >= sizeof s->host[0]) {
        snprintf(err, errlen, "bad sentinel host in redis URL");
        return -1;
    }
    snprintf(s->host[s->n], sizeof s->host[0], "%.*s", (int)hlen, p);
    s->port[s->n++] = (int)port;
    return 0;
}

/* Parses "/MASTER[/db]". Returns 0 or -1 with err set. */
static int s_parse_path(lq_sentinel_t *s, const char *p, char *err, size_t errlen)
{
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof s->master) {
        snprintf(err, errlen, "redis-sentinel URL needs the master's name: "
                              "redis-sentinel://host:26379[,host:26379...]/MASTER[/db]");
        return -1;
    }
    snprintf(s->master, sizeof s->master, "%.*s", (int)n, p);
    s->db = 0;
    if (slash && slash[1]) {
        long long db;
        if (lq_parse_ll(slash + 1, 0, 1000000, &db) < 0) {
            snprintf(err, errlen, "bad database number in redis URL");
            return -1;
        }
        s->db = (int)db;
    }
    return 0;
}

int lq_sentinel_parse(lq_sentinel_t *s, const char *url, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (!lq_sentinel_is_url(url)) {
        snprintf(err, errlen, "not a redis-sentinel:// URL: '%s'", url);
        return -1;
    }
    const char *p = url + strlen(S_SCHEME);
    const char *path = strchr(p, '/');
    const char *end = path ? path : p + strlen(p), *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(s->user, sizeof s->user, "%.*s", (int)(colon - p), p);
            snprintf(s->pass, sizeof s->pass, "%.*s", (int)(at - colon - 1), colon + 1);
        } else {
            snprintf(s->pass, sizeof s->pass, "%.*s", (int)(at - p), p);
        }
        p = at + 1;
    }
    if (!path) {
        snprintf(err, errlen, "redis-sentinel URL needs the master's name: "
                              "redis-sentinel://host:26379[,host:26379...]/MASTER[/db]");
        return -1;
    }
    while (p < path) {
        size_t n = strcspn(p, ",/");
        if (n > 0 && s_parse_addr(s, p, n, err, errlen) < 0)
            return -1;
        p += n + (p[n] == ',');
    }
    if (s->n == 0) {
        snprintf(err, errlen, "no sentinel address in redis URL");
        return -1;
    }
    return s_parse_path(s, path + 1, err, errlen);
}

/* Asks one sentinel. Returns 0 with the address, or -1. */
static int s_ask(const lq_sentinel_t *s, size_t i, int timeout_ms, char *host, size_t hostlen,
                 int *port)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(s->host[i], s->port[i], tv);
    if (!c || c->err) {
        LQ_WARN("sentinel %s:%d: %s", s->host[i], s->port[i], c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master);
    int rc = -1;
    long long p;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        lq_parse_ll(r->element[1]->str, 1, 65535, &p) == 0 && r->element[0]->len < hostlen) {
        snprintf(host, hostlen, "%s", r->element[0]->str);
        *port = (int)p;
        rc = 0;
    } else {
        LQ_WARN("sentinel %s:%d does not know master '%s': %s", s->host[i], s->port[i],
                s->master,
                !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "no such master");
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

int lq_sentinel_master(const lq_sentinel_t *s, int timeout_ms, char *host, size_t hostlen,
                       int *port)
{
    for (size_t i = 0; i < s->n; i++)
        if (s_ask(s, i, timeout_ms, host, hostlen, port) == 0)
            return 0;
    return -1;
}
