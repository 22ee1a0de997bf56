/*
 * auth-jwt internals: scope matching, HS256 tokens, refcounted principals,
 * the signed revocation list and the per-peer rate limiter. The rules:
 * README.md, "Tokens", "Revocation list" and "Rate limiting".
 *
 * Ownership: auth_token_make returns a malloc'd token; principals are freed
 * on their last unref; the revocation list and limiter own their tables.
 */
#include "auth_core.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <jwt.h>
#include <libgen.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moltendb/array.h>

/* ---- scopes -------------------------------------------------------------------- */
const char *auth_action_name(mdb_action a)
{
    switch (a) {
    case MDB_ACT_READ:
        return "read";
    case MDB_ACT_WRITE:
        return "write";
    case MDB_ACT_DELETE:
        return "delete";
    }
    return "";
}

/* Split at the first two ':'; false when there are fewer. */
static bool split3(const char *s, const char **a, size_t *al, const char **c, size_t *cl,
                   const char **k)
{
    const char *p1 = strchr(s, ':');
    if (!p1)
        return false;
    const char *p2 = strchr(p1 + 1, ':');
    if (!p2)
        return false;
    *a = s;
    *al = (size_t)(p1 - s);
    *c = p1 + 1;
    *cl = (size_t)(p2 - p1 - 1);
    *k = p2 + 1;
    return true;
}

bool auth_scope_valid(const char *scope)
{
    if (strcmp(scope, "*:*:*") == 0)
        return true;
    size_t n = strlen(scope);
    if (!n || n > AUTH_MAX_SCOPE_LEN)
        return false;
    const char *a, *c, *k;
    size_t al, cl;
    if (!split3(scope, &a, &al, &c, &cl, &k))
        return false;
    bool action_ok = (al == 4 && memcmp(a, "read", 4) == 0) ||
                     (al == 5 && memcmp(a, "write", 5) == 0) ||
                     (al == 6 && memcmp(a, "delete", 6) == 0);
    return action_ok && cl > 0 && *k;
}

static bool key_matches(const char *pattern, const char *key)
{
    size_t pl = strlen(pattern);
    if (pl && pattern[pl - 1] == '*')
        return strncmp(key, pattern, pl - 1) == 0;
    return strcmp(pattern, key) == 0;
}

bool auth_scope_allows(const char *scope, const char *action, const char *coll, const char *key)
{
    if (strcmp(scope, "*:*:*") == 0)
        return true;
    const char *a, *c, *k;
    size_t al, cl;
    if (!split3(scope, &a, &al, &c, &cl, &k))
        return false;
    if (strlen(action) != al || memcmp(a, action, al) != 0)
        return false;
    if (!(cl == 1 && c[0] == '*') && (strlen(coll) != cl || memcmp(c, coll, cl) != 0))
        return false;
    return key_matches(k, key);
}

bool auth_scopes_allow(const char *const *scopes, size_t n, const char *action, const char *coll,
                       const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (auth_scope_allows(scopes[i], action, coll, key))
            return true;
    return false;
}

void auth_each_key_scope(const char *const *scopes, size_t n, const char *action, const char *coll,
                         mdb_key_scope_fn fn, void *ud)
{
    size_t al = strlen(action), cl = strlen(coll);
    for (size_t i = 0; i < n; i++) {
        const char *a, *c, *k;
        size_t sal, scl;
        if (!split3(scopes[i], &a, &sal, &c, &scl, &k))
            continue;
        if (sal != al || memcmp(a, action, al) != 0)
            continue;
        if (!(scl == 1 && c[0] == '*') && (scl != cl || memcmp(c, coll, cl) != 0))
            continue;
        size_t kl = strlen(k);
        if (kl == 1 && k[0] == '*')
            continue; /* collection-wide: not a key scope */
        if (kl && k[kl - 1] == '*')
            fn(k, kl - 1, true, ud);
        else
            fn(k, kl, false, ud);
    }
}

/* ---- principals ------------------------------------------------------------------ */
auth_principal *auth_principal_new(const char *sub, const char *jti, int64_t exp,
                                   const char *const *scopes, size_t n)
{
    size_t need = sizeof(auth_principal) + n * sizeof(char *) + strlen(sub) + strlen(jti) + 2;
    for (size_t i = 0; i < n; i++)
        need += strlen(scopes[i]) + 1;
    auth_principal *p = malloc(need);
    if (!p)
        return NULL;
    char **arr = (char **)(p + 1);
    char *s = (char *)(arr + n);
    atomic_init(&p->refs, 1);
    p->pub.admin = false;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(scopes[i]) + 1;
        memcpy(s, scopes[i], l);
        arr[i] = s;
        s += l;
        if (strcmp(scopes[i], "*:*:*") == 0)
            p->pub.admin = true;
    }
    size_t l = strlen(sub) + 1;
    memcpy(s, sub, l);
    p->pub.subject = s;
    s += l;
    memcpy(s, jti, strlen(jti) + 1);
    p->pub.jti = s;
    p->pub.expires_at = exp;
    p->pub.nscopes = n;
    p->pub.scopes = (const char *const *)arr;
    return p;
}

void auth_principal_ref(auth_principal *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void auth_principal_unref(auth_principal *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1)
        free(p);
}

/* ---- tokens ------------------------------------------------------------------------ */
void auth_uuid4(char out[37])
{
    mdb_uuid4(out);
}

char *auth_token_make(const unsigned char *key, size_t keylen, const char *sub,
                      const char *const *scopes, size_t n, int64_t now, int64_t ttl,
                      char jti_out[37])
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    json_object *g = json_object_new_object();
    json_object *arr = json_object_new_array();
    if (!g || !arr || jwt_new(&jwt)) {
        json_object_put(g);
        json_object_put(arr);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        json_object_array_add(arr, json_object_new_string(scopes[i]));
    json_object_object_add(g, "scopes", arr);
    auth_uuid4(jti_out);
    if (jwt_add_grant(jwt, "sub", sub) == 0 && jwt_add_grant(jwt, "jti", jti_out) == 0 &&
        jwt_add_grant_int(jwt, "iat", (long)now) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)(now + ttl)) == 0 &&
        jwt_add_grants_json(jwt, json_object_to_json_string_ext(g, JSON_C_TO_STRING_PLAIN)) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, key, (int)keylen) == 0) {
        char *s = jwt_encode_str(jwt);
        if (s) {
            out = strdup(s);
            free(s);
        }
    }
    json_object_put(g);
    jwt_free(jwt);
    return out;
}

auth_verify auth_token_verify(const unsigned char *key, size_t keylen, const char *token,
                              size_t len, int64_t now, auth_principal **out)
{
    *out = NULL;
    if (!len || len > AUTH_MAX_TOKEN)
        return AUTH_INVALID;
    int dots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        /* base64url (unpadded, RFC 7515) and two dots: nothing else is a compact JWS */
        if (c == '.')
            dots++;
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_'))
            return AUTH_INVALID;
    }
    if (dots != 2)
        return AUTH_INVALID;
    /* Check the HS256 signature ourselves first, in constant time, so a
     * forged token never reaches libjwt's base64 and JSON parsing. */
    const char *sig = (const char *)memrchr(token, '.', len) + 1;
    size_t signed_len = (size_t)(sig - 1 - token), sig_len = len - signed_len - 1;
    unsigned char mac[crypto_auth_hmacsha256_BYTES], want[crypto_auth_hmacsha256_BYTES];
    size_t mac_len = 0;
    if (sig_len > 64 ||
        sodium_base642bin(mac, sizeof mac, sig, sig_len, NULL, &mac_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        mac_len != sizeof mac)
        return AUTH_INVALID;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token, signed_len);
    crypto_auth_hmacsha256_final(&st, want);
    if (sodium_memcmp(mac, want, sizeof mac) != 0)
        return AUTH_INVALID;
    char *t = malloc(len + 1);
    if (!t)
        return AUTH_INVALID;
    memcpy(t, token, len);
    t[len] = 0;
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, t, key, (int)keylen);
    free(t);
    if (rc || !jwt)
        return AUTH_INVALID;
    auth_verify res = AUTH_INVALID;
    json_object *sj = NULL;
    char *scopes_json = NULL;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256)
        goto done;
    /* RFC 7515 section 4.1.11: "crit" names header extensions the verifier
     * must understand; this one understands none, so any "crit" fails. */
    char *crit = jwt_get_headers_json(jwt, "crit");
    if (crit) {
        free(crit);
        goto done;
    }
    errno = 0;
    long exp = jwt_get_grant_int(jwt, "exp");
    if (errno == ENOENT)
        goto done;
    const char *jti = jwt_get_grant(jwt, "jti");
    const char *sub = jwt_get_grant(jwt, "sub");
    if (!jti || !sub || strlen(sub) > AUTH_MAX_SUBJECT || strlen(jti) > 128)
        goto done;
    if (now > auth_add_sat((int64_t)exp, AUTH_LEEWAY_S)) {
        res = AUTH_EXPIRED;
        goto done;
    }
    if (!*jti) {
        res = AUTH_EMPTY_JTI;
        goto done;
    }
    const char *scopes[AUTH_MAX_SCOPES];
    size_t n = 0;
    scopes_json = jwt_get_grants_json(jwt, "scopes");
    if (scopes_json) {
        sj = json_tokener_parse(scopes_json);
        if (!sj || !json_object_is_type(sj, json_type_array))
            goto done;
        size_t cnt = json_object_array_length(sj);
        if (cnt > AUTH_MAX_SCOPES)
            goto done;
        for (size_t i = 0; i < cnt; i++) {
            json_object *e = json_object_array_get_idx(sj, i);
            if (!json_object_is_type(e, json_type_string))
                goto done;
            scopes[n++] = json_object_get_string(e);
        }
    }
    *out = auth_principal_new(sub, jti, exp, scopes, n);
    res = *out ? AUTH_OK : AUTH_INVALID;
done:
    json_object_put(sj);
    free(scopes_json);
    jwt_free(jwt);
    return res;
}

/* ---- revocation list ------------------------------------------------------------------ */
typedef struct rev_entry {
    char *jti;
    int64_t deadline;
} rev_entry;

struct auth_revoked {
    pthread_rwlock_t lock;
    _Atomic size_t count;       /* == n; lets the hot path skip the lock when empty */
    pthread_mutex_t write_lock; /* one file writer at a time */
    uint64_t gen;               /* bumped by every change (under lock) */
    uint64_t persisted_gen;     /* gen of the last file written (under write_lock) */
    rev_entry *e;               /* sorted by jti (byte order): canonical and searchable */
    size_t n, cap;
    char *path;
    unsigned char *key;
    size_t keylen;
};

auth_revoked *auth_revoked_new(const char *path, const unsigned char *key, size_t keylen)
{
    auth_revoked *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_rwlock_init(&r->lock, NULL);
    pthread_mutex_init(&r->write_lock, NULL);
    r->path = path ? strdup(path) : NULL;
    r->key = malloc(keylen ? keylen : 1);
    if ((path && !r->path) || !r->key) {
        auth_revoked_free(r);
        return NULL;
    }
    memcpy(r->key, key, keylen);
    r->keylen = keylen;
    return r;
}

void auth_revoked_free(auth_revoked *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->e[i].jti);
    free(r->e);
    free(r->path);
    if (r->key)
        sodium_memzero(r->key, r->keylen);
    free(r->key);
    pthread_rwlock_destroy(&r->lock);
    pthread_mutex_destroy(&r->write_lock);
    free(r);
}

static size_t rev_find(const auth_revoked *r, const char *jti, bool *found)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->e[mid].jti, jti);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static int rev_insert(auth_revoked *r, const char *jti, int64_t deadline, bool *existed)
{
    bool found;
    size_t i = rev_find(r, jti, &found);
    if (existed)
        *existed = found;
    if (found) {
        if (deadline > r->e[i].deadline)
            r->e[i].deadline = deadline;
        return 0;
    }
    if (mdb_array_grow(&r->e, &r->cap, r->n, sizeof *r->e, 16))
        return -ENOMEM;
    char *j = strdup(jti);
    if (!j)
        return -ENOMEM;
    memmove(r->e + i + 1, r->e + i, (r->n - i) * sizeof *r->e);
    r->e[i] = (rev_entry){j, deadline};
    r->n++;
    atomic_store(&r->count, r->n);
    return 0;
}

/* Canonical entries text: compact JSON object, keys in byte order. */
static void canonical(const rev_entry *e, size_t n, mdb_buf *b)
{
    mdb_buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mdb_buf_putc(b, ',');
        mdb_buf_json_str(b, e[i].jti, strlen(e[i].jti));
        mdb_buf_printf(b, ":%lld", (long long)e[i].deadline);
    }
    mdb_buf_putc(b, '}');
}

static void sign_hex(const unsigned char *key, size_t keylen, const char *text, size_t len,
                     char hex[65])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)text, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, 65, mac, sizeof mac);
}

/* Write the file atomically: temp file (0600), fsync, rename, fsync dir. */
static int rev_persist_locked(auth_revoked *r, const rev_entry *e, size_t n)
{
    if (!r->path)
        return 0;
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_buf_puts(&b, "{\"entries\":");
    size_t start = b.len;
    canonical(e, n, &b);
    char hex[65];
    sign_hex(r->key, r->keylen, b.data + start, b.len - start, hex);
    mdb_buf_printf(&b, ",\"sig\":\"%s\"}\n", hex);
    if (b.oom) {
        mdb_buf_free(&b);
        return -ENOMEM;
    }
    char tmp[4200];
    if (strlen(r->path) + sizeof ".tmp" > sizeof tmp) {
        mdb_buf_free(&b);
        return -ENAMETOOLONG;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
    } else {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(fd, b.data + off, b.len - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                rc = -errno;
                break;
            }
            off += (size_t)w;
        }
        if (!rc && fsync(fd) != 0)
            rc = -errno;
        close(fd);
        if (!rc && rename(tmp, r->path) != 0)
            rc = -errno;
        if (rc)
            unlink(tmp);
    }
    if (!rc) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", r->path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    mdb_buf_free(&b);
    return rc;
}

/* Snapshot the entries under the read lock, then write outside it. */
/* Write a state that includes change `gen`. Group commit: writers queue on
 * write_lock, and one whose change a later snapshot already covered is done. */
static int rev_persist(auth_revoked *r, uint64_t gen)
{
    if (!r->path)
        return 0;
    pthread_mutex_lock(&r->write_lock);
    if (r->persisted_gen >= gen) {
        pthread_mutex_unlock(&r->write_lock);
        return 0;
    }
    pthread_rwlock_rdlock(&r->lock);
    uint64_t snap_gen = r->gen;
    size_t n = r->n;
    rev_entry *copy = n ? malloc(n * sizeof *copy) : NULL;
    bool ok = !n || copy;
    for (size_t i = 0; ok && i < n; i++) {
        copy[i].deadline = r->e[i].deadline;
        copy[i].jti = strdup(r->e[i].jti);
        if (!copy[i].jti) {
            n = i;
            ok = false;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    int rc = ok ? rev_persist_locked(r, copy, n) : -ENOMEM;
    if (!rc)
        r->persisted_gen = snap_gen;
    for (size_t i = 0; i < n; i++)
        free(copy[i].jti);
    free(copy);
    pthread_mutex_unlock(&r->write_lock);
    return rc;
}

int auth_revoked_add(auth_revoked *r, const char *jti, int64_t deadline, bool *existed)
{
    pthread_rwlock_wrlock(&r->lock);
    int rc = rev_insert(r, jti, deadline, existed);
    uint64_t gen = ++r->gen;
    pthread_rwlock_unlock(&r->lock);
    return rc ? rc : rev_persist(r, gen);
}

void auth_revoked_remove(auth_revoked *r, const char *jti)
{
    pthread_rwlock_wrlock(&r->lock);
    bool found = false;
    size_t i = r->n ? rev_find(r, jti, &found) : 0;
    if (found) {
        free(r->e[i].jti);
        memmove(r->e + i, r->e + i + 1, (r->n - i - 1) * sizeof *r->e);
        r->n--;
        atomic_store(&r->count, r->n);
        r->gen++;
    }
    pthread_rwlock_unlock(&r->lock);
}

bool auth_revoked_has(auth_revoked *r, const char *jti)
{
    /* An insert publishes count after the entry, under the write lock; a
     * reader that sees 0 ran before that revocation completed. */
    if (atomic_load(&r->count) == 0)
        return false;
    pthread_rwlock_rdlock(&r->lock);
    bool found = false;
    if (r->n)
        rev_find(r, jti, &found);
    pthread_rwlock_unlock(&r->lock);
    return found;
}

size_t auth_revoked_count(auth_revoked *r)
{
    pthread_rwlock_rdlock(&r->lock);
    size_t n = r->n;
    pthread_rwlock_unlock(&r->lock);
    return n;
}

int auth_revoked_prune(auth_revoked *r, int64_t now)
{
    pthread_rwlock_wrlock(&r->lock);
    size_t j = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->e[i].deadline <= now)
            free(r->e[i].jti);
        else
            r->e[j++] = r->e[i];
    }
    bool changed = j != r->n;
    r->n = j;
    atomic_store(&r->count, j);
    uint64_t gen = changed ? ++r->gen : 0;
    pthread_rwlock_unlock(&r->lock);
    return changed ? rev_persist(r, gen) : 0;
}

int auth_revoked_load(auth_revoked *r, int64_t now, const char **why)
{
    if (!r->path)
        return 0;
    FILE *f = fopen(r->path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        *why = "cannot be read";
        return -errno;
    }
    mdb_buf b;
    mdb_buf_init(&b);
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= (64u << 20))
        mdb_buf_append(&b, chunk, got);
    bool read_err = ferror(f) != 0;
    fclose(f);
    if (read_err || b.oom || b.len > (64u << 20)) {
        *why = read_err ? "cannot be read" : b.oom ? "out of memory" : "larger than 64 MiB";
        mdb_buf_free(&b);
        return read_err ? -EIO : b.oom ? -ENOMEM : -EFBIG;
    }
    int rc = -EBADMSG;
    /* Parse exactly b.len bytes (the buffer is not NUL-terminated); only
     * whitespace may follow the object. */
    json_object *root = NULL;
    json_tokener *tk = json_tokener_new();
    if (tk && b.len) {
        root = json_tokener_parse_ex(tk, b.data, (int)b.len);
        size_t used = root ? json_tokener_get_parse_end(tk) : 0;
        for (size_t i = used; root && i < b.len; i++)
            if (!memchr(" \t\r\n", b.data[i], 4)) {
                json_object_put(root);
                root = NULL;
            }
    }
    if (tk)
        json_tokener_free(tk);
    json_object *entries = NULL, *sig = NULL;
    *why = "not valid JSON";
    if (root && json_object_object_get_ex(root, "entries", &entries) &&
        json_object_is_type(entries, json_type_object) &&
        json_object_object_get_ex(root, "sig", &sig) &&
        json_object_is_type(sig, json_type_string)) {
        size_t n = (size_t)json_object_object_length(entries), k = 0;
        rev_entry *e = calloc(n ? n : 1, sizeof *e);
        bool ok = e != NULL;
        json_object_object_foreach(entries, key, val)
        {
            if (!ok)
                break;
            if (!json_object_is_type(val, json_type_int)) {
                ok = false;
                *why = "an entry is not an integer";
                break;
            }
            e[k].jti = strdup(key);
            e[k].deadline = json_object_get_int64(val);
            ok = e[k++].jti != NULL;
        }
        /* Keys sorted the way the writer sorted them. */
        for (size_t i = 1; ok && i < k; i++) {
            rev_entry x = e[i];
            size_t j = i;
            for (; j > 0 && strcmp(e[j - 1].jti, x.jti) > 0; j--)
                e[j] = e[j - 1];
            e[j] = x;
        }
        if (ok) {
            mdb_buf c;
            mdb_buf_init(&c);
            canonical(e, k, &c);
            char hex[65];
            sign_hex(r->key, r->keylen, c.data, c.len, hex);
            const char *want = json_object_get_string(sig);
            if (strlen(want) == 64 && sodium_memcmp(hex, want, 64) == 0) {
                rc = 0;
                pthread_rwlock_wrlock(&r->lock);
                for (size_t i = 0; i < k && !rc; i++)
                    if (e[i].deadline > now)
                        rc = rev_insert(r, e[i].jti, e[i].deadline, NULL);
                pthread_rwlock_unlock(&r->lock);
            } else {
                *why = "signature does not match (tampered, or another --jwt-secret)";
            }
            mdb_buf_free(&c);
        } else if (e) {
            *why = *why ? *why : "out of memory";
        }
        for (size_t i = 0; i < k; i++)
            free(e[i].jti);
        free(e);
    } else if (root) {
        *why = "missing 'entries' or 'sig'";
    }
    json_object_put(root);
    mdb_buf_free(&b);
    return rc;
}

/* ---- rate limiter -------------------------------------------------------------------------
 * Fixed window per peer. Sharded open-addressing tables (linear probing,
 * backward-shift deletion, load <= 1/2), each bounded by max_peers/shards.
 * A full shard first drops an expired window near the new peer's slot,
 * else the oldest of a small sample: O(1) work per request, even when an
 * attacker cycles through addresses. */
#define LIM_SHARDS 16
#define LIM_SAMPLE 64 /* slots looked at to pick a victim */

typedef struct lim_entry {
    char peer[48]; /* "" = empty slot; an IPv6 text form fits */
    uint32_t hash;
    int64_t start_ms;
    int64_t count;
} lim_entry;

typedef struct lim_shard {
    pthread_mutex_t lock;
    lim_entry *slots;
    size_t cap, used, max;
    char pad[64]; /* keep neighbouring shard locks on separate cache lines */
} lim_shard;

struct auth_limiter {
    int64_t limit, window_ms;
    lim_shard shards[LIM_SHARDS];
};

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

auth_limiter *auth_limiter_new(int64_t limit, int64_t window_s, size_t max_peers)
{
    auth_limiter *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->limit = limit;
    l->window_ms = window_s * 1000;
    size_t per = max_peers / LIM_SHARDS + 1, cap = 16;
    while (cap < per * 2)
        cap <<= 1;
    for (int i = 0; i < LIM_SHARDS; i++) {
        pthread_mutex_init(&l->shards[i].lock, NULL);
        l->shards[i].slots = calloc(cap, sizeof(lim_entry));
        l->shards[i].cap = cap;
        l->shards[i].max = per;
        if (!l->shards[i].slots) {
            auth_limiter_free(l);
            return NULL;
        }
    }
    return l;
}

void auth_limiter_free(auth_limiter *l)
{
    if (!l)
        return;
    for (int i = 0; i < LIM_SHARDS; i++) {
        free(l->shards[i].slots);
        pthread_mutex_destroy(&l->shards[i].lock);
    }
    free(l);
}

/* Empty slot i and shift later members of its probe run back into it. */
static void slot_delete(lim_shard *s, size_t i)
{
    size_t mask = s->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s->slots[j].peer[0])
            break;
        size_t home = s->slots[j].hash & mask;
        /* It may stay if its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i].peer[0] = 0;
    s->used--;
}

/* Make room for one more peer in a full shard. */
static void shard_evict(lim_shard *s, uint32_t h, int64_t now_ms, int64_t window_ms)
{
    size_t mask = s->cap - 1, victim = SIZE_MAX;
    for (size_t k = 0, i = h & mask; k < LIM_SAMPLE; k++, i = (i + 1) & mask) {
        const lim_entry *e = &s->slots[i];
        if (!e->peer[0])
            continue;
        if (e->start_ms + window_ms <= now_ms) {
            victim = i; /* expired: free to forget */
            break;
        }
        if (victim == SIZE_MAX || e->start_ms < s->slots[victim].start_ms)
            victim = i;
    }
    if (victim == SIZE_MAX) /* sample held nothing: take any member */
        for (size_t i = 0; i < s->cap && victim == SIZE_MAX; i++)
            if (s->slots[i].peer[0])
                victim = i;
    if (victim != SIZE_MAX)
        slot_delete(s, victim);
}

int64_t auth_limiter_hit(auth_limiter *l, const char *peer, int64_t now_ms)
{
    char key[48] = {0};
    const char *src = peer && *peer ? peer : "unknown";
    size_t sl = strnlen(src, sizeof key - 1);
    memcpy(key, src, sl);
    key[sl] = 0;
    uint32_t h = fnv(key);
    lim_shard *s = &l->shards[(h >> 24) % LIM_SHARDS];
    pthread_mutex_lock(&s->lock);
    size_t mask = s->cap - 1, i = h & mask;
    while (s->slots[i].peer[0] && (s->slots[i].hash != h || strcmp(s->slots[i].peer, key) != 0))
        i = (i + 1) & mask;
    lim_entry *e = &s->slots[i];
    if (!e->peer[0]) {
        if (s->used >= s->max) {
            shard_evict(s, h, now_ms, l->window_ms);
            i = h & mask; /* the deletion may have moved the run */
            while (s->slots[i].peer[0])
                i = (i + 1) & mask;
            e = &s->slots[i];
        }
        memcpy(e->peer, key, sizeof key);
        e->hash = h;
        e->start_ms = now_ms;
        e->count = 0;
        s->used++;
    }
    if (now_ms - e->start_ms >= l->window_ms) {
        e->start_ms = now_ms;
        e->count = 0;
    }
    int64_t wait = 0;
    if (e->count >= l->limit) {
        wait = (e->start_ms + l->window_ms - now_ms + 999) / 1000;
        if (wait < 1)
            wait = 1;
    } else {
        e->count++;
    }
    pthread_mutex_unlock(&s->lock);
    return wait;
}

void auth_limiter_sweep(auth_limiter *l, int64_t now_ms)
{
    for (int k = 0; k < LIM_SHARDS; k++) {
        lim_shard *s = &l->shards[k];
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->cap;) {
            lim_entry *e = &s->slots[i];
            if (e->peer[0] && e->start_ms + l->window_ms <= now_ms)
                slot_delete(s, i); /* slot i now holds a shifted member: look again */
            else
                i++;
        }
        pthread_mutex_unlock(&s->lock);
    }
}

size_t auth_limiter_tracked(auth_limiter *l)
{
    size_t n = 0;
    for (int i = 0; i < LIM_SHARDS; i++) {
        pthread_mutex_lock(&l->shards[i].lock);
        n += l->shards[i].used;
        pthread_mutex_unlock(&l->shards[i].lock);
    }
    return n;
}
