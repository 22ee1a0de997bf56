/* storage-wal: module descriptor, configuration and the snapshot scheduler
 * (snapshot-every, snapshot-log-size; README.md, "Configuration" and
 * "Snapshots"). POST /snapshot is the core's. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
    {.name = "snapshot-every",
     .type = MDB_CONF_STRING,
     .default_value = "0",
     .env = "MOLTENDB_SNAPSHOT_EVERY",
     .flag = "--snapshot-every",
     .help = "take a snapshot when the last one is this old: 90s, 15m, 6h, 1d (0 = off)"},
    {.name = "snapshot-log-size",
     .type = MDB_CONF_STRING,
     .default_value = "0",
     .env = "MOLTENDB_SNAPSHOT_LOG_SIZE",
     .flag = "--snapshot-log-size",
     .help = "take a snapshot when the log passes this size: bytes or 512K, 64M, 1G (0 = off)"},
    {.name = "keep-backups",
     .type = MDB_CONF_INT,
     .default_value = "0",
     .env = "MOLTENDB_KEEP_BACKUPS",
     .flag = "--keep-backups",
     .min = 0,
     .max = 1000000,
     .help = "after each snapshot keep only the newest N backup/*.snapshot.bin.*.bak (0 = all)"},
    MDB_CONF_END};

static const char *const wal_provides[] = {MDB_STORAGE_SERVICE, NULL};

/* The scheduler: one thread that asks the core for a snapshot
 * (mdb_snapshot_take(), so the after-snapshot hooks run as for POST
 * /snapshot) when the last snapshot is `every_ms` old or the log has
 * passed `log_size` bytes. */
typedef struct wal_mod {
    wal *w;
    uint64_t every_ms, log_size; /* 0 = off */
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stopping;
    uint64_t since_ms; /* CLOCK_MONOTONIC ms the interval counts from */
} wal_mod;

#define WAL_SCHED_TICK_MS 250
#define WAL_SCHED_RETRY_MS 30000 /* after a failed scheduled snapshot */

static uint64_t sched_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "0"/"off" = 0; else a number with an optional unit out of names[]
 * (case-insensitive), scaled by the matching mult[]. */
static int parse_scaled(const char *v, const char *const *names, const uint64_t *mult, size_t n,
                        uint64_t *out)
{
    if (!v || !*v || strcasecmp(v, "off") == 0) {
        *out = 0;
        return 0;
    }
    char *e;
    errno = 0;
    unsigned long long x = strtoull(v, &e, 10);
    if (e == v || errno || v[0] == '-')
        return -EINVAL;
    uint64_t m = 0;
    for (size_t i = 0; i < n && !m; i++)
        if (strcasecmp(e, names[i]) == 0)
            m = mult[i];
    if (!m || (x && x > UINT64_MAX / m))
        return -EINVAL;
    *out = (uint64_t)x * m;
    return 0;
}

static int parse_duration_ms(const char *v, uint64_t *out)
{
    static const char *const names[] = {"", "s", "m", "h", "d"};
    static const uint64_t mult[] = {1000, 1000, 60000, 3600000, 86400000};
    return parse_scaled(v, names, mult, 5, out);
}

static int parse_size(const char *v, uint64_t *out)
{
    static const char *const names[] = {"", "b", "k", "kb", "m", "mb", "g", "gb"};
    static const uint64_t mult[] = {1,        1,        1u << 10, 1u << 10,
                                    1u << 20, 1u << 20, 1u << 30, 1u << 30};
    return parse_scaled(v, names, mult, 8, out);
}

static void *sched_main(void *arg)
{
    mdb_ctx *ctx = arg;
    wal_mod *m = mdb_ctx_data(ctx);
    uint64_t not_before = 0;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        uint64_t now = sched_now();
        uint64_t last = wal_last_snapshot_ms(m->w);
        uint64_t from = last > m->since_ms ? last : m->since_ms;
        const char *why_now = NULL;
        if (now >= not_before) {
            if (m->every_ms && now - from >= m->every_ms)
                why_now = "snapshot-every";
            else if (m->log_size && wal_log_bytes(m->w) >= m->log_size)
                why_now = "snapshot-log-size";
        }
        if (why_now) {
            pthread_mutex_unlock(&m->mu);
            mdb_snapshot_info info;
            const char *why = NULL;
            int rc = mdb_snapshot_take(ctx, &info, &why);
            if (rc == 0) {
                mdb_log(ctx, MDB_LOG_INFO, "scheduled snapshot (%s): %s, %llu bytes", why_now,
                        info.path, (unsigned long long)info.bytes);
                not_before = 0;
            } else {
                mdb_log(ctx, MDB_LOG_ERROR, "scheduled snapshot (%s) failed: %s; next try in %d s",
                        why_now, why ? why : strerror(-rc), WAL_SCHED_RETRY_MS / 1000);
                not_before = sched_now() + WAL_SCHED_RETRY_MS;
            }
            pthread_mutex_lock(&m->mu);
            continue;
        }
        uint64_t wake = now + WAL_SCHED_TICK_MS;
        struct timespec ts = {(time_t)(wake / 1000), (long)(wake % 1000) * 1000000L};
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static int wal_start(mdb_ctx *ctx)
{
    wal_mod *m = mdb_ctx_data(ctx);
    if (!m->every_ms && !m->log_size)
        return 0;
    m->since_ms = sched_now();
    int rc = pthread_create(&m->thr, NULL, sched_main, ctx);
    if (rc) {
        mdb_log(ctx, MDB_LOG_ERROR, "cannot start the snapshot scheduler: %s", strerror(rc));
        return -rc;
    }
    m->running = true;
    return 0;
}

static void wal_stop(mdb_ctx *ctx)
{
    wal_mod *m = mdb_ctx_data(ctx);
    if (!m || !m->running)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thr, NULL);
    m->running = false;
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
    wal_mod *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    mdb_ctx_set_data(ctx, m);
    const char *every = mdb_conf_str(ctx, "snapshot-every");
    const char *size = mdb_conf_str(ctx, "snapshot-log-size");
    if (parse_duration_ms(every, &m->every_ms) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR,
                "storage-wal.snapshot-every: '%s' is not a duration (90s, 15m, 6h, 1d; 0 = off)",
                every);
        return -EINVAL;
    }
    if (parse_size(size, &m->log_size) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR,
                "storage-wal.snapshot-log-size: '%s' is not a size (bytes, 512K, 64M, 1G; 0 = off)",
                size);
        return -EINVAL;
    }
    o.keep_backups = (unsigned)mdb_conf_int(ctx, "keep-backups");
    m->w = wal_new(ctx, &o);
    if (!m->w)
        return -ENOMEM;
    int rc = mdb_service_provide(ctx, MDB_STORAGE_SERVICE, &wal_service, m->w);
    if (!rc)
        rc = wal_metrics_register(m->w, ctx);
    return rc;
}

static void wal_destroy(mdb_ctx *ctx)
{
    wal_mod *m = mdb_ctx_data(ctx);
    if (!m)
        return;
    wal_free(m->w);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
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
                  .start = wal_start, .stop = wal_stop, .destroy = wal_destroy,
                  .commands = wal_commands);
