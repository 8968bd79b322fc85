/* Internals of the CPU backend: the fp32 reference implementation of every
 * op of backend/backend.h, threaded over all cores. Each op file holds one
 * op family; these are their entry points. */
#ifndef V4_BACKEND_CPU_CPU_H
#define V4_BACKEND_CPU_CPU_H

#include "backend/backend.h"
#include "backend/cpu/threadpool.h"

typedef struct cpu_backend {
    v4_backend base;
    tp_pool *tp;
    /* fixed step-metadata buffers, grown when a larger step arrives */
    int32_t *meta;
    size_t meta_cap;
    v4_err err; /* first op failure since the last sync */
    int failed;
    double marks[V4_MAX_MARKS]; /* timer marks, ms */
    dtype_t kv_round; /* F32: KV stored exactly; BF16 or an FP8 dialect: rounded as a GPU stores it */
} cpu_backend;

/* Rounds a KV vector as it would be stored in the backend's KV type (bf16,
 * or FP8 in the backend's dialect with one scale per vector), so the CPU
 * reproduces a GPU's quantized KV. No-op for fp32 KV. */
void cpu_kv_round(v4_backend *be, float *v, int64_t n);

void cpu_timer_mark(v4_backend *be, int idx);
double cpu_timer_elapsed(v4_backend *be, int a, int b);
int cpu_measure_peaks(v4_backend *be, v4_peaks *p, v4_err *err);

/* Records an op failure (reported by sync). */
void cpu_fail(v4_backend *be, const char *msg);

static inline tp_pool *cpu_tp(v4_backend *be) { return ((cpu_backend *)be)->tp; }

/* Dot product with a fixed summation order (8 partial sums), so a row's
 * result never depends on which other rows share the call. */
float cpu_dot(const float *a, const float *b, int64_t n);

void cpu_embed(v4_backend *be, float *X, const v4_mat *embed, const v4_step *st, int n_streams);
void cpu_linear(v4_backend *be, float *y, const float *x, int n, const v4_mat *w, int groups);
void cpu_rmsnorm(v4_backend *be, float *y, const float *x, const float *w, int rows, int dim, float eps);
void cpu_rope(v4_backend *be, float *x, int n, int heads, int head_dim, int rope_dim, const float *inv_freq,
              const v4_step *st, bool inverse);
void cpu_rope_row(float *x, int head_dim, int rope_dim, const float *inv_freq, double pos);
void cpu_hc_pre(v4_backend *be, float *x, float *post, float *comb, const float *X, const float *fn,
                const float *base, const float *scale, int n, const v4_hc_shape *sh);
void cpu_hc_post(v4_backend *be, float *X, const float *y, const float *post, const float *comb, int n,
                 const v4_hc_shape *sh);
void cpu_hc_head(v4_backend *be, float *x, const float *X, const float *fn, const float *base, const float *scale,
                 int n, const v4_hc_shape *sh);
void cpu_compress(v4_backend *be, void *entries, float *acc, const float *a, const float *z, const float *ape,
                  const float *norm_w, const float *inv_freq, const v4_step *st, const v4_comp_shape *sh);
void cpu_index_topk(v4_backend *be, int32_t *sel, const float *qI, const float *wI, const void *keys,
                    const v4_step *st, int n_heads, int head_dim, int ratio, int entries_per_block,
                    int block_tokens, int topk);
void cpu_attention(v4_backend *be, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                   const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh);
void cpu_ring_store(v4_backend *be, v4_layer_kv *lkv, const float *kv, const v4_step *st, int window, int head_dim);
void cpu_moe_route(v4_backend *be, int32_t *ids, float *w, const float *logits, const float *bias,
                   const v4_mat *tid2eid, const v4_step *st, int n_experts, int k, float route_scale);
void cpu_moe_experts(v4_backend *be, float *y, const float *x, const int32_t *ids, const float *w, int n, int k,
                     const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, float limit, float *scratch);
void cpu_swiglu(v4_backend *be, float *h, const float *g, const float *u, int64_t count, float limit);
void cpu_add(v4_backend *be, float *y, const float *x, int64_t count);
void cpu_scale(v4_backend *be, float *y, float s, int64_t count);
void cpu_gather_rows(v4_backend *be, float *dst, const float *src, const int32_t *rows, int n, int64_t width);
void cpu_sample(v4_backend *be, int32_t *ids, const float *logits, int n, int64_t vocab, const v4_sample_params *p);

/* Address of compressed entry `i` of the sequence whose block-table row is
 * `bt` (entries of `width` floats, `epb` per block). */
static inline float *cpu_entry(void *pool, const int32_t *bt, int64_t i, int epb, int64_t width)
{
    return (float *)pool + ((int64_t)bt[i / epb] * epb + i % epb) * width;
}

#endif
