/* KV compressors (MODEL.md 4.3, 4.4) on the CPU.
 *
 * An entry is a per-channel softmax over the z of a window's tokens, applied
 * to their a. The state keeps it as an online softmax per channel (running
 * max, sum of weights, weighted sum), so a window may span any number of
 * steps and the per-sequence state has a fixed size. CSA windows overlap:
 * a token's first half (Ca) feeds the next entry and its second half (Cb)
 * the current one, so CSA carries two accumulators. Tokens are folded in
 * position order, so the result does not depend on how a prompt is chunked. */
#include <math.h>

#include "backend/cpu/cpu.h"

typedef struct acc_view {
    float *m, *s, *a; /* running max, sum of exp, weighted sum; one per channel */
} acc_view;

static acc_view acc_at(float *acc, int64_t slot, int which, int n_acc, int head)
{
    float *base = acc + ((slot * n_acc + which) * KV_ACC_FIELDS) * (int64_t)head;
    return (acc_view){base, base + head, base + 2 * head};
}

static void acc_reset(acc_view v, int ch)
{
    v.m[ch] = -INFINITY;
    v.s[ch] = 0;
    v.a[ch] = 0;
}

static void acc_add(acc_view v, int ch, float z, float a)
{
    if (z > v.m[ch]) {
        float r = expf(v.m[ch] - z); /* 0 when the accumulator was empty */
        v.s[ch] = v.s[ch] * r + 1.0f;
        v.a[ch] = v.a[ch] * r + a;
        v.m[ch] = z;
    } else {
        float w = expf(z - v.m[ch]);
        v.s[ch] += w;
        v.a[ch] += w * a;
    }
}

static void acc_move(acc_view dst, acc_view src, int ch)
{
    dst.m[ch] = src.m[ch];
    dst.s[ch] = src.s[ch];
    dst.a[ch] = src.a[ch];
}

typedef struct comp_ctx {
    void *entries;
    float *acc;
    const float *a, *z, *ape, *norm_w, *freq;
    const v4_step *st;
    const v4_comp_shape *sh;
    v4_backend *be;
} comp_ctx;

/* Phase 1: item = (sequence, channel); fold the step's tokens in order. */
static void fold_channels(void *vc, int64_t b, int64_t e, int worker)
{
    comp_ctx *c = vc;
    const v4_comp_shape *sh = c->sh;
    const int head = sh->head, m = sh->ratio, n_acc = sh->overlap ? 2 : 1;
    for (int64_t item = b; item < e; item++) {
        const int s = (int)(item / head), ch = (int)(item % head);
        const int64_t slot = c->st->seq_slot[s];
        const int32_t *bt = c->st->block_table + (int64_t)s * c->st->max_blocks;
        acc_view cur = acc_at(c->acc, slot, 0, n_acc, head);
        acc_view next = sh->overlap ? acc_at(c->acc, slot, 1, n_acc, head) : cur;
        const int64_t start = c->st->seq_start[s];
        const int row0 = c->st->seq_row[s], ntok = c->st->seq_ntok[s];
        for (int t = 0; t < ntok; t++) {
            const int64_t p = start + t, r = row0 + t;
            const int j = (int)(p % m);
            const float *zr = c->z + r * sh->width, *ar = c->a + r * sh->width, *ap = c->ape + (int64_t)j * sh->width;
            if (p == 0) {
                acc_reset(cur, ch);
                if (sh->overlap)
                    acc_reset(next, ch);
            }
            if (sh->overlap) {
                acc_add(cur, ch, zr[head + ch] + ap[head + ch], ar[head + ch]); /* Cb: this window's entry */
                acc_add(next, ch, zr[ch] + ap[ch], ar[ch]);                     /* Ca: the next entry */
            } else {
                acc_add(cur, ch, zr[ch] + ap[ch], ar[ch]);
            }
            if (j == m - 1) {
                float *out = cpu_entry(c->entries, bt, p / m, sh->entries_per_block, head);
                out[ch] = cur.a[ch] / cur.s[ch];
                if (sh->overlap) {
                    acc_move(cur, next, ch);
                    acc_reset(next, ch);
                } else {
                    acc_reset(cur, ch);
                }
            }
        }
    }
}

/* Phase 2: item = sequence; normalise and rope the entries closed this step. */
static void finish_entries(void *vc, int64_t b, int64_t e, int worker)
{
    comp_ctx *c = vc;
    const v4_comp_shape *sh = c->sh;
    const int head = sh->head, m = sh->ratio;
    for (int64_t s = b; s < e; s++) {
        const int32_t *bt = c->st->block_table + s * c->st->max_blocks;
        const int64_t start = c->st->seq_start[s], end = start + c->st->seq_ntok[s];
        for (int64_t i = start / m; i < end / m; i++) {
            float *x = cpu_entry(c->entries, bt, i, sh->entries_per_block, head);
            double ss = 0;
            for (int ch = 0; ch < head; ch++)
                ss += (double)x[ch] * x[ch];
            float inv = (float)(1.0 / sqrt(ss / head + sh->eps));
            for (int ch = 0; ch < head; ch++)
                x[ch] = x[ch] * inv * c->norm_w[ch];
            cpu_rope_row(x, head, sh->rope_dim, c->freq, (double)(i * m));
            cpu_kv_round(c->be, x, head);
        }
    }
}

void cpu_compress(v4_backend *be, void *entries, float *acc, const float *a, const float *z, const float *ape,
                  const float *norm_w, const float *inv_freq, const v4_step *st, const v4_comp_shape *sh)
{
    comp_ctx c = {entries, acc, a, z, ape, norm_w, inv_freq, st, sh, be};
    tp_run(cpu_tp(be), (int64_t)st->n_seqs * sh->head, 32, fold_channels, &c);
    tp_run(cpu_tp(be), st->n_seqs, 1, finish_entries, &c);
}
