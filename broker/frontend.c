/* frontend: see frontend.h. Each request that needs Redis keeps the
 * client's identity and request id in a small context until the reply comes
 * back. */
#include "frontend.h"

#include "../common/log.h"
#include "../common/util.h"
#include "../wire/curve.h"
#include "../wire/zsock.h"
#include "cachekey.h"
#include "payload.h"
#include "record.h"
#include "scripts.h"

#include <errno.h>
#include <zmq.h>

#include <stdlib.h>
#include <string.h>

struct lq_frontend {
    lq_broker_t *b;
    lq_zsock_t *sock;
};

typedef struct {
    lq_frontend_t *f;
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    uint64_t req;
    uint8_t cmd;
    char batch[LQ_MAX_ID + 1];
    char upstream[LQ_MAX_ID + 1];
    int64_t priority, timeout_ms, n;
} s_ctx_t;

static s_ctx_t *s_ctx(lq_frontend_t *f, const uint8_t *ident, size_t len, uint64_t req, uint8_t cmd)
{
    s_ctx_t *c = xcalloc(1, sizeof *c);
    c->f = f;
    memcpy(c->ident, ident, len);
    c->ident_len = len;
    c->req = req;
    c->cmd = cmd;
    return c;
}

static void s_reply(s_ctx_t *c, lq_msg_t *m)
{
    lq_zsock_send(c->f->sock, c->ident, c->ident_len, m);
}

static void s_error(lq_frontend_t *f, const uint8_t *ident, size_t len, uint64_t req,
                    const char *code, const char *message)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_ERROR;
    m.u.error.req = req;
    m.u.error.code = code;
    m.u.error.message = message;
    lq_zsock_send(f->sock, ident, len, &m);
}

static void s_ctx_error(s_ctx_t *c, const char *code, const char *message)
{
    s_error(c->f, c->ident, c->ident_len, c->req, code, message);
}

/* Replies "unavailable" for a lost Redis reply, "internal" for an error
 * reply. Returns 1 if the reply is unusable (and was answered). */
static int s_bad_reply(s_ctx_t *c, redisReply *reply, int type)
{
    if (!reply) {
        s_ctx_error(c, "unavailable", "the broker lost its Redis connection; retry");
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        LQ_ERROR("redis error for %s: %s", lq_cmd_name(c->cmd), reply->str);
        s_ctx_error(c, "internal", "Redis refused the operation (see the broker log)");
        return 1;
    }
    if (reply->type != type) {
        s_ctx_error(c, "internal", "unexpected Redis reply");
        return 1;
    }
    return 0;
}

static int s_eval(s_ctx_t *c, int script, lq_redis_cb cb, int argc, const char **argv,
                  const size_t *lens)
{
    if (lq_redis_eval(lq_broker_redis(c->f->b), script, cb, c, 0, argc, argv, lens) < 0) {
        s_ctx_error(c, "unavailable", "the broker cannot reach Redis right now; retry");
        free(c);
        return -1;
    }
    return 0;
}

static int s_valid_id(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* ---- OPEN ---- */

static void s_on_open(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (s_bad_reply(c, reply, REDIS_REPLY_ARRAY)) {
        free(c);
        return;
    }
    if (reply->elements != 4) {
        s_ctx_error(c, "internal", "unexpected Redis reply");
    } else if (reply->element[1]->integer < 0) {
        s_ctx_error(c, "name_conflict",
                    "a batch with this --name exists for a different input file; "
                    "use another name");
    } else {
        const char *id = reply->element[0]->str;
        lq_broker_batch_open(c->f->b, id, c->upstream, c->priority, c->timeout_ms);
        lq_msg_t m = {0};
        m.cmd = LQ_C_OPENED;
        m.u.opened.req = c->req;
        m.u.opened.batch = id;
        m.u.opened.created = reply->element[1]->integer != 0;
        m.u.opened.next_index = reply->element[2]->integer;
        m.u.opened.state = reply->element[3]->str ? reply->element[3]->str : "";
        LQ_INFO("batch %s %s", id, m.u.opened.created ? "opened" : "resumed");
        s_reply(c, &m);
    }
    free(c);
}

static void s_open(lq_frontend_t *f, const uint8_t *ident, size_t len, const lq_c_open_t *o)
{
    if (o->name && !s_valid_id(o->name)) {
        s_error(f, ident, len, o->req, "bad_request",
                "batch name may only hold letters, digits, '_', '-' and '.'");
        return;
    }
    if (o->max_attempts < 1 || o->timeout_ms < 1) {
        s_error(f, ident, len, o->req, "bad_request", "max_attempts and timeout must be >= 1");
        return;
    }
    char full[512];
    if (lq_broker_admit(f->b, 0, full, sizeof full) < 0) {
        s_error(f, ident, len, o->req, "redis_full", full);
        return;
    }
    s_ctx_t *c = s_ctx(f, ident, len, o->req, LQ_C_OPEN);
    snprintf(c->upstream, sizeof c->upstream, "%s", o->upstream ? o->upstream : "default");
    c->priority = o->priority;
    c->timeout_ms = o->timeout_ms;
    char id[40], hex[17], ma[24], to[24], pr[24], now[24];
    lq_random_hex(hex, sizeof hex);
    snprintf(id, sizeof id, "batch_%s", hex);
    snprintf(ma, sizeof ma, "%lld", (long long)o->max_attempts);
    snprintf(to, sizeof to, "%lld", (long long)o->timeout_ms);
    snprintf(pr, sizeof pr, "%lld", (long long)o->priority);
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_s());
    const char *argv[10] = {lq_broker_prefix(f->b),
                            o->name ? o->name : "",
                            c->upstream,
                            ma,
                            to,
                            pr,
                            now,
                            id,
                            o->fingerprint ? o->fingerprint : "",
                            o->cache ? "1" : "0"};
    s_eval(c, LQ_SCRIPT_OPEN, s_on_open, 10, argv, NULL);
}

/* ---- CHUNK ---- */

static void s_on_chunk(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (!s_bad_reply(c, reply, REDIS_REPLY_ARRAY) && reply->elements >= 1) {
        long long code = reply->element[0]->integer;
        long long submitted = reply->elements > 1 ? reply->element[1]->integer : 0;
        if (code == -1) {
            s_ctx_error(c, "not_found", "no such batch");
        } else if (code == -2) {
            char msg[128];
            snprintf(msg, sizeof msg, "chunk leaves a gap: the batch holds %lld jobs", submitted);
            s_ctx_error(c, "gap", msg);
        } else if (code == -3) {
            s_ctx_error(c, "closed", "the batch no longer accepts jobs");
        } else {
            lq_msg_t m = {0};
            m.cmd = LQ_C_CHUNK_ACK;
            m.u.chunk_ack.req = c->req;
            m.u.chunk_ack.batch = c->batch;
            m.u.chunk_ack.next_index = code;
            s_reply(c, &m);
            lq_broker_kick(c->f->b, c->batch);
        }
    }
    free(c);
}

static void s_chunk(lq_frontend_t *f, const uint8_t *ident, size_t len, const lq_c_chunk_t *ch)
{
    for (size_t i = 0; i < ch->njobs; i++) {
        if (ch->jobs[i].url[0] != '/' || ch->jobs[i].est_tokens < 0) {
            s_error(f, ident, len, ch->req, "bad_request", "job url must start with '/'");
            return;
        }
    }
    size_t bytes = 0;
    for (size_t i = 0; i < ch->njobs; i++)
        bytes += ch->jobs[i].body_len + strlen(ch->jobs[i].custom_id) + strlen(ch->jobs[i].url);
    char full[512];
    if (lq_broker_admit(f->b, bytes, full, sizeof full) < 0) {
        s_error(f, ident, len, ch->req, "redis_full", full);
        return;
    }
    s_ctx_t *c = s_ctx(f, ident, len, ch->req, LQ_C_CHUNK);
    snprintf(c->batch, sizeof c->batch, "%s", ch->batch);
    /* cache keys only for a batch opened with cache whose upstream we know */
    const char *upstream = ch->cache ? lq_broker_batch_upstream(f->b, ch->batch) : NULL;
    size_t argc = 4 + ch->njobs * (upstream ? 2 : 1);
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char first[24];
    snprintf(first, sizeof first, "%lld", (long long)ch->first);
    argv[0] = lq_broker_prefix(f->b);
    argv[1] = ch->batch;
    argv[2] = first;
    argv[3] = upstream ? "1" : "0";
    for (size_t i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < ch->njobs; i++) {
        const lq_job_spec_t *j = &ch->jobs[i];
        argv[4 + i] = lq_payload_encode(j->custom_id, j->url, j->est_tokens, j->body, j->body_len,
                                        &lens[4 + i]);
        if (!upstream)
            continue;
        char *key = xmalloc(LQ_CACHE_KEY_MAX);
        if (lq_cache_key(upstream, j->url, j->body, j->body_len, key) < 0)
            key[0] = '\0'; /* not JSON: never cached */
        argv[4 + ch->njobs + i] = key;
        lens[4 + ch->njobs + i] = strlen(key);
    }
    s_eval(c, LQ_SCRIPT_CHUNK, s_on_chunk, (int)argc, argv, lens);
    for (size_t i = 4; i < argc; i++)
        free((char *)argv[i]);
    free(argv);
    free(lens);
}

/* ---- CLOSE, STATUS, CANCEL: all answer with the batch ---- */

static void s_on_status(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (!s_bad_reply(c, reply, REDIS_REPLY_ARRAY)) {
        if (reply->elements == 0) {
            s_ctx_error(c, "not_found", "no such batch");
        } else {
            lq_msg_t m = {0};
            m.cmd = c->cmd == LQ_C_CLOSE ? LQ_C_CLOSED : LQ_C_BATCH;
            if (m.cmd == LQ_C_CLOSED) {
                m.u.batch_req.req = c->req;
                m.u.batch_req.batch = c->batch;
            } else {
                m.u.batch.req = c->req;
                lq_record_batch_info(&m.u.batch.info, c->batch, reply);
                m.u.batch.info.expires_at =
                    lq_broker_expires_at(c->f->b, m.u.batch.info.finished_at,
                                         lq_record_field_ll(reply, "fetched_at"));
                /* jobs leased into the broker's prefetch queue are not running */
                int64_t queued = (int64_t)lq_broker_prefetched(c->f->b, c->batch);
                lq_batch_info_t *info = &m.u.batch.info;
                if (info->inflight >= queued && strcmp(info->state, "completed") != 0 &&
                    strcmp(info->state, "cancelled") != 0) {
                    info->inflight -= queued;
                    info->pending += queued;
                }
            }
            s_reply(c, &m);
        }
    }
    free(c);
}

static void s_send_status(s_ctx_t *c)
{
    char key[LQ_MAX_ID * 2];
    snprintf(key, sizeof key, "%sb:%s", lq_broker_prefix(c->f->b), c->batch);
    const char *argv[2] = {"HGETALL", key};
    if (lq_redis_command(lq_broker_redis(c->f->b), s_on_status, c, 2, argv, NULL) < 0) {
        s_ctx_error(c, "unavailable", "the broker cannot reach Redis right now; retry");
        free(c);
    }
}

static void s_on_close_or_cancel(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (s_bad_reply(c, reply, REDIS_REPLY_ARRAY) || reply->elements < 1) {
        free(c);
        return;
    }
    redisReply *e = reply->element[0];
    if (e->type == REDIS_REPLY_INTEGER && e->integer == -1) {
        s_ctx_error(c, "not_found", "no such batch");
        free(c);
        return;
    }
    if (e->type == REDIS_REPLY_INTEGER && e->integer == -2) {
        char msg[128];
        snprintf(msg, sizeof msg, "total does not match the %lld jobs stored",
                 reply->elements > 1 ? reply->element[1]->integer : 0);
        s_ctx_error(c, "bad_request", msg);
        free(c);
        return;
    }
    if (c->cmd == LQ_C_CANCEL) {
        lq_broker_cancel_local(c->f->b, c->batch);
        LQ_INFO("batch %s cancel: %s", c->batch, e->str ? e->str : "?");
    } else {
        lq_broker_kick(c->f->b, c->batch);
    }
    s_send_status(c);
}

static void s_batch_op(lq_frontend_t *f, const uint8_t *ident, size_t len, uint8_t cmd, uint64_t req,
                       const char *batch, int64_t total)
{
    if (!s_valid_id(batch)) {
        s_error(f, ident, len, req, "not_found", "no such batch");
        return;
    }
    s_ctx_t *c = s_ctx(f, ident, len, req, cmd);
    snprintf(c->batch, sizeof c->batch, "%s", batch);
    char now[24], tot[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    snprintf(tot, sizeof tot, "%lld", (long long)total);
    if (cmd == LQ_C_STATUS) {
        s_send_status(c);
    } else if (cmd == LQ_C_CLOSE) {
        const char *argv[4] = {lq_broker_prefix(f->b), batch, tot, now};
        s_eval(c, LQ_SCRIPT_CLOSE, s_on_close_or_cancel, 4, argv, NULL);
    } else {
        const char *argv[3] = {lq_broker_prefix(f->b), batch, now};
        s_eval(c, LQ_SCRIPT_CANCEL, s_on_close_or_cancel, 3, argv, NULL);
    }
}

/* ---- RESULTS ---- */

static void s_on_results(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (s_bad_reply(c, reply, REDIS_REPLY_ARRAY) || reply->elements < 1) {
        free(c);
        return;
    }
    if (reply->element[0]->integer == -1 || reply->elements < 2) {
        s_ctx_error(c, "not_found", "no such batch");
        free(c);
        return;
    }
    size_t n = (reply->elements - 2) / 2;
    lq_result_item_t *items = xcalloc(n + 1, sizeof *items);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *ri = reply->element[2 + 2 * i], *rv = reply->element[3 + 2 * i];
        if (ri->type != REDIS_REPLY_INTEGER || rv->type != REDIS_REPLY_STRING || rv->len < 3)
            continue;
        /* stored as 'S'|'F' attempt '|' line */
        const char *bar = memchr(rv->str, '|', rv->len);
        if (!bar)
            continue;
        items[k].index = ri->integer;
        items[k].failed = rv->str[0] == 'F';
        items[k].line = bar + 1;
        items[k].line_len = rv->len - (size_t)(bar + 1 - rv->str);
        k++;
    }
    lq_msg_t m = {0};
    m.cmd = LQ_C_RESULTS_PAGE;
    m.u.results_page.req = c->req;
    m.u.results_page.batch = c->batch;
    m.u.results_page.next = reply->element[0]->integer;
    m.u.results_page.done = reply->element[1]->integer != 0;
    m.u.results_page.items = items;
    m.u.results_page.nitems = k;
    s_reply(c, &m);
    free(items);
    free(c);
}

static void s_results(lq_frontend_t *f, const uint8_t *ident, size_t len, const lq_c_results_t *q)
{
    if (!s_valid_id(q->batch)) {
        s_error(f, ident, len, q->req, "not_found", "no such batch");
        return;
    }
    if (q->from < 0 || q->max < 1) {
        s_error(f, ident, len, q->req, "bad_request", "from must be >= 0 and max >= 1");
        return;
    }
    s_ctx_t *c = s_ctx(f, ident, len, q->req, LQ_C_RESULTS);
    snprintf(c->batch, sizeof c->batch, "%s", q->batch);
    char from[24], max[24], now[24];
    snprintf(from, sizeof from, "%lld", (long long)q->from);
    snprintf(max, sizeof max, "%lld", (long long)(q->max > 5000 ? 5000 : q->max));
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_s());
    const char *argv[5] = {lq_broker_prefix(f->b), q->batch, from, max, now};
    s_eval(c, LQ_SCRIPT_RESULTS, s_on_results, 5, argv, NULL);
}

/* ---- DELETE ---- */

static void s_on_delete(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (s_bad_reply(c, reply, REDIS_REPLY_ARRAY) || reply->elements < 1) {
        free(c);
        return;
    }
    long long code = reply->element[0]->integer;
    if (code == -1) {
        s_ctx_error(c, "not_found", "no such batch");
    } else if (code == -2) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "batch %s is still %s: cancel it first (llmq cancel %s), or wait for it", c->batch,
                 reply->elements > 1 && reply->element[1]->str ? reply->element[1]->str : "active",
                 c->batch);
        s_ctx_error(c, "active", msg);
    } else {
        LQ_INFO("batch %s deleted", c->batch);
        lq_msg_t m = {0};
        m.cmd = LQ_C_DELETED;
        m.u.batch_req.req = c->req;
        m.u.batch_req.batch = c->batch;
        s_reply(c, &m);
    }
    free(c);
}

static void s_delete(lq_frontend_t *f, const uint8_t *ident, size_t len, const lq_c_batch_req_t *q)
{
    if (!s_valid_id(q->batch)) {
        s_error(f, ident, len, q->req, "not_found", "no such batch");
        return;
    }
    s_ctx_t *c = s_ctx(f, ident, len, q->req, LQ_C_DELETE);
    snprintf(c->batch, sizeof c->batch, "%s", q->batch);
    const char *argv[2] = {lq_broker_prefix(f->b), q->batch};
    s_eval(c, LQ_SCRIPT_DELETE, s_on_delete, 2, argv, NULL);
}

/* ---- CACHE: stats and clear, one SCAN step per Redis call ---- */

typedef struct {
    s_ctx_t base; /* must be first: s_ctx_error and s_reply take it */
    int clear;
    char cursor[32];
    lq_c_cache_reply_t totals;
} s_cache_ctx_t;

static void s_cache_step(s_cache_ctx_t *k);

static void s_on_cache_counters(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_cache_ctx_t *k = arg;
    if (s_bad_reply(&k->base, reply, REDIS_REPLY_ARRAY) || reply->elements != 4) {
        free(k);
        return;
    }
    int64_t *dst[4] = {&k->totals.hits, &k->totals.misses, &k->totals.stores,
                       &k->totals.tokens_saved};
    for (size_t i = 0; i < 4; i++)
        *dst[i] = reply->element[i]->str ? strtoll(reply->element[i]->str, NULL, 10) : 0;
    lq_msg_t m = {0};
    m.cmd = LQ_C_CACHE_REPLY;
    m.u.cache_reply = k->totals;
    m.u.cache_reply.req = k->base.req;
    s_reply(&k->base, &m);
    free(k);
}

static void s_on_cache_scan(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_cache_ctx_t *k = arg;
    if (s_bad_reply(&k->base, reply, REDIS_REPLY_ARRAY) || reply->elements != 4 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        free(k);
        return;
    }
    snprintf(k->cursor, sizeof k->cursor, "%s", reply->element[0]->str);
    k->totals.entries += reply->element[1]->integer;
    k->totals.bytes += reply->element[2]->integer;
    k->totals.cleared += reply->element[3]->integer;
    if (strcmp(k->cursor, "0") != 0) {
        s_cache_step(k);
        return;
    }
    if (k->clear)
        LQ_INFO("cache cleared%s%s: %lld entries", k->base.upstream[0] ? " for " : "",
                k->base.upstream, (long long)k->totals.cleared);
    char key[LQ_MAX_ID + 16];
    snprintf(key, sizeof key, "%scache_stats", lq_broker_prefix(k->base.f->b));
    const char *argv[6] = {"HMGET", key, "hits", "misses", "stores", "tokens_saved"};
    if (lq_redis_command(lq_broker_redis(k->base.f->b), s_on_cache_counters, k, 6, argv, NULL) <
        0) {
        s_ctx_error(&k->base, "unavailable", "the broker cannot reach Redis right now; retry");
        free(k);
    }
}

/* Runs the next SCAN step of a stats or clear request. */
static void s_cache_step(s_cache_ctx_t *k)
{
    const char *argv[4] = {lq_broker_prefix(k->base.f->b), k->cursor, k->base.upstream,
                           k->clear ? "1" : "0"};
    s_eval(&k->base, LQ_SCRIPT_CACHE_SCAN, s_on_cache_scan, 4, argv, NULL);
}

static void s_cache(lq_frontend_t *f, const uint8_t *ident, size_t len, const lq_c_cache_t *q)
{
    int clear = strcmp(q->op, "clear") == 0;
    if ((!clear && strcmp(q->op, "stats") != 0) || (q->upstream && !s_valid_id(q->upstream))) {
        s_error(f, ident, len, q->req, "bad_request", "cache op must be stats or clear");
        return;
    }
    s_cache_ctx_t *k = xcalloc(1, sizeof *k);
    k->base.f = f;
    memcpy(k->base.ident, ident, len);
    k->base.ident_len = len;
    k->base.req = q->req;
    k->base.cmd = LQ_C_CACHE;
    snprintf(k->base.upstream, sizeof k->base.upstream, "%s", q->upstream ? q->upstream : "");
    k->clear = clear;
    snprintf(k->cursor, sizeof k->cursor, "0");
    s_cache_step(k);
}

/* ---- LIST, WORKERS ---- */

static void s_on_list(lq_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    s_ctx_t *c = arg;
    if (!s_bad_reply(c, reply, REDIS_REPLY_ARRAY)) {
        lq_batch_info_t *infos = xcalloc(reply->elements + 1, sizeof *infos);
        size_t n = 0;
        for (size_t i = 0; i < reply->elements; i++) {
            redisReply *flat = reply->element[i];
            const char *id = lq_record_field(flat, "id");
            if (!id)
                continue;
            lq_record_batch_info(&infos[n], id, flat);
            infos[n].expires_at = lq_broker_expires_at(c->f->b, infos[n].finished_at,
                                                       lq_record_field_ll(flat, "fetched_at"));
            n++;
        }
        lq_msg_t m = {0};
        m.cmd = LQ_C_LIST_REPLY;
        m.u.list_reply.req = c->req;
        m.u.list_reply.batches = infos;
        m.u.list_reply.nbatches = n;
        s_reply(c, &m);
        free(infos);
    }
    free(c);
}

static void s_workers(lq_frontend_t *f, const uint8_t *ident, size_t len, uint64_t req)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_WORKERS_REPLY;
    m.u.workers_reply.req = req;
    m.u.workers_reply.nworkers = lq_broker_workers(f->b, &m.u.workers_reply.workers);
    m.u.workers_reply.nupstreams = lq_broker_upstreams(f->b, &m.u.workers_reply.upstreams);
    lq_broker_redis_state(f->b, &m.u.workers_reply.redis);
    lq_zsock_send(f->sock, ident, len, &m);
    free(m.u.workers_reply.upstreams);
    free(m.u.workers_reply.workers);
}

/* Answers one client message. */
static void s_on_message(lq_zsock_t *s, const uint8_t *ident, size_t len, lq_msg_t *m, void *arg)
{
    (void)s;
    lq_frontend_t *f = arg;
    switch (m->cmd) {
    case LQ_C_OPEN:
        s_open(f, ident, len, &m->u.open);
        break;
    case LQ_C_CHUNK:
        s_chunk(f, ident, len, &m->u.chunk);
        break;
    case LQ_C_CLOSE:
        s_batch_op(f, ident, len, LQ_C_CLOSE, m->u.close.req, m->u.close.batch, m->u.close.total);
        break;
    case LQ_C_STATUS:
    case LQ_C_CANCEL:
        s_batch_op(f, ident, len, m->cmd, m->u.batch_req.req, m->u.batch_req.batch, 0);
        break;
    case LQ_C_RESULTS:
        s_results(f, ident, len, &m->u.results);
        break;
    case LQ_C_LIST: {
        s_ctx_t *c = s_ctx(f, ident, len, m->u.simple.req, LQ_C_LIST);
        const char *argv[3] = {lq_broker_prefix(f->b), "1000", "0"};
        s_eval(c, LQ_SCRIPT_LIST, s_on_list, 3, argv, NULL);
        break;
    }
    case LQ_C_WORKERS:
        s_workers(f, ident, len, m->u.simple.req);
        break;
    case LQ_C_DELETE:
        s_delete(f, ident, len, &m->u.batch_req);
        break;
    case LQ_C_CACHE:
        s_cache(f, ident, len, &m->u.cache);
        break;
    case LQ_W_HEARTBEAT:
        break;
    default:
        s_error(f, ident, len, 0, "bad_request", "unexpected command on the client port");
        break;
    }
}

lq_frontend_t *lq_frontend_new(lq_loop_t *loop, void *zctx, lq_broker_t *b,
                               const lq_frontend_opts_t *opts, char *err, size_t errlen)
{
    lq_frontend_t *f = xcalloc(1, sizeof *f);
    f->b = b;
    f->sock = lq_zsock_new(loop, zctx, ZMQ_ROUTER, s_on_message, f);
    if (!f->sock) {
        snprintf(err, errlen, "cannot create the client socket: %s", zmq_strerror(errno));
        lq_frontend_destroy(&f);
        return NULL;
    }
    if (opts->curve_secret && lq_curve_server(f->sock, opts->curve_secret) < 0) {
        snprintf(err, errlen, "cannot enable CURVE: %s", zmq_strerror(errno));
        lq_frontend_destroy(&f);
        return NULL;
    }
    if (lq_zsock_bind(f->sock, opts->endpoint) < 0) {
        snprintf(err, errlen, "cannot bind frontend %s: %s", opts->endpoint, zmq_strerror(errno));
        lq_frontend_destroy(&f);
        return NULL;
    }
    return f;
}

uint64_t lq_frontend_dropped(const lq_frontend_t *f)
{
    return lq_zsock_dropped(f->sock);
}

void lq_frontend_destroy(lq_frontend_t **p)
{
    if (!p || !*p)
        return;
    lq_zsock_destroy(&(*p)->sock);
    free(*p);
    *p = NULL;
}
