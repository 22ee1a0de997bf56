/*
 * snapshot-copy: an example hook module for the moltendb SDK
 * (docs/module-sdk.md walks through it). After every snapshot it copies
 * the snapshot into a folder, safely (temp file, fsync, rename, folder
 * fsync), and logs the copy's FNV-1a 64-bit checksum.
 *
 *   module = snapshot-copy
 *   [snapshot-copy]
 *   dir = /var/backups/moltendb      # must exist
 *
 * It shows the whole life cycle: a config key read in init(), an
 * after-snapshot hook, a worker thread started in start() and joined in
 * stop(), state freed in destroy().
 *
 * Threads: the hook runs on the thread that took the snapshot, while the
 * next snapshot waits, so it only opens the file (that pins this very
 * snapshot even if a later one replaces the name) and hands the descriptor
 * to the worker. If the worker is still copying, the newest waiting
 * snapshot replaces an older one (logged).
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, O_DIRECTORY with -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moltendb/module.h>

static const mdb_conf_key copy_config[] = {
    {.name = "dir",
     .type = MDB_CONF_STRING,
     .env = "MOLTENDB_SNAPSHOT_COPY_DIR",
     .flag = "--snapshot-copy-dir",
     .flags = MDB_CONF_REQUIRED | MDB_CONF_PATH,
     .help = "folder that receives a copy of every snapshot"},
    MDB_CONF_END,
};

typedef struct copier {
    mdb_ctx *ctx;
    const char *dir; /* owned by the core's config */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    bool stopping;
    int pending_fd; /* the snapshot waiting to be copied, or -1 */
    char pending_name[MDB_SNAPSHOT_PATH_MAX];
} copier;

/* The copy's name: <snapshot file name>.<unix ms>. False if too long. */
static bool copy_name(const mdb_snapshot_info *info, char *out, size_t cap)
{
    const char *base = strrchr(info->path, '/');
    int n = snprintf(out, cap, "%s.%" PRId64, base ? base + 1 : info->path, info->finished_ms);
    return n > 0 && (size_t)n < cap;
}

static int copy_fd(copier *c, int src, const char *name, uint64_t *sum, uint64_t *bytes)
{
    char tmp[2 * MDB_SNAPSHOT_PATH_MAX + 8], dst[2 * MDB_SNAPSHOT_PATH_MAX + 8];
    if (strlen(c->dir) >= MDB_SNAPSHOT_PATH_MAX)
        return -ENAMETOOLONG;
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", c->dir, name);
    snprintf(dst, sizeof dst, "%s/%s", c->dir, name);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        return -errno;
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a 64 */
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(src, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)buf[i]) * 0x100000001b3u;
        *bytes += (uint64_t)n;
        for (ssize_t off = 0; off < n && !rc;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR)
                rc = -errno;
            off += w > 0 ? w : 0;
        }
        if (rc)
            break;
    }
    if (!rc && fsync(out) != 0)
        rc = -errno;
    if (close(out) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, dst) != 0)
        rc = -errno;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    int d = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) { /* make the rename itself durable */
        fsync(d);
        close(d);
    }
    *sum = h;
    return 0;
}

static void *copier_main(void *arg)
{
    copier *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stopping && c->pending_fd < 0)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->pending_fd < 0)
            break; /* stopping with nothing left */
        int fd = c->pending_fd;
        char name[MDB_SNAPSHOT_PATH_MAX];
        memcpy(name, c->pending_name, sizeof name);
        c->pending_fd = -1;
        pthread_mutex_unlock(&c->mu);

        uint64_t sum = 0, bytes = 0;
        int rc = copy_fd(c, fd, name, &sum, &bytes);
        close(fd);
        if (rc)
            mdb_log(c->ctx, MDB_LOG_ERROR, "copy of %s into %s failed: %s", name, c->dir,
                    strerror(-rc));
        else
            mdb_log(c->ctx, MDB_LOG_INFO, "copied %s/%s: %" PRIu64 " bytes, fnv1a64=%016" PRIx64,
                    c->dir, name, bytes, sum);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* After-snapshot hook: quick, never blocks on the copy. */
static void on_snapshot(mdb_ctx *ctx, const mdb_snapshot_info *info, void *ud)
{
    copier *c = ud;
    char name[MDB_SNAPSHOT_PATH_MAX];
    if (!copy_name(info, name, sizeof name)) {
        mdb_log(ctx, MDB_LOG_ERROR, "snapshot path too long: %s", info->path);
        return;
    }
    int fd = open(info->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "cannot open %s: %s", info->path, strerror(errno));
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (c->pending_fd >= 0) {
        mdb_log(ctx, MDB_LOG_WARN, "still copying: %s replaced by a newer snapshot",
                c->pending_name);
        close(c->pending_fd);
    }
    c->pending_fd = fd;
    memcpy(c->pending_name, name, sizeof name);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int copy_init(mdb_ctx *ctx)
{
    copier *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->ctx = ctx;
    c->dir = mdb_conf_str(ctx, "dir");
    c->pending_fd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    mdb_ctx_set_data(ctx, c); /* destroy() frees it, even if init fails below */
    return mdb_hook_after_snapshot(ctx, 50, on_snapshot, c);
}

static int copy_start(mdb_ctx *ctx)
{
    copier *c = mdb_ctx_data(ctx);
    if (access(c->dir, W_OK) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "snapshot-copy.dir %s is not a writable folder: %s", c->dir,
                strerror(errno));
        return -EINVAL;
    }
    int rc = pthread_create(&c->thread, NULL, copier_main, c);
    if (rc)
        return -rc;
    c->thread_started = true;
    mdb_log(ctx, MDB_LOG_INFO, "copying every snapshot into %s", c->dir);
    return 0;
}

/* The server no longer takes snapshots: finish the copy in hand, stop. */
static void copy_stop(mdb_ctx *ctx)
{
    copier *c = mdb_ctx_data(ctx);
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started)
        pthread_join(c->thread, NULL);
    c->thread_started = false;
}

static void copy_destroy(mdb_ctx *ctx)
{
    copier *c = mdb_ctx_data(ctx);
    if (!c)
        return;
    if (c->pending_fd >= 0)
        close(c->pending_fd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

MDB_MODULE_DEFINE(.name = "snapshot-copy", .version = "1.0",
                  .description = "copies every snapshot into a folder (example hook module)",
                  .config = copy_config, .init = copy_init, .start = copy_start, .stop = copy_stop,
                  .destroy = copy_destroy);
