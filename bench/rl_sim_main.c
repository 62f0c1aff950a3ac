/* llmq-rl-sim: runs the rate controller (broker/ratelimit.c) against the
 * simulated provider shapes of issue 12 (tests/sim/rl_sim.c) and prints one
 * line per shape: wall against ideal, share of 429s, jobs lost. With
 * --trace DIR it also writes DIR/rl_<shape>.dat (time, pace, delivered,
 * provider rate, 429s so far; one row per 100 ms) for the plots of
 * docs/architecture.md. The clock is simulated: the figures are exact and
 * do not depend on the machine. Usage: llmq-rl-sim [--trace DIR] [--json]. */
#include "tests/sim/rl_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    FILE *f;
    uint64_t step_at[2];  /* provider rate steps to time the following of */
    double step_rate[2];
    double follow_ms[2];  /* -1 until followed */
    double last_pace;
} s_trace_t;

/* Writes a sample and times how long the pace took to follow a step: down,
 * until the pace is at most the new rate; up, until the delivered rate is at
 * least 90% of it. */
static void s_on_sample(void *arg, const lq_sim_sample_t *s)
{
    s_trace_t *tr = arg;
    if (tr->f)
        fprintf(tr->f, "%.1f %.1f %.1f %.1f %lld\n", (double)s->t_ms / 1000.0, s->pace_rps,
                s->ok_rps, s->provider_rps, (long long)s->n429);
    for (int i = 0; i < 2; i++) {
        if (!tr->step_at[i] || s->t_ms < tr->step_at[i] || tr->follow_ms[i] >= 0)
            continue;
        int down = i == 0;
        int ok = down ? s->pace_rps <= tr->step_rate[i] : s->ok_rps >= 0.9 * tr->step_rate[i];
        if (ok)
            tr->follow_ms[i] = (double)(s->t_ms - tr->step_at[i]);
    }
}

typedef struct {
    const char *name, *what;
    lq_sim_provider_t p;
    int jobs;
    int64_t est, used;
    int headers_cfg;
} s_shape_t;

/* Runs one shape; prints its line. Returns 0. */
static int s_run(const s_shape_t *sh, const char *dir, int json, int first)
{
    s_trace_t tr = {0};
    tr.follow_ms[0] = tr.follow_ms[1] = -1;
    if (sh->p.nsteps == 2) {
        for (int i = 0; i < 2; i++) {
            tr.step_at[i] = sh->p.steps[i].at_ms;
            tr.step_rate[i] = sh->p.steps[i].rate;
        }
    }
    char path[512];
    if (dir) {
        snprintf(path, sizeof path, "%s/rl_%s.dat", dir, sh->name);
        tr.f = fopen(path, "w");
        if (!tr.f) {
            perror(path);
            exit(2);
        }
    }
    lq_sim_cfg_t cfg = {sh->jobs, 400, 20, sh->est, sh->used, {0, 0, sh->headers_cfg}, NULL,
                        s_on_sample, &tr};
    lq_sim_result_t r;
    lq_sim_run(&sh->p, &cfg, &r);
    if (tr.f)
        fclose(tr.f);
    double ideal = lq_sim_ideal_ms(&sh->p, sh->jobs, sh->used);
    double share = 100.0 * (double)r.n429 / (double)r.requests;
    if (json) {
        printf("%s{\"shape\":\"%s\",\"jobs\":%d,\"ideal_s\":%.3f,\"wall_s\":%.3f,\"x_ideal\":%.4f,"
               "\"n429\":%lld,\"requests\":%lld,\"pct429\":%.3f,\"lost\":%lld,"
               "\"follow_down_s\":%.3f,\"follow_up_s\":%.3f}",
               first ? "" : ",\n", sh->name, sh->jobs, ideal / 1000, (double)r.wall_ms / 1000,
               (double)r.wall_ms / ideal, (long long)r.n429, (long long)r.requests, share,
               (long long)r.lost, tr.follow_ms[0] < 0 ? -1.0 : tr.follow_ms[0] / 1000,
               tr.follow_ms[1] < 0 ? -1.0 : tr.follow_ms[1] / 1000);
    } else {
        printf("%-12s %-58s %6.2f s / %6.2f s = %.3fx  429s %5.2f%%  lost %lld", sh->name, sh->what,
               (double)r.wall_ms / 1000, ideal / 1000, (double)r.wall_ms / ideal, share,
               (long long)r.lost);
        if (tr.step_at[0])
            printf("  follow down %.1f s, up %.1f s", tr.follow_ms[0] / 1000,
                   tr.follow_ms[1] / 1000);
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--trace") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "usage: llmq-rl-sim [--trace DIR] [--json]\n");
            return 1;
        }
    }
    /* provider: rate, burst, tok_rate, tok_burst, retry_after, headers, cold */
    const s_shape_t shapes[] = {
        {"bucket", "1: bucket 500/s burst 50, 429 + Retry-After: 1, no headers",
         {500, 50, 0, 0, 1000, 0, 0, {{0, 0}}, 0}, 5000, 10, 10, 1},
        {"openai", "2: OpenAI-style headers 500/s, retry-after-ms",
         {500, 0, 0, 0, -1, 1, 0, {{0, 0}}, 0}, 5000, 10, 10, 1},
        {"anthropic", "3: Anthropic-style headers 500/s, retry-after: 1",
         {500, 0, 0, 0, 1000, 1, 0, {{0, 0}}, 0}, 5000, 10, 10, 1},
        {"tokens", "4: 250k tokens/s binds before 500 req/s, estimate 60%",
         {500, 0, 250000, 0, -1, 1, 0, {{0, 0}}, 0}, 5000, 600, 1000, 1},
        {"tokens-nohdr", "4: the same without headers (429s only)",
         {500, 0, 250000, 0, -1, 0, 0, {{0, 0}}, 0}, 5000, 600, 1000, 0},
        {"cold", "5: 500/s, every request 429 (no headers) for the first 1 s",
         {500, 0, 0, 0, -2, 0, 1000, {{0, 0}}, 0}, 5000, 10, 10, 1},
        {"steps", "6: 400/s, 200/s from 5 s, 400/s from 12 s, no headers",
         {400, 0, 0, 0, -1, 0, 0, {{5000, 200}, {12000, 400}}, 2}, 7000, 10, 10, 1},
        {"two-a", "7: upstream A 500/s (fleet of two upstreams)",
         {500, 0, 0, 0, 1000, 0, 0, {{0, 0}}, 0}, 5000, 10, 10, 1},
        {"two-b", "7: upstream B 100/s (fleet of two upstreams)",
         {100, 0, 0, 0, 1000, 0, 0, {{0, 0}}, 0}, 1000, 10, 10, 1},
    };
    if (json)
        printf("[");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        s_run(&shapes[i], dir, json, i == 0);
    if (json)
        printf("]\n");
    return 0;
}
