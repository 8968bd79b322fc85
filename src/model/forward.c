/* The forward pass (MODEL.md section 4) as a sequence of backend ops.
 *
 * Decode steps on backends with graph capture (capture_begin != NULL) are
 * replayed from graphs: the batch is padded to a bucket size (1, 2, 4, ...,
 * 512, up to the pool's slot count), so one graph per bucket serves every
 * decode step of that size whatever its sequences, positions and blocks
 * (those arrive through set_step's device buffers). Padding rows are one-
 * token sequences at position 0 of a reserved slot whose block table holds
 * a reserved block: the geometry is allocated with one slot and one block
 * more than the caller's, invisible to it (fwd_geom returns the caller's).
 * A bucket's first step runs eagerly (sizing whatever the backend builds on
 * first use) and is then captured; later steps replay it. */
#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Activation buffers (backend memory), sized for max_tokens rows. */
typedef struct acts {
    float *X;      /* [n][ns][D] residual streams */
    float *x;      /* [n][D] sublayer input */
    float *xn;     /* [n][D] normed input */
    float *post;   /* [n][ns] */
    float *comb;   /* [n][ns][ns] */
    float *qa;     /* [n][q_lora] */
    float *q;      /* [n][H*d] */
    float *kv;     /* [n][d] */
    float *o;      /* [n][H*d] */
    float *oa;     /* [n][G*o_lora] */
    float *y;      /* [n][D] sublayer output */
    float *ys;     /* [n][D] shared expert output */
    float *ca, *cz;/* [n][2d] compressor inputs */
    float *ia, *iz;/* [n][2c] indexer compressor inputs */
    float *qi;     /* [n][h*c] indexer queries */
    float *wi;     /* [n][h] indexer head weights */
    int32_t *sel;  /* [n][topk] */
    float *gl;     /* [n][E] gate logits */
    int32_t *ids;  /* [n][k] */
    float *rw;     /* [n][k] routing weights */
    float *sg, *su, *sh; /* [n][I] shared expert */
    float *moe_scratch;  /* moe_scratch_floats(n, k, D, I, E) */
    float *xg;     /* [n][ns][D] gathered rows for logits */
    float *xh;     /* [n][D] */
    float *logits; /* [n][V] */
    int32_t *logit_rows; /* [n] */
    v4_sample_params *sparams; /* [n] on-device sampling parameters */
    int32_t *ids_out;          /* [n] sampled ids */
} acts;

#define FWD_MAX_BUCKETS 10 /* decode buckets 1, 2, 4, ..., 512 */

typedef struct fwd_bucket {
    int size;
    void *graph; /* NULL until captured */
} fwd_bucket;

struct v4_forward {
    v4_model *m;
    kv_geom g;      /* the caller's geometry */
    kv_geom gi;     /* allocated: with graphs, one reserved slot and block more */
    int max_tokens; /* the caller's step limit */
    int rows;       /* activation rows: max_tokens, or the largest bucket when more */
    acts a;
    bool graphs;
    int n_buckets;
    fwd_bucket bucket[FWD_MAX_BUCKETS];
    int32_t *ident_rows; /* [rows] 0, 1, 2, ...: logit rows of a padded decode step */
    /* profile of the last step when profiling (eager steps only) */
    bool profiling;
    int n_marks;
    uint8_t mark_fam[V4_MAX_MARKS];
    const char *mark_op[V4_MAX_MARKS];
    void **allocs;
    size_t n_allocs;
    v4_layer_kv kv[V4_MAX_LAYERS];
    int n_kv; /* layers whose storage is allocated */
    /* host mirror of the step metadata */
    int32_t *h_tok_id, *h_tok_pos, *h_tok_seq;
    int32_t *h_seq_slot, *h_seq_start, *h_seq_ntok, *h_seq_row, *h_block_table;
    int32_t *h_logit_rows;
};

const kv_geom *fwd_geom(const v4_forward *f) { return &f->g; }

const char *const FWD_FAMILY_NAMES[FAM_COUNT] = {"dense GEMMs", "attention", "indexer", "MoE", "head", "other"};

/* Marks the start of op `name` of family `fam`. */
static void prof(v4_forward *f, fwd_family fam, const char *name)
{
    if (!f->profiling || f->n_marks >= V4_MAX_MARKS - 1)
        return;
    f->mark_fam[f->n_marks] = (uint8_t)fam;
    f->mark_op[f->n_marks] = name;
    f->m->be->ops->timer_mark(f->m->be, f->n_marks++);
}

void fwd_set_profile(v4_forward *f, bool on) { f->profiling = on && f->m->be->ops->timer_mark; }

int fwd_profile(v4_forward *f, double ms[FAM_COUNT], double *total_ms)
{
    for (int i = 0; i < FAM_COUNT; i++)
        ms[i] = 0;
    *total_ms = 0;
    if (f->n_marks < 2)
        return -1;
    v4_backend *be = f->m->be;
    for (int i = 0; i + 1 < f->n_marks; i++)
        ms[f->mark_fam[i]] += be->ops->timer_elapsed(be, i, i + 1);
    *total_ms = be->ops->timer_elapsed(be, 0, f->n_marks - 1);
    return 0;
}

int fwd_profile_ops(v4_forward *f, fwd_op_time *out, int max)
{
    int n = 0;
    v4_backend *be = f->m->be;
    for (int i = 0; i + 1 < f->n_marks; i++) {
        double ms = be->ops->timer_elapsed(be, i, i + 1);
        int j = 0;
        while (j < n && strcmp(out[j].name, f->mark_op[i]) != 0)
            j++;
        if (j == n) {
            if (n == max)
                continue;
            out[n++] = (fwd_op_time){.name = f->mark_op[i], .family = (fwd_family)f->mark_fam[i]};
        }
        out[j].ms += ms;
        out[j].calls++;
    }
    return n;
}

static void *balloc(v4_forward *f, size_t bytes, v4_err *err)
{
    v4_backend *be = f->m->be;
    void *p = be->ops->alloc(be, bytes ? bytes : 4, err);
    if (!p)
        return NULL;
    void **n = realloc(f->allocs, (f->n_allocs + 1) * sizeof *n);
    if (!n) {
        be->ops->free(be, p);
        v4_errf(err, "out of memory");
        return NULL;
    }
    f->allocs = n;
    f->allocs[f->n_allocs++] = p;
    return p;
}

#define ALLOC(ptr, count)                                                                                           \
    do {                                                                                                            \
        if (!((ptr) = balloc(f, (size_t)(count) * sizeof *(ptr), err)))                                             \
            goto fail;                                                                                              \
    } while (0)

int fwd_create(v4_model *m, const kv_geom *g, int max_tokens, v4_forward **out, v4_err *err)
{
    *out = NULL;
    if (max_tokens < 1)
        return v4_errf(err, "max_tokens must be >= 1");
    v4_forward *f = calloc(1, sizeof *f);
    if (!f)
        return v4_errf(err, "out of memory");
    f->m = m;
    f->g = *g;
    f->gi = *g;
    f->max_tokens = max_tokens;
    f->rows = max_tokens;
    f->graphs = m->be->ops->capture_begin != NULL;
    if (f->graphs) {
        f->gi.n_slots++;
        f->gi.n_blocks++;
        const int64_t cap = g->n_slots < 512 ? g->n_slots : 512;
        for (int b = 1; f->n_buckets < FWD_MAX_BUCKETS; b *= 2) {
            f->bucket[f->n_buckets++].size = b;
            if (b >= cap)
                break;
        }
        if (f->bucket[f->n_buckets - 1].size > f->rows)
            f->rows = f->bucket[f->n_buckets - 1].size;
    }
    const v4_config *c = &m->cfg;
    const int64_t n = f->rows, D = c->dim, ns = c->hc_mult, Hd = c->n_heads * c->head_dim;
    acts *a = &f->a;
    ALLOC(a->X, n * ns * D);
    ALLOC(a->x, n * D);
    ALLOC(a->xn, n * D);
    ALLOC(a->post, n * ns);
    ALLOC(a->comb, n * ns * ns);
    ALLOC(a->qa, n * c->q_lora_rank);
    ALLOC(a->q, n * Hd);
    ALLOC(a->kv, n * c->head_dim);
    ALLOC(a->o, n * Hd);
    ALLOC(a->oa, n * c->o_groups * c->o_lora_rank);
    ALLOC(a->y, n * D);
    ALLOC(a->ys, n * D);
    ALLOC(a->ca, n * 2 * c->head_dim);
    ALLOC(a->cz, n * 2 * c->head_dim);
    ALLOC(a->ia, n * 2 * c->index_head_dim);
    ALLOC(a->iz, n * 2 * c->index_head_dim);
    ALLOC(a->qi, n * c->index_n_heads * c->index_head_dim);
    ALLOC(a->wi, n * c->index_n_heads);
    ALLOC(a->sel, n * c->index_topk);
    ALLOC(a->gl, n * c->n_experts);
    ALLOC(a->ids, n * c->n_active);
    ALLOC(a->rw, n * c->n_active);
    ALLOC(a->sg, n * c->moe_inter);
    ALLOC(a->su, n * c->moe_inter);
    ALLOC(a->sh, n * c->moe_inter);
    ALLOC(a->moe_scratch, moe_scratch_floats(n, c->n_active, D, c->moe_inter, c->n_experts));
    ALLOC(a->xg, n * ns * D);
    ALLOC(a->xh, n * D);
    ALLOC(a->logits, n * c->vocab_size);
    ALLOC(a->logit_rows, n);
    ALLOC(a->sparams, n);
    ALLOC(a->ids_out, n);

    /* sequences of a step: at most the slots, or a padded decode bucket */
    int64_t S = g->n_slots;
    if (f->graphs && f->bucket[f->n_buckets - 1].size > S)
        S = f->bucket[f->n_buckets - 1].size;
    if (m->be->ops->reserve_step(m->be, f->rows, (int)S, (int)g->max_blocks_per_seq, err))
        goto fail;
    for (int l = 0; l < g->n_layers; l++) {
        f->n_kv = l + 1; /* free_kv copes with a partial allocation */
        if (m->be->ops->alloc_kv(m->be, &f->gi, l, &f->kv[l], err))
            goto fail;
    }

    f->h_tok_id = calloc((size_t)n, 4);
    f->h_tok_pos = calloc((size_t)n, 4);
    f->h_tok_seq = calloc((size_t)n, 4);
    f->h_logit_rows = calloc((size_t)n, 4);
    f->h_seq_slot = calloc((size_t)S, 4);
    f->h_seq_start = calloc((size_t)S, 4);
    f->h_seq_ntok = calloc((size_t)S, 4);
    f->h_seq_row = calloc((size_t)S, 4);
    f->h_block_table = calloc((size_t)(S * g->max_blocks_per_seq), 4);
    if (!f->h_tok_id || !f->h_tok_pos || !f->h_tok_seq || !f->h_logit_rows || !f->h_seq_slot || !f->h_seq_start ||
        !f->h_seq_ntok || !f->h_seq_row || !f->h_block_table) {
        v4_errf(err, "out of memory");
        goto fail;
    }
    if (f->graphs) {
        ALLOC(f->ident_rows, n);
        for (int64_t i = 0; i < n; i++)
            f->h_logit_rows[i] = (int32_t)i;
        if (m->be->ops->upload(m->be, f->ident_rows, f->h_logit_rows, (size_t)n * sizeof(int32_t), err))
            goto fail;
    }
    *out = f;
    return 0;
fail:
    fwd_destroy(f);
    return -1;
}

void fwd_destroy(v4_forward *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_buckets; i++)
        if (f->bucket[i].graph)
            f->m->be->ops->graph_free(f->m->be, f->bucket[i].graph);
    for (size_t i = 0; i < f->n_allocs; i++)
        f->m->be->ops->free(f->m->be, f->allocs[i]);
    for (int l = 0; l < f->n_kv; l++)
        f->m->be->ops->free_kv(f->m->be, &f->kv[l]);
    free(f->allocs);
    free(f->h_tok_id);
    free(f->h_tok_pos);
    free(f->h_tok_seq);
    free(f->h_logit_rows);
    free(f->h_seq_slot);
    free(f->h_seq_start);
    free(f->h_seq_ntok);
    free(f->h_seq_row);
    free(f->h_block_table);
    free(f);
}

int fwd_logit_rows(const v4_seq_batch *seqs, int n_seqs)
{
    int r = 0;
    for (int i = 0; i < n_seqs; i++)
        r += seqs[i].all_logits ? seqs[i].n_tokens : 1;
    return r;
}

/* Checks a batch against the model and the pool and fills the host mirror. */
static int pack_step(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, v4_step *h, v4_err *err)
{
    const v4_config *c = &f->m->cfg;
    const kv_geom *g = &f->g;
    if (n_seqs < 1 || n_seqs > g->n_slots)
        return v4_errf(err, "a step takes 1..%lld sequences, got %d", (long long)g->n_slots, n_seqs);
    int rows = 0, lrows = 0;
    const int64_t maxb = g->max_blocks_per_seq;
    for (int s = 0; s < n_seqs; s++) {
        const v4_seq_batch *q = &seqs[s];
        if (q->n_tokens < 1 || q->start_pos < 0)
            return v4_errf(err, "sequence %d: needs >= 1 token and a non-negative start (got %d at %lld)", s,
                           q->n_tokens, (long long)q->start_pos);
        if (rows + (int64_t)q->n_tokens > f->max_tokens)
            return v4_errf(err, "step of more than %d tokens", f->max_tokens);
        if (q->slot < 0 || q->slot >= g->n_slots)
            return v4_errf(err, "sequence %d: slot %d outside 0..%lld", s, q->slot, (long long)g->n_slots - 1);
        for (int j = 0; j < s; j++)
            if (seqs[j].slot == q->slot)
                return v4_errf(err, "sequences %d and %d share slot %d", j, s, q->slot);
        int64_t end = q->start_pos + q->n_tokens;
        if (end > maxb * g->block_tokens || end > c->max_pos)
            return v4_errf(err, "sequence %d: %lld tokens exceed the context of %lld", s, (long long)end,
                           (long long)(maxb * g->block_tokens < c->max_pos ? maxb * g->block_tokens : c->max_pos));
        int64_t need = (end + g->block_tokens - 1) / g->block_tokens;
        if (q->n_blocks < need || q->n_blocks > maxb)
            return v4_errf(err, "sequence %d: %d blocks given, %lld needed for %lld tokens", s, q->n_blocks,
                           (long long)need, (long long)end);
        for (int b = 0; b < q->n_blocks; b++) {
            if (q->block_table[b] < 0 || q->block_table[b] >= g->n_blocks)
                return v4_errf(err, "sequence %d: block id %d outside the pool of %lld", s, q->block_table[b],
                               (long long)g->n_blocks);
            f->h_block_table[s * maxb + b] = q->block_table[b];
        }
        for (int64_t b = q->n_blocks; b < maxb; b++)
            f->h_block_table[s * maxb + b] = -1;
        f->h_seq_slot[s] = q->slot;
        f->h_seq_start[s] = (int32_t)q->start_pos;
        f->h_seq_ntok[s] = q->n_tokens;
        f->h_seq_row[s] = rows;
        for (int t = 0; t < q->n_tokens; t++) {
            if (q->tokens[t] < 0 || q->tokens[t] >= c->vocab_size)
                return v4_errf(err, "sequence %d: token id %d outside the vocabulary of %lld", s, q->tokens[t],
                               (long long)c->vocab_size);
            f->h_tok_id[rows + t] = q->tokens[t];
            f->h_tok_pos[rows + t] = (int32_t)(q->start_pos + t);
            f->h_tok_seq[rows + t] = s;
            if (q->all_logits || t == q->n_tokens - 1)
                f->h_logit_rows[lrows++] = rows + t;
        }
        rows += q->n_tokens;
    }
    *h = (v4_step){.n_tokens = rows, .n_seqs = n_seqs, .max_blocks = (int)maxb, .tok_id = f->h_tok_id,
                   .tok_pos = f->h_tok_pos, .tok_seq = f->h_tok_seq, .seq_slot = f->h_seq_slot,
                   .seq_start = f->h_seq_start, .seq_ntok = f->h_seq_ntok, .seq_row = f->h_seq_row,
                   .block_table = f->h_block_table};
    return lrows;
}

static const float *F(const v4_mat *m) { return (const float *)m->data; }

static void attention_block(v4_forward *f, int L, const v4_step *st, int n)
{
    v4_model *m = f->m;
    v4_backend *be = m->be;
    const v4_backend_ops *ops = be->ops;
    const v4_config *c = &m->cfg;
    const v4_layer_w *lw = &m->dev.layers[L];
    const kv_layer_geom *lg = &f->g.layer[L];
    acts *a = &f->a;
    const int H = (int)c->n_heads, d = (int)c->head_dim, r = (int)c->rope_dim;
    const float eps = (float)c->rms_eps;
    const float *freq = lw->kind == LAYER_SLIDING ? m->rope_main : m->rope_comp;
    v4_layer_kv *kv = &f->kv[L];

    prof(f, FAM_DENSE, "wq_a");
    ops->linear(be, a->qa, a->xn, n, &lw->wq_a, 1);
    prof(f, FAM_OTHER, "rmsnorm");
    ops->rmsnorm(be, a->qa, a->qa, F(&lw->q_norm), n, (int)c->q_lora_rank, eps);
    prof(f, FAM_DENSE, "wq_b");
    ops->linear(be, a->q, a->qa, n, &lw->wq_b, 1);
    prof(f, FAM_OTHER, "rmsnorm");
    ops->rmsnorm(be, a->q, a->q, NULL, n * H, d, eps);
    prof(f, FAM_OTHER, "rope");
    ops->rope(be, a->q, n, H, d, r, freq, st, false);
    prof(f, FAM_DENSE, "wkv");
    ops->linear(be, a->kv, a->xn, n, &lw->wkv, 1);
    prof(f, FAM_OTHER, "rmsnorm");
    ops->rmsnorm(be, a->kv, a->kv, F(&lw->kv_norm), n, d, eps);
    prof(f, FAM_OTHER, "rope");
    ops->rope(be, a->kv, n, 1, d, r, freq, st, false);

    if (lw->kind != LAYER_SLIDING) {
        const v4_compressor_w *cw = &lw->comp;
        v4_comp_shape cs = {.ratio = cw->ratio, .head = (int)cw->head, .width = (int)cw->width,
                            .overlap = cw->overlap, .rope_dim = r, .entries_per_block = lg->entries_per_block,
                            .block_tokens = f->g.block_tokens, .eps = eps};
        prof(f, FAM_DENSE, "comp_wkv");
        ops->linear(be, a->ca, a->xn, n, &cw->wkv, 1);
        prof(f, FAM_DENSE, "comp_wgate");
        ops->linear(be, a->cz, a->xn, n, &cw->wgate, 1);
        prof(f, FAM_ATTENTION, "compress");
        ops->compress(be, kv->entries, kv->comp_acc, a->ca, a->cz, F(&cw->ape), F(&cw->norm), m->rope_comp, st,
                      &cs);
    }
    const int32_t *sel = NULL;
    if (lw->kind == LAYER_CSA) {
        const v4_compressor_w *iw = &lw->idx_comp;
        const int h = (int)c->index_n_heads, ic = (int)c->index_head_dim;
        v4_comp_shape is = {.ratio = iw->ratio, .head = ic, .width = (int)iw->width, .overlap = true,
                            .rope_dim = r, .entries_per_block = lg->entries_per_block,
                            .block_tokens = f->g.block_tokens, .eps = eps};
        prof(f, FAM_DENSE, "idx_comp_wkv");
        ops->linear(be, a->ia, a->xn, n, &iw->wkv, 1);
        prof(f, FAM_DENSE, "idx_comp_wgate");
        ops->linear(be, a->iz, a->xn, n, &iw->wgate, 1);
        prof(f, FAM_ATTENTION, "compress");
        ops->compress(be, kv->idx_keys, kv->idx_acc, a->ia, a->iz, F(&iw->ape), F(&iw->norm), m->rope_comp, st,
                      &is);
        prof(f, FAM_DENSE, "idx_wq_b");
        ops->linear(be, a->qi, a->qa, n, &lw->idx_wq_b, 1);
        prof(f, FAM_OTHER, "rope");
        ops->rope(be, a->qi, n, h, ic, r, m->rope_comp, st, false);
        prof(f, FAM_DENSE, "idx_weights");
        ops->linear(be, a->wi, a->xn, n, &lw->idx_weights_proj, 1);
        prof(f, FAM_OTHER, "scale");
        ops->scale(be, a->wi, 1.0f / sqrtf((float)h), (int64_t)n * h);
        prof(f, FAM_INDEXER, "index_topk");
        ops->index_topk(be, a->sel, a->qi, a->wi, kv->idx_keys, st, h, ic, lw->ratio, lg->entries_per_block,
                        f->g.block_tokens, (int)c->index_topk);
        sel = a->sel;
    }
    v4_attn_shape as = {.n_heads = H, .head_dim = d, .rope_dim = r, .window = (int)c->window, .kind = lw->kind,
                        .ratio = lw->ratio, .entries_per_block = lg->entries_per_block,
                        .block_tokens = f->g.block_tokens, .topk = (int)c->index_topk};
    prof(f, FAM_ATTENTION, "attention");
    ops->attention(be, a->o, a->q, a->kv, kv, sel, F(&lw->attn_sink), st, &as);
    prof(f, FAM_ATTENTION, "ring_store");
    ops->ring_store(be, kv, a->kv, st, (int)c->window, d);
    prof(f, FAM_OTHER, "rope");
    ops->rope(be, a->o, n, H, d, r, freq, st, true);
    prof(f, FAM_DENSE, "wo_a");
    ops->linear(be, a->oa, a->o, n, &lw->wo_a, (int)c->o_groups);
    prof(f, FAM_DENSE, "wo_b");
    ops->linear(be, a->y, a->oa, n, &lw->wo_b, 1);
}

static void moe_block(v4_forward *f, int L, const v4_step *st, int n)
{
    v4_model *m = f->m;
    v4_backend *be = m->be;
    const v4_backend_ops *ops = be->ops;
    const v4_config *c = &m->cfg;
    const v4_layer_w *lw = &m->dev.layers[L];
    acts *a = &f->a;
    const float limit = (float)c->swiglu_limit;

    prof(f, FAM_DENSE, "gate");
    ops->linear(be, a->gl, a->xn, n, &lw->gate_w, 1);
    prof(f, FAM_MOE, "moe_route");
    ops->moe_route(be, a->ids, a->rw, a->gl, lw->hashed ? NULL : F(&lw->gate_bias), lw->hashed ? &lw->tid2eid : NULL,
                   st, (int)c->n_experts, (int)c->n_active, (float)c->routed_scale);
    prof(f, FAM_MOE, "moe_experts");
    ops->moe_experts(be, a->y, a->xn, a->ids, a->rw, n, (int)c->n_active, lw->exp_w1, lw->exp_w2, lw->exp_w3, limit,
                     a->moe_scratch);
    prof(f, FAM_DENSE, "shared_w1");
    ops->linear(be, a->sg, a->xn, n, &lw->sh_w1, 1);
    prof(f, FAM_DENSE, "shared_w3");
    ops->linear(be, a->su, a->xn, n, &lw->sh_w3, 1);
    prof(f, FAM_OTHER, "swiglu");
    ops->swiglu(be, a->sh, a->sg, a->su, (int64_t)n * c->moe_inter, limit);
    prof(f, FAM_DENSE, "shared_w2");
    ops->linear(be, a->ys, a->sh, n, &lw->sh_w2, 1);
    prof(f, FAM_OTHER, "add");
    ops->add(be, a->y, a->ys, (int64_t)n * c->dim);
}

/* Issues the ops of one step whose metadata is `st` (n rows), ending with
 * the logits of rows logit_rows[0..lrows) in a->logits. */
static void run_ops(v4_forward *f, const v4_step *st, int n, const int32_t *logit_rows, int lrows)
{
    v4_model *m = f->m;
    v4_backend *be = m->be;
    const v4_backend_ops *ops = be->ops;
    const v4_config *c = &m->cfg;
    acts *a = &f->a;
    const float eps = (float)c->rms_eps;
    v4_hc_shape hs = {.n_streams = (int)c->hc_mult, .dim = (int)c->dim, .iters = (int)c->hc_sinkhorn_iters,
                      .eps = eps, .hc_eps = (float)c->hc_eps};

    f->n_marks = 0;
    prof(f, FAM_OTHER, "embed");
    ops->embed(be, a->X, &m->dev.embed, st, (int)c->hc_mult);
    for (int L = 0; L < c->n_layers; L++) {
        const v4_layer_w *lw = &m->dev.layers[L];
        prof(f, FAM_OTHER, "hc_pre");
        ops->hc_pre(be, a->x, a->post, a->comb, a->X, F(&lw->hc_attn_fn), F(&lw->hc_attn_base),
                    F(&lw->hc_attn_scale), n, &hs);
        prof(f, FAM_OTHER, "rmsnorm");
        ops->rmsnorm(be, a->xn, a->x, F(&lw->attn_norm), n, (int)c->dim, eps);
        attention_block(f, L, st, n);
        prof(f, FAM_OTHER, "hc_post");
        ops->hc_post(be, a->X, a->y, a->post, a->comb, n, &hs);

        prof(f, FAM_OTHER, "hc_pre");
        ops->hc_pre(be, a->x, a->post, a->comb, a->X, F(&lw->hc_ffn_fn), F(&lw->hc_ffn_base), F(&lw->hc_ffn_scale),
                    n, &hs);
        prof(f, FAM_OTHER, "rmsnorm");
        ops->rmsnorm(be, a->xn, a->x, F(&lw->ffn_norm), n, (int)c->dim, eps);
        moe_block(f, L, st, n);
        prof(f, FAM_OTHER, "hc_post");
        ops->hc_post(be, a->X, a->y, a->post, a->comb, n, &hs);
    }
    prof(f, FAM_OTHER, "gather_rows");
    ops->gather_rows(be, a->xg, a->X, logit_rows, lrows, c->hc_mult * c->dim);
    prof(f, FAM_OTHER, "hc_head");
    ops->hc_head(be, a->xh, a->xg, F(&m->dev.hc_head_fn), F(&m->dev.hc_head_base), F(&m->dev.hc_head_scale), lrows,
                 &hs);
    prof(f, FAM_OTHER, "rmsnorm");
    ops->rmsnorm(be, a->xh, a->xh, F(&m->dev.norm), lrows, (int)c->dim, eps);
    prof(f, FAM_HEAD, "head");
    ops->linear(be, a->logits, a->xh, lrows, &m->dev.head, 1);
    prof(f, FAM_END, "end");
}

/* The bucket of a decode step of n sequences; NULL when none fits. */
static fwd_bucket *decode_bucket(v4_forward *f, int n)
{
    for (int i = 0; i < f->n_buckets; i++)
        if (f->bucket[i].size >= n)
            return &f->bucket[i];
    return NULL;
}

/* A decode step (every sequence one token, host mirror packed) through its
 * bucket's graph: pads the mirror to the bucket, refreshes the metadata,
 * then replays the graph, or on the bucket's first use runs eagerly and
 * captures. Rows 0..n-1 are the real sequences, in order. */
static int decode_step(v4_forward *f, fwd_bucket *bk, v4_step *host, v4_err *err)
{
    v4_backend *be = f->m->be;
    const v4_backend_ops *ops = be->ops;
    const int n = host->n_seqs, B = bk->size;
    const int64_t maxb = f->g.max_blocks_per_seq;
    for (int s = n; s < B; s++) { /* harmless rows: position 0 of the reserved slot and block */
        f->h_tok_id[s] = 0;
        f->h_tok_pos[s] = 0;
        f->h_tok_seq[s] = s;
        f->h_seq_slot[s] = (int32_t)f->g.n_slots;
        f->h_seq_start[s] = 0;
        f->h_seq_ntok[s] = 1;
        f->h_seq_row[s] = s;
        f->h_block_table[s * maxb] = (int32_t)f->g.n_blocks;
        for (int64_t b = 1; b < maxb; b++)
            f->h_block_table[s * maxb + b] = -1;
    }
    host->n_tokens = B;
    host->n_seqs = B;
    v4_step st;
    if (ops->set_step(be, host, &st, err))
        return -1;
    if (bk->graph)
        return ops->graph_launch(be, bk->graph, err);
    run_ops(f, &st, B, f->ident_rows, B);
    if (ops->sync(be, err) || ops->capture_begin(be, err))
        return -1;
    run_ops(f, &st, B, f->ident_rows, B);
    return ops->capture_end(be, &bk->graph, err);
}

/* Runs a step and leaves its logits rows (sequences in order) in a->logits;
 * returns how many rows, or -1. */
static int step_on_device(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, v4_err *err)
{
    v4_backend *be = f->m->be;
    const v4_backend_ops *ops = be->ops;
    acts *a = &f->a;
    v4_step host, st;
    int lrows = pack_step(f, seqs, n_seqs, &host, err);
    if (lrows < 0)
        return -1;
    fwd_bucket *bk = f->graphs && !f->profiling && host.n_tokens == n_seqs ? decode_bucket(f, n_seqs) : NULL;
    if (bk) {
        if (decode_step(f, bk, &host, err))
            return -1;
    } else {
        if (ops->set_step(be, &host, &st, err) ||
            ops->upload(be, a->logit_rows, f->h_logit_rows, (size_t)lrows * sizeof(int32_t), err))
            return -1;
        run_ops(f, &st, host.n_tokens, a->logit_rows, lrows);
    }
    return ops->sync(be, err) ? -1 : lrows;
}

int fwd_step(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, float *logits, v4_err *err)
{
    int lrows = step_on_device(f, seqs, n_seqs, err);
    if (lrows < 0)
        return -1;
    v4_backend *be = f->m->be;
    return be->ops->download(be, logits, f->a.logits, (size_t)lrows * f->m->cfg.vocab_size * sizeof(float), err);
}

int fwd_step_sample(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, const v4_sample_params *params,
                    int32_t *ids, v4_err *err)
{
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].all_logits)
            return v4_errf(err, "fwd_step_sample: sequence %d asks for every row's logits", s);
    int lrows = step_on_device(f, seqs, n_seqs, err);
    if (lrows < 0)
        return -1;
    v4_backend *be = f->m->be;
    const v4_backend_ops *ops = be->ops;
    if (ops->upload(be, f->a.sparams, params, (size_t)lrows * sizeof *params, err))
        return -1;
    ops->sample(be, f->a.ids_out, f->a.logits, lrows, f->m->cfg.vocab_size, f->a.sparams);
    if (ops->sync(be, err))
        return -1;
    return ops->download(be, ids, f->a.ids_out, (size_t)lrows * sizeof(int32_t), err);
}
