/*
 * query-engine: the document routes of the MoltenDB API (/get, /set,
 * /update, /delete, /schema, /stats, /analytics, /collections/...) over the
 * core store, with every scope checked through the "auth" service, and the
 * JSON Schema validate hook.
 *
 * This file holds the module's life cycle and descriptor; the parts are
 * listed in the module README ("Source layout") and share qe.h. Only the
 * descriptor is exported (hidden visibility).
 */
#include <errno.h>
#include <stdlib.h>

#include "qe.h"

static int qe_init(mdb_ctx *ctx)
{
    qe_mod *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, m); /* owned by the module, freed in qe_destroy */
    qe_schema_cache_init(&m->schemas);
    m->ctx = ctx;
    m->store = mdb_ctx_store(ctx);
    m->auth = mdb_service_get(ctx, MDB_AUTH_SERVICE, sizeof(mdb_auth_service), &m->auth_self);
    if (!m->auth) {
        mdb_log(ctx, MDB_LOG_ERROR, "no usable '%s' service", MDB_AUTH_SERVICE);
        return -ENOENT;
    }
    m->max_keys = mdb_conf_int(ctx, "core.max-keys-per-request");
    if (m->max_keys <= 0)
        m->max_keys = 1000;
    static const struct {
        unsigned methods;
        const char *pattern;
        mdb_route_fn fn;
    } routes[] = {
        {MDB_METHOD_POST, "/get", qe_h_get},
        {MDB_METHOD_POST, "/set", qe_h_set},
        {MDB_METHOD_POST, "/update", qe_h_update},
        {MDB_METHOD_POST, "/delete", qe_h_delete},
        {MDB_METHOD_POST, "/schema", qe_h_schema},
        {MDB_METHOD_GET | MDB_METHOD_POST, "/stats", qe_h_stats},
        {MDB_METHOD_POST, "/analytics", qe_h_analytics},
        {MDB_METHOD_GET, "/collections/{collection}", qe_h_list},
        {MDB_METHOD_GET, "/collections/{collection}/docs/{key}", qe_h_doc},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = mdb_route_add(ctx, routes[i].methods, routes[i].pattern, 0, routes[i].fn, m);
        if (rc) {
            mdb_log(ctx, MDB_LOG_ERROR, "cannot register route %s", routes[i].pattern);
            return rc;
        }
    }
    return mdb_hook_validate(ctx, 0, qe_validate_hook, m);
}

static void qe_destroy(mdb_ctx *ctx)
{
    qe_mod *m = mdb_ctx_data(ctx);
    if (!m)
        return;
    qe_schema_cache_free(&m->schemas);
    free(m);
    mdb_ctx_set_data(ctx, NULL);
}

static const char *const qe_requires[] = {MDB_AUTH_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "query-engine", .version = "1.0.0",
                  .description = "document routes: query, insert, update, delete, schema, stats, "
                                 "analytics",
                  .requires = qe_requires, .init = qe_init, .destroy = qe_destroy);
