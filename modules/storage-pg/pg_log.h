/* storage-pg: the shared-log storage service (see README.md). */
#ifndef PG_LOG_H
#define PG_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include <moltendb/module.h>

typedef struct pgl pgl;

typedef struct pgl_opts {
    const char *conninfo; /* borrowed for pgl_new() only (copied, wiped on free) */
    const char *prefix;   /* table name prefix: [a-z0-9_], at most 40 chars */
    const char *password; /* encryption password; NULL = built-in default */
    bool encrypt;
    bool advisory;   /* order with an advisory lock rather than the counter row */
    int pool_size;   /* connections for commits and checkpoints */
    int poll_ms;     /* tail polling interval when no notification comes */
    int keep;        /* checkpoints kept */
    int grace_s;     /* log rows younger than this are never pruned */
    int connect_tmo; /* seconds, unless the conninfo says otherwise */
} pgl_opts;

/* NULL on OOM or a bad prefix (*why says which). */
pgl *pgl_new(mdb_ctx *ctx, const pgl_opts *o, const char **why);
/* Stops the tail, closes connections, wipes secrets, frees. */
void pgl_free(pgl *p);
/* Start / stop the thread that tails the log (module start / stop). */
int pgl_start_tail(pgl *p);
void pgl_stop_tail(pgl *p);
/* A checkpoint without firing the snapshot hooks; name_out gets its name
 * ("postgresql:<prefix>checkpoint/<id>"). */
int pgl_checkpoint(pgl *p, mdb_store *store, char *name_out, size_t cap, const char **why);

extern const mdb_storage_service pgl_service;

#endif
