/*
 * moltendb SDK: the grow-by-doubling array every part of the server uses
 * for its lists (config items, revoked tokens, log records, batches ...).
 *
 * A header-only helper (static inline): it adds no symbol to the module ABI.
 */
#ifndef MOLTENDB_ARRAY_H
#define MOLTENDB_ARRAY_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Make room for element n of the array whose address is `arrp` (a T **:
 * *arrp holds *cap elements of `size` bytes, malloc'd or NULL). When n is
 * past the end the capacity doubles (the first allocation holds `first`).
 * 0, or -ENOMEM with the array and *cap unchanged. The caller owns the
 * array and frees it with free(). */
static inline int mdb_array_grow(void *arrp, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : first;
    if (nc <= n || nc > SIZE_MAX / size)
        return -ENOMEM;
    void *old;
    memcpy(&old, arrp, sizeof old);
    void *grown = realloc(old, nc * size);
    if (!grown)
        return -ENOMEM;
    memcpy(arrp, &grown, sizeof grown);
    *cap = nc;
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif
