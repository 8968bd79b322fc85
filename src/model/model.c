/* Model loading: checkpoint -> binding -> dialect conversion -> backend. */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rope_inv_freq(double theta, int rope_dim, double *out)
{
    for (int i = 0; i < rope_dim / 2; i++)
        out[i] = pow(theta, -2.0 * i / rope_dim);
}

static double yarn_corr(double b, int r, double L0, double theta)
{
    return r * log(L0 / (b * 2.0 * M_PI)) / (2.0 * log(theta));
}

void rope_yarn_inv_freq(double theta, int r, double s, double L0, double beta_fast, double beta_slow, double *out)
{
    double low = floor(yarn_corr(beta_fast, r, L0, theta));
    double high = ceil(yarn_corr(beta_slow, r, L0, theta));
    if (low < 0)
        low = 0;
    if (high > r - 1)
        high = r - 1;
    if (high == low)
        high += 0.001;
    for (int i = 0; i < r / 2; i++) {
        double f = pow(theta, -2.0 * i / r);
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double keep = 1.0 - ramp;
        out[i] = (f / s) * (1.0 - keep) + f * keep;
    }
}

/* Backend allocations the model owns (vectors), freed at close. */
static int own(v4_model *m, void *p, v4_err *err)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 256;
        void **n = realloc(m->owned, cap * sizeof *n);
        if (!n)
            return v4_errf(err, "out of memory");
        m->owned = n;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* A per-channel vector or small table the ops read as fp32. */
static int up_vec(v4_model *m, v4_mat *dst, const v4_mat *src, v4_err *err)
{
    if (!src->data)
        return 0;
    v4_backend *be = m->be;
    int64_t n = mat_elems(src);
    float *tmp = malloc((size_t)n * sizeof(float));
    if (!tmp)
        return v4_errf(err, "out of memory converting '%s'", src->name);
    if (src->fmt != WF_PLAIN || dt_to_f32(src->dtype, src->data, tmp, n) != 0) {
        free(tmp);
        return v4_errf(err, "tensor '%s': dtype %s is not a float type", src->name, dt_name(src->dtype));
    }
    void *d = be->ops->alloc(be, (size_t)n * sizeof(float), err);
    int rc = d ? own(m, d, err) : -1;
    if (rc == 0)
        rc = be->ops->upload(be, d, tmp, (size_t)n * sizeof(float), err);
    free(tmp);
    if (rc)
        return v4_err_wrap(err, "uploading '%s'", src->name);
    *dst = *src;
    dst->dtype = DT_F32;
    dst->data = d;
    return 0;
}

/* A matrix the linear/embed/routing ops read in its stored format. */
static int up_mat(v4_model *m, v4_mat *dst, const v4_mat *src, v4_err *err)
{
    if (!src->data)
        return 0;
    if (m->be->ops->upload_mat(m->be, dst, src, err))
        return v4_err_wrap(err, "uploading '%s'", src->name);
    return 0;
}

static int up_comp(v4_model *m, v4_compressor_w *d, const v4_compressor_w *s, v4_err *err)
{
    *d = *s;
    return up_mat(m, &d->wkv, &s->wkv, err) || up_mat(m, &d->wgate, &s->wgate, err) ||
           up_vec(m, &d->ape, &s->ape, err) || up_vec(m, &d->norm, &s->norm, err);
}

static int up_layer(v4_model *m, v4_layer_w *d, const v4_layer_w *s, v4_err *err)
{
    int64_t E = m->cfg.n_experts;
    v4_mat *e1 = d->exp_w1, *e2 = d->exp_w2, *e3 = d->exp_w3;
    *d = *s;
    d->exp_w1 = e1, d->exp_w2 = e2, d->exp_w3 = e3;
    if (up_vec(m, &d->hc_attn_fn, &s->hc_attn_fn, err) || up_vec(m, &d->hc_attn_base, &s->hc_attn_base, err) ||
        up_vec(m, &d->hc_attn_scale, &s->hc_attn_scale, err) || up_vec(m, &d->hc_ffn_fn, &s->hc_ffn_fn, err) ||
        up_vec(m, &d->hc_ffn_base, &s->hc_ffn_base, err) || up_vec(m, &d->hc_ffn_scale, &s->hc_ffn_scale, err) ||
        up_vec(m, &d->attn_norm, &s->attn_norm, err) || up_vec(m, &d->ffn_norm, &s->ffn_norm, err) ||
        up_vec(m, &d->attn_sink, &s->attn_sink, err) || up_vec(m, &d->q_norm, &s->q_norm, err) ||
        up_vec(m, &d->kv_norm, &s->kv_norm, err) || up_vec(m, &d->gate_bias, &s->gate_bias, err) ||
        up_mat(m, &d->wq_a, &s->wq_a, err) || up_mat(m, &d->wq_b, &s->wq_b, err) ||
        up_mat(m, &d->wkv, &s->wkv, err) || up_mat(m, &d->wo_a, &s->wo_a, err) ||
        up_mat(m, &d->wo_b, &s->wo_b, err) || up_mat(m, &d->idx_wq_b, &s->idx_wq_b, err) ||
        up_mat(m, &d->idx_weights_proj, &s->idx_weights_proj, err) || up_mat(m, &d->gate_w, &s->gate_w, err) ||
        up_mat(m, &d->tid2eid, &s->tid2eid, err) || up_mat(m, &d->sh_w1, &s->sh_w1, err) ||
        up_mat(m, &d->sh_w2, &s->sh_w2, err) || up_mat(m, &d->sh_w3, &s->sh_w3, err))
        return -1;
    if (s->kind != LAYER_SLIDING && up_comp(m, &d->comp, &s->comp, err))
        return -1;
    if (s->kind == LAYER_CSA && up_comp(m, &d->idx_comp, &s->idx_comp, err))
        return -1;
    for (int64_t j = 0; j < E; j++)
        if (up_mat(m, &d->exp_w1[j], &s->exp_w1[j], err) || up_mat(m, &d->exp_w2[j], &s->exp_w2[j], err) ||
            up_mat(m, &d->exp_w3[j], &s->exp_w3[j], err))
            return -1;
    return 0;
}

static int upload_weights(v4_model *m, v4_err *err)
{
    v4_weights *d = &m->dev;
    const v4_weights *s = &m->host;
    d->n_layers = s->n_layers;
    if (up_mat(m, &d->embed, &s->embed, err) || up_mat(m, &d->head, &s->head, err) ||
        up_vec(m, &d->norm, &s->norm, err) || up_vec(m, &d->hc_head_fn, &s->hc_head_fn, err) ||
        up_vec(m, &d->hc_head_base, &s->hc_head_base, err) || up_vec(m, &d->hc_head_scale, &s->hc_head_scale, err))
        return -1;
    for (int L = 0; L < s->n_layers; L++) {
        /* one more, zeroed: weights_visit stops at the first expert without data */
        size_t nb = (size_t)(m->cfg.n_experts + 1) * sizeof(v4_mat);
        v4_layer_w *dl = &d->layers[L];
        dl->exp_w1 = calloc(1, nb);
        dl->exp_w2 = calloc(1, nb);
        dl->exp_w3 = calloc(1, nb);
        if (!dl->exp_w1 || !dl->exp_w2 || !dl->exp_w3)
            return v4_errf(err, "out of memory");
        if (up_layer(m, dl, &s->layers[L], err))
            return -1;
    }
    return 0;
}

static int upload_rope(v4_model *m, v4_err *err)
{
    const v4_config *c = &m->cfg;
    int half = (int)c->rope_dim / 2;
    double fm[512], fc[512];
    float tm[512], tc[512];
    if (half > 512)
        return v4_errf(err, "qk_rope_head_dim %lld too large", (long long)c->rope_dim);
    rope_inv_freq(c->rope_theta, (int)c->rope_dim, fm);
    if (c->yarn.enabled)
        rope_yarn_inv_freq(c->compress_rope_theta, (int)c->rope_dim, c->yarn.factor, (double)c->yarn.original_max_pos,
                           c->yarn.beta_fast, c->yarn.beta_slow, fc);
    else
        rope_inv_freq(c->compress_rope_theta, (int)c->rope_dim, fc);
    for (int i = 0; i < half; i++) {
        tm[i] = (float)fm[i];
        tc[i] = (float)fc[i];
    }
    size_t bytes = (size_t)(half ? half : 1) * sizeof(float);
    m->rope_main = m->be->ops->alloc(m->be, bytes, err);
    m->rope_comp = m->be->ops->alloc(m->be, bytes, err);
    if (!m->rope_main || !m->rope_comp)
        return -1;
    if (m->be->ops->upload(m->be, m->rope_main, tm, (size_t)half * sizeof(float), err) ||
        m->be->ops->upload(m->be, m->rope_comp, tc, (size_t)half * sizeof(float), err))
        return -1;
    return 0;
}

int model_open(const char *dir, v4_backend *be, v4_model **out, v4_err *err)
{
    *out = NULL;
    v4_model *m = calloc(1, sizeof *m);
    if (!m)
        return v4_errf(err, "out of memory");
    m->be = be;
    if (cfg_load(dir, &m->cfg, err) || st_open(dir, &m->archive, err) ||
        weights_bind(&m->cfg, m->archive, &m->host, err) ||
        weights_convert_fp8(&m->host, m->archive, be->fp8_dialect, err) || upload_weights(m, err) ||
        upload_rope(m, err)) {
        model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

static int free_mat(v4_mat *mat, void *vctx, v4_err *err)
{
    v4_backend *be = vctx;
    (void)err;
    if (mat->backend_owned)
        be->ops->free_mat(be, mat);
    return 0;
}

void model_close(v4_model *m)
{
    if (!m)
        return;
    /* matrices: the backend's own copies; vectors: allocations listed in owned */
    for (size_t i = 0; i < m->n_owned; i++)
        m->be->ops->free(m->be, m->owned[i]);
    free(m->owned);
    if (m->dev.n_layers)
        weights_visit(&m->dev, free_mat, m->be, NULL);
    m->be->ops->free(m->be, m->rope_main);
    m->be->ops->free(m->be, m->rope_comp);
    weights_free(&m->dev);
    weights_free(&m->host);
    st_close(m->archive);
    free(m);
}
