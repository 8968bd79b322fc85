/* The matrix-vector path of the linear layers (gemv.cu: steps of 1 to 4
 * tokens, FP8 and BF16 weights of 1024..8192 columns) against the CPU op
 * and the plain SIMT kernels, on fresh random inputs, outputs NaN-poisoned.
 *
 * Bounds (max |got - ref| / max |ref|): 1e-5 against both, as for the
 * plain kernels: activations stay fp32 and weights decode exactly; only the
 * summation order differs. Batch invariance is bitwise: every token's
 * output computed alone equals its output in a step of 4 (another kernel
 * instantiation, another reduce-scatter width). The fnuz NaN code must
 * give NaN in its row.
 *
 * Timings (printed, not asserted) at the model's shapes: the path against
 * the one a step of that size takes without it (tensor-core kernels, or
 * cuBLASLt on its bf16 weight copy), each the median of graph replays
 * over weight copies totalling >= 128 MB, so that HBM is read, not L2;
 * GB/s counts the bytes the call must read once (codes and scales). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"
#include "model/weights.h"

typedef struct gv_case {
    wfmt_t fmt;
    dtype_t dtype;
    int64_t rows, cols;
    int groups, n;
    float mag;
    const char *what;
    bool timed;
} gv_case;

/* A CUDA backend with the matrix-vector path for up to `gemv` tokens (0:
 * off), or the plain kernels; the caller's environment is restored. */
static v4_backend *gv_backend(dtype_t dialect, bool plain, int gemv)
{
    char v[16];
    snprintf(v, sizeof v, "%d", gemv);
    const char *const env[][2] = {{"V4_CUDA_PLAIN", plain ? "1" : NULL}, {"V4_CUDA_GEMV_MAX_TOKENS", v}};
    return gt_cuda_env(dialect, "bf16", true, 2, env);
}

/* y = W x on `be` for n tokens of x, into a host array. */
static float *gv_run(v4_backend *be, const v4_mat *hm, const float *x, int n, const gv_case *c)
{
    const size_t nx = (size_t)n * c->groups * c->cols, ny = (size_t)n * c->rows;
    float *y = gt_hostf(ny);
    v4_mat m = gt_upload_mat(be, hm);
    float *dx = gt_up(be, x, nx * 4), *dy = strcmp(be->ops->name, "cuda") == 0 ? gt_nan(be, ny) : gt_alloc(be, ny * 4);
    if (m.data && dx && dy) {
        be->ops->linear(be, dy, dx, n, &m, c->groups);
        gt_down(be, y, dy, ny * 4);
    }
    gt_free(be, dx), gt_free(be, dy);
    be->ops->free_mat(be, &m);
    return y;
}

static void check_gemv(v4_backend *cpu, v4_backend *gemv, v4_backend *plain, v4_backend *base, tu_rng *r,
                       const gv_case *c)
{
    char what[192], w2[256];
    const int before = gt_failed();
    snprintf(what, sizeof what, "gemv %s %lldx%lld groups %d n %d (%s)", dt_name(c->dtype), (long long)c->rows,
             (long long)c->cols, c->groups, c->n, c->what);
    v4_mat hm = gt_rand_mat(r, c->fmt, c->dtype, c->rows, c->cols, c->mag, "test.gemv.weight");
    const bool nan_code = c->fmt == WF_FP8 && c->dtype == DT_F8_E4M3FNUZ;
    if (nan_code) /* the fnuz NaN code: row 5's outputs are NaN on every path */
        ((uint8_t *)hm.data)[5 * c->cols + 7] = 0x80;
    const size_t ny = (size_t)c->n * c->rows, ny1 = (size_t)c->rows, per_tok = (size_t)c->groups * c->cols;
    float *x = gt_randn(r, (size_t)c->n * per_tok, 1.0f);
    float *yc = gv_run(cpu, &hm, x, c->n, c), *yg = gv_run(gemv, &hm, x, c->n, c), *yp = gv_run(plain, &hm, x, c->n, c);
    snprintf(w2, sizeof w2, "%s vs cpu", what);
    gt_close_to(w2, yg, yc, ny, 1e-5);
    snprintf(w2, sizeof w2, "%s vs plain", what);
    gt_close_to(w2, yg, yp, ny, 1e-5);
    if (memcmp(yg, yp, ny * 4) == 0)
        gt_fail("%s: gemv and plain outputs are bitwise equal: the paths did not switch", what);
    if (nan_code)
        for (int t = 0; t < c->n; t++)
            if (!isnan(yg[(size_t)t * c->rows + 5]))
                gt_fail("%s: token %d: the e4m3fnuz NaN code gave %g", what, t, yg[(size_t)t * c->rows + 5]);
    for (int t = 0; t < c->n && c->n > 1; t++) { /* each token alone: the same bits */
        float *y1 = gv_run(gemv, &hm, x + t * per_tok, 1, c);
        if (memcmp(y1, yg + t * ny1, ny1 * 4) != 0)
            gt_fail("%s: token %d alone differs from its output in the step of %d", what, t, c->n);
        free(y1);
    }
    if (c->timed && gt_failed() == before) {
        const double tg = gt_time_linear(gemv, &hm, x, c->n, c->groups), tb = gt_time_linear(base, &hm, x, c->n, c->groups);
        const double gb = (double)(mat_bytes(&hm) + mat_scale_bytes(&hm)) * 1e-9;
        gt_note("TIME %-48s gemv %8.2f us %7.1f GB/s | without %8.2f us %7.1f GB/s | x%.2f", what, tg * 1e6,
                gb / tg, tb * 1e6, gb / tb, tb / tg);
    }
    gt_mat_free(&hm);
    free(x), free(yc), free(yg), free(yp);
}

static void run_gemv(const gv_case *cs, size_t n, dtype_t dialect, const char *test)
{
    tu_rng r = gt_rng(test);
    v4_backend *cpu = gt_cpu(dialect), *gemv = gv_backend(dialect, false, 4), *plain = gv_backend(dialect, true, 0);
    v4_backend *base = gv_backend(dialect, false, 0);
    if (cpu && gemv && plain && base)
        for (size_t i = 0; i < n; i++)
            check_gemv(cpu, gemv, plain, base, &r, &cs[i]);
    gt_close(cpu), gt_close(gemv), gt_close(plain), gt_close(base);
}

/* Every column count the path takes (1024, 2048, 4096, 8192: 4 to 32
 * columns a lane), 1 to 4 tokens, grouped, both FP8 dialects and BF16,
 * large block scales. */
void test_gemv_linear(void)
{
    static const gv_case ocp[] = {
        {WF_FP8, DT_F8_E4M3, 136, 1024, 1, 1, 0.05f, "4 a lane", false},
        {WF_FP8, DT_F8_E4M3, 64, 2048, 1, 2, 0.05f, "8 a lane", false},
        {WF_FP8, DT_F8_E4M3, 200, 4096, 1, 3, 0.05f, "16 a lane, partial row block", false},
        {WF_FP8, DT_F8_E4M3, 96, 8192, 1, 4, 0.05f, "32 a lane", false},
        {WF_FP8, DT_F8_E4M3, 256, 4096, 4, 4, 0.05f, "grouped", false},
        {WF_FP8, DT_F8_E4M3, 128, 1024, 1, 2, 16384.0f, "scales 2^7..2^9", false},
        {WF_PLAIN, DT_BF16, 72, 1024, 1, 4, 0.05f, "4 a lane", false},
        {WF_PLAIN, DT_BF16, 64, 2048, 1, 1, 0.05f, "8 a lane", false},
        {WF_PLAIN, DT_BF16, 48, 4096, 1, 3, 0.05f, "16 a lane", false},
        {WF_PLAIN, DT_BF16, 40, 8192, 1, 4, 0.05f, "32 a lane", false},
    };
    static const gv_case fnuz[] = {
        {WF_FP8, DT_F8_E4M3FNUZ, 200, 4096, 1, 3, 0.05f, "fnuz, NaN code", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 64, 8192, 2, 2, 16384.0f, "fnuz, grouped, big scales", false},
    };
    run_gemv(ocp, sizeof ocp / sizeof *ocp, DT_F8_E4M3, "gemv_linear");
    run_gemv(fnuz, sizeof fnuz / sizeof *fnuz, DT_F8_E4M3FNUZ, "gemv_linear_fnuz");
}

/* The model's projections (MODEL.md 1-2) at decode steps, timed. */
void test_gemv_linear_real_dims(void)
{
    static const gv_case cs[] = {
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 1, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 1, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 1, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 1, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 1, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 4, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 1, 0.05f, "shared w1", true},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 1, 0.05f, "shared w2", true},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 1, 0.05f, "indexer wq_b", true},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 1, 0.05f, "compressor wkv (CSA)", true},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 1, 0.05f, "gate", true},
        {WF_PLAIN, DT_BF16, 64, 4096, 1, 1, 0.05f, "indexer weights", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 1, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 4, 0.05f, "head", true},
    };
    run_gemv(cs, sizeof cs / sizeof *cs, DT_F8_E4M3, "gemv_linear_real_dims");
}
