/* The backend interface: memory and the ops of the forward pass.
 *
 * The model's forward pass (src/model/forward.c) is written once against
 * this table; the CPU backend implements every op as the fp32 reference and
 * GPU backends implement the same ops with kernels. Every op takes backend
 * memory (device pointers on a GPU) and scalars; per-step metadata (token
 * positions, sequences, block tables) arrives as a v4_step of device arrays,
 * so a GPU backend can record a step as a graph and replay it after
 * refreshing those arrays. Activations are fp32 at the interface.
 *
 * Ops are asynchronous on GPU backends: errors are sticky and reported by
 * sync(). Shapes: n = tokens of the step (rows); D = hidden size; ns = mHC
 * streams; H, d = heads and head dim; all row-major. */
#ifndef V4_BACKEND_BACKEND_H
#define V4_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/kv_layout.h"
#include "model/weights.h"
#include "util/err.h"

typedef struct v4_backend v4_backend;

/* Per-step metadata in backend memory. Token rows of one sequence are
 * contiguous and in position order. */
typedef struct v4_step {
    int n_tokens, n_seqs;
    int max_blocks;          /* block-table row length */
    const int32_t *tok_id;   /* [n_tokens] */
    const int32_t *tok_pos;  /* [n_tokens] absolute position in its sequence */
    const int32_t *tok_seq;  /* [n_tokens] index into the seq_* arrays */
    const int32_t *seq_slot; /* [n_seqs] state slot */
    const int32_t *seq_start;/* [n_seqs] position of the step's first token (= tokens already in state) */
    const int32_t *seq_ntok; /* [n_seqs] tokens of this step */
    const int32_t *seq_row;  /* [n_seqs] row of the step's first token */
    const int32_t *block_table; /* [n_seqs][max_blocks] */
} v4_step;

/* Storage of one layer's state (see engine/kv_layout.h), backend memory,
 * allocated by the backend's alloc_kv. Element type of ring, entries and
 * keys: fp32 on the CPU; a GPU backend may store bf16, or FP8 with one scale
 * per stored vector in the *_scale arrays. Accumulators are always fp32. */
typedef struct v4_layer_kv {
    void *ring;       /* [n_slots][W][d] */
    void *entries;    /* [n_blocks][epb][d]   compressed entries (CSA, HCA) */
    void *idx_keys;   /* [n_blocks][epb][c]   indexer keys (CSA) */
    float *comp_acc;  /* [n_slots][n_acc][3][d] compressor accumulators */
    float *idx_acc;   /* [n_slots][n_acc][3][c] indexer compressor accumulators */
    float *ring_scale, *entry_scale, *idx_scale; /* FP8 storage only */
    dtype_t dtype;    /* element type of ring, entries, idx_keys */
} v4_layer_kv;

typedef struct v4_attn_shape {
    int n_heads, head_dim, rope_dim;
    int window;
    layer_kind_t kind;
    int ratio;
    int entries_per_block, block_tokens;
    int topk; /* CSA: columns of the selection */
} v4_attn_shape;

typedef struct v4_comp_shape {
    int ratio;
    int head;   /* channels of an entry */
    int width;  /* channels of a and z: 2*head when windows overlap */
    bool overlap;
    int rope_dim;
    int entries_per_block, block_tokens;
    float eps;
} v4_comp_shape;

typedef struct v4_hc_shape {
    int n_streams, dim, iters;
    float eps, hc_eps;
} v4_hc_shape;

#define V4_MAX_MARKS 8192

typedef struct v4_peaks {
    double copy_gbps;     /* device-to-device copy, bytes read + written per second / 1e9 */
    double bf16_tflops;   /* 8192^3 bf16 matrix product */
    double fp8_tflops;    /* 8192^3 FP8 e4m3 matrix product */
    char how[256];        /* what was measured with what */
} v4_peaks;

/* Per-row parameters of on-device sampling (op `sample`). */
typedef struct v4_sample_params {
    float temperature; /* 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;     /* 0: off */
    float top_p;       /* 1: off */
    uint32_t reserved;
    uint64_t seed;     /* with `step`, the only source of randomness: see util/rng.h */
    uint64_t step;
} v4_sample_params;

typedef struct v4_backend_ops {
    const char *name;

    /* memory */
    void *(*alloc)(v4_backend *be, size_t bytes, v4_err *err);
    void (*free)(v4_backend *be, void *p);
    int (*upload)(v4_backend *be, void *dst, const void *src, size_t bytes, v4_err *err);
    int (*download)(v4_backend *be, void *dst, const void *src, size_t bytes, v4_err *err);
    /* Makes a backend copy of a matrix (linear weight, embedding, tid2eid) in
     * the format the backend computes with; dst->data/scale are backend
     * memory. FP8 weights must already be in the backend's dialect. */
    int (*upload_mat)(v4_backend *be, v4_mat *dst, const v4_mat *src, v4_err *err);
    void (*free_mat)(v4_backend *be, v4_mat *m);
    /* Allocates / frees one layer's state storage for geometry g. */
    int (*alloc_kv)(v4_backend *be, const kv_geom *g, int layer, v4_layer_kv *out, v4_err *err);
    void (*free_kv)(v4_backend *be, v4_layer_kv *kv);
    /* Waits for queued work; returns the first error of any op since the last sync. */
    int (*sync)(v4_backend *be, v4_err *err);
    /* Sizes the fixed metadata buffers once, before the first step, for
     * steps of up to max_tokens tokens and max_seqs sequences with block
     * tables of max_blocks entries; set_step never allocates afterwards. */
    int (*reserve_step)(v4_backend *be, int max_tokens, int max_seqs, int max_blocks, v4_err *err);
    /* Refreshes the backend's fixed metadata buffers from a host mirror
     * (arrays laid out as in v4_step) and returns the device view. */
    int (*set_step)(v4_backend *be, const v4_step *host, v4_step *dev, v4_err *err);

    /* X[t][s][:] = embed[tok_id[t]] for every stream s */
    void (*embed)(v4_backend *be, float *X, const v4_mat *embed, const v4_step *st, int n_streams);
    /* y[t][g*R/G + r] = sum_i x[t][g*C + i] * W[g*R/G + r][i]; W is [R, C],
     * x rows hold G*C values (groups = 1: a plain linear layer y = x W^T). */
    void (*linear)(v4_backend *be, float *y, const float *x, int n, const v4_mat *w, int groups);
    /* y = x / sqrt(mean(x^2) + eps) * w over rows of `dim`; w NULL: unweighted. */
    void (*rmsnorm)(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps);
    /* Interleaved rope on the last rope_dim channels of each head, at the
     * position of the row's token (angle negated when inverse). */
    void (*rope)(v4_backend *be, float *x, int n, int heads, int head_dim, int rope_dim, const float *inv_freq,
                 const v4_step *st, bool inverse);
    /* mHC before a sublayer: x = sum_s pre[s] X[s], post and Sinkhorn-normalised comb. */
    void (*hc_pre)(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn,
                   const float *base, const float *scale, int n, const v4_hc_shape *sh);
    /* mHC after a sublayer: X'[s] = post[s] * y + sum_j comb[j][s] X[j]. */
    void (*hc_post)(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                    const v4_hc_shape *sh);
    /* Output collapse: x = sum_s pre[s] X[s] with the head's mHC parameters. */
    void (*hc_head)(v4_backend *be, float *x, const float *X, const float *fn, const float *base,
                    const float *scale, int n, const v4_hc_shape *sh);
    /* Compressor update over the step's tokens, per sequence in order:
     * accumulates into the slot's accumulators and writes every entry that
     * closes (normalised with norm_w, roped at its first position) into the
     * sequence's blocks. a, z: [n][width]; ape: [ratio][width]. */
    void (*compress)(v4_backend *be, void *entries, float *acc, const float *a, const float *z, const float *ape,
                     const float *norm_w, const float *inv_freq, const v4_step *st, const v4_comp_shape *sh);
    /* Lightning indexer: sel[t][0..topk) = indices of the topk highest
     * scores sum_h wI[t][h] * relu(qI[t][h] . K_i) * c^-1/2 over eligible
     * entries i < floor((pos+1)/ratio), ascending; -1 pads. */
    void (*index_topk)(v4_backend *be, int32_t *sel, const float *qI, const float *wI, const void *keys,
                       const v4_step *st, int n_heads, int head_dim, int ratio, int entries_per_block,
                       int block_tokens, int topk);
    /* Attention over the window (current rows of kv for positions in this
     * step, the ring before it), CSA-selected or HCA-closed entries, and the
     * per-head sink logit. o, q: [n][H][d]; kv: [n][d]. */
    void (*attention)(v4_backend *be, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                      const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh);
    /* Writes the step's last W kv rows of each sequence into its ring. */
    void (*ring_store)(v4_backend *be, v4_layer_kv *lkv, const float *kv, const v4_step *st, int window,
                       int head_dim);
    /* Routing: ids/w [n][k] from gate logits [n][E]; bias NULL for hash
     * layers, which take ids from tid2eid[tok_id]. */
    void (*moe_route)(v4_backend *be, int32_t *ids, float *w, const float *logits, const float *bias,
                      const v4_mat *tid2eid, const v4_step *st, int n_experts, int k, float route_scale);
    /* y[t] = sum_j w[t][j] * expert_{ids[t][j]}(x[t]) with clamped SwiGLU.
     * scratch: backend memory of at least moe_scratch_floats(n, k, D, I, E)
     * floats, for the token permutation and the experts' intermediates. */
    void (*moe_experts)(v4_backend *be, float *y, const float *x, const int32_t *ids, const float *w, int n,
                        int k, const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, float limit, float *scratch);
    /* h = silu(min(g, limit)) * clamp(u, -limit, limit) */
    void (*swiglu)(v4_backend *be, float *h, const float *g, const float *u, int64_t count, float limit);
    /* y += x */
    void (*add)(v4_backend *be, float *y, const float *x, int64_t count);
    /* y *= s */
    void (*scale)(v4_backend *be, float *y, float s, int64_t count);
    /* dst[i] = src[rows[i]] for rows of `width` floats */
    void (*gather_rows)(v4_backend *be, float *dst, const float *src, const int32_t *rows, int n, int64_t width);
    /* One token per row of logits [n][vocab] with per-row params (backend
     * memory): p = softmax(logits / T) restricted to the top_k most likely
     * tokens (ties to the lower id), then to the smallest prefix of them, in
     * descending probability, whose mass reaches top_p; u = rng_uniform(seed,
     * step); the token is the first of that prefix whose cumulative kept
     * mass exceeds u * (kept mass). */
    void (*sample)(v4_backend *be, int32_t *ids, const float *logits, int n, int64_t vocab,
                   const v4_sample_params *p);

    /* Timing for profiles: mark `idx` (< V4_MAX_MARKS) records the point in
     * the queue where it is issued; after sync, elapsed(a, b) is the time in
     * milliseconds between two marks. */
    void (*timer_mark)(v4_backend *be, int idx);
    double (*timer_elapsed)(v4_backend *be, int a, int b);
    /* Measures the device's ceilings (seconds of work): copy bandwidth, and
     * bf16 / FP8 matrix-product rates where the backend has a library for
     * them (NaN otherwise). */
    int (*measure_peaks)(v4_backend *be, struct v4_peaks *out, v4_err *err);

    /* Graph capture; NULL where a backend has none. Ops issued between
     * capture_begin and capture_end are recorded instead of run, and
     * graph_launch replays them with whatever the metadata buffers hold. */
    int (*capture_begin)(v4_backend *be, v4_err *err);
    int (*capture_end)(v4_backend *be, void **graph, v4_err *err);
    int (*graph_launch)(v4_backend *be, void *graph, v4_err *err);
    void (*graph_free)(v4_backend *be, void *graph);
} v4_backend_ops;

struct v4_backend {
    const v4_backend_ops *ops;
    dtype_t fp8_dialect; /* the FP8 dialect this backend computes in */
    int kv_elem_bytes;   /* bytes per stored KV channel (memory budgets) */
};

/* Scratch the moe_experts op may use: per (token, choice) pair an input row,
 * an output row and three intermediate rows, plus per-expert counters. */
static inline int64_t moe_scratch_floats(int64_t n, int64_t k, int64_t D, int64_t I, int64_t E)
{
    return n * k * (2 * D + 3 * I + 2) + 4 * (E + 1);
}

/* The CPU reference of the `sample` op for one row (also used by tests of
 * GPU sampling): see v4_backend_ops.sample. `scratch` holds 2*vocab floats. */
int32_t sample_row_ref(const float *logits, int64_t vocab, const v4_sample_params *p, float *scratch);

/* Backends this build has. */
int backend_cpu_create(int n_threads, dtype_t fp8_dialect, v4_backend **out, v4_err *err);
void backend_cpu_destroy(v4_backend *be);

#endif
