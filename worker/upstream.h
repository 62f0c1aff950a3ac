/* upstream: the named upstream APIs a worker can call, their API keys and
 * the request headers sent to each.
 *
 * The table owns every upstream's name, base URL, key and libcurl header
 * list; they live until lq_upstreams_destroy(). Keys come only from the
 * environment or from files named there (a mounted secret), never from a
 * flag, and are never logged or copied anywhere but the Authorization
 * header list:
 *   upstream NAME:  LLMQ_API_KEY_<NAME> or LLMQ_API_KEY_FILE_<NAME>
 *                   (NAME upper-cased, characters other than A-Z 0-9 -> '_')
 *   "default" also: LLMQ_API_KEY or LLMQ_API_KEY_FILE (the per-name
 *                   variables win). Setting both a key and a key file at
 *                   the same level is an error. No key: no Authorization.
 *
 * URL joining (lq_url_join): the job's url must start with '/'; it is
 * appended to the base URL with the base's trailing slashes removed. If the
 * base path ends in a version segment ("/v1", "/v2", "/v1beta", i.e. 'v', a
 * digit, then letters/digits) and the url starts with the same segment, the
 * segment is used once: base "https://api.openai.com/v1" + url
 * "/v1/chat/completions" -> "https://api.openai.com/v1/chat/completions"
 * (and so does base "https://api.openai.com"). A query string on the base
 * (e.g. "?api-version=2024-06-01") is kept and placed after the url. */
#ifndef LQ_WORKER_UPSTREAM_H
#define LQ_WORKER_UPSTREAM_H

#include <curl/curl.h>
#include <stddef.h>

#define LQ_UPSTREAM_NAME_MAX 64
/* The User-Agent every request carries unless a --header sets one. */
#define LQ_USER_AGENT "llmq-worker/1"

typedef struct {
    char *name;
    char *base_url;
    char *key;                  /* secret: NULL when none; never log */
    struct curl_slist *headers; /* built by lq_upstreams_finish() */
} lq_upstream_t;

typedef struct lq_upstreams lq_upstreams_t;

/* Creates an empty table. Can't fail. */
lq_upstreams_t *lq_upstreams_new(void);
/* Frees the table and wipes the keys. Safe on NULL; clears *u. */
void lq_upstreams_destroy(lq_upstreams_t **u);

/* Adds upstream name at base URL (http:// or https://). Returns 0, or -1
 * with a message in err (bad name, bad URL, duplicate name). */
int lq_upstreams_add(lq_upstreams_t *u, const char *name, const char *url, char *err,
                     size_t errlen);
/* Adds "NAME=URL" (the --upstream-named form). Returns 0 or -1 with err. */
int lq_upstreams_add_spec(lq_upstreams_t *u, const char *spec, char *err, size_t errlen);
/* Adds a static "Name: value" header sent to every upstream. Refuses
 * malformed lines and credentials (Authorization). Returns 0 or -1. */
int lq_upstreams_add_header(lq_upstreams_t *u, const char *line, char *err, size_t errlen);

/* Reads the keys from the environment and builds each header list
 * (Content-Type, Accept and User-Agent: LQ_USER_AGENT unless a --header
 * gives them, the --header lines, the key as a Bearer token).
 * Returns 0, or -1 with err (unreadable key file, key and file both set,
 * key with forbidden characters). err never contains a key. */
int lq_upstreams_finish(lq_upstreams_t *u, char *err, size_t errlen);

/* Number of upstreams and the i-th one, in the order added. */
size_t lq_upstreams_count(const lq_upstreams_t *u);
const lq_upstream_t *lq_upstreams_at(const lq_upstreams_t *u, size_t i);
/* The upstream called name (NULL or "" means "default"), or NULL. */
const lq_upstream_t *lq_upstreams_find(const lq_upstreams_t *u, const char *name);

/* Joins base and url by the rule above. Returns a new string the caller
 * frees, or NULL with a message in err when url is not a path. */
char *lq_url_join(const char *base, const char *url, char *err, size_t errlen);

/* Reads a key file: surrounding whitespace (the trailing newline) trimmed;
 * the key must be non-empty printable ASCII without spaces. Returns a new
 * string, or NULL with err (which never holds file contents). */
char *lq_read_key_file(const char *path, char *err, size_t errlen);

/* Writes "<prefix><NAME>" into out (NAME upper-cased, non-alphanumerics
 * as '_'). Can't fail (truncates to n). */
void lq_key_env_name(const char *prefix, const char *name, char *out, size_t n);

#endif
