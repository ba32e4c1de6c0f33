/*
 * include/eddy/log.h - leveled logging to stderr.
 *
 * The level comes from EDDY_LOG (error, warn, info, debug, trace) or from
 * eddy_log_set_level (the CLI's --log-level). Safe from any thread; one line
 * is written with one write(2) so lines of threads do not interleave.
 */
#ifndef EDDY_LOG_H
#define EDDY_LOG_H

typedef enum eddy_log_level {
    EDDY_LOG_ERROR = 0,
    EDDY_LOG_WARN,
    EDDY_LOG_INFO,
    EDDY_LOG_DEBUG,
    EDDY_LOG_TRACE
} eddy_log_level;

/* Parse "error" .. "trace"; returns 0 and sets *OUT, or EDDY_EINVAL. */
int eddy_log_parse_level(const char *s, eddy_log_level *out);

/* Set the level; reads EDDY_LOG when called with -1. */
void eddy_log_set_level(int level);

int eddy_log_enabled(eddy_log_level level);

void eddy_log(eddy_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define EDDY_LOG(lvl, mod, ...)                                                                    \
    do {                                                                                           \
        if (eddy_log_enabled(lvl))                                                                 \
            eddy_log(lvl, mod, __VA_ARGS__);                                                       \
    } while (0)
#define EDDY_ERROR(mod, ...) EDDY_LOG(EDDY_LOG_ERROR, mod, __VA_ARGS__)
#define EDDY_WARN(mod, ...) EDDY_LOG(EDDY_LOG_WARN, mod, __VA_ARGS__)
#define EDDY_INFO(mod, ...) EDDY_LOG(EDDY_LOG_INFO, mod, __VA_ARGS__)
#define EDDY_DEBUG(mod, ...) EDDY_LOG(EDDY_LOG_DEBUG, mod, __VA_ARGS__)

#endif
