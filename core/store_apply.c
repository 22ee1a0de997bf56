/*
 * Log records and apply: the one function live commits and replay share.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_private.h"

/* ---- records ------------------------------------------------------------------ */
static const char *const op_names[] = {NULL, "INSERT", "DELETE", "DROP", "SCHEMA", "META"};

const char *mdb_rec_op_name(mdb_rec_op op)
{
    return (op >= MDB_REC_INSERT && op <= MDB_REC_META) ? op_names[op] : "UNKNOWN";
}

int mdb_rec_op_parse(const char *name)
{
    for (int i = MDB_REC_INSERT; i <= MDB_REC_META; i++)
        if (name && strcmp(name, op_names[i]) == 0)
            return i;
    return -EINVAL;
}

void mdb_record_value_json(const mdb_record *rec, mdb_buf *out)
{
    if (rec->op == MDB_REC_INSERT && rec->doc)
        mdb_doc_to_json_sys(rec->doc, out);
    else if (rec->value.p)
        mdb_val_to_json(rec->value, out);
    else
        mdb_buf_puts(out, "null");
}

/* The value of a META record: the whole metadata, the inverse of
 * coll_set_meta_from(). next_seq < 0 leaves the _seq counter out. */
void core_meta_encode(mdb_buf *b, int64_t ttl_s, int64_t expires_at_ms, int64_t max_size,
                      int64_t next_seq)
{
    size_t m = mdb_enc_begin_object(b);
    mdb_enc_key(b, "ttl", 3);
    mdb_enc_int(b, ttl_s);
    mdb_enc_key(b, "expiresAt", 9);
    mdb_enc_int(b, expires_at_ms);
    mdb_enc_key(b, "maxSize", 7);
    mdb_enc_int(b, max_size);
    if (next_seq >= 0) {
        mdb_enc_key(b, "nextSeq", 7);
        mdb_enc_int(b, next_seq);
    }
    mdb_enc_end(b, m, next_seq >= 0 ? 4 : 3);
}

/* ---- apply: the one function live commits and replay share ------------------ */
static int64_t member_int(mdb_val obj, const char *k, int64_t dflt)
{
    mdb_val v = mdb_val_member(obj, k, strlen(k));
    return mdb_val_is_number(v) ? mdb_val_int(v) : dflt;
}

static bool is_sys_member(const char *k, size_t n)
{
    return (n == 2 && memcmp(k, "_v", 2) == 0) || (n == 4 && memcmp(k, "_seq", 4) == 0) ||
           (n == 10 && memcmp(k, "_createdAt", 10) == 0) ||
           (n == 11 && memcmp(k, "_modifiedAt", 11) == 0);
}

/* Build a document from a replayed value that carries its system fields. */
static mdb_doc *doc_from_replay(coll *c, const mdb_record *rec)
{
    uint32_t h = core_key_hash(rec->key, rec->key_len);
    mdb_val v = rec->value;
    if (mdb_val_type(v) != MDB_V_OBJECT) {
        mdb_doc *d = core_doc_new(rec->key, rec->key_len, v.p ? v.p : (const unsigned char *)"\0",
                                  v.p ? mdb_val_size(v) : 1, h);
        if (d)
            d->seq = c->next_seq;
        return d;
    }
    mdb_buf b;
    mdb_buf_init(&b);
    size_t mark = mdb_enc_begin_object(&b);
    uint32_t count = 0;
    mdb_val_iter it;
    mdb_val_iter_init(v, &it);
    const char *k;
    size_t kl;
    mdb_val m;
    while (mdb_val_iter_next(&it, &k, &kl, &m)) {
        if (is_sys_member(k, kl))
            continue;
        mdb_enc_key(&b, k, kl);
        mdb_enc_copy(&b, m);
        count++;
    }
    mdb_enc_end(&b, mark, count);
    mdb_doc *d = b.oom ? NULL : core_doc_new(rec->key, rec->key_len, b.data, b.len, h);
    mdb_buf_free(&b);
    if (!d)
        return NULL;
    d->v = member_int(v, "_v", 1);
    d->seq = member_int(v, "_seq", c->next_seq);
    d->created = member_int(v, "_createdAt", rec->ts_ms);
    d->modified = member_int(v, "_modifiedAt", rec->ts_ms);
    return d;
}

static void coll_set_meta_from(coll *c, mdb_val v)
{
    c->meta.ttl_s = member_int(v, "ttl", 0);
    c->meta.expires_at_ms = member_int(v, "expiresAt", 0);
    c->meta.max_size = member_int(v, "maxSize", 0);
    /* The counter is logged when documents alone do not tell it (an
     * overwrite used a value up, the newest document is gone): records of
     * older versions lack it and the documents set it as before. */
    int64_t next = member_int(v, "nextSeq", 0);
    if (next > c->next_seq)
        c->next_seq = next;
}

/* Publish state for one collection: a drop retires the published object and
 * later records fill a fresh one, swapped in at the end, so readers see the
 * batch whole. */
typedef struct apply_state {
    mdb_store *s;
    coll *pub;   /* published collection (referenced, write-locked) or NULL */
    coll *fresh; /* unpublished replacement being filled, or NULL */
    bool retire; /* remove pub from the map at the end */
} apply_state;

static coll *apply_target(apply_state *st, const char *name, size_t n)
{
    if (st->fresh)
        return st->fresh;
    if (st->pub && !st->retire)
        return st->pub;
    st->fresh = core_coll_new(name, n);
    return st->fresh;
}

/* *made (nullable) gets a referenced copy of a document built from a
 * replayed value. */
static int apply_one(apply_state *st, const mdb_record *rec, bool *taken, mdb_doc **made)
{
    mdb_store *s = st->s;
    *taken = false;
    if (rec->op == MDB_REC_DROP) {
        if (st->fresh) {
            core_coll_unref(st->fresh);
            st->fresh = NULL;
        }
        if (st->pub)
            st->retire = true;
        return 0;
    }
    coll *c = apply_target(st, rec->collection, rec->collection_len);
    if (!c)
        return -ENOMEM;
    switch (rec->op) {
    case MDB_REC_INSERT: {
        mdb_doc *d;
        if (rec->doc) {
            d = (mdb_doc *)rec->doc;
            *taken = true;
        } else {
            d = doc_from_replay(c, rec);
            if (!d)
                return -ENOMEM;
        }
        int rc = core_coll_put(s, c, d);
        if (rc && !*taken)
            mdb_doc_unref(d);
        if (rc)
            *taken = false;
        else if (made && !rec->doc) {
            mdb_doc_ref(d);
            *made = d;
        }
        return rc;
    }
    case MDB_REC_DELETE:
        core_coll_del(s, c, rec->key, rec->key_len, core_key_hash(rec->key, rec->key_len));
        return 0;
    case MDB_REC_SCHEMA: {
        char *js = NULL;
        if (rec->value.p && mdb_val_type(rec->value) != MDB_V_NULL) {
            mdb_buf b;
            mdb_buf_init(&b);
            mdb_val_to_json(rec->value, &b);
            js = mdb_buf_take(&b, NULL);
            if (!js)
                return -ENOMEM;
        }
        free((char *)c->meta.schema);
        c->meta.schema = js;
        c->meta.schema_gen = ++s->schema_gen;
        return 0;
    }
    case MDB_REC_META:
        coll_set_meta_from(c, rec->value);
        return 0;
    default:
        return -EINVAL;
    }
}

static void apply_finish(apply_state *st)
{
    mdb_store *s = st->s;
    coll *pub = st->pub, *fresh = st->fresh;
    bool publish_fresh =
        fresh && (fresh->live || fresh->meta.ttl_s || fresh->meta.max_size || fresh->meta.schema ||
                  fresh->meta.expires_at_ms || fresh->next_seq);
    if (pub)
        pthread_rwlock_unlock(&pub->lock);
    if (st->retire || publish_fresh) {
        pthread_rwlock_wrlock(&s->map_lock);
        bool found;
        const char *name = pub ? pub->name : fresh->name;
        size_t n = pub ? pub->namelen : fresh->namelen;
        size_t i = core_map_find(s, name, n, &found);
        if (found && st->retire) {
            coll *old = s->colls[i];
            atomic_fetch_sub(&s->ndocs, old->live);
            if (publish_fresh) {
                s->colls[i] = fresh;
                fresh = NULL;
            } else {
                memmove(s->colls + i, s->colls + i + 1, (s->ncolls - i - 1) * sizeof *s->colls);
                s->ncolls--;
            }
            core_coll_unref(old);
        } else if (!found && publish_fresh) {
            /* Out of memory leaves the collection unpublished. */
            (void)mdb_array_grow(&s->colls, &s->capcolls, s->ncolls, sizeof *s->colls, 16);
            if (s->ncolls < s->capcolls) {
                memmove(s->colls + i + 1, s->colls + i, (s->ncolls - i) * sizeof *s->colls);
                s->colls[i] = fresh;
                s->ncolls++;
                fresh = NULL;
            }
        }
        pthread_rwlock_unlock(&s->map_lock);
    }
    if (fresh) {
        atomic_fetch_sub(&s->ndocs, fresh->live);
        core_coll_unref(fresh);
    }
    core_coll_unref(pub);
}

/* Apply records of one collection. Live commits pass documents whose
 * reference the collection takes; on failure the rest are released. */
int core_apply_batch(mdb_store *s, const mdb_record *recs, size_t n, mdb_doc **made,
                     const char **why)
{
    if (!n)
        return 0;
    apply_state st = {s, core_map_get(s, recs[0].collection, recs[0].collection_len), NULL, false};
    if (st.pub)
        pthread_rwlock_wrlock(&st.pub->lock);
    int rc = 0;
    size_t i = 0;
    for (; i < n; i++) {
        bool taken;
        rc = apply_one(&st, &recs[i], &taken, made ? &made[i] : NULL);
        if (rc) {
            if (why)
                *why = rc == -ENOMEM ? "out of memory" : "invalid record";
            if (recs[i].doc && !taken)
                mdb_doc_unref(recs[i].doc);
            i++;
            break;
        }
    }
    for (; rc && i < n; i++)
        if (recs[i].doc)
            mdb_doc_unref(recs[i].doc);
    apply_finish(&st);
    return rc;
}

/* Another node's batch reaches the commit hooks as a local commit would:
 * INSERT records point to the documents now in the store. */
static int apply_announced(mdb_store *s, const mdb_record *recs, size_t n, const char **why)
{
    mdb_record *cp = malloc(n * sizeof *cp);
    mdb_doc **made = calloc(n, sizeof *made);
    int rc = cp && made ? 0 : -ENOMEM;
    if (!rc)
        rc = core_apply_batch(s, recs, n, made, why);
    else if (why)
        *why = "out of memory";
    if (!rc) {
        for (size_t i = 0; i < n; i++) {
            cp[i] = recs[i];
            if (made[i])
                cp[i].doc = made[i];
        }
        core_hooks_commit(&(mdb_commit_event){recs[0].collection, cp, n});
    }
    for (size_t i = 0; made && i < n; i++)
        if (made[i])
            mdb_doc_unref(made[i]);
    free(made);
    free(cp);
    return rc;
}

/* Records of a replayed batch may name several collections: apply each run
 * of one collection in turn (and announce it, for another node's batch).
 * Caller holds the commit lock. */
static int apply_runs(mdb_store *s, const mdb_record *recs, size_t n, bool announce,
                      const char **why_out)
{
    int rc = 0;
    size_t start = 0;
    for (size_t i = 1; i <= n && !rc; i++) {
        if (i == n || recs[i].collection_len != recs[start].collection_len ||
            memcmp(recs[i].collection, recs[start].collection, recs[start].collection_len)) {
            for (size_t j = start; j < i; j++) {
                if (recs[j].op == MDB_REC_INSERT && recs[j].doc) {
                    rc = -EINVAL; /* replay records carry values, never documents */
                    if (why_out)
                        *why_out = "replayed INSERT without a value";
                }
            }
            if (!rc && announce && s->hooks)
                rc = apply_announced(s, recs + start, i - start, why_out);
            else if (!rc)
                rc = core_apply_batch(s, recs + start, i - start, NULL, why_out);
            start = i;
        }
    }
    return rc;
}

int mdb_store_apply(mdb_store *s, const mdb_record *recs, size_t n, const char **why_out)
{
    pthread_mutex_lock(&s->commit_lock);
    int rc = apply_runs(s, recs, n, false, why_out);
    pthread_mutex_unlock(&s->commit_lock);
    return rc;
}

int mdb_store_apply_remote(mdb_store *s, const mdb_record *recs, size_t n, const char **why_out)
{
    return apply_runs(s, recs, n, true, why_out);
}

int mdb_store_locked(mdb_store *s, int (*fn)(void *ud), void *ud)
{
    pthread_mutex_lock(&s->commit_lock);
    int rc = fn(ud);
    pthread_mutex_unlock(&s->commit_lock);
    return rc;
}
