/* A small fork-join thread pool for the CPU backend: tp_run splits [0, n)
 * into chunks that the workers (and the calling thread) take dynamically.
 * Each worker has a scratch area that grows on demand and is then reused;
 * every worker is grown to the largest size any of them asked for before
 * the next job, so once each op has run with its largest request, steps
 * allocate nothing. */
#ifndef V4_BACKEND_CPU_THREADPOOL_H
#define V4_BACKEND_CPU_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct tp_pool tp_pool;
typedef void (*tp_fn)(void *ctx, int64_t begin, int64_t end, int worker);

tp_pool *tp_create(int n_threads); /* n_threads <= 0: one per online CPU */
void tp_destroy(tp_pool *p);
int tp_size(const tp_pool *p);
/* Runs fn over [0, n) in chunks of `grain` (>= 1); returns when all done. */
void tp_run(tp_pool *p, int64_t n, int64_t grain, tp_fn fn, void *ctx);
/* Per-worker scratch of at least `bytes`, 64-byte aligned; NULL if out of memory. */
void *tp_scratch(tp_pool *p, int worker, size_t bytes);

#endif
