/* fake_behaviour: see fake_behaviour.h.
 *
 * Order of decisions for an API request (POST /v1/chat/completions,
 * /v1/completions, /v1/embeddings):
 *   1. the job key (metadata.custom_id, else FNV-1a of the body) is counted;
 *   2. --api-key: a missing or wrong bearer token gets 401;
 *   3. a body that is not a JSON object gets 400;
 *   4. --rate-limit: no token in the bucket gets 429 (at once, no latency);
 *   5. --bad-request-prefix gets 400, --always-fail-prefix gets 500;
 *   6. one uniform draw picks drop, hang, 500 or 503 by their probabilities;
 *   7. otherwise 200 with a well-formed OpenAI response object.
 * Every API response except 429 is held back by --latency-ms + jitter.
 *
 * Rate-limit headers (sent on every API response while --rate-limit is on):
 *   x-ratelimit-limit-requests      R * 60 (the per-minute rate)
 *   x-ratelimit-remaining-requests  floor(tokens / burst * R * 60): the
 *                                   bucket's fill level on the per-minute
 *                                   scale (full bucket = the limit)
 *   x-ratelimit-reset-requests      time until the bucket is full, "250ms",
 *                                   "1.5s" or "2m30s"
 *
 * Statistics: "requests" counts every request except GET /stats, GET
 * /counts and POST /reset (which are not counted anywhere); "by_status"
 * counts the responses written; "inflight" counts API requests received and
 * not yet answered (hung ones stay in flight until their connection
 * closes). */
#define _GNU_SOURCE
#include "fake_behaviour.h"

#include "fake_table.h"

#include "common/util.h"

#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { S_CHAT = 1, S_COMPLETIONS, S_EMBEDDINGS };

struct lq_fake_bhv {
    lq_fake_cfg_t cfg;
    uint64_t rng;
    double burst;
    double tokens;
    uint64_t bucket_us;
    uint64_t req_seq; /* x-request-id counter; never reset */
    /* statistics */
    uint64_t requests, dropped, hung, auth_failed, auth_ok;
    uint64_t by_status[600];
    uint64_t inflight, max_inflight;
    uint64_t conns_open, conns_accepted;
    lq_fake_table_t *counts;
    /* scratch */
    lq_fake_buf_t body, hdrs, text;
    int64_t date_s;
    char date[40];
};

/* What the response writer needs to know about the request. */
typedef struct {
    int keep_alive;
    int counted; /* counts in by_status */
    int api;     /* carries x-request-id and rate-limit headers */
    uint64_t id; /* x-request-id number */
} s_ctx_t;

/* ---- random numbers, clock helpers ---- */

/* splitmix64: returns the next 64 random bits. Can't fail. */
static uint64_t s_rand(lq_fake_bhv_t *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Returns a uniform double in [0, 1). */
static double s_uniform(lq_fake_bhv_t *b)
{
    return (double)(s_rand(b) >> 11) * 0x1.0p-53;
}

/* Returns the configured delay: latency + uniform 0..jitter ms. */
static uint64_t s_delay(lq_fake_bhv_t *b)
{
    uint64_t d = (uint64_t)b->cfg.latency_ms;
    if (b->cfg.jitter_ms > 0)
        d += s_rand(b) % ((uint64_t)b->cfg.jitter_ms + 1);
    return d;
}

/* Formats wall-clock second t as an IMF-fixdate into out (>= 30 bytes). */
static void s_http_date(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Returns the Date header value, recomputed once a second. */
static const char *s_date(lq_fake_bhv_t *b)
{
    int64_t now = lq_wall_s();
    if (now != b->date_s) {
        b->date_s = now;
        s_http_date(now, b->date, sizeof b->date);
    }
    return b->date;
}

/* ---- life cycle ---- */

/* Creates the behaviour. Can't fail. */
lq_fake_bhv_t *lq_fake_bhv_new(const lq_fake_cfg_t *cfg)
{
    lq_fake_bhv_t *b = xcalloc(1, sizeof *b);
    b->cfg = *cfg;
    b->rng = cfg->seed;
    b->burst = cfg->burst > 0 ? cfg->burst : cfg->rate_limit / 20.0;
    if (b->burst < 1)
        b->burst = 1;
    b->tokens = b->burst;
    b->bucket_us = lq_mono_us();
    b->counts = lq_fake_table_new();
    b->date_s = -1;
    return b;
}

/* Frees the behaviour. Safe on NULL; clears *pb. */
void lq_fake_bhv_destroy(lq_fake_bhv_t **pb)
{
    if (!pb || !*pb)
        return;
    lq_fake_bhv_t *b = *pb;
    lq_fake_table_destroy(&b->counts);
    lq_fake_buf_clear(&b->body);
    lq_fake_buf_clear(&b->hdrs);
    lq_fake_buf_clear(&b->text);
    free(b);
    *pb = NULL;
}

/* Counts an API request leaving flight. */
void lq_fake_bhv_done(lq_fake_bhv_t *b)
{
    if (b->inflight > 0)
        b->inflight--;
}

/* Counts a connection opening or closing. */
void lq_fake_bhv_conn(lq_fake_bhv_t *b, int opened)
{
    if (opened) {
        b->conns_open++;
        b->conns_accepted++;
    } else if (b->conns_open > 0) {
        b->conns_open--;
    }
}

/* ---- token bucket ---- */

/* Adds the tokens earned since the last refill, up to the burst. */
static void s_refill(lq_fake_bhv_t *b)
{
    uint64_t now = lq_mono_us();
    double add = (double)(now - b->bucket_us) * b->cfg.rate_limit / 1e6;
    b->bucket_us = now;
    b->tokens = fmin(b->burst, b->tokens + add);
}

/* Takes one token. Returns 1, or 0 and the ms until one is available. */
static int s_take(lq_fake_bhv_t *b, uint64_t *wait_ms)
{
    s_refill(b);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    double ms = ceil((1.0 - b->tokens) / b->cfg.rate_limit * 1000.0);
    *wait_ms = ms < 1 ? 1 : (uint64_t)ms;
    return 0;
}

/* See fake_behaviour.h. */
void lq_fake_bhv_duration(uint64_t ms, char *out, size_t n)
{
    if (ms < 1000) {
        snprintf(out, n, "%llums", (unsigned long long)ms);
    } else if (ms < 60000) {
        int len = snprintf(out, n, "%llu.%03llu", (unsigned long long)(ms / 1000),
                           (unsigned long long)(ms % 1000));
        while (len > 0 && out[len - 1] == '0')
            len--;
        if (len > 0 && out[len - 1] == '.')
            len--;
        snprintf(out + len, n - (size_t)len, "s");
    } else {
        snprintf(out, n, "%llum%llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms % 60000 / 1000));
    }
}

/* Appends the x-ratelimit-* headers describing the bucket now. */
static void s_ratelimit_headers(lq_fake_bhv_t *b, lq_fake_buf_t *h)
{
    s_refill(b);
    double limit = round(b->cfg.rate_limit * 60.0);
    double remaining = floor(b->tokens / b->burst * limit);
    if (remaining < 0)
        remaining = 0;
    uint64_t reset_ms = (uint64_t)ceil((b->burst - b->tokens) / b->cfg.rate_limit * 1000.0);
    char reset[32];
    lq_fake_bhv_duration(reset_ms, reset, sizeof reset);
    lq_fake_buf_printf(h,
                       "x-ratelimit-limit-requests: %.0f\r\n"
                       "x-ratelimit-remaining-requests: %.0f\r\n"
                       "x-ratelimit-reset-requests: %s\r\n",
                       limit, remaining, reset);
}

/* ---- response writing ---- */

/* Appends status line, headers, extra headers (b->hdrs) and body to out,
 * and counts the status. */
static void s_respond(lq_fake_bhv_t *b, const s_ctx_t *cx, int status, const lq_fake_buf_t *body,
                      lq_fake_buf_t *out)
{
    lq_fake_buf_reserve(out, body->len + b->hdrs.len + 400);
    lq_fake_buf_printf(out,
                       "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: llmq-fake-upstream\r\n"
                       "Content-Type: application/json\r\nConnection: %s\r\nContent-Length: ",
                       status, lq_fake_http_reason(status), s_date(b),
                       cx->keep_alive ? "keep-alive" : "close");
    lq_fake_buf_u64(out, body->len);
    lq_fake_buf_append(out, "\r\n", 2);
    if (cx->api) {
        lq_fake_buf_puts(out, "x-request-id: req_");
        lq_fake_buf_u64(out, cx->id);
        lq_fake_buf_append(out, "\r\n", 2);
        if (b->cfg.rate_limit > 0)
            s_ratelimit_headers(b, out);
    }
    lq_fake_buf_append(out, b->hdrs.data, b->hdrs.len);
    lq_fake_buf_append(out, "\r\n", 2);
    lq_fake_buf_append(out, body->data, body->len);
    if (cx->counted && status >= 100 && status < 600)
        b->by_status[status]++;
}

/* Writes an OpenAI-style error object into b->body. code NULL gives null. */
static void s_error_body(lq_fake_bhv_t *b, const char *message, const char *type, const char *code)
{
    lq_fake_buf_t *o = &b->body;
    o->len = 0;
    lq_fake_buf_puts(o, "{\"error\":{\"message\":");
    lq_fake_buf_json_str(o, message, strlen(message));
    lq_fake_buf_puts(o, ",\"type\":");
    lq_fake_buf_json_str(o, type, strlen(type));
    lq_fake_buf_puts(o, ",\"param\":null,\"code\":");
    if (code)
        lq_fake_buf_json_str(o, code, strlen(code));
    else
        lq_fake_buf_puts(o, "null");
    lq_fake_buf_puts(o, "}}\n");
}

/* Writes an error response (body from s_error_body) to out. */
static void s_error(lq_fake_bhv_t *b, const s_ctx_t *cx, int status, const char *message,
                    const char *type, const char *code, lq_fake_buf_t *out)
{
    s_error_body(b, message, type, code);
    s_respond(b, cx, status, &b->body, out);
}

/* Appends a protocol-level error response with Connection: close. */
void lq_fake_bhv_error(lq_fake_bhv_t *b, int status, const char *message, lq_fake_buf_t *out)
{
    s_ctx_t cx = {.keep_alive = 0, .counted = 1};
    b->requests++;
    b->hdrs.len = 0;
    s_error(b, &cx, status, message ? message : lq_fake_http_reason(status),
            "invalid_request_error", NULL, out);
}

/* ---- control endpoints ---- */

/* Writes the /stats object into b->body. */
static void s_stats_body(lq_fake_bhv_t *b)
{
    lq_fake_buf_t *o = &b->body;
    o->len = 0;
    lq_fake_buf_printf(o, "{\"requests\":%llu,\"by_status\":{", (unsigned long long)b->requests);
    int first = 1;
    for (int s = 0; s < 600; s++) {
        if (!b->by_status[s])
            continue;
        lq_fake_buf_printf(o, "%s\"%d\":%llu", first ? "" : ",", s,
                           (unsigned long long)b->by_status[s]);
        first = 0;
    }
    lq_fake_buf_printf(o,
                       "},\"dropped\":%llu,\"hung\":%llu,\"auth_failed\":%llu,\"auth_ok\":%llu,"
                       "\"inflight\":%llu,\"max_inflight\":%llu,\"distinct_ids\":%zu,"
                       "\"connections\":%llu,\"connections_accepted\":%llu}\n",
                       (unsigned long long)b->dropped, (unsigned long long)b->hung,
                       (unsigned long long)b->auth_failed, (unsigned long long)b->auth_ok,
                       (unsigned long long)b->inflight, (unsigned long long)b->max_inflight,
                       lq_fake_table_size(b->counts), (unsigned long long)b->conns_open,
                       (unsigned long long)b->conns_accepted);
}

/* lq_fake_table_foreach callback: appends "key":count, to a buffer. */
static void s_count_entry(const char *key, size_t len, uint64_t count, void *arg)
{
    lq_fake_buf_t *o = arg;
    if (o->len > 1)
        lq_fake_buf_append(o, ",", 1);
    lq_fake_buf_json_str(o, key, len);
    lq_fake_buf_append(o, ":", 1);
    lq_fake_buf_u64(o, count);
}

/* Writes the /counts object into b->body. */
static void s_counts_body(lq_fake_bhv_t *b)
{
    lq_fake_buf_t *o = &b->body;
    o->len = 0;
    lq_fake_buf_reserve(o, lq_fake_table_size(b->counts) * 24 + 4);
    lq_fake_buf_append(o, "{", 1);
    lq_fake_table_foreach(b->counts, s_count_entry, o);
    lq_fake_buf_append(o, "}\n", 2);
}

/* Clears counts and statistics (not the in-flight gauge). */
static void s_reset(lq_fake_bhv_t *b)
{
    b->requests = b->dropped = b->hung = b->auth_failed = b->auth_ok = 0;
    memset(b->by_status, 0, sizeof b->by_status);
    b->max_inflight = b->inflight;
    b->conns_accepted = b->conns_open;
    lq_fake_table_clear(b->counts);
    malloc_trim(0); /* give a million freed keys back to the system */
    b->tokens = b->burst;
    b->bucket_us = lq_mono_us();
}

/* ---- API requests ---- */

/* Returns the number of prompt characters in a string or an array of
 * strings / token ids / content parts. */
static size_t s_text_chars(const json_t *v)
{
    if (json_is_string(v))
        return json_string_length(v);
    if (json_is_integer(v))
        return 4;
    size_t n = 0;
    if (json_is_array(v)) {
        size_t i;
        const json_t *it;
        json_array_foreach(v, i, it)
        {
            if (json_is_object(it))
                n += s_text_chars(json_object_get(it, "text"));
            else if (json_is_string(it) || json_is_integer(it))
                n += s_text_chars(it);
        }
    }
    return n;
}

/* Returns the prompt characters of a request of the given kind. */
static size_t s_prompt_chars(int kind, const json_t *root)
{
    if (kind == S_COMPLETIONS)
        return s_text_chars(json_object_get(root, "prompt"));
    if (kind == S_EMBEDDINGS)
        return s_text_chars(json_object_get(root, "input"));
    size_t n = 0;
    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(root, "messages"), i, m)
    {
        n += s_text_chars(json_object_get(m, "content"));
    }
    return n;
}

/* Returns completion tokens: min(max_tokens, 16), 16 when not given. */
static uint64_t s_completion_tokens(const json_t *root)
{
    const json_t *v = json_object_get(root, "max_completion_tokens");
    if (!json_is_integer(v))
        v = json_object_get(root, "max_tokens");
    json_int_t mt = json_is_integer(v) ? json_integer_value(v) : 16;
    return mt <= 0 || mt > 16 ? 16 : (uint64_t)mt;
}

/* Writes the 200 body for kind into b->body, padding the text with pad
 * extra characters. */
static void s_ok_body(lq_fake_bhv_t *b, int kind, const json_t *root, const char *key,
                      size_t key_len, uint64_t id, size_t pad)
{
    const json_t *jm = json_object_get(root, "model");
    const char *model = json_is_string(jm) ? json_string_value(jm) : "fake-model";
    size_t model_len = json_is_string(jm) ? json_string_length(jm) : strlen(model);
    size_t chars = s_prompt_chars(kind, root);
    uint64_t pt = (chars + 3) / 4;
    if (pt < 1)
        pt = 1;
    uint64_t ct = kind == S_EMBEDDINGS ? 0 : s_completion_tokens(root);

    lq_fake_buf_t *t = &b->text;
    t->len = 0;
    lq_fake_buf_append(t, "echo:", 5);
    lq_fake_buf_append(t, key, key_len);
    if (pad > 0) {
        lq_fake_buf_reserve(t, pad);
        t->data[t->len] = ' ';
        memset(t->data + t->len + 1, 'x', pad - 1);
        t->len += pad;
    }

    lq_fake_buf_t *o = &b->body;
    o->len = 0;
    long long created = (long long)lq_wall_s();
    if (kind == S_CHAT)
        lq_fake_buf_printf(o, "{\"id\":\"chatcmpl-%016llx\",\"object\":\"chat.completion\"",
                           (unsigned long long)id);
    else if (kind == S_COMPLETIONS)
        lq_fake_buf_printf(o, "{\"id\":\"cmpl-%016llx\",\"object\":\"text_completion\"",
                           (unsigned long long)id);
    else
        lq_fake_buf_printf(o, "{\"id\":\"emb-%016llx\",\"object\":\"list\"",
                           (unsigned long long)id);
    lq_fake_buf_printf(o, ",\"created\":%lld,\"model\":", created);
    lq_fake_buf_json_str(o, model, model_len);
    if (kind == S_CHAT) {
        lq_fake_buf_puts(o, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                            "\"content\":");
        lq_fake_buf_json_str(o, t->data, t->len);
        lq_fake_buf_puts(o, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}]");
    } else if (kind == S_COMPLETIONS) {
        lq_fake_buf_puts(o, ",\"choices\":[{\"text\":");
        lq_fake_buf_json_str(o, t->data, t->len);
        lq_fake_buf_puts(o, ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]");
    } else {
        const json_t *in = json_object_get(root, "input");
        size_t n = json_is_array(in) && json_array_size(in) > 0 ? json_array_size(in) : 1;
        if (json_is_array(in) && json_is_integer(json_array_get(in, 0)))
            n = 1; /* one input given as token ids */
        if (n > 2048)
            n = 2048;
        lq_fake_buf_puts(o, ",\"echo\":");
        lq_fake_buf_json_str(o, t->data, t->len);
        lq_fake_buf_puts(o, ",\"data\":[");
        uint64_t h = lq_fnv1a64(key, key_len);
        for (size_t i = 0; i < n; i++) {
            lq_fake_buf_printf(o, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":[",
                               i ? "," : "", i);
            for (int k = 0; k < 8; k++) {
                uint64_t x = h ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)k << 56);
                x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
                double f = (double)(x >> 11) * 0x1.0p-53 * 2.0 - 1.0;
                lq_fake_buf_printf(o, "%s%.6f", k ? "," : "", f);
            }
            lq_fake_buf_puts(o, "]}");
        }
        lq_fake_buf_puts(o, "]");
    }
    lq_fake_buf_printf(o, ",\"usage\":{\"prompt_tokens\":%llu,", (unsigned long long)pt);
    if (kind != S_EMBEDDINGS)
        lq_fake_buf_printf(o, "\"completion_tokens\":%llu,", (unsigned long long)ct);
    lq_fake_buf_printf(o, "\"total_tokens\":%llu}", (unsigned long long)(pt + ct));
    if (kind == S_CHAT)
        lq_fake_buf_puts(o, ",\"system_fingerprint\":\"fp_llmq_fake\"");
    lq_fake_buf_puts(o, "}\n");
}

/* Returns 1 if the Authorization header carries "Bearer <api_key>". */
static int s_auth_ok(const lq_fake_bhv_t *b, const lq_fake_req_t *req)
{
    const char *v = req->authorization;
    size_t n = req->authorization_len;
    if (!v || n < 7 || strncasecmp(v, "bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return 0;
    size_t p = 6;
    while (p < n && (v[p] == ' ' || v[p] == '\t'))
        p++;
    size_t klen = strlen(b->cfg.api_key);
    return n - p == klen && memcmp(v + p, b->cfg.api_key, klen) == 0;
}

/* Returns 1 if the custom_id cid starts with the non-empty prefix. */
static int s_prefix(const char *cid, size_t cid_len, const char *prefix)
{
    if (!cid || !prefix || !*prefix)
        return 0;
    size_t n = strlen(prefix);
    return cid_len >= n && memcmp(cid, prefix, n) == 0;
}

/* Handles an API request of the given kind: see the order at the top. */
static void s_api(lq_fake_bhv_t *b, s_ctx_t *cx, const lq_fake_req_t *req, int kind,
                  const char *body, size_t body_len, lq_fake_buf_t *out, lq_fake_decision_t *d)
{
    d->api = 1;
    if (++b->inflight > b->max_inflight)
        b->max_inflight = b->inflight;
    cx->api = 1;
    cx->id = ++b->req_seq;

    json_error_t jerr;
    json_t *root = json_loadb(body, body_len, 0, &jerr);
    const char *cid = NULL;
    size_t cid_len = 0;
    if (json_is_object(root)) {
        const json_t *c = json_object_get(json_object_get(root, "metadata"), "custom_id");
        if (json_is_string(c)) {
            cid = json_string_value(c);
            cid_len = json_string_length(c);
        }
    }
    char hexkey[17];
    const char *key = cid;
    size_t key_len = cid_len;
    if (!cid) {
        snprintf(hexkey, sizeof hexkey, "%016llx",
                 (unsigned long long)lq_fnv1a64(body, body_len));
        key = hexkey;
        key_len = 16;
    }
    lq_fake_table_incr(b->counts, key, key_len);
    d->delay_ms = s_delay(b);

    char msg[512];
    uint64_t wait_ms = 0;
    if (b->cfg.api_key && *b->cfg.api_key) {
        if (!s_auth_ok(b, req)) {
            b->auth_failed++;
            d->status = 401;
            s_error(b, cx, 401,
                    req->authorization
                        ? "Incorrect API key provided (fake upstream)."
                        : "You didn't provide an API key. You need to provide your API key in "
                          "an Authorization header using Bearer auth.",
                    "invalid_request_error", "invalid_api_key", out);
            goto done;
        }
        b->auth_ok++;
    }
    if (!json_is_object(root)) {
        if (root)
            snprintf(msg, sizeof msg, "The request body must be a JSON object.");
        else
            snprintf(msg, sizeof msg,
                     "We could not parse the JSON body of your request: %s (line %d, column %d).",
                     jerr.text, jerr.line, jerr.column);
        d->status = 400;
        s_error(b, cx, 400, msg, "invalid_request_error", NULL, out);
        goto done;
    }
    if (b->cfg.rate_limit > 0 && !s_take(b, &wait_ms)) {
        d->delay_ms = 0;
        d->status = 429;
        if (b->cfg.retry_after_format == LQ_FAKE_RA_SECONDS) {
            lq_fake_buf_printf(&b->hdrs, "retry-after: %llu\r\nretry-after-ms: %llu\r\n",
                               (unsigned long long)((wait_ms + 999) / 1000),
                               (unsigned long long)wait_ms);
        } else if (b->cfg.retry_after_format == LQ_FAKE_RA_DATE) {
            char date[40];
            s_http_date((lq_wall_ms() + (int64_t)wait_ms + 999) / 1000, date, sizeof date);
            lq_fake_buf_printf(&b->hdrs, "retry-after: %s\r\n", date);
        }
        snprintf(msg, sizeof msg,
                 "Rate limit reached for requests (fake upstream): limit %g/s. Please try again "
                 "in %llums.",
                 b->cfg.rate_limit, (unsigned long long)wait_ms);
        s_error(b, cx, 429, msg, "requests", "rate_limit_exceeded", out);
        goto done;
    }
    if (s_prefix(cid, cid_len, b->cfg.bad_request_prefix)) {
        snprintf(msg, sizeof msg, "Invalid request for custom_id '%.200s' (--bad-request-prefix).",
                 cid);
        d->status = 400;
        s_error(b, cx, 400, msg, "invalid_request_error", "invalid_request", out);
        goto done;
    }
    if (s_prefix(cid, cid_len, b->cfg.always_fail_prefix)) {
        d->status = 500;
        s_error(b, cx, 500,
                "The server had an error while processing your request (fake upstream, "
                "--always-fail-prefix).",
                "server_error", NULL, out);
        goto done;
    }
    double u = s_uniform(b);
    double edge = b->cfg.p_drop;
    if (u < edge) {
        d->action = LQ_FAKE_DROP;
        b->dropped++;
        goto done;
    }
    if (u < (edge += b->cfg.p_hang)) {
        d->action = LQ_FAKE_HANG;
        d->delay_ms = 0;
        b->hung++;
        goto done;
    }
    if (u < (edge += b->cfg.p_500)) {
        d->status = 500;
        s_error(b, cx, 500,
                "The server had an error while processing your request (fake upstream).",
                "server_error", NULL, out);
        goto done;
    }
    if (u < (edge += b->cfg.p_503)) {
        d->status = 503;
        s_error(b, cx, 503,
                "The engine is currently overloaded, please try again later (fake "
                "upstream).",
                "server_error", "overloaded", out);
        goto done;
    }
    d->status = 200;
    s_ok_body(b, kind, root, key, key_len, cx->id, 0);
    if (b->cfg.body_bytes > 0 && b->body.len < (size_t)b->cfg.body_bytes)
        s_ok_body(b, kind, root, key, key_len, cx->id, (size_t)b->cfg.body_bytes - b->body.len);
    s_respond(b, cx, 200, &b->body, out);
done:
    json_decref(root);
}

/* Returns the API kind for a path, 0 for none. */
static int s_api_kind(const char *p, size_t n)
{
    if (n == 20 && memcmp(p, "/v1/chat/completions", 20) == 0)
        return S_CHAT;
    if (n == 15 && memcmp(p, "/v1/completions", 15) == 0)
        return S_COMPLETIONS;
    if (n == 14 && memcmp(p, "/v1/embeddings", 14) == 0)
        return S_EMBEDDINGS;
    return 0;
}

/* Returns 1 if the method is exactly m and the path exactly p. */
static int s_route(const lq_fake_req_t *req, const char *m, const char *p)
{
    size_t ml = strlen(m), pl = strlen(p);
    return req->method_len == ml && memcmp(req->method, m, ml) == 0 && req->path_len == pl &&
           memcmp(req->path, p, pl) == 0;
}

/* Handles one complete request (no HEAD special case). */
static void s_handle(lq_fake_bhv_t *b, const lq_fake_req_t *req, const char *body, size_t body_len,
                     int keep_alive, lq_fake_buf_t *out, lq_fake_decision_t *d)
{
    memset(d, 0, sizeof *d);
    s_ctx_t cx = {.keep_alive = keep_alive};
    b->hdrs.len = 0;
    if (s_route(req, "GET", "/stats")) {
        s_stats_body(b);
        d->status = 200;
        s_respond(b, &cx, 200, &b->body, out);
        return;
    }
    if (s_route(req, "GET", "/counts")) {
        s_counts_body(b);
        d->status = 200;
        s_respond(b, &cx, 200, &b->body, out);
        if (b->body.cap > (1u << 20))
            lq_fake_buf_clear(&b->body);
        return;
    }
    if (s_route(req, "POST", "/reset")) {
        s_reset(b);
        b->body.len = 0;
        lq_fake_buf_puts(&b->body, "{\"ok\":true}\n");
        d->status = 200;
        s_respond(b, &cx, 200, &b->body, out);
        return;
    }
    cx.counted = 1;
    b->requests++;
    int kind = s_api_kind(req->path, req->path_len);
    if (kind && req->method_len == 4 && memcmp(req->method, "POST", 4) == 0) {
        s_api(b, &cx, req, kind, body, body_len, out, d);
        return;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "Unknown request URL: %.*s %.*s (fake upstream).",
             (int)(req->method_len > 32 ? 32 : req->method_len), req->method,
             (int)(req->target_len > 256 ? 256 : req->target_len), req->target);
    d->status = 404;
    s_error(b, &cx, 404, msg, "invalid_request_error", "unknown_url", out);
}

/* Handles one complete request. See fake_behaviour.h. A HEAD request gets
 * the head of what GET would get, without the body. */
void lq_fake_bhv_handle(lq_fake_bhv_t *b, const lq_fake_req_t *req, const char *body,
                        size_t body_len, int keep_alive, lq_fake_buf_t *out, lq_fake_decision_t *d)
{
    size_t start = out->len;
    s_handle(b, req, body, body_len, keep_alive, out, d);
    if (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0 && out->len > start) {
        const char *end = memmem(out->data + start, out->len - start, "\r\n\r\n", 4);
        if (end)
            out->len = (size_t)(end - out->data) + 4;
    }
}
