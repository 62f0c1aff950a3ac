/* prom: see prom.h. */
#include "prom.h"

#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double lq_prom_latency_buckets[LQ_PROM_NBUCKETS] = {
    0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800,
};

/* Makes room for at least need more bytes plus the NUL. Can't fail. */
static void s_reserve(lq_prom_buf_t *b, size_t need)
{
    if (b->len + need + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void lq_prom_printf(lq_prom_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    s_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void lq_prom_header(lq_prom_buf_t *b, const char *name, const char *type, const char *help)
{
    lq_prom_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void lq_prom_label(lq_prom_buf_t *b, const char *v)
{
    size_t n = strlen(v);
    s_reserve(b, n * 2);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') {
            b->data[b->len++] = '\\';
            b->data[b->len++] = c;
        } else if (c == '\n') {
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'n';
        } else {
            b->data[b->len++] = c;
        }
    }
    b->data[b->len] = '\0';
}

void lq_prom_buf_clear(lq_prom_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void lq_prom_hist_observe(lq_prom_hist_t *h, double v)
{
    h->count++;
    h->sum += v;
    for (size_t i = 0; i < LQ_PROM_NBUCKETS; i++) {
        if (v <= lq_prom_latency_buckets[i]) {
            h->buckets[i]++;
            return;
        }
    }
}

void lq_prom_hist_write(lq_prom_buf_t *b, const char *name, const char *labels,
                        const lq_prom_hist_t *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < LQ_PROM_NBUCKETS; i++) {
        cum += h->buckets[i];
        lq_prom_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                       lq_prom_latency_buckets[i], (unsigned long long)cum);
    }
    lq_prom_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                   (unsigned long long)h->count);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    lq_prom_printf(b, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name, open, labels, close,
                   h->sum, name, open, labels, close, (unsigned long long)h->count);
}
