/* loop: see loop.h. The timer heap is a binary min-heap of lq_timer_t
 * pointers ordered by (due_ms, seq); each timer knows its heap index so that
 * stopping it is O(log n). */
#define _GNU_SOURCE
#include "loop.h"

#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define LQ_MAX_HOOKS 8
#define LQ_MAX_SIGNALS 8
#define LQ_MAX_EVENTS 256

typedef struct {
    lq_fd_cb cb;
    void *arg;
    int events;
} s_fd_entry_t;

typedef struct {
    lq_hook_cb cb;
    void *arg;
} s_hook_t;

typedef struct {
    int signo;
    lq_hook_cb cb;
    void *arg;
} s_signal_t;

struct lq_loop {
    int epfd;
    s_fd_entry_t *fds;
    int nfds;
    lq_timer_t **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;
    s_hook_t hooks[LQ_MAX_HOOKS];
    int nhooks;
    s_signal_t signals[LQ_MAX_SIGNALS];
    int nsignals;
    int sigfd;
    sigset_t sigmask;
    int stop;
    lq_clock_fn clock;
    void *clock_arg;
};

lq_loop_t *lq_loop_new(void)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return NULL;
    lq_loop_t *loop = xcalloc(1, sizeof *loop);
    loop->epfd = epfd;
    loop->sigfd = -1;
    sigemptyset(&loop->sigmask);
    return loop;
}

void lq_loop_destroy(lq_loop_t **p)
{
    if (!p || !*p)
        return;
    lq_loop_t *loop = *p;
    for (size_t i = 0; i < loop->heap_len; i++)
        loop->heap[i]->heap_index = SIZE_MAX;
    if (loop->sigfd >= 0)
        close(loop->sigfd);
    close(loop->epfd);
    free(loop->fds);
    free(loop->heap);
    free(loop);
    *p = NULL;
}

uint64_t lq_loop_now(lq_loop_t *loop)
{
    return loop->clock ? loop->clock(loop->clock_arg) : lq_mono_ms();
}

void lq_loop_set_clock(lq_loop_t *loop, lq_clock_fn fn, void *arg)
{
    loop->clock = fn;
    loop->clock_arg = arg;
}

int lq_loop_watch(lq_loop_t *loop, int fd, int events, lq_fd_cb cb, void *arg)
{
    if (fd < 0)
        return -1;
    if (events == 0) {
        lq_loop_unwatch(loop, fd);
        return 0;
    }
    if (fd >= loop->nfds) {
        int n = loop->nfds ? loop->nfds : 64;
        while (n <= fd)
            n *= 2;
        loop->fds = xrealloc(loop->fds, (size_t)n * sizeof *loop->fds);
        memset(loop->fds + loop->nfds, 0, (size_t)(n - loop->nfds) * sizeof *loop->fds);
        loop->nfds = n;
    }
    struct epoll_event ev = {0};
    ev.data.fd = fd;
    if (events & LQ_READABLE)
        ev.events |= EPOLLIN;
    if (events & LQ_WRITABLE)
        ev.events |= EPOLLOUT;
    int op = loop->fds[fd].events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, fd, &ev) < 0) {
        if (op == EPOLL_CTL_MOD && errno == ENOENT)
            op = EPOLL_CTL_ADD;
        else if (op == EPOLL_CTL_ADD && errno == EEXIST)
            op = EPOLL_CTL_MOD;
        else
            return -1;
        if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
            return -1;
    }
    loop->fds[fd].events = events;
    loop->fds[fd].cb = cb;
    loop->fds[fd].arg = arg;
    return 0;
}

void lq_loop_unwatch(lq_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->nfds || loop->fds[fd].events == 0)
        return;
    struct epoll_event ev = {0};
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, &ev);
    loop->fds[fd].events = 0;
    loop->fds[fd].cb = NULL;
    loop->fds[fd].arg = NULL;
}

/* ---- timer heap ---- */

static int s_before(const lq_timer_t *a, const lq_timer_t *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void s_heap_set(lq_loop_t *loop, size_t i, lq_timer_t *t)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void s_sift_up(lq_loop_t *loop, size_t i)
{
    lq_timer_t *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_before(t, loop->heap[parent]))
            break;
        s_heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    s_heap_set(loop, i, t);
}

static void s_sift_down(lq_loop_t *loop, size_t i)
{
    lq_timer_t *t = loop->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const lq_timer_t *best = t;
        if (l < loop->heap_len && s_before(loop->heap[l], best)) {
            m = l;
            best = loop->heap[l];
        }
        if (r < loop->heap_len && s_before(loop->heap[r], best))
            m = r;
        if (m == i)
            break;
        s_heap_set(loop, i, loop->heap[m]);
        i = m;
    }
    s_heap_set(loop, i, t);
}

void lq_timer_init(lq_timer_t *t, lq_timer_cb cb, void *arg)
{
    memset(t, 0, sizeof *t);
    t->heap_index = SIZE_MAX;
    t->cb = cb;
    t->arg = arg;
}

int lq_timer_active(const lq_timer_t *t)
{
    return t->heap_index != SIZE_MAX;
}

void lq_timer_stop(lq_loop_t *loop, lq_timer_t *t)
{
    if (t->heap_index == SIZE_MAX)
        return;
    size_t i = t->heap_index;
    t->heap_index = SIZE_MAX;
    loop->heap_len--;
    if (i == loop->heap_len)
        return;
    s_heap_set(loop, i, loop->heap[loop->heap_len]);
    s_sift_down(loop, i);
    s_sift_up(loop, loop->heap[i]->heap_index);
}

void lq_timer_start(lq_loop_t *loop, lq_timer_t *t, uint64_t after_ms)
{
    lq_timer_stop(loop, t);
    if (loop->heap_len == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        loop->heap = xrealloc(loop->heap, loop->heap_cap * sizeof *loop->heap);
    }
    t->due_ms = lq_loop_now(loop) + after_ms;
    t->seq = ++loop->timer_seq;
    size_t i = loop->heap_len++;
    s_heap_set(loop, i, t);
    s_sift_up(loop, i);
}

/* ---- hooks and signals ---- */

int lq_loop_add_before_sleep(lq_loop_t *loop, lq_hook_cb cb, void *arg)
{
    if (loop->nhooks == LQ_MAX_HOOKS)
        return -1;
    loop->hooks[loop->nhooks].cb = cb;
    loop->hooks[loop->nhooks].arg = arg;
    loop->nhooks++;
    return 0;
}

static void s_on_signalfd(lq_loop_t *loop, int fd, int events, void *arg)
{
    (void)events;
    (void)arg;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        for (int i = 0; i < loop->nsignals; i++)
            if (loop->signals[i].signo == (int)si.ssi_signo)
                loop->signals[i].cb(loop, loop->signals[i].arg);
    }
}

int lq_loop_on_signal(lq_loop_t *loop, int signo, lq_hook_cb cb, void *arg)
{
    if (loop->nsignals == LQ_MAX_SIGNALS)
        return -1;
    sigaddset(&loop->sigmask, signo);
    if (sigprocmask(SIG_BLOCK, &loop->sigmask, NULL) < 0)
        return -1;
    int fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (loop->sigfd < 0) {
        loop->sigfd = fd;
        if (lq_loop_watch(loop, fd, LQ_READABLE, s_on_signalfd, NULL) < 0)
            return -1;
    }
    loop->signals[loop->nsignals].signo = signo;
    loop->signals[loop->nsignals].cb = cb;
    loop->signals[loop->nsignals].arg = arg;
    loop->nsignals++;
    return 0;
}

/* ---- running ---- */

static int s_run_timers(lq_loop_t *loop)
{
    int n = 0;
    uint64_t now = lq_loop_now(loop);
    /* Only timers due now; a timer re-armed for 0 ms inside its callback
     * waits for the next iteration because its seq is newer than the bound. */
    uint64_t seq_bound = loop->timer_seq;
    while (loop->heap_len > 0) {
        lq_timer_t *t = loop->heap[0];
        if (t->due_ms > now || t->seq > seq_bound)
            break;
        lq_timer_stop(loop, t);
        t->cb(loop, t, t->arg);
        n++;
    }
    return n;
}

int lq_loop_run_once(lq_loop_t *loop, int timeout_ms)
{
    for (int i = 0; i < loop->nhooks; i++)
        loop->hooks[i].cb(loop, loop->hooks[i].arg);

    int wait = timeout_ms;
    if (loop->heap_len > 0) {
        uint64_t now = lq_loop_now(loop);
        uint64_t due = loop->heap[0]->due_ms;
        int until = due <= now ? 0 : (due - now > 86400000u ? 86400000 : (int)(due - now));
        if (wait < 0 || until < wait)
            wait = until;
    }
    if (loop->stop)
        wait = 0;
    struct epoll_event evs[LQ_MAX_EVENTS];
    int n = epoll_wait(loop->epfd, evs, LQ_MAX_EVENTS, wait);
    if (n < 0) {
        if (errno != EINTR)
            return -1;
        n = 0;
    }
    int dispatched = 0;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd >= loop->nfds || loop->fds[fd].events == 0)
            continue; /* unwatched by an earlier callback in this batch */
        int ev = 0;
        if (evs[i].events & EPOLLIN)
            ev |= LQ_READABLE;
        if (evs[i].events & EPOLLOUT)
            ev |= LQ_WRITABLE;
        if (evs[i].events & (EPOLLERR | EPOLLHUP))
            ev |= LQ_ERROR_EV | (loop->fds[fd].events & (LQ_READABLE | LQ_WRITABLE));
        ev &= loop->fds[fd].events | LQ_ERROR_EV;
        if (!ev)
            continue;
        loop->fds[fd].cb(loop, fd, ev, loop->fds[fd].arg);
        dispatched++;
    }
    dispatched += s_run_timers(loop);
    return dispatched;
}

int lq_loop_run(lq_loop_t *loop)
{
    loop->stop = 0;
    while (!loop->stop) {
        if (lq_loop_run_once(loop, -1) < 0)
            return -1;
    }
    return 0;
}

void lq_loop_stop(lq_loop_t *loop)
{
    loop->stop = 1;
}
