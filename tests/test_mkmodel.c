/* The random checkpoint generator (src/tools/mkmodel.*, `v4serve mkmodel`):
 * tiny and demo checkpoints load through cfg_load + st_open + weights_bind,
 * match the golden tiny model's layout tensor for tensor, hold healthy
 * values (no NaN codes, effective std ~ 1/sqrt(in), varied block scales),
 * are byte-identical for a seed whatever the thread count and differ for
 * another seed; the flash preset plans the real model; the command reports
 * bad options as messages. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "testutil.h"
#include "tools/mk_internal.h"
#include "tools/mkmodel.h"
#include "tu_ckpt.h"
#include "tu_run.h"

typedef struct bound {
    v4_config c;
    st_archive *a;
    v4_weights w;
} bound;

static void load(const char *dir, bound *b)
{
    v4_err err;
    if (cfg_load(dir, &b->c, &err) || st_open(dir, &b->a, &err) || weights_bind(&b->c, b->a, &b->w, &err))
        fail_msg("%s: %s", dir, err.msg);
}

static void unload(bound *b)
{
    weights_free(&b->w);
    st_close(b->a);
}

static void write_model(const char *preset, int layers, uint64_t seed, int threads, uint64_t shard_bytes,
                        const char *dir, mk_summary *s)
{
    mk_options o = {.preset = preset, .layers = layers, .seed = seed, .out_dir = dir, .threads = threads,
                    .shard_bytes = shard_bytes};
    v4_err err;
    if (mk_write(&o, s, &err))
        fail_msg("mkmodel %s: %s", preset, err.msg);
}

static void test_tiny_matches_golden_layout(void **state)
{
    (void)state;
    char parent[256], dir[300];
    snprintf(parent, sizeof parent, "%s", tu_tmpdir());
    snprintf(dir, sizeof dir, "%s/m", parent); /* a folder that does not exist yet */
    mk_summary s;
    write_model("tiny", 0, 1, 0, 3000000, dir, &s);
    bound m, g;
    load(dir, &m);
    char gdir[4096];
    snprintf(gdir, sizeof gdir, "%s/model", tu_golden("tiny"));
    load(gdir, &g);
    /* the config: every field the engine reads */
    assert_int_equal(m.c.vocab_size, g.c.vocab_size);
    assert_int_equal(m.c.dim, g.c.dim);
    assert_int_equal(m.c.n_layers, g.c.n_layers);
    assert_int_equal(m.c.n_heads, g.c.n_heads);
    assert_int_equal(m.c.head_dim, g.c.head_dim);
    assert_int_equal(m.c.rope_dim, g.c.rope_dim);
    assert_int_equal(m.c.q_lora_rank, g.c.q_lora_rank);
    assert_int_equal(m.c.o_groups, g.c.o_groups);
    assert_int_equal(m.c.o_lora_rank, g.c.o_lora_rank);
    assert_int_equal(m.c.n_experts, g.c.n_experts);
    assert_int_equal(m.c.n_active, g.c.n_active);
    assert_int_equal(m.c.moe_inter, g.c.moe_inter);
    assert_int_equal(m.c.n_hash_layers, g.c.n_hash_layers);
    assert_int_equal(m.c.window, g.c.window);
    assert_int_equal(m.c.index_n_heads, g.c.index_n_heads);
    assert_int_equal(m.c.index_head_dim, g.c.index_head_dim);
    assert_int_equal(m.c.index_topk, g.c.index_topk);
    assert_int_equal(m.c.n_mtp_layers, g.c.n_mtp_layers);
    assert_true(m.c.swiglu_limit == g.c.swiglu_limit && m.c.routed_scale == g.c.routed_scale);
    assert_true(m.c.yarn.enabled == g.c.yarn.enabled);
    assert_memory_equal(m.c.compress_ratio, g.c.compress_ratio, sizeof m.c.compress_ratio);
    /* the tensors: same names, dtypes and shapes as the independently made golden checkpoint */
    assert_int_equal(st_count(m.a), st_count(g.a));
    assert_int_equal(s.tensors, st_count(g.a));
    uint64_t total = 0;
    for (size_t i = 0; i < st_count(g.a); i++) {
        const st_tensor *gt = st_at(g.a, i), *mt = st_find(m.a, gt->name);
        if (!mt)
            fail_msg("generated checkpoint lacks '%s'", gt->name);
        assert_int_equal(mt->dtype, gt->dtype);
        assert_int_equal(mt->ndim, gt->ndim);
        assert_memory_equal(mt->shape, gt->shape, sizeof gt->shape);
        total += gt->nbytes;
    }
    assert_int_equal(s.bytes, total);
    /* several shards of at most 3 MB, named like the official ones, and an index that says so */
    assert_true(s.shards >= 3);
    char p[512];
    uint64_t sum = 0;
    for (int i = 0; i < s.shards; i++) {
        snprintf(p, sizeof p, "%s/model-%05d-of-%05d.safetensors", dir, i + 1, s.shards);
        st_archive *one;
        v4_err err;
        if (st_open(p, &one, &err))
            fail_msg("%s", err.msg);
        uint64_t bytes = 0;
        for (size_t k = 0; k < st_count(one); k++)
            bytes += st_at(one, k)->nbytes;
        assert_true(bytes <= 3000000);
        sum += bytes;
        st_close(one);
    }
    assert_int_equal(sum, total);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    json_error_t je;
    json_t *idx = json_load_file(p, 0, &je);
    assert_non_null(idx);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), total);
    assert_int_equal(json_object_size(json_object_get(idx, "weight_map")), st_count(g.a));
    json_decref(idx);
    unload(&m);
    unload(&g);
    tc_rmtree(parent);
}

/* ---- value checks ---- */

typedef struct stats {
    double sum, sum2;
    int64_t n;
} stats;

static void add(stats *s, double v)
{
    s->sum += v;
    s->sum2 += v * v;
    s->n++;
}

static double mean(const stats *s) { return s->sum / (double)s->n; }
static double std_of(const stats *s) { return sqrt(s->sum2 / (double)s->n - mean(s) * mean(s)); }

static void expect_near(double got, double want, double rel, const char *what)
{
    if (fabs(got - want) > rel * fabs(want))
        fail_msg("%s: %g, expected %g (+-%g%%)", what, got, want, rel * 100);
}

/* Effective values of a block-quantized weight, with the codes and scales
 * checked on the way. */
static stats quantized_stats(const v4_mat *m, int *distinct_scales)
{
    stats s = {0};
    const uint8_t *q = m->data;
    int seen[256] = {0};
    *distinct_scales = 0;
    for (size_t i = 0; i < mat_scale_bytes(m); i++) {
        if (m->scale[i] == 0xFF || m->scale[i] == 0)
            fail_msg("%s: scale byte 0x%02X", m->name, m->scale[i]);
        *distinct_scales += !seen[m->scale[i]]++;
    }
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t c = 0; c < m->cols; c++) {
            double v;
            if (m->fmt == WF_FP8) {
                uint8_t code = q[r * m->cols + c];
                if ((code & 0x7F) == 0x7F)
                    fail_msg("%s: NaN code at [%lld, %lld]", m->name, (long long)r, (long long)c);
                uint8_t e = m->scale[(r / 128) * ((m->cols + 127) / 128) + c / 128];
                v = dt_e4m3_to_f32(code) * ldexp(1.0, e - 127);
            } else {
                uint8_t byte = q[r * (m->cols / 2) + c / 2];
                uint8_t e = m->scale[r * (m->cols / 32) + c / 32];
                v = dt_e2m1_to_f32(c % 2 ? byte >> 4 : byte & 15) * ldexp(1.0, e - 127);
            }
            add(&s, v);
        }
    return s;
}

static stats plain_stats(const v4_mat *m)
{
    stats s = {0};
    int64_t n = m->rows * m->cols;
    float *f = malloc((size_t)n * sizeof *f);
    assert_int_equal(dt_to_f32(m->dtype, m->data, f, n), 0);
    for (int64_t i = 0; i < n; i++) {
        assert_true(isfinite(f[i]));
        add(&s, f[i]);
    }
    free(f);
    return s;
}

typedef struct qcount {
    int mats;
    int fp8_varied; /* FP8 weights whose blocks use more than one scale */
} qcount;

static int check_quantized(v4_mat *m, void *ctx, v4_err *err)
{
    (void)err;
    qcount *count = ctx;
    if (m->fmt != WF_FP8 && m->fmt != WF_MXFP4)
        return 0;
    int distinct;
    stats s = quantized_stats(m, &distinct);
    expect_near(std_of(&s), 1.0 / sqrt((double)m->cols), 0.06, m->name);
    if (fabs(mean(&s)) > 0.1 * std_of(&s))
        fail_msg("%s: mean %g", m->name, mean(&s));
    /* the block or group scales vary (FP8: x0.5/x1/x2, MXFP4: x1/x2) */
    if (m->fmt == WF_MXFP4)
        assert_true(distinct == 2);
    else
        count->fp8_varied += distinct > 1;
    assert_true(distinct <= (m->fmt == WF_FP8 ? 3 : 2));
    count->mats++;
    return 0;
}

static void test_values_are_healthy(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir();
    mk_summary s;
    write_model("tiny", 0, 5, 2, 0, dir, &s);
    assert_int_equal(s.shards, 1);
    bound m;
    load(dir, &m);
    qcount n = {0};
    v4_err err;
    assert_int_equal(weights_visit(&m.w, check_quantized, &n, &err), 0);
    assert_int_equal(n.mats, 5 * (8 + 3 * 16) + 2 /* indexer wq_b of the CSA layers */);
    assert_true(n.fp8_varied > 20); /* of 42 FP8 weights, most with 2-4 blocks */

    stats e = plain_stats(&m.w.embed);
    expect_near(std_of(&e), 1.0, 0.03, "embed std");
    stats h = plain_stats(&m.w.head);
    expect_near(std_of(&h), 1.0 / 16, 0.03, "head std");
    stats nw = plain_stats(&m.w.layers[2].attn_norm);
    expect_near(mean(&nw), 1.0, 0.02, "norm mean");
    stats sink = plain_stats(&m.w.layers[1].attn_sink);
    assert_true(fabs(mean(&sink)) < 3);
    stats ape = plain_stats(&m.w.layers[1].comp.ape);
    expect_near(std_of(&ape), 0.1, 0.1, "ape std");
    stats fn = plain_stats(&m.w.layers[0].hc_attn_fn);
    expect_near(std_of(&fn), 1e-2 / 32, 0.05, "hc_attn_fn std");
    stats sc = plain_stats(&m.w.layers[0].hc_ffn_scale);
    expect_near(mean(&sc), 1.0, 0.2, "hc scale mean");
    stats gate = plain_stats(&m.w.layers[3].gate_w);
    expect_near(std_of(&gate), 1.0 / 16, 0.05, "gate weight std");
    stats bias = plain_stats(&m.w.layers[3].gate_bias);
    assert_true(std_of(&bias) < 0.05);
    stats comp = plain_stats(&m.w.layers[2].comp.wkv);
    expect_near(std_of(&comp), 1.0 / 16, 0.05, "compressor wkv std");

    /* tid2eid: k distinct ids in [0, E) per token, all experts used */
    for (int L = 0; L < 2; L++) {
        const v4_mat *t = &m.w.layers[L].tid2eid;
        const int32_t *ids = t->data;
        int used[16] = {0};
        for (int64_t v = 0; v < t->rows; v++)
            for (int j = 0; j < 4; j++) {
                int32_t id = ids[v * 4 + j];
                assert_true(id >= 0 && id < 16);
                used[id]++;
                for (int k = 0; k < j; k++)
                    assert_true(ids[v * 4 + k] != id);
            }
        for (int x = 0; x < 16; x++)
            assert_true(used[x] > 1024 * 4 / 16 / 2);
    }
    /* every FP8 weight converts to the fnuz dialect: no NaN codes, scales in range */
    assert_int_equal(weights_convert_fp8(&m.w, m.a, DT_F8_E4M3FNUZ, &err), 0);
    unload(&m);
    tc_rmtree(dir);
}

/* ---- determinism ---- */

static int same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = tc_read_file(a, &la), *y = tc_read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void test_deterministic(void **state)
{
    (void)state;
    char a[256], b[256], c[256];
    snprintf(a, sizeof a, "%s", tu_tmpdir());
    snprintf(b, sizeof b, "%s", tu_tmpdir());
    snprintf(c, sizeof c, "%s", tu_tmpdir());
    mk_summary s;
    write_model("tiny", 0, 7, 1, 4000000, a, &s);
    write_model("tiny", 0, 7, 3, 4000000, b, &s);
    write_model("tiny", 0, 8, 2, 4000000, c, &s);
    assert_int_equal(s.shards, 3);
    const char *files[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                           "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    assert_int_equal(count_files(a), 5);
    for (int i = 0; i < 5; i++) {
        char pa[512], pb[512], pc[512];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
        if (!same_file(pa, pb))
            fail_msg("%s differs between 1 and 3 threads", files[i]);
        /* another seed: same config and index, other tensor bytes */
        assert_int_equal(same_file(pa, pc), i < 2);
    }
    /* a tensor keeps its bytes when the rest of the model changes */
    char d[256];
    snprintf(d, sizeof d, "%s", tu_tmpdir());
    write_model("tiny", 2, 7, 2, 0, d, &s);
    st_archive *x, *y;
    v4_err err;
    assert_int_equal(st_open(a, &x, &err), 0);
    assert_int_equal(st_open(d, &y, &err), 0);
    const char *names[] = {"layers.1.attn.wq_a.weight", "layers.1.attn.wq_a.scale", "layers.0.ffn.experts.3.w2.weight",
                           "layers.0.ffn.experts.3.w2.scale", "embed.weight", "layers.1.ffn.gate.tid2eid"};
    for (int i = 0; i < 6; i++) {
        const st_tensor *tx = st_find(x, names[i]), *ty = st_find(y, names[i]);
        assert_non_null(tx);
        assert_non_null(ty);
        assert_int_equal(tx->nbytes, ty->nbytes);
        assert_memory_equal(tx->data, ty->data, tx->nbytes);
    }
    /* and differs from the same tensor under another name */
    assert_memory_not_equal(st_find(x, "layers.0.attn.wq_a.weight")->data,
                            st_find(x, "layers.1.attn.wq_a.weight")->data, 128 * 256);
    st_close(x);
    st_close(y);
    tc_rmtree(a);
    tc_rmtree(b);
    tc_rmtree(c);
    tc_rmtree(d);
}

/* ---- presets ---- */

static void test_demo_with_tokenizer(void **state)
{
    (void)state;
    char tok[256], dir[256];
    snprintf(tok, sizeof tok, "%s", tu_tmpdir());
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    char p[512];
    const char *tj = "{\"model\": {\"type\": \"BPE\"}}", *tc = "{\"bos_token\": \"<x>\"}";
    snprintf(p, sizeof p, "%s/tokenizer.json", tok);
    assert_int_equal(tc_write_file(p, tj, strlen(tj)), 0);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tok);
    assert_int_equal(tc_write_file(p, tc, strlen(tc)), 0);
    mk_options o = {.preset = "demo", .seed = 3, .out_dir = dir, .tokenizer_dir = tok};
    mk_summary s;
    v4_err err;
    if (mk_write(&o, &s, &err))
        fail_msg("%s", err.msg);
    bound m;
    load(dir, &m);
    assert_int_equal(m.c.vocab_size, 129280);
    assert_int_equal(m.c.dim, 256);
    assert_int_equal(m.c.n_heads, 4);
    assert_int_equal(m.c.head_dim, 128);
    assert_int_equal(m.c.rope_dim, 32);
    assert_int_equal(m.c.q_lora_rank, 128);
    assert_int_equal(m.c.o_groups, 2);
    assert_int_equal(m.c.o_lora_rank, 128);
    assert_int_equal(m.c.n_experts, 16);
    assert_int_equal(m.c.n_active, 4);
    assert_int_equal(m.c.moe_inter, 128);
    assert_int_equal(m.c.index_n_heads, 4);
    assert_int_equal(m.c.index_head_dim, 64);
    assert_int_equal(m.c.index_topk, 8);
    assert_int_equal(m.c.window, 32);
    assert_int_equal(m.c.n_layers, 4);
    assert_int_equal(m.c.n_hash_layers, 1);
    assert_true(m.c.yarn.enabled && m.c.yarn.factor == 16 && m.c.yarn.original_max_pos == 65536 &&
                m.c.yarn.beta_fast == 32 && m.c.yarn.beta_slow == 1);
    assert_true(m.c.compress_rope_theta == 160000 && m.c.rope_theta == 10000);
    const layer_kind_t kinds[4] = {LAYER_SLIDING, LAYER_CSA, LAYER_HCA, LAYER_SLIDING};
    for (int L = 0; L < 4; L++)
        assert_int_equal(m.w.layers[L].kind, kinds[L]);
    assert_int_equal(m.w.embed.rows, 129280);
    assert_int_equal(m.w.layers[0].tid2eid.rows, 129280);
    unload(&m);
    char q[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", tok);
    snprintf(q, sizeof q, "%s/tokenizer.json", dir);
    assert_true(same_file(p, q));
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tok);
    snprintf(q, sizeof q, "%s/tokenizer_config.json", dir);
    assert_true(same_file(p, q));

    /* a tokenizer folder without tokenizer.json is refused before any writing */
    snprintf(p, sizeof p, "%s/tokenizer.json", tok);
    assert_int_equal(remove(p), 0);
    char parent[256], dir2[300];
    snprintf(parent, sizeof parent, "%s", tu_tmpdir());
    snprintf(dir2, sizeof dir2, "%s/never", parent);
    o.out_dir = dir2;
    assert_int_equal(mk_write(&o, &s, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    struct stat sb;
    assert_int_equal(stat(dir2, &sb), -1);
    tc_rmtree(parent);
    tc_rmtree(tok);
    tc_rmtree(dir);
}

static void parse_config(const mk_options *o, v4_config *c, json_t **j)
{
    char *text;
    v4_err err;
    if (mk_config_json(o, &text, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(cfg_parse(text, strlen(text), "flash", c, &err), 0);
    json_error_t je;
    *j = json_loads(text, 0, &je);
    assert_non_null(*j);
    free(text);
}

static void test_flash_plan(void **state)
{
    (void)state;
    mk_options o = {.preset = "flash", .seed = 1};
    v4_config c;
    json_t *j;
    parse_config(&o, &c, &j);
    assert_int_equal(c.vocab_size, 129280);
    assert_int_equal(c.dim, 4096);
    assert_int_equal(c.n_layers, 43);
    assert_int_equal(c.n_heads, 64);
    assert_int_equal(c.head_dim, 512);
    assert_int_equal(c.rope_dim, 64);
    assert_int_equal(c.q_lora_rank, 1024);
    assert_int_equal(c.o_groups, 8);
    assert_int_equal(c.o_lora_rank, 1024);
    assert_int_equal(c.n_experts, 256);
    assert_int_equal(c.n_active, 6);
    assert_int_equal(c.moe_inter, 2048);
    assert_int_equal(c.n_hash_layers, 3);
    assert_int_equal(c.window, 128);
    assert_int_equal(c.index_n_heads, 64);
    assert_int_equal(c.index_head_dim, 128);
    assert_int_equal(c.index_topk, 512);
    assert_int_equal(c.n_mtp_layers, 1);
    assert_true(c.swiglu_limit == 10.0 && c.yarn.enabled && c.yarn.factor == 16);
    json_t *r = json_object_get(j, "compress_ratios");
    assert_int_equal(json_array_size(r), 44);
    for (int l = 0; l < 44; l++) {
        int want = (l < 2 || l == 43) ? 0 : l % 2 == 0 ? 4 : 128;
        assert_int_equal(json_integer_value(json_array_get(r, (size_t)l)), want);
    }
    json_decref(j);
    mk_summary s;
    v4_err err;
    assert_int_equal(mk_plan_size(&o, &s, &err), 0);
    assert_true(s.bytes > 150e9 && s.bytes < 160e9); /* MODEL.md section 5: about 155 GB */
    assert_true(s.shards >= 39 && s.shards <= 45);
    assert_int_equal(s.layers, 43);

    /* --layers keeps the schedule's head and the MTP entry; hash layers capped */
    o.layers = 2;
    parse_config(&o, &c, &j);
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.n_hash_layers, 2);
    assert_int_equal(json_array_size(json_object_get(j, "compress_ratios")), 3);
    json_decref(j);
    o.layers = 5;
    o.experts = 4;
    parse_config(&o, &c, &j);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.n_hash_layers, 3);
    assert_int_equal(cfg_layer_kind(&c, 4), LAYER_CSA);
    assert_int_equal(cfg_layer_ratio(&c, 3), 128);
    assert_int_equal(c.n_experts, 4);
    assert_int_equal(c.n_active, 4); /* top-k capped */
    json_decref(j);
    /* one Flash layer: embed + head + a sliding hash-routed layer */
    o = (mk_options){.preset = "flash", .layers = 1};
    assert_int_equal(mk_plan_size(&o, &s, &err), 0);
    assert_true(s.bytes > 5.5e9 && s.bytes < 5.9e9);
    assert_int_equal(s.shards, 2);

    /* refused options */
    o = (mk_options){.preset = "huge"};
    assert_int_equal(mk_plan_size(&o, &s, &err), -1);
    assert_non_null(strstr(err.msg, "unknown preset 'huge'"));
    o = (mk_options){.preset = "tiny", .layers = 6};
    assert_int_equal(mk_plan_size(&o, &s, &err), -1);
    assert_non_null(strstr(err.msg, "--layers 6"));
    o = (mk_options){.preset = "flash", .layers = 44};
    assert_int_equal(mk_plan_size(&o, &s, &err), -1);
    o = (mk_options){.preset = "tiny", .experts = 70000};
    assert_int_equal(mk_plan_size(&o, &s, &err), -1);
    assert_non_null(strstr(err.msg, "--experts"));
}

/* The full-size weights keep std 1/sqrt(in) too: rows of a few Flash
 * tensors, generated without writing the model. */
static void test_flash_magnitudes(void **state)
{
    (void)state;
    mk_options o = {.preset = "flash", .layers = 3, .experts = 2, .seed = 9};
    char *text;
    v4_err err;
    assert_int_equal(mk_config_json(&o, &text, &err), 0);
    v4_config c;
    assert_int_equal(cfg_parse(text, strlen(text), "flash", &c, &err), 0);
    free(text);
    mk_plan p;
    assert_int_equal(mk_plan_build(&c, 9, &p, &err), 0);
    const char *names[] = {"layers.2.attn.wq_a", "layers.2.attn.wq_b", "layers.2.attn.wo_a", "layers.2.attn.wo_b",
                           "layers.2.attn.indexer.wq_b", "layers.2.ffn.shared_experts.w2",
                           "layers.2.ffn.experts.1.w1", "layers.2.ffn.experts.1.w2"};
    for (int k = 0; k < 8; k++) {
        char wn[128], sn[128];
        snprintf(wn, sizeof wn, "%s.weight", names[k]);
        snprintf(sn, sizeof sn, "%s.scale", names[k]);
        const mk_tensor *w = NULL, *sc = NULL;
        for (size_t i = 0; i < p.n; i++) {
            if (strcmp(p.t[i].name, wn) == 0)
                w = &p.t[i];
            if (strcmp(p.t[i].name, sn) == 0)
                sc = &p.t[i];
        }
        assert_non_null(w);
        assert_non_null(sc);
        const bool fp4 = w->gen == MK_FP4_W;
        const int64_t rows = 128, in = w->in;
        uint8_t *q = malloc((size_t)rows * w->row_bytes), *e = malloc((size_t)rows * sc->row_bytes);
        mk_gen_rows(&p, w, 0, rows, q);
        mk_gen_rows(&p, sc, 0, fp4 ? rows : 1, e);
        v4_mat m = {.fmt = fp4 ? WF_MXFP4 : WF_FP8, .dtype = fp4 ? DT_MXFP4 : DT_F8_E4M3, .rows = rows,
                    .cols = in, .data = q, .scale = e, .name = wn};
        int distinct;
        stats st = quantized_stats(&m, &distinct);
        expect_near(std_of(&st), 1.0 / sqrt((double)in), 0.06, wn);
        assert_true(distinct >= 2);
        free(q);
        free(e);
    }
    mk_plan_free(&p);
}

/* ---- the command ---- */

static void expect_cli_error(const char *const *args, int status, const char *want)
{
    tr_result r;
    assert_int_equal(tr_run(args, &r), 0);
    if (!r.exited)
        fail_msg("killed by signal %d: %s", r.status, r.err);
    if (r.status != status || !strstr(r.err, want))
        fail_msg("status %d (want %d), stderr lacks '%s': %s", r.status, status, want, r.err);
    tr_free(&r);
}

static void test_cli(void **state)
{
    (void)state;
    char parent[256], dir[300];
    snprintf(parent, sizeof parent, "%s", tu_tmpdir());
    snprintf(dir, sizeof dir, "%s/out", parent);
    tr_result r;
    const char *ok[] = {"mkmodel", "--out", dir, "--preset", "tiny", "--seed", "11", "--threads", "2", NULL};
    assert_int_equal(tr_run(ok, &r), 0);
    if (!r.exited || r.status != 0)
        fail_msg("mkmodel failed: %s", r.err);
    assert_non_null(strstr(r.out, "657 tensors"));
    tr_free(&r);
    const char *insp[] = {"inspect", "--model", dir, NULL};
    assert_int_equal(tr_run(insp, &r), 0);
    assert_true(r.exited && r.status == 0);
    tr_layer l[8];
    assert_int_equal(tr_parse_schedule(r.out, l, 8), 5);
    const int ratios[5] = {0, 4, 16, 4, 0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(l[i].ratio, ratios[i]);
        assert_int_equal(l[i].window, 32);
        assert_int_equal(l[i].hashed, i < 2);
    }
    assert_string_equal(l[1].kind, "CSA");
    assert_string_equal(l[2].kind, "HCA");
    assert_non_null(strstr(r.out, "tensors: 657"));
    tr_free(&r);

    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "huge", NULL}, 2, "unknown preset 'huge'");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--layers", "abc", NULL}, 2,
                     "--layers 'abc'");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--layers", "0", NULL}, 2,
                     "--layers '0'");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--layers", "9", NULL}, 2,
                     "--layers 9");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--experts", "-3", NULL}, 2,
                     "--experts '-3'");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--seed", "12x", NULL}, 2,
                     "--seed '12x'");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--seed", "99999999999999999999999",
                                      NULL}, 2, "--seed");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--threads", "", NULL}, 2,
                     "--threads");
    expect_cli_error((const char *[]){"mkmodel", "--preset", "tiny", NULL}, 2, "--out");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, NULL}, 2, "--preset");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", NULL}, 2, "--preset");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--bogus", "1", NULL}, 2,
                     "--bogus");
    /* an output folder that cannot be made */
    expect_cli_error((const char *[]){"mkmodel", "--out", "/dev/null/model", "--preset", "tiny", NULL}, 1,
                     "/dev/null");
    char file[340];
    snprintf(file, sizeof file, "%s/config.json", dir);
    expect_cli_error((const char *[]){"mkmodel", "--out", file, "--preset", "tiny", NULL}, 1, "not a directory");
    expect_cli_error((const char *[]){"mkmodel", "--out", dir, "--preset", "tiny", "--tokenizer", "/nonexistent",
                                      NULL}, 1, "/nonexistent/tokenizer.json");
    tc_rmtree(parent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_matches_golden_layout),
        cmocka_unit_test(test_values_are_healthy),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_demo_with_tokenizer),
        cmocka_unit_test(test_flash_plan),
        cmocka_unit_test(test_flash_magnitudes),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
