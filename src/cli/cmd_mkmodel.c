/* `v4serve mkmodel --out DIR --preset tiny|demo|flash [...]`: writes a
 * deterministic random checkpoint in the official format (see
 * src/tools/mkmodel.h), with progress on stderr at most once a second. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "tools/mkmodel.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: v4serve mkmodel --out DIR --preset tiny|demo|flash [options]\n"
            "\n"
            "Writes a random checkpoint in the official DeepSeek-V4-Flash format.\n"
            "  --out DIR        output folder (created if absent)\n"
            "  --preset NAME    tiny (golden tiny dims), demo (real vocabulary, small dims),\n"
            "                   flash (the real model: 43 layers, about 155 GB)\n"
            "  --layers N       keep the first N layers of the preset's schedule\n"
            "  --experts N      routed experts per layer (top-k capped at N)\n"
            "  --seed S         random seed (default 1); same seed, same bytes\n"
            "  --tokenizer DIR  copy tokenizer.json and tokenizer_config.json from DIR\n"
            "  --threads N      generator threads (default: one per CPU)\n"
            "  --shard-mb N     shard size limit in MB (default 4000)\n");
}

/* Parses a whole decimal number in [lo, hi]. */
static int parse_num(const char *opt, const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *s == '-' || *s == '+' || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "mkmodel: %s '%s': expected a whole number from %llu to %llu\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

typedef struct progress {
    struct timespec start, last;
} progress;

static double since(const struct timespec *a)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - a->tv_sec) + (now.tv_nsec - a->tv_nsec) / 1e9;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress *p = ctx;
    if (since(&p->last) < 1.0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &p->last);
    double t = since(&p->start);
    fprintf(stderr, "mkmodel: %.2f of %.2f GB (%.0f%%), %.2f GB/s\n", done / 1e9, total / 1e9,
            100.0 * (double)done / (double)(total ? total : 1), done / 1e9 / (t > 0 ? t : 1));
}

int cmd_mkmodel(int argc, char **argv)
{
    mk_options o = {.seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mkmodel: %s needs a value (or is unknown)\n\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        unsigned long long n;
        if (strcmp(a, "--out") == 0)
            o.out_dir = v;
        else if (strcmp(a, "--preset") == 0)
            o.preset = v;
        else if (strcmp(a, "--tokenizer") == 0)
            o.tokenizer_dir = v;
        else if (strcmp(a, "--layers") == 0) {
            if (parse_num(a, v, 1, 128, &n))
                return 2;
            o.layers = (int)n;
        } else if (strcmp(a, "--experts") == 0) {
            if (parse_num(a, v, 1, 65536, &n))
                return 2;
            o.experts = (int)n;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_num(a, v, 0, UINT64_MAX, &n))
                return 2;
            o.seed = n;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_num(a, v, 1, 1024, &n))
                return 2;
            o.threads = (int)n;
        } else if (strcmp(a, "--shard-mb") == 0) {
            if (parse_num(a, v, 1, 1000000, &n))
                return 2;
            o.shard_bytes = n * 1000000ull;
        } else {
            fprintf(stderr, "mkmodel: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.out_dir || !o.preset) {
        fprintf(stderr, "mkmodel: --out DIR and --preset NAME are required\n\n");
        usage(stderr);
        return 2;
    }
    v4_err err;
    mk_summary s;
    if (mk_plan_size(&o, &s, &err)) {
        fprintf(stderr, "mkmodel: %s\n", err.msg);
        return 2;
    }
    fprintf(stderr, "mkmodel: preset %s, %d layers, seed %llu: %zu tensors, %.2f GB in %d shard(s) -> %s\n",
            o.preset, s.layers, (unsigned long long)o.seed, s.tensors, s.bytes / 1e9, s.shards, o.out_dir);
    progress pr;
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    pr.last = pr.start;
    o.progress = on_progress;
    o.progress_ctx = &pr;
    if (mk_write(&o, &s, &err)) {
        fprintf(stderr, "mkmodel: %s\n", err.msg);
        return 1;
    }
    double t = since(&pr.start);
    printf("wrote %s: %zu tensors, %d shard(s), %.3f GB in %.2f s (%.2f GB/s)\n", o.out_dir, s.tensors, s.shards,
           s.bytes / 1e9, t, s.bytes / 1e9 / (t > 0 ? t : 1));
    return 0;
}
