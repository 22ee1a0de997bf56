/* Unit tests of the metrics registry (core/metrics.c): registration rules,
 * the Prometheus text rendering, and exact totals under many threads. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "mdb_cunit.h"

static core_server srv;

static void begin(core_phase phase)
{
    core_metrics_free();
    memset(&srv, 0, sizeof srv);
    srv.phase = phase;
    core_g = &srv;
}

static char *render(void)
{
    mdb_buf b;
    mdb_buf_init(&b);
    mdb_metrics_render(&b);
    return mdb_buf_take(&b, NULL);
}

/* The whole rendering equals `want` (printed when it does not). */
static void expect_render(const char *want)
{
    char *text = render();
    if (strcmp(text, want) != 0)
        fprintf(stderr, "rendered:\n%s", text);
    CU_ASSERT_STRING_EQUAL(text, want);
    free(text);
}

static const char *const classes[] = {"2xx", "4xx", "5xx", NULL};
static const char *const routes[] = {"/get", "/set", NULL};

static void test_registration_rules(void)
{
    begin(CORE_PHASE_INIT);
    mdb_metric *m = NULL;
    CU_ASSERT_EQUAL(mdb_metric_counter(NULL, "requests_total", "Requests", NULL, 0, &m), 0);
    CU_ASSERT_PTR_NOT_NULL(m);
    CU_ASSERT_PTR_EQUAL(mdb_metric_find("requests_total"), m);
    CU_ASSERT_EQUAL(mdb_metric_counter(NULL, "requests_total", "again", NULL, 0, &m), -EEXIST);
    CU_ASSERT_PTR_NULL(m);
    /* counters end in _total, nothing else does */
    CU_ASSERT_EQUAL(mdb_metric_counter(NULL, "requests", "x", NULL, 0, &m), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "inflight_total", "x", NULL, 0, &m), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "9lives", "x", NULL, 0, &m), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "has space", "x", NULL, 0, &m), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "no_help", "", NULL, 0, &m), -EINVAL);
    const mdb_metric_label bad = {"__reserved", classes}, le = {"le", classes};
    const mdb_metric_label empty = {"x", (const char *const[]){NULL}};
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "g1", "x", &bad, 1, &m), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "g2", "x", &empty, 1, &m), -EINVAL);
    static const double ok_bounds[] = {0.1, 1}, bad_bounds[] = {1, 1};
    CU_ASSERT_EQUAL(mdb_metric_histogram(NULL, "h1_seconds", "x", ok_bounds, 2, &le, 1, &m),
                    -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_histogram(NULL, "h2_seconds", "x", bad_bounds, 2, NULL, 0, &m),
                    -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_histogram(NULL, "h3_seconds", "x", ok_bounds, 0, NULL, 0, &m),
                    -EINVAL);
    const mdb_metric_label three[] = {{"a", classes}, {"b", classes}, {"c", classes}};
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "g3", "x", three, 3, &m), -EINVAL);
    /* outside init() nothing registers */
    srv.phase = CORE_PHASE_RUN;
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "late", "x", NULL, 0, &m), -EPERM);
    CU_ASSERT_PTR_NULL(mdb_metric_find("late"));
    core_metrics_free();
}

static void test_updates_and_labels(void)
{
    begin(CORE_PHASE_INIT);
    mdb_metric *c = NULL, *g = NULL, *h = NULL;
    const mdb_metric_label two[] = {{"route", routes}, {"class", classes}};
    CU_ASSERT_EQUAL(mdb_metric_counter(NULL, "req_total", "r", two, 2, &c), 0);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "inflight", "g", NULL, 0, &g), 0);
    static const double b[] = {0.01, 0.1, 1};
    CU_ASSERT_EQUAL(mdb_metric_histogram(NULL, "lat_seconds", "h", b, 3, two, 1, &h), 0);
    CU_ASSERT_EQUAL(mdb_metric_label_index(c, 1, "5xx"), 2);
    CU_ASSERT_EQUAL(mdb_metric_label_index(c, 0, "/nope"), -1);
    CU_ASSERT_EQUAL(mdb_metric_label_index(c, 2, "2xx"), -1);
    mdb_counter_add_at(c, 1, 2, 5);
    mdb_counter_add_at(c, 1, 2, 1);
    mdb_counter_add_at(c, 2, 0, 100); /* out of range: ignored */
    mdb_counter_add_at(c, 0, 3, 100);
    mdb_counter_add(NULL, 1); /* NULL handle: ignored */
    CU_ASSERT_EQUAL(mdb_metric_value(c, 1, 2), 6);
    CU_ASSERT_EQUAL(mdb_metric_value(c, 0, 0), 0);
    mdb_gauge_add(g, 3);
    mdb_gauge_add(g, -1);
    CU_ASSERT_EQUAL(mdb_metric_value(g, 0, 0), 2);
    mdb_gauge_set(g, 0.5);
    CU_ASSERT_EQUAL(mdb_metric_value(g, 0, 0), 0.5);
    mdb_counter_add(g, 1); /* wrong kind: ignored */
    CU_ASSERT_EQUAL(mdb_metric_value(g, 0, 0), 0.5);
    mdb_histogram_observe_at(h, 1, 0, 0.01); /* on a bound: that bucket (le is <=) */
    mdb_histogram_observe_at(h, 1, 0, 0.5);
    mdb_histogram_observe_at(h, 1, 0, 7);
    CU_ASSERT_EQUAL(mdb_metric_value(h, 1, 0), 3);

    expect_render("# HELP moltendb_req_total r\n"
                  "# TYPE moltendb_req_total counter\n"
                  "moltendb_req_total{route=\"/get\",class=\"2xx\"} 0\n"
                  "moltendb_req_total{route=\"/get\",class=\"4xx\"} 0\n"
                  "moltendb_req_total{route=\"/get\",class=\"5xx\"} 0\n"
                  "moltendb_req_total{route=\"/set\",class=\"2xx\"} 0\n"
                  "moltendb_req_total{route=\"/set\",class=\"4xx\"} 0\n"
                  "moltendb_req_total{route=\"/set\",class=\"5xx\"} 6\n"
                  "# HELP moltendb_inflight g\n"
                  "# TYPE moltendb_inflight gauge\n"
                  "moltendb_inflight 0.5\n"
                  "# HELP moltendb_lat_seconds h\n"
                  "# TYPE moltendb_lat_seconds histogram\n"
                  "moltendb_lat_seconds_bucket{route=\"/get\",le=\"0.01\"} 0\n"
                  "moltendb_lat_seconds_bucket{route=\"/get\",le=\"0.1\"} 0\n"
                  "moltendb_lat_seconds_bucket{route=\"/get\",le=\"1\"} 0\n"
                  "moltendb_lat_seconds_bucket{route=\"/get\",le=\"+Inf\"} 0\n"
                  "moltendb_lat_seconds_sum{route=\"/get\"} 0\n"
                  "moltendb_lat_seconds_count{route=\"/get\"} 0\n"
                  "moltendb_lat_seconds_bucket{route=\"/set\",le=\"0.01\"} 1\n"
                  "moltendb_lat_seconds_bucket{route=\"/set\",le=\"0.1\"} 1\n"
                  "moltendb_lat_seconds_bucket{route=\"/set\",le=\"1\"} 2\n"
                  "moltendb_lat_seconds_bucket{route=\"/set\",le=\"+Inf\"} 3\n"
                  "moltendb_lat_seconds_sum{route=\"/set\"} 7.51\n"
                  "moltendb_lat_seconds_count{route=\"/set\"} 3\n");
    core_metrics_free();
}

static double half(void *ud)
{
    return *(double *)ud / 2;
}

static void test_escaping_and_function_gauges(void)
{
    begin(CORE_PHASE_INIT);
    static const char *const odd[] = {"a\"b\\c\nd", NULL};
    const mdb_metric_label l = {"v", odd};
    mdb_metric *g = NULL;
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "odd", "line one\nback\\slash", &l, 1, &g), 0);
    double x = 9;
    CU_ASSERT_EQUAL(mdb_metric_gauge_fn(NULL, "half", "x/2", half, &x), 0);
    CU_ASSERT_EQUAL(mdb_metric_gauge_fn(NULL, "nofn", "x", NULL, NULL), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_counter_fn(NULL, "halves", "x/2", half, &x), -EINVAL);
    CU_ASSERT_EQUAL(mdb_metric_counter_fn(NULL, "halves_total", "x/2", half, &x), 0);
    mdb_gauge_set(g, 1); /* labelled metric through the unlabelled call: b == 0, a == 0 ok */
    expect_render("# HELP moltendb_odd line one\\nback\\\\slash\n"
                  "# TYPE moltendb_odd gauge\n"
                  "moltendb_odd{v=\"a\\\"b\\\\c\\nd\"} 1\n"
                  "# HELP moltendb_half x/2\n"
                  "# TYPE moltendb_half gauge\n"
                  "moltendb_half 4.5\n"
                  "# HELP moltendb_halves_total x/2\n"
                  "# TYPE moltendb_halves_total counter\n"
                  "moltendb_halves_total 4.5\n");
    core_metrics_free();
}

#define THREADS 16
#define ROUNDS 50000

typedef struct worker {
    mdb_metric *c, *h, *g;
    unsigned id;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (unsigned i = 0; i < ROUNDS; i++) {
        mdb_counter_add_at(w->c, w->id % 3, 0, 1);
        mdb_histogram_observe(w->h, (double)(i % 4));
        mdb_gauge_add(w->g, 1);
        mdb_gauge_add(w->g, -1);
        mdb_gauge_add(w->g, 2);
    }
    return NULL;
}

static void test_concurrent_updates_exact(void)
{
    begin(CORE_PHASE_INIT);
    const mdb_metric_label l = {"class", classes};
    static const double b[] = {0.5, 1.5, 2.5};
    worker w[THREADS];
    mdb_metric *c = NULL, *h = NULL, *g = NULL;
    CU_ASSERT_EQUAL(mdb_metric_counter(NULL, "ops_total", "ops", &l, 1, &c), 0);
    CU_ASSERT_EQUAL(mdb_metric_histogram(NULL, "vals", "vals", b, 3, NULL, 0, &h), 0);
    CU_ASSERT_EQUAL(mdb_metric_gauge(NULL, "level", "level", NULL, 0, &g), 0);
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker){c, h, g, i};
        CU_ASSERT_EQUAL(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    double per[3] = {0};
    for (unsigned i = 0; i < THREADS; i++)
        per[i % 3] += ROUNDS;
    for (unsigned k = 0; k < 3; k++)
        CU_ASSERT_EQUAL(mdb_metric_value(c, k, 0), per[k]);
    CU_ASSERT_EQUAL(mdb_metric_value(h, 0, 0), (double)THREADS * ROUNDS);
    CU_ASSERT_EQUAL(mdb_metric_value(g, 0, 0), 2.0 * THREADS * ROUNDS);
    char *text = render();
    char line[128];
    /* values 0,1,2,3 equally often: each bucket holds a quarter more */
    snprintf(line, sizeof line, "moltendb_vals_bucket{le=\"1.5\"} %u\n", THREADS * ROUNDS / 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, line));
    snprintf(line, sizeof line, "moltendb_vals_sum %u\n", THREADS * ROUNDS / 4 * 6);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, line));
    free(text);
    core_metrics_free();
}

static const mdb_test_def tests[] = {
    {"registration rules", test_registration_rules},
    {"updates, labels and rendering", test_updates_and_labels},
    {"escaping and function gauges", test_escaping_and_function_gauges},
    {"concurrent updates are exact", test_concurrent_updates_exact},
    {NULL, NULL}};
static const mdb_suite_def suites[] = {{"metrics", tests}, {NULL, NULL}};
MDB_CUNIT_MAIN(suites)
