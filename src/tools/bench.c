/* Offline benchmark; see bench.h. */
#include "tools/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

/* Ops listed in the printed split (the JSON has all of them). */
#define BENCH_OPS_SHOWN 14

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(p / 100.0 * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int slower_first(const void *a, const void *b)
{
    double x = ((const fwd_op_time *)a)->ms, y = ((const fwd_op_time *)b)->ms;
    return (x < y) - (x > y);
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

struct bench_session {
    v4_model *m;
    bench_opts o;
    int max_c, len;
    kv_geom g;
    v4_forward *f;
    int32_t *tokens, *blocks, *ids, *done;
    v4_seq_batch *batch;
    v4_sample_params *sp; /* all zero: greedy (the benchmark measures the model, not the sampler) */
    double *ttft, *itl;
    int *owner;
    double prefill_s;
};

void bench_session_free(bench_session *b)
{
    if (!b)
        return;
    fwd_destroy(b->f);
    free(b->tokens);
    free(b->blocks);
    free(b->ids);
    free(b->done);
    free(b->batch);
    free(b->sp);
    free(b->ttft);
    free(b->itl);
    free(b->owner);
    free(b);
}

double bench_session_prefill_s(const bench_session *b) { return b->prefill_s; }

int bench_session_open(v4_model *m, const bench_opts *o, int max_c, bench_session **out, v4_err *err)
{
    *out = NULL;
    bench_session *b = calloc(1, sizeof *b);
    if (!b)
        return v4_errf(err, "out of memory");
    b->m = m;
    b->o = *o;
    b->max_c = max_c;
    /* room for the prompt and every decode run */
    b->len = o->input_len + o->output_len * (o->n_runs + 1) + 1;
    const int c = max_c, len = b->len;
    if (kv_geom_init(&b->g, &m->cfg, 1, c, len, err))
        goto fail;
    b->g.n_blocks = (int64_t)c * b->g.max_blocks_per_seq;
    int max_tokens = o->prefill_chunk > c ? o->prefill_chunk : c;
    if (fwd_create(m, &b->g, max_tokens, &b->f, err))
        goto fail;
    b->tokens = malloc((size_t)c * len * sizeof *b->tokens);
    b->blocks = malloc((size_t)b->g.n_blocks * sizeof *b->blocks);
    b->ids = malloc((size_t)max_tokens * sizeof *b->ids);
    b->done = calloc((size_t)c, sizeof *b->done);
    b->batch = calloc((size_t)c, sizeof *b->batch);
    b->sp = calloc((size_t)max_tokens, sizeof *b->sp);
    b->ttft = malloc((size_t)c * sizeof *b->ttft);
    b->itl = malloc((size_t)(o->output_len + 1) * sizeof *b->itl);
    b->owner = malloc((size_t)c * sizeof *b->owner);
    if (!b->tokens || !b->blocks || !b->ids || !b->done || !b->batch || !b->sp || !b->ttft || !b->itl || !b->owner) {
        v4_errf(err, "out of memory");
        goto fail;
    }
    uint32_t s = o->seed ? o->seed : 1;
    for (int64_t i = 0; i < (int64_t)c * len; i++)
        b->tokens[i] = (int32_t)(lcg(&s) % (uint32_t)m->cfg.vocab_size);
    for (int64_t i = 0; i < b->g.n_blocks; i++)
        b->blocks[i] = (int32_t)i;

    /* prefill every prompt: all arrive at once, packed into steps of up to
     * prefill_chunk tokens */
    double t0 = now_s();
    for (;;) {
        int nb = 0, budget = o->prefill_chunk;
        for (int q = 0; q < c && budget > 0; q++) {
            if (b->done[q] >= o->input_len)
                continue;
            int n = o->input_len - b->done[q] < budget ? o->input_len - b->done[q] : budget;
            b->batch[nb] = (v4_seq_batch){.slot = q, .start_pos = b->done[q], .n_tokens = n,
                                          .tokens = b->tokens + (int64_t)q * len + b->done[q],
                                          .block_table = b->blocks + (int64_t)q * b->g.max_blocks_per_seq,
                                          .n_blocks = (int32_t)b->g.max_blocks_per_seq};
            b->owner[nb++] = q;
            budget -= n;
        }
        if (!nb)
            break;
        if (fwd_step_sample(b->f, b->batch, nb, b->sp, b->ids, err))
            goto fail;
        double t = now_s() - t0;
        for (int k = 0; k < nb; k++) {
            int q = b->owner[k];
            b->done[q] += b->batch[k].n_tokens;
            if (b->done[q] == o->input_len) {
                b->ttft[q] = t * 1e3;
                b->tokens[(int64_t)q * len + b->done[q]] = b->ids[k];
            }
        }
    }
    b->prefill_s = now_s() - t0;
    *out = b;
    return 0;
fail:
    bench_session_free(b);
    return -1;
}

int bench_decode(bench_session *b, int c, const v4_peaks *pk, bench_result *r, v4_err *err)
{
    memset(r, 0, sizeof *r);
    const bench_opts *o = &b->o;
    r->o = *o;
    r->o.concurrency = c;
    if (c > b->max_c)
        return v4_errf(err, "concurrency %d above the session's %d", c, b->max_c);
    v4_model *m = b->m;
    const int len = b->len;
    r->prefill_s = b->prefill_s;
    r->prefill_tok_s = (double)b->max_c * o->input_len / b->prefill_s;
    r->ttft_ms_p50 = pct(b->ttft, b->max_c, 50);
    r->ttft_ms_p90 = pct(b->ttft, b->max_c, 90);
    r->ttft_ms_p99 = pct(b->ttft, b->max_c, 99);
    for (int q = 0; q < c; q++)
        b->batch[q] = (v4_seq_batch){.slot = q, .n_tokens = 1,
                                     .block_table = b->blocks + (int64_t)q * b->g.max_blocks_per_seq,
                                     .n_blocks = (int32_t)b->g.max_blocks_per_seq};
    int64_t ctx0 = b->done[0];
    double td = 0;
    /* the first step of a new batch size captures its graph: not timed */
    for (int step = -1; step < o->output_len; step++) {
        if (b->done[0] + 1 >= len)
            return v4_errf(err, "bench session out of context (%d tokens)", len);
        double ts = now_s();
        for (int q = 0; q < c; q++) {
            b->batch[q].start_pos = b->done[q];
            b->batch[q].tokens = b->tokens + (int64_t)q * len + b->done[q];
        }
        if (fwd_step_sample(b->f, b->batch, c, b->sp, b->ids, err))
            return -1;
        for (int q = 0; q < c; q++)
            b->tokens[(int64_t)q * len + ++b->done[q]] = b->ids[q];
        if (step >= 0) {
            b->itl[step] = (now_s() - ts) * 1e3;
            td += b->itl[step] * 1e-3;
        }
    }
    r->decode_s = td;
    r->decode_tok_s = (double)c * o->output_len / td;
    r->step_ms_mean = td * 1e3 / o->output_len;
    r->itl_ms_p50 = pct(b->itl, o->output_len, 50);
    r->itl_ms_p90 = pct(b->itl, o->output_len, 90);
    r->itl_ms_p99 = pct(b->itl, o->output_len, 99);

    /* one more decode step, eager and profiled by op family */
    for (int q = 0; q < c; q++) {
        b->batch[q].start_pos = b->done[q];
        b->batch[q].tokens = b->tokens + (int64_t)q * len + b->done[q];
    }
    fwd_set_profile(b->f, true);
    int rc = fwd_step_sample(b->f, b->batch, c, b->sp, b->ids, err);
    fwd_set_profile(b->f, false);
    if (rc)
        return -1;
    for (int q = 0; q < c; q++)
        b->tokens[(int64_t)q * len + ++b->done[q]] = b->ids[q];
    fwd_profile(b->f, r->fam_ms, &r->prof_ms);
    r->n_ops = fwd_profile_ops(b->f, r->ops, BENCH_MAX_OPS);
    qsort(r->ops, (size_t)r->n_ops, sizeof *r->ops, slower_first);

    /* roofline of an average decode step of this run */
    const int64_t ctx = ctx0 + o->output_len / 2;
    r->experts = roof_expected_experts(m->cfg.n_experts, m->cfg.n_active, c);
    r->need = roof_decode_step(&m->cfg, c, ctx, r->experts, m->be->kv_elem_bytes);
    r->roof_ms = r->need.total / (pk->copy_gbps * 1e9) * 1e3;
    r->roof_ratio = r->roof_ms / r->step_ms_mean;
    r->flop_ratio = r->need.flops / (r->step_ms_mean * 1e-3) / (pk->fp8_tflops * 1e12);
    /* projection: layers scale, the head does not */
    double head_ms = r->prof_ms > 0 ? r->step_ms_mean * r->fam_ms[FAM_HEAD] / r->prof_ms : 0;
    r->proj_step_ms = (r->step_ms_mean - head_ms) / m->cfg.n_layers * o->full_layers + head_ms;
    r->proj_tok_s = c / (r->proj_step_ms * 1e-3);
    return 0;
}

/* Adds k op times into acc (n distinct names so far, at most max). */
static void add_op_times(fwd_op_time *acc, int *n, int max, const fwd_op_time *add, int k)
{
    for (int i = 0; i < k; i++) {
        int j = 0;
        while (j < *n && strcmp(acc[j].name, add[i].name) != 0)
            j++;
        if (j == *n) {
            if (*n == max)
                continue;
            acc[(*n)++] = (fwd_op_time){.name = add[i].name, .family = add[i].family};
        }
        acc[j].ms += add[i].ms;
        acc[j].calls += add[i].calls;
    }
}

int bench_prefill(v4_model *m, int tokens, int chunk, const v4_peaks *pk, bench_prefill_result *r, v4_err *err)
{
    memset(r, 0, sizeof *r);
    r->tokens = tokens;
    r->chunk = chunk;
    kv_geom g;
    if (kv_geom_init(&g, &m->cfg, 1, 1, tokens + 1, err))
        return -1;
    g.n_blocks = g.max_blocks_per_seq;
    v4_forward *f = NULL;
    if (fwd_create(m, &g, chunk, &f, err))
        return -1;
    int rc = -1;
    int32_t *tok = malloc((size_t)tokens * sizeof *tok), *blocks = malloc((size_t)g.n_blocks * sizeof *blocks), id;
    v4_sample_params sp = {0};
    if (!tok || !blocks) {
        v4_errf(err, "out of memory");
        goto out;
    }
    uint32_t s = 7;
    for (int i = 0; i < tokens; i++)
        tok[i] = (int32_t)(lcg(&s) % (uint32_t)m->cfg.vocab_size);
    for (int64_t b = 0; b < g.n_blocks; b++)
        blocks[b] = (int32_t)b;
    for (int pos = 0; pos < tokens; pos += chunk) {
        int n = tokens - pos < chunk ? tokens - pos : chunk;
        double ex = roof_expected_experts(m->cfg.n_experts, m->cfg.n_active, n);
        roof_bytes need = roof_prefill_chunk(&m->cfg, n, pos, ex, m->be->kv_elem_bytes);
        for (int i = 0; i < FAM_COUNT; i++)
            r->fam_flops[i] += need.fam_flops[i];
    }
    /* pass 0 warms up, pass 1 is timed, pass 2 is profiled */
    for (int pass = 0; pass < 3; pass++) {
        fwd_set_profile(f, pass == 2);
        double t0 = now_s();
        for (int pos = 0; pos < tokens; pos += chunk) {
            int n = tokens - pos < chunk ? tokens - pos : chunk;
            v4_seq_batch b = {.slot = 0, .start_pos = pos, .n_tokens = n, .tokens = tok + pos, .block_table = blocks,
                              .n_blocks = (int32_t)g.n_blocks};
            if (fwd_step_sample(f, &b, 1, &sp, &id, err))
                goto out;
            if (pass == 2) {
                double fam[FAM_COUNT], total;
                fwd_op_time ops[BENCH_MAX_OPS];
                if (fwd_profile(f, fam, &total) == 0) {
                    for (int i = 0; i < FAM_COUNT; i++)
                        r->fam_ms[i] += fam[i];
                    r->prof_ms += total;
                }
                add_op_times(r->ops, &r->n_ops, BENCH_MAX_OPS, ops, fwd_profile_ops(f, ops, BENCH_MAX_OPS));
            }
        }
        if (pass == 1)
            r->seconds = now_s() - t0;
    }
    qsort(r->ops, (size_t)r->n_ops, sizeof *r->ops, slower_first);
    double flops = 0;
    for (int i = 0; i < FAM_COUNT; i++)
        flops += r->fam_flops[i];
    r->tok_s = tokens / r->seconds;
    r->tflops = flops / r->seconds / 1e12;
    r->flop_ratio = r->tflops / pk->fp8_tflops;
    r->bf16_ratio = r->tflops / pk->bf16_tflops;
    rc = 0;
out:
    fwd_set_profile(f, false);
    fwd_destroy(f);
    free(tok);
    free(blocks);
    return rc;
}

/* Ends a split line with the slowest ops of a profile (sorted slowest first). */
static void print_slowest_ops(FILE *f, const fwd_op_time *ops, int n)
{
    fprintf(f, "\n      slowest ops (ms, calls):");
    for (int i = 0; i < n && i < BENCH_OPS_SHOWN; i++)
        fprintf(f, " %s %.2f/%d", ops[i].name, ops[i].ms, ops[i].calls);
    fprintf(f, "\n");
}

void bench_print_prefill(FILE *f, const bench_prefill_result *r)
{
    fprintf(f,
            "prefill of one %d-token prompt in chunks of %d: %.3f s, %.0f tokens/s, %.1f TFLOP/s = %.1f%% of the "
            "measured FP8 GEMM rate (%.1f%% of the bf16 one)\n",
            r->tokens, r->chunk, r->seconds, r->tok_s, r->tflops, 100 * r->flop_ratio, 100 * r->bf16_ratio);
    fprintf(f, "      split of one eager prefill (%.2f ms; ms, TFLOP/s where the family computes):", r->prof_ms);
    for (int i = 0; i < FAM_COUNT; i++) {
        fprintf(f, " %s %.2f", FWD_FAMILY_NAMES[i], r->fam_ms[i]);
        if (r->fam_flops[i] > 0 && r->fam_ms[i] > 0)
            fprintf(f, " (%.1f)", r->fam_flops[i] / (r->fam_ms[i] * 1e-3) / 1e12);
    }
    print_slowest_ops(f, r->ops, r->n_ops);
}

void bench_print_header(FILE *f)
{
    fprintf(f, "%5s %6s %6s | %10s %10s | %8s %8s %8s | %8s %8s | %9s %8s %6s | %10s\n", "conc", "in", "out",
            "prefill/s", "decode/s", "step ms", "itl p50", "itl p99", "ttft p50", "ttft p99", "GB/step", "roof ms",
            "ratio", "proj tok/s");
}

void bench_print_row(FILE *f, const bench_result *r)
{
    fprintf(f, "%5d %6d %6d | %10.0f %10.1f | %8.2f %8.2f %8.2f | %8.0f %8.0f | %9.2f %8.2f %5.1f%% | %10.0f\n",
            r->o.concurrency, r->o.input_len, r->o.output_len, r->prefill_tok_s, r->decode_tok_s, r->step_ms_mean,
            r->itl_ms_p50, r->itl_ms_p99, r->ttft_ms_p50, r->ttft_ms_p99, r->need.total / 1e9, r->roof_ms,
            100 * r->roof_ratio, r->proj_tok_s);
    fprintf(f, "      split of one eager decode step (%.2f ms):", r->prof_ms);
    for (int i = 0; i < FAM_COUNT; i++)
        fprintf(f, " %s %.2f", FWD_FAMILY_NAMES[i], r->fam_ms[i]);
    print_slowest_ops(f, r->ops, r->n_ops);
}

/* A JSON number, or null where the value is not finite (a CPU backend has
 * no GEMM rate to measure; jansson refuses NaN). */
static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* {family name: values[i]} */
static json_t *by_family(const double v[FAM_COUNT])
{
    json_t *o = json_object();
    for (int i = 0; i < FAM_COUNT; i++)
        json_object_set_new(o, FWD_FAMILY_NAMES[i], jnum(v[i]));
    return o;
}

static json_t *by_op(const fwd_op_time *ops, int n)
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(o, ops[i].name, jnum(ops[i].ms));
    return o;
}

/* One line of JSON (objects keep their order), then freed. */
static void write_line(FILE *f, json_t *o)
{
    json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    fputc('\n', f);
    json_decref(o);
}

void bench_write_json(FILE *f, const char *device, const v4_config *c, const v4_peaks *pk, const bench_result *r)
{
    json_t *o = json_pack("{s:s, s:I, s:i, s:i, s:i}", "device", device, "layers", (json_int_t)c->n_layers,
                          "concurrency", r->o.concurrency, "input_len", r->o.input_len, "output_len", r->o.output_len);
    json_object_set_new(o, "prefill_tok_s", jnum(r->prefill_tok_s));
    json_object_set_new(o, "decode_tok_s", jnum(r->decode_tok_s));
    json_object_set_new(o, "step_ms", jnum(r->step_ms_mean));
    json_object_set_new(o, "itl_ms", json_pack("{s:o, s:o, s:o}", "p50", jnum(r->itl_ms_p50), "p90",
                                               jnum(r->itl_ms_p90), "p99", jnum(r->itl_ms_p99)));
    json_object_set_new(o, "ttft_ms", json_pack("{s:o, s:o, s:o}", "p50", jnum(r->ttft_ms_p50), "p90",
                                                jnum(r->ttft_ms_p90), "p99", jnum(r->ttft_ms_p99)));
    json_object_set_new(o, "split_ms", by_family(r->fam_ms));
    json_object_set_new(o, "op_ms", by_op(r->ops, r->n_ops));
    json_object_set_new(o, "profiled_step_ms", jnum(r->prof_ms));
    json_object_set_new(o, "distinct_experts", jnum(r->experts));
    json_object_set_new(o, "bytes", json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "attn_weights",
                                              jnum(r->need.attn_weights), "moe_weights", jnum(r->need.moe_weights),
                                              "other_weights", jnum(r->need.other_weights), "kv_read",
                                              jnum(r->need.kv_read), "kv_write", jnum(r->need.kv_write), "total",
                                              jnum(r->need.total)));
    json_object_set_new(o, "flops", jnum(r->need.flops));
    json_object_set_new(o, "split_flops", by_family(r->need.fam_flops));
    json_object_set_new(o, "copy_gbps", jnum(pk->copy_gbps));
    json_object_set_new(o, "bf16_tflops", jnum(pk->bf16_tflops));
    json_object_set_new(o, "fp8_tflops", jnum(pk->fp8_tflops));
    json_object_set_new(o, "roofline_ms", jnum(r->roof_ms));
    json_object_set_new(o, "roofline_ratio", jnum(r->roof_ratio));
    json_object_set_new(o, "fp8_flop_ratio", jnum(r->flop_ratio));
    json_object_set_new(o, "projection", json_pack("{s:i, s:o, s:o}", "layers", r->o.full_layers, "step_ms",
                                                   jnum(r->proj_step_ms), "decode_tok_s", jnum(r->proj_tok_s)));
    write_line(f, o);
}

void bench_write_prefill_json(FILE *f, const char *device, const v4_config *c, const v4_peaks *pk,
                              const bench_prefill_result *r)
{
    json_t *o = json_pack("{s:s, s:I, s:i, s:i}", "device", device, "layers", (json_int_t)c->n_layers,
                          "prefill_tokens", r->tokens, "chunk", r->chunk);
    json_object_set_new(o, "seconds", jnum(r->seconds));
    json_object_set_new(o, "tok_s", jnum(r->tok_s));
    json_object_set_new(o, "tflops", jnum(r->tflops));
    json_object_set_new(o, "fp8_tflops", jnum(pk->fp8_tflops));
    json_object_set_new(o, "fp8_flop_ratio", jnum(r->flop_ratio));
    json_object_set_new(o, "bf16_tflops", jnum(pk->bf16_tflops));
    json_object_set_new(o, "bf16_flop_ratio", jnum(r->bf16_ratio));
    json_object_set_new(o, "split_ms", by_family(r->fam_ms));
    json_object_set_new(o, "split_flops", by_family(r->fam_flops));
    json_object_set_new(o, "op_ms", by_op(r->ops, r->n_ops));
    json_object_set_new(o, "profiled_ms", jnum(r->prof_ms));
    write_line(f, o);
}

int bench_write_svg(const char *path, const char *title, const bench_result *rs, int n, v4_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return v4_errf(err, "%s: cannot create", path);
    const double W = 720, H = 440, L = 70, R = 20, T = 40, B = 60;
    double ymax = 1;
    for (int i = 0; i < n; i++) {
        double roof = rs[i].o.concurrency / (rs[i].roof_ms * 1e-3);
        ymax = fmax(ymax, fmax(roof, rs[i].decode_tok_s));
    }
    ymax *= 1.1;
    double xmin = log2(fmax(1, rs[0].o.concurrency)), xmax = log2(fmax(2, rs[n - 1].o.concurrency));
    if (xmax <= xmin)
        xmax = xmin + 1;
#define X(c) (L + (log2(c) - xmin) / (xmax - xmin) * (W - L - R))
#define Y(v) (H - B - (v) / ymax * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n", L, title);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
    for (int k = 0; k <= 5; k++) {
        double v = ymax * k / 5;
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.0f</text>\n", L - 6, Y(v) + 4, v);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, Y(v), W - R, Y(v));
    }
    for (int i = 0; i < n; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", X(rs[i].o.concurrency),
                H - B + 16, rs[i].o.concurrency);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">concurrency (sequences decoding together)</text>\n",
            (L + W - R) / 2, H - 18);
    fprintf(f, "<text transform=\"rotate(-90)\" x=\"%.0f\" y=\"16\" text-anchor=\"middle\">decode tokens/s</text>\n",
            -(T + H - B) / 2);
    const char *colour[2] = {"#999", "#1f77b4"};
    const char *name[2] = {"HBM roofline (measured copy bandwidth)", "measured"};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour[s],
                s ? "" : " stroke-dasharray=\"6,4\"");
        for (int i = 0; i < n; i++) {
            double v = s ? rs[i].decode_tok_s : rs[i].o.concurrency / (rs[i].roof_ms * 1e-3);
            fprintf(f, "%.1f,%.1f ", X(rs[i].o.concurrency), Y(v));
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; s && i < n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", X(rs[i].o.concurrency),
                    Y(rs[i].decode_tok_s), colour[s]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", L + 10, T + 16 + 16.0 * s, colour[s],
                name[s]);
    }
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    return fclose(f) == 0 ? 0 : v4_errf(err, "%s: write failed", path);
}
