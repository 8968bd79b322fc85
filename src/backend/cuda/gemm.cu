/* Matrix ops on the GPU: linear layers (plain and grouped) and the
 * embedding gather, over weights in their stored formats (F32/BF16/F16,
 * FP8 with UE8M0 128x128 block scales in either dialect, MXFP4 with UE8M0
 * per 32). Linear layers of a few tokens run as matrix-vector products
 * (gemv.cu), others on the tensor cores (gemm_tc.cu; cuBLASLt for steps of
 * many tokens, blas.cu) unless the backend was created with
 * V4_CUDA_PLAIN=1; the plain SIMT kernels here
 * (fp32 throughout, correct and coalesced, not tuned) are the reference. */
#include "backend/cuda/cu_gemm.cuh"
#if GPU_HAS_MMA_SYNC
#include "backend/cuda/gemm_tc.cuh"
#endif

/* Grid: x = groups * row blocks of 2*GEMM_WARPS rows (a block never spans
 * two groups, so its input rows are one slice of x), y = token tiles. */
template <int FMT, int TT>
__global__ __launch_bounds__(GEMM_THREADS) void linear_kernel(float *__restrict__ y, const float *__restrict__ x,
                                                              int n, cu_wdesc w, int groups, bool vec)
{
    __shared__ __align__(16) float xs[TT * GEMM_KC];
    __shared__ const float *xrows[TT];
    const int64_t R = w.rows, C = w.cols, per = R / groups;
    const int64_t rblocks = (per + 2 * GEMM_WARPS - 1) / (2 * GEMM_WARPS);
    const int64_t g = blockIdx.x / rblocks, rb = blockIdx.x % rblocks;
    const int t0 = blockIdx.y * TT;
    if (threadIdx.x < TT) {
        const int t = t0 + threadIdx.x;
        xrows[threadIdx.x] = t < n ? x + (int64_t)t * groups * C + g * C : NULL;
    }
    const int warp = gpu_warp_id(), lane = gpu_lane();
    const int64_t lr = rb * 2 * GEMM_WARPS + warp * 2, o = g * per + lr;
    const bool v0 = lr < per, v1 = lr + 1 < per;
    float acc[2][TT];
#pragma unroll
    for (int t = 0; t < TT; t++)
        acc[0][t] = acc[1][t] = 0.0f;
    tile_gemm<FMT, TT>(w, o, v0, w, o + 1, v1, C, vec, xrows, xs, acc);
#pragma unroll
    for (int t = 0; t < TT; t++) {
        const float s0 = warp_sum(acc[0][t]), s1 = warp_sum(acc[1][t]);
        if (lane == 0 && t0 + t < n) {
            if (v0)
                y[(int64_t)(t0 + t) * R + o] = s0;
            if (v1)
                y[(int64_t)(t0 + t) * R + o + 1] = s1;
        }
    }
}

extern "C" void cu_linear(v4_backend *be, float *y, const float *x, int n, const v4_mat *w, int groups)
{
    cu_backend *cb = cu_of(be);
    const int fmt = cu_wfmt(w);
    if (fmt < 0 || groups < 1 || w->rows % groups != 0) {
        cu_fail(cb, "linear: cannot compute with '%s' (%s, %lld x %lld, %d groups)", w->name ? w->name : "?",
                dt_name(w->dtype), (long long)w->rows, (long long)w->cols, groups);
        return;
    }
    if (n <= 0 || w->rows == 0)
        return;
#if GPU_HAS_MMA_SYNC
    if (!cb->plain) {
        if (cu_gemv_linear(cb, y, x, n, w, fmt, groups))
            return;
#if GPU_HAS_CUBLASLT
        if (cu_blas_linear(cb, y, x, n, w, fmt, groups))
            return;
#endif
        cu_linear_tc(cb, y, x, n, w, fmt, groups);
        return;
    }
#endif
    const int tt = cu_pick_tt(n);
    const int64_t per = w->rows / groups, rblocks = (per + 2 * GEMM_WARPS - 1) / (2 * GEMM_WARPS);
    const dim3 grid((unsigned)(groups * rblocks), (unsigned)((n + tt - 1) / tt));
    const bool vec = w->cols % 4 == 0;
    const cu_wdesc d = cu_desc(w);
    CU_FMT_DISPATCH(fmt, CU_TT_DISPATCH(tt, (linear_kernel<FMT, TT><<<grid, GEMM_THREADS, 0, cb->stream>>>(
                                                y, x, n, d, groups, vec))));
    cu_launched(cb, "linear");
}

/* X[t][s][:] = row tok_id[t] of the embedding, for every stream s. */
template <int FMT>
__global__ void embed_kernel(float *__restrict__ X, cu_wdesc w, const int32_t *__restrict__ tok_id, int n_streams)
{
    const int64_t t = blockIdx.x;
    const int64_t D = w.cols;
    const int32_t tok = tok_id[t];
    for (int64_t c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; c < D; c += (int64_t)gridDim.y * blockDim.x) {
        const float v = tok >= 0 && tok < w.rows ? wload1<FMT>(w, tok, c) : 0.0f;
        for (int s = 0; s < n_streams; s++)
            X[(t * n_streams + s) * D + c] = v;
    }
}

extern "C" void cu_embed(v4_backend *be, float *X, const v4_mat *embed, const v4_step *st, int n_streams)
{
    cu_backend *cb = cu_of(be);
    const int fmt = cu_wfmt(embed);
    if (fmt < 0) {
        cu_fail(cb, "embed: cannot read '%s' (%s)", embed->name ? embed->name : "?", dt_name(embed->dtype));
        return;
    }
    if (st->n_tokens <= 0)
        return;
    const int64_t cb_ = (embed->cols + 255) / 256;
    const dim3 grid((unsigned)st->n_tokens, (unsigned)(cb_ > 1024 ? 1024 : cb_));
    const cu_wdesc d = cu_desc(embed);
    CU_FMT_DISPATCH(fmt, (embed_kernel<FMT><<<grid, 256, 0, cb->stream>>>(X, d, st->tok_id, n_streams)));
    cu_launched(cb, "embed");
}
