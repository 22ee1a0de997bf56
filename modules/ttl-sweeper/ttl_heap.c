/*
 * ttl-sweeper: an indexed min-heap of (expiry, collection name).
 *
 * One entry per collection, keyed by name through a small chained hash
 * table, so an entry can be moved (the clock slid) or removed (the
 * collection was dropped) in O(log n) without searching the heap.
 * Pure data structure: no locks (the sweeper's mutex guards it), no SDK
 * calls, so the unit test exercises it on its own.
 *
 * Ownership: the heap owns every entry (malloc, name stored inline) until
 * ttl_heap_pop() hands one to the caller, who free()s it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ttl.h"

static uint64_t ttl_heap_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

void ttl_heap_init(ttl_heap *h)
{
    memset(h, 0, sizeof *h);
}

void ttl_heap_free(ttl_heap *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->a[i]);
    free(h->a);
    free(h->tab);
    memset(h, 0, sizeof *h);
}

size_t ttl_heap_size(const ttl_heap *h)
{
    return h->n;
}

/* The earliest entry (borrowed), or NULL when empty. */
const ttl_heap_ent *ttl_heap_peek(const ttl_heap *h)
{
    return h->n ? h->a[0] : NULL;
}

static ttl_heap_ent **ttl_heap_slot(const ttl_heap *h, const char *name, size_t nlen, uint64_t hash)
{
    if (!h->tabcap)
        return NULL;
    ttl_heap_ent **p = &h->tab[hash & (h->tabcap - 1)];
    while (*p && !((*p)->hash == hash && (*p)->nlen == nlen && memcmp((*p)->name, name, nlen) == 0))
        p = &(*p)->next;
    return p;
}

/* The entry of a collection (borrowed), or NULL. (The module itself never
 * needs to look one up; the unit test does.) */
const ttl_heap_ent *ttl_heap_find(const ttl_heap *h, const char *name, size_t nlen)
{
    ttl_heap_ent **p = ttl_heap_slot(h, name, nlen, ttl_heap_hash(name, nlen));
    return p ? *p : NULL;
}

static void ttl_heap_place(ttl_heap *h, size_t i, ttl_heap_ent *e)
{
    h->a[i] = e;
    e->pos = i;
}

static void ttl_heap_up(ttl_heap *h, size_t i)
{
    ttl_heap_ent *e = h->a[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->a[parent]->at <= e->at)
            break;
        ttl_heap_place(h, i, h->a[parent]);
        i = parent;
    }
    ttl_heap_place(h, i, e);
}

static void ttl_heap_down(ttl_heap *h, size_t i)
{
    ttl_heap_ent *e = h->a[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= h->n)
            break;
        size_t m = (l + 1 < h->n && h->a[l + 1]->at < h->a[l]->at) ? l + 1 : l;
        if (e->at <= h->a[m]->at)
            break;
        ttl_heap_place(h, i, h->a[m]);
        i = m;
    }
    ttl_heap_place(h, i, e);
}

static int ttl_heap_grow_tab(ttl_heap *h)
{
    size_t nc = h->tabcap ? h->tabcap * 2 : 16;
    ttl_heap_ent **nt = calloc(nc, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    for (size_t i = 0; i < h->tabcap; i++) {
        ttl_heap_ent *e = h->tab[i];
        while (e) {
            ttl_heap_ent *next = e->next;
            ttl_heap_ent **b = &nt[e->hash & (nc - 1)];
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
int ttl_heap_set(ttl_heap *h, const char *name, size_t nlen, int64_t at)
{
    uint64_t hash = ttl_heap_hash(name, nlen);
    ttl_heap_ent **slot = ttl_heap_slot(h, name, nlen, hash);
    if (slot && *slot) {
        ttl_heap_ent *e = *slot;
        int64_t old = e->at;
        e->at = at;
        if (at < old)
            ttl_heap_up(h, e->pos);
        else if (at > old)
            ttl_heap_down(h, e->pos);
        return 0;
    }
    if (h->n + 1 > h->tabcap && ttl_heap_grow_tab(h))
        return -ENOMEM;
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 16;
        ttl_heap_ent **na = realloc(h->a, nc * sizeof *na);
        if (!na)
            return -ENOMEM;
        h->a = na;
        h->cap = nc;
    }
    ttl_heap_ent *e = malloc(sizeof *e + nlen + 1);
    if (!e)
        return -ENOMEM;
    e->at = at;
    e->hash = hash;
    e->nlen = nlen;
    memcpy(e->name, name, nlen);
    e->name[nlen] = 0;
    ttl_heap_ent **b = &h->tab[hash & (h->tabcap - 1)];
    e->next = *b;
    *b = e;
    ttl_heap_place(h, h->n++, e);
    ttl_heap_up(h, e->pos);
    return 0;
}

/* Unlink e from the hash table and the heap; the caller owns it after. */
static void ttl_heap_detach(ttl_heap *h, ttl_heap_ent *e)
{
    ttl_heap_ent **p = ttl_heap_slot(h, e->name, e->nlen, e->hash);
    *p = e->next;
    size_t i = e->pos;
    ttl_heap_ent *last = h->a[--h->n];
    if (last != e) {
        ttl_heap_place(h, i, last);
        ttl_heap_up(h, i);
        ttl_heap_down(h, last->pos);
    }
    e->next = NULL;
}

/* Remove the collection's entry; false when it had none. */
bool ttl_heap_remove(ttl_heap *h, const char *name, size_t nlen)
{
    ttl_heap_ent **slot = ttl_heap_slot(h, name, nlen, ttl_heap_hash(name, nlen));
    if (!slot || !*slot)
        return false;
    ttl_heap_ent *e = *slot;
    ttl_heap_detach(h, e);
    free(e);
    return true;
}

/* Detach the earliest entry and hand it to the caller (free() it), or NULL. */
ttl_heap_ent *ttl_heap_pop(ttl_heap *h)
{
    if (!h->n)
        return NULL;
    ttl_heap_ent *e = h->a[0];
    ttl_heap_detach(h, e);
    return e;
}
