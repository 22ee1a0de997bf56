/*
 * Unit tests for core/json.c, the strict reader of request JSON: the RFC
 * 8259 grammar (numbers above all), RFC 3629 UTF-8 and \u escapes, NUL in
 * keys, depth, out-of-range integers read as doubles, and the cut of
 * bounded members. Each test frees the trees and copies it gets.
 */
#include "mdb_cunit.h"

#include "core.h"

#include <moltendb/doc.h>

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const core_json_opts opts = {.max_level = 32};

/* Parses n bytes of s; NULL when refused (err filled). */
static json_object *parse_n(const char *s, size_t n, core_json_err *err)
{
    return core_json_parse(s, n, &opts, err);
}

static json_object *parse(const char *s, core_json_err *err)
{
    return parse_n(s, strlen(s), err);
}

/* Asserts s[0..n) is refused as malformed, with a reason containing why. */
static void refused_n(const char *s, size_t n, const char *why)
{
    core_json_err err;
    json_object *j = parse_n(s, n, &err);
    CU_ASSERT_PTR_NULL(j);
    if (j) {
        fprintf(stderr, "accepted: %.*s\n", (int)n, s);
        json_object_put(j);
        return;
    }
    CU_ASSERT_EQUAL(err.status, CORE_JSON_BAD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err.why);
    if (why && !strstr(err.why, why)) {
        fprintf(stderr, "%.*s: '%s' lacks '%s'\n", (int)n, s, err.why, why);
        CU_FAIL("wrong reason");
    }
}

static void refused(const char *s, const char *why)
{
    refused_n(s, strlen(s), why);
}

static void accepted(const char *s)
{
    core_json_err err;
    json_object *j = parse(s, &err);
    if (!j && err.status == CORE_JSON_OK && strcmp(s, "null") == 0)
        return; /* json-c's null is a NULL pointer */
    if (!j)
        fprintf(stderr, "refused: %s (%s at %zu)\n", s, err.why, err.at);
    CU_ASSERT_PTR_NOT_NULL(j);
    json_object_put(j);
}

static void test_numbers_grammar(void)
{
    static const char *const bad[] = {
        "00",    "01",     "-01",       "1.",   ".5",    "-",      "1e",       "1e+",
        "+1",    "-.5",    "1.e5",      "0x10", "1.5.2", "1e5e5",  "--1",      "[1,]",
        "[00]",  "[1.]",   "{\"a\":-}", "[1e]", "[.5]",  "NaN",    "Infinity", "-Infinity",
        "[- 1]", "[1 .5]", "1_000",     "0.",   "-0.",   "[01.5]", "1E",       "[+0]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused(bad[i], NULL);
    refused("[00]", "malformed number");
    refused("[1.]", "malformed number");
    static const char *const good[] = {
        "0",    "-0",  "1",      "-1",      "0.5",    "-0.5",       "1e5",    "1E5",       "1e+5",
        "1e-5", "0e0", "1.5E-3", "[0,1,2]", "[-0.0]", "{\"a\":10}", "1e-400", "123.456e7",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        accepted(good[i]);
}

static void test_numbers_range(void)
{
    core_json_err err;
    /* In range: exact integers. */
    json_object *j = parse("[9223372036854775807,-9223372036854775808,18446744073709551615]", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_TRUE(json_object_is_type(json_object_array_get_idx(j, 0), json_type_int));
    CU_ASSERT_EQUAL(json_object_get_int64(json_object_array_get_idx(j, 0)), INT64_MAX);
    CU_ASSERT_EQUAL(json_object_get_int64(json_object_array_get_idx(j, 1)), INT64_MIN);
    CU_ASSERT_EQUAL(json_object_get_uint64(json_object_array_get_idx(j, 2)), UINT64_MAX);
    json_object_put(j);

    /* Out of range: the nearest double, never a clamped integer. */
    static const struct {
        const char *text;
        double want;
    } wide[] = {
        {"123456789012345678901234567890", 123456789012345678901234567890.0},
        {"-9223372036854775809", -9223372036854775809.0},
        {"18446744073709551616", 18446744073709551616.0},
        {"-123456789012345678901234567890", -123456789012345678901234567890.0},
    };
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "{\"v\":%s,\"w\":[%s]}", wide[i].text, wide[i].text);
        j = parse(text, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        json_object *v = json_object_object_get(j, "v");
        json_object *w = json_object_array_get_idx(json_object_object_get(j, "w"), 0);
        CU_ASSERT_TRUE(json_object_is_type(v, json_type_double));
        CU_ASSERT_TRUE(json_object_is_type(w, json_type_double));
        CU_ASSERT_EQUAL(json_object_get_double(v), wide[i].want);
        CU_ASSERT_EQUAL(json_object_get_double(w), wide[i].want);
        json_object_put(j);
    }
    /* A bare out-of-range integer as the whole text. */
    j = parse("-9223372036854775809", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_object_get_double(j), -9223372036854775809.0);
    json_object_put(j);

    /* Overflowing a double is refused; a 400-digit integer too. */
    refused("[1e400]", "finite");
    refused("-1e309", "finite");
    char big[420];
    memset(big, '9', 400);
    big[400] = '\0';
    refused(big, "finite");
    accepted("1.7976931348623157e308");
}

static void test_utf8(void)
{
    accepted("\"h\xc3\xa9llo \xe4\xb8\xad \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"");
    accepted("{\"\xc3\xa9\":\"\\u00e9\\ud83d\\ude00\\uffff\"}");
    static const char *const bad[] = {
        "\"\xc0\xaf\"",             /* overlong '/' */
        "\"\xc1\xbf\"",             /* overlong */
        "\"\xe0\x80\xaf\"",         /* overlong 3-byte */
        "\"\xf0\x80\x80\xaf\"",     /* overlong 4-byte */
        "\"\xed\xa0\x80\"",         /* encoded surrogate U+D800 */
        "\"\xed\xbf\xbf\"",         /* encoded surrogate U+DFFF */
        "\"\xf4\x90\x80\x80\"",     /* U+110000 */
        "\"\xf5\x80\x80\x80\"",     /* lead byte above F4 */
        "\"\xff\"",                 /* never valid */
        "\"\x80\"",                 /* stray continuation */
        "\"\xc3\"",                 /* cut sequence */
        "\"\xe4\xb8\"",             /* cut sequence */
        "{\"\xc0\xaf\":1}",         /* in a key */
        "{\"a\":\"\xed\xa0\x80\"}", /* in a nested value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused(bad[i], "UTF-8");
    refused("\"\\ud800\"", "surrogate");
    refused("\"\\udc00\"", "surrogate");
    refused("\"\\ud800\\u0041\"", "surrogate");
    refused("\"\\ud800x\"", "surrogate");
    refused("{\"\\udfff\":1}", "surrogate");
    refused("\"\\u12\"", "escape");
    refused("\"\\x41\"", "escape");
    refused("\"a\tb\"", "control character");
    refused_n("\"a\0b\"", 5, "control character");
}

static void test_nul(void)
{
    core_json_err err;
    refused("{\"d9\\u0000x\":1}", "NUL");
    refused("{\"a\":{\"f\\u0000\":1}}", "NUL");
    refused("[{\"\\u0000\":1}]", "NUL");
    /* Values keep a NUL, with their full length. */
    json_object *j = parse("{\"a\":\"x\\u0000y\"}", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_object *a = json_object_object_get(j, "a");
    CU_ASSERT_EQUAL(json_object_get_string_len(a), 3);
    CU_ASSERT_EQUAL(memcmp(json_object_get_string(a), "x\0y", 3), 0);
    json_object_put(j);
}

static void test_grammar(void)
{
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "[",
        "{\"a\":1,}",
        "[1,2,]",
        "{'a':1}",
        "['a']",
        "{\"a\" 1}",
        "{a:1}",
        "[1 2]",
        "tru",
        "nul",
        "truex",
        "{\"a\":1} x",
        "[1]]",
        "{\"a\":1}}",
        "\xef\xbb\xbf{}",
        "/*c*/{}",
        "{}//c",
        "[\"a\"",
        "\"abc",
        "{\"a\":}",
        "{,}",
        "[,1]",
        "\"\\",
        "{\"a\"",
        "{\"a\":1 \"b\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused(bad[i], NULL);
    refused("{'a':1}", "double quotes");
    refused("{\"a\":1} x", "after the JSON value");
    static const char *const good[] = {
        "{}",
        "[]",
        " {} ",
        "\t[ ]\r\n",
        "true",
        "false",
        "null",
        "\"\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "{\"a\":[1,{\"b\":null}],\"c\":\"it's\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        accepted(good[i]);
}

static void test_depth(void)
{
    char text[200];
    core_json_err err;
    /* 32 brackets: the value 1 sits at level 32. */
    snprintf(text, sizeof text, "%.32s1%.32s", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    accepted(text);
    snprintf(text, sizeof text, "%.33s1%.33s", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    json_object *j = parse(text, &err);
    CU_ASSERT_PTR_NULL(j);
    CU_ASSERT_EQUAL(err.status, CORE_JSON_DEEP);
    json_object_put(j);
    /* Very deep input is refused without recursion. */
    size_t n = 100000;
    char *deep = malloc(2 * n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(deep);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    j = parse_n(deep, 2 * n, &err);
    CU_ASSERT_PTR_NULL(j);
    CU_ASSERT_EQUAL(err.status, CORE_JSON_DEEP);
    free(deep);
}

static void test_bound(void)
{
    static const char *const members[] = {"data", "keys", NULL};
    core_json_opts o = {.max_level = 32, .bound = members, .bound_max = 2};
    core_json_err err;
    json_object *j;
    const char *text = "{\"collection\":\"c\",\"d\\u0061ta\":[{},{\"a\":[1,2,3,4]},{},{},{}],"
                       "\"keys\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4},\"other\":[1,2,3,4],"
                       "\"x\":{\"data\":[1,2,3,4]}}";
    j = core_json_parse(text, strlen(text), &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    /* Cut to bound_max + 1 elements, so still over the bound. */
    CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(j, "data")), 3);
    CU_ASSERT_EQUAL(json_object_object_length(json_object_object_get(j, "keys")), 3);
    /* Other members and nested "data" are untouched. */
    CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(j, "other")), 4);
    json_object *x = json_object_object_get(j, "x");
    CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(x, "data")), 4);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(j, "collection")), "c");
    json_object_put(j);

    /* At the bound: untouched (no copy at all). */
    char *copy = NULL;
    size_t len = 0;
    const char *fits = "{\"data\":[1,2],\"keys\":[\"a\"]}";
    CU_ASSERT_EQUAL(core_json_check(fits, strlen(fits), &o, &copy, &len, &err), 0);
    CU_ASSERT_PTR_NULL(copy);

    /* The cut tail is still checked. */
    const char *bad_tail = "{\"data\":[1,2,3,4,5,01]}";
    CU_ASSERT_EQUAL(core_json_check(bad_tail, strlen(bad_tail), &o, &copy, &len, &err), -1);
    CU_ASSERT_PTR_NULL(copy);

    /* Cut and widened together: the text json-c reads. */
    const char *both = "{\"data\":[1,2,3,99999999999999999999,5],\"n\":-99999999999999999999}";
    CU_ASSERT_EQUAL(core_json_check(both, strlen(both), &o, &copy, &len, &err), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    CU_ASSERT_STRING_EQUAL(copy, "{\"data\":[1,2,3],\"n\":-99999999999999999999e0}");
    CU_ASSERT_EQUAL(len, strlen(copy));
    free(copy);
}

/* A million empty documents: checked and cut in well under a second. */
static void test_bound_large(void)
{
    static const char *const members[] = {"data", NULL};
    core_json_opts o = {.max_level = 32, .bound = members, .bound_max = 1000};
    size_t n = 1000000;
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_buf_puts(&b, "{\"collection\":\"c\",\"data\":[");
    for (size_t i = 0; i < n; i++)
        mdb_buf_puts(&b, i ? ",{}" : "{}");
    mdb_buf_puts(&b, "]}");
    CU_ASSERT_FALSE_FATAL(b.oom);
    core_json_err err;
    json_object *j = core_json_parse(b.data, b.len, &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(j, "data")), 1001);
    json_object_put(j);
    mdb_buf_free(&b);
}

/* Error texts: bytes that are not UTF-8 come out as U+FFFD, the rest as
 * mdb_buf_json_str writes it. */
static void test_error_text_escape(void)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"Not found: GET /a\xff\xfe", 19, "\"Not found: GET /a\xef\xbf\xbd\xef\xbf\xbd\""},
        {"'\xc0\xaf' \xed\xa0\x80", 8,
         "\"'\xef\xbf\xbd\xef\xbf\xbd' \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"cut \xe4\xb8", 6, "\"cut \xef\xbf\xbd\xef\xbf\xbd\""},
        {"ok \xc3\xa9 \xf0\x9f\x98\x80 \"q\"\n", 15,
         "\"ok \xc3\xa9 \xf0\x9f\x98\x80 \\\"q\\\"\\n\""},
        {"nul\0x", 5, "\"nul\\u0000x\""},
        {"", 0, "\"\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mdb_buf b;
        mdb_buf_init(&b);
        core_json_str_utf8(&b, cases[i].in, cases[i].n);
        char *got = mdb_buf_take(&b, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(got);
        if (strcmp(got, cases[i].out) != 0)
            fprintf(stderr, "case %zu: %s\n", i, got);
        CU_ASSERT_STRING_EQUAL(got, cases[i].out);
        free(got);
    }
}

static const mdb_test_def tests[] = {
    {"number grammar", test_numbers_grammar},
    {"integers out of range", test_numbers_range},
    {"strict UTF-8 and escapes", test_utf8},
    {"NUL in keys and values", test_nul},
    {"grammar", test_grammar},
    {"depth", test_depth},
    {"bounded members", test_bound},
    {"bounded member of a million elements", test_bound_large},
    {"error texts are valid UTF-8", test_error_text_escape},
    {NULL, NULL},
};

static const mdb_suite_def mdb_suites[] = {
    {"strict JSON", tests},
    {NULL, NULL},
};

MDB_CUNIT_MAIN(mdb_suites)
