/* The sampler's passes over the whole vocabulary (129,280 floats per call, up
 * to hundreds of calls per decode step), written with GCC/Clang vector
 * extensions, 8 floats wide, without -ffast-math: the compiler may not
 * reorder float reductions on its own, so the lanes are explicit. On x86-64
 * each pass is built twice (target_clones): for AVX2, where a vector is one
 * register, and for the baseline, where it is two SSE registers; the loader
 * picks one at start-up. Both do the same arithmetic in the same order (GCC
 * does not fuse a*b+c into an FMA in ISO C mode), so a seeded request draws
 * the same tokens on any x86-64 host. Tails shorter than a vector go through
 * the same vector code on a padded copy. */
#include "engine/sampler_internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SMP_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define SMP_KERNEL
#endif
#define INLINE static inline __attribute__((always_inline))

/* 32-byte vectors never cross a call here: helpers take them through
 * pointers or are macros, and returning one from an always_inline helper does
 * not reach the ABI, whatever GCC's -Wpsabi says about it without AVX. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define SEL(mask, a, b) ((v8f)(((v8i)(a) & (mask)) | ((v8i)(b) & ~(mask))))
/* Lanes of x above m replace m's; NaN compares false and is skipped. */
#define VMAX(m, x) SEL((x) > (m), (x), (m))

INLINE v8f splat(float x)
{
    return (v8f){x, x, x, x, x, x, x, x};
}

INLINE v8f ld(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* x[0..left) padded with `pad` to a full vector (left < 8). */
INLINE v8f ld_tail(const float *x, int64_t left, float pad)
{
    float t[8] = {pad, pad, pad, pad, pad, pad, pad, pad};
    memcpy(t, x, (size_t)left * sizeof(float));
    return ld(t);
}

INLINE float hmax(const v8f *v)
{
    float m = (*v)[0];
    for (int j = 1; j < 8; j++)
        m = (*v)[j] > m ? (*v)[j] : m;
    return m;
}

INLINE float hsum(const v8f *v)
{
    return (((*v)[0] + (*v)[1]) + ((*v)[2] + (*v)[3])) + (((*v)[4] + (*v)[5]) + ((*v)[6] + (*v)[7]));
}

/* Whether any / all lanes of a comparison mask are set, four 64-bit words
 * at a time (a lane-by-lane loop compiles to eight extractions). */
INLINE int any(const v8i *m)
{
    uint64_t w[4];
    memcpy(w, m, sizeof w);
    return ((w[0] | w[1]) | (w[2] | w[3])) != 0;
}

INLINE int all(const v8i *m)
{
    uint64_t w[4];
    memcpy(w, m, sizeof w);
    return ((w[0] & w[1]) & (w[2] & w[3])) == UINT64_MAX;
}

/* 2^t for t <= 0: t = n + f with n an integer and |f| <= 1/2 (exact), 2^f
 * = 1 + f q(f) with q of degree 4 (a Chebyshev fit, 2e-7 relative; no
 * constant term besides the 1, so that 2^0 is exactly 1), then 2^n through
 * the exponent bits. Below -126, and for NaN, the result is 0. Working in
 * base 2 folds log2(e) into the caller's scale and needs no Cody-Waite
 * reduction. */
INLINE v8f vexp2(const v8f *tin)
{
    v8i ok = *tin >= -126.0f;
    v8f t = SEL(ok, *tin, splat(0.0f));
    v8f magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v8f n = (t + magic) - magic;
    v8f f = t - n;
    v8f q = f * 1.338130212e-03f + 9.666368365e-03f;
    q = q * f + 5.550381169e-02f;
    q = q * f + 2.402234972e-01f;
    q = q * f + 6.931471825e-01f;
    v8f p = q * f + 1.0f;
    v8i scale = (__builtin_convertvector(n, v8i) + 127) << 23;
    v8f e = p * (v8f)scale;
    return SEL(ok, e, splat(0.0f));
}

SMP_KERNEL float smp_k_max(const float *x, int64_t n, float *blk)
{
    float m = -INFINITY;
    for (int64_t b0 = 0; b0 < n; b0 += SMP_BLOCK) {
        int64_t end = b0 + SMP_BLOCK < n ? b0 + SMP_BLOCK : n;
        v8f m0 = splat(-INFINITY), m1 = m0;
        int64_t i = b0;
        for (; i + 16 <= end; i += 16) {
            m0 = VMAX(m0, ld(x + i));
            m1 = VMAX(m1, ld(x + i + 8));
        }
        for (; i < end; i += 8) {
            v8f v = end - i >= 8 ? ld(x + i) : ld_tail(x + i, end - i, -INFINITY);
            m0 = VMAX(m0, v);
        }
        m0 = VMAX(m0, m1);
        float bm = hmax(&m0);
        blk[b0 / SMP_BLOCK] = bm;
        m = bm > m ? bm : m;
    }
    return m;
}

int64_t smp_k_argmax(const float *x, int64_t n, const float *blk, float m)
{
    for (int64_t b0 = 0; b0 < n; b0 += SMP_BLOCK) {
        if (blk[b0 / SMP_BLOCK] != m)
            continue;
        int64_t end = b0 + SMP_BLOCK < n ? b0 + SMP_BLOCK : n;
        for (int64_t i = b0; i < end; i++)
            if (x[i] == m)
                return i;
    }
    return -1;
}

/* Appends the lanes of v (weights of tokens i..i+8, `left` of them real, the
 * rest 0) that are >= g > 0 to ids/w after the first k; returns the new
 * count. Their sum goes to the lanes of *mass. Branch-free but for the
 * common all-or-nothing vectors. g and k travel by value so that the stores
 * through ids and w cannot be taken to change them. */
INLINE int64_t collect(const v8f *v, float g, int64_t i, int64_t left, int32_t *restrict ids, float *restrict w,
                       int64_t k, v8f *mass)
{
    v8i hit = *v >= g;
    if (!any(&hit))
        return k;
    *mass += SEL(hit, *v, splat(0.0f));
    if (left == 8 && all(&hit)) {
        v8i idv = (v8i){0, 1, 2, 3, 4, 5, 6, 7} + (int32_t)i;
        memcpy(ids + k, &idv, sizeof idv);
        memcpy(w + k, v, sizeof *v);
        return k + 8;
    }
    for (int64_t j = 0; j < left; j++) {
        ids[k] = (int32_t)(i + j);
        w[k] = (*v)[j];
        k -= hit[j]; /* hit lanes are -1 */
    }
    return k;
}

SMP_KERNEL double smp_k_expsum(const float *x, int64_t n, float m, float inv_t, float *e, float *blk, smp_sel *sel)
{
    double total = 0, smass = 0;
    float c = (float)(1.4426950408889634 * inv_t); /* exp(z) = 2^(z log2 e) */
    int64_t k = 0;
    float g = sel ? sel->g : 0;
    int32_t *ids = sel ? sel->ids : NULL;
    float *w = sel ? sel->w : NULL;
    /* Float lanes within a block (at most SMP_BLOCK terms of at most 1),
     * double across blocks. */
    for (int64_t b0 = 0; b0 < n; b0 += SMP_BLOCK) {
        int64_t end = b0 + SMP_BLOCK < n ? b0 + SMP_BLOCK : n;
        v8f s0 = splat(0.0f), s1 = s0, sm = s0;
        int64_t i = b0;
        for (; i + 16 <= end; i += 16) {
            v8f ta = (ld(x + i) - m) * c, tb = (ld(x + i + 8) - m) * c;
            v8f a = vexp2(&ta), b = vexp2(&tb);
            if (e) {
                memcpy(e + i, &a, sizeof a);
                memcpy(e + i + 8, &b, sizeof b);
            }
            if (sel) {
                v8i hit = (a >= g) | (b >= g);
                if (any(&hit)) {
                    k = collect(&a, g, i, 8, ids, w, k, &sm);
                    k = collect(&b, g, i + 8, 8, ids, w, k, &sm);
                }
            }
            s0 += a;
            s1 += b;
        }
        for (; i < end; i += 8) {
            int64_t left = end - i < 8 ? end - i : 8;
            v8f t = ((left == 8 ? ld(x + i) : ld_tail(x + i, left, -INFINITY)) - m) * c;
            v8f a = vexp2(&t); /* padding lanes are 2^-inf = 0 */
            if (e)
                memcpy(e + i, &a, (size_t)left * sizeof(float));
            if (sel)
                k = collect(&a, g, i, left, ids, w, k, &sm);
            s0 += a;
        }
        s0 += s1;
        float bs = hsum(&s0);
        if (blk)
            blk[b0 / SMP_BLOCK] = bs;
        total += bs;
        smass += hsum(&sm);
    }
    if (sel)
        sel->n = k, sel->mass = smass;
    return total;
}

SMP_KERNEL void smp_k_select(const float *e, int64_t n, smp_sel *sel)
{
    int64_t k = 0;
    double smass = 0;
    float g = sel->g;
    int32_t *ids = sel->ids;
    float *w = sel->w;
    for (int64_t b0 = 0; b0 < n; b0 += SMP_BLOCK) {
        int64_t end = b0 + SMP_BLOCK < n ? b0 + SMP_BLOCK : n, i = b0;
        v8f sm = splat(0.0f);
        for (; i + 32 <= end; i += 32) { /* one test for four vectors, most often all misses */
            v8f v0 = ld(e + i), v1 = ld(e + i + 8), v2 = ld(e + i + 16), v3 = ld(e + i + 24);
            v8i hit = (v0 >= g) | (v1 >= g) | (v2 >= g) | (v3 >= g);
            if (!any(&hit))
                continue;
            k = collect(&v0, g, i, 8, ids, w, k, &sm);
            k = collect(&v1, g, i + 8, 8, ids, w, k, &sm);
            k = collect(&v2, g, i + 16, 8, ids, w, k, &sm);
            k = collect(&v3, g, i + 24, 8, ids, w, k, &sm);
        }
        for (; i + 8 <= end; i += 8) {
            v8f v = ld(e + i);
            k = collect(&v, g, i, 8, ids, w, k, &sm);
        }
        if (i < end) {
            v8f v = ld_tail(e + i, end - i, 0.0f);
            k = collect(&v, g, i, end - i, ids, w, k, &sm);
        }
        smass += hsum(&sm);
    }
    sel->n = k, sel->mass = smass;
}

SMP_KERNEL double smp_k_blocksum(const float *w, int64_t n, float floor, float *blk)
{
    double total = 0;
    for (int64_t b0 = 0; b0 < n; b0 += SMP_BLOCK) {
        int64_t end = b0 + SMP_BLOCK < n ? b0 + SMP_BLOCK : n;
        v8f s = splat(0.0f);
        for (int64_t i = b0; i < end; i += 8) {
            v8f v = end - i >= 8 ? ld(w + i) : ld_tail(w + i, end - i, 0.0f);
            s += SEL(v >= floor, v, splat(0.0f));
        }
        blk[b0 / SMP_BLOCK] = hsum(&s);
        total += blk[b0 / SMP_BLOCK];
    }
    return total;
}

int64_t smp_k_pick(const float *w, int64_t n, float floor, const float *blk, double u)
{
    int64_t nb = (n + SMP_BLOCK - 1) / SMP_BLOCK, b = 0, last = -1;
    double cum = 0;
    /* The walk adds the block sums in the order the total was formed, so
     * u < total is crossed at the block level; inside the block rounding can
     * leave u just out of reach, and then the block's last positive weight
     * wins. */
    for (; b < nb; b++) {
        if (blk[b] > 0)
            last = b;
        if (cum + blk[b] > u)
            break;
        cum += blk[b];
    }
    if (b == nb)
        b = last;
    if (b < 0)
        return -1;
    int64_t i = b * SMP_BLOCK, end = i + SMP_BLOCK < n ? i + SMP_BLOCK : n, pick = -1;
    for (; i < end; i++) {
        float v = w[i] >= floor ? w[i] : 0.0f;
        if (v > 0) {
            pick = i;
            cum += v;
            if (cum > u)
                return i;
        }
    }
    return pick;
}

SMP_KERNEL int smp_k_topn(const float *x, int64_t n, int k, smp_logprob *top)
{
    int have = 0;
    float thr = -INFINITY;
    for (int64_t i = 0; i < n && k > 0; i += 8) {
        int64_t left = n - i < 8 ? n - i : 8;
        v8f v = left == 8 ? ld(x + i) : ld_tail(x + i, left, -INFINITY);
        v8i above = v > thr;
        if (!any(&above))
            continue;
        for (int64_t l = 0; l < left; l++) {
            float xv = v[l];
            if (!(xv > thr))
                continue;
            int j = have < k ? have : k - 1;
            for (; j > 0 && top[j - 1].logprob < xv; j--)
                top[j] = top[j - 1];
            top[j] = (smp_logprob){(int32_t)(i + l), xv};
            if (have < k)
                have++;
            if (have == k)
                thr = top[k - 1].logprob;
        }
    }
    return have;
}
