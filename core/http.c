/*
 * HTTP(S) server on libmicrohttpd: thread pool + epoll, optional TLS via
 * GnuTLS, bounded bodies, the request object and replies of the SDK, gates,
 * CORS, security headers, and connections held (suspended) while storage
 * makes a write durable. The order of the steps: docs/architecture.md,
 * "The flow of a request".
 *
 * Ownership: a request (mdb_req) is created at the first callback for a
 * request and freed by the completion callback; it owns its path copy, body,
 * parsed JSON, scratch allocations, attributes and reply until the reply is
 * handed to libmicrohttpd (which then owns the body buffer).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

/* The listen socket is ours, not libmicrohttpd's: one acceptor thread hands
 * each connection to the daemon (MHD_add_connection), and stopping is
 * closing that thread and socket. libmicrohttpd 0.9.75's MHD_quiesce_daemon
 * races its own epoll workers on a thread-pool daemon and aborts the process
 * (see docs/operations.md, "Shutdown"). */
struct core_http {
    struct MHD_Daemon *d;
    core_http_opts o;
    _Atomic long inflight;
    int lfd;     /* listen socket, or -1 once closed */
    int wake[2]; /* pipe: a byte on wake[1] stops the acceptor */
    pthread_t acceptor;
    bool acceptor_running;
    /* Open connections per client address (the acceptor counts, the close
     * notification uncounts), so one address cannot take every slot. */
    pthread_mutex_t peers_mu;
    struct peer_count *peers[1024];
    mdb_net *exempt; /* o.conn_exempt, parsed */
    /* Deferred handlers (mdb_req_defer) run here, off the HTTP threads: a
     * connection stays with one HTTP thread, so a long handler on that
     * thread would hold up every request that comes after it there. */
    core_pool *pool;
    size_t nexempt;
    int64_t last_refusal_log;
};

typedef struct peer_count {
    struct peer_count *next;
    unsigned char addr[16];
    unsigned n;
} peer_count;

typedef struct req_attr {
    const char *name;
    void *value;
    void (*free_fn)(void *);
} req_attr;

typedef struct req_chunk {
    struct req_chunk *next;
    max_align_t data[];
} req_chunk;

enum { DUR_NONE = 0, DUR_WAIT = 1, DUR_DONE = 2 };
/* A handler's move to the query pool: none, asked for, queued or running. */
enum { DEF_NONE = 0, DEF_WANT, DEF_RUN };

/* Niceness of the query pool's threads: under CPU contention an HTTP thread
 * with a cheap request preempts a long query at once. */
#define QUERY_POOL_NICE 10

struct mdb_req {
    struct MHD_Connection *conn;
    core_http *h;
    unsigned method;
    const char *method_str;
    char *path;     /* as received (decoded by libmicrohttpd); after the struct */
    char *path_buf; /* split for matching; params point into it; after path */
    const core_route *route;
    const char *pnames[CORE_MAX_PARAMS];
    char *pvalues[CORE_MAX_PARAMS];
    size_t nparams;
    char peer[INET6_ADDRSTRLEN];
    char *body;
    size_t body_len, body_cap;
    bool has_body;
    size_t discarded; /* body bytes thrown away after an early reply */
    size_t declared;  /* Content-Length, when sent (already <= max_body) */
    json_object *json;
    bool json_done;
    req_attr attrs[8];
    size_t nattrs;
    req_chunk *chunks;
    /* reply */
    bool replied, queued, handled;
    bool close; /* end the connection after the reply */
    unsigned status;
    char *resp;
    size_t resp_len;
    const char *ctype;
    char *hdrs[16]; /* name, value pairs */
    size_t nhdrs;
    /* protocol upgrade (mdb_reply_upgrade) */
    mdb_upgrade_fn upg_fn;
    void *upg_ud;
    bool in_handler; /* the handler's first run, on an HTTP thread */
    int defer;       /* DEF_* */
    /* durability */
    uint64_t ticket;
    _Atomic int dur;
    int dur_status;
    int64_t t0_ns; /* arrival, for the request metrics (core/metrics.c) */
};

/* ---- request accessors -------------------------------------------------------- */
unsigned mdb_req_method(const mdb_req *r)
{
    return r->method;
}
const char *mdb_req_method_str(const mdb_req *r)
{
    return r->method_str;
}
const char *mdb_req_path(const mdb_req *r)
{
    return r->path;
}
const char *mdb_req_peer(const mdb_req *r)
{
    return r->peer;
}

const char *mdb_req_param(const mdb_req *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nparams; i++) {
        const char *p = r->pnames[i]; /* "{name}" */
        if (strlen(p) == n + 2 && strncmp(p + 1, name, n) == 0)
            return r->pvalues[i];
    }
    return NULL;
}

const char *mdb_req_query(const mdb_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *mdb_req_header(const mdb_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *mdb_req_body(const mdb_req *r, size_t *len_out)
{
    if (len_out)
        *len_out = r->body_len;
    return r->body ? r->body : "";
}

bool mdb_req_has_body(const mdb_req *r)
{
    return r->has_body;
}

void *mdb_req_alloc(mdb_req *r, size_t n)
{
    req_chunk *c = malloc(sizeof *c + n);
    if (!c)
        return NULL;
    c->next = r->chunks;
    r->chunks = c;
    return c->data;
}

char *mdb_req_strdup(mdb_req *r, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mdb_req_alloc(r, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void mdb_req_set_attr(mdb_req *r, const char *name, void *value, void (*free_fn)(void *))
{
    for (size_t i = 0; i < r->nattrs; i++) {
        if (strcmp(r->attrs[i].name, name) == 0) {
            if (r->attrs[i].free_fn)
                r->attrs[i].free_fn(r->attrs[i].value);
            r->attrs[i].value = value;
            r->attrs[i].free_fn = free_fn;
            return;
        }
    }
    if (r->nattrs == sizeof r->attrs / sizeof *r->attrs) {
        mdb_log(NULL, MDB_LOG_ERROR, "too many request attributes; '%s' dropped", name);
        if (free_fn)
            free_fn(value);
        return;
    }
    r->attrs[r->nattrs++] = (req_attr){name, value, free_fn};
}

void *mdb_req_attr(const mdb_req *r, const char *name)
{
    for (size_t i = 0; i < r->nattrs; i++)
        if (strcmp(r->attrs[i].name, name) == 0)
            return r->attrs[i].value;
    return NULL;
}

/* Deepest level a value of a request body may sit at (root = 0). */
#define MDB_MAX_JSON_LEVEL 32

static json_object *req_json(mdb_req *r, const char *const *bound, size_t bound_max)
{
    if (r->json_done)
        return r->json;
    r->json_done = true;
    if (!r->body_len) {
        mdb_reply_error(r, 400, "Request body is empty: expected a JSON object");
        return NULL;
    }
    core_json_opts o = {.max_level = MDB_MAX_JSON_LEVEL, .bound = bound, .bound_max = bound_max};
    core_json_err err;
    json_object *j = core_json_parse(r->body, r->body_len, &o, &err);
    if (!j) {
        if (err.status == CORE_JSON_OK)
            mdb_reply_error(r, 400, "Invalid JSON body: a bare null is not accepted");
        else if (err.status == CORE_JSON_DEEP)
            mdb_reply_error(r, 400, "JSON nesting too deep (max %d levels)", MDB_MAX_JSON_LEVEL);
        else if (err.status == CORE_JSON_NOMEM)
            mdb_reply_error(r, 500, "Out of memory");
        else
            mdb_reply_error(r, 400, "Invalid JSON body: %s (at byte %zu)", err.why, err.at);
        return NULL;
    }
    r->json = j;
    return j;
}

json_object *mdb_req_json(mdb_req *r)
{
    return req_json(r, NULL, 0);
}

json_object *mdb_req_json_bounded(mdb_req *r, const char *const *members, size_t max)
{
    return req_json(r, members, max);
}

/* ---- replies ----------------------------------------------------------------------- */
static void set_reply(mdb_req *r, unsigned status, const char *ctype, char *body, size_t len)
{
    if (r->replied) {
        mdb_log(NULL, MDB_LOG_ERROR, "second reply to %s %s ignored", r->method_str, r->path);
        free(body);
        return;
    }
    r->replied = true;
    r->status = status;
    r->ctype = ctype;
    r->resp = body;
    r->resp_len = len;
}

void mdb_reply_take(mdb_req *r, unsigned status, const char *content_type, char *body, size_t len)
{
    set_reply(r, status, content_type, body, len);
}

void mdb_reply_copy(mdb_req *r, unsigned status, const char *content_type, const char *body,
                    size_t len)
{
    char *b = malloc(len + 1);
    if (!b) {
        set_reply(r, 500, "application/json", NULL, 0);
        return;
    }
    memcpy(b, body, len);
    b[len] = 0;
    set_reply(r, status, content_type, b, len);
}

void mdb_reply_json(mdb_req *r, unsigned status, json_object *obj)
{
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (s)
        mdb_reply_copy(r, status, "application/json", s, len);
    else
        set_reply(r, 500, "application/json", NULL, 0);
    json_object_put(obj);
}

void mdb_reply_error_ex(mdb_req *r, unsigned status, json_object *extra, const char *text)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_buf_printf(&b, "{\"statusCode\":%u,\"error\":", status);
    core_json_str_utf8(&b, text, strlen(text));
    if (extra) {
        json_object_object_foreach(extra, k, v)
        {
            mdb_buf_putc(&b, ',');
            mdb_buf_json_str(&b, k, strlen(k));
            mdb_buf_putc(&b, ':');
            mdb_buf_puts(&b, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
        }
        json_object_put(extra);
    }
    mdb_buf_putc(&b, '}');
    size_t len;
    char *body = b.oom ? NULL : mdb_buf_take(&b, &len);
    if (!body) {
        mdb_buf_free(&b);
        set_reply(r, 500, "application/json", NULL, 0);
        return;
    }
    set_reply(r, status, "application/json", body, len);
}

void mdb_reply_error(mdb_req *r, unsigned status, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    mdb_reply_error_ex(r, status, NULL, text);
}

void mdb_reply_header(mdb_req *r, const char *name, const char *value)
{
    if (r->nhdrs + 2 > sizeof r->hdrs / sizeof *r->hdrs)
        return;
    r->hdrs[r->nhdrs] = mdb_req_strdup(r, name);
    r->hdrs[r->nhdrs + 1] = mdb_req_strdup(r, value);
    if (r->hdrs[r->nhdrs] && r->hdrs[r->nhdrs + 1])
        r->nhdrs += 2;
}

bool mdb_req_replied(const mdb_req *r)
{
    return r->replied;
}

void mdb_reply_upgrade(mdb_req *r, mdb_upgrade_fn fn, void *ud)
{
    set_reply(r, MHD_HTTP_SWITCHING_PROTOCOLS, NULL, NULL, 0);
    if (r->status == MHD_HTTP_SWITCHING_PROTOCOLS && !r->resp) {
        r->upg_fn = fn;
        r->upg_ud = ud;
    }
}

bool mdb_req_defer(mdb_req *r)
{
    if (!r->in_handler || r->replied || r->defer != DEF_NONE || !r->h->pool)
        return false;
    r->defer = DEF_WANT;
    return true;
}

void mdb_upgrade_close(mdb_upgrade *u)
{
    MHD_upgrade_action((struct MHD_UpgradeResponseHandle *)u, MHD_UPGRADE_ACTION_CLOSE);
}

/* libmicrohttpd sent the 101: hand the socket to the module. The request
 * is still alive here (its completion callback comes later). */
static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    mdb_req *r = cls;
    (void)conn;
    (void)con_cls;
    r->upg_fn((mdb_upgrade *)urh, sock, extra, extra_len, r->upg_ud);
}

/* ---- CORS and headers ----------------------------------------------------------------- */
static bool origin_allowed(const char *list, const char *origin)
{
    size_t ol = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && p[n - 1] == ' ')
            n--;
        if (n && n == ol && strncmp(p, origin, n) == 0)
            return true;
        p += n;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

static void add_common_headers(mdb_req *r, struct MHD_Response *resp)
{
    static const char *const sec[][2] = {
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"X-XSS-Protection", "1; mode=block"},
        {"Strict-Transport-Security", "max-age=31536000; includeSubDomains"},
        {"Referrer-Policy", "no-referrer"},
        {"Permissions-Policy", "geolocation=(), microphone=(), camera=()"},
        {"Content-Security-Policy", "default-src 'self'; script-src 'self'; object-src 'none'"},
    };
    for (size_t i = 0; i < sizeof sec / sizeof *sec; i++)
        MHD_add_response_header(resp, sec[i][0], sec[i][1]);
    const char *origin = mdb_req_header(r, "Origin");
    const char *cors = r->h->o.cors_origin;
    if (origin && cors && *cors) {
        if (strcmp(cors, "*") == 0) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
        } else if (origin_allowed(cors, origin)) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
            MHD_add_response_header(resp, "Vary", "Origin");
        }
    }
}

static enum MHD_Result queue_reply(mdb_req *r)
{
    if (r->queued)
        return MHD_YES;
    if (!r->replied)
        mdb_reply_error(r, 500, "Internal error: the handler did not reply");
    if (!r->resp && r->status >= 400) {
        /* An error reply whose body could not be built (OOM): plain text. */
        r->resp = strdup("{\"statusCode\":500,\"error\":\"out of memory\"}");
        r->resp_len = r->resp ? strlen(r->resp) : 0;
        r->ctype = "application/json";
    }
    struct MHD_Response *resp =
        r->upg_fn ? MHD_create_response_for_upgrade(on_upgraded, r)
                  : MHD_create_response_from_buffer(r->resp_len, r->resp ? r->resp : (char *)"",
                                                    r->resp ? MHD_RESPMEM_MUST_FREE
                                                            : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    r->resp = NULL; /* libmicrohttpd owns it now */
    if (r->ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    for (size_t i = 0; i + 1 < r->nhdrs; i += 2)
        MHD_add_response_header(resp, r->hdrs[i], r->hdrs[i + 1]);
    add_common_headers(r, resp);
    if (r->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    return rc;
}

/* ---- request life cycle ----------------------------------------------------------------- */
static unsigned method_bit(const char *m)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"GET", MDB_METHOD_GET},        {"POST", MDB_METHOD_POST},   {"PUT", MDB_METHOD_PUT},
             {"DELETE", MDB_METHOD_DELETE},  {"PATCH", MDB_METHOD_PATCH}, {"HEAD", MDB_METHOD_HEAD},
             {"OPTIONS", MDB_METHOD_OPTIONS}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(m, t[i].name) == 0)
            return t[i].bit;
    return 0;
}

static void allow_header(unsigned methods, char *out, size_t n)
{
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < 7; i++) {
        if (methods & (1u << i)) {
            int w = snprintf(out + o, n - o, "%s%s", o ? ", " : "", names[i]);
            if (w < 0 || (size_t)w >= n - o)
                break;
            o += (size_t)w;
        }
    }
}

static mdb_gate_result run_gates(mdb_req *r, mdb_gate_phase phase)
{
    core_registry *reg = &core_g->reg;
    for (size_t i = 0; i < reg->ngates; i++) {
        core_hook *g = &reg->gates[i];
        if (g->phase != (int)phase)
            continue;
        if (((mdb_gate_fn)g->fn)(r, g->ud) == MDB_GATE_DONE || r->replied) {
            if (!r->replied)
                mdb_reply_error(r, 500, "Internal error: a gate stopped the request silently");
            return MDB_GATE_DONE;
        }
    }
    return MDB_GATE_CONTINUE;
}

static void req_free(mdb_req *r)
{
    for (size_t i = 0; i < r->nattrs; i++)
        if (r->attrs[i].free_fn)
            r->attrs[i].free_fn(r->attrs[i].value);
    while (r->chunks) {
        req_chunk *n = r->chunks->next;
        free(r->chunks);
        r->chunks = n;
    }
    json_object_put(r->json);
    free(r->body);
    free(r->resp);
    free(r);
}

/* First callback: headers only. Decide everything that needs no body. */
typedef struct framing {
    const char *cl; /* the first Content-Length */
    bool cl_differs, has_te;
} framing;

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    framing *f = cls;
    (void)kind;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (!f->cl)
            f->cl = value;
        else if (strcmp(f->cl, value) != 0)
            f->cl_differs = true;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->has_te = true;
    }
    return MHD_YES;
}

/* RFC 9112 section 6.3: a request whose length is ambiguous (two different
 * Content-Lengths, or Content-Length with Transfer-Encoding, which
 * libmicrohttpd reads as chunked) may be an attempt to smuggle a second
 * request past a proxy: refuse it and close the connection, so nothing
 * that follows on it is read as a request. */
static bool framing_refused(mdb_req *r)
{
    framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, framing_header, &f);
    const char *why = f.cl_differs         ? "conflicting Content-Length headers"
                      : (f.cl && f.has_te) ? "both Content-Length and Transfer-Encoding"
                                           : NULL;
    if (!why)
        return false;
    r->close = true;
    mdb_reply_error(r, 400, "Bad request: %s", why);
    return true;
}

static void req_begin(mdb_req *r)
{
    unsigned allow = 0;
    if (framing_refused(r))
        return;
    r->route = core_registry_match(&core_g->reg, r->method, r->path_buf, r->pnames, r->pvalues,
                                   &r->nparams, &allow);
    if (run_gates(r, MDB_GATE_ACCEPT) == MDB_GATE_DONE)
        return;
    if (r->method == MDB_METHOD_OPTIONS && !r->route) {
        const char *origin = mdb_req_header(r, "Origin");
        const char *want = mdb_req_header(r, "Access-Control-Request-Method");
        char allow_s[96];
        allow_header(allow ? allow | MDB_METHOD_OPTIONS : MDB_METHOD_OPTIONS, allow_s,
                     sizeof allow_s);
        if (origin && want && allow) {
            const char *hdrs = mdb_req_header(r, "Access-Control-Request-Headers");
            mdb_reply_header(r, "Access-Control-Allow-Methods", allow_s);
            mdb_reply_header(r, "Access-Control-Allow-Headers",
                             hdrs ? hdrs : "authorization, content-type");
            mdb_reply_header(r, "Access-Control-Max-Age", "86400");
            mdb_reply_copy(r, 204, NULL, "", 0);
            return;
        }
        if (allow) {
            mdb_reply_header(r, "Allow", allow_s);
            mdb_reply_copy(r, 204, NULL, "", 0);
            return;
        }
    }
    if (!r->route) {
        if (allow) {
            char allow_s[96];
            allow_header(allow, allow_s, sizeof allow_s);
            mdb_reply_header(r, "Allow", allow_s);
            mdb_reply_error(r, 405, "Method %s is not allowed on %s (allowed: %s)", r->method_str,
                            r->path, allow_s);
        } else {
            mdb_reply_error(r, 404, "Not found: %s %s", r->method_str, r->path);
        }
        return;
    }
    if (!(r->route->flags & MDB_ROUTE_PUBLIC) && run_gates(r, MDB_GATE_AUTH) == MDB_GATE_DONE)
        return;
    const char *cl = mdb_req_header(r, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end || errno || n > r->h->o.max_body) {
            mdb_reply_error(r, 413, "Payload too large (max %zu bytes)", r->h->o.max_body);
            return;
        }
        r->declared = (size_t)n;
    }
}

static void append_body(mdb_req *r, const char *data, size_t n)
{
    r->has_body = true;
    if (r->replied)
        return;
    if (r->body_len + n > r->h->o.max_body) {
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        mdb_reply_error(r, 413, "Payload too large (max %zu bytes)", r->h->o.max_body);
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        /* A declared length sizes the buffer exactly (checked against the
         * limit in req_begin); otherwise start small and double. */
        size_t cap = r->body_cap ? r->body_cap : (r->declared ? r->declared + 1 : 256);
        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (cap > r->h->o.max_body + 1)
            cap = r->h->o.max_body + 1;
        char *nb = realloc(r->body, cap);
        if (!nb) {
            mdb_reply_error(r, 500, "out of memory reading the request body");
            return;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
}

void core_http_wait_durable(mdb_req *r, uint64_t ticket)
{
    if (ticket > r->ticket)
        r->ticket = ticket;
}

/* A deferred handler's second run, on a query pool thread; the connection
 * is suspended meanwhile, so nothing else touches the request. */
static void deferred_run(void *arg)
{
    mdb_req *r = arg;
    r->route->fn(r, r->route->ud);
    MHD_resume_connection(r->conn); /* r may be gone from here on */
}

static void deferred_cancel(void *arg)
{
    mdb_req *r = arg;
    if (!r->replied)
        mdb_reply_error(r, 503, "Service unavailable: the server is shutting down");
    MHD_resume_connection(r->conn);
}

static void on_durable(void *arg, int status)
{
    mdb_req *r = arg;
    r->dur_status = status;
    atomic_store(&r->dur, DUR_DONE);
    MHD_resume_connection(r->conn);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    core_http *h = cls;
    mdb_req *r = *con_cls;
    (void)version;
    if (!r) {
        /* The request and both copies of its path in one allocation. */
        size_t ul = strlen(url) + 1;
        r = calloc(1, sizeof *r + 2 * ul);
        if (!r)
            return MHD_NO;
        r->conn = conn;
        r->h = h;
        r->method_str = method;
        r->method = method_bit(method);
        r->path = (char *)(r + 1);
        r->path_buf = r->path + ul;
        memcpy(r->path, url, ul);
        memcpy(r->path_buf, url, ul);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->peer,
                          sizeof r->peer);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->peer,
                          sizeof r->peer);
        }
        *con_cls = r;
        atomic_fetch_add(&h->inflight, 1);
        r->t0_ns = core_metrics_request_begin();
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, h->o.idle_timeout_s);
        req_begin(r);
        return r->replied ? queue_reply(r) : MHD_YES;
    }
    if (*upload_size) {
        if (r->replied) {
            /* libmicrohttpd only sends a reply once the upload ends: drain
             * (never buffer) the rest, but give up on an endless upload. */
            r->discarded += *upload_size;
            *upload_size = 0;
            return r->discarded > r->h->o.max_body + (1u << 20) ? MHD_NO : MHD_YES;
        }
        append_body(r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (atomic_load(&r->dur) == DUR_DONE) {
        if (r->dur_status) {
            free(r->resp);
            r->resp = NULL;
            r->replied = false;
            mdb_reply_error(r, r->dur_status == -EROFS ? 503 : 500,
                            "Database write failed: the write could not be made durable (%s)",
                            strerror(-r->dur_status));
        }
        return queue_reply(r);
    }
    if (!r->replied && !r->handled) {
        r->handled = true;
        r->in_handler = true;
        r->route->fn(r, r->route->ud);
        r->in_handler = false;
        if (r->defer == DEF_WANT && !r->replied) {
            /* Suspended before it is queued: the pool's resume must find
             * it suspended. When the pool refuses (stopping, no memory),
             * the handler runs here after all. */
            r->defer = DEF_RUN;
            MHD_suspend_connection(conn);
            if (!core_pool_submit(h->pool, deferred_run, deferred_cancel, r))
                deferred_run(r);
            return MHD_YES;
        }
    }
    const mdb_storage_service *st = core_g->storage;
    if (r->ticket && st && st->when_durable && atomic_load(&r->dur) == DUR_NONE) {
        /* Hold the reply until storage says the write is on disk, without
         * parking this pool thread. */
        atomic_store(&r->dur, DUR_WAIT);
        MHD_suspend_connection(conn);
        int rc = st->when_durable(core_g->storage_self, r->ticket, on_durable, r);
        if (rc) {
            on_durable(r, rc);
        }
        return MHD_YES;
    }
    return queue_reply(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    core_http *h = cls;
    (void)conn;
    (void)toe;
    mdb_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    core_metrics_request_end(r->route ? (size_t)(r->route - core_g->reg.routes) : SIZE_MAX,
                             r->queued ? r->status : 0, r->body_len + r->discarded, r->resp_len,
                             r->t0_ns);
    req_free(r);
    atomic_fetch_sub(&h->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    mdb_log(NULL, MDB_LOG_DEBUG, "libmicrohttpd: %s", line);
}

/* libmicrohttpd calls this on an internal inconsistency, then expects no
 * return. Writes already acknowledged are made durable first, so that a
 * fault in the HTTP layer never costs data (the storage writer is its own
 * thread and takes no libmicrohttpd lock). */
static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    mdb_log(NULL, MDB_LOG_ERROR, "libmicrohttpd failure at %s:%u: %s; flushing storage, aborting",
            file ? file : "?", line, reason ? reason : "?");
    static atomic_flag once = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&once) && core_g && core_g->storage && core_g->storage->flush)
        core_g->storage->flush(core_g->storage_self);
    abort();
}

/* A bound, listening, non-blocking socket for host:port, or -errno. */
static int listen_socket(const core_http_opts *o, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    int family;
    if (strchr(o->host, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)o->port);
        if (inet_pton(AF_INET6, o->host, &s6->sin6_addr) != 1) {
            snprintf(err, errlen, "Invalid --host value '%s': not an IP address", o->host);
            return -EINVAL;
        }
        family = AF_INET6;
        sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)o->port);
        if (inet_pton(AF_INET, o->host, &s4->sin_addr) != 1) {
            snprintf(err, errlen, "Invalid --host value '%s': not an IP address", o->host);
            return -EINVAL;
        }
        family = AF_INET;
        sl = sizeof *s4;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create a socket for %s:%d: %s", o->host, o->port,
                 strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, SOMAXCONN)) {
        int e = errno;
        snprintf(err, errlen, "cannot serve on %s:%d: %s", o->host, o->port, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

/* The 16-byte (IPv4-mapped) form of a socket address; false when not IP. */
static bool sockaddr_bin(const struct sockaddr *sa, unsigned char out[16])
{
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* Whether connections from sa are counted against the per-address limit. */
static bool peer_limited(const core_http *h, const struct sockaddr *sa, unsigned char bin[16])
{
    if (!h->o.max_conn_per_ip || !sockaddr_bin(sa, bin))
        return false;
    for (size_t i = 0; i < h->nexempt; i++)
        if (mdb_net_contains(&h->exempt[i], bin))
            return false;
    return true;
}

static peer_count **peer_slot(core_http *h, const unsigned char bin[16])
{
    uint32_t x = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        x = (x ^ bin[i]) * 16777619u;
    peer_count **pp = &h->peers[x % (sizeof h->peers / sizeof *h->peers)];
    while (*pp && memcmp((*pp)->addr, bin, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Count one more connection from bin; false when it is at its limit. */
static bool peer_take(core_http *h, const unsigned char bin[16])
{
    bool ok = true;
    pthread_mutex_lock(&h->peers_mu);
    peer_count **pp = peer_slot(h, bin);
    if (!*pp && (*pp = calloc(1, sizeof **pp)) != NULL)
        memcpy((*pp)->addr, bin, 16);
    if (!*pp || (*pp)->n >= h->o.max_conn_per_ip)
        ok = false;
    else
        (*pp)->n++;
    pthread_mutex_unlock(&h->peers_mu);
    return ok;
}

static void peer_release(core_http *h, const unsigned char bin[16])
{
    pthread_mutex_lock(&h->peers_mu);
    peer_count **pp = peer_slot(h, bin);
    peer_count *p = *pp;
    if (p && p->n && --p->n == 0) {
        *pp = p->next;
        free(p);
    }
    pthread_mutex_unlock(&h->peers_mu);
}

/* libmicrohttpd's notice that a connection ended: uncount it. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    core_http *h = cls;
    (void)socket_context;
    if (code != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    unsigned char bin[16];
    if (ci && ci->client_addr && peer_limited(h, ci->client_addr, bin))
        peer_release(h, bin);
}

/* Accept until a byte arrives on the wake pipe. Accept errors (EMFILE when
 * out of descriptors, a peer that reset before accept) are passed over:
 * the listener never stops on its own. */
static void *acceptor_main(void *arg)
{
    core_http *h = arg;
    struct pollfd p[2] = {{.fd = h->lfd, .events = POLLIN}, {.fd = h->wake[0], .events = POLLIN}};
    int64_t last_warn = 0;
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (p[1].revents)
            break;
        if (!p[0].revents)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(h->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                int64_t now = mdb_now_ms();
                if (now - last_warn > 10000) {
                    mdb_log(NULL, MDB_LOG_WARN, "cannot accept connections: %s (see LimitNOFILE)",
                            strerror(errno));
                    last_warn = now;
                }
                /* Let connections close before trying again. */
                poll(&p[1], 1, 50);
            }
            continue;
        }
        unsigned char bin[16];
        bool counted = peer_limited(h, (struct sockaddr *)&ss, bin);
        if (counted && !peer_take(h, bin)) {
            int64_t now = mdb_now_ms();
            if (now - h->last_refusal_log > 10000) {
                char txt[INET6_ADDRSTRLEN] = "?";
                inet_ntop(AF_INET6, bin, txt, sizeof txt);
                mdb_log(NULL, MDB_LOG_WARN,
                        "connection from %s refused: it has %u open (max-connections-per-ip)", txt,
                        h->o.max_conn_per_ip);
                h->last_refusal_log = now;
            }
            close(fd);
            continue;
        }
        /* On failure libmicrohttpd has closed the socket already, and no
         * close notification follows. */
        if (MHD_add_connection(h->d, fd, (struct sockaddr *)&ss, sl) != MHD_YES && counted)
            peer_release(h, bin);
    }
    return NULL;
}

/* Stop accepting: new connections are refused from here on. Idempotent. */
static void stop_accepting(core_http *h)
{
    if (h->acceptor_running) {
        char b = 1;
        while (write(h->wake[1], &b, 1) < 0 && errno == EINTR)
            ;
        pthread_join(h->acceptor, NULL);
        h->acceptor_running = false;
    }
    if (h->lfd >= 0)
        close(h->lfd);
    h->lfd = -1;
}

static void http_free(core_http *h)
{
    /* No deferred handler may still hold a suspended connection when the
     * daemon stops (libmicrohttpd aborts then). */
    core_pool_stop(h->pool);
    if (h->d)
        MHD_stop_daemon(h->d);
    core_pool_free(h->pool);
    for (int i = 0; i < 2; i++)
        if (h->wake[i] >= 0)
            close(h->wake[i]);
    core_tls_free();
    for (size_t i = 0; i < sizeof h->peers / sizeof *h->peers; i++) {
        while (h->peers[i]) {
            peer_count *n = h->peers[i]->next;
            free(h->peers[i]);
            h->peers[i] = n;
        }
    }
    pthread_mutex_destroy(&h->peers_mu);
    free(h->exempt);
    free(h);
}

int core_http_start(core_http **out, const core_http_opts *o, char *err, size_t errlen)
{
    core_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->o = *o;
    h->lfd = h->wake[0] = h->wake[1] = -1;
    pthread_mutex_init(&h->peers_mu, NULL);
    MHD_set_panic_func(mhd_panic, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE | MHD_USE_NO_LISTEN_SOCKET;
    int rc = mdb_net_list_parse(o->conn_exempt, &h->exempt, &h->nexempt);
    if (rc)
        snprintf(err, errlen, "trusted-proxies: not a list of IP addresses or CIDR ranges: %s",
                 o->conn_exempt);
    if (!rc && !o->dev_mode) {
        /* Served through a callback so SIGHUP can replace them (core/tls.c). */
        rc = core_tls_load(o->cert_path, o->key_path, err, errlen) ? -ENOENT : 0;
        flags |= MHD_USE_TLS;
    }
    if (!rc && pipe2(h->wake, O_CLOEXEC)) {
        rc = -errno;
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
    }
    if (!rc) {
        rc = core_pool_start(&h->pool, o->query_threads ? o->query_threads : o->threads,
                             QUERY_POOL_NICE);
        if (rc)
            snprintf(err, errlen, "cannot start the query threads: %s", strerror(-rc));
    }
    if (!rc) {
        h->lfd = listen_socket(o, err, errlen);
        if (h->lfd < 0)
            rc = h->lfd;
    }
    if (rc) {
        http_free(h);
        return rc;
    }
    unsigned threads = o->threads;
    struct MHD_OptionItem opts[12];
    size_t k = 0;
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h};
    /* Until its first request arrives a connection gets the short timeout;
     * on_access then gives it the keep-alive one. */
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, o->new_conn_timeout_s, NULL};
    /* libmicrohttpd zeroes the whole per-connection pool for every request,
     * so it stays small (headers up to ~30 KiB; bigger ones get its 431). */
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 32 * 1024, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 10000, NULL};
    if (threads > 1)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    if (!o->dev_mode)
        opts[k++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)core_tls_retrieve};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot serve on %s:%d (a bad certificate/key?)", o->host, o->port);
        rc = -EINVAL;
    } else if ((rc = pthread_create(&h->acceptor, NULL, acceptor_main, h)) != 0) {
        snprintf(err, errlen, "cannot start the acceptor thread: %s", strerror(rc));
        rc = -rc;
    }
    if (rc) {
        stop_accepting(h);
        http_free(h);
        return rc;
    }
    h->acceptor_running = true;
    *out = h;
    return 0;
}

void core_http_stop(core_http *h, int timeout_ms)
{
    if (!h)
        return;
    stop_accepting(h);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&h->inflight) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= timeout_ms) {
            mdb_log(NULL, MDB_LOG_WARN, "%ld request(s) still in flight after %d ms; closing",
                    (long)atomic_load(&h->inflight), timeout_ms);
            break;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    http_free(h);
}
