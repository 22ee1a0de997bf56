/*
 * query-engine: projection (fields / excludedFields), rendering of documents
 * straight from the binary encoding into JSON text, and the sort order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

#define QE_FTREE_HASH_MIN 8 /* nodes with more kids look them up by hash */

static uint64_t qe_name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* (Re)build t's name index at twice its kids (arena; the old one is left). */
static int qe_ftree_index(qe_arena *a, qe_ftree *t)
{
    size_t cap = 16;
    while (cap < t->nkids * 2)
        cap <<= 1;
    uint32_t *idx = qe_alloc(a, cap * sizeof *idx);
    if (!idx)
        return -1;
    for (size_t i = 0; i < t->nkids; i++) {
        size_t j = (size_t)qe_name_hash(t->kids[i].name, t->kids[i].nlen) & (cap - 1);
        while (idx[j])
            j = (j + 1) & (cap - 1);
        idx[j] = (uint32_t)i + 1;
    }
    t->idx = idx;
    t->imask = cap - 1;
    return 0;
}

const qe_ftree *qe_ftree_find(const qe_ftree *t, const char *s, size_t n)
{
    if (t->idx) {
        for (size_t j = (size_t)qe_name_hash(s, n) & t->imask; t->idx[j]; j = (j + 1) & t->imask) {
            const qe_ftree *k = &t->kids[t->idx[j] - 1];
            if (k->nlen == n && memcmp(k->name, s, n) == 0)
                return k;
        }
        return NULL;
    }
    for (size_t i = 0; i < t->nkids; i++)
        if (t->kids[i].nlen == n && memcmp(t->kids[i].name, s, n) == 0)
            return &t->kids[i];
    return NULL;
}

static qe_ftree *qe_ftree_child(qe_arena *a, qe_ftree *t, const char *s, size_t n)
{
    qe_ftree *found = (qe_ftree *)qe_ftree_find(t, s, n);
    if (found)
        return found;
    if (t->nkids == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 4;
        qe_ftree *k = qe_alloc(a, nc * sizeof *k);
        if (!k)
            return NULL;
        if (t->nkids)
            memcpy(k, t->kids, t->nkids * sizeof *k);
        t->kids = k;
        t->cap = nc;
    }
    qe_ftree *c = &t->kids[t->nkids++];
    memset(c, 0, sizeof *c);
    c->name = qe_strndup(a, s, n);
    c->nlen = n;
    if (!c->name)
        return NULL;
    if (t->nkids > QE_FTREE_HASH_MIN && (!t->idx || t->nkids * 2 > t->imask + 1)) {
        if (qe_ftree_index(a, t))
            return NULL;
    } else if (t->idx) {
        size_t j = (size_t)qe_name_hash(s, n) & t->imask;
        while (t->idx[j])
            j = (j + 1) & t->imask;
        t->idx[j] = (uint32_t)(t->nkids - 1) + 1;
    }
    return c;
}

/* Add one dot path. System fields at the top level set root->sys instead
 * (`_v` and `_key` are always rendered anyway). */
int qe_ftree_add(qe_arena *a, qe_ftree *root, const char *path, size_t len)
{
    static const struct {
        const char *n;
        unsigned f;
    } sys[] = {{"_seq", QF_SEQ},
               {"_createdAt", QF_CREATED},
               {"_modifiedAt", QF_MODIFIED},
               {"_expiresAt", QF_EXPIRES},
               {"_v", QF_V},
               {"_key", 0}};
    for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++)
        if (strlen(sys[i].n) == len && memcmp(sys[i].n, path, len) == 0) {
            root->sys |= sys[i].f;
            return 0;
        }
    qe_ftree *t = root;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '.') {
            if (t->leaf)
                return 0; /* an ancestor already takes the whole value */
            t = qe_ftree_child(a, t, path + start, i - start);
            if (!t)
                return -1;
            start = i + 1;
        }
    }
    t->leaf = true;
    t->nkids = 0;
    t->idx = NULL;
    return 0;
}

/* ---- rendering -------------------------------------------------------------- */
static void qe_put_member(mdb_buf *b, unsigned *count, const char *k, size_t klen)
{
    if ((*count)++)
        mdb_buf_putc(b, ',');
    mdb_buf_json_str(b, k, klen);
    mdb_buf_putc(b, ':');
}

/* Members of obj selected by t; returns how many were written. skip and
 * joined (may be NULL) name the top-level members that joins replace. */
static unsigned qe_render_fields(mdb_buf *b, unsigned *count, mdb_val obj, const qe_ftree *t,
                                 const qe_aliases *skip, const mdb_doc *const *joined);
static bool qe_is_found_alias(const qe_aliases *al, const mdb_doc *const *joined, const char *k,
                              size_t kl);

/* Member m of an object, selected by tree node k; returns 1 if written. */
static unsigned qe_render_field(mdb_buf *b, unsigned *count, const qe_ftree *k, mdb_val m)
{
    if (k->leaf) {
        qe_put_member(b, count, k->name, k->nlen);
        mdb_val_to_json(m, b);
        return 1;
    }
    if (mdb_val_type(m) != MDB_V_OBJECT)
        return 0;
    size_t mark = b->len;
    unsigned save = *count;
    qe_put_member(b, count, k->name, k->nlen);
    mdb_buf_putc(b, '{');
    unsigned inner = 0;
    if (qe_render_fields(b, &inner, m, k, NULL, NULL) == 0) {
        b->len = mark; /* nothing under this branch exists: leave it out */
        *count = save;
        return 0;
    }
    mdb_buf_putc(b, '}');
    return 1;
}

/* A node with many kids walks the document once and looks each member
 * up, so a long projection stays linear (README "Limits"). */
static unsigned qe_render_fields(mdb_buf *b, unsigned *count, mdb_val obj, const qe_ftree *t,
                                 const qe_aliases *skip, const mdb_doc *const *joined)
{
    unsigned wrote = 0;
    if (t->idx) {
        mdb_val_iter it;
        const char *name;
        size_t nl;
        mdb_val m;
        mdb_val_iter_init(obj, &it);
        while (mdb_val_iter_next(&it, &name, &nl, &m)) {
            const qe_ftree *k = qe_ftree_find(t, name, nl);
            if (k && !qe_is_found_alias(skip, joined, name, nl))
                wrote += qe_render_field(b, count, k, m);
        }
        return wrote;
    }
    for (size_t i = 0; i < t->nkids; i++) {
        const qe_ftree *k = &t->kids[i];
        mdb_val m = mdb_val_member(obj, k->name, k->nlen);
        if (m.p && !qe_is_found_alias(skip, joined, k->name, k->nlen))
            wrote += qe_render_field(b, count, k, m);
    }
    return wrote;
}

/* Is k one of the aliases whose join found a document? (Those replace a
 * member of the same name; an alias whose target is missing is left out
 * and the document's own member shows, as upstream embeds only what it
 * found.) */
static bool qe_is_found_alias(const qe_aliases *al, const mdb_doc *const *joined, const char *k,
                              size_t kl)
{
    if (!al || !joined)
        return false;
    for (size_t i = 0; i < al->n; i++)
        if (joined[i] && al->len[i] == kl && memcmp(al->name[i], k, kl) == 0)
            return true;
    return false;
}

/* Members of obj minus those in t (may be NULL). An object that is left
 * empty along an excluded path is removed too, also one that was empty
 * already (README "Projection"). skip/joined (may be NULL) name the
 * top-level members that joins replace. */
static void qe_render_excluding(mdb_buf *b, unsigned *count, mdb_val obj, const qe_ftree *t,
                                const qe_aliases *skip, const mdb_doc *const *joined)
{
    mdb_val_iter it;
    const char *k;
    size_t kl;
    mdb_val m;
    mdb_val_iter_init(obj, &it);
    while (mdb_val_iter_next(&it, &k, &kl, &m)) {
        if (qe_is_found_alias(skip, joined, k, kl))
            continue;
        const qe_ftree *x = t ? qe_ftree_find(t, k, kl) : NULL;
        if (!x) {
            qe_put_member(b, count, k, kl);
            mdb_val_to_json(m, b);
            continue;
        }
        if (x->leaf)
            continue;
        if (mdb_val_type(m) != MDB_V_OBJECT) {
            qe_put_member(b, count, k, kl);
            mdb_val_to_json(m, b);
            continue;
        }
        size_t mark = b->len;
        unsigned save = *count;
        qe_put_member(b, count, k, kl);
        mdb_buf_putc(b, '{');
        unsigned inner = 0;
        qe_render_excluding(b, &inner, m, x, NULL, NULL);
        if (inner == 0) {
            b->len = mark; /* empty along an excluded path: leave it out */
            *count = save;
            continue;
        }
        mdb_buf_putc(b, '}');
    }
}

/* Decimal int64 without printf (it shows in GET-by-key profiles). */
void qe_put_i64(mdb_buf *b, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    mdb_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

static void qe_put_iso(mdb_buf *b, unsigned *count, const char *name, int64_t ms)
{
    char iso[32];
    mdb_iso8601(ms, iso);
    qe_put_member(b, count, name, strlen(name));
    mdb_buf_putc(b, '"');
    mdb_buf_puts(b, iso);
    mdb_buf_putc(b, '"');
}

/* A joined (or extends-embedded) document: body plus raw system fields;
 * with a projection, only the listed paths and listed system fields. */
void qe_render_joined(mdb_buf *b, const mdb_doc *d, const qe_ftree *fields)
{
    if (!fields || !mdb_doc_is_object(d)) {
        if (mdb_doc_is_object(d))
            mdb_doc_to_json_sys(d, b);
        else
            mdb_val_to_json(mdb_doc_body(d), b);
        return;
    }
    unsigned count = 0;
    mdb_buf_putc(b, '{');
    qe_render_fields(b, &count, mdb_doc_body(d), fields, NULL, NULL);
    if (fields->sys & QF_V) {
        qe_put_member(b, &count, "_v", 2);
        qe_put_i64(b, mdb_doc_version(d));
    }
    if (fields->sys & QF_SEQ) {
        qe_put_member(b, &count, "_seq", 4);
        qe_put_i64(b, mdb_doc_seq(d));
    }
    if (fields->sys & QF_CREATED) {
        qe_put_member(b, &count, "_createdAt", 10);
        qe_put_i64(b, mdb_doc_created_ms(d));
    }
    if (fields->sys & QF_MODIFIED) {
        qe_put_member(b, &count, "_modifiedAt", 11);
        qe_put_i64(b, mdb_doc_modified_ms(d));
    }
    mdb_buf_putc(b, '}');
}

/* A joined document with excludedFields below its alias (x): rendered as
 * the join shows it, then excluded like the main document. Rare, so it
 * goes through an encoding of the rendered text. Nothing is written when
 * nothing is left (the alias is left out, README "Projection"). */
static void qe_render_joined_excluding(mdb_buf *b, unsigned *count, const qe_join *j,
                                       const mdb_doc *d, const qe_ftree *x)
{
    mdb_buf text, enc;
    mdb_buf_init(&text);
    mdb_buf_init(&enc);
    qe_render_joined(&text, d, j->fields);
    const char *why = NULL;
    if (text.oom || mdb_encode_json_text(text.data, text.len, &enc, &why) != 0 || enc.oom) {
        b->oom = 1;
    } else {
        mdb_val v = mdb_val_at(&enc, 0);
        size_t mark = b->len;
        unsigned save = *count;
        qe_put_member(b, count, j->alias, j->alen);
        if (mdb_val_type(v) != MDB_V_OBJECT) {
            mdb_val_to_json(v, b);
        } else {
            unsigned inner = 0;
            mdb_buf_putc(b, '{');
            qe_render_excluding(b, &inner, v, x, NULL, NULL);
            mdb_buf_putc(b, '}');
            if (inner == 0) {
                b->len = mark;
                *count = save;
            }
        }
    }
    mdb_buf_free(&text);
    mdb_buf_free(&enc);
}

/* Render one result document. with_key adds "_key"; joined (may be NULL)
 * holds one document per join. Non-object documents come back verbatim. */
void qe_render_doc(mdb_buf *b, const qe_shape *sh, const mdb_doc *d, const mdb_doc *const *joined,
                   bool with_key)
{
    mdb_val body = mdb_doc_body(d);
    if (!mdb_doc_is_object(d)) {
        mdb_val_to_json(body, b);
        return;
    }
    unsigned count = 0;
    mdb_buf_putc(b, '{');
    if (with_key) {
        size_t kl;
        const char *k = mdb_doc_key(d, &kl);
        qe_put_member(b, &count, "_key", 4);
        mdb_buf_json_str(b, k, kl);
    }
    const qe_aliases *skip = sh->njoins && joined ? &sh->aliases : NULL;
    if (sh->mode == QP_FIELDS) {
        qe_render_fields(b, &count, body, &sh->tree, skip, joined);
    } else if (sh->mode == QP_EXCLUDE) {
        qe_render_excluding(b, &count, body, &sh->tree, skip, joined);
    } else if (!skip) {
        /* the hot path: copy the members as they are */
        mdb_val_iter it;
        const char *k;
        size_t kl;
        mdb_val m;
        mdb_val_iter_init(body, &it);
        while (mdb_val_iter_next(&it, &k, &kl, &m)) {
            qe_put_member(b, &count, k, kl);
            mdb_val_to_json(m, b);
        }
    } else {
        qe_render_excluding(b, &count, body, NULL, skip, joined);
    }
    for (size_t i = 0; i < sh->njoins; i++) {
        const qe_join *j = &sh->joins[i];
        if (!joined || !joined[i])
            continue; /* a missing target leaves the alias out */
        if (sh->mode == QP_EXCLUDE) {
            const qe_ftree *x = qe_ftree_find(&sh->tree, j->alias, j->alen);
            if (x && x->leaf)
                continue;
            if (x) {
                qe_render_joined_excluding(b, &count, j, joined[i], x);
                continue;
            }
        }
        qe_put_member(b, &count, j->alias, j->alen);
        qe_render_joined(b, joined[i], j->fields);
    }
    if (sh->mode == QP_FIELDS) {
        unsigned s = sh->tree.sys;
        if (s & QF_SEQ) {
            qe_put_member(b, &count, "_seq", 4);
            qe_put_i64(b, mdb_doc_seq(d));
        }
        if (s & QF_CREATED)
            qe_put_iso(b, &count, "_createdAt", mdb_doc_created_ms(d));
        if (s & QF_MODIFIED)
            qe_put_iso(b, &count, "_modifiedAt", mdb_doc_modified_ms(d));
        if ((s & QF_EXPIRES) && sh->expires_at_ms > 0)
            qe_put_iso(b, &count, "_expiresAt", sh->expires_at_ms);
    }
    qe_put_member(b, &count, "_v", 2);
    qe_put_i64(b, mdb_doc_version(d));
    mdb_buf_putc(b, '}');
}

static int qe_rank(mdb_vtype t)
{
    switch (t) {
    case MDB_V_INT:
    case MDB_V_DOUBLE:
        return 0;
    case MDB_V_STRING:
        return 1;
    case MDB_V_BOOL:
        return 2;
    case MDB_V_NULL:
        return 3;
    case MDB_V_ARRAY:
        return 4;
    case MDB_V_OBJECT:
        return 5;
    default:
        return 9; /* missing */
    }
}

static int qe_fv_cmp(const qe_fv *a, const qe_fv *b)
{
    int ra = qe_rank(a->t), rb = qe_rank(b->t);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 0:
        return a->num < b->num ? -1 : a->num > b->num ? 1 : 0;
    case 1: {
        size_t n = a->slen < b->slen ? a->slen : b->slen;
        int c = memcmp(a->s, b->s, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a->slen < b->slen ? -1 : a->slen > b->slen ? 1 : 0;
    }
    case 2:
        return (int)a->b - (int)b->b;
    default:
        return 0;
    }
}

static int qe_cand_cmp(const qe_cand *a, const qe_cand *b, const qe_sortctx *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        int c = qe_fv_cmp(&a->sk[i], &b->sk[i]);
        if (c)
            return sc->specs[i].desc ? -c : c;
    }
    size_t al, bl;
    const char *ak = mdb_doc_key(a->d, &al), *bk = mdb_doc_key(b->d, &bl);
    int c = strcmp(ak, bk);
    return c < 0 ? -1 : c > 0;
}

static int qe_cand_cmp_r(const void *x, const void *y, void *ud)
{
    return qe_cand_cmp(x, y, ud);
}

static void qe_cand_swap(qe_cand *a, qe_cand *b)
{
    qe_cand t = *a;
    *a = *b;
    *b = t;
}

/* Max-heap sift-down by the sort order (the worst candidate on top). */
static void qe_heap_down(qe_cand *h, size_t n, size_t i, const qe_sortctx *sc)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && qe_cand_cmp(&h[l], &h[m], sc) > 0)
            m = l;
        if (r < n && qe_cand_cmp(&h[r], &h[m], sc) > 0)
            m = r;
        if (m == i)
            return;
        qe_cand_swap(&h[i], &h[m]);
        i = m;
    }
}

/* Order c[0..n) and keep the best k in c[0..k) (k <= n). Uses a bounded
 * heap when k is much smaller than n (a page out of a large match set). */
void qe_sort_top(qe_cand *c, size_t n, size_t k, const qe_sortctx *sc)
{
    if (k > n)
        k = n;
    if (k == 0)
        return;
    if (k < n / 4) {
        for (size_t i = k / 2 + 1; i-- > 0;)
            qe_heap_down(c, k, i, sc);
        for (size_t i = k; i < n; i++) {
            if (qe_cand_cmp(&c[i], &c[0], sc) < 0) {
                qe_cand_swap(&c[i], &c[0]);
                qe_heap_down(c, k, 0, sc);
            }
        }
        n = k;
    }
    qsort_r(c, n, sizeof *c, qe_cand_cmp_r, (void *)sc);
}
