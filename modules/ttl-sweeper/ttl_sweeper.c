/*
 * ttl-sweeper: the background half of collection TTL. The store applies
 * the TTL rules on every write and the query engine answers 404 for an
 * expired collection (lazy eviction); this module drops expired
 * collections in the background, exactly when they expire, so their
 * memory comes back without anyone reading them.
 *
 * This file holds the route, the life cycle and the descriptor; the heap
 * (ttl_heap.c) and the sweeper (ttl_engine.c) share ttl.h. Only the
 * descriptor is exported (hidden visibility).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ttl.h"

/* GET /system/ttl (admin): the sweeper's schedule and counters. */
static void ttl_route_stats(mdb_req *r, void *ud)
{
    ttl_sweeper *sw = ud;
    const mdb_principal *p = mdb_req_principal(r);
    if (!p || !p->admin) {
        mdb_reply_error(r, 403, "Forbidden: admin scope required");
        return;
    }
    ttl_stats st;
    ttl_get_stats(sw, &st);
    json_object *o = json_object_new_object();
    if (!o) {
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    json_object_object_add(o, "statusCode", json_object_new_int(200));
    json_object_object_add(o, "scheduled", json_object_new_int64((int64_t)st.pending));
    if (st.next_ms > 0) {
        char iso[32];
        mdb_iso8601(st.next_ms, iso);
        json_object_object_add(o, "nextExpiry", json_object_new_string(iso));
        json_object_object_add(o, "nextExpiryMs", json_object_new_int64(st.next_ms));
    } else {
        json_object_object_add(o, "nextExpiry", NULL);
    }
    json_object_object_add(o, "wakeups", json_object_new_int64((int64_t)st.wakeups));
    json_object_object_add(o, "sweeps", json_object_new_int64((int64_t)st.sweeps));
    json_object_object_add(o, "documentsDropped", json_object_new_int64((int64_t)st.dropped));
    json_object_object_add(o, "requeues", json_object_new_int64((int64_t)st.requeues));
    json_object_object_add(o, "failures", json_object_new_int64((int64_t)st.failures));
    mdb_reply_json(r, 200, o); /* takes o */
}

/* ---- metrics: read from the sweeper's own counters at scrape time ---- */
static double ttl_metric_scheduled(void *ud)
{
    ttl_stats st;
    ttl_get_stats(ud, &st);
    return (double)st.pending;
}

static double ttl_metric_sweeps(void *ud)
{
    ttl_stats st;
    ttl_get_stats(ud, &st);
    return (double)st.sweeps;
}

static double ttl_metric_dropped(void *ud)
{
    ttl_stats st;
    ttl_get_stats(ud, &st);
    return (double)st.dropped;
}

static double ttl_metric_failures(void *ud)
{
    ttl_stats st;
    ttl_get_stats(ud, &st);
    return (double)st.failures;
}

static int ttl_metrics_register(mdb_ctx *ctx, ttl_sweeper *sw)
{
    int rc = mdb_metric_gauge_fn(ctx, "ttl_collections_scheduled",
                                 "Collections waiting for their TTL to expire",
                                 ttl_metric_scheduled, sw);
    if (!rc)
        rc = mdb_metric_counter_fn(ctx, "ttl_collections_expired_total",
                                   "Collections dropped because their TTL expired",
                                   ttl_metric_sweeps, sw);
    if (!rc)
        rc = mdb_metric_counter_fn(ctx, "ttl_documents_dropped_total",
                                   "Documents dropped with expired collections", ttl_metric_dropped,
                                   sw);
    if (!rc)
        rc = mdb_metric_counter_fn(ctx, "ttl_expire_failures_total",
                                   "Expiry commits refused (storage read-only, out of memory)",
                                   ttl_metric_failures, sw);
    return rc;
}

static int ttl_mod_init(mdb_ctx *ctx)
{
    ttl_sweeper *sw = malloc(sizeof *sw);
    if (!sw)
        return -ENOMEM;
    int rc = ttl_init(sw, mdb_ctx_store(ctx), ctx);
    if (rc) {
        free(sw);
        return rc;
    }
    mdb_ctx_set_data(ctx, sw); /* owned by the module, freed in ttl_mod_destroy */
    sw->trim = mdb_conf_bool(ctx, "trim-memory");
    /* priority: after everything that reacts to data; order does not matter here */
    rc = mdb_hook_commit(ctx, 100, ttl_on_commit, sw);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_GET, "/system/ttl", 0, ttl_route_stats, sw);
    if (!rc)
        rc = ttl_metrics_register(ctx, sw);
    return rc;
}

static int ttl_mod_start(mdb_ctx *ctx)
{
    ttl_sweeper *sw = mdb_ctx_data(ctx);
    int rc = ttl_load(sw);
    if (rc) {
        mdb_log(ctx, MDB_LOG_ERROR, "could not read the collections' expiries: %s", strerror(-rc));
        return rc;
    }
    rc = ttl_start(sw);
    if (rc) {
        mdb_log(ctx, MDB_LOG_ERROR, "could not start the sweeper thread: %s", strerror(-rc));
        return rc;
    }
    ttl_stats st;
    ttl_get_stats(sw, &st);
    mdb_log(ctx, MDB_LOG_INFO, "TTL sweeper running: %zu collection(s) scheduled", st.pending);
    return 0;
}

static void ttl_mod_stop(mdb_ctx *ctx)
{
    ttl_sweeper *sw = mdb_ctx_data(ctx);
    if (sw)
        ttl_stop(sw);
}

static void ttl_mod_destroy(mdb_ctx *ctx)
{
    ttl_sweeper *sw = mdb_ctx_data(ctx);
    if (!sw)
        return;
    ttl_stop(sw); /* no-op unless start() succeeded and stop() was skipped */
    ttl_destroy(sw);
    free(sw);
}

static const mdb_conf_key ttl_config[] = {
    {"trim-memory", MDB_CONF_BOOL, "true", "MOLTENDB_TTL_TRIM_MEMORY", "--ttl-trim-memory", 0, 0, 0,
     NULL, "after sweeping a large collection, return freed memory to the OS (malloc_trim)"},
    MDB_CONF_END};

MDB_MODULE_DEFINE(.name = "ttl-sweeper", .version = "1.0",
                  .description = "drops TTL-expired collections in the background, exactly when "
                                 "they expire (one thread, min-heap, no polling)",
                  .config = ttl_config, .init = ttl_mod_init, .start = ttl_mod_start,
                  .stop = ttl_mod_stop, .destroy = ttl_mod_destroy);
