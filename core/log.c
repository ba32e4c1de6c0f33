/*
 * core/log.c - leveled logging to stderr.
 *
 * The level is one atomic int; each line is formatted into a stack buffer and
 * written with a single write(2), so concurrent threads never interleave
 * within a line. Never allocates.
 */
#include "eddy/log.h"
#include "eddy/error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = EDDY_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int eddy_log_parse_level(const char *s, eddy_log_level *out)
{
    for (int i = 0; i <= EDDY_LOG_TRACE; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (eddy_log_level)i;
            return 0;
        }
    }
    return EDDY_EINVAL;
}

void eddy_log_set_level(int level)
{
    if (level < 0) {
        eddy_log_level l;
        const char *env = getenv("EDDY_LOG");
        if (env && eddy_log_parse_level(env, &l) == 0)
            atomic_store(&g_level, (int)l);
        return;
    }
    atomic_store(&g_level, level);
}

int eddy_log_enabled(eddy_log_level level)
{
    return (int)level <= atomic_load(&g_level);
}

void eddy_log(eddy_log_level level, const char *module, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s [%s] ", tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], module ? module : "-");
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nothing sensible to do when stderr is gone */
    }
}
