/*
 * Fuzz target for /get request parsing (query-engine): the input is a
 * request body. It is parsed as the core parses bodies (strict JSON), then
 * goes through the route's checks (qe_preamble), the query parser
 * (qe_parse_get: where, fields, sort, joins, paging), the scope rules and
 * the executor, over a small store built for each input, once as an admin
 * and once as a reader holding only key-level scopes. Properties: an error
 * is a client error (4xx) with a message; a success is valid JSON.
 *
 * Corpus: corpus/get/ (tests/fuzz/README.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qe.h"

/* The admin may do anything; the reader may read users/u1 and users/p*. */
static bool f_allowed(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                      const char *key)
{
    (void)self;
    if (p->admin)
        return true;
    return act == MDB_ACT_READ && strcmp(coll, "users") == 0 &&
           (strcmp(key, "u1") == 0 || key[0] == 'p');
}

static void f_each(void *self, const mdb_principal *p, mdb_action act, const char *coll,
                   mdb_key_scope_fn fn, void *ud)
{
    (void)self;
    if (p->admin || act != MDB_ACT_READ || strcmp(coll, "users") != 0)
        return;
    fn("u1", 2, false, ud);
    fn("p", 1, true, ud);
}

static const mdb_auth_service F_AUTH = {
    sizeof(mdb_auth_service), NULL, NULL, f_allowed, f_each, NULL};
static const mdb_principal ADMIN = {"admin", "j1", 0, true, 0, NULL};
static const mdb_principal READER = {"reader", "j2", 0, false, 0, NULL};

static const struct {
    const char *coll, *key, *json;
} DOCS[] = {
    {"users", "u1", "{\"name\":\"ann\",\"age\":31,\"team\":\"t1\",\"tags\":[\"a\",\"b\"]}"},
    {"users", "u2", "{\"name\":\"Bob\",\"age\":17.5,\"team\":\"t2\",\"addr\":{\"city\":\"Oslo\"}}"},
    {"users", "p1", "{\"name\":null,\"age\":\"x\",\"team\":\"t1\",\"n\":[1,[2],{\"a\":3}]}"},
    {"users", "p2", "{}"},
    {"teams", "t1", "{\"title\":\"core\",\"size\":3}"},
    {"teams", "t2", "{\"title\":\"edge\",\"size\":-1e300}"},
};

static mdb_store *build_store(void)
{
    mdb_store *s = mdb_store_new();
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof DOCS / sizeof *DOCS; i++) {
        json_object *j = json_tokener_parse(DOCS[i].json);
        mdb_write *w = mdb_write_begin(s, DOCS[i].coll, strlen(DOCS[i].coll));
        FUZZ_CHECK(j && w);
        FUZZ_CHECK(mdb_write_put(w, DOCS[i].key, strlen(DOCS[i].key), j) == 0);
        FUZZ_CHECK(mdb_write_commit(w, NULL, NULL, NULL) == 0);
        json_object_put(j);
    }
    return s;
}

static void run_as(qe_mod *m, const mdb_principal *p, json_object *body)
{
    qe_arena a = {0};
    qe_query q;
    qe_err e = {0};
    mdb_buf out;
    mdb_buf_init(&out);
    const char *coll;
    size_t clen;
    if (qe_preamble(m, p, body, &qe_get_spec, &coll, &clen, &e) == 0 &&
        qe_parse_get(&a, body, coll, clen, &q, &e) == 0 && qe_scope_get(m, p, &a, &q, &e) == 0 &&
        qe_run_get(m->store, &q, &out, &e) == 0) {
        const char *why;
        mdb_buf enc;
        mdb_buf_init(&enc);
        FUZZ_CHECK(!out.oom && mdb_encode_json_text(out.data, out.len, &enc, &why) == 0);
        mdb_buf_free(&enc);
    } else {
        FUZZ_CHECK(e.status >= 400 && e.status < 500 && e.msg[0]);
    }
    mdb_buf_free(&out);
    qe_arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    /* The core's body parser: strict JSON, valid UTF-8, bounded depth. */
    json_tokener *tok = json_tokener_new_ex(MDB_MAX_DEPTH);
    if (!tok)
        return 0;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *body = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    bool ok = body && json_tokener_get_error(tok) == json_tokener_success &&
              json_object_is_type(body, json_type_object);
    json_tokener_free(tok);
    if (ok) {
        qe_mod m;
        memset(&m, 0, sizeof m);
        m.store = build_store();
        m.auth = &F_AUTH;
        m.max_keys = 1000;
        if (m.store) {
            run_as(&m, &ADMIN, body);
            run_as(&m, &READER, body);
            mdb_store_free(m.store);
        }
    }
    json_object_put(body);
    return 0;
}
