/* llmq: the client command line. Parses global and command options from one
 * table (options may appear before or after the command) and runs the
 * command. Exit codes: 0 ok, 1 bad usage or input, 2 broker unreachable or
 * runtime failure, 3 finished with failed jobs, 130 interrupted. */
#include "client.h"

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "wire/curve.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char s_usage[] =
    "usage: llmq [--broker tcp://HOST:5555] COMMAND ...\n"
    "\n"
    "Commands:\n"
    "  submit FILE [--name NAME] [--max-attempts N] [--timeout SECONDS] [--priority P]\n"
    "         [--upstream NAME]                 submit a batch, print its id\n"
    "  submit --prompts FILE --model M [--system TEXT] [--max-tokens N]\n"
    "                                           one chat request per line of text\n"
    "  status BATCH [--json]                    counts, tokens, state\n"
    "  wait BATCH                               progress until the batch finishes\n"
    "  results BATCH -o OUT [--errors ERRFILE]  results in input order\n"
    "  run FILE -o OUT [--errors ERRFILE]       submit + wait + results (submit flags too)\n"
    "  cancel BATCH                             stop a batch; finished results stay\n"
    "  list [--json]                            recent batches\n"
    "  workers [--json]                         connected workers and upstream rate limits\n"
    "  ping [WORKER]                            health check: broker answers (and WORKER* connected)\n"
    "  keygen PREFIX                            write a CURVE key pair: PREFIX.key, PREFIX.pub\n"
    "\n"
    "Exit status: 0 all succeeded, 3 finished with failed jobs, 1 bad usage or input,\n"
    "2 broker unreachable or other runtime failure.";

static int s_need(int n, int have, const char *cmd, const char *what)
{
    if (have < n) {
        fprintf(stderr, "llmq: %s needs %s (try llmq --help)\n", cmd, what);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    lq_client_opts_t o = {
        .broker = "tcp://127.0.0.1:5555",
        .connect_timeout_s = 5,
        .retry_window_s = 120,
        .max_attempts = 5,
        .timeout_s = 600,
        .priority = 0,
        .max_tokens = 0,
    };
    const char *log_level = "warn";
    const char *out_short = NULL;
    const char *curve_secret_file = NULL;
    const lq_opt_t opts[] = {
        {"broker", "LLMQ_BROKER", LQ_OPT_STR, &o.broker, "ENDPOINT",
         "broker client endpoint (default tcp://127.0.0.1:5555)"},
        {"connect-timeout", "LLMQ_CONNECT_TIMEOUT", LQ_OPT_INT, &o.connect_timeout_s, "SECONDS",
         "give up on an unreachable broker after this long (default 5)", 1, 86400},
        {"retry-window", "LLMQ_RETRY_WINDOW", LQ_OPT_INT, &o.retry_window_s, "SECONDS",
         "how long wait/results ride out a broker outage (default 120)", 1, 86400},
        {"json", NULL, LQ_OPT_FLAG, &o.json, NULL, "machine-readable output"},
        {"quiet", "LLMQ_QUIET", LQ_OPT_FLAG, &o.quiet, NULL, "no progress or notes on stderr"},
        {"name", NULL, LQ_OPT_STR, &o.name, "NAME",
         "idempotent batch name: the same name resumes the same batch"},
        {"upstream", NULL, LQ_OPT_STR, &o.upstream, "NAME", "worker upstream (default default)"},
        {"max-attempts", "LLMQ_MAX_ATTEMPTS", LQ_OPT_INT, &o.max_attempts, "N",
         "attempts per job (default 5)", 1, 100},
        {"timeout", "LLMQ_TIMEOUT", LQ_OPT_INT, &o.timeout_s, "SECONDS",
         "per-attempt timeout (default 600)", 1, 86400},
        {"priority", NULL, LQ_OPT_INT, &o.priority, "P", "higher runs first (default 0)", -100,
         100},
        {"prompts", NULL, LQ_OPT_STR, &o.prompts, "FILE", "a text file, one prompt per line"},
        {"model", NULL, LQ_OPT_STR, &o.model, "MODEL", "model for --prompts"},
        {"system", NULL, LQ_OPT_STR, &o.system, "TEXT", "system message for --prompts"},
        {"max-tokens", NULL, LQ_OPT_INT, &o.max_tokens, "N", "max_tokens for --prompts", 1,
         10000000},
        {"output", NULL, LQ_OPT_STR, &o.out, "OUT", "results file (also -o; '-' = stdout)"},
        {"o", NULL, LQ_OPT_STR, &out_short, "OUT", "same as --output"},
        {"errors", NULL, LQ_OPT_STR, &o.errors, "ERRFILE", "write failed jobs here instead"},
        {"curve-server-key", "LLMQ_CURVE_SERVER_KEY", LQ_OPT_STR, &o.curve_server_key, "KEY",
         "the broker's CURVE public key (Z85): encrypt the connection"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &curve_secret_file, "FILE",
         "our CURVE secret key, for brokers that allow-list clients"},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &log_level, "LEVEL", "default warn"},
        {NULL},
    };
    lq_log_init("llmq");
    /* Accept the short form -o OUT by rewriting it to --o. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-o") == 0)
            argv[i] = "--o";
    lq_opts_result_t res;
    char err[256];
    if (lq_opts_parse(opts, argc, argv, 1, &res, err, sizeof err) < 0) {
        fprintf(stderr, "llmq: %s\n", err);
        return LQ_EXIT_USAGE;
    }
    if (out_short)
        o.out = out_short;
    if (res.help || res.npositionals == 0) {
        lq_opts_print_help(res.help ? stdout : stderr, s_usage, opts);
        return res.help ? LQ_EXIT_OK : LQ_EXIT_USAGE;
    }
    lq_log_level_t level;
    if (lq_log_parse_level(log_level, &level) == 0)
        lq_log_set_level(level);
    signal(SIGPIPE, SIG_IGN);
    const char *cmd = res.positionals[0];
    int nargs = res.npositionals - 1;
    const char *arg1 = nargs > 0 ? res.positionals[1] : NULL;
    if (nargs > 1) {
        fprintf(stderr, "llmq: unexpected argument '%s'\n", res.positionals[2]);
        return LQ_EXIT_USAGE;
    }
    char curve_secret[41], curve_public[41];
    if (curve_secret_file) {
        if (lq_curve_read_secret(curve_secret_file, curve_secret, curve_public, err,
                                 sizeof err) < 0) {
            fprintf(stderr, "llmq: %s\n", err);
            return LQ_EXIT_USAGE;
        }
        o.curve_secret = curve_secret;
    }
    if (strcmp(cmd, "keygen") == 0) {
        if (!s_need(1, nargs, cmd, "a PREFIX"))
            return LQ_EXIT_USAGE;
        if (lq_curve_keygen(arg1, err, sizeof err) < 0) {
            fprintf(stderr, "llmq: %s\n", err);
            return LQ_EXIT_RUNTIME;
        }
        printf("wrote %s.key (secret) and %s.pub (public)\n", arg1, arg1);
        return LQ_EXIT_OK;
    }
    char batch[LQ_MAX_ID + 1] = "";
    if (strcmp(cmd, "submit") == 0) {
        if (!o.prompts && !s_need(1, nargs, cmd, "a FILE"))
            return LQ_EXIT_USAGE;
        int rc = lq_cmd_submit(&o, arg1, batch, sizeof batch);
        if (rc == LQ_EXIT_OK)
            printf("%s\n", batch);
        return rc;
    }
    if (strcmp(cmd, "run") == 0) {
        if ((!o.prompts && !s_need(1, nargs, cmd, "a FILE")) || !o.out) {
            if (!o.out)
                fprintf(stderr, "llmq: run needs -o OUT\n");
            return LQ_EXIT_USAGE;
        }
        int rc = lq_cmd_submit(&o, arg1, batch, sizeof batch);
        if (rc != LQ_EXIT_OK)
            return rc;
        if (!o.quiet)
            fprintf(stderr, "llmq: batch %s %s\n", batch, o.name ? "ready" : "submitted");
        int wrc = lq_cmd_wait(&o, batch);
        if (wrc != LQ_EXIT_OK && wrc != LQ_EXIT_FAILED_JOBS)
            return wrc;
        int rrc = lq_cmd_results(&o, batch);
        printf("%s\n", batch);
        return rrc == LQ_EXIT_OK ? wrc : rrc;
    }
    if (strcmp(cmd, "status") == 0)
        return s_need(1, nargs, cmd, "a BATCH") ? lq_cmd_status(&o, arg1) : LQ_EXIT_USAGE;
    if (strcmp(cmd, "wait") == 0)
        return s_need(1, nargs, cmd, "a BATCH") ? lq_cmd_wait(&o, arg1) : LQ_EXIT_USAGE;
    if (strcmp(cmd, "results") == 0)
        return s_need(1, nargs, cmd, "a BATCH") ? lq_cmd_results(&o, arg1) : LQ_EXIT_USAGE;
    if (strcmp(cmd, "cancel") == 0)
        return s_need(1, nargs, cmd, "a BATCH") ? lq_cmd_cancel(&o, arg1) : LQ_EXIT_USAGE;
    if (strcmp(cmd, "list") == 0)
        return lq_cmd_list(&o);
    if (strcmp(cmd, "workers") == 0)
        return lq_cmd_workers(&o);
    if (strcmp(cmd, "ping") == 0)
        return lq_cmd_ping(&o, arg1);
    fprintf(stderr, "llmq: unknown command '%s' (try llmq --help)\n", cmd);
    return LQ_EXIT_USAGE;
}
