/* fake_table: see fake_table.h. Each slot holds a pointer to the key bytes
 * (in the arena), the key length, 32 bits of the hash (compared before the
 * bytes) and the counter; a NULL key marks an empty slot. */
#include "fake_table.h"

#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define S_ARENA_BLOCK (1u << 20)

typedef struct {
    const char *key;
    uint32_t len;
    uint32_t hash;
    uint64_t count;
} s_entry_t;

typedef struct s_block {
    struct s_block *next;
    size_t used, cap;
    char data[];
} s_block_t;

struct lq_fake_table {
    s_entry_t *slots;
    size_t cap; /* power of two */
    size_t size;
    s_block_t *blocks; /* newest first */
};

/* Creates an empty table with 1024 slots. Can't fail. */
lq_fake_table_t *lq_fake_table_new(void)
{
    lq_fake_table_t *t = xcalloc(1, sizeof *t);
    t->cap = 1024;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    return t;
}

/* Frees every arena block. Can't fail. */
static void s_free_blocks(lq_fake_table_t *t)
{
    while (t->blocks) {
        s_block_t *b = t->blocks;
        t->blocks = b->next;
        free(b);
    }
}

/* Frees the table. Safe on NULL; clears *pt. */
void lq_fake_table_destroy(lq_fake_table_t **pt)
{
    if (!pt || !*pt)
        return;
    lq_fake_table_t *t = *pt;
    s_free_blocks(t);
    free(t->slots);
    free(t);
    *pt = NULL;
}

/* Copies key into the arena and returns the copy. Can't fail. */
static const char *s_intern(lq_fake_table_t *t, const char *key, size_t len)
{
    s_block_t *b = t->blocks;
    if (!b || b->cap - b->used < len) {
        size_t cap = len > S_ARENA_BLOCK ? len : S_ARENA_BLOCK;
        b = xmalloc(sizeof *b + cap);
        b->used = 0;
        b->cap = cap;
        b->next = t->blocks;
        t->blocks = b;
    }
    char *dst = b->data + b->used;
    if (len)
        memcpy(dst, key, len);
    b->used += len;
    return dst;
}

/* Returns the slot of key, or the empty slot where it would go. */
static s_entry_t *s_find(const lq_fake_table_t *t, const char *key, size_t len, uint64_t h)
{
    size_t mask = t->cap - 1;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        s_entry_t *e = &t->slots[i];
        if (!e->key)
            return e;
        if (e->hash == h32 && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
}

/* Doubles the slot array and reinserts every entry. Can't fail. */
static void s_grow(lq_fake_table_t *t)
{
    s_entry_t *old = t->slots;
    size_t oldcap = t->cap;
    t->cap *= 2;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    size_t mask = t->cap - 1;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].key)
            continue;
        uint64_t h = lq_hash64(old[i].key, old[i].len);
        size_t j = (size_t)h & mask;
        while (t->slots[j].key)
            j = (j + 1) & mask;
        t->slots[j] = old[i];
    }
    free(old);
}

/* Increments key's counter, inserting it if new. Returns the new count. */
uint64_t lq_fake_table_incr(lq_fake_table_t *t, const char *key, size_t len)
{
    if (len > UINT32_MAX)
        len = UINT32_MAX;
    uint64_t h = lq_hash64(key, len);
    s_entry_t *e = s_find(t, key, len, h);
    if (!e->key) {
        if ((t->size + 1) * 4 > t->cap * 3) {
            s_grow(t);
            e = s_find(t, key, len, h);
        }
        /* An empty key still needs a non-NULL pointer to mark the slot used. */
        e->key = len ? s_intern(t, key, len) : "";
        e->len = (uint32_t)len;
        e->hash = (uint32_t)(h >> 32);
        e->count = 0;
        t->size++;
    }
    return ++e->count;
}

/* Returns key's counter or 0. */
uint64_t lq_fake_table_get(const lq_fake_table_t *t, const char *key, size_t len)
{
    if (len > UINT32_MAX)
        return 0;
    const s_entry_t *e = s_find(t, key, len, lq_hash64(key, len));
    return e->key ? e->count : 0;
}

/* Returns the number of keys. */
size_t lq_fake_table_size(const lq_fake_table_t *t)
{
    return t->size;
}

/* Empties the table and shrinks it back to its initial size. */
void lq_fake_table_clear(lq_fake_table_t *t)
{
    free(t->slots);
    t->cap = 1024;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    t->size = 0;
    s_free_blocks(t);
}

/* Calls cb on every entry. */
void lq_fake_table_foreach(const lq_fake_table_t *t, lq_fake_table_cb cb, void *arg)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].key)
            cb(t->slots[i].key, t->slots[i].len, t->slots[i].count, arg);
}
