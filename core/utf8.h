/*
 * utf8.h: RFC 3629 UTF-8, shared by the strict JSON reader (json.c) and the
 * error-text escaper (doc.c). Header-only.
 */
#ifndef MOLTENDB_CORE_UTF8_H
#define MOLTENDB_CORE_UTF8_H

#include <stddef.h>

/* Length (2-4) of the well-formed multi-byte sequence at p (p[0] >= 0x80),
 * or 0 when it is not one: a stray continuation byte, an overlong form, a
 * surrogate (U+D800-U+DFFF), a code point above U+10FFFF or a sequence cut
 * by the end of the input (RFC 3629 section 4). */
static inline size_t core_utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

#endif
