/* jobs: see jobs.h. The table is a chained hash with a power-of-two
 * bucket count that doubles when the load passes 1. */
#include "jobs.h"

#include "../common/util.h"

#include <stdlib.h>
#include <string.h>

struct lq_jobtab {
    lq_wjob_t **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

lq_wjob_t *lq_wjob_new(const lq_w_job_t *m, uint64_t now_ms)
{
    /* one allocation for the record and its three short strings */
    const char *batch = m->batch ? m->batch : "";
    const char *up = m->upstream && *m->upstream ? m->upstream : NULL;
    const char *url = m->url ? m->url : "";
    size_t lb = strlen(batch) + 1, lu = up ? strlen(up) + 1 : 0, ll = strlen(url) + 1;
    lq_wjob_t *j = xmalloc(sizeof *j + lb + lu + ll);
    memset(j, 0, sizeof *j);
    char *p = (char *)(j + 1);
    j->batch = memcpy(p, batch, lb);
    p += lb;
    j->upstream = up ? memcpy(p, up, lu) : NULL;
    p += lu;
    j->url = memcpy(p, url, ll);
    j->index = m->index;
    j->attempt = m->attempt;
    j->body_len = m->body ? m->body_len : 0;
    j->body = xmalloc(j->body_len + 1);
    if (j->body_len)
        memcpy(j->body, m->body, j->body_len);
    j->body[j->body_len] = '\0';
    j->timeout_ms = m->timeout_ms;
    j->state = LQ_WJOB_RUNNING;
    j->received_ms = now_ms;
    j->status = 0;
    j->latency_ms = 0;
    j->res.prompt_tokens = -1;
    j->res.completion_tokens = -1;
    lq_headers_init(&j->hdr);
    return j;
}

void lq_wjob_destroy(lq_wjob_t **p)
{
    if (!p || !*p)
        return;
    lq_wjob_t *j = *p;
    *p = NULL;
    free(j->body); /* batch, upstream and url live in j's own block */
    lq_outcome_res_clear(&j->res);
    free(j);
}

void lq_wjob_result_msg(const lq_wjob_t *j, lq_msg_t *out)
{
    out->cmd = LQ_W_RESULT;
    lq_w_result_t *r = &out->u.result;
    r->batch = j->batch;
    r->index = j->index;
    r->attempt = j->attempt;
    r->outcome = j->res.outcome;
    r->status = j->status;
    r->body = j->res.body;
    r->body_len = j->res.body ? j->res.body_len : 0;
    r->request_id = j->hdr.request_id[0] ? j->hdr.request_id : NULL;
    r->error_code = j->res.error_code;
    r->error_message = j->res.error_message;
    r->retry_after_ms = lq_headers_retry_after(&j->hdr);
    r->prompt_tokens = j->res.prompt_tokens;
    r->completion_tokens = j->res.completion_tokens;
    r->rl_remaining_requests = j->hdr.rl_remaining_requests;
    r->rl_remaining_tokens = j->hdr.rl_remaining_tokens;
    r->rl_reset_requests_ms = j->hdr.rl_reset_requests_ms;
    r->rl_reset_tokens_ms = j->hdr.rl_reset_tokens_ms;
    r->rl_limit_requests = j->hdr.rl_limit_requests;
    r->rl_limit_tokens = j->hdr.rl_limit_tokens;
    r->latency_ms = j->latency_ms;
}

void lq_wlist_init(lq_wlist_t *l, int which)
{
    l->head = l->tail = NULL;
    l->len = 0;
    l->which = which;
}

void lq_wlist_push(lq_wlist_t *l, lq_wjob_t *j)
{
    lq_wlink_t *k = &j->link[l->which];
    if (k->on)
        return;
    k->on = 1;
    k->next = NULL;
    k->prev = l->tail;
    if (l->tail)
        l->tail->link[l->which].next = j;
    else
        l->head = j;
    l->tail = j;
    l->len++;
}

void lq_wlist_remove(lq_wlist_t *l, lq_wjob_t *j)
{
    lq_wlink_t *k = &j->link[l->which];
    if (!k->on)
        return;
    if (k->prev)
        k->prev->link[l->which].next = k->next;
    else
        l->head = k->next;
    if (k->next)
        k->next->link[l->which].prev = k->prev;
    else
        l->tail = k->prev;
    k->on = 0;
    k->prev = k->next = NULL;
    l->len--;
}

/* The table hash of (batch id, index): FNV-1a over the id and the index's
 * eight little-endian bytes, then mixed. Can't fail. */
static uint64_t s_hash(const char *batch, int64_t index)
{
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)((uint64_t)index >> (8 * i));
    uint64_t h = lq_fnv1a64_add(LQ_FNV1A64_INIT, batch, strlen(batch));
    return lq_hash_mix(lq_fnv1a64_add(h, le, sizeof le));
}

lq_jobtab_t *lq_jobtab_new(void)
{
    lq_jobtab_t *t = xcalloc(1, sizeof *t);
    t->nbuckets = 64;
    t->buckets = xcalloc(t->nbuckets, sizeof *t->buckets);
    return t;
}

void lq_jobtab_destroy(lq_jobtab_t **p)
{
    if (!p || !*p)
        return;
    lq_jobtab_t *t = *p;
    for (size_t i = 0; i < t->nbuckets; i++) {
        lq_wjob_t *j = t->buckets[i];
        while (j) {
            lq_wjob_t *next = j->hnext;
            lq_wjob_destroy(&j);
            j = next;
        }
    }
    free(t->buckets);
    free(t);
    *p = NULL;
}

lq_wjob_t *lq_jobtab_find(const lq_jobtab_t *t, const char *batch, int64_t index)
{
    size_t b = (size_t)(s_hash(batch, index) & (t->nbuckets - 1));
    for (lq_wjob_t *j = t->buckets[b]; j; j = j->hnext)
        if (j->index == index && strcmp(j->batch, batch) == 0)
            return j;
    return NULL;
}

/* Doubles the bucket array and rehashes. Can't fail. */
static void s_grow(lq_jobtab_t *t)
{
    size_t n = t->nbuckets * 2;
    lq_wjob_t **nb = xcalloc(n, sizeof *nb);
    for (size_t i = 0; i < t->nbuckets; i++) {
        lq_wjob_t *j = t->buckets[i];
        while (j) {
            lq_wjob_t *next = j->hnext;
            size_t b = (size_t)(s_hash(j->batch, j->index) & (n - 1));
            j->hnext = nb[b];
            nb[b] = j;
            j = next;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->nbuckets = n;
}

void lq_jobtab_insert(lq_jobtab_t *t, lq_wjob_t *j)
{
    if (t->count >= t->nbuckets)
        s_grow(t);
    size_t b = (size_t)(s_hash(j->batch, j->index) & (t->nbuckets - 1));
    j->hnext = t->buckets[b];
    t->buckets[b] = j;
    t->count++;
}

void lq_jobtab_remove(lq_jobtab_t *t, lq_wjob_t *j)
{
    size_t b = (size_t)(s_hash(j->batch, j->index) & (t->nbuckets - 1));
    for (lq_wjob_t **pp = &t->buckets[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == j) {
            *pp = j->hnext;
            j->hnext = NULL;
            t->count--;
            return;
        }
    }
}

size_t lq_jobtab_count(const lq_jobtab_t *t)
{
    return t->count;
}
