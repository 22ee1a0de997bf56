/* storage-wal: module descriptor, configuration and the POST /snapshot route
 * (README.md, "Configuration" and "Snapshots"). */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <sodium.h>

#include <moltendb/module.h>

#include "wal.h"

int wal_recover_main(int argc, char **argv);

static const mdb_conf_key wal_conf[] = {
    {.name = "encryption-key",
     .type = MDB_CONF_STRING,
     .env = "MOLTENDB_ENCRYPTION_KEY",
     .flag = "--encryption-key",
     .flags = MDB_CONF_SECRET,
     .help = "password the at-rest key is derived from (Argon2id); unset = built-in default"},
    {.name = "disable-encryption",
     .type = MDB_CONF_BOOL,
     .default_value = "false",
     .env = "MOLTENDB_DISABLE_ENCRYPTION",
     .flag = "--disable-encryption",
     .help = "write the log and snapshots in plaintext"},
    {.name = "write-mode",
     .type = MDB_CONF_ENUM,
     .default_value = "async",
     .env = "MOLTENDB_WRITE_MODE",
     .flag = "--write-mode",
     .choices = "async|sync",
     .help = "async: flushed every flush-interval-ms; sync: acknowledged after fdatasync"},
    {.name = "skip-corrupt",
     .type = MDB_CONF_BOOL,
     .default_value = "false",
     .env = "MOLTENDB_SKIP_CORRUPT",
     .flag = "--skip-corrupt",
     .help = "at startup, skip corrupt log records (with a warning) instead of refusing to start"},
    {.name = "keep-logs",
     .type = MDB_CONF_BOOL,
     .default_value = "false",
     .env = "MOLTENDB_KEEP_LOGS",
     .flag = "--keep-logs",
     .help = "keep each compacted log in backup/ next to the previous snapshot, for point-in-time "
             "recovery before the latest snapshot"},
    {.name = "flush-interval-ms",
     .type = MDB_CONF_INT,
     .default_value = "50",
     .env = "MOLTENDB_FLUSH_INTERVAL_MS",
     .flag = "--flush-interval-ms",
     .min = 1,
     .max = 1000,
     .help = "async mode: longest time a write waits in memory before it is written"},
    MDB_CONF_END};

static const char *const wal_provides[] = {MDB_STORAGE_SERVICE, NULL};

static void snapshot_route(mdb_req *r, void *ud)
{
    mdb_ctx *ctx = ud;
    const mdb_principal *p = mdb_req_principal(r);
    if (!p || !p->admin) {
        mdb_reply_error(r, 403, "Forbidden: snapshot requires admin scope");
        return;
    }
    char path[PATH_MAX];
    const char *why = "unknown error";
    int rc = wal_take_snapshot(mdb_ctx_data(ctx), mdb_ctx_store(ctx), path, sizeof path, &why);
    if (rc) {
        mdb_reply_error(r, 500, "Failed to take snapshot: %s", why);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "statusCode", json_object_new_int(200));
    json_object_object_add(o, "status", json_object_new_string("ok"));
    json_object_object_add(o, "message", json_object_new_string("Snapshot taken successfully"));
    mdb_reply_json(r, 200, o);
    /* After the reply: hooks (backup-hooks) may take a while. */
    mdb_fire_snapshot(ctx, path);
}

static int wal_init(mdb_ctx *ctx)
{
    if (sodium_init() < 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "libsodium failed to initialise");
        return -EIO;
    }
    const char *mode = mdb_conf_str(ctx, "write-mode");
    wal_opts o = {
        .db_path = mdb_conf_str(ctx, "core.db-path"),
        .password = mdb_conf_str(ctx, "encryption-key"),
        .encrypt = !mdb_conf_bool(ctx, "disable-encryption"),
        .sync_mode = mode && strcasecmp(mode, "sync") == 0,
        .skip_corrupt = mdb_conf_bool(ctx, "skip-corrupt"),
        .keep_logs = mdb_conf_bool(ctx, "keep-logs"),
        .flush_ms = (int)mdb_conf_int(ctx, "flush-interval-ms"),
    };
    if (!o.encrypt)
        mdb_log(ctx, MDB_LOG_WARN,
                "encryption at rest is disabled (--disable-encryption): the log and snapshots "
                "are written in plaintext");
    else if (!o.password || !*o.password) {
        o.password = NULL;
        mdb_log(ctx, MDB_LOG_WARN,
                "no encryption key set (--encryption-key / MOLTENDB_ENCRYPTION_KEY): using the "
                "built-in default password, which protects nothing against someone who has "
                "this software");
    }
    wal *w = wal_new(ctx, &o);
    if (!w)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, w);
    int rc = mdb_service_provide(ctx, MDB_STORAGE_SERVICE, &wal_service, w);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_POST, "/snapshot", 0, snapshot_route, ctx);
    return rc;
}

static void wal_destroy(mdb_ctx *ctx)
{
    wal_free(mdb_ctx_data(ctx));
    mdb_ctx_set_data(ctx, NULL);
}

static const mdb_command wal_commands[] = {
    {"recover",
     "recover --log FILE --out FILE [--snapshot FILE] [--to-time MS] [--to-seq N] "
     "[--encryption-key K]",
     wal_recover_main},
    {NULL, NULL, NULL}};

MDB_MODULE_DEFINE(.name = "storage-wal", .version = "1.0.0",
                  .description = "append-only log storage: async/sync writes, encryption at rest, "
                                 "snapshots, point-in-time recovery",
                  .config = wal_conf, .provides = wal_provides, .init = wal_init,
                  .destroy = wal_destroy, .commands = wal_commands);
