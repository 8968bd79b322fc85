/* sample_row_ref, the CPU reference of the `sample` op (backend.h), and the
 * CPU backend's sample op: greedy (lowest id on ties), the exact mapping of
 * the counter-based draw u = rng_uniform(seed, step) onto the kept tokens,
 * top-k, top-p (relative to the top-k set's mass), their combination,
 * temperature, determinism, and sampling frequencies against the softmax
 * (20000 draws: a binomial standard deviation of at most 0.0036, so 0.02 is
 * over five of them). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"
#include "util/rng.h"

static float scratch[2 * 129280];

static int32_t draw(const float *l, int64_t V, float T, int top_k, float top_p, uint64_t seed, uint64_t step)
{
    v4_sample_params p = {.temperature = T, .top_k = top_k, .top_p = top_p, .seed = seed, .step = step};
    return sample_row_ref(l, V, &p, scratch);
}

static void test_greedy_lowest_id_on_ties(void **state)
{
    const float l[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 3.0f};
    assert_int_equal(draw(l, 6, 0.0f, 0, 1.0f, 1, 2), 1);
    assert_int_equal(draw(l, 6, -1.0f, 0, 1.0f, 1, 2), 1); /* T <= 0 is greedy */
    for (uint64_t s = 0; s < 50; s++) /* top_k 1 keeps only the first of the order */
        assert_int_equal(draw(l, 6, 1.0f, 1, 1.0f, 7, s), 1);
    const float z[3] = {-0.0f, 0.0f, -5.0f}; /* -0 and +0 are equal: the lower id */
    assert_int_equal(draw(z, 3, 0.0f, 0, 1.0f, 1, 2), 0);
}

/* Two equal masses: token 0 exactly when u * 2 < 1 (cumulative 1 > 2u). */
static void test_draw_mapping(void **state)
{
    const float l[2] = {1.25f, 1.25f};
    for (uint64_t s = 0; s < 2000; s++) {
        const float u = rng_uniform(42, s);
        assert_int_equal(draw(l, 2, 0.9f, 0, 1.0f, 42, s), (double)u * 2.0 < 1.0 ? 0 : 1);
    }
    /* masses 1, 1/2, 1/4 (logits in steps of ln 2, T = 1): boundaries at 4/7 and 6/7 of u */
    const float m[3] = {0.0f, (float)-log(2.0), (float)-log(4.0)};
    for (uint64_t s = 0; s < 2000; s++) {
        const double u = rng_uniform(9, s), e1 = exp((double)m[1]), e2 = exp((double)m[2]);
        const double kept = 1.0 + e1 + e2, t = u * kept;
        const int want = 1.0 > t ? 0 : 1.0 + e1 > t ? 1 : 2;
        assert_int_equal(draw(m, 3, 1.0f, 0, 1.0f, 9, s), want);
    }
}

static void test_deterministic(void **state)
{
    tu_rng r = {tu_seed_from_time("sample_ref_deterministic")};
    const int64_t V = 129280;
    float *l = malloc(V * sizeof(float));
    for (int64_t i = 0; i < V; i++)
        l[i] = tu_normal(&r) * 3.0f;
    for (uint64_t s = 0; s < 5; s++) {
        const int32_t a = draw(l, V, 0.8f, 50, 0.9f, 123, s), b = draw(l, V, 0.8f, 50, 0.9f, 123, s);
        assert_int_equal(a, b);
        assert_true(a >= 0 && a < V);
    }
    free(l);
}

static void freqs(const float *l, int V, float T, int top_k, float top_p, double *f)
{
    const int N = 20000;
    memset(f, 0, (size_t)V * sizeof *f);
    for (int s = 0; s < N; s++)
        f[draw(l, V, T, top_k, top_p, 5, (uint64_t)s)] += 1.0 / N;
}

static void test_frequencies(void **state)
{
    /* probabilities 0.5, 0.25, 0.125, 0.125 at T = 1; listed out of order */
    const float l[4] = {(float)log(0.125), (float)log(0.5), (float)log(0.125), (float)log(0.25)};
    double f[4];
    freqs(l, 4, 1.0f, 0, 1.0f, f);
    assert_true(fabs(f[1] - 0.5) < 0.02 && fabs(f[3] - 0.25) < 0.02);
    assert_true(fabs(f[0] - 0.125) < 0.02 && fabs(f[2] - 0.125) < 0.02);
    /* T = 0.5 squares the probabilities: 16/22, 4/22, 1/22, 1/22 */
    freqs(l, 4, 0.5f, 0, 1.0f, f);
    assert_true(fabs(f[1] - 16.0 / 22) < 0.02 && fabs(f[3] - 4.0 / 22) < 0.02);
    /* top_p 0.7: 0.5 < 0.7 <= 0.75, so the kept prefix is {1, 3} in ratio 2:1 */
    freqs(l, 4, 1.0f, 0, 0.7f, f);
    assert_true(fabs(f[1] - 2.0 / 3) < 0.02 && fabs(f[3] - 1.0 / 3) < 0.02);
    assert_true(f[0] == 0 && f[2] == 0);
    /* top_p below the first token's probability keeps only it */
    freqs(l, 4, 1.0f, 0, 0.45f, f);
    assert_true(fabs(f[1] - 1.0) < 1e-9);
    /* top_k 3 keeps {1, 3, 0} (ties: 0 before 2); top_p 0.8 of that set's mass
     * 0.875 is 0.7: 0.5, then 0.75 >= 0.7 keeps {1, 3} */
    freqs(l, 4, 1.0f, 3, 0.8f, f);
    assert_true(fabs(f[1] - 2.0 / 3) < 0.02 && f[0] == 0 && f[2] == 0);
    /* top_k 3 alone: 0 in, 2 out */
    freqs(l, 4, 1.0f, 3, 1.0f, f);
    assert_true(f[2] == 0 && fabs(f[0] - 0.125 / 0.875) < 0.02);
    /* top_p 0 keeps the first token */
    freqs(l, 4, 2.0f, 0, 0.0f, f);
    assert_true(fabs(f[1] - 1.0) < 1e-9);
}

/* The CPU backend's op equals the reference row by row. */
static void test_cpu_op(void **state)
{
    tu_rng r = {tu_seed_from_time("sample_cpu_op")};
    const int n = 6, V = 5000;
    float *l = malloc((size_t)n * V * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n * V; i++)
        l[i] = tu_normal(&r) * 2.0f;
    v4_sample_params p[6] = {{.temperature = 0}, {.temperature = 1, .top_p = 1}, {.temperature = 0.7f, .top_p = 0.9f},
                             {.temperature = 1, .top_k = 10, .top_p = 1}, {.temperature = 1.5f, .top_k = 100, .top_p = 0.5f},
                             {.temperature = 0.2f, .top_p = 1}};
    for (int i = 0; i < n; i++)
        p[i].seed = tu_next(&r), p[i].step = (uint64_t)i;
    v4_backend *be;
    v4_err err;
    assert_int_equal(backend_cpu_create(2, DT_F8_E4M3, &be, &err), 0);
    int32_t ids[6];
    be->ops->sample(be, ids, l, n, V, p);
    assert_int_equal(be->ops->sync(be, &err), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], sample_row_ref(l + (int64_t)i * V, V, &p[i], scratch));
    backend_cpu_destroy(be);
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_lowest_id_on_ties), cmocka_unit_test(test_draw_mapping),
        cmocka_unit_test(test_deterministic),           cmocka_unit_test(test_frequencies),
        cmocka_unit_test(test_cpu_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
