/* The operands of the FP8 block-scaled GEMMs (blas.cu), in the layouts
 * cuBLASLt reads on Hopper (the "GEMM-ready" layouts of NVIDIA's own FP8
 * block-scaling recipe): activations as OCP e4m3fn codes with one fp32
 * scale per token and 128 inputs, stored [C/128][ldn] (tokens contiguous,
 * ldn = n rounded up to 4, the tokens past n zero); weights keep their stored e4m3fn codes and
 * get their UE8M0 128x128 block scales as fp32, stored
 * [ceil(R/128)][ldk] (ldk = ceil(C/128) rounded up to 4).
 *
 * Activation scales are powers of two, the smallest 2^e with
 * amax <= 448 * 2^e (the per-block rule of the model's own inference code,
 * with UE8M0 scales), so x / 2^e is exact and only the e4m3 rounding (to
 * nearest even, saturating) loses anything. fp8_quant_ref in the GPU tests
 * is the host copy of this rule. */
#include "backend/cuda/cu_device.cuh"

#define QUANT_BLOCK 128
#define QUANT_WARPS 4

/* The exponent e of the smallest 2^e with amax <= 448 * 2^e, computed
 * exactly: amax = m * 2^ea with m in [0.5, 1) and 448 = 0.875 * 2^9. Zero
 * for a zero or non-finite amax (the codes then carry 0 or NaN). */
static __device__ __forceinline__ int act_scale_exp(float amax)
{
    if (!(amax > 0.0f) || !(amax <= 3.4028235e38f))
        return 0;
    int ea;
    const float m = frexpf(amax, &ea);
    return ea - 9 + (m > 0.875f ? 1 : 0);
}

/* One warp per (token, block of 128 inputs): 4 inputs a lane. Tokens in
 * [n, ldn) are padding: zero codes, scale 1. */
__global__ __launch_bounds__(QUANT_WARPS * 32) void act_quant_kernel(uint8_t *__restrict__ q,
                                                                     float *__restrict__ scale,
                                                                     const float *__restrict__ x, int n, int ldn,
                                                                     int64_t C)
{
    const int t = blockIdx.x, lane = gpu_lane();
    const int64_t kb = (int64_t)blockIdx.y * QUANT_WARPS + gpu_warp_id(), KB = C / QUANT_BLOCK;
    if (kb >= KB)
        return;
    const int64_t off = (int64_t)t * C + kb * QUANT_BLOCK + lane * 4;
    if (t >= n) {
        *(uint32_t *)(q + off) = 0;
        if (lane == 0)
            scale[kb * ldn + t] = 1.0f;
        return;
    }
    const float4 v = *(const float4 *)(x + off);
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const int e = act_scale_exp(amax);
    const float inv = ldexpf(1.0f, -e);
    const uint32_t packed = (uint32_t)f32_to_e4m3(v.x * inv) | (uint32_t)f32_to_e4m3(v.y * inv) << 8 |
                            (uint32_t)f32_to_e4m3(v.z * inv) << 16 | (uint32_t)f32_to_e4m3(v.w * inv) << 24;
    *(uint32_t *)(q + off) = packed;
    if (lane == 0)
        scale[kb * ldn + t] = ldexpf(1.0f, e);
}

extern "C" void cu_fp8_quant_act(cu_backend *cb, uint8_t *q, float *scale, const float *x, int n, int ldn,
                                 int64_t C)
{
    const dim3 grid((unsigned)ldn, (unsigned)((C / QUANT_BLOCK + QUANT_WARPS - 1) / QUANT_WARPS));
    act_quant_kernel<<<grid, QUANT_WARPS * 32, 0, cb->stream>>>(q, scale, x, n, ldn, C);
    cu_launched(cb, "fp8_quant_act");
}

/* dst[rb][kb] = 2^(ue8m0 - 127) for kb < KB, 1 in the padding up to ldk. */
__global__ void block_scales_kernel(float *__restrict__ dst, const uint8_t *__restrict__ ue8m0, int64_t RB, int64_t KB,
                                    int64_t ldk)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < RB * ldk; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t rb = i / ldk, kb = i % ldk;
        dst[i] = kb < KB ? e8m0_to_f32(ue8m0[rb * KB + kb]) : 1.0f;
    }
}

extern "C" void cu_fp8_block_scales(cu_backend *cb, float *dst, const uint8_t *ue8m0, int64_t rows, int64_t cols,
                                    int64_t ldk)
{
    const int64_t RB = (rows + QUANT_BLOCK - 1) / QUANT_BLOCK, KB = (cols + QUANT_BLOCK - 1) / QUANT_BLOCK;
    block_scales_kernel<<<cu_grid(RB * ldk, 256), 256, 0, cb->stream>>>(dst, ue8m0, RB, KB, ldk);
    cu_launched(cb, "fp8_block_scales");
}
