/* utf8: see utf8.h. */
#include "utf8.h"

#include "util.h"

#include <stdint.h>
#include <string.h>

/* Stores msg in *why when why is given. Returns 0 (no sequence). */
static size_t s_bad(const char **why, const char *msg)
{
    if (why)
        *why = msg;
    return 0;
}

size_t lq_utf8_seq(const unsigned char *s, size_t avail, const char **why)
{
    if (avail == 0)
        return s_bad(why, "truncated sequence");
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc0)
        return s_bad(why, "unexpected continuation byte");
    if (c < 0xc2)
        return s_bad(why, "overlong encoding");
    if (c >= 0xf5)
        return s_bad(why, "byte that never appears in UTF-8");
    size_t n = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    for (size_t k = 1; k < n; k++)
        if (k >= avail || (s[k] & 0xc0) != 0x80)
            return s_bad(why, "truncated sequence");
    unsigned c1 = s[1];
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xf0 && c1 < 0x90))
        return s_bad(why, "overlong encoding");
    if (c == 0xed && c1 >= 0xa0)
        return s_bad(why, "surrogate code point");
    if (c == 0xf4 && c1 >= 0x90)
        return s_bad(why, "code point above U+10FFFF");
    return n;
}

int lq_utf8_check(const char *s, size_t n, long long *col, const char **why)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    long long chars = 0; /* code points before p[i] */
    while (i < n) {
        if (i + 8 <= n) { /* ASCII fast path, 8 bytes at a time */
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                chars += 8;
                continue;
            }
        }
        size_t k = lq_utf8_seq(p + i, n - i, why);
        if (k == 0) {
            *col = chars + 1;
            return -1;
        }
        i += k;
        chars++;
    }
    return 0;
}

size_t lq_utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

char *lq_utf8_clean(const char *s, size_t len, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out = xmalloc((len < max ? len : max) + 1);
    size_t o = 0, i = 0;
    while (i < len) {
        size_t n = lq_utf8_seq(u + i, len - i, NULL);
        if (n == 0) {
            if (o + 1 > max)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + n > max)
            break;
        if (n == 1 && (u[i] < 0x20 || u[i] == 0x7f)) {
            out[o++] = ' ';
        } else {
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += n;
    }
    out[o] = '\0';
    return out;
}
