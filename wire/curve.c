/* curve: see curve.h. */
#include "curve.h"

#include "frames.h"

#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Reads lines of f into line[0..n) until one holds a key: leading blanks
 * skipped, the key cut at the first blank or line end, blank lines and '#'
 * comments passed over; *lineno counts the lines read. Returns the key (in
 * line) or NULL at the end of the file. The one parser of key files. */
static char *s_next_key(FILE *f, char *line, size_t n, int *lineno)
{
    while (fgets(line, (int)n, f)) {
        (*lineno)++;
        char *p = line + strspn(line, " \t");
        size_t len = strcspn(p, "\r\n \t");
        p[len] = '\0';
        if (len > 0 && p[0] != '#')
            return p;
    }
    return NULL;
}

/* Reads the first key of path into out. Returns 0, or -1 with err. */
static int s_first_line(const char *path, char *out, size_t n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[256];
    int lineno = 0;
    const char *key = s_next_key(f, line, sizeof line, &lineno);
    if (key)
        snprintf(out, n, "%s", key);
    fclose(f);
    if (!key)
        snprintf(err, errlen, "%s: no key in the file", path);
    return key ? 0 : -1;
}

static int s_valid_z85_key(const char *k)
{
    uint8_t bin[32];
    return strlen(k) == 40 && zmq_z85_decode(bin, k) != NULL;
}

int lq_curve_read_secret(const char *path, char secret[41], char public_key[41], char *err,
                         size_t errlen)
{
    char buf[256];
    if (s_first_line(path, buf, sizeof buf, err, errlen) < 0)
        return -1;
    if (!s_valid_z85_key(buf)) {
        snprintf(err, errlen, "%s: not a 40-character Z85 CURVE key", path);
        return -1;
    }
    memcpy(secret, buf, 41);
    if (zmq_curve_public(public_key, secret) != 0) {
        snprintf(err, errlen, "%s: cannot derive the public key: %s", path, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int lq_curve_server(lq_zsock_t *s, const char *secret)
{
    int one = 1;
    void *z = lq_zsock_raw(s);
    if (zmq_setsockopt(z, ZMQ_CURVE_SERVER, &one, sizeof one) < 0)
        return -1;
    if (zmq_setsockopt(z, ZMQ_CURVE_SECRETKEY, secret, 40) < 0)
        return -1;
    return zmq_setsockopt(z, ZMQ_ZAP_DOMAIN, "llmq", 4);
}

int lq_curve_client(lq_zsock_t *s, const char *server_public, const char *client_secret,
                    char *err, size_t errlen)
{
    if (!s_valid_z85_key(server_public)) {
        snprintf(err, errlen, "the server key is not a 40-character Z85 CURVE key");
        return -1;
    }
    char pub[41], sec[41];
    if (client_secret) {
        memcpy(sec, client_secret, 41);
        if (zmq_curve_public(pub, sec) != 0) {
            snprintf(err, errlen, "bad client secret key");
            return -1;
        }
    } else if (zmq_curve_keypair(pub, sec) != 0) {
        snprintf(err, errlen, "cannot make a CURVE key pair: %s", zmq_strerror(errno));
        return -1;
    }
    void *z = lq_zsock_raw(s);
    if (zmq_setsockopt(z, ZMQ_CURVE_SERVERKEY, server_public, 40) < 0 ||
        zmq_setsockopt(z, ZMQ_CURVE_PUBLICKEY, pub, 40) < 0 ||
        zmq_setsockopt(z, ZMQ_CURVE_SECRETKEY, sec, 40) < 0) {
        snprintf(err, errlen, "cannot set CURVE keys: %s", zmq_strerror(errno));
        return -1;
    }
    memset(sec, 0, sizeof sec);
    return 0;
}

int lq_curve_keygen(const char *prefix, char *err, size_t errlen)
{
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        snprintf(err, errlen, "cannot make a key pair: %s (libzmq without CURVE?)",
                 zmq_strerror(errno));
        return -1;
    }
    char *kpath = xasprintf("%s.key", prefix), *ppath = xasprintf("%s.pub", prefix);
    int rc = -1;
    int fd = open(kpath, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *pf = NULL;
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", kpath, strerror(errno));
        goto out;
    }
    char text[128];
    int n = snprintf(text, sizeof text, "# llmq CURVE secret key (keep private)\n%s\n", sec);
    if (write(fd, text, (size_t)n) != n) {
        snprintf(err, errlen, "%s: %s", kpath, strerror(errno));
        close(fd);
        goto out;
    }
    close(fd);
    pf = fopen(ppath, "w");
    if (!pf || fprintf(pf, "%s\n", pub) < 0 || fclose(pf) != 0) {
        snprintf(err, errlen, "%s: %s", ppath, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    memset(sec, 0, sizeof sec);
    free(kpath);
    free(ppath);
    return rc;
}

/* ---- ZAP ---- */

struct lq_zap {
    lq_loop_t *loop;
    void *sock;
    int fd;
    uint8_t (*keys)[32];
    size_t nkeys;
    lq_timer_t tick;
};

static int s_allowed(const lq_zap_t *z, const uint8_t *key, size_t len)
{
    if (len != 32)
        return 0;
    for (size_t i = 0; i < z->nkeys; i++)
        if (memcmp(z->keys[i], key, 32) == 0)
            return 1;
    return 0;
}

/* Answers every pending request (REP: receive one, reply, repeat). */
static void s_zap_drain(lq_zap_t *z)
{
    for (int handled = 0; handled < 1000; handled++) {
        lq_frames_t f;
        if (!lq_frames_recv(&f, z->sock))
            return;
        zmq_msg_t *parts = f.part;
        int n = f.kept;
        /* version, request id, domain, address, identity, mechanism, key */
        int ok = n >= 7 && zmq_msg_size(&parts[5]) == 5 &&
                 memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
                 s_allowed(z, zmq_msg_data(&parts[6]), zmq_msg_size(&parts[6]));
        if (!ok) {
            char addr[64] = "?";
            if (n >= 4)
                snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&parts[3]),
                         (const char *)zmq_msg_data(&parts[3]));
            LQ_WARN("refused a connection from %s: client key not allowed", addr);
        }
        const char *code = ok ? "200" : "400", *text = ok ? "OK" : "client key not allowed";
        zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2)
            zmq_send(z->sock, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), ZMQ_SNDMORE);
        else
            zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
        zmq_send(z->sock, code, 3, ZMQ_SNDMORE);
        zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
        zmq_send(z->sock, "", 0, 0);
        lq_frames_clear(&f);
    }
}

static void s_zap_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    s_zap_drain(arg);
}

/* Backstop for the edge-triggered ZMQ_FD. */
static void s_zap_tick(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    s_zap_drain(arg);
    lq_timer_start(loop, t, 50);
}

lq_zap_t *lq_zap_new(lq_loop_t *loop, void *zctx, const char *allowed_file, char *err,
                     size_t errlen)
{
    FILE *f = fopen(allowed_file, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", allowed_file, strerror(errno));
        return NULL;
    }
    lq_zap_t *z = xcalloc(1, sizeof *z);
    char line[256];
    int lineno = 0;
    const char *p;
    while ((p = s_next_key(f, line, sizeof line, &lineno))) {
        uint8_t bin[32];
        if (strlen(p) != 40 || !zmq_z85_decode(bin, p)) {
            snprintf(err, errlen, "%s:%d: not a 40-character Z85 public key", allowed_file,
                     lineno);
            fclose(f);
            free(z->keys);
            free(z);
            return NULL;
        }
        z->keys = xrealloc(z->keys, (z->nkeys + 1) * sizeof *z->keys);
        memcpy(z->keys[z->nkeys++], bin, 32);
    }
    fclose(f);
    z->loop = loop;
    z->sock = zmq_socket(zctx, ZMQ_REP);
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    size_t fl = sizeof z->fd;
    if (!z->sock || zmq_bind(z->sock, "inproc://zeromq.zap.01") < 0 ||
        zmq_getsockopt(z->sock, ZMQ_FD, &z->fd, &fl) < 0) {
        snprintf(err, errlen, "cannot start the ZAP handler: %s", zmq_strerror(errno));
        if (z->sock)
            zmq_close(z->sock);
        free(z->keys);
        free(z);
        return NULL;
    }
    lq_loop_watch(loop, z->fd, LQ_READABLE, s_zap_fd, z);
    lq_timer_init(&z->tick, s_zap_tick, z);
    lq_timer_start(loop, &z->tick, 50);
    LQ_INFO("CURVE: %zu allowed client keys", z->nkeys);
    return z;
}

void lq_zap_destroy(lq_zap_t **p)
{
    if (!p || !*p)
        return;
    lq_zap_t *z = *p;
    lq_loop_unwatch(z->loop, z->fd);
    lq_timer_stop(z->loop, &z->tick);
    zmq_close(z->sock);
    free(z->keys);
    free(z);
    *p = NULL;
}
