// AdamW on f32 master weights in one pass per tensor (torch.optim.AdamW's formula, the order of
// operations of vlmrun's composed update in src/train/optim.rs), optionally writing the updated
// weight's compute-dtype copy in the same pass; the sum of squares of a gradient accumulated into
// one f64 (the global gradient norm); multi-tensor casts between f32 and bf16/f16 (the master
// weights' first compute copy, 16-bit gradients to f32). Compiled with NVRTC, no headers, after ../half.cu (the 16-bit loads and stores).

// The 16-bit copy kinds of the multi-tensor kernels' `kind` argument.
#define COPY_BF16 1
#define COPY_F16 2

// One tensor's update over this block's grid-stride share (blockIdx.x of gridDim.x); with a
// non-null `copy`, the updated weight is also written there in bf16 (kind COPY_BF16) or f16
// (COPY_F16): the compute-dtype copy the next step's model is built from.
__device__ void adamw_body(float* p, float* m, float* v, const float* g, long n, float grad_scale,
                           float decay_factor, float one_minus_beta1, float beta2,
                           float one_minus_beta2, float inv_bias2_sqrt, float eps,
                           float step_size, u16* copy, int kind) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        float gi = g[i] * grad_scale;
        float mi = m[i] + (gi - m[i]) * one_minus_beta1;
        float vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
        float denom = sqrtf(vi) * inv_bias2_sqrt + eps;
        float pi = p[i] * decay_factor - (mi / denom) * step_size;
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (copy) copy[i] = kind == COPY_F16 ? half_st_f16(pi) : half_st_bf16(pi);
    }
}

extern "C" __global__ void adamw_f32(float* p, float* m, float* v, const float* g, long n,
                                     float grad_scale, float decay_factor, float one_minus_beta1,
                                     float beta2, float one_minus_beta2, float inv_bias2_sqrt,
                                     float eps, float step_size) {
    adamw_body(p, m, v, g, n, grad_scale, decay_factor, one_minus_beta1, beta2, one_minus_beta2,
               inv_bias2_sqrt, eps, step_size, 0, 0);
}

// Every parameter at once (one launch instead of one per tensor): tensor blockIdx.y has its
// parameter, exp_avg, exp_avg_sq, gradient and compute-dtype copy (0: none) at ptrs[5y..5y+4],
// lens[y] elements, and the eight scalars of adamw_f32 (grad_scale .. step_size) at
// scalars[8y..8y+7]; `kind` is the copies' dtype.
extern "C" __global__ void adamw_multi_f32(const unsigned long long* ptrs, const long* lens,
                                           const float* scalars, int kind) {
    const int t = blockIdx.y;
    const float* s = scalars + 8 * t;
    adamw_body((float*)ptrs[5 * t], (float*)ptrs[5 * t + 1], (float*)ptrs[5 * t + 2],
               (const float*)ptrs[5 * t + 3], lens[t], s[0], s[1], s[2], s[3], s[4], s[5], s[6],
               s[7], (u16*)ptrs[5 * t + 4], kind);
}

// Casts between f32 and a 16-bit dtype for every tensor of a list in one launch: tensor
// blockIdx.y is read from ptrs[2y] and written to ptrs[2y+1], lens[y] elements; `kind` is the
// 16-bit side's dtype. Rounding to nearest even, as candle's to_dtype.
extern "C" __global__ void cast_multi_from_f32(const unsigned long long* ptrs, const long* lens,
                                               int kind) {
    const int t = blockIdx.y;
    const float* src = (const float*)ptrs[2 * t];
    u16* dst = (u16*)ptrs[2 * t + 1];
    const long n = lens[t];
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        dst[i] = kind == COPY_F16 ? half_st_f16(src[i]) : half_st_bf16(src[i]);
}

extern "C" __global__ void cast_multi_to_f32(const unsigned long long* ptrs, const long* lens,
                                             int kind) {
    const int t = blockIdx.y;
    const u16* src = (const u16*)ptrs[2 * t];
    float* dst = (float*)ptrs[2 * t + 1];
    const long n = lens[t];
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        dst[i] = kind == COPY_F16 ? half_ld_f16(src[i]) : half_ld_bf16(src[i]);
}

// Adds sum(g[i]^2) over this block's grid-stride share of g (blockIdx.x of gridDim.x) to *out.
__device__ void sum_squares_block(const float* g, long n, double* out) {
    __shared__ double partial[32];
    double acc = 0.0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        double x = g[i];
        acc += x * x;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) atomicAdd(out, acc);
    }
}

extern "C" __global__ void sum_squares_f32(const float* g, long n, double* out) {
    sum_squares_block(g, n, out);
}

// Every tensor of a list at once (one launch instead of one per parameter): tensor blockIdx.y
// starts at ptrs[blockIdx.y] and holds lens[blockIdx.y] floats.
extern "C" __global__ void sum_squares_multi_f32(const unsigned long long* ptrs, const long* lens,
                                                 double* out) {
    sum_squares_block((const float*)ptrs[blockIdx.y], lens[blockIdx.y], out);
}
