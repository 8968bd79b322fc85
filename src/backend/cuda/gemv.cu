/* Matrix-vector products for steps of a few tokens (decode), reading each
 * weight byte once at the memory's rate: the fast path of cu_linear for
 * steps of at most cb->gemv_max_tokens tokens (default GEMV_MAX_TOKENS;
 * V4_CUDA_GEMV_MAX_TOKENS=0 turns it off) over FP8 (either dialect, 128x128
 * UE8M0 block scales) and BF16 weights, and of cu_moe_experts over MXFP4
 * and FP8 experts (one block row per (token, choice) pair: at a few tokens
 * the pairs rarely share an expert). Matrices of 1024, 2048, 4096 or 8192
 * columns (2048 up for MXFP4); anything else takes the tensor-core kernels
 * or cuBLASLt. At one token those spent most of a small projection's time
 * ramping up (a 2 MB projection took 7-9 us, bench/RESULTS.md) and read a
 * narrow one's bf16 copy, twice its stored bytes.
 *
 * A block of GEMV_WARPS warps computes GEMV_ROWS output rows for every
 * token of the step. The columns are split over the warps, CPL = C / 256
 * consecutive ones per lane, so each lane holds its columns of every
 * token's input in registers for all the block's rows, and its weight loads
 * (CPL bytes of FP8, 2 CPL of BF16, CPL / 2 of MXFP4) are coalesced across
 * the warp; a lane's columns share one block scale, applied to its partial
 * sum (a power of two: exact). Activations stay fp32 and weights decode
 * exactly, so the result is as accurate as the plain kernels. Partial sums
 * leave the warp through one reduce-scatter over its values and are added
 * over the warps in warp order: a token's result does not depend on the
 * other tokens of the step. */
#include <string.h>

#include "backend/cuda/cu_device.cuh"

#define GEMV_MAX_TOKENS 4
#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / GPU_WARP)
#define GEMV_ROWS 8
#define GEMV_LANE_COLS (GEMV_WARPS * GPU_WARP) /* C = CPL * this */

/* Rows loaded together per warp: as many as the registers allow beside the
 * inputs (CPL per token). */
template <int WORDS, int CPL, int NT> struct gemv_geom {
    static constexpr int RB = WORDS * 8 + CPL * NT <= 160 ? 8 : WORDS * 4 + CPL * NT <= 160 ? 4 : 2;
};

/* Eight MXFP4 codes (value 2i: the low nibble of byte i) as fp32 values
 * times 2^-14, exactly: an e2m1 code s.e1e0.m is the half-precision number
 * with sign s, exponent field e1e0 and mantissa m000000000 scaled by 2^14
 * (normal for e > 0, subnormal for e = 0), so each code becomes a half's
 * high byte, s << 7 | e1e0m << 1, four at a time; the caller multiplies
 * its sum by 2^14. */
static __device__ __forceinline__ void mxfp4x8_to_f32_scaled(uint32_t v, float f[8])
{
    const uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
    const uint32_t bl = ((lo & 0x08080808u) << 4) | ((lo & 0x07070707u) << 1);
    const uint32_t bh = ((hi & 0x08080808u) << 4) | ((hi & 0x07070707u) << 1);
    const uint32_t h[4] = {__byte_perm(bl, 0u, 0x1404u), __byte_perm(bl, 0u, 0x3424u), __byte_perm(bh, 0u, 0x1404u),
                           __byte_perm(bh, 0u, 0x3424u)};
    float2 p[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 hv;
        memcpy(&hv, &h[i], 4);
        p[i] = __half22float2(hv);
    }
    f[0] = p[0].x, f[2] = p[0].y, f[4] = p[1].x, f[6] = p[1].y;
    f[1] = p[2].x, f[3] = p[2].y, f[5] = p[3].x, f[7] = p[3].y;
}

template <int FMT> struct gemv_fmt {
    static constexpr int WPL = FMT == CW_BF16 ? 2 : FMT == CW_MXFP4 ? 8 : 4; /* weights per 32-bit word */
};

/* Adds a lane's products of one row piece (WORDS words) with the inputs. */
template <int FMT, int CPL, int NT>
static __device__ __forceinline__ void gemv_dot(const uint32_t *wv, const float (&xv)[NT][CPL], float (&s)[NT])
{
    constexpr int WPL = gemv_fmt<FMT>::WPL, WORDS = CPL / WPL;
#pragma unroll
    for (int i = 0; i < WORDS; i++) {
        float f[WPL];
        if (FMT == CW_BF16) {
            f[0] = bf16_to_f32(wv[i] & 0xFFFFu), f[1] = bf16_to_f32(wv[i] >> 16);
        } else if (FMT == CW_FP8) {
            e4m3x4_to_f32(wv[i], f);
        } else if (FMT == CW_FP8FNUZ) {
#pragma unroll
            for (int j = 0; j < 4; j++)
                f[j] = e4m3fnuz_to_f32((wv[i] >> (8 * j)) & 0xFFu);
        } else {
            mxfp4x8_to_f32_scaled(wv[i], f);
        }
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int j = 0; j < WPL; j++)
                s[t] = fmaf(f[j], xv[t][WPL * i + j], s[t]);
    }
}

/* The scale of a lane's piece of row r: FP8 per 128x128 block, MXFP4 per
 * 32 columns (times 2^14, see mxfp4x8_to_f32_scaled), 1 for BF16. */
template <int FMT>
static __device__ __forceinline__ float gemv_scale(const cu_wdesc &w, int64_t r, int64_t c0, float sum)
{
    if (FMT == CW_BF16)
        return sum;
    if (FMT == CW_MXFP4)
        return sum * 16384.0f * e8m0_to_f32(w.scale[r * (w.cols / 32) + c0 / 32]);
    return sum * e8m0_to_f32(w.scale[(r >> 7) * ((w.cols + 127) / 128) + (c0 >> 7)]);
}

/* res[rr * NT + t] (shared, written by the block's first GEMV_ROWS * NT
 * threads after a barrier) = row r0 + rr of w . xt[t] for the NT inputs
 * (absent ones, t >= n, read as zeros). Every thread of the block calls it. */
template <int FMT, int CPL, int NT>
static __device__ __forceinline__ float gemv_block(const cu_wdesc &w, int64_t r0, const float *const (&xt)[NT], int n,
                                                   int *which)
{
    /* (MXFP4 at 4 columns a lane is instantiated by the dispatch, never run: gemv_cpl) */
    constexpr int WPL = gemv_fmt<FMT>::WPL, WORDS = CPL / WPL > 0 ? CPL / WPL : 1;
    constexpr int RB = gemv_geom<WORDS, CPL, NT>::RB;
    constexpr int V = RB * NT; /* values a warp reduces per batch of rows */
    constexpr int EB4 = 4 * WORDS; /* bytes of a lane's row piece */
    __shared__ float part[GEMV_WARPS][GEMV_ROWS * NT];
    const int lane = gpu_lane(), warp = gpu_warp_id();
    const int64_t C = w.cols, c0 = (int64_t)warp * (C / GEMV_WARPS) + lane * CPL;
    const int64_t row_bytes = C * 4 / WPL;

    float xv[NT][CPL];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *src = (const float4 *)(xt[t] + c0);
#pragma unroll
        for (int j = 0; j < CPL / 4; j++) {
            const float4 v = t < n ? src[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            xv[t][4 * j] = v.x, xv[t][4 * j + 1] = v.y, xv[t][4 * j + 2] = v.z, xv[t][4 * j + 3] = v.w;
        }
    }
#pragma unroll
    for (int rb = 0; rb < GEMV_ROWS; rb += RB) {
        uint32_t wv[RB][WORDS];
#pragma unroll
        for (int u = 0; u < RB; u++) {
            const uint8_t *src = w.data + (r0 + rb + u) * row_bytes + c0 * 4 / WPL;
            if (EB4 % 16 == 0) {
#pragma unroll
                for (int k = 0; k < WORDS / 4; k++) {
                    const uint4 q = ((const uint4 *)src)[k];
                    wv[u][4 * k] = q.x, wv[u][4 * k + 1] = q.y, wv[u][4 * k + 2] = q.z, wv[u][4 * k + 3] = q.w;
                }
            } else if (EB4 == 8) {
                const uint2 q = *(const uint2 *)src;
                wv[u][0] = q.x, wv[u][1] = q.y;
            } else {
                wv[u][0] = *(const uint32_t *)src;
            }
        }
        float s[V];
#pragma unroll
        for (int u = 0; u < RB; u++) {
            float su[NT];
#pragma unroll
            for (int t = 0; t < NT; t++)
                su[t] = 0.0f;
            gemv_dot<FMT, CPL, NT>(wv[u], xv, su);
#pragma unroll
            for (int t = 0; t < NT; t++)
                s[u * NT + t] = gemv_scale<FMT>(w, r0 + rb + u, c0, su[t]);
        }
        int idx;
        const float tot = warp_reduce_scatter<V>(s, lane, &idx);
        if (lane % (GPU_WARP / V) == 0)
            part[warp][rb * NT + idx] = tot;
    }
    __syncthreads();
    float v = 0.0f;
    if (threadIdx.x < GEMV_ROWS * NT) {
#pragma unroll
        for (int k = 0; k < GEMV_WARPS; k++)
            v += part[k][threadIdx.x];
    }
    *which = threadIdx.x; /* row (which / NT) and token (which % NT) of the value, when < GEMV_ROWS * NT */
    __syncthreads(); /* part may be reused by a following call */
    return v;
}

/* Linear layer; grid: one block per GEMV_ROWS rows (a block never spans
 * two groups). y[t][r] = sum_c W[r][c] x[t][g*C + c] for the row's group g. */
template <int FMT, int CPL, int NT>
__global__ __launch_bounds__(GEMV_THREADS) void gemv_kernel(float *__restrict__ y, const float *__restrict__ x, int n,
                                                            cu_wdesc w, int groups)
{
    const int64_t R = w.rows, C = w.cols, per = R / groups;
    const int64_t r0 = (int64_t)blockIdx.x * GEMV_ROWS, g = r0 / per;
    const float *xt[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        xt[t] = x + ((int64_t)(t < n ? t : 0) * groups + g) * C;
    int which;
    const float v = gemv_block<FMT, CPL, NT>(w, r0, xt, n, &which);
    if (which < GEMV_ROWS * NT && which % NT < n)
        y[(int64_t)(which % NT) * R + r0 + which / NT] = v;
}

/* MoE up for pair p = blockIdx.y (token p / k, expert ids[p]): h[p][j] =
 * swiglu(w1[e][j] . x, w3[e][j] . x) for the block's GEMV_ROWS rows j, as
 * the plain kernel (clamped gate and up). */
template <int FMT, int CPL>
__global__ __launch_bounds__(GEMV_THREADS) void moe_gemv_up_kernel(float *__restrict__ h,
                                                                   const float *__restrict__ x,
                                                                   const int32_t *__restrict__ ids,
                                                                   const cu_wdesc *__restrict__ tab, int E, int k,
                                                                   int64_t D, int64_t I, float limit)
{
    __shared__ float gate[GEMV_ROWS];
    const int64_t p = blockIdx.y, j0 = (int64_t)blockIdx.x * GEMV_ROWS;
    const int e = ids[p];
    if (e < 0 || e >= E)
        return; /* the whole block: combine skips the pair */
    const float *xt[1] = {x + (p / k) * D};
    int which;
    const float g = gemv_block<FMT, CPL, 1>(tab[e], j0, xt, 1, &which);
    if (which < GEMV_ROWS)
        gate[which] = g;
    const float u = gemv_block<FMT, CPL, 1>(tab[2 * E + e], j0, xt, 1, &which); /* its barriers order gate */
    if (which < GEMV_ROWS) {
        const float gv = fminf(gate[which], limit), uv = fminf(fmaxf(u, -limit), limit);
        h[p * I + j0 + which] = gv / (1.0f + expf(-gv)) * uv;
    }
}

/* MoE down for pair p = blockIdx.y: out[p][o] = w2[e][o] . h[p]. */
template <int FMT, int CPL>
__global__ __launch_bounds__(GEMV_THREADS) void moe_gemv_down_kernel(float *__restrict__ out,
                                                                     const float *__restrict__ h,
                                                                     const int32_t *__restrict__ ids,
                                                                     const cu_wdesc *__restrict__ tab, int E,
                                                                     int64_t D, int64_t I)
{
    const int64_t p = blockIdx.y, o0 = (int64_t)blockIdx.x * GEMV_ROWS;
    const int e = ids[p];
    if (e < 0 || e >= E)
        return;
    const float *xt[1] = {h + p * I};
    int which;
    const float v = gemv_block<FMT, CPL, 1>(tab[E + e], o0, xt, 1, &which);
    if (which < GEMV_ROWS)
        out[p * D + o0 + which] = v;
}

extern "C" int cu_gemv_init(cu_backend *cb, v4_err *err)
{
    cb->gemv_max_tokens = GEMV_MAX_TOKENS;
    if (cu_env_count("V4_CUDA_GEMV_MAX_TOKENS", 0, GEMV_MAX_TOKENS, &cb->gemv_max_tokens, err))
        return -1;
    if (cb->plain)
        cb->gemv_max_tokens = 0;
    return 0;
}

#define GEMV_NT_DISPATCH(n, CALL)                                                                                   \
    do {                                                                                                            \
        if ((n) == 1) { constexpr int NT = 1; CALL; }                                                               \
        else if ((n) == 2) { constexpr int NT = 2; CALL; }                                                          \
        else { constexpr int NT = 4; CALL; }                                                                        \
    } while (0)

#define GEMV_CPL_DISPATCH(cpl, CALL)                                                                                \
    do {                                                                                                            \
        switch (cpl) {                                                                                              \
        case 4: { constexpr int CPL = 4; CALL; } break;                                                             \
        case 8: { constexpr int CPL = 8; CALL; } break;                                                             \
        case 16: { constexpr int CPL = 16; CALL; } break;                                                           \
        default: { constexpr int CPL = 32; CALL; } break;                                                           \
        }                                                                                                           \
    } while (0)

/* Columns a lane takes for C columns in format fmt, or 0 where the path
 * does not take the matrix. */
static int gemv_cpl(int fmt, int64_t C)
{
    const int64_t cpl = C % GEMV_LANE_COLS == 0 ? C / GEMV_LANE_COLS : 0;
    if (cpl != 4 && cpl != 8 && cpl != 16 && cpl != 32)
        return 0;
    if (fmt == CW_MXFP4 && cpl < 8) /* a lane's piece is whole 32-bit words */
        return 0;
    return fmt == CW_FP8 || fmt == CW_FP8FNUZ || fmt == CW_BF16 || fmt == CW_MXFP4 ? (int)cpl : 0;
}

extern "C" bool cu_gemv_linear(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups)
{
    if (n > cb->gemv_max_tokens || fmt == CW_MXFP4)
        return false;
    const int cpl = gemv_cpl(fmt, w->cols);
    if (!cpl || (w->rows / groups) % GEMV_ROWS != 0 || (uintptr_t)w->data % 16 != 0 || (uintptr_t)x % 16 != 0)
        return false;
    const cu_wdesc d = cu_desc(w);
    const unsigned blocks = (unsigned)(w->rows / GEMV_ROWS);
#define GEMV_LAUNCH(F)                                                                                              \
    GEMV_CPL_DISPATCH(cpl, GEMV_NT_DISPATCH(n, (gemv_kernel<F, CPL, NT><<<blocks, GEMV_THREADS, 0, cb->stream>>>(    \
                                                   y, x, n, d, groups))))
    if (fmt == CW_BF16)
        GEMV_LAUNCH(CW_BF16);
    else if (fmt == CW_FP8)
        GEMV_LAUNCH(CW_FP8);
    else
        GEMV_LAUNCH(CW_FP8FNUZ);
#undef GEMV_LAUNCH
    cu_launched(cb, "gemv");
    return true;
}

extern "C" bool cu_moe_gemv(cu_backend *cb, float *h, float *out, const float *x, const int32_t *ids,
                            const cu_expert_table *tab, int E, int k, int n, int64_t D, int64_t I, float limit)
{
    if (n > cb->gemv_max_tokens || tab->fmt13 != tab->fmt2 ||
        (tab->fmt13 != CW_MXFP4 && tab->fmt13 != CW_FP8 && tab->fmt13 != CW_FP8FNUZ))
        return false;
    const int fmt = tab->fmt13, cpl_up = gemv_cpl(fmt, D), cpl_down = gemv_cpl(fmt, I);
    if (!cpl_up || !cpl_down || I % GEMV_ROWS != 0 || D % GEMV_ROWS != 0 || !tab->data16 ||
        (uintptr_t)x % 16 != 0 || (uintptr_t)h % 16 != 0)
        return false;
    const unsigned pairs = (unsigned)(n * k);
    const dim3 gup((unsigned)(I / GEMV_ROWS), pairs), gdown((unsigned)(D / GEMV_ROWS), pairs);
#define MOE_GEMV_LAUNCH(F)                                                                                          \
    do {                                                                                                            \
        GEMV_CPL_DISPATCH(cpl_up, (moe_gemv_up_kernel<F, CPL><<<gup, GEMV_THREADS, 0, cb->stream>>>(                \
                                      h, x, ids, tab->dev, E, k, D, I, limit)));                                    \
        cu_launched(cb, "moe_gemv_up");                                                                             \
        GEMV_CPL_DISPATCH(cpl_down, (moe_gemv_down_kernel<F, CPL><<<gdown, GEMV_THREADS, 0, cb->stream>>>(          \
                                        out, h, ids, tab->dev, E, D, I)));                                          \
        cu_launched(cb, "moe_gemv_down");                                                                           \
    } while (0)
    if (fmt == CW_MXFP4)
        MOE_GEMV_LAUNCH(CW_MXFP4);
    else if (fmt == CW_FP8)
        MOE_GEMV_LAUNCH(CW_FP8);
    else
        MOE_GEMV_LAUNCH(CW_FP8FNUZ);
#undef MOE_GEMV_LAUNCH
    return true;
}
