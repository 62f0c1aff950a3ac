/* idset: see idset.h. */
#include "client/idset.h"

#include "common/util.h"

#include <stdint.h>
#include <stdlib.h>

#define S_MIN_SLOTS 1024u
#define S_MIN_IDS 1024u

struct lq_idset {
    uint32_t *slots;  /* ordinal + 1, 0 = empty */
    size_t mask;      /* number of slots - 1 (a power of two minus one) */
    uint64_t *hashes; /* by ordinal */
    uint32_t *lines;  /* by ordinal */
    size_t n, cap;    /* ids stored, capacity of hashes[] and lines[] */
    uint64_t hmask;   /* bits of the hash kept */
};

lq_idset_t *lq_idset_new(unsigned hash_bits)
{
    lq_idset_t *s = xcalloc(1, sizeof *s);
    s->hmask = (hash_bits == 0 || hash_bits >= 64) ? UINT64_MAX : ((1ull << hash_bits) - 1);
    s->mask = S_MIN_SLOTS - 1;
    s->slots = xcalloc(S_MIN_SLOTS, sizeof *s->slots);
    return s;
}

/* Places ordinal j (hash h) in the first free slot of its probe sequence.
 * The caller guarantees a free slot exists. Can't fail. */
static void s_place(lq_idset_t *s, uint64_t h, uint32_t j)
{
    size_t i = (size_t)h & s->mask;
    while (s->slots[i])
        i = (i + 1) & s->mask;
    s->slots[i] = j + 1;
}

/* Doubles the table and re-inserts every ordinal from hashes[]. */
static void s_grow_table(lq_idset_t *s)
{
    size_t nslots = (s->mask + 1) * 2;
    free(s->slots);
    s->slots = xcalloc(nslots, sizeof *s->slots);
    s->mask = nslots - 1;
    for (size_t j = 0; j < s->n; j++)
        s_place(s, s->hashes[j], (uint32_t)j);
}

/* Grows hashes[] and lines[] by 25% (small growth keeps the slack small;
 * large reallocs are mremap()ed by glibc, so growth does not copy). */
static void s_grow_dense(lq_idset_t *s)
{
    size_t cap = s->cap < S_MIN_IDS ? S_MIN_IDS : s->cap + s->cap / 4;
    s->hashes = xrealloc(s->hashes, cap * sizeof *s->hashes);
    s->lines = xrealloc(s->lines, cap * sizeof *s->lines);
    s->cap = cap;
}

long long lq_idset_add(lq_idset_t *s, const char *id, size_t len, long long line,
                       lq_idset_confirm_fn *confirm, void *ctx)
{
    if (line < 1 || line > (long long)UINT32_MAX || s->n >= (size_t)UINT32_MAX - 1)
        return -1;
    uint64_t h = lq_hash64(id, len) & s->hmask;
    size_t i = (size_t)h & s->mask;
    while (s->slots[i]) {
        uint32_t j = s->slots[i] - 1;
        if (s->hashes[j] == h) {
            /* A candidate: equal hash. Only the caller can tell a real
             * duplicate from a collision (it re-reads the earlier line). */
            if (!confirm || confirm(ctx, s->lines[j], id, len))
                return s->lines[j];
        }
        i = (i + 1) & s->mask;
    }
    if (s->n == s->cap)
        s_grow_dense(s);
    s->hashes[s->n] = h;
    s->lines[s->n] = (uint32_t)line;
    s->n++;
    if (s->n * 2 > s->mask + 1)
        s_grow_table(s); /* re-places every ordinal, the new one included */
    else
        s->slots[i] = (uint32_t)s->n; /* ordinal n-1, plus one */
    return 0;
}

size_t lq_idset_count(const lq_idset_t *s)
{
    return s->n;
}

size_t lq_idset_bytes(const lq_idset_t *s)
{
    return (s->mask + 1) * sizeof *s->slots + s->cap * (sizeof *s->hashes + sizeof *s->lines);
}

void lq_idset_destroy(lq_idset_t **sp)
{
    if (!sp || !*sp)
        return;
    lq_idset_t *s = *sp;
    free(s->slots);
    free(s->hashes);
    free(s->lines);
    free(s);
    *sp = NULL;
}
