/* main: llmq-worker start-up and wiring.
 *
 * Parses flags (each with an environment mirror; API keys only from the
 * environment), raises the open-file limit, builds the upstream table, the
 * http engine, the runner and the broker session on one event loop, and
 * handles signals: the first SIGTERM/SIGINT drains, a second exits at once
 * with 130. Owns every top-level object and tears them down in order
 * (http transfers before the jobs they reference). */
#include "../common/log.h"
#include "../common/loop.h"
#include "../common/opts.h"
#include "../common/util.h"
#include "../common/version.h"
#include "../wire/curve.h"
#include "http.h"
#include "metrics.h"
#include "runner.h"
#include "session.h"
#include "upstream.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    lq_loop_t *loop;
    void *zctx;
    lq_session_t *session;
    lq_runner_t *runner;
    lq_http_t *http;
    lq_wmetrics_t *metrics; /* --metrics, or NULL */
    int signals;
    int exit_code;
    lq_timer_t stats_timer;
    uint64_t stats_ms;
    uint64_t last_done, last_received;
} s_app_t;

/* Raises RLIMIT_NOFILE towards concurrency*2+256 and warns when it stays
 * below what --concurrency needs. Can't fail. */
static void s_raise_nofile(long long concurrency)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)(concurrency * 2 + 256);
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
        want = rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            LQ_DEBUG("open-file limit raised from %llu to %llu", (unsigned long long)old,
                     (unsigned long long)want);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t need = (rlim_t)(concurrency + 64);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        LQ_WARN("the open-file limit is %llu (hard %llu) but --concurrency %lld needs at least "
                "%llu: requests will fail to connect. Raise it with `ulimit -n %lld` (as root, "
                "or raise the hard limit in /etc/security/limits.conf), LimitNOFILE=%lld under "
                "systemd, or `docker run --ulimit nofile=%lld:%lld`",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, concurrency,
                (unsigned long long)need, concurrency * 2 + 256, concurrency * 2 + 256,
                concurrency * 2 + 256, concurrency * 2 + 256);
}

/* Returns url fit for a log line: user:password and the query string are
 * replaced. The caller frees it. Can't fail. */
static char *s_redact_url(const char *url)
{
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t hostlen = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hostlen);
    const char *q = strchr(url, '?');
    size_t upto = q ? (size_t)(q - url) : strlen(url);
    if (!at)
        return xasprintf("%.*s%s", (int)upto, url, q ? "?<redacted>" : "");
    return xasprintf("%.*s***@%.*s%s", (int)(host - url), url, (int)(upto - (size_t)(at + 1 - url)),
                     at + 1, q ? "?<redacted>" : "");
}

/* Session exec callback: hands a job to the runner. */
static void s_exec(lq_wjob_t *job, void *arg)
{
    s_app_t *app = arg;
    lq_runner_start(app->runner, job);
}

/* Runner done callback: reports the job to the session. */
static void s_done(lq_wjob_t *job, void *arg)
{
    s_app_t *app = arg;
    lq_wmetrics_observe(app->metrics, job);
    lq_session_job_done(app->session, job);
}

/* Session exit callback: the drain is over. */
static void s_exit(int code, void *arg)
{
    s_app_t *app = arg;
    app->exit_code = code;
    lq_loop_stop(app->loop);
}

/* Before every sleep: pending sends and the coalesced CREDIT. */
static void s_before_sleep(lq_loop_t *loop, void *arg)
{
    (void)loop;
    s_app_t *app = arg;
    if (app->session)
        lq_session_tick(app->session);
}

/* SIGTERM / SIGINT: drain on the first, leave on the second. */
static void s_on_signal(lq_loop_t *loop, void *arg)
{
    (void)loop;
    s_app_t *app = arg;
    if (++app->signals > 1) {
        LQ_WARN("second signal: exiting now");
        _exit(130); /* at once: no destructors, no linger */
    }
    lq_session_drain(app->session);
}

/* Every stats interval: one line of counters. */
static void s_on_stats(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    s_app_t *app = arg;
    lq_session_stats_t st;
    lq_session_stats(app->session, &st);
    int busy = st.done != app->last_done || st.received != app->last_received || st.inflight > 0;
    lq_log(busy ? LQ_LOG_INFO : LQ_LOG_DEBUG,
           "stats: in_flight=%lld done=%llu ok=%llu retryable=%llu fatal=%llu unacked=%lld "
           "credit=%lld duplicates=%llu reconnects=%llu connections=%llu%s",
           (long long)st.inflight, (unsigned long long)st.done, (unsigned long long)st.ok,
           (unsigned long long)st.retryable, (unsigned long long)st.fatal, (long long)st.unacked,
           (long long)st.credit_out, (unsigned long long)st.duplicates,
           (unsigned long long)st.reconnects, (unsigned long long)lq_http_connections(app->http),
           st.draining ? " draining" : "");
    app->last_done = st.done;
    app->last_received = st.received;
    lq_timer_start(loop, t, app->stats_ms);
}

/* Validates a worker id: 1..LQ_MAX_ID printable ASCII without spaces. */
static int s_valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > LQ_MAX_ID)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f)
            return 0;
    return 1;
}

/* Fills the CURVE client secret key: from secret_file, or a fresh
 * ephemeral pair kept for every reconnect. Returns 0 or -1 (printed). */
static int s_curve_secret(const char *secret_file, char sec[41])
{
    char pub[41], err[256];
    if (!zmq_has("curve")) {
        fprintf(stderr, "llmq-worker: --curve-server-key given but libzmq has no CURVE\n");
        return -1;
    }
    if (secret_file) {
        if (lq_curve_read_secret(secret_file, sec, pub, err, sizeof err) < 0) {
            fprintf(stderr, "llmq-worker: %s\n", err);
            return -1;
        }
        return 0;
    }
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "llmq-worker: cannot make a CURVE key pair\n");
        return -1;
    }
    return 0;
}

/* Everything the command line and the environment configure. */
typedef struct {
    const char *broker, *upstream, *id, *log_level, *curve_server_key, *curve_secret_file;
    const char *ca_file, *metrics;
    lq_strlist_t named, headers;
    long long concurrency, connect_timeout_ms, timeout_ms, max_response, heartbeat_ms, liveness;
    long long drain_timeout, stats_interval;
    char idbuf[LQ_MAX_ID + 1];
    char curve_sec[41];
} s_config_t;

static const char s_usage[] =
    "usage: llmq-worker [--broker tcp://HOST:5556] [--upstream URL] [--concurrency N] "
    "[OPTIONS]\n\nRuns llmq jobs as HTTP requests to OpenAI-compatible APIs.\n"
    "API keys come only from the environment: LLMQ_API_KEY or LLMQ_API_KEY_FILE\n"
    "(a file holding the key) for the default upstream, LLMQ_API_KEY_<NAME> or\n"
    "LLMQ_API_KEY_FILE_<NAME> for a named one (NAME upper-cased).\n"
    "A job's url (\"/v1/chat/completions\") is appended to its upstream's URL; when\n"
    "that URL already ends in the same version segment (\".../v1\") it is not repeated.\n"
    "SIGTERM drains gracefully (a second SIGTERM exits at once).";

/* Parses flags and environment into c. Returns -1 to go on, else the exit
 * status (usage errors are printed). */
static int s_parse(s_config_t *c, int argc, char **argv)
{
    *c = (s_config_t){
        .broker = "tcp://127.0.0.1:5556",
        .concurrency = 256,
        .connect_timeout_ms = 10000,
        .timeout_ms = 600000,
        .max_response = 8LL * 1024 * 1024,
        .heartbeat_ms = 1000,
        .liveness = 3,
        .drain_timeout = 30,
        .stats_interval = 10,
    };
    const lq_opt_t opts[] = {
        {"broker", "LLMQ_BROKER_BACKEND", LQ_OPT_STR, &c->broker, "ENDPOINT",
         "broker backend(s), comma-separated (default tcp://127.0.0.1:5556)"},
        {"upstream", "LLMQ_UPSTREAM_URL", LQ_OPT_STR, &c->upstream, "URL",
         "base URL of the upstream named \"default\""},
        {"upstream-named", NULL, LQ_OPT_LIST, &c->named, "NAME=URL",
         "another upstream (repeatable); key from LLMQ_API_KEY_<NAME>"},
        {"concurrency", "LLMQ_CONCURRENCY", LQ_OPT_INT, &c->concurrency, "N",
         "HTTP requests in flight (default 256)", 1, 100000},
        {"connect-timeout-ms", "LLMQ_CONNECT_TIMEOUT_MS", LQ_OPT_INT, &c->connect_timeout_ms, "MS",
         "TCP+TLS connect timeout (default 10000)", 1, 600000},
        {"timeout-ms", "LLMQ_TIMEOUT_MS", LQ_OPT_INT, &c->timeout_ms, "MS",
         "per-attempt timeout when a job has none (default 600000)", 1, 86400000},
        {"max-response-bytes", "LLMQ_MAX_RESPONSE_BYTES", LQ_OPT_INT, &c->max_response, "N",
         "largest response body accepted (default 8 MiB)", 1024, LQ_MAX_TEXT},
        {"ca-file", "LLMQ_CA_FILE", LQ_OPT_STR, &c->ca_file, "FILE",
         "CA certificates (PEM) to verify upstreams with, instead of the system's"},
        {"header", NULL, LQ_OPT_LIST, &c->headers, "'NAME: VALUE'",
         "extra request header (repeatable; no credentials)"},
        {"heartbeat-ms", "LLMQ_HEARTBEAT_MS", LQ_OPT_INT, &c->heartbeat_ms, "MS",
         "heartbeat interval (default 1000)", 10, 600000},
        {"heartbeat-liveness", "LLMQ_HEARTBEAT_LIVENESS", LQ_OPT_INT, &c->liveness, "N",
         "missed heartbeats before the broker is deemed dead (default 3)", 1, 100},
        {"drain-timeout", "LLMQ_DRAIN_TIMEOUT", LQ_OPT_INT, &c->drain_timeout, "SECONDS",
         "longest graceful drain after SIGTERM (default 30)", 0, 86400},
        {"id", "LLMQ_WORKER_ID", LQ_OPT_STR, &c->id, "ID", "worker id (default HOSTNAME-PID-RANDOM)"},
        {"curve-server-key", "LLMQ_CURVE_SERVER_KEY", LQ_OPT_STR, &c->curve_server_key, "KEY",
         "the broker's CURVE public key (Z85): encrypt the connection"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &c->curve_secret_file, "FILE",
         "our CURVE secret key (default: an ephemeral one)"},
        {"stats-interval", "LLMQ_STATS_INTERVAL", LQ_OPT_INT, &c->stats_interval, "SECONDS",
         "seconds between stats lines, 0 = none (default 10)", 0, 86400},
        {"metrics", "LLMQ_METRICS", LQ_OPT_STR, &c->metrics, "HOST:PORT",
         "serve Prometheus text at /metrics (default off)"},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &c->log_level, "LEVEL",
         "debug, info, warn, error (default info)"},
        {NULL},
    };
    lq_opts_main_t m = {"llmq-worker", s_usage, opts, 0, &c->log_level};
    lq_opts_result_t res;
    return lq_opts_main(&m, argc, argv, &res);
}

/* Picks a default id (HOSTNAME-PID-RANDOM) and checks it. Returns 0 or -1. */
static int s_resolve_id(s_config_t *c)
{
    if (!c->id) {
        char host[64] = "worker", rnd[17];
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        lq_random_hex(rnd, sizeof rnd);
        snprintf(c->idbuf, sizeof c->idbuf, "%s-%d-%.6s", host, (int)getpid(), rnd);
        c->id = c->idbuf;
    }
    if (!s_valid_id(c->id)) {
        fprintf(stderr, "llmq-worker: --id must be 1-%d printable characters without spaces\n",
                LQ_MAX_ID);
        return -1;
    }
    return 0;
}

/* Builds the upstream table (URLs, keys from the environment, headers).
 * Returns it, or NULL after printing why. */
static lq_upstreams_t *s_build_upstreams(const s_config_t *c)
{
    char err[512];
    lq_upstreams_t *ups = lq_upstreams_new();
    int bad = c->upstream && lq_upstreams_add(ups, "default", c->upstream, err, sizeof err) < 0;
    for (size_t i = 0; !bad && i < c->named.len; i++)
        bad = lq_upstreams_add_spec(ups, c->named.items[i], err, sizeof err) < 0;
    for (size_t i = 0; !bad && i < c->headers.len; i++)
        bad = lq_upstreams_add_header(ups, c->headers.items[i], err, sizeof err) < 0;
    if (!bad && lq_upstreams_count(ups) == 0) {
        snprintf(err, sizeof err,
                 "no upstream: give --upstream URL (or LLMQ_UPSTREAM_URL) or --upstream-named");
        bad = 1;
    }
    if (!bad && lq_upstreams_finish(ups, err, sizeof err) < 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "llmq-worker: %s\n", err);
        lq_upstreams_destroy(&ups);
    }
    return ups;
}

/* Checks the CA file and loads the CURVE key. Returns 0 or -1 (printed). */
static int s_check_security(s_config_t *c)
{
    if (c->ca_file && access(c->ca_file, R_OK) != 0) {
        fprintf(stderr, "llmq-worker: --ca-file %s: cannot read it\n", c->ca_file);
        return -1;
    }
    if (c->curve_secret_file && !c->curve_server_key) {
        fprintf(stderr, "llmq-worker: --curve-secret-file needs --curve-server-key\n");
        return -1;
    }
    if (c->curve_server_key && s_curve_secret(c->curve_secret_file, c->curve_sec) < 0)
        return -1;
    return 0;
}

/* Logs the start-up line and each upstream (URLs redacted). Fills names
 * (borrowed from ups). */
static void s_log_start(const s_config_t *c, const lq_upstreams_t *ups, const char **names)
{
    size_t nups = lq_upstreams_count(ups);
    LQ_INFO("llmq-worker %s starting: broker %s%s, concurrency %lld, %zu upstream(s)", c->id,
            c->broker,
            !c->curve_server_key   ? ""
            : c->curve_secret_file ? " (CURVE, our key from --curve-secret-file)"
                                   : " (CURVE, ephemeral key)",
            c->concurrency, nups);
    for (size_t i = 0; i < nups; i++) {
        const lq_upstream_t *u = lq_upstreams_at(ups, i);
        names[i] = u->name;
        char *shown = s_redact_url(u->base_url);
        LQ_INFO("upstream %s = %s (API key %s)", u->name, shown, u->key ? "set" : "none");
        free(shown);
    }
}

/* Builds the loop, the http engine, the runner and the session. Returns
 * 0, or -1 (printed; s_teardown frees a partial app). */
static int s_wire(s_app_t *app, const s_config_t *c, lq_upstreams_t *ups, const char **names)
{
    app->loop = lq_loop_new();
    app->zctx = app->loop ? zmq_ctx_new() : NULL;
    if (!app->zctx) {
        fprintf(stderr, "llmq-worker: cannot create the event loop or ZeroMQ context\n");
        return -1;
    }
    lq_http_config_t hc = {
        .connect_timeout_ms = (long)c->connect_timeout_ms,
        .max_response_bytes = (size_t)c->max_response,
        .max_connects = (long)(c->concurrency < 16 ? 16 : c->concurrency),
        .ca_file = c->ca_file,
    };
    app->http = lq_http_new(app->loop, &hc);
    if (!app->http) {
        fprintf(stderr, "llmq-worker: cannot create the libcurl multi handle\n");
        return -1;
    }
    app->runner = lq_runner_new(app->loop, app->http, ups, c->timeout_ms, s_done, app);
    lq_session_config_t sc = {
        .endpoint = c->broker,
        .id = c->id,
        .concurrency = c->concurrency,
        .heartbeat_ms = c->heartbeat_ms,
        .liveness = c->liveness,
        .drain_timeout_ms = c->drain_timeout * 1000,
        .upstreams = names,
        .nupstreams = lq_upstreams_count(ups),
        .curve_server_key = c->curve_server_key,
        .curve_secret_key = c->curve_server_key ? c->curve_sec : NULL,
    };
    app->session = lq_session_new(app->loop, app->zctx, &sc, s_exec, s_exit, app);
    char err[256];
    if (c->metrics && !(app->metrics = lq_wmetrics_new(app->loop, c->metrics, c->id,
                                                       c->concurrency, err, sizeof err))) {
        fprintf(stderr, "llmq-worker: %s\n", err);
        return -1;
    }
    lq_wmetrics_attach(app->metrics, app->session, app->http);
    lq_loop_add_before_sleep(app->loop, s_before_sleep, app);
    lq_loop_on_signal(app->loop, SIGTERM, s_on_signal, app);
    lq_loop_on_signal(app->loop, SIGINT, s_on_signal, app);
    if (c->stats_interval > 0) {
        app->stats_ms = (uint64_t)c->stats_interval * 1000;
        lq_timer_init(&app->stats_timer, s_on_stats, app);
        lq_timer_start(app->loop, &app->stats_timer, app->stats_ms);
    }
    return 0;
}

/* Runs until the drain ends. Returns the exit status. */
static int s_run(s_app_t *app)
{
    int rc;
    if (lq_session_start(app->session) < 0) {
        rc = 1;
    } else if (lq_loop_run(app->loop) < 0) {
        LQ_ERROR("event loop failed");
        rc = 2;
    } else {
        rc = app->exit_code;
    }
    lq_session_stats_t st;
    lq_session_stats(app->session, &st);
    LQ_INFO("exiting: %llu jobs done (%llu ok, %llu retryable, %llu fatal), %lld abandoned",
            (unsigned long long)st.done, (unsigned long long)st.ok,
            (unsigned long long)st.retryable, (unsigned long long)st.fatal, (long long)st.inflight);
    return rc;
}

/* Frees what s_wire built: http transfers before the jobs they reference. */
static void s_teardown(s_app_t *app)
{
    if (app->stats_ms)
        lq_timer_stop(app->loop, &app->stats_timer);
    lq_wmetrics_destroy(&app->metrics);
    lq_http_destroy(&app->http);
    lq_session_destroy(&app->session, 500);
    lq_runner_destroy(&app->runner);
    if (app->zctx)
        zmq_ctx_term(app->zctx);
    lq_loop_destroy(&app->loop);
}

int main(int argc, char **argv)
{
    if (lq_version_flag(argc, argv, "llmq-worker"))
        return 0;
    lq_log_init("llmq-worker");
    s_config_t c;
    int rc = s_parse(&c, argc, argv);
    if (rc >= 0)
        return rc;
    lq_upstreams_t *ups = NULL;
    if (s_resolve_id(&c) < 0 || !(ups = s_build_upstreams(&c)) || s_check_security(&c) < 0) {
        lq_upstreams_destroy(&ups);
        lq_strlist_clear(&c.named);
        lq_strlist_clear(&c.headers);
        return 1;
    }
    s_raise_nofile(c.concurrency);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "llmq-worker: libcurl initialisation failed\n");
        return 2;
    }
    const char **names = xcalloc(lq_upstreams_count(ups) + 1, sizeof *names);
    s_log_start(&c, ups, names);
    s_app_t app = {0};
    rc = s_wire(&app, &c, ups, names) < 0 ? 2 : s_run(&app);
    s_teardown(&app);
    free(names);
    lq_upstreams_destroy(&ups);
    lq_strlist_clear(&c.named);
    lq_strlist_clear(&c.headers);
    memset(c.curve_sec, 0, sizeof c.curve_sec);
    curl_global_cleanup();
    return rc;
}
