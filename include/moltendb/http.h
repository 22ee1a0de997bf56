/*
 * moltendb SDK: HTTP requests, replies, routes and request gates.
 *
 * A request object lives from the arrival of its headers until its reply
 * has been queued; the core owns it. Route handlers and gates run on the
 * HTTP pool threads, many at once: they must be reentrant.
 *
 * Pipeline of one request:
 *   1. headers arrive; the route is matched (404/405 JSON otherwise, after
 *      the ACCEPT gates); CORS pre-flights are answered by the core
 *   2. ACCEPT gates run for every request (rate limiting)
 *   3. AUTH gates run for routes not registered MDB_ROUTE_PUBLIC
 *   4. the body is read, bounded by --max-body-size (413 beyond it)
 *   5. the handler runs and replies
 * Gates run before the body is read, so a refused request costs no upload.
 */
#ifndef MOLTENDB_HTTP_H
#define MOLTENDB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_object;
typedef struct mdb_ctx mdb_ctx;
typedef struct mdb_req mdb_req;

enum {
    MDB_METHOD_GET = 1u << 0,
    MDB_METHOD_POST = 1u << 1,
    MDB_METHOD_PUT = 1u << 2,
    MDB_METHOD_DELETE = 1u << 3,
    MDB_METHOD_PATCH = 1u << 4,
    MDB_METHOD_HEAD = 1u << 5,
    MDB_METHOD_OPTIONS = 1u << 6
};

/* Route flags. */
#define MDB_ROUTE_PUBLIC 0x1u /* no AUTH gate (health, login) */

/* ---- request accessors -----------------------------------------------------
 * Returned strings are owned by the request and valid until the reply is
 * queued. Lookups of headers are case-insensitive. */
unsigned mdb_req_method(const mdb_req *r); /* one MDB_METHOD_* bit */
const char *mdb_req_method_str(const mdb_req *r);
const char *mdb_req_path(const mdb_req *r);
/* Value of a "{name}" segment of the matched route pattern (URL-decoded). */
const char *mdb_req_param(const mdb_req *r, const char *name);
const char *mdb_req_query(const mdb_req *r, const char *name);
const char *mdb_req_header(const mdb_req *r, const char *name);
/* Peer address as text ("127.0.0.1", "::1"). Never taken from headers. */
const char *mdb_req_peer(const mdb_req *r);
/* Addresses and networks (for trusted-proxy lists and the like). IPv4 is
 * held as IPv4-mapped IPv6 (::ffff:a.b.c.d), so "127.0.0.1" and
 * "::ffff:127.0.0.1" are the same address. */
typedef struct mdb_net {
    unsigned char addr[16];
    unsigned bits; /* prefix length over the 128-bit form */
} mdb_net;
bool mdb_ip_parse(const char *s, unsigned char out[16]);
/* "ip" or "ip/len" (CIDR); false when malformed. */
bool mdb_net_parse(const char *s, mdb_net *out);
bool mdb_net_contains(const mdb_net *n, const unsigned char ip[16]);
/* A comma-separated list of networks (spaces allowed) into *out (malloc'd,
 * the caller frees; NULL for an empty list) and *n. 0, -EINVAL when an
 * entry does not parse, -ENOMEM. */
int mdb_net_list_parse(const char *list, mdb_net **out, size_t *n);
/* Raw body (NUL-terminated for convenience); len 0 when none. Only in handlers. */
const char *mdb_req_body(const mdb_req *r, size_t *len_out);
bool mdb_req_has_body(const mdb_req *r);
/* The body parsed as JSON whatever Content-Type says, cached, owned by the
 * request (do not put it). Strict: RFC 8259 grammar, RFC 3629 UTF-8, no NUL
 * in object keys; integers beyond 64 bits become the nearest double. On
 * failure returns NULL and replies 400 itself (malformed JSON or nesting too
 * deep); the handler just returns. */
struct json_object *mdb_req_json(mdb_req *r);
/* Since ABI 1.5. mdb_req_json for bodies that carry batches: each root
 * member named in `members` (NULL-terminated) whose value is an array or
 * object of more than `max` elements is cut to its first max + 1 elements
 * before the tree is built. The handler's own "more than max" check still
 * fires, but a 10 MB batch of millions of tiny elements never becomes
 * millions of json-c objects. The first of the two calls on a request
 * decides; later calls return the cached tree. */
struct json_object *mdb_req_json_bounded(mdb_req *r, const char *const *members, size_t max);
/* Scratch memory freed with the request (8-byte aligned). NULL on OOM. */
void *mdb_req_alloc(mdb_req *r, size_t n);
char *mdb_req_strdup(mdb_req *r, const char *s);

/* Opaque per-request value set by a gate for handlers (e.g. the auth
 * principal). The request owns it after the call and runs free_fn at the end. */
void mdb_req_set_attr(mdb_req *r, const char *name, void *value, void (*free_fn)(void *));
void *mdb_req_attr(const mdb_req *r, const char *name);

/* ---- replies ---------------------------------------------------------------
 * Exactly one reply per request; a second one is ignored and logged. Every
 * reply gets the security headers and, when configured, CORS headers. */
/* Takes ownership of `obj` (puts it after serialising). */
void mdb_reply_json(mdb_req *r, unsigned status, struct json_object *obj);
/* Takes ownership of a malloc()ed body. */
void mdb_reply_take(mdb_req *r, unsigned status, const char *content_type, char *body, size_t len);
/* Copies the body. */
void mdb_reply_copy(mdb_req *r, unsigned status, const char *content_type, const char *body,
                    size_t len);
/* The error envelope {"statusCode":status,"error":text}. */
void mdb_reply_error(mdb_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Error envelope plus extra members (taken; may be NULL). */
void mdb_reply_error_ex(mdb_req *r, unsigned status, struct json_object *extra, const char *text);
/* Extra response header (copied); call before replying. */
void mdb_reply_header(mdb_req *r, const char *name, const char *value);
bool mdb_req_replied(const mdb_req *r);

/* ---- long-running handlers -------------------------------------------------
 * Since ABI 1.4. A connection is served by one HTTP thread, so a handler
 * that runs long (a scan of a large collection, a complex query) delays
 * every request queued behind it on that thread, health checks included.
 * Such a handler calls mdb_req_defer() before doing the work: when it
 * returns true the handler returns at once, without replying, and the core
 * calls the same handler again, for the same request, on a thread of the
 * query pool (core setting query-threads; lower CPU priority), where
 * mdb_req_defer() returns false and the handler does its work as usual.
 * It returns false too when the request already has a reply, outside a
 * handler, or when no pool runs: the handler then simply goes on. Cheap
 * requests should not defer (the hand-over costs a thread switch). */
bool mdb_req_defer(mdb_req *r);

/* ---- protocol upgrades (WebSocket) -----------------------------------------
 * Since ABI 1.3. A handler answers 101 Switching Protocols with
 * mdb_reply_upgrade() after adding the protocol's headers (Upgrade,
 * Sec-WebSocket-Accept...) with mdb_reply_header(). Once the 101 is on the
 * wire, fn runs once on an HTTP thread and must not block: `fd` is a
 * connected stream socket (under TLS a local socket the core encrypts
 * for), `extra` (borrowed for the call) holds bytes the client already
 * sent after its request. From then on the module owns the connection and
 * must end it with mdb_upgrade_close(u) exactly once, never close(fd);
 * every upgraded connection must be closed before the HTTP server stops
 * (see mdb_hook_shutdown in module.h). */
typedef struct mdb_upgrade mdb_upgrade;
typedef void (*mdb_upgrade_fn)(mdb_upgrade *u, int fd, const char *extra, size_t extra_len,
                               void *ud);
void mdb_reply_upgrade(mdb_req *r, mdb_upgrade_fn fn, void *ud);
/* Thread-safe; u is gone afterwards. */
void mdb_upgrade_close(mdb_upgrade *u);

/* ---- routes ----------------------------------------------------------------
 * Only during init(). Pattern segments "{name}" match one non-empty path
 * segment. Literal segments win over parameters; registering the same
 * method and pattern twice fails. The handler must reply (500 otherwise). */
typedef void (*mdb_route_fn)(mdb_req *r, void *ud);
int mdb_route_add(mdb_ctx *ctx, unsigned methods, const char *pattern, unsigned flags,
                  mdb_route_fn fn, void *ud);

/* ---- gates ------------------------------------------------------------------
 * Only during init(). Lower priority runs first; equal priorities run in
 * module load order. A gate returns MDB_GATE_CONTINUE, or replies and
 * returns MDB_GATE_DONE to stop the request there. */
typedef enum mdb_gate_phase {
    MDB_GATE_ACCEPT = 1, /* every request, before routing results are acted on */
    MDB_GATE_AUTH = 2    /* matched, non-public routes */
} mdb_gate_phase;
typedef enum mdb_gate_result { MDB_GATE_CONTINUE = 0, MDB_GATE_DONE = 1 } mdb_gate_result;
typedef mdb_gate_result (*mdb_gate_fn)(mdb_req *r, void *ud);
int mdb_gate_add(mdb_ctx *ctx, mdb_gate_phase phase, int priority, mdb_gate_fn fn, void *ud);

#ifdef __cplusplus
}
#endif
#endif
