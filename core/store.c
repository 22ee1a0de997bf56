/*
 * The in-memory document store.
 *
 * Layout: a sorted array of collections (few, looked up by binary search)
 * under map_lock; per collection an open-addressing hash (key -> doc) and a
 * _seq-ordered array of docs (with holes for deletions) under the
 * collection's rwlock. Documents are immutable, refcounted single
 * allocations (header, encoded body, key).
 *
 * Ownership: the store owns collections; a collection owns one reference
 * of each of its documents; a read view owns one reference of its
 * collection; a write batch owns its intents' encodings until commit turns
 * them into documents, whose first reference the records carry into apply.
 *
 * Lock order: commit_lock -> (map_lock | collection lock). Readers never
 * hold map_lock and a collection lock together.
 */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core.h"

/* ---- documents ---------------------------------------------------------- */
struct mdb_doc {
    _Atomic uint32_t refs;
    uint32_t keylen;
    uint32_t bodylen;
    uint32_t hash;
    int64_t v, seq, created, modified;
    bool is_object;
    unsigned char data[]; /* body (bodylen bytes), then key + NUL */
};

static mdb_doc *doc_new(const char *key, size_t klen, const void *body, size_t blen, uint32_t hash)
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

static uint32_t hash_key(const char *k, size_t n)
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
#define TOMB ((mdb_doc *)(uintptr_t)1)

/* The hash sits beside the pointer so probing past other keys touches no
 * document (each one would be a cache miss in a large collection). */
typedef struct slot {
    mdb_doc *d;
    uint32_t h;
} slot;

typedef struct coll {
    _Atomic uint32_t refs;
    pthread_rwlock_t lock;
    char *name;
    size_t namelen;
    slot *slots; /* hash table: d NULL empty, TOMB deleted */
    size_t cap, live, tombs;
    mdb_doc **order; /* by _seq ascending; NULL = hole */
    int64_t *oseq;   /* _seq of each order slot (holes keep theirs) */
    size_t olen, ocap, holes;
    int64_t next_seq;
    mdb_coll_meta meta; /* meta.schema is owned (malloc) */
} coll;

struct mdb_store {
    pthread_mutex_t commit_lock;
    pthread_rwlock_t map_lock;
    coll **colls; /* sorted by name */
    size_t ncolls, capcolls;
    _Atomic uint64_t ndocs;
    uint64_t schema_gen;
    const mdb_storage_service *storage;
    void *storage_self;
    bool hooks;
};

/* Writer-preferring: a steady stream of readers must not starve commits. */
static void rwlock_init_writer_pref(pthread_rwlock_t *l)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(l, &a);
    pthread_rwlockattr_destroy(&a);
}

static coll *coll_new(const char *name, size_t n)
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
    rwlock_init_writer_pref(&c->lock);
    return c;
}

static void coll_unref(coll *c)
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

static mdb_doc *coll_get(const coll *c, const char *key, size_t klen, uint32_t h)
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
    size_t ncap = c->ocap ? c->ocap * 2 : 16;
    mdb_doc **no = realloc(c->order, ncap * sizeof *no);
    if (!no)
        return -ENOMEM;
    c->order = no;
    int64_t *nq = realloc(c->oseq, ncap * sizeof *nq);
    if (!nq)
        return -ENOMEM;
    c->oseq = nq;
    c->ocap = ncap;
    return 0;
}

/* Put d (taking its reference) in place of any document with its key. */
static int coll_put(mdb_store *s, coll *c, mdb_doc *d)
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

static bool coll_del(mdb_store *s, coll *c, const char *key, size_t klen, uint32_t h)
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

/* ---- store ----------------------------------------------------------------- */
mdb_store *mdb_store_new(void)
{
    mdb_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->commit_lock, NULL);
    rwlock_init_writer_pref(&s->map_lock);
    return s;
}

void mdb_store_free(mdb_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ncolls; i++)
        coll_unref(s->colls[i]);
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
static size_t map_find(const mdb_store *s, const char *name, size_t n, bool *found)
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
static coll *map_get(mdb_store *s, const char *name, size_t n)
{
    pthread_rwlock_rdlock(&s->map_lock);
    bool found;
    size_t i = map_find(s, name, n, &found);
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
    coll *c = map_get(s, name, n);
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
    coll_unref(c);
}

const char *mdb_read_name(const mdb_read *r)
{
    return ((const coll *)r)->name;
}

const mdb_doc *mdb_read_get(mdb_read *r, const char *key, size_t klen)
{
    const coll *c = (const coll *)r;
    return coll_get(c, key, klen, hash_key(key, klen));
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
        coll_unref(list[i]);
    }
    free(list);
    return rc;
}

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
    uint32_t h = hash_key(rec->key, rec->key_len);
    mdb_val v = rec->value;
    if (mdb_val_type(v) != MDB_V_OBJECT) {
        mdb_doc *d = doc_new(rec->key, rec->key_len, v.p ? v.p : (const unsigned char *)"\0",
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
    mdb_doc *d = b.oom ? NULL : doc_new(rec->key, rec->key_len, b.data, b.len, h);
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
    st->fresh = coll_new(name, n);
    return st->fresh;
}

static int apply_one(apply_state *st, const mdb_record *rec, bool *taken)
{
    mdb_store *s = st->s;
    *taken = false;
    if (rec->op == MDB_REC_DROP) {
        if (st->fresh) {
            coll_unref(st->fresh);
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
        int rc = coll_put(s, c, d);
        if (rc && !*taken)
            mdb_doc_unref(d);
        if (rc)
            *taken = false;
        return rc;
    }
    case MDB_REC_DELETE:
        coll_del(s, c, rec->key, rec->key_len, hash_key(rec->key, rec->key_len));
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
    bool publish_fresh = fresh && (fresh->live || fresh->meta.ttl_s || fresh->meta.max_size ||
                                   fresh->meta.schema || fresh->meta.expires_at_ms);
    if (pub)
        pthread_rwlock_unlock(&pub->lock);
    if (st->retire || publish_fresh) {
        pthread_rwlock_wrlock(&s->map_lock);
        bool found;
        const char *name = pub ? pub->name : fresh->name;
        size_t n = pub ? pub->namelen : fresh->namelen;
        size_t i = map_find(s, name, n, &found);
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
            coll_unref(old);
        } else if (!found && publish_fresh) {
            if (s->ncolls == s->capcolls) {
                size_t nc = s->capcolls ? s->capcolls * 2 : 16;
                coll **nl = realloc(s->colls, nc * sizeof *nl);
                if (nl) {
                    s->colls = nl;
                    s->capcolls = nc;
                }
            }
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
        coll_unref(fresh);
    }
    coll_unref(pub);
}

/* Apply records of one collection. Live commits pass documents whose
 * reference the collection takes; on failure the rest are released. */
static int apply_batch(mdb_store *s, const mdb_record *recs, size_t n, const char **why)
{
    if (!n)
        return 0;
    apply_state st = {s, map_get(s, recs[0].collection, recs[0].collection_len), NULL, false};
    if (st.pub)
        pthread_rwlock_wrlock(&st.pub->lock);
    int rc = 0;
    size_t i = 0;
    for (; i < n; i++) {
        bool taken;
        rc = apply_one(&st, &recs[i], &taken);
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

int mdb_store_apply(mdb_store *s, const mdb_record *recs, size_t n, const char **why_out)
{
    /* Records of a replayed batch may name several collections: apply each
     * run of one collection in turn. */
    pthread_mutex_lock(&s->commit_lock);
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
            if (!rc)
                rc = apply_batch(s, recs + start, i - start, why_out);
            start = i;
        }
    }
    pthread_mutex_unlock(&s->commit_lock);
    return rc;
}

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
    if (w->nin == w->capin) {
        size_t nc = w->capin ? w->capin * 2 : 8;
        intent *ni = realloc(w->in, nc * sizeof *ni);
        if (!ni) {
            free(enc);
            return w->err = -ENOMEM;
        }
        w->in = ni;
        w->capin = nc;
    }
    char *k = malloc(klen + 1);
    if (!k) {
        free(enc);
        return w->err = -ENOMEM;
    }
    memcpy(k, key, klen);
    k[klen] = 0;
    w->in[w->nin++] = (intent){kind, k, klen, hash_key(key, klen), enc, enclen, expect_v};
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
} commit_state;

static int push_rec(commit_state *cs, mdb_rec_op op, const char *key, size_t klen, mdb_doc *doc,
                    size_t val_off)
{
    if (cs->nrecs == cs->caprecs) {
        size_t nc = cs->caprecs ? cs->caprecs * 2 : 16;
        mdb_record *nr = realloc(cs->recs, nc * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        cs->recs = nr;
        size_t *no = realloc(cs->val_off, nc * sizeof *no);
        if (!no)
            return -ENOMEM;
        cs->val_off = no;
        cs->caprecs = nc;
    }
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
    return coll_get(cs->base, key, klen, h);
}

/* The value of a META record: the whole metadata, the inverse of
 * coll_set_meta_from(). */
static void encode_meta(mdb_buf *b, int64_t ttl_s, int64_t expires_at_ms, int64_t max_size)
{
    size_t m = mdb_enc_begin_object(b);
    mdb_enc_key(b, "ttl", 3);
    mdb_enc_int(b, ttl_s);
    mdb_enc_key(b, "expiresAt", 9);
    mdb_enc_int(b, expires_at_ms);
    mdb_enc_key(b, "maxSize", 7);
    mdb_enc_int(b, max_size);
    mdb_enc_end(b, m, 3);
}

static int push_meta_value(commit_state *cs, mdb_rec_op op, const char *text)
{
    size_t off = cs->vals.len;
    if (op == MDB_REC_META) {
        encode_meta(&cs->vals, cs->meta.ttl_s, cs->meta.expires_at_ms, cs->meta.max_size);
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
    mdb_doc *d = b.oom ? NULL : doc_new(in->key, in->klen, b.data, b.len, in->hash);
    mdb_buf_free(&b);
    return d;
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
            if (push_rec(cs, MDB_REC_DELETE, k, d->keylen, NULL, SIZE_MAX))
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

static int resolve(commit_state *cs, mdb_commit_result *res, const char **why)
{
    mdb_write *w = cs->w;
    coll *c = cs->base;
    bool has_puts = false;
    for (size_t i = 0; i < w->nin; i++)
        has_puts |= w->in[i].kind == IN_PUT;
    if (c) {
        cs->meta = c->meta;
        cs->next_seq = c->next_seq;
    }
    mdb_coll_meta orig = cs->meta;
    cs->schema_text = (char *)cs->meta.schema;
    bool force_meta = false;

    if (w->drop) {
        if (c && push_rec(cs, MDB_REC_DROP, NULL, 0, NULL, SIZE_MAX))
            return -ENOMEM;
        cs->base_gone = true;
        cs->meta = (mdb_coll_meta){0};
        cs->schema_text = NULL;
        cs->next_seq = 0;
        res->dropped = c != NULL;
    } else if ((w->expire || has_puts) && c && cs->meta.expires_at_ms > 0 &&
               cs->meta.expires_at_ms <= cs->now) {
        if (push_rec(cs, MDB_REC_DROP, NULL, 0, NULL, SIZE_MAX))
            return -ENOMEM;
        cs->base_gone = true;
        cs->meta.expires_at_ms = 0;
        cs->next_seq = 0;
        force_meta = true;
        res->dropped = true;
        if (cs->schema_text && !w->set_schema &&
            push_meta_value(cs, MDB_REC_SCHEMA, cs->schema_text))
            return -ENOMEM;
    }
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

    for (size_t i = 0; i < w->nin; i++) {
        intent *in = &w->in[i];
        const mdb_doc *old = cur_doc(cs, in->key, in->klen, in->hash);
        if (in->kind == IN_DELETE) {
            if (!old)
                continue;
            if (push_rec(cs, MDB_REC_DELETE, in->key, in->klen, NULL, SIZE_MAX))
                return -ENOMEM;
            ov_entry *e = ov_find(cs, in->key, in->klen, in->hash, true);
            if (!e)
                return -ENOMEM;
            e->deleted = true;
            e->doc = NULL;
            res->deleted++;
            continue;
        }
        mdb_doc *d;
        if (in->kind == IN_PATCH) {
            if (!old) {
                res->skipped++;
                continue;
            }
            if (in->expect_v >= 0 && in->expect_v != old->v) {
                *why = "Conflict: Document version is outdated";
                return -ESTALE;
            }
            d = merge_patch(old, in);
        } else {
            d = doc_new(in->key, in->klen, in->enc, in->enclen, in->hash);
        }
        if (!d)
            return -ENOMEM;
        d->modified = cs->now;
        if (old) {
            d->v = old->v + 1;
            d->seq = old->seq;
            d->created = old->created;
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
    }

    if (has_puts) {
        if (cs->meta.ttl_s > 0) {
            /* Saturate: a TTL of centuries must not overflow into the past. */
            int64_t room = (INT64_MAX - cs->now) / 1000;
            cs->meta.expires_at_ms =
                cs->meta.ttl_s > room ? INT64_MAX : cs->now + cs->meta.ttl_s * 1000;
        }
        if (cs->meta.max_size > 0) {
            size_t base_count = (c && !cs->base_gone) ? c->live : 0;
            if (do_evictions(cs, base_count, res))
                return -ENOMEM;
        }
    }
    bool meta_changed = cs->meta.ttl_s != orig.ttl_s ||
                        cs->meta.expires_at_ms != orig.expires_at_ms ||
                        cs->meta.max_size != orig.max_size;
    if (cs->base_gone && !w->drop)
        meta_changed = true;
    if (w->drop)
        meta_changed = cs->meta.ttl_s || cs->meta.max_size;
    if ((meta_changed || force_meta) && push_meta_value(cs, MDB_REC_META, NULL))
        return -ENOMEM;
    return 0;
}

static void release_recs(commit_state *cs)
{
    for (size_t i = 0; i < cs->nrecs; i++)
        if (cs->recs[i].doc)
            mdb_doc_unref(cs->recs[i].doc);
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
    cs.now = mdb_now_ms();
    if (!rc) {
        cs.base = map_get(s, w->coll, w->clen);
        rc = resolve(&cs, res, why);
    }
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
            coll_unref(cs.base);
            cs.base = NULL;
            rc = apply_batch(s, cs.recs, cs.nrecs, why);
            if (rc)
                mdb_log(NULL, MDB_LOG_ERROR, "applying a logged batch to '%s' failed: %s", w->coll,
                        *why ? *why : "unknown");
            else if (s->hooks)
                core_hooks_commit(&(mdb_commit_event){w->coll, cs.recs, cs.nrecs});
            cs.nrecs = 0; /* documents now belong to the collection */
        }
    }
    if (rc) {
        release_recs(&cs);
        if (!*why)
            *why = rc == -ENOMEM ? "out of memory" : "write refused";
    }
    coll_unref(cs.base);
    pthread_mutex_unlock(&s->commit_lock);

    free(cs.recs);
    free(cs.val_off);
    free(cs.ov);
    mdb_buf_free(&cs.vals);
    mdb_write_abort(w);
    if (!rc && ticket && req)
        core_http_wait_durable(req, ticket);
    if (rc)
        memset(res, 0, sizeof *res);
    return rc;
}

/* ---- frozen views ------------------------------------------------------------------- */
typedef struct frozen_coll {
    char *name;
    size_t namelen;
    int64_t ttl_s, expires_at_ms, max_size;
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
        if (fc->ttl_s || fc->expires_at_ms || fc->max_size) {
            mdb_buf_reset(&b);
            encode_meta(&b, fc->ttl_s, fc->expires_at_ms, fc->max_size);
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

/* ---- UUIDv7 ------------------------------------------------------------------------- */
static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t uuid_last_ms;
static uint32_t uuid_counter;

static void uuid_text(const unsigned char b[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = 0;
}

void mdb_uuid4(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        memset(b, 0, sizeof b); /* not reached once the kernel pool is seeded */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_text(b, out);
}

void mdb_uuid7(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* getrandom on Linux does not fail for 16 bytes once seeded. */
        memset(b, 0, sizeof b);
    }
    pthread_mutex_lock(&uuid_lock);
    int64_t ms = mdb_now_ms();
    if (ms <= uuid_last_ms) {
        /* Same millisecond (or clock went back): count up in rand_a so keys
         * stay strictly increasing; borrow the next millisecond on overflow. */
        ms = uuid_last_ms;
        if (++uuid_counter > 0xfff) {
            ms++;
            uuid_counter = 0;
        }
    } else {
        uuid_counter = (uint32_t)(b[6] & 0x07) << 8 | b[7]; /* random start, room to count */
    }
    uuid_last_ms = ms;
    uint32_t ctr = uuid_counter;
    pthread_mutex_unlock(&uuid_lock);
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | ((ctr >> 8) & 0x0f));
    b[7] = (unsigned char)(ctr & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    uuid_text(b, out);
}
