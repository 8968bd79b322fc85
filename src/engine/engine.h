/* The serving engine: continuous batching of requests over the forward
 * pass, within a fixed KV memory budget.
 *
 * Each step mixes decode tokens and prefill chunks under a per-step token
 * budget (so a long prompt never stalls running decodes), admits waiting
 * requests first-come first-served while slots and KV blocks allow, and
 * when blocks run out preempts the most recently admitted request (its
 * state is freed and recomputed later from its prompt and the tokens it
 * already produced, so it finishes with the same output). Sampling runs on
 * the host from each sequence's logits row; a request's output never
 * depends on what else is in the batch.
 *
 * Threads: eng_submit / eng_cancel / eng_stats may be called from any
 * thread; steps run on one thread (eng_step directly, or the engine's own
 * thread after eng_start). Callbacks run on the stepping thread and must not
 * block. Nothing is allocated per step: requests are allocated at submit,
 * everything else at creation. */
#ifndef V4_ENGINE_ENGINE_H
#define V4_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "model/model.h"
#include "util/err.h"

#define ENG_MAX_STOP_IDS 16

typedef struct eng_engine eng_engine;

typedef struct eng_config {
    int max_num_seqs;        /* running sequences (state slots) */
    int max_step_tokens;     /* tokens per step (decode + prefill chunks) */
    int64_t max_model_len;   /* context limit per sequence (prompt + output) */
    int64_t kv_budget_bytes; /* memory for compressed KV blocks; 0: enough for max_num_seqs x max_model_len */
    int max_waiting;         /* queued requests beyond which submit refuses (0: unlimited) */
    int64_t sample_vocab;    /* sample only ids below this (the tokenizer's size when the
                                model's vocabulary is padded beyond it); 0: all */
    int prompt_logit_rows;   /* logit rows a step may add for prompt logprobs (beyond one a
                                sequence): a request's prefill chunks are cut to fit; the
                                host keeps (max_num_seqs + this) rows. 0: prompt logprobs
                                are refused */
} eng_config;

typedef struct eng_req_params {
    smp_params sampling;
    int32_t max_tokens;      /* >= 1 */
    bool ignore_eos;
    bool prompt_logprobs;    /* report every prompt token's logprob through on_prompt_logprob */
    int32_t stop_ids[ENG_MAX_STOP_IDS];
    int n_stop_ids;
} eng_req_params;

typedef enum eng_finish {
    ENG_FINISH_STOP,      /* EOS, a stop token id, or the front end's stop string */
    ENG_FINISH_LENGTH,    /* max_tokens or the context limit */
    ENG_FINISH_CANCELLED, /* eng_cancel */
    ENG_FINISH_ABORTED,   /* shut down before finishing */
    ENG_FINISH_ERROR,
} eng_finish;

typedef struct eng_callbacks {
    /* One generated token. Return nonzero to finish the request now with
     * ENG_FINISH_STOP (a stop string completed, say). */
    int (*on_token)(void *user, int32_t token, const smp_result *r);
    /* With prompt_logprobs: prompt token `pos` (1 <= pos < n_prompt) scored
     * given the tokens before it (raw-model logprob, and the
     * sampling.n_logprobs most probable tokens there; smp_score). Each
     * position once and in order (a preempted request does not repeat
     * them), all before the first on_token. */
    void (*on_prompt_logprob)(void *user, int pos, const smp_result *r);
    /* The request ended; called exactly once, after which the engine forgets it. */
    void (*on_finish)(void *user, eng_finish why, const char *error);
    void *user;
} eng_callbacks;

typedef enum eng_submit_status {
    ENG_OK = 0,
    ENG_BAD_REQUEST = -1,  /* invalid parameters or prompt: the message says which */
    ENG_QUEUE_FULL = -2,   /* max_waiting reached */
    ENG_SHUTTING_DOWN = -3,
} eng_submit_status;

typedef struct eng_stats {
    int running, waiting;
    int64_t kv_blocks_used, kv_blocks_total;
    int64_t prompt_tokens, generated_tokens; /* totals since start */
    int64_t preemptions, steps;
    int64_t finished[ENG_FINISH_ERROR + 1];
} eng_stats;

int eng_create(v4_model *m, const eng_config *cfg, eng_engine **out, v4_err *err);
void eng_destroy(eng_engine *e);

/* Queues a request; *id receives its id. The prompt is copied. */
eng_submit_status eng_submit(eng_engine *e, const int32_t *prompt, int n_prompt, const eng_req_params *p,
                             const eng_callbacks *cb, uint64_t *id, v4_err *err);
/* Cancels a request (its on_finish fires at the next step); unknown ids are ignored. */
void eng_cancel(eng_engine *e, uint64_t id);

/* One step on the calling thread: returns the sequences that ran (0 when
 * idle), -1 on a backend failure (every request is then finished with
 * ENG_FINISH_ERROR). */
int eng_step(eng_engine *e, v4_err *err);

/* Runs steps on the engine's own thread until eng_shutdown. */
int eng_start(eng_engine *e, v4_err *err);
/* Stops accepting, lets in-flight requests finish for up to deadline_s
 * seconds, aborts the rest, stops the thread. */
void eng_shutdown(eng_engine *e, double deadline_s);

void eng_get_stats(eng_engine *e, eng_stats *s);
int64_t eng_max_model_len(const eng_engine *e);
int64_t eng_vocab(const eng_engine *e);

#endif
