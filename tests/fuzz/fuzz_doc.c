/*
 * Fuzz target for the value encoding (core/doc.c): any byte string is
 * parsed; what parses must encode, print back as JSON, re-encode to an equal
 * value, and answer lookups without reading out of bounds.
 *
 * Corpus: corpus/doc/ (tests/fuzz/README.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <moltendb/doc.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mdb_buf enc, text, again;
    mdb_buf_init(&enc);
    mdb_buf_init(&text);
    mdb_buf_init(&again);
    const char *why = NULL;
    if (mdb_encode_json_text((const char *)data, size, &enc, &why) == 0 && !enc.oom) {
        mdb_val v = mdb_val_at(&enc, 0);
        if (mdb_val_size(v) != enc.len)
            abort();
        mdb_val_to_json(v, &text);
        if (mdb_encode_json_text(text.data, text.len, &again, &why) != 0)
            abort(); /* our own output must parse */
        if (!mdb_val_equal(v, mdb_val_at(&again, 0)))
            abort();
        /* Lookups by keys taken from the input itself. */
        mdb_val_iter it;
        mdb_val_iter_init(v, &it);
        const char *k;
        size_t kl;
        mdb_val m;
        while (mdb_val_iter_next(&it, &k, &kl, &m)) {
            if (k && !mdb_val_member(v, k, kl).p)
                abort();
            if (k)
                (void)mdb_val_path(v, k, kl);
        }
        (void)mdb_val_path(v, "a.b.c", 5);
    } else if (!why) {
        abort(); /* a refusal always says why */
    }
    mdb_buf_free(&enc);
    mdb_buf_free(&text);
    mdb_buf_free(&again);
    return 0;
}
