/*
 * metrics: serves what the server measures.
 *
 *   GET /system/metrics   upstream's JSON resource snapshot (admin)
 *   GET /metrics          every registered metric in the Prometheus text
 *                         format 0.0.4 (admin)
 *
 * Every module publishes its own metrics through include/moltendb/metrics.h;
 * this module adds the process (RSS, descriptors, threads, start time) and
 * store (documents, collections, committed records) metrics and renders
 * them all. See modules/metrics/README.md.
 *
 * The process/host readers (metrics_sys.c) and the plain-HTTP listener
 * (metrics_listen.c) are their own translation units, declared in mx.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <json-c/json.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moltendb/module.h>

#include <microhttpd.h>

#include "mx.h"

typedef struct mx_state {
    mdb_ctx *ctx;
    mdb_store *store;
    const mdb_storage_service *storage; /* owned by its provider */
    void *storage_self;
    mdb_metric *records;         /* committed records by operation */
    struct MHD_Daemon *listener; /* metrics.listen, or NULL */
} mx_state;

static const char *const mx_ops[] = {"insert", "delete", "drop", "schema", "meta", NULL};

/* ---- scrape-time gauges ------------------------------------------------------- */
static double mx_rss(void *ud)
{
    (void)ud;
    mx_proc p;
    return mx_proc_read(&p) ? 0 : (double)p.rss_bytes;
}

static double mx_threads(void *ud)
{
    (void)ud;
    mx_proc p;
    return mx_proc_read(&p) ? 0 : (double)p.threads;
}

static double mx_start_time(void *ud)
{
    (void)ud;
    mx_proc p;
    return mx_proc_read(&p) ? 0 : p.start_time;
}

static double mx_fds(void *ud)
{
    (void)ud;
    return (double)mx_open_fds();
}

static double mx_documents(void *ud)
{
    return (double)mdb_store_doc_count(((mx_state *)ud)->store);
}

static int mx_count_coll(mdb_read *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

static double mx_collections(void *ud)
{
    size_t n = 0;
    mdb_store_each_collection(((mx_state *)ud)->store, mx_count_coll, &n);
    return (double)n;
}

static void mx_on_commit(const mdb_commit_event *ev, void *ud)
{
    mx_state *st = ud;
    for (size_t i = 0; i < ev->nrecords; i++) {
        unsigned op = (unsigned)ev->records[i].op;
        if (op >= MDB_REC_INSERT && op <= MDB_REC_META)
            mdb_counter_add_at(st->records, op - MDB_REC_INSERT, 0, 1);
    }
}

/* ---- routes ------------------------------------------------------------------- */
/* Both routes are admin-only; the AUTH gate has already answered 401. */
static bool mx_admin(mdb_req *r)
{
    const mdb_principal *p = mdb_req_principal(r);
    if (p && p->admin)
        return true;
    mdb_reply_error(r, 403, "Admin access required");
    return false;
}

static void mx_add_disk(const char *mount, uint64_t total, uint64_t used, uint64_t avail, void *ud)
{
    json_object *d = json_object_new_object();
    json_object_object_add(d, "mount", json_object_new_string(mount));
    json_object_object_add(d, "total_bytes", json_object_new_int64((int64_t)total));
    json_object_object_add(d, "used_bytes", json_object_new_int64((int64_t)used));
    json_object_object_add(d, "available_bytes", json_object_new_int64((int64_t)avail));
    json_object_array_add(ud, d);
}

static void mx_route_json(mdb_req *r, void *ud)
{
    mx_state *st = ud;
    if (!mx_admin(r))
        return;
    mx_proc p;
    mx_proc_read(&p);
    mx_host_mem hm;
    mx_host_memory(&hm);
    mdb_storage_stats ss = {.mode = "in-memory"};
    if (st->storage && st->storage->stats)
        st->storage->stats(st->storage_self, &ss);
    double up = p.start_time > 0 ? (double)time(NULL) - p.start_time : 0;

    json_object *o = json_object_new_object();
    json_object *proc = json_object_new_object(), *host = json_object_new_object();
    json_object *mem = json_object_new_object(), *disks = json_object_new_array();
    json_object *db = json_object_new_object();
    if (!o || !proc || !host || !mem || !disks || !db) {
        json_object_put(o);
        json_object_put(proc);
        json_object_put(host);
        json_object_put(mem);
        json_object_put(disks);
        json_object_put(db);
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    json_object_object_add(o, "uptime_seconds", json_object_new_int64(up > 0 ? (int64_t)up : 0));
    json_object_object_add(proc, "memory_used_bytes", json_object_new_int64((int64_t)p.rss_bytes));
    json_object_object_add(o, "process", proc);
    json_object_object_add(mem, "total_bytes", json_object_new_int64((int64_t)hm.total));
    json_object_object_add(mem, "used_bytes", json_object_new_int64((int64_t)hm.used));
    json_object_object_add(mem, "free_bytes", json_object_new_int64((int64_t)hm.free));
    json_object_object_add(host, "memory", mem);
    mx_each_disk(mx_add_disk, disks);
    json_object_object_add(host, "disks", disks);
    json_object_object_add(o, "host", host);
    json_object_object_add(db, "hot_keys_count",
                           json_object_new_int64((int64_t)mdb_store_doc_count(st->store)));
    bool on_disk = ss.mode && strcmp(ss.mode, "in-memory") != 0;
    json_object_object_add(db, "wal_size_bytes",
                           json_object_new_int64(on_disk ? (int64_t)ss.bytes : 0));
    json_object_object_add(db, "storage_mode", json_object_new_string(ss.mode ? ss.mode : "async"));
    json_object_object_add(o, "database", db);
    mdb_reply_json(r, 200, o); /* takes o */
}

static void mx_route_prometheus(mdb_req *r, void *ud)
{
    (void)ud;
    if (!mx_admin(r))
        return;
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_metrics_render(&b);
    if (b.oom) {
        mdb_buf_free(&b);
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    size_t len;
    char *text = mdb_buf_take(&b, &len);
    mdb_reply_take(r, 200, MX_CONTENT_TYPE, text, len); /* takes text */
}

/* ---- life cycle --------------------------------------------------------------- */
static int mx_init(mdb_ctx *ctx)
{
    mx_state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, st); /* owned by the module, freed in mx_destroy */
    st->ctx = ctx;
    st->store = mdb_ctx_store(ctx);
    st->storage =
        mdb_service_get(ctx, MDB_STORAGE_SERVICE,
                        offsetof(mdb_storage_service, stats) + sizeof(void *), &st->storage_self);
    const mdb_metric_label op = {"op", mx_ops};
    int rc = mdb_route_add(ctx, MDB_METHOD_GET, "/system/metrics", 0, mx_route_json, st);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_GET, "/metrics", 0, mx_route_prometheus, st);
    if (!rc)
        rc = mdb_hook_commit(ctx, 100, mx_on_commit, st);
    if (!rc)
        rc = mdb_metric_counter(ctx, "store_records_committed_total",
                                "Records committed to the store, by operation", &op, 1,
                                &st->records);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "store_documents",
                                 "Documents held in memory over all collections (expired but "
                                 "not yet swept ones included)",
                                 mx_documents, st);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "store_collections", "Collections in the store",
                                 mx_collections, st);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "process_resident_memory_bytes",
                                 "Resident memory of the server process", mx_rss, NULL);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "process_open_fds", "Open file descriptors", mx_fds, NULL);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "process_threads", "Threads of the server process",
                                 mx_threads, NULL);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "process_start_time_seconds",
                                 "Start time of the process since the Unix epoch", mx_start_time,
                                 NULL);
    return rc;
}

static int mx_start(mdb_ctx *ctx)
{
    mx_state *st = mdb_ctx_data(ctx);
    const char *spec = mdb_conf_str(ctx, "listen");
    if (!spec || !*spec)
        return 0;
    st->listener = mx_listen_start(ctx, spec);
    return st->listener ? 0 : -EADDRNOTAVAIL;
}

static void mx_stop(mdb_ctx *ctx)
{
    mx_state *st = mdb_ctx_data(ctx);
    if (st && st->listener) {
        MHD_stop_daemon(st->listener);
        st->listener = NULL;
    }
}

static void mx_destroy(mdb_ctx *ctx)
{
    mx_stop(ctx); /* when start() ran but stop() was skipped (startup failed later) */
    free(mdb_ctx_data(ctx));
}

static const mdb_conf_key mx_config[] = {
    {.name = "listen",
     .type = MDB_CONF_STRING,
     .env = "MOLTENDB_METRICS_LISTEN",
     .flag = "--metrics-listen",
     .help = "also serve GET /metrics WITHOUT authentication on this plain-HTTP address "
             "(e.g. 127.0.0.1:9538); unset = off"},
    MDB_CONF_END,
};

static const char *const mx_requires[] = {MDB_STORAGE_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "metrics", .version = "1.0",
                  .description = "GET /system/metrics (JSON) and GET /metrics (Prometheus text)",
                  .config = mx_config, .requires = mx_requires, .init = mx_init, .start = mx_start,
                  .stop = mx_stop, .destroy = mx_destroy);
