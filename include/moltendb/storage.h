/*
 * moltendb SDK: the "storage" service, the one seam between the store and
 * the disk. Exactly one loaded module provides it (storage-wal,
 * storage-memory, or your own).
 *
 * The core calls open() once after every module's init() and before any
 * start(); append() from mdb_write_commit() under the commit lock, in
 * commit order (after order_begin() when the log is shared); flush() and
 * close() at shutdown after every module's stop(). Modules may call
 * stats() from any thread.
 */
#ifndef MOLTENDB_STORAGE_H
#define MOLTENDB_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_STORAGE_SERVICE "storage"

typedef struct mdb_storage_stats {
    const char *mode; /* "async", "sync", "in-memory" (static string) */
    uint64_t bytes;   /* bytes of log (and snapshot) on disk */
    uint64_t records; /* records appended since open */
    bool read_only;   /* a write or sync failed: writes are refused (503) */
} mdb_storage_stats;

/* Called exactly once per ticket, with 0 or a negative errno. */
typedef void (*mdb_durable_fn)(void *arg, int status);

/* Version 2 (1 ended at close). Grow only by appending fields; callers
 * check `size`. */
typedef struct mdb_storage_service {
    size_t size; /* sizeof(mdb_storage_service) of the provider */
    /* Open files and replay snapshot and log through mdb_store_apply().
     * Failure stops startup; why_out names the file and the problem. */
    int (*open)(void *self, mdb_store *store, const char **why_out);
    /* Persist one batch, all or nothing at replay. Must not wait for the
     * disk in an asynchronous mode. *ticket_out = 0 when the batch needs no
     * waiting, else a number to pass to when_durable(). -EROFS once the
     * storage has failed: the commit is refused with 503. */
    int (*append)(void *self, const mdb_record *recs, size_t n, uint64_t *ticket_out,
                  const char **why_out);
    /* Arrange done(arg, status) once the ticket is on disk: maybe at once
     * on the calling thread, maybe later on a storage thread. May be NULL
     * when tickets are always 0. */
    int (*when_durable)(void *self, uint64_t ticket, mdb_durable_fn done, void *arg);
    /* Everything appended so far reaches the disk before this returns. */
    int (*flush)(void *self);
    /* Compact into a snapshot; path_out gets its absolute path. Only the
     * core calls it (mdb_snapshot_take(), one at a time); return once the
     * snapshot is durable (file and folder synced), and do not run the
     * snapshot hooks: the core runs them. A provider that keeps nothing on
     * disk returns -ENOTSUP (an empty path_out with 0 means the same). */
    int (*snapshot)(void *self, mdb_store *store, char *path_out, size_t path_cap,
                    const char **why_out);
    void (*stats)(void *self, mdb_storage_stats *out);
    /* Flush and release everything; no call follows. */
    void (*close)(void *self);

    /* ---- version 2: shared logs (storage-pg). NULL in a node-local storage.
     * Several nodes append to one log; each must resolve a batch (_v guards,
     * _seq, TTL, maxSize) against every batch ordered before it by any node.
     * order_begin() runs under the commit lock before the batch is resolved:
     * it takes the batch's place in the global order, holds it exclusively,
     * and applies every batch other nodes ordered before it through
     * mdb_store_apply_remote(). The core then calls append() exactly once,
     * which commits the place or gives it up whatever it returns, or, when
     * the batch is refused or logs nothing, order_abort(). An error from
     * order_begin() refuses the write: -EROFS is answered 503 with why_out. */
    int (*order_begin)(void *self, mdb_store *store, const char **why_out);
    void (*order_abort)(void *self);
} mdb_storage_service;

#ifdef __cplusplus
}
#endif
#endif
