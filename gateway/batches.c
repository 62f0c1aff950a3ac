/* batches: /v1/batches, and the submission threads.
 *
 * A batch is a record under the owner's tree ("batches" kind) with a phase:
 *   validating  the thread is checking the input file and sending it to the
 *               broker (status "validating", or "cancelling" once asked);
 *   submitted   the broker holds it: status and counts come from the
 *               broker's STATUS, output/error files from its RESULTS;
 *   failed      invalid lines (the `errors` list, with line numbers) or a
 *               submission the broker refused;
 *   cancelled   cancelled before it reached the broker.
 * The submission runs in a detached thread with its own rpc channel, so
 * that validating and streaming a file of any size never stalls the HTTP
 * loop. It submits under the name "gw-<batch id>": a gateway restarted in
 * the middle resumes the same broker batch (lq_batches_resume_all), and
 * a repeated POST with the same input (or Idempotency-Key) returns the
 * existing batch instead of making a second one. */
#include "gateway.h"

#include "client/submit.h"
#include "common/log.h"
#include "common/util.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LQ_GW_MAX_LINE_ERRORS 100
#define LQ_GW_DAY 86400

/* ---- the submission thread ---- */

static int s_running; /* submission threads alive (atomic builtins) */

int lq_batches_running(void)
{
    return __atomic_load_n(&s_running, __ATOMIC_SEQ_CST);
}

typedef struct {
    lq_store_t *store;
    char owner[LQ_STORE_OWNER_LEN + 1];
    char id[LQ_STORE_ID_MAX + 1];
    char *input;  /* path of the uploaded file */
    char *endpoint; /* every line's url must be this one */
    char *broker; /* endpoint and CURVE settings, copied */
    char *curve_server_key, *curve_secret;
    long long max_attempts, timeout_s;
    json_t *errors; /* line errors found */
} s_job_t;

/* Frees a job and everything it copied. */
static void s_job_free(s_job_t *j)
{
    free(j->input);
    free(j->endpoint);
    free(j->broker);
    free(j->curve_server_key);
    free(j->curve_secret);
    json_decref(j->errors);
    free(j);
}

/* Collects one invalid line as an OpenAI batch error, its message
 * "line N[:COL]: ..." without the server's path of the file. */
static void s_on_line_error(void *arg, long long line, const char *message)
{
    s_job_t *j = arg;
    size_t n = strlen(j->input);
    char *text = strncmp(message, j->input, n) == 0 && message[n] == ':'
                     ? xasprintf("%s%s", line > 0 ? "line " : "", message + n + 1 + (line <= 0))
                     : xstrdup(message); /* no server paths in what the user sees */
    json_array_append_new(j->errors,
                          json_pack("{s:s,s:s,s:n,s:o}", "code", "invalid_request", "message",
                                    text, "param", "line",
                                    line > 0 ? json_integer(line) : json_null()));
    free(text);
}

/* Logs a progress notice of the submit library. */
static void s_on_notice(void *arg, const char *message)
{
    LQ_INFO("batch %s: %s", ((s_job_t *)arg)->id, message);
}

/* Record edit: the batch failed with the errors in arg. */
static int s_edit_failed(json_t *rec, void *arg)
{
    json_object_set_new(rec, "phase", json_string("failed"));
    json_object_set(rec, "errors", arg);
    json_object_set_new(rec, "failed_at", json_integer(lq_wall_s()));
    return 0;
}

/* Record edit: cancelled before reaching the broker, if that was asked
 * (declines otherwise). */
static int s_edit_cancel_early(json_t *rec, void *arg)
{
    (void)arg;
    if (!json_object_get(rec, "cancelling_at"))
        return -1;
    json_object_set_new(rec, "phase", json_string("cancelled"));
    json_object_set_new(rec, "cancelled_at", json_integer(lq_wall_s()));
    return 0;
}

typedef struct {
    const char *broker;
    long long total;
    int cancel_wanted; /* out */
} s_submitted_t;

/* Record edit: the broker holds the batch now. */
static int s_edit_submitted(json_t *rec, void *arg)
{
    s_submitted_t *s = arg;
    json_object_set_new(rec, "phase", json_string("submitted"));
    json_object_set_new(rec, "broker", json_string(s->broker));
    json_object_set_new(rec, "total", json_integer(s->total));
    json_object_set_new(rec, "in_progress_at", json_integer(lq_wall_s()));
    s->cancel_wanted = json_object_get(rec, "cancelling_at") != NULL;
    return 0;
}

/* Marks the batch failed with one error of the given code. */
static void s_fail(s_job_t *j, const char *code, const char *message)
{
    json_t *errs = json_pack("[{s:s,s:s,s:n,s:n}]", "code", code, "message", message, "param",
                             "line");
    lq_store_update(j->store, j->owner, "batches", j->id, s_edit_failed, errs);
    json_decref(errs);
    LQ_WARN("batch %s failed: %s", j->id, message);
}

/* Step: sends the validated file to the broker and records the outcome. */
static void s_send(s_job_t *j, lq_submit_t *sub, long long total)
{
    char err[256], name[LQ_STORE_ID_MAX + 8];
    lq_rpc_t *rpc = lq_rpc_new(j->broker, j->curve_server_key, j->curve_secret, err, sizeof err);
    if (!rpc) {
        s_fail(j, "submission_failed", err);
        return;
    }
    snprintf(name, sizeof name, "gw-%s", j->id);
    lq_submit_params_t p = {
        .name = name,
        .max_attempts = j->max_attempts,
        .timeout_s = j->timeout_s,
        .connect_timeout_s = 600,
        .retry_window_s = 600,
        .notice = s_on_notice,
        .notice_arg = j,
    };
    lq_submit_rc_t rc = lq_submit_send(sub, rpc, &p);
    if (rc != LQ_SUBMIT_OK) {
        s_fail(j, "submission_failed", lq_submit_error(sub));
        lq_rpc_destroy(&rpc);
        return;
    }
    s_submitted_t s = {.broker = lq_submit_batch(sub), .total = total};
    lq_store_update(j->store, j->owner, "batches", j->id, s_edit_submitted, &s);
    LQ_INFO("batch %s: %lld jobs submitted as %s", j->id, total, s.broker);
    if (s.cancel_wanted) { /* cancelled while it was being sent */
        lq_msg_t m = {0}, reply;
        m.cmd = LQ_C_CANCEL;
        m.u.batch_req.batch = s.broker;
        if (lq_rpc_call(rpc, &m, &reply, 10000) == 1)
            lq_msg_clear(&reply);
    }
    lq_rpc_destroy(&rpc);
}

/* The thread: validate, then (unless invalid or cancelled) send. */
static void *s_submit_thread(void *arg)
{
    s_job_t *j = arg;
    lq_submit_t *sub = lq_submit_new(j->input, NULL);
    lq_submit_expect_url(sub, j->endpoint);
    long long total = lq_submit_validate(sub, LQ_GW_MAX_LINE_ERRORS, s_on_line_error, j);
    if (total < 0) {
        long long bad = lq_submit_invalid_lines(sub);
        if (bad > LQ_GW_MAX_LINE_ERRORS) {
            char msg[128];
            snprintf(msg, sizeof msg, "... and %lld more invalid lines",
                     bad - LQ_GW_MAX_LINE_ERRORS);
            s_on_line_error(j, 0, msg);
        }
        lq_store_update(j->store, j->owner, "batches", j->id, s_edit_failed, j->errors);
        LQ_INFO("batch %s: %lld invalid lines", j->id, bad);
    } else if (lq_store_update(j->store, j->owner, "batches", j->id, s_edit_cancel_early,
                               NULL) < 0) {
        s_send(j, sub, total);
    }
    lq_submit_destroy(&sub);
    s_job_free(j);
    __atomic_sub_fetch(&s_running, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Starts the submission thread of batch id (input: the uploaded file's
 * id). Returns 0 or -1. */
static int s_start(lq_gw_t *gw, const char *owner, const char *id, const char *input,
                   const char *endpoint)
{
    s_job_t *j = xcalloc(1, sizeof *j);
    j->store = gw->store;
    snprintf(j->owner, sizeof j->owner, "%s", owner);
    snprintf(j->id, sizeof j->id, "%s", id);
    j->input = lq_store_path(gw->store, owner, "files", input, ".jsonl");
    j->endpoint = xstrdup(endpoint);
    j->broker = xstrdup(gw->opts.broker);
    j->curve_server_key = gw->opts.curve_server_key ? xstrdup(gw->opts.curve_server_key) : NULL;
    j->curve_secret = gw->opts.curve_secret ? xstrdup(gw->opts.curve_secret) : NULL;
    j->max_attempts = gw->opts.max_attempts;
    j->timeout_s = gw->opts.timeout_s;
    j->errors = json_array();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    __atomic_add_fetch(&s_running, 1, __ATOMIC_SEQ_CST);
    int rc = j->input ? pthread_create(&t, &attr, s_submit_thread, j) : -1;
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        __atomic_sub_fetch(&s_running, 1, __ATOMIC_SEQ_CST);
        s_job_free(j);
        return -1;
    }
    return 0;
}

void lq_batches_resume_all(lq_gw_t *gw)
{
    char **ids, **owners;
    size_t n = lq_store_list(gw->store, NULL, "batches", &ids, &owners);
    for (size_t i = 0; i < n; i++) {
        json_t *rec = lq_store_load(gw->store, owners[i], "batches", ids[i]);
        const char *phase = json_string_value(json_object_get(rec, "phase"));
        const char *input = json_string_value(json_object_get(rec, "input_file_id"));
        const char *ep = json_string_value(json_object_get(rec, "endpoint"));
        if (phase && input && ep && strcmp(phase, "validating") == 0) {
            LQ_INFO("batch %s: resuming its submission", ids[i]);
            s_start(gw, owners[i], ids[i], input, ep);
        }
        json_decref(rec);
    }
    lq_store_ids_free(ids, n);
    lq_store_ids_free(owners, n);
}

/* ---- batch objects ---- */

/* The broker's view of a submitted batch: 1 with *reply a BATCH, 0 if the
 * broker does not know it (deleted), -1 if it did not answer. */
static int s_broker_status(lq_gw_t *gw, const char *broker, lq_msg_t *reply)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_STATUS;
    m.u.batch_req.batch = broker;
    if (!lq_gw_call(gw, &m, reply))
        return -1;
    if (reply->cmd == LQ_C_BATCH)
        return 1;
    int known = !(reply->cmd == LQ_C_ERROR && strcmp(reply->u.error.code, "not_found") == 0);
    lq_msg_clear(reply);
    return known ? -1 : 0;
}

/* rec[key] if it is an integer (a new reference), else JSON null. */
static json_t *s_int_or_null(json_t *rec, const char *key)
{
    json_t *v = json_object_get(rec, key);
    return json_is_integer(v) ? json_incref(v) : json_null();
}

/* The suffix of a batch id shared by its result files. */
static const char *s_suffix(const char *id)
{
    return strncmp(id, "batch_", 6) == 0 ? id + 6 : id;
}

/* Fills status, counts, timestamps and result files from the broker's
 * info (NULL: not at the broker, or gone). */
static void s_fill_from_broker(json_t *o, json_t *rec, const lq_batch_info_t *b)
{
    const char *st = b ? b->state : "expired";
    int done = b && (strcmp(st, "completed") == 0 || strcmp(st, "cancelled") == 0);
    const char *status = strcmp(st, "submitting") == 0 ? "in_progress" : st;
    json_object_set_new(o, "status", json_string(status));
    if (b) {
        json_object_set_new(o, "request_counts",
                            json_pack("{s:I,s:I,s:I}", "total", (json_int_t)b->total,
                                      "completed", (json_int_t)b->completed, "failed",
                                      (json_int_t)b->failed));
    }
    if (!b)
        json_object_set_new(o, "expired_at", json_integer(lq_wall_s()));
    if (done && strcmp(st, "completed") == 0) {
        json_object_set_new(o, "finalizing_at", json_integer(b->finished_at));
        json_object_set_new(o, "completed_at", json_integer(b->finished_at));
    }
    if (done && strcmp(st, "cancelled") == 0)
        json_object_set_new(o, "cancelled_at", json_integer(b->finished_at));
    if ((strcmp(st, "cancelling") == 0 || strcmp(st, "cancelled") == 0) &&
        !json_is_integer(json_object_get(rec, "cancelling_at")))
        json_object_set_new(o, "cancelling_at", json_integer(b->finished_at));
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (done && b->completed > 0)
        json_object_set_new(o, "output_file_id", json_sprintf("file-out-%s", s_suffix(id)));
    if (done && b->failed > 0)
        json_object_set_new(o, "error_file_id", json_sprintf("file-err-%s", s_suffix(id)));
}

/* The API's batch object for a record (borrowed); info: the broker's view
 * of a submitted batch (NULL if not submitted or gone). */
static json_t *s_batch_object(json_t *rec, const lq_batch_info_t *info)
{
    json_int_t created = json_integer_value(json_object_get(rec, "created_at"));
    const char *phase = json_string_value(json_object_get(rec, "phase"));
    json_t *o = json_pack("{s:O,s:s,s:O,s:O,s:O,s:I,s:I}", "id", json_object_get(rec, "id"),
                          "object", "batch", "endpoint", json_object_get(rec, "endpoint"),
                          "input_file_id", json_object_get(rec, "input_file_id"),
                          "completion_window", json_object_get(rec, "completion_window"),
                          "created_at", created, "expires_at", created + LQ_GW_DAY);
    json_t *errs = json_object_get(rec, "errors");
    json_object_set_new(o, "errors", json_is_array(errs) ? json_pack("{s:s,s:O}", "object",
                                                                      "list", "data", errs)
                                                          : json_null());
    json_object_set_new(o, "output_file_id", json_null());
    json_object_set_new(o, "error_file_id", json_null());
    const char *times[] = {"in_progress_at", "finalizing_at", "completed_at", "failed_at",
                           "expired_at", "cancelling_at", "cancelled_at"};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        json_object_set_new(o, times[i], s_int_or_null(rec, times[i]));
    json_object_set_new(o, "request_counts",
                        json_pack("{s:i,s:i,s:i}", "total", 0, "completed", 0, "failed", 0));
    json_t *meta = json_object_get(rec, "metadata");
    json_object_set_new(o, "metadata", meta ? json_incref(meta) : json_null());
    if (strcmp(phase, "submitted") == 0)
        s_fill_from_broker(o, rec, info);
    else if (strcmp(phase, "validating") == 0)
        json_object_set_new(o, "status", json_string(json_object_get(rec, "cancelling_at")
                                                         ? "cancelling"
                                                         : "validating"));
    else
        json_object_set_new(o, "status", json_string(phase)); /* failed, cancelled */
    return o;
}

/* Builds the object of the owner's batch id, asking the broker when it
 * holds the batch. Returns the object, or NULL with *http set (404: no
 * such batch, 503: the broker did not answer). */
static json_t *s_load_object(lq_gw_t *gw, const char *owner, const char *id, unsigned *http)
{
    json_t *rec = lq_store_load(gw->store, owner, "batches", id);
    if (!rec || !json_is_string(json_object_get(rec, "phase"))) {
        json_decref(rec);
        *http = 404;
        return NULL;
    }
    const char *broker = json_string_value(json_object_get(rec, "broker"));
    const char *phase = json_string_value(json_object_get(rec, "phase"));
    json_t *o = NULL;
    if (broker && strcmp(phase, "submitted") == 0) {
        lq_msg_t reply;
        int known = s_broker_status(gw, broker, &reply);
        if (known >= 0)
            o = s_batch_object(rec, known ? &reply.u.batch.info : NULL);
        if (known > 0)
            lq_msg_clear(&reply);
        *http = 503;
    } else {
        o = s_batch_object(rec, NULL);
    }
    json_decref(rec);
    return o;
}

/* Replies with the batch object of id, a 404 or a 503. */
static int s_reply_object(lq_gw_req_t *r, const char *id)
{
    unsigned http;
    json_t *o = s_load_object(r->gw, r->owner, id, &http);
    if (o)
        return lq_gw_reply_json(r, 200, o);
    if (http == 404)
        return lq_gw_reply_not_found(r, "batch", id);
    return lq_gw_reply_error(r, 503, "server_error", NULL, NULL,
                             "The llmq broker is not answering; try again");
}

/* ---- handlers ---- */

int lq_batches_get(lq_gw_req_t *r, const char *id)
{
    return s_reply_object(r, id);
}

/* Record edit: asks for the cancel; arg gets the phase seen. */
static int s_edit_cancel(json_t *rec, void *arg)
{
    const char *phase = json_string_value(json_object_get(rec, "phase"));
    snprintf(arg, 16, "%s", phase ? phase : "");
    if (json_object_get(rec, "cancelling_at") || !phase ||
        (strcmp(phase, "validating") != 0 && strcmp(phase, "submitted") != 0))
        return -1;
    json_object_set_new(rec, "cancelling_at", json_integer(lq_wall_s()));
    return 0;
}

int lq_batches_cancel(lq_gw_req_t *r, const char *id)
{
    json_t *rec = lq_store_load(r->gw->store, r->owner, "batches", id);
    if (!rec)
        return lq_gw_reply_not_found(r, "batch", id);
    char phase[16] = "";
    lq_store_update(r->gw->store, r->owner, "batches", id, s_edit_cancel, phase);
    const char *broker = json_string_value(json_object_get(rec, "broker"));
    if (strcmp(phase, "submitted") == 0 && broker) {
        lq_msg_t m = {0}, reply;
        m.cmd = LQ_C_CANCEL;
        m.u.batch_req.batch = broker;
        if (!lq_gw_call(r->gw, &m, &reply)) {
            json_decref(rec);
            return lq_gw_reply_error(r, 503, "server_error", NULL, NULL,
                                     "The llmq broker is not answering; try again");
        }
        lq_msg_clear(&reply);
    }
    json_decref(rec);
    LQ_INFO("batch %s: cancel requested (%s)", id, phase);
    return s_reply_object(r, id);
}

int lq_batches_list(lq_gw_req_t *r)
{
    const char *after = lq_gw_query(r, "after");
    const char *lim = lq_gw_query(r, "limit");
    long long limit = 20;
    if (lim && lq_parse_ll(lim, 1, 100, &limit) < 0)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, "limit",
                                 "limit must be an integer from 1 to 100");
    char **ids;
    size_t n = lq_store_list(r->gw->store, r->owner, "batches", &ids, NULL);
    size_t i = 0;
    if (after)
        while (i < n && strcmp(ids[i], after) >= 0)
            i++;
    json_t *data = json_array();
    int failed = 0;
    for (; i < n && json_array_size(data) < (size_t)limit && !failed; i++) {
        unsigned http;
        json_t *o = s_load_object(r->gw, r->owner, ids[i], &http);
        if (o)
            json_array_append_new(data, o);
        failed = !o && http == 503;
    }
    int more = i < n;
    lq_store_ids_free(ids, n);
    if (failed) {
        json_decref(data);
        return lq_gw_reply_error(r, 503, "server_error", NULL, NULL,
                                 "The llmq broker is not answering; try again");
    }
    size_t k = json_array_size(data);
    json_t *first = k ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = k ? json_object_get(json_array_get(data, k - 1), "id") : NULL;
    return lq_gw_reply_json(r, 200,
                            json_pack("{s:s,s:o,s:O?,s:O?,s:b}", "object", "list", "data", data,
                                      "first_id", first, "last_id", last, "has_more", more));
}

/* ---- create ---- */

static const char *const s_endpoints[] = {"/v1/chat/completions", "/v1/completions",
                                          "/v1/embeddings", "/v1/responses"};

/* Step of create: checks the request body. Returns NULL with the reply
 * queued in *rc, or the parsed body (a new reference). */
static json_t *s_parse_create(lq_gw_req_t *r, int *rc)
{
    json_error_t jerr;
    json_t *b = r->body ? json_loads(r->body, 0, &jerr) : NULL;
    const char *bad = NULL, *param = NULL;
    if (!json_is_object(b))
        bad = "The body must be a JSON object", param = NULL;
    else if (!json_is_string(json_object_get(b, "input_file_id")))
        bad = "Missing required parameter: 'input_file_id'", param = "input_file_id";
    else if (!json_is_string(json_object_get(b, "endpoint")))
        bad = "Missing required parameter: 'endpoint'", param = "endpoint";
    else if (!json_is_string(json_object_get(b, "completion_window")) ||
             strcmp(json_string_value(json_object_get(b, "completion_window")), "24h") != 0)
        bad = "completion_window must be '24h'", param = "completion_window";
    json_t *meta = json_object_get(b, "metadata");
    if (!bad && meta && !json_is_null(meta)) {
        const char *k;
        json_t *v;
        if (!json_is_object(meta) || json_object_size(meta) > 16)
            bad = "metadata must be an object of at most 16 string pairs", param = "metadata";
        json_object_foreach(json_is_object(meta) ? meta : NULL, k, v)
            if (!json_is_string(v) || strlen(k) > 64 || json_string_length(v) > 512)
                bad = "metadata values must be strings (keys <= 64, values <= 512 characters)",
                param = "metadata";
    }
    if (!bad) {
        const char *ep = json_string_value(json_object_get(b, "endpoint"));
        int ok = 0;
        for (size_t i = 0; i < sizeof s_endpoints / sizeof *s_endpoints; i++)
            ok |= strcmp(ep, s_endpoints[i]) == 0;
        if (!ok)
            bad = "endpoint must be one of /v1/chat/completions, /v1/completions, "
                  "/v1/embeddings, /v1/responses",
            param = "endpoint";
    }
    if (!bad)
        return b;
    json_decref(b);
    *rc = lq_gw_reply_error(r, 400, "invalid_request_error", NULL, param, "%s", bad);
    return NULL;
}

/* The idempotency key of a create: the Idempotency-Key header, or the
 * input file, endpoint and metadata. out: LQ_STORE_ID_MAX + 1 bytes. */
static void s_idem_key(lq_gw_req_t *r, json_t *body, char *out)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
    char *text = h ? xstrdup(h)
                   : xasprintf("%s\n%s\n", json_string_value(json_object_get(body, "input_file_id")),
                               json_string_value(json_object_get(body, "endpoint")));
    json_t *meta = json_object_get(body, "metadata");
    char *m = !h && json_is_object(meta) ? json_dumps(meta, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    char *all = xasprintf("%s%s", text, m ? m : "");
    char owner[LQ_STORE_OWNER_LEN + 1];
    lq_store_owner(all, owner); /* a 64-bit hash in hex */
    snprintf(out, LQ_STORE_ID_MAX + 1, "key-%s", owner);
    free(all);
    free(m);
    free(text);
}

/* An earlier batch made from the same request that is still live (not
 * failed nor cancelled), or NULL. Returns its id (heap) or NULL. */
static char *s_existing(lq_gw_req_t *r, const char *key)
{
    json_t *k = lq_store_load(r->gw->store, r->owner, "keys", key);
    const char *id = json_string_value(json_object_get(k, "batch"));
    json_t *rec = id ? lq_store_load(r->gw->store, r->owner, "batches", id) : NULL;
    const char *phase = json_string_value(json_object_get(rec, "phase"));
    char *out = NULL;
    if (phase && !json_object_get(rec, "cancelling_at") &&
        (strcmp(phase, "validating") == 0 || strcmp(phase, "submitted") == 0))
        out = xstrdup(id);
    json_decref(rec);
    json_decref(k);
    return out;
}

int lq_batches_create(lq_gw_req_t *r)
{
    int rc = 0; /* set by s_parse_create when it fails (0 pleases gcc -Os) */
    json_t *body = s_parse_create(r, &rc);
    if (!body)
        return rc;
    const char *input = json_string_value(json_object_get(body, "input_file_id"));
    json_t *file = lq_store_load(r->gw->store, r->owner, "files", input);
    if (!file) {
        rc = lq_gw_reply_error(r, 404, "invalid_request_error", NULL, "input_file_id",
                               "No such File object: '%s'", input);
        json_decref(body);
        return rc;
    }
    json_decref(file);
    char key[LQ_STORE_ID_MAX + 1];
    s_idem_key(r, body, key);
    char *existing = s_existing(r, key);
    if (existing) {
        json_decref(body);
        rc = s_reply_object(r, existing);
        free(existing);
        return rc;
    }
    char id[LQ_STORE_ID_MAX + 1];
    lq_store_new_id("batch_", id);
    json_t *meta = json_object_get(body, "metadata");
    json_t *rec = json_pack("{s:s,s:s,s:O,s:O,s:O,s:I,s:s}", "id", id, "input_file_id", input,
                            "endpoint", json_object_get(body, "endpoint"), "completion_window",
                            json_object_get(body, "completion_window"), "metadata",
                            json_is_object(meta) ? meta : json_null(), "created_at",
                            (json_int_t)lq_wall_s(), "phase", "validating");
    json_t *k = json_pack("{s:s}", "batch", id);
    int saved = lq_store_save(r->gw->store, r->owner, "batches", id, rec) == 0 &&
                lq_store_save(r->gw->store, r->owner, "keys", key, k) == 0;
    json_decref(k);
    int started =
        saved && s_start(r->gw, r->owner, id, input,
                         json_string_value(json_object_get(body, "endpoint"))) == 0;
    if (started)
        LQ_INFO("batch %s created from %s", id, input);
    json_decref(body); /* input pointed into it */
    if (!started) {
        json_decref(rec);
        return lq_gw_reply_error(r, 500, "server_error", NULL, NULL, "Cannot create the batch");
    }
    json_t *o = s_batch_object(rec, NULL);
    json_decref(rec);
    return lq_gw_reply_json(r, 200, o);
}

json_t *lq_batches_result_file(lq_gw_req_t *r, const char *file_id, char *broker_batch)
{
    int errors = strncmp(file_id, "file-err-", 9) == 0;
    char id[LQ_STORE_ID_MAX + 16];
    snprintf(id, sizeof id, "batch_%s", file_id + 9);
    unsigned http;
    json_t *o = lq_store_id_ok(id) ? s_load_object(r->gw, r->owner, id, &http) : NULL;
    json_t *want = json_object_get(o, errors ? "error_file_id" : "output_file_id");
    json_t *out = NULL;
    if (json_is_string(want) && strcmp(json_string_value(want), file_id) == 0) {
        json_t *rec = lq_store_load(r->gw->store, r->owner, "batches", id);
        snprintf(broker_batch, LQ_MAX_ID + 1, "%s",
                 json_string_value(json_object_get(rec, "broker")));
        json_decref(rec);
        json_t *at = json_object_get(o, errors ? "completed_at" : "completed_at");
        out = json_pack("{s:s,s:s,s:i,s:I,s:s,s:s,s:s,s:n}", "id", file_id, "object", "file",
                        "bytes", 0, "created_at",
                        json_is_integer(at) ? json_integer_value(at) : (json_int_t)lq_wall_s(),
                        "filename", errors ? "batch_errors.jsonl" : "batch_output.jsonl",
                        "purpose", "batch_output", "status", "processed", "status_details");
    }
    json_decref(o);
    return out;
}
