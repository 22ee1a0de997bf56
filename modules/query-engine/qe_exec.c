/*
 * query-engine: running a compiled /get over the store.
 *
 * Locking: one read view at a time, never nested (a nested read lock on a
 * collection with a writer queued would deadlock on self-joins). Documents
 * that must outlive the view (results with joins) are kept with
 * mdb_doc_ref() and released at the end; without joins the page is
 * rendered while the view is still held, which is short (at most 1000
 * documents) and avoids the reference counting.
 *
 * Paths:
 *   - single key: get, check, render;
 *   - keys array: get each, filter;
 *   - scan without sort: walk in _seq order (newest first unless "asc") and
 *     stop after offset+count matches;
 *   - scan with sort: every match, then a bounded heap for the page;
 *   - where or sort on a join alias: every candidate is referenced, the
 *     view ends, joins are resolved for all of them, then filter/sort/cut
 *     (so joins never come after a cut: README "Joins").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

static bool qe_pat_match(const qe_keypat *p, size_t n, const char *k, size_t kl)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].prefix ? (kl >= p[i].n && memcmp(k, p[i].p, p[i].n) == 0)
                        : (kl == p[i].n && memcmp(k, p[i].p, kl) == 0))
            return true;
    }
    return false;
}

static bool qe_key_ok(const qe_query *q, const mdb_doc *d)
{
    if (!q->restricted && !q->client_prefixes)
        return true;
    size_t kl;
    const char *k = mdb_doc_key(d, &kl);
    if (q->restricted && !qe_pat_match(q->allow, q->nallow, k, kl))
        return false;
    if (q->client_prefixes && !qe_pat_match(q->prefixes, q->nprefixes, k, kl))
        return false;
    return true;
}

bool qe_expired(const mdb_coll_meta *m, int64_t now)
{
    return m && m->expires_at_ms > 0 && m->expires_at_ms <= now;
}

/* A growable candidate list (malloc; owner: the running query). */
typedef struct qe_cands {
    qe_cand *v;
    size_t n, cap;
    int oom;
} qe_cands;

static void qe_cands_push(qe_cands *c, const mdb_doc *d)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        qe_cand *v = realloc(c->v, nc * sizeof *v);
        if (!v) {
            c->oom = 1;
            return;
        }
        c->v = v;
        c->cap = nc;
    }
    qe_cand *x = &c->v[c->n++];
    x->d = d;
    x->joined = NULL;
    x->views = NULL;
    x->sk = NULL;
}

typedef struct qe_scan {
    const qe_query *q;
    qe_cands *out;
    bool filter;  /* apply where now (false when it needs joined documents) */
    size_t limit; /* stop after this many (0 = no limit) */
} qe_scan;

static int qe_scan_fn(const mdb_doc *d, void *ud)
{
    qe_scan *s = ud;
    if (!qe_key_ok(s->q, d))
        return 0;
    if (s->filter && !qe_where_match(&s->q->where, d, NULL))
        return 0;
    qe_cands_push(s->out, d);
    if (s->out->oom)
        return -ENOMEM;
    return (s->limit && s->out->n >= s->limit) ? 1 : 0;
}

/* Look up every join for c[0..n); found documents are referenced. */
static int qe_resolve_joins(mdb_store *st, const qe_query *q, qe_cand *c, size_t n,
                            const mdb_doc **slots)
{
    for (size_t i = 0; i < n; i++)
        c[i].joined = slots + i * q->njoins;
    int64_t now = mdb_now_ms();
    for (size_t j = 0; j < q->njoins; j++) {
        const qe_join *jn = &q->joins[j];
        mdb_read *rv;
        if (mdb_read_begin(st, jn->from, jn->flen, &rv) != 0)
            continue; /* no such collection: every alias stays null */
        if (!qe_expired(mdb_read_meta(rv), now)) {
            for (size_t i = 0; i < n; i++) {
                qe_fv fv;
                qe_doc_path(c[i].d, &jn->on, &fv);
                if (fv.t != MDB_V_STRING)
                    continue;
                const mdb_doc *t = mdb_read_get(rv, fv.s, fv.slen);
                if (t) {
                    mdb_doc_ref(t);
                    c[i].joined[j] = t;
                }
            }
        }
        mdb_read_end(rv);
    }
    return 0;
}

/* The joined documents whose where/sort paths read a whole projected
 * value (qe_path.view), rendered as the reply shows them and encoded into
 * vbuf (owned by the caller, like vals: n * njoins entries). Rare, so it
 * goes through text. 0 or -ENOMEM. */
static int qe_make_views(const qe_query *q, qe_cand *c, size_t n, mdb_buf *vbuf, mdb_val *vals)
{
    size_t nj = q->njoins, total = n * nj;
    size_t *off = malloc((total + 1) * sizeof *off);
    mdb_buf text;
    mdb_buf_init(&text);
    int rc = off ? 0 : -ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        for (size_t j = 0; j < nj; j++) {
            off[i * nj + j] = SIZE_MAX;
            if (!q->shape.aliases.need_view[j] || !c[i].joined[j])
                continue;
            mdb_buf_reset(&text);
            qe_render_joined(&text, c[i].joined[j], q->joins[j].fields);
            size_t at = vbuf->len;
            const char *why = NULL;
            if (text.oom || mdb_encode_json_text(text.data, text.len, vbuf, &why) != 0 ||
                vbuf->oom) {
                rc = -ENOMEM;
                break;
            }
            off[i * nj + j] = at;
        }
    }
    /* vbuf has stopped moving: offsets become values */
    for (size_t i = 0; !rc && i < n; i++) {
        c[i].views = vals + i * nj;
        for (size_t j = 0; j < nj; j++) {
            size_t o = off[i * nj + j];
            vals[i * nj + j] = o == SIZE_MAX ? MDB_VAL_MISSING : mdb_val_at(vbuf, o);
        }
    }
    free(off);
    mdb_buf_free(&text);
    return rc;
}

static void qe_sort_keys(const qe_query *q, qe_cand *c, size_t n, qe_fv *keys)
{
    for (size_t i = 0; i < n; i++) {
        c[i].sk = keys + i * q->nspecs;
        qe_evctx cx = {c[i].d, c[i].joined, c[i].views};
        for (size_t s = 0; s < q->nspecs; s++)
            qe_ctx_path(&cx, &q->specs[s].path, &c[i].sk[s]);
    }
}

static int qe_seq_cmp_r(const void *x, const void *y, void *ud)
{
    int64_t a = mdb_doc_seq(((const qe_cand *)x)->d), b = mdb_doc_seq(((const qe_cand *)y)->d);
    int c = a < b ? -1 : a > b;
    return *(const bool *)ud ? c : -c;
}

static int qe_nodocs(qe_err *e)
{
    return qe_fail(e, 404, "No documents found");
}

/* Run q. On success `out` holds the JSON reply body (a document for the
 * single-key form, else an array) and 0 is returned. */
int qe_run_get(mdb_store *st, qe_query *q, mdb_buf *out, qe_err *err)
{
    mdb_read *rv = NULL;
    int rc = mdb_read_begin(st, q->coll, q->clen, &rv);
    if (rc == -ENOENT)
        return qe_nodocs(err);
    if (rc != 0)
        return qe_fail(err, 500, "Out of memory");
    const mdb_coll_meta *meta = mdb_read_meta(rv);
    if (qe_expired(meta, mdb_now_ms())) {
        mdb_read_end(rv);
        return qe_nodocs(err);
    }
    q->shape.expires_at_ms = meta ? meta->expires_at_ms : 0;
    if (q->keys_mode == QK_SINGLE && q->njoins == 0) {
        /* the hot path (GET by key): render under the view, no allocation */
        const mdb_doc *d = mdb_read_get(rv, q->keys[0], q->klens[0]);
        int res = 0;
        if (!d || !qe_key_ok(q, d) || !qe_where_match(&q->where, d, NULL))
            res = qe_nodocs(err);
        else
            qe_render_doc(out, &q->shape, d, NULL, true);
        mdb_read_end(rv);
        if (res == 0 && out->oom)
            res = qe_fail(err, 500, "Out of memory");
        return res;
    }
    bool prejoin = q->njoins && (q->where.uses_joins || q->sort_uses_joins);

    qe_cands c = {0};
    const mdb_doc **slots = NULL;
    mdb_val *views = NULL; /* qe_cand.views, into vbuf; both freed at `done` */
    mdb_buf vbuf;
    mdb_buf_init(&vbuf);
    qe_fv *keys = NULL;
    bool held = true, refd = false;
    int result = 0;
    size_t first = 0, last = 0; /* the page is c.v[first..last) */

    if (q->keys_mode == QK_SINGLE || q->keys_mode == QK_ARRAY) {
        for (size_t i = 0; i < q->nkeys; i++) {
            const mdb_doc *d = mdb_read_get(rv, q->keys[i], q->klens[i]);
            if (!d || !qe_key_ok(q, d))
                continue;
            if (!prejoin && !qe_where_match(&q->where, d, NULL))
                continue;
            qe_cands_push(&c, d);
        }
    } else {
        qe_scan s = {q, &c, !prejoin, 0};
        if (!prejoin && !q->sorted) {
            uint64_t lim = (uint64_t)q->offset + (uint64_t)q->count;
            s.limit = lim > SIZE_MAX ? SIZE_MAX : (size_t)lim;
            if (s.limit == 0) {
                mdb_read_end(rv);
                return qe_nodocs(err);
            }
        }
        mdb_read_scan(rv, !q->asc, qe_scan_fn, &s);
    }
    if (c.oom) {
        result = qe_fail(err, 500, "Out of memory");
        goto done;
    }

    if (prejoin) {
        /* keep the candidates, leave the view, then join everything */
        for (size_t i = 0; i < c.n; i++)
            mdb_doc_ref(c.v[i].d);
        refd = true;
        mdb_read_end(rv);
        held = false;
        /* slots / keys: owned here, freed at `done` (the joined documents
         * they hold are referenced and released there too) */
        slots = calloc(c.n * q->njoins + 1, sizeof *slots);
        if (!slots) {
            result = qe_fail(err, 500, "Out of memory");
            goto done;
        }
        qe_resolve_joins(st, q, c.v, c.n, slots);
        bool need = false;
        for (size_t j = 0; j < q->njoins; j++)
            need |= q->shape.aliases.need_view[j];
        if (need) {
            views = malloc((c.n * q->njoins + 1) * sizeof *views);
            if (!views || qe_make_views(q, c.v, c.n, &vbuf, views)) {
                result = qe_fail(err, 500, "Out of memory");
                goto done;
            }
        }
    }

    /* ordering and the page */
    size_t nmatch = c.n;
    if (prejoin) {
        /* compact: matches first (stable), keep the rest after them for release */
        size_t w = 0;
        for (size_t i = 0; i < c.n; i++) {
            qe_evctx cx = {c.v[i].d, c.v[i].joined, c.v[i].views};
            if (qe_where_match_cx(&q->where, &cx)) {
                qe_cand t = c.v[w];
                c.v[w] = c.v[i];
                c.v[i] = t;
                w++;
            }
        }
        nmatch = w;
    }
    uint64_t want = (uint64_t)q->offset + (uint64_t)q->count;
    size_t k = want > nmatch ? nmatch : (size_t)want;
    if (q->keys_mode == QK_ARRAY && !q->sorted && nmatch > 1) {
        /* unsorted results come newest first by _seq (oldest with "asc") */
        qsort_r(c.v, nmatch, sizeof *c.v, qe_seq_cmp_r, &q->asc);
    }
    if (q->sorted && nmatch) {
        /* "sort": [] orders by _key alone (the comparator's last rule) */
        keys = malloc((nmatch * q->nspecs + 1) * sizeof *keys);
        if (!keys) {
            result = qe_fail(err, 500, "Out of memory");
            goto done;
        }
        qe_sort_keys(q, c.v, nmatch, keys);
        qe_sortctx sc = {q->specs, q->nspecs};
        qe_sort_top(c.v, nmatch, k, &sc);
    }
    if (q->keys_mode == QK_SINGLE) {
        first = 0;
        last = nmatch ? 1 : 0;
    } else {
        first = (uint64_t)q->offset < k ? (size_t)q->offset : k;
        last = k;
    }
    if (first >= last) {
        result = qe_nodocs(err);
        goto done;
    }

    if (q->njoins && !prejoin) {
        /* join only the page, outside the main view */
        for (size_t i = first; i < last; i++)
            mdb_doc_ref(c.v[i].d);
        mdb_read_end(rv);
        held = false;
        slots = calloc((last - first) * q->njoins + 1, sizeof *slots);
        if (!slots) {
            for (size_t i = first; i < last; i++)
                mdb_doc_unref(c.v[i].d);
            result = qe_fail(err, 500, "Out of memory");
            goto done;
        }
        qe_resolve_joins(st, q, c.v + first, last - first, slots);
    }

    if (q->keys_mode == QK_SINGLE) {
        qe_render_doc(out, &q->shape, c.v[first].d, c.v[first].joined, true);
    } else {
        mdb_buf_putc(out, '[');
        for (size_t i = first; i < last; i++) {
            if (i > first)
                mdb_buf_putc(out, ',');
            qe_render_doc(out, &q->shape, c.v[i].d, c.v[i].joined, true);
        }
        mdb_buf_putc(out, ']');
    }
    if (out->oom)
        result = qe_fail(err, 500, "Out of memory");

    if (q->njoins && !prejoin) {
        for (size_t i = first; i < last; i++) {
            for (size_t j = 0; j < q->njoins; j++)
                if (c.v[i].joined[j])
                    mdb_doc_unref(c.v[i].joined[j]);
            mdb_doc_unref(c.v[i].d);
        }
    }
done:
    if (held)
        mdb_read_end(rv);
    if (refd) {
        for (size_t i = 0; i < c.n; i++) {
            if (!c.v[i].d)
                continue;
            if (c.v[i].joined)
                for (size_t j = 0; j < q->njoins; j++)
                    if (c.v[i].joined[j])
                        mdb_doc_unref(c.v[i].joined[j]);
            mdb_doc_unref(c.v[i].d);
        }
    }
    free(keys);
    free(views);
    mdb_buf_free(&vbuf);
    free(slots);
    free(c.v);
    return result;
}
