/* Row-wise and element-wise ops of the CPU backend: RMSNorm, rope, SwiGLU,
 * add, scale, row gather. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

typedef struct norm_ctx {
    float *y;
    const float *x, *w;
    int dim;
    float eps;
} norm_ctx;

static void norm_rows(void *vc, int64_t b, int64_t e, int worker)
{
    norm_ctx *c = vc;
    for (int64_t r = b; r < e; r++) {
        const float *x = c->x + r * c->dim;
        float *y = c->y + r * c->dim;
        double ss = 0;
        for (int i = 0; i < c->dim; i++)
            ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / c->dim + c->eps));
        for (int i = 0; i < c->dim; i++)
            y[i] = c->w ? x[i] * inv * c->w[i] : x[i] * inv;
    }
}

void cpu_rmsnorm(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps)
{
    norm_ctx c = {y, x, w, dim, eps};
    tp_run(cpu_tp(be), rows, 16, norm_rows, &c);
}

void cpu_rope_row(float *x, int head_dim, int rope_dim, const float *inv_freq, double pos)
{
    float *p = x + head_dim - rope_dim;
    for (int i = 0; i < rope_dim / 2; i++) {
        double ang = pos * (double)inv_freq[i];
        float cs = (float)cos(ang), sn = (float)sin(ang);
        float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * cs - b * sn;
        p[2 * i + 1] = b * cs + a * sn;
    }
}

typedef struct rope_ctx {
    float *x;
    int heads, head_dim, rope_dim;
    const float *freq;
    const v4_step *st;
    bool inverse;
} rope_ctx;

static void rope_rows(void *vc, int64_t b, int64_t e, int worker)
{
    rope_ctx *c = vc;
    for (int64_t t = b; t < e; t++) {
        double pos = c->st->tok_pos[t];
        for (int h = 0; h < c->heads; h++)
            cpu_rope_row(c->x + (t * c->heads + h) * c->head_dim, c->head_dim, c->rope_dim, c->freq,
                         c->inverse ? -pos : pos);
    }
}

void cpu_rope(v4_backend *be, float *x, int n, int heads, int head_dim, int rope_dim, const float *inv_freq,
              const v4_step *st, bool inverse)
{
    rope_ctx c = {x, heads, head_dim, rope_dim, inv_freq, st, inverse};
    tp_run(cpu_tp(be), n, 4, rope_rows, &c);
}

void cpu_swiglu(v4_backend *be, float *h, const float *g, const float *u, int64_t count, float limit)
{
    for (int64_t i = 0; i < count; i++) {
        float gv = fminf(g[i], limit);
        float uv = fminf(fmaxf(u[i], -limit), limit);
        h[i] = gv / (1.0f + expf(-gv)) * uv;
    }
}

void cpu_add(v4_backend *be, float *y, const float *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        y[i] += x[i];
}

void cpu_scale(v4_backend *be, float *y, float s, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        y[i] *= s;
}

void cpu_gather_rows(v4_backend *be, float *dst, const float *src, const int32_t *rows, int n, int64_t width)
{
    for (int i = 0; i < n; i++)
        memcpy(dst + i * width, src + (int64_t)rows[i] * width, (size_t)width * sizeof(float));
}
