/* fuzz_http: libFuzzer target for the request parser of the HTTP listener
 * behind the broker's /metrics (lq_http_parse in common/httpd.c): anything
 * on the network can send it bytes.
 *
 * Input: the bytes a client sends. Each prefix is parsed, as the listener
 * does while bytes trickle in. Properties: once a prefix is BAD, OK or
 * TOO_LARGE, the verdict on longer prefixes never goes back to MORE (the
 * listener answers at the first final verdict); an accepted request has
 * an uppercase method, a path starting with '/', no control characters
 * or spaces in path and query, and minor version 0 or 1.
 * Seeds: tests/fuzz/seeds/http/. */
#include "common/httpd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

/* Checks an accepted request head. */
static void s_check(const lq_httpd_req_t *r)
{
    if (!r->method[0] || r->path[0] != '/' || (r->minor != 0 && r->minor != 1))
        s_die("accepted request breaks a rule");
    for (const char *c = r->method; *c; c++)
        if (*c < 'A' || *c > 'Z')
            s_die("method not uppercase");
    for (const char *c = r->path; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            s_die("control character or space in path");
    for (const char *c = r->query; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            s_die("control character or space in query");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024)
        return 0;
    /* a small cap so that TOO_LARGE is reachable */
    size_t max = 64 + (size > 0 ? data[0] : 0) * 8;
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    int final = 0;
    lq_httpd_req_t r;
    for (size_t len = 0; len <= size; len++) {
        int rc = lq_http_parse(buf, len, max, &r);
        if (rc == LQ_HTTP_OK)
            s_check(&r);
        if (final && rc == LQ_HTTP_MORE)
            s_die("a final verdict went back to MORE");
        if (rc != LQ_HTTP_MORE)
            final = 1; /* the listener answers here; later bytes never count */
    }
    free(buf);
    return 0;
}
