/* The tensor-core matrix kernels (the CUDA backend's default for linear
 * layers and MoE experts) against the plain SIMT kernels (a second CUDA
 * backend created with V4_CUDA_PLAIN=1) and the CPU ops, on fresh random
 * inputs, every GPU output NaN-poisoned first so that a value the kernel
 * failed to write shows up. The tensor-core tests run with the cuBLASLt
 * path off (V4_CUDA_BLAS=0); the blas_* tests check that path's bf16
 * products (bf16 copies of the weights, bf16 activations, fp32
 * accumulation: the same bounds as the tensor-core kernels; the FP8
 * products are off here and tested in t_fp8gemm.c) against the CPU and the
 * tensor-core kernels.
 *
 * Bounds (max |got - ref| / max |ref|):
 *   fast vs CPU, fast vs plain: 1e-2 for linear layers and the real-size
 *     MoE, 3e-2 for the small MoE shapes. Where a linear case would cost
 *     the CPU more than 2^33 multiply-adds (2048-token steps, the head at
 *     512 tokens) the CPU computes its first tokens only; fast vs plain
 *     still covers every token. The fast path rounds activations
 *     to bf16 (relative 2^-9 per element; F16/F32 weights too) and
 *     accumulates in fp32: linear layers land at ~2e-3 (a host emulation of
 *     these kernels on the same kinds of inputs: 1.3e-3..3.8e-3). The MoE
 *     chain (up, clamped SwiGLU, down) rounds twice; with few inputs (K of
 *     40..256) and FP8 weights from random bytes (values spread over 2^16,
 *     so a few products dominate each sum) the emulation reached 1.6e-2.
 *   plain vs CPU: 1e-5 (both fp32 with exact weight decoding).
 *   batch invariance: bitwise. A token's output computed alone, inside a
 *     larger batch and inside a batch of another size (so another token
 *     tile of 8..64, and for small projections the other kernel: 32-row
 *     blocks with K split over the warps for few tokens, 128-row blocks
 *     otherwise) must be the same bits.
 *   Token tile 64 is chosen only while the grid keeps at least one block
 *   per multiprocessor; its cases have enough rows for that on up to 144
 *   multiprocessors (H100 and H200 have 132).
 *   The fast and plain outputs must differ somewhere (the switch works).
 *
 * Timings (printed, not asserted): per real-dimension case, the median of
 * 20 replays of a captured graph of 20 calls (so launch gaps are hidden),
 * divided by 20 (4 calls for calls of a millisecond or more, whose launch
 * gaps are small beside them); the weights rotate among copies totalling >= 128 MB so
 * that repeated calls read HBM, not L2; effective GB/s counts each weight
 * byte (codes and scales) that the call must read once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"

/* Failures before the current test started (gt_failed() counts the run). */
static int g_base;
static bool failed_here(void) { return gt_failed() > g_base; }

/* A CUDA backend on the SIMT kernels (plain), or on the tensor-core
 * kernels with the cuBLASLt path (bf16 products) for steps of at least
 * blas_min tokens (0: path off, the kernels at every size); the
 * matrix-vector path (gemv.cu) is off, so that these tests reach the
 * kernels at one token too. The caller's environment is restored
 * afterwards. */
static v4_backend *cuda_mode(dtype_t dialect, bool plain, int blas_min)
{
    char min[16];
    snprintf(min, sizeof min, "%d", blas_min);
    const char *const env[][2] = {{"V4_CUDA_PLAIN", plain ? "1" : NULL},
                                  {"V4_CUDA_BLAS", blas_min > 0 ? "1" : "0"},
                                  {"V4_CUDA_BLAS_MIN_TOKENS", blas_min > 0 ? min : NULL},
                                  {"V4_CUDA_GEMV_MAX_TOKENS", "0"},
                                  {"V4_CUDA_BLAS_FP8", "0"}};
    return gt_cuda_env(dialect, "bf16", true, 5, env);
}

static const char *fmt_name(wfmt_t f, dtype_t d) { return f == WF_MXFP4 ? "MXFP4" : dt_name(d); }

static bool same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* ---- linear layers ---- */

typedef struct lin_case {
    wfmt_t fmt;
    dtype_t dtype;
    int64_t rows, cols;
    int groups, n;
    float mag; /* weight magnitude; large ones take the slow scale path */
    const char *what;
    bool timed;
} lin_case;

/* Most multiply-adds a linear case asks of the CPU (the largest cases before
 * 2048-token steps: wq_b, wo_a, wo_b at 256 tokens). */
#define CPU_MACS_MAX (1LL << 33)

/* One case: fast (the backend under test) against the CPU, and against
 * the plain kernels when `plain` is given, or the tensor-core kernels when
 * `tc` is given (fast is then the cuBLASLt path); fast must differ from
 * the other GPU path somewhere (the switch works). Timed cases time fast
 * against that other path. */
static void check_linear(v4_backend *cpu, v4_backend *fast, v4_backend *plain, v4_backend *tc, tu_rng *r,
                         const lin_case *c)
{
    char what[192];
    snprintf(what, sizeof what, "linear %s %lldx%lld groups %d n %d (%s)", fmt_name(c->fmt, c->dtype),
             (long long)c->rows, (long long)c->cols, c->groups, c->n, c->what);
    v4_backend *other = plain ? plain : tc;
    const char *oname = plain ? "plain" : "tc";
    v4_mat hm = gt_rand_mat(r, c->fmt, c->dtype, c->rows, c->cols, c->mag, "test.linear.weight");
    const bool nan_code = c->fmt == WF_FP8 && c->dtype == DT_F8_E4M3FNUZ && c->rows > 5 && c->cols > 7;
    if (nan_code) /* the fnuz NaN code: row 5's outputs are NaN on every path */
        ((uint8_t *)hm.data)[5 * c->cols + 7] = 0x80;
    v4_mat mc = gt_upload_mat(cpu, &hm), mf = gt_upload_mat(fast, &hm), mo = gt_upload_mat(other, &hm);
    /* the CPU's tokens: all, or the first ncpu where that would pass CPU_MACS_MAX */
    const int64_t cpu_tok = CPU_MACS_MAX / (c->rows * c->cols) > 0 ? CPU_MACS_MAX / (c->rows * c->cols) : 1;
    const int ncpu = c->n <= cpu_tok ? c->n : (int)cpu_tok;
    const size_t nx = (size_t)c->n * c->groups * c->cols, ny = (size_t)c->n * c->rows, nyc = (size_t)ncpu * c->rows;
    float *x = gt_randn(r, nx, 1.0f), *yc = gt_hostf(nyc), *yf = gt_hostf(ny), *yo = gt_hostf(ny);
    float *xc = gt_up(cpu, x, nx * 4), *xf = gt_up(fast, x, nx * 4), *xo = gt_up(other, x, nx * 4);
    float *dc = gt_alloc(cpu, nyc * 4), *df = gt_nan(fast, ny), *dO = gt_nan(other, ny);
    if (mc.data && mf.data && mo.data && xc && xf && xo && dc && df && dO) {
        cpu->ops->linear(cpu, dc, xc, ncpu, &mc, c->groups);
        fast->ops->linear(fast, df, xf, c->n, &mf, c->groups);
        other->ops->linear(other, dO, xo, c->n, &mo, c->groups);
        gt_down(cpu, yc, dc, nyc * 4);
        gt_down(fast, yf, df, ny * 4);
        gt_down(other, yo, dO, ny * 4);
        char w2[256], sub[48] = "";
        if (ncpu < c->n)
            snprintf(sub, sizeof sub, " (first %d tokens)", ncpu);
        snprintf(w2, sizeof w2, "%s fast vs cpu%s", what, sub);
        gt_close_to(w2, yf, yc, nyc, 1e-2);
        snprintf(w2, sizeof w2, "%s %s vs cpu%s", what, oname, sub);
        gt_close_to(w2, yo, yc, nyc, plain ? 1e-5 : 1e-2);
        snprintf(w2, sizeof w2, "%s fast vs %s", what, oname);
        gt_close_to(w2, yf, yo, ny, 1e-2);
        if (same_bits(yf, yo, ny))
            gt_fail("%s: fast and %s outputs are bitwise equal: the paths did not switch", what, oname);
        if (nan_code)
            for (int t = 0; t < c->n; t++)
                if (!isnan(yf[(size_t)t * c->rows + 5]) || (t < ncpu && !isnan(yc[(size_t)t * c->rows + 5]))) {
                    gt_fail("%s: the e4m3fnuz NaN code did not give NaN (token %d: fast %g, cpu %g)", what, t,
                            yf[(size_t)t * c->rows + 5], t < ncpu ? yc[(size_t)t * c->rows + 5] : NAN);
                    break;
                }
        if (c->timed && !failed_here()) {
            const double tf = gt_time_linear(fast, &hm, x, c->n, c->groups),
                         to = gt_time_linear(other, &hm, x, c->n, c->groups);
            const double gb = (double)(mat_bytes(&hm) + mat_scale_bytes(&hm)) * 1e-9;
            gt_note("TIME %-44s %s %9.2f us %7.1f GB/s | %s %9.2f us %7.1f GB/s | x%.2f", what,
                    tc ? "cublaslt" : "fast", tf * 1e6, gb / tf, oname, to * 1e6, gb / to, to / tf);
        }
    }
    gt_free(cpu, xc), gt_free(cpu, dc), gt_free(fast, xf), gt_free(fast, df), gt_free(other, xo), gt_free(other, dO);
    cpu->ops->free_mat(cpu, &mc);
    fast->ops->free_mat(fast, &mf);
    other->ops->free_mat(other, &mo);
    gt_mat_free(&hm);
    free(x), free(yc), free(yf), free(yo);
}

/* blas_min 0: the tensor-core kernels against the plain ones; > 0: the
 * cuBLASLt path from blas_min tokens against the tensor-core kernels. */
static void run_linear(const lin_case *cs, size_t n, dtype_t dialect, const char *test, int blas_min)
{
    tu_rng r = gt_rng(test);
    g_base = gt_failed();
    v4_backend *cpu = gt_cpu(dialect), *fast = cuda_mode(dialect, false, blas_min);
    v4_backend *other = cuda_mode(dialect, blas_min == 0, 0);
    char how[256];
    if (fast && blas_min > 0 && !backend_cuda_describe_linear(fast, how, sizeof how))
        gt_fail("%s: the cuBLASLt path is not on: %s", test, how);
    else if (cpu && fast && other)
        for (size_t i = 0; i < n; i++)
            check_linear(cpu, fast, blas_min == 0 ? other : NULL, blas_min > 0 ? other : NULL, &r, &cs[i]);
    gt_close(cpu);
    gt_close(fast);
    gt_close(other);
}

/* Every format at awkward shapes: rows not a multiple of the 128-row block
 * or of 16, columns not a multiple of the stage (or of 4, or rows not
 * 16-byte aligned: the element-load path), token counts around the tiles,
 * grouped, and block scales big enough for the two-multiply path. The
 * cases of 63..513 tokens have the rows that keep token tile 64 (see the
 * top), so they check it at those shapes too. */
void test_tc_linear_formats(void)
{
    static const lin_case ocp[] = {
        {WF_PLAIN, DT_F32, 300, 200, 1, 1, 0.05f, "awkward", false},
        {WF_PLAIN, DT_F32, 37, 129, 1, 3, 0.05f, "cols % 4 != 0", false},
        {WF_PLAIN, DT_F32, 130, 256, 1, 17, 0.05f, "aligned", false},
        {WF_PLAIN, DT_BF16, 300, 200, 1, 17, 0.05f, "awkward", false},
        {WF_PLAIN, DT_BF16, 129, 203, 1, 129, 0.05f, "unaligned rows", false},
        {WF_PLAIN, DT_BF16, 256, 512, 1, 257, 0.05f, "aligned", false},
        {WF_PLAIN, DT_F16, 300, 200, 1, 3, 0.05f, "awkward", false},
        {WF_PLAIN, DT_F16, 17, 37, 1, 257, 0.05f, "unaligned rows", false},
        {WF_FP8, DT_F8_E4M3, 300, 200, 1, 1, 0.05f, "unaligned rows, partial scale blocks", false},
        {WF_FP8, DT_F8_E4M3, 300, 256, 1, 37, 0.05f, "aligned, partial row block", false},
        {WF_FP8, DT_F8_E4M3, 257, 389, 1, 129, 0.05f, "cols % 4 != 0", false},
        {WF_FP8, DT_F8_E4M3, 240, 200, 8, 3, 0.05f, "grouped, 30 rows per group", false},
        {WF_FP8, DT_F8_E4M3, 1024, 512, 4, 17, 0.05f, "grouped, aligned", false},
        {WF_FP8, DT_F8_E4M3, 300, 640, 1, 9, 16384.0f, "scales 2^7..2^9: slow path", false},
        {WF_MXFP4, DT_MXFP4, 300, 224, 1, 1, 0.05f, "unaligned scale rows", false},
        {WF_MXFP4, DT_MXFP4, 300, 256, 1, 37, 0.05f, "aligned", false},
        {WF_MXFP4, DT_MXFP4, 33, 96, 1, 129, 0.05f, "awkward", false},
        {WF_MXFP4, DT_MXFP4, 300, 512, 1, 257, 0.05f, "aligned, 257 tokens", false},
        {WF_MXFP4, DT_MXFP4, 200, 768, 1, 16, 8.0f, "scales 2^0..2^2: slow path mixed in", false},
        {WF_FP8, DT_F8_E4M3, 18500, 389, 1, 63, 0.05f, "tile 64, cols % 4 != 0", false},
        {WF_FP8, DT_F8_E4M3, 9300, 640, 1, 65, 16384.0f, "tile 64, slow scale path", false},
        {WF_FP8, DT_F8_E4M3, 2100, 512, 4, 513, 0.05f, "tile 64, grouped, 525 rows per group", false},
        {WF_PLAIN, DT_BF16, 9300, 203, 1, 65, 0.05f, "tile 64, unaligned rows", false},
        {WF_PLAIN, DT_BF16, 3800, 1024, 1, 257, 0.05f, "tile 64, 8 stages", false},
        {WF_PLAIN, DT_F16, 6200, 200, 1, 129, 0.05f, "tile 64, awkward", false},
        {WF_PLAIN, DT_F32, 2100, 129, 1, 513, 0.05f, "tile 64, cols % 4 != 0", false},
        {WF_MXFP4, DT_MXFP4, 6200, 224, 1, 129, 0.05f, "tile 64, unaligned scale rows", false},
        {WF_MXFP4, DT_MXFP4, 3800, 512, 1, 257, 8.0f, "tile 64, slow path mixed in", false},
    };
    static const lin_case fnuz[] = {
        {WF_FP8, DT_F8_E4M3FNUZ, 300, 200, 1, 37, 0.05f, "fnuz, awkward", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 129, 203, 1, 3, 0.05f, "fnuz, cols % 4 != 0", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 300, 256, 1, 257, 0.05f, "fnuz, aligned", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 130, 512, 1, 8, 16384.0f, "fnuz, slow scale path", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 3800, 203, 1, 257, 0.05f, "fnuz, tile 64, cols % 4 != 0", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 9300, 256, 1, 65, 16384.0f, "fnuz, tile 64, slow scale path", false},
    };
    run_linear(ocp, sizeof ocp / sizeof *ocp, DT_F8_E4M3, "tc_linear_formats", 0);
    run_linear(fnuz, sizeof fnuz / sizeof *fnuz, DT_F8_E4M3FNUZ, "tc_linear_formats_fnuz", 0);
}

/* The model's shapes (MODEL.md 1-2), at decode batch sizes and a 2048-token
 * prefill chunk, with timings. */
void test_tc_linear_real_dims(void)
{
    static const lin_case cs[] = {
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 1, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 256, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 1, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 64, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 128, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 256, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 512, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 2048, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 7, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 256, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 1, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 256, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 7, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 64, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 128, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 256, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 512, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 2048, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 256, 0.05f, "shared w1", true},
        {WF_MXFP4, DT_MXFP4, 2048, 4096, 1, 16, 0.05f, "expert w1 as a linear", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 1, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 7, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 64, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 128, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 256, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 512, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 2048, 0.05f, "head", true},
    };
    run_linear(cs, sizeof cs / sizeof *cs, DT_F8_E4M3, "tc_linear_real_dims", 0);
}

/* ---- linear layers through cuBLASLt (blas.cu) ---- */

/* The library path at awkward shapes: rows and columns off the 8-element
 * (16-byte) grain, grouped products with odd group sizes, big block scales
 * (the bf16 copy is exact), the fnuz NaN code (NaN in the copy and out). */
void test_blas_linear_formats(void)
{
    static const lin_case ocp[] = {
        {WF_FP8, DT_F8_E4M3, 300, 256, 1, 64, 0.05f, "partial row block", false},
        {WF_FP8, DT_F8_E4M3, 257, 389, 1, 129, 0.05f, "cols % 8 != 0", false},
        {WF_FP8, DT_F8_E4M3, 1024, 512, 4, 65, 0.05f, "grouped", false},
        {WF_FP8, DT_F8_E4M3, 240, 200, 8, 70, 0.05f, "grouped, 30 rows per group", false},
        {WF_FP8, DT_F8_E4M3, 300, 640, 1, 100, 16384.0f, "scales 2^7..2^9", false},
        {WF_PLAIN, DT_BF16, 129, 203, 1, 129, 0.05f, "unaligned rows", false},
        {WF_PLAIN, DT_BF16, 3800, 1024, 1, 257, 0.05f, "aligned", false},
    };
    static const lin_case fnuz[] = {
        {WF_FP8, DT_F8_E4M3FNUZ, 300, 256, 1, 257, 0.05f, "fnuz, NaN code", false},
        {WF_FP8, DT_F8_E4M3FNUZ, 9300, 256, 1, 65, 16384.0f, "fnuz, big scales", false},
    };
    run_linear(ocp, sizeof ocp / sizeof *ocp, DT_F8_E4M3, "blas_linear_formats", 64);
    run_linear(fnuz, sizeof fnuz / sizeof *fnuz, DT_F8_E4M3FNUZ, "blas_linear_formats_fnuz", 64);
}

/* The model's shapes (MODEL.md 1-2) from 1 to 2048 tokens, every size on
 * the library (threshold 1), timed against the tensor-core kernels: the
 * timings are where the thresholds of blas.cu come from. */
void test_blas_linear_real_dims(void)
{
    static const lin_case cs[] = {
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 1, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 8, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 64, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 256, 0.05f, "wq_a", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 1, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 8, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 16, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 32, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 64, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 128, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 256, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 2048, 0.05f, "wq_b", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 1, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 8, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 64, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 256, 0.05f, "wkv", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 1, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 8, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 64, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 256, 0.05f, "wo_a, 8 groups", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 1, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 8, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 16, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 32, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 64, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 128, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 256, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 2048, 0.05f, "wo_b", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 1, 0.05f, "shared w1", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 8, 0.05f, "shared w1", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 64, 0.05f, "shared w1", true},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 256, 0.05f, "shared w1", true},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 1, 0.05f, "shared w2", true},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 8, 0.05f, "shared w2", true},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 64, 0.05f, "shared w2", true},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 256, 0.05f, "shared w2", true},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 1, 0.05f, "indexer wq_b", true},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 8, 0.05f, "indexer wq_b", true},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 64, 0.05f, "indexer wq_b", true},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 256, 0.05f, "indexer wq_b", true},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 1, 0.05f, "CSA compressor wkv", true},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 8, 0.05f, "CSA compressor wkv", true},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 64, 0.05f, "CSA compressor wkv", true},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 256, 0.05f, "CSA compressor wkv", true},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 1, 0.05f, "indexer compressor wkv", true},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 8, 0.05f, "indexer compressor wkv", true},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 64, 0.05f, "indexer compressor wkv", true},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 256, 0.05f, "indexer compressor wkv", true},
        {WF_PLAIN, DT_BF16, 64, 4096, 1, 1, 0.05f, "indexer weights_proj", true},
        {WF_PLAIN, DT_BF16, 64, 4096, 1, 8, 0.05f, "indexer weights_proj", true},
        {WF_PLAIN, DT_BF16, 64, 4096, 1, 64, 0.05f, "indexer weights_proj", true},
        {WF_PLAIN, DT_BF16, 64, 4096, 1, 256, 0.05f, "indexer weights_proj", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 1, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 8, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 16, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 32, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 64, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 128, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 256, 0.05f, "head", true},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 2048, 0.05f, "head", true},
    };
    run_linear(cs, sizeof cs / sizeof *cs, DT_F8_E4M3, "blas_linear_real_dims", 1);
}

/* ---- MoE experts ---- */

typedef struct moe_case {
    wfmt_t fmt;
    dtype_t dt;
    int64_t D, I;
    int E, k, n;
    float limit;
    bool skew, timed;
    double tol; /* fast vs CPU and vs plain */
} moe_case;

typedef struct moe_gpu {
    v4_backend *be;
    v4_mat *w1, *w2, *w3;
    float *l, *bias, *w, *x, *y, *scr;
    int32_t *ids;
} moe_gpu;

typedef struct moe_ctx {
    const moe_case *c;
    moe_gpu *g;
} moe_ctx;

static void moe_call(v4_backend *be, void *ctx, int i)
{
    moe_ctx *m = ctx;
    (void)i;
    be->ops->moe_experts(be, m->g->y, m->g->x, m->g->ids, m->g->w, m->c->n, m->c->k, m->g->w1, m->g->w2, m->g->w3,
                         m->c->limit, m->g->scr);
}

static bool moe_gpu_up(moe_gpu *g, v4_backend *be, const moe_case *c, v4_mat *h1, v4_mat *h2, v4_mat *h3,
                       const float *l, const float *bias, const float *x, size_t scr)
{
    const int E = c->E, n = c->n, k = c->k;
    memset(g, 0, sizeof *g);
    g->be = be;
    g->w1 = calloc((size_t)E, sizeof *g->w1), g->w2 = calloc((size_t)E, sizeof *g->w2);
    g->w3 = calloc((size_t)E, sizeof *g->w3);
    for (int e = 0; e < E; e++)
        g->w1[e] = gt_upload_mat(be, &h1[e]), g->w2[e] = gt_upload_mat(be, &h2[e]), g->w3[e] = gt_upload_mat(be, &h3[e]);
    g->l = gt_up(be, l, (size_t)n * E * 4);
    g->bias = gt_up(be, bias, (size_t)E * 4);
    g->ids = gt_alloc(be, (size_t)n * k * 4);
    g->w = gt_alloc(be, (size_t)n * k * 4);
    g->x = gt_up(be, x, (size_t)n * c->D * 4);
    g->y = gt_nan(be, (size_t)n * c->D);
    g->scr = gt_nan(be, scr);
    return g->l && g->bias && g->ids && g->w && g->x && g->y && g->scr && !failed_here();
}

static void moe_gpu_free(moe_gpu *g, int E)
{
    v4_backend *be = g->be;
    if (!be)
        return;
    for (int e = 0; e < E; e++)
        be->ops->free_mat(be, &g->w1[e]), be->ops->free_mat(be, &g->w2[e]), be->ops->free_mat(be, &g->w3[e]);
    free(g->w1), free(g->w2), free(g->w3);
    gt_free(be, g->l), gt_free(be, g->bias), gt_free(be, g->ids), gt_free(be, g->w), gt_free(be, g->x);
    gt_free(be, g->y), gt_free(be, g->scr);
}

/* Routes on `be` (which also tells a GPU backend E), then overwrites the
 * choices with the reference ones so that every backend computes the same. */
static void moe_route_run(moe_gpu *g, const moe_case *c, const v4_step *st, const int32_t *hid, const float *hw,
                          float *yhost)
{
    v4_backend *be = g->be;
    be->ops->moe_route(be, g->ids, g->w, g->l, g->bias, NULL, st, c->E, c->k, 1.5f);
    if (hid) {
        gt_copy_to(be, g->ids, hid, (size_t)c->n * c->k * 4);
        gt_copy_to(be, g->w, hw, (size_t)c->n * c->k * 4);
    }
    be->ops->moe_experts(be, g->y, g->x, g->ids, g->w, c->n, c->k, g->w1, g->w2, g->w3, c->limit, g->scr);
    gt_down(be, yhost, g->y, (size_t)c->n * c->D * 4);
}

static bool step_for(v4_backend *be, const gt_step *s, v4_step *dev)
{
    v4_err err;
    v4_step h = gt_host_view(s);
    if (be->ops->reserve_step(be, s->n_tokens, 1, 1, &err) || be->ops->set_step(be, &h, dev, &err)) {
        gt_fail("step: %s", err.msg);
        return false;
    }
    return true;
}

static void check_moe(v4_backend *cpu, v4_backend *fast, v4_backend *plain, tu_rng *r, const moe_case *c)
{
    char what[192];
    snprintf(what, sizeof what, "moe_experts %s D %lld I %lld: %d experts top %d, %d tokens%s (limit %g)",
             c->fmt == WF_MXFP4 ? "MXFP4" : dt_name(c->dt), (long long)c->D, (long long)c->I, c->E, c->k, c->n,
             c->skew ? ", skewed" : "", c->limit);
    const int E = c->E, k = c->k, n = c->n;
    const int64_t D = c->D, I = c->I;
    v4_mat *h1 = calloc((size_t)E, sizeof *h1), *h2 = calloc((size_t)E, sizeof *h2), *h3 = calloc((size_t)E, sizeof *h3);
    for (int e = 0; e < E; e++) {
        h1[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, 1.5f / sqrtf((float)D), "ffn.experts.w1");
        h2[e] = gt_rand_mat(r, c->fmt, c->dt, D, I, 1.5f / sqrtf((float)I), "ffn.experts.w2");
        h3[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, 1.5f / sqrtf((float)D), "ffn.experts.w3");
    }
    int start = 0, nn = n;
    gt_step s = gt_make_step(r, 1, NULL, &start, &nn, NULL, 1, 100);
    float *l = gt_randn(r, (size_t)n * E, 1.0f), *bias = gt_hostf((size_t)E);
    if (c->skew)
        for (int e = 0; e < E; e++)
            bias[e] = e % 17 == 3 ? 3.0f : 0.0f;
    float *x = gt_randn(r, (size_t)n * D, 3.0f);
    const size_t scr = (size_t)moe_scratch_floats(n, k, D, I, E);
    int32_t *hid = calloc((size_t)n * k, 4);
    float *hw = gt_hostf((size_t)n * k), *yc = gt_hostf((size_t)n * D), *yf = gt_hostf((size_t)n * D),
          *yp = gt_hostf((size_t)n * D);
    moe_gpu gc, gf, gp;
    memset(&gc, 0, sizeof gc), memset(&gf, 0, sizeof gf), memset(&gp, 0, sizeof gp);
    v4_step dc, df, dp;
    const bool ok = moe_gpu_up(&gc, cpu, c, h1, h2, h3, l, bias, x, scr) &&
                    moe_gpu_up(&gf, fast, c, h1, h2, h3, l, bias, x, scr) &&
                    moe_gpu_up(&gp, plain, c, h1, h2, h3, l, bias, x, scr) && step_for(cpu, &s, &dc) &&
                    step_for(fast, &s, &df) && step_for(plain, &s, &dp);
    if (ok) {
        moe_route_run(&gc, c, &dc, NULL, NULL, yc);
        gt_down(cpu, hid, gc.ids, (size_t)n * k * 4);
        gt_down(cpu, hw, gc.w, (size_t)n * k * 4);
        moe_route_run(&gf, c, &df, hid, hw, yf);
        moe_route_run(&gp, c, &dp, hid, hw, yp);
        char w2[256];
        snprintf(w2, sizeof w2, "%s fast vs cpu", what);
        gt_close_to(w2, yf, yc, (size_t)n * D, c->tol);
        snprintf(w2, sizeof w2, "%s plain vs cpu", what);
        gt_close_to(w2, yp, yc, (size_t)n * D, 1e-5);
        snprintf(w2, sizeof w2, "%s fast vs plain", what);
        gt_close_to(w2, yf, yp, (size_t)n * D, c->tol);
        if (same_bits(yf, yp, (size_t)n * D))
            gt_fail("%s: fast and plain outputs are bitwise equal: V4_CUDA_PLAIN did not switch paths", what);
        if (c->timed && !failed_here()) {
            /* bytes: every expert that any pair chose, read once */
            bool *used = calloc((size_t)E, 1);
            int n_used = 0;
            for (int i = 0; i < n * k; i++)
                if (hid[i] >= 0 && hid[i] < E && !used[hid[i]])
                    used[hid[i]] = true, n_used++;
            free(used);
            const double gb = (double)n_used *
                              (double)(mat_bytes(&h1[0]) + mat_scale_bytes(&h1[0]) + mat_bytes(&h2[0]) +
                                       mat_scale_bytes(&h2[0]) + mat_bytes(&h3[0]) + mat_scale_bytes(&h3[0])) *
                              1e-9;
            moe_ctx mf = {c, &gf}, mp = {c, &gp};
            const double tf = gt_time_calls(fast, moe_call, &mf), tp = gt_time_calls(plain, moe_call, &mp);
            const double tflop = 2.0 * 3.0 * (double)D * (double)I * (double)n * k * 1e-12;
            gt_note("TIME moe %s n %3d (%3d experts used) fast %9.2f us %7.1f GB/s %6.1f TFLOP/s | plain %9.2f us "
                    "%7.1f GB/s | x%.2f",
                    c->fmt == WF_MXFP4 ? "MXFP4" : dt_name(c->dt), n, n_used, tf * 1e6, gb / tf, tflop / tf, tp * 1e6,
                    gb / tp, tp / tf);
        }
    }
    moe_gpu_free(&gc, E), moe_gpu_free(&gf, E), moe_gpu_free(&gp, E);
    for (int e = 0; e < E; e++)
        gt_mat_free(&h1[e]), gt_mat_free(&h2[e]), gt_mat_free(&h3[e]);
    free(h1), free(h2), free(h3), free(l), free(bias), free(x), free(hid), free(hw), free(yc), free(yf), free(yp);
    gt_step_free(&s);
}

static void run_moe(const moe_case *cs, size_t n, const char *test)
{
    tu_rng r = gt_rng(test);
    g_base = gt_failed();
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *fast = cuda_mode(DT_F8_E4M3, false, 0), *plain = cuda_mode(DT_F8_E4M3, true, 0);
    if (cpu && fast && plain)
        for (size_t i = 0; i < n; i++)
            check_moe(cpu, fast, plain, &r, &cs[i]);
    gt_close(cpu);
    gt_close(fast);
    gt_close(plain);
}

/* Every expert format, intermediate sizes that leave a partial 64-column
 * slice (or, on the wgmma tiles, a partial block of rows), rows that are
 * not 16-byte aligned (element-load path), skewed
 * routing (some experts with many pairs: several tiles), token counts
 * around the pair tiles. */
void test_tc_moe_formats(void)
{
    static const moe_case cs[] = {
        {WF_MXFP4, DT_MXFP4, 320, 96, 8, 2, 3, 10.0f, false, false, 3e-2},
        {WF_MXFP4, DT_MXFP4, 320, 96, 8, 2, 129, 1.0f, true, false, 3e-2},
        {WF_MXFP4, DT_MXFP4, 512, 256, 16, 4, 257, 10.0f, true, false, 3e-2},
        /* wgmma tiles whose down blocks (512 rows) run past D = 768 */
        {WF_MXFP4, DT_MXFP4, 768, 256, 16, 4, 257, 10.0f, false, false, 3e-2},
        {WF_FP8, DT_F8_E4M3, 200, 75, 5, 3, 37, 10.0f, true, false, 3e-2},
        {WF_FP8, DT_F8_E4M3, 256, 128, 8, 2, 17, 10.0f, false, false, 3e-2},
        {WF_PLAIN, DT_BF16, 136, 72, 16, 4, 1, 1.0f, false, false, 3e-2},
        {WF_PLAIN, DT_BF16, 136, 72, 16, 4, 37, 10.0f, true, false, 3e-2},
        {WF_PLAIN, DT_F16, 64, 40, 4, 2, 9, 10.0f, false, false, 3e-2},
        {WF_PLAIN, DT_F32, 68, 40, 4, 2, 17, 10.0f, true, false, 3e-2},
    };
    run_moe(cs, sizeof cs / sizeof *cs, "tc_moe_formats");
}

/* D = 4096, I = 2048, 256 MXFP4 experts, top 6, with timings; and 64
 * experts at 512 tokens: 48 pairs an expert, as in a 2048-token prefill
 * chunk over 256 (tiles of 64 on wgmma), for a fifth of the CPU's work. */
void test_tc_moe_real_dims(void)
{
    static const moe_case cs[] = {
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 256, 6, 1, 10.0f, false, true, 1e-2},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 256, 6, 37, 10.0f, true, true, 1e-2},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 256, 6, 256, 10.0f, false, true, 1e-2},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 64, 6, 512, 10.0f, false, true, 1e-2},
    };
    run_moe(cs, sizeof cs / sizeof *cs, "tc_moe_real_dims");
}

/* ---- batch invariance ---- */

/* Token `t` of a batch of n computed three ways on the fast path: in the
 * batch, alone, and at row 0 of a batch of another size m. */
static void invariance_linear(v4_backend *fast, tu_rng *r, wfmt_t fmt, dtype_t dt, int64_t R, int64_t C, int groups,
                              int n, int m)
{
    char what[160];
    snprintf(what, sizeof what, "invariance linear %s %lldx%lld groups %d, n %d / 1 / %d", fmt_name(fmt, dt),
             (long long)R, (long long)C, groups, n, m);
    v4_mat hm = gt_rand_mat(r, fmt, dt, R, C, 0.05f, "test.linear.weight");
    v4_mat mf = gt_upload_mat(fast, &hm);
    const size_t row_x = (size_t)groups * C;
    const int big = n > m ? n : m;
    float *x = gt_randn(r, (size_t)big * row_x, 1.0f);
    float *ya = gt_hostf((size_t)n * R), *yb = gt_hostf((size_t)R), *yc = gt_hostf((size_t)m * R);
    float *xa = gt_up(fast, x, (size_t)big * row_x * 4), *xb = gt_alloc(fast, row_x * 4), *xc = gt_alloc(fast, (size_t)m * row_x * 4);
    float *da = gt_nan(fast, (size_t)n * R), *db = gt_nan(fast, (size_t)R), *dc = gt_nan(fast, (size_t)m * R);
    float *xm = malloc((size_t)m * row_x * 4);
    if (mf.data && xa && xb && xc && da && db && dc) {
        for (int probe = 0; probe < 3 && !failed_here(); probe++) {
            const int t = probe == 0 ? 0 : probe == 1 ? n - 1 : (int)(tu_next(r) % (uint64_t)n);
            /* batch of m: token t at row 0, other rows random from x */
            memcpy(xm, x + (size_t)t * row_x, row_x * 4);
            for (int i = 1; i < m; i++)
                memcpy(xm + (size_t)i * row_x, x + (size_t)(tu_next(r) % (uint64_t)big) * row_x, row_x * 4);
            gt_copy_to(fast, xb, x + (size_t)t * row_x, row_x * 4);
            gt_copy_to(fast, xc, xm, (size_t)m * row_x * 4);
            fast->ops->linear(fast, da, xa, n, &mf, groups);
            fast->ops->linear(fast, db, xb, 1, &mf, groups);
            fast->ops->linear(fast, dc, xc, m, &mf, groups);
            gt_down(fast, ya, da, (size_t)n * R * 4);
            gt_down(fast, yb, db, (size_t)R * 4);
            gt_down(fast, yc, dc, (size_t)m * R * 4);
            if (!same_bits(ya + (size_t)t * R, yb, (size_t)R) || !same_bits(yc, yb, (size_t)R))
                gt_fail("%s: token %d differs between the batch, alone and the other batch", what, t);
        }
        if (!failed_here())
            gt_note("%s: bitwise equal", what);
    }
    gt_free(fast, xa), gt_free(fast, xb), gt_free(fast, xc), gt_free(fast, da), gt_free(fast, db), gt_free(fast, dc);
    fast->ops->free_mat(fast, &mf);
    gt_mat_free(&hm);
    free(x), free(ya), free(yb), free(yc), free(xm);
}

/* The same for MoE experts: token t's choices, alone and in the batch. */
static void invariance_moe(v4_backend *fast, tu_rng *r, const moe_case *c, int m)
{
    char what[160];
    snprintf(what, sizeof what, "invariance moe %s D %lld I %lld %d experts top %d, n %d / 1 / %d",
             c->fmt == WF_MXFP4 ? "MXFP4" : dt_name(c->dt), (long long)c->D, (long long)c->I, c->E, c->k, c->n, m);
    const int E = c->E, k = c->k, n = c->n;
    const int64_t D = c->D, I = c->I;
    v4_mat *h1 = calloc((size_t)E, sizeof *h1), *h2 = calloc((size_t)E, sizeof *h2), *h3 = calloc((size_t)E, sizeof *h3);
    for (int e = 0; e < E; e++) {
        h1[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, 1.5f / sqrtf((float)D), "ffn.experts.w1");
        h2[e] = gt_rand_mat(r, c->fmt, c->dt, D, I, 1.5f / sqrtf((float)I), "ffn.experts.w2");
        h3[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, 1.5f / sqrtf((float)D), "ffn.experts.w3");
    }
    const int big = n > m ? n : m;
    int start = 0, nn = big;
    gt_step s = gt_make_step(r, 1, NULL, &start, &nn, NULL, 1, 100);
    float *l = gt_randn(r, (size_t)big * E, 1.0f), *bias = gt_hostf((size_t)E);
    for (int e = 0; e < E; e++)
        bias[e] = e % 5 == 1 ? 2.0f : 0.0f;
    float *x = gt_randn(r, (size_t)big * D, 3.0f);
    moe_case cb = *c;
    cb.n = big;
    const size_t scr = (size_t)moe_scratch_floats(big, k, D, I, E);
    moe_gpu g;
    memset(&g, 0, sizeof g);
    v4_step ds;
    int32_t *ids = calloc((size_t)big * k, 4), *ids1 = calloc((size_t)big * k, 4);
    float *w = gt_hostf((size_t)big * k), *w1 = gt_hostf((size_t)big * k), *x1 = gt_hostf((size_t)big * D);
    float *ya = gt_hostf((size_t)big * D), *yb = gt_hostf((size_t)big * D), *yc = gt_hostf((size_t)big * D);
    if (moe_gpu_up(&g, fast, &cb, h1, h2, h3, l, bias, x, scr) && step_for(fast, &s, &ds)) {
        fast->ops->moe_route(fast, g.ids, g.w, g.l, g.bias, NULL, &ds, E, k, 1.5f);
        gt_down(fast, ids, g.ids, (size_t)big * k * 4);
        gt_down(fast, w, g.w, (size_t)big * k * 4);
        for (int probe = 0; probe < 3 && !failed_here(); probe++) {
            const int t = probe == 0 ? 0 : probe == 1 ? n - 1 : (int)(tu_next(r) % (uint64_t)n);
            /* batch of n: rows as routed */
            gt_copy_to(fast, g.x, x, (size_t)big * D * 4);
            gt_copy_to(fast, g.ids, ids, (size_t)big * k * 4);
            gt_copy_to(fast, g.w, w, (size_t)big * k * 4);
            fast->ops->moe_experts(fast, g.y, g.x, g.ids, g.w, n, k, g.w1, g.w2, g.w3, c->limit, g.scr);
            gt_down(fast, ya, g.y, (size_t)n * D * 4);
            /* alone */
            gt_copy_to(fast, g.x, x + (size_t)t * D, (size_t)D * 4);
            gt_copy_to(fast, g.ids, ids + (size_t)t * k, (size_t)k * 4);
            gt_copy_to(fast, g.w, w + (size_t)t * k, (size_t)k * 4);
            fast->ops->moe_experts(fast, g.y, g.x, g.ids, g.w, 1, k, g.w1, g.w2, g.w3, c->limit, g.scr);
            gt_down(fast, yb, g.y, (size_t)D * 4);
            /* row 0 of a batch of m with other rows (and their choices) drawn from the batch */
            memcpy(x1, x + (size_t)t * D, (size_t)D * 4);
            memcpy(ids1, ids + (size_t)t * k, (size_t)k * 4);
            memcpy(w1, w + (size_t)t * k, (size_t)k * 4);
            for (int i = 1; i < m; i++) {
                const int src = (int)(tu_next(r) % (uint64_t)big);
                memcpy(x1 + (size_t)i * D, x + (size_t)src * D, (size_t)D * 4);
                memcpy(ids1 + (size_t)i * k, ids + (size_t)src * k, (size_t)k * 4);
                memcpy(w1 + (size_t)i * k, w + (size_t)src * k, (size_t)k * 4);
            }
            gt_copy_to(fast, g.x, x1, (size_t)m * D * 4);
            gt_copy_to(fast, g.ids, ids1, (size_t)m * k * 4);
            gt_copy_to(fast, g.w, w1, (size_t)m * k * 4);
            fast->ops->moe_experts(fast, g.y, g.x, g.ids, g.w, m, k, g.w1, g.w2, g.w3, c->limit, g.scr);
            gt_down(fast, yc, g.y, (size_t)m * D * 4);
            if (!same_bits(ya + (size_t)t * D, yb, (size_t)D) || !same_bits(yc, yb, (size_t)D))
                gt_fail("%s: token %d differs between the batch, alone and the other batch", what, t);
        }
        if (!failed_here())
            gt_note("%s: bitwise equal", what);
    }
    moe_gpu_free(&g, E);
    for (int e = 0; e < E; e++)
        gt_mat_free(&h1[e]), gt_mat_free(&h2[e]), gt_mat_free(&h3[e]);
    free(h1), free(h2), free(h3), free(l), free(bias), free(x), free(ids), free(ids1), free(w), free(w1), free(x1);
    free(ya), free(yb), free(yc);
    gt_step_free(&s);
}

void test_tc_batch_invariance(void)
{
    tu_rng r = gt_rng("tc_batch_invariance");
    g_base = gt_failed();
    v4_backend *fast = cuda_mode(DT_F8_E4M3, false, 0);
    if (fast) {
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 300, 640, 1, 37, 9);
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 257, 17);
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 1024, 512, 4, 33, 5);
        invariance_linear(fast, &r, WF_MXFP4, DT_MXFP4, 300, 512, 1, 129, 3);
        invariance_linear(fast, &r, WF_PLAIN, DT_BF16, 129, 203, 1, 20, 7);
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 64, 20); /* token tiles of 64, 32 and 8 */
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 200, 129); /* tile 64, partial tiles */
        invariance_linear(fast, &r, WF_FP8, DT_F8_E4M3, 9300, 1024, 1, 65, 17); /* 64, the split kernel, 16 */
        invariance_linear(fast, &r, WF_PLAIN, DT_BF16, 18500, 512, 1, 65, 9); /* 64, 16 and 8 */
        invariance_linear(fast, &r, WF_MXFP4, DT_MXFP4, 6200, 512, 1, 129, 40); /* 64 (x in parts), split, 16 */
        static const moe_case mc[] = {
            {WF_MXFP4, DT_MXFP4, 512, 256, 16, 4, 37, 10.0f, true, false, 0},
            {WF_MXFP4, DT_MXFP4, 512, 256, 16, 4, 129, 10.0f, true, false, 0},
            {WF_FP8, DT_F8_E4M3, 200, 75, 5, 3, 17, 10.0f, true, false, 0},
        };
        invariance_moe(fast, &r, &mc[0], 5);
        invariance_moe(fast, &r, &mc[1], 17);
        invariance_moe(fast, &r, &mc[2], 2);
    }
    gt_close(fast);
}
