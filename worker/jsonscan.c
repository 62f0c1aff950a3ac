/* jsonscan: see jsonscan.h. A table-free recursive-descent grammar turned
 * into a loop: containers are kept on a bit stack (1 = object), and each
 * step reads one value, then the separator that follows it. */
#include "jsonscan.h"

#include "../common/utf8.h"

#include <string.h>

typedef struct {
    const unsigned char *p, *end;
    unsigned char stack[LQ_JSONSCAN_MAX_DEPTH / 8];
    size_t depth;
    int unsure; /* a number jansson may refuse was seen */
} s_scan_t;

/* Which usage member a key names, at depth 2 under "usage". */
enum { S_NONE = -1, S_PROMPT, S_COMPLETION, S_INPUT, S_OUTPUT };

static void s_ws(s_scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Reads 4 hex digits. Returns the code unit, or -1. */
static long s_hex4(s_scan_t *s)
{
    if (s->end - s->p < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = *s->p++;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

enum { S_ESCAPED = 1, S_NUL = 2 };

/* Skips whole 8-byte words of plain string bytes (0x20..0x7f but '"' and
 * '\\') at s->p; the byte loop of s_string handles the rest. A word has a
 * byte that is not plain iff one of these has its high bit set for some
 * byte: x itself (>= 0x80), x - 0x20 (below 0x20), x ^ '"' - 1 and
 * x ^ '\\' - 1 (equal); borrows only ever add false hits above a true one. */
static void s_skip_plain(s_scan_t *s)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (s->end - s->p >= 8) {
        uint64_t x, q, b;
        memcpy(&x, s->p, 8);
        q = x ^ (ones * '"');
        b = x ^ (ones * '\\');
        uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x;
        if (hit & highs)
            return;
        s->p += 8;
    }
}

/* Reads a string (at its opening quote). Stores where its raw content
 * starts and its raw length (escapes not decoded) in *raw / *rawlen, and
 * in *escaped S_ESCAPED if it held an escape, | S_NUL if one was \u0000.
 * Returns 0 or -1. */
static int s_string(s_scan_t *s, const unsigned char **raw, size_t *rawlen, int *escaped)
{
    s->p++; /* '"' */
    *raw = s->p;
    *escaped = 0;
    while (s->p < s->end) {
        /* The common case first: plain bytes, a word at a time, then the
         * rest of them one by one. */
        s_skip_plain(s);
        while (s->p < s->end && *s->p >= 0x20 && *s->p < 0x80 && *s->p != '"' && *s->p != '\\')
            s->p++;
        if (s->p >= s->end)
            break;
        unsigned char c = *s->p;
        if (c == '"') {
            *rawlen = (size_t)(s->p - *raw);
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            *escaped |= S_ESCAPED;
            if (++s->p >= s->end)
                return -1;
            c = *s->p++;
            if (c == 'u') {
                long u = s_hex4(s);
                if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
                    return -1;
                if (u == 0)
                    *escaped |= S_NUL;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                        return -1;
                    s->p += 2;
                    long lo = s_hex4(s);
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                }
            } else if (!memchr("\"\\/bfnrt", c, 8)) {
                return -1;
            }
            continue;
        }
        size_t n = lq_utf8_seq(s->p, (size_t)(s->end - s->p), NULL);
        if (n == 0)
            return -1;
        s->p += n;
    }
    return -1;
}

/* Reads a number. Stores its value in *out when it is a non-negative
 * integer that fits, else -1. Sets s->unsure for a number jansson may
 * refuse: an integer of 19 digits or more (beyond 64 bits), a real with an
 * exponent of 3 digits or more or 200 integer digits or more (beyond a
 * double). Returns 0 or -1. */
static int s_number(s_scan_t *s, int64_t *out)
{
    const unsigned char *p = s->p, *e = s->end;
    int neg = 0, frac = 0, big = 0;
    size_t idigits = 0, edigits = 0;
    int64_t v = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9')
        return -1;
    if (*p == '0') {
        p++;
        idigits = 1;
    } else {
        while (p < e && *p >= '0' && *p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                big = 1;
            else
                v = v * 10 + (*p - '0');
            p++;
            idigits++;
        }
    }
    if (p < e && *p == '.') {
        frac = 1;
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        frac = 1;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9') {
            p++;
            edigits++;
        }
    }
    if (frac ? (edigits >= 3 || idigits >= 200) : idigits >= 19)
        s->unsure = 1;
    s->p = p;
    *out = neg || frac || big ? -1 : v;
    return 0;
}

/* Reads a literal (true, false, null). Returns 0 or -1. */
static int s_literal(s_scan_t *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int s_push(s_scan_t *s, int is_object)
{
    if (s->depth >= LQ_JSONSCAN_MAX_DEPTH)
        return -1;
    unsigned char bit = (unsigned char)(1u << (s->depth % 8));
    if (is_object)
        s->stack[s->depth / 8] |= bit;
    else
        s->stack[s->depth / 8] &= (unsigned char)~bit;
    s->depth++;
    return 0;
}

static int s_top_is_object(const s_scan_t *s)
{
    size_t i = s->depth - 1;
    return (s->stack[i / 8] >> (i % 8)) & 1;
}

/* The usage member a raw key names. */
static int s_usage_member(const unsigned char *k, size_t n)
{
    static const char *names[] = {"prompt_tokens", "completion_tokens", "input_tokens",
                                  "output_tokens"};
    for (int i = 0; i < 4; i++)
        if (strlen(names[i]) == n && memcmp(k, names[i], n) == 0)
            return i;
    return S_NONE;
}

/* Stores v as usage member m (-1: not a non-negative integer). */
static void s_set_member(lq_json_usage_t *u, int m, int64_t v)
{
    switch (m) {
    case S_PROMPT:
        u->prompt_tokens = v;
        break;
    case S_COMPLETION:
        u->completion_tokens = v;
        break;
    case S_INPUT:
        u->input_tokens = v;
        break;
    case S_OUTPUT:
        u->output_tokens = v;
        break;
    default:
        break;
    }
}

/* Reads one object key and its colon. Tracks where "usage" lives:
 * *in_usage (the value of a top-level "usage" key is next) and *member
 * (the next value is a member of the usage object). Returns 0 or -1. */
static int s_key(s_scan_t *s, int usage_depth, int *key_is_usage, int *member)
{
    s_ws(s);
    if (s->p >= s->end || *s->p != '"')
        return -1;
    const unsigned char *k;
    size_t kn;
    int esc;
    /* jansson refuses a NUL in a key even with JSON_ALLOW_NUL */
    if (s_string(s, &k, &kn, &esc) < 0 || (esc & S_NUL))
        return -1;
    *key_is_usage = s->depth == 1 && !esc && kn == 5 && memcmp(k, "usage", 5) == 0;
    *member = usage_depth > 0 && s->depth == (size_t)usage_depth && !esc ? s_usage_member(k, kn)
                                                                         : S_NONE;
    s_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return -1;
    s->p++;
    return 0;
}

int lq_json_scan(const char *body, size_t len, lq_json_usage_t *usage)
{
    lq_json_usage_t u = {-1, -1, -1, -1};
    s_scan_t s;
    s.p = (const unsigned char *)body;
    s.end = s.p + len;
    s.depth = 0;
    s.unsure = 0;
    int usage_depth = 0; /* depth of the usage object while inside it */
    int key_is_usage = 0, member = S_NONE, ok = 0;
    for (;;) {
        /* One value. */
        s_ws(&s);
        if (s.p >= s.end)
            goto out;
        unsigned char c = *s.p;
        int next_is_usage = key_is_usage;
        int this_member = member;
        key_is_usage = 0;
        member = S_NONE;
        if (next_is_usage)
            u = (lq_json_usage_t){-1, -1, -1, -1};
        s_set_member(&u, this_member, -1); /* a repeated member: the last wins */
        if (c == '{' || c == '[') {
            s.p++;
            if (s_push(&s, c == '{') < 0)
                goto out;
            if (next_is_usage && c == '{')
                usage_depth = (int)s.depth;
            s_ws(&s);
            if (s.p < s.end && *s.p == (c == '{' ? '}' : ']')) {
                s.p++;
                s.depth--;
                if ((int)s.depth < usage_depth)
                    usage_depth = 0;
            } else if (c == '{') {
                if (s_key(&s, usage_depth, &key_is_usage, &member) < 0)
                    goto out;
                continue;
            } else {
                continue;
            }
        } else if (c == '"') {
            const unsigned char *raw;
            size_t rawlen;
            int esc;
            if (s_string(&s, &raw, &rawlen, &esc) < 0)
                goto out;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            int64_t v;
            if (s_number(&s, &v) < 0)
                goto out;
            s_set_member(&u, this_member, v);
        } else if (s_literal(&s, c == 't' ? "true" : c == 'f' ? "false" : "null",
                             c == 't' ? 4 : c == 'f' ? 5 : 4) < 0) {
            goto out;
        }
        /* After a value: separators and closers, until the next value. */
        for (;;) {
            s_ws(&s);
            if (s.depth == 0) {
                ok = s.p != s.end ? 0 : s.unsure ? -1 : 1;
                goto out;
            }
            if (s.p >= s.end)
                goto out;
            int obj = s_top_is_object(&s);
            c = *s.p++;
            if (c == ',') {
                if (obj && s_key(&s, usage_depth, &key_is_usage, &member) < 0)
                    goto out;
                break;
            }
            if (c != (obj ? '}' : ']'))
                goto out;
            s.depth--;
            if ((int)s.depth < usage_depth)
                usage_depth = 0;
        }
    }
out:
    if (usage)
        *usage = u;
    return ok;
}
