/* What a decode or prefill step must move through memory and compute, from
 * the model's shapes alone: the roofline that `v4serve bench` compares its
 * measurements with. Bytes count each weight a step touches once (routed
 * experts: only the distinct experts the step's tokens chose), the KV state
 * the step reads, and the KV state it writes; FLOPs count 2 per
 * multiply-add of the matrix products and attention, split by the op
 * families the forward pass profiles (model/forward.h), so that a measured
 * family's time gives its FLOP rate. */
#ifndef V4_TOOLS_ROOFLINE_H
#define V4_TOOLS_ROOFLINE_H

#include <stdint.h>

#include "model/config.h"
#include "model/forward.h"

typedef struct roof_bytes {
    double attn_weights;   /* q/kv/o projections, compressors, indexer projections */
    double moe_weights;    /* gate, shared expert, distinct routed experts */
    double other_weights;  /* mHC, norms, embedding rows, head */
    double kv_read;
    double kv_write;
    double total;
    double flops;
    /* flops by family: dense GEMMs (projections, gate, shared expert),
     * attention (scores and weighted values), indexer (its scores), MoE
     * (routed experts), head, other (mHC mixing) */
    double fam_flops[FAM_COUNT];
} roof_bytes;

/* Expected distinct experts when `tokens` tokens each pick k of E uniformly. */
double roof_expected_experts(int64_t E, int64_t k, int64_t tokens);

/* A decode step of `batch` sequences, each at context `ctx` (tokens already
 * in the state), with `distinct_experts` per layer (use
 * roof_expected_experts when not measured) and KV stored at `kv_bytes` per
 * channel. */
roof_bytes roof_decode_step(const v4_config *c, int64_t batch, int64_t ctx, double distinct_experts, int kv_bytes);

/* A prefill chunk of `tokens` tokens of one sequence starting at `start`. */
roof_bytes roof_prefill_chunk(const v4_config *c, int64_t tokens, int64_t start, double distinct_experts,
                              int kv_bytes);

#endif
