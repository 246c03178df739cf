// LayerNorm backward over rows of width d (bf16/f16 x, weight and dy), f32 arithmetic. Compiled
// with NVRTC, no headers, after ../half.cu (the 16-bit loads and stores). The forward is candle's LayerNorm kernel; the backward recomputes each
// row's mean and 1/std from x (two passes over a row that stays in L1) instead of storing them:
//   xhat = (x - mean) * rstd,  g = dy * w
//   dx = (g - mean(g) - xhat * mean(g * xhat)) * rstd
//   dw = sum over rows of dy * xhat,  db = sum over rows of dy
// One warp per row; each block sums dw/db of its rows in shared memory (2 * d floats) and adds
// them to the f32 outputs with one atomic per column.

__device__ __forceinline__ float ln_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#define LN_KERNELS(SUFFIX, LD, ST)                                                                \
    extern "C" __global__ void layer_norm_bwd_##SUFFIX(const u16* x, const u16* w, const u16* dy, \
                                                       u16* dx, float* dw, float* db, long rows,  \
                                                       int d, float eps) {                         \
        extern __shared__ float ln_acc[];                                                          \
        for (int i = threadIdx.x; i < 2 * d; i += blockDim.x) ln_acc[i] = 0.f;                     \
        __syncthreads();                                                                           \
        const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;                                \
        const float inv_d = 1.f / (float)d;                                                        \
        for (long r = (long)blockIdx.x * warps + (threadIdx.x >> 5); r < rows;                     \
             r += (long)gridDim.x * warps) {                                                       \
            const u16* xr = x + r * d;                                                             \
            const u16* gr = dy + r * d;                                                            \
            float sum = 0.f;                                                                       \
            for (int c = lane; c < d; c += 32) sum += LD(xr[c]);                                   \
            const float mean = ln_warp_sum(sum) * inv_d;                                           \
            float sq = 0.f;                                                                        \
            for (int c = lane; c < d; c += 32) {                                                   \
                float t = LD(xr[c]) - mean;                                                        \
                sq += t * t;                                                                       \
            }                                                                                      \
            const float rstd = rsqrtf(ln_warp_sum(sq) * inv_d + eps);                              \
            float mg = 0.f, mgx = 0.f;                                                             \
            for (int c = lane; c < d; c += 32) {                                                   \
                float xhat = (LD(xr[c]) - mean) * rstd;                                            \
                float g = LD(gr[c]) * LD(w[c]);                                                    \
                mg += g;                                                                           \
                mgx += g * xhat;                                                                   \
            }                                                                                      \
            mg = ln_warp_sum(mg) * inv_d;                                                          \
            mgx = ln_warp_sum(mgx) * inv_d;                                                        \
            u16* dxr = dx + r * d;                                                                 \
            for (int c = lane; c < d; c += 32) {                                                   \
                float xhat = (LD(xr[c]) - mean) * rstd;                                            \
                float dyv = LD(gr[c]);                                                             \
                float g = dyv * LD(w[c]);                                                          \
                dxr[c] = ST((g - mg - xhat * mgx) * rstd);                                         \
                atomicAdd(ln_acc + c, dyv * xhat);                                                 \
                atomicAdd(ln_acc + d + c, dyv);                                                    \
            }                                                                                      \
        }                                                                                          \
        __syncthreads();                                                                           \
        for (int i = threadIdx.x; i < d; i += blockDim.x) {                                        \
            atomicAdd(dw + i, ln_acc[i]);                                                          \
            atomicAdd(db + i, ln_acc[d + i]);                                                      \
        }                                                                                          \
    }

LN_KERNELS(bf16, half_ld_bf16, half_st_bf16)
LN_KERNELS(f16, half_ld_f16, half_st_f16)
