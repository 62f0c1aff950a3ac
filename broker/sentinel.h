/* sentinel: finding the Redis master through Redis Sentinel.
 *
 * Parses redis-sentinel://[user:pass@]host:26379[,host:26379...]/MASTER[/db]
 * and asks the sentinels, in turn, SENTINEL get-master-addr-by-name MASTER.
 * The user and password are the master's (the sentinels are asked without
 * them). The query is blocking, with a short timeout per sentinel: the
 * broker runs it only when it (re)connects to Redis, i.e. when it has no
 * Redis to talk to anyway. broker/redis.c calls it before each connect, so
 * a failover is followed by the next reconnect. */
#ifndef LQ_SENTINEL_H
#define LQ_SENTINEL_H
#include <stddef.h>

#define LQ_SENTINEL_MAX 8

typedef struct {
    char host[LQ_SENTINEL_MAX][256];
    int port[LQ_SENTINEL_MAX];
    size_t n;
    char master[128];
    char user[128], pass[256];
    int db;
} lq_sentinel_t;

/* 1 when url is a redis-sentinel:// URL. Can't fail. */
int lq_sentinel_is_url(const char *url);
/* Parses a redis-sentinel:// URL into s. Returns 0, or -1 with a message
 * in err. */
int lq_sentinel_parse(lq_sentinel_t *s, const char *url, char *err, size_t errlen);
/* Asks the sentinels, first to last, for the master's address, each with
 * timeout_ms to answer. Returns 0 with host (NUL-terminated) and *port, or
 * -1 when none knows (a warning is logged). */
int lq_sentinel_master(const lq_sentinel_t *s, int timeout_ms, char *host, size_t hostlen,
                       int *port);

#endif
