/* The CUDA backend (NVIDIA Hopper, sm_90a): every op of backend/backend.h
 * as device kernels on one stream the backend owns, weights resident in
 * their checkpoint formats, the KV state in the engine's paged layout. The
 * same sources build as HIP for AMD MI300X (backend/gpu.h, docs/AMD.md),
 * where the backend keeps its name "cuda" and runs the plain kernels.
 *
 * Environment, read once when a backend is created:
 *   V4_KV_DTYPE=f32|bf16|fp8  element type of the stored KV state (sliding
 *       ring, compressed entries, indexer keys), also set by the CLI's
 *       --kv-dtype. f32 is the default (matches the CPU backend to fp32
 *       rounding); bf16 halves the memory; fp8 stores e4m3 codes in the
 *       backend's FP8 dialect with one fp32 scale per stored vector
 *       (amax / max finite). Compressor accumulators are fp32 in every
 *       mode. The CPU backend rounds its KV the same way for the same
 *       setting, so it reproduces each mode.
 *   V4_CUDA_GRAPHS=0  the backend offers no graph capture (capture_begin and
 *       friends are NULL), so the forward pass runs every step eagerly; used
 *       to compare graph replay with eager execution.
 *   V4_CUDA_DEBUG=1   synchronise after every kernel launch outside capture,
 *       so an asynchronous fault is reported by the op that caused it.
 *   V4_CUDA_PLAIN=1   linear layers and MoE experts on the plain SIMT kernels
 *       (fp32 products, the reference) instead of the tensor-core kernels
 *       (bf16 operands, fp32 accumulation: ~1e-3 relative), the default
 *       on NVIDIA. HIP builds have only the plain kernels.
 *   V4_CUDA_BLAS=0, V4_CUDA_BLAS_MIN_TOKENS=N  the cuBLASLt path of linear
 *       layers for steps of at least N tokens (blas.cu): off, or its
 *       threshold.
 *
 * Only these functions are exported; the rest is internal. */
#ifndef V4_BACKEND_CUDA_CUDA_BACKEND_H
#define V4_BACKEND_CUDA_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "backend/backend.h"

/* Opens GPU `device`; fp8_dialect is DT_F8_E4M3 (native on Hopper) or
 * DT_F8_E4M3FNUZ (decoded in software, to prove the kernels dialect-correct;
 * the dialect of MI300X, where a HIP build decodes both in software). */
int backend_cuda_create(int device, dtype_t fp8_dialect, v4_backend **out, v4_err *err);
void backend_cuda_destroy(v4_backend *be);
/* One line saying how this backend computes linear layers (buf); true when
 * the cuBLASLt path is on. */
bool backend_cuda_describe_linear(v4_backend *be, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
