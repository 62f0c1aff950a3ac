/* fake_table: the fake upstream's count of requests per job key, an
 * open-addressing hash table (linear probing, power-of-two capacity, load
 * kept under 3/4) from a byte-string key to a 64-bit counter.
 *
 * The table owns copies of its keys, kept in an arena of large blocks so
 * that a million keys cost a million small copies and no per-key malloc.
 * There is no single-key removal; lq_fake_table_clear() empties it. */
#ifndef LQ_FAKE_TABLE_H
#define LQ_FAKE_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct lq_fake_table lq_fake_table_t;

/* Called once per entry by lq_fake_table_foreach(). key is not
 * NUL-terminated. */
typedef void (*lq_fake_table_cb)(const char *key, size_t len, uint64_t count, void *arg);

/* Creates an empty table. Can't fail (aborts on out-of-memory). */
lq_fake_table_t *lq_fake_table_new(void);
/* Frees the table and its keys. Safe on NULL; clears *t. */
void lq_fake_table_destroy(lq_fake_table_t **t);
/* Adds 1 to the counter of key (creating it at 0 first) and returns the new
 * count. Keys longer than 4 GiB are not supported. Can't fail. */
uint64_t lq_fake_table_incr(lq_fake_table_t *t, const char *key, size_t len);
/* Returns the counter of key, 0 if absent. Can't fail. */
uint64_t lq_fake_table_get(const lq_fake_table_t *t, const char *key, size_t len);
/* Returns the number of distinct keys. Can't fail. */
size_t lq_fake_table_size(const lq_fake_table_t *t);
/* Removes every entry and frees the keys. Can't fail. */
void lq_fake_table_clear(lq_fake_table_t *t);
/* Calls cb for each entry, in table order. cb must not modify the table. */
void lq_fake_table_foreach(const lq_fake_table_t *t, lq_fake_table_cb cb, void *arg);

#endif
