/*
 * A small FIFO thread pool for request handlers that may run long (see
 * mdb_req_defer in http.h). Its threads run at a lower priority than the
 * HTTP threads, so that while they are busy with CPU-heavy queries a cheap
 * request (a health check, a read by key) still gets a CPU at once.
 *
 * Ownership: the pool owns its queue entries; a job's argument stays the
 * submitter's, handed to exactly one of run() or cancel().
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.h"

typedef struct pool_job {
    struct pool_job *next;
    void (*run)(void *);
    void (*cancel)(void *);
    void *arg;
} pool_job;

struct core_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pool_job *head, *tail;
    bool stopping;
    int nice_inc;
    unsigned n;
    pthread_t threads[];
};

static void *pool_main(void *arg)
{
    core_pool *p = arg;
    /* Linux applies a niceness to one thread when given its id. A failure
     * only costs the priority difference. */
    if (p->nice_inc)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), p->nice_inc);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        pool_job *j = p->head;
        if (!j)
            break; /* stopping, and nothing queued */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stopping)
            j->cancel(j->arg);
        else
            j->run(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int core_pool_start(core_pool **out, unsigned n, int nice_inc)
{
    if (!n)
        n = 1;
    core_pool *p = calloc(1, sizeof *p + n * sizeof *p->threads);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->nice_inc = nice_inc;
    for (; p->n < n; p->n++) {
        int rc = pthread_create(&p->threads[p->n], NULL, pool_main, p);
        if (rc) {
            core_pool_free(p);
            return -rc;
        }
    }
    *out = p;
    return 0;
}

bool core_pool_submit(core_pool *p, void (*run)(void *), void (*cancel)(void *), void *arg)
{
    pool_job *j = malloc(sizeof *j);
    if (!j)
        return false;
    *j = (pool_job){NULL, run, cancel, arg};
    pthread_mutex_lock(&p->mu);
    bool ok = !p->stopping;
    if (ok) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (!ok)
        free(j);
    return ok;
}

void core_pool_stop(core_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    bool joined = p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (joined)
        return;
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
}

void core_pool_free(core_pool *p)
{
    if (!p)
        return;
    core_pool_stop(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
