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

extern "C" void cu_rmsnorm(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps)
{
    cu_backend *cb = cu_of(be);
    if (rows <= 0 || dim <= 0)
        return;
    const int threads = dim >= 1024 ? 512 : dim >= 256 ? 256 : 64;
    rmsnorm_kernel<<<rows, threads, 0, cb->stream>>>(y, x, w, dim, eps);
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
