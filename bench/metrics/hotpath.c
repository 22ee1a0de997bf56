/*
 * What the core's per-request metrics cost (issue 11 item 6): the time of
 * core_metrics_request_begin() + core_metrics_request_end() (in-flight
 * gauge, two monotonic clock reads, requests counter, latency histogram,
 * byte counters) in CPU ns per request, on one thread and on two threads
 * at once, next to an empty loop; and the CPU time of one Prometheus
 * rendering of the same registry. Built by bench/metrics/run.py (target metrics_hotpath).
 *
 * Usage: metrics_hotpath [iterations]   (default 20,000,000)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

#define NROUTES 24

static core_server srv;
static long iters;

/* CPU time of the process: the machine is shared, so wall time would
 * count the time other processes held the CPU. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 0; i < iters; i++) {
        int64_t t0 = core_metrics_request_begin();
        core_metrics_request_end((size_t)(i % NROUTES), i % 16 ? 200 : 404, 38, 190, t0);
    }
    return NULL;
}

/* CPU ns per request with `threads` threads each doing `iters` requests. */
static double run(int threads)
{
    pthread_t t[2];
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return (now_s() - t0) * 1e9 / (double)iters / threads;
}

int main(int argc, char **argv)
{
    iters = argc > 1 ? atol(argv[1]) : 20000000;
    core_g = &srv;
    static core_route routes[NROUTES];
    static char names[NROUTES][32];
    for (int i = 0; i < NROUTES; i++) {
        snprintf(names[i], sizeof names[i], "/bench/route%d", i);
        routes[i].pattern = names[i];
    }
    srv.reg.routes = routes;
    srv.reg.nroutes = NROUTES;
    if (core_metrics_http_init(&srv.reg) != 0) {
        fprintf(stderr, "core_metrics_http_init failed\n");
        return 1;
    }
    volatile long sink = 0;
    double e0 = now_s();
    for (long i = 0; i < iters; i++)
        sink += i;
    double empty = (now_s() - e0) * 1e9 / (double)iters;
    double one = run(1);
    double two = run(2);
    double r0 = now_s();
    size_t bytes = 0;
    int renders = 200;
    for (int i = 0; i < renders; i++) {
        mdb_buf b;
        mdb_buf_init(&b);
        mdb_metrics_render(&b);
        bytes = b.len;
        mdb_buf_free(&b);
    }
    double render_us = (now_s() - r0) * 1e6 / renders;
    printf("{\"iterations\": %ld, \"empty_loop_ns\": %.2f, \"one_thread_ns\": %.1f, "
           "\"two_threads_ns\": %.1f, \"render_us\": %.1f, \"render_bytes\": %zu}\n",
           iters, empty, one, two, render_us, bytes);
    core_metrics_free();
    return 0;
}
