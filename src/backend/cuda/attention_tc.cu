/* Attention on tensor cores (the fast path of the `attention` op; the
 * plain SIMT kernel in attention.cu is the reference it is tested against).
 *
 * The model has one shared K=V head (MQA): all heads of a token attend to
 * the same key vectors, so one block per token (and group of 16 * HT heads)
 * reads each key once and scores it for every head with
 * mma.sync m16n8k16 (bf16 operands, fp32 accumulation):
 *   S[16 HT heads x 32 keys] = Q K^T   and   O[16 HT x d] += P V   (V = K),
 * with an online softmax over tiles of 32 keys whose running max starts at
 * the head's sink. 8 warps: warp w takes head tile w % HT (16 heads) and
 * the (w / HT)-th of 8 / HT slices of the output channels; the warps of a
 * head tile all compute its scores (tensor cores have the room), so no
 * scores cross warps. Keys are gathered from the paged entries, the ring or
 * this step's fp32 rows into shared memory as bf16. HT = 4 (64 heads a
 * block) in general; HT = 1 (16 heads, a 64-channel slice a warp) for
 * steps of a few tokens, whose blocks are too few to hide one block's
 * chain of staging, two products and its records.
 *
 * Split keys: in steps of at most TCA_SPLIT_MAX_TOKENS tokens (decode) one
 * block per token would leave most multiprocessors idle while it walks its
 * tiles, so a token's keys are cut into up to TCA_SPLITS runs of whole
 * tiles, one block each (grid z); a block writes its unnormalised output
 * with its running max and sum (split 0 carries the sink), and
 * attention_combine_kernel merges a token's runs in order. The runs depend
 * only on the token's own key count, never on the batch, so a token's
 * result is the same in any step that takes the same path; larger steps
 * (prefill) take one block per token. */
#include <cuda_bf16.h>

#include "backend/cuda/attention.cuh"

#define TCA_TK 32
#define TCA_THREADS 256
#define TCA_MAXD 512
#define TCA_WARPS (TCA_THREADS / 32)
#define TCA_KPW (TCA_TK / TCA_WARPS) /* keys each warp gathers per tile */
#define TCA_SPLITS 16            /* most runs a token's keys are cut into */
/* Steps of more tokens take one block per token: on an H100 the split cost
 * more than it saved from 32 tokens on (attention per layer, split against
 * unsplit: 40 against 73 us at 1 token, 50 against 70 at 8, 92 against 70
 * at 32, 188 against 72 at 64: bench/results/2026-12-06-h100-gemv against
 * 2026-11-25-h100-moe-bf16x, eager profiles). */
#define TCA_SPLIT_MAX_TOKENS 16
/* Steps of at most this many tokens take blocks of 16 heads (HT = 1): on an
 * H100 (4-layer bench, bf16 KV, 1024-token contexts) the step went from
 * 1.25 to 1.22 ms at 1 token and 2.68 to 2.65 at 8 (attention 30 -> 14 us a
 * layer at 1 token, Nsight Compute); bench/results/2026-12-06-h100-attention-mhc. */
#define TCA_NARROW_MAX_TOKENS 8

/* A token's split: `runs` runs of `per` keys (whole tiles), the last shorter. */
typedef struct tca_split {
    int runs;
    int64_t per;
} tca_split;

static __device__ __forceinline__ tca_split tca_split_of(int64_t total)
{
    const int64_t tiles = (total + TCA_TK - 1) / TCA_TK;
    const int64_t tpr = tiles > TCA_SPLITS ? (tiles + TCA_SPLITS - 1) / TCA_SPLITS : 1; /* tiles per run */
    tca_split sp;
    sp.runs = tiles > 0 ? (int)((tiles + tpr - 1) / tpr) : 1;
    sp.per = tpr * TCA_TK;
    return sp;
}

/* Where run `run` of (token t, head h) keeps its record: d unnormalised
 * output channels, then the running max and sum. */
static __device__ __forceinline__ int64_t tca_run_off(int64_t t, int run, int h, int H, int d)
{
    return ((t * TCA_SPLITS + run) * H + h) * (int64_t)(d + 2);
}

static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

static __device__ __forceinline__ void att_put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* The vector path (d == TCA_MAXD, 16-byte aligned sources): the block's q
 * rows as bf16, four channels per 16-byte load, 8 loads in flight. */
template <int HEADS>
static __device__ __forceinline__ void tca_stage_q_vec(__nv_bfloat16 *Qs, int ld, const float *q, int64_t t, int H,
                                                       int h0)
{
    constexpr int d = TCA_MAXD, n4 = HEADS * d / 4, U = 8;
    for (int i0 = threadIdx.x; i0 < n4; i0 += U * TCA_THREADS) {
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * TCA_THREADS, hh = 4 * i / d, c = 4 * i % d;
            v[u] = i < n4 && h0 + hh < H ? *(const float4 *)(q + (t * H + h0 + hh) * d + c) : make_float4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * TCA_THREADS, hh = 4 * i / d, c = 4 * i % d;
            if (i < n4)
                *(uint2 *)(Qs + hh * ld + c) = make_uint2(pack_bf16(v[u].x, v[u].y), pack_bf16(v[u].z, v[u].w));
        }
    }
}

/* The vector path: key k's channels into its bf16 row of shared memory,
 * lane l moving channels 16l..16l+15 in 16-byte pieces (bf16 storage is
 * copied as it is; fp32 and FP8 convert exactly as kv_load does, then round
 * to bf16 as the per-channel path does, so both give the same bits). */
template <int KVT>
static __device__ __forceinline__ void tca_gather_vec(__nv_bfloat16 *row, const att_key &k, const float *kv, int lane)
{
    constexpr int d = TCA_MAXD, CPL = d / 32; /* 16 channels a lane */
    uint4 *out = (uint4 *)(row + lane * CPL);
    if (!k.valid) {
        out[0] = out[1] = make_uint4(0, 0, 0, 0);
    } else if (k.live || KVT == KV_F32) {
        const float4 *src = (const float4 *)((k.live ? kv : (const float *)k.base) + k.vec * d + lane * CPL);
        const float4 a = src[0], b = src[1], c = src[2], e = src[3];
        out[0] = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
        out[1] = make_uint4(pack_bf16(c.x, c.y), pack_bf16(c.z, c.w), pack_bf16(e.x, e.y), pack_bf16(e.z, e.w));
    } else if (KVT == KV_BF16) {
        const uint4 *src = (const uint4 *)((const uint16_t *)k.base + k.vec * d + lane * CPL);
        const uint4 a = src[0], b = src[1];
        out[0] = a, out[1] = b;
    } else {
        const uint4 w = *(const uint4 *)((const uint8_t *)k.base + k.vec * d + lane * CPL);
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
        uint32_t packed[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint32_t wd = words[j / 2], sh = 16 * (j % 2);
            const uint32_t b0 = (wd >> sh) & 0xFFu, b1 = (wd >> (sh + 8)) & 0xFFu;
            const float f0 = (KVT == KV_FP8 ? e4m3_to_f32(b0) : e4m3fnuz_to_f32(b0)) * k.scale;
            const float f1 = (KVT == KV_FP8 ? e4m3_to_f32(b1) : e4m3fnuz_to_f32(b1)) * k.scale;
            packed[j] = pack_bf16(f0, f1);
        }
        out[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        out[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    }
}

static size_t tca_smem(int heads, int d)
{
    return (size_t)(heads + TCA_TK) * (d + 8) * sizeof(__nv_bfloat16) + TCA_TK * sizeof(int);
}

/* HT head tiles of 16 a block; a thread accumulates 8 HT n8 tiles of
 * output (32 HT registers), so the narrow blocks (HT = 1, 117 registers)
 * fit two to a multiprocessor */
template <int KVT, int HT>
__global__ __launch_bounds__(TCA_THREADS, HT == 1 ? 2 : 1) void attention_tc_kernel(
    float *__restrict__ o, const float *__restrict__ q, const float *__restrict__ kv, const void *ring,
    const float *__restrict__ ring_scale, const void *entries, const float *__restrict__ entry_scale,
    const int32_t *__restrict__ sel, const float *__restrict__ sinks, v4_step st, int H, int d, int window, int kind,
    int ratio, int epb, int topk, float scale, bool vec, float *__restrict__ part)
{
    constexpr int HEADS = 16 * HT, SLICES = TCA_WARPS / HT; /* heads a block, channel slices */
    constexpr int OT = TCA_MAXD / (8 * SLICES);           /* most output n8 tiles a warp */
    extern __shared__ __align__(16) unsigned char sm[];
    const int ld = d + 8; /* row stride in bf16: 16-byte rows, conflict-free ldmatrix */
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)sm; /* [HEADS][ld] */
    __nv_bfloat16 *Ks = Qs + HEADS * ld;     /* [32][ld] */
    int *kvalid = (int *)(Ks + TCA_TK * ld);   /* [32] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t t = blockIdx.x;
    const int h0 = blockIdx.y * HEADS;
    const att_tok tk = att_token(st, t, kind, ratio, topk, window);
    /* keys [k_begin, k_end): all of them, or this block's run (part != NULL) */
    const int run = blockIdx.z;
    int64_t k_begin = 0, k_end = tk.total;
    if (part) {
        const tca_split sp = tca_split_of(tk.total);
        if (run >= sp.runs)
            return; /* the whole block: this token has fewer runs */
        k_begin = run * sp.per;
        k_end = k_begin + sp.per < tk.total ? k_begin + sp.per : tk.total;
    }

    if (vec)
        tca_stage_q_vec<HEADS>(Qs, ld, q, t, H, h0);
    else
        att_stage_q<TCA_THREADS, 16>(Qs, ld, q, t, H, h0, HEADS, d);
    const int hw = warp % HT, dh = warp / HT;      /* head tile, channel slice */
    const int g = lane >> 2, q4 = lane & 3;        /* mma row group, column pair */
    const int ha = h0 + hw * 16 + g, hb = ha + 8;  /* this thread's two head rows */
    const bool active = h0 + hw * 16 < H;
    const int slice = d / SLICES, n_ot = slice / 8; /* the warp's channels */
    /* the sink (exp(sink - m) = 1) belongs to the first run; the others start empty */
    const bool sink = run == 0;
    float m[2] = {!sink ? -INFINITY : ha < H ? sinks[ha] : 0.0f, !sink ? -INFINITY : hb < H ? sinks[hb] : 0.0f};
    float l[2] = {sink ? 1.0f : 0.0f, sink ? 1.0f : 0.0f};
    float acc[OT][4];
#pragma unroll
    for (int i = 0; i < OT; i++)
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

    for (int64_t tile0 = k_begin; tile0 < k_end; tile0 += TCA_TK) {
        __syncthreads(); /* the previous tile has been consumed (and Qs written) */
        /* the warp's TCA_KPW keys: every key's location first (their index
         * loads overlap), then each key's channels with all loads in flight */
        att_key keys[TCA_KPW];
#pragma unroll
        for (int u = 0; u < TCA_KPW; u++)
            keys[u] = att_key_at<KVT>(tk, tile0 + warp + u * TCA_WARPS, t, sel, kind, epb, topk, window, entries,
                                      entry_scale, ring, ring_scale);
#pragma unroll
        for (int u = 0; u < TCA_KPW; u++) {
            const int kt = warp + u * TCA_WARPS;
            __nv_bfloat16 *dst = Ks + kt * ld;
            if (vec) {
                tca_gather_vec<KVT>(dst, keys[u], kv, lane);
            } else {
                float v[TCA_MAXD / 32];
                att_key_load<KVT, TCA_MAXD / 32, 32>(v, keys[u], kv, d, lane);
#pragma unroll
                for (int j = 0; j < TCA_MAXD / 32; j++)
                    if (lane + 32 * j < d)
                        dst[lane + 32 * j] = __float2bfloat16_rn(v[j]);
            }
            if (lane == 0)
                kvalid[kt] = keys[u].valid;
        }
        __syncthreads();
        if (!active)
            continue;

        /* S = Q K^T for the warp's 16 heads and the tile's 32 keys */
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll 4 /* ldmatrix loads of later k-steps issue ahead of the MMAs */
        for (int k0 = 0; k0 < d; k0 += 16) {
            uint32_t a[4];
            ldsm_x4(a, Qs + (hw * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t b[4];
                ldsm_x4(b, Ks + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * ld + k0 + ((lane >> 3) & 1) * 8);
                mma_bf16(s[2 * np], a, b[0], b[1]);
                mma_bf16(s[2 * np + 1], a, b[2], b[3]);
            }
        }

        /* online softmax: rows g (c0, c1) and g + 8 (c2, c3); a row's 32
         * keys are spread over the 4 threads of a quad */
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int key = nt * 8 + q4 * 2 + (j & 1);
                s[nt][j] = kvalid[key] ? s[nt][j] * scale : -INFINITY;
                mx[j >> 1] = fmaxf(mx[j >> 1], s[nt][j]);
            }
        float corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mnew = fmaxf(m[r], mx[r]);
            corr[r] = mnew == -INFINITY ? 1.0f : expf(m[r] - mnew); /* a run with no valid key yet */
            m[r] = mnew;
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float pv = s[nt][j] == -INFINITY ? 0.0f : expf(s[nt][j] - m[j >> 1]);
                s[nt][j] = pv;
                sum[j >> 1] += pv;
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] = l[r] * corr[r] + sum[r];
        }
#pragma unroll
        for (int i = 0; i < OT; i++) {
            acc[i][0] *= corr[0], acc[i][1] *= corr[0];
            acc[i][2] *= corr[1], acc[i][3] *= corr[1];
        }

        /* O += P V over the warp's slice of the channels; the scores' C
         * fragments of two adjacent key tiles are P's A fragment */
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                   pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int np = 0; np < OT / 2; np++) {
                if (2 * np >= n_ot)
                    break;
                const int n0 = dh * slice + np * 16;
                uint32_t b[4];
                ldsm_x4_t(b, Ks + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * ld + n0 + (lane >> 4) * 8);
                mma_bf16(acc[2 * np], a, b[0], b[1]);
                mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
            }
        }
    }
    if (!active)
        return;
    /* the rows of heads ha and hb (NULL past H): with split keys the run's
     * unnormalised output, followed by its max and sum (a quad's lanes
     * share them); else the output, divided by the sum */
    const int hrow[2] = {ha, hb};
    float *row[2];
    float mul[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        row[j] = hrow[j] >= H ? NULL : part ? part + tca_run_off(t, run, hrow[j], H, d) : o + (t * H + hrow[j]) * d;
        mul[j] = part ? 1.0f : 1.0f / l[j];
    }
#pragma unroll
    for (int i = 0; i < OT; i++) {
        if (i >= n_ot)
            break;
        const int ch = dh * slice + i * 8 + q4 * 2; /* even: 8-byte aligned pairs (d and d + 2 even) */
#pragma unroll
        for (int j = 0; j < 2; j++)
            if (row[j])
                *(float2 *)(row[j] + ch) = make_float2(acc[i][2 * j] * mul[j], acc[i][2 * j + 1] * mul[j]);
    }
    if (part && dh == 0 && q4 == 0) {
#pragma unroll
        for (int j = 0; j < 2; j++)
            if (row[j])
                row[j][d] = m[j], row[j][d + 1] = l[j];
    }
}

/* o[t][h] from the token's runs, merged in run order: the largest running
 * max M, weights exp(m_r - M) (0 for a run that saw no valid key), output
 * sum_r w_r acc_r / sum_r w_r l_r. Grid (tokens, heads). */
#define TCA_COMBINE_THREADS 128
#define TCA_COMBINE_CH 4 /* channels a thread of the combine takes at once */
static_assert(TCA_SPLITS <= 32, "one lane per run in the combine");

/* The records of channels c0, c0 + blockDim.x, ... (TCA_COMBINE_CH of them)
 * of every run, all loads in flight together. */
static __device__ __forceinline__ void tca_combine_load(float (&rv)[TCA_COMBINE_CH][TCA_SPLITS], const float *rec0,
                                                        int64_t stride, int runs, int c0, int d)
{
#pragma unroll
    for (int c = 0; c < TCA_COMBINE_CH; c++)
#pragma unroll
        for (int r = 0; r < TCA_SPLITS; r++) {
            const int ch = c0 + c * TCA_COMBINE_THREADS;
            rv[c][r] = r < runs && ch < d ? rec0[r * stride + ch] : 0.0f;
        }
}

/* o = the runs' outputs merged in run order: grid (tokens, heads). Every
 * load is issued before its value is needed (one thread walking the runs'
 * maxima and sums, then each channel's runs one by one, took 8 us a layer
 * at one token on an H100). */
__global__ __launch_bounds__(TCA_COMBINE_THREADS) void attention_combine_kernel(float *__restrict__ o,
                                                                                const float *__restrict__ part,
                                                                                v4_step st, int H, int d, int window,
                                                                                int kind, int ratio, int topk)
{
    __shared__ float w[TCA_SPLITS];
    __shared__ float inv_l;
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y;
    const att_tok tk = att_token(st, t, kind, ratio, topk, window);
    const int runs = tca_split_of(tk.total).runs;
    const float *rec0 = part + tca_run_off(t, 0, h, H, d);
    const int64_t stride = (int64_t)H * (d + 2); /* between runs */
    float rv[TCA_COMBINE_CH][TCA_SPLITS];
    tca_combine_load(rv, rec0, stride, runs, threadIdx.x, d);
    if (threadIdx.x < 32) { /* lane r: run r's max and sum */
        const int lane = threadIdx.x;
        const float mr = lane < runs ? rec0[lane * stride + d] : -INFINITY;
        const float lr = lane < runs ? rec0[lane * stride + d + 1] : 0.0f;
        const float M = warp_max(mr);
        const float wr = mr == -INFINITY ? 0.0f : expf(mr - M);
        if (lane < runs)
            w[lane] = wr;
        float L = 0.0f;
        for (int r = 0; r < runs; r++) /* in run order */
            L += gpu_shfl(wr, r) * gpu_shfl(lr, r);
        if (lane == 0)
            inv_l = 1.0f / L;
    }
    __syncthreads();
    for (int c0 = threadIdx.x; c0 < d; c0 += TCA_COMBINE_CH * TCA_COMBINE_THREADS) {
        if (c0 != (int)threadIdx.x)
            tca_combine_load(rv, rec0, stride, runs, c0, d);
#pragma unroll
        for (int c = 0; c < TCA_COMBINE_CH; c++) {
            const int ch = c0 + c * TCA_COMBINE_THREADS;
            float v = 0.0f;
#pragma unroll
            for (int r = 0; r < TCA_SPLITS; r++)
                if (r < runs)
                    v = fmaf(w[r], rv[c][r], v);
            if (ch < d)
                o[(t * H + h) * d + ch] = v * inv_l;
        }
    }
}

bool attention_tc_supported(const v4_attn_shape *sh)
{
    return sh->head_dim % 32 == 0 && sh->head_dim >= 32 && sh->head_dim <= TCA_MAXD;
}

/* Both block shapes of one KV element type may use their shared memory. */
template <int KVT>
static cudaError_t tca_allow_smem(void)
{
    cudaError_t e = cudaFuncSetAttribute(attention_tc_kernel<KVT, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)tca_smem(64, TCA_MAXD));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_tc_kernel<KVT, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)tca_smem(16, TCA_MAXD));
    return e;
}

int cu_attention_tc_init(cu_backend *cb, v4_err *err)
{
    const size_t need = tca_smem(64, TCA_MAXD);
    if (need > cb->smem_optin)
        return v4_errf(err, "cuda: tensor-core attention needs %zu bytes of shared memory; the device allows %zu",
                       need, cb->smem_optin);
    cudaError_t e = tca_allow_smem<KV_F32>();
    if (e == cudaSuccess)
        e = tca_allow_smem<KV_BF16>();
    if (e == cudaSuccess)
        e = tca_allow_smem<KV_FP8>();
    if (e == cudaSuccess)
        e = tca_allow_smem<KV_FP8FNUZ>();
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: configuring the tensor-core attention kernel: %s", cudaGetErrorString(e));
    return 0;
}

void cu_attention_tc(cu_backend *cb, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                     const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh)
{
    const int n = st->n_tokens, H = sh->n_heads, d = sh->head_dim;
    const bool split = n <= TCA_SPLIT_MAX_TOKENS;
    if (split && !cu_grow(cb, (void **)&cb->att_part, &cb->att_part_bytes,
                          (size_t)n * TCA_SPLITS * H * (d + 2) * sizeof(float), "attention (split keys)"))
        return;
    float *part = split ? cb->att_part : NULL;
    /* 16-head blocks need 64-channel warp slices in whole 16-channel steps */
    const int ht = n <= TCA_NARROW_MAX_TOKENS && d % (16 * TCA_WARPS) == 0 ? 1 : 4;
    const dim3 grid((unsigned)n, (unsigned)((H + 16 * ht - 1) / (16 * ht)), split ? TCA_SPLITS : 1);
    const float scale = 1.0f / sqrtf((float)d);
    /* the 16-byte path for the model's head size; pools and step buffers are
     * cudaMalloc'd, the check keeps any other caller correct */
    const bool vec = d == TCA_MAXD && (uintptr_t)q % 16 == 0 && (uintptr_t)kv % 16 == 0 &&
                     (uintptr_t)lkv->ring % 16 == 0 && (uintptr_t)lkv->entries % 16 == 0;
#define TCA_LAUNCH(HT)                                                                                                \
    CU_KV_DISPATCH(cb->kv_type,                                                                                      \
                   (attention_tc_kernel<KVT, HT><<<grid, TCA_THREADS, tca_smem(16 * HT, d), cb->stream>>>(          \
                       o, q, kv, lkv->ring, lkv->ring_scale, lkv->entries, lkv->entry_scale, sel, sinks, *st, H, d,  \
                       sh->window, (int)sh->kind, sh->ratio, sh->entries_per_block, sh->topk, scale, vec, part)))
    if (ht == 1)
        TCA_LAUNCH(1);
    else
        TCA_LAUNCH(4);
#undef TCA_LAUNCH
    cu_launched(cb, "attention_tc");
    if (!split)
        return;
    attention_combine_kernel<<<dim3((unsigned)n, (unsigned)H), TCA_COMBINE_THREADS, 0, cb->stream>>>(
        o, part, *st, H, d, sh->window, (int)sh->kind, sh->ratio, sh->topk);
    cu_launched(cb, "attention_combine");
}
