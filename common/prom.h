/* prom: Prometheus text exposition helpers shared by the broker's and the
 * worker's /metrics: a growable text buffer, metric headers, label-value
 * escaping, and fixed-bucket histograms (cumulative buckets, _sum, _count).
 *
 * Pure in-memory code, no I/O. A buffer owns its text until
 * lq_prom_buf_clear(); a histogram is a plain value (no heap). */
#ifndef LQ_PROM_H
#define LQ_PROM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* NUL-terminated text, NULL until the first write */
    size_t len, cap;
} lq_prom_buf_t;

/* Appends printf-style text. Can't fail (aborts on out-of-memory). */
void lq_prom_printf(lq_prom_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends "# HELP name help" and "# TYPE name type". Can't fail. */
void lq_prom_header(lq_prom_buf_t *b, const char *name, const char *type, const char *help);

/* Appends v as the inside of a quoted label value (\\, \" and \n escaped).
 * Can't fail. */
void lq_prom_label(lq_prom_buf_t *b, const char *v);

/* Frees the text and zeroes the buffer. Safe on a zeroed buffer. */
void lq_prom_buf_clear(lq_prom_buf_t *b);

/* Upper bounds (seconds) of the latency buckets every llmq histogram uses:
 * 0.05 s up to 1800 s (a 10-minute request with retries fits). */
#define LQ_PROM_NBUCKETS 16
extern const double lq_prom_latency_buckets[LQ_PROM_NBUCKETS];

typedef struct {
    uint64_t buckets[LQ_PROM_NBUCKETS]; /* non-cumulative counts per bucket */
    uint64_t count;                     /* all observations (+Inf) */
    double sum;
} lq_prom_hist_t;

/* Records one observation of v seconds. Can't fail. */
void lq_prom_hist_observe(lq_prom_hist_t *h, double v);

/* Appends the series of histogram name (without # lines): name_bucket for
 * every bound and +Inf, name_sum, name_count. labels is "" or a label list
 * without braces ('upstream="a"'), put before le. Can't fail. */
void lq_prom_hist_write(lq_prom_buf_t *b, const char *name, const char *labels,
                        const lq_prom_hist_t *h);

#endif
