/*
 * json.c: the strict reader of request JSON. json-c builds the tree, but
 * its tokener accepts more than RFC 8259 even in strict mode ("00", "1.",
 * overlong UTF-8, unpaired surrogate escapes) and changes some input on the
 * way (integers beyond 64 bits are clamped, a NUL in an object key cuts the
 * key). So a single allocation-free pass checks the text first:
 *
 *   - the RFC 8259 grammar, numbers included;
 *   - strings are RFC 3629 UTF-8 without control characters, and \u escapes
 *     name Unicode scalar values (surrogates only as a high-low pair);
 *   - object keys hold no NUL (json-c keeps keys as C strings);
 *   - no value nests deeper than opts->max_level (root = level 0);
 *   - numbers are finite.
 *
 * When the text passes but needs changes before json-c sees it, a second
 * pass writes a copy: integers outside the int64/uint64 range get an "e0"
 * exponent so json-c reads them as the nearest double (what serde_json
 * does), and the array or object of a bounded root member is cut after its
 * first bound_max + 1 elements so a huge batch is refused by its size
 * without building millions of json-c objects first.
 */
#include <errno.h>
#include <limits.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <moltendb/doc.h>

#include "core.h"
#include "utf8.h"

enum { STACK_MAX = 64 };

typedef struct frame {
    unsigned char close; /* '}' or ']' */
    bool bounded;        /* the value of a bounded root member */
    size_t count;        /* elements completed so far */
} frame;

typedef struct scan {
    const unsigned char *s;
    size_t n, i;
    const core_json_opts *o;
    mdb_buf *out;    /* the rewrite (second pass only) */
    size_t copied;   /* s[0..copied) is already in out */
    bool cutting;    /* inside the cut-off tail of a bounded member */
    bool rewrite;    /* the first pass found something to rewrite */
    const char *why; /* set on failure */
    core_json_status st;
    frame stack[STACK_MAX];
    size_t depth;
} scan;

static int fail(scan *sc, core_json_status st, const char *why)
{
    sc->st = st;
    sc->why = why;
    return -1;
}

static void skip_ws(scan *sc)
{
    while (sc->i < sc->n) {
        unsigned char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        sc->i++;
    }
}

/* Copies s[copied..upto) to the rewrite, unless in a cut-off tail. */
static void flush(scan *sc, size_t upto)
{
    if (sc->out && !sc->cutting && upto > sc->copied)
        mdb_buf_append(sc->out, sc->s + sc->copied, upto - sc->copied);
    if (!sc->cutting)
        sc->copied = upto;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Bytes that end a run of plain string characters: the quote, the
 * backslash, control characters and every non-ASCII lead. */
static bool plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* The string at s[i] == '"'. For a key, *ascii receives its decoded form
 * when that is short plain ASCII (for matching bounded members), else "". */
static int scan_string(scan *sc, bool key, char ascii[32])
{
    size_t alen = 0;
    bool ascii_ok = key;
    sc->i++;
    for (;;) {
        size_t i = sc->i;
        while (i < sc->n && plain(sc->s[i])) {
            if (ascii_ok && alen < 31)
                ascii[alen++] = (char)sc->s[i];
            else
                ascii_ok = false;
            i++;
        }
        sc->i = i;
        if (i >= sc->n)
            return fail(sc, CORE_JSON_BAD, "unterminated string");
        unsigned char c = sc->s[i];
        if (c == '"') {
            sc->i++;
            if (key)
                ascii[ascii_ok ? alen : 0] = '\0';
            return 0;
        }
        if (c < 0x20)
            return fail(sc, CORE_JSON_BAD, "control character in a string (escape it)");
        if (c >= 0x80) {
            size_t l = core_utf8_seq(sc->s + i, sc->n - i);
            if (!l)
                return fail(sc, CORE_JSON_BAD, "invalid UTF-8 in a string");
            ascii_ok = false;
            sc->i += l;
            continue;
        }
        /* a backslash */
        if (i + 1 >= sc->n)
            return fail(sc, CORE_JSON_BAD, "unterminated string");
        unsigned char e = sc->s[i + 1];
        char lit = 0;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            lit = (char)e;
            break;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            lit = 1; /* a control character: never part of a bounded name */
            break;
        case 'u': {
            unsigned cp;
            if (i + 6 > sc->n || hex4(sc->s + i + 2, &cp))
                return fail(sc, CORE_JSON_BAD, "invalid \\u escape");
            sc->i = i + 6;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return fail(sc, CORE_JSON_BAD, "unpaired surrogate in a \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (sc->i + 6 > sc->n || sc->s[sc->i] != '\\' || sc->s[sc->i + 1] != 'u' ||
                    hex4(sc->s + sc->i + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return fail(sc, CORE_JSON_BAD, "unpaired surrogate in a \\u escape");
                sc->i += 6;
                ascii_ok = false;
                continue;
            }
            if (cp == 0 && key)
                return fail(sc, CORE_JSON_BAD, "object keys must not contain NUL (\\u0000)");
            if (ascii_ok && cp >= 0x20 && cp < 0x80 && alen < 31)
                ascii[alen++] = (char)cp;
            else
                ascii_ok = false;
            continue;
        }
        default:
            return fail(sc, CORE_JSON_BAD, "invalid escape in a string");
        }
        if (ascii_ok && lit != 1 && alen < 31)
            ascii[alen++] = lit;
        else
            ascii_ok = false;
        sc->i = i + 2;
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Is the decimal integer d[0..n) (no sign, no leading zero) above max? */
static bool above(const unsigned char *d, size_t n, const char *max)
{
    size_t m = strlen(max);
    return n > m || (n == m && memcmp(d, max, m) > 0);
}

static int scan_number(scan *sc)
{
    const unsigned char *s = sc->s;
    size_t start = sc->i, i = sc->i;
    bool neg = s[i] == '-';
    if (neg)
        i++;
    size_t int_start = i;
    if (i < sc->n && s[i] == '0')
        i++;
    else if (i < sc->n && s[i] >= '1' && s[i] <= '9')
        while (i < sc->n && is_digit(s[i]))
            i++;
    else
        return fail(sc, CORE_JSON_BAD, "malformed number");
    size_t int_digits = i - int_start;
    bool integer = true;
    long exp = 0;
    if (i < sc->n && s[i] == '.') {
        integer = false;
        i++;
        if (i >= sc->n || !is_digit(s[i]))
            return fail(sc, CORE_JSON_BAD, "malformed number");
        while (i < sc->n && is_digit(s[i]))
            i++;
    }
    if (i < sc->n && (s[i] == 'e' || s[i] == 'E')) {
        integer = false;
        i++;
        bool eneg = false;
        if (i < sc->n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        if (i >= sc->n || !is_digit(s[i]))
            return fail(sc, CORE_JSON_BAD, "malformed number");
        while (i < sc->n && is_digit(s[i])) {
            if (exp < 100000)
                exp = exp * 10 + (s[i] - '0');
            i++;
        }
        if (eneg)
            exp = -exp;
    }
    /* "01", "1.5.2", "1e5e5", "--1", "0x10": the number would end mid-token. */
    if (i < sc->n && (is_digit(s[i]) || s[i] == '.' || s[i] == '+' || s[i] == '-' || s[i] == '_' ||
                      (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
        return fail(sc, CORE_JSON_BAD, "malformed number");
    sc->i = i;
    bool wide = integer && above(s + int_start, int_digits,
                                 neg ? "9223372036854775808" : "18446744073709551615");
    /* Only a number this large can overflow a double: check it exactly. */
    if ((long)int_digits + exp > 300) {
        char small[64];
        size_t len = i - start;
        char *tmp = len < sizeof small ? small : malloc(len + 1);
        if (!tmp)
            return fail(sc, CORE_JSON_NOMEM, "out of memory");
        memcpy(tmp, s + start, len);
        tmp[len] = '\0';
        double d = strtod(tmp, NULL);
        if (tmp != small)
            free(tmp);
        if (!isfinite(d))
            return fail(sc, CORE_JSON_BAD, "numbers must be finite");
    }
    if (wide) {
        sc->rewrite = true;
        if (sc->out && !sc->cutting) {
            flush(sc, i);
            mdb_buf_append(sc->out, "e0", 2);
        }
    }
    return 0;
}

static int scan_literal(scan *sc)
{
    static const char *const words[] = {"true", "false", "null"};
    for (size_t w = 0; w < 3; w++) {
        size_t l = strlen(words[w]);
        if (sc->n - sc->i >= l && memcmp(sc->s + sc->i, words[w], l) == 0) {
            sc->i += l;
            if (sc->i < sc->n && sc->s[sc->i] >= 'a' && sc->s[sc->i] <= 'z')
                break;
            return 0;
        }
    }
    return fail(sc, CORE_JSON_BAD, "unexpected character");
}

static bool bounded_name(const core_json_opts *o, const char *name)
{
    for (const char *const *b = o->bound; b && *b; b++)
        if (name[0] && strcmp(*b, name) == 0)
            return true;
    return false;
}

static int push(scan *sc, unsigned char close, bool bounded)
{
    if (sc->depth >= STACK_MAX)
        return fail(sc, CORE_JSON_DEEP, "nesting too deep");
    sc->stack[sc->depth++] = (frame){close, bounded, 0};
    sc->i++;
    return 0;
}

static int run(scan *sc)
{
    bool bounded_next = false; /* the next value belongs to a bounded root member */
    char key[32];
    skip_ws(sc);
    goto value;

value:
    if (sc->depth > (size_t)sc->o->max_level)
        return fail(sc, CORE_JSON_DEEP, "nesting too deep");
    if (sc->i >= sc->n)
        return fail(sc, CORE_JSON_BAD, "unexpected end of input");
    {
        unsigned char c = sc->s[sc->i];
        bool b = bounded_next;
        bounded_next = false;
        if (c == '{' || c == '[') {
            if (push(sc, c == '{' ? '}' : ']', b))
                return -1;
            skip_ws(sc);
            if (sc->i < sc->n && sc->s[sc->i] == sc->stack[sc->depth - 1].close) {
                sc->i++;
                sc->depth--;
                goto after;
            }
            if (c == '{')
                goto key;
            goto value;
        }
        int rc;
        if (c == '"')
            rc = scan_string(sc, false, key);
        else if (c == '-' || is_digit(c))
            rc = scan_number(sc);
        else if (c == 't' || c == 'f' || c == 'n')
            rc = scan_literal(sc);
        else if (c == '\'')
            return fail(sc, CORE_JSON_BAD, "strings must use double quotes");
        else if (c == '.' || c == '+')
            return fail(sc, CORE_JSON_BAD, "malformed number");
        else
            return fail(sc, CORE_JSON_BAD, "unexpected character");
        if (rc)
            return -1;
        goto after;
    }

key:
    if (sc->i >= sc->n)
        return fail(sc, CORE_JSON_BAD, "unexpected end of input");
    if (sc->s[sc->i] == '\'')
        return fail(sc, CORE_JSON_BAD, "strings must use double quotes");
    if (sc->s[sc->i] != '"')
        return fail(sc, CORE_JSON_BAD, "expected a string key");
    if (scan_string(sc, true, key))
        return -1;
    bounded_next = sc->depth == 1 && bounded_name(sc->o, key);
    skip_ws(sc);
    if (sc->i >= sc->n || sc->s[sc->i] != ':')
        return fail(sc, CORE_JSON_BAD, sc->i >= sc->n ? "unexpected end of input" : "expected ':'");
    sc->i++;
    skip_ws(sc);
    goto value;

after:
    skip_ws(sc);
    if (sc->depth == 0) {
        if (sc->i < sc->n)
            return fail(sc, CORE_JSON_BAD, "unexpected data after the JSON value");
        return 0;
    }
    if (sc->i >= sc->n)
        return fail(sc, CORE_JSON_BAD, "unexpected end of input");
    {
        frame *f = &sc->stack[sc->depth - 1];
        unsigned char c = sc->s[sc->i];
        if (c == ',') {
            f->count++;
            if (f->bounded && f->count == sc->o->bound_max + 1) {
                /* Keep what came before this comma; drop the rest. */
                sc->rewrite = true;
                flush(sc, sc->i);
                sc->cutting = true;
            }
            sc->i++;
            skip_ws(sc);
            if (f->close == '}')
                goto key;
            goto value;
        }
        if (c == f->close) {
            f->count++;
            if (f->bounded && sc->cutting) {
                sc->cutting = false;
                sc->copied = sc->i; /* resume with the closing bracket */
            }
            sc->i++;
            sc->depth--;
            goto after;
        }
        return fail(sc, CORE_JSON_BAD,
                    f->close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* One pass over s; out is NULL for the check, the rewrite target after. */
static int scan_text(const char *s, size_t n, const core_json_opts *o, mdb_buf *out,
                     core_json_err *err, bool *rewrite)
{
    scan sc = {.s = (const unsigned char *)s, .n = n, .o = o, .out = out};
    int rc = run(&sc);
    if (rc) {
        err->status = sc.st;
        err->why = sc.why;
        err->at = sc.i;
        return -1;
    }
    if (out)
        flush(&sc, n);
    *rewrite = sc.rewrite;
    return 0;
}

int core_json_check(const char *s, size_t n, const core_json_opts *o, char **out, size_t *out_len,
                    core_json_err *err)
{
    *out = NULL;
    *out_len = 0;
    *err = (core_json_err){CORE_JSON_OK, NULL, 0};
    bool rewrite = false;
    if (scan_text(s, n, o, NULL, err, &rewrite))
        return -1;
    if (!rewrite)
        return 0;
    mdb_buf b;
    mdb_buf_init(&b);
    if (scan_text(s, n, o, &b, err, &rewrite) == 0 && !b.oom)
        *out = mdb_buf_take(&b, out_len);
    mdb_buf_free(&b);
    if (!*out) {
        *err = (core_json_err){CORE_JSON_NOMEM, "out of memory", 0};
        return -1;
    }
    return 0;
}

/* ---- the tree --------------------------------------------------------------------- */

static pthread_key_t tokener_key;
static pthread_once_t tokener_once = PTHREAD_ONCE_INIT;

static void tokener_free(void *t)
{
    json_tokener_free(t);
}

static void tokener_key_init(void)
{
    pthread_key_create(&tokener_key, tokener_free);
}

/* One tokener per thread, reset after each text: saves a 2 KiB calloc per
 * request. Freed at thread exit. */
static json_tokener *thread_tokener(void)
{
    pthread_once(&tokener_once, tokener_key_init);
    json_tokener *t = pthread_getspecific(tokener_key);
    if (!t) {
        t = json_tokener_new_ex(MDB_MAX_DEPTH);
        if (t) {
            json_tokener_set_flags(t, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
            pthread_setspecific(tokener_key, t);
        }
    }
    return t;
}

json_object *core_json_parse(const char *s, size_t n, const core_json_opts *o, core_json_err *err)
{
    char *copy;
    size_t copy_len;
    if (o->max_level < 0 || o->max_level >= STACK_MAX || n > INT_MAX) {
        *err = (core_json_err){CORE_JSON_BAD, n > INT_MAX ? "text too large" : "bad options", 0};
        return NULL;
    }
    if (core_json_check(s, n, o, &copy, &copy_len, err))
        return NULL;
    if (copy) {
        s = copy;
        n = copy_len;
    }
    json_tokener *tok = thread_tokener();
    if (tok) {
        json_object *j = json_tokener_parse_ex(tok, s, (int)n);
        /* A number at the very end (a bare "5") ends with the terminator. */
        if (!j && json_tokener_get_error(tok) == json_tokener_continue)
            j = json_tokener_parse_ex(tok, "", 1);
        /* The check passed, so only memory can be short here. */
        bool ok = json_tokener_get_error(tok) == json_tokener_success;
        json_tokener_reset(tok);
        free(copy);
        if (ok)
            return j; /* NULL for the text "null", with err->status OK */
        json_object_put(j);
    } else {
        free(copy);
    }
    *err = (core_json_err){CORE_JSON_NOMEM, "out of memory", 0};
    return NULL;
}
