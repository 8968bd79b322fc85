/* Hopper's warpgroup matrix multiply (wgmma, sm_90a) in the one form the
 * tensor-core core uses: D(64 x 64, fp32) += A(64 x 16, bf16, registers) *
 * B(16 x 64, bf16, shared memory), issued by the 4 warps of a warpgroup
 * together. Warp w supplies rows 16w..16w+15 of A in the registers of an
 * mma.sync m16n8k16 A fragment and holds the same rows of D as eight m16n8
 * accumulator fragments (d[4j..4j+3]: columns 8j..8j+7), so a kernel built on
 * mma.sync keeps its fragments and replaces 8 n8 products (and their B loads)
 * by one instruction that reads B from shared memory on its own.
 *
 * B is K-major without swizzling: "core matrices" of 8 columns (tokens) x 8
 * k values, each 8 rows of 16 contiguous bytes; the core matrix of column
 * group ng and k half h sits at ng * WG_SBO + h * WG_LBO from the start.
 * Shared-memory writes by the threads must be made visible to the tensor
 * cores' (async) proxy with wg_fence_smem() before a barrier that precedes
 * the wgmma; the registers an in-flight wgmma reads or writes are guarded by
 * ptxas (it serializes where it cannot prove them untouched, with a
 * warning), and wg_wait<N> leaves at most N groups in flight. */
#ifndef V4_BACKEND_CUDA_WGMMA_CUH
#define V4_BACKEND_CUDA_WGMMA_CUH

#include <stdint.h>

#define WG_LBO 128 /* bytes between the two k halves (core matrices adjacent in K) */
#define WG_SBO 256 /* bytes between groups of 8 columns (adjacent in N) */

/* Byte offset of the 4-byte word holding k values (2c, 2c+1) + 8h of
 * column n inside one k16 block of B. */
static __device__ __forceinline__ int wg_b_offset(int n, int c, int h)
{
    return (n >> 3) * WG_SBO + h * WG_LBO + (n & 7) * 16 + c * 4;
}

/* The low word of the matrix descriptor of a k16 block of B at shared
 * address p (16-byte aligned): the address field (bits 0-13, address >> 4)
 * and the leading byte offset; the high word is the constant stride. A
 * block `step` 16-byte units further is wg_desc(lo + step): the address of
 * anything in shared memory (< 256 KB) fits the field without a carry. */
static __device__ __forceinline__ uint32_t wg_desc_lo(const void *p)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    return ((a & 0x3FFFFu) >> 4) | (uint32_t)(WG_LBO >> 4) << 16;
}

static __device__ __forceinline__ uint64_t wg_desc(uint32_t lo) { return (uint64_t)lo | (uint64_t)(WG_SBO >> 4) << 32; }

static __device__ __forceinline__ void wg_fence_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

static __device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

static __device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

template <int N> static __device__ __forceinline__ void wg_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* d += a * B (m64n64k16, bf16 in, fp32 accumulate); d is this thread's
 * 8 n8 fragments [j][4] flattened. */
static __device__ __forceinline__ void wg_mma_64(float (&d)[8][4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint64_t desc)
{
    asm volatile("{\n.reg .pred acc;\nsetp.ne.b32 acc, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
                 "{%32,%33,%34,%35}, %36, acc, 1, 1, 0;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                   "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                   "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
                   "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                   "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
                   "+f"(d[7][2]), "+f"(d[7][3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1)
                 : "memory");
}

#endif
