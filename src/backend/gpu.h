/* GPU portability layer: the kernel sources of src/backend/cuda build with
 * nvcc for NVIDIA Hopper (sm_90a) and as HIP for AMD CDNA3 (MI300X,
 * gfx942) from this one header.
 *
 * Runtime API: the backend is written against the CUDA runtime names; under
 * HIP they map to their hip* equal (HIP 5.2 headers and later). Where the
 * signatures differ (graph instantiation, kernel attributes of templates,
 * pinned host memory, the shared-memory opt-in) a small shim keeps the
 * call sites unchanged.
 *
 * Warps: GPU_WARP lanes (32 on NVIDIA, 64 on CDNA wavefronts). It is a
 * compile-time constant because host code sizes launches by it (threads per
 * block = warps * GPU_WARP); under HIP the device pass checks it against
 * the target's wavefront size and the backend checks the device's warpSize
 * when it opens. Kernels take lane and warp numbers, shuffles, masks and
 * reduction widths from here and never assume 32 lanes.
 *
 * Fast paths: GPU_HAS_MMA_SYNC marks the NVIDIA tensor-core kernels
 * (mma.sync, ldmatrix, cp.async: gemm_tc.*, attention_tc.cu, indexer_tc.cu,
 * mhc_tc.cu and their dispatch); without it the portable SIMT kernels run.
 * GPU_HAS_CUBLASLT marks what uses cuBLASLt: the ceilings of profile.cu and
 * the library path of the linear layers (blas.cu). */
#ifndef V4_BACKEND_GPU_H
#define V4_BACKEND_GPU_H

#if defined(__HIP__) || defined(__HIP_PLATFORM_AMD__)
#define GPU_HIP 1
#else
#define GPU_HIP 0
#endif

#if GPU_HIP

#include <hip/hip_runtime.h>

#define GPU_PLATFORM "hip"
#define GPU_HAS_MMA_SYNC 0
#define GPU_HAS_CUBLASLT 0
#ifndef GPU_WARP
#define GPU_WARP 64 /* CDNA (gfx9) wavefronts; RDNA would be built with 32 */
#endif
#if defined(__AMDGCN_WAVEFRONT_SIZE) && __AMDGCN_WAVEFRONT_SIZE != GPU_WARP
#error "GPU_WARP differs from the target's wavefront size"
#endif
typedef unsigned long long gpu_lanemask_t;
#define GPU_FULL_MASK (~0ull)
#define GPU_SMEM_MAX (64 * 1024) /* LDS per workgroup on CDNA3; there is no opt-in above it */

/* errors */
#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
/* devices */
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaGetDeviceProperties hipGetDeviceProperties
/* memory */
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMallocHost(p, n) hipHostMalloc((p), (n), hipHostMallocDefault)
#define cudaFreeHost hipHostFree
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
/* streams and events */
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamDestroy hipStreamDestroy
#define cudaEvent_t hipEvent_t
#define cudaEventCreate hipEventCreate
#define cudaEventCreateWithFlags hipEventCreateWithFlags
#define cudaEventDisableTiming hipEventDisableTiming
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaEventDestroy hipEventDestroy
/* graphs (HIP graphs since ROCm 4.3; stream capture as on CUDA) */
#define cudaGraph_t hipGraph_t
#define cudaGraphExec_t hipGraphExec_t
#define cudaStreamBeginCapture hipStreamBeginCapture
#define cudaStreamEndCapture hipStreamEndCapture
#define cudaStreamCaptureModeThreadLocal hipStreamCaptureModeThreadLocal
#define cudaGraphInstantiate(exec, graph, flags) hipGraphInstantiateWithFlags((exec), (graph), (flags))
#define cudaGraphLaunch hipGraphLaunch
#define cudaGraphDestroy hipGraphDestroy
#define cudaGraphExecDestroy hipGraphExecDestroy
/* kernel attributes: HIP takes the kernel as const void *, CUDA as any
 * function pointer (template kernels included) */
#define cudaFuncAttributes hipFuncAttributes
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
template <typename K> static inline hipError_t gpu_func_set_attribute(K *kernel, hipFuncAttribute attr, int value)
{
    return hipFuncSetAttribute((const void *)kernel, attr, value);
}
template <typename K> static inline hipError_t gpu_func_get_attributes(hipFuncAttributes *a, K *kernel)
{
    return hipFuncGetAttributes(a, (const void *)kernel);
}
#define cudaFuncSetAttribute gpu_func_set_attribute
#define cudaFuncGetAttributes gpu_func_get_attributes
/* dynamic shared memory a block may use (HIP has no opt-in beyond the default) */
#define GPU_SMEM_OPTIN(prop) ((size_t)(prop).sharedMemPerBlock)

#else /* NVIDIA */

#include <cuda_runtime.h>

#define GPU_PLATFORM "cuda"
#define GPU_HAS_MMA_SYNC 1
#define GPU_HAS_CUBLASLT 1
#define GPU_WARP 32
typedef unsigned gpu_lanemask_t;
#define GPU_FULL_MASK 0xffffffffu
#define GPU_SMEM_MAX (227 * 1024) /* opt-in shared memory per block on sm_90 */
#define GPU_SMEM_OPTIN(prop) ((size_t)(prop).sharedMemPerBlockOptin)

#endif

/* Warps of the largest block (1024 threads): the size of per-warp partials. */
#define GPU_MAX_WARPS (1024 / GPU_WARP)

#if defined(__CUDACC__) || defined(__HIPCC__)

/* Lane and warp of the calling thread in a one-dimensional block. */
static __device__ __forceinline__ int gpu_lane() { return (int)(threadIdx.x % GPU_WARP); }
static __device__ __forceinline__ int gpu_warp_id() { return (int)(threadIdx.x / GPU_WARP); }

/* Whole-warp shuffles (every lane of the warp takes part). */
template <typename T> static __device__ __forceinline__ T gpu_shfl_xor(T v, int lane_mask)
{
#if GPU_HIP
    return __shfl_xor(v, lane_mask);
#else
    return __shfl_xor_sync(GPU_FULL_MASK, v, lane_mask);
#endif
}

template <typename T> static __device__ __forceinline__ T gpu_shfl(T v, int src_lane)
{
#if GPU_HIP
    return __shfl(v, src_lane);
#else
    return __shfl_sync(GPU_FULL_MASK, v, src_lane);
#endif
}

/* v of lane - delta (own v on lanes below delta). */
template <typename T> static __device__ __forceinline__ T gpu_shfl_up(T v, unsigned delta)
{
#if GPU_HIP
    return __shfl_up(v, delta);
#else
    return __shfl_up_sync(GPU_FULL_MASK, v, delta);
#endif
}

/* Bit l set when pred holds on lane l (GPU_WARP bits). */
static __device__ __forceinline__ gpu_lanemask_t gpu_ballot(int pred)
{
#if GPU_HIP
    return __ballot(pred);
#else
    return __ballot_sync(GPU_FULL_MASK, pred);
#endif
}

/* Signed 64-bit atomic max (HIP 5.2 has no long long overload). */
static __device__ __forceinline__ long long gpu_atomic_max(long long *p, long long v)
{
#if GPU_HIP
    return __hip_atomic_fetch_max(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
#else
    return atomicMax(p, v);
#endif
}

/* Orders the warp's shared-memory accesses before and after (lanes of a
 * wavefront run in lockstep on CDNA, but the compiler and the memory
 * pipeline still need the fence). */
static __device__ __forceinline__ void gpu_syncwarp()
{
#if GPU_HIP
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
#else
    __syncwarp();
#endif
}

#endif /* device compilers */

#endif
