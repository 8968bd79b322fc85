/* The DeepSeek-V4-Flash forward pass over a batch of sequences, written once
 * against the backend ops (backend/backend.h).
 *
 * A step takes several sequences, each with a prefill chunk or one decode
 * token; each sequence's tokens continue the state in its slot and blocks.
 * The result for a sequence equals running it alone. */
#ifndef V4_MODEL_FORWARD_H
#define V4_MODEL_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/kv_layout.h"
#include "model/model.h"

typedef struct v4_seq_batch {
    int32_t slot;              /* state slot, owned by this sequence */
    int64_t start_pos;         /* tokens already in the state */
    int32_t n_tokens;          /* tokens of this step (>= 1) */
    const int32_t *tokens;     /* [n_tokens] */
    const int32_t *block_table;/* block ids covering positions < start_pos + n_tokens */
    int32_t n_blocks;          /* entries in block_table */
    bool all_logits;           /* logits for every token; else only for the last */
} v4_seq_batch;

typedef struct v4_forward v4_forward;

/* Allocates activations for steps of up to max_tokens tokens and the KV
 * storage of geometry g in the model's backend. */
int fwd_create(v4_model *m, const kv_geom *g, int max_tokens, v4_forward **out, v4_err *err);
void fwd_destroy(v4_forward *f);

/* Rows of logits a step returns: per sequence, n_tokens or 1. */
int fwd_logit_rows(const v4_seq_batch *seqs, int n_seqs);

/* Runs one step; writes fwd_logit_rows() rows of vocab_size logits to the
 * host array `logits`, sequences in order. */
int fwd_step(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, float *logits, v4_err *err);

/* Like fwd_step, but samples one token per sequence on the device (the
 * backend's `sample` op, params[s] per sequence) and returns only the ids,
 * so a step moves a few bytes to the host instead of the logits. */
int fwd_step_sample(v4_forward *f, const v4_seq_batch *seqs, int n_seqs, const v4_sample_params *params,
                    int32_t *ids, v4_err *err);

const kv_geom *fwd_geom(const v4_forward *f);

/* Profiles of eager steps: time per op family of the last step. */
typedef enum fwd_family {
    FAM_DENSE,     /* linear layers of attention, compressors, indexer, gate, shared expert */
    FAM_ATTENTION, /* attention, compressors, window ring */
    FAM_INDEXER,   /* indexer scores and top-k */
    FAM_MOE,       /* routing and routed experts */
    FAM_HEAD,      /* the lm_head */
    FAM_OTHER,     /* norms, rope, mHC, embedding, element-wise */
    FAM_COUNT,
    FAM_END = FAM_COUNT /* closing mark */
} fwd_family;
extern const char *const FWD_FAMILY_NAMES[FAM_COUNT];

/* Profiling records a timer mark wherever the op family changes (eager
 * steps; graph replays are not profiled). */
void fwd_set_profile(v4_forward *f, bool on);
/* Milliseconds per family and in all of the last profiled step. */
int fwd_profile(v4_forward *f, double ms[FAM_COUNT], double *total_ms);

/* Milliseconds per op of the last profiled step, summed over its calls;
 * returns how many distinct ops (at most max). */
typedef struct fwd_op_time {
    const char *name;
    fwd_family family;
    double ms;
    int calls;
} fwd_op_time;
int fwd_profile_ops(v4_forward *f, fwd_op_time *out, int max);

#endif
