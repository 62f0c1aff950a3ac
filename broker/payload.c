/* payload: see payload.h. */
#include "payload.h"

#include "../common/util.h"

#include <stdlib.h>
#include <string.h>

char *lq_payload_encode(const char *cid, const char *url, int64_t est_tokens, const char *body,
                        size_t body_len, size_t *len)
{
    size_t cl = strlen(cid), ul = strlen(url);
    size_t n = 3 * 22 + cl + ul + body_len; /* an upper bound */
    char *p = xmalloc(n + 1), *w = p;
    w += lq_fmt_int(w, (int64_t)cl);
    *w++ = ':';
    memcpy(w, cid, cl), w += cl;
    w += lq_fmt_int(w, (int64_t)ul);
    *w++ = ':';
    memcpy(w, url, ul), w += ul;
    w += lq_fmt_int(w, est_tokens);
    *w++ = ':';
    if (body_len)
        memcpy(w, body, body_len);
    w += body_len;
    *w = '\0';
    *len = (size_t)(w - p);
    return p;
}

/* Reads "<digits>:" at *p (before end) into *out and moves *p past the
 * colon. Returns 0, or -1 if there is no such field. */
static int s_number(const char **p, const char *end, int64_t *out, int allow_sign)
{
    const char *s = *p;
    int neg = 0;
    if (allow_sign && s < end && *s == '-')
        neg = 1, s++;
    if (s >= end || *s < '0' || *s > '9')
        return -1;
    uint64_t v = 0;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_C(1) << 62) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (s >= end || *s != ':')
        return -1;
    *out = neg ? -(int64_t)v : (int64_t)v;
    *p = s + 1;
    return 0;
}

int lq_payload_decode(const char *p, size_t len, lq_payload_t *out)
{
    const char *s = p, *end = p + len;
    int64_t n;
    if (s_number(&s, end, &n, 0) < 0 || n > end - s)
        return -1;
    out->cid = s;
    out->cid_len = (size_t)n;
    s += n;
    if (s_number(&s, end, &n, 0) < 0 || n > end - s)
        return -1;
    out->url = s;
    out->url_len = (size_t)n;
    s += n;
    if (s_number(&s, end, &out->est_tokens, 1) < 0)
        return -1;
    out->body = s;
    out->body_len = (size_t)(end - s);
    return 0;
}

int lq_member_format(char *buf, size_t size, const char *batch, int64_t index)
{
    char num[24];
    size_t bl = strlen(batch), nl = lq_fmt_int(num, index);
    if (bl + 1 + nl >= size)
        return -1;
    memcpy(buf, batch, bl);
    buf[bl] = '|';
    memcpy(buf + bl + 1, num, nl);
    buf[bl + 1 + nl] = '\0';
    return (int)(bl + 1 + nl);
}

int lq_member_parse(const char *member, char *batch, size_t size, int64_t *index)
{
    const char *bar = strchr(member, '|');
    if (!bar || bar == member || (size_t)(bar - member) >= size)
        return -1;
    long long v;
    if (lq_parse_ll(bar + 1, 0, INT64_MAX, &v) < 0)
        return -1;
    memcpy(batch, member, (size_t)(bar - member));
    batch[bar - member] = '\0';
    *index = v;
    return 0;
}
