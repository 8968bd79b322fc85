/* Generators of the random checkpoint: a counter-based random stream per
 * tensor (splitmix64 of the tensor key and the position, so any row can be
 * made alone, by any thread) turned into values by lookup tables: normal
 * quantiles for F32/BF16, e4m3 and e2m1 code tables drawn from a normal
 * distribution for the quantized weights. */
#include "tools/mk_internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#define GAMMA 0x9E3779B97F4A7C15ull

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t mk_name_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a of the name */
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        h = (h ^ *s) * 0x100000001B3ull;
    return mix64(mix64(seed + GAMMA) ^ h);
}

/* Word i of the stream of `key`. */
static inline uint64_t word(uint64_t key, uint64_t i)
{
    return mix64(key + (i + 1) * GAMMA);
}

/* Stores x as 8 little-endian bytes. */
static inline void store_le64(uint8_t *o, uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(o, &x, 8);
#else
    for (int k = 0; k < 8; k++)
        o[k] = (uint8_t)(x >> (8 * k));
#endif
}

/* Bytes [pos, pos + n) of the stream of `key` (byte k of word w is bits
 * 8k..8k+7), wherever the range starts. */
static void fill_random(uint64_t key, uint64_t pos, size_t n, uint8_t *out)
{
    uint64_t w = pos >> 3;
    unsigned off = (unsigned)(pos & 7);
    size_t i = 0;
    if (off) {
        uint64_t x = word(key, w++);
        for (; off < 8 && i < n; off++)
            out[i++] = (uint8_t)(x >> (8 * off));
    }
    for (; i + 8 <= n; i += 8)
        store_le64(out + i, word(key, w++));
    if (i < n) {
        uint64_t x = word(key, w);
        for (int k = 0; i < n; k++)
            out[i++] = (uint8_t)(x >> (8 * k));
    }
}

/* Inverse of the standard normal CDF (Acklam's rational approximation,
 * relative error below 1.2e-9), for 0 < p < 1. */
static double normal_quantile(double p)
{
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                3.754408661907416e+00};
    const double lo = 0.02425;
    if (p < lo) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > 1 - lo)
        return -normal_quantile(1 - p);
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* Normal quantiles for 12-bit draws, built once. */
#define NORMAL_BITS 12 /* 4096 quantiles: the table stays in L1 */
static float g_normal[1 << NORMAL_BITS];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_normal(void)
{
    for (int u = 0; u < (1 << NORMAL_BITS); u++)
        g_normal[u] = (float)normal_quantile((u + 0.5) / (1 << NORMAL_BITS));
}

/* e2m1 codes of the 16 normal quantiles at `sigma`; returns their RMS. */
static double e2m1_quantiles(double sigma, uint8_t nib[16])
{
    double ss = 0;
    for (int j = 0; j < 16; j++) {
        nib[j] = dt_f32_to_e2m1((float)(sigma * normal_quantile((j + 0.5) / 16.0)));
        ss += (double)dt_e2m1_to_f32(nib[j]) * dt_e2m1_to_f32(nib[j]);
    }
    return sqrt(ss / 16);
}

/* A byte table of two e2m1 codes whose RMS is nearest `want`: e2m1 is so
 * coarse that the spread that gives it is searched for. */
static void fp4_table(uint8_t code[256], double want)
{
    uint8_t nib[16];
    double best = want, best_d = INFINITY;
    for (int i = 0; i <= 300; i++) {
        double s = want * (0.5 + i * 0.005);
        double d = fabs(e2m1_quantiles(s, nib) - want);
        if (d < best_d) {
            best_d = d;
            best = s;
        }
    }
    e2m1_quantiles(best, nib);
    for (int b = 0; b < 256; b++)
        code[b] = (uint8_t)(nib[b & 15] | (nib[b >> 4] << 4));
}

void mk_lut_build(mk_lut *l)
{
    if (l->fp4) {
        fp4_table(l->code[0], l->rms);
        fp4_table(l->code[1], l->rms / 2);
        return;
    }
    for (int t = 0; t < 3; t++) {
        double s = l->rms * ldexp(1.0, 1 - t); /* 2 sigma, sigma, sigma / 2 */
        for (int b = 0; b < 256; b++) /* |value| < 448: never the NaN codes 0x7F/0xFF */
            l->code[t][b] = dt_f32_to_e4m3((float)(s * normal_quantile((b + 0.5) / 256.0)));
    }
}

/* The scale choice of FP8 block b of a weight: -1, 0 or +1 binade. The
 * weight and its scale tensor both draw it from the weight's block key. */
static int fp8_block_delta(uint64_t block_key, uint64_t b)
{
    return (int)(word(block_key, b) % 3) - 1;
}

/* The scale choice (0 or +1 binade) of MXFP4 group g is bit g % 64 of
 * word g / 64 of the block key's stream; callers walking a row keep that
 * word across its groups. */
static uint64_t fp4_group_bits(uint64_t block_key, uint64_t g)
{
    return word(block_key, g >> 6);
}

static void put_le32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)v;
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)(v >> 16);
    o[3] = (uint8_t)(v >> 24);
}

/* dt_f32_to_bf16 for finite values (round to nearest even), inlined: it
 * runs once per element of the largest tensors. */
static inline uint16_t bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

static inline void put_normal(const mk_tensor *t, uint8_t *o, size_t i, uint64_t lane)
{
    const float v = t->mean + t->std * g_normal[lane & ((1 << NORMAL_BITS) - 1)];
    if (t->dtype == DT_BF16) {
        const uint16_t b = bf16_of(v);
        o[2 * i] = (uint8_t)b;
        o[2 * i + 1] = (uint8_t)(b >> 8);
    } else {
        uint32_t u;
        memcpy(&u, &v, 4);
        put_le32(o + 4 * i, u);
    }
}

/* Element e of a normal tensor draws the 16-bit lane e % 4 of word e / 4,
 * i.e. bytes 2e and 2e + 1 of the stream (of which NORMAL_BITS are used). */
static void gen_normal(const mk_tensor *t, int64_t r, uint8_t *o)
{
    const size_t ne = t->row_bytes / dt_elem_size(t->dtype);
    const uint64_t e0 = (uint64_t)r * ne;
    if (t->dtype == DT_BF16) {
        /* same width as the draws: draw into place, then map (two simple
         * passes run faster than one fused loop) */
        fill_random(t->key, 2 * e0, 2 * ne, o);
        for (size_t i = 0; i < ne; i++)
            put_normal(t, o, i, (uint64_t)o[2 * i] | (uint64_t)o[2 * i + 1] << 8);
        return;
    }
    size_t i = 0;
    for (; i < ne && ((e0 + i) & 3); i++)
        put_normal(t, o, i, word(t->key, (e0 + i) >> 2) >> (16 * ((e0 + i) & 3)));
    for (; i + 4 <= ne; i += 4) {
        const uint64_t x = word(t->key, (e0 + i) >> 2);
        for (int k = 0; k < 4; k++)
            put_normal(t, o, i + k, x >> (16 * k));
    }
    for (; i < ne; i++)
        put_normal(t, o, i, word(t->key, (e0 + i) >> 2) >> (16 * ((e0 + i) & 3)));
}

static void gen_fp8_weight(const mk_plan *p, const mk_tensor *t, int64_t r, uint8_t *o)
{
    const int64_t in = t->in, nb = (in + 127) / 128;
    fill_random(t->key, (uint64_t)r * (uint64_t)in, (size_t)in, o);
    const mk_lut *l = &p->luts[t->lut];
    for (int64_t bc = 0; bc < nb; bc++) {
        const uint8_t *code = l->code[fp8_block_delta(t->block_key, (uint64_t)((r / 128) * nb + bc)) + 1];
        int64_t end = (bc + 1) * 128 < in ? (bc + 1) * 128 : in;
        for (int64_t c = bc * 128; c < end; c++)
            o[c] = code[o[c]];
    }
}

static void gen_fp4_weight(const mk_plan *p, const mk_tensor *t, int64_t r, uint8_t *o)
{
    const int64_t ng = t->in / 32;
    fill_random(t->key, (uint64_t)r * t->row_bytes, t->row_bytes, o);
    uint64_t bits = 0;
    for (int64_t g = 0; g < ng; g++) {
        const uint64_t gi = (uint64_t)(r * ng + g);
        if (g == 0 || (gi & 63) == 0)
            bits = fp4_group_bits(t->block_key, gi);
        const uint8_t *code = p->luts[t->lut].code[(bits >> (gi & 63)) & 1];
        uint8_t *q = o + 16 * g;
        for (int k = 0; k < 16; k++)
            q[k] = code[q[k]];
    }
}

/* Row v of tid2eid: k distinct ids in [0, E), by rejection. */
static void gen_tid2eid(const mk_tensor *t, int64_t v, uint8_t *o)
{
    const int k = (int)(t->row_bytes / 4);
    const uint64_t key = t->key ^ mix64((uint64_t)v + 1);
    int32_t ids[64];
    int n = 0;
    for (uint64_t a = 0; n < k; a++) {
        int32_t id = (int32_t)(word(key, a) % (uint64_t)t->n_experts);
        int dup = 0;
        for (int j = 0; j < n; j++)
            dup |= ids[j] == id;
        if (!dup)
            ids[n++] = id;
    }
    for (int j = 0; j < k; j++)
        put_le32(o + 4 * j, (uint32_t)ids[j]);
}

void mk_gen_rows(const mk_plan *p, const mk_tensor *t, int64_t r0, int64_t nr, uint8_t *out)
{
    pthread_once(&g_once, init_normal);
    for (int64_t r = r0; r < r0 + nr; r++) {
        uint8_t *o = out + (size_t)(r - r0) * t->row_bytes;
        switch (t->gen) {
        case MK_NORMAL:
            gen_normal(t, r, o);
            break;
        case MK_FP8_W:
            gen_fp8_weight(p, t, r, o);
            break;
        case MK_FP8_S: {
            const int64_t nb = (int64_t)t->row_bytes;
            for (int64_t bc = 0; bc < nb; bc++)
                o[bc] = (uint8_t)(t->scale_exp + fp8_block_delta(t->block_key, (uint64_t)(r * nb + bc)));
            break;
        }
        case MK_FP4_W:
            gen_fp4_weight(p, t, r, o);
            break;
        case MK_FP4_S: {
            const int64_t ng = (int64_t)t->row_bytes;
            uint64_t bits = 0;
            for (int64_t g = 0; g < ng; g++) {
                const uint64_t gi = (uint64_t)(r * ng + g);
                if (g == 0 || (gi & 63) == 0)
                    bits = fp4_group_bits(t->block_key, gi);
                o[g] = (uint8_t)(t->scale_exp + ((bits >> (gi & 63)) & 1));
            }
            break;
        }
        case MK_TID2EID:
            gen_tid2eid(t, r, o);
            break;
        }
    }
}
