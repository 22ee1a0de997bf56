/* Unit tests of auth-jwt's internals: the scope matcher (table), tokens
 * (round trip, expiry leeway, tampering, algorithms, jti), the revocation
 * list (persistence, tamper detection, pruning) and the rate limiter. */
#include <errno.h>
#include <jwt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth_core.h"
#include "mdb_cunit.h"

static const unsigned char KEY[] = "unit-test-secret-0123456789abcdef";
#define KEYLEN (sizeof KEY - 1)

typedef struct {
    const char *scope, *action, *coll, *key;
    bool want;
} scope_case;

static const scope_case cases[] = {
    {"*:*:*", "read", "laptops", "lp1", true},
    {"*:*:*", "delete", "any", "*", true},
    {"read:laptops:lp1", "read", "laptops", "lp1", true},
    {"read:laptops:lp1", "read", "laptops", "lp2", false},
    {"read:laptops:lp1", "write", "laptops", "lp1", false},
    {"read:laptops:lp1", "read", "desktops", "lp1", false},
    {"read:laptops:lp1", "read", "laptops", "*", false}, /* not collection level */
    {"read:laptops:*", "read", "laptops", "anything", true},
    {"read:laptops:*", "read", "laptops", "*", true},
    {"read:laptops:*", "read", "laptop", "x", false},
    {"read:laptops:*", "read", "laptopsX", "x", false},
    {"read:*:*", "read", "whatever", "k", true},
    {"read:*:*", "write", "whatever", "k", false},
    {"write:inventory:*", "write", "inventory", "k1", true},
    {"write:inventory:*", "write", "products", "k1", false},
    {"write:inventory:*", "read", "inventory", "k1", false},
    {"delete:laptops:*", "delete", "laptops", "*", true},
    {"read:laptops:store_A_*", "read", "laptops", "store_A_item1", true},
    {"read:laptops:store_A_*", "read", "laptops", "store_A_", true},
    {"read:laptops:store_A_*", "read", "laptops", "store_B_item1", false},
    {"read:laptops:store_A_*", "read", "laptops", "item1", false},
    {"read:laptops:store_A_*", "read", "laptops", "*", false}, /* prefix is not collection level */
    {"*:laptops:*", "read", "laptops", "k", false},            /* no action wildcard */
    {"read:laptops", "read", "laptops", "k", false},           /* two parts */
    {"readlaptops", "read", "laptops", "k", false},
    {"", "read", "laptops", "k", false},
    {"read:a:b:c", "read", "a", "b:c", true}, /* key keeps its colons */
    {"read:a:b:c", "read", "a", "b", false},
    {"read:*:lp1", "read", "any", "lp1", true},
    {"read:*:lp1", "read", "any", "lp2", false},
    {"READ:laptops:*", "read", "laptops", "k", false}, /* case-sensitive */
    {"read:laptops:*", "read", "", "k", false},
    {"read::*", "read", "", "k", true},
};

static void test_scope_table(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const scope_case *c = &cases[i];
        bool got = auth_scope_allows(c->scope, c->action, c->coll, c->key);
        if (got != c->want)
            fprintf(stderr, "scope %s %s:%s:%s -> %d\n", c->scope, c->action, c->coll, c->key, got);
        CU_ASSERT_EQUAL(got, c->want);
    }
    const char *several[] = {"read:a:x", "write:b:*"};
    CU_ASSERT_TRUE(auth_scopes_allow(several, 2, "write", "b", "q"));
    CU_ASSERT_FALSE(auth_scopes_allow(several, 2, "write", "a", "x"));
}

static void test_scope_validation(void)
{
    CU_ASSERT_TRUE(auth_scope_valid("*:*:*"));
    CU_ASSERT_TRUE(auth_scope_valid("read:laptops:*"));
    CU_ASSERT_TRUE(auth_scope_valid("delete:c:store_*"));
    CU_ASSERT_FALSE(auth_scope_valid("read:laptops"));
    CU_ASSERT_FALSE(auth_scope_valid("fly:laptops:*"));
    CU_ASSERT_FALSE(auth_scope_valid("read::*"));
    CU_ASSERT_FALSE(auth_scope_valid("read:c:"));
    CU_ASSERT_FALSE(auth_scope_valid(""));
}

static void test_token_round_trip(void)
{
    const char *scopes[] = {"read:laptops:*", "write:laptops:lp1"};
    char jti[37];
    int64_t now = 1800000000;
    char *tok = auth_token_make(KEY, KEYLEN, "client-a", scopes, 2, now, 3600, jti);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
    CU_ASSERT_EQUAL(strlen(jti), 36);
    CU_ASSERT_EQUAL(jti[14], '4');
    auth_principal *p = NULL;
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, strlen(tok), now + 10, &p), AUTH_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p->pub.subject, "client-a");
    CU_ASSERT_STRING_EQUAL(p->pub.jti, jti);
    CU_ASSERT_EQUAL(p->pub.expires_at, now + 3600);
    CU_ASSERT_EQUAL(p->pub.nscopes, 2);
    CU_ASSERT_STRING_EQUAL(p->pub.scopes[1], "write:laptops:lp1");
    CU_ASSERT_FALSE(p->pub.admin);
    auth_principal_unref(p);
    /* Another key does not verify it. */
    CU_ASSERT_EQUAL(
        auth_token_verify((const unsigned char *)"other-key", 9, tok, strlen(tok), now, &p),
        AUTH_INVALID);
    free(tok);
}

static void test_expiry_leeway(void)
{
    char jti[37];
    const char *s[] = {"*:*:*"};
    int64_t now = 1800000000;
    char *tok = auth_token_make(KEY, KEYLEN, "root", s, 1, now, 60, jti);
    auth_principal *p = NULL;
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, strlen(tok), now + 60, &p), AUTH_OK);
    CU_ASSERT_TRUE(p && p->pub.admin);
    auth_principal_unref(p);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, strlen(tok), now + 60 + AUTH_LEEWAY_S, &p),
                    AUTH_OK);
    auth_principal_unref(p);
    CU_ASSERT_EQUAL(
        auth_token_verify(KEY, KEYLEN, tok, strlen(tok), now + 60 + AUTH_LEEWAY_S + 1, &p),
        AUTH_EXPIRED);
    CU_ASSERT_PTR_NULL(p);
    free(tok);
}

static void test_tampering(void)
{
    char jti[37];
    const char *s[] = {"read:a:*"};
    int64_t now = 1800000000;
    char *tok = auth_token_make(KEY, KEYLEN, "c", s, 1, now, 600, jti);
    auth_principal *p = NULL;
    size_t n = strlen(tok);
    /* Flip one character of the signature. */
    char *bad = strdup(tok);
    bad[n - 3] = bad[n - 3] == 'A' ? 'B' : 'A';
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, bad, n, now, &p), AUTH_INVALID);
    /* Swap in a payload granting admin, keep the old signature. */
    char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    const char *payload = "{\"sub\":\"c\",\"jti\":\"x\",\"exp\":1900000000,\"scopes\":[\"*:*:*\"]}";
    char b64[256];
    sodium_bin2base64(b64, sizeof b64, (const unsigned char *)payload, strlen(payload),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char forged[1024];
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - tok), tok, b64, dot2);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, forged, strlen(forged), now, &p), AUTH_INVALID);
    /* Garbage, binary, oversize. */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, "not-a-token", 11, now, &p), AUTH_INVALID);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, "a.b.c", 5, now, &p), AUTH_INVALID);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, "\x01\xff\x00.x.y", 8, now, &p), AUTH_INVALID);
    char *huge = malloc(AUTH_MAX_TOKEN + 2);
    memset(huge, 'a', AUTH_MAX_TOKEN + 1);
    huge[10] = '.';
    huge[20] = '.';
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, huge, AUTH_MAX_TOKEN + 1, now, &p),
                    AUTH_INVALID);
    free(huge);
    free(bad);
    free(tok);
}

static char *make_raw(jwt_alg_t alg, const char *jti, bool with_exp)
{
    jwt_t *j;
    jwt_new(&j);
    jwt_add_grant(j, "sub", "x");
    if (jti)
        jwt_add_grant(j, "jti", jti);
    if (with_exp)
        jwt_add_grant_int(j, "exp", 1900000000);
    if (alg != JWT_ALG_NONE)
        jwt_set_alg(j, alg, KEY, (int)KEYLEN);
    char *s = jwt_encode_str(j);
    char *out = strdup(s);
    free(s);
    jwt_free(j);
    return out;
}

static void test_algorithms_and_jti(void)
{
    auth_principal *p = NULL;
    int64_t now = 1800000000;
    char *t = make_raw(JWT_ALG_HS256, "abc", true);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_OK);
    CU_ASSERT_EQUAL(p->pub.nscopes, 0); /* no scopes claim: none */
    auth_principal_unref(p);
    free(t);
    t = make_raw(JWT_ALG_HS512, "abc", true);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_INVALID);
    free(t);
    t = make_raw(JWT_ALG_HS384, "abc", true);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_INVALID);
    free(t);
    t = make_raw(JWT_ALG_NONE, "abc", true);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_INVALID);
    free(t);
    t = make_raw(JWT_ALG_HS256, NULL, true); /* missing jti */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_INVALID);
    free(t);
    t = make_raw(JWT_ALG_HS256, "", true); /* empty jti */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_EMPTY_JTI);
    free(t);
    t = make_raw(JWT_ALG_HS256, "abc", false); /* missing exp */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_INVALID);
    free(t);
}

static void test_revocation_list(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/mdb-test-rev-%d.json", (int)getpid());
    unlink(path);
    auth_revoked *r = auth_revoked_new(path, KEY, KEYLEN);
    const char *why = NULL;
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), 0); /* no file yet */
    bool existed = true;
    CU_ASSERT_EQUAL(auth_revoked_add(r, "b-jti", 5000, &existed), 0);
    CU_ASSERT_FALSE(existed);
    CU_ASSERT_EQUAL(auth_revoked_add(r, "a-jti", 2000, NULL), 0);
    CU_ASSERT_EQUAL(auth_revoked_add(r, "c\"quoted", 9000, NULL), 0);
    CU_ASSERT_EQUAL(auth_revoked_add(r, "b-jti", 4000, &existed), 0); /* keeps the later deadline */
    CU_ASSERT_TRUE(existed);
    CU_ASSERT_TRUE(auth_revoked_has(r, "a-jti"));
    CU_ASSERT_FALSE(auth_revoked_has(r, "zzz"));
    auth_revoked_free(r);
    struct stat st;
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* Reload: every entry comes back (several entries verify). */
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), 0);
    CU_ASSERT_EQUAL(auth_revoked_count(r), 3);
    CU_ASSERT_TRUE(auth_revoked_has(r, "c\"quoted"));
    /* Pruning drops passed deadlines and rewrites the file. */
    CU_ASSERT_EQUAL(auth_revoked_prune(r, 3000), 0);
    CU_ASSERT_FALSE(auth_revoked_has(r, "a-jti"));
    auth_revoked_free(r);
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), 0);
    CU_ASSERT_EQUAL(auth_revoked_count(r), 2);
    CU_ASSERT_TRUE(auth_revoked_has(r, "b-jti"));
    CU_ASSERT_EQUAL(auth_revoked_prune(r, 4500), 0); /* b-jti kept 5000, not 4000 */
    CU_ASSERT_TRUE(auth_revoked_has(r, "b-jti"));
    auth_revoked_free(r);
    /* Expired entries are not loaded. */
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 6000, &why), 0);
    CU_ASSERT_EQUAL(auth_revoked_count(r), 1);
    auth_revoked_free(r);
    /* Another key, or an edited file, fails the check. */
    r = auth_revoked_new(path, (const unsigned char *)"other", 5);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), -EBADMSG);
    auth_revoked_free(r);
    FILE *f = fopen(path, "r+");
    char buf[512] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    char *d = strstr(buf, "9000");
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    d[0] = '8';
    rewind(f);
    fwrite(buf, 1, n, f);
    fclose(f);
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), -EBADMSG);
    CU_ASSERT_PTR_NOT_NULL(why);
    auth_revoked_free(r);
    /* A file that cannot be written: the add reports it, the entry can be undone. */
    r = auth_revoked_new("/nonexistent-dir-mdb/x.revocations.json", KEY, KEYLEN);
    CU_ASSERT_TRUE(auth_revoked_add(r, "p", 9000, NULL) < 0);
    CU_ASSERT_TRUE(auth_revoked_has(r, "p"));
    auth_revoked_remove(r, "p");
    CU_ASSERT_FALSE(auth_revoked_has(r, "p"));
    CU_ASSERT_EQUAL(auth_revoked_count(r), 0);
    auth_revoked_free(r);
    /* Memory only: nothing written. */
    r = auth_revoked_new(NULL, KEY, KEYLEN);
    CU_ASSERT_FALSE(auth_revoked_has(r, "m"));
    CU_ASSERT_EQUAL(auth_revoked_add(r, "m", 100, NULL), 0);
    CU_ASSERT_TRUE(auth_revoked_has(r, "m"));
    auth_revoked_free(r);
    unlink(path);
}

static void test_rate_limiter(void)
{
    auth_limiter *l = auth_limiter_new(3, 10, 64);
    int64_t t = 1000000;
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.1.1.1", t), 0);
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.1.1.1", t + 1), 0);
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.1.1.1", t + 2), 0);
    int64_t wait = auth_limiter_hit(l, "1.1.1.1", t + 2500);
    CU_ASSERT_EQUAL(wait, 8); /* the real seconds left, rounded up */
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "2.2.2.2", t + 2500), 0);  /* another peer */
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.1.1.1", t + 10000), 0); /* window reset */
    /* Bounded memory: far more peers than the table holds. */
    char ip[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof ip, "10.0.%d.%d", i / 256, i % 256);
        auth_limiter_hit(l, ip, t + 20000 + i);
    }
    CU_ASSERT_TRUE(auth_limiter_tracked(l) <= 64 + 16);
    auth_limiter_free(l);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static void test_revocation_file_forms(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/mdb-test-rev2-%d.json", (int)getpid());
    unlink(path);
    auth_revoked *r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_add(r, "j1", 5000, NULL), 0);
    auth_revoked_free(r);
    FILE *f = fopen(path, "r");
    char good[512] = {0};
    CU_ASSERT_TRUE(fread(good, 1, sizeof good - 1, f) > 0);
    fclose(f);
    /* Exactly the documented shape, signed over the canonical entries text. */
    CU_ASSERT_PTR_NOT_NULL(strstr(good, "{\"entries\":{\"j1\":5000},\"sig\":\""));
    unsigned char mac[32];
    char hex[65];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, KEY, KEYLEN);
    const char *canon = "{\"j1\":5000}";
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)canon, strlen(canon));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    CU_ASSERT_PTR_NOT_NULL(strstr(good, hex));
    const char *why = NULL;
    static const char *const bad[] = {
        "",                                           /* empty */
        "{\"entries\":{}}",                           /* no sig */
        "{\"sig\":\"00\"}",                           /* no entries */
        "{\"entries\":{\"a\":\"x\"},\"sig\":\"00\"}", /* non-integer deadline */
        "[1,2]",
        "{\"entries\":{", /* truncated */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_file(path, bad[i]);
        r = auth_revoked_new(path, KEY, KEYLEN);
        CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), -EBADMSG);
        auth_revoked_free(r);
    }
    /* The good file with trailing garbage is refused; with a newline it is fine. */
    char buf[600];
    snprintf(buf, sizeof buf, "%.*s}x", (int)strcspn(good, "\n") - 1, good);
    write_file(path, buf);
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), -EBADMSG);
    auth_revoked_free(r);
    write_file(path, good);
    r = auth_revoked_new(path, KEY, KEYLEN);
    CU_ASSERT_EQUAL(auth_revoked_load(r, 1000, &why), 0);
    CU_ASSERT_TRUE(auth_revoked_has(r, "j1"));
    auth_revoked_free(r);
    unlink(path);
}

typedef struct {
    char seen[8][32];
    bool prefix[8];
    int n;
} visits;

static void visit(const char *pattern, size_t len, bool prefix, void *ud)
{
    visits *v = ud;
    if (v->n < 8) {
        snprintf(v->seen[v->n], sizeof v->seen[0], "%.*s", (int)len, pattern);
        v->prefix[v->n++] = prefix;
    }
}

static void test_each_key_scope(void)
{
    const char *scopes[] = {"read:laptops:lp1",
                            "read:laptops:store_A_*",
                            "read:laptops:*",
                            "write:laptops:lp9",
                            "read:desktops:d1",
                            "read:*:any1",
                            "*:*:*",
                            "read:laptops",
                            "read:laptops:a:b"};
    visits v = {0};
    auth_each_key_scope(scopes, 9, "read", "laptops", visit, &v);
    CU_ASSERT_EQUAL_FATAL(v.n, 4);
    CU_ASSERT_STRING_EQUAL(v.seen[0], "lp1");
    CU_ASSERT_FALSE(v.prefix[0]);
    CU_ASSERT_STRING_EQUAL(v.seen[1], "store_A_");
    CU_ASSERT_TRUE(v.prefix[1]);
    CU_ASSERT_STRING_EQUAL(v.seen[2], "any1"); /* collection "*" counts everywhere */
    CU_ASSERT_STRING_EQUAL(v.seen[3], "a:b");
    visits w = {0};
    auth_each_key_scope(scopes, 9, "delete", "laptops", visit, &w);
    CU_ASSERT_EQUAL(w.n, 0);
}

static void test_signature_forms(void)
{
    const char *s[] = {"read:a:*"};
    char jti[37];
    int64_t now = 1800000000;
    char *tok = auth_token_make(KEY, KEYLEN, "c", s, 1, now, 600, jti);
    auth_principal *p = NULL;
    size_t n = strlen(tok);
    char buf[2048];
    /* Signature cut short, extended, or removed. */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, n - 2, now, &p), AUTH_INVALID);
    snprintf(buf, sizeof buf, "%sAA", tok);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, buf, strlen(buf), now, &p), AUTH_INVALID);
    size_t cut = (size_t)(strrchr(tok, '.') - tok) + 1;
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, cut, now, &p), AUTH_INVALID);
    /* JWS base64url has no padding: a '=' makes it malformed. */
    snprintf(buf, sizeof buf, "%s=", tok);
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, buf, strlen(buf), now, &p), AUTH_INVALID);
    /* The untouched token verifies; the empty-key check fails. */
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, tok, n, now, &p), AUTH_OK);
    auth_principal_unref(p);
    p = NULL;
    CU_ASSERT_EQUAL(auth_token_verify(KEY, 0, tok, n, now, &p), AUTH_INVALID);
    free(tok);
}

static void test_rate_limiter_eviction(void)
{
    /* 16 shards x (64/16 + 1) peers at most. */
    auth_limiter *l = auth_limiter_new(2, 10, 64);
    int64_t t = 5000000;
    char ip[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i / 65536, (i / 256) % 256, i % 256);
        CU_ASSERT_EQUAL(auth_limiter_hit(l, ip, t), 0); /* a new peer is always admitted */
    }
    CU_ASSERT_TRUE(auth_limiter_tracked(l) <= 16 * 5);
    /* A peer at its limit stays limited while the table churns below it. */
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.2.3.4", t), 0);
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "1.2.3.4", t), 0);
    CU_ASSERT_TRUE(auth_limiter_hit(l, "1.2.3.4", t) > 0);
    /* The sweep forgets ended windows and keeps live ones. */
    CU_ASSERT_TRUE(auth_limiter_hit(l, "1.2.3.4", t + 9999) > 0);
    auth_limiter_sweep(l, t + 10000);
    CU_ASSERT_EQUAL(auth_limiter_tracked(l), 0);
    CU_ASSERT_EQUAL(auth_limiter_hit(l, "5.5.5.5", t + 10000), 0);
    auth_limiter_sweep(l, t + 10001);
    CU_ASSERT_EQUAL(auth_limiter_tracked(l), 1);
    /* Every peer still findable after deletions shifted the probe runs. */
    for (int i = 0; i < 40; i++) {
        snprintf(ip, sizeof ip, "192.168.0.%d", i);
        auth_limiter_hit(l, ip, t + 20000);
        auth_limiter_hit(l, ip, t + 20000);
    }
    auth_limiter_sweep(l, t + 20000); /* nothing expired: nothing dropped */
    int limited = 0;
    for (int i = 0; i < 40; i++) {
        snprintf(ip, sizeof ip, "192.168.0.%d", i);
        limited += auth_limiter_hit(l, ip, t + 20001) > 0;
    }
    CU_ASSERT_EQUAL(limited, 40);
    auth_limiter_free(l);
}

static void test_saturating_add(void)
{
    CU_ASSERT_EQUAL(auth_add_sat(INT64_MAX - 3, AUTH_LEEWAY_S + 1), INT64_MAX);
    CU_ASSERT_EQUAL(auth_add_sat(INT64_MIN + 1, -5), INT64_MIN);
    CU_ASSERT_EQUAL(auth_add_sat(100, AUTH_LEEWAY_S + 1), 106);
    CU_ASSERT_EQUAL(auth_add_sat(-100, 5), -95);
}

static void test_proxy_networks(void)
{
    mdb_net n;
    unsigned char ip[16];
    CU_ASSERT_TRUE_FATAL(mdb_net_parse("10.1.0.0/16", &n));
    CU_ASSERT_TRUE(mdb_ip_parse("10.1.200.3", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("::ffff:10.1.0.9", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("10.2.0.1", ip) && !mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_net_parse("127.0.0.3", &n));
    CU_ASSERT_TRUE(mdb_ip_parse("127.0.0.3", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("127.0.0.4", ip) && !mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_net_parse("192.168.1.128/25", &n));
    CU_ASSERT_TRUE(mdb_ip_parse("192.168.1.200", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("192.168.1.127", ip) && !mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_net_parse("fd00::/8", &n));
    CU_ASSERT_TRUE(mdb_ip_parse("fd12:3456::1", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("fe80::1", ip) && !mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_net_parse("::1", &n));
    CU_ASSERT_TRUE(mdb_ip_parse("0:0:0:0:0:0:0:1", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_net_parse("0.0.0.0/0", &n)); /* every IPv4 address */
    CU_ASSERT_TRUE(mdb_ip_parse("8.8.8.8", ip) && mdb_net_contains(&n, ip));
    CU_ASSERT_TRUE(mdb_ip_parse("2001:db8::1", ip) && !mdb_net_contains(&n, ip));
    static const char *const bad[] = {"",           "10.0.0.0/33",  "::/129",    "10.0.0.1/",
                                      "10.0.0/8",   "host",         "1.2.3.4/x", "/8",
                                      "1.2.3.4/-1", "1.2.3.4/0008", "1.2.3.4 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_FALSE(mdb_net_parse(bad[i], &n));
    CU_ASSERT_FALSE(mdb_ip_parse("999.1.1.1", ip));
}

/* Mutations of a valid token and random bytes: never accepted, never a
 * crash (run under ASan/UBSan in the sanitizer build). */
static void test_token_fuzz(void)
{
    const char *s[] = {"read:a:*", "write:b:k1"};
    char jti[37];
    int64_t now = 1800000000;
    char *tok = auth_token_make(KEY, KEYLEN, "fuzz", s, 2, now, 600, jti);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
    size_t n = strlen(tok);
    char *buf = malloc(n + 64);
    static const char alphabet[] = "ABCxyz019-_.=+/ \x01\xff";
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, tok, n + 1);
        size_t len = n;
        int edits = 1 + (int)randombytes_uniform(4);
        for (int e = 0; e < edits; e++) {
            uint32_t pos = randombytes_uniform((uint32_t)len);
            switch (randombytes_uniform(3)) {
            case 0: /* replace */
                buf[pos] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
                break;
            case 1: /* delete */
                memmove(buf + pos, buf + pos + 1, len - pos);
                len--;
                break;
            default: /* truncate */
                len = pos;
                buf[len] = 0;
            }
            if (!len)
                break;
        }
        auth_principal *p = NULL;
        auth_verify v = auth_token_verify(KEY, KEYLEN, buf, len, now, &p);
        if (v == AUTH_OK) {
            /* Only an edit that left the token as it was may pass. */
            accepted += !(len == n && memcmp(buf, tok, n) == 0);
            auth_principal_unref(p);
        }
    }
    CU_ASSERT_EQUAL(accepted, 0);
    unsigned char rnd[300];
    for (int round = 0; round < 5000; round++) {
        size_t len = 1 + randombytes_uniform(sizeof rnd);
        randombytes_buf(rnd, len);
        auth_principal *p = NULL;
        CU_ASSERT_NOT_EQUAL(auth_token_verify(KEY, KEYLEN, (const char *)rnd, len, now, &p),
                            AUTH_OK);
    }
    free(buf);
    free(tok);
}

/* A compact JWS with the right HMAC over arbitrary header and payload text. */
static char *sign_raw(const char *header, const char *payload)
{
    static char out[65536];
    static char h[2048], p[49152];
    sodium_bin2base64(h, sizeof h, (const unsigned char *)header, strlen(header),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_bin2base64(p, sizeof p, (const unsigned char *)payload, strlen(payload),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, sizeof out, "%s.%s", h, p);
    unsigned char mac[32];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, KEY, KEYLEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)out, strlen(out));
    crypto_auth_hmacsha256_final(&st, mac);
    char sig[64];
    sodium_bin2base64(sig, sizeof sig, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    strcat(out, ".");
    strcat(out, sig);
    return out;
}

static void test_signed_but_malformed_claims(void)
{
    const char *hs = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    int64_t now = 1800000000;
    auth_principal *p = NULL;
    /* The helper makes tokens we accept when the claims are right. */
    char *t =
        sign_raw(hs, "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000,\"scopes\":[\"read:a:*\"]}");
    CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_OK);
    CU_ASSERT_TRUE(p && p->pub.nscopes == 1);
    auth_principal_unref(p);
    static const char *const bad_payloads[] = {
        "not json",
        "[]",
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":\"1900000000\"}", /* exp as text */
        "{\"sub\":1,\"jti\":\"j\",\"exp\":1900000000}",         /* sub not text */
        "{\"sub\":\"s\",\"jti\":5,\"exp\":1900000000}",         /* jti not text */
        "{\"sub\":\"s\",\"exp\":1900000000}",                   /* no jti */
        "{\"jti\":\"j\",\"exp\":1900000000}",                   /* no sub */
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000,\"scopes\":\"read:a:*\"}",
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000,\"scopes\":[1]}",
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000,\"scopes\":[[\"*:*:*\"]]}",
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":-5}", /* long expired */
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1e400}",
        "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000", /* truncated */
    };
    for (size_t i = 0; i < sizeof bad_payloads / sizeof *bad_payloads; i++) {
        t = sign_raw(hs, bad_payloads[i]);
        auth_verify v = auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p);
        if (v == AUTH_OK) {
            fprintf(stderr, "accepted payload %s\n", bad_payloads[i]);
            auth_principal_unref(p);
        }
        CU_ASSERT_NOT_EQUAL(v, AUTH_OK);
    }
    /* Headers: other algorithms, none, garbage - all refused even with a good HMAC. */
    static const char *const bad_headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS512\"}",
        "{\"alg\":\"RS256\"}",
        "{\"typ\":\"JWT\"}",
        "not json",
        "{\"alg\":256}",
    };
    const char *good = "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000}";
    for (size_t i = 0; i < sizeof bad_headers / sizeof *bad_headers; i++) {
        t = sign_raw(bad_headers[i], good);
        CU_ASSERT_NOT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p), AUTH_OK);
    }
    /* 1,025 scopes: refused; 1,024: accepted. */
    char *big = malloc(40000);
    for (int want = 1024; want <= 1025; want++) {
        size_t o =
            (size_t)sprintf(big, "{\"sub\":\"s\",\"jti\":\"j\",\"exp\":1900000000,\"scopes\":[");
        for (int i = 0; i < want; i++)
            o += (size_t)sprintf(big + o, "%s\"\"", i ? "," : ""); /* small: count bound */
        strcpy(big + o, "]}");
        t = sign_raw(hs, big);
        CU_ASSERT_TRUE_FATAL(strlen(t) <= AUTH_MAX_TOKEN);
        CU_ASSERT_EQUAL(auth_token_verify(KEY, KEYLEN, t, strlen(t), now, &p),
                        want == 1024 ? AUTH_OK : AUTH_INVALID);
        if (p)
            auth_principal_unref(p);
        p = NULL;
    }
    free(big);
}

static const mdb_test_def tests[] = {
    {"scope matcher table", test_scope_table},
    {"scope validation", test_scope_validation},
    {"token round trip", test_token_round_trip},
    {"expiry with leeway", test_expiry_leeway},
    {"tampered and garbage tokens", test_tampering},
    {"algorithms and jti", test_algorithms_and_jti},
    {"revocation list", test_revocation_list},
    {"rate limiter", test_rate_limiter},
    {"revocation file forms", test_revocation_file_forms},
    {"key-level scope visitor", test_each_key_scope},
    {"signature forms", test_signature_forms},
    {"token fuzz", test_token_fuzz},
    {"signed but malformed claims", test_signed_but_malformed_claims},
    {"trusted proxy networks", test_proxy_networks},
    {"saturating time arithmetic", test_saturating_add},
    {"rate limiter eviction and sweep", test_rate_limiter_eviction},
    {NULL, NULL},
};
static const mdb_suite_def suites[] = {{"auth-jwt", tests}, {NULL, NULL}};
MDB_CUNIT_MAIN(suites)
