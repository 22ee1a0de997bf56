/*
 * query-engine internals shared by its translation units (the module's
 * README, "Source layout", says which file does what). Nothing here is
 * exported: the module is built with hidden visibility, only the
 * descriptor in query_engine.c is visible to the core.
 *
 * Ownership: everything a request parses or compiles lives in the
 * request's qe_arena and dies with qe_arena_free(); strings in a qe_query
 * point into the request's JSON body (owned by the core) or the arena.
 */
#ifndef QE_H
#define QE_H

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>
#include <moltendb/module.h>

/* ==== qe_text.c: errors, arena, name rules, case folding ==== */
/* ---- errors ---------------------------------------------------------------- */
typedef struct qe_err {
    unsigned status;
    char msg[600];
} qe_err;

/* Bounds on one query's work (README "Limits"): every request stays
 * roughly linear in the documents it reads. */
#define QE_MAX_WHERE_NODES 256 /* clauses and conditions of one where */
#define QE_MAX_SET 10000       /* values of one $in / $nin */
#define QE_SET_HASH_MIN 8      /* larger sets are hashed */
#define QE_MAX_PATHS 1024      /* entries of fields / excludedFields */
#define QE_MAX_SORT 32         /* sort specs */
#define QE_MAX_JOINS 32        /* joins of one /get */

/* Names quoted in error texts are cut so a huge hostile name cannot bloat
 * the reply (the validation texts quote the offending value). */
#define QE_QUOTE_MAX 300

/* ---- arena ------------------------------------------------------------------
 * Blocks of at least 16 KiB; everything allocated from it dies together in
 * qe_arena_free(). Not thread-safe: one arena per request. */
typedef struct qe_arena_blk {
    struct qe_arena_blk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
} qe_arena_blk;

typedef struct qe_arena {
    qe_arena_blk *head;
    int oom;
} qe_arena;

__attribute__((format(printf, 3, 4))) int qe_fail(qe_err *e, unsigned status, const char *fmt, ...);
void *qe_alloc(qe_arena *a, size_t n);
char *qe_strndup(qe_arena *a, const char *s, size_t n);
void qe_arena_free(qe_arena *a);
int qe_check_collection(const char *s, size_t n, qe_err *e);
int qe_check_key(const char *s, size_t n, qe_err *e);
int qe_check_field(const char *s, size_t n, qe_err *e);
/* Case-insensitive comparison (README "WHERE"): `low` is a string already
 * lowered by qe_fold_lit() (a copy in the arena, NUL-terminated, length in
 * *outn; NULL when out of memory); `s`/`hay` are lowered as compared.
 * qe_fold_hash(s) == qe_hash_bytes(low) whenever qe_ci_eq(s, low). */
char *qe_fold_lit(qe_arena *a, const char *s, size_t n, size_t *outn);
bool qe_ci_eq(const char *s, size_t n, const char *low, size_t ln);
bool qe_ci_contains(const char *hay, size_t hn, const char *low, size_t ln);
uint64_t qe_fold_hash(const char *s, size_t n);
uint64_t qe_hash_bytes(const char *low, size_t ln);
bool qe_json_is_int(json_object *j);
int qe_json_nonneg(json_object *j, int64_t *out);

/* ==== qe_where.c: the one WHERE evaluator (README "WHERE") ==== */
typedef struct qe_node qe_node; /* compiled clause, private to qe_where.c */

enum { QS_NONE, QS_V, QS_SEQ, QS_CREATED, QS_MODIFIED, QS_KEY };

/* A dot path split into segments, with its system-field / join binding. */
typedef struct qe_path {
    const char *text;
    size_t len;
    int nseg;
    const char **seg;
    size_t *seglen;
    int sys;  /* QS_* of the (rest) path */
    int join; /* index of the join whose alias was segment 0 (seg then starts
               * after it, seg[-1] is the alias), or -1 */
    /* the join's "fields" (NULL = whole document): a path outside that
     * projection reads as missing, as the joined document is projected
     * before where and sort see it (README "Joins") */
    const struct qe_ftree *jfields;
    /* reads the join's rendered view (qe_cand.views): the bare alias, or a
     * sub-object of which the join's "fields" keep only parts */
    bool view;
} qe_path;

/* Field value under test. */
typedef struct qe_fv {
    mdb_vtype t;
    bool b;
    double num;
    const char *s;
    size_t slen;
    mdb_val v;
} qe_fv;

/* Names of the query's join aliases, so paths can bind to them. */
typedef struct qe_aliases {
    const char *const *name;
    const size_t *len;
    const struct qe_ftree *const *fields; /* per alias, NULL = no projection */
    bool *need_view;                      /* per alias: set when a bound path reads its view */
    size_t n;
} qe_aliases;

typedef struct qe_where {
    qe_node *root;
    bool uses_joins;
} qe_where;

/* What the evaluator reads: a document and, optionally, its joined ones. */
typedef struct qe_evctx {
    const mdb_doc *doc;
    const mdb_doc *const *joined; /* per join index; entries may be NULL */
    const mdb_val *views;         /* per join index, or NULL (qe_cand.views) */
} qe_evctx;

int qe_path_init(qe_arena *a, qe_path *p, const char *text, size_t len, const qe_aliases *al);
void qe_doc_path(const mdb_doc *d, const qe_path *p, qe_fv *fv);
void qe_ctx_path(const qe_evctx *cx, const qe_path *p, qe_fv *fv);
bool qe_is_num(mdb_vtype t);
bool qe_where_match(const qe_where *w, const mdb_doc *d, const mdb_doc *const *joined);
bool qe_where_match_cx(const qe_where *w, const qe_evctx *cx);
int qe_where_compile(qe_arena *a, json_object *j, const qe_aliases *al, qe_where *out, qe_err *err);

/* ==== qe_shape.c: projection, rendering, sort order ==== */
/* ---- field trees ------------------------------------------------------------
 * "specs.cpu.ghz" and "specs.cpu.cores" share the nodes specs -> cpu. A leaf
 * takes the whole value (and wins over deeper paths). */
enum { QF_SEQ = 1, QF_CREATED = 2, QF_MODIFIED = 4, QF_EXPIRES = 8, QF_V = 16 };

typedef struct qe_ftree {
    const char *name;
    size_t nlen;
    bool leaf;
    struct qe_ftree *kids;
    size_t nkids, cap;
    uint32_t *idx; /* many kids: their index + 1 by name hash (imask + 1 slots) */
    size_t imask;
    unsigned sys; /* root only: QF_* listed */
} qe_ftree;

enum { QP_NONE, QP_FIELDS, QP_EXCLUDE };

typedef struct qe_join {
    const char *alias;
    size_t alen;
    const char *from;
    size_t flen;
    qe_path on;
    qe_ftree *fields; /* NULL = whole document */
} qe_join;

typedef struct qe_shape {
    int mode;      /* QP_* */
    qe_ftree tree; /* fields or excludedFields */
    const qe_join *joins;
    size_t njoins;
    qe_aliases aliases; /* of the joins */
    int64_t expires_at_ms;
} qe_shape;

/* ---- sorting (README "Sort") --------------------------------------------------
 * Total order: numbers < strings < booleans < null < arrays < objects;
 * a missing value sorts after everything ascending (so first descending).
 * Ties fall through to the next spec, then to the key (ascending). */
typedef struct qe_sortspec {
    qe_path path;
    bool desc;
} qe_sortspec;

/* A result candidate: the document, its joined documents, its sort keys. */
typedef struct qe_cand {
    const mdb_doc *d;
    const mdb_doc **joined; /* NULL when the query has no joins resolved */
    /* per join whose view is needed (qe_aliases.need_view): the joined
     * document as the reply shows it, encoded; .p NULL otherwise. Points
     * into a buffer the running query owns. NULL when no view is needed. */
    const mdb_val *views;
    qe_fv *sk; /* nspecs sort values */
} qe_cand;

typedef struct qe_sortctx {
    const qe_sortspec *specs;
    size_t n;
} qe_sortctx;

int qe_ftree_add(qe_arena *a, qe_ftree *root, const char *path, size_t len);
/* The child of t named s[0..n), or NULL. */
const qe_ftree *qe_ftree_find(const qe_ftree *t, const char *s, size_t n);
void qe_put_i64(mdb_buf *b, int64_t v);
/* A joined document as the reply embeds it (its own "fields" applied). */
void qe_render_joined(mdb_buf *b, const mdb_doc *d, const qe_ftree *fields);
void qe_render_doc(mdb_buf *b, const qe_shape *sh, const mdb_doc *d, const mdb_doc *const *joined,
                   bool with_key);
void qe_sort_top(qe_cand *c, size_t n, size_t k, const qe_sortctx *sc);

/* ==== qe_exec.c: running a compiled /get ==== */
typedef struct qe_keypat {
    const char *p;
    size_t n;
    bool prefix;
} qe_keypat;

enum { QK_NONE, QK_SINGLE, QK_ARRAY };

typedef struct qe_query {
    const char *coll;
    size_t clen;
    int keys_mode;
    const char **keys; /* QK_SINGLE: keys[0] */
    size_t *klens;
    size_t nkeys;
    qe_where where;
    qe_join *joins;
    size_t njoins;
    qe_shape shape;
    bool sorted; /* "sort" given (maybe empty: then by _key) */
    qe_sortspec *specs;
    size_t nspecs;
    bool sort_uses_joins;
    int64_t count, offset;
    bool asc;
    /* key-scoped principals: only keys matching one of these */
    bool restricted;
    const qe_keypat *allow;
    size_t nallow;
    /* client "_allowed_prefixes" */
    bool client_prefixes;
    const qe_keypat *prefixes;
    size_t nprefixes;
} qe_query;

bool qe_expired(const mdb_coll_meta *m, int64_t now);
int qe_run_get(mdb_store *st, qe_query *q, mdb_buf *out, qe_err *err);

/* ==== qe_schema.c: JSON Schema validation and its per-collection cache ==== */
typedef struct qe_schema qe_schema; /* compiled schema, private to qe_schema.c */

/* ---- per-collection cache ------------------------------------------------------ */
typedef struct qe_schema_entry {
    struct qe_schema_entry *next;
    char *coll;
    uint64_t gen;
    char *text;        /* the schema text compiled (malloc) */
    qe_schema *schema; /* NULL when the stored text does not compile */
} qe_schema_entry;

typedef struct qe_schema_cache {
    pthread_mutex_t mu;
    qe_schema_entry *head;
} qe_schema_cache;

void qe_schema_free(qe_schema *s);
qe_schema *qe_schema_build(json_object *j, qe_err *e);
bool qe_schema_validate(const qe_schema *s, mdb_val v);
void qe_schema_cache_init(qe_schema_cache *c);
void qe_schema_cache_free(qe_schema_cache *c);
int qe_schema_cache_check(qe_schema_cache *c, const char *coll, const mdb_coll_meta *meta,
                          mdb_val body);

/* ==== the module state (query_engine.c; owned by the module context) ==== */
typedef struct qe_mod {
    mdb_ctx *ctx;
    mdb_store *store;
    const mdb_auth_service *auth;
    void *auth_self;
    int64_t max_keys;
    qe_schema_cache schemas;
} qe_mod;

/* The validate hook (qe_schema.c): documents against the collection's schema. */
int qe_validate_hook(const char *collection, const mdb_coll_meta *meta, const char *key,
                     mdb_val body, int is_patch, const char **why_out, void *ud);

/* ==== qe_request.c: request bodies, validation, replies ==== */
/* What a body route asks of the preamble. */
typedef struct qe_route_spec {
    const char *const *allowed; /* known properties, NULL-terminated */
    mdb_action act;             /* needed on the collection */
    bool key_scopes_suffice;    /* /get: key-level read scopes pass (then checked per key) */
    bool collection_optional;   /* /stats: without `collection` no collection check */
} qe_route_spec;

/* The one check order of every body route (README "Check order"): the
 * body is a JSON object; `collection` is present and a valid name; the
 * caller may do spec->act on it (403); only known properties (400); the
 * generic validation (400). Route-specific checks and key-level scopes
 * come after. *coll points into body. */
int qe_preamble(const qe_mod *m, const mdb_principal *p, json_object *body,
                const qe_route_spec *spec, const char **coll, size_t *clen, qe_err *e);
/* The request's body after qe_preamble(), or NULL after replying. The
 * body is owned by the request. */
json_object *qe_begin(const qe_mod *m, mdb_req *r, const qe_route_spec *spec, const char **coll,
                      size_t *clen);
void qe_reply_err(mdb_req *r, const qe_err *e);
void qe_reply_buf(mdb_req *r, mdb_buf *b);
json_object *qe_body(const qe_mod *m, mdb_req *r);
/* True when the request went to the core's query pool (mdb_req_defer):
 * the handler returns at once and runs again there. A request that may
 * scan a collection goes; one that only names keys stays. */
bool qe_defer_scan(mdb_req *r);
json_object *qe_prop(json_object *o, const char *k);
bool qe_has(json_object *o, const char *k);
int qe_collection(json_object *body, const char **name, size_t *len, qe_err *e);
int qe_known_props(json_object *body, const char *const *allowed, qe_err *e);
int qe_generic(const qe_mod *m, json_object *body, qe_err *e);
int qe_parse_count(json_object *body, const char *prop, int64_t *out, qe_err *e);
int qe_query_uint(mdb_req *r, const char *name, int64_t *out, qe_err *e);
void qe_commit_error(mdb_req *r, int rc, const char *why, const char *schema_text,
                     const char *fail_prefix);
int qe_parse_meta(json_object *body, int64_t *ttl, int *has_ttl, int64_t *max, int *has_max,
                  qe_err *e);

/* ==== qe_auth.c: authorisation ==== */
typedef struct qe_patlist {
    qe_arena *a;
    qe_keypat *v;
    size_t n, cap;
    int oom;
} qe_patlist;

bool qe_allowed_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                  const char *key);
bool qe_allowed(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll, const char *key);
int qe_need_coll_p(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                   qe_err *e);
void qe_pat_cb(const char *pattern, size_t len, bool prefix, void *ud);
int qe_need_coll(const qe_mod *m, mdb_req *r, mdb_action act, const char *coll, qe_err *e);
/* The collection-level check of the preamble: 403 unless p may do act on
 * the whole collection (or, with key_scopes_suffice, on some of its keys). */
int qe_auth_collection(const qe_mod *m, const mdb_principal *p, mdb_action act, const char *coll,
                       bool key_scopes_suffice, qe_err *e);
int qe_scope_get(const qe_mod *m, const mdb_principal *p, qe_arena *a, qe_query *q, qe_err *e);

/* ==== qe_read.c: read routes (/get, /collections, /stats, /analytics) ==== */
/* ---- /analytics (README "Analytics") ---------------------------------------------------- */
enum { QA_COUNT, QA_SUM, QA_AVG, QA_MIN, QA_MAX };

typedef struct qe_agg {
    const qe_where *where;
    qe_path field;
    bool has_field;
    int type;
    uint64_t scanned, matched, nums;
    double sum, min, max;
} qe_agg;

/* The /get route's preamble spec; then qe_parse_get() fills q (arena and
 * body owned) from a body that passed qe_preamble(&qe_get_spec). */
extern const qe_route_spec qe_get_spec;
int qe_parse_get(qe_arena *a, json_object *body, const char *coll, size_t clen, qe_query *q,
                 qe_err *e);
void qe_h_get(mdb_req *r, void *ud);
void qe_h_list(mdb_req *r, void *ud);
void qe_h_doc(mdb_req *r, void *ud);
void qe_h_stats(mdb_req *r, void *ud);
int qe_agg_fn(const mdb_doc *d, void *ud);
void qe_h_analytics(mdb_req *r, void *ud);

/* ==== qe_write.c: write routes (/set, /update, /delete, /schema) ==== */
bool qe_reserved_top(json_object *doc);
int qe_extends(qe_mod *m, const mdb_principal *p, json_object *doc, json_object **res, qe_err *e);
void qe_h_set(mdb_req *r, void *ud);
void qe_h_update(mdb_req *r, void *ud);
void qe_h_delete(mdb_req *r, void *ud);
void qe_h_schema(mdb_req *r, void *ud);

#endif
