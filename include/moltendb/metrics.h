/*
 * moltendb SDK: metrics (counters, gauges, histograms) that any module can
 * publish. The `metrics` module serves them in the Prometheus text format
 * (GET /metrics); without it they are still counted, just not served.
 *
 * Registration: only from init() (like routes). A metric's full name is
 * "moltendb_" + the name given here, in base units (seconds, bytes);
 * counter names must end in "_total". Names are unique across the server:
 * registering a name twice fails with -EEXIST.
 *
 * Labels: at most MDB_METRIC_MAX_LABELS label names per metric, each with a
 * small fixed set of values declared at registration (no values are made up
 * at run time, so the series count is bounded and an update never
 * allocates). An update names the values by their index in that set;
 * unlabelled metrics use the functions without "_at".
 *
 * Ownership: the core owns every metric and copies the names, help texts
 * and label values given here; the caller's strings are borrowed for the
 * call. A handle stays valid until the module's destroy() returns. The
 * callback of a function gauge and its user data stay owned by the module
 * and must stay valid until its destroy().
 *
 * Thread safety: every update function may be called from any thread at
 * any time after registration, with no lock: counters and histograms are
 * per-thread-stripe atomic cells that a scrape sums; gauges are one atomic
 * cell per series. Updates through a NULL handle, or with a label index out
 * of range, do nothing (so a failed registration never crashes a hot path).
 */
#ifndef MOLTENDB_METRICS_H
#define MOLTENDB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_ctx mdb_ctx;
typedef struct mdb_metric mdb_metric;
typedef struct mdb_buf mdb_buf;

#define MDB_METRIC_PREFIX "moltendb_"
#define MDB_METRIC_MAX_LABELS 2
#define MDB_METRIC_MAX_VALUES 128 /* values of one label */
#define MDB_METRIC_MAX_BUCKETS 32 /* histogram upper bounds, +Inf excluded */

/* One label: its name and its NULL-terminated set of values. */
typedef struct mdb_metric_label {
    const char *name;
    const char *const *values;
} mdb_metric_label;

/* Register a metric. labels: array of nlabels (0..MDB_METRIC_MAX_LABELS).
 * 0 and *out set, or -EINVAL (bad name, help, label or bucket list; logged),
 * -EEXIST, -EPERM (not in init()), -ENOMEM. */
int mdb_metric_counter(mdb_ctx *ctx, const char *name, const char *help,
                       const mdb_metric_label *labels, size_t nlabels, mdb_metric **out);
int mdb_metric_gauge(mdb_ctx *ctx, const char *name, const char *help,
                     const mdb_metric_label *labels, size_t nlabels, mdb_metric **out);
/* bounds: strictly increasing finite upper bounds (the +Inf bucket is
 * implicit), nbounds 1..MDB_METRIC_MAX_BUCKETS, copied. */
int mdb_metric_histogram(mdb_ctx *ctx, const char *name, const char *help, const double *bounds,
                         size_t nbounds, const mdb_metric_label *labels, size_t nlabels,
                         mdb_metric **out);
/* A gauge read at scrape time: fn(ud) runs on the scraping thread, so it
 * must be thread-safe and quick (no store write, no network). */
typedef double (*mdb_metric_read_fn)(void *ud);
int mdb_metric_gauge_fn(mdb_ctx *ctx, const char *name, const char *help, mdb_metric_read_fn fn,
                        void *ud);
/* A counter read at scrape time, for a total the module already keeps
 * (fn must return a value that never decreases). Same rules as above. */
int mdb_metric_counter_fn(mdb_ctx *ctx, const char *name, const char *help, mdb_metric_read_fn fn,
                          void *ud);

/* Index of `value` among the values of label `label` (0-based), or -1. For
 * computing an index once, outside hot paths. */
int mdb_metric_label_index(const mdb_metric *m, size_t label, const char *value);

/* ---- updates (lock-free, never allocate) ------------------------------------
 * a, b: value indexes of the first and second label (0 when unused). */
void mdb_counter_add(mdb_metric *m, uint64_t n);
void mdb_counter_add_at(mdb_metric *m, unsigned a, unsigned b, uint64_t n);
void mdb_gauge_set(mdb_metric *m, double v);
void mdb_gauge_set_at(mdb_metric *m, unsigned a, unsigned b, double v);
void mdb_gauge_add(mdb_metric *m, double delta);
void mdb_gauge_add_at(mdb_metric *m, unsigned a, unsigned b, double delta);
void mdb_histogram_observe(mdb_metric *m, double v);
void mdb_histogram_observe_at(mdb_metric *m, unsigned a, unsigned b, double v);

/* ---- reading ----------------------------------------------------------------
 * Current value of one series: a counter's total, a gauge's value, a
 * histogram's observation count. 0 for a NULL handle. Sums the stripes:
 * for tests and JSON summaries, not hot paths. */
double mdb_metric_value(const mdb_metric *m, unsigned a, unsigned b);
/* The metric registered under `name` (without the prefix), or NULL. */
mdb_metric *mdb_metric_find(const char *name);
/* Append every metric in the Prometheus text exposition format 0.0.4
 * ("# HELP", "# TYPE", one line per series) to `out`. Callable from any
 * thread once startup is over; it reads without locks. */
void mdb_metrics_render(mdb_buf *out);

#ifdef __cplusplus
}
#endif
#endif
