/* mHC's mixing product on tensor cores (the fast path of hc_mix_kernel in
 * mhc.cu, which it is tested against through hc_pre and hc_head): the
 * partials part[t][slice][r] = fn[r] . X_t over a slice of HC_SLICE columns
 * (mhc.cuh), for steps of many tokens.
 *
 * The SIMT kernel's multiply-adds read their operands from shared memory
 * and were held at its rate (an H100 at 2048 tokens: 112 us a call, 75% of
 * the SM's issue, 39% of DRAM). Here a block stages HC_TC_TT tokens' slice
 * of X and the slice of fn (zero rows up to a multiple of 8) with
 * cp.async; warp w multiplies tokens 16 (w % 2).. by every row over
 * columns 64 (w / 2).. with mma.sync m16n8k8 on TF32 operands split in two
 * (x = hi + lo, each TF32; lo*hi + hi*lo + hi*hi, fp32 sums): about 2^-21
 * of each product's size, against 2^-11 for plain TF32, so the partials
 * stay within the fp32 bounds the mHC test holds hc_pre and hc_head to
 * (1e-5). The sums of squares come from the same fragments in fp32. The
 * four column quarters meet in shared memory. */
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/mhc.cuh"

#define HC_TC_TT 32       /* tokens a block: 2 m16 tiles */
#define HC_TC_THREADS 256 /* 8 warps: 2 token tiles x 4 column quarters */
#define HC_TC_NT (HC_TC_MAX_ROWS / 8) /* n8 tiles of rows, at most */
#define HC_TC_KQ (HC_SLICE / 4)       /* columns of a quarter */
#define HC_TC_REC (4 * HC_TC_NT + 2)  /* a lane's sums: its fragments, then two sums of squares */

/* Dynamic shared memory: the tokens' slice x[HC_TC_TT][HC_LD], then fn's
 * f[8 ntiles][HC_LD] (zero rows past `rows`); once the products are done,
 * x holds the upper quarters' sums, rec[quarter - 1][token tile][lane]. */
static size_t hc_tc_smem_bytes(int ntiles)
{
    return ((size_t)HC_TC_TT + 8 * ntiles) * HC_LD * sizeof(float);
}

static __device__ __forceinline__ uint32_t tf32_of(float v)
{
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

/* v = hi + lo, both TF32 (lo: what hi leaves, rounded again). */
static __device__ __forceinline__ void tf32_split(float v, uint32_t &hi, uint32_t &lo)
{
    hi = tf32_of(v);
    lo = tf32_of(v - __uint_as_float(hi));
}

static __device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* grid (slices, token tiles); W a multiple of HC_SLICE, X and fn 16-byte aligned. */
__global__ __launch_bounds__(HC_TC_THREADS) void hc_mix_tc_kernel(float *__restrict__ part,
                                                                  const float *__restrict__ X,
                                                                  const float *__restrict__ fn, int rows, int64_t W,
                                                                  int n)
{
    extern __shared__ __align__(16) float hc_tc_sm[];
    const int ntiles = (rows + 7) / 8;
    float(*x)[HC_LD] = (float(*)[HC_LD])hc_tc_sm;
    float(*f)[HC_LD] = x + HC_TC_TT;
    const int lane = gpu_lane(), warp = gpu_warp_id(), g = lane / 4, q = lane % 4;
    const int mt = warp % 2, kq = warp / 2;
    const int64_t c0 = (int64_t)blockIdx.x * HC_SLICE;
    const int t0 = blockIdx.y * HC_TC_TT, n_slices = gridDim.x;
    constexpr int PIECES = HC_SLICE / 4; /* 16-byte pieces of a row's slice */
    for (int i = threadIdx.x; i < (HC_TC_TT + 8 * ntiles) * PIECES; i += HC_TC_THREADS) {
        const int r = i / PIECES, c = 4 * (i % PIECES);
        if (r < HC_TC_TT) {
            const bool in = t0 + r < n;
            tc_cp16(&x[r][c], X + (in ? (int64_t)(t0 + r) * W : 0) + c0 + c, in ? 16 : 0);
        } else {
            const int fr = r - HC_TC_TT;
            tc_cp16(&f[fr][c], fn + (fr < rows ? (int64_t)fr * W : 0) + c0 + c, fr < rows ? 16 : 0);
        }
    }
    tc_commit();
    tc_wait<0>();
    __syncthreads();
    float acc[HC_TC_NT][4], ss[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < HC_TC_NT; nt++)
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    const float *xa = x[16 * mt + g], *xb = x[16 * mt + g + 8];
#pragma unroll
    for (int k = HC_TC_KQ * kq; k < HC_TC_KQ * (kq + 1); k += 8) {
        /* A (tokens x columns): rows g, g + 8; columns q, q + 4 */
        const float av[4] = {xa[k + q], xb[k + q], xa[k + q + 4], xb[k + q + 4]};
        uint32_t ahi[4], alo[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            tf32_split(av[j], ahi[j], alo[j]);
        ss[0] = fmaf(av[0], av[0], fmaf(av[2], av[2], ss[0]));
        ss[1] = fmaf(av[1], av[1], fmaf(av[3], av[3], ss[1]));
#pragma unroll
        for (int nt = 0; nt < HC_TC_NT; nt++) {
            if (nt >= ntiles)
                break;
            /* B (columns x rows): column g of the tile is fn row 8 nt + g */
            uint32_t bhi[2], blo[2];
            tf32_split(f[8 * nt + g][k + q], bhi[0], blo[0]);
            tf32_split(f[8 * nt + g][k + q + 4], bhi[1], blo[1]);
            mma_tf32(acc[nt], alo, bhi[0], bhi[1]); /* the small terms first */
            mma_tf32(acc[nt], ahi, blo[0], blo[1]);
            mma_tf32(acc[nt], ahi, bhi[0], bhi[1]);
        }
    }
    /* the sums of squares of rows g and g + 8 over the quad's columns */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        ss[r] += gpu_shfl_xor(ss[r], 1);
        ss[r] += gpu_shfl_xor(ss[r], 2);
    }
    __syncthreads(); /* every warp is done with x: it takes the upper quarters' sums */
    float(*rec)[2][GPU_WARP][HC_TC_REC] = (float(*)[2][GPU_WARP][HC_TC_REC])hc_tc_sm;
    if (kq > 0) {
        float *mine = rec[kq - 1][mt][lane];
#pragma unroll
        for (int nt = 0; nt < HC_TC_NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                mine[4 * nt + j] = acc[nt][j];
        mine[4 * HC_TC_NT] = ss[0];
        mine[4 * HC_TC_NT + 1] = ss[1];
    }
    __syncthreads();
    if (kq > 0)
        return;
    /* the quarters added in column order; fragment j of n8 tile nt: token
     * 16 mt + g + 8 (j / 2), row 8 nt + 2 q + j % 2 */
#pragma unroll
    for (int u = 0; u < 3; u++) {
        const float *o = rec[u][mt][lane];
#pragma unroll
        for (int nt = 0; nt < HC_TC_NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                acc[nt][j] += o[4 * nt + j];
        ss[0] += o[4 * HC_TC_NT];
        ss[1] += o[4 * HC_TC_NT + 1];
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int t = t0 + 16 * mt + g + 8 * h;
        if (t >= n)
            continue;
        float *out = part + ((int64_t)t * n_slices + blockIdx.x) * (rows + 1);
#pragma unroll
        for (int nt = 0; nt < HC_TC_NT; nt++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const int r = 8 * nt + 2 * q + c;
                if (nt < ntiles && r < rows)
                    out[r] = acc[nt][2 * h + c];
            }
        if (q == 0)
            out[rows] = ss[h];
    }
}

bool cu_hc_mix_tc(cu_backend *cb, float *part, const float *X, const float *fn, int rows, int64_t W, int n)
{
    static_assert(3 * 2 * GPU_WARP * HC_TC_REC <= HC_TC_TT * HC_LD, "the quarters' sums fit where x was");
    if (rows < 1 || rows > HC_TC_MAX_ROWS || W % HC_SLICE != 0 || ((uintptr_t)X | (uintptr_t)fn) % 16 != 0)
        return false;
    const size_t smem = hc_tc_smem_bytes((rows + 7) / 8);
    if (smem > cb->smem_optin)
        return false;
    if (smem > 48 * 1024 &&
        !cu_check(cb, cudaFuncSetAttribute(hc_mix_tc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                  "cudaFuncSetAttribute (mHC tensor cores)"))
        return false;
    const dim3 grid((unsigned)(W / HC_SLICE), (unsigned)((n + HC_TC_TT - 1) / HC_TC_TT));
    hc_mix_tc_kernel<<<grid, HC_TC_THREADS, smem, cb->stream>>>(part, X, fn, rows, W, n);
    cu_launched(cb, "hc_mix_tc");
    return true;
}
