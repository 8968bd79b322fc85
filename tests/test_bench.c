/* The benchmark's accounting and measurements (src/tools/roofline.c,
 * src/tools/bench.c) on the CPU backend with the golden checkpoints:
 * - the roofline's weight bytes for a decode step that touches every expert
 *   equal the bytes of the checkpoint's tensors (less the tables of which a
 *   step reads one row a token: the embedding, the hash-routing tables and
 *   the compressors' position biases), so the "ratio to the roofline"
 *   divides by the bytes that really exist;
 * - FLOPs split by op family add up, and a prefill chunk's dense FLOPs are
 *   its tokens times a one-token decode step's;
 * - a prefill run and a decode run measure, profile and write valid JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "testutil.h"
#include "tools/bench.h"
#include "tools/mkmodel.h"
#include "tools/roofline.h"

static void model_dir(const char *name, char dir[4096]) { snprintf(dir, 4096, "%s/model", tu_golden(name)); }

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void check_weight_bytes(const char *name)
{
    char dir[4096];
    model_dir(name, dir);
    v4_err err;
    v4_config c;
    st_archive *a;
    if (cfg_load(dir, &c, &err) || st_open(dir, &a, &err))
        fail_msg("%s: %s", name, err.msg);
    double in_file = 0;
    for (size_t i = 0; i < st_count(a); i++) {
        const st_tensor *t = st_at(a, i);
        if (strcmp(t->name, "embed.weight") != 0 && !ends_with(t->name, ".tid2eid") && !ends_with(t->name, ".ape"))
            in_file += (double)t->nbytes;
    }
    st_close(a);
    const roof_bytes b = roof_decode_step(&c, 1, 0, (double)c.n_experts, 4);
    const double embed_row = 2.0 * c.dim; /* the one token's embedding row, bf16 */
    const double counted = b.attn_weights + b.moe_weights + b.other_weights - embed_row;
    fprintf(stderr, "# %s: roofline weights %.0f bytes, checkpoint %.0f bytes (%+.3f%%)\n", name, counted, in_file,
            100 * (counted / in_file - 1));
    /* the roofline leaves out only per-channel vectors (sinks, the
     * compressors' norm weights, mHC bases and scales): well under 0.5% */
    assert_true(counted <= in_file);
    assert_true(counted >= 0.995 * in_file);
}

static void test_roofline_weights_tiny(void **state) { check_weight_bytes("tiny"); }
static void test_roofline_weights_rates(void **state) { check_weight_bytes("rates"); }

/* The same at the real dimensions: the full Flash checkpoint as mkmodel
 * would write it (planned, not written). Besides the per-channel vectors,
 * the roofline leaves out the hash-routing tables and the position biases
 * here (under 0.01% together); the embedding table is taken out below. */
static void test_roofline_weights_flash(void **state)
{
    const mk_options o = {.preset = "flash", .seed = 1};
    v4_err err;
    char *json;
    mk_summary plan;
    v4_config c;
    if (mk_config_json(&o, &json, &err) || cfg_parse(json, strlen(json), "flash", &c, &err) ||
        mk_plan_size(&o, &plan, &err))
        fail_msg("%s", err.msg);
    free(json);
    const double in_file = (double)plan.bytes - 2.0 * c.vocab_size * c.dim; /* less the bf16 embedding */
    const roof_bytes b = roof_decode_step(&c, 1, 0, (double)c.n_experts, 1);
    const double counted = b.attn_weights + b.moe_weights + b.other_weights - 2.0 * c.dim;
    fprintf(stderr, "# flash (%lld layers): roofline weights %.4g bytes, checkpoint %.4g bytes (%+.4f%%)\n",
            (long long)c.n_layers, counted, in_file, 100 * (counted / in_file - 1));
    assert_int_equal(c.n_layers, 43);
    assert_true(counted <= in_file);
    assert_true(counted >= 0.999 * in_file);
}

static double sum(const double v[FAM_COUNT])
{
    double s = 0;
    for (int i = 0; i < FAM_COUNT; i++)
        s += v[i];
    return s;
}

static void test_roofline_flops_split(void **state)
{
    char dir[4096];
    model_dir("rates", dir);
    v4_err err;
    v4_config c;
    if (cfg_load(dir, &c, &err))
        fail_msg("%s", err.msg);
    const roof_bytes d = roof_decode_step(&c, 1, 300, 6, 2), p = roof_prefill_chunk(&c, 256, 0, 16, 2);
    assert_true(fabs(sum(d.fam_flops) - d.flops) <= 1e-9 * d.flops);
    assert_true(fabs(sum(p.fam_flops) - p.flops) <= 1e-9 * p.flops);
    for (int i = 0; i < FAM_COUNT; i++)
        assert_true(d.fam_flops[i] >= 0 && p.fam_flops[i] >= 0);
    /* rates has CSA layers, so every family computes in decode */
    for (int i = 0; i < FAM_COUNT; i++)
        assert_true(d.fam_flops[i] > 0);
    /* projections and experts scale with tokens; the head runs on one row */
    assert_true(fabs(p.fam_flops[FAM_DENSE] - 256 * d.fam_flops[FAM_DENSE]) <= 1e-9 * p.fam_flops[FAM_DENSE]);
    assert_true(fabs(p.fam_flops[FAM_MOE] - 256 * d.fam_flops[FAM_MOE]) <= 1e-9 * p.fam_flops[FAM_MOE]);
    assert_true(p.fam_flops[FAM_HEAD] == d.fam_flops[FAM_HEAD]);
    /* routed experts: 3 matrices of D x I for each of the k chosen, 2 FLOPs a multiply-add */
    assert_true(d.fam_flops[FAM_MOE] == 2.0 * 3 * c.dim * c.moe_inter * c.n_active * c.n_layers);
}

static v4_model *open_tiny(v4_backend **be)
{
    char dir[4096];
    model_dir("tiny", dir);
    v4_err err;
    v4_model *m;
    if (backend_cpu_create(2, DT_F8_E4M3, be, &err) || model_open(dir, *be, &m, &err))
        fail_msg("%s", err.msg);
    return m;
}

/* A CPU has no matrix-product library: its GEMM rates are NaN. */
static const v4_peaks CPU_PEAKS = {.copy_gbps = 10, .bf16_tflops = NAN, .fp8_tflops = NAN};
/* GEMM rates to hold a prefill against (the CPU has none measured) */
static const v4_peaks RATE_PEAKS = {.copy_gbps = 10, .bf16_tflops = 0.25, .fp8_tflops = 0.5};

/* Parses the one JSON line f holds. */
static json_t *read_line(FILE *f)
{
    char line[16384];
    rewind(f);
    assert_non_null(fgets(line, sizeof line, f));
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    if (!o)
        fail_msg("bench JSON does not parse: %s: %s", je.text, line);
    return o;
}

static void check_split(const double fam_ms[FAM_COUNT], double total_ms, const fwd_op_time *ops, int n_ops)
{
    assert_true(total_ms > 0);
    /* families are consecutive intervals of the same timeline */
    assert_true(fabs(sum(fam_ms) - total_ms) <= 1e-6 * total_ms + 1e-6);
    double op_total = 0;
    for (int i = 0; i < n_ops; i++) {
        assert_true(ops[i].calls > 0);
        if (i)
            assert_true(ops[i].ms <= ops[i - 1].ms); /* slowest first */
        op_total += ops[i].ms;
    }
    assert_true(fabs(op_total - total_ms) <= 1e-6 * total_ms + 1e-6);
}

static void test_bench_prefill(void **state)
{
    v4_backend *be;
    v4_model *m = open_tiny(&be);
    bench_prefill_result r;
    v4_err err;
    if (bench_prefill(m, 100, 32, &RATE_PEAKS, &r, &err))
        fail_msg("bench_prefill: %s", err.msg);
    assert_int_equal(r.tokens, 100);
    assert_true(r.seconds > 0 && r.tok_s > 0);
    assert_true(fabs(r.tok_s * r.seconds - 100) <= 1e-9 * 100);
    double flops = 0;
    for (int pos = 0; pos < 100; pos += 32) { /* chunks of 32, 32, 32, 4 */
        const int n = 100 - pos < 32 ? 100 - pos : 32;
        flops += roof_prefill_chunk(&m->cfg, n, pos, roof_expected_experts(m->cfg.n_experts, m->cfg.n_active, n),
                                    m->be->kv_elem_bytes)
                     .flops;
    }
    assert_true(fabs(sum(r.fam_flops) - flops) <= 1e-9 * flops);
    assert_true(fabs(r.tflops * 1e12 * r.seconds - flops) <= 1e-6 * flops);
    assert_true(fabs(r.flop_ratio - r.tflops / 0.5) <= 1e-12 * r.flop_ratio);
    assert_true(fabs(r.bf16_ratio - r.tflops / 0.25) <= 1e-12 * r.bf16_ratio);
    check_split(r.fam_ms, r.prof_ms, r.ops, r.n_ops);
    /* the profiled pass ran every chunk: 4 steps of 5 layers' attention */
    for (int i = 0; i < r.n_ops; i++)
        if (strcmp(r.ops[i].name, "attention") == 0)
            assert_int_equal(r.ops[i].calls, 4 * m->cfg.n_layers);

    FILE *f = tmpfile();
    bench_write_prefill_json(f, "cpu", &m->cfg, &RATE_PEAKS, &r);
    json_t *o = read_line(f);
    assert_true(json_real_value(json_object_get(o, "fp8_tflops")) == 0.5);
    assert_true(json_real_value(json_object_get(o, "bf16_tflops")) == 0.25);
    assert_true(fabs(json_real_value(json_object_get(o, "bf16_flop_ratio")) - r.bf16_ratio) <= 1e-5 * r.bf16_ratio);
    assert_true(fabs(json_real_value(json_object_get(o, "fp8_flop_ratio")) - r.flop_ratio) <= 1e-5 * r.flop_ratio);
    assert_true(fabs(json_real_value(json_object_get(o, "tok_s")) - r.tok_s) <= 1e-5 * r.tok_s);
    assert_int_equal(json_object_size(json_object_get(o, "split_ms")), FAM_COUNT);
    assert_int_equal(json_object_size(json_object_get(o, "op_ms")), r.n_ops);
    json_decref(o);
    fclose(f);
    model_close(m);
    backend_cpu_destroy(be);
}

static void test_bench_decode(void **state)
{
    v4_backend *be;
    v4_model *m = open_tiny(&be);
    bench_opts o = {.input_len = 40, .output_len = 3, .prefill_chunk = 64, .full_layers = 43, .n_runs = 2, .seed = 3};
    bench_session *s;
    v4_err err;
    if (bench_session_open(m, &o, 3, &s, &err))
        fail_msg("bench_session_open: %s", err.msg);
    bench_result r[2];
    const int conc[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        if (bench_decode(s, conc[k], &CPU_PEAKS, &r[k], &err))
            fail_msg("bench_decode %d: %s", conc[k], err.msg);
        assert_int_equal(r[k].o.concurrency, conc[k]);
        assert_true(r[k].step_ms_mean > 0);
        assert_true(fabs(r[k].decode_tok_s - conc[k] / (r[k].step_ms_mean * 1e-3)) <= 1e-9 * r[k].decode_tok_s);
        assert_true(r[k].itl_ms_p50 <= r[k].itl_ms_p99);
        assert_true(fabs(r[k].roof_ms - r[k].need.total / 10e9 * 1e3) <= 1e-9 * r[k].roof_ms);
        assert_true(fabs(r[k].roof_ratio - r[k].roof_ms / r[k].step_ms_mean) <= 1e-9);
        check_split(r[k].fam_ms, r[k].prof_ms, r[k].ops, r[k].n_ops);
        /* the head runs once a step: the projection adds layers only */
        assert_true(r[k].proj_step_ms > r[k].step_ms_mean);
    }
    /* three sequences choose at least as many distinct experts as one */
    assert_true(r[1].experts >= r[0].experts && r[1].need.moe_weights >= r[0].need.moe_weights);
    FILE *f = tmpfile();
    bench_write_json(f, "cpu", &m->cfg, &CPU_PEAKS, &r[1]);
    json_t *j = read_line(f);
    assert_int_equal(json_integer_value(json_object_get(j, "concurrency")), 3);
    assert_true(json_is_null(json_object_get(j, "bf16_tflops")));
    assert_true(fabs(json_real_value(json_object_get(j, "decode_tok_s")) - r[1].decode_tok_s) <=
                1e-5 * r[1].decode_tok_s);
    assert_true(fabs(json_real_value(json_object_get(json_object_get(j, "bytes"), "total")) - r[1].need.total) <=
                1e-5 * r[1].need.total);
    json_decref(j);
    fclose(f);
    bench_session_free(s);
    model_close(m);
    backend_cpu_destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roofline_weights_tiny),  cmocka_unit_test(test_roofline_weights_rates),
        cmocka_unit_test(test_roofline_weights_flash), cmocka_unit_test(test_roofline_flops_split),
        cmocka_unit_test(test_bench_prefill),          cmocka_unit_test(test_bench_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
