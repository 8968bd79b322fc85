/* The stateful attention ops on the GPU against the CPU backend, driven
 * through several steps from the same state: two sequences in slots 2 and
 * 0 with shuffled block tables, a prefill chunk each, a second chunk, then
 * single-token decode steps that cross compression-window and block
 * boundaries. Each step runs on both backends, with the same random inputs:
 *   compress (the attention compressor; CSA and HCA) and the indexer's
 *   compressor (CSA), index_topk (CSA), attention (window + selected CSA or
 *   closed HCA entries + sinks), ring_store;
 * and compares: attention outputs; the stored state (every closed entry and
 * indexer key, the ring rows of the last W positions, the fp32 compressor
 * accumulators); the indexer's selection, which must be a valid top-k of
 * scores computed in double from the GPU's own stored keys (equal scores to
 * 1e-5 may order either way; with bf16 or FP8 keys, scores within the
 * bound of bf16 queries too: SEL_QTOL), and is reported against the CPU's.
 * Attention
 * on both backends takes the CPU's selection so its check is independent
 * of near-ties. Real dimensions: 64 heads of 512 (64 rope), window 128, the
 * indexer's 64 heads of 128 with top-512 (reached: 525 eligible entries at
 * the end), ratios 4 and 128.
 *
 * Bounds by KV element type, relative to the magnitude of what is compared
 * (attention output: its max; stored vectors: each vector's max):
 *   f32   1e-5 both (the same fp32 algorithm in another summation order);
 *   bf16  vectors 4e-3 (round to nearest keeps 8 significant bits: at most
 *         2^-9 of the value), attention 2e-2 (keys and values rounded so);
 *   fp8   vectors 5e-2 (per-vector scale maps the max to 448 (OCP) or 240
 *         (fnuz), where codes are 32 or 16 apart: half a step is at most
 *         3.6% of the max), attention 1.5e-1 (keys and values each off by up
 *         to 2^-4 of their size: about 2 x 6% at worst, 3% typically).
 * Accumulators are fp32 in every mode: 1e-5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/dtype.h"
#include "gt.h"
#include "gt_tests.h"
#include "model/model.h"

typedef struct attn_cfg {
    const char *name;
    layer_kind_t kind;
    int ratio;
    const char *kv;
    dtype_t dialect;
    double tol_o, tol_vec;
} attn_cfg;

typedef struct dims {
    int H, d, r, W, c, h, topk;
} dims;

static const dims REAL = {64, 512, 64, 128, 128, 64, 512};
static const dims SMALL = {4, 128, 32, 32, 64, 4, 8};
/* SMALL with the indexer's 64 heads of 512 channels: the keys of 8 entries a
 * warp no longer fit the shared memory beside the queries, so index_topk
 * scores 4 at a time (its other path) */
static const dims WIDE_INDEX = {4, 128, 32, 32, 512, 64, 8};

typedef struct side {
    v4_backend *be;
    v4_layer_kv kv;
    int32_t *sel;
} side;

static int gcd(int a, int b) { return b ? gcd(b, a % b) : a; }

/* Host copy of n vectors of `width` stored in the KV type of `kv`. */
static float *stored_vecs(v4_backend *be, const v4_layer_kv *kv, const void *data, const float *scale, int64_t nvec,
                          int64_t width)
{
    const size_t n = (size_t)(nvec * width), es = (size_t)be->kv_elem_bytes;
    float *out = gt_hostf(n);
    uint8_t *raw = malloc(n * es + 1);
    gt_down(be, raw, data, n * es);
    float *sc = NULL;
    if (dt_is_fp8(kv->dtype)) {
        sc = gt_hostf((size_t)nvec);
        gt_down(be, sc, scale, (size_t)nvec * 4);
    }
    for (size_t i = 0; i < n; i++) {
        if (kv->dtype == DT_F32)
            memcpy(&out[i], raw + 4 * i, 4);
        else if (kv->dtype == DT_BF16)
            out[i] = dt_bf16_to_f32((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8));
        else
            out[i] = dt_fp8_to_f32(kv->dtype, raw[i]) * sc[i / (size_t)width];
    }
    free(raw);
    free(sc);
    return out;
}

/* Worst per-vector error of `got` against `ref` over the listed vectors. */
static void compare_vecs(const char *what, const float *got, const float *ref, const int64_t *vecs, int nv,
                         int64_t width, double tol)
{
    double worst = 0;
    for (int k = 0; k < nv; k++) {
        const float *g = got + vecs[k] * width, *c = ref + vecs[k] * width;
        double md = 0, mr = 0;
        for (int64_t i = 0; i < width; i++) {
            if (!isfinite(g[i])) {
                gt_fail("%s: vector %lld channel %lld not finite", what, (long long)vecs[k], (long long)i);
                return;
            }
            md = fmax(md, fabs((double)g[i] - c[i]));
            mr = fmax(mr, fabs(c[i]));
        }
        worst = fmax(worst, mr > 0 ? md / mr : md);
    }
    if (!(worst <= tol))
        gt_fail("%s: %d vectors, worst rel err %.3e > bound %.0e", what, nv, worst, tol);
    else
        gt_note("%s: %d vectors, worst rel err %.3e (bound %.0e)", what, nv, worst, tol);
}

/* fp32 accumulators of a slot (m, s, a per channel); equal infinities agree. */
static void compare_acc(const char *what, const float *got, const float *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(ref[i]) || isinf(got[i])) {
            if (got[i] != ref[i]) {
                gt_fail("%s: element %zu is %g, expected %g", what, i, got[i], ref[i]);
                return;
            }
            continue;
        }
        md = fmax(md, fabs((double)got[i] - ref[i]));
        mr = fmax(mr, fabs(ref[i]));
    }
    double e = mr > 0 ? md / mr : md;
    if (!(e <= 1e-5))
        gt_fail("%s: rel err %.3e > bound 1e-05", what, e);
}

/* With bf16 or FP8 keys the indexer may round its queries to bf16 (the
 * tensor-core path, indexer_tc.cu): each product moves by at most 2^-8 of
 * its size, and the fp32 sums add a little more. */
#define SEL_QTOL (0x1p-8 + 1e-5)

/* The selection rows must be a valid top-k of double scores over the GPU's
 * keys, each entry's score known to within qtol sum_h |w| sum_c |q k| /
 * sqrt(c); returns the fraction of indices equal to the CPU's selection. */
static double check_selection(const char *what, const int32_t *sg, const int32_t *sc, const gt_step *st,
                              const float *qI, const float *wI, const float *keys, const int32_t *const *bts,
                              const dims *D, int ratio, int epb, double qtol, int *checked)
{
    int same = 0, total = 0;
    double *score = NULL, *err = NULL;
    for (int t = 0; t < st->n_tokens; t++) {
        const int32_t *g = sg + (int64_t)t * D->topk, *c = sc + (int64_t)t * D->topk;
        const int64_t n_elig = ((int64_t)st->tok_pos[t] + 1) / ratio;
        if (n_elig <= D->topk) {
            for (int k = 0; k < D->topk; k++)
                if (g[k] != (k < n_elig ? k : -1)) {
                    gt_fail("%s: token %d column %d is %d with %lld eligible entries", what, t, k, g[k],
                            (long long)n_elig);
                    free(score), free(err);
                    return 0;
                }
            continue;
        }
        score = realloc(score, (size_t)n_elig * sizeof *score);
        err = realloc(err, (size_t)n_elig * sizeof *err);
        const int32_t *bt = bts[st->tok_seq[t]];
        double smax = 0;
        for (int64_t i = 0; i < n_elig; i++) {
            const float *key = keys + ((int64_t)bt[i / epb] * epb + i % epb) * D->c;
            double s = 0, e = 0;
            for (int hh = 0; hh < D->h; hh++) {
                const float *q = qI + ((int64_t)t * D->h + hh) * D->c;
                const double w = wI[(int64_t)t * D->h + hh];
                double dot = 0, mag = 0;
                for (int ch = 0; ch < D->c; ch++) {
                    dot += (double)q[ch] * key[ch];
                    mag += fabs((double)q[ch] * key[ch]);
                }
                s += w * (dot > 0 ? dot : 0) / sqrt((double)D->c);
                e += fabs(w) * mag / sqrt((double)D->c);
            }
            score[i] = s;
            err[i] = qtol * e;
            smax = fmax(smax, fabs(s));
        }
        char *chosen = calloc((size_t)n_elig, 1);
        double lo = INFINITY, hi = -INFINITY;
        for (int k = 0; k < D->topk; k++) {
            if (g[k] < 0 || g[k] >= n_elig || (k > 0 && g[k] <= g[k - 1])) {
                gt_fail("%s: token %d column %d is %d (not ascending, or outside %lld eligible)", what, t, k, g[k],
                        (long long)n_elig);
                free(chosen);
                free(score), free(err);
                return 0;
            }
            chosen[g[k]] = 1;
            lo = fmin(lo, score[g[k]] + err[g[k]]);
        }
        for (int64_t i = 0; i < n_elig; i++)
            if (!chosen[i])
                hi = fmax(hi, score[i] - err[i]);
        if (!(lo >= hi - 1e-5 * smax)) {
            gt_fail("%s: token %d: selected score %.9g below unselected %.9g", what, t, lo, hi);
            free(chosen);
            free(score), free(err);
            return 0;
        }
        for (int k = 0; k < D->topk; k++)
            same += c[k] >= 0 && c[k] < n_elig && chosen[c[k]];
        total += D->topk;
        (*checked)++;
        free(chosen);
    }
    free(score), free(err);
    return total ? (double)same / total : 1.0;
}

static void run_case(const attn_cfg *cfg, const dims *D, bool small)
{
    tu_rng r = gt_rng(cfg->name);
    v4_err err;
    const bool comp = cfg->kind != LAYER_SLIDING, csa = cfg->kind == LAYER_CSA;
    const int bt_tokens = comp ? 256 / gcd(256, cfg->ratio) * cfg->ratio : 256;
    const int epb = comp ? bt_tokens / cfg->ratio : 0;
    /* steps: {A chunk, B chunk}; A in slot 2, B in slot 0 */
    static const int real_plan[][2] = {{1200, 37}, {900, 218}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    static const int small_plan[][2] = {{70, 5}, {29, 26}, {1, 1}, {1, 1}, {1, 1}};
    const int (*plan)[2] = small ? small_plan : real_plan;
    const int n_steps = small ? 5 : 6;
    int total[2] = {0, 0};
    for (int s = 0; s < n_steps; s++)
        total[0] += plan[s][0], total[1] += plan[s][1];
    const int MB = (total[0] + bt_tokens - 1) / bt_tokens + 1, NB = 2 * MB + 3;
    kv_geom g;
    memset(&g, 0, sizeof g);
    g.n_layers = 1;
    g.block_tokens = bt_tokens;
    g.window = D->W;
    g.n_blocks = NB;
    g.n_slots = 3;
    g.max_blocks_per_seq = MB;
    g.layer[0] = (kv_layer_geom){.kind = cfg->kind, .ratio = comp ? cfg->ratio : 0, .entries_per_block = epb,
                                 .head = D->d, .idx_head = csa ? D->c : 0, .n_acc = csa ? 2 : comp ? 1 : 0};
    int32_t *perm = malloc((size_t)NB * 4);
    for (int i = 0; i < NB; i++)
        perm[i] = i;
    for (int i = NB - 1; i > 0; i--) {
        int j = (int)(tu_next(&r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    const int32_t *bts[2] = {perm, perm + MB};
    const int slots[2] = {2, 0};

    side sd[2];
    memset(sd, 0, sizeof sd);
    sd[0].be = gt_cpu(cfg->dialect);
    sd[1].be = gt_cuda(cfg->dialect, cfg->kv, true);
    const int max_n = small ? 100 : 1237;
    for (int k = 0; k < 2; k++) {
        if (!sd[k].be)
            goto out;
        if (sd[k].be->ops->reserve_step(sd[k].be, max_n, 2, MB, &err) ||
            sd[k].be->ops->alloc_kv(sd[k].be, &g, 0, &sd[k].kv, &err)) {
            gt_fail("%s: %s", sd[k].be->ops->name, err.msg);
            goto out;
        }
        sd[k].sel = gt_alloc(sd[k].be, (size_t)max_n * D->topk * 4);
    }
    const int width = csa ? 2 * D->d : D->d, iw = 2 * D->c;
    float *ape = gt_randn(&r, (size_t)(comp ? cfg->ratio : 1) * width, 0.5f);
    float *normw = gt_randu(&r, (size_t)D->d, 0.5f, 1.5f), *iape = gt_randn(&r, (size_t)cfg->ratio * iw, 0.5f);
    float *inorm = gt_randu(&r, (size_t)D->c, 0.5f, 1.5f), *sinks = gt_randn(&r, (size_t)D->H, 1.0f);
    double fd[256];
    float freq[256];
    rope_yarn_inv_freq(160000.0, D->r, 16.0, 65536.0, 32.0, 1.0, fd); /* the compress frequencies */
    for (int i = 0; i < D->r / 2; i++)
        freq[i] = (float)fd[i];
    void *dev_ape[2], *dev_norm[2], *dev_iape[2], *dev_inorm[2], *dev_sinks[2], *dev_freq[2];
    for (int k = 0; k < 2; k++) {
        v4_backend *be = sd[k].be;
        dev_ape[k] = gt_up(be, ape, (size_t)(comp ? cfg->ratio : 1) * width * 4);
        dev_norm[k] = gt_up(be, normw, (size_t)D->d * 4);
        dev_iape[k] = gt_up(be, iape, (size_t)cfg->ratio * iw * 4);
        dev_inorm[k] = gt_up(be, inorm, (size_t)D->c * 4);
        dev_sinks[k] = gt_up(be, sinks, (size_t)D->H * 4);
        dev_freq[k] = gt_up(be, freq, (size_t)D->r / 2 * 4);
    }
    int pos[2] = {0, 0};
    for (int step = 0; step < n_steps && !gt_failed(); step++) {
        int ntok[2] = {plan[step][0], plan[step][1]};
        gt_step st = gt_make_step(&r, 2, slots, pos, ntok, bts, MB, 0);
        const int n = st.n_tokens;
        v4_step h = gt_host_view(&st), dv[2];
        char what[160];
        float *a = gt_randn(&r, (size_t)n * width, 1.0f), *z = gt_randn(&r, (size_t)n * width, 1.0f);
        float *ia = gt_randn(&r, (size_t)n * iw, 1.0f), *iz = gt_randn(&r, (size_t)n * iw, 1.0f);
        float *qI = gt_randn(&r, (size_t)n * D->h * D->c, 1.0f), *wI = gt_randn(&r, (size_t)n * D->h, 0.125f);
        float *q = gt_randn(&r, (size_t)n * D->H * D->d, 1.0f), *kvr = gt_randn(&r, (size_t)n * D->d, 1.0f);
        const size_t no = (size_t)n * D->H * D->d;
        float *o[2] = {gt_hostf(no), gt_hostf(no)};
        int32_t *sel[2] = {calloc((size_t)n * D->topk + 1, 4), calloc((size_t)n * D->topk + 1, 4)};
        for (int k = 0; k < 2; k++) {
            v4_backend *be = sd[k].be;
            const v4_backend_ops *ops = be->ops;
            if (ops->set_step(be, &h, &dv[k], &err)) {
                gt_fail("set_step: %s", err.msg);
                continue;
            }
            void *da = gt_up(be, a, (size_t)n * width * 4), *dz = gt_up(be, z, (size_t)n * width * 4);
            void *dia = gt_up(be, ia, (size_t)n * iw * 4), *diz = gt_up(be, iz, (size_t)n * iw * 4);
            void *dq = gt_up(be, q, no * 4), *dkv = gt_up(be, kvr, (size_t)n * D->d * 4);
            void *dqi = gt_up(be, qI, (size_t)n * D->h * D->c * 4), *dwi = gt_up(be, wI, (size_t)n * D->h * 4);
            float *dout = k ? gt_nan(be, no) : gt_alloc(be, no * 4);
            if (comp) {
                v4_comp_shape cs = {.ratio = cfg->ratio, .head = D->d, .width = width, .overlap = csa,
                                    .rope_dim = D->r, .entries_per_block = epb, .block_tokens = bt_tokens,
                                    .eps = 1e-6f};
                ops->compress(be, sd[k].kv.entries, sd[k].kv.comp_acc, da, dz, dev_ape[k], dev_norm[k], dev_freq[k],
                              &dv[k], &cs);
            }
            if (csa) {
                v4_comp_shape is = {.ratio = cfg->ratio, .head = D->c, .width = iw, .overlap = true,
                                    .rope_dim = D->r, .entries_per_block = epb, .block_tokens = bt_tokens,
                                    .eps = 1e-6f};
                ops->compress(be, sd[k].kv.idx_keys, sd[k].kv.idx_acc, dia, diz, dev_iape[k], dev_inorm[k],
                              dev_freq[k], &dv[k], &is);
                if (k) { /* poison: -7 is no valid column value */
                    for (size_t i = 0; i < (size_t)n * D->topk; i++)
                        sel[1][i] = -7;
                    gt_copy_to(be, sd[k].sel, sel[1], (size_t)n * D->topk * 4);
                }
                ops->index_topk(be, sd[k].sel, dqi, dwi, sd[k].kv.idx_keys, &dv[k], D->h, D->c, cfg->ratio, epb,
                                bt_tokens, D->topk);
                gt_down(be, sel[k], sd[k].sel, (size_t)n * D->topk * 4);
                if (k) /* attention takes the CPU's selection on both sides */
                    gt_copy_to(be, sd[k].sel, sel[0], (size_t)n * D->topk * 4);
            }
            v4_attn_shape as = {.n_heads = D->H, .head_dim = D->d, .rope_dim = D->r, .window = D->W,
                                .kind = cfg->kind, .ratio = comp ? cfg->ratio : 0, .entries_per_block = epb,
                                .block_tokens = bt_tokens, .topk = D->topk};
            ops->attention(be, dout, dq, dkv, &sd[k].kv, csa ? sd[k].sel : NULL, dev_sinks[k], &dv[k], &as);
            ops->ring_store(be, &sd[k].kv, dkv, &dv[k], D->W, D->d);
            gt_down(be, o[k], dout, no * 4);
            void *fr[] = {da, dz, dia, diz, dq, dkv, dqi, dwi, dout};
            for (size_t i = 0; i < sizeof fr / sizeof *fr; i++)
                gt_free(be, fr[i]);
        }
        pos[0] += ntok[0], pos[1] += ntok[1];
        snprintf(what, sizeof what, "%s step %d (%d + %d tokens, ends %d/%d): attention", cfg->name, step, ntok[0],
                 ntok[1], pos[0], pos[1]);
        gt_close_to(what, o[1], o[0], no, cfg->tol_o);
        /* stored state */
        const int64_t ring_vecs = g.n_slots * D->W, ent_vecs = (int64_t)NB * epb;
        float *ring[2], *ent[2] = {NULL, NULL}, *keys[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            ring[k] = stored_vecs(sd[k].be, &sd[k].kv, sd[k].kv.ring, sd[k].kv.ring_scale, ring_vecs, D->d);
            if (comp)
                ent[k] = stored_vecs(sd[k].be, &sd[k].kv, sd[k].kv.entries, sd[k].kv.entry_scale, ent_vecs, D->d);
            if (csa)
                keys[k] = stored_vecs(sd[k].be, &sd[k].kv, sd[k].kv.idx_keys, sd[k].kv.idx_scale, ent_vecs, D->c);
        }
        int64_t *vecs = malloc(sizeof(int64_t) * (size_t)(ent_vecs + ring_vecs + 1));
        int nv = 0;
        for (int s = 0; s < 2; s++)
            for (int p = pos[s] > D->W ? pos[s] - D->W : 0; p < pos[s]; p++)
                vecs[nv++] = (int64_t)slots[s] * D->W + p % D->W;
        snprintf(what, sizeof what, "%s step %d: ring", cfg->name, step);
        compare_vecs(what, ring[1], ring[0], vecs, nv, D->d, cfg->tol_vec);
        if (comp) {
            nv = 0;
            for (int s = 0; s < 2; s++)
                for (int i = 0; i < pos[s] / cfg->ratio; i++)
                    vecs[nv++] = (int64_t)bts[s][i / epb] * epb + i % epb;
            snprintf(what, sizeof what, "%s step %d: compressed entries", cfg->name, step);
            if (nv)
                compare_vecs(what, ent[1], ent[0], vecs, nv, D->d, cfg->tol_vec);
            if (csa && nv) {
                snprintf(what, sizeof what, "%s step %d: indexer keys", cfg->name, step);
                compare_vecs(what, keys[1], keys[0], vecs, nv, D->c, cfg->tol_vec);
            }
            const int n_acc = csa ? 2 : 1;
            const size_t per_slot = (size_t)n_acc * KV_ACC_FIELDS * D->d, iper = (size_t)n_acc * KV_ACC_FIELDS * D->c;
            float *acc[2] = {gt_hostf(g.n_slots * per_slot), gt_hostf(g.n_slots * per_slot)};
            float *iacc[2] = {gt_hostf(g.n_slots * iper), gt_hostf(g.n_slots * iper)};
            for (int k = 0; k < 2; k++) {
                gt_down(sd[k].be, acc[k], sd[k].kv.comp_acc, g.n_slots * per_slot * 4);
                if (csa)
                    gt_down(sd[k].be, iacc[k], sd[k].kv.idx_acc, g.n_slots * iper * 4);
            }
            for (int s = 0; s < 2; s++) {
                snprintf(what, sizeof what, "%s step %d: accumulators of slot %d", cfg->name, step, slots[s]);
                compare_acc(what, acc[1] + slots[s] * per_slot, acc[0] + slots[s] * per_slot, per_slot);
                if (csa)
                    compare_acc(what, iacc[1] + slots[s] * iper, iacc[0] + slots[s] * iper, iper);
            }
            for (int k = 0; k < 2; k++)
                free(acc[k]), free(iacc[k]);
        }
        if (csa) {
            int checked = 0;
            snprintf(what, sizeof what, "%s step %d: index_topk", cfg->name, step);
            const double qtol = strcmp(cfg->kv, "f32") == 0 ? 0.0 : SEL_QTOL;
            double agree = check_selection(what, sel[1], sel[0], &st, qI, wI, keys[1], bts, D, cfg->ratio, epb,
                                           qtol, &checked);
            if (checked) {
                gt_note("%s: %d tokens with more than %d eligible entries; %.4f of the selection equals the CPU's",
                        what, checked, D->topk, agree);
                if (strcmp(cfg->kv, "f32") == 0 && agree < 0.99)
                    gt_fail("%s: only %.4f of the selection agrees with the CPU in fp32", what, agree);
            }
        }
        free(vecs);
        for (int k = 0; k < 2; k++)
            free(ring[k]), free(ent[k]), free(keys[k]), free(o[k]), free(sel[k]);
        free(a), free(z), free(ia), free(iz), free(qI), free(wI), free(q), free(kvr);
        gt_step_free(&st);
    }
    for (int k = 0; k < 2; k++) {
        v4_backend *be = sd[k].be;
        void *fr[] = {dev_ape[k], dev_norm[k], dev_iape[k], dev_inorm[k], dev_sinks[k], dev_freq[k], sd[k].sel};
        for (size_t i = 0; i < sizeof fr / sizeof *fr; i++)
            gt_free(be, fr[i]);
    }
    free(ape), free(normw), free(iape), free(inorm), free(sinks);
out:
    for (int k = 0; k < 2; k++) {
        if (sd[k].be && sd[k].kv.ring)
            sd[k].be->ops->free_kv(sd[k].be, &sd[k].kv);
        gt_close(sd[k].be);
    }
    free(perm);
}

void test_attn_state_quick(void)
{
    static const attn_cfg cs[] = {
        {"attn small sliding f32", LAYER_SLIDING, 0, "f32", DT_F8_E4M3, 1e-5, 1e-5},
        {"attn small CSA/4 f32", LAYER_CSA, 4, "f32", DT_F8_E4M3, 1e-5, 1e-5},
        {"attn small HCA/16 bf16", LAYER_HCA, 16, "bf16", DT_F8_E4M3, 2e-2, 4e-3},
        {"attn small CSA/4 fp8", LAYER_CSA, 4, "fp8", DT_F8_E4M3, 1.5e-1, 5e-2},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        run_case(&cs[i], &SMALL, true);
    static const attn_cfg wide = {"attn small CSA/4 f32, index heads 64 x 512", LAYER_CSA, 4, "f32", DT_F8_E4M3, 1e-5,
                                  1e-5};
    run_case(&wide, &WIDE_INDEX, true);
}

/* The tensor-core kernel (bf16 operands) at small shapes: prefill steps
 * (one block per token) and decode steps of 2 tokens (keys split into
 * runs, merged by the combine kernel); in the --quick subset, so under the
 * sanitizers too. */
void test_attn_state_quick_tc(void)
{
    static const attn_cfg cs[] = {
        {"attn small sliding bf16 (tc)", LAYER_SLIDING, 0, "bf16", DT_F8_E4M3, 2e-2, 4e-3},
        {"attn small CSA/4 bf16 (tc)", LAYER_CSA, 4, "bf16", DT_F8_E4M3, 2e-2, 4e-3},
        {"attn small HCA/16 fp8 (tc)", LAYER_HCA, 16, "fp8", DT_F8_E4M3, 1.5e-1, 5e-2},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        run_case(&cs[i], &SMALL, true);
}

void test_attn_state_f32(void)
{
    static const attn_cfg cs[] = {
        {"attn sliding f32", LAYER_SLIDING, 0, "f32", DT_F8_E4M3, 1e-5, 1e-5},
        {"attn CSA/4 f32", LAYER_CSA, 4, "f32", DT_F8_E4M3, 1e-5, 1e-5},
        {"attn HCA/128 f32", LAYER_HCA, 128, "f32", DT_F8_E4M3, 1e-5, 1e-5},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        run_case(&cs[i], &REAL, false);
}

void test_attn_state_bf16(void)
{
    static const attn_cfg cs[] = {
        {"attn CSA/4 bf16", LAYER_CSA, 4, "bf16", DT_F8_E4M3, 2e-2, 4e-3},
        {"attn HCA/128 bf16", LAYER_HCA, 128, "bf16", DT_F8_E4M3, 2e-2, 4e-3},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        run_case(&cs[i], &REAL, false);
}

void test_attn_state_fp8(void)
{
    static const attn_cfg cs[] = {
        {"attn CSA/4 fp8", LAYER_CSA, 4, "fp8", DT_F8_E4M3, 1.5e-1, 5e-2},
        {"attn HCA/128 fp8", LAYER_HCA, 128, "fp8", DT_F8_E4M3, 1.5e-1, 5e-2},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        run_case(&cs[i], &REAL, false);
}

/* The KV state in e4m3fnuz (a backend created with the fnuz dialect). */
void test_attn_state_fnuz(void)
{
    static const attn_cfg c = {"attn CSA/4 fp8 fnuz", LAYER_CSA, 4, "fp8", DT_F8_E4M3FNUZ, 1.5e-1, 5e-2};
    run_case(&c, &REAL, false);
}
