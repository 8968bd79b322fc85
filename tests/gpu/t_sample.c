/* GPU sampling against sample_row_ref (the CPU reference of backend.h's
 * `sample`) on the real vocabulary (129280): greedy with and without tied
 * maxima, temperature alone, top-k, top-p, both, top-k 1, top-p 0, a very
 * low temperature, and rows of tied logits; also on 1001 logits (rows
 * not 16-byte aligned) and 7 (fewer than the GPU's scan has chunks). Bound: the same token in every
 * row (the GPU sums masses in double in another order; a different outcome
 * needs a draw within ~1e-16 of a boundary). The CPU backend's op must
 * agree with the reference too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"

static void check_sample(v4_backend *cpu, v4_backend *gpu, tu_rng *r, int64_t V)
{
    static const v4_sample_params base[] = {
        {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
        {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
        {.temperature = 0.7f, .top_k = 0, .top_p = 0.9f},
        {.temperature = 0.8f, .top_k = 40, .top_p = 1.0f},
        {.temperature = 1.3f, .top_k = 1000, .top_p = 0.5f},
        {.temperature = 1.0f, .top_k = 1, .top_p = 1.0f},
        {.temperature = 1.0f, .top_k = 0, .top_p = 0.0f},
        {.temperature = 0.05f, .top_k = 0, .top_p = 0.95f},
        {.temperature = 2.0f, .top_k = 3, .top_p = 0.7f},
    };
    const int nb = (int)(sizeof base / sizeof *base), rows = nb * 4;
    float *l = gt_randn(r, (size_t)rows * V, 3.0f), *scratch = gt_hostf((size_t)(2 * V));
    v4_sample_params *p = calloc((size_t)rows, sizeof *p);
    for (int i = 0; i < rows; i++) {
        p[i] = base[i % nb];
        p[i].seed = tu_next(r);
        p[i].step = tu_next(r) % 100000;
        float *row = l + (int64_t)i * V;
        if (i / nb == 1) { /* ties: the maximum three times, and blocks of equal logits */
            const float mx = 12.0f;
            row[5] = row[V / 2] = row[V - 1] = mx;
            for (int64_t j = 100; j < 600 && j < V; j++)
                row[j] = 2.5f;
        } else if (i / nb == 2) { /* coarse logits: many exact ties everywhere */
            for (int64_t j = 0; j < V; j++)
                row[j] = roundf(row[j]);
        }
    }
    int32_t *ref = calloc((size_t)rows, 4), *got = calloc((size_t)rows, 4), *cpu_got = calloc((size_t)rows, 4);
    for (int i = 0; i < rows; i++)
        ref[i] = sample_row_ref(l + (int64_t)i * V, V, &p[i], scratch);
    const size_t nl = (size_t)rows * V * 4;
    float *lc = gt_up(cpu, l, nl), *lg = gt_up(gpu, l, nl);
    v4_sample_params *pc = gt_up(cpu, p, (size_t)rows * sizeof *p), *pg = gt_up(gpu, p, (size_t)rows * sizeof *p);
    int32_t *ic = gt_alloc(cpu, (size_t)rows * 4), *ig = (int32_t *)gt_nan(gpu, (size_t)rows);
    cpu->ops->sample(cpu, ic, lc, rows, V, pc);
    gpu->ops->sample(gpu, ig, lg, rows, V, pg);
    gt_down(cpu, cpu_got, ic, (size_t)rows * 4);
    gt_down(gpu, got, ig, (size_t)rows * 4);
    gt_same_ints("cpu sample op vs sample_row_ref", cpu_got, ref, (size_t)rows);
    for (int i = 0; i < rows; i++)
        if (got[i] != ref[i])
            gt_fail("sample row %d (T %g, top_k %d, top_p %g): GPU token %d, reference %d", i, p[i].temperature,
                    p[i].top_k, p[i].top_p, got[i], ref[i]);
    gt_note("sample: %d rows of %lld compared", rows, (long long)V);
    gt_free(cpu, lc), gt_free(cpu, pc), gt_free(cpu, ic), gt_free(gpu, lg), gt_free(gpu, pg), gt_free(gpu, ig);
    free(l), free(scratch), free(p), free(ref), free(got), free(cpu_got);
}

void test_sample(void)
{
    tu_rng r = gt_rng("sample");
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *gpu = gt_cuda(DT_F8_E4M3, "bf16", true);
    if (cpu && gpu) {
        check_sample(cpu, gpu, &r, GT.quick ? 1000 : 129280);
        check_sample(cpu, gpu, &r, 1001); /* rows not 16-byte aligned: the scan's scalar path */
        check_sample(cpu, gpu, &r, 7);    /* fewer logits than the scan has chunks */
    }
    gt_close(cpu);
    gt_close(gpu);
}
