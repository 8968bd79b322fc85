/* Internals of the random checkpoint generator shared by its files: the
 * tensor plan (what to write, mk_plan.c) and the generators that fill rows
 * of a tensor from its random stream (mk_gen.c). */
#ifndef V4_TOOLS_MK_INTERNAL_H
#define V4_TOOLS_MK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/dtype.h"
#include "model/config.h"
#include "util/err.h"

typedef enum mk_gen {
    MK_NORMAL,  /* F32/BF16 elements ~ N(mean, std^2) */
    MK_FP8_W,   /* e4m3 codes of a block-scaled weight */
    MK_FP8_S,   /* its UE8M0 scales, one per 128x128 block */
    MK_FP4_W,   /* packed e2m1 codes of an MXFP4 weight */
    MK_FP4_S,   /* its UE8M0 scales, one per 32 inputs of a row */
    MK_TID2EID, /* k distinct expert ids per token id */
} mk_gen_t;

/* Code tables of a quantized weight, mapping a random byte to a code byte.
 * Each FP8 block (128x128) or MXFP4 group (32 inputs) draws one table and
 * moves its scale to match, so the values keep one distribution while the
 * scales vary from block to block (which exercises the scale indexing).
 * FP8: code[0..2] for scale exponents e-1, e, e+1 (code std 2s, s, s/2).
 * MXFP4: code[0..1] for e, e+1, each byte two e2m1 codes. */
typedef struct mk_lut {
    uint8_t code[3][256];
    bool fp4;
    double rms; /* code-unit RMS of code[0] (FP4) or code[1] (FP8) aimed at */
} mk_lut;

typedef struct mk_tensor {
    char name[96];
    dtype_t dtype; /* as written (MXFP4 as I8) */
    int ndim;
    int64_t shape[2];
    int64_t rows;     /* generation unit: `rows` rows of `row_bytes` */
    size_t row_bytes;
    uint64_t bytes;
    mk_gen_t gen;
    uint64_t key;       /* random stream (seed, name) */
    uint64_t block_key; /* per-block scale choice, shared by a weight and its scale */
    float mean, std;    /* MK_NORMAL */
    int64_t in;         /* FP8/FP4 weights and scales: input dimension of the weight */
    int scale_exp;      /* FP8/FP4: UE8M0 exponent of the middle choice */
    int lut;            /* MK_FP8_W, MK_FP4_W: index into mk_plan.luts */
    int64_t n_experts;  /* MK_TID2EID */
    int shard;          /* 0-based */
} mk_tensor;

typedef struct mk_plan {
    v4_config cfg;
    mk_tensor *t;
    size_t n, cap;
    mk_lut *luts; /* shared by the weights that aim at the same RMS */
    int n_luts;
    uint64_t total; /* data bytes of all tensors */
} mk_plan;

/* Lists every tensor of MODEL.md section 2 for `c` with its generator. */
int mk_plan_build(const v4_config *c, uint64_t seed, mk_plan *p, v4_err *err);
void mk_plan_free(mk_plan *p);

/* Fills rows [r0, r0 + nr) of `t` into `out` (nr * row_bytes bytes). */
void mk_gen_rows(const mk_plan *p, const mk_tensor *t, int64_t r0, int64_t nr, uint8_t *out);

/* The key of a tensor's random stream: a hash of the seed and its name, so
 * a tensor keeps its bytes whatever else the model holds. */
uint64_t mk_name_key(uint64_t seed, const char *name);
/* Builds the tables of `l` for l->fp4 and l->rms. */
void mk_lut_build(mk_lut *l);

#endif
