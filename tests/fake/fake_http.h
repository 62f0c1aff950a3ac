/* fake_http: the HTTP/1.1 request-head parser and the growable byte buffer
 * of the fake upstream (llmq-fake-upstream).
 *
 * Pure code, no sockets and no global state: the connection module
 * (fake_conn.c) feeds it the bytes it has read, the unit test
 * (tests/unit/test_fake_http.c) feeds it crafted input. The parser never
 * allocates; the fields it fills point into the caller's buffer and live as
 * long as those bytes do. A buffer owns its bytes. */
#ifndef LQ_FAKE_HTTP_H
#define LQ_FAKE_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Largest request head (request line + headers) we accept: 431 above it. */
#define LQ_FAKE_HTTP_MAX_HEAD 65536
/* Most header fields in one request: 431 above it. */
#define LQ_FAKE_HTTP_MAX_HEADERS 100

/* A growable byte buffer. Zero-initialise it ({0}); free with
 * lq_fake_buf_clear(). data is not NUL-terminated unless you append one. */
typedef struct {
    char *data;
    size_t len, cap;
} lq_fake_buf_t;

/* Makes room for at least extra more bytes. Aborts on out-of-memory. */
void lq_fake_buf_reserve(lq_fake_buf_t *b, size_t extra);
/* Appends n bytes. Can't fail (aborts on out-of-memory). */
void lq_fake_buf_append(lq_fake_buf_t *b, const void *p, size_t n);
/* Appends a NUL-terminated string (without the NUL). Can't fail. */
void lq_fake_buf_puts(lq_fake_buf_t *b, const char *s);
/* Appends the decimal form of v. Can't fail. */
void lq_fake_buf_u64(lq_fake_buf_t *b, uint64_t v);
/* Appends printf-formatted text. Can't fail. */
void lq_fake_buf_printf(lq_fake_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a quoted JSON string, escaping '"', '\\' and control
 * bytes; other bytes (UTF-8) pass through. Can't fail. */
void lq_fake_buf_json_str(lq_fake_buf_t *b, const char *s, size_t n);
/* Frees the bytes and zeroes the buffer. Safe on a zeroed buffer. */
void lq_fake_buf_clear(lq_fake_buf_t *b);

typedef enum {
    LQ_FAKE_HTTP_INCOMPLETE = 0,   /* need more bytes */
    LQ_FAKE_HTTP_DONE = 1,         /* the head is complete and valid */
    LQ_FAKE_HTTP_BAD = -1,         /* malformed: answer 400 and close */
    LQ_FAKE_HTTP_TOO_LARGE = -2,   /* head or header count over the limit: 431 */
    LQ_FAKE_HTTP_BAD_VERSION = -3, /* well-formed but not HTTP/1.0 or 1.1: 505 */
} lq_fake_http_rc_t;

/* One parsed request head. Pointers point into the parsed buffer. */
typedef struct {
    const char *method;
    size_t method_len;
    const char *target; /* the request-target as sent */
    size_t target_len;
    const char *path; /* its path, without scheme://authority, query or fragment */
    size_t path_len;
    int version_minor;         /* 0 or 1 (HTTP/1.x) */
    size_t head_len;           /* bytes up to and including the blank line */
    int64_t content_length;    /* -1 when absent */
    int keep_alive;            /* from the version and the Connection header */
    int transfer_encoding;     /* a Transfer-Encoding header was present */
    int expect_continue;       /* Expect: 100-continue */
    const char *authorization; /* value of Authorization, or NULL */
    size_t authorization_len;
    int nheaders;
} lq_fake_req_t;

/* Parses the request head at the start of buf[0..len). Leading empty lines
 * are skipped (RFC 9112 2.2). Bare LF line ends are accepted, a CR not
 * followed by LF is not. Returns one of lq_fake_http_rc_t; on DONE fills
 * *req; on an error sets *why (a static string) when why is not NULL.
 * Never reads past buf + len. */
lq_fake_http_rc_t lq_fake_http_parse(const char *buf, size_t len, lq_fake_req_t *req,
                                     const char **why);

/* Returns the reason phrase for an HTTP status ("OK", "Not Found", ...);
 * "Unknown" for codes it does not know. Can't fail. */
const char *lq_fake_http_reason(int status);

#endif
