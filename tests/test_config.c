/* config.json parsing (src/model/config.c): both golden configs, the real
 * model's config written from MODEL.md section 1, and the errors: missing
 * fields, wrong types, inconsistent dimensions, wrong compress_ratios
 * counts, missing or malformed files. Every error message names the field. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "testutil.h"
#include "tu_ckpt.h"

/* The official config of DeepSeek-V4-Flash as MODEL.md section 1 gives it. */
static json_t *real_config(void)
{
    json_t *ratios = json_array();
    for (int i = 0; i < 44; i++) {
        int r = (i < 2 || i == 43) ? 0 : (i % 2 == 0 ? 4 : 128);
        json_array_append_new(ratios, json_integer(r));
    }
    json_t *c = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
        " s:s, s:s, s:b, s:f, s:I, s:f, s:I, s:I, s:f, s:f, s:I, s:f, s:f,"
        " s:{s:s, s:f, s:I, s:f, s:f}, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
        " s:{s:s, s:s, s:s, s:[I, I]}, s:o}",
        "vocab_size", (json_int_t)129280, "hidden_size", (json_int_t)4096, "num_hidden_layers", (json_int_t)43,
        "num_attention_heads", (json_int_t)64, "num_key_value_heads", (json_int_t)1, "head_dim", (json_int_t)512,
        "qk_rope_head_dim", (json_int_t)64, "q_lora_rank", (json_int_t)1024, "o_groups", (json_int_t)8,
        "o_lora_rank", (json_int_t)1024, "n_routed_experts", (json_int_t)256, "n_shared_experts", (json_int_t)1,
        "num_experts_per_tok", (json_int_t)6, "moe_intermediate_size", (json_int_t)2048,
        "scoring_func", "sqrtsoftplus", "topk_method", "noaux_tc", "norm_topk_prob", 1,
        "routed_scaling_factor", 1.5, "num_hash_layers", (json_int_t)3, "swiglu_limit", 10.0,
        "hc_mult", (json_int_t)4, "hc_sinkhorn_iters", (json_int_t)20, "hc_eps", 1e-6, "rms_norm_eps", 1e-6,
        "sliding_window", (json_int_t)128, "rope_theta", 10000.0, "compress_rope_theta", 160000.0,
        "rope_scaling", "type", "yarn", "factor", 16.0, "original_max_position_embeddings", (json_int_t)65536,
        "beta_fast", 32.0, "beta_slow", 1.0,
        "index_n_heads", (json_int_t)64, "index_head_dim", (json_int_t)128, "index_topk", (json_int_t)512,
        "max_position_embeddings", (json_int_t)1048576, "num_nextn_predict_layers", (json_int_t)1,
        "bos_token_id", (json_int_t)0, "eos_token_id", (json_int_t)1,
        "quantization_config", "quant_method", "fp8", "fmt", "e4m3", "scale_fmt", "ue8m0", "weight_block_size",
        (json_int_t)128, (json_int_t)128, "compress_ratios", ratios);
    assert_non_null(c);
    return c;
}

static int parse_json(json_t *j, v4_config *c, v4_err *err)
{
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    int rc = cfg_parse(text, strlen(text), "test/config.json", c, err);
    free(text);
    return rc;
}

/* Parsing must fail with a message naming the source and containing `want`. */
static void expect_error(json_t *j, const char *want)
{
    v4_config c;
    v4_err err = {{0}};
    assert_int_equal(parse_json(j, &c, &err), -1);
    if (!strstr(err.msg, "test/config.json") || !strstr(err.msg, want))
        fail_msg("expected '%s' in: %s", want, err.msg);
    json_decref(j);
}

static void test_golden_tiny(void **state)
{
    (void)state;
    v4_config c;
    v4_err err;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_golden("tiny"));
    if (cfg_load(dir, &c, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(c.vocab_size, 1024);
    assert_int_equal(c.dim, 256);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rope_dim, 32);
    assert_int_equal(c.q_lora_rank, 128);
    assert_int_equal(c.o_groups, 2);
    assert_int_equal(c.o_lora_rank, 128);
    assert_int_equal(c.n_experts, 16);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.n_active, 4);
    assert_int_equal(c.moe_inter, 128);
    assert_int_equal(c.n_hash_layers, 2);
    assert_int_equal(c.hc_mult, 4);
    assert_int_equal(c.hc_sinkhorn_iters, 20);
    assert_int_equal(c.window, 32);
    assert_int_equal(c.index_n_heads, 4);
    assert_int_equal(c.index_head_dim, 64);
    assert_int_equal(c.index_topk, 8);
    assert_int_equal(c.max_pos, 1048576);
    assert_int_equal(c.n_mtp_layers, 0);
    assert_int_equal(c.bos_id, 0);
    assert_int_equal(c.eos_id, 1);
    assert_true(c.routed_scale == 1.5);
    assert_true(c.swiglu_limit == 1.0);
    assert_true(c.hc_eps == 1e-6);
    assert_true(c.rms_eps == 1e-6);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.compress_rope_theta == 160000.0);
    assert_true(c.norm_topk_prob);
    assert_false(c.yarn.enabled);
    assert_int_equal(c.weight_block[0], 128);
    assert_int_equal(c.weight_block[1], 128);
    const int ratios[5] = {0, 4, 16, 4, 0};
    const layer_kind_t kinds[5] = {LAYER_SLIDING, LAYER_CSA, LAYER_HCA, LAYER_CSA, LAYER_SLIDING};
    for (int l = 0; l < 5; l++) {
        assert_int_equal(cfg_layer_ratio(&c, l), ratios[l]);
        assert_int_equal(cfg_layer_kind(&c, l), kinds[l]);
        assert_int_equal(cfg_layer_hashed(&c, l), l < 2);
    }
    assert_string_equal(cfg_layer_kind_name(LAYER_SLIDING), "sliding");
    assert_string_equal(cfg_layer_kind_name(LAYER_CSA), "CSA");
    assert_string_equal(cfg_layer_kind_name(LAYER_HCA), "HCA");
    /* CSA: (128 + 64) / 4 twice, HCA: 128 / 16 */
    assert_true(cfg_kv_bytes_per_token(&c, 1) == 2 * 48.0 + 8.0);
    assert_int_equal(cfg_kv_fixed_bytes(&c, 1), 5 * 32 * 128);
}

static void test_golden_rates(void **state)
{
    (void)state;
    v4_config c;
    v4_err err;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_golden("rates"));
    if (cfg_load(dir, &c, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(c.vocab_size, 2048);
    assert_int_equal(c.dim, 512);
    assert_int_equal(c.n_layers, 4);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.head_dim, 512);
    assert_int_equal(c.rope_dim, 64);
    assert_int_equal(c.q_lora_rank, 256);
    assert_int_equal(c.o_groups, 4);
    assert_int_equal(c.o_lora_rank, 128);
    assert_int_equal(c.n_experts, 16);
    assert_int_equal(c.n_active, 6);
    assert_int_equal(c.moe_inter, 256);
    assert_int_equal(c.n_hash_layers, 1);
    assert_int_equal(c.window, 128);
    assert_int_equal(c.index_n_heads, 8);
    assert_int_equal(c.index_head_dim, 128);
    assert_int_equal(c.index_topk, 64);
    assert_true(c.swiglu_limit == 10.0);
    assert_true(c.yarn.enabled);
    assert_true(c.yarn.factor == 16.0);
    assert_int_equal(c.yarn.original_max_pos, 65536);
    assert_true(c.yarn.beta_fast == 32.0);
    assert_true(c.yarn.beta_slow == 1.0);
    const int ratios[4] = {4, 128, 4, 0};
    for (int l = 0; l < 4; l++)
        assert_int_equal(cfg_layer_ratio(&c, l), ratios[l]);
    assert_int_equal(cfg_layer_kind(&c, 1), LAYER_HCA);
    assert_true(cfg_layer_hashed(&c, 0) && !cfg_layer_hashed(&c, 1));
}

static void test_real_model(void **state)
{
    (void)state;
    json_t *j = real_config();
    v4_config c;
    v4_err err;
    if (parse_json(j, &c, &err))
        fail_msg("%s", err.msg);
    json_decref(j);
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
    assert_true(c.yarn.enabled && c.yarn.factor == 16.0 && c.yarn.original_max_pos == 65536);
    /* layers 0-1 sliding; CSA (4) on even layers 2..42, HCA (128) on odd 3..41 */
    int n_csa = 0, n_hca = 0;
    for (int l = 0; l < 43; l++) {
        layer_kind_t k = cfg_layer_kind(&c, l);
        if (l < 2) {
            assert_int_equal(k, LAYER_SLIDING);
            assert_int_equal(cfg_layer_ratio(&c, l), 0);
        } else if (l % 2 == 0) {
            assert_int_equal(k, LAYER_CSA);
            assert_int_equal(cfg_layer_ratio(&c, l), 4);
            n_csa++;
        } else {
            assert_int_equal(k, LAYER_HCA);
            assert_int_equal(cfg_layer_ratio(&c, l), 128);
            n_hca++;
        }
        assert_int_equal(cfg_layer_hashed(&c, l), l < 3);
    }
    assert_int_equal(n_csa, 21);
    assert_int_equal(n_hca, 20);
    /* MODEL.md section 5: about 3.4 KB per token with FP8 entries */
    assert_true(cfg_kv_bytes_per_token(&c, 1) == 21 * (512 + 128) / 4.0 + 20 * 512 / 128.0);
    assert_true(cfg_kv_bytes_per_token(&c, 2) == 2 * cfg_kv_bytes_per_token(&c, 1));
    assert_int_equal(cfg_kv_fixed_bytes(&c, 1), 43 * 128 * 512);

    /* a config without MTP layers and 43 ratios is valid too */
    j = real_config();
    json_object_set_new(j, "num_nextn_predict_layers", json_integer(0));
    json_array_remove(json_object_get(j, "compress_ratios"), 43);
    assert_int_equal(parse_json(j, &c, &err), 0);
    json_decref(j);
    /* so is 43 ratios with an MTP layer (the MTP entry left out) */
    j = real_config();
    json_array_remove(json_object_get(j, "compress_ratios"), 43);
    assert_int_equal(parse_json(j, &c, &err), 0);
    json_decref(j);
    /* rope_scaling may be absent or null, and may say rope_type */
    j = real_config();
    json_object_set_new(j, "rope_scaling", json_null());
    assert_int_equal(parse_json(j, &c, &err), 0);
    assert_false(c.yarn.enabled);
    json_object_del(j, "rope_scaling");
    assert_int_equal(parse_json(j, &c, &err), 0);
    json_object_set_new(j, "rope_scaling", json_pack("{s:s,s:f,s:I,s:f,s:f}", "rope_type", "yarn", "factor", 4.0,
                                                     "original_max_position_embeddings", (json_int_t)4096,
                                                     "beta_fast", 32.0, "beta_slow", 1.0));
    assert_int_equal(parse_json(j, &c, &err), 0);
    assert_true(c.yarn.enabled && c.yarn.factor == 4.0);
    json_decref(j);
}

static json_t *with(const char *key, json_t *value)
{
    json_t *j = real_config();
    if (value)
        json_object_set_new(j, key, value);
    else
        json_object_del(j, key);
    return j;
}

static void test_missing_fields(void **state)
{
    (void)state;
    const char *keys[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                          "qk_rope_head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "n_routed_experts",
                          "num_experts_per_tok", "moe_intermediate_size", "num_hash_layers", "swiglu_limit",
                          "hc_mult", "hc_sinkhorn_iters", "hc_eps", "rms_norm_eps", "sliding_window",
                          "rope_theta", "compress_rope_theta", "index_n_heads", "index_head_dim", "index_topk",
                          "compress_ratios", "quantization_config", "scoring_func", "norm_topk_prob",
                          "routed_scaling_factor", "num_nextn_predict_layers", "eos_token_id"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char want[128];
        snprintf(want, sizeof want, "missing field \"%s\"", keys[i]);
        expect_error(with(keys[i], NULL), want);
    }
    expect_error(with("hidden_size", json_null()), "missing field \"hidden_size\"");
    json_t *j = real_config();
    json_object_del(json_object_get(j, "rope_scaling"), "beta_fast");
    expect_error(j, "rope_scaling.beta_fast");
    j = real_config();
    json_object_del(json_object_get(j, "quantization_config"), "weight_block_size");
    expect_error(j, "quantization_config.weight_block_size");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error(with("hidden_size", json_string("4096")), "\"hidden_size\" must be an integer");
    expect_error(with("hidden_size", json_real(4096.5)), "\"hidden_size\" must be an integer");
    expect_error(with("num_hidden_layers", json_real(43.0)), "\"num_hidden_layers\" must be an integer");
    expect_error(with("vocab_size", json_true()), "\"vocab_size\" must be an integer");
    expect_error(with("n_routed_experts", json_pack("[i]", 256)), "\"n_routed_experts\" must be an integer");
    expect_error(with("rms_norm_eps", json_string("1e-6")), "\"rms_norm_eps\" must be a number");
    expect_error(with("scoring_func", json_integer(1)), "\"scoring_func\" must be a string");
    expect_error(with("norm_topk_prob", json_integer(1)), "\"norm_topk_prob\" must be true or false");
    expect_error(with("quantization_config", json_pack("[s]", "fp8")), "\"quantization_config\" must be an object");
    expect_error(with("rope_scaling", json_pack("[f]", 16.0)), "\"rope_scaling\" must be an object");
    expect_error(with("compress_ratios", json_pack("{s:i}", "0", 0)), "\"compress_ratios\" must be an array");
    json_t *j = real_config();
    json_array_set_new(json_object_get(j, "compress_ratios"), 5, json_string("4"));
    expect_error(j, "compress_ratios[5]");
    j = real_config();
    json_array_set_new(json_object_get(j, "compress_ratios"), 7, json_integer(-4));
    expect_error(j, "compress_ratios[7]");
    j = real_config();
    json_object_set_new(json_object_get(j, "quantization_config"), "weight_block_size", json_string("128x128"));
    expect_error(j, "quantization_config.weight_block_size");
    expect_error(with("hidden_size", json_integer(0)), "\"hidden_size\" is 0, must be >= 1");
    expect_error(with("num_hash_layers", json_integer(-1)), "\"num_hash_layers\" is -1");
    /* values the architecture does not support */
    expect_error(with("scoring_func", json_string("softmax")), "scoring_func");
    expect_error(with("topk_method", json_string("greedy")), "topk_method");
    expect_error(with("norm_topk_prob", json_false()), "norm_topk_prob");
    expect_error(with("rope_theta", json_real(-1.0)), "rope_theta");
    j = real_config();
    json_object_set_new(json_object_get(j, "quantization_config"), "fmt", json_string("e5m2"));
    expect_error(j, "quantization_config.fmt");
    j = real_config();
    json_object_set_new(json_object_get(j, "quantization_config"), "weight_block_size", json_pack("[i,i]", 64, 64));
    expect_error(j, "weight_block_size");
    j = real_config();
    json_object_set_new(json_object_get(j, "rope_scaling"), "type", json_string("linear"));
    expect_error(j, "rope_scaling.type");
    j = real_config();
    json_object_set_new(json_object_get(j, "rope_scaling"), "factor", json_real(0.0));
    expect_error(j, "rope_scaling.factor");
}

static void test_inconsistent_dimensions(void **state)
{
    (void)state;
    expect_error(with("num_key_value_heads", json_integer(2)), "num_key_value_heads");
    expect_error(with("qk_rope_head_dim", json_integer(1024)), "qk_rope_head_dim");
    expect_error(with("qk_rope_head_dim", json_integer(63)), "qk_rope_head_dim");
    expect_error(with("index_head_dim", json_integer(32)), "index_head_dim");
    expect_error(with("o_groups", json_integer(7)), "o_groups");
    expect_error(with("num_experts_per_tok", json_integer(257)), "num_experts_per_tok");
    expect_error(with("num_hash_layers", json_integer(44)), "num_hash_layers");
    expect_error(with("n_shared_experts", json_integer(2)), "n_shared_experts");
    expect_error(with("hidden_size", json_integer(4100)), "hidden_size");
    expect_error(with("moe_intermediate_size", json_integer(2050)), "moe_intermediate_size");
    expect_error(with("eos_token_id", json_integer(129280)), "eos_token_id");
    /* compress_ratios count against num_hidden_layers (+ MTP layers) */
    json_t *j = real_config();
    json_array_remove(json_object_get(j, "compress_ratios"), 0);
    json_array_remove(json_object_get(j, "compress_ratios"), 0);
    expect_error(j, "compress_ratios has 42 entries; expected 43");
    j = real_config();
    json_array_append_new(json_object_get(j, "compress_ratios"), json_integer(0));
    expect_error(j, "compress_ratios has 45 entries");
    j = real_config();
    json_object_set_new(j, "num_nextn_predict_layers", json_integer(0));
    expect_error(j, "compress_ratios has 44 entries");
    expect_error(with("num_hidden_layers", json_integer(42)), "compress_ratios");
    /* more layers than the engine's tables hold, with a matching schedule */
    j = real_config();
    json_t *r = json_array();
    for (int i = 0; i < 201; i++)
        json_array_append_new(r, json_integer(i % 2 ? 4 : 128));
    json_object_set_new(j, "compress_ratios", r);
    json_object_set_new(j, "num_hidden_layers", json_integer(200));
    expect_error(j, "num_hidden_layers 200 exceeds");
}

static void test_files(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir();
    v4_config c;
    v4_err err = {{0}};
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    /* missing */
    assert_int_equal(cfg_load(dir, &c, &err), -1);
    assert_non_null(strstr(err.msg, path));
    /* malformed JSON: the file and the line are named */
    const char *bad = "{\n  \"vocab_size\": 1024,\n  \"hidden_size\": 256,\n}\n";
    assert_int_equal(tc_write_file(path, bad, strlen(bad)), 0);
    assert_int_equal(cfg_load(dir, &c, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "not valid JSON"));
    assert_non_null(strstr(err.msg, "line 4"));
    /* empty, and not an object */
    assert_int_equal(tc_write_file(path, "", 0), 0);
    assert_int_equal(cfg_load(dir, &c, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(tc_write_file(path, "[1, 2]", 6), 0);
    assert_int_equal(cfg_load(dir, &c, &err), -1);
    assert_non_null(strstr(err.msg, "not a JSON object"));
    /* a real config through the file path */
    json_t *j = real_config();
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
    assert_int_equal(cfg_load(dir, &c, &err), 0);
    assert_int_equal(c.n_layers, 43);
    /* a field error names the file */
    j = with("hidden_size", json_string("big"));
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
    assert_int_equal(cfg_load(dir, &c, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "hidden_size"));
    tc_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_tiny),
        cmocka_unit_test(test_golden_rates),
        cmocka_unit_test(test_real_model),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_inconsistent_dimensions),
        cmocka_unit_test(test_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
