/*
 * The registry: routes, gates, hooks and services that modules register
 * during init(). Written only in CORE_PHASE_INIT (one thread), read without
 * locks afterwards. Also the module context accessors and typed config.
 *
 * Ownership: the registry owns its arrays and copies of names/patterns;
 * callbacks, user data and vtables stay owned by the registering module.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

core_server *core_g;

bool core_registry_registering(const mdb_ctx *ctx, const char *what)
{
    if (core_g && core_g->phase == CORE_PHASE_INIT)
        return true;
    mdb_log(ctx, MDB_LOG_ERROR, "%s may only be called from init(); ignored", what);
    return false;
}

/* ---- context -------------------------------------------------------------- */
const char *mdb_ctx_name(const mdb_ctx *ctx)
{
    return ctx ? ctx->name : "core";
}
void mdb_ctx_set_data(mdb_ctx *ctx, void *data)
{
    ctx->data = data;
}
void *mdb_ctx_data(const mdb_ctx *ctx)
{
    return ctx->data;
}
mdb_store *mdb_ctx_store(const mdb_ctx *ctx)
{
    (void)ctx;
    return core_g ? core_g->store : NULL;
}

/* ---- config access -------------------------------------------------------- */
/* "section.key", or a key of the caller's own section. NULL when no schema
 * declares it; section and *k are filled either way for messages. */
static core_conf_item *find_item(const mdb_ctx *ctx, const char *key, char section[128],
                                 const char **k)
{
    const char *dot = strchr(key, '.');
    *k = key;
    if (dot && (size_t)(dot - key) < 128) {
        memcpy(section, key, (size_t)(dot - key));
        section[dot - key] = 0;
        *k = dot + 1;
    } else {
        snprintf(section, 128, "%s", ctx ? ctx->name : "core");
    }
    return core_g ? core_conf_find(&core_g->conf, section, *k) : NULL;
}

static core_conf_item *conf_lookup(const mdb_ctx *ctx, const char *key, mdb_conf_type want)
{
    if (!core_g)
        return NULL;
    char section[128];
    const char *k;
    core_conf_item *it = find_item(ctx, key, section, &k);
    if (!it) {
        mdb_log(ctx, MDB_LOG_ERROR, "config key '%s.%s' is not declared", section, k);
        return NULL;
    }
    bool ok = it->key->type == want || (want == MDB_CONF_STRING && it->key->type == MDB_CONF_ENUM);
    if (!ok) {
        mdb_log(ctx, MDB_LOG_ERROR, "config key '%s.%s' read with the wrong type", section, k);
        return NULL;
    }
    return it;
}

const char *mdb_conf_str(const mdb_ctx *ctx, const char *key)
{
    core_conf_item *it = conf_lookup(ctx, key, MDB_CONF_STRING);
    return it ? it->value : NULL;
}

int64_t mdb_conf_int(const mdb_ctx *ctx, const char *key)
{
    core_conf_item *it = conf_lookup(ctx, key, MDB_CONF_INT);
    return it && it->value ? strtoll(it->value, NULL, 10) : 0;
}

bool mdb_conf_bool(const mdb_ctx *ctx, const char *key)
{
    core_conf_item *it = conf_lookup(ctx, key, MDB_CONF_BOOL);
    bool b = false;
    if (it && it->value)
        core_conf_bool_value(it->value, &b);
    return b;
}

bool mdb_conf_is_set(const mdb_ctx *ctx, const char *key)
{
    char section[128];
    const char *k;
    core_conf_item *it = find_item(ctx, key, section, &k);
    return it && strcmp(it->source, "default") != 0;
}

size_t mdb_conf_list_len(const mdb_ctx *ctx, const char *key)
{
    core_conf_item *it = conf_lookup(ctx, key, MDB_CONF_STRING);
    return it ? it->nlist : 0;
}

const char *mdb_conf_list_at(const mdb_ctx *ctx, const char *key, size_t i, const char **where_out)
{
    core_conf_item *it = conf_lookup(ctx, key, MDB_CONF_STRING);
    if (!it || i >= it->nlist)
        return NULL;
    if (where_out)
        *where_out = it->list_src[i];
    return it->list[i];
}

/* ---- routes ---------------------------------------------------------------- */
static int split_segments(char *path, char **segs, size_t max)
{
    size_t n = 0;
    char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        if (n == max)
            return -1;
        segs[n++] = p;
        while (*p && *p != '/')
            p++;
        if (*p)
            *p++ = 0;
    }
    return (int)n;
}

int mdb_route_add(mdb_ctx *ctx, unsigned methods, const char *pattern, unsigned flags,
                  mdb_route_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_route_add"))
        return -EPERM;
    if (!pattern || pattern[0] != '/' || !fn || !methods)
        return -EINVAL;
    core_registry *reg = &core_g->reg;
    core_route r = {0};
    r.methods = methods;
    r.flags = flags;
    r.fn = fn;
    r.ud = ud;
    r.owner = ctx;
    r.pattern = strdup(pattern);
    char *copy = strdup(pattern);
    char *segs[CORE_MAX_SEGS];
    int n = copy ? split_segments(copy, segs, CORE_MAX_SEGS) : -1;
    if (!r.pattern || n < 0) {
        free(r.pattern);
        free(copy);
        return -EINVAL;
    }
    r.segs = calloc((size_t)n + 1, sizeof *r.segs);
    for (int i = 0; r.segs && i < n; i++) {
        r.segs[i] = strdup(segs[i]);
        if (segs[i][0] != '{')
            r.literal_count++;
    }
    r.nsegs = (size_t)n;
    free(copy);
    for (size_t i = 0; i < reg->nroutes; i++) {
        if (strcmp(reg->routes[i].pattern, pattern) == 0 && (reg->routes[i].methods & methods)) {
            mdb_log(ctx, MDB_LOG_ERROR, "route %s is already registered by module '%s'", pattern,
                    mdb_ctx_name(reg->routes[i].owner));
            for (size_t j = 0; j < r.nsegs; j++)
                free(r.segs[j]);
            free(r.segs);
            free(r.pattern);
            return -EEXIST;
        }
    }
    core_route *nr = realloc(reg->routes, (reg->nroutes + 1) * sizeof *nr);
    if (!nr)
        return -ENOMEM;
    reg->routes = nr;
    reg->routes[reg->nroutes++] = r;
    return 0;
}

const core_route *core_registry_match(const core_registry *reg, unsigned method, char *path_buf,
                                      const char **names, char **values, size_t *nparams,
                                      unsigned *allow_out)
{
    char *segs[CORE_MAX_SEGS];
    int n = split_segments(path_buf, segs, CORE_MAX_SEGS);
    *allow_out = 0;
    *nparams = 0;
    if (n < 0)
        return NULL;
    const core_route *best = NULL;
    for (size_t i = 0; i < reg->nroutes; i++) {
        const core_route *r = &reg->routes[i];
        if (r->nsegs != (size_t)n)
            continue;
        bool ok = true;
        for (int s = 0; s < n && ok; s++)
            if (r->segs[s][0] != '{' && strcmp(r->segs[s], segs[s]) != 0)
                ok = false;
        if (!ok)
            continue;
        *allow_out |= r->methods;
        if ((r->methods & method) && (!best || r->literal_count > best->literal_count))
            best = r;
    }
    if (best) {
        for (int s = 0; s < n && *nparams < CORE_MAX_PARAMS; s++) {
            if (best->segs[s][0] == '{') {
                names[*nparams] = best->segs[s];
                values[*nparams] = segs[s];
                (*nparams)++;
            }
        }
    }
    return best;
}

/* ---- hooks and gates ----------------------------------------------------------- */
int core_registry_add_hook(core_hook **arr, size_t *n, const mdb_ctx *ctx, int prio, void *fn,
                           void *ud, int phase)
{
    core_hook *na = realloc(*arr, (*n + 1) * sizeof *na);
    if (!na)
        return -ENOMEM;
    *arr = na;
    na[*n] = (core_hook){prio, core_g->reg.hook_order++, fn, ud, ctx, phase};
    (*n)++;
    return 0;
}

int mdb_gate_add(mdb_ctx *ctx, mdb_gate_phase phase, int priority, mdb_gate_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_gate_add"))
        return -EPERM;
    if (!fn || (phase != MDB_GATE_ACCEPT && phase != MDB_GATE_AUTH))
        return -EINVAL;
    return core_registry_add_hook(&core_g->reg.gates, &core_g->reg.ngates, ctx, priority,
                                  (void *)fn, ud, (int)phase);
}

int mdb_hook_commit(mdb_ctx *ctx, int priority, mdb_commit_hook_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_hook_commit"))
        return -EPERM;
    return core_registry_add_hook(&core_g->reg.commit_hooks, &core_g->reg.ncommit, ctx, priority,
                                  (void *)fn, ud, 0);
}

int mdb_hook_validate(mdb_ctx *ctx, int priority, mdb_validate_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_hook_validate"))
        return -EPERM;
    return core_registry_add_hook(&core_g->reg.validate_hooks, &core_g->reg.nvalidate, ctx,
                                  priority, (void *)fn, ud, 0);
}

int mdb_hook_shutdown(mdb_ctx *ctx, int priority, mdb_shutdown_hook_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_hook_shutdown"))
        return -EPERM;
    return core_registry_add_hook(&core_g->reg.shutdown_hooks, &core_g->reg.nshutdown, ctx,
                                  priority, (void *)fn, ud, 0);
}

static int hook_cmp(const void *a, const void *b)
{
    const core_hook *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

void core_registry_sort(core_registry *reg)
{
    if (reg->ngates)
        qsort(reg->gates, reg->ngates, sizeof *reg->gates, hook_cmp);
    if (reg->ncommit)
        qsort(reg->commit_hooks, reg->ncommit, sizeof *reg->commit_hooks, hook_cmp);
    if (reg->nvalidate)
        qsort(reg->validate_hooks, reg->nvalidate, sizeof *reg->validate_hooks, hook_cmp);
    if (reg->nsnapshot)
        qsort(reg->snapshot_hooks, reg->nsnapshot, sizeof *reg->snapshot_hooks, hook_cmp);
    if (reg->nshutdown)
        qsort(reg->shutdown_hooks, reg->nshutdown, sizeof *reg->shutdown_hooks, hook_cmp);
}

int core_hooks_validate(const char *coll, const mdb_coll_meta *meta, const char *key, mdb_val body,
                        int is_patch, const char **why)
{
    if (!core_g)
        return 0;
    for (size_t i = 0; i < core_g->reg.nvalidate; i++) {
        core_hook *h = &core_g->reg.validate_hooks[i];
        int rc = ((mdb_validate_fn)h->fn)(coll, meta, key, body, is_patch, why, h->ud);
        if (rc)
            return rc;
    }
    return 0;
}

void core_hooks_commit(const mdb_commit_event *ev)
{
    if (!core_g)
        return;
    for (size_t i = 0; i < core_g->reg.ncommit; i++) {
        core_hook *h = &core_g->reg.commit_hooks[i];
        ((mdb_commit_hook_fn)h->fn)(ev, h->ud);
    }
}

void core_hooks_shutdown(void)
{
    if (!core_g)
        return;
    for (size_t i = 0; i < core_g->reg.nshutdown; i++) {
        core_hook *h = &core_g->reg.shutdown_hooks[i];
        ((mdb_shutdown_hook_fn)h->fn)(h->ud);
    }
}

/* ---- services ------------------------------------------------------------------- */
int mdb_service_provide(mdb_ctx *ctx, const char *name, const void *vtable, void *self)
{
    if (!core_registry_registering(ctx, "mdb_service_provide"))
        return -EPERM;
    if (!name || !vtable || *(const size_t *)vtable < sizeof(size_t))
        return -EINVAL;
    core_registry *reg = &core_g->reg;
    for (size_t i = 0; i < reg->nservices; i++) {
        if (strcmp(reg->services[i].name, name) == 0) {
            mdb_log(ctx, MDB_LOG_ERROR, "service '%s' is already provided by module '%s'", name,
                    mdb_ctx_name(reg->services[i].owner));
            return -EEXIST;
        }
    }
    core_service *ns = realloc(reg->services, (reg->nservices + 1) * sizeof *ns);
    if (!ns)
        return -ENOMEM;
    reg->services = ns;
    ns[reg->nservices] = (core_service){strdup(name), vtable, self, ctx};
    if (!ns[reg->nservices].name)
        return -ENOMEM;
    reg->nservices++;
    return 0;
}

const void *mdb_service_get(const mdb_ctx *ctx, const char *name, size_t min_size, void **self_out)
{
    if (!core_g)
        return NULL;
    core_registry *reg = &core_g->reg;
    for (size_t i = 0; i < reg->nservices; i++) {
        core_service *s = &reg->services[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (*(const size_t *)s->vtable < min_size) {
            mdb_log(ctx, MDB_LOG_ERROR,
                    "service '%s' of module '%s' is too old (vtable %zu bytes, need %zu)", name,
                    mdb_ctx_name(s->owner), *(const size_t *)s->vtable, min_size);
            return NULL;
        }
        if (self_out)
            *self_out = s->self;
        return s->vtable;
    }
    return NULL;
}

void core_registry_free(core_registry *reg)
{
    for (size_t i = 0; i < reg->nroutes; i++) {
        for (size_t j = 0; j < reg->routes[i].nsegs; j++)
            free(reg->routes[i].segs[j]);
        free(reg->routes[i].segs);
        free(reg->routes[i].pattern);
    }
    free(reg->routes);
    free(reg->gates);
    free(reg->commit_hooks);
    free(reg->validate_hooks);
    free(reg->snapshot_hooks);
    free(reg->shutdown_hooks);
    for (size_t i = 0; i < reg->nservices; i++)
        free(reg->services[i].name);
    free(reg->services);
    memset(reg, 0, sizeof *reg);
}
