/* jobs: the worker's job records and the table that finds them by
 * (batch, index).
 *
 * A record lives from the JOB message that brought it until the broker
 * acknowledges its RESULT (or a newer attempt of the same job supersedes
 * it): first RUNNING (the request body is held for the HTTP transfer),
 * then DONE (the body is released, the result is held for re-sending until
 * the RESULT_ACK). The table owns the records it holds; lq_jobtab_destroy
 * frees them. Records also carry intrusive links for two lists the session
 * keeps (results awaiting an ack in completion order, and results waiting
 * to be sent); a list never owns a record. */
#ifndef LQ_WORKER_JOBS_H
#define LQ_WORKER_JOBS_H

#include "../proto/msg.h"
#include "headers.h"
#include "outcome.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { LQ_WJOB_RUNNING = 0, LQ_WJOB_DONE = 1 } lq_wjob_state_t;

/* Lists a record can be on (one link pair each). */
enum { LQ_WL_UNACKED = 0, LQ_WL_SENDQ = 1, LQ_WL_COUNT = 2 };

typedef struct lq_wjob lq_wjob_t;

typedef struct {
    lq_wjob_t *prev, *next;
    int on; /* 1 while on the list */
} lq_wlink_t;

struct lq_wjob {
    /* The job as received (copied out of the message; batch, upstream and
     * url share the record's allocation, the body has its own). */
    char *batch;
    int64_t index;
    int64_t attempt;
    char *upstream; /* NULL: default */
    char *url;
    char *body; /* freed when the job is done */
    size_t body_len;
    int64_t timeout_ms;
    int state; /* lq_wjob_state_t */
    uint64_t received_ms;
    /* The result, once DONE. */
    lq_outcome_res_t res;
    int64_t status;
    lq_resp_headers_t hdr; /* request id, retry hint, rate-limit headers */
    int64_t latency_ms;
    void *runner; /* the runner executing it, while RUNNING */
    /* Owned by the table and the session's lists. */
    lq_wjob_t *hnext;
    lq_wlink_t link[LQ_WL_COUNT];
};

typedef struct {
    lq_wjob_t *head, *tail;
    size_t len;
    int which; /* LQ_WL_* */
} lq_wlist_t;

/* Copies a decoded JOB into a new RUNNING record. Can't fail. */
lq_wjob_t *lq_wjob_new(const lq_w_job_t *m, uint64_t now_ms);
/* Frees a record (must be off every list and out of the table). Safe on
 * NULL; clears *j. */
void lq_wjob_destroy(lq_wjob_t **j);
/* Fills out (a zeroed lq_msg_t) with a W_RESULT for a DONE record. The
 * message borrows j's strings. Can't fail. */
void lq_wjob_result_msg(const lq_wjob_t *j, lq_msg_t *out);

/* Initializes an empty list of kind which. Can't fail. */
void lq_wlist_init(lq_wlist_t *l, int which);
/* Appends j (which must not be on l) / removes j if on l. Can't fail. */
void lq_wlist_push(lq_wlist_t *l, lq_wjob_t *j);
void lq_wlist_remove(lq_wlist_t *l, lq_wjob_t *j);

typedef struct lq_jobtab lq_jobtab_t;

/* Creates an empty table. Can't fail. */
lq_jobtab_t *lq_jobtab_new(void);
/* Frees the table and every record in it. Safe on NULL; clears *t. */
void lq_jobtab_destroy(lq_jobtab_t **t);
/* Finds the record of (batch, index), or NULL. */
lq_wjob_t *lq_jobtab_find(const lq_jobtab_t *t, const char *batch, int64_t index);
/* Inserts j; its key must not be in the table yet. Can't fail. */
void lq_jobtab_insert(lq_jobtab_t *t, lq_wjob_t *j);
/* Removes j from the table (does not free it). Can't fail. */
void lq_jobtab_remove(lq_jobtab_t *t, lq_wjob_t *j);
/* Number of records. */
size_t lq_jobtab_count(const lq_jobtab_t *t);

#endif
