/* Device helpers shared by the GPU kernels: reductions, exact decoders of
 * the checkpoint number formats (MODEL.md section 3), weight loads in every
 * storage format, and KV element loads/stores in the backend's KV type.
 *
 * FP8 is decoded in the dialect the data declares: OCP e4m3fn with Hopper's
 * conversion instruction (in software under HIP), e4m3fnuz in software
 * everywhere (exact: same layout, bias 8, 0x80 NaN). Every decoder is exact
 * in fp32. Warp reductions span GPU_WARP lanes (backend/gpu.h); on NVIDIA
 * their order is the 32-lane butterfly it always was. */
#ifndef V4_BACKEND_CUDA_CU_DEVICE_CUH
#define V4_BACKEND_CUDA_CU_DEVICE_CUH

#include <stdint.h>

#include "backend/cuda/cu_internal.h"

#if GPU_HIP
#include <hip/hip_fp16.h>
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

#define CU_NAN __int_as_float(0x7fc00000)

/* Inclusive prefix sum over the warp: lane l gets the sum of v on lanes
 * 0..l (added in the same order on every lane count). */
template <typename T> static __device__ __forceinline__ T warp_scan_incl(T v)
{
    const int lane = gpu_lane();
#pragma unroll
    for (int o = 1; o < GPU_WARP; o <<= 1) {
        const T y = gpu_shfl_up(v, o);
        if (lane >= o)
            v += y;
    }
    return v;
}

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = GPU_WARP / 2; o > 0; o >>= 1)
        v += gpu_shfl_xor(v, o);
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v)
{
#pragma unroll
    for (int o = GPU_WARP / 2; o > 0; o >>= 1)
        v += gpu_shfl_xor(v, o);
    return v;
}

/* Sums each of the V values (V a power of two, at most GPU_WARP) over the
 * warp: level OFF keeps half of the values on each side of a lane pair
 * (the lower lane the first half), so lane l ends with the total of value
 * *idx (the same total on the GPU_WARP / V lanes that share it); once one
 * value is left the levels add it across. Every total is added in the
 * same hypercube order, whatever its index. The levels are a template
 * recursion so that every array index is a constant (a loop the compiler
 * leaves rolled would move v to local memory). Levels below LAST are left
 * out: the sums then run over the lanes that differ in bits LAST.. only. */
template <int V, int OFF, int LAST = 1> struct warp_reduce_level {
    static __device__ __forceinline__ void run(float (&v)[V], int lane, int *base)
    {
        if constexpr (OFF >= LAST && V == 1) {
            v[0] += gpu_shfl_xor(v[0], OFF);
            warp_reduce_level<1, OFF / 2, LAST>::run(v, lane, base);
        } else if constexpr (OFF >= LAST) {
            const bool upper = (lane & OFF) != 0;
            float w[V / 2];
#pragma unroll
            for (int i = 0; i < V / 2; i++) { /* both halves cross: no select picks an array slot */
                const float lo = v[i], hi = v[i + V / 2];
                const float lo_in = gpu_shfl_xor(lo, OFF), hi_in = gpu_shfl_xor(hi, OFF);
                w[i] = upper ? hi + hi_in : lo + lo_in;
            }
            if (upper)
                *base += V / 2;
            warp_reduce_level<V / 2, OFF / 2, LAST>::run(w, lane, base);
            v[0] = w[0];
        }
    }
};

template <int V> static __device__ __forceinline__ float warp_reduce_scatter(float (&v)[V], int lane, int *idx)
{
    *idx = 0;
    warp_reduce_level<V, GPU_WARP / 2>::run(v, lane, idx);
    return v[0];
}

static __device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = GPU_WARP / 2; o > 0; o >>= 1)
        v = fmaxf(v, gpu_shfl_xor(v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of GPU_WARP, at most 1024);
 * every thread gets the result. `red` holds GPU_MAX_WARPS values. */
static __device__ __forceinline__ float block_sum(float v, float *red)
{
    const int lane = gpu_lane(), warp = gpu_warp_id(), nw = blockDim.x / GPU_WARP;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    return warp_sum(t);
}

static __device__ __forceinline__ double block_sum_d(double v, double *red)
{
    const int lane = gpu_lane(), warp = gpu_warp_id(), nw = blockDim.x / GPU_WARP;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    double t = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(t);
}

static __device__ __forceinline__ float block_max(float v, float *red)
{
    const int lane = gpu_lane(), warp = gpu_warp_id(), nw = blockDim.x / GPU_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : -INFINITY;
    return warp_max(t);
}

/* ---- scalar decoders ---- */

static __device__ __forceinline__ float e8m0_to_f32(uint32_t s)
{
    return s == 255u ? CU_NAN : s == 0u ? __int_as_float(0x00400000) : __int_as_float((int)(s << 23));
}

static __device__ __forceinline__ float bf16_to_f32(uint32_t b) { return __int_as_float((int)(b << 16)); }

static __device__ __forceinline__ float f16_to_f32(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

/* OCP e4m3fn: bias 7, subnormal step 2^-9, 0x7F and 0xFF NaN. NVIDIA: the
 * hardware conversion (exact: every code is a half); HIP: in software. */
static __device__ __forceinline__ float e4m3_to_f32(uint32_t b)
{
#if GPU_HIP
    if ((b & 0x7Fu) == 0x7Fu)
        return CU_NAN;
    const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 15u, m = b & 7u;
    if (e == 0)
        return __int_as_float((int)(sign | __float_as_uint((float)m * 0.001953125f)));
    return __int_as_float((int)(sign | ((e + 120u) << 23) | (m << 20)));
#else
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(__half(h));
#endif
}

/* Four OCP e4m3fn codes, the bytes of v from the lowest (Hopper converts
 * two per instruction). */
static __device__ __forceinline__ void e4m3x4_to_f32(uint32_t v, float out[4])
{
#if GPU_HIP
#pragma unroll
    for (int j = 0; j < 4; j++)
        out[j] = e4m3_to_f32((v >> (8 * j)) & 0xFFu);
#else
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(v & 0xFFFFu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(v >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
#endif
}

/* e4m3fnuz in software: bias 8, subnormal step 2^-10, 0x80 the only NaN. */
static __device__ __forceinline__ float e4m3fnuz_to_f32(uint32_t b)
{
    if (b == 0x80u)
        return CU_NAN;
    const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 15u, m = b & 7u;
    if (e == 0)
        return __int_as_float((int)(sign | __float_as_uint((float)m * 0.0009765625f)));
    return __int_as_float((int)(sign | ((e + 119u) << 23) | (m << 20)));
}

/* MXFP4 e2m1 code (low 4 bits): 0, .5, 1, 1.5, 2, 3, 4, 6 and negatives. */
static __device__ __forceinline__ float e2m1_to_f32(uint32_t c)
{
    const uint32_t e = (c >> 1) & 3u, m = c & 1u;
    const uint32_t mag = e ? (((e + 126u) << 23) | (m << 22)) : (m ? 0x3F000000u : 0u);
    return __int_as_float((int)(mag | ((c & 8u) << 28)));
}

template <int FMT> static __device__ __forceinline__ float fp8_decode(uint32_t b)
{
    return FMT == CW_FP8 ? e4m3_to_f32(b) : e4m3fnuz_to_f32(b);
}

/* ---- FP8 encoders for the KV state (round to nearest even, saturating) ---- */

/* Magnitude code of a >= 0 (finite, below the saturation bound) in a
 * 3-mantissa-bit format of the given bias: encode_e4m3_like of
 * formats/dtype.c. */
template <int BIAS, int MAXCODE> static __device__ __forceinline__ int fp8_code_sw(float a)
{
    if (a < 1.0f / (float)(1 << (BIAS - 1))) /* below the smallest normal: steps of 2^(-BIAS-2) */
        return (int)rintf(a * (float)(1 << (BIAS + 2)));
    int ex;
    const float fr = frexpf(a, &ex);
    int E = ex - 1;
    float q = rintf((fr * 2.0f - 1.0f) * 8.0f);
    if (q >= 8.0f) {
        q = 0.0f;
        E += 1;
    }
    const int code = ((E + BIAS) << 3) | (int)q;
    return code > MAXCODE ? MAXCODE : code;
}

static __device__ __forceinline__ uint8_t f32_to_e4m3(float f)
{
#if GPU_HIP /* dt_f32_to_e4m3: NaN 0x7F, saturate at 448, -0 kept */
    if (isnan(f))
        return 0x7F;
    const uint32_t sign = signbit(f) ? 0x80u : 0u;
    const float a = fabsf(f);
    return (uint8_t)(sign | (a >= 448.0f ? 0x7Eu : (uint32_t)fp8_code_sw<7, 0x7E>(a)));
#else
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
#endif
}

/* The software encoder of formats/dtype.c for e4m3fnuz (bias 8, max 240). */
static __device__ __forceinline__ uint8_t f32_to_e4m3fnuz(float f)
{
    if (isnan(f))
        return 0x80;
    const float a = fabsf(f);
    if (a >= 240.0f)
        return (uint8_t)((f < 0 ? 0x80 : 0) | 0x7F);
    const int code = fp8_code_sw<8, 0x7F>(a);
    if (code == 0)
        return 0; /* no negative zero: 0x80 is NaN */
    return (uint8_t)((f < 0 ? 0x80 : 0) | code);
}

/* bf16 bits of v, round to nearest even (NaN stays NaN). */
static __device__ __forceinline__ uint16_t f32_to_bf16(float v)
{
#if GPU_HIP
    const uint32_t u = __float_as_uint(v);
    if (isnan(v))
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
#else
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
#endif
}

/* ---- weights ---- */

/* Element (row, col) of a matrix, for gathers (embedding rows). */
template <int FMT> static __device__ __forceinline__ float wload1(const cu_wdesc &w, int64_t row, int64_t col)
{
    if (FMT == CW_F32)
        return ((const float *)w.data)[row * w.cols + col];
    if (FMT == CW_BF16)
        return bf16_to_f32(((const uint16_t *)w.data)[row * w.cols + col]);
    if (FMT == CW_F16)
        return f16_to_f32(((const uint16_t *)w.data)[row * w.cols + col]);
    if (FMT == CW_FP8 || FMT == CW_FP8FNUZ) {
        const int64_t sc = (w.cols + 127) / 128;
        return fp8_decode<FMT>(w.data[row * w.cols + col]) * e8m0_to_f32(w.scale[(row >> 7) * sc + (col >> 7)]);
    }
    /* MXFP4 */
    const uint32_t b = w.data[row * (w.cols / 2) + col / 2];
    return e2m1_to_f32(col & 1 ? b >> 4 : b & 15u) * e8m0_to_f32(w.scale[row * (w.cols / 32) + col / 32]);
}

/* Columns col..col+3 of one row. vec: cols % 4 == 0 (so the four share one
 * aligned vector load and one scale); otherwise element loads, zero past
 * the last column. */
template <int FMT>
static __device__ __forceinline__ void wload4(const cu_wdesc &w, int64_t row, int64_t col, bool vec, float out[4])
{
    if (FMT == CW_MXFP4) { /* cols % 32 == 0, col % 4 == 0 */
        const uint32_t b = *(const uint16_t *)(w.data + row * (w.cols / 2) + col / 2);
        const float s = e8m0_to_f32(w.scale[row * (w.cols / 32) + col / 32]);
        out[0] = e2m1_to_f32(b & 15u) * s;
        out[1] = e2m1_to_f32((b >> 4) & 15u) * s;
        out[2] = e2m1_to_f32((b >> 8) & 15u) * s;
        out[3] = e2m1_to_f32((b >> 12) & 15u) * s;
        return;
    }
    if (!vec) {
#pragma unroll
        for (int j = 0; j < 4; j++)
            out[j] = col + j < w.cols ? wload1<FMT>(w, row, col + j) : 0.0f;
        return;
    }
    const int64_t off = row * w.cols + col;
    if (FMT == CW_F32) {
        const float4 v = *(const float4 *)((const float *)w.data + off);
        out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
    } else if (FMT == CW_BF16 || FMT == CW_F16) {
        const uint2 v = *(const uint2 *)((const uint16_t *)w.data + off);
        if (FMT == CW_BF16) {
            out[0] = __int_as_float((int)(v.x << 16)), out[1] = __int_as_float((int)(v.x & 0xFFFF0000u));
            out[2] = __int_as_float((int)(v.y << 16)), out[3] = __int_as_float((int)(v.y & 0xFFFF0000u));
        } else {
            out[0] = f16_to_f32((uint16_t)v.x), out[1] = f16_to_f32((uint16_t)(v.x >> 16));
            out[2] = f16_to_f32((uint16_t)v.y), out[3] = f16_to_f32((uint16_t)(v.y >> 16));
        }
    } else { /* FP8: the four columns share one 128x128 block */
        const uint32_t v = *(const uint32_t *)(w.data + off);
        const float s = e8m0_to_f32(w.scale[(row >> 7) * ((w.cols + 127) / 128) + (col >> 7)]);
        if (FMT == CW_FP8) {
            float f[4];
            e4m3x4_to_f32(v, f);
            out[0] = f[0] * s, out[1] = f[1] * s, out[2] = f[2] * s, out[3] = f[3] * s;
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++)
                out[j] = e4m3fnuz_to_f32((v >> (8 * j)) & 0xFFu) * s;
        }
    }
}

/* ---- KV state elements ---- */

/* Bytes of one stored KV channel of type kv_type. */
static __host__ __device__ constexpr int kv_elem_size(int kv_type)
{
    return kv_type == KV_F32 ? 4 : kv_type == KV_BF16 ? 2 : 1;
}

/* Element i of a stored KV array (scale: the vector's FP8 scale). */
template <int KVT> static __device__ __forceinline__ float kv_load(const void *base, int64_t i, float scale)
{
    if (KVT == KV_F32)
        return ((const float *)base)[i];
    if (KVT == KV_BF16)
        return bf16_to_f32(((const uint16_t *)base)[i]);
    const uint32_t b = ((const uint8_t *)base)[i];
    return (KVT == KV_FP8 ? e4m3_to_f32(b) : e4m3fnuz_to_f32(b)) * scale;
}

template <int KVT> static __device__ __forceinline__ float kv_fp8_max() { return KVT == KV_FP8 ? 448.0f : 240.0f; }

/* Stores value v (already divided by the vector's scale for FP8). */
template <int KVT> static __device__ __forceinline__ void kv_put(void *base, int64_t i, float v)
{
    if (KVT == KV_F32)
        ((float *)base)[i] = v;
    else if (KVT == KV_BF16)
        ((uint16_t *)base)[i] = f32_to_bf16(v);
    else
        ((uint8_t *)base)[i] = KVT == KV_FP8 ? f32_to_e4m3(v) : f32_to_e4m3fnuz(v);
}

/* Per-vector FP8 scale from the vector's largest magnitude (1 for zeros). */
template <int KVT> static __device__ __forceinline__ float kv_scale_of(float amax)
{
    return amax > 0.0f ? amax / kv_fp8_max<KVT>() : 1.0f;
}

/* Float -> uint32 whose unsigned order is the float order (-0 as +0). */
static __device__ __forceinline__ uint32_t ordered_key(float f)
{
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define CU_KV_DISPATCH(kvt, CALL)                                                                                   \
    do {                                                                                                            \
        switch (kvt) {                                                                                              \
        case KV_F32: { constexpr int KVT = KV_F32; CALL; } break;                                                   \
        case KV_BF16: { constexpr int KVT = KV_BF16; CALL; } break;                                                 \
        case KV_FP8: { constexpr int KVT = KV_FP8; CALL; } break;                                                   \
        default: { constexpr int KVT = KV_FP8FNUZ; CALL; } break;                                                   \
        }                                                                                                           \
    } while (0)

#endif
