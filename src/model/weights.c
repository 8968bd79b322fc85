/* Binding of checkpoint tensors to the model's weight slots by official
 * name, with shape and dtype checks, and the one-time FP8 dialect
 * conversion. */
#include "model/weights.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct binder {
    const st_archive *a;
    const v4_config *c;
    bool *used; /* per archive tensor */
    v4_err *err;
    int failed;
} binder;

static const st_tensor *take(binder *b, const char *name, bool required)
{
    if (b->failed)
        return NULL;
    const st_tensor *t = st_find(b->a, name);
    if (!t) {
        if (required) {
            v4_errf(b->err, "missing tensor '%s'", name);
            b->failed = 1;
        }
        return NULL;
    }
    b->used[t - st_at(b->a, 0)] = true;
    return t;
}

static int bad(binder *b, const st_tensor *t, const char *fmt, ...)
{
    if (b->failed)
        return -1; /* keep the first problem's message */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    b->failed = 1;
    return v4_errf(b->err, "%s: tensor '%s': %s", t->file, t->name, msg);
}

static void shape_str(const st_tensor *t, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

static bool shape_is(const st_tensor *t, int ndim, int64_t d0, int64_t d1)
{
    if (t->ndim != ndim)
        return false;
    if (ndim >= 1 && t->shape[0] != d0)
        return false;
    return ndim < 2 || t->shape[1] == d1;
}

static void want_shape(binder *b, const st_tensor *t, int ndim, int64_t d0, int64_t d1)
{
    if (b->failed || shape_is(t, ndim, d0, d1))
        return;
    char got[128];
    shape_str(t, got, sizeof got);
    if (ndim == 1)
        bad(b, t, "shape %s, expected [%lld]", got, (long long)d0);
    else
        bad(b, t, "shape %s, expected [%lld, %lld]", got, (long long)d0, (long long)d1);
}

/* A plain float vector or matrix (norm weights, biases, mHC parameters). */
static void bind_plain(binder *b, v4_mat *m, const char *name, int ndim, int64_t d0, int64_t d1)
{
    const st_tensor *t = take(b, name, true);
    if (!t)
        return;
    if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16) {
        bad(b, t, "dtype %s, expected a float type (F32, BF16 or F16)", dt_name(t->dtype));
        return;
    }
    want_shape(b, t, ndim, d0, d1);
    *m = (v4_mat){.fmt = WF_PLAIN, .dtype = t->dtype, .rows = ndim == 2 ? d0 : 1,
                  .cols = ndim == 2 ? d1 : d0, .data = t->data, .name = t->name, .src = t};
}

/* A linear weight [out, in] named PREFIX.weight with an optional
 * PREFIX.scale; the format follows the stored dtype. */
static void bind_linear(binder *b, v4_mat *m, const char *prefix, int64_t out, int64_t in)
{
    char wn[256], sn[256];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(sn, sizeof sn, "%s.scale", prefix);
    const st_tensor *w = take(b, wn, true);
    if (!w)
        return;
    const st_tensor *s = take(b, sn, false);
    *m = (v4_mat){.rows = out, .cols = in, .data = w->data, .name = w->name, .dtype = w->dtype, .src = w, .src_scale = s};
    if (w->dtype == DT_F32 || w->dtype == DT_BF16 || w->dtype == DT_F16) {
        if (s) {
            bad(b, s, "a %s weight takes no scale tensor", dt_name(w->dtype));
            return;
        }
        m->fmt = WF_PLAIN;
        want_shape(b, w, 2, out, in);
    } else if (dt_is_fp8(w->dtype)) {
        if (w->dtype != DT_F8_E4M3 && w->dtype != DT_F8_E4M3FNUZ) {
            bad(b, w, "dtype %s; FP8 weights must be e4m3 (OCP or fnuz)", dt_name(w->dtype));
            return;
        }
        m->fmt = WF_FP8;
        want_shape(b, w, 2, out, in);
        if (!s) {
            bad(b, w, "FP8 weight without its scale tensor '%s'", sn);
            return;
        }
        if (s->dtype != DT_F8_E8M0) {
            bad(b, s, "dtype %s, expected F8_E8M0", dt_name(s->dtype));
            return;
        }
        want_shape(b, s, 2, (out + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK, (in + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK);
        m->scale = s->data;
    } else if (w->dtype == DT_I8 || w->dtype == DT_U8) {
        /* MXFP4: two e2m1 codes per byte, one UE8M0 scale per 32 inputs */
        m->fmt = WF_MXFP4;
        m->dtype = DT_MXFP4;
        if (in % V4_MXFP4_GROUP) {
            bad(b, w, "MXFP4 input dimension %lld is not a multiple of %d", (long long)in, V4_MXFP4_GROUP);
            return;
        }
        want_shape(b, w, 2, out, in / 2);
        if (!s) {
            bad(b, w, "MXFP4 weight without its scale tensor '%s'", sn);
            return;
        }
        if (s->dtype != DT_F8_E8M0) {
            bad(b, s, "dtype %s, expected F8_E8M0", dt_name(s->dtype));
            return;
        }
        want_shape(b, s, 2, out, in / V4_MXFP4_GROUP);
        m->scale = s->data;
    } else {
        bad(b, w, "dtype %s cannot hold a linear weight", dt_name(w->dtype));
    }
}

static void bind_compressor(binder *b, v4_compressor_w *cw, const char *prefix, int ratio, int64_t head,
                            bool overlap)
{
    const int64_t D = b->c->dim;
    char n[256];
    cw->ratio = ratio;
    cw->head = head;
    cw->overlap = overlap;
    cw->width = overlap ? 2 * head : head;
    snprintf(n, sizeof n, "%s.wkv", prefix);
    bind_linear(b, &cw->wkv, n, cw->width, D);
    snprintf(n, sizeof n, "%s.wgate", prefix);
    bind_linear(b, &cw->wgate, n, cw->width, D);
    snprintf(n, sizeof n, "%s.ape", prefix);
    bind_plain(b, &cw->ape, n, 2, ratio, cw->width);
    snprintf(n, sizeof n, "%s.norm.weight", prefix);
    bind_plain(b, &cw->norm, n, 1, head, 0);
}

/* The forward pass indexes experts by these ids: an id outside [0, E) would
 * read outside the expert tables, so it is refused here. */
static void check_expert_ids(binder *b, const st_tensor *t, int64_t n_experts)
{
    if (b->failed)
        return;
    for (int64_t i = 0; i < t->nelem; i++) {
        int64_t id;
        if (t->dtype == DT_I32) {
            int32_t v;
            memcpy(&v, t->data + 4 * i, 4);
            id = v;
        } else {
            memcpy(&id, t->data + 8 * i, 8);
        }
        if (id < 0 || id >= n_experts) {
            bad(b, t, "expert id %lld at row %lld is outside [0, %lld)", (long long)id,
                (long long)(i / t->shape[1]), (long long)n_experts);
            return;
        }
    }
}

static void bind_layer(binder *b, int L, v4_layer_w *lw)
{
    const v4_config *c = b->c;
    const int64_t D = c->dim, n = c->hc_mult, H = c->n_heads, d = c->head_dim;
    char p[128], n1[256];
    snprintf(p, sizeof p, "layers.%d", L);
#define NAME(fmt, ...) (snprintf(n1, sizeof n1, "%s." fmt, p, ##__VA_ARGS__), n1)
    lw->kind = cfg_layer_kind(c, L);
    lw->ratio = cfg_layer_ratio(c, L);
    lw->hashed = cfg_layer_hashed(c, L);

    bind_plain(b, &lw->hc_attn_fn, NAME("hc_attn_fn"), 2, (2 + n) * n, n * D);
    bind_plain(b, &lw->hc_attn_base, NAME("hc_attn_base"), 1, (2 + n) * n, 0);
    bind_plain(b, &lw->hc_attn_scale, NAME("hc_attn_scale"), 1, 3, 0);
    bind_plain(b, &lw->hc_ffn_fn, NAME("hc_ffn_fn"), 2, (2 + n) * n, n * D);
    bind_plain(b, &lw->hc_ffn_base, NAME("hc_ffn_base"), 1, (2 + n) * n, 0);
    bind_plain(b, &lw->hc_ffn_scale, NAME("hc_ffn_scale"), 1, 3, 0);
    bind_plain(b, &lw->attn_norm, NAME("attn_norm.weight"), 1, D, 0);
    bind_plain(b, &lw->ffn_norm, NAME("ffn_norm.weight"), 1, D, 0);

    bind_plain(b, &lw->attn_sink, NAME("attn.attn_sink"), 1, H, 0);
    bind_linear(b, &lw->wq_a, NAME("attn.wq_a"), c->q_lora_rank, D);
    bind_plain(b, &lw->q_norm, NAME("attn.q_norm.weight"), 1, c->q_lora_rank, 0);
    bind_linear(b, &lw->wq_b, NAME("attn.wq_b"), H * d, c->q_lora_rank);
    bind_linear(b, &lw->wkv, NAME("attn.wkv"), d, D);
    bind_plain(b, &lw->kv_norm, NAME("attn.kv_norm.weight"), 1, d, 0);
    bind_linear(b, &lw->wo_a, NAME("attn.wo_a"), c->o_groups * c->o_lora_rank, H * d / c->o_groups);
    bind_linear(b, &lw->wo_b, NAME("attn.wo_b"), D, c->o_groups * c->o_lora_rank);

    if (lw->kind != LAYER_SLIDING)
        bind_compressor(b, &lw->comp, NAME("attn.compressor"), lw->ratio, d, lw->kind == LAYER_CSA);
    if (lw->kind == LAYER_CSA) {
        const int64_t h = c->index_n_heads, ic = c->index_head_dim;
        bind_compressor(b, &lw->idx_comp, NAME("attn.indexer.compressor"), lw->ratio, ic, true);
        bind_linear(b, &lw->idx_wq_b, NAME("attn.indexer.wq_b"), h * ic, c->q_lora_rank);
        bind_linear(b, &lw->idx_weights_proj, NAME("attn.indexer.weights_proj"), h, D);
    }

    bind_linear(b, &lw->gate_w, NAME("ffn.gate"), c->n_experts, D);
    if (lw->hashed) {
        const st_tensor *t = take(b, NAME("ffn.gate.tid2eid"), true);
        if (t) {
            if (t->dtype != DT_I32 && t->dtype != DT_I64)
                bad(b, t, "dtype %s, expected I32", dt_name(t->dtype));
            want_shape(b, t, 2, c->vocab_size, c->n_active);
            check_expert_ids(b, t, c->n_experts);
            lw->tid2eid = (v4_mat){.fmt = WF_I32, .dtype = t->dtype, .rows = c->vocab_size, .cols = c->n_active,
                                   .data = t->data, .name = t->name, .src = t};
        }
    } else {
        bind_plain(b, &lw->gate_bias, NAME("ffn.gate.bias"), 1, c->n_experts, 0);
    }
    bind_linear(b, &lw->sh_w1, NAME("ffn.shared_experts.w1"), c->moe_inter, D);
    bind_linear(b, &lw->sh_w3, NAME("ffn.shared_experts.w3"), c->moe_inter, D);
    bind_linear(b, &lw->sh_w2, NAME("ffn.shared_experts.w2"), D, c->moe_inter);

    /* one zeroed entry past the end: weights_visit stops at the first
     * expert without data */
    lw->exp_w1 = calloc((size_t)c->n_experts + 1, sizeof(v4_mat));
    lw->exp_w2 = calloc((size_t)c->n_experts + 1, sizeof(v4_mat));
    lw->exp_w3 = calloc((size_t)c->n_experts + 1, sizeof(v4_mat));
    if (!lw->exp_w1 || !lw->exp_w2 || !lw->exp_w3) {
        v4_errf(b->err, "out of memory for %lld experts of layer %d", (long long)c->n_experts, L);
        b->failed = 1;
        return;
    }
    for (int64_t j = 0; j < c->n_experts && !b->failed; j++) {
        bind_linear(b, &lw->exp_w1[j], NAME("ffn.experts.%lld.w1", (long long)j), c->moe_inter, D);
        bind_linear(b, &lw->exp_w3[j], NAME("ffn.experts.%lld.w3", (long long)j), c->moe_inter, D);
        bind_linear(b, &lw->exp_w2[j], NAME("ffn.experts.%lld.w2", (long long)j), D, c->moe_inter);
    }
#undef NAME
}

int weights_bind(const v4_config *c, const st_archive *a, v4_weights *w, v4_err *err)
{
    memset(w, 0, sizeof *w);
    binder b = {.a = a, .c = c, .used = calloc(st_count(a) + 1, sizeof(bool)), .err = err};
    if (!b.used)
        return v4_errf(err, "out of memory");
    const int64_t D = c->dim, n = c->hc_mult;
    bind_linear(&b, &w->embed, "embed", c->vocab_size, D);
    bind_linear(&b, &w->head, "head", c->vocab_size, D);
    bind_plain(&b, &w->norm, "norm.weight", 1, D, 0);
    bind_plain(&b, &w->hc_head_fn, "hc_head_fn", 2, n, n * D);
    bind_plain(&b, &w->hc_head_base, "hc_head_base", 1, n, 0);
    bind_plain(&b, &w->hc_head_scale, "hc_head_scale", 1, 1, 0);
    w->n_layers = (int)c->n_layers;
    for (int L = 0; L < c->n_layers && !b.failed; L++)
        bind_layer(&b, L, &w->layers[L]);
    if (!b.failed && w->embed.fmt != WF_PLAIN)
        v4_errf(err, "tensor 'embed.weight' must be a float type (looked up by row)"), b.failed = 1;
    if (!b.failed) {
        /* anything left over is unexpected, except the optional MTP layer */
        int extra = 0;
        char list[600] = "";
        for (size_t i = 0; i < st_count(a); i++) {
            const st_tensor *t = st_at(a, i);
            if (b.used[i] || strncmp(t->name, "mtp.", 4) == 0)
                continue;
            if (extra++ < 5) {
                size_t o = strlen(list);
                snprintf(list + o, sizeof list - o, "%s'%s'", o ? ", " : "", t->name);
            }
        }
        if (extra) {
            v4_errf(err, "%d unexpected tensor(s) in the checkpoint: %s%s", extra, list, extra > 5 ? ", ..." : "");
            b.failed = 1;
        }
    }
    free(b.used);
    if (b.failed) {
        weights_free(w);
        return -1;
    }
    return 0;
}

void weights_free(v4_weights *w)
{
    for (int L = 0; L < V4_MAX_LAYERS; L++) {
        free(w->layers[L].exp_w1);
        free(w->layers[L].exp_w2);
        free(w->layers[L].exp_w3);
        w->layers[L].exp_w1 = w->layers[L].exp_w2 = w->layers[L].exp_w3 = NULL;
    }
}

int64_t mat_elems(const v4_mat *m) { return m->rows * m->cols; }

size_t mat_bytes(const v4_mat *m)
{
    return m->fmt == WF_I32 ? (size_t)mat_elems(m) * dt_elem_size(m->dtype) : dt_bytes(m->dtype, mat_elems(m));
}

size_t mat_scale_bytes(const v4_mat *m)
{
    if (m->fmt == WF_FP8)
        return (size_t)(((m->rows + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK) * ((m->cols + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK));
    if (m->fmt == WF_MXFP4)
        return (size_t)(m->rows * (m->cols / V4_MXFP4_GROUP));
    return 0;
}

static int visit(v4_mat *m, weights_visit_fn fn, void *ctx, v4_err *err)
{
    return m->data ? fn(m, ctx, err) : 0;
}

int weights_visit(v4_weights *w, weights_visit_fn fn, void *ctx, v4_err *err)
{
    v4_mat *top[] = {&w->embed, &w->head, &w->norm, &w->hc_head_fn, &w->hc_head_base, &w->hc_head_scale};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (visit(top[i], fn, ctx, err))
            return -1;
    for (int L = 0; L < w->n_layers; L++) {
        v4_layer_w *l = &w->layers[L];
        v4_mat *ms[] = {&l->hc_attn_fn, &l->hc_attn_base, &l->hc_attn_scale, &l->hc_ffn_fn, &l->hc_ffn_base,
                        &l->hc_ffn_scale, &l->attn_norm, &l->ffn_norm, &l->attn_sink, &l->wq_a, &l->q_norm,
                        &l->wq_b, &l->wkv, &l->kv_norm, &l->wo_a, &l->wo_b, &l->comp.wkv, &l->comp.wgate,
                        &l->comp.ape, &l->comp.norm, &l->idx_comp.wkv, &l->idx_comp.wgate, &l->idx_comp.ape,
                        &l->idx_comp.norm, &l->idx_wq_b, &l->idx_weights_proj, &l->gate_w, &l->gate_bias,
                        &l->tid2eid, &l->sh_w1, &l->sh_w2, &l->sh_w3};
        for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
            if (visit(ms[i], fn, ctx, err))
                return -1;
        for (int64_t j = 0; l->exp_w1 && l->exp_w1[j].data; j++) {
            if (visit(&l->exp_w1[j], fn, ctx, err) || visit(&l->exp_w2[j], fn, ctx, err) ||
                visit(&l->exp_w3[j], fn, ctx, err))
                return -1;
        }
    }
    return 0;
}

/* ---- FP8 dialect conversion ---- */

typedef struct convert_ctx {
    const st_archive *a;
    dtype_t target;
} convert_ctx;

static int convert_one(v4_mat *m, void *vctx, v4_err *err)
{
    convert_ctx *cx = vctx;
    if (m->fmt != WF_FP8 || m->dtype == cx->target)
        return 0;
    const st_tensor *wt = m->src, *st = m->src_scale;
    if (!wt || !st)
        return v4_errf(err, "tensor '%s': not backed by the archive; cannot convert", m->name);
    if (st_make_writable(cx->a, wt, err) || st_make_writable(cx->a, st, err))
        return -1;
    uint8_t *w = (uint8_t *)m->data, *s = (uint8_t *)m->scale;
    const size_t n = mat_bytes(m), ns = mat_scale_bytes(m);
    const bool to_fnuz = cx->target == DT_F8_E4M3FNUZ;
    /* validate first so that a failure leaves the weight untouched */
    for (size_t i = 0; i < n; i++) {
        /* OCP NaN is 0x7F/0xFF; fnuz NaN is 0x80, and fnuz 0x7F/0xFF (+-240)
         * would read as NaN in OCP */
        if ((w[i] & 0x7F) == 0x7F || (!to_fnuz && w[i] == 0x80))
            return v4_errf(err, "%s: tensor '%s': code 0x%02X (%s in %s) at element %zu has no equal in %s",
                           wt->file, m->name, w[i], w[i] == 0x80 || to_fnuz ? "NaN" : "+-240", dt_name(m->dtype),
                           i, dt_name(cx->target));
    }
    for (size_t i = 0; i < ns; i++) {
        if (s[i] == 0xFF || (to_fnuz && s[i] == 0xFE) || (!to_fnuz && s[i] == 0))
            return v4_errf(err, "%s: scale of '%s': exponent 0x%02X cannot move by one binade", st->file, m->name,
                           s[i]);
    }
    /* same bits mean half the value in fnuz: double the scale */
    for (size_t i = 0; i < n; i++)
        if (to_fnuz && w[i] == 0x80)
            w[i] = 0x00; /* OCP -0 -> fnuz 0 (0x80 is NaN in fnuz) */
    for (size_t i = 0; i < ns; i++)
        s[i] = (uint8_t)(to_fnuz ? s[i] + 1 : s[i] - 1);
    m->dtype = cx->target;
    return 0;
}

int weights_convert_fp8(v4_weights *w, const st_archive *a, dtype_t target, v4_err *err)
{
    if (target != DT_F8_E4M3 && target != DT_F8_E4M3FNUZ)
        return v4_errf(err, "FP8 weights convert only to F8_E4M3 or F8_E4M3FNUZ, not %s", dt_name(target));
    convert_ctx cx = {a, target};
    return weights_visit(w, convert_one, &cx, err);
}

/* ---- row decoding ---- */

static float LUT[DT_COUNT][256];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void init_luts(void)
{
    for (int b = 0; b < 256; b++) {
        LUT[DT_F8_E4M3][b] = dt_e4m3_to_f32((uint8_t)b);
        LUT[DT_F8_E5M2][b] = dt_e5m2_to_f32((uint8_t)b);
        LUT[DT_F8_E4M3FNUZ][b] = dt_e4m3fnuz_to_f32((uint8_t)b);
        LUT[DT_F8_E5M2FNUZ][b] = dt_e5m2fnuz_to_f32((uint8_t)b);
        LUT[DT_F8_E8M0][b] = dt_e8m0_to_f32((uint8_t)b);
    }
}

const float *dt_fp8_table(dtype_t t)
{
    pthread_once(&lut_once, init_luts);
    return (dt_is_fp8(t) || t == DT_F8_E8M0) ? LUT[t] : NULL;
}

void mat_row_f32(const v4_mat *m, int64_t row, int64_t col0, int64_t n, float *out)
{
    const uint8_t *base = m->data;
    if (m->fmt == WF_PLAIN) {
        dt_to_f32(m->dtype, base + dt_bytes(m->dtype, row * m->cols + col0), out, n);
        return;
    }
    if (m->fmt == WF_FP8) {
        const float *lut = dt_fp8_table(m->dtype), *e8 = dt_fp8_table(DT_F8_E8M0);
        const uint8_t *w = base + row * m->cols;
        const int64_t sc = (m->cols + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK;
        const uint8_t *srow = m->scale + (row / V4_FP8_BLOCK) * sc;
        for (int64_t i = 0; i < n;) {
            int64_t col = col0 + i, blk = col / V4_FP8_BLOCK;
            int64_t end = (blk + 1) * V4_FP8_BLOCK - col0;
            if (end > n)
                end = n;
            float s = e8[srow[blk]];
            for (; i < end; i++)
                out[i] = lut[w[col0 + i]] * s;
        }
        return;
    }
    if (m->fmt == WF_MXFP4) {
        static const float E2M1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
        const float *e8 = dt_fp8_table(DT_F8_E8M0);
        const uint8_t *w = base + row * (m->cols / 2);
        const uint8_t *srow = m->scale + row * (m->cols / V4_MXFP4_GROUP);
        for (int64_t i = 0; i < n; i += 2) {
            int64_t col = col0 + i;
            float s = e8[srow[col / V4_MXFP4_GROUP]];
            uint8_t b = w[col / 2];
            out[i] = E2M1[b & 15] * s;
            if (i + 1 < n)
                out[i + 1] = E2M1[b >> 4] * s;
        }
    }
}

int mat_expect_fp8(const v4_mat *m, dtype_t expected, v4_err *err)
{
    if (m->fmt != WF_FP8)
        return v4_errf(err, "tensor '%s': %s, not an FP8 block-scaled weight (expected %s)", m->name,
                       dt_name(m->dtype), dt_name(expected));
    if (m->dtype != expected)
        return v4_errf(err, "tensor '%s' holds %s codes but is read as %s: the dialects differ by 2x, "
                       "convert it with weights_convert_fp8 first", m->name, dt_name(m->dtype), dt_name(expected));
    return 0;
}
