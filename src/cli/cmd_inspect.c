/* `v4serve inspect --model DIR [--gpus N]`: config summary, per-layer
 * schedule, parameters and bytes by dtype, KV-cache bytes per token, and
 * with --gpus the weights each of N GPUs would hold (model/partition.h). */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "cli/commands.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/partition.h"
#include "model/weights.h"

/* The share of each of `world` GPUs; 0, or 1 after printing why not. */
static int print_partition(const v4_config *c, v4_weights *w, int world)
{
    printf("%d GPUs: routed experts split by rank, head split by vocabulary rows, the rest on every GPU\n", world);
    for (int r = 0; r < world; r++) {
        v4_partition p;
        v4_err err;
        if (partition_plan(c, world, r, &p, &err)) {
            fprintf(stderr, "inspect: %s\n", err.msg);
            return 1;
        }
        const size_t bytes = partition_weight_bytes(w, &p);
        printf("  rank %d: experts [%lld, %lld), head rows [%lld, %lld), %zu bytes of weights (%.2f GB)\n", r,
               (long long)p.expert_begin, (long long)p.expert_end, (long long)p.vocab_begin,
               (long long)p.vocab_end, bytes, bytes / 1e9);
    }
    return 0;
}

static void print_schedule(const v4_config *c)
{
    printf("layers: %lld\n", (long long)c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        layer_kind_t k = cfg_layer_kind(c, l);
        printf("  layer %2d  %-7s", l, cfg_layer_kind_name(k));
        if (k != LAYER_SLIDING)
            printf(" ratio %-4d", cfg_layer_ratio(c, l));
        else
            printf("           ");
        printf(" window %lld  %s routing\n", (long long)c->window, cfg_layer_hashed(c, l) ? "hash" : "learned");
    }
}

int cmd_inspect(int argc, char **argv)
{
    const char *dir = NULL;
    int gpus = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--gpus") == 0 && i + 1 < argc) {
            char *end;
            const long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > V4_MAX_GPUS) {
                fprintf(stderr, "inspect: --gpus takes a number of GPUs from 1 to %d, not '%s'\n", V4_MAX_GPUS,
                        argv[i]);
                return 2;
            }
            gpus = (int)v;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: v4serve inspect --model DIR [--gpus N]\n"
                   "  --gpus N   also the weights each of N GPUs of one host would hold (1..%d)\n",
                   V4_MAX_GPUS);
            return 0;
        } else {
            fprintf(stderr, "inspect: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "inspect: --model DIR is required\n");
        return 2;
    }
    v4_err err;
    v4_config c;
    if (cfg_load(dir, &c, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        return 1;
    }
    st_archive *a;
    if (st_open(dir, &a, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        return 1;
    }
    v4_weights w;
    if (weights_bind(&c, a, &w, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        st_close(a);
        return 1;
    }
    printf("model: %s\n", dir);
    printf("vocab %lld, hidden %lld, heads %lld x %lld (rope %lld), q_lora %lld, o_groups %lld x %lld\n",
           (long long)c.vocab_size, (long long)c.dim, (long long)c.n_heads, (long long)c.head_dim,
           (long long)c.rope_dim, (long long)c.q_lora_rank, (long long)c.o_groups, (long long)c.o_lora_rank);
    printf("experts %lld routed (top-%lld, intermediate %lld) + %lld shared; %lld hash layers; swiglu limit %g\n",
           (long long)c.n_experts, (long long)c.n_active, (long long)c.moe_inter, (long long)c.n_shared_experts,
           (long long)c.n_hash_layers, c.swiglu_limit);
    printf("mHC %lld streams, %lld Sinkhorn iterations; window %lld; indexer %lld heads x %lld, top-%lld\n",
           (long long)c.hc_mult, (long long)c.hc_sinkhorn_iters, (long long)c.window, (long long)c.index_n_heads,
           (long long)c.index_head_dim, (long long)c.index_topk);
    printf("rope theta %g; compress rope theta %g", c.rope_theta, c.compress_rope_theta);
    if (c.yarn.enabled)
        printf(" with YaRN (factor %g, original %lld, beta %g/%g)\n", c.yarn.factor,
               (long long)c.yarn.original_max_pos, c.yarn.beta_fast, c.yarn.beta_slow);
    else
        printf(" (no YaRN)\n");
    print_schedule(&c);

    /* parameters and bytes by stored dtype, over every tensor in the archive */
    int64_t params[DT_COUNT] = {0};
    size_t bytes[DT_COUNT] = {0};
    for (size_t i = 0; i < st_count(a); i++) {
        const st_tensor *t = st_at(a, i);
        params[t->dtype] += t->nelem;
        bytes[t->dtype] += t->nbytes;
    }
    int64_t ptotal = 0;
    size_t btotal = 0;
    printf("tensors: %zu\n", st_count(a));
    for (int t = 0; t < DT_COUNT; t++) {
        if (!bytes[t])
            continue;
        printf("  %-12s %14lld elements %14zu bytes%s\n", dt_name((dtype_t)t), (long long)params[t], bytes[t],
               t == DT_I8 ? " (MXFP4 experts: 2 weights per byte)" : "");
        ptotal += t == DT_I8 ? 2 * params[t] : params[t];
        btotal += bytes[t];
    }
    printf("  total        %14lld weights  %14zu bytes (%.2f GB)\n", (long long)ptotal, btotal, btotal / 1e9);
    printf("KV cache: %.1f bytes per token of context with FP8 entries (%.1f with bf16), "
           "plus %lld bytes per sequence for the %lld-token windows (FP8)\n",
           cfg_kv_bytes_per_token(&c, 1), cfg_kv_bytes_per_token(&c, 2), (long long)cfg_kv_fixed_bytes(&c, 1),
           (long long)c.window);
    const int rc = gpus ? print_partition(&c, &w, gpus) : 0;
    weights_free(&w);
    st_close(a);
    return rc;
}
