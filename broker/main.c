/* llmq-broker: flags, signals and the event loop around lq_broker_t. */
#include "../common/log.h"
#include "../common/loop.h"
#include "../common/opts.h"
#include "../common/util.h"
#include "../common/version.h"
#include "broker.h"
#include "metrics.h"
#include "../wire/curve.h"

#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void s_on_stop(lq_loop_t *loop, void *arg)
{
    (void)arg;
    LQ_INFO("signal received, stopping");
    lq_loop_stop(loop);
}

int main(int argc, char **argv)
{
    if (lq_version_flag(argc, argv, "llmq-broker"))
        return 0;
    const char *frontend = "tcp://*:5555", *backend = "tcp://*:5556";
    const char *redis_url = "redis://127.0.0.1:6379/0", *prefix = "llmq:";
    const char *log_level = "info", *metrics = NULL;
    long long heartbeat_ms = 1000, liveness = 3, lease_ms = 15000, prefetch = 256;
    long long retry_base_ms = 500, retry_cap_ms = 60000;
    lq_strlist_t limits = {0};
    const char *curve_secret_file = NULL, *curve_clients = NULL;
    int ignore_headers = 0;
    const lq_opt_t opts[] = {
        {"frontend", "LLMQ_FRONTEND", LQ_OPT_STR, &frontend, "ENDPOINT",
         "client endpoint to bind (default tcp://*:5555)"},
        {"backend", "LLMQ_BACKEND", LQ_OPT_STR, &backend, "ENDPOINT",
         "worker endpoint to bind (default tcp://*:5556)"},
        {"redis", "LLMQ_REDIS_URL", LQ_OPT_STR, &redis_url, "URL",
         "redis://[user:pass@]host:port/db (default redis://127.0.0.1:6379/0)"},
        {"prefix", "LLMQ_REDIS_PREFIX", LQ_OPT_STR, &prefix, "PREFIX",
         "prefix of every Redis key (default llmq:)"},
        {"metrics", "LLMQ_METRICS", LQ_OPT_STR, &metrics, "HOST:PORT",
         "serve Prometheus metrics at http://HOST:PORT/metrics"},
        {"heartbeat-ms", "LLMQ_HEARTBEAT_MS", LQ_OPT_INT, &heartbeat_ms, "MS",
         "heartbeat interval (default 1000)", 10, 600000},
        {"heartbeat-liveness", "LLMQ_HEARTBEAT_LIVENESS", LQ_OPT_INT, &liveness, "N",
         "missed heartbeats before a worker is dead (default 3)", 1, 1000},
        {"lease-ms", "LLMQ_LEASE_MS", LQ_OPT_INT, &lease_ms, "MS",
         "lease of a dispatched job, renewed while its worker lives (default 15000)", 1000,
         86400000},
        {"prefetch", "LLMQ_PREFETCH", LQ_OPT_INT, &prefetch, "N",
         "jobs leased ahead of worker demand (default 256)", 0, 100000},
        {"retry-base-ms", "LLMQ_RETRY_BASE_MS", LQ_OPT_INT, &retry_base_ms, "MS",
         "first retry backoff ceiling (default 500)", 0, 3600000},
        {"retry-cap-ms", "LLMQ_RETRY_CAP_MS", LQ_OPT_INT, &retry_cap_ms, "MS",
         "largest retry backoff (default 60000)", 0, 86400000},
        {"limit", NULL, LQ_OPT_LIST, &limits, "NAME:rpm=N,tpm=N",
         "budget of an upstream, repeatable (env LLMQ_LIMITS, ';'-separated)"},
        {"ignore-ratelimit-headers", "LLMQ_IGNORE_RATELIMIT_HEADERS", LQ_OPT_FLAG,
         &ignore_headers, NULL, "pace from 429s only, not from x-ratelimit-* headers"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &curve_secret_file, "FILE",
         "CURVE-encrypt both ports with this secret key (llmq keygen makes one)"},
        {"curve-clients", "LLMQ_CURVE_CLIENTS", LQ_OPT_STR, &curve_clients, "FILE",
         "only accept clients and workers whose public key is listed here"},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &log_level, "LEVEL",
         "debug, info, warn, error (default info)"},
        {NULL},
    };
    lq_log_init("llmq-broker");
    lq_opts_result_t res;
    char err[256];
    if (lq_opts_parse(opts, argc, argv, 1, &res, err, sizeof err) < 0) {
        fprintf(stderr, "llmq-broker: %s\n", err);
        return 1;
    }
    if (res.help) {
        lq_opts_print_help(stdout,
                           "usage: llmq-broker [--frontend tcp://*:5555] [--backend tcp://*:5556]\n"
                           "                   [--redis redis://[user:pass@]host:6379/0] "
                           "[--metrics HOST:PORT]\n\n"
                           "The llmq broker: stores jobs in Redis, hands them to workers, "
                           "records results.",
                           opts);
        return 0;
    }
    if (res.npositionals > 0) {
        fprintf(stderr, "llmq-broker: unexpected argument '%s'\n", res.positionals[0]);
        return 1;
    }
    char *env_limits = getenv("LLMQ_LIMITS") ? xstrdup(getenv("LLMQ_LIMITS")) : NULL;
    if (env_limits && limits.len == 0) {
        char *save = NULL;
        for (char *t = strtok_r(env_limits, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            limits.items = xrealloc(limits.items, (limits.len + 1) * sizeof *limits.items);
            limits.items[limits.len++] = t;
        }
    }
    for (size_t i = 0; i < limits.len; i++) {
        const char *colon = strchr(limits.items[i], ':');
        lq_rl_config_t cfg;
        if (!colon || colon == limits.items[i] || lq_rl_parse(colon + 1, &cfg) < 0) {
            fprintf(stderr, "llmq-broker: bad --limit '%s' (want NAME:rpm=N,tpm=N)\n",
                    limits.items[i]);
            return 1;
        }
    }
    char curve_secret[41] = "", curve_public[41] = "";
    if (curve_clients && !curve_secret_file) {
        fprintf(stderr, "llmq-broker: --curve-clients needs --curve-secret-file\n");
        return 1;
    }
    if (curve_secret_file &&
        lq_curve_read_secret(curve_secret_file, curve_secret, curve_public, err, sizeof err) < 0) {
        fprintf(stderr, "llmq-broker: %s\n", err);
        return 1;
    }
    lq_log_level_t level;
    if (lq_log_parse_level(log_level, &level) < 0) {
        fprintf(stderr, "llmq-broker: bad --log-level '%s'\n", log_level);
        return 1;
    }
    lq_log_set_level(level);
    srandom((unsigned)(time(NULL) ^ getpid()));

    lq_loop_t *loop = lq_loop_new();
    if (!loop) {
        fprintf(stderr, "llmq-broker: cannot create the event loop\n");
        return 2;
    }
    lq_broker_opts_t bo = {
        .frontend = frontend,
        .backend = backend,
        .redis_url = redis_url,
        .prefix = prefix,
        .heartbeat_ms = heartbeat_ms,
        .liveness = liveness,
        .lease_ms = lease_ms,
        .prefetch = prefetch,
        .retry_base_ms = retry_base_ms,
        .retry_cap_ms = retry_cap_ms,
        .limits = limits.items,
        .nlimits = limits.len,
        .ignore_ratelimit_headers = ignore_headers,
        .curve_secret = curve_secret_file ? curve_secret : NULL,
        .curve_clients_file = curve_clients,
    };
    lq_broker_t *b = lq_broker_new(loop, &bo, err, sizeof err);
    if (!b) {
        fprintf(stderr, "llmq-broker: %s\n", err);
        lq_loop_destroy(&loop);
        return 2;
    }
    lq_metrics_t *mx = NULL;
    if (metrics && !(mx = lq_metrics_new(b, metrics, err, sizeof err))) {
        fprintf(stderr, "llmq-broker: %s\n", err);
        lq_broker_destroy(&b);
        lq_loop_destroy(&loop);
        return 2;
    }
    lq_loop_on_signal(loop, SIGTERM, s_on_stop, NULL);
    lq_loop_on_signal(loop, SIGINT, s_on_stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    LQ_INFO("listening: clients %s, workers %s%s%s", frontend, backend,
            curve_secret_file ? ", CURVE server key " : "", curve_public);
    lq_loop_run(loop);
    lq_metrics_destroy(&mx);
    lq_broker_destroy(&b);
    lq_loop_destroy(&loop);
    lq_strlist_free(&limits);
    free(env_limits);
    return 0;
}
