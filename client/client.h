/* client: the `llmq` command-line tool. main.c parses the command line and
 * runs one command; submit.c sends a batch file in acknowledged chunks;
 * commands.c holds status, wait, results, cancel, list and workers. */
#ifndef LQ_CLIENT_H
#define LQ_CLIENT_H

#include "rpc.h"

#include <stdint.h>

/* Exit codes of the contract. */
#define LQ_EXIT_OK 0
#define LQ_EXIT_USAGE 1
#define LQ_EXIT_RUNTIME 2
#define LQ_EXIT_FAILED_JOBS 3
#define LQ_EXIT_INTERRUPTED 130

typedef struct {
    const char *broker;
    const char *curve_server_key;  /* Z85 public key of the broker, NULL = plain */
    const char *curve_secret;      /* our Z85 secret key, NULL = ephemeral */
    long long connect_timeout_s; /* first contact with the broker */
    long long retry_window_s;    /* how long wait/results ride out an outage */
    int json;
    int quiet;
    /* submit / run */
    const char *name;
    const char *upstream;
    long long max_attempts;
    long long timeout_s;
    long long priority;
    const char *prompts; /* prompts mode: the file */
    const char *model;
    int cache; /* answer repeated requests from the broker's response cache */
    const char *system;
    long long max_tokens;
    /* results / run */
    const char *out;
    const char *errors;
} lq_client_opts_t;

/* Connects (lazily) and checks the broker answers within the connect
 * timeout. Returns the channel or NULL after printing why (exit 2). */
lq_rpc_t *lq_client_connect(const lq_client_opts_t *o);

/* Sends one request with retries within the retry window: returns 1 with a
 * reply (which may be LQ_C_ERROR), 0 if the broker stayed unreachable, -1 if
 * interrupted. first: use the short connect timeout. */
int lq_client_call(lq_rpc_t *rpc, const lq_client_opts_t *o, lq_msg_t *m, lq_msg_t *reply,
                   int first);

/* Each command returns the process exit code. */
int lq_cmd_submit(const lq_client_opts_t *o, const char *file, char *batch_out, size_t batch_len);
int lq_cmd_status(const lq_client_opts_t *o, const char *batch);
int lq_cmd_wait(const lq_client_opts_t *o, const char *batch);
int lq_cmd_results(const lq_client_opts_t *o, const char *batch);
int lq_cmd_cancel(const lq_client_opts_t *o, const char *batch);
int lq_cmd_list(const lq_client_opts_t *o);
/* Deletes each batch (finished or cancelled ones only); goes on past errors.
 * Returns 0, or the exit status of the last failure. */
int lq_cmd_delete(const lq_client_opts_t *o, const char *const *batches, size_t n);
int lq_cmd_workers(const lq_client_opts_t *o);
/* cache stats | cache clear [--upstream NAME]. */
int lq_cmd_cache(const lq_client_opts_t *o, const char *op);
/* top.c: the live full-terminal view; q quits. */
int lq_cmd_top(const lq_client_opts_t *o);
/* ping.c: health check: the broker answers (and a worker whose id starts
 * with WORKER is connected). */
int lq_cmd_ping(const lq_client_opts_t *o, const char *worker_prefix);

#endif
