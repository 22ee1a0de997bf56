/*
 * Documents (immutable, refcounted single allocations) and a collection's
 * key hash and _seq order. Layouts and locking: store_private.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_private.h"

/* ---- documents ---------------------------------------------------------- */
mdb_doc *core_doc_new(const char *key, size_t klen, const void *body, size_t blen, uint32_t hash)
{
    mdb_doc *d = malloc(sizeof *d + blen + klen + 1);
    if (!d)
        return NULL;
    atomic_init(&d->refs, 1);
    d->keylen = (uint32_t)klen;
    d->bodylen = (uint32_t)blen;
    d->hash = hash;
    memcpy(d->data, body, blen);
    memcpy(d->data + blen, key, klen);
    d->data[blen + klen] = 0;
    d->is_object = blen > 0 && d->data[0] == 0x07;
    d->v = 1;
    d->seq = 0;
    d->created = d->modified = 0;
    return d;
}

const char *mdb_doc_key(const mdb_doc *d, size_t *len_out)
{
    if (len_out)
        *len_out = d->keylen;
    return (const char *)d->data + d->bodylen;
}
int64_t mdb_doc_version(const mdb_doc *d)
{
    return d->v;
}
int64_t mdb_doc_seq(const mdb_doc *d)
{
    return d->seq;
}
int64_t mdb_doc_created_ms(const mdb_doc *d)
{
    return d->created;
}
int64_t mdb_doc_modified_ms(const mdb_doc *d)
{
    return d->modified;
}
bool mdb_doc_is_object(const mdb_doc *d)
{
    return d->is_object;
}
mdb_val mdb_doc_body(const mdb_doc *d)
{
    mdb_val v = {d->data};
    return v;
}
void mdb_doc_ref(const mdb_doc *d)
{
    atomic_fetch_add_explicit(&((mdb_doc *)d)->refs, 1, memory_order_relaxed);
}
void mdb_doc_unref(const mdb_doc *d)
{
    if (d && atomic_fetch_sub_explicit(&((mdb_doc *)d)->refs, 1, memory_order_acq_rel) == 1)
        free((mdb_doc *)d);
}

void mdb_doc_to_json_sys(const mdb_doc *d, mdb_buf *out)
{
    mdb_val body = mdb_doc_body(d);
    if (!d->is_object) {
        mdb_val_to_json(body, out);
        return;
    }
    size_t start = out->len;
    mdb_val_to_json(body, out);
    if (out->oom || out->len < start + 2)
        return;
    out->len--; /* drop '}' */
    if (mdb_val_count(body) > 0)
        mdb_buf_putc(out, ',');
    mdb_buf_printf(out, "\"_v\":%lld,\"_seq\":%lld,\"_createdAt\":%lld,\"_modifiedAt\":%lld}",
                   (long long)d->v, (long long)d->seq, (long long)d->created,
                   (long long)d->modified);
}

uint32_t core_key_hash(const char *k, size_t n)
{
    /* FNV-1a: keys are short; good enough spread for linear probing. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 16777619u;
    }
    return h ? h : 1;
}

/* ---- collections ---------------------------------------------------------- */
/* Writer-preferring: a steady stream of readers must not starve commits. */
void core_rwlock_init_writer_pref(pthread_rwlock_t *l)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(l, &a);
    pthread_rwlockattr_destroy(&a);
}

coll *core_coll_new(const char *name, size_t n)
{
    coll *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->name = malloc(n + 1);
    if (!c->name) {
        free(c);
        return NULL;
    }
    memcpy(c->name, name, n);
    c->name[n] = 0;
    c->namelen = n;
    atomic_init(&c->refs, 1);
    core_rwlock_init_writer_pref(&c->lock);
    return c;
}

void core_coll_unref(coll *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < c->olen; i++)
        mdb_doc_unref(c->order[i]);
    free(c->order);
    free(c->oseq);
    free(c->slots);
    free((char *)c->meta.schema);
    pthread_rwlock_destroy(&c->lock);
    free(c->name);
    free(c);
}

static slot *coll_slot(const coll *c, const char *key, size_t klen, uint32_t h)
{
    if (!c->cap)
        return NULL;
    size_t mask = c->cap - 1, i = h & mask;
    slot *first_tomb = NULL;
    for (;;) {
        slot *sl = &c->slots[i];
        if (!sl->d)
            return first_tomb ? first_tomb : sl;
        if (sl->d == TOMB) {
            if (!first_tomb)
                first_tomb = sl;
        } else if (sl->h == h && sl->d->keylen == klen &&
                   memcmp(sl->d->data + sl->d->bodylen, key, klen) == 0) {
            return sl;
        }
        i = (i + 1) & mask;
    }
}

mdb_doc *core_coll_get(const coll *c, const char *key, size_t klen, uint32_t h)
{
    slot *s = coll_slot(c, key, klen, h);
    return (s && s->d && s->d != TOMB) ? s->d : NULL;
}

static int coll_rehash(coll *c, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2)
        cap <<= 1;
    slot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < c->cap; i++) {
        mdb_doc *d = c->slots[i].d;
        if (!d || d == TOMB)
            continue;
        size_t j = d->hash & (cap - 1);
        while (ns[j].d)
            j = (j + 1) & (cap - 1);
        ns[j] = (slot){d, d->hash};
    }
    free(c->slots);
    c->slots = ns;
    c->cap = cap;
    c->tombs = 0;
    return 0;
}

static size_t order_find(const coll *c, int64_t seq)
{
    size_t lo = 0, hi = c->olen;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->oseq[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void order_compact(coll *c)
{
    size_t j = 0;
    for (size_t i = 0; i < c->olen; i++) {
        if (c->order[i]) {
            c->order[j] = c->order[i];
            c->oseq[j] = c->oseq[i];
            j++;
        }
    }
    c->olen = j;
    c->holes = 0;
}

static int order_reserve(coll *c)
{
    if (c->olen < c->ocap)
        return 0;
    if (c->holes > c->olen / 4) {
        order_compact(c);
        if (c->olen < c->ocap)
            return 0;
    }
    /* Two arrays, one capacity: it grows when both have. */
    size_t ocap = c->ocap, qcap = c->ocap;
    if (mdb_array_grow(&c->order, &ocap, c->olen, sizeof *c->order, 16) ||
        mdb_array_grow(&c->oseq, &qcap, c->olen, sizeof *c->oseq, 16))
        return -ENOMEM;
    c->ocap = ocap;
    return 0;
}

/* Put d (taking its reference) in place of any document with its key. */
int core_coll_put(mdb_store *s, coll *c, mdb_doc *d)
{
    if ((c->live + c->tombs + 1) * 10 >= c->cap * 7) {
        int rc = coll_rehash(c, c->live + 1);
        if (rc)
            return rc;
    }
    if (order_reserve(c))
        return -ENOMEM;
    slot *sl = coll_slot(c, mdb_doc_key(d, NULL), d->keylen, d->hash);
    mdb_doc *old = (sl->d && sl->d != TOMB) ? sl->d : NULL;
    if (old) {
        size_t i = order_find(c, old->seq);
        if (i < c->olen && c->order[i] == old) {
            if (d->seq == old->seq) {
                c->order[i] = d;
                *sl = (slot){d, d->hash};
                mdb_doc_unref(old);
                return 0;
            }
            c->order[i] = NULL;
            c->holes++;
        }
        mdb_doc_unref(old);
    } else {
        if (sl->d == TOMB)
            c->tombs--;
        c->live++;
        atomic_fetch_add(&s->ndocs, 1);
    }
    *sl = (slot){d, d->hash};
    if (d->seq >= c->next_seq)
        c->next_seq = d->seq + 1;
    size_t pos = c->olen;
    if (c->olen && c->oseq[c->olen - 1] >= d->seq) {
        /* Out of order (replay of an unordered snapshot): insert in place. */
        pos = order_find(c, d->seq);
        memmove(c->order + pos + 1, c->order + pos, (c->olen - pos) * sizeof *c->order);
        memmove(c->oseq + pos + 1, c->oseq + pos, (c->olen - pos) * sizeof *c->oseq);
    }
    c->order[pos] = d;
    c->oseq[pos] = d->seq;
    c->olen++;
    return 0;
}

bool core_coll_del(mdb_store *s, coll *c, const char *key, size_t klen, uint32_t h)
{
    slot *sl = coll_slot(c, key, klen, h);
    if (!sl || !sl->d || sl->d == TOMB)
        return false;
    mdb_doc *old = sl->d;
    sl->d = TOMB;
    c->tombs++;
    c->live--;
    atomic_fetch_sub(&s->ndocs, 1);
    size_t i = order_find(c, old->seq);
    while (i < c->olen && c->oseq[i] == old->seq && c->order[i] != old)
        i++;
    if (i < c->olen && c->order[i] == old) {
        c->order[i] = NULL;
        c->holes++;
    }
    mdb_doc_unref(old);
    if (c->holes > 1024 && c->holes > c->olen / 2)
        order_compact(c);
    return true;
}
