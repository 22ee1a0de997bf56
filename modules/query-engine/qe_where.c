/*
 * query-engine: the one WHERE evaluator (README "WHERE").
 *
 * A `where` JSON is compiled once per request into a small tree (arena
 * owned) and evaluated per document directly on the binary encoding
 * (mdb_val): no json-c decoding per document.
 *
 * Rules, the same for /get, /delete, /analytics and joins:
 *   - a clause object is an AND of its entries; an array of clauses is an
 *     AND; "$or"/"$and" take arrays (an empty $or never holds, an empty
 *     $and always holds); a clause that is neither object nor array holds;
 *   - "path": scalar or array is implicit equality; "path": {"$op": v, ...}
 *     needs every operator; every object is an operator object (a key
 *     that is no operator is 400 "Unknown operator", {} always holds);
 *   - equality: strings case-insensitively, numbers by value (1 == 1.0),
 *     booleans, null, arrays/objects structurally; different types differ;
 *   - a missing field satisfies $ne and $nin and nothing else ($ne / $nin
 *     are exact negations of $eq / $in);
 *   - $gt/$gte/$lt/$lte compare numbers only;
 *   - $contains: string field + string operand = case-insensitive
 *     substring; array field = some element equals the operand;
 *   - paths "_v", "_seq", "_createdAt", "_modifiedAt" (unix ms) and "_key"
 *     read the system fields; "alias.path" reads a joined document when
 *     "alias" is a join of the query.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

enum { QN_TRUE, QN_AND, QN_OR, QN_COND };
enum { QOP_EQ, QOP_NE, QOP_GT, QOP_GTE, QOP_LT, QOP_LTE, QOP_IN, QOP_NIN, QOP_CONTAINS };

/* A compiled literal. */
typedef struct qe_lit {
    mdb_vtype t; /* MDB_V_INT and MDB_V_DOUBLE are both "number" (num) */
    bool b;
    double num;
    const char *s; /* strings: the lowered form (qe_fold_lit) */
    size_t slen;
    mdb_val enc; /* every literal, encoded (arena) */
} qe_lit;

struct qe_node {
    int kind, op;
    qe_path path;
    qe_lit lit;
    qe_lit *set; /* $in / $nin */
    size_t nset;
    /* large sets: string and number literals hashed (slot = index + 1, 0
     * empty; mask + 1 slots), the other literals listed in `rest` */
    uint32_t *slots;
    size_t mask;
    uint32_t *rest;
    size_t nrest;
    struct qe_node **kids;
    size_t nkids;
};

static int qe_sys_of(const char *s, size_t n)
{
    if (n < 2 || s[0] != '_')
        return QS_NONE;
    if (n == 2 && s[1] == 'v')
        return QS_V;
    if (n == 4 && memcmp(s, "_seq", 4) == 0)
        return QS_SEQ;
    if (n == 4 && memcmp(s, "_key", 4) == 0)
        return QS_KEY;
    if (n == 10 && memcmp(s, "_createdAt", 10) == 0)
        return QS_CREATED;
    if (n == 11 && memcmp(s, "_modifiedAt", 11) == 0)
        return QS_MODIFIED;
    return QS_NONE;
}

/* Does p (bound to a join) read a whole value that the join's projection
 * changes? The bare alias (the joined document itself) and a sub-object
 * of which "fields" keep only parts have no stored counterpart: they are
 * read from the rendered view (qe_cand.views). */
static bool qe_path_needs_view(const qe_path *p)
{
    if (p->nseg == 0)
        return true;
    const qe_ftree *t = p->jfields;
    if (!t || (p->nseg == 1 && p->sys != QS_NONE))
        return false;
    for (int i = 0; i < p->nseg; i++) {
        t = qe_ftree_find(t, p->seg[i], p->seglen[i]);
        if (!t || t->leaf)
            return false; /* outside the projection, or kept whole */
    }
    return true;
}

/* Split `text` into segments and bind it to a join alias or system field.
 * Empty segments are kept (they simply never match). */
int qe_path_init(qe_arena *a, qe_path *p, const char *text, size_t len, const qe_aliases *al)
{
    p->text = text;
    p->len = len;
    p->join = -1;
    int n = 1;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '.';
    p->seg = qe_alloc(a, sizeof(char *) * (size_t)n);
    p->seglen = qe_alloc(a, sizeof(size_t) * (size_t)n);
    if (!p->seg || !p->seglen)
        return -1;
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '.') {
            p->seg[k] = text + start;
            p->seglen[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    p->nseg = k;
    p->view = false;
    if (al) {
        for (size_t j = 0; j < al->n; j++) {
            if (al->len[j] == p->seglen[0] && memcmp(al->name[j], p->seg[0], p->seglen[0]) == 0) {
                p->join = (int)j;
                p->jfields = al->fields ? al->fields[j] : NULL;
                p->seg++;
                p->seglen++;
                p->nseg--;
                break;
            }
        }
    }
    if (p->nseg == 1)
        p->sys = qe_sys_of(p->seg[0], p->seglen[0]);
    if (p->join >= 0 && qe_path_needs_view(p)) {
        p->view = true;
        if (al->need_view)
            al->need_view[p->join] = true;
    }
    return 0;
}

/* Value at a path of a document body (system fields of objects included). */
static void qe_fv_from_val(mdb_val v, qe_fv *fv)
{
    fv->v = v;
    fv->t = mdb_val_type(v);
    switch (fv->t) {
    case MDB_V_BOOL:
        fv->b = mdb_val_bool(v);
        break;
    case MDB_V_INT:
    case MDB_V_DOUBLE:
        fv->num = mdb_val_double(v);
        break;
    case MDB_V_STRING:
        fv->s = mdb_val_str(v, &fv->slen);
        break;
    default:
        break;
    }
}

static void qe_fv_num(qe_fv *fv, double x)
{
    memset(fv, 0, sizeof *fv);
    fv->t = MDB_V_INT;
    fv->num = x;
}

void qe_doc_path(const mdb_doc *d, const qe_path *p, qe_fv *fv)
{
    memset(fv, 0, sizeof *fv);
    if (!d)
        return; /* missing */
    if (p->sys != QS_NONE && mdb_doc_is_object(d)) {
        switch (p->sys) {
        case QS_V:
            qe_fv_num(fv, (double)mdb_doc_version(d));
            return;
        case QS_SEQ:
            qe_fv_num(fv, (double)mdb_doc_seq(d));
            return;
        case QS_CREATED:
            qe_fv_num(fv, (double)mdb_doc_created_ms(d));
            return;
        case QS_MODIFIED:
            qe_fv_num(fv, (double)mdb_doc_modified_ms(d));
            return;
        case QS_KEY:
            fv->t = MDB_V_STRING;
            fv->s = mdb_doc_key(d, &fv->slen);
            return;
        default:
            break;
        }
    }
    mdb_val v = mdb_doc_body(d);
    for (int i = 0; i < p->nseg && v.p; i++)
        v = mdb_val_member(v, p->seg[i], p->seglen[i]);
    if (v.p)
        qe_fv_from_val(v, fv);
}

/* Is p (bound to a join) inside that join's "fields" projection? */
static bool qe_join_visible(const qe_path *p)
{
    const qe_ftree *t = p->jfields;
    if (!t)
        return true;
    if (p->nseg == 1 && p->sys != QS_NONE) {
        static const unsigned flag[] = {[QS_V] = QF_V,
                                        [QS_SEQ] = QF_SEQ,
                                        [QS_CREATED] = QF_CREATED,
                                        [QS_MODIFIED] = QF_MODIFIED,
                                        [QS_KEY] = 0};
        return (t->sys & flag[p->sys]) != 0;
    }
    for (int i = 0; i < p->nseg; i++) {
        t = qe_ftree_find(t, p->seg[i], p->seglen[i]);
        if (!t)
            return false;
        if (t->leaf)
            return true;
    }
    return false; /* a projected sub-object: only parts of it are kept */
}

void qe_ctx_path(const qe_evctx *cx, const qe_path *p, qe_fv *fv)
{
    if (p->join >= 0) {
        const mdb_doc *j = cx->joined ? cx->joined[p->join] : NULL;
        if (!j) {
            /* No joined document: the alias is left out of the reply, so
             * the path reads the document's own field of that name, as
             * the reply shows it (README "Joins"). The alias is segment
             * -1 of the bound path (qe_path_init). */
            qe_path own = *p;
            own.seg--;
            own.seglen--;
            own.nseg++;
            own.sys = QS_NONE;
            own.join = -1;
            qe_doc_path(cx->doc, &own, fv);
            return;
        }
        if (p->view) {
            mdb_val v = cx->views ? cx->views[p->join] : (mdb_val){0};
            for (int i = 0; i < p->nseg && v.p; i++)
                v = mdb_val_member(v, p->seg[i], p->seglen[i]);
            memset(fv, 0, sizeof *fv);
            if (v.p)
                qe_fv_from_val(v, fv);
            return;
        }
        /* the joined document is shown without _key */
        if (!qe_join_visible(p) || (p->nseg == 1 && p->sys == QS_KEY)) {
            memset(fv, 0, sizeof *fv);
            return;
        }
        qe_doc_path(j, p, fv);
        return;
    }
    qe_doc_path(cx->doc, p, fv);
}

bool qe_is_num(mdb_vtype t)
{
    return t == MDB_V_INT || t == MDB_V_DOUBLE;
}

static bool qe_fv_eq(const qe_fv *f, const qe_lit *l)
{
    switch (f->t) {
    case MDB_V_MISSING:
        return false;
    case MDB_V_INT:
    case MDB_V_DOUBLE:
        return qe_is_num(l->t) && f->num == l->num;
    case MDB_V_STRING:
        return l->t == MDB_V_STRING && qe_ci_eq(f->s, f->slen, l->s, l->slen);
    case MDB_V_BOOL:
        return l->t == MDB_V_BOOL && f->b == l->b;
    case MDB_V_NULL:
        return l->t == MDB_V_NULL;
    case MDB_V_ARRAY:
    case MDB_V_OBJECT:
        return l->t == f->t && mdb_val_equal(f->v, l->enc);
    }
    return false;
}

static bool qe_set_has(const qe_node *n, const qe_fv *f);

static bool qe_cond(const qe_node *n, const qe_fv *f)
{
    switch (n->op) {
    case QOP_EQ:
        return qe_fv_eq(f, &n->lit);
    case QOP_NE:
        return !qe_fv_eq(f, &n->lit);
    case QOP_GT:
        return qe_is_num(f->t) && qe_is_num(n->lit.t) && f->num > n->lit.num;
    case QOP_GTE:
        return qe_is_num(f->t) && qe_is_num(n->lit.t) && f->num >= n->lit.num;
    case QOP_LT:
        return qe_is_num(f->t) && qe_is_num(n->lit.t) && f->num < n->lit.num;
    case QOP_LTE:
        return qe_is_num(f->t) && qe_is_num(n->lit.t) && f->num <= n->lit.num;
    case QOP_IN:
    case QOP_NIN: {
        bool in = qe_set_has(n, f);
        return n->op == QOP_IN ? in : !in;
    }
    case QOP_CONTAINS:
        if (f->t == MDB_V_STRING)
            return n->lit.t == MDB_V_STRING && qe_ci_contains(f->s, f->slen, n->lit.s, n->lit.slen);
        if (f->t == MDB_V_ARRAY) {
            mdb_val_iter it;
            mdb_val el;
            mdb_val_iter_init(f->v, &it);
            while (mdb_val_iter_next(&it, NULL, NULL, &el)) {
                qe_fv ef;
                qe_fv_from_val(el, &ef);
                if (qe_fv_eq(&ef, &n->lit))
                    return true;
            }
        }
        return false;
    }
    return false;
}

static bool qe_eval_node(const qe_node *n, const qe_evctx *cx)
{
    switch (n->kind) {
    case QN_TRUE:
        return true;
    case QN_AND:
        for (size_t i = 0; i < n->nkids; i++)
            if (!qe_eval_node(n->kids[i], cx))
                return false;
        return true;
    case QN_OR:
        for (size_t i = 0; i < n->nkids; i++)
            if (qe_eval_node(n->kids[i], cx))
                return true;
        return false;
    case QN_COND: {
        qe_fv f;
        qe_ctx_path(cx, &n->path, &f);
        return qe_cond(n, &f);
    }
    }
    return false;
}

/* NULL where = everything matches. */
bool qe_where_match(const qe_where *w, const mdb_doc *d, const mdb_doc *const *joined)
{
    qe_evctx cx = {d, joined, NULL};
    return qe_where_match_cx(w, &cx);
}

bool qe_where_match_cx(const qe_where *w, const qe_evctx *cx)
{
    if (!w || !w->root)
        return true;
    return qe_eval_node(w->root, cx);
}

/* ---- compiler ---------------------------------------------------------------- */
typedef struct qe_wc {
    qe_arena *a;
    const qe_aliases *al;
    qe_err *err;
    bool uses_joins;
    size_t nodes; /* bounded by QE_MAX_WHERE_NODES (README "Limits") */
} qe_wc;

static int qe_lit_init(qe_wc *c, qe_lit *l, json_object *j)
{
    memset(l, 0, sizeof *l);
    mdb_buf b;
    mdb_buf_init(&b);
    int rc = mdb_encode_jsonc(j, &b);
    if (rc != 0 || b.oom) {
        mdb_buf_free(&b);
        return qe_fail(c->err, rc == -EINVAL ? 400 : 500, "%s",
                       rc == -EINVAL ? "JSON nesting too deep (max 32 levels)" : "Out of memory");
    }
    unsigned char *p = qe_alloc(c->a, b.len ? b.len : 1);
    if (!p) {
        mdb_buf_free(&b);
        return qe_fail(c->err, 500, "Out of memory");
    }
    memcpy(p, b.data, b.len);
    mdb_buf_free(&b);
    l->enc.p = p;
    l->t = mdb_val_type(l->enc);
    switch (l->t) {
    case MDB_V_BOOL:
        l->b = mdb_val_bool(l->enc);
        break;
    case MDB_V_INT:
    case MDB_V_DOUBLE:
        l->num = mdb_val_double(l->enc);
        break;
    case MDB_V_STRING: {
        size_t n;
        const char *s = mdb_val_str(l->enc, &n);
        l->s = qe_fold_lit(c->a, s, n, &l->slen);
        if (!l->s)
            return qe_fail(c->err, 500, "Out of memory");
        break;
    }
    default:
        break;
    }
    return 0;
}

/* Count one node the evaluator will visit (wrappers that collapse into
 * their only child are free); -1 past the limit. */
static int qe_count(qe_wc *c)
{
    if (++c->nodes > QE_MAX_WHERE_NODES)
        return qe_fail(c->err, 400, "Invalid Query: too many conditions in 'where' (max %d)",
                       QE_MAX_WHERE_NODES);
    return 0;
}

static qe_node *qe_node_new(qe_wc *c, int kind)
{
    qe_node *n = qe_alloc(c->a, sizeof *n);
    if (!n)
        qe_fail(c->err, 500, "Out of memory");
    else
        n->kind = kind;
    return n;
}

static int qe_op_of(const char *k)
{
    static const struct {
        const char *name;
        int op;
    } ops[] = {{"$eq", QOP_EQ},
               {"$equals", QOP_EQ},
               {"$ne", QOP_NE},
               {"$notEquals", QOP_NE},
               {"$gt", QOP_GT},
               {"$greaterThan", QOP_GT},
               {"$gte", QOP_GTE},
               {"$greaterThanOrEqual", QOP_GTE},
               {"$lt", QOP_LT},
               {"$lessThan", QOP_LT},
               {"$lte", QOP_LTE},
               {"$lessThanOrEqual", QOP_LTE},
               {"$in", QOP_IN},
               {"$oneOf", QOP_IN},
               {"$nin", QOP_NIN},
               {"$notIn", QOP_NIN},
               {"$contains", QOP_CONTAINS},
               {"$ct", QOP_CONTAINS}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, k) == 0)
            return ops[i].op;
    return -1;
}

static qe_node *qe_compile_clause(qe_wc *c, json_object *j, int depth);

/* Add `kid` to an AND/OR node, growing the array in the arena. */
static int qe_node_add(qe_wc *c, qe_node *n, qe_node *kid, size_t *cap)
{
    if (n->nkids == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        qe_node **k = qe_alloc(c->a, nc * sizeof *k);
        if (!k)
            return qe_fail(c->err, 500, "Out of memory");
        if (n->nkids)
            memcpy(k, n->kids, n->nkids * sizeof *k);
        n->kids = k;
        *cap = nc;
    }
    n->kids[n->nkids++] = kid;
    return 0;
}

static int qe_set_index(qe_wc *c, qe_node *n);

/* A $or of equalities on one path is a $in (the same rule, README
 * "WHERE"): one hashed lookup per document instead of one per branch. */
static qe_node *qe_or_as_set(qe_wc *c, qe_node *n)
{
    if (n->nkids <= QE_SET_HASH_MIN)
        return n;
    const qe_node *k0 = n->kids[0];
    for (size_t i = 0; i < n->nkids; i++) {
        const qe_node *k = n->kids[i];
        if (k->kind != QN_COND || k->op != QOP_EQ || k->path.join != k0->path.join ||
            k->path.len != k0->path.len || memcmp(k->path.text, k0->path.text, k0->path.len) != 0)
            return n;
    }
    qe_node *in = qe_node_new(c, QN_COND);
    if (!in)
        return NULL;
    in->op = QOP_IN;
    in->path = k0->path;
    in->nset = n->nkids;
    in->set = qe_alloc(c->a, n->nkids * sizeof *in->set);
    if (!in->set) {
        qe_fail(c->err, 500, "Out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n->nkids; i++)
        in->set[i] = n->kids[i]->lit;
    return qe_set_index(c, in) ? NULL : in;
}

static qe_node *qe_compile_list(qe_wc *c, int kind, const char *op, json_object *arr, int depth)
{
    if (!json_object_is_type(arr, json_type_array)) {
        qe_fail(c->err, 400, "Invalid Query: %s expects an array", op);
        return NULL;
    }
    qe_node *n = qe_count(c) ? NULL : qe_node_new(c, kind);
    size_t cap = 0;
    if (!n)
        return NULL;
    size_t len = json_object_array_length(arr);
    for (size_t i = 0; i < len; i++) {
        qe_node *k = qe_compile_clause(c, json_object_array_get_idx(arr, i), depth + 1);
        if (!k || qe_node_add(c, n, k, &cap) != 0)
            return NULL;
    }
    return kind == QN_OR ? qe_or_as_set(c, n) : n;
}

/* ---- $in / $nin sets -----------------------------------------------------------
 * A large set is looked up by hash so a match costs O(1) per document, not
 * O(set) (README "Limits"). Strings hash by their folded bytes, numbers by
 * value; the few other literals are compared one by one. */
static uint64_t qe_num_hash(double x)
{
    if (x == 0)
        x = 0; /* -0.0 == 0.0 */
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    u ^= u >> 33;
    u *= 0xff51afd7ed558ccdull;
    u ^= u >> 33;
    return u;
}

static int qe_set_index(qe_wc *c, qe_node *n)
{
    size_t cap = 16;
    while (cap < n->nset * 2)
        cap <<= 1;
    n->slots = qe_alloc(c->a, cap * sizeof *n->slots);
    n->rest = qe_alloc(c->a, n->nset * sizeof *n->rest);
    if (!n->slots || !n->rest)
        return qe_fail(c->err, 500, "Out of memory");
    n->mask = cap - 1;
    for (size_t i = 0; i < n->nset; i++) {
        const qe_lit *l = &n->set[i];
        uint64_t h;
        if (l->t == MDB_V_STRING)
            h = qe_hash_bytes(l->s, l->slen);
        else if (qe_is_num(l->t))
            h = qe_num_hash(l->num);
        else {
            n->rest[n->nrest++] = (uint32_t)i;
            continue;
        }
        size_t j = (size_t)h & n->mask;
        while (n->slots[j])
            j = (j + 1) & n->mask;
        n->slots[j] = (uint32_t)i + 1;
    }
    return 0;
}

static bool qe_set_has(const qe_node *n, const qe_fv *f)
{
    if (!n->slots) {
        for (size_t i = 0; i < n->nset; i++)
            if (qe_fv_eq(f, &n->set[i]))
                return true;
        return false;
    }
    uint64_t h;
    if (f->t == MDB_V_STRING)
        h = qe_fold_hash(f->s, f->slen);
    else if (qe_is_num(f->t))
        h = qe_num_hash(f->num);
    else {
        for (size_t i = 0; i < n->nrest; i++)
            if (qe_fv_eq(f, &n->set[n->rest[i]]))
                return true;
        return false;
    }
    for (size_t j = (size_t)h & n->mask; n->slots[j]; j = (j + 1) & n->mask)
        if (qe_fv_eq(f, &n->set[n->slots[j] - 1]))
            return true;
    return false;
}

static qe_node *qe_compile_cond(qe_wc *c, const char *field, const char *opname, int op,
                                json_object *operand)
{
    qe_node *n = qe_count(c) ? NULL : qe_node_new(c, QN_COND);
    if (!n)
        return NULL;
    n->op = op;
    char *f = qe_strndup(c->a, field, strlen(field));
    if (!f || qe_path_init(c->a, &n->path, f, strlen(f), c->al) != 0) {
        qe_fail(c->err, 500, "Out of memory");
        return NULL;
    }
    if (n->path.join >= 0)
        c->uses_joins = true;
    if (op == QOP_IN || op == QOP_NIN) {
        if (!json_object_is_type(operand, json_type_array)) {
            qe_fail(c->err, 400, "Invalid Query: %s expects an array", opname);
            return NULL;
        }
        n->nset = json_object_array_length(operand);
        if (n->nset > QE_MAX_SET) {
            qe_fail(c->err, 400, "Invalid Query: %s takes at most %d values", opname, QE_MAX_SET);
            return NULL;
        }
        n->set = qe_alloc(c->a, (n->nset ? n->nset : 1) * sizeof *n->set);
        if (!n->set) {
            qe_fail(c->err, 500, "Out of memory");
            return NULL;
        }
        for (size_t i = 0; i < n->nset; i++)
            if (qe_lit_init(c, &n->set[i], json_object_array_get_idx(operand, i)) != 0)
                return NULL;
        if (n->nset > QE_SET_HASH_MIN && qe_set_index(c, n) != 0)
            return NULL;
        return n;
    }
    if (qe_lit_init(c, &n->lit, operand) != 0)
        return NULL;
    return n;
}

static qe_node *qe_compile_clause(qe_wc *c, json_object *j, int depth)
{
    if (depth > 64) {
        qe_fail(c->err, 400, "JSON nesting too deep (max 32 levels)");
        return NULL;
    }
    if (json_object_is_type(j, json_type_array))
        return qe_compile_list(c, QN_AND, "$and", j, depth);
    if (!json_object_is_type(j, json_type_object))
        return qe_count(c) ? NULL : qe_node_new(c, QN_TRUE);
    qe_node *n = qe_node_new(c, QN_AND);
    size_t cap = 0;
    if (!n)
        return NULL;
    json_object_object_foreach((json_object *)j, key, val)
    {
        qe_node *k = NULL;
        if (strcmp(key, "$or") == 0) {
            k = qe_compile_list(c, QN_OR, "$or", val, depth);
        } else if (strcmp(key, "$and") == 0) {
            k = qe_compile_list(c, QN_AND, "$and", val, depth);
        } else if (key[0] == '$') {
            qe_fail(c->err, 400, "Invalid Query: Unknown operator: %.*s", QE_QUOTE_MAX, key);
            return NULL;
        } else if (json_object_is_type(val, json_type_object)) {
            /* an object is always an operator object (upstream's rule; README
             * "WHERE"): every operator must hold, {} holds for every document */
            qe_node *all = qe_node_new(c, QN_AND);
            size_t acap = 0;
            if (!all)
                return NULL;
            json_object_object_foreach(val, opk, opv)
            {
                int op = qe_op_of(opk);
                if (op < 0) {
                    qe_fail(c->err, 400, "Invalid Query: Unknown operator: %.*s", QE_QUOTE_MAX,
                            opk);
                    return NULL;
                }
                qe_node *cn = qe_compile_cond(c, key, opk, op, opv);
                if (!cn || qe_node_add(c, all, cn, &acap) != 0)
                    return NULL;
            }
            k = all->nkids == 1 ? all->kids[0] : qe_count(c) ? NULL : all;
        } else {
            k = qe_compile_cond(c, key, "$eq", QOP_EQ, val);
        }
        if (!k || qe_node_add(c, n, k, &cap) != 0)
            return NULL;
    }
    return n->nkids == 1 ? n->kids[0] : qe_count(c) ? NULL : n;
}

/* Compile a request's `where`. Top-level field names are validated with the
 * field-name rules (README "Validation"). Returns 0, or -1 with err set. */
int qe_where_compile(qe_arena *a, json_object *j, const qe_aliases *al, qe_where *out, qe_err *err)
{
    memset(out, 0, sizeof *out);
    if (!j)
        return 0;
    if (!json_object_is_type(j, json_type_object) && !json_object_is_type(j, json_type_array))
        return qe_fail(err, 400, "'where' must be an object or an array of objects");
    if (json_object_is_type(j, json_type_object)) {
        json_object_object_foreach((json_object *)j, k, v)
        {
            (void)v;
            if (k[0] != '$' && qe_check_field(k, strlen(k), err) != 0)
                return -1;
        }
    }
    qe_wc c = {a, al, err, false, 0};
    out->root = qe_compile_clause(&c, j, 0);
    if (!out->root)
        return -1;
    out->uses_joins = c.uses_joins;
    return 0;
}
