/*
 * moltendb module SDK. A module is a shared object that exports exactly one
 * symbol, its descriptor, made with MDB_MODULE_DEFINE(). Everything else a
 * module needs is in the headers included below.
 *
 * Lifecycle (the core calls these in load order; stop and destroy in
 * reverse order):
 *   init(ctx)    register routes, gates, hooks and services, read config.
 *                Nothing else: no threads, no files. Return 0 or -errno;
 *                a failure stops startup (destroy() is still called).
 *   [storage open + replay]
 *   start(ctx)   open files, start threads. The store holds the replayed data.
 *   stop(ctx)    the HTTP server no longer runs handlers: stop threads.
 *   destroy(ctx) free everything. The ctx is gone afterwards.
 * Any callback may be NULL.
 *
 * Registration functions (routes, gates, hooks, services) may be called only
 * from init(); afterwards the registry is read-only and read without locks.
 *
 * ABI rules: a module is loaded when its abi_major equals the host's and its
 * abi_minor is not newer. Minor versions only add functions and append
 * fields to structs (each versioned struct starts with its size).
 *
 * Changelog:
 *   1.0  first version
 *   1.1  metrics.h: counters, gauges and histograms for modules
 *   1.2  storage service version 2 (order_begin, order_abort: shared logs),
 *        mdb_store_apply_remote(), mdb_store_locked()
 *        (mdb_metric_*, mdb_counter_*, mdb_gauge_*, mdb_histogram_*)
 *   1.2  the core owns POST /snapshot: mdb_snapshot_take() and
 *        mdb_hook_after_snapshot() (hooks get their ctx and what was
 *        written); mdb_fire_snapshot() does nothing any more; the member
 *        `requires` is spelled `needs` (C++20 keyword; C keeps the alias);
 *        repeatable config keys (MDB_CONF_LIST, mdb_conf_list_len/_at).
 *   1.3  mdb_hook_shutdown(); protocol upgrades: mdb_reply_upgrade(),
 *        mdb_upgrade_close() (http.h)
 *   1.4  mdb_req_defer(): long-running handlers move to the query pool
 *   1.5  mdb_req_json_bounded() (http.h)
 */
#ifndef MOLTENDB_MODULE_H
#define MOLTENDB_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "array.h"
#include "auth.h"
#include "config.h"
#include "doc.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "storage.h"
#include "store.h"
#include "uuid.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_ABI_MAGIC 0x4d444231u /* "MDB1" */
#define MDB_ABI_MAJOR 1
#define MDB_ABI_MINOR 5
#define MDB_MODULE_SYMBOL "mdb_module_descriptor"

typedef struct mdb_ctx mdb_ctx;

/* A command-line subcommand a module provides ("moltendb recover ...").
 * The core finds it among the configured modules and calls run() with
 * argv[0] = the subcommand name, without init()/start(): a command is
 * self-contained (it may make its own store with mdb_store_new()).
 * The return value is the process exit code. */
typedef struct mdb_command {
    const char *name;
    const char *usage; /* one line: "recover --log FILE --out FILE [...]" */
    int (*run)(int argc, char **argv);
} mdb_command;

typedef struct mdb_module {
    uint32_t magic;       /* MDB_ABI_MAGIC */
    uint16_t abi_major;   /* MDB_ABI_MAJOR the module was built with */
    uint16_t abi_minor;   /* MDB_ABI_MINOR the module was built with */
    uint32_t struct_size; /* sizeof(mdb_module) the module was built with */
    const char *name;     /* must equal the configured name, e.g. "storage-wal" */
    const char *version;  /* the module's own version, free text */
    const char *description;
    const mdb_conf_key *config;  /* key schema, MDB_CONF_END-terminated, or NULL */
    const char *const *provides; /* service names, NULL-terminated, or NULL */
#ifdef __cplusplus
    const char *const *needs; /* service names that must be provided */
#else
    union { /* `requires` is the 1.0 spelling, kept for C modules */
        const char *const *needs;
        const char *const *requires;
    };
#endif
    int (*init)(mdb_ctx *ctx);
    int (*start)(mdb_ctx *ctx);
    void (*stop)(mdb_ctx *ctx);
    void (*destroy)(mdb_ctx *ctx);
    const mdb_command *commands; /* {NULL}-terminated, or NULL */
} mdb_module;

#if defined(__GNUC__)
#define MDB_EXPORT __attribute__((visibility("default")))
#else
#define MDB_EXPORT
#endif

/* Define the module's descriptor:
 *   MDB_MODULE_DEFINE(.name = "hello", .version = "1.0", .init = hello_init);
 * In C++ (C++20 designated initializers) name the members in declaration
 * order; members left out are zero, as in C. */
#ifdef __cplusplus
#define MDB_DESCRIPTOR_DECL extern "C" MDB_EXPORT const mdb_module mdb_module_descriptor
/* g++ warns about members left out; the redeclaration after the pop takes
 * the caller's semicolon. */
#define MDB_DESCRIPTOR_QUIET_BEGIN                                                                 \
    _Pragma("GCC diagnostic push")                                                                 \
        _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")
#define MDB_DESCRIPTOR_QUIET_END                                                                   \
    ;                                                                                              \
    _Pragma("GCC diagnostic pop") MDB_DESCRIPTOR_DECL
#else
#define MDB_DESCRIPTOR_DECL MDB_EXPORT extern const mdb_module mdb_module_descriptor
#define MDB_DESCRIPTOR_QUIET_BEGIN
#define MDB_DESCRIPTOR_QUIET_END
#endif
#define MDB_MODULE_DEFINE(...)                                                                     \
    MDB_DESCRIPTOR_DECL;                                                                           \
    MDB_DESCRIPTOR_QUIET_BEGIN                                                                     \
    const mdb_module mdb_module_descriptor = {.magic = MDB_ABI_MAGIC,                              \
                                              .abi_major = MDB_ABI_MAJOR,                          \
                                              .abi_minor = MDB_ABI_MINOR,                          \
                                              .struct_size = (uint32_t)sizeof(mdb_module),         \
                                              __VA_ARGS__} MDB_DESCRIPTOR_QUIET_END

/* ---- context ------------------------------------------------------------- */
const char *mdb_ctx_name(const mdb_ctx *ctx);
/* Module-private state; the module owns it and frees it in destroy(). */
void mdb_ctx_set_data(mdb_ctx *ctx, void *data);
void *mdb_ctx_data(const mdb_ctx *ctx);
/* The store (owned by the core; valid from init() to destroy()). */
mdb_store *mdb_ctx_store(const mdb_ctx *ctx);

/* ---- services --------------------------------------------------------------
 * A service is a versioned vtable (first field: size_t size) plus an
 * instance pointer. The vtable and instance are owned by the provider and
 * must stay valid until its destroy(). One provider per name. */
int mdb_service_provide(mdb_ctx *ctx, const char *name, const void *vtable, void *self);
/* The vtable, or NULL when no module provides `name` or its vtable is
 * smaller than min_size (too old). *self_out receives the instance.
 * Callable from init() on (providers load first: see "needs"). */
const void *mdb_service_get(const mdb_ctx *ctx, const char *name, size_t min_size, void **self_out);

/* ---- hooks ------------------------------------------------------------------
 * Order: every hook list runs by ascending priority (a lower number runs
 * first); equal priorities run in registration order, and modules run
 * init() in load order (service providers first, then moltendb.conf order).
 *
 * Notify hooks cannot fail anything. Commit hooks run under the commit lock
 * in commit order, right after the batch is applied: they must be quick and
 * must not write to the store (hand work to a thread). */
typedef struct mdb_commit_event {
    const char *collection;
    const mdb_record *records; /* borrowed for the call */
    size_t nrecords;
} mdb_commit_event;
typedef void (*mdb_commit_hook_fn)(const mdb_commit_event *ev, void *ud);
int mdb_hook_commit(mdb_ctx *ctx, int priority, mdb_commit_hook_fn fn, void *ud);

/* Validate hooks are gate hooks for documents: called during commit (under
 * the commit lock) for every document a put or patch would store. Return 0
 * to accept, or -EINVAL with *why_out (static text) to refuse the batch. */
typedef int (*mdb_validate_fn)(const char *collection, const mdb_coll_meta *meta, const char *key,
                               mdb_val body, int is_patch, const char **why_out, void *ud);
int mdb_hook_validate(mdb_ctx *ctx, int priority, mdb_validate_fn fn, void *ud);

/* ---- snapshots (ABI 1.2) -----------------------------------------------------
 * The core takes every snapshot: POST /snapshot (admin) and modules that
 * schedule snapshots both go through mdb_snapshot_take(), which calls the
 * storage service's snapshot() once (snapshots are serialised), then runs
 * the after-snapshot hooks, then returns. So when POST /snapshot answers
 * 200 the snapshot is durable and every hook has returned.
 *
 * After-snapshot hooks run on the thread that took the snapshot, while
 * the next snapshot waits: return quickly and hand slow work (copying,
 * uploading, running a program) to a thread of your own, as backup-hooks
 * and docs/examples/snapshot-copy do. */
#define MDB_SNAPSHOT_PATH_MAX 4096
typedef struct mdb_snapshot_info {
    size_t size;                      /* sizeof(mdb_snapshot_info) of the core */
    char path[MDB_SNAPSHOT_PATH_MAX]; /* absolute path of the new snapshot file */
    uint64_t bytes;                   /* its size */
    uint64_t duration_ms;             /* time the storage took to write it */
    int64_t finished_ms;              /* Unix time (ms) it became durable */
    const char *trigger;              /* "api" (POST /snapshot) or the module that asked */
} mdb_snapshot_info;

/* ctx is the registering module's context; info is borrowed for the call. */
typedef void (*mdb_after_snapshot_fn)(mdb_ctx *ctx, const mdb_snapshot_info *info, void *ud);
int mdb_hook_after_snapshot(mdb_ctx *ctx, int priority, mdb_after_snapshot_fn fn, void *ud);

/* Take a snapshot now (from any thread of a started module; never from a
 * hook or a route that holds a store lock). Fills *info_out (may be NULL).
 * Returns 0; -ENOTSUP when the storage keeps nothing on disk
 * (storage-memory); -EBUSY after shutdown began; another -errno with
 * *why_out (thread-local text, valid until the thread's next call) when
 * the storage could not write it (the previous snapshot and the log are
 * then untouched). */
int mdb_snapshot_take(mdb_ctx *ctx, mdb_snapshot_info *info_out, const char **why_out);

/* ABI 1.0 spellings. A 1.0 snapshot hook still runs, in the same list and
 * order as the 1.2 hooks, with the path only. Storage
 * providers used to call mdb_fire_snapshot(); since 1.2 the core fires the
 * hooks and this function does nothing. */
typedef void (*mdb_snapshot_hook_fn)(const char *path, void *ud);
int mdb_hook_snapshot(mdb_ctx *ctx, int priority, mdb_snapshot_hook_fn fn, void *ud);
void mdb_fire_snapshot(const mdb_ctx *ctx, const char *path);

/* Shutdown begins (SIGTERM/SIGINT): called once on the main thread before
 * the HTTP server stops, while handlers may still run. For modules holding
 * long-lived connections (upgraded sockets) that must close them first; the
 * server waits for in-flight requests only after these return. Since 1.3. */
typedef void (*mdb_shutdown_hook_fn)(void *ud);
int mdb_hook_shutdown(mdb_ctx *ctx, int priority, mdb_shutdown_hook_fn fn, void *ud);

#ifdef __cplusplus
}
#endif
#endif
