/* Unit tests of the store: system fields, write semantics, metadata rules,
 * replay through mdb_store_apply, frozen views, UUIDv7, and many readers
 * and writers at once. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "mdb_cunit.h"

static json_object *J(const char *s)
{
    json_object *j = json_tokener_parse(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

static int put(mdb_store *s, const char *coll, const char *key, const char *json,
               mdb_commit_result *res)
{
    mdb_write *w = mdb_write_begin(s, coll, strlen(coll));
    json_object *j = J(json);
    CU_ASSERT_EQUAL(mdb_write_put(w, key, strlen(key), j), 0);
    json_object_put(j);
    return mdb_write_commit(w, NULL, res, NULL);
}

/* Copy of a document's state taken under a read view. */
typedef struct snap {
    bool found;
    int64_t v, seq, created, modified;
    char json[512];
} snap;

static snap get(mdb_store *s, const char *coll, const char *key)
{
    snap out = {0};
    mdb_read *r;
    if (mdb_read_begin(s, coll, strlen(coll), &r) != 0)
        return out;
    const mdb_doc *d = mdb_read_get(r, key, strlen(key));
    if (d) {
        out.found = true;
        out.v = mdb_doc_version(d);
        out.seq = mdb_doc_seq(d);
        out.created = mdb_doc_created_ms(d);
        out.modified = mdb_doc_modified_ms(d);
        mdb_buf b;
        mdb_buf_init(&b);
        mdb_val_to_json(mdb_doc_body(d), &b);
        snprintf(out.json, sizeof out.json, "%.*s", (int)b.len, b.data);
        mdb_buf_free(&b);
    }
    mdb_read_end(r);
    return out;
}

static size_t count(mdb_store *s, const char *coll)
{
    mdb_read *r;
    if (mdb_read_begin(s, coll, strlen(coll), &r) != 0)
        return (size_t)-1;
    size_t n = mdb_read_count(r);
    mdb_read_end(r);
    return n;
}

static void test_insert_system_fields(void)
{
    mdb_store *s = mdb_store_new();
    mdb_commit_result res;
    int64_t before = mdb_now_ms();
    CU_ASSERT_EQUAL(put(s, "c", "a", "{\"x\":1}", &res), 0);
    CU_ASSERT_EQUAL(res.inserted, 1);
    CU_ASSERT_EQUAL(res.overwritten, 0);
    snap a = get(s, "c", "a");
    CU_ASSERT_TRUE(a.found);
    CU_ASSERT_EQUAL(a.v, 1);
    CU_ASSERT_EQUAL(a.seq, 0);
    CU_ASSERT_TRUE(a.created >= before && a.created <= mdb_now_ms());
    CU_ASSERT_EQUAL(a.created, a.modified);
    CU_ASSERT_STRING_EQUAL(a.json, "{\"x\":1}");
    CU_ASSERT_EQUAL(put(s, "c", "b", "{\"x\":2}", NULL), 0);
    CU_ASSERT_EQUAL(get(s, "c", "b").seq, 1);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 2);
    mdb_store_free(s);
}

static void test_overwrite_keeps_seq_and_created(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "c", "a", "{\"x\":1}", NULL);
    put(s, "c", "b", "{\"x\":1}", NULL);
    snap a1 = get(s, "c", "a");
    mdb_commit_result res;
    CU_ASSERT_EQUAL(put(s, "c", "a", "{\"y\":2}", &res), 0);
    CU_ASSERT_EQUAL(res.overwritten, 1);
    CU_ASSERT_EQUAL(res.inserted, 0);
    snap a2 = get(s, "c", "a");
    CU_ASSERT_EQUAL(a2.v, 2);
    CU_ASSERT_EQUAL(a2.seq, a1.seq);
    CU_ASSERT_EQUAL(a2.created, a1.created);
    CU_ASSERT_TRUE(a2.modified >= a1.modified);
    CU_ASSERT_STRING_EQUAL(a2.json, "{\"y\":2}"); /* replaced, not merged */
    CU_ASSERT_EQUAL(count(s, "c"), 2);
    mdb_store_free(s);
}

static void test_patch_semantics(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "c", "a", "{\"x\":1,\"n\":{\"p\":1,\"q\":2},\"keep\":true}", NULL);
    snap a1 = get(s, "c", "a");
    mdb_write *w = mdb_write_begin(s, "c", 1);
    json_object *p = J("{\"x\":5,\"n\":{\"p\":9},\"new\":\"v\",\"_v\":1}");
    CU_ASSERT_EQUAL(mdb_write_patch(w, "a", 1, p, -1), 0);
    CU_ASSERT_EQUAL(mdb_write_patch(w, "missing", 7, p, -1), 0);
    json_object_put(p);
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_EQUAL(res.updated, 1);
    CU_ASSERT_EQUAL(res.skipped, 1);
    snap a2 = get(s, "c", "a");
    CU_ASSERT_STRING_EQUAL(a2.json, "{\"x\":5,\"n\":{\"p\":9},\"keep\":true,\"new\":\"v\"}");
    CU_ASSERT_EQUAL(a2.v, 2);
    CU_ASSERT_EQUAL(a2.seq, a1.seq);
    CU_ASSERT_EQUAL(a2.created, a1.created);
    CU_ASSERT_FALSE(get(s, "c", "missing").found);
    /* A patch must be an object. */
    w = mdb_write_begin(s, "c", 1);
    json_object *num = json_object_new_int(3);
    CU_ASSERT_EQUAL(mdb_write_patch(w, "a", 1, num, -1), -EINVAL);
    json_object_put(num);
    mdb_write_abort(w);
    mdb_store_free(s);
}

static void test_version_guard_is_all_or_nothing(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "c", "a", "{\"x\":1}", NULL);
    put(s, "c", "b", "{\"x\":1}", NULL);
    mdb_write *w = mdb_write_begin(s, "c", 1);
    json_object *p = J("{\"x\":2}");
    mdb_write_patch(w, "a", 1, p, 1); /* right version */
    mdb_write_patch(w, "b", 1, p, 7); /* wrong version */
    json_object_put(p);
    const char *why = NULL;
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), -ESTALE);
    CU_ASSERT_PTR_NOT_NULL(why);
    CU_ASSERT_EQUAL(res.updated, 0);
    /* Nothing applied: a is still version 1. */
    CU_ASSERT_EQUAL(get(s, "c", "a").v, 1);
    CU_ASSERT_STRING_EQUAL(get(s, "c", "a").json, "{\"x\":1}");
    mdb_store_free(s);
}

static void test_delete_and_drop(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "c", "a", "{}", NULL);
    put(s, "c", "b", "{}", NULL);
    mdb_write *w = mdb_write_begin(s, "c", 1);
    mdb_write_delete(w, "a", 1);
    mdb_write_delete(w, "zz", 2);
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_EQUAL(res.deleted, 1); /* the missing key is not counted */
    CU_ASSERT_EQUAL(count(s, "c"), 1);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 1);
    w = mdb_write_begin(s, "c", 1);
    mdb_write_drop(w);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_TRUE(res.dropped);
    mdb_read *r;
    CU_ASSERT_EQUAL(mdb_read_begin(s, "c", 1, &r), -ENOENT);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 0);
    /* Recreated after a drop: versions start again at 1. */
    put(s, "c", "b", "{}", NULL);
    CU_ASSERT_EQUAL(get(s, "c", "b").v, 1);
    mdb_store_free(s);
}

static void test_ttl_rules(void)
{
    mdb_store *s = mdb_store_new();
    mdb_write *w = mdb_write_begin(s, "t", 1);
    mdb_write_set_ttl(w, 100);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    mdb_read *r;
    CU_ASSERT_EQUAL(mdb_read_begin(s, "t", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->ttl_s, 100);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->expires_at_ms, 0); /* registering does not start the clock */
    mdb_read_end(r);
    /* Same value again: fine. Another value: -EEXIST. */
    w = mdb_write_begin(s, "t", 1);
    mdb_write_set_ttl(w, 100);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    w = mdb_write_begin(s, "t", 1);
    mdb_write_set_ttl(w, 5);
    const char *why = NULL;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), -EEXIST);
    CU_ASSERT_PTR_NOT_NULL(why);
    /* A put starts the clock at now + ttl. */
    int64_t t0 = mdb_now_ms();
    put(s, "t", "k", "{}", NULL);
    CU_ASSERT_EQUAL(mdb_read_begin(s, "t", 1, &r), 0);
    int64_t exp = mdb_read_meta(r)->expires_at_ms;
    mdb_read_end(r);
    CU_ASSERT_TRUE(exp >= t0 + 100000 && exp <= mdb_now_ms() + 100000);
    /* A patch does not move it. */
    w = mdb_write_begin(s, "t", 1);
    json_object *p = J("{\"a\":1}");
    mdb_write_patch(w, "k", 1, p, -1);
    json_object_put(p);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(mdb_read_begin(s, "t", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->expires_at_ms, exp);
    mdb_read_end(r);
    /* An explicit drop forgets the TTL, so it may then change. */
    w = mdb_write_begin(s, "t", 1);
    mdb_write_drop(w);
    mdb_write_commit(w, NULL, NULL, NULL);
    w = mdb_write_begin(s, "t", 1);
    mdb_write_set_ttl(w, 5);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    mdb_store_free(s);
}

/* Replay an "expired" state, then check expire and put-after-expiry. */
static void test_huge_ttl_saturates(void)
{
    mdb_store *s = mdb_store_new();
    mdb_write *w = mdb_write_begin(s, "h", 1);
    mdb_write_set_ttl(w, INT64_MAX);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(put(s, "h", "k", "{}", NULL), 0);
    mdb_read *r;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(s, "h", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->expires_at_ms, INT64_MAX); /* never, not the past */
    mdb_read_end(r);
    mdb_store_free(s);
}

static void test_expired_collection(void)
{
    mdb_store *s = mdb_store_new();
    mdb_buf vals;
    mdb_buf_init(&vals);
    const char *why = NULL;
    mdb_encode_json_text("{\"ttl\":60,\"expiresAt\":1000,\"maxSize\":0}", 39, &vals, &why);
    size_t doc_off = vals.len;
    mdb_encode_json_text("{\"a\":1,\"_v\":4,\"_seq\":9,\"_createdAt\":5,\"_modifiedAt\":6}", 54,
                         &vals, &why);
    mdb_record recs[2] = {
        {MDB_REC_META, "e", 1, NULL, 0, NULL, mdb_val_at(&vals, 0), 1},
        {MDB_REC_INSERT, "e", 1, "k", 1, NULL, mdb_val_at(&vals, doc_off), 1},
    };
    CU_ASSERT_EQUAL(mdb_store_apply(s, recs, 2, &why), 0);
    snap k = get(s, "e", "k");
    CU_ASSERT_TRUE(k.found);
    CU_ASSERT_EQUAL(k.v, 4);
    CU_ASSERT_EQUAL(k.seq, 9);
    CU_ASSERT_EQUAL(k.created, 5);
    CU_ASSERT_STRING_EQUAL(k.json, "{\"a\":1}"); /* system fields are not in the body */
    /* A put into the expired collection drops it first: version restarts. */
    mdb_commit_result res;
    CU_ASSERT_EQUAL(put(s, "e", "k2", "{}", &res), 0);
    CU_ASSERT_TRUE(res.dropped);
    CU_ASSERT_FALSE(get(s, "e", "k").found);
    CU_ASSERT_EQUAL(get(s, "e", "k2").v, 1);
    mdb_read *r;
    CU_ASSERT_EQUAL(mdb_read_begin(s, "e", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->ttl_s, 60); /* the TTL itself survives */
    CU_ASSERT_TRUE(mdb_read_meta(r)->expires_at_ms > mdb_now_ms());
    mdb_read_end(r);
    /* mdb_write_expire does nothing while not expired. */
    mdb_write *w = mdb_write_begin(s, "e", 1);
    mdb_write_expire(w);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_FALSE(res.dropped);
    CU_ASSERT_TRUE(get(s, "e", "k2").found);
    mdb_buf_free(&vals);
    mdb_store_free(s);
}

static void test_max_size_fifo(void)
{
    mdb_store *s = mdb_store_new();
    mdb_write *w = mdb_write_begin(s, "m", 1);
    mdb_write_set_max_size(w, 3);
    mdb_write_commit(w, NULL, NULL, NULL);
    char key[8];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "k%d", i);
        put(s, "m", key, "{}", NULL);
    }
    put(s, "m", "k0", "{\"again\":1}", NULL); /* overwrite keeps its place */
    mdb_commit_result res;
    CU_ASSERT_EQUAL(put(s, "m", "k3", "{}", &res), 0);
    CU_ASSERT_EQUAL(res.evicted, 1);
    CU_ASSERT_FALSE(get(s, "m", "k0").found); /* oldest _seq, despite the overwrite */
    CU_ASSERT_EQUAL(count(s, "m"), 3);
    /* A batch larger than maxSize keeps its newest documents. */
    w = mdb_write_begin(s, "m", 1);
    json_object *e = J("{}");
    for (int i = 10; i < 15; i++) {
        snprintf(key, sizeof key, "n%d", i);
        mdb_write_put(w, key, strlen(key), e);
    }
    json_object_put(e);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_EQUAL(res.evicted, 5);
    CU_ASSERT_EQUAL(count(s, "m"), 3);
    CU_ASSERT_TRUE(get(s, "m", "n14").found);
    CU_ASSERT_TRUE(get(s, "m", "n12").found);
    CU_ASSERT_FALSE(get(s, "m", "n11").found);
    CU_ASSERT_FALSE(get(s, "m", "k3").found);
    mdb_store_free(s);
}

/* Issue 9: an eviction of a document the same batch overwrote logged a
 * DELETE whose key pointed into the old document, which applying the
 * overwrite freed (a use-after-free under ASan). The evicted key must stay
 * valid through apply and the commit hooks. */
static void test_evict_overwritten_in_same_batch(void)
{
    mdb_store *s = mdb_store_new();
    mdb_write *w = mdb_write_begin(s, "ev", 2);
    mdb_write_set_max_size(w, 1);
    json_object *e = J("{}");
    mdb_write_put(w, "a", 1, e);
    json_object_put(e);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    w = mdb_write_begin(s, "ev", 2);
    json_object *a = J("{\"v\":2}"), *b = J("{\"v\":3}");
    mdb_write_put(w, "a", 1, a);
    mdb_write_put(w, "b", 1, b);
    json_object_put(a);
    json_object_put(b);
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, NULL), 0);
    CU_ASSERT_EQUAL(res.overwritten, 1);
    CU_ASSERT_EQUAL(res.inserted, 1);
    CU_ASSERT_EQUAL(res.evicted, 1);
    /* 'a' keeps its older _seq through the overwrite, so it is the one evicted. */
    CU_ASSERT_FALSE(get(s, "ev", "a").found);
    CU_ASSERT_STRING_EQUAL(get(s, "ev", "b").json, "{\"v\":3}");
    CU_ASSERT_EQUAL(count(s, "ev"), 1);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 1);
    mdb_store_free(s);
}

static int collect_seq(const mdb_doc *d, void *ud)
{
    int64_t **p = ud;
    *(*p)++ = mdb_doc_seq(d);
    return 0;
}

static void test_scan_order(void)
{
    mdb_store *s = mdb_store_new();
    char key[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        put(s, "o", key, "{}", NULL);
    }
    mdb_write *w = mdb_write_begin(s, "o", 1);
    for (int i = 0; i < 50; i += 3) {
        snprintf(key, sizeof key, "k%02d", i);
        mdb_write_delete(w, key, strlen(key));
    }
    mdb_write_commit(w, NULL, NULL, NULL);
    int64_t seqs[64], *p = seqs;
    mdb_read *r;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(s, "o", 1, &r), 0);
    mdb_read_scan(r, true, collect_seq, &p);
    size_t n = (size_t)(p - seqs);
    CU_ASSERT_EQUAL(n, mdb_read_count(r));
    mdb_read_end(r);
    CU_ASSERT_EQUAL(n, 33);
    for (size_t i = 1; i < n; i++)
        CU_ASSERT_TRUE(seqs[i - 1] > seqs[i]); /* newest first, strictly */
    mdb_store_free(s);
}

static int count_records(const mdb_record *rec, void *ud)
{
    int *n = ud;
    n[rec->op]++;
    return 0;
}

static void test_freeze_and_replay_roundtrip(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "a", "x", "{\"v\":1}", NULL);
    put(s, "a", "y", "{\"v\":2}", NULL);
    mdb_write *w = mdb_write_begin(s, "b", 1);
    mdb_write_set_max_size(w, 10);
    const char *schema = "{\"type\":\"object\"}";
    mdb_write_set_schema(w, schema, strlen(schema));
    mdb_write_commit(w, NULL, NULL, NULL);
    put(s, "b", "z", "[1,2]", NULL); /* a non-object document */
    mdb_frozen *f;
    CU_ASSERT_EQUAL_FATAL(mdb_store_freeze(s, NULL, NULL, &f), 0);
    /* Writes after the freeze are not in the frozen view. */
    put(s, "a", "late", "{}", NULL);
    CU_ASSERT_EQUAL(mdb_frozen_doc_count(f), 3);
    int ops[8] = {0};
    mdb_frozen_each(f, count_records, ops);
    CU_ASSERT_EQUAL(ops[MDB_REC_INSERT], 3);
    CU_ASSERT_EQUAL(ops[MDB_REC_META], 1);
    CU_ASSERT_EQUAL(ops[MDB_REC_SCHEMA], 1);
    mdb_frozen_free(f);

    /* Render every record as JSON, reparse, apply to a new store. */
    CU_ASSERT_EQUAL_FATAL(mdb_store_freeze(s, NULL, NULL, &f), 0);
    mdb_store *s2 = mdb_store_new();
    typedef struct {
        mdb_store *dst;
        int fails;
    } ctx_t;
    ctx_t ctx = {s2, 0};
    int copy(const mdb_record *rec, void *ud);
    mdb_frozen_each(f, copy, &ctx);
    mdb_frozen_free(f);
    CU_ASSERT_EQUAL(ctx.fails, 0);
    snap x1 = get(s, "a", "x"), x2 = get(s2, "a", "x");
    CU_ASSERT_TRUE(x2.found);
    CU_ASSERT_EQUAL(x2.v, x1.v);
    CU_ASSERT_EQUAL(x2.seq, x1.seq);
    CU_ASSERT_EQUAL(x2.created, x1.created);
    CU_ASSERT_STRING_EQUAL(x2.json, x1.json);
    CU_ASSERT_STRING_EQUAL(get(s2, "b", "z").json, "[1,2]");
    mdb_read *r;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(s2, "b", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->max_size, 10);
    CU_ASSERT_STRING_EQUAL(mdb_read_meta(r)->schema, schema);
    mdb_read_end(r);
    /* The _seq counter continues after the highest replayed _seq. */
    put(s2, "a", "new", "{}", NULL);
    CU_ASSERT_EQUAL(get(s2, "a", "new").seq, get(s, "a", "late").seq + 1);
    mdb_store_free(s2);
    mdb_store_free(s);
}

int copy(const mdb_record *rec, void *ud)
{
    struct {
        mdb_store *dst;
        int fails;
    } *c = ud;
    mdb_buf text, enc;
    mdb_buf_init(&text);
    mdb_buf_init(&enc);
    mdb_record_value_json(rec, &text);
    const char *why;
    if (mdb_encode_json_text(text.data, text.len, &enc, &why) != 0)
        c->fails++;
    mdb_record r = *rec;
    r.doc = NULL;
    r.value = mdb_val_at(&enc, 0);
    if (mdb_store_apply(c->dst, &r, 1, &why) != 0)
        c->fails++;
    mdb_buf_free(&text);
    mdb_buf_free(&enc);
    return 0;
}

/* A storage service that replays every appended batch into another store,
 * as a restarted node or another node of a shared log would. */
typedef struct mirror {
    mdb_store *dst;
    int fails;
} mirror;

static int mirror_append(void *self, const mdb_record *recs, size_t n, uint64_t *ticket,
                         const char **why)
{
    mirror *m = self;
    *ticket = 0;
    for (size_t i = 0; i < n; i++)
        copy(&recs[i], m);
    (void)why;
    return 0;
}

static void test_seq_counter_survives_replay(void)
{
    mdb_store *s = mdb_store_new();
    mirror m = {mdb_store_new(), 0};
    const mdb_storage_service svc = {.size = sizeof svc, .append = mirror_append};
    core_store_attach(s, &svc, &m, false);
    put(s, "c", "a", "{}", NULL);              /* _seq 0 */
    put(s, "c", "b", "{}", NULL);              /* _seq 1 */
    put(s, "c", "a", "{\"x\":1}", NULL);       /* keeps 0, uses up 2 */
    put(s, "c", "c", "{}", NULL);              /* _seq 3 */
    put(s, "c", "b", "{\"x\":1}", NULL);       /* keeps 1, uses up 4 */
    mdb_write *w = mdb_write_begin(s, "c", 1); /* the newest document goes */
    mdb_write_delete(w, "c", 1);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    put(s, "d", "only", "{}", NULL); /* emptied below: the counter stays */
    put(s, "d", "only", "{}", NULL);
    w = mdb_write_begin(s, "d", 1);
    mdb_write_delete(w, "only", 4);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(m.fails, 0);
    /* A store rebuilt from a frozen view (a snapshot, a checkpoint). */
    mdb_frozen *f;
    CU_ASSERT_EQUAL_FATAL(mdb_store_freeze(s, NULL, NULL, &f), 0);
    mirror fromsnap = {mdb_store_new(), 0};
    mdb_frozen_each(f, copy, &fromsnap);
    mdb_frozen_free(f);
    CU_ASSERT_EQUAL(fromsnap.fails, 0);
    core_store_attach(s, NULL, NULL, false);
    mdb_store *all[] = {s, m.dst, fromsnap.dst};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(get(all[i], "c", "a").seq, 0);
        CU_ASSERT_EQUAL(get(all[i], "c", "b").seq, 1);
        CU_ASSERT_EQUAL(put(all[i], "c", "e", "{}", NULL), 0);
        CU_ASSERT_EQUAL(get(all[i], "c", "e").seq, 5);
        CU_ASSERT_EQUAL(put(all[i], "d", "again", "{}", NULL), 0);
        CU_ASSERT_EQUAL(get(all[i], "d", "again").seq, 2);
    }
    mdb_store_free(fromsnap.dst);
    mdb_store_free(m.dst);
    mdb_store_free(s);
}

static void test_uuid7(void)
{
    char prev[37] = "", cur[37];
    for (int i = 0; i < 5000; i++) {
        mdb_uuid7(cur);
        CU_ASSERT_EQUAL(strlen(cur), 36);
        CU_ASSERT_EQUAL(cur[8], '-');
        CU_ASSERT_EQUAL(cur[13], '-');
        CU_ASSERT_EQUAL(cur[14], '7');                   /* version */
        CU_ASSERT_TRUE(strchr("89ab", cur[19]) != NULL); /* variant */
        for (int k = 0; k < 36; k++)
            CU_ASSERT_TRUE(cur[k] == '-' || (cur[k] >= '0' && cur[k] <= '9') ||
                           (cur[k] >= 'a' && cur[k] <= 'f'));
        if (i)
            CU_ASSERT_TRUE(strcmp(prev, cur) < 0); /* strictly increasing */
        memcpy(prev, cur, sizeof cur);
    }
    /* The time prefix is the current unix time in ms. */
    char hexms[13];
    memcpy(hexms, cur, 8);
    memcpy(hexms + 8, cur + 9, 4);
    hexms[12] = 0;
    long long ms = strtoll(hexms, NULL, 16);
    CU_ASSERT_TRUE(llabs(ms - mdb_now_ms()) < 5000);
}

/* Many readers and writers at once: readers must always see whole batches
 * (every batch writes the same value to all 20 keys of a collection). */
typedef struct conc {
    mdb_store *s;
    int id;
    _Atomic int *stop;
    int torn;
    long reads;
} conc;

static void *writer(void *arg)
{
    conc *c = arg;
    char coll[8];
    snprintf(coll, sizeof coll, "w%d", c->id % 2);
    for (int round = 0; round < 300; round++) {
        mdb_write *w = mdb_write_begin(c->s, coll, strlen(coll));
        char doc[64], key[8];
        snprintf(doc, sizeof doc, "{\"round\":%d,\"writer\":%d}", round, c->id);
        json_object *j = json_tokener_parse(doc);
        for (int k = 0; k < 20; k++) {
            snprintf(key, sizeof key, "k%d", k);
            mdb_write_put(w, key, strlen(key), j);
        }
        json_object_put(j);
        if (mdb_write_commit(w, NULL, NULL, NULL) != 0)
            c->torn++;
    }
    return NULL;
}

static void *reader(void *arg)
{
    conc *c = arg;
    while (!atomic_load(c->stop)) {
        for (int cl = 0; cl < 2; cl++) {
            char coll[8];
            snprintf(coll, sizeof coll, "w%d", cl);
            mdb_read *r;
            if (mdb_read_begin(c->s, coll, strlen(coll), &r) != 0)
                continue;
            int64_t first_round = -1, first_writer = -1;
            for (int k = 0; k < 20; k++) {
                char key[8];
                snprintf(key, sizeof key, "k%d", k);
                const mdb_doc *d = mdb_read_get(r, key, strlen(key));
                if (!d) {
                    c->torn++;
                    continue;
                }
                mdb_val b = mdb_doc_body(d);
                int64_t round = mdb_val_int(mdb_val_member(b, "round", 5));
                int64_t wr = mdb_val_int(mdb_val_member(b, "writer", 6));
                if (first_round < 0) {
                    first_round = round;
                    first_writer = wr;
                } else if (round != first_round || wr != first_writer) {
                    c->torn++;
                }
            }
            mdb_read_end(r);
            c->reads++;
        }
    }
    return NULL;
}

static void test_concurrent_readers_writers(void)
{
    mdb_store *s = mdb_store_new();
    _Atomic int stop = 0;
    conc ws[4], rs[4];
    pthread_t wt[4], rt[4];
    for (int i = 0; i < 4; i++) {
        rs[i] = (conc){s, i, &stop, 0, 0};
        pthread_create(&rt[i], NULL, reader, &rs[i]);
    }
    for (int i = 0; i < 4; i++) {
        ws[i] = (conc){s, i, &stop, 0, 0};
        pthread_create(&wt[i], NULL, writer, &ws[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(wt[i], NULL);
    atomic_store(&stop, 1);
    long reads = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(rt[i], NULL);
        CU_ASSERT_EQUAL(rs[i].torn, 0);
        CU_ASSERT_EQUAL(ws[i].torn, 0);
        reads += rs[i].reads;
    }
    CU_ASSERT_TRUE(reads > 0);
    CU_ASSERT_EQUAL(count(s, "w0"), 20);
    CU_ASSERT_EQUAL(count(s, "w1"), 20);
    /* 2 writers x 300 rounds per collection: the last version is 600. */
    CU_ASSERT_EQUAL(get(s, "w0", "k0").v, 600);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 40);
    mdb_store_free(s);
}

static void test_doc_outlives_view(void)
{
    mdb_store *s = mdb_store_new();
    put(s, "c", "a", "{\"x\":\"keep me\"}", NULL);
    mdb_read *r;
    mdb_read_begin(s, "c", 1, &r);
    const mdb_doc *d = mdb_read_get(r, "a", 1);
    mdb_doc_ref(d);
    mdb_read_end(r);
    put(s, "c", "a", "{\"x\":\"new\"}", NULL); /* the store drops its reference */
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_doc_to_json_sys(d, &b);
    CU_ASSERT_TRUE(strstr(b.data, "\"x\":\"keep me\"") != NULL);
    CU_ASSERT_TRUE(strstr(b.data, "\"_v\":1") != NULL);
    CU_ASSERT_TRUE(strstr(b.data, "\"_seq\":0") != NULL);
    mdb_buf_free(&b);
    mdb_doc_unref(d);
    mdb_store_free(s);
}

static const mdb_test_def store_tests[] = {
    {"insert sets system fields", test_insert_system_fields},
    {"overwrite keeps _seq and _createdAt", test_overwrite_keeps_seq_and_created},
    {"patch is a shallow merge", test_patch_semantics},
    {"version guard is all or nothing", test_version_guard_is_all_or_nothing},
    {"delete and drop", test_delete_and_drop},
    {"TTL is set once and slides on puts", test_ttl_rules},
    {"expired collections", test_expired_collection},
    {"a huge TTL saturates", test_huge_ttl_saturates},
    {"maxSize evicts oldest _seq", test_max_size_fifo},
    {"evicting a document the batch overwrote", test_evict_overwritten_in_same_batch},
    {"scan order", test_scan_order},
    {"freeze and replay round trip", test_freeze_and_replay_roundtrip},
    {"the _seq counter survives replay", test_seq_counter_survives_replay},
    {"UUIDv7 format and order", test_uuid7},
    {"concurrent readers and writers", test_concurrent_readers_writers},
    {"documents outlive their view", test_doc_outlives_view},
    {NULL, NULL},
};

static const mdb_suite_def suites[] = {{"store", store_tests}, {NULL, NULL}};
MDB_CUNIT_MAIN(suites)
