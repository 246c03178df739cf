// AdamW on f32 master weights in one pass per tensor (torch.optim.AdamW's formula, the order of
// operations of vlmrun's composed update in src/train/optim.rs), and the sum of squares of a
// gradient accumulated into one f64 (the global gradient norm). Compiled with NVRTC, no headers.

// One tensor's update over this block's grid-stride share (blockIdx.x of gridDim.x).
__device__ void adamw_body(float* p, float* m, float* v, const float* g, long n, float grad_scale,
                           float decay_factor, float one_minus_beta1, float beta2,
                           float one_minus_beta2, float inv_bias2_sqrt, float eps,
                           float step_size) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        float gi = g[i] * grad_scale;
        float mi = m[i] + (gi - m[i]) * one_minus_beta1;
        float vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
        float denom = sqrtf(vi) * inv_bias2_sqrt + eps;
        p[i] = p[i] * decay_factor - (mi / denom) * step_size;
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" __global__ void adamw_f32(float* p, float* m, float* v, const float* g, long n,
                                     float grad_scale, float decay_factor, float one_minus_beta1,
                                     float beta2, float one_minus_beta2, float inv_bias2_sqrt,
                                     float eps, float step_size) {
    adamw_body(p, m, v, g, n, grad_scale, decay_factor, one_minus_beta1, beta2, one_minus_beta2,
               inv_bias2_sqrt, eps, step_size);
}

// Every parameter at once (one launch instead of one per tensor): tensor blockIdx.y has its
// parameter, exp_avg, exp_avg_sq and gradient at ptrs[4y..4y+3], lens[y] elements, and the eight
// scalars of adamw_f32 (grad_scale .. step_size) at scalars[8y..8y+7].
extern "C" __global__ void adamw_multi_f32(const unsigned long long* ptrs, const long* lens,
                                           const float* scalars) {
    const int t = blockIdx.y;
    const float* s = scalars + 8 * t;
    adamw_body((float*)ptrs[4 * t], (float*)ptrs[4 * t + 1], (float*)ptrs[4 * t + 2],
               (const float*)ptrs[4 * t + 3], lens[t], s[0], s[1], s[2], s[3], s[4], s[5], s[6],
               s[7]);
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
