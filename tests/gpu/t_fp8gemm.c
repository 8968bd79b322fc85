/* The FP8 block-scaled products of the cuBLASLt path (blas.cu,
 * fp8_quant.cu; opt-in, V4_CUDA_BLAS_FP8=1): e4m3fn weights with their
 * 128x128 block scales against activations quantized per token and 128
 * inputs.
 *
 * References, both on the CPU backend (fp32, exact weight decoding):
 *   quantized: the inputs first rounded as fp8_quant.cu rounds them
 *     (fp8_quant_ref below, the same power-of-two scale rule and e4m3fn
 *     encoder); the GPU must land within 2e-3 of the reference's scale
 *     (max |got - ref| / max |ref|). What is left is the tensor cores'
 *     accumulation inside each 128-input block before the scales apply
 *     (Hopper keeps ~14 bits there; measured 2.5e-4..4.6e-4 on an H100).
 *   unquantized: the plain inputs. The GPU's error against it is the
 *     activation rounding itself (e4m3 keeps 3 mantissa bits: ~1e-2..3e-2
 *     here) and must be at least 4x its error against the quantized
 *     reference: the proof that the FP8 product ran. A wrong scale layout
 *     errs by O(1), and the bf16 product (where cuBLASLt offered no FP8
 *     algorithm) is as far from the quantized reference as the
 *     unquantized one is.
 * Shapes: the model's projections that take the product (wq_a, wq_b, wkv,
 * wo_b, shared w1/w2, indexer wq_b) at prefill and decode batch sizes,
 * plus partial row blocks, input counts whose block count is not a
 * multiple of 4 (padded scale rows), token counts not a multiple of 4
 * (padded to one with zero tokens), big block scales, and a block of zero
 * inputs (scale rule at amax 0). The CPU computes at most 2^33
 * multiply-adds a case (the first tokens of the largest ones).
 *
 * Timings (printed): the FP8 product against the bf16 one
 * (V4_CUDA_BLAS_FP8=0) on the same shapes, as gt_time_linear measures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"

#include "formats/dtype.h"

#define CPU_MACS_MAX (1LL << 33)

typedef struct fp8_case {
    int64_t rows, cols;
    int n;
    float mag;
    const char *what;
    bool timed;
} fp8_case;

/* A CUDA backend whose linear layers take cuBLASLt from one token, with
 * the FP8 products on (for every weight that can: from one token) or off;
 * the caller's environment is restored. */
static v4_backend *blas_backend(bool fp8)
{
    const char *const env[][2] = {{"V4_CUDA_BLAS", "1"},
                                  {"V4_CUDA_BLAS_MIN_TOKENS", "1"},
                                  {"V4_CUDA_BLAS_FP8_MIN_TOKENS", "1"},
                                  {"V4_CUDA_GEMV_MAX_TOKENS", "0"},
                                  {"V4_CUDA_BLAS_FP8", fp8 ? "1" : "0"}};
    return gt_cuda_env(DT_F8_E4M3, "bf16", true, 5, env);
}

/* x rounded as fp8_quant.cu rounds it: per token and 128 inputs, the
 * smallest 2^e with amax <= 448 * 2^e (e = 0 for amax 0), each input
 * x / 2^e encoded as e4m3fn (nearest even, saturating) and decoded. */
static void fp8_quant_ref(float *q, const float *x, int n, int64_t C)
{
    for (int t = 0; t < n; t++)
        for (int64_t k0 = 0; k0 < C; k0 += 128) {
            const float *xb = x + (int64_t)t * C + k0;
            float amax = 0.0f;
            for (int i = 0; i < 128; i++)
                amax = fmaxf(amax, fabsf(xb[i]));
            int e = 0;
            if (amax > 0.0f && isfinite(amax)) {
                int ea;
                const float m = frexpf(amax, &ea);
                e = ea - 9 + (m > 0.875f ? 1 : 0);
            }
            for (int i = 0; i < 128; i++)
                q[(int64_t)t * C + k0 + i] = ldexpf(dt_e4m3_to_f32(dt_f32_to_e4m3(ldexpf(xb[i], -e))), e);
        }
}

/* y = W x for the first n tokens of x on the CPU backend, into a host array. */
static float *cpu_linear(v4_backend *cpu, const v4_mat *mc, const float *x, int n)
{
    const size_t nx = (size_t)n * mc->cols, ny = (size_t)n * mc->rows;
    float *y = gt_hostf(ny), *dx = gt_up(cpu, x, nx * 4), *dy = gt_alloc(cpu, ny * 4);
    if (dx && dy) {
        cpu->ops->linear(cpu, dy, dx, n, mc, 1);
        gt_down(cpu, y, dy, ny * 4);
    }
    gt_free(cpu, dx), gt_free(cpu, dy);
    return y;
}

static void check_case(v4_backend *cpu, v4_backend *fp8, v4_backend *bf16, tu_rng *r, const fp8_case *c)
{
    char what[160];
    snprintf(what, sizeof what, "fp8 linear %lldx%lld n %d (%s)", (long long)c->rows, (long long)c->cols, c->n,
             c->what);
    const int before = gt_failed();
    v4_mat hm = gt_rand_mat(r, WF_FP8, DT_F8_E4M3, c->rows, c->cols, c->mag, "test.fp8.weight");
    const size_t nx = (size_t)c->n * c->cols, ny = (size_t)c->n * c->rows;
    float *x = gt_randn(r, nx, 1.0f), *xq = gt_hostf(nx), *y = gt_hostf(ny);
    for (int i = 0; i < 128; i++) /* token 0's first block: all zero */
        x[i] = 0.0f;
    fp8_quant_ref(xq, x, c->n, c->cols);
    const int64_t cpu_tok = CPU_MACS_MAX / (c->rows * c->cols);
    const int ncpu = c->n <= cpu_tok ? c->n : (int)(cpu_tok > 0 ? cpu_tok : 1);
    v4_mat mc = gt_upload_mat(cpu, &hm), mf = gt_upload_mat(fp8, &hm);
    float *dx = gt_up(fp8, x, nx * 4), *dy = gt_nan(fp8, ny);
    if (mc.data && mf.data && dx && dy) {
        fp8->ops->linear(fp8, dy, dx, c->n, &mf, 1);
        gt_down(fp8, y, dy, ny * 4);
        float *ref_q = cpu_linear(cpu, &mc, xq, ncpu), *ref = cpu_linear(cpu, &mc, x, ncpu);
        const size_t nc = (size_t)ncpu * c->rows;
        size_t bad = 0;
        const double eq = gt_relerr(y, ref_q, nc, &bad), eu = gt_relerr(y, ref, nc, &bad);
        gt_note("%s: error %.2e against the quantized reference, %.2e against the unquantized one%s", what, eq, eu,
                ncpu < c->n ? " (CPU: first tokens)" : "");
        char w2[224];
        snprintf(w2, sizeof w2, "%s vs quantized cpu", what);
        gt_close_to(w2, y, ref_q, nc, 2e-3);
        for (size_t i = nc; i < ny; i++) /* tokens beyond the CPU's: written and finite */
            if (!isfinite(y[i])) {
                gt_fail("%s: output %zu not written or not finite (%g)", what, i, y[i]);
                break;
            }
        if (!(eu >= 4 * eq))
            gt_fail("%s: the error against the unquantized reference (%.2e) is not 4x the one against the "
                    "quantized (%.2e): the FP8 product did not run",
                    what, eu, eq);
        free(ref_q), free(ref);
    }
    gt_free(fp8, dx), gt_free(fp8, dy);
    cpu->ops->free_mat(cpu, &mc);
    fp8->ops->free_mat(fp8, &mf);
    if (c->timed && gt_failed() == before) {
        const double tf = gt_time_linear(fp8, &hm, x, c->n, 1), tb = gt_time_linear(bf16, &hm, x, c->n, 1);
        const double flop = 2.0 * c->rows * c->cols * c->n;
        gt_note("TIME %-52s fp8 %9.2f us %7.1f TFLOP/s | bf16 %9.2f us %7.1f TFLOP/s | x%.2f", what, tf * 1e6,
                flop / tf * 1e-12, tb * 1e6, flop / tb * 1e-12, tb / tf);
    }
    gt_mat_free(&hm);
    free(x), free(xq), free(y);
}

static void run_cases(const fp8_case *cs, size_t n, const char *test)
{
    tu_rng r = gt_rng(test);
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *fp8 = blas_backend(true), *bf16 = blas_backend(false);
    char how[512];
    if (fp8 && !backend_cuda_describe_linear(fp8, how, sizeof how))
        gt_fail("%s: the cuBLASLt path is not on: %s", test, how);
    else if (cpu && fp8 && bf16) {
        for (size_t i = 0; i < n; i++)
            check_case(cpu, fp8, bf16, &r, &cs[i]);
        backend_cuda_describe_linear(fp8, how, sizeof how);
        gt_note("%s: %s", test, how);
    }
    gt_close(cpu);
    gt_close(fp8);
    gt_close(bf16);
}

void test_fp8_linear(void)
{
    static const fp8_case cs[] = {
        {256, 256, 64, 0.05f, "one block", false},
        {300, 512, 100, 0.05f, "partial row block", false},
        {512, 640, 129, 0.05f, "5 input blocks, 129 tokens", false},
        {384, 1024, 70, 16384.0f, "scales 2^7..2^9", false},
        {1024, 4096, 1, 0.05f, "one token", false},
        {4096, 1024, 7, 0.05f, "7 tokens", false},
    };
    run_cases(cs, sizeof cs / sizeof *cs, "fp8_linear");
}

void test_fp8_linear_real_dims(void)
{
    static const fp8_case cs[] = {
        {1024, 4096, 64, 0.05f, "wq_a", true},
        {1024, 4096, 2048, 0.05f, "wq_a", true},
        {32768, 1024, 64, 0.05f, "wq_b", true},
        {32768, 1024, 256, 0.05f, "wq_b", true},
        {32768, 1024, 2048, 0.05f, "wq_b", true},
        {512, 4096, 256, 0.05f, "wkv", true},
        {512, 4096, 2048, 0.05f, "wkv", true},
        {4096, 8192, 64, 0.05f, "wo_b", true},
        {4096, 8192, 256, 0.05f, "wo_b", true},
        {4096, 8192, 2048, 0.05f, "wo_b", true},
        {4096, 8192, 2047, 0.05f, "wo_b, padded to 2048 tokens", true},
        {2048, 4096, 256, 0.05f, "shared w1", true},
        {2048, 4096, 2048, 0.05f, "shared w1", true},
        {4096, 2048, 2048, 0.05f, "shared w2", true},
        {8192, 1024, 2048, 0.05f, "indexer wq_b", true},
    };
    run_cases(cs, sizeof cs / sizeof *cs, "fp8_linear_real_dims");
}
