/* Presets of the random checkpoint generator and the config.json they
 * give: `tiny` (the golden tiny model's dimensions), `demo` (the real
 * vocabulary, so the real tokenizer works, on small dimensions) and `flash`
 * (the real model, MODEL.md section 1). */
#include "tools/mkmodel.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

const char *const MK_PRESETS[] = {"tiny", "demo", "flash", NULL};

typedef struct preset {
    const char *name;
    int64_t vocab, dim, layers, heads, head_dim, rope_dim, q_lora, o_groups, o_lora;
    int64_t experts, top_k, moe_inter, hash_layers, window, idx_heads, idx_dim, idx_topk, mtp_layers;
    double swiglu_limit;
    bool yarn;
    int ratios[V4_MAX_LAYERS + 1]; /* per layer, then one per MTP layer */
} preset;

#define FLASH_LAYERS 43

static void preset_get(const char *name, preset *p)
{
    memset(p, 0, sizeof *p);
    if (strcmp(name, "tiny") == 0) {
        *p = (preset){"tiny", 1024, 256, 5, 4, 128, 32, 128, 2, 128, 16, 4, 128, 2, 32, 4, 64, 8, 0, 1.0, false,
                      {0, 4, 16, 4, 0}};
    } else if (strcmp(name, "demo") == 0) {
        *p = (preset){"demo", 129280, 256, 4, 4, 128, 32, 128, 2, 128, 16, 4, 128, 1, 32, 4, 64, 8, 0, 10.0, true,
                      {0, 4, 16, 0}};
    } else if (strcmp(name, "flash") == 0) {
        *p = (preset){"flash", 129280, 4096, FLASH_LAYERS, 64, 512, 64, 1024, 8, 1024, 256, 6, 2048, 3, 128, 64,
                      128, 512, 1, 10.0, true, {0}};
        /* layers 0-1 sliding, then CSA (4) on even and HCA (128) on odd
         * layers; the MTP entry (0) follows */
        for (int l = 2; l < FLASH_LAYERS; l++)
            p->ratios[l] = l % 2 == 0 ? 4 : 128;
        p->ratios[FLASH_LAYERS] = 0;
    }
}

int mk_config_json(const mk_options *o, char **json_out, v4_err *err)
{
    *json_out = NULL;
    preset p;
    preset_get(o->preset ? o->preset : "", &p);
    if (!p.name)
        return v4_errf(err, "unknown preset '%s' (choose tiny, demo or flash)", o->preset ? o->preset : "");
    if (o->layers < 0 || o->layers > p.layers)
        return v4_errf(err, "--layers %d: the %s preset has 1 to %lld layers", o->layers, p.name,
                       (long long)p.layers);
    if (o->experts < 0 || o->experts > 65536)
        return v4_errf(err, "--experts %d: must be between 1 and 65536", o->experts);
    const int64_t layers = o->layers ? o->layers : p.layers;
    const int64_t experts = o->experts ? o->experts : p.experts;
    const int64_t top_k = p.top_k < experts ? p.top_k : experts;
    const int64_t hash = p.hash_layers < layers ? p.hash_layers : layers;

    json_t *ratios = json_array();
    for (int64_t l = 0; l < layers; l++)
        json_array_append_new(ratios, json_integer(p.ratios[l]));
    for (int64_t m = 0; m < p.mtp_layers; m++)
        json_array_append_new(ratios, json_integer(p.ratios[p.layers + m]));

    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", "DeepseekV4ForCausalLM"));
    json_object_set_new(c, "model_type", json_string("deepseek_v4"));
    json_object_set_new(c, "vocab_size", json_integer(p.vocab));
    json_object_set_new(c, "hidden_size", json_integer(p.dim));
    json_object_set_new(c, "moe_intermediate_size", json_integer(p.moe_inter));
    json_object_set_new(c, "num_hidden_layers", json_integer(layers));
    json_object_set_new(c, "num_attention_heads", json_integer(p.heads));
    json_object_set_new(c, "num_key_value_heads", json_integer(1));
    json_object_set_new(c, "head_dim", json_integer(p.head_dim));
    json_object_set_new(c, "qk_rope_head_dim", json_integer(p.rope_dim));
    json_object_set_new(c, "q_lora_rank", json_integer(p.q_lora));
    json_object_set_new(c, "o_groups", json_integer(p.o_groups));
    json_object_set_new(c, "o_lora_rank", json_integer(p.o_lora));
    json_object_set_new(c, "n_routed_experts", json_integer(experts));
    json_object_set_new(c, "n_shared_experts", json_integer(1));
    json_object_set_new(c, "num_experts_per_tok", json_integer(top_k));
    json_object_set_new(c, "scoring_func", json_string("sqrtsoftplus"));
    json_object_set_new(c, "topk_method", json_string("noaux_tc"));
    json_object_set_new(c, "norm_topk_prob", json_true());
    json_object_set_new(c, "routed_scaling_factor", json_real(1.5));
    json_object_set_new(c, "num_hash_layers", json_integer(hash));
    json_object_set_new(c, "swiglu_limit", json_real(p.swiglu_limit));
    json_object_set_new(c, "hc_mult", json_integer(4));
    json_object_set_new(c, "hc_sinkhorn_iters", json_integer(20));
    json_object_set_new(c, "hc_eps", json_real(1e-6));
    json_object_set_new(c, "rms_norm_eps", json_real(1e-6));
    json_object_set_new(c, "sliding_window", json_integer(p.window));
    json_object_set_new(c, "compress_ratios", ratios);
    json_object_set_new(c, "compress_rope_theta", json_real(160000.0));
    json_object_set_new(c, "rope_theta", json_real(10000.0));
    if (p.yarn)
        json_object_set_new(c, "rope_scaling",
                            json_pack("{s:s,s:f,s:I,s:f,s:f}", "type", "yarn", "factor", 16.0,
                                      "original_max_position_embeddings", (json_int_t)65536, "beta_fast", 32.0,
                                      "beta_slow", 1.0));
    json_object_set_new(c, "index_n_heads", json_integer(p.idx_heads));
    json_object_set_new(c, "index_head_dim", json_integer(p.idx_dim));
    json_object_set_new(c, "index_topk", json_integer(p.idx_topk));
    json_object_set_new(c, "num_nextn_predict_layers", json_integer(p.mtp_layers));
    json_object_set_new(c, "max_position_embeddings", json_integer(1048576));
    json_object_set_new(c, "bos_token_id", json_integer(0));
    json_object_set_new(c, "eos_token_id", json_integer(1));
    json_object_set_new(c, "tie_word_embeddings", json_false());
    json_object_set_new(c, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(c, "quantization_config",
                        json_pack("{s:s,s:s,s:s,s:s,s:[i,i]}", "quant_method", "fp8", "fmt", "e4m3", "scale_fmt",
                                  "ue8m0", "activation_scheme", "dynamic", "weight_block_size", 128, 128));
    char *text = json_dumps(c, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(c);
    if (!text)
        return v4_errf(err, "cannot serialise config.json");
    /* the engine's own parser must accept what we write */
    v4_config cfg;
    if (cfg_parse(text, strlen(text), "generated config.json", &cfg, err) != 0) {
        free(text);
        return -1;
    }
    *json_out = text;
    return 0;
}
