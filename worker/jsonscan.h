/* jsonscan: a validating JSON scanner that builds nothing, for the one thing
 * the worker needs from a successful response: is the body one JSON text,
 * and what does its top-level "usage" object say.
 *
 * Pure, no allocation, no I/O: one pass over the bytes with a fixed-size
 * nesting stack. Accepts what jansson's json_loadb(JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) accepts (RFC 8259 text, any value at the top, UTF-8
 * strings, \u0000, surrogate pairs only in pairs, at most
 * LQ_JSONSCAN_MAX_DEPTH levels), except that numbers are checked for their
 * grammar only (jansson also refuses integers beyond 64 bits and reals
 * beyond double; such a body is kept verbatim here, which is still JSON). */
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
 * optional whitespace around it, 0 otherwise (an empty or all-whitespace
 * body is not JSON). *usage (may be NULL) is filled in either case, with -1
 * for what was not found; read it only when the result is 1. Can't fail. */
int lq_json_scan(const char *body, size_t len, lq_json_usage_t *usage);

#endif
