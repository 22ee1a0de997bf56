/*
 * The store: its lifecycle, the sorted map of collections and read views.
 * Layouts, ownership and lock order: store_private.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_private.h"

/* ---- store ----------------------------------------------------------------- */
mdb_store *mdb_store_new(void)
{
    mdb_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->commit_lock, NULL);
    core_rwlock_init_writer_pref(&s->map_lock);
    return s;
}

void mdb_store_free(mdb_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ncolls; i++)
        core_coll_unref(s->colls[i]);
    free(s->colls);
    pthread_rwlock_destroy(&s->map_lock);
    pthread_mutex_destroy(&s->commit_lock);
    free(s);
}

void core_store_attach(mdb_store *s, const mdb_storage_service *storage, void *self,
                       bool with_hooks)
{
    s->storage = storage;
    s->storage_self = self;
    s->hooks = with_hooks;
}

uint64_t mdb_store_doc_count(const mdb_store *s)
{
    return atomic_load(&((mdb_store *)s)->ndocs);
}

static int name_cmp(const coll *c, const char *name, size_t n)
{
    size_t m = c->namelen < n ? c->namelen : n;
    int r = memcmp(c->name, name, m);
    if (r)
        return r;
    return (c->namelen > n) - (c->namelen < n);
}

/* Index of the collection or of where it would go; caller holds map_lock. */
size_t core_map_find(const mdb_store *s, const char *name, size_t n, bool *found)
{
    size_t lo = 0, hi = s->ncolls;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = name_cmp(s->colls[mid], name, n);
        if (r == 0) {
            *found = true;
            return mid;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* A referenced collection, or NULL. */
coll *core_map_get(mdb_store *s, const char *name, size_t n)
{
    pthread_rwlock_rdlock(&s->map_lock);
    bool found;
    size_t i = core_map_find(s, name, n, &found);
    coll *c = found ? s->colls[i] : NULL;
    if (c)
        atomic_fetch_add(&c->refs, 1);
    pthread_rwlock_unlock(&s->map_lock);
    return c;
}

/* ---- read views -------------------------------------------------------------
 * A read view is the collection itself (no allocation per read): the view
 * owns one reference and the read lock. */
int mdb_read_begin(mdb_store *s, const char *name, size_t n, mdb_read **out)
{
    coll *c = core_map_get(s, name, n);
    if (!c)
        return -ENOENT;
    pthread_rwlock_rdlock(&c->lock);
    *out = (mdb_read *)c;
    return 0;
}

void mdb_read_end(mdb_read *r)
{
    coll *c = (coll *)r;
    if (!c)
        return;
    pthread_rwlock_unlock(&c->lock);
    core_coll_unref(c);
}

const char *mdb_read_name(const mdb_read *r)
{
    return ((const coll *)r)->name;
}

const mdb_doc *mdb_read_get(mdb_read *r, const char *key, size_t klen)
{
    const coll *c = (const coll *)r;
    return core_coll_get(c, key, klen, core_key_hash(key, klen));
}

size_t mdb_read_count(const mdb_read *r)
{
    return ((const coll *)r)->live;
}

const mdb_coll_meta *mdb_read_meta(const mdb_read *r)
{
    return &((const coll *)r)->meta;
}

int mdb_read_scan(mdb_read *r, bool newest_first, mdb_scan_fn fn, void *ud)
{
    const coll *c = (const coll *)r;
    if (newest_first) {
        for (size_t i = c->olen; i-- > 0;) {
            if (c->order[i]) {
                int rc = fn(c->order[i], ud);
                if (rc)
                    return rc;
            }
        }
    } else {
        for (size_t i = 0; i < c->olen; i++) {
            if (c->order[i]) {
                int rc = fn(c->order[i], ud);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

int mdb_store_each_collection(mdb_store *s, mdb_coll_fn fn, void *ud)
{
    pthread_rwlock_rdlock(&s->map_lock);
    size_t n = s->ncolls;
    coll **list = n ? malloc(n * sizeof *list) : NULL;
    if (n && !list) {
        pthread_rwlock_unlock(&s->map_lock);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        list[i] = s->colls[i];
        atomic_fetch_add(&list[i]->refs, 1);
    }
    pthread_rwlock_unlock(&s->map_lock);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rc) {
            pthread_rwlock_rdlock(&list[i]->lock);
            rc = fn((mdb_read *)list[i], ud);
            pthread_rwlock_unlock(&list[i]->lock);
        }
        core_coll_unref(list[i]);
    }
    free(list);
    return rc;
}
