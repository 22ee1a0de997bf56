/*
 * query-engine: the write routes: /set (with extends), /update, /delete
 * and /schema. Each builds one write batch and commits it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

static int qe_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- /set -------------------------------------------------------------------------- */
bool qe_reserved_top(json_object *doc)
{
    if (!json_object_is_type(doc, json_type_object))
        return false;
    json_object_object_foreach((json_object *)doc, k, v)
    {
        (void)v;
        if (k[0] == '_')
            return true;
    }
    return false;
}

/* The referenced document as a json-c tree with raw system fields (caller
 * owns it), or NULL with err (400 for a missing reference). */
static json_object *qe_extends_fetch(qe_mod *m, const mdb_principal *p, const char *alias,
                                     json_object *ref, qe_err *e)
{
    const char *s = json_object_is_type(ref, json_type_string) ? json_object_get_string(ref) : NULL;
    const char *dot = s ? strchr(s, '.') : NULL;
    if (!s || !dot || dot == s || !dot[1]) {
        qe_fail(e, 400, "Invalid 'extends' reference for '%.*s': expected \"collection.key\"",
                QE_QUOTE_MAX, alias);
        return NULL;
    }
    size_t cl = (size_t)(dot - s);
    char coll[65];
    if (qe_check_collection(s, cl, e) || qe_check_key(dot + 1, strlen(dot + 1), e))
        return NULL;
    memcpy(coll, s, cl);
    coll[cl] = 0;
    if (!qe_allowed_p(m, p, MDB_ACT_READ, coll, dot + 1)) {
        qe_fail(e, 403, "Forbidden: token lacks 'read:%s:%s' scope", coll, dot + 1);
        return NULL;
    }
    mdb_read *rv;
    json_object *out = NULL;
    bool found = false;
    if (mdb_read_begin(m->store, coll, cl, &rv) == 0) {
        const mdb_doc *d = qe_expired(mdb_read_meta(rv), mdb_now_ms())
                               ? NULL
                               : mdb_read_get(rv, dot + 1, strlen(dot + 1));
        if (d) {
            found = true;
            out = mdb_val_to_jsonc(mdb_doc_body(d));
            if (out && mdb_doc_is_object(d)) {
                json_object_object_add(out, "_v", json_object_new_int64(mdb_doc_version(d)));
                json_object_object_add(out, "_seq", json_object_new_int64(mdb_doc_seq(d)));
                json_object_object_add(out, "_createdAt",
                                       json_object_new_int64(mdb_doc_created_ms(d)));
                json_object_object_add(out, "_modifiedAt",
                                       json_object_new_int64(mdb_doc_modified_ms(d)));
            }
        }
        mdb_read_end(rv);
    }
    if (!found) {
        qe_fail(e, 400, "Invalid 'extends' reference for '%.*s': document '%.*s' not found",
                QE_QUOTE_MAX, alias, QE_QUOTE_MAX, s);
        return NULL;
    }
    if (!out)
        qe_fail(e, 500, "Out of memory");
    return out;
}

/* Resolve "extends" of one document. *res is a new tree the caller puts
 * (or the input itself, with a reference taken). */
int qe_extends(qe_mod *m, const mdb_principal *p, json_object *doc, json_object **res, qe_err *e)
{
    json_object *ext = json_object_is_type(doc, json_type_object) ? qe_prop(doc, "extends") : NULL;
    if (!ext || !json_object_is_type(ext, json_type_object)) {
        *res = json_object_get(doc);
        return 0;
    }
    json_object *n = json_object_new_object();
    if (!n)
        return qe_fail(e, 500, "Out of memory");
    json_object_object_foreach(doc, k, v)
    {
        if (strcmp(k, "extends") != 0)
            json_object_object_add(n, k, json_object_get(v));
    }
    json_object_object_foreach(ext, alias, ref)
    {
        json_object *emb = qe_extends_fetch(m, p, alias, ref, e);
        if (!emb) {
            json_object_put(n);
            return -1;
        }
        json_object_object_add(n, alias, emb);
    }
    *res = n;
    return 0;
}

void qe_h_set(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "data", "ttl", "maxSize", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_WRITE, false, false};
    qe_mod *m = ud;
    const char *coll;
    size_t clen;
    json_object *body = qe_begin(m, r, &spec, &coll, &clen);
    if (!body)
        return;
    qe_err e = {0};
    int64_t ttl = 0, maxs = 0;
    int has_ttl, has_max;
    if (qe_parse_meta(body, &ttl, &has_ttl, &maxs, &has_max, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    json_object *data = qe_prop(body, "data");
    bool is_arr = data && json_object_is_type(data, json_type_array);
    if (!data || (!is_arr && !json_object_is_type(data, json_type_object))) {
        /* upstream registers ttl / maxSize even when data is missing */
        if (has_ttl || has_max) {
            mdb_write *w = mdb_write_begin(m->store, coll, clen);
            mdb_commit_result res;
            const char *why = NULL;
            if (!w) {
                mdb_reply_error(r, 500, "Out of memory");
                return;
            }
            if (has_ttl)
                mdb_write_set_ttl(w, ttl);
            if (has_max)
                mdb_write_set_max_size(w, maxs);
            int rc = mdb_write_commit(w, NULL, &res, &why);
            if (rc) {
                qe_commit_error(r, rc, why, "Document does not conform to schema",
                                "Database write failed");
                return;
            }
        }
        mdb_reply_error(r, 400, "Missing 'data' (object or array)");
        return;
    }
    size_t n = is_arr ? json_object_array_length(data) : (size_t)json_object_object_length(data);
    /* docs[] (each a reference we hold), ids and keys are owned by this
     * handler and released at its end; keys point into the body or ids */
    json_object **docs = calloc(n + 1, sizeof *docs);
    char(*ids)[37] = is_arr ? calloc(n + 1, 37) : NULL;
    const char **keys = calloc(n + 1, sizeof *keys);
    if (!docs || !keys || (is_arr && !ids)) {
        free(docs);
        free(ids);
        free(keys);
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    size_t i = 0;
    int fail = 0;
    if (is_arr) {
        for (i = 0; i < n && !fail; i++) {
            mdb_uuid7(ids[i]);
            keys[i] = ids[i];
            fail = qe_extends(m, mdb_req_principal(r), json_object_array_get_idx(data, i), &docs[i],
                              &e);
        }
    } else {
        /* the keys of one object are written in byte order, so their _seq
         * follows it whatever the request's order (README "_seq") */
        json_object_object_foreach(data, k, v)
        {
            (void)v;
            keys[i++] = k;
        }
        qsort(keys, n, sizeof *keys, qe_strcmp_p);
        for (i = 0; i < n && !fail; i++)
            fail = qe_extends(m, mdb_req_principal(r), qe_prop(data, keys[i]), &docs[i], &e);
    }
    /* the "_" rule, over the whole batch before anything is written */
    for (size_t j = 0; j < n && !fail; j++) {
        if (qe_reserved_top(docs[j]))
            fail = qe_fail(&e, 400,
                           "Fields starting with '_' are reserved for internal use and cannot be "
                           "set by the client.");
    }
    if (!fail) {
        mdb_write *w = mdb_write_begin(m->store, coll, clen);
        if (!w) {
            fail = qe_fail(&e, 500, "Out of memory");
        } else {
            int rc = 0;
            if (has_ttl)
                rc = mdb_write_set_ttl(w, ttl);
            if (!rc && has_max)
                rc = mdb_write_set_max_size(w, maxs);
            for (size_t j = 0; j < n && !rc; j++)
                rc = mdb_write_put(w, keys[j], strlen(keys[j]), docs[j]);
            if (rc) {
                mdb_write_abort(w);
                fail = rc == -EINVAL ? qe_fail(&e, 400, "JSON nesting too deep (max 32 levels)")
                                     : qe_fail(&e, 500, "Database write failed: %s", strerror(-rc));
            } else {
                mdb_commit_result res;
                const char *why = NULL;
                rc = mdb_write_commit(w, r, &res, &why);
                if (rc) {
                    qe_commit_error(r, rc, why, "Document does not conform to schema",
                                    "Database write failed");
                    fail = 1;
                    e.status = 0; /* already replied */
                }
            }
        }
    }
    if (fail && e.status) {
        qe_reply_err(r, &e);
    } else if (!fail) {
        mdb_buf out;
        mdb_buf_init(&out);
        mdb_buf_printf(&out, "{\"statusCode\":200,\"status\":\"ok\",\"count\":%zu", n);
        if (is_arr) {
            mdb_buf_puts(&out, ",\"ids\":[");
            for (size_t j = 0; j < n; j++) {
                if (j)
                    mdb_buf_putc(&out, ',');
                mdb_buf_json_str(&out, ids[j], 36);
            }
            mdb_buf_putc(&out, ']');
        }
        mdb_buf_putc(&out, '}');
        qe_reply_buf(r, &out);
    }
    for (size_t j = 0; j < n; j++)
        if (docs[j])
            json_object_put(docs[j]);
    free(docs);
    free(ids);
    free(keys);
}

/* ---- /update ------------------------------------------------------------------------ */
void qe_h_update(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "data", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_WRITE, false, false};
    qe_mod *m = ud;
    const char *coll;
    size_t clen;
    json_object *body = qe_begin(m, r, &spec, &coll, &clen);
    if (!body)
        return;
    json_object *data = qe_prop(body, "data");
    if (!data || !json_object_is_type(data, json_type_object)) {
        mdb_reply_error(r, 400, "Missing 'data' map");
        return;
    }
    /* every patch is checked before any is applied (README "Writes") */
    json_object_object_foreach(data, k, patch)
    {
        if (!json_object_is_type(patch, json_type_object)) {
            mdb_reply_error(r, 400, "Invalid patch for key '%.*s': must be an object", QE_QUOTE_MAX,
                            k);
            return;
        }
        json_object_object_foreach(patch, f, fv)
        {
            (void)fv;
            if (f[0] == '_' && strcmp(f, "_v") != 0) {
                mdb_reply_error(r, 400, "Fields starting with '_' are reserved.");
                return;
            }
        }
    }
    mdb_write *w = mdb_write_begin(m->store, coll, clen);
    if (!w) {
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    int rc = 0;
    json_object_object_foreach(data, key, p)
    {
        if (rc)
            break;
        json_object *v = qe_prop(p, "_v");
        int64_t expect = qe_json_is_int(v) ? json_object_get_int64(v) : -1;
        rc = mdb_write_patch(w, key, strlen(key), p, expect);
    }
    if (rc) {
        mdb_write_abort(w);
        if (rc == -EINVAL)
            mdb_reply_error(r, 400, "JSON nesting too deep (max 32 levels)");
        else
            mdb_reply_error(r, 500, "Database update failed: %s", strerror(-rc));
        return;
    }
    mdb_commit_result res;
    const char *why = NULL;
    rc = mdb_write_commit(w, r, &res, &why);
    if (rc) {
        qe_commit_error(r, rc, why, "Schema Validation Error: Document does not conform to schema",
                        "Database update failed");
        return;
    }
    mdb_buf out;
    mdb_buf_init(&out);
    mdb_buf_printf(&out, "{\"statusCode\":200,\"status\":\"ok\",\"updated\":%zu}", res.updated);
    qe_reply_buf(r, &out);
}

/* ---- /delete ------------------------------------------------------------------------- */
typedef struct qe_delscan {
    const qe_where *where;
    qe_arena *a;
    const char **keys;
    size_t n, max;
    int oom;
} qe_delscan;

static int qe_delscan_fn(const mdb_doc *d, void *ud)
{
    qe_delscan *s = ud;
    if (!qe_where_match(s->where, d, NULL))
        return 0;
    size_t kl;
    const char *k = mdb_doc_key(d, &kl);
    if (!(s->keys[s->n] = qe_strndup(s->a, k, kl))) {
        s->oom = 1;
        return 1;
    }
    return ++s->n >= s->max;
}

static void qe_reply_deleted(mdb_req *r, size_t n)
{
    mdb_buf out;
    mdb_buf_init(&out);
    mdb_buf_printf(&out, "{\"statusCode\":200,\"status\":\"ok\",\"deleted\":%zu}", n);
    qe_reply_buf(r, &out);
}

void qe_h_delete(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "count", "drop", "keys",
                                          "order",      "where", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_DELETE, false, false};
    if (qe_defer_scan(r))
        return;
    qe_mod *m = ud;
    const char *coll;
    size_t clen;
    json_object *body = qe_begin(m, r, &spec, &coll, &clen);
    if (!body)
        return;
    qe_err e = {0};
    qe_arena a = {0};
    json_object *drop = qe_prop(body, "drop"), *where = qe_prop(body, "where");
    json_object *keys = qe_prop(body, "keys"), *order = qe_prop(body, "order");
    int64_t count = 100;
    int has_count = qe_json_nonneg(qe_prop(body, "count"), &count);
    if (has_count < 0) {
        mdb_reply_error(r, 400, "'count' must be a non-negative integer");
        return;
    }
    if (count > 1000) {
        mdb_reply_error(r, 400, "'count' cannot exceed 1000");
        return;
    }
    bool desc = false;
    if (order) {
        const char *o =
            json_object_is_type(order, json_type_string) ? json_object_get_string(order) : "";
        if (strcmp(o, "asc") != 0 && strcmp(o, "desc") != 0) {
            mdb_reply_error(r, 400, "'order' must be \"asc\" or \"desc\"");
            return;
        }
        desc = strcmp(o, "desc") == 0;
    }
    bool is_drop =
        drop && json_object_is_type(drop, json_type_boolean) && json_object_get_boolean(drop);
    const char *prefix = "Failed to delete";
    mdb_write *w = NULL;
    if (is_drop) {
        prefix = "Failed to drop collection";
        if ((w = mdb_write_begin(m->store, coll, clen)))
            mdb_write_drop(w);
    } else if (where || (!keys && has_count > 0)) {
        qe_where wh;
        if (qe_where_compile(&a, where, NULL, &wh, &e)) {
            qe_reply_err(r, &e);
            qe_arena_free(&a);
            return;
        }
        qe_delscan s = {&wh,           &a, qe_alloc(&a, (size_t)(count + 1) * sizeof(char *)), 0,
                        (size_t)count, 0};
        mdb_read *rv;
        if (!s.keys) {
            mdb_reply_error(r, 500, "Out of memory");
            qe_arena_free(&a);
            return;
        }
        if (count > 0 && mdb_read_begin(m->store, coll, clen, &rv) == 0) {
            mdb_read_scan(rv, desc, qe_delscan_fn, &s);
            mdb_read_end(rv);
        }
        if (s.oom) {
            mdb_reply_error(r, 500, "Out of memory");
            qe_arena_free(&a);
            return;
        }
        if (s.n == 0) {
            qe_reply_deleted(r, 0);
            qe_arena_free(&a);
            return;
        }
        if ((w = mdb_write_begin(m->store, coll, clen)))
            for (size_t i = 0; i < s.n; i++)
                mdb_write_delete(w, s.keys[i], strlen(s.keys[i]));
    } else if (keys && json_object_is_type(keys, json_type_string)) {
        prefix = "Failed to delete key";
        if ((w = mdb_write_begin(m->store, coll, clen)))
            mdb_write_delete(w, json_object_get_string(keys),
                             (size_t)json_object_get_string_len(keys));
    } else if (keys && json_object_is_type(keys, json_type_array)) {
        prefix = "Failed to delete batch";
        if ((w = mdb_write_begin(m->store, coll, clen))) {
            for (size_t i = 0; i < json_object_array_length(keys); i++) {
                json_object *k = json_object_array_get_idx(keys, i);
                if (json_object_is_type(k, json_type_string))
                    mdb_write_delete(w, json_object_get_string(k),
                                     (size_t)json_object_get_string_len(k));
            }
        }
    } else {
        mdb_reply_error(r, 400, "Missing 'keys' (string or array), 'where', or 'drop': true");
        return;
    }
    qe_arena_free(&a);
    if (!w) {
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    mdb_commit_result res;
    const char *why = NULL;
    int rc = mdb_write_commit(w, r, &res, &why);
    if (rc) {
        qe_commit_error(r, rc, why, "Document does not conform to schema", prefix);
        return;
    }
    if (is_drop) {
        static const char dropped[] = "{\"statusCode\":200,\"status\":\"ok\",\"dropped\":true}";
        mdb_reply_copy(r, 200, "application/json", dropped, sizeof dropped - 1);
        return;
    }
    qe_reply_deleted(r, res.deleted);
}

/* ---- /schema -------------------------------------------------------------------------- */
void qe_h_schema(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "schema", "ttl", "maxSize", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_WRITE, false, false};
    qe_mod *m = ud;
    const char *coll;
    size_t clen;
    json_object *body = qe_begin(m, r, &spec, &coll, &clen);
    if (!body)
        return;
    qe_err e = {0};
    int64_t ttl = 0, maxs = 0;
    int has_ttl, has_max;
    bool has_schema = qe_has(body, "schema");
    if (!has_schema && !qe_has(body, "ttl") && !qe_has(body, "maxSize")) {
        mdb_reply_error(r, 400, "At least one of 'schema', 'ttl', or 'maxSize' must be provided");
        return;
    }
    const char *text = NULL;
    if (has_schema) {
        json_object *sj = qe_prop(body, "schema");
        qe_schema *s = qe_schema_build(sj, &e);
        if (!s) {
            qe_reply_err(r, &e);
            return;
        }
        qe_schema_free(s);
        text = json_object_to_json_string_ext(sj, JSON_C_TO_STRING_PLAIN);
    }
    if (qe_parse_meta(body, &ttl, &has_ttl, &maxs, &has_max, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    mdb_write *w = mdb_write_begin(m->store, coll, clen);
    if (!w) {
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    if (text)
        mdb_write_set_schema(w, text, strlen(text));
    if (has_ttl)
        mdb_write_set_ttl(w, ttl);
    if (has_max)
        mdb_write_set_max_size(w, maxs);
    mdb_commit_result res;
    const char *why = NULL;
    int rc = mdb_write_commit(w, r, &res, &why);
    if (rc) {
        qe_commit_error(r, rc, why, "Document does not conform to schema", "Database error");
        return;
    }
    mdb_buf out;
    mdb_buf_init(&out);
    mdb_buf_puts(&out, "{\"statusCode\":200,\"status\":\"ok\",\"collection\":");
    mdb_buf_json_str(&out, coll, clen);
    mdb_buf_putc(&out, '}');
    qe_reply_buf(r, &out);
}
