/* worker_driver: a minimal stand-in for the broker, to measure ONE
 * llmq-worker without the broker and Redis in the way (bench/worker_bench.py
 * builds and runs it).
 *
 *   worker_driver --bind tcp://127.0.0.1:PORT --jobs N [--body-pad BYTES]
 *
 * Binds a ROUTER on the worker port and speaks the worker dialogue of
 * docs/protocol.md 7.2: takes the worker's READY and CREDITs, sends one JOB
 * per credit (chat completions for custom_id "req-<i>", as
 * tests/system/harness.py gen_batch writes them), answers every RESULT with
 * a RESULT_ACK (batched once per loop iteration) and HEARTBEATs every
 * second. Prints "registered" once the worker's READY arrived, then waits
 * for a line on stdin before sending the first JOB (so the caller can take
 * an idle baseline), and prints one JSON line when N results are in:
 *   {"jobs":N,"ok":N,"failed":0,"wall_s":...,"first_job_to_last_result_s":...}
 * Every job is sent once (a retryable outcome is counted as failed, not
 * re-run). Uses the project's own proto/ and wire/ libraries. */
#include "../common/loop.h"
#include "../common/util.h"
#include "../proto/msg.h"
#include "../wire/zsock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    lq_loop_t *loop;
    lq_zsock_t *sock;
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    int registered, go;
    int64_t credit;
    int64_t njobs, next, results, ok, failed;
    size_t pad;
    lq_job_ref_t *acks;
    size_t nacks;
    double t_first_job, t_last_result, t_go;
    lq_timer_t hb;
} s_drv_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sends JOBs while the worker has credit. */
static void s_dispatch(s_drv_t *d)
{
    char body[512 + 65536];
    while (d->go && d->registered && d->credit > 0 && d->next < d->njobs) {
        int n = snprintf(body, 512,
                         "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"Say hello to req-%lld%s",
                         (long long)d->next, d->pad ? " " : "");
        if (d->pad) {
            memset(body + n, 'x', d->pad);
            n += (int)d->pad;
        }
        n += snprintf(body + n, 512,
                      "\"}],\"max_tokens\":16,\"metadata\":{\"custom_id\":\"req-%lld\"}}",
                      (long long)d->next);
        lq_msg_t m = {0};
        m.cmd = LQ_W_JOB;
        m.u.job.batch = "bench";
        m.u.job.index = d->next;
        m.u.job.attempt = 1;
        m.u.job.upstream = "default";
        m.u.job.url = "/v1/chat/completions";
        m.u.job.body = body;
        m.u.job.body_len = (size_t)n;
        m.u.job.timeout_ms = 600000;
        if (lq_zsock_send(d->sock, d->ident, d->ident_len, &m) < 0)
            return; /* full: the next wake retries */
        if (d->next == 0)
            d->t_first_job = s_now();
        d->next++;
        d->credit--;
    }
}

static void s_send_simple(s_drv_t *d, int cmd)
{
    lq_msg_t m = {0};
    m.cmd = (uint8_t)cmd;
    lq_zsock_send(d->sock, d->ident, d->ident_len, &m);
}

static void s_on_msg(lq_zsock_t *z, const uint8_t *ident, size_t ident_len, lq_msg_t *m, void *arg)
{
    (void)z;
    s_drv_t *d = arg;
    switch (m->cmd) {
    case LQ_W_READY:
        memcpy(d->ident, ident, ident_len);
        d->ident_len = ident_len;
        d->credit = m->u.ready.credit;
        if (!d->registered) {
            d->registered = 1;
            printf("registered\n");
            fflush(stdout);
        }
        break;
    case LQ_W_CREDIT:
        d->credit += m->u.credit.credit;
        break;
    case LQ_W_RESULT: {
        const lq_w_result_t *r = &m->u.result;
        d->results++;
        if (r->outcome == LQ_OUTCOME_OK)
            d->ok++;
        else
            d->failed++;
        d->t_last_result = s_now();
        d->acks[d->nacks].batch = "bench";
        d->acks[d->nacks].index = r->index;
        d->nacks++;
        break;
    }
    case LQ_W_HEARTBEAT:
    case LQ_W_DISCONNECT:
        break;
    default:
        break;
    }
}

/* Before every sleep: acknowledge what arrived, send more jobs, finish. */
static void s_before_sleep(lq_loop_t *loop, void *arg)
{
    s_drv_t *d = arg;
    size_t off = 0;
    while (off < d->nacks) {
        size_t n = d->nacks - off;
        if (n > 10000)
            n = 10000;
        lq_msg_t m = {0};
        m.cmd = LQ_W_RESULT_ACK;
        m.u.result_ack.jobs = d->acks + off;
        m.u.result_ack.njobs = n;
        lq_zsock_send(d->sock, d->ident, d->ident_len, &m);
        off += n;
    }
    d->nacks = 0;
    s_dispatch(d);
    if (d->results >= d->njobs) {
        printf("{\"jobs\":%lld,\"ok\":%lld,\"failed\":%lld,\"wall_s\":%.4f,"
               "\"first_job_to_last_result_s\":%.4f}\n",
               (long long)d->njobs, (long long)d->ok, (long long)d->failed,
               d->t_last_result - d->t_go, d->t_last_result - d->t_first_job);
        fflush(stdout);
        lq_loop_stop(loop);
    }
}

/* The caller's "go" line (or EOF): start sending jobs. */
static void s_on_stdin(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    s_drv_t *d = arg;
    char buf[64];
    if (read(fd, buf, sizeof buf) < 0) {
        /* EOF or error: go all the same */
    }
    lq_loop_unwatch(loop, fd);
    if (!d->go) {
        d->go = 1;
        d->t_go = s_now();
    }
}

static void s_on_hb(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    s_drv_t *d = arg;
    if (d->registered)
        s_send_simple(d, LQ_W_HEARTBEAT);
    lq_timer_start(loop, t, 1000);
}

int main(int argc, char **argv)
{
    const char *bind = NULL;
    long long njobs = 0, pad = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--bind"))
            bind = argv[i + 1];
        else if (!strcmp(argv[i], "--jobs"))
            njobs = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--body-pad"))
            pad = atoll(argv[i + 1]);
    }
    if (!bind || njobs <= 0 || pad < 0 || pad > 65000) {
        fprintf(stderr, "usage: worker_driver --bind ENDPOINT --jobs N [--body-pad BYTES]\n");
        return 1;
    }
    s_drv_t d = {0};
    d.njobs = njobs;
    d.pad = (size_t)pad;
    d.acks = xcalloc((size_t)njobs, sizeof *d.acks);
    d.loop = lq_loop_new();
    void *zctx = zmq_ctx_new();
    d.sock = lq_zsock_new(d.loop, zctx, ZMQ_ROUTER, s_on_msg, &d);
    int hwm = 1000000;
    zmq_setsockopt(lq_zsock_raw(d.sock), ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(lq_zsock_raw(d.sock), ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (lq_zsock_bind(d.sock, bind) < 0) {
        fprintf(stderr, "worker_driver: cannot bind %s\n", bind);
        return 1;
    }
    lq_loop_watch(d.loop, 0, LQ_READABLE, s_on_stdin, &d);
    lq_loop_add_before_sleep(d.loop, s_before_sleep, &d);
    lq_timer_init(&d.hb, s_on_hb, &d);
    lq_timer_start(d.loop, &d.hb, 1000);
    lq_loop_run(d.loop);
    lq_timer_stop(d.loop, &d.hb);
    lq_zsock_destroy(&d.sock);
    zmq_ctx_term(zctx);
    lq_loop_destroy(&d.loop);
    free(d.acks);
    return 0;
}
