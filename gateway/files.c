/* files: /v1/files. Uploads (multipart/form-data, purpose=batch) are
 * parsed by libmicrohttpd's post processor and streamed straight to a
 * .part file under the owner's tree, then renamed into place: any size the
 * disk holds, in constant memory. The content of an upload is served from
 * its file; the output and error files of a batch ("file-out-..."
 * and "file-err-...") are not stored but streamed from the broker (content.c).
 * Lines are validated when a batch is created from a file (batches.c), as
 * OpenAI does: the errors, with line numbers, land on the batch. */
#include "gateway.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    struct MHD_PostProcessor *pp;
    int fd;
    char *tmp; /* the .part file, NULL once renamed */
    char purpose[64];
    size_t purpose_len;
    char filename[256];
    long long bytes;
    int has_file;
    int io_error;
} s_upload_t;

/* Writes all of data to fd. Returns 0 or -1. */
static int s_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The post processor's callback: one piece of one form field. */
static enum MHD_Result s_field(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    (void)off;
    s_upload_t *u = cls;
    if (strcmp(key, "purpose") == 0) {
        size_t room = sizeof u->purpose - 1 - u->purpose_len;
        size_t n = size < room ? size : room;
        memcpy(u->purpose + u->purpose_len, data, n);
        u->purpose_len += n;
        u->purpose[u->purpose_len] = '\0';
    } else if (strcmp(key, "file") == 0) {
        if (!u->has_file && filename)
            snprintf(u->filename, sizeof u->filename, "%s", filename);
        u->has_file = 1;
        if (size > 0 && s_write_all(u->fd, data, size) < 0) {
            u->io_error = errno ? errno : EIO;
            return MHD_NO;
        }
        u->bytes += (long long)size;
    }
    return MHD_YES;
}

int lq_files_upload_begin(lq_gw_req_t *r)
{
    s_upload_t *u = xcalloc(1, sizeof *u);
    u->fd = -1;
    u->pp = MHD_create_post_processor(r->conn, 64 * 1024, s_field, u);
    if (!u->pp) {
        free(u);
        return -1;
    }
    char rnd[17], id[40];
    lq_random_hex(rnd, sizeof rnd);
    snprintf(id, sizeof id, "upload-%s", rnd);
    u->tmp = lq_store_path(r->gw->store, r->owner, "files", id, ".part");
    u->fd = u->tmp ? open(u->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (u->fd < 0)
        u->io_error = errno ? errno : EIO;
    r->upload = u;
    return 0;
}

int lq_files_upload_data(lq_gw_req_t *r, const char *data, size_t len)
{
    s_upload_t *u = r->upload;
    if (u->io_error)
        return -1;
    if (MHD_post_process(u->pp, data, len) != MHD_YES && !u->io_error)
        u->io_error = EINVAL;
    return u->io_error ? -1 : 0;
}

void lq_files_upload_end(lq_gw_req_t *r)
{
    s_upload_t *u = r->upload;
    if (!u)
        return;
    if (u->pp)
        MHD_destroy_post_processor(u->pp);
    if (u->fd >= 0)
        close(u->fd);
    if (u->tmp) {
        unlink(u->tmp);
        free(u->tmp);
    }
    free(u);
    r->upload = NULL;
}

/* The API's file object from a stored record (borrowed). */
static json_t *s_file_object(json_t *rec)
{
    json_t *j = json_deep_copy(rec);
    json_object_set_new(j, "object", json_string("file"));
    json_object_set_new(j, "status", json_string("processed"));
    json_object_set_new(j, "status_details", json_null());
    return j;
}

/* Step of create: checks the form. Sets *replied and returns the MHD
 * result when it queued an error reply; returns 0 otherwise. */
static int s_check_upload(lq_gw_req_t *r, s_upload_t *u, int *replied)
{
    *replied = 1;
    if (u->io_error == EINVAL)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, NULL,
                                 "Malformed multipart/form-data body");
    if (u->io_error) {
        LQ_ERROR("upload: %s", strerror(u->io_error));
        return lq_gw_reply_error(r, 500, "server_error", NULL, NULL,
                                 "Cannot store the upload: %s", strerror(u->io_error));
    }
    if (strcmp(u->purpose, "batch") != 0)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, "purpose",
                                 "Invalid value for 'purpose': '%s'; this server accepts 'batch'",
                                 u->purpose);
    if (!u->has_file)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, "file",
                                 "Missing required parameter: 'file'");
    if (u->bytes == 0)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, "file",
                                 "The file is empty");
    *replied = 0;
    return 0;
}

int lq_files_create(lq_gw_req_t *r)
{
    s_upload_t *u = r->upload;
    if (!u)
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, NULL,
                                 "Uploads must be multipart/form-data");
    MHD_post_process(u->pp, "", 0); /* flush */
    int replied, rc = s_check_upload(r, u, &replied);
    if (replied)
        return rc;
    char id[LQ_STORE_ID_MAX + 1];
    lq_store_new_id("file-", id);
    char *path = lq_store_path(r->gw->store, r->owner, "files", id, ".jsonl");
    if (fsync(u->fd) < 0 || rename(u->tmp, path) < 0) {
        free(path);
        return lq_gw_reply_error(r, 500, "server_error", NULL, NULL, "Cannot store the upload");
    }
    free(path);
    free(u->tmp);
    u->tmp = NULL;
    json_t *rec = json_pack("{s:s,s:I,s:I,s:s,s:s}", "id", id, "bytes", (json_int_t)u->bytes,
                            "created_at", (json_int_t)lq_wall_s(), "filename",
                            u->filename[0] ? u->filename : "upload.jsonl", "purpose", "batch");
    if (lq_store_save(r->gw->store, r->owner, "files", id, rec) < 0) {
        json_decref(rec);
        return lq_gw_reply_error(r, 500, "server_error", NULL, NULL, "Cannot store the upload");
    }
    LQ_INFO("upload %s: %lld bytes", id, u->bytes);
    json_t *obj = s_file_object(rec);
    json_decref(rec);
    return lq_gw_reply_json(r, 200, obj);
}

int lq_files_list(lq_gw_req_t *r)
{
    const char *purpose = lq_gw_query(r, "purpose");
    char **ids;
    size_t n = lq_store_list(r->gw->store, r->owner, "files", &ids, NULL);
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *rec = lq_store_load(r->gw->store, r->owner, "files", ids[i]);
        if (rec && (!purpose || strcmp(purpose, "batch") == 0))
            json_array_append_new(data, s_file_object(rec));
        json_decref(rec);
    }
    lq_store_ids_free(ids, n);
    json_t *first = json_array_size(data) ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = json_array_size(data)
                       ? json_object_get(json_array_get(data, json_array_size(data) - 1), "id")
                       : NULL;
    return lq_gw_reply_json(r, 200,
                            json_pack("{s:s,s:o,s:O?,s:O?,s:b}", "object", "list", "data", data,
                                      "first_id", first, "last_id", last, "has_more", 0));
}

/* 1 if id names a batch's output or error file. */
static int s_is_result_file(const char *id)
{
    return strncmp(id, "file-out-", 9) == 0 || strncmp(id, "file-err-", 9) == 0;
}

int lq_files_get(lq_gw_req_t *r, const char *id)
{
    if (s_is_result_file(id)) {
        char broker[LQ_MAX_ID + 1];
        json_t *obj = lq_batches_result_file(r, id, broker);
        return obj ? lq_gw_reply_json(r, 200, obj) : lq_gw_reply_not_found(r, "File", id);
    }
    json_t *rec = lq_store_load(r->gw->store, r->owner, "files", id);
    if (!rec)
        return lq_gw_reply_not_found(r, "File", id);
    json_t *obj = s_file_object(rec);
    json_decref(rec);
    return lq_gw_reply_json(r, 200, obj);
}

int lq_files_content(lq_gw_req_t *r, const char *id)
{
    if (s_is_result_file(id)) {
        char broker[LQ_MAX_ID + 1];
        json_t *obj = lq_batches_result_file(r, id, broker);
        if (!obj)
            return lq_gw_reply_not_found(r, "File", id);
        json_decref(obj);
        return lq_content_reply(r, broker, id[5] == 'e');
    }
    json_t *rec = lq_store_load(r->gw->store, r->owner, "files", id);
    if (!rec)
        return lq_gw_reply_not_found(r, "File", id);
    json_decref(rec);
    char *path = lq_store_path(r->gw->store, r->owner, "files", id, ".jsonl");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return lq_gw_reply_not_found(r, "File", id);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return lq_gw_reply_octets(r, resp);
}

int lq_files_delete(lq_gw_req_t *r, const char *id)
{
    if (s_is_result_file(id))
        return lq_gw_reply_error(r, 400, "invalid_request_error", NULL, "file_id",
                                 "Output and error files belong to their batch and are not "
                                 "deleted on their own");
    if (lq_store_remove(r->gw->store, r->owner, "files", id, ".jsonl") < 0)
        return lq_gw_reply_not_found(r, "File", id);
    return lq_gw_reply_json(r, 200,
                            json_pack("{s:s,s:s,s:b}", "id", id, "object", "file", "deleted", 1));
}
