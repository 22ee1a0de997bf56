/*
 * Unit tests for core/doc.c: mdb_buf, the binary value encoding, its
 * readers, JSON output, equality, the incremental writer and the time
 * helpers. Each test owns the buffers and json-c trees it creates and
 * frees them before returning.
 */
#include "mdb_cunit.h"

#include <moltendb/doc.h>

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Encodes JSON text into b (reset first); asserts success. */
static mdb_val enc(mdb_buf *b, const char *json)
{
    const char *why = NULL;
    mdb_buf_reset(b);
    int rc = mdb_encode_json_text(json, strlen(json), b, &why);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NULL(why);
    return mdb_val_at(b, 0);
}

/* JSON text of v as a malloc'd string (caller frees). */
static char *to_json_str(mdb_val v)
{
    mdb_buf o;
    mdb_buf_init(&o);
    mdb_val_to_json(v, &o);
    CU_ASSERT_FALSE(o.oom);
    return mdb_buf_take(&o, NULL);
}

/* ---- round trips -------------------------------------------------------- */

static const struct {
    const char *in, *out;
} round_trips[] = {
    {"null", "null"},
    {"true", "true"},
    {"false", "false"},
    {"0", "0"},
    {"-1", "-1"},
    {"7", "7"},
    {"-123456789", "-123456789"},
    {"1234567890123456789", "1234567890123456789"},
    {"9223372036854775807", "9223372036854775807"},
    {"-9223372036854775808", "-9223372036854775808"},
    /* beyond int64: kept as the nearest double */
    {"9223372036854775808", "9.223372036854776e+18"},
    {"18446744073709551615", "1.8446744073709552e+19"},
    {"0.1", "0.1"},
    {"1e300", "1e+300"},
    {"-0.0", "-0.0"},
    {"1.0", "1.0"},
    {"1E2", "100.0"},
    {"-2.5", "-2.5"},
    {"1.5e-7", "1.5e-07"},
    {"123456789012.5", "123456789012.5"},
    {"2.2250738585072014e-308", "2.2250738585072014e-308"},
    {"9007199254740993.0", "9007199254740992.0"},
    {"\"\"", "\"\""},
    {"\"hello\"", "\"hello\""},
    {"\"a\\\"b\\\\c\"", "\"a\\\"b\\\\c\""},
    {"\"\\n\\t\\r\\b\\f\"", "\"\\n\\t\\r\\b\\f\""},
    {"\"\\u0001\\u001f\\u0000x\"", "\"\\u0001\\u001f\\u0000x\""},
    {"\"a\\/b\"", "\"a/b\""},
    {"\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e\"",
     "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e\""},
    {"\"\\u00e9\\ud834\\udd1e\"", "\"\xc3\xa9\xf0\x9d\x84\x9e\""},
    {"\"\x7f\"", "\"\x7f\""},
    {"[]", "[]"},
    {"{}", "{}"},
    {"[[]]", "[[]]"},
    {"{\"\":\"\"}", "{\"\":\"\"}"},
    {"[1,[2,[3,[]]],{}]", "[1,[2,[3,[]]],{}]"},
    {"[0.5,-2.25,3,null,true,\"x\"]", "[0.5,-2.25,3,null,true,\"x\"]"},
    {"{\"a\":1,\"b\":{\"c\":[true,false,null],\"d\":{}},\"e\":\"x\"}",
     "{\"a\":1,\"b\":{\"c\":[true,false,null],\"d\":{}},\"e\":\"x\"}"},
    {"  { \"a\" : [ 1 , 2 ] ,\n\t\"b\" : { } }  \n", "{\"a\":[1,2],\"b\":{}}"},
    {"{\"z\":1,\"a\":2,\"m\":3}", "{\"z\":1,\"a\":2,\"m\":3}"},
    {"{\"k.with.dots\":{\"x\\\"y\":1}}", "{\"k.with.dots\":{\"x\\\"y\":1}}"},
    {"{\"n\":[[[[[[[[1]]]]]]]]}", "{\"n\":[[[[[[[[1]]]]]]]]}"},
};

static void test_round_trip_table(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    for (size_t i = 0; i < sizeof round_trips / sizeof round_trips[0]; i++) {
        mdb_val v = enc(&b, round_trips[i].in);
        CU_ASSERT_EQUAL(mdb_val_size(v), b.len);
        char *s = to_json_str(v);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        if (strcmp(s, round_trips[i].out) != 0)
            fprintf(stderr, "\nround trip %zu: %s -> %s (want %s)\n", i, round_trips[i].in, s,
                    round_trips[i].out);
        CU_ASSERT_STRING_EQUAL(s, round_trips[i].out);
        /* Our output parses back to an equal value. */
        mdb_buf b2;
        mdb_buf_init(&b2);
        mdb_val v2 = enc(&b2, s);
        CU_ASSERT_TRUE(mdb_val_equal(v, v2));
        CU_ASSERT_EQUAL(mdb_val_type(v), mdb_val_type(v2));
        mdb_buf_free(&b2);
        free(s);
    }
    mdb_buf_free(&b);
}

static void test_int_extremes_and_types(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_val v = enc(&b, "[9223372036854775807,-9223372036854775808,9223372036854775808,1.0,1]");
    mdb_val_iter it;
    mdb_val e;
    mdb_val_iter_init(v, &it);
    CU_ASSERT_TRUE(mdb_val_iter_next(&it, NULL, NULL, &e));
    CU_ASSERT_EQUAL(mdb_val_type(e), MDB_V_INT);
    CU_ASSERT_EQUAL(mdb_val_int(e), INT64_MAX);
    CU_ASSERT_TRUE(mdb_val_iter_next(&it, NULL, NULL, &e));
    CU_ASSERT_EQUAL(mdb_val_type(e), MDB_V_INT);
    CU_ASSERT_EQUAL(mdb_val_int(e), INT64_MIN);
    CU_ASSERT_TRUE(mdb_val_iter_next(&it, NULL, NULL, &e));
    CU_ASSERT_EQUAL(mdb_val_type(e), MDB_V_DOUBLE);
    CU_ASSERT_EQUAL(mdb_val_double(e), 9223372036854775808.0);
    CU_ASSERT_TRUE(mdb_val_iter_next(&it, NULL, NULL, &e));
    CU_ASSERT_EQUAL(mdb_val_type(e), MDB_V_DOUBLE);
    CU_ASSERT_TRUE(mdb_val_iter_next(&it, NULL, NULL, &e));
    CU_ASSERT_EQUAL(mdb_val_type(e), MDB_V_INT);
    CU_ASSERT_FALSE(mdb_val_iter_next(&it, NULL, NULL, &e));

    /* Writer-made doubles: -0.0 keeps its sign, non-finite prints null. */
    mdb_buf_reset(&b);
    size_t m = mdb_enc_begin_array(&b);
    mdb_enc_double(&b, -0.0);
    mdb_enc_double(&b, NAN);
    mdb_enc_double(&b, INFINITY);
    mdb_enc_double(&b, 1e21);
    mdb_enc_int(&b, INT64_MIN);
    mdb_enc_end(&b, m, 5);
    char *s = to_json_str(mdb_val_at(&b, 0));
    CU_ASSERT_STRING_EQUAL(s, "[-0.0,null,null,1e+21,-9223372036854775808]");
    free(s);
    mdb_buf_free(&b);
}

/* ---- randomized round trip ---------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void rnd_string(char *buf, size_t *len, size_t max)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "0",
                                         " ",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\n",
                                         "\t",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9d\x84\x9e",
                                         "."};
    size_t n = rnd() % 12, w = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
        size_t pl = strlen(p);
        if (w + pl >= max)
            break;
        memcpy(buf + w, p, pl);
        w += pl;
    }
    buf[w] = '\0';
    *len = w;
}

static struct json_object *rnd_tree(int depth)
{
    unsigned kind = (unsigned)(rnd() % (depth >= 6 ? 5 : 7));
    switch (kind) {
    case 0:
        return NULL;
    case 1:
        return json_object_new_boolean(rnd() & 1);
    case 2: {
        uint64_t r = rnd();
        int64_t v;
        switch (r % 4) {
        case 0:
            v = (int64_t)(rnd() % 1000) - 500;
            break;
        case 1:
            v = (r & 8) ? INT64_MAX : INT64_MIN;
            break;
        default:
            v = (int64_t)rnd();
        }
        return json_object_new_int64(v);
    }
    case 3: {
        double d;
        switch (rnd() % 4) {
        case 0:
            d = (double)((int64_t)(rnd() % 2000) - 1000) / 8.0;
            break;
        case 1:
            d = (double)(int64_t)(rnd() % 100000); /* integral doubles */
            break;
        default: {
            uint64_t u;
            do {
                u = rnd();
                memcpy(&d, &u, 8);
            } while (!isfinite(d));
        }
        }
        return json_object_new_double(d);
    }
    case 4: {
        char s[64];
        size_t n;
        rnd_string(s, &n, sizeof s);
        return json_object_new_string_len(s, (int)n);
    }
    case 5: {
        struct json_object *a = json_object_new_array();
        size_t n = rnd() % 5;
        for (size_t i = 0; i < n; i++)
            json_object_array_add(a, rnd_tree(depth + 1));
        return a;
    }
    default: {
        struct json_object *o = json_object_new_object();
        size_t n = rnd() % 5;
        for (size_t i = 0; i < n; i++) {
            char k[64];
            size_t kl;
            rnd_string(k, &kl, sizeof k);
            json_object_object_add(o, k, rnd_tree(depth + 1));
        }
        return o;
    }
    }
}

static void test_random_round_trip(void)
{
    mdb_buf b, b2;
    mdb_buf_init(&b);
    mdb_buf_init(&b2);
    int failures = 0;
    for (int iter = 0; iter < 2000; iter++) {
        struct json_object *t = rnd_tree(0);
        mdb_buf_reset(&b);
        CU_ASSERT_EQUAL_FATAL(mdb_encode_jsonc(t, &b), 0);
        mdb_val v = mdb_val_at(&b, 0);
        CU_ASSERT_EQUAL(mdb_val_size(v), b.len);

        char *s = to_json_str(v);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        struct json_object *back = json_tokener_parse(s);
        int ok = json_object_equal(t, back);
        if (!ok && failures++ < 3)
            fprintf(stderr, "\nrandom %d: %s\n  vs %s\n", iter,
                    json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN), s);
        CU_ASSERT_TRUE(ok);

        /* The json-c view must match too. */
        struct json_object *view = mdb_val_to_jsonc(v);
        CU_ASSERT_TRUE(json_object_equal(t, view));

        /* Our own text re-encodes to the identical bytes (order kept). */
        mdb_buf_reset(&b2);
        const char *why = NULL;
        CU_ASSERT_EQUAL(mdb_encode_json_text(s, strlen(s), &b2, &why), 0);
        CU_ASSERT_TRUE(b2.len == b.len && memcmp(b.data, b2.data, b.len) == 0);
        CU_ASSERT_TRUE(mdb_val_equal(v, mdb_val_at(&b2, 0)));

        json_object_put(view);
        json_object_put(back);
        json_object_put(t);
        free(s);
    }
    mdb_buf_free(&b);
    mdb_buf_free(&b2);
}

/* Reference for the documented double rule: the shortest of %.15g, %.16g,
 * %.17g that reads back identical, plus ".0" when it looks like an int. */
static void ref_double(double d, char out[40])
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    if (!strchr(out, '.') && !strchr(out, 'e') && !strstr(out, "inf") && !strstr(out, "nan"))
        memcpy(out + n, ".0", 3);
}

static void check_double(double d, int *bad)
{
    char want[40];
    ref_double(d, want);
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_enc_double(&b, d);
    char *got = to_json_str(mdb_val_at(&b, 0));
    if (!got || strcmp(got, want) != 0) {
        if ((*bad)++ < 5)
            fprintf(stderr, "\ndouble %.17g: got %s want %s\n", d, got ? got : "(null)", want);
    }
    free(got);
    mdb_buf_free(&b);
}

static void test_double_format(void)
{
    int bad = 0;
    static const double fixed[] = {0.0,
                                   -0.0,
                                   1.0,
                                   -1.0,
                                   0.1,
                                   0.2,
                                   0.3,
                                   1e-4,
                                   9.9e-5,
                                   1e-5,
                                   0.00012,
                                   123.456,
                                   1e14,
                                   1e15,
                                   1e16,
                                   1e15 - 1,
                                   999999999999999.9,
                                   1e21,
                                   1e22,
                                   1e300,
                                   -1e-300,
                                   5e-324,
                                   1.7976931348623157e308,
                                   40.7128,
                                   -74.006,
                                   87.25,
                                   19.99,
                                   0.30000000000000004,
                                   9007199254740992.0,
                                   9007199254740994.0,
                                   123456789012345.6};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_double(fixed[i], &bad);
    static const double p10[] = {1,    10,   100,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                                 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};
    for (int i = 0; i < 20000; i++) {
        /* short decimals m / 10^k, the common case */
        int64_t m = (int64_t)(rnd() % 1000000000000000ull) >> (rnd() % 50);
        if (rnd() & 1)
            m = -m;
        double d = (double)m / p10[rnd() % (sizeof p10 / sizeof p10[0])];
        check_double(d, &bad);
        /* arbitrary finite bit patterns */
        uint64_t u = rnd();
        memcpy(&d, &u, 8);
        if (isfinite(d))
            check_double(d, &bad);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* ---- lookups -------------------------------------------------------------- */

static void test_member_and_path(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_val d = enc(&b, "{\"a\":{\"b\":{\"c\":42}},\"arr\":[{\"x\":1}],\"s\":\"str\","
                        "\"k.d\":{\"e\":7},\"\":{\"\":5},\"last\":true}");
    mdb_val v = mdb_val_member(d, "a", 1);
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_OBJECT);
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_path(d, "a.b.c", 5)), 42);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "a.b.c", 5)), MDB_V_INT);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "a.b", 3)), MDB_V_OBJECT);
    CU_ASSERT_EQUAL(mdb_val_count(mdb_val_path(d, "a.b", 3)), 1);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "last", 4)), MDB_V_BOOL);
    /* plen bounds the path: "a.b.c" out of a longer string */
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_path(d, "a.b.c.zzz", 5)), 42);
    /* missing */
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "a.b.x", 5)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "nope", 4)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "a.b.c.d", 7)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(d, "ar", 2)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(d, "arrr", 4)), MDB_V_MISSING);
    /* through an array / a scalar */
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "arr.0.x", 7)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "arr.x", 5)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "s.x", 3)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(mdb_val_member(d, "s", 1), "x", 1)), MDB_V_MISSING);
    /* keys containing '.' only by member */
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(d, "k.d.e", 5)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_member(mdb_val_member(d, "k.d", 3), "e", 1)), 7);
    /* empty keys */
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_path(d, ".", 1)), 5);
    /* on MISSING and on non-objects */
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(MDB_VAL_MISSING, "a", 1)), MDB_V_MISSING);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(MDB_VAL_MISSING, "a", 1)), MDB_V_MISSING);
    mdb_val arr = mdb_val_member(d, "arr", 3);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(arr, "x", 1)), MDB_V_MISSING);
    mdb_buf_free(&b);
}

/* Many members with long strings (multi-byte varints) and nested
 * containers: every member is found by skipping the others. */
static void test_member_skip_large(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    size_t m = mdb_enc_begin_object(&b);
    char key[32];
    char *big = malloc(20000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 'x', 20000);
    for (int i = 0; i < 1000; i++) {
        int kl = snprintf(key, sizeof key, "key%d", i);
        mdb_enc_key(&b, key, (size_t)kl);
        switch (i % 4) {
        case 0:
            mdb_enc_str(&b, big, (size_t)(i % 3 == 0 ? 20000 : 200));
            break;
        case 1: {
            size_t m2 = mdb_enc_begin_array(&b);
            mdb_enc_int(&b, i);
            mdb_enc_str(&b, big, 130);
            mdb_enc_end(&b, m2, 2);
            break;
        }
        case 2:
            mdb_enc_double(&b, i + 0.5);
            break;
        default: {
            size_t m2 = mdb_enc_begin_object(&b);
            mdb_enc_key(&b, "i", 1);
            mdb_enc_int(&b, i);
            mdb_enc_end(&b, m2, 1);
        }
        }
    }
    mdb_enc_end(&b, m, 1000);
    CU_ASSERT_FALSE(b.oom);
    mdb_val d = mdb_val_at(&b, 0);
    CU_ASSERT_EQUAL(mdb_val_size(d), b.len);
    CU_ASSERT_EQUAL(mdb_val_count(d), 1000);
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        int kl = snprintf(key, sizeof key, "key%d", i);
        mdb_val v = mdb_val_member(d, key, (size_t)kl);
        size_t n = 0;
        switch (i % 4) {
        case 0:
            bad += mdb_val_str(v, &n) == NULL || n != (size_t)(i % 3 == 0 ? 20000 : 200);
            break;
        case 1:
            bad += mdb_val_count(v) != 2 || mdb_val_int(mdb_val_member(v, "i", 1)) != 0;
            {
                mdb_val_iter it;
                mdb_val e;
                mdb_val_iter_init(v, &it);
                bad += !mdb_val_iter_next(&it, NULL, NULL, &e) || mdb_val_int(e) != i;
            }
            break;
        case 2:
            bad += mdb_val_double(v) != i + 0.5;
            break;
        default:
            bad += mdb_val_int(mdb_val_path(d, key, (size_t)kl)) != 0 ||
                   mdb_val_int(mdb_val_member(v, "i", 1)) != i;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_member(d, "key1000", 7)), MDB_V_MISSING);
    free(big);
    mdb_buf_free(&b);
}

/* Values at odd offsets read correctly (memcpy reads; UBSan would flag
 * misaligned loads). */
static void test_unaligned(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_buf_putc(&b, 'x');
    const char *why = NULL;
    const char *js = "{\"a\":[1.5,-7,\"s\"],\"b\":{\"c\":123456789}}";
    CU_ASSERT_EQUAL_FATAL(mdb_encode_json_text(js, strlen(js), &b, &why), 0);
    mdb_val v = mdb_val_at(&b, 1);
    CU_ASSERT_EQUAL(mdb_val_size(v), b.len - 1);
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_path(v, "b.c", 3)), 123456789);
    char *s = to_json_str(v);
    CU_ASSERT_STRING_EQUAL(s, js);
    free(s);
    mdb_buf_free(&b);
}

/* ---- iteration ---------------------------------------------------------- */

static void test_iteration(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_val a = enc(&b, "[1,\"two\",[3],{\"four\":4},null]");
    static const mdb_vtype want[] = {MDB_V_INT, MDB_V_STRING, MDB_V_ARRAY, MDB_V_OBJECT,
                                     MDB_V_NULL};
    mdb_val_iter it;
    const char *k = "sentinel";
    size_t kl = 99;
    mdb_val e;
    int n = 0;
    mdb_val_iter_init(a, &it);
    while (mdb_val_iter_next(&it, &k, &kl, &e)) {
        CU_ASSERT_PTR_NULL(k);
        CU_ASSERT_EQUAL(mdb_val_type(e), want[n]);
        n++;
    }
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_FALSE(mdb_val_iter_next(&it, &k, &kl, &e));

    mdb_buf b2;
    mdb_buf_init(&b2);
    mdb_val o = enc(&b2, "{\"x\":1,\"yy\":[2,3],\"\":\"e\",\"z\":{\"w\":false}}");
    static const char *const keys[] = {"x", "yy", "", "z"};
    n = 0;
    mdb_val_iter_init(o, &it);
    while (mdb_val_iter_next(&it, &k, &kl, &e)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_EQUAL(kl, strlen(keys[n]));
        CU_ASSERT_STRING_EQUAL(k, keys[n]); /* keys are NUL-terminated */
        CU_ASSERT_TRUE(mdb_val_equal(e, mdb_val_member(o, keys[n], strlen(keys[n]))));
        n++;
    }
    CU_ASSERT_EQUAL(n, 4);

    /* scalars, empty containers and MISSING iterate nothing */
    static const char *const empties[] = {"[]", "{}", "5", "\"s\"", "null"};
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        mdb_val_iter_init(enc(&b, empties[i]), &it);
        CU_ASSERT_FALSE(mdb_val_iter_next(&it, &k, &kl, &e));
    }
    mdb_val_iter_init(MDB_VAL_MISSING, &it);
    CU_ASSERT_FALSE(mdb_val_iter_next(&it, NULL, NULL, NULL));
    mdb_buf_free(&b);
    mdb_buf_free(&b2);
}

/* ---- accessors ---------------------------------------------------------- */

static void test_accessors(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_val v;
    size_t n;

    CU_ASSERT_EQUAL(mdb_val_type(MDB_VAL_MISSING), MDB_V_MISSING);
    CU_ASSERT_FALSE(mdb_val_is_number(MDB_VAL_MISSING));
    CU_ASSERT_FALSE(mdb_val_bool(MDB_VAL_MISSING));
    CU_ASSERT_EQUAL(mdb_val_int(MDB_VAL_MISSING), 0);
    CU_ASSERT_EQUAL(mdb_val_double(MDB_VAL_MISSING), 0.0);
    CU_ASSERT_PTR_NULL(mdb_val_str(MDB_VAL_MISSING, &n));
    CU_ASSERT_EQUAL(mdb_val_count(MDB_VAL_MISSING), 0);
    CU_ASSERT_EQUAL(mdb_val_size(MDB_VAL_MISSING), 0);
    CU_ASSERT_PTR_NULL(mdb_val_to_jsonc(MDB_VAL_MISSING));

    v = enc(&b, "null");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_NULL);
    CU_ASSERT_FALSE(mdb_val_is_number(v));
    CU_ASSERT_FALSE(mdb_val_bool(v));
    CU_ASSERT_EQUAL(mdb_val_int(v), 0);
    CU_ASSERT_PTR_NULL(mdb_val_str(v, &n));
    CU_ASSERT_EQUAL(mdb_val_count(v), 0);
    CU_ASSERT_EQUAL(mdb_val_size(v), 1);

    v = enc(&b, "true");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_BOOL);
    CU_ASSERT_TRUE(mdb_val_bool(v));
    CU_ASSERT_FALSE(mdb_val_is_number(v));
    CU_ASSERT_EQUAL(mdb_val_int(v), 0);
    CU_ASSERT_EQUAL(mdb_val_size(v), 1);
    v = enc(&b, "false");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_BOOL);
    CU_ASSERT_FALSE(mdb_val_bool(v));

    v = enc(&b, "-42");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_INT);
    CU_ASSERT_TRUE(mdb_val_is_number(v));
    CU_ASSERT_FALSE(mdb_val_bool(v));
    CU_ASSERT_EQUAL(mdb_val_int(v), -42);
    CU_ASSERT_EQUAL(mdb_val_double(v), -42.0);
    CU_ASSERT_PTR_NULL(mdb_val_str(v, &n));
    CU_ASSERT_EQUAL(mdb_val_count(v), 0);
    CU_ASSERT_EQUAL(mdb_val_size(v), 9);

    v = enc(&b, "-2.9");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_DOUBLE);
    CU_ASSERT_TRUE(mdb_val_is_number(v));
    CU_ASSERT_EQUAL(mdb_val_int(v), -2); /* truncated */
    CU_ASSERT_EQUAL(mdb_val_double(v), -2.9);
    CU_ASSERT_EQUAL(mdb_val_size(v), 9);
    v = enc(&b, "1e300");
    CU_ASSERT_EQUAL(mdb_val_int(v), INT64_MAX); /* saturates, no UB */
    v = enc(&b, "-1e300");
    CU_ASSERT_EQUAL(mdb_val_int(v), INT64_MIN);

    v = enc(&b, "\"h\\u0000i\"");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_STRING);
    CU_ASSERT_FALSE(mdb_val_is_number(v));
    const char *s = mdb_val_str(v, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_TRUE(memcmp(s, "h\0i", 4) == 0); /* NUL-terminated too */
    CU_ASSERT_PTR_NOT_NULL(mdb_val_str(v, NULL));
    CU_ASSERT_EQUAL(mdb_val_size(v), 1 + 1 + 3 + 1);
    CU_ASSERT_EQUAL(mdb_val_count(v), 0);
    CU_ASSERT_EQUAL(mdb_val_double(v), 0.0);

    v = enc(&b, "[1,2,3]");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_ARRAY);
    CU_ASSERT_EQUAL(mdb_val_count(v), 3);
    CU_ASSERT_EQUAL(mdb_val_size(v), 9 + 3 * 9);
    CU_ASSERT_FALSE(mdb_val_is_number(v));
    CU_ASSERT_PTR_NULL(mdb_val_str(v, &n));

    v = enc(&b, "{\"a\":\"b\",\"c\":{}}");
    CU_ASSERT_EQUAL(mdb_val_type(v), MDB_V_OBJECT);
    CU_ASSERT_EQUAL(mdb_val_count(v), 2);
    CU_ASSERT_EQUAL(mdb_val_size(v), b.len);
    CU_ASSERT_EQUAL(mdb_val_int(v), 0);

    /* json-c views per type */
    v = enc(&b, "[null,true,3,2.5,\"x\",[],{\"k\":1}]");
    struct json_object *j = mdb_val_to_jsonc(v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_object_array_length(j), 7);
    CU_ASSERT_PTR_NULL(json_object_array_get_idx(j, 0));
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 1), json_type_boolean));
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 2), json_type_int));
    CU_ASSERT_EQUAL(json_object_get_int64(json_object_array_get_idx(j, 2)), 3);
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 3), json_type_double));
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 4), json_type_string));
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 5), json_type_array));
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 6), json_type_object));
    json_object_put(j);
    mdb_buf_free(&b);
}

/* ---- equality ------------------------------------------------------------- */

static const struct {
    const char *a, *b;
    bool eq;
} equal_cases[] = {
    {"1", "1", true},
    {"1", "1.0", true},
    {"1", "1.5", false},
    {"1", "2", false},
    {"0", "-0.0", true},
    {"0.5", "0.5", true},
    {"9007199254740993", "9007199254740992.0", false},
    {"9223372036854775807", "9223372036854775808", false},
    {"\"a\"", "\"a\"", true},
    {"\"a\"", "\"A\"", false},
    {"\"a\"", "\"ab\"", false},
    {"\"1\"", "1", false},
    {"null", "null", true},
    {"null", "false", false},
    {"true", "true", true},
    {"true", "false", false},
    {"false", "0", false},
    {"[]", "[]", true},
    {"{}", "{}", true},
    {"[]", "{}", false},
    {"[1,2]", "[1,2]", true},
    {"[1,2]", "[1.0,2.0]", true},
    {"[1,2]", "[2,1]", false},
    {"[1]", "[1,1]", false},
    {"{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", true},
    {"{\"a\":1}", "{\"a\":1,\"b\":2}", false},
    {"{\"a\":null}", "{\"b\":null}", false},
    {"{\"a\":{\"b\":[1,{\"c\":2}]}}", "{\"a\":{\"b\":[1,{\"c\":2}]}}", true},
    {"{\"a\":{\"b\":[1,{\"c\":2}]}}", "{\"a\":{\"b\":[1,{\"c\":3}]}}", false},
    {"{\"a\":{\"b\":[1,{\"c\":2}]}}", "{\"a\":{\"b\":[1,{\"d\":2}]}}", false},
    {"{\"x\":[{\"p\":1,\"q\":2}]}", "{\"x\":[{\"q\":2,\"p\":1.0}]}", true},
};

static void test_equal_table(void)
{
    mdb_buf ba, bb;
    mdb_buf_init(&ba);
    mdb_buf_init(&bb);
    for (size_t i = 0; i < sizeof equal_cases / sizeof equal_cases[0]; i++) {
        mdb_val a = enc(&ba, equal_cases[i].a);
        mdb_val b = enc(&bb, equal_cases[i].b);
        bool ab = mdb_val_equal(a, b), ba_ = mdb_val_equal(b, a);
        if (ab != equal_cases[i].eq || ba_ != equal_cases[i].eq)
            fprintf(stderr, "\nequal case %zu: %s vs %s\n", i, equal_cases[i].a, equal_cases[i].b);
        CU_ASSERT_EQUAL(ab, equal_cases[i].eq);
        CU_ASSERT_EQUAL(ba_, equal_cases[i].eq);
        CU_ASSERT_TRUE(mdb_val_equal(a, a));
    }
    mdb_val n = enc(&ba, "null");
    CU_ASSERT_TRUE(mdb_val_equal(MDB_VAL_MISSING, MDB_VAL_MISSING));
    CU_ASSERT_FALSE(mdb_val_equal(MDB_VAL_MISSING, n));
    CU_ASSERT_FALSE(mdb_val_equal(n, MDB_VAL_MISSING));
    mdb_buf_free(&ba);
    mdb_buf_free(&bb);
}

/* ---- incremental writer ------------------------------------------------- */

static void test_writer(void)
{
    mdb_buf src;
    mdb_buf_init(&src);
    mdb_val piece = enc(&src, "{\"deep\":[1,{\"x\":\"y\"}]}");

    mdb_buf b;
    mdb_buf_init(&b);
    size_t m = mdb_enc_begin_object(&b);
    CU_ASSERT_EQUAL(m, 0);
    mdb_enc_key(&b, "name", 4);
    mdb_enc_str(&b, "x\"y", 3);
    mdb_enc_key(&b, "n", 1);
    mdb_enc_int(&b, 5);
    mdb_enc_key(&b, "d", 1);
    mdb_enc_double(&b, 1.5);
    mdb_enc_key(&b, "t", 1);
    mdb_enc_bool(&b, true);
    mdb_enc_key(&b, "f", 1);
    mdb_enc_bool(&b, false);
    mdb_enc_key(&b, "z", 1);
    mdb_enc_null(&b);
    mdb_enc_key(&b, "arr", 3);
    size_t ma = mdb_enc_begin_array(&b);
    mdb_enc_int(&b, 1);
    mdb_enc_str(&b, "two", 3);
    size_t mo = mdb_enc_begin_object(&b);
    mdb_enc_end(&b, mo, 0);
    mdb_enc_end(&b, ma, 3);
    mdb_enc_key(&b, "copy", 4);
    mdb_enc_copy(&b, piece);
    mdb_enc_key(&b, "sub", 3);
    mdb_enc_copy(&b, mdb_val_path(piece, "deep", 4));
    mdb_enc_key(&b, "gone", 4);
    mdb_enc_copy(&b, MDB_VAL_MISSING); /* written as null */
    mdb_enc_end(&b, m, 10);
    CU_ASSERT_FALSE(b.oom);

    mdb_val v = mdb_val_at(&b, 0);
    CU_ASSERT_EQUAL(mdb_val_size(v), b.len);
    CU_ASSERT_EQUAL(mdb_val_count(v), 10);
    char *s = to_json_str(v);
    CU_ASSERT_STRING_EQUAL(s, "{\"name\":\"x\\\"y\",\"n\":5,\"d\":1.5,\"t\":true,\"f\":false,"
                              "\"z\":null,\"arr\":[1,\"two\",{}],"
                              "\"copy\":{\"deep\":[1,{\"x\":\"y\"}]},"
                              "\"sub\":[1,{\"x\":\"y\"}],\"gone\":null}");
    /* equal to the same document parsed from text */
    mdb_buf b2;
    mdb_buf_init(&b2);
    CU_ASSERT_TRUE(mdb_val_equal(v, enc(&b2, s)));
    CU_ASSERT_TRUE(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
    CU_ASSERT_EQUAL(mdb_val_type(mdb_val_path(v, "copy.deep", 9)), MDB_V_ARRAY);
    free(s);

    /* A writer value appended after other bytes, marks are offsets. */
    mdb_buf_reset(&b);
    mdb_buf_append(&b, "junk", 4);
    size_t m2 = mdb_enc_begin_array(&b);
    CU_ASSERT_EQUAL(m2, 4);
    mdb_enc_int(&b, -1);
    mdb_enc_end(&b, m2, 1);
    s = to_json_str(mdb_val_at(&b, m2));
    CU_ASSERT_STRING_EQUAL(s, "[-1]");
    free(s);

    mdb_buf_free(&b);
    mdb_buf_free(&b2);
    mdb_buf_free(&src);
}

/* ---- errors ------------------------------------------------------------- */

static char *nested(const char *open, const char *close, int depth)
{
    size_t ol = strlen(open), cl = strlen(close);
    char *s = malloc((size_t)depth * (ol + cl) + 2);
    size_t w = 0;
    for (int i = 0; i < depth; i++) {
        memcpy(s + w, open, ol);
        w += ol;
    }
    s[w++] = '1';
    for (int i = 0; i < depth; i++) {
        memcpy(s + w, close, cl);
        w += cl;
    }
    s[w] = '\0';
    return s;
}

static void test_parse_errors(void)
{
    static const char *const bad[] = {
        "",      "   ",  "{\"a\":1", "[1,2",   "\"abc",     "tru",          "{\"a\":",  "{} x",
        "1 2",   "[1]]", "{}{}",     "[1,]",   "{\"a\" 1}", "NaN",          "Infinity", "-Infinity",
        "1e400", "-",    "+1",       "/*c*/1", "\"\xff\"",  "{\"a\":[1,2}", "01",       "[1,2]x",
    };
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_buf_append(&b, "keep", 4);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = NULL;
        int rc = mdb_encode_json_text(bad[i], strlen(bad[i]), &b, &why);
        if (rc != -EINVAL)
            fprintf(stderr, "\nparse error case %zu (%s): rc %d\n", i, bad[i], rc);
        CU_ASSERT_EQUAL(rc, -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(why);
        CU_ASSERT_TRUE(why && why[0] != '\0');
        /* nothing appended on error */
        CU_ASSERT_EQUAL(b.len, 4);
        CU_ASSERT_FALSE(b.oom);
    }
    /* the length bounds the input: a valid prefix parses, NULs after it fail */
    const char *why = NULL;
    CU_ASSERT_EQUAL(mdb_encode_json_text("[1]garbage", 3, &b, &why), 0);
    CU_ASSERT_EQUAL(mdb_encode_json_text("{}\0", 3, &b, &why), -EINVAL);
    CU_ASSERT_EQUAL(mdb_encode_json_text("12", 1, &b, &why), 0);
    CU_ASSERT_EQUAL(mdb_val_int(mdb_val_at(&b, b.len - 9)), 1);
    /* why_out may be NULL */
    CU_ASSERT_EQUAL(mdb_encode_json_text("[", 1, &b, NULL), -EINVAL);

    /* depth: 64 nested containers are fine, 65 are not */
    static const char *const opens[][2] = {{"[", "]"}, {"{\"k\":", "}"}};
    for (int k = 0; k < 2; k++) {
        char *ok = nested(opens[k][0], opens[k][1], MDB_MAX_DEPTH);
        char *deep = nested(opens[k][0], opens[k][1], MDB_MAX_DEPTH + 1);
        char *deeper = nested(opens[k][0], opens[k][1], 200);
        mdb_buf_reset(&b);
        why = NULL;
        CU_ASSERT_EQUAL(mdb_encode_json_text(ok, strlen(ok), &b, &why), 0);
        char *s = to_json_str(mdb_val_at(&b, 0));
        CU_ASSERT_STRING_EQUAL(s, ok);
        free(s);
        mdb_buf_reset(&b);
        why = NULL;
        CU_ASSERT_EQUAL(mdb_encode_json_text(deep, strlen(deep), &b, &why), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(why);
        CU_ASSERT_EQUAL(b.len, 0);
        why = NULL;
        CU_ASSERT_EQUAL(mdb_encode_json_text(deeper, strlen(deeper), &b, &why), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(why);
        free(ok);
        free(deep);
        free(deeper);
    }

    /* the same limit from a json-c tree */
    struct json_object *root = json_object_new_array();
    struct json_object *cur = root;
    for (int i = 1; i < MDB_MAX_DEPTH; i++) {
        struct json_object *c = json_object_new_array();
        json_object_array_add(cur, c);
        cur = c;
    }
    mdb_buf_reset(&b);
    CU_ASSERT_EQUAL(mdb_encode_jsonc(root, &b), 0); /* 64 levels */
    json_object_array_add(cur, json_object_new_object());
    mdb_buf_reset(&b);
    mdb_buf_append(&b, "ab", 2);
    CU_ASSERT_EQUAL(mdb_encode_jsonc(root, &b), -EINVAL); /* 65 levels */
    CU_ASSERT_EQUAL(b.len, 2);
    json_object_put(root);
    mdb_buf_free(&b);
}

/* ---- mdb_buf -------------------------------------------------------------- */

static void test_buf(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    CU_ASSERT_PTR_NULL(b.data);
    CU_ASSERT_EQUAL(b.len, 0);

    /* growth is amortised: few reallocations for many appends */
    size_t last_cap = 0;
    int grows = 0;
    for (int i = 0; i < 100000; i++) {
        mdb_buf_putc(&b, (char)('a' + i % 26));
        if (b.cap != last_cap) {
            grows++;
            last_cap = b.cap;
        }
    }
    CU_ASSERT_EQUAL(b.len, 100000);
    CU_ASSERT_TRUE(b.cap >= b.len);
    CU_ASSERT_TRUE(grows <= 20);
    int bad = 0;
    for (int i = 0; i < 100000; i++)
        bad += b.data[i] != (char)('a' + i % 26);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_FALSE(b.oom);

    size_t cap = b.cap;
    mdb_buf_reset(&b);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(b.cap, cap);

    CU_ASSERT_EQUAL(mdb_buf_reserve(&b, 1000000), 0);
    CU_ASSERT_TRUE(b.cap - b.len >= 1000000);

    mdb_buf_puts(&b, "hello");
    mdb_buf_append(&b, ", ", 2);
    mdb_buf_append(&b, NULL, 0);
    mdb_buf_printf(&b, "%s %d %05.1f", "world", -12, 3.25);
    char big[300];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mdb_buf_printf(&b, "<%s>", big); /* longer than the first printf attempt */
    size_t len = 0;
    char *s = mdb_buf_take(&b, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(len, strlen(s));
    CU_ASSERT_EQUAL(len, strlen("hello, world -12 003.2") + 2 + 299);
    CU_ASSERT_TRUE(strncmp(s, "hello, world -12 003.2<qqq", 26) == 0);
    CU_ASSERT_EQUAL(s[len - 1], '>');
    free(s);
    /* take resets the buffer to empty */
    CU_ASSERT_PTR_NULL(b.data);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(b.cap, 0);

    /* take of an empty buffer gives "" */
    s = mdb_buf_take(&b, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_STRING_EQUAL(s, "");
    free(s);

    /* an OOM-flagged buffer ignores appends and take gives NULL */
    mdb_buf_putc(&b, 'x');
    b.oom = 1;
    mdb_buf_puts(&b, "more");
    CU_ASSERT_EQUAL(b.len, 1);
    CU_ASSERT_EQUAL(mdb_buf_reserve(&b, 1), -ENOMEM);
    CU_ASSERT_PTR_NULL(mdb_buf_take(&b, &len));
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_FALSE(b.oom);
    mdb_buf_free(&b);
    mdb_buf_free(&b); /* free after free is fine (re-initialised) */
}

static void test_json_str(void)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "\"plain\""},
        {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
        {"\n\t\r\b\f", 5, "\"\\n\\t\\r\\b\\f\""},
        {"\x01\x1f\x0b", 3, "\"\\u0001\\u001f\\u000b\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\x7f", 10,
         "\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\x7f\""},
        {"<\x1b>", 3, "\"<\\u001b>\""},
    };
    mdb_buf b;
    mdb_buf_init(&b);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mdb_buf_reset(&b);
        mdb_buf_json_str(&b, cases[i].in, cases[i].n);
        mdb_buf_putc(&b, '\0');
        CU_ASSERT_STRING_EQUAL(b.data, cases[i].out);
    }
    /* a long string of escapes grows the buffer correctly */
    char ctl[5000];
    memset(ctl, 0x02, sizeof ctl);
    mdb_buf_reset(&b);
    mdb_buf_json_str(&b, ctl, sizeof ctl);
    CU_ASSERT_EQUAL(b.len, 2 + 6 * sizeof ctl);
    CU_ASSERT_FALSE(b.oom);
    mdb_buf_free(&b);
}

/* ---- time ----------------------------------------------------------------- */

static void test_iso8601(void)
{
    char out[21];
    mdb_iso8601(0, out);
    CU_ASSERT_STRING_EQUAL(out, "1970-01-01T00:00:00Z");
    mdb_iso8601(999, out);
    CU_ASSERT_STRING_EQUAL(out, "1970-01-01T00:00:00Z");
    mdb_iso8601(1000, out);
    CU_ASSERT_STRING_EQUAL(out, "1970-01-01T00:00:01Z");
    mdb_iso8601(1795531396000LL + 789, out);
    CU_ASSERT_STRING_EQUAL(out, "2026-11-24T14:43:16Z");
    mdb_iso8601(951782400000LL, out); /* leap day */
    CU_ASSERT_STRING_EQUAL(out, "2000-02-29T00:00:00Z");
    mdb_iso8601(-1, out);
    CU_ASSERT_STRING_EQUAL(out, "1969-12-31T23:59:59Z");
    mdb_iso8601(-1000, out);
    CU_ASSERT_STRING_EQUAL(out, "1969-12-31T23:59:59Z");
    mdb_iso8601(-1001, out);
    CU_ASSERT_STRING_EQUAL(out, "1969-12-31T23:59:58Z");
    mdb_iso8601(INT64_MAX, out); /* out of range: clamped, still 20 chars */
    CU_ASSERT_EQUAL(strlen(out), 20);
    mdb_iso8601(INT64_MIN, out);
    CU_ASSERT_EQUAL(strlen(out), 20);

    int64_t now = mdb_now_ms();
    int64_t t = (int64_t)time(NULL) * 1000;
    CU_ASSERT_TRUE(now > 1700000000000LL);
    CU_ASSERT_TRUE(now - t > -2000 && now - t < 2000);
}

static const mdb_test_def codec_tests[] = {
    {"round trip table", test_round_trip_table},
    {"int extremes and writer doubles", test_int_extremes_and_types},
    {"randomized round trip", test_random_round_trip},
    {"double formatting", test_double_format},
    {"parse errors and depth", test_parse_errors},
    {NULL, NULL},
};

static const mdb_test_def reader_tests[] = {
    {"member and path", test_member_and_path},
    {"member skip in large object", test_member_skip_large},
    {"unaligned values", test_unaligned},
    {"iteration", test_iteration},
    {"accessors", test_accessors},
    {"equality table", test_equal_table},
    {"incremental writer", test_writer},
    {NULL, NULL},
};

static const mdb_test_def util_tests[] = {
    {"buffer", test_buf},
    {"json string escaping", test_json_str},
    {"iso8601 and now", test_iso8601},
    {NULL, NULL},
};

static const mdb_suite_def mdb_suites[] = {
    {"doc codec", codec_tests},
    {"doc readers", reader_tests},
    {"doc utilities", util_tests},
    {NULL, NULL},
};

MDB_CUNIT_MAIN(mdb_suites)
