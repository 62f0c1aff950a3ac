/* http: libmicrohttpd driven from our epoll loop, and the request side of
 * the gateway.
 *
 * The daemon runs in MHD's external epoll mode (MHD_USE_EPOLL without an
 * internal thread): its one epoll fd is watched on our loop (readable ->
 * MHD_run), and a before-sleep hook arms a timer from MHD_get_timeout() so
 * that MHD's own timeouts and pending work run too. Nothing here blocks
 * except the broker calls the handlers make.
 *
 * A request: the first call of the access handler makes an lq_gw_req_t and
 * checks the bearer token; the body arrives in pieces (streamed to
 * files.c for uploads, collected up to 1 MiB otherwise); the last call
 * routes it. The request is freed by MHD's completion callback. */
#include "http.h"

#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LQ_GW_MAX_BODY (1024u * 1024u)

struct lq_http {
    lq_gw_t *gw;
    struct MHD_Daemon *d;
    int epfd;
    lq_timer_t timer;
};

/* ---- replies ---- */

int lq_gw_reply_json(lq_gw_req_t *r, unsigned status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    int rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int lq_gw_reply_error(lq_gw_req_t *r, unsigned status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_object();
    json_object_set_new(e, "message", json_string(msg));
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "param", param ? json_string(param) : json_null());
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    return lq_gw_reply_json(r, status, json_pack("{s:o}", "error", e));
}

int lq_gw_reply_not_found(lq_gw_req_t *r, const char *kind, const char *id)
{
    return lq_gw_reply_error(r, 404, "invalid_request_error", NULL, "id", "No such %s: '%s'",
                             kind, id);
}

int lq_gw_reply_octets(lq_gw_req_t *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    int rc = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

const char *lq_gw_query(lq_gw_req_t *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

int lq_gw_call(lq_gw_t *gw, lq_msg_t *m, lq_msg_t *reply)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = lq_rpc_call(gw->rpc, m, reply, 3000);
        if (rc == 1)
            return 1;
    }
    return 0;
}

/* ---- authentication ---- */

/* Sets r->owner from a known bearer token; leaves it "" otherwise. The
 * comparison looks at every byte of every token (no early exit). */
static void s_authenticate(lq_gw_req_t *r)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return;
    const char *tok = h + 7;
    size_t tlen = strlen(tok);
    int found = 0;
    for (size_t i = 0; i < r->gw->ntokens; i++) {
        const char *t = r->gw->tokens[i];
        size_t n = strlen(t);
        unsigned char diff = (unsigned char)(n != tlen);
        for (size_t k = 0; k < n; k++)
            diff |= (unsigned char)(t[k] ^ (k < tlen ? tok[k] : 0));
        found |= diff == 0;
    }
    if (found)
        lq_store_owner(tok, r->owner);
}

/* ---- routing ---- */

/* Splits "/v1/<coll>[/<id>[/<action>]]". Returns the number of segments
 * after /v1 (1..3), or 0 if the path has another shape. Pointers go into
 * path, which is modified. */
static int s_split(char *path, char **coll, char **id, char **action)
{
    *coll = *id = *action = NULL;
    if (strncmp(path, "/v1/", 4) != 0)
        return 0;
    char *segs[4] = {0};
    int n = 0;
    for (char *save = NULL, *p = strtok_r(path + 4, "/", &save); p;
         p = strtok_r(NULL, "/", &save)) {
        if (n == 3)
            return 0;
        segs[n++] = p;
    }
    *coll = segs[0];
    *id = segs[1];
    *action = segs[2];
    return n;
}

/* Dispatches a complete, authenticated request to its handler. */
static int s_route(lq_gw_req_t *r)
{
    char *copy = xstrdup(r->path), *coll, *id, *action;
    int n = s_split(copy, &coll, &id, &action);
    const char *m = r->method;
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
    int rc = -1;
    if (n >= 1 && strcmp(coll, "files") == 0) {
        if (n == 1 && post)
            rc = lq_files_create(r);
        else if (n == 1 && get)
            rc = lq_files_list(r);
        else if (n == 2 && get)
            rc = lq_files_get(r, id);
        else if (n == 2 && strcmp(m, "DELETE") == 0)
            rc = lq_files_delete(r, id);
        else if (n == 3 && get && strcmp(action, "content") == 0)
            rc = lq_files_content(r, id);
    } else if (n >= 1 && strcmp(coll, "batches") == 0) {
        if (n == 1 && post)
            rc = lq_batches_create(r);
        else if (n == 1 && get)
            rc = lq_batches_list(r);
        else if (n == 2 && get)
            rc = lq_batches_get(r, id);
        else if (n == 3 && post && strcmp(action, "cancel") == 0)
            rc = lq_batches_cancel(r, id);
    }
    free(copy);
    if (rc < 0)
        rc = lq_gw_reply_error(r, 404, "invalid_request_error", NULL, NULL,
                               "Invalid URL (%s %s)", m, r->path);
    return rc;
}

/* ---- MHD callbacks ---- */

static int s_is_upload(const char *method, const char *url)
{
    return strcmp(method, "POST") == 0 &&
           (strcmp(url, "/v1/files") == 0 || strcmp(url, "/v1/files/") == 0);
}

/* Collects a piece of a non-upload body (up to LQ_GW_MAX_BODY). */
static void s_body_append(lq_gw_req_t *r, const char *data, size_t len)
{
    if (r->body_too_big || r->body_len + len > LQ_GW_MAX_BODY) {
        r->body_too_big = 1;
        return;
    }
    r->body = xrealloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
}

/* MHD's access handler, called for the headers, each piece of the
 * body and once more at its end (see the top of this file). */
static enum MHD_Result s_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *data_size, void **con_cls)
{
    (void)version;
    lq_http_t *h = cls;
    lq_gw_req_t *r = *con_cls;
    if (!r) { /* first call: headers only */
        r = xcalloc(1, sizeof *r);
        r->gw = h->gw;
        r->conn = conn;
        r->method = method;
        r->path = xstrdup(url);
        s_authenticate(r);
        *con_cls = r;
        if (r->owner[0] && s_is_upload(method, url) && lq_files_upload_begin(r) < 0)
            r->body_too_big = 1; /* not multipart: refused at the end */
        return MHD_YES;
    }
    if (*data_size > 0) {
        if (r->owner[0] && r->upload)
            lq_files_upload_data(r, data, *data_size);
        else if (r->owner[0])
            s_body_append(r, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }
    if (!r->owner[0])
        return (enum MHD_Result)lq_gw_reply_error(
            r, 401, "invalid_request_error", "invalid_api_key", NULL,
            "Incorrect API key provided (Authorization: Bearer TOKEN, from the tokens file)");
    if (r->body_too_big && !r->upload)
        return (enum MHD_Result)lq_gw_reply_error(
            r, s_is_upload(method, url) ? 400 : 413, "invalid_request_error", NULL, NULL,
            s_is_upload(method, url) ? "Uploads must be multipart/form-data"
                                     : "Request body over 1 MiB");
    return (enum MHD_Result)s_route(r);
}

/* MHD's completion callback: frees the request, whatever its fate. */
static void s_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    lq_gw_req_t *r = *con_cls;
    if (!r)
        return;
    lq_files_upload_end(r);
    free(r->body);
    free(r->path);
    free(r);
    *con_cls = NULL;
}

/* ---- the daemon on our loop ---- */

/* Lets MHD do all it can without blocking. */
static void s_run(lq_http_t *h)
{
    MHD_run(h->d);
}

/* MHD's epoll fd is readable. */
static void s_on_epoll(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    s_run(arg);
}

/* MHD's timeout is due (or it has work queued). */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_run(arg);
}

/* Before sleeping: let MHD's timeout (0 when it has work queued) wake us. */
static void s_before_sleep(lq_loop_t *loop, void *arg)
{
    lq_http_t *h = arg;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->d, &ms) == MHD_YES)
        lq_timer_start(loop, &h->timer, ms > 60000 ? 60000 : (uint64_t)ms);
    else
        lq_timer_stop(loop, &h->timer);
}

/* Parses HOST:PORT (HOST an IPv4 address, "*" or "" for any). */
static int s_parse_listen(const char *listen, struct sockaddr_in *sa)
{
    const char *colon = strrchr(listen, ':');
    long long port;
    if (!colon || lq_parse_ll(colon + 1, 0, 65535, &port) < 0)
        return -1;
    char host[64];
    size_t n = (size_t)(colon - listen);
    if (n >= sizeof host)
        return -1;
    memcpy(host, listen, n);
    host[n] = '\0';
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (n == 0 || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return 0;
}

lq_http_t *lq_http_new(lq_gw_t *gw, const char *listen, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    if (s_parse_listen(listen, &sa) < 0) {
        snprintf(err, errlen, "bad --listen '%s' (want IPV4:PORT)", listen);
        return NULL;
    }
    lq_http_t *h = xcalloc(1, sizeof *h);
    h->gw = gw;
    h->d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG, ntohs(sa.sin_port), NULL, NULL, s_access, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, s_completed,
        h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)512, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
        MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        h->d ? MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info) {
        snprintf(err, errlen, "cannot listen on %s", listen);
        lq_http_destroy(&h);
        return NULL;
    }
    h->epfd = info->epoll_fd;
    lq_timer_init(&h->timer, s_on_timer, h);
    if (lq_loop_watch(gw->loop, h->epfd, LQ_READABLE, s_on_epoll, h) < 0 ||
        lq_loop_add_before_sleep(gw->loop, s_before_sleep, h) < 0) {
        snprintf(err, errlen, "cannot watch the HTTP daemon");
        lq_http_destroy(&h);
        return NULL;
    }
    return h;
}

int lq_http_port(const lq_http_t *h)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : -1;
}

void lq_http_destroy(lq_http_t **p)
{
    if (!p || !*p)
        return;
    lq_http_t *h = *p;
    if (h->d) {
        lq_timer_stop(h->gw->loop, &h->timer);
        lq_loop_unwatch(h->gw->loop, h->epfd);
        MHD_stop_daemon(h->d);
    }
    free(h);
    *p = NULL;
}
