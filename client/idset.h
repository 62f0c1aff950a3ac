/* idset: the set of custom_ids seen in one input file, for the uniqueness
 * check of the JSONL reader (client/jsonl.c).
 *
 * Memory is what matters here: the reader streams a file of any length in
 * constant memory, and this set is the one thing that grows with it. It
 * stores no id text at all, only, per id, a 64-bit hash and the line number
 * where the id was first seen:
 *
 *   slots[]   open-addressing table (linear probing, load <= 1/2) holding
 *             ordinal + 1 (0 = empty), 4 bytes per slot, 2..4 slots per id;
 *   hashes[]  the 64-bit hash of each id, by ordinal, 8 bytes per id;
 *   lines[]   the line number of each id, by ordinal, 4 bytes per id.
 *
 * That is 20..28 bytes per id: 1,000,000 ids take 8 MiB of slots plus
 * 12 MiB of dense arrays (plus up to 25% growth slack), about 20-23 MiB.
 *
 * Exactness: equal hashes do not make a duplicate. On every hash hit the
 * set asks the caller (confirm callback) whether the id on the earlier line
 * really is the same string; the reader answers by re-reading that one line
 * from the file (see jsonl.c). A 64-bit collision between different ids --
 * probability about n^2 / 2^65, 3e-8 for a million ids -- therefore costs
 * one extra line read, never a false "duplicate" report.
 *
 * Limits: line numbers and the number of ids must fit in 32 bits (over
 * 4 billion lines); lq_idset_add() returns -1 past that.
 *
 * Ownership: the set owns its arrays and nothing else; ids are not kept. */
#ifndef LQ_IDSET_H
#define LQ_IDSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct lq_idset lq_idset_t;

/* Asked on a hash hit: is the id first seen on line `line` equal to
 * id[0..len)? Returns 1 if equal (a duplicate), 0 if not (a collision). */
typedef int lq_idset_confirm_fn(void *ctx, long long line, const char *id, size_t len);

/* Creates an empty set. hash_bits (1..64; 0 means 64) keeps only that many
 * low bits of each hash: tests use a tiny value to force collisions and so
 * exercise the confirm path. Returns the set; can't fail (aborts on OOM). */
lq_idset_t *lq_idset_new(unsigned hash_bits);

/* Adds id[0..len) first seen on `line` (>= 1). Returns 0 if the id was new
 * (now stored), the earlier line number (> 0) if it is a duplicate
 * (confirmed by `confirm`, which may be NULL to trust the hash), or -1 if
 * a 32-bit limit would be exceeded (nothing stored). */
long long lq_idset_add(lq_idset_t *s, const char *id, size_t len, long long line,
                       lq_idset_confirm_fn *confirm, void *ctx);

/* Number of ids stored. Can't fail. */
size_t lq_idset_count(const lq_idset_t *s);

/* Bytes of heap the set holds (for reports and tests). Can't fail. */
size_t lq_idset_bytes(const lq_idset_t *s);

/* Frees the set and clears *s. Safe on NULL and on *s == NULL. */
void lq_idset_destroy(lq_idset_t **s);

#endif
