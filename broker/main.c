/* llmq-broker: reads the configuration, then wires the broker together —
 * the ZeroMQ context (and ZAP allow-list), the core (broker.c: worker port,
 * Redis, dispatch), the frontend (frontend.c: client port) and the metrics
 * endpoint (metrics.c) — and runs the event loop until SIGTERM or SIGINT. */
#include "../common/log.h"
#include "../common/loop.h"
#include "../common/opts.h"
#include "../common/util.h"
#include "../common/version.h"
#include "../wire/curve.h"
#include "broker.h"
#include "frontend.h"
#include "metrics.h"
#include "ratelimit.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char s_usage[] =
    "usage: llmq-broker [--frontend tcp://*:5555] [--backend tcp://*:5556]\n"
    "                   [--redis redis://[user:pass@]host:6379/0] [--metrics HOST:PORT]\n\n"
    "The llmq broker: stores jobs in Redis, hands them to workers, records results.";

/* Everything the command line and the environment configure. */
typedef struct {
    const char *frontend, *backend, *redis_url, *prefix, *log_level, *metrics;
    long long heartbeat_ms, liveness, lease_ms, prefetch, retry_base_ms, retry_cap_ms;
    lq_strlist_t limits;
    char *env_limits; /* LLMQ_LIMITS, split in place */
    const char *curve_secret_file, *curve_clients;
    const char *retention, *cache_ttl; /* durations, parsed into *_s */
    long long retention_s, cache_ttl_s, high_water_pct;
    long long wait_replicas, wait_timeout_ms;
    int ignore_headers, retain_unfetched;
    char curve_secret[41], curve_public[41];
} s_config_t;

/* What main wires together, in the order it is built. */
typedef struct {
    lq_loop_t *loop;
    void *zctx;
    lq_zap_t *zap;
    lq_broker_t *core;
    lq_frontend_t *front;
    lq_metrics_t *metrics;
} s_app_t;

static void s_on_stop(lq_loop_t *loop, void *arg)
{
    (void)arg;
    LQ_INFO("signal received, stopping");
    lq_loop_stop(loop);
}

/* Parses flags and environment into c. Returns -1 to go on, else the exit
 * status (usage errors are printed). */
static int s_parse(s_config_t *c, int argc, char **argv)
{
    *c = (s_config_t){
        .frontend = "tcp://*:5555",
        .backend = "tcp://*:5556",
        .redis_url = "redis://127.0.0.1:6379/0",
        .prefix = "llmq:",
        .log_level = "info",
        .heartbeat_ms = 1000,
        .liveness = 3,
        .lease_ms = 15000,
        .prefetch = 256,
        .retry_base_ms = 500,
        .retry_cap_ms = 60000,
        .retention = "7d",
        .cache_ttl = "7d",
        .high_water_pct = 80,
        .wait_timeout_ms = 1000,
    };
    const lq_opt_t opts[] = {
        {"frontend", "LLMQ_FRONTEND", LQ_OPT_STR, &c->frontend, "ENDPOINT",
         "client endpoint to bind (default tcp://*:5555)"},
        {"backend", "LLMQ_BACKEND", LQ_OPT_STR, &c->backend, "ENDPOINT",
         "worker endpoint to bind (default tcp://*:5556)"},
        {"redis", "LLMQ_REDIS_URL", LQ_OPT_STR, &c->redis_url, "URL",
         "redis://[user:pass@]host:port/db, or redis-sentinel://[user:pass@]host:26379[,host:26379...]/MASTER[/db] (default redis://127.0.0.1:6379/0)"},
        {"prefix", "LLMQ_REDIS_PREFIX", LQ_OPT_STR, &c->prefix, "PREFIX",
         "prefix of every Redis key (default llmq:)"},
        {"metrics", "LLMQ_METRICS", LQ_OPT_STR, &c->metrics, "HOST:PORT",
         "serve Prometheus metrics at http://HOST:PORT/metrics"},
        {"heartbeat-ms", "LLMQ_HEARTBEAT_MS", LQ_OPT_INT, &c->heartbeat_ms, "MS",
         "heartbeat interval (default 1000)", 10, 600000},
        {"heartbeat-liveness", "LLMQ_HEARTBEAT_LIVENESS", LQ_OPT_INT, &c->liveness, "N",
         "missed heartbeats before a worker is dead (default 3)", 1, 1000},
        {"lease-ms", "LLMQ_LEASE_MS", LQ_OPT_INT, &c->lease_ms, "MS",
         "lease of a dispatched job, renewed while its worker lives (default 15000)", 1000,
         86400000},
        {"prefetch", "LLMQ_PREFETCH", LQ_OPT_INT, &c->prefetch, "N",
         "jobs leased ahead of worker demand (default 256)", 0, 100000},
        {"retry-base-ms", "LLMQ_RETRY_BASE_MS", LQ_OPT_INT, &c->retry_base_ms, "MS",
         "first retry backoff ceiling (default 500)", 0, 3600000},
        {"retry-cap-ms", "LLMQ_RETRY_CAP_MS", LQ_OPT_INT, &c->retry_cap_ms, "MS",
         "largest retry backoff (default 60000)", 0, 86400000},
        {"limit", NULL, LQ_OPT_LIST, &c->limits, "NAME:rpm=N,tpm=N",
         "budget of an upstream, repeatable (env LLMQ_LIMITS, ';'-separated)"},
        {"ignore-ratelimit-headers", "LLMQ_IGNORE_RATELIMIT_HEADERS", LQ_OPT_FLAG,
         &c->ignore_headers, NULL, "pace from 429s only, not from x-ratelimit-* headers"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &c->curve_secret_file, "FILE",
         "CURVE-encrypt both ports with this secret key (llmq keygen makes one)"},
        {"curve-clients", "LLMQ_CURVE_CLIENTS", LQ_OPT_STR, &c->curve_clients, "FILE",
         "only accept clients and workers whose public key is listed here"},
        {"retention", "LLMQ_RETENTION", LQ_OPT_STR, &c->retention, "DURATION",
         "remove a finished batch this long after its results were fetched (e.g. 2s, 12h, 7d; "
         "default 7d; 0 = keep forever)"},
        {"retain-unfetched", "LLMQ_RETAIN_UNFETCHED", LQ_OPT_FLAG, &c->retain_unfetched, NULL,
         "count retention from when a batch finished, even if its results were never fetched"},
        {"cache-ttl", "LLMQ_CACHE_TTL", LQ_OPT_STR, &c->cache_ttl, "DURATION",
         "how long a cached response answers repeated requests (default 7d)"},
        {"redis-wait-replicas", "LLMQ_REDIS_WAIT_REPLICAS", LQ_OPT_INT, &c->wait_replicas, "N",
         "acknowledge chunks and results only once N replicas have them (WAIT; default 0)", 0,
         100},
        {"redis-wait-timeout-ms", "LLMQ_REDIS_WAIT_TIMEOUT_MS", LQ_OPT_INT, &c->wait_timeout_ms,
         "MS", "how long WAIT waits for the replicas (default 1000)", 1, 600000},
        {"redis-high-water", "LLMQ_REDIS_HIGH_WATER", LQ_OPT_INT, &c->high_water_pct, "PCT",
         "refuse new submissions above this share of Redis maxmemory (default 80)", 1, 100},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &c->log_level, "LEVEL",
         "debug, info, warn, error (default info)"},
        {NULL},
    };
    lq_opts_main_t m = {"llmq-broker", s_usage, opts, 0, &c->log_level};
    lq_opts_result_t res;
    return lq_opts_main(&m, argc, argv, &res);
}

/* Takes the limits from LLMQ_LIMITS (';'-separated) when no --limit was
 * given, and checks each. Returns 0, or -1 (printed). */
static int s_check_limits(s_config_t *c)
{
    const char *env = getenv("LLMQ_LIMITS");
    if (env && c->limits.len == 0) {
        c->env_limits = xstrdup(env);
        char *save = NULL;
        for (char *t = strtok_r(c->env_limits, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            c->limits.items = xrealloc(c->limits.items, (c->limits.len + 1) * sizeof(char *));
            c->limits.items[c->limits.len++] = t;
        }
    }
    for (size_t i = 0; i < c->limits.len; i++) {
        const char *colon = strchr(c->limits.items[i], ':');
        lq_rl_config_t cfg;
        if (!colon || colon == c->limits.items[i] || lq_rl_parse(colon + 1, &cfg) < 0) {
            fprintf(stderr, "llmq-broker: bad --limit '%s' (want NAME:rpm=N,tpm=N)\n",
                    c->limits.items[i]);
            return -1;
        }
    }
    return 0;
}

/* Parses --retention and --cache-ttl. Returns 0 or -1 (printed). */
static int s_check_retention(s_config_t *c)
{
    if (lq_parse_duration_s(c->retention, &c->retention_s) < 0) {
        fprintf(stderr, "llmq-broker: bad --retention '%s' (want e.g. 30s, 12h, 7d, or 0)\n",
                c->retention);
        return -1;
    }
    if (lq_parse_duration_s(c->cache_ttl, &c->cache_ttl_s) < 0 || c->cache_ttl_s < 1) {
        fprintf(stderr, "llmq-broker: bad --cache-ttl '%s' (want e.g. 1h, 7d)\n", c->cache_ttl);
        return -1;
    }
    return 0;
}

/* Reads the CURVE secret key when one is configured. Returns 0 or -1. */
static int s_load_curve(s_config_t *c)
{
    char err[256];
    if (c->curve_clients && !c->curve_secret_file) {
        fprintf(stderr, "llmq-broker: --curve-clients needs --curve-secret-file\n");
        return -1;
    }
    if (c->curve_secret_file && lq_curve_read_secret(c->curve_secret_file, c->curve_secret,
                                                     c->curve_public, err, sizeof err) < 0) {
        fprintf(stderr, "llmq-broker: %s\n", err);
        return -1;
    }
    return 0;
}

/* Builds the loop, the ZeroMQ context with ZAP, the core, the frontend and
 * the metrics endpoint. Returns 0, or -1 (printed; a partial app is freed
 * by s_teardown). */
static int s_wire(s_app_t *a, const s_config_t *c)
{
    char err[512];
    const char *secret = c->curve_secret_file ? c->curve_secret : NULL;
    a->loop = lq_loop_new();
    a->zctx = a->loop ? zmq_ctx_new() : NULL;
    if (!a->zctx) {
        fprintf(stderr, "llmq-broker: cannot create the event loop or ZeroMQ context\n");
        return -1;
    }
    if (c->curve_clients && !(a->zap = lq_zap_new(a->loop, a->zctx, c->curve_clients, err,
                                                   sizeof err)))
        goto fail;
    lq_broker_opts_t bo = {
        .backend = c->backend,
        .redis_url = c->redis_url,
        .prefix = c->prefix,
        .heartbeat_ms = c->heartbeat_ms,
        .liveness = c->liveness,
        .lease_ms = c->lease_ms,
        .prefetch = c->prefetch,
        .retry_base_ms = c->retry_base_ms,
        .retry_cap_ms = c->retry_cap_ms,
        .limits = c->limits.items,
        .nlimits = c->limits.len,
        .ignore_ratelimit_headers = c->ignore_headers,
        .curve_secret = secret,
        .high_water_pct = c->high_water_pct,
        .retention_s = c->retention_s,
        .retain_unfetched = c->retain_unfetched,
        .cache_ttl_s = c->cache_ttl_s,
        .redis_wait_replicas = c->wait_replicas,
        .redis_wait_timeout_ms = c->wait_timeout_ms,
    };
    if (!(a->core = lq_broker_new(a->loop, a->zctx, &bo, err, sizeof err)))
        goto fail;
    lq_frontend_opts_t fo = {c->frontend, secret};
    if (!(a->front = lq_frontend_new(a->loop, a->zctx, a->core, &fo, err, sizeof err)))
        goto fail;
    if (c->metrics &&
        !(a->metrics = lq_metrics_new(a->loop, a->core, a->front, c->metrics, err, sizeof err)))
        goto fail;
    return 0;
fail:
    fprintf(stderr, "llmq-broker: %s\n", err);
    return -1;
}

/* Frees what s_wire built, in reverse order. Safe on a partial app. */
static void s_teardown(s_app_t *a)
{
    lq_metrics_destroy(&a->metrics);
    lq_frontend_destroy(&a->front);
    lq_broker_destroy(&a->core);
    lq_zap_destroy(&a->zap);
    if (a->zctx)
        zmq_ctx_term(a->zctx);
    lq_loop_destroy(&a->loop);
}

static void s_config_clear(s_config_t *c)
{
    lq_strlist_clear(&c->limits);
    free(c->env_limits);
    c->env_limits = NULL;
    memset(c->curve_secret, 0, sizeof c->curve_secret);
}

int main(int argc, char **argv)
{
    if (lq_version_flag(argc, argv, "llmq-broker"))
        return 0;
    lq_log_init("llmq-broker");
    s_config_t c;
    s_app_t a = {0};
    int rc = s_parse(&c, argc, argv);
    if (rc < 0 && (s_check_limits(&c) < 0 || s_check_retention(&c) < 0 || s_load_curve(&c) < 0))
        rc = 1;
    if (rc < 0) {
        srandom((unsigned)(time(NULL) ^ getpid()));
        signal(SIGPIPE, SIG_IGN);
        rc = s_wire(&a, &c) < 0 ? 2 : -1;
    }
    if (rc < 0) {
        lq_loop_on_signal(a.loop, SIGTERM, s_on_stop, NULL);
        lq_loop_on_signal(a.loop, SIGINT, s_on_stop, NULL);
        LQ_INFO("listening: clients %s, workers %s%s%s", c.frontend, c.backend,
                c.curve_secret_file ? ", CURVE server key " : "", c.curve_public);
        rc = lq_loop_run(a.loop) < 0 ? 2 : 0;
        if (lq_broker_fatal(a.core)) {
            fprintf(stderr, "llmq-broker: %s\n", lq_broker_fatal(a.core));
            rc = 1;
        }
    }
    s_teardown(&a);
    s_config_clear(&c);
    return rc;
}
