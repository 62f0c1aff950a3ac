/* jsonl: see jsonl.h. */
#define _GNU_SOURCE
#include "client/jsonl.h"

#include "client/idset.h"
#include "client/jobline.h"
#include "common/utf8.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_CP_EVERY 256              /* a checkpoint every this many lines */
#define S_MAX_MAX_LINE (1024u * 1024u * 1024u)

enum { S_LINE, S_EOF, S_LONG, S_IOERR }; /* s_peek() results */

struct lq_jsonl {
    char *path;
    lq_jsonl_opts_t o; /* model, system: our copies */
    int fd;            /* -1 when the open failed */
    struct stat st;    /* at open, to detect a change before a rewind */

    /* The read buffer: buf[start..end) is unconsumed data; buf[0] is at
     * file offset base; scan bytes after start are known to hold no LF. */
    char *buf;
    size_t cap, start, end, scan;
    long long base;
    int eof;

    long long lineno; /* lines consumed in this pass */
    long long line;   /* line of the last job or error returned */
    long long blank;  /* first line of a run of blank lines not yet judged */
    long long njobs, nerrs;
    int done;     /* EOF returned in this pass */
    int fatal;    /* sticky */
    int checking; /* this pass checks custom_id uniqueness */
    int complete; /* a checking pass reached EOF */

    lq_idset_t *ids;
    long long *cp; /* cp[k]: file offset of line k * S_CP_EVERY + 1 */
    size_t ncp, cpcap;

    lq_jobline_t jl; /* the record returned last */
    char *err;
};

/* Replaces r->err with "path:line:col: msg" (line, col 0: left out). */
static void s_set_err(lq_jsonl_t *r, long long line, long long col, const char *msg)
{
    free(r->err);
    if (line > 0 && col > 0)
        r->err = xasprintf("%s:%lld:%lld: %s", r->path, line, col, msg);
    else if (line > 0)
        r->err = xasprintf("%s:%lld: %s", r->path, line, msg);
    else
        r->err = xasprintf("%s: %s", r->path, msg);
}

/* Records a sticky fatal error about the file. Returns LQ_JSONL_FATAL. */
static int s_fatal(lq_jsonl_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fatal(lq_jsonl_t *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_set_err(r, 0, 0, msg);
    r->fatal = 1;
    return LQ_JSONL_FATAL;
}

/* Records an error on line `line`. Returns LQ_JSONL_BAD. */
static int s_bad(lq_jsonl_t *r, long long line, long long col, const char *msg)
{
    s_set_err(r, line, col, msg);
    r->line = line;
    r->nerrs++;
    return LQ_JSONL_BAD;
}

/* Starts a pass: empty buffer at offset 0, counters reset, and when
 * checking a fresh id set with the checkpoint of line 1. */
static void s_start_pass(lq_jsonl_t *r)
{
    r->start = r->end = r->scan = 0;
    r->base = 0;
    r->eof = r->done = 0;
    r->lineno = r->line = r->blank = r->njobs = r->nerrs = 0;
    lq_idset_destroy(&r->ids);
    r->ncp = 0;
    if (r->checking) {
        r->ids = lq_idset_new(r->o.id_hash_bits);
        if (!r->cp) {
            r->cpcap = 64;
            r->cp = xmalloc(r->cpcap * sizeof *r->cp);
        }
        r->cp[r->ncp++] = 0;
    }
}

lq_jsonl_t *lq_jsonl_new(const char *path, const lq_jsonl_opts_t *opts)
{
    lq_jsonl_t *r = xcalloc(1, sizeof *r);
    r->path = xstrdup(path ? path : "-");
    if (opts)
        r->o = *opts;
    if (r->o.max_line == 0)
        r->o.max_line = LQ_JSONL_DEFAULT_MAX_LINE;
    if (r->o.max_line > S_MAX_MAX_LINE)
        r->o.max_line = S_MAX_MAX_LINE;
    r->o.model = r->o.model ? xstrdup(r->o.model) : NULL;
    r->o.system = r->o.system ? xstrdup(r->o.system) : NULL;
    r->cap = LQ_JSONL_READ_BLOCK;
    r->buf = xmalloc(r->cap);
    r->checking = r->o.mode == LQ_JSONL_BATCH;
    r->fd = -1;
    s_start_pass(r);

    long long col;
    const char *why;
    if (r->o.mode == LQ_JSONL_PROMPTS &&
        (!r->o.model || !*r->o.model || lq_utf8_check(r->o.model, strlen(r->o.model), &col, &why)))
        s_fatal(r, "prompts mode needs a model name (--model) in valid UTF-8");
    else if (r->o.mode == LQ_JSONL_PROMPTS && r->o.system &&
             lq_utf8_check(r->o.system, strlen(r->o.system), &col, &why))
        s_fatal(r, "the system prompt (--system) is not valid UTF-8");
    else if ((r->fd = open(r->path, O_RDONLY | O_CLOEXEC)) < 0)
        s_fatal(r, "cannot open: %s", strerror(errno));
    else if (fstat(r->fd, &r->st) < 0)
        s_fatal(r, "cannot stat: %s", strerror(errno));
    else if (S_ISDIR(r->st.st_mode))
        s_fatal(r, "is a directory");
    return r;
}

/* Makes the next line visible at buf + start without consuming it.
 * Returns S_LINE with *len (bytes before the LF, a CR included) and *nl
 * (1 if an LF ends it), S_EOF, S_LONG (more than max_line + 1 bytes
 * without an LF: too long even if they end in a CR), or S_IOERR (errno). */
static int s_peek(lq_jsonl_t *r, size_t *len, int *nl)
{
    for (;;) {
        size_t have = r->end - r->start;
        if (r->scan < have) {
            char *q = memchr(r->buf + r->start + r->scan, '\n', have - r->scan);
            if (q) {
                *len = (size_t)(q - (r->buf + r->start));
                *nl = 1;
                return S_LINE;
            }
            r->scan = have;
        }
        if (have > r->o.max_line + 1)
            return S_LONG;
        if (r->eof) {
            *len = have;
            *nl = 0;
            return have ? S_LINE : S_EOF;
        }
        if (r->start > 0) { /* slide the partial line to the front */
            memmove(r->buf, r->buf + r->start, have);
            r->base += (long long)r->start;
            r->start = 0;
            r->end = have;
        }
        if (r->end == r->cap) { /* a long line: grow, up to what max_line needs */
            size_t want = r->o.max_line + 2;
            r->cap = r->cap * 2 < want ? r->cap * 2 : want;
            r->buf = xrealloc(r->buf, r->cap);
        }
        ssize_t k = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return S_IOERR;
        if (k == 0)
            r->eof = 1;
        r->end += (size_t)k;
    }
}

/* Counts a consumed line and, when checking, records a checkpoint when
 * the next line starts a new group of S_CP_EVERY. Can't fail. */
static void s_line_done(lq_jsonl_t *r)
{
    r->lineno++;
    if (r->checking && r->lineno % S_CP_EVERY == 0 && r->ncp == (size_t)(r->lineno / S_CP_EVERY)) {
        if (r->ncp == r->cpcap) {
            r->cpcap *= 2;
            r->cp = xrealloc(r->cp, r->cpcap * sizeof *r->cp);
        }
        r->cp[r->ncp++] = r->base + (long long)r->start;
    }
}

/* Consumes the line s_peek() returned. Can't fail. */
static void s_consume(lq_jsonl_t *r, size_t len, int nl)
{
    r->start += len + (size_t)nl;
    r->scan = 0;
    s_line_done(r);
}

/* Consumes a too-long line, reading and dropping it block by block.
 * Returns 0, or -1 on a read error (errno). */
static int s_skip_long(lq_jsonl_t *r)
{
    for (;;) {
        char *q = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (q) {
            r->start = (size_t)(q - r->buf) + 1;
            break;
        }
        r->base += (long long)r->end;
        r->start = r->end = 0;
        if (r->eof)
            break;
        ssize_t k = read(r->fd, r->buf, r->cap);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            r->eof = 1;
        r->end = (size_t)k;
    }
    r->scan = 0;
    s_line_done(r);
    return 0;
}

/* Whitespace only (JSON's: space, tab, CR)? Can't fail. */
static int s_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

/* Reads line `line` into a new heap buffer with pread(2), starting from
 * its checkpoint; does not touch the streaming state. Returns the text
 * (terminator removed, *len set) or NULL if it can't be read. */
static char *s_reread(lq_jsonl_t *r, long long line, size_t *len)
{
    size_t k = (size_t)((line - 1) / S_CP_EVERY);
    if (k >= r->ncp)
        return NULL;
    long long off = r->cp[k], cur = (long long)k * S_CP_EVERY + 1;
    size_t bsz = 64u * 1024u, n = 0, cap = 0;
    char *blk = xmalloc(bsz), *text = NULL;
    int ok = 0;
    for (;;) {
        ssize_t got = pread(r->fd, blk, bsz, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            ok = got == 0 && cur == line; /* the last line, without LF */
            break;
        }
        size_t i = 0;
        while (cur < line && i < (size_t)got) {
            char *q = memchr(blk + i, '\n', (size_t)got - i);
            i = q ? (size_t)(q - blk) + 1 : (size_t)got;
            cur += q != NULL;
        }
        if (cur == line && i < (size_t)got) {
            char *q = memchr(blk + i, '\n', (size_t)got - i);
            size_t take = q ? (size_t)(q - (blk + i)) : (size_t)got - i;
            if (n + take > r->o.max_line + 1)
                break; /* the file changed under us */
            if (n + take + 1 > cap) {
                cap = (n + take + 1) * 2;
                text = xrealloc(text, cap);
            }
            memcpy(text + n, blk + i, take);
            n += take;
            if (q) {
                ok = 1;
                break;
            }
        }
        off += got;
    }
    free(blk);
    if (!ok) {
        free(text);
        return NULL;
    }
    if (!text)
        text = xmalloc(1);
    if (n && text[n - 1] == '\r')
        n--;
    if (line == 1 && n >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        memmove(text, text + 3, n -= 3);
    *len = n;
    return text;
}

/* lq_idset_confirm_fn: is custom_id on `line` equal to id[0..len)?
 * Re-reads that line; if it can't (unseekable input, the file changed),
 * trusts the 64-bit hash and says yes. */
static int s_confirm(void *ctx, long long line, const char *id, size_t len)
{
    lq_jsonl_t *r = ctx;
    size_t n;
    char *text = s_reread(r, line, &n);
    if (!text)
        return 1;
    int same = 1;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    json_t *v = json_object_get(root, "custom_id");
    if (json_is_string(v))
        same = json_string_length(v) == len && memcmp(json_string_value(v), id, len) == 0;
    json_decref(root);
    free(text);
    return same;
}

/* Writes id into dst (size dsz) for a message: at most 64 bytes, control
 * characters and quotes escaped, "..." when cut. Can't fail. */
static void s_quote(char *dst, size_t dsz, const char *id)
{
    size_t o = 0, i = 0;
    for (; id[i] && i < 64 && o + 8 < dsz; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
            o += (size_t)snprintf(dst + o, dsz - o, "\\x%02x", c);
        else
            dst[o++] = (char)c;
    }
    if (id[i] && o + 4 < dsz)
        o += (size_t)snprintf(dst + o, dsz - o, "...");
    dst[o] = '\0';
}

/* The uniqueness check of the job just parsed. Returns LQ_JSONL_JOB if
 * the id is new, else an error result. */
static int s_check_unique(lq_jsonl_t *r, long long ln)
{
    const char *id = r->jl.spec.custom_id;
    long long first = lq_idset_add(r->ids, id, strlen(id), ln, s_confirm, r);
    if (first < 0)
        return s_fatal(r, "too many lines for the custom_id check (limit %u)", UINT32_MAX);
    if (first == 0)
        return LQ_JSONL_JOB;
    char q[300], msg[400];
    s_quote(q, sizeof q, id);
    snprintf(msg, sizeof msg, "duplicate custom_id \"%s\" (first seen on line %lld)", q, first);
    lq_jobline_clear(&r->jl);
    return s_bad(r, ln, 0, msg);
}

/* The pending run of blank lines is followed by a request: report its
 * first line. The request stays unconsumed for the next call. */
static int s_blank_error(lq_jsonl_t *r)
{
    long long ln = r->blank;
    r->blank = 0;
    return s_bad(r, ln, 0, "empty line (blank lines are only allowed at the end of the file)");
}

int lq_jsonl_next(lq_jsonl_t *r, lq_job_spec_t *out)
{
    lq_jobline_clear(&r->jl);
    if (r->fatal)
        return LQ_JSONL_FATAL;
    if (r->done)
        return LQ_JSONL_EOF;
    const int prompts = r->o.mode == LQ_JSONL_PROMPTS;
    char msg[128];
    for (;;) {
        size_t len = 0;
        int nl = 0;
        int st = s_peek(r, &len, &nl);
        long long ln = r->lineno + 1;
        if (st == S_IOERR)
            return s_fatal(r, "read error after line %lld: %s", r->lineno, strerror(errno));
        if (st == S_EOF) {
            r->done = 1;
            r->blank = 0; /* trailing blank lines are fine */
            if (r->njobs == 0 && r->nerrs == 0)
                return s_fatal(r, "no %s in the file (it is empty)", prompts ? "prompts" : "jobs");
            if (r->checking)
                r->complete = 1;
            return LQ_JSONL_EOF;
        }
        char *p = r->buf + r->start;
        size_t n = len;
        if (st == S_LINE && n && p[n - 1] == '\r')
            n--;
        if (st == S_LONG || n > r->o.max_line) {
            if (r->blank && !prompts)
                return s_blank_error(r);
            if (st == S_LINE)
                s_consume(r, len, nl);
            else if (s_skip_long(r) < 0)
                return s_fatal(r, "read error after line %lld: %s", r->lineno, strerror(errno));
            snprintf(msg, sizeof msg, "line too long (more than %zu bytes)", r->o.max_line);
            return s_bad(r, ln, 0, msg);
        }
        if (ln == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
            p += 3; /* a UTF-8 byte order mark */
            n -= 3;
        }
        if (s_blank(p, n)) {
            s_consume(r, len, nl);
            if (!prompts && !r->blank)
                r->blank = ln;
            continue;
        }
        if (r->blank && !prompts)
            return s_blank_error(r);
        /* Consuming leaves buf untouched until the next s_peek(), so p and
         * the spec pointing into it stay valid until the next call. */
        s_consume(r, len, nl);
        r->line = ln;
        int rc = prompts
                     ? lq_jobline_prompt(&r->jl, p, n, ln, r->o.model, r->o.system, r->o.max_tokens)
                     : lq_jobline_parse(&r->jl, p, n);
        if (rc < 0) {
            int res = s_bad(r, ln, r->jl.col, r->jl.err);
            lq_jobline_clear(&r->jl);
            return res;
        }
        if (r->checking && (rc = s_check_unique(r, ln)) != LQ_JSONL_JOB)
            return rc;
        r->njobs++;
        *out = r->jl.spec;
        return LQ_JSONL_JOB;
    }
}

int lq_jsonl_rewind(lq_jsonl_t *r)
{
    lq_jobline_clear(&r->jl);
    if (r->fatal)
        return -1;
    struct stat st;
    if (fstat(r->fd, &st) < 0 || st.st_size != r->st.st_size ||
        st.st_mtim.tv_sec != r->st.st_mtim.tv_sec || st.st_mtim.tv_nsec != r->st.st_mtim.tv_nsec) {
        s_fatal(r, "the file changed since it was opened");
        return -1;
    }
    if (lseek(r->fd, 0, SEEK_SET) < 0) {
        s_fatal(r, "cannot rewind: %s", strerror(errno));
        return -1;
    }
    if (r->complete) { /* validated: later passes only stream */
        r->checking = 0;
        free(r->cp);
        r->cp = NULL;
        r->cpcap = 0;
    }
    s_start_pass(r);
    free(r->err);
    r->err = NULL;
    return 0;
}

long long lq_jsonl_line(const lq_jsonl_t *r)
{
    return r->line;
}

long long lq_jsonl_count(const lq_jsonl_t *r)
{
    return r->njobs;
}

long long lq_jsonl_errors(const lq_jsonl_t *r)
{
    return r->nerrs;
}

long long lq_jsonl_offset(const lq_jsonl_t *r)
{
    return r->base + (long long)r->start;
}

long long lq_jsonl_size(const lq_jsonl_t *r)
{
    return r->fd >= 0 && S_ISREG(r->st.st_mode) ? (long long)r->st.st_size : 0;
}

size_t lq_jsonl_idset_bytes(const lq_jsonl_t *r)
{
    return r->ids ? lq_idset_bytes(r->ids) : 0;
}

size_t lq_jsonl_buffer_bytes(const lq_jsonl_t *r)
{
    return r->cap;
}

const char *lq_jsonl_error(const lq_jsonl_t *r)
{
    return r->err ? r->err : "";
}

void lq_jsonl_destroy(lq_jsonl_t **rp)
{
    if (!rp || !*rp)
        return;
    lq_jsonl_t *r = *rp;
    lq_jobline_clear(&r->jl);
    if (r->fd >= 0)
        close(r->fd);
    lq_idset_destroy(&r->ids);
    free(r->cp);
    free((char *)r->o.model);
    free((char *)r->o.system);
    free(r->buf);
    free(r->path);
    free(r->err);
    free(r);
    *rp = NULL;
}
