/* loop: a small epoll event loop in the style of Redis ae.
 *
 * The loop owns its epoll fd, the fd table and the timer heap. Callers own
 * the lq_timer_t structs they start (embed them in their own objects); the
 * loop only links them into its heap. File descriptors are level-triggered.
 * Before-sleep hooks run on every iteration before epoll_wait (the worker and
 * the broker flush coalesced work there: credit, result reports). ZeroMQ
 * sockets are drained by wire/zsock.c on fd events and 0 ms timers.
 * The clock can be replaced for deterministic tests. */
#ifndef LQ_LOOP_H
#define LQ_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct lq_loop lq_loop_t;

#define LQ_READABLE 1
#define LQ_WRITABLE 2
#define LQ_ERROR_EV 4 /* reported together with READABLE/WRITABLE on EPOLLERR/HUP */

typedef void (*lq_fd_cb)(lq_loop_t *loop, int fd, int events, void *arg);
typedef void (*lq_hook_cb)(lq_loop_t *loop, void *arg);
typedef uint64_t (*lq_clock_fn)(void *arg);

typedef struct lq_timer lq_timer_t;
typedef void (*lq_timer_cb)(lq_loop_t *loop, lq_timer_t *timer, void *arg);

/* A one-shot timer. Embed it in your object, lq_timer_init() it once,
 * then start/stop it as often as you like. Fields are the loop's. */
struct lq_timer {
    uint64_t due_ms;
    size_t heap_index; /* SIZE_MAX when not armed */
    uint64_t seq;      /* tie-breaker: earlier start fires first */
    lq_timer_cb cb;
    void *arg;
};

/* Creates a loop. Returns NULL if epoll cannot be created. */
lq_loop_t *lq_loop_new(void);
/* Destroys the loop (not the timers or fds registered on it). Safe on NULL;
 * clears *loop. */
void lq_loop_destroy(lq_loop_t **loop);

/* Watches fd for events (LQ_READABLE|LQ_WRITABLE); replaces an earlier
 * registration of the same fd. events == 0 removes it. Returns 0 or -1. */
int lq_loop_watch(lq_loop_t *loop, int fd, int events, lq_fd_cb cb, void *arg);
/* Stops watching fd. Safe for an fd that is not watched. Call it before
 * close(fd). Can't fail. */
void lq_loop_unwatch(lq_loop_t *loop, int fd);

/* Prepares a timer. Can't fail. */
void lq_timer_init(lq_timer_t *t, lq_timer_cb cb, void *arg);
/* (Re)arms t to fire once after after_ms milliseconds (0: on the next
 * iteration). Can't fail. */
void lq_timer_start(lq_loop_t *loop, lq_timer_t *t, uint64_t after_ms);
/* Disarms t if armed. Can't fail. */
void lq_timer_stop(lq_loop_t *loop, lq_timer_t *t);
/* Returns 1 if t is armed. */
int lq_timer_active(const lq_timer_t *t);

/* Adds a hook that runs before every sleep; up to 8 hooks. Returns 0 or -1. */
int lq_loop_add_before_sleep(lq_loop_t *loop, lq_hook_cb cb, void *arg);

/* Registers a signal handler run from the loop (signalfd). The signal is
 * blocked for the whole process. Up to 8 signals. Returns 0 or -1. */
int lq_loop_on_signal(lq_loop_t *loop, int signo, lq_hook_cb cb, void *arg);

/* Runs one iteration: before-sleep hooks, wait up to timeout_ms (-1 = until
 * the next timer or forever), dispatch fd events, then due timers.
 * Returns the number of fd events and timers dispatched, or -1 on error. */
int lq_loop_run_once(lq_loop_t *loop, int timeout_ms);
/* Runs iterations until lq_loop_stop(). Returns 0. */
int lq_loop_run(lq_loop_t *loop);
/* Makes lq_loop_run() return after the current iteration. Can't fail. */
void lq_loop_stop(lq_loop_t *loop);

/* Current loop time in ms (the injected clock, or the monotonic clock). */
uint64_t lq_loop_now(lq_loop_t *loop);
/* Replaces the clock, for tests. NULL restores the monotonic clock. */
void lq_loop_set_clock(lq_loop_t *loop, lq_clock_fn fn, void *arg);

#endif
