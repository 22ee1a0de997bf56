/*
 * query-engine: small helpers shared by every part.
 *
 *   - a per-request arena (one owner: the request's qe_arena, freed at once)
 *   - the error slot handed back to the HTTP layer
 *   - name validation with the upstream texts (README "Validation")
 *   - case-insensitive UTF-8 comparison
 *
 * Case folding: ASCII takes a table fast path. Other code points are decoded
 * from UTF-8 and lowered with a fixed table of the common ranges (Latin-1,
 * Latin Extended-A, Greek, Cyrillic). Every mapping keeps the UTF-8 byte
 * length, so folded strings have the length of the original and equality
 * can reject on length first. towlower() is not used: it depends on the
 * process locale (the server runs in the C locale).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

/* ---- case folding ------------------------------------------------------------ */
static uint32_t qe_fold_cp(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 0x20; /* Latin-1 */
    if (c >= 0x100 && c <= 0x17F) {
        /* Latin Extended-A: pairs (upper even, lower odd) except these
         * ranges that pair odd/even. U+0130/0131/0138/0149/017F stay. */
        if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F)
            return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
            return (c & 1) ? c + 1 : c;
        if (c == 0x178)
            return 0xFF;
        return (c & 1) ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
        return c + 0x20; /* Greek */
    if (c >= 0x410 && c <= 0x42F)
        return c + 0x20; /* Cyrillic basic */
    if (c >= 0x400 && c <= 0x40F)
        return c + 0x50; /* Cyrillic Ѐ..Џ */
    return c;
}

/* Decode one code point of s[0..n). Returns its byte length (>= 1); invalid
 * or truncated sequences decode as the single byte (so they compare raw). */
static size_t qe_utf8_dec(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t k;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        v = c & 0x07;
    } else {
        *cp = 0x80000000u | c; /* raw byte marker */
        return 1;
    }
    if (k > n) {
        *cp = 0x80000000u | c;
        return 1;
    }
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0x80000000u | c;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return k;
}

static size_t qe_utf8_enc(uint32_t c, unsigned char *o)
{
    if (c & 0x80000000u) {
        o[0] = (unsigned char)(c & 0xFF);
        return 1;
    }
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* Fold s into out (same length as s; out has room for n bytes). */
void qe_fold_str(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            out[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = qe_utf8_dec(p + i, n - i, &cp);
        unsigned char tmp[4];
        size_t m = qe_utf8_enc(qe_fold_cp(cp), tmp);
        if (m != k) { /* cannot happen with the table above; keep bytes */
            memcpy(out + i, p + i, k);
        } else {
            memcpy(out + i, tmp, k);
        }
        i += k;
    }
}

/* FNV-1a of the folded form of s[0..n), without building it (equal for
 * strings that qe_ci_eq() finds equal). */
uint64_t qe_fold_hash(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t h = 1469598103934665603ull;
    size_t i = 0;
    while (i < n) {
        unsigned char tmp[4];
        size_t k, m;
        if (p[i] < 0x80) {
            tmp[0] = (unsigned char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            k = m = 1;
        } else {
            uint32_t cp;
            k = qe_utf8_dec(p + i, n - i, &cp);
            m = qe_utf8_enc(qe_fold_cp(cp), tmp);
            if (m != k)
                memcpy(tmp, p + i, m = k);
        }
        for (size_t j = 0; j < m; j++) {
            h ^= tmp[j];
            h *= 1099511628211ull;
        }
        i += k;
    }
    return h;
}

/* Does s[0..n) fold to exactly low[0..n)? (low is already folded) */
static bool qe_ci_prefix_eq(const char *s, size_t n, const char *low)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *l = (const unsigned char *)low;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if ((unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c) != l[i])
                return false;
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = qe_utf8_dec(p + i, n - i, &cp);
        unsigned char tmp[4];
        size_t m = qe_utf8_enc(qe_fold_cp(cp), tmp);
        if (m != k)
            m = k, memcpy(tmp, p + i, k);
        if (memcmp(tmp, l + i, k) != 0)
            return false;
        i += k;
    }
    return true;
}

bool qe_ci_eq(const char *s, size_t n, const char *low, size_t ln)
{
    return n == ln && qe_ci_prefix_eq(s, n, low);
}

/* Case-insensitive substring: does hay contain the folded needle? */
bool qe_ci_contains(const char *hay, size_t hn, const char *low, size_t ln)
{
    if (ln == 0)
        return true;
    if (ln > hn)
        return false;
    unsigned char first = (unsigned char)low[0];
    for (size_t i = 0; i + ln <= hn; i++) {
        unsigned char c = (unsigned char)hay[i];
        if (first < 0x80) {
            if ((unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c) != first)
                continue;
        } else if ((c & 0xC0) == 0x80) {
            continue; /* not at a code point start */
        }
        if (qe_ci_prefix_eq(hay + i, ln, low))
            return true;
    }
    return false;
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
