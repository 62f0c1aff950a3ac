/* opts: command-line and environment configuration from one table.
 *
 * Each option has a long name (--name VALUE or --name=VALUE), an optional
 * environment variable, a type and a target the caller owns. The
 * environment is read first, then the flags, so flags win. Non-option
 * arguments are collected in order as positionals. Strings stored in
 * targets point into argv or the environment (not copied). */
#ifndef LQ_OPTS_H
#define LQ_OPTS_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    LQ_OPT_STR,  /* const char ** */
    LQ_OPT_INT,  /* long long *, checked against [min,max] */
    LQ_OPT_FLAG, /* int *, set to 1; takes no value */
    LQ_OPT_LIST, /* lq_strlist_t *, each occurrence appended */
} lq_opt_type_t;

typedef struct {
    const char **items;
    size_t len;
} lq_strlist_t;

typedef struct {
    const char *name;    /* without the leading "--" */
    const char *env;     /* NULL: no environment variable */
    lq_opt_type_t type;
    void *target;
    const char *metavar; /* shown in --help, e.g. "N" or "URL" */
    const char *help;
    long long min, max; /* for LQ_OPT_INT */
} lq_opt_t;

typedef struct {
    const char *positionals[64];
    int npositionals;
    int help; /* --help or -h was given */
} lq_opts_result_t;

/* Parses env then argv[first..argc) against opts (terminated by an entry
 * with name NULL). Returns 0, or -1 with a message in err. */
int lq_opts_parse(const lq_opt_t *opts, int argc, char **argv, int first, lq_opts_result_t *res,
                  char *err, size_t errlen);

/* Prints "usage" then one line per option with its env variable. */
void lq_opts_print_help(FILE *out, const char *usage, const lq_opt_t *opts);

/* The opening of every main: the program's name, its usage text, its
 * option table and how many positionals it takes. */
typedef struct {
    const char *prog;            /* prefix of error messages, e.g. "llmq-broker" */
    const char *usage;           /* shown above the options by --help */
    const lq_opt_t *opts;        /* terminated by an entry with name NULL */
    int max_positionals;         /* more is bad usage */
    const char *const *log_level; /* the table's --log-level target, NULL = none */
} lq_opts_main_t;

/* Parses env then argv[1..argc) into the table's targets and res, answers
 * --help on stdout, rejects surplus positionals and applies --log-level.
 * Returns -1 when the program should go on, else the exit status to end
 * with: 0 after --help, 1 after printing "PROG: what is wrong" on stderr. */
int lq_opts_main(const lq_opts_main_t *m, int argc, char **argv, lq_opts_result_t *res);

/* Frees the item array of a list (not the strings) and empties it. Safe on
 * empty. */
void lq_strlist_clear(lq_strlist_t *l);

#endif
