/* jsonscan: a validating JSON scanner that builds nothing, for the one thing
 * the worker needs from a successful response: is the body one JSON text,
 * and what does its top-level "usage" object say.
 *
 * Pure, no allocation, no I/O: one pass over the bytes with a fixed-size
 * nesting stack. Accepts what jansson's json_loadb(JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) accepts (RFC 8259 text, any value at the top, UTF-8
 * strings, \u0000, surrogate pairs only in pairs, at most
 * LQ_JSONSCAN_MAX_DEPTH levels). jansson also refuses integers beyond 64
 * bits and reals beyond a double; for a text that holds a number that might
 * be one of those the scan answers "ask jansson" (-1), so that a caller
 * that asks keeps jansson's verdict. One difference is left: jansson 2.14
 * skips a raw NUL byte right after a number ("[1\0]" reads as [1]); the
 * scan refuses raw NULs, so such a body is reported as a JSON string. */
#ifndef LQ_WORKER_JSONSCAN_H
#define LQ_WORKER_JSONSCAN_H

#include <stddef.h>
#include <stdint.h>

/* Deepest nesting accepted (jansson's JSON_PARSER_MAX_DEPTH). */
#define LQ_JSONSCAN_MAX_DEPTH 2048

typedef struct {
    /* From the top-level object's "usage" object (the last one, when the
     * key repeats): a non-negative integer member, else -1. */
    int64_t prompt_tokens, completion_tokens; /* prompt_tokens / completion_tokens */
    int64_t input_tokens, output_tokens;      /* Anthropic's names */
} lq_json_usage_t;

/* Scans body[0..len). Returns 1 when it is exactly one JSON value with
 * optional whitespace around it, 0 when it is not (an empty or
 * all-whitespace body is not JSON), -1 when its grammar is right but it
 * holds a number jansson may refuse (19+ integer digits, a 3-digit
 * exponent): jansson decides. *usage (may be NULL) is filled in every case,
 * with -1 for what was not found; read it only when the body is JSON.
 * Can't fail. */
int lq_json_scan(const char *body, size_t len, lq_json_usage_t *usage);

#endif
