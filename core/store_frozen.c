/*
 * Frozen views: a point-in-time copy of every collection for snapshots
 * (docs/architecture.md, "Snapshots without stopping writers").
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_private.h"

/* ---- frozen views ------------------------------------------------------------------- */
typedef struct frozen_coll {
    char *name;
    size_t namelen;
    int64_t ttl_s, expires_at_ms, max_size;
    int64_t next_seq; /* -1: the documents tell it */
    char *schema;
    mdb_doc **docs;
    size_t ndocs;
} frozen_coll;

struct mdb_frozen {
    frozen_coll *colls;
    size_t ncolls;
    uint64_t total;
};

void mdb_frozen_free(mdb_frozen *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->ncolls; i++) {
        frozen_coll *fc = &f->colls[i];
        for (size_t j = 0; j < fc->ndocs; j++)
            mdb_doc_unref(fc->docs[j]);
        free(fc->docs);
        free(fc->schema);
        free(fc->name);
    }
    free(f->colls);
    free(f);
}

int mdb_store_freeze(mdb_store *s, void (*at_point)(void *ud), void *ud, mdb_frozen **out)
{
    mdb_frozen *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&s->commit_lock);
    /* Commits are excluded, so collections cannot change under us. */
    pthread_rwlock_rdlock(&s->map_lock);
    f->colls = s->ncolls ? calloc(s->ncolls, sizeof *f->colls) : NULL;
    if (s->ncolls && !f->colls)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < s->ncolls; i++) {
        coll *c = s->colls[i];
        frozen_coll *fc = &f->colls[f->ncolls++];
        fc->name = strdup(c->name);
        fc->namelen = c->namelen;
        fc->ttl_s = c->meta.ttl_s;
        fc->expires_at_ms = c->meta.expires_at_ms;
        fc->max_size = c->meta.max_size;
        /* The counter past the newest document (used up by overwrites or
         * by documents since deleted) is not in any document. */
        int64_t top = -1;
        for (size_t j = c->olen; j-- > 0 && top < 0;)
            if (c->order[j])
                top = c->order[j]->seq;
        fc->next_seq = c->next_seq > top + 1 ? c->next_seq : -1;
        fc->schema = c->meta.schema ? strdup(c->meta.schema) : NULL;
        fc->docs = c->live ? malloc(c->live * sizeof *fc->docs) : NULL;
        if (!fc->name || (c->meta.schema && !fc->schema) || (c->live && !fc->docs)) {
            rc = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < c->olen; j++) {
            if (c->order[j]) {
                mdb_doc_ref(c->order[j]);
                fc->docs[fc->ndocs++] = c->order[j];
            }
        }
        f->total += fc->ndocs;
    }
    pthread_rwlock_unlock(&s->map_lock);
    if (!rc && at_point)
        at_point(ud);
    pthread_mutex_unlock(&s->commit_lock);
    if (rc) {
        mdb_frozen_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

uint64_t mdb_frozen_doc_count(const mdb_frozen *f)
{
    return f->total;
}

int mdb_frozen_each(mdb_frozen *f, int (*fn)(const mdb_record *rec, void *ud), void *ud)
{
    mdb_buf b;
    mdb_buf_init(&b);
    int rc = 0;
    for (size_t i = 0; !rc && i < f->ncolls; i++) {
        frozen_coll *fc = &f->colls[i];
        mdb_record r = {0};
        r.collection = fc->name;
        r.collection_len = fc->namelen;
        if (fc->ttl_s || fc->expires_at_ms || fc->max_size || fc->next_seq >= 0) {
            mdb_buf_reset(&b);
            core_meta_encode(&b, fc->ttl_s, fc->expires_at_ms, fc->max_size, fc->next_seq);
            if (b.oom) {
                rc = -ENOMEM;
                break;
            }
            r.op = MDB_REC_META;
            r.value = mdb_val_at(&b, 0);
            rc = fn(&r, ud);
        }
        if (!rc && fc->schema) {
            mdb_buf_reset(&b);
            const char *why;
            if (mdb_encode_json_text(fc->schema, strlen(fc->schema), &b, &why) == 0) {
                r.op = MDB_REC_SCHEMA;
                r.value = mdb_val_at(&b, 0);
                rc = fn(&r, ud);
            }
        }
        r.value = MDB_VAL_MISSING;
        r.op = MDB_REC_INSERT;
        for (size_t j = 0; !rc && j < fc->ndocs; j++) {
            r.doc = fc->docs[j];
            r.key = mdb_doc_key(r.doc, &r.key_len);
            r.ts_ms = fc->docs[j]->modified;
            rc = fn(&r, ud);
        }
    }
    mdb_buf_free(&b);
    return rc;
}
