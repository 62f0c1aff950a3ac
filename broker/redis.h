/* redis: the broker's one connection to Redis, on the broker's event loop.
 *
 * Owns a hiredis async context driven by our own adapter (not the Debian
 * adapters), reconnects with exponential backoff when Redis goes away, and
 * enforces its own connect and command timeouts (hiredis 0.14 has none for
 * async contexts): when a reply is overdue the context is freed, which fails
 * every pending command (their callbacks get reply == NULL), and a new
 * connection is made. After each connect it authenticates, selects the
 * database and loads the Lua scripts before any queued command, then tells
 * the owner through on_up. With a redis-sentinel:// URL the master's
 * address is asked from the sentinels (broker/sentinel.c) before every
 * connect, so a reconnect follows a failover. */
#ifndef LQ_REDIS_H
#define LQ_REDIS_H

#include "../common/loop.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lq_redis lq_redis_t;

/* reply is NULL when the command failed because the connection was lost;
 * otherwise it is owned by hiredis and valid only during the callback. */
typedef void (*lq_redis_cb)(lq_redis_t *r, redisReply *reply, void *arg);
typedef void (*lq_redis_state_cb)(lq_redis_t *r, int up, void *arg);

typedef struct {
    const char *url; /* redis://[user:pass@]host:port/db, or
                        redis-sentinel://[user:pass@]host:port[,host:port...]/MASTER[/db] */
    int connect_timeout_ms; /* default 2000 */
    int command_timeout_ms; /* default 10000 */
    const char *const *scripts; /* Lua sources, NULL-terminated */
    /* > 0: a call of a script in durable_mask (bit = script index) answers
     * only after WAIT wait_replicas wait_timeout_ms (default 1000) confirmed
     * it reached that many replicas; otherwise its callback gets NULL. */
    int wait_replicas;
    int wait_timeout_ms;
    unsigned durable_mask;
} lq_redis_opts_t;

/* A parsed redis://[[user]:pass@]host[:port][/db] URL. */
typedef struct {
    char host[256];
    int port; /* 6379 when not given */
    int db;   /* 0 when not given */
    char user[128]; /* "" when not given (the default user) */
    char pass[256]; /* "" when not given */
} lq_redis_url_t;

/* Parses url into *out. The password is everything between the first ':'
 * after "redis://" and the last '@' (no percent-decoding); port and db are
 * plain decimal; a user, password or host that does not fit its field, or
 * holds a control character, is refused, never cut. Returns 0, or -1 with
 * a message in err (which never repeats the password). Pure; can't crash on
 * any input (fuzz_redis_url). */
int lq_redis_url_parse(const char *url, lq_redis_url_t *out, char *err, size_t errlen);

/* Parses the URL and starts connecting. Returns NULL with a message in err
 * if the URL is invalid. */
lq_redis_t *lq_redis_new(lq_loop_t *loop, const lq_redis_opts_t *opts, lq_redis_state_cb on_state,
                         void *arg, char *err, size_t errlen);

/* 1 when connected and scripts are loaded. */
int lq_redis_up(const lq_redis_t *r);

/* Sends a command. Returns 0 (cb will be called exactly once), or -1 when
 * not connected (cb is not called). */
int lq_redis_command(lq_redis_t *r, lq_redis_cb cb, void *arg, int argc, const char **argv,
                     const size_t *argvlen);

/* Runs script number idx (EVALSHA) with the given keys and args: argv holds
 * nkeys keys then the arguments. Same contract as lq_redis_command. */
int lq_redis_eval(lq_redis_t *r, int idx, lq_redis_cb cb, void *arg, int nkeys, int argc,
                  const char **argv, const size_t *argvlen);

/* The arguments of a script call, built straight into the RESP bytes sent
 * to Redis (no argv array, no formatting per argument): init, add the
 * arguments in order, then lq_redis_eval_args (which consumes them) or
 * lq_redis_args_clear. A value type; functions can't fail (they abort on
 * out-of-memory like xmalloc). */
typedef struct {
    char *buf;  /* LQ_REDIS_ARGS_HEAD bytes reserved for the header, then the arguments */
    size_t len; /* bytes used, header space included */
    size_t cap;
    int argc;
} lq_redis_args_t;
#define LQ_REDIS_ARGS_HEAD 96

/* Starts empty, with room for about size_hint bytes of arguments. */
void lq_redis_args_init(lq_redis_args_t *a, size_t size_hint);
/* Appends one argument of n bytes (any bytes). */
void lq_redis_args_add(lq_redis_args_t *a, const char *s, size_t n);
/* Appends a NUL-terminated string. */
void lq_redis_args_str(lq_redis_args_t *a, const char *s);
/* Appends an integer in decimal. */
void lq_redis_args_int(lq_redis_args_t *a, int64_t v);
void lq_redis_args_clear(lq_redis_args_t *a);

/* Runs script number idx (EVALSHA, no keys) with the arguments in a, which
 * it consumes (clears) in any case. Same contract as lq_redis_command. */
int lq_redis_eval_args(lq_redis_t *r, int idx, lq_redis_cb cb, void *arg, lq_redis_args_t *a);

/* Commands sent and not yet answered. */
int lq_redis_pending(const lq_redis_t *r);

/* Frees the context (pending callbacks get NULL). Safe on NULL; clears *r. */
void lq_redis_destroy(lq_redis_t **r);

#endif
