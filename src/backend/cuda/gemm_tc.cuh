/* The tensor-core matrix core shared by linear layers and the MoE expert
 * GEMMs: y^T = W x^T with mma.sync m16n8k16 (bf16 operands, fp32
 * accumulation), weights dequantized to bf16 on the fly from their stored
 * format (F32, BF16, F16, FP8 in either dialect with UE8M0 128x128 block
 * scales, MXFP4 with UE8M0 per 32).
 *
 * A block of TC_THREADS (4 warps) owns TC_ROWS = 128 weight rows ("slots":
 * slots 0..63 and 64..127 may come from two matrices, w1/w3 of an expert)
 * and NT tokens (8..64). Each warp computes two m16 tiles (slots 16w.. and
 * 64+16w..) against all NT tokens (NT/8 n8 tiles): a weight is read and
 * dequantized once per NT tokens, an x column read once per 128 rows.
 * Weights stream through a cp.async pipeline of STAGES shared-memory
 * stages of 64*UPT bytes per row;
 * each thread reads, per row, the 16-byte units c and c+4 (+8, +12) of a
 * stage (c = lane % 4), dequantizes them in registers straight into A
 * fragments, and multiplies by the block scale in bf16 (exact: a power of
 * two). The K order inside a stage is permuted per format so that each
 * thread's A registers come from its own bytes with a few integer ops; the
 * activations are staged (fp32 -> bf16, from registers loaded one stage
 * ahead; or bf16 as read, XB: the MoE kernels, whose blocks re-read their
 * tokens' rows from L2) into shared memory in the same permuted order, so
 * that each B fragment is one conflict-free 8-byte load. A stage of x is NT*S/128
 * floats a thread; where that passes 64 (MXFP4 at NT = 64) it moves in XP
 * parts, each loaded before and stored after 1/XP of the current stage's
 * weight units.
 *
 * Dequantization (per 32-bit word of packed codes):
 *   MXFP4: nibble pairs (i, i+4) -> bf16x2 as code * 2^-126 by
 *          ((v & 0x000F000F) * 0x1040) & 0x81C081C0 (magnitude to bits 6-8,
 *          sign to bit 15; code 0.5 is a bf16 subnormal), then times
 *          2^(s-1) (s the UE8M0 byte);
 *   FP8:   byte pairs (0,2) and (1,3) -> bf16x2 as value * 2^-120 (OCP) by
 *          placing magnitude at bits 4-10 and the sign at 15, then times
 *          2^(s-7) (2^(s-8) for e4m3fnuz, whose 0x80 NaN is restored);
 *   BF16 as stored; F16 and F32 rounded to bf16.
 * Scales outside the one-multiply range (MXFP4 s > 128, a block scale above
 * 2; FP8 s > 134, 135 in fnuz, a block scale above 2^7) take a second
 * multiply on a warp-uniform slow path, so every finite weight is exact in
 * bf16.
 *
 * Batch invariance: an output element is a fixed sequence of MMAs over its
 * own weight row and token column (stage by stage, k-step by k-step), the
 * same for any NT, STAGES or XP and any other rows or tokens in the tile.
 * Linear layers split K into KQ = 4 contiguous quarters of stages summed as
 * ((p0 + p1) + p2) + p3, a fixed order that the split variant (32-row
 * blocks, one quarter per warp, for grids that would leave SMs idle)
 * reproduces bit for bit. The MoE kernels use one run over K (KQ = 1).
 * At NT = 64 a thread's 64 accumulators take the registers that also held
 * the sum of the finished quarters below: that sum moves to shared memory
 * where it fits beside the stages without costing a resident block (FP8
 * with 3 stages instead of 4, F32, MXFP4), else (BF16, F16) to local
 * memory; either is touched only at the 3 quarter ends and after the last.
 *
 * The MoE's MXFP4 tiles of 64 tokens (WG, moe.cu) keep the A fragments and K
 * order but multiply with wgmma (wgmma.cuh): each k-step is one instruction
 * per tile reading x from shared memory, where x arrives by cp.async in the
 * same stages as the weights (rows stored in tc_wg_perm order), and four
 * warpgroups of 128 rows share each x stage. Same sums, same bits as
 * mma.sync (tc_batch_invariance compares the tiles). */
#ifndef V4_BACKEND_CUDA_GEMM_TC_CUH
#define V4_BACKEND_CUDA_GEMM_TC_CUH

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cu_device.cuh"
#include "backend/cuda/wgmma.cuh"

#define TC_THREADS 128
#define TC_ROWS 128
#define TC_MT 2
#define TC_SMEM_SM (228 * 1024) /* shared memory of an sm_90 multiprocessor, 1 KB of it reserved per block */

/* Per format: UPT 16-byte units per thread per row per stage, EPU elements
 * per unit, STAGES pipeline depth (tc_geom adjusts it per token tile). */
template <int FMT> struct tc_fmt_traits { enum { UPT = 4, EPU = 8, STAGES = 2 }; }; /* BF16, F16 */
template <> struct tc_fmt_traits<CW_F32> { enum { UPT = 4, EPU = 4, STAGES = 2 }; };
template <> struct tc_fmt_traits<CW_FP8> { enum { UPT = 2, EPU = 16, STAGES = 4 }; };
template <> struct tc_fmt_traits<CW_FP8FNUZ> { enum { UPT = 2, EPU = 16, STAGES = 4 }; };
template <> struct tc_fmt_traits<CW_MXFP4> { enum { UPT = 2, EPU = 32, STAGES = 4 }; };

/* NSUB: K sub-stages per block stage (4 in the split variant, one per warp);
 * WG: the core multiplies with wgmma (MXFP4 MoE tiles of 64 pairs, below). */
template <int FMT, int NT, int NSUB = 1, bool WG = false> struct tc_geom {
    enum {
        UPT = tc_fmt_traits<FMT>::UPT,
        EPU = tc_fmt_traits<FMT>::EPU,
        /* the 2-stage formats take a third stage up to NT = 16 (decode of the
         * bf16 head: 2 blocks of 3 stages a multiprocessor keep more bytes in
         * flight than 3 blocks of 2, and 1010 row blocks fill 4 rounds of 264
         * blocks better than 3 of 396); FP8 at NT = 64 makes room for the
         * quarter sums with 3 (each as long as 2 stages at NT = 32); MXFP4
         * up to NT = 16 with 2, so that a multiprocessor holds 4 MoE blocks
         * (moe.cu); with wgmma 2 (202 KB for four warpgroups: one block a
         * multiprocessor) */
        STAGES = WG                                                           ? 2
                 : tc_fmt_traits<FMT>::STAGES == 2 && NT <= 16 && NSUB == 1 ? 3
                 : (FMT == CW_FP8 || FMT == CW_FP8FNUZ) && NT > 32      ? 3
                 : FMT == CW_MXFP4 && NT <= 16 && NSUB == 1             ? 2
                                                                        : tc_fmt_traits<FMT>::STAGES,
        RB = 64 * UPT,          /* bytes of one row in one stage */
        UR = RB / 16,           /* units per row per stage */
        S = 4 * UPT * EPU,      /* columns per stage */
        SPU = EPU / 4,          /* k16 steps per unit */
        KS = UPT * SPU,         /* k16 steps per stage */
        XS_ROW = NT * 32 + 16,  /* bytes of one k-step of staged x (padded against store conflicts) */
        /* warpgroups of TC_THREADS a block, each with its own TC_ROWS rows
         * and weight stages; with wgmma four, which share the x stages: a
         * block of 128 rows was bound by L2 (Nsight Compute, moe up at 2048
         * tokens: L2 at 94%, DRAM 39%; x was 2/3 of the bytes), and the
         * warps wait on their own dequantization chains, so more of them a
         * multiprocessor pay (H100, 8K prefill: moe_experts 57.5 ms with
         * two warpgroups of 255 registers and 3 stages, 49.9 with three of
         * 168 and 2 stages, 48.4 with four of 128, 46.3 once those no
         * longer spilled: wg_rows_of, compute) */
        GROUPS = WG ? 4 : 1,
        W_BYTES = GROUPS * STAGES * TC_ROWS * RB,
        SC_BYTES = FMT == CW_MXFP4 ? GROUPS * STAGES * TC_ROWS * 8 : 0,
        XB_BYTES = KS * XS_ROW,  /* staged x of one sub-stage */
        XOPS = (NSUB * NT * S / 8 + TC_THREADS - 1) / TC_THREADS, /* 8-column x pieces per thread per stage */
        /* x parts per stage: a whole stage ahead up to 8 pieces (64 floats) a
         * thread; beyond (MXFP4 at NT = 64) parts of 8 pieces */
        XP = NSUB == 1 && XOPS > 8 ? XOPS / 8 : 1,
        XOPP = XOPS / XP,        /* pieces per part */
        UPP = UPT / XP,          /* weight units per part */
        XBUFS = WG ? STAGES : 2, /* x buffers: one per stage with WG (copied with the weights), else two */
        XROWS_OFF = W_BYTES + SC_BYTES + XBUFS * NSUB * XB_BYTES,
        TOT_OFF = XROWS_OFF + NT * 8,
        /* the quarter sums of run() above NT = 32, [element][thread], where
         * they leave the number of blocks a multiprocessor holds as it is */
        TOT_ALL = TC_MT * NT / 2 * TC_THREADS * 4,
        TOT_BYTES = NT > 32 && TC_SMEM_SM / (TOT_OFF + TOT_ALL + 1024) == TC_SMEM_SM / (TOT_OFF + 1024) ? TOT_ALL : 0,
        SMEM = TOT_OFF + TOT_BYTES,
    };
    static_assert(XOPS % XP == 0 && UPT % XP == 0, "a stage splits into parts of whole units");
};

/* The sum of the finished quarters in run(), element i of a thread:
 * registers up to NT = 32; above, shared memory at TOT_OFF (TOT_BYTES > 0)
 * or else local memory (volatile keeps either out of registers). */
template <int NT, int TOT_OFF, int TOT_BYTES> struct tc_tot {
    static constexpr int N = TC_MT * NT / 2;
    float reg[NT > 32 ? 1 : N];
    volatile float loc[NT > 32 && TOT_BYTES == 0 ? N : 1];

    __device__ __forceinline__ volatile float *shared(uint8_t *smem) const
    {
        return (volatile float *)(smem + TOT_OFF) + threadIdx.x;
    }
    __device__ __forceinline__ float get(uint8_t *smem, int i) const
    {
        if constexpr (NT <= 32)
            return reg[i];
        else if constexpr (TOT_BYTES > 0)
            return shared(smem)[i * TC_THREADS];
        else
            return loc[i];
    }
    __device__ __forceinline__ void set(uint8_t *smem, int i, float v)
    {
        if constexpr (NT <= 32)
            reg[i] = v;
        else if constexpr (TOT_BYTES > 0)
            shared(smem)[i * TC_THREADS] = v;
        else
            loc[i] = v;
    }
};

/* The 128 weight rows of a block: slot r reads row base[r/64] + r%64 of
 * matrix w[r/64]; rows at or past end[r/64] read as zeros. */
typedef struct tc_rows {
    cu_wdesc w[2];
    int64_t base[2], end[2];
} tc_rows;

/* Position of column q of a 256-column MXFP4 stage in the order the WG core
 * reads x: the order x_store stages it in (the permutation that lets each
 * thread's A fragments come from its own weight bytes), laid out as wgmma's
 * B rows: 16-byte pieces (k-step j, k half h) of 4 words (thread column c),
 * each word the pair (2c, 2c+1) + 8h of k-step j. A row stored so is copied
 * to shared memory without touching registers. */
static __host__ __device__ __forceinline__ int tc_wg_perm(int q)
{
    const int U = q >> 5, e = q & 7;
    const int j = (U >> 2) * 8 + 2 * ((q >> 3) & 3) + ((e >> 1) & 1);
    return ((j * 2 + (e & 1)) * 4 + (U & 3)) * 2 + (e >> 2);
}

/* ---- PTX wrappers ---- */

/* d += a * b for one m16n8k16 tile (bf16 in, fp32 accumulate). */
static __device__ __forceinline__ void tc_mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* bf16x2 product, round to nearest (exact here: one factor is a power of two). */
static __device__ __forceinline__ uint32_t tc_bmul(uint32_t a, uint32_t b)
{
    uint32_t d;
    asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

/* Two floats as bf16x2 (lo in the low half), round to nearest even. */
static __device__ __forceinline__ uint32_t tc_pack(float lo, float hi)
{
    uint32_t d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

/* Elements i and k of a staged piece of 8 columns as bf16x2 (i in the low
 * half): from fp32 values, rounded; from bf16 pairs (word e holds elements
 * 2e, low half, and 2e + 1), moved (i, k are constants after unrolling). */
static __device__ __forceinline__ uint32_t tc_pair(const float (&v)[8], int i, int k) { return tc_pack(v[i], v[k]); }

static __device__ __forceinline__ uint32_t tc_pair(const uint32_t (&w)[4], int i, int k)
{
    return __byte_perm(w[i >> 1], w[k >> 1], ((i & 1) ? 0x32u : 0x10u) | ((k & 1) ? 0x7600u : 0x5400u));
}

/* ---- dequantization of one k16 step (KSU-th of its unit) ---- */

template <int I> static __device__ __forceinline__ uint32_t tc_u4(const uint4 &v)
{
    return I == 0 ? v.x : I == 1 ? v.y : I == 2 ? v.z : v.w;
}


/* e4m3fnuz 0x80 is NaN: halves that decoded to -0 become NaN. */
static __device__ __forceinline__ uint32_t tc_fnuz_nan(uint32_t x)
{
    const uint32_t y = x ^ 0x80008000u;                               /* zero halves where x was -0 */
    const uint32_t nz = ((y & 0x7FFF7FFFu) + 0x7FFF7FFFu) | y;        /* msb of a half: half nonzero */
    return x | (((~nz & 0x80008000u) >> 15) * 0x7FC0u);
}

/* lo = bf16x2 for slots 0,1 of the thread's fragment, hi for slots 2,3
 * (unscaled: MXFP4 code * 2^-126, FP8 value * 2^-120). */
template <int FMT, int KSU>
static __device__ __forceinline__ void tc_deq(const uint4 &r, uint32_t &lo, uint32_t &hi)
{
    if (FMT == CW_MXFP4) {
        uint32_t v = tc_u4<KSU / 2>(r);
        if (KSU & 1)
            v >>= 8;
        lo = ((v & 0x000F000Fu) * 0x1040u) & 0x81C081C0u;
        hi = ((v & 0x00F000F0u) * 0x104u) & 0x81C081C0u;
    } else if (FMT == CW_FP8 || FMT == CW_FP8FNUZ) {
        const uint32_t v = tc_u4<KSU>(r);
        lo = ((v << 4) & 0x07F007F0u) | ((v << 8) & 0x80008000u);
        hi = ((v >> 4) & 0x07F007F0u) | (v & 0x80008000u);
        if (FMT == CW_FP8FNUZ) {
            lo = tc_fnuz_nan(lo);
            hi = tc_fnuz_nan(hi);
        }
    } else if (FMT == CW_BF16) {
        lo = tc_u4<2 * KSU>(r);
        hi = tc_u4<2 * KSU + 1>(r);
    } else if (FMT == CW_F16) {
        const uint32_t a = tc_u4<2 * KSU>(r), b = tc_u4<2 * KSU + 1>(r);
        lo = tc_pack(f16_to_f32((uint16_t)a), f16_to_f32((uint16_t)(a >> 16)));
        hi = tc_pack(f16_to_f32((uint16_t)b), f16_to_f32((uint16_t)(b >> 16)));
    } else { /* F32 */
        lo = tc_pack(__uint_as_float(r.x), __uint_as_float(r.y));
        hi = tc_pack(__uint_as_float(r.z), __uint_as_float(r.w));
    }
}

/* tc_deq with a k-step that is a constant after unrolling. */
template <int FMT>
static __device__ __forceinline__ void tc_deq_at(int ks, const uint4 &r, uint32_t &lo, uint32_t &hi)
{
    constexpr int SPU = tc_fmt_traits<FMT>::EPU / 4;
    switch (ks) {
    case 0: tc_deq<FMT, 0>(r, lo, hi); break;
    case 1: tc_deq<FMT, 1 % SPU>(r, lo, hi); break;
    case 2: tc_deq<FMT, 2 % SPU>(r, lo, hi); break;
    case 3: tc_deq<FMT, 3 % SPU>(r, lo, hi); break;
    case 4: tc_deq<FMT, 4 % SPU>(r, lo, hi); break;
    case 5: tc_deq<FMT, 5 % SPU>(r, lo, hi); break;
    case 6: tc_deq<FMT, 6 % SPU>(r, lo, hi); break;
    default: tc_deq<FMT, 7 % SPU>(r, lo, hi); break;
    }
}

/* Scale multipliers of scale byte s: m1 (and m2 on the slow path, where
 * m1 * m2 is applied in two exact steps). `big` when s needs the slow path. */
template <int FMT> static __device__ __forceinline__ bool tc_scale_big(uint32_t s)
{
    return FMT == CW_MXFP4 ? s > 128u : FMT == CW_FP8 ? s > 134u : s > 135u;
}

template <int FMT, bool BIG>
static __device__ __forceinline__ void tc_scale_mul(uint32_t s, uint32_t &m1, uint32_t &m2)
{
    /* fast: 2^(s-1) (MXFP4), 2^(s-7) (OCP), 2^(s-8) (fnuz), one bf16 each */
    const uint32_t off = FMT == CW_MXFP4 ? 0x3F003F00u : FMT == CW_FP8 ? 0x3C003C00u : 0x3B803B80u;
    m1 = s * 0x00800080u + off;
    m2 = 0x3F803F80u; /* 1.0 */
    if (BIG && tc_scale_big<FMT>(s)) {
        m1 = FMT == CW_MXFP4 ? 0x7E807E80u : FMT == CW_FP8 ? 0x7B807B80u : 0x7B007B00u; /* 2^126, 2^120, 2^119 */
        m2 = s == 255u ? 0x7FC07FC0u : s * 0x00800080u;                                  /* 2^(s-127) or NaN */
    }
}

/* Activations as the core reads them: fp32 (converted to bf16 when staged)
 * or already bf16 (XB: half the bytes through L2, and the same bf16 values,
 * since both round to nearest even). A staged piece of 8 columns is 8
 * floats or 4 words of bf16 pairs. */
template <bool XB> struct tc_x {
    typedef float elem;
    typedef float word;
    enum { WORDS = 8 };
};
template <> struct tc_x<true> {
    typedef uint16_t elem;
    typedef uint32_t word;
    enum { WORDS = 4 };
};

/* ---- the block's pipeline ---- */

/* SPLIT false: TC_ROWS rows; warp w computes tiles at slots 16w and 64+16w
 * (rows base[0] + 16w.., base[1] + 16w..) over all of K.
 * SPLIT true (linear layers only: w[0] == w[1]): 32 rows (tiles at base[0]
 * and base[1] = base[0] + 16); warp q computes K quarter q (stages
 * q*per_q .. (q+1)*per_q - 1), a block stage holding one sub-stage per
 * warp (slots 32q + 16t + i), and the quarters are summed in order at the
 * end: the same sums in the same order as SPLIT false with KQ = 4.
 * WG (NT = 64, SPLIT false): each k-step's two tiles are one wgmma each
 * (wgmma.cuh), the staged x laid out as its B operand; the A fragments, the
 * K order and the accumulator fragments are those of mma.sync. A block is
 * G::GROUPS warpgroups, each with its own rows (rs, set per thread) and
 * weight buffers, all reading one x tile. */
template <int FMT, int NT, bool SPLIT = false, bool XB = false, bool WG = false> struct tc_core {
    static_assert(!WG || (NT == 64 && !SPLIT), "wgmma tiles are 64 tokens of the unsplit core");
    static constexpr int NSUB = SPLIT ? 4 : 1;
    typedef tc_geom<FMT, NT, NSUB, WG> G;
    typedef typename tc_x<XB>::elem xelem;
    typedef typename tc_x<XB>::word xword;
    static constexpr int XW = tc_x<XB>::WORDS;
    static constexpr bool SCALED = FMT == CW_MXFP4 || FMT == CW_FP8 || FMT == CW_FP8FNUZ;
    uint8_t *smem;
    tc_rows rs;
    int C, rowbytes, srowbytes; /* columns, bytes of a row, bytes of an MXFP4 scale row */
    bool wal, xal; /* xal: x rows 16-byte aligned with a multiple of 4 (fp32) or 8 (bf16) columns */
    const xelem *const *xrows;

    static __device__ __forceinline__ int row_bytes(int64_t C)
    {
        return (int)(FMT == CW_MXFP4 ? C / 2 : FMT == CW_F32 ? C * 4 : (FMT == CW_BF16 || FMT == CW_F16) ? C * 2 : C);
    }

    /* This thread's warpgroup, and its index in it. */
    static __device__ __forceinline__ int grp() { return G::GROUPS > 1 ? threadIdx.x / TC_THREADS : 0; }
    static __device__ __forceinline__ int tid() { return G::GROUPS > 1 ? threadIdx.x % TC_THREADS : threadIdx.x; }

    /* The warpgroup's weight and scale buffers of stage buffer b. */
    __device__ __forceinline__ uint8_t *wbuf(int b) const
    {
        return smem + (grp() * G::STAGES + b) * (TC_ROWS * G::RB);
    }
    __device__ __forceinline__ uint8_t *sbuf(int b) const
    {
        return smem + G::W_BYTES + (grp() * G::STAGES + b) * (TC_ROWS * 8);
    }
    /* x buffer b of G::XBUFS */
    __device__ __forceinline__ uint8_t *xbuf(int b) const
    {
        return smem + G::W_BYTES + G::SC_BYTES + b * (NSUB * G::XB_BYTES);
    }
    /* Stage of K read by sub-stage q of block stage i. */
    static __device__ __forceinline__ int stage_of(int i, int q, int per_q) { return SPLIT ? q * per_q + i : i; }

    /* Issues the copies of block stage i into buffer b (cp.async when the
     * rows are 16-byte aligned; element loads otherwise). Zero-fills rows
     * past their end and bytes past the row (a 0-byte cp.async reads
     * nothing; its source is still an address inside the matrix). Thread
     * pairs cover 32-byte sectors: thread i copies the even or odd units of
     * slots i/2 and 64 + i/2. */
    __device__ __forceinline__ void load_stage(int i, int b, int per_q) const
    {
        uint8_t *wd = wbuf(b), *sd = sbuf(b);
        const int r0 = tid() >> 1, odd = tid() & 1;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = 64 * h + r0, swz = (r & 1) << 2;
            int64_t row;
            bool valid;
            int st;
            if (SPLIT) {
                const int t = (r >> 4) & 1;
                row = (t ? rs.base[1] : rs.base[0]) + (r & 15);
                valid = row < rs.end[0];
                st = stage_of(i, r >> 5, per_q);
            } else {
                row = (h ? rs.base[1] : rs.base[0]) + r0;
                valid = row < (h ? rs.end[1] : rs.end[0]);
                st = i;
            }
            const uint8_t *r_start = (h && !SPLIT ? rs.w[1].data : rs.w[0].data) + (valid ? row : 0) * rowbytes;
            const uint8_t *rp = r_start + st * G::RB;
            const int lim = valid ? rowbytes - st * G::RB : 0; /* bytes of the row from the stage start */
            uint8_t *dst0 = wd + r * G::RB;
#pragma unroll
            for (int u = 0; u < G::UR / 2; u++) {
                const int off = 16 * (2 * u + odd);
                uint8_t *dst = dst0 + 16 * ((2 * u + odd) ^ swz);
                if (wal) {
                    tc_cp16(dst, off < lim ? rp + off : r_start, off < lim ? 16 : 0);
                } else {
                    uint32_t v[4] = {0, 0, 0, 0};
                    for (int e = 0; e < 16; e++)
                        if (off + e < lim)
                            v[e >> 2] |= (uint32_t)__ldg(rp + off + e) << (8 * (e & 3));
                    *(uint4 *)dst = make_uint4(v[0], v[1], v[2], v[3]);
                }
            }
            if (FMT == CW_MXFP4) { /* the row's 8 scale bytes of the stage, 4 per thread */
                const uint8_t *s_start =
                    (h && !SPLIT ? rs.w[1].scale : rs.w[0].scale) + (valid ? row : 0) * srowbytes;
                const uint8_t *sp = s_start + st * 8 + 4 * odd;
                const int slim = valid ? srowbytes - st * 8 - 4 * odd : 0;
                uint8_t *dst = sd + r * 8 + 4 * odd;
                if (wal) {
                    tc_cp4(dst, slim >= 4 ? sp : s_start, slim >= 4 ? 4 : 0);
                } else {
                    uint32_t v = 0;
                    for (int e = 0; e < 4; e++)
                        if (e < slim)
                            v |= (uint32_t)__ldg(sp + e) << (8 * e);
                    *(uint32_t *)dst = v;
                }
            }
        }
    }

    /* WG: the two weight rows this thread copies (slots tid/2 and 64 +
     * tid/2), found once per block: a row past its matrix's end is copied
     * as zeros from the matrix's last row (a 0-byte cp.async still takes an
     * address inside it). WG blocks run only on 16-byte aligned rows. */
    struct wg_rows {
        const uint8_t *data[2], *scale[2];
        bool valid[2];
    };
    __device__ __forceinline__ wg_rows wg_rows_of() const
    {
        wg_rows r;
        const int r0 = tid() >> 1;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t row = rs.base[h] + r0, at = row < rs.end[h] ? row : rs.end[h] - 1;
            r.valid[h] = row < rs.end[h];
            r.data[h] = rs.w[h].data + at * rowbytes;
            r.scale[h] = rs.w[h].scale + at * srowbytes;
        }
        return r;
    }

    /* WG: load_stage from the rows of wg_rows_of: four pointers held
     * instead of the matrices' descriptors and row ranges, which spilled at
     * 128 registers, and whose reloads after each stage's copies were the
     * largest single stall (Nsight Compute source counters at 2048 tokens:
     * 8% of the up kernel's warp samples, 15% of the down kernel's). */
    __device__ __forceinline__ void load_stage_wg(const wg_rows &src, int i, int b) const
    {
        static_assert(WG && FMT == CW_MXFP4, "the WG blocks' rows are MXFP4");
        uint8_t *wd = wbuf(b), *sd = sbuf(b);
        const int r0 = tid() >> 1, odd = tid() & 1;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = 64 * h + r0, swz = (r & 1) << 2;
            const uint8_t *rp = src.data[h] + i * G::RB;
#pragma unroll
            for (int u = 0; u < G::UR / 2; u++) {
                const int off = 16 * (2 * u + odd);
                tc_cp16(wd + r * G::RB + 16 * ((2 * u + odd) ^ swz), rp + off, src.valid[h] ? 16 : 0);
            }
            tc_cp4(sd + r * 8 + 4 * odd, src.scale[h] + i * 8 + 4 * odd, src.valid[h] ? 4 : 0);
        }
    }

    /* Loads this thread's pieces of part p of the x columns of block stage i. */
    __device__ __forceinline__ void x_load(int i, int per_q, int p, xword (&xv)[G::XOPP][XW]) const
    {
        constexpr int OPS = NT * G::S / 8; /* per sub-stage */
#pragma unroll
        for (int j = 0; j < G::XOPP; j++) {
            const int o = threadIdx.x + (p * G::XOPP + j) * TC_THREADS, q = o / OPS, rest = o % OPS;
            const int n = rest / (G::S / 8), p = (rest % (G::S / 8)) * 8;
            const xelem *xr = o < NSUB * OPS ? xrows[n] : NULL;
            const int col = stage_of(i, q, per_q) * G::S + p;
            if constexpr (XB) {
                if (xr && xal && col + 8 <= C) {
                    const uint4 u = __ldg((const uint4 *)(xr + col));
                    xv[j][0] = u.x, xv[j][1] = u.y, xv[j][2] = u.z, xv[j][3] = u.w;
                } else {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        xv[j][e] = (xr && col + 2 * e < C ? (uint32_t)xr[col + 2 * e] : 0u) |
                                   (xr && col + 2 * e + 1 < C ? (uint32_t)xr[col + 2 * e + 1] << 16 : 0u);
                }
            } else if (xr && xal && col + 8 <= C) {
                const float4 a = __ldg((const float4 *)(xr + col)), b = __ldg((const float4 *)(xr + col + 4));
                xv[j][0] = a.x, xv[j][1] = a.y, xv[j][2] = a.z, xv[j][3] = a.w;
                xv[j][4] = b.x, xv[j][5] = b.y, xv[j][6] = b.z, xv[j][7] = b.w;
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    xv[j][e] = xr && col + e < C ? __ldg(xr + col + e) : 0.0f;
            }
        }
    }

    /* Stores the pieces of part p as bf16 into x buffer b in the stage's
     * permuted order: entry (k-step ks, token n, thread column c) holds the 4
     * values that thread c's B fragment for ks needs. */
    __device__ __forceinline__ void x_store(int b, int p, const xword (&xv)[G::XOPP][XW]) const
    {
        constexpr int OPS = NT * G::S / 8;
#pragma unroll
        for (int j = 0; j < G::XOPP; j++) {
            const int o = threadIdx.x + (p * G::XOPP + j) * TC_THREADS;
            if (G::XOPS * TC_THREADS > NSUB * OPS && o >= NSUB * OPS)
                continue;
            const int q = o / OPS, rest = o % OPS;
            const int n = rest / (G::S / 8), p = (rest % (G::S / 8)) * 8;
            uint8_t *xb = xbuf(b) + q * G::XB_BYTES;
            const xword(&v)[XW] = xv[j];
            int ks0, ks1, c0, c1;
            uint32_t a0, a1, b0, b1;
            if (FMT == CW_MXFP4) {
                const int U = p >> 5;
                c0 = c1 = U & 3;
                ks0 = (U >> 2) * 8 + 2 * ((p >> 3) & 3), ks1 = ks0 + 1;
                a0 = tc_pair(v, 0, 4), a1 = tc_pair(v, 1, 5);
                b0 = tc_pair(v, 2, 6), b1 = tc_pair(v, 3, 7);
            } else if (FMT == CW_FP8 || FMT == CW_FP8FNUZ) {
                const int U = p >> 4;
                c0 = c1 = U & 3;
                ks0 = (U >> 2) * 4 + ((p >> 2) & 3), ks1 = ks0 + 1;
                a0 = tc_pair(v, 0, 2), a1 = tc_pair(v, 1, 3);
                b0 = tc_pair(v, 4, 6), b1 = tc_pair(v, 5, 7);
            } else if (FMT == CW_F32) {
                const int U = p >> 2;
                c0 = U & 3, c1 = c0 + 1;
                ks0 = ks1 = U >> 2;
                a0 = tc_pair(v, 0, 1), a1 = tc_pair(v, 2, 3);
                b0 = tc_pair(v, 4, 5), b1 = tc_pair(v, 6, 7);
            } else { /* BF16, F16 */
                const int U = p >> 3;
                c0 = c1 = U & 3;
                ks0 = (U >> 2) * 2, ks1 = ks0 + 1;
                a0 = tc_pair(v, 0, 1), a1 = tc_pair(v, 2, 3);
                b0 = tc_pair(v, 4, 5), b1 = tc_pair(v, 6, 7);
            }
            *(uint2 *)(xb + ks0 * G::XS_ROW + n * 32 + c0 * 8) = make_uint2(a0, a1);
            *(uint2 *)(xb + ks1 * G::XS_ROW + n * 32 + c1 * 8) = make_uint2(b0, b1);
        }
    }

    /* WG: copies stage i of the tile's x rows, stored in tc_wg_perm order,
     * into x buffer b as the wgmma B operand: each 16 bytes of a row are one
     * core-matrix row (k-step j, half h), so the copy is cp.async alone.
     * Rows past the tile's pairs are zero-filled. */
    __device__ __forceinline__ void x_copy(int i, int b) const
    {
        constexpr int CHUNKS = 2 * G::KS, THREADS = G::GROUPS * TC_THREADS; /* 16-byte pieces of a row's stage */
        static_assert(NT * CHUNKS % THREADS == 0, "whole pieces per thread");
        uint8_t *xb = xbuf(b);
#pragma unroll
        for (int q = 0; q < NT * CHUNKS / THREADS; q++) {
            const int o = threadIdx.x + q * THREADS, n = o / CHUNKS, ch = o % CHUNKS;
            const xelem *xr = xrows[n];
            const uint8_t *src = xr ? (const uint8_t *)(xr + i * G::S) + 16 * ch : (const uint8_t *)xrows[0];
            tc_cp16(xb + (ch >> 1) * G::XS_ROW + wg_b_offset(n, 0, ch & 1), src, xr ? 16 : 0);
        }
    }

    /* All of block stage i's x into buffer 0 (the first stage, before the loop). */
    __device__ __forceinline__ void x_stage(int i, int per_q) const
    {
#pragma unroll
        for (int p = 0; p < G::XP; p++) {
            xword xv[G::XOPP][XW];
            x_load(i, per_q, p, xv);
            x_store(0, p, xv);
        }
    }

    /* FP8: this thread's four block-scale bytes for stage st (rows g, g+8 of
     * both tiles; 0 past the rows or the stages). */
    __device__ __forceinline__ void fp8_scales(int st, int nst, uint32_t (&s)[TC_MT][2]) const
    {
        const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
        const int scols = (C + 127) / 128;
#pragma unroll
        for (int t = 0; t < TC_MT; t++)
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                const int64_t row = (t ? rs.base[1] : rs.base[0]) + (SPLIT ? 0 : 16 * warp) + g + 8 * hr;
                const uint8_t *scale = t && !SPLIT ? rs.w[1].scale : rs.w[0].scale;
                s[t][hr] = row < (t ? rs.end[1] : rs.end[0]) && st < nst ? __ldg(scale + (row >> 7) * scols + st) : 0u;
            }
    }

    /* Slot of row g of tile t for this warp. */
    static __device__ __forceinline__ int slot0(int t)
    {
        const int warp = tid() >> 5;
        return SPLIT ? 32 * warp + 16 * t : 64 * t + 16 * warp;
    }

    /* A fragment registers (slots 01 / 23) of k-step ks of a unit, scaled. */
    template <bool BIG>
    static __device__ __forceinline__ void deq_scaled(int ks, const uint4 &raw, uint32_t m1, uint32_t m2,
                                                      uint32_t (&a)[2])
    {
        tc_deq_at<FMT>(ks, raw, a[0], a[1]);
        if (SCALED) {
            a[0] = tc_bmul(a[0], m1), a[1] = tc_bmul(a[1], m1);
            if (BIG)
                a[0] = tc_bmul(a[0], m2), a[1] = tc_bmul(a[1], m2);
        }
    }

    /* The multipliers of a row's weights in unit u (MXFP4: the row's scale
     * byte of the unit in buffer sb; FP8: its block scale fs). */
    template <bool BIG>
    static __device__ __forceinline__ void row_scale(const uint8_t *sb, int slot, int u, uint32_t fs, uint32_t &m1,
                                                     uint32_t &m2)
    {
        if (FMT == CW_MXFP4)
            tc_scale_mul<FMT, BIG>(sb[slot * 8 + (threadIdx.x & 3) + 4 * u], m1, m2);
        else if (SCALED)
            tc_scale_mul<FMT, BIG>(fs, m1, m2);
        else
            m1 = m2 = 0;
    }

    /* Part p of one stage of this warp: acc[t][nt] += W_tile(t) . x_tile(nt)
     * over the k-steps of units p*UPP .. (p+1)*UPP - 1, from weight buffer b
     * and x sub-buffer xb. */
    template <bool BIG>
    __device__ __forceinline__ void compute(int b, const uint8_t *xb, const uint32_t (&fs)[TC_MT][2], int p,
                                            float (&acc)[TC_MT][NT / 8][4]) const
    {
        const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
        const uint8_t *wb = wbuf(b), *sb = sbuf(b);
#pragma unroll
        for (int uu = 0; uu < G::UPP; uu++) {
            const int u = p * G::UPP + uu;
            uint32_t m1[TC_MT][2], m2[TC_MT][2];
            if constexpr (WG) {
                const uint8_t *unit[TC_MT][2]; /* this thread's 16 bytes of the unit in each of its 4 rows */
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
#pragma unroll
                    for (int hr = 0; hr < 2; hr++) {
                        const int slot = slot0(t) + g + 8 * hr;
                        unit[t][hr] = wb + slot * G::RB + 16 * ((c + 4 * u) ^ ((g & 1) << 2));
                        row_scale<BIG>(sb, slot, u, fs[t][hr], m1[t][hr], m2[t][hr]);
                    }
                /* a word of each row at a time (MXFP4: two k-steps), 4
                 * registers instead of the unit's 16: at four warpgroups a
                 * thread has 128 (with wg_rows, the up kernel spills 4
                 * bytes and the down kernel none, against 16 and 32) */
#pragma unroll
                for (int wd = 0; wd < G::SPU / 2; wd++) {
                    uint4 raw[TC_MT][2];
#pragma unroll
                    for (int t = 0; t < TC_MT; t++)
#pragma unroll
                        for (int hr = 0; hr < 2; hr++) {
                            const uint32_t v = *(const uint32_t *)(unit[t][hr] + 4 * wd);
                            raw[t][hr] = make_uint4(v, v, v, v); /* tc_deq reads word ks / 2 = wd */
                        }
                    kstep<BIG>(2 * wd, u * G::SPU + 2 * wd, raw, m1, m2, xb, acc);
                    kstep<BIG>(2 * wd + 1, u * G::SPU + 2 * wd + 1, raw, m1, m2, xb, acc);
                }
            } else {
                uint4 raw[TC_MT][2];
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
#pragma unroll
                    for (int hr = 0; hr < 2; hr++) {
                        const int slot = slot0(t) + g + 8 * hr;
                        raw[t][hr] = *(const uint4 *)(wb + slot * G::RB + 16 * ((c + 4 * u) ^ ((g & 1) << 2)));
                        row_scale<BIG>(sb, slot, u, fs[t][hr], m1[t][hr], m2[t][hr]);
                    }
#pragma unroll
                for (int ks = 0; ks < G::SPU; ks++)
                    kstep<BIG>(ks, u * G::SPU + ks, raw, m1, m2, xb, acc);
            }
        }
    }

    /* k-step ks of a unit (j of the stage): both tiles against every token. */
    template <bool BIG>
    __device__ __forceinline__ void kstep(int ks, int j, const uint4 (&raw)[TC_MT][2], const uint32_t (&m1)[TC_MT][2],
                                          const uint32_t (&m2)[TC_MT][2], const uint8_t *xb,
                                          float (&acc)[TC_MT][NT / 8][4]) const
    {
        if constexpr (WG) {
            uint32_t a[TC_MT][2][2]; /* [tile][row g / g+8][slots 01 / 23] */
#pragma unroll
            for (int t = 0; t < TC_MT; t++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++)
                    deq_scaled<BIG>(ks, raw[t][hr], m1[t][hr], m2[t][hr], a[t][hr]);
            static_assert(G::XS_ROW % 16 == 0, "k-steps of x at 16-byte steps");
            const uint64_t desc = wg_desc(wg_desc_lo(xb) + j * (G::XS_ROW / 16));
            wg_fence();
#pragma unroll
            for (int t = 0; t < TC_MT; t++)
                wg_mma_64(acc[t], a[t][0][0], a[t][1][0], a[t][0][1], a[t][1][1], desc);
            wg_commit();
            wg_wait<1>(); /* the previous k-step's pair is done; this one runs on */
        } else {
            const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
            uint32_t bf[NT / 8][2];
#pragma unroll
            for (int nt = 0; nt < NT / 8; nt++) {
                const uint2 v = *(const uint2 *)(xb + j * G::XS_ROW + (nt * 8 + g) * 32 + c * 8);
                bf[nt][0] = v.x, bf[nt][1] = v.y;
            }
#pragma unroll
            for (int t = 0; t < TC_MT; t++) {
                uint32_t a[2][2]; /* [row g / g+8][slots 01 / 23] */
#pragma unroll
                for (int hr = 0; hr < 2; hr++)
                    deq_scaled<BIG>(ks, raw[t][hr], m1[t][hr], m2[t][hr], a[hr]);
#pragma unroll
                for (int nt = 0; nt < NT / 8; nt++)
                    tc_mma(acc[t][nt], a[0][0], a[1][0], a[0][1], a[1][1], bf[nt][0], bf[nt][1]);
            }
        }
    }

    /* Whether this warp needs the slow scale path for buffer b. */
    __device__ __forceinline__ bool stage_big(int b, const uint32_t (&fs)[TC_MT][2]) const
    {
        if (!SCALED)
            return false;
        bool big = false;
        if (FMT == CW_MXFP4) {
            const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
            const uint8_t *sb = sbuf(b);
#pragma unroll
            for (int t = 0; t < TC_MT; t++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++)
#pragma unroll
                    for (int u = 0; u < G::UPT; u++)
                        big |= tc_scale_big<FMT>(sb[(slot0(t) + g + 8 * hr) * 8 + c + 4 * u]);
        } else {
#pragma unroll
            for (int t = 0; t < TC_MT; t++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++)
                    big |= tc_scale_big<FMT>(fs[t][hr]);
        }
        /* wgmma is issued by the whole warpgroup: every warp takes the same path */
        return WG ? __syncthreads_or(big) != 0 : __any_sync(0xffffffffu, big);
    }

    /* Part p of a stage (big: stage_big of its buffer). */
    __device__ __forceinline__ void compute_part(bool big, int b, const uint8_t *xb, const uint32_t (&fs)[TC_MT][2],
                                                 int p, float (&acc)[TC_MT][NT / 8][4]) const
    {
        if (big)
            compute<true>(b, xb, fs, p, acc);
        else
            compute<false>(b, xb, fs, p, acc);
    }

    static __device__ __forceinline__ void zero(float (&acc)[TC_MT][NT / 8][4])
    {
#pragma unroll
        for (int t = 0; t < TC_MT; t++)
#pragma unroll
            for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[t][nt][e] = 0.0f;
    }

    /* SPLIT false: the whole K range: acc = sum over all columns,
     * accumulated per stage in order; with KQ > 1, in KQ contiguous runs of
     * stages whose partial sums are added in order at the end. Every thread
     * of the block calls it. */
    template <int KQ> __device__ __forceinline__ void run(float (&acc)[TC_MT][NT / 8][4]) const
    {
        static_assert(!SPLIT, "run_split computes the split variant");
        constexpr int ST = G::STAGES;
        const int nst = (C + G::S - 1) / G::S;
        const int per_q = (nst + KQ - 1) / KQ;
        tc_tot<NT, G::TOT_OFF, G::TOT_BYTES> tot; /* the sum of the finished quarters (KQ > 1) */
        zero(acc);
        __syncthreads(); /* xrows written by the caller */
#pragma unroll
        for (int s = 0; s < ST - 1; s++) {
            if (s < nst)
                load_stage(s, s, 1);
            tc_commit();
        }
        uint32_t fs[TC_MT][2] = {{0, 0}, {0, 0}}, fsn[TC_MT][2] = {{0, 0}, {0, 0}};
        x_stage(0, 1);
        if (SCALED && FMT != CW_MXFP4)
            fp8_scales(0, nst, fs);
        for (int s = 0; s < nst; s++) {
            tc_wait<ST - 2>();
            __syncthreads();
            if (s + ST - 1 < nst)
                load_stage(s + ST - 1, (s + ST - 1) % ST, 1);
            tc_commit();
            const bool more = s + 1 < nst;
            xword xv[G::XOPP][XW];
            if (more) {
                x_load(s + 1, 1, 0, xv);
                if (SCALED && FMT != CW_MXFP4)
                    fp8_scales(s + 1, nst, fsn);
            }
            if (KQ > 1 && s > 0 && s % per_q == 0) { /* a quarter ends: fold its partial sums */
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
#pragma unroll
                    for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int i = (t * (NT / 8) + nt) * 4 + e;
                            tot.set(smem, i, s == per_q ? acc[t][nt][e] : tot.get(smem, i) + acc[t][nt][e]);
                            acc[t][nt][e] = 0.0f;
                        }
            }
            const bool big = stage_big(s % ST, fs);
#pragma unroll 1
            for (int p = 0; p < G::XP; p++) { /* part p of x of stage s + 1 moves while part p of stage s computes */
                if (more && p > 0)
                    x_load(s + 1, 1, p, xv);
                compute_part(big, s % ST, xbuf(s & 1), fs, p, acc);
                if (more)
                    x_store((s + 1) & 1, p, xv);
            }
            if (more) {
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
                    fs[t][0] = fsn[t][0], fs[t][1] = fsn[t][1];
            }
        }
        tc_wait<0>(); /* nothing may be in flight into shared memory when the block ends */
        if (KQ > 1 && nst > per_q) {
#pragma unroll
            for (int t = 0; t < TC_MT; t++)
#pragma unroll
                for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[t][nt][e] = tot.get(smem, (t * (NT / 8) + nt) * 4 + e) + acc[t][nt][e];
        }
    }

    /* WG: the whole K range (C a multiple of G::S, rows 16-byte aligned), x
     * copied beside the weights in the same cp.async stages. Every thread of
     * the block calls it. */
    __device__ __forceinline__ void run_wg(float (&acc)[TC_MT][NT / 8][4]) const
    {
        static_assert(WG && FMT == CW_MXFP4, "the x order of tc_wg_perm is MXFP4's");
        constexpr int ST = G::STAGES;
        const int nst = C / G::S;
        const uint32_t fs[TC_MT][2] = {{0, 0}, {0, 0}}; /* FP8's block scales: unused */
        zero(acc);
        const wg_rows src = wg_rows_of();
        __syncthreads(); /* xrows written by the caller */
#pragma unroll
        for (int s = 0; s < ST - 1; s++) {
            if (s < nst) {
                load_stage_wg(src, s, s);
                x_copy(s, s);
            }
            tc_commit();
        }
        for (int s = 0; s < nst; s++) {
            tc_wait<ST - 2>();
            wg_fence_smem(); /* this thread's copies, visible to the wgmma after the barrier */
            __syncthreads();
            if (s + ST - 1 < nst) { /* into the buffer of stage s - 1, whose wgmma finished below */
                load_stage_wg(src, s + ST - 1, (s + ST - 1) % ST);
                x_copy(s + ST - 1, (s + ST - 1) % ST);
            }
            tc_commit();
            const bool big = stage_big(s % ST, fs);
#pragma unroll 1
            for (int p = 0; p < G::XP; p++)
                compute_part(big, s % ST, xbuf(s % ST), fs, p, acc);
            wg_wait<0>();
        }
        tc_wait<0>();
    }

    /* SPLIT true: warp q accumulates quarter q; the quarters are then added
     * in order into warp 0's acc (the other warps' acc is not the result). */
    __device__ __forceinline__ void run_split(float (&acc)[TC_MT][NT / 8][4]) const
    {
        static_assert(SPLIT, "run computes the unsplit variant");
        constexpr int ST = G::STAGES;
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        const int nst = (C + G::S - 1) / G::S;
        const int per_q = (nst + 3) / 4, nq = (nst + per_q - 1) / per_q;
        zero(acc);
        __syncthreads(); /* xrows written by the caller */
#pragma unroll
        for (int i = 0; i < ST - 1; i++) {
            if (i < per_q)
                load_stage(i, i, per_q);
            tc_commit();
        }
        static_assert(G::XP == 1, "the split variant stages x one whole stage ahead");
        uint32_t fs[TC_MT][2] = {{0, 0}, {0, 0}}, fsn[TC_MT][2] = {{0, 0}, {0, 0}};
        x_stage(0, per_q);
        if (SCALED && FMT != CW_MXFP4)
            fp8_scales(stage_of(0, warp, per_q), nst, fs);
        for (int i = 0; i < per_q; i++) {
            tc_wait<ST - 2>();
            __syncthreads();
            if (i + ST - 1 < per_q)
                load_stage(i + ST - 1, (i + ST - 1) % ST, per_q);
            tc_commit();
            const bool more = i + 1 < per_q;
            xword xv[G::XOPP][XW];
            if (more) {
                x_load(i + 1, per_q, 0, xv);
                if (SCALED && FMT != CW_MXFP4)
                    fp8_scales(stage_of(i + 1, warp, per_q), nst, fsn);
            }
            if (stage_of(i, warp, per_q) < nst) /* warp-uniform */
                compute_part(stage_big(i % ST, fs), i % ST, xbuf(i & 1) + warp * G::XB_BYTES, fs, 0, acc);
            if (more) {
                x_store((i + 1) & 1, 0, xv);
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
                    fs[t][0] = fsn[t][0], fs[t][1] = fsn[t][1];
            }
        }
        tc_wait<0>();
        __syncthreads(); /* every warp is done with the stage buffers */
        float *red = (float *)smem; /* [warp][t][nt][e][lane] */
#pragma unroll
        for (int t = 0; t < TC_MT; t++)
#pragma unroll
            for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    red[(((warp * TC_MT + t) * (NT / 8) + nt) * 4 + e) * 32 + lane] = acc[t][nt][e];
        __syncthreads();
        if (warp == 0)
            for (int q = 1; q < nq; q++)
#pragma unroll
                for (int t = 0; t < TC_MT; t++)
#pragma unroll
                    for (int nt = 0; nt < NT / 8; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            acc[t][nt][e] = acc[t][nt][e] + red[(((q * TC_MT + t) * (NT / 8) + nt) * 4 + e) * 32 + lane];
    }
};

/* Token tile of the fast kernels, from the tokens that share the weights. */
#define TC_NT_DISPATCH(nt, CALL)                                                                                   \
    do {                                                                                                            \
        if ((nt) == 8) { constexpr int NT = 8; CALL; }                                                              \
        else if ((nt) == 16) { constexpr int NT = 16; CALL; }                                                       \
        else { constexpr int NT = 32; CALL; }                                                                       \
    } while (0)

/* Linear layer on the tensor-core path (gemm_tc.cu); fmt is cu_wfmt(w). */
void cu_linear_tc(cu_backend *cb, float *y, const float *x, int n, const v4_mat *w, int fmt, int groups);

#endif
