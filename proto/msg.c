/* msg: the msgpack codec for the llmq wire messages (see msg.h and
 * docs/protocol.md).
 *
 * One table describes every command: for each, a schema listing the map
 * keys, their types, limits, whether they are required, and where the value
 * lives in the C struct. The encoder and the decoder both walk that table,
 * so they cannot disagree about the format.
 *
 * Decoding reads the bytes once, in place (s_next(), no object tree, no
 * allocation per object), and checks them against the schema while it
 * copies the values into the lq_msg_t. The structural rules hold for
 * every byte, unknown keys' values included (s_skip()): the body must be
 * exactly one msgpack map, complete, with no trailing bytes, nested at
 * most S_MAX_DEPTH deep, of at most S_MAX_OBJECTS objects, and no
 * container may declare more elements than there are bytes left, so an
 * array's declared count, which sizes its allocation, is bounded by the
 * body. Strings and arrays go into an arena of a few blocks (usually one,
 * sized from the body) hung off m->arena_, freed as a whole by
 * lq_msg_clear(). Keys are looked up by length and bytes, trying the field
 * after the previous match first (llmq writes keys in schema order).
 *
 * Ownership: the encoder never keeps a pointer into the message; the
 * decoder's output owns everything it points to via the arena. */
#include "msg.h"

#include "../common/util.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_DEPTH 16 /* nesting of maps/arrays in a body */
/* msgpack objects (keys, values, elements) in a body; a LIST_REPLY of
 * LQ_MAX_ARRAY batches needs ~3.7 million. */
#define S_MAX_OBJECTS 4000000u
#define S_MAX_FIELDS 64 /* fields per schema (a bit mask tracks duplicates) */
#define S_NOLEN 0xffffu /* s_field.aux when a string has no length member */
#define S_I64_MAX INT64_MAX
#define S_ATTEMPT_MAX 1000000
#define S_TIMEOUT_MAX 86400000

/* ---- schema ------------------------------------------------------------ */

enum {
    T_U64,  /* uint64_t; msgpack non-negative int */
    T_I64,  /* int64_t in [min,max]; msgpack int of either sign */
    T_BOOL, /* int (0/1); msgpack bool */
    T_STR,  /* const char *, smax bytes; str or bin; NUL-free without a length */
    T_STRS, /* const char ** + size_t count in [min,max]; each as T_STR */
    T_ARR,  /* struct array (sub) + size_t count in [min,max] */
    T_OBJ,  /* struct embedded at off (sub) */
};

enum {
    F_REQ = 1,   /* must be present */
    F_EMPTY = 2, /* optional string that decodes as "" (not NULL) when absent */
    F_OMIT0 = 4, /* T_U64 left out of the encoding when 0 */
    F_OMITD = 8, /* T_I64 left out of the encoding when it equals its default */
};

typedef struct s_schema s_schema;

typedef struct {
    const char *key; /* under 32 bytes: written as a fixstr */
    uint8_t klen; /* strlen(key) */
    uint8_t type, flags;
    uint16_t off;     /* of the value in the struct */
    uint16_t aux;     /* T_STR: off of the size_t length or S_NOLEN; T_STRS/T_ARR: of the count */
    uint32_t smax;    /* T_STR/T_STRS: max bytes per string */
    int64_t min, max; /* T_I64: range; T_STRS/T_ARR: element count range */
    int64_t dflt;     /* T_I64: value when absent */
    const s_schema *sub;
} s_field;

struct s_schema {
    const s_field *f;
    size_t n;
    size_t size; /* of the struct, for arrays of it */
};

/* clang-format off */
#define U64(S, k, m, fl) {k, sizeof(k) - 1, T_U64, fl, offsetof(S, m), 0, 0, 0, 0, 0, NULL}
#define I64(S, k, m, fl, lo, hi, d) {k, sizeof(k) - 1, T_I64, fl, offsetof(S, m), 0, 0, lo, hi, d, NULL}
#define BOOL(S, k, m, fl) {k, sizeof(k) - 1, T_BOOL, fl, offsetof(S, m), 0, 0, 0, 0, 0, NULL}
#define STR(S, k, m, fl, lim) {k, sizeof(k) - 1, T_STR, fl, offsetof(S, m), S_NOLEN, lim, 0, 0, 0, NULL}
#define STRL(S, k, m, lm, fl, lim) {k, sizeof(k) - 1, T_STR, fl, offsetof(S, m), offsetof(S, lm), lim, 0, 0, 0, NULL}
#define STRS(S, k, m, cm, fl, lo, hi, lim)                                                        \
    {k, sizeof(k) - 1, T_STRS, fl, offsetof(S, m), offsetof(S, cm), lim, lo, hi, 0, NULL}
#define ARR(S, k, m, cm, fl, lo, hi, sc) {k, sizeof(k) - 1, T_ARR, fl, offsetof(S, m), offsetof(S, cm), 0, lo, hi, 0, &sc}
#define OBJ(S, k, m, fl, sc) {k, sizeof(k) - 1, T_OBJ, fl, offsetof(S, m), 0, 0, 0, 0, 0, &sc}
#define SCHEMA(name, S, arr)                                                   \
    _Static_assert(sizeof arr / sizeof arr[0] <= S_MAX_FIELDS, #arr);          \
    static const s_schema name = {arr, sizeof arr / sizeof arr[0], sizeof(S)}
/* clang-format on */

/* A non-negative count or index; one where -1 means unknown (the default). */
#define NNEG(S, k, m, fl) I64(S, k, m, fl, 0, S_I64_MAX, 0)
#define UNK(S, k, m) I64(S, k, m, F_OMITD, -1, S_I64_MAX, -1)

static const s_field s_open_f[] = {
    U64(lq_c_open_t, "req", req, F_REQ),
    STR(lq_c_open_t, "name", name, 0, LQ_MAX_ID),
    STR(lq_c_open_t, "upstream", upstream, 0, LQ_MAX_ID),
    I64(lq_c_open_t, "max_attempts", max_attempts, F_REQ, 1, 100, 0),
    I64(lq_c_open_t, "timeout_ms", timeout_ms, F_REQ, 1, S_TIMEOUT_MAX, 0),
    I64(lq_c_open_t, "priority", priority, F_REQ, -100, 100, 0),
    STR(lq_c_open_t, "fingerprint", fingerprint, 0, LQ_MAX_ID),
    BOOL(lq_c_open_t, "cache", cache, 0),
};
SCHEMA(s_open, lq_c_open_t, s_open_f);

static const s_field s_opened_f[] = {
    U64(lq_c_opened_t, "req", req, F_REQ),
    STR(lq_c_opened_t, "batch", batch, F_REQ, LQ_MAX_ID),
    BOOL(lq_c_opened_t, "created", created, F_REQ),
    NNEG(lq_c_opened_t, "next", next_index, F_REQ),
    STR(lq_c_opened_t, "state", state, F_REQ, LQ_MAX_ID),
};
SCHEMA(s_opened, lq_c_opened_t, s_opened_f);

static const s_field s_job_spec_f[] = {
    STR(lq_job_spec_t, "cid", custom_id, F_REQ, LQ_MAX_CUSTOM_ID),
    STR(lq_job_spec_t, "url", url, F_REQ, LQ_MAX_URL),
    STRL(lq_job_spec_t, "body", body, body_len, F_REQ, LQ_MAX_JOB_BODY),
    NNEG(lq_job_spec_t, "est", est_tokens, 0),
};
SCHEMA(s_job_spec, lq_job_spec_t, s_job_spec_f);

static const s_field s_chunk_f[] = {
    U64(lq_c_chunk_t, "req", req, F_REQ),
    STR(lq_c_chunk_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_c_chunk_t, "first", first, F_REQ),
    ARR(lq_c_chunk_t, "jobs", jobs, njobs, F_REQ, 1, LQ_MAX_ARRAY, s_job_spec),
    BOOL(lq_c_chunk_t, "cache", cache, 0),
};
SCHEMA(s_chunk, lq_c_chunk_t, s_chunk_f);

static const s_field s_chunk_ack_f[] = {
    U64(lq_c_chunk_ack_t, "req", req, F_REQ),
    STR(lq_c_chunk_ack_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_c_chunk_ack_t, "next", next_index, F_REQ),
};
SCHEMA(s_chunk_ack, lq_c_chunk_ack_t, s_chunk_ack_f);

static const s_field s_close_f[] = {
    U64(lq_c_close_t, "req", req, F_REQ),
    STR(lq_c_close_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_c_close_t, "total", total, F_REQ),
};
SCHEMA(s_close, lq_c_close_t, s_close_f);

static const s_field s_batch_req_f[] = {
    U64(lq_c_batch_req_t, "req", req, F_REQ),
    STR(lq_c_batch_req_t, "batch", batch, F_REQ, LQ_MAX_ID),
};
SCHEMA(s_batch_req, lq_c_batch_req_t, s_batch_req_f);

#define BI lq_batch_info_t
static const s_field s_info_f[] = {
    STR(BI, "id", id, F_REQ, LQ_MAX_ID),
    STR(BI, "name", name, F_EMPTY, LQ_MAX_ID),
    STR(BI, "state", state, F_REQ, LQ_MAX_ID),
    STR(BI, "upstream", upstream, F_EMPTY, LQ_MAX_ID),
    NNEG(BI, "total", total, 0),
    NNEG(BI, "completed", completed, 0),
    NNEG(BI, "failed", failed, 0),
    NNEG(BI, "retried", retried, 0),
    NNEG(BI, "duplicates", duplicates, 0),
    NNEG(BI, "pending", pending, 0),
    NNEG(BI, "inflight", inflight, 0),
    NNEG(BI, "prompt_tokens", prompt_tokens, 0),
    NNEG(BI, "completion_tokens", completion_tokens, 0),
    NNEG(BI, "created_at", created_at, 0),
    NNEG(BI, "finished_at", finished_at, 0),
    I64(BI, "priority", priority, 0, -100, 100, 0),
    NNEG(BI, "max_attempts", max_attempts, 0),
    NNEG(BI, "timeout_ms", timeout_ms, 0),
    NNEG(BI, "expires_at", expires_at, 0),
    BOOL(BI, "cache", cache, 0),
    NNEG(BI, "cached", cached, 0),
    NNEG(BI, "cached_prompt_tokens", cached_prompt_tokens, 0),
    NNEG(BI, "cached_completion_tokens", cached_completion_tokens, 0),
};
SCHEMA(s_info, BI, s_info_f);
#undef BI

static const s_field s_batch_f[] = {
    U64(lq_c_batch_t, "req", req, F_REQ),
    OBJ(lq_c_batch_t, "info", info, F_REQ, s_info),
};
SCHEMA(s_batch, lq_c_batch_t, s_batch_f);

static const s_field s_results_f[] = {
    U64(lq_c_results_t, "req", req, F_REQ),
    STR(lq_c_results_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_c_results_t, "from", from, F_REQ),
    I64(lq_c_results_t, "max", max, F_REQ, 1, 10000, 0),
};
SCHEMA(s_results, lq_c_results_t, s_results_f);

static const s_field s_item_f[] = {
    NNEG(lq_result_item_t, "index", index, F_REQ),
    BOOL(lq_result_item_t, "failed", failed, F_REQ),
    STRL(lq_result_item_t, "line", line, line_len, F_REQ, LQ_MAX_TEXT),
};
SCHEMA(s_item, lq_result_item_t, s_item_f);

static const s_field s_results_page_f[] = {
    U64(lq_c_results_page_t, "req", req, F_REQ),
    STR(lq_c_results_page_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_c_results_page_t, "next", next, F_REQ),
    BOOL(lq_c_results_page_t, "done", done, F_REQ),
    ARR(lq_c_results_page_t, "items", items, nitems, F_REQ, 0, LQ_MAX_ARRAY, s_item),
};
SCHEMA(s_results_page, lq_c_results_page_t, s_results_page_f);

static const s_field s_simple_f[] = {
    U64(lq_c_simple_req_t, "req", req, F_OMIT0),
};
SCHEMA(s_simple, lq_c_simple_req_t, s_simple_f);

static const s_field s_list_reply_f[] = {
    U64(lq_c_list_reply_t, "req", req, F_REQ),
    ARR(lq_c_list_reply_t, "batches", batches, nbatches, F_REQ, 0, LQ_MAX_ARRAY, s_info),
};
SCHEMA(s_list_reply, lq_c_list_reply_t, s_list_reply_f);

static const s_field s_worker_f[] = {
    STR(lq_worker_info_t, "id", id, F_REQ, LQ_MAX_ID),
    NNEG(lq_worker_info_t, "concurrency", concurrency, 0),
    NNEG(lq_worker_info_t, "inflight", inflight, 0),
    NNEG(lq_worker_info_t, "credit", credit, 0),
    NNEG(lq_worker_info_t, "completed", completed, 0),
    NNEG(lq_worker_info_t, "last_seen_ms", last_seen_ms, 0),
};
SCHEMA(s_worker, lq_worker_info_t, s_worker_f);

#define UI lq_upstream_info_t
static const s_field s_upstream_f[] = {
    STR(UI, "name", name, F_REQ, LQ_MAX_ID),
    NNEG(UI, "limit_rpm", limit_rpm, 0),
    NNEG(UI, "learned_rpm", learned_rpm, 0),
    NNEG(UI, "ok_rpm", ok_rpm, 0),
    NNEG(UI, "inflight", inflight, 0),
    NNEG(UI, "window", window, 0),
    NNEG(UI, "n429", n429, 0),
    NNEG(UI, "nok", nok, 0),
    NNEG(UI, "nerr", nerr, 0),
    NNEG(UI, "paused_ms", paused_ms, 0),
    NNEG(UI, "pace_rpm", pace_rpm, 0),
    STR(UI, "pace_source", pace_source, 0, LQ_MAX_ID),
    NNEG(UI, "pace_tpm", pace_tpm, 0),
};
SCHEMA(s_upstream, UI, s_upstream_f);
#undef UI

#define RS lq_redis_state_t
static const s_field s_redis_state_f[] = {
    NNEG(RS, "used", used_bytes, 0),
    NNEG(RS, "max", max_bytes, 0),
    I64(RS, "high_water_pct", high_water_pct, 0, 0, 100, 0),
    BOOL(RS, "accepting", accepting, 0),
    BOOL(RS, "results_blocked", results_blocked, 0),
    NNEG(RS, "results_held", results_held, 0),
};
SCHEMA(s_redis_state, RS, s_redis_state_f);
#undef RS

static const s_field s_workers_reply_f[] = {
    U64(lq_c_workers_reply_t, "req", req, F_REQ),
    ARR(lq_c_workers_reply_t, "workers", workers, nworkers, F_REQ, 0, LQ_MAX_ARRAY, s_worker),
    ARR(lq_c_workers_reply_t, "upstreams", upstreams, nupstreams, 0, 0, LQ_MAX_ARRAY,
        s_upstream),
    OBJ(lq_c_workers_reply_t, "redis", redis, 0, s_redis_state),
};
SCHEMA(s_workers_reply, lq_c_workers_reply_t, s_workers_reply_f);

static const s_field s_cache_f[] = {
    U64(lq_c_cache_t, "req", req, F_REQ),
    STR(lq_c_cache_t, "op", op, F_REQ, LQ_MAX_ID),
    STR(lq_c_cache_t, "upstream", upstream, 0, LQ_MAX_ID),
};
SCHEMA(s_cache, lq_c_cache_t, s_cache_f);

#define CR lq_c_cache_reply_t
static const s_field s_cache_reply_f[] = {
    U64(CR, "req", req, F_REQ),   NNEG(CR, "entries", entries, 0),
    NNEG(CR, "bytes", bytes, 0),  NNEG(CR, "hits", hits, 0),
    NNEG(CR, "misses", misses, 0), NNEG(CR, "stores", stores, 0),
    NNEG(CR, "tokens_saved", tokens_saved, 0), NNEG(CR, "cleared", cleared, 0),
};
SCHEMA(s_cache_reply, CR, s_cache_reply_f);
#undef CR

static const s_field s_error_f[] = {
    U64(lq_c_error_t, "req", req, F_REQ),
    STR(lq_c_error_t, "code", code, F_REQ, LQ_MAX_ID),
    STR(lq_c_error_t, "message", message, F_REQ, LQ_MAX_TEXT),
};
SCHEMA(s_error, lq_c_error_t, s_error_f);

static const s_field s_ready_f[] = {
    STR(lq_w_ready_t, "worker", worker, F_REQ, LQ_MAX_ID),
    I64(lq_w_ready_t, "concurrency", concurrency, F_REQ, 1, 1000000, 0),
    I64(lq_w_ready_t, "credit", credit, F_REQ, 0, 1000000, 0),
    STRS(lq_w_ready_t, "upstreams", upstreams, nupstreams, F_REQ, 0, LQ_MAX_ARRAY, LQ_MAX_ID),
    I64(lq_w_ready_t, "batch", batch, F_OMITD, 0, LQ_MAX_BATCH, 0),
};
SCHEMA(s_ready, lq_w_ready_t, s_ready_f);

static const s_field s_credit_f[] = {
    I64(lq_w_credit_t, "credit", credit, F_REQ, 1, 1000000, 0),
};
SCHEMA(s_credit, lq_w_credit_t, s_credit_f);

static const s_field s_job_f[] = {
    STR(lq_w_job_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_w_job_t, "index", index, F_REQ),
    I64(lq_w_job_t, "attempt", attempt, F_REQ, 1, S_ATTEMPT_MAX, 0),
    STR(lq_w_job_t, "upstream", upstream, F_REQ, LQ_MAX_ID),
    STR(lq_w_job_t, "url", url, F_REQ, LQ_MAX_URL),
    STRL(lq_w_job_t, "body", body, body_len, F_REQ, LQ_MAX_JOB_BODY),
    I64(lq_w_job_t, "timeout_ms", timeout_ms, F_REQ, 1, S_TIMEOUT_MAX, 0),
};
SCHEMA(s_job, lq_w_job_t, s_job_f);

#define WR lq_w_result_t
static const s_field s_result_f[] = {
    STR(WR, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(WR, "index", index, F_REQ),
    I64(WR, "attempt", attempt, F_REQ, 1, S_ATTEMPT_MAX, 0),
    I64(WR, "outcome", outcome, F_REQ, LQ_OUTCOME_OK, LQ_OUTCOME_FATAL, 0),
    I64(WR, "status", status, F_REQ, 0, 999, 0),
    STRL(WR, "body", body, body_len, 0, LQ_MAX_TEXT),
    STR(WR, "request_id", request_id, 0, LQ_MAX_ID),
    STR(WR, "error_code", error_code, 0, LQ_MAX_ID),
    STR(WR, "error_message", error_message, 0, LQ_MAX_TEXT),
    UNK(WR, "retry_after_ms", retry_after_ms),
    UNK(WR, "prompt_tokens", prompt_tokens),
    UNK(WR, "completion_tokens", completion_tokens),
    UNK(WR, "rl_requests", rl_remaining_requests),
    UNK(WR, "rl_tokens", rl_remaining_tokens),
    UNK(WR, "rl_reset_requests_ms", rl_reset_requests_ms),
    UNK(WR, "rl_reset_tokens_ms", rl_reset_tokens_ms),
    UNK(WR, "rl_limit_requests", rl_limit_requests),
    UNK(WR, "rl_limit_tokens", rl_limit_tokens),
    NNEG(WR, "latency_ms", latency_ms, 0),
};
SCHEMA(s_result, WR, s_result_f);
#undef WR

static const s_field s_job_ref_f[] = {
    STR(lq_job_ref_t, "batch", batch, F_REQ, LQ_MAX_ID),
    NNEG(lq_job_ref_t, "index", index, F_REQ),
};
SCHEMA(s_job_ref, lq_job_ref_t, s_job_ref_f);

static const s_field s_result_ack_f[] = {
    ARR(lq_w_result_ack_t, "jobs", jobs, njobs, F_REQ, 1, LQ_MAX_ARRAY, s_job_ref),
};
SCHEMA(s_result_ack, lq_w_result_ack_t, s_result_ack_f);

static const s_field s_job_list_f[] = {
    ARR(lq_w_job_list_t, "jobs", jobs, njobs, F_REQ, 1, LQ_MAX_BATCH, s_job),
};
SCHEMA(s_job_list, lq_w_job_list_t, s_job_list_f);

static const s_field s_result_list_f[] = {
    ARR(lq_w_result_list_t, "results", results, nresults, F_REQ, 1, LQ_MAX_BATCH, s_result),
};
SCHEMA(s_result_list, lq_w_result_list_t, s_result_list_f);

typedef struct {
    uint8_t cmd;
    const char *name;
    const s_schema *sc;
} s_cmd_t;

static const s_cmd_t s_cmds[] = {
    {LQ_C_OPEN, "OPEN", &s_open},
    {LQ_C_CHUNK, "CHUNK", &s_chunk},
    {LQ_C_CLOSE, "CLOSE", &s_close},
    {LQ_C_STATUS, "STATUS", &s_batch_req},
    {LQ_C_RESULTS, "RESULTS", &s_results},
    {LQ_C_CANCEL, "CANCEL", &s_batch_req},
    {LQ_C_LIST, "LIST", &s_simple},
    {LQ_C_WORKERS, "WORKERS", &s_simple},
    {LQ_C_DELETE, "DELETE", &s_batch_req},
    {LQ_C_CACHE, "CACHE", &s_cache},
    {LQ_C_OPENED, "OPENED", &s_opened},
    {LQ_C_CHUNK_ACK, "CHUNK_ACK", &s_chunk_ack},
    {LQ_C_CLOSED, "CLOSED", &s_batch_req},
    {LQ_C_BATCH, "BATCH", &s_batch},
    {LQ_C_RESULTS_PAGE, "RESULTS_PAGE", &s_results_page},
    {LQ_C_LIST_REPLY, "LIST_REPLY", &s_list_reply},
    {LQ_C_WORKERS_REPLY, "WORKERS_REPLY", &s_workers_reply},
    {LQ_C_DELETED, "DELETED", &s_batch_req},
    {LQ_C_CACHE_REPLY, "CACHE_REPLY", &s_cache_reply},
    {LQ_C_ERROR, "ERROR", &s_error},
    {LQ_W_READY, "READY", &s_ready},
    {LQ_W_CREDIT, "CREDIT", &s_credit},
    {LQ_W_JOB, "JOB", &s_job},
    {LQ_W_RESULT, "RESULT", &s_result},
    {LQ_W_RESULT_ACK, "RESULT_ACK", &s_result_ack},
    {LQ_W_HEARTBEAT, "HEARTBEAT", &s_simple},
    {LQ_W_DISCONNECT, "DISCONNECT", &s_simple},
    {LQ_W_JOB_LIST, "JOB_LIST", &s_job_list},
    {LQ_W_RESULT_LIST, "RESULT_LIST", &s_result_list},
};

/* Returns the table entry for cmd, or NULL when it is not a command.
 * Can't fail. */
static const s_cmd_t *s_find_cmd(uint8_t cmd)
{
    for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++)
        if (s_cmds[i].cmd == cmd)
            return &s_cmds[i];
    return NULL;
}

const char *lq_cmd_name(uint8_t cmd)
{
    const s_cmd_t *c = s_find_cmd(cmd);
    return c ? c->name : "UNKNOWN";
}

uint64_t *lq_msg_req_field(lq_msg_t *m)
{
    const s_cmd_t *c = s_find_cmd(m->cmd);
    for (size_t i = 0; c && i < c->sc->n; i++)
        if (c->sc->f[i].type == T_U64 && strcmp(c->sc->f[i].key, "req") == 0)
            return (uint64_t *)((char *)&m->u + c->sc->f[i].off);
    return NULL;
}

uint64_t lq_msg_req(const lq_msg_t *m)
{
    const uint64_t *req = lq_msg_req_field((lq_msg_t *)m);
    return req ? *req : 0;
}

/* Typed access to a scalar struct member at a byte offset. */
#define AT(base, off, T) (*(T *)((char *)(base) + (off)))
#define CAT(base, off, T) (*(const T *)((const char *)(base) + (off)))

/* Reads / writes a pointer member of any pointer type at a byte offset
 * (through memcpy, so the member's declared pointer type does not matter). */
static const void *s_getp(const void *base, size_t off)
{
    const void *p;
    memcpy(&p, (const char *)base + off, sizeof p);
    return p;
}

static void s_setp(void *base, size_t off, const void *p)
{
    memcpy((char *)base + off, &p, sizeof p);
}

/* ---- encoder ----------------------------------------------------------- */

void lq_buf_clear(lq_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Makes room for n more bytes in b, growing it by doubling. Aborts on
 * out-of-memory (xrealloc); can't fail. */
static void s_room(lq_buf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

/* Appends len bytes. Can't fail. */
static void s_buf_write(lq_buf_t *b, const void *p, size_t len)
{
    s_room(b, len);
    memcpy(b->data + b->len, p, len);
    b->len += len;
}

/* Appends byte t then the low w bytes of v, big-endian (room for 9 bytes
 * must be made). */
static void s_put_be(lq_buf_t *b, uint8_t t, uint64_t v, int w)
{
    uint8_t *p = (uint8_t *)b->data + b->len;
    *p++ = t;
    for (int i = w - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    b->len += 1 + (size_t)w;
}

/* The writers below produce msgpack's smallest form of each value, the
 * bytes msgpack-c's packer writes (docs/protocol.md 5.1). */
static void s_w_uint(lq_buf_t *b, uint64_t v)
{
    s_room(b, 9);
    if (v < 128)
        b->data[b->len++] = (char)v;
    else if (v < 256)
        s_put_be(b, 0xcc, v, 1);
    else if (v < 65536)
        s_put_be(b, 0xcd, v, 2);
    else if (v < (UINT64_C(1) << 32))
        s_put_be(b, 0xce, v, 4);
    else
        s_put_be(b, 0xcf, v, 8);
}

static void s_w_int(lq_buf_t *b, int64_t v)
{
    if (v >= 0) {
        s_w_uint(b, (uint64_t)v);
        return;
    }
    s_room(b, 9);
    if (v >= -32)
        b->data[b->len++] = (char)(uint8_t)v;
    else if (v >= -128)
        s_put_be(b, 0xd0, (uint64_t)v, 1);
    else if (v >= -32768)
        s_put_be(b, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN)
        s_put_be(b, 0xd2, (uint64_t)v, 4);
    else
        s_put_be(b, 0xd3, (uint64_t)v, 8);
}

/* A container or string head: fix form (fix | n) under fixmax, else the
 * 8- (str only), 16- or 32-bit form. */
static void s_w_head(lq_buf_t *b, size_t n, uint8_t fix, size_t fixmax, uint8_t t8, uint8_t t16,
                     uint8_t t32)
{
    s_room(b, 5);
    if (n < fixmax)
        b->data[b->len++] = (char)(fix | n);
    else if (t8 && n < 256)
        s_put_be(b, t8, n, 1);
    else if (n < 65536)
        s_put_be(b, t16, n, 2);
    else
        s_put_be(b, t32, n, 4);
}

#define S_W_MAP(b, n) s_w_head(b, n, 0x80, 16, 0, 0xde, 0xdf)
#define S_W_ARRAY(b, n) s_w_head(b, n, 0x90, 16, 0, 0xdc, 0xdd)

static void s_w_str(lq_buf_t *b, const char *s, size_t len)
{
    s_w_head(b, len, 0xa0, 32, 0xd9, 0xda, 0xdb);
    s_buf_write(b, s, len);
}

/* Returns whether field f of the struct at base goes into the encoding:
 * optional strings are left out when NULL, F_OMIT0 ints when 0, F_OMITD
 * ints when they equal their default (the decoder restores it). */
static int s_enc_present(const s_field *f, const void *base)
{
    if (f->type == T_STR && !(f->flags & F_REQ))
        return s_getp(base, f->off) != NULL;
    if (f->type == T_U64 && (f->flags & F_OMIT0))
        return CAT(base, f->off, uint64_t) != 0;
    if (f->type == T_I64 && (f->flags & F_OMITD))
        return CAT(base, f->off, int64_t) != f->dflt;
    if (f->type == T_BOOL && !(f->flags & F_REQ)) /* optional flags: sent only when set */
        return CAT(base, f->off, int) != 0;
    return 1;
}

/* Packs a string; NULL packs as "". With a length member, a length of 0
 * means strlen(s), so a caller that forgot to set it still sends the text. */
static void s_enc_str(lq_buf_t *b, const char *s, size_t len, int has_len)
{
    if (!s)
        s = "";
    if (!has_len || len == 0)
        len = strlen(s);
    s_w_str(b, s, len);
}

static void s_enc_map(lq_buf_t *b, const s_schema *sc, const void *base);

/* Packs the value of field f (the key is already packed). Can't fail. */
static void s_enc_value(lq_buf_t *b, const s_field *f, const void *base)
{
    switch (f->type) {
    case T_U64:
        s_w_uint(b, CAT(base, f->off, uint64_t));
        break;
    case T_I64:
        s_w_int(b, CAT(base, f->off, int64_t));
        break;
    case T_BOOL:
        s_room(b, 1);
        b->data[b->len++] = (char)(CAT(base, f->off, int) ? 0xc3 : 0xc2);
        break;
    case T_STR: {
        int has_len = f->aux != S_NOLEN;
        s_enc_str(b, s_getp(base, f->off), has_len ? CAT(base, f->aux, size_t) : 0, has_len);
        break;
    }
    case T_STRS: {
        const char *const *v = s_getp(base, f->off);
        size_t n = v ? CAT(base, f->aux, size_t) : 0;
        S_W_ARRAY(b, n);
        for (size_t i = 0; i < n; i++)
            s_enc_str(b, v[i], 0, 0);
        break;
    }
    case T_ARR: {
        const char *v = s_getp(base, f->off);
        size_t n = v ? CAT(base, f->aux, size_t) : 0;
        S_W_ARRAY(b, n);
        for (size_t i = 0; i < n; i++)
            s_enc_map(b, f->sub, v + i * f->sub->size);
        break;
    }
    case T_OBJ:
        s_enc_map(b, f->sub, (const char *)base + f->off);
        break;
    }
}

/* Packs the struct at base as a map, keys in schema order. Can't fail. */
static void s_enc_map(lq_buf_t *b, const s_schema *sc, const void *base)
{
    uint64_t present = 0;
    size_t n = 0;
    for (size_t i = 0; i < sc->n; i++)
        if (s_enc_present(&sc->f[i], base)) {
            present |= UINT64_C(1) << i;
            n++;
        }
    S_W_MAP(b, n);
    for (size_t i = 0; i < sc->n; i++) {
        const s_field *f = &sc->f[i];
        if (!(present & (UINT64_C(1) << i)))
            continue;
        s_room(b, 1 + f->klen); /* keys are fixstr (< 32 bytes) */
        char *p = b->data + b->len;
        *p++ = (char)(0xa0 | f->klen);
        for (size_t k = 0; k < f->klen; k++)
            p[k] = f->key[k];
        b->len += 1 + f->klen;
        s_enc_value(b, f, base);
    }
}

int lq_msg_encode(const lq_msg_t *m, lq_buf_t *out)
{
    out->len = 0;
    const s_cmd_t *c = s_find_cmd(m->cmd);
    if (!c)
        return -1;
    s_enc_map(out, c->sc, &m->u);
    return 0;
}

/* ---- item-by-item bodies (JOB_LIST, RESULT_LIST) ------------------------ */

/* Room kept in front of the items for the map head, the key and the array
 * head: 1 + (1 + 7) + 5 bytes at most. */
#define S_BATCH_HEAD 16

/* The command's only field: an array of item maps. */
static const s_field *s_batch_field(uint8_t cmd)
{
    const s_cmd_t *c = s_find_cmd(cmd);
    return c && c->sc->n == 1 && c->sc->f[0].type == T_ARR ? &c->sc->f[0] : NULL;
}

void lq_batch_begin(lq_batch_t *b, uint8_t cmd)
{
    b->cmd = cmd;
    b->n = 0;
    b->buf.len = 0;
    static const char room[S_BATCH_HEAD];
    s_buf_write(&b->buf, room, sizeof room);
}

void lq_batch_add(lq_batch_t *b, const void *item)
{
    const s_field *f = s_batch_field(b->cmd);
    if (!f)
        return;
    s_enc_map(&b->buf, f->sub, item);
    b->n++;
}

size_t lq_batch_size(const lq_batch_t *b)
{
    return b->buf.len > S_BATCH_HEAD ? b->buf.len - S_BATCH_HEAD : 0;
}

const void *lq_batch_body(lq_batch_t *b, size_t *len)
{
    const s_field *f = s_batch_field(b->cmd);
    uint8_t head[S_BATCH_HEAD];
    size_t h = 0, klen = f ? f->klen : 0;
    head[h++] = 0x81; /* a map of one pair, the key a fixstr (< 32 bytes) */
    head[h++] = (uint8_t)(0xa0 | klen);
    memcpy(head + h, f ? f->key : "", klen);
    h += klen;
    size_t n = b->n; /* the smallest array head, as msgpack_pack_array */
    if (n < 16) {
        head[h++] = (uint8_t)(0x90 | n);
    } else if (n < 65536) {
        head[h++] = 0xdc;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0xdd;
        for (int i = 3; i >= 0; i--)
            head[h++] = (uint8_t)(n >> (8 * i));
    }
    char *at = b->buf.data + S_BATCH_HEAD - h;
    memcpy(at, head, h);
    *len = b->buf.len - (S_BATCH_HEAD - h);
    return at;
}

void lq_batch_clear(lq_batch_t *b)
{
    lq_buf_clear(&b->buf);
    b->n = 0;
}

/* ---- decoder ----------------------------------------------------------- */

/* Arena block; m->arena_ points at the newest, blocks chain to older ones. */
typedef struct s_block {
    struct s_block *next;
    size_t cap, used;
    max_align_t data[];
} s_block;

typedef struct {
    lq_msg_t *m;
    size_t hint; /* size of the next block */
    char err[256];
} s_dec;

/* Returns n bytes (aligned to align) from the message arena, zeroed when
 * zero is set. Owned by the arena. Aborts on out-of-memory; can't fail. */
static void *s_alloc(s_dec *d, size_t n, size_t align, int zero)
{
    s_block *b = d->m->arena_;
    size_t at = b ? (b->used + align - 1) & ~(align - 1) : 0;
    if (!b || at > b->cap || b->cap - at < n) {
        size_t cap = n > d->hint ? n : d->hint;
        b = xmalloc(sizeof *b + cap);
        b->next = d->m->arena_;
        b->cap = cap;
        b->used = 0;
        at = 0;
        d->m->arena_ = b;
        d->hint = cap * 2;
    }
    void *p = (char *)b->data + at;
    b->used = at + n;
    if (zero)
        memset(p, 0, n);
    return p;
}

/* Records a reason (first one wins). Returns -1 for tail calls. */
static int s_fail(s_dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fail(s_dec *d, const char *fmt, ...)
{
    if (d->err[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* Prefixes the recorded reason with where it happened: "jobs[3]: ", or
 * "info: " when i is SIZE_MAX. Returns -1. */
static int s_where(s_dec *d, const char *key, size_t i)
{
    char pre[64];
    if (i == SIZE_MAX)
        snprintf(pre, sizeof pre, "%s: ", key);
    else
        snprintf(pre, sizeof pre, "%s[%zu]: ", key, i);
    size_t pl = strlen(pre), el = strlen(d->err);
    if (pl + el >= sizeof d->err)
        el = sizeof d->err - 1 - pl;
    memmove(d->err + pl, d->err, el);
    memcpy(d->err, pre, pl);
    d->err[pl + el] = '\0';
    return -1;
}

/* ---- reading msgpack in place --------------------------------------------- */

/* The kinds of msgpack object the decoder tells apart. */
enum { O_NIL, O_BOOL, O_UINT, O_NINT, O_STR, O_BIN, O_ARRAY, O_MAP, O_OTHER };

/* One object's head: scalars carry their value, str/bin point at their
 * bytes (in the body), arrays/maps carry their count (the children follow
 * at the cursor). */
typedef struct {
    int kind;
    uint64_t u;        /* O_UINT; O_BOOL (0/1) */
    int64_t i;         /* O_NINT (< 0) */
    const uint8_t *ptr; /* O_STR, O_BIN */
    uint32_t n;        /* O_STR/O_BIN bytes; O_ARRAY items; O_MAP pairs */
} s_obj;

/* A read position in a body, and what the structural rules (docs/protocol.md
 * 5.3, rules 1-2) need: objects read so far, the nesting depth of the
 * container being read (the body's map is depth 1), why reading failed. */
typedef struct {
    const uint8_t *p, *end;
    size_t objects;
    int depth;
    const char *why;
} s_cur;

/* Reads n big-endian bytes (1..8) at c->p as an unsigned integer. */
static uint64_t s_be64(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Records why the cursor cannot go on. Returns -1. */
static int s_bad(s_cur *c, const char *why)
{
    c->why = why;
    return -1;
}

/* Reads the head of the object at the cursor into o and moves past it (past
 * the payload of a str, bin, ext or float; onto the first child of an array
 * or map). Refuses, with c->why, a body that ends early, the byte 0xc1, an
 * array or map declaring more elements than bytes remain (each takes one
 * at least: that bounds what a declared count may allocate), and the
 * S_MAX_OBJECTS + 1st object. Returns 0 or -1. */
static int s_next(s_cur *c, s_obj *o)
{
    if (c->p >= c->end)
        return s_bad(c, "truncated body");
    if (++c->objects > S_MAX_OBJECTS)
        return s_bad(c, "too many objects");
    uint8_t b = *c->p++;
    size_t left = (size_t)(c->end - c->p);
    int w = 0;         /* width of a size or value field */
    uint64_t skip = 0; /* payload bytes to pass over (O_OTHER) */
    o->kind = O_OTHER;
    if (b <= 0x7f) {
        o->kind = O_UINT;
        o->u = b;
        return 0;
    }
    if (b >= 0xe0) {
        o->kind = O_NINT;
        o->i = (int8_t)b;
        return 0;
    }
    if (b <= 0x8f) {
        o->kind = O_MAP;
        o->n = b & 0x0f;
        goto container;
    }
    if (b <= 0x9f) {
        o->kind = O_ARRAY;
        o->n = b & 0x0f;
        goto container;
    }
    if (b <= 0xbf) {
        o->kind = O_STR;
        o->n = b & 0x1f;
        goto bytes;
    }
    switch (b) {
    case 0xc0:
        o->kind = O_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        o->kind = O_BOOL;
        o->u = b == 0xc3;
        return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8..64 */
        w = 1 << (b - 0xcc);
        if (left < (size_t)w)
            return s_bad(c, "truncated body");
        o->kind = O_UINT;
        o->u = s_be64(c->p, w);
        c->p += w;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: { /* int 8..64 */
        w = 1 << (b - 0xd0);
        if (left < (size_t)w)
            return s_bad(c, "truncated body");
        uint64_t raw = s_be64(c->p, w);
        c->p += w;
        int64_t v = w == 1   ? (int8_t)raw
                    : w == 2 ? (int16_t)raw
                    : w == 4 ? (int32_t)raw
                             : (int64_t)raw;
        if (v >= 0) { /* as msgpack-c: a non-negative value is unsigned */
            o->kind = O_UINT;
            o->u = (uint64_t)v;
        } else {
            o->kind = O_NINT;
            o->i = v;
        }
        return 0;
    }
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        o->kind = b >= 0xd9 ? O_STR : O_BIN;
        w = 1 << (b >= 0xd9 ? b - 0xd9 : b - 0xc4);
        if (left < (size_t)w)
            return s_bad(c, "truncated body");
        o->n = (uint32_t)s_be64(c->p, w);
        c->p += w;
        goto bytes;
    case 0xdc: case 0xdd: /* array 16/32 */
    case 0xde: case 0xdf: /* map 16/32 */
        o->kind = b <= 0xdd ? O_ARRAY : O_MAP;
        w = (b & 1) ? 4 : 2;
        if (left < (size_t)w)
            return s_bad(c, "truncated body");
        o->n = (uint32_t)s_be64(c->p, w);
        c->p += w;
        goto container;
    case 0xca: skip = 4; break; /* float32 */
    case 0xcb: skip = 8; break;
    case 0xd4: skip = 2; break; /* fixext 1..16, with the type byte */
    case 0xd5: skip = 3; break;
    case 0xd6: skip = 5; break;
    case 0xd7: skip = 9; break;
    case 0xd8: skip = 17; break;
    case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32 */
        w = 1 << (b - 0xc7);
        if (left < (size_t)w)
            return s_bad(c, "truncated body");
        skip = s_be64(c->p, w) + 1;
        c->p += w;
        break;
    default:
        return s_bad(c, "invalid msgpack byte"); /* 0xc1 */
    }
    if (skip > (size_t)(c->end - c->p))
        return s_bad(c, "truncated body");
    c->p += skip;
    return 0;
bytes:
    if (o->n > (size_t)(c->end - c->p))
        return s_bad(c, "truncated body");
    o->ptr = c->p;
    c->p += o->n;
    return 0;
container:
    if ((uint64_t)o->n * (o->kind == O_MAP ? 2 : 1) > (uint64_t)(c->end - c->p))
        return s_bad(c, "container larger than the body");
    return 0;
}

/* Enters a container that has children (one level deeper). Returns 0, or
 * -1 past S_MAX_DEPTH. */
static int s_enter(s_cur *c)
{
    if (c->depth == S_MAX_DEPTH)
        return s_bad(c, "nested too deeply");
    c->depth++;
    return 0;
}

/* Moves the cursor past one whole object (an unknown key's value), held
 * to the same rules. Returns 0 or -1. */
static int s_skip(s_cur *c)
{
    uint64_t pending[S_MAX_DEPTH + 1]; /* objects still to pass per level */
    int top = 0, depth = c->depth;
    pending[0] = 1;
    while (top >= 0) {
        if (pending[top] == 0) {
            top--;
            continue;
        }
        pending[top]--;
        s_obj o;
        if (s_next(c, &o) < 0)
            return -1;
        uint64_t kids = o.kind == O_ARRAY ? o.n : o.kind == O_MAP ? 2 * (uint64_t)o.n : 0;
        if (kids) {
            if (depth + top + 1 > S_MAX_DEPTH)
                return s_bad(c, "nested too deeply");
            pending[++top] = kids;
        }
    }
    return 0;
}

/* Copies a str/bin object into the arena as a NUL-terminated string of at
 * most f->smax bytes; NUL bytes are refused unless may_nul (f has a length
 * member). Returns 0 with *out (and *outlen), or -1. */
static int s_dec_str(s_dec *d, const s_field *f, const s_obj *o, const char **out,
                     size_t *outlen, int may_nul)
{
    if (o->kind != O_STR && o->kind != O_BIN)
        return s_fail(d, "'%s': want a string", f->key);
    size_t n = o->n;
    if (n > f->smax)
        return s_fail(d, "'%s': string of %zu bytes over the limit of %u", f->key, n,
                      (unsigned)f->smax);
    if (!may_nul && memchr(o->ptr, 0, n))
        return s_fail(d, "'%s': string contains a NUL byte", f->key);
    char *s = s_alloc(d, n + 1, 1, 0);
    memcpy(s, o->ptr, n);
    s[n] = '\0';
    *out = s;
    if (outlen)
        *outlen = n;
    return 0;
}

/* Checks an array head's type and count against f. Returns 0 or -1. */
static int s_dec_arr_hdr(s_dec *d, const s_field *f, const s_obj *o)
{
    if (o->kind != O_ARRAY)
        return s_fail(d, "'%s': want an array", f->key);
    if ((int64_t)o->n < f->min || (int64_t)o->n > f->max)
        return s_fail(d, "'%s': %u items, want %lld..%lld", f->key, (unsigned)o->n,
                      (long long)f->min, (long long)f->max);
    return 0;
}

static int s_dec_map(s_dec *d, const s_schema *sc, s_cur *c, void *base);

/* Decodes the object at the cursor into field f of the struct at base.
 * Returns 0 or -1. */
static int s_dec_value(s_dec *d, const s_field *f, s_cur *c, void *base)
{
    s_obj o;
    if (f->type != T_OBJ && s_next(c, &o) < 0)
        return s_fail(d, "%s", c->why);
    switch (f->type) {
    case T_U64:
        if (o.kind == O_NINT)
            return s_fail(d, "'%s': negative", f->key);
        if (o.kind != O_UINT)
            return s_fail(d, "'%s': want an integer", f->key);
        AT(base, f->off, uint64_t) = o.u;
        return 0;
    case T_I64: {
        int64_t v;
        if (o.kind == O_UINT) {
            if (o.u > (uint64_t)INT64_MAX)
                return s_fail(d, "'%s': %llu out of range", f->key, (unsigned long long)o.u);
            v = (int64_t)o.u;
        } else if (o.kind == O_NINT) {
            v = o.i;
        } else {
            return s_fail(d, "'%s': want an integer", f->key);
        }
        if (v < f->min || v > f->max)
            return s_fail(d, "'%s': %lld out of range %lld..%lld", f->key, (long long)v,
                          (long long)f->min, (long long)f->max);
        AT(base, f->off, int64_t) = v;
        return 0;
    }
    case T_BOOL:
        if (o.kind != O_BOOL)
            return s_fail(d, "'%s': want a boolean", f->key);
        AT(base, f->off, int) = (int)o.u;
        return 0;
    case T_STR: {
        int has_len = f->aux != S_NOLEN;
        const char *s = NULL;
        if (s_dec_str(d, f, &o, &s, has_len ? &AT(base, f->aux, size_t) : NULL, has_len) < 0)
            return -1;
        s_setp(base, f->off, s);
        return 0;
    }
    case T_STRS: {
        if (s_dec_arr_hdr(d, f, &o) < 0)
            return -1;
        size_t n = o.n;
        const char **v = s_alloc(d, (n ? n : 1) * sizeof *v, alignof(max_align_t), 1);
        if (n && s_enter(c) < 0)
            return s_fail(d, "%s", c->why);
        for (size_t i = 0; i < n; i++) {
            s_obj e;
            if (s_next(c, &e) < 0) {
                s_fail(d, "%s", c->why);
                return s_where(d, f->key, i);
            }
            if (s_dec_str(d, f, &e, &v[i], NULL, 0) < 0)
                return s_where(d, f->key, i);
        }
        c->depth -= n ? 1 : 0;
        s_setp(base, f->off, v);
        AT(base, f->aux, size_t) = n;
        return 0;
    }
    case T_ARR: {
        if (s_dec_arr_hdr(d, f, &o) < 0)
            return -1;
        size_t n = o.n;
        char *v = s_alloc(d, (n ? n : 1) * f->sub->size, alignof(max_align_t), 1);
        if (n && s_enter(c) < 0)
            return s_fail(d, "%s", c->why);
        for (size_t i = 0; i < n; i++)
            if (s_dec_map(d, f->sub, c, v + i * f->sub->size) < 0)
                return s_where(d, f->key, i);
        c->depth -= n ? 1 : 0;
        s_setp(base, f->off, v);
        AT(base, f->aux, size_t) = n;
        return 0;
    }
    case T_OBJ:
        if (s_dec_map(d, f->sub, c, (char *)base + f->off) < 0)
            return s_where(d, f->key, SIZE_MAX);
        return 0;
    }
    return s_fail(d, "'%s': bad schema", f->key);
}

/* Whether field f is named k[0..kn) (keys are short: a loop beats a call). */
static int s_key_is(const s_field *f, const uint8_t *k, size_t kn)
{
    if (f->klen != kn)
        return 0;
    for (size_t i = 0; i < kn; i++)
        if ((uint8_t)f->key[i] != k[i])
            return 0;
    return 1;
}

/* The index in sc of the field named k[0..kn), or sc->n. Looks from hint
 * (the field after the previous match) onwards first, then from the start:
 * llmq writes keys in schema order, leaving some out. */
static size_t s_find_field(const s_schema *sc, const uint8_t *k, size_t kn, size_t hint)
{
    for (size_t i = hint; i < sc->n; i++)
        if (s_key_is(&sc->f[i], k, kn))
            return i;
    for (size_t i = 0; i < hint && i < sc->n; i++)
        if (s_key_is(&sc->f[i], k, kn))
            return i;
    return sc->n;
}

/* Decodes the map at the cursor into the zeroed struct at base following
 * sc: known keys once each, unknown keys skipped, absent optional fields
 * set to their defaults. Returns 0 or -1. */
static int s_dec_map(s_dec *d, const s_schema *sc, s_cur *c, void *base)
{
    s_obj o;
    if (s_next(c, &o) < 0)
        return s_fail(d, "%s", c->why);
    if (o.kind != O_MAP)
        return s_fail(d, "want a map");
    if (o.n && s_enter(c) < 0)
        return s_fail(d, "%s", c->why);
    uint64_t seen = 0;
    size_t hint = 0;
    for (uint32_t k = 0; k < o.n; k++) {
        s_obj key;
        if (s_next(c, &key) < 0)
            return s_fail(d, "%s", c->why);
        if (key.kind != O_STR && key.kind != O_BIN)
            return s_fail(d, "map key is not a string");
        size_t i = s_find_field(sc, key.ptr, key.n, hint);
        if (i == sc->n) {
            if (s_skip(c) < 0) /* unknown key: ignored */
                return s_fail(d, "%s", c->why);
            continue;
        }
        if (seen & (UINT64_C(1) << i))
            return s_fail(d, "duplicate key '%s'", sc->f[i].key);
        seen |= UINT64_C(1) << i;
        hint = i + 1;
        if (s_dec_value(d, &sc->f[i], c, base) < 0)
            return -1;
    }
    c->depth -= o.n ? 1 : 0;
    for (size_t i = 0; i < sc->n; i++) {
        const s_field *f = &sc->f[i];
        if (seen & (UINT64_C(1) << i))
            continue;
        if (f->flags & F_REQ)
            return s_fail(d, "missing key '%s'", f->key);
        if (f->type == T_I64)
            AT(base, f->off, int64_t) = f->dflt;
        else if (f->type == T_STR && (f->flags & F_EMPTY))
            s_setp(base, f->off, "");
    }
    return 0;
}

int lq_msg_decode(uint8_t cmd, const void *body, size_t len, lq_msg_t *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    s_dec d = {.m = m, .hint = len + 256};
    const s_cmd_t *c = s_find_cmd(cmd);
    const uint8_t *p = body;
    if (!c) {
        s_fail(&d, "unknown command 0x%02x", cmd);
    } else if (len > LQ_MAX_BODY) {
        s_fail(&d, "body of %zu bytes over the limit of %u", len, (unsigned)LQ_MAX_BODY);
    } else if (len == 0) {
        s_fail(&d, "empty body");
    } else if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf)) {
        s_fail(&d, "body is not a map");
    } else {
        s_cur cur = {p, p + len, 0, 0, NULL};
        if (s_dec_map(&d, c->sc, &cur, &m->u) == 0) {
            if (cur.p != cur.end)
                s_fail(&d, "trailing bytes after the map");
            else
                m->cmd = cmd;
        }
    }
    if (d.err[0]) {
        lq_msg_clear(m);
        if (err && errlen)
            snprintf(err, errlen, "%s", d.err);
        return -1;
    }
    return 0;
}

void lq_msg_clear(lq_msg_t *m)
{
    if (!m)
        return;
    s_block *b = m->arena_;
    while (b) {
        s_block *next = b->next;
        free(b);
        b = next;
    }
    memset(m, 0, sizeof *m);
}
