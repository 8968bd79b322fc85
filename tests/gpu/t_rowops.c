/* GPU row-wise ops against the CPU backend: RMSNorm (weighted, unweighted,
 * in place), rope (forward and inverse, positions up to 1M), mHC pre/post/
 * head with Sinkhorn, SwiGLU, add, scale, row gather; real dimensions
 * (D = 4096, 64 heads of 512 with 64 rope channels, 4 streams, 20 Sinkhorn
 * iterations) and awkward ones.
 *
 * Bounds (of the output's max magnitude): 1e-5 everywhere. RMSNorm and mHC
 * reduce in a different order (fp32 partial sums, ~1e-7 relative); rope
 * forms angles in double on both sides; exp/log1p/sigmoid differ by an ulp
 * or two between the GPU and glibc. SwiGLU/add/scale/gather: same formula,
 * ulp differences at most (add, scale, gather are exact: bound 0). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gt.h"
#include "gt_tests.h"
#include "model/model.h"

static bool both(v4_backend **cpu, v4_backend **gpu)
{
    *cpu = gt_cpu(DT_F8_E4M3);
    *gpu = gt_cuda(DT_F8_E4M3, "bf16", true);
    return *cpu && *gpu;
}

static void check_rmsnorm(v4_backend *cpu, v4_backend *gpu, tu_rng *r, int rows, int dim, bool weighted,
                          bool in_place)
{
    char what[96];
    snprintf(what, sizeof what, "rmsnorm %d x %d%s%s", rows, dim, weighted ? " weighted" : "",
             in_place ? " in place" : "");
    const size_t n = (size_t)rows * dim;
    float *x = gt_randn(r, n, 2.0f), *w = gt_randu(r, (size_t)dim, 0.5f, 1.5f);
    float *hc = gt_hostf(n), *hg = gt_hostf(n);
    float *xc = gt_up(cpu, x, n * 4), *xg = gt_up(gpu, x, n * 4);
    float *wc = gt_up(cpu, w, (size_t)dim * 4), *wg = gt_up(gpu, w, (size_t)dim * 4);
    float *yc = in_place ? xc : gt_alloc(cpu, n * 4), *yg = in_place ? xg : gt_nan(gpu, n);
    cpu->ops->rmsnorm(cpu, yc, xc, weighted ? wc : NULL, rows, dim, 1e-6f);
    gpu->ops->rmsnorm(gpu, yg, xg, weighted ? wg : NULL, rows, dim, 1e-6f);
    gt_down(cpu, hc, yc, n * 4);
    gt_down(gpu, hg, yg, n * 4);
    gt_close_to(what, hg, hc, n, 1e-5);
    if (!in_place)
        gt_free(cpu, yc), gt_free(gpu, yg);
    gt_free(cpu, xc), gt_free(gpu, xg), gt_free(cpu, wc), gt_free(gpu, wg);
    free(x), free(w), free(hc), free(hg);
}

void test_rmsnorm(void)
{
    tu_rng r = gt_rng("rmsnorm");
    v4_backend *cpu, *gpu;
    if (both(&cpu, &gpu)) {
        check_rmsnorm(cpu, gpu, &r, 3, 300, true, false);
        check_rmsnorm(cpu, gpu, &r, 1, 37, false, true);     /* not whole float4s: the plain kernel */
        check_rmsnorm(cpu, gpu, &r, 2, 16384, true, true);   /* the vector kernel's widest rows */
        check_rmsnorm(cpu, gpu, &r, 1, 16388, true, false);  /* one float4 past them: the plain kernel */
        if (!GT.quick) {
            check_rmsnorm(cpu, gpu, &r, 37, 4096, true, true);
            check_rmsnorm(cpu, gpu, &r, 37 * 64, 512, false, true);
            check_rmsnorm(cpu, gpu, &r, 129, 1024, true, false);
        }
    }
    gt_close(cpu);
    gt_close(gpu);
}

static void check_rope(v4_backend *cpu, v4_backend *gpu, tu_rng *r, int n, int heads, int hd, int rd, bool inverse)
{
    char what[96];
    snprintf(what, sizeof what, "rope %d tokens x %d heads of %d (rope %d)%s", n, heads, hd, rd,
             inverse ? " inverse" : "");
    /* two sequences at positions far apart, up to 1M */
    int starts[2] = {(int)(tu_next(r) % 1000), 1048576 - n - 1 - (int)(tu_next(r) % 1000)};
    int ntoks[2] = {n / 2, n - n / 2};
    gt_step s = gt_make_step(r, 2, NULL, starts, ntoks, NULL, 1, 100);
    v4_step h = gt_host_view(&s), dc, dg;
    v4_err err;
    double fd[256];
    float f[256];
    rope_yarn_inv_freq(160000.0, rd, 16.0, 65536.0, 32.0, 1.0, fd); /* the compress frequencies */
    for (int i = 0; i < rd / 2; i++)
        f[i] = (float)fd[i];
    const size_t nx = (size_t)n * heads * hd;
    float *x = gt_randn(r, nx, 1.0f), *hc = gt_hostf(nx), *hg = gt_hostf(nx);
    float *xc = gt_up(cpu, x, nx * 4), *xg = gt_up(gpu, x, nx * 4);
    float *fc = gt_up(cpu, f, (size_t)rd / 2 * 4), *fg = gt_up(gpu, f, (size_t)rd / 2 * 4);
    if (cpu->ops->reserve_step(cpu, n, 2, 1, &err) || gpu->ops->reserve_step(gpu, n, 2, 1, &err) ||
        cpu->ops->set_step(cpu, &h, &dc, &err) || gpu->ops->set_step(gpu, &h, &dg, &err)) {
        gt_fail("step: %s", err.msg);
    } else {
        cpu->ops->rope(cpu, xc, n, heads, hd, rd, fc, &dc, inverse);
        gpu->ops->rope(gpu, xg, n, heads, hd, rd, fg, &dg, inverse);
        gt_down(cpu, hc, xc, nx * 4);
        gt_down(gpu, hg, xg, nx * 4);
        gt_close_to(what, hg, hc, nx, 1e-5);
    }
    gt_free(cpu, xc), gt_free(gpu, xg), gt_free(cpu, fc), gt_free(gpu, fg);
    free(x), free(hc), free(hg);
    gt_step_free(&s);
}

void test_rope(void)
{
    tu_rng r = gt_rng("rope");
    v4_backend *cpu, *gpu;
    if (both(&cpu, &gpu)) {
        check_rope(cpu, gpu, &r, 3, 4, 128, 32, false);
        check_rope(cpu, gpu, &r, 5, 1, 128, 32, true);
        if (!GT.quick) {
            check_rope(cpu, gpu, &r, 37, 64, 512, 64, false);
            check_rope(cpu, gpu, &r, 37, 64, 512, 64, true);
            check_rope(cpu, gpu, &r, 129, 1, 512, 64, false);
            check_rope(cpu, gpu, &r, 37, 64, 128, 64, false);
        }
    }
    gt_close(cpu);
    gt_close(gpu);
}

static void check_mhc(v4_backend *cpu, v4_backend *gpu, tu_rng *r, int n, int ns, int D)
{
    char what[128];
    const int rows = (2 + ns) * ns;
    const size_t W = (size_t)ns * D;
    v4_hc_shape sh = {.n_streams = ns, .dim = D, .iters = 20, .eps = 1e-6f, .hc_eps = 1e-6f};
    float *X = gt_randn(r, n * W, 1.0f), *fn = gt_randn(r, rows * W, 0.02f), *base = gt_randn(r, (size_t)rows, 1.0f);
    float *scale = gt_randu(r, 3, 0.5f, 1.5f), *y = gt_randn(r, (size_t)n * D, 1.0f);
    float *Xc = gt_up(cpu, X, n * W * 4), *Xg = gt_up(gpu, X, n * W * 4);
    float *fc = gt_up(cpu, fn, rows * W * 4), *fg = gt_up(gpu, fn, rows * W * 4);
    float *bc = gt_up(cpu, base, (size_t)rows * 4), *bg = gt_up(gpu, base, (size_t)rows * 4);
    float *sc = gt_up(cpu, scale, 12), *sg = gt_up(gpu, scale, 12);
    float *yc = gt_up(cpu, y, (size_t)n * D * 4), *yg = gt_up(gpu, y, (size_t)n * D * 4);
    float *xc = gt_alloc(cpu, (size_t)n * D * 4), *xg = gt_nan(gpu, (size_t)n * D);
    float *pc = gt_alloc(cpu, (size_t)n * ns * 4), *pg = gt_nan(gpu, (size_t)n * ns);
    float *cc = gt_alloc(cpu, (size_t)n * ns * ns * 4), *cg = gt_nan(gpu, (size_t)n * ns * ns);
    float *h1 = gt_hostf(n * W), *h2 = gt_hostf(n * W);

    cpu->ops->hc_pre(cpu, xc, pc, cc, Xc, fc, bc, sc, n, &sh);
    gpu->ops->hc_pre(gpu, xg, pg, cg, Xg, fg, bg, sg, n, &sh);
    gt_down(cpu, h1, xc, (size_t)n * D * 4), gt_down(gpu, h2, xg, (size_t)n * D * 4);
    snprintf(what, sizeof what, "hc_pre x: %d tokens, %d streams of %d", n, ns, D);
    gt_close_to(what, h2, h1, (size_t)n * D, 1e-5);
    gt_down(cpu, h1, pc, (size_t)n * ns * 4), gt_down(gpu, h2, pg, (size_t)n * ns * 4);
    snprintf(what, sizeof what, "hc_pre post: %d tokens", n);
    gt_close_to(what, h2, h1, (size_t)n * ns, 1e-5);
    gt_down(cpu, h1, cc, (size_t)n * ns * ns * 4), gt_down(gpu, h2, cg, (size_t)n * ns * ns * 4);
    snprintf(what, sizeof what, "hc_pre comb (Sinkhorn): %d tokens", n);
    gt_close_to(what, h2, h1, (size_t)n * ns * ns, 1e-5);

    /* post from the CPU's post/comb on both, so the check isolates hc_post */
    gt_down(cpu, h1, pc, (size_t)n * ns * 4);
    gt_copy_to(gpu, pg, h1, (size_t)n * ns * 4);
    gt_down(cpu, h1, cc, (size_t)n * ns * ns * 4);
    gt_copy_to(gpu, cg, h1, (size_t)n * ns * ns * 4);
    cpu->ops->hc_post(cpu, Xc, yc, pc, cc, n, &sh);
    gpu->ops->hc_post(gpu, Xg, yg, pg, cg, n, &sh);
    gt_down(cpu, h1, Xc, n * W * 4), gt_down(gpu, h2, Xg, n * W * 4);
    snprintf(what, sizeof what, "hc_post (in place): %d tokens", n);
    gt_close_to(what, h2, h1, n * W, 1e-5);

    /* head: rows = ns of the same fn layout */
    gt_free(gpu, xg);
    xg = gt_nan(gpu, (size_t)n * D);
    cpu->ops->hc_head(cpu, xc, Xc, fc, bc, sc, n, &sh);
    gpu->ops->hc_head(gpu, xg, Xg, fg, bg, sg, n, &sh);
    gt_down(cpu, h1, xc, (size_t)n * D * 4), gt_down(gpu, h2, xg, (size_t)n * D * 4);
    snprintf(what, sizeof what, "hc_head: %d tokens", n);
    gt_close_to(what, h2, h1, (size_t)n * D, 1e-5);

    void *cp[] = {Xc, fc, bc, sc, yc, xc, pc, cc}, *gp[] = {Xg, fg, bg, sg, yg, xg, pg, cg};
    for (int i = 0; i < 8; i++)
        gt_free(cpu, cp[i]), gt_free(gpu, gp[i]);
    free(X), free(fn), free(base), free(scale), free(y), free(h1), free(h2);
}

void test_mhc(void)
{
    tu_rng r = gt_rng("mhc");
    v4_backend *cpu, *gpu;
    if (both(&cpu, &gpu)) {
        check_mhc(cpu, gpu, &r, 3, 4, 300);
        check_mhc(cpu, gpu, &r, 2, 3, 37);
        check_mhc(cpu, gpu, &r, 4, 4, 1024); /* the most tokens of hc_mix_small_kernel */
        check_mhc(cpu, gpu, &r, 257, 4, 256); /* the tensor-core mixing product, a last tile of one token */
        if (!GT.quick) {
            check_mhc(cpu, gpu, &r, 1, 4, 4096);
            check_mhc(cpu, gpu, &r, 2, 4, 4096);
            check_mhc(cpu, gpu, &r, 5, 4, 4096); /* one past it */
            check_mhc(cpu, gpu, &r, 37, 4, 4096);
            check_mhc(cpu, gpu, &r, 129, 4, 4096);
            check_mhc(cpu, gpu, &r, 300, 4, 4096); /* tensor cores (prefill) */
        }
    }
    /* the plain kernels where the tensor cores take over: mixing tiles of 32 tokens */
    const char *const plain_env[][2] = {{"V4_CUDA_PLAIN", "1"}};
    v4_backend *plain = cpu ? gt_cuda_env(DT_F8_E4M3, "bf16", true, 1, plain_env) : NULL;
    if (plain) {
        check_mhc(cpu, plain, &r, 257, 4, 256);
        if (!GT.quick)
            check_mhc(cpu, plain, &r, 300, 4, 4096);
    }
    gt_close(cpu);
    gt_close(gpu);
    gt_close(plain);
}

void test_elementwise(void)
{
    tu_rng r = gt_rng("elementwise");
    v4_backend *cpu, *gpu;
    if (!both(&cpu, &gpu))
        goto out;
    const int64_t counts[] = {1, 37, GT.quick ? 4099 : 1000003};
    for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
        const size_t n = (size_t)counts[k];
        char what[64];
        float *g = gt_randn(&r, n, 5.0f), *u = gt_randn(&r, n, 5.0f), *h1 = gt_hostf(n), *h2 = gt_hostf(n);
        float *gc = gt_up(cpu, g, n * 4), *gg = gt_up(gpu, g, n * 4), *uc = gt_up(cpu, u, n * 4),
              *ug = gt_up(gpu, u, n * 4);
        float *hc = gt_alloc(cpu, n * 4), *hg = gt_nan(gpu, n);
        const float limits[2] = {10.0f, 1.0f};
        for (int l = 0; l < 2; l++) {
            cpu->ops->swiglu(cpu, hc, gc, uc, (int64_t)n, limits[l]);
            gpu->ops->swiglu(gpu, hg, gg, ug, (int64_t)n, limits[l]);
            gt_down(cpu, h1, hc, n * 4), gt_down(gpu, h2, hg, n * 4);
            snprintf(what, sizeof what, "swiglu %zu (limit %g)", n, limits[l]);
            gt_close_to(what, h2, h1, n, 1e-5);
        }
        cpu->ops->add(cpu, gc, uc, (int64_t)n);
        gpu->ops->add(gpu, gg, ug, (int64_t)n);
        cpu->ops->scale(cpu, gc, 0.37f, (int64_t)n);
        gpu->ops->scale(gpu, gg, 0.37f, (int64_t)n);
        gt_down(cpu, h1, gc, n * 4), gt_down(gpu, h2, gg, n * 4);
        snprintf(what, sizeof what, "add + scale %zu", n);
        gt_close_to(what, h2, h1, n, 0.0);
        gt_free(cpu, gc), gt_free(cpu, uc), gt_free(cpu, hc), gt_free(gpu, gg), gt_free(gpu, ug), gt_free(gpu, hg);
        free(g), free(u), free(h1), free(h2);
    }
    /* gather: 37 rows out of 129 of width 16384 (the mHC state of D = 4096) */
    const int n_src = 129, n_rows = 37;
    const int64_t width = GT.quick ? 300 : 16384;
    int32_t rows[37];
    for (int i = 0; i < n_rows; i++)
        rows[i] = (int32_t)(tu_next(&r) % n_src);
    const size_t ns = (size_t)n_src * width, nd = (size_t)n_rows * width;
    float *src = gt_randn(&r, ns, 1.0f), *h1 = gt_hostf(nd), *h2 = gt_hostf(nd);
    float *sc = gt_up(cpu, src, ns * 4), *sg = gt_up(gpu, src, ns * 4);
    int32_t *rc = gt_up(cpu, rows, sizeof rows), *rg = gt_up(gpu, rows, sizeof rows);
    float *dc = gt_alloc(cpu, nd * 4), *dg = gt_nan(gpu, nd);
    cpu->ops->gather_rows(cpu, dc, sc, rc, n_rows, width);
    gpu->ops->gather_rows(gpu, dg, sg, rg, n_rows, width);
    gt_down(cpu, h1, dc, nd * 4), gt_down(gpu, h2, dg, nd * 4);
    gt_close_to("gather_rows 37 of 129", h2, h1, nd, 0.0);
    gt_free(cpu, sc), gt_free(cpu, rc), gt_free(cpu, dc), gt_free(gpu, sg), gt_free(gpu, rg), gt_free(gpu, dg);
    free(src), free(h1), free(h2);
out:
    gt_close(cpu);
    gt_close(gpu);
}
