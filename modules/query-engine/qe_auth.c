/*
 * query-engine: authorisation. Every scope is checked through the "auth"
 * service (README "Routes" and "Check order").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

/* ---- authorisation ------------------------------------------------------------ */
bool qe_allowed_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                  const char *key)
{
    return p && m->auth->allowed(m->auth_self, p, act, coll, key);
}

bool qe_allowed(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll, const char *key)
{
    return qe_allowed_p(m, mdb_req_principal(r), act, coll, key);
}

static const char *qe_act_name(mdb_action a)
{
    return a == MDB_ACT_READ ? "read" : a == MDB_ACT_WRITE ? "write" : "delete";
}

int qe_need_coll_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                   qe_err *e)
{
    if (qe_allowed_p(m, p, act, coll, "*"))
        return 0;
    return qe_fail(e, 403, "Forbidden: token requires '%s:%s:*' scope", qe_act_name(act), coll);
}

void qe_pat_cb(const char *pattern, size_t len, bool prefix, void *ud)
{
    qe_patlist *l = ud;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        qe_keypat *v = qe_alloc(l->a, nc * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = nc;
    }
    char *p = qe_strndup(l->a, pattern, len);
    if (!p) {
        l->oom = 1;
        return;
    }
    l->v[l->n++] = (qe_keypat){p, len, prefix};
}

int qe_need_coll(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll, qe_err *e)
{
    return qe_need_coll_p(m, mdb_req_principal(r), act, coll, e);
}

/* Does the key-scope enumeration yield at least one pattern? */
static void qe_any_cb(const char *pattern, size_t len, bool prefix, void *ud)
{
    (void)pattern;
    (void)len;
    (void)prefix;
    *(bool *)ud = true;
}

int qe_auth_collection(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                       bool key_scopes_suffice, qe_err *e)
{
    if (!key_scopes_suffice)
        return qe_need_coll_p(m, p, act, coll, e);
    if (qe_allowed_p(m, p, act, coll, "*"))
        return 0;
    bool any = false;
    if (p && m->auth->each_key_scope)
        m->auth->each_key_scope(m->auth_self, p, act, coll, qe_any_cb, &any);
    if (any)
        return 0;
    return qe_fail(e, 403, "Forbidden: token has no %s access to collection '%s'", qe_act_name(act),
                   coll);
}

/* /get scope rules (README "Routes" and "Check order"). */
int qe_scope_get(const qe_mod *m, const mdb_principal *p, qe_arena *a, qe_query *q, qe_err *e)
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
            q->keys = qe_alloc(a, l.n * sizeof *q->keys);
            q->klens = qe_alloc(a, l.n * sizeof *q->klens);
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
