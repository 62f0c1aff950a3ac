/* log: leveled logging to stderr with a timestamp and the program name.
 * Global state (level, program name) is set once at start-up by main(). */
#ifndef LQ_LOG_H
#define LQ_LOG_H

typedef enum { LQ_LOG_DEBUG = 0, LQ_LOG_INFO, LQ_LOG_WARN, LQ_LOG_ERROR, LQ_LOG_OFF } lq_log_level_t;

/* Sets the program name printed on each line (not copied; pass a literal). */
void lq_log_init(const char *program);
/* Sets the minimum level. Can't fail. */
void lq_log_set_level(lq_log_level_t level);
/* Parses "debug", "info", "warn", "error", "off". Returns 0 or -1. */
int lq_log_parse_level(const char *s, lq_log_level_t *out);
/* Writes one line if level is enabled. Can't fail. */
void lq_log(lq_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LQ_DEBUG(...) lq_log(LQ_LOG_DEBUG, __VA_ARGS__)
#define LQ_INFO(...) lq_log(LQ_LOG_INFO, __VA_ARGS__)
#define LQ_WARN(...) lq_log(LQ_LOG_WARN, __VA_ARGS__)
#define LQ_ERROR(...) lq_log(LQ_LOG_ERROR, __VA_ARGS__)

#endif
