/* The CPU backend's row-wise ops against direct double-precision
 * implementations of MODEL.md: mHC (4.1, 4.7), rope and its frequencies
 * (4.2, 4.6), RMSNorm, embedding and linear layers in every weight format
 * (section 3), routing and the clamped SwiGLU experts (4.5). Attention,
 * compressors and the indexer are in test_ops_attention.c.
 *
 * Inputs are fresh random values each run (the seed is printed); every
 * comparison states its tolerance, chosen from fp32 rounding of the op
 * against a double reference (about 1e-7 per operation, so 1e-5 of the
 * values' scale leaves room for sums of hundreds of terms). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/dtype.h"
#include "model/model.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------- */

static v4_backend *mk_backend(void)
{
    v4_backend *be;
    v4_err err;
    if (backend_cpu_create(2, DT_F8_E4M3, &be, &err) || be->ops->reserve_step(be, 64, 16, 1, &err))
        fail_msg("backend_cpu_create: %s", err.msg);
    return be;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static void fill_normal(tu_rng *r, float *x, int64_t n, float sd)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_normal(r) * sd;
}

static void fill_uniform(tu_rng *r, float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_uniform(r, lo, hi);
}

static int rand_int(tu_rng *r, int n) { return (int)(tu_next(r) % (uint64_t)n); }

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Step metadata with one sequence per entry of starts/ntoks, slots 0.., and
 * no blocks (the row-wise ops only read tok_id/tok_pos). */
typedef struct tstep {
    int32_t tok_id[64], tok_pos[64], tok_seq[64];
    int32_t slot[16], start[16], ntok[16], row[16], bt[16];
    v4_step h;
} tstep;

static v4_step mk_step(v4_backend *be, tstep *s, int n_seqs, const int *starts, const int *ntoks,
                       const int32_t *tok_ids)
{
    int n = 0;
    for (int q = 0; q < n_seqs; q++) {
        s->slot[q] = q;
        s->start[q] = starts[q];
        s->ntok[q] = ntoks[q];
        s->row[q] = n;
        s->bt[q] = 0;
        for (int t = 0; t < ntoks[q]; t++, n++) {
            s->tok_pos[n] = starts[q] + t;
            s->tok_seq[n] = q;
            s->tok_id[n] = tok_ids ? tok_ids[n] : 0;
        }
    }
    s->h = (v4_step){.n_tokens = n, .n_seqs = n_seqs, .max_blocks = 1, .tok_id = s->tok_id,
                     .tok_pos = s->tok_pos, .tok_seq = s->tok_seq, .seq_slot = s->slot,
                     .seq_start = s->start, .seq_ntok = s->ntok, .seq_row = s->row, .block_table = s->bt};
    v4_step d;
    v4_err err;
    if (be->ops->set_step(be, &s->h, &d, &err))
        fail_msg("set_step: %s", err.msg);
    return d;
}

static void expect_synced(v4_backend *be)
{
    v4_err err;
    if (be->ops->sync(be, &err))
        fail_msg("backend reported: %s", err.msg);
}

/* ---- mHC (MODEL.md 4.1, 4.7) --------------------------------------------- */

/* Direct 4.1 for one token in double: x (D), post (ns), C (ns*ns). */
static void ref_hc_pre(const float *X, const float *fn, const float *base, const float *scale, int ns, int D,
                       int iters, double eps, double hc_eps, double *x, double *post, double *C)
{
    const int W = ns * D, rows = (2 + ns) * ns;
    double ss = 0;
    for (int i = 0; i < W; i++)
        ss += (double)X[i] * X[i];
    const double inv = 1.0 / sqrt(ss / W + eps);
    double mix[(2 + 16) * 16];
    for (int j = 0; j < rows; j++) {
        double m = 0;
        for (int i = 0; i < W; i++)
            m += (double)fn[(int64_t)j * W + i] * X[i] * inv;
        mix[j] = m;
    }
    double pre[16];
    for (int s = 0; s < ns; s++) {
        pre[s] = sigmoid(mix[s] * scale[0] + base[s]) + hc_eps;
        post[s] = 2.0 * sigmoid(mix[ns + s] * scale[1] + base[ns + s]);
    }
    for (int i = 0; i < ns; i++) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < ns; j++) {
            C[i * ns + j] = mix[2 * ns + i * ns + j] * scale[2] + base[2 * ns + i * ns + j];
            mx = fmax(mx, C[i * ns + j]);
        }
        for (int j = 0; j < ns; j++)
            sum += (C[i * ns + j] = exp(C[i * ns + j] - mx));
        for (int j = 0; j < ns; j++)
            C[i * ns + j] = C[i * ns + j] / sum + hc_eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) /* the first pass is columns only; then (iters - 1) x (rows, columns) */
            for (int i = 0; i < ns; i++) {
                double sum = 0;
                for (int j = 0; j < ns; j++)
                    sum += C[i * ns + j];
                for (int j = 0; j < ns; j++)
                    C[i * ns + j] /= sum + hc_eps;
            }
        for (int j = 0; j < ns; j++) {
            double sum = 0;
            for (int i = 0; i < ns; i++)
                sum += C[i * ns + j];
            for (int i = 0; i < ns; i++)
                C[i * ns + j] /= sum + hc_eps;
        }
    }
    for (int d = 0; d < D; d++) {
        double v = 0;
        for (int s = 0; s < ns; s++)
            v += pre[s] * X[s * D + d];
        x[d] = v;
    }
}

typedef struct hc_case {
    int n, ns, D;
    float *X, *fn, *base, *scale;
} hc_case;

/* Random mHC parameters at the scale the models use: mix values O(1). */
static hc_case mk_hc_case(tu_rng *r, int n, int ns, int D, int rows)
{
    hc_case c = {.n = n, .ns = ns, .D = D};
    const int W = ns * D;
    c.X = xcalloc((size_t)n * W, sizeof(float));
    c.fn = xcalloc((size_t)rows * W, sizeof(float));
    c.base = xcalloc((size_t)rows, sizeof(float));
    c.scale = xcalloc(3, sizeof(float));
    fill_normal(r, c.X, (int64_t)n * W, 1.0f);
    for (int i = 0; i < W; i++) /* token 1: a state far from unit RMS, to exercise the normalisation */
        c.X[W + i] *= 300.0f;
    fill_normal(r, c.fn, (int64_t)rows * W, 2.0f / sqrtf((float)W));
    fill_uniform(r, c.base, rows, -1.0f, 1.0f);
    fill_uniform(r, c.scale, 3, 0.5f, 2.0f);
    return c;
}

static void free_hc_case(hc_case *c)
{
    free(c->X);
    free(c->fn);
    free(c->base);
    free(c->scale);
}

static void test_hc_pre_against_direct(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const int n = 3, ns = 4, D = 64, iters = 20;
    const float eps = 1e-6f, hc_eps = 1e-6f;
    hc_case c = mk_hc_case(&r, n, ns, D, (2 + ns) * ns);
    /* comb logits of spread ~1, where 20 Sinkhorn iterations converge (with
     * sharper logits they need more: see the next test) */
    c.scale[2] = tu_uniform(&r, 0.2f, 0.5f);
    v4_hc_shape sh = {.n_streams = ns, .dim = D, .iters = iters, .eps = eps, .hc_eps = hc_eps};
    float *x = xcalloc((size_t)n * D, sizeof(float)), *post = xcalloc((size_t)n * ns, sizeof(float)),
          *comb = xcalloc((size_t)n * ns * ns, sizeof(float));
    be->ops->hc_pre(be, x, post, comb, c.X, c.fn, c.base, c.scale, n, &sh);
    expect_synced(be);

    double worst_x = 0, worst_p = 0, worst_c = 0, worst_row = 0, worst_col = 0;
    for (int t = 0; t < n; t++) {
        double rx[64], rp[4], rc[16];
        ref_hc_pre(c.X + (int64_t)t * ns * D, c.fn, c.base, c.scale, ns, D, iters, eps, hc_eps, rx, rp, rc);
        double xs = 0;
        for (int d = 0; d < D; d++)
            xs = fmax(xs, fabs(rx[d]));
        for (int d = 0; d < D; d++)
            worst_x = fmax(worst_x, fabs(x[t * D + d] - rx[d]) / xs);
        for (int s = 0; s < ns; s++)
            worst_p = fmax(worst_p, fabs(post[t * ns + s] - rp[s]));
        for (int i = 0; i < ns * ns; i++)
            worst_c = fmax(worst_c, fabs(comb[t * ns * ns + i] - rc[i]));
        /* Sinkhorn: the op's comb is doubly stochastic. The last pass
         * normalises columns (sum = S/(S+hc_eps)); rows follow after 20
         * alternations. */
        for (int i = 0; i < ns; i++) {
            double rs = 0, cs = 0;
            for (int j = 0; j < ns; j++) {
                rs += comb[t * ns * ns + i * ns + j];
                cs += comb[t * ns * ns + j * ns + i];
            }
            worst_row = fmax(worst_row, fabs(rs - 1));
            worst_col = fmax(worst_col, fabs(cs - 1));
        }
    }
    fprintf(stderr, "# hc_pre: x rel %.2e, post %.2e, comb %.2e; |row sum-1| %.2e, |col sum-1| %.2e\n", worst_x,
            worst_p, worst_c, worst_row, worst_col);
    assert_true(worst_x <= 1e-5);
    assert_true(worst_p <= 1e-6);
    assert_true(worst_c <= 1e-5);
    assert_true(worst_col <= 1e-5);
    assert_true(worst_row <= 1e-3);
    free(x);
    free(post);
    free(comb);
    free_hc_case(&c);
    backend_cpu_destroy(be);
}

/* Sharp comb logits (spread ~8): the op still follows the spec's exact
 * iteration count (1 and 20 iterations against the direct version); rows
 * need not be normalised after 20 (Sinkhorn converges slowly when entries
 * differ by orders of magnitude), but they are closer than after 1. */
static void test_hc_pre_sinkhorn_sharp(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const int n = 4, ns = 4, D = 32;
    hc_case c = mk_hc_case(&r, n, ns, D, (2 + ns) * ns);
    c.scale[2] = 4.0f; /* comb logits with spread ~8 */
    float x[4 * 32], post[16], comb[64];
    double row_dev[2] = {0, 0};
    for (int iters = 1; iters <= 20; iters += 19) {
        v4_hc_shape sh = {.n_streams = ns, .dim = D, .iters = iters, .eps = 1e-6f, .hc_eps = 1e-6f};
        be->ops->hc_pre(be, x, post, comb, c.X, c.fn, c.base, c.scale, n, &sh);
        expect_synced(be);
        double worst_row = 0, worst_col = 0, worst_ref = 0;
        for (int t = 0; t < n; t++) {
            double rx[32], rp[4], rc[16];
            ref_hc_pre(c.X + t * ns * D, c.fn, c.base, c.scale, ns, D, iters, 1e-6, 1e-6, rx, rp, rc);
            for (int i = 0; i < ns; i++) {
                double rs = 0, cs = 0;
                for (int j = 0; j < ns; j++) {
                    rs += comb[t * 16 + i * ns + j];
                    cs += comb[t * 16 + j * ns + i];
                    worst_ref = fmax(worst_ref, fabs(comb[t * 16 + i * ns + j] - rc[i * ns + j]));
                }
                worst_row = fmax(worst_row, fabs(rs - 1));
                worst_col = fmax(worst_col, fabs(cs - 1));
            }
        }
        fprintf(stderr, "# sinkhorn iters %d: |row-1| %.2e |col-1| %.2e vs direct %.2e\n", iters, worst_row,
                worst_col, worst_ref);
        assert_true(worst_ref <= 1e-5);
        row_dev[iters == 20] = worst_row;
    }
    assert_true(row_dev[1] < row_dev[0]);
    free_hc_case(&c);
    backend_cpu_destroy(be);
}

static void test_hc_post_transpose(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const int n = 3, ns = 4, D = 40;
    v4_hc_shape sh = {.n_streams = ns, .dim = D, .iters = 20, .eps = 1e-6f, .hc_eps = 1e-6f};
    float X[3 * 4 * 40], X0[3 * 4 * 40], y[3 * 40], post[12], comb[48];
    fill_normal(&r, X0, n * ns * D, 1.0f);
    fill_normal(&r, y, n * D, 1.0f);
    fill_uniform(&r, post, n * ns, 0.0f, 2.0f);
    fill_uniform(&r, comb, n * ns * ns, 0.0f, 1.0f);
    /* token 0: a cyclic permutation C[j][(j+1)%ns] = 1, so stream s must
     * receive stream s-1 (and not s+1, which the untransposed rule gives) */
    memset(comb, 0, 16 * sizeof(float));
    for (int j = 0; j < ns; j++)
        comb[j * ns + (j + 1) % ns] = 1.0f;
    memcpy(X, X0, sizeof X);
    be->ops->hc_post(be, X, y, post, comb, n, &sh);
    expect_synced(be);
    for (int s = 0; s < ns; s++)
        for (int d = 0; d < D; d++) {
            float want = post[s] * y[d] + X0[((s + ns - 1) % ns) * D + d];
            assert_float_equal(X[s * D + d], want, 1e-6);
        }
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int s = 0; s < ns; s++)
            for (int d = 0; d < D; d++) {
                double v = (double)post[t * ns + s] * y[t * D + d];
                for (int j = 0; j < ns; j++)
                    v += (double)comb[t * 16 + j * ns + s] * X0[(t * ns + j) * D + d];
                worst = fmax(worst, fabs(X[(t * ns + s) * D + d] - v));
            }
    fprintf(stderr, "# hc_post max |diff| %.2e\n", worst);
    assert_true(worst <= 1e-5);
    backend_cpu_destroy(be);
}

static void test_hc_head_against_direct(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const int n = 3, ns = 4, D = 48, W = ns * D;
    hc_case c = mk_hc_case(&r, n, ns, D, ns);
    v4_hc_shape sh = {.n_streams = ns, .dim = D, .iters = 20, .eps = 1e-6f, .hc_eps = 1e-6f};
    float x[3 * 48];
    be->ops->hc_head(be, x, c.X, c.fn, c.base, c.scale, n, &sh);
    expect_synced(be);
    double worst = 0;
    for (int t = 0; t < n; t++) {
        const float *Xt = c.X + t * W;
        double ss = 0, pre[4], xs = 0;
        for (int i = 0; i < W; i++)
            ss += (double)Xt[i] * Xt[i];
        double inv = 1.0 / sqrt(ss / W + 1e-6);
        for (int s = 0; s < ns; s++) {
            double m = 0;
            for (int i = 0; i < W; i++)
                m += (double)c.fn[s * W + i] * Xt[i] * inv;
            pre[s] = sigmoid(m * c.scale[0] + c.base[s]) + 1e-6;
        }
        for (int d = 0; d < D; d++)
            for (int s = 0; s < ns; s++)
                xs = fmax(xs, fabs(Xt[s * D + d]));
        for (int d = 0; d < D; d++) {
            double v = 0;
            for (int s = 0; s < ns; s++)
                v += pre[s] * Xt[s * D + d];
            worst = fmax(worst, fabs(x[t * D + d] - v) / xs);
        }
    }
    fprintf(stderr, "# hc_head rel %.2e\n", worst);
    assert_true(worst <= 1e-5);
    free_hc_case(&c);
    backend_cpu_destroy(be);
}

/* ---- rope frequencies (MODEL.md 4.2, 4.6) -------------------------------- */

static void test_rope_plain_frequencies(void **state)
{
    double f[32];
    rope_inv_freq(10000.0, 64, f);
    for (int i = 0; i < 32; i++) /* theta^(-2i/r) written as exp(-(2i/r) ln theta) */
        assert_true(fabs(f[i] - exp(-(2.0 * i / 64) * log(10000.0))) <= 1e-14 * f[i]);
    assert_true(f[0] == 1.0);
    assert_true(fabs(f[16] - 0.01) <= 1e-17); /* 10000^(-1/2) */
    rope_inv_freq(160000.0, 32, f);
    for (int i = 0; i < 16; i++)
        assert_true(fabs(f[i] - exp(-(2.0 * i / 32) * log(160000.0))) <= 1e-14 * f[i]);
}

/* The real config: theta 160000, r 64, factor 16, L0 65536, beta 32 / 1.
 * corr(32) = 64 ln(65536 / (64 pi)) / (2 ln 160000) = 15.45 -> low = 15;
 * corr(1) = 64 ln(65536 / (2 pi)) / (2 ln 160000) = 24.71 -> high = 25. */
static void test_rope_yarn_frequencies(void **state)
{
    const double theta = 160000, s = 16, L0 = 65536;
    const int r = 64;
    double corr_fast = r * log(L0 / (32 * 2 * M_PI)) / (2 * log(theta));
    double corr_slow = r * log(L0 / (1 * 2 * M_PI)) / (2 * log(theta));
    assert_true(fabs(corr_fast - 15.4533) < 1e-3);
    assert_true(fabs(corr_slow - 24.7084) < 1e-3);
    const double low = 15, high = 25;
    assert_true(floor(corr_fast) == low && ceil(corr_slow) == high);

    double f[32];
    rope_yarn_inv_freq(theta, r, s, L0, 32, 1, f);
    for (int i = 0; i < 32; i++) {
        double base = pow(theta, -2.0 * i / r);
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double keep = 1 - ramp;
        double want = (base / s) * (1 - keep) + base * keep;
        assert_true(fabs(f[i] - want) <= 1e-15 * want);
        if (i <= 15) /* fast-rotating pairs keep their frequency */
            assert_true(fabs(f[i] - base) <= 1e-15 * base);
        if (i >= 25) /* slow pairs are interpolated by the full factor */
            assert_true(fabs(f[i] - base / 16) <= 1e-15 * base);
    }
    /* i = 20: halfway along the ramp */
    double b20 = pow(theta, -40.0 / 64);
    assert_true(fabs(f[20] - (0.5 * b20 / 16 + 0.5 * b20)) <= 1e-15 * b20);

    /* high == low gets +0.001: beta_fast == beta_slow puts both at one value */
    double g[32];
    rope_yarn_inv_freq(theta, r, s, L0, 8, 8, g);
    double c8 = r * log(L0 / (8 * 2 * M_PI)) / (2 * log(theta));
    double lo8 = floor(c8), hi8 = ceil(c8);
    if (hi8 == lo8)
        hi8 += 0.001;
    for (int i = 0; i < 32; i++) {
        double base = pow(theta, -2.0 * i / r);
        double ramp = (i - lo8) / (hi8 - lo8);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        assert_true(fabs(g[i] - (base / s * ramp + base * (1 - ramp))) <= 1e-15 * base);
    }
}

/* The loaded models carry these frequencies: `rates` has YaRN on the
 * compress rope, `tiny` has none; both use plain 10000 for main layers. */
static void test_model_rope_tables(void **state)
{
    v4_backend *be = mk_backend();
    v4_err err;
    char dir[4096];
    const char *names[2] = {"rates", "tiny"};
    for (int k = 0; k < 2; k++) {
        snprintf(dir, sizeof dir, "%s/model", tu_golden(names[k]));
        v4_model *m;
        if (model_open(dir, be, &m, &err))
            fail_msg("model_open %s: %s", dir, err.msg);
        const int r = (int)m->cfg.rope_dim;
        double fm[256], fc[256];
        rope_inv_freq(10000.0, r, fm);
        if (k == 0)
            rope_yarn_inv_freq(160000.0, r, 16, 65536, 32, 1, fc);
        else
            rope_inv_freq(160000.0, r, fc);
        for (int i = 0; i < r / 2; i++) {
            assert_true(m->rope_main[i] == (float)fm[i]);
            assert_true(m->rope_comp[i] == (float)fc[i]);
        }
        if (k == 0)
            assert_true(m->rope_comp[31] == (float)(pow(160000.0, -62.0 / 64) / 16));
        model_close(m);
    }
    backend_cpu_destroy(be);
}

/* ---- rope op -------------------------------------------------------------- */

static void test_rope_op_last_channels(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { HEADS = 3, HD = 24, RD = 8 };
    const int starts[3] = {0, 777, 66535}, ntoks[3] = {2, 1, 2};
    tstep ts;
    v4_step st = mk_step(be, &ts, 3, starts, ntoks, NULL);
    const int n = st.n_tokens;
    double fd[RD / 2];
    rope_yarn_inv_freq(160000, RD, 16, 65536, 32, 1, fd);
    float freq[RD / 2];
    for (int i = 0; i < RD / 2; i++)
        freq[i] = (float)fd[i] * 37.0f; /* faster rotation so small positions turn too */
    float x0[5 * HEADS * HD], x[5 * HEADS * HD];
    fill_normal(&r, x0, n * HEADS * HD, 1.0f);
    memcpy(x, x0, sizeof x);
    be->ops->rope(be, x, n, HEADS, HD, RD, freq, &st, false);
    expect_synced(be);
    double worst = 0, worst_norm = 0;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < HEADS; h++) {
            const float *a0 = x0 + (t * HEADS + h) * HD;
            const float *a1 = x + (t * HEADS + h) * HD;
            for (int c = 0; c < HD - RD; c++) /* channels before the rope slice: untouched */
                assert_true(a1[c] == a0[c]);
            for (int i = 0; i < RD / 2; i++) {
                double ang = (double)ts.tok_pos[t] * freq[i];
                double a = a0[HD - RD + 2 * i], b = a0[HD - RD + 2 * i + 1];
                double ra = a * cos(ang) - b * sin(ang), rb = b * cos(ang) + a * sin(ang);
                worst = fmax(worst, fabs(a1[HD - RD + 2 * i] - ra));
                worst = fmax(worst, fabs(a1[HD - RD + 2 * i + 1] - rb));
                double n0 = a * a + b * b;
                double n1 = (double)a1[HD - RD + 2 * i] * a1[HD - RD + 2 * i] +
                            (double)a1[HD - RD + 2 * i + 1] * a1[HD - RD + 2 * i + 1];
                worst_norm = fmax(worst_norm, fabs(n1 - n0) / (n0 + 1e-30));
            }
        }
    /* position 0: the identity */
    for (int h = 0; h < HEADS; h++)
        for (int c = 0; c < HD; c++)
            assert_true(x[h * HD + c] == x0[h * HD + c]);
    /* inverse rope at the same position undoes it */
    be->ops->rope(be, x, n, HEADS, HD, RD, freq, &st, true);
    expect_synced(be);
    double worst_inv = 0;
    for (int i = 0; i < n * HEADS * HD; i++)
        worst_inv = fmax(worst_inv, fabs(x[i] - x0[i]));
    fprintf(stderr, "# rope: rotation %.2e, pair norm rel %.2e, inverse %.2e\n", worst, worst_norm, worst_inv);
    assert_true(worst <= 1e-5);
    assert_true(worst_norm <= 1e-6);
    assert_true(worst_inv <= 1e-5);
    backend_cpu_destroy(be);
}

/* ---- RMSNorm, embedding ---------------------------------------------------- */

static void test_rmsnorm(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { ROWS = 37, DIM = 70 };
    const float eps = 1e-6f;
    float *x = xcalloc(ROWS * DIM, 4), *y = xcalloc(ROWS * DIM, 4), *yu = xcalloc(ROWS * DIM, 4),
          *xi = xcalloc(ROWS * DIM, 4), w[DIM];
    fill_normal(&r, x, ROWS * DIM, 3.0f);
    for (int i = 0; i < DIM; i++) /* row 5: all zero, so eps carries it */
        x[5 * DIM + i] = 0;
    x[6 * DIM] = 1e-4f;
    fill_uniform(&r, w, DIM, -2.0f, 2.0f);
    be->ops->rmsnorm(be, y, x, w, ROWS, DIM, eps);
    be->ops->rmsnorm(be, yu, x, NULL, ROWS, DIM, eps);
    memcpy(xi, x, ROWS * DIM * sizeof(float));
    be->ops->rmsnorm(be, xi, xi, w, ROWS, DIM, eps);
    expect_synced(be);
    double worst = 0;
    for (int t = 0; t < ROWS; t++) {
        double ss = 0;
        for (int i = 0; i < DIM; i++)
            ss += (double)x[t * DIM + i] * x[t * DIM + i];
        double inv = 1.0 / sqrt(ss / DIM + eps);
        for (int i = 0; i < DIM; i++) {
            double u = x[t * DIM + i] * inv;
            worst = fmax(worst, fabs(yu[t * DIM + i] - u) / (fabs(u) + 1e-3));
            worst = fmax(worst, fabs(y[t * DIM + i] - u * w[i]) / (fabs(u * w[i]) + 1e-3));
            assert_true(xi[t * DIM + i] == y[t * DIM + i]); /* in place: the same values */
        }
    }
    for (int i = 0; i < DIM; i++)
        assert_true(y[5 * DIM + i] == 0.0f);
    fprintf(stderr, "# rmsnorm rel %.2e\n", worst);
    assert_true(worst <= 1e-6);
    free(x);
    free(y);
    free(yu);
    free(xi);
    backend_cpu_destroy(be);
}

/* ---- weight formats: direct decoders from MODEL.md section 3 ---------------- */

static double dec_e4m3(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    double v = e == 0 ? m / 8.0 * ldexp(1, -6) : (1 + m / 8.0) * ldexp(1, e - 7);
    return s ? -v : v;
}

static double dec_e8m0(uint8_t b) { return ldexp(1, b - 127); }

static double dec_e2m1(uint8_t c)
{
    static const double V[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (c & 8) ? -V[c & 7] : V[c & 7];
}

static double dec_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A random weight [rows, cols] in format `dt` (F32, BF16, F8_E4M3 with block
 * scales, MXFP4 with group scales) plus its exact dequantized values. */
typedef struct tmat {
    v4_mat m;
    void *data;
    uint8_t *scale;
    double *deq; /* [rows][cols] */
} tmat;

static tmat mk_mat(tu_rng *r, dtype_t dt, int64_t rows, int64_t cols)
{
    tmat t = {0};
    t.deq = xcalloc((size_t)(rows * cols), sizeof(double));
    t.m.rows = rows;
    t.m.cols = cols;
    t.m.dtype = dt;
    t.m.name = "test.weight";
    if (dt == DT_F32) {
        float *d = xcalloc((size_t)(rows * cols), 4);
        for (int64_t i = 0; i < rows * cols; i++)
            t.deq[i] = d[i] = tu_normal(r);
        t.data = d;
        t.m.fmt = WF_PLAIN;
    } else if (dt == DT_BF16) {
        uint16_t *d = xcalloc((size_t)(rows * cols), 2);
        for (int64_t i = 0; i < rows * cols; i++) {
            d[i] = dt_f32_to_bf16(tu_normal(r));
            t.deq[i] = dec_bf16(d[i]);
        }
        t.data = d;
        t.m.fmt = WF_PLAIN;
    } else if (dt == DT_F8_E4M3) {
        const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
        uint8_t *d = xcalloc((size_t)(rows * cols), 1);
        t.scale = xcalloc((size_t)(sr * sc), 1);
        for (int64_t i = 0; i < sr * sc; i++)
            t.scale[i] = (uint8_t)(118 + rand_int(r, 14)); /* 2^-9 .. 2^4 */
        for (int64_t o = 0; o < rows; o++)
            for (int64_t i = 0; i < cols; i++) {
                uint8_t b;
                do
                    b = (uint8_t)tu_next(r);
                while ((b & 0x7F) == 0x7F); /* NaN codes never occur in weights */
                d[o * cols + i] = b;
                t.deq[o * cols + i] = dec_e4m3(b) * dec_e8m0(t.scale[(o / 128) * sc + i / 128]);
            }
        t.data = d;
        t.m.fmt = WF_FP8;
    } else if (dt == DT_MXFP4) {
        uint8_t *d = xcalloc((size_t)(rows * cols / 2), 1);
        t.scale = xcalloc((size_t)(rows * cols / 32), 1);
        for (int64_t i = 0; i < rows * cols / 32; i++)
            t.scale[i] = (uint8_t)(122 + rand_int(r, 8));
        for (int64_t o = 0; o < rows; o++)
            for (int64_t i = 0; i < cols; i += 2) {
                uint8_t b = (uint8_t)tu_next(r);
                d[(o * cols + i) / 2] = b;
                double s = dec_e8m0(t.scale[o * (cols / 32) + i / 32]);
                t.deq[o * cols + i] = dec_e2m1(b & 15) * s; /* even input: low nibble */
                t.deq[o * cols + i + 1] = dec_e2m1(b >> 4) * s;
            }
        t.data = d;
        t.m.fmt = WF_MXFP4;
    }
    t.m.data = t.data;
    t.m.scale = t.scale;
    return t;
}

static void free_mat(tmat *t)
{
    free(t->data);
    free(t->scale);
    free(t->deq);
}

/* Runs linear through upload_mat and compares every output with the direct
 * dequantize-then-matmul in double; the bound is relative to sum |x_i w_i|
 * (fp32 accumulation error grows with that, not with |y|). */
static void check_linear(v4_backend *be, tu_rng *r, dtype_t dt, int64_t rows, int64_t cols, int n, int groups)
{
    tmat w = mk_mat(r, dt, rows, cols);
    v4_mat dev;
    v4_err err;
    if (be->ops->upload_mat(be, &dev, &w.m, &err))
        fail_msg("upload_mat: %s", err.msg);
    const int64_t in = cols * groups, per_group = rows / groups;
    float *x = xcalloc((size_t)(n * in), 4), *y = xcalloc((size_t)(n * rows), 4);
    fill_normal(r, x, n * in, 1.0f);
    be->ops->linear(be, y, x, n, &dev, groups);
    expect_synced(be);
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int64_t o = 0; o < rows; o++) {
            const int64_t g = o / per_group;
            double v = 0, mag = 0;
            for (int64_t i = 0; i < cols; i++) {
                double p = (double)x[t * in + g * cols + i] * w.deq[o * cols + i];
                v += p;
                mag += fabs(p);
            }
            worst = fmax(worst, fabs(y[t * rows + o] - v) / (mag + 1e-30));
        }
    fprintf(stderr, "# linear %s [%lld, %lld] x %d groups %d: rel %.2e\n", dt_name(dt), (long long)rows,
            (long long)cols, n, groups, worst);
    assert_true(worst <= 1e-5);
    be->ops->free_mat(be, &dev);
    free(x);
    free(y);
    free_mat(&w);
}

static void test_linear_formats(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    check_linear(be, &r, DT_F32, 37, 53, 5, 1);
    check_linear(be, &r, DT_BF16, 40, 72, 3, 1);
    check_linear(be, &r, DT_F8_E4M3, 256, 384, 4, 1);  /* whole 128x128 blocks */
    check_linear(be, &r, DT_F8_E4M3, 300, 200, 3, 1);  /* partial blocks in both directions */
    check_linear(be, &r, DT_F8_E4M3, 129, 130, 2, 1);  /* one row / two columns past a block */
    check_linear(be, &r, DT_F8_E4M3, 7, 13, 1, 1);     /* smaller than one block */
    check_linear(be, &r, DT_MXFP4, 33, 96, 4, 1);
    check_linear(be, &r, DT_MXFP4, 64, 512, 2, 1);
    backend_cpu_destroy(be);
}

/* Grouped linear as in the output projection wo_a: the H*d input splits
 * into G contiguous groups, group g meets rows g*R/G .. (g+1)*R/G - 1. */
static void test_linear_grouped(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    check_linear(be, &r, DT_F8_E4M3, 4 * 40, 136, 3, 4);
    check_linear(be, &r, DT_F8_E4M3, 4 * 128, 1024, 2, 4); /* wo_a of `rates`: 4 groups of 128 rows */
    check_linear(be, &r, DT_BF16, 2 * 24, 40, 5, 2);
    check_linear(be, &r, DT_F32, 3 * 5, 16, 2, 3);
    backend_cpu_destroy(be);
}

/* FP8 weights must arrive in the backend's dialect. */
static void test_upload_refuses_other_dialect(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    tmat w = mk_mat(&r, DT_F8_E4M3, 8, 8);
    w.m.dtype = DT_F8_E4M3FNUZ;
    w.m.name = "layers.0.attn.wq_a.weight";
    v4_mat dev;
    v4_err err;
    assert_int_equal(be->ops->upload_mat(be, &dev, &w.m, &err), -1);
    assert_non_null(strstr(err.msg, "layers.0.attn.wq_a.weight"));
    assert_non_null(strstr(err.msg, "F8_E4M3FNUZ"));
    free_mat(&w);
    backend_cpu_destroy(be);
}

static void test_embed(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    tmat e = mk_mat(&r, DT_BF16, 50, 24);
    const int32_t ids[4] = {49, 0, 7, 7};
    const int starts[2] = {0, 9}, ntoks[2] = {3, 1};
    tstep ts;
    v4_step st = mk_step(be, &ts, 2, starts, ntoks, ids);
    float X[4 * 4 * 24];
    be->ops->embed(be, X, &e.m, &st, 4);
    expect_synced(be);
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < 4; s++)
            for (int i = 0; i < 24; i++)
                assert_true(X[(t * 4 + s) * 24 + i] == (float)e.deq[ids[t] * 24 + i]);
    free_mat(&e);
    backend_cpu_destroy(be);
}

/* ---- routing (MODEL.md 4.5) -------------------------------------------------- */

static double sqrtsoftplus(double x) { return sqrt(log1p(exp(x))); }

/* Checks one token's (ids, w) against an expected set of experts with the
 * unbiased scores normalised and scaled. Order of the k columns is free. */
static void check_route_row(const int32_t *ids, const float *w, const float *logits, const int *want, int k,
                            double scale)
{
    double sum = 0;
    for (int j = 0; j < k; j++)
        sum += sqrtsoftplus(logits[want[j]]);
    for (int j = 0; j < k; j++) {
        int found = -1;
        for (int q = 0; q < k; q++)
            if (ids[q] == want[j])
                found = q;
        if (found < 0)
            fail_msg("expert %d missing from the selection", want[j]);
        double ww = sqrtsoftplus(logits[want[j]]) / (sum + 1e-20) * scale;
        assert_true(fabs(w[found] - ww) <= 1e-6 * ww + 1e-12);
    }
}

/* top-k indices of v[0..n) in double (n small, no ties expected) */
static void topk_ref(const double *v, int n, int k, int *out)
{
    char taken[1024] = {0};
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n; e++)
            if (!taken[e] && (best < 0 || v[e] > v[best]))
                best = e;
        taken[best] = 1;
        out[j] = best;
    }
}

static void test_route_learned(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { N = 6, E = 16, K = 4 };
    const float scale = 1.5f;
    float logits[N * E], bias[E], zero[E] = {0}, w[N * K];
    int32_t ids[N * K];
    fill_normal(&r, logits, N * E, 2.0f);
    logits[0 * E + 3] = 25.0f;  /* softplus(x) = x region */
    logits[1 * E + 9] = -30.0f; /* score ~0 */
    fill_uniform(&r, bias, E, -0.3f, 0.3f);
    const int starts[1] = {0}, ntoks[1] = {N};
    tstep ts;
    v4_step st = mk_step(be, &ts, 1, starts, ntoks, NULL);

    /* no bias: the k best sqrtsoftplus scores */
    be->ops->moe_route(be, ids, w, logits, zero, NULL, &st, E, K, scale);
    expect_synced(be);
    for (int t = 0; t < N; t++) {
        double sc[E];
        int want[K];
        for (int e = 0; e < E; e++)
            sc[e] = sqrtsoftplus(logits[t * E + e]);
        topk_ref(sc, E, K, want);
        check_route_row(ids + t * K, w + t * K, logits + t * E, want, K, scale);
        double sum = 0;
        for (int j = 0; j < K; j++)
            sum += w[t * K + j];
        assert_true(fabs(sum - scale) <= 1e-5);
    }
    /* random bias: selection by score + bias, weights from scores alone */
    be->ops->moe_route(be, ids, w, logits, bias, NULL, &st, E, K, scale);
    expect_synced(be);
    for (int t = 0; t < N; t++) {
        double sc[E];
        int want[K];
        for (int e = 0; e < E; e++)
            sc[e] = sqrtsoftplus(logits[t * E + e]) + bias[e];
        topk_ref(sc, E, K, want);
        check_route_row(ids + t * K, w + t * K, logits + t * E, want, K, scale);
    }
    /* a bias that forces in each token's worst expert: it is chosen and
     * weighted by its own (small) score */
    for (int t = 0; t < N; t++) {
        float b[E] = {0};
        int worst = 0;
        for (int e = 1; e < E; e++)
            if (logits[t * E + e] < logits[t * E + worst])
                worst = e;
        b[worst] = 100.0f;
        be->ops->moe_route(be, ids, w, logits, b, NULL, &st, E, K, scale);
        expect_synced(be);
        double sc[E];
        int want[K];
        for (int e = 0; e < E; e++)
            sc[e] = sqrtsoftplus(logits[t * E + e]) + b[e];
        topk_ref(sc, E, K, want);
        assert_int_equal(want[0], worst);
        check_route_row(ids + t * K, w + t * K, logits + t * E, want, K, scale);
    }
    backend_cpu_destroy(be);
}

static void test_route_hash(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { V = 10, E = 16, K = 4, N = 5 };
    int32_t table[V * K];
    for (int v = 0; v < V; v++) /* distinct experts per token id */
        for (int j = 0; j < K; j++) {
            int e, dup;
            do {
                e = rand_int(&r, E);
                dup = 0;
                for (int q = 0; q < j; q++)
                    dup |= table[v * K + q] == e;
            } while (dup);
            table[v * K + j] = e;
        }
    v4_mat tid = {.fmt = WF_I32, .dtype = DT_I32, .rows = V, .cols = K, .data = table, .name = "tid2eid"}, dev;
    v4_err err;
    if (be->ops->upload_mat(be, &dev, &tid, &err))
        fail_msg("upload_mat: %s", err.msg);
    const int32_t toks[N] = {3, 7, 3, 0, 9};
    const int starts[2] = {0, 4}, ntoks[2] = {3, 2};
    tstep ts;
    v4_step st = mk_step(be, &ts, 2, starts, ntoks, toks);
    float logits[N * E], w[N * K];
    int32_t ids[N * K];
    fill_normal(&r, logits, N * E, 2.0f);
    be->ops->moe_route(be, ids, w, logits, NULL, &dev, &st, E, K, 1.5f);
    expect_synced(be);
    for (int t = 0; t < N; t++) {
        int want[K];
        for (int j = 0; j < K; j++) {
            want[j] = table[toks[t] * K + j];
            assert_int_equal(ids[t * K + j], want[j]); /* the table's experts, in its order */
        }
        check_route_row(ids + t * K, w + t * K, logits + t * E, want, K, 1.5);
    }
    be->ops->free_mat(be, &dev);
    backend_cpu_destroy(be);
}

/* ---- SwiGLU with the clamp, experts (MODEL.md 4.5) --------------------------- */

static double silu(double x) { return x / (1 + exp(-x)); }

static double swiglu_ref(double g, double u, double limit)
{
    g = fmin(g, limit);
    u = fmin(fmax(u, -limit), limit);
    return silu(g) * u;
}

static void test_swiglu_clamp(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { N = 1000 };
    const float L = 1.5f;
    float g[N], u[N], h[N];
    fill_uniform(&r, g, N, -4 * L, 4 * L);
    fill_uniform(&r, u, N, -4 * L, 4 * L);
    /* hand-picked: g far below -L is not clamped; g above L is; u both sides */
    g[0] = -6.0f, u[0] = 0.5f;
    g[1] = 6.0f, u[1] = 0.5f;
    g[2] = 1.0f, u[2] = -6.0f;
    g[3] = 1.0f, u[3] = 6.0f;
    be->ops->swiglu(be, h, g, u, N, L);
    expect_synced(be);
    assert_float_equal(h[0], silu(-6.0) * 0.5, 1e-7); /* not silu(-1.5) * 0.5 = -0.137 */
    assert_true(fabs(h[0] - silu(-1.5) * 0.5) > 0.1);
    assert_float_equal(h[1], silu(1.5) * 0.5, 1e-6);
    assert_float_equal(h[2], silu(1.0) * -1.5, 1e-6);
    assert_float_equal(h[3], silu(1.0) * 1.5, 1e-6);
    double worst = 0;
    for (int i = 0; i < N; i++)
        worst = fmax(worst, fabs(h[i] - swiglu_ref(g[i], u[i], L)));
    fprintf(stderr, "# swiglu max |diff| %.2e\n", worst);
    assert_true(worst <= 2e-6);
    backend_cpu_destroy(be);
}

static void test_moe_experts_direct(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { E = 6, K = 2, N = 5, D = 64, I = 32 };
    const float limit = 1.0f; /* as in `tiny`: the clamp bites */
    tmat w1[E], w2[E], w3[E];
    v4_mat d1[E], d2[E], d3[E];
    v4_err err;
    for (int e = 0; e < E; e++) {
        w1[e] = mk_mat(&r, DT_MXFP4, I, D);
        w3[e] = mk_mat(&r, DT_MXFP4, I, D);
        w2[e] = mk_mat(&r, e % 2 ? DT_MXFP4 : DT_F8_E4M3, D, I);
        if (be->ops->upload_mat(be, &d1[e], &w1[e].m, &err) || be->ops->upload_mat(be, &d2[e], &w2[e].m, &err) ||
            be->ops->upload_mat(be, &d3[e], &w3[e].m, &err))
            fail_msg("upload_mat: %s", err.msg);
    }
    /* tokens share experts 0, 2, 5; experts 1, 3, 4 get none; 5 = E-1 is the
     * highest id */
    const int32_t ids[N * K] = {0, 2, 2, 5, 5, 0, 2, 0, 5, 2};
    float wts[N * K], x[N * D], y[N * D];
    fill_uniform(&r, wts, N * K, 0.1f, 1.0f);
    fill_normal(&r, x, N * D, 0.1f);
    float *scratch = xcalloc((size_t)moe_scratch_floats(N, K, D, I, E), sizeof(float));
    be->ops->moe_experts(be, y, x, ids, wts, N, K, d1, d2, d3, limit, scratch);
    free(scratch);
    expect_synced(be);
    double worst = 0, ymax = 0;
    int clamped = 0;
    for (int t = 0; t < N; t++) {
        double ref[D] = {0};
        for (int j = 0; j < K; j++) {
            const int e = ids[t * K + j];
            double h[I];
            for (int i = 0; i < I; i++) {
                double g = 0, u = 0;
                for (int c = 0; c < D; c++) {
                    g += w1[e].deq[i * D + c] * x[t * D + c];
                    u += w3[e].deq[i * D + c] * x[t * D + c];
                }
                clamped += g > limit || fabs(u) > limit;
                h[i] = swiglu_ref(g, u, limit);
            }
            for (int o = 0; o < D; o++) {
                double v = 0;
                for (int i = 0; i < I; i++)
                    v += w2[e].deq[o * I + i] * h[i];
                ref[o] += wts[t * K + j] * v;
            }
        }
        for (int o = 0; o < D; o++) {
            worst = fmax(worst, fabs(y[t * D + o] - ref[o]));
            ymax = fmax(ymax, fabs(ref[o]));
        }
    }
    fprintf(stderr, "# moe_experts max |diff| %.2e (max |y| %.2e), %d clamped values\n", worst, ymax, clamped);
    assert_true(clamped > 0);
    assert_true(worst <= 1e-5 * ymax);
    for (int e = 0; e < E; e++) {
        free_mat(&w1[e]);
        free_mat(&w2[e]);
        free_mat(&w3[e]);
    }
    backend_cpu_destroy(be);
}

/* ---- add, scale, gather --------------------------------------------------------- */

static void test_small_elementwise(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    float a[50], b[50], c[50], src[5 * 7], dst[3 * 7];
    fill_normal(&r, a, 50, 1);
    fill_normal(&r, b, 50, 1);
    memcpy(c, a, sizeof a);
    be->ops->add(be, c, b, 50);
    for (int i = 0; i < 50; i++)
        assert_true(c[i] == a[i] + b[i]);
    be->ops->scale(be, c, 0.25f, 50);
    for (int i = 0; i < 50; i++)
        assert_true(c[i] == (a[i] + b[i]) * 0.25f);
    fill_normal(&r, src, 35, 1);
    const int32_t rows[3] = {4, 0, 4};
    be->ops->gather_rows(be, dst, src, rows, 3, 7);
    expect_synced(be);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(dst + i * 7, src + rows[i] * 7, 7 * sizeof(float));
    backend_cpu_destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hc_pre_against_direct),
        cmocka_unit_test(test_hc_pre_sinkhorn_sharp),
        cmocka_unit_test(test_hc_post_transpose),
        cmocka_unit_test(test_hc_head_against_direct),
        cmocka_unit_test(test_rope_plain_frequencies),
        cmocka_unit_test(test_rope_yarn_frequencies),
        cmocka_unit_test(test_model_rope_tables),
        cmocka_unit_test(test_rope_op_last_channels),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_linear_formats),
        cmocka_unit_test(test_linear_grouped),
        cmocka_unit_test(test_upload_refuses_other_dialect),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_route_learned),
        cmocka_unit_test(test_route_hash),
        cmocka_unit_test(test_swiglu_clamp),
        cmocka_unit_test(test_moe_experts_direct),
        cmocka_unit_test(test_small_elementwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
