/* Sparse attention on the GPU (MODEL.md 4.2), the contract of
 * src/backend/cpu/attention.c: each query sees the CSA-selected or
 * HCA-closed compressed entries, then its sliding window (positions of this
 * step from the fp32 kv rows, earlier ones from the slot's ring), plus a
 * per-head sink logit with no value.
 *
 * One block per (token, group of ATT_HG = 16 heads), one warp per head. The
 * visible keys are enumerated on the device (selection, closed-entry count
 * and window bounds come from device memory) and processed in tiles of
 * ATT_TK keys: the block decodes a tile into shared memory (rows padded by
 * one float), lane j of each warp scores key j against its head's query,
 * and the warp folds the tile into an online softmax whose running max
 * starts at the sink. Decode and prefill take the same path.
 *
 * ring_store writes the step's last W kv rows of each sequence into its
 * ring, in the KV type (FP8: one scale per stored vector). */
#include "backend/cuda/cu_device.cuh"

#define ATT_HG 16
#define ATT_TK 32
#define ATT_MAXD 512

template <int KVT>
__global__ __launch_bounds__(ATT_HG * 32) void attention_kernel(
    float *__restrict__ o, const float *__restrict__ q, const float *__restrict__ kv, const void *ring,
    const float *__restrict__ ring_scale, const void *entries, const float *__restrict__ entry_scale,
    const int32_t *__restrict__ sel, const float *__restrict__ sinks, v4_step st, int H, int d, int window, int kind,
    int ratio, int epb, int topk, float scale, int tiles_per_split, float *__restrict__ part)
{
    extern __shared__ float smem[];
    float *qs = smem;            /* [ATT_HG][d] */
    float *ks = qs + ATT_HG * d; /* [ATT_TK][d + 1] */
    __shared__ int kvalid[ATT_TK];
    const bool fp8 = KVT == KV_FP8 || KVT == KV_FP8FNUZ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t t = blockIdx.x;
    const int h0 = blockIdx.y * ATT_HG, h = h0 + warp;
    const bool hv = h < H;
    const int s = st.tok_seq[t];
    const int64_t p = st.tok_pos[t], start = st.seq_start[s], slot = st.seq_slot[s], row0 = st.seq_row[s];
    const int32_t *bt = st.block_table + (int64_t)s * st.max_blocks;
    /* CSA: the selection holds its valid entries first (ascending, then -1),
     * at most one per eligible entry, so columns past that count are -1 */
    const int64_t closed = kind == LAYER_SLIDING ? 0 : (p + 1) / ratio;
    const int64_t n_comp = kind == LAYER_CSA ? (closed < topk ? closed : topk) : closed;
    const int64_t first = p - window + 1 > 0 ? p - window + 1 : 0;
    const int64_t total = n_comp + (p - first + 1);

    for (int i = threadIdx.x; i < ATT_HG * d; i += blockDim.x) {
        const int hh = h0 + i / d;
        qs[i] = hh < H ? q[(t * H + hh) * d + i % d] : 0.0f;
    }
    /* split z of the keys (split-K over long key lists; 1 split: all keys):
     * the sink belongs to split 0 */
    const int z = blockIdx.z;
    float m = hv && z == 0 ? sinks[h] : -INFINITY, l = z == 0 ? 1.0f : 0.0f; /* exp(sink - m) = 1 */
    float acc[ATT_MAXD / 32];
#pragma unroll
    for (int c = 0; c < ATT_MAXD / 32; c++)
        acc[c] = 0.0f;

    const int64_t key0 = (int64_t)z * tiles_per_split * ATT_TK;
    const int64_t key1 = gridDim.z == 1 ? total : (key0 + (int64_t)tiles_per_split * ATT_TK < total
                                                       ? key0 + (int64_t)tiles_per_split * ATT_TK : total);
    for (int64_t tile0 = key0; tile0 < key1; tile0 += ATT_TK) {
        __syncthreads(); /* the previous tile has been consumed (and qs written) */
        for (int kt = warp; kt < ATT_TK; kt += ATT_HG) {
            const int64_t v = tile0 + kt;
            bool valid = false, live = false; /* live: from this step's fp32 rows */
            int64_t vec = 0;
            const void *base = NULL;
            float sc = 1.0f;
            if (v < key1) {
                if (v < n_comp) {
                    const int64_t idx = kind == LAYER_CSA ? sel[t * topk + v] : v;
                    const int32_t blk = idx >= 0 ? bt[idx / epb] : -1;
                    if (blk >= 0) {
                        vec = (int64_t)blk * epb + idx % epb;
                        base = entries;
                        sc = fp8 ? entry_scale[vec] : 1.0f;
                        valid = true;
                    }
                } else {
                    const int64_t qp = first + (v - n_comp);
                    valid = true;
                    if (qp >= start) {
                        live = true;
                        vec = row0 + (qp - start);
                    } else {
                        vec = slot * window + qp % window;
                        base = ring;
                        sc = fp8 ? ring_scale[vec] : 1.0f;
                    }
                }
            }
            float *dst = ks + kt * (d + 1);
            for (int ch = lane; ch < d; ch += 32)
                dst[ch] = !valid ? 0.0f : live ? kv[vec * d + ch] : kv_load<KVT>(base, vec * d + ch, sc);
            if (lane == 0)
                kvalid[kt] = valid;
        }
        __syncthreads();
        if (!hv)
            continue;
        const float *kr = ks + lane * (d + 1), *qh = qs + warp * d;
        /* four independent partial sums: a single 512-long FMA chain would
         * leave the warp waiting on each FMA's latency */
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
        int ch = 0;
        for (; ch + 4 <= d; ch += 4) {
            d0 = fmaf(qh[ch], kr[ch], d0);
            d1 = fmaf(qh[ch + 1], kr[ch + 1], d1);
            d2 = fmaf(qh[ch + 2], kr[ch + 2], d2);
            d3 = fmaf(qh[ch + 3], kr[ch + 3], d3);
        }
        for (; ch < d; ch++)
            d0 = fmaf(qh[ch], kr[ch], d0);
        const float dot = (d0 + d1) + (d2 + d3);
        const bool ok = kvalid[lane] != 0;
        const float sc = ok ? dot * scale : -INFINITY;
        const float mnew = fmaxf(m, warp_max(sc));
        const float corr = m == -INFINITY ? 0.0f : expf(m - mnew); /* nothing folded in yet */
        const float pj = ok ? expf(sc - mnew) : 0.0f;
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int c = 0; c < ATT_MAXD / 32; c++)
            acc[c] *= corr;
        for (int j = 0; j < ATT_TK; j++) {
            const float pjj = __shfl_sync(0xffffffffu, pj, j);
            if (pjj == 0.0f)
                continue; /* uniform across the warp */
            const float *kj = ks + j * (d + 1);
#pragma unroll
            for (int c = 0; c < ATT_MAXD / 32; c++) {
                const int ch = lane + 32 * c;
                if (ch < d)
                    acc[c] = fmaf(pjj, kj[ch], acc[c]);
            }
        }
        m = mnew;
    }
    if (!hv)
        return;
    if (gridDim.z > 1) { /* partial: unnormalised sum, running max and mass */
        float *pp = part + (((t * H + h) * gridDim.z + z) * (d + 2));
#pragma unroll
        for (int c = 0; c < ATT_MAXD / 32; c++) {
            const int ch = lane + 32 * c;
            if (ch < d)
                pp[ch] = acc[c];
        }
        if (lane == 0)
            pp[d] = m, pp[d + 1] = l;
        return;
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int c = 0; c < ATT_MAXD / 32; c++) {
        const int ch = lane + 32 * c;
        if (ch < d)
            o[(t * H + h) * d + ch] = acc[c] * inv;
    }
}

/* Merges the splits of a (token, head): o = sum_z acc_z e^(m_z - M) / sum_z l_z e^(m_z - M). */
__global__ void attention_merge_kernel(float *__restrict__ o, const float *__restrict__ part, int H, int d, int splits)
{
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y;
    const float *pp = part + ((t * H + h) * splits) * (int64_t)(d + 2);
    float M = -INFINITY;
    for (int z = 0; z < splits; z++)
        M = fmaxf(M, pp[z * (d + 2) + d]);
    float L = 0.0f;
    for (int z = 0; z < splits; z++) {
        const float mz = pp[z * (d + 2) + d];
        L += mz == -INFINITY ? 0.0f : pp[z * (d + 2) + d + 1] * expf(mz - M);
    }
    const float inv = 1.0f / L;
    for (int ch = threadIdx.x; ch < d; ch += blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; z++) {
            const float mz = pp[z * (d + 2) + d];
            if (mz != -INFINITY)
                v += pp[z * (d + 2) + ch] * expf(mz - M);
        }
        o[(t * H + h) * d + ch] = v * inv;
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
    return 0;
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
    /* split-K: when tokens x head groups leave the SMs idle (decode of a few
     * sequences), the keys are cut into splits merged by a second kernel.
     * The split count depends only on host-side shapes (the most keys a
     * token can see), so graphs capture it. */
    const int groups = (sh->n_heads + ATT_HG - 1) / ATT_HG;
    const int64_t max_keys = sh->window + (sh->kind == LAYER_CSA ? sh->topk : 0) +
                             (sh->kind == LAYER_HCA ? (int64_t)st->max_blocks * sh->entries_per_block : 0);
    const int64_t max_tiles = (max_keys + ATT_TK - 1) / ATT_TK;
    int64_t splits = (2 * cb->n_sm) / ((int64_t)st->n_tokens * groups);
    splits = splits < 1 ? 1 : splits > max_tiles ? max_tiles : splits > 64 ? 64 : splits;
    const int tiles_per_split = (int)((max_tiles + splits - 1) / splits);
    splits = (max_tiles + tiles_per_split - 1) / tiles_per_split;
    if (splits > 1) {
        const size_t need = (size_t)st->n_tokens * sh->n_heads * splits * (sh->head_dim + 2);
        if (need > cb->att_part_floats) {
            if (cb->capturing) {
                cu_fail(cb, "attention: split scratch of %zu floats needed during capture", need);
                return;
            }
            float *p = NULL;
            if (!cu_check(cb, cudaMalloc((void **)&p, need * sizeof(float)), "cudaMalloc (attention splits)"))
                return;
            if (cb->att_part)
                cu_retire(cb, cb->att_part);
            cb->att_part = p;
            cb->att_part_floats = need;
        }
    }
    const dim3 grid((unsigned)st->n_tokens, (unsigned)groups, (unsigned)splits);
    const float scale = 1.0f / sqrtf((float)sh->head_dim);
    CU_KV_DISPATCH(cb->kv_type,
                   (attention_kernel<KVT><<<grid, ATT_HG * 32, att_smem(sh->head_dim), cb->stream>>>(
                       o, q, kv, lkv->ring, lkv->ring_scale, lkv->entries, lkv->entry_scale, sel, sinks, *st,
                       sh->n_heads, sh->head_dim, sh->window, (int)sh->kind, sh->ratio, sh->entries_per_block,
                       sh->topk, scale, tiles_per_split, cb->att_part)));
    cu_launched(cb, "attention");
    if (splits > 1) {
        attention_merge_kernel<<<dim3((unsigned)st->n_tokens, (unsigned)sh->n_heads), 128, 0, cb->stream>>>(
            o, cb->att_part, sh->n_heads, sh->head_dim, (int)splits);
        cu_launched(cb, "attention_merge");
    }
}

/* grid (sequences, window): block k stores row first + k of the sequence. */
template <int KVT>
__global__ void ring_store_kernel(void *ring, float *ring_scale, const float *__restrict__ kv, v4_step st, int window,
                                  int d)
{
    __shared__ float red[32];
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
