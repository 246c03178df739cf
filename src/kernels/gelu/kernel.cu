// Bias + exact (erf) GELU for training, forward and backward, on bf16/f16 rows (x: rows x d,
// bias: d), f32 arithmetic. Compiled with NVRTC, no headers, after ../half.cu (the 16-bit loads and stores).
//   forward:  u = x + b,  y = 0.5 u (1 + erf(u / sqrt 2))
//   backward: dx = dy * (0.5 (1 + erf(u / sqrt 2)) + u exp(-u^2 / 2) / sqrt(2 pi)),
//             db = sum over rows of dx (f32, atomics per column chunk)

#define GELU_KERNELS(SUFFIX, LD, ST)                                                              \
    extern "C" __global__ void bias_gelu_fwd_##SUFFIX(const u16* x, const u16* b, u16* y, long n, \
                                                      int d) {                                     \
        for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;                          \
             i += (long)gridDim.x * blockDim.x) {                                                  \
            float u = LD(x[i]) + LD(b[i % d]);                                                     \
            y[i] = ST(0.5f * u * (1.f + erff(u * 0.70710678118654752f)));                          \
        }                                                                                          \
    }                                                                                              \
    extern "C" __global__ void bias_gelu_bwd_##SUFFIX(const u16* x, const u16* b, const u16* dy,  \
                                                      u16* dx, float* db, long rows, int d,        \
                                                      int rows_per_block) {                        \
        int col = blockIdx.x * blockDim.x + threadIdx.x;                                           \
        if (col >= d) return;                                                                      \
        long r0 = (long)blockIdx.y * rows_per_block;                                               \
        long r1 = min(rows, r0 + rows_per_block);                                                  \
        float bias = LD(b[col]), acc = 0.f;                                                        \
        for (long r = r0; r < r1; ++r) {                                                           \
            long i = r * d + col;                                                                  \
            float u = LD(x[i]) + bias;                                                             \
            float cdf = 0.5f * (1.f + erff(u * 0.70710678118654752f));                             \
            float pdf = 0.3989422804014327f * __expf(-0.5f * u * u);                               \
            float g = LD(dy[i]) * (cdf + u * pdf);                                                 \
            dx[i] = ST(g);                                                                         \
            acc += g;                                                                              \
        }                                                                                          \
        atomicAdd(db + col, acc);                                                                  \
    }

GELU_KERNELS(bf16, half_ld_bf16, half_st_bf16)
GELU_KERNELS(f16, half_ld_f16, half_st_f16)

// The same with 16-byte accesses (8 elements per thread; d % 8 == 0 and 16-byte aligned
// pointers): the forward moves one chunk per step, the backward 8 columns per thread.
#define GELU_VEC_KERNELS(SUFFIX, LD, ST)                                                          \
    extern "C" __global__ void bias_gelu_fwd_vec_##SUFFIX(const u16* x, const u16* b, u16* y,    \
                                                          long chunks, int d) {                    \
        for (long c = (long)blockIdx.x * blockDim.x + threadIdx.x; c < chunks;                     \
             c += (long)gridDim.x * blockDim.x) {                                                  \
            long e = c * 8;                                                                        \
            uint4 xv = *(const uint4*)(x + e);                                                     \
            uint4 bv = *(const uint4*)(b + (int)(e % d));                                          \
            const u16* xh = (const u16*)&xv;                                                       \
            const u16* bh = (const u16*)&bv;                                                       \
            uint4 out;                                                                             \
            u16* oh = (u16*)&out;                                                                  \
            _Pragma("unroll") for (int j = 0; j < 8; ++j) {                                        \
                float u = LD(xh[j]) + LD(bh[j]);                                                   \
                oh[j] = ST(0.5f * u * (1.f + erff(u * 0.70710678118654752f)));                     \
            }                                                                                      \
            *(uint4*)(y + e) = out;                                                                \
        }                                                                                          \
    }                                                                                              \
    extern "C" __global__ void bias_gelu_bwd_vec_##SUFFIX(const u16* x, const u16* b,             \
                                                          const u16* dy, u16* dx, float* db,       \
                                                          long rows, int d, int rows_per_block) {  \
        int col = (blockIdx.x * blockDim.x + threadIdx.x) * 8;                                     \
        if (col >= d) return;                                                                      \
        long r0 = (long)blockIdx.y * rows_per_block;                                               \
        long r1 = min(rows, r0 + rows_per_block);                                                  \
        uint4 bv = *(const uint4*)(b + col);                                                       \
        const u16* bh = (const u16*)&bv;                                                           \
        float bias[8], acc[8];                                                                     \
        _Pragma("unroll") for (int j = 0; j < 8; ++j) {                                            \
            bias[j] = LD(bh[j]);                                                                   \
            acc[j] = 0.f;                                                                          \
        }                                                                                          \
        for (long r = r0; r < r1; ++r) {                                                           \
            long i = r * d + col;                                                                  \
            uint4 xv = *(const uint4*)(x + i);                                                     \
            uint4 gv = *(const uint4*)(dy + i);                                                    \
            const u16* xh = (const u16*)&xv;                                                       \
            const u16* gh = (const u16*)&gv;                                                       \
            uint4 out;                                                                             \
            u16* oh = (u16*)&out;                                                                  \
            _Pragma("unroll") for (int j = 0; j < 8; ++j) {                                        \
                float u = LD(xh[j]) + bias[j];                                                     \
                float cdf = 0.5f * (1.f + erff(u * 0.70710678118654752f));                         \
                float pdf = 0.3989422804014327f * __expf(-0.5f * u * u);                           \
                float g = LD(gh[j]) * (cdf + u * pdf);                                             \
                oh[j] = ST(g);                                                                     \
                acc[j] += g;                                                                       \
            }                                                                                      \
            *(uint4*)(dx + i) = out;                                                               \
        }                                                                                          \
        _Pragma("unroll") for (int j = 0; j < 8; ++j) atomicAdd(db + col + j, acc[j]);             \
    }

GELU_VEC_KERNELS(bf16, half_ld_bf16, half_st_bf16)
GELU_VEC_KERNELS(f16, half_ld_f16, half_st_f16)

extern "C" __global__ void f32_to_bf16(const float* a, u16* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = half_st_bf16(a[i]);
}
extern "C" __global__ void f32_to_f16(const float* a, u16* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = half_st_f16(a[i]);
}
