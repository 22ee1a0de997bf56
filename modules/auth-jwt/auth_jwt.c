/*
 * auth-jwt: authentication and authorisation for every protected route.
 *
 *   POST /login, POST /auth/delegate, POST /auth/refresh,
 *   DELETE /auth/tokens/{jti}; an ACCEPT gate (rate limit per peer) and an
 *   AUTH gate (bearer token -> principal); the "auth" service. Texts,
 *   codes and limits: README.md ("Deliberate choices", "Configuration").
 *
 * Ownership: the module state (struct auth) is created in init() and freed
 * in destroy(); principals are refcounted (cache + requests); the root
 * password is only kept as an Argon2id hash.
 */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <moltendb/module.h>

#include "auth_core.h"

#define CACHE_SLOTS 4096
#define CACHE_LOCKS 64
#define CACHE_DIGEST crypto_shorthash_siphashx24_BYTES

/* A verified token, known by its keyed BLAKE2b digest: no token text is
 * kept, and slots cannot be aimed at without the random cache key. */
typedef struct cache_slot {
    unsigned char digest[CACHE_DIGEST];
    auth_principal *p; /* one reference owned by the slot; NULL = empty */
} cache_slot;

typedef struct auth {
    mdb_ctx *ctx;
    unsigned char *secret;
    size_t secretlen;
    char *root_user;
    unsigned char root_user_hash[32];
    char pwhash[crypto_pwhash_STRBYTES];
    int64_t root_ttl;
    auth_revoked *rev;
    auth_limiter *lim;
    int64_t limit;
    mdb_net *proxies; /* trusted-proxies */
    size_t nproxies;
    unsigned char cache_key[crypto_shorthash_siphashx24_KEYBYTES];
    cache_slot cache[CACHE_SLOTS];
    pthread_mutex_t cache_locks[CACHE_LOCKS];
    pthread_t pruner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, pruner_running;
    bool shared; /* the storage is a shared log: revocations are logged too */
    /* Each Argon2id check takes 64 MiB: bound how many run at once so a
     * burst of logins cannot exhaust memory (the rest wait their turn). */
    sem_t pwhash_slots;
    bool pwhash_sem_ok;
    /* Metrics (include/moltendb/metrics.h). */
    mdb_metric *m_logins, *m_minted, *m_revoked, *m_limited, *m_rejected;
} auth;

enum { LOGIN_OK = 0, LOGIN_FAILED = 1 };                      /* m_logins */
enum { MINT_LOGIN = 0, MINT_DELEGATE = 1, MINT_REFRESH = 2 }; /* m_minted */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- token cache: verified tokens, so the hot path skips base64 + JSON + HMAC --- */
/* SipHash-2-4 with a 128-bit output under a random per-process key: a PRF,
 * so nobody can aim two tokens at one digest, and several times cheaper
 * than BLAKE2b on this path (it runs for every request). */
static size_t cache_digest(const auth *a, const char *tok, size_t len,
                           unsigned char d[CACHE_DIGEST])
{
    crypto_shorthash_siphashx24(d, (const unsigned char *)tok, len, a->cache_key);
    uint32_t h;
    memcpy(&h, d, sizeof h);
    return h & (CACHE_SLOTS - 1);
}

static auth_principal *cache_get(auth *a, const unsigned char d[CACHE_DIGEST], size_t slot,
                                 int64_t now)
{
    pthread_mutex_t *m = &a->cache_locks[slot % CACHE_LOCKS];
    auth_principal *p = NULL;
    pthread_mutex_lock(m);
    cache_slot *s = &a->cache[slot];
    if (s->p && sodium_memcmp(s->digest, d, CACHE_DIGEST) == 0 &&
        now <= auth_add_sat(s->p->pub.expires_at, AUTH_LEEWAY_S)) {
        p = s->p;
        auth_principal_ref(p);
    }
    pthread_mutex_unlock(m);
    return p;
}

static void cache_put(auth *a, const unsigned char d[CACHE_DIGEST], size_t slot, auth_principal *p)
{
    pthread_mutex_t *m = &a->cache_locks[slot % CACHE_LOCKS];
    auth_principal_ref(p);
    pthread_mutex_lock(m);
    auth_principal *old = a->cache[slot].p;
    memcpy(a->cache[slot].digest, d, CACHE_DIGEST);
    a->cache[slot].p = p;
    pthread_mutex_unlock(m);
    auth_principal_unref(old);
}

/* Verify a token (cache first); the caller owns the returned reference.
 * On failure *why is the 401 text. */
static auth_principal *authenticate_token(auth *a, const char *tok, size_t len, const char **why)
{
    if (len > AUTH_MAX_TOKEN) {
        *why = "Invalid or expired token";
        return NULL;
    }
    int64_t now = now_s();
    unsigned char d[CACHE_DIGEST];
    size_t slot = cache_digest(a, tok, len, d);
    auth_principal *p = cache_get(a, d, slot, now);
    if (!p) {
        switch (auth_token_verify(a->secret, a->secretlen, tok, len, now, &p)) {
        case AUTH_OK:
            cache_put(a, d, slot, p);
            break;
        case AUTH_EMPTY_JTI:
            *why = "Token missing required jti claim";
            return NULL;
        default:
            *why = "Invalid or expired token";
            return NULL;
        }
    }
    if (auth_revoked_has(a->rev, p->pub.jti)) {
        auth_principal_unref(p);
        *why = "Token has been revoked";
        return NULL;
    }
    return p;
}

/* ---- revocations on a shared log -------------------------------------------------------
 * With a shared log (storage-pg: storage.h, service version 2) every node
 * must refuse a revoked token, so a revocation is also a record of the log:
 * a document {"exp": deadline} keyed by the jti in a collection no HTTP
 * route can name ('@' and '/' are not allowed in collection names). Every
 * node applies it through the commit hook below, within the same bound as
 * data; the revocation file beside db-path stays the node's own copy. On a
 * node-local log nothing is logged. */
#define AUTH_REV_COLL "@auth-jwt/revoked"

static bool storage_is_shared(const mdb_ctx *ctx)
{
    void *self;
    const mdb_storage_service *st = mdb_service_get(
        ctx, MDB_STORAGE_SERVICE,
        offsetof(mdb_storage_service, order_abort) + sizeof(st->order_abort), &self);
    return st && st->order_begin;
}

/* 0, or the commit's error with *why (the revocation did not reach the log). */
static int log_revocation(auth *a, const char *jti, int64_t deadline, const char **why)
{
    if (!a->shared)
        return 0;
    mdb_write *w = mdb_write_begin(mdb_ctx_store(a->ctx), AUTH_REV_COLL, strlen(AUTH_REV_COLL));
    json_object *o = json_object_new_object();
    int rc = w && o ? 0 : -ENOMEM;
    if (!rc)
        json_object_object_add(o, "exp", json_object_new_int64(deadline));
    if (!rc)
        rc = mdb_write_put(w, jti, strlen(jti), o);
    json_object_put(o);
    if (rc) {
        mdb_write_abort(w);
        *why = "out of memory";
        return rc;
    }
    return mdb_write_commit(w, NULL, NULL, why);
}

/* Revocations logged by any node (this one included) as they commit. */
static void rev_on_commit(const mdb_commit_event *ev, void *ud)
{
    auth *a = ud;
    if (!ev->nrecords || ev->records[0].collection_len != sizeof AUTH_REV_COLL - 1 ||
        memcmp(ev->records[0].collection, AUTH_REV_COLL, sizeof AUTH_REV_COLL - 1) != 0)
        return;
    for (size_t i = 0; i < ev->nrecords; i++) {
        const mdb_record *rec = &ev->records[i];
        char jti[129];
        if (rec->op != MDB_REC_INSERT || rec->key_len >= sizeof jti)
            continue;
        memcpy(jti, rec->key, rec->key_len);
        jti[rec->key_len] = 0;
        mdb_val v = rec->doc ? mdb_doc_body(rec->doc) : rec->value;
        int64_t deadline = mdb_val_int(mdb_val_member(v, "exp", 3));
        if (deadline > now_s() && !auth_revoked_has(a->rev, jti) &&
            auth_revoked_add(a->rev, jti, deadline, NULL) != 0)
            mdb_log(a->ctx, MDB_LOG_ERROR, "could not persist a revocation from the shared log");
    }
}

typedef struct rev_entry_copy {
    char jti[129];
    int64_t deadline;
} rev_entry_copy;

typedef struct rev_scan {
    rev_entry_copy *e;
    size_t n, cap;
    int64_t now;
    bool expired; /* collect the expired ones (pruning) rather than the live ones */
} rev_scan;

static int rev_scan_doc(const mdb_doc *d, void *ud)
{
    rev_scan *sc = ud;
    size_t klen;
    const char *k = mdb_doc_key(d, &klen);
    int64_t deadline = mdb_val_int(mdb_val_member(mdb_doc_body(d), "exp", 3));
    if (klen >= sizeof sc->e->jti || (deadline <= sc->now) != sc->expired)
        return 0;
    if (sc->n == sc->cap) {
        size_t nc = sc->cap ? sc->cap * 2 : 64;
        rev_entry_copy *ne = realloc(sc->e, nc * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        sc->e = ne;
        sc->cap = nc;
    }
    memcpy(sc->e[sc->n].jti, k, klen + 1);
    sc->e[sc->n].deadline = deadline;
    sc->n++;
    return 0;
}

/* Copy out (no I/O under the read view) the logged revocations that are
 * live, or expired. 0 or -ENOMEM; caller frees sc->e. */
static int rev_scan_store(auth *a, rev_scan *sc)
{
    mdb_read *rd;
    if (mdb_read_begin(mdb_ctx_store(a->ctx), AUTH_REV_COLL, strlen(AUTH_REV_COLL), &rd) != 0)
        return 0;
    int rc = mdb_read_scan(rd, false, rev_scan_doc, sc);
    mdb_read_end(rd);
    return rc;
}

/* Start: every revocation the log holds joins this node's list. */
static int rev_load_logged(auth *a)
{
    rev_scan sc = {.now = now_s()};
    int rc = rev_scan_store(a, &sc);
    for (size_t i = 0; !rc && i < sc.n; i++)
        if (!auth_revoked_has(a->rev, sc.e[i].jti))
            rc = auth_revoked_add(a->rev, sc.e[i].jti, sc.e[i].deadline, NULL);
    free(sc.e);
    return rc;
}

/* Pruner: drop logged revocations whose tokens have expired anyway (any
 * node may; a delete of an absent key logs nothing). */
static void rev_prune_logged(auth *a)
{
    rev_scan sc = {.now = now_s(), .expired = true};
    if (rev_scan_store(a, &sc) == 0 && sc.n) {
        mdb_write *w = mdb_write_begin(mdb_ctx_store(a->ctx), AUTH_REV_COLL, strlen(AUTH_REV_COLL));
        for (size_t i = 0; w && i < sc.n; i++)
            mdb_write_delete(w, sc.e[i].jti, strlen(sc.e[i].jti));
        const char *why = NULL;
        if (w && mdb_write_commit(w, NULL, NULL, &why) != 0)
            mdb_log(a->ctx, MDB_LOG_WARN, "pruning expired revocations from the log: %s",
                    why ? why : "failed");
    }
    free(sc.e);
}

/* ---- the auth service --------------------------------------------------------------- */
static int svc_authenticate(void *self, const char *token, size_t len, mdb_principal **out,
                            const char **why)
{
    auth_principal *p = authenticate_token(self, token, len, why);
    if (!p)
        return -EACCES;
    *out = &p->pub;
    return 0;
}

static void svc_principal_free(void *self, mdb_principal *p)
{
    (void)self;
    auth_principal_unref((auth_principal *)p);
}

static bool svc_allowed(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                        const char *key)
{
    (void)self;
    if (!p || !coll)
        return false;
    return p->admin ||
           auth_scopes_allow(p->scopes, p->nscopes, auth_action_name(act), coll, key ? key : "*");
}

static void svc_each_key_scope(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                               mdb_key_scope_fn fn, void *ud)
{
    (void)self;
    if (p && coll && fn)
        auth_each_key_scope(p->scopes, p->nscopes, auth_action_name(act), coll, fn, ud);
}

static bool svc_is_revoked(void *self, const char *jti)
{
    return auth_revoked_has(((auth *)self)->rev, jti);
}

static const mdb_auth_service auth_service = {
    .size = sizeof(mdb_auth_service),
    .authenticate = svc_authenticate,
    .principal_free = svc_principal_free,
    .allowed = svc_allowed,
    .each_key_scope = svc_each_key_scope,
    .is_revoked = svc_is_revoked,
};

/* ---- gates ------------------------------------------------------------------------ */
static bool valid_ip(const char *s)
{
    unsigned char buf[16];
    return mdb_ip_parse(s, buf);
}

/* The client's address: the peer, unless the peer is a trusted proxy. */
static void client_ip(auth *a, mdb_req *r, char *out, size_t outlen)
{
    const char *peer = mdb_req_peer(r);
    snprintf(out, outlen, "%s", peer);
    bool trusted = false;
    unsigned char bin[16];
    if (a->nproxies && mdb_ip_parse(peer, bin))
        for (size_t i = 0; i < a->nproxies && !trusted; i++)
            trusted = mdb_net_contains(&a->proxies[i], bin);
    if (!trusted)
        return;
    const char *xff = mdb_req_header(r, "X-Forwarded-For");
    if (xff) {
        char first[64];
        size_t n = strcspn(xff, ",");
        while (n && (xff[0] == ' ')) {
            xff++;
            n--;
        }
        while (n && xff[n - 1] == ' ')
            n--;
        if (n < sizeof first) {
            memcpy(first, xff, n);
            first[n] = 0;
            if (valid_ip(first)) {
                snprintf(out, outlen, "%s", first);
                return;
            }
        }
    }
    const char *xri = mdb_req_header(r, "X-Real-IP");
    if (xri && strlen(xri) < 64 && valid_ip(xri))
        snprintf(out, outlen, "%s", xri);
}

static mdb_gate_result rate_gate(mdb_req *r, void *ud)
{
    auth *a = ud;
    char ip[64];
    client_ip(a, r, ip, sizeof ip);
    int64_t wait = auth_limiter_hit(a->lim, ip, mdb_now_ms());
    if (!wait)
        return MDB_GATE_CONTINUE;
    char ra[32];
    snprintf(ra, sizeof ra, "%lld", (long long)wait);
    mdb_reply_header(r, "Retry-After", ra);
    json_object *extra = json_object_new_object();
    json_object_object_add(extra, "limit", json_object_new_int64(a->limit));
    json_object_object_add(extra, "retry_after_seconds", json_object_new_int64(wait));
    mdb_reply_error_ex(r, 429, extra, "Rate limit exceeded");
    mdb_counter_add(a->m_limited, 1);
    return MDB_GATE_DONE;
}

static void principal_attr_free(void *p)
{
    auth_principal_unref(p);
}

static mdb_gate_result auth_gate(mdb_req *r, void *ud)
{
    auth *a = ud;
    const char *h = mdb_req_header(r, "Authorization");
    bool ascii = h != NULL;
    for (const unsigned char *c = (const unsigned char *)h; ascii && *c; c++)
        ascii = *c >= 0x20 && *c < 0x7f; /* visible ASCII and space, as upstream */
    if (!ascii || strncmp(h, "Bearer ", 7) != 0) {
        mdb_counter_add(a->m_rejected, 1);
        mdb_reply_error(r, 401, "Missing or invalid Authorization header");
        return MDB_GATE_DONE;
    }
    const char *why = "Invalid or expired token";
    /* strnlen: authenticate_token refuses anything past the bound anyway. */
    auth_principal *p = authenticate_token(a, h + 7, strnlen(h + 7, AUTH_MAX_TOKEN + 1), &why);
    if (!p) {
        mdb_counter_add(a->m_rejected, 1);
        mdb_reply_error(r, 401, "%s", why);
        return MDB_GATE_DONE;
    }
    mdb_req_set_attr(r, MDB_ATTR_PRINCIPAL, p, principal_attr_free);
    return MDB_GATE_CONTINUE;
}

/* ---- routes ------------------------------------------------------------------------- */

/* A string member and its full length (JSON strings may hold "\u0000"). */
static const char *json_strn(json_object *o, const char *k, size_t *len)
{
    json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static void login(mdb_req *r, void *ud)
{
    auth *a = ud;
    json_object *j = mdb_req_json(r);
    if (!j)
        return;
    size_t ul = 0, pl = 0;
    const char *user = json_strn(j, "username", &ul);
    const char *pass = json_strn(j, "password", &pl);
    if (!user || !pass) {
        mdb_reply_error(r, 400, "'username' and 'password' must be strings");
        return;
    }
    if (ul > 1024 || pl > 4096) {
        mdb_reply_error(r, 400, "'username' or 'password' is too long");
        return;
    }
    /* Same work for a wrong user and a wrong password: hash the name, always
     * run the password check. */
    unsigned char uh[32];
    crypto_generichash(uh, sizeof uh, (const unsigned char *)user, ul, NULL, 0);
    bool user_ok = sodium_memcmp(uh, a->root_user_hash, sizeof uh) == 0;
    while (sem_wait(&a->pwhash_slots) != 0 && errno == EINTR)
        ;
    bool pass_ok = crypto_pwhash_str_verify(a->pwhash, pass, pl) == 0;
    sem_post(&a->pwhash_slots);
    mdb_counter_add_at(a->m_logins, user_ok && pass_ok ? LOGIN_OK : LOGIN_FAILED, 0, 1);
    if (!user_ok || !pass_ok) {
        mdb_reply_error(r, 401, "Invalid credentials");
        return;
    }
    static const char *const root_scopes[] = {"*:*:*"};
    char jti[37];
    char *tok = auth_token_make(a->secret, a->secretlen, a->root_user, root_scopes, 1, now_s(),
                                a->root_ttl, jti);
    if (!tok) {
        mdb_reply_error(r, 500, "Failed to create token");
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "token", json_object_new_string(tok));
    free(tok);
    mdb_counter_add_at(a->m_minted, MINT_LOGIN, 0, 1);
    mdb_reply_json(r, 200, o);
}

/* ttl_secs: absent -> dflt; else a non-negative integer up to a year. */
static bool read_ttl(mdb_req *r, json_object *j, int64_t dflt, int64_t *out)
{
    json_object *v;
    *out = dflt;
    if (!j || !json_object_is_type(j, json_type_object) ||
        !json_object_object_get_ex(j, "ttl_secs", &v))
        return true;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) > AUTH_MAX_TTL_S) {
        mdb_reply_error(r, 400, "'ttl_secs' must be an integer from 0 to %lld",
                        (long long)AUTH_MAX_TTL_S);
        return false;
    }
    *out = json_object_get_int64(v);
    return true;
}

static void delegate(mdb_req *r, void *ud)
{
    auth *a = ud;
    const mdb_principal *caller = mdb_req_principal(r);
    if (!caller->admin) {
        mdb_reply_error(r, 403, "Admin access required to delegate tokens");
        return;
    }
    json_object *j = mdb_req_json(r);
    if (!j)
        return;
    json_object *scopes;
    size_t client_len = 0;
    const char *client = json_strn(j, "client_id", &client_len);
    if (!client || !json_object_object_get_ex(j, "scopes", &scopes) ||
        !json_object_is_type(scopes, json_type_array)) {
        mdb_reply_error(r, 400,
                        "'client_id' (string) and 'scopes' (array of strings) are required");
        return;
    }
    if (!*client || client_len > AUTH_MAX_SUBJECT || strlen(client) != client_len) {
        mdb_reply_error(r, 400, "'client_id' must be 1 to %d characters (no NUL)",
                        AUTH_MAX_SUBJECT);
        return;
    }
    size_t n = json_object_array_length(scopes);
    if (n > AUTH_MAX_SCOPES) {
        mdb_reply_error(r, 400, "Too many scopes (max %d)", AUTH_MAX_SCOPES);
        return;
    }
    const char **list = mdb_req_alloc(r, (n ? n : 1) * sizeof *list);
    if (!list) {
        mdb_reply_error(r, 500, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(scopes, i);
        if (!json_object_is_type(e, json_type_string)) {
            mdb_reply_error(r, 400, "'scopes' must be an array of strings");
            return;
        }
        list[i] = json_object_get_string(e);
        if (strlen(list[i]) != (size_t)json_object_get_string_len(e)) {
            mdb_reply_error(r, 400, "'scopes' must not contain NUL characters");
            return;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], "*:*:*") == 0 && strcmp(caller->subject, a->root_user) != 0) {
            mdb_reply_error(r, 403, "Only the root user can mint '*:*:*' (admin) tokens");
            return;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!auth_scope_valid(list[i])) {
            mdb_reply_error(r, 400,
                            "Invalid scope '%.600s'. Expected format: 'action:collection:key'",
                            list[i]);
            return;
        }
    }
    int64_t ttl;
    if (!read_ttl(r, j, 3600, &ttl))
        return;
    char jti[37];
    char *tok = auth_token_make(a->secret, a->secretlen, client, list, n, now_s(), ttl, jti);
    if (!tok) {
        mdb_reply_error(r, 500, "Token creation failed: signing error");
        return;
    }
    if (strlen(tok) > AUTH_MAX_TOKEN) {
        /* It would be refused on every request: say so now. */
        free(tok);
        mdb_reply_error(r, 400, "Scopes too large: the token would exceed %d bytes",
                        AUTH_MAX_TOKEN);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "token", json_object_new_string(tok));
    json_object_object_add(o, "client_id", json_object_new_string(client));
    json_object_object_add(o, "scopes", json_object_get(scopes));
    json_object_object_add(o, "jti", json_object_new_string(jti));
    free(tok);
    mdb_counter_add_at(a->m_minted, MINT_DELEGATE, 0, 1);
    mdb_reply_json(r, 200, o);
}

static void refresh(mdb_req *r, void *ud)
{
    auth *a = ud;
    const mdb_principal *caller = mdb_req_principal(r);
    if (caller->admin) {
        mdb_reply_error(r, 403,
                        "Admin tokens cannot be refreshed \xe2\x80\x94 re-delegate via POST "
                        "/auth/delegate");
        return;
    }
    json_object *j = NULL;
    if (mdb_req_has_body(r)) {
        j = mdb_req_json(r);
        if (!j)
            return;
    }
    int64_t ttl;
    if (!read_ttl(r, j, 3600, &ttl))
        return;
    char jti[37];
    int64_t now = now_s();
    char *tok =
        auth_token_make(a->secret, a->secretlen, caller->subject,
                        (const char *const *)caller->scopes, caller->nscopes, now, ttl, jti);
    if (!tok) {
        mdb_reply_error(r, 500, "Unexpected error: signing failed");
        return;
    }
    /* The old token dies now; remember it until it would have expired. */
    bool existed = false;
    int rc = auth_revoked_add(a->rev, caller->jti,
                              auth_add_sat(caller->expires_at, AUTH_LEEWAY_S + 1), &existed);
    if (!rc && existed) {
        /* A concurrent refresh (or a revocation) of the same token won. */
        free(tok);
        mdb_reply_error(r, 401, "Token has been revoked");
        return;
    }
    if (rc) {
        /* All or nothing: the caller keeps the old token, gets no new one. */
        if (!existed)
            auth_revoked_remove(a->rev, caller->jti);
        free(tok);
        mdb_log(a->ctx, MDB_LOG_ERROR, "could not persist the revocation list: %s", strerror(-rc));
        mdb_reply_error(r, 500, "Unexpected error: the old token could not be revoked");
        return;
    }
    const char *lwhy = NULL;
    if (log_revocation(a, caller->jti, caller->expires_at + AUTH_LEEWAY_S + 1, &lwhy) != 0) {
        auth_revoked_remove(a->rev, caller->jti);
        free(tok);
        mdb_reply_error(r, 503, "The old token could not be revoked on every node: %s",
                        lwhy ? lwhy : "storage unavailable");
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "token", json_object_new_string(tok));
    json_object_object_add(o, "jti", json_object_new_string(jti));
    json_object_object_add(o, "expires_in", json_object_new_int64(ttl));
    free(tok);
    mdb_counter_add_at(a->m_minted, MINT_REFRESH, 0, 1);
    mdb_counter_add(a->m_revoked, 1);
    mdb_reply_json(r, 200, o);
}

static void revoke_token(mdb_req *r, void *ud)
{
    auth *a = ud;
    const mdb_principal *caller = mdb_req_principal(r);
    if (!caller->admin) {
        mdb_reply_error(r, 403, "Admin access required to revoke tokens");
        return;
    }
    const char *jti = mdb_req_param(r, "jti");
    if (!jti || !*jti) {
        mdb_reply_error(r, 400, "jti must not be empty");
        return;
    }
    if (strlen(jti) > 128) {
        mdb_reply_error(r, 400, "jti is too long (max 128 characters)");
        return;
    }
    /* Every jti we mint is a UUID; anything else cannot name one of our
     * tokens, and must not be stored or echoed as undecodable bytes. */
    for (const char *c = jti; *c; c++) {
        if (*c < 0x21 || *c > 0x7e) {
            mdb_reply_error(r, 400, "jti must be printable ASCII");
            return;
        }
    }
    int64_t now = now_s();
    /* Without an exp, keep the entry as long as any token can live. */
    int64_t deadline =
        now + (a->root_ttl > AUTH_MAX_TTL_S ? a->root_ttl : AUTH_MAX_TTL_S) + AUTH_LEEWAY_S;
    if (mdb_req_has_body(r)) {
        json_object *j = mdb_req_json(r);
        if (!j)
            return;
        json_object *v;
        if (json_object_is_type(j, json_type_object) && json_object_object_get_ex(j, "exp", &v)) {
            if (!json_object_is_type(v, json_type_int)) {
                mdb_reply_error(r, 400, "'exp' must be an integer (unix seconds)");
                return;
            }
            /* Past the last second the token is accepted (exp + leeway).
             * Saturated: an exp near INT64_MAX keeps the entry for good
             * rather than wrapping to a past deadline the next prune drops. */
            int64_t exp = json_object_get_int64(v);
            deadline = auth_add_sat(exp > now ? exp : now, AUTH_LEEWAY_S + 1);
        }
    }
    int rc = auth_revoked_add(a->rev, jti, deadline, NULL);
    if (rc) {
        mdb_log(a->ctx, MDB_LOG_ERROR, "could not persist the revocation list: %s", strerror(-rc));
        mdb_reply_error(r, 500, "Internal error: revocation store unavailable");
        return;
    }
    /* Refused here already; the other nodes learn it from the log. */
    const char *lwhy = NULL;
    if (log_revocation(a, jti, deadline, &lwhy) != 0) {
        mdb_reply_error(r, 503, "Token revoked on this node only: %s",
                        lwhy ? lwhy : "storage unavailable");
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "revoked", json_object_new_string(jti));
    json_object_object_add(o, "message",
                           json_object_new_string("Token has been revoked successfully"));
    mdb_counter_add(a->m_revoked, 1);
    mdb_reply_json(r, 200, o);
}

/* ---- life cycle -------------------------------------------------------------------------- */
static const mdb_conf_key auth_config[] = {
    {"jwt-secret", MDB_CONF_STRING, NULL, "MOLTENDB_JWT_SECRET", "--jwt-secret",
     MDB_CONF_SECRET | MDB_CONF_REQUIRED, 0, 0, NULL, "HS256 signing secret for tokens"},
    {"root-user", MDB_CONF_STRING, NULL, "MOLTENDB_ROOT_USER", "--root-user", MDB_CONF_REQUIRED, 0,
     0, NULL, "the root user's name"},
    {"root-password", MDB_CONF_STRING, NULL, "MOLTENDB_ROOT_PASSWORD", "--root-password",
     MDB_CONF_SECRET | MDB_CONF_REQUIRED, 0, 0, NULL, "the root user's password"},
    {"root-token-ttl", MDB_CONF_INT, "86400", "MOLTENDB_ROOT_TOKEN_TTL", "--root-token-ttl", 0, 1,
     AUTH_MAX_TTL_S, NULL, "lifetime of root tokens (seconds)"},
    {"rate-limit-requests", MDB_CONF_INT, "100", "MOLTENDB_RATE_LIMIT_REQS",
     "--rate-limit-requests", 0, 1, 1000000000000LL, NULL, "requests per window per client"},
    {"rate-limit-window", MDB_CONF_INT, "60", "MOLTENDB_RATE_LIMIT_WINDOW", "--rate-limit-window",
     0, 1, 86400, NULL, "rate limit window (seconds)"},
    {"trusted-proxies", MDB_CONF_STRING, "", "MOLTENDB_TRUSTED_PROXIES", "--trusted-proxies", 0, 0,
     0, NULL, "comma-separated proxy IPs or CIDR ranges whose X-Forwarded-For / X-Real-IP count"},
    {"max-tracked-peers", MDB_CONF_INT, "100000", NULL, NULL, 0, 16, 100000000, NULL,
     "most client addresses the rate limiter remembers"},
    MDB_CONF_END,
};

static char *revocation_path(const char *db_path)
{
    /* <dir of db-path>/<stem of db-path>.revocations.json */
    const char *slash = strrchr(db_path, '/');
    const char *base = slash ? slash + 1 : db_path;
    const char *dot = strrchr(base, '.');
    size_t stem = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    size_t dirlen = slash ? (size_t)(slash - db_path) : 1;
    const char *dir = slash ? db_path : ".";
    size_t n = dirlen + 1 + stem + sizeof ".revocations.json";
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%.*s.revocations.json", (int)dirlen, dir, (int)stem, base);
    return p;
}

static int auth_metrics_register(mdb_ctx *ctx, auth *a)
{
    static const char *const results[] = {"ok", "failed", NULL};
    static const char *const kinds[] = {"login", "delegate", "refresh", NULL};
    const mdb_metric_label result = {"result", results}, kind = {"kind", kinds};
    int rc = mdb_metric_counter(ctx, "auth_logins_total", "POST /login attempts, by result",
                                &result, 1, &a->m_logins);
    if (!rc)
        rc = mdb_metric_counter(ctx, "auth_tokens_minted_total", "Tokens issued, by route", &kind,
                                1, &a->m_minted);
    if (!rc)
        rc = mdb_metric_counter(ctx, "auth_tokens_revoked_total",
                                "Token ids revoked (DELETE /auth/tokens and refreshes)", NULL, 0,
                                &a->m_revoked);
    if (!rc)
        rc = mdb_metric_counter(ctx, "auth_rejected_total",
                                "Requests refused 401 by the token check (missing, invalid, "
                                "expired or revoked token)",
                                NULL, 0, &a->m_rejected);
    if (!rc)
        rc = mdb_metric_counter(ctx, "auth_rate_limited_total", "Requests refused 429", NULL, 0,
                                &a->m_limited);
    return rc;
}

static int auth_init(mdb_ctx *ctx)
{
    if (sodium_init() < 0)
        return -EIO;
    auth *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, a);
    a->ctx = ctx;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_mutex_init(&a->cache_locks[i], NULL);
    randombytes_buf(a->cache_key, sizeof a->cache_key);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (sem_init(&a->pwhash_slots, 0, cpus < 1 ? 1 : cpus > 4 ? 4 : (unsigned)cpus) != 0)
        return -errno;
    a->pwhash_sem_ok = true;
    const char *secret = mdb_conf_str(ctx, "jwt-secret");
    const char *user = mdb_conf_str(ctx, "root-user");
    const char *pass = mdb_conf_str(ctx, "root-password");
    if (!secret || !*secret || !user || !*user || !pass || !*pass) {
        mdb_log(ctx, MDB_LOG_ERROR, "--jwt-secret, --root-user and --root-password are required");
        return -EINVAL;
    }
    if (strlen(secret) < 32)
        mdb_log(ctx, MDB_LOG_WARN,
                "the JWT secret is shorter than 32 bytes; use a long random one");
    a->secretlen = strlen(secret);
    a->secret = malloc(a->secretlen);
    a->root_user = strdup(user);
    if (!a->secret || !a->root_user)
        return -ENOMEM;
    memcpy(a->secret, secret, a->secretlen);
    crypto_generichash(a->root_user_hash, sizeof a->root_user_hash, (const unsigned char *)user,
                       strlen(user), NULL, 0);
    if (crypto_pwhash_str(a->pwhash, pass, strlen(pass), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "hashing the root password failed (out of memory?)");
        return -ENOMEM;
    }
    a->root_ttl = mdb_conf_int(ctx, "root-token-ttl");
    a->limit = mdb_conf_int(ctx, "rate-limit-requests");
    a->lim = auth_limiter_new(a->limit, mdb_conf_int(ctx, "rate-limit-window"),
                              (size_t)mdb_conf_int(ctx, "max-tracked-peers"));
    if (!a->lim)
        return -ENOMEM;
    if (mdb_net_list_parse(mdb_conf_str(ctx, "trusted-proxies"), &a->proxies, &a->nproxies)) {
        mdb_log(ctx, MDB_LOG_ERROR,
                "trusted-proxies must be a comma-separated list of IP addresses or CIDR "
                "ranges");
        return -EINVAL;
    }
    char *path = NULL;
    if (!mdb_conf_bool(ctx, "core.in-memory")) {
        const char *db = mdb_conf_str(ctx, "core.db-path");
        path = revocation_path(db && *db ? db : "my_database.log");
        if (!path)
            return -ENOMEM;
    }
    a->rev = auth_revoked_new(path, a->secret, a->secretlen);
    free(path);
    if (!a->rev)
        return -ENOMEM;
    int rc = mdb_service_provide(ctx, MDB_AUTH_SERVICE, &auth_service, a);
    if (!rc)
        rc = mdb_gate_add(ctx, MDB_GATE_ACCEPT, 10, rate_gate, a);
    if (!rc)
        rc = mdb_gate_add(ctx, MDB_GATE_AUTH, 10, auth_gate, a);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_POST, "/login", MDB_ROUTE_PUBLIC, login, a);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_POST, "/auth/delegate", 0, delegate, a);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_POST, "/auth/refresh", 0, refresh, a);
    if (!rc)
        rc = mdb_route_add(ctx, MDB_METHOD_DELETE, "/auth/tokens/{jti}", 0, revoke_token, a);
    if (!rc)
        rc = auth_metrics_register(ctx, a);
    if (!rc)
        rc = mdb_hook_commit(ctx, 50, rev_on_commit, a);
    return rc;
}

static void *pruner(void *arg)
{
    auth *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60;
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        if (a->stopping)
            break;
        pthread_mutex_unlock(&a->mu);
        auth_limiter_sweep(a->lim, mdb_now_ms());
        int rc = auth_revoked_prune(a->rev, now_s());
        if (rc)
            mdb_log(a->ctx, MDB_LOG_ERROR, "rewriting the revocation list failed: %s",
                    strerror(-rc));
        if (a->shared)
            rev_prune_logged(a);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int auth_start(mdb_ctx *ctx)
{
    auth *a = mdb_ctx_data(ctx);
    const char *why = "unknown";
    int rc = auth_revoked_load(a->rev, now_s(), &why);
    if (rc) {
        mdb_log(ctx, MDB_LOG_ERROR, "revocation list failed its integrity check: %s", why);
        return rc;
    }
    a->shared = storage_is_shared(ctx);
    if (a->shared && (rc = rev_load_logged(a)) != 0) {
        mdb_log(ctx, MDB_LOG_ERROR, "cannot load the revocations of the shared log: %s",
                strerror(-rc));
        return rc;
    }
    if (pthread_create(&a->pruner, NULL, pruner, a) != 0)
        return -EAGAIN;
    a->pruner_running = true;
    mdb_log(ctx, MDB_LOG_INFO, "ready: %zu revoked token id(s) remembered",
            auth_revoked_count(a->rev));
    return 0;
}

static void auth_stop(mdb_ctx *ctx)
{
    auth *a = mdb_ctx_data(ctx);
    if (!a || !a->pruner_running)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->pruner, NULL);
    a->pruner_running = false;
}

static void auth_destroy(mdb_ctx *ctx)
{
    auth *a = mdb_ctx_data(ctx);
    if (!a)
        return;
    auth_stop(ctx);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        auth_principal_unref(a->cache[i].p);
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_mutex_destroy(&a->cache_locks[i]);
    auth_revoked_free(a->rev);
    auth_limiter_free(a->lim);
    free(a->proxies);
    if (a->secret)
        sodium_memzero(a->secret, a->secretlen);
    free(a->secret);
    free(a->root_user);
    sodium_memzero(a->pwhash, sizeof a->pwhash);
    sodium_memzero(a->cache_key, sizeof a->cache_key);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    if (a->pwhash_sem_ok)
        sem_destroy(&a->pwhash_slots);
    free(a);
}

static const char *const auth_provides[] = {MDB_AUTH_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "auth-jwt", .version = "1.0",
                  .description = "login, scoped HS256 tokens, delegation, refresh, revocation, "
                                 "rate limiting",
                  .config = auth_config, .provides = auth_provides, .init = auth_init,
                  .start = auth_start, .stop = auth_stop, .destroy = auth_destroy);
