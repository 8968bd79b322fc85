/* Element-wise ops on the GPU: clamped SwiGLU, add, scale, row gather.
 * Grid-stride loops over 64-bit counts. */
#include "backend/cuda/cu_device.cuh"

__global__ void swiglu_kernel(float *h, const float *g, const float *u, int64_t count, float limit)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
        const float gv = fminf(g[i], limit);
        const float uv = fminf(fmaxf(u[i], -limit), limit);
        h[i] = gv / (1.0f + expf(-gv)) * uv;
    }
}

__global__ void add_kernel(float *y, const float *x, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ void scale_kernel(float *y, float s, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        y[i] *= s;
}

/* grid: (rows, column blocks) */
__global__ void gather_rows_kernel(float *dst, const float *src, const int32_t *__restrict__ rows, int64_t width)
{
    const int64_t i = blockIdx.x;
    const int64_t r = rows[i];
    for (int64_t c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; c < width; c += (int64_t)gridDim.y * blockDim.x)
        dst[i * width + c] = src[r * width + c];
}

extern "C" void cu_swiglu(v4_backend *be, float *h, const float *g, const float *u, int64_t count, float limit)
{
    cu_backend *cb = cu_of(be);
    if (count <= 0)
        return;
    swiglu_kernel<<<cu_grid(count, 256), 256, 0, cb->stream>>>(h, g, u, count, limit);
    cu_launched(cb, "swiglu");
}

extern "C" void cu_add(v4_backend *be, float *y, const float *x, int64_t count)
{
    cu_backend *cb = cu_of(be);
    if (count <= 0)
        return;
    add_kernel<<<cu_grid(count, 256), 256, 0, cb->stream>>>(y, x, count);
    cu_launched(cb, "add");
}

extern "C" void cu_scale(v4_backend *be, float *y, float s, int64_t count)
{
    cu_backend *cb = cu_of(be);
    if (count <= 0)
        return;
    scale_kernel<<<cu_grid(count, 256), 256, 0, cb->stream>>>(y, s, count);
    cu_launched(cb, "scale");
}

extern "C" void cu_gather_rows(v4_backend *be, float *dst, const float *src, const int32_t *rows, int n, int64_t width)
{
    cu_backend *cb = cu_of(be);
    if (n <= 0 || width <= 0)
        return;
    int64_t bx = (width + 255) / 256;
    const dim3 grid((unsigned)n, (unsigned)(bx > 1024 ? 1024 : bx));
    gather_rows_kernel<<<grid, 256, 0, cb->stream>>>(dst, src, rows, width);
    cu_launched(cb, "gather_rows");
}
