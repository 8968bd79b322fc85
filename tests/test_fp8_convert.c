/* FP8 dialect conversion at load (weights_convert_fp8) and the dialect check
 * every FP8 reader makes (mat_expect_fp8). The test checkpoints are the
 * golden tiny model with one weight, layers.0.attn.wo_a ([256, 256], four
 * 128x128 blocks), overwritten so that every code meets every block scale
 * (2^-20, 2^-1, 2^0, 2^5). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "testutil.h"
#include "tu_ckpt.h"

#define WO_A "layers.0.attn.wo_a.weight"
#define WO_A_SCALE "layers.0.attn.wo_a.scale"
static const uint8_t SCALES[4] = {107, 126, 127, 132}; /* 2^-20, 2^-1, 2^0, 2^5 */

typedef struct model {
    char dir[256];
    v4_config c;
    st_archive *a;
    v4_weights w;
} model;

/* The code placed at element i of wo_a: every code cycles through each
 * block; codes in `avoid` are replaced by 0x01. */
static uint8_t code_at(size_t i, const uint8_t *avoid, int n_avoid)
{
    uint8_t code = (uint8_t)(i % 256);
    for (int k = 0; k < n_avoid; k++)
        if (code == avoid[k])
            return 0x01;
    return code;
}

/* Writes golden tiny with wo_a stored as `dt` holding the cycling codes and
 * the four scales, then opens and binds it. `poke`/`poke_code` put one extra
 * code at element 1000 (poke < 0: none); scale0 overrides block 0's scale. */
static void make_model(model *m, dtype_t dt, const uint8_t *avoid, int n_avoid, int poke_code, int scale0)
{
    tc_ckpt ck;
    assert_int_equal(tc_load(&ck, tu_path("tests/golden/tiny/model")), 0);
    tc_tensor *w = tc_find(&ck, WO_A), *s = tc_find(&ck, WO_A_SCALE);
    assert_non_null(w);
    assert_non_null(s);
    assert_int_equal(w->nbytes, 256 * 256);
    assert_int_equal(s->nbytes, 4);
    w->dtype = dt;
    for (size_t i = 0; i < w->nbytes; i++)
        w->data[i] = code_at(i, avoid, n_avoid);
    if (poke_code >= 0)
        w->data[1000] = (uint8_t)poke_code;
    memcpy(s->data, SCALES, 4);
    if (scale0 >= 0)
        s->data[0] = (uint8_t)scale0;
    snprintf(m->dir, sizeof m->dir, "%s", tu_tmpdir());
    assert_int_equal(tc_write(&ck, m->dir, 2), 0);
    tc_free(&ck);
    v4_err err;
    if (cfg_load(m->dir, &m->c, &err) || st_open(m->dir, &m->a, &err) || weights_bind(&m->c, m->a, &m->w, &err))
        fail_msg("%s", err.msg);
}

static void free_model(model *m)
{
    weights_free(&m->w);
    st_close(m->a);
    tc_rmtree(m->dir);
}

/* Exact value of every element: code in the matrix's dialect times its
 * block scale. */
static double *dequant(const v4_mat *m)
{
    assert_int_equal(m->fmt, WF_FP8);
    double *v = malloc((size_t)(m->rows * m->cols) * sizeof *v);
    assert_non_null(v);
    const uint8_t *q = m->data;
    const int64_t sb = (m->cols + 127) / 128;
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t c = 0; c < m->cols; c++) {
            uint8_t e = m->scale[(r / 128) * sb + c / 128];
            v[r * m->cols + c] = (double)dt_fp8_to_f32(m->dtype, q[r * m->cols + c]) * ldexp(1.0, e - 127);
        }
    return v;
}

static void assert_values_equal(const v4_mat *m, const double *before)
{
    double *after = dequant(m);
    for (int64_t i = 0; i < m->rows * m->cols; i++)
        if (!(after[i] == before[i]))
            fail_msg("%s element %lld: %a before, %a after", m->name, (long long)i, before[i], after[i]);
    free(after);
}

/* Snapshot of every FP8 matrix of a model, in visit order. */
typedef struct snap {
    double *v[4096];
    const v4_mat *m[4096];
    int n;
} snap;

static int snap_one(v4_mat *m, void *ctx, v4_err *err)
{
    (void)err;
    snap *s = ctx;
    if (m->fmt == WF_FP8) {
        assert_true(s->n < 4096);
        s->m[s->n] = m;
        s->v[s->n++] = dequant(m);
    }
    return 0;
}

static const double *snap_of(const snap *s, const v4_mat *m)
{
    for (int i = 0; i < s->n; i++)
        if (s->m[i] == m)
            return s->v[i];
    fail_msg("%s not in the snapshot", m->name);
    return NULL;
}

static void snap_free(snap *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
}

static v4_mat *find_mat(model *m, const char *name)
{
    if (strcmp(name, WO_A) == 0)
        return &m->w.layers[0].wo_a;
    fail_msg("no slot for %s", name);
    return NULL;
}

static void test_ocp_to_fnuz_all_codes_all_scales(void **state)
{
    (void)state;
    const uint8_t nan[2] = {0x7F, 0xFF};
    model m;
    make_model(&m, DT_F8_E4M3, nan, 2, -1, -1);
    v4_mat *wo = find_mat(&m, WO_A);
    assert_int_equal(wo->dtype, DT_F8_E4M3);
    uint8_t *orig = malloc(256 * 256);
    memcpy(orig, wo->data, 256 * 256);
    snap before = {0};
    v4_err err;
    assert_int_equal(weights_visit(&m.w, snap_one, &before, &err), 0);
    assert_true(before.n > 40); /* every FP8 weight of the tiny model */

    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3FNUZ, &err), 0);
    for (int i = 0; i < before.n; i++) {
        assert_int_equal(before.m[i]->dtype, DT_F8_E4M3FNUZ);
        assert_values_equal(before.m[i], before.v[i]);
    }
    /* bytes kept except -0, scales one binade up */
    const uint8_t *q = wo->data;
    for (size_t i = 0; i < 256 * 256; i++)
        assert_int_equal(q[i], orig[i] == 0x80 ? 0x00 : orig[i]);
    for (int b = 0; b < 4; b++)
        assert_int_equal(wo->scale[b], SCALES[b] + 1);
    /* converting again is a no-op */
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3FNUZ, &err), 0);
    assert_values_equal(wo, snap_of(&before, wo));

    /* and back: the same values, the original bytes but for -0 */
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3, &err), 0);
    for (int i = 0; i < before.n; i++) {
        assert_int_equal(before.m[i]->dtype, DT_F8_E4M3);
        assert_values_equal(before.m[i], before.v[i]);
    }
    for (int b = 0; b < 4; b++)
        assert_int_equal(wo->scale[b], SCALES[b]);

    /* the file on disk never changed */
    st_archive *again;
    assert_int_equal(st_open(m.dir, &again, &err), 0);
    assert_memory_equal(st_find(again, WO_A)->data, orig, 256 * 256);
    assert_memory_equal(st_find(again, WO_A_SCALE)->data, SCALES, 4);
    st_close(again);
    snap_free(&before);
    free(orig);
    free_model(&m);
}

static void test_golden_model_round_trip(void **state)
{
    (void)state;
    /* the unmodified golden checkpoints convert both ways with every value kept */
    const char *names[2] = {"tiny", "rates"};
    for (int g = 0; g < 2; g++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/model", tu_golden(names[g]));
        v4_config c;
        st_archive *a;
        v4_weights w;
        v4_err err;
        if (cfg_load(dir, &c, &err) || st_open(dir, &a, &err) || weights_bind(&c, a, &w, &err))
            fail_msg("%s", err.msg);
        snap before = {0};
        assert_int_equal(weights_visit(&w, snap_one, &before, &err), 0);
        assert_int_equal(weights_convert_fp8(&w, a, DT_F8_E4M3FNUZ, &err), 0);
        for (int i = 0; i < before.n; i++)
            assert_values_equal(before.m[i], before.v[i]);
        assert_int_equal(weights_convert_fp8(&w, a, DT_F8_E4M3, &err), 0);
        for (int i = 0; i < before.n; i++)
            assert_values_equal(before.m[i], before.v[i]);
        snap_free(&before);
        weights_free(&w);
        st_close(a);
    }
}

static void test_fnuz_to_ocp_where_representable(void **state)
{
    (void)state;
    const uint8_t bad[3] = {0x80, 0x7F, 0xFF}; /* NaN, +240, -240 in fnuz */
    model m;
    make_model(&m, DT_F8_E4M3FNUZ, bad, 3, -1, -1);
    v4_mat *wo = find_mat(&m, WO_A);
    assert_int_equal(wo->dtype, DT_F8_E4M3FNUZ);
    double *before = dequant(wo);
    v4_err err;
    /* the rest of the model is OCP already: only wo_a changes */
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3, &err), 0);
    assert_int_equal(wo->dtype, DT_F8_E4M3);
    assert_values_equal(wo, before);
    for (int b = 0; b < 4; b++)
        assert_int_equal(wo->scale[b], SCALES[b] - 1);
    const uint8_t *q = wo->data;
    for (size_t i = 0; i < 256 * 256; i++)
        assert_int_equal(q[i], code_at(i, bad, 3));
    free(before);
    free_model(&m);
}

/* A conversion that must fail: the message names the tensor and the code or
 * scale, and the offending weight keeps its bytes and dialect. */
static void expect_refused(dtype_t stored, dtype_t target, int poke_code, int scale0, const char *want)
{
    const uint8_t avoid[3] = {0x80, 0x7F, 0xFF};
    model m;
    make_model(&m, stored, avoid, 3, poke_code, scale0);
    v4_mat *wo = find_mat(&m, WO_A);
    uint8_t *orig = malloc(256 * 256);
    memcpy(orig, wo->data, 256 * 256);
    uint8_t orig_scale[4];
    memcpy(orig_scale, wo->scale, 4);
    v4_err err = {{0}};
    assert_int_equal(weights_convert_fp8(&m.w, m.a, target, &err), -1);
    if (!strstr(err.msg, WO_A) && !strstr(err.msg, "layers.0.attn.wo_a"))
        fail_msg("message does not name the tensor: %s", err.msg);
    if (!strstr(err.msg, want))
        fail_msg("message lacks '%s': %s", want, err.msg);
    assert_int_equal(wo->dtype, stored);
    assert_memory_equal(wo->data, orig, 256 * 256);
    assert_memory_equal(wo->scale, orig_scale, 4);
    free(orig);
    free_model(&m);
}

static void test_ocp_nan_codes_rejected(void **state)
{
    (void)state;
    expect_refused(DT_F8_E4M3, DT_F8_E4M3FNUZ, 0x7F, -1, "0x7F");
    expect_refused(DT_F8_E4M3, DT_F8_E4M3FNUZ, 0xFF, -1, "0xFF");
}

static void test_fnuz_nan_and_240_rejected(void **state)
{
    (void)state;
    expect_refused(DT_F8_E4M3FNUZ, DT_F8_E4M3, 0x80, -1, "NaN");
    expect_refused(DT_F8_E4M3FNUZ, DT_F8_E4M3, 0x7F, -1, "240");
    expect_refused(DT_F8_E4M3FNUZ, DT_F8_E4M3, 0xFF, -1, "240");
}

static void test_scales_out_of_range_rejected(void **state)
{
    (void)state;
    expect_refused(DT_F8_E4M3, DT_F8_E4M3FNUZ, -1, 0xFE, "0xFE"); /* would become the NaN scale */
    expect_refused(DT_F8_E4M3, DT_F8_E4M3FNUZ, -1, 0xFF, "0xFF"); /* NaN scale */
    expect_refused(DT_F8_E4M3FNUZ, DT_F8_E4M3, -1, 0x00, "0x00"); /* 2^-128 does not exist */
}

static void test_wrong_dialect_is_refused(void **state)
{
    (void)state;
    model m;
    make_model(&m, DT_F8_E4M3, NULL, 0, -1, -1);
    v4_mat *wo = find_mat(&m, WO_A);
    v4_err err = {{0}};
    assert_int_equal(mat_expect_fp8(wo, DT_F8_E4M3, &err), 0);
    assert_int_equal(mat_expect_fp8(wo, DT_F8_E4M3FNUZ, &err), -1);
    assert_non_null(strstr(err.msg, WO_A));

    const uint8_t nan[2] = {0x7F, 0xFF};
    free_model(&m);
    make_model(&m, DT_F8_E4M3, nan, 2, -1, -1);
    wo = find_mat(&m, WO_A);
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3FNUZ, &err), 0);
    /* a reader expecting OCP codes must not get the converted bytes */
    memset(&err, 0, sizeof err);
    assert_int_equal(mat_expect_fp8(wo, DT_F8_E4M3, &err), -1);
    assert_non_null(strstr(err.msg, WO_A));
    assert_non_null(strstr(err.msg, "F8_E4M3FNUZ"));
    assert_non_null(strstr(err.msg, "read as F8_E4M3:"));
    assert_int_equal(mat_expect_fp8(wo, DT_F8_E4M3FNUZ, &err), 0);
    assert_int_equal(mat_expect_fp8(&m.w.layers[0].wq_a, DT_F8_E4M3FNUZ, &err), 0);
    /* not FP8 at all: a BF16 matrix */
    memset(&err, 0, sizeof err);
    assert_int_equal(mat_expect_fp8(&m.w.layers[0].gate_w, DT_F8_E4M3FNUZ, &err), -1);
    assert_non_null(strstr(err.msg, "layers.0.ffn.gate.weight"));
    /* only the two e4m3 dialects are targets */
    memset(&err, 0, sizeof err);
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_BF16, &err), -1);
    assert_non_null(strstr(err.msg, "BF16"));
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E5M2FNUZ, &err), -1);
    free_model(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ocp_to_fnuz_all_codes_all_scales),
        cmocka_unit_test(test_golden_model_round_trip),
        cmocka_unit_test(test_fnuz_to_ocp_where_representable),
        cmocka_unit_test(test_ocp_nan_codes_rejected),
        cmocka_unit_test(test_fnuz_nan_and_240_rejected),
        cmocka_unit_test(test_scales_out_of_range_rejected),
        cmocka_unit_test(test_wrong_dialect_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
