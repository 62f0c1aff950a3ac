/* top: `llmq top`, a live full-terminal view of the fleet.
 *
 * Every second it asks the broker for the batch list (LIST) and the workers
 * and upstreams (WORKERS) and redraws the screen in place: batches with a
 * progress bar, throughput and ETA (from the progress between refreshes),
 * workers with their load, upstreams with their pace, limits and 429s. It
 * fits any size from 80x24 up (lines and columns are cut, never wrapped),
 * uses plain VT100 sequences (fine over ssh, inside tmux or screen), and
 * restores the terminal on `q`, Ctrl-C or SIGTERM. Without a terminal it
 * prints one frame and exits, for scripts and logs.
 *
 * Owns the rpc channel, the saved terminal state and the per-batch rate
 * history; all freed before lq_cmd_top returns. */
#include "client.h"

#include "common/util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define S_REFRESH_MS 1000
#define S_CALL_MS 2000
#define S_MAX_RATES 256 /* batches whose rate is remembered */

/* Progress memory of one batch, for its rate and ETA. */
typedef struct {
    char id[LQ_MAX_ID + 1];
    int64_t done;
    uint64_t at_ms;
    double rate; /* jobs/s, smoothed */
    int seen;    /* in the last frame */
} s_rate_t;

typedef struct {
    const lq_client_opts_t *o;
    lq_rpc_t *rpc;
    int tty;
    struct termios saved;
    int raw;
    int rows, cols;
    s_rate_t rates[S_MAX_RATES];
    size_t nrates;
    char status[160]; /* header note: broker unreachable, ... */
    /* the frame being drawn */
    char *frame;
    size_t flen, fcap;
    int line;
} s_top_t;

static volatile sig_atomic_t s_stop;

/* SIGTERM/SIGHUP: ask the main loop to leave (the terminal is restored
 * there). */
static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* ---- terminal ---------------------------------------------------------- */

/* Puts the terminal in non-canonical, no-echo mode on the alternate screen
 * with the cursor hidden. Returns 0 or -1 (not a terminal). */
static int s_term_enter(s_top_t *t)
{
    if (tcgetattr(STDIN_FILENO, &t->saved) < 0)
        return -1;
    struct termios raw = t->saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0)
        return -1;
    t->raw = 1;
    fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
    fflush(stdout);
    return 0;
}

/* Undoes s_term_enter. Safe to call twice. */
static void s_term_leave(s_top_t *t)
{
    if (!t->raw)
        return;
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
    t->raw = 0;
}

/* Reads the window size (80x24 when unknown). */
static void s_term_size(s_top_t *t)
{
    struct winsize ws;
    t->rows = 24;
    t->cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        t->rows = ws.ws_row;
        t->cols = ws.ws_col;
    }
    if (t->cols > 400)
        t->cols = 400;
}

/* ---- frame buffer ------------------------------------------------------ */

/* Adds one screen line, cut to the width; lines past the height are
 * dropped (the last line is kept for the footer). */
static void s_line(s_top_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_line(s_top_t *t, const char *fmt, ...)
{
    if (t->line >= t->rows - 1)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t n = strlen(buf);
    if (n > (size_t)t->cols)
        n = (size_t)t->cols;
    if (t->flen + n + 8 > t->fcap) {
        t->fcap = (t->flen + n + 8) * 2;
        t->frame = xrealloc(t->frame, t->fcap);
    }
    memcpy(t->frame + t->flen, buf, n);
    t->flen += n;
    memcpy(t->frame + t->flen, t->tty ? "\033[K\r\n" : "\n", t->tty ? 5 : 1);
    t->flen += t->tty ? 5 : 1;
    t->line++;
}

/* ---- data -------------------------------------------------------------- */

/* Updates and returns the smoothed rate (jobs/s) of a batch. */
static double s_rate(s_top_t *t, const char *id, int64_t done, uint64_t now)
{
    s_rate_t *r = NULL;
    for (size_t i = 0; i < t->nrates && !r; i++)
        if (strcmp(t->rates[i].id, id) == 0)
            r = &t->rates[i];
    if (!r) {
        if (t->nrates == S_MAX_RATES)
            return 0;
        r = &t->rates[t->nrates++];
        snprintf(r->id, sizeof r->id, "%s", id);
        r->done = done;
        r->at_ms = now;
        r->rate = 0;
    } else if (now > r->at_ms + 200) {
        double inst = (double)(done - r->done) * 1000.0 / (double)(now - r->at_ms);
        r->rate = r->rate > 0 ? 0.6 * r->rate + 0.4 * inst : inst;
        r->done = done;
        r->at_ms = now;
    }
    r->seen = 1;
    return r->rate;
}

/* Forgets batches that left the list. */
static void s_rates_sweep(s_top_t *t)
{
    size_t k = 0;
    for (size_t i = 0; i < t->nrates; i++)
        if (t->rates[i].seen) {
            t->rates[i].seen = 0;
            t->rates[k++] = t->rates[i];
        }
    t->nrates = k;
}

/* Asks the broker one question. Returns 1 with a reply, 0 on no/error
 * answer (status set), -1 on interrupt. */
static int s_ask(s_top_t *t, uint8_t cmd, lq_msg_t *reply)
{
    lq_msg_t m = {0};
    m.cmd = cmd;
    int rc = lq_rpc_call(t->rpc, &m, reply, S_CALL_MS);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        snprintf(t->status, sizeof t->status, "broker %s not answering", t->o->broker);
        return 0;
    }
    if (reply->cmd == LQ_C_ERROR) {
        snprintf(t->status, sizeof t->status, "broker: %s", reply->u.error.message);
        lq_msg_clear(reply);
        return 0;
    }
    return 1;
}

/* ---- drawing ----------------------------------------------------------- */

/* Formats seconds as "1h02m", "3m05s", "42s" or "-". */
static void s_dur(char *buf, size_t n, double s)
{
    if (s < 0 || s > 99 * 86400.0) {
        snprintf(buf, n, "-");
        return;
    }
    long long v = (long long)(s + 0.5);
    if (v >= 3600)
        snprintf(buf, n, "%lldh%02lldm", v / 3600, v % 3600 / 60);
    else if (v >= 60)
        snprintf(buf, n, "%lldm%02llds", v / 60, v % 60);
    else
        snprintf(buf, n, "%llds", v);
}

/* 1 for a batch that still runs (its ETA means something). */
static int s_active(const char *state)
{
    return strcmp(state, "in_progress") == 0 || strcmp(state, "submitting") == 0 ||
           strcmp(state, "cancelling") == 0;
}

/* Draws one batch line: id, state, bar, percent, done/total, failed,
 * rate, ETA; the name takes what width is left. */
static void s_draw_batch(s_top_t *t, const lq_batch_info_t *b, uint64_t now)
{
    int64_t done = b->completed + b->failed;
    double pct = b->total > 0 ? 100.0 * (double)done / (double)b->total : 0;
    double rate = s_rate(t, b->id, done, now);
    char eta[32] = "-", bar[24];
    if (!s_active(b->state))
        snprintf(eta, sizeof eta, "done");
    else if (rate > 0.01)
        s_dur(eta, sizeof eta, (double)(b->total - done) / rate);
    char dt[32];
    snprintf(dt, sizeof dt, "%lld/%lld", (long long)done, (long long)b->total);
    if (t->cols < 100) { /* 80 columns: no bar, ids without "batch_" */
        const char *id = strncmp(b->id, "batch_", 6) == 0 ? b->id + 6 : b->id;
        s_line(t, "%-16.16s %-11.11s %5.1f%% %11s %5lld %6.1f %6s %s", id, b->state, pct, dt,
               (long long)b->failed, rate, eta, b->name);
        return;
    }
    int w = 20;
    int fill = b->total > 0 ? (int)((double)w * (double)done / (double)b->total) : 0;
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    s_line(t, "%-22.22s %-11.11s [%s] %5.1f%% %13s %6lld %6.1f %6s %s", b->id, b->state, bar, pct,
           dt, (long long)b->failed, rate, eta, b->name);
}

/* Draws the batch section: active batches first, then recent finished
 * ones while room is left. */
static void s_draw_batches(s_top_t *t, const lq_c_list_reply_t *l, uint64_t now)
{
    size_t nactive = 0;
    int64_t pending = 0, inflight = 0;
    for (size_t i = 0; i < l->nbatches; i++) {
        if (s_active(l->batches[i].state)) {
            nactive++;
            pending += l->batches[i].pending;
            inflight += l->batches[i].inflight;
        }
    }
    s_line(t, "BATCHES  %zu active, %lld pending, %lld in flight", nactive, (long long)pending,
           (long long)inflight);
    if (t->cols < 100)
        s_line(t, "%-16s %-11s %6s %11s %5s %6s %6s %s", "BATCH_ID", "STATE", "DONE", "JOBS",
               "FAIL", "JOBS/S", "ETA", "NAME");
    else
        s_line(t, "%-22s %-11s %-22s %6s %13s %6s %6s %6s %s", "ID", "STATE", "PROGRESS", "DONE",
               "JOBS", "FAILED", "JOBS/S", "ETA", "NAME");
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < l->nbatches; i++)
            if (s_active(l->batches[i].state) == !pass)
                s_draw_batch(t, &l->batches[i], now);
}

/* Draws the workers section (at most a third of the screen). */
static void s_draw_workers(s_top_t *t, const lq_c_workers_reply_t *w)
{
    int64_t inflight = 0, conc = 0;
    for (size_t i = 0; i < w->nworkers; i++) {
        inflight += w->workers[i].inflight;
        conc += w->workers[i].concurrency;
    }
    s_line(t, "%s", "");
    s_line(t, "WORKERS  %zu connected, %lld/%lld slots busy", w->nworkers, (long long)inflight,
           (long long)conc);
    s_line(t, "%-34s %10s %7s %10s %8s", "ID", "IN_FLIGHT", "CREDIT", "COMPLETED", "SEEN");
    size_t room = (size_t)(t->rows / 3);
    for (size_t i = 0; i < w->nworkers && i < room; i++)
        s_line(t, "%-34.34s %4lld/%-5lld %7lld %10lld %6lldms", w->workers[i].id,
               (long long)w->workers[i].inflight, (long long)w->workers[i].concurrency,
               (long long)w->workers[i].credit, (long long)w->workers[i].completed,
               (long long)w->workers[i].last_seen_ms);
    if (w->nworkers > room)
        s_line(t, "... %zu more", w->nworkers - room);
}

/* Draws the upstreams section: pace (ok/min), limits, flight, 429s, pause. */
static void s_draw_upstreams(s_top_t *t, const lq_c_workers_reply_t *w)
{
    s_line(t, "%s", "");
    s_line(t, "UPSTREAMS");
    s_line(t, "%-16s %8s %9s %9s %9s %8s %8s", "NAME", "OK/MIN", "LIMIT/MIN", "LEARNED",
           "IN_FLIGHT", "429S", "PAUSED");
    for (size_t i = 0; i < w->nupstreams; i++) {
        const lq_upstream_info_t *u = &w->upstreams[i];
        char lim[32] = "-", learned[32] = "-", pause[32] = "-";
        if (u->limit_rpm > 0)
            snprintf(lim, sizeof lim, "%lld", (long long)u->limit_rpm);
        if (u->learned_rpm > 0)
            snprintf(learned, sizeof learned, "%lld", (long long)u->learned_rpm);
        if (u->paused_ms > 0)
            snprintf(pause, sizeof pause, "%.1fs", (double)u->paused_ms / 1000.0);
        s_line(t, "%-16.16s %8lld %9s %9s %4lld/%-4lld %8lld %8s", u->name, (long long)u->ok_rpm,
               lim, learned, (long long)u->inflight, (long long)u->window, (long long)u->n429,
               pause);
    }
}

/* Builds and writes one frame. Returns 0, or -1 on interrupt. */
static int s_frame(s_top_t *t)
{
    lq_msg_t list, workers;
    t->status[0] = '\0';
    int hl = s_ask(t, LQ_C_LIST, &list);
    int hw = hl < 0 ? -1 : s_ask(t, LQ_C_WORKERS, &workers);
    if (hl < 0 || hw < 0) {
        if (hl > 0)
            lq_msg_clear(&list);
        return -1;
    }
    if (t->tty)
        s_term_size(t);
    t->flen = 0;
    t->line = 0;
    uint64_t now = lq_mono_ms();
    time_t wall = time(NULL);
    char clock[16];
    strftime(clock, sizeof clock, "%H:%M:%S", localtime(&wall));
    s_line(t, "llmq top - %s - broker %s%s%s", clock, t->o->broker, t->status[0] ? " - " : "",
           t->status);
    s_line(t, "%s", "");
    if (hl > 0)
        s_draw_batches(t, &list.u.list_reply, now);
    if (hw > 0) {
        s_draw_workers(t, &workers.u.workers_reply);
        s_draw_upstreams(t, &workers.u.workers_reply);
    }
    s_rates_sweep(t);
    if (t->tty) {
        while (t->line < t->rows - 1)
            s_line(t, "%s", "");
        fputs("\033[H", stdout);
        fwrite(t->frame, 1, t->flen, stdout);
        printf("\033[7m%-*.*s\033[0m\033[J", t->cols, t->cols, " q quit   refresh 1s");
    } else {
        fwrite(t->frame, 1, t->flen, stdout);
    }
    fflush(stdout);
    if (hl > 0)
        lq_msg_clear(&list);
    if (hw > 0)
        lq_msg_clear(&workers);
    return 0;
}

/* Waits up to ms for a key. Returns 1 when the user asked to quit. */
static int s_wait_key(int ms)
{
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    uint64_t end = lq_mono_ms() + (uint64_t)ms;
    while (!s_stop) {
        uint64_t now = lq_mono_ms();
        if (now >= end)
            return 0;
        int rc = poll(&p, 1, (int)(end - now));
        if (rc < 0 && errno != EINTR)
            return 0;
        if (rc > 0) {
            char c;
            ssize_t n = read(STDIN_FILENO, &c, 1);
            if (n == 0)
                return 1; /* stdin closed */
            if (n == 1 && (c == 'q' || c == 'Q' || c == 3))
                return 1;
            if (n == 1)
                return 0; /* any other key: refresh now */
        }
    }
    return 1;
}

int lq_cmd_top(const lq_client_opts_t *o)
{
    s_top_t t = {0};
    t.o = o;
    t.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    t.rows = t.tty ? 24 : 1 << 20;
    t.cols = t.tty ? 80 : 400;
    t.rpc = lq_client_connect(o);
    if (!t.rpc)
        return LQ_EXIT_RUNTIME;
    lq_msg_t probe;
    int got = lq_client_call(t.rpc, o, &(lq_msg_t){.cmd = LQ_C_LIST}, &probe, 1);
    if (got <= 0) {
        lq_rpc_destroy(&t.rpc);
        return got < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_RUNTIME;
    }
    lq_msg_clear(&probe);
    if (!t.tty) {
        int rc = s_frame(&t);
        lq_rpc_destroy(&t.rpc);
        free(t.frame);
        return rc < 0 ? LQ_EXIT_INTERRUPTED : LQ_EXIT_OK;
    }
    signal(SIGTERM, s_on_signal);
    signal(SIGHUP, s_on_signal);
    if (s_term_enter(&t) < 0) {
        fprintf(stderr, "llmq: top: cannot set up the terminal\n");
        lq_rpc_destroy(&t.rpc);
        return LQ_EXIT_RUNTIME;
    }
    int rc = LQ_EXIT_OK;
    while (!s_stop) {
        if (s_frame(&t) < 0) {
            rc = LQ_EXIT_INTERRUPTED;
            break;
        }
        if (s_wait_key(S_REFRESH_MS))
            break;
    }
    s_term_leave(&t);
    lq_rpc_destroy(&t.rpc);
    free(t.frame);
    return rc;
}
