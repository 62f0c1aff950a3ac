/* msg: the llmq wire messages, their msgpack encoder and a strict decoder.
 *
 * A message on the wire is three ZeroMQ frames (after the ROUTER identity,
 * if any): "LLMQ1", one command byte, and a msgpack map whose keys are short
 * strings (see docs/protocol.md). This module turns a command byte plus a
 * body into an lq_msg_t and back; it knows no sockets.
 *
 * Ownership: a decoded lq_msg_t owns every string and array it points to
 * (NUL-terminated copies); lq_msg_clear() frees them all. For encoding,
 * the caller fills an lq_msg_t whose pointers it keeps owning.
 *
 * Strictness: the decoder rejects a body that is not exactly one msgpack
 * map, has a required key missing, a key of the wrong type, a value out of
 * range, a string over its limit, or trailing bytes. Unknown keys are
 * ignored (forward compatibility). It never crashes and never allocates
 * more than a small multiple of the body size. */
#ifndef LQ_MSG_H
#define LQ_MSG_H

#include <stddef.h>
#include <stdint.h>

#define LQ_PROTO_SIGNATURE "LLMQ1"

/* Limits (bytes). A body over LQ_MAX_BODY is rejected before decoding. */
#define LQ_MAX_BODY (16u * 1024u * 1024u)
#define LQ_MAX_ID 128        /* batch ids, worker ids, names, codes */
#define LQ_MAX_CUSTOM_ID 512
#define LQ_MAX_URL 2048
#define LQ_MAX_JOB_BODY (4u * 1024u * 1024u) /* one request body (JSON text) */
#define LQ_MAX_TEXT (8u * 1024u * 1024u)     /* result body / output line */
#define LQ_MAX_ARRAY 100000
#define LQ_MAX_BATCH 1024 /* jobs per JOB_LIST, results per RESULT_LIST */

typedef enum {
    /* client -> broker */
    LQ_C_OPEN = 0x01,    /* open (or resume by name) a batch */
    LQ_C_CHUNK = 0x02,   /* a chunk of jobs */
    LQ_C_CLOSE = 0x03,   /* all jobs sent: total */
    LQ_C_STATUS = 0x04,  /* batch status */
    LQ_C_RESULTS = 0x05, /* a page of results */
    LQ_C_CANCEL = 0x06,
    LQ_C_LIST = 0x07,
    LQ_C_WORKERS = 0x08,
    LQ_C_DELETE = 0x09,  /* remove a finished or cancelled batch */
    LQ_C_CACHE = 0x0A,   /* response cache: stats or clear */
    /* broker -> client */
    LQ_C_OPENED = 0x81,
    LQ_C_CHUNK_ACK = 0x82,
    LQ_C_CLOSED = 0x83,
    LQ_C_BATCH = 0x84,        /* reply to STATUS and CANCEL */
    LQ_C_RESULTS_PAGE = 0x85,
    LQ_C_LIST_REPLY = 0x87,
    LQ_C_WORKERS_REPLY = 0x88,
    LQ_C_DELETED = 0x89,      /* reply to DELETE */
    LQ_C_CACHE_REPLY = 0x8A,  /* reply to CACHE */
    LQ_C_ERROR = 0x8F,
    /* worker <-> broker */
    LQ_W_READY = 0x20,      /* worker -> broker: hello, capacity */
    LQ_W_CREDIT = 0x21,     /* worker -> broker: n more jobs */
    LQ_W_JOB = 0x22,        /* broker -> worker */
    LQ_W_RESULT = 0x23,     /* worker -> broker */
    LQ_W_RESULT_ACK = 0x24, /* broker -> worker */
    LQ_W_HEARTBEAT = 0x25,  /* both ways */
    LQ_W_DISCONNECT = 0x26, /* both ways; from broker: "register again" */
    LQ_W_JOB_LIST = 0x27,   /* broker -> worker: several JOBs (the worker's READY had batch) */
    LQ_W_RESULT_LIST = 0x28, /* worker -> broker: several RESULTs (the broker sent JOB_LIST) */
} lq_cmd_t;

/* Result kinds reported by a worker. */
typedef enum {
    LQ_OUTCOME_OK = 0,        /* 2xx */
    LQ_OUTCOME_RETRYABLE = 1, /* 408, 409, 429, 5xx, timeout, connection error */
    LQ_OUTCOME_FATAL = 2,     /* other 4xx, oversized body, bad request */
} lq_outcome_t;

typedef struct {
    uint64_t req; /* request id chosen by the client, echoed in the reply */
    const char *name;       /* optional (NULL): idempotent submission name */
    const char *upstream;   /* optional (NULL): "default" */
    int64_t max_attempts;   /* 1..100 */
    int64_t timeout_ms;     /* per attempt, 1..86400000 */
    int64_t priority;       /* -100..100, higher first */
    const char *fingerprint; /* optional (NULL): identifies the input of a named batch */
    int cache;               /* optional (0): answer repeated requests from the cache */
} lq_c_open_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int created;        /* 1 new, 0 resumed by name */
    int64_t next_index; /* jobs already stored (resume from here) */
    const char *state;
} lq_c_opened_t;

typedef struct {
    const char *custom_id;
    const char *url;
    const char *body; /* JSON text */
    size_t body_len;
    int64_t est_tokens; /* client's estimate, >= 0 */
} lq_job_spec_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int64_t first; /* index of jobs[0] in the batch */
    lq_job_spec_t *jobs;
    size_t njobs; /* 1..LQ_MAX_ARRAY */
    int cache;    /* optional (0): the batch was opened with cache */
} lq_c_chunk_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int64_t next_index; /* jobs stored so far */
} lq_c_chunk_ack_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int64_t total;
} lq_c_close_t;

/* STATUS, CANCEL, and CLOSED replies carry a batch. */
typedef struct {
    uint64_t req;
    const char *batch;
} lq_c_batch_req_t;

typedef struct {
    const char *id;
    const char *name;     /* "" when none */
    const char *state;    /* submitting, in_progress, completed, cancelling, cancelled */
    const char *upstream;
    int64_t total, completed, failed, retried, duplicates, pending, inflight;
    int64_t prompt_tokens, completion_tokens;
    int64_t created_at, finished_at; /* unix seconds, 0 = not yet */
    int64_t priority, max_attempts, timeout_ms;
    int64_t expires_at; /* unix seconds the broker removes it at, 0 = not scheduled */
    int cache;          /* opened with --cache */
    int64_t cached;     /* jobs answered from the cache */
    int64_t cached_prompt_tokens, cached_completion_tokens; /* usage they saved */
} lq_batch_info_t;

typedef struct {
    uint64_t req;
    lq_batch_info_t info;
} lq_c_batch_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int64_t from; /* first index wanted */
    int64_t max;  /* 1..10000 */
} lq_c_results_t;

typedef struct {
    int64_t index;
    int failed;
    const char *line; /* one output JSON line, no newline */
    size_t line_len;
} lq_result_item_t;

typedef struct {
    uint64_t req;
    const char *batch;
    int64_t next; /* index to ask for next */
    int done;     /* no more results will come (batch finished and all sent) */
    lq_result_item_t *items;
    size_t nitems;
} lq_c_results_page_t;

typedef struct {
    uint64_t req;
} lq_c_simple_req_t; /* LIST, WORKERS */

typedef struct {
    uint64_t req;
    lq_batch_info_t *batches;
    size_t nbatches;
} lq_c_list_reply_t;

typedef struct {
    const char *id;
    int64_t concurrency, inflight, credit, completed, last_seen_ms;
} lq_worker_info_t;

/* Rate-limit state of one upstream, as the broker paces it. */
typedef struct {
    const char *name;
    int64_t limit_rpm;   /* requests/min enforced now, 0 = unlimited */
    int64_t learned_rpm; /* from the provider's headers or its 429s, 0 = none */
    int64_t ok_rpm;      /* successes over the last second, per minute */
    int64_t inflight, window;
    int64_t n429, nok, nerr;
    int64_t paused_ms; /* Retry-After pause left */
    int64_t pace_rpm;  /* requests/min in force; the observed rate if no limit is known */
    const char *pace_source; /* "configured", "headers", "learned" or "observed"; may be NULL */
    int64_t pace_tpm;  /* tokens/min in force, 0 = none */
} lq_upstream_info_t;

/* How full Redis is and what the broker does about it. */
typedef struct {
    int64_t used_bytes, max_bytes; /* max 0: no maxmemory */
    int64_t high_water_pct;        /* submissions refused above this share of max */
    int accepting;                 /* 1: new submissions are accepted */
    int results_blocked;           /* 1: Redis refuses results; dispatch is held */
    int64_t results_held;          /* results kept in memory until Redis takes them */
} lq_redis_state_t;

typedef struct {
    uint64_t req;
    lq_worker_info_t *workers;
    size_t nworkers;
    lq_upstream_info_t *upstreams; /* optional */
    size_t nupstreams;
    lq_redis_state_t redis; /* optional (zero) */
} lq_c_workers_reply_t;

typedef struct {
    uint64_t req;
    const char *op;       /* "stats" or "clear" */
    const char *upstream; /* optional (NULL): clear only this upstream's entries */
} lq_c_cache_t;

typedef struct {
    uint64_t req;
    int64_t entries;      /* responses stored now (clear: before clearing) */
    int64_t bytes;        /* their size in Redis (values), bytes */
    int64_t hits, misses, stores; /* since the cache was first used */
    int64_t tokens_saved; /* prompt + completion tokens of the hits */
    int64_t cleared;      /* clear: entries removed */
} lq_c_cache_reply_t;

typedef struct {
    uint64_t req;
    const char *code;    /* e.g. "not_found", "bad_request", "unavailable" */
    const char *message;
} lq_c_error_t;

typedef struct {
    const char *worker; /* stable id */
    int64_t concurrency;
    int64_t credit; /* initial credit (free slots) */
    const char **upstreams;
    size_t nupstreams;
    int64_t batch; /* optional (0): most jobs per JOB_LIST it takes; 0: JOB only */
} lq_w_ready_t;

typedef struct {
    int64_t credit; /* 1..1000000 */
} lq_w_credit_t;

typedef struct {
    const char *batch;
    int64_t index;
    int64_t attempt; /* 1-based */
    const char *upstream;
    const char *url;
    const char *body;
    size_t body_len;
    int64_t timeout_ms;
} lq_w_job_t;

typedef struct {
    const char *batch;
    int64_t index;
    int64_t attempt;
    int64_t outcome;     /* lq_outcome_t */
    int64_t status;      /* HTTP status, 0 if none */
    const char *body;    /* response body text, may be NULL */
    size_t body_len;
    const char *request_id; /* may be NULL */
    const char *error_code; /* may be NULL on OK */
    const char *error_message;
    int64_t retry_after_ms;           /* -1: none */
    int64_t prompt_tokens, completion_tokens; /* -1: unknown */
    int64_t rl_remaining_requests, rl_remaining_tokens; /* -1: unknown */
    int64_t rl_reset_requests_ms, rl_reset_tokens_ms;   /* -1: unknown */
    int64_t rl_limit_requests, rl_limit_tokens;         /* -1: unknown */
    int64_t latency_ms;
} lq_w_result_t;

/* JOB_LIST: what one loop iteration of dispatch has for one worker. */
typedef struct {
    lq_w_job_t *jobs;
    size_t njobs; /* 1..LQ_MAX_BATCH */
} lq_w_job_list_t;

/* RESULT_LIST: the results a worker completed in one loop iteration. */
typedef struct {
    lq_w_result_t *results;
    size_t nresults; /* 1..LQ_MAX_BATCH */
} lq_w_result_list_t;

typedef struct {
    const char *batch;
    int64_t index;
} lq_job_ref_t;

typedef struct {
    lq_job_ref_t *jobs;
    size_t njobs;
} lq_w_result_ack_t;

typedef struct {
    uint8_t cmd; /* lq_cmd_t */
    union {
        lq_c_open_t open;
        lq_c_opened_t opened;
        lq_c_chunk_t chunk;
        lq_c_chunk_ack_t chunk_ack;
        lq_c_close_t close;
        lq_c_batch_req_t batch_req; /* STATUS, CANCEL, CLOSED */
        lq_c_batch_t batch;         /* BATCH */
        lq_c_results_t results;
        lq_c_results_page_t results_page;
        lq_c_simple_req_t simple; /* LIST, WORKERS, HEARTBEAT, DISCONNECT */
        lq_c_list_reply_t list_reply;
        lq_c_workers_reply_t workers_reply;
        lq_c_cache_t cache;
        lq_c_cache_reply_t cache_reply;
        lq_c_error_t error;
        lq_w_ready_t ready;
        lq_w_credit_t credit;
        lq_w_job_t job;
        lq_w_result_t result;
        lq_w_result_ack_t result_ack;
        lq_w_job_list_t job_list;
        lq_w_result_list_t result_list;
    } u;
    void *arena_; /* decoder-owned storage */
} lq_msg_t;

/* A growable byte buffer the encoder writes to. */
typedef struct {
    char *data;
    size_t len, cap;
} lq_buf_t;

void lq_buf_clear(lq_buf_t *b);

/* Encodes m's body (the msgpack map) into out (cleared first).
 * Optional strings that are NULL are left out; a required string that is
 * NULL is sent as "". A body_len/line_len of 0 means strlen() of the text.
 * Values are not range-checked here (the decoder does that).
 * Returns 0, or -1 for an unknown command. Can't fail otherwise. */
int lq_msg_encode(const lq_msg_t *m, lq_buf_t *out);

/* Decodes one body for command cmd into *m (zeroed first).
 * Returns 0, or -1 with a short reason in err (m then holds nothing). */
int lq_msg_decode(uint8_t cmd, const void *body, size_t len, lq_msg_t *m, char *err, size_t errlen);

/* A JOB_LIST or RESULT_LIST body built one item at a time, so that the sender
 * need not keep the items: lq_batch_add() appends the encoding of one item
 * (an lq_w_job_t for JOB_LIST, an lq_w_result_t for RESULT_LIST; borrowed for the
 * call), lq_batch_body() completes the body in place. The bytes equal
 * lq_msg_encode() of the same items. A zeroed lq_batch_t is ready for
 * lq_batch_begin(). */
typedef struct {
    uint8_t cmd; /* LQ_W_JOB_LIST or LQ_W_RESULT_LIST */
    size_t n;    /* items added */
    lq_buf_t buf;
} lq_batch_t;

/* Empties b (keeping its memory) for a body of cmd (LQ_W_JOB_LIST
 * or LQ_W_RESULT_LIST). Can't fail. */
void lq_batch_begin(lq_batch_t *b, uint8_t cmd);
/* Appends one item. The caller keeps n under LQ_MAX_BATCH and the size
 * (lq_batch_size()) under LQ_MAX_BODY. Can't fail. */
void lq_batch_add(lq_batch_t *b, const void *item);
/* Bytes the body has so far. */
size_t lq_batch_size(const lq_batch_t *b);
/* Completes the body (n >= 1) and returns it (points into b, valid until
 * the next call on b) with its length. Can't fail. */
const void *lq_batch_body(lq_batch_t *b, size_t *len);
/* Frees b's memory. Safe on a zeroed b. */
void lq_batch_clear(lq_batch_t *b);

/* Frees what a decode allocated and zeroes m. Safe on a zeroed or encoded-
 * only message (frees nothing the caller owns). */
void lq_msg_clear(lq_msg_t *m);

/* Name of a command for logs ("CHUNK"), or "UNKNOWN". */
const char *lq_cmd_name(uint8_t cmd);

/* The request id of a client request or reply (its "req" key), or NULL
 * when m's command carries none. Points into m. Can't fail. */
uint64_t *lq_msg_req_field(lq_msg_t *m);
/* The request id m carries, 0 when it has none. Can't fail. */
uint64_t lq_msg_req(const lq_msg_t *m);

#endif
