/* Fork-join pool: a generation counter wakes the workers, an atomic cursor
 * hands out chunks, a countdown tells the caller when all are done. */
#include "backend/cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct scratch {
    void *p;
    size_t size;
} scratch;

struct tp_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;
    int running; /* workers still inside the current job */
    int stop;
    /* the current job */
    tp_fn fn;
    void *ctx;
    int64_t total, grain;
    atomic_int_fast64_t cursor;
    scratch *scr;
    /* the largest scratch any worker has asked for: every worker is grown
     * to it before the next job, so which worker ran which chunk never
     * decides when memory is allocated */
    _Atomic size_t max_request;
};

static void work(tp_pool *p, int worker)
{
    for (;;) {
        int64_t b = atomic_fetch_add(&p->cursor, p->grain);
        if (b >= p->total)
            break;
        int64_t e = b + p->grain < p->total ? b + p->grain : p->total;
        p->fn(p->ctx, b, e, worker);
    }
}

typedef struct worker_arg {
    tp_pool *p;
    int id;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    tp_pool *p = wa.p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        work(p, wa.id);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

tp_pool *tp_create(int n_threads)
{
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    tp_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->scr = calloc((size_t)n_threads, sizeof *p->scr);
    if (!p->threads || !p->scr) {
        free(p->threads);
        free(p->scr);
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        wa->p = p;
        wa->id = i;
        pthread_create(&p->threads[i], NULL, worker_main, wa);
    }
    return p;
}

void tp_destroy(tp_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n; i++)
        free(p->scr[i].p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p->scr);
    free(p);
}

int tp_size(const tp_pool *p) { return p->n; }

static int grow(scratch *s, size_t bytes)
{
    size_t size = (bytes + 63) & ~(size_t)63;
    void *n = NULL;
    if (posix_memalign(&n, 64, size) != 0)
        return -1;
    free(s->p);
    s->p = n;
    s->size = size;
    return 0;
}

void tp_run(tp_pool *p, int64_t n, int64_t grain, tp_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    size_t want = atomic_load(&p->max_request);
    for (int w = 0; w < p->n; w++)
        if (p->scr[w].size < want)
            grow(&p->scr[w], want); /* on failure tp_scratch tries again and reports */
    if (grain < 1)
        grain = 1;
    if (p->n == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->grain = grain;
    atomic_store(&p->cursor, 0);
    p->running = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    work(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void *tp_scratch(tp_pool *p, int worker, size_t bytes)
{
    scratch *s = &p->scr[worker];
    size_t seen = atomic_load(&p->max_request);
    while (bytes > seen && !atomic_compare_exchange_weak(&p->max_request, &seen, bytes)) {
    }
    if (s->size < bytes && grow(s, bytes) != 0)
        return NULL;
    return s->p;
}
