/* mHC hyper-connections on the GPU (MODEL.md 4.1, 4.7).
 *
 * hc_pre / hc_head in two kernels. The mixing vector fn @ X_t is a small
 * matrix product (24 rows of ns*D = 16384 columns for the real model): one
 * block per token would stream fn with one SM and wait on memory latency,
 * so hc_mix_kernel splits the columns into slices of HC_SLICE over a grid
 * of (slices, token tiles); each block stages its slice of fn and of HC_TT
 * tokens' states in shared memory, and its warps form the partial dot
 * products of (row, token) tiles and the partial sums of squares from
 * registers (hc_mix_kernel's comment says why). hc_pre_kernel then
 * adds a token's partials (a warp per row, in double), forms pre, post and
 * the Sinkhorn-normalised comb exactly as the CPU reference (one lane per
 * matrix element, every sum taken in the CPU's order), and writes
 * x = sum_s pre[s] X[s]. Steps of a few tokens (decode) form the partials
 * with hc_mix_small_kernel instead, from registers rather than shared
 * memory, and steps of HC_TT_WIDE_FROM tokens on with hc_mix_tc_kernel
 * (mhc_tc.cu, tensor cores) where it applies. In small steps a token's collapse is shared by
 * HC_SPLIT blocks, each of which forms the same mixing values (the same
 * operations, so the same bits) and writes its share of the D channels:
 * one block per token would leave decode's 4096 channels to one SM.
 * hc_post: one thread per (token, channel) holding that channel of every
 * stream in registers, so X is updated in place (four channels a thread
 * for the model's 4 streams). */
#include "backend/cuda/mhc.cuh"

#define HC_MAXS V4_MAX_STREAMS
#define HC_THREADS 256

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

#define HC_TT 16      /* tokens per block of the mixing product */
/* ... and from HC_TT_WIDE_FROM tokens on (prefill) twice as many, which
 * stage each slice of fn half as often (H100, 8K prefill in chunks of
 * 2048: hc_pre 7.84 -> 7.10 ms; 256-token decode 9.71 -> 9.66 ms a step; at 32
 * tokens the fewer blocks cost: 4.92 -> 4.96) */
#define HC_TT_WIDE_FROM 256
#define HC_SU 8              /* loads a thread of its staging has in flight */
#define HC_MAXROWS ((2 + HC_MAXS) * HC_MAXS)
#define HC_SPLIT 16            /* blocks sharing a token's collapse in small steps */
#define HC_WARPS (HC_THREADS / GPU_WARP)
#define HC_WARP_NS 5           /* most streams of sinkhorn_warp: ns * ns <= 32 lanes */
#define HC_RPW 4               /* mixing rows a warp takes at a time (loads in flight together) */
#define HC_SMALL_MAX_TOKENS 4  /* steps of at most this many tokens take hc_mix_small_kernel */
#define HC_V (HC_SLICE / (4 * GPU_WARP)) /* float4s of a slice's row per lane there */
#define HC_SPLIT_MAX_TOKENS 64 /* steps of more tokens fill the GPU with one block each */
#define HC_CU 4                /* channels a thread of the collapse loads at once */

/* part[t][slice][0..rows) = partial fn[r] . X_t over the slice's columns,
 * part[t][slice][rows] = partial sum of X_t^2. grid (slices, token tiles).
 * The block stages its slice of fn and of HC_TT tokens' states in shared
 * memory; then each warp takes items of the product: HC_IR rows x HC_IT
 * tokens (or the sums of squares of HC_IT tokens), lane l summing its
 * columns l, l + GPU_WARP, ... of each, and one reduce-scatter leaves each
 * lane one (row, token) total. A value loaded from shared memory feeds
 * HC_IT or HC_IR products: one thread per (row, token) walking all 256
 * columns read two for each and held the step at shared memory's rate (at
 * 256 tokens on an H100 the mHC pre op took 72 us a call in eager profiles,
 * 48 with these tiles, 16-byte staging and hc_collapse's batched loads). */
#define HC_IR 8                      /* rows of an item */
#define HC_IT 4                      /* tokens of an item */
#define HC_CPL (HC_SLICE / GPU_WARP) /* columns of the slice a lane takes */
static_assert(HC_TT % HC_IT == 0 && HC_IR * HC_IT <= GPU_WARP, "hc_mix items");

/* dst[r][c] (row stride HC_LD) = src[r * W + c] for the block's rows
 * r < nrows and columns c < HC_SLICE, zero from row `valid` or column
 * `cols` on; VEC: 16 bytes a load (W a multiple of 4, src 16-byte aligned).
 * Each thread's HC_SU loads are in flight together. */
template <bool VEC>
static __device__ __forceinline__ void hc_stage(float *__restrict__ dst, const float *__restrict__ src, int nrows,
                                                int valid, int64_t W, int cols)
{
    constexpr int E = VEC ? 4 : 1, PER = HC_SLICE / E; /* elements a load, loads a row */
    for (int i0 = threadIdx.x; i0 < nrows * PER; i0 += HC_SU * HC_THREADS) {
        float4 v[HC_SU];
#pragma unroll
        for (int u = 0; u < HC_SU; u++) {
            const int i = i0 + u * HC_THREADS, r = i / PER, c = E * (i % PER);
            const bool in = i < nrows * PER && r < valid && c < cols;
            if (VEC)
                v[u] = in ? *(const float4 *)(src + (int64_t)r * W + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            else
                v[u].x = in ? src[(int64_t)r * W + c] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < HC_SU; u++) {
            const int i = i0 + u * HC_THREADS, r = i / PER, c = E * (i % PER);
            if (i >= nrows * PER)
                break;
            if (VEC)
                *(float4 *)(dst + r * HC_LD + c) = v[u];
            else
                dst[r * HC_LD + c] = v[u].x;
        }
    }
}

template <int TT>
__global__ __launch_bounds__(HC_THREADS, 3) void hc_mix_kernel(float *__restrict__ part, const float *__restrict__ X,
                                                               const float *__restrict__ fn, int rows, int64_t W,
                                                               int n, bool vec)
{
    static_assert(TT % HC_IT == 0, "whole items of tokens");
    extern __shared__ __align__(16) float sm[];
    float *fs = sm;                      /* [rows][HC_LD] */
    float *xs = fs + (size_t)rows * HC_LD; /* [TT][HC_LD] */
    const int64_t c0 = (int64_t)blockIdx.x * HC_SLICE;
    const int t0 = blockIdx.y * TT;
    const int cols = W - c0 < HC_SLICE ? (int)(W - c0) : HC_SLICE;
    if (vec) {
        hc_stage<true>(fs, fn + c0, rows, rows, W, cols);
        hc_stage<true>(xs, X + (int64_t)t0 * W + c0, TT, n - t0, W, cols);
    } else {
        hc_stage<false>(fs, fn + c0, rows, rows, W, cols);
        hc_stage<false>(xs, X + (int64_t)t0 * W + c0, TT, n - t0, W, cols);
    }
    __syncthreads();
    const int lane = gpu_lane(), n_slices = gridDim.x;
    const int groups = (rows + HC_IR - 1) / HC_IR, tiles = TT / HC_IT;
    /* items: (row group, token group); row group `groups` is the sums of squares */
    for (int it = gpu_warp_id(); it < (groups + 1) * tiles; it += HC_WARPS) {
        const int g = it / tiles, tt0 = (it % tiles) * HC_IT;
        if (t0 + tt0 >= n)
            continue;
        float xv[HC_IT][HC_CPL];
#pragma unroll
        for (int j = 0; j < HC_IT; j++)
#pragma unroll
            for (int c = 0; c < HC_CPL; c++)
                xv[j][c] = xs[(tt0 + j) * HC_LD + lane + c * GPU_WARP];
        float *out = part + ((int64_t)(t0 + tt0) * n_slices + blockIdx.x) * (rows + 1);
        const int64_t tstride = (int64_t)n_slices * (rows + 1); /* between tokens */
        int idx;
        if (g == groups) {
            float acc[HC_IT];
#pragma unroll
            for (int j = 0; j < HC_IT; j++) {
                acc[j] = 0.0f;
#pragma unroll
                for (int c = 0; c < HC_CPL; c++)
                    acc[j] = fmaf(xv[j][c], xv[j][c], acc[j]);
            }
            const float tot = warp_reduce_scatter<HC_IT>(acc, lane, &idx);
            if (lane % (GPU_WARP / HC_IT) == 0 && t0 + tt0 + idx < n)
                out[idx * tstride + rows] = tot;
            continue;
        }
        const int r0 = g * HC_IR;
        float acc[HC_IR * HC_IT];
#pragma unroll
        for (int k = 0; k < HC_IR * HC_IT; k++)
            acc[k] = 0.0f;
#pragma unroll
        for (int c = 0; c < HC_CPL; c++)
#pragma unroll
            for (int i = 0; i < HC_IR; i++) {
                const float f = r0 + i < rows ? fs[(r0 + i) * HC_LD + lane + c * GPU_WARP] : 0.0f;
#pragma unroll
                for (int j = 0; j < HC_IT; j++)
                    acc[i * HC_IT + j] = fmaf(f, xv[j][c], acc[i * HC_IT + j]);
            }
        const float tot = warp_reduce_scatter<HC_IR * HC_IT>(acc, lane, &idx);
        const int r = r0 + idx / HC_IT, j = idx % HC_IT;
        if (lane % (GPU_WARP / (HC_IR * HC_IT)) == 0 && r < rows && t0 + tt0 + j < n)
            out[j * tstride + r] = tot;
    }
}

/* The partials of hc_mix_kernel, same layout, for steps of at most
 * HC_SMALL_MAX_TOKENS tokens (W a multiple of HC_SLICE, X and fn 16-byte
 * aligned), straight from global memory: lane l holds HC_V float4s of the
 * slice (columns 4l.. of each 4 * GPU_WARP) of every token's state and of
 * HC_RPW rows of fn, loaded together, and each (row, token) product is a
 * warp sum. hc_mix_kernel as it was when this kernel was written (the
 * slice of fn through shared memory, then one thread per (row, token)
 * walking 256 columns) took 7 us at one token on an H100, eight times a
 * decode step. grid: slices. */
__global__ __launch_bounds__(HC_THREADS) void hc_mix_small_kernel(float *__restrict__ part, const float *__restrict__ X,
                                                                  const float *__restrict__ fn, int rows, int64_t W,
                                                                  int n)
{
    const int lane = gpu_lane(), warp = gpu_warp_id(), n_slices = gridDim.x;
    const int64_t c0 = (int64_t)blockIdx.x * HC_SLICE + 4 * lane;
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 xv[HC_SMALL_MAX_TOKENS][HC_V];
#pragma unroll
    for (int t = 0; t < HC_SMALL_MAX_TOKENS; t++)
#pragma unroll
        for (int h = 0; h < HC_V; h++)
            xv[t][h] = t < n ? *(const float4 *)(X + t * W + c0 + h * 4 * GPU_WARP) : zero;
    for (int r0 = warp; r0 <= rows; r0 += HC_RPW * HC_WARPS) {
        float4 fv[HC_RPW][HC_V];
#pragma unroll
        for (int k = 0; k < HC_RPW; k++)
#pragma unroll
            for (int h = 0; h < HC_V; h++)
                fv[k][h] = r0 + k * HC_WARPS < rows
                               ? *(const float4 *)(fn + (int64_t)(r0 + k * HC_WARPS) * W + c0 + h * 4 * GPU_WARP)
                               : zero;
#pragma unroll
        for (int k = 0; k < HC_RPW; k++) {
            const int r = r0 + k * HC_WARPS; /* r == rows: the sum of squares */
            if (r > rows)
                break;
#pragma unroll
            for (int t = 0; t < HC_SMALL_MAX_TOKENS; t++) {
                if (t >= n)
                    break;
                float s = 0.0f;
#pragma unroll
                for (int h = 0; h < HC_V; h++) {
                    const float4 a = r < rows ? fv[k][h] : xv[t][h], b = xv[t][h];
                    s = fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, s))));
                }
                s = warp_sum(s);
                if (lane == 0)
                    part[((int64_t)t * n_slices + blockIdx.x) * (rows + 1) + r] = s;
            }
        }
    }
}

/* mix[0..rows) = fn[j] . (X_t / rms(X_t)) from the partials, into shared
 * memory: warp w adds rows w, w + warps, ... (the sum of squares is row
 * `rows`), HC_RPW rows at a time so that their loads overlap, lane l slices
 * l, l + GPU_WARP, ..., in double. */
static __device__ void hc_mix_sum(const float *__restrict__ part, int n_slices, int rows, int64_t W, float eps,
                                  float *mix)
{
    __shared__ double ss_sh;
    const int lane = gpu_lane(), warp = gpu_warp_id();
    for (int r0 = warp; r0 <= rows; r0 += HC_RPW * HC_WARPS) {
        double v[HC_RPW];
#pragma unroll
        for (int k = 0; k < HC_RPW; k++)
            v[k] = 0;
        /* the HC_RPW rows' loads of two slices a lane together, added in slice order */
        for (int sl = lane; sl < n_slices; sl += 2 * GPU_WARP) {
            float p[2][HC_RPW];
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int k = 0; k < HC_RPW; k++)
                    p[h][k] = sl + h * GPU_WARP < n_slices && r0 + k * HC_WARPS <= rows
                                  ? part[(int64_t)(sl + h * GPU_WARP) * (rows + 1) + r0 + k * HC_WARPS]
                                  : 0.0f;
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int k = 0; k < HC_RPW; k++)
                    v[k] += p[h][k];
        }
#pragma unroll
        for (int k = 0; k < HC_RPW; k++) {
            const int r = r0 + k * HC_WARPS;
            if (r > rows)
                break;
            const double t = warp_sum_d(v[k]);
            if (lane == 0) {
                if (r < rows)
                    mix[r] = (float)t;
                else
                    ss_sh = t;
            }
        }
    }
    __syncthreads();
    const float inv = (float)(1.0 / sqrt(ss_sh / W + eps));
    for (int r = threadIdx.x; r < rows; r += HC_THREADS)
        mix[r] *= inv;
    __syncthreads();
}

/* Row softmax + eps, then alternate column and row normalisation (as the CPU). */
static __device__ void sinkhorn(float *C, int ns, int iters, float hc_eps)
{
    for (int i = 0; i < ns; i++) {
        float mx = -INFINITY, s = 0;
        for (int j = 0; j < ns; j++)
            mx = fmaxf(mx, C[i * ns + j]);
        for (int j = 0; j < ns; j++)
            s += (C[i * ns + j] = expf(C[i * ns + j] - mx));
        for (int j = 0; j < ns; j++)
            C[i * ns + j] = C[i * ns + j] / s + hc_eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int i = 0; i < ns; i++) {
                float s = 0;
                for (int j = 0; j < ns; j++)
                    s += C[i * ns + j];
                for (int j = 0; j < ns; j++)
                    C[i * ns + j] /= s + hc_eps;
            }
        }
        for (int j = 0; j < ns; j++) {
            float s = 0;
            for (int i = 0; i < ns; i++)
                s += C[i * ns + j];
            for (int i = 0; i < ns; i++)
                C[i * ns + j] /= s + hc_eps;
        }
    }
}

/* g[k] = the value of lane first + k * stride for k < n (n <= HC_WARP_NS),
 * and past n the n-th again: every lane's shuffles issue unconditionally,
 * so they are in flight together. With the shuffles guarded by the runtime
 * n each waited for the previous one: 14,000 of hc_pre's 20,000 cycles
 * were the Sinkhorn loop (clock64 on an H100), and hc_pre_kernel went from
 * 12.1 to 8.2 us a call at one token. */
static __device__ __forceinline__ void warp_gather(float (&g)[HC_WARP_NS], float v, int first, int stride, int n)
{
#pragma unroll
    for (int k = 0; k < HC_WARP_NS; k++)
        g[k] = gpu_shfl(v, first + (k < n ? k : n - 1) * stride);
}

/* The sum, in order, of the n values warp_gather collects (0 added after
 * them, which leaves it as it was). */
static __device__ __forceinline__ float warp_gather_sum(float v, int first, int stride, int n)
{
    float g[HC_WARP_NS];
    warp_gather(g, v, first, stride, n);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < HC_WARP_NS; k++)
        s += k < n ? g[k] : 0.0f;
    return s;
}

/* sinkhorn() with one lane per element, for ns <= HC_WARP_NS (the
 * model's 4 streams): the same operations in the same order (each lane
 * gathers its row's or column's values and adds them as the CPU loop does),
 * in a few hundred cycles instead of one thread's thousands. Every lane of
 * the warp calls it; lanes past ns * ns take part in the shuffles only. */
static __device__ void sinkhorn_warp(float *C, int ns, int iters, float hc_eps)
{
    const int lane = gpu_lane();
    const bool own = lane < ns * ns;
    const int i = own ? lane / ns : 0, j = own ? lane % ns : 0;
    float c = own ? C[lane] : 0.0f;
    float row[HC_WARP_NS];
    warp_gather(row, c, i * ns, 1, ns);
    float mx = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < HC_WARP_NS; jj++)
        mx = fmaxf(mx, row[jj]); /* the repeated last value changes no maximum */
    const float e = expf(c - mx);
    c = e / warp_gather_sum(e, i * ns, 1, ns) + hc_eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            c /= warp_gather_sum(c, i * ns, 1, ns) + hc_eps;
        c /= warp_gather_sum(c, j, ns, ns) + hc_eps;
    }
    if (own)
        C[lane] = c;
}

/* This thread's first channel (i0 = its index in the block's share of the
 * channels) of every stream of X_t, loaded before the mixing values exist
 * (they do not depend on them) so that the loads overlap their sum. */
static __device__ __forceinline__ void hc_first_channel(float (&x0)[HC_MAXS], const float *__restrict__ Xt, int ns,
                                                        int64_t D)
{
    const int64_t i0 = blockIdx.y * (int64_t)HC_THREADS + threadIdx.x;
#pragma unroll
    for (int s = 0; s < HC_MAXS; s++)
        x0[s] = s < ns && i0 < D ? Xt[s * D + i0] : 0.0f;
}

/* x[t] = sum_s pre[s] X_t[s] with pre in shared memory, over this block's
 * share of the channels (blockIdx.y of gridDim.y); the first channel from
 * x0 (hc_first_channel). */
static __device__ void hc_collapse(float *__restrict__ x, const float *__restrict__ Xt, const float *pre, int ns,
                                   int64_t D, const float (&x0)[HC_MAXS])
{
    const int64_t i0 = blockIdx.y * (int64_t)HC_THREADS + threadIdx.x;
    if (i0 < D) {
        float v = 0;
#pragma unroll
        for (int s = 0; s < HC_MAXS; s++)
            if (s < ns)
                v += pre[s] * x0[s];
        x[i0] = v;
    }
    /* the rest HC_CU channels at a time, all their streams' loads in flight
     * together (one channel at a time, a block per token at 256 tokens
     * waited one memory latency per channel: hc_pre_kernel took 41 us
     * against 28, Nsight Compute on an H100) */
    const int64_t step = (int64_t)gridDim.y * HC_THREADS;
    for (int64_t i = i0 + step; i < D; i += HC_CU * step) {
        float xv[HC_CU][HC_MAXS];
#pragma unroll
        for (int u = 0; u < HC_CU; u++)
#pragma unroll
            for (int s = 0; s < HC_MAXS; s++)
                xv[u][s] = s < ns && i + u * step < D ? Xt[s * D + i + u * step] : 0.0f;
#pragma unroll
        for (int u = 0; u < HC_CU; u++) {
            float v = 0;
#pragma unroll
            for (int s = 0; s < HC_MAXS; s++)
                if (s < ns)
                    v += pre[s] * xv[u][s];
            if (i + u * step < D)
                x[i + u * step] = v;
        }
    }
}

/* Four blocks a multiprocessor (64 registers, none spilled; 80 and three
 * blocks before; five would spill): at prefill's one block per token the
 * kernel waits on its chains of sums and Sinkhorn steps (H100, 2048 tokens:
 * 138 -> 106 us a call). */
__global__ __launch_bounds__(HC_THREADS, 4) void hc_pre_kernel(float *x, float *post, float *comb, const float *X,
                                                            const float *part, int n_slices, const float *base,
                                                            const float *scale, int ns, int64_t D, int iters,
                                                            float eps, float hc_eps)
{
    __shared__ float mix[HC_MAXROWS], pre[HC_MAXS];
    const int64_t t = blockIdx.x;
    const int rows = (2 + ns) * ns, lane = gpu_lane();
    const bool lead = gpu_warp_id() == 0; /* the warp that forms pre, post and comb */
    const float *Xt = X + t * ns * D;
    /* everything that does not depend on the mixing values is loaded
     * before their sum: warp 0's coefficients and the first channels */
    float sc[3] = {0.0f, 0.0f, 0.0f}, b_pre = 0.0f, b_post = 0.0f, b_comb = 0.0f;
    if (lead) {
        sc[0] = scale[0], sc[1] = scale[1], sc[2] = scale[2];
        if (lane < ns)
            b_pre = base[lane], b_post = base[ns + lane];
        if (lane < ns * ns)
            b_comb = base[2 * ns + lane];
    }
    float x0[HC_MAXS];
    hc_first_channel(x0, Xt, ns, D);
    hc_mix_sum(part + t * n_slices * (rows + 1), n_slices, rows, ns * D, eps, mix);
    if (lead) {
        const bool first = blockIdx.y == 0; /* one block of the token writes post and comb */
        if (lane < ns) {
            pre[lane] = sigmoidf_(mix[lane] * sc[0] + b_pre) + hc_eps;
            if (first)
                post[t * ns + lane] = 2.0f * sigmoidf_(mix[ns + lane] * sc[1] + b_post);
        }
        float *C = mix + 2 * ns; /* in place: mix is not needed afterwards */
        for (int i = lane; i < ns * ns; i += GPU_WARP)
            C[i] = C[i] * sc[2] + (i == lane ? b_comb : base[2 * ns + i]);
        gpu_syncwarp();
        if (ns <= HC_WARP_NS)
            sinkhorn_warp(C, ns, iters, hc_eps);
        else if (lane == 0)
            sinkhorn(C, ns, iters, hc_eps);
        gpu_syncwarp();
        if (first)
            for (int i = lane; i < ns * ns; i += GPU_WARP)
                comb[t * ns * ns + i] = C[i];
    }
    __syncthreads();
    hc_collapse(x + t * D, Xt, pre, ns, D, x0);
}

__global__ __launch_bounds__(HC_THREADS) void hc_head_kernel(float *x, const float *X, const float *part,
                                                             int n_slices, const float *base, const float *scale,
                                                             int ns, int64_t D, float eps, float hc_eps)
{
    __shared__ float mix[HC_MAXS], pre[HC_MAXS];
    const int64_t t = blockIdx.x;
    const float *Xt = X + t * ns * D;
    float x0[HC_MAXS];
    hc_first_channel(x0, Xt, ns, D);
    hc_mix_sum(part + t * n_slices * (ns + 1), n_slices, ns, ns * D, eps, mix);
    for (int s = threadIdx.x; s < ns; s += HC_THREADS)
        pre[s] = sigmoidf_(mix[s] * scale[0] + base[s]) + hc_eps;
    __syncthreads();
    hc_collapse(x + t * D, Xt, pre, ns, D, x0);
}

/* X'[s] = post[s] * y + sum_j comb[j][s] X[j]; grid (tokens, channel blocks). */
__global__ void hc_post_kernel(float *X, const float *__restrict__ y, const float *__restrict__ post,
                               const float *__restrict__ comb, int ns, int64_t D)
{
    __shared__ float P[HC_MAXS], Cm[HC_MAXS * HC_MAXS];
    const int64_t t = blockIdx.x;
    const int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    float *Xt = X + t * ns * D;
    /* the channel's values first: their loads overlap the coefficients' */
    const float yv = i < D ? y[t * D + i] : 0.0f;
    float old[HC_MAXS];
#pragma unroll
    for (int j = 0; j < HC_MAXS; j++)
        old[j] = j < ns && i < D ? Xt[j * D + i] : 0.0f;
    for (int k = threadIdx.x; k < ns * ns; k += blockDim.x)
        Cm[k] = comb[t * ns * ns + k];
    for (int k = threadIdx.x; k < ns; k += blockDim.x)
        P[k] = post[t * ns + k];
    __syncthreads();
    if (i >= D)
        return;
#pragma unroll
    for (int s = 0; s < HC_MAXS; s++) {
        if (s >= ns)
            break;
        float v = P[s] * yv;
#pragma unroll
        for (int j = 0; j < HC_MAXS; j++)
            if (j < ns)
                v += Cm[j * ns + s] * old[j];
        Xt[s * D + i] = v;
    }
}

/* hc_post_kernel for NS streams (the model's 4), four channels a thread
 * (D a multiple of 4, X and y 16-byte aligned): the same sums in the same
 * order, with the coefficients in registers and 16-byte loads. One channel
 * a thread over HC_MAXS = 16 guarded streams spent most of its issue on
 * indices and predicates (Nsight Compute, 2048 tokens on an H100: 155 us a
 * call, SM throughput 74%, DRAM 54%). */
template <int NS>
__global__ void hc_post_vec_kernel(float *X, const float *__restrict__ y, const float *__restrict__ post,
                                   const float *__restrict__ comb, int64_t D)
{
    const int64_t t = blockIdx.x;
    const int64_t i = 4 * (blockIdx.y * (int64_t)blockDim.x + threadIdx.x);
    if (i >= D)
        return;
    float *Xt = X + t * NS * D;
    const float4 yv = *(const float4 *)(y + t * D + i);
    float4 old[NS];
#pragma unroll
    for (int j = 0; j < NS; j++)
        old[j] = *(const float4 *)(Xt + j * D + i);
    float P[NS], Cm[NS * NS];
#pragma unroll
    for (int k = 0; k < NS; k++)
        P[k] = __ldg(post + t * NS + k);
#pragma unroll
    for (int k = 0; k < NS * NS; k++)
        Cm[k] = __ldg(comb + t * NS * NS + k);
#pragma unroll
    for (int s = 0; s < NS; s++) {
        float4 v = make_float4(P[s] * yv.x, P[s] * yv.y, P[s] * yv.z, P[s] * yv.w);
#pragma unroll
        for (int j = 0; j < NS; j++) {
            const float c = Cm[j * NS + s];
            v.x += c * old[j].x, v.y += c * old[j].y, v.z += c * old[j].z, v.w += c * old[j].w;
        }
        *(float4 *)(Xt + s * D + i) = v;
    }
}

static bool hc_shape_ok(cu_backend *cb, const v4_hc_shape *sh, const char *op)
{
    if (sh->n_streams < 1 || sh->n_streams > HC_MAXS) {
        cu_fail(cb, "%s: %d streams (1..%d supported)", op, sh->n_streams, HC_MAXS);
        return false;
    }
    return true;
}

/* hc_mix_kernel with token tiles of TT: its shared memory checked against
 * the device and, above the default 48 KB, granted; false on failure. */
template <int TT>
static bool mix_tiles(cu_backend *cb, int slices, const float *X, const float *fn, int rows, int64_t W, int n,
                      bool vec, const char *op)
{
    const size_t smem = ((size_t)rows + TT) * HC_LD * sizeof(float);
    if (smem > cb->smem_optin) {
        cu_fail(cb, "%s: %d mixing rows need %zu bytes of shared memory", op, rows, smem);
        return false;
    }
    if (smem > 48 * 1024 &&
        !cu_check(cb, cudaFuncSetAttribute(hc_mix_kernel<TT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                  "cudaFuncSetAttribute (mHC)"))
        return false;
    const dim3 grid((unsigned)slices, (unsigned)((n + TT - 1) / TT));
    hc_mix_kernel<TT><<<grid, HC_THREADS, smem, cb->stream>>>(cb->hc_part, X, fn, rows, W, n, vec);
    return true;
}

/* Launches the partial mixing product for n tokens into cb->hc_part
 * (grown outside capture; a step's first run is always eager). Returns the
 * number of slices, 0 on failure. */
static int launch_mix(cu_backend *cb, const float *X, const float *fn, int rows, int64_t W, int n, const char *op)
{
    const int slices = (int)((W + HC_SLICE - 1) / HC_SLICE);
    if (!cu_grow(cb, (void **)&cb->hc_part, &cb->hc_part_bytes, (size_t)n * slices * (rows + 1) * sizeof(float), op))
        return 0;
    if (n <= HC_SMALL_MAX_TOKENS && W % HC_SLICE == 0 && ((uintptr_t)X | (uintptr_t)fn) % 16 == 0) {
        hc_mix_small_kernel<<<slices, HC_THREADS, 0, cb->stream>>>(cb->hc_part, X, fn, rows, W, n);
        cu_launched(cb, "hc_mix_small");
        return slices;
    }
#if GPU_HAS_MMA_SYNC
    if (!cb->plain && n >= HC_TT_WIDE_FROM && cu_hc_mix_tc(cb, cb->hc_part, X, fn, rows, W, n))
        return slices;
#endif
    const bool vec = W % 4 == 0 && ((uintptr_t)X | (uintptr_t)fn) % 16 == 0;
    const bool ok = n >= HC_TT_WIDE_FROM ? mix_tiles<2 * HC_TT>(cb, slices, X, fn, rows, W, n, vec, op)
                                         : mix_tiles<HC_TT>(cb, slices, X, fn, rows, W, n, vec, op);
    if (!ok)
        return 0;
    cu_launched(cb, "hc_mix");
    return slices;
}

/* (tokens, blocks sharing a token's collapse): several only while the step
 * is small, so that decode's few tokens spread over the multiprocessors;
 * the split changes which block writes a channel, never its value. */
static dim3 collapse_grid(int n, int64_t D)
{
    const int64_t per = (D + HC_THREADS - 1) / HC_THREADS;
    const int64_t split = n > HC_SPLIT_MAX_TOKENS ? 1 : per < HC_SPLIT ? per : HC_SPLIT;
    return dim3((unsigned)n, (unsigned)(split > 0 ? split : 1));
}

extern "C" void cu_hc_pre(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn,
                          const float *base, const float *scale, int n, const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_pre") || n <= 0)
        return;
    const int ns = sh->n_streams, rows = (2 + ns) * ns;
    const int slices = launch_mix(cb, X, fn, rows, (int64_t)ns * sh->dim, n, "hc_pre");
    if (!slices)
        return;
    hc_pre_kernel<<<collapse_grid(n, sh->dim), HC_THREADS, 0, cb->stream>>>(
        x, post, comb, X, cb->hc_part, slices, base, scale, ns, sh->dim, sh->iters, sh->eps, sh->hc_eps);
    cu_launched(cb, "hc_pre");
}

extern "C" void cu_hc_head(v4_backend *be, float *x, const float *X, const float *fn, const float *base,
                           const float *scale, int n, const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_head") || n <= 0)
        return;
    const int ns = sh->n_streams;
    const int slices = launch_mix(cb, X, fn, ns, (int64_t)ns * sh->dim, n, "hc_head");
    if (!slices)
        return;
    hc_head_kernel<<<collapse_grid(n, sh->dim), HC_THREADS, 0, cb->stream>>>(x, X, cb->hc_part, slices, base, scale,
                                                                             ns, sh->dim, sh->eps, sh->hc_eps);
    cu_launched(cb, "hc_head");
}

extern "C" void cu_hc_post(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                           const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_post") || n <= 0 || sh->dim <= 0)
        return;
    if (sh->n_streams == 4 && sh->dim % 4 == 0 && (uintptr_t)X % 16 == 0 && (uintptr_t)y % 16 == 0) {
        const dim3 grid((unsigned)n, (unsigned)((sh->dim / 4 + 255) / 256));
        hc_post_vec_kernel<4><<<grid, 256, 0, cb->stream>>>(X, y, post, comb, sh->dim);
    } else {
        const dim3 grid((unsigned)n, (unsigned)((sh->dim + 255) / 256));
        hc_post_kernel<<<grid, 256, 0, cb->stream>>>(X, y, post, comb, sh->n_streams, sh->dim);
    }
    cu_launched(cb, "hc_post");
}
