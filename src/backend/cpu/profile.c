/* Timing marks and measured ceilings of the CPU backend. Ops run
 * synchronously, so a mark is simply the time it is issued. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void cpu_timer_mark(v4_backend *be, int idx)
{
    cpu_backend *cb = (cpu_backend *)be;
    if (idx >= 0 && idx < V4_MAX_MARKS)
        cb->marks[idx] = now_ms();
}

double cpu_timer_elapsed(v4_backend *be, int a, int b)
{
    cpu_backend *cb = (cpu_backend *)be;
    return cb->marks[b] - cb->marks[a];
}

typedef struct copy_ctx {
    float *dst;
    const float *src;
} copy_ctx;

static void copy_chunk(void *vc, int64_t b, int64_t e, int worker)
{
    copy_ctx *c = vc;
    memcpy(c->dst + b, c->src + b, (size_t)(e - b) * sizeof(float));
}

int cpu_measure_peaks(v4_backend *be, v4_peaks *p, v4_err *err)
{
    const int64_t n = 64 << 20; /* 256 MB */
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    if (!a || !b) {
        free(a);
        free(b);
        return v4_errf(err, "out of memory for the copy measurement");
    }
    for (int64_t i = 0; i < n; i++)
        a[i] = (float)i;
    copy_ctx c = {b, a};
    tp_run(cpu_tp(be), n, 1 << 20, copy_chunk, &c); /* warm-up, page faults */
    double best = INFINITY;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ms();
        tp_run(cpu_tp(be), n, 1 << 20, copy_chunk, &c);
        double t = now_ms() - t0;
        best = t < best ? t : best;
    }
    p->copy_gbps = 2.0 * n * sizeof(float) / (best * 1e-3) / 1e9;
    p->bf16_tflops = NAN;
    p->fp8_tflops = NAN;
    snprintf(p->how, sizeof p->how, "memcpy of 256 MB over %d threads, best of 5; no matrix-product library",
             tp_size(cpu_tp(be)));
    free(a);
    free(b);
    return 0;
}
