/* The CUDA backend's host part: creation, device memory, weight upload in
 * checkpoint formats, KV storage, step metadata, errors, graph capture, and
 * the op table (kernels live in the other .cu files of this folder). The
 * same source builds as HIP (backend/gpu.h maps the runtime names). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_device.cuh"

extern "C" {

void cu_fail(cu_backend *cb, const char *fmt, ...)
{
    if (cb->failed)
        return; /* keep the first failure: later ones are usually its consequences */
    cb->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cb->err.msg, sizeof cb->err.msg, fmt, ap);
    va_end(ap);
}

bool cu_check(cu_backend *cb, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return true;
    cu_fail(cb, "cuda: %s: %s", what, cudaGetErrorString(e));
    return false;
}

void cu_launched(cu_backend *cb, const char *kernel)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        cu_fail(cb, "cuda: launching %s: %s", kernel, cudaGetErrorString(e));
        return;
    }
    if (cb->debug && !cb->capturing) {
        e = cudaStreamSynchronize(cb->stream);
        if (e != cudaSuccess)
            cu_fail(cb, "cuda: kernel %s: %s", kernel, cudaGetErrorString(e));
    }
}

bool cu_grow(cu_backend *cb, void **buf, size_t *have, size_t bytes, const char *what)
{
    if (bytes <= *have)
        return true;
    if (cb->capturing) {
        if (what)
            cu_fail(cb, "%s: scratch of %zu bytes needed during capture", what, bytes);
        return false;
    }
    void *p = NULL;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (what)
            cu_fail(cb, "%s: cudaMalloc of %zu bytes of scratch: %s", what, bytes, cudaGetErrorString(e));
        return false;
    }
    cu_retire(cb, *buf); /* graphs may still read the old one */
    *buf = p;
    *have = bytes;
    return true;
}

int cu_env_count(const char *name, int lo, int hi, int *value, v4_err *err)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    const long t = strtol(v, &end, 10);
    if (*end || t < lo || t > hi)
        return v4_errf(err, "%s='%s': use a number of tokens from %d to %d", name, v, lo, hi);
    *value = (int)t;
    return 0;
}

unsigned cu_grid(int64_t count, int threads)
{
    int64_t b = (count + threads - 1) / threads;
    if (b > 65536)
        b = 65536; /* grid-stride loops cover the rest */
    return (unsigned)(b < 1 ? 1 : b);
}

int cu_wfmt(const v4_mat *m)
{
    switch (m->fmt) {
    case WF_PLAIN:
        return m->dtype == DT_F32 ? CW_F32 : m->dtype == DT_BF16 ? CW_BF16 : m->dtype == DT_F16 ? CW_F16 : -1;
    case WF_FP8:
        return m->dtype == DT_F8_E4M3 ? CW_FP8 : m->dtype == DT_F8_E4M3FNUZ ? CW_FP8FNUZ : -1;
    case WF_MXFP4:
        return m->cols % V4_MXFP4_GROUP == 0 ? CW_MXFP4 : -1;
    default:
        return -1;
    }
}

cu_wdesc cu_desc(const v4_mat *m)
{
    cu_wdesc d = {(const uint8_t *)m->data, m->scale, m->rows, m->cols};
    return d;
}

float *cu_kv_scale(cu_backend *cb, const void *data)
{
    for (size_t i = 0; i < cb->n_kvreg; i++)
        if (cb->kvreg[i].data == data)
            return cb->kvreg[i].scale;
    return NULL;
}

/* Frees p now, or at destroy when a graph may still point at it. */
extern "C" void cu_retire(cu_backend *cb, void *p)
{
    if (!p)
        return;
    if (cb->live_graphs == 0) {
        cudaFree(p);
        return;
    }
    void **n = (void **)realloc(cb->retired, (cb->n_retired + 1) * sizeof *n);
    if (!n) {
        cu_fail(cb, "out of host memory");
        return;
    }
    cb->retired = n;
    cb->retired[cb->n_retired++] = p;
}

/* Whether table t describes exactly these matrices (addresses, shapes, formats). */
static bool table_matches(const cu_expert_table *t, const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, int n)
{
    if (t->n != n || t->fmt13 != cu_wfmt(&w1[0]) || t->fmt2 != cu_wfmt(&w2[0]))
        return false;
    const v4_mat *ms[3] = {w1, w2, w3};
    for (int j = 0; j < 3; j++)
        for (int e = 0; e < n; e++) {
            const cu_wdesc *h = &t->host[j * n + e];
            const v4_mat *m = &ms[j][e];
            if (h->data != m->data || h->scale != m->scale || h->rows != m->rows || h->cols != m->cols ||
                cu_wfmt(m) != (j == 1 ? t->fmt2 : t->fmt13))
                return false;
        }
    return true;
}

const cu_expert_table *cu_experts(cu_backend *cb, const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, int n)
{
    for (size_t i = 0; i < cb->n_etab; i++)
        if (table_matches(&cb->etab[i], w1, w2, w3, n))
            return &cb->etab[i];
    if (cb->capturing) {
        cu_fail(cb, "moe_experts: the expert table of '%s' is first needed during graph capture; run the step "
                    "once eagerly first",
                w1[0].name ? w1[0].name : "?");
        return NULL;
    }
    const int f13 = cu_wfmt(&w1[0]), f2 = cu_wfmt(&w2[0]);
    for (int e = 0; e < n; e++) {
        const v4_mat *m[3] = {&w1[e], &w2[e], &w3[e]};
        for (int j = 0; j < 3; j++) {
            const v4_mat *r = j == 1 ? &w2[0] : &w1[0];
            if (!m[j]->data || cu_wfmt(m[j]) != (j == 1 ? f2 : f13) || m[j]->rows != r->rows ||
                m[j]->cols != r->cols || f13 < 0 || f2 < 0) {
                cu_fail(cb, "moe_experts: expert matrix '%s' is missing or differs in format or shape from '%s'",
                        m[j]->name ? m[j]->name : "?", r->name ? r->name : "?");
                return NULL;
            }
        }
    }
    cu_expert_table t;
    memset(&t, 0, sizeof t);
    t.n = n;
    t.fmt13 = f13;
    t.fmt2 = f2;
    t.host = (cu_wdesc *)malloc(3 * (size_t)n * sizeof(cu_wdesc));
    cu_expert_table *nt = (cu_expert_table *)realloc(cb->etab, (cb->n_etab + 1) * sizeof *nt);
    if (!t.host || !nt) {
        free(t.host);
        if (nt)
            cb->etab = nt;
        cu_fail(cb, "out of host memory for an expert table");
        return NULL;
    }
    cb->etab = nt;
    for (int e = 0; e < n; e++) {
        t.host[e] = cu_desc(&w1[e]);
        t.host[n + e] = cu_desc(&w2[e]);
        t.host[2 * n + e] = cu_desc(&w3[e]);
    }
    t.data16 = true;
    for (int j = 0; j < 3 * n; j++)
        t.data16 = t.data16 && (uintptr_t)t.host[j].data % 16 == 0;
    if (!cu_check(cb, cudaMalloc((void **)&t.dev, 3 * (size_t)n * sizeof(cu_wdesc)), "allocating an expert table") ||
        !cu_check(cb,
                  cudaMemcpyAsync(t.dev, t.host, 3 * (size_t)n * sizeof(cu_wdesc), cudaMemcpyHostToDevice,
                                  cb->stream),
                  "uploading an expert table")) {
        free(t.host);
        return NULL;
    }
    cb->etab[cb->n_etab++] = t;
    return &cb->etab[cb->n_etab - 1];
}

} /* extern "C" */

/* ---- memory ---- */

static void *cu_alloc(v4_backend *be, size_t bytes, v4_err *err)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        v4_errf(err, "cuda: allocating %zu bytes of device memory: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_free(v4_backend *be, void *p)
{
    if (p)
        cu_retire(cu_of(be), p);
}

static int cu_upload(v4_backend *be, void *dst, const void *src, size_t bytes, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (cb->capturing)
        return v4_errf(err, "cuda: upload during graph capture");
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: uploading %zu bytes: %s", bytes, cudaGetErrorString(e));
    return 0;
}

static int cu_download(v4_backend *be, void *dst, const void *src, size_t bytes, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (cb->capturing)
        return v4_errf(err, "cuda: download during graph capture");
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(cb->stream);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: downloading %zu bytes: %s", bytes, cudaGetErrorString(e));
    return 0;
}

static int cu_upload_mat(v4_backend *be, v4_mat *dst, const v4_mat *src, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    const char *name = src->name ? src->name : "?";
    if (src->fmt == WF_FP8 && src->dtype != be->fp8_dialect)
        return v4_errf(err, "tensor '%s' holds %s but this backend computes in %s; convert at load", name,
                       dt_name(src->dtype), dt_name(be->fp8_dialect));
    if (src->fmt == WF_I32 ? (src->dtype != DT_I32 && src->dtype != DT_I64) : cu_wfmt(src) < 0)
        return v4_errf(err, "tensor '%s': the CUDA backend cannot compute with %s weights", name, dt_name(src->dtype));
    const size_t nb = mat_bytes(src), ns = mat_scale_bytes(src);
    void *d = NULL, *s = NULL;
    if (!(d = cu_alloc(be, nb, err)) || (ns && !(s = cu_alloc(be, ns, err)))) {
        cudaFree(d);
        return v4_err_wrap(err, "tensor '%s'", name);
    }
    cudaError_t e = cudaMemcpyAsync(d, src->data, nb, cudaMemcpyHostToDevice, cb->stream);
    if (e == cudaSuccess && ns)
        e = cudaMemcpyAsync(s, src->scale, ns, cudaMemcpyHostToDevice, cb->stream);
    if (e != cudaSuccess) {
        cudaFree(d);
        cudaFree(s);
        return v4_errf(err, "cuda: uploading tensor '%s': %s", name, cudaGetErrorString(e));
    }
    *dst = *src;
    dst->data = d;
    dst->scale = (const uint8_t *)s;
    dst->backend_owned = true;
    return 0;
}

static void cu_free_mat(v4_backend *be, v4_mat *m)
{
    if (!m->backend_owned)
        return;
#if GPU_HAS_CUBLASLT
    cu_blas_forget(cu_of(be), m->data);
#endif
    cu_retire(cu_of(be), (void *)m->data);
    cu_retire(cu_of(be), (void *)m->scale);
    m->data = NULL;
    m->scale = NULL;
    m->backend_owned = false;
}

/* ---- KV storage ---- */

static int kv_register(cu_backend *cb, const void *data, float *scale, v4_err *err)
{
    if (!data)
        return 0;
    if (cb->n_kvreg == cb->cap_kvreg) {
        size_t cap = cb->cap_kvreg ? 2 * cb->cap_kvreg : 64;
        cu_kv_reg *n = (cu_kv_reg *)realloc(cb->kvreg, cap * sizeof *n);
        if (!n)
            return v4_errf(err, "out of host memory");
        cb->kvreg = n;
        cb->cap_kvreg = cap;
    }
    cb->kvreg[cb->n_kvreg].data = data;
    cb->kvreg[cb->n_kvreg].scale = scale;
    cb->n_kvreg++;
    return 0;
}

static void kv_unregister(cu_backend *cb, const void *data)
{
    for (size_t i = 0; i < cb->n_kvreg; i++)
        if (cb->kvreg[i].data == data) {
            cb->kvreg[i] = cb->kvreg[--cb->n_kvreg];
            return;
        }
}


/* Zeroed device array (state starts defined, so sanitizers see no garbage). */
static void *kv_array(cu_backend *cb, size_t bytes, v4_err *err)
{
    void *p = cu_alloc(&cb->base, bytes, err);
    if (p && cudaMemsetAsync(p, 0, bytes ? bytes : 16, cb->stream) != cudaSuccess) {
        cudaFree(p);
        v4_errf(err, "cuda: clearing KV storage");
        return NULL;
    }
    return p;
}

static void cu_free_kv(v4_backend *be, v4_layer_kv *kv)
{
    cu_backend *cb = cu_of(be);
    kv_unregister(cb, kv->entries);
    kv_unregister(cb, kv->idx_keys);
    void *ps[] = {kv->ring, kv->entries, kv->idx_keys, kv->comp_acc, kv->idx_acc, kv->ring_scale, kv->entry_scale,
                  kv->idx_scale};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        cu_free(be, ps[i]);
    memset(kv, 0, sizeof *kv);
}

/* The indexer's per-block score scratch, for the longest context of g. */
static int reserve_idx_scratch(cu_backend *cb, size_t per_block, v4_err *err)
{
    if (per_block <= cb->idx_floats_per_block)
        return 0;
    float *p = (float *)cu_alloc(&cb->base, per_block * (size_t)cb->idx_blocks * sizeof(float), err);
    if (!p)
        return v4_err_wrap(err, "indexer scratch");
    cu_retire(cb, cb->idx_scratch);
    cb->idx_scratch = p;
    cb->idx_floats_per_block = per_block;
    return 0;
}

static int cu_alloc_kv(v4_backend *be, const kv_geom *g, int layer, v4_layer_kv *kv, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    const kv_layer_geom *lg = &g->layer[layer];
    const size_t es = kv_elem_size(cb->kv_type);
    const bool fp8 = cb->kv_type == KV_FP8 || cb->kv_type == KV_FP8FNUZ;
    const size_t ring_vecs = (size_t)g->n_slots * g->window, ent_vecs = (size_t)g->n_blocks * lg->entries_per_block;
    memset(kv, 0, sizeof *kv);
    kv->dtype = cb->kv_type == KV_F32 ? DT_F32 : cb->kv_type == KV_BF16 ? DT_BF16 : be->fp8_dialect;
    if (cb->capturing)
        return v4_errf(err, "cuda: alloc_kv during graph capture");
    if (!(kv->ring = kv_array(cb, ring_vecs * lg->head * es, err)))
        goto fail;
    if (fp8 && !(kv->ring_scale = (float *)kv_array(cb, ring_vecs * sizeof(float), err)))
        goto fail;
    if (lg->kind != LAYER_SLIDING) {
        if (!(kv->entries = kv_array(cb, ent_vecs * lg->head * es, err)) ||
            !(kv->comp_acc = (float *)kv_array(
                  cb, (size_t)g->n_slots * lg->n_acc * KV_ACC_FIELDS * lg->head * sizeof(float), err)))
            goto fail;
        if (fp8 && !(kv->entry_scale = (float *)kv_array(cb, ent_vecs * sizeof(float), err)))
            goto fail;
        if (kv_register(cb, kv->entries, kv->entry_scale, err))
            goto fail;
    }
    if (lg->kind == LAYER_CSA) {
        if (!(kv->idx_keys = kv_array(cb, ent_vecs * lg->idx_head * es, err)) ||
            !(kv->idx_acc = (float *)kv_array(
                  cb, (size_t)g->n_slots * lg->n_acc * KV_ACC_FIELDS * lg->idx_head * sizeof(float), err)))
            goto fail;
        if (fp8 && !(kv->idx_scale = (float *)kv_array(cb, ent_vecs * sizeof(float), err)))
            goto fail;
        if (kv_register(cb, kv->idx_keys, kv->idx_scale, err) ||
            reserve_idx_scratch(cb, (size_t)g->max_blocks_per_seq * lg->entries_per_block, err))
            goto fail;
    }
    return 0;
fail:
    cu_free_kv(be, kv);
    return v4_err_wrap(err, "KV storage of layer %d", layer);
}

/* ---- step metadata ----
 * Layout (int32, by capacity so the device view never moves): tok_id,
 * tok_pos, tok_seq [cap_tok each], seq_slot, seq_start, seq_ntok, seq_row
 * [cap_seq each], block_table [cap_seq * cap_blocks]. */

static size_t meta_ints(int tok, int seq, int blocks) { return 3 * (size_t)tok + (size_t)seq * (4 + (size_t)blocks); }

static int cu_reserve_step(v4_backend *be, int max_tokens, int max_seqs, int max_blocks, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (max_tokens <= cb->cap_tok && max_seqs <= cb->cap_seq && max_blocks <= cb->cap_blocks)
        return 0;
    if (cb->capturing)
        return v4_errf(err, "cuda: reserve_step during graph capture");
    int tok = max_tokens > cb->cap_tok ? max_tokens : cb->cap_tok;
    int seq = max_seqs > cb->cap_seq ? max_seqs : cb->cap_seq;
    int blk = max_blocks > cb->cap_blocks ? max_blocks : cb->cap_blocks;
    const size_t bytes = meta_ints(tok, seq, blk) * sizeof(int32_t);
    int32_t *d = NULL, *h = NULL;
    if (cudaMalloc((void **)&d, bytes) != cudaSuccess || cudaMallocHost((void **)&h, bytes) != cudaSuccess) {
        cudaFree(d);
        return v4_errf(err, "cuda: allocating %zu bytes of step metadata", bytes);
    }
    if (cudaMemsetAsync(d, 0, bytes, cb->stream) != cudaSuccess) {
        cudaFree(d);
        cudaFreeHost(h);
        return v4_errf(err, "cuda: clearing step metadata");
    }
    memset(h, 0, bytes);
    if (cb->meta_host) {
        cudaEventSynchronize(cb->meta_copied);
        cudaFreeHost(cb->meta_host);
    }
    cu_retire(cb, cb->meta_dev);
    cb->meta_dev = d;
    cb->meta_host = h;
    cb->cap_tok = tok;
    cb->cap_seq = seq;
    cb->cap_blocks = blk;
    cb->meta_gen++;
    return 0;
}

static int cu_set_step(v4_backend *be, const v4_step *h, v4_step *d, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (cb->capturing)
        return v4_errf(err, "cuda: set_step during graph capture");
    if (h->n_tokens > cb->cap_tok || h->n_seqs > cb->cap_seq || h->max_blocks > cb->cap_blocks ||
        h->n_tokens < 0 || h->n_seqs < 0 || h->max_blocks < 0)
        return v4_errf(err, "step of %d tokens, %d sequences, %d-block tables exceeds the reserved metadata "
                       "(%d, %d, %d)",
                       h->n_tokens, h->n_seqs, h->max_blocks, cb->cap_tok, cb->cap_seq, cb->cap_blocks);
    /* the previous copy must have left the staging buffer before it is refilled */
    cudaError_t e = cudaEventSynchronize(cb->meta_copied);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: waiting for the previous metadata copy: %s", cudaGetErrorString(e));
    const size_t T = (size_t)cb->cap_tok, S = (size_t)cb->cap_seq;
    int32_t *hs = cb->meta_host, *ds = cb->meta_dev;
    const int32_t *src[7] = {h->tok_id, h->tok_pos, h->tok_seq, h->seq_slot, h->seq_start, h->seq_ntok, h->seq_row};
    const size_t off[7] = {0, T, 2 * T, 3 * T, 3 * T + S, 3 * T + 2 * S, 3 * T + 3 * S};
    const size_t cnt[7] = {(size_t)h->n_tokens, (size_t)h->n_tokens, (size_t)h->n_tokens, (size_t)h->n_seqs,
                           (size_t)h->n_seqs, (size_t)h->n_seqs, (size_t)h->n_seqs};
    for (int i = 0; i < 7; i++)
        if (cnt[i])
            memcpy(hs + off[i], src[i], cnt[i] * sizeof(int32_t));
    const size_t bt_off = 3 * T + 4 * S, bt_n = (size_t)h->n_seqs * h->max_blocks;
    if (bt_n)
        memcpy(hs + bt_off, h->block_table, bt_n * sizeof(int32_t));
    e = cudaMemcpyAsync(ds, hs, (bt_off + bt_n) * sizeof(int32_t), cudaMemcpyHostToDevice, cb->stream);
    if (e == cudaSuccess)
        e = cudaEventRecord(cb->meta_copied, cb->stream);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: uploading step metadata: %s", cudaGetErrorString(e));
    *d = *h;
    d->tok_id = ds + off[0];
    d->tok_pos = ds + off[1];
    d->tok_seq = ds + off[2];
    d->seq_slot = ds + off[3];
    d->seq_start = ds + off[4];
    d->seq_ntok = ds + off[5];
    d->seq_row = ds + off[6];
    d->block_table = ds + bt_off;
    return 0;
}

extern "C" int cu_sync(v4_backend *be, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (cb->capturing)
        return v4_errf(err, "cuda: sync during graph capture");
    cudaError_t e = cudaStreamSynchronize(cb->stream);
    if (e != cudaSuccess)
        cu_fail(cb, "cuda: %s", cudaGetErrorString(e));
    if (!cb->failed)
        return 0;
    cb->failed = 0;
    return v4_errf(err, "%s", cb->err.msg);
}

/* ---- graphs ---- */

typedef struct cu_graph {
    cudaGraphExec_t exec;
    unsigned meta_gen;
} cu_graph;

static int cu_capture_begin(v4_backend *be, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    if (cb->capturing)
        return v4_errf(err, "cuda: capture_begin while already capturing");
    if (cb->failed)
        return v4_errf(err, "cuda: capture_begin with an unreported failure: %s", cb->err.msg);
    cudaError_t e = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: beginning graph capture: %s", cudaGetErrorString(e));
    cb->capturing = true;
    return 0;
}

static int cu_capture_end(v4_backend *be, void **graph, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    *graph = NULL;
    if (!cb->capturing)
        return v4_errf(err, "cuda: capture_end without capture_begin");
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &g);
    cb->capturing = false;
    if (cb->failed) {
        if (g)
            cudaGraphDestroy(g);
        cb->failed = 0;
        return v4_errf(err, "during graph capture: %s", cb->err.msg);
    }
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: ending graph capture: %s", cudaGetErrorString(e));
    cu_graph *cg = (cu_graph *)calloc(1, sizeof *cg);
    if (!cg) {
        cudaGraphDestroy(g);
        return v4_errf(err, "out of host memory");
    }
    e = cudaGraphInstantiate(&cg->exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        free(cg);
        return v4_errf(err, "cuda: instantiating a graph: %s", cudaGetErrorString(e));
    }
    cg->meta_gen = cb->meta_gen;
    cb->live_graphs++;
    *graph = cg;
    return 0;
}

static int cu_graph_launch(v4_backend *be, void *graph, v4_err *err)
{
    cu_backend *cb = cu_of(be);
    cu_graph *cg = (cu_graph *)graph;
    if (cg->meta_gen != cb->meta_gen)
        return v4_errf(err, "cuda: graph captured before the step metadata buffers were re-reserved; capture again");
    cudaError_t e = cudaGraphLaunch(cg->exec, cb->stream);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: launching a graph: %s", cudaGetErrorString(e));
    return 0;
}

static void cu_graph_free(v4_backend *be, void *graph)
{
    cu_backend *cb = cu_of(be);
    cu_graph *cg = (cu_graph *)graph;
    if (!cg)
        return;
    cudaStreamSynchronize(cb->stream); /* it may still be running */
    cudaGraphExecDestroy(cg->exec);
    free(cg);
    cb->live_graphs--;
}

/* ---- the op table ---- */

/* Filled by name, so the table does not depend on the field order of
 * v4_backend_ops. Without graphs (V4_CUDA_GRAPHS=0) the capture entries stay
 * NULL and callers run every step eagerly. */
static v4_backend_ops make_ops(bool graphs)
{
    v4_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.alloc = cu_alloc;
    o.free = cu_free;
    o.upload = cu_upload;
    o.download = cu_download;
    o.upload_mat = cu_upload_mat;
    o.free_mat = cu_free_mat;
    o.alloc_kv = cu_alloc_kv;
    o.free_kv = cu_free_kv;
    o.sync = cu_sync;
    o.reserve_step = cu_reserve_step;
    o.set_step = cu_set_step;
    o.embed = cu_embed;
    o.linear = cu_linear;
    o.rmsnorm = cu_rmsnorm;
    o.rope = cu_rope;
    o.hc_pre = cu_hc_pre;
    o.hc_post = cu_hc_post;
    o.hc_head = cu_hc_head;
    o.compress = cu_compress;
    o.index_topk = cu_index_topk;
    o.attention = cu_attention;
    o.ring_store = cu_ring_store;
    o.moe_route = cu_moe_route;
    o.moe_experts = cu_moe_experts;
    o.swiglu = cu_swiglu;
    o.add = cu_add;
    o.scale = cu_scale;
    o.gather_rows = cu_gather_rows;
    o.sample = cu_sample;
    o.timer_mark = cu_timer_mark;
    o.timer_elapsed = cu_timer_elapsed;
    o.measure_peaks = cu_measure_peaks;
    if (graphs) {
        o.capture_begin = cu_capture_begin;
        o.capture_end = cu_capture_end;
        o.graph_launch = cu_graph_launch;
        o.graph_free = cu_graph_free;
    }
    return o;
}

static const v4_backend_ops *ops_table(bool graphs)
{
    static const v4_backend_ops with = make_ops(true), without = make_ops(false);
    return graphs ? &with : &without;
}

extern "C" int backend_cuda_create(int device, dtype_t fp8_dialect, v4_backend **out, v4_err *err)
{
    *out = NULL;
    if (fp8_dialect != DT_F8_E4M3 && fp8_dialect != DT_F8_E4M3FNUZ)
        return v4_errf(err, "the CUDA backend computes in F8_E4M3 or F8_E4M3FNUZ, not %s", dt_name(fp8_dialect));
    const char *kvs = getenv("V4_KV_DTYPE");
    int kv_type;
    if (!kvs || !*kvs || strcmp(kvs, "f32") == 0)
        kv_type = KV_F32;
    else if (strcmp(kvs, "bf16") == 0)
        kv_type = KV_BF16;
    else if (strcmp(kvs, "fp8") == 0)
        kv_type = fp8_dialect == DT_F8_E4M3 ? KV_FP8 : KV_FP8FNUZ;
    else
        return v4_errf(err, "V4_KV_DTYPE='%s': use f32, bf16 or fp8", kvs);
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess)
        return v4_errf(err, "cuda: no usable GPU: %s", cudaGetErrorString(e));
    if (device < 0 || device >= n_dev)
        return v4_errf(err, "cuda: device %d does not exist (%d present)", device, n_dev);
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return v4_errf(err, "cuda: opening device %d: %s", device, cudaGetErrorString(e));
#if GPU_HIP
    if (prop.warpSize != GPU_WARP)
        return v4_errf(err, "hip: device %d (%s, %s) runs %d-lane wavefronts; this build's kernels assume %d",
                       device, prop.name, prop.gcnArchName, prop.warpSize, GPU_WARP);
#else
    if (prop.major < 9)
        return v4_errf(err, "cuda: device %d (%s) is compute capability %d.%d; this build targets sm_90a (Hopper)",
                       device, prop.name, prop.major, prop.minor);
#endif
    cu_backend *cb = (cu_backend *)calloc(1, sizeof *cb);
    if (!cb)
        return v4_errf(err, "out of host memory");
    const char *graphs = getenv("V4_CUDA_GRAPHS"), *dbg = getenv("V4_CUDA_DEBUG"), *plain = getenv("V4_CUDA_PLAIN");
    cb->base.ops = ops_table(!(graphs && strcmp(graphs, "0") == 0));
    cb->base.fp8_dialect = fp8_dialect;
    cb->base.kv_elem_bytes = (int)kv_elem_size(kv_type);
    cb->device = device;
    cb->n_sm = prop.multiProcessorCount;
    cb->smem_optin = GPU_SMEM_OPTIN(prop);
    cb->kv_type = kv_type;
    cb->debug = dbg && strcmp(dbg, "1") == 0;
    cb->plain = !GPU_HAS_MMA_SYNC || (plain && strcmp(plain, "1") == 0); /* no tensor-core kernels under HIP */
    /* the indexer's persistent grid: three blocks a multiprocessor (66 KB
     * of shared memory each on an H100; each with a scratch row of the
     * longest sequence's entries): an 8K prefill's index_topk 7.0 -> 6.2 ms
     * against two */
    cb->idx_blocks = 3 * cb->n_sm;
    if ((e = cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&cb->meta_copied, cudaEventDisableTiming)) != cudaSuccess) {
        backend_cuda_destroy(&cb->base);
        return v4_errf(err, "cuda: creating a stream: %s", cudaGetErrorString(e));
    }
    if (cu_attention_init(cb, err) || cu_indexer_init(cb, err) || cu_gemv_init(cb, err)) {
        backend_cuda_destroy(&cb->base);
        return -1;
    }
#if GPU_HAS_CUBLASLT
    if (cu_blas_init(cb, err)) {
        backend_cuda_destroy(&cb->base);
        return -1;
    }
#endif
    *out = &cb->base;
    return 0;
}

extern "C" bool backend_cuda_describe_linear(v4_backend *be, char *buf, size_t n)
{
#if GPU_HAS_CUBLASLT
    return cu_blas_describe(cu_of(be), buf, n);
#else
    snprintf(buf, n, "plain kernels (no cuBLASLt path in HIP builds)");
    return false;
#endif
}

extern "C" void backend_cuda_destroy(v4_backend *be)
{
    if (!be)
        return;
    cu_backend *cb = cu_of(be);
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
#if GPU_HAS_CUBLASLT
    cu_blas_destroy(cb);
#endif
    for (size_t i = 0; i < cb->n_retired; i++)
        cudaFree(cb->retired[i]);
    for (size_t i = 0; i < cb->n_etab; i++) {
        cudaFree(cb->etab[i].dev);
        free(cb->etab[i].host);
    }
    cudaFree(cb->idx_scratch);
    cudaFree(cb->hc_part);
    cudaFree(cb->att_part);
    cudaFree(cb->att_kvb);
    cudaFree(cb->smp_best);
    cudaFree(cb->meta_dev);
    if (cb->meta_host)
        cudaFreeHost(cb->meta_host);
    if (cb->meta_copied)
        cudaEventDestroy(cb->meta_copied);
    cu_timer_free(cb);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    free(cb->retired);
    free(cb->etab);
    free(cb->kvreg);
    free(cb);
}
