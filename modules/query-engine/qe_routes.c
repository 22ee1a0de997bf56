/*
 * query-engine: the HTTP routes. Parsing turns a request body into the
 * structures of the other parts (arena-owned, freed when the handler
 * returns); every client error is a qe_err replied as the JSON envelope.
 */

typedef struct qe_mod {
    mdb_ctx *ctx;
    mdb_store *store;
    const mdb_auth_service *auth;
    void *auth_self;
    int64_t max_keys;
    qs_cache schemas;
} qe_mod;

static void qe_reply_err(mdb_req *r, const qe_err *e)
{
    mdb_reply_error(r, e->status ? e->status : 500, "%s", e->msg);
}

/* Replies 200 with the buffer's bytes; the reply takes them (b is emptied). */
static void qe_reply_buf(mdb_req *r, mdb_buf *b)
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

/* The body as an object, or NULL after replying 400. */
static json_object *qe_body(mdb_req *r)
{
    json_object *j = mdb_req_json(r);
    if (!j)
        return NULL; /* the core replied */
    if (!json_object_is_type(j, json_type_object)) {
        mdb_reply_error(r, 400, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

static json_object *qe_prop(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static bool qe_has(json_object *o, const char *k)
{
    return json_object_object_get_ex(o, k, NULL);
}

static int qe_collection(json_object *body, const char **name, size_t *len, qe_err *e)
{
    json_object *c = qe_prop(body, "collection");
    if (!c || !json_object_is_type(c, json_type_string))
        return qe_fail(e, 400, "Missing 'collection' name");
    *name = json_object_get_string(c);
    *len = (size_t)json_object_get_string_len(c);
    return qe_check_collection(*name, *len, e);
}

static int qe_known_props(json_object *body, const char *const *allowed, qe_err *e)
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

/* Generic validation of behavior.md 4.6 (collection checked separately). */
static int qe_generic(const qe_mod *m, json_object *body, qe_err *e)
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

/* ---- authorisation ------------------------------------------------------------ */
static bool qe_allowed_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                         const char *key)
{
    return p && m->auth->allowed(m->auth_self, p, act, coll, key);
}

static bool qe_allowed(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll,
                       const char *key)
{
    return qe_allowed_p(m, mdb_req_principal(r), act, coll, key);
}

static const char *qe_act_name(mdb_action a)
{
    return a == MDB_ACT_READ ? "read" : a == MDB_ACT_WRITE ? "write" : "delete";
}

static int qe_need_coll_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                          qe_err *e)
{
    if (qe_allowed_p(m, p, act, coll, "*"))
        return 0;
    return qe_fail(e, 403, "Forbidden: token requires '%s:%s:*' scope", qe_act_name(act), coll);
}

typedef struct qe_patlist {
    qe_arena *a;
    qe_keypat *v;
    size_t n, cap;
    int oom;
} qe_patlist;

static void qe_pat_cb(const char *pattern, size_t len, bool prefix, void *ud)
{
    qe_patlist *l = ud;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        qe_keypat *v = qa_alloc(l->a, nc * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = nc;
    }
    char *p = qa_strndup(l->a, pattern, len);
    if (!p) {
        l->oom = 1;
        return;
    }
    l->v[l->n++] = (qe_keypat){p, len, prefix};
}

static int qe_need_coll(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll, qe_err *e)
{
    return qe_need_coll_p(m, mdb_req_principal(r), act, coll, e);
}

/* /get scope rules (behavior.md 1.3.7 with policy item 5). */
static int qe_scope_get(const qe_mod *m, const mdb_principal *p, qe_arena *a, qe_query *q,
                        qe_err *e)
{
    const char *coll = q->coll;
    if (qe_allowed_p(m, p, MDB_ACT_READ, coll, "*"))
        goto joins;
    qe_patlist l = {a, NULL, 0, 0, 0};
    if (p)
        m->auth->each_key_scope(m->auth_self, p, MDB_ACT_READ, coll, qe_pat_cb, &l);
    if (l.oom)
        return qe_fail(e, 500, "Out of memory");
    if (l.n == 0)
        return qe_fail(e, 403, "Forbidden: token has no read access to collection '%s'", coll);
    if (q->keys_mode != QK_NONE) {
        for (size_t i = 0; i < q->nkeys; i++)
            if (!qe_allowed_p(m, p, MDB_ACT_READ, coll, q->keys[i]))
                return qe_fail(e, 403, "Forbidden: token lacks 'read:%s:%s' scope", coll,
                               q->keys[i]);
    } else {
        bool concrete = true;
        for (size_t i = 0; i < l.n && concrete; i++)
            concrete = !l.v[i].prefix;
        if (concrete) {
            /* only exact keys: look them up instead of scanning */
            q->keys = qa_alloc(a, l.n * sizeof *q->keys);
            q->klens = qa_alloc(a, l.n * sizeof *q->klens);
            if (!q->keys || !q->klens)
                return qe_fail(e, 500, "Out of memory");
            for (size_t i = 0; i < l.n; i++) {
                bool dup = false;
                for (size_t j = 0; j < q->nkeys && !dup; j++)
                    dup = q->klens[j] == l.v[i].n && memcmp(q->keys[j], l.v[i].p, l.v[i].n) == 0;
                if (!dup) {
                    q->keys[q->nkeys] = l.v[i].p;
                    q->klens[q->nkeys++] = l.v[i].n;
                }
            }
            q->keys_mode = QK_ARRAY;
        } else {
            q->restricted = true;
            q->allow = l.v;
            q->nallow = l.n;
        }
    }
joins:
    for (size_t i = 0; i < q->njoins; i++)
        if (qe_need_coll_p(m, p, MDB_ACT_READ, q->joins[i].from, e))
            return -1;
    return 0;
}

/* ---- /get parsing ---------------------------------------------------------------- */
static int qe_parse_strings(qe_arena *a, json_object *v, const char *prop, qe_ftree *tree,
                            bool validate, qe_err *e)
{
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'%s' must be an array of strings", prop);
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *f = json_object_array_get_idx(v, i);
        if (!json_object_is_type(f, json_type_string))
            return qe_fail(e, 400, "'%s' must be an array of strings", prop);
        const char *s = json_object_get_string(f);
        size_t n = (size_t)json_object_get_string_len(f);
        if (validate && qe_check_field(s, n, e))
            return -1;
        if (qe_ftree_add(a, tree, s, n))
            return qe_fail(e, 500, "Out of memory");
    }
    return 0;
}

static int qe_parse_joins(qe_arena *a, json_object *v, qe_query *q, qe_err *e)
{
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'joins' must be an array");
    size_t n = json_object_array_length(v);
    q->joins = qa_alloc(a, (n + 1) * sizeof *q->joins);
    const char **names = qa_alloc(a, (n + 1) * sizeof *names);
    size_t *lens = qa_alloc(a, (n + 1) * sizeof *lens);
    if (!q->joins || !names || !lens)
        return qe_fail(e, 500, "Out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *el = json_object_array_get_idx(v, i);
        if (!json_object_is_type(el, json_type_object))
            return qe_fail(e, 400,
                           "Invalid join: each element of 'joins' must be {\"<alias>\": "
                           "{\"from\": \"<collection>\", \"on\": \"<field>\"}}");
        json_object_object_foreach(el, alias, spec)
        {
            if (!json_object_is_type(spec, json_type_object) || !qe_has(spec, "from"))
                continue;
            json_object *from = qe_prop(spec, "from"), *on = qe_prop(spec, "on");
            json_object *fields = qe_prop(spec, "fields");
            if (!json_object_is_type(from, json_type_string))
                return qe_fail(e, 400, "Invalid join '%.*s': 'from' must be a collection name",
                               QE_QUOTE_MAX, alias);
            if (!on || !json_object_is_type(on, json_type_string))
                return qe_fail(e, 400, "Invalid join '%.*s': 'on' must be a field path",
                               QE_QUOTE_MAX, alias);
            qe_join *j = &q->joins[q->njoins];
            j->alias = qa_strndup(a, alias, strlen(alias));
            j->alen = strlen(alias);
            j->from = json_object_get_string(from);
            j->flen = (size_t)json_object_get_string_len(from);
            const char *ons = json_object_get_string(on);
            size_t onl = (size_t)json_object_get_string_len(on);
            if (!j->alias)
                return qe_fail(e, 500, "Out of memory");
            if (qe_check_collection(j->from, j->flen, e) || qe_check_field(ons, onl, e))
                return -1;
            if (qe_path_init(a, &j->on, ons, onl, NULL))
                return qe_fail(e, 500, "Out of memory");
            if (fields) {
                j->fields = qa_alloc(a, sizeof *j->fields);
                if (!j->fields)
                    return qe_fail(e, 500, "Out of memory");
                if (qe_parse_strings(a, fields, "fields", j->fields, true, e))
                    return -1;
            }
            names[q->njoins] = j->alias;
            lens[q->njoins] = j->alen;
            q->njoins++;
            break; /* the first property holding a join spec defines it */
        }
    }
    q->shape.joins = q->joins;
    q->shape.njoins = q->njoins;
    q->shape.aliases = (qe_aliases){names, lens, q->njoins};
    return 0;
}

static int qe_parse_sort(qe_arena *a, json_object *v, qe_query *q, qe_err *e)
{
    static const char bad[] = "Invalid 'sort': each element must be a field name or {\"field\": "
                              "\"<field>\", \"order\": \"asc\"|\"desc\"}";
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'sort' must be an array");
    size_t n = json_object_array_length(v);
    q->specs = qa_alloc(a, (n + 1) * sizeof *q->specs);
    if (!q->specs)
        return qe_fail(e, 500, "Out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(v, i), *f = s;
        bool desc = false;
        if (json_object_is_type(s, json_type_object)) {
            f = qe_prop(s, "field");
            json_object *o = qe_prop(s, "order");
            if (o) {
                const char *os =
                    json_object_is_type(o, json_type_string) ? json_object_get_string(o) : "";
                if (strcasecmp(os, "desc") == 0)
                    desc = true;
                else if (strcasecmp(os, "asc") != 0)
                    return qe_fail(e, 400, "%s", bad);
            }
        }
        if (!f || !json_object_is_type(f, json_type_string))
            return qe_fail(e, 400, "%s", bad);
        const char *fs = json_object_get_string(f);
        size_t fl = (size_t)json_object_get_string_len(f);
        if (qe_check_field(fs, fl, e))
            return -1;
        qe_sortspec *sp = &q->specs[q->nspecs++];
        sp->desc = desc;
        if (qe_path_init(a, &sp->path, fs, fl, &q->shape.aliases))
            return qe_fail(e, 500, "Out of memory");
        if (sp->path.join >= 0)
            q->sort_uses_joins = true;
    }
    return 0;
}

static int qe_parse_count(json_object *body, const char *prop, int64_t *out, qe_err *e)
{
    int rc = qe_json_nonneg(qe_prop(body, prop), out);
    if (rc < 0)
        return qe_fail(e, 400, "'%s' must be a non-negative integer", prop);
    return 0;
}

static int qe_parse_keys(qe_arena *a, json_object *v, qe_query *q, qe_err *e)
{
    if (json_object_is_type(v, json_type_string)) {
        q->keys_mode = QK_SINGLE;
        q->nkeys = 1;
        q->keys = qa_alloc(a, sizeof *q->keys);
        q->klens = qa_alloc(a, sizeof *q->klens);
        if (!q->keys || !q->klens)
            return qe_fail(e, 500, "Out of memory");
        q->keys[0] = json_object_get_string(v);
        q->klens[0] = (size_t)json_object_get_string_len(v);
        return 0;
    }
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'keys' must be a string or an array of strings");
    size_t n = json_object_array_length(v);
    q->keys_mode = QK_ARRAY;
    q->keys = qa_alloc(a, (n + 1) * sizeof *q->keys);
    q->klens = qa_alloc(a, (n + 1) * sizeof *q->klens);
    if (!q->keys || !q->klens)
        return qe_fail(e, 500, "Out of memory");
    for (size_t i = 0; i < n; i++) {
        json_object *k = json_object_array_get_idx(v, i);
        if (!json_object_is_type(k, json_type_string))
            continue; /* upstream ignores non-strings */
        const char *s = json_object_get_string(k);
        size_t l = (size_t)json_object_get_string_len(k);
        bool dup = false;
        for (size_t j = 0; j < q->nkeys && !dup; j++)
            dup = q->klens[j] == l && memcmp(q->keys[j], s, l) == 0;
        if (!dup) {
            q->keys[q->nkeys] = s;
            q->klens[q->nkeys++] = l;
        }
    }
    return 0;
}

static int qe_parse_get(const qe_mod *m, qe_arena *a, json_object *body, qe_query *q, qe_err *e)
{
    static const char *const allowed[] = {
        "collection", "keys", "where", "fields", "excludedFields",
        "joins",      "sort", "count", "offset", "_allowed_prefixes",
        "order",      NULL};
    memset(q, 0, sizeof *q);
    q->count = 100;
    if (qe_collection(body, &q->coll, &q->clen, e) || qe_generic(m, body, e) ||
        qe_known_props(body, allowed, e))
        return -1;
    if (qe_has(body, "fields") && qe_has(body, "excludedFields"))
        return qe_fail(e, 400, "'fields' and 'excludedFields' cannot be used together");
    if (qe_has(body, "sort") && qe_has(body, "order"))
        return qe_fail(e, 400, "'order' and 'sort' cannot be used together");
    json_object *v = qe_prop(body, "order");
    if (v) {
        const char *o = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (strcmp(o, "asc") != 0 && strcmp(o, "desc") != 0)
            return qe_fail(e, 400, "'order' must be \"asc\" or \"desc\"");
        q->asc = strcmp(o, "asc") == 0;
    }
    if (qe_parse_count(body, "count", &q->count, e) ||
        qe_parse_count(body, "offset", &q->offset, e))
        return -1;
    if (q->count > 1000)
        return qe_fail(e, 400, "'count' cannot exceed 1000");
    if ((v = qe_prop(body, "joins")) && qe_parse_joins(a, v, q, e))
        return -1;
    if ((v = qe_prop(body, "fields"))) {
        q->shape.mode = QP_FIELDS;
        if (qe_parse_strings(a, v, "fields", &q->shape.tree, true, e))
            return -1;
    } else if ((v = qe_prop(body, "excludedFields"))) {
        q->shape.mode = QP_EXCLUDE;
        if (qe_parse_strings(a, v, "excludedFields", &q->shape.tree, false, e))
            return -1;
    }
    if ((v = qe_prop(body, "keys")) && qe_parse_keys(a, v, q, e))
        return -1;
    if (qe_where_compile(a, qe_prop(body, "where"), &q->shape.aliases, &q->where, e))
        return -1;
    if ((v = qe_prop(body, "sort")) && qe_parse_sort(a, v, q, e))
        return -1;
    if ((v = qe_prop(body, "_allowed_prefixes"))) {
        if (!json_object_is_type(v, json_type_array))
            return qe_fail(e, 400, "'_allowed_prefixes' must be an array of strings");
        qe_patlist l = {a, NULL, 0, 0, 0};
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *p = json_object_array_get_idx(v, i);
            if (!json_object_is_type(p, json_type_string))
                return qe_fail(e, 400, "'_allowed_prefixes' must be an array of strings");
            qe_pat_cb(json_object_get_string(p), (size_t)json_object_get_string_len(p), true, &l);
        }
        if (l.oom)
            return qe_fail(e, 500, "Out of memory");
        q->client_prefixes = true;
        q->prefixes = l.v;
        q->nprefixes = l.n;
    }
    return 0;
}

static void qe_h_get(mdb_req *r, void *ud)
{
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    qe_arena a = {0};
    qe_query q;
    qe_err e = {0};
    mdb_buf out;
    mdb_buf_init(&out);
    if (qe_parse_get(m, &a, body, &q, &e) || qe_scope_get(m, mdb_req_principal(r), &a, &q, &e) ||
        qe_run_get(m->store, &q, &out, &e)) {
        mdb_buf_free(&out);
        qe_reply_err(r, &e);
    } else {
        qe_reply_buf(r, &out);
    }
    qa_free(&a);
}

/* ---- REST reads ------------------------------------------------------------------ */
static int qe_query_uint(mdb_req *r, const char *name, int64_t *out, qe_err *e)
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

static void qe_h_list(mdb_req *r, void *ud)
{
    qe_mod *m = ud;
    const char *coll = mdb_req_param(r, "collection");
    qe_query q;
    qe_err e = {0};
    memset(&q, 0, sizeof q);
    q.count = 100;
    q.coll = coll ? coll : "";
    q.clen = strlen(q.coll);
    mdb_buf out;
    mdb_buf_init(&out);
    if (qe_check_collection(q.coll, q.clen, &e) || qe_query_uint(r, "limit", &q.count, &e) ||
        qe_query_uint(r, "offset", &q.offset, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    if (q.count > 1000) {
        mdb_reply_error(r, 400, "'count' cannot exceed 1000");
        return;
    }
    if (qe_need_coll(m, r, MDB_ACT_READ, q.coll, &e) || qe_run_get(m->store, &q, &out, &e)) {
        mdb_buf_free(&out);
        qe_reply_err(r, &e);
        return;
    }
    qe_reply_buf(r, &out);
}

static void qe_h_doc(mdb_req *r, void *ud)
{
    qe_mod *m = ud;
    const char *coll = mdb_req_param(r, "collection");
    const char *key = mdb_req_param(r, "key");
    qe_query q;
    qe_err e = {0};
    memset(&q, 0, sizeof q);
    q.coll = coll ? coll : "";
    q.clen = strlen(q.coll);
    size_t klen = key ? strlen(key) : 0;
    q.keys_mode = QK_SINGLE;
    q.keys = &key;
    q.klens = &klen;
    q.nkeys = 1;
    q.count = 1;
    if (qe_check_collection(q.coll, q.clen, &e) || qe_check_key(key ? key : "", klen, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    if (!qe_allowed(m, r, MDB_ACT_READ, q.coll, key)) {
        mdb_reply_error(r, 403, "Forbidden: token lacks 'read:%s:%s' scope", q.coll, key);
        return;
    }
    mdb_buf out;
    mdb_buf_init(&out);
    if (qe_run_get(m->store, &q, &out, &e)) {
        mdb_buf_free(&out);
        qe_reply_err(r, &e);
        return;
    }
    qe_reply_buf(r, &out);
}

/* ---- commit errors ------------------------------------------------------------------ */
static void qe_commit_error(mdb_req *r, int rc, const char *why, const char *schema_text,
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
static int qe_parse_meta(json_object *body, int64_t *ttl, int *has_ttl, int64_t *max, int *has_max,
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

/* ---- /set -------------------------------------------------------------------------- */
static bool qe_reserved_top(json_object *doc)
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
static int qe_extends(qe_mod *m, const mdb_principal *p, json_object *doc, json_object **res,
                      qe_err *e)
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

static void qe_h_set(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "data", "ttl", "maxSize", NULL};
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    const char *coll;
    size_t clen;
    qe_err e = {0};
    int64_t ttl = 0, maxs = 0;
    int has_ttl, has_max;
    if (qe_known_props(body, allowed, &e) || qe_collection(body, &coll, &clen, &e) ||
        qe_generic(m, body, &e) || qe_parse_meta(body, &ttl, &has_ttl, &maxs, &has_max, &e) ||
        qe_need_coll(m, r, MDB_ACT_WRITE, coll, &e)) {
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
        json_object_object_foreach(data, k, v)
        {
            if (fail)
                break;
            keys[i] = k;
            fail = qe_extends(m, mdb_req_principal(r), v, &docs[i], &e);
            i++;
        }
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
static void qe_h_update(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "data", NULL};
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    const char *coll;
    size_t clen;
    qe_err e = {0};
    if (qe_known_props(body, allowed, &e) || qe_collection(body, &coll, &clen, &e) ||
        qe_generic(m, body, &e) || qe_need_coll(m, r, MDB_ACT_WRITE, coll, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    json_object *data = qe_prop(body, "data");
    if (!data || !json_object_is_type(data, json_type_object)) {
        mdb_reply_error(r, 400, "Missing 'data' map");
        return;
    }
    /* every patch is checked before any is applied (policy item 9) */
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
    if (!(s->keys[s->n] = qa_strndup(s->a, k, kl))) {
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

static void qe_h_delete(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "count", "drop", "keys",
                                          "order",      "where", NULL};
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    const char *coll;
    size_t clen;
    qe_err e = {0};
    qe_arena a = {0};
    if (qe_collection(body, &coll, &clen, &e) || qe_generic(m, body, &e) ||
        qe_known_props(body, allowed, &e) || qe_need_coll(m, r, MDB_ACT_DELETE, coll, &e)) {
        qe_reply_err(r, &e);
        return;
    }
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
            qa_free(&a);
            return;
        }
        qe_delscan s = {&wh,           &a, qa_alloc(&a, (size_t)(count + 1) * sizeof(char *)), 0,
                        (size_t)count, 0};
        mdb_read *rv;
        if (!s.keys) {
            mdb_reply_error(r, 500, "Out of memory");
            qa_free(&a);
            return;
        }
        if (count > 0 && mdb_read_begin(m->store, coll, clen, &rv) == 0) {
            mdb_read_scan(rv, desc, qe_delscan_fn, &s);
            mdb_read_end(rv);
        }
        if (s.oom) {
            mdb_reply_error(r, 500, "Out of memory");
            qa_free(&a);
            return;
        }
        if (s.n == 0) {
            qe_reply_deleted(r, 0);
            qa_free(&a);
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
    qa_free(&a);
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
static void qe_h_schema(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "schema", "ttl", "maxSize", NULL};
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    const char *coll;
    size_t clen;
    qe_err e = {0};
    int64_t ttl = 0, maxs = 0;
    int has_ttl, has_max;
    if (qe_known_props(body, allowed, &e) || qe_collection(body, &coll, &clen, &e) ||
        qe_generic(m, body, &e) || qe_need_coll(m, r, MDB_ACT_WRITE, coll, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    bool has_schema = qe_has(body, "schema");
    if (!has_schema && !qe_has(body, "ttl") && !qe_has(body, "maxSize")) {
        mdb_reply_error(r, 400, "At least one of 'schema', 'ttl', or 'maxSize' must be provided");
        return;
    }
    const char *text = NULL;
    if (has_schema) {
        json_object *sj = qe_prop(body, "schema");
        qs_schema *s = qs_build(sj, &e);
        if (!s) {
            qe_reply_err(r, &e);
            return;
        }
        qs_free(s);
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

/* ---- /stats ---------------------------------------------------------------------------- */
typedef struct qe_statctx {
    const qe_mod *m;
    mdb_req *r;
    mdb_buf *out;
    unsigned n;
    int64_t total, now;
} qe_statctx;

/* The members of one collection's entry (without braces). */
static int64_t qe_stat_entry(mdb_buf *b, mdb_read *rv, int64_t now)
{
    const mdb_coll_meta *meta = mdb_read_meta(rv);
    bool expired = qe_expired(meta, now);
    int64_t count = expired ? 0 : (int64_t)mdb_read_count(rv);
    mdb_buf_printf(b, "\"count\":%lld", (long long)count);
    if (meta && meta->max_size > 0)
        mdb_buf_printf(b, ",\"maxSize\":%lld", (long long)meta->max_size);
    if (meta && meta->ttl_s > 0)
        mdb_buf_printf(b, ",\"ttl\":%lld", (long long)meta->ttl_s);
    if (meta && meta->expires_at_ms > 0) {
        char iso[32];
        mdb_iso8601(meta->expires_at_ms, iso);
        mdb_buf_printf(b, ",\"expiresAt\":\"%s\"", iso);
    }
    if (expired)
        mdb_buf_puts(b, ",\"expired\":true");
    return count;
}

static int qe_stat_each(mdb_read *rv, void *ud)
{
    qe_statctx *c = ud;
    const char *name = mdb_read_name(rv);
    if (!qe_allowed(c->m, c->r, MDB_ACT_READ, name, "*"))
        return 0;
    if (c->n++)
        mdb_buf_putc(c->out, ',');
    mdb_buf_json_str(c->out, name, strlen(name));
    mdb_buf_puts(c->out, ":{");
    c->total += qe_stat_entry(c->out, rv, c->now);
    mdb_buf_putc(c->out, '}');
    return 0;
}

static void qe_h_stats(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", NULL};
    qe_mod *m = ud;
    qe_err e = {0};
    json_object *body = NULL;
    if (mdb_req_method(r) == MDB_METHOD_POST && mdb_req_has_body(r)) {
        if (!(body = qe_body(r)))
            return;
        if (qe_known_props(body, allowed, &e)) {
            qe_reply_err(r, &e);
            return;
        }
    }
    mdb_buf out;
    mdb_buf_init(&out);
    json_object *c = body ? qe_prop(body, "collection") : NULL;
    if (c) {
        const char *coll;
        size_t clen;
        mdb_read *rv;
        if (qe_collection(body, &coll, &clen, &e) || qe_need_coll(m, r, MDB_ACT_READ, coll, &e)) {
            qe_reply_err(r, &e);
            return;
        }
        if (mdb_read_begin(m->store, coll, clen, &rv) != 0) {
            mdb_reply_error(r, 404, "Collection not found");
            return;
        }
        mdb_buf_puts(&out, "{\"statusCode\":200,\"collection\":");
        mdb_buf_json_str(&out, coll, clen);
        mdb_buf_putc(&out, ',');
        qe_stat_entry(&out, rv, mdb_now_ms());
        mdb_read_end(rv);
        mdb_buf_putc(&out, '}');
        qe_reply_buf(r, &out);
        return;
    }
    qe_statctx sc = {m, r, &out, 0, 0, mdb_now_ms()};
    mdb_buf_puts(&out, "{\"statusCode\":200,\"collections\":{");
    mdb_store_each_collection(m->store, qe_stat_each, &sc);
    mdb_buf_printf(&out, "},\"total\":%lld}", (long long)sc.total);
    qe_reply_buf(r, &out);
}

/* ---- /analytics (policy item 16) ---------------------------------------------------- */
enum { QA_COUNT, QA_SUM, QA_AVG, QA_MIN, QA_MAX };

typedef struct qe_agg {
    const qe_where *where;
    qe_path field;
    bool has_field;
    int type;
    uint64_t scanned, matched, nums;
    double sum, min, max;
} qe_agg;

static int qe_agg_fn(const mdb_doc *d, void *ud)
{
    qe_agg *g = ud;
    g->scanned++;
    if (!qe_where_match(g->where, d, NULL))
        return 0;
    if (!g->has_field) {
        g->matched++;
        return 0;
    }
    qe_fv fv;
    qe_doc_path(d, &g->field, &fv);
    if (fv.t == MDB_V_MISSING)
        return 0;
    g->matched++;
    if (!qe_is_num(fv.t))
        return 0;
    if (g->nums == 0 || fv.num < g->min)
        g->min = fv.num;
    if (g->nums == 0 || fv.num > g->max)
        g->max = fv.num;
    g->sum += fv.num;
    g->nums++;
    return 0;
}

static void qe_put_num(mdb_buf *b, double x)
{
    if (x == (double)(int64_t)x && x > -9e15 && x < 9e15)
        mdb_buf_printf(b, "%lld", (long long)x);
    else
        mdb_buf_printf(b, "%.17g", x);
}

static void qe_h_analytics(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "metric", "where", NULL};
    qe_mod *m = ud;
    json_object *body = qe_body(r);
    if (!body)
        return;
    const char *coll;
    size_t clen;
    qe_err e = {0};
    qe_arena a = {0};
    if (qe_collection(body, &coll, &clen, &e) || qe_generic(m, body, &e) ||
        qe_known_props(body, allowed, &e) || qe_need_coll(m, r, MDB_ACT_READ, coll, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    json_object *metric = qe_prop(body, "metric");
    if (!metric || !json_object_is_type(metric, json_type_object)) {
        mdb_reply_error(r, 400, "Missing 'metric' object ({\"type\": ..., \"field\": ...})");
        return;
    }
    json_object *t = qe_prop(metric, "type"), *f = qe_prop(metric, "field");
    static const char *const names[] = {"COUNT", "SUM", "AVG", "MIN", "MAX"};
    qe_agg g;
    memset(&g, 0, sizeof g);
    g.type = -1;
    for (int i = 0; t && json_object_is_type(t, json_type_string) && i < 5; i++)
        if (strcasecmp(json_object_get_string(t), names[i]) == 0)
            g.type = i;
    if (g.type < 0) {
        mdb_reply_error(r, 400, "'metric.type' must be one of COUNT, SUM, AVG, MIN, MAX");
        return;
    }
    if (f) {
        if (!json_object_is_type(f, json_type_string) ||
            qe_check_field(json_object_get_string(f), (size_t)json_object_get_string_len(f), &e)) {
            if (!e.status)
                qe_fail(&e, 400, "'metric.field' must be a field path");
            qe_reply_err(r, &e);
            return;
        }
        g.has_field = true;
    } else if (g.type != QA_COUNT) {
        mdb_reply_error(r, 400, "'metric.field' is required for %s", names[g.type]);
        return;
    }
    qe_where wh;
    if ((g.has_field && qe_path_init(&a, &g.field, json_object_get_string(f),
                                     (size_t)json_object_get_string_len(f), NULL)) ||
        qe_where_compile(&a, qe_prop(body, "where"), NULL, &wh, &e)) {
        if (!e.status)
            qe_fail(&e, 500, "Out of memory");
        qe_reply_err(r, &e);
        qa_free(&a);
        return;
    }
    g.where = &wh;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mdb_read *rv;
    if (mdb_read_begin(m->store, coll, clen, &rv) == 0) {
        if (!qe_expired(mdb_read_meta(rv), mdb_now_ms()))
            mdb_read_scan(rv, false, qe_agg_fn, &g);
        mdb_read_end(rv);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    qa_free(&a);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    mdb_buf out;
    mdb_buf_init(&out);
    mdb_buf_puts(&out, "{\"statusCode\":200,\"result\":");
    switch (g.type) {
    case QA_COUNT:
        mdb_buf_printf(&out, "%llu", (unsigned long long)g.matched);
        break;
    case QA_SUM:
        qe_put_num(&out, g.sum);
        break;
    case QA_AVG:
        if (g.nums)
            qe_put_num(&out, g.sum / (double)g.nums);
        else
            mdb_buf_puts(&out, "null");
        break;
    case QA_MIN:
    case QA_MAX:
        if (g.nums)
            qe_put_num(&out, g.type == QA_MIN ? g.min : g.max);
        else
            mdb_buf_puts(&out, "null");
        break;
    }
    mdb_buf_printf(&out, ",\"metadata\":{\"execution_time_ms\":%.3f,\"rows_scanned\":%llu}}", ms,
                   (unsigned long long)g.scanned);
    qe_reply_buf(r, &out);
}
