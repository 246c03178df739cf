// Fused multi-head attention, forward and backward, for training and inference
// (FlashAttention-2 algorithm: the (N x N) probabilities are never stored; the forward keeps one
// f32 log-sum-exp per query row and the backward recomputes the probabilities tile by tile).
//
// Compiled at run time with NVRTC, no headers: bf16/f16 are raw 16-bit values, the tensor cores
// are reached through `mma.sync.m16n8k16` (f32 accumulation), tiles move global -> shared with
// `cp.async` (16 bytes, double-buffered: the next tile loads while this one is multiplied) and
// shared -> registers with `ldmatrix` (`.trans` gives the transposed operands, so every tile is
// stored once, row-major). Head dim 64 only; sm_80 or newer.
//
// Layout: Q, K, V are rows of tokens, each row holding every head (`row stride` elements per
// token, head h at columns h*64..h*64+63): Q/K/V can point into one fused QKV projection output
// (B, N, 3*H*64) with row stride 3*H*64. O and dQ/dK/dV use the same convention. Row strides
// and base pointers are multiples of 8 elements (16 bytes), which `cp.async` needs.
//
// Register fragments of mma.m16n8k16 (lane = 4*g + t):
//   A (16x16, row-major): a0 = (row g,   cols 2t, 2t+1), a1 = (row g+8, cols 2t, 2t+1),
//                         a2 = (row g,   cols 2t+8, +9),  a3 = (row g+8, cols 2t+8, +9)
//   B (16x8, k x n):      b0 = (k 2t, 2t+1; col g),       b1 = (k 2t+8, 2t+9; col g)
//   C (16x8, f32):        c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = (row g+8, cols 2t, 2t+1)
// so a C tile pair (n-tiles 2j, 2j+1) is exactly the A fragment of k-chunk j: probabilities go
// from one matmul into the next without leaving registers.
// `ldmatrix.x4` loads four 8x8 matrices, lane L giving the address of row L%8 of matrix L/8;
// each lane receives (row g, cols 2t, 2t+1) of each matrix, or with `.trans` (rows 2t, 2t+1;
// col g). From a row-major [row][col] tile:
//   B of (rows n0.., cols k0..) pattern "rows":  non-trans, row n0 + L%8, col k0 + (L/8)*8
//       -> {b0, b1} of k-chunk k0 and {b0, b1} of k-chunk k0+16 (for a [n][k] tile, e.g. K in S = QK^T)
//   B of (rows k0.., cols n0..) pattern "trans": trans, row k0 + L%8 + ((L/8)&1)*8, col n0 + (L/16)*8
//       -> {b0, b1} of n-tile n0 and of n-tile n0+8 (for a [k][n] tile, e.g. V in O = PV)
//   A of (rows m0.., cols k0..):                 non-trans, row m0 + L%8 + ((L/8)&1)*8, col k0 + (L/16)*8

#define ATT_D 64      // head dim
#define ATT_BQ 64     // query rows per tile of the backward (4 warps x 16)
#define ATT_BK 64     // keys per tile
#define ATT_LD 72     // shared-memory row stride in elements (144 bytes: conflict-free ldmatrix)
#define ATT_TILE (64 * ATT_LD)  // elements of one 64-row tile in shared memory
#define ATT_NEG_INF __int_as_float(0xff800000)

typedef unsigned short u16;

template <bool BF16> struct AttType;
template <> struct AttType<true> {
    static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ float to_f32(u16 x) {
        return __uint_as_float(((unsigned)x) << 16);
    }
};
template <> struct AttType<false> {
    static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ float to_f32(u16 x) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
        return f;
    }
};

__device__ __forceinline__ unsigned att_ld32(const u16* p) { return *(const unsigned*)p; }
__device__ __forceinline__ void att_st32(u16* p, unsigned v) { *(unsigned*)p = v; }

__device__ __forceinline__ unsigned att_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared without passing through registers; `bytes` < 16 zero-fills the rest.
__device__ __forceinline__ void att_cp16(u16* dst, const u16* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(att_smem_addr(dst)),
                 "l"(src), "r"(bytes));
}
__device__ __forceinline__ void att_cp4(float* dst, const float* src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(att_smem_addr(dst)),
                 "l"(src), "r"(bytes));
}
__device__ __forceinline__ void att_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void att_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void att_ldsm(unsigned* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p)));
}
__device__ __forceinline__ void att_ldsm_t(unsigned* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p)));
}

__device__ __forceinline__ float att_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// dst[0] += a, dst[1] += b (f32, device-wide atomic; one vector reduction on sm_90).
__device__ __forceinline__ void att_red2(float* dst, float a, float b) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
#endif
}

// Starts copying rows row0..row0+63 (of `rows`, row stride `stride`) of a 64-column slice into a
// shared tile [row][col] (stride ATT_LD); rows past `rows` are zero-filled.
__device__ __forceinline__ void att_load_tile(const u16* src, long stride, int row0, int rows,
                                              u16* dst) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int idx = threadIdx.x + i * 128;
        int r = idx >> 3, c = (idx & 7) * 8;
        bool ok = row0 + r < rows;
        att_cp16(dst + r * ATT_LD + c, src + (long)(ok ? row0 + r : 0) * stride + c, ok ? 16 : 0);
    }
}

// Fragment addresses of the patterns in the header, for this lane.
__device__ __forceinline__ const u16* att_rows(const u16* tile, int n0, int k0, int lane) {
    return tile + (n0 + (lane & 7)) * ATT_LD + k0 + (lane >> 3) * 8;
}
__device__ __forceinline__ const u16* att_trans(const u16* tile, int k0, int n0, int lane) {
    return tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ATT_LD + n0 + (lane >> 4) * 8;
}

// Forward. Grid (ceil(nq / ATT_FWD_ROWS), heads, batch), 128 threads, static shared memory: K and
// V tiles, two of each. Each warp owns ATT_FWD_MT m16 row tiles (16 * ATT_FWD_MT query rows), so
// every K/V fragment read from shared memory feeds ATT_FWD_MT tensor-core ops. 1, the default,
// measured best on the H200 (2026-12-03, attention_bench.sh, vision 32x12x577: 0.246 ms; 2, as
// FlashAttention-2's 128-row blocks, 0.273 ms at 250 registers and two blocks per SM, and half
// the blocks for 35-query cross-attention: 0.065 vs 0.033 ms). Warps whose rows all lie past nq
// skip the arithmetic (0.262 ms before). Writes O (row stride o_row) and
// lse[(b * heads + h) * nq + i] = log2(sum_j exp2(s_ij)) with s = scale * log2(e) * q.k.
// `causal`: key j is visible to query i iff j <= i (needs nq == nk).
#ifndef ATT_FWD_MT
#define ATT_FWD_MT 1
#endif
#define ATT_FWD_ROWS (64 * ATT_FWD_MT)
template <bool BF16>
__device__ void attention_fwd(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                              int nq, int nk, int heads, long q_row, long kv_row, long o_row,
                              float scale_log2, int causal) {
    typedef AttType<BF16> T;
    constexpr int MT = ATT_FWD_MT;
    __shared__ __align__(128) u16 smem[4 * ATT_TILE];  // [K0, V0, K1, V1]
    const int qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u16* qbase = q + (long)b * nq * q_row + h * ATT_D;
    const u16* kbase = k + (long)b * nk * kv_row + h * ATT_D;
    const u16* vbase = v + (long)b * nk * kv_row + h * ATT_D;
    const int row0 = qb * ATT_FWD_ROWS + warp * 16 * MT;
    // A warp whose rows all lie past nq only helps load the tiles.
    const bool active = row0 < nq;
    int ra[MT], rb[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        ra[mt] = row0 + mt * 16 + g;
        rb[mt] = ra[mt] + 8;
    }

    const int kend = causal ? min(nk, (qb + 1) * ATT_FWD_ROWS) : nk;
    const int tiles = (kend + ATT_BK - 1) / ATT_BK;
    att_load_tile(kbase, kv_row, 0, nk, smem);
    att_load_tile(vbase, kv_row, 0, nk, smem + ATT_TILE);
    att_commit();

    unsigned qa[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            int c = kc * 16 + 2 * t;
            bool oka = ra[mt] < nq, okb = rb[mt] < nq;
            qa[mt][kc][0] = oka ? att_ld32(qbase + (long)ra[mt] * q_row + c) : 0u;
            qa[mt][kc][1] = okb ? att_ld32(qbase + (long)rb[mt] * q_row + c) : 0u;
            qa[mt][kc][2] = oka ? att_ld32(qbase + (long)ra[mt] * q_row + c + 8) : 0u;
            qa[mt][kc][3] = okb ? att_ld32(qbase + (long)rb[mt] * q_row + c + 8) : 0u;
        }
    }
    float m0[MT], m1[MT], l0[MT], l1[MT];
    float acc[MT][8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m0[mt] = m1[mt] = ATT_NEG_INF;
        l0[mt] = l1[mt] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
    }

    for (int it = 0; it < tiles; ++it) {
        const int k0 = it * ATT_BK;
        const u16* ks = smem + (it & 1) * 2 * ATT_TILE;
        const u16* vs = ks + ATT_TILE;
        if (it + 1 < tiles) {
            u16* next = smem + ((it + 1) & 1) * 2 * ATT_TILE;
            att_load_tile(kbase, kv_row, k0 + ATT_BK, nk, next);
            att_load_tile(vbase, kv_row, k0 + ATT_BK, nk, next + ATT_TILE);
            att_commit();
            att_wait<1>();
        } else {
            att_wait<0>();
        }
        __syncthreads();
        if (active) {
            float s[MT][8][4];
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                unsigned bf[8];
                att_ldsm(bf, att_rows(ks, nt * 8, 0, lane));
                att_ldsm(bf + 4, att_rows(ks, nt * 8, 32, lane));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
                    for (int kc = 0; kc < 4; ++kc) T::mma(s[mt][nt], qa[mt][kc], bf + 2 * kc);
                }
            }
            // Keys past nk, and (causal) keys after the query, are masked; only edge tiles need it.
            const bool edge = k0 + ATT_BK > nk || (causal && k0 + ATT_BK - 1 > row0);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                float mx0 = ATT_NEG_INF, mx1 = ATT_NEG_INF;
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float x = s[mt][nt][e] * scale_log2;
                        if (edge) {
                            int col = k0 + nt * 8 + 2 * t + (e & 1);
                            int row = e < 2 ? ra[mt] : rb[mt];
                            if (col >= nk || (causal && col > row)) x = ATT_NEG_INF;
                        }
                        s[mt][nt][e] = x;
                    }
                    mx0 = fmaxf(mx0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
                    mx1 = fmaxf(mx1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
                }
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
                const float n0 = fmaxf(m0[mt], mx0), n1 = fmaxf(m1[mt], mx1);
                // A row with every key masked so far keeps max -inf: exponentiate against 0.
                const float base0 = n0 == ATT_NEG_INF ? 0.f : n0;
                const float base1 = n1 == ATT_NEG_INF ? 0.f : n1;
                const float alpha0 = att_exp2(m0[mt] - base0), alpha1 = att_exp2(m1[mt] - base1);
                m0[mt] = n0;
                m1[mt] = n1;
                l0[mt] *= alpha0;
                l1[mt] *= alpha1;
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    s[mt][nt][0] = att_exp2(s[mt][nt][0] - base0);
                    s[mt][nt][1] = att_exp2(s[mt][nt][1] - base0);
                    s[mt][nt][2] = att_exp2(s[mt][nt][2] - base1);
                    s[mt][nt][3] = att_exp2(s[mt][nt][3] - base1);
                    l0[mt] += s[mt][nt][0] + s[mt][nt][1];
                    l1[mt] += s[mt][nt][2] + s[mt][nt][3];
                    acc[mt][nt][0] *= alpha0;
                    acc[mt][nt][1] *= alpha0;
                    acc[mt][nt][2] *= alpha1;
                    acc[mt][nt][3] *= alpha1;
                }
            }
#pragma unroll
            for (int kc = 0; kc < 4; ++kc) {
                unsigned pa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    pa[mt][0] = T::pack(s[mt][2 * kc][0], s[mt][2 * kc][1]);
                    pa[mt][1] = T::pack(s[mt][2 * kc][2], s[mt][2 * kc][3]);
                    pa[mt][2] = T::pack(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
                    pa[mt][3] = T::pack(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
                }
#pragma unroll
                for (int nt = 0; nt < 8; nt += 2) {
                    unsigned bf[4];
                    att_ldsm_t(bf, att_trans(vs, kc * 16, nt * 8, lane));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        T::mma(acc[mt][nt], pa[mt], bf);
                        T::mma(acc[mt][nt + 1], pa[mt], bf + 2);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (!active) return;
    u16* obase = o + (long)b * nq * o_row + h * ATT_D;
    float* lrow = lse + ((long)b * heads + h) * nq;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float s0 = l0[mt], s1 = l1[mt];
        s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
        s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
        const float inv0 = s0 > 0.f ? 1.f / s0 : 0.f, inv1 = s1 > 0.f ? 1.f / s1 : 0.f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            int c = nt * 8 + 2 * t;
            if (ra[mt] < nq)
                att_st32(obase + (long)ra[mt] * o_row + c,
                         T::pack(acc[mt][nt][0] * inv0, acc[mt][nt][1] * inv0));
            if (rb[mt] < nq)
                att_st32(obase + (long)rb[mt] * o_row + c,
                         T::pack(acc[mt][nt][2] * inv1, acc[mt][nt][3] * inv1));
        }
        if (t == 0) {
            if (ra[mt] < nq) lrow[ra[mt]] = m0[mt] + log2f(s0);
            if (rb[mt] < nq) lrow[rb[mt]] = m1[mt] + log2f(s1);
        }
    }
}

// delta[(b * heads + h) * nq + i] = sum_d dO[i, d] * O[i, d] (f32). One warp per (row, head).
template <bool BF16>
__device__ void attention_bwd_delta(const u16* o, const u16* dout, float* delta, int nq,
                                    int heads, long o_row, long rows_total) {
    typedef AttType<BF16> T;
    long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (w >= rows_total) return;
    long h = w % heads, bi = w / heads;  // bi = b * nq + i
    long b = bi / nq, i = bi % nq;
    const u16* orow = o + bi * o_row + h * ATT_D;
    const u16* drow = dout + bi * o_row + h * ATT_D;
    float acc = T::to_f32(orow[2 * lane]) * T::to_f32(drow[2 * lane]) +
                T::to_f32(orow[2 * lane + 1]) * T::to_f32(drow[2 * lane + 1]);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[(b * heads + h) * nq + i] = acc;
}

// Backward. Grid (ceil(nk / 64), heads, batch), 128 threads; each warp owns 16 keys of the
// block's key tile and loops over every query tile: S^T = K Q^T, P^T = exp2(S^T - lse),
// dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += dS^T Q, and dQ += dS K
// accumulated in f32 with atomics into dq_acc (B, nq, heads, 64). Dynamic shared memory
// (ATT_BWD_SHARED bytes): the K, V and dS^T tiles, two Q and two dO tiles, and two sets of the
// 64 rows' log-sum-exp and delta. Query rows past nq are zero-filled (Q, dO and their
// statistics), which makes their P and dS contribute exactly 0.
#define ATT_BWD_SHARED (7 * ATT_TILE * 2 + 4 * 64 * 4)
// Blocks per SM the backward's register budget is cut for (3: 168 registers, 32 bytes spilled,
// measured 6% faster on the H200 than 2: 255 registers, no spills; benches/cuda/attention_bench.cu).
#ifndef ATT_BWD_BLOCKS
#define ATT_BWD_BLOCKS 3
#endif
template <bool BF16>
__device__ void attention_bwd(const u16* q, const u16* k, const u16* v, const u16* dout,
                              const float* lse, const float* delta, float* dq_acc, u16* dk, u16* dv,
                              int nq, int nk, int heads, long q_row, long kv_row, long o_row,
                              long dkv_row, float scale_log2, float scale, int causal) {
    typedef AttType<BF16> T;
    extern __shared__ __align__(128) u16 att_smem[];
    u16* ks = att_smem;                      // K tile, [key][dim]
    u16* vs = ks + ATT_TILE;                 // V tile, [key][dim]
    u16* dst = vs + ATT_TILE;                // dS^T, [key][query]
    u16* qbuf = dst + ATT_TILE;              // [Q0, dO0, Q1, dO1], [query][dim]
    float* stats = (float*)(qbuf + 4 * ATT_TILE);  // [lse0, delta0, lse1, delta1], 64 each

    const int kb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u16* qbase = q + (long)b * nq * q_row + h * ATT_D;
    const u16* kbase = k + (long)b * nk * kv_row + h * ATT_D;
    const u16* vbase = v + (long)b * nk * kv_row + h * ATT_D;
    const u16* dobase = dout + (long)b * nq * o_row + h * ATT_D;
    const float* lse_b = lse + ((long)b * heads + h) * nq;
    const float* delta_b = delta + ((long)b * heads + h) * nq;
    const int key0 = kb * ATT_BK + warp * 16;
    const int ka_row = key0 + g, kb_row = key0 + g + 8;

    const int qstart = causal ? kb * ATT_BK : 0;
    const int tiles = (nq - qstart + ATT_BQ - 1) / ATT_BQ;
    // Issues the loads of query tile `q0` into buffer `buf`.
    auto load_queries = [&](int q0, int buf) {
        u16* qs = qbuf + buf * 2 * ATT_TILE;
        att_load_tile(qbase, q_row, q0, nq, qs);
        att_load_tile(dobase, o_row, q0, nq, qs + ATT_TILE);
        float* st = stats + buf * 128;
        int i = threadIdx.x & 63;
        bool ok = q0 + i < nq;
        const float* src = threadIdx.x < 64 ? lse_b : delta_b;
        att_cp4(st + (threadIdx.x < 64 ? 0 : 64) + i, src + (ok ? q0 + i : 0), ok ? 4 : 0);
    };
    att_load_tile(kbase, kv_row, kb * ATT_BK, nk, ks);
    att_load_tile(vbase, kv_row, kb * ATT_BK, nk, vs);
    if (tiles > 0) load_queries(qstart, 0);
    att_commit();

    float dka[8][4], dva[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        dka[i][0] = dka[i][1] = dka[i][2] = dka[i][3] = 0.f;
        dva[i][0] = dva[i][1] = dva[i][2] = dva[i][3] = 0.f;
    }
    for (int it = 0; it < tiles; ++it) {
        const int q0 = qstart + it * ATT_BQ;
        const u16* qs = qbuf + (it & 1) * 2 * ATT_TILE;
        const u16* dos = qs + ATT_TILE;
        const float* lse_s = stats + (it & 1) * 128;
        const float* delta_s = lse_s + 64;
        if (it + 1 < tiles) {
            load_queries(q0 + ATT_BQ, (it + 1) & 1);
            att_commit();
            att_wait<1>();
        } else {
            att_wait<0>();
        }
        __syncthreads();
        // This warp's 16 keys and values as A fragments (rows = keys, k = dims).
        unsigned kfr[4][4], vfr[4][4];
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            att_ldsm(kfr[kc], att_trans(ks, warp * 16, kc * 16, lane));
            att_ldsm(vfr[kc], att_trans(vs, warp * 16, kc * 16, lane));
        }
        // S^T (16 keys x 64 queries) and dP^T, 8 n-tiles of 8 queries each.
        float p[8][4], dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.f;
            dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
            unsigned bq[8], bd[8];
            att_ldsm(bq, att_rows(qs, nt * 8, 0, lane));
            att_ldsm(bq + 4, att_rows(qs, nt * 8, 32, lane));
            att_ldsm(bd, att_rows(dos, nt * 8, 0, lane));
            att_ldsm(bd + 4, att_rows(dos, nt * 8, 32, lane));
#pragma unroll
            for (int kc = 0; kc < 4; ++kc) {
                T::mma(p[nt], kfr[kc], bq + 2 * kc);
                T::mma(dp[nt], vfr[kc], bd + 2 * kc);
            }
        }
        const bool edge = kb * ATT_BK + ATT_BK > nk || (causal && q0 == kb * ATT_BK);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int qi = nt * 8 + 2 * t + (e & 1);   // query within the tile
                float pr = att_exp2(p[nt][e] * scale_log2 - lse_s[qi]);
                if (edge) {
                    int key = e < 2 ? ka_row : kb_row;
                    if (key >= nk || (causal && key > q0 + qi)) pr = 0.f;
                }
                p[nt][e] = pr;
                dp[nt][e] = pr * (dp[nt][e] - delta_s[qi]);  // dS^T
            }
        }
        // dV += P^T dO and dK += dS^T Q (k = queries, 4 chunks of 16).
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            unsigned pa[4], sa[4];
            pa[0] = T::pack(p[2 * kc][0], p[2 * kc][1]);
            pa[1] = T::pack(p[2 * kc][2], p[2 * kc][3]);
            pa[2] = T::pack(p[2 * kc + 1][0], p[2 * kc + 1][1]);
            pa[3] = T::pack(p[2 * kc + 1][2], p[2 * kc + 1][3]);
            sa[0] = T::pack(dp[2 * kc][0], dp[2 * kc][1]);
            sa[1] = T::pack(dp[2 * kc][2], dp[2 * kc][3]);
            sa[2] = T::pack(dp[2 * kc + 1][0], dp[2 * kc + 1][1]);
            sa[3] = T::pack(dp[2 * kc + 1][2], dp[2 * kc + 1][3]);
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                unsigned bf[4];
                att_ldsm_t(bf, att_trans(dos, kc * 16, nt * 8, lane));
                T::mma(dva[nt], pa, bf);
                T::mma(dva[nt + 1], pa, bf + 2);
                att_ldsm_t(bf, att_trans(qs, kc * 16, nt * 8, lane));
                T::mma(dka[nt], sa, bf);
                T::mma(dka[nt + 1], sa, bf + 2);
            }
        }
        // dS^T into shared memory, [key][query], for dQ = dS K.
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            int qi = nt * 8 + 2 * t, kl = warp * 16 + g;
            att_st32(dst + kl * ATT_LD + qi, T::pack(dp[nt][0], dp[nt][1]));
            att_st32(dst + (kl + 8) * ATT_LD + qi, T::pack(dp[nt][2], dp[nt][3]));
        }
        __syncthreads();
        // dQ rows warp*16.. of this query tile: (16 queries x 64 keys) x (64 keys x 64 dims).
        // A = dS from dS^T by a transposed load: matrix j of lane L is keys kc*16 + (j/2)*8,
        // queries warp*16 + (j%2)*8.
        float dq[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            unsigned af[4];
            att_ldsm_t(af, dst + (kc * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * ATT_LD +
                               warp * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                unsigned bf[4];
                att_ldsm_t(bf, att_trans(ks, kc * 16, nt * 8, lane));
                T::mma(dq[nt], af, bf);
                T::mma(dq[nt + 1], af, bf + 2);
            }
        }
        const int qa_row = q0 + warp * 16 + g, qb_row = qa_row + 8;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            int c = nt * 8 + 2 * t;
            if (qa_row < nq)
                att_red2(dq_acc + (((long)b * nq + qa_row) * heads + h) * ATT_D + c,
                         dq[nt][0] * scale, dq[nt][1] * scale);
            if (qb_row < nq)
                att_red2(dq_acc + (((long)b * nq + qb_row) * heads + h) * ATT_D + c,
                         dq[nt][2] * scale, dq[nt][3] * scale);
        }
    }
    u16* dkbase = dk + (long)b * nk * dkv_row + h * ATT_D;
    u16* dvbase = dv + (long)b * nk * dkv_row + h * ATT_D;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
        int c = nt * 8 + 2 * t;
        if (ka_row < nk) {
            att_st32(dkbase + (long)ka_row * dkv_row + c, T::pack(dka[nt][0] * scale, dka[nt][1] * scale));
            att_st32(dvbase + (long)ka_row * dkv_row + c, T::pack(dva[nt][0], dva[nt][1]));
        }
        if (kb_row < nk) {
            att_st32(dkbase + (long)kb_row * dkv_row + c, T::pack(dka[nt][2] * scale, dka[nt][3] * scale));
            att_st32(dvbase + (long)kb_row * dkv_row + c, T::pack(dva[nt][2], dva[nt][3]));
        }
    }
}

// dq_acc (B, nq, heads, 64) f32 -> dQ in the 16-bit type at row stride dq_row.
template <bool BF16>
__device__ void attention_bwd_dq(const float* dq_acc, u16* dq, int nq, int heads, long dq_row,
                                 long pairs) {
    typedef AttType<BF16> T;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pairs) return;
    long e = 2 * i;
    long width = (long)heads * ATT_D;
    long row = e / width, col = e % width;  // row = b * nq + token
    att_st32(dq + row * dq_row + col, T::pack(dq_acc[e], dq_acc[e + 1]));
}

#define ATT_INSTANTIATE(SUFFIX, BF16)                                                              \
    extern "C" __global__ void __launch_bounds__(128) attention_fwd_##SUFFIX(                    \
        const u16* q, const u16* k, const u16* v, u16* o, float* lse, int nq, int nk, int heads,   \
        long q_row, long kv_row, long o_row, float scale_log2, int causal) {                       \
        attention_fwd<BF16>(q, k, v, o, lse, nq, nk, heads, q_row, kv_row, o_row, scale_log2,      \
                            causal);                                                               \
    }                                                                                              \
    extern "C" __global__ void attention_bwd_delta_##SUFFIX(const u16* o, const u16* dout,        \
                                                           float* delta, int nq, int heads,        \
                                                           long o_row, long rows_total) {          \
        attention_bwd_delta<BF16>(o, dout, delta, nq, heads, o_row, rows_total);                   \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(128, ATT_BWD_BLOCKS) attention_bwd_##SUFFIX(                  \
        const u16* q, const u16* k, const u16* v, const u16* dout, const float* lse,               \
        const float* delta, float* dq_acc, u16* dk, u16* dv, int nq, int nk, int heads,            \
        long q_row, long kv_row, long o_row, long dkv_row, float scale_log2, float scale,          \
        int causal) {                                                                              \
        attention_bwd<BF16>(q, k, v, dout, lse, delta, dq_acc, dk, dv, nq, nk, heads, q_row,       \
                            kv_row, o_row, dkv_row, scale_log2, scale, causal);                    \
    }                                                                                              \
    extern "C" __global__ void attention_bwd_dq_##SUFFIX(const float* dq_acc, u16* dq, int nq,    \
                                                        int heads, long dq_row, long pairs) {      \
        attention_bwd_dq<BF16>(dq_acc, dq, nq, heads, dq_row, pairs);                              \
    }

ATT_INSTANTIATE(bf16, true)
ATT_INSTANTIATE(f16, false)
