/* Unit tests for gateway/store.c (and the submit library's validation
 * callbacks it feeds, client/submit.c): ids that may reach a path, owners,
 * time-ordered ids, atomic records, per-owner listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/submit.h"
#include "common/util.h"
#include "gateway/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/lq-gw-store-XXXXXX");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    char *cmd = xasprintf("rm -rf '%s'", s_dir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static void test_ids_that_reach_paths(void **state)
{
    (void)state;
    assert_true(lq_store_id_ok("file-01a2b3"));
    assert_true(lq_store_id_ok("batch_X9"));
    assert_false(lq_store_id_ok(""));
    assert_false(lq_store_id_ok(".."));
    assert_false(lq_store_id_ok("../etc"));
    assert_false(lq_store_id_ok("a/b"));
    assert_false(lq_store_id_ok("a b"));
    assert_false(lq_store_id_ok("a\nb"));
    char long_id[80];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(lq_store_id_ok(long_id));
    lq_store_t *s = lq_store_new(s_dir, long_id, sizeof long_id);
    assert_non_null(s);
    assert_null(lq_store_path(s, "0123456789abcdef", "files", "../x", ".json"));
    assert_null(lq_store_load(s, "0123456789abcdef", "files", "../../x"));
    lq_store_destroy(&s);
    assert_null(s);
}

static void test_owners_and_ids(void **state)
{
    (void)state;
    char a[LQ_STORE_OWNER_LEN + 1], b[LQ_STORE_OWNER_LEN + 1], a2[LQ_STORE_OWNER_LEN + 1];
    lq_store_owner("token-a", a);
    lq_store_owner("token-b", b);
    lq_store_owner("token-a", a2);
    assert_int_equal(strlen(a), LQ_STORE_OWNER_LEN);
    assert_string_equal(a, a2);
    assert_string_not_equal(a, b);
    assert_true(lq_store_id_ok(a));
    char x[LQ_STORE_ID_MAX + 1], y[LQ_STORE_ID_MAX + 1];
    lq_store_new_id("file-", x);
    usleep(2000);
    lq_store_new_id("file-", y);
    assert_int_equal(strncmp(x, "file-", 5), 0);
    assert_int_equal(strlen(x), 25);
    assert_true(strcmp(x, y) < 0); /* time-ordered */
    assert_true(lq_store_id_ok(x));
}

static int s_edit_set(json_t *rec, void *arg)
{
    json_object_set_new(rec, "phase", json_string(arg));
    return 0;
}

static int s_edit_decline(json_t *rec, void *arg)
{
    (void)rec;
    (void)arg;
    return -1;
}

static void test_records_per_owner(void **state)
{
    (void)state;
    char err[128];
    lq_store_t *s = lq_store_new(s_dir, err, sizeof err);
    assert_non_null(s);
    const char *alice = "00000000000000aa", *bob = "00000000000000bb";
    json_t *r = json_pack("{s:s}", "phase", "validating");
    assert_int_equal(lq_store_save(s, alice, "batches", "batch_1", r), 0);
    assert_int_equal(lq_store_save(s, alice, "batches", "batch_2", r), 0);
    assert_int_equal(lq_store_save(s, bob, "batches", "batch_3", r), 0);
    json_decref(r);
    /* Another owner's record is not there. */
    assert_null(lq_store_load(s, bob, "batches", "batch_1"));
    assert_int_equal(lq_store_update(s, bob, "batches", "batch_1", s_edit_set, "x"), -1);
    assert_int_equal(lq_store_remove(s, bob, "batches", "batch_1", NULL), -1);
    /* Update in place; a declined edit changes nothing. */
    assert_int_equal(lq_store_update(s, alice, "batches", "batch_1", s_edit_set, "submitted"),
                     0);
    assert_int_equal(lq_store_update(s, alice, "batches", "batch_1", s_edit_decline, NULL), -1);
    json_t *got = lq_store_load(s, alice, "batches", "batch_1");
    assert_string_equal(json_string_value(json_object_get(got, "phase")), "submitted");
    json_decref(got);
    /* Listing: newest (largest id) first, per owner or all. */
    char **ids, **owners;
    size_t n = lq_store_list(s, alice, "batches", &ids, NULL);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "batch_2");
    assert_string_equal(ids[1], "batch_1");
    lq_store_ids_free(ids, n);
    n = lq_store_list(s, NULL, "batches", &ids, &owners);
    assert_int_equal(n, 3);
    lq_store_ids_free(ids, n);
    lq_store_ids_free(owners, n);
    assert_int_equal(lq_store_remove(s, alice, "batches", "batch_2", NULL), 0);
    n = lq_store_list(s, alice, "batches", &ids, NULL);
    assert_int_equal(n, 1);
    lq_store_ids_free(ids, n);
    /* Sweeping removes only the named leftovers. */
    char *part = lq_store_path(s, alice, "files", "upload-1", ".part");
    char *keep = lq_store_path(s, alice, "files", "file-1", ".jsonl");
    fclose(fopen(part, "w"));
    fclose(fopen(keep, "w"));
    assert_int_equal(lq_store_sweep(s, "files", ".part"), 1);
    assert_int_equal(access(part, F_OK), -1);
    assert_int_equal(access(keep, F_OK), 0);
    free(part);
    free(keep);
    lq_store_destroy(&s);
}

typedef struct {
    long long lines[8];
    int n;
} s_errs_t;

static void s_on_error(void *arg, long long line, const char *message)
{
    (void)message;
    s_errs_t *e = arg;
    if (e->n < 8)
        e->lines[e->n++] = line;
}

static void test_submit_validation_reports_lines(void **state)
{
    (void)state;
    char *path = xasprintf("%s/in.jsonl", s_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n"
          "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}\n"
          "{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":\n"
          "{\"custom_id\":\"d\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n",
          f);
    fclose(f);
    /* Any url: one invalid line (3). */
    s_errs_t e = {0};
    lq_submit_t *sub = lq_submit_new(path, NULL);
    assert_int_equal(lq_submit_validate(sub, 10, s_on_error, &e), -1);
    assert_int_equal(lq_submit_invalid_lines(sub), 1);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.lines[0], 3);
    lq_submit_destroy(&sub);
    assert_null(sub);
    /* One endpoint: line 2 too; max_reported caps the callbacks, not the count. */
    memset(&e, 0, sizeof e);
    sub = lq_submit_new(path, NULL);
    lq_submit_expect_url(sub, "/v1/chat/completions");
    assert_int_equal(lq_submit_validate(sub, 1, s_on_error, &e), -1);
    assert_int_equal(lq_submit_invalid_lines(sub), 2);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.lines[0], 2);
    assert_string_equal(lq_submit_batch(sub), "");
    lq_submit_destroy(&sub);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_that_reach_paths),
        cmocka_unit_test(test_owners_and_ids),
        cmocka_unit_test(test_records_per_owner),
        cmocka_unit_test(test_submit_validation_reports_lines),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
