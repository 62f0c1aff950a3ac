/* fake_http: see fake_http.h. The parser is a single forward pass over the
 * head, line by line; it is re-run from the start of the request when more
 * bytes arrive (heads are small and bounded by LQ_FAKE_HTTP_MAX_HEAD, so
 * that costs little and keeps the parser stateless). */
#define _GNU_SOURCE
#include "fake_http.h"

#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- buffer ---- */

/* Grows b so that extra more bytes fit. Aborts on out-of-memory. */
void lq_fake_buf_reserve(lq_fake_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

/* Appends n bytes of p. Can't fail. */
void lq_fake_buf_append(lq_fake_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    lq_fake_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Appends the string s without its NUL. Can't fail. */
void lq_fake_buf_puts(lq_fake_buf_t *b, const char *s)
{
    lq_fake_buf_append(b, s, strlen(s));
}

/* Appends v in decimal, without going through printf. Can't fail. */
void lq_fake_buf_u64(lq_fake_buf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    lq_fake_buf_append(b, tmp + i, sizeof tmp - i);
}

/* Appends printf-formatted text. Can't fail. */
void lq_fake_buf_printf(lq_fake_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        lq_fake_buf_append(b, small, (size_t)n);
        return;
    }
    lq_fake_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends s[0..n) as a JSON string literal. Can't fail. */
void lq_fake_buf_json_str(lq_fake_buf_t *b, const char *s, size_t n)
{
    lq_fake_buf_reserve(b, lq_json_escaped_len(s, n));
    b->len += lq_json_escape(b->data + b->len, s, n);
}

/* Frees the bytes and zeroes b. Safe on a zeroed buffer. */
void lq_fake_buf_clear(lq_fake_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- parser ---- */

/* Returns 1 if c may appear in a token (RFC 9110 5.6.2 tchar). */
static int s_tchar(unsigned char c)
{
    if (c >= 'a' && c <= 'z')
        return 1;
    if (c >= 'A' && c <= 'Z')
        return 1;
    if (c >= '0' && c <= '9')
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Returns 1 if the n bytes at s equal the lowercase literal lit, ignoring
 * ASCII case. */
static int s_ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Finds the next line of buf[pos..len). Returns 1 and sets [*ls, *le) to
 * the line without its CRLF/LF and *next to the byte after the LF; 0 if no
 * LF yet; -1 if the line contains a CR that is not right before the LF. */
static int s_line(const char *buf, size_t len, size_t pos, size_t *ls, size_t *le, size_t *next)
{
    const char *lf = memchr(buf + pos, '\n', len - pos);
    if (!lf)
        return 0;
    size_t end = (size_t)(lf - buf);
    *next = end + 1;
    if (end > pos && buf[end - 1] == '\r')
        end--;
    if (memchr(buf + pos, '\r', end - pos))
        return -1;
    *ls = pos;
    *le = end;
    return 1;
}

/* Parses the request line [s, e) into req. Returns DONE, BAD or
 * BAD_VERSION. */
static lq_fake_http_rc_t s_request_line(const char *buf, size_t s, size_t e, lq_fake_req_t *req,
                                        const char **why)
{
    size_t p = s;
    while (p < e && s_tchar((unsigned char)buf[p]))
        p++;
    if (p == s || p >= e || buf[p] != ' ') {
        *why = "malformed method";
        return LQ_FAKE_HTTP_BAD;
    }
    req->method = buf + s;
    req->method_len = p - s;
    size_t t = ++p;
    while (p < e && (unsigned char)buf[p] > 0x20 && (unsigned char)buf[p] != 0x7f)
        p++;
    if (p == t || p >= e || buf[p] != ' ') {
        *why = "malformed request target";
        return LQ_FAKE_HTTP_BAD;
    }
    req->target = buf + t;
    req->target_len = p - t;
    p++;
    size_t vlen = e - p;
    const char *v = buf + p;
    if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9') {
        *why = "malformed HTTP version";
        return LQ_FAKE_HTTP_BAD;
    }
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
        *why = "unsupported HTTP version";
        return LQ_FAKE_HTTP_BAD_VERSION;
    }
    req->version_minor = v[7] - '0';

    /* The path: origin-form "/a/b?q", absolute-form "http://h/a/b?q" or "*". */
    const char *tp = req->target;
    size_t tl = req->target_len;
    if (tp[0] != '/' && !(tl == 1 && tp[0] == '*')) {
        const char *sep = memmem(tp, tl, "://", 3);
        if (!sep) {
            *why = "malformed request target";
            return LQ_FAKE_HTTP_BAD;
        }
        size_t off = (size_t)(sep - tp) + 3;
        const char *slash = memchr(tp + off, '/', tl - off);
        if (slash) {
            tl -= (size_t)(slash - tp);
            tp = slash;
        } else {
            tp = "/";
            tl = 1;
        }
    }
    size_t pl = 0;
    while (pl < tl && tp[pl] != '?' && tp[pl] != '#')
        pl++;
    req->path = tp;
    req->path_len = pl;
    return LQ_FAKE_HTTP_DONE;
}

/* Parses a Content-Length value. Returns its value, or -1 if it is not a
 * plain decimal of at most 18 digits. */
static int64_t s_content_length(const char *v, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* Scans a comma-separated Connection value for "close" and "keep-alive". */
static void s_connection(const char *v, size_t n, int *close, int *keep)
{
    size_t p = 0;
    while (p < n) {
        while (p < n && (v[p] == ' ' || v[p] == '\t' || v[p] == ','))
            p++;
        size_t s = p;
        while (p < n && v[p] != ',')
            p++;
        size_t e = p;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (s_ieq(v + s, e - s, "close"))
            *close = 1;
        else if (s_ieq(v + s, e - s, "keep-alive"))
            *keep = 1;
    }
}

/* Parses one header line [s, e) into req. Returns DONE or BAD. */
static lq_fake_http_rc_t s_header(const char *buf, size_t s, size_t e, lq_fake_req_t *req,
                                  int *close, int *keep, const char **why)
{
    size_t p = s;
    while (p < e && s_tchar((unsigned char)buf[p]))
        p++;
    if (p == s || p >= e || buf[p] != ':') {
        *why = (buf[s] == ' ' || buf[s] == '\t') ? "obsolete header line folding"
                                                 : "malformed header field";
        return LQ_FAKE_HTTP_BAD;
    }
    const char *name = buf + s;
    size_t nlen = p - s;
    p++;
    while (p < e && (buf[p] == ' ' || buf[p] == '\t'))
        p++;
    size_t ve = e;
    while (ve > p && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
        ve--;
    const char *v = buf + p;
    size_t vlen = ve - p;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *why = "control character in header value";
            return LQ_FAKE_HTTP_BAD;
        }
    }
    switch (name[0] | 0x20) {
    case 'a':
        if (s_ieq(name, nlen, "authorization")) {
            req->authorization = v;
            req->authorization_len = vlen;
        }
        break;
    case 'c':
        if (s_ieq(name, nlen, "content-length")) {
            int64_t cl = s_content_length(v, vlen);
            if (cl < 0 || (req->content_length >= 0 && req->content_length != cl)) {
                *why = "invalid Content-Length";
                return LQ_FAKE_HTTP_BAD;
            }
            req->content_length = cl;
        } else if (s_ieq(name, nlen, "connection")) {
            s_connection(v, vlen, close, keep);
        }
        break;
    case 'e':
        if (s_ieq(name, nlen, "expect") && s_ieq(v, vlen, "100-continue"))
            req->expect_continue = 1;
        break;
    case 't':
        if (s_ieq(name, nlen, "transfer-encoding"))
            req->transfer_encoding = 1;
        break;
    }
    return LQ_FAKE_HTTP_DONE;
}

/* Parses one request head from buf[0..len). See fake_http.h. */
lq_fake_http_rc_t lq_fake_http_parse(const char *buf, size_t len, lq_fake_req_t *req,
                                     const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(req, 0, sizeof *req);
    req->content_length = -1;

    size_t pos = 0;
    while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n')) {
        if (++pos > 16) {
            *why = "too many empty lines before the request";
            return LQ_FAKE_HTTP_BAD;
        }
    }
    /* Reject garbage early: the method must be a token followed by a space. */
    for (size_t i = pos; i < len && buf[i] != ' '; i++) {
        if (!s_tchar((unsigned char)buf[i]) || i - pos > 32) {
            *why = "malformed method";
            return LQ_FAKE_HTTP_BAD;
        }
    }

    size_t ls, le, next;
    int r = s_line(buf, len, pos, &ls, &le, &next);
    if (r < 0) {
        *why = "stray CR in request line";
        return LQ_FAKE_HTTP_BAD;
    }
    if (r == 0)
        goto incomplete;
    lq_fake_http_rc_t rc = s_request_line(buf, ls, le, req, why);
    if (rc != LQ_FAKE_HTTP_DONE)
        return rc;

    int close = 0, keep = 0;
    for (;;) {
        pos = next;
        r = s_line(buf, len, pos, &ls, &le, &next);
        if (r < 0) {
            *why = "stray CR in header";
            return LQ_FAKE_HTTP_BAD;
        }
        if (r == 0)
            goto incomplete;
        if (next > LQ_FAKE_HTTP_MAX_HEAD) {
            *why = "request head too large";
            return LQ_FAKE_HTTP_TOO_LARGE;
        }
        if (ls == le)
            break; /* the blank line */
        if (++req->nheaders > LQ_FAKE_HTTP_MAX_HEADERS) {
            *why = "too many header fields";
            return LQ_FAKE_HTTP_TOO_LARGE;
        }
        rc = s_header(buf, ls, le, req, &close, &keep, why);
        if (rc != LQ_FAKE_HTTP_DONE)
            return rc;
    }
    req->head_len = next;
    req->keep_alive = req->version_minor >= 1 ? !close : (keep && !close);
    return LQ_FAKE_HTTP_DONE;

incomplete:
    if (len > LQ_FAKE_HTTP_MAX_HEAD) {
        *why = "request head too large";
        return LQ_FAKE_HTTP_TOO_LARGE;
    }
    return LQ_FAKE_HTTP_INCOMPLETE;
}

/* Returns the reason phrase for status. Can't fail. */
const char *lq_fake_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
