/* config.json parsing with jansson. Every field of MODEL.md section 1 is
 * read; missing fields, wrong types and inconsistent dimensions are errors
 * that name the field. */
#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    json_t *root;
    const char *what;
    v4_err *err;
    int failed;
} reader;

static json_t *field(reader *r, json_t *obj, const char *key, const char *path)
{
    if (r->failed)
        return NULL;
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        v4_errf(r->err, "%s: missing field \"%s\"", r->what, path);
        r->failed = 1;
        return NULL; /* a null value must not reach the type checks, which would overwrite the message */
    }
    return v;
}

static int64_t get_int(reader *r, json_t *obj, const char *key, const char *path, int64_t min)
{
    json_t *v = field(r, obj, key, path);
    if (!v)
        return 0;
    if (!json_is_integer(v)) {
        v4_errf(r->err, "%s: field \"%s\" must be an integer", r->what, path);
        r->failed = 1;
        return 0;
    }
    int64_t x = json_integer_value(v);
    if (x < min) {
        v4_errf(r->err, "%s: field \"%s\" is %lld, must be >= %lld", r->what, path, (long long)x, (long long)min);
        r->failed = 1;
    }
    return x;
}

static double get_num(reader *r, json_t *obj, const char *key, const char *path)
{
    json_t *v = field(r, obj, key, path);
    if (!v)
        return 0;
    if (!json_is_number(v)) {
        v4_errf(r->err, "%s: field \"%s\" must be a number", r->what, path);
        r->failed = 1;
        return 0;
    }
    return json_number_value(v);
}

static const char *get_str(reader *r, json_t *obj, const char *key, const char *path)
{
    json_t *v = field(r, obj, key, path);
    if (!v)
        return "";
    if (!json_is_string(v)) {
        v4_errf(r->err, "%s: field \"%s\" must be a string", r->what, path);
        r->failed = 1;
        return "";
    }
    return json_string_value(v);
}

static bool get_bool(reader *r, json_t *obj, const char *key, const char *path)
{
    json_t *v = field(r, obj, key, path);
    if (!v)
        return false;
    if (!json_is_boolean(v)) {
        v4_errf(r->err, "%s: field \"%s\" must be true or false", r->what, path);
        r->failed = 1;
        return false;
    }
    return json_is_true(v);
}

static int fail(reader *r, const char *fmt, ...)
{
    if (r->failed)
        return -1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->failed = 1;
    return v4_errf(r->err, "%s: %s", r->what, msg);
}

static void read_yarn(reader *r, v4_config *c)
{
    json_t *rs = json_object_get(r->root, "rope_scaling");
    if (!rs || json_is_null(rs)) {
        c->yarn.enabled = false;
        return;
    }
    if (!json_is_object(rs)) {
        fail(r, "field \"rope_scaling\" must be an object or null");
        return;
    }
    json_t *type = json_object_get(rs, "type");
    if (!type)
        type = json_object_get(rs, "rope_type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "yarn") != 0) {
        fail(r, "rope_scaling.type must be \"yarn\"");
        return;
    }
    c->yarn.enabled = true;
    c->yarn.factor = get_num(r, rs, "factor", "rope_scaling.factor");
    c->yarn.original_max_pos =
        get_int(r, rs, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings", 1);
    c->yarn.beta_fast = get_num(r, rs, "beta_fast", "rope_scaling.beta_fast");
    c->yarn.beta_slow = get_num(r, rs, "beta_slow", "rope_scaling.beta_slow");
    if (!r->failed && c->yarn.factor <= 0)
        fail(r, "rope_scaling.factor must be positive");
}

static void read_quant(reader *r, v4_config *c)
{
    json_t *q = field(r, r->root, "quantization_config", "quantization_config");
    if (!q)
        return;
    if (!json_is_object(q)) {
        fail(r, "field \"quantization_config\" must be an object");
        return;
    }
    const char *method = get_str(r, q, "quant_method", "quantization_config.quant_method");
    const char *fmt = get_str(r, q, "fmt", "quantization_config.fmt");
    const char *sfmt = get_str(r, q, "scale_fmt", "quantization_config.scale_fmt");
    if (r->failed)
        return;
    if (strcmp(method, "fp8") != 0)
        fail(r, "quantization_config.quant_method is \"%s\", only \"fp8\" is supported", method);
    else if (strcmp(fmt, "e4m3") != 0)
        fail(r, "quantization_config.fmt is \"%s\", only \"e4m3\" is supported", fmt);
    else if (strcmp(sfmt, "ue8m0") != 0)
        fail(r, "quantization_config.scale_fmt is \"%s\", only \"ue8m0\" is supported", sfmt);
    json_t *bs = field(r, q, "weight_block_size", "quantization_config.weight_block_size");
    if (!bs)
        return;
    if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
        !json_is_integer(json_array_get(bs, 1))) {
        fail(r, "quantization_config.weight_block_size must be [rows, cols]");
        return;
    }
    c->weight_block[0] = json_integer_value(json_array_get(bs, 0));
    c->weight_block[1] = json_integer_value(json_array_get(bs, 1));
    if (c->weight_block[0] != 128 || c->weight_block[1] != 128)
        fail(r, "quantization_config.weight_block_size is [%lld, %lld]; only [128, 128] is supported",
             (long long)c->weight_block[0], (long long)c->weight_block[1]);
}

static void read_ratios(reader *r, v4_config *c)
{
    json_t *a = field(r, r->root, "compress_ratios", "compress_ratios");
    if (!a)
        return;
    if (!json_is_array(a)) {
        fail(r, "field \"compress_ratios\" must be an array of integers");
        return;
    }
    size_t n = json_array_size(a);
    /* checked here, before compress_ratio[] is filled, not only in
     * check_consistency: a longer schedule would overrun the array */
    if (c->n_layers > V4_MAX_LAYERS) {
        fail(r, "num_hidden_layers %lld exceeds the supported %d", (long long)c->n_layers, V4_MAX_LAYERS);
        return;
    }
    /* The official config carries one entry per decoder layer plus one per
     * MTP layer; test configs without MTP layers carry exactly one per layer. */
    if (n != (size_t)c->n_layers && n != (size_t)(c->n_layers + c->n_mtp_layers)) {
        fail(r, "compress_ratios has %zu entries; expected %lld (num_hidden_layers) or %lld (+ MTP layers)", n,
             (long long)c->n_layers, (long long)(c->n_layers + c->n_mtp_layers));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 20)) {
            fail(r, "compress_ratios[%zu] must be a non-negative integer", i);
            return;
        }
        if (i < (size_t)c->n_layers)
            c->compress_ratio[i] = (int)json_integer_value(v);
    }
}

/* Dimensions that must agree with each other for the forward pass. */
static void check_consistency(reader *r, v4_config *c)
{
    if (r->failed)
        return;
    if (c->n_kv_heads != 1)
        fail(r, "num_key_value_heads is %lld; this architecture has one shared KV head", (long long)c->n_kv_heads);
    else if (c->rope_dim > c->head_dim || c->rope_dim % 2)
        fail(r, "qk_rope_head_dim (%lld) must be even and <= head_dim (%lld)", (long long)c->rope_dim,
             (long long)c->head_dim);
    else if (c->rope_dim > c->index_head_dim)
        fail(r, "qk_rope_head_dim (%lld) must be <= index_head_dim (%lld)", (long long)c->rope_dim,
             (long long)c->index_head_dim);
    else if ((c->n_heads * c->head_dim) % c->o_groups)
        fail(r, "num_attention_heads x head_dim (%lld) is not divisible by o_groups (%lld)",
             (long long)(c->n_heads * c->head_dim), (long long)c->o_groups);
    else if (c->n_heads % c->o_groups)
        fail(r, "num_attention_heads (%lld) is not divisible by o_groups (%lld)", (long long)c->n_heads,
             (long long)c->o_groups);
    else if (c->n_active > c->n_experts)
        fail(r, "num_experts_per_tok (%lld) exceeds n_routed_experts (%lld)", (long long)c->n_active,
             (long long)c->n_experts);
    else if (c->n_hash_layers > c->n_layers)
        fail(r, "num_hash_layers (%lld) exceeds num_hidden_layers (%lld)", (long long)c->n_hash_layers,
             (long long)c->n_layers);
    else if (c->n_shared_experts != 1)
        fail(r, "n_shared_experts is %lld; exactly 1 is supported", (long long)c->n_shared_experts);
    else if (c->dim % 32 || c->moe_inter % 32)
        fail(r, "hidden_size and moe_intermediate_size must be multiples of 32 (MXFP4 scale groups)");
    else if (c->hc_mult > V4_MAX_STREAMS || c->n_experts > V4_MAX_EXPERTS || c->n_active > V4_MAX_ACTIVE)
        fail(r, "hc_mult (%lld), n_routed_experts (%lld) or num_experts_per_tok (%lld) above the supported %d, %d, %d",
             (long long)c->hc_mult, (long long)c->n_experts, (long long)c->n_active, V4_MAX_STREAMS, V4_MAX_EXPERTS,
             V4_MAX_ACTIVE);
    else if (c->n_layers > V4_MAX_LAYERS)
        fail(r, "num_hidden_layers %lld exceeds the supported %d", (long long)c->n_layers, V4_MAX_LAYERS);
    else if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        fail(r, "bos_token_id/eos_token_id must be < vocab_size");
}

int cfg_parse(const char *text, size_t len, const char *what, v4_config *c, v4_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return v4_errf(err, "%s: not valid JSON: %s (line %d)", what, jerr.text, jerr.line);
    reader r = {.root = root, .what = what, .err = err};
    if (!json_is_object(root)) {
        fail(&r, "top level is not a JSON object");
        json_decref(root);
        return -1;
    }
    c->vocab_size = get_int(&r, root, "vocab_size", "vocab_size", 2);
    c->dim = get_int(&r, root, "hidden_size", "hidden_size", 1);
    c->n_layers = get_int(&r, root, "num_hidden_layers", "num_hidden_layers", 1);
    c->n_heads = get_int(&r, root, "num_attention_heads", "num_attention_heads", 1);
    c->n_kv_heads = get_int(&r, root, "num_key_value_heads", "num_key_value_heads", 1);
    c->head_dim = get_int(&r, root, "head_dim", "head_dim", 2);
    c->rope_dim = get_int(&r, root, "qk_rope_head_dim", "qk_rope_head_dim", 0);
    c->q_lora_rank = get_int(&r, root, "q_lora_rank", "q_lora_rank", 1);
    c->o_groups = get_int(&r, root, "o_groups", "o_groups", 1);
    c->o_lora_rank = get_int(&r, root, "o_lora_rank", "o_lora_rank", 1);
    c->n_experts = get_int(&r, root, "n_routed_experts", "n_routed_experts", 1);
    c->n_shared_experts = get_int(&r, root, "n_shared_experts", "n_shared_experts", 0);
    c->n_active = get_int(&r, root, "num_experts_per_tok", "num_experts_per_tok", 1);
    c->moe_inter = get_int(&r, root, "moe_intermediate_size", "moe_intermediate_size", 1);
    c->n_hash_layers = get_int(&r, root, "num_hash_layers", "num_hash_layers", 0);
    c->hc_mult = get_int(&r, root, "hc_mult", "hc_mult", 1);
    c->hc_sinkhorn_iters = get_int(&r, root, "hc_sinkhorn_iters", "hc_sinkhorn_iters", 1);
    c->window = get_int(&r, root, "sliding_window", "sliding_window", 1);
    c->index_n_heads = get_int(&r, root, "index_n_heads", "index_n_heads", 1);
    c->index_head_dim = get_int(&r, root, "index_head_dim", "index_head_dim", 2);
    c->index_topk = get_int(&r, root, "index_topk", "index_topk", 1);
    c->max_pos = get_int(&r, root, "max_position_embeddings", "max_position_embeddings", 1);
    c->n_mtp_layers = get_int(&r, root, "num_nextn_predict_layers", "num_nextn_predict_layers", 0);
    c->bos_id = get_int(&r, root, "bos_token_id", "bos_token_id", 0);
    c->eos_id = get_int(&r, root, "eos_token_id", "eos_token_id", 0);
    c->routed_scale = get_num(&r, root, "routed_scaling_factor", "routed_scaling_factor");
    c->swiglu_limit = get_num(&r, root, "swiglu_limit", "swiglu_limit");
    c->hc_eps = get_num(&r, root, "hc_eps", "hc_eps");
    c->rms_eps = get_num(&r, root, "rms_norm_eps", "rms_norm_eps");
    c->rope_theta = get_num(&r, root, "rope_theta", "rope_theta");
    c->compress_rope_theta = get_num(&r, root, "compress_rope_theta", "compress_rope_theta");
    c->norm_topk_prob = get_bool(&r, root, "norm_topk_prob", "norm_topk_prob");
    const char *scoring = get_str(&r, root, "scoring_func", "scoring_func");
    if (!r.failed && strcmp(scoring, "sqrtsoftplus") != 0)
        fail(&r, "scoring_func is \"%s\"; only \"sqrtsoftplus\" is supported", scoring);
    const char *topk = get_str(&r, root, "topk_method", "topk_method");
    if (!r.failed && strcmp(topk, "noaux_tc") != 0)
        fail(&r, "topk_method is \"%s\"; only \"noaux_tc\" is supported", topk);
    if (!r.failed && !c->norm_topk_prob)
        fail(&r, "norm_topk_prob is false; the architecture normalises the chosen weights");
    if (!r.failed && (c->rope_theta <= 0 || c->compress_rope_theta <= 0 || c->rms_eps <= 0))
        fail(&r, "rope_theta, compress_rope_theta and rms_norm_eps must be positive");
    read_yarn(&r, c);
    read_quant(&r, c);
    read_ratios(&r, c);
    check_consistency(&r, c);
    json_decref(root);
    return r.failed ? -1 : 0;
}

int cfg_load(const char *model_dir, v4_config *c, v4_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return v4_errf(err, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) {
                free(buf);
                fclose(f);
                return v4_errf(err, "%s: larger than 16 MB; not a config file", path);
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return v4_errf(err, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    int rc = cfg_parse(buf, len, path, c, err);
    free(buf);
    return rc;
}

layer_kind_t cfg_layer_kind(const v4_config *c, int layer)
{
    int r = c->compress_ratio[layer];
    return r == 0 ? LAYER_SLIDING : r == 4 ? LAYER_CSA : LAYER_HCA;
}

const char *cfg_layer_kind_name(layer_kind_t k)
{
    return k == LAYER_SLIDING ? "sliding" : k == LAYER_CSA ? "CSA" : "HCA";
}

double cfg_kv_bytes_per_token(const v4_config *c, int entry_bytes)
{
    double b = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int m = c->compress_ratio[l];
        if (m == 0)
            continue;
        double width = (double)c->head_dim;
        if (cfg_layer_kind(c, l) == LAYER_CSA)
            width += (double)c->index_head_dim;
        b += width * entry_bytes / m;
    }
    return b;
}

int64_t cfg_kv_fixed_bytes(const v4_config *c, int entry_bytes)
{
    return c->n_layers * c->window * c->head_dim * entry_bytes;
}
