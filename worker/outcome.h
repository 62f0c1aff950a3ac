/* outcome: turns what one HTTP attempt produced into what the worker
 * reports: OK / RETRYABLE / FATAL, an error code and message, the token
 * usage, and a response body that is always valid JSON text.
 *
 * Pure functions, no I/O: a 2xx body is checked and its usage read by one
 * scan that builds nothing (jsonscan.h); jansson parses error bodies only.
 * The caller owns the inputs; lq_outcome_res_t owns its strings until
 * lq_outcome_res_clear().
 *
 * Classification (the contract with the broker's retry logic):
 *   body over --max-response-bytes          FATAL     response_too_large
 *   curl timeout                            RETRYABLE timeout
 *   malformed URL / unsupported protocol    FATAL     invalid_url
 *   any other transport error (refused,
 *     reset, DNS, TLS, empty reply, partial
 *     body, send/recv errors, HTTP/2 ...)   RETRYABLE connection_error
 *   2xx                                     OK
 *   408, 409, 429, 5xx                      RETRYABLE http_<status>
 *   other 4xx, 1xx, 3xx, >= 600             FATAL     http_<status>
 * Error messages: the body's error.message, else its top-level "message",
 * else "error" when that is a string, else "HTTP <status>[: text]".
 * The body: valid JSON is kept verbatim (line breaks, which valid JSON can
 * only hold as whitespace, become spaces so the text is one line); any
 * other text is encoded as a JSON string; an empty body gives NULL. A
 * transport error or an oversized body reports no body. */
#ifndef LQ_WORKER_OUTCOME_H
#define LQ_WORKER_OUTCOME_H

#include <stddef.h>
#include <stdint.h>

/* Error messages are cut to this many bytes (on a UTF-8 boundary). */
#define LQ_ERROR_MESSAGE_MAX 1024

typedef struct {
    int curl_code;           /* CURLcode of the transfer; 0 = completed */
    const char *curl_detail; /* CURLOPT_ERRORBUFFER text; NULL or "" if none */
    long status;             /* HTTP status seen, 0 if none */
    const char *body;        /* response body bytes (not NUL-terminated) */
    size_t body_len;
    int too_large; /* the body hit the size cap and the transfer was aborted */
} lq_outcome_in_t;

typedef struct {
    int outcome;         /* lq_outcome_t */
    char *error_code;    /* NULL on OK */
    char *error_message; /* NULL on OK; valid UTF-8, one line */
    char *body;          /* valid JSON text, or NULL */
    size_t body_len;
    int64_t prompt_tokens, completion_tokens; /* -1 unknown */
} lq_outcome_res_t;

/* Classifies one attempt into *out (overwritten; clear it afterwards).
 * Can't fail. */
void lq_outcome_classify(const lq_outcome_in_t *in, lq_outcome_res_t *out);

/* Fills *out with a result that involved no HTTP at all (unknown upstream,
 * bad url, worker overloaded): copies code and message. Can't fail. */
void lq_outcome_local(lq_outcome_res_t *out, int outcome, const char *code, const char *message);

/* Frees what *r owns and resets it. Safe on a zeroed struct. */
void lq_outcome_res_clear(lq_outcome_res_t *r);

/* Returns body as one line of valid JSON text (see above), or NULL when the
 * body is empty or only whitespace. Stores the length in *out_len. The
 * caller frees the result. */
char *lq_json_body(const char *body, size_t len, size_t *out_len);

/* Encodes bytes as a JSON string literal (quotes included); invalid UTF-8
 * becomes U+FFFD. The caller frees the result. Can't fail. */
char *lq_json_quote(const char *s, size_t len, size_t *out_len);

#endif
