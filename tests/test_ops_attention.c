/* The CPU backend's sequence ops against direct implementations of
 * MODEL.md: attention with sinks over window + compressed entries (4.2),
 * the ring of recent kv rows, the compressors (4.3, non-online softmax over
 * whole windows, CSA overlap), and the indexer's top-k (4.4) against brute
 * force. Steps carry several sequences with non-contiguous block tables;
 * storage not meant to be read is filled with NaN so that a read shows.
 * Inputs are fresh random values each run (the seed is printed). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------- */

#define MAXT 512 /* step limits the tests reserve */
#define MAXS 32
#define MAXB 8

static v4_backend *mk_backend(void)
{
    v4_backend *be;
    v4_err err;
    if (backend_cpu_create(2, DT_F8_E4M3, &be, &err) || be->ops->reserve_step(be, MAXT, MAXS, MAXB, &err))
        fail_msg("backend_cpu_create: %s", err.msg);
    return be;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static void fill_normal(tu_rng *r, float *x, int64_t n, float sd)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_normal(r) * sd;
}

static void fill_value(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

static int rand_int(tu_rng *r, int n) { return (int)(tu_next(r) % (uint64_t)n); }

static void expect_synced(v4_backend *be)
{
    v4_err err;
    if (be->ops->sync(be, &err))
        fail_msg("backend reported: %s", err.msg);
}

/* Step metadata built sequence by sequence. */
typedef struct bstep {
    int32_t tok_id[MAXT], tok_pos[MAXT], tok_seq[MAXT];
    int32_t slot[MAXS], start[MAXS], ntok[MAXS], row[MAXS];
    int32_t bt[MAXS * MAXB];
    int n_seqs, n_tokens;
    v4_step h;
} bstep;

static void bs_init(bstep *s)
{
    memset(s, 0, sizeof *s);
}

static void bs_add(bstep *s, int slot, int start, int ntok, const int32_t *blocks, int n_blocks)
{
    const int q = s->n_seqs++;
    assert_true(q < MAXS && s->n_tokens + ntok <= MAXT && n_blocks <= MAXB);
    s->slot[q] = slot;
    s->start[q] = start;
    s->ntok[q] = ntok;
    s->row[q] = s->n_tokens;
    for (int b = 0; b < MAXB; b++)
        s->bt[q * MAXB + b] = b < n_blocks ? blocks[b] : -1;
    for (int t = 0; t < ntok; t++, s->n_tokens++) {
        s->tok_pos[s->n_tokens] = start + t;
        s->tok_seq[s->n_tokens] = q;
    }
}

static v4_step bs_set(v4_backend *be, bstep *s)
{
    s->h = (v4_step){.n_tokens = s->n_tokens, .n_seqs = s->n_seqs, .max_blocks = MAXB, .tok_id = s->tok_id,
                     .tok_pos = s->tok_pos, .tok_seq = s->tok_seq, .seq_slot = s->slot, .seq_start = s->start,
                     .seq_ntok = s->ntok, .seq_row = s->row, .block_table = s->bt};
    v4_step d;
    v4_err err;
    if (be->ops->set_step(be, &s->h, &d, &err))
        fail_msg("set_step: %s", err.msg);
    return d;
}

/* Address of compressed entry i of a sequence with block table bt. */
static float *entry_at(float *pool, const int32_t *bt, int i, int epb, int width)
{
    return pool + ((int64_t)bt[i / epb] * epb + i % epb) * width;
}

/* ---- attention (MODEL.md 4.2) ------------------------------------------------ */

/* One sequence of an attention test: its whole kv history and compressed
 * entries, from which the ring, the pool and the step's kv rows are made. */
typedef struct aseq {
    int slot, start, ntok;
    int32_t blocks[MAXB];
    int n_blocks;
    float *hist;    /* [start+ntok][d] */
    float *entries; /* [n_entries][d] */
    int n_entries;
} aseq;

typedef struct atest {
    v4_attn_shape sh;
    int n_slots, n_blocks;
    aseq seq[4];
    int n_seqs;
    float *ring, *pool, *q, *kv, *sinks, *o;
    int32_t *sel;
    bstep bs;
    v4_step st;
} atest;

/* Sets up ring, pool and the step from the sequences; everything not part
 * of a sequence's visible past is NaN. */
static void at_build(v4_backend *be, atest *a, tu_rng *r)
{
    const int d = a->sh.head_dim, W = a->sh.window, epb = a->sh.entries_per_block, H = a->sh.n_heads;
    a->ring = xcalloc((size_t)a->n_slots * W * d, sizeof(float));
    a->pool = xcalloc((size_t)a->n_blocks * (epb ? epb : 1) * d, sizeof(float));
    fill_value(a->ring, (int64_t)a->n_slots * W * d, NAN);
    fill_value(a->pool, (int64_t)a->n_blocks * (epb ? epb : 1) * d, NAN);
    bs_init(&a->bs);
    for (int k = 0; k < a->n_seqs; k++) {
        aseq *s = &a->seq[k];
        const int end = s->start + s->ntok;
        s->hist = xcalloc((size_t)end * d, sizeof(float));
        fill_normal(r, s->hist, (int64_t)end * d, 1.0f);
        for (int p = s->start - W > 0 ? s->start - W : 0; p < s->start; p++)
            memcpy(a->ring + ((int64_t)s->slot * W + p % W) * d, s->hist + (int64_t)p * d, d * sizeof(float));
        s->n_entries = a->sh.ratio ? end / a->sh.ratio : 0;
        s->entries = xcalloc((size_t)(s->n_entries ? s->n_entries : 1) * d, sizeof(float));
        fill_normal(r, s->entries, (int64_t)s->n_entries * d, 1.0f);
        for (int i = 0; i < s->n_entries; i++)
            memcpy(entry_at(a->pool, s->blocks, i, epb, d), s->entries + (int64_t)i * d, d * sizeof(float));
        bs_add(&a->bs, s->slot, s->start, s->ntok, s->blocks, s->n_blocks);
    }
    const int n = a->bs.n_tokens;
    a->q = xcalloc((size_t)n * H * d, sizeof(float));
    a->kv = xcalloc((size_t)n * d, sizeof(float));
    a->o = xcalloc((size_t)n * H * d, sizeof(float));
    a->sinks = xcalloc((size_t)H, sizeof(float));
    a->sel = xcalloc((size_t)n * (a->sh.topk ? a->sh.topk : 1), sizeof(int32_t));
    fill_normal(r, a->q, (int64_t)n * H * d, 2.0f);
    fill_normal(r, a->sinks, H, 1.0f);
    for (int k = 0; k < a->n_seqs; k++) {
        aseq *s = &a->seq[k];
        memcpy(a->kv + (int64_t)a->bs.row[k] * d, s->hist + (int64_t)s->start * d, (size_t)s->ntok * d * 4);
        /* CSA: a random subset of the eligible entries, -1 in random columns */
        for (int t = 0; t < s->ntok && a->sh.kind == LAYER_CSA; t++) {
            int32_t *row = a->sel + (int64_t)(a->bs.row[k] + t) * a->sh.topk;
            const int elig = (s->start + t + 1) / a->sh.ratio;
            for (int c = 0; c < a->sh.topk; c++)
                row[c] = -1;
            for (int c = 0; c < a->sh.topk && c < elig; c++) {
                if (rand_int(r, 4) == 0)
                    continue;
                int i, dup;
                do {
                    i = rand_int(r, elig);
                    dup = 0;
                    for (int q = 0; q < c; q++)
                        dup |= row[q] == i;
                } while (dup);
                row[c] = i;
            }
        }
    }
    a->st = bs_set(be, &a->bs);
}

static void at_free(atest *a)
{
    for (int k = 0; k < a->n_seqs; k++) {
        free(a->seq[k].hist);
        free(a->seq[k].entries);
    }
    free(a->ring);
    free(a->pool);
    free(a->q);
    free(a->kv);
    free(a->o);
    free(a->sinks);
    free(a->sel);
}

static void at_run(v4_backend *be, atest *a)
{
    v4_layer_kv lkv = {.ring = a->ring, .entries = a->pool, .dtype = DT_F32};
    be->ops->attention(be, a->o, a->q, a->kv, &lkv, a->sh.kind == LAYER_CSA ? a->sel : NULL, a->sinks, &a->st,
                       &a->sh);
    expect_synced(be);
}

/* Direct attention for every row: keys = the entries the rule makes
 * visible, then the window positions max(0, p-W+1)..p from the history;
 * softmax with the sink logit (no_sink: without it). Returns max |o - ref|. */
static double at_check(const atest *a, bool no_sink)
{
    const int d = a->sh.head_dim, H = a->sh.n_heads, W = a->sh.window;
    const double scale = 1.0 / sqrt((double)d);
    double worst = 0;
    const float **keys = xcalloc((size_t)(W + 4096), sizeof *keys);
    double *sc = xcalloc((size_t)(W + 4096), sizeof(double));
    for (int k = 0; k < a->n_seqs; k++) {
        const aseq *s = &a->seq[k];
        for (int t = 0; t < s->ntok; t++) {
            const int row = a->bs.row[k] + t, p = s->start + t;
            int nk = 0;
            if (a->sh.kind == LAYER_HCA)
                for (int i = 0; i < (p + 1) / a->sh.ratio; i++)
                    keys[nk++] = s->entries + (int64_t)i * d;
            if (a->sh.kind == LAYER_CSA)
                for (int c = 0; c < a->sh.topk; c++)
                    if (a->sel[row * a->sh.topk + c] >= 0)
                        keys[nk++] = s->entries + (int64_t)a->sel[row * a->sh.topk + c] * d;
            for (int qp = p - W + 1 > 0 ? p - W + 1 : 0; qp <= p; qp++)
                keys[nk++] = s->hist + (int64_t)qp * d;
            for (int h = 0; h < H; h++) {
                const float *qh = a->q + ((int64_t)row * H + h) * d;
                double mx = no_sink ? -INFINITY : a->sinks[h];
                for (int j = 0; j < nk; j++) {
                    double v = 0;
                    for (int c = 0; c < d; c++)
                        v += (double)qh[c] * keys[j][c];
                    sc[j] = v * scale;
                    mx = fmax(mx, sc[j]);
                }
                double den = no_sink ? 0 : exp(a->sinks[h] - mx);
                for (int j = 0; j < nk; j++)
                    den += (sc[j] = exp(sc[j] - mx));
                for (int c = 0; c < d; c++) {
                    double v = 0;
                    for (int j = 0; j < nk; j++)
                        v += sc[j] * keys[j][c];
                    double got = a->o[((int64_t)row * H + h) * d + c];
                    double diff = fabs(got - v / den);
                    worst = isnan(got) ? INFINITY : fmax(worst, diff);
                }
            }
        }
    }
    free(keys);
    free(sc);
    return worst;
}

/* Three sequences: a chunk whose window reaches into the ring, a fresh
 * prefill (its ring slot is all NaN and must not be read), one decode token. */
static void at_default_seqs(atest *a, layer_kind_t kind)
{
    *a = (atest){.sh = {.n_heads = 3, .head_dim = 32, .rope_dim = 8, .window = 8, .kind = kind,
                        .ratio = kind == LAYER_SLIDING ? 0 : 4, .entries_per_block = kind == LAYER_SLIDING ? 0 : 4,
                        .block_tokens = 16, .topk = kind == LAYER_CSA ? 5 : 0},
                 .n_slots = 3, .n_blocks = 12, .n_seqs = 3};
    a->seq[0] = (aseq){.slot = 2, .start = 21, .ntok = 5, .blocks = {7, 3}, .n_blocks = 2};
    a->seq[1] = (aseq){.slot = 0, .start = 0, .ntok = 3, .blocks = {5}, .n_blocks = 1};
    a->seq[2] = (aseq){.slot = 1, .start = 40, .ntok = 1, .blocks = {1, 9, 11}, .n_blocks = 3};
}

static void test_attention_direct(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const layer_kind_t kinds[3] = {LAYER_SLIDING, LAYER_HCA, LAYER_CSA};
    for (int k = 0; k < 3; k++) {
        atest a;
        at_default_seqs(&a, kinds[k]);
        at_build(be, &a, &r);
        at_run(be, &a);
        double worst = at_check(&a, false);
        fprintf(stderr, "# attention kind %d: max |diff| %.2e\n", (int)kinds[k], worst);
        assert_true(worst <= 1e-5);
        at_free(&a);
    }
    backend_cpu_destroy(be);
}

static void test_attention_sinks(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    const layer_kind_t kinds[2] = {LAYER_SLIDING, LAYER_HCA};
    for (int k = 0; k < 2; k++) {
        atest a;
        at_default_seqs(&a, kinds[k]);
        at_build(be, &a, &r);
        /* a sink far above every score takes all the mass: output ~0 */
        fill_value(a.sinks, a.sh.n_heads, 1e4f);
        at_run(be, &a);
        const int n = a.bs.n_tokens * a.sh.n_heads * a.sh.head_dim;
        for (int i = 0; i < n; i++)
            assert_true(fabs(a.o[i]) <= 1e-30);
        /* a sink far below: plain softmax over the visible keys */
        fill_value(a.sinks, a.sh.n_heads, -1e30f);
        at_run(be, &a);
        double worst = at_check(&a, true);
        fprintf(stderr, "# sink -1e30 vs no sink: %.2e\n", worst);
        assert_true(worst <= 1e-5);
        /* a moderate sink: only part of the mass (checked against direct) */
        fill_value(a.sinks, a.sh.n_heads, 3.0f);
        at_run(be, &a);
        assert_true(at_check(&a, false) <= 1e-5);
        assert_true(at_check(&a, true) > 1e-3);
        at_free(&a);
    }
    backend_cpu_destroy(be);
}

/* HCA's causal rule: entry w is visible to the token at position t iff
 * w < floor((t+1)/ratio). Each entry is a distinct basis direction scaled
 * so that its score dwarfs the (zero) window keys; o's component along
 * entry w is then > 0 iff w is visible. Run as one prefill of T rows and as
 * T single-token steps. */
static void test_attention_hca_causal_rule(void **state)
{
    v4_backend *be = mk_backend();
    enum { D = 32, T = 43, M = 4, W = 2, BT = 16, EPB = BT / M };
    const int32_t blocks[3] = {2, 0, 1};
    const int n_ent = T / M; /* 10 */
    float *pool = xcalloc(3 * EPB * D, 4), *ring = xcalloc(W * D, 4), *q = xcalloc(T * D, 4),
          *kv = xcalloc(T * D, 4), *o = xcalloc(T * D, 4);
    fill_value(pool, 3 * EPB * D, NAN);
    for (int w = 0; w < n_ent; w++) {
        float *e = entry_at(pool, blocks, w, EPB, D);
        memset(e, 0, D * 4);
        e[w] = 8.0f;
    }
    for (int t = 0; t < T; t++)
        for (int w = 0; w < n_ent; w++)
            q[t * D + w] = 30.0f * sqrtf((float)D) / 8.0f; /* score 30 against every entry */
    float sink = -1e30f;
    v4_attn_shape sh = {.n_heads = 1, .head_dim = D, .rope_dim = 8, .window = W, .kind = LAYER_HCA, .ratio = M,
                        .entries_per_block = EPB, .block_tokens = BT};
    v4_layer_kv lkv = {.ring = ring, .entries = pool, .dtype = DT_F32};
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 0) {
            bstep bs;
            bs_init(&bs);
            bs_add(&bs, 0, 0, T, blocks, 3);
            v4_step st = bs_set(be, &bs);
            be->ops->attention(be, o, q, kv, &lkv, NULL, &sink, &st, &sh);
        } else {
            for (int t = 0; t < T; t++) {
                bstep bs;
                bs_init(&bs);
                bs_add(&bs, 0, t, 1, blocks, 3);
                v4_step st = bs_set(be, &bs);
                be->ops->attention(be, o + t * D, q + t * D, kv + t * D, &lkv, NULL, &sink, &st, &sh);
                be->ops->ring_store(be, &lkv, kv + t * D, &st, W, D);
            }
        }
        expect_synced(be);
        for (int t = 0; t < T; t++) {
            const int vis = (t + 1) / M;
            for (int w = 0; w < n_ent; w++) {
                if (w < vis)
                    assert_float_equal(o[t * D + w], 8.0f / vis, 1e-4);
                else if (o[t * D + w] != 0.0f)
                    fail_msg("position %d sees entry %d (o = %g); visible are %d", t, w, o[t * D + w], vis);
            }
        }
    }
    free(pool);
    free(ring);
    free(q);
    free(kv);
    free(o);
    backend_cpu_destroy(be);
}

/* The ring holds the last W kv rows per slot; a step longer than W keeps
 * only its last W; other slots are untouched. */
static void test_ring_store(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { D = 16, W = 8, SLOTS = 3, T = 30 };
    float *ring = xcalloc(SLOTS * W * D, 4), hist[2][T * D];
    fill_value(ring, SLOTS * W * D, -7.0f);
    fill_normal(&r, hist[0], T * D, 1.0f);
    fill_normal(&r, hist[1], T * D, 1.0f);
    v4_layer_kv lkv = {.ring = ring, .dtype = DT_F32};
    const int32_t blk[1] = {0};
    /* slot 2: steps of 11 (> W), 3, 1, 9; slot 0: steps of 2, 12, 5, 1 */
    const int steps[2][4] = {{11, 3, 1, 9}, {2, 12, 5, 1}}, slots[2] = {2, 0};
    int pos[2] = {0, 0};
    for (int k = 0; k < 4; k++) {
        bstep bs;
        bs_init(&bs);
        float kv[40 * D];
        int rows = 0;
        for (int s = 0; s < 2; s++) {
            bs_add(&bs, slots[s], pos[s], steps[s][k], blk, 1);
            memcpy(kv + rows * D, hist[s] + pos[s] * D, (size_t)steps[s][k] * D * 4);
            rows += steps[s][k];
        }
        v4_step st = bs_set(be, &bs);
        be->ops->ring_store(be, &lkv, kv, &st, W, D);
        expect_synced(be);
        for (int s = 0; s < 2; s++) {
            pos[s] += steps[s][k];
            for (int p = pos[s] - W > 0 ? pos[s] - W : 0; p < pos[s]; p++)
                assert_memory_equal(ring + (slots[s] * W + p % W) * D, hist[s] + p * D, D * 4);
        }
        for (int i = 0; i < W * D; i++) /* slot 1 is nobody's */
            assert_true(ring[W * D + i] == -7.0f);
    }
    free(ring);
    backend_cpu_destroy(be);
}

/* Attention + ring_store over a sequence in chunks gives the same outputs,
 * bit for bit, as one step (window keys come from the step or the ring). */
static void test_attention_chunked_equals_whole(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    enum { D = 32, H = 2, T = 41, W = 8, M = 4, BT = 16, EPB = 4 };
    const int32_t blocks[3] = {4, 1, 3};
    float *pool = xcalloc(5 * EPB * D, 4), *ring = xcalloc(2 * W * D, 4), *q = xcalloc(T * H * D, 4),
          *kv = xcalloc(T * D, 4), *o1 = xcalloc(T * H * D, 4), *o2 = xcalloc(T * H * D, 4), sinks[H];
    fill_normal(&r, pool, 5 * EPB * D, 1.0f);
    fill_normal(&r, q, T * H * D, 2.0f);
    fill_normal(&r, kv, T * D, 1.0f);
    fill_normal(&r, sinks, H, 1.0f);
    v4_attn_shape sh = {.n_heads = H, .head_dim = D, .rope_dim = 8, .window = W, .kind = LAYER_HCA, .ratio = M,
                        .entries_per_block = EPB, .block_tokens = BT};
    v4_layer_kv lkv = {.ring = ring, .entries = pool, .dtype = DT_F32};
    bstep bs;
    bs_init(&bs);
    bs_add(&bs, 1, 0, T, blocks, 3);
    v4_step st = bs_set(be, &bs);
    be->ops->attention(be, o1, q, kv, &lkv, NULL, sinks, &st, &sh);
    fill_value(ring, 2 * W * D, NAN);
    const int chunks[] = {7, 1, 13, 9, 2, 1, 8};
    for (int k = 0, p = 0; p < T; p += chunks[k++]) {
        bs_init(&bs);
        bs_add(&bs, 1, p, chunks[k], blocks, 3);
        st = bs_set(be, &bs);
        be->ops->attention(be, o2 + p * H * D, q + p * H * D, kv + p * D, &lkv, NULL, sinks, &st, &sh);
        be->ops->ring_store(be, &lkv, kv + p * D, &st, W, D);
    }
    expect_synced(be);
    assert_memory_equal(o1, o2, T * H * D * sizeof(float));
    free(pool);
    free(ring);
    free(q);
    free(kv);
    free(o1);
    free(o2);
    backend_cpu_destroy(be);
}

/* ---- compressors (MODEL.md 4.3) ----------------------------------------------- */

typedef struct ctest {
    v4_comp_shape sh;
    int T;
    float *a, *z, *ape, *norm_w, *freq;
} ctest;

/* Direct entry i of a sequence: softmax per channel over the window's z
 * (+ ape) of a whole window, not online; CSA mixes window i-1's Ca and
 * window i's Cb (no window -1); then weighted RMSNorm and rope at i*m. */
static void ref_entry(const ctest *c, int i, double *out)
{
    const v4_comp_shape *sh = &c->sh;
    const int m = sh->ratio, head = sh->head, wd = sh->width;
    for (int ch = 0; ch < head; ch++) {
        double zs[64], as[64];
        int n = 0;
        if (sh->overlap && i > 0)
            for (int j = 0; j < m; j++) {
                const int tok = (i - 1) * m + j;
                zs[n] = (double)c->z[tok * wd + ch] + c->ape[j * wd + ch];
                as[n++] = c->a[tok * wd + ch];
            }
        const int off = sh->overlap ? head : 0;
        for (int j = 0; j < m; j++) {
            const int tok = i * m + j;
            zs[n] = (double)c->z[tok * wd + off + ch] + c->ape[j * wd + off + ch];
            as[n++] = c->a[tok * wd + off + ch];
        }
        double mx = -INFINITY, den = 0, num = 0;
        for (int k = 0; k < n; k++)
            mx = fmax(mx, zs[k]);
        for (int k = 0; k < n; k++) {
            double w = exp(zs[k] - mx);
            den += w;
            num += w * as[k];
        }
        out[ch] = num / den;
    }
    double ss = 0;
    for (int ch = 0; ch < head; ch++)
        ss += out[ch] * out[ch];
    const double inv = 1.0 / sqrt(ss / head + sh->eps);
    for (int ch = 0; ch < head; ch++)
        out[ch] *= inv * c->norm_w[ch];
    double *p = out + head - sh->rope_dim;
    for (int k = 0; k < sh->rope_dim / 2; k++) {
        const double ang = (double)i * m * c->freq[k];
        const double x0 = p[2 * k], x1 = p[2 * k + 1];
        p[2 * k] = x0 * cos(ang) - x1 * sin(ang);
        p[2 * k + 1] = x1 * cos(ang) + x0 * sin(ang);
    }
}

static ctest mk_ctest(tu_rng *r, bool overlap, int T, int head, int m)
{
    ctest c = {.sh = {.ratio = m, .head = head, .width = overlap ? 2 * head : head, .overlap = overlap,
                      .rope_dim = 8, .entries_per_block = 16 / m, .block_tokens = 16, .eps = 1e-6f},
               .T = T};
    const int wd = c.sh.width;
    c.a = xcalloc((size_t)T * wd, 4);
    c.z = xcalloc((size_t)T * wd, 4);
    c.ape = xcalloc((size_t)m * wd, 4);
    c.norm_w = xcalloc((size_t)head, 4);
    c.freq = xcalloc(4, 4);
    fill_normal(r, c.a, (int64_t)T * wd, 1.0f);
    fill_normal(r, c.z, (int64_t)T * wd, 2.0f);
    fill_normal(r, c.ape, (int64_t)m * wd, 1.0f);
    for (int ch = 0; ch < head; ch++)
        c.norm_w[ch] = tu_uniform(r, 0.5f, 1.5f);
    for (int k = 0; k < 4; k++)
        c.freq[k] = powf(10000.0f, -2.0f * k / 8) * 0.3f;
    return c;
}

static void free_ctest(ctest *c)
{
    free(c->a);
    free(c->z);
    free(c->ape);
    free(c->norm_w);
    free(c->freq);
}

/* Two sequences through compress in steps; `sizes[s]` lists the chunk sizes
 * of sequence s per step (0: absent from that step). After each step, the
 * entries of complete windows are there and the rest is still NaN. */
typedef struct cseqs {
    ctest c[2];
    int slot[2];
    int32_t blocks[2][MAXB];
    int n_blocks[2];
} cseqs;

static void run_compress(v4_backend *be, const cseqs *cs, int n_steps, int sizes[][2], float *pool,
                         float *acc, int n_pool_blocks, int n_slots)
{
    const v4_comp_shape *sh = &cs->c[0].sh;
    const int head = sh->head, wd = sh->width, m = sh->ratio, epb = sh->entries_per_block;
    const int n_acc = sh->overlap ? 2 : 1;
    fill_value(pool, (int64_t)n_pool_blocks * epb * head, NAN);
    fill_value(acc, (int64_t)n_slots * n_acc * 3 * head, NAN); /* must be reset at position 0 */
    int pos[2] = {0, 0};
    float *a = xcalloc(MAXT * (size_t)wd, 4), *z = xcalloc(MAXT * (size_t)wd, 4);
    for (int k = 0; k < n_steps; k++) {
        bstep bs;
        bs_init(&bs);
        for (int s = 0; s < 2; s++) {
            const int n = sizes[k][s];
            if (!n)
                continue;
            memcpy(a + (int64_t)bs.n_tokens * wd, cs->c[s].a + (int64_t)pos[s] * wd, (size_t)n * wd * 4);
            memcpy(z + (int64_t)bs.n_tokens * wd, cs->c[s].z + (int64_t)pos[s] * wd, (size_t)n * wd * 4);
            bs_add(&bs, cs->slot[s], pos[s], n, cs->blocks[s], cs->n_blocks[s]);
        }
        v4_step st = bs_set(be, &bs);
        be->ops->compress(be, pool, acc, a, z, cs->c[0].ape, cs->c[0].norm_w, cs->c[0].freq, &st, sh);
        expect_synced(be);
        for (int s = 0; s < 2; s++) {
            pos[s] += sizes[k][s];
            const int max_e = cs->n_blocks[s] * epb;
            for (int i = 0; i < max_e; i++) {
                const float *e = entry_at(pool, cs->blocks[s], i, epb, head);
                for (int ch = 0; ch < head; ch++)
                    if (isnan(e[ch]) != (i >= pos[s] / m))
                        fail_msg("sequence %d after %d tokens: entry %d channel %d is %g", s, pos[s], i, ch, e[ch]);
            }
        }
    }
    for (int s = 0; s < 2; s++)
        assert_int_equal(pos[s], cs->c[s].T);
    free(a);
    free(z);
}

/* Random chunking of T tokens into steps of 1..max (or 0 = skip a step). */
static int random_schedule(tu_rng *r, const int T[2], int sizes[][2], int max_steps)
{
    int left[2] = {T[0], T[1]}, k = 0;
    while ((left[0] || left[1]) && k < max_steps) {
        for (int s = 0; s < 2; s++) {
            int n = rand_int(r, 4) == 0 ? 0 : 1 + rand_int(r, 9);
            sizes[k][s] = n < left[s] ? n : left[s];
            left[s] -= sizes[k][s];
        }
        k++;
    }
    assert_true(!left[0] && !left[1]);
    return k;
}

static void compress_case(v4_backend *be, tu_rng *r, bool overlap)
{
    enum { HEAD = 16, M = 4, NB = 10, SLOTS = 3 };
    cseqs cs = {.slot = {2, 0}, .blocks = {{5, 2}, {0, 8, 3}}, .n_blocks = {2, 3}};
    cs.c[0] = mk_ctest(r, overlap, 27, HEAD, M); /* 6 windows + 3 tokens waiting */
    cs.c[1] = mk_ctest(r, overlap, 45, HEAD, M); /* 11 windows + 1 */
    /* one set of parameters (the layer's), two sequences' inputs */
    memcpy(cs.c[1].ape, cs.c[0].ape, (size_t)M * cs.c[0].sh.width * 4);
    memcpy(cs.c[1].norm_w, cs.c[0].norm_w, HEAD * 4);
    memcpy(cs.c[1].freq, cs.c[0].freq, 4 * 4);
    const int epb = cs.c[0].sh.entries_per_block;
    float *pool1 = xcalloc(NB * epb * HEAD, 4), *pool2 = xcalloc(NB * epb * HEAD, 4),
          *acc = xcalloc(SLOTS * 2 * 3 * HEAD, 4);

    /* whole sequences in one step */
    int whole[1][2] = {{27, 45}};
    run_compress(be, &cs, 1, whole, pool1, acc, NB, SLOTS);
    double worst = 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < cs.c[s].T / M; i++) {
            double ref[HEAD];
            ref_entry(&cs.c[s], i, ref);
            const float *e = entry_at(pool1, cs.blocks[s], i, epb, HEAD);
            for (int ch = 0; ch < HEAD; ch++)
                worst = fmax(worst, fabs(e[ch] - ref[ch]));
        }
    fprintf(stderr, "# compress %s vs direct: max |diff| %.2e\n", overlap ? "CSA" : "HCA", worst);
    assert_true(worst <= 2e-5);

    /* awkward fixed chunkings: single tokens, exact window ends, spans of
     * several windows, and steps where one sequence is absent */
    int fixed[][2] = {{1, 4}, {2, 4}, {5, 0}, {3, 13}, {1, 1}, {0, 1}, {7, 22}, {8, 0}};
    run_compress(be, &cs, 8, fixed, pool2, acc, NB, SLOTS);
    assert_memory_equal(pool1, pool2, (size_t)NB * epb * HEAD * 4); /* entries bit for bit, NaN elsewhere */
    /* random chunkings */
    for (int rep = 0; rep < 5; rep++) {
        int sizes[128][2];
        const int T[2] = {27, 45};
        int n = random_schedule(r, T, sizes, 128);
        run_compress(be, &cs, n, sizes, pool2, acc, NB, SLOTS);
        assert_memory_equal(pool1, pool2, (size_t)NB * epb * HEAD * 4);
    }
    free(pool1);
    free(pool2);
    free(acc);
    free_ctest(&cs.c[0]);
    free_ctest(&cs.c[1]);
}

static void test_compress_hca(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    compress_case(be, &r, false);
    backend_cpu_destroy(be);
}

static void test_compress_csa_overlap(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    compress_case(be, &r, true);
    backend_cpu_destroy(be);
}

/* ---- indexer top-k (MODEL.md 4.4) ------------------------------------------------ */

/* Checks one row of the selection against brute-force scores of the
 * eligible entries: min(topk, n_elig) distinct ascending eligible indices,
 * then -1; when more are eligible, no unselected entry scores above a
 * selected one (beyond fp32 rounding), i.e. exactly the top-k. */
static void check_sel_row(const int32_t *sel, int topk, const double *score, int n_elig, int pos)
{
    const int cnt = n_elig < topk ? n_elig : topk;
    for (int k = 0; k < topk; k++) {
        if (k < cnt) {
            if (sel[k] < 0 || sel[k] >= n_elig || (k > 0 && sel[k] <= sel[k - 1]))
                fail_msg("position %d column %d: %d (eligible %d, previous %d)", pos, k, sel[k], n_elig,
                         k ? sel[k - 1] : -2);
        } else if (sel[k] != -1) {
            fail_msg("position %d column %d: %d, expected -1 (eligible %d)", pos, k, sel[k], n_elig);
        }
    }
    if (n_elig <= topk) {
        for (int k = 0; k < cnt; k++)
            assert_int_equal(sel[k], k); /* all eligible, in order */
        return;
    }
    double min_in = INFINITY, max_out = -INFINITY, mag = 0;
    for (int i = 0; i < n_elig; i++) {
        bool in = false;
        for (int k = 0; k < topk; k++)
            in |= sel[k] == i;
        if (in)
            min_in = fmin(min_in, score[i]);
        else
            max_out = fmax(max_out, score[i]);
        mag = fmax(mag, fabs(score[i]));
    }
    if (min_in < max_out - 1e-5 * mag)
        fail_msg("position %d: selected score %g below unselected %g", pos, min_in, max_out);
}

typedef struct itest {
    int h, c, m, epb, topk, n_blocks;
    float *keys, *q, *w;
} itest;

static void ref_scores(const itest *x, const int32_t *bt, const float *q, const float *w, int n, double *score)
{
    for (int i = 0; i < n; i++) {
        const float *k = entry_at(x->keys, bt, i, x->epb, x->c);
        double s = 0;
        for (int hh = 0; hh < x->h; hh++) {
            double dot = 0;
            for (int ch = 0; ch < x->c; ch++)
                dot += (double)q[hh * x->c + ch] * k[ch];
            s += w[hh] * (dot > 0 ? dot : 0) / sqrt((double)x->c);
        }
        score[i] = s;
    }
}

/* Decode tokens at chosen positions (one sequence each, one block table):
 * fewer eligible entries than top-k, exactly top-k, more. Entries 8 and up
 * have large keys, so a token that could see them would pick them. */
static void test_index_topk_eligibility(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    itest x = {.h = 3, .c = 16, .m = 4, .epb = 4, .topk = 5, .n_blocks = 6};
    const int32_t bt[4] = {4, 1, 5, 0};
    const int pos[] = {0, 2, 3, 7, 18, 19, 20, 23, 27, 31, 40, 63};
    const int N = (int)(sizeof pos / sizeof pos[0]);
    x.keys = xcalloc((size_t)x.n_blocks * x.epb * x.c, 4);
    fill_value(x.keys, x.n_blocks * x.epb * x.c, NAN);
    for (int i = 0; i < 16; i++) {
        float *k = entry_at(x.keys, bt, i, x.epb, x.c);
        fill_normal(&r, k, x.c, i >= 8 ? 100.0f : 1.0f);
    }
    x.q = xcalloc((size_t)N * x.h * x.c, 4);
    x.w = xcalloc((size_t)N * x.h, 4);
    fill_normal(&r, x.q, N * x.h * x.c, 1.0f);
    for (int i = 0; i < N * x.h; i++)
        x.w[i] = tu_uniform(&r, 0.1f, 1.0f);
    bstep bs;
    bs_init(&bs);
    for (int t = 0; t < N; t++)
        bs_add(&bs, t, pos[t], 1, bt, 4);
    v4_step st = bs_set(be, &bs);
    int32_t sel[16 * 5];
    be->ops->index_topk(be, sel, x.q, x.w, x.keys, &st, x.h, x.c, x.m, x.epb, 16, x.topk);
    expect_synced(be);
    for (int t = 0; t < N; t++) {
        const int n_elig = (pos[t] + 1) / x.m;
        double score[16];
        ref_scores(&x, bt, x.q + t * x.h * x.c, x.w + t * x.h, n_elig, score);
        check_sel_row(sel + t * x.topk, x.topk, score, n_elig, pos[t]);
    }
    /* spelled out: position 3 sees entry 0 only; 18 sees 0..3; 19 sees 0..4 */
    const int32_t p3[5] = {0, -1, -1, -1, -1}, p18[5] = {0, 1, 2, 3, -1}, p19[5] = {0, 1, 2, 3, 4};
    assert_memory_equal(sel + 2 * 5, p3, sizeof p3);
    assert_memory_equal(sel + 4 * 5, p18, sizeof p18);
    assert_memory_equal(sel + 5 * 5, p19, sizeof p19);
    for (int k = 0; k < 5; k++) { /* positions 0 and 2: nothing eligible */
        assert_int_equal(sel[k], -1);
        assert_int_equal(sel[5 + k], -1);
    }
    for (int k = 0; k < 5; k++) /* position 63 sees all 16 and picks large keys */
        assert_true(sel[11 * 5 + k] >= 0);
    free(x.keys);
    free(x.q);
    free(x.w);
    backend_cpu_destroy(be);
}

/* A prefill of many rows (each row its own eligibility) in two sequences
 * with shuffled blocks; head weights of both signs; against brute force. */
static void test_index_topk_brute_force(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    v4_backend *be = mk_backend();
    itest x = {.h = 4, .c = 32, .m = 4, .epb = 4, .topk = 7, .n_blocks = 12};
    const int32_t bts[2][6] = {{9, 2, 7, 0, 11, 4}, {3, 10, 5, 1, 6, 8}};
    const int T[2] = {90, 37}, starts[2] = {0, 60};
    x.keys = xcalloc((size_t)x.n_blocks * x.epb * x.c, 4);
    fill_normal(&r, x.keys, x.n_blocks * x.epb * x.c, 1.0f);
    bstep bs;
    bs_init(&bs);
    bs_add(&bs, 1, starts[0], T[0], bts[0], 6);
    bs_add(&bs, 0, starts[1], T[1], bts[1], 6);
    const int n = bs.n_tokens;
    x.q = xcalloc((size_t)n * x.h * x.c, 4);
    x.w = xcalloc((size_t)n * x.h, 4);
    fill_normal(&r, x.q, n * x.h * x.c, 1.0f);
    fill_normal(&r, x.w, n * x.h, 1.0f);
    v4_step st = bs_set(be, &bs);
    int32_t *sel = xcalloc((size_t)n * x.topk, 4);
    be->ops->index_topk(be, sel, x.q, x.w, x.keys, &st, x.h, x.c, x.m, x.epb, 16, x.topk);
    expect_synced(be);
    int more = 0;
    for (int t = 0; t < n; t++) {
        const int s = bs.tok_seq[t], p = bs.tok_pos[t], n_elig = (p + 1) / x.m;
        double score[96];
        ref_scores(&x, bts[s], x.q + t * x.h * x.c, x.w + t * x.h, n_elig, score);
        check_sel_row(sel + t * x.topk, x.topk, score, n_elig, p);
        more += n_elig > x.topk;
    }
    assert_true(more > 50);
    free(sel);
    free(x.keys);
    free(x.q);
    free(x.w);
    backend_cpu_destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_direct),
        cmocka_unit_test(test_attention_sinks),
        cmocka_unit_test(test_attention_hca_causal_rule),
        cmocka_unit_test(test_ring_store),
        cmocka_unit_test(test_attention_chunked_equals_whole),
        cmocka_unit_test(test_compress_hca),
        cmocka_unit_test(test_compress_csa_overlap),
        cmocka_unit_test(test_index_topk_eligibility),
        cmocka_unit_test(test_index_topk_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
