/*
 * moltendb SDK: typed configuration.
 *
 * A module declares its keys in a static, NULL-terminated array of
 * mdb_conf_key that its descriptor points to. The core reads that array
 * before any module code runs, so it can parse moltendb.conf, MOLTENDB_*
 * environment variables and command-line flags for every loaded module and
 * refuse bad values with file:line before anything starts.
 *
 * Precedence (later wins): compiled default < moltendb.conf < environment
 * variable < command-line flag.
 *
 * In moltendb.conf a module's keys live in its own section:
 *
 *     [storage-wal]
 *     write-mode = sync
 *
 * Keys before the first section header belong to the core ("core").
 */
#ifndef MOLTENDB_CONFIG_H
#define MOLTENDB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_ctx mdb_ctx;

typedef enum mdb_conf_type {
    MDB_CONF_STRING = 1, /* any text */
    MDB_CONF_INT = 2,    /* decimal integer, checked against min/max */
    MDB_CONF_BOOL = 3,   /* true/false, yes/no, on/off, 1/0 (any case) */
    MDB_CONF_ENUM = 4    /* one of the '|'-separated words in .choices */
} mdb_conf_type;

/* Flags of a key. */
#define MDB_CONF_SECRET 0x1u   /* redacted in --print-config and logs */
#define MDB_CONF_REQUIRED 0x2u /* startup fails when no source sets it */
#define MDB_CONF_PATH 0x4u     /* a filesystem path (documentation only) */
/* Repeatable (ABI 1.2): every "key = value" line (or flag) adds a value;
 * values from the environment replace the file's, flags replace both.
 * Read with mdb_conf_list_len() / mdb_conf_list_at(). */
#define MDB_CONF_LIST 0x8u

typedef struct mdb_conf_key {
    const char *name; /* key inside the section, e.g. "write-mode" */
    mdb_conf_type type;
    const char *default_value; /* textual default; NULL = unset */
    const char *env;           /* environment alias, e.g. "MOLTENDB_WRITE_MODE", or NULL */
    const char *flag;          /* command-line alias, e.g. "--write-mode", or NULL */
    unsigned flags;            /* MDB_CONF_* */
    int64_t min, max;          /* MDB_CONF_INT bounds (ignored when min == max == 0) */
    const char *choices;       /* MDB_CONF_ENUM: "async|sync" (matched case-insensitively) */
    const char *help;          /* one line, shown by --help and in the sample config */
} mdb_conf_key;

/* Terminates a schema array. */
#define MDB_CONF_END                                                                               \
    {                                                                                              \
        0                                                                                          \
    }

/*
 * Typed access. `key` is either a key of the calling module's own section
 * ("write-mode") or an absolute "section.key" ("core.db-path").
 * Asking for a key that no schema declares, or with the wrong type, is a
 * programming error: it is logged and the zero value is returned.
 *
 * Strings are owned by the core and live until the module's destroy()
 * returns; do not free them. Returns NULL when the key is unset.
 * Thread safety: read-only after startup; callable from any thread from
 * init() on.
 */
const char *mdb_conf_str(const mdb_ctx *ctx, const char *key);
int64_t mdb_conf_int(const mdb_ctx *ctx, const char *key);
bool mdb_conf_bool(const mdb_ctx *ctx, const char *key);
/* True when the value came from a file, environment or flag (not default). */
bool mdb_conf_is_set(const mdb_ctx *ctx, const char *key);
/* MDB_CONF_LIST keys (ABI 1.2): how many values, and the i-th one (NULL
 * past the end). *where_out (may be NULL) gets where it was set:
 * "file:PATH:LINE", "env:NAME", "flag:--x" or "default:", for messages.
 * Strings are owned by the core, like mdb_conf_str()'s. */
size_t mdb_conf_list_len(const mdb_ctx *ctx, const char *key);
const char *mdb_conf_list_at(const mdb_ctx *ctx, const char *key, size_t i, const char **where_out);

#ifdef __cplusplus
}
#endif
#endif
