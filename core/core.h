/*
 * Internal interfaces shared between core files (not part of the SDK).
 * Functions here are prefixed core_<file>_.
 */
#ifndef MOLTENDB_CORE_H
#define MOLTENDB_CORE_H

#include <gnutls/abstract.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moltendb/module.h>

/* ---- log.c ---------------------------------------------------------------- */
void core_log_set_level(mdb_log_level level);
void core_log_set_stream(int fd);

/* ---- conf.c ---------------------------------------------------------------
 * One configuration: every declared key of the core and the loaded modules,
 * with its value and where the value came from. */
typedef struct core_conf_item {
    char *section;           /* "core" or a module name */
    const mdb_conf_key *key; /* schema entry (static, owned by core or module) */
    char *value;             /* current value (malloc) or NULL */
    char source[320];        /* "default", "file:path:line", "env:NAME", "flag:--x" */
    /* MDB_CONF_LIST keys: every value with its source (malloc'd, owned). */
    char **list, **list_src;
    size_t nlist;
} core_conf_item;

typedef struct core_conf_line {
    char *section, *key, *value;
    char *file;
    int line;
} core_conf_line;

typedef struct core_conf {
    core_conf_item *items;
    size_t nitems, capitems;
    core_conf_line *lines; /* raw lines of the config file, checked once schemas are known */
    size_t nlines, caplines;
    char **modules; /* "module = x" lines, in order */
    size_t nmodules;
    char *file; /* the config file read, or NULL */
} core_conf;

extern const mdb_conf_key core_conf_schema[];
void core_conf_init(core_conf *c);
void core_conf_free(core_conf *c);
/* Declare a section's keys with their defaults. */
int core_conf_declare(core_conf *c, const char *section, const mdb_conf_key *schema, char *err,
                      size_t errlen);
/* Read a config file, then the *.conf drop-ins of the conf.d folder beside
 * it in byte order of their names, into raw lines and the module list. */
int core_conf_read_file(core_conf *c, const char *path, char *err, size_t errlen);
/* Apply file lines (checking unknown sections/keys), then environment, then
 * argv flags. Unknown flags are errors only when strict. consumed[i] is set
 * for argv entries used. */
int core_conf_apply_file(core_conf *c, const char *only_section, char *err, size_t errlen);
int core_conf_apply_env(core_conf *c, char *err, size_t errlen);
int core_conf_apply_argv(core_conf *c, int argc, char **argv, bool strict, char *err,
                         size_t errlen);
/* Check types, bounds and required keys. */
int core_conf_validate(core_conf *c, char *err, size_t errlen);
core_conf_item *core_conf_find(core_conf *c, const char *section, const char *key);
const char *core_conf_get(core_conf *c, const char *section, const char *key);
bool core_conf_bool_value(const char *v, bool *out);
void core_conf_list_clear(core_conf_item *it);
/* 0 when v is a valid value of key k; else -EINVAL with the reason in why. */
int core_conf_check_value(const mdb_conf_key *k, const char *v, char *why, size_t whylen);
void core_conf_print(core_conf *c, FILE *out);
void core_conf_usage(core_conf *c, FILE *out);

/* ---- registry (registry.c) ------------------------------------------------- */
typedef struct core_route {
    unsigned methods;
    char *pattern;
    char **segs; /* split pattern; "{x}" kept as is */
    size_t nsegs;
    unsigned literal_count;
    unsigned flags;
    mdb_route_fn fn;
    void *ud;
    const mdb_ctx *owner;
} core_route;

typedef struct core_hook {
    int priority;
    size_t order;
    void *fn;
    void *ud;
    const mdb_ctx *owner;
    int phase; /* gates: mdb_gate_phase; snapshot hooks: CORE_SNAP_HOOK_* */
} core_hook;

typedef struct core_service {
    char *name;
    const void *vtable;
    void *self;
    const mdb_ctx *owner;
} core_service;

struct mdb_ctx {
    const mdb_module *desc;
    void *dl;
    char *name;
    char *path;
    void *data;
    size_t index;
    bool init_called, started;
};

typedef enum core_phase {
    CORE_PHASE_LOAD = 0,
    CORE_PHASE_INIT = 1,
    CORE_PHASE_RUN = 2,
    CORE_PHASE_STOP = 3
} core_phase;

typedef struct core_registry {
    core_route *routes;
    size_t nroutes;
    core_hook *gates, *commit_hooks, *validate_hooks, *snapshot_hooks, *shutdown_hooks;
    size_t ngates, ncommit, nvalidate, nsnapshot, nshutdown;
    core_service *services;
    size_t nservices;
    size_t hook_order;
} core_registry;

/* The one server instance (modules' SDK calls reach it through this). */
typedef struct core_server {
    core_conf conf;
    core_registry reg;
    core_phase phase;
    mdb_ctx **mods;
    size_t nmods;
    mdb_store *store;
    const mdb_storage_service *storage;
    void *storage_self;
    int64_t started_ms;
    /* cached core settings */
    size_t max_body;
    char *cors_origin; /* "*" or comma list */
    char *module_path; /* effective module search path (owned) */
} core_server;

extern core_server *core_g;

void core_registry_free(core_registry *reg);
/* Route lookup. Returns the route, or NULL with *allow_out = methods of
 * routes whose pattern matched (0 = no such path). Params are written to
 * names/values (borrowed pattern names, values pointing into path_buf,
 * which is modified). */
#define CORE_MAX_PARAMS 8
#define CORE_MAX_SEGS 32
const core_route *core_registry_match(const core_registry *reg, unsigned method, char *path_buf,
                                      const char **names, char **values, size_t *nparams,
                                      unsigned *allow_out);
void core_registry_sort(core_registry *reg);
/* True while modules may register (init()); else logs that `what` was
 * called too late. */
bool core_registry_registering(const mdb_ctx *ctx, const char *what);
/* Append a hook; the caller checked core_registry_registering(). */
int core_registry_add_hook(core_hook **arr, size_t *n, const mdb_ctx *ctx, int prio, void *fn,
                           void *ud, int phase);
int core_hooks_validate(const char *coll, const mdb_coll_meta *meta, const char *key, mdb_val body,
                        int is_patch, const char **why);
void core_hooks_commit(const mdb_commit_event *ev);
/* Shutdown begins: before the HTTP server stops (main thread). */
void core_hooks_shutdown(void);

/* ---- loader.c ---------------------------------------------------------------- */
/* Open, check and register the named modules. One log line per refusal. */
int core_loader_load(core_server *srv, const char *module_path, char **names, size_t n);
/* The module search path: `extra` (--module-dir / MOLTENDB_MODULE_DIR,
 * searched first; may be NULL) followed by the built-in path. Caller frees. */
char *core_loader_search_path(const char *extra);
void core_loader_unload(core_server *srv);

/* ---- snapshot.c ----------------------------------------------------------------
 * POST /snapshot and mdb_snapshot_take(): the one place snapshots are taken
 * and the after-snapshot hooks run. */
int core_snapshot_register(void);

/* ---- store.c (the rest of the store: store_private.h) ------------------------- */
/* Wire the store to the storage service and hooks (the server's store). */
void core_store_attach(mdb_store *s, const mdb_storage_service *storage, void *self,
                       bool with_hooks);

/* ---- metrics.c ----------------------------------------------------------------
 * kind: 1 counter, 2 gauge, 3 histogram. Registers without the init()-only
 * check (the core's own metrics; unit tests). */
int core_metrics_register(const mdb_ctx *ctx, int kind, const char *name, const char *help,
                          const double *bounds, size_t nbounds, const mdb_metric_label *labels,
                          size_t nlabels, mdb_metric **out);
/* Free every metric (shutdown, after the modules' destroy()). */
void core_metrics_free(void);
/* The core's HTTP metrics, once every module's routes are registered. */
int core_metrics_http_init(const core_registry *reg);
/* A request arrived: counts it in flight; returns its start (monotonic ns). */
int64_t core_metrics_request_begin(void);
/* A request completed. route: its index in the registry's routes, or
 * SIZE_MAX when none matched; status 0 when no reply was sent. */
void core_metrics_request_end(size_t route, unsigned status, uint64_t bytes_in, uint64_t bytes_out,
                              int64_t t0_ns);

/* ---- tls.c: the certificate and key served, replaceable at run time ---------- */
/* Load and check a PEM certificate (chain) and key; on success they serve
 * every new handshake. On failure err says why and the current pair stays. */
int core_tls_load(const char *cert_path, const char *key_path, char *err, size_t errlen);
/* GnuTLS certificate callback for MHD_OPTION_HTTPS_CERT_CALLBACK. */
gnutls_certificate_retrieve_function2 core_tls_retrieve;
/* Free every pair loaded (after the HTTP daemon has stopped). */
void core_tls_free(void);

/* ---- notify.c: service manager notification (systemd Type=notify) ---------- */
void core_notify_init(void);
void core_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void core_notify_close(void);

/* ---- reload.c: SIGHUP ----------------------------------------------------------- */
/* Read the core settings again and apply the log level and, when tls, the
 * certificate and key. 0 when everything applied; failures are logged. */
int core_reload(core_server *srv, int argc, char **argv, bool tls);

/* ---- pool.c ------------------------------------------------------------------ */
/* FIFO pool of n threads at niceness +nice_inc for long-running handlers. */
typedef struct core_pool core_pool;
int core_pool_start(core_pool **out, unsigned n, int nice_inc);
/* Queue run(arg); false (nothing queued) when stopping or out of memory.
 * Jobs still queued at stop get cancel(arg) instead of run(arg). */
bool core_pool_submit(core_pool *p, void (*run)(void *), void (*cancel)(void *), void *arg);
/* Cancel the queued jobs and wait for the running ones; later submissions
 * fail. Idempotent. The pool stays allocated until core_pool_free, so that
 * threads that may still submit never see freed memory. */
void core_pool_stop(core_pool *p);
void core_pool_free(core_pool *p); /* stops first; NULL is fine */

/* ---- doc.c ------------------------------------------------------------------------ */
/* mdb_buf_json_str for texts that may hold request bytes: invalid UTF-8
 * becomes U+FFFD. */
void core_json_str_utf8(mdb_buf *b, const char *s, size_t n);

/* ---- json.c: the strict reader of request JSON ---------------------------------- */
typedef enum core_json_status {
    CORE_JSON_OK = 0,
    CORE_JSON_BAD,   /* not RFC 8259 JSON, or not something we store faithfully */
    CORE_JSON_DEEP,  /* a value nests deeper than max_level */
    CORE_JSON_NOMEM, /* out of memory */
} core_json_status;

typedef struct core_json_err {
    core_json_status status;
    const char *why; /* static text */
    size_t at;       /* byte offset where the text went wrong */
} core_json_err;

typedef struct core_json_opts {
    int max_level; /* deepest level a value may sit at (root = 0), below 64 */
    /* Root members (NULL-terminated list, or NULL) whose array or object
     * value is cut after bound_max + 1 elements before the tree is built:
     * the handler still sees that it is over bound_max. */
    const char *const *bound;
    size_t bound_max;
} core_json_opts;

/* Checks s[0..n) (json.c's header comment lists the rules). On success
 * *out is NULL when json-c may read s as it is, or a malloc'd, NUL-terminated
 * rewrite of *out_len bytes (the caller frees it). -1 and *err on failure. */
int core_json_check(const char *s, size_t n, const core_json_opts *o, char **out, size_t *out_len,
                    core_json_err *err);
/* core_json_check, then the json-c tree (owned by the caller), or NULL and
 * *err. The text "null" gives NULL with err->status CORE_JSON_OK. */
struct json_object *core_json_parse(const char *s, size_t n, const core_json_opts *o,
                                    core_json_err *err);

/* ---- http.c ------------------------------------------------------------------ */
typedef struct core_http core_http;
typedef struct core_http_opts {
    const char *host;
    int port;
    bool dev_mode;
    const char *cert_path, *key_path;
    unsigned threads;
    size_t max_body;
    const char *cors_origin;
    unsigned max_conn_per_ip;    /* open connections per client address; 0 = no limit */
    const char *conn_exempt;     /* networks the limit skips (trusted proxies) or NULL */
    unsigned new_conn_timeout_s; /* idle limit before the first request */
    unsigned idle_timeout_s;     /* idle limit once a request was made (keep-alive) */
    unsigned query_threads;      /* threads for deferred handlers (mdb_req_defer) */
} core_http_opts;
int core_http_start(core_http **out, const core_http_opts *o, char *err, size_t errlen);
/* Stop accepting, wait up to timeout_ms for in-flight requests, close. */
void core_http_stop(core_http *h, int timeout_ms);
/* Called by the store after a commit that storage must make durable. */
void core_http_wait_durable(mdb_req *r, uint64_t ticket);

#endif
