/*
 * Fuzz target for schema compilation (query-engine, the JSON Schema subset
 * of /set and /schema): the input's text up to the first line "---" is a
 * schema, parsed as the core parses bodies and compiled by
 * qe_schema_build(); each later line is a document validated against the
 * compiled schema, and so are a few fixed documents and the schema itself.
 * Properties: a schema that does not compile gets a 4xx with a message;
 * validation is a pure function (the same answer twice); nothing leaks.
 *
 * Corpus: corpus/schema/ (tests/fuzz/README.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qe.h"

static const char *const FIXED[] = {
    "{}",
    "{\"name\":\"ann\",\"age\":31,\"tags\":[\"a\",\"b\"],\"addr\":{\"city\":\"Oslo\"}}",
    "{\"name\":1,\"age\":\"x\",\"tags\":{},\"n\":null,\"b\":true,\"f\":-0.5}",
    "{\"a\":{\"b\":{\"c\":[[[]]]}},\"\":\"\",\"e\":\"\\u00e9\\u4e2d\"}",
};

static void validate_text(const qe_schema *s, const char *text, size_t len)
{
    mdb_buf b;
    mdb_buf_init(&b);
    const char *why;
    if (mdb_encode_json_text(text, len, &b, &why) == 0) {
        mdb_val v = mdb_val_at(&b, 0);
        bool first = qe_schema_validate(s, v);
        FUZZ_CHECK(qe_schema_validate(s, v) == first);
    }
    mdb_buf_free(&b);
}

static json_object *parse(const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(MDB_MAX_DEPTH);
    if (!tok)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *j = json_tokener_parse_ex(tok, text, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(j);
        j = NULL;
    }
    json_tokener_free(tok);
    return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    const char *text = (const char *)data, *end = text + size;
    const char *sep = memmem(text, size, "\n---\n", 5);
    size_t slen = sep ? (size_t)(sep - text) : size;
    json_object *sj = parse(text, slen);
    if (!sj)
        return 0;
    qe_err e = {0};
    qe_schema *s = qe_schema_build(sj, &e);
    if (!s) {
        FUZZ_CHECK(e.status >= 400 && e.status < 500 && e.msg[0]);
    } else {
        for (size_t i = 0; i < sizeof FIXED / sizeof *FIXED; i++)
            validate_text(s, FIXED[i], strlen(FIXED[i]));
        validate_text(s, text, slen);
        for (const char *p = sep ? sep + 5 : end; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            validate_text(s, p, (size_t)(le - p));
            p = le + 1;
        }
        qe_schema_free(s);
    }
    json_object_put(sj);
    return 0;
}
