/* Unit tests of the module loader (every refusal, with its exact log line)
 * and of the router. Fixture modules are built into MDB_FIXTURE_DIR. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "mdb_cunit.h"

static char logpath[64];
static char modpath[2048];

/* Load `names` with the log captured; returns rc and the log text. */
static int load(const char *const *names, size_t n, char *log, size_t loglen)
{
    static core_server srv;
    memset(&srv, 0, sizeof srv);
    core_g = &srv;
    snprintf(logpath, sizeof logpath, "/tmp/mdb-test-loader-%d.log", (int)getpid());
    int fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    core_log_set_stream(fd);
    int rc = core_loader_load(&srv, modpath, (char **)names, n);
    core_log_set_stream(2);
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, log, loglen - 1);
    log[got > 0 ? got : 0] = 0;
    close(fd);
    unlink(logpath);
    core_loader_unload(&srv);
    core_g = NULL;
    return rc;
}

static void expect_refusal(const char *bad, const char *fragment, bool with_path)
{
    const char *names[] = {"storage-memory", "test-auth", bad};
    char log[4096];
    int rc = load(names, 3, log, sizeof log);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    /* Exactly one line, naming the file and the mismatch. */
    char *nl = strchr(log, '\n');
    CU_ASSERT_TRUE(nl && nl[1] == 0);
    if (!strstr(log, fragment))
        fprintf(stderr, "log was: %s", log);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, fragment));
    if (with_path) {
        char file[2200];
        snprintf(file, sizeof file, "%s/%s.so", getenv("MDB_FIXTURE_DIR"), bad);
        CU_ASSERT_PTR_NOT_NULL(strstr(log, file));
    }
}

static void test_refusals(void)
{
    expect_refusal("bad-magic", "bad magic 0x12345678 (expected 0x4d444231): not a moltendb module",
                   true);
    /* Spelled from the macros: the minor version moves as the SDK grows. */
    char want[256];
    snprintf(want, sizeof want,
             "built for ABI %d.%d, the server has ABI %d.%d (major versions must "
             "match; rebuild the module)",
             MDB_ABI_MAJOR + 1, 0, MDB_ABI_MAJOR, MDB_ABI_MINOR);
    expect_refusal("abi-major", want, true);
    snprintf(want, sizeof want, "built for ABI %d.%d, newer than the server's ABI %d.%d",
             MDB_ABI_MAJOR, MDB_ABI_MINOR + 7, MDB_ABI_MAJOR, MDB_ABI_MINOR);
    expect_refusal("abi-minor", want, true);
    expect_refusal("wrong-name",
                   "declares the name 'somebody-else' but is configured as "
                   "'wrong-name'",
                   true);
    expect_refusal("small-struct", "descriptor is 16 bytes, smaller than the ABI 1.0 minimum",
                   true);
    expect_refusal("no-descriptor", "no 'mdb_module_descriptor' symbol: not a moltendb module",
                   true);
    expect_refusal("needs-service",
                   "requires the service 'warp-drive', which no loaded module provides", true);
    expect_refusal("second-storage",
                   "provides 'storage' like module 'storage-memory'; load exactly one", true);
    expect_refusal("no-such-module", "no-such-module.so not found in the module path", false);
    expect_refusal("Bad/Name", "invalid module name", false);
}

/* Config schemas are checked at load time, naming the module and the key. */
static void test_schema_refusals(void)
{
    expect_refusal("schema-int",
                   "module 'schema-int', config key 'count': bad default: 'abc' is not an integer",
                   true);
    expect_refusal("schema-enum", "module 'schema-enum', config key 'mode': an ENUM needs choices",
                   true);
    expect_refusal("schema-name", "module 'schema-name', config key 'Bad Key!': invalid name",
                   true);
    expect_refusal("env-clash-core",
                   "module 'env-clash-core', config key 'port': environment variable "
                   "MOLTENDB_PORT is already used by [core] port",
                   true);
    const char *clash[] = {"storage-memory", "test-auth", "skeleton", "env-clash"};
    char log[4096];
    CU_ASSERT_NOT_EQUAL(load(clash, 4, log, sizeof log), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "module 'env-clash', config key 'greeting': environment "
                                       "variable MOLTENDB_SKELETON_GREETING is already used by "
                                       "[skeleton] greeting"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "env-clash.so"));
}

static void test_duplicates_and_missing_providers(void)
{
    char log[4096];
    const char *dup[] = {"storage-memory", "test-auth", "skeleton", "skeleton"};
    CU_ASSERT_NOT_EQUAL(load(dup, 4, log, sizeof log), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "module 'skeleton' is listed twice"));
    const char *no_storage[] = {"test-auth", "skeleton"};
    CU_ASSERT_NOT_EQUAL(load(no_storage, 2, log, sizeof log), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "no module provides the 'storage' service"));
    const char *no_auth[] = {"storage-memory", "skeleton"};
    CU_ASSERT_NOT_EQUAL(load(no_auth, 2, log, sizeof log), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "no module provides the 'auth' service"));
}

static void test_good_load_orders_providers_first(void)
{
    static core_server srv;
    memset(&srv, 0, sizeof srv);
    core_g = &srv;
    const char *names[] = {"skeleton", "test-auth", "storage-memory"};
    CU_ASSERT_EQUAL_FATAL(core_loader_load(&srv, modpath, (char **)names, 3), 0);
    CU_ASSERT_EQUAL(srv.nmods, 3);
    /* No module requires anything here, so configuration order is kept. */
    CU_ASSERT_STRING_EQUAL(srv.mods[0]->name, "skeleton");
    CU_ASSERT_PTR_NOT_NULL(srv.mods[0]->desc->config);
    CU_ASSERT_STRING_EQUAL(srv.mods[0]->desc->config[0].name, "greeting");
    core_loader_unload(&srv);
    core_g = NULL;
}

static void noop(mdb_req *r, void *ud)
{
    (void)r;
    (void)ud;
}

static void test_router(void)
{
    static core_server srv;
    memset(&srv, 0, sizeof srv);
    core_g = &srv;
    srv.phase = CORE_PHASE_INIT;
    int a, b, c, d;
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_GET, "/collections/{collection}", 0, noop, &a),
                    0);
    CU_ASSERT_EQUAL(
        mdb_route_add(NULL, MDB_METHOD_GET, "/collections/{collection}/docs/{key}", 0, noop, &b),
        0);
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_GET | MDB_METHOD_POST, "/stats", 0, noop, &c),
                    0);
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_GET, "/collections/special", 0, noop, &d), 0);
    /* Same pattern and method twice: refused. */
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_POST, "/stats", 0, noop, &c), -EEXIST);
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_GET, "no-slash", 0, noop, &c), -EINVAL);
    srv.phase = CORE_PHASE_RUN;
    CU_ASSERT_EQUAL(mdb_route_add(NULL, MDB_METHOD_GET, "/late", 0, noop, &c), -EPERM);

    const char *names[CORE_MAX_PARAMS];
    char *values[CORE_MAX_PARAMS];
    size_t np;
    unsigned allow;
    char p1[] = "/collections/laptops/docs/lp1";
    const core_route *r =
        core_registry_match(&srv.reg, MDB_METHOD_GET, p1, names, values, &np, &allow);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_EQUAL(r->ud, &b);
    CU_ASSERT_EQUAL(np, 2);
    CU_ASSERT_STRING_EQUAL(names[0], "{collection}");
    CU_ASSERT_STRING_EQUAL(values[0], "laptops");
    CU_ASSERT_STRING_EQUAL(values[1], "lp1");
    char p2[] = "/collections/special";
    r = core_registry_match(&srv.reg, MDB_METHOD_GET, p2, names, values, &np, &allow);
    CU_ASSERT_PTR_EQUAL(r ? r->ud : NULL, &d); /* literal beats parameter */
    char p3[] = "/stats/";
    r = core_registry_match(&srv.reg, MDB_METHOD_POST, p3, names, values, &np, &allow);
    CU_ASSERT_PTR_EQUAL(r ? r->ud : NULL, &c);
    char p4[] = "/stats";
    r = core_registry_match(&srv.reg, MDB_METHOD_DELETE, p4, names, values, &np, &allow);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(allow, MDB_METHOD_GET | MDB_METHOD_POST); /* -> 405 with Allow */
    char p5[] = "/nothing/here";
    r = core_registry_match(&srv.reg, MDB_METHOD_GET, p5, names, values, &np, &allow);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(allow, 0); /* -> 404 */
    char p6[] = "/collections";
    CU_ASSERT_PTR_NULL(
        core_registry_match(&srv.reg, MDB_METHOD_GET, p6, names, values, &np, &allow));
    core_registry_free(&srv.reg);
    core_g = NULL;
}

static const mdb_test_def loader_tests[] = {
    {"every refusal is one line naming file and mismatch", test_refusals},
    {"config schemas are checked at load time", test_schema_refusals},
    {"duplicates and missing providers", test_duplicates_and_missing_providers},
    {"a good set loads", test_good_load_orders_providers_first},
    {"router matching, 404 and 405", test_router},
    {NULL, NULL},
};
static const mdb_suite_def suites[] = {{"loader", loader_tests}, {NULL, NULL}};

int main(void)
{
    const char *m = getenv("MDB_MODULE_DIR"), *f = getenv("MDB_FIXTURE_DIR");
    if (!m || !f) {
        fprintf(stderr, "MDB_MODULE_DIR and MDB_FIXTURE_DIR must be set (run through ctest)\n");
        return 1;
    }
    snprintf(modpath, sizeof modpath, "%s:%s", m, f);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    for (const mdb_suite_def *s = suites; s->name; s++) {
        CU_pSuite cs = CU_add_suite(s->name, NULL, NULL);
        for (const mdb_test_def *t = s->tests; t->name; t++)
            CU_add_test(cs, t->name, t->fn);
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
