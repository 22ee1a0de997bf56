/*
 * moltendb SDK: the in-memory document store (owned by the core).
 *
 * The store owns the data; the storage service only persists it. Every
 * change goes through one path:
 *
 *   mdb_write_begin -> put/patch/delete/drop/meta... -> mdb_write_commit
 *     under the commit lock:
 *       prepare: resolve each intent into log records (_v, _seq, timestamps,
 *                TTL clock, maxSize evictions), run validate hooks
 *       storage->append(records)          (the write is refused if this fails)
 *       apply(records)                     (same function replay uses)
 *       commit notify hooks(records)
 *
 * so what readers see, what the log holds and what hooks are told agree.
 *
 * Concurrency: readers of one collection run in parallel (read lock per
 * collection); a batch touches one collection and is applied under its write
 * lock, so a reader never sees half a batch. Commits are serialised by one
 * commit lock (the log is a single ordered stream). Documents are immutable
 * once published and reference-counted, so a reader may keep one past the
 * read view with mdb_doc_ref().
 *
 * Errors are 0 or a negative errno:
 *   -ENOMEM  out of memory          -EINVAL  rejected by a validate hook
 *   -ESTALE  _v guard mismatch (409) -EEXIST  metadata may not change (409)
 *   -EIO     storage refused (500)   -EROFS   storage is read-only (503)
 *   -ENOENT  no such collection
 * When a why_out is given it receives a static or store-owned reason text,
 * valid until the next call on the same thread.
 */
#ifndef MOLTENDB_STORE_H
#define MOLTENDB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "doc.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_object;
typedef struct mdb_store mdb_store;
typedef struct mdb_doc mdb_doc;
typedef struct mdb_req mdb_req;

/* A standalone store for tools (recover, tests). The server's store comes
 * from mdb_ctx_store(). Caller owns it; free with mdb_store_free(). Commits
 * on a standalone store persist nothing and run no hooks. */
mdb_store *mdb_store_new(void);
void mdb_store_free(mdb_store *s);

/* ---- documents ------------------------------------------------------------
 * All accessors are lock-free and safe from any thread while the caller
 * holds the read view the document came from, or a reference. */
const char *mdb_doc_key(const mdb_doc *d, size_t *len_out); /* NUL-terminated */
int64_t mdb_doc_version(const mdb_doc *d);                  /* _v, from 1 */
int64_t mdb_doc_seq(const mdb_doc *d);                      /* _seq, per collection, from 0 */
int64_t mdb_doc_created_ms(const mdb_doc *d);
int64_t mdb_doc_modified_ms(const mdb_doc *d);
/* False for documents that are not JSON objects (stored verbatim, no system fields). */
bool mdb_doc_is_object(const mdb_doc *d);
/* The user's fields (never contains system fields). */
mdb_val mdb_doc_body(const mdb_doc *d);
/* Body plus "_v", "_seq", "_createdAt", "_modifiedAt" (unix ms numbers), as
 * compact JSON: the form written to logs and snapshots and embedded by joins. */
void mdb_doc_to_json_sys(const mdb_doc *d, mdb_buf *out);
void mdb_doc_ref(const mdb_doc *d);
void mdb_doc_unref(const mdb_doc *d); /* frees on the last reference */

/* ---- collection metadata (store state, persisted by storage) ------------ */
typedef struct mdb_coll_meta {
    int64_t ttl_s;         /* 0 = no TTL */
    int64_t expires_at_ms; /* 0 = no expiry clock running */
    int64_t max_size;      /* 0 = uncapped */
    const char *schema;    /* JSON text or NULL; valid while the view is held */
    uint64_t schema_gen;   /* changes whenever schema changes (cache key) */
} mdb_coll_meta;

/* ---- reading ---------------------------------------------------------------
 * A read view holds the collection's read lock: keep it short (no I/O, no
 * waiting on other locks), and never begin a write while holding one. */
typedef struct mdb_read mdb_read;

/* 0, -ENOENT when the collection does not exist, -ENOMEM. The view is
 * caller-owned: end it with mdb_read_end(). */
int mdb_read_begin(mdb_store *s, const char *coll, size_t clen, mdb_read **out);
void mdb_read_end(mdb_read *r);
const char *mdb_read_name(const mdb_read *r);
/* Borrowed; NULL when absent. */
const mdb_doc *mdb_read_get(mdb_read *r, const char *key, size_t klen);
size_t mdb_read_count(const mdb_read *r);
/* Borrowed from the view: valid until mdb_read_end(). */
const mdb_coll_meta *mdb_read_meta(const mdb_read *r);
/* Visit documents in _seq order. Return nonzero from fn to stop; that
 * value is returned. */
typedef int (*mdb_scan_fn)(const mdb_doc *d, void *ud);
int mdb_read_scan(mdb_read *r, bool newest_first, mdb_scan_fn fn, void *ud);

/* Every collection, in name order; fn runs holding that collection's read
 * lock. Return nonzero to stop. */
typedef int (*mdb_coll_fn)(mdb_read *r, void *ud);
int mdb_store_each_collection(mdb_store *s, mdb_coll_fn fn, void *ud);
/* Documents in all collections (atomic read, no locks). */
uint64_t mdb_store_doc_count(const mdb_store *s);

/* ---- writing ---------------------------------------------------------------
 * A write batch targets one collection. Building it takes no locks; intents
 * are resolved at commit time against the state at that moment. The batch
 * is caller-owned until mdb_write_commit() or mdb_write_abort() frees it.
 * Callers: request handlers and module threads; never from a hook. */
typedef struct mdb_write mdb_write;

mdb_write *mdb_write_begin(mdb_store *s, const char *coll, size_t clen); /* NULL on OOM */
/* Insert or overwrite the whole document. `doc` is read, not kept. */
int mdb_write_put(mdb_write *w, const char *key, size_t klen, const struct json_object *doc);
int mdb_write_put_val(mdb_write *w, const char *key, size_t klen, mdb_val doc);
/* Shallow merge of an object into an existing document (top-level fields
 * overwrite, nested objects are replaced). A missing document is skipped.
 * expect_v >= 0 is a version guard: the commit fails with -ESTALE if the
 * stored _v differs. A "_v" member of the patch is ignored. */
int mdb_write_patch(mdb_write *w, const char *key, size_t klen, const struct json_object *patch,
                    int64_t expect_v);
/* Delete a key (absent keys are not counted). */
int mdb_write_delete(mdb_write *w, const char *key, size_t klen);
/* Drop the whole collection (documents and metadata), before other intents. */
int mdb_write_drop(mdb_write *w);
/* TTL expiry: if, at commit time, the collection's expiry has passed, drop
 * its documents and stop the clock but keep ttl, maxSize and schema (logged
 * as DROP + META + SCHEMA). Nothing happens when it has not expired (the
 * clock may have moved since the caller looked). res->dropped tells. */
int mdb_write_expire(mdb_write *w);
/* Collection metadata. TTL may be set once: the same value again is a
 * no-op, another value fails the commit with -EEXIST. */
int mdb_write_set_ttl(mdb_write *w, int64_t ttl_s);
int mdb_write_set_max_size(mdb_write *w, int64_t max_size);
int mdb_write_set_schema(mdb_write *w, const char *json, size_t len);

typedef struct mdb_commit_result {
    size_t inserted;    /* new documents */
    size_t overwritten; /* existing documents replaced by put */
    size_t updated;     /* patched documents */
    size_t skipped;     /* patches of missing documents */
    size_t deleted;     /* deletes of existing documents (not evictions) */
    size_t evicted;     /* documents removed by maxSize */
    bool dropped;       /* the collection was dropped (explicitly or expired) */
} mdb_commit_result;

/*
 * Resolve, persist, apply and announce the batch; frees `w` in every case.
 * All-or-nothing: on error nothing is applied or logged.
 * `req` (nullable) is the request being served: when the storage service
 * acknowledges writes only once durable (sync mode), the core holds that
 * request's response until then without blocking the calling thread.
 * Without a request the call returns once storage accepted the batch.
 * Rules applied here for every caller:
 *   - a collection whose TTL expiry has passed is dropped before a put;
 *   - after a batch with puts: the TTL clock restarts (now + ttl) and the
 *     oldest documents beyond maxSize are evicted (logged as deletes);
 *   - _v starts at 1 and increments on every put/patch; _seq is assigned at
 *     first insert and kept on overwrite; _createdAt is kept on overwrite.
 */
int mdb_write_commit(mdb_write *w, mdb_req *req, mdb_commit_result *res, const char **why_out);
void mdb_write_abort(mdb_write *w);

/* ---- log records -----------------------------------------------------------
 * What a commit hands to storage and to commit hooks, and what storage
 * hands back to mdb_store_apply() at replay. */
typedef enum mdb_rec_op {
    MDB_REC_INSERT = 1, /* key + document (insert, overwrite, patch result) */
    MDB_REC_DELETE = 2, /* key */
    MDB_REC_DROP = 3,   /* whole collection */
    MDB_REC_SCHEMA = 4, /* value = schema */
    MDB_REC_META = 5    /* value = {"ttl":s,"expiresAt":ms,"maxSize":n[,"nextSeq":n]}: full
                         * metadata; nextSeq (the _seq counter) when no document tells
                         * it: an overwrite used a value up, the newest one is gone */
} mdb_rec_op;

typedef struct mdb_record {
    mdb_rec_op op;
    const char *collection;
    size_t collection_len;
    const char *key; /* INSERT, DELETE; NULL otherwise */
    size_t key_len;
    /* INSERT from a live commit or a frozen view: the new document. */
    const mdb_doc *doc;
    /* INSERT at replay: the document with its system fields (as written by
     * mdb_doc_to_json_sys); SCHEMA and META: the value. MISSING otherwise. */
    mdb_val value;
    int64_t ts_ms; /* when the record was made (unix ms) */
} mdb_record;

const char *mdb_rec_op_name(mdb_rec_op op); /* "INSERT", ... */
int mdb_rec_op_parse(const char *name);     /* op, or -EINVAL */
/* The record's value as compact JSON ("null" when it has none). */
void mdb_record_value_json(const mdb_record *rec, mdb_buf *out);

/* Apply one replayed batch, all or nothing. Startup only (storage replay),
 * before the server accepts requests; runs no hooks. */
int mdb_store_apply(mdb_store *s, const mdb_record *recs, size_t n, const char **why_out);

/* Shared logs (storage.h, order_begin): apply a batch another node
 * committed, as replay does (records carry values), then run the commit
 * hooks as for a local commit, so hooks see every node's writes. The caller
 * holds the commit lock: call it only from the storage's order_begin() or
 * from a function run by mdb_store_locked(). */
int mdb_store_apply_remote(mdb_store *s, const mdb_record *recs, size_t n, const char **why_out);
/* Run fn(ud) holding the commit lock (no commit or apply runs meanwhile)
 * and return its result: how a thread tailing a shared log applies the
 * batches it fetched. fn must not commit. */
int mdb_store_locked(mdb_store *s, int (*fn)(void *ud), void *ud);

/* ---- consistent snapshots without stopping writers -----------------------
 * Under the commit lock: take a reference on every document and copy every
 * collection's metadata (pointer copies only), then call at_point (still
 * under the lock: storage switches to a new log there). The frozen view is
 * then iterated at leisure while writers go on. Caller owns the view. */
typedef struct mdb_frozen mdb_frozen;
int mdb_store_freeze(mdb_store *s, void (*at_point)(void *ud), void *ud, mdb_frozen **out);
/* Per collection: a META record (if any metadata), a SCHEMA record (if
 * any), then INSERT records in _seq order. Return nonzero to stop. */
int mdb_frozen_each(mdb_frozen *f, int (*fn)(const mdb_record *rec, void *ud), void *ud);
uint64_t mdb_frozen_doc_count(const mdb_frozen *f);
void mdb_frozen_free(mdb_frozen *f);

#ifdef __cplusplus
}
#endif
#endif
