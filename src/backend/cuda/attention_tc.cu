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
 * the (w / HT)-th of 8 / HT slices of the output channels. With HT = 4 the
 * two warps of a head tile score 16 keys each and swap maxima and P through
 * shared memory (tca_tile_split: each key's row is read from shared memory
 * by 4 warps for the scores, not 8); with HT = 1 every warp scores all 32
 * keys (tca_tile), so no scores cross warps. Keys are gathered from the
 * paged entries, the ring or this step's rows into shared memory as bf16,
 * the next tile's copies in flight while a tile is multiplied (tca_issue
 * below). HT = 4 (64 heads a block) in general; HT = 1 (16 heads, a
 * 64-channel slice a warp) for steps of a few tokens, whose blocks are too
 * few to hide one block's chain of staging, two products and its records.
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
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/mma_sync.cuh"

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

/* ---- the key gather, pipelined one tile ahead ----
 * A warp owns keys kt = warp + 8u (u < TCA_KPW) of every tile. Their
 * locations are resolved TCA_BATCH tiles at a time, one key a lane (lane =
 * tile of the batch * TCA_KPW + u), a batch ahead of use, so the chain of
 * index loads (selection, block table, FP8 scale) is waited for once per
 * batch. A key's row is copied with cp.async as stored (the KV type; this
 * step's own rows from their bf16 copy, kvb) into its raw row while the tile
 * before it is multiplied, and converted to bf16 after. Lane l copies and
 * converts the 16-byte pieces l, l + 32, ... of each row, so a thread reads
 * only what its own copies wrote. */
#define TCA_BATCH 8
static_assert(TCA_BATCH * TCA_KPW == 32, "one key of a batch a lane");

enum { TCA_NONE, TCA_LIVE, TCA_RING, TCA_ENTRY }; /* where a key's row comes from */

/* A key's location: its vector index in its source, and its FP8 scale. */
typedef struct tca_loc {
    int64_t vec;
    float scale;
    int src;
} tca_loc;

/* The lane's key of the batch starting at key b0 (a lane whose tile is past
 * the block's last resolves a key that is never copied). */
template <int KVT>
static __device__ __forceinline__ tca_loc tca_resolve(const att_tok &tk, int64_t b0, int64_t t, const int32_t *sel,
                                                      int kind, int epb, int topk, int window, const void *entries,
                                                      const float *entry_scale, const void *ring,
                                                      const float *ring_scale, int warp, int lane)
{
    const int64_t v = b0 + (int64_t)(lane / TCA_KPW) * TCA_TK + warp + (lane % TCA_KPW) * TCA_WARPS;
    const att_key k =
        att_key_at<KVT>(tk, v, t, sel, kind, epb, topk, window, entries, entry_scale, ring, ring_scale);
    tca_loc l;
    l.vec = k.vec;
    l.scale = k.scale;
    l.src = !k.valid ? TCA_NONE : k.live ? TCA_LIVE : k.base == ring ? TCA_RING : TCA_ENTRY;
    return l;
}

/* Bytes of a raw row: the larger of a stored row and a bf16 one (this
 * step's rows). */
template <int KVT> static __host__ __device__ __forceinline__ int tca_rawb(int d)
{
    return d * (kv_elem_size(KVT) > 2 ? kv_elem_size(KVT) : 2);
}

/* What the two warps of a split head tile swap, per head tile (at most 4 a
 * block): their rows' maxima, then sums (floats), and their halves of P (one
 * 16-byte fragment a lane). */
#define TCA_XM 32
#define TCA_XP 64

/* Issues the copies of the warp's keys of tile j (the lanes' batch `cur`
 * starts at tile j0) into their raw rows, and records each key's source. */
template <int KVT>
static __device__ __forceinline__ void tca_issue(const tca_loc &cur, int64_t j, int64_t j0, uint8_t *raw, int rawb,
                                                 int2 *kinfo, const uint16_t *kvb, const void *ring,
                                                 const void *entries, int d, int warp, int lane)
{
    constexpr int ES = kv_elem_size(KVT); /* bytes of a stored channel */
#pragma unroll
    for (int u = 0; u < TCA_KPW; u++) {
        const int from = (int)(j - j0) * TCA_KPW + u, kt = warp + u * TCA_WARPS;
        const int src = __shfl_sync(0xffffffffu, cur.src, from);
        const float sc = __shfl_sync(0xffffffffu, cur.scale, from);
        const int64_t vec = __shfl_sync(0xffffffffu, cur.vec, from);
        const int bytes = src == TCA_LIVE ? d * 2 : d * ES;
        const uint8_t *row = src == TCA_LIVE   ? (const uint8_t *)kvb + vec * d * 2
                             : src == TCA_RING ? (const uint8_t *)ring + vec * d * ES
                                               : (const uint8_t *)entries + vec * d * ES;
        if (src != TCA_NONE)
            for (int p = lane; p * 16 < bytes; p += 32)
                tc_cp16(raw + kt * rawb + p * 16, row + p * 16, 16);
        if (lane == 0)
            kinfo[kt] = make_int2(src, __float_as_int(sc));
    }
}

/* The warp's keys of the tile just copied, into their bf16 rows of Ks
 * (zeros for a key that is not there); fp32 and FP8 convert exactly as
 * kv_load does, then round to bf16 (as this step's rows were). */
template <int KVT>
static __device__ __forceinline__ void tca_convert(__nv_bfloat16 *Ks, int ld, const uint8_t *raw, int rawb,
                                                   const int2 *kinfo, int *kvalid, int d, int warp, int lane)
{
    __syncwarp(); /* kinfo, written by lane 0 */
#pragma unroll
    for (int u = 0; u < TCA_KPW; u++) {
        const int kt = warp + u * TCA_WARPS;
        const int2 info = kinfo[kt];
        __nv_bfloat16 *dst = Ks + kt * ld;
        const uint8_t *r = raw + kt * rawb;
        if (info.x == TCA_NONE) {
            for (int p = lane; p < d / 8; p += 32)
                *(uint4 *)(dst + 8 * p) = make_uint4(0, 0, 0, 0);
        } else if (info.x == TCA_LIVE || KVT == KV_BF16) {
            for (int p = lane; p < d / 8; p += 32)
                *(uint4 *)(dst + 8 * p) = *(const uint4 *)(r + 16 * p);
        } else if (KVT == KV_F32) {
            for (int p = lane; p < d / 4; p += 32) {
                const float4 v = *(const float4 *)(r + 16 * p);
                *(uint2 *)(dst + 4 * p) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
            }
        } else {
            const float sc = __int_as_float(info.y);
            for (int p = lane; p < d / 16; p += 32) {
                const uint4 w = *(const uint4 *)(r + 16 * p);
                const uint32_t words[4] = {w.x, w.y, w.z, w.w};
                uint32_t packed[8];
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const uint32_t wd = words[j / 2], sh = 16 * (j % 2);
                    const uint32_t b0 = (wd >> sh) & 0xFFu, b1 = (wd >> (sh + 8)) & 0xFFu;
                    const float f0 = (KVT == KV_FP8 ? e4m3_to_f32(b0) : e4m3fnuz_to_f32(b0)) * sc;
                    const float f1 = (KVT == KV_FP8 ? e4m3_to_f32(b1) : e4m3fnuz_to_f32(b1)) * sc;
                    packed[j] = pack_bf16(f0, f1);
                }
                *(uint4 *)(dst + 16 * p) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
                *(uint4 *)(dst + 16 * p + 8) = make_uint4(packed[4], packed[5], packed[6], packed[7]);
            }
        }
        if (lane == 0)
            kvalid[kt] = info.x != TCA_NONE;
    }
}

/* ---- one tile of 32 keys: scores, online softmax, P V ----
 * A thread holds rows g and g + 8 of its warp's 16 heads (m, l: running max
 * and sum) and the warp's slice of the output channels (acc). */

/* O += P V over the warp's slice of the channels; a[kk] is P's A fragment
 * for keys 16 kk.. (the scores' C fragments of two adjacent n8 tiles). */
template <int OT>
static __device__ __forceinline__ void tca_pv(const uint32_t (&a)[2][4], const __nv_bfloat16 *Ks, int ld, int dh,
                                              int slice, int n_ot, float (&acc)[OT][4])
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < 2; kk++)
#pragma unroll
        for (int np = 0; np < OT / 2; np++) {
            if (2 * np >= n_ot)
                break;
            const int n0 = dh * slice + np * 16;
            uint32_t b[4];
            ldsm_x4_t(b, Ks + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * ld + n0 + (lane >> 4) * 8);
            mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
            mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
        }
}

/* The online softmax's step for NT n8 tiles of scores s (keys key0 + 8 nt +
 * 2 q4 + (j & 1)), given the rows' maxima over the tile so far (mx, over
 * the quad and, when split, the partner warp): scales s, m, l (by this
 * warp's keys) and acc; s becomes P. */
template <int NT, int OT>
static __device__ __forceinline__ void tca_softmax(float (&s)[NT][4], float (&mx)[2], float (&m)[2], float (&l)[2],
                                                   float (&acc)[OT][4])
{
    float corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float mnew = fmaxf(m[r], mx[r]);
        corr[r] = mnew == -INFINITY ? 1.0f : expf(m[r] - mnew); /* a run with no valid key yet */
        m[r] = mnew;
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
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
}

/* Scores of NT n8 tiles of keys from key0 (masked, scaled) and their rows'
 * maxima over the quad. */
template <int NT>
static __device__ __forceinline__ void tca_scores(float (&s)[NT][4], float (&mx)[2], const __nv_bfloat16 *Qs,
                                                  const __nv_bfloat16 *Ks, int ld, int d, const int *kvalid,
                                                  float scale, int hw, int key0)
{
    const int lane = threadIdx.x & 31, q4 = lane & 3;
#pragma unroll
    for (int i = 0; i < NT; i++)
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll 4 /* ldmatrix loads of later k-steps issue ahead of the MMAs */
    for (int k0 = 0; k0 < d; k0 += 16) {
        uint32_t a[4];
        ldsm_x4(a, Qs + (hw * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];
            ldsm_x4(b, Ks + (key0 + np * 16 + (lane >> 4) * 8 + (lane & 7)) * ld + k0 + ((lane >> 3) & 1) * 8);
            mma_bf16(s[2 * np], a, b[0], b[1]);
            mma_bf16(s[2 * np + 1], a, b[2], b[3]);
        }
    }
    /* rows g (c0, c1) and g + 8 (c2, c3); a row's keys are spread over the
     * 4 threads of a quad */
    mx[0] = mx[1] = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int key = key0 + nt * 8 + q4 * 2 + (j & 1);
            s[nt][j] = kvalid[key] ? s[nt][j] * scale : -INFINITY;
            mx[j >> 1] = fmaxf(mx[j >> 1], s[nt][j]);
        }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
}

static __device__ __forceinline__ void tca_pack_p(uint32_t (&a)[4], const float (&s0)[4], const float (&s1)[4])
{
    a[0] = pack_bf16(s0[0], s0[1]), a[1] = pack_bf16(s0[2], s0[3]);
    a[2] = pack_bf16(s1[0], s1[1]), a[3] = pack_bf16(s1[2], s1[3]);
}

/* The tile with every warp of a head tile scoring all 32 keys (no scores
 * cross warps; HT = 1, where 8 warps share 16 heads). */
template <int OT>
static __device__ __forceinline__ void tca_tile(const __nv_bfloat16 *Qs, const __nv_bfloat16 *Ks, int ld, int d,
                                                const int *kvalid, float scale, int hw, int dh, int slice, int n_ot,
                                                float (&m)[2], float (&l)[2], float (&acc)[OT][4])
{
    float s[4][4], mx[2];
    tca_scores<4>(s, mx, Qs, Ks, ld, d, kvalid, scale, hw, 0);
    tca_softmax<4, OT>(s, mx, m, l, acc);
    uint32_t a[2][4];
    tca_pack_p(a[0], s[0], s[1]);
    tca_pack_p(a[1], s[2], s[3]);
    tca_pv<OT>(a, Ks, ld, dh, slice, n_ot, acc);
}

/* The tile with the two warps of a head tile (slices dh = 0, 1) scoring 16
 * keys each (16 dh..): they swap their rows' maxima (xm: [2][16]) and their
 * halves of P (xp: [2][32 lanes]), so m is the same in both and each
 * multiplies all 32 keys into its slice; l is this warp's keys' share.
 * The same scores, maxima and P as tca_tile, for half the loads of keys.
 * Every warp of the block calls it (the swaps wait at block barriers);
 * the warps of a head tile past the heads (!active) only wait. */
template <int OT>
static __device__ __forceinline__ void tca_tile_split(const __nv_bfloat16 *Qs, const __nv_bfloat16 *Ks, int ld, int d,
                                                      const int *kvalid, float scale, float *xm, uint4 *xp, int hw,
                                                      int dh, int slice, int n_ot, bool active, float (&m)[2],
                                                      float (&l)[2], float (&acc)[OT][4])
{
    const int lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    float s[2][4], mx[2];
    if (active) {
        tca_scores<2>(s, mx, Qs, Ks, ld, d, kvalid, scale, hw, 16 * dh);
        if (q4 == 0)
            xm[dh * 16 + g] = mx[0], xm[dh * 16 + g + 8] = mx[1];
    }
    __syncthreads();
    uint32_t own[4];
    if (active) {
        mx[0] = fmaxf(mx[0], xm[(1 - dh) * 16 + g]);
        mx[1] = fmaxf(mx[1], xm[(1 - dh) * 16 + g + 8]);
        tca_softmax<2, OT>(s, mx, m, l, acc);
        tca_pack_p(own, s[0], s[1]);
        xp[dh * 32 + lane] = make_uint4(own[0], own[1], own[2], own[3]);
    }
    __syncthreads();
    if (!active)
        return;
    const uint4 o = xp[(1 - dh) * 32 + lane];
    const uint32_t other[4] = {o.x, o.y, o.z, o.w};
    uint32_t a[2][4]; /* by key half: selects, not an indexed array (local memory) */
#pragma unroll
    for (int i = 0; i < 4; i++)
        a[0][i] = dh ? other[i] : own[i], a[1][i] = dh ? own[i] : other[i];
    tca_pv<OT>(a, Ks, ld, dh, slice, n_ot, acc);
}

/* After the last tile of a split head tile: l = both warps' shares, added
 * in slice order (xm reused: every read of the maxima precedes the last
 * tile's second barrier). Every warp of the block calls it. */
static __device__ __forceinline__ void tca_sum_pair(float (&l)[2], float *xm, int dh, bool active)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    if (active && q4 == 0)
        xm[dh * 16 + g] = l[0], xm[dh * 16 + g + 8] = l[1];
    __syncthreads();
    if (active) {
        l[0] = xm[g] + xm[16 + g];
        l[1] = xm[g + 8] + xm[16 + g + 8];
    }
}

/* Shared memory: the q rows and one tile of keys in bf16 (rows of d + 8),
 * the tile's raw rows, each key's source and validity, and what the warps
 * of a split head tile swap (4 head tiles: maxima, P). */
template <int KVT> static size_t tca_smem(int heads, int d)
{
    return (size_t)(heads + TCA_TK) * (d + 8) * sizeof(__nv_bfloat16) + (size_t)TCA_TK * tca_rawb<KVT>(d) +
           TCA_TK * (sizeof(int2) + sizeof(int)) + 4 * (TCA_XM * sizeof(float) + TCA_XP * sizeof(uint4));
}

/* HT head tiles of 16 a block; a thread accumulates 8 HT n8 tiles of
 * output (32 HT registers), so the narrow blocks (HT = 1, 126 registers,
 * 88 KB of shared memory with bf16 or FP8 KV) fit two to a multiprocessor */
template <int KVT, int HT>
__global__ __launch_bounds__(TCA_THREADS, HT == 1 ? 2 : 1) void attention_tc_kernel(
    float *__restrict__ o, const float *__restrict__ q, const uint16_t *__restrict__ kvb, const void *ring,
    const float *__restrict__ ring_scale, const void *entries, const float *__restrict__ entry_scale,
    const int32_t *__restrict__ sel, const float *__restrict__ sinks, v4_step st, int H, int d, int window, int kind,
    int ratio, int epb, int topk, float scale, bool vec, float *__restrict__ part)
{
    constexpr int HEADS = 16 * HT, SLICES = TCA_WARPS / HT; /* heads a block, channel slices */
    constexpr int OT = TCA_MAXD / (8 * SLICES);           /* most output n8 tiles a warp */
    constexpr bool SPLIT_QK = SLICES == 2;                /* tca_tile_split */
    extern __shared__ __align__(16) unsigned char sm[];
    const int ld = d + 8; /* row stride in bf16: 16-byte rows, conflict-free ldmatrix */
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)sm; /* [HEADS][ld] */
    __nv_bfloat16 *Ks = Qs + HEADS * ld;     /* [32][ld] */
    const int rawb = tca_rawb<KVT>(d);
    uint8_t *raw = (uint8_t *)(Ks + TCA_TK * ld); /* [32][rawb] */
    int2 *kinfo = (int2 *)(raw + TCA_TK * rawb);  /* [32]: source, FP8 scale */
    int *kvalid = (int *)(kinfo + TCA_TK);        /* [32] */
    float *xm = (float *)(kvalid + TCA_TK);       /* [4][TCA_XM] */
    uint4 *xp = (uint4 *)(xm + 4 * TCA_XM);       /* [4][TCA_XP] */
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

    /* the first tile's copies fly while q is staged */
    const int64_t ntiles = (k_end - k_begin + TCA_TK - 1) / TCA_TK;
    tca_loc cur = tca_resolve<KVT>(tk, k_begin, t, sel, kind, epb, topk, window, entries, entry_scale, ring,
                                   ring_scale, warp, lane);
    tca_loc nxt = cur;
    if (ntiles > TCA_BATCH)
        nxt = tca_resolve<KVT>(tk, k_begin + TCA_BATCH * TCA_TK, t, sel, kind, epb, topk, window, entries,
                               entry_scale, ring, ring_scale, warp, lane);
    if (ntiles > 0)
        tca_issue<KVT>(cur, 0, 0, raw, rawb, kinfo, kvb, ring, entries, d, warp, lane);
    tc_commit();
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
    const float l0 = sink && (!SPLIT_QK || dh == 0) ? 1.0f : 0.0f; /* split: slice 0 holds the sink's share */
    float l[2] = {l0, l0};
    float acc[OT][4];
#pragma unroll
    for (int i = 0; i < OT; i++)
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

    for (int64_t tile = 0; tile < ntiles; tile++) {
        tc_wait<0>();
        __syncthreads(); /* the previous tile has been consumed (and Qs written) */
        tca_convert<KVT>(Ks, ld, raw, rawb, kinfo, kvalid, d, warp, lane);
        __syncthreads();
        if (tile + 1 < ntiles) { /* the next tile's copies, in flight during this tile's products */
            const int64_t j0 = (tile + 1) / TCA_BATCH * TCA_BATCH;
            if (j0 == tile + 1) {
                cur = nxt;
                if (j0 + TCA_BATCH < ntiles)
                    nxt = tca_resolve<KVT>(tk, k_begin + (j0 + TCA_BATCH) * TCA_TK, t, sel, kind, epb, topk, window,
                                           entries, entry_scale, ring, ring_scale, warp, lane);
            }
            tca_issue<KVT>(cur, tile + 1, j0, raw, rawb, kinfo, kvb, ring, entries, d, warp, lane);
        }
        tc_commit();
        if constexpr (SPLIT_QK)
            tca_tile_split(Qs, Ks, ld, d, kvalid, scale, xm + hw * TCA_XM, xp + hw * TCA_XP, hw, dh, slice, n_ot,
                           active, m, l, acc);
        else if (active)
            tca_tile(Qs, Ks, ld, d, kvalid, scale, hw, dh, slice, n_ot, m, l, acc);
    }
    if constexpr (SPLIT_QK) /* the row sums: this warp's keys and its partner's, added in slice order */
        tca_sum_pair(l, xm + hw * TCA_XM, dh, active);
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
                                         (int)tca_smem<KVT>(64, TCA_MAXD));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(attention_tc_kernel<KVT, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)tca_smem<KVT>(16, TCA_MAXD));
    return e;
}

int cu_attention_tc_init(cu_backend *cb, v4_err *err)
{
    const size_t need = tca_smem<KV_F32>(64, TCA_MAXD); /* the most of any KV type */
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

bool cu_attention_tc(cu_backend *cb, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                     const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh)
{
    const int n = st->n_tokens, H = sh->n_heads, d = sh->head_dim;
    /* the keys are copied in 16-byte pieces: pools and step buffers are
     * cudaMalloc'd, the check keeps any other caller correct (on the plain
     * kernel) */
    if ((uintptr_t)lkv->ring % 16 != 0 || (uintptr_t)lkv->entries % 16 != 0)
        return false;
    const bool split = n <= TCA_SPLIT_MAX_TOKENS;
    if (split && !cu_grow(cb, (void **)&cb->att_part, &cb->att_part_bytes,
                          (size_t)n * TCA_SPLITS * H * (d + 2) * sizeof(float), "attention (split keys)"))
        return true;
    if (!cu_grow(cb, (void **)&cb->att_kvb, &cb->att_kvb_bytes, (size_t)n * d * sizeof(uint16_t),
                 "attention (the step's keys in bf16)"))
        return true;
    cu_to_bf16(cb, cb->att_kvb, kv, (int64_t)n * d);
    float *part = split ? cb->att_part : NULL;
    /* 16-head blocks need 64-channel warp slices in whole 16-channel steps */
    const int ht = n <= TCA_NARROW_MAX_TOKENS && d % (16 * TCA_WARPS) == 0 ? 1 : 4;
    const dim3 grid((unsigned)n, (unsigned)((H + 16 * ht - 1) / (16 * ht)), split ? TCA_SPLITS : 1);
    const float scale = 1.0f / sqrtf((float)d);
    const bool vec = d == TCA_MAXD && (uintptr_t)q % 16 == 0; /* q staged in 16-byte pieces */
#define TCA_LAUNCH(HT)                                                                                                \
    CU_KV_DISPATCH(cb->kv_type,                                                                                      \
                   (attention_tc_kernel<KVT, HT><<<grid, TCA_THREADS, tca_smem<KVT>(16 * HT, d), cb->stream>>>(     \
                       o, q, cb->att_kvb, lkv->ring, lkv->ring_scale, lkv->entries, lkv->entry_scale, sel, sinks,   \
                       *st, H, d, sh->window, (int)sh->kind, sh->ratio, sh->entries_per_block, sh->topk, scale, vec, \
                       part)))
    if (ht == 1)
        TCA_LAUNCH(1);
    else
        TCA_LAUNCH(4);
#undef TCA_LAUNCH
    cu_launched(cb, "attention_tc");
    if (!split)
        return true;
    attention_combine_kernel<<<dim3((unsigned)n, (unsigned)H), TCA_COMBINE_THREADS, 0, cb->stream>>>(
        o, part, *st, H, d, sh->window, (int)sh->kind, sh->ratio, sh->topk);
    cu_launched(cb, "attention_combine");
    return true;
}
