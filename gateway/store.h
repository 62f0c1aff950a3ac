/* store: the gateway's records and uploaded files under --data-dir.
 *
 * Layout: DIR/<owner>/<kind>/<id>.json holds one JSON record, and for
 * kind "files" DIR/<owner>/files/<id>.jsonl the uploaded bytes. owner is a
 * 16-hex-digit hash of the bearer token, so each token has its own tree and
 * a lookup in another token's tree cannot happen. Record writes go to a
 * temporary file renamed into place (atomic), under one mutex, so that the
 * submission threads and the loop thread never see half a record.
 *
 * Ids are checked ([A-Za-z0-9_-], 1..64 characters) before they are used
 * in a path. New ids are time-ordered: prefix + 12 hex digits of the wall
 * clock in ms + 8 random hex digits, so sorting by id sorts by creation. */
#ifndef LQ_STORE_H
#define LQ_STORE_H

#include <jansson.h>
#include <stddef.h>

#define LQ_STORE_OWNER_LEN 16
#define LQ_STORE_ID_MAX 64

typedef struct lq_store lq_store_t;

/* Opens (creating it if needed) the data directory. Returns NULL with err
 * set on failure. */
lq_store_t *lq_store_new(const char *dir, char *err, size_t errlen);
/* Frees the store and clears *s. Safe on NULL. */
void lq_store_destroy(lq_store_t **s);

/* The owner of a token (LQ_STORE_OWNER_LEN hex digits + NUL). Can't fail. */
void lq_store_owner(const char *token, char *out);

/* A fresh id: prefix + 20 hex digits (time-ordered). out has room for
 * LQ_STORE_ID_MAX + 1. Can't fail. */
void lq_store_new_id(const char *prefix, char *out);

/* 1 if id may be used in a path. */
int lq_store_id_ok(const char *id);

/* Path of DIR/owner/kind/id + ext (a new heap string, caller frees), after
 * creating DIR/owner/kind. NULL if the id is not acceptable. */
char *lq_store_path(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    const char *ext);

/* Reads a record. Returns a new reference, or NULL if there is none. */
json_t *lq_store_load(lq_store_t *s, const char *owner, const char *kind, const char *id);
/* Writes a record atomically. Returns 0 or -1. */
int lq_store_save(lq_store_t *s, const char *owner, const char *kind, const char *id,
                  json_t *rec);

/* Loads, changes (fn edits rec in place; returns 0 to save, -1 to leave
 * it) and saves a record as one step. Returns 0, or -1 (no record, fn
 * declined, or the write failed). */
typedef int lq_store_edit_fn(json_t *rec, void *arg);
int lq_store_update(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    lq_store_edit_fn *fn, void *arg);

/* Removes a record and the kind's data file (ext, may be NULL). Returns 0,
 * or -1 if there was no record. */
int lq_store_remove(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    const char *ext);

/* Ids of the owner's records of kind, newest first (a heap array of heap
 * strings; free with lq_store_ids_free). owner NULL: every owner's, and
 * owners_out (if not NULL) gets each one's owner. Returns the count. */
size_t lq_store_list(lq_store_t *s, const char *owner, const char *kind, char ***ids,
                     char ***owners_out);
void lq_store_ids_free(char **ids, size_t n);

/* Removes the files of kind ending in ext (e.g. uploads cut short by a
 * crash: ".part") in every owner's tree. Returns how many. Run it at
 * start-up only, before anything writes such files. */
size_t lq_store_sweep(lq_store_t *s, const char *kind, const char *ext);

#endif
