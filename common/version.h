/* version: what `--version` prints on every llmq binary.
 *
 * The version string comes from `git describe` at build time (a release
 * tarball without .git falls back to the project version in CMakeLists.txt);
 * the library versions are the ones the binary was compiled against. Owns
 * nothing; all strings are static. */
#ifndef LQ_VERSION_H
#define LQ_VERSION_H

#include <stdio.h>

/* The llmq version ("0.1.0", "v0.1.0-12-gabc1234-dirty"). Static; can't fail. */
const char *lq_version(void);

/* Writes "PROG VERSION" and a line of library versions to f. Can't fail. */
void lq_version_print(FILE *f, const char *prog);

/* When argv holds "--version" (before any "--"), prints the version to
 * stdout and returns 1; returns 0 otherwise. The one-line hook of a main:
 *     if (lq_version_flag(argc, argv, "llmq")) return 0; */
int lq_version_flag(int argc, char **argv, const char *prog);

#endif
