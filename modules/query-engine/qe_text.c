/*
 * query-engine: small helpers shared by every part.
 *
 *   - a per-request arena (one owner: the request's qe_arena, freed at once)
 *   - the error slot handed back to the HTTP layer
 *   - name validation with the upstream texts (README "Validation")
 *   - case-insensitive UTF-8 comparison
 *
 * Case folding is Rust's str::to_lowercase, as upstream compares: the full
 * Unicode lowercase mapping (one letter may lower to several code points,
 * U+0130 to "i" + U+0307) with the final-sigma rule, no language tailoring.
 * libunistring implements exactly that with maintained tables (README
 * "WHERE"); towlower() would depend on the process locale and maps one code
 * point to one. Pure ASCII strings, the common case, are compared in place;
 * other strings are lowered code point by code point with uc_tolower(),
 * and only those with a special case go through u8_tolower().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unicase.h>
#include <unistr.h>

#include "qe.h"

__attribute__((format(printf, 3, 4))) int qe_fail(qe_err *e, unsigned status, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->status = status;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *qe_alloc(qe_arena *a, size_t n)
{
    n = (n + 15u) & ~(size_t)15u;
    if (n == 0)
        n = 16;
    qe_arena_blk *b = a->head;
    if (!b || b->cap - b->used < n) {
        /* small first block: most requests (GET by key) need a few bytes */
        size_t want = a->head ? 16384 : 1024;
        size_t cap = n > want ? n : want;
        b = malloc(sizeof *b + cap);
        if (!b) {
            a->oom = 1;
            return NULL;
        }
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *qe_strndup(qe_arena *a, const char *s, size_t n)
{
    char *p = qe_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

void qe_arena_free(qe_arena *a)
{
    qe_arena_blk *b = a->head;
    while (b) {
        qe_arena_blk *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

/* ---- name validation (README "Validation") ------------------------------------ */
static bool qe_is_name_char(unsigned char c, bool allow_dot)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || (allow_dot && c == '.');
}

/* Collection and key names follow one pattern with different limits and
 * texts (README "Validation"); fields have their own (dot segments). */
typedef struct qe_name_rule {
    const char *upper, *lower; /* "Collection" / "collection" */
    const char *chars;         /* the characters the text lists */
    size_t max;
    bool dot;
} qe_name_rule;

static int qe_check_name(const qe_name_rule *rule, const char *s, size_t n, qe_err *e)
{
    if (n > rule->max)
        return qe_fail(e, 400, "%s name too long (max %zu characters)", rule->upper, rule->max);
    bool ok = n > 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = qe_is_name_char((unsigned char)s[i], rule->dot);
    if (!ok)
        return qe_fail(
            e, 400, "Invalid %s name: '%.*s'. Must be alphanumeric with %s only (1-%zu chars)",
            rule->lower, n > QE_QUOTE_MAX ? QE_QUOTE_MAX : (int)n, s, rule->chars, rule->max);
    return 0;
}

int qe_check_collection(const char *s, size_t n, qe_err *e)
{
    static const qe_name_rule rule = {"Collection", "collection", "_, -", 64, false};
    if (qe_check_name(&rule, s, n, e))
        return -1;
    static const char *const reserved[] = {"admin", "system", "config", "internal", "__proto__"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == n && memcmp(reserved[i], s, n) == 0)
            return qe_fail(e, 400,
                           "Invalid collection name: '%.*s (reserved name)'. Must be alphanumeric "
                           "with _, - only (1-64 chars)",
                           (int)n, s);
    return 0;
}

int qe_check_key(const char *s, size_t n, qe_err *e)
{
    static const qe_name_rule rule = {"Key", "key", "_, -, .", 256, true};
    return qe_check_name(&rule, s, n, e);
}

int qe_check_field(const char *s, size_t n, qe_err *e)
{
    if (n > 128)
        return qe_fail(e, 400,
                       "Invalid field name: '%.*s (too long)'. Must be alphanumeric with _, -, . "
                       "only (1-128 chars)",
                       n > QE_QUOTE_MAX ? QE_QUOTE_MAX : (int)n, s);
    bool ok = n > 0 && s[0] != '.' && s[n - 1] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        ok = qe_is_name_char((unsigned char)s[i], true);
        if (ok && s[i] == '.' && i + 1 < n && s[i + 1] == '.')
            ok = false;
    }
    if (!ok)
        return qe_fail(e, 400,
                       "Invalid field name: '%.*s'. Must be alphanumeric with _, -, . only (1-128 "
                       "chars)",
                       (int)n, s);
    return 0;
}

/* ---- case folding ------------------------------------------------------------
 * Both sides of a case-insensitive comparison are lowered whole, then
 * compared byte-wise: the literal once when the query is compiled, the
 * document's string per document. Lowering a part of a string is not the
 * same as a part of the lowered string (final sigma looks at neighbours),
 * so substrings are searched in the lowered whole. */

static inline unsigned char qe_ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool qe_is_ascii(const unsigned char *p, size_t n)
{
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc < 0x80;
}

/* The lowered form of a string: in buf, in a malloc'd block (heap), or on
 * failure NULL. qe_lowered_done() frees the block. 512 bytes hold any
 * string of up to 256 bytes lowered code point by code point. */
typedef struct qe_lowered {
    const char *s;
    size_t n;
    char *heap;
    char buf[512];
} qe_lowered;

/* Code points whose lowercase is not uc_tolower() of the code point alone:
 * U+0130 lowers to two code points, U+03A3 to final or medial sigma by its
 * neighbours. No other lowercase mapping without a language has a special
 * case; the unit test "case folding" checks this against the library. */
static bool qe_lower_special(ucs4_t c)
{
    return c == 0x130 || c == 0x3A3;
}

/* Lower code point by code point with uc_tolower() (the library's simple
 * mapping): no context, no normalisation, far cheaper than u8_tolower().
 * Returns false for a string that needs u8_tolower() (a special code point,
 * or not UTF-8). A code point grows by at most one byte when lowered. */
static bool qe_lower_simple(const uint8_t *p, size_t n, qe_lowered *o)
{
    size_t cap = n + n / 2 + 4;
    uint8_t *d = (uint8_t *)o->buf;
    if (cap > sizeof o->buf) {
        if (!(o->heap = malloc(cap)))
            return false;
        d = (uint8_t *)o->heap;
    }
    size_t i = 0, j = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            d[j++] = qe_ascii_lower(p[i++]);
            continue;
        }
        ucs4_t c;
        int k = u8_mbtoucr(&c, p + i, n - i);
        if (k < 0 || qe_lower_special(c))
            break;
        int m = u8_uctomb(d + j, uc_tolower(c), (ptrdiff_t)(cap - j));
        if (m < 0)
            break;
        i += (size_t)k;
        j += (size_t)m;
    }
    if (i == n) {
        o->s = (const char *)d;
        o->n = j;
        return true;
    }
    free(o->heap);
    o->heap = NULL;
    return false;
}

static void qe_lower(const char *s, size_t n, qe_lowered *o)
{
    o->heap = NULL;
    if (qe_lower_simple((const uint8_t *)s, n, o))
        return;
    if (u8_check((const uint8_t *)s, n) == NULL) {
        size_t len = sizeof o->buf;
        uint8_t *r = u8_tolower((const uint8_t *)s, n, NULL, NULL, (uint8_t *)o->buf, &len);
        if (r) {
            if ((char *)r != o->buf)
                o->heap = (char *)r;
            o->s = (const char *)r;
            o->n = len;
            return;
        }
    }
    /* Not UTF-8 (a lone surrogate escape), or out of memory: ASCII only. */
    char *d = n <= sizeof o->buf ? o->buf : (o->heap = malloc(n));
    if (!d) {
        o->s = NULL;
        o->n = 0;
        return;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = (char)qe_ascii_lower((unsigned char)s[i]);
    o->s = d;
    o->n = n;
}

static void qe_lowered_done(qe_lowered *o)
{
    free(o->heap);
}

char *qe_fold_lit(qe_arena *a, const char *s, size_t n, size_t *outn)
{
    qe_lowered f;
    qe_lower(s, n, &f);
    char *r = f.s ? qe_alloc(a, f.n + 1) : NULL;
    if (r) {
        memcpy(r, f.s, f.n);
        r[f.n] = 0;
        *outn = f.n;
    }
    qe_lowered_done(&f);
    return r;
}

bool qe_ci_eq(const char *s, size_t n, const char *low, size_t ln)
{
    const unsigned char *p = (const unsigned char *)s, *l = (const unsigned char *)low;
    size_t i = 0;
    /* ASCII letters lower alone, whatever their neighbours: a mismatch in
     * the ASCII prefix decides without lowering the rest. */
    for (; i < n && p[i] < 0x80; i++)
        if (i >= ln || qe_ascii_lower(p[i]) != l[i])
            return false;
    if (i == n)
        return n == ln;
    qe_lowered f;
    qe_lower(s, n, &f);
    bool eq = f.s && f.n == ln && memcmp(f.s, low, ln) == 0;
    qe_lowered_done(&f);
    return eq;
}

static uint64_t qe_fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

#define QE_FNV_BASIS 1469598103934665603ull

uint64_t qe_hash_bytes(const char *s, size_t n)
{
    return qe_fnv(QE_FNV_BASIS, (const unsigned char *)s, n);
}

uint64_t qe_fold_hash(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t h = QE_FNV_BASIS;
    size_t i = 0;
    for (; i < n && p[i] < 0x80; i++) {
        h ^= qe_ascii_lower(p[i]);
        h *= 1099511628211ull;
    }
    if (i == n)
        return h;
    qe_lowered f;
    qe_lower(s, n, &f);
    h = qe_fnv(QE_FNV_BASIS, (const unsigned char *)f.s, f.s ? f.n : 0);
    qe_lowered_done(&f);
    return h;
}

bool qe_ci_contains(const char *hay, size_t hn, const char *low, size_t ln)
{
    if (ln == 0)
        return true;
    const unsigned char *p = (const unsigned char *)hay, *l = (const unsigned char *)low;
    if (qe_is_ascii(p, hn)) {
        for (size_t i = 0; i + ln <= hn; i++) {
            if (qe_ascii_lower(p[i]) != l[0])
                continue;
            size_t j = 1;
            while (j < ln && qe_ascii_lower(p[i + j]) == l[j])
                j++;
            if (j == ln)
                return true;
        }
        return false;
    }
    qe_lowered f;
    qe_lower(hay, hn, &f);
    bool in = f.s && memmem(f.s, f.n, low, ln) != NULL;
    qe_lowered_done(&f);
    return in;
}

/* ---- JSON helpers ------------------------------------------------------------ */

bool qe_json_is_int(json_object *j)
{
    return j && json_object_is_type(j, json_type_int);
}

/* A non-negative integer property: 0 absent, 1 present (*out set), -1 wrong. */
int qe_json_nonneg(json_object *j, int64_t *out)
{
    if (!j)
        return 0;
    if (!qe_json_is_int(j))
        return -1;
    int64_t v = json_object_get_int64(j);
    if (v < 0)
        return -1;
    *out = v;
    return 1;
}
