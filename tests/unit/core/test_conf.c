/* Unit tests of configuration: precedence (default < file < env < flag),
 * the errors for unknown keys, sections, bad values and required keys, and
 * redaction of secrets. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "mdb_cunit.h"

static const mdb_conf_key mod_schema[] = {
    {"mode", MDB_CONF_ENUM, "async", "MDBTEST_MODE", "--mode", 0, 0, 0, "async|sync", "mode"},
    {"secret", MDB_CONF_STRING, NULL, "MDBTEST_SECRET", "--secret", MDB_CONF_SECRET, 0, 0, NULL,
     "a secret"},
    {"needed", MDB_CONF_STRING, NULL, "MDBTEST_NEEDED", "--needed", MDB_CONF_REQUIRED, 0, 0, NULL,
     "required"},
    {"level", MDB_CONF_INT, "3", NULL, NULL, 0, 1, 9, NULL, "no flag, no env"},
    MDB_CONF_END,
};

static char path[64];

static void write_conf(const char *text)
{
    snprintf(path, sizeof path, "/tmp/mdb-test-conf-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static void setup(core_conf *c)
{
    char err[512];
    core_conf_init(c);
    CU_ASSERT_EQUAL_FATAL(core_conf_declare(c, "core", core_conf_schema, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(core_conf_declare(c, "mod", mod_schema, err, sizeof err), 0);
}

static void test_precedence(void)
{
    core_conf c;
    char err[512];
    setup(&c);
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "1538");
    CU_ASSERT_STRING_EQUAL(core_conf_find(&c, "core", "port")->source, "default");
    write_conf("# comment\nport = 2000\nhost = 127.0.0.1\nmodule = mod\n\n[mod]\nmode = sync\n"
               "needed = x\nlevel = 5\n");
    CU_ASSERT_EQUAL(core_conf_read_file(&c, path, err, sizeof err), 0);
    CU_ASSERT_EQUAL(c.nmodules, 1);
    CU_ASSERT_STRING_EQUAL(c.modules[0], "mod");
    CU_ASSERT_EQUAL(core_conf_apply_file(&c, NULL, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "2000");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "mod", "mode"), "sync");
    CU_ASSERT_TRUE(strstr(core_conf_find(&c, "core", "port")->source, ":2") != NULL);
    setenv("MOLTENDB_PORT", "3000", 1);
    setenv("MOLTENDB_HOST", "::1", 1);
    CU_ASSERT_EQUAL(core_conf_apply_env(&c, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "3000");
    CU_ASSERT_STRING_EQUAL(core_conf_find(&c, "core", "port")->source, "env:MOLTENDB_PORT");
    char *argv[] = {"moltendb", "--port", "4000", "--dev-mode", "--mode=async", NULL};
    CU_ASSERT_EQUAL(core_conf_apply_argv(&c, 5, argv, true, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "4000");
    CU_ASSERT_STRING_EQUAL(core_conf_find(&c, "core", "port")->source, "flag:--port");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "host"), "::1"); /* env beats file */
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "dev-mode"), "true");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "mod", "mode"), "async");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "mod", "level"), "5");
    CU_ASSERT_EQUAL(core_conf_validate(&c, err, sizeof err), 0);
    unsetenv("MOLTENDB_PORT");
    unsetenv("MOLTENDB_HOST");
    core_conf_free(&c);
    unlink(path);
}

static void expect_file_error(const char *text, const char *needle1, const char *needle2)
{
    core_conf c;
    char err[1024] = "";
    setup(&c);
    write_conf(text);
    int rc = core_conf_read_file(&c, path, err, sizeof err);
    if (rc == 0)
        rc = core_conf_apply_file(&c, NULL, err, sizeof err);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    if (!strstr(err, needle1) || (needle2 && !strstr(err, needle2)))
        fprintf(stderr, "unexpected error text: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle1));
    if (needle2)
        CU_ASSERT_PTR_NOT_NULL(strstr(err, needle2));
    core_conf_free(&c);
    unlink(path);
}

static void test_file_errors(void)
{
    char where[96];
    snprintf(where, sizeof where, "/tmp/mdb-test-conf-%d.conf:3", (int)getpid());
    expect_file_error("port = 1\n\nprot = 2\n", where, "unknown key 'prot' in [core]");
    expect_file_error("port = 1\n\nprot = 2\n", "known keys: host, port", NULL);
    expect_file_error("\n[metrics]\nenabled = yes\n", where,
                      "section [metrics] belongs to module 'metrics', which is not loaded");
    expect_file_error("\n\nport = 99999\n", where, "out of range 1..65535");
    expect_file_error("\n\nport = abc\n", "'abc' is not an integer", NULL);
    expect_file_error("[mod]\n\nmode = fast\n", where, "'fast' is not one of async|sync");
    expect_file_error("\n\ndebug = maybe\n", where, "is not a boolean");
    expect_file_error("\n\nthis line has no equals\n", where, "expected 'key = value'");
    expect_file_error("\n\n[broken\n", where, "malformed section header");
    expect_file_error("[mod]\nlevel = 0\n", "0 is out of range 1..9", NULL);
}

/* A NUL byte is refused as such (fgets() used to see a line with no end
 * and called it too long, found by fuzz_conf); lines keep their limit. */
static void test_nul_byte_and_long_lines(void)
{
    core_conf c;
    char err[512] = "";
    setup(&c);
    snprintf(path, sizeof path, "/tmp/mdb-test-conf-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static const char nul_text[] = "port = 1\n\nport = 1\0"
                                   "538\n";
    fwrite(nul_text, 1, sizeof nul_text - 1, f);
    fclose(f);
    CU_ASSERT_EQUAL(core_conf_read_file(&c, path, err, sizeof err), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ".conf:3: NUL byte in the line"));
    core_conf_free(&c);
    char *text = malloc(8300);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memcpy(text, "host = ", 7);
    memset(text + 7, 'x', 8183); /* 8190 bytes: the longest line */
    strcpy(text + 8190, "\nport = 2");
    setup(&c);
    write_conf(text);
    CU_ASSERT_EQUAL(core_conf_read_file(&c, path, err, sizeof err), 0);
    CU_ASSERT_EQUAL(core_conf_apply_file(&c, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL(strlen(core_conf_get(&c, "core", "host")), 8183);
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "2"); /* no final newline */
    core_conf_free(&c);
    text[7 + 8183] = 'x'; /* one byte more */
    text[8191] = 0;
    setup(&c);
    write_conf(text);
    CU_ASSERT_EQUAL(core_conf_read_file(&c, path, err, sizeof err), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ":1: line too long (max 8190 bytes)"));
    core_conf_free(&c);
    free(text);
    unlink(path);
}

static void test_flag_and_env_errors(void)
{
    core_conf c;
    char err[512];
    setup(&c);
    char *a1[] = {"moltendb", "--no-such-flag", NULL};
    CU_ASSERT_NOT_EQUAL(core_conf_apply_argv(&c, 2, a1, true, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown option '--no-such-flag'"));
    /* Not strict (first pass): unknown flags are left for later. */
    CU_ASSERT_EQUAL(core_conf_apply_argv(&c, 2, a1, false, err, sizeof err), 0);
    char *a2[] = {"moltendb", "--port", NULL};
    CU_ASSERT_NOT_EQUAL(core_conf_apply_argv(&c, 2, a2, true, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--port needs a value"));
    char *a3[] = {"moltendb", "--port=0", NULL};
    CU_ASSERT_NOT_EQUAL(core_conf_apply_argv(&c, 2, a3, true, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--port"));
    setenv("MDBTEST_MODE", "turbo", 1);
    CU_ASSERT_NOT_EQUAL(core_conf_apply_env(&c, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "MDBTEST_MODE"));
    unsetenv("MDBTEST_MODE");
    core_conf_free(&c);
}

static void test_required_and_secret(void)
{
    core_conf c;
    char err[512];
    setup(&c);
    CU_ASSERT_NOT_EQUAL(core_conf_validate(&c, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "mod.needed is required"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--needed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "MDBTEST_NEEDED"));
    setenv("MDBTEST_NEEDED", "ok", 1);
    setenv("MDBTEST_SECRET", "hunter2-very-secret", 1);
    CU_ASSERT_EQUAL(core_conf_apply_env(&c, err, sizeof err), 0);
    CU_ASSERT_EQUAL(core_conf_validate(&c, err, sizeof err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    core_conf_print(&c, f);
    fclose(f);
    CU_ASSERT_PTR_NULL(strstr(buf, "hunter2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "mod.secret = (secret, redacted)  # env:MDBTEST_SECRET"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "core.port = 1538  # default"));
    free(buf);
    unsetenv("MDBTEST_NEEDED");
    unsetenv("MDBTEST_SECRET");
    core_conf_free(&c);
}

static void test_duplicate_declarations(void)
{
    core_conf c;
    char err[512];
    setup(&c);
    /* A module may not reuse a flag another section owns. */
    static const mdb_conf_key clash[] = {
        {"p", MDB_CONF_INT, "1", NULL, "--port", 0, 0, 0, NULL, "x"}, MDB_CONF_END};
    CU_ASSERT_NOT_EQUAL(core_conf_declare(&c, "other", clash, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--port"));
    core_conf_free(&c);
}

/* MDB_CONF_LIST: every file line adds a value with its own file:line; an
 * environment value replaces the file's list; flags replace both. */
static void test_repeatable_keys(void)
{
    static const mdb_conf_key list_schema[] = {
        {"run", MDB_CONF_STRING, NULL, "MDBTEST_RUN", "--run", MDB_CONF_LIST, 0, 0, NULL, "x"},
        MDB_CONF_END};
    core_conf c;
    char err[512];
    core_conf_init(&c);
    CU_ASSERT_EQUAL_FATAL(core_conf_declare(&c, "hooks", list_schema, err, sizeof err), 0);
    core_conf_item *it = core_conf_find(&c, "hooks", "run");
    CU_ASSERT_EQUAL(it->nlist, 0);
    write_conf("[hooks]\nrun = /a\n\nrun = /b\n");
    CU_ASSERT_EQUAL(core_conf_read_file(&c, path, err, sizeof err), 0);
    CU_ASSERT_EQUAL(core_conf_apply_file(&c, NULL, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(it->nlist, 2);
    CU_ASSERT_STRING_EQUAL(it->list[0], "/a");
    CU_ASSERT_STRING_EQUAL(it->list[1], "/b");
    char want[128];
    snprintf(want, sizeof want, "file:%s:4", path);
    CU_ASSERT_STRING_EQUAL(it->list_src[1], want);
    setenv("MDBTEST_RUN", "/e", 1);
    CU_ASSERT_EQUAL(core_conf_apply_env(&c, err, sizeof err), 0);
    unsetenv("MDBTEST_RUN");
    CU_ASSERT_EQUAL_FATAL(it->nlist, 1);
    CU_ASSERT_STRING_EQUAL(it->list[0], "/e");
    char *argv[] = {"moltendb", "--run", "/f1", "--run=/f2", NULL};
    CU_ASSERT_EQUAL(core_conf_apply_argv(&c, 4, argv, true, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(it->nlist, 2);
    CU_ASSERT_STRING_EQUAL(it->list[0], "/f1");
    CU_ASSERT_STRING_EQUAL(it->list[1], "/f2");
    CU_ASSERT_STRING_EQUAL(it->list_src[1], "flag:--run");
    core_conf_free(&c);
    unlink(path);
}

static void test_bool_values(void)
{
    bool b;
    const char *yes[] = {"true", "TRUE", "yes", "on", "1"};
    const char *no[] = {"false", "no", "off", "0", ""};
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_TRUE(core_conf_bool_value(yes[i], &b) && b);
        CU_ASSERT_TRUE(core_conf_bool_value(no[i], &b) && !b);
    }
    CU_ASSERT_FALSE(core_conf_bool_value("maybe", &b));
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

/* conf.d beside the main file: *.conf only, in byte order of their names,
 * each starting in the core section; later lines win; errors name the
 * drop-in. */
static void test_dropins(void)
{
    char dir[] = "/tmp/mdb-test-dropins-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char dd[600], main_conf[600], sub[700];
    snprintf(dd, sizeof dd, "%s/conf.d", dir);
    snprintf(main_conf, sizeof main_conf, "%s/moltendb.conf", dir);
    snprintf(sub, sizeof sub, "%s/99-dir.conf", dd);
    CU_ASSERT_EQUAL_FATAL(mkdir(dd, 0700), 0);
    CU_ASSERT_EQUAL_FATAL(mkdir(sub, 0700), 0); /* a folder named *.conf is skipped */
    write_file(dir, "moltendb.conf", "port = 2000\nhost = 127.0.0.1\n[mod]\nneeded = main\n");
    write_file(dd, "20-b.conf", "port = 2020\nmodule = extra\n");
    write_file(dd, "10-a.conf", "[mod]\nmode = sync\nneeded = a\n");
    write_file(dd, "1-first.conf", "port = 2001\n");
    write_file(dd, "notes.txt", "port = 1\n");
    write_file(dd, ".hidden.conf", "port = 2\n");
    core_conf c;
    char err[1024];
    setup(&c);
    CU_ASSERT_EQUAL(core_conf_read_file(&c, main_conf, err, sizeof err), 0);
    CU_ASSERT_EQUAL(core_conf_apply_file(&c, NULL, err, sizeof err), 0);
    /* "1-first" < "10-a" < "20-b" in byte order. */
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "port"), "2020");
    CU_ASSERT_PTR_NOT_NULL(strstr(core_conf_find(&c, "core", "port")->source, "20-b.conf:1"));
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "core", "host"), "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "mod", "mode"), "sync");
    CU_ASSERT_STRING_EQUAL(core_conf_get(&c, "mod", "needed"), "a");
    CU_ASSERT_EQUAL(c.nmodules, 1);
    CU_ASSERT_STRING_EQUAL(c.modules[0], "extra");
    CU_ASSERT_STRING_EQUAL(c.file, main_conf);
    core_conf_free(&c);

    /* A bad line in a drop-in is reported with the drop-in's path. */
    write_file(dd, "30-bad.conf", "\nport = none\n");
    setup(&c);
    CU_ASSERT_EQUAL(core_conf_read_file(&c, main_conf, err, sizeof err), 0);
    CU_ASSERT_NOT_EQUAL(core_conf_apply_file(&c, NULL, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "conf.d/30-bad.conf:2"));
    core_conf_free(&c);

    const char *files[] = {"20-b.conf", "10-a.conf",    "1-first.conf",
                           "notes.txt", ".hidden.conf", "30-bad.conf"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dd, files[i]);
        unlink(p);
    }
    rmdir(sub);
    rmdir(dd);
    unlink(main_conf);
    rmdir(dir);
}

static const mdb_test_def conf_tests[] = {
    {"precedence default < file < env < flag", test_precedence},
    {"file errors name file:line and hint", test_file_errors},
    {"NUL bytes and the line length limit", test_nul_byte_and_long_lines},
    {"flag and env errors", test_flag_and_env_errors},
    {"required keys and secret redaction", test_required_and_secret},
    {"flag clashes between sections", test_duplicate_declarations},
    {"boolean spellings", test_bool_values},
    {"conf.d drop-ins in name order", test_dropins},
    {"repeatable keys", test_repeatable_keys},
    {NULL, NULL},
};
static const mdb_suite_def suites[] = {{"conf", conf_tests}, {NULL, NULL}};
MDB_CUNIT_MAIN(suites)
