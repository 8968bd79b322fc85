/* Timing marks (CUDA events) and the device's measured ceilings: copy
 * bandwidth with cudaMemcpyAsync, bf16 and FP8 matrix-product rates with
 * cuBLASLt (cublaslt.cuh: NaN where the library is absent). HIP builds have
 * no GEMM ceiling yet (hipBLASLt is not bound): NaN, said in `how`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda/cu_internal.h"

#include "backend/cuda/cublaslt.cuh"

extern "C" void cu_timer_mark(v4_backend *be, int idx)
{
    cu_backend *cb = cu_of(be);
    if (idx < 0 || idx >= V4_MAX_MARKS || cb->capturing)
        return;
    if (!cb->marks) {
        cb->marks = (cudaEvent_t *)calloc(V4_MAX_MARKS, sizeof(cudaEvent_t));
        if (!cb->marks)
            return;
    }
    if (!cb->marks[idx] && !cu_check(cb, cudaEventCreate(&cb->marks[idx]), "cudaEventCreate"))
        return;
    cu_check(cb, cudaEventRecord(cb->marks[idx], cb->stream), "cudaEventRecord");
}

extern "C" double cu_timer_elapsed(v4_backend *be, int a, int b)
{
    cu_backend *cb = cu_of(be);
    float ms = NAN;
    if (cb->marks && cb->marks[a] && cb->marks[b])
        cudaEventElapsedTime(&ms, cb->marks[a], cb->marks[b]);
    return ms;
}

extern "C" void cu_timer_free(cu_backend *cb)
{
    if (!cb->marks)
        return;
    for (int i = 0; i < V4_MAX_MARKS; i++)
        if (cb->marks[i])
            cudaEventDestroy(cb->marks[i]);
    free(cb->marks);
    cb->marks = NULL;
}

/* ---- ceilings ---- */

/* Finite random-looking bytes: FP8 codes without the NaN codes, or bf16
 * values in about [-2, 2]; never zeros (they run faster than real data). */
__global__ void fill_kernel(uint8_t *p, size_t n, int bf16)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)(i * 2654435761u) ^ (uint32_t)(i >> 13);
        h ^= h >> 15;
        h *= 2246822519u;
        if (bf16)
            p[i] = (i & 1) ? (uint8_t)(0x3E + (h & 1) + ((h >> 8) & 0x80)) : (uint8_t)(h >> 3);
        else
            p[i] = (uint8_t)(((h >> 4) & 0x77) | ((h >> 9) & 0x80)) | 0x08; /* exponent bits never all ones */
    }
}

#if GPU_HAS_CUBLASLT
/* TFLOP/s of an N^3 product D = A^T B with A, B of `in` type, D bf16. */
static double lt_rate(cu_backend *cb, lt_api *lt, cudaDataType_t in, int N, void *A, void *B, void *D, void *ws,
                      size_t ws_bytes)
{
    cublasLtHandle_t h;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    double rate = NAN;
    if (lt->create(&h) != CUBLAS_STATUS_SUCCESS)
        return NAN;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (lt->desc_create(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
        lt->desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == CUBLAS_STATUS_SUCCESS &&
        lt->desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == CUBLAS_STATUS_SUCCESS &&
        lt->layout_create(&la, in, N, N, N) == CUBLAS_STATUS_SUCCESS &&
        lt->layout_create(&lb, in, N, N, N) == CUBLAS_STATUS_SUCCESS &&
        lt->layout_create(&ld, CUDA_R_16BF, N, N, N) == CUBLAS_STATUS_SUCCESS &&
        lt->pref_create(&pref) == CUBLAS_STATUS_SUCCESS &&
        lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes) ==
            CUBLAS_STATUS_SUCCESS &&
        lt->heur(h, desc, la, lb, ld, ld, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS && found > 0) {
        const float alpha = 1.0f, beta = 0.0f;
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        bool ok = true;
        for (int i = 0; i < 3 && ok; i++) /* warm-up */
            ok = lt->matmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res.algo, ws, ws_bytes,
                            cb->stream) == CUBLAS_STATUS_SUCCESS;
        const int reps = 10;
        cudaEventRecord(e0, cb->stream);
        for (int i = 0; i < reps && ok; i++)
            ok = lt->matmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res.algo, ws, ws_bytes,
                            cb->stream) == CUBLAS_STATUS_SUCCESS;
        cudaEventRecord(e1, cb->stream);
        float ms = 0;
        if (ok && cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess)
            rate = 2.0 * N * (double)N * N * reps / (ms * 1e-3) / 1e12;
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
    }
    if (pref)
        lt->pref_destroy(pref);
    if (ld)
        lt->layout_destroy(ld);
    if (lb)
        lt->layout_destroy(lb);
    if (la)
        lt->layout_destroy(la);
    if (desc)
        lt->desc_destroy(desc);
    lt->destroy(h);
    return rate;
}
#endif /* GPU_HAS_CUBLASLT */

extern "C" int cu_measure_peaks(v4_backend *be, v4_peaks *p, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    const size_t copy_bytes = (size_t)2 << 30; /* 2 GB each way */
    uint8_t *a = NULL, *b = NULL;
    if (!cu_check(cb, cudaMalloc(&a, copy_bytes), "cudaMalloc") ||
        !cu_check(cb, cudaMalloc(&b, copy_bytes), "cudaMalloc")) {
        cudaFree(a);
        return cu_sync(be, err) ? -1 : v4_errf(err, "cuda: no memory for the copy measurement");
    }
    fill_kernel<<<1024, 256, 0, cb->stream>>>(a, copy_bytes, 0);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, cb->stream); /* warm-up */
    float best = INFINITY;
    for (int r = 0; r < 10; r++) {
        float ms = 0;
        cudaEventRecord(e0, cb->stream);
        cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, cb->stream);
        cudaEventRecord(e1, cb->stream);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        best = ms < best ? ms : best;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    p->copy_gbps = 2.0 * copy_bytes / (best * 1e-3) / 1e9;
    p->bf16_tflops = p->fp8_tflops = NAN;
#if GPU_HAS_CUBLASLT
    /* reuse the copy buffers for the matrices: A, B in a; D and workspace in b */
    const int N = 8192;
    const size_t mat = (size_t)N * N * 2, ws_bytes = (size_t)64 << 20;
    uint8_t *d = b, *ws = b + 2 * mat;
    lt_api lt = {0};
    char which[160] = "";
    if (cu_lt_load(&lt, which, sizeof which) == 0) {
        fill_kernel<<<1024, 256, 0, cb->stream>>>(a, 2 * mat, 1);
        p->bf16_tflops = lt_rate(cb, &lt, CUDA_R_16BF, N, a, a + mat, d, ws, ws_bytes);
        fill_kernel<<<1024, 256, 0, cb->stream>>>(a, 2 * mat, 0);
        p->fp8_tflops = lt_rate(cb, &lt, CUDA_R_8F_E4M3, N, a, a + mat, d, ws, ws_bytes);
        snprintf(p->how, sizeof p->how,
                 "copy: cudaMemcpyAsync D2D 2 GB, best of 10, read+write; GEMM: cuBLASLt (%s) %d^3, mean of 10", which,
                 N);
    } else {
        snprintf(p->how, sizeof p->how, "copy: cudaMemcpyAsync D2D 2 GB, best of 10; cuBLASLt not found (GEMM NaN)");
    }
#else
    snprintf(p->how, sizeof p->how, "copy: hipMemcpyAsync D2D 2 GB, best of 10; GEMM NaN (no hipBLASLt binding)");
#endif
    cudaStreamSynchronize(cb->stream);
    cudaFree(a);
    cudaFree(b);
    return cu_sync(be, err);
}
