/* GPU matrix ops against the CPU backend: linear layers in every stored
 * format (F32, BF16, F16, FP8 in both dialects, MXFP4), plain and grouped,
 * at the real model's shapes and at awkward ones (rows and columns that are
 * not multiples of the tiles, columns not a multiple of 4 for the element-
 * load path); the embedding gather; the refusal of an FP8 matrix in the
 * other dialect.
 *
 * Bound for linear layers: 1e-5 of max |y|. Both sides decode the weights
 * exactly and accumulate in fp32; only the summation order differs (about
 * 1e-7 relative per term, a few 1e-7 over thousands of terms). Embedding:
 * exact (a decode and a copy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"

typedef struct lin_case {
    wfmt_t fmt;
    dtype_t dtype;
    int64_t rows, cols;
    int groups, n;
    const char *what;
} lin_case;

static const char *fmt_name(wfmt_t f, dtype_t d)
{
    return f == WF_MXFP4 ? "MXFP4" : dt_name(d);
}

/* One linear layer on both backends from the same random weights/inputs. */
static void check_linear(v4_backend *cpu, v4_backend *gpu, tu_rng *r, const lin_case *c)
{
    char what[160];
    snprintf(what, sizeof what, "linear %s %lldx%lld groups %d n %d (%s)", fmt_name(c->fmt, c->dtype),
             (long long)c->rows, (long long)c->cols, c->groups, c->n, c->what);
    v4_mat hm = gt_rand_mat(r, c->fmt, c->dtype, c->rows, c->cols, 0.05f, "test.linear.weight");
    v4_mat mc = gt_upload_mat(cpu, &hm), mg = gt_upload_mat(gpu, &hm);
    const size_t nx = (size_t)c->n * c->groups * c->cols, ny = (size_t)c->n * c->rows;
    float *x = gt_randn(r, nx, 1.0f), *yc = gt_hostf(ny), *yg = gt_hostf(ny);
    float *xc = gt_up(cpu, x, nx * 4), *xg = gt_up(gpu, x, nx * 4);
    float *dc = gt_alloc(cpu, ny * 4), *dg = gt_nan(gpu, ny);
    if (mc.data && mg.data && xc && xg && dc && dg) {
        cpu->ops->linear(cpu, dc, xc, c->n, &mc, c->groups);
        gpu->ops->linear(gpu, dg, xg, c->n, &mg, c->groups);
        gt_down(cpu, yc, dc, ny * 4);
        gt_down(gpu, yg, dg, ny * 4);
        gt_close_to(what, yg, yc, ny, 1e-5);
    }
    gt_free(cpu, xc), gt_free(cpu, dc), gt_free(gpu, xg), gt_free(gpu, dg);
    cpu->ops->free_mat(cpu, &mc);
    gpu->ops->free_mat(gpu, &mg);
    gt_mat_free(&hm);
    free(x), free(yc), free(yg);
}

static void run_cases(const lin_case *cs, size_t n, dtype_t dialect, const char *test)
{
    tu_rng r = gt_rng(test);
    v4_backend *cpu = gt_cpu(dialect), *gpu = gt_cuda(dialect, "bf16", true);
    if (cpu && gpu)
        for (size_t i = 0; i < n; i++)
            check_linear(cpu, gpu, &r, &cs[i]);
    gt_close(cpu);
    gt_close(gpu);
}

void test_linear_formats(void)
{
    static const lin_case cs[] = {
        {WF_PLAIN, DT_F32, 300, 200, 1, 1, "awkward"},
        {WF_PLAIN, DT_F32, 37, 129, 1, 3, "cols % 4 != 0"},
        {WF_PLAIN, DT_BF16, 300, 200, 1, 37, "awkward"},
        {WF_PLAIN, DT_BF16, 129, 203, 1, 129, "cols % 4 != 0"},
        {WF_PLAIN, DT_F16, 300, 200, 1, 3, "awkward"},
        {WF_PLAIN, DT_F16, 17, 37, 1, 5, "cols % 4 != 0"},
        {WF_FP8, DT_F8_E4M3, 300, 200, 1, 1, "awkward, partial scale blocks"},
        {WF_FP8, DT_F8_E4M3, 300, 200, 1, 37, "awkward"},
        {WF_FP8, DT_F8_E4M3, 257, 389, 1, 129, "cols % 4 != 0"},
        {WF_FP8, DT_F8_E4M3, 240, 200, 8, 3, "grouped"},
        {WF_MXFP4, DT_MXFP4, 300, 224, 1, 1, "awkward"},
        {WF_MXFP4, DT_MXFP4, 300, 224, 1, 37, "awkward"},
        {WF_MXFP4, DT_MXFP4, 33, 96, 1, 129, "awkward"},
    };
    run_cases(cs, sizeof cs / sizeof *cs, DT_F8_E4M3, "linear_formats");
}

void test_linear_real_dims(void)
{
    static const lin_case cs[] = {
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 1, "wq_a"},
        {WF_FP8, DT_F8_E4M3, 1024, 4096, 1, 37, "wq_a"},
        {WF_FP8, DT_F8_E4M3, 32768, 1024, 1, 3, "wq_b"},
        {WF_FP8, DT_F8_E4M3, 512, 4096, 1, 129, "wkv"},
        {WF_FP8, DT_F8_E4M3, 8192, 4096, 8, 37, "wo_a, 8 groups"},
        {WF_FP8, DT_F8_E4M3, 4096, 8192, 1, 129, "wo_b"},
        {WF_FP8, DT_F8_E4M3, 8192, 1024, 1, 37, "indexer wq_b"},
        {WF_PLAIN, DT_BF16, 1024, 4096, 1, 37, "compressor wkv (CSA)"},
        {WF_PLAIN, DT_BF16, 256, 4096, 1, 129, "gate"},
        {WF_FP8, DT_F8_E4M3, 2048, 4096, 1, 37, "shared w1"},
        {WF_FP8, DT_F8_E4M3, 4096, 2048, 1, 37, "shared w2"},
        {WF_MXFP4, DT_MXFP4, 2048, 4096, 1, 16, "expert w1"},
        {WF_PLAIN, DT_BF16, 129280, 4096, 1, 3, "head"},
    };
    run_cases(cs, sizeof cs / sizeof *cs, DT_F8_E4M3, "linear_real_dims");
}

/* The fnuz dialect end to end: both backends computing in e4m3fnuz. */
void test_linear_fnuz(void)
{
    static const lin_case cs[] = {
        {WF_FP8, DT_F8_E4M3FNUZ, 300, 200, 1, 37, "fnuz, awkward"},
        {WF_FP8, DT_F8_E4M3FNUZ, 129, 203, 1, 3, "fnuz, cols % 4 != 0"},
        {WF_FP8, DT_F8_E4M3FNUZ, 1024, 4096, 1, 1, "fnuz, wq_a"},
    };
    run_cases(cs, sizeof cs / sizeof *cs, DT_F8_E4M3FNUZ, "linear_fnuz");
}

void test_fp8_dialect_refused(void)
{
    tu_rng r = gt_rng("fp8_dialect_refused");
    static const dtype_t dialects[2] = {DT_F8_E4M3, DT_F8_E4M3FNUZ};
    for (int i = 0; i < 2; i++) {
        v4_backend *gpu = gt_cuda(dialects[i], "bf16", true);
        if (!gpu)
            return;
        v4_mat hm = gt_rand_mat(&r, WF_FP8, dialects[1 - i], 128, 128, 0.05f, "layers.7.attn.wq_a");
        v4_mat d;
        v4_err err;
        if (gpu->ops->upload_mat(gpu, &d, &hm, &err) == 0) {
            gt_fail("a %s matrix was accepted by a %s backend", dt_name(dialects[1 - i]), dt_name(dialects[i]));
            gpu->ops->free_mat(gpu, &d);
        } else if (!strstr(err.msg, "layers.7.attn.wq_a")) {
            gt_fail("the refusal does not name the tensor: %s", err.msg);
        } else {
            gt_note("refused: %s", err.msg);
        }
        gt_mat_free(&hm);
        gt_close(gpu);
    }
}

void test_embed(void)
{
    tu_rng r = gt_rng("embed");
    v4_backend *cpu = gt_cpu(DT_F8_E4M3), *gpu = gt_cuda(DT_F8_E4M3, "bf16", true);
    if (!cpu || !gpu)
        goto out;
    v4_err err;
    if (cpu->ops->reserve_step(cpu, 256, 4, 1, &err) || gpu->ops->reserve_step(gpu, 256, 4, 1, &err)) {
        gt_fail("reserve_step: %s", err.msg);
        goto out;
    }
    const struct {
        wfmt_t fmt;
        dtype_t dt;
        int64_t V, D;
        int n;
    } cs[] = {{WF_PLAIN, DT_BF16, 1000, 4096, 37},
              {WF_PLAIN, DT_F32, 77, 300, 3},
              {WF_FP8, DT_F8_E4M3, 1000, 4096, 129},
              {WF_MXFP4, DT_MXFP4, 300, 224, 1}};
    const int ns = 4;
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        char what[96];
        snprintf(what, sizeof what, "embed %s %lldx%lld n %d", fmt_name(cs[i].fmt, cs[i].dt), (long long)cs[i].V,
                 (long long)cs[i].D, cs[i].n);
        v4_mat hm = gt_rand_mat(&r, cs[i].fmt, cs[i].dt, cs[i].V, cs[i].D, 0.05f, "embed.weight");
        v4_mat mc = gt_upload_mat(cpu, &hm), mg = gt_upload_mat(gpu, &hm);
        int start = 0, ntok = cs[i].n;
        gt_step s = gt_make_step(&r, 1, NULL, &start, &ntok, NULL, 1, (int)cs[i].V);
        v4_step h = gt_host_view(&s), dc, dg;
        const size_t nx = (size_t)cs[i].n * ns * cs[i].D;
        float *xc = gt_alloc(cpu, nx * 4), *xg = gt_nan(gpu, nx), *hc = gt_hostf(nx), *hg = gt_hostf(nx);
        if (cpu->ops->set_step(cpu, &h, &dc, &err) || gpu->ops->set_step(gpu, &h, &dg, &err)) {
            gt_fail("set_step: %s", err.msg);
        } else if (xc && xg && mc.data && mg.data) {
            cpu->ops->embed(cpu, xc, &mc, &dc, ns);
            gpu->ops->embed(gpu, xg, &mg, &dg, ns);
            gt_down(cpu, hc, xc, nx * 4);
            gt_down(gpu, hg, xg, nx * 4);
            gt_close_to(what, hg, hc, nx, 0.0);
        }
        gt_free(cpu, xc), gt_free(gpu, xg);
        free(hc), free(hg);
        gt_step_free(&s);
        cpu->ops->free_mat(cpu, &mc);
        gpu->ops->free_mat(gpu, &mg);
        gt_mat_free(&hm);
    }
out:
    gt_close(cpu);
    gt_close(gpu);
}
