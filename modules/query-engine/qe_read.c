/*
 * query-engine: the read routes: /get (parsing into a qe_query, arena
 * owned, freed when the handler returns), GET /collections/{c} and
 * /collections/{c}/docs/{k}, /stats and /analytics.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

/* ---- /get parsing ---------------------------------------------------------------- */
static int qe_parse_strings(qe_arena *a, json_object *v, const char *prop, qe_ftree *tree,
                            bool validate, qe_err *e)
{
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'%s' must be an array of strings", prop);
    if (json_object_array_length(v) > QE_MAX_PATHS)
        return qe_fail(e, 400, "'%s' has too many entries (max %d)", prop, QE_MAX_PATHS);
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
    if (n > QE_MAX_JOINS)
        return qe_fail(e, 400, "'joins' has too many entries (max %d)", QE_MAX_JOINS);
    q->joins = qe_alloc(a, (n + 1) * sizeof *q->joins);
    const char **names = qe_alloc(a, (n + 1) * sizeof *names);
    size_t *lens = qe_alloc(a, (n + 1) * sizeof *lens);
    const qe_ftree **jf = qe_alloc(a, (n + 1) * sizeof *jf);
    bool *need_view = qe_alloc(a, (n + 1) * sizeof *need_view);
    if (!q->joins || !names || !lens || !jf || !need_view)
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
            j->alias = qe_strndup(a, alias, strlen(alias));
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
                j->fields = qe_alloc(a, sizeof *j->fields);
                if (!j->fields)
                    return qe_fail(e, 500, "Out of memory");
                if (qe_parse_strings(a, fields, "fields", j->fields, true, e))
                    return -1;
            }
            names[q->njoins] = j->alias;
            lens[q->njoins] = j->alen;
            jf[q->njoins] = j->fields;
            q->njoins++;
            break; /* the first property holding a join spec defines it */
        }
    }
    q->shape.joins = q->joins;
    q->shape.njoins = q->njoins;
    memset(need_view, 0, (n + 1) * sizeof *need_view);
    q->shape.aliases = (qe_aliases){names, lens, jf, need_view, q->njoins};
    return 0;
}

static int qe_parse_sort(qe_arena *a, json_object *v, qe_query *q, qe_err *e)
{
    static const char bad[] = "Invalid 'sort': each element must be a field name or {\"field\": "
                              "\"<field>\", \"order\": \"asc\"|\"desc\"}";
    if (!json_object_is_type(v, json_type_array))
        return qe_fail(e, 400, "'sort' must be an array");
    size_t n = json_object_array_length(v);
    if (n > QE_MAX_SORT)
        return qe_fail(e, 400, "'sort' has too many fields (max %d)", QE_MAX_SORT);
    q->sorted = true;
    q->specs = qe_alloc(a, (n + 1) * sizeof *q->specs);
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

static int qe_parse_keys(qe_arena *a, json_object *v, qe_query *q, qe_err *e)
{
    if (json_object_is_type(v, json_type_string)) {
        q->keys_mode = QK_SINGLE;
        q->nkeys = 1;
        q->keys = qe_alloc(a, sizeof *q->keys);
        q->klens = qe_alloc(a, sizeof *q->klens);
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
    q->keys = qe_alloc(a, (n + 1) * sizeof *q->keys);
    q->klens = qe_alloc(a, (n + 1) * sizeof *q->klens);
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

static const char *const qe_get_props[] = {
    "collection", "keys", "where", "fields", "excludedFields",
    "joins",      "sort", "count", "offset", "_allowed_prefixes",
    "order",      NULL};
const qe_route_spec qe_get_spec = {qe_get_props, MDB_ACT_READ, true, false};

int qe_parse_get(qe_arena *a, json_object *body, const char *coll, size_t clen, qe_query *q,
                 qe_err *e)
{
    memset(q, 0, sizeof *q);
    q->count = 100;
    q->coll = coll;
    q->clen = clen;
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

void qe_h_get(mdb_req *r, void *ud)
{
    if (qe_defer_scan(r))
        return;
    qe_mod *m = ud;
    const char *coll;
    size_t clen;
    json_object *body = qe_begin(m, r, &qe_get_spec, &coll, &clen);
    if (!body)
        return;
    qe_arena a = {0};
    qe_query q;
    qe_err e = {0};
    mdb_buf out;
    mdb_buf_init(&out);
    if (qe_parse_get(&a, body, coll, clen, &q, &e) ||
        qe_scope_get(m, mdb_req_principal(r), &a, &q, &e) || qe_run_get(m->store, &q, &out, &e)) {
        mdb_buf_free(&out);
        qe_reply_err(r, &e);
    } else {
        qe_reply_buf(r, &out);
    }
    qe_arena_free(&a);
}

void qe_h_list(mdb_req *r, void *ud)
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
    /* the preamble's order: name, collection scope, then the parameters */
    if (qe_check_collection(q.coll, q.clen, &e) || qe_need_coll(m, r, MDB_ACT_READ, q.coll, &e) ||
        qe_query_uint(r, "limit", &q.count, &e) || qe_query_uint(r, "offset", &q.offset, &e)) {
        qe_reply_err(r, &e);
        return;
    }
    if (q.count > 1000) {
        mdb_reply_error(r, 400, "'count' cannot exceed 1000");
        return;
    }
    if (qe_run_get(m->store, &q, &out, &e)) {
        mdb_buf_free(&out);
        qe_reply_err(r, &e);
        return;
    }
    qe_reply_buf(r, &out);
}

void qe_h_doc(mdb_req *r, void *ud)
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

void qe_h_stats(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_READ, false, true};
    qe_mod *m = ud;
    const char *coll = NULL;
    size_t clen = 0;
    if (mdb_req_method(r) == MDB_METHOD_POST && mdb_req_has_body(r) &&
        !qe_begin(m, r, &spec, &coll, &clen))
        return;
    mdb_buf out;
    mdb_buf_init(&out);
    if (coll) {
        mdb_read *rv;
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

int qe_agg_fn(const mdb_doc *d, void *ud)
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
    /* range first: casting a double outside int64 is undefined */
    if (x > -9e15 && x < 9e15 && x == (double)(int64_t)x)
        mdb_buf_printf(b, "%lld", (long long)x);
    else
        mdb_buf_printf(b, "%.17g", x);
}

void qe_h_analytics(mdb_req *r, void *ud)
{
    static const char *const allowed[] = {"collection", "metric", "where", NULL};
    static const qe_route_spec spec = {allowed, MDB_ACT_READ, false, false};
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
        qe_arena_free(&a);
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
    qe_arena_free(&a);
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
