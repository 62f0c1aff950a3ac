/* map: a hash map from byte-string keys to pointers (open addressing with
 * linear probing and backward-shift deletion). The map copies keys and
 * owns the copies; values are the caller's. Not thread-safe. */
#ifndef LQ_MAP_H
#define LQ_MAP_H

#include <stddef.h>

typedef struct lq_map lq_map_t;

/* Creates an empty map. Can't fail (aborts on out-of-memory). */
lq_map_t *lq_map_new(void);
/* Frees the map and its key copies, not the values. Safe on NULL; clears *m. */
void lq_map_destroy(lq_map_t **m);

/* Returns the value for key, or NULL. */
void *lq_map_get(const lq_map_t *m, const void *key, size_t len);
/* Sets key to value (replacing). Returns the previous value or NULL. */
void *lq_map_put(lq_map_t *m, const void *key, size_t len, void *value);
/* Removes key. Returns its value or NULL if absent. */
void *lq_map_del(lq_map_t *m, const void *key, size_t len);
size_t lq_map_len(const lq_map_t *m);

/* Iteration: start with *pos = 0; returns 1 and fills key/len/value while
 * entries remain. Do not modify the map while iterating (collect first). */
int lq_map_next(const lq_map_t *m, size_t *pos, const void **key, size_t *len, void **value);

/* Convenience wrappers for NUL-terminated keys. */
void *lq_map_gets(const lq_map_t *m, const char *key);
void *lq_map_puts(lq_map_t *m, const char *key, void *value);
void *lq_map_dels(lq_map_t *m, const char *key);

#endif
