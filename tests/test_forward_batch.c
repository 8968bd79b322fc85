/* Batched forward steps equal single runs (src/model/forward.h): several
 * sequences share steps in every mix (one prefilling a chunk while others
 * decode single tokens, sequences joining later and taking the slots and
 * blocks that finished ones left dirty, chunk sizes fixed and random, block
 * ids handed out at random from a shared pool so no table is contiguous),
 * and every logit row a step returns must equal, bit for bit, the row of
 * the same position when the sequence runs alone as one whole prefill. Bit
 * equality holds on the CPU backend because every row is computed
 * independently and in a fixed order (linear layers loop over rows, MoE
 * experts compute each gathered row alone, the compressor folds tokens in
 * position order, attention reads window keys from the step or the ring
 * with the same values). Also the errors fwd_step reports.
 *
 * Schedules are random each run (the seed is printed). */
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
#include <time.h>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/model.h"
#include "testutil.h"
#include "tools/golden.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int rand_int(tu_rng *r, int n) { return (int)(tu_next(r) % (uint64_t)n); }

typedef struct env {
    v4_backend *be;
    v4_model *m;
    golden g;
} env;

static void env_open(env *e, const char *name)
{
    char dir[4096], gpath[4096];
    v4_err err;
    snprintf(dir, sizeof dir, "%s/model", tu_golden(name));
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", tu_golden(name));
    if (backend_cpu_create(2, DT_F8_E4M3, &e->be, &err) || model_open(dir, e->be, &e->m, &err) ||
        golden_load(gpath, &e->g, &err))
        fail_msg("%s: %s", name, err.msg);
}

static void env_close(env *e)
{
    golden_free(&e->g);
    model_close(e->m);
    backend_cpu_destroy(e->be);
}

/* All logits [T][V] of `tokens` run alone: one slot, contiguous blocks,
 * the whole sequence as one step. */
static float *run_alone(env *e, const int32_t *tokens, int T)
{
    v4_err err;
    kv_geom g;
    if (kv_geom_init(&g, &e->m->cfg, 1, 1, T, &err))
        fail_msg("kv_geom_init: %s", err.msg);
    g.n_blocks = g.max_blocks_per_seq;
    v4_forward *f;
    if (fwd_create(e->m, &g, T, &f, &err))
        fail_msg("fwd_create: %s", err.msg);
    int32_t blocks[64];
    for (int b = 0; b < g.max_blocks_per_seq; b++)
        blocks[b] = b;
    float *logits = malloc((size_t)T * e->m->cfg.vocab_size * sizeof(float));
    assert_non_null(logits);
    v4_seq_batch sb = {.slot = 0, .start_pos = 0, .n_tokens = T, .tokens = tokens, .block_table = blocks,
                       .n_blocks = (int32_t)g.max_blocks_per_seq, .all_logits = true};
    if (fwd_step(f, &sb, 1, logits, &err))
        fail_msg("fwd_step alone: %s", err.msg);
    fwd_destroy(f);
    return logits;
}

/* One sequence of a batch scenario. chunk > 0: the first `prompt` tokens
 * go in steps of `chunk`; chunk < 0: of a random size 1..-chunk each step;
 * afterwards one token per step. It joins at step `join` or when a slot is
 * free after that. */
typedef struct seqspec {
    const char *what;
    const int32_t *tokens;
    int T, prompt, chunk, join;
} seqspec;

#define MAX_SEQS 16
#define MAX_BLOCKS 16

typedef struct seqrun {
    seqspec sp;
    float *ref;
    int pos, slot, started, done;
    int32_t blocks[MAX_BLOCKS];
    int nb;
} seqrun;

typedef struct stats {
    int steps, mixed_steps, rows_compared, slot_reuses, max_seqs_in_step;
} stats;

/* Runs the scenario through one forward object with n_slots slots and a
 * pool of n_blocks blocks, comparing every returned row with the
 * sequence's alone run. */
static stats run_batch(env *e, tu_rng *r, seqspec *specs, int n, int n_slots, int n_blocks, int max_tokens)
{
    const v4_config *c = &e->m->cfg;
    const int64_t V = c->vocab_size;
    v4_err err;
    seqrun s[MAX_SEQS];
    assert_true(n <= MAX_SEQS);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        s[i] = (seqrun){.sp = specs[i], .slot = -1};
        s[i].ref = run_alone(e, specs[i].tokens, specs[i].T);
    }
    double t_alone = now_s() - t0;

    kv_geom g;
    if (kv_geom_init(&g, c, n_blocks, n_slots, 1024, &err))
        fail_msg("kv_geom_init: %s", err.msg);
    const int bt = g.block_tokens;
    v4_forward *f;
    if (fwd_create(e->m, &g, max_tokens, &f, &err))
        fail_msg("fwd_create: %s", err.msg);
    float *logits = malloc((size_t)max_tokens * V * sizeof(float));
    assert_non_null(logits);

    int free_slots[MAX_SEQS], n_free_slots = n_slots;
    int32_t free_blocks[256];
    int n_free_blocks = n_blocks;
    bool slot_used[MAX_SEQS] = {false};
    for (int i = 0; i < n_slots; i++)
        free_slots[i] = i;
    for (int i = 0; i < n_blocks; i++)
        free_blocks[i] = i;

    stats st = {0};
    int n_done = 0;
    t0 = now_s();
    for (int step = 0; n_done < n; step++) {
        assert_true(step < 100000);
        /* joins: a random free slot each */
        for (int i = 0; i < n; i++) {
            if (s[i].started || s[i].sp.join > step || !n_free_slots)
                continue;
            int k = rand_int(r, n_free_slots);
            s[i].slot = free_slots[k];
            free_slots[k] = free_slots[--n_free_slots];
            st.slot_reuses += slot_used[s[i].slot];
            slot_used[s[i].slot] = true;
            s[i].started = 1;
        }
        /* the step: running sequences in a random order */
        int order[MAX_SEQS], n_run = 0;
        for (int i = 0; i < n; i++)
            if (s[i].started && !s[i].done)
                order[n_run++] = i;
        for (int i = n_run - 1; i > 0; i--) {
            int k = rand_int(r, i + 1), t = order[i];
            order[i] = order[k];
            order[k] = t;
        }
        v4_seq_batch sb[MAX_SEQS];
        int who[MAX_SEQS], n_sb = 0, rows = 0, has_multi = 0, has_single = 0;
        for (int q = 0; q < n_run; q++) {
            seqrun *x = &s[order[q]];
            int len = 1;
            if (x->pos < x->sp.prompt) {
                len = x->sp.chunk > 0 ? x->sp.chunk : 1 + rand_int(r, -x->sp.chunk);
                if (len > x->sp.prompt - x->pos)
                    len = x->sp.prompt - x->pos;
            }
            if (len > max_tokens - rows)
                len = max_tokens - rows;
            if (len <= 0)
                continue;
            while (x->nb * bt < x->pos + len) { /* blocks on demand, random ids */
                assert_true(n_free_blocks > 0);
                int k = rand_int(r, n_free_blocks);
                x->blocks[x->nb++] = free_blocks[k];
                free_blocks[k] = free_blocks[--n_free_blocks];
            }
            sb[n_sb] = (v4_seq_batch){.slot = x->slot, .start_pos = x->pos, .n_tokens = len,
                                      .tokens = x->sp.tokens + x->pos, .block_table = x->blocks,
                                      .n_blocks = x->nb, .all_logits = rand_int(r, 2) == 0};
            who[n_sb++] = order[q];
            rows += len;
            has_multi |= len > 1;
            has_single |= len == 1;
        }
        if (!n_sb)
            continue;
        const int lrows = fwd_logit_rows(sb, n_sb);
        if (fwd_step(f, sb, n_sb, logits, &err))
            fail_msg("step %d: %s", step, err.msg);
        st.steps++;
        st.mixed_steps += has_multi && has_single;
        if (n_sb > st.max_seqs_in_step)
            st.max_seqs_in_step = n_sb;
        int row = 0;
        for (int q = 0; q < n_sb; q++) {
            seqrun *x = &s[who[q]];
            const int first = sb[q].all_logits ? 0 : sb[q].n_tokens - 1;
            for (int t = first; t < sb[q].n_tokens; t++, row++) {
                const int p = x->pos + t;
                const float *got = logits + (int64_t)row * V, *want = x->ref + (int64_t)p * V;
                if (memcmp(got, want, (size_t)V * sizeof(float)) != 0) {
                    double worst = 0;
                    for (int64_t v = 0; v < V; v++)
                        worst = fmax(worst, fabs((double)got[v] - want[v]));
                    fail_msg("%s at position %d (step %d, %d sequences, chunk of %d at %lld, slot %d): "
                             "max |diff| %.3e from its alone run",
                             x->sp.what, p, step, n_sb, sb[q].n_tokens, (long long)sb[q].start_pos, x->slot, worst);
                }
                st.rows_compared++;
            }
            x->pos += sb[q].n_tokens;
            if (x->pos == x->sp.T) { /* finished: its slot and dirty blocks go back */
                x->done = 1;
                n_done++;
                free_slots[n_free_slots++] = x->slot;
                for (int b = 0; b < x->nb; b++)
                    free_blocks[n_free_blocks++] = x->blocks[b];
            }
        }
        assert_int_equal(row, lrows);
    }
    fprintf(stderr, "# %d sequences, %d slots: %d steps (%d mixed prefill+decode, up to %d sequences), %d rows "
                    "bit-equal, %d slot reuses; alone %.1f s, batched %.1f s\n",
            n, n_slots, st.steps, st.mixed_steps, st.max_seqs_in_step, st.rows_compared, st.slot_reuses, t_alone,
            now_s() - t0);
    free(logits);
    fwd_destroy(f);
    for (int i = 0; i < n; i++)
        free(s[i].ref);
    return st;
}

static int32_t *random_tokens(tu_rng *r, int T, int64_t V)
{
    int32_t *t = malloc((size_t)T * sizeof *t);
    assert_non_null(t);
    for (int i = 0; i < T; i++)
        t[i] = (int32_t)(tu_next(r) % (uint64_t)V);
    return t;
}

static void test_batch_tiny(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    env e;
    env_open(&e, "tiny");
    const int64_t V = e.m->cfg.vocab_size;
    const int32_t *gt = e.g.tokens;
    const int P = (int)e.g.prompt_len, T = (int)e.g.n_tokens;
    int32_t *r600 = random_tokens(&r, 600, V), *r45 = random_tokens(&r, 45, V), *r20 = random_tokens(&r, 20, V),
            *r260 = random_tokens(&r, 260, V);
    seqspec sp[] = {
        {"golden tiny", gt, T, P, 37, 0},               /* prompt in chunks of 37, then 24 decodes */
        {"golden tiny [50,150)", gt + 50, 100, 1, 1, 1}, /* token by token from its first token */
        {"random 600", r600, 600, 600, -80, 0},         /* three blocks, random chunks */
        {"random 45", r45, 45, 45, 45, 3},               /* whole prompt in one step */
        {"random 20", r20, 20, 5, 5, 5},
        {"golden tiny again", gt, T, T, 13, 2},         /* same tokens as the first, another slot */
        {"random 260", r260, 260, 200, -64, 4},         /* crosses a block edge mid-chunk */
        {"golden tiny [7,40)", gt + 7, 33, 10, -9, 6},
    };
    const int n = (int)(sizeof sp / sizeof sp[0]);
    stats st = run_batch(&e, &r, sp, n, 4, 4 * 3 + 5, 96);
    assert_true(st.mixed_steps > 10);
    assert_true(st.slot_reuses >= 4); /* 8 sequences through 4 slots */
    assert_true(st.max_seqs_in_step >= 3);
    free(r600);
    free(r45);
    free(r20);
    free(r260);
    env_close(&e);
}

/* The real attention shapes: top-64 of up to 179 CSA entries, HCA 128,
 * window 128, three blocks for the golden prompt. */
static void test_batch_rates(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    env e;
    env_open(&e, "rates");
    const int64_t V = e.m->cfg.vocab_size;
    const int32_t *gt = e.g.tokens;
    const int P = (int)e.g.prompt_len, T = (int)e.g.n_tokens;
    int32_t *r150 = random_tokens(&r, 150, V), *r30 = random_tokens(&r, 30, V);
    /* under ASan the golden sequence is cut to 300 tokens: still more than
     * the window and more CSA entries (75) than the top-64, minutes cheaper */
    const int Tg = TU_SANITIZED ? 300 : T, Pg = TU_SANITIZED ? 280 : P;
    seqspec sp[] = {
        {"golden rates", gt, Tg, Pg, -128, 0},
        {"random 150", r150, 150, 100, 100, 1},
        {"random 30", r30, 30, 1, 1, 0},
        {"golden rates [200,500)", gt + 200, 300, 300, 61, 2},
    };
    stats st = run_batch(&e, &r, sp, 4, 3, 3 * 3 + 3, 160);
    assert_true(st.mixed_steps > 5);
    assert_true(st.slot_reuses >= 1);
    free(r150);
    free(r30);
    env_close(&e);
}

/* Many sequences decoding together, each one token per step, after their
 * prompts went in one shared step. */
static void test_batch_decode_only(void **state)
{
    tu_rng r = {tu_seed_from_time(__func__)};
    env e;
    env_open(&e, "tiny");
    const int64_t V = e.m->cfg.vocab_size;
    enum { N = 8 };
    int32_t *toks[N];
    seqspec sp[N];
    for (int i = 0; i < N; i++) {
        const int T = 40 + 9 * i;
        toks[i] = random_tokens(&r, T, V);
        sp[i] = (seqspec){"random decode", toks[i], T, 8 + i, 8 + i, 0};
    }
    stats st = run_batch(&e, &r, sp, N, N, 2 * N, 128);
    assert_int_equal(st.max_seqs_in_step, N);
    for (int i = 0; i < N; i++)
        free(toks[i]);
    env_close(&e);
}

/* ---- errors ------------------------------------------------------------------- */

static void expect_step_error(v4_forward *f, const v4_seq_batch *sb, int n, const char *a, const char *b)
{
    v4_err err = {{0}};
    float *logits = malloc((size_t)64 * 1024 * sizeof(float));
    assert_non_null(logits);
    int rc = fwd_step(f, sb, n, logits, &err);
    free(logits);
    if (rc != -1)
        fail_msg("fwd_step accepted a step that should fail with '%s'", a);
    fprintf(stderr, "# %s\n", err.msg);
    if (!strstr(err.msg, a) || (b && !strstr(err.msg, b)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.msg, a, b ? b : "");
}

static void test_step_errors(void **state)
{
    env e;
    env_open(&e, "tiny");
    v4_err err;
    kv_geom g;
    /* 2 slots, 4 blocks of 256 tokens, context 1024, steps of up to 16 */
    if (kv_geom_init(&g, &e.m->cfg, 4, 2, 1024, &err))
        fail_msg("kv_geom_init: %s", err.msg);
    assert_int_equal(g.block_tokens, 256);
    assert_int_equal(g.max_blocks_per_seq, 4);
    v4_forward *f;
    if (fwd_create(e.m, &g, 16, &f, &err))
        fail_msg("fwd_create: %s", err.msg);
    int32_t toks[20] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
    int32_t bad_tok[3] = {5, 1024, 7}, neg_tok[2] = {-1, 3};
    const int32_t b0[4] = {0, 1, 2, 3}, b1[1] = {2}, b_out[1] = {4};
    v4_seq_batch ok = {.slot = 0, .start_pos = 0, .n_tokens = 4, .tokens = toks, .block_table = b0, .n_blocks = 1};
    v4_seq_batch sb[3];

    sb[0] = ok, sb[0].tokens = bad_tok, sb[0].n_tokens = 3;
    expect_step_error(f, sb, 1, "token id 1024", "vocabulary of 1024");
    sb[1] = ok, sb[1].tokens = neg_tok, sb[1].n_tokens = 2, sb[1].slot = 1;
    sb[0] = ok;
    expect_step_error(f, sb, 2, "sequence 1: token id -1", "vocabulary");

    sb[0] = ok, sb[0].slot = 2;
    expect_step_error(f, sb, 1, "slot 2", "outside 0..1");
    sb[0] = ok, sb[0].slot = -1;
    expect_step_error(f, sb, 1, "slot -1", NULL);

    sb[0] = ok, sb[1] = ok, sb[1].block_table = b1;
    expect_step_error(f, sb, 2, "share slot 0", "sequences 0 and 1");

    sb[0] = ok, sb[0].start_pos = 250, sb[0].n_tokens = 10; /* positions up to 259: two blocks */
    expect_step_error(f, sb, 1, "1 blocks given, 2 needed", "260 tokens");
    sb[0] = ok, sb[0].n_blocks = 0;
    expect_step_error(f, sb, 1, "0 blocks given, 1 needed", NULL);
    sb[0] = ok, sb[0].block_table = b_out;
    expect_step_error(f, sb, 1, "block id 4", "pool of 4");

    sb[0] = ok, sb[0].n_tokens = 17;
    expect_step_error(f, sb, 1, "more than 16 tokens", NULL);
    sb[0] = ok, sb[0].n_tokens = 10, sb[1] = ok, sb[1].slot = 1, sb[1].n_tokens = 7, sb[1].block_table = b1;
    expect_step_error(f, sb, 2, "more than 16 tokens", NULL);

    sb[0] = ok, sb[0].start_pos = 1020, sb[0].n_tokens = 10, sb[0].n_blocks = 4;
    expect_step_error(f, sb, 1, "exceed the context of 1024", NULL);
    sb[0] = ok, sb[0].n_tokens = 0;
    expect_step_error(f, sb, 1, "needs >= 1 token", NULL);
    sb[0] = ok;
    expect_step_error(f, sb, 0, "1..2 sequences", "got 0");
    sb[1] = ok, sb[1].slot = 1, sb[2] = ok;
    expect_step_error(f, sb, 3, "1..2 sequences", "got 3");

    /* the refused steps changed nothing: a valid step still equals the
     * alone run */
    float *ref = run_alone(&e, toks, 20);
    float *logits = malloc((size_t)16 * 1024 * sizeof(float));
    assert_non_null(logits);
    sb[0] = ok, sb[0].n_tokens = 16, sb[0].all_logits = true;
    if (fwd_step(f, sb, 1, logits, &err))
        fail_msg("valid step: %s", err.msg);
    assert_memory_equal(logits, ref, (size_t)16 * 1024 * sizeof(float));
    sb[0].start_pos = 16, sb[0].n_tokens = 4, sb[0].tokens = toks + 16;
    if (fwd_step(f, sb, 1, logits, &err))
        fail_msg("valid step: %s", err.msg);
    assert_memory_equal(logits, ref + 16 * 1024, (size_t)4 * 1024 * sizeof(float));
    free(ref);
    free(logits);
    fwd_destroy(f);
    env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_tiny),
        cmocka_unit_test(test_batch_rates),
        cmocka_unit_test(test_batch_decode_only),
        cmocka_unit_test(test_step_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
