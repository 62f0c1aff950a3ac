/* store: see store.h. */
#include "store.h"

#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct lq_store {
    char *dir;
    pthread_mutex_t mu;
};

lq_store_t *lq_store_new(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK) < 0) {
        snprintf(err, errlen, "%s is not a writable directory", dir);
        return NULL;
    }
    lq_store_t *s = xcalloc(1, sizeof *s);
    s->dir = xstrdup(dir);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void lq_store_destroy(lq_store_t **p)
{
    if (!p || !*p)
        return;
    pthread_mutex_destroy(&(*p)->mu);
    free((*p)->dir);
    free(*p);
    *p = NULL;
}

void lq_store_owner(const char *token, char *out)
{
    /* Two FNV-1a passes with different seeds: 64 bits that name a tree. */
    uint64_t h = 1469598103934665603ull, g = 0x9e3779b97f4a7c15ull;
    for (const unsigned char *c = (const unsigned char *)token; *c; c++) {
        h = (h ^ *c) * 1099511628211ull;
        g = (g ^ *c) * 1099511628211ull;
    }
    snprintf(out, LQ_STORE_OWNER_LEN + 1, "%08llx%08llx", (unsigned long long)(h >> 32),
             (unsigned long long)(g & 0xffffffffu));
}

void lq_store_new_id(const char *prefix, char *out)
{
    char rnd[17];
    lq_random_hex(rnd, sizeof rnd);
    snprintf(out, LQ_STORE_ID_MAX + 1, "%s%012llx%.8s", prefix,
             (unsigned long long)lq_wall_ms() & 0xffffffffffffull, rnd);
}

int lq_store_id_ok(const char *id)
{
    size_t n = 0;
    for (const char *c = id; *c; c++, n++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return 0;
    return n >= 1 && n <= LQ_STORE_ID_MAX;
}

char *lq_store_path(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    const char *ext)
{
    if (!lq_store_id_ok(id) || !lq_store_id_ok(owner))
        return NULL;
    char *d = xasprintf("%s/%s", s->dir, owner);
    mkdir(d, 0700);
    free(d);
    d = xasprintf("%s/%s/%s", s->dir, owner, kind);
    mkdir(d, 0700);
    free(d);
    return xasprintf("%s/%s/%s/%s%s", s->dir, owner, kind, id, ext ? ext : "");
}

/* Loads without taking the lock. */
static json_t *s_load(lq_store_t *s, const char *owner, const char *kind, const char *id)
{
    char *path = lq_store_path(s, owner, kind, id, ".json");
    if (!path)
        return NULL;
    json_t *j = json_load_file(path, 0, NULL);
    free(path);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Saves without taking the lock: temporary file, fsync, rename. */
static int s_save(lq_store_t *s, const char *owner, const char *kind, const char *id, json_t *rec)
{
    char *path = lq_store_path(s, owner, kind, id, ".json");
    if (!path)
        return -1;
    char *tmp = xasprintf("%s.tmp", path);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        char *text = json_dumps(rec, JSON_COMPACT);
        size_t len = text ? strlen(text) : 0;
        rc = text && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0 ? 0 : -1;
        free(text);
        close(fd);
        if (rc == 0 && rename(tmp, path) < 0)
            rc = -1;
        if (rc < 0)
            unlink(tmp);
    }
    free(tmp);
    free(path);
    return rc;
}

json_t *lq_store_load(lq_store_t *s, const char *owner, const char *kind, const char *id)
{
    pthread_mutex_lock(&s->mu);
    json_t *j = s_load(s, owner, kind, id);
    pthread_mutex_unlock(&s->mu);
    return j;
}

int lq_store_save(lq_store_t *s, const char *owner, const char *kind, const char *id, json_t *rec)
{
    pthread_mutex_lock(&s->mu);
    int rc = s_save(s, owner, kind, id, rec);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int lq_store_update(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    lq_store_edit_fn *fn, void *arg)
{
    pthread_mutex_lock(&s->mu);
    json_t *rec = s_load(s, owner, kind, id);
    int rc = rec && fn(rec, arg) == 0 ? s_save(s, owner, kind, id, rec) : -1;
    json_decref(rec);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int lq_store_remove(lq_store_t *s, const char *owner, const char *kind, const char *id,
                    const char *ext)
{
    char *rec = lq_store_path(s, owner, kind, id, ".json");
    char *data = ext ? lq_store_path(s, owner, kind, id, ext) : NULL;
    pthread_mutex_lock(&s->mu);
    int rc = rec && unlink(rec) == 0 ? 0 : -1;
    if (rc == 0 && data)
        unlink(data);
    pthread_mutex_unlock(&s->mu);
    free(rec);
    free(data);
    return rc;
}

/* qsort order: largest (newest) id first. */
static int s_cmp_desc(const void *a, const void *b)
{
    return strcmp(*(char *const *)b, *(char *const *)a);
}

/* Appends the record ids in DIR/owner/kind to *ids (and the owner to
 * *owners when not NULL). */
static void s_scan(lq_store_t *s, const char *owner, const char *kind, char ***ids,
                   char ***owners, size_t *n, size_t *cap)
{
    char *d = xasprintf("%s/%s/%s", s->dir, owner, kind);
    DIR *dir = opendir(d);
    free(d);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            *ids = xrealloc(*ids, *cap * sizeof **ids);
            if (owners)
                *owners = xrealloc(*owners, *cap * sizeof **owners);
        }
        (*ids)[*n] = xstrndup(e->d_name, len - 5);
        if (owners)
            (*owners)[*n] = xstrdup(owner);
        (*n)++;
    }
    closedir(dir);
}

size_t lq_store_list(lq_store_t *s, const char *owner, const char *kind, char ***ids,
                     char ***owners_out)
{
    size_t n = 0, cap = 0;
    *ids = NULL;
    if (owners_out)
        *owners_out = NULL;
    if (owner) {
        if (lq_store_id_ok(owner))
            s_scan(s, owner, kind, ids, NULL, &n, &cap);
        if (n > 1)
            qsort(*ids, n, sizeof **ids, s_cmp_desc);
        return n;
    }
    DIR *dir = opendir(s->dir);
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        if (strlen(e->d_name) == LQ_STORE_OWNER_LEN && lq_store_id_ok(e->d_name))
            s_scan(s, e->d_name, kind, ids, owners_out, &n, &cap);
    if (dir)
        closedir(dir);
    return n;
}

void lq_store_ids_free(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

/* Removes the files of DIR/owner/kind ending in ext; returns how many. */
static size_t s_sweep_dir(lq_store_t *s, const char *owner, const char *kind, const char *ext)
{
    char *d = xasprintf("%s/%s/%s", s->dir, owner, kind);
    DIR *dir = opendir(d);
    size_t n = 0, elen = strlen(ext);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len <= elen || strcmp(e->d_name + len - elen, ext) != 0)
            continue;
        char *path = xasprintf("%s/%s", d, e->d_name);
        n += unlink(path) == 0;
        free(path);
    }
    if (dir)
        closedir(dir);
    free(d);
    return n;
}

size_t lq_store_sweep(lq_store_t *s, const char *kind, const char *ext)
{
    DIR *dir = opendir(s->dir);
    size_t n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        if (strlen(e->d_name) == LQ_STORE_OWNER_LEN && lq_store_id_ok(e->d_name))
            n += s_sweep_dir(s, e->d_name, kind, ext);
    if (dir)
        closedir(dir);
    return n;
}
