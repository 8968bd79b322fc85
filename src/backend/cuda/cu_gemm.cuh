/* The SIMT matrix core shared by linear layers and the MoE grouped GEMM:
 * a block of GEMM_THREADS threads computes dot products of up to TT input
 * rows (staged through shared memory in chunks of GEMM_KC columns) with two
 * weight rows per warp, dequantized in registers from their stored format.
 *
 * Lane l of a warp covers columns 4l..4l+3 of every 4 * GPU_WARP columns of
 * each chunk (4l.. and 128+4l.. with 32 lanes; 4l.. with 64): 4-byte (FP8),
 * 8-byte (BF16) or 16-byte (F32) coalesced weight loads, conflict-free
 * float4 reads of the staged inputs. Each lane accumulates in
 * a fixed order and the warp reduces at the end, so a row's result does not
 * depend on which other rows share the tile (batch-invariant). */
#ifndef V4_BACKEND_CUDA_CU_GEMM_CUH
#define V4_BACKEND_CUDA_CU_GEMM_CUH

#include "backend/cuda/cu_device.cuh"

#define GEMM_THREADS 256
#define GEMM_WARPS (GEMM_THREADS / GPU_WARP)
#define GEMM_KC 256
static_assert(GEMM_KC % (4 * GPU_WARP) == 0, "a chunk is whole warp-wide pieces");

/* acc[r][t] += sum_c W_r[c] * x_t[c] over all C columns, for the warp's two
 * weight rows (wa, ra) and (wb, rb) (va/vb false: row absent, stays 0) and
 * the block's TT input rows xrows[t] (NULL: absent row, reads zeros).
 * Every thread of the block must call it (it synchronises). */
template <int FMT, int TT>
static __device__ __forceinline__ void tile_gemm(const cu_wdesc &wa, int64_t ra, bool va, const cu_wdesc &wb,
                                                 int64_t rb, bool vb, int64_t C, bool vec,
                                                 const float *const *xrows, float *xs, float (&acc)[2][TT])
{
    const int lane = gpu_lane();
    for (int64_t k0 = 0; k0 < C; k0 += GEMM_KC) {
        __syncthreads(); /* the previous chunk has been consumed */
        for (int idx = threadIdx.x; idx < TT * GEMM_KC; idx += GEMM_THREADS) {
            const int t = idx / GEMM_KC;
            const int64_t col = k0 + idx % GEMM_KC;
            const float *xr = xrows[t];
            xs[idx] = xr && col < C ? xr[col] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < GEMM_KC / (4 * GPU_WARP); j++) {
            const int cc = j * 4 * GPU_WARP + lane * 4;
            const int64_t col = k0 + cc;
            if (col >= C)
                continue;
            float w0[4] = {0, 0, 0, 0}, w1[4] = {0, 0, 0, 0};
            if (va)
                wload4<FMT>(wa, ra, col, vec, w0);
            if (vb)
                wload4<FMT>(wb, rb, col, vec, w1);
#pragma unroll
            for (int t = 0; t < TT; t++) {
                const float4 xv = *(const float4 *)&xs[t * GEMM_KC + cc];
                float a0 = acc[0][t], a1 = acc[1][t];
                a0 = fmaf(w0[0], xv.x, a0), a1 = fmaf(w1[0], xv.x, a1);
                a0 = fmaf(w0[1], xv.y, a0), a1 = fmaf(w1[1], xv.y, a1);
                a0 = fmaf(w0[2], xv.z, a0), a1 = fmaf(w1[2], xv.z, a1);
                a0 = fmaf(w0[3], xv.w, a0), a1 = fmaf(w1[3], xv.w, a1);
                acc[0][t] = a0, acc[1][t] = a1;
            }
        }
    }
}

/* Dispatches a kernel template over the weight format. */
#define CU_FMT_DISPATCH(fmt, CALL)                                                                                  \
    do {                                                                                                            \
        switch (fmt) {                                                                                              \
        case CW_F32: { constexpr int FMT = CW_F32; CALL; } break;                                                   \
        case CW_BF16: { constexpr int FMT = CW_BF16; CALL; } break;                                                 \
        case CW_F16: { constexpr int FMT = CW_F16; CALL; } break;                                                   \
        case CW_FP8: { constexpr int FMT = CW_FP8; CALL; } break;                                                   \
        case CW_FP8FNUZ: { constexpr int FMT = CW_FP8FNUZ; CALL; } break;                                           \
        default: { constexpr int FMT = CW_MXFP4; CALL; } break;                                                     \
        }                                                                                                           \
    } while (0)

/* Token-tile sizes: 1 for single-token steps, 4 for small batches, 16 for
 * prefill; the dispatch picks one from the number of rows. */
#define CU_TT_DISPATCH(tt, CALL)                                                                                    \
    do {                                                                                                            \
        if ((tt) == 1) { constexpr int TT = 1; CALL; }                                                              \
        else if ((tt) == 4) { constexpr int TT = 4; CALL; }                                                         \
        else { constexpr int TT = 16; CALL; }                                                                       \
    } while (0)

static inline int cu_pick_tt(int64_t rows) { return rows <= 1 ? 1 : rows <= 4 ? 4 : 16; }

#endif
