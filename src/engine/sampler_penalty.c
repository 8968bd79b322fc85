/* Repetition, frequency and presence penalties, in vLLM's order and with its
 * arithmetic (vllm/model_executor/layers/utils.py apply_penalties):
 *   repetition, once per token of prompt or output: x > 0 ? x / r : x * r
 *   then over output tokens:                          x -= frequency * count
 *                                                     x -= presence
 * The caller's logits stay untouched: they are copied into the workspace and
 * the penalised tokens, found by scanning the request's bitsets one 64-bit
 * word at a time, are patched there. */
#include "engine/sampler_internal.h"

#include <string.h>

const float *smp_penalize(const smp_params *p, const smp_state *st, smp_workspace *ws, const float *logits,
                          int64_t vocab)
{
    int rep = p->repetition_penalty != 1.0f;
    int out = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !out)
        return logits;
    float *x = ws->pen;
    memcpy(x, logits, (size_t)vocab * sizeof(float));
    int64_t words = (vocab + 63) / 64;
    if (rep) {
        float r = p->repetition_penalty;
        for (int64_t w = 0; w < words; w++)
            for (uint64_t bits = st->seen[w]; bits; bits &= bits - 1) {
                int64_t i = w * 64 + __builtin_ctzll(bits);
                x[i] = x[i] > 0 ? x[i] / r : x[i] * r;
            }
    }
    if (out) {
        float f = p->frequency_penalty, pr = p->presence_penalty;
        for (int64_t w = 0; w < words; w++)
            for (uint64_t bits = st->out_seen[w]; bits; bits &= bits - 1) {
                int64_t i = w * 64 + __builtin_ctzll(bits);
                if (st->out_count)
                    x[i] -= f * (float)st->out_count[i];
                x[i] -= pr;
            }
    }
    return x;
}
