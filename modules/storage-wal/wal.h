/* storage-wal: the storage service instance (shared with the unit tests). */
#ifndef WAL_H
#define WAL_H

#include <stdbool.h>
#include <stddef.h>

#include <moltendb/module.h>

typedef struct wal wal;

typedef struct wal_opts {
    const char *db_path;  /* the log; other files are named after it */
    const char *password; /* NULL = built-in default */
    bool encrypt;
    bool sync_mode;
    bool skip_corrupt;
    bool keep_logs; /* keep each compacted log in backup/ (point-in-time recovery) */
    int flush_ms;
    /* Argon2id limits for a new database (0 = INTERACTIVE); existing files
     * keep the limits recorded in their header. */
    unsigned long long opslimit;
    size_t memlimit;
} wal_opts;

/* NULL on OOM. ctx may be NULL (tests): then no hooks fire. */
wal *wal_new(mdb_ctx *ctx, const wal_opts *o);
/* Closes if still open, wipes the key, frees. */
void wal_free(wal *w);
/* A snapshot without firing the snapshot hooks (the caller fires them). */
int wal_take_snapshot(wal *w, mdb_store *store, char *path_out, size_t path_cap,
                      const char **why_out);
/* The vtable; `self` is the wal. Its snapshot() fires the hooks. */
extern const mdb_storage_service wal_service;

#endif
