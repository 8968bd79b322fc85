/* cuBLASLt, loaded at run time (dlopen): the binary is linked statically
 * against cudart only, so it runs where the library is absent and then
 * goes without what needs it (the GEMM ceilings of profile.cu, the library
 * path of the linear layers in blas.cu). V4_CUBLASLT names the library file
 * when it is not on the loader's path. NVIDIA builds only. */
#ifndef V4_BACKEND_CUDA_CUBLASLT_CUH
#define V4_BACKEND_CUDA_CUBLASLT_CUH

#include <stddef.h>

#include "backend/gpu.h"

#if GPU_HAS_CUBLASLT
#include <cublasLt.h>

typedef struct lt_api {
    void *lib;
    cublasStatus_t (*create)(cublasLtHandle_t *);
    cublasStatus_t (*destroy)(cublasLtHandle_t);
    cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t *, cublasComputeType_t, cudaDataType_t);
    cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t);
    cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void *, size_t);
    cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t *, cudaDataType, uint64_t, uint64_t, int64_t);
    cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t);
    cublasStatus_t (*layout_set)(cublasLtMatrixLayout_t, cublasLtMatrixLayoutAttribute_t, const void *, size_t);
    cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t *);
    cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t);
    cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void *,
                               size_t);
    cublasStatus_t (*heur)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                           cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                           cublasLtMatmulHeuristicResult_t *, int *);
    cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *,
                             cublasLtMatrixLayout_t, const void *, cublasLtMatrixLayout_t, const void *, const void *,
                             cublasLtMatrixLayout_t, void *, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *,
                             void *, size_t, cudaStream_t);
} lt_api;

/* Fills *lt (which: the file that was opened); -1 when the library or one
 * of its functions is missing. */
int cu_lt_load(lt_api *lt, char *which, size_t n);
#endif

#endif
