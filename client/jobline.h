/* jobline: turns one input line into a job (lq_job_spec_t) -- the
 * per-line rules of `llmq submit`, with no I/O. client/jsonl.c does the
 * file (streaming, line numbers, uniqueness) and calls these.
 *
 * A batch line must be valid UTF-8 and one JSON object (jansson, duplicate
 * keys rejected) with
 *     "custom_id"  a non-empty string of at most LQ_MAX_CUSTOM_ID bytes,
 *     "method"     "POST",
 *     "url"        a string starting with "/", at most LQ_MAX_URL bytes,
 *                  without spaces or control characters,
 *     "body"       a JSON object of at most LQ_MAX_JOB_BODY bytes.
 * Other top-level keys are ignored. Valid lines usually take a fast path
 * (client/jobscan.h) that yields the same job without jansson; every
 * other line is parsed by jansson, whose errors are reported. The job's body is the exact byte span
 * of the "body" value in the line (numbers and escapes pass through
 * untouched: jansson would print 0.7 as 0.69999999999999996), or its
 * compact re-serialisation in the rare case the key itself is written with
 * escapes.
 *
 * Token estimate (est_tokens), the client's guess for the broker's
 * tokens/min budget before the call (corrected from "usage" after it):
 *     ceil(C / 4) + O
 * C counts characters (code points) of the prompt text in the body:
 * "messages" (chat), "prompt" (completions) and "input" (embeddings,
 * responses), walked recursively: a string counts its characters, an array
 * its elements, an object its "text" and "content" members (so message
 * content strings, {"type":"text","text":..} parts and responses input
 * items all count; images and tool definitions do not), an integer (a
 * token id) counts 4. O is the output budget: "max_completion_tokens",
 * else "max_tokens", else "max_output_tokens", else 0 for an "/embeddings"
 * url and 16 otherwise (the completions default), times "n" when n > 1.
 *
 * Ownership: an lq_jobline_t owns the parsed line and any body copy; the
 * spec's strings point into it (or into the caller's line) until
 * lq_jobline_clear(). */
#ifndef LQ_JOBLINE_H
#define LQ_JOBLINE_H

#include "proto/msg.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    lq_job_spec_t spec; /* the job, after success */
    long long col;      /* error column (characters, 1-based); 0 = none applies */
    char err[256];      /* error message, after failure */
    /* private */
    json_t *root_;
    char *heap_;
    char id_[32];
} lq_jobline_t;

/* Validates the batch line p[0..n) (no line terminator) and fills jl->spec.
 * The line must stay alive and unchanged while the spec is used: the body
 * points into it, and p[body_len] of the span is overwritten with a NUL
 * (the line is writable for that reason). Returns 0, or -1 with jl->err
 * (and jl->col). jl is cleared first. */
int lq_jobline_parse(lq_jobline_t *jl, char *p, size_t n);

/* The same with jansson alone, skipping the fast path (client/jobscan.h)
 * that lq_jobline_parse() tries first; the jobs and errors are identical.
 * For tests that compare the two. */
int lq_jobline_parse_json(lq_jobline_t *jl, char *p, size_t n);

/* Builds the chat completion job for prompt text p[0..n) from line `line`
 * of a prompts file. system may be NULL; max_tokens <= 0 means none.
 * Returns 0, or -1 with jl->err (invalid UTF-8, a body over the limit,
 * a model or system text that is not valid UTF-8). jl is cleared first. */
int lq_jobline_prompt(lq_jobline_t *jl, const char *p, size_t n, long long line, const char *model,
                      const char *system, long long max_tokens);

/* The estimate described above, for a request body to url. Can't fail. */
int64_t lq_jobline_estimate(const char *url, const json_t *body);

/* Frees what jl holds and zeroes it. Safe on a zeroed jl. */
void lq_jobline_clear(lq_jobline_t *jl);

#endif
