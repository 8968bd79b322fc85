/* Token sampler of the serving engine (host C, runs on the CPU for every
 * backend). OpenAI / vLLM semantics: penalties -> temperature -> top-k ->
 * top-p -> min-p -> draw from the renormalised distribution.
 *
 * Memory is taken at two moments only, never per sampled token:
 *  - smp_workspace_init, once per sampling thread (an engine usually has one):
 *    scratch sized for the vocabulary (32 bytes per token, 4.1 MB for
 *    129,280), reused by every call of smp_sample on that thread;
 *  - smp_state_init, once per request at admission: the request's generator
 *    and, only when a penalty is on, what the penalty needs (see below).
 * smp_sample and smp_accept never allocate.
 *
 * Penalty bookkeeping (per request, allocated only when the penalty is on):
 *  - repetition: a bitset over the vocabulary of tokens seen in the prompt or
 *    the output (16 KB for vocab 129,280);
 *  - presence/frequency: a bitset of tokens seen in the output, plus for
 *    frequency a uint32 count per vocabulary entry (517 KB). A hash map sized
 *    to max_tokens would be smaller for short answers but needs max_tokens at
 *    admission, a failure path when it fills, and is larger than the flat
 *    array once max_tokens passes ~vocab/4; requests with a frequency penalty
 *    are rare, so the flat array wins on simplicity. Penalised tokens are
 *    found by scanning the bitsets (vocab/64 words, ~1 us).
 *
 * Logprobs (OpenAI logprobs / top_logprobs) are those of the RAW model
 * distribution: log-softmax of the logits before penalties, temperature and
 * truncation. This is vLLM's default (logprobs_mode "raw_logprobs"), and the
 * numbers mean the same thing whatever sampling parameters were used.
 *
 * Determinism: a request's generator (xoshiro256**) lives in its smp_state,
 * seeded from params.seed, or when there is none from a process-wide counter
 * (so no two requests of a process share a stream). The same seed and the same
 * logits give the same tokens whatever else runs, on any x86-64 host (the
 * AVX2 and SSE builds of the passes compute alike). One uniform draw per
 * sampled token; greedy draws none.
 *
 * Cost per call on vocab 129,280 (one Xeon core of an H100 host): greedy
 * ~30 us, temperature + top-p/top-k/min-p ~110-160 us on LM-shaped logits,
 * up to ~1.4 ms on a flat distribution where top-p keeps ~100k tokens. A
 * decode step of 256 sequences wants several sampling threads. */
#ifndef V4_ENGINE_SAMPLER_H
#define V4_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define SMP_MAX_LOGPROBS 20     /* OpenAI top_logprobs limit */
#define SMP_MAX_TEMPERATURE 2.0f /* OpenAI limit */
/* Temperatures below this are greedy (vLLM's _SAMPLING_EPS): dividing by a
 * tinier value only turns ties and near-ties into coin flips. */
#define SMP_GREEDY_EPS 1e-5f

typedef struct smp_params {
    float temperature;        /* [0, 2]; < SMP_GREEDY_EPS = greedy: argmax, ties -> lowest id */
    int32_t top_k;            /* 0 or -1 = off; >= vocab is off too */
    float top_p;              /* (0, 1]; 1 = off */
    float min_p;              /* [0, 1]; 0 = off: drop tokens with p < min_p * p_max */
    float repetition_penalty; /* (0, 10]; 1 = off. Over prompt+output tokens: logit>0 ? logit/r : logit*r */
    float presence_penalty;   /* [-2, 2]; 0 = off. Over output tokens: logit -= presence if count > 0 */
    float frequency_penalty;  /* [-2, 2]; 0 = off. Over output tokens: logit -= frequency * count */
    uint64_t seed;            /* used when has_seed */
    bool has_seed;
    bool logprobs;            /* fill smp_result.logprob (OpenAI "logprobs") */
    int32_t n_logprobs;       /* [0, 20]: top alternatives (OpenAI "top_logprobs"); > 0 implies logprobs */
} smp_params;

/* The defaults of the OpenAI API: temperature 1, everything else off. */
smp_params smp_params_default(void);

/* Checks every field against the ranges above. The message starts with the
 * field's OpenAI / vLLM name ("top_p is 0, must be in (0, 1]";
 * n_logprobs is "top_logprobs"). */
int smp_params_check(const smp_params *p, int64_t vocab, v4_err *err);

typedef struct smp_logprob {
    int32_t id;
    float logprob;
} smp_logprob;

typedef struct smp_result {
    int32_t token;
    float logprob;  /* raw-model logprob of `token`; NAN unless logprobs were asked for */
    int32_t n_top;  /* entries in top: n_logprobs, fewer only if fewer tokens have a finite logit */
    smp_logprob top[SMP_MAX_LOGPROBS]; /* most probable first, ties -> lowest id */
} smp_result;

/* Scratch for one sampling thread, 32 bytes per vocabulary entry. Not shared
 * between threads: an engine that samples a batch on several threads gives
 * each its own (requests keep their own generators, so which thread samples
 * a request changes nothing). smp_sample also uses about 40 KB of stack. */
typedef struct smp_workspace {
    int64_t vocab;
    float *pen;         /* penalised copy of the logits */
    float *e;           /* exp((x - max) / T) per token */
    int32_t *cand;      /* candidate token ids (sampler_truncate.c) */
    float *cand_e;      /* their weights */
    uint64_t *keys;     /* sort keys of the boundary bucket */
    uint64_t *keys_tmp; /* radix scratch */
    float *blk;         /* per-256-token block maxima or sums */
} smp_workspace;

int smp_workspace_init(smp_workspace *ws, int64_t vocab, v4_err *err);
void smp_workspace_free(smp_workspace *ws);

/* Per-request state. */
typedef struct smp_state {
    int64_t vocab;
    uint64_t seed;       /* the seed in use (params.seed or the generated one) */
    uint64_t rng[4];     /* xoshiro256** */
    uint64_t *seen;      /* repetition: tokens of prompt or output; NULL when off */
    uint64_t *out_seen;  /* presence/frequency: tokens of the output; NULL when off */
    uint32_t *out_count; /* frequency: occurrences in the output; NULL when off */
} smp_state;

/* Admits a request: checks params (smp_params_check) and the prompt ids, seeds
 * the generator and allocates the penalty bookkeeping the params need. */
int smp_state_init(smp_state *st, const smp_params *p, int64_t vocab, const int32_t *prompt_ids,
                   int64_t n_prompt, v4_err *err);
void smp_state_free(smp_state *st);

/* Records an output token (the sampled one, or one the engine forced) for the
 * presence/frequency/repetition penalties of the following steps. Call it once
 * for every output token. */
int smp_accept(smp_state *st, int32_t token, v4_err *err);

/* Samples one token from `logits` (vocab floats, not modified). `p` must be
 * the params the state was made with. Logits may be -inf (masked); NaN counts
 * as -inf; +inf, a vocab that differs from the state's or the workspace's, or
 * no finite logit at all are errors. Does not call smp_accept. */
int smp_sample(const smp_params *p, smp_state *st, smp_workspace *ws, const float *logits, int64_t vocab,
               smp_result *out, v4_err *err);

/* Scores a given token instead of sampling one (prompt logprobs): out->token
 * = token, out->logprob its raw-model logprob under `logits` (-inf for an id
 * at or past vocab: the sampler never picks it), and the n_top most probable
 * tokens, as smp_sample reports them. The same errors for the logits as
 * smp_sample. */
int smp_score(smp_workspace *ws, const float *logits, int64_t vocab, int32_t token, int n_top, smp_result *out,
              v4_err *err);

#endif
