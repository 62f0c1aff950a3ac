/* util: see util.h. */
#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void s_oom(size_t n)
{
    fprintf(stderr, "llmq: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        s_oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        s_oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        s_oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (n < 0)
        s_oom(0);
    return out;
}

uint64_t lq_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t lq_mono_ms(void)
{
    return lq_mono_us() / 1000u;
}

int64_t lq_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lq_wall_s(void)
{
    return lq_wall_ms() / 1000;
}

int lq_parse_ll(const char *s, long long min, long long max, long long *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

void lq_random_hex(char *buf, size_t n)
{
    unsigned char raw[8];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        uint64_t x = lq_mono_us() ^ ((uint64_t)getpid() << 32);
        memcpy(raw, &x, sizeof raw);
    }
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    for (; i < 8 && 2 * i + 2 < n; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[2 * i] = '\0';
}

int lq_parse_duration_s(const char *s, long long *out)
{
    static const struct {
        char unit;
        long long mul;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 24)
        return -1;
    long long mul = 1;
    char num[32];
    memcpy(num, s, n + 1);
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (num[n - 1] == units[i].unit) {
            mul = units[i].mul;
            num[--n] = '\0';
            break;
        }
    }
    long long v;
    if (lq_parse_ll(num, 0, INT64_MAX / 86400, &v) < 0)
        return -1;
    *out = v * mul;
    return 0;
}

uint64_t lq_fnv1a64_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t lq_fnv1a64(const void *p, size_t n)
{
    return lq_fnv1a64_add(LQ_FNV1A64_INIT, p, n);
}

uint64_t lq_hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint64_t lq_hash64(const void *p, size_t n)
{
    return lq_hash_mix(lq_fnv1a64(p, n));
}

size_t lq_fmt_int(char *buf, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    return len;
}

/* The escape of byte c in a JSON string (0: none needed). */
static char s_json_esc(unsigned char c)
{
    switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case '\b': return 'b';
    case '\f': return 'f';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return c < 0x20 ? 'u' : 0;
    }
}

size_t lq_json_escaped_len(const char *s, size_t n)
{
    size_t len = n + 2;
    for (size_t i = 0; i < n; i++) {
        char e = s_json_esc((unsigned char)s[i]);
        len += e == 'u' ? 5 : e ? 1 : 0;
    }
    return len;
}

size_t lq_json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, from = 0; /* from: start of the pending run of plain bytes */
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = s_json_esc(c);
        if (!e)
            continue;
        memcpy(out + o, s + from, i - from);
        o += i - from;
        from = i + 1;
        out[o++] = '\\';
        out[o++] = e;
        if (e == 'u') {
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (n > from)
        memcpy(out + o, s + from, n - from);
    o += n - from;
    out[o++] = '"';
    return o;
}
