/*
 * metrics module private header: what metrics_module.c uses from the
 * process/host readers (metrics_sys.c) and the optional plain-HTTP listener
 * (metrics_listen.c). Symbols have hidden visibility like the rest of the
 * module, so only the descriptor is exported. See README.md.
 */
#ifndef MDB_METRICS_MX_H
#define MDB_METRICS_MX_H

#include <stdint.h>

#include <moltendb/module.h>

#define MX_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct MHD_Daemon;

typedef struct mx_proc {
    uint64_t rss_bytes;
    uint64_t threads;
    double start_time; /* unix seconds */
} mx_proc;

typedef struct mx_host_mem {
    uint64_t total, used, free; /* free = available to programs; used = total - free */
} mx_host_mem;

typedef void (*mx_disk_fn)(const char *mount, uint64_t total, uint64_t used, uint64_t avail,
                           void *ud);

/* This process: resident bytes, threads, start time. 0 or -errno. */
int mx_proc_read(mx_proc *out);
/* Open file descriptors of this process. */
uint64_t mx_open_fds(void);
/* Host memory from /proc/meminfo. 0 or -errno. */
int mx_host_memory(mx_host_mem *out);
/* Every mounted filesystem with a size, each mount point once. */
void mx_each_disk(mx_disk_fn fn, void *ud);

/* Start the metrics.listen listener; NULL with a log line when it cannot.
 * The caller stops it with MHD_stop_daemon. */
struct MHD_Daemon *mx_listen_start(mdb_ctx *ctx, const char *spec);

#endif
