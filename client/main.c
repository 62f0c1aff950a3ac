/* llmq: the client command line. Parses global and command options from one
 * table (options may appear before or after the command) and runs the
 * command. Exit codes: 0 ok, 1 bad usage or input, 2 broker unreachable or
 * runtime failure, 3 finished with failed jobs, 130 interrupted. */
#include "client.h"

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "common/version.h"
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
    "  delete BATCH...                          remove finished or cancelled batches from Redis\n"
    "  cache stats | cache clear [--upstream NAME]\n"
    "                                           the response cache (submit/run --cache uses it)\n"
    "  top                                      live full-terminal view; q quits\n"
    "  ping [WORKER]                            health check: broker answers (and WORKER* connected)\n"
    "  keygen PREFIX                            write a CURVE key pair: PREFIX.key, PREFIX.pub\n"
    "\n"
    "Exit status: 0 all succeeded, 3 finished with failed jobs, 1 bad usage or input,\n"
    "2 broker unreachable or other runtime failure.";

/* Everything the command line and the environment configure. */
typedef struct {
    lq_client_opts_t o;
    const char *log_level, *out_short, *curve_secret_file;
    char curve_secret[41], curve_public[41];
    const char *cmd, *arg; /* the command and its first argument (or NULL) */
    const char *const *args; /* all its arguments */
    int nargs;
} s_config_t;

/* Parses flags and environment into c. Returns -1 to go on, else the exit
 * status (usage errors are printed). */
static int s_parse(s_config_t *c, int argc, char **argv)
{
    *c = (s_config_t){
        .o =
            {
                .broker = "tcp://127.0.0.1:5555",
                .connect_timeout_s = 5,
                .retry_window_s = 120,
                .max_attempts = 5,
                .timeout_s = 600,
            },
        .log_level = "warn",
    };
    lq_client_opts_t *o = &c->o;
    const lq_opt_t opts[] = {
        {"broker", "LLMQ_BROKER", LQ_OPT_STR, &o->broker, "ENDPOINT",
         "broker client endpoint (default tcp://127.0.0.1:5555)"},
        {"connect-timeout", "LLMQ_CONNECT_TIMEOUT", LQ_OPT_INT, &o->connect_timeout_s, "SECONDS",
         "give up on an unreachable broker after this long (default 5)", 1, 86400},
        {"retry-window", "LLMQ_RETRY_WINDOW", LQ_OPT_INT, &o->retry_window_s, "SECONDS",
         "how long wait/results ride out a broker outage (default 120)", 1, 86400},
        {"json", NULL, LQ_OPT_FLAG, &o->json, NULL, "machine-readable output"},
        {"quiet", "LLMQ_QUIET", LQ_OPT_FLAG, &o->quiet, NULL, "no progress or notes on stderr"},
        {"name", NULL, LQ_OPT_STR, &o->name, "NAME",
         "idempotent batch name: the same name resumes the same batch"},
        {"upstream", NULL, LQ_OPT_STR, &o->upstream, "NAME", "worker upstream (default default)"},
        {"cache", NULL, LQ_OPT_FLAG, &o->cache, NULL,
         "answer requests seen before from the response cache (submit, run)"},
        {"max-attempts", "LLMQ_MAX_ATTEMPTS", LQ_OPT_INT, &o->max_attempts, "N",
         "attempts per job (default 5)", 1, 100},
        {"timeout", "LLMQ_TIMEOUT", LQ_OPT_INT, &o->timeout_s, "SECONDS",
         "per-attempt timeout (default 600)", 1, 86400},
        {"priority", NULL, LQ_OPT_INT, &o->priority, "P", "higher runs first (default 0)", -100,
         100},
        {"prompts", NULL, LQ_OPT_STR, &o->prompts, "FILE", "a text file, one prompt per line"},
        {"model", NULL, LQ_OPT_STR, &o->model, "MODEL", "model for --prompts"},
        {"system", NULL, LQ_OPT_STR, &o->system, "TEXT", "system message for --prompts"},
        {"max-tokens", NULL, LQ_OPT_INT, &o->max_tokens, "N", "max_tokens for --prompts", 1,
         10000000},
        {"output", NULL, LQ_OPT_STR, &o->out, "OUT", "results file (also -o; '-' = stdout)"},
        {"o", NULL, LQ_OPT_STR, &c->out_short, "OUT", "same as --output"},
        {"errors", NULL, LQ_OPT_STR, &o->errors, "ERRFILE", "write failed jobs here instead"},
        {"curve-server-key", "LLMQ_CURVE_SERVER_KEY", LQ_OPT_STR, &o->curve_server_key, "KEY",
         "the broker's CURVE public key (Z85): encrypt the connection"},
        {"curve-secret-file", "LLMQ_CURVE_SECRET_FILE", LQ_OPT_STR, &c->curve_secret_file, "FILE",
         "our CURVE secret key, for brokers that allow-list clients"},
        {"log-level", "LLMQ_LOG_LEVEL", LQ_OPT_STR, &c->log_level, "LEVEL", "default warn"},
        {NULL},
    };
    /* Accept the short form -o OUT by rewriting it to --o. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-o") == 0)
            argv[i] = "--o";
    lq_opts_main_t m = {"llmq", s_usage, opts, 64, &c->log_level};
    static lq_opts_result_t res;
    int rc = lq_opts_main(&m, argc, argv, &res);
    if (rc >= 0)
        return rc;
    if (res.npositionals == 0) {
        lq_opts_print_help(stderr, s_usage, opts);
        return LQ_EXIT_USAGE;
    }
    if (c->out_short)
        o->out = c->out_short;
    c->cmd = res.positionals[0];
    c->arg = res.npositionals > 1 ? res.positionals[1] : NULL;
    c->args = res.positionals + 1;
    c->nargs = res.npositionals - 1;
    return -1;
}

/* Reads our CURVE secret key when one is configured. Returns 0 or -1. */
static int s_load_curve(s_config_t *c)
{
    char err[256];
    if (!c->curve_secret_file)
        return 0;
    if (lq_curve_read_secret(c->curve_secret_file, c->curve_secret, c->curve_public, err,
                             sizeof err) < 0) {
        fprintf(stderr, "llmq: %s\n", err);
        return -1;
    }
    c->o.curve_secret = c->curve_secret;
    return 0;
}

static int s_keygen(const lq_client_opts_t *o, const char *prefix)
{
    (void)o;
    char err[256];
    if (lq_curve_keygen(prefix, err, sizeof err) < 0) {
        fprintf(stderr, "llmq: %s\n", err);
        return LQ_EXIT_RUNTIME;
    }
    printf("wrote %s.key (secret) and %s.pub (public)\n", prefix, prefix);
    return LQ_EXIT_OK;
}

static int s_submit(const lq_client_opts_t *o, const char *file)
{
    char batch[LQ_MAX_ID + 1] = "";
    int rc = lq_cmd_submit(o, file, batch, sizeof batch);
    if (rc == LQ_EXIT_OK)
        printf("%s\n", batch);
    return rc;
}

/* run: submit, wait, then results; the status is the worst of them. */
static int s_run(const lq_client_opts_t *o, const char *file)
{
    if (!o->out) {
        fprintf(stderr, "llmq: run needs -o OUT\n");
        return LQ_EXIT_USAGE;
    }
    char batch[LQ_MAX_ID + 1] = "";
    int rc = lq_cmd_submit(o, file, batch, sizeof batch);
    if (rc != LQ_EXIT_OK)
        return rc;
    if (!o->quiet)
        fprintf(stderr, "llmq: batch %s %s\n", batch, o->name ? "ready" : "submitted");
    int wrc = lq_cmd_wait(o, batch);
    if (wrc != LQ_EXIT_OK && wrc != LQ_EXIT_FAILED_JOBS)
        return wrc;
    int rrc = lq_cmd_results(o, batch);
    printf("%s\n", batch);
    return rrc == LQ_EXIT_OK ? wrc : rrc;
}

static int s_list(const lq_client_opts_t *o, const char *arg)
{
    (void)arg;
    return lq_cmd_list(o);
}

static int s_workers(const lq_client_opts_t *o, const char *arg)
{
    (void)arg;
    return lq_cmd_workers(o);
}

static int s_top(const lq_client_opts_t *o, const char *arg)
{
    (void)arg;
    return lq_cmd_top(o);
}

/* How many arguments a command takes. */
typedef enum { S_NONE, S_ONE, S_OPTIONAL, S_MANY } s_arity_t;

static int s_delete(const s_config_t *c)
{
    return lq_cmd_delete(&c->o, c->args, (size_t)c->nargs);
}

/* The commands: name, arity, what the argument is, handler (one argument,
 * or s_delete's all of them). */
static const struct {
    const char *name;
    s_arity_t arity;
    const char *what;
    int (*run)(const lq_client_opts_t *o, const char *arg);
} s_commands[] = {
    {"keygen", S_ONE, "a PREFIX", s_keygen},
    {"submit", S_ONE, "a FILE", s_submit},
    {"run", S_ONE, "a FILE", s_run},
    {"status", S_ONE, "a BATCH", lq_cmd_status},
    {"wait", S_ONE, "a BATCH", lq_cmd_wait},
    {"results", S_ONE, "a BATCH", lq_cmd_results},
    {"cancel", S_ONE, "a BATCH", lq_cmd_cancel},
    {"delete", S_MANY, "a BATCH", NULL},
    {"list", S_NONE, NULL, s_list},
    {"workers", S_NONE, NULL, s_workers},
    {"cache", S_ONE, "stats or clear", lq_cmd_cache},
    {"top", S_NONE, NULL, s_top},
    {"ping", S_OPTIONAL, NULL, lq_cmd_ping},
};

/* Checks the argument count of command i. Returns 0, or -1 (printed). */
static int s_check_args(const s_config_t *c, size_t i)
{
    s_arity_t a = s_commands[i].arity;
    /* submit and run take their input from --prompts instead of a FILE */
    int from_prompts =
        c->o.prompts && (s_commands[i].run == s_submit || s_commands[i].run == s_run);
    if ((a == S_ONE || a == S_MANY) && c->nargs == 0 && !from_prompts) {
        fprintf(stderr, "llmq: %s needs %s (try llmq --help)\n", c->cmd, s_commands[i].what);
        return -1;
    }
    int max = a == S_NONE ? 0 : a == S_MANY ? c->nargs : 1;
    if (c->nargs > max) {
        fprintf(stderr, "llmq: unexpected argument '%s'\n", c->args[max]);
        return -1;
    }
    return 0;
}

/* Runs the parsed command. Returns the exit status. */
static int s_dispatch(const s_config_t *c)
{
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++) {
        if (strcmp(c->cmd, s_commands[i].name) != 0)
            continue;
        if (s_check_args(c, i) < 0)
            return LQ_EXIT_USAGE;
        return s_commands[i].arity == S_MANY ? s_delete(c) : s_commands[i].run(&c->o, c->arg);
    }
    fprintf(stderr, "llmq: unknown command '%s' (try llmq --help)\n", c->cmd);
    return LQ_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (lq_version_flag(argc, argv, "llmq"))
        return 0;
    lq_log_init("llmq");
    s_config_t c;
    int rc = s_parse(&c, argc, argv);
    if (rc >= 0)
        return rc;
    if (s_load_curve(&c) < 0)
        return LQ_EXIT_USAGE;
    signal(SIGPIPE, SIG_IGN);
    rc = s_dispatch(&c);
    memset(c.curve_secret, 0, sizeof c.curve_secret);
    return rc;
}
