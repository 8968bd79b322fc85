/* Internals of the CUDA backend shared by its .cu files: the backend state,
 * error handling, weight descriptors, and the entry points of each op family
 * (one .cu file per family; cu_backend.cu assembles the op table).
 *
 * Capture safety: no op allocates, synchronises or reads host memory. Per-
 * step metadata lives in fixed device buffers refreshed by set_step; loop
 * bounds that vary from step to step (context lengths, tokens per expert,
 * selected entries) are read by the kernels from device memory; grid sizes
 * depend only on the step's shape (tokens, sequences), which is fixed for a
 * captured graph. Scratch buffers are sized outside ops (reserve_step,
 * alloc_kv, or passed in by the caller) and only grow before a graph exists
 * or are kept alive for the graphs that use them. */
#ifndef V4_BACKEND_CUDA_CU_INTERNAL_H
#define V4_BACKEND_CUDA_CU_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/gpu.h"

/* Weight storage formats the matrix kernels are instantiated for. */
enum { CW_F32, CW_BF16, CW_F16, CW_FP8, CW_FP8FNUZ, CW_MXFP4 };
/* Element types of the stored KV state. */
enum { KV_F32, KV_BF16, KV_FP8, KV_FP8FNUZ };

/* A matrix as the kernels see it (device pointers). */
typedef struct cu_wdesc {
    const uint8_t *data;
    const uint8_t *scale; /* UE8M0: FP8 per 128x128 block, MXFP4 per 32 inputs */
    int64_t rows, cols;
} cu_wdesc;

/* A KV storage array and its per-vector FP8 scales (NULL otherwise), so ops
 * that receive only the data pointer (compress, index_topk) find them. */
typedef struct cu_kv_reg {
    const void *data;
    float *scale;
} cu_kv_reg;

/* Device descriptors of one layer's routed experts, [w1 | w2 | w3][n]. */
typedef struct cu_expert_table {
    cu_wdesc *host; /* the descriptors it was built from, compared on each use */
    cu_wdesc *dev;
    int n;
    int fmt13, fmt2; /* CW_* of w1/w3 and of w2 */
    bool data16;     /* every matrix's data 16-byte aligned (the matrix-vector kernels' loads) */
} cu_expert_table;

/* The cuBLASLt path of the linear layers (blas.cu; NVIDIA builds). */
typedef struct cu_blas cu_blas;

typedef struct cu_backend {
    v4_backend base;
    int device, n_sm;
    size_t smem_optin; /* largest dynamic shared memory a block may opt into */
    size_t idx_smem_max; /* dynamic shared memory granted to the indexer kernel */
    cudaStream_t stream;
    int kv_type;      /* KV_* */
    bool debug;       /* V4_CUDA_DEBUG=1 */
    bool plain;       /* V4_CUDA_PLAIN=1: SIMT matrix kernels instead of the tensor-core ones */
    bool capturing;
    int failed;       /* sticky: first failure since the last sync */
    v4_err err;
    /* step metadata: device buffer and pinned host staging, same layout */
    int32_t *meta_dev, *meta_host;
    int cap_tok, cap_seq, cap_blocks;
    cudaEvent_t meta_copied; /* the last staging -> device copy */
    unsigned meta_gen;       /* bumps when the buffers move; stale graphs refuse to run */
    /* indexer score scratch: idx_blocks blocks of idx_floats_per_block */
    float *idx_scratch;
    size_t idx_floats_per_block;
    int idx_blocks;
    int idx_tc_blocks; /* the tensor-core indexer's grid: its resident blocks, at most idx_blocks */
    /* buffers replaced while graphs may still point at them; freed at destroy */
    void **retired;
    size_t n_retired;
    int live_graphs;
    cu_kv_reg *kvreg;
    size_t n_kvreg, cap_kvreg;
    cu_expert_table *etab;
    size_t n_etab;
    int moe_n_experts; /* from the last moe_route (moe_experts is not told E) */
    cudaEvent_t *marks; /* timer marks, created on first use (profile.cu) */
    float *hc_part;        /* mHC mixing partials, grown outside capture (mhc.cu) */
    size_t hc_part_bytes;
    float *att_part;       /* attention's split-key run records, grown outside capture (attention_tc.cu) */
    size_t att_part_bytes;
    uint16_t *att_kvb;     /* the step's kv rows in bf16, copied by the attention kernel (attention_tc.cu) */
    size_t att_kvb_bytes;
    uint64_t *smp_best;    /* sampling's per-chunk largest logits, grown outside capture (sample.cu) */
    size_t smp_best_bytes;
    int gemv_max_tokens;   /* steps of at most this many tokens take gemv.cu's kernels (0: none) */
    cu_blas *blas;         /* NULL: no cuBLASLt path (plain mode, V4_CUDA_BLAS=0, no library, HIP) */
} cu_backend;

static inline cu_backend *cu_of(v4_backend *be) { return (cu_backend *)be; }

#ifdef __cplusplus
extern "C" {
#endif

/* Records the first failure (reported by sync). */
void cu_fail(cu_backend *cb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees a device buffer now, or at destroy when graphs may still use it. */
void cu_retire(cu_backend *cb, void *p);
/* Records a CUDA error; true when e is cudaSuccess. */
bool cu_check(cu_backend *cb, cudaError_t e, const char *what);
/* After every launch: the launch error, and in debug mode outside capture a
 * synchronisation so that faults are blamed on the right kernel. */
void cu_launched(cu_backend *cb, const char *kernel);
/* CW_* format of a matrix, or -1 when the kernels cannot read it. */
int cu_wfmt(const v4_mat *m);
cu_wdesc cu_desc(const v4_mat *m);
/* The per-vector scales registered with a KV array (NULL when not FP8). */
float *cu_kv_scale(cu_backend *cb, const void *data);
/* Device descriptor table of n experts; built outside capture on first use,
 * NULL (failure recorded) when it cannot be. */
const cu_expert_table *cu_experts(cu_backend *cb, const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, int n);
/* A device scratch buffer *buf of *have bytes grown to at least `bytes`
 * (never during capture: a bucket's first step runs eagerly before it is
 * captured); false when it is too small and cannot grow now, recorded as
 * the op `what`'s failure unless what is NULL (the caller has another path). */
bool cu_grow(cu_backend *cb, void **buf, size_t *have, size_t bytes, const char *what);
/* A token count in [lo, hi] from the environment into *value (unset:
 * unchanged); -1 with err naming the variable when malformed. */
int cu_env_count(const char *name, int lo, int hi, int *value, v4_err *err);
/* Grid size for grid-stride loops over `count` items. */
unsigned cu_grid(int64_t count, int threads);
/* dst = src rounded to bf16 (nearest even), count values: the activations
 * of the cuBLASLt path and of the tensor-core MoE kernels (gemm_tc.cu,
 * NVIDIA builds). */
void cu_to_bf16(cu_backend *cb, uint16_t *dst, const float *src, int64_t count);

/* Profiles and ceilings (profile.cu). */
void cu_timer_mark(v4_backend *be, int idx);
double cu_timer_elapsed(v4_backend *be, int a, int b);
int cu_measure_peaks(v4_backend *be, v4_peaks *p, v4_err *err);
void cu_timer_free(cu_backend *cb);
int cu_sync(v4_backend *be, v4_err *err);

/* Op families (signatures as in backend.h). */
void cu_embed(v4_backend *be, float *X, const v4_mat *embed, const v4_step *st, int n_streams);
void cu_linear(v4_backend *be, float *y, const float *x, int n, const v4_mat *w, int groups);
void cu_rmsnorm(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps);
void cu_rope(v4_backend *be, float *x, int n, int heads, int head_dim, int rope_dim, const float *inv_freq,
             const v4_step *st, bool inverse);
void cu_hc_pre(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn, const float *base,
               const float *scale, int n, const v4_hc_shape *sh);
void cu_hc_post(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                const v4_hc_shape *sh);
void cu_hc_head(v4_backend *be, float *x, const float *X, const float *fn, const float *base, const float *scale,
                int n, const v4_hc_shape *sh);
void cu_compress(v4_backend *be, void *entries, float *acc, const float *a, const float *z, const float *ape,
                 const float *norm_w, const float *inv_freq, const v4_step *st, const v4_comp_shape *sh);
void cu_index_topk(v4_backend *be, int32_t *sel, const float *qI, const float *wI, const void *keys,
                   const v4_step *st, int n_heads, int head_dim, int ratio, int entries_per_block, int block_tokens,
                   int topk);
void cu_attention(v4_backend *be, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                  const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh);
void cu_ring_store(v4_backend *be, v4_layer_kv *lkv, const float *kv, const v4_step *st, int window, int head_dim);
void cu_moe_route(v4_backend *be, int32_t *ids, float *w, const float *logits, const float *bias,
                  const v4_mat *tid2eid, const v4_step *st, int n_experts, int k, float route_scale);
void cu_moe_experts(v4_backend *be, float *y, const float *x, const int32_t *ids, const float *w, int n, int k,
                    const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, float limit, float *scratch);
void cu_swiglu(v4_backend *be, float *h, const float *g, const float *u, int64_t count, float limit);
void cu_add(v4_backend *be, float *y, const float *x, int64_t count);
void cu_scale(v4_backend *be, float *y, float s, int64_t count);
void cu_gather_rows(v4_backend *be, float *dst, const float *src, const int32_t *rows, int n, int64_t width);
void cu_sample(v4_backend *be, int32_t *ids, const float *logits, int n, int64_t vocab, const v4_sample_params *p);

/* The cuBLASLt path (blas.cu). init leaves cb->blas NULL where the path is
 * off or the library absent (-1 with err for a malformed V4_CUDA_BLAS* or
 * no host memory);
 * cu_blas_linear computes the layer and returns true, or returns false
 * having done nothing (the caller's kernels then compute it); forget drops
 * the copies and scales kept for a weight that is being freed. */
int cu_blas_init(cu_backend *cb, v4_err *err);
void cu_blas_destroy(cu_backend *cb);
bool cu_blas_linear(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups);
void cu_blas_forget(cu_backend *cb, const void *weight);
bool cu_blas_describe(const cu_backend *cb, char *buf, size_t n);

/* The operands of the FP8 products (fp8_quant.cu; layouts there): x (n
 * tokens of C inputs, C a multiple of 128) as e4m3fn codes q ([ldn][C],
 * zero past n) and scales [C/128][ldn]; a weight's UE8M0 128x128 block
 * scales as fp32 [RB][ldk]. */
void cu_fp8_quant_act(cu_backend *cb, uint8_t *q, float *scale, const float *x, int n, int ldn, int64_t C);
void cu_fp8_block_scales(cu_backend *cb, float *dst, const uint8_t *ue8m0, int64_t rows, int64_t cols, int64_t ldk);

/* The matrix-vector path of the linear layers and experts (gemv.cu): init reads
 * V4_CUDA_GEMV_MAX_TOKENS (-1 with err when malformed); cu_gemv_linear
 * computes the layer and returns true, or returns false having done
 * nothing (a step too large, a format or shape it does not take). */
int cu_gemv_init(cu_backend *cb, v4_err *err);
bool cu_gemv_linear(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups);
/* The routed experts of n tokens (k choices each) the same way: h and out
 * as moe_experts' scratch lays them out (pairs x I, pairs x D, fp32), pair
 * p = token p / k's choice p % k; false (nothing done) where the path does
 * not take the step. */
bool cu_moe_gemv(cu_backend *cb, float *h, float *out, const float *x, const int32_t *ids,
                 const cu_expert_table *tab, int E, int k, int n, int64_t D, int64_t I, float limit);

/* One-time kernel attributes (dynamic shared memory above 48 KB). */
int cu_attention_init(cu_backend *cb, v4_err *err);
int cu_indexer_init(cu_backend *cb, v4_err *err);

#ifdef __cplusplus
}
#endif

#endif
