/*
 * The metrics registry behind include/moltendb/metrics.h, and the
 * Prometheus text rendering (exposition format 0.0.4).
 *
 * Layout: a counter or histogram owns MDB_STRIPES blocks of cells, each
 * block on its own cache lines; a thread always updates the block of its
 * stripe (assigned round-robin on its first update), so concurrent threads
 * rarely touch the same line and an update is one relaxed atomic add. A
 * scrape sums the blocks. Gauges are set as well as added to, so they have
 * one cell per series (a double kept as its bit pattern).
 *
 * The registry is written only while modules run init() (one thread) and
 * read without locks afterwards, like the route registry (registry.c).
 * Ownership: the registry owns every mdb_metric and the copies of its
 * strings; core_metrics_free() releases them all at shutdown.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moltendb/metrics.h>

#include "core.h"

#define MDB_STRIPES 8
#define CACHE_LINE 64

typedef enum {
    M_COUNTER = 1,
    M_GAUGE = 2,
    M_HISTOGRAM = 3,
    M_GAUGE_FN = 4,
    M_COUNTER_FN = 5
} metric_kind;

struct mdb_metric {
    metric_kind kind;
    char *name; /* full name, "moltendb_..." */
    char *help;
    size_t nlabels;
    char *lname[MDB_METRIC_MAX_LABELS];
    char **lvals[MDB_METRIC_MAX_LABELS]; /* NULL-terminated copies */
    size_t nvals[MDB_METRIC_MAX_LABELS];
    size_t ncells;     /* series: product of nvals (1 without labels) */
    size_t nbounds;    /* histogram upper bounds, +Inf excluded */
    double *bounds;    /* histogram */
    char (*le)[40];    /* the bounds as "le" label text */
    size_t cell_words; /* words per series: 1, or nbounds + 2 (buckets, +Inf, sum) */
    size_t stride;     /* words per stripe block (cache-line multiple) */
    _Atomic uint64_t *cells;
    mdb_metric_read_fn fn; /* M_GAUGE_FN */
    void *ud;
};

static mdb_metric **metrics;
static size_t nmetrics, capmetrics;
static _Atomic unsigned next_stripe;
static _Thread_local unsigned my_stripe = UINT32_MAX;
/* The core's HTTP metrics (core_metrics_http_init). */
static mdb_metric *http_requests, *http_duration, *http_inflight, *http_in, *http_out, *http_denied;
static unsigned *route_value; /* registry route index -> "route" label value */
static size_t nroute_value;
static unsigned unmatched_value;

static unsigned stripe(void)
{
    if (my_stripe == UINT32_MAX)
        my_stripe = atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % MDB_STRIPES;
    return my_stripe;
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* Lock-free d += delta on a double stored as bits. */
static void add_double(_Atomic uint64_t *w, double delta)
{
    uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(w, &old, dbits(bitsd(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Shortest text that reads back as the same double; Prometheus spellings
 * for the special values. */
static void fmt_double(char *s, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(s, n, "NaN");
    } else if (isinf(v)) {
        snprintf(s, n, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(s, n, "%.15g", v);
        if (strtod(s, NULL) != v)
            snprintf(s, n, "%.17g", v);
    }
}

/* ---- registration ------------------------------------------------------------ */
static bool name_ok(const char *s, bool label)
{
    if (!s || !*s || (label && s[0] == '_' && s[1] == '_'))
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                     (!label && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void metric_free(mdb_metric *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->help);
    for (size_t i = 0; i < MDB_METRIC_MAX_LABELS; i++) {
        free(m->lname[i]);
        for (size_t j = 0; m->lvals[i] && j < m->nvals[i]; j++)
            free(m->lvals[i][j]);
        free(m->lvals[i]);
    }
    free(m->bounds);
    free(m->le);
    free((void *)m->cells);
    free(m);
}

/* Why a registration is refused; NULL when the arguments are fine. */
static const char *check(metric_kind kind, const char *name, const char *help,
                         const mdb_metric_label *labels, size_t nlabels, const double *bounds,
                         size_t nbounds)
{
    if (!name_ok(name, false))
        return "invalid name (letters, digits, '_' and ':', not starting with a digit)";
    bool counter = kind == M_COUNTER || kind == M_COUNTER_FN;
    if (counter && !ends_with(name, "_total"))
        return "counter names end in \"_total\"";
    if (!counter && ends_with(name, "_total"))
        return "only counter names end in \"_total\"";
    if (!help || !*help)
        return "a help text is required";
    if (nlabels > MDB_METRIC_MAX_LABELS || (nlabels && !labels))
        return "too many labels";
    for (size_t i = 0; i < nlabels; i++) {
        if (!name_ok(labels[i].name, true) ||
            (kind == M_HISTOGRAM && !strcmp(labels[i].name, "le")))
            return "invalid label name";
        if (i == 1 && !strcmp(labels[0].name, labels[1].name))
            return "duplicate label name";
        size_t n = 0;
        while (labels[i].values && labels[i].values[n])
            n++;
        if (n == 0 || n > MDB_METRIC_MAX_VALUES)
            return "a label needs 1 to MDB_METRIC_MAX_VALUES values";
    }
    if (kind == M_HISTOGRAM) {
        if (!bounds || nbounds == 0 || nbounds > MDB_METRIC_MAX_BUCKETS)
            return "a histogram needs 1 to MDB_METRIC_MAX_BUCKETS bounds";
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
                return "histogram bounds must be finite and strictly increasing";
    }
    for (size_t i = 0; i < nmetrics; i++)
        if (!strcmp(metrics[i]->name + strlen(MDB_METRIC_PREFIX), name))
            return "the name is already registered";
    return NULL;
}

/* Register without the phase check (the core's own metrics, unit tests). */
int core_metrics_register(const mdb_ctx *ctx, int kind, const char *name, const char *help,
                          const double *bounds, size_t nbounds, const mdb_metric_label *labels,
                          size_t nlabels, mdb_metric **out)
{
    const char *why = check((metric_kind)kind, name, help, labels, nlabels, bounds, nbounds);
    if (why) {
        mdb_log(ctx, MDB_LOG_ERROR, "metric '%s' not registered: %s", name ? name : "(null)", why);
        return strstr(why, "already") ? -EEXIST : -EINVAL;
    }
    mdb_metric *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->kind = (metric_kind)kind;
    size_t nl = strlen(MDB_METRIC_PREFIX) + strlen(name) + 1;
    m->name = malloc(nl);
    m->help = strdup(help);
    if (!m->name || !m->help)
        goto oom;
    snprintf(m->name, nl, "%s%s", MDB_METRIC_PREFIX, name);
    m->nlabels = nlabels;
    m->ncells = 1;
    for (size_t i = 0; i < nlabels; i++) {
        size_t n = 0;
        while (labels[i].values[n])
            n++;
        m->lname[i] = strdup(labels[i].name);
        m->lvals[i] = calloc(n + 1, sizeof(char *));
        if (!m->lname[i] || !m->lvals[i])
            goto oom;
        for (size_t j = 0; j < n; j++)
            if (!(m->lvals[i][j] = strdup(labels[i].values[j])))
                goto oom;
        m->nvals[i] = n;
        m->ncells *= n;
    }
    if (m->kind == M_HISTOGRAM) {
        m->nbounds = nbounds;
        m->bounds = malloc(nbounds * sizeof(double));
        m->le = malloc(nbounds * sizeof *m->le);
        if (!m->bounds || !m->le)
            goto oom;
        memcpy(m->bounds, bounds, nbounds * sizeof(double));
        for (size_t i = 0; i < nbounds; i++)
            fmt_double(m->le[i], sizeof m->le[i], bounds[i]);
    }
    m->cell_words = m->kind == M_HISTOGRAM ? nbounds + 2 : 1;
    size_t words = m->ncells * m->cell_words;
    size_t blocks = 1;
    if (m->kind == M_COUNTER || m->kind == M_HISTOGRAM) {
        size_t per_line = CACHE_LINE / sizeof(uint64_t);
        m->stride = (words + per_line - 1) / per_line * per_line;
        blocks = MDB_STRIPES;
    } else {
        m->stride = words;
    }
    if (m->kind != M_GAUGE_FN && m->kind != M_COUNTER_FN) {
        size_t bytes =
            (m->stride * blocks * sizeof(uint64_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
        m->cells = aligned_alloc(CACHE_LINE, bytes);
        if (!m->cells)
            goto oom;
        for (size_t i = 0; i < m->stride * blocks; i++)
            atomic_init(&m->cells[i], m->kind == M_GAUGE ? dbits(0.0) : 0);
    }
    if (nmetrics == capmetrics) {
        size_t cap = capmetrics ? capmetrics * 2 : 64;
        mdb_metric **nm = realloc(metrics, cap * sizeof *nm);
        if (!nm)
            goto oom;
        metrics = nm;
        capmetrics = cap;
    }
    metrics[nmetrics++] = m;
    *out = m;
    return 0;
oom:
    metric_free(m);
    return -ENOMEM;
}

static int reg(mdb_ctx *ctx, metric_kind kind, const char *name, const char *help,
               const double *bounds, size_t nbounds, const mdb_metric_label *labels, size_t nlabels,
               mdb_metric **out)
{
    if (!core_g || core_g->phase != CORE_PHASE_INIT) {
        mdb_log(ctx, MDB_LOG_ERROR, "metric '%s': metrics may only be registered from init()",
                name ? name : "(null)");
        return -EPERM;
    }
    mdb_metric *m = NULL;
    int rc = core_metrics_register(ctx, kind, name, help, bounds, nbounds, labels, nlabels, &m);
    if (out)
        *out = m;
    return rc;
}

int mdb_metric_counter(mdb_ctx *ctx, const char *name, const char *help,
                       const mdb_metric_label *labels, size_t nlabels, mdb_metric **out)
{
    return reg(ctx, M_COUNTER, name, help, NULL, 0, labels, nlabels, out);
}

int mdb_metric_gauge(mdb_ctx *ctx, const char *name, const char *help,
                     const mdb_metric_label *labels, size_t nlabels, mdb_metric **out)
{
    return reg(ctx, M_GAUGE, name, help, NULL, 0, labels, nlabels, out);
}

int mdb_metric_histogram(mdb_ctx *ctx, const char *name, const char *help, const double *bounds,
                         size_t nbounds, const mdb_metric_label *labels, size_t nlabels,
                         mdb_metric **out)
{
    return reg(ctx, M_HISTOGRAM, name, help, bounds, nbounds, labels, nlabels, out);
}

static int reg_fn(mdb_ctx *ctx, metric_kind kind, const char *name, const char *help,
                  mdb_metric_read_fn fn, void *ud)
{
    if (!fn)
        return -EINVAL;
    mdb_metric *m = NULL;
    int rc = reg(ctx, kind, name, help, NULL, 0, NULL, 0, &m);
    if (!rc) {
        m->fn = fn;
        m->ud = ud;
    }
    return rc;
}

int mdb_metric_gauge_fn(mdb_ctx *ctx, const char *name, const char *help, mdb_metric_read_fn fn,
                        void *ud)
{
    return reg_fn(ctx, M_GAUGE_FN, name, help, fn, ud);
}

int mdb_metric_counter_fn(mdb_ctx *ctx, const char *name, const char *help, mdb_metric_read_fn fn,
                          void *ud)
{
    return reg_fn(ctx, M_COUNTER_FN, name, help, fn, ud);
}

int mdb_metric_label_index(const mdb_metric *m, size_t label, const char *value)
{
    if (!m || label >= m->nlabels || !value)
        return -1;
    for (size_t i = 0; i < m->nvals[label]; i++)
        if (!strcmp(m->lvals[label][i], value))
            return (int)i;
    return -1;
}

mdb_metric *mdb_metric_find(const char *name)
{
    size_t plen = strlen(MDB_METRIC_PREFIX);
    for (size_t i = 0; name && i < nmetrics; i++)
        if (!strcmp(metrics[i]->name + plen, name))
            return metrics[i];
    return NULL;
}

void core_metrics_free(void)
{
    for (size_t i = 0; i < nmetrics; i++)
        metric_free(metrics[i]);
    free(metrics);
    metrics = NULL;
    nmetrics = capmetrics = 0;
    http_requests = http_duration = http_inflight = http_in = http_out = http_denied = NULL;
    free(route_value);
    route_value = NULL;
    nroute_value = 0;
}

/* ---- updates ------------------------------------------------------------------ */
/* Series index of label values (a, b), or SIZE_MAX when out of range. */
static inline size_t series(const mdb_metric *m, unsigned a, unsigned b)
{
    switch (m->nlabels) {
    case 0:
        return a == 0 && b == 0 ? 0 : SIZE_MAX;
    case 1:
        return a < m->nvals[0] && b == 0 ? a : SIZE_MAX;
    default:
        return a < m->nvals[0] && b < m->nvals[1] ? (size_t)a * m->nvals[1] + b : SIZE_MAX;
    }
}

void mdb_counter_add_at(mdb_metric *m, unsigned a, unsigned b, uint64_t n)
{
    if (!m || m->kind != M_COUNTER)
        return;
    size_t s = series(m, a, b);
    if (s == SIZE_MAX)
        return;
    atomic_fetch_add_explicit(&m->cells[stripe() * m->stride + s], n, memory_order_relaxed);
}

void mdb_counter_add(mdb_metric *m, uint64_t n)
{
    mdb_counter_add_at(m, 0, 0, n);
}

void mdb_gauge_set_at(mdb_metric *m, unsigned a, unsigned b, double v)
{
    size_t s;
    if (m && m->kind == M_GAUGE && (s = series(m, a, b)) != SIZE_MAX)
        atomic_store_explicit(&m->cells[s], dbits(v), memory_order_relaxed);
}

void mdb_gauge_set(mdb_metric *m, double v)
{
    mdb_gauge_set_at(m, 0, 0, v);
}

void mdb_gauge_add_at(mdb_metric *m, unsigned a, unsigned b, double delta)
{
    size_t s;
    if (m && m->kind == M_GAUGE && (s = series(m, a, b)) != SIZE_MAX)
        add_double(&m->cells[s], delta);
}

void mdb_gauge_add(mdb_metric *m, double delta)
{
    mdb_gauge_add_at(m, 0, 0, delta);
}

void mdb_histogram_observe_at(mdb_metric *m, unsigned a, unsigned b, double v)
{
    if (!m || m->kind != M_HISTOGRAM || isnan(v))
        return;
    size_t s = series(m, a, b);
    if (s == SIZE_MAX)
        return;
    _Atomic uint64_t *c = &m->cells[stripe() * m->stride + s * m->cell_words];
    size_t i = 0;
    while (i < m->nbounds && v > m->bounds[i])
        i++;
    atomic_fetch_add_explicit(&c[i], 1, memory_order_relaxed);
    add_double(&c[m->nbounds + 1], v);
}

void mdb_histogram_observe(mdb_metric *m, double v)
{
    mdb_histogram_observe_at(m, 0, 0, v);
}

/* ---- reading ------------------------------------------------------------------ */
/* Sum of word `w` of series `s` over the stripes. */
static uint64_t sum_u(const mdb_metric *m, size_t s, size_t w)
{
    uint64_t t = 0;
    for (size_t k = 0; k < MDB_STRIPES; k++)
        t += atomic_load_explicit(&m->cells[k * m->stride + s * m->cell_words + w],
                                  memory_order_relaxed);
    return t;
}

static double sum_d(const mdb_metric *m, size_t s, size_t w)
{
    double t = 0;
    for (size_t k = 0; k < MDB_STRIPES; k++)
        t += bitsd(atomic_load_explicit(&m->cells[k * m->stride + s * m->cell_words + w],
                                        memory_order_relaxed));
    return t;
}

double mdb_metric_value(const mdb_metric *m, unsigned a, unsigned b)
{
    if (!m)
        return 0;
    if (m->kind == M_GAUGE_FN || m->kind == M_COUNTER_FN)
        return m->fn(m->ud);
    size_t s = series(m, a, b);
    if (s == SIZE_MAX)
        return 0;
    switch (m->kind) {
    case M_COUNTER:
        return (double)sum_u(m, s, 0);
    case M_GAUGE:
        return bitsd(atomic_load_explicit(&m->cells[s], memory_order_relaxed));
    default: {
        uint64_t n = 0;
        for (size_t i = 0; i <= m->nbounds; i++)
            n += sum_u(m, s, i);
        return (double)n;
    }
    }
}

/* ---- Prometheus text format 0.0.4 ------------------------------------------------ */
static void put_double(mdb_buf *b, double v)
{
    char s[40];
    fmt_double(s, sizeof s, v);
    mdb_buf_puts(b, s);
}

/* HELP text escapes '\' and newline; label values also '"'. */
static void put_escaped(mdb_buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            mdb_buf_puts(b, "\\\\");
        else if (*s == '\n')
            mdb_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            mdb_buf_puts(b, "\\\"");
        else
            mdb_buf_putc(b, *s);
    }
}

/* "name{l1="v",l2="v"[,le="x"]} " for series s. */
static void put_series(mdb_buf *b, const mdb_metric *m, const char *suffix, size_t s,
                       const char *le)
{
    mdb_buf_puts(b, m->name);
    mdb_buf_puts(b, suffix);
    if (m->nlabels || le) {
        mdb_buf_putc(b, '{');
        size_t idx[MDB_METRIC_MAX_LABELS] = {0};
        if (m->nlabels == 1)
            idx[0] = s;
        else if (m->nlabels == 2) {
            idx[0] = s / m->nvals[1];
            idx[1] = s % m->nvals[1];
        }
        for (size_t i = 0; i < m->nlabels; i++) {
            if (i)
                mdb_buf_putc(b, ',');
            mdb_buf_puts(b, m->lname[i]);
            mdb_buf_puts(b, "=\"");
            put_escaped(b, m->lvals[i][idx[i]], true);
            mdb_buf_putc(b, '"');
        }
        if (le) {
            mdb_buf_puts(b, m->nlabels ? ",le=\"" : "le=\"");
            mdb_buf_puts(b, le);
            mdb_buf_putc(b, '"');
        }
        mdb_buf_putc(b, '}');
    }
    mdb_buf_putc(b, ' ');
}

static void render_one(mdb_buf *b, const mdb_metric *m)
{
    static const char *const type_names[] = {"",          "counter", "gauge",
                                             "histogram", "gauge",   "counter"};
    mdb_buf_printf(b, "# HELP %s ", m->name);
    put_escaped(b, m->help, false);
    mdb_buf_printf(b, "\n# TYPE %s %s\n", m->name, type_names[m->kind]);
    if (m->kind == M_GAUGE_FN || m->kind == M_COUNTER_FN) {
        put_series(b, m, "", 0, NULL);
        put_double(b, m->fn(m->ud));
        mdb_buf_putc(b, '\n');
        return;
    }
    for (size_t s = 0; s < m->ncells; s++) {
        if (m->kind == M_COUNTER) {
            put_series(b, m, "", s, NULL);
            mdb_buf_printf(b, "%llu\n", (unsigned long long)sum_u(m, s, 0));
        } else if (m->kind == M_GAUGE) {
            put_series(b, m, "", s, NULL);
            put_double(b, bitsd(atomic_load_explicit(&m->cells[s], memory_order_relaxed)));
            mdb_buf_putc(b, '\n');
        } else {
            uint64_t cum = 0;
            for (size_t i = 0; i <= m->nbounds; i++) {
                cum += sum_u(m, s, i);
                put_series(b, m, "_bucket", s, i < m->nbounds ? m->le[i] : "+Inf");
                mdb_buf_printf(b, "%llu\n", (unsigned long long)cum);
            }
            put_series(b, m, "_sum", s, NULL);
            put_double(b, sum_d(m, s, m->nbounds + 1));
            mdb_buf_putc(b, '\n');
            put_series(b, m, "_count", s, NULL);
            mdb_buf_printf(b, "%llu\n", (unsigned long long)cum);
        }
    }
}

void mdb_metrics_render(mdb_buf *out)
{
    for (size_t i = 0; i < nmetrics; i++)
        render_one(out, metrics[i]);
}

/* ---- the core's HTTP metrics ------------------------------------------------------- */
static const char *const status_classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", NULL};

/* Request latency buckets, seconds: 100 µs to 10 s. */
static const double duration_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

#define UNMATCHED_ROUTE "none"

int core_metrics_http_init(const core_registry *reg)
{
    /* Label values: each distinct route pattern once, then "none" for
     * requests that matched no route (404/405, pre-flights). */
    const char **vals = calloc(MDB_METRIC_MAX_VALUES + 1, sizeof *vals);
    route_value = calloc(reg->nroutes + 1, sizeof *route_value);
    if (!vals || !route_value) {
        free(vals);
        return -ENOMEM;
    }
    nroute_value = reg->nroutes;
    size_t n = 0;
    for (size_t i = 0; i < reg->nroutes; i++) {
        size_t j = 0;
        while (j < n && strcmp(vals[j], reg->routes[i].pattern) != 0)
            j++;
        if (j == n && n + 1 < MDB_METRIC_MAX_VALUES)
            vals[n++] = reg->routes[i].pattern;
        route_value[i] = (unsigned)(j < n ? j : n); /* past the cap: counted as "none" */
    }
    unmatched_value = (unsigned)n;
    vals[n++] = UNMATCHED_ROUTE;
    const mdb_metric_label by_route = {"route", vals},
                           both[] = {{"route", vals}, {"class", status_classes}};
    int rc = core_metrics_register(NULL, 1, "http_requests_total",
                                   "HTTP requests answered, by route pattern and status class",
                                   NULL, 0, both, 2, &http_requests);
    if (!rc)
        rc = core_metrics_register(
            NULL, 3, "http_request_duration_seconds",
            "Time from a request's headers to its completion, by route pattern", duration_bounds,
            sizeof duration_bounds / sizeof *duration_bounds, &by_route, 1, &http_duration);
    if (!rc)
        rc = core_metrics_register(NULL, 2, "http_requests_in_flight",
                                   "Requests received and not yet completed", NULL, 0, NULL, 0,
                                   &http_inflight);
    if (!rc)
        rc = core_metrics_register(NULL, 1, "http_received_bytes_total",
                                   "Request body bytes received", NULL, 0, NULL, 0, &http_in);
    if (!rc)
        rc = core_metrics_register(NULL, 1, "http_sent_bytes_total", "Response body bytes sent",
                                   NULL, 0, NULL, 0, &http_out);
    static const char *const denied[] = {"401", "403", NULL};
    const mdb_metric_label by_status = {"status", denied};
    if (!rc)
        rc = core_metrics_register(NULL, 1, "http_denied_total",
                                   "Requests answered 401 (no valid token) or 403 (the token "
                                   "lacks the scope), whichever module answered",
                                   NULL, 0, &by_status, 1, &http_denied);
    free(vals); /* the registry copied the values */
    return rc;
}

int64_t core_metrics_request_begin(void)
{
    mdb_gauge_add(http_inflight, 1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void core_metrics_request_end(size_t route, unsigned status, uint64_t bytes_in, uint64_t bytes_out,
                              int64_t t0_ns)
{
    mdb_gauge_add(http_inflight, -1);
    if (!http_requests)
        return;
    unsigned rv = route < nroute_value ? route_value[route] : unmatched_value;
    if (status >= 100 && status < 600) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - t0_ns;
        mdb_counter_add_at(http_requests, rv, status / 100 - 1, 1);
        mdb_histogram_observe_at(http_duration, rv, 0, (double)ns / 1e9);
        if (status == 401 || status == 403)
            mdb_counter_add_at(http_denied, status == 403, 0, 1);
    }
    mdb_counter_add(http_in, bytes_in);
    mdb_counter_add(http_out, bytes_out);
}
