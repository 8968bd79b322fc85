/* CPU forward-pass benchmark (not a test): prefill and decode throughput of
 * a checkpoint on the CPU backend, through the same fwd_step the server
 * uses.
 *
 *   prefill:  the golden file's prompt as one step (all of it, logits of
 *             the last token only), once per sequence of the decode runs;
 *   decode 1: one sequence continuing token by token (greedy);
 *   decode B: B sequences continuing together, one token each per step.
 * Every decoding sequence starts from the same prompt, so both decode runs
 * attend over the same context lengths. Model loading is timed apart.
 *
 * usage: cpu_forward [--model DIR] [--golden FILE] [--threads N]
 *                    [--decode STEPS] [--batch B]
 * Defaults: the `rates` golden model and prompt, all cores, 32 steps, 8. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/model.h"
#include "tools/golden.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of all the process's threads: with other work on the machine
 * the wall clock stretches, this much less so (the pool's workers sleep
 * when idle rather than spin). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int32_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

static int die(const char *what, const v4_err *err)
{
    fprintf(stderr, "cpu_forward: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    const char *model_dir = "tests/golden/rates/model", *gpath = "tests/golden/rates/golden.safetensors";
    int threads = 0, steps = 32, batch = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model"))
            model_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--golden"))
            gpath = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "cpu_forward: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (argc % 2 == 0 || steps < 1 || batch < 1 || batch > 64) {
        fprintf(stderr, "usage: cpu_forward [--model DIR] [--golden FILE] [--threads N] [--decode STEPS] "
                        "[--batch 1..64]\n");
        return 2;
    }
    if (threads <= 0) /* the backend's default: one thread per online CPU */
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    v4_err err;
    golden g;
    if (golden_load(gpath, &g, &err))
        return die(gpath, &err);
    const int P = (int)g.prompt_len;
    v4_backend *be;
    if (backend_cpu_create(threads, DT_F8_E4M3, &be, &err))
        return die("backend", &err);
    double t0 = now_s();
    v4_model *m;
    if (model_open(model_dir, be, &m, &err))
        return die(model_dir, &err);
    const double t_load = now_s() - t0;
    const int64_t V = m->cfg.vocab_size;

    /* slots 0..batch-1 decode together; slot `batch` decodes alone */
    const int n_seq = batch + 1;
    kv_geom geom;
    if (kv_geom_init(&geom, &m->cfg, 1, n_seq, P + steps, &err))
        return die("kv geometry", &err);
    const int nb = (int)geom.max_blocks_per_seq;
    geom.n_blocks = (int64_t)n_seq * nb;
    v4_forward *f;
    if (fwd_create(m, &geom, P > batch ? P : batch, &f, &err))
        return die("forward", &err);
    int32_t *blocks = malloc((size_t)n_seq * nb * sizeof(int32_t));
    int32_t *toks = malloc((size_t)n_seq * steps * sizeof(int32_t));
    float *logits = malloc((size_t)(batch > 1 ? batch : 1) * V * sizeof(float));
    double *t_pre = malloc((size_t)n_seq * sizeof(double));
    if (!blocks || !toks || !logits || !t_pre) {
        fprintf(stderr, "cpu_forward: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_seq * nb; i++)
        blocks[i] = i;

    printf("model %s: %lld layers, D %lld, %lld experts (top %lld), window %lld; prompt %d tokens; %d threads; "
           "load %.2f s\n",
           model_dir, (long long)m->cfg.n_layers, (long long)m->cfg.dim, (long long)m->cfg.n_experts,
           (long long)m->cfg.n_active, (long long)m->cfg.window, P, threads, t_load);
    double c0 = cpu_s();
    for (int s = 0; s < n_seq; s++) {
        v4_seq_batch sb = {.slot = s, .start_pos = 0, .n_tokens = P, .tokens = g.tokens, .block_table = blocks + s * nb,
                           .n_blocks = nb, .all_logits = false};
        t0 = now_s();
        if (fwd_step(f, &sb, 1, logits, &err))
            return die("prefill", &err);
        t_pre[s] = now_s() - t0;
        toks[s * steps] = argmax(logits, V);
    }
    const double c_pre = (cpu_s() - c0) / n_seq;
    qsort(t_pre, (size_t)n_seq, sizeof *t_pre, cmp_double);
    printf("prefill  %d tokens x %d runs: median %.3f s (%.1f tok/s), best %.3f s (%.1f tok/s); "
           "%.3f CPU s per run\n",
           P, n_seq, t_pre[n_seq / 2], P / t_pre[n_seq / 2], t_pre[0], P / t_pre[0], c_pre);

    /* decode alone: slot `batch` */
    t0 = now_s();
    c0 = cpu_s();
    for (int k = 0; k + 1 < steps; k++) {
        v4_seq_batch sb = {.slot = batch, .start_pos = P + k, .n_tokens = 1, .tokens = toks + batch * steps + k,
                           .block_table = blocks + batch * nb, .n_blocks = nb};
        if (fwd_step(f, &sb, 1, logits, &err))
            return die("decode", &err);
        toks[batch * steps + k + 1] = argmax(logits, V);
    }
    double t1 = now_s() - t0, c1 = cpu_s() - c0;
    printf("decode   batch 1: %d steps at context %d..%d: %.1f ms/step, %.1f tok/s; %.1f CPU ms/step\n", steps - 1,
           P, P + steps - 1, 1e3 * t1 / (steps - 1), (steps - 1) / t1, 1e3 * c1 / (steps - 1));

    /* decode together: slots 0..batch-1 */
    v4_seq_batch sbs[64];
    t0 = now_s();
    c0 = cpu_s();
    for (int k = 0; k + 1 < steps; k++) {
        for (int s = 0; s < batch; s++)
            sbs[s] = (v4_seq_batch){.slot = s, .start_pos = P + k, .n_tokens = 1, .tokens = toks + s * steps + k,
                                    .block_table = blocks + s * nb, .n_blocks = nb};
        if (fwd_step(f, sbs, batch, logits, &err))
            return die("decode batch", &err);
        for (int s = 0; s < batch; s++)
            toks[s * steps + k + 1] = argmax(logits + (int64_t)s * V, V);
    }
    double tb = now_s() - t0, cb = cpu_s() - c0;
    printf("decode   batch %d: %d steps at context %d..%d: %.1f ms/step, %.1f tok/s; %.1f CPU ms/step\n", batch,
           steps - 1, P, P + steps - 1, 1e3 * tb / (steps - 1), batch * (steps - 1) / tb, 1e3 * cb / (steps - 1));
    /* the same prompt decoded greedily must give the same tokens alone and batched */
    for (int s = 0; s < batch; s++)
        if (memcmp(toks + s * steps, toks + batch * steps, (size_t)steps * sizeof(int32_t)) != 0) {
            fprintf(stderr, "cpu_forward: sequence %d's greedy tokens differ from the alone run\n", s);
            return 1;
        }

    free(blocks);
    free(toks);
    free(logits);
    free(t_pre);
    fwd_destroy(f);
    model_close(m);
    backend_cpu_destroy(be);
    golden_free(&g);
    return 0;
}
