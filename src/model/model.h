/* A loaded model: config, checkpoint mapping, host binding, and the copy of
 * the weights a backend computes with.
 *
 * Memory: matrices stay in their checkpoint formats (FP8 + UE8M0 block
 * scales, MXFP4 + UE8M0, BF16); the CPU backend reads them straight from the
 * memory-mapped checkpoint and dequantizes rows on the fly, so its cost is
 * the checkpoint's size in page cache and nothing more. Small per-channel
 * vectors (norm weights, mHC parameters, sinks, ape, gate bias) are converted
 * to fp32 once at load (a few MB for the full model). */
#ifndef V4_MODEL_MODEL_H
#define V4_MODEL_MODEL_H

#include "backend/backend.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

typedef struct v4_model {
    v4_config cfg;
    st_archive *archive;
    v4_weights host;   /* bound to the mapped checkpoint */
    v4_weights dev;    /* backend copies; vectors as fp32 */
    v4_backend *be;
    float *rope_main;  /* [rope_dim/2] inverse frequencies, backend memory */
    float *rope_comp;  /* compress frequencies (YaRN when configured) */
    void **owned;      /* backend allocations of the fp32 vectors */
    size_t n_owned, cap_owned;
} v4_model;

/* Opens DIR (config.json + safetensors), binds the weights, converts FP8
 * weights to the backend's dialect, and uploads them to the backend. */
int model_open(const char *dir, v4_backend *be, v4_model **out, v4_err *err);
void model_close(v4_model *m);

/* Inverse rope frequencies (MODEL.md 4.2 and 4.6), in double. */
void rope_inv_freq(double theta, int rope_dim, double *out);
void rope_yarn_inv_freq(double theta, int rope_dim, double factor, double orig_max_pos, double beta_fast,
                        double beta_slow, double *out);

#endif
