/*
 * moltendb SDK: logging.
 *
 * Thread safety: every function here may be called from any thread at any
 * time after the module's init() has been entered, including from threads
 * the module started itself. Lines are written whole (one write per line).
 *
 * Secrets: never pass a secret (password, key, token) to these functions.
 * The core cannot tell a secret from a plain string once it is formatted.
 */
#ifndef MOLTENDB_LOG_H
#define MOLTENDB_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_ctx mdb_ctx;

typedef enum mdb_log_level {
    MDB_LOG_ERROR = 0,
    MDB_LOG_WARN = 1,
    MDB_LOG_INFO = 2,
    MDB_LOG_DEBUG = 3
} mdb_log_level;

/*
 * Log one line. The core prefixes a timestamp, the level and, when ctx is
 * a module's context, "[<module name>]". ctx may be NULL (core messages).
 * Lines above the configured level (--debug enables DEBUG) are dropped.
 */
void mdb_log(const mdb_ctx *ctx, mdb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mdb_logv(const mdb_ctx *ctx, mdb_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* True when a line of this level would be written (skip costly formatting). */
int mdb_log_enabled(mdb_log_level level);

#ifdef __cplusplus
}
#endif
#endif
