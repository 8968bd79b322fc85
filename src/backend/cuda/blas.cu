/* Linear layers through cuBLASLt, fp32 accumulation and output. The
 * tensor-core kernels of gemm_tc.cu dequantize each weight in registers
 * once per token tile of at most 64, which bounds them by their own
 * instruction rate at a few hundred tokens, and run a narrow weight in too
 * few blocks to fill the GPU at any size (bench/RESULTS.md); the library's
 * GEMMs do better in both cases (takes_library says which).
 *
 * Two kinds of product:
 *  - FP8, opt-in (V4_CUDA_BLAS_FP8=1; OCP e4m3fn weights of one group whose
 *    input count is a multiple of 128, in steps where it measured faster:
 *    takes_fp8): the weight as stored, its UE8M0 block scales as fp32
 *    (BLK128x128), the activations quantized per token and 128 inputs to
 *    e4m3fn with power-of-two scales (VEC128; fp8_quant.cu). One byte per
 *    weight is read and the tensor cores run at the FP8 rate (1.35-1.65x
 *    the bf16 product at 2048 tokens), but the activations keep 3 mantissa
 *    bits: with every projection on it the golden models' logits move 10x
 *    further from the reference (median 4.2e-2 against 4e-3, greedy 19/24
 *    and 13/16 against 23/24 and 16/16; bench/results/2026-12-06-h100-final/
 *    golden-fp8.txt), so it is off unless asked for.
 *  - bf16 (every other step the library takes): BF16 weights such as the
 *    head as stored; FP8 ones (fnuz, grouped like wo_a, other shapes, or
 *    small ones in smaller steps) get a bf16 copy, made once, on the first
 *    step that needs it (always an eager run: the forward pass runs each
 *    graph bucket once before capturing it), exact (an FP8 value times a
 *    power of two fits bf16), kept until the weight is freed; bf16
 *    activations.
 * Where memory for a copy, scales or activations cannot be had, or the
 * library is absent, or cuBLASLt offers no algorithm for a shape, the FP8
 * product falls back to the bf16 one and that to the tensor-core kernels;
 * nothing is allocated or planned during capture.
 *
 * A grouped projection (wo_a: G groups of per rows, each reading its own
 * slice of x) is one strided-batched product. In cuBLASLt's column-major
 * terms, per group: D (per x n, ld R) = A^T (A: C x per, ld C) . B (C x n,
 * ld G*C), i.e. y[t][g*per + o] = sum_k W[g*per + o][k] x[t][g*C + k].
 *
 * Not batch-invariant: cuBLASLt picks its kernel per shape, so a token's
 * output may differ in its last bits between steps of different sizes
 * (the tensor-core kernels are invariant: V4_CUDA_BLAS=0 restores that).
 *
 * Environment, read when a backend is created: V4_CUDA_BLAS=0 turns the
 * path off; V4_CUDA_BLAS_FP8=1 turns the FP8 products on; V4_CUDA_BLAS_MIN_TOKENS=N sets the step size from which every
 * FP8 weight takes the library, V4_CUDA_BLAS_FP8_MIN_TOKENS=N the one from
 * which every weight that can takes the FP8 product (defaults below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>

#include "backend/cuda/cu_device.cuh"
#include "backend/cuda/cublaslt.cuh"

/* Steps of at least this many tokens take the library for every FP8 weight. */
#define BLAS_MIN_TOKENS 64
/* Weights take the FP8 product from this many tokens, or when this big (takes_fp8). */
#define BLAS_FP8_MIN_TOKENS 1024
#define BLAS_FP8_MIN_WEIGHT ((int64_t)16 << 20)
#define BLAS_WS_BYTES ((size_t)32 << 20)
#define BLAS_MAX_PLANS 256

int cu_lt_load(lt_api *lt, char *which, size_t n)
{
    const char *env = getenv("V4_CUBLASLT");
    const char *cands[] = {env, "libcublasLt.so.13", "libcublasLt.so", "/usr/local/cuda/lib64/libcublasLt.so.13",
                           "/usr/local/cuda/lib64/libcublasLt.so"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands && !lt->lib; i++)
        if (cands[i] && (lt->lib = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL)))
            snprintf(which, n, "%s", cands[i]);
    if (!lt->lib)
        return -1;
#define SYM(field, name) (lt->field = (decltype(lt->field))dlsym(lt->lib, name))
    if (!SYM(create, "cublasLtCreate") || !SYM(destroy, "cublasLtDestroy") ||
        !SYM(desc_create, "cublasLtMatmulDescCreate") || !SYM(desc_destroy, "cublasLtMatmulDescDestroy") ||
        !SYM(desc_set, "cublasLtMatmulDescSetAttribute") || !SYM(layout_create, "cublasLtMatrixLayoutCreate") ||
        !SYM(layout_destroy, "cublasLtMatrixLayoutDestroy") || !SYM(layout_set, "cublasLtMatrixLayoutSetAttribute") ||
        !SYM(pref_create, "cublasLtMatmulPreferenceCreate") || !SYM(pref_destroy, "cublasLtMatmulPreferenceDestroy") ||
        !SYM(pref_set, "cublasLtMatmulPreferenceSetAttribute") || !SYM(heur, "cublasLtMatmulAlgoGetHeuristic") ||
        !SYM(matmul, "cublasLtMatmul"))
        return -1;
#undef SYM
    return 0;
}

/* What the path keeps for one weight: its bf16 copy and its block scales
 * as fp32 (each NULL until made, and NULL for good where making it failed:
 * the *_tried flags). */
typedef struct blas_weight {
    const void *src;
    uint16_t *bf16;
    float *scales;
    bool bf16_tried, scales_tried;
} blas_weight;

/* A planned product: the shape, kind and alignments it was planned for,
 * the descriptors and the algorithm (ok false: cuBLASLt offered none). */
typedef struct blas_plan {
    int n, groups, align_w, align_y;
    int64_t rows, cols;
    bool fp8, ok;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} blas_plan;

struct cu_blas {
    lt_api lt;
    char lib[160];
    cublasLtHandle_t h;
    void *ws;
    int min_tokens, fp8_min_tokens;
    bool fp8;
    uint16_t *xb; /* the step's activations in bf16 ... */
    size_t xb_bytes;
    uint8_t *xq; /* ... or as e4m3fn codes, with their scales */
    size_t xq_bytes;
    float *xs;
    size_t xs_bytes;
    float *yp; /* the output of FP8 products padded to whole groups of 4 tokens */
    size_t yp_bytes;
    int fp8_plans, fp8_refused; /* FP8 planning so far, for describe */
    int fp8_status;             /* the last refusal (plan_make's code) */
    blas_weight *weights;
    size_t n_weights, cap_weights;
    blas_plan plans[BLAS_MAX_PLANS];
    int n_plans, next_evict;
};

/* "0" or "1" from the environment into *on (unset: unchanged, the default). */
static int env_switch(const char *name, bool *on, v4_err *err)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        return v4_errf(err, "%s='%s': use 0 (off) or 1 (on; the default is %s)", name, v, *on ? "on" : "off");
    *on = strcmp(v, "1") == 0;
    return 0;
}

extern "C" int cu_blas_init(cu_backend *cb, v4_err *err)
{
    bool on = true, fp8 = false;
    int min_tokens = BLAS_MIN_TOKENS, fp8_min_tokens = BLAS_FP8_MIN_TOKENS;
    if (env_switch("V4_CUDA_BLAS", &on, err) || env_switch("V4_CUDA_BLAS_FP8", &fp8, err) ||
        cu_env_count("V4_CUDA_BLAS_MIN_TOKENS", 1, 1 << 30, &min_tokens, err) ||
        cu_env_count("V4_CUDA_BLAS_FP8_MIN_TOKENS", 1, 1 << 30, &fp8_min_tokens, err))
        return -1;
    if (cb->plain || !on)
        return 0;
    cu_blas *b = (cu_blas *)calloc(1, sizeof *b);
    if (!b)
        return v4_errf(err, "out of host memory");
    b->min_tokens = min_tokens;
    b->fp8 = fp8;
    b->fp8_min_tokens = fp8_min_tokens;
    if (cu_lt_load(&b->lt, b->lib, sizeof b->lib) || b->lt.create(&b->h) != CUBLAS_STATUS_SUCCESS) {
        free(b); /* no library: the tensor-core kernels do every step */
        return 0;
    }
    if (cudaMalloc(&b->ws, BLAS_WS_BYTES) != cudaSuccess) {
        cudaGetLastError();
        b->lt.destroy(b->h);
        free(b);
        return 0;
    }
    cb->blas = b;
    return 0;
}

static void plan_free(cu_blas *b, blas_plan *p)
{
    if (p->ld)
        b->lt.layout_destroy(p->ld);
    if (p->lb)
        b->lt.layout_destroy(p->lb);
    if (p->la)
        b->lt.layout_destroy(p->la);
    if (p->desc)
        b->lt.desc_destroy(p->desc);
    memset(p, 0, sizeof *p);
}

extern "C" void cu_blas_destroy(cu_backend *cb)
{
    cu_blas *b = cb->blas;
    if (!b)
        return;
    for (int i = 0; i < b->n_plans; i++)
        plan_free(b, &b->plans[i]);
    for (size_t i = 0; i < b->n_weights; i++) {
        cudaFree(b->weights[i].bf16);
        cudaFree(b->weights[i].scales);
    }
    free(b->weights);
    cudaFree(b->xb);
    cudaFree(b->xq);
    cudaFree(b->xs);
    cudaFree(b->yp);
    cudaFree(b->ws);
    b->lt.destroy(b->h);
    free(b);
    cb->blas = NULL;
}

extern "C" void cu_blas_forget(cu_backend *cb, const void *weight)
{
    cu_blas *b = cb->blas;
    if (!b)
        return;
    for (size_t i = 0; i < b->n_weights; i++)
        if (b->weights[i].src == weight) {
            cu_retire(cb, b->weights[i].bf16); /* graphs may still read them */
            cu_retire(cb, b->weights[i].scales);
            b->weights[i] = b->weights[--b->n_weights];
            return;
        }
}

extern "C" bool cu_blas_describe(const cu_backend *cb, char *buf, size_t n)
{
    const cu_blas *b = cb->blas;
    if (!b) {
        snprintf(buf, n, "tensor-core kernels at every step size (cuBLASLt path off or absent)");
        return false;
    }
    char fp8[256] = "bf16 products; V4_CUDA_BLAS_FP8=1 for FP8 ones";
    if (b->fp8)
        snprintf(fp8, sizeof fp8,
                 "block-scaled FP8 products for e4m3fn weights of 128-multiple inputs, bf16 for the rest; "
                 "FP8 shapes planned %d, refused %d (last: stage %d, status %d)", b->fp8_plans, b->fp8_refused,
                 b->fp8_status / 100, b->fp8_status % 100);
    snprintf(buf, n,
             "cuBLASLt (%s) GEMMs for BF16 weights, and FP8 ones from %d tokens a step or when narrow (%s); "
             "tensor-core kernels otherwise",
             b->lib, b->min_tokens, fp8);
    return true;
}

/* The entry of w, added when new (never during capture); NULL when there
 * is none and none can be made. */
static blas_weight *weight_entry(cu_backend *cb, cu_blas *b, const v4_mat *w)
{
    for (size_t i = 0; i < b->n_weights; i++)
        if (b->weights[i].src == w->data)
            return &b->weights[i];
    if (cb->capturing)
        return NULL;
    if (b->n_weights == b->cap_weights) {
        const size_t cap = b->cap_weights ? 2 * b->cap_weights : 64;
        blas_weight *c = (blas_weight *)realloc(b->weights, cap * sizeof *c);
        if (!c)
            return NULL;
        b->weights = c, b->cap_weights = cap;
    }
    blas_weight *e = &b->weights[b->n_weights++];
    memset(e, 0, sizeof *e);
    e->src = w->data;
    return e;
}

/* dst = w as bf16 (round to nearest even; exact for FP8 with UE8M0 scales). */
template <int FMT> __global__ void weight_to_bf16_kernel(uint16_t *__restrict__ dst, cu_wdesc w)
{
    const int64_t total = w.rows * w.cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(wload1<FMT>(w, i / w.cols, i % w.cols)));
}

/* The bf16 form of w, or NULL when the step must take the kernels. */
static const uint16_t *weight_bf16(cu_backend *cb, cu_blas *b, const v4_mat *w, int fmt)
{
    if (fmt == CW_BF16)
        return (const uint16_t *)w->data;
    blas_weight *e = weight_entry(cb, b, w);
    if (!e || e->bf16 || e->bf16_tried || cb->capturing)
        return e ? e->bf16 : NULL;
    e->bf16_tried = true;
    if (cudaMalloc(&e->bf16, (size_t)w->rows * w->cols * 2) != cudaSuccess) {
        cudaGetLastError(); /* out of memory: this weight keeps the kernels */
        e->bf16 = NULL;
        return NULL;
    }
    const cu_wdesc d = cu_desc(w);
    if (fmt == CW_FP8)
        weight_to_bf16_kernel<CW_FP8><<<cu_grid(w->rows * w->cols, 256), 256, 0, cb->stream>>>(e->bf16, d);
    else
        weight_to_bf16_kernel<CW_FP8FNUZ><<<cu_grid(w->rows * w->cols, 256), 256, 0, cb->stream>>>(e->bf16, d);
    cu_launched(cb, "weight_to_bf16");
    return e->bf16;
}

/* Columns of the fp32 block-scale table of a weight with `cols` inputs. */
static int64_t scale_ld(int64_t cols) { return ((cols + 127) / 128 + 3) / 4 * 4; }

/* The fp32 block scales of FP8 weight w, or NULL (then the bf16 product). */
static const float *weight_scales(cu_backend *cb, cu_blas *b, const v4_mat *w)
{
    blas_weight *e = weight_entry(cb, b, w);
    if (!e || e->scales || e->scales_tried || cb->capturing)
        return e ? e->scales : NULL;
    e->scales_tried = true;
    const int64_t ldk = scale_ld(w->cols);
    if (cudaMalloc(&e->scales, (size_t)((w->rows + 127) / 128 * ldk) * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        e->scales = NULL;
        return NULL;
    }
    cu_fp8_block_scales(cb, e->scales, w->scale, w->rows, w->cols, ldk);
    return e->scales;
}

/* Largest power of two (up to 256) dividing the address and every offset. */
static int alignment(const void *p, int64_t stride_bytes)
{
    const uint64_t v = (uint64_t)(uintptr_t)p | (uint64_t)stride_bytes | 256u;
    return (int)(v & (~v + 1));
}

/* Plans p (shape and kind set; an FP8 plan with the scale pointers
 * of the call that asks for it: cuBLASLt checks block scaling against
 * them). Returns 0, or 100 * stage + the cuBLAS status of the first call
 * that failed (stages: 1 descriptors, 2 scale modes and pointers, 3 batch,
 * 4 preferences, 5 the heuristic; 5 with CUBLAS_STATUS_NOT_SUPPORTED: no
 * algorithm), which describe reports. */
static int plan_make(cu_blas *b, blas_plan *p, const void *scale_w, const void *scale_x)
{
    const lt_api *lt = &b->lt;
    const int n = p->n, groups = p->groups;
    const int64_t R = p->rows, C = p->cols, per = R / groups;
    const cudaDataType_t in = p->fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t batch = groups;
    const int32_t mode_w = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, mode_x = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const int64_t sa = per * C, sb = C, sd = per;
    const uint32_t aw = (uint32_t)p->align_w, ay = (uint32_t)p->align_y, ax = 256;
    const size_t ws = BLAS_WS_BYTES;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0, fail = 0;
#define TRY(stage, call)                                                                                             \
    do {                                                                                                               \
        const cublasStatus_t st_ = (call);                                                                             \
        if (!fail && st_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            fail = 100 * (stage) + (int)st_;                                                                           \
    } while (0)
    TRY(1, lt->desc_create(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    if (!fail) {
        TRY(1, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        TRY(1, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        TRY(1, lt->layout_create(&p->la, in, (uint64_t)C, (uint64_t)per, C));
        TRY(1, lt->layout_create(&p->lb, in, (uint64_t)C, (uint64_t)n, groups * C));
        TRY(1, lt->layout_create(&p->ld, CUDA_R_32F, (uint64_t)per, (uint64_t)n, R));
    }
    if (!fail && p->fp8) {
        TRY(2, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode_w, sizeof mode_w));
        TRY(2, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode_x, sizeof mode_x));
        TRY(2, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w, sizeof scale_w));
        TRY(2, lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_x, sizeof scale_x));
    }
    if (!fail && groups > 1) {
        TRY(3, lt->layout_set(p->la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
        TRY(3, lt->layout_set(p->la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
        TRY(3, lt->layout_set(p->lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
        TRY(3, lt->layout_set(p->lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb));
        TRY(3, lt->layout_set(p->ld, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
        TRY(3, lt->layout_set(p->ld, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sd, sizeof sd));
    }
    if (!fail) {
        TRY(4, lt->pref_create(&pref));
        if (!fail) {
            TRY(4, lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
            TRY(4, lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw));
            TRY(4, lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax));
            TRY(4, lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof ay));
            TRY(4, lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof ay));
        }
    }
    if (!fail) {
        TRY(5, lt->heur(b->h, p->desc, p->la, p->lb, p->ld, p->ld, pref, 1, &res, &found));
        if (!fail && found < 1)
            fail = 500 + (int)CUBLAS_STATUS_NOT_SUPPORTED;
    }
#undef TRY
    if (pref)
        lt->pref_destroy(pref);
    if (!fail)
        p->algo = res.algo;
    return fail;
}

/* The plan of this shape and kind, made when new (never during capture);
 * NULL when the step must take another path. Full table: the oldest plan
 * goes (a captured graph keeps its own copy of what it launched). */
static blas_plan *plan_for(cu_backend *cb, cu_blas *b, bool fp8, int n, int64_t R, int64_t C, int groups, int align_w,
                           int align_y, const void *scale_w, const void *scale_x)
{
    for (int i = 0; i < b->n_plans; i++) {
        blas_plan *p = &b->plans[i];
        if (p->fp8 == fp8 && p->n == n && p->rows == R && p->cols == C && p->groups == groups &&
            p->align_w == align_w && p->align_y == align_y)
            return p->ok ? p : NULL;
    }
    if (cb->capturing)
        return NULL;
    blas_plan *p;
    if (b->n_plans < BLAS_MAX_PLANS) {
        p = &b->plans[b->n_plans++];
    } else {
        p = &b->plans[b->next_evict];
        b->next_evict = (b->next_evict + 1) % BLAS_MAX_PLANS;
        plan_free(b, p);
    }
    memset(p, 0, sizeof *p);
    p->fp8 = fp8, p->n = n, p->rows = R, p->cols = C, p->groups = groups, p->align_w = align_w, p->align_y = align_y;
    const int fail = plan_make(b, p, scale_w, scale_x);
    p->ok = !fail;
    if (fp8) {
        b->fp8_plans += p->ok, b->fp8_refused += !p->ok;
        if (!p->ok)
            b->fp8_status = fail;
    }
    return p->ok ? p : NULL;
}

/* Whether the library computes this layer (see the top; H100 timings of
 * gpu-tests blas_linear_real_dims, bench/RESULTS.md): BF16 weights at every
 * step size (the head at one token: 387 us against 441, a 4 MB compressor
 * projection 8.6 us against 20); FP8 weights from min_tokens, and below it
 * those whose blocks of 128 rows leave multiprocessors idle in the kernels
 * (wq_a, 4 MB: 8.9 us against 20; wo_b, 32 MB in 32 blocks: 29 against 46),
 * while wide ones stay on the kernels, which read half the bytes (wq_b,
 * 256 blocks: 20 us against 28). */
static bool takes_library(const cu_backend *cb, const cu_blas *b, int n, const v4_mat *w, int fmt, int groups)
{
    if (fmt == CW_BF16)
        return true;
    if (fmt != CW_FP8 && fmt != CW_FP8FNUZ)
        return false;
    const int64_t row_blocks = groups * ((w->rows / groups + 127) / 128);
    return n >= b->min_tokens || row_blocks < cb->n_sm;
}

/* Whether w takes the FP8 product: e4m3fn (what the tensor cores read),
 * one group, whole 128-input blocks, 16-byte aligned rows of fp32 output
 * (and, checked by the caller, of fp32 input: the quantizer reads float4);
 * and where it measured faster than the bf16 product (H100, gpu-tests
 * fp8_linear_real_dims, bench/RESULTS.md): weights of 16M entries and more
 * at every size (wq_b at 64 tokens: 21 us against 33), smaller ones from
 * fp8_min_tokens (wq_a: 16 us against 11 at 64 tokens, 34 against 52
 * at 2048; wkv and shared w1 slower at 256, faster at 2048; 1024 is
 * between the measured sizes). */
static bool takes_fp8(const cu_blas *b, const v4_mat *w, int fmt, int groups, int n)
{
    return b->fp8 && fmt == CW_FP8 && groups == 1 && w->cols % 128 == 0 && w->rows % 4 == 0 &&
           alignment(w->data, w->cols) >= 16 && (n >= b->fp8_min_tokens || w->rows * w->cols >= BLAS_FP8_MIN_WEIGHT);
}

static void run_plan(cu_backend *cb, cu_blas *b, const blas_plan *p, const void *w, const void *x, float *y,
                     const v4_mat *m, int n)
{
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t s =
        b->lt.matmul(b->h, p->desc, &one, w, p->la, x, p->lb, &zero, y, p->ld, y, p->ld, &p->algo, b->ws,
                     BLAS_WS_BYTES, cb->stream);
    if (s != CUBLAS_STATUS_SUCCESS)
        cu_fail(cb, "linear '%s' (%d tokens): cublasLtMatmul failed with status %d", m->name ? m->name : "?", n, (int)s);
}

/* The FP8 product; false (nothing done) where it cannot run now.
 * cuBLASLt's block-scaled products take token counts in multiples of 4
 * (it offers no algorithm for 1, 7, 70 or 129 tokens on an H100), so
 * other counts are padded with zero tokens into a scratch output, of which
 * the step's rows are copied out. */
static bool fp8_linear(cu_backend *cb, cu_blas *b, float *y, const float *x, int n, const v4_mat *w)
{
    const int64_t R = w->rows, C = w->cols;
    const int m = (n + 3) / 4 * 4;
    const float *ws = weight_scales(cb, b, w);
    if (!ws || !cu_grow(cb, (void **)&b->xq, &b->xq_bytes, (size_t)m * C, NULL) ||
        !cu_grow(cb, (void **)&b->xs, &b->xs_bytes, (size_t)(C / 128) * m * sizeof(float), NULL) ||
        (m != n && !cu_grow(cb, (void **)&b->yp, &b->yp_bytes, (size_t)m * R * sizeof(float), NULL)))
        return false;
    float *out = m != n ? b->yp : y;
    blas_plan *p = plan_for(cb, b, true, m, R, C, 1, alignment(w->data, C), alignment(out, R * 4), ws, b->xs);
    if (!p)
        return false;
    const void *wsp = ws, *xsp = b->xs;
    if (b->lt.desc_set(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &wsp, sizeof wsp) != CUBLAS_STATUS_SUCCESS ||
        b->lt.desc_set(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xsp, sizeof xsp) != CUBLAS_STATUS_SUCCESS)
        return false;
    cu_fp8_quant_act(cb, b->xq, b->xs, x, n, m, C);
    run_plan(cb, b, p, w->data, b->xq, out, w, m);
    if (m != n)
        cu_check(cb, cudaMemcpyAsync(y, out, (size_t)n * R * sizeof(float), cudaMemcpyDeviceToDevice, cb->stream),
                 "fp8 linear: copy out");
    return true;
}

extern "C" bool cu_blas_linear(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups)
{
    cu_blas *b = cb->blas;
    if (!b || !takes_library(cb, b, n, w, fmt, groups))
        return false;
    if (takes_fp8(b, w, fmt, groups, n) && alignment(x, w->cols * 4) >= 16 && fp8_linear(cb, b, y, x, n, w))
        return true;
    const int64_t R = w->rows, C = w->cols, per = R / groups;
    const size_t need = (size_t)n * groups * C;
    if (!cu_grow(cb, (void **)&b->xb, &b->xb_bytes, need * 2, NULL))
        return false;
    const uint16_t *wb = weight_bf16(cb, b, w, fmt);
    if (!wb)
        return false;
    const blas_plan *p =
        plan_for(cb, b, false, n, R, C, groups, alignment(wb, per * C * 2), alignment(y, per * 4), NULL, NULL);
    if (!p)
        return false;
    cu_to_bf16(cb, b->xb, x, (int64_t)need);
    run_plan(cb, b, p, wb, b->xb, y, w, n);
    return true;
}
