/* RMSNorm and rotary embedding on the GPU.
 *
 * RMSNorm: one block per row; every thread reads its elements before the
 * reduction and writes only its own afterwards, so y == x (in place) works.
 * Rope: one thread per rotated pair; the angle pos * inv_freq is formed and
 * reduced in double (positions reach 1M, where an fp32 angle would be off
 * by radians), exactly as the CPU reference does. */
#include "backend/cuda/cu_device.cuh"

__global__ void rmsnorm_kernel(float *y, const float *x, const float *__restrict__ w, int dim, float eps)
{
    __shared__ float red[GPU_MAX_WARPS];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i];
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, red);
    const float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    float *yr = y + r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = w ? xr[i] * inv * w[i] : xr[i] * inv;
}

/* The same for rows of whole float4s (16-byte aligned, dim / 4 at most
 * NORM_VEC * blockDim.x): a thread loads its NORM_VEC float4s of the row
 * (and of w) at once and keeps them in registers, so the row is read once
 * in one round trip; the loop above waits on each load in turn (7 us for
 * one row of 4096 on an H100, a decode step ran 21 of them). */
#define NORM_VEC 4
__global__ void rmsnorm_vec_kernel(float *y, const float *x, const float *__restrict__ w, int dim, float eps)
{
    __shared__ float red[GPU_MAX_WARPS];
    const int64_t r = blockIdx.x;
    const int n4 = dim / 4;
    const float4 *xr = (const float4 *)(x + r * dim);
    float4 v[NORM_VEC], wv[NORM_VEC];
#pragma unroll
    for (int k = 0; k < NORM_VEC; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = i < n4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[k] = w && i < n4 ? ((const float4 *)w)[i] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_VEC; k++)
        ss = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, ss))));
    ss = block_sum(ss, red);
    const float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    float4 *yr = (float4 *)(y + r * dim);
#pragma unroll
    for (int k = 0; k < NORM_VEC; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < n4) /* w == NULL multiplies by 1: exact */
            yr[i] = make_float4(v[k].x * inv * wv[k].x, v[k].y * inv * wv[k].y, v[k].z * inv * wv[k].z,
                                v[k].w * inv * wv[k].w);
    }
}

extern "C" void cu_rmsnorm(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps)
{
    cu_backend *cb = cu_of(be);
    if (rows <= 0 || dim <= 0)
        return;
    const int n4 = dim / 4;
    /* threads: whole warps, each with at most NORM_VEC float4s */
    const int vthreads = (((n4 + NORM_VEC - 1) / NORM_VEC + GPU_WARP - 1) / GPU_WARP) * GPU_WARP;
    const bool aligned = ((uintptr_t)x | (uintptr_t)y | (uintptr_t)w) % 16 == 0;
    if (dim % 4 == 0 && aligned && vthreads <= 1024) {
        rmsnorm_vec_kernel<<<rows, vthreads, 0, cb->stream>>>(y, x, w, dim, eps);
    } else {
        const int threads = dim >= 1024 ? 512 : dim >= 256 ? 256 : 64;
        rmsnorm_kernel<<<rows, threads, 0, cb->stream>>>(y, x, w, dim, eps);
    }
    cu_launched(cb, "rmsnorm");
}

__global__ void rope_kernel(float *x, int64_t pairs, int heads, int head_dim, int rope_dim,
                            const float *__restrict__ inv_freq, const int32_t *__restrict__ tok_pos, bool inverse)
{
    const int half = rope_dim / 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < pairs; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t th = i / half; /* token * heads + head */
        const int k = (int)(i % half);
        const int64_t t = th / heads;
        const double pos = (double)tok_pos[t];
        const double ang = (inverse ? -pos : pos) * (double)inv_freq[k];
        double sd, cd;
        sincos(ang, &sd, &cd);
        const float cs = (float)cd, sn = (float)sd;
        float *p = x + th * head_dim + (head_dim - rope_dim) + 2 * k;
        const float a = p[0], b = p[1];
        p[0] = a * cs - b * sn;
        p[1] = b * cs + a * sn;
    }
}

extern "C" void cu_rope(v4_backend *be, float *x, int n, int heads, int head_dim, int rope_dim, const float *inv_freq,
                        const v4_step *st, bool inverse)
{
    cu_backend *cb = cu_of(be);
    const int64_t pairs = (int64_t)n * heads * (rope_dim / 2);
    if (pairs <= 0)
        return;
    rope_kernel<<<cu_grid(pairs, 256), 256, 0, cb->stream>>>(x, pairs, heads, head_dim, rope_dim, inv_freq,
                                                             st->tok_pos, inverse);
    cu_launched(cb, "rope");
}
