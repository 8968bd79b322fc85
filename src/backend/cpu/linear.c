/* Matrix ops of the CPU backend: embedding lookup and linear layers over
 * weights in their checkpoint formats, dequantized one row at a time into a
 * per-thread buffer and reused for every token of the step. */
#include <string.h>

#include "backend/cpu/cpu.h"

float cpu_dot(const float *a, const float *b, int64_t n)
{
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

typedef struct embed_ctx {
    float *X;
    const v4_mat *m;
    const v4_step *st;
    int ns;
} embed_ctx;

static void embed_rows(void *vc, int64_t b, int64_t e, int worker)
{
    embed_ctx *c = vc;
    const int64_t D = c->m->cols;
    for (int64_t t = b; t < e; t++) {
        float *x = c->X + t * c->ns * D;
        mat_row_f32(c->m, c->st->tok_id[t], 0, D, x);
        for (int s = 1; s < c->ns; s++)
            memcpy(x + s * D, x, (size_t)D * sizeof(float));
    }
}

void cpu_embed(v4_backend *be, float *X, const v4_mat *embed, const v4_step *st, int n_streams)
{
    embed_ctx c = {X, embed, st, n_streams};
    tp_run(cpu_tp(be), st->n_tokens, 16, embed_rows, &c);
}

typedef struct linear_ctx {
    float *y;
    const float *x;
    int n;
    const v4_mat *w;
    int groups;
    tp_pool *tp;
} linear_ctx;

static void linear_rows(void *vc, int64_t b, int64_t e, int worker)
{
    linear_ctx *c = vc;
    const int64_t R = c->w->rows, C = c->w->cols, per_group = R / c->groups;
    float *row = tp_scratch(c->tp, worker, (size_t)C * sizeof(float));
    for (int64_t o = b; o < e; o++) {
        const int64_t g = o / per_group;
        mat_row_f32(c->w, o, 0, C, row);
        for (int t = 0; t < c->n; t++)
            c->y[(int64_t)t * R + o] = cpu_dot(c->x + (int64_t)t * c->groups * C + g * C, row, C);
    }
}

void cpu_linear(v4_backend *be, float *y, const float *x, int n, const v4_mat *w, int groups)
{
    tp_pool *tp = cpu_tp(be);
    linear_ctx c = {y, x, n, w, groups, tp};
    int64_t grain = w->rows / (tp_size(tp) * 8);
    tp_run(tp, w->rows, grain < 1 ? 1 : grain, linear_rows, &c);
}
