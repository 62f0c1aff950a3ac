/* fuzz_jsonl: libFuzzer target for the streaming reader of `llmq submit`
 * input files (client/jsonl.c over client/jobline.c, jobscan.c, idset.c).
 *
 * Input: the first byte picks the mode (bit 0: prompts file) and a line
 * limit (bits 1-3: 0 = the default, else 2^(4+k) bytes), the rest is the
 * file, placed in a memfd. The reader makes a validation pass and, when it
 * is clean, a second pass after lq_jsonl_rewind(), as `llmq submit` does.
 * Properties: every error message has the documented "FILE:LINE" prefix,
 * line numbers never go backwards, every job follows the line rules, and
 * the second pass yields exactly the jobs of the first.
 * Seeds: tests/fuzz/seeds/jsonl/. */
#define _GNU_SOURCE
#include "client/jsonl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_jsonl: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* One pass; returns the number of jobs, or -1 when an error was met.
 * *sum accumulates the job bytes, so two passes can be compared. */
static long long s_pass(lq_jsonl_t *r, const char *path, uint64_t *sum)
{
    long long last_line = 0, jobs = 0, bad = 0;
    for (int i = 0; i < 100000; i++) {
        lq_job_spec_t s;
        int rc = lq_jsonl_next(r, &s);
        if (rc == LQ_JSONL_EOF)
            break;
        if (rc == LQ_JSONL_FATAL) {
            if (strncmp(lq_jsonl_error(r), path, strlen(path)) != 0)
                s_die("fatal error without the file name", lq_jsonl_error(r));
            return -1;
        }
        if (lq_jsonl_line(r) < last_line || lq_jsonl_line(r) < 1)
            s_die("line numbers went backwards", lq_jsonl_error(r));
        last_line = lq_jsonl_line(r);
        if (rc == LQ_JSONL_BAD) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "%s:%lld:", path, last_line);
            if (strncmp(lq_jsonl_error(r), prefix, strlen(prefix)) != 0)
                s_die("error without FILE:LINE:", lq_jsonl_error(r));
            bad++;
            continue;
        }
        if (!s.custom_id[0] || s.url[0] != '/' || s.est_tokens < 0)
            s_die("job breaks a rule", s.custom_id);
        jobs++;
        for (size_t k = 0; k < s.body_len; k++)
            *sum = *sum * 31 + (uint8_t)s.body[k];
        for (const char *c = s.custom_id; *c; c++)
            *sum = *sum * 31 + (uint8_t)*c;
    }
    return bad ? -1 : jobs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    int fd = memfd_create("fuzz_jsonl", 0);
    if (fd < 0)
        return 0;
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    lq_jsonl_opts_t o = {0};
    o.mode = (data[0] & 1) ? LQ_JSONL_PROMPTS : LQ_JSONL_BATCH;
    unsigned k = (data[0] >> 1) & 7;
    o.max_line = k ? (size_t)1 << (4 + k) : 0;
    o.model = "m";
    o.id_hash_bits = (data[0] & 0x10) ? 4 : 0; /* force hash collisions now and then */
    lq_jsonl_t *r = lq_jsonl_new(path, &o);
    uint64_t sum1 = 0, sum2 = 0;
    long long n1 = s_pass(r, path, &sum1);
    if (n1 >= 0 && lq_jsonl_rewind(r) == 0) {
        long long n2 = s_pass(r, path, &sum2);
        if (n2 != n1 || sum1 != sum2)
            s_die("second pass differs from the first", lq_jsonl_error(r));
    }
    lq_jsonl_destroy(&r);
    close(fd);
    return 0;
}
