/* Sparse attention on the GPU (MODEL.md 4.2), the contract of
 * src/backend/cpu/attention.c: each query sees the CSA-selected or
 * HCA-closed compressed entries, then its sliding window (positions of this
 * step from the fp32 kv rows, earlier ones from the slot's ring), plus a
 * per-head sink logit with no value.
 *
 * One block per (token, group of ATT_HG heads), one warp per head. The
 * visible keys are enumerated on the device (selection, closed-entry count
 * and window bounds come from device memory) and processed in tiles of
 * ATT_TK keys: the block decodes a tile into shared memory (rows padded by
 * one float), lanes j*ATT_KL.. of each warp score key j against its head's
 * query, and the warp folds the tile into an online softmax whose running
 * max starts at the sink. Decode and prefill take the same path.
 * NVIDIA: 16 heads, tiles of 32 keys, one lane per key. CDNA3 (64-lane
 * wavefronts, 64 KB of LDS per block): 8 heads, tiles of 16 keys, four
 * lanes per key, each over every fourth group of 4 channels.
 *
 * ring_store writes the step's last W kv rows of each sequence into its
 * ring, in the KV type (FP8: one scale per stored vector). */
#include "backend/cuda/attention.cuh"

#if GPU_HIP
#define ATT_HG 8
#define ATT_TK 16
#else
#define ATT_HG 16
#define ATT_TK 32
#endif
#define ATT_KL (GPU_WARP / ATT_TK) /* lanes that score one key */
#define ATT_MAXD 512
static_assert(ATT_TK * ATT_KL == GPU_WARP, "a tile's keys fill the warp");
static_assert((ATT_HG + ATT_TK) * (ATT_MAXD + 1) * 4 <= GPU_SMEM_MAX, "attention tiles exceed shared memory");

template <int KVT>
__global__ __launch_bounds__(ATT_HG * GPU_WARP) void attention_kernel(
    float *__restrict__ o, const float *__restrict__ q, const float *__restrict__ kv, const void *ring,
    const float *__restrict__ ring_scale, const void *entries, const float *__restrict__ entry_scale,
    const int32_t *__restrict__ sel, const float *__restrict__ sinks, v4_step st, int H, int d, int window, int kind,
    int ratio, int epb, int topk, float scale)
{
    extern __shared__ float smem[];
    float *qs = smem;            /* [ATT_HG][d] */
    float *ks = qs + ATT_HG * d; /* [ATT_TK][d + 1] */
    __shared__ int kvalid[ATT_TK];
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const int kj = lane / ATT_KL, kq = lane % ATT_KL; /* the key this lane scores, its part of the channels */
    const int64_t t = blockIdx.x;
    const int h0 = blockIdx.y * ATT_HG, h = h0 + warp;
    const bool hv = h < H;
    const att_tok tk = att_token(st, t, kind, ratio, topk, window);

    att_stage_q<ATT_HG * GPU_WARP, 16>(qs, d, q, t, H, h0, ATT_HG, d);
    float m = hv ? sinks[h] : 0.0f, l = 1.0f; /* the sink: exp(sink - m) = 1 */
    float acc[ATT_MAXD / GPU_WARP];
#pragma unroll
    for (int c = 0; c < ATT_MAXD / GPU_WARP; c++)
        acc[c] = 0.0f;

    for (int64_t tile0 = 0; tile0 < tk.total; tile0 += ATT_TK) {
        __syncthreads(); /* the previous tile has been consumed (and qs written) */
        for (int kt = warp; kt < ATT_TK; kt += ATT_HG) {
            const att_key k = att_key_at<KVT>(tk, tile0 + kt, t, sel, kind, epb, topk, window, entries, entry_scale,
                                              ring, ring_scale);
            float *dst = ks + kt * (d + 1), v[ATT_MAXD / GPU_WARP];
            att_key_load<KVT, ATT_MAXD / GPU_WARP, GPU_WARP>(v, k, kv, d, lane);
#pragma unroll
            for (int j = 0; j < ATT_MAXD / GPU_WARP; j++)
                if (lane + j * GPU_WARP < d)
                    dst[lane + j * GPU_WARP] = v[j];
            if (lane == 0)
                kvalid[kt] = k.valid;
        }
        __syncthreads();
        if (!hv)
            continue;
        const float *kr = ks + kj * (d + 1), *qh = qs + warp * d;
        /* four independent partial sums: a single 512-long FMA chain would
         * leave the warp waiting on each FMA's latency; with ATT_KL lanes
         * per key, lane kq takes the groups of 4 channels kq, kq+ATT_KL, ... */
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
        for (int ch = 4 * kq; ch + 4 <= d; ch += 4 * ATT_KL) {
            d0 = fmaf(qh[ch], kr[ch], d0);
            d1 = fmaf(qh[ch + 1], kr[ch + 1], d1);
            d2 = fmaf(qh[ch + 2], kr[ch + 2], d2);
            d3 = fmaf(qh[ch + 3], kr[ch + 3], d3);
        }
        for (int ch = (d & ~3) + kq; ch < d; ch += ATT_KL)
            d0 = fmaf(qh[ch], kr[ch], d0);
        float dot = (d0 + d1) + (d2 + d3);
#pragma unroll
        for (int o = ATT_KL / 2; o > 0; o >>= 1) /* a key's lanes are adjacent; all end with the same sum */
            dot += gpu_shfl_xor(dot, o);
        const bool ok = kvalid[kj] != 0;
        const float sc = ok ? dot * scale : -INFINITY;
        const float mnew = fmaxf(m, warp_max(sc));
        const float corr = expf(m - mnew);
        const float pj = ok ? expf(sc - mnew) : 0.0f;
        l = l * corr + warp_sum(kq == 0 ? pj : 0.0f); /* each key once */
#pragma unroll
        for (int c = 0; c < ATT_MAXD / GPU_WARP; c++)
            acc[c] *= corr;
        for (int j = 0; j < ATT_TK; j++) {
            const float pjj = gpu_shfl(pj, j * ATT_KL);
            if (pjj == 0.0f)
                continue; /* uniform across the warp */
            const float *kjr = ks + j * (d + 1);
#pragma unroll
            for (int c = 0; c < ATT_MAXD / GPU_WARP; c++) {
                const int ch = lane + GPU_WARP * c;
                if (ch < d)
                    acc[c] = fmaf(pjj, kjr[ch], acc[c]);
            }
        }
        m = mnew;
    }
    if (!hv)
        return;
    const float inv = 1.0f / l;
#pragma unroll
    for (int c = 0; c < ATT_MAXD / GPU_WARP; c++) {
        const int ch = lane + GPU_WARP * c;
        if (ch < d)
            o[(t * H + h) * d + ch] = acc[c] * inv;
    }
}

static size_t att_smem(int d) { return ((size_t)ATT_HG * d + (size_t)ATT_TK * (d + 1)) * sizeof(float); }

extern "C" int cu_attention_init(cu_backend *cb, v4_err *err)
{
    cudaError_t e = cudaSuccess;
    const int need = (int)att_smem(ATT_MAXD);
    if ((size_t)need > cb->smem_optin)
        return v4_errf(err, "cuda: attention needs %d bytes of shared memory per block; the device allows %zu", need,
                       cb->smem_optin);
    CU_KV_DISPATCH(KV_F32, e = cudaFuncSetAttribute(attention_kernel<KVT>,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize, need));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_BF16, e = cudaFuncSetAttribute(attention_kernel<KVT>,
                                                         cudaFuncAttributeMaxDynamicSharedMemorySize, need));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_FP8, e = cudaFuncSetAttribute(attention_kernel<KVT>,
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize, need));
    if (e == cudaSuccess)
        CU_KV_DISPATCH(KV_FP8FNUZ, e = cudaFuncSetAttribute(attention_kernel<KVT>,
                                                            cudaFuncAttributeMaxDynamicSharedMemorySize, need));
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: configuring the attention kernel: %s", cudaGetErrorString(e));
#if GPU_HAS_MMA_SYNC
    return cu_attention_tc_init(cb, err);
#else
    return 0;
#endif
}

extern "C" void cu_attention(v4_backend *be, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                             const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (sh->head_dim < 1 || sh->head_dim > ATT_MAXD || sh->n_heads < 1 || sh->window < 1 ||
        (sh->kind != LAYER_SLIDING && (sh->ratio < 1 || sh->entries_per_block < 1)) ||
        (sh->kind == LAYER_CSA && (!sel || sh->topk < 1))) {
        cu_fail(cb, "attention: unsupported shape (%d heads of %d, window %d, ratio %d)", sh->n_heads, sh->head_dim,
                sh->window, sh->ratio);
        return;
    }
    if (st->n_tokens <= 0)
        return;
#if GPU_HAS_MMA_SYNC
    if (!cb->plain && attention_tc_supported(sh) && cu_attention_tc(cb, o, q, kv, lkv, sel, sinks, st, sh))
        return;
#endif
    const dim3 grid((unsigned)st->n_tokens, (unsigned)((sh->n_heads + ATT_HG - 1) / ATT_HG));
    const float scale = 1.0f / sqrtf((float)sh->head_dim);
    CU_KV_DISPATCH(cb->kv_type,
                   (attention_kernel<KVT><<<grid, ATT_HG * GPU_WARP, att_smem(sh->head_dim), cb->stream>>>(
                       o, q, kv, lkv->ring, lkv->ring_scale, lkv->entries, lkv->entry_scale, sel, sinks, *st,
                       sh->n_heads, sh->head_dim, sh->window, (int)sh->kind, sh->ratio, sh->entries_per_block,
                       sh->topk, scale)));
    cu_launched(cb, "attention");
}

/* grid (sequences, window): block k stores row first + k of the sequence. */
template <int KVT>
__global__ void ring_store_kernel(void *ring, float *ring_scale, const float *__restrict__ kv, v4_step st, int window,
                                  int d)
{
    __shared__ float red[GPU_MAX_WARPS];
    const int s = blockIdx.x;
    const int ntok = st.seq_ntok[s];
    const int first = ntok > window ? ntok - window : 0;
    const int t = first + blockIdx.y;
    if (t >= ntok)
        return;
    const int64_t slot = st.seq_slot[s], pos = (int64_t)st.seq_start[s] + t;
    const int64_t vec = slot * window + pos % window;
    const float *row = kv + ((int64_t)st.seq_row[s] + t) * d;
    float rs = 1.0f;
    if (KVT == KV_FP8 || KVT == KV_FP8FNUZ) {
        float amax = 0.0f;
        for (int ch = threadIdx.x; ch < d; ch += blockDim.x)
            amax = fmaxf(amax, fabsf(row[ch]));
        const float scale = kv_scale_of<KVT>(block_max(amax, red));
        if (threadIdx.x == 0)
            ring_scale[vec] = scale;
        rs = 1.0f / scale;
    }
    for (int ch = threadIdx.x; ch < d; ch += blockDim.x)
        kv_put<KVT>(ring, vec * d + ch, row[ch] * rs);
}

extern "C" void cu_ring_store(v4_backend *be, v4_layer_kv *lkv, const float *kv, const v4_step *st, int window,
                              int head_dim)
{
    cu_backend *cb = cu_of(be);
    if (st->n_seqs <= 0 || window <= 0 || head_dim <= 0)
        return;
    const dim3 grid((unsigned)st->n_seqs, (unsigned)window);
    CU_KV_DISPATCH(cb->kv_type, (ring_store_kernel<KVT><<<grid, 128, 0, cb->stream>>>(lkv->ring, lkv->ring_scale,
                                                                                        kv, *st, window, head_dim)));
    cu_launched(cb, "ring_store");
}
