/* frontend: answers client requests (submit, status, results, cancel, list,
 * workers). Each request that needs Redis keeps the client's identity and
 * request id in a small context until the reply comes back; a request that
 * cannot be served (Redis down, unknown batch, bad arguments) gets an ERROR
 * reply with a code and a message, and changes nothing. */
#include "broker.h"

#include "../common/log.h"
#include "../common/util.h"
#include "scripts.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    lq_broker_t *b;
    uint8_t ident[LQ_MAX_IDENT];
    size_t ident_len;
    uint64_t req;
    uint8_t cmd;
    char batch[LQ_MAX_ID + 1];
    char upstream[LQ_MAX_ID + 1];
    int64_t priority, timeout_ms, n;
} s_ctx_t;

static s_ctx_t *s_ctx(lq_broker_t *b, const uint8_t *ident, size_t len, uint64_t req, uint8_t cmd)
{
    s_ctx_t *c = xcalloc(1, sizeof *c);
    c->b = b;
    memcpy(c->ident, ident, len);
    c->ident_len = len;
    c->req = req;
    c->cmd = cmd;
    return c;
}

static void s_reply(s_ctx_t *c, lq_msg_t *m)
{
    lq_zsock_send(c->b->front, c->ident, c->ident_len, m);
}

static void s_error(lq_broker_t *b, const uint8_t *ident, size_t len, uint64_t req,
                    const char *code, const char *message)
{
    lq_msg_t m = {0};
    m.cmd = LQ_C_ERROR;
    m.u.error.req = req;
    m.u.error.code = code;
    m.u.error.message = message;
    lq_zsock_send(b->front, ident, len, &m);
}

static void s_ctx_error(s_ctx_t *c, const char *code, const char *message)
{
    s_error(c->b, c->ident, c->ident_len, c->req, code, message);
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
    if (lq_redis_eval(c->b->redis, script, cb, c, 0, argc, argv, lens) < 0) {
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
        lq_broker_batch(c->b, id, c->upstream, c->priority, c->timeout_ms);
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

static void s_open(lq_broker_t *b, const uint8_t *ident, size_t len, const lq_c_open_t *o)
{
    if (o->name && !s_valid_id(o->name)) {
        s_error(b, ident, len, o->req, "bad_request",
                "batch name may only hold letters, digits, '_', '-' and '.'");
        return;
    }
    if (o->max_attempts < 1 || o->timeout_ms < 1) {
        s_error(b, ident, len, o->req, "bad_request", "max_attempts and timeout must be >= 1");
        return;
    }
    s_ctx_t *c = s_ctx(b, ident, len, o->req, LQ_C_OPEN);
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
    const char *argv[9] = {b->opts.prefix, o->name ? o->name : "", c->upstream, ma, to, pr, now,
                           id, o->fingerprint ? o->fingerprint : ""};
    s_eval(c, LQ_SCRIPT_OPEN, s_on_open, 9, argv, NULL);
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
            lq_batch_t *batch = lq_map_gets(c->b->batches, c->batch);
            lq_broker_kick(c->b, batch);
        }
    }
    free(c);
}

static void s_chunk(lq_broker_t *b, const uint8_t *ident, size_t len, const lq_c_chunk_t *ch)
{
    for (size_t i = 0; i < ch->njobs; i++) {
        if (ch->jobs[i].url[0] != '/' || ch->jobs[i].est_tokens < 0) {
            s_error(b, ident, len, ch->req, "bad_request", "job url must start with '/'");
            return;
        }
    }
    s_ctx_t *c = s_ctx(b, ident, len, ch->req, LQ_C_CHUNK);
    snprintf(c->batch, sizeof c->batch, "%s", ch->batch);
    size_t argc = 3 + ch->njobs;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char first[24];
    snprintf(first, sizeof first, "%lld", (long long)ch->first);
    argv[0] = b->opts.prefix;
    argv[1] = ch->batch;
    argv[2] = first;
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < ch->njobs; i++) {
        const lq_job_spec_t *j = &ch->jobs[i];
        size_t cl = strlen(j->custom_id), ul = strlen(j->url);
        char head[64];
        int hl = snprintf(head, sizeof head, "%zu:", cl);
        char mid[64];
        int ml = snprintf(mid, sizeof mid, "%zu:", ul);
        char tail[64];
        int tl = snprintf(tail, sizeof tail, "%lld:", (long long)j->est_tokens);
        size_t n = (size_t)hl + cl + (size_t)ml + ul + (size_t)tl + j->body_len;
        char *p = xmalloc(n);
        char *w = p;
        memcpy(w, head, (size_t)hl), w += hl;
        memcpy(w, j->custom_id, cl), w += cl;
        memcpy(w, mid, (size_t)ml), w += ml;
        memcpy(w, j->url, ul), w += ul;
        memcpy(w, tail, (size_t)tl), w += tl;
        memcpy(w, j->body, j->body_len);
        argv[3 + i] = p;
        lens[3 + i] = n;
    }
    s_eval(c, LQ_SCRIPT_CHUNK, s_on_chunk, (int)argc, argv, lens);
    for (size_t i = 3; i < argc; i++)
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
                lq_batch_info_from_reply(&m.u.batch.info, c->batch, reply);
                /* jobs leased into the broker's prefetch queue are not running */
                lq_batch_t *mem = lq_map_gets(c->b->batches, c->batch);
                lq_batch_info_t *info = &m.u.batch.info;
                if (mem && info->inflight >= (int64_t)mem->queued &&
                    strcmp(info->state, "completed") != 0 &&
                    strcmp(info->state, "cancelled") != 0) {
                    info->inflight -= (int64_t)mem->queued;
                    info->pending += (int64_t)mem->queued;
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
    snprintf(key, sizeof key, "%sb:%s", c->b->opts.prefix, c->batch);
    const char *argv[2] = {"HGETALL", key};
    if (lq_redis_command(c->b->redis, s_on_status, c, 2, argv, NULL) < 0) {
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
        lq_broker_cancel_local(c->b, c->batch);
        LQ_INFO("batch %s cancel: %s", c->batch, e->str ? e->str : "?");
    } else {
        lq_broker_kick(c->b, lq_map_gets(c->b->batches, c->batch));
    }
    s_send_status(c);
}

static void s_batch_op(lq_broker_t *b, const uint8_t *ident, size_t len, uint8_t cmd, uint64_t req,
                       const char *batch, int64_t total)
{
    if (!s_valid_id(batch)) {
        s_error(b, ident, len, req, "not_found", "no such batch");
        return;
    }
    s_ctx_t *c = s_ctx(b, ident, len, req, cmd);
    snprintf(c->batch, sizeof c->batch, "%s", batch);
    char now[24], tot[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_wall_ms());
    snprintf(tot, sizeof tot, "%lld", (long long)total);
    if (cmd == LQ_C_STATUS) {
        s_send_status(c);
    } else if (cmd == LQ_C_CLOSE) {
        const char *argv[4] = {b->opts.prefix, batch, tot, now};
        s_eval(c, LQ_SCRIPT_CLOSE, s_on_close_or_cancel, 4, argv, NULL);
    } else {
        const char *argv[3] = {b->opts.prefix, batch, now};
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

static void s_results(lq_broker_t *b, const uint8_t *ident, size_t len, const lq_c_results_t *q)
{
    if (!s_valid_id(q->batch)) {
        s_error(b, ident, len, q->req, "not_found", "no such batch");
        return;
    }
    if (q->from < 0 || q->max < 1) {
        s_error(b, ident, len, q->req, "bad_request", "from must be >= 0 and max >= 1");
        return;
    }
    s_ctx_t *c = s_ctx(b, ident, len, q->req, LQ_C_RESULTS);
    snprintf(c->batch, sizeof c->batch, "%s", q->batch);
    char from[24], max[24];
    snprintf(from, sizeof from, "%lld", (long long)q->from);
    snprintf(max, sizeof max, "%lld", (long long)(q->max > 5000 ? 5000 : q->max));
    const char *argv[4] = {b->opts.prefix, q->batch, from, max};
    s_eval(c, LQ_SCRIPT_RESULTS, s_on_results, 4, argv, NULL);
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
            const char *id = NULL;
            for (size_t k = 0; k + 1 < flat->elements; k += 2)
                if (flat->element[k]->str && strcmp(flat->element[k]->str, "id") == 0)
                    id = flat->element[k + 1]->str;
            if (id)
                lq_batch_info_from_reply(&infos[n++], id, flat);
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

static void s_workers(lq_broker_t *b, const uint8_t *ident, size_t len, uint64_t req)
{
    size_t n = lq_map_len(b->workers), k = 0, pos = 0;
    lq_worker_info_t *infos = xcalloc(n + 1, sizeof *infos);
    void *v;
    uint64_t now = lq_loop_now(b->loop);
    while (lq_map_next(b->workers, &pos, NULL, NULL, &v) && k < n) {
        lq_worker_t *w = v;
        infos[k].id = w->id;
        infos[k].concurrency = w->concurrency;
        infos[k].inflight = w->inflight;
        infos[k].credit = w->credit;
        infos[k].completed = w->completed;
        infos[k].last_seen_ms = (int64_t)(now - w->last_seen_ms);
        k++;
    }
    size_t nup = lq_map_len(b->limiters), ku = 0;
    lq_upstream_info_t *ups = xcalloc(nup + 1, sizeof *ups);
    pos = 0;
    const void *key;
    while (lq_map_next(b->limiters, &pos, &key, NULL, &v) && ku < nup) {
        lq_rl_stats_t st;
        lq_rl_stats(v, now, &st);
        ups[ku].name = key;
        ups[ku].limit_rpm = (int64_t)(st.rate_limit * 60.0);
        ups[ku].learned_rpm = (int64_t)(st.learned_rps * 60.0);
        ups[ku].ok_rpm = (int64_t)(st.ok_rps * 60.0);
        ups[ku].inflight = st.inflight;
        ups[ku].window = (int64_t)st.window;
        ups[ku].n429 = st.n429;
        ups[ku].nok = st.nok;
        ups[ku].nerr = st.nerr;
        ups[ku].paused_ms = st.paused_ms;
        ku++;
    }
    lq_msg_t m = {0};
    m.cmd = LQ_C_WORKERS_REPLY;
    m.u.workers_reply.req = req;
    m.u.workers_reply.workers = infos;
    m.u.workers_reply.nworkers = k;
    m.u.workers_reply.upstreams = ups;
    m.u.workers_reply.nupstreams = ku;
    lq_zsock_send(b->front, ident, len, &m);
    free(ups);
    free(infos);
}

void lq_frontend_handle(lq_broker_t *b, const uint8_t *ident, size_t len, lq_msg_t *m)
{
    switch (m->cmd) {
    case LQ_C_OPEN:
        s_open(b, ident, len, &m->u.open);
        break;
    case LQ_C_CHUNK:
        s_chunk(b, ident, len, &m->u.chunk);
        break;
    case LQ_C_CLOSE:
        s_batch_op(b, ident, len, LQ_C_CLOSE, m->u.close.req, m->u.close.batch, m->u.close.total);
        break;
    case LQ_C_STATUS:
    case LQ_C_CANCEL:
        s_batch_op(b, ident, len, m->cmd, m->u.batch_req.req, m->u.batch_req.batch, 0);
        break;
    case LQ_C_RESULTS:
        s_results(b, ident, len, &m->u.results);
        break;
    case LQ_C_LIST: {
        s_ctx_t *c = s_ctx(b, ident, len, m->u.simple.req, LQ_C_LIST);
        const char *argv[3] = {b->opts.prefix, "1000", "0"};
        s_eval(c, LQ_SCRIPT_LIST, s_on_list, 3, argv, NULL);
        break;
    }
    case LQ_C_WORKERS:
        s_workers(b, ident, len, m->u.simple.req);
        break;
    case LQ_W_HEARTBEAT:
        break;
    default:
        s_error(b, ident, len, 0, "bad_request", "unexpected command on the client port");
        break;
    }
}
