/*
 * Unit tests for core/pool.c, the query pool: jobs run in order on its
 * threads, jobs still queued at stop are cancelled (never dropped), and
 * nothing is accepted after stop. The jobs' state lives on the test's
 * stack; the pool is freed by each test.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "core.h"
#include "mdb_cunit.h"

typedef struct job_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_open; /* blocking jobs wait for this */
    int blocked;    /* blocking jobs now waiting */
    atomic_int ran, cancelled;
    int order[64];
    atomic_int norder;
} job_state;

typedef struct job {
    job_state *st;
    int id;
    bool block;
} job;

static void job_run(void *arg)
{
    job *j = arg;
    job_state *st = j->st;
    if (j->block) {
        pthread_mutex_lock(&st->mu);
        st->blocked++;
        pthread_cond_broadcast(&st->cv);
        while (!st->gate_open)
            pthread_cond_wait(&st->cv, &st->mu);
        pthread_mutex_unlock(&st->mu);
    }
    st->order[atomic_fetch_add(&st->norder, 1)] = j->id;
    atomic_fetch_add(&st->ran, 1);
}

static void job_cancel(void *arg)
{
    job *j = arg;
    atomic_fetch_add(&j->st->cancelled, 1);
}

/* arg: {atomic_int *ran, atomic_int *cancelled} */
static void count_run(void *arg)
{
    atomic_fetch_add(((atomic_int **)arg)[0], 1);
}

static void count_cancel(void *arg)
{
    atomic_fetch_add(((atomic_int **)arg)[1], 1);
}

static void *stop_main(void *p)
{
    core_pool_stop(p);
    return NULL;
}

static void state_init(job_state *st)
{
    *st = (job_state){0};
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
}

static void state_free(job_state *st)
{
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
}

static void test_runs_in_order(void)
{
    job_state st;
    state_init(&st);
    core_pool *p = NULL;
    CU_ASSERT_EQUAL_FATAL(core_pool_start(&p, 1, 0), 0);
    job jobs[32];
    for (int i = 0; i < 32; i++) {
        jobs[i] = (job){&st, i, false};
        CU_ASSERT_TRUE(core_pool_submit(p, job_run, job_cancel, &jobs[i]));
    }
    /* A job queued last, on one thread: when it has run, all have. */
    job last = {&st, 99, true};
    st.gate_open = true;
    CU_ASSERT_TRUE(core_pool_submit(p, job_run, job_cancel, &last));
    pthread_mutex_lock(&st.mu);
    while (st.blocked == 0)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    core_pool_free(p);
    CU_ASSERT_EQUAL(atomic_load(&st.ran), 33);
    CU_ASSERT_EQUAL(atomic_load(&st.cancelled), 0);
    for (int i = 0; i < 32; i++)
        CU_ASSERT_EQUAL(st.order[i], i);
    state_free(&st);
}

static void test_stop_cancels_queued_jobs(void)
{
    job_state st;
    state_init(&st);
    core_pool *p = NULL;
    CU_ASSERT_EQUAL_FATAL(core_pool_start(&p, 2, 5), 0);
    job busy[2] = {{&st, 0, true}, {&st, 1, true}};
    job queued[5];
    for (int i = 0; i < 2; i++)
        CU_ASSERT_TRUE(core_pool_submit(p, job_run, job_cancel, &busy[i]));
    /* Both threads hold a blocking job: the next five wait in the queue. */
    pthread_mutex_lock(&st.mu);
    while (st.blocked < 2)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    for (int i = 0; i < 5; i++) {
        queued[i] = (job){&st, 10 + i, false};
        CU_ASSERT_TRUE(core_pool_submit(p, job_run, job_cancel, &queued[i]));
    }
    /* Stop from another thread (it waits for the running jobs), then let
     * them finish. */
    pthread_t stopper;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&stopper, NULL, stop_main, p), 0);
    /* Once stopping, a submission is refused (the caller then runs the
     * work itself). Until then late jobs are accepted: counted. */
    atomic_int late_ran = 0, late_cancelled = 0;
    void *late[2] = {&late_ran, &late_cancelled};
    int late_accepted = 0;
    while (core_pool_submit(p, count_run, count_cancel, late)) {
        late_accepted++;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    pthread_mutex_lock(&st.mu);
    st.gate_open = true;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
    pthread_join(stopper, NULL);
    CU_ASSERT_EQUAL(atomic_load(&st.cancelled), 5);
    CU_ASSERT_EQUAL(atomic_load(&late_ran), 0);
    CU_ASSERT_EQUAL(atomic_load(&late_cancelled), late_accepted);
    CU_ASSERT_FALSE(core_pool_submit(p, job_run, job_cancel, &queued[0]));
    CU_ASSERT_EQUAL(atomic_load(&st.ran), 2);
    core_pool_stop(p); /* idempotent */
    core_pool_free(p);
    state_free(&st);
}

static const mdb_test_def pool_tests[] = {
    {"jobs run in order", test_runs_in_order},
    {"stop cancels queued jobs and refuses new ones", test_stop_cancels_queued_jobs},
    {NULL, NULL},
};

static const mdb_suite_def mdb_suites[] = {
    {"query pool", pool_tests},
    {NULL, NULL},
};

MDB_CUNIT_MAIN(mdb_suites)
