/* Token sampling on the GPU: the algorithm of `sample` in backend.h, as
 * sample_row_ref (src/backend/cpu/sample.c) implements it on the CPU.
 *
 * The row's largest logit (greedy's answer, the softmax's max) comes from
 * SMP_CHUNKS blocks a row (sample_scan_kernel), the rest from one block per
 * row (sample_kernel). Tokens are ordered by logit descending, ties to the
 * lower id; with T > 0 a token's mass is exp((logit - max) / T) in double.
 * Every step of the algorithm is "find the first token, in that order, at
 * which a cumulative measure reaches (or exceeds) a target", within a set
 * that is itself a prefix of the order (described by its last token):
 *   top-k  count reaches k                      -> the top-k set
 *   top-p  mass reaches top_p * (top-k mass)    -> the kept prefix
 *   draw   mass exceeds u * (kept mass)         -> the token
 * Each is a radix select over the 32-bit order key (4 passes of 8 bits,
 * histograms of counts and masses in shared memory) followed, among tokens
 * with equal logits, by an ordered scan over ids. No sort; the only scratch
 * is the chunks' best ranks. The
 * sums are in double in a different order than the CPU's sequential sums;
 * a different outcome needs a target within ~1e-16 (relative) of a
 * boundary. */
#include "backend/cuda/cu_device.cuh"
#include "util/rng.h"

#define SMP_THREADS 1024
#define SMP_CHUNKS 32      /* blocks scanning a row for its largest logit */
#define SMP_SCAN_THREADS 256
#define SMP_LOADS 4        /* float4s a scanning thread has in flight */

typedef struct smp_shared {
    double hist[256];
    unsigned cnt[256];
    double dred[GPU_MAX_WARPS];
    unsigned key;
    double above;
    int fallback;
    long long id;
} smp_shared;

/* A prefix of the order: tokens with key > kb, or key == kb and id <= ib. */
typedef struct smp_set {
    uint32_t kb;
    int64_t ib;
} smp_set;

static __device__ __forceinline__ bool in_set(uint32_t u, int64_t i, smp_set s)
{
    return u > s.kb || (u == s.kb && i <= s.ib);
}

static __device__ __forceinline__ double smp_mass(float l, float mx, double T)
{
    return exp(((double)l - (double)mx) / T);
}

/* Inclusive prefix sum of v over the block (all threads get theirs) and the total. */
static __device__ double block_scan_incl_d(double v, double *dred, double *total)
{
    const int lane = gpu_lane(), warp = gpu_warp_id(), nw = blockDim.x / GPU_WARP;
    const double x = warp_scan_incl(v);
    __syncthreads();
    if (lane == GPU_WARP - 1)
        dred[warp] = x;
    __syncthreads();
    double before = 0, all = 0;
    for (int w = 0; w < nw; w++) {
        before += w < warp ? dred[w] : 0.0;
        all += dred[w];
    }
    *total = all;
    return before + x;
}

/* The first token of set `s`, in order, at which the cumulative measure
 * (MASS: masses, else counts) reaches target (strict: exceeds it); the last
 * token of the set when rounding leaves the total short of the target. */
template <bool MASS>
static __device__ smp_set smp_select(const float *l, int64_t V, smp_set s, float mx, double T, double target,
                                     bool strict, smp_shared *sh)
{
    uint32_t prefix = 0, mask = 0;
    double above = 0.0;
    bool fallback = false;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x)
            sh->hist[b] = 0.0, sh->cnt[b] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
            const float li = l[i];
            const uint32_t u = ordered_key(li);
            if (in_set(u, i, s) && (u & mask) == prefix) {
                const unsigned b = (u >> shift) & 255u;
                atomicAdd(&sh->hist[b], MASS ? smp_mass(li, mx, T) : 1.0);
                atomicAdd(&sh->cnt[b], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            double cum = above;
            int chosen = -1, lowest = -1;
            double above_lowest = 0.0;
            for (int b = 255; b >= 0; b--) {
                if (!sh->cnt[b])
                    continue;
                const double nc = cum + sh->hist[b];
                if (!fallback && (strict ? nc > target : nc >= target)) {
                    chosen = b;
                    break;
                }
                lowest = b;
                above_lowest = cum;
                cum = nc;
            }
            if (chosen < 0) { /* short of the target: descend to the set's last token */
                chosen = lowest;
                cum = above_lowest;
                sh->fallback = 1;
            } else {
                sh->fallback = 0;
            }
            sh->key = prefix | ((uint32_t)chosen << shift);
            sh->above = cum;
        }
        __syncthreads();
        prefix = sh->key;
        above = sh->above;
        fallback = fallback || sh->fallback;
        mask |= 255u << shift;
        __syncthreads();
    }
    /* among tokens with key == prefix (in the set), ascending id */
    if (threadIdx.x == 0)
        sh->id = -1;
    __syncthreads();
    double run = above;
    long long last = -1;
    for (int64_t base = 0; base < V; base += blockDim.x) {
        const int64_t i = base + threadIdx.x;
        bool in = false;
        double m = 0.0;
        if (i < V) {
            const float li = l[i];
            const uint32_t u = ordered_key(li);
            in = u == prefix && in_set(u, i, s);
            if (in)
                m = MASS ? smp_mass(li, mx, T) : 1.0;
        }
        double total;
        const double cum = run + block_scan_incl_d(m, sh->dred, &total);
        if (in) {
            last = i; /* per thread; the block's last is their maximum */
            if (!fallback && (strict ? cum > target : cum >= target))
                atomicMin((unsigned long long *)&sh->id, (unsigned long long)i); /* -1 is the largest */
        }
        __syncthreads();
        const bool done = sh->id >= 0;
        __syncthreads();
        if (done)
            break;
        run += total;
    }
    if (sh->id < 0) {
        /* fallback: the set's last token with this key */
        __syncthreads();
        if (last >= 0)
            gpu_atomic_max(&sh->id, last);
        __syncthreads();
    }
    smp_set r = {prefix, (int64_t)sh->id};
    __syncthreads();
    return r;
}

/* Sum of masses over set s. */
static __device__ double smp_set_mass(const float *l, int64_t V, smp_set s, float mx, double T, smp_shared *sh)
{
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        const float li = l[i];
        if (in_set(ordered_key(li), i, s))
            acc += smp_mass(li, mx, T);
    }
    return block_sum_d(acc, sh->dred);
}

/* The greedy order as one number: the larger key, then the lower id, is
 * the larger rank; 0 is below every logit's (ids < 2^32 - 1). */
static __device__ __forceinline__ uint64_t smp_rank(uint32_t key, int64_t id)
{
    return (uint64_t)key << 32 | (0xFFFFFFFFu - (uint32_t)id);
}

/* The id of a rank (not 0). */
static __device__ __forceinline__ int64_t smp_rank_id(uint64_t rank) { return 0xFFFFFFFFu - (uint32_t)rank; }

static __device__ __forceinline__ uint64_t smp_rank_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The largest of the warp's ranks, on every lane. */
static __device__ __forceinline__ uint64_t smp_rank_warp_max(uint64_t b)
{
#pragma unroll
    for (int o = GPU_WARP / 2; o > 0; o >>= 1)
        b = smp_rank_max(b, gpu_shfl_xor(b, o));
    return b;
}

/* best[row * SMP_CHUNKS + c] = the largest rank among chunk c of the row's
 * logits (whole float4s of it when the row is 16-byte aligned, SMP_LOADS
 * at a time). The largest logit took one block 58 us for 129280 logits on
 * an H100 (one load per round trip), 18 us with four float4s in flight:
 * one multiprocessor's share of the bandwidth; SMP_CHUNKS blocks a row
 * share it instead. grid (rows, SMP_CHUNKS). */
__global__ __launch_bounds__(SMP_SCAN_THREADS) void sample_scan_kernel(uint64_t *best, const float *logits, int64_t V)
{
    __shared__ uint64_t red[SMP_SCAN_THREADS / GPU_WARP];
    const float *l = logits + blockIdx.x * V;
    const int64_t per = ((V + SMP_CHUNKS - 1) / SMP_CHUNKS + 3) / 4 * 4; /* whole float4s */
    const int64_t lo = blockIdx.y * per, hi = lo + per < V ? lo + per : V;
    uint64_t b = 0;
    int64_t tail = lo;
    if (((uintptr_t)l & 15u) == 0 && lo < hi) {
        const float4 *l4 = (const float4 *)l;
        const int64_t q_end = hi / 4, stride = blockDim.x;
        for (int64_t q0 = lo / 4 + threadIdx.x; q0 < q_end; q0 += SMP_LOADS * stride) {
            float4 v[SMP_LOADS];
#pragma unroll
            for (int k = 0; k < SMP_LOADS; k++)
                if (q0 + k * stride < q_end)
                    v[k] = l4[q0 + k * stride];
#pragma unroll
            for (int k = 0; k < SMP_LOADS; k++) {
                const int64_t q = q0 + k * stride;
                if (q < q_end) {
                    b = smp_rank_max(b, smp_rank(ordered_key(v[k].x), 4 * q));
                    b = smp_rank_max(b, smp_rank(ordered_key(v[k].y), 4 * q + 1));
                    b = smp_rank_max(b, smp_rank(ordered_key(v[k].z), 4 * q + 2));
                    b = smp_rank_max(b, smp_rank(ordered_key(v[k].w), 4 * q + 3));
                }
            }
        }
        tail = 4 * q_end > lo ? 4 * q_end : lo;
    }
    for (int64_t i = tail + threadIdx.x; i < hi; i += blockDim.x)
        b = smp_rank_max(b, smp_rank(ordered_key(l[i]), i));
    b = smp_rank_warp_max(b);
    if (gpu_lane() == 0)
        red[gpu_warp_id()] = b;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < SMP_SCAN_THREADS / GPU_WARP; w++)
            b = smp_rank_max(b, red[w]);
        best[blockIdx.x * SMP_CHUNKS + blockIdx.y] = b;
    }
}

__global__ __launch_bounds__(SMP_THREADS) void sample_kernel(int32_t *ids, const float *logits, int64_t V,
                                                             const v4_sample_params *params,
                                                             const uint64_t *__restrict__ chunk_best)
{
    __shared__ smp_shared sh;
    const int64_t row = blockIdx.x;
    const float *l = logits + row * V;
    const v4_sample_params p = params[row];
    /* the largest key, lowest id first (greedy's answer and the softmax
     * max): the largest of the chunks' ranks */
    if (threadIdx.x < GPU_WARP) {
        uint64_t b = 0;
        for (int c = threadIdx.x; c < SMP_CHUNKS; c += GPU_WARP)
            b = smp_rank_max(b, chunk_best[row * SMP_CHUNKS + c]);
        b = smp_rank_warp_max(b);
        if (threadIdx.x == 0)
            sh.id = smp_rank_id(b); /* b > 0: V >= 1 */
    }
    __syncthreads();
    const int64_t best = sh.id;
    if (!(p.temperature > 0.0f)) {
        if (threadIdx.x == 0)
            ids[row] = (int32_t)best;
        return;
    }
    const float mx = l[best];
    const double T = (double)p.temperature;
    __syncthreads();
    smp_set all = {0u, V};
    smp_set kset = all;
    if (p.top_k > 0 && p.top_k < V)
        kset = smp_select<false>(l, V, all, mx, T, (double)p.top_k, false, &sh);
    const double S = smp_set_mass(l, V, kset, mx, T, &sh);
    smp_set pset = kset;
    double kept = S;
    if (p.top_p < 1.0f) {
        pset = smp_select<true>(l, V, kset, mx, T, (double)p.top_p * S, false, &sh);
        kept = smp_set_mass(l, V, pset, mx, T, &sh);
    }
    const double target = (double)rng_uniform(p.seed, p.step) * kept;
    const smp_set tok = smp_select<true>(l, V, pset, mx, T, target, true, &sh);
    if (threadIdx.x == 0)
        ids[row] = (int32_t)tok.ib;
}

extern "C" void cu_sample(v4_backend *be, int32_t *ids, const float *logits, int n, int64_t vocab,
                          const v4_sample_params *p)
{
    cu_backend *cb = cu_of(be);
    if (vocab < 1 || vocab > INT32_MAX) {
        cu_fail(cb, "sample: vocabulary of %lld", (long long)vocab);
        return;
    }
    if (n <= 0)
        return;
    if (!cu_grow(cb, (void **)&cb->smp_best, &cb->smp_best_bytes, (size_t)n * SMP_CHUNKS * sizeof(uint64_t),
                 "sample"))
        return;
    sample_scan_kernel<<<dim3((unsigned)n, SMP_CHUNKS), SMP_SCAN_THREADS, 0, cb->stream>>>(cb->smp_best, logits,
                                                                                         vocab);
    cu_launched(cb, "sample_scan");
    sample_kernel<<<n, SMP_THREADS, 0, cb->stream>>>(ids, logits, vocab, p, cb->smp_best);
    cu_launched(cb, "sample");
}
