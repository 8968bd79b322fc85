/* The several-GPU weight plan (model/partition.h): every routed expert and
 * every head row on exactly one rank in contiguous, balanced blocks, the
 * expert -> rank map agreeing with the blocks, bad worlds refused with a
 * message, and per-rank bytes that add up to the checkpoint's. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "formats/safetensors.h"
#include "model/partition.h"
#include "testutil.h"

static void check_world(int64_t experts, int64_t vocab, int world)
{
    v4_config c;
    memset(&c, 0, sizeof c);
    c.n_experts = experts;
    c.vocab_size = vocab;
    v4_err err;
    int64_t next_e = 0, next_v = 0, emin = INT64_MAX, emax = 0;
    for (int r = 0; r < world; r++) {
        v4_partition p;
        if (partition_plan(&c, world, r, &p, &err))
            fail_msg("%d GPUs, rank %d: %s", world, r, err.msg);
        assert_int_equal(p.world, world);
        assert_int_equal(p.rank, r);
        /* contiguous, in rank order, no gap or overlap */
        assert_int_equal(p.expert_begin, next_e);
        assert_int_equal(p.vocab_begin, next_v);
        next_e = p.expert_end, next_v = p.vocab_end;
        const int64_t n = p.expert_end - p.expert_begin;
        emin = n < emin ? n : emin, emax = n > emax ? n : emax;
        for (int64_t e = p.expert_begin; e < p.expert_end; e++)
            if (partition_expert_rank(&c, world, e) != r)
                fail_msg("%d GPUs: expert %lld is in rank %d's block, the map says %d", world, (long long)e, r,
                         partition_expert_rank(&c, world, e));
    }
    assert_int_equal(next_e, experts);
    assert_int_equal(next_v, vocab);
    assert_true(emax - emin <= 1); /* balanced */
}

static void test_blocks(void **state)
{
    for (int world = 1; world <= V4_MAX_GPUS; world++) {
        check_world(256, 129280, world); /* the real model */
        check_world(16, 1024, world);     /* tiny */
        check_world(world + 3, world, world);
    }
    /* 256 experts over 6 GPUs: 43, 43, 43, 43, 42, 42 */
    v4_config c;
    memset(&c, 0, sizeof c);
    c.n_experts = 256, c.vocab_size = 129280;
    v4_partition p;
    v4_err err;
    assert_int_equal(partition_plan(&c, 6, 3, &p, &err), 0);
    assert_int_equal(p.expert_begin, 129);
    assert_int_equal(p.expert_end, 172);
    assert_int_equal(partition_plan(&c, 6, 5, &p, &err), 0);
    assert_int_equal(p.expert_begin, 214);
    assert_int_equal(p.expert_end, 256);
    assert_int_equal(partition_expert_rank(&c, 6, 171), 3);
    assert_int_equal(partition_expert_rank(&c, 6, 172), 4);
}

static void expect_refused(int64_t experts, int world, int rank, const char *want)
{
    v4_config c;
    memset(&c, 0, sizeof c);
    c.n_experts = experts, c.vocab_size = 1024;
    v4_partition p;
    v4_err err;
    assert_int_equal(partition_plan(&c, world, rank, &p, &err), -1);
    if (!strstr(err.msg, want))
        fail_msg("'%s' does not mention '%s'", err.msg, want);
}

static void test_refused(void **state)
{
    expect_refused(256, 0, 0, "0 GPUs");
    expect_refused(256, V4_MAX_GPUS + 1, 0, "1 to 8");
    expect_refused(256, 2, 2, "rank 2");
    expect_refused(256, 2, -1, "rank -1");
    expect_refused(4, 8, 0, "4 routed experts");
}

static int sum_bytes(v4_mat *m, void *ctx, v4_err *err)
{
    *(size_t *)ctx += mat_bytes(m);
    return 0;
}

/* On the tiny golden checkpoint: one GPU holds everything; over N GPUs the
 * ranks together hold the experts and head once and the rest N times. */
static void test_bytes_add_up(void **state)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_golden("tiny"));
    v4_err err;
    v4_config c;
    st_archive *a;
    v4_weights w;
    if (cfg_load(dir, &c, &err) || st_open(dir, &a, &err))
        fail_msg("%s", err.msg);
    if (weights_bind(&c, a, &w, &err))
        fail_msg("weights_bind: %s", err.msg);
    size_t all = 0, split = mat_bytes(&w.head);
    weights_visit(&w, sum_bytes, &all, &err);
    for (int L = 0; L < w.n_layers; L++)
        for (int64_t e = 0; e < c.n_experts; e++)
            split += mat_bytes(&w.layers[L].exp_w1[e]) + mat_bytes(&w.layers[L].exp_w2[e]) +
                     mat_bytes(&w.layers[L].exp_w3[e]);
    assert_true(split > 0 && split < all);
    for (int world = 1; world <= 4; world++) {
        size_t sum = 0;
        for (int r = 0; r < world; r++) {
            v4_partition p;
            assert_int_equal(partition_plan(&c, world, r, &p, &err), 0);
            sum += partition_weight_bytes(&w, &p);
        }
        /* the head's share rounds to the byte on each rank */
        const size_t want = (size_t)world * (all - split) + split;
        if (sum + (size_t)world < want || sum > want + (size_t)world)
            fail_msg("%d GPUs: ranks hold %zu bytes, want %zu", world, sum, want);
        if (world == 1)
            assert_true(sum == all);
    }
    weights_free(&w);
    st_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bytes_add_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
