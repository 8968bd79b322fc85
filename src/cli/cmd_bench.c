/* `v4serve bench`: the offline benchmark (decode at several concurrencies,
 * prefill of a long prompt), with the device's measured ceilings and the
 * roofline ratio of each run; JSON lines, a table and an SVG plot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/registry.h"
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "tools/bench.h"
#ifdef V4_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: v4serve bench --model DIR [--concurrency 1,8,32,64,128,256,512] [--input-len 1024]\n"
               "                     [--output-len 32] [--prefill-chunk 2048] [--prefill-len 8192]\n"
               "                     [--full-layers 43] [--out DIR] [--device-name TEXT] [backend options]\n"
               "  Decode runs: each concurrency prefills its sequences, then decodes --output-len steps.\n"
               "  --prefill-len N   also time one N-token prompt (0: skip)\n"
               "  --out DIR         writes DIR/bench.jsonl and DIR/decode.svg\n" CLI_BACKEND_HELP);
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65536)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

int cmd_bench(int argc, char **argv)
{
    const char *cmd = "bench", *model_dir = NULL, *out_dir = NULL, *device_name = "unnamed device";
    backend_opts bo = {.name = "cpu", .fp8_dialect = DT_F8_E4M3};
    bench_opts o = {.input_len = 1024, .output_len = 32, .prefill_chunk = 2048, .full_layers = 43, .seed = 1};
    int conc[16] = {1, 8, 32, 64, 128, 256, 512}, n_conc = 7;
    int64_t prefill_len = 8192, v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!val) {
            fprintf(stderr, "%s: option '%s' needs a value (or is unknown)\n", cmd, a);
            return 2;
        }
        int b = cli_backend_option(cmd, a, val, &bo);
        if (b < 0)
            return 2;
        if (b == 0) {
            if (strcmp(a, "--model") == 0)
                model_dir = val;
            else if (strcmp(a, "--out") == 0)
                out_dir = val;
            else if (strcmp(a, "--device-name") == 0)
                device_name = val;
            else if (strcmp(a, "--concurrency") == 0) {
                if ((n_conc = parse_list(val, conc, 16)) <= 0) {
                    fprintf(stderr, "%s: --concurrency takes a list like 1,8,32\n", cmd);
                    return 2;
                }
            } else if (strcmp(a, "--input-len") == 0) {
                if (cli_parse_i64(cmd, a, val, 1, 1 << 20, &v))
                    return 2;
                o.input_len = (int)v;
            } else if (strcmp(a, "--output-len") == 0) {
                if (cli_parse_i64(cmd, a, val, 1, 1 << 16, &v))
                    return 2;
                o.output_len = (int)v;
            } else if (strcmp(a, "--prefill-chunk") == 0) {
                if (cli_parse_i64(cmd, a, val, 1, 1 << 16, &v))
                    return 2;
                o.prefill_chunk = (int)v;
            } else if (strcmp(a, "--prefill-len") == 0) {
                if (cli_parse_i64(cmd, a, val, 0, 1 << 20, &prefill_len))
                    return 2;
            } else if (strcmp(a, "--full-layers") == 0) {
                if (cli_parse_i64(cmd, a, val, 1, 1024, &v))
                    return 2;
                o.full_layers = (int)v;
            } else {
                fprintf(stderr, "%s: unknown option '%s'\n", cmd, a);
                usage(stderr);
                return 2;
            }
        }
        i++;
    }
    if (!model_dir) {
        usage(stderr);
        return 2;
    }
    v4_err err;
    v4_backend *be = NULL;
    v4_model *m = NULL;
    FILE *json = NULL;
    int rc = 1;
    bench_result *rs = calloc((size_t)n_conc, sizeof *rs);
    if (backend_open(&bo, &be, &err) || model_open(model_dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    if (out_dir) {
        mkdir(out_dir, 0755);
        char p[4096];
        snprintf(p, sizeof p, "%s/bench.jsonl", out_dir);
        if (!(json = fopen(p, "a"))) {
            fprintf(stderr, "%s: cannot write %s\n", cmd, p);
            goto out;
        }
    }
    v4_peaks pk = {0};
    if (!be->ops->measure_peaks || be->ops->measure_peaks(be, &pk, &err)) {
        fprintf(stderr, "%s: measuring the device: %s\n", cmd, be->ops->measure_peaks ? err.msg : "unsupported");
        goto out;
    }
    printf("device: %s, backend %s; model %s: %lld layers (projection to %d)\n", device_name, bo.name, model_dir,
           (long long)m->cfg.n_layers, o.full_layers);
    printf("measured: copy %.0f GB/s (read+write), bf16 GEMM %.0f TFLOP/s, FP8 GEMM %.0f TFLOP/s [%s]\n",
           pk.copy_gbps, pk.bf16_tflops, pk.fp8_tflops, pk.how);
#ifdef V4_HAVE_CUDA
    if (strcmp(be->ops->name, "cuda") == 0) {
        char how[256];
        backend_cuda_describe_linear(be, how, sizeof how);
        printf("linear layers: %s\n", how);
    }
#endif
    fflush(stdout);
    if (prefill_len > 0) {
        bench_prefill_result pr;
        if (bench_prefill(m, (int)prefill_len, o.prefill_chunk, &pk, &pr, &err)) {
            fprintf(stderr, "%s: prefill: %s\n", cmd, err.msg);
            goto out;
        }
        bench_print_prefill(stdout, &pr);
        if (json)
            bench_write_prefill_json(json, device_name, &m->cfg, &pk, &pr);
    }
    int max_c = 0;
    for (int i = 0; i < n_conc; i++)
        max_c = conc[i] > max_c ? conc[i] : max_c;
    o.n_runs = n_conc;
    bench_session *sess;
    if (bench_session_open(m, &o, max_c, &sess, &err)) {
        fprintf(stderr, "%s: prefilling %d prompts: %s\n", cmd, max_c, err.msg);
        goto out;
    }
    printf("prefilled %d prompts of %d tokens in %.2f s (all arriving together; TTFT below is from this)\n", max_c,
           o.input_len, bench_session_prefill_s(sess));
    bench_print_header(stdout);
    int done = 0;
    for (int i = 0; i < n_conc; i++) {
        if (bench_decode(sess, conc[i], &pk, &rs[done], &err)) {
            fprintf(stderr, "%s: concurrency %d: %s\n", cmd, conc[i], err.msg);
            break;
        }
        bench_print_row(stdout, &rs[done]);
        fflush(stdout);
        if (json) {
            bench_write_json(json, device_name, &m->cfg, &pk, &rs[done]);
            fflush(json);
        }
        done++;
    }
    bench_session_free(sess);
    if (out_dir && done) {
        char p[4096], title[256];
        snprintf(p, sizeof p, "%s/decode.svg", out_dir);
        snprintf(title, sizeof title, "v4serve decode, %s, %lld layers, %d-token prompts", device_name,
                 (long long)m->cfg.n_layers, o.input_len);
        if (bench_write_svg(p, title, rs, done, &err))
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
    }
    printf("projection to %d layers (per-layer step time x %d + head), a projection, not a measurement\n",
           o.full_layers, o.full_layers);
    rc = done == n_conc ? 0 : 1;
out:
    if (json)
        fclose(json);
    free(rs);
    model_close(m);
    backend_close(be);
    return rc;
}
