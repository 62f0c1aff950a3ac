/* submit: the submit path as a library, shared by `llmq submit` and
 * llmq-gateway.
 *
 * Two steps on one object: lq_submit_validate() reads the whole file once
 * and checks every line (client/jsonl.h), reporting each invalid one through
 * a callback, and computes a fingerprint of the jobs; lq_submit_send() then
 * opens the batch on the broker (resuming it when a batch of the same name
 * exists), streams the file in chunks with at most LQ_SUBMIT_WINDOW chunks
 * unacknowledged, sends again what is not acknowledged in time (the broker
 * stores jobs by index, so a repeat is not stored twice) and closes it.
 * Memory: the window of chunks plus, during validation, the reader's id set.
 *
 * Idempotency: a batch with a name is resumed by name; the fingerprint makes
 * the broker refuse a name reused for another input. Sending the same file
 * with the same name twice gives one batch.
 *
 * The library prints nothing: invalid lines go to the error callback,
 * progress notices to the notice callback, and a failure's message stays on
 * the object (lq_submit_error). The caller owns the rpc channel. */
#ifndef LQ_SUBMIT_H
#define LQ_SUBMIT_H

#include "jsonl.h"
#include "rpc.h"

#include <stddef.h>

typedef struct lq_submit lq_submit_t;

typedef enum {
    LQ_SUBMIT_OK = 0,
    LQ_SUBMIT_REFUSED = 1,     /* bad input, or the broker refused the batch */
    LQ_SUBMIT_UNREACHABLE = 2, /* no answer within the retry window, or a runtime error */
    LQ_SUBMIT_INTERRUPTED = 3, /* SIGINT while sending; the batch id is known */
} lq_submit_rc_t;

/* Called for each invalid line (line >= 1), or once with line 0 for an
 * error about the whole file. message is valid during the call only. */
typedef void lq_submit_error_fn(void *arg, long long line, const char *message);
/* Called with informational messages (resuming, sending again). */
typedef void lq_submit_notice_fn(void *arg, const char *message);

typedef struct {
    const char *name;     /* NULL: no name (not resumable) */
    const char *upstream; /* NULL: the broker's default */
    long long max_attempts, timeout_s, priority;
    long long connect_timeout_s; /* first contact with the broker */
    long long retry_window_s;    /* how long later calls ride out an outage */
    int cache;                   /* answer repeated requests from the response cache */
    lq_submit_notice_fn *notice; /* may be NULL */
    void *notice_arg;
} lq_submit_params_t;

/* Creates a submission of the file at path (opts: NULL for batch mode with
 * defaults; copied). Nothing is read yet. Returns the object (aborts on
 * OOM); the caller owns it. */
lq_submit_t *lq_submit_new(const char *path, const lq_jsonl_opts_t *opts);

/* Makes the validation require every line's url to be url (copied), as
 * the OpenAI Batch API does with the batch's endpoint. Can't fail. */
void lq_submit_expect_url(lq_submit_t *s, const char *url);

/* Frees the submission and clears *s. Safe on NULL. */
void lq_submit_destroy(lq_submit_t **s);

/* Step 1: reads the file once and checks every line. Each invalid line is
 * passed to on_error (the first max_reported of them; all are counted).
 * Returns the number of jobs, or -1 if the file is invalid (see
 * lq_submit_invalid_lines) or unreadable (lq_submit_error). */
long long lq_submit_validate(lq_submit_t *s, size_t max_reported, lq_submit_error_fn *on_error,
                             void *arg);

/* Invalid lines found by lq_submit_validate. Can't fail. */
long long lq_submit_invalid_lines(const lq_submit_t *s);

/* Step 2 (after a successful validate): opens, streams and closes the batch
 * over rpc. Returns an lq_submit_rc_t; the batch id is known once the
 * broker opened it (also on INTERRUPTED and on later failures). */
lq_submit_rc_t lq_submit_send(lq_submit_t *s, lq_rpc_t *rpc, const lq_submit_params_t *p);

/* The broker's batch id ("" before it was opened). Owned by s. */
const char *lq_submit_batch(const lq_submit_t *s);

/* 1 if the broker resumed an existing batch of the same name. */
int lq_submit_resumed(const lq_submit_t *s);

/* The message of the last failure ("" if none). Owned by s. */
const char *lq_submit_error(const lq_submit_t *s);

#endif
