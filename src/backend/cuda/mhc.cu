/* mHC hyper-connections on the GPU (MODEL.md 4.1, 4.7).
 *
 * hc_pre / hc_head: one block per token. The block reads the token's ns*D
 * state once per group of 8 mixing rows, accumulating the 8 dot products
 * (and the sum of squares on the first pass); one thread then forms pre,
 * post and the Sinkhorn-normalised comb exactly as the CPU reference; the
 * block finally writes x = sum_s pre[s] X[s].
 * hc_post: one thread per (token, channel) holding that channel of every
 * stream in registers, so X is updated in place. */
#include "backend/cuda/cu_device.cuh"

#define HC_MAXS V4_MAX_STREAMS
#define HC_ROWS_PER_PASS 8
#define HC_THREADS 256

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* mix[0..rows) = fn[j] . (X_t / rms(X_t)), into shared memory. */
static __device__ void hc_mix(const float *__restrict__ Xt, const float *__restrict__ fn, int rows, int64_t W,
                              float eps, float *mix, float *red)
{
    float ss = 0.0f;
    for (int j0 = 0; j0 < rows; j0 += HC_ROWS_PER_PASS) {
        float acc[HC_ROWS_PER_PASS];
#pragma unroll
        for (int j = 0; j < HC_ROWS_PER_PASS; j++)
            acc[j] = 0.0f;
        for (int64_t i = threadIdx.x; i < W; i += HC_THREADS) {
            const float f = Xt[i];
            if (j0 == 0)
                ss = fmaf(f, f, ss);
#pragma unroll
            for (int j = 0; j < HC_ROWS_PER_PASS; j++)
                if (j0 + j < rows)
                    acc[j] = fmaf(fn[(int64_t)(j0 + j) * W + i], f, acc[j]);
        }
#pragma unroll
        for (int j = 0; j < HC_ROWS_PER_PASS; j++) {
            const float s = block_sum(acc[j], red);
            if (threadIdx.x == 0 && j0 + j < rows)
                mix[j0 + j] = s;
        }
    }
    ss = block_sum(ss, red);
    const float inv = (float)(1.0 / sqrt((double)ss / W + eps));
    __syncthreads();
    for (int j = threadIdx.x; j < rows; j += HC_THREADS)
        mix[j] *= inv;
    __syncthreads();
}

/* Row softmax + eps, then alternate column and row normalisation (as the CPU). */
static __device__ void sinkhorn(float *C, int ns, int iters, float hc_eps)
{
    for (int i = 0; i < ns; i++) {
        float mx = -INFINITY, s = 0;
        for (int j = 0; j < ns; j++)
            mx = fmaxf(mx, C[i * ns + j]);
        for (int j = 0; j < ns; j++)
            s += (C[i * ns + j] = expf(C[i * ns + j] - mx));
        for (int j = 0; j < ns; j++)
            C[i * ns + j] = C[i * ns + j] / s + hc_eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int i = 0; i < ns; i++) {
                float s = 0;
                for (int j = 0; j < ns; j++)
                    s += C[i * ns + j];
                for (int j = 0; j < ns; j++)
                    C[i * ns + j] /= s + hc_eps;
            }
        }
        for (int j = 0; j < ns; j++) {
            float s = 0;
            for (int i = 0; i < ns; i++)
                s += C[i * ns + j];
            for (int i = 0; i < ns; i++)
                C[i * ns + j] /= s + hc_eps;
        }
    }
}

/* x[t] = sum_s pre[s] X_t[s] with pre in shared memory. */
static __device__ void hc_collapse(float *__restrict__ x, const float *__restrict__ Xt, const float *pre, int ns,
                                   int64_t D)
{
    for (int64_t i = threadIdx.x; i < D; i += HC_THREADS) {
        float v = 0;
        for (int s = 0; s < ns; s++)
            v += pre[s] * Xt[s * D + i];
        x[i] = v;
    }
}

__global__ __launch_bounds__(HC_THREADS) void hc_pre_kernel(float *x, float *post, float *comb, const float *X,
                                                            const float *fn, const float *base, const float *scale,
                                                            int ns, int64_t D, int iters, float eps, float hc_eps)
{
    __shared__ float mix[(2 + HC_MAXS) * HC_MAXS], pre[HC_MAXS], red[32];
    const int64_t t = blockIdx.x;
    const int rows = (2 + ns) * ns;
    const float *Xt = X + t * ns * D;
    hc_mix(Xt, fn, rows, ns * D, eps, mix, red);
    if (threadIdx.x == 0) {
        for (int s = 0; s < ns; s++) {
            pre[s] = sigmoidf_(mix[s] * scale[0] + base[s]) + hc_eps;
            post[t * ns + s] = 2.0f * sigmoidf_(mix[ns + s] * scale[1] + base[ns + s]);
        }
        float *C = mix + 2 * ns; /* in place: mix is not needed afterwards */
        for (int i = 0; i < ns * ns; i++)
            C[i] = C[i] * scale[2] + base[2 * ns + i];
        sinkhorn(C, ns, iters, hc_eps);
        for (int i = 0; i < ns * ns; i++)
            comb[t * ns * ns + i] = C[i];
    }
    __syncthreads();
    hc_collapse(x + t * D, Xt, pre, ns, D);
}

__global__ __launch_bounds__(HC_THREADS) void hc_head_kernel(float *x, const float *X, const float *fn,
                                                             const float *base, const float *scale, int ns,
                                                             int64_t D, float eps, float hc_eps)
{
    __shared__ float mix[HC_MAXS], pre[HC_MAXS], red[32];
    const int64_t t = blockIdx.x;
    const float *Xt = X + t * ns * D;
    hc_mix(Xt, fn, ns, ns * D, eps, mix, red);
    if (threadIdx.x == 0)
        for (int s = 0; s < ns; s++)
            pre[s] = sigmoidf_(mix[s] * scale[0] + base[s]) + hc_eps;
    __syncthreads();
    hc_collapse(x + t * D, Xt, pre, ns, D);
}

/* X'[s] = post[s] * y + sum_j comb[j][s] X[j]; grid (tokens, channel blocks). */
__global__ void hc_post_kernel(float *X, const float *__restrict__ y, const float *__restrict__ post,
                               const float *__restrict__ comb, int ns, int64_t D)
{
    __shared__ float P[HC_MAXS], Cm[HC_MAXS * HC_MAXS];
    const int64_t t = blockIdx.x;
    for (int i = threadIdx.x; i < ns * ns; i += blockDim.x)
        Cm[i] = comb[t * ns * ns + i];
    for (int i = threadIdx.x; i < ns; i += blockDim.x)
        P[i] = post[t * ns + i];
    __syncthreads();
    const int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (i >= D)
        return;
    float *Xt = X + t * ns * D;
    const float yv = y[t * D + i];
    float old[HC_MAXS];
#pragma unroll
    for (int j = 0; j < HC_MAXS; j++)
        old[j] = j < ns ? Xt[j * D + i] : 0.0f;
#pragma unroll
    for (int s = 0; s < HC_MAXS; s++) {
        if (s >= ns)
            break;
        float v = P[s] * yv;
#pragma unroll
        for (int j = 0; j < HC_MAXS; j++)
            if (j < ns)
                v += Cm[j * ns + s] * old[j];
        Xt[s * D + i] = v;
    }
}

static bool hc_shape_ok(cu_backend *cb, const v4_hc_shape *sh, const char *op)
{
    if (sh->n_streams < 1 || sh->n_streams > HC_MAXS) {
        cu_fail(cb, "%s: %d streams (1..%d supported)", op, sh->n_streams, HC_MAXS);
        return false;
    }
    return true;
}

extern "C" void cu_hc_pre(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn,
                          const float *base, const float *scale, int n, const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_pre") || n <= 0)
        return;
    hc_pre_kernel<<<n, HC_THREADS, 0, cb->stream>>>(x, post, comb, X, fn, base, scale, sh->n_streams, sh->dim,
                                                    sh->iters, sh->eps, sh->hc_eps);
    cu_launched(cb, "hc_pre");
}

extern "C" void cu_hc_head(v4_backend *be, float *x, const float *X, const float *fn, const float *base,
                           const float *scale, int n, const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_head") || n <= 0)
        return;
    hc_head_kernel<<<n, HC_THREADS, 0, cb->stream>>>(x, X, fn, base, scale, sh->n_streams, sh->dim, sh->eps,
                                                     sh->hc_eps);
    cu_launched(cb, "hc_head");
}

extern "C" void cu_hc_post(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                           const v4_hc_shape *sh)
{
    cu_backend *cb = cu_of(be);
    if (!hc_shape_ok(cb, sh, "hc_post") || n <= 0 || sh->dim <= 0)
        return;
    const dim3 grid((unsigned)n, (unsigned)((sh->dim + 255) / 256));
    hc_post_kernel<<<grid, 256, 0, cb->stream>>>(X, y, post, comb, sh->n_streams, sh->dim);
    cu_launched(cb, "hc_post");
}
