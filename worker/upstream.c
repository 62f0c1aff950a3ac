/* upstream: see upstream.h. */
#include "upstream.h"

#include "../common/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_KEY_FILE_MAX 65536

struct lq_upstreams {
    lq_upstream_t *v;
    size_t len;
    char **hdrs; /* static --header lines */
    size_t nhdrs;
};

lq_upstreams_t *lq_upstreams_new(void)
{
    return xcalloc(1, sizeof(lq_upstreams_t));
}

/* Overwrites a secret before freeing it. Safe on NULL. */
static void s_wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = 0;
    free(s);
}

void lq_upstreams_destroy(lq_upstreams_t **p)
{
    if (!p || !*p)
        return;
    lq_upstreams_t *u = *p;
    for (size_t i = 0; i < u->len; i++) {
        free(u->v[i].name);
        free(u->v[i].base_url);
        s_wipe_free(u->v[i].key);
        /* The list holds a copy of the Authorization line. */
        for (struct curl_slist *l = u->v[i].headers; l; l = l->next)
            if (strncasecmp(l->data, "Authorization:", 14) == 0)
                memset(l->data, 0, strlen(l->data));
        curl_slist_free_all(u->v[i].headers);
    }
    for (size_t i = 0; i < u->nhdrs; i++)
        free(u->hdrs[i]);
    free(u->hdrs);
    free(u->v);
    free(u);
    *p = NULL;
}

/* Returns 1 if name is a valid upstream name: 1..64 of [A-Za-z0-9_.-]. */
static int s_valid_name(const char *name, size_t len)
{
    if (len == 0 || len > LQ_UPSTREAM_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
            return 0;
    return 1;
}

int lq_upstreams_add(lq_upstreams_t *u, const char *name, const char *url, char *err, size_t errlen)
{
    if (!s_valid_name(name, strlen(name))) {
        snprintf(err, errlen, "bad upstream name '%.80s' (1-64 of A-Z a-z 0-9 _ . -)", name);
        return -1;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(err, errlen, "upstream '%s': URL '%.200s' must start with http:// or https://",
                 name, url);
        return -1;
    }
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "upstream '%s': URL contains a space or control character", name);
            return -1;
        }
    }
    const char *host = strstr(url, "://") + 3;
    if (*host == '\0' || *host == '/' || *host == '?') {
        snprintf(err, errlen, "upstream '%s': URL '%.200s' has no host", name, url);
        return -1;
    }
    if (lq_upstreams_find(u, name)) {
        snprintf(err, errlen, "upstream '%s' given twice", name);
        return -1;
    }
    u->v = xrealloc(u->v, (u->len + 1) * sizeof *u->v);
    lq_upstream_t *e = &u->v[u->len++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->base_url = xstrdup(url);
    return 0;
}

int lq_upstreams_add_spec(lq_upstreams_t *u, const char *spec, char *err, size_t errlen)
{
    const char *eq = strchr(spec, '=');
    if (!eq) {
        snprintf(err, errlen, "--upstream-named wants NAME=URL, got '%.200s'", spec);
        return -1;
    }
    char *name = xstrndup(spec, (size_t)(eq - spec));
    int rc = lq_upstreams_add(u, name, eq + 1, err, errlen);
    free(name);
    return rc;
}

int lq_upstreams_add_header(lq_upstreams_t *u, const char *line, char *err, size_t errlen)
{
    const char *colon = strchr(line, ':');
    size_t nlen = colon ? (size_t)(colon - line) : 0;
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    int ok = nlen > 0;
    for (size_t i = 0; ok && i < nlen; i++)
        ok = isalnum((unsigned char)line[i]) || strchr(tchar, line[i]) != NULL;
    for (const char *p = colon ? colon + 1 : line; ok && *p; p++)
        ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok) {
        snprintf(err, errlen, "--header wants 'Name: value', got '%.120s'", line);
        return -1;
    }
    if ((nlen == 13 && strncasecmp(line, "authorization", 13) == 0) ||
        (nlen == 19 && strncasecmp(line, "proxy-authorization", 19) == 0)) {
        snprintf(err, errlen,
                 "--header %.*s refused: credentials never go on the command line; set "
                 "LLMQ_API_KEY or LLMQ_API_KEY_FILE",
                 (int)nlen, line);
        return -1;
    }
    u->hdrs = xrealloc(u->hdrs, (u->nhdrs + 1) * sizeof *u->hdrs);
    u->hdrs[u->nhdrs++] = xstrdup(line);
    return 0;
}

void lq_key_env_name(const char *prefix, const char *name, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = prefix; *p && o + 1 < n; p++)
        out[o++] = *p;
    for (const char *p = name; *p && o + 1 < n; p++)
        out[o++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
    if (n)
        out[o] = '\0';
}

/* Returns 1 if key is non-empty printable ASCII without spaces. */
static int s_valid_key(const char *key)
{
    if (!*key)
        return 0;
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

char *lq_read_key_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(S_KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, S_KEY_FILE_MAX + 1, f);
    int bad_read = ferror(f);
    fclose(f);
    if (bad_read || n > S_KEY_FILE_MAX) {
        snprintf(err, errlen, "key file %s: %s", path, bad_read ? "read error" : "too large");
        memset(buf, 0, S_KEY_FILE_MAX + 1);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    size_t a = 0, b = n;
    while (a < b && isspace((unsigned char)buf[a]))
        a++;
    while (b > a && isspace((unsigned char)buf[b - 1]))
        b--;
    char *key = xstrndup(buf + a, b - a);
    memset(buf, 0, S_KEY_FILE_MAX + 1);
    free(buf);
    if (!s_valid_key(key)) {
        snprintf(err, errlen, "key file %s: %s", path,
                 *key ? "the key holds spaces or control characters" : "empty");
        s_wipe_free(key);
        return NULL;
    }
    return key;
}

/* Looks up one (value variable, file variable) pair. Returns 1 with *key
 * set, 0 when neither is set, -1 with err. */
static int s_key_from(const char *var, const char *file_var, char **key, char *err, size_t errlen)
{
    const char *v = getenv(var);
    const char *f = getenv(file_var);
    if (v && !*v)
        v = NULL;
    if (f && !*f)
        f = NULL;
    if (v && f) {
        snprintf(err, errlen, "both %s and %s are set; use one", var, file_var);
        return -1;
    }
    if (v) {
        if (!s_valid_key(v)) {
            snprintf(err, errlen, "%s holds spaces or control characters", var);
            return -1;
        }
        *key = xstrdup(v);
        return 1;
    }
    if (f) {
        *key = lq_read_key_file(f, err, errlen);
        return *key ? 1 : -1;
    }
    return 0;
}

/* Returns 1 if the static headers already hold a header called name. */
static int s_has_header(const lq_upstreams_t *u, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < u->nhdrs; i++)
        if (strncasecmp(u->hdrs[i], name, n) == 0 && u->hdrs[i][n] == ':')
            return 1;
    return 0;
}

int lq_upstreams_finish(lq_upstreams_t *u, char *err, size_t errlen)
{
    for (size_t i = 0; i < u->len; i++) {
        lq_upstream_t *e = &u->v[i];
        char var[160], file_var[160];
        lq_key_env_name("LLMQ_API_KEY_", e->name, var, sizeof var);
        lq_key_env_name("LLMQ_API_KEY_FILE_", e->name, file_var, sizeof file_var);
        s_wipe_free(e->key);
        e->key = NULL;
        int rc = s_key_from(var, file_var, &e->key, err, errlen);
        if (rc == 0 && strcmp(e->name, "default") == 0)
            rc = s_key_from("LLMQ_API_KEY", "LLMQ_API_KEY_FILE", &e->key, err, errlen);
        if (rc < 0)
            return -1;
        curl_slist_free_all(e->headers);
        struct curl_slist *l = NULL;
        if (!s_has_header(u, "content-type"))
            l = curl_slist_append(l, "Content-Type: application/json");
        if (!s_has_header(u, "accept"))
            l = curl_slist_append(l, "Accept: application/json");
        /* Here rather than CURLOPT_USERAGENT: libcurl 7.88 formats that one
         * twice per request, a byte at a time. */
        if (!s_has_header(u, "user-agent"))
            l = curl_slist_append(l, "User-Agent: " LQ_USER_AGENT);
        /* No 100-continue round trip before large bodies. */
        l = curl_slist_append(l, "Expect:");
        for (size_t h = 0; h < u->nhdrs; h++)
            l = curl_slist_append(l, u->hdrs[h]);
        if (e->key) {
            char *auth = xasprintf("Authorization: Bearer %s", e->key);
            l = curl_slist_append(l, auth);
            s_wipe_free(auth);
        }
        if (!l) {
            snprintf(err, errlen, "out of memory building headers");
            return -1;
        }
        e->headers = l;
    }
    return 0;
}

size_t lq_upstreams_count(const lq_upstreams_t *u)
{
    return u->len;
}

const lq_upstream_t *lq_upstreams_at(const lq_upstreams_t *u, size_t i)
{
    return i < u->len ? &u->v[i] : NULL;
}

const lq_upstream_t *lq_upstreams_find(const lq_upstreams_t *u, const char *name)
{
    if (!name || !*name)
        name = "default";
    for (size_t i = 0; i < u->len; i++)
        if (strcmp(u->v[i].name, name) == 0)
            return &u->v[i];
    return NULL;
}

/* Returns 1 if [s, s+len) is a version segment: 'v', a digit, then
 * letters or digits ("v1", "v2", "v1beta"). */
static int s_version_segment(const char *s, size_t len)
{
    if (len < 2 || s[0] != 'v' || !isdigit((unsigned char)s[1]))
        return 0;
    for (size_t i = 2; i < len; i++)
        if (!isalnum((unsigned char)s[i]))
            return 0;
    return 1;
}

char *lq_url_join(const char *base, const char *url, char *err, size_t errlen)
{
    if (!url || url[0] != '/') {
        snprintf(err, errlen, "url '%.200s' must be a path starting with '/'", url ? url : "");
        return NULL;
    }
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "url contains a space or control character");
            return NULL;
        }
    }
    const char *q = strchr(base, '?');
    size_t blen = q ? (size_t)(q - base) : strlen(base);
    const char *sep = strstr(base, "://");
    size_t host_at = sep && (size_t)(sep - base) < blen ? (size_t)(sep - base) + 3 : 0;
    while (blen > host_at && base[blen - 1] == '/')
        blen--;
    /* The base's last path segment, if the base has a path. */
    const char *path = memchr(base + host_at, '/', blen - host_at);
    if (path) {
        const char *last = base + blen;
        while (last > path && last[-1] != '/')
            last--;
        size_t last_len = (size_t)(base + blen - last);
        size_t first_len = strcspn(url + 1, "/?");
        if (s_version_segment(last, last_len) && first_len == last_len &&
            memcmp(url + 1, last, last_len) == 0)
            url += 1 + first_len;
    }
    const char *query = q ? q + 1 : NULL;
    if (query && *query)
        return xasprintf("%.*s%s%s%s", (int)blen, base, url, strchr(url, '?') ? "&" : "?", query);
    return xasprintf("%.*s%s", (int)blen, base, url);
}
