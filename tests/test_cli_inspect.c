/* `v4serve inspect` as a user runs it: the schedule of both golden models,
 * and malformed checkpoints (truncated shard, garbage or absurd header,
 * tensor missing from the index, wrong types in config.json, missing
 * config.json) exit non-zero, normally (not by a signal), with a message
 * naming the problem. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_ckpt.h"
#include "tu_run.h"

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static void check_schedule(const char *out, const int *ratios, int n, int window, int n_hash)
{
    tr_layer l[64];
    int got = tr_parse_schedule(out, l, 64);
    if (got != n)
        fail_msg("%d schedule lines, expected %d:\n%s", got, n, out);
    for (int i = 0; i < n; i++) {
        const char *kind = ratios[i] == 0 ? "sliding" : ratios[i] == 4 ? "CSA" : "HCA";
        assert_int_equal(l[i].index, i);
        assert_string_equal(l[i].kind, kind);
        assert_int_equal(l[i].ratio, ratios[i]);
        assert_int_equal(l[i].window, window);
        assert_int_equal(l[i].hashed, i < n_hash);
    }
}

static void test_inspect_golden(void **state)
{
    (void)state;
    char dir[4096];
    tr_result r;
    snprintf(dir, sizeof dir, "%s/model", tu_golden("tiny"));
    tr_run_ok((const char *[]){"inspect", "--model", dir, NULL}, &r);
    check_schedule(r.out, (const int[]){0, 4, 16, 4, 0}, 5, 32, 2);
    assert_non_null(strstr(r.out, "layers: 5"));
    assert_non_null(strstr(r.out, "vocab 1024, hidden 256"));
    assert_non_null(strstr(r.out, "tensors: 657"));
    assert_non_null(strstr(r.out, "no YaRN"));
    tr_free(&r);
    /* the several-GPU plan: 16 experts and 1024 head rows over 2 GPUs */
    tr_run_ok((const char *[]){"inspect", "--model", dir, "--gpus", "2", NULL}, &r);
    assert_non_null(strstr(r.out, "rank 0: experts [0, 8), head rows [0, 512)"));
    assert_non_null(strstr(r.out, "rank 1: experts [8, 16), head rows [512, 1024)"));
    tr_free(&r);
    snprintf(dir, sizeof dir, "%s/model", tu_golden("rates"));
    tr_run_ok((const char *[]){"inspect", "--model", dir, NULL}, &r);
    check_schedule(r.out, (const int[]){4, 128, 4, 0}, 4, 128, 1);
    assert_non_null(strstr(r.out, "YaRN (factor 16, original 65536, beta 32/1)"));
    tr_free(&r);
}

static void test_usage_errors(void **state)
{
    (void)state;
    TR_RUN_FAILS(((const char *[]){"inspect", NULL}), "--model");
    TR_RUN_FAILS(((const char *[]){"inspect", "--bogus", NULL}), "--bogus");
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", "x", "--gpus", "0", NULL}), "1 to 8");
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", "x", "--gpus", "2x", NULL}), "'2x'");
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", "/nonexistent/model", NULL}), "/nonexistent/model");
    TR_RUN_FAILS(((const char *[]){"no-such-command", NULL}), "no-such-command");
}

/* A fresh two-shard copy of golden tiny; returns its folder. */
static const char *copy_tiny(void)
{
    tc_ckpt ck;
    assert_int_equal(tc_load(&ck, tu_path("tests/golden/tiny/model")), 0);
    const char *dir = tu_tmpdir();
    assert_int_equal(tc_write(&ck, dir, 2), 0);
    tc_free(&ck);
    return dir;
}

static const char *in(const char *dir, const char *file)
{
    static char b[4][512];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, sizeof b[0], "%s/%s", dir, file);
    return p;
}

static void patch(const char *path, long offset, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, offset, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_truncated_shard(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    size_t len;
    free(tc_read_file(in(dir, SHARD2), &len));
    assert_int_equal(truncate(in(dir, SHARD2), (off_t)(len - 1000)), 0);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), SHARD2, "outside the data section");
    assert_int_equal(truncate(in(dir, SHARD2), 5), 0);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), SHARD2, "truncated");
    tc_rmtree(dir);
}

static void test_bad_headers(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    patch(in(dir, SHARD1), 8, "garbage!garbage!", 16);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), SHARD1, "not valid JSON");
    const uint8_t huge[8] = {0, 0, 0, 0, 0, 1, 0, 0}; /* 2^40 */
    patch(in(dir, SHARD1), 0, huge, 8);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), SHARD1, "absurd");
    const uint8_t all_ones[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    patch(in(dir, SHARD1), 0, all_ones, 8);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), SHARD1, "absurd");
    tc_rmtree(dir);
}

static void edit_index(const char *dir, const char *drop, const char *add_name, const char *add_file)
{
    json_error_t je;
    json_t *j = json_load_file(in(dir, "model.safetensors.index.json"), 0, &je);
    assert_non_null(j);
    json_t *wm = json_object_get(j, "weight_map");
    if (drop)
        assert_int_equal(json_object_del(wm, drop), 0);
    if (add_name)
        json_object_set_new(wm, add_name, json_string(add_file));
    assert_int_equal(json_dump_file(j, in(dir, "model.safetensors.index.json"), JSON_INDENT(2)), 0);
    json_decref(j);
}

static void test_index_problems(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    /* a tensor stored in a shard but missing from the index */
    edit_index(dir, "layers.2.attn.wkv.weight", NULL, NULL);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "'layers.2.attn.wkv.weight'",
              "not listed in the index");
    tc_rmtree(dir);
    /* an indexed tensor missing from its shard */
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    edit_index(dir, NULL, "layers.0.attn.ghost", SHARD1);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "'layers.0.attn.ghost'", SHARD1);
    tc_rmtree(dir);
    /* an index naming a shard that is not there */
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    edit_index(dir, NULL, "layers.0.attn.ghost", "model-00003-of-00003.safetensors");
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "model-00003-of-00003.safetensors");
    tc_rmtree(dir);
    /* a tensor the model needs, gone from both shard and index */
    tc_ckpt ck;
    assert_int_equal(tc_load(&ck, tu_path("tests/golden/tiny/model")), 0);
    assert_int_equal(tc_remove(&ck, "layers.3.ffn.gate.bias"), 0);
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    assert_int_equal(tc_write(&ck, dir, 2), 0);
    tc_free(&ck);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "missing tensor 'layers.3.ffn.gate.bias'");
    tc_rmtree(dir);
}

static void set_config(const char *dir, const char *key, json_t *value)
{
    json_error_t je;
    json_t *j = json_load_file(in(dir, "config.json"), 0, &je);
    assert_non_null(j);
    json_object_set_new(j, key, value);
    assert_int_equal(json_dump_file(j, in(dir, "config.json"), JSON_INDENT(2)), 0);
    json_decref(j);
}

static void test_config_problems(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", copy_tiny());
    set_config(dir, "hidden_size", json_string("256"));
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "\"hidden_size\"", "integer");
    set_config(dir, "hidden_size", json_real(256.5));
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "\"hidden_size\"");
    set_config(dir, "hidden_size", json_integer(256));
    set_config(dir, "quantization_config", json_pack("[s]", "fp8"));
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "quantization_config");
    set_config(dir, "quantization_config", json_pack("{s:s,s:s,s:s,s:[i,i]}", "quant_method", "fp8", "fmt", "e4m3",
                                                     "scale_fmt", "ue8m0", "weight_block_size", 128, 128));
    set_config(dir, "compress_ratios", json_pack("[i,i,i]", 0, 4, 16));
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "compress_ratios has 3 entries");
    /* a config that parses but does not match the tensors */
    set_config(dir, "compress_ratios", json_pack("[i,i,i,i,i]", 0, 4, 16, 4, 0));
    set_config(dir, "q_lora_rank", json_integer(256));
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "'layers.0.attn.wq_a.weight'", "shape");
    assert_int_equal(unlink(in(dir, "config.json")), 0);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "cannot open");
    assert_int_equal(tc_write_file(in(dir, "config.json"), "{\"vocab_size\": 1024,", 20), 0);
    TR_RUN_FAILS(((const char *[]){"inspect", "--model", dir, NULL}), "config.json", "not valid JSON");
    tc_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inspect_golden),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_truncated_shard),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_index_problems),
        cmocka_unit_test(test_config_problems),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
