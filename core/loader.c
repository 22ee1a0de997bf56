/*
 * Module loader: finds <name>.so on the module path, dlopens it and checks
 * its descriptor (magic, ABI, size, name, duplicates, services) before any
 * of its functions is called. Every refusal is one log line naming the file
 * and the mismatch; the caller exits 1. Why: docs/architecture.md, "Why
 * the seams are where they are".
 *
 * Ownership: each mdb_ctx (name, path, dl handle) is owned by the server's
 * module array and freed by core_loader_unload().
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

/* The built-in search path: the build folder's modules for a binary run
 * from its build folder; else MDB_DEFAULT_MODULE_PATH when the build set
 * one (a package: fixed folders); else the moduledir of the prefix the
 * binary is installed under, found from the binary's own place
 * (<prefix>/sbin/../lib/moltendb/modules), so that a staged or relocated
 * install loads its own modules. */
static void default_path(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
    if (slash)
        *slash = 0;
    if (slash && strcmp(exe, MDB_BUILD_BIN_DIR) == 0) {
        snprintf(out, cap, "%s", MDB_BUILD_MODULE_DIR);
        return;
    }
    if (MDB_DEFAULT_MODULE_PATH[0]) {
        snprintf(out, cap, "%s", MDB_DEFAULT_MODULE_PATH);
        return;
    }
    char rel[PATH_MAX], real[PATH_MAX];
    int w = slash ? snprintf(rel, sizeof rel, "%s/%s", exe, MDB_BINDIR_TO_MODULEDIR) : -1;
    if (w > 0 && (size_t)w < sizeof rel && realpath(rel, real))
        snprintf(out, cap, "%s", real);
    else
        snprintf(out, cap, "%s", MDB_INSTALL_MODULE_DIR);
}

char *core_loader_search_path(const char *extra)
{
    char def[PATH_MAX * 2];
    default_path(def, sizeof def);
    char *out = NULL;
    if (extra && *extra) {
        if (asprintf(&out, "%s:%s", extra, def) < 0)
            out = NULL;
    } else {
        out = strdup(def);
    }
    return out;
}

static bool valid_name(const char *n)
{
    size_t len = strlen(n);
    if (!len || len > 63)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return false;
    return true;
}

static char *find_file(const char *module_path, const char *name)
{
    const char *p = module_path;
    while (p && *p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            char path[PATH_MAX];
            int w = snprintf(path, sizeof path, "%.*s/%s.so", (int)n, p, name);
            if (w > 0 && (size_t)w < sizeof path && access(path, F_OK) == 0)
                return strdup(path);
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

static int refuse(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(const char *path, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    mdb_log(NULL, MDB_LOG_ERROR, "module refused: %s: %s", path, why);
    return -EINVAL;
}

static bool list_has(const char *const *list, const char *name)
{
    for (; list && *list; list++)
        if (strcmp(*list, name) == 0)
            return true;
    return false;
}

static int check_descriptor(const mdb_module *m, const char *path, const char *name)
{
    if (m->magic != MDB_ABI_MAGIC)
        return refuse(path, "bad magic 0x%08x (expected 0x%08x): not a moltendb module", m->magic,
                      MDB_ABI_MAGIC);
    if (m->abi_major != MDB_ABI_MAJOR)
        return refuse(path,
                      "built for ABI %u.%u, the server has ABI %u.%u (major versions must match; "
                      "rebuild the module)",
                      m->abi_major, m->abi_minor, MDB_ABI_MAJOR, MDB_ABI_MINOR);
    if (m->abi_minor > MDB_ABI_MINOR)
        return refuse(path,
                      "built for ABI %u.%u, newer than the server's ABI %u.%u (upgrade the "
                      "server or rebuild the module)",
                      m->abi_major, m->abi_minor, MDB_ABI_MAJOR, MDB_ABI_MINOR);
    if (m->struct_size < offsetof(mdb_module, commands))
        return refuse(path, "descriptor is %u bytes, smaller than the ABI %u.0 minimum of %zu",
                      m->struct_size, MDB_ABI_MAJOR, offsetof(mdb_module, commands));
    if (!m->name)
        return refuse(path, "descriptor has no name");
    if (strcmp(m->name, name) != 0)
        return refuse(path, "declares the name '%s' but is configured as '%s'", m->name, name);
    return 0;
}

/* Config schemas are checked when a module is loaded, so that a bad schema
 * refuses startup with the module and key named, instead of surfacing as a
 * puzzling value error later (docs/module-sdk.md, "Config keys"). */
#define CORE_MAX_SCHEMA_KEYS 1024

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* What a moltendb.conf line can name: a-z, 0-9, '-', starting with a letter. */
static bool valid_key_name(const char *n)
{
    size_t len = strlen(n);
    if (!len || len > 63 || n[0] < 'a' || n[0] > 'z')
        return false;
    for (const char *p = n; *p; p++)
        if (!is_lower_alnum(*p) && *p != '-')
            return false;
    return true;
}

static bool valid_env_name(const char *e)
{
    size_t len = strlen(e);
    if (!len || len > 127 || (e[0] >= '0' && e[0] <= '9'))
        return false;
    for (const char *p = e; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static bool valid_flag(const char *f)
{
    return strncmp(f, "--", 2) == 0 && valid_key_name(f + 2);
}

/* Empty words ("a||b", "|a", "a|") and no words at all are refused. */
static bool valid_choices(const char *c)
{
    if (!c || !*c || *c == '|')
        return false;
    for (const char *p = c; *p; p++)
        if (*p == '|' && (p[1] == '|' || p[1] == 0))
            return false;
    return true;
}

static int check_schema(const mdb_module *m, const char *path)
{
    const mdb_conf_key *keys = m->config;
    for (size_t i = 0; keys && keys[i].name; i++) {
        const mdb_conf_key *k = &keys[i];
        if (i == CORE_MAX_SCHEMA_KEYS)
            return refuse(
                path, "module '%s': config schema has more than %d keys (missing MDB_CONF_END?)",
                m->name, CORE_MAX_SCHEMA_KEYS);
        if (!valid_key_name(k->name))
            return refuse(path,
                          "module '%s', config key '%s': invalid name (use a-z, 0-9 and '-', "
                          "starting with a letter)",
                          m->name, k->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[j].name, k->name) == 0)
                return refuse(path, "module '%s', config key '%s': declared twice", m->name,
                              k->name);
        if (k->type < MDB_CONF_STRING || k->type > MDB_CONF_ENUM)
            return refuse(path, "module '%s', config key '%s': unknown type %d", m->name, k->name,
                          (int)k->type);
        if (k->type == MDB_CONF_ENUM && !valid_choices(k->choices))
            return refuse(path,
                          "module '%s', config key '%s': an ENUM needs choices like \"a|b\" "
                          "(got %s%s%s)",
                          m->name, k->name, k->choices ? "\"" : "",
                          k->choices ? k->choices : "none", k->choices ? "\"" : "");
        if (k->type == MDB_CONF_INT && k->min > k->max)
            return refuse(path, "module '%s', config key '%s': min %lld is above max %lld", m->name,
                          k->name, (long long)k->min, (long long)k->max);
        char why[256];
        if (k->default_value && core_conf_check_value(k, k->default_value, why, sizeof why))
            return refuse(path, "module '%s', config key '%s': bad default: %s", m->name, k->name,
                          why);
        if (k->env && !valid_env_name(k->env))
            return refuse(path,
                          "module '%s', config key '%s': invalid environment variable name '%s' "
                          "(use A-Z, 0-9 and '_')",
                          m->name, k->name, k->env);
        if (k->flag && !valid_flag(k->flag))
            return refuse(path,
                          "module '%s', config key '%s': invalid flag '%s' (use --name with a-z, "
                          "0-9, '-')",
                          m->name, k->name, k->flag);
    }
    return 0;
}

/* One environment variable sets one key: a second user is refused. */
static int check_env_collisions(core_server *srv)
{
    for (size_t i = 0; i < srv->nmods; i++) {
        const mdb_module *m = srv->mods[i]->desc;
        for (const mdb_conf_key *k = m->config; k && k->name; k++) {
            if (!k->env)
                continue;
            for (const mdb_conf_key *c = core_conf_schema; c->name; c++)
                if (c->env && strcmp(c->env, k->env) == 0)
                    return refuse(srv->mods[i]->path,
                                  "module '%s', config key '%s': environment variable %s is "
                                  "already used by [core] %s",
                                  m->name, k->name, k->env, c->name);
            for (size_t j = 0; j < i; j++) {
                const mdb_module *o = srv->mods[j]->desc;
                for (const mdb_conf_key *c = o->config; c && c->name; c++)
                    if (c->env && strcmp(c->env, k->env) == 0)
                        return refuse(srv->mods[i]->path,
                                      "module '%s', config key '%s': environment variable %s is "
                                      "already used by [%s] %s",
                                      m->name, k->name, k->env, o->name, c->name);
            }
        }
    }
    return 0;
}

/* Providers before their users; otherwise configuration order. */
static int order_modules(core_server *srv)
{
    size_t n = srv->nmods;
    mdb_ctx **out = calloc(n ? n : 1, sizeof *out);
    bool *done = calloc(n ? n : 1, sizeof *done);
    if (!out || !done) {
        free(out);
        free(done);
        return -ENOMEM;
    }
    size_t k = 0;
    while (k < n) {
        bool progress = false;
        for (size_t i = 0; i < n; i++) {
            if (done[i])
                continue;
            bool ready = true;
            for (const char *const *r = srv->mods[i]->desc->needs; r && *r && ready; r++)
                for (size_t j = 0; j < n; j++)
                    if (!done[j] && j != i && list_has(srv->mods[j]->desc->provides, *r))
                        ready = false;
            if (ready) {
                out[k++] = srv->mods[i];
                done[i] = true;
                progress = true;
            }
        }
        if (!progress) { /* a cycle: keep the remaining ones in order */
            for (size_t i = 0; i < n; i++)
                if (!done[i]) {
                    out[k++] = srv->mods[i];
                    done[i] = true;
                }
        }
    }
    memcpy(srv->mods, out, n * sizeof *out);
    for (size_t i = 0; i < n; i++)
        srv->mods[i]->index = i;
    free(out);
    free(done);
    return 0;
}

int core_loader_load(core_server *srv, const char *module_path, char **names, size_t n)
{
    srv->mods = calloc(n ? n : 1, sizeof *srv->mods);
    if (!srv->mods)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        if (!valid_name(name))
            return refuse(name, "invalid module name (use a-z, 0-9, '-', '_'; at most 63)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], name) == 0)
                return refuse(name, "module '%s' is listed twice in the configuration", name);
        char *path = find_file(module_path, name);
        if (!path)
            return refuse(name, "%s.so not found in the module path %s (see --module-dir)", name,
                          module_path);
        void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
            const char *e = dlerror();
            int rc = refuse(path, "dlopen failed: %s", e ? e : "unknown error");
            free(path);
            return rc;
        }
        const mdb_module *m = dlsym(dl, MDB_MODULE_SYMBOL);
        int rc = m ? check_descriptor(m, path, name)
                   : refuse(path, "no '%s' symbol: not a moltendb module (use MDB_MODULE_DEFINE)",
                            MDB_MODULE_SYMBOL);
        if (!rc)
            rc = check_schema(m, path);
        if (rc) {
            dlclose(dl);
            free(path);
            return rc;
        }
        mdb_ctx *ctx = calloc(1, sizeof *ctx);
        if (!ctx || !(ctx->name = strdup(name))) {
            free(ctx);
            dlclose(dl);
            free(path);
            return -ENOMEM;
        }
        ctx->desc = m;
        ctx->dl = dl;
        ctx->path = path;
        srv->mods[srv->nmods++] = ctx;
    }
    int erc = check_env_collisions(srv);
    if (erc)
        return erc;
    /* Services, from the descriptors alone (no module code has run). */
    for (size_t i = 0; i < srv->nmods; i++) {
        const mdb_module *m = srv->mods[i]->desc;
        for (const char *const *r = m->needs; r && *r; r++) {
            bool found = false;
            for (size_t j = 0; j < srv->nmods && !found; j++)
                found = list_has(srv->mods[j]->desc->provides, *r);
            if (!found)
                return refuse(srv->mods[i]->path,
                              "requires the service '%s', which no loaded module provides", *r);
        }
    }
    static const char *const needed[] = {MDB_STORAGE_SERVICE, MDB_AUTH_SERVICE};
    static const char *const hint[] = {"add 'module = storage-wal' (or storage-memory)",
                                       "add 'module = auth-jwt'; moltendb does not serve "
                                       "without authentication"};
    for (size_t s = 0; s < 2; s++) {
        const char *first = NULL;
        for (size_t i = 0; i < srv->nmods; i++) {
            if (!list_has(srv->mods[i]->desc->provides, needed[s]))
                continue;
            if (first)
                return refuse(srv->mods[i]->path,
                              "provides '%s' like module '%s'; load exactly one", needed[s], first);
            first = srv->mods[i]->name;
        }
        if (!first) {
            mdb_log(NULL, MDB_LOG_ERROR, "no module provides the '%s' service: %s", needed[s],
                    hint[s]);
            return -EINVAL;
        }
    }
    return order_modules(srv);
}

void core_loader_unload(core_server *srv)
{
    for (size_t i = srv->nmods; i-- > 0;) {
        mdb_ctx *ctx = srv->mods[i];
#ifndef MDB_SANITIZE
        /* Under ASan keep modules mapped so leak reports can name them. */
        if (ctx->dl)
            dlclose(ctx->dl);
#endif
        free(ctx->name);
        free(ctx->path);
        free(ctx);
    }
    free(srv->mods);
    srv->mods = NULL;
    srv->nmods = 0;
}
