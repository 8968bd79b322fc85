/* Token sampler (src/engine/sampler*.c): parameter checks; greedy and its
 * limits (temperature -> 0, top_k = 1, tiny top_p); min-p; each penalty at
 * the exact float boundary where it flips the argmax; seeds; draw
 * frequencies against the expected distribution; the kept set against a
 * reference written with a full sort in double; raw-model logprobs (of
 * sampled tokens and of given ones, smp_score) against a direct log-softmax
 * in double; no allocation while sampling; and the speed
 * per sample on the real vocabulary (printed as TAP comments). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"
#include "testutil.h"

#define VOCAB 129280

/* ---- allocation counting ----
 * Every allocation made while `counting` is set is counted. In a plain build
 * the test program replaces malloc and friends with versions that count and
 * forward to glibc's allocator: a definition in the executable takes
 * precedence over libc's for every caller, the library included. Under
 * AddressSanitizer, which owns malloc, the sanitizer's own allocation hook
 * counts instead. Either way an allocation in smp_sample or smp_accept would
 * be seen, and test_no_alloc first checks that a deliberate one is. */
static volatile int counting;
static volatile long n_allocs;

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* Timings under the sanitizer mean little; the speed test then only runs. */
#ifdef UNDER_ASAN
#define BENCH_DIV 20
#else
#define BENCH_DIV 1
#endif

#ifdef UNDER_ASAN
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p, (void)n;
    if (counting)
        n_allocs++;
}

static void on_free(const volatile void *p)
{
    (void)p;
}

static void install_alloc_counter(void)
{
    static int done; /* both hooks are required, or none is installed */
    if (!done)
        done = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) > 0;
    assert_true(done);
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n)
{
    if (counting)
        n_allocs++;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (counting)
        n_allocs++;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (counting)
        n_allocs++;
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    if (counting)
        n_allocs++;
    return __libc_memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    if (counting)
        n_allocs++;
    void *p = __libc_memalign(al, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

static void install_alloc_counter(void)
{
}
#endif

/* ---- helpers ---- */

typedef struct fixture {
    smp_workspace ws;
    smp_state st;
    smp_params p;
    int64_t vocab;
} fixture;

static void fx_init(fixture *f, smp_params p, int64_t vocab, const int32_t *prompt, int64_t n_prompt)
{
    v4_err err = {{0}};
    f->p = p;
    f->vocab = vocab;
    if (smp_workspace_init(&f->ws, vocab, &err))
        fail_msg("workspace: %s", err.msg);
    if (smp_state_init(&f->st, &p, vocab, prompt, n_prompt, &err))
        fail_msg("state: %s", err.msg);
}

static void fx_free(fixture *f)
{
    smp_state_free(&f->st);
    smp_workspace_free(&f->ws);
}

static int32_t fx_sample(fixture *f, const float *logits, smp_result *res)
{
    smp_result local;
    v4_err err = {{0}};
    if (!res)
        res = &local;
    if (smp_sample(&f->p, &f->st, &f->ws, logits, f->vocab, res, &err))
        fail_msg("sample: %s", err.msg);
    assert_true(res->token >= 0 && res->token < f->vocab);
    return res->token;
}

static void fx_accept(fixture *f, int32_t tok)
{
    v4_err err = {{0}};
    if (smp_accept(&f->st, tok, &err))
        fail_msg("accept: %s", err.msg);
}

static int32_t argmax_ref(const float *x, int64_t n)
{
    int32_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && x[i] > -INFINITY && (best < 0 || x[i] > x[best]))
            best = (int32_t)i;
    return best;
}

/* Logits shaped like a language model's: a broad bulk and a few standouts. */
static void lm_logits(tu_rng *r, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 2.5f * tu_normal(r);
    for (int j = 0; j < 20; j++)
        x[tu_next(r) % (uint64_t)n] = 12.0f + 2.0f * tu_normal(r);
}

/* ---- reference: the kept set and distribution by a full sort in double ---- */

static const double *g_sort_x;
static int cmp_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (g_sort_x[i] != g_sort_x[j])
        return g_sort_x[i] > g_sort_x[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

/* prob[i] = probability of token i after temperature, top-k, top-p, min-p.
 * Returns 0, or 1 when a boundary is within `margin` of a decision (then the
 * float implementation may legitimately decide either way). */
static int ref_dist(const float *logits, int64_t n, const smp_params *p, double *prob, double margin)
{
    double *w = malloc((size_t)n * sizeof *w);
    int32_t *ord = malloc((size_t)n * sizeof *ord);
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = logits[i] > m ? logits[i] : m;
    for (int64_t i = 0; i < n; i++) {
        w[i] = exp(((double)logits[i] - m) / p->temperature);
        ord[i] = (int32_t)i;
        prob[i] = 0;
    }
    g_sort_x = w;
    qsort(ord, (size_t)n, sizeof *ord, cmp_desc);
    int64_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n, keep = k;
    double sk = 0;
    for (int64_t j = 0; j < k; j++)
        sk += w[ord[j]];
    int ambiguous = 0;
    if (p->top_p < 1.0f) {
        double target = p->top_p * sk, c = 0;
        for (int64_t j = 0; j < k; j++) {
            c += w[ord[j]];
            if (fabs(c - target) <= margin * sk)
                ambiguous = 1;
            if (c >= target) {
                keep = j + 1;
                break;
            }
        }
    }
    double total = 0;
    for (int64_t j = 0; j < keep; j++) {
        double wi = w[ord[j]];
        if (fabs(wi - p->min_p) <= margin)
            ambiguous = 1;
        if (wi >= p->min_p) {
            prob[ord[j]] = wi;
            total += wi;
        }
    }
    for (int64_t i = 0; i < n; i++)
        prob[i] /= total;
    free(w);
    free(ord);
    return ambiguous;
}

/* ---- parameters ---- */

/* The message must start with the field's name: the server reports its
 * first word as the offending parameter. */
static void expect_bad(smp_params p, const char *field)
{
    v4_err err = {{0}};
    assert_int_equal(smp_params_check(&p, VOCAB, &err), -1);
    if (strncmp(err.msg, field, strlen(field)) != 0 || err.msg[strlen(field)] != ' ')
        fail_msg("message \"%s\" does not start with %s", err.msg, field);
}

static void test_params_check(void **state)
{
    (void)state;
    v4_err err = {{0}};
    smp_params d = smp_params_default();
    assert_int_equal(smp_params_check(&d, VOCAB, &err), 0);
    assert_true(d.temperature == 1.0f && d.top_p == 1.0f && d.repetition_penalty == 1.0f && d.top_k == 0);
    smp_params p = d;
    p.temperature = 0;
    p.top_k = -1;
    p.top_p = 1;
    p.min_p = 1;
    p.repetition_penalty = 10;
    p.presence_penalty = -2;
    p.frequency_penalty = 2;
    p.n_logprobs = 20;
    assert_int_equal(smp_params_check(&p, VOCAB, &err), 0);

    p = d, p.temperature = 2.01f, expect_bad(p, "temperature");
    p = d, p.temperature = -0.1f, expect_bad(p, "temperature");
    p = d, p.temperature = NAN, expect_bad(p, "temperature");
    p = d, p.top_k = -2, expect_bad(p, "top_k");
    p = d, p.top_p = 0, expect_bad(p, "top_p");
    p = d, p.top_p = 1.5f, expect_bad(p, "top_p");
    p = d, p.min_p = -0.01f, expect_bad(p, "min_p");
    p = d, p.min_p = 1.01f, expect_bad(p, "min_p");
    p = d, p.repetition_penalty = 0, expect_bad(p, "repetition_penalty");
    p = d, p.repetition_penalty = 10.5f, expect_bad(p, "repetition_penalty");
    p = d, p.presence_penalty = 2.5f, expect_bad(p, "presence_penalty");
    p = d, p.frequency_penalty = -2.5f, expect_bad(p, "frequency_penalty");
    p = d, p.frequency_penalty = NAN, expect_bad(p, "frequency_penalty");
    p = d, p.n_logprobs = 21, expect_bad(p, "top_logprobs");
    p = d, p.n_logprobs = -1, expect_bad(p, "top_logprobs");

    /* State admission checks the params and the prompt ids. */
    smp_state st;
    p = d, p.top_p = 0;
    assert_int_equal(smp_state_init(&st, &p, VOCAB, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "top_p"));
    int32_t bad_prompt[] = {5, VOCAB};
    assert_int_equal(smp_state_init(&st, &d, VOCAB, bad_prompt, 2, &err), -1);
    assert_non_null(strstr(err.msg, "prompt token 1"));
    assert_int_equal(smp_state_init(&st, &d, VOCAB, bad_prompt, 1, &err), 0);
    assert_int_equal(smp_accept(&st, -1, &err), -1);
    assert_int_equal(smp_accept(&st, VOCAB, &err), -1);
    smp_state_free(&st);
}

static void test_errors(void **state)
{
    (void)state;
    fixture f;
    fx_init(&f, smp_params_default(), 1000, NULL, 0);
    float *x = malloc(1000 * sizeof *x);
    smp_result r;
    v4_err err = {{0}};
    for (int i = 0; i < 1000; i++)
        x[i] = -INFINITY;
    x[17] = NAN;
    assert_int_equal(smp_sample(&f.p, &f.st, &f.ws, x, 1000, &r, &err), -1);
    assert_non_null(strstr(err.msg, "no finite logit"));
    x[3] = INFINITY;
    assert_int_equal(smp_sample(&f.p, &f.st, &f.ws, x, 1000, &r, &err), -1);
    assert_non_null(strstr(err.msg, "+inf"));
    x[3] = 0;
    assert_int_equal(smp_sample(&f.p, &f.st, &f.ws, x, 999, &r, &err), -1);
    assert_non_null(strstr(err.msg, "999"));
    /* Masked (-inf) and NaN logits are never drawn: only token 3 is left. */
    for (int i = 0; i < 200; i++)
        assert_int_equal(fx_sample(&f, x, NULL), 3);
    /* A penalty the state was not made for. */
    smp_params p = f.p;
    p.presence_penalty = 0.5f;
    assert_int_equal(smp_sample(&p, &f.st, &f.ws, x, 1000, &r, &err), -1);
    assert_non_null(strstr(err.msg, "penalties"));
    free(x);
    fx_free(&f);
}

/* ---- greedy and its limits ---- */

static void test_greedy(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("greedy")};
    float *x = malloc(VOCAB * sizeof *x);
    smp_params p = smp_params_default();
    p.temperature = 0;
    /* Several vocab sizes: tails shorter than a vector and than a block. */
    const int64_t sizes[] = {1, 3, 7, 255, 257, 1003, VOCAB};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int64_t n = sizes[s];
        fixture f;
        fx_init(&f, p, n, NULL, 0);
        for (int trial = 0; trial < 20; trial++) {
            for (int64_t i = 0; i < n; i++)
                x[i] = tu_normal(&rng);
            if (trial == 1)
                x[n - 1] = 100; /* max in the tail */
            if (trial == 2)
                x[0] = 100;
            if (trial == 3 && n > 2)
                x[n / 2] = NAN, x[n - 1] = -INFINITY;
            assert_int_equal(fx_sample(&f, x, NULL), argmax_ref(x, n));
        }
        fx_free(&f);
    }
    /* Ties go to the lowest id, also across blocks. */
    fixture f;
    fx_init(&f, p, VOCAB, NULL, 0);
    for (int64_t i = 0; i < VOCAB; i++)
        x[i] = tu_normal(&rng);
    x[100000] = x[5000] = x[777] = 50;
    assert_int_equal(fx_sample(&f, x, NULL), 777);
    for (int64_t i = 0; i < VOCAB; i++)
        x[i] = 1.0f;
    assert_int_equal(fx_sample(&f, x, NULL), 0);
    fx_free(&f);
    free(x);
}

static void test_greedy_limits(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("greedy_limits")};
    float *x = malloc(VOCAB * sizeof *x);
    for (int trial = 0; trial < 5; trial++) {
        lm_logits(&rng, x, VOCAB);
        int32_t best = argmax_ref(x, VOCAB);
        /* keep a clear winner so that the limits are exact */
        x[best] += 0.5f;

        smp_params cases[4];
        for (int c = 0; c < 4; c++)
            cases[c] = smp_params_default();
        cases[0].temperature = 1e-3f;           /* temperature -> 0 */
        cases[1].top_k = 1;                     /* top_k = 1 */
        cases[2].top_p = 1e-6f;                 /* tiny top_p */
        cases[3].temperature = 0.5f * SMP_GREEDY_EPS; /* below eps: greedy */
        cases[1].temperature = cases[2].temperature = 1.3f;
        for (int c = 0; c < 4; c++) {
            fixture f;
            cases[c].seed = tu_next(&rng), cases[c].has_seed = true;
            fx_init(&f, cases[c], VOCAB, NULL, 0);
            for (int i = 0; i < 50; i++)
                assert_int_equal(fx_sample(&f, x, NULL), best);
            fx_free(&f);
        }
    }
    free(x);
}

/* ---- min-p ---- */

static void test_min_p(void **state)
{
    (void)state;
    const double pr[5] = {0.5, 0.3, 0.1, 0.06, 0.04};
    float x[5];
    for (int i = 0; i < 5; i++)
        x[i] = (float)log(pr[i]);
    smp_params p = smp_params_default();
    p.min_p = 0.15f; /* keep p >= 0.075: tokens 0, 1, 2 */
    p.seed = tu_seed_from_time("min_p"), p.has_seed = true;
    fixture f;
    fx_init(&f, p, 5, NULL, 0);
    long hist[5] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++)
        hist[fx_sample(&f, x, NULL)]++;
    assert_int_equal(hist[3], 0);
    assert_int_equal(hist[4], 0);
    for (int i = 0; i < 3; i++) {
        double want = pr[i] / 0.9, got = (double)hist[i] / N;
        if (fabs(got - want) > 0.01)
            fail_msg("min_p: token %d frequency %.4f, expected %.4f", i, got, want);
    }
    fx_free(&f);
    /* min_p = 1 keeps only the most probable token, whatever the rest. */
    p.min_p = 1;
    fx_init(&f, p, 5, NULL, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(fx_sample(&f, x, NULL), 0);
    fx_free(&f);
}

/* ---- penalties: the exact float boundary where the argmax flips ---- */

/* Greedy pick with token 0 penalised to `pen0` and token 1 at the float just
 * above / just below it: the pick flips exactly there iff the penalty is
 * computed as the formula says, in float. */
static void check_flip(smp_params p, const int32_t *prompt, int n_prompt, const int32_t *out, int n_out, float x0,
                       float pen0)
{
    p.temperature = 0;
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = -5.0f - (float)i;
    x[0] = x0;
    for (int side = 0; side < 2; side++) {
        fixture f;
        fx_init(&f, p, 64, prompt, n_prompt);
        for (int i = 0; i < n_out; i++)
            fx_accept(&f, out[i]);
        x[1] = side ? nextafterf(pen0, -INFINITY) : nextafterf(pen0, INFINITY);
        float copy[64];
        memcpy(copy, x, sizeof x);
        int32_t tok = fx_sample(&f, x, NULL);
        if (tok != (side ? 0 : 1))
            fail_msg("x0=%g penalised to %g, x1=%.9g: picked %d", (double)x0, (double)pen0, (double)x[1], tok);
        assert_memory_equal(copy, x, sizeof x); /* the caller's logits are untouched */
        fx_free(&f);
    }
}

static void test_penalties(void **state)
{
    (void)state;
    smp_params d = smp_params_default();
    int32_t prompt0[] = {0, 7, 0, 9};
    int32_t out0x3[] = {0, 0, 0};
    int32_t out_other[] = {5, 6, 5};

    /* repetition over the prompt: positive logits divide, negative multiply */
    smp_params p = d;
    p.repetition_penalty = 1.1f;
    check_flip(p, prompt0, 4, NULL, 0, 2.0f, 2.0f / 1.1f);
    check_flip(p, prompt0, 4, NULL, 0, -1.0f, -1.0f * 1.1f);
    /* repetition below 1 rewards instead */
    p.repetition_penalty = 0.8f;
    check_flip(p, prompt0, 4, NULL, 0, 2.0f, 2.0f / 0.8f);
    /* repetition over the output, once however often the token repeats */
    p.repetition_penalty = 1.3f;
    check_flip(p, NULL, 0, out0x3, 3, 3.0f, 3.0f / 1.3f);
    /* frequency: count times the penalty (output only; the prompt does not count) */
    p = d;
    p.frequency_penalty = 0.5f;
    check_flip(p, prompt0, 4, out0x3, 3, 3.0f, 3.0f - 0.5f * 3.0f);
    p.frequency_penalty = -0.7f;
    check_flip(p, NULL, 0, out0x3, 2, 3.0f, 3.0f - (-0.7f) * 2.0f);
    /* presence: once, whatever the count */
    p = d;
    p.presence_penalty = 1.5f;
    check_flip(p, NULL, 0, out0x3, 3, 3.0f, 3.0f - 1.5f);
    /* all three in vLLM's order: repetition, frequency, presence */
    p = d;
    p.repetition_penalty = 1.5f, p.frequency_penalty = 0.25f, p.presence_penalty = 0.5f;
    {
        float v = 3.0f / 1.5f;
        v -= 0.25f * 2.0f;
        v -= 0.5f;
        check_flip(p, prompt0, 4, out0x3, 2, 3.0f, v);
    }
    /* a penalty on other tokens leaves token 0 alone */
    p = d;
    p.frequency_penalty = 2.0f, p.presence_penalty = 2.0f;
    check_flip(p, NULL, 0, out_other, 3, 3.0f, 3.0f);
    p = d;
    p.repetition_penalty = 2.0f;
    check_flip(p, out_other, 3, out_other, 3, 3.0f, 3.0f);
}

/* ---- seeds ---- */

static void draw_seq(smp_params p, const float *x, int64_t n, int32_t *seq, int len, fixture *other,
                     const float *other_x)
{
    fixture f;
    fx_init(&f, p, n, NULL, 0);
    for (int i = 0; i < len; i++) {
        seq[i] = fx_sample(&f, x, NULL);
        if (other) /* another request sampling in between, on the same workspace */
            (void)smp_sample(&other->p, &other->st, &f.ws, other_x, n, &(smp_result){0}, NULL);
    }
    fx_free(&f);
}

static void test_seeds(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("seeds")};
    const int64_t n = 4096;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_normal(&rng), y[i] = tu_normal(&rng);
    smp_params p = smp_params_default();
    p.top_p = 0.9f, p.temperature = 0.8f;
    p.seed = tu_next(&rng), p.has_seed = true;
    enum { L = 1000 };
    static int32_t a[L], b[L], c[L], u1[L], u2[L];
    draw_seq(p, x, n, a, L, NULL, NULL);
    fixture other;
    smp_params po = smp_params_default();
    fx_init(&other, po, n, NULL, 0);
    draw_seq(p, x, n, b, L, &other, y);
    fx_free(&other);
    assert_memory_equal(a, b, sizeof a);
    p.seed ^= 1;
    draw_seq(p, x, n, c, L, NULL, NULL);
    int diff = 0;
    for (int i = 0; i < L; i++)
        diff += a[i] != c[i];
    if (diff < L / 2)
        fail_msg("seeds s and s^1 agree on %d of %d draws", L - diff, L);
    /* Without a seed every request gets its own. */
    p.has_seed = false;
    smp_state s1, s2;
    assert_int_equal(smp_state_init(&s1, &p, n, NULL, 0, NULL), 0);
    assert_int_equal(smp_state_init(&s2, &p, n, NULL, 0, NULL), 0);
    assert_true(s1.seed != s2.seed);
    smp_state_free(&s1);
    smp_state_free(&s2);
    draw_seq(p, x, n, u1, L, NULL, NULL);
    draw_seq(p, x, n, u2, L, NULL, NULL);
    diff = 0;
    for (int i = 0; i < L; i++)
        diff += u1[i] != u2[i];
    assert_true(diff >= L / 2);
    free(x);
    free(y);
}

/* ---- frequencies against the expected distribution ---- */

static void check_freq(const char *what, smp_params p, const float *x, int64_t n, int draws)
{
    double *want = malloc((size_t)n * sizeof *want);
    long *hist = calloc((size_t)n, sizeof *hist);
    assert_int_equal(ref_dist(x, n, &p, want, 1e-9), 0);
    p.seed = tu_seed_from_time(what), p.has_seed = true;
    fixture f;
    fx_init(&f, p, n, NULL, 0);
    for (int i = 0; i < draws; i++)
        hist[fx_sample(&f, x, NULL)]++;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)hist[i] / draws - want[i]);
        worst = d > worst ? d : worst;
        if (want[i] == 0 && hist[i])
            fail_msg("%s: token %lld drawn %ld times, outside the kept set", what, (long long)i, hist[i]);
    }
    printf("# %s: max |freq - p| = %.5f over %d draws\n", what, worst, draws);
    if (worst >= 0.01)
        fail_msg("%s: max |freq - p| = %.4f", what, worst);
    fx_free(&f);
    free(want);
    free(hist);
}

static void test_frequencies(void **state)
{
    (void)state;
    const double pr[6] = {0.35, 0.25, 0.15, 0.12, 0.08, 0.05};
    float x[6];
    for (int i = 0; i < 6; i++)
        x[i] = (float)log(pr[i]) + 3.0f;
    smp_params p = smp_params_default();
    const int N = 200000;
    p.temperature = 0.7f;
    check_freq("temperature 0.7", p, x, 6, N);
    p = smp_params_default();
    p.top_k = 3;
    check_freq("top_k 3", p, x, 6, N);
    p = smp_params_default();
    p.top_p = 0.7f; /* 0.35, 0.60 < 0.7, 0.75: three tokens */
    check_freq("top_p 0.7", p, x, 6, N);
    p = smp_params_default();
    p.temperature = 1.3f, p.top_k = 5, p.top_p = 0.8f, p.min_p = 0.3f;
    check_freq("T 1.3 top_k 5 top_p 0.8 min_p 0.3", p, x, 6, N);
}

/* Random vocabularies and parameters: every drawn token must be in the
 * reference's kept set, and the frequent ones must come up as often as
 * expected. Logits on a 1/8 grid, so there are exact ties (top-k must keep
 * the lowest ids of a tie) and no near-ties. */
static void test_kept_set_random(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("kept_set_random")};
    int checked = 0;
    for (int c = 0; c < 300; c++) {
        int64_t n = 2 + (int64_t)(tu_next(&rng) % 400);
        float *x = malloc((size_t)n * sizeof *x);
        double *want = malloc((size_t)n * sizeof *want);
        long *hist = calloc((size_t)n, sizeof *hist);
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)(tu_next(&rng) % 40) / 8.0f;
        smp_params p = smp_params_default();
        p.temperature = tu_uniform(&rng, 0.3f, 1.5f);
        if (tu_next(&rng) % 2)
            p.top_k = 1 + (int32_t)(tu_next(&rng) % (uint64_t)(n + 5));
        if (tu_next(&rng) % 2)
            p.top_p = tu_uniform(&rng, 0.05f, 0.99f);
        if (tu_next(&rng) % 3 == 0)
            p.min_p = tu_uniform(&rng, 0.0f, 0.5f);
        p.seed = tu_next(&rng), p.has_seed = true;
        if (ref_dist(x, n, &p, want, 1e-5)) {
            free(x), free(want), free(hist);
            continue;
        }
        checked++;
        fixture f;
        fx_init(&f, p, n, NULL, 0);
        const int D = 3000;
        for (int i = 0; i < D; i++)
            hist[fx_sample(&f, x, NULL)]++;
        for (int64_t i = 0; i < n; i++) {
            if (want[i] == 0 && hist[i])
                fail_msg("case %d (n %lld, T %g, top_k %d, top_p %g, min_p %g): token %lld (x %g) drawn, "
                         "not in the kept set",
                         c, (long long)n, (double)p.temperature, p.top_k, (double)p.top_p, (double)p.min_p,
                         (long long)i, (double)x[i]);
            if (fabs((double)hist[i] / D - want[i]) > 0.05)
                fail_msg("case %d: token %lld frequency %.4f, expected %.4f", c, (long long)i,
                         (double)hist[i] / D, want[i]);
        }
        fx_free(&f);
        free(x), free(want), free(hist);
    }
    printf("# kept set: %d random cases checked\n", checked);
    assert_true(checked > 200);
}

/* The exact kept set where the cut falls inside one crowded histogram bucket
 * (weights in [0.875, 1], 64 distinct values, so ties at the cut): with a
 * few hundred kept tokens of similar probability, 25k draws hit every kept
 * token (each is expected 70 times or more: missing one has probability
 * below 1e-28) and none other. */
static void test_kept_set_exact(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("kept_set_exact")};
    enum { N = 600 };
    float x[N];
    double want[N];
    for (int64_t i = 0; i < N; i++)
        x[i] = 5.0f - 0.002f * (float)((i * 37) % 64);
    struct {
        int top_k;
        float top_p, min_p;
    } cases[] = {{0, 0.5037f, 0}, {300, 1.0f, 0}, {390, 0.7013f, 0}, {0, 0.4519f, 0.93f}, {299, 1.0f, 0.9f}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        smp_params p = smp_params_default();
        p.top_k = cases[c].top_k, p.top_p = cases[c].top_p, p.min_p = cases[c].min_p;
        p.seed = tu_next(&rng), p.has_seed = true;
        if (ref_dist(x, N, &p, want, 1e-6))
            fail_msg("case %zu: the reference calls a boundary too close to decide", c);
        fixture f;
        fx_init(&f, p, N, NULL, 0);
        long hist[N] = {0};
        for (int i = 0; i < 25000; i++)
            hist[fx_sample(&f, x, NULL)]++;
        int kept = 0;
        for (int64_t i = 0; i < N; i++) {
            kept += want[i] > 0;
            if ((want[i] > 0) != (hist[i] > 0))
                fail_msg("case %zu: token %lld (x %.4f) %s the kept set but drawn %ld times", c, (long long)i,
                         (double)x[i], want[i] > 0 ? "in" : "not in", hist[i]);
        }
        printf("# exact kept set, case %zu: %d of %d tokens\n", c, kept, N);
        assert_true(kept >= 250 && kept <= 400);
        fx_free(&f);
    }
}

/* The same on the real vocabulary size, where the boundary buckets hold
 * thousands of tokens. */
static void test_kept_set_vocab(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("kept_set_vocab")};
    float *x = malloc(VOCAB * sizeof *x);
    double *want = malloc(VOCAB * sizeof *want);
    struct {
        float t, top_p, min_p;
        int top_k;
        int flat;
    } cases[] = {
        {1.0f, 0.9f, 0, 0, 1},     {0.8f, 0.95f, 0, 0, 0},   {1.0f, 1.0f, 0, 1000, 1},
        {0.7f, 0.5f, 0, 5000, 1},  {1.0f, 0.9f, 0.05f, 0, 0}, {1.5f, 1.0f, 0.2f, 0, 1},
        {0.6f, 0.8f, 0, 40, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        if (cases[c].flat)
            for (int64_t i = 0; i < VOCAB; i++)
                x[i] = tu_normal(&rng);
        else
            lm_logits(&rng, x, VOCAB);
        smp_params p = smp_params_default();
        p.temperature = cases[c].t, p.top_p = cases[c].top_p, p.min_p = cases[c].min_p, p.top_k = cases[c].top_k;
        p.seed = tu_next(&rng), p.has_seed = true;
        if (ref_dist(x, VOCAB, &p, want, 1e-6))
            continue;
        fixture f;
        fx_init(&f, p, VOCAB, NULL, 0);
        for (int i = 0; i < 300; i++) {
            int32_t t = fx_sample(&f, x, NULL);
            if (want[t] == 0)
                fail_msg("case %zu: token %d (x %g) drawn, not in the kept set", c, t, (double)x[t]);
        }
        fx_free(&f);
    }
    free(x);
    free(want);
}

/* ---- logprobs ---- */

static void test_logprobs(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("logprobs")};
    float *x = malloc(VOCAB * sizeof *x);
    lm_logits(&rng, x, VOCAB);
    for (int j = 0; j < 100; j++)
        x[tu_next(&rng) % VOCAB] = -INFINITY;
    x[12345] = x[54321] = x[argmax_ref(x, VOCAB)]; /* a tie at the top */
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < VOCAB; i++)
        m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < VOCAB; i++)
        s += exp((double)x[i] - m);
    double lse = m + log(s);
    int32_t *ord = malloc(VOCAB * sizeof *ord);
    double *xd = malloc(VOCAB * sizeof *xd);
    for (int64_t i = 0; i < VOCAB; i++)
        ord[i] = (int32_t)i, xd[i] = x[i];
    g_sort_x = xd;
    qsort(ord, VOCAB, sizeof *ord, cmp_desc);

    /* Raw logprobs whatever the sampling parameters. */
    smp_params cases[4];
    for (int c = 0; c < 4; c++)
        cases[c] = smp_params_default(), cases[c].n_logprobs = 20, cases[c].logprobs = true;
    cases[1].temperature = 0;
    cases[2].temperature = 0.5f, cases[2].top_p = 0.9f;
    cases[3].repetition_penalty = 1.3f, cases[3].frequency_penalty = 1.0f;
    int32_t prompt[] = {ord[0], ord[1], 99};
    for (int c = 0; c < 4; c++) {
        fixture f;
        fx_init(&f, cases[c], VOCAB, prompt, 3);
        fx_accept(&f, ord[2]);
        smp_result r;
        for (int k = 0; k < 20; k++) {
            int32_t t = fx_sample(&f, x, &r);
            assert_int_equal(r.n_top, 20);
            for (int j = 0; j < 20; j++) {
                assert_int_equal(r.top[j].id, ord[j]);
                if (fabs(r.top[j].logprob - ((double)x[ord[j]] - lse)) > 4e-6)
                    fail_msg("case %d: top[%d] logprob %.7f, expected %.7f", c, j, (double)r.top[j].logprob,
                             (double)x[ord[j]] - lse);
            }
            if (fabs(r.logprob - ((double)x[t] - lse)) > 4e-6)
                fail_msg("case %d: sampled logprob %.7f, expected %.7f", c, (double)r.logprob, (double)x[t] - lse);
        }
        fx_free(&f);
    }
    /* smp_score: a given token's logprob, the same alternatives, no draw */
    smp_workspace ws;
    v4_err err = {{0}};
    if (smp_workspace_init(&ws, VOCAB, &err))
        fail_msg("workspace: %s", err.msg);
    const int32_t scored[4] = {ord[0], ord[7], ord[VOCAB / 2], ord[VOCAB - 1]}; /* the last is -inf */
    for (int k = 0; k < 4; k++) {
        smp_result r;
        assert_int_equal(smp_score(&ws, x, VOCAB, scored[k], 5, &r, &err), 0);
        assert_int_equal(r.token, scored[k]);
        assert_true(isinf(x[scored[k]]) ? r.logprob == -INFINITY
                                        : fabs(r.logprob - ((double)x[scored[k]] - lse)) <= 4e-6);
        assert_int_equal(r.n_top, 5);
        for (int j = 0; j < 5; j++) {
            assert_int_equal(r.top[j].id, ord[j]);
            assert_true(fabs(r.top[j].logprob - ((double)x[ord[j]] - lse)) <= 4e-6);
        }
    }
    smp_result sr;
    assert_int_equal(smp_score(&ws, x, VOCAB, VOCAB, 0, &sr, &err), 0); /* past the vocabulary: never sampled */
    assert_true(sr.logprob == -INFINITY && sr.n_top == 0);
    assert_int_equal(smp_score(&ws, x, VOCAB, -1, 0, &sr, &err), -1);
    assert_int_equal(smp_score(&ws, x, VOCAB, 0, SMP_MAX_LOGPROBS + 1, &sr, &err), -1);
    assert_int_equal(smp_score(&ws, x, 5, 0, 0, &sr, &err), -1); /* not the workspace's vocabulary */
    assert_non_null(strstr(err.msg, "entries"));
    smp_workspace_free(&ws);
    /* logprobs without alternatives, and none at all */
    smp_params p = smp_params_default();
    p.logprobs = true;
    fixture f;
    fx_init(&f, p, VOCAB, NULL, 0);
    smp_result r;
    int32_t t = fx_sample(&f, x, &r);
    assert_int_equal(r.n_top, 0);
    assert_true(fabs(r.logprob - ((double)x[t] - lse)) <= 4e-6);
    f.p.logprobs = false;
    fx_sample(&f, x, &r);
    assert_true(isnan(r.logprob));
    assert_int_equal(r.n_top, 0);
    fx_free(&f);
    /* fewer finite logits than asked for */
    float small[5] = {1, -INFINITY, 2, NAN, -INFINITY};
    p.n_logprobs = 4;
    fx_init(&f, p, 5, NULL, 0);
    fx_sample(&f, small, &r);
    assert_int_equal(r.n_top, 2);
    assert_int_equal(r.top[0].id, 2);
    assert_int_equal(r.top[1].id, 0);
    assert_true(fabs(r.top[0].logprob - (2.0 - log(exp(1.0) + exp(2.0)))) < 1e-6);
    fx_free(&f);
    free(ord);
    free(xd);
    free(x);
}

/* ---- no allocation while sampling ---- */

static void test_no_alloc(void **state)
{
    (void)state;
    install_alloc_counter();
    /* The hook itself works: a deliberate allocation in the window counts. */
    void *(*volatile alloc)(size_t) = malloc;
    void (*volatile release)(void *) = free;
    n_allocs = 0;
    counting = 1;
    void *probe = alloc(16);
    counting = 0;
    release(probe);
    assert_int_equal(n_allocs, 1);

    tu_rng rng = {tu_seed_from_time("no_alloc")};
    const int64_t sizes[2] = {4096, VOCAB};
    for (int s = 0; s < 2; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * sizeof *x);
        lm_logits(&rng, x, n);
        smp_params ps[6];
        for (int c = 0; c < 6; c++)
            ps[c] = smp_params_default(), ps[c].seed = (uint64_t)c, ps[c].has_seed = true;
        ps[0].temperature = 0;
        ps[1].top_p = 0.9f, ps[1].temperature = 0.8f;
        ps[2].top_k = 50, ps[2].n_logprobs = 20;
        ps[3].min_p = 0.1f, ps[3].logprobs = true;
        ps[4].repetition_penalty = 1.2f, ps[4].frequency_penalty = 0.5f, ps[4].presence_penalty = 0.3f;
        ps[4].top_p = 0.95f, ps[4].top_k = 1000;
        ps[5].top_p = 0.5f, ps[5].temperature = 1.0f;
        int32_t prompt[64];
        for (int i = 0; i < 64; i++)
            prompt[i] = (int32_t)(tu_next(&rng) % (uint64_t)n);
        smp_workspace ws;
        smp_state st[6];
        assert_int_equal(smp_workspace_init(&ws, n, NULL), 0);
        for (int c = 0; c < 6; c++)
            assert_int_equal(smp_state_init(&st[c], &ps[c], n, prompt, 64, NULL), 0);
        int rounds = s == 0 ? 10000 : 600, failures = 0;
        smp_result r;
        n_allocs = 0;
        counting = 1;
        for (int i = 0; i < rounds; i++) {
            int c = i % 6;
            failures += smp_sample(&ps[c], &st[c], &ws, x, n, &r, NULL) != 0;
            failures += smp_accept(&st[c], r.token, NULL) != 0;
        }
        counting = 0;
        assert_int_equal(failures, 0);
        if (n_allocs)
            fail_msg("%ld allocations during %d samples (vocab %lld)", n_allocs, rounds, (long long)n);
        for (int c = 0; c < 6; c++)
            smp_state_free(&st[c]);
        smp_workspace_free(&ws);
        free(x);
    }
}

/* ---- speed ---- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void bench(const char *what, smp_params p, const float *x, int iters)
{
    fixture f;
    int32_t prompt[512];
    for (int i = 0; i < 512; i++)
        prompt[i] = (i * 7919) % VOCAB;
    fx_init(&f, p, VOCAB, prompt, 512);
    for (int i = 0; i < 256; i++)
        fx_accept(&f, (i * 104729) % VOCAB);
    smp_result r;
    for (int i = 0; i < 20; i++)
        fx_sample(&f, x, &r);
    iters /= BENCH_DIV;
    double t0 = now_ns();
    for (int i = 0; i < iters; i++)
        fx_sample(&f, x, &r);
    double ns = (now_ns() - t0) / iters;
    printf("# bench vocab %d, %-44s %9.0f ns/sample\n", VOCAB, what, ns);
    fx_free(&f);
}

static void test_speed(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("speed")};
    float *lm = malloc(VOCAB * sizeof *lm), *flat = malloc(VOCAB * sizeof *flat);
    lm_logits(&rng, lm, VOCAB);
    for (int64_t i = 0; i < VOCAB; i++)
        flat[i] = tu_normal(&rng);
    smp_params p = smp_params_default();
    p.temperature = 0;
    bench("greedy", p, lm, 2000);
    p.n_logprobs = 20;
    bench("greedy + 20 logprobs", p, lm, 1000);
    p = smp_params_default();
    bench("temperature 1", p, lm, 1000);
    p.temperature = 0.7f, p.top_p = 0.95f;
    bench("temperature 0.7 + top_p 0.95 (LM-like)", p, lm, 1000);
    p.temperature = 1.0f, p.top_p = 0.9f;
    bench("temperature 1 + top_p 0.9 (flat N(0,1))", p, flat, 300);
    p = smp_params_default();
    p.top_k = 50, p.temperature = 0.8f;
    bench("temperature 0.8 + top_k 50", p, lm, 1000);
    p = smp_params_default();
    p.min_p = 0.05f;
    bench("min_p 0.05", p, lm, 1000);
    p = smp_params_default();
    p.temperature = 0.7f, p.top_p = 0.95f, p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f;
    bench("penalties + temperature 0.7 + top_p 0.95", p, lm, 1000);
    free(lm);
    free(flat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_greedy_limits),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_frequencies),
        cmocka_unit_test(test_kept_set_random),
        cmocka_unit_test(test_kept_set_exact),
        cmocka_unit_test(test_kept_set_vocab),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_no_alloc),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
