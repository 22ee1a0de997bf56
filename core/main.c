/*
 * moltendb: startup, the module life cycle and shutdown
 * (docs/architecture.md, "Start-up and shutdown").
 *
 *   configuration (defaults < file < env < flags) -> load modules (checked)
 *   -> init() each -> storage open (replay) -> start() each -> HTTP
 *   -> SIGTERM/SIGINT -> stop HTTP (finish in-flight) -> stop() in reverse
 *   -> storage flush + close -> destroy() in reverse -> exit 0
 */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static const char *const default_modules[] = {"storage-wal", "auth-jwt", "query-engine",
                                              "ttl-sweeper", "metrics",  NULL};

static void health(mdb_req *r, void *ud)
{
    (void)ud;
    static const char body[] = "{\"status\":\"ok\",\"message\":\"MoltenDB is running\"}";
    mdb_reply_copy(r, 200, "application/json", body, sizeof body - 1);
}

static int die(core_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cleanup(core_server *srv);

/* Log the reason first (it may point into module memory), then unwind. */
static int die(core_server *srv, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mdb_log(NULL, MDB_LOG_ERROR, "%s", msg);
    cleanup(srv);
    return 1;
}

static bool has_arg(int argc, char **argv, const char *a)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], a) == 0)
            return true;
    return false;
}

static const char *config_path(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0)
            return i + 1 < argc ? argv[i + 1] : "";
        if (strncmp(argv[i], "--config=", 9) == 0)
            return argv[i] + 9;
    }
    const char *e = getenv("MOLTENDB_CONFIG");
    if (e && *e)
        return e;
    if (access("moltendb.conf", R_OK) == 0)
        return "moltendb.conf";
    if (access(MDB_INSTALL_CONF, R_OK) == 0)
        return MDB_INSTALL_CONF;
    return NULL;
}

/* The module list: the config's, or the defaults; --in-memory swaps the
 * storage module (storage-*) for storage-memory. Caller frees. */
static char **module_list(core_server *srv, size_t *n)
{
    size_t cnt = srv->conf.nmodules;
    const char *const *src = (const char *const *)srv->conf.modules;
    if (!cnt) {
        src = default_modules;
        while (default_modules[cnt])
            cnt++;
    }
    bool mem = false;
    core_conf_bool_value(core_conf_get(&srv->conf, "core", "in-memory"), &mem);
    char **out = calloc(cnt + 1, sizeof *out);
    size_t k = 0;
    bool have_mem = false;
    for (size_t i = 0; out && i < cnt; i++) {
        const char *name = src[i];
        if (mem && strncmp(name, "storage-", 8) == 0) {
            if (have_mem)
                continue;
            name = "storage-memory";
            have_mem = true;
        }
        out[k++] = strdup(name);
    }
    *n = k;
    return out;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

/* The module's subcommands, or NULL when its descriptor predates them. */
static const mdb_command *module_commands(const mdb_module *m)
{
    if (m->struct_size < offsetof(mdb_module, commands) + sizeof(m->commands))
        return NULL;
    return m->commands;
}

static int run_subcommand(core_server *srv, int argc, char **argv)
{
    const char *name = argv[1];
    for (size_t i = 0; i < srv->nmods; i++) {
        for (const mdb_command *c = module_commands(srv->mods[i]->desc); c && c->name; c++)
            if (strcmp(c->name, name) == 0)
                return c->run(argc - 1, argv + 1);
    }
    fprintf(stderr, "moltendb: unknown subcommand '%s'", name);
    bool first = true;
    for (size_t i = 0; i < srv->nmods; i++) {
        for (const mdb_command *c = module_commands(srv->mods[i]->desc); c && c->name; c++) {
            fprintf(stderr, "%s%s", first ? " (available: " : ", ", c->name);
            first = false;
        }
    }
    fprintf(stderr, "%s\n", first ? "" : ")");
    return 2;
}

static void stop_modules(core_server *srv)
{
    for (size_t i = srv->nmods; i-- > 0;) {
        mdb_ctx *ctx = srv->mods[i];
        if (ctx->started && ctx->desc->stop)
            ctx->desc->stop(ctx);
        ctx->started = false;
    }
}

static void destroy_modules(core_server *srv)
{
    for (size_t i = srv->nmods; i-- > 0;) {
        mdb_ctx *ctx = srv->mods[i];
        if (ctx->init_called && ctx->desc->destroy)
            ctx->desc->destroy(ctx);
        ctx->init_called = false;
    }
}

static void cleanup(core_server *srv)
{
    stop_modules(srv);
    if (srv->storage && srv->storage->close)
        srv->storage->close(srv->storage_self);
    srv->storage = NULL;
    destroy_modules(srv);
    mdb_store_free(srv->store);
    srv->store = NULL;
    core_registry_free(&srv->reg);
    core_metrics_free();
    core_loader_unload(srv);
    free(srv->cors_origin);
    free(srv->module_path);
    srv->module_path = NULL;
    core_conf_free(&srv->conf);
    core_g = NULL;
}

int main(int argc, char **argv)
{
    static core_server server;
    core_server *srv = &server;
    core_g = srv;
    srv->started_ms = mdb_now_ms();
    char err[2048];

    /* Signals are taken by sigwait() in this thread; every thread started
     * later inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    core_notify_init();
    signal(SIGPIPE, SIG_IGN);

    if (has_arg(argc, argv, "--version") || has_arg(argc, argv, "-V")) {
        printf("moltendb %s (module ABI %d.%d)\n", MDB_VERSION, MDB_ABI_MAJOR, MDB_ABI_MINOR);
        return 0;
    }
    const char *sub = (argc > 1 && argv[1][0] != '-') ? argv[1] : NULL;
    if (sub && strcmp(sub, "serve") == 0) {
        argv[1] = argv[0];
        argv++;
        argc--;
        sub = NULL;
    }

    core_conf_init(&srv->conf);
    if (core_conf_declare(&srv->conf, "core", core_conf_schema, err, sizeof err))
        return die(srv, "%s", err);
    const char *cfg = config_path(argc, argv);
    if (cfg && core_conf_read_file(&srv->conf, cfg, err, sizeof err)) {
        return die(srv, "%s", err);
    }
    /* First pass: core keys only, to know which modules to load from where. */
    if (core_conf_apply_file(&srv->conf, "core", err, sizeof err) ||
        core_conf_apply_env(&srv->conf, err, sizeof err) ||
        core_conf_apply_argv(&srv->conf, argc, argv, false, err, sizeof err)) {
        return die(srv, "%s", err);
    }
    bool debug = false;
    core_conf_bool_value(core_conf_get(&srv->conf, "core", "debug"), &debug);
    core_log_set_level(debug ? MDB_LOG_DEBUG : MDB_LOG_INFO);

    size_t nnames = 0;
    char **names = module_list(srv, &nnames);
    srv->module_path = core_loader_search_path(core_conf_get(&srv->conf, "core", "module-dir"));
    if (!names || !srv->module_path) {
        free_list(names, nnames);
        return die(srv, "out of memory");
    }
    int rc = core_loader_load(srv, srv->module_path, names, nnames);
    free_list(names, nnames);
    if (rc) {
        cleanup(srv);
        return 1;
    }
    for (size_t i = 0; i < srv->nmods; i++) {
        if (core_conf_declare(&srv->conf, srv->mods[i]->name, srv->mods[i]->desc->config, err,
                              sizeof err)) {
            return die(srv, "module %s: %s", srv->mods[i]->path, err);
        }
    }
    if (sub) {
        rc = run_subcommand(srv, argc, argv);
        cleanup(srv);
        return rc;
    }
    if (has_arg(argc, argv, "--help") || has_arg(argc, argv, "-h")) {
        core_conf_usage(&srv->conf, stdout);
        cleanup(srv);
        return 0;
    }
    if (core_conf_apply_file(&srv->conf, NULL, err, sizeof err) ||
        core_conf_apply_env(&srv->conf, err, sizeof err) ||
        core_conf_apply_argv(&srv->conf, argc, argv, true, err, sizeof err) ||
        core_conf_validate(&srv->conf, err, sizeof err)) {
        return die(srv, "configuration error: %s", err);
    }
    if (has_arg(argc, argv, "--print-config")) {
        core_conf_print(&srv->conf, stdout);
        printf("# module search path (--module-dir first, then built-in): %s\n", srv->module_path);
        cleanup(srv);
        return 0;
    }
    if (has_arg(argc, argv, "--check-config")) {
        printf("configuration OK (%s; modules:", srv->conf.file ? srv->conf.file : "no file");
        for (size_t i = 0; i < srv->nmods; i++)
            printf(" %s", srv->mods[i]->name);
        printf(")\n");
        cleanup(srv);
        return 0;
    }
    core_conf_bool_value(core_conf_get(&srv->conf, "core", "debug"), &debug);
    core_log_set_level(debug ? MDB_LOG_DEBUG : MDB_LOG_INFO);

    bool dev = false, mem = false;
    core_conf_bool_value(core_conf_get(&srv->conf, "core", "dev-mode"), &dev);
    core_conf_bool_value(core_conf_get(&srv->conf, "core", "in-memory"), &mem);
    const char *cors = core_conf_get(&srv->conf, "core", "cors-origin");
    srv->cors_origin = strdup(cors ? cors : "*");
    srv->max_body = (size_t)strtoll(core_conf_get(&srv->conf, "core", "max-body-size"), NULL, 10);
    if (dev)
        mdb_log(NULL, MDB_LOG_WARN,
                "--dev-mode: serving plain HTTP without TLS. NEVER use this in production.");
    if (mem)
        mdb_log(NULL, MDB_LOG_WARN,
                "--in-memory: nothing is written to disk; all data is lost "
                "when the server exits.");
    if (strcmp(srv->cors_origin, "*") == 0 && !debug)
        mdb_log(NULL, MDB_LOG_WARN, "CORS allows any origin (*); set --cors-origin in production.");
    else if (strcmp(srv->cors_origin, "*") != 0) {
        bool any = false;
        for (const char *p = srv->cors_origin; *p; p++)
            any |= *p != ',' && *p != ' ';
        if (!any) {
            return die(srv, "configuration error: --cors-origin lists no origin");
        }
    }

    srv->store = mdb_store_new();
    if (!srv->store) {
        return die(srv, "out of memory");
    }
    srv->phase = CORE_PHASE_INIT;
    /* The core's routes: a public liveness probe and POST /snapshot. */
    mdb_route_add(NULL, MDB_METHOD_GET, "/system/health", MDB_ROUTE_PUBLIC, health, NULL);
    core_snapshot_register(); /* POST /snapshot: core/snapshot.c */
    for (size_t i = 0; i < srv->nmods; i++) {
        mdb_ctx *ctx = srv->mods[i];
        ctx->init_called = true;
        rc = ctx->desc->init ? ctx->desc->init(ctx) : 0;
        if (rc) {
            srv->phase = CORE_PHASE_STOP;
            return die(srv, "module '%s' failed to initialize (%s); not starting", ctx->name,
                       strerror(rc < 0 ? -rc : rc));
        }
    }
    for (size_t i = 0; i < srv->nmods; i++) {
        const mdb_module *m = srv->mods[i]->desc;
        for (const char *const *p = m->provides; p && *p; p++) {
            if (!mdb_service_get(NULL, *p, sizeof(size_t), NULL)) {
                srv->phase = CORE_PHASE_STOP;
                return die(srv, "module '%s' declares the service '%s' but did not provide it",
                           m->name, *p);
            }
        }
    }
    core_registry_sort(&srv->reg);
    if (core_metrics_http_init(&srv->reg))
        return die(srv, "out of memory");
    srv->phase = CORE_PHASE_RUN;

    void *st_self = NULL;
    const mdb_storage_service *st =
        mdb_service_get(NULL, MDB_STORAGE_SERVICE,
                        offsetof(mdb_storage_service, close) + sizeof(st->close), &st_self);
    if (!st) {
        return die(srv, "no usable storage service");
    }
    core_notify("STATUS=opening storage (replaying the log)");
    int64_t t0 = mdb_now_ms();
    const char *why = NULL;
    rc = st->open(st_self, srv->store, &why);
    if (rc) {
        return die(srv, "Failed to start MoltenDB: storage could not be opened: %s",
                   why ? why : strerror(-rc));
    }
    srv->storage = st;
    srv->storage_self = st_self;
    core_store_attach(srv->store, st, st_self, true);
    mdb_log(NULL, MDB_LOG_INFO, "store ready: %llu documents (%lld ms)",
            (unsigned long long)mdb_store_doc_count(srv->store), (long long)(mdb_now_ms() - t0));

    for (size_t i = 0; i < srv->nmods; i++) {
        mdb_ctx *ctx = srv->mods[i];
        rc = ctx->desc->start ? ctx->desc->start(ctx) : 0;
        if (rc) {
            return die(srv, "module '%s' failed to start (%s); not starting", ctx->name,
                       strerror(rc < 0 ? -rc : rc));
        }
        ctx->started = true;
    }

    core_http_opts ho = {0};
    ho.host = core_conf_get(&srv->conf, "core", "host");
    ho.port = (int)strtol(core_conf_get(&srv->conf, "core", "port"), NULL, 10);
    ho.dev_mode = dev;
    ho.cert_path = core_conf_get(&srv->conf, "core", "cert");
    ho.key_path = core_conf_get(&srv->conf, "core", "key");
    long threads = strtol(core_conf_get(&srv->conf, "core", "threads"), NULL, 10);
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? n : 2;
    }
    ho.threads = (unsigned)threads;
    ho.query_threads =
        (unsigned)strtoul(core_conf_get(&srv->conf, "core", "query-threads"), NULL, 10);
    ho.max_body = srv->max_body;
    ho.cors_origin = srv->cors_origin;
    ho.max_conn_per_ip =
        (unsigned)strtoul(core_conf_get(&srv->conf, "core", "max-connections-per-ip"), NULL, 10);
    ho.new_conn_timeout_s =
        (unsigned)strtoul(core_conf_get(&srv->conf, "core", "new-connection-timeout"), NULL, 10);
    ho.idle_timeout_s =
        (unsigned)strtoul(core_conf_get(&srv->conf, "core", "idle-timeout"), NULL, 10);
    /* The proxies the auth module trusts for client addresses are exempt
     * from the per-address connection limit too. */
    for (size_t i = 0; i < srv->nmods && !ho.conn_exempt; i++)
        if (core_conf_find(&srv->conf, srv->mods[i]->name, "trusted-proxies"))
            ho.conn_exempt = core_conf_get(&srv->conf, srv->mods[i]->name, "trusted-proxies");
    core_http *http = NULL;
    if (core_http_start(&http, &ho, err, sizeof err)) {
        return die(srv, "%s", err);
    }
    char mods[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < srv->nmods && o < sizeof mods; i++)
        o += (size_t)snprintf(mods + o, sizeof mods - o, "%s%s", i ? " " : "", srv->mods[i]->name);
    mdb_log(NULL, MDB_LOG_INFO, "MoltenDB %s listening on %s://%s:%d (modules: %s)", MDB_VERSION,
            dev ? "http" : "https", ho.host, ho.port, mods);

    core_notify("READY=1\nSTATUS=serving on %s://%s:%d", dev ? "http" : "https", ho.host, ho.port);

    int sig = 0;
    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP) {
        core_notify("RELOADING=1\nSTATUS=reloading");
        core_reload(srv, argc, argv, !dev);
        core_notify("READY=1\nSTATUS=serving on %s://%s:%d", dev ? "http" : "https", ho.host,
                    ho.port);
    }
    core_notify("STOPPING=1\nSTATUS=shutting down: finishing in-flight requests");
    mdb_log(NULL, MDB_LOG_INFO, "%s received: shutting down (finishing in-flight requests)",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    long tmo = strtol(core_conf_get(&srv->conf, "core", "shutdown-timeout"), NULL, 10);
    core_hooks_shutdown(); /* long-lived connections (WebSocket) close first */
    core_http_stop(http, (int)(tmo * 1000));
    srv->phase = CORE_PHASE_STOP;
    stop_modules(srv);
    if (st->flush && st->flush(st_self))
        mdb_log(NULL, MDB_LOG_ERROR, "storage flush at shutdown failed");
    cleanup(srv);
    core_notify_close();
    mdb_log(NULL, MDB_LOG_INFO, "stopped cleanly");
    return 0;
}
