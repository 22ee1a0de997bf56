/*
 * Build tool: writes moltendb.conf(5) from its template, replacing the line
 * '.\" KEYS-FROM-SCHEMAS' with one section per schema: the core's, then
 * each module's as its descriptor declares it. The key list therefore cannot drift from the
 * code; tests/integration/test_man_pages.py checks the result.
 *
 *   gen-conf-man TEMPLATE OUTPUT MODULE.so...
 *
 * A key without help text is written with the marker "UNDOCUMENTED", which
 * that test refuses. The tool is linked with the core objects and exports
 * them, so modules resolve the mdb_* API against it as against the server.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* Text for a roff line: hyphens and backslashes escaped, and a leading
 * '.' or '\'' neutralised so it cannot start a request. */
static void roff(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '-')
            fputs("\\-", out);
        else if (*s == '\\')
            fputs("\\e", out);
        else
            fputc(*s, out);
    }
}

static const char *type_name(const mdb_conf_key *k)
{
    switch (k->type) {
    case MDB_CONF_INT:
        return "integer";
    case MDB_CONF_BOOL:
        return "boolean";
    case MDB_CONF_ENUM:
        return "one of";
    default:
        return k->flags & MDB_CONF_PATH ? "path" : "string";
    }
}

static void write_key(FILE *out, const mdb_conf_key *k)
{
    fputs(".TP\n.B ", out);
    roff(out, k->name);
    fputc('\n', out);
    roff(out, k->help && *k->help ? k->help : "UNDOCUMENTED");
    fputs(".\n.br\nType: ", out);
    roff(out, type_name(k));
    if (k->type == MDB_CONF_ENUM && k->choices) {
        fputs(" \\fB", out);
        roff(out, k->choices);
        fputs("\\fR", out);
    }
    if (k->type == MDB_CONF_INT && (k->min || k->max))
        fprintf(out, " (%lld to %lld)", (long long)k->min, (long long)k->max);
    fputs("; default: ", out);
    if (k->flags & MDB_CONF_SECRET)
        fputs("none (secret", out);
    else if (k->default_value && *k->default_value) {
        fputs("\\fB", out);
        roff(out, k->default_value);
        fputs("\\fR", out);
    } else
        fputs("unset", out);
    if (k->flags & MDB_CONF_SECRET)
        fputs(", never logged)", out);
    if (k->flags & MDB_CONF_REQUIRED)
        fputs("; required", out);
    fputs(".\n", out);
    if (k->flag || k->env) {
        fputs(".br\nAlso ", out);
        if (k->flag) {
            fputs("the option \\fB", out);
            roff(out, k->flag);
            fputs("\\fR", out);
        }
        if (k->flag && k->env)
            fputs(" and ", out);
        if (k->env) {
            fputs("the environment variable \\fB", out);
            roff(out, k->env);
            fputs("\\fR", out);
        }
        fputs(".\n", out);
    }
}

static void write_section(FILE *out, const char *name, const char *description,
                          const mdb_conf_key *schema)
{
    fputs(".SS ", out);
    if (strcmp(name, "core") == 0)
        fputs("Core keys (before any section header)\n", out);
    else {
        fputs("[", out);
        roff(out, name);
        fputs("]\n", out);
    }
    if (description && *description) {
        roff(out, description);
        fputs(".\n", out);
    }
    if (!schema || !schema->name) {
        fputs(".PP\nThis module has no keys.\n", out);
        return;
    }
    for (const mdb_conf_key *k = schema; k->name; k++)
        write_key(out, k);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: gen-conf-man TEMPLATE OUTPUT MODULE.so...\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    FILE *out = fopen(argv[2], "w");
    if (!out) {
        perror(argv[2]);
        fclose(in);
        return 1;
    }
    int rc = 0;
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        if (strcmp(line, ".\\\" KEYS-FROM-SCHEMAS\n") != 0) {
            fputs(line, out);
            continue;
        }
        write_section(out, "core", NULL, core_conf_schema);
        for (int i = 3; i < argc; i++) {
            void *dl = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
            const mdb_module *m = dl ? dlsym(dl, MDB_MODULE_SYMBOL) : NULL;
            if (!m || m->magic != MDB_ABI_MAGIC || !m->name) {
                fprintf(stderr, "gen-conf-man: %s: not a moltendb module (%s)\n", argv[i],
                        dl ? "no descriptor" : dlerror());
                rc = 1;
            } else {
                write_section(out, m->name, m->description, m->config);
            }
            if (dl)
                dlclose(dl);
        }
    }
    fclose(in);
    if (fclose(out) != 0)
        rc = 1;
    return rc;
}
