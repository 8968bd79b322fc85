/* build-cuda/gpu-tests: every GPU test in one program, TAP output
 * ("ok N - name" / "not ok N - name", "ok N - name # SKIP why" for a test
 * that could not run, e.g. model_full_dims without --model; diagnostics as
 * "# ..."), ending with "N passed, N failed, N skipped"; exit status 0 only
 * when none failed and some passed. A skipped test is never counted as
 * passed.
 *
 *   gpu-tests [--quick] [--only NAME[,NAME...]] [--skip NAME[,NAME...]] [--model DIR] [--list]
 *     --quick   the small-shape subset (what compute-sanitizer runs)
 *     --only    run the tests whose names contain one of the given strings
 *     --skip    leave out the tests whose names contain one of them
 *     --model   a full-dimension checkpoint for model_full_dims
 * Golden models are found under $V4_ROOT (default: the current directory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt.h"
#include "gt_tests.h"

typedef struct gt_test {
    const char *name;
    void (*fn)(void);
    bool quick; /* part of the --quick subset */
    bool plain; /* runs with V4_CUDA_PLAIN=1: checks the plain kernels to fp32 bounds */
} gt_test;

static const gt_test TESTS[] = {
    {"linear_formats", test_linear_formats, true, true},
    {"linear_fnuz", test_linear_fnuz, true, true},
    {"fp8_dialect_refused", test_fp8_dialect_refused, true, false},
    {"embed", test_embed, true, false},
    {"rmsnorm", test_rmsnorm, true, false},
    {"rope", test_rope, true, false},
    {"mhc", test_mhc, true, false},
    {"elementwise", test_elementwise, true, false},
    {"moe_route", test_moe_route, true, false},
    {"moe_experts_small", test_moe_experts_small, true, true},
    {"sample", test_sample, true, false},
    {"attn_state_quick", test_attn_state_quick, true, true},
    {"attn_state_quick_tc", test_attn_state_quick_tc, true, false},
    {"graph_vs_eager", test_graph_vs_eager, true, false},
    {"linear_real_dims", test_linear_real_dims, false, true},
    {"moe_experts_real_dims", test_moe_experts_real_dims, false, true},
    {"attn_state_f32", test_attn_state_f32, false, true},
    {"attn_state_bf16", test_attn_state_bf16, false, false},
    {"attn_state_fp8", test_attn_state_fp8, false, false},
    {"attn_state_fnuz", test_attn_state_fnuz, false, false},
    {"model_full_dims", test_model_full_dims, false, true},
    {"tc_linear_formats", test_tc_linear_formats, true, false},
    {"tc_moe_formats", test_tc_moe_formats, true, false},
    {"tc_batch_invariance", test_tc_batch_invariance, true, false},
    {"tc_linear_real_dims", test_tc_linear_real_dims, false, false},
    {"tc_moe_real_dims", test_tc_moe_real_dims, false, false},
    {"blas_linear_formats", test_blas_linear_formats, true, false},
    {"blas_linear_real_dims", test_blas_linear_real_dims, false, false},
    {"fp8_linear", test_fp8_linear, true, false},
    {"fp8_linear_real_dims", test_fp8_linear_real_dims, false, false},
    {"gemv_linear", test_gemv_linear, true, false},
    {"moe_experts_gemv", test_moe_experts_gemv, true, false},
    {"gemv_linear_real_dims", test_gemv_linear_real_dims, false, false},
};

static bool selected(const char *name, const char *only)
{
    if (!only)
        return true;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", only);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strstr(name, tok))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *only = NULL, *skip = NULL;
    bool list = false;
    GT.root = getenv("V4_ROOT") && *getenv("V4_ROOT") ? getenv("V4_ROOT") : ".";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            GT.quick = true;
        else if (strcmp(argv[i], "--list") == 0)
            list = true;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--skip") == 0 && i + 1 < argc)
            skip = argv[++i];
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            GT.model_dir = argv[++i];
        else {
            fprintf(stderr, "usage: gpu-tests [--quick] [--only NAME[,NAME...]] [--skip NAME[,NAME...]] [--model DIR] "
                            "[--list]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n = 0, passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof *TESTS; i++) {
        const gt_test *t = &TESTS[i];
        if ((GT.quick && !t->quick) || !selected(t->name, only) || (skip && selected(t->name, skip)))
            continue;
        if (list) {
            printf("%s\n", t->name);
            continue;
        }
        const int before = gt_failed();
        struct timespec t0, t1;
        char *env_plain = t->plain ? gt_swap_env("V4_CUDA_PLAIN", "1") : NULL;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        t->fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t->plain)
            gt_restore_env("V4_CUDA_PLAIN", env_plain);
        const double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        n++;
        const char *skip_why = gt_take_skip();
        if (gt_failed() == before && skip_why) {
            skipped++;
            printf("ok %d - %s # SKIP %s\n", n, t->name, skip_why);
        } else if (gt_failed() == before) {
            passed++;
            printf("ok %d - %s (%.1f s)\n", n, t->name, secs);
        } else {
            failed++;
            printf("not ok %d - %s (%.1f s)\n", n, t->name, secs);
        }
    }
    if (list)
        return 0;
    printf("1..%d\n%d passed, %d failed, %d skipped\n", n, passed, failed, skipped);
    return failed == 0 && passed > 0 ? 0 : 1;
}
