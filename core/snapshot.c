/*
 * Snapshots: POST /snapshot and mdb_snapshot_take(), the one place where a
 * snapshot is taken (through the storage service) and where the
 * after-snapshot hooks run, each with its module's ctx. The reply is sent
 * only after the snapshot is durable and every hook has returned
 * (include/moltendb/module.h, "snapshots").
 *
 * Snapshots are serialised by snap_mu; hooks run while it is held, so they
 * see snapshots one at a time and in order.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "core.h"

enum { CORE_SNAP_HOOK_1_0 = 0, CORE_SNAP_HOOK_1_1 = 1 };

static pthread_mutex_t snap_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char tl_why[1024];
static _Thread_local bool tl_in_hooks; /* a hook asking for a snapshot would deadlock */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int mdb_hook_after_snapshot(mdb_ctx *ctx, int priority, mdb_after_snapshot_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_hook_after_snapshot"))
        return -EPERM;
    if (!fn)
        return -EINVAL;
    return core_registry_add_hook(&core_g->reg.snapshot_hooks, &core_g->reg.nsnapshot, ctx,
                                  priority, (void *)fn, ud, CORE_SNAP_HOOK_1_1);
}

int mdb_hook_snapshot(mdb_ctx *ctx, int priority, mdb_snapshot_hook_fn fn, void *ud)
{
    if (!core_registry_registering(ctx, "mdb_hook_snapshot"))
        return -EPERM;
    if (!fn)
        return -EINVAL;
    return core_registry_add_hook(&core_g->reg.snapshot_hooks, &core_g->reg.nsnapshot, ctx,
                                  priority, (void *)fn, ud, CORE_SNAP_HOOK_1_0);
}

/* ABI 1.0: storage providers fired the hooks themselves. The core does it
 * now (once per snapshot), so a 1.0 provider's call must not fire twice. */
void mdb_fire_snapshot(const mdb_ctx *ctx, const char *path)
{
    (void)ctx;
    (void)path;
}

static void run_hooks(const mdb_snapshot_info *info)
{
    tl_in_hooks = true;
    for (size_t i = 0; i < core_g->reg.nsnapshot; i++) {
        const core_hook *h = &core_g->reg.snapshot_hooks[i];
        if (h->phase == CORE_SNAP_HOOK_1_1)
            ((mdb_after_snapshot_fn)h->fn)((mdb_ctx *)h->owner, info, h->ud);
        else
            ((mdb_snapshot_hook_fn)h->fn)(info->path, h->ud);
    }
    tl_in_hooks = false;
}

int mdb_snapshot_take(mdb_ctx *ctx, mdb_snapshot_info *info_out, const char **why_out)
{
    const char *ignored;
    if (!why_out)
        why_out = &ignored;
    mdb_snapshot_info info = {.size = sizeof info, .trigger = ctx ? ctx->name : "api"};
    if (tl_in_hooks) {
        *why_out = "a snapshot cannot be taken from an after-snapshot hook";
        return -EDEADLK;
    }
    core_server *srv = core_g;
    if (!srv || !srv->storage) {
        *why_out = "the storage is not open (startup or shutdown)";
        return -EBUSY;
    }
    pthread_mutex_lock(&snap_mu);
    const char *why = NULL;
    uint64_t t0 = mono_ms();
    int rc =
        srv->storage->snapshot(srv->storage_self, srv->store, info.path, sizeof info.path, &why);
    if (rc == 0 && !info.path[0])
        rc = -ENOTSUP; /* a 1.0 provider with nothing on disk */
    if (rc == 0) {
        info.duration_ms = mono_ms() - t0;
        info.finished_ms = mdb_now_ms();
        struct stat st;
        if (stat(info.path, &st) == 0)
            info.bytes = (uint64_t)st.st_size;
        uint64_t h0 = mono_ms();
        run_hooks(&info);
        if (srv->reg.nsnapshot)
            mdb_log(NULL, MDB_LOG_INFO,
                    "snapshot %s (%llu bytes, %llu ms, trigger %s): %zu after-snapshot hook(s) "
                    "ran in %llu ms",
                    info.path, (unsigned long long)info.bytes, (unsigned long long)info.duration_ms,
                    info.trigger, srv->reg.nsnapshot, (unsigned long long)(mono_ms() - h0));
    } else if (rc == -ENOTSUP) {
        snprintf(tl_why, sizeof tl_why, "the storage keeps nothing on disk: nothing to snapshot");
    } else {
        snprintf(tl_why, sizeof tl_why, "%s", why ? why : strerror(rc < 0 ? -rc : rc));
    }
    pthread_mutex_unlock(&snap_mu);
    if (rc)
        *why_out = tl_why;
    if (info_out)
        *info_out = info;
    return rc;
}

static void snapshot_route(mdb_req *r, void *ud)
{
    (void)ud;
    const mdb_principal *p = mdb_req_principal(r);
    if (!p || !p->admin) {
        mdb_reply_error(r, 403, "Forbidden: snapshot requires admin scope");
        return;
    }
    mdb_snapshot_info info;
    const char *why = NULL;
    int rc = mdb_snapshot_take(NULL, &info, &why);
    if (rc && rc != -ENOTSUP) {
        mdb_reply_error(r, 500, "Failed to take snapshot: %s", why);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "statusCode", json_object_new_int(200));
    json_object_object_add(o, "status", json_object_new_string("ok"));
    if (rc == -ENOTSUP) {
        /* Upstream answers 200 in --in-memory mode; say plainly that
         * nothing was written and no hook ran. */
        json_object_object_add(
            o, "message",
            json_object_new_string("Nothing to snapshot: the storage keeps no data on disk "
                                   "(in-memory); no file was written and no hook ran"));
        json_object_object_add(o, "snapshot", NULL);
    } else {
        json_object_object_add(o, "message", json_object_new_string("Snapshot taken successfully"));
        json_object *s = json_object_new_object();
        json_object_object_add(s, "path", json_object_new_string(info.path));
        json_object_object_add(s, "bytes", json_object_new_int64((int64_t)info.bytes));
        json_object_object_add(s, "durationMs", json_object_new_int64((int64_t)info.duration_ms));
        json_object_object_add(o, "snapshot", s);
    }
    mdb_reply_json(r, 200, o);
}

int core_snapshot_register(void)
{
    return mdb_route_add(NULL, MDB_METHOD_POST, "/snapshot", 0, snapshot_route, NULL);
}
