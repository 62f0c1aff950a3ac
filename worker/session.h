/* session: the worker's side of the broker dialogue (docs/protocol.md 7.2).
 *
 * Owns the DEALER socket (re-created after the broker goes silent), the
 * job table (jobs RUNNING and results awaiting RESULT_ACK), the queue of
 * results waiting for the socket to accept them, and the credit
 * accounting. It does not run jobs: it hands each new job to the exec
 * callback and is told of its end through lq_session_job_done().
 *
 * Credit: credit_out is what the broker holds for us. READY sets it (to
 * the free slots), each CREDIT adds, each JOB takes one. Before every
 * sleep lq_session_tick() grants concurrency - inflight - credit_out more
 * in one CREDIT (a duplicate JOB is not run, so its credit comes back the
 * same way); nothing while draining, or while more results than
 * concurrency await an ack.
 *
 * Lists: READY announces JOB_LIST (batch = LQ_MAX_BATCH); a JOB_LIST is
 * handled as its JOBs in order. Once the broker has sent a JOB_LIST since
 * our last READY, the results completed in one loop iteration go out
 * together from lq_session_tick() as one RESULT_LIST; until then (an older
 * broker, or just after a re-registration) each result goes at once in
 * its own RESULT.
 *
 * Liveness: HEARTBEAT every heartbeat_ms; any message from the broker
 * proves it alive. After heartbeat_ms * liveness of silence (plus a
 * growing backoff on repeated failures, up to 30 s) the DEALER is
 * destroyed (from a timer, never from its own callback), a new one
 * connects, sends READY and re-sends every unacknowledged result.
 *
 * Several brokers ("tcp://a:5556,tcp://b:5556"): the session talks to one
 * at a time, starting at the one the hash of its id picks (so workers
 * spread over the brokers); each reconnect after silence moves to the next
 * of the list, round-robin, and the backoff grows once per full round. The
 * results re-sent there are recorded once (REPORT is idempotent). The
 * same re-registration without a new socket answers DISCONNECT. HTTP
 * requests in flight are unaffected.
 *
 * Drain: lq_session_drain() sends READY with credit 0, keeps running what
 * it holds (and JOBs still arriving), sends the results and waits for
 * their acks, then sends DISCONNECT and calls the exit callback; after
 * drain_timeout_ms it does so anyway. */
#ifndef LQ_WORKER_SESSION_H
#define LQ_WORKER_SESSION_H

#include "../common/loop.h"
#include "jobs.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lq_session lq_session_t;

typedef struct {
    const char *endpoint; /* tcp://HOST:5556, or several separated by commas */
    const char *id;       /* worker id, also the ZMQ_ROUTING_ID */
    int64_t concurrency;
    int64_t heartbeat_ms;
    int64_t liveness;
    int64_t drain_timeout_ms;
    const char **upstreams; /* names advertised in READY */
    size_t nupstreams;
    int hwm; /* ZMQ_SNDHWM / ZMQ_RCVHWM; 0: 100000 */
    /* CURVE (Z85, 40 characters): the broker's public key (NULL: plain
     * TCP) and our secret key (its public key is derived). */
    const char *curve_server_key;
    const char *curve_secret_key;
} lq_session_config_t;

/* Starts job (RUNNING, in the table). Must end with lq_session_job_done(),
 * possibly before returning. */
typedef void (*lq_session_exec_cb)(lq_wjob_t *job, void *arg);
/* The drain is over: the caller should stop the loop and exit with code. */
typedef void (*lq_session_exit_cb)(int code, void *arg);

typedef struct {
    int64_t inflight, unacked, queued, credit_out;
    uint64_t received, done, ok, retryable, fatal;
    uint64_t duplicates, superseded, overloaded, acked, results_sent, credits_sent;
    uint64_t reconnects, reregistrations, dropped_msgs;
    int connected; /* heard from the broker since the last (re)connect */
    int draining;
} lq_session_stats_t;

/* Creates a session; cfg's strings are borrowed and must outlive it.
 * Nothing is sent before lq_session_start(). Can't fail. */
lq_session_t *lq_session_new(lq_loop_t *loop, void *zctx, const lq_session_config_t *cfg,
                             lq_session_exec_cb exec, lq_session_exit_cb on_exit, void *arg);

/* Connects and sends READY. Returns 0, or -1 when the endpoint or socket
 * options are refused (logged). */
int lq_session_start(lq_session_t *s);

/* Sends what is pending and the coalesced CREDIT. Call it from a
 * before-sleep hook on every iteration. Can't fail. */
void lq_session_tick(lq_session_t *s);

/* Reports that job (from the exec callback) is DONE: sends its RESULT and
 * keeps it until acknowledged. Can't fail. */
void lq_session_job_done(lq_session_t *s, lq_wjob_t *job);

/* Starts the graceful drain (idempotent). Can't fail. */
void lq_session_drain(lq_session_t *s);

/* Copies the counters. Can't fail. */
void lq_session_stats(const lq_session_t *s, lq_session_stats_t *out);

/* Closes the socket (giving a final DISCONNECT up to linger_ms to leave)
 * and frees every job. Destroy whatever runs jobs (the http engine) first.
 * Must not be called from a session callback. Safe on NULL; clears *s. */
void lq_session_destroy(lq_session_t **s, int linger_ms);

#endif
