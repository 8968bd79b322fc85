/* Element types of checkpoint tensors and their scalar decoders.
 *
 * The FP8 dialect is part of the type: DT_F8_E4M3 (OCP e4m3fn, what the
 * checkpoint and Hopper use) and DT_F8_E4M3FNUZ (what MI300X computes in) are
 * different dtypes, and every API that reads FP8 bytes takes the dtype the
 * caller expects and refuses a mismatch (see fp8.h). Reading the same byte in
 * the wrong dialect is off by exactly 2x, so there is no implicit path from
 * one to the other. */
#ifndef V4_FORMATS_DTYPE_H
#define V4_FORMATS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DT_F32,
    DT_F16,
    DT_BF16,
    DT_I8,
    DT_U8,
    DT_I32,
    DT_I64,
    DT_F8_E4M3,     /* OCP e4m3fn: bias 7, 0x7F/0xFF NaN, max 448, 0x80 = -0 */
    DT_F8_E5M2,     /* OCP e5m2: bias 15, IEEE-like inf/NaN */
    DT_F8_E4M3FNUZ, /* AMD: bias 8, only 0x80 is NaN, max 240, no -0 */
    DT_F8_E5M2FNUZ, /* AMD: bias 16, only 0x80 is NaN, no -0 */
    DT_F8_E8M0,     /* UE8M0 scale: 2^(e-127), 0xFF NaN */
    DT_MXFP4,       /* e2m1 codes, two per byte, low nibble first. Stored as I8
                       in safetensors; the binding retypes it. */
    DT_COUNT
} dtype_t;

/* The safetensors name ("F32", "F8_E4M3", ...). */
const char *dt_name(dtype_t t);
/* Parses a safetensors dtype name; returns -1 for an unknown name. */
int dt_from_name(const char *name, dtype_t *out);

/* Bytes for `nelem` elements (MXFP4 packs two per byte; nelem must be even). */
size_t dt_bytes(dtype_t t, int64_t nelem);
/* Bytes per element for byte-addressable types; 0 for DT_MXFP4. */
size_t dt_elem_size(dtype_t t);

bool dt_is_fp8(dtype_t t); /* the four FP8 data types (not E8M0) */

/* Scalar decoders. Each is exact (every code of every format is exactly
 * representable in fp32). */
float dt_f16_to_f32(uint16_t h);
float dt_bf16_to_f32(uint16_t b);
uint16_t dt_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float dt_e4m3_to_f32(uint8_t b);      /* OCP e4m3fn */
float dt_e5m2_to_f32(uint8_t b);      /* OCP e5m2 */
float dt_e4m3fnuz_to_f32(uint8_t b);  /* AMD e4m3fnuz */
float dt_e5m2fnuz_to_f32(uint8_t b);  /* AMD e5m2fnuz */
float dt_e8m0_to_f32(uint8_t b);      /* 2^(b-127); NaN for 0xFF */
float dt_e2m1_to_f32(uint8_t code);   /* low 4 bits used */

/* Encoders (round to nearest even, saturating to the max finite value; used
 * for activation/KV quantization and by the random checkpoint generator). */
uint8_t dt_f32_to_e4m3(float f);
uint8_t dt_f32_to_e4m3fnuz(float f);
uint8_t dt_f32_to_e2m1(float f);

/* Decodes one element of an FP8 type by dtype. Aborts on a non-FP8 dtype:
 * callers select the dtype from a checked tensor, never from a guess. */
float dt_fp8_to_f32(dtype_t t, uint8_t b);

/* Converts `n` elements of any float-like dtype (F32, F16, BF16, the FP8
 * types) to fp32. Returns -1 for dtypes that are not plain floats. */
int dt_to_f32(dtype_t t, const void *src, float *dst, int64_t n);

#endif
