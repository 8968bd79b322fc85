/* Internals shared by the sampler's files (sampler*.c): the per-request
 * generator, the vectorised passes over the vocabulary, and the steps of
 * smp_sample that live in their own files. Not for use outside src/engine. */
#ifndef V4_ENGINE_SAMPLER_INTERNAL_H
#define V4_ENGINE_SAMPLER_INTERNAL_H

#include <stdint.h>

#include "engine/sampler.h"

/* Tokens per block of the two-level passes (block maxima for argmax, block
 * sums for the inverse-CDF draw). */
#define SMP_BLOCK 256

static inline uint64_t smp_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman & Vigna). */
static inline uint64_t smp_rng_next(uint64_t s[4])
{
    uint64_t r = smp_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = smp_rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double smp_rng_u01(uint64_t s[4])
{
    return (double)(smp_rng_next(s) >> 11) * 0x1.0p-53;
}

/* Largest value of x[0..n) ignoring NaN (-inf when there is none); the
 * maximum of each SMP_BLOCK block goes to blk[n / SMP_BLOCK + 1]. */
float smp_k_max(const float *x, int64_t n, float *blk);
/* Lowest index i with x[i] == m, m the result of smp_k_max with this blk. */
int64_t smp_k_argmax(const float *x, int64_t n, const float *blk, float m);
/* A selection made during a pass: the i with weight >= g, in increasing
 * order, into ids and w (room for the whole vocabulary), and their sum. */
typedef struct smp_sel {
    float g;
    int32_t *ids;
    float *w;
    int64_t n;
    double mass;
} smp_sel;

/* Sum of exp((x[i] - m) * inv_t), NaN and -inf counting 0. The terms go to e,
 * the sums of each SMP_BLOCK block to blk, and the terms >= sel->g to sel,
 * each when not NULL. x[i] <= m is assumed (m is the maximum), so every term
 * is in [0, 1]; exp(0) is exactly 1. */
double smp_k_expsum(const float *x, int64_t n, float m, float inv_t, float *e, float *blk, smp_sel *sel);
/* The selection sel->g of the weights e[0..n). */
void smp_k_select(const float *e, int64_t n, smp_sel *sel);
/* Sums of the weights w[i] >= floor per SMP_BLOCK block into blk; returns
 * their total (added in block order, as smp_k_pick walks). */
double smp_k_blocksum(const float *w, int64_t n, float floor, float *blk);
/* Inverse CDF: the index where the running sum of the weights >= floor
 * passes u, u in [0, total) of smp_k_blocksum(w, n, floor, blk). */
int64_t smp_k_pick(const float *w, int64_t n, float floor, const float *blk, double u);
/* The k largest of x (NaN and -inf left out), largest first, ties to the
 * lowest index, into top (the value in .logprob); returns how many. */
int smp_k_topn(const float *x, int64_t n, int k, smp_logprob *top);

/* The logits to sample from: `logits` itself when no penalty applies, else
 * ws->pen holding them with the penalties of st applied. */
const float *smp_penalize(const smp_params *p, const smp_state *st, smp_workspace *ws, const float *logits,
                          int64_t vocab);

/* Sampling with temperature (p->temperature > 0) from the logits x, whose
 * maximum is `max`: weights exp((x - max)/T) into ws->e (their sum into
 * *total), top-k, top-p, min-p, then the draw at u01 in [0, 1). Returns the
 * token. */
int64_t smp_draw(const smp_params *p, smp_workspace *ws, const float *x, int64_t vocab, float max, double u01,
                 double *total);

#endif
