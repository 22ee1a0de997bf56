/*
 * metrics: the optional plain-HTTP listener for Prometheus (metrics.listen,
 * off by default). It answers GET /metrics without authentication, as
 * exporters usually do, and nothing else: bind it to a loopback or
 * management address. Declared in mx.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mx.h"

/* "host:port" or "[v6]:port" into a socket address. 0 or -EINVAL. */
static int mx_parse_listen(const char *spec, struct sockaddr_storage *ss, bool *v6)
{
    char host[64];
    const char *colon;
    memset(ss, 0, sizeof *ss);
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof host)
            return -EINVAL;
        snprintf(host, sizeof host, "%.*s", (int)(end - spec - 1), spec + 1);
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host)
            return -EINVAL;
        snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
    }
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (*e || colon[1] == 0 || port < 1 || port > 65535)
        return -EINVAL;
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *v6 = true;
        return 0;
    }
    return -EINVAL;
}

static enum MHD_Result mx_reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                                char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

#define MX_JSON_ERROR(code, text) "{\"statusCode\":" #code ",\"error\":\"" text "\"}"

static enum MHD_Result mx_listen_access(void *cls, struct MHD_Connection *c, const char *url,
                                        const char *method, const char *version, const char *upload,
                                        size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload;
    if (*con_cls == NULL) { /* headers only: answer on the next call */
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_size) { /* no route takes a body: discard it */
        *upload_size = 0;
        return MHD_YES;
    }
    static const char nf[] = MX_JSON_ERROR(404, "Not found: this listener serves GET /metrics");
    static const char na[] = MX_JSON_ERROR(405, "Method not allowed (GET /metrics only)");
    if (strcmp(url, "/metrics") != 0)
        return mx_reply(c, MHD_HTTP_NOT_FOUND, "application/json", (char *)nf, sizeof nf - 1,
                        MHD_RESPMEM_PERSISTENT);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return mx_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json", (char *)na,
                        sizeof na - 1, MHD_RESPMEM_PERSISTENT);
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_metrics_render(&b);
    if (b.oom) {
        mdb_buf_free(&b);
        return MHD_NO;
    }
    size_t len;
    char *text = mdb_buf_take(&b, &len);
    return mx_reply(c, MHD_HTTP_OK, MX_CONTENT_TYPE, text, len, MHD_RESPMEM_MUST_FREE);
}

/* Start the listener; NULL with a log line when it cannot. */
struct MHD_Daemon *mx_listen_start(mdb_ctx *ctx, const char *spec)
{
    struct sockaddr_storage ss;
    bool v6 = false;
    if (mx_parse_listen(spec, &ss, &v6) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR,
                "listen = '%s': expected an IP address and a port, e.g. 127.0.0.1:9538 or "
                "[::1]:9538",
                spec);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    uint16_t port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, port, NULL, NULL, mx_listen_access, NULL, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_END);
    if (!d) {
        mdb_log(ctx, MDB_LOG_ERROR, "cannot serve metrics on %s (address in use or not local?)",
                spec);
        return NULL;
    }
    mdb_log(ctx, MDB_LOG_INFO,
            "serving GET /metrics without authentication on http://%s (metrics.listen)", spec);
    return d;
}
