// Fused CUDA kernels for BLIP decoding, compiled at run time with NVRTC (no headers needed:
// half/bfloat16 are handled as raw 16-bit values). All arithmetic is f32.
//
// Every kernel exists for three element types, suffixed _f32, _f16, _bf16.

#define NEG_INF __int_as_float(0xff800000)

struct f16raw { unsigned short v; };
struct bf16raw { unsigned short v; };

__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float ld(const f16raw* p, long i) {
    float f;
    unsigned short h = p[i].v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float ld(const bf16raw* p, long i) {
    return __uint_as_float(((unsigned int)p[i].v) << 16);
}
__device__ __forceinline__ void st(float* p, long i, float x) { p[i] = x; }
__device__ __forceinline__ void st(f16raw* p, long i, float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    p[i].v = h;
}
__device__ __forceinline__ void st(bf16raw* p, long i, float x) {
    unsigned int u = __float_as_uint(x);
    unsigned short out;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        out = 0x7fc0;  // NaN
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
        out = (unsigned short)(u >> 16);
    }
    p[i].v = out;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Block-wide reductions; `scratch` holds >= 32 floats. Every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.f;
    return warp_sum(t);
}
__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : NEG_INF;
    return warp_max(t);
}

// LayerNorm of the `row` values already in shared memory; writes out[row_off + i].
template <typename T>
__device__ void layer_norm_row(float* row, int d, const T* gamma, const T* beta, float eps,
                               T* out, long row_off, float* scratch) {
    float s = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += row[i];
    float mean = block_sum(s, scratch) / d;
    float q = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) { float c = row[i] - mean; q += c * c; }
    float var = block_sum(q, scratch) / d;
    float inv = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        st(out, row_off + i, (row[i] - mean) * inv * ld(gamma, i) + ld(beta, i));
}

// out = LayerNorm(x + bias + residual), rows of width d. params = [bias; gamma; beta] (3, d).
// grid: rows; shared: (d + 32) floats.
template <typename T>
__device__ void bias_residual_ln(const T* x, const T* residual, const T* params, T* out, int d, float eps) {
    extern __shared__ float smem[];
    float* row = smem;
    float* scratch = smem + d;
    long off = (long)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        row[i] = ld(x, off + i) + ld(params, i) + ld(residual, off + i);
    layer_norm_row(row, d, params + d, params + 2 * d, eps, out, off, scratch);
}

// out row i = LayerNorm(word[ids[i]] + pos_table[past + i % t]); params = [gamma; beta] (2, d).
template <typename T>
__device__ void embed_ln(const unsigned int* ids, const T* word, const T* pos_table, const T* params, T* out,
                         int d, int t, int past, float eps) {
    extern __shared__ float smem[];
    float* row = smem;
    float* scratch = smem + d;
    long src = (long)ids[blockIdx.x] * d;
    long pos = (long)(past + (int)(blockIdx.x % t)) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) row[i] = ld(word, src + i) + ld(pos_table, pos + i);
    layer_norm_row(row, d, params, params + d, eps, out, (long)blockIdx.x * d, scratch);
}

// out = gelu_erf(x + bias), x of n elements in rows of width d.
template <typename T>
__device__ void bias_gelu(const T* x, const T* bias, T* out, int d, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = ld(x, i) + ld(bias, i % d);
        st(out, i, 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

// out (f32) = x + bias, x of n elements in rows of width d.
template <typename T>
__device__ void bias_to_f32(const T* x, const T* bias, float* out, int d, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = ld(x, i) + ld(bias, i % d);
}

// Writes this step's keys/values into the cache kv (2, rows, heads, cap, dh) at position pos.
// qkv: (rows, 3*heads*dh) projection output without bias; bias: (3*heads*dh).
template <typename T>
__device__ void kv_write(T* kv, const T* qkv, const T* bias, int rows, int heads, int cap, int dh, int pos) {
    int dm = heads * dh;
    long n = 2L * rows * dm;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int which = (int)(i / ((long)rows * dm));
        long rem = i % ((long)rows * dm);
        int r = (int)(rem / dm), c = (int)(rem % dm);
        int h = c / dh, e = c % dh;
        int col = (1 + which) * dm + c;
        float v = ld(qkv, (long)r * 3 * dm + col) + ld(bias, col);
        st(kv, (((long)which * rows + r) * heads + h) * cap * dh + (long)pos * dh + e, v);
    }
}

// One query per row attends over positions 0..len of its own cache.
// grid (heads, rows); shared: (dh + len + 32) floats. out: (rows, heads*dh).
template <typename T>
__device__ void self_attn_decode(const T* qkv, const T* bias, const T* kv, T* out,
                                 int rows, int heads, int cap, int dh, int len) {
    extern __shared__ float smem[];
    float* q = smem;
    float* p = smem + dh;
    float* scratch = p + len;
    int h = blockIdx.x, r = blockIdx.y, dm = heads * dh;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int e = threadIdx.x; e < dh; e += blockDim.x)
        q[e] = ld(qkv, (long)r * 3 * dm + h * dh + e) + ld(bias, h * dh + e);
    __syncthreads();
    const T* keys = kv + ((long)r * heads + h) * cap * dh;
    const T* values = kv + (((long)rows + r) * heads + h) * cap * dh;
    for (int j = warp; j < len; j += nwarps) {
        float s = 0.f;
        for (int e = lane; e < dh; e += 32) s += q[e] * ld(keys, (long)j * dh + e);
        s = warp_sum(s);
        if (lane == 0) p[j] = s;
    }
    __syncthreads();
    float m = NEG_INF;
    for (int j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, p[j]);
    m = block_max(m, scratch);
    float z = 0.f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) { float e = expf(p[j] - m); p[j] = e; z += e; }
    z = block_sum(z, scratch);
    __syncthreads();
    float inv = 1.0f / z;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < len; ++j) acc += p[j] * ld(values, (long)j * dh + e);
        st(out, (long)r * dm + h * dh + e, acc * inv);
    }
}

// The g queries of each image attend over that image's n keys/values.
// q: (images*g, heads*dh) projection output without bias; bias: (heads*dh);
// kv: (2, images, heads, n, dh). grid (heads, images); shared: (g*dh + g*n + 32) floats.
template <typename T>
__device__ void cross_attn_decode(const T* q_raw, const T* bias, const T* kv, T* out,
                                  int images, int g, int heads, int n, int dh) {
    extern __shared__ float smem[];
    float* q = smem;
    float* p = smem + g * dh;
    float* scratch = p + g * n;
    int h = blockIdx.x, b = blockIdx.y, dm = heads * dh;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int i = threadIdx.x; i < g * dh; i += blockDim.x) {
        int qi = i / dh, e = i % dh;
        q[i] = ld(q_raw, ((long)b * g + qi) * dm + h * dh + e) + ld(bias, h * dh + e);
    }
    __syncthreads();
    const T* keys = kv + ((long)b * heads + h) * n * dh;
    const T* values = kv + (((long)images + b) * heads + h) * n * dh;
    for (int j = warp; j < n; j += nwarps) {
        for (int qi = 0; qi < g; ++qi) {
            float s = 0.f;
            for (int e = lane; e < dh; e += 32) s += q[qi * dh + e] * ld(keys, (long)j * dh + e);
            s = warp_sum(s);
            if (lane == 0) p[qi * n + j] = s;
        }
    }
    __syncthreads();
    for (int qi = 0; qi < g; ++qi) {
        float* pq = p + qi * n;
        float m = NEG_INF;
        for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, pq[j]);
        m = block_max(m, scratch);
        float z = 0.f;
        for (int j = threadIdx.x; j < n; j += blockDim.x) { float e = expf(pq[j] - m); pq[j] = e; z += e; }
        z = block_sum(z, scratch);
        __syncthreads();
        float inv = 1.0f / z;
        for (int j = threadIdx.x; j < n; j += blockDim.x) pq[j] *= inv;
        __syncthreads();
    }
    for (int i = threadIdx.x; i < g * dh; i += blockDim.x) {
        int qi = i / dh, e = i % dh;
        const float* pq = p + qi * n;
        float acc = 0.f;
        for (int j = 0; j < n; ++j) acc += pq[j] * ld(values, (long)j * dh + e);
        st(out, ((long)b * g + qi) * dm + h * dh + e, acc);
    }
}

#define INSTANTIATE(T, S)                                                                              \
extern "C" __global__ void bias_residual_ln_##S(const T* x, const T* r, const T* p, T* o, int d, float eps) { \
    bias_residual_ln(x, r, p, o, d, eps);                                                              \
}                                                                                                      \
extern "C" __global__ void embed_ln_##S(const unsigned int* ids, const T* w, const T* pos, const T* p, T* o, int d, int t, int past, float eps) { \
    embed_ln(ids, w, pos, p, o, d, t, past, eps);                                                      \
}                                                                                                      \
extern "C" __global__ void bias_gelu_##S(const T* x, const T* b, T* o, int d, long n) { bias_gelu(x, b, o, d, n); } \
extern "C" __global__ void bias_to_f32_##S(const T* x, const T* b, float* o, int d, long n) { bias_to_f32(x, b, o, d, n); } \
extern "C" __global__ void kv_write_##S(T* kv, const T* qkv, const T* b, int rows, int heads, int cap, int dh, int pos) { \
    kv_write(kv, qkv, b, rows, heads, cap, dh, pos);                                                   \
}                                                                                                      \
extern "C" __global__ void self_attn_decode_##S(const T* qkv, const T* b, const T* kv, T* o, int rows, int heads, int cap, int dh, int len) { \
    self_attn_decode(qkv, b, kv, o, rows, heads, cap, dh, len);                                        \
}                                                                                                      \
extern "C" __global__ void cross_attn_decode_##S(const T* q, const T* b, const T* kv, T* o, int images, int g, int heads, int n, int dh) { \
    cross_attn_decode(q, b, kv, o, images, g, heads, n, dh);                                           \
}

INSTANTIATE(float, f32)
INSTANTIATE(f16raw, f16)
INSTANTIATE(bf16raw, bf16)
