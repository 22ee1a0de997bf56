/*
 * query-engine: JSON Schema validation of documents (README "Schemas").
 *
 * Supported keywords: type (name or list), required, properties,
 * additionalProperties (boolean or schema), enum, const, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum (numbers), minLength, maxLength
 * (code points), pattern (POSIX extended regex, with \d \w \s translated),
 * items (one schema for every element), minItems, maxItems, allOf, anyOf,
 * oneOf, not. Other keywords are ignored, as JSON Schema says.
 *
 * The store calls the validate hook with the user body only, so system
 * fields are invisible to the schema (a deliberate choice: upstream
 * validated its internal fields too, so additionalProperties:false
 * refused every write).
 *
 * Compiled schemas are cached per collection and schema_gen; the cache
 * (module-owned, freed in destroy) is guarded by a mutex.
 */
#include <regex.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "qe.h"

enum {
    QT_OBJECT = 1,
    QT_ARRAY = 2,
    QT_STRING = 4,
    QT_NUMBER = 8,
    QT_INTEGER = 16,
    QT_BOOLEAN = 32,
    QT_NULL = 64
};

typedef struct qe_schema_node qe_schema_node;
struct qe_schema_node {
    bool is_bool, bool_val;
    unsigned types; /* 0 = any */
    const char **required;
    size_t nrequired;
    const char **pnames;
    qe_schema_node **pschemas;
    size_t nprops;
    bool addl_false;
    qe_schema_node *addl; /* additionalProperties schema, or NULL */
    mdb_val *enums;
    size_t nenum;
    bool has_enum, has_const;
    mdb_val cnst;
    bool has_min, has_max, has_xmin, has_xmax;
    double min, max, xmin, xmax;
    int64_t minlen, maxlen, minitems, maxitems; /* -1 = unset */
    qe_schema_node *items;
    regex_t *re;
    qe_schema_node **all, **any, **one;
    size_t nall, nany, none;
    qe_schema_node *not_;
};

struct qe_schema {
    qe_arena arena;
    qe_schema_node *root;
    regex_t **regexes; /* to regfree() */
    size_t nregex, capregex;
};

void qe_schema_free(qe_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nregex; i++) {
        regfree(s->regexes[i]);
        free(s->regexes[i]);
    }
    free(s->regexes);
    qe_arena_free(&s->arena);
    free(s);
}

static qe_schema_node *qe_schema_compile(qe_schema *s, json_object *j, qe_err *e, int depth);

static bool qe_schema_num(json_object *j, double *out)
{
    if (json_object_is_type(j, json_type_int) || json_object_is_type(j, json_type_double)) {
        *out = json_object_get_double(j);
        return true;
    }
    return false;
}

static int qe_schema_type_bit(const char *t)
{
    static const struct {
        const char *n;
        unsigned b;
    } T[] = {{"object", QT_OBJECT}, {"array", QT_ARRAY},     {"string", QT_STRING},
             {"number", QT_NUMBER}, {"integer", QT_INTEGER}, {"boolean", QT_BOOLEAN},
             {"null", QT_NULL}};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (strcmp(T[i].n, t) == 0)
            return (int)T[i].b;
    return -1;
}

static int qe_schema_count_kw(json_object *j, const char *kw, int64_t *out, qe_err *e)
{
    json_object *v;
    *out = -1;
    if (!json_object_object_get_ex(j, kw, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
        return qe_fail(e, 400,
                       "Invalid Schema: Invalid schema: '%s' must be a non-negative integer", kw);
    *out = json_object_get_int64(v);
    return 0;
}

static int qe_schema_num_kw(json_object *j, const char *kw, bool *has, double *out, qe_err *e)
{
    json_object *v;
    if (!json_object_object_get_ex(j, kw, &v))
        return 0;
    if (!qe_schema_num(v, out))
        return qe_fail(e, 400, "Invalid Schema: Invalid schema: '%s' must be a number", kw);
    *has = true;
    return 0;
}

/* An ECMA-ish pattern as POSIX ERE: \d \w \s and their negations. */
static regex_t *qe_schema_regex(qe_schema *s, const char *pat, qe_err *e)
{
    size_t n = strlen(pat);
    char *ere = malloc(n * 16 + 1); /* freed below; every escape grows at most 16x */
    if (!ere) {
        qe_fail(e, 500, "Out of memory");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (pat[i] == '\\' && i + 1 < n) {
            const char *rep = NULL;
            switch (pat[i + 1]) {
            case 'd':
                rep = "[0-9]";
                break;
            case 'D':
                rep = "[^0-9]";
                break;
            case 'w':
                rep = "[A-Za-z0-9_]";
                break;
            case 'W':
                rep = "[^A-Za-z0-9_]";
                break;
            case 's':
                rep = "[[:space:]]";
                break;
            case 'S':
                rep = "[^[:space:]]";
                break;
            default:
                break;
            }
            if (rep) {
                memcpy(ere + o, rep, strlen(rep));
                o += strlen(rep);
                i++;
                continue;
            }
        }
        ere[o++] = pat[i];
    }
    ere[o] = 0;
    regex_t *re = malloc(sizeof *re); /* owned by s->regexes, freed in qe_schema_free() */
    if (!re) {
        free(ere);
        qe_fail(e, 500, "Out of memory");
        return NULL;
    }
    int rc = regcomp(re, ere, REG_EXTENDED | REG_NOSUB);
    free(ere);
    if (rc != 0) {
        free(re);
        qe_fail(e, 400,
                "Invalid Schema: Invalid schema: 'pattern' is not a valid regular expression");
        return NULL;
    }
    if (s->nregex == s->capregex) {
        size_t nc = s->capregex ? s->capregex * 2 : 4;
        regex_t **v = realloc(s->regexes, nc * sizeof *v);
        if (!v) {
            regfree(re);
            free(re);
            qe_fail(e, 500, "Out of memory");
            return NULL;
        }
        s->regexes = v;
        s->capregex = nc;
    }
    s->regexes[s->nregex++] = re;
    return re;
}

static int qe_schema_list(qe_schema *s, json_object *j, const char *kw, qe_schema_node ***out,
                          size_t *n, qe_err *e, int depth)
{
    json_object *v;
    if (!json_object_object_get_ex(j, kw, &v))
        return 0;
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
        return qe_fail(e, 400, "Invalid Schema: Invalid schema: '%s' must be a non-empty array",
                       kw);
    *n = json_object_array_length(v);
    *out = qe_alloc(&s->arena, *n * sizeof **out);
    if (!*out)
        return qe_fail(e, 500, "Out of memory");
    for (size_t i = 0; i < *n; i++)
        if (!((*out)[i] = qe_schema_compile(s, json_object_array_get_idx(v, i), e, depth + 1)))
            return -1;
    return 0;
}

static mdb_val qe_schema_encode(qe_schema *s, json_object *j, qe_err *e)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_val v = MDB_VAL_MISSING;
    if (mdb_encode_jsonc(j, &b) == 0 && !b.oom) {
        unsigned char *p = qe_alloc(&s->arena, b.len ? b.len : 1);
        if (p) {
            memcpy(p, b.data, b.len);
            v.p = p;
        }
    }
    mdb_buf_free(&b);
    if (!v.p)
        qe_fail(e, 500, "Out of memory");
    return v;
}

static qe_schema_node *qe_schema_compile(qe_schema *s, json_object *j, qe_err *e, int depth)
{
    if (depth > 64) {
        qe_fail(e, 400, "Invalid Schema: Invalid schema: nesting too deep");
        return NULL;
    }
    qe_schema_node *n = qe_alloc(&s->arena, sizeof *n);
    if (!n) {
        qe_fail(e, 500, "Out of memory");
        return NULL;
    }
    n->minlen = n->maxlen = n->minitems = n->maxitems = -1;
    if (json_object_is_type(j, json_type_boolean)) {
        n->is_bool = true;
        n->bool_val = json_object_get_boolean(j);
        return n;
    }
    if (!json_object_is_type(j, json_type_object)) {
        qe_fail(e, 400, "Invalid Schema: Invalid schema: %s is not of type \"object\", \"boolean\"",
                j ? json_object_to_json_string_ext((json_object *)j, JSON_C_TO_STRING_PLAIN)
                  : "null");
        return NULL;
    }
    json_object *v;
    if (json_object_object_get_ex(j, "type", &v)) {
        if (json_object_is_type(v, json_type_string)) {
            int b = qe_schema_type_bit(json_object_get_string(v));
            if (b < 0) {
                qe_fail(e, 400, "Invalid Schema: Invalid schema: unknown type '%.*s'", QE_QUOTE_MAX,
                        json_object_get_string(v));
                return NULL;
            }
            n->types = (unsigned)b;
        } else if (json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0) {
            for (size_t i = 0; i < json_object_array_length(v); i++) {
                json_object *t = json_object_array_get_idx(v, i);
                int b = json_object_is_type(t, json_type_string)
                            ? qe_schema_type_bit(json_object_get_string(t))
                            : -1;
                if (b < 0) {
                    qe_fail(e, 400, "Invalid Schema: Invalid schema: 'type' must name JSON types");
                    return NULL;
                }
                n->types |= (unsigned)b;
            }
        } else {
            qe_fail(e, 400,
                    "Invalid Schema: Invalid schema: 'type' must be a string or an array of "
                    "strings");
            return NULL;
        }
    }
    if (json_object_object_get_ex(j, "required", &v)) {
        if (!json_object_is_type(v, json_type_array)) {
            qe_fail(e, 400,
                    "Invalid Schema: Invalid schema: 'required' must be an array of strings");
            return NULL;
        }
        n->nrequired = json_object_array_length(v);
        n->required = qe_alloc(&s->arena, (n->nrequired + 1) * sizeof *n->required);
        if (!n->required) {
            qe_fail(e, 500, "Out of memory");
            return NULL;
        }
        for (size_t i = 0; i < n->nrequired; i++) {
            json_object *r = json_object_array_get_idx(v, i);
            if (!json_object_is_type(r, json_type_string)) {
                qe_fail(e, 400,
                        "Invalid Schema: Invalid schema: 'required' must be an array of strings");
                return NULL;
            }
            n->required[i] = qe_strndup(&s->arena, json_object_get_string(r),
                                        (size_t)json_object_get_string_len(r));
            if (!n->required[i]) {
                qe_fail(e, 500, "Out of memory");
                return NULL;
            }
        }
    }
    if (json_object_object_get_ex(j, "properties", &v)) {
        if (!json_object_is_type(v, json_type_object)) {
            qe_fail(e, 400, "Invalid Schema: Invalid schema: 'properties' must be an object");
            return NULL;
        }
        size_t np = (size_t)json_object_object_length(v);
        n->pnames = qe_alloc(&s->arena, (np + 1) * sizeof *n->pnames);
        n->pschemas = qe_alloc(&s->arena, (np + 1) * sizeof *n->pschemas);
        if (!n->pnames || !n->pschemas) {
            qe_fail(e, 500, "Out of memory");
            return NULL;
        }
        json_object_object_foreach(v, pk, pv)
        {
            n->pnames[n->nprops] = qe_strndup(&s->arena, pk, strlen(pk));
            n->pschemas[n->nprops] = qe_schema_compile(s, pv, e, depth + 1);
            if (!n->pnames[n->nprops] || !n->pschemas[n->nprops])
                return NULL;
            n->nprops++;
        }
    }
    if (json_object_object_get_ex(j, "additionalProperties", &v)) {
        if (json_object_is_type(v, json_type_boolean)) {
            n->addl_false = !json_object_get_boolean(v);
        } else if (!(n->addl = qe_schema_compile(s, v, e, depth + 1))) {
            return NULL;
        }
    }
    if (json_object_object_get_ex(j, "enum", &v)) {
        if (!json_object_is_type(v, json_type_array)) {
            qe_fail(e, 400, "Invalid Schema: Invalid schema: 'enum' must be an array");
            return NULL;
        }
        n->has_enum = true;
        n->nenum = json_object_array_length(v);
        n->enums = qe_alloc(&s->arena, (n->nenum + 1) * sizeof *n->enums);
        if (!n->enums) {
            qe_fail(e, 500, "Out of memory");
            return NULL;
        }
        for (size_t i = 0; i < n->nenum; i++)
            if (!(n->enums[i] = qe_schema_encode(s, json_object_array_get_idx(v, i), e)).p)
                return NULL;
    }
    if (json_object_object_get_ex(j, "const", &v)) {
        n->has_const = true;
        if (!(n->cnst = qe_schema_encode(s, v, e)).p)
            return NULL;
    }
    if (qe_schema_num_kw(j, "minimum", &n->has_min, &n->min, e) ||
        qe_schema_num_kw(j, "maximum", &n->has_max, &n->max, e) ||
        qe_schema_num_kw(j, "exclusiveMinimum", &n->has_xmin, &n->xmin, e) ||
        qe_schema_num_kw(j, "exclusiveMaximum", &n->has_xmax, &n->xmax, e) ||
        qe_schema_count_kw(j, "minLength", &n->minlen, e) ||
        qe_schema_count_kw(j, "maxLength", &n->maxlen, e) ||
        qe_schema_count_kw(j, "minItems", &n->minitems, e) ||
        qe_schema_count_kw(j, "maxItems", &n->maxitems, e))
        return NULL;
    if (json_object_object_get_ex(j, "pattern", &v)) {
        if (!json_object_is_type(v, json_type_string)) {
            qe_fail(e, 400, "Invalid Schema: Invalid schema: 'pattern' must be a string");
            return NULL;
        }
        if (!(n->re = qe_schema_regex(s, json_object_get_string(v), e)))
            return NULL;
    }
    if (json_object_object_get_ex(j, "items", &v)) {
        if (json_object_is_type(v, json_type_array)) {
            qe_fail(e, 400,
                    "Invalid Schema: Invalid schema: 'items' must be a schema (use a single "
                    "schema for every element)");
            return NULL;
        }
        if (!(n->items = qe_schema_compile(s, v, e, depth + 1)))
            return NULL;
    }
    if (qe_schema_list(s, j, "allOf", &n->all, &n->nall, e, depth) ||
        qe_schema_list(s, j, "anyOf", &n->any, &n->nany, e, depth) ||
        qe_schema_list(s, j, "oneOf", &n->one, &n->none, e, depth))
        return NULL;
    if (json_object_object_get_ex(j, "not", &v) &&
        !(n->not_ = qe_schema_compile(s, v, e, depth + 1)))
        return NULL;
    return n;
}

/* Compile a schema (a json-c tree). NULL with err on an invalid schema. */
qe_schema *qe_schema_build(json_object *j, qe_err *e)
{
    qe_schema *s = calloc(1, sizeof *s); /* caller owns: qe_schema_free() */
    if (!s) {
        qe_fail(e, 500, "Out of memory");
        return NULL;
    }
    s->root = qe_schema_compile(s, j, e, 0);
    if (!s->root) {
        qe_schema_free(s);
        return NULL;
    }
    return s;
}

static size_t qe_schema_cp_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static bool qe_schema_valid(const qe_schema_node *n, mdb_val v, int depth)
{
    if (n->is_bool)
        return n->bool_val;
    if (depth > 128)
        return false;
    mdb_vtype t = mdb_val_type(v);
    if (n->types) {
        unsigned have = 0;
        switch (t) {
        case MDB_V_OBJECT:
            have = QT_OBJECT;
            break;
        case MDB_V_ARRAY:
            have = QT_ARRAY;
            break;
        case MDB_V_STRING:
            have = QT_STRING;
            break;
        case MDB_V_INT:
            have = QT_NUMBER | QT_INTEGER;
            break;
        case MDB_V_DOUBLE: {
            /* |d| >= 2^53 is always integral (and may not fit an int64) */
            double d = mdb_val_double(v);
            bool whole =
                d >= 9007199254740992.0 || d <= -9007199254740992.0 || d == (double)(int64_t)d;
            have = QT_NUMBER | (whole ? QT_INTEGER : 0);
            break;
        }
        case MDB_V_BOOL:
            have = QT_BOOLEAN;
            break;
        case MDB_V_NULL:
            have = QT_NULL;
            break;
        default:
            break;
        }
        if (!(have & n->types))
            return false;
    }
    if (n->has_enum) {
        bool ok = false;
        for (size_t i = 0; i < n->nenum && !ok; i++)
            ok = mdb_val_equal(v, n->enums[i]);
        if (!ok)
            return false;
    }
    if (n->has_const && !mdb_val_equal(v, n->cnst))
        return false;
    if (t == MDB_V_INT || t == MDB_V_DOUBLE) {
        double d = mdb_val_double(v);
        if ((n->has_min && d < n->min) || (n->has_max && d > n->max) ||
            (n->has_xmin && d <= n->xmin) || (n->has_xmax && d >= n->xmax))
            return false;
    }
    if (t == MDB_V_STRING) {
        size_t sl;
        const char *s = mdb_val_str(v, &sl);
        size_t cl = qe_schema_cp_len(s, sl);
        if ((n->minlen >= 0 && cl < (size_t)n->minlen) ||
            (n->maxlen >= 0 && cl > (size_t)n->maxlen))
            return false;
        if (n->re && regexec(n->re, s, 0, NULL, 0) != 0)
            return false;
    }
    if (t == MDB_V_OBJECT) {
        for (size_t i = 0; i < n->nrequired; i++)
            if (!mdb_val_member(v, n->required[i], strlen(n->required[i])).p)
                return false;
        if (n->nprops || n->addl || n->addl_false) {
            mdb_val_iter it;
            const char *k;
            size_t kl;
            mdb_val m;
            mdb_val_iter_init(v, &it);
            while (mdb_val_iter_next(&it, &k, &kl, &m)) {
                const qe_schema_node *ps = NULL;
                for (size_t i = 0; i < n->nprops && !ps; i++)
                    if (strlen(n->pnames[i]) == kl && memcmp(n->pnames[i], k, kl) == 0)
                        ps = n->pschemas[i];
                if (ps) {
                    if (!qe_schema_valid(ps, m, depth + 1))
                        return false;
                } else if (n->addl_false) {
                    return false;
                } else if (n->addl && !qe_schema_valid(n->addl, m, depth + 1)) {
                    return false;
                }
            }
        }
    }
    if (t == MDB_V_ARRAY) {
        uint32_t c = mdb_val_count(v);
        if ((n->minitems >= 0 && c < (uint64_t)n->minitems) ||
            (n->maxitems >= 0 && c > (uint64_t)n->maxitems))
            return false;
        if (n->items) {
            mdb_val_iter it;
            mdb_val el;
            mdb_val_iter_init(v, &it);
            while (mdb_val_iter_next(&it, NULL, NULL, &el))
                if (!qe_schema_valid(n->items, el, depth + 1))
                    return false;
        }
    }
    for (size_t i = 0; i < n->nall; i++)
        if (!qe_schema_valid(n->all[i], v, depth + 1))
            return false;
    if (n->nany) {
        bool ok = false;
        for (size_t i = 0; i < n->nany && !ok; i++)
            ok = qe_schema_valid(n->any[i], v, depth + 1);
        if (!ok)
            return false;
    }
    if (n->none) {
        size_t ok = 0;
        for (size_t i = 0; i < n->none; i++)
            ok += qe_schema_valid(n->one[i], v, depth + 1);
        if (ok != 1)
            return false;
    }
    if (n->not_ && qe_schema_valid(n->not_, v, depth + 1))
        return false;
    return true;
}

bool qe_schema_validate(const qe_schema *s, mdb_val v)
{
    return qe_schema_valid(s->root, v, 0);
}

void qe_schema_cache_init(qe_schema_cache *c)
{
    pthread_mutex_init(&c->mu, NULL);
    c->head = NULL;
}

void qe_schema_cache_free(qe_schema_cache *c)
{
    qe_schema_entry *e = c->head;
    while (e) {
        qe_schema_entry *n = e->next;
        qe_schema_free(e->schema);
        free(e->text);
        free(e->coll);
        free(e);
        e = n;
    }
    c->head = NULL;
    pthread_mutex_destroy(&c->mu);
}

/* 1 valid, 0 invalid, -ENOMEM. Unparsable stored schemas accept (they
 * were validated at /schema time; a bad one can only come from a log). */
int qe_schema_cache_check(qe_schema_cache *c, const char *coll, const mdb_coll_meta *meta,
                          mdb_val body)
{
    if (!meta || !meta->schema)
        return 1;
    pthread_mutex_lock(&c->mu);
    qe_schema_entry *e = c->head;
    while (e && strcmp(e->coll, coll) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e)
            e->coll = strdup(coll);
        if (!e || !e->coll) {
            free(e);
            pthread_mutex_unlock(&c->mu);
            return -ENOMEM;
        }
        e->gen = meta->schema_gen + 1; /* force a compile */
        e->next = c->head;
        c->head = e;
    }
    /* the text is compared too: a generation number taken by a commit that
     * then failed may be handed out again with another schema */
    if (e->gen != meta->schema_gen || !e->text || strcmp(e->text, meta->schema) != 0) {
        qe_schema_free(e->schema);
        free(e->text);
        e->schema = NULL;
        e->text = strdup(meta->schema);
        json_object *j = json_tokener_parse(meta->schema);
        qe_err err;
        if (j) {
            e->schema = qe_schema_build(j, &err);
            json_object_put(j);
        }
        e->gen = meta->schema_gen;
    }
    int ok = e->schema ? qe_schema_validate(e->schema, body) : 1;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* The validate hook: documents against the collection's schema on every
 * put and patch (registered by qe_init). */
int qe_validate_hook(const char *collection, const mdb_coll_meta *meta, const char *key,
                     mdb_val body, int is_patch, const char **why_out, void *ud)
{
    qe_mod *m = ud;
    (void)key;
    (void)is_patch;
    int rc = qe_schema_cache_check(&m->schemas, collection, meta, body);
    if (rc == 1)
        return 0;
    if (why_out)
        *why_out = rc == 0 ? "Document does not conform to schema" : "Out of memory";
    return rc == 0 ? -EINVAL : rc;
}
