/* map: see map.h. */
#include "map.h"

#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key; /* NULL: empty slot */
    size_t len;
    uint64_t hash;
    void *value;
} s_slot_t;

struct lq_map {
    s_slot_t *slots;
    size_t cap; /* power of two */
    size_t len;
};

lq_map_t *lq_map_new(void)
{
    lq_map_t *m = xcalloc(1, sizeof *m);
    m->cap = 16;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    return m;
}

void lq_map_destroy(lq_map_t **p)
{
    if (!p || !*p)
        return;
    lq_map_t *m = *p;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
    *p = NULL;
}

static size_t s_find(const lq_map_t *m, const void *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const s_slot_t *s = &m->slots[i];
        if (!s->key)
            return i;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
            return i;
    }
}

static void s_grow(lq_map_t *m)
{
    s_slot_t *old = m->slots;
    size_t oldcap = m->cap;
    m->cap *= 2;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].key)
            continue;
        size_t j = s_find(m, old[i].key, old[i].len, old[i].hash);
        m->slots[j] = old[i];
    }
    free(old);
}

void *lq_map_get(const lq_map_t *m, const void *key, size_t len)
{
    size_t i = s_find(m, key, len, lq_hash64(key, len));
    return m->slots[i].key ? m->slots[i].value : NULL;
}

void *lq_map_put(lq_map_t *m, const void *key, size_t len, void *value)
{
    if ((m->len + 1) * 4 > m->cap * 3)
        s_grow(m);
    uint64_t h = lq_hash64(key, len);
    size_t i = s_find(m, key, len, h);
    s_slot_t *s = &m->slots[i];
    if (s->key) {
        void *prev = s->value;
        s->value = value;
        return prev;
    }
    s->key = xmalloc(len + 1);
    memcpy(s->key, key, len);
    s->key[len] = '\0';
    s->len = len;
    s->hash = h;
    s->value = value;
    m->len++;
    return NULL;
}

void *lq_map_del(lq_map_t *m, const void *key, size_t len)
{
    size_t mask = m->cap - 1;
    size_t i = s_find(m, key, len, lq_hash64(key, len));
    if (!m->slots[i].key)
        return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->len--;
    /* Backward-shift the following cluster so lookups stay correct. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        int movable = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            m->slots[hole] = m->slots[j];
            m->slots[j].key = NULL;
            hole = j;
        }
    }
    return value;
}

size_t lq_map_len(const lq_map_t *m)
{
    return m->len;
}

int lq_map_next(const lq_map_t *m, size_t *pos, const void **key, size_t *len, void **value)
{
    while (*pos < m->cap) {
        const s_slot_t *s = &m->slots[(*pos)++];
        if (s->key) {
            if (key)
                *key = s->key;
            if (len)
                *len = s->len;
            if (value)
                *value = s->value;
            return 1;
        }
    }
    return 0;
}

void *lq_map_gets(const lq_map_t *m, const char *key)
{
    return lq_map_get(m, key, strlen(key));
}

void *lq_map_puts(lq_map_t *m, const char *key, void *value)
{
    return lq_map_put(m, key, strlen(key), value);
}

void *lq_map_dels(lq_map_t *m, const char *key)
{
    return lq_map_del(m, key, strlen(key));
}
