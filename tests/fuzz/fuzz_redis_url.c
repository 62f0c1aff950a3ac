/* fuzz_redis_url: libFuzzer target for the broker's Redis URL parser
 * (lq_redis_url_parse in broker/redis.c); the URL comes from a flag or the
 * environment, and may be pasted from anywhere.
 *
 * Input: the URL (a NUL ends it early, as in a C string). Properties: an
 * accepted URL has a non-empty host without control characters, a port in
 * 1..65535, a db in 0..1000000, NUL-terminated fields; an error message
 * never contains the password part of the input. Rebuilding the URL from
 * the parts and parsing it again gives the same parts.
 * Seeds: tests/fuzz/seeds/redis_url/. */
#include "broker/redis.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_redis_url: %s\n", what);
    abort();
}

/* 1 when s holds a control character. */
static int s_has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *url = malloc(size + 1);
    memcpy(url, data, size);
    url[size] = '\0';
    lq_redis_url_t u, v;
    char err[256];
    if (lq_redis_url_parse(url, &u, err, sizeof err) < 0) {
        /* a password of 6+ characters must not show up in the message */
        const char *at = strrchr(url, '@'), *colon = strchr(url + (size > 8 ? 8 : 0), ':');
        if (at && colon && colon < at && at - colon > 6) {
            char pw[512];
            snprintf(pw, sizeof pw, "%.*s", (int)(at - colon - 1), colon + 1);
            /* (unless the "password" is a piece of the fixed texts) */
            static const char fixed[] =
                "redis URL must start with redis:// (got scheme '') bad port in redis URL bad host "
                "in redis URL bad database number in redis URL bad user or password in redis URL "
                "(too long or control characters)";
            /* (or of a scheme, which the message may name) */
            const char *sep = strstr(url, "://");
            char scheme[64] = "";
            if (sep && sep - url < 60)
                snprintf(scheme, sizeof scheme, "%.*s", (int)(sep - url), url);
            if (strlen(pw) > 6 && strstr(err, pw) && !strstr(fixed, pw) && !strstr(scheme, pw))
                s_die("error message shows the password");
        }
        free(url);
        return 0;
    }
    if (!u.host[0] || s_has_ctl(u.host) || s_has_ctl(u.user) || s_has_ctl(u.pass) ||
        u.port < 1 || u.port > 65535 || u.db < 0 || u.db > 1000000)
        s_die("accepted URL breaks a rule");
    if (!strchr(u.host, '/') && !strchr(u.host, ':') && !strchr(u.user, ':') &&
        !strchr(u.pass, '@') && !strchr(u.host, '@') && !strchr(u.user, '@')) {
        char again[1024];
        snprintf(again, sizeof again, "redis://%s%s%s%s%s:%d/%d", u.user, u.user[0] || u.pass[0] ? ":" : "",
                 u.pass, u.user[0] || u.pass[0] ? "@" : "", u.host, u.port, u.db);
        if (lq_redis_url_parse(again, &v, err, sizeof err) < 0)
            s_die("rebuilt URL refused");
        if (strcmp(u.host, v.host) || strcmp(u.user, v.user) || strcmp(u.pass, v.pass) ||
            u.port != v.port || u.db != v.db)
            s_die("rebuilt URL parses differently");
    }
    free(url);
    return 0;
}
