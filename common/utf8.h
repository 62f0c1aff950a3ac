/* utf8: the one UTF-8 decoder of the tree (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), and what the client and the worker
 * build on it: a checker that names the bad column, a code-point counter,
 * and a cleaner that makes any bytes printable text. Pure functions. */
#ifndef LQ_UTF8_H
#define LQ_UTF8_H

#include <stddef.h>

/* Returns the length (1..4) of the valid UTF-8 sequence at s[0..avail), or
 * 0 when the bytes there are not one; then, when why is not NULL, *why is a
 * static description ("truncated sequence", "overlong encoding", ...).
 * Can't fail. */
size_t lq_utf8_seq(const unsigned char *s, size_t avail, const char **why);

/* Checks that p[0..n) is valid UTF-8. Returns 0, or -1 with *col the
 * 1-based character column of the first bad sequence and *why its static
 * description. */
int lq_utf8_check(const char *p, size_t n, long long *col, const char **why);

/* Number of code points in the valid UTF-8 text p[0..n). Can't fail. */
size_t lq_utf8_chars(const char *p, size_t n);

/* Returns a copy of s[0..len) that is valid UTF-8 on one line: invalid
 * bytes become '?', control characters become spaces, cut to at most max
 * bytes on a character boundary. The caller frees it. Can't fail. */
char *lq_utf8_clean(const char *s, size_t len, size_t max);

#endif
