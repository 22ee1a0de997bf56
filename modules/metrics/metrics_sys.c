/*
 * metrics: what the process and the host look like, read from /proc and
 * statvfs(). Declared in mx.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mx.h"

/* Read a small /proc file whole (bounded). Returns its length or -1. */
static ssize_t mx_read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return (ssize_t)n;
}

/* Boot time (unix seconds) from /proc/stat's "btime" line, 0 if unknown.
 * Read line by line: on a host with many CPUs and interrupts the lines
 * before it ("cpuN", "intr") can run to tens of kilobytes. It never
 * changes, so it is read once (racing first readers store the same value). */
static uint64_t mx_boot_time(void)
{
    static _Atomic uint64_t boot;
    uint64_t b = atomic_load_explicit(&boot, memory_order_relaxed);
    if (b)
        return b;
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    char buf[4096];
    bool line_start = true;
    while (!b && fgets(buf, sizeof buf, f)) {
        if (line_start && strncmp(buf, "btime ", 6) == 0)
            b = strtoull(buf + 6, NULL, 10);
        line_start = strchr(buf, '\n') != NULL; /* else the rest of a long line follows */
    }
    fclose(f);
    atomic_store_explicit(&boot, b, memory_order_relaxed);
    return b;
}

/* RSS, thread count and start time from /proc/self/stat. Fields after the
 * command name (which may hold spaces and parentheses, so we start after
 * the last ')'): 3 state ... 20 num_threads, 22 starttime, 24 rss. */
int mx_proc_read(mx_proc *out)
{
    memset(out, 0, sizeof *out);
    char buf[2048];
    if (mx_read_small("/proc/self/stat", buf, sizeof buf) < 0)
        return -errno;
    char *p = strrchr(buf, ')');
    if (!p)
        return -EINVAL;
    p++;
    unsigned long long v[25] = {0};
    int field = 2;
    char *save = NULL;
    for (char *t = strtok_r(p, " ", &save); t && field < 24; t = strtok_r(NULL, " ", &save)) {
        field++;
        v[field] = strtoull(t, NULL, 10);
    }
    long page = sysconf(_SC_PAGESIZE), tck = sysconf(_SC_CLK_TCK);
    out->threads = v[20];
    out->rss_bytes = v[24] * (uint64_t)(page > 0 ? page : 4096);
    uint64_t boot = mx_boot_time();
    if (boot && tck > 0)
        out->start_time = (double)boot + (double)v[22] / (double)tck;
    return 0;
}

/* Open file descriptors of this process. */
uint64_t mx_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n ? n - 1 : 0; /* the directory stream's own descriptor */
}

int mx_host_memory(mx_host_mem *out)
{
    memset(out, 0, sizeof *out);
    char buf[8192];
    if (mx_read_small("/proc/meminfo", buf, sizeof buf) < 0)
        return -errno;
    const char *t = strstr(buf, "MemTotal:");
    const char *a = strstr(buf, "MemAvailable:");
    if (!t)
        return -EINVAL;
    out->total = strtoull(t + 9, NULL, 10) * 1024;
    uint64_t avail = a ? strtoull(a + 13, NULL, 10) * 1024 : 0;
    if (avail > out->total)
        avail = out->total;
    out->free = avail;
    out->used = out->total - avail;
    return 0;
}

/* /proc/self/mounts escapes space, tab, newline and '\' as octal "\040". */
static void mx_unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

#define MX_MAX_DISKS 256

/* Every mounted filesystem with a size (pseudo filesystems such as proc
 * report 0 blocks and are left out), each mount point once. */
void mx_each_disk(mx_disk_fn fn, void *ud)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    if (!f)
        return;
    char *line = NULL; /* getline: overlay mounts' option lists can be long */
    size_t cap = 0;
    char *seen[MX_MAX_DISKS];
    size_t nseen = 0;
    while (nseen < MX_MAX_DISKS && getline(&line, &cap, f) > 0) {
        char *save = NULL;
        char *dev = strtok_r(line, " ", &save);
        char *mnt = dev ? strtok_r(NULL, " ", &save) : NULL;
        if (!mnt)
            continue;
        mx_unescape(mnt);
        bool dup = false;
        for (size_t i = 0; i < nseen && !dup; i++)
            dup = strcmp(seen[i], mnt) == 0;
        struct statvfs sv;
        if (dup || statvfs(mnt, &sv) != 0 || sv.f_blocks == 0)
            continue;
        if (!(seen[nseen] = strdup(mnt)))
            break;
        nseen++;
        uint64_t fr = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
        uint64_t total = (uint64_t)sv.f_blocks * fr, avail = (uint64_t)sv.f_bavail * fr;
        fn(mnt, total, total > avail ? total - avail : 0, avail, ud);
    }
    fclose(f);
    free(line);
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
}
