/* Attention (MODEL.md 4.2) on the CPU: one shared K=V head; each query sees
 * the sliding window, plus the indexer's selected CSA entries or every
 * closed HCA entry, plus a per-head sink logit that takes probability mass
 * but contributes no value. Window positions inside the current step come
 * from this step's kv rows; earlier ones from the slot's ring, which is
 * updated only after attention (ring_store). */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

typedef struct attn_ctx {
    float *o;
    const float *q, *kv;
    const v4_layer_kv *lkv;
    const int32_t *sel;
    const float *sinks;
    const v4_step *st;
    const v4_attn_shape *sh;
    tp_pool *tp;
    v4_backend *be;
} attn_ctx;

/* Collects the key vectors visible to token row t, compressed entries first,
 * then the window in position order. Returns how many. */
static int64_t visible_keys(const attn_ctx *c, int64_t t, const float **keys)
{
    const v4_attn_shape *sh = c->sh;
    const v4_step *st = c->st;
    const int s = st->tok_seq[t];
    const int64_t p = st->tok_pos[t], start = st->seq_start[s], slot = st->seq_slot[s];
    const int32_t *bt = st->block_table + (int64_t)s * st->max_blocks;
    const int d = sh->head_dim;
    int64_t n = 0;
    if (sh->kind == LAYER_CSA) {
        for (int k = 0; k < sh->topk; k++) {
            int32_t i = c->sel[t * sh->topk + k];
            if (i >= 0)
                keys[n++] = cpu_entry(c->lkv->entries, bt, i, sh->entries_per_block, d);
        }
    } else if (sh->kind == LAYER_HCA) {
        const int64_t closed = (p + 1) / sh->ratio;
        for (int64_t i = 0; i < closed; i++)
            keys[n++] = cpu_entry(c->lkv->entries, bt, i, sh->entries_per_block, d);
    }
    const int64_t first = p - sh->window + 1 > 0 ? p - sh->window + 1 : 0;
    for (int64_t qp = first; qp <= p; qp++) {
        if (qp >= start)
            keys[n++] = c->kv + (st->seq_row[s] + (qp - start)) * d;
        else
            keys[n++] = (const float *)c->lkv->ring + (slot * sh->window + qp % sh->window) * d;
    }
    return n;
}

static void attend(void *vc, int64_t b, int64_t e, int worker)
{
    attn_ctx *c = vc;
    const v4_attn_shape *sh = c->sh;
    const int H = sh->n_heads, d = sh->head_dim;
    const float scale = 1.0f / sqrtf((float)d);
    const int64_t t_first = b / H, t_last = (e - 1) / H;
    /* scratch for the most keys any token can see in this pool (sized for
     * the longest context, so it is allocated once): key pointers, scores */
    const int64_t max_keys = sh->window + (sh->kind == LAYER_CSA ? sh->topk : 0) +
                             (sh->kind == LAYER_HCA ? (int64_t)c->st->max_blocks * sh->entries_per_block : 0);
    char *scr = tp_scratch(c->tp, worker, (size_t)max_keys * (sizeof(float *) + sizeof(float)));
    if (!scr) {
        cpu_fail((v4_backend *)c->be, "out of memory for attention scratch");
        return;
    }
    const float **keys = (const float **)scr;
    float *score = (float *)(scr + (size_t)max_keys * sizeof(float *));
    for (int64_t t = t_first; t <= t_last; t++) {
        const int64_t nk = visible_keys(c, t, keys);
        const int h0 = t == t_first ? (int)(b % H) : 0;
        const int h1 = t == t_last ? (int)((e - 1) % H) : H - 1;
        for (int h = h0; h <= h1; h++) {
            const float *qh = c->q + (t * H + h) * d;
            float mx = c->sinks[h];
            for (int64_t k = 0; k < nk; k++) {
                score[k] = cpu_dot(qh, keys[k], d) * scale;
                mx = fmaxf(mx, score[k]);
            }
            float denom = expf(c->sinks[h] - mx);
            float *oh = c->o + (t * H + h) * d;
            memset(oh, 0, (size_t)d * sizeof(float));
            for (int64_t k = 0; k < nk; k++) {
                float w = expf(score[k] - mx);
                denom += w;
                const float *v = keys[k];
                for (int i = 0; i < d; i++)
                    oh[i] += w * v[i];
            }
            const float inv = 1.0f / denom;
            for (int i = 0; i < d; i++)
                oh[i] *= inv;
        }
    }
}

void cpu_attention(v4_backend *be, float *o, const float *q, const float *kv, const v4_layer_kv *lkv,
                   const int32_t *sel, const float *sinks, const v4_step *st, const v4_attn_shape *sh)
{
    attn_ctx c = {o, q, kv, lkv, sel, sinks, st, sh, cpu_tp(be), be};
    tp_run(cpu_tp(be), (int64_t)st->n_tokens * sh->n_heads, sh->n_heads, attend, &c);
}

void cpu_ring_store(v4_backend *be, v4_layer_kv *lkv, const float *kv, const v4_step *st, int window, int head_dim)
{
    for (int s = 0; s < st->n_seqs; s++) {
        const int64_t start = st->seq_start[s], slot = st->seq_slot[s];
        const int ntok = st->seq_ntok[s], first = ntok > window ? ntok - window : 0;
        for (int t = first; t < ntok; t++) {
            float *dst = (float *)lkv->ring + (slot * window + (start + t) % window) * head_dim;
            memcpy(dst, kv + (int64_t)(st->seq_row[s] + t) * head_dim, (size_t)head_dim * sizeof(float));
            cpu_kv_round(be, dst, head_dim);
        }
    }
}
