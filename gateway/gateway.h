/* gateway: llmq-gateway, the OpenAI Files + Batches API over HTTP/1.1 in
 * front of a broker.
 *
 * Modules: main.c (options, start-up), http.c (libmicrohttpd on our epoll
 * loop, request bodies, routing, JSON replies), store.c (records and files
 * under --data-dir), files.c (/v1/files), batches.c (/v1/batches and the
 * submission threads), content.c (output and error files streamed from the
 * broker). This header is the gateway's internal contract between them.
 *
 * Threads: one loop thread serves HTTP and talks to the broker over one
 * rpc channel (short blocking calls: STATUS, CANCEL, RESULTS pages); each
 * batch being validated and submitted runs in a thread of its own with its
 * own rpc channel (client/submit.h). The store serialises record writes. */
#ifndef LQ_GATEWAY_H
#define LQ_GATEWAY_H

#include "client/rpc.h"
#include "common/loop.h"
#include "store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;

typedef struct {
    const char *broker;
    const char *listen;
    const char *data_dir;
    const char *tokens_file;
    const char *curve_server_key;
    const char *curve_secret; /* Z85 secret, NULL = ephemeral */
    long long max_attempts, timeout_s;
} lq_gw_opts_t;

typedef struct lq_gw lq_gw_t;
struct lq_gw {
    lq_gw_opts_t opts;
    lq_loop_t *loop;
    lq_rpc_t *rpc; /* the loop thread's channel to the broker */
    lq_store_t *store;
    char **tokens;
    size_t ntokens;
};

/* One HTTP request in progress (http.c owns it; the handlers fill the
 * upload part). */
typedef struct lq_gw_req {
    lq_gw_t *gw;
    struct MHD_Connection *conn;
    char owner[LQ_STORE_OWNER_LEN + 1]; /* "" when not authenticated */
    const char *method;
    char *path;
    char *body; /* request body (not for uploads), NUL-terminated */
    size_t body_len;
    int body_too_big;
    void *upload; /* files.c's multipart state, NULL if none */
} lq_gw_req_t;

struct MHD_Response;

/* ---- http.c: replies ---- */

/* Queues j (stolen) as a JSON reply with the HTTP status. Returns the
 * MHD result. */
int lq_gw_reply_json(lq_gw_req_t *r, unsigned status, json_t *j);
/* Queues an OpenAI error object:
 * {"error":{"message","type","param","code"}}. param/code may be NULL. */
int lq_gw_reply_error(lq_gw_req_t *r, unsigned status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* A 404 for a missing object of kind ("file", "batch"). */
int lq_gw_reply_not_found(lq_gw_req_t *r, const char *kind, const char *id);
/* Queues resp (a body made by the caller; destroyed here) as a 200
 * application/octet-stream reply. Returns the MHD result. */
int lq_gw_reply_octets(lq_gw_req_t *r, struct MHD_Response *resp);
/* A query-string argument of the request, or NULL. */
const char *lq_gw_query(lq_gw_req_t *r, const char *key);

/* ---- broker calls from the loop thread ---- */

/* Sends m to the broker and waits for the reply (two tries of 3 s).
 * Returns 1 with a reply (maybe LQ_C_ERROR; caller destroys it) or 0. */
int lq_gw_call(lq_gw_t *gw, lq_msg_t *m, lq_msg_t *reply);

/* ---- files.c ---- */

/* Upload hooks called by http.c for POST /v1/files: begin (first call),
 * data (each piece of the body), end (frees the state). */
int lq_files_upload_begin(lq_gw_req_t *r);
int lq_files_upload_data(lq_gw_req_t *r, const char *data, size_t len);
void lq_files_upload_end(lq_gw_req_t *r);
/* Route handlers; id is the path segment. Each returns the MHD result. */
int lq_files_create(lq_gw_req_t *r);
int lq_files_list(lq_gw_req_t *r);
int lq_files_get(lq_gw_req_t *r, const char *id);
int lq_files_content(lq_gw_req_t *r, const char *id);
int lq_files_delete(lq_gw_req_t *r, const char *id);

/* ---- batches.c ---- */

int lq_batches_create(lq_gw_req_t *r);
int lq_batches_get(lq_gw_req_t *r, const char *id);
int lq_batches_cancel(lq_gw_req_t *r, const char *id);
int lq_batches_list(lq_gw_req_t *r);
/* Submission threads still running. Can't fail. */
int lq_batches_running(void);
/* Restarts the submissions an earlier run left unfinished. Can't fail. */
void lq_batches_resume_all(lq_gw_t *gw);
/* The batch's output ("file-out-...") or error ("file-err-...") file as a
 * file object, or NULL
 * when the batch does not exist or has no such file yet; *broker_batch
 * (LQ_MAX_ID + 1 bytes) gets the broker's batch id. */
json_t *lq_batches_result_file(lq_gw_req_t *r, const char *file_id, char *broker_batch);

/* ---- content.c ---- */

/* Queues a streamed reply of the broker batch's result lines: the failed
 * ones (want_failed) or the others, in input order. */
int lq_content_reply(lq_gw_req_t *r, const char *broker_batch, int want_failed);

#endif
