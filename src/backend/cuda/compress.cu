/* KV compressors on the GPU (MODEL.md 4.3, 4.4), the same algorithm as
 * src/backend/cpu/compress.c: per channel an online softmax (running max,
 * sum of weights, weighted sum) folds the step's tokens in position order,
 * so the result does not depend on chunking.
 *
 * One thread per channel (up to COMP_MAXC channels per thread); when a
 * window closes the block normalises the entry (RMSNorm across channels),
 * ropes its last rope_dim channels at the window's first position, and
 * stores it in the KV type (FP8: with the vector's scale) without an fp32
 * staging buffer (close_entry). Two grids compute the same thing:
 *  - serial (steps of few tokens: decode): one block per sequence folds
 *    the step's tokens in order, the accumulators in registers;
 *  - per window (steps of COMP_WINDOWED_MIN tokens or more: prefill, where
 *    one block walking 8192 tokens took 14 ms): one block per (sequence,
 *    window the step touches). An entry's accumulators restart at its
 *    window's start (and with overlap, CSA, at the previous window's
 *    start, whose Ca halves it folds first), so a block rebuilds its
 *    state from the tokens alone, except in the first two windows, which
 *    continue the stored accumulators; a second launch, one block per
 *    sequence, redoes the last window's state and stores it (after every
 *    block of the first has read the stored values). Each accumulator sees
 *    the same additions in the same order as in the serial grid, so both
 *    give the same bits. */
#include "backend/cuda/cu_device.cuh"

#define COMP_THREADS 256
#define COMP_MAXC 4 /* entries of up to 1024 channels */
#define COMP_WINDOWED_MIN 64

typedef struct comp_acc {
    float m, s, a;
} comp_acc;

static __device__ __forceinline__ void acc_reset(comp_acc &v)
{
    v.m = -INFINITY;
    v.s = 0.0f;
    v.a = 0.0f;
}

static __device__ __forceinline__ void acc_add(comp_acc &v, float z, float a)
{
    if (z > v.m) {
        const float r = expf(v.m - z); /* 0 when the accumulator was empty */
        v.s = v.s * r + 1.0f;
        v.a = v.a * r + a;
        v.m = z;
    } else {
        const float w = expf(z - v.m);
        v.s += w;
        v.a += w * a;
    }
}

/* What every block of either grid reads. */
typedef struct comp_args {
    void *entries;
    float *entry_scale, *acc;
    const float *a, *z, *ape, *norm_w, *freq;
    int ratio, head, width, rope_dim, epb;
    bool overlap;
    float eps;
} comp_args;

/* Folds position p (row r of the step) into the accumulators of this
 * thread's channels: with overlap, its Cb half into cur (this window's
 * entry) and its Ca half into nxt (the next window's); parts selects
 * which (1: Cb into cur, 2: Ca into nxt, 3: both). */
static __device__ __forceinline__ void fold(const comp_args &g, comp_acc (&cur)[COMP_MAXC], comp_acc (&nxt)[COMP_MAXC],
                                            int64_t p, int64_t r, int parts)
{
    const int j = (int)(p % g.ratio), head = g.head;
    const float *zr = g.z + r * g.width, *ar = g.a + r * g.width, *ap = g.ape + (int64_t)j * g.width;
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        if (ch >= head)
            continue;
        if (!g.overlap) {
            acc_add(cur[c], zr[ch] + ap[ch], ar[ch]);
            continue;
        }
        if (parts & 1)
            acc_add(cur[c], zr[head + ch] + ap[head + ch], ar[head + ch]); /* Cb: this window's entry */
        if (parts & 2)
            acc_add(nxt[c], zr[ch] + ap[ch], ar[ch]); /* Ca: the next entry */
    }
}

/* Entry i closes with values val (this thread's channels): weighted
 * RMSNorm, rope at position i * ratio, store. Every thread of the block
 * calls it. */
template <int KVT>
static __device__ void close_entry(const comp_args &g, const float (&val)[COMP_MAXC], int64_t i, const int32_t *bt)
{
    __shared__ float buf[COMP_THREADS * COMP_MAXC];
    __shared__ double dred[GPU_MAX_WARPS];
    __shared__ float fred[GPU_MAX_WARPS];
    const int head = g.head;
    double ss = 0.0;
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++)
        ss += (double)val[c] * val[c];
    ss = block_sum_d(ss, dred);
    const float inv = (float)(1.0 / sqrt(ss / head + g.eps));
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        if (ch < head)
            buf[ch] = val[c] * inv * g.norm_w[ch];
    }
    __syncthreads();
    float out[COMP_MAXC];
    float amax = 0.0f;
    const int r0 = head - g.rope_dim;
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        out[c] = 0.0f;
        if (ch >= head)
            continue;
        if (ch < r0) {
            out[c] = buf[ch];
        } else {
            const int k = (ch - r0) >> 1;
            double sd, cd;
            sincos((double)(i * g.ratio) * (double)g.freq[k], &sd, &cd);
            const float cs = (float)cd, sn = (float)sd;
            const float x0 = buf[r0 + 2 * k], x1 = buf[r0 + 2 * k + 1];
            out[c] = ((ch - r0) & 1) ? x1 * cs + x0 * sn : x0 * cs - x1 * sn;
        }
        amax = fmaxf(amax, fabsf(out[c]));
    }
    float scale = 1.0f;
    if (KVT == KV_FP8 || KVT == KV_FP8FNUZ)
        scale = kv_scale_of<KVT>(block_max(amax, fred));
    const int32_t blk = bt[i / g.epb];
    if (blk >= 0) {
        const int64_t vec = (int64_t)blk * g.epb + i % g.epb;
        const float rs = 1.0f / scale;
#pragma unroll
        for (int c = 0; c < COMP_MAXC; c++) {
            const int ch = threadIdx.x + c * COMP_THREADS;
            if (ch < head)
                kv_put<KVT>(g.entries, vec * head + ch, KVT == KV_FP8 || KVT == KV_FP8FNUZ ? out[c] * rs : out[c]);
        }
        if ((KVT == KV_FP8 || KVT == KV_FP8FNUZ) && threadIdx.x == 0)
            g.entry_scale[vec] = scale;
    }
    __syncthreads(); /* buf is rewritten by the next entry */
}

/* The entry's value and the accumulators' state after its window closes
 * (cur restarts, or with overlap takes over nxt, which restarts). */
static __device__ __forceinline__ void window_closes(const comp_args &g, comp_acc (&cur)[COMP_MAXC],
                                                     comp_acc (&nxt)[COMP_MAXC], float (&val)[COMP_MAXC])
{
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        val[c] = 0.0f;
        if (threadIdx.x + c * COMP_THREADS >= g.head)
            continue;
        val[c] = cur[c].a / cur[c].s;
        if (g.overlap) {
            cur[c] = nxt[c];
            acc_reset(nxt[c]);
        } else {
            acc_reset(cur[c]);
        }
    }
}

/* A sequence's stored accumulators: cur (which 0) and, with overlap, nxt
 * (which 1), each KV_ACC_FIELDS x head floats. */
static __device__ __forceinline__ float *acc_at(const comp_args &g, int64_t slot, int which)
{
    return g.acc + (slot * (g.overlap ? 2 : 1) + which) * KV_ACC_FIELDS * (int64_t)g.head;
}

static __device__ __forceinline__ void acc_clear(comp_acc (&v)[COMP_MAXC])
{
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++)
        acc_reset(v[c]);
}

static __device__ __forceinline__ void acc_get(const comp_args &g, int64_t slot, int which, comp_acc (&v)[COMP_MAXC])
{
    const float *b = acc_at(g, slot, which);
    const int head = g.head;
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        acc_reset(v[c]);
        if (ch < head)
            v[c].m = b[ch], v[c].s = b[head + ch], v[c].a = b[2 * head + ch];
    }
}

static __device__ __forceinline__ void acc_put(const comp_args &g, int64_t slot, int which, const comp_acc (&v)[COMP_MAXC])
{
    float *b = acc_at(g, slot, which);
    const int head = g.head;
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        if (ch < head)
            b[ch] = v[c].m, b[head + ch] = v[c].s, b[2 * head + ch] = v[c].a;
    }
}

/* cur and nxt as stored (nxt stays empty without overlap), or both empty
 * from position 0 on, where the serial fold resets them. */
static __device__ __forceinline__ void acc_load(const comp_args &g, int64_t slot, bool fresh,
                                                comp_acc (&cur)[COMP_MAXC], comp_acc (&nxt)[COMP_MAXC])
{
    acc_clear(cur);
    acc_clear(nxt);
    if (fresh)
        return;
    acc_get(g, slot, 0, cur);
    if (g.overlap)
        acc_get(g, slot, 1, nxt);
}

static __device__ __forceinline__ void acc_store(const comp_args &g, int64_t slot, const comp_acc (&cur)[COMP_MAXC],
                                                 const comp_acc (&nxt)[COMP_MAXC])
{
    acc_put(g, slot, 0, cur);
    if (g.overlap)
        acc_put(g, slot, 1, nxt);
}

/* Serial grid: block s folds sequence s's tokens in order. */
template <int KVT> __global__ __launch_bounds__(COMP_THREADS) void compress_kernel(comp_args g, v4_step st)
{
    const int s = blockIdx.x;
    const int64_t slot = st.seq_slot[s], start = st.seq_start[s];
    const int row0 = st.seq_row[s], ntok = st.seq_ntok[s];
    const int32_t *bt = st.block_table + (int64_t)s * st.max_blocks;
    comp_acc cur[COMP_MAXC], nxt[COMP_MAXC];
    acc_load(g, slot, false, cur, nxt);
    for (int t = 0; t < ntok; t++) {
        const int64_t p = start + t;
        if (p == 0) {
            acc_clear(cur);
            acc_clear(nxt);
        }
        fold(g, cur, nxt, p, row0 + t, 3);
        if (p % g.ratio != g.ratio - 1)
            continue; /* uniform across the block: every thread sees the same p */
        float val[COMP_MAXC];
        window_closes(g, cur, nxt, val);
        close_entry<KVT>(g, val, p / g.ratio, bt);
    }
    acc_store(g, slot, cur, nxt);
}

/* Per-window grid: block (s, y) takes window w = first + y of sequence s
 * (first: the window of its first position this step), if the step
 * reaches it, and stores the entry if the window closes. Its start state:
 * windows first and first + 1 continue the stored accumulators (first: cur
 * and nxt as stored; first + 1: nxt as stored becomes cur after the Ca
 * halves of window first's step tokens); later ones restart (cur after
 * the Ca halves of window w - 1). With `final`, a second launch of one
 * block per sequence, after the first has read the stored accumulators,
 * redoes the last window's state and stores it instead. */
template <int KVT>
__global__ __launch_bounds__(COMP_THREADS) void compress_window_kernel(comp_args g, v4_step st, bool final)
{
    const int s = blockIdx.x, ratio = g.ratio;
    const int ntok = st.seq_ntok[s];
    if (ntok <= 0)
        return;
    const int64_t slot = st.seq_slot[s], start = st.seq_start[s], end = start + ntok;
    const int64_t first = start / ratio, last = (end - 1) / ratio, w = final ? last : first + blockIdx.y;
    if (w > last)
        return;
    const int row0 = st.seq_row[s];
    const int32_t *bt = st.block_table + (int64_t)s * st.max_blocks;
    comp_acc cur[COMP_MAXC], nxt[COMP_MAXC];
    const int64_t w0 = w * ratio, w1 = w0 + ratio; /* the window's positions */
    if (w == first) {
        acc_load(g, slot, start == 0, cur, nxt);
    } else {
        acc_clear(cur);
        acc_clear(nxt);
        if (g.overlap) { /* cur starts as the Ca halves of window w - 1 */
            int64_t p = w0 - ratio;
            if (w == first + 1) { /* window first began before this step: its stored nxt so far */
                if (start > 0)
                    acc_get(g, slot, 1, cur);
                p = start;
            }
            for (; p < w0; p++)
                fold(g, cur, cur, p, row0 + (p - start), 2);
        }
    }
    const int64_t from = w0 > start ? w0 : start, to = w1 < end ? w1 : end;
    for (int64_t p = from; p < to; p++)
        fold(g, cur, nxt, p, row0 + (p - start), 3);
    if (to == w1) {
        float val[COMP_MAXC];
        window_closes(g, cur, nxt, val);
        if (!final)
            close_entry<KVT>(g, val, w, bt);
    }
    if (final)
        acc_store(g, slot, cur, nxt);
}

extern "C" void cu_compress(v4_backend *be, void *entries, float *acc, const float *a, const float *z,
                            const float *ape, const float *norm_w, const float *inv_freq, const v4_step *st,
                            const v4_comp_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (sh->head > COMP_THREADS * COMP_MAXC || sh->head < 1 || sh->ratio < 1 || sh->entries_per_block < 1 ||
        sh->rope_dim > sh->head || (sh->rope_dim & 1)) {
        cu_fail(cb, "compress: unsupported shape (head %d, ratio %d, rope %d, %d entries per block)", sh->head,
                sh->ratio, sh->rope_dim, sh->entries_per_block);
        return;
    }
    float *scale = cu_kv_scale(cb, entries);
    if ((cb->kv_type == KV_FP8 || cb->kv_type == KV_FP8FNUZ) && !scale) {
        cu_fail(cb, "compress: entries not allocated by this backend's alloc_kv");
        return;
    }
    if (st->n_seqs <= 0)
        return;
    const comp_args g = {entries, scale,     acc,       a,         z,   ape, norm_w, inv_freq, sh->ratio, sh->head,
                         sh->width, sh->rope_dim, sh->entries_per_block, sh->overlap, sh->eps};
    /* a sequence of at most n_tokens positions touches at most n_tokens / ratio + 2 windows */
    const int64_t windows = (int64_t)st->n_tokens / sh->ratio + 2;
    if (st->n_tokens >= COMP_WINDOWED_MIN && windows <= 65535) {
        const dim3 grid((unsigned)st->n_seqs, (unsigned)windows);
        CU_KV_DISPATCH(cb->kv_type,
                       (compress_window_kernel<KVT><<<grid, COMP_THREADS, 0, cb->stream>>>(g, *st, false),
                        compress_window_kernel<KVT><<<st->n_seqs, COMP_THREADS, 0, cb->stream>>>(g, *st, true)));
    } else {
        CU_KV_DISPATCH(cb->kv_type, (compress_kernel<KVT><<<st->n_seqs, COMP_THREADS, 0, cb->stream>>>(g, *st)));
    }
    cu_launched(cb, "compress");
}
