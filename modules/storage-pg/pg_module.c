/* storage-pg: module descriptor and configuration. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include <moltendb/module.h>

#include "pg_log.h"

static const mdb_conf_key pg_conf[] = {
    {.name = "conninfo",
     .type = MDB_CONF_STRING,
     .env = "MOLTENDB_PG_CONNINFO",
     .flag = "--pg-conninfo",
     .flags = MDB_CONF_SECRET | MDB_CONF_REQUIRED,
     .help = "libpq connection string or URI of the shared database (may hold a password)"},
    {.name = "table-prefix",
     .type = MDB_CONF_STRING,
     .default_value = "moltendb_",
     .env = "MOLTENDB_PG_TABLE_PREFIX",
     .flag = "--pg-table-prefix",
     .help = "prefix of the tables (a-z, 0-9, _): one database can hold several moltendb "
             "databases"},
    {.name = "pool-size",
     .type = MDB_CONF_INT,
     .default_value = "2",
     .env = "MOLTENDB_PG_POOL_SIZE",
     .flag = "--pg-pool-size",
     .min = 1,
     .max = 64,
     .help = "connections for commits and checkpoints (the tail has one more of its own)"},
    {.name = "poll-interval-ms",
     .type = MDB_CONF_INT,
     .default_value = "250",
     .env = "MOLTENDB_PG_POLL_INTERVAL_MS",
     .flag = "--pg-poll-interval-ms",
     .min = 10,
     .max = 60000,
     .help = "how often the log is read when no notification came (missed NOTIFY, reconnects)"},
    {.name = "ordering",
     .type = MDB_CONF_ENUM,
     .choices = "counter-row|advisory-lock",
     .default_value = "counter-row",
     .env = "MOLTENDB_PG_ORDERING",
     .flag = "--pg-ordering",
     .help = "how PostgreSQL orders batches: counter-row (default) or advisory-lock; the same on "
             "every node (README.md, \"Ordering\")"},
    {.name = "keep-checkpoints",
     .type = MDB_CONF_INT,
     .default_value = "2",
     .env = "MOLTENDB_PG_KEEP_CHECKPOINTS",
     .flag = "--pg-keep-checkpoints",
     .min = 1,
     .max = 1000,
     .help = "checkpoints kept by POST /snapshot; log rows older than the oldest are pruned"},
    {.name = "prune-grace-s",
     .type = MDB_CONF_INT,
     .default_value = "60",
     .env = "MOLTENDB_PG_PRUNE_GRACE_S",
     .flag = "--pg-prune-grace-s",
     .min = 0,
     .max = 604800,
     .help = "log rows younger than this are not pruned, so that a node that is a little "
             "behind finds no gap"},
    {.name = "connect-timeout",
     .type = MDB_CONF_INT,
     .default_value = "5",
     .env = "MOLTENDB_PG_CONNECT_TIMEOUT",
     .flag = "--pg-connect-timeout",
     .min = 1,
     .max = 300,
     .help = "seconds to wait for a connection (unless conninfo sets connect_timeout)"},
    {.name = "encryption-key",
     .type = MDB_CONF_STRING,
     .env = "MOLTENDB_ENCRYPTION_KEY",
     .flag = "--encryption-key",
     .flags = MDB_CONF_SECRET,
     .help = "password the at-rest key is derived from (Argon2id); the same on every node"},
    {.name = "disable-encryption",
     .type = MDB_CONF_BOOL,
     .default_value = "false",
     .env = "MOLTENDB_DISABLE_ENCRYPTION",
     .flag = "--disable-encryption",
     .help = "store records in PostgreSQL in plaintext (the same on every node)"},
    MDB_CONF_END};

static const char *const pg_provides[] = {MDB_STORAGE_SERVICE, NULL};

static int pg_init(mdb_ctx *ctx)
{
    if (sodium_init() < 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "libsodium failed to initialise");
        return -EIO;
    }
    pgl_opts o = {
        .conninfo = mdb_conf_str(ctx, "conninfo"),
        .prefix = mdb_conf_str(ctx, "table-prefix"),
        .password = mdb_conf_str(ctx, "encryption-key"),
        .encrypt = !mdb_conf_bool(ctx, "disable-encryption"),
        .pool_size = (int)mdb_conf_int(ctx, "pool-size"),
        .poll_ms = (int)mdb_conf_int(ctx, "poll-interval-ms"),
        .keep = (int)mdb_conf_int(ctx, "keep-checkpoints"),
        .grace_s = (int)mdb_conf_int(ctx, "prune-grace-s"),
        .connect_tmo = (int)mdb_conf_int(ctx, "connect-timeout"),
    };
    if (!o.encrypt)
        mdb_log(ctx, MDB_LOG_WARN,
                "encryption at rest is disabled (--disable-encryption): PostgreSQL stores the "
                "records in plaintext");
    else if (!o.password || !*o.password)
        mdb_log(ctx, MDB_LOG_WARN,
                "no encryption key set (--encryption-key / MOLTENDB_ENCRYPTION_KEY): using the "
                "built-in default password, which protects nothing against someone who has "
                "this software");
    const char *ord = mdb_conf_str(ctx, "ordering");
    o.advisory = ord && strcasecmp(ord, "advisory-lock") == 0;
    const char *why = "out of memory";
    pgl *p = pgl_new(ctx, &o, &why);
    if (!p) {
        mdb_log(ctx, MDB_LOG_ERROR, "%s", why);
        return -EINVAL;
    }
    mdb_ctx_set_data(ctx, p);
    /* POST /snapshot is the core's: it calls the service's snapshot(). */
    return mdb_service_provide(ctx, MDB_STORAGE_SERVICE, &pgl_service, p);
}

/* The tail starts once every module's init() registered its hooks and the
 * store holds the replayed state. */
static int pg_start(mdb_ctx *ctx)
{
    int rc = pgl_start_tail(mdb_ctx_data(ctx));
    if (rc)
        mdb_log(ctx, MDB_LOG_ERROR, "cannot start the thread that tails the log: %s",
                strerror(-rc));
    return rc;
}

static void pg_stop(mdb_ctx *ctx)
{
    pgl_stop_tail(mdb_ctx_data(ctx));
}

static void pg_destroy(mdb_ctx *ctx)
{
    pgl_free(mdb_ctx_data(ctx));
    mdb_ctx_set_data(ctx, NULL);
}

MDB_MODULE_DEFINE(.name = "storage-pg", .version = "1.0.0",
                  .description = "shared log in PostgreSQL: several nodes serve one database, "
                                 "PostgreSQL orders every batch",
                  .config = pg_conf, .provides = pg_provides, .init = pg_init, .start = pg_start,
                  .stop = pg_stop, .destroy = pg_destroy);
