/* curve: CURVE encryption and authentication for llmq's ZeroMQ sockets.
 *
 * Keys are Z85 text (40 characters), as zmq_curve_keypair() makes them. A
 * secret key lives in a file (first non-comment line); its public key is
 * derived from it. Servers (the broker's two ROUTERs) take a secret key and,
 * optionally, a file of allowed client public keys checked by a ZAP handler
 * (see lq_zap_t); clients (workers, the CLI) take the server's public key
 * and their own secret key, or an ephemeral pair when none is given. */
#ifndef LQ_CURVE_H
#define LQ_CURVE_H

#include "../common/loop.h"
#include "zsock.h"

#include <stddef.h>

/* Reads a Z85 secret key from path and derives its public key. Returns 0,
 * or -1 with a message in err (missing file, not a 40-character key). */
int lq_curve_read_secret(const char *path, char secret[41], char public_key[41], char *err,
                         size_t errlen);

/* Makes s a CURVE server with this secret key. Call before bind. 0 / -1. */
int lq_curve_server(lq_zsock_t *s, const char *secret);

/* Makes s a CURVE client of the server with server_public; client_secret
 * NULL means a fresh ephemeral key pair. Call before connect. 0 / -1 (err). */
int lq_curve_client(lq_zsock_t *s, const char *server_public, const char *client_secret,
                    char *err, size_t errlen);

/* Writes a new key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
 * Returns 0 or -1 with err. */
int lq_curve_keygen(const char *prefix, char *err, size_t errlen);

/* ZAP handler: answers the authentication requests of CURVE servers in one
 * ZeroMQ context from a set of allowed client public keys. */
typedef struct lq_zap lq_zap_t;

/* Binds inproc://zeromq.zap.01 in zctx and loads the allowed keys (one Z85
 * public key per line, '#' comments). Returns NULL with err. */
lq_zap_t *lq_zap_new(lq_loop_t *loop, void *zctx, const char *allowed_file, char *err,
                     size_t errlen);
void lq_zap_destroy(lq_zap_t **z);

#endif
