/* Asynchronous copies from global to shared memory (cp.async, sm_80 on):
 * each thread issues its copies, groups them with tc_commit, and waits for
 * its own groups with tc_wait<N> (at most N left in flight); other threads'
 * copies are visible after that wait and a barrier. */
#ifndef V4_BACKEND_CUDA_CP_ASYNC_CUH
#define V4_BACKEND_CUDA_CP_ASYNC_CUH

/* 16 bytes; `bytes` < 16 reads that many and zero-fills the rest. */
static __device__ __forceinline__ void tc_cp16(void *dst, const void *src, int bytes)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}

/* 4 bytes, the same way (through L1). */
static __device__ __forceinline__ void tc_cp4(void *dst, const void *src, int bytes)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}

static __device__ __forceinline__ void tc_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N> static __device__ __forceinline__ void tc_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

#endif
