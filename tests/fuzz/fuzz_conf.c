/*
 * Fuzz target for the config parser (core/conf.c): the input is the text of
 * a moltendb.conf, read through the real entry point core_conf_read_file()
 * from an anonymous memory file (no file system, no state kept between
 * inputs), then checked against the core's schema plus a module section
 * "fz" with a key of every type. Properties: a refusal always says why; an
 * accepted file leaves every value valid for its key (integers in range,
 * booleans canonical, enums among the choices); a secret is printed
 * redacted.
 *
 * Corpus: corpus/conf/ (tests/fuzz/README.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "fuzz.h"

#define SECRET "fz-secret-value-7f3a"

static const mdb_conf_key fz_schema[] = {
    {"n", MDB_CONF_INT, "5", NULL, "--fz-n", 0, -10, 10, NULL, "bounded integer"},
    {"any", MDB_CONF_INT, NULL, NULL, NULL, 0, 0, 0, NULL, "unbounded integer"},
    {"on", MDB_CONF_BOOL, "false", NULL, "--fz-on", 0, 0, 0, NULL, "boolean"},
    {"mode", MDB_CONF_ENUM, "async", NULL, NULL, 0, 0, 0, "async|sync|off", "enum"},
    {"name", MDB_CONF_STRING, NULL, NULL, NULL, 0, 0, 0, NULL, "text"},
    {"hook", MDB_CONF_STRING, NULL, NULL, NULL, MDB_CONF_LIST, 0, 0, NULL, "repeatable"},
    {"password", MDB_CONF_STRING, SECRET, NULL, NULL, MDB_CONF_SECRET, 0, 0, NULL, "secret"},
    MDB_CONF_END,
};

static void check_item(const core_conf_item *it)
{
    const mdb_conf_key *k = it->key;
    if (!it->value)
        return;
    char why[256];
    /* What was accepted passes the same check again. */
    FUZZ_CHECK(core_conf_check_value(k, it->value, why, sizeof why) == 0);
    if (k->type == MDB_CONF_BOOL)
        FUZZ_CHECK(strcmp(it->value, "true") == 0 || strcmp(it->value, "false") == 0);
    if (k->flags & MDB_CONF_LIST)
        FUZZ_CHECK(it->nlist > 0 && strcmp(it->list[it->nlist - 1], it->value) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Drop-ins would be read from /proc/self/fd/conf.d, which never exists. */
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0)
        return 0;

    core_conf c;
    core_conf_init(&c);
    char err[512] = "";
    FUZZ_CHECK(core_conf_declare(&c, "core", core_conf_schema, err, sizeof err) == 0);
    FUZZ_CHECK(core_conf_declare(&c, "fz", fz_schema, err, sizeof err) == 0);
    int rc = core_conf_read_file(&c, path, err, sizeof err);
    if (rc == 0)
        rc = core_conf_apply_file(&c, NULL, err, sizeof err);
    if (rc == 0)
        rc = core_conf_validate(&c, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc < 0 && err[0] != 0 && memchr(err, 0, sizeof err));
    } else {
        for (size_t i = 0; i < c.nitems; i++)
            check_item(&c.items[i]);
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        if (out) {
            core_conf_print(&c, out);
            fclose(out);
            const char *pw = core_conf_get(&c, "fz", "password");
            FUZZ_CHECK(pw);
            const char *line = text ? strstr(text, "\nfz.password = ") : NULL;
            FUZZ_CHECK(line);
            line += strlen("\nfz.password = ");
            FUZZ_CHECK(!*pw || strncmp(line, "(secret, redacted)  # ", 22) == 0);
            if (!memmem(data, size, SECRET, strlen(SECRET)))
                FUZZ_CHECK(!strstr(text, SECRET));
            free(text);
        }
    }
    core_conf_free(&c);
    close(fd);
    return 0;
}
