/*
 * Logging: one line per call, written with a single write(2) so lines from
 * many threads never interleave. Level and stream are set once at startup.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static _Atomic int log_level = MDB_LOG_INFO;
static int log_fd = 2;

void core_log_set_level(mdb_log_level level)
{
    atomic_store(&log_level, (int)level);
}

void core_log_set_stream(int fd)
{
    log_fd = fd;
}

int mdb_log_enabled(mdb_log_level level)
{
    return (int)level <= atomic_load(&log_level);
}

static const char *level_name(mdb_log_level l)
{
    switch (l) {
    case MDB_LOG_ERROR:
        return "ERROR";
    case MDB_LOG_WARN:
        return "WARN ";
    case MDB_LOG_INFO:
        return "INFO ";
    default:
        return "DEBUG";
    }
}

void mdb_logv(const mdb_ctx *ctx, mdb_log_level level, const char *fmt, va_list ap)
{
    if (!mdb_log_enabled(level))
        return;
    char line[4096];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_name(level));
    if (ctx && ctx->name)
        n += snprintf(line + n, sizeof line - (size_t)n, "[%s] ", ctx->name);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the line whole */
    while (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

void mdb_log(const mdb_ctx *ctx, mdb_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mdb_logv(ctx, level, fmt, ap);
    va_end(ap);
}
