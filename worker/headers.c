/* headers: see headers.h. All arithmetic is done in integer nanoseconds
 * with saturation at LQ_DURATION_MAX_MS, so no input can overflow. */
#include "headers.h"

#include <curl/curl.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define S_NS_PER_MS 1000000LL
#define S_CAP_NS (LQ_DURATION_MAX_MS * S_NS_PER_MS)

/* Trims spaces, tabs, CR and LF on both ends of [*v, *v+*len). Can't fail. */
static void s_trim(const char **v, size_t *len)
{
    const char *p = *v;
    size_t n = *len;
    while (n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    *v = p;
    *len = n;
}

/* Parses "<digits>[.<digits>]" at the start of [p, end), scaled by unit_ns,
 * adding to *ns with saturation. Returns the number of bytes consumed, or 0
 * when there is no number there. */
static size_t s_decimal(const char *p, const char *end, long long unit_ns, long long *ns)
{
    const char *q = p;
    long long ip = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        if (ip < S_CAP_NS)
            ip = ip * 10 + (*q - '0');
        q++;
        digits++;
    }
    long long frac = 0, den = 1;
    if (q < end && *q == '.') {
        q++;
        while (q < end && *q >= '0' && *q <= '9') {
            if (den < 1000000000LL) {
                frac = frac * 10 + (*q - '0');
                den *= 10;
            }
            q++;
            digits++;
        }
    }
    if (digits == 0)
        return 0;
    long long add;
    if (ip > S_CAP_NS / unit_ns)
        add = S_CAP_NS;
    else
        add = ip * unit_ns + (long long)((__int128)frac * unit_ns / den);
    *ns = (*ns > S_CAP_NS - add) ? S_CAP_NS : *ns + add;
    return (size_t)(q - p);
}

/* Rounds a nanosecond count up to whole milliseconds. Can't fail. */
static int64_t s_ns_to_ms(long long ns)
{
    return (int64_t)((ns + S_NS_PER_MS - 1) / S_NS_PER_MS);
}

int lq_parse_ms(const char *v, size_t len, int64_t *out_ms)
{
    s_trim(&v, &len);
    long long ns = 0;
    size_t used = s_decimal(v, v + len, S_NS_PER_MS, &ns);
    if (used == 0 || used != len)
        return -1;
    *out_ms = s_ns_to_ms(ns);
    return 0;
}

int lq_parse_retry_after(const char *v, size_t len, int64_t now_s, int64_t *out_ms)
{
    s_trim(&v, &len);
    if (len == 0)
        return -1;
    long long ns = 0;
    size_t used = s_decimal(v, v + len, 1000 * S_NS_PER_MS, &ns);
    if (used == len) {
        *out_ms = s_ns_to_ms(ns);
        return 0;
    }
    if (used != 0 || len >= 128)
        return -1;
    char buf[128];
    memcpy(buf, v, len);
    buf[len] = '\0';
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    long long delta = (long long)t - (long long)now_s;
    if (delta < 0)
        delta = 0;
    if (delta > LQ_DURATION_MAX_MS / 1000)
        delta = LQ_DURATION_MAX_MS / 1000;
    *out_ms = (int64_t)delta * 1000;
    return 0;
}

int lq_parse_duration_ms(const char *v, size_t len, int64_t *out_ms)
{
    s_trim(&v, &len);
    if (len == 0)
        return -1;
    const char *p = v, *end = v + len;
    long long ns = 0;
    /* A bare number means seconds. */
    long long probe = 0;
    if (s_decimal(p, end, 1, &probe) == len) {
        ns = 0;
        s_decimal(p, end, 1000 * S_NS_PER_MS, &ns);
        *out_ms = s_ns_to_ms(ns);
        return 0;
    }
    while (p < end) {
        /* Find the unit after the number, then scale the number by it. */
        const char *u = p;
        while (u < end && ((*u >= '0' && *u <= '9') || *u == '.'))
            u++;
        const char *ue = u;
        while (ue < end && !((*ue >= '0' && *ue <= '9') || *ue == '.'))
            ue++;
        size_t ulen = (size_t)(ue - u);
        long long unit;
        if (ulen == 1 && *u == 'h')
            unit = 3600LL * 1000 * S_NS_PER_MS;
        else if (ulen == 1 && *u == 'm')
            unit = 60LL * 1000 * S_NS_PER_MS;
        else if (ulen == 1 && *u == 's')
            unit = 1000 * S_NS_PER_MS;
        else if (ulen == 2 && memcmp(u, "ms", 2) == 0)
            unit = S_NS_PER_MS;
        else if ((ulen == 2 && memcmp(u, "us", 2) == 0) ||
                 (ulen == 3 && memcmp(u, "\xc2\xb5s", 3) == 0))
            unit = 1000;
        else if (ulen == 2 && memcmp(u, "ns", 2) == 0)
            unit = 1;
        else
            return -1;
        if (u == p || s_decimal(p, u, unit, &ns) != (size_t)(u - p))
            return -1;
        p = ue;
    }
    *out_ms = s_ns_to_ms(ns);
    return 0;
}

int lq_parse_count(const char *v, size_t len, int64_t *out)
{
    s_trim(&v, &len);
    if (len == 0 || len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    *out = n;
    return 0;
}

int lq_parse_rfc3339(const char *v, size_t len, int64_t now_s, int64_t *out_ms)
{
    s_trim(&v, &len);
    char buf[64];
    if (len < 20 || len >= sizeof buf)
        return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    int y, mo, d, hh, mi, ss, used = 0;
    if (sscanf(buf, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &hh, &mi, &ss, &used) != 6 ||
        used != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mi > 59 || ss > 60)
        return -1;
    const char *p = buf + 19;
    long long frac_ms = 0;
    if (*p == '.') {
        long long den = 1;
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (den < 1000) {
                frac_ms = frac_ms * 10 + (*p - '0');
                den *= 10;
            }
        while (den < 1000) {
            frac_ms *= 10;
            den *= 10;
        }
    }
    long long off_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && p[1] && p[2] && p[3] == ':' && p[4] && p[5] &&
               !p[6]) {
        int oh = (p[1] - '0') * 10 + (p[2] - '0'), om = (p[4] - '0') * 10 + (p[5] - '0');
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        off_s = (*p == '+' ? 1 : -1) * (oh * 3600LL + om * 60LL);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    /* days from the civil date (proleptic Gregorian), no time zone library */
    int yy = y - (mo <= 2);
    long long era = (yy >= 0 ? yy : yy - 399) / 400;
    long long yoe = yy - era * 400;
    long long doy = (153LL * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    long long t_ms = ((days * 86400 + hh * 3600LL + mi * 60LL + ss) - off_s) * 1000 + frac_ms;
    long long delta = t_ms - (long long)now_s * 1000;
    if (delta < 0)
        delta = 0;
    if (delta > LQ_DURATION_MAX_MS)
        delta = LQ_DURATION_MAX_MS;
    *out_ms = (int64_t)delta;
    return 0;
}

void lq_headers_init(lq_resp_headers_t *h)
{
    memset(h, 0, sizeof *h);
    h->retry_after_ms = -1;
    h->retry_after_ms_hdr = -1;
    h->rl_remaining_requests = -1;
    h->rl_remaining_tokens = -1;
    h->rl_reset_requests_ms = -1;
    h->rl_reset_tokens_ms = -1;
    h->rl_limit_requests = -1;
    h->rl_limit_tokens = -1;
    h->content_length = -1;
}

/* Returns 1 if the header name [n, n+len) equals want, ignoring case. */
static int s_is(const char *n, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(n, want, len) == 0;
}

/* Stores a request id, keeping printable ASCII only and truncating.
 * Can't fail. */
static void s_set_request_id(lq_resp_headers_t *h, const char *v, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < LQ_REQUEST_ID_MAX; i++)
        if (v[i] > 0x20 && v[i] < 0x7f)
            h->request_id[o++] = v[i];
    h->request_id[o] = '\0';
}

/* The headers that carry one number: name, parser, field. */
static const struct {
    const char *name;
    int (*parse)(const char *v, size_t len, int64_t *out);
    size_t field;
} s_numbers[] = {
    {"retry-after-ms", lq_parse_ms, offsetof(lq_resp_headers_t, retry_after_ms_hdr)},
    {"x-ratelimit-remaining-requests", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_remaining_requests)},
    {"x-ratelimit-remaining-tokens", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_remaining_tokens)},
    {"x-ratelimit-reset-requests", lq_parse_duration_ms,
     offsetof(lq_resp_headers_t, rl_reset_requests_ms)},
    {"x-ratelimit-reset-tokens", lq_parse_duration_ms,
     offsetof(lq_resp_headers_t, rl_reset_tokens_ms)},
    {"x-ratelimit-limit-requests", lq_parse_count, offsetof(lq_resp_headers_t, rl_limit_requests)},
    {"x-ratelimit-limit-tokens", lq_parse_count, offsetof(lq_resp_headers_t, rl_limit_tokens)},
    {"anthropic-ratelimit-requests-limit", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_limit_requests)},
    {"anthropic-ratelimit-requests-remaining", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_remaining_requests)},
    {"anthropic-ratelimit-tokens-limit", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_limit_tokens)},
    {"anthropic-ratelimit-tokens-remaining", lq_parse_count,
     offsetof(lq_resp_headers_t, rl_remaining_tokens)},
    {"content-length", lq_parse_count, offsetof(lq_resp_headers_t, content_length)},
};

/* Stores the value of a header of s_numbers when it parses; other headers
 * and bad values change nothing. Can't fail. */
static void s_feed_number(lq_resp_headers_t *h, const char *name, size_t nlen, const char *v,
                          size_t vlen)
{
    for (size_t i = 0; i < sizeof s_numbers / sizeof s_numbers[0]; i++) {
        if (nlen != strlen(s_numbers[i].name) ||
            strncasecmp(name, s_numbers[i].name, nlen) != 0)
            continue;
        int64_t x;
        if (s_numbers[i].parse(v, vlen, &x) == 0)
            memcpy((char *)h + s_numbers[i].field, &x, sizeof x);
        return;
    }
}

void lq_headers_feed(lq_resp_headers_t *h, const char *line, size_t len, int64_t now_s)
{
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        lq_headers_init(h);
        return;
    }
    /* Every header read here starts with a, c, r or x: skip the rest
     * (date, server, content-type, ...) before looking further. */
    if (len == 0 || !strchr("acrxACRX", line[0]))
        return;
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return;
    const char *name = line;
    size_t nlen = (size_t)(colon - line);
    s_trim(&name, &nlen);
    const char *v = colon + 1;
    size_t vlen = len - (size_t)(v - line);
    s_trim(&v, &vlen);
    int64_t x;
    if (s_is(name, nlen, "x-request-id")) {
        s_set_request_id(h, v, vlen);
        h->have_x_request_id = 1;
    } else if (s_is(name, nlen, "request-id")) {
        if (!h->have_x_request_id)
            s_set_request_id(h, v, vlen);
    } else if (s_is(name, nlen, "retry-after")) {
        if (lq_parse_retry_after(v, vlen, now_s, &x) == 0)
            h->retry_after_ms = x;
    } else if (s_is(name, nlen, "anthropic-ratelimit-requests-reset")) {
        if (lq_parse_rfc3339(v, vlen, now_s, &x) == 0)
            h->rl_reset_requests_ms = x;
    } else if (s_is(name, nlen, "anthropic-ratelimit-tokens-reset")) {
        if (lq_parse_rfc3339(v, vlen, now_s, &x) == 0)
            h->rl_reset_tokens_ms = x;
    } else {
        s_feed_number(h, name, nlen, v, vlen);
    }
}

int64_t lq_headers_retry_after(const lq_resp_headers_t *h)
{
    if (h->retry_after_ms_hdr >= 0)
        return h->retry_after_ms_hdr;
    return h->retry_after_ms;
}
