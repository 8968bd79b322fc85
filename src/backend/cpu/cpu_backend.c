/* The CPU backend: host memory, the op table, and matrix "upload" (the CPU
 * reads weights in place from the mapped checkpoint). */
#include "backend/cpu/cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *cpu_alloc(v4_backend *be, size_t bytes, v4_err *err)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        v4_errf(err, "out of host memory allocating %zu bytes", bytes);
    return p;
}

static void cpu_free(v4_backend *be, void *p) { free(p); }

static int cpu_copy(v4_backend *be, void *dst, const void *src, size_t bytes, v4_err *err)
{
    memcpy(dst, src, bytes);
    return 0;
}

static int cpu_upload_mat(v4_backend *be, v4_mat *dst, const v4_mat *src, v4_err *err)
{
    if (src->fmt == WF_FP8 && src->dtype != be->fp8_dialect)
        return v4_errf(err, "tensor '%s' holds %s but this backend computes in %s; convert at load", src->name,
                       dt_name(src->dtype), dt_name(be->fp8_dialect));
    *dst = *src;
    dst->backend_owned = false;
    return 0;
}

static void cpu_free_mat(v4_backend *be, v4_mat *m) { (void)m; }

void cpu_fail(v4_backend *be, const char *msg)
{
    cpu_backend *cb = (cpu_backend *)be;
    if (!cb->failed)
        v4_errf(&cb->err, "%s", msg);
    cb->failed = 1;
}

static int cpu_sync(v4_backend *be, v4_err *err)
{
    cpu_backend *cb = (cpu_backend *)be;
    if (!cb->failed)
        return 0;
    cb->failed = 0;
    return v4_errf(err, "%s", cb->err.msg);
}

static size_t meta_ints(int n_tokens, int n_seqs, int max_blocks)
{
    return (size_t)n_tokens * 3 + (size_t)n_seqs * (4 + (size_t)max_blocks);
}

static int cpu_reserve_step(v4_backend *be, int max_tokens, int max_seqs, int max_blocks, v4_err *err)
{
    cpu_backend *cb = (cpu_backend *)be;
    size_t need = meta_ints(max_tokens, max_seqs, max_blocks);
    if (need > cb->meta_cap) {
        int32_t *n = realloc(cb->meta, need * sizeof *n);
        if (!n)
            return v4_errf(err, "out of memory for step metadata");
        cb->meta = n;
        cb->meta_cap = need;
    }
    return 0;
}

static int cpu_set_step(v4_backend *be, const v4_step *h, v4_step *d, v4_err *err)
{
    cpu_backend *cb = (cpu_backend *)be;
    if (meta_ints(h->n_tokens, h->n_seqs, h->max_blocks) > cb->meta_cap)
        return v4_errf(err, "step of %d tokens, %d sequences exceeds the reserved metadata", h->n_tokens, h->n_seqs);
    int32_t *p = cb->meta;
#define COPY(field, count)                                                                                          \
    do {                                                                                                            \
        memcpy(p, h->field, (size_t)(count) * sizeof(int32_t));                                                     \
        d->field = p;                                                                                               \
        p += (count);                                                                                               \
    } while (0)
    *d = *h;
    COPY(tok_id, h->n_tokens);
    COPY(tok_pos, h->n_tokens);
    COPY(tok_seq, h->n_tokens);
    COPY(seq_slot, h->n_seqs);
    COPY(seq_start, h->n_seqs);
    COPY(seq_ntok, h->n_seqs);
    COPY(seq_row, h->n_seqs);
    COPY(block_table, (size_t)h->n_seqs * h->max_blocks);
#undef COPY
    return 0;
}

static int cpu_alloc_kv(v4_backend *be, const kv_geom *g, int layer, v4_layer_kv *kv, v4_err *err)
{
    const kv_layer_geom *lg = &g->layer[layer];
    memset(kv, 0, sizeof *kv);
    kv->dtype = DT_F32;
    kv->ring = cpu_alloc(be, (size_t)(g->n_slots * g->window * lg->head) * sizeof(float), err);
    if (!kv->ring)
        return -1;
    if (lg->kind != LAYER_SLIDING) {
        kv->entries = cpu_alloc(be, (size_t)(g->n_blocks * lg->entries_per_block * lg->head) * sizeof(float), err);
        kv->comp_acc = cpu_alloc(be, (size_t)(g->n_slots * lg->n_acc * KV_ACC_FIELDS * lg->head) * sizeof(float), err);
        if (!kv->entries || !kv->comp_acc)
            return -1;
    }
    if (lg->kind == LAYER_CSA) {
        kv->idx_keys = cpu_alloc(be, (size_t)(g->n_blocks * lg->entries_per_block * lg->idx_head) * sizeof(float), err);
        kv->idx_acc = cpu_alloc(be, (size_t)(g->n_slots * lg->n_acc * KV_ACC_FIELDS * lg->idx_head) * sizeof(float), err);
        if (!kv->idx_keys || !kv->idx_acc)
            return -1;
    }
    return 0;
}

static void cpu_free_kv(v4_backend *be, v4_layer_kv *kv)
{
    free(kv->ring);
    free(kv->entries);
    free(kv->idx_keys);
    free(kv->comp_acc);
    free(kv->idx_acc);
    memset(kv, 0, sizeof *kv);
}

static const v4_backend_ops CPU_OPS = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .upload_mat = cpu_upload_mat,
    .free_mat = cpu_free_mat,
    .alloc_kv = cpu_alloc_kv,
    .free_kv = cpu_free_kv,
    .sync = cpu_sync,
    .reserve_step = cpu_reserve_step,
    .set_step = cpu_set_step,
    .embed = cpu_embed,
    .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .hc_pre = cpu_hc_pre,
    .hc_post = cpu_hc_post,
    .hc_head = cpu_hc_head,
    .compress = cpu_compress,
    .index_topk = cpu_index_topk,
    .attention = cpu_attention,
    .ring_store = cpu_ring_store,
    .moe_route = cpu_moe_route,
    .moe_experts = cpu_moe_experts,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .scale = cpu_scale,
    .gather_rows = cpu_gather_rows,
    .sample = cpu_sample,
    .timer_mark = cpu_timer_mark,
    .timer_elapsed = cpu_timer_elapsed,
    .measure_peaks = cpu_measure_peaks,
};

void cpu_kv_round(v4_backend *be, float *v, int64_t n)
{
    const dtype_t t = ((cpu_backend *)be)->kv_round;
    if (t == DT_F32)
        return;
    if (t == DT_BF16) {
        for (int64_t i = 0; i < n; i++)
            v[i] = dt_bf16_to_f32(dt_f32_to_bf16(v[i]));
        return;
    }
    const bool fnuz = t == DT_F8_E4M3FNUZ;
    float amax = 0;
    for (int64_t i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(v[i]));
    const float scale = amax > 0 ? amax / (fnuz ? 240.0f : 448.0f) : 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float q = v[i] / scale;
        v[i] = (fnuz ? dt_e4m3fnuz_to_f32(dt_f32_to_e4m3fnuz(q)) : dt_e4m3_to_f32(dt_f32_to_e4m3(q))) * scale;
    }
}

/* V4_KV_DTYPE=f32|bf16|fp8 (the CUDA backend's variable): how KV is rounded. */
static int kv_round_from_env(dtype_t dialect, dtype_t *out, v4_err *err)
{
    const char *e = getenv("V4_KV_DTYPE");
    if (!e || !*e || strcmp(e, "f32") == 0)
        *out = DT_F32;
    else if (strcmp(e, "bf16") == 0)
        *out = DT_BF16;
    else if (strcmp(e, "fp8") == 0)
        *out = dialect;
    else
        return v4_errf(err, "V4_KV_DTYPE is '%s'; use f32, bf16 or fp8", e);
    return 0;
}

int backend_cpu_create(int n_threads, dtype_t fp8_dialect, v4_backend **out, v4_err *err)
{
    *out = NULL;
    if (fp8_dialect != DT_F8_E4M3 && fp8_dialect != DT_F8_E4M3FNUZ)
        return v4_errf(err, "the CPU backend computes in F8_E4M3 or F8_E4M3FNUZ, not %s", dt_name(fp8_dialect));
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return v4_errf(err, "out of memory");
    cb->base.ops = &CPU_OPS;
    cb->base.fp8_dialect = fp8_dialect;
    cb->base.kv_elem_bytes = sizeof(float);
    if (kv_round_from_env(fp8_dialect, &cb->kv_round, err)) {
        free(cb);
        return -1;
    }
    cb->tp = tp_create(n_threads);
    if (!cb->tp) {
        free(cb);
        return v4_errf(err, "cannot start CPU worker threads");
    }
    *out = &cb->base;
    return 0;
}

void backend_cpu_destroy(v4_backend *be)
{
    if (!be)
        return;
    cpu_backend *cb = (cpu_backend *)be;
    tp_destroy(cb->tp);
    free(cb->meta);
    free(cb);
}
