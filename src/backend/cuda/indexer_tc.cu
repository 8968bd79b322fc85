/* Lightning indexer scores on tensor cores (the fast path of `index_topk`
 * for bf16 and FP8 keys; indexer.cu is the plain path it is tested
 * against, and the only one for fp32 keys).
 *
 * A token's scores are score[i] = sum_h w[h] relu(q[h] . k[i]) / sqrt(c):
 * one product D = Q K^T of the token's heads (at most 64, zero rows past
 * h) by its eligible keys, then a weighted ReLU sum down D's columns. A
 * persistent grid of blocks takes tokens in turn, as the plain kernel
 * does; per token:
 *  - Q goes to shared memory as bf16 and each warp keeps the A fragments
 *    of its 32 heads (two m16 tiles, all of c) in registers for the whole
 *    token, so the products read only keys from shared memory;
 *  - keys stream through two shared-memory stages of IDX_TC_TE entries
 *    (bf16 rows copied with cp.async as stored; FP8 rows decoded to bf16,
 *    exactly, with each entry's scale kept aside and applied to its score:
 *    relu(s x) = s relu(x) for s > 0), the next tile's copies in flight
 *    while a tile is multiplied;
 *  - warp w multiplies heads 32 (w % 2).. by entries 16 (w / 2).. of the
 *    tile with mma.sync m16n8k16 (fp32 accumulation), sums its heads'
 *    weighted ReLUs in registers and over the quad rows, and the two head
 *    halves meet in shared memory;
 *  - the row of scores goes to the block's global scratch, then
 *    idx_select_topk (indexer.cuh) as in the plain kernel.
 * The queries are rounded to bf16 (the keys already are, or coarser): an
 * entry's score moves by at most 2^-8 sum_h |w[h]| sum_c |q[h][c] k[i][c]| /
 * sqrt(c), which is the tolerance t_attn.c holds the selection to. */
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/indexer.cuh"
#include "backend/cuda/mma_sync.cuh"

#define IDX_TC_TE 64 /* entries a tile: 4 groups of 16 (a warp's two n8 tiles) */
#define IDX_TC_PAD 8 /* bf16 past each shared row: 16 bytes, so ldmatrix's 8 rows hit distinct banks */

template <int C> struct idx_tc_smem {
    __nv_bfloat16 k[2][IDX_TC_TE][C + IDX_TC_PAD]; /* key stages; the queries pass through k[1] first */
    float part[4][IDX_TC_TE];                      /* each head quarter's sums of the tile */
    float kscale[2][IDX_TC_TE];                    /* FP8 entry scales (1 for bf16), 0: no entry */
    idx_select_smem sel;
};

/* Bytes of a stored key row, and 16-byte pieces of a tile a thread copies. */
template <int KVT, int C> struct idx_tc_geom {
    static constexpr int row_bytes = C * kv_elem_size(KVT);
    static constexpr int pieces = row_bytes / 16;
    static constexpr int per_thread = IDX_TC_TE * pieces / IDX_THREADS;
    static constexpr int raw_n = KVT == KV_BF16 ? 1 : per_thread; /* FP8 pieces held while a tile multiplies */
    static_assert(per_thread * IDX_THREADS == IDX_TC_TE * pieces, "whole pieces a thread");
};

/* Where entry i of the token lives (its vector index), or -1 (32-bit
 * division: a sequence's entries are counted in int, as its positions). */
static __device__ __forceinline__ int64_t idx_tc_vec(const int32_t *bt, int i, int n_elig, int epb)
{
    const int32_t blk = i < n_elig ? bt[i / epb] : -1;
    return blk >= 0 ? (int64_t)blk * epb + i % epb : -1;
}

/* The tile's stored pieces this thread copies: bf16 straight into the
 * stage with cp.async; FP8 into raw (decoded by idx_tc_put after the
 * tile before is multiplied). Thread e < IDX_TC_TE also records entry e's
 * scale (0 where there is no entry), which only it reads back. */
template <int KVT, int C>
static __device__ __forceinline__ void idx_tc_fetch(idx_tc_smem<C> &sm, int stage,
                                                    uint4 (&raw)[idx_tc_geom<KVT, C>::raw_n], const void *keys,
                                                    const float *kscale, const int32_t *bt, int e0, int n_elig,
                                                    int epb)
{
    using G = idx_tc_geom<KVT, C>;
    if constexpr (KVT == KV_BF16) {
#pragma unroll 1 /* unrolled, the copies' addresses took the registers the products need (20 bytes spilled) */
        for (int u = 0; u < G::per_thread; u++) {
            const int p = threadIdx.x + u * IDX_THREADS, e = p / G::pieces, piece = p % G::pieces;
            const int64_t vec = idx_tc_vec(bt, e0 + e, n_elig, epb);
            tc_cp16(&sm.k[stage][e][piece * 8], (const char *)keys + (vec >= 0 ? vec : 0) * G::row_bytes + piece * 16,
                    vec >= 0 ? 16 : 0);
        }
    } else {
#pragma unroll
        for (int u = 0; u < G::per_thread; u++) {
            const int p = threadIdx.x + u * IDX_THREADS, e = p / G::pieces, piece = p % G::pieces;
            const int64_t vec = idx_tc_vec(bt, e0 + e, n_elig, epb);
            raw[u] = vec >= 0 ? *(const uint4 *)((const char *)keys + vec * G::row_bytes + piece * 16)
                              : make_uint4(0, 0, 0, 0);
        }
    }
    if (threadIdx.x < IDX_TC_TE) {
        const int64_t vec = idx_tc_vec(bt, e0 + threadIdx.x, n_elig, epb);
        sm.kscale[stage][threadIdx.x] = vec < 0 ? 0.0f : KVT == KV_BF16 ? 1.0f : kscale[vec];
    }
}

/* FP8 only: the fetched pieces decoded into the stage (e4m3 and e4m3fnuz
 * values are exact in bf16). */
template <int KVT, int C>
static __device__ __forceinline__ void idx_tc_put(idx_tc_smem<C> &sm, int stage,
                                                  const uint4 (&raw)[idx_tc_geom<KVT, C>::raw_n])
{
    using G = idx_tc_geom<KVT, C>;
    if constexpr (KVT != KV_BF16) {
#pragma unroll
        for (int u = 0; u < G::per_thread; u++) {
            const int p = threadIdx.x + u * IDX_THREADS, e = p / G::pieces, piece = p % G::pieces;
            const uint32_t w[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
            uint32_t o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t b0 = (w[j / 2] >> (16 * (j % 2))) & 0xFFu, b1 = (w[j / 2] >> (16 * (j % 2) + 8)) & 0xFFu;
                o[j] = KVT == KV_FP8 ? pack_bf16(e4m3_to_f32(b0), e4m3_to_f32(b1))
                                     : pack_bf16(e4m3fnuz_to_f32(b0), e4m3fnuz_to_f32(b1));
            }
            uint4 *dst = (uint4 *)&sm.k[stage][e][piece * 16];
            dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
            dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
        }
    }
}

template <int KVT, int C>
__global__ __launch_bounds__(IDX_THREADS, 2) void index_topk_tc_kernel(
    int32_t *__restrict__ sel, const float *__restrict__ qI, const float *__restrict__ wI, const void *keys,
    const float *__restrict__ kscale, v4_step st, int h, int ratio, int epb, int topk, float *scratch,
    int64_t scratch_per_block)
{
    static_assert(C % 16 == 0 && C <= 128, "k16 steps; A fragments of at most 128 channels in registers");
    static_assert(IDX_TC_MAX_HEADS == IDX_TC_TE, "the queries are staged in a key stage");
    static_assert(IDX_WARPS == 8, "4 head quarters x 2 entry halves");
    __shared__ __align__(16) idx_tc_smem<C> sm;
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const int quarter = warp & 3, group = warp >> 2; /* heads 16 quarter.., entries 32 group.. of a tile */
    const float cs = 1.0f / sqrtf((float)C);
    float *scr = scratch + blockIdx.x * scratch_per_block;
    for (int t = blockIdx.x; t < st.n_tokens; t += gridDim.x) {
        int32_t *out = sel + (int64_t)t * topk;
        const int n_elig = (st.tok_pos[t] + 1) / ratio;
        if (n_elig <= topk) {
            for (int k = threadIdx.x; k < topk; k += IDX_THREADS)
                out[k] = k < n_elig ? k : -1;
            continue;
        }
        const int32_t *bt = st.block_table + (int64_t)st.tok_seq[t] * st.max_blocks;
        __syncthreads(); /* the previous token is done with shared memory and scratch */
        for (int i = threadIdx.x; i < IDX_TC_MAX_HEADS * C / 4; i += IDX_THREADS) {
            const int hh = 4 * i / C, c = 4 * i % C;
            const float4 v = hh < h ? *(const float4 *)(qI + ((int64_t)t * h + hh) * C + c) : make_float4(0, 0, 0, 0);
            *(uint2 *)&sm.k[1][hh][c] = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
        }
        /* this thread's rows of D: heads 16 quarter + g and + g + 8 */
        float wr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int hh = 16 * quarter + lane / 4 + 8 * r;
            wr[r] = hh < h ? wI[(int64_t)t * h + hh] * cs : 0.0f;
        }
        uint4 raw[idx_tc_geom<KVT, C>::raw_n];
        idx_tc_fetch<KVT, C>(sm, 0, raw, keys, kscale, bt, 0, n_elig, epb);
        tc_commit();
        idx_tc_put<KVT, C>(sm, 0, raw);
        __syncthreads(); /* the queries are in k[1] */
        uint32_t a[C / 16][4];
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++)
            ldsm_x4(a[kk], &sm.k[1][16 * quarter + (lane & 7) + ((lane >> 3) & 1) * 8][kk * 16 + (lane >> 4) * 8]);
        __syncthreads(); /* every warp holds its fragments before k[1] takes keys */
        const int tiles = (n_elig + IDX_TC_TE - 1) / IDX_TC_TE;
        for (int j = 0; j < tiles; j++) {
            const int cur = j & 1;
            if (j + 1 < tiles)
                idx_tc_fetch<KVT, C>(sm, cur ^ 1, raw, keys, kscale, bt, (j + 1) * IDX_TC_TE, n_elig, epb);
            tc_commit();
            tc_wait<1>();
            __syncthreads(); /* tile j is in stage cur */
            float acc[4][4]; /* [n8 tile][fragment] */
#pragma unroll
            for (int n = 0; n < 4; n++)
                acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < C / 16; kk++)
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t b[4];
                    ldsm_x4(b, &sm.k[cur][32 * group + 16 * np + (lane >> 4) * 8 + (lane & 7)]
                                        [kk * 16 + ((lane >> 3) & 1) * 8]);
                    mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
                    mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
                }
            /* fragment f of n8 tile n: head row g + 8 (f / 2), entry column
             * 2 (lane % 4) + f % 2; v[2 n + c] sums the thread's two rows,
             * then over the quad rows g (lane bits 2..4) */
            float v[8];
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int c = 0; c < 2; c++)
                    v[2 * n + c] = fmaf(wr[1], fmaxf(acc[n][2 + c], 0.0f), wr[0] * fmaxf(acc[n][c], 0.0f));
            int idx = 0;
            warp_reduce_level<8, GPU_WARP / 2, 4>::run(v, lane, &idx);
            sm.part[quarter][32 * group + 8 * (idx / 2) + 2 * (lane & 3) + idx % 2] = v[0];
            if (j + 1 < tiles)
                idx_tc_put<KVT, C>(sm, cur ^ 1, raw);
            __syncthreads(); /* the four quarters' sums are in */
            if (threadIdx.x < IDX_TC_TE && j * IDX_TC_TE + threadIdx.x < n_elig) {
                const int e = threadIdx.x;
                const float sc = sm.kscale[cur][e];
                scr[j * IDX_TC_TE + e] =
                    sc > 0.0f ? (sm.part[0][e] + sm.part[1][e] + sm.part[2][e] + sm.part[3][e]) * sc : -INFINITY;
            }
        }
        __syncthreads(); /* the row of scores is written */
        idx_select_topk(out, scr, n_elig, topk, &sm.sel);
    }
}

/* Resident blocks a multiprocessor of index_topk_tc_kernel<KVT, C>. */
template <int KVT, int C> static int idx_tc_per_sm()
{
    int n = 0;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, index_topk_tc_kernel<KVT, C>, IDX_THREADS, 0) ==
                   cudaSuccess
               ? n
               : 0;
}

/* The persistent grid: as many blocks as are resident at once (a second
 * round would start only as the first finishes its tokens), at most the
 * scratch rows alloc_kv reserves (cb->idx_blocks). */
int cu_indexer_tc_init(cu_backend *cb, v4_err *err)
{
    const int per_sm[] = {idx_tc_per_sm<KV_BF16, 64>(),    idx_tc_per_sm<KV_BF16, 128>(),
                          idx_tc_per_sm<KV_FP8, 64>(),     idx_tc_per_sm<KV_FP8, 128>(),
                          idx_tc_per_sm<KV_FP8FNUZ, 64>(), idx_tc_per_sm<KV_FP8FNUZ, 128>()};
    int least = per_sm[0];
    for (size_t i = 1; i < sizeof per_sm / sizeof *per_sm; i++)
        least = per_sm[i] < least ? per_sm[i] : least;
    if (least < 1)
        return v4_errf(err, "cuda: the indexer's tensor-core kernel fits no multiprocessor");
    cb->idx_tc_blocks = least * cb->n_sm < cb->idx_blocks ? least * cb->n_sm : cb->idx_blocks;
    return 0;
}

template <int KVT, int C>
static void idx_tc_launch(cu_backend *cb, int32_t *sel, const float *qI, const float *wI, const void *keys,
                          const float *kscale, const v4_step *st, int n_heads, int ratio, int entries_per_block,
                          int topk)
{
    const int grid = st->n_tokens < cb->idx_tc_blocks ? st->n_tokens : cb->idx_tc_blocks;
    index_topk_tc_kernel<KVT, C><<<grid, IDX_THREADS, 0, cb->stream>>>(sel, qI, wI, keys, kscale, *st, n_heads,
                                                                      ratio, entries_per_block, topk,
                                                                      cb->idx_scratch,
                                                                      (int64_t)cb->idx_floats_per_block);
}

bool cu_index_topk_tc(cu_backend *cb, int32_t *sel, const float *qI, const float *wI, const void *keys,
                      const float *kscale, const v4_step *st, int n_heads, int head_dim, int ratio,
                      int entries_per_block, int topk)
{
    if (cb->kv_type == KV_F32 || n_heads > IDX_TC_MAX_HEADS || (head_dim != 64 && head_dim != 128) ||
        (uintptr_t)qI % 16 != 0 || (uintptr_t)keys % 16 != 0)
        return false;
#define IDX_TC_ARGS cb, sel, qI, wI, keys, kscale, st, n_heads, ratio, entries_per_block, topk
    switch (cb->kv_type) {
    case KV_BF16:
        head_dim == 64 ? idx_tc_launch<KV_BF16, 64>(IDX_TC_ARGS) : idx_tc_launch<KV_BF16, 128>(IDX_TC_ARGS);
        break;
    case KV_FP8:
        head_dim == 64 ? idx_tc_launch<KV_FP8, 64>(IDX_TC_ARGS) : idx_tc_launch<KV_FP8, 128>(IDX_TC_ARGS);
        break;
    default:
        head_dim == 64 ? idx_tc_launch<KV_FP8FNUZ, 64>(IDX_TC_ARGS) : idx_tc_launch<KV_FP8FNUZ, 128>(IDX_TC_ARGS);
        break;
    }
#undef IDX_TC_ARGS
    cu_launched(cb, "index_topk");
    return true;
}
