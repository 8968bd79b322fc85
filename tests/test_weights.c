/* Weight binding by official name (src/model/weights.c): both golden
 * models bind with the right formats and shapes; a missing tensor, an
 * unexpected one, a wrong shape, a wrong dtype or an out-of-range expert id
 * fails with a message naming the tensor; mtp.* tensors are ignored;
 * re-quantized or dequantized linears bind by their stored dtype. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "testutil.h"
#include "tu_ckpt.h"

typedef struct bound {
    v4_config c;
    st_archive *a;
    v4_weights w;
} bound;

static int bind_dir(const char *dir, bound *b, v4_err *err)
{
    b->a = NULL;
    if (cfg_load(dir, &b->c, err) || st_open(dir, &b->a, err))
        return -1;
    return weights_bind(&b->c, b->a, &b->w, err);
}

static void unbind(bound *b)
{
    weights_free(&b->w);
    st_close(b->a);
}

static void expect_mat(const v4_mat *m, wfmt_t fmt, dtype_t dt, int64_t rows, int64_t cols, const char *name)
{
    if (!m->name || strcmp(m->name, name) != 0)
        fail_msg("slot holds '%s', expected '%s'", m->name ? m->name : "(null)", name);
    assert_int_equal(m->fmt, fmt);
    assert_int_equal(m->dtype, dt);
    assert_int_equal(m->rows, rows);
    assert_int_equal(m->cols, cols);
    assert_non_null(m->data);
    if (fmt == WF_FP8 || fmt == WF_MXFP4)
        assert_non_null(m->scale);
    else
        assert_null(m->scale);
}

typedef struct tally {
    int mats;
    size_t bytes;
} tally;

static int count_mat(v4_mat *m, void *ctx, v4_err *err)
{
    (void)err;
    tally *t = ctx;
    t->mats++;
    t->bytes += mat_bytes(m) + mat_scale_bytes(m);
    assert_int_equal(mat_bytes(m), m->src->nbytes);
    if (m->src_scale)
        assert_int_equal(mat_scale_bytes(m), m->src_scale->nbytes);
    return 0;
}

/* Every archive tensor is bound exactly once: visited matrices cover all the
 * bytes, and their count is the tensors less the scale tensors. */
static void check_covers_archive(bound *b)
{
    tally t = {0};
    v4_err err;
    assert_int_equal(weights_visit(&b->w, count_mat, &t, &err), 0);
    size_t total = 0;
    int scales = 0;
    for (size_t i = 0; i < st_count(b->a); i++) {
        total += st_at(b->a, i)->nbytes;
        scales += strstr(st_at(b->a, i)->name, ".scale") != NULL;
    }
    assert_int_equal(t.bytes, total);
    assert_int_equal(t.mats, (int)st_count(b->a) - scales);
}

static void test_golden_tiny_binds(void **state)
{
    (void)state;
    bound b;
    v4_err err;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_golden("tiny"));
    if (bind_dir(dir, &b, &err))
        fail_msg("%s", err.msg);
    v4_weights *w = &b.w;
    assert_int_equal(w->n_layers, 5);
    expect_mat(&w->embed, WF_PLAIN, DT_BF16, 1024, 256, "embed.weight");
    expect_mat(&w->head, WF_PLAIN, DT_BF16, 1024, 256, "head.weight");
    expect_mat(&w->norm, WF_PLAIN, DT_BF16, 1, 256, "norm.weight");
    expect_mat(&w->hc_head_fn, WF_PLAIN, DT_F32, 4, 1024, "hc_head_fn");
    expect_mat(&w->hc_head_base, WF_PLAIN, DT_F32, 1, 4, "hc_head_base");
    expect_mat(&w->hc_head_scale, WF_PLAIN, DT_F32, 1, 1, "hc_head_scale");
    const layer_kind_t kinds[5] = {LAYER_SLIDING, LAYER_CSA, LAYER_HCA, LAYER_CSA, LAYER_SLIDING};
    const int ratios[5] = {0, 4, 16, 4, 0};
    for (int L = 0; L < 5; L++) {
        v4_layer_w *l = &w->layers[L];
        char n[128];
#define N(fmt) (snprintf(n, sizeof n, "layers.%d." fmt, L), n)
        assert_int_equal(l->kind, kinds[L]);
        assert_int_equal(l->ratio, ratios[L]);
        assert_int_equal(l->hashed, L < 2);
        expect_mat(&l->hc_attn_fn, WF_PLAIN, DT_F32, 24, 1024, N("hc_attn_fn"));
        expect_mat(&l->hc_ffn_base, WF_PLAIN, DT_F32, 1, 24, N("hc_ffn_base"));
        expect_mat(&l->hc_attn_scale, WF_PLAIN, DT_F32, 1, 3, N("hc_attn_scale"));
        expect_mat(&l->attn_norm, WF_PLAIN, DT_BF16, 1, 256, N("attn_norm.weight"));
        expect_mat(&l->attn_sink, WF_PLAIN, DT_F32, 1, 4, N("attn.attn_sink"));
        expect_mat(&l->wq_a, WF_FP8, DT_F8_E4M3, 128, 256, N("attn.wq_a.weight"));
        expect_mat(&l->q_norm, WF_PLAIN, DT_BF16, 1, 128, N("attn.q_norm.weight"));
        expect_mat(&l->wq_b, WF_FP8, DT_F8_E4M3, 512, 128, N("attn.wq_b.weight"));
        expect_mat(&l->wkv, WF_FP8, DT_F8_E4M3, 128, 256, N("attn.wkv.weight"));
        expect_mat(&l->kv_norm, WF_PLAIN, DT_BF16, 1, 128, N("attn.kv_norm.weight"));
        expect_mat(&l->wo_a, WF_FP8, DT_F8_E4M3, 256, 256, N("attn.wo_a.weight"));
        expect_mat(&l->wo_b, WF_FP8, DT_F8_E4M3, 256, 256, N("attn.wo_b.weight"));
        if (kinds[L] != LAYER_SLIDING) {
            int64_t width = kinds[L] == LAYER_CSA ? 256 : 128;
            assert_int_equal(l->comp.ratio, ratios[L]);
            assert_int_equal(l->comp.head, 128);
            assert_int_equal(l->comp.width, width);
            assert_int_equal(l->comp.overlap, kinds[L] == LAYER_CSA);
            expect_mat(&l->comp.wkv, WF_PLAIN, DT_BF16, width, 256, N("attn.compressor.wkv.weight"));
            expect_mat(&l->comp.wgate, WF_PLAIN, DT_BF16, width, 256, N("attn.compressor.wgate.weight"));
            expect_mat(&l->comp.ape, WF_PLAIN, DT_F32, ratios[L], width, N("attn.compressor.ape"));
            expect_mat(&l->comp.norm, WF_PLAIN, DT_BF16, 1, 128, N("attn.compressor.norm.weight"));
        } else {
            assert_null(l->comp.wkv.data);
        }
        if (kinds[L] == LAYER_CSA) {
            assert_int_equal(l->idx_comp.head, 64);
            assert_int_equal(l->idx_comp.width, 128);
            expect_mat(&l->idx_comp.wkv, WF_PLAIN, DT_BF16, 128, 256, N("attn.indexer.compressor.wkv.weight"));
            expect_mat(&l->idx_comp.ape, WF_PLAIN, DT_F32, 4, 128, N("attn.indexer.compressor.ape"));
            expect_mat(&l->idx_comp.norm, WF_PLAIN, DT_BF16, 1, 64, N("attn.indexer.compressor.norm.weight"));
            expect_mat(&l->idx_wq_b, WF_FP8, DT_F8_E4M3, 256, 128, N("attn.indexer.wq_b.weight"));
            expect_mat(&l->idx_weights_proj, WF_PLAIN, DT_BF16, 4, 256, N("attn.indexer.weights_proj.weight"));
        } else {
            assert_null(l->idx_wq_b.data);
            assert_null(l->idx_comp.wkv.data);
        }
        expect_mat(&l->gate_w, WF_PLAIN, DT_BF16, 16, 256, N("ffn.gate.weight"));
        if (L < 2) {
            expect_mat(&l->tid2eid, WF_I32, DT_I32, 1024, 4, N("ffn.gate.tid2eid"));
            assert_null(l->gate_bias.data);
        } else {
            expect_mat(&l->gate_bias, WF_PLAIN, DT_F32, 1, 16, N("ffn.gate.bias"));
            assert_null(l->tid2eid.data);
        }
        expect_mat(&l->sh_w1, WF_FP8, DT_F8_E4M3, 128, 256, N("ffn.shared_experts.w1.weight"));
        expect_mat(&l->sh_w2, WF_FP8, DT_F8_E4M3, 256, 128, N("ffn.shared_experts.w2.weight"));
        expect_mat(&l->sh_w3, WF_FP8, DT_F8_E4M3, 128, 256, N("ffn.shared_experts.w3.weight"));
        for (int j = 0; j < 16; j++) {
            snprintf(n, sizeof n, "layers.%d.ffn.experts.%d.w1.weight", L, j);
            expect_mat(&l->exp_w1[j], WF_MXFP4, DT_MXFP4, 128, 256, n);
            snprintf(n, sizeof n, "layers.%d.ffn.experts.%d.w2.weight", L, j);
            expect_mat(&l->exp_w2[j], WF_MXFP4, DT_MXFP4, 256, 128, n);
            snprintf(n, sizeof n, "layers.%d.ffn.experts.%d.w3.weight", L, j);
            expect_mat(&l->exp_w3[j], WF_MXFP4, DT_MXFP4, 128, 256, n);
        }
        assert_int_equal(mat_scale_bytes(&l->exp_w1[0]), 128 * 8);
        assert_int_equal(mat_scale_bytes(&l->wq_b), 4);
#undef N
    }
    check_covers_archive(&b);
    unbind(&b);
}

static void test_golden_rates_binds(void **state)
{
    (void)state;
    bound b;
    v4_err err;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_golden("rates"));
    if (bind_dir(dir, &b, &err))
        fail_msg("%s", err.msg);
    v4_weights *w = &b.w;
    assert_int_equal(w->n_layers, 4);
    assert_int_equal(w->layers[0].kind, LAYER_CSA);
    assert_int_equal(w->layers[1].kind, LAYER_HCA);
    assert_int_equal(w->layers[1].ratio, 128);
    assert_int_equal(w->layers[3].kind, LAYER_SLIDING);
    expect_mat(&w->layers[1].comp.ape, WF_PLAIN, DT_F32, 128, 512, "layers.1.attn.compressor.ape");
    expect_mat(&w->layers[0].wq_b, WF_FP8, DT_F8_E4M3, 8 * 512, 256, "layers.0.attn.wq_b.weight");
    expect_mat(&w->layers[2].wo_a, WF_FP8, DT_F8_E4M3, 4 * 128, 8 * 512 / 4, "layers.2.attn.wo_a.weight");
    expect_mat(&w->layers[2].idx_wq_b, WF_FP8, DT_F8_E4M3, 8 * 128, 256, "layers.2.attn.indexer.wq_b.weight");
    expect_mat(&w->layers[0].tid2eid, WF_I32, DT_I32, 2048, 6, "layers.0.ffn.gate.tid2eid");
    expect_mat(&w->layers[3].exp_w2[15], WF_MXFP4, DT_MXFP4, 512, 256, "layers.3.ffn.experts.15.w2.weight");
    check_covers_archive(&b);
    unbind(&b);
}

/* ---- edited copies of golden tiny ---- */

typedef void (*edit_fn)(tc_ckpt *ck);

static int bind_edited(edit_fn edit, v4_err *err, bound *out)
{
    tc_ckpt ck;
    assert_int_equal(tc_load(&ck, tu_path("tests/golden/tiny/model")), 0);
    edit(&ck);
    const char *dir = tu_tmpdir();
    assert_int_equal(tc_write(&ck, dir, 2), 0);
    tc_free(&ck);
    bound b;
    int rc = bind_dir(dir, &b, err);
    if (rc == 0 && out)
        *out = b;
    else if (rc == 0)
        unbind(&b);
    else
        st_close(b.a);
    tc_rmtree(dir); /* the mapping stays valid after the files are gone */
    return rc;
}

static void expect_bind_error(edit_fn edit, const char *const *want)
{
    v4_err err = {{0}};
    assert_int_equal(bind_edited(edit, &err, NULL), -1);
    for (int i = 0; want[i]; i++)
        if (!strstr(err.msg, want[i]))
            fail_msg("message lacks '%s': %s", want[i], err.msg);
}

#define BIND_FAILS(edit, ...) expect_bind_error(edit, (const char *const[]){__VA_ARGS__, NULL})

static void rm(tc_ckpt *ck, const char *name)
{
    assert_int_equal(tc_remove(ck, name), 0);
}

static void retype(tc_ckpt *ck, const char *name, dtype_t dt, int ndim, int64_t d0, int64_t d1)
{
    tc_tensor *t = tc_find(ck, name);
    assert_non_null(t);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    assert_int_equal(dt_bytes(dt, ndim == 1 ? d0 : d0 * d1), t->nbytes);
}

static void e_rm_weight(tc_ckpt *ck) { rm(ck, "layers.2.attn.wkv.weight"); }
static void e_rm_scale(tc_ckpt *ck) { rm(ck, "layers.1.attn.indexer.wq_b.scale"); }
static void e_rm_expert(tc_ckpt *ck) { rm(ck, "layers.3.ffn.experts.15.w2.weight"); }
static void e_rm_expert_scale(tc_ckpt *ck) { rm(ck, "layers.3.ffn.experts.15.w2.scale"); }
static void e_rm_tid2eid(tc_ckpt *ck) { rm(ck, "layers.1.ffn.gate.tid2eid"); }
static void e_rm_bias(tc_ckpt *ck) { rm(ck, "layers.4.ffn.gate.bias"); }
static void e_rm_hc_head(tc_ckpt *ck) { rm(ck, "hc_head_scale"); }
static void e_rm_idx_ape(tc_ckpt *ck) { rm(ck, "layers.3.attn.indexer.compressor.ape"); }

static void test_missing_tensors(void **state)
{
    (void)state;
    BIND_FAILS(e_rm_weight, "missing tensor 'layers.2.attn.wkv.weight'");
    BIND_FAILS(e_rm_scale, "'layers.1.attn.indexer.wq_b.weight'", "layers.1.attn.indexer.wq_b.scale");
    BIND_FAILS(e_rm_expert, "missing tensor 'layers.3.ffn.experts.15.w2.weight'");
    BIND_FAILS(e_rm_expert_scale, "layers.3.ffn.experts.15.w2.scale");
    BIND_FAILS(e_rm_tid2eid, "missing tensor 'layers.1.ffn.gate.tid2eid'");
    BIND_FAILS(e_rm_bias, "missing tensor 'layers.4.ffn.gate.bias'");
    BIND_FAILS(e_rm_hc_head, "missing tensor 'hc_head_scale'");
    BIND_FAILS(e_rm_idx_ape, "missing tensor 'layers.3.attn.indexer.compressor.ape'");
}

static void e_extra(tc_ckpt *ck) { tc_add(ck, "layers.0.attn.bogus.weight", DT_BF16, 1, (int64_t[]){4}); }
static void e_extra_layer(tc_ckpt *ck) { tc_add(ck, "layers.5.attn_norm.weight", DT_BF16, 1, (int64_t[]){256}); }
static void e_extra_bias(tc_ckpt *ck) { tc_add(ck, "layers.0.ffn.gate.bias", DT_F32, 1, (int64_t[]){16}); }
static void e_extra_expert(tc_ckpt *ck)
{
    tc_add(ck, "layers.2.ffn.experts.16.w1.weight", DT_I8, 2, (int64_t[]){128, 128});
}
static void e_extra_comp(tc_ckpt *ck)
{
    tc_add(ck, "layers.0.attn.compressor.norm.weight", DT_BF16, 1, (int64_t[]){128});
}
static void e_extra_bf16_scale(tc_ckpt *ck)
{
    tc_add(ck, "layers.0.ffn.gate.scale", DT_F8_E8M0, 2, (int64_t[]){1, 2});
}

static void test_unexpected_tensors(void **state)
{
    (void)state;
    BIND_FAILS(e_extra, "unexpected", "'layers.0.attn.bogus.weight'");
    BIND_FAILS(e_extra_layer, "unexpected", "'layers.5.attn_norm.weight'");
    BIND_FAILS(e_extra_bias, "unexpected", "'layers.0.ffn.gate.bias'"); /* layer 0 routes by hash */
    BIND_FAILS(e_extra_expert, "unexpected", "'layers.2.ffn.experts.16.w1.weight'");
    BIND_FAILS(e_extra_comp, "unexpected", "'layers.0.attn.compressor.norm.weight'"); /* sliding layer */
    BIND_FAILS(e_extra_bf16_scale, "'layers.0.ffn.gate.scale'", "takes no scale");
}

static void e_shape_fp8(tc_ckpt *ck) { retype(ck, "layers.1.attn.wq_a.weight", DT_F8_E4M3, 2, 256, 128); }
static void e_shape_scale(tc_ckpt *ck) { retype(ck, "layers.1.attn.wq_a.scale", DT_F8_E8M0, 2, 2, 1); }
static void e_shape_norm(tc_ckpt *ck) { retype(ck, "layers.2.ffn_norm.weight", DT_BF16, 2, 16, 16); }
static void e_shape_expert(tc_ckpt *ck) { retype(ck, "layers.0.ffn.experts.3.w3.weight", DT_I8, 2, 64, 256); }
static void e_shape_ape(tc_ckpt *ck) { retype(ck, "layers.1.attn.compressor.ape", DT_F32, 2, 8, 128); }
static void e_shape_tid(tc_ckpt *ck) { retype(ck, "layers.0.ffn.gate.tid2eid", DT_I32, 2, 2048, 2); }
static void e_shape_hc(tc_ckpt *ck) { retype(ck, "layers.4.hc_ffn_fn", DT_F32, 2, 48, 512); }

static void test_wrong_shapes(void **state)
{
    (void)state;
    BIND_FAILS(e_shape_fp8, "'layers.1.attn.wq_a.weight'", "shape [256, 128], expected [128, 256]");
    BIND_FAILS(e_shape_scale, "'layers.1.attn.wq_a.scale'", "shape [2, 1], expected [1, 2]");
    BIND_FAILS(e_shape_norm, "'layers.2.ffn_norm.weight'", "shape [16, 16], expected [256]");
    BIND_FAILS(e_shape_expert, "'layers.0.ffn.experts.3.w3.weight'", "expected [128, 128]");
    BIND_FAILS(e_shape_ape, "'layers.1.attn.compressor.ape'", "expected [4, 256]");
    BIND_FAILS(e_shape_tid, "'layers.0.ffn.gate.tid2eid'", "expected [1024, 4]");
    BIND_FAILS(e_shape_hc, "'layers.4.hc_ffn_fn'", "expected [24, 1024]");
}

static void e_dt_e5m2(tc_ckpt *ck) { retype(ck, "layers.0.attn.wkv.weight", DT_F8_E5M2, 2, 128, 256); }
static void e_dt_scale(tc_ckpt *ck) { retype(ck, "layers.0.attn.wkv.scale", DT_U8, 2, 1, 2); }
static void e_dt_norm(tc_ckpt *ck) { retype(ck, "layers.3.attn.q_norm.weight", DT_I8, 1, 256, 0); }
static void e_dt_sink(tc_ckpt *ck) { retype(ck, "layers.3.attn.attn_sink", DT_I32, 1, 4, 0); }
static void e_dt_tid(tc_ckpt *ck) { retype(ck, "layers.1.ffn.gate.tid2eid", DT_F32, 2, 1024, 4); }
static void e_dt_expert(tc_ckpt *ck) { retype(ck, "layers.2.ffn.experts.0.w1.weight", DT_F32, 2, 128, 32); }
static void e_dt_expert_scale(tc_ckpt *ck) { retype(ck, "layers.2.ffn.experts.0.w1.scale", DT_I8, 2, 128, 8); }
static void e_dt_i32_linear(tc_ckpt *ck)
{
    retype(ck, "layers.0.ffn.gate.weight", DT_I32, 2, 16, 128);
}

static void test_wrong_dtypes(void **state)
{
    (void)state;
    BIND_FAILS(e_dt_e5m2, "'layers.0.attn.wkv.weight'", "F8_E5M2");
    BIND_FAILS(e_dt_scale, "'layers.0.attn.wkv.scale'", "dtype U8, expected F8_E8M0");
    BIND_FAILS(e_dt_norm, "'layers.3.attn.q_norm.weight'", "dtype I8");
    BIND_FAILS(e_dt_sink, "'layers.3.attn.attn_sink'", "dtype I32");
    BIND_FAILS(e_dt_tid, "'layers.1.ffn.gate.tid2eid'", "dtype F32, expected I32");
    BIND_FAILS(e_dt_expert, "layers.2.ffn.experts.0.w1", "F32");
    BIND_FAILS(e_dt_expert_scale, "'layers.2.ffn.experts.0.w1.scale'", "expected F8_E8M0");
    BIND_FAILS(e_dt_i32_linear, "'layers.0.ffn.gate.weight'", "I32");
}

static void set_tid(tc_ckpt *ck, const char *name, size_t idx, int32_t v)
{
    tc_tensor *t = tc_find(ck, name);
    assert_non_null(t);
    memcpy(t->data + 4 * idx, &v, 4);
}
static void e_tid_high(tc_ckpt *ck) { set_tid(ck, "layers.1.ffn.gate.tid2eid", 4 * 77 + 2, 16); }
static void e_tid_neg(tc_ckpt *ck) { set_tid(ck, "layers.0.ffn.gate.tid2eid", 5, -1); }

static void test_expert_ids_checked(void **state)
{
    (void)state;
    BIND_FAILS(e_tid_high, "'layers.1.ffn.gate.tid2eid'", "expert id 16 at row 77");
    BIND_FAILS(e_tid_neg, "'layers.0.ffn.gate.tid2eid'", "expert id -1 at row 1");
}

static void e_mtp(tc_ckpt *ck)
{
    tc_add(ck, "mtp.0.attn.wq_a.weight", DT_F8_E4M3, 2, (int64_t[]){128, 256});
    tc_add(ck, "mtp.0.attn.wq_a.scale", DT_F8_E8M0, 2, (int64_t[]){1, 2});
    tc_add(ck, "mtp.0.hc_attn_fn", DT_F32, 2, (int64_t[]){24, 1024});
    tc_add(ck, "mtp.0.ffn.experts.0.w1.weight", DT_I8, 2, (int64_t[]){128, 128});
}

static void test_mtp_ignored(void **state)
{
    (void)state;
    v4_err err;
    bound b;
    if (bind_edited(e_mtp, &err, &b))
        fail_msg("%s", err.msg);
    assert_int_equal(b.w.n_layers, 5);
    assert_non_null(st_find(b.a, "mtp.0.attn.wq_a.weight"));
    unbind(&b);
}

/* A checkpoint that was dequantized or re-quantized binds by stored dtype. */
static void e_dequant(tc_ckpt *ck)
{
    rm(ck, "layers.0.attn.wq_a.weight");
    rm(ck, "layers.0.attn.wq_a.scale");
    tc_add(ck, "layers.0.attn.wq_a.weight", DT_BF16, 2, (int64_t[]){128, 256});
    rm(ck, "layers.1.attn.wkv.weight");
    rm(ck, "layers.1.attn.wkv.scale");
    tc_add(ck, "layers.1.attn.wkv.weight", DT_F32, 2, (int64_t[]){128, 256});
    /* an expert re-quantized to FP8 */
    rm(ck, "layers.2.ffn.experts.4.w2.weight");
    rm(ck, "layers.2.ffn.experts.4.w2.scale");
    tc_add(ck, "layers.2.ffn.experts.4.w2.weight", DT_F8_E4M3, 2, (int64_t[]){256, 128});
    tc_add(ck, "layers.2.ffn.experts.4.w2.scale", DT_F8_E8M0, 2, (int64_t[]){2, 1});
    /* tid2eid as I64 */
    rm(ck, "layers.0.ffn.gate.tid2eid");
    tc_add(ck, "layers.0.ffn.gate.tid2eid", DT_I64, 2, (int64_t[]){1024, 4});
}

static void e_fp8_no_scale(tc_ckpt *ck) { rm(ck, "layers.4.attn.wo_b.scale"); }

static void test_formats_follow_dtype(void **state)
{
    (void)state;
    v4_err err;
    bound b;
    if (bind_edited(e_dequant, &err, &b))
        fail_msg("%s", err.msg);
    expect_mat(&b.w.layers[0].wq_a, WF_PLAIN, DT_BF16, 128, 256, "layers.0.attn.wq_a.weight");
    expect_mat(&b.w.layers[1].wkv, WF_PLAIN, DT_F32, 128, 256, "layers.1.attn.wkv.weight");
    expect_mat(&b.w.layers[2].exp_w2[4], WF_FP8, DT_F8_E4M3, 256, 128, "layers.2.ffn.experts.4.w2.weight");
    expect_mat(&b.w.layers[2].exp_w2[5], WF_MXFP4, DT_MXFP4, 256, 128, "layers.2.ffn.experts.5.w2.weight");
    expect_mat(&b.w.layers[0].tid2eid, WF_I32, DT_I64, 1024, 4, "layers.0.ffn.gate.tid2eid");
    check_covers_archive(&b);
    unbind(&b);
    BIND_FAILS(e_fp8_no_scale, "'layers.4.attn.wo_b.weight'", "layers.4.attn.wo_b.scale");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_tiny_binds),
        cmocka_unit_test(test_golden_rates_binds),
        cmocka_unit_test(test_missing_tensors),
        cmocka_unit_test(test_unexpected_tensors),
        cmocka_unit_test(test_wrong_shapes),
        cmocka_unit_test(test_wrong_dtypes),
        cmocka_unit_test(test_expert_ids_checked),
        cmocka_unit_test(test_mtp_ignored),
        cmocka_unit_test(test_formats_follow_dtype),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
