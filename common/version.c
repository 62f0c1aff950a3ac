/* version: see version.h. Library versions come from the headers the build
 * used (this module links none of the libraries, so every binary can call
 * it). */
#include "version.h"

#include "llmq_version.h" /* generated: LQ_VERSION_STRING */

#include <curl/curlver.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <msgpack.h>
#include <string.h>
#include <zmq.h>

#define S_STR2(x) #x
#define S_STR(x) S_STR2(x)

const char *lq_version(void)
{
    return LQ_VERSION_STRING;
}

void lq_version_print(FILE *f, const char *prog)
{
    fprintf(f, "%s %s\n", prog, LQ_VERSION_STRING);
    fprintf(f,
            "built with libzmq %d.%d.%d, libcurl %s, msgpack-c %s, hiredis %d.%d.%d, "
            "jansson %s\n",
            ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR, ZMQ_VERSION_PATCH, LIBCURL_VERSION,
            MSGPACK_VERSION, HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH, JANSSON_VERSION);
}

int lq_version_flag(int argc, char **argv, const char *prog)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--version") == 0) {
            lq_version_print(stdout, prog);
            return 1;
        }
    }
    return 0;
}
