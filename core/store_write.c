/*
 * Write batches (intents) and their commit: resolve intents into log
 * records, hand them to storage, apply them.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "store_private.h"

/* ---- write batches -------------------------------------------------------------- */
enum { IN_PUT = 1, IN_PATCH = 2, IN_DELETE = 3 };

typedef struct intent {
    int kind;
    char *key;
    size_t klen;
    uint32_t hash;
    unsigned char *enc; /* encoded document or patch (malloc) */
    size_t enclen;
    int64_t expect_v;
} intent;

struct mdb_write {
    mdb_store *s;
    char *coll;
    size_t clen;
    intent *in;
    size_t nin, capin;
    bool drop, expire, set_ttl, set_max, set_schema;
    int64_t ttl, max_size;
    char *schema;
    size_t schema_len;
    int err; /* sticky building error */
};

mdb_write *mdb_write_begin(mdb_store *s, const char *name, size_t n)
{
    mdb_write *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->coll = malloc(n + 1);
    if (!w->coll) {
        free(w);
        return NULL;
    }
    memcpy(w->coll, name, n);
    w->coll[n] = 0;
    w->clen = n;
    w->s = s;
    return w;
}

void mdb_write_abort(mdb_write *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nin; i++) {
        free(w->in[i].key);
        free(w->in[i].enc);
    }
    free(w->in);
    free(w->schema);
    free(w->coll);
    free(w);
}

/* Takes `enc` (malloc) in every case. */
static int add_intent(mdb_write *w, int kind, const char *key, size_t klen, unsigned char *enc,
                      size_t enclen, int64_t expect_v)
{
    if (w->err) {
        free(enc);
        return w->err;
    }
    if (mdb_array_grow(&w->in, &w->capin, w->nin, sizeof *w->in, 8)) {
        free(enc);
        return w->err = -ENOMEM;
    }
    char *k = malloc(klen + 1);
    if (!k) {
        free(enc);
        return w->err = -ENOMEM;
    }
    memcpy(k, key, klen);
    k[klen] = 0;
    w->in[w->nin++] = (intent){kind, k, klen, core_key_hash(key, klen), enc, enclen, expect_v};
    return 0;
}

static int encode_intent(mdb_write *w, int kind, const char *key, size_t klen,
                         const struct json_object *j, int64_t expect_v)
{
    if (w->err)
        return w->err;
    mdb_buf b;
    mdb_buf_init(&b);
    int rc = mdb_encode_jsonc(j, &b);
    if (rc == 0 && b.oom)
        rc = -ENOMEM;
    if (rc) {
        mdb_buf_free(&b);
        return rc == -ENOMEM ? (w->err = rc) : rc;
    }
    size_t len = b.len;
    unsigned char *enc = (unsigned char *)mdb_buf_take(&b, NULL);
    if (!enc)
        return w->err = -ENOMEM;
    return add_intent(w, kind, key, klen, enc, len, expect_v);
}

int mdb_write_put(mdb_write *w, const char *key, size_t klen, const struct json_object *doc)
{
    return encode_intent(w, IN_PUT, key, klen, doc, -1);
}

int mdb_write_put_val(mdb_write *w, const char *key, size_t klen, mdb_val doc)
{
    if (!doc.p)
        return -EINVAL;
    size_t n = mdb_val_size(doc);
    unsigned char *enc = malloc(n);
    if (!enc)
        return w->err = -ENOMEM;
    memcpy(enc, doc.p, n);
    return add_intent(w, IN_PUT, key, klen, enc, n, -1);
}

int mdb_write_patch(mdb_write *w, const char *key, size_t klen, const struct json_object *patch,
                    int64_t expect_v)
{
    if (!json_object_is_type(patch, json_type_object))
        return -EINVAL;
    return encode_intent(w, IN_PATCH, key, klen, patch, expect_v);
}

int mdb_write_delete(mdb_write *w, const char *key, size_t klen)
{
    return add_intent(w, IN_DELETE, key, klen, NULL, 0, -1);
}

int mdb_write_drop(mdb_write *w)
{
    w->drop = true;
    return 0;
}

int mdb_write_expire(mdb_write *w)
{
    w->expire = true;
    return 0;
}

int mdb_write_set_ttl(mdb_write *w, int64_t ttl_s)
{
    if (ttl_s < 0)
        return -EINVAL;
    w->set_ttl = true;
    w->ttl = ttl_s;
    return 0;
}

int mdb_write_set_max_size(mdb_write *w, int64_t max_size)
{
    if (max_size < 0)
        return -EINVAL;
    w->set_max = true;
    w->max_size = max_size;
    return 0;
}

int mdb_write_set_schema(mdb_write *w, const char *json, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        return w->err = -ENOMEM;
    memcpy(s, json, len);
    s[len] = 0;
    free(w->schema);
    w->schema = s;
    w->schema_len = len;
    w->set_schema = true;
    return 0;
}

/* ---- commit ------------------------------------------------------------------------ */
typedef struct ov_entry {
    const char *key;
    size_t klen;
    uint32_t hash;
    bool deleted;
    mdb_doc *doc; /* current document of this key in the batch (borrowed from recs) */
    bool is_new;  /* first inserted by this batch */
} ov_entry;

typedef struct commit_state {
    mdb_store *s;
    mdb_write *w;
    coll *base; /* referenced published collection or NULL */
    bool base_gone;
    mdb_record *recs;
    size_t nrecs, caprecs;
    size_t *val_off; /* offset in vals of each record's value, SIZE_MAX = none */
    mdb_buf vals;
    ov_entry *ov;
    size_t ovcap, ovn;
    int64_t now;
    int64_t next_seq;
    mdb_coll_meta meta;
    char *schema_text; /* working schema (borrowed) */
    bool has_puts;     /* the batch puts documents (not only patches) */
    bool force_meta;   /* an expiry drop: restate the metadata */
    bool seq_used;     /* an overwrite used up a _seq value: log the counter */
    /* Evicted base documents, referenced until the commit ends: their
     * DELETE records borrow the key from them, and applying the batch (an
     * overwrite of the same key, the delete itself) drops the store's
     * reference before the commit hooks read the records. */
    mdb_doc **pins;
    size_t npins, cappins;
} commit_state;

static int push_rec(commit_state *cs, mdb_rec_op op, const char *key, size_t klen, mdb_doc *doc,
                    size_t val_off)
{
    /* Two arrays, one capacity: it grows when both have. */
    size_t rcap = cs->caprecs, vcap = cs->caprecs;
    if (mdb_array_grow(&cs->recs, &rcap, cs->nrecs, sizeof *cs->recs, 16) ||
        mdb_array_grow(&cs->val_off, &vcap, cs->nrecs, sizeof *cs->val_off, 16))
        return -ENOMEM;
    cs->caprecs = rcap;
    cs->recs[cs->nrecs] =
        (mdb_record){op, cs->w->coll, cs->w->clen, key, klen, doc, MDB_VAL_MISSING, cs->now};
    cs->val_off[cs->nrecs] = val_off;
    cs->nrecs++;
    return 0;
}

static int ov_grow(commit_state *cs)
{
    size_t ncap = cs->ovcap * 2;
    ov_entry *n = calloc(ncap, sizeof *n);
    if (!n)
        return -ENOMEM;
    for (size_t i = 0; i < cs->ovcap; i++) {
        if (!cs->ov[i].key)
            continue;
        size_t j = cs->ov[i].hash & (ncap - 1);
        while (n[j].key)
            j = (j + 1) & (ncap - 1);
        n[j] = cs->ov[i];
    }
    free(cs->ov);
    cs->ov = n;
    cs->ovcap = ncap;
    return 0;
}

/* Returned pointers are valid until the next call with add = true. NULL
 * when absent (or, with add, out of memory). */
static ov_entry *ov_find(commit_state *cs, const char *key, size_t klen, uint32_t h, bool add)
{
    if (add && (cs->ovn + 1) * 2 > cs->ovcap && ov_grow(cs))
        return NULL;
    size_t mask = cs->ovcap - 1, i = h & mask;
    while (cs->ov[i].key) {
        if (cs->ov[i].hash == h && cs->ov[i].klen == klen && memcmp(cs->ov[i].key, key, klen) == 0)
            return &cs->ov[i];
        i = (i + 1) & mask;
    }
    if (!add)
        return NULL;
    cs->ovn++;
    cs->ov[i] = (ov_entry){key, klen, h, false, NULL, false};
    return &cs->ov[i];
}

/* Current document of a key as this batch sees it. */
static const mdb_doc *cur_doc(commit_state *cs, const char *key, size_t klen, uint32_t h)
{
    ov_entry *e = ov_find(cs, key, klen, h, false);
    if (e)
        return e->deleted ? NULL : e->doc;
    if (cs->base_gone || !cs->base)
        return NULL;
    return core_coll_get(cs->base, key, klen, h);
}

static int push_meta_value(commit_state *cs, mdb_rec_op op, const char *text)
{
    size_t off = cs->vals.len;
    if (op == MDB_REC_META) {
        core_meta_encode(&cs->vals, cs->meta.ttl_s, cs->meta.expires_at_ms, cs->meta.max_size,
                         cs->seq_used ? cs->next_seq : -1);
    } else {
        const char *why = NULL;
        if (mdb_encode_json_text(text, strlen(text), &cs->vals, &why))
            return -EINVAL;
    }
    if (cs->vals.oom)
        return -ENOMEM;
    return push_rec(cs, op, NULL, 0, NULL, off);
}

static int run_validate(commit_state *cs, const char *key, mdb_val body, int is_patch,
                        const char **why)
{
    if (!cs->s->hooks)
        return 0;
    mdb_coll_meta m = cs->meta;
    m.schema = cs->schema_text;
    return core_hooks_validate(cs->w->coll, &m, key, body, is_patch, why);
}

static mdb_doc *merge_patch(const mdb_doc *old, const intent *in)
{
    mdb_val patch = {in->enc};
    mdb_val base = mdb_doc_body(old);
    mdb_buf b;
    mdb_buf_init(&b);
    size_t mark = mdb_enc_begin_object(&b);
    uint32_t count = 0;
    const char *k;
    size_t kl;
    mdb_val v;
    mdb_val_iter it;
    if (mdb_val_type(base) == MDB_V_OBJECT) {
        mdb_val_iter_init(base, &it);
        while (mdb_val_iter_next(&it, &k, &kl, &v)) {
            mdb_val pv = mdb_val_member(patch, k, kl);
            mdb_enc_key(&b, k, kl);
            mdb_enc_copy(&b, pv.p ? pv : v);
            count++;
        }
    }
    mdb_val_iter_init(patch, &it);
    while (mdb_val_iter_next(&it, &k, &kl, &v)) {
        if (kl == 2 && memcmp(k, "_v", 2) == 0)
            continue;
        if (mdb_val_type(base) == MDB_V_OBJECT && mdb_val_member(base, k, kl).p)
            continue;
        mdb_enc_key(&b, k, kl);
        mdb_enc_copy(&b, v);
        count++;
    }
    mdb_enc_end(&b, mark, count);
    mdb_doc *d = b.oom ? NULL : core_doc_new(in->key, in->klen, b.data, b.len, in->hash);
    mdb_buf_free(&b);
    return d;
}

static int pin_doc(commit_state *cs, mdb_doc *d)
{
    if (mdb_array_grow(&cs->pins, &cs->cappins, cs->npins, sizeof *cs->pins, 16))
        return -ENOMEM;
    mdb_doc_ref(d);
    cs->pins[cs->npins++] = d;
    return 0;
}

static int do_evictions(commit_state *cs, size_t base_count, mdb_commit_result *res)
{
    int64_t count = (int64_t)base_count + (int64_t)res->inserted - (int64_t)res->deleted;
    int64_t need = count - cs->meta.max_size;
    if (need <= 0)
        return 0;
    if (cs->base && !cs->base_gone) {
        coll *c = cs->base;
        for (size_t i = 0; i < c->olen && need > 0; i++) {
            mdb_doc *d = c->order[i];
            if (!d)
                continue;
            const char *k = mdb_doc_key(d, NULL);
            ov_entry *e = ov_find(cs, k, d->keylen, d->hash, true);
            if (!e)
                return -ENOMEM;
            if (e->deleted)
                continue;
            e->deleted = true;
            e->doc = NULL;
            if (pin_doc(cs, d) || push_rec(cs, MDB_REC_DELETE, k, d->keylen, NULL, SIZE_MAX))
                return -ENOMEM;
            res->evicted++;
            need--;
        }
    }
    /* The batch itself added more than maxSize: evict its oldest inserts. */
    size_t n = cs->nrecs;
    for (size_t i = 0; i < n && need > 0; i++) {
        mdb_record *r = &cs->recs[i];
        if (r->op != MDB_REC_INSERT)
            continue;
        ov_entry *e = ov_find(cs, r->key, r->key_len, ((mdb_doc *)r->doc)->hash, false);
        if (!e || e->deleted || !e->is_new || e->doc != r->doc)
            continue;
        e->deleted = true;
        e->doc = NULL;
        if (push_rec(cs, MDB_REC_DELETE, r->key, r->key_len, NULL, SIZE_MAX))
            return -ENOMEM;
        res->evicted++;
        need--;
    }
    return 0;
}

/* A drop, or the drop of a collection whose TTL expiry has passed, before
 * the batch's puts (store.h). */
static int resolve_drop(commit_state *cs, mdb_commit_result *res)
{
    mdb_write *w = cs->w;
    coll *c = cs->base;
    if (w->drop) {
        if (c && push_rec(cs, MDB_REC_DROP, NULL, 0, NULL, SIZE_MAX))
            return -ENOMEM;
        cs->base_gone = true;
        cs->meta = (mdb_coll_meta){0};
        cs->schema_text = NULL;
        cs->next_seq = 0;
        res->dropped = c != NULL;
    } else if ((w->expire || cs->has_puts) && c && cs->meta.expires_at_ms > 0 &&
               cs->meta.expires_at_ms <= cs->now) {
        if (push_rec(cs, MDB_REC_DROP, NULL, 0, NULL, SIZE_MAX))
            return -ENOMEM;
        cs->base_gone = true;
        cs->meta.expires_at_ms = 0;
        cs->next_seq = 0;
        cs->force_meta = true;
        res->dropped = true;
        if (cs->schema_text && !w->set_schema &&
            push_meta_value(cs, MDB_REC_SCHEMA, cs->schema_text))
            return -ENOMEM;
    }
    return 0;
}

/* TTL (set once), maxSize and schema settings of the batch. */
static int resolve_settings(commit_state *cs, const char **why)
{
    mdb_write *w = cs->w;
    if (w->set_ttl && w->ttl != cs->meta.ttl_s) {
        if (cs->meta.ttl_s > 0) {
            static _Thread_local char msg[160];
            snprintf(msg, sizeof msg,
                     "TTL of collection '%s' is already %lld seconds and cannot be changed "
                     "(drop the collection first)",
                     w->coll, (long long)cs->meta.ttl_s);
            *why = msg;
            return -EEXIST;
        }
        cs->meta.ttl_s = w->ttl;
    }
    if (w->set_max)
        cs->meta.max_size = w->max_size;
    if (w->set_schema) {
        cs->schema_text = w->schema;
        cs->meta.schema_gen = cs->s->schema_gen + 1;
        int rc = push_meta_value(cs, MDB_REC_SCHEMA, w->schema);
        if (rc) {
            *why = rc == -EINVAL ? "schema is not valid JSON" : "out of memory";
            return rc;
        }
    }
    return 0;
}

static int resolve_delete(commit_state *cs, const intent *in, const mdb_doc *old,
                          mdb_commit_result *res)
{
    if (!old)
        return 0;
    if (push_rec(cs, MDB_REC_DELETE, in->key, in->klen, NULL, SIZE_MAX))
        return -ENOMEM;
    ov_entry *e = ov_find(cs, in->key, in->klen, in->hash, true);
    if (!e)
        return -ENOMEM;
    e->deleted = true;
    e->doc = NULL;
    res->deleted++;
    return 0;
}

/* A put or a patch: the new document with its system fields, validated. */
static int resolve_put(commit_state *cs, const intent *in, const mdb_doc *old,
                       mdb_commit_result *res, const char **why)
{
    mdb_doc *d;
    if (in->kind == IN_PATCH) {
        if (!old) {
            res->skipped++;
            return 0;
        }
        if (in->expect_v >= 0 && in->expect_v != old->v) {
            *why = "Conflict: Document version is outdated";
            return -ESTALE;
        }
        d = merge_patch(old, in);
    } else {
        d = core_doc_new(in->key, in->klen, in->enc, in->enclen, in->hash);
    }
    if (!d)
        return -ENOMEM;
    d->modified = cs->now;
    if (old) {
        d->v = old->v + 1;
        d->seq = old->seq;
        d->created = old->created;
        if (in->kind == IN_PUT) {
            cs->next_seq++; /* an overwrite uses up a _seq value (query-engine README "_seq") */
            cs->seq_used = true;
        }
    } else {
        d->v = 1;
        d->seq = cs->next_seq++;
        d->created = cs->now;
    }
    int rc = run_validate(cs, in->key, mdb_doc_body(d), in->kind == IN_PATCH, why);
    if (rc == 0)
        rc = push_rec(cs, MDB_REC_INSERT, in->key, in->klen, d, SIZE_MAX);
    if (rc) {
        mdb_doc_unref(d);
        return rc == -ENOMEM ? rc : -EINVAL;
    }
    ov_entry *e = ov_find(cs, in->key, in->klen, in->hash, true);
    if (!e)
        return -ENOMEM; /* d is owned by its record now */
    bool was_new = e->doc ? e->is_new : !old;
    e->deleted = false;
    e->doc = d;
    e->is_new = was_new || !old;
    if (in->kind == IN_PATCH)
        res->updated++;
    else if (old)
        res->overwritten++;
    else
        res->inserted++;
    return 0;
}

/* After a batch with puts: the TTL clock restarts and maxSize evicts. */
static int resolve_after_puts(commit_state *cs, mdb_commit_result *res)
{
    if (cs->meta.ttl_s > 0) {
        /* Saturate: a TTL of centuries must not overflow into the past. */
        int64_t room = (INT64_MAX - cs->now) / 1000;
        cs->meta.expires_at_ms =
            cs->meta.ttl_s > room ? INT64_MAX : cs->now + cs->meta.ttl_s * 1000;
    }
    if (cs->meta.max_size > 0) {
        size_t base_count = (cs->base && !cs->base_gone) ? cs->base->live : 0;
        if (do_evictions(cs, base_count, res))
            return -ENOMEM;
    }
    return 0;
}

/* A META record when the metadata changed (or must be restated after an
 * expiry drop). */
static int resolve_meta_record(commit_state *cs, const mdb_coll_meta *orig)
{
    mdb_write *w = cs->w;
    bool meta_changed = cs->meta.ttl_s != orig->ttl_s ||
                        cs->meta.expires_at_ms != orig->expires_at_ms ||
                        cs->meta.max_size != orig->max_size;
    if (cs->base_gone && !w->drop)
        meta_changed = true;
    if (w->drop)
        meta_changed = cs->meta.ttl_s || cs->meta.max_size;
    /* No document carries a value an overwrite used up: the META record
     * does, so that replay and other nodes count on from the same place. */
    if ((meta_changed || cs->force_meta || cs->seq_used) && push_meta_value(cs, MDB_REC_META, NULL))
        return -ENOMEM;
    return 0;
}

/* Turn the batch's intents into log records, in the order store.h gives. */
static int resolve(commit_state *cs, mdb_commit_result *res, const char **why)
{
    mdb_write *w = cs->w;
    for (size_t i = 0; i < w->nin; i++)
        cs->has_puts |= w->in[i].kind == IN_PUT;
    if (cs->base) {
        cs->meta = cs->base->meta;
        cs->next_seq = cs->base->next_seq;
    }
    mdb_coll_meta orig = cs->meta;
    cs->schema_text = (char *)cs->meta.schema;
    int rc = resolve_drop(cs, res);
    if (!rc)
        rc = resolve_settings(cs, why);
    for (size_t i = 0; !rc && i < w->nin; i++) {
        const intent *in = &w->in[i];
        const mdb_doc *old = cur_doc(cs, in->key, in->klen, in->hash);
        rc = in->kind == IN_DELETE ? resolve_delete(cs, in, old, res)
                                   : resolve_put(cs, in, old, res, why);
    }
    if (!rc && cs->has_puts)
        rc = resolve_after_puts(cs, res);
    if (!rc)
        rc = resolve_meta_record(cs, &orig);
    return rc;
}

static bool shared_log(const mdb_store *s)
{
    return s->storage &&
           s->storage->size >=
               offsetof(mdb_storage_service, order_abort) + sizeof(s->storage->order_abort) &&
           s->storage->order_begin && s->storage->order_abort;
}

static void release_recs(commit_state *cs)
{
    for (size_t i = 0; i < cs->nrecs; i++)
        if (cs->recs[i].doc)
            mdb_doc_unref(cs->recs[i].doc);
}

/* Values an overwrite used up belong to no document, so apply (which
 * counts from the documents) cannot see them: carry the counter over.
 * Caller holds commit_lock, the only lock next_seq is read under. */
static void keep_counter(mdb_store *s, const mdb_write *w, int64_t next_seq)
{
    coll *c = core_map_get(s, w->coll, w->clen);
    if (c && next_seq > c->next_seq)
        c->next_seq = next_seq;
    core_coll_unref(c);
}

int mdb_write_commit(mdb_write *w, mdb_req *req, mdb_commit_result *res, const char **why_out)
{
    mdb_commit_result local;
    const char *why_local = NULL;
    const char **why = why_out ? why_out : &why_local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    *why = NULL;
    if (w->err) {
        int e = w->err;
        *why = "out of memory";
        mdb_write_abort(w);
        return e;
    }
    mdb_store *s = w->s;
    commit_state cs = {.s = s, .w = w};
    mdb_buf_init(&cs.vals);
    cs.ovcap = 16;
    while (cs.ovcap < (w->nin + 1) * 2 + 8)
        cs.ovcap <<= 1;
    cs.ov = calloc(cs.ovcap, sizeof *cs.ov);
    uint64_t ticket = 0;
    int rc = cs.ov ? 0 : -ENOMEM;

    pthread_mutex_lock(&s->commit_lock);
    /* A shared log first brings the store up to this batch's place in the
     * global order (storage.h, order_begin). */
    bool ordered = false;
    if (!rc && shared_log(s)) {
        rc = s->storage->order_begin(s->storage_self, s, why);
        if (rc && rc != -EROFS)
            rc = -EIO;
        ordered = !rc;
    }
    cs.now = mdb_now_ms();
    if (!rc) {
        cs.base = core_map_get(s, w->coll, w->clen);
        rc = resolve(&cs, res, why);
    }
    if (ordered && (rc || !cs.nrecs))
        s->storage->order_abort(s->storage_self);
    if (!rc && cs.nrecs) {
        for (size_t i = 0; i < cs.nrecs; i++)
            if (cs.val_off[i] != SIZE_MAX)
                cs.recs[i].value = mdb_val_at(&cs.vals, cs.val_off[i]);
        if (s->storage) {
            rc = s->storage->append(s->storage_self, cs.recs, cs.nrecs, &ticket, why);
            if (rc && rc != -EROFS)
                rc = -EIO;
            if (rc && !*why)
                *why = rc == -EROFS ? "storage is read-only" : "storage refused the write";
        }
        if (!rc) {
            core_coll_unref(cs.base);
            cs.base = NULL;
            /* Commit hooks read each record's document, also one that a
             * later record of the batch removes again (maxSize eviction):
             * hold them until the hooks have run. */
            if (s->hooks)
                for (size_t i = 0; i < cs.nrecs; i++)
                    if (cs.recs[i].doc)
                        mdb_doc_ref(cs.recs[i].doc);
            rc = core_apply_batch(s, cs.recs, cs.nrecs, NULL, why);
            if (rc)
                mdb_log(NULL, MDB_LOG_ERROR, "applying a logged batch to '%s' failed: %s", w->coll,
                        *why ? *why : "unknown");
            else
                keep_counter(s, w, cs.next_seq);
            if (!rc && s->hooks)
                core_hooks_commit(&(mdb_commit_event){w->coll, cs.recs, cs.nrecs});
            if (s->hooks)
                for (size_t i = 0; i < cs.nrecs; i++)
                    if (cs.recs[i].doc)
                        mdb_doc_unref(cs.recs[i].doc);
            cs.nrecs = 0; /* documents now belong to the collection */
        }
    }
    if (rc) {
        release_recs(&cs);
        if (!*why)
            *why = rc == -ENOMEM ? "out of memory" : "write refused";
    }
    core_coll_unref(cs.base);
    pthread_mutex_unlock(&s->commit_lock);

    free(cs.recs);
    free(cs.val_off);
    free(cs.ov);
    for (size_t i = 0; i < cs.npins; i++)
        mdb_doc_unref(cs.pins[i]);
    free(cs.pins);
    mdb_buf_free(&cs.vals);
    mdb_write_abort(w);
    if (!rc && ticket && req)
        core_http_wait_durable(req, ticket);
    if (rc)
        memset(res, 0, sizeof *res);
    return rc;
}
