/* The model configuration (config.json of the official checkpoint) and the
 * per-layer schedule derived from it. MODEL.md section 1 lists the fields. */
#ifndef V4_MODEL_CONFIG_H
#define V4_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define V4_MAX_LAYERS 128
#define V4_MAX_STREAMS 16   /* hc_mult */
#define V4_MAX_EXPERTS 1024
#define V4_MAX_ACTIVE 64    /* num_experts_per_tok */

typedef enum layer_kind {
    LAYER_SLIDING, /* compress ratio 0: window only */
    LAYER_CSA,     /* ratio 4: compressed sparse attention with an indexer */
    LAYER_HCA,     /* any other ratio: heavily compressed attention */
} layer_kind_t;

typedef struct v4_yarn {
    bool enabled; /* rope_scaling present with type "yarn" */
    double factor;
    int64_t original_max_pos;
    double beta_fast, beta_slow;
} v4_yarn;

typedef struct v4_config {
    int64_t vocab_size;
    int64_t dim;          /* hidden_size, D */
    int64_t n_layers;     /* num_hidden_layers */
    int64_t n_heads;      /* num_attention_heads, H */
    int64_t n_kv_heads;   /* must be 1 */
    int64_t head_dim;     /* d */
    int64_t rope_dim;     /* qk_rope_head_dim, r: the LAST r channels rotate */
    int64_t q_lora_rank;
    int64_t o_groups;
    int64_t o_lora_rank;
    int64_t n_experts;    /* n_routed_experts, E */
    int64_t n_shared_experts;
    int64_t n_active;     /* num_experts_per_tok, k */
    int64_t moe_inter;    /* moe_intermediate_size, I */
    int64_t n_hash_layers;
    int64_t hc_mult;      /* n residual streams */
    int64_t hc_sinkhorn_iters;
    int64_t window;       /* sliding_window, W */
    int64_t index_n_heads;
    int64_t index_head_dim;
    int64_t index_topk;
    int64_t max_pos;      /* max_position_embeddings */
    int64_t n_mtp_layers; /* num_nextn_predict_layers */
    int64_t bos_id, eos_id;
    double routed_scale;  /* routed_scaling_factor */
    double swiglu_limit;
    double hc_eps;
    double rms_eps;
    double rope_theta;
    double compress_rope_theta;
    bool norm_topk_prob;
    v4_yarn yarn;
    int64_t weight_block[2]; /* quantization_config.weight_block_size */
    int compress_ratio[V4_MAX_LAYERS]; /* per decoder layer (MTP entry dropped) */
} v4_config;

/* Parses config.json text. `what` names the source in errors. */
int cfg_parse(const char *json_text, size_t len, const char *what, v4_config *c, v4_err *err);
/* Reads DIR/config.json. */
int cfg_load(const char *model_dir, v4_config *c, v4_err *err);

layer_kind_t cfg_layer_kind(const v4_config *c, int layer);
static inline int cfg_layer_ratio(const v4_config *c, int layer) { return c->compress_ratio[layer]; }
static inline bool cfg_layer_hashed(const v4_config *c, int layer) { return layer < c->n_hash_layers; }
const char *cfg_layer_kind_name(layer_kind_t k);

/* Bytes of KV state per token of context for all layers, at `entry_bytes`
 * per stored channel (1 for FP8 entries, 2 for bf16, 4 for fp32), excluding
 * the fixed per-sequence window (see cfg_kv_fixed_bytes). */
double cfg_kv_bytes_per_token(const v4_config *c, int entry_bytes);
/* Fixed per-sequence bytes: the window ring of every layer. */
int64_t cfg_kv_fixed_bytes(const v4_config *c, int entry_bytes);

#endif
