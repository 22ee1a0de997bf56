/*
 * auth-jwt internals that need no HTTP: scope matching, tokens, principals,
 * the revocation list and the rate limiter. Unit-tested on their own.
 */
#ifndef AUTH_CORE_H
#define AUTH_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moltendb/auth.h>
#include <moltendb/doc.h>
#include <moltendb/uuid.h>

#define AUTH_MAX_TOKEN 8192       /* bytes of a bearer token we even look at */
#define AUTH_MAX_SCOPES 1024      /* scopes per token */
#define AUTH_MAX_SCOPE_LEN 512    /* bytes per scope */
#define AUTH_MAX_SUBJECT 256      /* bytes of sub / client_id */
#define AUTH_LEEWAY_S 5           /* expiry leeway (policy: at most 5 s) */
#define AUTH_MAX_TTL_S 31536000LL /* longest token lifetime: one year */

/* a + b, held at INT64_MIN / INT64_MAX instead of overflowing: token times
 * are client input (a revocation "exp" near INT64_MAX must not wrap to a
 * deadline in the past). */
static inline int64_t auth_add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* ---- scopes ---------------------------------------------------------------
 * "action:collection:key"; "*:*:*" is admin. Key patterns: "*", "prefix*",
 * or an exact key. */
bool auth_scope_valid(const char *scope);
bool auth_scope_allows(const char *scope, const char *action, const char *coll, const char *key);
bool auth_scopes_allow(const char *const *scopes, size_t n, const char *action, const char *coll,
                       const char *key);
/* Visit the key-level patterns of `scopes` for (action, coll): exact keys
 * and "prefix*" patterns (prefix=true, len excludes the '*'). Collection-
 * wide patterns ("*") are not visited; collection "*" counts for every coll. */
void auth_each_key_scope(const char *const *scopes, size_t n, const char *action, const char *coll,
                         mdb_key_scope_fn fn, void *ud);
const char *auth_action_name(mdb_action a);

/* ---- principals --------------------------------------------------------------
 * One allocation holding the public struct and its strings; refcounted so
 * the token cache and requests can share it. */
typedef struct auth_principal {
    mdb_principal pub; /* first: a mdb_principal* is an auth_principal* */
    _Atomic int refs;
} auth_principal;

auth_principal *auth_principal_new(const char *sub, const char *jti, int64_t exp,
                                   const char *const *scopes, size_t n);
void auth_principal_ref(auth_principal *p);
void auth_principal_unref(auth_principal *p);

/* ---- tokens (HS256 JWT via libjwt) ---------------------------------------------- */
/* A new compact JWS (malloc; caller frees) or NULL. jti_out gets the new id. */
char *auth_token_make(const unsigned char *key, size_t keylen, const char *sub,
                      const char *const *scopes, size_t n, int64_t now, int64_t ttl,
                      char jti_out[37]);
typedef enum auth_verify {
    AUTH_OK = 0,
    AUTH_INVALID = 1, /* bad signature, format, alg, claims, or expired */
    AUTH_EMPTY_JTI = 2,
    AUTH_EXPIRED = 3 /* valid signature but expired beyond the leeway */
} auth_verify;
/* Verify and decode; *out is a new principal on AUTH_OK. */
auth_verify auth_token_verify(const unsigned char *key, size_t keylen, const char *token,
                              size_t len, int64_t now, auth_principal **out);
void auth_uuid4(char out[37]);

/* ---- revocation list ---------------------------------------------------------------- */
typedef struct auth_revoked auth_revoked;
/* path NULL = memory only. */
auth_revoked *auth_revoked_new(const char *path, const unsigned char *key, size_t keylen);
void auth_revoked_free(auth_revoked *r);
/* Read the file if it exists. -EBADMSG (with *why) when it fails its check. */
int auth_revoked_load(auth_revoked *r, int64_t now, const char **why);
/* Add (or extend) an entry and persist. 0 or -errno (persisting failed).
 * *existed (nullable) tells whether the jti was already revoked, so two
 * concurrent refreshes of one token cannot both succeed. */
int auth_revoked_add(auth_revoked *r, const char *jti, int64_t deadline, bool *existed);
/* Undo an add whose persisting failed (memory only; no file write). */
void auth_revoked_remove(auth_revoked *r, const char *jti);
bool auth_revoked_has(auth_revoked *r, const char *jti);
/* Drop entries whose deadline passed; persist when something changed. */
int auth_revoked_prune(auth_revoked *r, int64_t now);
size_t auth_revoked_count(auth_revoked *r);

/* ---- rate limiter ---------------------------------------------------------------------- */
typedef struct auth_limiter auth_limiter;
auth_limiter *auth_limiter_new(int64_t limit, int64_t window_s, size_t max_peers);
void auth_limiter_free(auth_limiter *l);
/* 0 = admitted; else the seconds until the window resets (>= 1). */
int64_t auth_limiter_hit(auth_limiter *l, const char *peer, int64_t now_ms);
size_t auth_limiter_tracked(auth_limiter *l);
/* Forget every peer whose window has ended (periodic; bounded work per shard). */
void auth_limiter_sweep(auth_limiter *l, int64_t now_ms);

#endif
