/*
 * The in-memory document store, private to its files (core/store*.c): the
 * layouts they share and the functions one part calls in another. The
 * write path: docs/architecture.md, "The flow of a write"; the rules a
 * commit applies: include/moltendb/store.h.
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
 *
 * Files (docs/architecture.md, "File map"): store_doc.c documents and a
 * collection's hash and _seq order; store.c the collection map and read
 * views; store_apply.c records and apply; store_write.c write batches and
 * commit; store_frozen.c frozen views.
 */
#ifndef MDB_CORE_STORE_PRIVATE_H
#define MDB_CORE_STORE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

#include "core.h"

struct mdb_doc {
    _Atomic uint32_t refs;
    uint32_t keylen;
    uint32_t bodylen;
    uint32_t hash;
    int64_t v, seq, created, modified;
    bool is_object;
    unsigned char data[]; /* body (bodylen bytes), then key + NUL */
};

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

/* ---- store_doc.c ------------------------------------------------------------ */
/* A new document with one reference (the caller's); NULL when out of memory. */
mdb_doc *core_doc_new(const char *key, size_t klen, const void *body, size_t blen, uint32_t hash);
uint32_t core_key_hash(const char *k, size_t n);
void core_rwlock_init_writer_pref(pthread_rwlock_t *l);
/* A collection with one reference (the caller's). */
coll *core_coll_new(const char *name, size_t n);
void core_coll_unref(coll *c);
mdb_doc *core_coll_get(const coll *c, const char *key, size_t klen, uint32_t h);
/* Put d (taking its reference) in place of any document with its key. */
int core_coll_put(mdb_store *s, coll *c, mdb_doc *d);
bool core_coll_del(mdb_store *s, coll *c, const char *key, size_t klen, uint32_t h);

/* ---- store.c ---------------------------------------------------------------- */
/* Index of the collection or of where it would go; caller holds map_lock. */
size_t core_map_find(const mdb_store *s, const char *name, size_t n, bool *found);
/* A referenced collection, or NULL. */
coll *core_map_get(mdb_store *s, const char *name, size_t n);

/* ---- store_apply.c ---------------------------------------------------------- */
/* Apply records of one collection (caller holds commit_lock). Live commits
 * pass documents whose reference the collection takes; on failure the rest
 * are released. made (nullable, n entries, zeroed by the caller) gets a
 * reference to each document built from a replayed INSERT value; the
 * caller unrefs them. */
int core_apply_batch(mdb_store *s, const mdb_record *recs, size_t n, mdb_doc **made,
                     const char **why);
/* The value of a META record: the whole metadata. */
void core_meta_encode(mdb_buf *b, int64_t ttl_s, int64_t expires_at_ms, int64_t max_size,
                      int64_t next_seq);

#endif
