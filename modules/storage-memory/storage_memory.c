/*
 * storage-memory: the storage service that keeps nothing on disk. Every
 * batch is accepted at once (nothing to wait for); a restart starts empty.
 * snapshot() answers -ENOTSUP: POST /snapshot (the core's) then says there
 * is nothing to snapshot, and no after-snapshot hook runs (README.md).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <moltendb/module.h>

typedef struct mem_state {
    _Atomic uint64_t records;
} mem_state;

static int mem_open(void *self, mdb_store *store, const char **why)
{
    (void)self;
    (void)store;
    (void)why;
    return 0;
}

static int mem_append(void *self, const mdb_record *recs, size_t n, uint64_t *ticket,
                      const char **why)
{
    (void)recs;
    (void)why;
    atomic_fetch_add(&((mem_state *)self)->records, n);
    *ticket = 0;
    return 0;
}

static int mem_flush(void *self)
{
    (void)self;
    return 0;
}

static int mem_snapshot(void *self, mdb_store *store, char *path_out, size_t cap, const char **why)
{
    (void)self;
    (void)store;
    if (cap)
        path_out[0] = 0;
    *why = "in-memory storage keeps nothing on disk";
    return -ENOTSUP;
}

static void mem_stats(void *self, mdb_storage_stats *out)
{
    out->mode = "in-memory";
    out->bytes = 0;
    out->records = atomic_load(&((mem_state *)self)->records);
    out->read_only = false;
}

static void mem_close(void *self)
{
    (void)self;
}

static const mdb_storage_service mem_service = {
    .size = sizeof(mdb_storage_service),
    .open = mem_open,
    .append = mem_append,
    .when_durable = NULL,
    .flush = mem_flush,
    .snapshot = mem_snapshot,
    .stats = mem_stats,
    .close = mem_close,
};

static int mem_init(mdb_ctx *ctx)
{
    mem_state *st = calloc(1, sizeof *st);
    if (!st)
        return -1;
    mdb_ctx_set_data(ctx, st);
    return mdb_service_provide(ctx, MDB_STORAGE_SERVICE, &mem_service, st);
}

static int mem_start(mdb_ctx *ctx)
{
    mdb_log(ctx, MDB_LOG_INFO, "in-memory storage: nothing is persisted");
    return 0;
}

static void mem_destroy(mdb_ctx *ctx)
{
    free(mdb_ctx_data(ctx));
}

static const char *const mem_provides[] = {MDB_STORAGE_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "storage-memory", .version = "1.0",
                  .description = "keeps all data in RAM only; nothing is written to disk",
                  .provides = mem_provides, .init = mem_init, .start = mem_start,
                  .destroy = mem_destroy);
