/* Whole-model tests on the GPU.
 *
 * graph_vs_eager: the golden models (tiny, rates) on two CUDA backends, one
 * replaying decode steps from CUDA graphs and one with V4_CUDA_GRAPHS=0,
 * through a schedule whose batch changes between steps: sequences join
 * (prefill chunks mixed with decodes), leave, reuse freed slots and blocks,
 * appear in a different row order, at different context lengths, crossing
 * block (256) and compression-window boundaries. Every step's logits must
 * agree within 1e-5 of their max (they are in fact computed by the same
 * kernels on the same rows; padding rows and the reserved slot must not
 * leak into real rows) and give identical greedy tokens.
 *
 * model_full_dims (--model DIR, a random full-dimension checkpoint such as
 * `v4serve mkmodel --preset flash --layers 2`): CUDA against the CPU backend
 * keeping its KV the same way, two sequences, a prefill step then decode
 * steps: the plain kernels with fp32 KV (logits within 1e-3 of their max,
 * identical greedy tokens) and with bf16 KV (within 2e-2, greedy agreeing
 * on >= 90% of rows), against a CPU with bf16 KV so that the comparison
 * tests the kernels rather than the model's sensitivity to KV rounding (a
 * random checkpoint can put a top-k choice within a bf16 step of a tie: a
 * bf16 GPU against an fp32 CPU once failed at 9.8e-2); and the fast paths
 * (tensor cores, matrix-vector decode kernels, split attention) with bf16
 * KV, whose bf16 GEMM operands can flip such a choice on their own: every
 * logit finite and greedy agreeing on >= 90% of rows, the error reported. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt.h"
#include "gt_tests.h"
#include "model/forward.h"
#include "model/model.h"

#define MAX_SEQ 6
#define MAX_BLK 64

typedef struct mseq {
    bool live;
    int slot;
    int64_t pos;
    int32_t next;      /* token to feed at the next decode */
    int32_t blocks[MAX_BLK];
    int n_blocks;
    int32_t prompt[256];
} mseq;

typedef struct pool {
    int32_t free_blocks[4 * MAX_BLK];
    int n_free;
    bool slot_used[16];
    int block_tokens;
} pool;

static int64_t argmax(const float *x, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* One entry of the schedule: sequence s takes n tokens (n > 1: prompt
 * chunk, 1: decode); n == 0 ends the step; n < 0: the sequence leaves. */
typedef struct sched_op {
    int s, n;
} sched_op;

static const sched_op SCHEDULE[] = {
    {0, 64}, {0, 0}, {0, 64}, {0, 0}, {0, 64}, {0, 0}, {0, 58}, {0, 0},          /* seq 0: 250-token prompt */
    {0, 1}, {0, 0}, {0, 1}, {0, 0}, {0, 1}, {0, 0},                              /* bucket 1 */
    {0, 1}, {1, 40}, {0, 0},                                                     /* join, mixed step */
    {0, 1}, {1, 1}, {0, 0}, {0, 1}, {1, 1}, {0, 0}, {0, 1}, {1, 1}, {0, 0},      /* bucket 2 */
    {0, 1}, {1, 1}, {2, 20}, {0, 0},                                             /* join */
    {0, 1}, {1, 1}, {2, 1}, {0, 0}, {0, 1}, {1, 1}, {2, 1}, {0, 0},              /* bucket 4, one pad row */
    {0, 1}, {1, 1}, {2, 1}, {0, 0}, {0, 1}, {1, 1}, {2, 1}, {0, 0},              /* seq 0 crosses 256 */
    {0, 1}, {1, 1}, {2, 1}, {0, 0}, {0, 1}, {1, 1}, {2, 1}, {0, 0},
    {0, -1}, {1, 1}, {2, 1}, {3, 7}, {0, 0},                                     /* leave, join */
    {1, 1}, {2, 1}, {3, 1}, {0, 0}, {3, 1}, {1, 1}, {2, 1}, {0, 0},              /* other rows, order */
    {1, 1}, {2, 1}, {3, 1}, {0, 0}, {1, -1}, {2, 1}, {3, 1}, {0, 0},             /* bucket 2 replay */
    {3, 1}, {2, 1}, {0, 0}, {2, -1}, {3, 1}, {0, 0}, {3, 1}, {0, 0},             /* bucket 1 replay */
    {3, 1}, {4, 30}, {0, 0},                                                     /* slot reuse */
    {4, 1}, {3, 1}, {0, 0}, {3, 1}, {4, 1}, {0, 0}, {4, 1}, {3, 1}, {0, 0}, {3, 1}, {4, 1}, {0, 0},
};

static bool run_graph_vs_eager(const char *model_dir)
{
    tu_rng r = gt_rng("graph_vs_eager");
    v4_err err;
    v4_backend *be[2] = {gt_cuda(DT_F8_E4M3, "bf16", true), gt_cuda(DT_F8_E4M3, "bf16", false)};
    v4_model *m[2] = {NULL, NULL};
    v4_forward *f[2] = {NULL, NULL};
    float *lg[2] = {NULL, NULL};
    bool ok = false;
    if (!be[0] || !be[1])
        goto out;
    if (!be[0]->ops->capture_begin || be[1]->ops->capture_begin) {
        gt_fail("V4_CUDA_GRAPHS did not switch graph capture on and off");
        goto out;
    }
    for (int k = 0; k < 2; k++)
        if (model_open(model_dir, be[k], &m[k], &err)) {
            gt_fail("model_open %s: %s", model_dir, err.msg);
            goto out;
        }
    const v4_config *c = &m[0]->cfg;
    kv_geom g;
    if (kv_geom_init(&g, c, 0, 4, 512, &err)) {
        gt_fail("kv_geom_init: %s", err.msg);
        goto out;
    }
    g.n_blocks = 4 * g.max_blocks_per_seq + 2;
    for (int k = 0; k < 2; k++)
        if (fwd_create(m[k], &g, 64, &f[k], &err)) {
            gt_fail("fwd_create: %s", err.msg);
            goto out;
        }
    const int64_t V = c->vocab_size;
    lg[0] = gt_hostf((size_t)64 * V);
    lg[1] = gt_hostf((size_t)64 * V);
    pool pl = {.block_tokens = g.block_tokens};
    for (int64_t b = g.n_blocks - 1; b >= 0; b--)
        pl.free_blocks[pl.n_free++] = (int32_t)b;
    for (int i = pl.n_free - 1; i > 0; i--) { /* shuffled: block ids unrelated to positions */
        int j = (int)(tu_next(&r) % (uint64_t)(i + 1));
        int32_t t = pl.free_blocks[i];
        pl.free_blocks[i] = pl.free_blocks[j], pl.free_blocks[j] = t;
    }
    mseq seqs[MAX_SEQ];
    memset(seqs, 0, sizeof seqs);
    v4_seq_batch batch[MAX_SEQ];
    int nb = 0, steps = 0, decode_steps = 0;
    double worst = 0;
    /* --quick (under compute-sanitizer): the first 24 steps, which still
     * replay buckets 1, 2 and 4 (with a padding row) */
    for (size_t i = 0; i < sizeof SCHEDULE / sizeof *SCHEDULE && !(GT.quick && steps >= 24); i++) {
        const sched_op op = SCHEDULE[i];
        mseq *q = &seqs[op.s];
        if (op.n < 0) { /* leave: return slot and blocks */
            pl.slot_used[q->slot] = false;
            for (int b = 0; b < q->n_blocks; b++)
                pl.free_blocks[pl.n_free++] = q->blocks[b];
            memset(q, 0, sizeof *q);
            continue;
        }
        if (op.n > 0) {
            if (!q->live) {
                q->live = true;
                q->slot = 0;
                while (pl.slot_used[q->slot])
                    q->slot++;
                pl.slot_used[q->slot] = true;
            }
            const int64_t end = q->pos + op.n;
            while ((int64_t)q->n_blocks * pl.block_tokens < end)
                q->blocks[q->n_blocks++] = pl.free_blocks[--pl.n_free];
            if (op.n > 1)
                for (int t = 0; t < op.n; t++)
                    q->prompt[t] = (int32_t)(tu_next(&r) % (uint64_t)V);
            else
                q->prompt[0] = q->next;
            batch[nb++] = (v4_seq_batch){.slot = q->slot, .start_pos = q->pos, .n_tokens = op.n, .tokens = q->prompt,
                                         .block_table = q->blocks, .n_blocks = q->n_blocks, .all_logits = false};
            continue;
        }
        /* end of step: run it on both forwards */
        bool decode = true;
        for (int b = 0; b < nb; b++)
            decode &= batch[b].n_tokens == 1;
        for (int k = 0; k < 2; k++)
            if (fwd_step(f[k], batch, nb, lg[k], &err)) {
                gt_fail("step %d on %s: %s", steps, k ? "eager" : "graphs", err.msg);
                goto out;
            }
        size_t bad;
        double e = gt_relerr(lg[0], lg[1], (size_t)nb * V, &bad);
        worst = fmax(worst, e);
        if (bad || !(e <= 1e-5)) {
            gt_fail("step %d (%d sequences%s): graph logits differ from eager by %.3e (%zu not finite)", steps, nb,
                    decode ? ", decode" : "", e, bad);
            goto out;
        }
        for (int b = 0; b < nb; b++) {
            const int64_t a0 = argmax(lg[0] + (int64_t)b * V, V), a1 = argmax(lg[1] + (int64_t)b * V, V);
            if (a0 != a1) {
                gt_fail("step %d row %d: greedy token %lld with graphs, %lld eager", steps, b, (long long)a0,
                        (long long)a1);
                goto out;
            }
            for (int s = 0; s < MAX_SEQ; s++)
                if (seqs[s].live && seqs[s].slot == batch[b].slot) {
                    seqs[s].pos += batch[b].n_tokens;
                    seqs[s].next = (int32_t)a0;
                }
        }
        steps++;
        decode_steps += decode;
        nb = 0;
    }
    gt_note("graph_vs_eager %s: %d steps (%d decode), worst logit difference %.3e (bound 1e-5)", model_dir, steps,
            decode_steps, worst);
    ok = true;
out:
    for (int k = 0; k < 2; k++) {
        fwd_destroy(f[k]);
        if (m[k])
            model_close(m[k]);
        gt_close(be[k]);
        free(lg[k]);
    }
    return ok;
}

void test_graph_vs_eager(void)
{
    char path[4096];
    const char *models[2] = {"tiny", "rates"};
    for (int i = 0; i < (GT.quick ? 1 : 2); i++) {
        snprintf(path, sizeof path, "%s/tests/golden/%s/model", GT.root, models[i]);
        if (!run_graph_vs_eager(path))
            return;
    }
}

/* CPU and CUDA backends stepped together; row k compares with ref[k]. */
void test_model_full_dims(void)
{
    if (!GT.model_dir) {
        gt_skip("no --model DIR given");
        return;
    }
    enum { NB = 5 }; /* cpu f32 KV, cpu bf16 KV, cuda plain f32 KV, cuda plain bf16 KV, cuda fast bf16 KV */
    static const char *names[NB] = {"cpu", "cpu bf16 KV", "cuda f32 KV", "cuda bf16 KV", "cuda fast bf16 KV"};
    static const int ref[NB] = {-1, -1, 0, 1, 1};
    static const double tol[NB] = {0, 0, 1e-3, 2e-2, INFINITY}, min_greedy[NB] = {0, 0, 1.0, 0.9, 0.9};
    tu_rng r = gt_rng("model_full_dims");
    v4_err err;
    /* the test runs with V4_CUDA_PLAIN=1 (gpu_main); the fast backend is made without it */
    const char *const no_plain[][2] = {{"V4_CUDA_PLAIN", NULL}};
    v4_backend *fast = gt_cuda_env(DT_F8_E4M3, "bf16", true, 1, no_plain);
    v4_backend *be[NB] = {gt_cpu(DT_F8_E4M3), gt_cpu_kv(DT_F8_E4M3, "bf16"), gt_cuda(DT_F8_E4M3, "f32", true),
                          gt_cuda(DT_F8_E4M3, "bf16", true), fast};
    v4_model *m[NB] = {NULL};
    v4_forward *f[NB] = {NULL};
    float *lg[NB] = {NULL};
    kv_geom g;
    for (int k = 0; k < NB; k++) {
        if (!be[k])
            goto out;
        if (model_open(GT.model_dir, be[k], &m[k], &err)) {
            gt_fail("%s on %s: %s", GT.model_dir, names[k], err.msg);
            goto out;
        }
    }
    if (kv_geom_init(&g, &m[0]->cfg, 8, 2, 256, &err)) {
        gt_fail("kv_geom_init: %s", err.msg);
        goto out;
    }
    g.n_blocks = 2 * g.max_blocks_per_seq;
    const int64_t V = m[0]->cfg.vocab_size;
    for (int k = 0; k < NB; k++) {
        if (fwd_create(m[k], &g, 64, &f[k], &err)) {
            gt_fail("fwd_create on %s: %s", names[k], err.msg);
            goto out;
        }
        lg[k] = gt_hostf((size_t)64 * V);
    }
    const int bt = g.block_tokens;
    int32_t p0[40], p1[23], blocks0[8], blocks1[8];
    for (int i = 0; i < 40; i++)
        p0[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
    for (int i = 0; i < 23; i++)
        p1[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
    for (int b = 0; b < g.max_blocks_per_seq && b < 8; b++) /* interleaved, reversed */
        blocks0[b] = (int32_t)(g.n_blocks - 1 - 2 * b), blocks1[b] = (int32_t)(g.n_blocks - 2 - 2 * b);
    int64_t pos[2] = {0, 0};
    int32_t next[2] = {0, 0};
    int rows_total = 0, greedy_same[NB] = {0};
    double worst[NB] = {0};
    for (int step = 0; step < 5; step++) {
        v4_seq_batch b[2];
        if (step == 0) {
            b[0] = (v4_seq_batch){.slot = 1, .start_pos = 0, .n_tokens = 40, .tokens = p0, .block_table = blocks0,
                                  .n_blocks = (40 + bt - 1) / bt, .all_logits = true};
            b[1] = (v4_seq_batch){.slot = 0, .start_pos = 0, .n_tokens = 23, .tokens = p1, .block_table = blocks1,
                                  .n_blocks = (23 + bt - 1) / bt, .all_logits = true};
        } else {
            for (int s = 0; s < 2; s++)
                b[s] = (v4_seq_batch){.slot = 1 - s, .start_pos = pos[s], .n_tokens = 1, .tokens = &next[s],
                                      .block_table = s ? blocks1 : blocks0,
                                      .n_blocks = (int)((pos[s] + 1 + bt - 1) / bt), .all_logits = false};
        }
        for (int k = 0; k < NB; k++)
            if (fwd_step(f[k], b, 2, lg[k], &err)) {
                gt_fail("full dims step %d on %s: %s", step, names[k], err.msg);
                goto out;
            }
        const int rows = fwd_logit_rows(b, 2);
        for (int k = 0; k < NB; k++) {
            if (ref[k] < 0)
                continue;
            size_t bad;
            const float *lr = lg[ref[k]];
            double e = gt_relerr(lg[k], lr, (size_t)rows * V, &bad);
            worst[k] = fmax(worst[k], e);
            if (bad || !(e <= tol[k])) {
                gt_fail("full dims step %d, %s: rel err %.3e > %.0e (%zu not finite)", step, names[k], e, tol[k], bad);
                goto out;
            }
            for (int i = 0; i < rows; i++)
                greedy_same[k] += argmax(lr + (int64_t)i * V, V) == argmax(lg[k] + (int64_t)i * V, V);
        }
        rows_total += rows;
        for (int s = 0; s < 2; s++) {
            pos[s] += b[s].n_tokens;
            const int last = step == 0 ? (s ? 40 + 22 : 39) : s; /* the sequence's last logit row */
            next[s] = (int32_t)argmax(lg[0] + (int64_t)last * V, V);
        }
    }
    for (int k = 0; k < NB; k++) {
        if (ref[k] < 0)
            continue;
        gt_note("full dims, %s against %s: worst rel err %.3e (bound %.0e), greedy agreement %d/%d", names[k],
                names[ref[k]], worst[k], tol[k], greedy_same[k], rows_total);
        if (greedy_same[k] < min_greedy[k] * rows_total)
            gt_fail("full dims, %s: greedy agreement %d/%d below %.0f%%", names[k], greedy_same[k], rows_total,
                    min_greedy[k] * 100);
    }
out:
    for (int k = 0; k < NB; k++) {
        free(lg[k]);
        fwd_destroy(f[k]);
        if (m[k])
            model_close(m[k]);
        gt_close(be[k]);
    }
}
