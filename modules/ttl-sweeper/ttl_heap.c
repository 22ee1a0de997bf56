/*
 * ttl-sweeper part 1: an indexed min-heap of (expiry, collection name).
 *
 * One entry per collection, keyed by name through a small chained hash
 * table, so an entry can be moved (the clock slid) or removed (the
 * collection was dropped) in O(log n) without searching the heap.
 * Pure data structure: no locks (the sweeper's mutex guards it), no SDK
 * calls, so the unit test exercises it on its own.
 *
 * Ownership: the heap owns every entry (malloc, name stored inline) until
 * th_pop() hands one to the caller, who free()s it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct th_ent {
    int64_t at;          /* expiry, unix ms: the heap key */
    size_t pos;          /* index in th_heap.a */
    uint64_t hash;       /* of the name */
    struct th_ent *next; /* hash chain */
    size_t nlen;
    char name[]; /* NUL-terminated */
} th_ent;

typedef struct th_heap {
    th_ent **a; /* the heap array: a[0] is the earliest expiry */
    size_t n, cap;
    th_ent **tab; /* hash buckets (power of two), chained by next */
    size_t tabcap;
} th_heap;

static uint64_t th_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void th_init(th_heap *h)
{
    memset(h, 0, sizeof *h);
}

static void th_free(th_heap *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->a[i]);
    free(h->a);
    free(h->tab);
    memset(h, 0, sizeof *h);
}

static size_t th_size(const th_heap *h)
{
    return h->n;
}

/* The earliest entry (borrowed), or NULL when empty. */
static const th_ent *th_peek(const th_heap *h)
{
    return h->n ? h->a[0] : NULL;
}

static th_ent **th_slot(const th_heap *h, const char *name, size_t nlen, uint64_t hash)
{
    if (!h->tabcap)
        return NULL;
    th_ent **p = &h->tab[hash & (h->tabcap - 1)];
    while (*p && !((*p)->hash == hash && (*p)->nlen == nlen && memcmp((*p)->name, name, nlen) == 0))
        p = &(*p)->next;
    return p;
}

/* The entry of a collection (borrowed), or NULL. (The module itself never
 * needs to look one up; the unit test does.) */
__attribute__((unused)) static const th_ent *th_find(const th_heap *h, const char *name,
                                                     size_t nlen)
{
    th_ent **p = th_slot(h, name, nlen, th_hash(name, nlen));
    return p ? *p : NULL;
}

static void th_place(th_heap *h, size_t i, th_ent *e)
{
    h->a[i] = e;
    e->pos = i;
}

static void th_up(th_heap *h, size_t i)
{
    th_ent *e = h->a[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->a[parent]->at <= e->at)
            break;
        th_place(h, i, h->a[parent]);
        i = parent;
    }
    th_place(h, i, e);
}

static void th_down(th_heap *h, size_t i)
{
    th_ent *e = h->a[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= h->n)
            break;
        size_t m = (l + 1 < h->n && h->a[l + 1]->at < h->a[l]->at) ? l + 1 : l;
        if (e->at <= h->a[m]->at)
            break;
        th_place(h, i, h->a[m]);
        i = m;
    }
    th_place(h, i, e);
}

static int th_grow_tab(th_heap *h)
{
    size_t nc = h->tabcap ? h->tabcap * 2 : 16;
    th_ent **nt = calloc(nc, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    for (size_t i = 0; i < h->tabcap; i++) {
        th_ent *e = h->tab[i];
        while (e) {
            th_ent *next = e->next;
            th_ent **b = &nt[e->hash & (nc - 1)];
            e->next = *b;
            *b = e;
            e = next;
        }
    }
    free(h->tab);
    h->tab = nt;
    h->tabcap = nc;
    return 0;
}

/* Insert the collection with expiry `at`, or move its entry to `at`
 * (earlier or later). 0 or -ENOMEM (the heap is unchanged then). */
static int th_set(th_heap *h, const char *name, size_t nlen, int64_t at)
{
    uint64_t hash = th_hash(name, nlen);
    th_ent **slot = th_slot(h, name, nlen, hash);
    if (slot && *slot) {
        th_ent *e = *slot;
        int64_t old = e->at;
        e->at = at;
        if (at < old)
            th_up(h, e->pos);
        else if (at > old)
            th_down(h, e->pos);
        return 0;
    }
    if (h->n + 1 > h->tabcap && th_grow_tab(h))
        return -ENOMEM;
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 16;
        th_ent **na = realloc(h->a, nc * sizeof *na);
        if (!na)
            return -ENOMEM;
        h->a = na;
        h->cap = nc;
    }
    th_ent *e = malloc(sizeof *e + nlen + 1);
    if (!e)
        return -ENOMEM;
    e->at = at;
    e->hash = hash;
    e->nlen = nlen;
    memcpy(e->name, name, nlen);
    e->name[nlen] = 0;
    th_ent **b = &h->tab[hash & (h->tabcap - 1)];
    e->next = *b;
    *b = e;
    th_place(h, h->n++, e);
    th_up(h, e->pos);
    return 0;
}

/* Unlink e from the hash table and the heap; the caller owns it after. */
static void th_detach(th_heap *h, th_ent *e)
{
    th_ent **p = th_slot(h, e->name, e->nlen, e->hash);
    *p = e->next;
    size_t i = e->pos;
    th_ent *last = h->a[--h->n];
    if (last != e) {
        th_place(h, i, last);
        th_up(h, i);
        th_down(h, last->pos);
    }
    e->next = NULL;
}

/* Remove the collection's entry; false when it had none. */
static bool th_remove(th_heap *h, const char *name, size_t nlen)
{
    th_ent **slot = th_slot(h, name, nlen, th_hash(name, nlen));
    if (!slot || !*slot)
        return false;
    th_ent *e = *slot;
    th_detach(h, e);
    free(e);
    return true;
}

/* Detach the earliest entry and hand it to the caller (free() it), or NULL. */
static th_ent *th_pop(th_heap *h)
{
    if (!h->n)
        return NULL;
    th_ent *e = h->a[0];
    th_detach(h, e);
    return e;
}
