/*
 * Fuzz target for the value encoding (core/doc.c): any byte string is
 * parsed; what parses must encode, print back as JSON, re-encode to an equal
 * value, and answer lookups without reading out of bounds.
 *
 * Built two ways: with -DMDB_LIBFUZZER and clang -fsanitize=fuzzer it is a
 * libFuzzer target; otherwise main() replays every file of the corpus
 * folders given on the command line, which ctest does on every run.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moltendb/doc.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

#ifndef MDB_LIBFUZZER
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    mdb_buf b;
    mdb_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        mdb_buf_append(&b, chunk, n);
    fclose(f);
    LLVMFuzzerTestOneInput((const uint8_t *)(b.data ? b.data : ""), b.len);
    mdb_buf_free(&b);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "cannot open corpus %s\n", argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (run_file(path) == 0)
                files++;
        }
        closedir(d);
    }
    printf("%d corpus inputs replayed, 0 failed\n", files);
    return files ? 0 : 1;
}
#endif
