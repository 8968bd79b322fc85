/* Scalar decoders and encoders for every element type of the checkpoint.
 * Decoders are written from the format definitions (MODEL.md section 3), not
 * from tables, and the tests compare them with hand-made tables. */
#include "formats/dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const DT_NAMES[DT_COUNT] = {
    [DT_F32] = "F32",           [DT_F16] = "F16",
    [DT_BF16] = "BF16",         [DT_I8] = "I8",
    [DT_U8] = "U8",             [DT_I32] = "I32",
    [DT_I64] = "I64",           [DT_F8_E4M3] = "F8_E4M3",
    [DT_F8_E5M2] = "F8_E5M2",   [DT_F8_E4M3FNUZ] = "F8_E4M3FNUZ",
    [DT_F8_E5M2FNUZ] = "F8_E5M2FNUZ", [DT_F8_E8M0] = "F8_E8M0",
    [DT_MXFP4] = "MXFP4",
};

const char *dt_name(dtype_t t)
{
    return (t >= 0 && t < DT_COUNT) ? DT_NAMES[t] : "?";
}

int dt_from_name(const char *name, dtype_t *out)
{
    for (int t = 0; t < DT_COUNT; t++) {
        if (strcmp(name, DT_NAMES[t]) == 0) {
            *out = (dtype_t)t;
            return 0;
        }
    }
    return -1;
}

size_t dt_elem_size(dtype_t t)
{
    switch (t) {
    case DT_F32: case DT_I32: return 4;
    case DT_I64: return 8;
    case DT_F16: case DT_BF16: return 2;
    case DT_MXFP4: return 0;
    default: return 1;
    }
}

size_t dt_bytes(dtype_t t, int64_t nelem)
{
    if (t == DT_MXFP4)
        return (size_t)(nelem / 2);
    return dt_elem_size(t) * (size_t)nelem;
}

bool dt_is_fp8(dtype_t t)
{
    return t == DT_F8_E4M3 || t == DT_F8_E5M2 || t == DT_F8_E4M3FNUZ || t == DT_F8_E5M2FNUZ;
}

float dt_f16_to_f32(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 1024), e - 25);
    return s ? -v : v;
}

float dt_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dt_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f))
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Decodes sign/exponent/mantissa fields of a minifloat with no special codes
 * (the caller handles NaN/inf first). */
static float minifloat(uint8_t b, int mbits, int bias)
{
    int ebits = 7 - mbits;
    int e = (b >> mbits) & ((1 << ebits) - 1);
    int m = b & ((1 << mbits) - 1);
    float v = e == 0 ? ldexpf((float)m, 1 - bias - mbits)
                     : ldexpf((float)(m | (1 << mbits)), e - bias - mbits);
    return (b & 0x80) ? -v : v;
}

float dt_e4m3_to_f32(uint8_t b)
{
    if ((b & 0x7F) == 0x7F)
        return NAN;
    return minifloat(b, 3, 7);
}

float dt_e5m2_to_f32(uint8_t b)
{
    if ((b & 0x7C) == 0x7C)
        return (b & 3) ? NAN : ((b & 0x80) ? -INFINITY : INFINITY);
    return minifloat(b, 2, 15);
}

float dt_e4m3fnuz_to_f32(uint8_t b)
{
    if (b == 0x80)
        return NAN;
    return minifloat(b, 3, 8);
}

float dt_e5m2fnuz_to_f32(uint8_t b)
{
    if (b == 0x80)
        return NAN;
    return minifloat(b, 2, 16);
}

float dt_e8m0_to_f32(uint8_t b)
{
    if (b == 0xFF)
        return NAN;
    return ldexpf(1.0f, (int)b - 127);
}

float dt_e2m1_to_f32(uint8_t code)
{
    static const float V[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = V[code & 7];
    return (code & 8) ? -v : v;
}

/* Round-to-nearest-even encoder for a 3-mantissa-bit minifloat with the
 * given bias, saturating at the code `maxcode` (positive, sign bit clear). */
static uint8_t encode_e4m3_like(float a, int bias, uint8_t maxcode)
{
    /* a >= 0, finite */
    int min_exp = 1 - bias; /* exponent of the smallest normal */
    if (a < ldexpf(1.0f, min_exp)) {
        float q = rintf(ldexpf(a, 3 - min_exp)); /* subnormal step 2^(min_exp-3) */
        return (uint8_t)q; /* q == 8 is the smallest normal, code 8 */
    }
    int ex;
    float fr = frexpf(a, &ex); /* a = fr * 2^ex, fr in [0.5, 1) */
    int E = ex - 1;
    float q = rintf((fr * 2.0f - 1.0f) * 8.0f);
    if (q >= 8.0f) {
        q = 0.0f;
        E += 1;
    }
    int code = ((E + bias) << 3) | (int)q;
    return code > maxcode ? maxcode : (uint8_t)code;
}

uint8_t dt_f32_to_e4m3(float f)
{
    if (isnan(f))
        return 0x7F;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f)
        return sign | 0x7E;
    return sign | encode_e4m3_like(a, 7, 0x7E);
}

uint8_t dt_f32_to_e4m3fnuz(float f)
{
    if (isnan(f))
        return 0x80;
    float a = fabsf(f);
    if (a >= 240.0f)
        return (f < 0 ? 0x80 : 0) | 0x7F;
    uint8_t code = encode_e4m3_like(a, 8, 0x7F);
    if (code == 0)
        return 0; /* no negative zero in fnuz: 0x80 is NaN */
    return (f < 0 ? 0x80 : 0) | code;
}

uint8_t dt_f32_to_e2m1(float f)
{
    uint8_t sign = (f < 0) ? 8 : 0;
    float a = fabsf(f);
    uint8_t c;
    /* thresholds are midpoints; ties go to the even code */
    if (a <= 0.25f) c = 0;
    else if (a < 0.75f) c = 1;
    else if (a <= 1.25f) c = 2;
    else if (a < 1.75f) c = 3;
    else if (a <= 2.5f) c = 4;
    else if (a < 3.5f) c = 5;
    else if (a <= 5.0f) c = 6;
    else c = 7;
    return c == 0 ? 0 : (uint8_t)(sign | c);
}

float dt_fp8_to_f32(dtype_t t, uint8_t b)
{
    switch (t) {
    case DT_F8_E4M3: return dt_e4m3_to_f32(b);
    case DT_F8_E5M2: return dt_e5m2_to_f32(b);
    case DT_F8_E4M3FNUZ: return dt_e4m3fnuz_to_f32(b);
    case DT_F8_E5M2FNUZ: return dt_e5m2fnuz_to_f32(b);
    default: abort();
    }
}

int dt_to_f32(dtype_t t, const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    switch (t) {
    case DT_F32:
        memcpy(dst, src, (size_t)n * 4);
        return 0;
    case DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + 2 * i, 2);
            dst[i] = dt_bf16_to_f32(v);
        }
        return 0;
    case DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + 2 * i, 2);
            dst[i] = dt_f16_to_f32(v);
        }
        return 0;
    case DT_F8_E4M3: case DT_F8_E5M2: case DT_F8_E4M3FNUZ: case DT_F8_E5M2FNUZ:
        for (int64_t i = 0; i < n; i++)
            dst[i] = dt_fp8_to_f32(t, p[i]);
        return 0;
    default:
        return -1;
    }
}
