/* Sampling with temperature: top-k, top-p and min-p without sorting the
 * vocabulary, then the draw.
 *
 * Semantics, as vLLM (V0 order): top-k keeps the k largest (ties: lowest id
 * first, as greedy); top-p then keeps the shortest run of the largest, over
 * the top-k renormalised distribution, whose mass reaches top_p (at least one
 * token); min-p drops tokens with p < min_p * p_max, i.e. weight < min_p,
 * since the largest weight exp(0) is exactly 1.
 *
 * How, in three narrowing steps:
 *  1. Candidates. The pass that computes the weights also collects those
 *     above 2^-10 (6.9 nats below the largest at T = 1), with their count and
 *     mass. If they are sure to hold the kept set (enough of them for top-k,
 *     enough mass for top-p, or min_p above 2^-10), they are the candidates;
 *     for peaked distributions that is a handful of tokens out of 129,280.
 *     Otherwise a pass over the weights collects those above 2^-18, and
 *     failing that above 2^-24 of the total / vocab: tokens below that carry
 *     less than float resolution of the mass together and are never drawn (a
 *     top_k reaching into them changes nothing measurable).
 *  2. Buckets. Weights are in [0, 1], so their float bit patterns order like
 *     the values; the top 11 bits cut [0, 1] into 509 buckets a quarter
 *     octave wide. Counting and summing the candidates per bucket, then
 *     walking the buckets from the top, finds the one bucket where top-k's
 *     count or top-p's mass runs out.
 *  3. Boundary. Only that bucket's members are ordered (by weight, then
 *     id), and only as far as a radix select needs to find the exact cut.
 *     Nothing is kept in order, which is all a draw needs: the kept set is
 *     "weight >= the bucket's upper edge" plus the boundary bucket's share. */
#include "engine/sampler_internal.h"

#include <string.h>

#define NB 512 /* buckets: bucket(1.0f) = 508 is the top one */

static inline uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline int bucket(float w)
{
    return (int)(fbits(w) >> 21);
}

/* Sort key of candidate j: ascending key = descending weight, then
 * ascending j, which is ascending token id. */
static inline uint64_t mkkey(float w, int64_t j)
{
    return (uint64_t)(0xFFFFFFFFu - fbits(w)) << 32 | (uint32_t)j;
}

static inline float key_w(uint64_t k)
{
    return from_bits(0xFFFFFFFFu - (uint32_t)(k >> 32));
}

/* Reorders k[0..n) so that its first c entries are the c smallest keys (in
 * no particular order) and returns c: c = count when count > 0, else the
 * fewest keys, smallest first, whose weights reach `mass` (n if they never
 * do). A radix select, most significant varying byte first: each round
 * counts and weighs the keys of the undecided range per byte value, keeps the
 * values below the crossing one, and narrows to the crossing value. */
static int64_t select_prefix(uint64_t *k, int64_t n, int64_t count, double mass, uint64_t *tmp)
{
    int64_t lo = 0, hi = n; /* the cut lies in [lo, hi]; k[0..lo) are in */
    double acc = 0;         /* weight of k[0..lo) */
    uint64_t diff = 0;
    for (int64_t i = 1; i < n; i++)
        diff |= k[i] ^ k[0];
    for (int sh = 56; sh >= 0 && hi - lo > 32; sh -= 8) {
        if (!((diff >> sh) & 0xFF))
            continue;
        int64_t cnt[256] = {0};
        double w[256] = {0};
        for (int64_t i = lo; i < hi; i++) {
            int d = (int)(k[i] >> sh & 0xFF);
            cnt[d]++;
            w[d] += key_w(k[i]);
        }
        int64_t c = lo;
        double a = acc;
        int d = 0;
        for (; d < 256; d++) {
            if (count > 0 ? c + cnt[d] >= count : a + w[d] >= mass)
                break;
            c += cnt[d];
            a += w[d];
        }
        if (d == 256)
            return n; /* rounding: the mass of all is just short */
        /* Group the range by byte value (a stable counting scatter). */
        int64_t pos[256], at = lo;
        for (int v = 0; v < 256; v++) {
            pos[v] = at;
            at += cnt[v];
        }
        for (int64_t i = lo; i < hi; i++)
            tmp[pos[k[i] >> sh & 0xFF]++] = k[i];
        memcpy(k + lo, tmp + lo, (size_t)(hi - lo) * sizeof *k);
        lo = c;
        acc = a;
        hi = c + cnt[d];
    }
    for (int64_t i = lo + 1; i < hi; i++) { /* insertion sort of what is left */
        uint64_t v = k[i];
        int64_t j = i;
        for (; j > lo && k[j - 1] > v; j--)
            k[j] = k[j - 1];
        k[j] = v;
    }
    if (count > 0)
        return count;
    for (int64_t i = lo; i < hi; i++) {
        acc += key_w(k[i]);
        if (acc >= mass)
            return i + 1;
    }
    return hi; /* rounding: keep the range where the sums said it crosses */
}

/* The members of bucket b, as keys, into ws->keys; returns how many. */
static int64_t bucket_keys(smp_workspace *ws, int64_t nc, int b)
{
    float lo = from_bits((uint32_t)b << 21), hi = from_bits((uint32_t)(b + 1) << 21);
    int64_t m = 0;
    for (int64_t j = 0; j < nc; j++) {
        float w = ws->cand_e[j];
        if (w >= lo && w < hi)
            ws->keys[m++] = mkkey(w, j);
    }
    return m;
}

/* Step 1: whether the selection holds every token that can be kept. */
static int sufficient(const smp_params *p, const smp_sel *sel, int64_t k, double total)
{
    if (k && p->top_p < 1.0f)
        return sel->n >= k; /* top-p needs the exact top-k mass */
    if (k)
        return sel->n >= k || sel->g <= p->min_p;
    /* a hair over the target, for the rounding of the two sums */
    return sel->mass >= p->top_p * total * (1 + 1e-6) || sel->g <= p->min_p;
}

int64_t smp_draw(const smp_params *p, smp_workspace *ws, const float *x, int64_t vocab, float max, double u01,
                 double *total_out)
{
    int64_t k = p->top_k > 0 && p->top_k < vocab ? p->top_k : 0;
    double top_p = p->top_p;
    float min_p = p->min_p;
    int truncate = k || top_p < 1.0;
    smp_sel sel = {.g = 0x1p-10f, .ids = ws->cand, .w = ws->cand_e};
    double total = smp_k_expsum(x, vocab, max, 1.0f / p->temperature, ws->e, ws->blk, truncate ? &sel : NULL);
    *total_out = total;
    if (!truncate) {
        double t = total;
        if (min_p > 0) /* else the block sums of smp_k_expsum stand */
            t = smp_k_blocksum(ws->e, vocab, min_p, ws->blk);
        return smp_k_pick(ws->e, vocab, min_p, ws->blk, u01 * t);
    }
    float tiny = (float)(total * 0x1p-24 / (double)vocab);
    if (!sufficient(p, &sel, k, total)) {
        sel.g = 0x1p-18f > tiny ? 0x1p-18f : tiny;
        smp_k_select(ws->e, vocab, &sel);
        if (sel.g > tiny && !sufficient(p, &sel, k, total)) {
            sel.g = tiny;
            smp_k_select(ws->e, vocab, &sel);
        }
    }
    int64_t nc = sel.n;

    /* Step 2: count and weigh per bucket, four interleaved histograms so that
     * runs of one bucket do not wait on each other's increments. Candidates
     * are >= sel.g, so only buckets from bucket(sel.g) up are in use. */
    int lo = bucket(sel.g);
    int32_t cnt4[4][NB];
    double mass4[4][NB];
    for (int h = 0; h < 4; h++) {
        memset(cnt4[h] + lo, 0, (size_t)(NB - lo) * sizeof **cnt4);
        memset(mass4[h] + lo, 0, (size_t)(NB - lo) * sizeof **mass4);
    }
    const float *cw = ws->cand_e;
    int64_t t = 0;
#define TALLY(h, w) (cnt4[h][bucket(w)]++, mass4[h][bucket(w)] += (w))
    for (; t + 4 <= nc; t += 4) {
        TALLY(0, cw[t]);
        TALLY(1, cw[t + 1]);
        TALLY(2, cw[t + 2]);
        TALLY(3, cw[t + 3]);
    }
    for (; t < nc; t++)
        TALLY(0, cw[t]);
#undef TALLY
    int64_t cnt[NB];
    double mass[NB];
    for (int b = lo; b < NB; b++) {
        cnt[b] = (int64_t)cnt4[0][b] + cnt4[1][b] + cnt4[2][b] + cnt4[3][b];
        mass[b] = (mass4[0][b] + mass4[1][b]) + (mass4[2][b] + mass4[3][b]);
    }

    /* bk: the bucket holding the k-th largest; its first rk are kept. */
    int bk = -1;
    int64_t rk = 0;
    for (int64_t b = NB - 1, c = 0; k && b >= lo; c += cnt[b--])
        if (c + cnt[b] >= k) {
            bk = (int)b;
            rk = k - c;
            break;
        }

    /* Step 3. The kept set: weights >= edge, plus keys[0..nprefix) from the
     * boundary bucket (no boundary: edge 0, no prefix). */
    float edge = 0;
    int64_t nprefix = 0;
    double kmass = total, kpart = 0; /* mass of the top-k set, and of its part in bk */
    if (bk >= 0) {
        select_prefix(ws->keys, bucket_keys(ws, nc, bk), rk, 0, ws->keys_tmp);
        edge = from_bits((uint32_t)(bk + 1) << 21);
        nprefix = rk;
        for (int64_t j = 0; j < rk; j++)
            kpart += key_w(ws->keys[j]);
        kmass = kpart;
        for (int b = NB - 1; b > bk; b--)
            kmass += mass[b];
    }
    if (top_p < 1.0) {
        double c = 0, target = top_p * kmass;
        for (int b = NB - 1; b >= (bk >= 0 ? bk : lo); b--) {
            double mb = b == bk ? kpart : mass[b];
            if (c + mb < target) {
                c += mb;
                continue;
            }
            int64_t m = b == bk ? rk : bucket_keys(ws, nc, b);
            edge = from_bits((uint32_t)(b + 1) << 21);
            nprefix = select_prefix(ws->keys, m, 0, target - c, ws->keys_tmp);
            break;
        }
    }

    /* The draw: min-p is a floor on both parts. */
    float floor = edge > min_p ? edge : min_p;
    double m1 = smp_k_blocksum(ws->cand_e, nc, floor, ws->blk), m2 = 0;
    for (int64_t j = 0; j < nprefix; j++) {
        float w = key_w(ws->keys[j]);
        m2 += w >= min_p ? w : 0;
    }
    double u = u01 * (m1 + m2);
    if (u < m1)
        return ws->cand[smp_k_pick(ws->cand_e, nc, floor, ws->blk, u)];
    u -= m1;
    int64_t pick = -1;
    double c = 0;
    for (int64_t j = 0; j < nprefix; j++) {
        float w = key_w(ws->keys[j]);
        if (w < min_p || w <= 0)
            continue;
        pick = (int64_t)(ws->keys[j] & 0xFFFFFFFFu);
        c += w;
        if (c > u)
            break;
    }
    return ws->cand[pick];
}
