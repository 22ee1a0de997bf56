/*
 * SIGHUP: apply what can change without a restart (docs/operations.md,
 * "Reload"): the log level and the TLS certificate and key. The core's
 * settings are read again from the same sources as at startup (file,
 * conf.d drop-ins, environment, flags) into a scratch configuration; the
 * running one, which modules hold pointers into, is not touched. Anything
 * that fails is logged with the reason and the current setting stays.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

int core_reload(core_server *srv, int argc, char **argv, bool tls)
{
    core_conf c;
    char err[2048] = "";
    core_conf_init(&c);
    int rc = core_conf_declare(&c, "core", core_conf_schema, err, sizeof err);
    if (!rc && srv->conf.file)
        rc = core_conf_read_file(&c, srv->conf.file, err, sizeof err);
    if (!rc)
        rc = core_conf_apply_file(&c, "core", err, sizeof err);
    if (!rc)
        rc = core_conf_apply_env(&c, err, sizeof err);
    if (!rc)
        rc = core_conf_apply_argv(&c, argc, argv, false, err, sizeof err);
    if (rc) {
        mdb_log(NULL, MDB_LOG_ERROR, "reload: configuration not read again (%s); nothing changed",
                err);
        core_conf_free(&c);
        return rc;
    }
    bool debug = false;
    core_conf_bool_value(core_conf_get(&c, "core", "debug"), &debug);
    core_log_set_level(debug ? MDB_LOG_DEBUG : MDB_LOG_INFO);
    mdb_log(NULL, MDB_LOG_INFO, "reload: log level %s", debug ? "debug" : "info");
    if (tls) {
        const char *cert = core_conf_get(&c, "core", "cert");
        const char *key = core_conf_get(&c, "core", "key");
        rc = core_tls_load(cert, key, err, sizeof err);
        if (rc)
            mdb_log(NULL, MDB_LOG_ERROR,
                    "reload: TLS certificate not replaced, still serving the previous one: %s",
                    err);
        else
            mdb_log(NULL, MDB_LOG_INFO,
                    "reload: TLS certificate %s and key %s in use for new connections", cert, key);
    }
    core_conf_free(&c);
    return rc;
}
