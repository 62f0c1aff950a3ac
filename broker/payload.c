/* payload: see payload.h. */
#include "payload.h"

#include "../common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *lq_payload_encode(const char *cid, const char *url, int64_t est_tokens, const char *body,
                        size_t body_len, size_t *len)
{
    size_t cl = strlen(cid), ul = strlen(url);
    char head[32], mid[32], tail[32];
    int hl = snprintf(head, sizeof head, "%zu:", cl);
    int ml = snprintf(mid, sizeof mid, "%zu:", ul);
    int tl = snprintf(tail, sizeof tail, "%" PRId64 ":", est_tokens);
    size_t n = (size_t)hl + cl + (size_t)ml + ul + (size_t)tl + body_len;
    char *p = xmalloc(n + 1), *w = p;
    memcpy(w, head, (size_t)hl), w += hl;
    memcpy(w, cid, cl), w += cl;
    memcpy(w, mid, (size_t)ml), w += ml;
    memcpy(w, url, ul), w += ul;
    memcpy(w, tail, (size_t)tl), w += tl;
    if (body_len)
        memcpy(w, body, body_len);
    p[n] = '\0';
    *len = n;
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
    int n = snprintf(buf, size, "%s|%" PRId64, batch, index);
    return n < 0 || (size_t)n >= size ? -1 : n;
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
