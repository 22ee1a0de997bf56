/*
 * ttl-sweeper internals shared by its translation units (the module README,
 * "Source layout", says which file does what). Nothing here is exported:
 * the module is built with hidden visibility, only the descriptor in
 * ttl_sweeper.c is visible to the core.
 */
#ifndef TTL_H
#define TTL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moltendb/module.h>

/* ==== ttl_heap.c: indexed min-heap of (expiry, collection name) ====
 * Ownership: the heap owns every entry (malloc, name stored inline) until
 * ttl_heap_pop() hands one to the caller, who free()s it. */
typedef struct ttl_heap_ent {
    int64_t at;                /* expiry, unix ms: the heap key */
    size_t pos;                /* index in ttl_heap.a */
    uint64_t hash;             /* of the name */
    struct ttl_heap_ent *next; /* hash chain */
    size_t nlen;
    char name[]; /* NUL-terminated */
} ttl_heap_ent;

typedef struct ttl_heap {
    ttl_heap_ent **a; /* the heap array: a[0] is the earliest expiry */
    size_t n, cap;
    ttl_heap_ent **tab; /* hash buckets (power of two), chained by next */
    size_t tabcap;
} ttl_heap;

void ttl_heap_init(ttl_heap *h);
void ttl_heap_free(ttl_heap *h);
size_t ttl_heap_size(const ttl_heap *h);
const ttl_heap_ent *ttl_heap_peek(const ttl_heap *h);
const ttl_heap_ent *ttl_heap_find(const ttl_heap *h, const char *name, size_t nlen);
int ttl_heap_set(ttl_heap *h, const char *name, size_t nlen, int64_t at);
bool ttl_heap_remove(ttl_heap *h, const char *name, size_t nlen);
ttl_heap_ent *ttl_heap_pop(ttl_heap *h);

/* ==== ttl_engine.c: the sweeper thread and the commit hook ==== */
typedef struct ttl_stats {
    uint64_t wakeups;  /* returns from a condition wait (timeouts, signals, spurious) */
    uint64_t sweeps;   /* collections expired (thread or startup) */
    uint64_t dropped;  /* documents dropped by those sweeps */
    uint64_t requeues; /* due entries whose clock had moved: scheduled again */
    uint64_t failures; /* expire commits refused (storage read-only, OOM) */
    size_t pending;    /* collections in the heap */
    int64_t next_ms;   /* earliest scheduled expiry, 0 when none */
} ttl_stats;

typedef struct ttl_sweeper {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ttl_heap heap;      /* under mu */
    int64_t wait_until; /* under mu: the deadline the thread sleeps on */
    bool stop;          /* under mu */
    bool running;       /* thread started (start/stop thread only) */
    pthread_t thread;
    ttl_stats st;       /* counters under mu (pending/next_ms filled on read) */
    int64_t retry_ms;   /* sweeper thread only: current back-off */
    mdb_store *store;   /* borrowed from the core (or the unit test) */
    const mdb_ctx *ctx; /* for log lines; NULL in unit tests */
    bool trim;          /* malloc_trim() after big sweeps */
} ttl_sweeper;

int ttl_init(ttl_sweeper *sw, mdb_store *store, const mdb_ctx *ctx);
void ttl_destroy(ttl_sweeper *sw);
void ttl_note(ttl_sweeper *sw, const char *name, size_t nlen, int64_t at);
void ttl_on_commit(const mdb_commit_event *ev, void *ud);
int ttl_load(ttl_sweeper *sw);
int ttl_start(ttl_sweeper *sw);
void ttl_stop(ttl_sweeper *sw);
void ttl_get_stats(ttl_sweeper *sw, ttl_stats *out);

#endif
