/* Shared by the lightning indexer's kernels (indexer.cu: the plain SIMT
 * scores; indexer_tc.cu: scores on tensor cores): blocks of IDX_THREADS
 * threads, and the selection that both run on a token's row of scores. */
#ifndef V4_BACKEND_CUDA_INDEXER_CUH
#define V4_BACKEND_CUDA_INDEXER_CUH

#include "backend/cuda/cu_device.cuh"

#define IDX_THREADS 256
#define IDX_WARPS (IDX_THREADS / GPU_WARP)

/* Exclusive prefix sum of v over the block; *total gets the sum. */
static __device__ __forceinline__ int block_scan_excl(int v, int *wsum, int *total)
{
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const int x = warp_scan_incl(v);
    __syncthreads(); /* wsum may still be read by a previous call */
    if (lane == GPU_WARP - 1)
        wsum[warp] = x;
    __syncthreads();
    int before = 0, all = 0;
    for (int w = 0; w < IDX_WARPS; w++) {
        const int s = wsum[w];
        before += w < warp ? s : 0;
        all += s;
    }
    *total = all;
    return before + x - v;
}

typedef struct idx_select_smem {
    unsigned hist[256];
    unsigned prefix, k;
    int wsum[IDX_WARPS];
} idx_select_smem;

/* Warp 0 of the radix select: the bin b (of pass `shift`) holding the
 * kk-th largest candidate, i.e. the largest b >= 1 whose bins b..255 count
 * at least kk (else 0), and how many of b's candidates are still needed.
 * Lane l counts IDX_BPL bins down from 255 - IDX_BPL l and a warp scan
 * finds the lane where the count is reached: one thread walking the bins
 * waited on up to 256 shared-memory loads in turn. */
#define IDX_BPL (256 / GPU_WARP)
#define IDX_SEL_U 4 /* scores a thread of the histogram loads at once */
static __device__ __forceinline__ void idx_pick_bin(idx_select_smem *ss, unsigned prefix, unsigned kk, int shift)
{
    const int lane = gpu_lane();
    unsigned c[IDX_BPL], sum = 0;
#pragma unroll
    for (int j = 0; j < IDX_BPL; j++)
        sum += (c[j] = ss->hist[255 - IDX_BPL * lane - j]);
    const unsigned incl = warp_scan_incl(sum);
    const unsigned long long reached = gpu_ballot(incl >= kk);
    const int at = reached ? __ffsll((long long)reached) - 1 : GPU_WARP - 1;
    if (lane != at)
        return;
    unsigned cum = incl - sum;
    int b = 255 - IDX_BPL * lane;
    for (int j = 0; j < IDX_BPL && b > 0; j++, b--) {
        if (cum + c[j] >= kk)
            break;
        cum += c[j];
    }
    ss->prefix = prefix | ((unsigned)b << shift);
    ss->k = kk - cum;
}

/* out[0..topk) = the topk largest of scr[0..n) (n > topk) in ascending
 * index order, ties at the threshold taken lowest index first (the CPU's
 * rule). scr is written by this block before the call and visible to it
 * after a barrier. Every thread of the block calls it.
 *  1. a 4-pass radix select (8 bits a pass) finds the topk-th largest
 *     score T and how many entries equal to T are needed;
 *  2. an ordered compaction (block scans over ascending indices) writes
 *     the entries above T and the lowest-indexed ones equal to T. */
static __device__ void idx_select_topk(int32_t *__restrict__ out, const float *scr, int64_t n, int topk,
                                       idx_select_smem *ss)
{
    static_assert(IDX_THREADS == 256, "a histogram bin a thread");
    unsigned prefix = 0, mask = 0, kk = (unsigned)topk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        ss->hist[threadIdx.x] = 0;
        __syncthreads();
        for (int64_t i0 = threadIdx.x; i0 < n; i0 += IDX_SEL_U * IDX_THREADS) {
            unsigned u[IDX_SEL_U]; /* loaded together, then counted */
#pragma unroll
            for (int j = 0; j < IDX_SEL_U; j++) {
                const int64_t i = i0 + j * IDX_THREADS;
                u[j] = i < n ? ordered_key(scr[i]) : 0u;
            }
#pragma unroll
            for (int j = 0; j < IDX_SEL_U; j++)
                if (i0 + j * IDX_THREADS < n && (u[j] & mask) == prefix)
                    atomicAdd(&ss->hist[(u[j] >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (gpu_warp_id() == 0)
            idx_pick_bin(ss, prefix, kk, shift);
        __syncthreads();
        prefix = ss->prefix;
        kk = ss->k;
        mask |= 255u << shift;
    }
    const unsigned T = prefix;
    int written = 0, eq_seen = 0;
    for (int64_t base = 0; base < n && written < topk; base += IDX_THREADS) {
        const int64_t i = base + threadIdx.x;
        const unsigned u = i < n ? ordered_key(scr[i]) : 0u;
        const int gt = i < n && u > T, eq = i < n && u == T;
        int eq_total, keep_total;
        const int eq_before = block_scan_excl(eq, ss->wsum, &eq_total);
        const int keep = gt || (eq && eq_seen + eq_before < (int)kk);
        const int pos = block_scan_excl(keep, ss->wsum, &keep_total);
        if (keep && written + pos < topk)
            out[written + pos] = (int32_t)i;
        written += keep_total;
        eq_seen += eq_total;
    }
}

#if GPU_HAS_MMA_SYNC
/* The tensor-core path (indexer_tc.cu) for bf16 and FP8 keys, at most
 * IDX_TC_MAX_HEADS heads of 64 or 128 channels: false (nothing launched)
 * for any other KV type or shape. */
#define IDX_TC_MAX_HEADS 64
int cu_indexer_tc_init(cu_backend *cb, v4_err *err);
bool cu_index_topk_tc(cu_backend *cb, int32_t *sel, const float *qI, const float *wI, const void *keys,
                      const float *kscale, const v4_step *st, int n_heads, int head_dim, int ratio,
                      int entries_per_block, int topk);
#endif

#endif
