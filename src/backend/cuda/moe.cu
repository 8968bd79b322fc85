/* Mixture of experts on the GPU (MODEL.md 4.5), the contract of
 * src/backend/cpu/moe.c.
 *
 * Routing: one warp per token; learned layers pick the k best of
 * sqrtsoftplus(logit) + bias (ties to the lower expert id), hash layers read
 * tid2eid[tok_id]; the weights are normalised in choice order on one lane,
 * as the CPU does.
 *
 * Experts: a grouped GEMM that permutes the (token, choice) pairs to their
 * experts on the device, in the caller's scratch:
 *   count    per-expert pair counts (atomics);
 *   plan     one block: offsets (exclusive scan, in parallel) and a work
 *            list of (expert, tile of TT pairs), its length in device memory;
 *   scatter  pair ids into their expert's segment (atomics: order within an
 *            expert is arbitrary, each pair's result does not depend on it);
 *   up       per work item and a slice of the intermediate size: w1 and w3
 *            rows dequantized in registers (MXFP4/FP8/...), clamped SwiGLU
 *            (tensor-core path: x rounded to bf16 once, h stored as bf16);
 *   down     per work item and a slice of the output rows: w2, one output
 *            row per pair;
 *   combine  y[t] = sum_j w[t][j] * out[t*k + j] in choice order.
 * up and down run on the tensor cores (gemm_tc.cuh: 64 intermediate columns
 * of w1 and w3, or 128 rows of w2, against a tile of NT pairs; an expert's
 * weights are read once per step when its pairs fit one tile; MXFP4 tiles
 * of 64 pairs, prefill's, on wgmma with four warpgroups a block) unless the
 * backend was created with V4_CUDA_PLAIN=1, which selects the SIMT kernels
 * (8 columns / 16 rows per block, fp32 products).
 * Steps of a few tokens skip the permutation: gemv.cu's matrix-vector
 * kernels take each (token, choice) pair (fp32 activations), then combine.
 * The GEMM grids are sized by the worst case for n*k pairs (fixed per step
 * shape, so graphs capture them); blocks past the work list's length exit. */
#include "backend/cuda/cu_gemm.cuh"
#if GPU_HAS_MMA_SYNC
#include "backend/cuda/gemm_tc.cuh"
#endif

/* ---- routing ---- */

static __device__ __forceinline__ float sqrt_softplus(float x)
{
    const float sp = x > 20.0f ? x : log1pf(expf(x));
    return sqrtf(sp);
}

#define ROUTE_WARPS 4
#define ROUTE_PER (V4_MAX_EXPERTS / GPU_WARP) /* experts a lane scores */
static_assert(ROUTE_PER <= 32, "a lane's taken experts are the bits of one word");
static_assert(V4_MAX_ACTIVE <= 2 * GPU_WARP, "a lane forms at most two of a token's weights");

/* One warp per token. Every load is issued before its value is needed, so
 * a token costs a few round trips to memory: with one load per loop
 * iteration (each expert's score again in each of the k passes, the hash
 * table's entries one after the other, then each chosen weight) one token
 * took 6-8 us on an H100, four layers' worth per decode step. */
__global__ __launch_bounds__(ROUTE_WARPS * GPU_WARP) void moe_route_kernel(int32_t *ids, float *w, const float *logits,
                                                                     const float *bias, const void *tid2eid,
                                                                     int tid_i64, int64_t tid_cols,
                                                                     const int32_t *tok_id, int n, int E, int k,
                                                                     float route_scale)
{
    __shared__ int32_t chosen[ROUTE_WARPS][V4_MAX_ACTIVE];
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const int64_t t = (int64_t)blockIdx.x * ROUTE_WARPS + warp;
    if (t >= n)
        return;
    const float *l = logits + t * E;
    int32_t *id = chosen[warp];
    if (bias) {
        /* lane l scores experts l, l + GPU_WARP, ... once, into registers */
        float sv[ROUTE_PER];
#pragma unroll
        for (int i = 0; i < ROUTE_PER; i++) {
            const int e = lane + i * GPU_WARP;
            sv[i] = e < E ? sqrt_softplus(l[e]) + bias[e] : 0.0f;
        }
        uint32_t taken = 0; /* bit i: expert lane + i * GPU_WARP is chosen */
        for (int j = 0; j < k; j++) {
            float bv = -INFINITY;
            int be = -1;
#pragma unroll
            for (int i = 0; i < ROUTE_PER; i++) {
                const int e = lane + i * GPU_WARP;
                if (e < E && !((taken >> i) & 1u) && (be < 0 || sv[i] > bv)) /* ascending ids: the first max wins */
                    bv = sv[i], be = e;
            }
#pragma unroll
            for (int o = GPU_WARP / 2; o > 0; o >>= 1) {
                const float ov = gpu_shfl_xor(bv, o);
                const int oe = gpu_shfl_xor(be, o);
                if (oe >= 0 && (be < 0 || ov > bv || (ov == bv && oe < be)))
                    bv = ov, be = oe;
            }
            if (be % GPU_WARP == lane) /* be >= 0: k <= E */
                taken |= 1u << (be / GPU_WARP);
            if (lane == 0)
                id[j] = be;
        }
    } else {
        const int64_t tok = tok_id[t];
        for (int j = lane; j < k; j += GPU_WARP) {
            const int64_t e = tid_i64 ? ((const int64_t *)tid2eid)[tok * tid_cols + j]
                                      : ((const int32_t *)tid2eid)[tok * tid_cols + j];
            id[j] = e < 0 || e >= E ? 0 : (int32_t)e; /* validated at load; never read out of bounds */
        }
    }
    gpu_syncwarp();
    /* lane l forms choices l and l + GPU_WARP; every lane adds them in
     * choice order, as the CPU reference does */
    const float wt0 = lane < k ? sqrt_softplus(l[id[lane]]) : 0.0f;
    const float wt1 = lane + GPU_WARP < k ? sqrt_softplus(l[id[lane + GPU_WARP]]) : 0.0f;
    float sum = 0;
    for (int j = 0; j < k; j++)
        sum += gpu_shfl(j < GPU_WARP ? wt0 : wt1, j % GPU_WARP);
    for (int j = lane; j < k; j += GPU_WARP) {
        ids[t * k + j] = id[j];
        w[t * k + j] = (j < GPU_WARP ? wt0 : wt1) / (sum + 1e-20f) * route_scale;
    }
}

extern "C" void cu_moe_route(v4_backend *be, int32_t *ids, float *w, const float *logits, const float *bias,
                             const v4_mat *tid2eid, const v4_step *st, int n_experts, int k, float route_scale)
{
    cu_backend *cb = cu_of(be);
    if (n_experts < 1 || n_experts > V4_MAX_EXPERTS || k < 1 || k > V4_MAX_ACTIVE || k > n_experts ||
        (!bias && (!tid2eid || tid2eid->cols < k))) {
        cu_fail(cb, "moe_route: unsupported routing (%d experts, top %d)", n_experts, k);
        return;
    }
    cb->moe_n_experts = n_experts;
    const int n = st->n_tokens;
    if (n <= 0)
        return;
    moe_route_kernel<<<(n + ROUTE_WARPS - 1) / ROUTE_WARPS, ROUTE_WARPS * GPU_WARP, 0, cb->stream>>>(
        ids, w, logits, bias, bias ? NULL : tid2eid->data, !bias && tid2eid->dtype == DT_I64,
        bias ? 0 : tid2eid->cols, st->tok_id, n, n_experts, k, route_scale);
    cu_launched(cb, "moe_route");
}

/* ---- experts ---- */

/* Scratch layout (ints, then floats 16-byte aligned). */
typedef struct moe_plan {
    int *counts, *offsets, *cursor, *n_work, *work, *perm;
    float *h, *out;
    int64_t max_work;
} moe_plan;

static int64_t round4(int64_t v) { return (v + 3) & ~(int64_t)3; }

/* Lays out the plan in `scratch`; returns the floats it needs. */
static int64_t moe_layout(float *scratch, int64_t pairs, int E, int tt, int64_t D, int64_t I, moe_plan *p)
{
    p->max_work = pairs / tt + (pairs < E ? pairs : E) + 1;
    int64_t off = 0;
    int *base = (int *)scratch;
    p->counts = base + off, off += E;
    p->offsets = base + off, off += E + 1;
    p->cursor = base + off, off += E;
    p->n_work = base + off, off += 1;
    p->work = base + off, off += 2 * p->max_work;
    p->perm = base + off, off += pairs;
    off = round4(off);
    p->h = scratch + off, off += pairs * I;
    p->out = scratch + off, off += pairs * D;
    return off;
}

__global__ void moe_count_kernel(const int32_t *ids, int64_t pairs, int E, int *counts)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < pairs; i += (int64_t)gridDim.x * blockDim.x) {
        const int e = ids[i];
        if (e >= 0 && e < E)
            atomicAdd(&counts[e], 1);
    }
}

/* Exclusive prefix sums of the pair counts (offsets) and of the tiles per
 * expert (the work list), MOE_PLAN_THREADS experts at a time: one scan in
 * shared memory per chunk instead of a serial loop over E, whose dependent
 * loads cost ~0.3 us each (E = 256: tens of microseconds a layer). */
#define MOE_PLAN_THREADS 256

__global__ __launch_bounds__(MOE_PLAN_THREADS) void moe_plan_kernel(const int *counts, int E, int tt, int *offsets,
                                                                    int *n_work, int *work)
{
    __shared__ int toff[V4_MAX_EXPERTS + 1];
    __shared__ int sc[MOE_PLAN_THREADS], sw[MOE_PLAN_THREADS];
    const int i = threadIdx.x;
    int carry_c = 0, carry_w = 0;
    for (int base = 0; base < E; base += MOE_PLAN_THREADS) {
        const int e = base + i;
        const int c = e < E ? counts[e] : 0, w = (c + tt - 1) / tt;
        sc[i] = c, sw[i] = w;
        __syncthreads();
        for (int d = 1; d < MOE_PLAN_THREADS; d <<= 1) { /* inclusive scan */
            const int ac = i >= d ? sc[i - d] : 0, aw = i >= d ? sw[i - d] : 0;
            __syncthreads();
            sc[i] += ac, sw[i] += aw;
            __syncthreads();
        }
        if (e < E) {
            offsets[e] = carry_c + sc[i] - c;
            toff[e] = carry_w + sw[i] - w;
        }
        carry_c += sc[MOE_PLAN_THREADS - 1], carry_w += sw[MOE_PLAN_THREADS - 1];
        __syncthreads(); /* every thread has read the totals before the next chunk */
    }
    if (i == 0) {
        offsets[E] = carry_c;
        toff[E] = carry_w;
        *n_work = carry_w;
    }
    __syncthreads();
    for (int e = i; e < E; e += MOE_PLAN_THREADS)
        for (int t = 0; toff[e] + t < toff[e + 1]; t++) {
            work[2 * (toff[e] + t)] = e;
            work[2 * (toff[e] + t) + 1] = t;
        }
}

__global__ void moe_scatter_kernel(const int32_t *ids, int64_t pairs, int E, const int *offsets, int *cursor,
                                   int *perm)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < pairs; i += (int64_t)gridDim.x * blockDim.x) {
        const int e = ids[i];
        if (e >= 0 && e < E)
            perm[offsets[e] + atomicAdd(&cursor[e], 1)] = (int)i;
    }
}

/* The work item's pairs: xrows[t] = row of pair t of the tile, NULL past the
 * expert's count; returns false when the block has no work item. The work
 * item is grid y and the block of rows grid x, so the blocks that run
 * together share a few tiles' x rows (and an expert's weights), which stay
 * in L2: with x fastest, a tile's rows came back for each block of weight
 * rows only after every other tile's had passed (at 2048 tokens a step
 * the tiles' x rows are 100 MB, twice an H100's L2). */
template <int TT, typename T>
static __device__ __forceinline__ bool moe_tile(const moe_plan &p, const T *x, int64_t ldx, int k, bool by_token,
                                                int *e_out, int64_t *slot0, int *cnt, const T **xrows)
{
    const int w = blockIdx.y;
    if (w >= *p.n_work)
        return false;
    const int e = p.work[2 * w], tile = p.work[2 * w + 1];
    const int64_t s0 = (int64_t)p.offsets[e] + (int64_t)tile * TT;
    const int64_t c = (int64_t)p.offsets[e + 1] - s0;
    *e_out = e;
    *slot0 = s0;
    *cnt = c < TT ? (int)c : TT;
    if (threadIdx.x < TT) {
        const int tt = threadIdx.x;
        const T *r = NULL;
        if (tt < *cnt) {
            const int64_t slot = s0 + tt;
            r = by_token ? x + (int64_t)(p.perm[slot] / k) * ldx : x + slot * ldx;
        }
        xrows[tt] = r;
    }
    return true;
}

/* h[slot][j] = swiglu(w1[e][j] . x, w3[e][j] . x); grid (I / GEMM_WARPS, work) */
template <int FMT, int TT>
__global__ __launch_bounds__(GEMM_THREADS) void moe_up_kernel(moe_plan p, const cu_wdesc *tab, int E, const float *x,
                                                              int k, int64_t D, int64_t I, float limit, bool vec)
{
    __shared__ __align__(16) float xs[TT * GEMM_KC];
    __shared__ const float *xrows[TT];
    int e, cnt;
    int64_t slot0;
    if (!moe_tile<TT>(p, x, D, k, true, &e, &slot0, &cnt, xrows))
        return; /* uniform: the whole block has no work item */
    const int warp = gpu_warp_id(), lane = gpu_lane();
    const int64_t j = (int64_t)blockIdx.x * GEMM_WARPS + warp;
    const bool v = j < I;
    float acc[2][TT];
#pragma unroll
    for (int t = 0; t < TT; t++)
        acc[0][t] = acc[1][t] = 0.0f;
    tile_gemm<FMT, TT>(tab[e], j, v, tab[2 * E + e], j, v, D, vec, xrows, xs, acc);
#pragma unroll
    for (int t = 0; t < TT; t++) {
        const float g = warp_sum(acc[0][t]), u = warp_sum(acc[1][t]);
        if (lane == 0 && v && t < cnt) {
            const float gv = fminf(g, limit), uv = fminf(fmaxf(u, -limit), limit);
            p.h[(slot0 + t) * I + j] = gv / (1.0f + expf(-gv)) * uv;
        }
    }
}

/* out[pair][o] = w2[e][o] . h[slot]; grid (D / (2 * GEMM_WARPS), work) */
template <int FMT, int TT>
__global__ __launch_bounds__(GEMM_THREADS) void moe_down_kernel(moe_plan p, const cu_wdesc *tab, int E, int64_t D,
                                                                int64_t I, bool vec)
{
    __shared__ __align__(16) float xs[TT * GEMM_KC];
    __shared__ const float *xrows[TT];
    int e, cnt;
    int64_t slot0;
    if (!moe_tile<TT>(p, p.h, I, 1, false, &e, &slot0, &cnt, xrows))
        return;
    const int warp = gpu_warp_id(), lane = gpu_lane();
    const int64_t o = (int64_t)blockIdx.x * 2 * GEMM_WARPS + warp * 2;
    const bool v0 = o < D, v1 = o + 1 < D;
    float acc[2][TT];
#pragma unroll
    for (int t = 0; t < TT; t++)
        acc[0][t] = acc[1][t] = 0.0f;
    tile_gemm<FMT, TT>(tab[E + e], o, v0, tab[E + e], o + 1, v1, I, vec, xrows, xs, acc);
#pragma unroll
    for (int t = 0; t < TT; t++) {
        const float s0 = warp_sum(acc[0][t]), s1 = warp_sum(acc[1][t]);
        if (lane == 0 && t < cnt) {
            const int64_t pair = p.perm[slot0 + t];
            if (v0)
                p.out[pair * D + o] = s0;
            if (v1)
                p.out[pair * D + o + 1] = s1;
        }
    }
}

#if GPU_HAS_MMA_SYNC
/* Blocks a multiprocessor must hold: four up to 16 pairs a tile (registers
 * capped at 128, none spilled with bf16 activations; 2 weight stages in
 * shared memory, tc_geom), so 16 warps issue instead of 8. Nsight Compute
 * at 256 tokens with 2 blocks (222 registers, 4 stages): 0.55 eligible
 * warps a scheduler, DRAM at 52%; gpu-tests' real-size MoE at 256 tokens
 * (fp32 activations then): 2.27 ms with 2 blocks, 1.95 with 3 (3 stages),
 * 1.81 with 4; five blocks at 8 pairs (96 registers) measured slower. */
#define MOE_TC_MIN_BLOCKS(NT) ((NT) <= 16 ? 4 : 1)

/* Tiles of 64 pairs multiply with wgmma (gemm_tc.cuh, WG): prefill's
 * tiles, where an expert has more than 32 pairs on average. Their x and h
 * rows are stored with each 256-column stage in tc_wg_perm order. */
#define MOE_WG(NT) ((NT) == 64)

/* Threads and weight rows of a block of tile NT (four warpgroups with wgmma). */
#define MOE_GROUPS(NT) (tc_geom<CW_MXFP4, NT, 1, MOE_WG(NT)>::GROUPS)
#define MOE_THREADS(NT) (TC_THREADS * MOE_GROUPS(NT))

/* Column j of an x or h row as the kernels of tile NT store it. */
template <int NT> static __device__ __forceinline__ int64_t moe_col(int64_t j)
{
    return MOE_WG(NT) ? (j & ~(int64_t)255) | tc_wg_perm((int)(j & 255)) : j;
}

/* x rounded to bf16 (as cu_to_bf16) in the WG order; count a multiple of 256. */
__global__ void moe_to_bf16_wg_kernel(uint16_t *__restrict__ dst, const float *__restrict__ src, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        dst[moe_col<64>(i)] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i]));
}

/* Tensor-core up: h[slot][j] = swiglu(w1[e][j] . x, w3[e][j] . x) for the
 * block's 64 columns j (slots 0..63 read w1, 64..127 w3: a thread holds g
 * and u of the same (j, pair); 64 more for each further warpgroup of a
 * wgmma block); grid (I / (64 * MOE_GROUPS), work). x and h are bf16
 * (xb: the step's x rounded once; h as the down kernel reads it), which
 * halves what each block reads from L2 for its tokens (Nsight Compute at
 * 256 tokens with fp32 x: L2 at 91% of its throughput, DRAM at 68%). */
template <int FMT, int NT>
__global__ __launch_bounds__(MOE_THREADS(NT), MOE_TC_MIN_BLOCKS(NT)) void moe_up_tc_kernel(
    moe_plan p, const cu_wdesc *tab, int E, const uint16_t *xb, int k, int64_t D, int64_t I, float limit, bool wal,
    bool xal)
{
    typedef tc_geom<FMT, NT, 1, MOE_WG(NT)> G;
    extern __shared__ __align__(16) uint8_t smem[];
    const uint16_t **xrows = (const uint16_t **)(smem + G::XROWS_OFF);
    int e, cnt;
    int64_t slot0;
    if (!moe_tile<NT>(p, xb, D, k, true, &e, &slot0, &cnt, xrows))
        return; /* uniform: the whole block has no work item */
    typedef tc_core<FMT, NT, false, true, MOE_WG(NT)> core_t;
    tc_rows rs;
    rs.w[0] = tab[e];
    rs.w[1] = tab[2 * E + e];
    rs.base[0] = rs.base[1] = ((int64_t)blockIdx.x * G::GROUPS + core_t::grp()) * (TC_ROWS / 2);
    rs.end[0] = rs.end[1] = I;
    const core_t core = {smem, rs, (int)D, core_t::row_bytes(D), (int)(D / 32), wal, xal, xrows};
    float acc[TC_MT][NT / 8][4];
    if constexpr (MOE_WG(NT))
        core.run_wg(acc);
    else
        core.template run<1>(acc);
    uint16_t *h = (uint16_t *)p.h;
    const int warp = core_t::tid() >> 5, lane = threadIdx.x & 31, gr = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int64_t j = rs.base[0] + 16 * warp + gr + 8 * (i >> 1);
            const int t = nt * 8 + 2 * c + (i & 1);
            if (j < I && t < cnt) {
                const float gv = fminf(acc[0][nt][i], limit), uv = fminf(fmaxf(acc[1][nt][i], -limit), limit);
                h[(slot0 + t) * I + moe_col<NT>(j)] =
                    __bfloat16_as_ushort(__float2bfloat16_rn(gv / (1.0f + expf(-gv)) * uv));
            }
        }
}

/* Tensor-core down: out[pair][o] = w2[e][o] . h[slot] (h in bf16) for the
 * block's 128 rows o (per warpgroup); grid (D / (128 * MOE_GROUPS), work). */
template <int FMT, int NT>
__global__ __launch_bounds__(MOE_THREADS(NT), MOE_TC_MIN_BLOCKS(NT)) void moe_down_tc_kernel(
    moe_plan p, const cu_wdesc *tab, int E, int64_t D, int64_t I, bool wal, bool xal)
{
    typedef tc_geom<FMT, NT, 1, MOE_WG(NT)> G;
    extern __shared__ __align__(16) uint8_t smem[];
    const uint16_t **xrows = (const uint16_t **)(smem + G::XROWS_OFF);
    int e, cnt;
    int64_t slot0;
    if (!moe_tile<NT>(p, (const uint16_t *)p.h, I, 1, false, &e, &slot0, &cnt, xrows))
        return;
    typedef tc_core<FMT, NT, false, true, MOE_WG(NT)> core_t;
    tc_rows rs;
    rs.w[0] = rs.w[1] = tab[E + e];
    rs.base[0] = ((int64_t)blockIdx.x * G::GROUPS + core_t::grp()) * TC_ROWS;
    rs.base[1] = rs.base[0] + TC_ROWS / 2;
    rs.end[0] = rs.end[1] = D;
    const core_t core = {smem, rs, (int)I, core_t::row_bytes(I), (int)(I / 32), wal, xal, xrows};
    float acc[TC_MT][NT / 8][4];
    if constexpr (MOE_WG(NT))
        core.run_wg(acc);
    else
        core.template run<1>(acc);
    const int warp = core_t::tid() >> 5, lane = threadIdx.x & 31, gr = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int t = nt * 8 + 2 * c + (i & 1);
            if (t >= cnt)
                continue;
            const int64_t pair = p.perm[slot0 + t];
#pragma unroll
            for (int tl = 0; tl < TC_MT; tl++) {
                const int64_t o = rs.base[tl] + 16 * warp + gr + 8 * (i >> 1);
                if (o < D)
                    p.out[pair * D + o] = acc[tl][nt][i];
            }
        }
}

/* Shared memory above 48 KB, once per kernel (the first call runs eagerly,
 * before any graph capture). */
template <typename K> static bool tc_smem_attr(cu_backend *cb, K kernel, int bytes, bool *done)
{
    if (*done)
        return true;
    if (!cu_check(cb, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
                  "moe tensor-core kernel shared memory"))
        return false;
    *done = true;
    return true;
}

template <int FMT, int NT>
static void launch_up_tc(cu_backend *cb, dim3 grid, const moe_plan &p, const cu_wdesc *tab, int E, const uint16_t *xb,
                         int k, int64_t D, int64_t I, float limit, bool wal, bool xal)
{
    static bool done;
    constexpr int smem = tc_geom<FMT, NT, 1, MOE_WG(NT)>::SMEM;
    if (!tc_smem_attr(cb, moe_up_tc_kernel<FMT, NT>, smem, &done))
        return;
    moe_up_tc_kernel<FMT, NT><<<grid, MOE_THREADS(NT), smem, cb->stream>>>(p, tab, E, xb, k, D, I, limit, wal, xal);
}

template <int FMT, int NT>
static void launch_down_tc(cu_backend *cb, dim3 grid, const moe_plan &p, const cu_wdesc *tab, int E, int64_t D,
                           int64_t I, bool wal, bool xal)
{
    static bool done;
    constexpr int smem = tc_geom<FMT, NT, 1, MOE_WG(NT)>::SMEM;
    if (!tc_smem_attr(cb, moe_down_tc_kernel<FMT, NT>, smem, &done))
        return;
    moe_down_tc_kernel<FMT, NT><<<grid, MOE_THREADS(NT), smem, cb->stream>>>(p, tab, E, D, I, wal, xal);
}

/* Whether every matrix of the table can be copied with cp.async: 16-byte
 * aligned rows (4-byte aligned MXFP4 scale rows). */
static bool table_aligned(const cu_expert_table *t, int E)
{
    for (int j = 0; j < 3 * E; j++) {
        const cu_wdesc *d = &t->host[j];
        const int fmt = j / E == 1 ? t->fmt2 : t->fmt13;
        const int64_t half_bytes = fmt == CW_MXFP4 ? 1 : fmt == CW_F32 ? 8 : fmt == CW_FP8 || fmt == CW_FP8FNUZ ? 2 : 4;
        if ((uintptr_t)d->data % 16 != 0 || d->cols * half_bytes / 2 % 16 != 0)
            return false;
        if (fmt == CW_MXFP4 && ((uintptr_t)d->scale % 4 != 0 || (d->cols / 32) % 4 != 0))
            return false;
    }
    return true;
}

#endif /* GPU_HAS_MMA_SYNC */

/* y[t][i] = sum_j w[t][j] * out[t*k+j][i] over valid choices, in order. */
__global__ void moe_combine_kernel(float *y, const float *out, const int32_t *ids, const float *w, int n, int k,
                                   int E, int64_t D)
{
    const int64_t total = (int64_t)n * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / D, c = i % D;
        float v = 0.0f;
        for (int j = 0; j < k; j++) {
            const int64_t pr = t * k + j;
            const int e = ids[pr];
            if (e >= 0 && e < E)
                v += w[pr] * out[pr * D + c];
        }
        y[i] = v;
    }
}

extern "C" void cu_moe_experts(v4_backend *be, float *y, const float *x, const int32_t *ids, const float *w, int n,
                               int k, const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, float limit,
                               float *scratch)
{
    cu_backend *cb = cu_of(be);
    const int E = cb->moe_n_experts;
    if (E < 1) {
        cu_fail(cb, "moe_experts: no expert count yet (moe_route passes it; call it first)");
        return;
    }
    if (n <= 0)
        return;
    const cu_expert_table *tab = cu_experts(cb, w1, w2, w3, E);
    if (!tab)
        return;
    const int64_t D = w1[0].cols, I = w1[0].rows, pairs = (int64_t)n * k;
    if (w2[0].rows != D || w2[0].cols != I || w3[0].rows != I || w3[0].cols != D) {
        cu_fail(cb, "moe_experts: w1/w2/w3 shapes disagree ('%s')", w1[0].name ? w1[0].name : "?");
        return;
    }
    if (!cb->plain) { /* a few tokens: matrix-vector products per (token, choice) pair (gemv.cu) */
        moe_plan pv;
        if (moe_layout(scratch, pairs, E, 1, D, I, &pv) <= moe_scratch_floats(n, k, D, I, E) &&
            cu_moe_gemv(cb, pv.h, pv.out, x, ids, tab, E, k, n, D, I, limit)) {
            moe_combine_kernel<<<cu_grid(n * D, 256), 256, 0, cb->stream>>>(y, pv.out, ids, w, n, k, E, D);
            cu_launched(cb, "moe_combine");
            return;
        }
    }
    const bool tc = !cb->plain;
    /* pairs per tile: fast path 8/16/32 from the mean pairs per expert; plain
     * 1/4/16. Tiles of 8 up to 8 pairs an expert on average: an expert with
     * more takes two tiles, run side by side (adjacent work items), so its
     * second read of the weights mostly hits L2, and the smaller tile keeps 4
     * blocks a multiprocessor (H100, 4-layer bench: c=128 from 14,048 to
     * 14,901 tok/s, c=256 from 23,499 to 24,206 against tiles of 16).
     * MXFP4 experts with more than 32 pairs on average (prefill) take tiles
     * of 64 on wgmma: the checkpoint's format, the only one instantiated so,
     * with whole 256-column stages and 16-byte aligned rows (copied with
     * cp.async; x and h start at 16-byte offsets of the scratch). */
#if GPU_HAS_MMA_SYNC
    const bool wal = tc && table_aligned(tab, E);
#else
    const bool wal = false;
#endif
    const bool wide = wal && tab->fmt13 == CW_MXFP4 && tab->fmt2 == CW_MXFP4 && pairs > 32 * (int64_t)E &&
                      D % 256 == 0 && I % 256 == 0 && (uintptr_t)scratch % 16 == 0;
    const int tt = wide ? 64
                   : tc ? (pairs <= 8 * (int64_t)E ? 8 : pairs <= 12 * (int64_t)E ? 16 : 32)
                        : n == 1 ? 1 : pairs <= 4 * (int64_t)E ? 4 : 16;
    moe_plan p;
    const int64_t need = moe_layout(scratch, pairs, E, tt, D, I, &p);
    if (need > moe_scratch_floats(n, k, D, I, E)) {
        cu_fail(cb, "moe_experts: scratch layout needs %lld floats, more than moe_scratch_floats gives",
                (long long)need);
        return;
    }
    if (p.max_work > 65535) { /* grid y */
        cu_fail(cb, "moe_experts: %lld work items exceed a grid's 65535 rows (take fewer tokens a step)",
                (long long)p.max_work);
        return;
    }
    /* counts and cursor are adjacent around offsets: clear counts..cursor */
    if (!cu_check(cb, cudaMemsetAsync(p.counts, 0, (size_t)(3 * E + 1) * sizeof(int), cb->stream), "moe memset"))
        return;
    const unsigned pg = cu_grid(pairs, 256);
    moe_count_kernel<<<pg, 256, 0, cb->stream>>>(ids, pairs, E, p.counts);
    cu_launched(cb, "moe_count");
    moe_plan_kernel<<<1, MOE_PLAN_THREADS, 0, cb->stream>>>(p.counts, E, tt, p.offsets, p.n_work, p.work);
    cu_launched(cb, "moe_plan");
    moe_scatter_kernel<<<pg, 256, 0, cb->stream>>>(ids, pairs, E, p.offsets, p.cursor, p.perm);
    cu_launched(cb, "moe_scatter");
#if GPU_HAS_MMA_SYNC
    if (tc) {
        /* x in bf16 where out will go: out is written only by the down kernel */
        uint16_t *xb = (uint16_t *)p.out;
        const bool xal_up = (uintptr_t)xb % 16 == 0 && D % 8 == 0, xal_down = (uintptr_t)p.h % 16 == 0 && I % 8 == 0;
        if (wide) {
            moe_to_bf16_wg_kernel<<<cu_grid(n * D, 256), 256, 0, cb->stream>>>(xb, x, (int64_t)n * D);
            cu_launched(cb, "moe_to_bf16_wg");
        } else {
            cu_to_bf16(cb, xb, x, (int64_t)n * D);
        }
        /* blocks of `groups` warpgroups; the last may run past I or D (its rows past them read as zeros) */
        const int64_t groups = wide ? MOE_GROUPS(64) : 1;
        const int64_t up_rows = TC_ROWS / 2 * groups, down_rows = TC_ROWS * groups;
        const dim3 gup((unsigned)((I + up_rows - 1) / up_rows), (unsigned)p.max_work);
        const dim3 gdown((unsigned)((D + down_rows - 1) / down_rows), (unsigned)p.max_work);
        if (wide) {
            launch_up_tc<CW_MXFP4, 64>(cb, gup, p, tab->dev, E, xb, k, D, I, limit, wal, xal_up);
            cu_launched(cb, "moe_up_wg");
            launch_down_tc<CW_MXFP4, 64>(cb, gdown, p, tab->dev, E, D, I, wal, xal_down);
            cu_launched(cb, "moe_down_wg");
        } else {
            CU_FMT_DISPATCH(tab->fmt13, TC_NT_DISPATCH(tt, (launch_up_tc<FMT, NT>(cb, gup, p, tab->dev, E, xb, k, D,
                                                                                  I, limit, wal, xal_up))));
            cu_launched(cb, "moe_up_tc");
            CU_FMT_DISPATCH(tab->fmt2, TC_NT_DISPATCH(tt, (launch_down_tc<FMT, NT>(cb, gdown, p, tab->dev, E, D, I,
                                                                                   wal, xal_down))));
            cu_launched(cb, "moe_down_tc");
        }
    } else
#endif
    {
        const dim3 gup((unsigned)((I + GEMM_WARPS - 1) / GEMM_WARPS), (unsigned)p.max_work);
        const dim3 gdown((unsigned)((D + 2 * GEMM_WARPS - 1) / (2 * GEMM_WARPS)), (unsigned)p.max_work);
        const bool vec_up = D % 4 == 0, vec_down = I % 4 == 0;
        CU_FMT_DISPATCH(tab->fmt13,
                        CU_TT_DISPATCH(tt, (moe_up_kernel<FMT, TT><<<gup, GEMM_THREADS, 0, cb->stream>>>(
                                               p, tab->dev, E, x, k, D, I, limit, vec_up))));
        cu_launched(cb, "moe_up");
        CU_FMT_DISPATCH(tab->fmt2,
                        CU_TT_DISPATCH(tt, (moe_down_kernel<FMT, TT><<<gdown, GEMM_THREADS, 0, cb->stream>>>(
                                               p, tab->dev, E, D, I, vec_down))));
        cu_launched(cb, "moe_down");
    }
    moe_combine_kernel<<<cu_grid(n * D, 256), 256, 0, cb->stream>>>(y, p.out, ids, w, n, k, E, D);
    cu_launched(cb, "moe_combine");
}
