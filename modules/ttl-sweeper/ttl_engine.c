/*
 * ttl-sweeper: the sweeper: one thread, the heap of ttl_heap.c, and the
 * commit-hook logic that keeps the heap in step with the store.
 *
 * Who knows what:
 *   - the store owns the truth (mdb_coll_meta.expires_at_ms) and applies
 *     every TTL rule at commit time (clock reset on puts, expire-on-put,
 *     mdb_write_expire() re-checking the clock under the commit lock);
 *   - the heap is only a schedule of when to look. An entry that went stale
 *     (the clock slid, the collection was dropped) costs at most one early
 *     wake-up: when an entry is due the thread re-reads the collection's
 *     current expiry and re-queues, forgets, or expires it.
 *
 * Clock: expiries are wall-clock unix ms (mdb_now_ms(), CLOCK_REALTIME), so
 * the thread sleeps with pthread_cond_timedwait() on the condition
 * variable's default clock, CLOCK_REALTIME, with the expiry itself as the
 * absolute deadline. When the wall clock is stepped, the kernel re-evaluates
 * the deadline against the new time, so the wake-up still lands on the
 * wall-clock expiry the store compares against. (A CLOCK_MONOTONIC deadline
 * would need a conversion that a clock step silently invalidates.)
 *
 * Wake-ups: with an empty heap the thread waits without a timeout (zero
 * wake-ups while no collection has a running TTL clock). A hook signals the
 * thread only when an entry became due earlier than the deadline the thread
 * sleeps on; a clock that slid later is noticed at the old deadline (one
 * wake-up per stale deadline, then the thread sleeps again).
 *
 * Locks: sw->mu guards the heap, the counters and the thread's state. The
 * commit hook takes it under the store's commit lock, so the thread never
 * holds sw->mu while reading or writing the store.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <moltendb/module.h>

#include "ttl.h"

#define TTL_RETRY_MIN_MS 1000  /* first retry after a failed expire commit */
#define TTL_RETRY_MAX_MS 60000 /* longest back-off (storage read-only) */
#define TTL_TRIM_MIN_DOCS 1024 /* sweeps at least this big return memory to the OS */
#define TTL_AWAKE INT64_MIN    /* wait_until while the thread is not sleeping */
#define TTL_FOREVER INT64_MAX  /* wait_until while sleeping without timeout */

int ttl_init(ttl_sweeper *sw, mdb_store *store, const mdb_ctx *ctx)
{
    memset(sw, 0, sizeof *sw);
    ttl_heap_init(&sw->heap);
    sw->store = store;
    sw->ctx = ctx;
    sw->trim = true;
    sw->wait_until = TTL_AWAKE;
    sw->retry_ms = TTL_RETRY_MIN_MS;
    if (pthread_mutex_init(&sw->mu, NULL))
        return -ENOMEM;
    /* default attributes: the condition's clock is CLOCK_REALTIME (see top) */
    if (pthread_cond_init(&sw->cv, NULL)) {
        pthread_mutex_destroy(&sw->mu);
        return -ENOMEM;
    }
    return 0;
}

void ttl_destroy(ttl_sweeper *sw)
{
    ttl_heap_free(&sw->heap);
    pthread_cond_destroy(&sw->cv);
    pthread_mutex_destroy(&sw->mu);
}

/* Caller holds mu: wake the thread if the schedule now needs it sooner. */
static void ttl_kick_locked(ttl_sweeper *sw)
{
    const ttl_heap_ent *top = ttl_heap_peek(&sw->heap);
    if (top && top->at < sw->wait_until)
        pthread_cond_signal(&sw->cv);
}

/* Schedule (at > 0) or forget (at == 0) a collection. */
void ttl_note(ttl_sweeper *sw, const char *name, size_t nlen, int64_t at)
{
    pthread_mutex_lock(&sw->mu);
    if (at > 0) {
        if (ttl_heap_set(&sw->heap, name, nlen, at))
            /* lazy eviction still answers 404; the next META retries */
            mdb_log(sw->ctx, MDB_LOG_WARN, "out of memory: collection '%s' not scheduled", name);
        else
            ttl_kick_locked(sw);
    } else {
        ttl_heap_remove(&sw->heap, name, nlen);
    }
    pthread_mutex_unlock(&sw->mu);
}

/* The commit hook. Runs under the commit lock: only touches the heap.
 * The last DROP/META of the batch decides (records come in order: an expiry
 * logs DROP then META with expiresAt 0; a put into an expired collection
 * logs DROP ... META with the new clock), so the scan goes backwards and
 * usually stops at the last record. */
void ttl_on_commit(const mdb_commit_event *ev, void *ud)
{
    ttl_sweeper *sw = ud;
    int64_t at = -1; /* -1: the batch did not touch the schedule */
    size_t nlen = ev->nrecords ? ev->records[0].collection_len : strlen(ev->collection);
    for (size_t i = ev->nrecords; i-- > 0 && at < 0;) {
        const mdb_record *rec = &ev->records[i];
        if (rec->op == MDB_REC_DROP) {
            at = 0;
        } else if (rec->op == MDB_REC_META) {
            mdb_val v = mdb_val_member(rec->value, "expiresAt", 9);
            at = mdb_val_is_number(v) ? mdb_val_int(v) : 0;
            if (at < 0) /* nonsense (overflowed) expiry: nothing to schedule */
                at = 0;
        }
    }
    if (at >= 0)
        ttl_note(sw, ev->collection, nlen, at);
}

/* Current expiry of a collection, with its live count: 0 when it has no
 * running clock, -1 when it does not exist. */
static int64_t ttl_current(ttl_sweeper *sw, const char *name, size_t nlen, size_t *count)
{
    mdb_read *rv;
    if (mdb_read_begin(sw->store, name, nlen, &rv))
        return -1;
    int64_t at = mdb_read_meta(rv)->expires_at_ms;
    *count = mdb_read_count(rv);
    mdb_read_end(rv);
    return at;
}

static void ttl_trim(ttl_sweeper *sw, size_t ndocs)
{
#if defined(__GLIBC__)
    /* glibc keeps freed small blocks in its arenas; a big drop would stay
     * in the RSS until reused. Give it back now (a sweep is rare). */
    if (sw->trim && ndocs >= TTL_TRIM_MIN_DOCS)
        malloc_trim(0);
#else
    (void)sw;
    (void)ndocs;
#endif
}

/*
 * Look at one collection whose scheduled time came: expire it if its
 * current expiry has passed, else schedule it again at its current expiry.
 * Returns 1 when it was expired, 0 when nothing was due, -errno when the
 * expire commit failed (it is then scheduled again after a back-off).
 * Never called with mu held (the commit runs the hooks, which take mu).
 */
/* at_startup: the collection expired while the server was down and nothing
 * runs yet, so it is dropped whole (documents and metadata): it is gone
 * like any unknown collection (README "How it works"). While running, the
 * store's expire keeps ttl, maxSize and schema and re-checks the clock
 * under the commit lock. */
static int ttl_sweep_one(ttl_sweeper *sw, const char *name, size_t nlen, bool at_startup)
{
    size_t count = 0;
    int64_t at = ttl_current(sw, name, nlen, &count);
    if (at <= 0)
        return 0; /* gone or no clock: the hooks already forgot it */
    int64_t now = mdb_now_ms();
    if (at > now) {
        /* the clock slid since this entry was queued */
        pthread_mutex_lock(&sw->mu);
        sw->st.requeues++;
        pthread_mutex_unlock(&sw->mu);
        ttl_note(sw, name, nlen, at);
        return 0;
    }
    mdb_commit_result res;
    const char *why = NULL;
    mdb_write *w = mdb_write_begin(sw->store, name, nlen);
    int rc = !w ? -ENOMEM : at_startup ? mdb_write_drop(w) : mdb_write_expire(w);
    if (w && rc)
        mdb_write_abort(w);
    else if (w)
        rc = mdb_write_commit(w, NULL, &res, &why);
    if (rc) {
        int64_t delay = sw->retry_ms;
        sw->retry_ms = delay * 2 > TTL_RETRY_MAX_MS ? TTL_RETRY_MAX_MS : delay * 2;
        mdb_log(sw->ctx, MDB_LOG_WARN, "could not expire collection '%s' (%s); retrying in %lld ms",
                name, why ? why : strerror(-rc), (long long)delay);
        pthread_mutex_lock(&sw->mu);
        sw->st.failures++;
        pthread_mutex_unlock(&sw->mu);
        ttl_note(sw, name, nlen, mdb_now_ms() + delay);
        return rc;
    }
    sw->retry_ms = TTL_RETRY_MIN_MS;
    if (!res.dropped)
        return 0; /* a put moved the clock meanwhile; its META re-scheduled it */
    pthread_mutex_lock(&sw->mu);
    sw->st.sweeps++;
    sw->st.dropped += count;
    pthread_mutex_unlock(&sw->mu);
    mdb_log(sw->ctx, MDB_LOG_INFO, "collection '%s' expired: %zu documents dropped", name, count);
    ttl_trim(sw, count);
    return 1;
}

static void ttl_deadline(int64_t at_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(at_ms / 1000);
    ts->tv_nsec = (long)(at_ms % 1000) * 1000000L;
}

static void *ttl_main(void *arg)
{
    ttl_sweeper *sw = arg;
    pthread_mutex_lock(&sw->mu);
    while (!sw->stop) {
        const ttl_heap_ent *top = ttl_heap_peek(&sw->heap);
        if (!top) {
            sw->wait_until = TTL_FOREVER;
            pthread_cond_wait(&sw->cv, &sw->mu);
            sw->wait_until = TTL_AWAKE;
            sw->st.wakeups++;
            continue;
        }
        if (top->at > mdb_now_ms()) {
            struct timespec ts;
            ttl_deadline(top->at, &ts);
            sw->wait_until = top->at;
            pthread_cond_timedwait(&sw->cv, &sw->mu, &ts);
            sw->wait_until = TTL_AWAKE;
            sw->st.wakeups++;
            continue;
        }
        ttl_heap_ent *due = ttl_heap_pop(&sw->heap); /* owned here until freed below */
        pthread_mutex_unlock(&sw->mu);
        ttl_sweep_one(sw, due->name, due->nlen, false);
        free(due);
        pthread_mutex_lock(&sw->mu);
    }
    pthread_mutex_unlock(&sw->mu);
    return NULL;
}

typedef struct ttl_item {
    int64_t at;
    char *name; /* owned by the list */
} ttl_item;

typedef struct ttl_list {
    ttl_item *v;
    size_t n, cap;
    int err;
} ttl_list;

static int ttl_collect(mdb_read *rv, void *ud)
{
    ttl_list *l = ud;
    int64_t at = mdb_read_meta(rv)->expires_at_ms;
    if (at <= 0)
        return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        ttl_item *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            l->err = -ENOMEM;
            return 1;
        }
        l->v = nv;
        l->cap = nc;
    }
    char *name = strdup(mdb_read_name(rv));
    if (!name) {
        l->err = -ENOMEM;
        return 1;
    }
    l->v[l->n++] = (ttl_item){at, name};
    return 0;
}

/*
 * Startup: schedule every collection with a running clock; those whose
 * expiry passed while the server was down are expired right here, by the
 * same path as the thread (before the HTTP server accepts requests).
 * The list is copied first: a write may not begin inside a read view.
 */
int ttl_load(ttl_sweeper *sw)
{
    ttl_list l = {0};
    int rc = mdb_store_each_collection(sw->store, ttl_collect, &l);
    if (!rc)
        rc = l.err;
    if (!rc) {
        int64_t now = mdb_now_ms();
        for (size_t i = 0; i < l.n; i++) {
            if (l.v[i].at <= now)
                ttl_sweep_one(sw, l.v[i].name, strlen(l.v[i].name), true);
            else
                ttl_note(sw, l.v[i].name, strlen(l.v[i].name), l.v[i].at);
        }
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i].name);
    free(l.v);
    return rc;
}

int ttl_start(ttl_sweeper *sw)
{
    pthread_mutex_lock(&sw->mu);
    sw->stop = false;
    pthread_mutex_unlock(&sw->mu);
    int rc = pthread_create(&sw->thread, NULL, ttl_main, sw);
    if (rc)
        return -rc;
    sw->running = true;
    return 0;
}

void ttl_stop(ttl_sweeper *sw)
{
    if (!sw->running)
        return;
    pthread_mutex_lock(&sw->mu);
    sw->stop = true;
    pthread_cond_signal(&sw->cv);
    pthread_mutex_unlock(&sw->mu);
    pthread_join(sw->thread, NULL);
    sw->running = false;
}

void ttl_get_stats(ttl_sweeper *sw, ttl_stats *out)
{
    pthread_mutex_lock(&sw->mu);
    *out = sw->st;
    out->pending = ttl_heap_size(&sw->heap);
    const ttl_heap_ent *top = ttl_heap_peek(&sw->heap);
    out->next_ms = top ? top->at : 0;
    pthread_mutex_unlock(&sw->mu);
}
