/* Helpers of the GPU test program (build-cuda/gpu-tests): backends under
 * comparison, device buffers, random inputs and weights in every stored
 * format, poisoned outputs, and comparisons with stated bounds.
 *
 * Every GPU op is checked against the CPU backend's op (the fp32 reference)
 * on the same fresh random inputs. Outputs are filled with NaN before the
 * GPU op runs, so an element the op failed to write shows up as NaN. */
#ifndef V4_TESTS_GPU_GT_H
#define V4_TESTS_GPU_GT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "testutil.h"

/* Options of the run (command line). */
typedef struct gt_opts {
    bool quick;            /* small shapes only: the subset run under compute-sanitizer */
    const char *model_dir; /* full-dimension checkpoint for model_full_dims */
    const char *root;      /* repository root (golden models) */
} gt_opts;
extern gt_opts GT;

/* Records a failure of the current test with a message (printed as "# ..."). */
void gt_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gt_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int gt_failed(void);
/* Marks the current test as not run (why), so it is reported as skipped,
 * never as passed; gt_take_skip returns and clears the mark (NULL: none). */
void gt_skip(const char *why);
const char *gt_take_skip(void);

/* Sets (value NULL: unsets) an environment variable and returns its old
 * value, which gt_restore_env puts back (and frees). */
char *gt_swap_env(const char *name, const char *value);
void gt_restore_env(const char *name, char *old);

/* Fresh generator for one test, seeded from the clock (seed printed). */
tu_rng gt_rng(const char *test);

/* Backends. kv: "f32", "bf16", "fp8" (V4_KV_DTYPE); graphs false sets
 * V4_CUDA_GRAPHS=0. Abort the test (NULL) on failure. */
v4_backend *gt_cpu(dtype_t dialect);
/* The CPU backend rounding its KV state as a GPU backend with `kv` does. */
v4_backend *gt_cpu_kv(dtype_t dialect, const char *kv);
v4_backend *gt_cuda(dtype_t dialect, const char *kv, bool graphs);
/* gt_cuda with n environment variables set while the backend is created
 * (env[i] = {name, value}; value NULL: unset), then restored. */
#define GT_MAX_ENV 8
v4_backend *gt_cuda_env(dtype_t dialect, const char *kv, bool graphs, int n, const char *const env[][2]);
void gt_close(v4_backend *be);

/* Backend memory. */
void *gt_alloc(v4_backend *be, size_t bytes);
void *gt_up(v4_backend *be, const void *host, size_t bytes);
void gt_down(v4_backend *be, void *host, const void *dev, size_t bytes);
/* Overwrites backend memory from the host. */
void gt_copy_to(v4_backend *be, void *dev, const void *host, size_t bytes);
/* Backend buffer of n floats filled with NaN. */
float *gt_nan(v4_backend *be, size_t n);
void gt_free(v4_backend *be, void *p);
/* sync; records a failure with the backend's message. */
bool gt_sync(v4_backend *be, const char *what);

/* Host arrays (freed with free). */
float *gt_randn(tu_rng *r, size_t n, float sd);
float *gt_randu(tu_rng *r, size_t n, float lo, float hi);
float *gt_hostf(size_t n);

/* A host matrix in a stored format with random content. fmt WF_PLAIN with
 * dtype F32/BF16/F16, WF_FP8 with an FP8 dialect, WF_MXFP4. `mag` sets the
 * typical weight magnitude. Free with gt_mat_free. */
v4_mat gt_rand_mat(tu_rng *r, wfmt_t fmt, dtype_t dtype, int64_t rows, int64_t cols, float mag, const char *name);
void gt_mat_free(v4_mat *m);
/* Uploads with the backend's upload_mat (failure recorded, zeroed result). */
v4_mat gt_upload_mat(v4_backend *be, const v4_mat *host);

/* max |got - ref| / max |ref| over n values; *nan counts non-finite got. */
double gt_relerr(const float *got, const float *ref, size_t n, size_t *nan);
/* Checks got against ref within `tol` of the reference's scale and that
 * every element was written (finite); prints the error. */
bool gt_close_to(const char *what, const float *got, const float *ref, size_t n, double tol);
/* Same for int arrays (exact). */
bool gt_same_ints(const char *what, const int32_t *got, const int32_t *ref, size_t n);

/* Issues call i of a timed sequence on `be`. */
typedef void (*gt_call_fn)(v4_backend *be, void *ctx, int i);
/* Seconds per call: every call once to warm up, then the median over 20
 * replays of a graph of 20 calls (4 for calls of a millisecond or more;
 * eager batches when the backend has no graphs), so launch gaps are hidden. */
double gt_time_calls(v4_backend *be, gt_call_fn f, void *ctx);

/* Seconds per call of y = W x for n tokens (groups as in linear) on `be`,
 * timed as above, with the weight `hm` uploaded in enough copies (>= 128
 * MB in all, at most 32) that the calls, which rotate among them, read HBM
 * rather than L2; x is the host input. NaN when a failure was recorded. */
double gt_time_linear(v4_backend *be, const v4_mat *hm, const float *x, int n, int groups);

/* Step metadata built on the host for both backends. */
typedef struct gt_step {
    int n_tokens, n_seqs, max_blocks;
    int32_t *tok_id, *tok_pos, *tok_seq;
    int32_t *seq_slot, *seq_start, *seq_ntok, *seq_row;
    int32_t *block_table;
} gt_step;
/* One sequence per entry: slot, first position, tokens; block tables from
 * bt[s] (max_blocks each, may be NULL: all -1); token ids random in vocab. */
gt_step gt_make_step(tu_rng *r, int n_seqs, const int *slots, const int *starts, const int *ntoks,
                     const int32_t *const *bt, int max_blocks, int vocab);
void gt_step_free(gt_step *s);
v4_step gt_host_view(const gt_step *s);

#endif
