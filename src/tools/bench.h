/* The offline benchmark behind `v4serve bench`: synthetic requests driven
 * straight through the forward pass (no HTTP, no host sampling), measured
 * against the roofline of the same work on the same device. */
#ifndef V4_TOOLS_BENCH_H
#define V4_TOOLS_BENCH_H

#include <stdio.h>

#include "model/forward.h"
#include "model/model.h"
#include "tools/roofline.h"

#define BENCH_MAX_OPS 48 /* distinct op names a profile keeps (the forward pass has about 33) */

typedef struct bench_opts {
    int concurrency;    /* sequences decoding together */
    int input_len;      /* prompt tokens per sequence */
    int output_len;     /* decode steps */
    int prefill_chunk;  /* tokens per prefill step */
    int full_layers;    /* layers of the model the projection is for (43) */
    int n_runs;         /* decode runs a session will hold (one per concurrency) */
    unsigned seed;
} bench_opts;

typedef struct bench_result {
    bench_opts o;
    double prefill_s, prefill_tok_s;
    double decode_s, decode_tok_s;
    double step_ms_mean, itl_ms_p50, itl_ms_p90, itl_ms_p99;
    double ttft_ms_p50, ttft_ms_p90, ttft_ms_p99;
    double fam_ms[FAM_COUNT], prof_ms; /* one eager decode step, by op family */
    fwd_op_time ops[BENCH_MAX_OPS];    /* ... and by op, slowest first */
    int n_ops;
    double experts;                    /* distinct experts per layer (expected, uniform routing) */
    roof_bytes need;                   /* bytes and FLOPs a decode step must move and do */
    double roof_ms;                    /* need.total / measured copy bandwidth */
    double roof_ratio;                 /* roof_ms / step_ms_mean */
    double flop_ratio;                 /* achieved FLOP rate / measured FP8 GEMM rate */
    double proj_step_ms, proj_tok_s;   /* projection to full_layers (labelled a projection) */
} bench_result;

/* A session prefills max_c prompts of input_len tokens once (all arriving
 * together: that is the TTFT reported); each decode run then takes the
 * first c sequences (c <= max_c) for output_len steps. */
typedef struct bench_session bench_session;
int bench_session_open(v4_model *m, const bench_opts *o, int max_c, bench_session **out, v4_err *err);
void bench_session_free(bench_session *b);
double bench_session_prefill_s(const bench_session *b);
/* Decode benchmark at concurrency c. */
int bench_decode(bench_session *b, int c, const v4_peaks *pk, bench_result *r, v4_err *err);

typedef struct bench_prefill_result {
    int tokens, chunk;
    double seconds, tok_s, tflops;
    double flop_ratio, bf16_ratio; /* achieved / the measured FP8 and bf16 GEMM rates */
    double fam_flops[FAM_COUNT]; /* the prompt's FLOPs by op family (roofline.h) */
    /* one more pass over the prompt, eager and profiled: time by op family
     * and by op (slowest first), summed over its chunks */
    double fam_ms[FAM_COUNT], prof_ms;
    fwd_op_time ops[BENCH_MAX_OPS];
    int n_ops;
} bench_prefill_result;

/* One sequence of `tokens` prompt tokens prefilled in chunks: timed (after
 * a warm-up pass), then profiled. */
int bench_prefill(v4_model *m, int tokens, int chunk, const v4_peaks *pk, bench_prefill_result *r, v4_err *err);
void bench_print_prefill(FILE *f, const bench_prefill_result *r);
void bench_write_prefill_json(FILE *f, const char *device, const v4_config *c, const v4_peaks *pk,
                              const bench_prefill_result *r);

void bench_print_header(FILE *f);
void bench_print_row(FILE *f, const bench_result *r);
void bench_write_json(FILE *f, const char *device, const v4_config *c, const v4_peaks *pk, const bench_result *r);
/* Tokens/s against concurrency with the roofline drawn, as SVG. */
int bench_write_svg(const char *path, const char *title, const bench_result *rs, int n, v4_err *err);

#endif
