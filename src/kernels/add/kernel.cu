// Bias and residual adds of the training step in one pass: y = x + bias[col] + r (bias and r
// each optional), rows x d in bf16/f16, f32 arithmetic, one rounding. Compiled with NVRTC, no
// headers, after ../half.cu (the 16-bit loads and stores). candle composes `x + bias` and `+ r`
// as two broadcast kernels with per-element index arithmetic and 2-byte accesses; here each
// thread moves 8 elements (16 bytes) per access (`add_vec`, when d and every pointer allow it) or
// one (`add_any`).

// Adds the 8 16-bit values of `v` to `acc`.
#define ADD8(acc, v, LD)                                  \
    {                                                     \
        const u16* h_ = (const u16*)&(v);                 \
        _Pragma("unroll") for (int j = 0; j < 8; ++j) acc[j] += LD(h_[j]); \
    }

#define ADD_KERNELS(SUFFIX, LD, ST)                                                               \
    /* n / 8 chunks; d % 8 == 0 and 16-byte aligned pointers. bias / r may be null. */            \
    extern "C" __global__ void add_vec_##SUFFIX(const u16* x, const u16* bias, const u16* r,     \
                                                u16* y, long chunks, int d) {                      \
        for (long c = (long)blockIdx.x * blockDim.x + threadIdx.x; c < chunks;                     \
             c += (long)gridDim.x * blockDim.x) {                                                  \
            long e = c * 8;                                                                        \
            uint4 xv = *(const uint4*)(x + e);                                                     \
            float acc[8];                                                                          \
            const u16* xh = (const u16*)&xv;                                                       \
            _Pragma("unroll") for (int j = 0; j < 8; ++j) acc[j] = LD(xh[j]);                      \
            if (bias) {                                                                            \
                uint4 bv = *(const uint4*)(bias + (int)(e % d));                                   \
                ADD8(acc, bv, LD)                                                                  \
            }                                                                                      \
            if (r) {                                                                               \
                uint4 rv = *(const uint4*)(r + e);                                                 \
                ADD8(acc, rv, LD)                                                                  \
            }                                                                                      \
            uint4 out;                                                                             \
            u16* oh = (u16*)&out;                                                                  \
            _Pragma("unroll") for (int j = 0; j < 8; ++j) oh[j] = ST(acc[j]);                      \
            *(uint4*)(y + e) = out;                                                                \
        }                                                                                          \
    }                                                                                              \
    /* Any width and alignment, one element per thread and step. */                               \
    extern "C" __global__ void add_any_##SUFFIX(const u16* x, const u16* bias, const u16* r,     \
                                                u16* y, long n, int d) {                           \
        for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;                          \
             i += (long)gridDim.x * blockDim.x) {                                                  \
            float acc = LD(x[i]);                                                                  \
            if (bias) acc += LD(bias[i % d]);                                                      \
            if (r) acc += LD(r[i]);                                                                \
            y[i] = ST(acc);                                                                        \
        }                                                                                          \
    }

ADD_KERNELS(bf16, half_ld_bf16, half_st_bf16)
ADD_KERNELS(f16, half_ld_f16, half_st_f16)
