/* `v4serve check-golden --model DIR --golden FILE [--chunk N] [--backend B]`
 * Prints one line with rel_err, greedy matches, the positions whose own
 * error passes the bound and the median position's error; exit 0 iff
 * rel_err is within the backend's bound and every greedy token matches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/registry.h"
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "tools/golden.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: v4serve check-golden --model DIR --golden FILE [--chunk N] [--tolerance X] [backend options]\n"
               "  --chunk 0 feeds the whole sequence at once (default), N feeds chunks of N, 1 token by token.\n"
               "  Bounds: rel_err <= 1e-3 on the CPU backend, 2e-2 on GPU backends (override with --tolerance).\n"
               "  Also printed: positions_over (positions whose own max |diff| passes the bound) and median_rel\n"
               "  (the median position's), which tell a few flipped top-k or expert choices from error everywhere.\n"
               CLI_BACKEND_HELP);
}

int cmd_check_golden(int argc, char **argv)
{
    const char *model = NULL, *gpath = NULL;
    int chunk = 0;
    double tol = -1;
    backend_opts bo = {.name = "cpu", .fp8_dialect = DT_F8_E4M3};
    v4_err err;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int backend_opt = v ? cli_backend_option("check-golden", a, v, &bo) : 0;
        if (backend_opt < 0) {
            return 2;
        } else if (backend_opt == 1) {
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (!v) {
            fprintf(stderr, "check-golden: option '%s' needs a value (or is unknown)\n", a);
            return 2;
        } else if (strcmp(a, "--model") == 0) {
            model = v;
        } else if (strcmp(a, "--golden") == 0) {
            gpath = v;
        } else if (strcmp(a, "--chunk") == 0) {
            char *end;
            long c = strtol(v, &end, 10);
            if (*end || c < 0 || c > 1 << 20) {
                fprintf(stderr, "check-golden: --chunk must be an integer >= 0, got '%s'\n", v);
                return 2;
            }
            chunk = (int)c;
        } else if (strcmp(a, "--tolerance") == 0) {
            char *end;
            tol = strtod(v, &end);
            if (*end || !(tol > 0) || isinf(tol)) {
                fprintf(stderr, "check-golden: --tolerance must be a positive number, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "check-golden: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!model || !gpath) {
        usage(stderr);
        return 2;
    }
    if (tol < 0)
        tol = strcmp(bo.name, "cpu") == 0 ? 1e-3 : 2e-2;
    golden g;
    if (golden_load(gpath, &g, &err)) {
        fprintf(stderr, "check-golden: %s\n", err.msg);
        return 1;
    }
    v4_backend *be;
    if (backend_open(&bo, &be, &err)) {
        fprintf(stderr, "check-golden: %s\n", err.msg);
        golden_free(&g);
        return 1;
    }
    golden_result r;
    int rc = golden_run(model, be, &g, chunk, tol, &r, &err);
    backend_close(be);
    golden_free(&g);
    if (rc) {
        fprintf(stderr, "check-golden: %s\n", err.msg);
        return 1;
    }
    bool ok = r.rel_err <= tol && r.greedy_match == r.greedy_total;
    printf("%s backend=%s chunk=%d rel_err=%.3e (max |diff| %.3e at position %lld, max |logit| %.3f, bound %.0e) "
           "greedy=%lld/%lld positions_over=%lld/%lld median_rel=%.3e\n",
           ok ? "PASS" : "FAIL", bo.name, chunk, r.rel_err, r.max_abs_diff, (long long)r.worst_pos, r.max_abs_logit,
           tol, (long long)r.greedy_match, (long long)r.greedy_total, (long long)r.positions_over,
           (long long)r.positions, r.median_rel);
    return ok ? 0 : 1;
}
