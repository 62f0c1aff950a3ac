/* ping: `llmq ping [WORKER]`, the cheap health check used by containers.
 * Asks the broker for its in-memory worker table once, within
 * --connect-timeout (no Redis round trip). Owns nothing beyond the call. */
#include "client.h"

#include <stdio.h>
#include <string.h>

/* Checks the broker answers and, with worker_prefix, that a connected worker
 * id starts with it (workers name themselves HOSTNAME-PID-RANDOM, so a
 * container passes its hostname). Prints one line. Returns LQ_EXIT_OK, or
 * LQ_EXIT_RUNTIME when the broker is unreachable or the worker is absent. */
int lq_cmd_ping(const lq_client_opts_t *o, const char *worker_prefix)
{
    lq_rpc_t *rpc = lq_client_connect(o);
    if (!rpc)
        return LQ_EXIT_RUNTIME;
    lq_msg_t m = {0}, reply;
    m.cmd = LQ_C_WORKERS;
    int got = lq_client_call(rpc, o, &m, &reply, 1);
    lq_rpc_destroy(&rpc);
    if (got <= 0)
        return got < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_RUNTIME;
    if (reply.cmd != LQ_C_WORKERS_REPLY) {
        fprintf(stderr, "llmq: ping: unexpected reply from the broker\n");
        lq_msg_clear(&reply);
        return LQ_EXIT_RUNTIME;
    }
    const lq_c_workers_reply_t *w = &reply.u.workers_reply;
    int rc = LQ_EXIT_OK;
    if (worker_prefix) {
        size_t n = strlen(worker_prefix);
        rc = LQ_EXIT_RUNTIME;
        for (size_t i = 0; i < w->nworkers; i++)
            if (strncmp(w->workers[i].id, worker_prefix, n) == 0)
                rc = LQ_EXIT_OK;
        if (rc == LQ_EXIT_OK)
            printf("ok: worker %s connected to %s\n", worker_prefix, o->broker);
        else
            fprintf(stderr, "llmq: ping: no worker '%s*' connected to %s\n", worker_prefix,
                    o->broker);
    } else {
        printf("ok: broker %s answers, %zu workers\n", o->broker, w->nworkers);
    }
    lq_msg_clear(&reply);
    return rc;
}
