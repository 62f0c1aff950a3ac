/* log: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *s_program = "llmq";
static lq_log_level_t s_level = LQ_LOG_INFO;

void lq_log_init(const char *program)
{
    s_program = program;
}

void lq_log_set_level(lq_log_level_t level)
{
    s_level = level;
}

int lq_log_parse_level(const char *s, lq_log_level_t *out)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (lq_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void lq_log(lq_log_level_t level, const char *fmt, ...)
{
    if (level < s_level || level >= LQ_LOG_OFF)
        return;
    static const char *tags[] = {"debug", "info", "warn", "error"};
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), s_program, (int)getpid(), tags[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    /* One write() per line so lines of concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
