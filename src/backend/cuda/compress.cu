/* KV compressors on the GPU (MODEL.md 4.3, 4.4), the same algorithm as
 * src/backend/cpu/compress.c: per channel an online softmax (running max,
 * sum of weights, weighted sum) folds the step's tokens in position order,
 * so the result does not depend on chunking.
 *
 * One block per sequence, one thread per channel (up to COMP_MAXC channels
 * per thread); the accumulators stay in registers for the whole step. The
 * token loop's bound comes from device memory (seq_ntok) and is the same
 * for every thread of the block, so when a window closes the block can
 * normalise the entry (RMSNorm across channels), rope its last rope_dim
 * channels at the window's first position, and store it in the KV type
 * (FP8: with the vector's scale) without an fp32 staging buffer. */
#include "backend/cuda/cu_device.cuh"

#define COMP_THREADS 256
#define COMP_MAXC 4 /* entries of up to 1024 channels */

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

template <int KVT>
__global__ __launch_bounds__(COMP_THREADS) void compress_kernel(void *entries, float *entry_scale, float *acc,
                                                                const float *__restrict__ a,
                                                                const float *__restrict__ z,
                                                                const float *__restrict__ ape,
                                                                const float *__restrict__ norm_w,
                                                                const float *__restrict__ freq, v4_step st, int ratio,
                                                                int head, int width, bool overlap, int rope_dim,
                                                                int epb, float eps)
{
    __shared__ float buf[COMP_THREADS * COMP_MAXC];
    __shared__ double dred[GPU_MAX_WARPS];
    __shared__ float fred[GPU_MAX_WARPS];
    const int s = blockIdx.x;
    const int64_t slot = st.seq_slot[s], start = st.seq_start[s];
    const int row0 = st.seq_row[s], ntok = st.seq_ntok[s];
    const int32_t *bt = st.block_table + (int64_t)s * st.max_blocks;
    const int n_acc = overlap ? 2 : 1;
    float *cur_base = acc + slot * n_acc * KV_ACC_FIELDS * (int64_t)head;
    float *next_base = cur_base + KV_ACC_FIELDS * (int64_t)head;
    comp_acc cur[COMP_MAXC], nxt[COMP_MAXC];
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        acc_reset(cur[c]);
        acc_reset(nxt[c]);
        if (ch < head) {
            cur[c].m = cur_base[ch], cur[c].s = cur_base[head + ch], cur[c].a = cur_base[2 * head + ch];
            if (overlap)
                nxt[c].m = next_base[ch], nxt[c].s = next_base[head + ch], nxt[c].a = next_base[2 * head + ch];
        }
    }
    for (int t = 0; t < ntok; t++) {
        const int64_t p = start + t, r = row0 + t;
        const int j = (int)(p % ratio);
        const float *zr = z + r * width, *ar = a + r * width, *ap = ape + (int64_t)j * width;
        float val[COMP_MAXC];
#pragma unroll
        for (int c = 0; c < COMP_MAXC; c++) {
            const int ch = threadIdx.x + c * COMP_THREADS;
            val[c] = 0.0f;
            if (ch >= head)
                continue;
            if (p == 0) {
                acc_reset(cur[c]);
                acc_reset(nxt[c]);
            }
            if (overlap) {
                acc_add(cur[c], zr[head + ch] + ap[head + ch], ar[head + ch]); /* Cb: this window's entry */
                acc_add(nxt[c], zr[ch] + ap[ch], ar[ch]);                     /* Ca: the next entry */
            } else {
                acc_add(cur[c], zr[ch] + ap[ch], ar[ch]);
            }
            if (j == ratio - 1) {
                val[c] = cur[c].a / cur[c].s;
                if (overlap) {
                    cur[c] = nxt[c];
                    acc_reset(nxt[c]);
                } else {
                    acc_reset(cur[c]);
                }
            }
        }
        if (j != ratio - 1)
            continue; /* uniform across the block: every thread sees the same p */
        /* entry i = p / ratio closes: weighted RMSNorm, rope at i * ratio, store */
        const int64_t i = p / ratio;
        double ss = 0.0;
#pragma unroll
        for (int c = 0; c < COMP_MAXC; c++)
            ss += (double)val[c] * val[c];
        ss = block_sum_d(ss, dred);
        const float inv = (float)(1.0 / sqrt(ss / head + eps));
#pragma unroll
        for (int c = 0; c < COMP_MAXC; c++) {
            const int ch = threadIdx.x + c * COMP_THREADS;
            if (ch < head)
                buf[ch] = val[c] * inv * norm_w[ch];
        }
        __syncthreads();
        float out[COMP_MAXC];
        float amax = 0.0f;
        const int r0 = head - rope_dim;
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
                sincos((double)(i * ratio) * (double)freq[k], &sd, &cd);
                const float cs = (float)cd, sn = (float)sd;
                const float x0 = buf[r0 + 2 * k], x1 = buf[r0 + 2 * k + 1];
                out[c] = ((ch - r0) & 1) ? x1 * cs + x0 * sn : x0 * cs - x1 * sn;
            }
            amax = fmaxf(amax, fabsf(out[c]));
        }
        float scale = 1.0f;
        if (KVT == KV_FP8 || KVT == KV_FP8FNUZ)
            scale = kv_scale_of<KVT>(block_max(amax, fred));
        const int32_t blk = bt[i / epb];
        if (blk >= 0) {
            const int64_t vec = (int64_t)blk * epb + i % epb;
            const float rs = 1.0f / scale;
#pragma unroll
            for (int c = 0; c < COMP_MAXC; c++) {
                const int ch = threadIdx.x + c * COMP_THREADS;
                if (ch < head)
                    kv_put<KVT>(entries, vec * head + ch, KVT == KV_FP8 || KVT == KV_FP8FNUZ ? out[c] * rs : out[c]);
            }
            if ((KVT == KV_FP8 || KVT == KV_FP8FNUZ) && threadIdx.x == 0)
                entry_scale[vec] = scale;
        }
        __syncthreads(); /* buf is rewritten by the next entry */
    }
#pragma unroll
    for (int c = 0; c < COMP_MAXC; c++) {
        const int ch = threadIdx.x + c * COMP_THREADS;
        if (ch < head) {
            cur_base[ch] = cur[c].m, cur_base[head + ch] = cur[c].s, cur_base[2 * head + ch] = cur[c].a;
            if (overlap)
                next_base[ch] = nxt[c].m, next_base[head + ch] = nxt[c].s, next_base[2 * head + ch] = nxt[c].a;
        }
    }
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
    CU_KV_DISPATCH(cb->kv_type, (compress_kernel<KVT><<<st->n_seqs, COMP_THREADS, 0, cb->stream>>>(
                                    entries, scale, acc, a, z, ape, norm_w, inv_freq, *st, sh->ratio, sh->head,
                                    sh->width, sh->overlap, sh->rope_dim, sh->entries_per_block, sh->eps)));
    cu_launched(cb, "compress");
}
