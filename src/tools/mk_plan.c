/* The tensor plan of a random checkpoint: every tensor of MODEL.md
 * section 2 for a config, with its file dtype, shape and generator, and the
 * magnitudes that keep a forward pass over random weights numerically
 * healthy through many layers. */
#include "tools/mk_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Magnitudes of the random weights, in one place. Linear weights (FP8,
 * MXFP4 and BF16 alike) get std = linear_gain / sqrt(in), so activations
 * keep their scale through each matrix; vectors are normal with the given
 * mean and std. */
static const struct mk_init {
    double linear_gain;
    double embed_std;
    double norm_mean, norm_std; /* every RMSNorm weight */
    double sink_mean, sink_std; /* attn_sink */
    double ape_std;             /* compressor position biases */
    double hc_fn_gain;          /* mHC projections: std = gain / sqrt(n * D) */
    double hc_base_std;
    double hc_scale_mean, hc_scale_std;
    double gate_bias_std; /* router bias of learned layers */
    double fp8_code_rms;  /* code-unit RMS the block scales aim at: e4m3 */
    double fp4_code_rms;  /* and e2m1 */
} MK_INIT = {
    .linear_gain = 1.0,
    .embed_std = 1.0,
    .norm_mean = 1.0,
    .norm_std = 0.05,
    .sink_mean = 0.0,
    .sink_std = 1.0,
    .ape_std = 0.1,
    .hc_fn_gain = 1e-2,
    .hc_base_std = 0.1,
    .hc_scale_mean = 1.0,
    .hc_scale_std = 0.05,
    .gate_bias_std = 0.01,
    .fp8_code_rms = 16.0,
    .fp4_code_rms = 2.0,
};

typedef struct builder {
    mk_plan *p;
    uint64_t seed;
    v4_err *err;
    int failed;
} builder;

static int oom(builder *b)
{
    b->failed = 1;
    return v4_errf(b->err, "out of memory for the tensor plan");
}

static mk_tensor *add(builder *b, const char *name, dtype_t dt, int ndim, int64_t d0, int64_t d1, mk_gen_t gen)
{
    if (b->failed)
        return NULL;
    mk_plan *p = b->p;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 1024;
        mk_tensor *t = realloc(p->t, cap * sizeof *t);
        if (!t)
            return oom(b), NULL;
        p->t = t;
        p->cap = cap;
    }
    mk_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->gen = gen;
    t->key = mk_name_key(b->seed, name);
    t->rows = ndim == 2 ? d0 : 1;
    t->row_bytes = dt_elem_size(dt) * (size_t)(ndim == 2 ? d1 : d0);
    t->bytes = (uint64_t)t->rows * t->row_bytes;
    p->total += t->bytes;
    return t;
}

static void add_normal(builder *b, const char *name, dtype_t dt, int ndim, int64_t d0, int64_t d1, double mean,
                       double std)
{
    mk_tensor *t = add(b, name, dt, ndim, d0, d1, MK_NORMAL);
    if (t) {
        t->mean = (float)mean;
        t->std = (float)std;
    }
}

/* A BF16 linear weight [out, in] named exactly `name`. */
static void add_bf16_linear(builder *b, const char *name, int64_t out, int64_t in)
{
    add_normal(b, name, DT_BF16, 2, out, in, 0.0, MK_INIT.linear_gain / sqrt((double)in));
}

/* The code tables aiming at `rms`, shared by all weights that aim there. */
static int lut_for(builder *b, bool fp4, double rms)
{
    mk_plan *p = b->p;
    for (int i = 0; i < p->n_luts; i++)
        if (p->luts[i].fp4 == fp4 && p->luts[i].rms == rms)
            return i;
    mk_lut *l = realloc(p->luts, (size_t)(p->n_luts + 1) * sizeof *l);
    if (!l)
        return oom(b);
    p->luts = l;
    l[p->n_luts] = (mk_lut){.fp4 = fp4, .rms = rms};
    mk_lut_build(&l[p->n_luts]);
    return p->n_luts++;
}

/* A block-quantized weight: PREFIX.weight and its F8_E8M0 PREFIX.scale,
 * sharing one per-block (or per-group) choice of scale. The middle scale
 * 2^k with codes of RMS target / 2^k gives the weight std target =
 * gain / sqrt(in); k is picked so that the codes have modest magnitudes
 * (RMS 11-23 for e4m3, 1.4-2.8 for e2m1). */
static void add_quantized(builder *b, const char *prefix, int64_t out, int64_t in, bool fp4)
{
    if (b->failed)
        return;
    char wn[128], sn[128];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(sn, sizeof sn, "%s.scale", prefix);
    const double target = MK_INIT.linear_gain / sqrt((double)in);
    const double code_rms = fp4 ? MK_INIT.fp4_code_rms : MK_INIT.fp8_code_rms;
    const int k = (int)lround(log2(target / code_rms));
    const int lut = lut_for(b, fp4, target / ldexp(1.0, k));
    if (lut < 0)
        return;
    /* FP8 blocks use e-1..e+1, MXFP4 groups e..e+1 */
    const int e = 127 + k;
    if (e - 1 < 1 || e + 1 > 254) {
        b->failed = 1;
        v4_errf(b->err, "tensor '%s': scale exponent %d out of range", wn, e);
        return;
    }
    const uint64_t bk = mk_name_key(b->seed ^ 0x5CA1E5ull, wn);
    if (!(fp4 ? add(b, wn, DT_I8, 2, out, in / 2, MK_FP4_W) : add(b, wn, DT_F8_E4M3, 2, out, in, MK_FP8_W)))
        return;
    mk_tensor *s = fp4 ? add(b, sn, DT_F8_E8M0, 2, out, in / 32, MK_FP4_S)
                       : add(b, sn, DT_F8_E8M0, 2, (out + 127) / 128, (in + 127) / 128, MK_FP8_S);
    if (!s)
        return;
    mk_tensor *w = s - 1; /* taken after the second add, which may move the list */
    w->in = s->in = in;
    w->block_key = s->block_key = bk;
    w->scale_exp = s->scale_exp = e;
    w->lut = lut;
}

static void add_compressor(builder *b, const char *prefix, int ratio, int64_t head, int64_t width, int64_t D)
{
    char n[160];
    snprintf(n, sizeof n, "%s.wkv.weight", prefix);
    add_bf16_linear(b, n, width, D);
    snprintf(n, sizeof n, "%s.wgate.weight", prefix);
    add_bf16_linear(b, n, width, D);
    snprintf(n, sizeof n, "%s.ape", prefix);
    add_normal(b, n, DT_F32, 2, ratio, width, 0.0, MK_INIT.ape_std);
    snprintf(n, sizeof n, "%s.norm.weight", prefix);
    add_normal(b, n, DT_BF16, 1, head, 0, MK_INIT.norm_mean, MK_INIT.norm_std);
}

static void add_layer(builder *b, const v4_config *c, int L)
{
    const int64_t D = c->dim, n = c->hc_mult, H = c->n_heads, d = c->head_dim, I = c->moe_inter;
    const double hc_std = MK_INIT.hc_fn_gain / sqrt((double)(n * D));
    char nm[160];
#define N(fmt, ...) (snprintf(nm, sizeof nm, "layers.%d." fmt, L, ##__VA_ARGS__), nm)
    add_normal(b, N("hc_attn_fn"), DT_F32, 2, (2 + n) * n, n * D, 0.0, hc_std);
    add_normal(b, N("hc_attn_base"), DT_F32, 1, (2 + n) * n, 0, 0.0, MK_INIT.hc_base_std);
    add_normal(b, N("hc_attn_scale"), DT_F32, 1, 3, 0, MK_INIT.hc_scale_mean, MK_INIT.hc_scale_std);
    add_normal(b, N("hc_ffn_fn"), DT_F32, 2, (2 + n) * n, n * D, 0.0, hc_std);
    add_normal(b, N("hc_ffn_base"), DT_F32, 1, (2 + n) * n, 0, 0.0, MK_INIT.hc_base_std);
    add_normal(b, N("hc_ffn_scale"), DT_F32, 1, 3, 0, MK_INIT.hc_scale_mean, MK_INIT.hc_scale_std);
    add_normal(b, N("attn_norm.weight"), DT_BF16, 1, D, 0, MK_INIT.norm_mean, MK_INIT.norm_std);
    add_normal(b, N("ffn_norm.weight"), DT_BF16, 1, D, 0, MK_INIT.norm_mean, MK_INIT.norm_std);

    add_normal(b, N("attn.attn_sink"), DT_F32, 1, H, 0, MK_INIT.sink_mean, MK_INIT.sink_std);
    add_quantized(b, N("attn.wq_a"), c->q_lora_rank, D, false);
    add_normal(b, N("attn.q_norm.weight"), DT_BF16, 1, c->q_lora_rank, 0, MK_INIT.norm_mean, MK_INIT.norm_std);
    add_quantized(b, N("attn.wq_b"), H * d, c->q_lora_rank, false);
    add_quantized(b, N("attn.wkv"), d, D, false);
    add_normal(b, N("attn.kv_norm.weight"), DT_BF16, 1, d, 0, MK_INIT.norm_mean, MK_INIT.norm_std);
    add_quantized(b, N("attn.wo_a"), c->o_groups * c->o_lora_rank, H * d / c->o_groups, false);
    add_quantized(b, N("attn.wo_b"), D, c->o_groups * c->o_lora_rank, false);

    const layer_kind_t kind = cfg_layer_kind(c, L);
    const int ratio = cfg_layer_ratio(c, L);
    if (kind != LAYER_SLIDING)
        add_compressor(b, N("attn.compressor"), ratio, d, kind == LAYER_CSA ? 2 * d : d, D);
    if (kind == LAYER_CSA) {
        const int64_t h = c->index_n_heads, ic = c->index_head_dim;
        add_quantized(b, N("attn.indexer.wq_b"), h * ic, c->q_lora_rank, false);
        add_bf16_linear(b, N("attn.indexer.weights_proj.weight"), h, D);
        add_compressor(b, N("attn.indexer.compressor"), ratio, ic, 2 * ic, D);
    }

    add_bf16_linear(b, N("ffn.gate.weight"), c->n_experts, D);
    if (cfg_layer_hashed(c, L)) {
        mk_tensor *t = add(b, N("ffn.gate.tid2eid"), DT_I32, 2, c->vocab_size, c->n_active, MK_TID2EID);
        if (t)
            t->n_experts = c->n_experts;
    } else {
        add_normal(b, N("ffn.gate.bias"), DT_F32, 1, c->n_experts, 0, 0.0, MK_INIT.gate_bias_std);
    }
    add_quantized(b, N("ffn.shared_experts.w1"), I, D, false);
    add_quantized(b, N("ffn.shared_experts.w3"), I, D, false);
    add_quantized(b, N("ffn.shared_experts.w2"), D, I, false);
    for (int64_t j = 0; j < c->n_experts && !b->failed; j++) {
        add_quantized(b, N("ffn.experts.%lld.w1", (long long)j), I, D, true);
        add_quantized(b, N("ffn.experts.%lld.w3", (long long)j), I, D, true);
        add_quantized(b, N("ffn.experts.%lld.w2", (long long)j), D, I, true);
    }
#undef N
}

int mk_plan_build(const v4_config *c, uint64_t seed, mk_plan *p, v4_err *err)
{
    memset(p, 0, sizeof *p);
    p->cfg = *c;
    if (c->n_active > 64)
        return v4_errf(err, "num_experts_per_tok %lld: the generator draws at most 64 ids per token",
                       (long long)c->n_active);
    builder b = {.p = p, .seed = seed, .err = err};
    const int64_t D = c->dim, n = c->hc_mult, V = c->vocab_size;
    add_normal(&b, "embed.weight", DT_BF16, 2, V, D, 0.0, MK_INIT.embed_std);
    for (int L = 0; L < c->n_layers && !b.failed; L++)
        add_layer(&b, c, L);
    add_normal(&b, "norm.weight", DT_BF16, 1, D, 0, MK_INIT.norm_mean, MK_INIT.norm_std);
    add_bf16_linear(&b, "head.weight", V, D);
    add_normal(&b, "hc_head_fn", DT_F32, 2, n, n * D, 0.0, MK_INIT.hc_fn_gain / sqrt((double)(n * D)));
    add_normal(&b, "hc_head_base", DT_F32, 1, n, 0, 0.0, MK_INIT.hc_base_std);
    add_normal(&b, "hc_head_scale", DT_F32, 1, 1, 0, MK_INIT.hc_scale_mean, MK_INIT.hc_scale_std);
    if (b.failed) {
        mk_plan_free(p);
        return -1;
    }
    return 0;
}

void mk_plan_free(mk_plan *p)
{
    free(p->t);
    free(p->luts);
    memset(p, 0, sizeof *p);
}
