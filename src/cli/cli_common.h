/* Option parsing shared by the subcommands. */
#ifndef V4_CLI_COMMON_H
#define V4_CLI_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/registry.h"

/* Handles --backend, --threads, --fp8-dialect, --kv-dtype, --device with value `val`.
 * Returns 1 when `opt` was one of them, 0 when not, -1 (message printed,
 * prefixed with `cmd`) for a bad value. */
int cli_backend_option(const char *cmd, const char *opt, const char *val, backend_opts *bo);
#define CLI_BACKEND_HELP                                                                                            \
    "  --backend cpu|cuda   compute backend (default cpu)\n"                                                       \
    "  --threads N          CPU worker threads (default: all cores)\n"                                             \
    "  --fp8-dialect ocp|fnuz  FP8 dialect to compute in (default ocp; fnuz converts weights at load)\n"           \
    "  --kv-dtype f32|bf16|fp8 stored KV state (default f32; bf16 halves it, fp8 quarters it)\n"                  \
    "  --device N           GPU ordinal (default 0)\n"

/* Strict integer / float parsing: the whole string, within [lo, hi]. */
int cli_parse_i64(const char *cmd, const char *opt, const char *val, int64_t lo, int64_t hi, int64_t *out);
int cli_parse_f64(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out);

#endif
