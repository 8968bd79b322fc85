/* GPU MoE against the CPU backend: routing (learned top-k with bias, hash
 * via tid2eid) and the routed experts as a grouped GEMM (MXFP4 at the real
 * shapes D = 4096, I = 2048, 256 experts, top-6; FP8 and BF16 experts at
 * awkward shapes, with skewed routing so that some experts get many tokens
 * and most none).
 *
 * Routing: ids must match exactly unless two candidates' scores lie within
 * 1e-5 (sqrt(softplus) differs by an ulp between GPU and glibc); then the
 * GPU's choice must still be a top-k under that tolerance. Weights: 1e-5.
 * Experts: 1e-5 of max |y| (exact dequantization, fp32 sums in another
 * order), both backends fed the same ids and weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"

static double ssp(double x) { return sqrt(x > 20 ? x : log1p(exp(x))); }

/* A valid top-k of v under tolerance tol: every chosen value >= every
 * unchosen value - tol. */
static bool valid_topk(const double *v, int n, const int32_t *ids, int k, double tol)
{
    double lo = INFINITY, hi = -INFINITY;
    bool chosen[1024] = {false};
    for (int j = 0; j < k; j++) {
        if (ids[j] < 0 || ids[j] >= n || chosen[ids[j]])
            return false;
        chosen[ids[j]] = true;
        lo = fmin(lo, v[ids[j]]);
    }
    for (int e = 0; e < n; e++)
        if (!chosen[e])
            hi = fmax(hi, v[e]);
    return lo >= hi - tol;
}

static void check_route(v4_backend *cpu, v4_backend *gpu, tu_rng *r, int n, int E, int k, bool hashed)
{
    char what[96];
    snprintf(what, sizeof what, "moe_route %s: %d tokens, %d experts, top %d", hashed ? "hash" : "learned", n, E, k);
    const int V = 1000;
    v4_err err;
    int start = 0;
    gt_step s = gt_make_step(r, 1, NULL, &start, &n, NULL, 1, V);
    v4_step h = gt_host_view(&s), dc, dg;
    float *l = gt_randn(r, (size_t)n * E, 2.0f), *bias = gt_randn(r, (size_t)E, 0.1f);
    int32_t *tab = calloc((size_t)V * k, 4);
    for (int t = 0; t < V; t++) /* distinct ids per token */
        for (int j = 0; j < k; j++) {
            int32_t e;
            bool dup;
            do {
                e = (int32_t)(tu_next(r) % (uint64_t)E);
                dup = false;
                for (int i = 0; i < j; i++)
                    dup |= tab[t * k + i] == e;
            } while (dup);
            tab[t * k + j] = e;
        }
    v4_mat ht = {.fmt = WF_I32, .dtype = DT_I32, .rows = V, .cols = k, .data = tab, .name = "ffn.gate.tid2eid"};
    v4_mat tc = gt_upload_mat(cpu, &ht), tg = gt_upload_mat(gpu, &ht);
    float *lc = gt_up(cpu, l, (size_t)n * E * 4), *lg = gt_up(gpu, l, (size_t)n * E * 4);
    float *bc = gt_up(cpu, bias, (size_t)E * 4), *bg = gt_up(gpu, bias, (size_t)E * 4);
    int32_t *ic = gt_alloc(cpu, (size_t)n * k * 4), *ig = (int32_t *)gt_nan(gpu, (size_t)n * k);
    float *wc = gt_alloc(cpu, (size_t)n * k * 4), *wg = gt_nan(gpu, (size_t)n * k);
    int32_t *hic = calloc((size_t)n * k, 4), *hig = calloc((size_t)n * k, 4);
    float *hwc = gt_hostf((size_t)n * k), *hwg = gt_hostf((size_t)n * k);
    if (cpu->ops->reserve_step(cpu, n, 1, 1, &err) || gpu->ops->reserve_step(gpu, n, 1, 1, &err) ||
        cpu->ops->set_step(cpu, &h, &dc, &err) || gpu->ops->set_step(gpu, &h, &dg, &err)) {
        gt_fail("step: %s", err.msg);
        goto out;
    }
    cpu->ops->moe_route(cpu, ic, wc, lc, hashed ? NULL : bc, hashed ? &tc : NULL, &dc, E, k, 1.5f);
    gpu->ops->moe_route(gpu, ig, wg, lg, hashed ? NULL : bg, hashed ? &tg : NULL, &dg, E, k, 1.5f);
    gt_down(cpu, hic, ic, (size_t)n * k * 4), gt_down(gpu, hig, ig, (size_t)n * k * 4);
    gt_down(cpu, hwc, wc, (size_t)n * k * 4), gt_down(gpu, hwg, wg, (size_t)n * k * 4);
    int flips = 0;
    double *v = malloc((size_t)E * sizeof(double));
    for (int t = 0; t < n; t++) {
        if (memcmp(hic + t * k, hig + t * k, (size_t)k * 4) == 0)
            continue;
        for (int e = 0; e < E; e++)
            v[e] = ssp(l[t * E + e]) + bias[e];
        if (hashed || !valid_topk(v, E, hig + t * k, k, 1e-5)) {
            gt_fail("%s: token %d chose different experts", what, t);
            break;
        }
        flips++;
        memcpy(hwg + t * k, hwc + t * k, (size_t)k * 4); /* weights compared only where choices agree */
    }
    free(v);
    if (flips)
        gt_note("%s: %d tokens chose differently among near-equal scores", what, flips);
    gt_close_to(what, hwg, hwc, (size_t)n * k, 1e-5);
out:
    gt_free(cpu, lc), gt_free(cpu, bc), gt_free(cpu, ic), gt_free(cpu, wc);
    gt_free(gpu, lg), gt_free(gpu, bg), gt_free(gpu, ig), gt_free(gpu, wg);
    cpu->ops->free_mat(cpu, &tc);
    gpu->ops->free_mat(gpu, &tg);
    free(l), free(bias), free(tab), free(hic), free(hig), free(hwc), free(hwg);
    gt_step_free(&s);
}

void test_moe_route(void)
{
    tu_rng r = gt_rng("moe_route");
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *gpu = gt_cuda(DT_F8_E4M3, "bf16", true);
    if (cpu && gpu) {
        const int ns[] = {1, 37, 129};
        for (int i = 0; i < 3; i++) {
            check_route(cpu, gpu, &r, ns[i], GT.quick ? 16 : 256, GT.quick ? 4 : 6, false);
            check_route(cpu, gpu, &r, ns[i], GT.quick ? 16 : 256, GT.quick ? 4 : 6, true);
        }
        check_route(cpu, gpu, &r, 5, 7, 7, false); /* every expert chosen */
        check_route(cpu, gpu, &r, 3, 64, 40, false); /* more choices than a warp has lanes */
        check_route(cpu, gpu, &r, 3, 64, 40, true);
    }
    gt_close(cpu);
    gt_close(gpu);
}

typedef struct moe_case {
    wfmt_t fmt;
    dtype_t dt;
    int64_t D, I;
    int E, k, n;
    float limit;
    bool skew;
} moe_case;

static void check_experts(v4_backend *cpu, v4_backend *gpu, tu_rng *r, const moe_case *c)
{
    char what[128];
    snprintf(what, sizeof what, "moe_experts %s D %lld I %lld: %d experts top %d, %d tokens%s (limit %g)",
             c->fmt == WF_MXFP4 ? "MXFP4" : dt_name(c->dt), (long long)c->D, (long long)c->I, c->E, c->k, c->n,
             c->skew ? ", skewed" : "", c->limit);
    const int E = c->E, k = c->k, n = c->n;
    const int64_t D = c->D, I = c->I;
    v4_err err;
    v4_mat *h1 = calloc((size_t)E, sizeof *h1), *h2 = calloc((size_t)E, sizeof *h2), *h3 = calloc((size_t)E, sizeof *h3);
    v4_mat *c1 = calloc((size_t)E, sizeof *c1), *c2 = calloc((size_t)E, sizeof *c2), *c3 = calloc((size_t)E, sizeof *c3);
    v4_mat *g1 = calloc((size_t)E, sizeof *g1), *g2 = calloc((size_t)E, sizeof *g2), *g3 = calloc((size_t)E, sizeof *g3);
    const float mag = 1.5f / sqrtf((float)D);
    for (int e = 0; e < E; e++) {
        h1[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, mag, "ffn.experts.w1");
        h2[e] = gt_rand_mat(r, c->fmt, c->dt, D, I, 1.5f / sqrtf((float)I), "ffn.experts.w2");
        h3[e] = gt_rand_mat(r, c->fmt, c->dt, I, D, mag, "ffn.experts.w3");
        c1[e] = gt_upload_mat(cpu, &h1[e]), c2[e] = gt_upload_mat(cpu, &h2[e]), c3[e] = gt_upload_mat(cpu, &h3[e]);
        g1[e] = gt_upload_mat(gpu, &h1[e]), g2[e] = gt_upload_mat(gpu, &h2[e]), g3[e] = gt_upload_mat(gpu, &h3[e]);
    }
    /* routing on the CPU from random logits (skewed: a few experts favoured) */
    int start = 0, nn = n;
    gt_step s = gt_make_step(r, 1, NULL, &start, &nn, NULL, 1, 100);
    v4_step h = gt_host_view(&s), dc, dg;
    float *l = gt_randn(r, (size_t)n * E, 1.0f), *bias = gt_hostf((size_t)E);
    if (c->skew)
        for (int e = 0; e < E; e++)
            bias[e] = e % 17 == 3 ? 3.0f : 0.0f;
    float *x = gt_randn(r, (size_t)n * D, 3.0f);
    const size_t scr = (size_t)moe_scratch_floats(n, k, D, I, E);
    float *lc = gt_up(cpu, l, (size_t)n * E * 4), *lg = gt_up(gpu, l, (size_t)n * E * 4);
    float *bc = gt_up(cpu, bias, (size_t)E * 4), *bg = gt_up(gpu, bias, (size_t)E * 4);
    int32_t *ic = gt_alloc(cpu, (size_t)n * k * 4), *ig = gt_alloc(gpu, (size_t)n * k * 4);
    float *wc = gt_alloc(cpu, (size_t)n * k * 4), *wg = gt_alloc(gpu, (size_t)n * k * 4);
    float *xc = gt_up(cpu, x, (size_t)n * D * 4), *xg = gt_up(gpu, x, (size_t)n * D * 4);
    float *yc = gt_alloc(cpu, (size_t)n * D * 4), *yg = gt_nan(gpu, (size_t)n * D);
    float *sc = gt_alloc(cpu, scr * 4), *sg = gt_nan(gpu, scr);
    int32_t *hid = calloc((size_t)n * k, 4);
    float *hw = gt_hostf((size_t)n * k), *hyc = gt_hostf((size_t)n * D), *hyg = gt_hostf((size_t)n * D);
    if (cpu->ops->reserve_step(cpu, n, 1, 1, &err) || gpu->ops->reserve_step(gpu, n, 1, 1, &err) ||
        cpu->ops->set_step(cpu, &h, &dc, &err) || gpu->ops->set_step(gpu, &h, &dg, &err)) {
        gt_fail("step: %s", err.msg);
        goto out;
    }
    cpu->ops->moe_route(cpu, ic, wc, lc, bc, NULL, &dc, E, k, 1.5f);
    gpu->ops->moe_route(gpu, ig, wg, lg, bg, NULL, &dg, E, k, 1.5f); /* also tells the GPU backend E */
    gt_down(cpu, hid, ic, (size_t)n * k * 4);
    gt_down(cpu, hw, wc, (size_t)n * k * 4);
    gt_copy_to(gpu, ig, hid, (size_t)n * k * 4); /* the same choices on both */
    gt_copy_to(gpu, wg, hw, (size_t)n * k * 4);
    cpu->ops->moe_experts(cpu, yc, xc, ic, wc, n, k, c1, c2, c3, c->limit, sc);
    gpu->ops->moe_experts(gpu, yg, xg, ig, wg, n, k, g1, g2, g3, c->limit, sg);
    gt_down(cpu, hyc, yc, (size_t)n * D * 4);
    gt_down(gpu, hyg, yg, (size_t)n * D * 4);
    gt_close_to(what, hyg, hyc, (size_t)n * D, 1e-5);
out:
    gt_free(cpu, lc), gt_free(cpu, bc), gt_free(cpu, ic), gt_free(cpu, wc), gt_free(cpu, xc), gt_free(cpu, yc),
        gt_free(cpu, sc);
    gt_free(gpu, lg), gt_free(gpu, bg), gt_free(gpu, ig), gt_free(gpu, wg), gt_free(gpu, xg), gt_free(gpu, yg),
        gt_free(gpu, sg);
    for (int e = 0; e < E; e++) {
        cpu->ops->free_mat(cpu, &c1[e]), cpu->ops->free_mat(cpu, &c2[e]), cpu->ops->free_mat(cpu, &c3[e]);
        gpu->ops->free_mat(gpu, &g1[e]), gpu->ops->free_mat(gpu, &g2[e]), gpu->ops->free_mat(gpu, &g3[e]);
        gt_mat_free(&h1[e]), gt_mat_free(&h2[e]), gt_mat_free(&h3[e]);
    }
    free(h1), free(h2), free(h3), free(c1), free(c2), free(c3), free(g1), free(g2), free(g3);
    free(l), free(bias), free(x), free(hid), free(hw), free(hyc), free(hyg);
    gt_step_free(&s);
}

static void run_moe(const moe_case *cs, size_t n, const char *test)
{
    tu_rng r = gt_rng(test);
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *gpu = gt_cuda(DT_F8_E4M3, "bf16", true);
    if (cpu && gpu)
        for (size_t i = 0; i < n; i++)
            check_experts(cpu, gpu, &r, &cs[i]);
    gt_close(cpu);
    gt_close(gpu);
}

void test_moe_experts_small(void)
{
    static const moe_case cs[] = {
        {WF_MXFP4, DT_MXFP4, 320, 96, 8, 2, 3, 10.0f, false},
        {WF_MXFP4, DT_MXFP4, 320, 96, 8, 2, 129, 1.0f, true},
        {WF_FP8, DT_F8_E4M3, 200, 75, 5, 3, 37, 10.0f, true},
        {WF_PLAIN, DT_BF16, 136, 72, 16, 4, 1, 1.0f, false},
        {WF_PLAIN, DT_BF16, 136, 72, 16, 4, 37, 10.0f, true},
    };
    run_moe(cs, sizeof cs / sizeof *cs, "moe_experts_small");
}

void test_moe_experts_real_dims(void)
{
    static const moe_case cs[] = {
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 256, 6, 1, 10.0f, false},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 256, 6, 37, 10.0f, true},
    };
    run_moe(cs, sizeof cs / sizeof *cs, "moe_experts_real_dims");
}

/* The matrix-vector path (gemv.cu) of steps of at most 4 tokens, on the
 * default backend: the same 1e-5 bound as the plain kernels (fp32
 * activations, exact weights), which the tensor-core path (bf16
 * activations) would not meet, so a step that missed the path fails.
 * Skewed routing puts several pairs on one expert. The --quick subset keeps
 * the small shapes. */
void test_moe_experts_gemv(void)
{
    static const moe_case cs[] = {
        {WF_MXFP4, DT_MXFP4, 2048, 2048, 8, 2, 2, 1.0f, false},
        {WF_FP8, DT_F8_E4M3, 2048, 1024, 16, 4, 3, 10.0f, true},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 32, 6, 1, 10.0f, false},
        {WF_MXFP4, DT_MXFP4, 4096, 2048, 32, 6, 4, 10.0f, true},
    };
    run_moe(cs, GT.quick ? 2 : sizeof cs / sizeof *cs, "moe_experts_gemv");
}
