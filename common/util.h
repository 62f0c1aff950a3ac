/* util: allocation that aborts on out-of-memory, the monotonic and wall
 * clocks, the one byte-string hash, and small string helpers. Owned by nobody; pure functions. */
#ifndef LQ_UTIL_H
#define LQ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* malloc/calloc/realloc/strdup that abort the process on out-of-memory.
 * Never return NULL (except xmalloc(0) may return a unique pointer). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Formats into a new heap string; aborts on out-of-memory. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic clock in milliseconds / microseconds. Can't fail. */
uint64_t lq_mono_ms(void);
uint64_t lq_mono_us(void);
/* Wall clock, seconds / milliseconds since the Unix epoch. Can't fail. */
int64_t lq_wall_s(void);
int64_t lq_wall_ms(void);

/* Writes v in decimal into buf (at least 21 bytes; no NUL) and returns the
 * length: the integer formatting of hot paths (no snprintf, no locale). */
size_t lq_fmt_int(char *buf, int64_t v);

/* JSON string literals: lq_json_escaped_len() is the length of s[0..n)
 * quoted and escaped ('"', '\\' and control characters escaped; every
 * other byte, UTF-8 included, as it is: check UTF-8 first where it
 * matters); lq_json_escape() writes that many bytes at out (no NUL) and
 * returns the count. Both can't fail. */
size_t lq_json_escaped_len(const char *s, size_t n);
size_t lq_json_escape(char *out, const char *s, size_t n);

/* Parses a whole decimal string as a long long within [min,max].
 * Returns 0 and stores it, or -1 when s is empty, not a number or out of range. */
int lq_parse_ll(const char *s, long long min, long long max, long long *out);

/* Parses a duration "N", "Ns", "Nm", "Nh" or "Nd" into seconds (N >= 0).
 * Returns 0 and stores it, or -1 when s is not such a duration. */
int lq_parse_duration_s(const char *s, long long *out);

/* Fills buf (n >= 17) with 16 random hex characters and a NUL. Can't fail. */
void lq_random_hex(char *buf, size_t n);

/* The hash of the tree: 64-bit FNV-1a. LQ_FNV1A64_INIT is its offset
 * basis; lq_fnv1a64_add() continues a hash over more bytes, so that a hash
 * over several fields is a chain of calls. The raw value is what files and
 * tests may show (stable across versions); tables use lq_hash64(), which
 * adds the murmur3 finaliser so that the low bits depend on every byte.
 * All can't fail. */
#define LQ_FNV1A64_INIT 0xcbf29ce484222325ull
uint64_t lq_fnv1a64_add(uint64_t h, const void *p, size_t n);
/* Raw FNV-1a of p[0..n). */
uint64_t lq_fnv1a64(const void *p, size_t n);
/* The murmur3 fmix64 finaliser: a bijection mixing every bit into all. */
uint64_t lq_hash_mix(uint64_t h);
/* lq_hash_mix(lq_fnv1a64(p, n)): the hash for hash tables. */
uint64_t lq_hash64(const void *p, size_t n);

#endif
