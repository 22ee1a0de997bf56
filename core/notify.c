/*
 * Service manager notification (systemd Type=notify) without libsystemd:
 * one datagram per state change to the AF_UNIX socket named by
 * NOTIFY_SOCKET ("/path" or "@abstract"), as sd_notify(3) documents the
 * protocol. README.md ("systemd notification") says why no library.
 *
 * core_notify_init() runs in main() before any thread exists: it opens the
 * socket and removes NOTIFY_SOCKET from the environment so programs that
 * modules start never inherit it. Without the variable every call is a
 * no-op. Sending is thread-safe (one sendto per message).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

void core_notify_init(void)
{
    const char *e = getenv("NOTIFY_SOCKET");
    if (!e || !*e)
        return;
    size_t n = strlen(e);
    if ((e[0] != '/' && e[0] != '@') || n < 2 || n >= sizeof notify_addr.sun_path) {
        mdb_log(NULL, MDB_LOG_WARN, "NOTIFY_SOCKET is not a usable socket path; not notifying");
        unsetenv("NOTIFY_SOCKET");
        return;
    }
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, e, n);
    if (e[0] == '@')
        notify_addr.sun_path[0] = 0; /* abstract namespace: no terminating NUL counted */
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd < 0)
        mdb_log(NULL, MDB_LOG_WARN, "cannot open the notification socket: %s", strerror(errno));
    unsetenv("NOTIFY_SOCKET");
}

void core_notify(const char *fmt, ...)
{
    if (notify_fd < 0)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    if (sendto(notify_fd, msg, len, MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
               notify_len) < 0)
        mdb_log(NULL, MDB_LOG_DEBUG, "notification not delivered: %s", strerror(errno));
}

void core_notify_close(void)
{
    if (notify_fd >= 0)
        close(notify_fd);
    notify_fd = -1;
}
