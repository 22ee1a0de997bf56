/*
 * Unit tests of the query-engine parts (evaluator, projection, sort,
 * pagination, joins, extends, schema validation, name rules) against the
 * real core store made with mdb_store_new(), without HTTP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unistr.h>

#include "qe.h"

#include "mdb_cunit.h"

static mdb_store *S;
static qe_mod M;

/* An auth service for the unit tests: principals are read from the
 * subject: "admin" may do anything, "reader:<coll>" may only read <coll>. */
static bool t_allowed(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                      const char *key)
{
    (void)self;
    (void)key;
    if (p->admin)
        return true;
    return act == MDB_ACT_READ && strncmp(p->subject, "reader:", 7) == 0 &&
           strcmp(p->subject + 7, coll) == 0;
}
static const mdb_auth_service T_AUTH = {
    sizeof(mdb_auth_service), NULL, NULL, t_allowed, NULL, NULL};

/* A second fake that follows the real scope grammar "action:collection:key"
 * (key "*", "prefix*" or exact), for the /get scope rules. */
static bool s_match_key(const char *pat, const char *key)
{
    size_t n = strlen(pat);
    if (n && pat[n - 1] == '*')
        return strncmp(pat, key, n - 1) == 0;
    return strcmp(pat, key) == 0;
}

static bool s_split(const char *scope, char *act, char *coll, const char **key)
{
    const char *c1 = strchr(scope, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || (size_t)(c1 - scope) >= 16 || (size_t)(c2 - c1 - 1) >= 80)
        return false;
    memcpy(act, scope, (size_t)(c1 - scope));
    act[c1 - scope] = 0;
    memcpy(coll, c1 + 1, (size_t)(c2 - c1 - 1));
    coll[c2 - c1 - 1] = 0;
    *key = c2 + 1;
    return true;
}

static const char *s_act(mdb_action act)
{
    return act == MDB_ACT_READ ? "read" : act == MDB_ACT_WRITE ? "write" : "delete";
}

static bool s_allowed(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                      const char *key)
{
    (void)self;
    for (size_t i = 0; i < p->nscopes; i++) {
        char a[16], c[80];
        const char *k;
        if (strcmp(p->scopes[i], "*:*:*") == 0)
            return true;
        if (s_split(p->scopes[i], a, c, &k) && strcmp(a, s_act(act)) == 0 &&
            (strcmp(c, "*") == 0 || strcmp(c, coll) == 0) && s_match_key(k, key))
            return true;
    }
    return false;
}

static void s_each(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                   mdb_key_scope_fn fn, void *ud)
{
    (void)self;
    for (size_t i = 0; i < p->nscopes; i++) {
        char a[16], c[80];
        const char *k;
        if (!s_split(p->scopes[i], a, c, &k) || strcmp(a, s_act(act)) != 0 ||
            (strcmp(c, "*") != 0 && strcmp(c, coll) != 0) || strcmp(k, "*") == 0)
            continue;
        size_t n = strlen(k);
        bool prefix = n && k[n - 1] == '*';
        fn(k, prefix ? n - 1 : n, prefix, ud);
    }
}
static const mdb_auth_service S_AUTH = {
    sizeof(mdb_auth_service), NULL, NULL, s_allowed, s_each, NULL};

static mdb_principal ADMIN = {"admin", "j1", 0, true, 0, NULL};

static void setup(void)
{
    if (S)
        mdb_store_free(S);
    S = mdb_store_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(S);
    memset(&M, 0, sizeof M);
    M.store = S;
    M.auth = &T_AUTH;
    M.max_keys = 1000;
}

static void put(const char *coll, const char *key, const char *json)
{
    json_object *j = json_tokener_parse(json);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    mdb_write *w = mdb_write_begin(S, coll, strlen(coll));
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(mdb_write_put(w, key, strlen(key), j), 0);
    mdb_commit_result res;
    const char *why = NULL;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), 0);
    json_object_put(j);
}

static char last_err[700];
static unsigned last_status;

/* Does the where (JSON text) match coll/key? -1 on a compile error
 * (last_err holds its text). */
static int match(const char *coll, const char *key, const char *where)
{
    qe_arena a = {0};
    qe_where w;
    qe_err e = {0};
    json_object *j = json_tokener_parse(where);
    int rc = qe_where_compile(&a, j, NULL, &w, &e);
    if (rc == 0) {
        mdb_read *rv;
        CU_ASSERT_EQUAL_FATAL(mdb_read_begin(S, coll, strlen(coll), &rv), 0);
        const mdb_doc *d = mdb_read_get(rv, key, strlen(key));
        CU_ASSERT_PTR_NOT_NULL(d);
        rc = d ? qe_where_match(&w, d, NULL) : -1;
        mdb_read_end(rv);
    } else {
        snprintf(last_err, sizeof last_err, "%s", e.msg);
        rc = -1;
    }
    json_object_put(j);
    qe_arena_free(&a);
    return rc;
}

/* Compile error text of a where. */

static int compile_err(const char *where)
{
    qe_arena a = {0};
    qe_where w;
    qe_err e = {0};
    json_object *j = json_tokener_parse(where);
    int rc = qe_where_compile(&a, j, NULL, &w, &e);
    snprintf(last_err, sizeof last_err, "%s", e.msg);
    last_status = e.status;
    json_object_put(j);
    qe_arena_free(&a);
    return rc;
}

/* Run a /get body as principal p through the route's preamble, parser,
 * scope rules and executor; returns the parsed reply (caller puts) or NULL
 * with last_status/last_err set. */
static char last_text[8192]; /* the last reply's text, cut to fit */

static json_object *get_as(const mdb_principal *p, const char *body)
{
    qe_arena a = {0};
    qe_query q;
    qe_err e = {0};
    mdb_buf out;
    mdb_buf_init(&out);
    json_object *j = json_tokener_parse(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_object *res = NULL;
    const char *coll;
    size_t clen;
    last_status = 0;
    last_err[0] = 0;
    if (qe_preamble(&M, p, j, &qe_get_spec, &coll, &clen, &e) == 0 &&
        qe_parse_get(&a, j, coll, clen, &q, &e) == 0 && qe_scope_get(&M, p, &a, &q, &e) == 0 &&
        qe_run_get(S, &q, &out, &e) == 0) {
        mdb_buf_putc(&out, 0);
        snprintf(last_text, sizeof last_text, "%s", out.data);
        res = json_tokener_parse(out.data);
        CU_ASSERT_PTR_NOT_NULL(res);
        last_status = 200;
    } else {
        last_status = e.status;
        snprintf(last_err, sizeof last_err, "%s", e.msg);
    }
    mdb_buf_free(&out);
    json_object_put(j);
    qe_arena_free(&a);
    return res;
}

static json_object *get(const char *body)
{
    return get_as(&ADMIN, body);
}

static json_object *at(json_object *arr, size_t i)
{
    return json_object_array_get_idx(arr, i);
}

static json_object *mem(json_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *s = strtok_r(buf, ".", &save); s && o; s = strtok_r(NULL, ".", &save)) {
        json_object *n = NULL;
        if (!json_object_object_get_ex(o, s, &n))
            return NULL;
        o = n;
    }
    return o;
}

/* json-c represents null as a NULL pointer: tell "present and null" apart. */
static bool is_null_member(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) && v == NULL;
}

static int64_t num(json_object *o, const char *path)
{
    return json_object_get_int64(mem(o, path));
}

static const char *str(json_object *o, const char *path)
{
    json_object *v = mem(o, path);
    return v ? json_object_get_string(v) : NULL;
}

/* ---- evaluator ------------------------------------------------------------- */
static void seed_eval(void)
{
    setup();
    put("t", "a",
        "{\"n\":10,\"d\":2.5,\"s\":\"Hello World\",\"b\":true,\"z\":null,\"arr\":[\"Red\",2,"
        "false],\"o\":{\"x\":{\"y\":7},\"name\":\"Ünïcödé\"},\"ru\":\"ПРИВЕТ\",\"mix\":\"30\"}");
}

static void test_eq_aliases_and_types(void)
{
    seed_eval();
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":10}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":10.0}"), 1); /* numbers by value */
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":11}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$eq\":10}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$equals\":10}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":\"10\"}"), 0); /* no coercion */
    CU_ASSERT_EQUAL(match("t", "a", "{\"mix\":30}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"mix\":\"30\"}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":\"hello world\"}"), 1); /* case-insensitive */
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":\"hello\"}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"b\":true}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"b\":false}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"b\":1}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"z\":null}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"missing\":null}"), 0); /* missing is not null */
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":[\"Red\",2,false]}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":[\"Red\",2]}"), 0);
    /* an object is an operator object, never a literal (README "WHERE") */
    CU_ASSERT_EQUAL(match("t", "a", "{\"o\":{\"x\":{\"y\":7},\"name\":\"Ünïcödé\"}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: x");
    CU_ASSERT_EQUAL(match("t", "a", "{\"o\":{}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nothing\":{}}"), 1); /* {} holds, missing or not */
    CU_ASSERT_EQUAL(match("t", "a", "{\"o.x.y\":7}"), 1);    /* dot paths */
    CU_ASSERT_EQUAL(match("t", "a", "{\"o.x.y\":{\"$gte\":7}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"o.x.z\":7}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr.0\":\"Red\"}"), 0); /* no array indexing */
    /* Unicode lowercase of common ranges */
    CU_ASSERT_EQUAL(match("t", "a", "{\"o.name\":\"üNÏCÖDÉ\"}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"ru\":\"привет\"}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"ru\":\"пока\"}"), 0);
}

static void test_ne_and_missing(void)
{
    seed_eval();
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$ne\":11}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$notEquals\":10}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$ne\":\"HELLO WORLD\"}}"), 0);
    /* a missing field satisfies $ne and $nin, nothing else */
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$ne\":1}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$nin\":[1]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$in\":[1,null]}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$gt\":0}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$lt\":0}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$contains\":\"x\"}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"nope\":{\"$eq\":null}}"), 0);
    /* type mismatch: $eq false, $ne true */
    CU_ASSERT_EQUAL(match("t", "a", "{\"mix\":{\"$ne\":30}}"), 1);
}

static void test_ranges(void)
{
    seed_eval();
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$gt\":9}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$gt\":10}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$greaterThan\":9.5}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$gte\":10}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$greaterThanOrEqual\":10.5}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$lt\":10}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$lessThan\":11}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$lte\":10}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$lessThanOrEqual\":9}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"d\":{\"$gt\":2,\"$lt\":3}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"d\":{\"$gt\":2,\"$lt\":2.5}}"), 0);
    /* non-numbers never satisfy range operators */
    CU_ASSERT_EQUAL(match("t", "a", "{\"mix\":{\"$gt\":5}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$gt\":\"A\"}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"b\":{\"$gte\":0}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"z\":{\"$lte\":0}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$gt\":\"5\"}}"), 0);
}

static void test_in_nin_contains(void)
{
    seed_eval();
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$in\":[1,10]}}"), 1); /* numbers as numbers */
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$oneOf\":[1,2]}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$in\":[\"x\",\"HELLO world\"]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$in\":[]}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$nin\":[]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$nin\":[\"hello world\"]}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$notIn\":[1,2]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"b\":{\"$in\":[true]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"z\":{\"$in\":[null]}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$contains\":\"LO wor\"}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$ct\":\"xyz\"}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"o.name\":{\"$contains\":\"CÖD\"}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":{\"$contains\":\"red\"}}"), 1); /* element, ci */
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":{\"$contains\":\"re\"}}"), 0);  /* not substring */
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":{\"$contains\":2}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":{\"$contains\":false}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"arr\":{\"$contains\":3}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":{\"$contains\":1}}"), 0);
}

static void test_and_or_nesting(void)
{
    seed_eval();
    CU_ASSERT_EQUAL(match("t", "a", "{\"$or\":[{\"n\":1},{\"s\":\"hello world\"}]}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"$or\":[{\"n\":1},{\"s\":\"x\"}]}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"$or\":[]}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"$and\":[]}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"$and\":[{\"n\":10},{\"b\":true}]}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"$and\":[{\"n\":10},{\"b\":false}]}"), 0);
    CU_ASSERT_EQUAL(
        match("t", "a",
              "{\"$or\":[{\"$and\":[{\"n\":10},{\"b\":false}]},{\"$and\":[{\"d\":2.5},{\"$or\":[{"
              "\"z\":null}]}]}]}"),
        1);
    CU_ASSERT_EQUAL(match("t", "a", "[{\"n\":10},{\"b\":true}]"), 1); /* array = AND */
    CU_ASSERT_EQUAL(match("t", "a", "[{\"n\":10},{\"b\":false}]"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"n\":10,\"s\":\"nope\"}"), 0); /* implicit AND */
}

static void test_system_fields_in_where(void)
{
    setup();
    put("t", "a", "{\"x\":1}");
    put("t", "b", "{\"x\":2}");
    put("t", "b", "{\"x\":3}"); /* _v 2, _seq kept */
    CU_ASSERT_EQUAL(match("t", "a", "{\"_seq\":0}"), 1);
    CU_ASSERT_EQUAL(match("t", "b", "{\"_seq\":{\"$gt\":0}}"), 1);
    CU_ASSERT_EQUAL(match("t", "b", "{\"_v\":2}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"_v\":{\"$gte\":2}}"), 0);
    CU_ASSERT_EQUAL(match("t", "a", "{\"_createdAt\":{\"$gt\":1000000000000}}"), 1);
    CU_ASSERT_EQUAL(match("t", "a", "{\"_modifiedAt\":{\"$lt\":1000}}"), 0);
    /* cursor pagination on _seq through /get */
    json_object *r = get("{\"collection\":\"t\",\"where\":{\"_seq\":{\"$lt\":1}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 1);
    CU_ASSERT_STRING_EQUAL(str(at(r, 0), "_key"), "a");
    json_object_put(r);
}

static void test_where_errors(void)
{
    CU_ASSERT_EQUAL(compile_err("{\"n\":{\"$regex\":\"x\"}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: $regex");
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_EQUAL(compile_err("{\"$nor\":[]}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: $nor");
    CU_ASSERT_EQUAL(compile_err("{\"n\":{\"$or\":[]}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: $or");
    CU_ASSERT_EQUAL(compile_err("{\"$or\":{\"a\":1}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: $or expects an array");
    CU_ASSERT_EQUAL(compile_err("{\"$and\":1}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: $and expects an array");
    CU_ASSERT_EQUAL(compile_err("{\"n\":{\"$in\":5}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: $in expects an array");
    CU_ASSERT_EQUAL(compile_err("{\"n\":{\"$notIn\":\"x\"}}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: $notIn expects an array");
    CU_ASSERT_EQUAL(compile_err("{\"a..b\":1}"), -1);
    CU_ASSERT_STRING_EQUAL(
        last_err,
        "Invalid field name: 'a..b'. Must be alphanumeric with _, -, . only (1-128 chars)");
    CU_ASSERT_EQUAL(compile_err("{\"n\":{\"$gt\":1,\"$lt\":5}}"), 0);
}

/* ---- names --------------------------------------------------------------------- */
static void test_name_rules(void)
{
    qe_err e = {0};
    CU_ASSERT_EQUAL(qe_check_collection("laptops", 7, &e), 0);
    CU_ASSERT_EQUAL(qe_check_collection("../etc/passwd", 13, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Invalid collection name: '../etc/passwd'. Must be alphanumeric "
                                  "with _, - only (1-64 chars)");
    CU_ASSERT_EQUAL(qe_check_collection("admin", 5, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Invalid collection name: 'admin (reserved name)'. Must be "
                                  "alphanumeric with _, - only (1-64 chars)");
    char longname[80];
    memset(longname, 'a', 65);
    longname[65] = 0;
    CU_ASSERT_EQUAL(qe_check_collection(longname, 65, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Collection name too long (max 64 characters)");
    CU_ASSERT_EQUAL(qe_check_collection("", 0, &e), -1);
    CU_ASSERT_EQUAL(qe_check_key("a.b-c_1", 7, &e), 0);
    CU_ASSERT_EQUAL(qe_check_key("a b", 3, &e), -1);
    CU_ASSERT_STRING_EQUAL(
        e.msg, "Invalid key name: 'a b'. Must be alphanumeric with _, -, . only (1-256 chars)");
    char longkey[300];
    memset(longkey, 'k', 257);
    CU_ASSERT_EQUAL(qe_check_key(longkey, 257, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Key name too long (max 256 characters)");
    CU_ASSERT_EQUAL(qe_check_field("specs.cpu.ghz", 13, &e), 0);
    CU_ASSERT_EQUAL(qe_check_field(".a", 2, &e), -1);
    CU_ASSERT_EQUAL(qe_check_field("a.", 2, &e), -1);
    memset(longkey, 'f', 129);
    longkey[129] = 0;
    CU_ASSERT_EQUAL(qe_check_field(longkey, 129, &e), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, " (too long)'. Must be alphanumeric"));
}

/* ---- /get: projection, sort, pagination ------------------------------------------- */
static void seed_laptops(void)
{
    setup();
    put("laptops", "lp1",
        "{\"brand\":\"Lenovo\",\"price\":1499,\"in_stock\":true,\"memory_id\":\"mem2\",\"tags\":["
        "\"business\"],\"specs\":{\"cpu\":{\"brand\":\"Intel\",\"cores\":12,\"ghz\":3.5},"
        "\"weight_kg\":1.12}}");
    put("laptops", "lp2",
        "{\"brand\":\"Apple\",\"price\":3499,\"in_stock\":true,\"memory_id\":\"mem5\",\"tags\":["
        "\"creative\"],\"specs\":{\"cpu\":{\"brand\":\"Apple\",\"cores\":12,\"ghz\":4.05},"
        "\"weight_kg\":2.15}}");
    put("laptops", "lp3",
        "{\"brand\":\"Asus\",\"price\":1699,\"in_stock\":false,\"memory_id\":\"mem9\",\"tags\":["
        "\"gaming\"],\"specs\":{\"cpu\":{\"brand\":\"AMD\",\"cores\":8,\"ghz\":4.9},\"weight_kg\":"
        "1.65}}");
    put("laptops", "lp4", "{\"brand\":\"Dell\",\"price\":\"n/a\",\"memory_id\":\"mem2\"}");
    put("laptops", "lp5", "{\"brand\":\"acer\",\"memory_id\":7}");
    put("memory", "mem2", "{\"capacity_gb\":16,\"type\":\"LPDDR5\"}");
    put("memory", "mem5", "{\"capacity_gb\":36,\"type\":\"Unified\"}");
}

static void test_fields_projection(void)
{
    seed_laptops();
    json_object *r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"fields\":[\"brand\","
                         "\"specs.cpu.ghz\",\"specs.cpu.cores\",\"specs.nope.x\",\"_seq\","
                         "\"_createdAt\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "brand"), "Lenovo");
    CU_ASSERT_STRING_EQUAL(str(r, "_key"), "lp1");
    CU_ASSERT_EQUAL(num(r, "_v"), 1);
    CU_ASSERT_EQUAL(num(r, "_seq"), 0);
    CU_ASSERT_EQUAL(json_object_get_double(mem(r, "specs.cpu.ghz")), 3.5);
    CU_ASSERT_EQUAL(num(r, "specs.cpu.cores"), 12);
    CU_ASSERT_PTR_NULL(mem(r, "specs.cpu.brand"));
    CU_ASSERT_PTR_NULL(mem(r, "specs.weight_kg"));
    CU_ASSERT_PTR_NULL(mem(r, "specs.nope")); /* absent branches are left out */
    CU_ASSERT_PTR_NULL(mem(r, "price"));
    CU_ASSERT_PTR_NULL(mem(r, "_modifiedAt"));
    const char *iso = str(r, "_createdAt");
    CU_ASSERT_PTR_NOT_NULL_FATAL(iso);
    CU_ASSERT_EQUAL(strlen(iso), 20);
    CU_ASSERT_EQUAL(iso[19], 'Z');
    json_object_put(r);

    /* no projection: system fields other than _key/_v stay hidden */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "_seq"));
    CU_ASSERT_PTR_NULL(mem(r, "_createdAt"));
    CU_ASSERT_EQUAL(num(r, "_v"), 1);
    CU_ASSERT_EQUAL(json_object_get_double(mem(r, "specs.weight_kg")), 1.12);
    json_object_put(r);

    /* "fields": [] gives only _key and _v */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp2\",\"fields\":[]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_object_length(r), 2);
    json_object_put(r);
}

static void test_excluded_fields(void)
{
    seed_laptops();
    json_object *r = get("{\"collection\":\"laptops\",\"keys\":[\"lp1\"],\"excludedFields\":["
                         "\"price\",\"specs.cpu\",\"specs.weight_kg\",\"_v\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    json_object *d = at(r, 0);
    CU_ASSERT_STRING_EQUAL(str(d, "brand"), "Lenovo");
    CU_ASSERT_PTR_NULL(mem(d, "price"));
    CU_ASSERT_PTR_NULL(mem(d, "specs")); /* emptied parent removed */
    CU_ASSERT_EQUAL(num(d, "_v"), 1);    /* cannot be excluded */
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"fields\":[\"a\"],\"excludedFields\":[\"b\"]}");
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_STRING_EQUAL(last_err, "'fields' and 'excludedFields' cannot be used together");
}

static void test_sort_total_order(void)
{
    seed_laptops();
    /* price: 1499, 3499, 1699, "n/a", missing */
    json_object *r = get("{\"collection\":\"laptops\",\"sort\":[{\"field\":\"price\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 5);
    const char *asc[] = {"lp1", "lp3", "lp2", "lp4", "lp5"};
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_STRING_EQUAL(str(at(r, i), "_key"), asc[i]);
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"sort\":[{\"field\":\"price\",\"order\":\"DESC\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const char *desc[] = {"lp5", "lp4", "lp2", "lp3", "lp1"};
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_STRING_EQUAL(str(at(r, i), "_key"), desc[i]);
    json_object_put(r);
    /* multi-spec: in_stock (bool) asc then price desc; missing in_stock last */
    r = get("{\"collection\":\"laptops\",\"sort\":[\"in_stock\",{\"field\":\"price\",\"order\":"
            "\"desc\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const char *multi[] = {"lp3", "lp2", "lp1", "lp5", "lp4"}; /* missing price first desc */
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_STRING_EQUAL(str(at(r, i), "_key"), multi[i]);
    json_object_put(r);
    /* strings sort byte-wise; numbers before strings */
    r = get("{\"collection\":\"laptops\",\"sort\":[\"memory_id\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const char *mid[] = {"lp5", "lp1", "lp4", "lp2", "lp3"}; /* 7, mem2, mem2, mem5, mem9 */
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_STRING_EQUAL(str(at(r, i), "_key"), mid[i]);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"sort\":[{\"order\":\"asc\"}]}"));
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"sort\":\"price\"}"));
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"sort\":[\"price\"],\"order\":\"asc\"}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'order' and 'sort' cannot be used together");
}

static void test_pagination(void)
{
    setup();
    char key[16], doc[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "item_%04d", i);
        snprintf(doc, sizeof doc, "{\"category\":\"%c\",\"value\":%d}", "ABCD"[i % 4], i);
        put("stress", key, doc);
    }
    /* newest first by default, page cut from the match order */
    json_object *r = get("{\"collection\":\"stress\",\"where\":{\"category\":\"A\"},\"count\":3}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 3);
    CU_ASSERT_EQUAL(num(at(r, 0), "value"), 996);
    CU_ASSERT_EQUAL(num(at(r, 2), "value"), 988);
    json_object_put(r);
    r = get("{\"collection\":\"stress\",\"where\":{\"category\":\"A\"},\"count\":3,\"offset\":3}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(at(r, 0), "value"), 984);
    CU_ASSERT_EQUAL(num(at(r, 2), "value"), 976);
    json_object_put(r);
    r = get("{\"collection\":\"stress\",\"order\":\"asc\",\"count\":2}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(at(r, 0), "value"), 0);
    CU_ASSERT_EQUAL(num(at(r, 1), "value"), 1);
    json_object_put(r);
    r = get("{\"collection\":\"stress\"}"); /* default count 100 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 100);
    json_object_put(r);
    r = get("{\"collection\":\"stress\",\"sort\":[{\"field\":\"value\",\"order\":\"desc\"}],"
            "\"offset\":3,\"count\":3}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(at(r, 0), "value"), 996);
    CU_ASSERT_EQUAL(num(at(r, 2), "value"), 994);
    json_object_put(r);
    r = get("{\"collection\":\"stress\",\"where\":{\"value\":{\"$lt\":500}},\"sort\":[{\"field\":"
            "\"value\",\"order\":\"desc\"}],\"count\":3}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(at(r, 0), "value"), 499);
    CU_ASSERT_EQUAL(num(at(r, 2), "value"), 497);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"offset\":1000}"));
    CU_ASSERT_EQUAL(last_status, 404);
    CU_ASSERT_STRING_EQUAL(last_err, "No documents found");
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"count\":0}"));
    CU_ASSERT_EQUAL(last_status, 404);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"count\":1001}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'count' cannot exceed 1000");
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"count\":\"5\"}"));
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"offset\":-1}"));
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"order\":\"up\"}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'order' must be \"asc\" or \"desc\"");
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"stress\",\"bogus\":1}"));
    CU_ASSERT_STRING_EQUAL(
        last_err, "Unknown property: 'bogus'. Check the API docs for supported properties");
    CU_ASSERT_PTR_NULL(get("{\"keys\":\"a\"}"));
    CU_ASSERT_STRING_EQUAL(last_err, "Missing 'collection' name");
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"nope\"}"));
    CU_ASSERT_EQUAL(last_status, 404);
}

static void test_keys_forms(void)
{
    seed_laptops();
    json_object *r = get("{\"collection\":\"laptops\",\"keys\":[\"lp1\",\"lp3\",\"zz\",\"lp1\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 2);      /* missing skipped, duplicates collapse */
    CU_ASSERT_STRING_EQUAL(str(at(r, 0), "_key"), "lp3"); /* newest first */
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"keys\":\"zz\"}"));
    CU_ASSERT_EQUAL(last_status, 404);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"where\":{\"brand\":"
                           "\"Apple\"}}"));
    CU_ASSERT_EQUAL(last_status, 404);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"keys\":\"bad key\"}"));
    CU_ASSERT_EQUAL(last_status, 400);
    M.max_keys = 2;
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"keys\":[\"a\",\"b\",\"c\"]}"));
    CU_ASSERT_STRING_EQUAL(last_err, "Too many keys in single request (max 2)");
    M.max_keys = 1000;
}

static void test_joins(void)
{
    seed_laptops();
    json_object *r = get("{\"collection\":\"laptops\",\"fields\":[\"brand\"],\"order\":\"asc\","
                         "\"joins\":[{\"ram\":{\"from\":\"memory\",\"on\":\"memory_id\"}}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 5);
    CU_ASSERT_EQUAL(num(at(r, 0), "ram.capacity_gb"), 16);
    CU_ASSERT_EQUAL(num(at(r, 0), "ram._v"), 1); /* raw system fields */
    CU_ASSERT_PTR_NOT_NULL(mem(at(r, 0), "ram._createdAt"));
    CU_ASSERT_EQUAL(num(at(r, 1), "ram.capacity_gb"), 36);
    /* missing target and non-string "on": the alias is left out */
    CU_ASSERT_PTR_NULL(mem(at(r, 2), "ram"));
    CU_ASSERT_FALSE(is_null_member(at(r, 2), "ram"));
    CU_ASSERT_PTR_NULL(mem(at(r, 4), "ram"));
    CU_ASSERT_PTR_NOT_NULL(mem(at(r, 0), "ram"));
    json_object_put(r);
    /* join fields, where and sort on the joined document */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\",\"on\":"
            "\"memory_id\",\"fields\":[\"capacity_gb\"]}}],\"where\":{\"ram.capacity_gb\":{"
            "\"$gte\":16}},\"sort\":[{\"field\":\"ram.capacity_gb\",\"order\":\"desc\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 3);
    CU_ASSERT_STRING_EQUAL(str(at(r, 0), "_key"), "lp2");
    CU_ASSERT_EQUAL(num(at(r, 0), "ram.capacity_gb"), 36);
    CU_ASSERT_PTR_NULL(mem(at(r, 0), "ram.type"));
    CU_ASSERT_PTR_NULL(mem(at(r, 0), "ram._v"));
    json_object_put(r);
    /* joins after filtering: a where match outside the newest window is still found */
    r = get("{\"collection\":\"laptops\",\"count\":1,\"where\":{\"brand\":\"lenovo\"},\"joins\":"
            "[{\"ram\":{\"from\":\"memory\",\"on\":\"memory_id\"}}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(at(r, 0), "_key"), "lp1");
    CU_ASSERT_EQUAL(num(at(r, 0), "ram.capacity_gb"), 16);
    json_object_put(r);
    /* self-join (a second view on the same collection, never nested) */
    r = get("{\"collection\":\"memory\",\"keys\":\"mem2\",\"joins\":[{\"me\":{\"from\":"
            "\"laptops\",\"on\":\"type\"}}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "me"));
    CU_ASSERT_FALSE(is_null_member(r, "me"));
    json_object_put(r);
}

/* ---- extends --------------------------------------------------------------------- */
static void test_extends(void)
{
    seed_laptops();
    json_object *doc = json_tokener_parse(
        "{\"brand\":\"MSI\",\"extends\":{\"ram\":\"memory.mem5\",\"other\":\"laptops.lp1\"}}");
    json_object *res = NULL;
    qe_err e = {0};
    CU_ASSERT_EQUAL_FATAL(qe_extends(&M, &ADMIN, doc, &res, &e), 0);
    CU_ASSERT_PTR_NULL(mem(res, "extends"));
    CU_ASSERT_EQUAL(num(res, "ram.capacity_gb"), 36);
    CU_ASSERT_EQUAL(num(res, "ram._v"), 1);
    CU_ASSERT_STRING_EQUAL(str(res, "other.brand"), "Lenovo");
    CU_ASSERT_FALSE(qe_reserved_top(res)); /* embedded _ fields are nested */
    json_object_put(res);
    json_object_put(doc);

    doc = json_tokener_parse("{\"extends\":{\"ram\":\"memory.mem99\"}}");
    CU_ASSERT_EQUAL(qe_extends(&M, &ADMIN, doc, &res, &e), -1);
    CU_ASSERT_EQUAL(e.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "memory.mem99"));
    json_object_put(doc);

    doc = json_tokener_parse("{\"extends\":{\"ram\":\"nodot\"}}");
    CU_ASSERT_EQUAL(qe_extends(&M, &ADMIN, doc, &res, &e), -1);
    CU_ASSERT_EQUAL(e.status, 400);
    json_object_put(doc);

    /* read scope on the target is required */
    mdb_principal reader = {"reader:laptops", "j2", 0, false, 0, NULL};
    doc = json_tokener_parse("{\"extends\":{\"ram\":\"memory.mem5\"}}");
    CU_ASSERT_EQUAL(qe_extends(&M, &reader, doc, &res, &e), -1);
    CU_ASSERT_EQUAL(e.status, 403);
    CU_ASSERT_STRING_EQUAL(e.msg, "Forbidden: token lacks 'read:memory:mem5' scope");
    json_object_put(doc);

    /* extends that is not an object stays an ordinary field */
    doc = json_tokener_parse("{\"extends\":\"memory.mem5\"}");
    CU_ASSERT_EQUAL(qe_extends(&M, &ADMIN, doc, &res, &e), 0);
    CU_ASSERT_STRING_EQUAL(str(res, "extends"), "memory.mem5");
    json_object_put(res);
    json_object_put(doc);

    doc = json_tokener_parse("{\"a\":{\"_x\":1}}");
    CU_ASSERT_FALSE(qe_reserved_top(doc));
    json_object_put(doc);
    doc = json_tokener_parse("{\"_x\":1}");
    CU_ASSERT_TRUE(qe_reserved_top(doc));
    json_object_put(doc);
}

/* ---- schema ---------------------------------------------------------------------- */
static int schema_ok(const char *schema, const char *doc)
{
    qe_err e = {0};
    json_object *sj = json_tokener_parse(schema);
    qe_schema *s = qe_schema_build(sj, &e);
    json_object_put(sj);
    if (!s) {
        snprintf(last_err, sizeof last_err, "%s", e.msg);
        return -1;
    }
    mdb_buf b;
    mdb_buf_init(&b);
    const char *why;
    CU_ASSERT_EQUAL_FATAL(mdb_encode_json_text(doc, strlen(doc), &b, &why), 0);
    int ok = qe_schema_validate(s, mdb_val_at(&b, 0));
    mdb_buf_free(&b);
    qe_schema_free(s);
    return ok;
}

static void test_schema_keywords(void)
{
    const char *sch = "{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{\"name\":{"
                      "\"type\":\"string\",\"minLength\":2,\"maxLength\":5},\"age\":{\"type\":"
                      "\"integer\",\"minimum\":0,\"maximum\":150},\"role\":{\"enum\":[\"a\","
                      "\"b\",null]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
                      "\"code\":{\"type\":\"string\",\"pattern\":\"^[A-Z]\\\\d+$\"}},"
                      "\"additionalProperties\":false}";
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":30}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"age\":30}"), 0);          /* required */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"B\"}"), 0);      /* minLength */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bobby1\"}"), 0); /* maxLength */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Äöü\"}"), 1);    /* code points */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":-1}"), 0);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":151}"), 0);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":3.5}"), 0); /* integer */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":3.0}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"age\":\"thirty\"}"), 0);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"role\":\"b\"}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"role\":null}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"role\":\"c\"}"), 0); /* enum */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"tags\":[\"x\",\"y\"]}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"tags\":[\"x\",1]}"), 0); /* items */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"extra\":1}"), 0); /* additionalProps */
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"code\":\"A12\"}"), 1);
    CU_ASSERT_EQUAL(schema_ok(sch, "{\"name\":\"Bob\",\"code\":\"a12\"}"), 0); /* pattern */
    CU_ASSERT_EQUAL(schema_ok(sch, "[1]"), 0);                                 /* type */
    CU_ASSERT_EQUAL(schema_ok("{\"type\":[\"string\",\"null\"]}", "null"), 1);
    CU_ASSERT_EQUAL(schema_ok("{\"type\":[\"string\",\"null\"]}", "1"), 0);
    CU_ASSERT_EQUAL(schema_ok("{\"additionalProperties\":{\"type\":\"number\"}}", "{\"a\":1}"), 1);
    CU_ASSERT_EQUAL(schema_ok("{\"additionalProperties\":{\"type\":\"number\"}}", "{\"a\":\"x\"}"),
                    0);
    CU_ASSERT_EQUAL(schema_ok("{\"minItems\":2,\"maxItems\":3}", "[1,2]"), 1);
    CU_ASSERT_EQUAL(schema_ok("{\"minItems\":2,\"maxItems\":3}", "[1]"), 0);
    CU_ASSERT_EQUAL(schema_ok("{\"anyOf\":[{\"type\":\"string\"},{\"minimum\":5}]}", "7"), 1);
    CU_ASSERT_EQUAL(schema_ok("{\"anyOf\":[{\"type\":\"string\"},{\"minimum\":5}]}", "3"), 0);
    CU_ASSERT_EQUAL(schema_ok("{\"not\":{\"type\":\"string\"}}", "3"), 1);
    CU_ASSERT_EQUAL(schema_ok("true", "3"), 1);
    CU_ASSERT_EQUAL(schema_ok("false", "3"), 0);
}

static void test_schema_invalid(void)
{
    CU_ASSERT_EQUAL(schema_ok("null", "{}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err,
                           "Invalid Schema: Invalid schema: null is not of type \"object\", "
                           "\"boolean\"");
    CU_ASSERT_EQUAL(schema_ok("{\"type\":\"strin\"}", "{}"), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(last_err, "Invalid Schema: Invalid schema: "));
    CU_ASSERT_EQUAL(schema_ok("{\"type\":5}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"required\":\"a\"}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"properties\":[]}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"minimum\":\"1\"}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"minLength\":-1}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"enum\":{}}", "{}"), -1);
    CU_ASSERT_EQUAL(schema_ok("{\"properties\":{\"a\":3}}", "{}"), -1);
}

static void test_schema_hook_and_cache(void)
{
    setup();
    M.auth = &T_AUTH;
    qe_schema_cache_init(&M.schemas);
    mdb_coll_meta meta = {0};
    meta.schema = "{\"required\":[\"a\"]}";
    meta.schema_gen = 1;
    mdb_buf b;
    mdb_buf_init(&b);
    const char *why = NULL;
    CU_ASSERT_EQUAL(mdb_encode_json_text("{\"b\":1}", 7, &b, &why), 0);
    CU_ASSERT_EQUAL(qe_validate_hook("c", &meta, "k", mdb_val_at(&b, 0), 0, &why, &M), -EINVAL);
    CU_ASSERT_STRING_EQUAL(why, "Document does not conform to schema");
    /* a new generation recompiles */
    meta.schema = "{\"required\":[\"b\"]}";
    meta.schema_gen = 2;
    CU_ASSERT_EQUAL(qe_validate_hook("c", &meta, "k", mdb_val_at(&b, 0), 0, &why, &M), 0);
    /* no schema: everything passes */
    meta.schema = NULL;
    CU_ASSERT_EQUAL(qe_validate_hook("d", &meta, "k", mdb_val_at(&b, 0), 0, &why, &M), 0);
    mdb_buf_free(&b);
    qe_schema_cache_free(&M.schemas);
}

/* The lowered form, as Rust's str::to_lowercase gives it. */
static const char *lowered(qe_arena *a, const char *s)
{
    size_t n = 0;
    const char *r = qe_fold_lit(a, s, strlen(s), &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(strlen(r), n);
    return r;
}

/* s equals t case-insensitively, both ways round, and hashes alike. */
static bool ci_same(qe_arena *a, const char *s, const char *t)
{
    const char *ls = lowered(a, s), *lt = lowered(a, t);
    bool st = qe_ci_eq(s, strlen(s), lt, strlen(lt)), ts = qe_ci_eq(t, strlen(t), ls, strlen(ls));
    CU_ASSERT_EQUAL(st, ts);
    if (st)
        CU_ASSERT_EQUAL(qe_fold_hash(s, strlen(s)), qe_hash_bytes(lt, strlen(lt)));
    return st && ts;
}

static void test_case_folding(void)
{
    qe_arena a = {0};
    /* the full mapping, not a few ranges */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ÀÉÎÕÜ ĀĹŽ ΑΩ ЖЁ ABC"), "àéîõü āĺž αω жё abc");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "Ά"), "ά");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "Ǆ"), "ǆ");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ǅ"), "ǆ");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "Ѡ"), "ѡ");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ẞ"), "ß");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ß"), "ß"); /* lowercase, not case folding ("ss") */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "K"), "k"); /* Kelvin sign lowers to ASCII */
    /* one code point to two: U+0130 -> "i" U+0307, longer than the original */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "İ"), "i\xcc\x87");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "Iİ"), "ii\xcc\x87");
    /* final sigma: at the end of a word only */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ΣΑΣ"), "σας");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ΟΔΟΣ"), "οδος");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "ΟΔΟΣ ΣΑΣ"), "οδος σας");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "Σ"), "σ"); /* no cased letter before it */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "AΣ B"), "aς b");
    CU_ASSERT_STRING_EQUAL(lowered(&a, "AΣ.B"), "aσ.b"); /* '.' is case-ignorable: not final */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "AΣB"), "aσb");
    /* no language tailoring (Turkish, Lithuanian): plain I */
    CU_ASSERT_STRING_EQUAL(lowered(&a, "I"), "i");

    CU_ASSERT_TRUE(ci_same(&a, "ΟΔΟΣ", "οδος"));
    CU_ASSERT_TRUE(ci_same(&a, "ΟΔΟΣ", "Οδος"));
    CU_ASSERT_FALSE(ci_same(&a, "ΟΔΟΣ", "οδοσ")); /* medial sigma at the end is not final sigma */
    CU_ASSERT_TRUE(ci_same(&a, "Ά", "ά"));
    CU_ASSERT_TRUE(ci_same(&a, "Ǆ", "ǆ"));
    CU_ASSERT_TRUE(ci_same(&a, "Ѡ", "ѡ"));
    CU_ASSERT_TRUE(ci_same(&a, "ẞ", "ß"));
    CU_ASSERT_FALSE(ci_same(&a, "ß", "ss"));
    CU_ASSERT_TRUE(ci_same(&a, "İ", "i\xcc\x87"));
    CU_ASSERT_FALSE(ci_same(&a, "İ", "i"));
    CU_ASSERT_TRUE(ci_same(&a, "K", "k"));
    CU_ASSERT_TRUE(ci_same(&a, "ABC", "abc"));
    CU_ASSERT_FALSE(ci_same(&a, "abc", "abd"));
    CU_ASSERT_FALSE(ci_same(&a, "abc", "abcd"));
    CU_ASSERT_TRUE(ci_same(&a, "", ""));
    /* a long non-ASCII string lowers past the stack buffer */
    char big[2048], bigl[2048];
    size_t k = 0;
    for (int i = 0; i < 300; i++) {
        memcpy(big + k, "Ω", 2);
        memcpy(bigl + k, "ω", 2);
        k += 2;
    }
    big[k] = bigl[k] = 0;
    CU_ASSERT_TRUE(ci_same(&a, big, bigl));
    CU_ASSERT_TRUE(qe_ci_contains(big, strlen(big), "ωω", 4));
    strcat(big, "Σ"); /* the same through u8_tolower, past its buffer too */
    strcat(bigl, "ς");
    CU_ASSERT_TRUE(ci_same(&a, big, bigl));
    CU_ASSERT_TRUE(qe_ci_contains(big, strlen(big), "ως", strlen("ως")));

    /* The per-code-point path (uc_tolower) agrees with u8_tolower for every
     * code point but the two the engine sends to u8_tolower (qe_text.c). */
    for (ucs4_t c = 0x80; c < 0x110000; c++) {
        if (c == 0x130 || c == 0x3A3 || (c >= 0xD800 && c <= 0xDFFF))
            continue;
        uint8_t in[8], full[64], simple[8];
        int inl = u8_uctomb(in, c, sizeof in);
        size_t fl = sizeof full;
        uint8_t *r = u8_tolower(in, (size_t)inl, NULL, NULL, full, &fl);
        int sl = u8_uctomb(simple, uc_tolower(c), sizeof simple);
        if (r != full || fl != (size_t)sl || memcmp(full, simple, fl) != 0) {
            CU_FAIL("uc_tolower differs from u8_tolower");
            printf("code point U+%04X\n", (unsigned)c);
            break;
        }
    }

    /* substrings are searched in the lowered whole string */
    CU_ASSERT_TRUE(qe_ci_contains("xxÄBCxx", strlen("xxÄBCxx"), "äbc", strlen("äbc")));
    CU_ASSERT_FALSE(qe_ci_contains("xxÄBxx", strlen("xxÄBxx"), "äbc", strlen("äbc")));
    CU_ASSERT_TRUE(qe_ci_contains("ΟΔΟΣ", strlen("ΟΔΟΣ"), "ος", strlen("ος")));
    CU_ASSERT_FALSE(qe_ci_contains("ΟΔΟΣ", strlen("ΟΔΟΣ"), "οσ", strlen("οσ")));
    CU_ASSERT_TRUE(qe_ci_contains("ΣΑΣ", strlen("ΣΑΣ"), "σα", strlen("σα")));
    CU_ASSERT_TRUE(qe_ci_contains("abc", 3, "", 0));
    CU_ASSERT_TRUE(qe_ci_contains("xABCx", 5, "abc", 3));
    CU_ASSERT_FALSE(qe_ci_contains("xABx", 4, "abc", 3));
    CU_ASSERT_FALSE(qe_ci_contains("ab", 2, "abc", 3));
    CU_ASSERT_TRUE(qe_ci_contains("Kelvin", 6, "k", 1));
    CU_ASSERT_FALSE(qe_ci_contains("abc", 3, "ä", strlen("ä")));
    /* a string that is not UTF-8 (a lone surrogate escape) compares by ASCII folding */
    CU_ASSERT_TRUE(qe_ci_eq("A\xed\xa0\x80", 4, "a\xed\xa0\x80", 4));
    CU_ASSERT_FALSE(qe_ci_eq("A\xed\xa0\x80", 4, "a\xed\xa0\x81", 4));
    qe_arena_free(&a);
}

/* ---- scopes (README "Routes") ----------------------------------------------------- */

static void test_scopes(void)
{
    seed_laptops();
    put("stock", "store_A_1", "{\"n\":1}");
    put("stock", "store_A_2", "{\"n\":2}");
    put("stock", "store_B_1", "{\"n\":3}");
    M.auth = &S_AUTH;
    static const char *const ro_s[] = {"read:laptops:*"};
    static const char *const keys_s[] = {"read:laptops:lp1", "read:laptops:lp2", "write:laptops:*"};
    static const char *const pre_s[] = {"read:stock:store_A_*"};
    static const char *const none_s[] = {"write:laptops:*"};
    mdb_principal ro = {"ro", "j", 0, false, 1, ro_s};
    mdb_principal ks = {"ks", "j", 0, false, 3, keys_s};
    mdb_principal ps = {"ps", "j", 0, false, 1, pre_s};
    mdb_principal wo = {"wo", "j", 0, false, 1, none_s};

    json_object *r = get_as(&ro, "{\"collection\":\"laptops\"}");
    CU_ASSERT_PTR_NOT_NULL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 5);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get_as(&ro, "{\"collection\":\"memory\"}"));
    CU_ASSERT_EQUAL(last_status, 403);
    CU_ASSERT_STRING_EQUAL(last_err, "Forbidden: token has no read access to collection 'memory'");
    /* a join into an unreadable collection is refused */
    CU_ASSERT_PTR_NULL(get_as(&ro, "{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":"
                                   "\"memory\",\"on\":\"memory_id\"}}]}"));
    CU_ASSERT_EQUAL(last_status, 403);
    CU_ASSERT_STRING_EQUAL(last_err, "Forbidden: token requires 'read:memory:*' scope");

    /* key scopes: only those keys, newest first */
    r = get_as(&ks, "{\"collection\":\"laptops\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(str(at(r, 0), "_key"), "lp2");
    CU_ASSERT_STRING_EQUAL(str(at(r, 1), "_key"), "lp1");
    json_object_put(r);
    r = get_as(&ks, "{\"collection\":\"laptops\",\"where\":{\"brand\":\"apple\"}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 1);
    json_object_put(r);
    r = get_as(&ks, "{\"collection\":\"laptops\",\"keys\":\"lp1\"}");
    CU_ASSERT_PTR_NOT_NULL(r);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get_as(&ks, "{\"collection\":\"laptops\",\"keys\":[\"lp1\",\"lp3\"]}"));
    CU_ASSERT_EQUAL(last_status, 403);
    CU_ASSERT_STRING_EQUAL(last_err, "Forbidden: token lacks 'read:laptops:lp3' scope");

    /* prefix scopes return the matching keys only */
    r = get_as(&ps, "{\"collection\":\"stock\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(str(at(r, 0), "_key"), "store_A_"));
    CU_ASSERT_PTR_NOT_NULL(strstr(str(at(r, 1), "_key"), "store_A_"));
    json_object_put(r);
    r = get_as(&ps, "{\"collection\":\"stock\",\"keys\":\"store_A_2\"}");
    CU_ASSERT_PTR_NOT_NULL(r);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get_as(&ps, "{\"collection\":\"stock\",\"keys\":\"store_B_1\"}"));
    CU_ASSERT_EQUAL(last_status, 403);
    /* no read scope at all */
    CU_ASSERT_PTR_NULL(get_as(&wo, "{\"collection\":\"laptops\"}"));
    CU_ASSERT_EQUAL(last_status, 403);
    /* collection-level checks used by the write routes */
    qe_err e = {0};
    CU_ASSERT_EQUAL(qe_need_coll_p(&M, &ro, MDB_ACT_WRITE, "laptops", &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Forbidden: token requires 'write:laptops:*' scope");
    CU_ASSERT_EQUAL(qe_need_coll_p(&M, &ks, MDB_ACT_WRITE, "laptops", &e), 0);
    CU_ASSERT_EQUAL(qe_need_coll_p(&M, &ks, MDB_ACT_DELETE, "laptops", &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Forbidden: token requires 'delete:laptops:*' scope");
    CU_ASSERT_EQUAL(qe_need_coll_p(&M, &ks, MDB_ACT_READ, "laptops", &e), -1);
    CU_ASSERT_EQUAL(qe_need_coll_p(&M, NULL, MDB_ACT_READ, "laptops", &e), -1);
    M.auth = &T_AUTH;
}

/* ---- analytics -------------------------------------------------------------------- */
static qe_agg agg(const char *field, const char *where)
{
    qe_arena a = {0};
    qe_where w;
    qe_err e = {0};
    qe_agg g;
    memset(&g, 0, sizeof g);
    json_object *j = where ? json_tokener_parse(where) : NULL;
    CU_ASSERT_EQUAL_FATAL(qe_where_compile(&a, j, NULL, &w, &e), 0);
    g.where = &w;
    if (field) {
        g.has_field = true;
        CU_ASSERT_EQUAL_FATAL(qe_path_init(&a, &g.field, field, strlen(field), NULL), 0);
    }
    mdb_read *rv;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(S, "laptops", 7, &rv), 0);
    mdb_read_scan(rv, false, qe_agg_fn, &g);
    mdb_read_end(rv);
    g.where = NULL;
    json_object_put(j);
    qe_arena_free(&a);
    return g;
}

static void test_analytics_agg(void)
{
    seed_laptops(); /* prices 1499, 3499, 1699, "n/a", missing */
    qe_agg g = agg(NULL, NULL);
    CU_ASSERT_EQUAL(g.scanned, 5);
    CU_ASSERT_EQUAL(g.matched, 5);
    g = agg("price", NULL);
    CU_ASSERT_EQUAL(g.matched, 4); /* documents that have the field */
    CU_ASSERT_EQUAL(g.nums, 3);    /* numeric values only */
    CU_ASSERT_EQUAL(g.sum, 1499 + 3499 + 1699);
    CU_ASSERT_EQUAL(g.min, 1499);
    CU_ASSERT_EQUAL(g.max, 3499);
    g = agg("specs.cpu.cores", "{\"in_stock\":true}");
    CU_ASSERT_EQUAL(g.nums, 2);
    CU_ASSERT_EQUAL(g.sum, 24);
    g = agg("price", "{\"brand\":\"nobody\"}");
    CU_ASSERT_EQUAL(g.nums, 0);
    CU_ASSERT_EQUAL(g.scanned, 5);
}

static void test_odd_where_shapes(void)
{
    seed_eval();
    static const char *const ok_shapes[] = {"[]",
                                            "[[]]",
                                            "[{}]",
                                            "{}",
                                            "{\"n\":{\"$in\":[[1],{\"b\":2},null]}}",
                                            "{\"arr\":{\"$contains\":{\"x\":1}}}",
                                            "{\"$or\":[1,\"x\",null]}",
                                            "{\"$and\":[[],[{\"n\":10}]]}",
                                            "{\"n\":{\"$gt\":null,\"$lt\":[1]}}",
                                            "{\"s\":{\"$contains\":\"\"}}"};
    for (size_t i = 0; i < sizeof ok_shapes / sizeof ok_shapes[0]; i++) {
        int m = match("t", "a", ok_shapes[i]);
        CU_ASSERT(m == 0 || m == 1);
    }
    CU_ASSERT_EQUAL(match("t", "a", "{\"$or\":[1]}"), 1); /* a non-object clause holds */
    CU_ASSERT_EQUAL(match("t", "a", "{\"s\":{\"$contains\":\"\"}}"), 1);
    static const char *const bad_shapes[] = {"{\"\":1}",
                                             "5",
                                             "\"x\"",
                                             "{\"o\":{\"x\":{\"y\":7}}}",
                                             "{\"n\":{\"$gt\":1,\"x\":2}}",
                                             "{\"$or\":[{\"n\":{\"$bad\":1}}]}"};
    for (size_t i = 0; i < sizeof bad_shapes / sizeof bad_shapes[0]; i++) {
        CU_ASSERT_EQUAL(compile_err(bad_shapes[i]), -1);
        CU_ASSERT_EQUAL(last_status, 400);
    }
}

static void test_put_i64(void)
{
    const int64_t v[] = {0, 7, -7, 1234567890123LL, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        mdb_buf b;
        char want[32];
        mdb_buf_init(&b);
        qe_put_i64(&b, v[i]);
        mdb_buf_putc(&b, 0);
        snprintf(want, sizeof want, "%lld", (long long)v[i]);
        CU_ASSERT_STRING_EQUAL(b.data, want);
        mdb_buf_free(&b);
    }
}

/* ---- rules measured against upstream (README "Differences from upstream" and
 * the rules it links) ------------------------------------------------------------ */
static void test_where_operator_objects(void)
{
    seed_laptops();
    /* {} matches every document, on /get as on every path */
    json_object *r = get("{\"collection\":\"laptops\",\"where\":{\"qty\":{}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 5);
    json_object_put(r);
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"where\":{\"a\":{\"b\":2}}}"));
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: b");
    /* nested in $or and in a join's where */
    CU_ASSERT_EQUAL(compile_err("{\"$or\":[{\"specs\":{\"cpu\":{\"cores\":12}}}]}"), -1);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: cpu");
    CU_ASSERT_PTR_NULL(get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
                           "\"on\":\"memory_id\"}}],\"where\":{\"ram\":{\"type\":\"x\"}}}"));
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: Unknown operator: type");
    /* an operator object still needs every operator */
    CU_ASSERT_EQUAL(match("laptops", "lp1", "{\"price\":{\"$gt\":1000,\"$lt\":1500}}"), 1);
    CU_ASSERT_EQUAL(match("laptops", "lp1", "{\"price\":{\"$gt\":1000,\"$lt\":1400}}"), 0);
    /* arrays stay literal equality */
    CU_ASSERT_EQUAL(match("laptops", "lp1", "{\"tags\":[\"business\"]}"), 1);
}

static const char *key_at(json_object *r, size_t i)
{
    return str(at(r, i), "_key");
}

static void test_sort_empty_and_ties(void)
{
    setup();
    put("s", "kd", "{\"g\":1}");
    put("s", "ka", "{\"g\":2}");
    put("s", "kc", "{\"g\":1}");
    put("s", "kb", "{\"g\":1}");
    /* "sort": [] is by _key ascending, not the newest-first default */
    json_object *r = get("{\"collection\":\"s\",\"sort\":[]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 4);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "ka");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "kb");
    CU_ASSERT_STRING_EQUAL(key_at(r, 3), "kd");
    json_object_put(r);
    r = get("{\"collection\":\"s\",\"sort\":[],\"count\":2,\"offset\":1}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "kb");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "kc");
    json_object_put(r);
    /* keys arrays too */
    r = get("{\"collection\":\"s\",\"keys\":[\"kd\",\"kc\",\"ka\"],\"sort\":[]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "ka");
    CU_ASSERT_STRING_EQUAL(key_at(r, 2), "kd");
    json_object_put(r);
    /* ties by _key ascending, also descending on the field */
    r = get("{\"collection\":\"s\",\"sort\":[{\"field\":\"g\",\"order\":\"desc\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "ka");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "kb");
    CU_ASSERT_STRING_EQUAL(key_at(r, 2), "kc");
    CU_ASSERT_STRING_EQUAL(key_at(r, 3), "kd");
    json_object_put(r);
    /* ties on the joins path (every candidate joined before the sort) */
    put("m", "x", "{\"v\":5}");
    put("s", "ke", "{\"g\":1,\"mid\":\"x\"}");
    put("s", "k0", "{\"g\":1,\"mid\":\"x\"}");
    r = get("{\"collection\":\"s\",\"joins\":[{\"j\":{\"from\":\"m\",\"on\":\"mid\"}}],"
            "\"sort\":[\"j.v\"],\"where\":{\"g\":1}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 5);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "k0"); /* joined ones first (missing last) */
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "ke");
    CU_ASSERT_STRING_EQUAL(key_at(r, 2), "kb");
    CU_ASSERT_STRING_EQUAL(key_at(r, 3), "kc");
    CU_ASSERT_STRING_EQUAL(key_at(r, 4), "kd");
    json_object_put(r);
    /* system fields sort like any other */
    r = get("{\"collection\":\"s\",\"sort\":[{\"field\":\"_seq\",\"order\":\"desc\"}],"
            "\"count\":1}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "k0");
    json_object_put(r);
}

/* README "_seq": an overwrite keeps the document's _seq but uses up a value;
 * a drop resets the counter. */
static int64_t seq_of(const char *coll, const char *key)
{
    mdb_read *rv;
    int64_t s = -1;
    if (mdb_read_begin(S, coll, strlen(coll), &rv) == 0) {
        const mdb_doc *d = mdb_read_get(rv, key, strlen(key));
        s = d ? mdb_doc_seq(d) : -1;
        mdb_read_end(rv);
    }
    return s;
}

static void test_seq_counter(void)
{
    setup();
    put("q", "a", "{}");
    put("q", "b", "{}");
    CU_ASSERT_EQUAL(seq_of("q", "a"), 0);
    CU_ASSERT_EQUAL(seq_of("q", "b"), 1);
    put("q", "a", "{\"v\":2}");
    CU_ASSERT_EQUAL(seq_of("q", "a"), 0);
    put("q", "c", "{}");
    CU_ASSERT_EQUAL(seq_of("q", "c"), 3);
    mdb_write *w = mdb_write_begin(S, "q", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    mdb_write_drop(w);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    put("q", "d", "{}");
    CU_ASSERT_EQUAL(seq_of("q", "d"), 0);
}

static void test_join_projection_rules(void)
{
    seed_laptops();
    /* where on a field the join's projection leaves out sees it missing */
    json_object *r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
                         "\"on\":\"memory_id\",\"fields\":[\"capacity_gb\"]}}],"
                         "\"where\":{\"ram.type\":\"LPDDR5\"}}");
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(last_status, 404);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"capacity_gb\"]}}],"
            "\"where\":{\"ram.type\":{\"$ne\":\"LPDDR5\"}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 5);
    json_object_put(r);
    /* and the whole document without a projection */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\"}}],\"where\":{\"ram.type\":\"lpddr5\"},\"sort\":[]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "lp1");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "lp4");
    json_object_put(r);
    /* system fields of the joined document: visible only when listed */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"type\"]}}],\"where\":{\"ram._v\":1}}");
    CU_ASSERT_PTR_NULL(r);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"type\",\"_v\"]}}],\"where\":{\"ram._v\":1}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 3);
    json_object_put(r);
    /* sort on a projected-out field: every document ties, so by key */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"type\"]}}],\"sort\":[{\"field\":"
            "\"ram.capacity_gb\",\"order\":\"desc\"}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "lp1");
    CU_ASSERT_STRING_EQUAL(key_at(r, 4), "lp5");
    json_object_put(r);
}

/* Keys of a reply array, comma-joined, into out. */
static const char *keys_of(json_object *r, char *out, size_t cap)
{
    out[0] = 0;
    for (size_t i = 0; r && i < json_object_array_length(r); i++) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", i ? "," : "", key_at(r, i));
    }
    return out;
}

/* where and sort on the bare alias, or on a sub-object the join's fields
 * keep only parts of, read the joined document as the reply shows it. */
static void test_join_views(void)
{
    seed_laptops();
    put("memory", "mem2",
        "{\"capacity_gb\":16,\"type\":\"LPDDR5\",\"spec\":{\"bus\":\"DD\","
        "\"mts\":4800}}");
    put("memory", "mem5",
        "{\"capacity_gb\":36,\"type\":\"Unified\",\"spec\":{\"bus\":\"LP\","
        "\"mts\":6400}}");
    put("laptops", "lp6", "{\"brand\":\"hp\",\"memory_id\":\"none\",\"ram\":\"own\"}");
    char k[128];
    /* a parent of a projected path: present, and equal to the projection */
    json_object *r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
                         "\"on\":\"memory_id\",\"fields\":[\"spec.mts\"]}}],"
                         "\"where\":{\"ram.spec\":{\"$eq\":{\"mts\":4800}}},\"sort\":[]}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp1,lp4");
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"spec.mts\"]}}],"
            "\"where\":{\"ram.spec\":{\"$eq\":{\"mts\":6400}}}}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp2");
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"spec.mts\"]}}],"
            "\"sort\":[{\"field\":\"ram.spec\",\"order\":\"asc\"}]}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp1,lp2,lp4,lp3,lp5,lp6");
    json_object_put(r);
    /* the whole sub-object is not the projection */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\"}}],\"where\":{\"ram.spec\":{\"$eq\":{\"mts\":6400}}}}");
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(last_status, 404);
    /* the bare alias is the joined document; a missing one reads the own field */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"type\"]}}],"
            "\"where\":{\"ram\":{\"$eq\":{\"type\":\"LPDDR5\"}}},\"sort\":[]}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp1,lp4");
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\",\"fields\":[\"type\"]}}],"
            "\"where\":{\"ram\":{\"$eq\":{\"type\":\"Unified\"}}}}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp2");
    json_object_put(r);
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\"}}],\"where\":{\"ram\":\"own\"}}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp6");
    json_object_put(r);
    /* without fields the view carries the raw system fields too */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\"}}],\"where\":{\"ram\":{\"$eq\":{\"type\":\"Unified\"}}}}");
    CU_ASSERT_PTR_NULL(r);
    /* fields naming an alias: the joined document replaces the own member */
    put("laptops", "lp7", "{\"brand\":\"hp\",\"memory_id\":\"mem5\",\"ram\":\"own\"}");
    r = get(
        "{\"collection\":\"laptops\",\"keys\":\"lp7\",\"fields\":[\"ram\"],"
        "\"joins\":[{\"ram\":{\"from\":\"memory\",\"on\":\"memory_id\",\"fields\":[\"type\"]}}]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "ram.type"), "Unified");
    const char *first = strstr(last_text, "\"ram\":");
    CU_ASSERT_PTR_NOT_NULL(first);
    CU_ASSERT_PTR_NULL(first ? strstr(first + 1, "\"ram\":") : NULL); /* once */
    json_object_put(r);
    put("laptops", "lp7", "{\"brand\":\"hp\",\"memory_id\":\"none\",\"ram\":\"own\"}");
    /* sort: objects rank after strings, missing last ascending */
    r = get("{\"collection\":\"laptops\",\"joins\":[{\"ram\":{\"from\":\"memory\","
            "\"on\":\"memory_id\"}}],\"sort\":[{\"field\":\"ram\",\"order\":\"asc\"}]}");
    CU_ASSERT_STRING_EQUAL(keys_of(r, k, sizeof k), "lp6,lp7,lp1,lp2,lp4,lp3,lp5");
    json_object_put(r);
}

static void test_excluded_fields_rules(void)
{
    seed_laptops();
    put("laptops", "lp6", "{\"brand\":\"hp\",\"specs\":{},\"deep\":{\"a\":{\"b\":{}}}}");
    /* an object left empty along an excluded path goes, also one that was empty */
    json_object *r = get("{\"collection\":\"laptops\",\"keys\":\"lp6\",\"excludedFields\":["
                         "\"specs.os\",\"deep.a.b.c\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "specs"));
    CU_ASSERT_PTR_NULL(mem(r, "deep"));
    CU_ASSERT_STRING_EQUAL(str(r, "brand"), "hp");
    json_object_put(r);
    /* one that keeps other members stays */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"excludedFields\":[\"specs.cpu\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(mem(r, "specs.weight_kg"));
    CU_ASSERT_PTR_NULL(mem(r, "specs.cpu"));
    json_object_put(r);
    /* into joined documents */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"joins\":[{\"ram\":{\"from\":"
            "\"memory\",\"on\":\"memory_id\"}}],\"excludedFields\":[\"ram.type\",\"ram._v\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(r, "ram.capacity_gb"), 16);
    CU_ASSERT_PTR_NULL(mem(r, "ram.type"));
    CU_ASSERT_PTR_NULL(mem(r, "ram._v"));
    CU_ASSERT_PTR_NOT_NULL(mem(r, "ram._seq")); /* raw system fields of the join stay */
    json_object_put(r);
    /* a joined document emptied by the exclusion leaves the alias out */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"joins\":[{\"ram\":{\"from\":"
            "\"memory\",\"on\":\"memory_id\",\"fields\":[\"type\"]}}],\"excludedFields\":["
            "\"ram.type\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "ram"));
    CU_ASSERT_STRING_EQUAL(str(r, "brand"), "Lenovo");
    json_object_put(r);
    /* excluding the alias itself */
    r = get("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"joins\":[{\"ram\":{\"from\":"
            "\"memory\",\"on\":\"memory_id\"}}],\"excludedFields\":[\"ram\"]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "ram"));
    json_object_put(r);
}

/* One check order on every route: collection name, collection scope (403),
 * known properties, generic validation (400). */
static void test_check_order(void)
{
    seed_laptops();
    M.auth = &S_AUTH;
    static const char *const ro_s[] = {"read:laptops:*"};
    static const char *const key_s[] = {"read:laptops:lp1"};
    mdb_principal ro = {"ro", "j", 0, false, 1, ro_s};
    mdb_principal ks = {"ks", "j", 0, false, 1, key_s};
    static const char *const del_props[] = {"collection", "keys", "where", NULL};
    const qe_route_spec del = {del_props, MDB_ACT_DELETE, false, false};
    const char *c;
    size_t cl;
    qe_err e = {0};
    struct {
        const char *body;
        const qe_mod *mod;
        const mdb_principal *p;
        const qe_route_spec *spec;
        unsigned status;
        const char *text;
    } cases[] = {
        /* the upstream replay: no delete scope + unknown property = 403 */
        {"{\"collection\":\"laptops\",\"key\":\"x\"}", &M, &ro, &del, 403,
         "Forbidden: token requires 'delete:laptops:*' scope"},
        {"{\"collection\":\"laptops\",\"keys\":\"bad key\"}", &M, &ro, &del, 403, NULL},
        /* the collection must be known first */
        {"{\"key\":\"x\"}", &M, &ro, &del, 400, "Missing 'collection' name"},
        {"{\"collection\":\"a b\",\"key\":\"x\"}", &M, &ro, &del, 400, NULL},
        /* allowed: then the body */
        {"{\"collection\":\"laptops\",\"key\":\"x\"}", &M, &ro, &qe_get_spec, 400,
         "Unknown property: 'key'. Check the API docs for supported properties"},
        {"{\"collection\":\"laptops\",\"keys\":\"bad key\"}", &M, &ro, &qe_get_spec, 400, NULL},
        /* /get: key-level scopes pass the collection check, then validation */
        {"{\"collection\":\"laptops\",\"nope\":1}", &M, &ks, &qe_get_spec, 400, NULL},
        {"{\"collection\":\"memory\",\"nope\":1}", &M, &ks, &qe_get_spec, 403,
         "Forbidden: token has no read access to collection 'memory'"},
        {"{\"collection\":\"memory\",\"nope\":1}", &M, NULL, &qe_get_spec, 403, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_object *j = json_tokener_parse(cases[i].body);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        memset(&e, 0, sizeof e);
        CU_ASSERT_EQUAL(qe_preamble(cases[i].mod, cases[i].p, j, cases[i].spec, &c, &cl, &e), -1);
        CU_ASSERT_EQUAL(e.status, cases[i].status);
        if (e.status != cases[i].status)
            fprintf(stderr, "case %zu: %u %s\n", i, e.status, e.msg);
        if (cases[i].text)
            CU_ASSERT_STRING_EQUAL(e.msg, cases[i].text);
        json_object_put(j);
    }
    json_object *j = json_tokener_parse("{\"collection\":\"laptops\",\"keys\":\"lp1\"}");
    CU_ASSERT_EQUAL(qe_preamble(&M, &ks, j, &qe_get_spec, &c, &cl, &e), 0);
    CU_ASSERT_EQUAL(cl, 7);
    json_object_put(j);
    M.auth = &T_AUTH;
}

/* ---- limits (README "Limits") ------------------------------------------------ */
/* A JSON array text of n items pre<i>post (caller frees). */
static char *json_list(size_t n, const char *pre, const char *post)
{
    size_t cap = n * (strlen(pre) + strlen(post) + 24) + 16, len = 0;
    char *s = malloc(cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    s[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[len++] = ',';
        len += (size_t)snprintf(s + len, cap - len, "%s%zu%s", pre, i, post);
    }
    s[len++] = ']';
    s[len] = 0;
    return s;
}

static json_object *get_with(const char *head, const char *list, const char *tail)
{
    size_t n = strlen(head) + strlen(list) + strlen(tail) + 1;
    char *body = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    snprintf(body, n, "%s%s%s", head, list, tail);
    json_object *r = get(body);
    free(body);
    return r;
}

static void test_limits(void)
{
    seed_laptops();
    /* where: at most 256 clauses and conditions */
    char *l = json_list(256, "{\"price\":{\"$lt\":", "}}");
    json_object *r = get_with("{\"collection\":\"laptops\",\"where\":{\"$or\":", l, "}}");
    CU_ASSERT_PTR_NULL(r); /* 1025 nodes with the $or itself */
    CU_ASSERT_EQUAL(last_status, 400);
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: too many conditions in 'where' (max 256)");
    free(l);
    l = json_list(255, "{\"price\":{\"$lt\":", "}}");
    r = get_with("{\"collection\":\"laptops\",\"where\":{\"$or\":", l, "}}");
    CU_ASSERT_PTR_NULL(r); /* compiles; no price is below 255 */
    CU_ASSERT_EQUAL(last_status, 404);
    if (last_status != 404)
        fprintf(stderr, "limits: %u %s\n", last_status, last_err);
    free(l);
    /* a $or of equalities on one path is one hashed set: 3000 branches are fine */
    l = json_list(3000, "{\"price\":", "}");
    r = get_with("{\"collection\":\"laptops\",\"sort\":[],\"where\":{\"$or\":", l, "}}");
    CU_ASSERT_PTR_NULL(r); /* ... were it not for the node count: each branch is compiled first */
    CU_ASSERT_EQUAL(last_status, 400);
    free(l);
    l = json_list(200, "{\"price\":", ".0}");
    size_t ln = strlen(l);
    l[ln - 1] = 0;
    char *ors = malloc(ln + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ors);
    snprintf(ors, ln + 64, "%s,{\"price\":1499},{\"price\":3499.0}]", l);
    r = get_with("{\"collection\":\"laptops\",\"sort\":[],\"where\":{\"$or\":", ors, "}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "lp1");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "lp2");
    json_object_put(r);
    free(ors);
    free(l);
    /* $in: at most 10000 values, large sets hashed with the same rules */
    l = json_list(10001, "", "");
    CU_ASSERT_PTR_NULL(
        get_with("{\"collection\":\"laptops\",\"where\":{\"price\":{\"$oneOf\":", l, "}}}"));
    CU_ASSERT_STRING_EQUAL(last_err, "Invalid Query: $oneOf takes at most 10000 values");
    free(l);
    l = json_list(3000, "", ".0");
    r = get_with("{\"collection\":\"laptops\",\"where\":{\"price\":{\"$in\":", l,
                 "}},\"sort\":[]}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r); /* 1499.0 and 1699.0 equal the integers */
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "lp1");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "lp3");
    json_object_put(r);
    free(l);
    l = json_list(500, "\"w", "\"");
    r = get_with(
        "{\"collection\":\"laptops\",\"where\":{\"brand\":{\"$in\":[\"LENOVO\",\"ACER\",true,"
        "null,[1]]}}, \"sort\":[], \"keys\":",
        "[\"lp1\",\"lp4\",\"lp5\"]", "}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r); /* small set, unhashed */
    CU_ASSERT_EQUAL(json_object_array_length(r), 2);
    json_object_put(r);
    size_t n = strlen(l);
    l[n - 1] = 0; /* drop ']' to append the same mixed values to a large set */
    char *big = malloc(n + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    snprintf(big, n + 64, "%s,\"LENOVO\",\"ACER\",true,null,[1]]", l);
    r = get_with("{\"collection\":\"laptops\",\"sort\":[],\"where\":{\"brand\":{\"$in\":", big,
                 "}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r); /* hashed: the same two, strings folded */
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(r), 2);
    CU_ASSERT_STRING_EQUAL(key_at(r, 0), "lp1");
    CU_ASSERT_STRING_EQUAL(key_at(r, 1), "lp5");
    json_object_put(r);
    r = get_with("{\"collection\":\"laptops\",\"sort\":[],\"where\":{\"brand\":{\"$nin\":", big,
                 "}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(json_object_array_length(r), 3);
    json_object_put(r);
    r = get_with("{\"collection\":\"laptops\",\"sort\":[],\"where\":{\"in_stock\":{\"$in\":", big,
                 "}}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r); /* booleans compared one by one */
    CU_ASSERT_EQUAL(json_object_array_length(r), 2);
    json_object_put(r);
    free(big);
    free(l);
    /* fields / excludedFields: at most 1024, long ones still exact */
    l = json_list(1025, "\"f", "\"");
    CU_ASSERT_PTR_NULL(get_with("{\"collection\":\"laptops\",\"fields\":", l, "}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'fields' has too many entries (max 1024)");
    CU_ASSERT_PTR_NULL(get_with("{\"collection\":\"laptops\",\"excludedFields\":", l, "}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'excludedFields' has too many entries (max 1024)");
    free(l);
    l = json_list(1000, "\"specs.f", "\"");
    n = strlen(l);
    l[n - 1] = 0;
    big = malloc(n + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    snprintf(big, n + 64, "%s,\"brand\",\"specs.cpu.cores\",\"specs.weight_kg\"]", l);
    r = get_with("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"fields\":", big, "}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "brand"), "Lenovo");
    CU_ASSERT_EQUAL(num(r, "specs.cpu.cores"), 12);
    CU_ASSERT_PTR_NOT_NULL(mem(r, "specs.weight_kg"));
    CU_ASSERT_PTR_NULL(mem(r, "specs.cpu.brand"));
    CU_ASSERT_PTR_NULL(mem(r, "price"));
    json_object_put(r);
    r = get_with("{\"collection\":\"laptops\",\"keys\":\"lp1\",\"excludedFields\":", big, "}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NULL(mem(r, "brand"));
    CU_ASSERT_PTR_NULL(mem(r, "specs.weight_kg"));
    CU_ASSERT_DOUBLE_EQUAL(json_object_get_double(mem(r, "specs.cpu.ghz")), 3.5, 1e-9);
    CU_ASSERT_EQUAL(num(r, "price"), 1499);
    json_object_put(r);
    free(big);
    free(l);
    /* sort specs and joins */
    l = json_list(33, "\"f", "\"");
    CU_ASSERT_PTR_NULL(get_with("{\"collection\":\"laptops\",\"sort\":", l, "}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'sort' has too many fields (max 32)");
    free(l);
    l = json_list(33, "{\"j", "\":{\"from\":\"memory\",\"on\":\"memory_id\"}}");
    CU_ASSERT_PTR_NULL(get_with("{\"collection\":\"laptops\",\"joins\":", l, "}"));
    CU_ASSERT_STRING_EQUAL(last_err, "'joins' has too many entries (max 32)");
    free(l);
    /* array inserts count against --max-keys-per-request */
    static const char *const set_props[] = {"collection", "data", NULL};
    const qe_route_spec set = {set_props, MDB_ACT_WRITE, false, false};
    M.max_keys = 3;
    json_object *j = json_tokener_parse("{\"collection\":\"c\",\"data\":[{},{},{},{}]}");
    const char *c;
    size_t cl;
    qe_err e = {0};
    CU_ASSERT_EQUAL(qe_preamble(&M, &ADMIN, j, &set, &c, &cl, &e), -1);
    CU_ASSERT_STRING_EQUAL(e.msg, "Too many keys in single request (max 3)");
    json_object_put(j);
    j = json_tokener_parse("{\"collection\":\"c\",\"data\":[{},{},{}]}");
    CU_ASSERT_EQUAL(qe_preamble(&M, &ADMIN, j, &set, &c, &cl, &e), 0);
    json_object_put(j);
    M.max_keys = 1000;
}

static void teardown_all(void)
{
    if (S)
        mdb_store_free(S);
    S = NULL;
}

static const mdb_test_def where_tests[] = {{"eq, aliases and types", test_eq_aliases_and_types},
                                           {"ne and missing fields", test_ne_and_missing},
                                           {"range operators", test_ranges},
                                           {"in, nin, contains", test_in_nin_contains},
                                           {"and/or nesting", test_and_or_nesting},
                                           {"system fields", test_system_fields_in_where},
                                           {"compile errors", test_where_errors},
                                           {"case folding", test_case_folding},
                                           {"integer rendering", test_put_i64},
                                           {"odd where shapes", test_odd_where_shapes},
                                           {NULL, NULL}};
static const mdb_test_def get_tests[] = {{"name rules", test_name_rules},
                                         {"fields projection", test_fields_projection},
                                         {"excludedFields", test_excluded_fields},
                                         {"sort total order", test_sort_total_order},
                                         {"pagination", test_pagination},
                                         {"keys forms", test_keys_forms},
                                         {"joins", test_joins},
                                         {"extends", test_extends},
                                         {"scopes", test_scopes},
                                         {"analytics", test_analytics_agg},
                                         {"where operator objects", test_where_operator_objects},
                                         {"sort [] and ties", test_sort_empty_and_ties},
                                         {"_seq counter", test_seq_counter},
                                         {"join projection rules", test_join_projection_rules},
                                         {"join views", test_join_views},
                                         {"excludedFields rules", test_excluded_fields_rules},
                                         {"check order", test_check_order},
                                         {"limits", test_limits},
                                         {"teardown", teardown_all},
                                         {NULL, NULL}};
static const mdb_test_def schema_tests[] = {{"keywords", test_schema_keywords},
                                            {"invalid schemas", test_schema_invalid},
                                            {"hook and cache", test_schema_hook_and_cache},
                                            {"teardown", teardown_all},
                                            {NULL, NULL}};
static const mdb_suite_def mdb_suites[] = {
    {"where", where_tests}, {"get", get_tests}, {"schema", schema_tests}, {NULL, NULL}};
MDB_CUNIT_MAIN(mdb_suites)
