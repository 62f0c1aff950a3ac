/* jobline: see jobline.h. */
#include "client/jobline.h"

#include "client/jobscan.h"

#include "common/utf8.h"
#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_OUT_TOKENS (1ll << 40) /* clamp for absurd max_tokens values */
#define S_MAX_DEPTH 16               /* of the token-estimate walk */

/* Stores a formatted error (column col, 0 = none) in jl. Returns -1. */
static int s_fail(lq_jobline_t *jl, long long col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_fail(lq_jobline_t *jl, long long col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(jl->err, sizeof jl->err, fmt, ap);
    va_end(ap);
    jl->col = col;
    return -1;
}

/* "a string", "an array", ... for messages. Can't fail. */
static const char *s_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* The span finder below runs on text jansson has already accepted, so it
 * only has to skip, not to validate; it still never reads past e. */
/* Skips JSON whitespace from p; returns the first other byte (or e). */
static const char *s_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* p at an opening quote; returns the position after the closing one. */
static const char *s_skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return e;
}

/* Returns the position after the JSON value starting at p. */
static const char *s_skip_value(const char *p, const char *e)
{
    if (p < e && *p == '"')
        return s_skip_string(p, e);
    if (p < e && (*p == '{' || *p == '[')) {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = s_skip_string(p, e);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return e;
    }
    while (p < e && !strchr(",}] \t\r\n", *p))
        p++;
    return p;
}

/* Finds the value of the top-level key "body" in the object text p[0..n).
 * Returns its start and sets *len, or NULL if the key is not written
 * literally (then *escaped tells whether some key used escapes). */
static char *s_body_span(char *p, size_t n, size_t *len, int *escaped)
{
    const char *e = p + n, *q = s_ws(p, e);
    *escaped = 0;
    if (q >= e || *q != '{')
        return NULL;
    for (q++;;) {
        q = s_ws(q, e);
        if (q >= e || *q != '"')
            return NULL;
        const char *k = q + 1;
        q = s_skip_string(q, e);
        size_t klen = (size_t)(q - k) - 1;
        if (memchr(k, '\\', klen))
            *escaped = 1;
        q = s_ws(q, e);
        if (q >= e || *q != ':')
            return NULL;
        const char *v = s_ws(q + 1, e);
        q = s_skip_value(v, e);
        if (klen == 4 && memcmp(k, "body", 4) == 0) {
            *len = (size_t)(q - v);
            return p + (v - p);
        }
        q = s_ws(q, e);
        if (q >= e || *q != ',')
            return NULL;
        q++;
    }
}

/* Characters of prompt text under v (see the walk in jobline.h). */
static int64_t s_chars(const json_t *v, int depth)
{
    if (!v || depth > S_MAX_DEPTH)
        return 0;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return (int64_t)lq_utf8_chars(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return 4;
    case JSON_ARRAY: {
        int64_t c = 0;
        for (size_t i = 0; i < json_array_size(v); i++)
            c += s_chars(json_array_get(v, i), depth + 1);
        return c;
    }
    case JSON_OBJECT:
        return s_chars(json_object_get(v, "text"), depth + 1) +
               s_chars(json_object_get(v, "content"), depth + 1);
    default:
        return 0;
    }
}

int64_t lq_jobline_estimate(const char *url, const json_t *body)
{
    static const char *in_keys[] = {"messages", "prompt", "input"};
    static const char *out_keys[] = {"max_completion_tokens", "max_tokens", "max_output_tokens"};
    int64_t chars = 0, out = -1;
    for (size_t i = 0; i < sizeof in_keys / sizeof *in_keys; i++)
        chars += s_chars(json_object_get(body, in_keys[i]), 0);
    for (size_t i = 0; i < sizeof out_keys / sizeof *out_keys && out < 0; i++) {
        json_t *v = json_object_get(body, out_keys[i]);
        if (json_is_integer(v)) {
            json_int_t t = json_integer_value(v);
            out = t < 0 ? 0 : t > S_MAX_OUT_TOKENS ? S_MAX_OUT_TOKENS : t;
        }
    }
    if (out < 0)
        out = (url && strstr(url, "/embeddings")) ? 0 : 16;
    json_t *nv = json_object_get(body, "n");
    if (json_is_integer(nv) && json_integer_value(nv) > 1)
        out *= json_integer_value(nv) > 128 ? 128 : json_integer_value(nv);
    return (chars + 3) / 4 + out;
}

/* Checks a field of the line object; returns its value or NULL with jl->err set. */
static json_t *s_string_field(lq_jobline_t *jl, json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        s_fail(jl, 0, "missing \"%s\"", key);
    else if (!json_is_string(v))
        s_fail(jl, 0, "\"%s\" must be a string, not %s", key, s_type(v));
    else
        return v;
    return NULL;
}

/* Clears jl and checks that the line p[0..n) is valid UTF-8. Returns 0,
 * or -1 with jl->err and the column. */
static int s_start(lq_jobline_t *jl, const char *p, size_t n)
{
    lq_jobline_clear(jl);
    long long col;
    const char *why;
    if (lq_utf8_check(p, n, &col, &why) < 0)
        return s_fail(jl, col, "invalid UTF-8 (%s)", why);
    return 0;
}

/* lq_jobline_parse_json() after s_start(): jansson and the field rules. */
static int s_parse_json(lq_jobline_t *jl, char *p, size_t n);

int lq_jobline_parse(lq_jobline_t *jl, char *p, size_t n)
{
    if (s_start(jl, p, n) < 0)
        return -1;
    if (lq_jobscan(p, n, &jl->spec))
        return 0; /* the fast path: certainly valid */
    return s_parse_json(jl, p, n);
}

int lq_jobline_parse_json(lq_jobline_t *jl, char *p, size_t n)
{
    if (s_start(jl, p, n) < 0)
        return -1;
    return s_parse_json(jl, p, n);
}

static int s_parse_json(lq_jobline_t *jl, char *p, size_t n)
{
    json_error_t e;
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!root)
        return s_fail(jl, e.column > 0 ? e.column : 1, "invalid JSON: %s", e.text);
    jl->root_ = root;
    if (!json_is_object(root))
        return s_fail(jl, 0, "line is not a JSON object (it is %s)", s_type(root));

    json_t *id = s_string_field(jl, root, "custom_id");
    if (!id)
        return -1;
    size_t idlen = json_string_length(id);
    if (idlen == 0)
        return s_fail(jl, 0, "\"custom_id\" is empty");
    if (idlen > LQ_MAX_CUSTOM_ID)
        return s_fail(jl, 0, "\"custom_id\" is too long (%zu bytes, limit %d)", idlen,
                      LQ_MAX_CUSTOM_ID);

    json_t *method = s_string_field(jl, root, "method");
    if (!method)
        return -1;
    if (strcmp(json_string_value(method), "POST") != 0)
        return s_fail(jl, 0, "\"method\" must be \"POST\", not \"%.16s\"",
                      json_string_value(method));

    json_t *url = s_string_field(jl, root, "url");
    if (!url)
        return -1;
    const char *u = json_string_value(url);
    size_t ulen = json_string_length(url);
    if (u[0] != '/')
        return s_fail(jl, 0, "\"url\" must start with \"/\" (a path such as /v1/chat/completions)");
    if (ulen > LQ_MAX_URL)
        return s_fail(jl, 0, "\"url\" is too long (%zu bytes, limit %d)", ulen, LQ_MAX_URL);
    for (size_t i = 0; i < ulen; i++)
        if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f)
            return s_fail(jl, 0, "\"url\" contains a space or control character");

    json_t *body = json_object_get(root, "body");
    if (!body)
        return s_fail(jl, 0, "missing \"body\"");
    if (!json_is_object(body))
        return s_fail(jl, 0, "\"body\" must be a JSON object, not %s", s_type(body));

    size_t blen = 0;
    int escaped = 0;
    char *span = s_body_span(p, n, &blen, &escaped);
    if (span && blen >= 2 && span[0] == '{' && span[blen - 1] == '}') {
        span[blen] = '\0'; /* after the body comes at least the line's closing '}' */
        jl->spec.body = span;
    } else {
        /* The key was written with escapes ("b\u006fdy"): re-serialise. */
        jl->heap_ = json_dumps(body, JSON_COMPACT);
        if (!jl->heap_)
            return s_fail(jl, 0, "out of memory serialising \"body\"");
        blen = strlen(jl->heap_);
        jl->spec.body = jl->heap_;
    }
    if (blen > LQ_MAX_JOB_BODY)
        return s_fail(jl, 0, "\"body\" is too large (%zu bytes, limit %u)", blen, LQ_MAX_JOB_BODY);

    jl->spec.custom_id = json_string_value(id);
    jl->spec.url = u;
    jl->spec.body_len = blen;
    jl->spec.est_tokens = lq_jobline_estimate(u, body);
    return 0;
}

/* {"role":role,"content":text} appended to arr; 0 or -1 on OOM. */
static int s_add_message(json_t *arr, const char *role, const char *text, size_t len)
{
    json_t *m = json_object();
    json_t *c = json_stringn_nocheck(text, len);
    if (!m || !c || json_object_set_new(m, "role", json_string(role)) < 0 ||
        json_object_set_new(m, "content", c) < 0) {
        json_decref(m);
        return -1;
    }
    return json_array_append_new(arr, m);
}

int lq_jobline_prompt(lq_jobline_t *jl, const char *p, size_t n, long long line, const char *model,
                      const char *system, long long max_tokens)
{
    if (s_start(jl, p, n) < 0)
        return -1;
    long long col;
    const char *why;
    if (!model || lq_utf8_check(model, strlen(model), &col, &why) < 0 ||
        (system && lq_utf8_check(system, strlen(system), &col, &why) < 0))
        return s_fail(jl, 0, "the model or system text is missing or not valid UTF-8");

    json_t *body = json_object();
    json_t *msgs = json_array();
    int rc = (body && msgs) ? 0 : -1;
    if (rc == 0)
        rc = json_object_set_new(body, "model", json_string_nocheck(model));
    if (rc == 0 && system)
        rc = s_add_message(msgs, "system", system, strlen(system));
    if (rc == 0)
        rc = s_add_message(msgs, "user", p, n);
    if (rc == 0)
        rc = json_object_set(body, "messages", msgs);
    if (rc == 0 && max_tokens > 0)
        rc = json_object_set_new(body, "max_tokens", json_integer(max_tokens));
    if (rc == 0)
        jl->heap_ = json_dumps(body, JSON_COMPACT);
    json_decref(msgs);
    json_decref(body);
    if (!jl->heap_)
        return s_fail(jl, 0, "out of memory building the request");

    size_t blen = strlen(jl->heap_);
    if (blen > LQ_MAX_JOB_BODY)
        return s_fail(jl, 0, "request body is too large (%zu bytes, limit %u)", blen,
                      LQ_MAX_JOB_BODY);
    int64_t chars = (int64_t)lq_utf8_chars(p, n);
    if (system)
        chars += (int64_t)lq_utf8_chars(system, strlen(system));
    snprintf(jl->id_, sizeof jl->id_, "line-%lld", line);
    jl->spec.custom_id = jl->id_;
    jl->spec.url = "/v1/chat/completions";
    jl->spec.body = jl->heap_;
    jl->spec.body_len = blen;
    jl->spec.est_tokens = (chars + 3) / 4 + (max_tokens > 0 ? max_tokens : 16);
    return 0;
}

void lq_jobline_clear(lq_jobline_t *jl)
{
    json_decref(jl->root_);
    free(jl->heap_);
    memset(jl, 0, sizeof *jl);
}
