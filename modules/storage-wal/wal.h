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
    bool keep_logs;        /* keep each compacted log in backup/ (point-in-time recovery) */
    unsigned keep_backups; /* after each snapshot keep the newest N backups (0 = all) */
    int flush_ms;
    /* Argon2id limits for a new database (0 = INTERACTIVE); existing files
     * keep the limits recorded in their header. */
    unsigned long long opslimit;
    size_t memlimit;
} wal_opts;

/* NULL on OOM. ctx (may be NULL in tests) is used for logging. */
wal *wal_new(mdb_ctx *ctx, const wal_opts *o);
/* Closes if still open, wipes the key, frees. */
void wal_free(wal *w);
/* Write a snapshot, compact the log, apply keep-backups. Runs no hooks:
 * the core does (mdb_snapshot_take()). Serialised by the wal's snap_mu. */
int wal_take_snapshot(wal *w, mdb_store *store, char *path_out, size_t path_cap,
                      const char **why_out);
/* Bytes in the live log, and the CLOCK_MONOTONIC ms of the last successful
 * snapshot (0 = none since open): the scheduler's inputs. Any thread. */
uint64_t wal_log_bytes(wal *w);
uint64_t wal_last_snapshot_ms(wal *w);
/* Register the storage metrics (from init()). */
int wal_metrics_register(wal *w, mdb_ctx *ctx);
/* The vtable; `self` is the wal. */
extern const mdb_storage_service wal_service;

#endif
