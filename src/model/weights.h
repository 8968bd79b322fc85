/* Model weights bound by their official names (MODEL.md section 2).
 *
 * A matrix is a v4_mat in one of four storage formats, chosen from the
 * stored dtype of the tensor (not its name), so re-quantized or dequantized
 * checkpoints load too. Small per-channel vectors (norm weights, biases,
 * sinks, ape, mHC parameters) are also v4_mat; the model converts them to
 * fp32 once at load (see model.h). */
#ifndef V4_MODEL_WEIGHTS_H
#define V4_MODEL_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "util/err.h"

typedef enum wfmt {
    WF_PLAIN, /* F32 / BF16 / F16 elements, no scale */
    WF_FP8,   /* FP8 elements (dialect in dtype) with UE8M0 scale per 128x128 block */
    WF_MXFP4, /* e2m1 codes, two per byte, UE8M0 scale per 32 inputs of a row */
    WF_I32,   /* integer table (tid2eid) */
} wfmt_t;

#define V4_FP8_BLOCK 128
#define V4_MXFP4_GROUP 32

/* A 2-D tensor [rows, cols] (a vector is rows = 1). For linear weights rows
 * is the output dimension and cols the input dimension. `data` and `scale`
 * point to host memory after binding and to backend memory after upload. */
typedef struct v4_mat {
    wfmt_t fmt;
    dtype_t dtype; /* element type: F32/BF16/F16, an FP8 dialect, DT_MXFP4, I32 */
    int64_t rows, cols;
    const void *data;
    const uint8_t *scale; /* UE8M0; FP8: [ceil(rows/128)][ceil(cols/128)], MXFP4: [rows][cols/32] */
    const char *name;     /* official name, for messages */
    const st_tensor *src, *src_scale; /* the archive tensors it was bound from */
    bool backend_owned; /* data/scale were allocated by a backend's upload_mat */
} v4_mat;

typedef struct v4_compressor_w {
    v4_mat wkv, wgate; /* [width, D] */
    v4_mat ape;        /* [ratio, width] */
    v4_mat norm;       /* [head] */
    int ratio;
    int64_t head;   /* channels of one entry: d (attention) or c (indexer) */
    int64_t width;  /* 2*head when windows overlap (CSA), head otherwise (HCA) */
    bool overlap;
} v4_compressor_w;

typedef struct v4_layer_w {
    layer_kind_t kind;
    int ratio;
    bool hashed;
    v4_mat hc_attn_fn, hc_attn_base, hc_attn_scale;
    v4_mat hc_ffn_fn, hc_ffn_base, hc_ffn_scale;
    v4_mat attn_norm, ffn_norm;
    /* attention */
    v4_mat attn_sink, wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b;
    v4_compressor_w comp;     /* CSA and HCA */
    v4_compressor_w idx_comp; /* CSA */
    v4_mat idx_wq_b, idx_weights_proj;
    /* MoE */
    v4_mat gate_w, gate_bias, tid2eid;
    v4_mat sh_w1, sh_w2, sh_w3;
    v4_mat *exp_w1, *exp_w2, *exp_w3; /* [n_experts] each */
} v4_layer_w;

typedef struct v4_weights {
    v4_mat embed, head, norm;
    v4_mat hc_head_fn, hc_head_base, hc_head_scale;
    v4_layer_w layers[V4_MAX_LAYERS];
    int n_layers;
} v4_weights;

/* Binds every weight of the spec by name, checking shapes and dtypes;
 * reports missing and unexpected tensors by name (mtp.* are optional). */
int weights_bind(const v4_config *c, const st_archive *a, v4_weights *w, v4_err *err);
void weights_free(v4_weights *w);

/* Converts every FP8 weight to `target` (DT_F8_E4M3 or DT_F8_E4M3FNUZ) in
 * place, once, at load: the bytes stay, 0x80 maps to 0 (OCP -> fnuz), and
 * the UE8M0 block scale moves by one binade. Values are exactly equal.
 * A NaN code in a weight, or a scale that would leave UE8M0's range, is an
 * error naming the tensor. No-op for weights already in `target`. */
int weights_convert_fp8(v4_weights *w, const st_archive *a, dtype_t target, v4_err *err);

/* The check every FP8 reader makes before touching the codes: 0 when `m`
 * is an FP8 weight in the `expected` dialect, else -1 with a message naming
 * the tensor and both dialects (reading fnuz bytes as OCP, or the reverse,
 * would be off by 2x without any other sign). */
int mat_expect_fp8(const v4_mat *m, dtype_t expected, v4_err *err);

/* Number of elements and bytes of a matrix as stored (data + scale). */
int64_t mat_elems(const v4_mat *m);
size_t mat_bytes(const v4_mat *m);
size_t mat_scale_bytes(const v4_mat *m);

/* Visits every matrix of the model (for upload, statistics, conversion). */
typedef int (*weights_visit_fn)(v4_mat *m, void *ctx, v4_err *err);
int weights_visit(v4_weights *w, weights_visit_fn fn, void *ctx, v4_err *err);

/* Decodes n values of one row of a host-memory matrix, from column col0, to
 * fp32: plain floats, FP8 (in the dialect the matrix declares) times its
 * block scale, or MXFP4 times its group scale. col0 must be a multiple of 32
 * for MXFP4. */
void mat_row_f32(const v4_mat *m, int64_t row, int64_t col0, int64_t n, float *out);

/* 256-entry decode table of an FP8 dtype (the four FP8 types and E8M0). */
const float *dt_fp8_table(dtype_t t);

#endif
