/* Lightning indexer top-k on the GPU (MODEL.md 4.4), the contract of
 * src/backend/cpu/indexer.c: sel[t] = the topk best-scoring eligible
 * entries (i < floor((pos+1)/ratio)) in ascending order, or all eligible
 * entries then -1 when there are no more than topk.
 *
 * The plain path, and the only one for fp32 keys (whose scores it forms in
 * fp32 as the CPU does); bf16 and FP8 keys take indexer_tc.cu where it
 * applies. A persistent grid of blocks, each taking tokens in turn: the
 * token's h query heads (c channels each, rows padded by one float so that
 * lane-per-head reads are conflict-free) and head weights go to shared
 * memory; each warp scores EPW entries at a time (keys decoded into shared
 * memory channel-major, so one broadcast 16-byte load gives 4 entries'
 * channel; one lane per head, two heads at once, ReLU, weighted sum) into
 * the block's global scratch row. Each entry's score is the same operations
 * in the same order as with one entry at a time (lane l: heads l, l + 32,
 * ...; a warp sum), only the loads are shared: one entry at a time took two
 * shared-memory loads per multiply-add, and the scores were 18 of an 8K
 * prefill's 169 ms (bench/RESULTS.md). Then idx_select_topk (indexer.cuh). */
#include "backend/cuda/indexer.cuh"

/* Entries a warp scores together: 8, or 4 where the keys of 8 would not fit
 * the shared memory a block may have (64 KB under HIP). */
#define IDX_EPW 8
#define IDX_EPW_SMALL 4

/* Floats of shared memory before the keys: queries and head weights,
 * rounded up to 16 bytes. */
static __host__ __device__ __forceinline__ size_t idx_kb_off(int h, int c)
{
    return ((size_t)h * (c + 1) + h + 3) & ~(size_t)3;
}

template <int KVT, int EPW>
__global__ __launch_bounds__(IDX_THREADS) void index_topk_kernel(int32_t *__restrict__ sel,
                                                                 const float *__restrict__ qI,
                                                                 const float *__restrict__ wI, const void *keys,
                                                                 const float *__restrict__ kscale, v4_step st, int h,
                                                                 int c, int ratio, int epb, int topk, float *scratch,
                                                                 int64_t scratch_per_block)
{
    extern __shared__ float smem[];
    float *qs = smem;               /* [h][c + 1] */
    float *ws = qs + h * (c + 1);   /* [h] */
    float *kb = smem + idx_kb_off(h, c); /* [IDX_WARPS][c][EPW], 16-byte aligned */
    __shared__ idx_select_smem ss;
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const float cs = 1.0f / sqrtf((float)c);
    float *scr = scratch + blockIdx.x * scratch_per_block;
    for (int t = blockIdx.x; t < st.n_tokens; t += gridDim.x) {
        int32_t *out = sel + (int64_t)t * topk;
        const int s = st.tok_seq[t];
        const int64_t n_elig = ((int64_t)st.tok_pos[t] + 1) / ratio;
        if (n_elig <= topk) {
            for (int k = threadIdx.x; k < topk; k += IDX_THREADS)
                out[k] = k < n_elig ? k : -1;
            continue;
        }
        const int32_t *bt = st.block_table + (int64_t)s * st.max_blocks;
        __syncthreads(); /* the previous token is done with shared memory and scratch */
        for (int i = threadIdx.x; i < h * c; i += IDX_THREADS)
            qs[(i / c) * (c + 1) + i % c] = qI[(int64_t)t * h * c + i];
        for (int i = threadIdx.x; i < h; i += IDX_THREADS)
            ws[i] = wI[(int64_t)t * h + i];
        __syncthreads();
        /* the scores */
        float4 *kw = (float4 *)(kb + (size_t)warp * c * EPW); /* [c][EPW / 4] */
        for (int64_t i0 = (int64_t)warp * EPW; i0 < n_elig; i0 += IDX_WARPS * EPW) {
            bool ok[EPW];
#pragma unroll
            for (int e = 0; e < EPW; e++) {
                const int64_t i = i0 + e;
                const int32_t blk = i < n_elig ? bt[i / epb] : -1;
                ok[e] = blk >= 0;
                const int64_t vec = (int64_t)(ok[e] ? blk : 0) * epb + i % epb;
                const float sc = ok[e] && (KVT == KV_FP8 || KVT == KV_FP8FNUZ) ? kscale[vec] : 1.0f;
                for (int ch = lane; ch < c; ch += GPU_WARP)
                    ((float *)kw)[ch * EPW + e] = ok[e] ? kv_load<KVT>(keys, vec * c + ch, sc) : 0.0f;
            }
            gpu_syncwarp();
            float part[EPW];
#pragma unroll
            for (int e = 0; e < EPW; e++)
                part[e] = 0.0f;
            for (int h0 = lane; h0 < h; h0 += 2 * GPU_WARP) {
                const int h1 = h0 + GPU_WARP < h ? h0 + GPU_WARP : h0; /* h1 == h0: no second head */
                const float *q0 = qs + h0 * (c + 1), *q1 = qs + h1 * (c + 1);
                float d0[EPW], d1[EPW];
#pragma unroll
                for (int e = 0; e < EPW; e++)
                    d0[e] = d1[e] = 0.0f;
                for (int ch = 0; ch < c; ch++) {
                    const float a0 = q0[ch], a1 = q1[ch];
#pragma unroll
                    for (int v = 0; v < EPW / 4; v++) {
                        const float4 k4 = kw[ch * (EPW / 4) + v];
                        const float kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
                        for (int u = 0; u < 4; u++) {
                            d0[4 * v + u] = fmaf(a0, kk[u], d0[4 * v + u]);
                            d1[4 * v + u] = fmaf(a1, kk[u], d1[4 * v + u]);
                        }
                    }
                }
#pragma unroll
                for (int e = 0; e < EPW; e++) {
                    part[e] += ws[h0] * (d0[e] > 0 ? d0[e] : 0.0f) * cs;
                    if (h1 != h0)
                        part[e] += ws[h1] * (d1[e] > 0 ? d1[e] : 0.0f) * cs;
                }
            }
#pragma unroll
            for (int e = 0; e < EPW; e++) {
                const float score = warp_sum(part[e]);
                if (lane == 0 && i0 + e < n_elig)
                    scr[i0 + e] = ok[e] ? score : -INFINITY;
            }
            gpu_syncwarp(); /* kw is rewritten for the next entries */
        }
        __syncthreads();
        idx_select_topk(out, scr, n_elig, topk, &ss);
    }
}

/* Opts the kernel into as much dynamic shared memory as the device allows
 * beside its static shared memory; records the grant in cb->idx_smem_max. */
template <int KVT, int EPW> static cudaError_t allow_dynamic_smem(cu_backend *cb)
{
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, index_topk_kernel<KVT, EPW>);
    if (e != cudaSuccess)
        return e;
    const size_t lim = cb->smem_optin - a.sharedSizeBytes;
    if (lim < cb->idx_smem_max)
        cb->idx_smem_max = lim;
    return cudaFuncSetAttribute(index_topk_kernel<KVT, EPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)lim);
}

/* allow_dynamic_smem for both entry widths. */
template <int KVT> static cudaError_t allow_both(cu_backend *cb)
{
    const cudaError_t e = allow_dynamic_smem<KVT, IDX_EPW>(cb);
    return e != cudaSuccess ? e : allow_dynamic_smem<KVT, IDX_EPW_SMALL>(cb);
}

extern "C" int cu_indexer_init(cu_backend *cb, v4_err *err)
{
    cudaError_t e = cudaSuccess;
    cb->idx_smem_max = cb->smem_optin;
    CU_KV_DISPATCH(KV_F32, e = allow_both<KVT>(cb));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_BF16, e = allow_both<KVT>(cb));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_FP8, e = allow_both<KVT>(cb));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_FP8FNUZ, e = allow_both<KVT>(cb));
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: configuring the indexer kernel: %s", cudaGetErrorString(e));
#if GPU_HAS_MMA_SYNC
    return cu_indexer_tc_init(cb, err);
#else
    return 0;
#endif
}

extern "C" void cu_index_topk(v4_backend *be, int32_t *sel, const float *qI, const float *wI, const void *keys,
                              const v4_step *st, int n_heads, int head_dim, int ratio, int entries_per_block,
                              int block_tokens, int topk)
{
    cu_backend *cb = cu_of(be);
    const size_t q_floats = idx_kb_off(n_heads, head_dim);
    const bool wide = (q_floats + (size_t)IDX_WARPS * IDX_EPW * head_dim) * sizeof(float) <= cb->idx_smem_max;
    const size_t smem = (q_floats + (size_t)IDX_WARPS * (wide ? IDX_EPW : IDX_EPW_SMALL) * head_dim) * sizeof(float);
    const int64_t max_entries = (int64_t)st->max_blocks * entries_per_block;
    if (n_heads < 1 || head_dim < 1 || ratio < 1 || entries_per_block < 1 || topk < 1 || smem > cb->idx_smem_max) {
        cu_fail(cb, "index_topk: unsupported shape (%d heads of %d, ratio %d, top %d)", n_heads, head_dim, ratio,
                topk);
        return;
    }
    if ((size_t)max_entries > cb->idx_floats_per_block) {
        cu_fail(cb, "index_topk: %lld entries per sequence exceed the scratch reserved by alloc_kv (%zu)",
                (long long)max_entries, cb->idx_floats_per_block);
        return;
    }
    const float *kscale = cu_kv_scale(cb, keys);
    if ((cb->kv_type == KV_FP8 || cb->kv_type == KV_FP8FNUZ) && !kscale) {
        cu_fail(cb, "index_topk: keys not allocated by this backend's alloc_kv");
        return;
    }
    if (st->n_tokens <= 0)
        return;
#if GPU_HAS_MMA_SYNC
    if (!cb->plain && cu_index_topk_tc(cb, sel, qI, wI, keys, kscale, st, n_heads, head_dim, ratio, entries_per_block,
                                       topk))
        return;
#endif
    const int grid = st->n_tokens < cb->idx_blocks ? st->n_tokens : cb->idx_blocks;
#define IDX_LAUNCH(EPW)                                                                                           \
    CU_KV_DISPATCH(cb->kv_type, (index_topk_kernel<KVT, EPW><<<grid, IDX_THREADS, smem, cb->stream>>>(                 \
                                    sel, qI, wI, keys, kscale, *st, n_heads, head_dim, ratio, entries_per_block, topk, \
                                    cb->idx_scratch, (int64_t)cb->idx_floats_per_block)))
    if (wide)
        IDX_LAUNCH(IDX_EPW);
    else
        IDX_LAUNCH(IDX_EPW_SMALL);
#undef IDX_LAUNCH
    cu_launched(cb, "index_topk");
}
