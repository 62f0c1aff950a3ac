/* main: llmq-gateway's command line, the tokens file, start-up and the
 * loop. Owns the lq_gw_t and everything it points to. */
#include "gateway.h"
#include "http.h"

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "common/version.h"
#include "wire/curve.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_usage =
    "usage: llmq-gateway --broker tcp://HOST:5555 --listen HOST:PORT --data-dir DIR\n"
    "                    --tokens-file FILE [options]\n"
    "Serves the OpenAI Files and Batches API (/v1/files, /v1/batches) over HTTP/1.1\n"
    "in front of an llmq broker. Tokens file: one bearer token per line.\n";

/* Reads the tokens file: one token per line, blank lines and lines starting
 * with '#' skipped, surrounding whitespace trimmed. Returns 0, or -1 with
 * err set (unreadable, or no token at all). */
static int s_load_tokens(lq_gw_t *gw, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the tokens file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *s = line, *e = line + strlen(line);
        while (*s == ' ' || *s == '\t')
            s++;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*s || *s == '#')
            continue;
        gw->tokens = xrealloc(gw->tokens, (gw->ntokens + 1) * sizeof *gw->tokens);
        gw->tokens[gw->ntokens++] = xstrdup(s);
    }
    fclose(f);
    if (gw->ntokens == 0) {
        snprintf(err, errlen, "the tokens file %s holds no token", path);
        return -1;
    }
    return 0;
}

/* SIGTERM / SIGINT: leave the loop (connections are closed on exit). */
static void s_on_stop(lq_loop_t *loop, void *arg)
{
    (void)arg;
    LQ_INFO("stopping");
    lq_loop_stop(loop);
}

/* Step: everything the gateway needs before serving. Returns 0, or -1
 * with err set. */
static int s_setup(lq_gw_t *gw, char *err, size_t errlen)
{
    if (s_load_tokens(gw, gw->opts.tokens_file, err, errlen) < 0)
        return -1;
    gw->store = lq_store_new(gw->opts.data_dir, err, errlen);
    if (!gw->store)
        return -1;
    gw->loop = lq_loop_new();
    if (!gw->loop) {
        snprintf(err, errlen, "cannot create the event loop");
        return -1;
    }
    /* Signals are blocked before any thread starts, so that every thread
     * (zmq's and the submissions') inherits the mask. */
    lq_loop_on_signal(gw->loop, SIGTERM, s_on_stop, gw);
    lq_loop_on_signal(gw->loop, SIGINT, s_on_stop, gw);
    lq_rpc_watch_sigint(0); /* SIGINT is ours, not the broker channels' */
    gw->rpc = lq_rpc_new(gw->opts.broker, gw->opts.curve_server_key, gw->opts.curve_secret, err,
                         errlen);
    return gw->rpc ? 0 : -1;
}

/* Frees what s_setup made (safe on a partial setup). */
static void s_teardown(lq_gw_t *gw)
{
    lq_rpc_destroy(&gw->rpc);
    lq_loop_destroy(&gw->loop);
    int busy = lq_batches_running();
    if (busy > 0) /* their records stay "validating": resumed on restart */
        LQ_INFO("exiting with %d submission%s unfinished", busy, busy == 1 ? "" : "s");
    else
        lq_store_destroy(&gw->store); /* else still in use until exit */
    for (size_t i = 0; i < gw->ntokens; i++)
        free(gw->tokens[i]);
    free(gw->tokens);
}

int main(int argc, char **argv)
{
    if (lq_version_flag(argc, argv, "llmq-gateway"))
        return 0;
    lq_gw_t gw = {.opts = {.broker = "tcp://127.0.0.1:5555",
                           .listen = "127.0.0.1:8080",
                           .max_attempts = 5,
                           .timeout_s = 600}};
    const char *log_level = "info", *curve_secret_file = NULL;
    const lq_opt_t opts[] = {
        {"broker", "LLMQ_BROKER", LQ_OPT_STR, &gw.opts.broker, "ENDPOINT",
         "broker client endpoint (default tcp://127.0.0.1:5555)"},
        {"listen", "LLMQ_GATEWAY_LISTEN", LQ_OPT_STR, &gw.opts.listen, "HOST:PORT",
         "HTTP address (default 127.0.0.1:8080; *:PORT for all)"},
        {"data-dir", "LLMQ_DATA_DIR", LQ_OPT_STR, &gw.opts.data_dir, "DIR",
         "uploaded files and batch records (required)"},
        {"tokens-file", "LLMQ_TOKENS_FILE", LQ_OPT_STR, &gw.opts.tokens_file, "FILE",
         "bearer tokens, one per line (required)"},
        {"max-attempts", "LLMQ_MAX_ATTEMPTS", LQ_OPT_INT, &gw.opts.max_attempts, "N",
         "attempts per job of the batches created (default 5)", 1, 100},
        {"timeout", "LLMQ_TIMEOUT", LQ_OPT_INT, &gw.opts.timeout_s, "SECONDS",
         "per-attempt timeout of the batches created (default 600)", 1, 86400},
        {"curve-server-key", "LLMQ_CURVE_SERVER_KEY", LQ_OPT_STR, &gw.opts.curve_server_key,
         "KEY", "the broker's CURVE public key (Z85): encrypt the connection"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &curve_secret_file, "FILE",
         "our CURVE secret key, for brokers that allow-list clients"},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &log_level, "LEVEL", "default info"},
        {NULL},
    };
    lq_log_init("llmq-gateway");
    lq_opts_main_t om = {"llmq-gateway", s_usage, opts, 0, &log_level};
    lq_opts_result_t res;
    char err[512];
    int rc = lq_opts_main(&om, argc, argv, &res);
    if (rc >= 0)
        return rc;
    if (!gw.opts.data_dir || !gw.opts.tokens_file) {
        fprintf(stderr, "llmq-gateway: --data-dir and --tokens-file are required\n");
        lq_opts_print_help(stderr, s_usage, opts);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    char curve_secret[41], curve_public[41];
    if (curve_secret_file) {
        if (lq_curve_read_secret(curve_secret_file, curve_secret, curve_public, err,
                                 sizeof err) < 0) {
            fprintf(stderr, "llmq-gateway: %s\n", err);
            return 1;
        }
        gw.opts.curve_secret = curve_secret;
    }
    lq_http_t *http = NULL;
    if (s_setup(&gw, err, sizeof err) < 0 ||
        !(http = lq_http_new(&gw, gw.opts.listen, err, sizeof err))) {
        fprintf(stderr, "llmq-gateway: %s\n", err);
        s_teardown(&gw);
        return 1;
    }
    LQ_INFO("listening on %s (port %d), broker %s, %zu token%s", gw.opts.listen,
            lq_http_port(http), gw.opts.broker, gw.ntokens, gw.ntokens == 1 ? "" : "s");
    size_t swept = lq_store_sweep(gw.store, "files", ".part");
    if (swept > 0)
        LQ_INFO("removed %zu upload%s cut short by a restart", swept, swept == 1 ? "" : "s");
    lq_batches_resume_all(&gw);
    lq_loop_run(gw.loop);
    lq_http_destroy(&http);
    s_teardown(&gw);
    return 0;
}
