/* Shared by the mHC kernels (mhc.cu; mhc_tc.cu: the mixing product on
 * tensor cores): the layout of the mixing product's partials. */
#ifndef V4_BACKEND_CUDA_MHC_CUH
#define V4_BACKEND_CUDA_MHC_CUH

#include "backend/cuda/cu_device.cuh"

/* part[t][slice][0..rows) = fn[r] . X_t over columns [HC_SLICE slice,
 * HC_SLICE (slice + 1)), part[t][slice][rows] = the sum of X_t^2 there. */
#define HC_SLICE 256
#define HC_LD (HC_SLICE + 4) /* stride of a slice's rows in shared memory: 16-byte aligned */

#if GPU_HAS_MMA_SYNC
/* The partials on tensor cores (mhc_tc.cu) for at most HC_TC_MAX_ROWS
 * rows, W a multiple of HC_SLICE, X and fn 16-byte aligned: false (nothing
 * launched) otherwise. */
#define HC_TC_MAX_ROWS 32
bool cu_hc_mix_tc(cu_backend *cb, float *part, const float *X, const float *fn, int rows, int64_t W, int n);
#endif

#endif
