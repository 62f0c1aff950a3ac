/* fuzz_jobline: libFuzzer target for one input line of `llmq submit`
 * (client/jobline.c and its fast path client/jobscan.c).
 *
 * Input: one batch line (no LF). It is parsed twice, by lq_jobline_parse()
 * (the jobscan fast path, then jansson) and by lq_jobline_parse_json()
 * (jansson alone). Both must agree on the verdict, on the job (custom_id,
 * url, body bytes, token estimate) and on the error message. An accepted
 * job must respect the documented rules: non-empty custom_id, url starting
 * with "/", a body that is one JSON object, a non-negative estimate. The
 * same bytes are also turned into a prompts-file job, whose body must be
 * valid JSON. Seeds: tests/fuzz/seeds/jobline/. */
#include "client/jobline.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run: libFuzzer saves the input. */
static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_jobline: %s\n", what);
    abort();
}

/* Checks the documented properties of an accepted job. */
static void s_check_job(const lq_job_spec_t *s)
{
    if (!s->custom_id || !s->custom_id[0] || !s->url || s->url[0] != '/' || s->est_tokens < 0)
        s_die("accepted job breaks a rule");
    json_error_t e;
    json_t *b = json_loadb(s->body, s->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!b || !json_is_object(b))
        s_die("accepted body is not a JSON object");
    json_decref(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *a = malloc(size + 1), *b = malloc(size + 1);
    memcpy(a, data, size);
    memcpy(b, data, size);
    a[size] = b[size] = '\0';
    lq_jobline_t ja = {0}, jb = {0};
    int ra = lq_jobline_parse(&ja, a, size);
    int rb = lq_jobline_parse_json(&jb, b, size);
    if (ra != rb)
        s_die("fast path and jansson disagree on the verdict");
    if (ra == 0) {
        s_check_job(&ja.spec);
        if (strcmp(ja.spec.custom_id, jb.spec.custom_id) != 0 ||
            strcmp(ja.spec.url, jb.spec.url) != 0 || ja.spec.body_len != jb.spec.body_len ||
            memcmp(ja.spec.body, jb.spec.body, ja.spec.body_len) != 0 ||
            ja.spec.est_tokens != jb.spec.est_tokens)
            s_die("fast path and jansson give different jobs");
    } else if (strcmp(ja.err, jb.err) != 0 || ja.col != jb.col || !ja.err[0]) {
        s_die("fast path and jansson give different errors");
    }
    lq_jobline_clear(&ja);
    lq_jobline_clear(&jb);
    if (lq_jobline_prompt(&ja, (const char *)data, size, 7, "m", size & 1 ? "sys" : NULL,
                          (long long)(size % 3)) == 0)
        s_check_job(&ja.spec);
    lq_jobline_clear(&ja);
    free(a);
    free(b);
    return 0;
}
