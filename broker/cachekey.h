/* cachekey: the response cache's key of a request.
 *
 * Two requests share a key when they go to the same upstream, at the same
 * URL, with the same JSON body up to key order and whitespace (the body is
 * canonicalised: parsed, keys sorted, printed compactly). The key is
 * "<upstream>:<sha-256 of upstream NUL url NUL canonical body, first 128
 * bits in hex>", so one upstream's entries can be found by prefix. Pure. */
#ifndef LQ_CACHEKEY_H
#define LQ_CACHEKEY_H

#include <stddef.h>

/* Room for any key: an upstream name (128) + ':' + 32 hex digits. */
#define LQ_CACHE_KEY_MAX 168

/* Writes the key of (upstream, url, body[0..len)) into out. Returns 0, or -1
 * when the body is not JSON (such a request is never cached). */
int lq_cache_key(const char *upstream, const char *url, const char *body, size_t len,
                 char out[LQ_CACHE_KEY_MAX]);

#endif
