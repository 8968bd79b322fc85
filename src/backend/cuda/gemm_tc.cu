/* Linear layers on the tensor cores (see gemm_tc.cuh for the core): the
 * path of cu_linear on Hopper for the layers the cuBLASLt path (blas.cu)
 * does not take, and for all of them with V4_CUDA_BLAS=0; V4_CUDA_PLAIN=1
 * selects the SIMT kernels of gemm.cu instead.
 *
 * Grid: x = token tiles of NT (fastest, so the blocks that read the same
 * weight rows run together and share them through L2), y = groups x row
 * blocks (a block never spans two groups). Two kernels with bit-identical
 * results (K in four quarters summed in order): blocks of 128 rows, each
 * warp over all of K; or, when that would leave most multiprocessors idle
 * (a few rows, few tokens: decode of small projections), blocks of 32 rows
 * whose four warps take one K quarter each. NT is the smallest tile of 8,
 * 16, 32 that holds the step's tokens, 64 for more, made smaller while the
 * grid would have fewer blocks than multiprocessors. Results depend on
 * neither choice, so a token's output is the same in any batch. */
#include "backend/cuda/cu_gemm.cuh"
#include "backend/cuda/gemm_tc.cuh"

template <int FMT, int NT>
__global__ __launch_bounds__(TC_THREADS) void linear_tc_kernel(float *__restrict__ y, const float *__restrict__ x,
                                                               int n, cu_wdesc w, int groups, int rblocks, bool wal,
                                                               bool xal)
{
    typedef tc_geom<FMT, NT> G;
    extern __shared__ __align__(16) uint8_t smem[];
    const float **xrows = (const float **)(smem + G::XROWS_OFF);
    const int64_t R = w.rows, C = w.cols, per = R / groups;
    const int64_t g = blockIdx.y / rblocks, rb = blockIdx.y % rblocks;
    const int t0 = blockIdx.x * NT;
    if (threadIdx.x < NT) {
        const int t = t0 + threadIdx.x;
        xrows[threadIdx.x] = t < n ? x + (int64_t)t * groups * C + g * C : NULL;
    }
    tc_rows rs;
    rs.w[0] = rs.w[1] = w;
    rs.base[0] = g * per + rb * TC_ROWS;
    rs.base[1] = rs.base[0] + TC_ROWS / 2;
    rs.end[0] = rs.end[1] = (g + 1) * per;
    const tc_core<FMT, NT> core = {smem, rs, (int)C, tc_core<FMT, NT>::row_bytes(C), (int)(C / 32), wal, xal, xrows};
    float acc[TC_MT][NT / 8][4];
    core.template run<4>(acc);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, c = lane & 3;
#pragma unroll
    for (int t = 0; t < TC_MT; t++)
#pragma unroll
        for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t o = rs.base[t] + 16 * warp + gr + 8 * (e >> 1);
                const int tok = t0 + nt * 8 + 2 * c + (e & 1);
                if (o < rs.end[t] && tok < n)
                    y[(int64_t)tok * R + o] = acc[t][nt][e];
            }
}

/* The split variant: 32 rows per block, warp q over K quarter q. */
template <int FMT, int NT>
__global__ __launch_bounds__(TC_THREADS) void linear_tc_split_kernel(float *__restrict__ y,
                                                                     const float *__restrict__ x, int n, cu_wdesc w,
                                                                     int groups, int rblocks, bool wal, bool xal)
{
    typedef tc_geom<FMT, NT, 4> G;
    extern __shared__ __align__(16) uint8_t smem[];
    const float **xrows = (const float **)(smem + G::XROWS_OFF);
    const int64_t R = w.rows, C = w.cols, per = R / groups;
    const int64_t g = blockIdx.y / rblocks, rb = blockIdx.y % rblocks;
    const int t0 = blockIdx.x * NT;
    if (threadIdx.x < NT) {
        const int t = t0 + threadIdx.x;
        xrows[threadIdx.x] = t < n ? x + (int64_t)t * groups * C + g * C : NULL;
    }
    tc_rows rs;
    rs.w[0] = rs.w[1] = w;
    rs.base[0] = g * per + rb * 32;
    rs.base[1] = rs.base[0] + 16;
    rs.end[0] = rs.end[1] = (g + 1) * per;
    const tc_core<FMT, NT, true> core = {smem, rs, (int)C, tc_core<FMT, NT, true>::row_bytes(C), (int)(C / 32),
                                         wal, xal, xrows};
    float acc[TC_MT][NT / 8][4];
    core.run_split(acc);
    if (threadIdx.x >= 32)
        return; /* warp 0 holds the sums */
    const int lane = threadIdx.x, gr = lane >> 2, c = lane & 3;
#pragma unroll
    for (int t = 0; t < TC_MT; t++)
#pragma unroll
        for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t o = rs.base[t] + gr + 8 * (e >> 1);
                const int tok = t0 + nt * 8 + 2 * c + (e & 1);
                if (o < rs.end[t] && tok < n)
                    y[(int64_t)tok * R + o] = acc[t][nt][e];
            }
}

template <int FMT, int NT>
static void launch_split(cu_backend *cb, float *y, const float *x, int n, const cu_wdesc &d, int groups, int rblocks,
                         bool wal, bool xal)
{
    typedef tc_geom<FMT, NT, 4> G;
    static bool attr_set;
    if (!attr_set) {
        if (!cu_check(cb,
                      cudaFuncSetAttribute(linear_tc_split_kernel<FMT, NT>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)G::SMEM),
                      "linear_tc_split shared memory"))
            return;
        attr_set = true;
    }
    const dim3 grid((unsigned)((n + NT - 1) / NT), (unsigned)(groups * rblocks));
    linear_tc_split_kernel<FMT, NT><<<grid, TC_THREADS, G::SMEM, cb->stream>>>(y, x, n, d, groups, rblocks, wal, xal);
    cu_launched(cb, "linear_tc_split");
}

template <int FMT, int NT>
static void launch_linear(cu_backend *cb, float *y, const float *x, int n, const cu_wdesc &d, int groups,
                          int rblocks, bool wal, bool xal)
{
    typedef tc_geom<FMT, NT> G;
    static bool attr_set; /* once per instantiation, before any capture (the first call runs eagerly) */
    if (!attr_set) {
        if (!cu_check(cb,
                      cudaFuncSetAttribute(linear_tc_kernel<FMT, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)G::SMEM),
                      "linear_tc shared memory"))
            return;
        attr_set = true;
    }
    const dim3 grid((unsigned)((n + NT - 1) / NT), (unsigned)(groups * rblocks));
    linear_tc_kernel<FMT, NT><<<grid, TC_THREADS, G::SMEM, cb->stream>>>(y, x, n, d, groups, rblocks, wal, xal);
    cu_launched(cb, "linear_tc");
}

/* The token tile: the smallest of 8, 16, 32 that holds n tokens, 64 above
 * (a weight is dequantized and read from L2 once per tile: at n = 256, 4
 * times instead of 8), halved while the grid would have fewer blocks than
 * multiprocessors. */
static int pick_nt(int n, int64_t row_blocks, int n_sm)
{
    int nt = n <= 8 ? 8 : n <= 16 ? 16 : n <= 32 ? 32 : 64;
    while (nt > 8 && row_blocks * ((n + nt - 1) / nt) < n_sm)
        nt /= 2;
    return nt;
}

/* TC_NT_DISPATCH with the linear layers' largest tile. */
#define LINEAR_NT_DISPATCH(nt, CALL)                                                                               \
    do {                                                                                                            \
        if ((nt) == 64) { constexpr int NT = 64; CALL; }                                                            \
        else TC_NT_DISPATCH(nt, CALL);                                                                              \
    } while (0)

__global__ void to_bf16_kernel(uint16_t *__restrict__ dst, const float *__restrict__ src, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i]));
}

extern "C" void cu_to_bf16(cu_backend *cb, uint16_t *dst, const float *src, int64_t count)
{
    if (count <= 0)
        return;
    to_bf16_kernel<<<cu_grid(count, 256), 256, 0, cb->stream>>>(dst, src, count);
    cu_launched(cb, "to_bf16");
}

void cu_linear_tc(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups)
{
    const int64_t per = w->rows / groups, rblocks = (per + TC_ROWS - 1) / TC_ROWS;
    const int64_t rb_all = groups * rblocks, rblocks32 = (per + 31) / 32;
    if (groups * rblocks32 > 65535) {
        cu_fail(cb, "linear: '%s' has too many rows (%lld) for the tensor-core grid", w->name ? w->name : "?",
                (long long)w->rows);
        return;
    }
    const cu_wdesc d = cu_desc(w);
    const int64_t rowbytes = fmt == CW_MXFP4 ? w->cols / 2
                             : fmt == CW_F32 ? w->cols * 4
                             : (fmt == CW_BF16 || fmt == CW_F16) ? w->cols * 2
                                                                 : w->cols;
    /* cp.async needs 16-byte aligned rows (and 4-byte aligned MXFP4 scale rows) */
    bool wal = (uintptr_t)w->data % 16 == 0 && rowbytes % 16 == 0;
    if (fmt == CW_MXFP4)
        wal = wal && (uintptr_t)w->scale % 4 == 0 && (w->cols / 32) % 4 == 0;
    const bool xal = (uintptr_t)x % 16 == 0 && w->cols % 4 == 0;
    const int nt = pick_nt(n, rb_all, cb->n_sm);
    if (n <= 16 && rb_all * ((n + nt - 1) / nt) < cb->n_sm) {
        /* few blocks of 128 rows: 32-row blocks, split K, 4x the blocks */
        if (n <= 8)
            CU_FMT_DISPATCH(fmt, (launch_split<FMT, 8>(cb, y, x, n, d, groups, (int)rblocks32, wal, xal)));
        else
            CU_FMT_DISPATCH(fmt, (launch_split<FMT, 16>(cb, y, x, n, d, groups, (int)rblocks32, wal, xal)));
        return;
    }
    CU_FMT_DISPATCH(fmt,
                    LINEAR_NT_DISPATCH(nt, (launch_linear<FMT, NT>(cb, y, x, n, d, groups, (int)rblocks, wal, xal))));
}
