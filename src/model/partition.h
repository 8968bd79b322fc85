/* How one model's weights divide over the GPUs of one host: the plan that
 * several-GPU serving follows, printed by `v4serve inspect --gpus N`.
 *
 * Expert parallel: each rank holds a contiguous block of every MoE layer's
 * routed experts (the first E % world ranks one expert more); tokens would
 * travel to their experts' ranks and back by all-to-all. Attention is data
 * parallel (every rank holds all attention weights and serves its own
 * sequences): with one shared K=V head, splitting the 64 query heads over
 * ranks would replicate the whole KV state on each of them anyway. The
 * output head is split by vocabulary rows (each rank scores its slice). The
 * rest (embedding, norms, mHC, shared experts, routers) is replicated. */
#ifndef V4_MODEL_PARTITION_H
#define V4_MODEL_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "model/weights.h"
#include "util/err.h"

#define V4_MAX_GPUS 8 /* the GPUs of one host */

typedef struct v4_partition {
    int world, rank;
    int64_t expert_begin, expert_end; /* routed experts [begin, end) of every layer */
    int64_t vocab_begin, vocab_end;   /* head rows [begin, end) */
} v4_partition;

/* The share of `rank` among `world` GPUs. Errors name the problem: a world
 * outside 1..V4_MAX_GPUS, a rank outside it, fewer experts or vocabulary rows
 * than ranks. */
int partition_plan(const v4_config *c, int world, int rank, v4_partition *p, v4_err *err);

/* The rank that holds routed expert e (0 <= e < n_experts). */
int partition_expert_rank(const v4_config *c, int world, int64_t e);

/* Weight bytes the rank holds, as stored (data and block scales): its
 * experts, its head rows and everything replicated. */
size_t partition_weight_bytes(v4_weights *w, const v4_partition *p);

#endif
