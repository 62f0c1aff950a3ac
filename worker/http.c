/* http: see http.h. */
#include "http.h"

#include "../common/log.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_INITIAL_BODY 16384
/* Default transfers per multi handle (lq_http_config_t.max_per_multi). */
#define S_SHARD_DEFAULT 256
/* ... for https:// (max_per_multi_tls): what one HTTP/2 connection carries
 * (libcurl's own default cap on streams per connection, and at or below
 * what servers announce), so that a multi needs one connection per host. */
#define S_SHARD_TLS_DEFAULT 100

typedef struct s_shard s_shard_t;

/* One easy handle and what a transfer on it needs. Kept, configured, on a
 * free list between transfers: the options that never change are set once
 * when it is made, the buffer is reused while it stays small. */
typedef struct s_xfer {
    lq_http_t *h;
    s_shard_t *shard; /* the multi it is on while active */
    CURL *easy;
    lq_http_done_cb cb;
    void *arg;
    char *buf;
    size_t len, cap;
    int too_large;
    lq_resp_headers_t hdr;
    char errbuf[CURL_ERROR_SIZE];
    uint64_t started_ms;
    struct s_xfer *prev, *next; /* active list, or the free list (next only) */
} s_xfer_t;

/* One multi handle, its connection cache and its timer. */
struct s_shard {
    lq_http_t *h;
    CURLM *multi;
    lq_timer_t timer;
    size_t nactive, max;
    int tls; /* carries https:// transfers only (else http:// only) */
};

struct lq_http {
    lq_loop_t *loop;
    lq_http_config_t cfg;
    int no_env_proxy; /* no proxy variable was set when the engine was made */
    CURLSH *share; /* TLS sessions and DNS answers, for every multi */
    s_shard_t **shards;
    size_t nshards;
    s_xfer_t *free_list;
    s_xfer_t *active;
    size_t nactive;
    uint64_t connections;
};

static void s_check_done(s_shard_t *sh);

/* Loop handler for a libcurl socket: lets libcurl act on it, then collects
 * completed transfers. */
static void s_on_fd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)loop;
    s_shard_t *sh = arg;
    int mask = 0;
    if (events & LQ_READABLE)
        mask |= CURL_CSELECT_IN;
    if (events & LQ_WRITABLE)
        mask |= CURL_CSELECT_OUT;
    if (events & LQ_ERROR_EV)
        mask |= CURL_CSELECT_ERR;
    int running = 0;
    curl_multi_socket_action(sh->multi, fd, mask, &running);
    s_check_done(sh);
}

/* Loop handler for libcurl's timeout. */
static void s_on_timer(lq_loop_t *loop, lq_timer_t *t, void *arg)
{
    (void)loop;
    (void)t;
    s_shard_t *sh = arg;
    int running = 0;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(sh);
}

/* CURLMOPT_SOCKETFUNCTION: mirrors libcurl's interest in a socket onto the
 * loop. Only touches the loop, never libcurl. Returns 0, or -1 when the
 * loop refuses the fd (libcurl then fails the transfers on it). */
static int s_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    s_shard_t *sh = userp;
    if (what == CURL_POLL_REMOVE) {
        lq_loop_unwatch(sh->h->loop, fd);
        return 0;
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= LQ_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= LQ_WRITABLE;
    if (lq_loop_watch(sh->h->loop, fd, ev, s_on_fd, sh) < 0) {
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
    s_shard_t *sh = userp;
    if (timeout_ms < 0)
        lq_timer_stop(sh->h->loop, &sh->timer);
    else
        lq_timer_start(sh->h->loop, &sh->timer, (uint64_t)timeout_ms);
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
        /* The first bytes of a body whose size was announced: exactly that
         * (a buffer kept from an earlier transfer may be too small). */
        if (x->len == 0 && x->hdr.content_length > 0 && (uint64_t)x->hdr.content_length <= max &&
            (size_t)x->hdr.content_length >= n)
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

/* 1 when none of the variables libcurl reads for a proxy is set. libcurl
 * 7.88 reads them (up to 8 getenv calls) for every transfer; when they are
 * all unset, telling it "no proxy" once per handle is the same and skips
 * that. */
static int s_no_env_proxy(void)
{
    static const char *vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                 "ALL_PROXY", "no_proxy", "NO_PROXY"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return 0;
    }
    return 1;
}

/* Makes one multi handle wired to the loop. NULL on failure. */
static s_shard_t *s_shard_new(lq_http_t *h, int tls)
{
    CURLM *multi = curl_multi_init();
    if (!multi)
        return NULL;
    s_shard_t *sh = xcalloc(1, sizeof *sh);
    sh->h = h;
    sh->multi = multi;
    sh->tls = tls;
    sh->max = tls ? h->cfg.max_per_multi_tls : h->cfg.max_per_multi;
    lq_timer_init(&sh->timer, s_on_timer, sh);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, s_on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, s_on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, sh);
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* No per-host cap: admission control is ours (--concurrency). */
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    long maxc = h->cfg.max_connects;
    if (maxc <= 0 || maxc > (long)sh->max)
        maxc = (long)sh->max;
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, maxc);
    /* HTTP/2: every transfer of a TLS multi fits on one connection per
     * host (sh->max <= the streams allowed on one). With PIPEWAIT (s_setup)
     * the first transfers wait for the first connection's ALPN instead of
     * each opening its own; and libcurl 7.88 opens a new connection for
     * every transfer that finds the first one full, all at once (66-151
     * connections for 250 transfers on one multi, measured). */
    curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)sh->max);
    return sh;
}

static void s_shard_destroy(s_shard_t **p)
{
    s_shard_t *sh = *p;
    if (!sh)
        return;
    curl_multi_cleanup(sh->multi);
    lq_timer_stop(sh->h->loop, &sh->timer);
    free(sh);
    *p = NULL;
}

lq_http_t *lq_http_new(lq_loop_t *loop, const lq_http_config_t *cfg)
{
    lq_http_t *h = xcalloc(1, sizeof *h);
    h->loop = loop;
    h->cfg = *cfg;
    if (h->cfg.max_per_multi == 0)
        h->cfg.max_per_multi = S_SHARD_DEFAULT;
    if (h->cfg.max_per_multi_tls == 0)
        h->cfg.max_per_multi_tls = S_SHARD_TLS_DEFAULT;
    h->no_env_proxy = s_no_env_proxy();
    /* One TLS session cache for all handles (libcurl keeps one per easy
     * handle otherwise, so a handle's first connection to a host is a full
     * handshake even when another resumed it), and one DNS cache for all
     * multis. Single-threaded: no lock callbacks. */
    h->share = curl_share_init();
    if (h->share) {
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    h->shards = xcalloc(1, sizeof *h->shards);
    h->shards[0] = h->share ? s_shard_new(h, 0) : NULL;
    if (!h->shards[0]) {
        if (h->share)
            curl_share_cleanup(h->share);
        free(h->shards);
        free(h);
        return NULL;
    }
    h->nshards = 1;
    return h;
}

/* The multi handle for a new transfer: the first of its kind (http:// or
 * https://) with room (so that transfers, and the connections they leave in
 * its cache, stay together), or a new one. NULL when libcurl cannot make
 * one. Linear in the number of multi handles (concurrency / their size). */
static s_shard_t *s_shard_pick(lq_http_t *h, int tls)
{
    for (size_t i = 0; i < h->nshards; i++)
        if (h->shards[i]->tls == tls && h->shards[i]->nactive < h->shards[i]->max)
            return h->shards[i];
    s_shard_t *sh = s_shard_new(h, tls);
    if (!sh)
        return NULL;
    h->shards = xrealloc(h->shards, (h->nshards + 1) * sizeof *h->shards);
    h->shards[h->nshards++] = sh;
    return sh;
}

/* Sets the options that are the same for every transfer, once per easy
 * handle. Can't fail (libcurl option errors surface as a failed
 * transfer). */
static void s_setup_once(lq_http_t *h, s_xfer_t *x)
{
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 60L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 30L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->cfg.connect_timeout_ms);
    /* gzip only: the encoding every provider offers; libcurl 7.88 formats
     * the header twice per request a byte at a time, and "" (everything
     * it can decode) is "deflate, gzip, br, zstd". */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip");
    if (h->cfg.user_agent)
        curl_easy_setopt(e, CURLOPT_USERAGENT, h->cfg.user_agent);
    if (h->cfg.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, h->cfg.ca_file);
    /* Trust the CA bundle file only (--ca-file, else the system's), not
     * also the hashed directory Debian's libcurl adds by default: with a
     * CA path set libcurl 7.88 does not cache the certificate store and
     * parses the whole bundle again for every TLS connection (a quarter
     * of the worker's instructions when 250 connections open). */
    curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_SHARE, h->share);
    if (h->no_env_proxy) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
}

/* Takes a transfer (and its configured easy handle) from the free list or
 * makes one. NULL on failure. */
static s_xfer_t *s_xfer_get(lq_http_t *h)
{
    s_xfer_t *x = h->free_list;
    if (x) {
        h->free_list = x->next;
        return x;
    }
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    x = xcalloc(1, sizeof *x);
    x->h = h;
    x->easy = e;
    s_setup_once(h, x);
    return x;
}

/* Keeps x for the next transfer: a body buffer up to S_INITIAL_BODY stays
 * (a bigger one is freed, so a few large answers do not pin memory).
 * Can't fail. */
static void s_xfer_put(lq_http_t *h, s_xfer_t *x)
{
    if (x->cap > S_INITIAL_BODY) {
        free(x->buf);
        x->buf = NULL;
        x->cap = 0;
    }
    x->len = 0;
    x->too_large = 0;
    x->errbuf[0] = '\0';
    x->cb = NULL;
    x->arg = NULL;
    x->shard = NULL;
    x->prev = NULL;
    x->next = h->free_list;
    h->free_list = x;
}

static void s_xfer_free(s_xfer_t *x)
{
    curl_easy_cleanup(x->easy);
    free(x->buf);
    free(x);
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

/* Sets the options of one POST that change per request. Can't fail
 * (libcurl option errors surface as a failed transfer). */
static void s_setup(s_xfer_t *x, const lq_http_req_t *req, int tls)
{
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    /* PIPEWAIT only where HTTP/2 can be negotiated (ALPN, so the wait ends
     * with the TLS handshake). On http:// libcurl 7.88 learns that a
     * connection cannot multiplex only from its first response, so with
     * PIPEWAIT every other transfer to the host would queue behind that
     * one response: a slow or hung first request stalls (and times out)
     * all of them. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, tls ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
}

int lq_http_post(lq_http_t *h, const lq_http_req_t *req, lq_http_done_cb cb, void *arg)
{
    int tls = strncasecmp(req->url, "https://", 8) == 0;
    s_shard_t *sh = s_shard_pick(h, tls);
    s_xfer_t *x = sh ? s_xfer_get(h) : NULL;
    if (!x)
        return -1;
    x->cb = cb;
    x->arg = arg;
    lq_headers_init(&x->hdr);
    x->started_ms = lq_loop_now(h->loop);
    s_setup(x, req, tls);
    CURLMcode mc = curl_multi_add_handle(sh->multi, x->easy);
    if (mc != CURLM_OK) {
        LQ_ERROR("http: cannot add a transfer: %s", curl_multi_strerror(mc));
        s_xfer_put(h, x);
        return -1;
    }
    x->shard = sh;
    sh->nactive++;
    s_link(h, x);
    return 0;
}

/* Collects finished transfers of one multi (outside any libcurl
 * callback), reports them and recycles their handles. */
static void s_check_done(s_shard_t *sh)
{
    lq_http_t *h = sh->h;
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(sh->multi, &left))) {
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
        curl_multi_remove_handle(sh->multi, e);
        if (!x)
            continue; /* cannot happen: every handle we add has one */
        s_unlink(h, x);
        sh->nactive--;
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
        s_xfer_put(h, x);
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
        curl_multi_remove_handle(x->shard->multi, x->easy);
        s_xfer_free(x);
    }
    while (h->free_list) {
        s_xfer_t *x = h->free_list;
        h->free_list = x->next;
        s_xfer_free(x);
    }
    for (size_t i = 0; i < h->nshards; i++)
        s_shard_destroy(&h->shards[i]);
    free(h->shards);
    curl_share_cleanup(h->share); /* after every easy handle that used it */
    free(h);
    *p = NULL;
}
