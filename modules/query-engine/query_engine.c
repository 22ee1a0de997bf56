/*
 * query-engine: the document routes of the MoltenDB API (/get, /set,
 * /update, /delete, /schema, /stats, /analytics, /collections/...) over the
 * core store, with every scope checked through the "auth" service, and the
 * JSON Schema validate hook.
 *
 * Built as one translation unit: the parts below are #included so that
 * every function stays static (only the descriptor is exported), and the
 * unit test includes the same parts to test them without HTTP.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <strings.h>
#include <time.h>

#include "qe_text.c"
#include "qe_where.c"
#include "qe_shape.c"
#include "qe_exec.c"
#include "qe_schema.c"
#include "qe_routes.c"

static int qe_validate_hook(const char *collection, const mdb_coll_meta *meta, const char *key,
                            mdb_val body, int is_patch, const char **why_out, void *ud)
{
    qe_mod *m = ud;
    (void)key;
    (void)is_patch;
    int rc = qs_cache_check(&m->schemas, collection, meta, body);
    if (rc == 1)
        return 0;
    if (why_out)
        *why_out = rc == 0 ? "Document does not conform to schema" : "Out of memory";
    return rc == 0 ? -EINVAL : rc;
}

static int qe_init(mdb_ctx *ctx)
{
    qe_mod *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, m); /* owned by the module, freed in qe_destroy */
    qs_cache_init(&m->schemas);
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
    qs_cache_free(&m->schemas);
    free(m);
    mdb_ctx_set_data(ctx, NULL);
}

static const char *const qe_requires[] = {MDB_AUTH_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "query-engine", .version = "1.0.0",
                  .description = "document routes: query, insert, update, delete, schema, stats, "
                                 "analytics",
                  .requires = qe_requires, .init = qe_init, .destroy = qe_destroy);
