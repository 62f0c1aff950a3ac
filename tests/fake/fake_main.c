/* fake_main: entry point of llmq-fake-upstream, a fast fake
 * OpenAI-compatible HTTP/1.1 server for the tests, the demo and the
 * benchmarks. Parses the flags, raises RLIMIT_NOFILE, binds the listening
 * socket, announces the port (--port-file, or "PORT <n>" on stdout for
 * --port 0), then runs the loop until SIGTERM or SIGINT and exits 0.
 *
 * The modules: fake_http (request parser, buffers), fake_table (per-job
 * counts), fake_behaviour (what to answer), fake_conn (sockets). main owns
 * the loop, the behaviour and the server. */
#define _GNU_SOURCE
#include "fake_behaviour.h"
#include "fake_conn.h"

#include "common/log.h"
#include "common/loop.h"
#include "common/opts.h"
#include "common/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char s_usage[] =
    "usage: llmq-fake-upstream [options]\n"
    "\n"
    "A fake OpenAI-compatible HTTP/1.1 server for tests and benchmarks.\n"
    "Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings;\n"
    "GET /stats, GET /counts, POST /reset. Probabilities are decimals in [0,1].";

/* Parses a probability or rate "s" for option name into *out (within
 * [0, max]). Returns 0, or -1 after printing an error. */
static int s_parse_double(const char *name, const char *s, double max, double *out)
{
    if (!s)
        return 0;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || errno || *end || !isfinite(v) || v < 0 || v > max) {
        fprintf(stderr, "llmq-fake-upstream: --%s: '%s' is not a number in [0, %g]\n", name, s,
                max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Raises the soft open-files limit to the hard limit. Logs on failure. */
static void s_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && want == RLIM_INFINITY) {
        rl.rlim_cur = 1048576;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            LQ_WARN("cannot raise RLIMIT_NOFILE: %s", strerror(errno));
    }
}

/* Binds and listens on host:port. Returns the non-blocking fd and stores
 * the bound port, or returns -1 after logging. */
static int s_listen(const char *host, int port, int *bound)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0) {
        LQ_ERROR("cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 65535) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        LQ_ERROR("cannot listen on %s:%d: %s", host, port, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *bound = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* Writes "port\n" to path atomically (temporary file + rename). Returns 0
 * or -1 after logging. */
static int s_write_port_file(const char *path, int port)
{
    char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%d\n", port) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        LQ_ERROR("cannot write port file %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/* SIGTERM/SIGINT handler (run from the loop): stops the loop. */
static void s_on_signal(lq_loop_t *loop, void *arg)
{
    (void)arg;
    LQ_INFO("signal received, exiting");
    lq_loop_stop(loop);
}

/* Returns a random 64-bit seed. Can't fail. */
static uint64_t s_random_seed(void)
{
    uint64_t x;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
        x = lq_mono_us() ^ ((uint64_t)getpid() << 32);
    return x;
}

/* Parses --rate-steps "MS:R,MS:R" into cfg. Returns 0 or -1. */
static int s_parse_steps(const char *spec, lq_fake_cfg_t *cfg)
{
    if (cfg->rate_limit <= 0)
        return -1;
    const char *p = spec;
    while (*p) {
        char *end;
        long long ms = strtoll(p, &end, 10);
        if (end == p || *end != ':' || ms < 0 || cfg->nsteps == 8)
            return -1;
        p = end + 1;
        double r = strtod(p, &end);
        if (end == p || !(r > 0) || r > 1e9 || (*end && *end != ','))
            return -1;
        cfg->step_ms[cfg->nsteps] = ms;
        cfg->step_rate[cfg->nsteps++] = r;
        p = *end ? end + 1 : end;
    }
    return cfg->nsteps > 0 ? 0 : -1;
}

/* Parses the flags, serves until a signal, returns the exit status. */
int main(int argc, char **argv)
{
    lq_log_init("llmq-fake-upstream");
    const char *host = "127.0.0.1", *port_file = NULL, *log_level = "info";
    const char *s500 = NULL, *s503 = NULL, *sdrop = NULL, *shang = NULL;
    const char *srate = NULL, *sburst = NULL, *ra_format = "seconds";
    const char *stoken = NULL, *hdr_style = "openai", *steps = NULL;
    long long cold_ms = 0, ra_fixed_ms = 0;
    const char *fail_prefix = NULL, *bad_prefix = NULL, *api_key = NULL;
    long long port = 8000, latency = 0, jitter = 0, body_bytes = 0, seed = -1;
    long long max_request = 8ll << 20;
    const lq_opt_t opts[] = {
        {"host", NULL, LQ_OPT_STR, &host, "H", "address to listen on (default 127.0.0.1)"},
        {"port", NULL, LQ_OPT_INT, &port, "N", "port (default 8000; 0 = ephemeral)", 0, 65535},
        {"port-file", NULL, LQ_OPT_STR, &port_file, "FILE",
         "write the bound port here (atomically) after listen"},
        {"latency-ms", NULL, LQ_OPT_INT, &latency, "N", "delay before each API response", 0,
         86400000},
        {"jitter-ms", NULL, LQ_OPT_INT, &jitter, "N", "extra uniform delay 0..N ms", 0, 86400000},
        {"fail-500", NULL, LQ_OPT_STR, &s500, "P", "probability of a 500"},
        {"fail-503", NULL, LQ_OPT_STR, &s503, "P", "probability of a 503"},
        {"drop", NULL, LQ_OPT_STR, &sdrop, "P", "probability of closing without a response"},
        {"hang", NULL, LQ_OPT_STR, &shang, "P", "probability of never responding"},
        {"rate-limit", NULL, LQ_OPT_STR, &srate, "R", "requests/s (token bucket); 0 = unlimited"},
        {"burst", NULL, LQ_OPT_STR, &sburst, "B", "bucket size (default max(1, R/20))"},
        {"token-limit", NULL, LQ_OPT_STR, &stoken, "T",
         "tokens/s (prompt chars/4 + completion), bucket of T/20; 0 = unlimited"},
        {"headers", NULL, LQ_OPT_STR, &hdr_style, "S",
         "rate-limit headers: openai (default), anthropic, none"},
        {"rate-steps", NULL, LQ_OPT_STR, &steps, "MS:R,...",
         "the rate limit becomes R requests/s MS ms after the first request (up to 8)"},
        {"cold-ms", NULL, LQ_OPT_INT, &cold_ms, "N",
         "429 with no header at all for N ms after the first request", 0, 86400000},
        {"retry-after-fixed-ms", NULL, LQ_OPT_INT, &ra_fixed_ms, "N",
         "every 429 says this Retry-After (whole seconds), not the real wait", 0, 86400000},
        {"retry-after-format", NULL, LQ_OPT_STR, &ra_format, "F",
         "429 headers: seconds (retry-after + retry-after-ms), date, none"},
        {"always-fail-prefix", NULL, LQ_OPT_STR, &fail_prefix, "P",
         "custom_id starting with P always gets 500"},
        {"bad-request-prefix", NULL, LQ_OPT_STR, &bad_prefix, "P",
         "custom_id starting with P always gets 400"},
        {"body-bytes", NULL, LQ_OPT_INT, &body_bytes, "N", "pad 200 bodies to at least N bytes", 0,
         1ll << 30},
        {"max-request-bytes", NULL, LQ_OPT_INT, &max_request, "N",
         "largest request body (default 8 MiB); 413 above", 0, 1ll << 32},
        {"api-key", NULL, LQ_OPT_STR, &api_key, "KEY", "require Authorization: Bearer KEY"},
        {"seed", NULL, LQ_OPT_INT, &seed, "N", "random seed (default: random)", 0, LLONG_MAX},
        {"log-level", NULL, LQ_OPT_STR, &log_level, "L", "debug, info, warn, error, off"},
        {NULL},
    };
    lq_opts_result_t res;
    char err[256];
    if (lq_opts_parse(opts, argc, argv, 1, &res, err, sizeof err) < 0) {
        fprintf(stderr, "llmq-fake-upstream: %s\n", err);
        return 1;
    }
    if (res.help) {
        lq_opts_print_help(stdout, s_usage, opts);
        return 0;
    }
    if (res.npositionals > 0) {
        fprintf(stderr, "llmq-fake-upstream: unexpected argument '%s' (try --help)\n",
                res.positionals[0]);
        return 1;
    }
    lq_log_level_t level;
    if (lq_log_parse_level(log_level, &level) < 0) {
        fprintf(stderr, "llmq-fake-upstream: --log-level: unknown level '%s'\n", log_level);
        return 1;
    }
    lq_log_set_level(level);

    lq_fake_cfg_t cfg = {0};
    cfg.latency_ms = latency;
    cfg.jitter_ms = jitter;
    if (s_parse_double("fail-500", s500, 1, &cfg.p_500) < 0 ||
        s_parse_double("fail-503", s503, 1, &cfg.p_503) < 0 ||
        s_parse_double("drop", sdrop, 1, &cfg.p_drop) < 0 ||
        s_parse_double("hang", shang, 1, &cfg.p_hang) < 0 ||
        s_parse_double("rate-limit", srate, 1e9, &cfg.rate_limit) < 0 ||
        s_parse_double("burst", sburst, 1e9, &cfg.burst) < 0 ||
        s_parse_double("token-limit", stoken, 1e12, &cfg.token_limit) < 0)
        return 1;
    if (strcmp(hdr_style, "openai") == 0) {
        cfg.header_style = LQ_FAKE_HDR_OPENAI;
    } else if (strcmp(hdr_style, "anthropic") == 0) {
        cfg.header_style = LQ_FAKE_HDR_ANTHROPIC;
    } else if (strcmp(hdr_style, "none") == 0) {
        cfg.header_style = LQ_FAKE_HDR_NONE;
    } else {
        fprintf(stderr, "llmq-fake-upstream: --headers: use openai, anthropic or none\n");
        return 1;
    }
    cfg.cold_ms = cold_ms;
    if (steps && s_parse_steps(steps, &cfg) < 0) {
        fprintf(stderr, "llmq-fake-upstream: --rate-steps: want MS:R[,MS:R...] (up to 8, "
                        "R > 0, with --rate-limit)\n");
        return 1;
    }
    cfg.retry_after_fixed_ms = ra_fixed_ms;
    if (cfg.p_500 + cfg.p_503 + cfg.p_drop + cfg.p_hang > 1.0 + 1e-9) {
        fprintf(stderr, "llmq-fake-upstream: --fail-500 + --fail-503 + --drop + --hang > 1\n");
        return 1;
    }
    if (strcmp(ra_format, "seconds") == 0) {
        cfg.retry_after_format = LQ_FAKE_RA_SECONDS;
    } else if (strcmp(ra_format, "date") == 0) {
        cfg.retry_after_format = LQ_FAKE_RA_DATE;
    } else if (strcmp(ra_format, "none") == 0) {
        cfg.retry_after_format = LQ_FAKE_RA_NONE;
    } else {
        fprintf(stderr, "llmq-fake-upstream: --retry-after-format: use seconds, date or none\n");
        return 1;
    }
    cfg.always_fail_prefix = fail_prefix;
    cfg.bad_request_prefix = bad_prefix;
    cfg.api_key = api_key;
    cfg.body_bytes = body_bytes;
    cfg.seed = seed >= 0 ? (uint64_t)seed : s_random_seed();

    signal(SIGPIPE, SIG_IGN);
    s_raise_nofile();
    int bound = 0;
    int lfd = s_listen(host, (int)port, &bound);
    if (lfd < 0)
        return 2;
    lq_loop_t *loop = lq_loop_new();
    if (!loop) {
        LQ_ERROR("cannot create the event loop: %s", strerror(errno));
        close(lfd);
        return 2;
    }
    lq_fake_bhv_t *bhv = lq_fake_bhv_new(&cfg);
    lq_fake_srv_t *srv = lq_fake_srv_new(loop, lfd, bhv, (size_t)max_request);
    int status = 0;
    if (!srv || lq_loop_on_signal(loop, SIGTERM, s_on_signal, NULL) < 0 ||
        lq_loop_on_signal(loop, SIGINT, s_on_signal, NULL) < 0) {
        LQ_ERROR("cannot set up the server: %s", strerror(errno));
        status = 2;
        goto out;
    }
    if (port_file) {
        if (s_write_port_file(port_file, bound) < 0) {
            status = 2;
            goto out;
        }
    } else if (port == 0) {
        printf("PORT %d\n", bound);
        fflush(stdout);
    }
    LQ_INFO("listening on %s:%d (seed %llu)", host, bound, (unsigned long long)cfg.seed);
    if (lq_loop_run(loop) < 0) {
        LQ_ERROR("event loop failed: %s", strerror(errno));
        status = 2;
    }
out:
    lq_fake_srv_destroy(&srv);
    lq_fake_bhv_destroy(&bhv);
    lq_loop_destroy(&loop);
    return status;
}
