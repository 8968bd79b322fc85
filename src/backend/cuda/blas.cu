/* Linear layers through cuBLASLt (bf16 operands, fp32 accumulation and
 * output). The tensor-core kernels of gemm_tc.cu dequantize each weight in
 * registers once per token tile of at most 64, which bounds them by their
 * own instruction rate at a few hundred tokens, and run a narrow weight in
 * too few blocks to fill the GPU at any size (bench/RESULTS.md); the
 * library's GEMMs do better in both cases (takes_library says which).
 *
 * Weights: BF16 ones (the head) are used as stored. FP8 ones (block-scaled
 * projections) get a bf16 copy, made once, on the first step that needs it
 * (always an eager run: the forward pass runs each graph bucket once before
 * capturing it), exact (an FP8 value times a power of two fits bf16), and
 * kept until the weight is freed: 2 bytes per weight beside the stored one,
 * the "bf16 projection weights cached across decode steps" of issue 7.
 * Where that memory cannot be had, or the library is absent, or cuBLASLt
 * offers no algorithm for a shape, the step takes the tensor-core kernels;
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
 * path off; V4_CUDA_BLAS_MIN_TOKENS=N sets the step size from which every
 * FP8 weight takes it (default below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>

#include "backend/cuda/cu_device.cuh"
#include "backend/cuda/cublaslt.cuh"

/* Steps of at least this many tokens take the library for every FP8 weight. */
#define BLAS_MIN_TOKENS 64
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

/* The bf16 copy of an FP8 weight (bf16 NULL: it could not be made). */
typedef struct blas_copy {
    const void *src;
    uint16_t *bf16;
} blas_copy;

/* A planned product: the shape and alignments it was planned for, the
 * descriptors and the algorithm (ok false: cuBLASLt offered none). */
typedef struct blas_plan {
    int n, groups, align_w, align_y;
    int64_t rows, cols;
    bool ok;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} blas_plan;

struct cu_blas {
    lt_api lt;
    char lib[160];
    cublasLtHandle_t h;
    void *ws;
    int min_tokens;
    uint16_t *xb; /* the step's activations in bf16 */
    size_t xb_elems;
    blas_copy *copies;
    size_t n_copies, cap_copies;
    blas_plan plans[BLAS_MAX_PLANS];
    int n_plans, next_evict;
};

extern "C" int cu_blas_init(cu_backend *cb, v4_err *err)
{
    const char *on = getenv("V4_CUDA_BLAS"), *min = getenv("V4_CUDA_BLAS_MIN_TOKENS");
    if (on && *on && strcmp(on, "0") != 0 && strcmp(on, "1") != 0)
        return v4_errf(err, "V4_CUDA_BLAS='%s': use 0 (off) or 1 (on, the default)", on);
    int min_tokens = BLAS_MIN_TOKENS;
    if (min && *min) {
        char *end;
        const long v = strtol(min, &end, 10);
        if (*end || v < 1 || v > 1 << 30)
            return v4_errf(err, "V4_CUDA_BLAS_MIN_TOKENS='%s': use a positive number of tokens", min);
        min_tokens = (int)v;
    }
    if (cb->plain || (on && strcmp(on, "0") == 0))
        return 0;
    cu_blas *b = (cu_blas *)calloc(1, sizeof *b);
    if (!b)
        return v4_errf(err, "out of host memory");
    b->min_tokens = min_tokens;
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
    for (size_t i = 0; i < b->n_copies; i++)
        cudaFree(b->copies[i].bf16);
    free(b->copies);
    cudaFree(b->xb);
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
    for (size_t i = 0; i < b->n_copies; i++)
        if (b->copies[i].src == weight) {
            cu_retire(cb, b->copies[i].bf16); /* graphs may still read it */
            b->copies[i] = b->copies[--b->n_copies];
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
    snprintf(buf, n,
             "cuBLASLt (%s) bf16 GEMMs for BF16 weights, and FP8 ones from %d tokens a step or when narrow; "
             "tensor-core kernels otherwise",
             b->lib, b->min_tokens);
    return true;
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
    for (size_t i = 0; i < b->n_copies; i++)
        if (b->copies[i].src == w->data)
            return b->copies[i].bf16;
    if (cb->capturing)
        return NULL;
    if (b->n_copies == b->cap_copies) {
        const size_t cap = b->cap_copies ? 2 * b->cap_copies : 64;
        blas_copy *c = (blas_copy *)realloc(b->copies, cap * sizeof *c);
        if (!c)
            return NULL;
        b->copies = c, b->cap_copies = cap;
    }
    blas_copy *c = &b->copies[b->n_copies++];
    c->src = w->data;
    c->bf16 = NULL;
    if (cudaMalloc(&c->bf16, (size_t)w->rows * w->cols * 2) != cudaSuccess) {
        cudaGetLastError(); /* out of memory: this weight keeps the kernels */
        c->bf16 = NULL;
        return NULL;
    }
    const cu_wdesc d = cu_desc(w);
    if (fmt == CW_FP8)
        weight_to_bf16_kernel<CW_FP8><<<cu_grid(w->rows * w->cols, 256), 256, 0, cb->stream>>>(c->bf16, d);
    else
        weight_to_bf16_kernel<CW_FP8FNUZ><<<cu_grid(w->rows * w->cols, 256), 256, 0, cb->stream>>>(c->bf16, d);
    cu_launched(cb, "weight_to_bf16");
    return c->bf16;
}

/* Largest power of two (up to 256) dividing the address and every offset. */
static int alignment(const void *p, int64_t stride_bytes)
{
    const uint64_t v = (uint64_t)(uintptr_t)p | (uint64_t)stride_bytes | 256u;
    return (int)(v & (~v + 1));
}

static bool plan_make(cu_blas *b, blas_plan *p, int n, int64_t R, int64_t C, int groups)
{
    const lt_api *lt = &b->lt;
    const int64_t per = R / groups;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t batch = groups;
    const int64_t sa = per * C, sb = C, sd = per;
    const uint32_t aw = (uint32_t)p->align_w, ay = (uint32_t)p->align_y, ax = 256;
    const size_t ws = BLAS_WS_BYTES;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    bool ok = lt->desc_create(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == CUBLAS_STATUS_SUCCESS &&
              lt->desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == CUBLAS_STATUS_SUCCESS &&
              lt->layout_create(&p->la, CUDA_R_16BF, (uint64_t)C, (uint64_t)per, C) == CUBLAS_STATUS_SUCCESS &&
              lt->layout_create(&p->lb, CUDA_R_16BF, (uint64_t)C, (uint64_t)n, groups * C) == CUBLAS_STATUS_SUCCESS &&
              lt->layout_create(&p->ld, CUDA_R_32F, (uint64_t)per, (uint64_t)n, R) == CUBLAS_STATUS_SUCCESS;
    if (ok && groups > 1)
        ok = lt->layout_set(p->la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch) == CUBLAS_STATUS_SUCCESS &&
             lt->layout_set(p->la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa) == CUBLAS_STATUS_SUCCESS &&
             lt->layout_set(p->lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch) == CUBLAS_STATUS_SUCCESS &&
             lt->layout_set(p->lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb) == CUBLAS_STATUS_SUCCESS &&
             lt->layout_set(p->ld, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch) == CUBLAS_STATUS_SUCCESS &&
             lt->layout_set(p->ld, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sd, sizeof sd) == CUBLAS_STATUS_SUCCESS;
    ok = ok && lt->pref_create(&pref) == CUBLAS_STATUS_SUCCESS &&
         lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) == CUBLAS_STATUS_SUCCESS &&
         lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw) == CUBLAS_STATUS_SUCCESS &&
         lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax) == CUBLAS_STATUS_SUCCESS &&
         lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof ay) == CUBLAS_STATUS_SUCCESS &&
         lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof ay) == CUBLAS_STATUS_SUCCESS &&
         lt->heur(b->h, p->desc, p->la, p->lb, p->ld, p->ld, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS &&
         found > 0;
    if (pref)
        lt->pref_destroy(pref);
    if (ok)
        p->algo = res.algo;
    return ok;
}

/* The plan of this shape, made when new (never during capture); NULL when
 * the step must take the kernels. Full table: the oldest plan goes (a
 * captured graph keeps its own copy of what it launched). */
static const blas_plan *plan_for(cu_backend *cb, cu_blas *b, int n, int64_t R, int64_t C, int groups, int align_w,
                                 int align_y)
{
    for (int i = 0; i < b->n_plans; i++) {
        const blas_plan *p = &b->plans[i];
        if (p->n == n && p->rows == R && p->cols == C && p->groups == groups && p->align_w == align_w &&
            p->align_y == align_y)
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
    p->n = n, p->rows = R, p->cols = C, p->groups = groups, p->align_w = align_w, p->align_y = align_y;
    p->ok = plan_make(b, p, n, R, C, groups);
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

extern "C" bool cu_blas_linear(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups)
{
    cu_blas *b = cb->blas;
    if (!b || !takes_library(cb, b, n, w, fmt, groups))
        return false;
    const int64_t R = w->rows, C = w->cols, per = R / groups;
    const size_t need = (size_t)n * groups * C;
    if (need > b->xb_elems) {
        if (cb->capturing)
            return false;
        cu_retire(cb, b->xb);
        b->xb = NULL, b->xb_elems = 0;
        if (cudaMalloc(&b->xb, need * 2) != cudaSuccess) {
            cudaGetLastError();
            b->xb = NULL;
            return false;
        }
        b->xb_elems = need;
    }
    const uint16_t *wb = weight_bf16(cb, b, w, fmt);
    if (!wb)
        return false;
    const blas_plan *p = plan_for(cb, b, n, R, C, groups, alignment(wb, per * C * 2), alignment(y, per * 4));
    if (!p)
        return false;
    cu_to_bf16(cb, b->xb, x, (int64_t)need);
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t s = b->lt.matmul(b->h, p->desc, &one, wb, p->la, b->xb, p->lb, &zero, y, p->ld, y, p->ld,
                                          &p->algo, b->ws, BLAS_WS_BYTES, cb->stream);
    if (s != CUBLAS_STATUS_SUCCESS)
        cu_fail(cb, "linear '%s' (%d tokens): cublasLtMatmul failed with status %d", w->name ? w->name : "?", n,
                (int)s);
    return true;
}
