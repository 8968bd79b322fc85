/* Shared by the attention kernels (attention.cu: plain SIMT; attention_tc.cu:
 * tensor cores): which keys a token sees and where each one is stored. */
#ifndef V4_BACKEND_CUDA_ATTENTION_CUH
#define V4_BACKEND_CUDA_ATTENTION_CUH

#include "backend/cuda/cu_device.cuh"

/* Where visible key v of a token lives: the CSA-selected or HCA-closed
 * compressed entries first, then the window in position order; positions of
 * this step come from its fp32 kv rows ("live"), earlier ones from the ring. */
typedef struct att_key {
    bool valid, live;
    int64_t vec;      /* vector index in its array */
    const void *base; /* entries or ring (NULL when live) */
    float scale;      /* FP8 storage: the vector's scale */
} att_key;

/* The token's visible-key range: n_comp compressed entries, then the window. */
typedef struct att_tok {
    int64_t p, start, slot, row0, n_comp, first, total;
    const int32_t *bt;
} att_tok;

static __device__ __forceinline__ att_tok att_token(const v4_step &st, int64_t t, int kind, int ratio, int topk,
                                                     int window)
{
    att_tok a;
    const int s = st.tok_seq[t];
    a.p = st.tok_pos[t];
    a.start = st.seq_start[s];
    a.slot = st.seq_slot[s];
    a.row0 = st.seq_row[s];
    a.bt = st.block_table + (int64_t)s * st.max_blocks;
    /* CSA: the selection holds its valid entries first (ascending, then -1),
     * at most one per eligible entry, so columns past that count are -1 */
    const int64_t closed = kind == LAYER_SLIDING ? 0 : (a.p + 1) / ratio;
    a.n_comp = kind == LAYER_CSA ? (closed < topk ? closed : topk) : closed;
    a.first = a.p - window + 1 > 0 ? a.p - window + 1 : 0;
    a.total = a.n_comp + (a.p - a.first + 1);
    return a;
}

template <int KVT>
static __device__ __forceinline__ att_key att_key_at(const att_tok &a, int64_t v, int64_t t, const int32_t *sel,
                                                     int kind, int epb, int topk, int window, const void *entries,
                                                     const float *entry_scale, const void *ring,
                                                     const float *ring_scale)
{
    const bool fp8 = KVT == KV_FP8 || KVT == KV_FP8FNUZ;
    att_key k = {false, false, 0, NULL, 1.0f};
    if (v >= a.total)
        return k;
    if (v < a.n_comp) {
        const int64_t idx = kind == LAYER_CSA ? sel[t * topk + v] : v;
        const int32_t blk = idx >= 0 ? a.bt[idx / epb] : -1;
        if (blk >= 0) {
            k.vec = (int64_t)blk * epb + idx % epb;
            k.base = entries;
            k.scale = fp8 ? entry_scale[k.vec] : 1.0f;
            k.valid = true;
        }
        return k;
    }
    const int64_t qp = a.first + (v - a.n_comp);
    k.valid = true;
    if (qp >= a.start) {
        k.live = true;
        k.vec = a.row0 + (qp - a.start);
    } else {
        k.vec = a.slot * window + qp % window;
        k.base = ring;
        k.scale = fp8 ? ring_scale[k.vec] : 1.0f;
    }
    return k;
}

/* Channels lane, lane + LANES, ... (< d) of key k into v (0 past d and for an
 * invalid key). Unrolled so that all PER loads are in flight together: a
 * loop that stores each value before loading the next waits one memory
 * latency per channel group, which at small batches is most of the kernel. */
template <int KVT, int PER, int LANES>
static __device__ __forceinline__ void att_key_load(float (&v)[PER], const att_key &k, const float *kv, int d, int lane)
{
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int ch = lane + j * LANES;
        v[j] = !k.valid || ch >= d ? 0.0f
               : k.live            ? kv[k.vec * d + ch]
                                   : kv_load<KVT>(k.base, k.vec * d + ch, k.scale);
    }
}

static __device__ __forceinline__ void att_put(float *p, float v) { *p = v; }

/* dst[hh * ld + c] = q row (t, h0 + hh) channel c, for hh < heads (0 for
 * heads past H), with UNROLL loads in flight per thread for the same reason. */
template <int THREADS, int UNROLL, typename T>
static __device__ __forceinline__ void att_stage_q(T *dst, int ld, const float *q, int64_t t, int H, int h0,
                                                   int heads, int d)
{
    const int n = heads * d;
    for (int i0 = threadIdx.x; i0 < n; i0 += UNROLL * THREADS) {
        float v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int i = i0 + u * THREADS, h = h0 + i / d;
            v[u] = i < n && h < H ? q[(t * H + h) * d + i % d] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int i = i0 + u * THREADS;
            if (i < n)
                att_put(dst + i / d * ld + i % d, v[u]);
        }
    }
}

/* The tensor-core kernel (attention_tc.cu) handles head_dim % 32 == 0, <= 512. */
bool attention_tc_supported(const v4_attn_shape *sh);
int cu_attention_tc_init(cu_backend *cb, v4_err *err);
/* false (nothing launched) where the KV pools are not 16-byte aligned */
bool cu_attention_tc(cu_backend *cb, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                     const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh);

#endif
