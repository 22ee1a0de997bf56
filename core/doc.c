/*
 * doc.c: growable byte buffers and the binary value encoding ("mdoc") that
 * the store keeps documents in (format: include/moltendb/doc.h).
 *
 * Ownership:
 *   - mdb_buf owns its `data` (malloc); mdb_buf_free releases it and
 *     mdb_buf_take hands it to the caller, who free()s it.
 *   - mdb_val is a borrowed pointer into bytes owned by someone else (a
 *     buffer or a store document); nothing here frees through it.
 *   - mdb_val_to_jsonc returns a new json-c tree owned by the caller.
 *   - The encoders only read the json-c tree / text they are given.
 *
 * Readers trust the encoding (it only ever comes from the encoder here), so
 * they do no bounds checks of their own; they never read past the value's
 * stored size. All multi-byte integers are little-endian and read with
 * memcpy, so values may sit at any alignment.
 */
#include <moltendb/doc.h>

#include <endian.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "utf8.h"

enum {
    TAG_NULL = 0x00,
    TAG_FALSE = 0x01,
    TAG_TRUE = 0x02,
    TAG_INT = 0x03,
    TAG_DOUBLE = 0x04,
    TAG_STRING = 0x05,
    TAG_ARRAY = 0x06,
    TAG_OBJECT = 0x07,
};

/* Container header: tag, u32 count, u32 payload bytes. */
#define HDR_SIZE 9

/* ---- growable byte buffer ------------------------------------------------ */

void mdb_buf_init(mdb_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = 0;
}

void mdb_buf_free(mdb_buf *b)
{
    free(b->data);
    mdb_buf_init(b);
}

/* Also clears `oom`: the content it referred to is gone. */
void mdb_buf_reset(mdb_buf *b)
{
    b->len = 0;
    b->oom = 0;
}

/* Slow path of reserve: grow to at least len + extra (+1 spare byte so
 * mdb_buf_take can always NUL-terminate without another realloc). */
static int buf_grow(mdb_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - 1 - b->len) {
        b->oom = 1;
        return -ENOMEM;
    }
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Inlined fast paths used throughout this file: the exported functions
 * below cannot be inlined when compiled as position-independent code. */
static inline int buf_reserve(mdb_buf *b, size_t extra)
{
    if (__builtin_expect(!b->oom && b->cap - b->len > extra, 1))
        return 0;
    return b->oom ? -ENOMEM : buf_grow(b, extra);
}

static inline void buf_append(mdb_buf *b, const void *p, size_t n)
{
    if (n == 0 || buf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void buf_putc(mdb_buf *b, char c)
{
    if (buf_reserve(b, 1) != 0)
        return;
    b->data[b->len++] = c;
}

int mdb_buf_reserve(mdb_buf *b, size_t extra)
{
    return buf_reserve(b, extra);
}

void mdb_buf_append(mdb_buf *b, const void *p, size_t n)
{
    buf_append(b, p, n);
}

void mdb_buf_putc(mdb_buf *b, char c)
{
    buf_putc(b, c);
}

void mdb_buf_puts(mdb_buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void mdb_buf_printf(mdb_buf *b, const char *fmt, ...)
{
    if (buf_reserve(b, 64) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= room) {
        if (buf_reserve(b, (size_t)n + 1) != 0) {
            va_end(ap2);
            return;
        }
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    b->len += (size_t)n;
}

/* JSON escape class per byte: 0 = copy as is, 'u' = \u00XX, else the
 * character after the backslash. */
static const char json_esc[256] = {
    ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f',  ['\r'] = 'r', [0x00] = 'u',
    [0x01] = 'u', [0x02] = 'u', [0x03] = 'u', [0x04] = 'u',  [0x05] = 'u', [0x06] = 'u',
    [0x07] = 'u', [0x0b] = 'u', [0x0e] = 'u', [0x0f] = 'u',  [0x10] = 'u', [0x11] = 'u',
    [0x12] = 'u', [0x13] = 'u', [0x14] = 'u', [0x15] = 'u',  [0x16] = 'u', [0x17] = 'u',
    [0x18] = 'u', [0x19] = 'u', [0x1a] = 'u', [0x1b] = 'u',  [0x1c] = 'u', [0x1d] = 'u',
    [0x1e] = 'u', [0x1f] = 'u', ['"'] = '"',  ['\\'] = '\\',
};

static const char hex_digits[] = "0123456789abcdef";

static void json_str(mdb_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    /* Most strings need no escaping: reserve for that case up front. */
    if (n > SIZE_MAX - 2 || buf_reserve(b, n + 2) != 0)
        return;
    b->data[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && !json_esc[p[run]])
            run++;
        if (run > i) {
            if (buf_reserve(b, run - i + 1) != 0)
                return;
            memcpy(b->data + b->len, p + i, run - i);
            b->len += run - i;
            i = run;
            if (i == n)
                break;
        }
        /* p[i] needs escaping; worst case \u00XX plus the closing quote. */
        if (buf_reserve(b, 7) != 0)
            return;
        char e = json_esc[p[i]];
        char *w = b->data + b->len;
        w[0] = '\\';
        if (e == 'u') {
            w[1] = 'u';
            w[2] = '0';
            w[3] = '0';
            w[4] = hex_digits[p[i] >> 4];
            w[5] = hex_digits[p[i] & 0xf];
            b->len += 6;
        } else {
            w[1] = e;
            b->len += 2;
        }
        i++;
    }
    if (buf_reserve(b, 1) != 0)
        return;
    b->data[b->len++] = '"';
}

void mdb_buf_json_str(mdb_buf *b, const char *s, size_t n)
{
    json_str(b, s, n);
}

/* Error texts may echo request bytes (a path, a name): anything that is not
 * RFC 3629 UTF-8 becomes U+FFFD so the reply stays valid JSON. */
void core_json_str_utf8(mdb_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    mdb_buf clean;
    mdb_buf_init(&clean);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] < 0x80)
            run++;
        buf_append(&clean, p + i, run - i);
        i = run;
        if (i == n)
            break;
        size_t l = core_utf8_seq(p + i, n - i);
        if (l)
            buf_append(&clean, p + i, l);
        else
            buf_append(&clean, "\xef\xbf\xbd", 3);
        i += l ? l : 1;
    }
    if (clean.oom)
        b->oom = 1;
    else
        json_str(b, clean.data ? clean.data : "", clean.len);
    mdb_buf_free(&clean);
}

/* Returns NULL (and frees the content) when the buffer hit OOM: a partial
 * result must never be mistaken for a complete one. */
char *mdb_buf_take(mdb_buf *b, size_t *len_out)
{
    if (len_out)
        *len_out = 0;
    if (b->oom || buf_reserve(b, 1) != 0) {
        mdb_buf_free(b);
        return NULL;
    }
    b->data[b->len] = '\0';
    char *d = b->data;
    if (len_out)
        *len_out = b->len;
    mdb_buf_init(b);
    return d;
}

/* ---- low-level encoding helpers ------------------------------------------ */

static inline uint32_t rd_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static inline uint64_t rd_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static inline void wr_u32(unsigned char *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

/* Reads an unsigned LEB128 varint; returns the bytes after it. */
static inline const unsigned char *rd_varint(const unsigned char *p, size_t *out)
{
    size_t v = *p & 0x7f;
    if (!(*p++ & 0x80)) {
        *out = v;
        return p;
    }
    unsigned shift = 7;
    for (;;) {
        unsigned char c = *p++;
        v |= (size_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            break;
        shift += 7;
    }
    *out = v;
    return p;
}

static void put_varint(mdb_buf *b, size_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        tmp[n++] = c | (v ? 0x80 : 0);
    } while (v);
    buf_append(b, tmp, n);
}

/* Tag + varint length + bytes + NUL: shared by strings and keys. */
static void put_lenbytes(mdb_buf *b, int tag, const char *s, size_t n)
{
    if (n > SIZE_MAX - 16 || buf_reserve(b, n + 12) != 0)
        return;
    if (tag >= 0)
        b->data[b->len++] = (char)tag;
    put_varint(b, n);
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len++] = '\0';
}

/* ---- read-only views ----------------------------------------------------- */

mdb_vtype mdb_val_type(mdb_val v)
{
    if (!v.p)
        return MDB_V_MISSING;
    switch (v.p[0]) {
    case TAG_NULL:
        return MDB_V_NULL;
    case TAG_FALSE:
    case TAG_TRUE:
        return MDB_V_BOOL;
    case TAG_INT:
        return MDB_V_INT;
    case TAG_DOUBLE:
        return MDB_V_DOUBLE;
    case TAG_STRING:
        return MDB_V_STRING;
    case TAG_ARRAY:
        return MDB_V_ARRAY;
    case TAG_OBJECT:
        return MDB_V_OBJECT;
    default:
        return MDB_V_MISSING;
    }
}

bool mdb_val_is_number(mdb_val v)
{
    return v.p && (v.p[0] == TAG_INT || v.p[0] == TAG_DOUBLE);
}

bool mdb_val_bool(mdb_val v)
{
    return v.p && v.p[0] == TAG_TRUE;
}

static inline int64_t load_int(const unsigned char *p)
{
    return (int64_t)rd_u64(p + 1);
}

static inline double load_double(const unsigned char *p)
{
    uint64_t u = rd_u64(p + 1);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Saturating double -> int64 conversion (a plain cast of an out-of-range
 * value is undefined behaviour). */
static int64_t double_to_i64(double d)
{
    if (d != d)
        return 0;
    if (d >= 9223372036854775808.0)
        return INT64_MAX;
    if (d < -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

int64_t mdb_val_int(mdb_val v)
{
    if (!v.p)
        return 0;
    if (v.p[0] == TAG_INT)
        return load_int(v.p);
    if (v.p[0] == TAG_DOUBLE)
        return double_to_i64(load_double(v.p));
    return 0;
}

double mdb_val_double(mdb_val v)
{
    if (!v.p)
        return 0;
    if (v.p[0] == TAG_INT)
        return (double)load_int(v.p);
    if (v.p[0] == TAG_DOUBLE)
        return load_double(v.p);
    return 0;
}

const char *mdb_val_str(mdb_val v, size_t *len_out)
{
    if (!v.p || v.p[0] != TAG_STRING) {
        if (len_out)
            *len_out = 0;
        return NULL;
    }
    size_t n;
    const unsigned char *s = rd_varint(v.p + 1, &n);
    if (len_out)
        *len_out = n;
    return (const char *)s;
}

uint32_t mdb_val_count(mdb_val v)
{
    if (!v.p || (v.p[0] != TAG_ARRAY && v.p[0] != TAG_OBJECT))
        return 0;
    return rd_u32(v.p + 1);
}

/* Size of the value at p; p must point at a valid tag. */
static inline size_t val_size(const unsigned char *p)
{
    switch (p[0]) {
    case TAG_INT:
    case TAG_DOUBLE:
        return 9;
    case TAG_STRING: {
        size_t n;
        const unsigned char *s = rd_varint(p + 1, &n);
        return (size_t)(s - p) + n + 1;
    }
    case TAG_ARRAY:
    case TAG_OBJECT:
        return HDR_SIZE + (size_t)rd_u32(p + 5);
    default:
        return 1;
    }
}

size_t mdb_val_size(mdb_val v)
{
    return v.p ? val_size(v.p) : 0;
}

mdb_val mdb_val_member(mdb_val obj, const char *key, size_t klen)
{
    if (!obj.p || obj.p[0] != TAG_OBJECT)
        return MDB_VAL_MISSING;
    uint32_t left = rd_u32(obj.p + 1);
    const unsigned char *cur = obj.p + HDR_SIZE;
    while (left--) {
        size_t kl;
        const unsigned char *k = rd_varint(cur, &kl);
        const unsigned char *val = k + kl + 1;
        if (kl == klen && (klen == 0 || k[0] == (unsigned char)key[0]) && memcmp(k, key, klen) == 0)
            return (mdb_val){val};
        cur = val + val_size(val);
    }
    return MDB_VAL_MISSING;
}

mdb_val mdb_val_path(mdb_val root, const char *path, size_t plen)
{
    mdb_val v = root;
    const char *seg = path;
    const char *end = path + plen;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        const char *seg_end = dot ? dot : end;
        v = mdb_val_member(v, seg, (size_t)(seg_end - seg));
        if (!v.p || !dot)
            return v;
        seg = dot + 1;
    }
}

void mdb_val_iter_init(mdb_val container, mdb_val_iter *it)
{
    it->cur = NULL;
    it->left = 0;
    it->object = false;
    if (!container.p || (container.p[0] != TAG_ARRAY && container.p[0] != TAG_OBJECT))
        return;
    it->object = container.p[0] == TAG_OBJECT;
    it->left = rd_u32(container.p + 1);
    it->cur = container.p + HDR_SIZE;
}

bool mdb_val_iter_next(mdb_val_iter *it, const char **key, size_t *klen, mdb_val *out)
{
    if (it->left == 0)
        return false;
    it->left--;
    const unsigned char *val = it->cur;
    if (it->object) {
        size_t kl;
        const unsigned char *k = rd_varint(it->cur, &kl);
        if (key)
            *key = (const char *)k;
        if (klen)
            *klen = kl;
        val = k + kl + 1;
    } else {
        if (key)
            *key = NULL;
        if (klen)
            *klen = 0;
    }
    if (out)
        out->p = val;
    it->cur = val + val_size(val);
    return true;
}

/* Exact comparison of an int64 and a double (no rounding of the int). */
static bool int_eq_double(int64_t i, double d)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t t = (int64_t)d;
    return (double)t == d && t == i;
}

bool mdb_val_equal(mdb_val a, mdb_val b)
{
    if (!a.p || !b.p)
        return !a.p && !b.p;
    unsigned ta = a.p[0], tb = b.p[0];
    if (ta == TAG_INT && tb == TAG_INT)
        return load_int(a.p) == load_int(b.p);
    if (ta == TAG_DOUBLE && tb == TAG_DOUBLE)
        return load_double(a.p) == load_double(b.p);
    if (ta == TAG_INT && tb == TAG_DOUBLE)
        return int_eq_double(load_int(a.p), load_double(b.p));
    if (ta == TAG_DOUBLE && tb == TAG_INT)
        return int_eq_double(load_int(b.p), load_double(a.p));
    if (ta != tb)
        return false;
    switch (ta) {
    case TAG_STRING: {
        size_t la, lb;
        const char *sa = mdb_val_str(a, &la);
        const char *sb = mdb_val_str(b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case TAG_ARRAY: {
        if (rd_u32(a.p + 1) != rd_u32(b.p + 1))
            return false;
        mdb_val_iter ia, ib;
        mdb_val ea, eb;
        mdb_val_iter_init(a, &ia);
        mdb_val_iter_init(b, &ib);
        while (mdb_val_iter_next(&ia, NULL, NULL, &ea) && mdb_val_iter_next(&ib, NULL, NULL, &eb))
            if (!mdb_val_equal(ea, eb))
                return false;
        return true;
    }
    case TAG_OBJECT: {
        if (rd_u32(a.p + 1) != rd_u32(b.p + 1))
            return false;
        /* Same count and every member of a found equal in b: with unique
         * keys (json-c objects have them) that is set equality. */
        mdb_val_iter ia;
        const char *k;
        size_t kl;
        mdb_val ea;
        mdb_val_iter_init(a, &ia);
        while (mdb_val_iter_next(&ia, &k, &kl, &ea))
            if (!mdb_val_equal(ea, mdb_val_member(b, k, kl)))
                return false;
        return true;
    }
    default:
        return true; /* null, false, true: the tag is the value */
    }
}

/* ---- JSON output ---------------------------------------------------------- */

static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

/* Writes the decimal form of v into the end of tmp[24]; returns its start. */
static char *fmt_i64(int64_t v, char tmp[24])
{
    char *w = tmp + 24;
    /* Negate in unsigned arithmetic so INT64_MIN works. */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100) * 2;
        u /= 100;
        *--w = digit_pairs[r + 1];
        *--w = digit_pairs[r];
    }
    if (u >= 10) {
        unsigned r = (unsigned)u * 2;
        *--w = digit_pairs[r + 1];
        *--w = digit_pairs[r];
    } else {
        *--w = (char)('0' + u);
    }
    if (v < 0)
        *--w = '-';
    return w;
}

static void put_i64(mdb_buf *out, int64_t v)
{
    char tmp[24];
    char *s = fmt_i64(v, tmp);
    buf_append(out, s, (size_t)(tmp + 24 - s));
}

/* Exact powers of ten (all representable as doubles). */
static const double pow10_tab[] = {1e0, 1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,
                                   1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17};

/* Fast path for doubles that are a short decimal m / 10^k (prices, ratios,
 * coordinates): writes the same text as the %.15g rule below would, without
 * snprintf/strtod. If d == m / 10^k with the quotient correctly rounded,
 * strtod of that decimal gives d back, and with m < 10^15 and
 * 1e-4 <= |d| < 1e15 %.15g prints exactly those digits in fixed notation.
 * k is minimal, so the last digit is not 0. Returns the length, 0 if the
 * value does not qualify. */
static int fmt_short_decimal(double d, char tmp[40])
{
    double a = d < 0 ? -d : d;
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (int k = 0; k < (int)(sizeof pow10_tab / sizeof pow10_tab[0]); k++) {
        double t = a * pow10_tab[k];
        if (t >= 1e15)
            return 0;
        int64_t m = (int64_t)(t + 0.5);
        if ((double)m / pow10_tab[k] != a)
            continue;
        char digits[24];
        char *s = fmt_i64(m, digits);
        int nd = (int)(digits + 24 - s);
        int w = 0;
        if (d < 0)
            tmp[w++] = '-';
        if (nd > k) { /* integer part present */
            memcpy(tmp + w, s, (size_t)(nd - k));
            w += nd - k;
        } else {
            tmp[w++] = '0';
        }
        tmp[w++] = '.';
        if (k == 0) {
            tmp[w++] = '0';
            return w;
        }
        for (int z = nd; z < k; z++)
            tmp[w++] = '0';
        int frac = nd < k ? nd : k;
        memcpy(tmp + w, s + nd - frac, (size_t)frac);
        return w + frac;
    }
    return 0;
}

static void put_double(mdb_buf *out, double d)
{
    if (!isfinite(d)) {
        buf_append(out, "null", 4);
        return;
    }
    if (d == 0) {
        if (signbit(d))
            buf_append(out, "-0.0", 4);
        else
            buf_append(out, "0.0", 3);
        return;
    }
    char tmp[40];
    int n = fmt_short_decimal(d, tmp);
    if (n == 0) {
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
            if (prec == 17 || strtod(tmp, NULL) == d)
                break;
        }
        if (n <= 0 || (size_t)n >= sizeof tmp - 2)
            return; /* cannot happen for a finite double */
        if (!memchr(tmp, '.', (size_t)n) && !memchr(tmp, 'e', (size_t)n)) {
            tmp[n++] = '.';
            tmp[n++] = '0';
        }
    }
    buf_append(out, tmp, (size_t)n);
}

static const unsigned char *to_json_rec(const unsigned char *p, mdb_buf *out)
{
    switch (p[0]) {
    case TAG_NULL:
        buf_append(out, "null", 4);
        return p + 1;
    case TAG_FALSE:
        buf_append(out, "false", 5);
        return p + 1;
    case TAG_TRUE:
        buf_append(out, "true", 4);
        return p + 1;
    case TAG_INT:
        put_i64(out, load_int(p));
        return p + 9;
    case TAG_DOUBLE:
        put_double(out, load_double(p));
        return p + 9;
    case TAG_STRING: {
        size_t n;
        const unsigned char *s = rd_varint(p + 1, &n);
        json_str(out, (const char *)s, n);
        return s + n + 1;
    }
    case TAG_ARRAY: {
        uint32_t n = rd_u32(p + 1);
        const unsigned char *cur = p + HDR_SIZE;
        buf_putc(out, '[');
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                buf_putc(out, ',');
            cur = to_json_rec(cur, out);
        }
        buf_putc(out, ']');
        return cur;
    }
    case TAG_OBJECT: {
        uint32_t n = rd_u32(p + 1);
        const unsigned char *cur = p + HDR_SIZE;
        buf_putc(out, '{');
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                buf_putc(out, ',');
            size_t kl;
            const unsigned char *k = rd_varint(cur, &kl);
            json_str(out, (const char *)k, kl);
            buf_putc(out, ':');
            cur = to_json_rec(k + kl + 1, out);
        }
        buf_putc(out, '}');
        return cur;
    }
    default:
        return p + 1;
    }
}

/* MISSING is written as null so the output is always valid JSON. */
void mdb_val_to_json(mdb_val v, mdb_buf *out)
{
    if (!v.p) {
        buf_append(out, "null", 4);
        return;
    }
    to_json_rec(v.p, out);
}

struct json_object *mdb_val_to_jsonc(mdb_val v)
{
    switch (mdb_val_type(v)) {
    case MDB_V_MISSING:
        return NULL;
    case MDB_V_NULL:
        /* json-c represents null as a NULL pointer: no OOM possible. */
        return NULL;
    case MDB_V_BOOL:
        return json_object_new_boolean(mdb_val_bool(v));
    case MDB_V_INT:
        return json_object_new_int64(load_int(v.p));
    case MDB_V_DOUBLE:
        return json_object_new_double(load_double(v.p));
    case MDB_V_STRING: {
        size_t n;
        const char *s = mdb_val_str(v, &n);
        if (n > INT_MAX)
            return NULL;
        return json_object_new_string_len(s, (int)n);
    }
    case MDB_V_ARRAY: {
        uint32_t n = mdb_val_count(v);
        struct json_object *arr = json_object_new_array_ext(n > INT_MAX ? INT_MAX : (int)n);
        if (!arr)
            return NULL;
        mdb_val_iter it;
        mdb_val e;
        mdb_val_iter_init(v, &it);
        while (mdb_val_iter_next(&it, NULL, NULL, &e)) {
            struct json_object *c = mdb_val_to_jsonc(e);
            if ((!c && mdb_val_type(e) != MDB_V_NULL) || json_object_array_add(arr, c) != 0) {
                json_object_put(c);
                json_object_put(arr);
                return NULL;
            }
        }
        return arr;
    }
    case MDB_V_OBJECT: {
        struct json_object *obj = json_object_new_object();
        if (!obj)
            return NULL;
        mdb_val_iter it;
        const char *k;
        size_t kl;
        mdb_val e;
        mdb_val_iter_init(v, &it);
        while (mdb_val_iter_next(&it, &k, &kl, &e)) {
            struct json_object *c = mdb_val_to_jsonc(e);
            /* k is NUL-terminated in the encoding. */
            if ((!c && mdb_val_type(e) != MDB_V_NULL) || json_object_object_add(obj, k, c) != 0) {
                json_object_put(c);
                json_object_put(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
    return NULL;
}

/* ---- incremental writer --------------------------------------------------- */

static size_t begin_container(mdb_buf *out, unsigned char tag)
{
    size_t mark = out->len;
    if (buf_reserve(out, HDR_SIZE) != 0)
        return mark;
    memset(out->data + out->len, 0, HDR_SIZE);
    out->data[out->len] = (char)tag;
    out->len += HDR_SIZE;
    return mark;
}

size_t mdb_enc_begin_object(mdb_buf *out)
{
    return begin_container(out, TAG_OBJECT);
}

size_t mdb_enc_begin_array(mdb_buf *out)
{
    return begin_container(out, TAG_ARRAY);
}

/* Payloads over 4 GiB cannot be described; such a container is left with
 * a zero size and the buffer flagged, like an allocation failure. */
void mdb_enc_end(mdb_buf *out, size_t mark, uint32_t count)
{
    if (out->oom || mark > out->len || out->len - mark < HDR_SIZE)
        return;
    size_t payload = out->len - mark - HDR_SIZE;
    if (payload > UINT32_MAX) {
        out->oom = 1;
        return;
    }
    unsigned char *h = (unsigned char *)out->data + mark;
    wr_u32(h + 1, count);
    wr_u32(h + 5, (uint32_t)payload);
}

void mdb_enc_key(mdb_buf *out, const char *k, size_t klen)
{
    put_lenbytes(out, -1, k, klen);
}

void mdb_enc_null(mdb_buf *out)
{
    buf_putc(out, TAG_NULL);
}

void mdb_enc_bool(mdb_buf *out, bool v)
{
    buf_putc(out, v ? TAG_TRUE : TAG_FALSE);
}

static void put_tag_u64(mdb_buf *out, unsigned char tag, uint64_t u)
{
    if (buf_reserve(out, 9) != 0)
        return;
    u = htole64(u);
    out->data[out->len] = (char)tag;
    memcpy(out->data + out->len + 1, &u, 8);
    out->len += 9;
}

void mdb_enc_int(mdb_buf *out, int64_t v)
{
    put_tag_u64(out, TAG_INT, (uint64_t)v);
}

void mdb_enc_double(mdb_buf *out, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_tag_u64(out, TAG_DOUBLE, u);
}

void mdb_enc_str(mdb_buf *out, const char *s, size_t n)
{
    put_lenbytes(out, TAG_STRING, s, n);
}

/* MISSING is written as null, so the caller's member count stays right. */
void mdb_enc_copy(mdb_buf *out, mdb_val v)
{
    if (!v.p) {
        mdb_enc_null(out);
        return;
    }
    buf_append(out, v.p, val_size(v.p));
}

/* ---- encoding from json-c --------------------------------------------------- */

/* finite_only: refuse NaN/Infinity. JSON text never has them, but json-c
 * accepts those literals and turns 1e400 into inf. Trees handed to
 * mdb_encode_jsonc keep them (they print as null). */
static int enc_jsonc(const struct json_object *j, mdb_buf *out, int depth, bool finite_only,
                     const char **why)
{
    switch (json_object_get_type(j)) {
    case json_type_null:
        mdb_enc_null(out);
        break;
    case json_type_boolean:
        mdb_enc_bool(out, json_object_get_boolean(j));
        break;
    case json_type_int: {
        int64_t i = json_object_get_int64(j);
        /* json-c clamps uint64 values above INT64_MAX in get_int64. */
        if (i == INT64_MAX) {
            uint64_t u = json_object_get_uint64(j);
            if (u > (uint64_t)INT64_MAX) {
                mdb_enc_double(out, (double)u);
                break;
            }
        }
        mdb_enc_int(out, i);
        break;
    }
    case json_type_double: {
        double d = json_object_get_double(j);
        if (finite_only && !isfinite(d)) {
            *why = "number out of range (NaN and Infinity are not JSON)";
            return -EINVAL;
        }
        mdb_enc_double(out, d);
        break;
    }
    case json_type_string: {
        int n = json_object_get_string_len(j);
        mdb_enc_str(out, json_object_get_string((struct json_object *)j), n > 0 ? (size_t)n : 0);
        break;
    }
    case json_type_array: {
        if (depth >= MDB_MAX_DEPTH) {
            *why = "nesting deeper than 64 levels";
            return -EINVAL;
        }
        size_t n = json_object_array_length(j);
        if (n > UINT32_MAX) {
            *why = "array too large";
            return -EINVAL;
        }
        size_t mark = mdb_enc_begin_array(out);
        for (size_t i = 0; i < n; i++) {
            int rc = enc_jsonc(json_object_array_get_idx(j, i), out, depth + 1, finite_only, why);
            if (rc)
                return rc;
        }
        if (out->len - mark - HDR_SIZE > UINT32_MAX && !out->oom) {
            *why = "value too large";
            return -EINVAL;
        }
        mdb_enc_end(out, mark, (uint32_t)n);
        break;
    }
    case json_type_object: {
        if (depth >= MDB_MAX_DEPTH) {
            *why = "nesting deeper than 64 levels";
            return -EINVAL;
        }
        size_t mark = mdb_enc_begin_object(out);
        uint32_t count = 0;
        /* The foreach macro wants a non-const object; it only reads it. */
        json_object_object_foreach((struct json_object *)j, key, val)
        {
            mdb_enc_key(out, key, strlen(key));
            int rc = enc_jsonc(val, out, depth + 1, finite_only, why);
            if (rc)
                return rc;
            count++;
        }
        if (out->len - mark - HDR_SIZE > UINT32_MAX && !out->oom) {
            *why = "value too large";
            return -EINVAL;
        }
        mdb_enc_end(out, mark, count);
        break;
    }
    }
    return out->oom ? -ENOMEM : 0;
}

int mdb_encode_jsonc(const struct json_object *j, mdb_buf *out)
{
    const char *why = NULL;
    if (out->oom)
        return -ENOMEM;
    size_t start = out->len;
    int rc = enc_jsonc(j, out, 0, false, &why);
    if (out->oom)
        return -ENOMEM;
    if (rc)
        out->len = start; /* drop the partial value */
    return rc;
}

static bool is_json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int mdb_encode_json_text(const char *json, size_t len, mdb_buf *out, const char **why_out)
{
    const char *dummy;
    const char **why = why_out ? why_out : &dummy;
    *why = NULL;
    if (out->oom) {
        *why = "out of memory";
        return -ENOMEM;
    }
    /* The tokener's own limit is one level looser than ours so that the
     * encoder (not json-c) reports depth 65 with a clear reason. */
    struct json_tokener *tok = json_tokener_new_ex(MDB_MAX_DEPTH + 1);
    if (!tok) {
        *why = "out of memory";
        return -ENOMEM;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

    /* json_tokener_parse_ex takes an int length: feed large inputs in
     * chunks. A value ending exactly at the end of the input (a bare number,
     * say) is finished by feeding the terminating NUL. */
    struct json_object *j = NULL;
    enum json_tokener_error err = json_tokener_continue;
    size_t off = 0;
    while (off < len) {
        size_t chunk = len - off;
        if (chunk > (1u << 30))
            chunk = 1u << 30;
        j = json_tokener_parse_ex(tok, json + off, (int)chunk);
        err = json_tokener_get_error(tok);
        if (j || err != json_tokener_continue) {
            off += json_tokener_get_parse_end(tok);
            break;
        }
        off += chunk;
    }
    if (!j && err == json_tokener_continue) {
        j = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
    }
    json_tokener_free(tok);

    int rc;
    if (!j && err != json_tokener_success) {
        *why = json_tokener_error_desc(err);
        return -EINVAL;
    }
    for (size_t i = off; i < len; i++) {
        if (!is_json_ws(json[i])) {
            *why = "unexpected characters after the JSON value";
            json_object_put(j);
            return -EINVAL;
        }
    }
    size_t start = out->len;
    rc = enc_jsonc(j, out, 0, true, why);
    if (out->oom) {
        *why = "out of memory";
        rc = -ENOMEM;
    } else if (rc) {
        out->len = start; /* drop the partial value */
    }
    json_object_put(j);
    return rc;
}

/* ---- time ------------------------------------------------------------------ */

static void put2(char *w, int v)
{
    w[0] = (char)('0' + v / 10);
    w[1] = (char)('0' + v % 10);
}

void mdb_iso8601(int64_t unix_ms, char out[21])
{
    /* Floor division, so -1 ms is 1969-12-31T23:59:59Z. */
    int64_t sec = unix_ms / 1000;
    if (unix_ms % 1000 < 0)
        sec--;
    struct tm tm;
    time_t t = (time_t)sec;
    if ((int64_t)t != sec || !gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        /* Outside years 0000-9999 the fixed format cannot hold it: clamp. */
        memcpy(out, sec < 0 ? "0000-01-01T00:00:00Z" : "9999-12-31T23:59:59Z", 21);
        return;
    }
    int y = tm.tm_year + 1900;
    put2(out, y / 100);
    put2(out + 2, y % 100);
    out[4] = '-';
    put2(out + 5, tm.tm_mon + 1);
    out[7] = '-';
    put2(out + 8, tm.tm_mday);
    out[10] = 'T';
    put2(out + 11, tm.tm_hour);
    out[13] = ':';
    put2(out + 14, tm.tm_min);
    out[16] = ':';
    put2(out + 17, tm.tm_sec);
    out[19] = 'Z';
    out[20] = '\0';
}

int64_t mdb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
