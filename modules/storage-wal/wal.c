/*
 * storage-wal: the default storage service. An append-only log of JSON
 * lines (optionally encrypted), a writer thread with group commit, replay
 * at startup, and snapshots that compact the log without stopping writers.
 * The rules: README.md, "Files", "Write modes" and "Snapshots".
 *
 * Threads and locks:
 *   - append() runs under the core's commit lock (one at a time, in commit
 *     order). It renders and encrypts the batch, then appends the bytes to
 *     `pending` under `mu`. It never touches the disk.
 *   - the writer thread takes everything pending (under `mu`), writes it
 *     with one write() and one fdatasync() (under `io_mu`, not `mu`, so
 *     appends go on meanwhile), then completes the tickets it covered.
 *   - a snapshot holds `snap_mu`; its log reset holds `io_mu` for the short
 *     copy of the log's tail, which pauses the writer but not append().
 * Lock order: snap_mu -> io_mu -> mu.
 */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wal_file.h"

/* The writer wakes early once this much is pending (async mode). */
#define WAL_WAKE_BYTES ((size_t)1 << 20)
/* Past this much pending, append() waits for the writer: a disk that cannot
 * keep up slows writers down instead of exhausting memory. */
#define WAL_MAX_PENDING ((size_t)256 << 20)

typedef struct waiter {
    struct waiter *next;
    uint64_t ticket;
    mdb_durable_fn done;
    void *arg;
} waiter;

struct wal {
    mdb_ctx *ctx;
    /* Paths (owned, absolute). */
    char *db_path, *snap_path, *snap_tmp, *log_tmp, *backup_dir, *base_name, *lock_path;
    int lock_fd;    /* flock held while open: one process per database */
    char *password; /* sodium_malloc'd copy, wiped on free */
    bool encrypt, sync_mode, skip_corrupt, keep_logs;
    unsigned keep_backups; /* prune backup/ to this many snapshots (0 = keep all) */
    int flush_ms;
    unsigned long long opslimit;
    size_t memlimit;
    wal_keyring keys;
    const unsigned char *key; /* into keys; NULL = plaintext */

    /* The log file: fd, file_size and hdr.gen change only under io_mu
     * (hdr.gen also under mu, for at_point). */
    pthread_mutex_t io_mu;
    int fd;
    uint64_t file_size;
    wal_header hdr;

    /* Queue, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    mdb_buf pending;
    uint64_t seq;         /* batches appended */
    uint64_t durable;     /* batches written and synced */
    uint64_t logical_end; /* log offset after everything appended */
    waiter *waiters;
    bool flush_req, stopping, failed, started, closed;
    char fail_why[320];
    pthread_t thr;

    /* Scratch for append(): serialised by the commit lock. */
    mdb_buf line, tmp, out;

    /* Snapshots. */
    pthread_mutex_t snap_mu;
    uint64_t freeze_off, freeze_seq, freeze_gen; /* set by at_point */
    long long bak_ts;                            /* second of the last snapshot backup */
    int bak_next;                                /* next free -n suffix in that second */

    _Atomic uint64_t records, log_bytes, snap_bytes;
    _Atomic uint64_t last_snap_ms;    /* CLOCK_MONOTONIC ms of the last snapshot (0 = none yet) */
    uint64_t nsyncs, nbatches_synced; /* writer thread only: group-commit counter */
    char why[1024];                   /* open()'s failure text */

    /* Metrics (wal_metrics_register); NULL handles count nothing. */
    mdb_metric *m_appends, *m_records, *m_written, *m_syncs, *m_group, *m_snaps, *m_snap_secs,
        *m_snap_last, *m_replay;
};

static _Thread_local char tl_why[1024];

/* ---- helpers --------------------------------------------------------------------- */
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* mkdir -p of the directory holding `path`, mode 0700 for new folders. */
static int mkdir_parents(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    char *slash = strrchr(tmp, '/');
    if (!slash || slash == tmp)
        return 0;
    *slash = 0;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- construction ---------------------------------------------------------------- */
wal *wal_new(mdb_ctx *ctx, const wal_opts *o)
{
    if (sodium_init() < 0)
        return NULL;
    wal *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->ctx = ctx;
    w->fd = -1;
    w->lock_fd = -1;
    w->encrypt = o->encrypt;
    w->sync_mode = o->sync_mode;
    w->skip_corrupt = o->skip_corrupt;
    w->keep_logs = o->keep_logs;
    w->keep_backups = o->keep_backups;
    w->flush_ms = o->flush_ms > 0 ? o->flush_ms : 50;
    w->opslimit = o->opslimit ? o->opslimit : crypto_pwhash_OPSLIMIT_INTERACTIVE;
    w->memlimit = o->memlimit ? o->memlimit : crypto_pwhash_MEMLIMIT_INTERACTIVE;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->io_mu, NULL);
    pthread_mutex_init(&w->snap_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv_work, &ca);
    pthread_cond_init(&w->cv_done, &ca);
    pthread_condattr_destroy(&ca);
    mdb_buf_init(&w->pending);
    mdb_buf_init(&w->line);
    mdb_buf_init(&w->tmp);
    mdb_buf_init(&w->out);

    const char *pw = o->password ? o->password : WAL_DEFAULT_PASSWORD;
    w->password = sodium_malloc(strlen(pw) + 1);
    if (w->password)
        memcpy(w->password, pw, strlen(pw) + 1);
    w->keys.password = w->password;

    /* Absolute paths, so snapshot hooks get one whatever the cwd. */
    const char *db = o->db_path && *o->db_path ? o->db_path : "my_database.log";
    char cwd[PATH_MAX];
    if (db[0] == '/')
        w->db_path = strdup(db);
    else if (getcwd(cwd, sizeof cwd))
        w->db_path = xasprintf("%s/%s", cwd, db);
    if (w->db_path) {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", w->db_path);
        w->base_name = strdup(basename(tmp));
        snprintf(tmp, sizeof tmp, "%s", w->db_path);
        w->backup_dir = xasprintf("%s/backup", dirname(tmp));
        w->snap_path = xasprintf("%s.snapshot.bin", w->db_path);
        w->snap_tmp = xasprintf("%s.snapshot.bin.tmp", w->db_path);
        w->log_tmp = xasprintf("%s.tmp", w->db_path);
        w->lock_path = xasprintf("%s.lock", w->db_path);
    }
    if (!w->password || !w->db_path || !w->base_name || !w->backup_dir || !w->snap_path ||
        !w->snap_tmp || !w->log_tmp || !w->lock_path) {
        wal_free(w);
        return NULL;
    }
    return w;
}

/* ---- failure --------------------------------------------------------------------- */
/* Under mu. The first failure wins; later ones are the same story. */
static void set_failed(wal *w, const char *step, int err)
{
    if (w->failed)
        return;
    w->failed = true;
    snprintf(w->fail_why, sizeof w->fail_why, "%s %s failed: %s", step, w->db_path, strerror(err));
    mdb_log(w->ctx, MDB_LOG_ERROR,
            "storage fault: %s; the database is now read-only (writes answer 503, reads go on)",
            w->fail_why);
    mdb_buf_reset(&w->pending);
}

/* Under mu: unlink the waiters that are settled, to be called outside mu. */
static waiter *take_settled(wal *w)
{
    waiter *done = NULL, **pp = &w->waiters;
    while (*pp) {
        waiter *x = *pp;
        if (w->failed || x->ticket <= w->durable) {
            *pp = x->next;
            x->next = done;
            done = x;
        } else {
            pp = &x->next;
        }
    }
    return done;
}

static void run_settled(wal *w, waiter *list)
{
    while (list) {
        waiter *next = list->next;
        int st = list->ticket <= w->durable ? 0 : -EIO;
        list->done(list->arg, st);
        free(list);
        list = next;
    }
}

/* ---- writer thread ----------------------------------------------------------------- */
static void *writer_main(void *arg)
{
    wal *w = arg;
    mdb_buf wbuf;
    mdb_buf_init(&wbuf);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && !w->flush_req && w->pending.len == 0)
            pthread_cond_wait(&w->cv_work, &w->mu);
        if (!w->sync_mode && !w->stopping && !w->flush_req && w->pending.len < WAL_WAKE_BYTES) {
            /* Async: let a batch of writes gather, but flush within flush_ms. */
            uint64_t deadline = mono_ms() + (uint64_t)w->flush_ms;
            struct timespec ts = {(time_t)(deadline / 1000), (long)(deadline % 1000) * 1000000L};
            while (!w->stopping && !w->flush_req && w->pending.len < WAL_WAKE_BYTES &&
                   pthread_cond_timedwait(&w->cv_work, &w->mu, &ts) != ETIMEDOUT)
                ;
        }
        if (w->pending.len == 0) {
            w->flush_req = false;
            pthread_cond_broadcast(&w->cv_done);
            if (w->stopping)
                break;
            continue;
        }
        /* Take everything: one write and one sync cover all these batches. */
        mdb_buf t = w->pending;
        w->pending = wbuf;
        wbuf = t;
        uint64_t upto = w->seq;
        pthread_mutex_unlock(&w->mu);

        pthread_mutex_lock(&w->io_mu);
        const char *step = "write to";
        int rc = wal_write_all(w->fd, wbuf.data, wbuf.len);
        if (rc == 0) {
            w->file_size += wbuf.len;
            atomic_store(&w->log_bytes, w->file_size);
            mdb_counter_add(w->m_written, wbuf.len);
            step = "fdatasync of";
            if (fdatasync(w->fd) != 0)
                rc = -errno;
            w->nsyncs++;
            mdb_counter_add(w->m_syncs, 1);
        }
        pthread_mutex_unlock(&w->io_mu);
        mdb_buf_reset(&wbuf);

        pthread_mutex_lock(&w->mu);
        if (rc) {
            set_failed(w, step, -rc);
        } else {
            mdb_histogram_observe(w->m_group, (double)(upto - w->durable));
            w->nbatches_synced += upto - w->durable;
            w->durable = upto;
        }
        waiter *settled = take_settled(w);
        pthread_cond_broadcast(&w->cv_done);
        if (settled) {
            pthread_mutex_unlock(&w->mu);
            run_settled(w, settled);
            pthread_mutex_lock(&w->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
    mdb_buf_free(&wbuf);
    return NULL;
}

/* Wait until batch `target` is durable (or the storage failed). Under mu. */
static int wait_durable_locked(wal *w, uint64_t target)
{
    if (w->durable < target && w->started) {
        w->flush_req = true;
        pthread_cond_signal(&w->cv_work);
        while (w->durable < target && !w->failed)
            pthread_cond_wait(&w->cv_done, &w->mu);
    }
    return w->durable >= target ? 0 : -EIO;
}

/* ---- open: replay ------------------------------------------------------------------- */
static int open_fail(wal *w, const char **why_out, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int open_fail(wal *w, const char **why_out, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof w->why, fmt, ap);
    va_end(ap);
    *why_out = w->why;
    return rc < 0 ? rc : -EIO;
}

/* A new log file, created atomically (temp file, fsync, rename, dir fsync)
 * so that a crash never leaves a log without its header. */
static int create_log(wal *w, const wal_header *h, uint64_t *size_out, const char **why_out)
{
    mdb_buf b;
    mdb_buf_init(&b);
    wal_header_render(h, &b);
    int rc = 0;
    int fd = open(w->log_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
    } else {
        fchmod(fd, 0600);
        rc = b.oom ? -ENOMEM : wal_write_all(fd, b.data, b.len);
        if (!rc && fsync(fd) != 0)
            rc = -errno;
        if (close(fd) != 0 && !rc)
            rc = -errno;
    }
    if (!rc && rename(w->log_tmp, w->db_path) != 0)
        rc = -errno;
    if (!rc)
        rc = wal_fsync_dir_of(w->db_path);
    if (rc) {
        unlink(w->log_tmp);
        mdb_buf_free(&b);
        return open_fail(w, why_out, rc, "cannot create %s: %s", w->db_path, strerror(-rc));
    }
    *size_out = b.len;
    mdb_buf_free(&b);
    return 0;
}

/* The header of a new log: salt and limits of the snapshot when there is
 * one (same password, same key), else a new random salt. */
static int new_log_header(wal *w, const wal_header *snap, wal_header *h, const char **why_out)
{
    memset(h, 0, sizeof *h);
    h->gen = wal_random_gen();
    h->encrypted = w->encrypt;
    if (!w->encrypt)
        return 0;
    if (snap && snap->encrypted) {
        memcpy(h->salt, snap->salt, WAL_SALT_BYTES);
        h->opslimit = snap->opslimit;
        h->memlimit = snap->memlimit;
        memcpy(h->check, snap->check, sizeof h->check);
        if (wal_keyring_get(&w->keys, h, &w->key) != 0)
            return open_fail(w, why_out, -EACCES,
                             "encryption key does not match this database (%s)", w->snap_path);
        return 0;
    }
    randombytes_buf(h->salt, WAL_SALT_BYTES);
    h->opslimit = w->opslimit;
    h->memlimit = w->memlimit;
    unsigned char key[WAL_KEY_BYTES];
    if (wal_derive_key(w->password, h->salt, h->opslimit, h->memlimit, key) != 0)
        return open_fail(w, why_out, -ENOMEM, "key derivation failed (out of memory)");
    mdb_buf c;
    mdb_buf_init(&c);
    wal_key_check_make(key, &c);
    if (c.oom || c.len >= sizeof h->check) {
        mdb_buf_free(&c);
        sodium_memzero(key, sizeof key);
        return open_fail(w, why_out, -ENOMEM, "out of memory");
    }
    memcpy(h->check, c.data, c.len);
    mdb_buf_free(&c);
    w->key = wal_keyring_put(&w->keys, h, key);
    sodium_memzero(key, sizeof key);
    return 0;
}

static int wal_open(void *self, mdb_store *store, const char **why_out)
{
    wal *w = self;
    uint64_t t0 = mono_ms();
    int rc = mkdir_parents(w->db_path);
    if (rc)
        return open_fail(w, why_out, rc, "cannot create the folder of %s: %s", w->db_path,
                         strerror(-rc));
    /* Two processes appending to one log would interleave their batches. */
    w->lock_fd = open(w->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (w->lock_fd < 0)
        return open_fail(w, why_out, -errno, "cannot open %s: %s", w->lock_path, strerror(errno));
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(w->lock_fd);
        w->lock_fd = -1;
        if (e == EWOULDBLOCK)
            return open_fail(w, why_out, -EBUSY,
                             "%s is in use by another moltendb process (lock %s)", w->db_path,
                             w->lock_path);
        return open_fail(w, why_out, -e, "cannot lock %s: %s", w->lock_path, strerror(e));
    }
    /* Leftovers of an interrupted log reset or snapshot: never loaded. */
    unlink(w->log_tmp);
    unlink(w->snap_tmp);

    /* 1. the snapshot */
    wal_replay rp = {
        .store = store, .keys = &w->keys, .ctx = w->ctx, .skip_corrupt = w->skip_corrupt};
    wal_header sh;
    rc = wal_replay_file(&rp, w->snap_path, true, -1, &sh, 0, 0);
    if (rc == 1)
        return open_fail(w, why_out, -EINVAL, "%s: snapshot has no header (damaged file)",
                         w->snap_path);
    if (rc < 0 && rc != -ENOENT)
        return open_fail(w, why_out, rc, "%s", rp.why);
    bool have_snap = rc == 0;
    struct stat st;
    if (have_snap && stat(w->snap_path, &st) == 0)
        atomic_store(&w->snap_bytes, (uint64_t)st.st_size);

    /* 2. the log, from where the snapshot ends when it still is that log */
    wal_replay lp = {
        .store = store, .keys = &w->keys, .ctx = w->ctx, .skip_corrupt = w->skip_corrupt};
    wal_header lh;
    rc = wal_replay_file(&lp, w->db_path, false, w->encrypt, &lh, have_snap ? sh.log_gen : 0,
                         have_snap ? sh.log_off : 0);
    bool new_log = rc == -ENOENT || rc == 1;
    if (rc == 1)
        mdb_log(w->ctx, MDB_LOG_WARN,
                "%s has no complete header (interrupted creation): starting it again", w->db_path);
    else if (rc < 0 && rc != -ENOENT)
        return open_fail(w, why_out, rc, "%s", lp.why);
    if (!new_log) {
        if (lh.encrypted && wal_keyring_get(&w->keys, &lh, &w->key) != 0)
            return open_fail(w, why_out, -EACCES,
                             "encryption key does not match this database (%s)", w->db_path);
        w->hdr = lh;
        w->file_size = lp.good_end;
        if (lp.torn) {
            /* Cut the torn tail so that new batches do not follow garbage. */
            int tfd = open(w->db_path, O_WRONLY | O_CLOEXEC);
            if (tfd < 0 || ftruncate(tfd, (off_t)lp.good_end) != 0 || fsync(tfd) != 0) {
                int e = errno;
                if (tfd >= 0)
                    close(tfd);
                return open_fail(w, why_out, -e, "cannot truncate the torn tail of %s: %s",
                                 w->db_path, strerror(e));
            }
            close(tfd);
            mdb_log(w->ctx, MDB_LOG_WARN, "%s: truncated to %" PRIu64 " bytes (was %" PRIu64 ")",
                    w->db_path, lp.good_end, lp.file_size);
        }
    }
    if (new_log) {
        rc = new_log_header(w, have_snap ? &sh : NULL, &w->hdr, why_out);
        if (!rc)
            rc = create_log(w, &w->hdr, &w->file_size, why_out);
        if (rc)
            return rc;
    }
    w->fd = open(w->db_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (w->fd < 0)
        return open_fail(w, why_out, -errno, "cannot open %s: %s", w->db_path, strerror(errno));
    fchmod(w->fd, 0600);
    w->logical_end = w->file_size;
    atomic_store(&w->log_bytes, w->file_size);

    rc = pthread_create(&w->thr, NULL, writer_main, w);
    if (rc)
        return open_fail(w, why_out, -rc, "cannot start the writer thread: %s", strerror(rc));
    w->started = true;
    mdb_gauge_set(w->m_replay, (double)(mono_ms() - t0) / 1000.0);
    mdb_log(w->ctx, MDB_LOG_INFO,
            "replayed %" PRIu64 " records (%" PRIu64 " from the snapshot, %" PRIu64 " from %" PRIu64
            " log batches) in %" PRIu64 " ms; log %s, %s mode, %s",
            rp.records + lp.records, rp.records, lp.records, lp.batches, mono_ms() - t0, w->db_path,
            w->sync_mode ? "sync" : "async",
            w->encrypt ? "encrypted (XChaCha20-Poly1305)" : "NOT encrypted");
    return 0;
}

/* ---- append ------------------------------------------------------------------------ */
static void frame_line(wal *w, const char *cmd, const mdb_record *first, uint64_t id, size_t n)
{
    char idtxt[24], ntxt[24];
    int il = snprintf(idtxt, sizeof idtxt, "%" PRIu64, id);
    int nl = snprintf(ntxt, sizeof ntxt, "%zu", n);
    mdb_buf_reset(&w->line);
    bool begin = cmd[3] == 'B';
    wal_render(&w->line, cmd, first->collection, first->collection_len, idtxt, (size_t)il,
               begin ? ntxt : "null", begin ? (size_t)nl : 4, first->ts_ms);
    wal_emit(w->key, w->line.data, w->line.len, first->ts_ms, &w->out);
}

static int wal_append(void *self, const mdb_record *recs, size_t n, uint64_t *ticket_out,
                      const char **why_out)
{
    wal *w = self;
    *ticket_out = 0;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&w->mu);
    bool failed = w->failed, closed = w->closed || !w->started;
    uint64_t id = w->seq + 1;
    pthread_mutex_unlock(&w->mu);
    if (failed || closed) {
        snprintf(tl_why, sizeof tl_why, "%s", closed ? "storage is closed" : w->fail_why);
        *why_out = tl_why;
        return -EROFS;
    }
    /* Render outside mu: the writer keeps going meanwhile. */
    mdb_buf_reset(&w->out);
    if (n > 1)
        frame_line(w, "TX_BEGIN", &recs[0], id, n);
    for (size_t i = 0; i < n; i++) {
        mdb_buf_reset(&w->line);
        wal_render_record(&recs[i], &w->line, &w->tmp);
        wal_emit(w->key, w->line.data, w->line.len, recs[i].ts_ms, &w->out);
    }
    if (n > 1)
        frame_line(w, "TX_COMMIT", &recs[0], id, n);
    if (w->out.oom || w->line.oom || w->tmp.oom) {
        mdb_buf_free(&w->out);
        mdb_buf_free(&w->line);
        mdb_buf_free(&w->tmp);
        *why_out = "out of memory";
        return -ENOMEM;
    }
    pthread_mutex_lock(&w->mu);
    while (w->pending.len > WAL_MAX_PENDING && !w->failed) {
        w->flush_req = true;
        pthread_cond_signal(&w->cv_work);
        pthread_cond_wait(&w->cv_done, &w->mu);
    }
    if (w->failed) {
        pthread_mutex_unlock(&w->mu);
        snprintf(tl_why, sizeof tl_why, "%s", w->fail_why);
        *why_out = tl_why;
        return -EROFS;
    }
    if (mdb_buf_reserve(&w->pending, w->out.len) != 0) {
        pthread_mutex_unlock(&w->mu);
        *why_out = "out of memory";
        return -ENOMEM;
    }
    bool was_empty = w->pending.len == 0;
    mdb_buf_append(&w->pending, w->out.data, w->out.len);
    w->seq = id;
    w->logical_end += w->out.len;
    if (w->sync_mode)
        *ticket_out = id;
    if (was_empty || w->pending.len >= WAL_WAKE_BYTES)
        pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->records, n);
    mdb_counter_add(w->m_appends, 1);
    mdb_counter_add(w->m_records, n);
    /* Keep scratch small after a huge batch. */
    if (w->out.cap > ((size_t)8 << 20)) {
        mdb_buf_free(&w->out);
        mdb_buf_free(&w->tmp);
        mdb_buf_free(&w->line);
    }
    return 0;
}

static int wal_when_durable(void *self, uint64_t ticket, mdb_durable_fn done, void *arg)
{
    wal *w = self;
    pthread_mutex_lock(&w->mu);
    if (ticket == 0 || ticket <= w->durable || w->failed) {
        int st = ticket == 0 || ticket <= w->durable ? 0 : -EIO;
        pthread_mutex_unlock(&w->mu);
        done(arg, st);
        return 0;
    }
    waiter *x = malloc(sizeof *x);
    if (!x) {
        /* No memory for a waiter: wait here rather than lose the ticket. */
        int st = wait_durable_locked(w, ticket);
        pthread_mutex_unlock(&w->mu);
        done(arg, st);
        return 0;
    }
    *x = (waiter){w->waiters, ticket, done, arg};
    w->waiters = x;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static int wal_flush(void *self)
{
    wal *w = self;
    pthread_mutex_lock(&w->mu);
    int rc = w->failed ? -EIO : wait_durable_locked(w, w->seq);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static void wal_stats(void *self, mdb_storage_stats *out)
{
    wal *w = self;
    out->mode = w->sync_mode ? "sync" : "async";
    out->bytes = atomic_load(&w->log_bytes) + atomic_load(&w->snap_bytes);
    out->records = atomic_load(&w->records);
    pthread_mutex_lock(&w->mu);
    out->read_only = w->failed;
    pthread_mutex_unlock(&w->mu);
}

static void wal_close(void *self)
{
    wal *w = self;
    pthread_mutex_lock(&w->mu);
    if (w->closed) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (w->started) {
        int rc = w->failed ? -EIO : wait_durable_locked(w, w->seq);
        if (rc)
            mdb_log(w->ctx, MDB_LOG_ERROR, "closing %s with writes that could not be stored: %s",
                    w->db_path, w->fail_why);
        w->stopping = true;
        pthread_cond_signal(&w->cv_work);
    }
    w->closed = true;
    bool started = w->started;
    pthread_mutex_unlock(&w->mu);
    if (started) {
        pthread_join(w->thr, NULL);
        mdb_log(w->ctx, MDB_LOG_INFO,
                "log closed: %" PRIu64 " write batches made durable with %" PRIu64
                " fdatasync calls",
                w->nbatches_synced, w->nsyncs);
    }
    pthread_mutex_lock(&w->mu);
    if (!w->failed && w->durable < w->seq)
        set_failed(w, "closing", EIO);
    w->failed = true; /* nothing settles after close */
    waiter *left = take_settled(w);
    pthread_mutex_unlock(&w->mu);
    run_settled(w, left);
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->lock_fd >= 0) {
        close(w->lock_fd); /* releases the flock */
        w->lock_fd = -1;
    }
}

/* ---- snapshot ---------------------------------------------------------------------- */
static void at_point(void *ud)
{
    wal *w = ud;
    pthread_mutex_lock(&w->mu);
    w->freeze_off = w->logical_end;
    w->freeze_seq = w->seq;
    w->freeze_gen = w->hdr.gen;
    pthread_mutex_unlock(&w->mu);
}

/* Hard-link `src` into backup/ as <name of P><infix>.<ts>[-n].<ext>: the
 * previous snapshot (".snapshot.bin", "bak") and, with keep-logs, the log
 * that followed it ("", "log"), under one timestamp. The live name stays
 * valid until the rename replaces it, so no moment exists without it. */
static int keep_in_backup(wal *w, const char *src, const char *infix, const char *ext, long long ts,
                          char *why, size_t whycap)
{
    struct stat st;
    if (stat(src, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (mkdir(w->backup_dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(why, whycap, "cannot create %s: %s", w->backup_dir, strerror(e));
        return -e;
    }
    /* Never reuse a suffix of this second that keep-backups freed: names
     * must keep sorting in the order the backups were made. */
    bool snap = strcmp(ext, "bak") == 0;
    int first = snap && ts == w->bak_ts ? w->bak_next : 0;
    for (int i = first; i < first + 1000; i++) {
        char *bak =
            i ? xasprintf("%s/%s%s.%lld-%d.%s", w->backup_dir, w->base_name, infix, ts, i, ext)
              : xasprintf("%s/%s%s.%lld.%s", w->backup_dir, w->base_name, infix, ts, ext);
        if (!bak)
            return -ENOMEM;
        int rc = link(src, bak) == 0 ? 0 : -errno;
        if (rc == -EEXIST) {
            free(bak);
            continue;
        }
        if (rc) {
            snprintf(why, whycap, "cannot back up %s to %s: %s", src, bak, strerror(-rc));
            free(bak);
            return rc;
        }
        if (snap) {
            w->bak_ts = ts;
            w->bak_next = i + 1;
        }
        mdb_log(w->ctx, MDB_LOG_INFO, "kept %s as %s", src, bak);
        free(bak);
        /* Best effort: the data is linked already. */
        char *inside = xasprintf("%s/.", w->backup_dir);
        if (inside)
            wal_fsync_dir_of(inside);
        free(inside);
        return 0;
    }
    snprintf(why, whycap, "cannot back up %s: too many backups this second", src);
    return -EEXIST;
}

/* Replace the log by one holding only the batches after the freeze point:
 * copy the tail into a new file (new generation), fsync, rename over the
 * log. The writer is paused (io_mu) only for the copy; appends go on. */
static int reset_log(wal *w, long long ts, char *why, size_t whycap)
{
    pthread_mutex_lock(&w->mu);
    int rc = wait_durable_locked(w, w->freeze_seq); /* the file holds [0, freeze_off) */
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        snprintf(why, whycap, "storage failed");
        return rc;
    }
    pthread_mutex_lock(&w->io_mu);
    wal_header nh = w->hdr;
    nh.gen = wal_random_gen();
    mdb_buf b;
    mdb_buf_init(&b);
    wal_header_render(&nh, &b);
    uint64_t hlen = b.len;
    int nfd = -1, rfd = -1;
    const char *step = "create";
    int tfd = open(w->log_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (tfd < 0) {
        rc = -errno;
        goto out;
    }
    step = "write";
    rc = b.oom ? -ENOMEM : wal_write_all(tfd, b.data, b.len);
    rfd = open(w->db_path, O_RDONLY | O_CLOEXEC);
    if (!rc && rfd < 0)
        rc = -errno;
    uint64_t pos = w->freeze_off;
    char *cbuf = rc ? NULL : malloc(1 << 20);
    if (!rc && !cbuf)
        rc = -ENOMEM;
    while (!rc && pos < w->file_size) {
        size_t want =
            (size_t)(w->file_size - pos) < (1u << 20) ? (size_t)(w->file_size - pos) : (1u << 20);
        ssize_t r = pread(rfd, cbuf, want, (off_t)pos);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            break;
        }
        rc = wal_write_all(tfd, cbuf, (size_t)r);
        pos += (uint64_t)r;
    }
    free(cbuf);
    if (!rc && fsync(tfd) != 0)
        rc = -errno, step = "fsync";
    if (close(tfd) != 0 && !rc)
        rc = -errno, step = "close";
    if (!rc && w->keep_logs) {
        /* Point-in-time recovery before this snapshot needs the old log. */
        char kwhy[512];
        rc = keep_in_backup(w, w->db_path, "", "log", ts, kwhy, sizeof kwhy);
        if (rc) {
            unlink(w->log_tmp);
            snprintf(why, whycap, "%s", kwhy);
            goto out_quiet;
        }
    }
    if (!rc && rename(w->log_tmp, w->db_path) != 0)
        rc = -errno, step = "rename";
    if (rc) {
        unlink(w->log_tmp);
        goto out;
    }
    /* From here the new log is in place: switch to it whatever happens. */
    wal_fsync_dir_of(w->db_path);
    nfd = open(w->db_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (nfd < 0) {
        rc = -errno;
        step = "reopen";
        pthread_mutex_lock(&w->mu);
        set_failed(w, "reopening", -rc);
        pthread_mutex_unlock(&w->mu);
        goto out;
    }
    close(w->fd);
    w->fd = nfd;
    uint64_t new_size = hlen + (w->file_size - w->freeze_off);
    pthread_mutex_lock(&w->mu);
    w->logical_end = w->logical_end - w->freeze_off + hlen;
    w->hdr.gen = nh.gen;
    pthread_mutex_unlock(&w->mu);
    w->file_size = new_size;
    atomic_store(&w->log_bytes, new_size);
out:
    if (rc)
        snprintf(why, whycap, "cannot %s the new log %s: %s", step, w->log_tmp, strerror(-rc));
out_quiet:
    if (rfd >= 0)
        close(rfd);
    pthread_mutex_unlock(&w->io_mu);
    mdb_buf_free(&b);
    return rc;
}

/* backup/<base>.snapshot.bin.<ts>[-n].bak -> (ts, n); false for any other name. */
static bool backup_order(const wal *w, const char *name, unsigned long long *ts, unsigned *n)
{
    size_t bl = strlen(w->base_name);
    static const char mid[] = ".snapshot.bin.";
    if (strncmp(name, w->base_name, bl) != 0 || strncmp(name + bl, mid, sizeof mid - 1) != 0)
        return false;
    const char *p = name + bl + sizeof mid - 1;
    char *e;
    if (*p < '0' || *p > '9')
        return false;
    *ts = strtoull(p, &e, 10);
    *n = 0;
    if (*e == '-') {
        if (e[1] < '0' || e[1] > '9')
            return false;
        *n = (unsigned)strtoul(e + 1, &e, 10);
    }
    return strcmp(e, ".bak") == 0;
}

typedef struct backup_ent {
    unsigned long long ts;
    unsigned n;
    char *name;
} backup_ent;

static int backup_cmp(const void *a, const void *b)
{
    const backup_ent *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* keep-backups: remove the oldest backup/<base>.snapshot.bin.*.bak beyond
 * the newest `keep`. Other files in backup/ (kept logs, foreign files) are
 * never touched. Best effort: a failure is logged, the snapshot stands. */
static void prune_backups(wal *w)
{
    if (!w->keep_backups)
        return;
    DIR *d = opendir(w->backup_dir);
    if (!d)
        return;
    backup_ent *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        backup_ent e;
        if (!backup_order(w, de->d_name, &e.ts, &e.n))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            backup_ent *nv = realloc(v, nc * sizeof *nv);
            if (!nv)
                break;
            v = nv;
            cap = nc;
        }
        if (!(e.name = strdup(de->d_name)))
            break;
        v[n++] = e;
    }
    closedir(d);
    if (n > w->keep_backups) {
        qsort(v, n, sizeof *v, backup_cmp);
        size_t drop = n - w->keep_backups;
        for (size_t i = 0; i < drop; i++) {
            char *path = xasprintf("%s/%s", w->backup_dir, v[i].name);
            if (path && unlink(path) != 0)
                mdb_log(w->ctx, MDB_LOG_WARN, "keep-backups: cannot remove %s: %s", path,
                        strerror(errno));
            free(path);
        }
        mdb_log(w->ctx, MDB_LOG_INFO,
                "keep-backups = %u: removed the %zu oldest snapshot backup(s)", w->keep_backups,
                drop);
        char *inside = xasprintf("%s/.", w->backup_dir);
        if (inside)
            wal_fsync_dir_of(inside);
        free(inside);
    }
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

uint64_t wal_log_bytes(wal *w)
{
    return atomic_load(&w->log_bytes);
}

uint64_t wal_last_snapshot_ms(wal *w)
{
    return atomic_load(&w->last_snap_ms);
}

int wal_take_snapshot(wal *w, mdb_store *store, char *path_out, size_t path_cap,
                      const char **why_out)
{
    pthread_mutex_lock(&w->snap_mu);
    int rc = 0;
    uint64_t t0 = mono_ms();
    pthread_mutex_lock(&w->mu);
    bool usable = w->started && !w->failed && !w->closed;
    pthread_mutex_unlock(&w->mu);
    if (!usable) {
        snprintf(tl_why, sizeof tl_why, "storage is read-only: %s",
                 w->failed ? w->fail_why : "not open");
        rc = -EROFS;
        goto out;
    }
    mdb_frozen *f = NULL;
    rc = mdb_store_freeze(store, at_point, w, &f);
    if (rc) {
        snprintf(tl_why, sizeof tl_why, "cannot freeze the store: %s", strerror(-rc));
        goto out;
    }
    wal_header sh = w->hdr; /* salt and key check of this database */
    sh.snapshot = true;
    sh.gen = wal_random_gen();
    sh.log_gen = w->freeze_gen;
    sh.log_off = w->freeze_off;
    uint64_t docs = mdb_frozen_doc_count(f);
    uint64_t bytes = 0;
    rc = wal_snapshot_write(w->snap_tmp, f, &sh, w->key, &bytes, tl_why, sizeof tl_why);
    mdb_frozen_free(f);
    if (rc)
        goto out;
    long long now = (long long)time(NULL);
    rc = keep_in_backup(w, w->snap_path, ".snapshot.bin", "bak", now, tl_why, sizeof tl_why);
    if (rc) {
        unlink(w->snap_tmp);
        goto out;
    }
    if (rename(w->snap_tmp, w->snap_path) != 0) {
        rc = -errno;
        snprintf(tl_why, sizeof tl_why, "cannot rename %s to %s: %s", w->snap_tmp, w->snap_path,
                 strerror(-rc));
        unlink(w->snap_tmp);
        goto out;
    }
    atomic_store(&w->snap_bytes, bytes);
    /* Until the rename is durable the log must keep everything. */
    rc = wal_fsync_dir_of(w->snap_path);
    if (rc) {
        snprintf(tl_why, sizeof tl_why, "cannot fsync the folder of %s: %s", w->snap_path,
                 strerror(-rc));
        goto out;
    }
    char rwhy[512];
    if (reset_log(w, now, rwhy, sizeof rwhy) != 0)
        mdb_log(w->ctx, MDB_LOG_WARN,
                "snapshot written but the log was not compacted (%s); it stays valid", rwhy);
    if (path_out && path_cap)
        snprintf(path_out, path_cap, "%s", w->snap_path);
    mdb_log(w->ctx, MDB_LOG_INFO,
            "snapshot %s: %" PRIu64 " documents, %" PRIu64 " bytes in %" PRIu64 " ms", w->snap_path,
            docs, bytes, mono_ms() - t0);
    atomic_store(&w->last_snap_ms, mono_ms());
    prune_backups(w);
    mdb_histogram_observe(w->m_snap_secs, (double)(mono_ms() - t0) / 1000.0);
    mdb_gauge_set(w->m_snap_last, (double)now);
out:
    mdb_counter_add_at(w->m_snaps, rc ? 1 : 0, 0, 1);
    pthread_mutex_unlock(&w->snap_mu);
    if (rc) {
        mdb_log(w->ctx, MDB_LOG_ERROR, "snapshot failed, the log is untouched: %s", tl_why);
        *why_out = tl_why;
    }
    return rc;
}

/* The service entry: only the core calls it (mdb_snapshot_take()), which
 * then runs the after-snapshot hooks. */
static int wal_snapshot(void *self, mdb_store *store, char *path_out, size_t path_cap,
                        const char **why_out)
{
    return wal_take_snapshot(self, store, path_out, path_cap, why_out);
}

const mdb_storage_service wal_service = {
    .size = sizeof(mdb_storage_service),
    .open = wal_open,
    .append = wal_append,
    .when_durable = wal_when_durable,
    .flush = wal_flush,
    .snapshot = wal_snapshot,
    .stats = wal_stats,
    .close = wal_close,
};

void wal_free(wal *w)
{
    if (!w)
        return;
    wal_close(w);
    wal_keyring_wipe(&w->keys);
    sodium_free(w->password);
    mdb_buf_free(&w->pending);
    if (w->line.data)
        sodium_memzero(w->line.data, w->line.cap);
    if (w->tmp.data)
        sodium_memzero(w->tmp.data, w->tmp.cap);
    mdb_buf_free(&w->line);
    mdb_buf_free(&w->tmp);
    mdb_buf_free(&w->out);
    free(w->db_path);
    free(w->snap_path);
    free(w->snap_tmp);
    free(w->log_tmp);
    free(w->backup_dir);
    free(w->base_name);
    free(w->lock_path);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->io_mu);
    pthread_mutex_destroy(&w->snap_mu);
    pthread_cond_destroy(&w->cv_work);
    pthread_cond_destroy(&w->cv_done);
    free(w);
}

/* ---- metrics ---------------------------------------------------------------------- */
static double metric_log_bytes(void *ud)
{
    return (double)atomic_load(&((wal *)ud)->log_bytes);
}

static double metric_snapshot_bytes(void *ud)
{
    return (double)atomic_load(&((wal *)ud)->snap_bytes);
}

static double metric_read_only(void *ud)
{
    mdb_storage_stats st;
    wal_stats(ud, &st);
    return st.read_only ? 1 : 0;
}

int wal_metrics_register(wal *w, mdb_ctx *ctx)
{
    static const char *const results[] = {"ok", "failed", NULL};
    static const double group[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024};
    static const double secs[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};
    const mdb_metric_label result = {"result", results};
    int rc = mdb_metric_counter(ctx, "storage_appends_total", "Write batches appended to the log",
                                NULL, 0, &w->m_appends);
    if (!rc)
        rc = mdb_metric_counter(ctx, "storage_records_appended_total",
                                "Records appended to the log", NULL, 0, &w->m_records);
    if (!rc)
        rc = mdb_metric_counter(ctx, "storage_written_bytes_total",
                                "Bytes written to the log by the writer thread", NULL, 0,
                                &w->m_written);
    if (!rc)
        rc = mdb_metric_counter(ctx, "storage_fdatasyncs_total", "fdatasync() calls on the log",
                                NULL, 0, &w->m_syncs);
    if (!rc)
        rc = mdb_metric_histogram(ctx, "storage_group_commit_batches",
                                  "Write batches made durable by one write and fdatasync", group,
                                  sizeof group / sizeof *group, NULL, 0, &w->m_group);
    if (!rc)
        rc = mdb_metric_counter(ctx, "storage_snapshots_total", "Snapshots taken, by result",
                                &result, 1, &w->m_snaps);
    if (!rc)
        rc = mdb_metric_histogram(ctx, "storage_snapshot_duration_seconds",
                                  "Time to write a snapshot and compact the log", secs,
                                  sizeof secs / sizeof *secs, NULL, 0, &w->m_snap_secs);
    if (!rc)
        rc = mdb_metric_gauge(ctx, "storage_snapshot_last_success_time_seconds",
                              "When the last snapshot succeeded (Unix seconds; 0 = none yet)", NULL,
                              0, &w->m_snap_last);
    if (!rc)
        rc = mdb_metric_gauge(ctx, "storage_replay_duration_seconds",
                              "Time the startup replay of snapshot and log took", NULL, 0,
                              &w->m_replay);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "storage_log_bytes", "Size of the log file", metric_log_bytes,
                                 w);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "storage_snapshot_bytes", "Size of the snapshot file",
                                 metric_snapshot_bytes, w);
    if (!rc)
        rc = mdb_metric_gauge_fn(ctx, "storage_read_only",
                                 "1 when a write or sync failed and writes are refused (503)",
                                 metric_read_only, w);
    return rc;
}
