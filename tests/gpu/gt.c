/* Helpers of the GPU test program; see gt.h. */
#include "gt.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/dtype.h"

gt_opts GT;
static int g_failures;
static char g_skip[160];

void gt_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    g_failures++;
}

void gt_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

int gt_failed(void) { return g_failures; }

void gt_skip(const char *why) { snprintf(g_skip, sizeof g_skip, "%s", why); }

const char *gt_take_skip(void)
{
    static char taken[sizeof g_skip];
    if (!g_skip[0])
        return NULL;
    snprintf(taken, sizeof taken, "%s", g_skip);
    g_skip[0] = '\0';
    return taken;
}

char *gt_swap_env(const char *name, const char *value)
{
    char *old = getenv(name) ? strdup(getenv(name)) : NULL;
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
    return old;
}

void gt_restore_env(const char *name, char *old)
{
    if (old)
        setenv(name, old, 1);
    else
        unsetenv(name);
    free(old);
}

tu_rng gt_rng(const char *test)
{
    fflush(stdout);
    tu_rng r = {tu_seed_from_time(test)};
    return r;
}

v4_backend *gt_cpu(dtype_t dialect) { return gt_cpu_kv(dialect, "f32"); }

v4_backend *gt_cpu_kv(dtype_t dialect, const char *kv)
{
    v4_backend *be;
    v4_err err;
    /* set whatever a CUDA backend created before left in the environment
     * (the CPU backend reads V4_KV_DTYPE too, to emulate a GPU's KV rounding) */
    setenv("V4_KV_DTYPE", kv, 1);
    if (backend_cpu_create(0, dialect, &be, &err)) {
        gt_fail("backend_cpu_create: %s", err.msg);
        return NULL;
    }
    return be;
}

v4_backend *gt_cuda(dtype_t dialect, const char *kv, bool graphs)
{
    v4_backend *be;
    v4_err err;
    setenv("V4_KV_DTYPE", kv, 1);
    setenv("V4_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    if (backend_cuda_create(0, dialect, &be, &err)) {
        gt_fail("backend_cuda_create: %s", err.msg);
        return NULL;
    }
    return be;
}

v4_backend *gt_cuda_env(dtype_t dialect, const char *kv, bool graphs, int n, const char *const env[][2])
{
    char *old[GT_MAX_ENV];
    if (n > GT_MAX_ENV) {
        gt_fail("gt_cuda_env: %d variables, at most %d", n, GT_MAX_ENV);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        old[i] = gt_swap_env(env[i][0], env[i][1]);
    v4_backend *be = gt_cuda(dialect, kv, graphs);
    for (int i = n - 1; i >= 0; i--)
        gt_restore_env(env[i][0], old[i]);
    return be;
}

void gt_close(v4_backend *be)
{
    if (!be)
        return;
    if (strcmp(be->ops->name, "cuda") == 0)
        backend_cuda_destroy(be);
    else
        backend_cpu_destroy(be);
}

void *gt_alloc(v4_backend *be, size_t bytes)
{
    v4_err err;
    void *p = be->ops->alloc(be, bytes ? bytes : 4, &err);
    if (!p)
        gt_fail("%s alloc of %zu bytes: %s", be->ops->name, bytes, err.msg);
    return p;
}

void *gt_up(v4_backend *be, const void *host, size_t bytes)
{
    v4_err err;
    void *p = gt_alloc(be, bytes);
    if (p && bytes && be->ops->upload(be, p, host, bytes, &err)) {
        gt_fail("%s upload: %s", be->ops->name, err.msg);
        be->ops->free(be, p);
        return NULL;
    }
    return p;
}

void gt_down(v4_backend *be, void *host, const void *dev, size_t bytes)
{
    v4_err err;
    if (be->ops->sync(be, &err))
        gt_fail("%s op failed: %s", be->ops->name, err.msg);
    if (bytes && be->ops->download(be, host, dev, bytes, &err))
        gt_fail("%s download: %s", be->ops->name, err.msg);
}

void gt_copy_to(v4_backend *be, void *dev, const void *host, size_t bytes)
{
    v4_err err;
    if (dev && bytes && be->ops->upload(be, dev, host, bytes, &err))
        gt_fail("%s upload: %s", be->ops->name, err.msg);
}

float *gt_nan(v4_backend *be, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    float *d = gt_up(be, h, n * sizeof(float));
    free(h);
    return d;
}

void gt_free(v4_backend *be, void *p)
{
    if (p)
        be->ops->free(be, p);
}

bool gt_sync(v4_backend *be, const char *what)
{
    v4_err err;
    if (be->ops->sync(be, &err)) {
        gt_fail("%s on %s: %s", what, be->ops->name, err.msg);
        return false;
    }
    return true;
}

float *gt_hostf(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

float *gt_randn(tu_rng *r, size_t n, float sd)
{
    float *p = gt_hostf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = tu_normal(r) * sd;
    return p;
}

float *gt_randu(tu_rng *r, size_t n, float lo, float hi)
{
    float *p = gt_hostf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = tu_uniform(r, lo, hi);
    return p;
}

/* Random bytes, 8 at a time (weights of billions of elements). */
static void fill_bytes(tu_rng *r, uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = tu_next(r);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)tu_next(r);
}

/* Scale bytes: binade exponents near log2(mag / typical code magnitude), +-1. */
static void fill_scales(tu_rng *r, uint8_t *s, size_t n, float mag, float code_mag)
{
    const int e0 = (int)lrintf(log2f(mag / code_mag)) + 127;
    for (size_t i = 0; i < n; i++) {
        const int e = e0 + (int)(tu_next(r) % 3) - 1;
        s[i] = (uint8_t)(e < 1 ? 1 : e > 250 ? 250 : e);
    }
}

v4_mat gt_rand_mat(tu_rng *r, wfmt_t fmt, dtype_t dtype, int64_t rows, int64_t cols, float mag, const char *name)
{
    v4_mat m;
    memset(&m, 0, sizeof m);
    m.fmt = fmt;
    m.dtype = dtype;
    m.rows = rows;
    m.cols = cols;
    m.name = name;
    const size_t n = (size_t)(rows * cols);
    uint8_t *data = NULL, *scale = NULL;
    if (fmt == WF_PLAIN && dtype == DT_F32) {
        float *f = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            f[i] = tu_uniform(r, -mag, mag);
        data = (uint8_t *)f;
    } else if (fmt == WF_PLAIN) { /* BF16 / F16 from random bits: exponents around mag */
        uint16_t *h = malloc(n * sizeof(uint16_t));
        const int e0 = (int)lrintf(log2f(mag));
        for (size_t i = 0; i < n; i++) {
            const uint64_t b = tu_next(r);
            const int e = e0 - (int)(b % 6); /* mag * 2^-5 .. mag */
            if (dtype == DT_BF16)
                h[i] = (uint16_t)(((b >> 8) & 0x8000u) | ((uint32_t)(e + 127) << 7) | ((b >> 20) & 0x7Fu));
            else
                h[i] = (uint16_t)(((b >> 8) & 0x8000u) | ((uint32_t)(e + 15) << 10) | ((b >> 20) & 0x3FFu));
        }
        data = (uint8_t *)h;
    } else if (fmt == WF_FP8) {
        data = malloc(n);
        fill_bytes(r, data, n);
        for (size_t i = 0; i < n; i++) {
            if ((data[i] & 0x7F) == 0x7F)
                data[i] ^= 1; /* NaN in OCP (and +-240 in fnuz): use the neighbour */
            if (dtype == DT_F8_E4M3FNUZ && data[i] == 0x80)
                data[i] = 0; /* the fnuz NaN */
        }
        const size_t ns = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128));
        scale = malloc(ns);
        fill_scales(r, scale, ns, mag, 64.0f);
    } else if (fmt == WF_MXFP4) {
        data = malloc(n / 2);
        fill_bytes(r, data, n / 2);
        const size_t ns = n / 32;
        scale = malloc(ns);
        fill_scales(r, scale, ns, mag, 3.0f);
    }
    if (!data) {
        fprintf(stderr, "gt_rand_mat: unsupported format or out of memory\n");
        exit(2);
    }
    m.data = data;
    m.scale = scale;
    return m;
}

void gt_mat_free(v4_mat *m)
{
    free((void *)m->data);
    free((void *)m->scale);
    memset(m, 0, sizeof *m);
}

v4_mat gt_upload_mat(v4_backend *be, const v4_mat *host)
{
    v4_mat d;
    v4_err err;
    if (be->ops->upload_mat(be, &d, host, &err)) {
        gt_fail("%s upload_mat '%s': %s", be->ops->name, host->name, err.msg);
        memset(&d, 0, sizeof d);
    }
    return d;
}

double gt_relerr(const float *got, const float *ref, size_t n, size_t *nan)
{
    double md = 0, mr = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) {
            bad++;
            continue;
        }
        if (!isfinite(ref[i]))
            continue;
        double d = fabs((double)got[i] - ref[i]);
        if (d > md)
            md = d;
        if (fabs(ref[i]) > mr)
            mr = fabs(ref[i]);
    }
    if (nan)
        *nan = bad;
    return mr > 0 ? md / mr : md;
}

bool gt_close_to(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    size_t bad;
    double e = gt_relerr(got, ref, n, &bad);
    if (bad) {
        gt_fail("%s: %zu of %zu values not written or not finite", what, bad, n);
        return false;
    }
    if (!(e <= tol)) {
        gt_fail("%s: rel err %.3e > bound %.0e", what, e, tol);
        return false;
    }
    gt_note("%s: rel err %.3e (bound %.0e)", what, e, tol);
    return true;
}

bool gt_same_ints(const char *what, const int32_t *got, const int32_t *ref, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i]) {
            gt_fail("%s: element %zu is %d, expected %d", what, i, got[i], ref[i]);
            return false;
        }
    return true;
}

gt_step gt_make_step(tu_rng *r, int n_seqs, const int *slots, const int *starts, const int *ntoks,
                     const int32_t *const *bt, int max_blocks, int vocab)
{
    gt_step s;
    memset(&s, 0, sizeof s);
    int n = 0;
    for (int q = 0; q < n_seqs; q++)
        n += ntoks[q];
    s.n_tokens = n;
    s.n_seqs = n_seqs;
    s.max_blocks = max_blocks;
    s.tok_id = calloc((size_t)n + 1, 4);
    s.tok_pos = calloc((size_t)n + 1, 4);
    s.tok_seq = calloc((size_t)n + 1, 4);
    s.seq_slot = calloc((size_t)n_seqs + 1, 4);
    s.seq_start = calloc((size_t)n_seqs + 1, 4);
    s.seq_ntok = calloc((size_t)n_seqs + 1, 4);
    s.seq_row = calloc((size_t)n_seqs + 1, 4);
    s.block_table = calloc((size_t)n_seqs * (max_blocks ? max_blocks : 1) + 1, 4);
    int row = 0;
    for (int q = 0; q < n_seqs; q++) {
        s.seq_slot[q] = slots ? slots[q] : q;
        s.seq_start[q] = starts[q];
        s.seq_ntok[q] = ntoks[q];
        s.seq_row[q] = row;
        for (int b = 0; b < max_blocks; b++)
            s.block_table[q * max_blocks + b] = bt && bt[q] ? bt[q][b] : -1;
        for (int t = 0; t < ntoks[q]; t++, row++) {
            s.tok_id[row] = vocab > 0 ? (int32_t)(tu_next(r) % (uint64_t)vocab) : 0;
            s.tok_pos[row] = starts[q] + t;
            s.tok_seq[row] = q;
        }
    }
    return s;
}

void gt_step_free(gt_step *s)
{
    free(s->tok_id);
    free(s->tok_pos);
    free(s->tok_seq);
    free(s->seq_slot);
    free(s->seq_start);
    free(s->seq_ntok);
    free(s->seq_row);
    free(s->block_table);
    memset(s, 0, sizeof *s);
}

v4_step gt_host_view(const gt_step *s)
{
    v4_step v = {.n_tokens = s->n_tokens, .n_seqs = s->n_seqs, .max_blocks = s->max_blocks, .tok_id = s->tok_id,
                 .tok_pos = s->tok_pos, .tok_seq = s->tok_seq, .seq_slot = s->seq_slot,
                 .seq_start = s->seq_start, .seq_ntok = s->seq_ntok, .seq_row = s->seq_row,
                 .block_table = s->block_table};
    return v;
}

/* ---- timing ---- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define T_CALLS 20
#define T_CALLS_SLOW 4 /* for calls of a millisecond or more */
#define T_SAMPLES 20

double gt_time_calls(v4_backend *be, gt_call_fn f, void *ctx)
{
    v4_err err;
    const double w0 = now_s();
    /* every call the graph will hold, once: whatever a call prepares on
     * first use (the cuBLASLt path's bf16 weight copies) exists before capture */
    for (int i = 0; i < T_CALLS; i++)
        f(be, ctx, i);
    if (!gt_sync(be, "timing warm-up"))
        return NAN;
    const int calls = now_s() - w0 >= T_CALLS * 1e-3 ? T_CALLS_SLOW : T_CALLS;
    void *graph = NULL;
    if (be->ops->capture_begin) {
        if (be->ops->capture_begin(be, &err)) {
            gt_fail("capture_begin: %s", err.msg);
            return NAN;
        }
        for (int i = 0; i < calls; i++)
            f(be, ctx, i);
        if (be->ops->capture_end(be, &graph, &err)) {
            gt_fail("capture_end: %s", err.msg);
            return NAN;
        }
    }
    double s[T_SAMPLES];
    for (int k = 0; k < T_SAMPLES; k++)
        s[k] = NAN;
    for (int k = -1; k < T_SAMPLES; k++) { /* k = -1: warm replay */
        const double t0 = now_s();
        if (graph) {
            if (be->ops->graph_launch(be, graph, &err)) {
                gt_fail("graph_launch: %s", err.msg);
                break;
            }
        } else {
            for (int i = 0; i < calls; i++)
                f(be, ctx, i);
        }
        if (!gt_sync(be, "timed calls"))
            break;
        if (k >= 0)
            s[k] = (now_s() - t0) / calls;
    }
    if (graph)
        be->ops->graph_free(be, graph);
    qsort(s, T_SAMPLES, sizeof *s, cmp_double);
    return (s[T_SAMPLES / 2 - 1] + s[T_SAMPLES / 2]) / 2;
}

typedef struct linear_timing {
    float *y;
    const float *x;
    int n, groups, copies;
    v4_mat *mats;
} linear_timing;

static void linear_call(v4_backend *be, void *ctx, int i)
{
    linear_timing *c = ctx;
    be->ops->linear(be, c->y, c->x, c->n, &c->mats[i % c->copies], c->groups);
}

double gt_time_linear(v4_backend *be, const v4_mat *hm, const float *x, int n, int groups)
{
    const size_t bytes = mat_bytes(hm) + mat_scale_bytes(hm), ny = (size_t)n * hm->rows;
    int copies = (int)((128u << 20) / bytes) + 1;
    copies = copies > 32 ? 32 : copies;
    v4_mat *mats = calloc((size_t)copies, sizeof *mats);
    for (int i = 0; i < copies; i++)
        mats[i] = gt_upload_mat(be, hm);
    linear_timing ctx = {gt_alloc(be, ny * 4), gt_up(be, x, (size_t)n * groups * hm->cols * 4), n, groups, copies,
                         mats};
    double t = NAN;
    if (ctx.y && ctx.x)
        t = gt_time_calls(be, linear_call, &ctx);
    for (int i = 0; i < copies; i++)
        be->ops->free_mat(be, &mats[i]);
    gt_free(be, ctx.y);
    gt_free(be, (void *)ctx.x);
    free(mats);
    return t;
}
