/* fuzz_curve: libFuzzer target for the CURVE key-file syntax
 * (lq_curve_next_key in wire/curve.c), shared by the secret key files and
 * the allowed-client-key files that an operator writes.
 *
 * Input: the file's text. Properties: the scan terminates, line numbers
 * grow, every key returned is a valid 40-character Z85 key that appears
 * whole on its own line of the input, and a line starting with '#' (after
 * blanks) never yields a key -- however long it is. A differential check
 * reimplements the documented syntax line by line and must agree on every
 * line's verdict. Seeds: tests/fuzz/seeds/curve/. */
#define _GNU_SOURCE
#include "wire/curve.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_curve: %s\n", what);
    abort();
}

/* The documented rule for one line p[0..n) (without LF): 0 skip, 1 key,
 * -1 bad. */
static int s_model(const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    if (n == 0 || *p == '#')
        return 0;
    if (n != 40 || memchr(p, '\0', n))
        return -1;
    char k[41];
    uint8_t bin[32];
    memcpy(k, p, 40);
    k[40] = '\0';
    return zmq_z85_decode(bin, k) ? 1 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    size_t pos = 0, mpos = 0;
    int lineno = 0, mline = 0, rc;
    char key[41];
    do {
        rc = lq_curve_next_key(text, size, &pos, &lineno, key);
        /* the model: walk lines until one that is not skipped */
        int m = 0;
        while (mpos < size) {
            const char *p = text + mpos, *nl = memchr(p, '\n', size - mpos);
            size_t n = nl ? (size_t)(nl - p) : size - mpos;
            mpos += n + (nl != NULL);
            mline++;
            if ((m = s_model(p, n)) != 0)
                break;
        }
        if (rc != m || (rc != 0 && (lineno != mline || pos != mpos)))
            s_die("scanner and model disagree");
        if (rc == 1 && (strlen(key) != 40 || !memmem(text, size, key, 40)))
            s_die("key not from the input");
    } while (rc == 1);
    free(text);
    return 0;
}
