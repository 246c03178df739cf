// Label-smoothed cross-entropy and its gradient in one kernel over rows of V logits (bf16/f16),
// f32 arithmetic, one block per row; the (rows, V) probabilities are never stored. Compiled with
// NVRTC, no headers, after ../half.cu (the 16-bit loads and stores). For row r with target t, weight w_r (0 for prompt and padding positions):
//   lse = log sum_v exp(x_v)
//   loss_r = w_r * ((1 - eps) * (lse - x_t) + eps * (lse - mean_v x_v))     (summed into *loss)
//   dx_v  = w_r * grad_scale * (exp(x_v - lse) - eps / V - (v == t) * (1 - eps))
// (PyTorch's CrossEntropyLoss(label_smoothing=eps); grad_scale = loss scale / counted targets).

#define CE_NEG_INF __int_as_float(0xff800000)

// Merges the running (max, sum of exp(x - max)) pair (m, s) with (m2, s2).
__device__ __forceinline__ void ce_merge(float& m, float& s, float m2, float s2) {
    float mx = fmaxf(m, m2);
    if (mx == CE_NEG_INF) return;
    s = (m == CE_NEG_INF ? 0.f : s * __expf(m - mx)) + (m2 == CE_NEG_INF ? 0.f : s2 * __expf(m2 - mx));
    m = mx;
}

#define CE_KERNELS(SUFFIX, LD, ST)                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                             \
        cross_entropy_##SUFFIX(const u16* logits, const unsigned* targets, const float* weights,  \
                               float* loss, u16* dlogits, int V, float eps, float grad_scale) {    \
        __shared__ float sm[32], ss[32], sx[32];                                                   \
        const long r = blockIdx.x;                                                                 \
        const u16* x = logits + r * V;                                                             \
        float m = CE_NEG_INF, s = 0.f, total = 0.f;                                                 \
        for (int c = threadIdx.x; c < V; c += blockDim.x) {                                        \
            float v = LD(x[c]);                                                                    \
            total += v;                                                                            \
            if (v > m) {                                                                           \
                s = (m == CE_NEG_INF ? 0.f : s * __expf(m - v)) + 1.f;                              \
                m = v;                                                                             \
            } else {                                                                               \
                s += __expf(v - m);                                                                \
            }                                                                                      \
        }                                                                                          \
        for (int o = 16; o > 0; o >>= 1) {                                                         \
            float m2 = __shfl_xor_sync(0xffffffffu, m, o);                                         \
            float s2 = __shfl_xor_sync(0xffffffffu, s, o);                                         \
            total += __shfl_xor_sync(0xffffffffu, total, o);                                       \
            ce_merge(m, s, m2, s2);                                                                \
        }                                                                                          \
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;       \
        if (lane == 0) {                                                                           \
            sm[warp] = m;                                                                          \
            ss[warp] = s;                                                                          \
            sx[warp] = total;                                                                      \
        }                                                                                          \
        __syncthreads();                                                                           \
        if (warp == 0) {                                                                           \
            m = lane < warps ? sm[lane] : CE_NEG_INF;                                               \
            s = lane < warps ? ss[lane] : 0.f;                                                     \
            total = lane < warps ? sx[lane] : 0.f;                                                 \
            for (int o = 16; o > 0; o >>= 1) {                                                     \
                float m2 = __shfl_xor_sync(0xffffffffu, m, o);                                     \
                float s2 = __shfl_xor_sync(0xffffffffu, s, o);                                     \
                total += __shfl_xor_sync(0xffffffffu, total, o);                                   \
                ce_merge(m, s, m2, s2);                                                            \
            }                                                                                      \
            if (lane == 0) {                                                                       \
                sm[0] = m + __logf(s);                                                             \
                sx[0] = total;                                                                     \
            }                                                                                      \
        }                                                                                          \
        __syncthreads();                                                                           \
        const float lse = sm[0];                                                                   \
        const float w = weights[r];                                                                \
        const unsigned t = targets[r];                                                             \
        if (threadIdx.x == 0 && w != 0.f) {                                                        \
            float xt = t < (unsigned)V ? LD(x[t]) : 0.f;                                           \
            float row = (1.f - eps) * (lse - xt) + eps * (lse - sx[0] / (float)V);                 \
            atomicAdd(loss, w * row);                                                              \
        }                                                                                          \
        const float scale = w * grad_scale, uniform = eps / (float)V;                              \
        u16* dx = dlogits + r * V;                                                                 \
        for (int c = threadIdx.x; c < V; c += blockDim.x) {                                        \
            float p = __expf(LD(x[c]) - lse) - uniform - ((unsigned)c == t ? 1.f - eps : 0.f);     \
            dx[c] = ST(scale * p);                                                                 \
        }                                                                                          \
    }

CE_KERNELS(bf16, half_ld_bf16, half_st_bf16)
CE_KERNELS(f16, half_ld_f16, half_st_f16)
