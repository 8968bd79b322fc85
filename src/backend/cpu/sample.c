/* The `sample` op (backend.h) on the CPU, and its reference for one row,
 * sample_row_ref, which GPU tests compare their sampling with.
 *
 * The definition, exactly: with temperature T <= 0 the token is the argmax
 * (lowest id on ties). Otherwise tokens are ordered by logit descending,
 * ties to the lower id, and token i has mass exp((logit_i - max) / T) in
 * double. The top-k set is the first K = top_k tokens of that order (all
 * when top_k is 0 or >= vocab); the kept prefix is the shortest prefix of
 * it whose cumulative mass reaches top_p times the set's mass (the whole
 * set when top_p >= 1, or when rounding leaves it short); with
 * u = rng_uniform(seed, step) the token is the first of the kept prefix
 * whose cumulative mass exceeds u times the kept mass (its last token when
 * rounding leaves it short). Masses are unnormalised: normalising by the
 * softmax sum would not change any comparison. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu.h"
#include "util/rng.h"

typedef struct smp_item {
    float logit;
    int32_t id;
} smp_item;

/* Logit descending, then id ascending (-0 and +0 compare equal). */
static int by_order(const void *a, const void *b)
{
    const smp_item *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static double mass(float logit, float mx, double T) { return exp(((double)logit - (double)mx) / T); }

int32_t sample_row_ref(const float *logits, int64_t vocab, const v4_sample_params *p, float *scratch)
{
    if (!(p->temperature > 0.0f)) {
        int64_t best = 0;
        for (int64_t i = 1; i < vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        return (int32_t)best;
    }
    smp_item *it = (smp_item *)scratch; /* 2*vocab floats hold vocab items */
    for (int64_t i = 0; i < vocab; i++)
        it[i] = (smp_item){logits[i], (int32_t)i};
    qsort(it, (size_t)vocab, sizeof *it, by_order);
    const double T = p->temperature;
    const float mx = it[0].logit;
    const int64_t K = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab;
    double set_mass = 0;
    for (int64_t j = 0; j < K; j++)
        set_mass += mass(it[j].logit, mx, T);
    int64_t L = K;
    double kept = set_mass;
    if (p->top_p < 1.0f) {
        const double target = (double)p->top_p * set_mass;
        double cum = 0;
        for (int64_t j = 0; j < K; j++) {
            cum += mass(it[j].logit, mx, T);
            if (cum >= target) {
                L = j + 1;
                break;
            }
        }
        kept = 0;
        for (int64_t j = 0; j < L; j++)
            kept += mass(it[j].logit, mx, T);
    }
    const double target = (double)rng_uniform(p->seed, p->step) * kept;
    double cum = 0;
    for (int64_t j = 0; j < L; j++) {
        cum += mass(it[j].logit, mx, T);
        if (cum > target)
            return it[j].id;
    }
    return it[L - 1].id;
}

typedef struct sample_ctx {
    int32_t *ids;
    const float *logits;
    int64_t vocab;
    const v4_sample_params *p;
    tp_pool *tp;
    v4_backend *be;
} sample_ctx;

static void sample_rows(void *vc, int64_t b, int64_t e, int worker)
{
    sample_ctx *c = vc;
    float *scratch = tp_scratch(c->tp, worker, (size_t)(2 * c->vocab) * sizeof(float));
    if (!scratch) {
        cpu_fail(c->be, "out of memory for sampling scratch");
        return;
    }
    for (int64_t r = b; r < e; r++)
        c->ids[r] = sample_row_ref(c->logits + r * c->vocab, c->vocab, &c->p[r], scratch);
}

void cpu_sample(v4_backend *be, int32_t *ids, const float *logits, int n, int64_t vocab, const v4_sample_params *p)
{
    sample_ctx c = {ids, logits, vocab, p, cpu_tp(be), be};
    tp_run(cpu_tp(be), n, 1, sample_rows, &c);
}
