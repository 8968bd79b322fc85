/* Golden-vector check; see golden.h. */
#include "tools/golden.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "model/forward.h"

int golden_load(const char *path, golden *g, v4_err *err)
{
    memset(g, 0, sizeof *g);
    st_archive *a;
    if (st_open(path, &a, err))
        return -1;
    g->archive = a;
    const st_tensor *ids = st_find(a, "token_ids"), *pl = st_find(a, "prompt_len"), *lg = st_find(a, "logits");
    if (!ids || ids->dtype != DT_I32 || ids->ndim != 1)
        return golden_free(g), v4_errf(err, "%s: needs an I32 [n] tensor 'token_ids'", path);
    if (!pl || pl->dtype != DT_I32 || pl->nelem != 1)
        return golden_free(g), v4_errf(err, "%s: needs an I32 [1] tensor 'prompt_len'", path);
    if (!lg || lg->dtype != DT_F32 || lg->ndim != 2 || lg->shape[0] != ids->shape[0])
        return golden_free(g), v4_errf(err, "%s: needs an F32 [n, vocab] tensor 'logits'", path);
    g->tokens = (const int32_t *)ids->data;
    g->n_tokens = ids->shape[0];
    int32_t p;
    memcpy(&p, pl->data, 4);
    g->prompt_len = p;
    g->logits = (const float *)lg->data;
    g->vocab = lg->shape[1];
    if (g->prompt_len < 1 || g->prompt_len > g->n_tokens)
        return golden_free(g), v4_errf(err, "%s: prompt_len %lld outside 1..%lld", path, (long long)g->prompt_len,
                                       (long long)g->n_tokens);
    return 0;
}

void golden_free(golden *g)
{
    st_close(g->archive);
    g->archive = NULL;
}

static int64_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* positions_over and median_rel from each position's max |diff| (sorted in place). */
static void summarize_positions(double *pos_diff, int64_t n, double bound, golden_result *r)
{
    const double scale = r->max_abs_logit > 0 ? r->max_abs_logit : 1.0;
    r->positions = n;
    for (int64_t p = 0; p < n; p++)
        r->positions_over += !(pos_diff[p] / scale <= bound); /* NaN counts as over */
    qsort(pos_diff, (size_t)n, sizeof *pos_diff, cmp_double);
    r->median_rel = (n % 2 ? pos_diff[n / 2] : 0.5 * (pos_diff[n / 2 - 1] + pos_diff[n / 2])) / scale;
}

int golden_run(const char *model_dir, v4_backend *be, const golden *g, int chunk, double bound, golden_result *r,
               v4_err *err)
{
    memset(r, 0, sizeof *r);
    v4_model *m;
    if (model_open(model_dir, be, &m, err))
        return -1;
    int rc = -1;
    v4_forward *f = NULL;
    float *logits = NULL;
    int32_t *blocks = NULL;
    double *pos_diff = NULL;
    if (m->cfg.vocab_size != g->vocab) {
        v4_errf(err, "golden vocabulary %lld != model vocabulary %lld", (long long)g->vocab,
                (long long)m->cfg.vocab_size);
        goto out;
    }
    const int64_t T = g->n_tokens;
    const int step = chunk > 0 ? chunk : (int)T;
    kv_geom geom;
    if (kv_geom_init(&geom, &m->cfg, 1, 1, T, err))
        goto out;
    geom.n_blocks = geom.max_blocks_per_seq;
    if (fwd_create(m, &geom, step, &f, err))
        goto out;
    logits = malloc((size_t)step * g->vocab * sizeof(float));
    blocks = malloc((size_t)geom.max_blocks_per_seq * sizeof(int32_t));
    pos_diff = calloc((size_t)T, sizeof *pos_diff);
    if (!logits || !blocks || !pos_diff) {
        v4_errf(err, "out of memory");
        goto out;
    }
    for (int64_t b = 0; b < geom.max_blocks_per_seq; b++)
        blocks[b] = (int32_t)b;
    for (int64_t pos = 0; pos < T; pos += step) {
        int n = (int)(T - pos < step ? T - pos : step);
        v4_seq_batch sb = {.slot = 0, .start_pos = pos, .n_tokens = n, .tokens = g->tokens + pos,
                           .block_table = blocks,
                           .n_blocks = (int32_t)((pos + n + geom.block_tokens - 1) / geom.block_tokens),
                           .all_logits = true};
        if (fwd_step(f, &sb, 1, logits, err))
            goto out;
        for (int t = 0; t < n; t++) {
            const int64_t p = pos + t;
            const float *ours = logits + (int64_t)t * g->vocab, *ref = g->logits + p * g->vocab;
            for (int64_t v = 0; v < g->vocab; v++) {
                double d = fabs((double)ours[v] - ref[v]);
                if (!(d <= pos_diff[p])) /* NaN also lands here */
                    pos_diff[p] = isnan(d) ? INFINITY : d;
                if (fabs(ref[v]) > r->max_abs_logit)
                    r->max_abs_logit = fabs(ref[v]);
            }
            if (pos_diff[p] > r->max_abs_diff) {
                r->max_abs_diff = pos_diff[p];
                r->worst_pos = p;
            }
            if (p >= g->prompt_len - 1 && p + 1 < T) {
                r->greedy_total++;
                r->greedy_match += argmax(ours, g->vocab) == g->tokens[p + 1];
            }
        }
    }
    r->rel_err = r->max_abs_logit > 0 ? r->max_abs_diff / r->max_abs_logit : r->max_abs_diff;
    summarize_positions(pos_diff, T, bound, r);
    rc = 0;
out:
    free(pos_diff);
    free(logits);
    free(blocks);
    fwd_destroy(f);
    model_close(m);
    return rc;
}
