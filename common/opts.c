/* opts: see opts.h. */
#include "opts.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static int s_set(const lq_opt_t *o, const char *value, const char *origin, char *err, size_t errlen)
{
    switch (o->type) {
    case LQ_OPT_STR:
        *(const char **)o->target = value;
        return 0;
    case LQ_OPT_INT: {
        long long v;
        if (lq_parse_ll(value, o->min, o->max, &v) < 0) {
            snprintf(err, errlen, "%s: '%s' is not an integer in [%lld, %lld]", origin, value,
                     o->min, o->max);
            return -1;
        }
        *(long long *)o->target = v;
        return 0;
    }
    case LQ_OPT_FLAG:
        *(int *)o->target = 1;
        return 0;
    case LQ_OPT_LIST: {
        lq_strlist_t *l = o->target;
        l->items = xrealloc(l->items, (l->len + 1) * sizeof *l->items);
        l->items[l->len++] = value;
        return 0;
    }
    }
    return -1;
}

int lq_opts_parse(const lq_opt_t *opts, int argc, char **argv, int first, lq_opts_result_t *res,
                  char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    for (const lq_opt_t *o = opts; o->name; o++) {
        if (!o->env)
            continue;
        const char *v = getenv(o->env);
        if (v && *v) {
            if (o->type == LQ_OPT_FLAG && strcmp(v, "0") == 0)
                continue;
            char origin[128];
            snprintf(origin, sizeof origin, "environment %s", o->env);
            if (s_set(o, v, origin, err, errlen) < 0)
                return -1;
        }
    }
    int only_positionals = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (only_positionals || a[0] != '-' || strcmp(a, "-") == 0) {
            if (res->npositionals == (int)(sizeof res->positionals / sizeof *res->positionals)) {
                snprintf(err, errlen, "too many arguments");
                return -1;
            }
            res->positionals[res->npositionals++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positionals = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            res->help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unknown option '%s' (try --help)", a);
            return -1;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const lq_opt_t *o = opts;
        for (; o->name; o++)
            if (strlen(o->name) == nlen && strncmp(o->name, name, nlen) == 0)
                break;
        if (!o->name) {
            snprintf(err, errlen, "unknown option '--%.*s' (try --help)", (int)nlen, name);
            return -1;
        }
        const char *value = NULL;
        if (o->type == LQ_OPT_FLAG) {
            if (eq) {
                snprintf(err, errlen, "option '--%s' takes no value", o->name);
                return -1;
            }
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, errlen, "option '--%s' needs a value", o->name);
            return -1;
        }
        char origin[128];
        snprintf(origin, sizeof origin, "--%s", o->name);
        if (s_set(o, value, origin, err, errlen) < 0)
            return -1;
    }
    return 0;
}

void lq_opts_print_help(FILE *out, const char *usage, const lq_opt_t *opts)
{
    fprintf(out, "%s\n", usage);
    if (opts && opts->name)
        fprintf(out, "\nOptions:\n");
    for (const lq_opt_t *o = opts; o && o->name; o++) {
        char left[96];
        if (o->type == LQ_OPT_FLAG)
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->metavar ? o->metavar : "VALUE");
        fprintf(out, "  %-28s %s", left, o->help ? o->help : "");
        if (o->env)
            fprintf(out, " [env %s]", o->env);
        fprintf(out, "\n");
    }
    fprintf(out, "  %-28s %s\n", "-h, --help", "show this help");
}

int lq_opts_main(const lq_opts_main_t *m, int argc, char **argv, lq_opts_result_t *res)
{
    char err[512];
    if (lq_opts_parse(m->opts, argc, argv, 1, res, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", m->prog, err);
        return 1;
    }
    if (res->help) {
        lq_opts_print_help(stdout, m->usage, m->opts);
        return 0;
    }
    if (res->npositionals > m->max_positionals) {
        fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", m->prog,
                res->positionals[m->max_positionals]);
        return 1;
    }
    if (m->log_level && *m->log_level) {
        lq_log_level_t level;
        if (lq_log_parse_level(*m->log_level, &level) < 0) {
            fprintf(stderr, "%s: bad --log-level '%s'\n", m->prog, *m->log_level);
            return 1;
        }
        lq_log_set_level(level);
    }
    return -1;
}

void lq_strlist_clear(lq_strlist_t *l)
{
    free(l->items);
    l->items = NULL;
    l->len = 0;
}
