/* jsonl: the streaming reader and validator of `llmq submit` input files.
 *
 * Two input formats, one iterator:
 *
 *  - LQ_JSONL_BATCH (default): an OpenAI Batch API input file, one request
 *    per line: {"custom_id":"r1","method":"POST","url":"/v1/...","body":{..}}.
 *  - LQ_JSONL_PROMPTS (`llmq submit --prompts FILE --model M`): a plain text
 *    file, each non-blank line one prompt, turned into a chat completion
 *    request with custom_id "line-N" (N = the line number in that file).
 *
 * The per-line rules (UTF-8, JSON, required fields, the token estimate) are
 * in client/jobline.h; this module does the file: streaming, line limits,
 * blank lines, passes, and the file-wide custom_id uniqueness check.
 *
 * Streaming. The file is read with read(2) into one buffer that holds at
 * most the current line plus one read block; memory is constant in the
 * number of lines except for the custom_id set (client/idset.h, about
 * 20 bytes per id). A line longer than max_line bytes (not counting its LF
 * or CRLF) is an error named by its line number and is skipped without ever
 * being held whole.
 *
 * Lines. LF and CRLF endings are accepted; the last line may lack one. A
 * UTF-8 byte order mark at the start of the file is skipped. In a batch
 * file a blank (empty or whitespace-only) line followed by more requests is
 * an error ("empty line", as the OpenAI Batch API has it); blank lines at
 * the end of the file are ignored. In a prompts file blank lines are
 * skipped and line numbers stay true. A file without a single job is an
 * error.
 *
 * Uniqueness. custom_ids must be unique in a batch file. The first pass
 * over the file (the validation pass) records every id in an idset; a
 * repeat is reported as `duplicate custom_id "x" (first seen on line N)`.
 * The set keeps 64-bit hashes only; a hash hit is confirmed exactly by
 * re-reading the earlier line with pread(2) at an offset found from a
 * checkpoint table (the offset of every 256th line, 8 bytes per 256 lines)
 * and comparing the ids, so a hash collision never gives a false report.
 * (On an unseekable input, where that read fails, a hash hit is trusted:
 * a false report then has probability ~n^2/2^65.) lq_jsonl_rewind() after a
 * complete first pass frees the set: the second pass, which streams the
 * validated file to the broker, does not check again, but does refuse a
 * file that changed (size, mtime) since it was opened.
 *
 * Errors. Every message has the form
 *     FILE:LINE:COLUMN: message     (COLUMN when a position applies)
 *     FILE:LINE: message            (a whole-line or field error)
 *     FILE: message                 (the file: cannot open, empty, ...)
 * LINE is 1-based; COLUMN is 1-based and counts characters (Unicode code
 * points), the same unit as jansson's error column, which is used as is for
 * JSON syntax errors (it points at the end of the offending token). The
 * message of the last error stays on the reader (lq_jsonl_error).
 *
 * Ownership. The reader owns everything it returns: the strings of an
 * lq_job_spec_t are valid until the next lq_jsonl_next/_rewind/_destroy. */
#ifndef LQ_JSONL_H
#define LQ_JSONL_H

#include "proto/msg.h"

#include <stddef.h>

typedef struct lq_jsonl lq_jsonl_t;

typedef enum {
    LQ_JSONL_BATCH = 0,   /* OpenAI Batch API JSONL */
    LQ_JSONL_PROMPTS = 1, /* one prompt per line */
} lq_jsonl_mode_t;

/* Default line limit: a maximal request body plus room for the envelope. */
#define LQ_JSONL_DEFAULT_MAX_LINE ((size_t)LQ_MAX_JOB_BODY + 64u * 1024u)

/* Results of lq_jsonl_next(). */
#define LQ_JSONL_JOB 1    /* *out holds a job */
#define LQ_JSONL_EOF 0    /* no more lines */
#define LQ_JSONL_BAD -1   /* this line is invalid; call again for the next one */
#define LQ_JSONL_FATAL -2 /* the file can't be read further; every later call fails */

typedef struct {
    lq_jsonl_mode_t mode;
    size_t max_line; /* bytes per line without its LF/CRLF; 0 = LQ_JSONL_DEFAULT_MAX_LINE */
    /* LQ_JSONL_PROMPTS only (copied by lq_jsonl_new): */
    const char *model;    /* required */
    const char *system;   /* NULL: no system message */
    long long max_tokens; /* <= 0: no "max_tokens" in the body */
    /* Tests only: keep this many bits of the custom_id hash (0 = 64). */
    unsigned id_hash_bits;
} lq_jsonl_opts_t;

/* Creates a reader over the file at path with opts (NULL: batch mode,
 * defaults). Opening errors (missing file, a directory, no --model in
 * prompts mode) are not reported here: the first lq_jsonl_next() returns
 * LQ_JSONL_FATAL with the message. Returns the reader (aborts on OOM);
 * the caller owns it. */
lq_jsonl_t *lq_jsonl_new(const char *path, const lq_jsonl_opts_t *opts);

/* Reads the next job into *out (its strings are owned by the reader, valid
 * until the next call). Returns LQ_JSONL_JOB, LQ_JSONL_EOF, LQ_JSONL_BAD
 * (the line lq_jsonl_line() is invalid, see lq_jsonl_error(); calling again
 * continues with the following line, so a caller may list several errors),
 * or LQ_JSONL_FATAL (I/O error, nothing to read, empty file; sticky). */
int lq_jsonl_next(lq_jsonl_t *r, lq_job_spec_t *out);

/* Goes back to the first line for another pass. After a complete first
 * pass the custom_id set is freed (later passes do not check uniqueness);
 * after a partial one it is cleared and the next pass checks again.
 * Returns 0, or -1 (sticky fatal error: unseekable input, the file changed
 * since it was opened, or an earlier fatal error). */
int lq_jsonl_rewind(lq_jsonl_t *r);

/* Line number (1-based) of the last job or error returned; 0 before any.
 * Can't fail. */
long long lq_jsonl_line(const lq_jsonl_t *r);

/* Jobs returned and invalid lines met in the current pass. Can't fail. */
long long lq_jsonl_count(const lq_jsonl_t *r);
long long lq_jsonl_errors(const lq_jsonl_t *r);

/* Bytes of the file consumed so far in this pass, and the file's size at
 * open (0 if unknown), for progress displays. Can't fail. */
long long lq_jsonl_offset(const lq_jsonl_t *r);
long long lq_jsonl_size(const lq_jsonl_t *r);

/* Bytes held by the custom_id set (0 once freed). Can't fail. */
size_t lq_jsonl_idset_bytes(const lq_jsonl_t *r);

/* The initial read buffer and read size. The buffer grows past it only for
 * a line that is longer yet within the line limit. */
#define LQ_JSONL_READ_BLOCK (256u * 1024u)
/* Bytes held by the read buffer now (bounded memory). Can't fail. */
size_t lq_jsonl_buffer_bytes(const lq_jsonl_t *r);

/* The last error message ("" if none), owned by the reader, valid until
 * the next call. Can't fail. */
const char *lq_jsonl_error(const lq_jsonl_t *r);

/* Closes the file, frees the reader and clears *r. Safe on NULL. */
void lq_jsonl_destroy(lq_jsonl_t **r);

#endif
