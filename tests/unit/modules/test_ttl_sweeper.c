/*
 * Unit tests of the ttl-sweeper parts: the indexed min-heap, the TTL clock
 * rules of the real core store (mdb_store_new() + mdb_write_*), the commit
 * hook's reading of DROP/META records, and the sweeper thread driven
 * against a standalone store with expiries 100-300 ms away.
 *
 * A standalone store runs no hooks, so where the server would call the
 * commit hook the tests feed the sweeper what the hook would have seen.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ttl.h"

#include "mdb_cunit.h"

/* ---- helpers ---------------------------------------------------------------------- */
static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static const mdb_coll_meta *meta_of(mdb_store *s, const char *c, mdb_read **rv)
{
    if (mdb_read_begin(s, c, strlen(c), rv))
        return NULL;
    return mdb_read_meta(*rv);
}

/* A copy of a collection's metadata; false when it does not exist. */
static bool get_meta(mdb_store *s, const char *c, mdb_coll_meta *out, size_t *count)
{
    mdb_read *rv;
    const mdb_coll_meta *m = meta_of(s, c, &rv);
    if (!m)
        return false;
    *out = *m;
    out->schema = NULL; /* not valid past the view */
    if (count)
        *count = mdb_read_count(rv);
    mdb_read_end(rv);
    return true;
}

static size_t count_of(mdb_store *s, const char *c)
{
    mdb_coll_meta m;
    size_t n = 0;
    return get_meta(s, c, &m, &n) ? n : (size_t)-1;
}

static bool has_key(mdb_store *s, const char *c, const char *k)
{
    mdb_read *rv;
    if (mdb_read_begin(s, c, strlen(c), &rv))
        return false;
    bool r = mdb_read_get(rv, k, strlen(k)) != NULL;
    mdb_read_end(rv);
    return r;
}

/* Commit a write with puts of keys "<prefix><i>" for i in [from, to). */
static int put_range(mdb_store *s, const char *c, const char *prefix, int from, int to, int64_t ttl,
                     int64_t max_size, const char **why)
{
    mdb_write *w = mdb_write_begin(s, c, strlen(c));
    if (!w)
        return -ENOMEM;
    if (ttl >= 0)
        mdb_write_set_ttl(w, ttl);
    if (max_size > 0)
        mdb_write_set_max_size(w, max_size);
    for (int i = from; i < to; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s%d", prefix, i);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "i", json_object_new_int(i));
        mdb_write_put(w, key, strlen(key), o);
        json_object_put(o);
    }
    return mdb_write_commit(w, NULL, NULL, why);
}

/* Replay-style records, to give a collection an expiry in milliseconds
 * (the HTTP API only speaks seconds). */
static int seed_with_expiry(mdb_store *s, const char *c, int ndocs, int64_t ttl_s, int64_t exp_ms,
                            int64_t max_size)
{
    mdb_buf b;
    mdb_buf_init(&b);
    size_t n = (size_t)ndocs + 1;
    mdb_record *recs = calloc(n, sizeof *recs);
    size_t *off = calloc(n, sizeof *off);
    char(*keys)[32] = calloc(n, sizeof *keys);
    if (!recs || !off || !keys) {
        free(recs);
        free(off);
        free(keys);
        return -ENOMEM;
    }
    int64_t now = mdb_now_ms();
    for (int i = 0; i < ndocs; i++) {
        snprintf(keys[i], sizeof keys[i], "d%d", i);
        char js[160];
        snprintf(js, sizeof js,
                 "{\"i\":%d,\"_v\":1,\"_seq\":%d,\"_createdAt\":%lld,\"_modifiedAt\":%lld}", i, i,
                 (long long)now, (long long)now);
        off[i] = b.len;
        mdb_encode_json_text(js, strlen(js), &b, NULL);
        recs[i] = (mdb_record){.op = MDB_REC_INSERT,
                               .collection = c,
                               .collection_len = strlen(c),
                               .key = keys[i],
                               .key_len = strlen(keys[i]),
                               .ts_ms = now};
    }
    char js[160];
    snprintf(js, sizeof js, "{\"ttl\":%lld,\"expiresAt\":%lld,\"maxSize\":%lld}", (long long)ttl_s,
             (long long)exp_ms, (long long)max_size);
    off[ndocs] = b.len;
    mdb_encode_json_text(js, strlen(js), &b, NULL);
    recs[ndocs] = (mdb_record){
        .op = MDB_REC_META, .collection = c, .collection_len = strlen(c), .ts_ms = now};
    for (size_t i = 0; i < n; i++)
        recs[i].value = mdb_val_at(&b, off[i]);
    const char *why = NULL;
    int rc = b.oom ? -ENOMEM : mdb_store_apply(s, recs, n, &why);
    mdb_buf_free(&b);
    free(recs);
    free(off);
    free(keys);
    return rc;
}

/* ---- heap ------------------------------------------------------------------------------ */
static void t_heap_push_pop_order(void)
{
    ttl_heap h;
    ttl_heap_init(&h);
    const int64_t at[] = {50, 10, 40, 30, 20, 60, 5};
    char name[8];
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof name, "c%d", i);
        CU_ASSERT_EQUAL_FATAL(ttl_heap_set(&h, name, strlen(name), at[i]), 0);
    }
    CU_ASSERT_EQUAL(ttl_heap_size(&h), 7);
    CU_ASSERT_EQUAL(ttl_heap_peek(&h)->at, 5);
    CU_ASSERT_STRING_EQUAL(ttl_heap_peek(&h)->name, "c6");
    const int64_t want[] = {5, 10, 20, 30, 40, 50, 60};
    const char *names[] = {"c6", "c1", "c4", "c3", "c2", "c0", "c5"};
    for (int i = 0; i < 7; i++) {
        ttl_heap_ent *e = ttl_heap_pop(&h);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        CU_ASSERT_EQUAL(e->at, want[i]);
        CU_ASSERT_STRING_EQUAL(e->name, names[i]);
        CU_ASSERT_PTR_NULL(ttl_heap_find(&h, e->name, e->nlen));
        free(e);
    }
    CU_ASSERT_PTR_NULL(ttl_heap_pop(&h));
    CU_ASSERT_PTR_NULL(ttl_heap_peek(&h));
    ttl_heap_free(&h);
}

static void t_heap_update_and_remove(void)
{
    ttl_heap h;
    ttl_heap_init(&h);
    ttl_heap_set(&h, "a", 1, 100);
    ttl_heap_set(&h, "b", 1, 200);
    ttl_heap_set(&h, "c", 1, 300);
    /* decrease: c becomes the earliest */
    ttl_heap_set(&h, "c", 1, 50);
    CU_ASSERT_STRING_EQUAL(ttl_heap_peek(&h)->name, "c");
    CU_ASSERT_EQUAL(ttl_heap_size(&h), 3); /* updated, not duplicated */
    /* increase: c goes last, a is first again */
    ttl_heap_set(&h, "c", 1, 500);
    CU_ASSERT_STRING_EQUAL(ttl_heap_peek(&h)->name, "a");
    CU_ASSERT_EQUAL(ttl_heap_find(&h, "c", 1)->at, 500);
    /* names are compared whole, with their length */
    ttl_heap_set(&h, "ab", 2, 1);
    CU_ASSERT_EQUAL(ttl_heap_find(&h, "a", 1)->at, 100);
    CU_ASSERT_EQUAL(ttl_heap_find(&h, "ab", 2)->at, 1);
    CU_ASSERT_PTR_NULL(ttl_heap_find(&h, "abc", 3));
    /* remove the top and a middle entry */
    CU_ASSERT_TRUE(ttl_heap_remove(&h, "ab", 2));
    CU_ASSERT_FALSE(ttl_heap_remove(&h, "ab", 2));
    CU_ASSERT_TRUE(ttl_heap_remove(&h, "b", 1));
    CU_ASSERT_FALSE(ttl_heap_remove(&h, "zz", 2));
    CU_ASSERT_EQUAL(ttl_heap_size(&h), 2);
    ttl_heap_ent *e = ttl_heap_pop(&h);
    CU_ASSERT_STRING_EQUAL(e->name, "a");
    free(e);
    e = ttl_heap_pop(&h);
    CU_ASSERT_STRING_EQUAL(e->name, "c");
    CU_ASSERT_EQUAL(e->at, 500);
    free(e);
    CU_ASSERT_EQUAL(ttl_heap_size(&h), 0);
    /* equal keys all come out */
    for (int i = 0; i < 40; i++) {
        char n[8];
        snprintf(n, sizeof n, "e%d", i);
        ttl_heap_set(&h, n, strlen(n), 7);
    }
    int popped = 0;
    while ((e = ttl_heap_pop(&h))) {
        CU_ASSERT_EQUAL(e->at, 7);
        free(e);
        popped++;
    }
    CU_ASSERT_EQUAL(popped, 40);
    ttl_heap_free(&h);
}

/* Check the heap property and the position back-links. */
static bool heap_ok(const ttl_heap *h)
{
    for (size_t i = 0; i < h->n; i++) {
        if (h->a[i]->pos != i)
            return false;
        if (i && h->a[(i - 1) / 2]->at > h->a[i]->at)
            return false;
    }
    return true;
}

#define NREF 300
static void t_heap_random_vs_reference(void)
{
    /* reference: ref[i] = expiry of collection i, or -1 when absent */
    int64_t ref[NREF];
    for (int i = 0; i < NREF; i++)
        ref[i] = -1;
    ttl_heap h;
    ttl_heap_init(&h);
    unsigned seed = 12345;
    size_t live = 0;
    bool ok = true;
    for (int op = 0; op < 10000 && ok; op++) {
        unsigned r = (unsigned)rand_r(&seed);
        int id = (int)(r % NREF);
        char name[16];
        snprintf(name, sizeof name, "coll-%d", id);
        unsigned kind = (r >> 12) % 10;
        if (kind < 5) { /* set (insert, increase, or decrease) */
            int64_t at = (int64_t)(rand_r(&seed) % 100000);
            CU_ASSERT_EQUAL_FATAL(ttl_heap_set(&h, name, strlen(name), at), 0);
            if (ref[id] < 0)
                live++;
            ref[id] = at;
        } else if (kind < 8) { /* remove */
            bool had = ref[id] >= 0;
            if (ttl_heap_remove(&h, name, strlen(name)) != had)
                ok = false;
            if (had)
                live--;
            ref[id] = -1;
        } else if (live) { /* pop: must be a minimum of the reference */
            ttl_heap_ent *e = ttl_heap_pop(&h);
            int eid = -1;
            if (!e || sscanf(e->name, "coll-%d", &eid) != 1 || eid < 0 || eid >= NREF ||
                ref[eid] != e->at)
                ok = false;
            for (int i = 0; ok && i < NREF; i++)
                if (ref[i] >= 0 && ref[i] < e->at)
                    ok = false;
            if (e && eid >= 0 && eid < NREF)
                ref[eid] = -1;
            live--;
            free(e);
        }
        if (ttl_heap_size(&h) != live || !heap_ok(&h))
            ok = false;
        if (ok && live) { /* peek is a minimum */
            int64_t min = INT64_MAX;
            for (int i = 0; i < NREF; i++)
                if (ref[i] >= 0 && ref[i] < min)
                    min = ref[i];
            if (ttl_heap_peek(&h)->at != min)
                ok = false;
        }
    }
    CU_ASSERT_TRUE(ok);
    /* every remaining entry is findable with its value, then drains sorted */
    for (int i = 0; i < NREF; i++) {
        char name[16];
        snprintf(name, sizeof name, "coll-%d", i);
        const ttl_heap_ent *e = ttl_heap_find(&h, name, strlen(name));
        CU_ASSERT_EQUAL(e ? e->at : -1, ref[i]);
    }
    int64_t prev = INT64_MIN;
    size_t drained = 0;
    ttl_heap_ent *e;
    while ((e = ttl_heap_pop(&h))) {
        CU_ASSERT_TRUE(e->at >= prev);
        prev = e->at;
        drained++;
        free(e);
    }
    CU_ASSERT_EQUAL(drained, live);
    ttl_heap_free(&h);
}

/* ---- the store's clock rules -------------------------------------------------------------- */
static void t_clock_set_once(void)
{
    mdb_store *s = mdb_store_new();
    const char *why = NULL;
    /* registering alone creates the collection's metadata, clock not running */
    mdb_write *w = mdb_write_begin(s, "c", 1);
    mdb_write_set_ttl(w, 60);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), 0);
    mdb_coll_meta m;
    CU_ASSERT_TRUE_FATAL(get_meta(s, "c", &m, NULL));
    CU_ASSERT_EQUAL(m.ttl_s, 60);
    CU_ASSERT_EQUAL(m.expires_at_ms, 0);
    /* the same value again is fine */
    w = mdb_write_begin(s, "c", 1);
    mdb_write_set_ttl(w, 60);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), 0);
    /* another value is refused with a message naming collection and TTL */
    w = mdb_write_begin(s, "c", 1);
    mdb_write_set_ttl(w, 61);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), -EEXIST);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'c'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "60"));
    /* a refused batch applies nothing, documents included */
    CU_ASSERT_EQUAL(put_range(s, "c", "k", 0, 3, 99, 0, &why), -EEXIST);
    CU_ASSERT_EQUAL(count_of(s, "c"), 0);
    CU_ASSERT_TRUE(get_meta(s, "c", &m, NULL));
    CU_ASSERT_EQUAL(m.ttl_s, 60);
    mdb_store_free(s);
}

static void t_clock_reset_on_put_not_patch(void)
{
    mdb_store *s = mdb_store_new();
    const char *why = NULL;
    int64_t t0 = mdb_now_ms();
    CU_ASSERT_EQUAL_FATAL(put_range(s, "c", "k", 0, 3, 10, 0, &why), 0);
    int64_t t1 = mdb_now_ms();
    mdb_coll_meta m;
    CU_ASSERT_TRUE_FATAL(get_meta(s, "c", &m, NULL));
    CU_ASSERT_TRUE(m.expires_at_ms >= t0 + 10000 && m.expires_at_ms <= t1 + 10000);
    int64_t first = m.expires_at_ms;

    sleep_ms(30);
    /* a patch does not move the clock */
    json_object *p = json_tokener_parse("{\"x\":1}");
    mdb_write *w = mdb_write_begin(s, "c", 1);
    mdb_write_patch(w, "k1", 2, p, -1);
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), 0);
    CU_ASSERT_EQUAL(res.updated, 1);
    json_object_put(p);
    CU_ASSERT_TRUE(get_meta(s, "c", &m, NULL));
    CU_ASSERT_EQUAL(m.expires_at_ms, first);
    /* nor a delete */
    w = mdb_write_begin(s, "c", 1);
    mdb_write_delete(w, "k2", 2);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), 0);
    CU_ASSERT_TRUE(get_meta(s, "c", &m, NULL));
    CU_ASSERT_EQUAL(m.expires_at_ms, first);
    /* a put does: now + ttl, at the end of the batch (also an overwrite) */
    int64_t t2 = mdb_now_ms();
    CU_ASSERT_EQUAL(put_range(s, "c", "k", 0, 1, -1, 0, &why), 0);
    CU_ASSERT_TRUE(get_meta(s, "c", &m, NULL));
    CU_ASSERT_TRUE(m.expires_at_ms >= t2 + 10000);
    CU_ASSERT_TRUE(m.expires_at_ms > first);
    mdb_store_free(s);
}

static void t_clock_expire_keeps_meta(void)
{
    mdb_store *s = mdb_store_new();
    const char *why = NULL;
    /* not expired: mdb_write_expire does nothing */
    CU_ASSERT_EQUAL_FATAL(put_range(s, "c", "k", 0, 4, 10, 3, &why), 0);
    CU_ASSERT_EQUAL(count_of(s, "c"), 3); /* maxSize 3 evicted one */
    mdb_write *w = mdb_write_begin(s, "c", 1);
    mdb_write_expire(w);
    mdb_commit_result res;
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), 0);
    CU_ASSERT_FALSE(res.dropped);
    CU_ASSERT_EQUAL(count_of(s, "c"), 3);

    /* expired: documents dropped, ttl / maxSize / schema kept, clock stopped */
    int64_t past = mdb_now_ms() - 1000;
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "e", 5, 7, past, 9), 0);
    w = mdb_write_begin(s, "e", 1);
    mdb_write_set_schema(w, "{\"type\":\"object\"}", 17);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), 0);
    CU_ASSERT_EQUAL(count_of(s, "e"), 5);
    w = mdb_write_begin(s, "e", 1);
    mdb_write_expire(w);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), 0);
    CU_ASSERT_TRUE(res.dropped);
    mdb_coll_meta m;
    size_t n = 99;
    mdb_read *rv;
    const mdb_coll_meta *mp = meta_of(s, "e", &rv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mp);
    CU_ASSERT_PTR_NOT_NULL(mp->schema);
    mdb_read_end(rv);
    CU_ASSERT_TRUE_FATAL(get_meta(s, "e", &m, &n));
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(m.ttl_s, 7);
    CU_ASSERT_EQUAL(m.max_size, 9);
    CU_ASSERT_EQUAL(m.expires_at_ms, 0);
    /* TTL still set once after the expiry */
    w = mdb_write_begin(s, "e", 1);
    mdb_write_set_ttl(w, 8);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), -EEXIST);
    /* a new put restarts the clock and _v/_seq */
    CU_ASSERT_EQUAL(put_range(s, "e", "n", 0, 1, -1, 0, &why), 0);
    CU_ASSERT_TRUE(get_meta(s, "e", &m, &n));
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_TRUE(m.expires_at_ms > mdb_now_ms());
    mdb_store_free(s);
}

static void t_clock_put_into_expired_drops_first(void)
{
    mdb_store *s = mdb_store_new();
    const char *why = NULL;
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "c", 4, 5, mdb_now_ms() - 10, 0), 0);
    CU_ASSERT_EQUAL_FATAL(put_range(s, "c", "new", 0, 1, -1, 0, &why), 0);
    CU_ASSERT_EQUAL(count_of(s, "c"), 1);
    CU_ASSERT_FALSE(has_key(s, "c", "d0"));
    mdb_read *rv;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(s, "c", 1, &rv), 0);
    const mdb_doc *d = mdb_read_get(rv, "new0", 4);
    CU_ASSERT_PTR_NOT_NULL(d);
    if (d) {
        CU_ASSERT_EQUAL(mdb_doc_version(d), 1);
        CU_ASSERT_EQUAL(mdb_doc_seq(d), 0);
    }
    mdb_read_end(rv);
    mdb_store_free(s);
}

static void t_maxsize_fifo_and_overwrite(void)
{
    mdb_store *s = mdb_store_new();
    const char *why = NULL;
    mdb_write *w = mdb_write_begin(s, "c", 1);
    mdb_write_set_max_size(w, 3);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, &why), 0);
    CU_ASSERT_EQUAL(put_range(s, "c", "k", 0, 3, -1, 0, &why), 0); /* k0 k1 k2 */
    /* overwriting k0 keeps its _seq: it is still the oldest */
    CU_ASSERT_EQUAL(put_range(s, "c", "k", 0, 1, -1, 0, &why), 0);
    CU_ASSERT_EQUAL(count_of(s, "c"), 3);
    mdb_commit_result res;
    w = mdb_write_begin(s, "c", 1);
    json_object *o = json_object_new_object();
    mdb_write_put(w, "k3", 2, o);
    json_object_put(o);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, &res, &why), 0);
    CU_ASSERT_EQUAL(res.inserted, 1);
    CU_ASSERT_EQUAL(res.evicted, 1);
    CU_ASSERT_FALSE(has_key(s, "c", "k0"));
    CU_ASSERT_TRUE(has_key(s, "c", "k1") && has_key(s, "c", "k2") && has_key(s, "c", "k3"));
    /* a batch bigger than the cap keeps exactly its newest maxSize */
    CU_ASSERT_EQUAL(put_range(s, "c", "b", 0, 5, -1, 0, &why), 0);
    CU_ASSERT_EQUAL(count_of(s, "c"), 3);
    CU_ASSERT_TRUE(has_key(s, "c", "b2") && has_key(s, "c", "b3") && has_key(s, "c", "b4"));
    CU_ASSERT_FALSE(has_key(s, "c", "k3"));
    mdb_store_free(s);
}

/* ---- the commit hook's reading of records --------------------------------------------- */
static void t_hook_records(void)
{
    mdb_store *s = mdb_store_new();
    ttl_sweeper sw;
    CU_ASSERT_EQUAL_FATAL(ttl_init(&sw, s, NULL), 0);
    mdb_buf b;
    mdb_buf_init(&b);
    const char *js = "{\"ttl\":5,\"expiresAt\":123456,\"maxSize\":0}";
    mdb_encode_json_text(js, strlen(js), &b, NULL);
    size_t off0 = b.len;
    js = "{\"ttl\":5,\"expiresAt\":0,\"maxSize\":0}";
    mdb_encode_json_text(js, strlen(js), &b, NULL);
    mdb_record meta = {.op = MDB_REC_META, .collection = "c", .collection_len = 1};
    meta.value = mdb_val_at(&b, 0);
    mdb_record meta0 = meta;
    meta0.value = mdb_val_at(&b, off0);
    mdb_record drop = {.op = MDB_REC_DROP, .collection = "c", .collection_len = 1};
    mdb_record ins = {
        .op = MDB_REC_INSERT, .collection = "c", .collection_len = 1, .key = "k", .key_len = 1};

    /* META with a clock schedules */
    ttl_on_commit(&(mdb_commit_event){"c", &meta, 1}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 1);
    CU_ASSERT_EQUAL(ttl_heap_find(&sw.heap, "c", 1)->at, 123456);
    /* records without DROP/META leave the schedule alone */
    ttl_on_commit(&(mdb_commit_event){"c", &ins, 1}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 1);
    /* an expiry: DROP then META with expiresAt 0 forgets */
    mdb_record expire[] = {drop, meta0};
    ttl_on_commit(&(mdb_commit_event){"c", expire, 2}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 0);
    /* a put into an expired collection: DROP, INSERT, META(new clock) schedules */
    mdb_record put_after[] = {drop, ins, meta};
    ttl_on_commit(&(mdb_commit_event){"c", put_after, 3}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 1);
    /* an explicit drop (no META) forgets */
    ttl_on_commit(&(mdb_commit_event){"c", &drop, 1}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 0);
    /* other collections are independent */
    ttl_on_commit(&(mdb_commit_event){"c", &meta, 1}, &sw);
    mdb_record meta_d = meta;
    meta_d.collection = "d";
    ttl_on_commit(&(mdb_commit_event){"d", &meta_d, 1}, &sw);
    ttl_on_commit(&(mdb_commit_event){"c", &drop, 1}, &sw);
    CU_ASSERT_EQUAL(ttl_heap_size(&sw.heap), 1);
    CU_ASSERT_PTR_NOT_NULL(ttl_heap_find(&sw.heap, "d", 1));
    mdb_buf_free(&b);
    ttl_destroy(&sw);
    mdb_store_free(s);
}

/* ---- the sweeper thread -------------------------------------------------------------------- */
/* Wait until the collection has `want` documents; returns the ms waited or -1. */
static int64_t wait_count(mdb_store *s, const char *c, size_t want, int64_t max_ms)
{
    int64_t t0 = mdb_now_ms();
    while (mdb_now_ms() - t0 <= max_ms) {
        if (count_of(s, c) == want)
            return mdb_now_ms() - t0;
        sleep_ms(5);
    }
    return -1;
}

static void t_thread_idle_then_expire(void)
{
    mdb_store *s = mdb_store_new();
    ttl_sweeper sw;
    CU_ASSERT_EQUAL_FATAL(ttl_init(&sw, s, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ttl_load(&sw), 0);
    CU_ASSERT_EQUAL_FATAL(ttl_start(&sw), 0);
    /* nothing scheduled: no wake-ups at all */
    sleep_ms(250);
    ttl_stats st;
    ttl_get_stats(&sw, &st);
    CU_ASSERT_EQUAL(st.wakeups, 0);
    CU_ASSERT_EQUAL(st.pending, 0);

    /* a collection expiring in 200 ms is dropped then, not before */
    int64_t exp = mdb_now_ms() + 200;
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "c", 50, 1, exp, 0), 0);
    ttl_note(&sw, "c", 1, exp); /* what the commit hook does */
    sleep_ms(120);
    int64_t t = mdb_now_ms();
    size_t n = count_of(s, "c");
    if (t < exp - 20) /* not before the expiry (unless this machine stalled us) */
        CU_ASSERT_EQUAL(n, 50);
    int64_t waited = wait_count(s, "c", 0, 1000);
    CU_ASSERT_TRUE(waited >= 0);
    int64_t late = mdb_now_ms() - exp;
    CU_ASSERT_TRUE(late >= 0 && late < 300);
    mdb_coll_meta m;
    CU_ASSERT_TRUE(get_meta(s, "c", &m, NULL));
    CU_ASSERT_EQUAL(m.ttl_s, 1);
    CU_ASSERT_EQUAL(m.expires_at_ms, 0);
    sleep_ms(20);
    ttl_get_stats(&sw, &st);
    CU_ASSERT_EQUAL(st.sweeps, 1);
    CU_ASSERT_EQUAL(st.dropped, 50);
    CU_ASSERT_EQUAL(st.pending, 0);
    /* one wake-up for the signal, one for the deadline (plus rare spurious ones) */
    CU_ASSERT_TRUE(st.wakeups >= 1 && st.wakeups <= 4);
    /* idle again: no more wake-ups */
    uint64_t w0 = st.wakeups;
    sleep_ms(200);
    ttl_get_stats(&sw, &st);
    CU_ASSERT_EQUAL(st.wakeups, w0);
    ttl_stop(&sw);
    ttl_destroy(&sw);
    mdb_store_free(s);
}

static void t_thread_requeues_slid_clock(void)
{
    mdb_store *s = mdb_store_new();
    ttl_sweeper sw;
    CU_ASSERT_EQUAL_FATAL(ttl_init(&sw, s, NULL), 0);
    int64_t now = mdb_now_ms();
    /* the schedule says +100 ms but the store's clock slid to +300 ms */
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "c", 10, 1, now + 300, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ttl_start(&sw), 0);
    ttl_note(&sw, "c", 1, now + 100);
    /* On a crowded host the thread may wake only after +300 and drop at
     * once, never re-queuing: check the re-queue only when it was seen. */
    ttl_stats st;
    bool seen = false;
    while (mdb_now_ms() < now + 280) {
        ttl_get_stats(&sw, &st);
        if (st.requeues == 1) {
            seen = true;
            CU_ASSERT_EQUAL(st.pending, 1);
            CU_ASSERT_EQUAL(st.next_ms, now + 300);
            if (mdb_now_ms() < now + 290)
                CU_ASSERT_EQUAL(count_of(s, "c"), 10);
            break;
        }
        sleep_ms(5);
    }
    CU_ASSERT_TRUE(wait_count(s, "c", 0, 1000) >= 0);
    CU_ASSERT_TRUE(mdb_now_ms() >= now + 300);
    ttl_get_stats(&sw, &st);
    CU_ASSERT_TRUE(seen ? st.requeues == 1 : st.requeues <= 1);
    /* several collections come due in expiry order */
    int64_t t = mdb_now_ms();
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "late", 3, 1, t + 250, 0), 0);
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "early", 3, 1, t + 100, 0), 0);
    ttl_note(&sw, "late", 4, t + 250);
    ttl_note(&sw, "early", 5, t + 100);
    CU_ASSERT_TRUE(wait_count(s, "early", 0, 1000) >= 0);
    if (mdb_now_ms() < t + 230)
        CU_ASSERT_EQUAL(count_of(s, "late"), 3);
    CU_ASSERT_TRUE(wait_count(s, "late", 0, 1000) >= 0);
    CU_ASSERT_TRUE(mdb_now_ms() >= t + 250);
    /* a collection dropped meanwhile is simply forgotten */
    t = mdb_now_ms();
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "gone", 3, 1, t + 100, 0), 0);
    ttl_note(&sw, "gone", 4, t + 100);
    mdb_write *w = mdb_write_begin(s, "gone", 4);
    mdb_write_drop(w);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    sleep_ms(200);
    ttl_get_stats(&sw, &st);
    CU_ASSERT_EQUAL(st.sweeps, 3);
    CU_ASSERT_EQUAL(st.pending, 0);
    ttl_stop(&sw);
    ttl_destroy(&sw);
    mdb_store_free(s);
}

static void t_load_drops_expired_at_startup(void)
{
    mdb_store *s = mdb_store_new();
    int64_t now = mdb_now_ms();
    /* as replayed after downtime: one expired, one running, one without clock */
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "old", 20, 2, now - 5000, 4), 0);
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "fresh", 2, 60, now + 60000, 0), 0);
    CU_ASSERT_EQUAL_FATAL(seed_with_expiry(s, "plain", 2, 0, 0, 0), 0);
    ttl_sweeper sw;
    CU_ASSERT_EQUAL_FATAL(ttl_init(&sw, s, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ttl_load(&sw), 0);
    /* synchronously: before any thread runs */
    /* expired during downtime: gone whole, metadata included (README "How it works") */
    mdb_read *rv;
    CU_ASSERT_EQUAL(mdb_read_begin(s, "old", 3, &rv), -ENOENT);
    CU_ASSERT_EQUAL(count_of(s, "fresh"), 2);
    CU_ASSERT_EQUAL(count_of(s, "plain"), 2);
    ttl_stats st;
    ttl_get_stats(&sw, &st);
    CU_ASSERT_EQUAL(st.sweeps, 1);
    CU_ASSERT_EQUAL(st.pending, 1);
    CU_ASSERT_EQUAL(st.next_ms, now + 60000);
    /* stop joins promptly while the thread sleeps a minute */
    CU_ASSERT_EQUAL_FATAL(ttl_start(&sw), 0);
    sleep_ms(50);
    int64_t t0 = mdb_now_ms();
    ttl_stop(&sw);
    CU_ASSERT_TRUE(mdb_now_ms() - t0 < 500);
    ttl_destroy(&sw);
    mdb_store_free(s);
}

static void t_stop_while_idle(void)
{
    mdb_store *s = mdb_store_new();
    ttl_sweeper sw;
    CU_ASSERT_EQUAL_FATAL(ttl_init(&sw, s, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ttl_start(&sw), 0);
    sleep_ms(30);
    int64_t t0 = mdb_now_ms();
    ttl_stop(&sw);
    CU_ASSERT_TRUE(mdb_now_ms() - t0 < 500);
    ttl_stop(&sw); /* idempotent */
    ttl_destroy(&sw);
    mdb_store_free(s);
}

static const mdb_test_def heap_tests[] = {
    {"push/pop order", t_heap_push_pop_order},
    {"update (decrease, increase) and remove", t_heap_update_and_remove},
    {"10000 random ops against a reference", t_heap_random_vs_reference},
    {NULL, NULL}};
static const mdb_test_def clock_tests[] = {
    {"TTL is set once (-EEXIST on change)", t_clock_set_once},
    {"clock resets on put, not on patch or delete", t_clock_reset_on_put_not_patch},
    {"expire drops documents, keeps ttl/maxSize/schema", t_clock_expire_keeps_meta},
    {"put into an expired collection drops it first", t_clock_put_into_expired_drops_first},
    {"maxSize FIFO by _seq, overwrite keeps _seq", t_maxsize_fifo_and_overwrite},
    {NULL, NULL}};
static const mdb_test_def sweeper_tests[] = {
    {"commit hook reads DROP/META", t_hook_records},
    {"idle thread never wakes; expires on time", t_thread_idle_then_expire},
    {"slid clock is re-queued; order; dropped forgotten", t_thread_requeues_slid_clock},
    {"startup drops what expired during downtime", t_load_drops_expired_at_startup},
    {"stop while idle", t_stop_while_idle},
    {NULL, NULL}};
static const mdb_suite_def mdb_suites[] = {{"ttl heap", heap_tests},
                                           {"ttl clock rules (core store)", clock_tests},
                                           {"ttl sweeper", sweeper_tests},
                                           {NULL, NULL}};

MDB_CUNIT_MAIN(mdb_suites)
