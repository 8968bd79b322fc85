/* Roofline accounting; see roofline.h. Weight bytes follow the checkpoint
 * formats of MODEL.md section 2: FP8 = 1 byte + a UE8M0 scale per 128x128,
 * MXFP4 = half a byte + a scale per 32, BF16 = 2, F32 = 4. */
#include "tools/roofline.h"

#include <math.h>

static double fp8(double out, double in) { return out * in + ceil(out / 128) * ceil(in / 128); }
static double fp4(double out, double in) { return out * in / 2 + out * in / 32; }
static double bf16(double out, double in) { return 2 * out * in; }

double roof_expected_experts(int64_t E, int64_t k, int64_t tokens)
{
    return (double)E * (1.0 - pow(1.0 - (double)k / (double)E, (double)tokens));
}

/* Per token and layer: FLOPs of the projections (dense, shared expert, its
 * routed experts) and the mHC mixing, added into fam[] by family. */
static void layer_flops_per_token(const v4_config *c, int l, double fam[FAM_COUNT])
{
    const double D = c->dim, H = c->n_heads, d = c->head_dim, q = c->q_lora_rank, G = c->o_groups,
                 R = c->o_lora_rank, I = c->moe_inter, E = c->n_experts, k = c->n_active;
    double dense = D * q + q * H * d + D * d + (H * d / G) * G * R + G * R * D; /* wq_a wq_b wkv wo_a wo_b */
    dense += E * D + 3 * D * I;                                                 /* gate, shared expert */
    layer_kind_t kind = cfg_layer_kind(c, l);
    if (kind == LAYER_CSA)
        dense += 2 * 2 * d * D + 2 * 2 * c->index_head_dim * D + q * c->index_n_heads * c->index_head_dim +
                 D * c->index_n_heads;
    else if (kind == LAYER_HCA)
        dense += 2 * d * D;
    fam[FAM_DENSE] += 2 * dense;
    fam[FAM_MOE] += 2 * 3 * D * I * k;
    fam[FAM_OTHER] += 2 * (2 + c->hc_mult) * c->hc_mult * c->hc_mult * D * 2; /* mHC mixing, both sites */
}

static void layer_weights(const v4_config *c, int l, double experts, roof_bytes *b)
{
    const double D = c->dim, H = c->n_heads, d = c->head_dim, q = c->q_lora_rank, G = c->o_groups,
                 R = c->o_lora_rank, I = c->moe_inter, E = c->n_experts, n = c->hc_mult;
    b->attn_weights += fp8(q, D) + fp8(H * d, q) + fp8(d, D) + fp8(G * R, H * d / G) + fp8(D, G * R);
    layer_kind_t kind = cfg_layer_kind(c, l);
    if (kind == LAYER_CSA) {
        const double ic = c->index_head_dim, ih = c->index_n_heads;
        b->attn_weights += 2 * bf16(2 * d, D) + 2 * bf16(2 * ic, D) + fp8(ih * ic, q) + bf16(ih, D);
    } else if (kind == LAYER_HCA) {
        b->attn_weights += 2 * bf16(d, D);
    }
    b->moe_weights += bf16(E, D) + 3 * fp8(I, D) + experts * (2 * fp4(I, D) + fp4(D, I));
    b->other_weights += 2 * 4 * (2 + n) * n * n * D + 2 * 2 * D;
}

/* KV bytes one token at position `pos` reads in layer l (window + entries). */
static double layer_kv_read(const v4_config *c, int l, double pos, int kvb)
{
    const double d = c->head_dim, W = c->window;
    double win = pos + 1 < W ? pos + 1 : W;
    double r = win * d * kvb;
    layer_kind_t kind = cfg_layer_kind(c, l);
    double m = cfg_layer_ratio(c, l);
    if (kind == LAYER_CSA) {
        double entries = floor((pos + 1) / m);
        double sel = entries < c->index_topk ? entries : c->index_topk;
        r += entries * c->index_head_dim * kvb + sel * d * kvb;
    } else if (kind == LAYER_HCA) {
        r += floor((pos + 1) / m) * d * kvb;
    }
    return r;
}

static double layer_kv_write(const v4_config *c, int l, double tokens, int kvb)
{
    const double d = c->head_dim;
    double w = tokens * d * kvb; /* window ring */
    layer_kind_t kind = cfg_layer_kind(c, l);
    double m = cfg_layer_ratio(c, l);
    if (kind == LAYER_CSA)
        w += tokens / m * (d + c->index_head_dim) * kvb;
    else if (kind == LAYER_HCA)
        w += tokens / m * d * kvb;
    return w;
}

/* FLOPs of attention (and the indexer's scores) for one token at `pos`. */
static void attn_flops_per_token(const v4_config *c, int l, double pos, double fam[FAM_COUNT])
{
    const double H = c->n_heads, d = c->head_dim;
    double keys = pos + 1 < c->window ? pos + 1 : c->window;
    layer_kind_t kind = cfg_layer_kind(c, l);
    double m = cfg_layer_ratio(c, l);
    if (kind == LAYER_CSA) {
        double entries = floor((pos + 1) / m);
        keys += entries < c->index_topk ? entries : c->index_topk;
        fam[FAM_INDEXER] += 2 * entries * c->index_n_heads * c->index_head_dim;
    } else if (kind == LAYER_HCA) {
        keys += floor((pos + 1) / m);
    }
    fam[FAM_ATTENTION] += 2 * 2 * H * d * keys; /* scores and weighted values */
}

static void finish(const v4_config *c, double rows, roof_bytes *b)
{
    const double D = c->dim, V = c->vocab_size, n = c->hc_mult;
    b->other_weights += rows * D * 2 + bf16(V, D) + 4 * n * n * D + 2 * D; /* embedding rows, head */
    b->fam_flops[FAM_HEAD] += 2 * rows * V * D;
    b->total = b->attn_weights + b->moe_weights + b->other_weights + b->kv_read + b->kv_write;
    b->flops = 0;
    for (int i = 0; i < FAM_COUNT; i++)
        b->flops += b->fam_flops[i];
}

roof_bytes roof_decode_step(const v4_config *c, int64_t batch, int64_t ctx, double experts, int kvb)
{
    roof_bytes b = {0};
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights(c, l, experts, &b);
        b.kv_read += batch * layer_kv_read(c, l, (double)ctx, kvb);
        b.kv_write += layer_kv_write(c, l, (double)batch, kvb);
        double per_token[FAM_COUNT] = {0};
        layer_flops_per_token(c, l, per_token);
        attn_flops_per_token(c, l, (double)ctx, per_token);
        for (int i = 0; i < FAM_COUNT; i++)
            b.fam_flops[i] += batch * per_token[i];
    }
    finish(c, (double)batch, &b);
    return b;
}

roof_bytes roof_prefill_chunk(const v4_config *c, int64_t tokens, int64_t start, double experts, int kvb)
{
    roof_bytes b = {0};
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights(c, l, experts, &b);
        /* the chunk reads the state before it once and writes its own */
        b.kv_read += layer_kv_read(c, l, (double)start, kvb);
        b.kv_write += layer_kv_write(c, l, (double)tokens, kvb);
        double per_token[FAM_COUNT] = {0}, attn64[FAM_COUNT] = {0};
        layer_flops_per_token(c, l, per_token);
        for (int64_t t = 0; t < tokens; t += 64) /* attention, sampled every 64 positions */
            attn_flops_per_token(c, l, (double)(start + t), attn64);
        for (int i = 0; i < FAM_COUNT; i++)
            b.fam_flops[i] += tokens * per_token[i] + 64 * attn64[i];
    }
    finish(c, 1, &b); /* logits for the last row only */
    return b;
}
