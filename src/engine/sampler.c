/* The sampler's API (see sampler.h): parameter checks, per-request state,
 * the workspace, and smp_sample, which runs penalties (sampler_penalty.c),
 * greedy or temperature + truncation (sampler_truncate.c) and the raw-model
 * logprobs. */
#include "engine/sampler_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

smp_params smp_params_default(void)
{
    return (smp_params){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
    };
}

int smp_params_check(const smp_params *p, int64_t vocab, v4_err *err)
{
    if (vocab <= 0 || vocab > INT32_MAX)
        return v4_errf(err, "sampler: vocab size %lld out of range", (long long)vocab);
    /* Each message starts with the field's OpenAI / vLLM name (the server
     * reports it as the offending parameter). Written as !(in range) so that
     * NaN fails too. */
    if (!(p->temperature >= 0.0f && p->temperature <= SMP_MAX_TEMPERATURE))
        return v4_errf(err, "temperature is %g, must be in [0, %g]", p->temperature, SMP_MAX_TEMPERATURE);
    if (p->top_k < -1)
        return v4_errf(err, "top_k is %d, must be -1 or 0 (off) or positive", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return v4_errf(err, "top_p is %g, must be in (0, 1]", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return v4_errf(err, "min_p is %g, must be in [0, 1]", p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f))
        return v4_errf(err, "repetition_penalty is %g, must be in (0, 10]", p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return v4_errf(err, "presence_penalty is %g, must be in [-2, 2]", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return v4_errf(err, "frequency_penalty is %g, must be in [-2, 2]", p->frequency_penalty);
    if (p->n_logprobs < 0 || p->n_logprobs > SMP_MAX_LOGPROBS)
        return v4_errf(err, "top_logprobs (n_logprobs) is %d, must be in [0, %d]", p->n_logprobs,
                       SMP_MAX_LOGPROBS);
    return 0;
}

/* ---- workspace ---- */

int smp_workspace_init(smp_workspace *ws, int64_t vocab, v4_err *err)
{
    memset(ws, 0, sizeof *ws);
    if (vocab <= 0 || vocab > INT32_MAX)
        return v4_errf(err, "sampler workspace: vocab size %lld out of range", (long long)vocab);
    size_t v = (size_t)vocab;
    ws->vocab = vocab;
    ws->pen = malloc(v * sizeof *ws->pen);
    ws->e = malloc(v * sizeof *ws->e);
    ws->cand = malloc(v * sizeof *ws->cand);
    ws->cand_e = malloc(v * sizeof *ws->cand_e);
    ws->keys = malloc(v * sizeof *ws->keys);
    ws->keys_tmp = malloc(v * sizeof *ws->keys_tmp);
    ws->blk = malloc((v / SMP_BLOCK + 1) * sizeof *ws->blk);
    if (!ws->pen || !ws->e || !ws->cand || !ws->cand_e || !ws->keys || !ws->keys_tmp || !ws->blk) {
        smp_workspace_free(ws);
        return v4_errf(err, "sampler workspace: out of memory for vocab %lld", (long long)vocab);
    }
    return 0;
}

void smp_workspace_free(smp_workspace *ws)
{
    free(ws->pen);
    free(ws->e);
    free(ws->cand);
    free(ws->cand_e);
    free(ws->keys);
    free(ws->keys_tmp);
    free(ws->blk);
    memset(ws, 0, sizeof *ws);
}

/* ---- per-request state ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A seed no other request of this process gets: a per-process base from the
 * clock and pid, plus a counter times an odd constant (a bijection, so
 * distinct counts give distinct seeds). */
static uint64_t fresh_seed(void)
{
    static _Atomic uint64_t base;
    static _Atomic uint64_t counter;
    uint64_t b = atomic_load(&base);
    if (!b) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)getpid() << 40;
        uint64_t nb = splitmix64(&x) | 1, expected = 0;
        b = atomic_compare_exchange_strong(&base, &expected, nb) ? nb : expected;
    }
    return b + atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull;
}

static void set_bit(uint64_t *bits, int32_t i)
{
    bits[i >> 6] |= 1ull << (i & 63);
}

int smp_state_init(smp_state *st, const smp_params *p, int64_t vocab, const int32_t *prompt_ids,
                   int64_t n_prompt, v4_err *err)
{
    memset(st, 0, sizeof *st);
    if (smp_params_check(p, vocab, err))
        return -1;
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt_ids[i] < 0 || prompt_ids[i] >= vocab)
            return v4_errf(err, "sampler: prompt token %lld is id %d, outside the vocabulary of %lld",
                           (long long)i, prompt_ids[i], (long long)vocab);
    st->vocab = vocab;
    st->seed = p->has_seed ? p->seed : fresh_seed();
    uint64_t x = st->seed;
    for (int i = 0; i < 4; i++)
        st->rng[i] = splitmix64(&x);

    size_t words = (size_t)(vocab + 63) / 64;
    if (p->repetition_penalty != 1.0f) {
        st->seen = calloc(words, sizeof *st->seen);
        if (!st->seen)
            goto oom;
        for (int64_t i = 0; i < n_prompt; i++)
            set_bit(st->seen, prompt_ids[i]);
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        st->out_seen = calloc(words, sizeof *st->out_seen);
        if (!st->out_seen)
            goto oom;
    }
    if (p->frequency_penalty != 0.0f) {
        st->out_count = calloc((size_t)vocab, sizeof *st->out_count);
        if (!st->out_count)
            goto oom;
    }
    return 0;
oom:
    smp_state_free(st);
    return v4_errf(err, "sampler: out of memory for the penalty tables (vocab %lld)", (long long)vocab);
}

void smp_state_free(smp_state *st)
{
    free(st->seen);
    free(st->out_seen);
    free(st->out_count);
    memset(st, 0, sizeof *st);
}

int smp_accept(smp_state *st, int32_t token, v4_err *err)
{
    if (token < 0 || token >= st->vocab)
        return v4_errf(err, "sampler: accepted token id %d outside the vocabulary of %lld", token,
                       (long long)st->vocab);
    if (st->seen)
        set_bit(st->seen, token);
    if (st->out_seen)
        set_bit(st->out_seen, token);
    if (st->out_count && st->out_count[token] < UINT32_MAX)
        st->out_count[token]++;
    return 0;
}

/* ---- sampling ---- */

/* m, the largest logit, leaves something to sample from. */
static int check_max(float m, v4_err *err)
{
    if (m == INFINITY)
        return v4_errf(err, "sampler: a logit is +inf");
    if (m == -INFINITY)
        return v4_errf(err, "sampler: no finite logit (all -inf or NaN)");
    return 0;
}

/* The raw-model logprob of out->token (-inf for an id the logits lack) and
 * the n_top most probable tokens, from the logits' log-sum-exp. */
static void put_logprobs(const float *logits, int64_t vocab, double lse, int n_top, smp_result *out)
{
    const int32_t t = out->token;
    out->logprob = t < vocab && !isnan(logits[t]) ? (float)((double)logits[t] - lse) : -INFINITY;
    out->n_top = smp_k_topn(logits, vocab, n_top, out->top);
    for (int j = 0; j < out->n_top; j++)
        out->top[j].logprob = (float)((double)out->top[j].logprob - lse);
}

int smp_sample(const smp_params *p, smp_state *st, smp_workspace *ws, const float *logits, int64_t vocab,
               smp_result *out, v4_err *err)
{
    if (vocab != st->vocab || vocab != ws->vocab)
        return v4_errf(err, "sampler: logits have %lld entries, state has %lld, workspace %lld", (long long)vocab,
                       (long long)st->vocab, (long long)ws->vocab);
    if ((p->repetition_penalty != 1.0f && !st->seen) ||
        ((p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) && !st->out_seen) ||
        (p->frequency_penalty != 0.0f && !st->out_count))
        return v4_errf(err, "sampler: penalties differ from those the request state was made with");

    const float *x = smp_penalize(p, st, ws, logits, vocab);
    float m = smp_k_max(x, vocab, ws->blk);
    if (check_max(m, err))
        return -1;

    int greedy = p->temperature < SMP_GREEDY_EPS;
    double total = 0;
    if (greedy)
        out->token = (int32_t)smp_k_argmax(x, vocab, ws->blk, m);
    else
        out->token = (int32_t)smp_draw(p, ws, x, vocab, m, smp_rng_u01(st->rng), &total);

    out->n_top = 0;
    out->logprob = NAN;
    if (!p->logprobs && p->n_logprobs == 0)
        return 0;
    /* log-sum-exp of the raw logits; the sampling pass already has it when
     * neither penalties nor temperature changed them. */
    float mr = x == logits ? m : smp_k_max(logits, vocab, ws->blk);
    double sr = total;
    if (x != logits || greedy || p->temperature != 1.0f)
        sr = smp_k_expsum(logits, vocab, mr, 1.0f, NULL, NULL, NULL);
    put_logprobs(logits, vocab, (double)mr + log(sr), p->n_logprobs, out);
    return 0;
}

int smp_score(smp_workspace *ws, const float *logits, int64_t vocab, int32_t token, int n_top, smp_result *out,
              v4_err *err)
{
    if (vocab != ws->vocab)
        return v4_errf(err, "sampler: logits have %lld entries, workspace %lld", (long long)vocab,
                       (long long)ws->vocab);
    if (token < 0 || n_top < 0 || n_top > SMP_MAX_LOGPROBS)
        return v4_errf(err, "sampler: cannot score token %d with %d alternatives", token, n_top);
    float m = smp_k_max(logits, vocab, ws->blk);
    if (check_max(m, err))
        return -1;
    out->token = token;
    put_logprobs(logits, vocab, (double)m + log(smp_k_expsum(logits, vocab, m, 1.0f, NULL, NULL, NULL)), n_top, out);
    return 0;
}
