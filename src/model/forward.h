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

const kv_geom *fwd_geom(const v4_forward *f);

#endif
