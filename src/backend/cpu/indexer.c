/* Lightning indexer top-k (MODEL.md 4.4) on the CPU: score every eligible
 * compressed key of the token's sequence, keep the topk best, return them in
 * ascending entry order with -1 in unused columns. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu.h"

typedef struct scored {
    float score;
    int32_t idx;
} scored;

/* Best first; equal scores by lower index, so the choice is deterministic. */
static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int by_index(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct idx_ctx {
    int32_t *sel;
    const float *qI, *wI;
    const void *keys;
    const v4_step *st;
    int h, c, ratio, epb, topk;
    tp_pool *tp;
    v4_backend *be;
} idx_ctx;

static void topk_rows(void *vc, int64_t b, int64_t e, int worker)
{
    idx_ctx *x = vc;
    const float kscale = 1.0f / sqrtf((float)x->c);
    /* sized for the longest context and taken before any early exit, so it
     * is allocated once, at the first step */
    scored *sc = tp_scratch(x->tp, worker, (size_t)x->st->max_blocks * x->epb * sizeof *sc);
    if (!sc) {
        cpu_fail(x->be, "out of memory for indexer scratch");
        return;
    }
    for (int64_t t = b; t < e; t++) {
        int32_t *out = x->sel + t * x->topk;
        const int s = x->st->tok_seq[t];
        const int64_t n_elig = ((int64_t)x->st->tok_pos[t] + 1) / x->ratio;
        if (n_elig <= x->topk) {
            for (int k = 0; k < x->topk; k++)
                out[k] = k < n_elig ? k : -1;
            continue;
        }
        const int32_t *bt = x->st->block_table + (int64_t)s * x->st->max_blocks;
        const float *q = x->qI + t * x->h * x->c, *w = x->wI + t * x->h;
        for (int64_t i = 0; i < n_elig; i++) {
            const float *key = cpu_entry((void *)x->keys, bt, i, x->epb, x->c);
            float score = 0;
            for (int hh = 0; hh < x->h; hh++) {
                float dot = cpu_dot(q + hh * x->c, key, x->c);
                score += w[hh] * (dot > 0 ? dot : 0) * kscale;
            }
            sc[i] = (scored){score, (int32_t)i};
        }
        qsort(sc, (size_t)n_elig, sizeof *sc, by_score);
        for (int k = 0; k < x->topk; k++)
            out[k] = sc[k].idx;
        qsort(out, (size_t)x->topk, sizeof *out, by_index);
    }
}

void cpu_index_topk(v4_backend *be, int32_t *sel, const float *qI, const float *wI, const void *keys,
                    const v4_step *st, int n_heads, int head_dim, int ratio, int entries_per_block,
                    int block_tokens, int topk)
{
    idx_ctx c = {sel, qI, wI, keys, st, n_heads, head_dim, ratio, entries_per_block, topk, cpu_tp(be), be};
    tp_run(cpu_tp(be), st->n_tokens, 1, topk_rows, &c);
}
