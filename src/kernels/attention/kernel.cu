// Fused multi-head attention, forward and backward, for training (FlashAttention-2 algorithm:
// the (N x N) probabilities are never stored; the forward keeps one f32 log-sum-exp per query
// row and the backward recomputes the probabilities tile by tile from it).
//
// Compiled at run time with NVRTC, no headers: bf16/f16 are raw 16-bit values and the tensor
// cores are reached through `mma.sync.m16n8k16` (f32 accumulation). Head dim 64 only.
//
// Layout: Q, K, V are rows of tokens, each row holding every head (`row stride` elements per
// token, head h at columns h*64..h*64+63): Q/K/V can point into one fused QKV projection output
// (B, N, 3*H*64) with row stride 3*H*64. O and dQ/dK/dV use the same convention.
//
// Register fragments of mma.m16n8k16 (lane = 4*g + t):
//   A (16x16, row-major): a0 = (row g,   cols 2t, 2t+1), a1 = (row g+8, cols 2t, 2t+1),
//                         a2 = (row g,   cols 2t+8, +9),  a3 = (row g+8, cols 2t+8, +9)
//   B (16x8, k x n):      b0 = (k 2t, 2t+1; col g),       b1 = (k 2t+8, 2t+9; col g)
//   C (16x8, f32):        c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = (row g+8, cols 2t, 2t+1)
// so a C tile pair (n-tiles 2j, 2j+1) is exactly the A fragment of k-chunk j: probabilities go
// from one matmul into the next without leaving registers.

#define ATT_D 64      // head dim
#define ATT_BQ 64     // query rows per block (4 warps x 16)
#define ATT_BK 64     // keys per tile
#define ATT_LD 72     // shared-memory row stride in elements (144 bytes: conflict-free fragments)
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

// Copies a (64 rows x 64 cols) tile of rows `row0..` (row stride `stride`, `rows` valid) into
// shared memory row-major (`dst`, stride ATT_LD) and/or transposed (`dst_t[col][row]`); rows
// past `rows` are zero.
__device__ __forceinline__ void att_load_tile(const u16* src, long stride, int row0, int rows,
                                              u16* dst, u16* dst_t) {
    for (int idx = threadIdx.x; idx < 64 * 32; idx += blockDim.x) {
        int r = idx >> 5, w = idx & 31;
        unsigned v = 0;
        if (row0 + r < rows) v = att_ld32(src + (long)(row0 + r) * stride + 2 * w);
        if (dst) att_st32(dst + r * ATT_LD + 2 * w, v);
        if (dst_t) {
            dst_t[(2 * w) * ATT_LD + r] = (u16)(v & 0xffffu);
            dst_t[(2 * w + 1) * ATT_LD + r] = (u16)(v >> 16);
        }
    }
}

// Forward. Grid (ceil(nq / 64), heads, batch), 128 threads. Writes O (row stride o_row) and
// lse[(b * heads + h) * nq + i] = log2(sum_j exp2(s_ij)) with s = scale * log2(e) * q.k.
// `causal`: key j is visible to query i iff j <= i (needs nq == nk).
template <bool BF16>
__device__ void attention_fwd(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                              int nq, int nk, int heads, long q_row, long kv_row, long o_row,
                              float scale_log2, int causal) {
    typedef AttType<BF16> T;
    __shared__ __align__(16) u16 ks[ATT_BK * ATT_LD];
    __shared__ __align__(16) u16 vt[ATT_D * ATT_LD];
    const int qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u16* qbase = q + (long)b * nq * q_row + h * ATT_D;
    const u16* kbase = k + (long)b * nk * kv_row + h * ATT_D;
    const u16* vbase = v + (long)b * nk * kv_row + h * ATT_D;
    const int row0 = qb * ATT_BQ + warp * 16;
    const int ra = row0 + g, rb = row0 + g + 8;

    unsigned qa[4][4];
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
        int c = kc * 16 + 2 * t;
        qa[kc][0] = ra < nq ? att_ld32(qbase + (long)ra * q_row + c) : 0u;
        qa[kc][1] = rb < nq ? att_ld32(qbase + (long)rb * q_row + c) : 0u;
        qa[kc][2] = ra < nq ? att_ld32(qbase + (long)ra * q_row + c + 8) : 0u;
        qa[kc][3] = rb < nq ? att_ld32(qbase + (long)rb * q_row + c + 8) : 0u;
    }
    float m0 = ATT_NEG_INF, m1 = ATT_NEG_INF, l0 = 0.f, l1 = 0.f;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

    const int kend = causal ? min(nk, (qb + 1) * ATT_BQ) : nk;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        att_load_tile(kbase, kv_row, k0, nk, ks, 0);
        att_load_tile(vbase, kv_row, k0, nk, 0, vt);
        __syncthreads();
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < 4; ++kc) {
                unsigned bf[2];
                const u16* kr = ks + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(kr);
                bf[1] = att_ld32(kr + 8);
                T::mma(s[nt], qa[kc], bf);
            }
        }
        float mx0 = ATT_NEG_INF, mx1 = ATT_NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int col = k0 + nt * 8 + 2 * t + (e & 1);
                int row = e < 2 ? ra : rb;
                float x = s[nt][e] * scale_log2;
                if (col >= nk || (causal && col > row)) x = ATT_NEG_INF;
                s[nt][e] = x;
            }
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        // A row with every key masked so far keeps max -inf: exponentiate against 0 instead.
        const float base0 = n0 == ATT_NEG_INF ? 0.f : n0, base1 = n1 == ATT_NEG_INF ? 0.f : n1;
        const float alpha0 = exp2f(m0 - base0), alpha1 = exp2f(m1 - base1);
        m0 = n0;
        m1 = n1;
        l0 *= alpha0;
        l1 *= alpha1;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            s[nt][0] = exp2f(s[nt][0] - base0);
            s[nt][1] = exp2f(s[nt][1] - base0);
            s[nt][2] = exp2f(s[nt][2] - base1);
            s[nt][3] = exp2f(s[nt][3] - base1);
            l0 += s[nt][0] + s[nt][1];
            l1 += s[nt][2] + s[nt][3];
            acc[nt][0] *= alpha0;
            acc[nt][1] *= alpha0;
            acc[nt][2] *= alpha1;
            acc[nt][3] *= alpha1;
        }
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            unsigned pa[4];
            pa[0] = T::pack(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = T::pack(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = T::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = T::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                unsigned bf[2];
                const u16* vr = vt + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(vr);
                bf[1] = att_ld32(vr + 8);
                T::mma(acc[nt], pa, bf);
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    u16* obase = o + (long)b * nq * o_row + h * ATT_D;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
        int c = nt * 8 + 2 * t;
        if (ra < nq) att_st32(obase + (long)ra * o_row + c, T::pack(acc[nt][0] * inv0, acc[nt][1] * inv0));
        if (rb < nq) att_st32(obase + (long)rb * o_row + c, T::pack(acc[nt][2] * inv1, acc[nt][3] * inv1));
    }
    if (t == 0) {
        float* lrow = lse + ((long)b * heads + h) * nq;
        if (ra < nq) lrow[ra] = m0 + log2f(l0);
        if (rb < nq) lrow[rb] = m1 + log2f(l1);
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
// accumulated in f32 with atomics into dq_acc (B, nq, heads, 64). Dynamic shared memory:
// 6 tiles of 64 x ATT_LD 16-bit values + 128 floats.
template <bool BF16>
__device__ void attention_bwd(const u16* q, const u16* k, const u16* v, const u16* dout,
                              const float* lse, const float* delta, float* dq_acc, u16* dk, u16* dv,
                              int nq, int nk, int heads, long q_row, long kv_row, long o_row,
                              long dkv_row, float scale_log2, float scale, int causal) {
    typedef AttType<BF16> T;
    extern __shared__ __align__(16) u16 att_smem[];
    u16* qs = att_smem;                // Q tile, [query][dim]
    u16* qt = qs + 64 * ATT_LD;        // Q^T, [dim][query]
    u16* dos = qt + 64 * ATT_LD;       // dO tile, [query][dim]
    u16* dot = dos + 64 * ATT_LD;      // dO^T, [dim][query]
    u16* kt = dot + 64 * ATT_LD;       // K^T of this block's keys, [dim][key]
    u16* ds = kt + 64 * ATT_LD;        // dS, [query][key]
    float* lse_s = (float*)(ds + 64 * ATT_LD);
    float* delta_s = lse_s + 64;

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

    // This warp's 16 keys and values as A fragments (rows = keys, k = dims).
    unsigned kfr[4][4], vfr[4][4];
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
        int c = kc * 16 + 2 * t;
        kfr[kc][0] = ka_row < nk ? att_ld32(kbase + (long)ka_row * kv_row + c) : 0u;
        kfr[kc][1] = kb_row < nk ? att_ld32(kbase + (long)kb_row * kv_row + c) : 0u;
        kfr[kc][2] = ka_row < nk ? att_ld32(kbase + (long)ka_row * kv_row + c + 8) : 0u;
        kfr[kc][3] = kb_row < nk ? att_ld32(kbase + (long)kb_row * kv_row + c + 8) : 0u;
        vfr[kc][0] = ka_row < nk ? att_ld32(vbase + (long)ka_row * kv_row + c) : 0u;
        vfr[kc][1] = kb_row < nk ? att_ld32(vbase + (long)kb_row * kv_row + c) : 0u;
        vfr[kc][2] = ka_row < nk ? att_ld32(vbase + (long)ka_row * kv_row + c + 8) : 0u;
        vfr[kc][3] = kb_row < nk ? att_ld32(vbase + (long)kb_row * kv_row + c + 8) : 0u;
    }
    att_load_tile(kbase, kv_row, kb * ATT_BK, nk, 0, kt);

    float dka[8][4], dva[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        dka[i][0] = dka[i][1] = dka[i][2] = dka[i][3] = 0.f;
        dva[i][0] = dva[i][1] = dva[i][2] = dva[i][3] = 0.f;
    }
    const int qstart = causal ? kb * ATT_BK : 0;
    for (int q0 = qstart; q0 < nq; q0 += ATT_BQ) {
        __syncthreads();
        att_load_tile(qbase, q_row, q0, nq, qs, qt);
        att_load_tile(dobase, o_row, q0, nq, dos, dot);
        for (int i = threadIdx.x; i < 64; i += blockDim.x) {
            bool ok = q0 + i < nq;
            lse_s[i] = ok ? lse_b[q0 + i] : __int_as_float(0x7f800000);  // +inf: P = 0
            delta_s[i] = ok ? delta_b[q0 + i] : 0.f;
        }
        __syncthreads();
        // S^T (16 keys x 64 queries) and dP^T, 8 n-tiles of 8 queries each.
        float p[8][4], dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.f;
            dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < 4; ++kc) {
                unsigned bf[2];
                const u16* qr = qs + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(qr);
                bf[1] = att_ld32(qr + 8);
                T::mma(p[nt], kfr[kc], bf);
                const u16* dr = dos + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(dr);
                bf[1] = att_ld32(dr + 8);
                T::mma(dp[nt], vfr[kc], bf);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int qi = nt * 8 + 2 * t + (e & 1);   // query within the tile
                int key = e < 2 ? ka_row : kb_row;
                float pr = exp2f(p[nt][e] * scale_log2 - lse_s[qi]);
                if (key >= nk || (causal && key > q0 + qi)) pr = 0.f;
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
            for (int nt = 0; nt < 8; ++nt) {
                unsigned bf[2];
                const u16* dr = dot + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(dr);
                bf[1] = att_ld32(dr + 8);
                T::mma(dva[nt], pa, bf);
                const u16* qr = qt + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(qr);
                bf[1] = att_ld32(qr + 8);
                T::mma(dka[nt], sa, bf);
            }
        }
        // dS into shared memory as [query][key] for dQ = dS K.
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            int qi = nt * 8 + 2 * t;
            int kl = warp * 16 + g;
            unsigned lo = T::pack(dp[nt][0], dp[nt][2]);  // (qi, kl), (qi, kl + 8)
            unsigned hi = T::pack(dp[nt][1], dp[nt][3]);  // (qi + 1, kl), (qi + 1, kl + 8)
            ds[qi * ATT_LD + kl] = (u16)(lo & 0xffffu);
            ds[qi * ATT_LD + kl + 8] = (u16)(lo >> 16);
            ds[(qi + 1) * ATT_LD + kl] = (u16)(hi & 0xffffu);
            ds[(qi + 1) * ATT_LD + kl + 8] = (u16)(hi >> 16);
        }
        __syncthreads();
        // dQ rows warp*16.. of this query tile: (16 x 64 keys) x (64 keys x 64 dims).
        float dq[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            unsigned af[4];
            const u16* sr = ds + (warp * 16 + g) * ATT_LD + kc * 16 + 2 * t;
            af[0] = att_ld32(sr);
            af[1] = att_ld32(sr + 8 * ATT_LD);
            af[2] = att_ld32(sr + 8);
            af[3] = att_ld32(sr + 8 * ATT_LD + 8);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                unsigned bf[2];
                const u16* kr = kt + (nt * 8 + g) * ATT_LD + kc * 16 + 2 * t;
                bf[0] = att_ld32(kr);
                bf[1] = att_ld32(kr + 8);
                T::mma(dq[nt], af, bf);
            }
        }
        const int qa_row = q0 + warp * 16 + g, qb_row = qa_row + 8;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            int c = nt * 8 + 2 * t;
            if (qa_row < nq) {
                float* dst = dq_acc + (((long)b * nq + qa_row) * heads + h) * ATT_D + c;
                atomicAdd(dst, dq[nt][0] * scale);
                atomicAdd(dst + 1, dq[nt][1] * scale);
            }
            if (qb_row < nq) {
                float* dst = dq_acc + (((long)b * nq + qb_row) * heads + h) * ATT_D + c;
                atomicAdd(dst, dq[nt][2] * scale);
                atomicAdd(dst + 1, dq[nt][3] * scale);
            }
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
    extern "C" __global__ void __launch_bounds__(128) attention_bwd_##SUFFIX(                    \
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
