/*
 * moltendb SDK: the "auth" service and the request principal.
 *
 * The auth provider (auth-jwt) registers an AUTH gate that authenticates
 * every non-public route and stores the caller as the request attribute
 * MDB_ATTR_PRINCIPAL. Other modules never parse tokens: they read the
 * principal and ask the service whether it may act.
 */
#ifndef MOLTENDB_AUTH_H
#define MOLTENDB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_AUTH_SERVICE "auth"
#define MDB_ATTR_PRINCIPAL "principal"

/* Owned by the auth provider; read-only for everyone else. */
typedef struct mdb_principal {
    const char *subject; /* "sub": user or client id */
    const char *jti;     /* token id */
    int64_t expires_at;  /* unix seconds */
    bool admin;          /* holds "*:*:*" */
    size_t nscopes;
    const char *const *scopes; /* "action:collection:key" */
} mdb_principal;

typedef enum mdb_action { MDB_ACT_READ = 1, MDB_ACT_WRITE = 2, MDB_ACT_DELETE = 3 } mdb_action;

/* Visits one key pattern of a scope: prefix=true for "abc*" (pattern "abc"),
 * false for a concrete key. Collection-wide "*" patterns are not visited. */
typedef void (*mdb_key_scope_fn)(const char *pattern, size_t len, bool prefix, void *ud);

/* Version 1. Every function is thread-safe. */
typedef struct mdb_auth_service {
    size_t size;
    /* Verify a bearer token (without "Bearer "). 0 and a principal the
     * caller frees with principal_free(), or -EACCES with the reason text
     * of the 401 body ("Invalid or expired token", "Token has been revoked"...). */
    int (*authenticate)(void *self, const char *token, size_t len, mdb_principal **out,
                        const char **why_out);
    void (*principal_free)(void *self, mdb_principal *p);
    /* May p do `act` on `key` of `coll`? key "*" asks for collection-level access. */
    bool (*allowed)(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                    const char *key);
    /* Visit p's key-level patterns for act on coll (key-scoped reads). */
    void (*each_key_scope)(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                           mdb_key_scope_fn fn, void *ud);
    /* Has this token id been revoked since? (long-lived connections) */
    bool (*is_revoked)(void *self, const char *jti);
} mdb_auth_service;

static inline const mdb_principal *mdb_req_principal(const mdb_req *r)
{
    return (const mdb_principal *)mdb_req_attr(r, MDB_ATTR_PRINCIPAL);
}

#ifdef __cplusplus
}
#endif
#endif
