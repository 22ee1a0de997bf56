/*
 * Corpus replay for builds without libFuzzer: every file of the folders (or
 * the files) named on the command line goes through the target once, in
 * name order, so a ctest run is deterministic. Exit 0 when at least one
 * input ran; a broken property aborts inside the target.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <moltendb/array.h>
#include <moltendb/doc.h>

#include "fuzz.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    mdb_buf b;
    mdb_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        mdb_buf_append(&b, chunk, n);
    fclose(f);
    if (b.oom) {
        fprintf(stderr, "out of memory reading %s\n", path);
        mdb_buf_free(&b);
        return -1;
    }
    /* An exact-size copy, so ASan sees a read one past the input. */
    size_t len = b.len;
    unsigned char *in = malloc(len ? len : 1);
    if (!in) {
        mdb_buf_free(&b);
        return -1;
    }
    if (len)
        memcpy(in, b.data, len);
    mdb_buf_free(&b);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(in, len);
    free(in);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int *files)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cannot open corpus %s\n", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (mdb_array_grow(&names, &cap, n, sizeof *names, 64) || !(names[n] = strdup(e->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (names)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = run_file(path);
        if (rc == 0)
            (*files)++;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "cannot open corpus %s\n", argv[i]);
            return 1;
        }
        int rc = S_ISDIR(st.st_mode) ? run_dir(argv[i], &files) : run_file(argv[i]);
        if (rc)
            return 1;
        if (!S_ISDIR(st.st_mode))
            files++;
    }
    printf("%d corpus inputs replayed, 0 failed\n", files);
    return files ? 0 : 1;
}
