/* jobscan: see jobscan.h. The rules mirror jobline.c (field checks, the
 * token estimate walk) and jansson 2.14's load.c (what it accepts); where
 * matching jansson exactly would take effort, the scanner gives up. */
#include "client/jobscan.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define S_MAX_NEST 64         /* containers; jansson allows 2048 */
#define S_MAX_KEYS 64         /* per object, for the duplicate-key check */
#define S_KEY_STACK 512       /* keys of all open objects */
#define S_COUNT_DEPTH 16      /* as S_MAX_DEPTH in jobline.c */
#define S_MAX_OUT (1ll << 40) /* as S_MAX_OUT_TOKENS in jobline.c */

typedef struct {
    const char *s;
    size_t n;
} s_span_t;

enum { S_PLAIN, S_ROOT, S_BODY }; /* what an object is */

typedef struct {
    const char *p, *e;
    int depth;
    size_t nkeys;
    int64_t chars; /* prompt characters counted */
    /* what the root and body objects held */
    s_span_t f[3]; /* custom_id, method, url (raw, no escapes) */
    int have[3];
    s_span_t body;
    int have_body;
    int64_t out[3]; /* max_completion_tokens, max_tokens, max_output_tokens */
    int have_out[3];
    int64_t n;
    int have_n;
    s_span_t keys[S_KEY_STACK]; /* keys of the open objects, innermost last;
                                   last, so that only the rest is zeroed */
} s_sc_t;

static const char *const s_root_keys[3] = {"custom_id", "method", "url"};
static const char *const s_out_keys[3] = {"max_completion_tokens", "max_tokens",
                                          "max_output_tokens"};

/* Is the raw key k the literal lit? Can't fail. */
static int s_is(s_span_t k, const char *lit)
{
    size_t n = strlen(lit);
    return k.n == n && memcmp(k.s, lit, n) == 0;
}

/* Skips JSON whitespace (as jansson: space, tab, CR, LF). Can't fail. */
static void s_skip_ws(s_sc_t *sc)
{
    while (sc->p < sc->e && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\r' || *sc->p == '\n'))
        sc->p++;
}

/* Four hex digits at p (before e) into *u; 0 or -1. */
static int s_hex4(const unsigned char *p, const unsigned char *e, unsigned *u)
{
    if (e - p < 4)
        return -1;
    *u = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        *u = *u << 4 | d;
    }
    return 0;
}

/* A string at sc->p (an opening quote). Sets *out to the raw contents and
 * *esc if they hold escapes; adds its code points to sc->chars if count.
 * Gives up on what jansson refuses: control characters, bad escapes,
 * \u0000, unpaired surrogates. Returns 0 or -1. */
static int s_string(s_sc_t *sc, s_span_t *out, int *esc, int count)
{
    const unsigned char *p = (const unsigned char *)sc->p + 1;
    const unsigned char *e = (const unsigned char *)sc->e, *start = p;
    int64_t chars = 0;
    *esc = 0;
    for (;;) {
        if (p >= e)
            return -1;
        unsigned c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            chars += (c & 0xC0) != 0x80; /* the line is valid UTF-8 */
            p++;
            continue;
        }
        *esc = 1;
        chars++;
        if (p + 1 >= e)
            return -1;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return -1;
        }
        unsigned u, l;
        if (s_hex4(p + 2, e, &u) < 0 || u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return -1;
        if (u >= 0xD800 && u <= 0xDBFF) { /* must be followed by a low surrogate */
            if (e - p < 12 || p[6] != '\\' || p[7] != 'u' || s_hex4(p + 8, e, &l) < 0 ||
                l < 0xDC00 || l > 0xDFFF)
                return -1;
            p += 12;
        } else {
            p += 6;
        }
    }
    out->s = (const char *)start;
    out->n = (size_t)(p - start);
    if (count)
        sc->chars += chars;
    sc->p = (const char *)p + 1;
    return 0;
}

/* A number at sc->p. Sets *is_int (no fraction, no exponent) and *val.
 * Gives up on what jansson might refuse or read differently: more than
 * 18 integer digits (int64 overflow), an exponent of 3+ digits (double
 * overflow). Returns 0 or -1. */
static int s_number(s_sc_t *sc, int *is_int, int64_t *val)
{
    const char *p = sc->p, *e = sc->e;
    int neg = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    const char *ds = p;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return -1;
    size_t ndig = (size_t)(p - ds);
    if (ndig > 18)
        return -1;
    *is_int = 1;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return -1;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        *is_int = 0;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        const char *xs = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == xs || p - xs > 2)
            return -1;
        *is_int = 0;
    }
    if (*is_int) {
        int64_t v = 0;
        for (size_t i = 0; i < ndig; i++)
            v = v * 10 + (ds[i] - '0');
        *val = neg ? -v : v;
    }
    sc->p = p;
    return 0;
}

static int s_object(s_sc_t *sc, int role, int cd);
static int s_array(s_sc_t *sc, int cd);

/* Any value at sc->p. cd is the depth of the token-estimate walk
 * (jobline.c s_chars) at this value, -1 when not counting. For numbers,
 * *is_int and *val are set when the pointers are non-NULL. 0 or -1. */
static int s_value(s_sc_t *sc, int cd, int *is_int, int64_t *val)
{
    int ii = 0;
    int64_t v = 0;
    if (cd > S_COUNT_DEPTH)
        cd = -1;
    if (is_int)
        *is_int = 0;
    if (sc->p >= sc->e)
        return -1;
    switch (*sc->p) {
    case '"': {
        s_span_t s;
        int esc;
        return s_string(sc, &s, &esc, cd >= 0);
    }
    case '{':
        return s_object(sc, S_PLAIN, cd);
    case '[':
        return s_array(sc, cd);
    case 't':
    case 'f':
    case 'n': {
        const char *lit = *sc->p == 't' ? "true" : *sc->p == 'f' ? "false" : "null";
        size_t n = strlen(lit);
        if ((size_t)(sc->e - sc->p) < n || memcmp(sc->p, lit, n) != 0)
            return -1;
        sc->p += n;
        return 0;
    }
    default:
        if (s_number(sc, &ii, &v) < 0)
            return -1;
        if (ii && cd >= 0)
            sc->chars += 4; /* a token id */
        if (is_int) {
            *is_int = ii;
            *val = v;
        }
        return 0;
    }
}

/* Enters the array or object whose opener is at sc->p. Returns 1 when an
 * item follows, 0 when the closer came at once (consumed, depth restored),
 * -1 when nested too deep. */
static int s_open(s_sc_t *sc, char closer)
{
    if (++sc->depth > S_MAX_NEST)
        return -1;
    sc->p++;
    s_skip_ws(sc);
    if (sc->p < sc->e && *sc->p == closer) {
        sc->p++;
        sc->depth--;
        return 0;
    }
    return 1;
}

/* After an item of an array or object: returns 1 after a ',' (another item
 * follows), 0 after the closer (consumed, depth restored), else -1. */
static int s_next(s_sc_t *sc, char closer)
{
    s_skip_ws(sc);
    if (sc->p < sc->e && *sc->p == ',') {
        sc->p++;
        s_skip_ws(sc);
        return 1;
    }
    if (sc->p < sc->e && *sc->p == closer) {
        sc->p++;
        sc->depth--;
        return 0;
    }
    return -1;
}

/* An array at sc->p; elements are walked at depth cd + 1. 0 or -1. */
static int s_array(s_sc_t *sc, int cd)
{
    int rc = s_open(sc, ']');
    while (rc == 1) {
        if (s_value(sc, cd >= 0 ? cd + 1 : -1, NULL, NULL) < 0)
            return -1;
        rc = s_next(sc, ']');
    }
    return rc;
}

/* The value of member k of an object of the given role. 0 or -1. */
static int s_member(s_sc_t *sc, int role, int cd, s_span_t k)
{
    if (role == S_ROOT) {
        for (int i = 0; i < 3; i++) {
            if (!s_is(k, s_root_keys[i]))
                continue;
            int esc;
            if (sc->p >= sc->e || *sc->p != '"' || s_string(sc, &sc->f[i], &esc, 0) < 0 || esc)
                return -1;
            sc->have[i] = 1;
            return 0;
        }
        if (s_is(k, "body")) {
            if (sc->p >= sc->e || *sc->p != '{')
                return -1;
            sc->body.s = sc->p;
            if (s_object(sc, S_BODY, -1) < 0)
                return -1;
            sc->body.n = (size_t)(sc->p - sc->body.s);
            sc->have_body = 1;
            return 0;
        }
    } else if (role == S_BODY) {
        if (s_is(k, "messages") || s_is(k, "prompt") || s_is(k, "input"))
            return s_value(sc, 0, NULL, NULL);
        int ii;
        int64_t v;
        for (int i = 0; i < 3; i++) {
            if (!s_is(k, s_out_keys[i]))
                continue;
            if (s_value(sc, -1, &ii, &v) < 0)
                return -1;
            sc->have_out[i] = ii;
            sc->out[i] = v;
            return 0;
        }
        if (s_is(k, "n")) {
            if (s_value(sc, -1, &ii, &v) < 0)
                return -1;
            sc->have_n = ii;
            sc->n = v;
            return 0;
        }
    } else if (cd >= 0 && (s_is(k, "text") || s_is(k, "content"))) {
        return s_value(sc, cd + 1, NULL, NULL);
    }
    return s_value(sc, -1, NULL, NULL);
}

/* An object at sc->p. Keys with escapes, duplicate keys and objects with
 * too many keys make it give up. 0 or -1. */
static int s_object(s_sc_t *sc, int role, int cd)
{
    size_t base = sc->nkeys;
    int rc = s_open(sc, '}');
    while (rc == 1) {
        s_span_t k;
        int esc;
        if (sc->p >= sc->e || *sc->p != '"' || s_string(sc, &k, &esc, 0) < 0 || esc)
            return -1;
        if (sc->nkeys - base >= S_MAX_KEYS || sc->nkeys >= S_KEY_STACK)
            return -1;
        for (size_t i = base; i < sc->nkeys; i++)
            if (sc->keys[i].n == k.n && memcmp(sc->keys[i].s, k.s, k.n) == 0)
                return -1; /* a duplicate key */
        sc->keys[sc->nkeys++] = k;
        s_skip_ws(sc);
        if (sc->p >= sc->e || *sc->p != ':')
            return -1;
        sc->p++;
        s_skip_ws(sc);
        if (s_member(sc, role, cd, k) < 0)
            return -1;
        rc = s_next(sc, '}');
    }
    sc->nkeys = base;
    return rc;
}

int lq_jobscan(char *line, size_t n, lq_job_spec_t *spec)
{
    s_sc_t sc;
    memset(&sc, 0, offsetof(s_sc_t, keys));
    sc.p = line;
    sc.e = line + n;
    s_skip_ws(&sc);
    if (sc.p >= sc.e || *sc.p != '{' || s_object(&sc, S_ROOT, -1) < 0)
        return 0;
    s_skip_ws(&sc);
    if (sc.p != sc.e)
        return 0;

    /* The field rules of lq_jobline_parse(); any failure: let it report. */
    s_span_t id = sc.f[0], method = sc.f[1], url = sc.f[2];
    if (!sc.have[0] || !sc.have[1] || !sc.have[2] || !sc.have_body)
        return 0;
    if (id.n == 0 || id.n > LQ_MAX_CUSTOM_ID || !s_is(method, "POST"))
        return 0;
    if (url.n == 0 || url.s[0] != '/' || url.n > LQ_MAX_URL || sc.body.n > LQ_MAX_JOB_BODY)
        return 0;
    for (size_t i = 0; i < url.n; i++)
        if ((unsigned char)url.s[i] <= 0x20 || url.s[i] == 0x7f)
            return 0;

    /* Certainly valid: terminate the strings in place (closing quotes and
     * the byte after the body, which is whitespace, ',' or '}'). */
    line[id.s + id.n - line] = '\0';
    line[url.s + url.n - line] = '\0';
    line[sc.body.s + sc.body.n - line] = '\0';
    spec->custom_id = id.s;
    spec->url = url.s;
    spec->body = sc.body.s;
    spec->body_len = sc.body.n;

    int64_t out = -1;
    for (int i = 0; i < 3 && out < 0; i++)
        if (sc.have_out[i])
            out = sc.out[i] < 0 ? 0 : sc.out[i] > S_MAX_OUT ? S_MAX_OUT : sc.out[i];
    if (out < 0)
        out = strstr(spec->url, "/embeddings") ? 0 : 16;
    if (sc.have_n && sc.n > 1)
        out *= sc.n > 128 ? 128 : sc.n;
    spec->est_tokens = (sc.chars + 3) / 4 + out;
    return 1;
}
