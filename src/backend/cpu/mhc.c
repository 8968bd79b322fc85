/* mHC hyper-connections (MODEL.md 4.1 and 4.7) on the CPU: the residual
 * state is ns streams of D; before each sublayer a mixing vector is read off
 * the RMS-normalised state, giving the input weights (pre), the output
 * weights (post) and a Sinkhorn-normalised stream-mixing matrix (comb). */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

#define HC_MAX_STREAMS V4_MAX_STREAMS

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* mix[j] = fn[j] . (f / rms(f)) for j < rows; f = the token's ns*D state. */
static void hc_mix(const float *f, const float *fn, int rows, int64_t width, float eps, float *mix)
{
    double ss = 0;
    for (int64_t i = 0; i < width; i++)
        ss += (double)f[i] * f[i];
    float inv = (float)(1.0 / sqrt(ss / width + eps));
    for (int j = 0; j < rows; j++)
        mix[j] = cpu_dot(fn + j * width, f, width) * inv;
}

/* Row softmax + eps, then alternate column and row normalisation. */
static void sinkhorn(float *C, int ns, int iters, float hc_eps)
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

typedef struct hc_ctx {
    float *x, *post, *comb, *X;
    const float *cX, *y, *cpost, *ccomb;
    const float *fn, *base, *scale;
    const v4_hc_shape *sh;
    tp_pool *tp;
} hc_ctx;

static void pre_rows(void *vc, int64_t b, int64_t e, int worker)
{
    hc_ctx *c = vc;
    const int ns = c->sh->n_streams;
    const int64_t D = c->sh->dim;
    float mix[(2 + HC_MAX_STREAMS) * HC_MAX_STREAMS];
    for (int64_t t = b; t < e; t++) {
        const float *Xt = c->cX + t * ns * D;
        hc_mix(Xt, c->fn, (2 + ns) * ns, ns * D, c->sh->eps, mix);
        float pre[HC_MAX_STREAMS];
        for (int s = 0; s < ns; s++) {
            pre[s] = sigmoidf(mix[s] * c->scale[0] + c->base[s]) + c->sh->hc_eps;
            c->post[t * ns + s] = 2.0f * sigmoidf(mix[ns + s] * c->scale[1] + c->base[ns + s]);
        }
        float *C = c->comb + t * ns * ns;
        for (int i = 0; i < ns * ns; i++)
            C[i] = mix[2 * ns + i] * c->scale[2] + c->base[2 * ns + i];
        sinkhorn(C, ns, c->sh->iters, c->sh->hc_eps);
        float *x = c->x + t * D;
        for (int64_t i = 0; i < D; i++) {
            float v = 0;
            for (int s = 0; s < ns; s++)
                v += pre[s] * Xt[s * D + i];
            x[i] = v;
        }
    }
}

void cpu_hc_pre(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn,
                const float *base, const float *scale, int n, const v4_hc_shape *sh)
{
    hc_ctx c = {.x = x, .post = post, .comb = comb, .cX = X, .fn = fn, .base = base, .scale = scale, .sh = sh};
    tp_run(cpu_tp(be), n, 1, pre_rows, &c);
}

static void post_rows(void *vc, int64_t b, int64_t e, int worker)
{
    hc_ctx *c = vc;
    const int ns = c->sh->n_streams;
    const int64_t D = c->sh->dim;
    float *old = tp_scratch(c->tp, worker, (size_t)(ns * D) * sizeof(float));
    for (int64_t t = b; t < e; t++) {
        float *Xt = c->X + t * ns * D;
        const float *y = c->y + t * D, *post = c->cpost + t * ns, *C = c->ccomb + t * ns * ns;
        memcpy(old, Xt, (size_t)(ns * D) * sizeof(float));
        for (int s = 0; s < ns; s++) {
            for (int64_t i = 0; i < D; i++) {
                float v = post[s] * y[i];
                for (int j = 0; j < ns; j++)
                    v += C[j * ns + s] * old[j * D + i];
                Xt[s * D + i] = v;
            }
        }
    }
}

void cpu_hc_post(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                 const v4_hc_shape *sh)
{
    hc_ctx c = {.X = X, .y = y, .cpost = post, .ccomb = comb, .sh = sh, .tp = cpu_tp(be)};
    tp_run(cpu_tp(be), n, 1, post_rows, &c);
}

static void head_rows(void *vc, int64_t b, int64_t e, int worker)
{
    hc_ctx *c = vc;
    const int ns = c->sh->n_streams;
    const int64_t D = c->sh->dim;
    float mix[HC_MAX_STREAMS];
    for (int64_t t = b; t < e; t++) {
        const float *Xt = c->cX + t * ns * D;
        hc_mix(Xt, c->fn, ns, ns * D, c->sh->eps, mix);
        float pre[HC_MAX_STREAMS];
        for (int s = 0; s < ns; s++)
            pre[s] = sigmoidf(mix[s] * c->scale[0] + c->base[s]) + c->sh->hc_eps;
        float *x = c->x + t * D;
        for (int64_t i = 0; i < D; i++) {
            float v = 0;
            for (int s = 0; s < ns; s++)
                v += pre[s] * Xt[s * D + i];
            x[i] = v;
        }
    }
}

void cpu_hc_head(v4_backend *be, float *x, const float *X, const float *fn, const float *base, const float *scale,
                 int n, const v4_hc_shape *sh)
{
    hc_ctx c = {.x = x, .cX = X, .fn = fn, .base = base, .scale = scale, .sh = sh};
    tp_run(cpu_tp(be), n, 1, head_rows, &c);
}
