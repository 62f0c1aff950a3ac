/* jobscan: the fast path of lq_jobline_parse() (client/jobline.h).
 *
 * Parsing a typical 300-byte request line with jansson costs about 5 us,
 * almost all of it in jansson's per-character lexer and its allocations.
 * This module is a strict single-pass scanner, with no allocation, that
 * recognises the common case -- a line that is certainly valid -- and fills
 * the same lq_job_spec_t the jansson path would (same custom_id, url, body
 * span and est_tokens), several times faster.
 *
 * It never decides that a line is invalid. Whenever it is not sure -- a
 * syntax error, any rule broken, an escape in a key or in custom_id, method
 * or url, a number that jansson might refuse (more than 18 integer digits,
 * a 3-digit exponent), nesting deeper than 64, more than 64 keys in one
 * object -- it answers "unsure" and leaves the line untouched, and the
 * caller runs the jansson path, which reports errors (with jansson's
 * column) or accepts. So the set of accepted lines, the jobs produced and
 * every error message are jansson's; the unit tests compare both paths on
 * valid lines and on thousands of mutated ones.
 *
 * Ownership: the spec's strings point into the caller's line. */
#ifndef LQ_JOBSCAN_H
#define LQ_JOBSCAN_H

#include "proto/msg.h"

#include <stddef.h>

/* Scans the batch line p[0..n), which must already be known to be valid
 * UTF-8. Returns 1 when the line is valid: *spec is filled, its strings
 * point into p, and NULs have been written after custom_id, url and body
 * (over a closing quote and the byte after the body). Returns 0 when
 * unsure: p is unchanged and *spec is not touched. */
int lq_jobscan(char *p, size_t n, lq_job_spec_t *spec);

#endif
