/* http: see http.h. */
#include "http.h"

#include "../common/log.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_INITIAL_BODY 16384

typedef struct s_xfer {
    lq_http_t *h;
    CURL *easy;
    lq_http_done_cb cb;
    void *arg;
    char *buf;
    size_t len, cap;
    int too_large;
    lq_resp_headers_t hdr;
    char errbuf[CURL_ERROR_SIZE];
    uint64_t started_ms;
    struct s_xfer *prev, *next; /* active list */
} s_xfer_t;

struct lq_http {
    lq_loop_t *loop;
    CURLM *multi;
    lq_timer_t timer;
    lq_http_config_t cfg;
    CURL **free_easy;
    size_t nfree, capfree;
    s_xfer_t *active;
    size_t nactive;
    uint64_t connections;
};

static void s_check_done(lq_http_t *h);

/* Loop handler for a libcurl socket: lets libcurl act on it, then collects
 * completed transfers. */
static void s_on_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    lq_http_t *h = arg;
    int mask = 0;
    if (events & LQ_READABLE)
        mask |= CURL_CSELECT_IN;
    if (events & LQ_WRITABLE)
        mask |= CURL_CSELECT_OUT;
    if (events & LQ_ERROR_EV)
        mask |= CURL_CSELECT_ERR;
    int running = 0;
    curl_multi_socket_action(h->multi, fd, mask, &running);
    s_check_done(h);
}

/* Loop handler for libcurl's timeout. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    lq_http_t *h = arg;
    int running = 0;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION: mirrors libcurl's interest in a socket onto the
 * loop. Only touches the loop, never libcurl. Returns 0, or -1 when the
 * loop refuses the fd (libcurl then fails the transfers on it). */
static int s_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    lq_http_t *h = userp;
    if (what == CURL_POLL_REMOVE) {
        lq_loop_unwatch(h->loop, fd);
        return 0;
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= LQ_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= LQ_WRITABLE;
    if (lq_loop_watch(h->loop, fd, ev, s_on_fd, h) < 0) {
        LQ_ERROR("http: cannot watch socket %d", (int)fd);
        return -1;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: (re)arms or stops our one timer. Only touches
 * the loop. Returns 0. */
static int s_on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    lq_http_t *h = userp;
    if (timeout_ms < 0)
        lq_timer_stop(h->loop, &h->timer);
    else
        lq_timer_start(h->loop, &h->timer, (uint64_t)timeout_ms);
    return 0;
}

/* CURLOPT_WRITEFUNCTION: appends to the body buffer; returns 0 (abort)
 * when the body would exceed the cap. */
static size_t s_on_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    s_xfer_t *x = arg;
    size_t n = size * nmemb;
    size_t max = x->h->cfg.max_response_bytes;
    if (n > max - x->len) {
        x->too_large = 1;
        return 0;
    }
    if (x->len + n > x->cap) {
        size_t cap = x->cap ? x->cap : S_INITIAL_BODY;
        if (x->cap == 0 && x->hdr.content_length > 0 && (uint64_t)x->hdr.content_length <= max)
            cap = (size_t)x->hdr.content_length;
        while (cap < x->len + n)
            cap = cap > max / 2 ? max : cap * 2;
        x->buf = xrealloc(x->buf, cap);
        x->cap = cap;
    }
    memcpy(x->buf + x->len, ptr, n);
    x->len += n;
    return n;
}

/* CURLOPT_HEADERFUNCTION: feeds the header parser; aborts early when the
 * announced Content-Length is over the cap. */
static size_t s_on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    s_xfer_t *x = arg;
    size_t n = size * nmemb;
    lq_headers_feed(&x->hdr, ptr, n, lq_wall_s());
    if (x->hdr.content_length > 0 &&
        (uint64_t)x->hdr.content_length > (uint64_t)x->h->cfg.max_response_bytes) {
        x->too_large = 1;
        return 0;
    }
    return n;
}

lq_http_t *lq_http_new(lq_loop_t *loop, const lq_http_config_t *cfg)
{
    CURLM *multi = curl_multi_init();
    if (!multi)
        return NULL;
    lq_http_t *h = xcalloc(1, sizeof *h);
    h->loop = loop;
    h->multi = multi;
    h->cfg = *cfg;
    if (!h->cfg.user_agent)
        h->cfg.user_agent = "llmq-worker";
    lq_timer_init(&h->timer, s_on_timer, h);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, s_on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, s_on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* No per-host cap: admission control is ours (--concurrency). */
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    if (cfg->max_connects > 0)
        curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, cfg->max_connects);
    return h;
}

/* Takes an easy handle from the free list or makes one. NULL on failure. */
static CURL *s_easy_get(lq_http_t *h)
{
    if (h->nfree > 0)
        return h->free_easy[--h->nfree];
    return curl_easy_init();
}

/* Resets an easy handle and keeps it for reuse. Can't fail. */
static void s_easy_put(lq_http_t *h, CURL *e)
{
    curl_easy_reset(e);
    if (h->nfree == h->capfree) {
        h->capfree = h->capfree ? h->capfree * 2 : 64;
        h->free_easy = xrealloc(h->free_easy, h->capfree * sizeof *h->free_easy);
    }
    h->free_easy[h->nfree++] = e;
}

/* Links / unlinks x on the active list. Can't fail. */
static void s_link(lq_http_t *h, s_xfer_t *x)
{
    x->prev = NULL;
    x->next = h->active;
    if (h->active)
        h->active->prev = x;
    h->active = x;
    h->nactive++;
}

static void s_unlink(lq_http_t *h, s_xfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        h->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    h->nactive--;
}

/* Sets every option of one POST on e. Can't fail (libcurl option errors
 * surface as a failed transfer). */
static void s_setup(lq_http_t *h, CURL *e, s_xfer_t *x, const lq_http_req_t *req)
{
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* PIPEWAIT only where HTTP/2 can be negotiated (ALPN, so the wait ends
     * with the TLS handshake). On http:// libcurl 7.88 learns that a
     * connection cannot multiplex only from its first response, so with
     * PIPEWAIT every other transfer to the host would queue behind that
     * one response: a slow or hung first request stalls (and times out)
     * all of them. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(req->url, "https://", 8) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 60L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 30L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->cfg.user_agent);
    if (h->cfg.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, h->cfg.ca_file);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
}

int lq_http_post(lq_http_t *h, const lq_http_req_t *req, lq_http_done_cb cb, void *arg)
{
    CURL *e = s_easy_get(h);
    if (!e)
        return -1;
    s_xfer_t *x = xcalloc(1, sizeof *x);
    x->h = h;
    x->easy = e;
    x->cb = cb;
    x->arg = arg;
    lq_headers_init(&x->hdr);
    x->started_ms = lq_loop_now(h->loop);
    s_setup(h, e, x, req);
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        LQ_ERROR("http: cannot add a transfer: %s", curl_multi_strerror(mc));
        s_easy_put(h, e);
        free(x);
        return -1;
    }
    s_link(h, x);
    return 0;
}

/* Collects finished transfers (outside any libcurl callback), reports
 * them and recycles their handles. */
static void s_check_done(lq_http_t *h)
{
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        s_xfer_t *x = (s_xfer_t *)priv;
        long status = 0, nconn = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &nconn);
        curl_multi_remove_handle(h->multi, e);
        if (!x)
            continue; /* cannot happen: every handle we add has one */
        s_unlink(h, x);
        h->connections += (uint64_t)nconn;
        lq_http_resp_t r = {0};
        r.curl_code = (int)rc;
        r.curl_error = x->errbuf;
        r.status = status;
        r.body = x->buf;
        r.body_len = x->len;
        r.too_large = x->too_large;
        r.headers = &x->hdr;
        uint64_t now = lq_loop_now(h->loop);
        r.latency_ms = now > x->started_ms ? now - x->started_ms : 0;
        r.new_connection = nconn > 0;
        x->cb(&r, x->arg);
        s_easy_put(h, e);
        free(x->buf);
        free(x);
    }
}

size_t lq_http_active(const lq_http_t *h)
{
    return h->nactive;
}

uint64_t lq_http_connections(const lq_http_t *h)
{
    return h->connections;
}

void lq_http_destroy(lq_http_t **p)
{
    if (!p || !*p)
        return;
    lq_http_t *h = *p;
    while (h->active) {
        s_xfer_t *x = h->active;
        s_unlink(h, x);
        curl_multi_remove_handle(h->multi, x->easy);
        curl_easy_cleanup(x->easy);
        free(x->buf);
        free(x);
    }
    for (size_t i = 0; i < h->nfree; i++)
        curl_easy_cleanup(h->free_easy[i]);
    free(h->free_easy);
    curl_multi_cleanup(h->multi);
    lq_timer_stop(h->loop, &h->timer);
    free(h);
    *p = NULL;
}
