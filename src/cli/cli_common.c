/* Option parsing shared by the subcommands. */
#include "cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_i64(const char *cmd, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be an integer in [%lld, %lld], got '%s'\n", cmd, opt, (long long)lo,
                (long long)hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_f64(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s must be a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_backend_option(const char *cmd, const char *opt, const char *val, backend_opts *bo)
{
    int64_t v;
    v4_err err;
    if (strcmp(opt, "--backend") == 0) {
        bo->name = val;
    } else if (strcmp(opt, "--threads") == 0) {
        if (cli_parse_i64(cmd, opt, val, 0, 4096, &v))
            return -1;
        bo->threads = (int)v;
    } else if (strcmp(opt, "--device") == 0) {
        if (cli_parse_i64(cmd, opt, val, 0, 64, &v))
            return -1;
        bo->device = (int)v;
    } else if (strcmp(opt, "--kv-dtype") == 0) {
        if (strcmp(val, "f32") && strcmp(val, "bf16") && strcmp(val, "fp8")) {
            fprintf(stderr, "%s: --kv-dtype must be f32, bf16 or fp8, got '%s'\n", cmd, val);
            return -1;
        }
        setenv("V4_KV_DTYPE", val, 1); /* read by every backend at creation */
    } else if (strcmp(opt, "--fp8-dialect") == 0) {
        if (backend_parse_dialect(val, &bo->fp8_dialect, &err)) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            return -1;
        }
    } else {
        return 0;
    }
    return 1;
}
