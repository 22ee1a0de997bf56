/* Shared main() for CUnit test programs: a program defines
 * `static const mdb_suite_def mdb_suites[]` (NULL-terminated) and includes
 * MDB_CUNIT_MAIN. Exits non-zero when any assertion failed (the basic
 * runner's own return value ignores failed assertions). */
#ifndef MDB_CUNIT_H
#define MDB_CUNIT_H
#include <CUnit/Basic.h>
#include <stdio.h>

typedef struct mdb_test_def {
    const char *name;
    void (*fn)(void);
} mdb_test_def;

typedef struct mdb_suite_def {
    const char *name;
    const mdb_test_def *tests;
} mdb_suite_def;

#define MDB_CUNIT_MAIN(suites)                                                                     \
    int main(void)                                                                                 \
    {                                                                                              \
        if (CU_initialize_registry() != CUE_SUCCESS)                                               \
            return 2;                                                                              \
        for (const mdb_suite_def *s = (suites); s->name; s++) {                                    \
            CU_pSuite cs = CU_add_suite(s->name, NULL, NULL);                                      \
            for (const mdb_test_def *t = s->tests; t->name; t++)                                   \
                CU_add_test(cs, t->name, t->fn);                                                   \
        }                                                                                          \
        CU_basic_set_mode(CU_BRM_VERBOSE);                                                         \
        CU_basic_run_tests();                                                                      \
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();           \
        CU_cleanup_registry();                                                                     \
        return failed ? 1 : 0;                                                                     \
    }
#endif
