/*
 * Fault-injection shim for the graceful-stop tests (LD_PRELOAD): delays every
 * epoll_ctl(EPOLL_CTL_DEL) made by the process's main thread by
 * MDB_SHIM_EPOLL_DELAY_US microseconds (default 3000). That is the window in
 * which libmicrohttpd 0.9.75's MHD_quiesce_daemon loses the race with its own
 * epoll workers on a thread-pool daemon and aborts; a server that stops
 * accepting some other way is unaffected. When MDB_SHIM_EPOLL_LOG names a
 * file, loading the shim appends "l" to it and each delayed call "d", so a
 * test can tell the shim was in place.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static void shim_note(const char *what)
{
    const char *log = getenv("MDB_SHIM_EPOLL_LOG");
    if (!log)
        return;
    int lf = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (lf >= 0) {
        (void)!write(lf, what, 1);
        close(lf);
    }
}

__attribute__((constructor)) static void shim_loaded(void)
{
    shim_note("l");
}

typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    static epoll_ctl_fn real;
    if (!real)
        real = (epoll_ctl_fn)dlsym(RTLD_NEXT, "epoll_ctl");
    if (op == EPOLL_CTL_DEL && gettid() == getpid()) {
        const char *d = getenv("MDB_SHIM_EPOLL_DELAY_US");
        long us = d ? strtol(d, NULL, 10) : 3000;
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        shim_note("d");
    }
    return real(epfd, op, fd, ev);
}
