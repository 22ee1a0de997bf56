/*
 * query-engine: what every route shares: the request body, the generic
 * validation (README "Validation"), parsing of common properties, and replies
 * (every client error is a qe_err replied as the JSON envelope).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

void qe_reply_err(mdb_req *r, const qe_err *e)
{
    mdb_reply_error(r, e->status ? e->status : 500, "%s", e->msg);
}

/* Replies 200 with the buffer's bytes; the reply takes them (b is emptied). */
void qe_reply_buf(mdb_req *r, mdb_buf *b)
{
    if (b->oom) {
        mdb_buf_free(b);
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    size_t len;
    char *data = mdb_buf_take(b, &len);
    if (!data) {
        mdb_reply_error(r, 500, "Out of memory");
        return;
    }
    mdb_reply_take(r, 200, "application/json", data, len);
}

/* The body as an object, or NULL after replying 400. With m, the batches
 * that qe_generic bounds by --max-keys-per-request are cut by the core just
 * past that bound, so a huge one is refused without being built (README
 * "Limits"); the first call on a request decides, later ones get its tree. */
json_object *qe_body(const qe_mod *m, mdb_req *r)
{
    static const char *const batches[] = {"data", "keys", NULL};
    json_object *j = m ? mdb_req_json_bounded(r, batches, (size_t)m->max_keys) : mdb_req_json(r);
    if (!j)
        return NULL; /* the core replied */
    if (!json_object_is_type(j, json_type_object)) {
        mdb_reply_error(r, 400, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Bodies up to this size are parsed on the HTTP thread to tell a read by
 * key from a scan; bigger ones go to the query pool unparsed. */
#define QE_INLINE_BODY 16384

bool qe_defer_scan(mdb_req *r)
{
    size_t n = 0;
    mdb_req_body(r, &n);
    if (n <= QE_INLINE_BODY) {
        json_object *b = qe_body(NULL, r); /* small: no need to cut */
        if (!b)
            return false; /* replied */
        if (qe_has(b, "keys") && !qe_has(b, "where") && !qe_has(b, "sort") && !qe_has(b, "joins"))
            return false;
    }
    return mdb_req_defer(r);
}

json_object *qe_prop(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

bool qe_has(json_object *o, const char *k)
{
    return json_object_object_get_ex(o, k, NULL);
}

int qe_collection(json_object *body, const char **name, size_t *len, qe_err *e)
{
    json_object *c = qe_prop(body, "collection");
    if (!c || !json_object_is_type(c, json_type_string))
        return qe_fail(e, 400, "Missing 'collection' name");
    *name = json_object_get_string(c);
    *len = (size_t)json_object_get_string_len(c);
    return qe_check_collection(*name, *len, e);
}

int qe_known_props(json_object *body, const char *const *allowed, qe_err *e)
{
    json_object_object_foreach((json_object *)body, k, v)
    {
        (void)v;
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], k) == 0;
        if (!ok)
            return qe_fail(e, 400,
                           "Unknown property: '%.*s'. Check the API docs for supported properties",
                           QE_QUOTE_MAX, k);
    }
    return 0;
}

static int qe_too_many(const qe_mod *m, qe_err *e)
{
    return qe_fail(e, 400, "Too many keys in single request (max %lld)", (long long)m->max_keys);
}

/* Generic validation (README "Check order", step 5; the collection is step 2). */
int qe_generic(const qe_mod *m, json_object *body, qe_err *e)
{
    json_object *v = qe_prop(body, "keys");
    if (v && json_object_is_type(v, json_type_string)) {
        if (qe_check_key(json_object_get_string(v), (size_t)json_object_get_string_len(v), e))
            return -1;
    } else if (v && json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        if ((int64_t)n > m->max_keys)
            return qe_too_many(m, e);
        for (size_t i = 0; i < n; i++) {
            json_object *k = json_object_array_get_idx(v, i);
            if (json_object_is_type(k, json_type_string) &&
                qe_check_key(json_object_get_string(k), (size_t)json_object_get_string_len(k), e))
                return -1;
        }
    }
    v = qe_prop(body, "data");
    /* array inserts too: each element is a document (README "Limits") */
    if (v && json_object_is_type(v, json_type_array) &&
        (int64_t)json_object_array_length(v) > m->max_keys)
        return qe_too_many(m, e);
    if (v && json_object_is_type(v, json_type_object)) {
        if ((int64_t)json_object_object_length(v) > m->max_keys)
            return qe_too_many(m, e);
        json_object_object_foreach(v, k, d)
        {
            (void)d;
            if (qe_check_key(k, strlen(k), e))
                return -1;
        }
    }
    v = qe_prop(body, "fields");
    if (v && json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *f = json_object_array_get_idx(v, i);
            if (json_object_is_type(f, json_type_string) &&
                qe_check_field(json_object_get_string(f), (size_t)json_object_get_string_len(f), e))
                return -1;
        }
    }
    v = qe_prop(body, "where");
    if (v && json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, k, d)
        {
            (void)d;
            if (k[0] != '$' && qe_check_field(k, strlen(k), e))
                return -1;
        }
    }
    return 0;
}

int qe_preamble(const qe_mod *m, const mdb_principal *p, json_object *body,
                const qe_route_spec *spec, const char **coll, size_t *clen, qe_err *e)
{
    *coll = NULL;
    *clen = 0;
    if (!spec->collection_optional || qe_has(body, "collection")) {
        if (qe_collection(body, coll, clen, e) ||
            qe_auth_collection(m, p, spec->act, *coll, spec->key_scopes_suffice, e))
            return -1;
    }
    if (qe_known_props(body, spec->allowed, e) || qe_generic(m, body, e))
        return -1;
    return 0;
}

json_object *qe_begin(const qe_mod *m, mdb_req *r, const qe_route_spec *spec, const char **coll,
                      size_t *clen)
{
    json_object *body = qe_body(m, r);
    if (!body)
        return NULL;
    qe_err e = {0};
    if (qe_preamble(m, mdb_req_principal(r), body, spec, coll, clen, &e)) {
        qe_reply_err(r, &e);
        return NULL;
    }
    return body;
}

int qe_parse_count(json_object *body, const char *prop, int64_t *out, qe_err *e)
{
    int rc = qe_json_nonneg(qe_prop(body, prop), out);
    if (rc < 0)
        return qe_fail(e, 400, "'%s' must be a non-negative integer", prop);
    return 0;
}

/* ---- REST reads ------------------------------------------------------------------ */
int qe_query_uint(mdb_req *r, const char *name, int64_t *out, qe_err *e)
{
    const char *s = mdb_req_query(r, name);
    if (!s)
        return 0;
    if (!*s || strlen(s) > 18)
        return qe_fail(e, 400, "'%s' must be a non-negative integer", name);
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return qe_fail(e, 400, "'%s' must be a non-negative integer", name);
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* ---- commit errors ------------------------------------------------------------------ */
void qe_commit_error(mdb_req *r, int rc, const char *why, const char *schema_text,
                     const char *fail_prefix)
{
    if (!why || !*why)
        why = strerror(rc < 0 ? -rc : rc);
    switch (rc) {
    case -ESTALE:
        mdb_reply_error(r, 409, "Conflict: Document version is outdated");
        return;
    case -EINVAL:
        mdb_reply_error(r, 400, "%s", schema_text);
        return;
    case -EEXIST: /* the store words it: "TTL of collection ... cannot be changed" */
        mdb_reply_error(r, 409, "%s", why);
        return;
    case -EROFS:
        mdb_reply_error(r, 503, "Service unavailable -- storage fault: %s", why);
        return;
    default:
        mdb_reply_error(r, 500, "%s: %s", fail_prefix, why);
        return;
    }
}

/* ttl / maxSize of /set and /schema: 0 absent, 1 present, -1 error. */
int qe_parse_meta(json_object *body, int64_t *ttl, int *has_ttl, int64_t *max, int *has_max,
                  qe_err *e)
{
    json_object *v = qe_prop(body, "ttl");
    *has_ttl = *has_max = 0;
    if (v) {
        if (!qe_json_is_int(v) || json_object_get_int64(v) < 0)
            return qe_fail(e, 400, "'ttl' must be a non-negative integer (seconds)");
        *ttl = json_object_get_int64(v);
        *has_ttl = 1;
    }
    v = qe_prop(body, "maxSize");
    if (v) {
        if (!qe_json_is_int(v) || json_object_get_int64(v) <= 0)
            return qe_fail(e, 400, "'maxSize' must be a positive integer");
        *max = json_object_get_int64(v);
        *has_max = 1;
    }
    return 0;
}
