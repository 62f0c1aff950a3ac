/* outcome: see outcome.h. */
#include "outcome.h"

#include "../common/utf8.h"
#include "../common/util.h"
#include "../proto/msg.h"
#include "jsonscan.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *lq_json_quote(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    /* Worst case: every byte becomes \uFFFD (6 bytes). */
    char *out = xmalloc(len * 6 + 3);
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len;) {
        size_t n = lq_utf8_seq(u + i, len - i, NULL);
        if (n == 0) {
            memcpy(out + o, "\\ufffd", 6);
            o += 6;
            i++;
            continue;
        }
        unsigned char c = u[i];
        if (n > 1) {
            memcpy(out + o, s + i, n);
            o += n;
        } else if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, 7, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
        i += n;
    }
    out[o++] = '"';
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* Parses body as any JSON value. Returns a new reference or NULL. */
static json_t *s_parse(const char *body, size_t len)
{
    if (len == 0)
        return NULL;
    json_error_t err;
    return json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
}

/* Like lq_json_body() but told whether body is valid JSON. */
static char *s_json_body(const char *body, size_t len, int parsed, size_t *out_len)
{
    size_t a = 0, b = len;
    while (a < b && (body[a] == ' ' || body[a] == '\t' || body[a] == '\r' || body[a] == '\n'))
        a++;
    while (b > a && (body[b - 1] == ' ' || body[b - 1] == '\t' || body[b - 1] == '\r' ||
                     body[b - 1] == '\n'))
        b--;
    if (a == b) {
        *out_len = 0;
        return NULL;
    }
    if (!parsed)
        return lq_json_quote(body + a, b - a, out_len);
    /* Valid JSON can hold CR/LF only as insignificant whitespace. */
    char *out = xstrndup(body + a, b - a);
    char *end = out + (b - a); /* not strpbrk: jansson lets a NUL through */
    for (char *p = out; (p = memchr(p, '\n', (size_t)(end - p))) != NULL;)
        *p++ = ' ';
    for (char *p = out; (p = memchr(p, '\r', (size_t)(end - p))) != NULL;)
        *p++ = ' ';
    *out_len = b - a;
    return out;
}

/* 1 when body is one JSON text (jansson's verdict, usually reached by the
 * scan alone), else 0. Fills *u (may be NULL) as lq_json_scan does. */
static int s_is_json(const char *body, size_t len, lq_json_usage_t *u)
{
    if (len == 0)
        return 0;
    int r = lq_json_scan(body, len, u);
    if (r >= 0)
        return r;
    json_t *j = s_parse(body, len);
    json_decref(j);
    return j != NULL;
}

char *lq_json_body(const char *body, size_t len, size_t *out_len)
{
    return s_json_body(body, len, s_is_json(body, len, NULL), out_len);
}

/* Finds an error message in a parsed error body, in this order:
 * error.message (OpenAI's shape), a top-level "message", then "error" when it
 * is itself a string (a short code such as "rate_limited" loses to a message
 * that explains it). Returns a borrowed string or NULL. */
static const char *s_body_message(const json_t *j, size_t *len)
{
    if (!json_is_object(j))
        return NULL;
    const json_t *e = json_object_get(j, "error");
    const json_t *cands[3] = {json_is_object(e) ? json_object_get(e, "message") : NULL,
                              json_object_get(j, "message"), e};
    for (size_t i = 0; i < 3; i++) {
        if (json_is_string(cands[i]) && json_string_length(cands[i]) > 0) {
            *len = json_string_length(cands[i]);
            return json_string_value(cands[i]);
        }
    }
    return NULL;
}

void lq_outcome_local(lq_outcome_res_t *out, int outcome, const char *code, const char *message)
{
    memset(out, 0, sizeof *out);
    out->outcome = outcome;
    out->error_code = xstrdup(code);
    out->error_message = lq_utf8_clean(message, strlen(message), LQ_ERROR_MESSAGE_MAX);
    out->prompt_tokens = -1;
    out->completion_tokens = -1;
}

/* Fills a transport-error result from a CURLcode. Can't fail. */
static void s_transport(const lq_outcome_in_t *in, lq_outcome_res_t *out)
{
    CURLcode cc = (CURLcode)in->curl_code;
    const char *code = "connection_error";
    int outcome = LQ_OUTCOME_RETRYABLE;
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        code = "timeout";
    } else if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL) {
        code = "invalid_url";
        outcome = LQ_OUTCOME_FATAL;
    }
    const char *detail = in->curl_detail && in->curl_detail[0] ? in->curl_detail : NULL;
    char *msg = detail ? xasprintf("%s: %s", curl_easy_strerror(cc), detail)
                       : xasprintf("%s", curl_easy_strerror(cc));
    lq_outcome_local(out, outcome, code, msg);
    free(msg);
}

/* Replaces *out by a response_too_large failure when its body is over
 * what a result message can carry. Returns 1 when it did. */
static int s_body_too_large(lq_outcome_res_t *out)
{
    if (out->body_len <= LQ_MAX_TEXT)
        return 0;
    lq_outcome_res_clear(out);
    lq_outcome_local(out, LQ_OUTCOME_FATAL, "response_too_large",
                     "response body too large for a result message once encoded");
    return 1;
}

/* A 2xx: OK, the body as JSON text and the token usage, from one scan
 * that builds nothing (jsonscan.h). Can't fail. */
static void s_classify_ok(const lq_outcome_in_t *in, lq_outcome_res_t *out)
{
    lq_json_usage_t u;
    int valid = s_is_json(in->body, in->body_len, &u);
    out->body = s_json_body(in->body, in->body_len, valid, &out->body_len);
    if (s_body_too_large(out))
        return;
    out->outcome = LQ_OUTCOME_OK;
    if (valid) {
        out->prompt_tokens = u.prompt_tokens >= 0 ? u.prompt_tokens : u.input_tokens;
        out->completion_tokens =
            u.completion_tokens >= 0 ? u.completion_tokens : u.output_tokens;
    }
}

void lq_outcome_classify(const lq_outcome_in_t *in, lq_outcome_res_t *out)
{
    memset(out, 0, sizeof *out);
    out->prompt_tokens = -1;
    out->completion_tokens = -1;
    if (in->too_large) {
        lq_outcome_local(out, LQ_OUTCOME_FATAL, "response_too_large",
                         "response body exceeded the worker's --max-response-bytes");
        return;
    }
    if (in->curl_code != 0) {
        s_transport(in, out);
        return;
    }
    long st = in->status;
    if (st <= 0) {
        lq_outcome_local(out, LQ_OUTCOME_RETRYABLE, "connection_error",
                         "no HTTP status in the response");
        return;
    }
    if (st >= 200 && st <= 299) {
        s_classify_ok(in, out);
        return;
    }
    json_t *j = s_parse(in->body, in->body_len);
    out->body = s_json_body(in->body, in->body_len, j != NULL, &out->body_len);
    if (s_body_too_large(out)) {
        json_decref(j);
        return;
    }
    int retryable = st == 408 || st == 409 || st == 429 || (st >= 500 && st <= 599);
    out->outcome = retryable ? LQ_OUTCOME_RETRYABLE : LQ_OUTCOME_FATAL;
    out->error_code = xasprintf("http_%ld", st);
    size_t mlen = 0;
    const char *m = s_body_message(j, &mlen);
    if (m) {
        out->error_message = lq_utf8_clean(m, mlen, LQ_ERROR_MESSAGE_MAX);
    } else if (!j && in->body_len > 0) {
        char *snippet = lq_utf8_clean(in->body, in->body_len, 200);
        out->error_message = xasprintf("HTTP %ld: %s", st, snippet);
        free(snippet);
    } else {
        out->error_message = xasprintf("HTTP %ld", st);
    }
    json_decref(j);
}

void lq_outcome_res_clear(lq_outcome_res_t *r)
{
    free(r->error_code);
    free(r->error_message);
    free(r->body);
    memset(r, 0, sizeof *r);
    r->prompt_tokens = -1;
    r->completion_tokens = -1;
}
