/*
 * backup-hooks: after every successful snapshot, run each program named by
 * `run = /abs/path` (repeatable) with the snapshot's absolute path as its
 * only argument (README.md here: upstream's post-backup script, made safe).
 *
 * Safety: fork + execve, never a shell; the child gets an empty signal
 * mask and default dispositions (the server blocks SIGTERM and ignores
 * SIGPIPE), its own process group, stdin from /dev/null, a minimal
 * environment, no other inherited descriptor. A timeout sends SIGTERM to
 * the group, then SIGKILL. stdout/stderr are logged line by line, bounded.
 *
 * Threads: the after-snapshot hook only queues (it never blocks the
 * snapshot, writers or shutdown). Each program has one runner thread, so it
 * runs at most once at a time; at most `queue` runs wait behind it, more
 * are skipped with a log line. stop() waits `shutdown-wait` seconds for
 * running programs, then kills their groups, and drops queued runs.
 *
 * Ownership: the bh state and its programs are allocated in init() and
 * freed in destroy(); config strings belong to the core.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <moltendb/module.h>

#define BH_LINE_MAX 1000                 /* longer output lines are cut */
#define BH_OUTPUT_MAX ((size_t)64 << 10) /* bytes of output logged per run */
#define BH_TICK_MS 100
#define BH_DRAIN_MS 2000 /* after exit: how long descendants may hold the pipes */
#define BH_PATH_ENV "PATH=/usr/local/bin:/usr/bin:/bin"

static const mdb_conf_key bh_conf[] = {
    {.name = "run",
     .type = MDB_CONF_STRING,
     .flag = "--backup-hook",
     .flags = MDB_CONF_LIST | MDB_CONF_PATH,
     .help = "absolute path of a program run after each snapshot (repeatable)"},
    {.name = "timeout",
     .type = MDB_CONF_INT,
     .default_value = "300",
     .flag = "--backup-hook-timeout",
     .min = 1,
     .max = 86400,
     .help = "seconds a run may take before its process group gets SIGTERM"},
    {.name = "kill-grace",
     .type = MDB_CONF_INT,
     .default_value = "5",
     .min = 1,
     .max = 300,
     .help = "seconds between SIGTERM and SIGKILL"},
    {.name = "queue",
     .type = MDB_CONF_INT,
     .default_value = "1",
     .min = 0,
     .max = 64,
     .help = "runs of one program that may wait behind the running one; more are skipped"},
    {.name = "shutdown-wait",
     .type = MDB_CONF_INT,
     .default_value = "10",
     .min = 0,
     .max = 3600,
     .help = "seconds shutdown waits for running programs before killing them"},
    MDB_CONF_END};

typedef struct bh_job {
    char path[MDB_SNAPSHOT_PATH_MAX];
    uint64_t bytes;
} bh_job;

typedef struct bh bh;

typedef struct bh_prog {
    bh *owner;
    const char *path; /* config string (core-owned) */
    pthread_t thr;
    bool thr_started;
    bh_job *queue; /* ring of qcap + 1 jobs, under owner->mu */
    size_t qhead, qlen;
    bool running; /* under owner->mu */
} bh_prog;

struct bh {
    mdb_ctx *ctx;
    bh_prog *progs;
    size_t nprogs;
    uint64_t timeout_ms, grace_ms, shutdown_ms;
    size_t qcap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    uint64_t stop_deadline; /* mono ms; valid once stopping */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- startup checks ------------------------------------------------------ */
/* "file:/etc/moltendb.conf:12" -> "/etc/moltendb.conf:12"; flags and the
 * environment are named as they are. */
static const char *bh_where(const char *src)
{
    return strncmp(src, "file:", 5) == 0 ? src + 5 : src;
}

static int bh_check_program(mdb_ctx *ctx, const char *path, const char *where)
{
    const char *why = NULL;
    struct stat st;
    if (path[0] != '/')
        why = "is not an absolute path";
    else if (stat(path, &st) != 0)
        why = errno == ENOENT ? "does not exist" : "cannot be examined";
    else if (!S_ISREG(st.st_mode))
        why = "is not a regular file";
    else if (access(path, X_OK) != 0)
        why = "is not executable by the server's user";
    else if (st.st_mode & (S_IWGRP | S_IWOTH))
        why = "is writable by group or others (anyone who can write it runs code as the server; "
              "chmod go-w)";
    if (!why)
        return 0;
    mdb_log(ctx, MDB_LOG_ERROR, "%s: backup-hooks.run: '%s' %s", bh_where(where), path, why);
    return -EINVAL;
}

/* ---- output capture ------------------------------------------------------ */
typedef struct bh_stream {
    int fd;
    const char *name; /* "stdout" / "stderr" */
    char line[BH_LINE_MAX + 1];
    size_t len;
    bool cut; /* the current line was cut: skip to its end */
} bh_stream;

typedef struct bh_run {
    bh *b;
    const char *prog;
    size_t logged, dropped; /* output bytes */
} bh_run;

static void bh_emit(bh_run *run, bh_stream *s, bool cut)
{
    if (run->logged >= BH_OUTPUT_MAX) {
        run->dropped += s->len;
    } else {
        run->logged += s->len;
        mdb_log(run->b->ctx, MDB_LOG_INFO, "%s %s: %.*s%s", run->prog, s->name, (int)s->len,
                s->line, cut ? " [line cut]" : "");
    }
    s->len = 0;
}

/* Read what is there; false at EOF or error. */
static bool bh_read(bh_run *run, bh_stream *s)
{
    char buf[4096];
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        if (s->len)
            bh_emit(run, s, false);
        return false;
    }
    for (ssize_t i = 0; i < n; i++) {
        char c = buf[i];
        if (c == '\n') {
            if (!s->cut)
                bh_emit(run, s, false);
            s->cut = false;
            s->len = 0;
            continue;
        }
        if (s->cut) {
            run->dropped++;
            continue;
        }
        if (s->len == BH_LINE_MAX) {
            bh_emit(run, s, true);
            s->cut = true;
            run->dropped++;
            continue;
        }
        s->line[s->len++] = (c == '\r' || c == '\t' || (unsigned char)c >= 0x20) ? c : '?';
    }
    return true;
}

/* ---- one run --------------------------------------------------------------- */
/* In the child, between fork and exec: async-signal-safe calls only. */
static void bh_child(int devnull, int out, int err, const char *path, char *const argv[],
                     char *const envp[])
{
    setpgid(0, 0);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    close_range(3, ~0u, 0);
    execve(path, argv, envp);
    _exit(127);
}

static void bh_signal_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) != 0 && errno == ESRCH)
        kill(pid, sig);
}

static void bh_run_one(bh_prog *p, const bh_job *job)
{
    bh *b = p->owner;
    char env_path[MDB_SNAPSHOT_PATH_MAX + 32], env_bytes[64];
    snprintf(env_path, sizeof env_path, "MOLTENDB_SNAPSHOT_PATH=%s", job->path);
    snprintf(env_bytes, sizeof env_bytes, "MOLTENDB_SNAPSHOT_BYTES=%" PRIu64, job->bytes);
    char *envp[] = {(char *)BH_PATH_ENV, env_path, env_bytes, NULL};
    char *argv[] = {(char *)p->path, (char *)job->path, NULL};
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
        mdb_log(b->ctx, MDB_LOG_ERROR, "%s: cannot prepare the run: %s", p->path, strerror(errno));
        goto out;
    }
    uint64_t t0 = mono_ms();
    pid_t pid = fork();
    if (pid < 0) {
        mdb_log(b->ctx, MDB_LOG_ERROR, "%s: fork failed: %s", p->path, strerror(errno));
        goto out;
    }
    if (pid == 0)
        bh_child(devnull, outp[1], errp[1], p->path, argv, envp);
    setpgid(pid, pid); /* also here: no window where the group does not exist */
    close(outp[1]);
    close(errp[1]);
    outp[1] = errp[1] = -1;
    mdb_log(b->ctx, MDB_LOG_INFO, "running %s %s (pid %d)", p->path, job->path, (int)pid);

    bh_run run = {.b = b, .prog = p->path};
    bh_stream st[2] = {{.fd = outp[0], .name = "stdout"}, {.fd = errp[0], .name = "stderr"}};
    bool open_[2] = {true, true}, exited = false, killed = false;
    int status = 0;
    uint64_t exit_at = 0, term_at = 0;
    const char *why_killed = NULL;
    for (;;) {
        struct pollfd pf[2];
        nfds_t n = 0;
        int idx[2];
        for (int i = 0; i < 2; i++)
            if (open_[i]) {
                pf[n] = (struct pollfd){.fd = st[i].fd, .events = POLLIN};
                idx[n++] = i;
            }
        if (n)
            poll(pf, n, BH_TICK_MS);
        else if (!exited)
            poll(NULL, 0, BH_TICK_MS);
        for (nfds_t k = 0; k < n; k++)
            if (pf[k].revents && !bh_read(&run, &st[idx[k]]))
                open_[idx[k]] = false;
        uint64_t now = mono_ms();
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            exit_at = now;
        }
        if (exited && (!open_[0] && !open_[1]))
            break;
        if (exited && now - exit_at > BH_DRAIN_MS) {
            /* Something it started still holds the pipes: end the group. */
            bh_signal_group(pid, SIGKILL);
            break;
        }
        if (exited)
            continue;
        pthread_mutex_lock(&b->mu);
        bool stop_now = b->stopping && now >= b->stop_deadline;
        pthread_mutex_unlock(&b->mu);
        if (!term_at && (now - t0 >= b->timeout_ms || stop_now)) {
            why_killed = stop_now ? "the server is shutting down" : "timed out";
            mdb_log(b->ctx, MDB_LOG_WARN,
                    "%s: %s after %" PRIu64 " ms: sending SIGTERM to its group", p->path,
                    why_killed, now - t0);
            bh_signal_group(pid, SIGTERM);
            term_at = now;
        } else if (term_at && !killed && now - term_at >= b->grace_ms) {
            mdb_log(b->ctx, MDB_LOG_WARN, "%s: still running %" PRIu64 " ms after SIGTERM: SIGKILL",
                    p->path, now - term_at);
            bh_signal_group(pid, SIGKILL);
            killed = true;
        }
    }
    if (run.dropped)
        mdb_log(b->ctx, MDB_LOG_WARN, "%s: %zu more bytes of output were not logged", p->path,
                run.dropped);
    uint64_t ms = exit_at - t0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        mdb_log(b->ctx, MDB_LOG_INFO, "%s exited with status 0 in %" PRIu64 " ms", p->path, ms);
    else if (WIFEXITED(status))
        mdb_log(b->ctx, MDB_LOG_ERROR, "%s exited with status %d in %" PRIu64 " ms%s", p->path,
                WEXITSTATUS(status), ms,
                WEXITSTATUS(status) == 127 ? " (could not be executed)" : "");
    else if (WIFSIGNALED(status))
        mdb_log(b->ctx, MDB_LOG_ERROR, "%s was killed by signal %d (%s) after %" PRIu64 " ms%s%s",
                p->path, WTERMSIG(status), strsignal(WTERMSIG(status)), ms, why_killed ? ": " : "",
                why_killed ? why_killed : "");
out:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    if (devnull >= 0)
        close(devnull);
}

/* ---- runner threads and the hook ------------------------------------------- */
static void *bh_runner(void *arg)
{
    bh_prog *p = arg;
    bh *b = p->owner;
    bh_job *job = malloc(sizeof *job);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stopping && p->qlen == 0)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->stopping || !job)
            break;
        *job = p->queue[p->qhead];
        p->qhead = (p->qhead + 1) % (b->qcap + 1);
        p->qlen--;
        p->running = true;
        pthread_mutex_unlock(&b->mu);
        bh_run_one(p, job);
        pthread_mutex_lock(&b->mu);
        p->running = false;
    }
    if (p->qlen)
        mdb_log(b->ctx, MDB_LOG_WARN, "%s: shutdown: %zu queued run(s) dropped", p->path, p->qlen);
    p->qlen = 0;
    pthread_mutex_unlock(&b->mu);
    free(job);
    return NULL;
}

/* On the snapshot's thread: only queue. While a run is in progress `queue`
 * more may wait; when none is, one more (it starts at once). */
static void bh_after_snapshot(mdb_ctx *ctx, const mdb_snapshot_info *info, void *ud)
{
    bh *b = ud;
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->nprogs; i++) {
        bh_prog *p = &b->progs[i];
        if (b->stopping) {
            mdb_log(ctx, MDB_LOG_WARN, "%s: not run for %s: the server is shutting down", p->path,
                    info->path);
            continue;
        }
        if (p->qlen >= b->qcap + (p->running ? 0 : 1)) {
            mdb_log(ctx, MDB_LOG_WARN,
                    "%s: run for snapshot %s skipped: a run is in progress and %zu wait(s) "
                    "already (queue = %zu)",
                    p->path, info->path, p->qlen, b->qcap);
            continue;
        }
        bh_job *j = &p->queue[(p->qhead + p->qlen) % (b->qcap + 1)];
        snprintf(j->path, sizeof j->path, "%s", info->path);
        j->bytes = info->bytes;
        p->qlen++;
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ---- life cycle ------------------------------------------------------------ */
static int bh_init(mdb_ctx *ctx)
{
    bh *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, b);
    b->ctx = ctx;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->timeout_ms = (uint64_t)mdb_conf_int(ctx, "timeout") * 1000u;
    b->grace_ms = (uint64_t)mdb_conf_int(ctx, "kill-grace") * 1000u;
    b->shutdown_ms = (uint64_t)mdb_conf_int(ctx, "shutdown-wait") * 1000u;
    b->qcap = (size_t)mdb_conf_int(ctx, "queue");
    size_t n = mdb_conf_list_len(ctx, "run");
    b->progs = calloc(n ? n : 1, sizeof *b->progs);
    if (!b->progs)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *where = "";
        const char *path = mdb_conf_list_at(ctx, "run", i, &where);
        rc |= bh_check_program(ctx, path, where);
        for (size_t j = 0; j < i && !rc; j++)
            if (strcmp(b->progs[j].path, path) == 0) {
                mdb_log(ctx, MDB_LOG_ERROR, "%s: backup-hooks.run: '%s' is listed twice",
                        bh_where(where), path);
                rc = -EINVAL;
            }
        bh_prog *p = &b->progs[b->nprogs++];
        p->owner = b;
        p->path = path;
        /* The job ahead of the waiting ones sits in the ring too. */
        p->queue = calloc(b->qcap + 1, sizeof *p->queue);
        if (!p->queue)
            return -ENOMEM;
    }
    if (rc)
        return -EINVAL;
    if (!n)
        mdb_log(ctx, MDB_LOG_WARN, "no 'run = /abs/path' in [backup-hooks]: nothing to run");
    return mdb_hook_after_snapshot(ctx, 100, bh_after_snapshot, b);
}

static int bh_start(mdb_ctx *ctx)
{
    bh *b = mdb_ctx_data(ctx);
    for (size_t i = 0; i < b->nprogs; i++) {
        int rc = pthread_create(&b->progs[i].thr, NULL, bh_runner, &b->progs[i]);
        if (rc) {
            mdb_log(ctx, MDB_LOG_ERROR, "cannot start a runner thread: %s", strerror(rc));
            return -rc;
        }
        b->progs[i].thr_started = true;
        mdb_log(ctx, MDB_LOG_INFO, "after each snapshot: %s (timeout %" PRIu64 " s)",
                b->progs[i].path, b->timeout_ms / 1000);
    }
    return 0;
}

static void bh_stop(mdb_ctx *ctx)
{
    bh *b = mdb_ctx_data(ctx);
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    b->stop_deadline = mono_ms() + b->shutdown_ms;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < b->nprogs; i++)
        if (b->progs[i].thr_started) {
            pthread_join(b->progs[i].thr, NULL);
            b->progs[i].thr_started = false;
        }
}

static void bh_destroy(mdb_ctx *ctx)
{
    bh *b = mdb_ctx_data(ctx);
    if (!b)
        return;
    bh_stop(ctx);
    for (size_t i = 0; i < b->nprogs; i++)
        free(b->progs[i].queue);
    free(b->progs);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    mdb_ctx_set_data(ctx, NULL);
}

MDB_MODULE_DEFINE(.name = "backup-hooks", .version = "1.0.0",
                  .description = "runs configured programs after each snapshot (fork/execv, no "
                                 "shell, timeout, logged)",
                  .config = bh_conf, .init = bh_init, .start = bh_start, .stop = bh_stop,
                  .destroy = bh_destroy);
