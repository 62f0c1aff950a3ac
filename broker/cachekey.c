/* cachekey: see cachekey.h. SHA-256 from OpenSSL's libcrypto: the key must
 * not collide for different requests (a collision would answer one request
 * with another's response), which a 64-bit non-cryptographic hash does not
 * promise. */
#include "cachekey.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lq_cache_key(const char *upstream, const char *url, const char *body, size_t len,
                 char out[LQ_CACHE_KEY_MAX])
{
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!j)
        return -1;
    char *canon = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!canon)
        return -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, upstream, strlen(upstream) + 1) == 1 &&
             EVP_DigestUpdate(ctx, url, strlen(url) + 1) == 1 &&
             EVP_DigestUpdate(ctx, canon, strlen(canon)) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;
    EVP_MD_CTX_free(ctx);
    free(canon);
    if (!ok)
        return -1;
    int n = snprintf(out, LQ_CACHE_KEY_MAX, "%.128s:", upstream);
    for (int i = 0; i < 16; i++)
        n += snprintf(out + n, LQ_CACHE_KEY_MAX - (size_t)n, "%02x", md[i]);
    return 0;
}
