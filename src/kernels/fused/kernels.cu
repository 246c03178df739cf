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

// ---------------------------------------------------------------------------------------------
// Small-batch matrix-vector products (decode with few rows): out[r, o] = x[r] . w[o] (+ bias[o]),
// optionally GELU. One warp per output feature, 16-byte loads; rows <= 8, in % (16 / sizeof(T)) == 0.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void load16(const float* p, float* v) {
    float4 f = *reinterpret_cast<const float4*>(p);
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
}
__device__ __forceinline__ void load16(const bf16raw* p, float* v) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        v[2 * j] = __uint_as_float(w[j] << 16);
        v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
}
__device__ __forceinline__ void load16(const f16raw* p, float* v) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        unsigned short lo = (unsigned short)(w[j] & 0xffffu), hi = (unsigned short)(w[j] >> 16);
        float a, b;
        asm("cvt.f32.f16 %0, %1;" : "=f"(a) : "h"(lo));
        asm("cvt.f32.f16 %0, %1;" : "=f"(b) : "h"(hi));
        v[2 * j] = a;
        v[2 * j + 1] = b;
    }
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

// h = x + bias + residual; out[0] = h, out[1] = LayerNorm(h) with params = [bias; gamma; beta].
// out: (2, rows, d). grid: rows; shared: (d + 32) floats. LayerNorm reads h as stored (rounded).
template <typename T>
__device__ void bias_residual_ln2(const T* x, const T* residual, const T* params, T* out, long rows, int d, float eps) {
    extern __shared__ float smem[];
    float* row = smem;
    float* scratch = smem + d;
    long off = (long)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        st(out, off + i, ld(x, off + i) + ld(params, i) + ld(residual, off + i));
        row[i] = ld(out, off + i);
    }
    layer_norm_row(row, d, params + d, params + 2 * d, eps, out, rows * d + off, scratch);
}


// ---------------------------------------------------------------------------------------------
// Row-wise elementwise kernels: grid-stride over rows (blockIdx.x), threads over columns, so that
// no per-element 64-bit division is needed.
// ---------------------------------------------------------------------------------------------

// out = gelu_erf(x + bias), rows of width d.
template <typename T>
__device__ void bias_gelu(const T* x, const T* bias, T* out, int d, long rows) {
    for (long r = blockIdx.x; r < rows; r += gridDim.x) {
        for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < d; c += gridDim.y * blockDim.x) {
            float v = ld(x, r * d + c) + ld(bias, c);
            st(out, r * d + c, 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
        }
    }
}

// out (f32) = x + bias, rows of width d.
template <typename T>
__device__ void bias_to_f32(const T* x, const T* bias, float* out, int d, long rows) {
    for (long r = blockIdx.x; r < rows; r += gridDim.x)
        for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < d; c += gridDim.y * blockDim.x)
            out[r * d + c] = ld(x, r * d + c) + ld(bias, c);
}

// out = LayerNorm(x) with params = [gamma; beta] (2, d). grid: rows; shared: (d + 32) floats.
template <typename T>
__device__ void layer_norm_rows(const T* x, const T* params, T* out, int d, float eps) {
    extern __shared__ float smem[];
    float* row = smem;
    float* scratch = smem + d;
    long off = (long)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) row[i] = ld(x, off + i);
    layer_norm_row(row, d, params, params + d, eps, out, off, scratch);
}

// x (b*n, nproj*heads*dh) + bias -> out (nproj, b, heads, npad, dh); rows n..npad are zero.
template <typename T>
__device__ void split_heads(const T* x, const T* bias, T* out, int b, int n, int npad, int heads, int dh, int nproj) {
    int dm = heads * dh;
    long rows = (long)b * npad;
    for (long row = blockIdx.x; row < rows; row += gridDim.x) {
        int bi = (int)(row / npad), ni = (int)(row % npad);
        for (int c = threadIdx.x; c < nproj * dm; c += blockDim.x) {
            int which = c / dm, rem = c - which * dm;
            int h = rem / dh, e = rem - h * dh;
            float v = ni < n ? ld(x, ((long)bi * n + ni) * nproj * dm + c) + ld(bias, c) : 0.f;
            st(out, ((((long)which * b + bi) * heads + h) * npad + ni) * dh + e, v);
        }
    }
}

// (b, heads, n, dh) -> (b, n, heads*dh).
template <typename T>
__device__ void merge_heads(const T* x, T* out, int b, int heads, int n, int dh) {
    int dm = heads * dh;
    long rows = (long)b * n;
    for (long row = blockIdx.x; row < rows; row += gridDim.x) {
        int bi = (int)(row / n), ni = (int)(row % n);
        for (int c = threadIdx.x; c < dm; c += blockDim.x) {
            int h = c / dh, e = c - h * dh;
            st(out, row * dm + c, ld(x, (((long)bi * heads + h) * n + ni) * dh + e));
        }
    }
}

// Softmax over the first n columns of rows of width stride (n <= 1024), one warp per row;
// columns n..stride are written as 0.
template <typename T>
__device__ void softmax_rows(const T* x, T* out, long rows, int n, int stride) {
    long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int lane = threadIdx.x & 31;
    const T* xr = x + row * stride;
    float v[32];
    float m = NEG_INF;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        int idx = lane + 32 * j;
        v[j] = idx < n ? ld(xr, idx) : NEG_INF;
        m = fmaxf(m, v[j]);
    }
    m = warp_max(m);
    float z = 0.f;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        int idx = lane + 32 * j;
        v[j] = idx < n ? expf(v[j] - m) : 0.f;
        z += v[j];
    }
    z = warp_sum(z);
    float inv = 1.0f / z;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        int idx = lane + 32 * j;
        if (idx < stride) st(out, row * stride + idx, v[j] * inv);
    }
}

// f32 pixels (b, 3, g*p, g*p) -> patches (b*g*g, 3*p*p) in T, each row in (channel, y, x) order.
template <typename T>
__device__ void patchify(const float* px, T* out, int b, int g, int p) {
    long rows = (long)b * g * g;
    int width = 3 * p * p;
    long side = (long)g * p;
    for (long row = blockIdx.x; row < rows; row += gridDim.x) {
        int gx = (int)(row % g), gy = (int)((row / g) % g);
        long bi = row / ((long)g * g);
        for (int c = threadIdx.x; c < width; c += blockDim.x) {
            int ch = c / (p * p), rem = c - ch * p * p;
            int yy = rem / p, xx = rem - yy * p;
            st(out, row * width + c, px[((bi * 3 + ch) * side + (long)gy * p + yy) * side + (long)gx * p + xx]);
        }
    }
}

// out (b, 1+np, d): token 0 = class + pos[0], token 1+j = patches[b, j] + bias + pos[1+j];
// table = [bias; class; positions (1+np rows)].
template <typename T>
__device__ void vision_embed(const T* patches, const T* table, T* out, int b, int np, int d) {
    long rows = (long)b * (np + 1);
    for (long row = blockIdx.x; row < rows; row += gridDim.x) {
        int t = (int)(row % (np + 1));
        long bi = row / (np + 1);
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float v = t == 0 ? ld(table, (long)d + e) : ld(patches, (bi * np + t - 1) * d + e) + ld(table, e);
            st(out, row * d + e, v + ld(table, (long)(2 + t) * d + e));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One-token cross-attention: the g queries of each image attend over that image's n keys/values.
// q: (images*g, heads*dh) projection output without bias; bias: (heads*dh);
// kv: (2, images, heads, stride, dh) of which the first n tokens are real.
// grid (heads, images, splits), block 256; g <= 8, dh <= 128. Block z takes the keys
// [z*chunk, min(n, (z+1)*chunk)): with one split it writes the normalised output to `out`; with
// more (flash-decoding: a batch of one image has only `heads` blocks otherwise, and reads its keys
// far below the memory bandwidth) it writes, per query, its unnormalised sum of e^(s - m) v, then m
// and z = sum e^(s - m), to partial[((b*heads + h)*splits + z)*g + qi][dh + 2], and
// cross_attn_combine merges the splits.
// shared: (g*dh + g*chunk + 8*g*dh + 2*g + 32) floats. Scores: one thread per key (16-byte loads
// when vec_ok); output: warps split the keys, lanes the head dimension, then a cross-warp sum.
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ void cross_attn_decode(const T* q_raw, const T* bias, const T* kv, T* out, float* partial,
                                  int images, int g, int heads, int n_all, int stride, int dh, int vec_ok,
                                  int chunk) {
    const int V = 16 / sizeof(T);
    extern __shared__ float smem[];
    int nwarps = blockDim.x >> 5;
    int splits = gridDim.z, split = blockIdx.z;
    int first = split * chunk;
    int n = min(n_all, first + chunk) - first;  // keys of this block (>= 1: the launcher's split)
    float* q = smem;
    float* p = q + g * dh;
    float* part = p + g * chunk;
    float* stats = part + nwarps * g * dh;
    float* scratch = stats + 2 * g;
    int h = blockIdx.x, b = blockIdx.y, dm = heads * dh;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < g * dh; i += blockDim.x) {
        int qi = i / dh, e = i - qi * dh;
        q[i] = ld(q_raw, ((long)b * g + qi) * dm + h * dh + e) + ld(bias, h * dh + e);
    }
    __syncthreads();
    const T* keys = kv + (((long)b * heads + h) * stride + first) * dh;
    const T* values = kv + ((((long)images + b) * heads + h) * stride + first) * dh;
    int lpk = dh / V;  // lanes per key when each lane loads 16 bytes
    if (vec_ok && dh % V == 0 && lpk <= 32 && (32 % lpk) == 0) {
        // A warp reads 32/lpk whole key rows per step (coalesced), lanes of one key reduce.
        int kpw = 32 / lpk, sub = lane / lpk, part = lane - sub * lpk;
        for (int j0 = warp * kpw; j0 < n; j0 += nwarps * kpw) {
            int j = j0 + sub;
            float kvv[V];
            if (j < n) {
                load16(keys + (long)j * dh + part * V, kvv);
            } else {
#pragma unroll
                for (int t = 0; t < V; ++t) kvv[t] = 0.f;
            }
#pragma unroll
            for (int qi = 0; qi < 8; ++qi) {
                if (qi < g) {
                    float s = 0.f;
#pragma unroll
                    for (int t = 0; t < V; ++t) s += q[qi * dh + part * V + t] * kvv[t];
                    for (int o = lpk >> 1; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                    if (part == 0 && j < n) p[qi * n + j] = s;
                }
            }
        }
    } else {
        // Scalar fallback: one warp per key.
        for (int j = warp; j < n; j += nwarps) {
            for (int qi = 0; qi < g; ++qi) {
                float s = 0.f;
                for (int e = lane; e < dh; e += 32) s += q[qi * dh + e] * ld(keys, (long)j * dh + e);
                s = warp_sum(s);
                if (lane == 0) p[qi * n + j] = s;
            }
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
        if (splits == 1) {
            float inv = 1.0f / z;
            for (int j = threadIdx.x; j < n; j += blockDim.x) pq[j] *= inv;
        } else if (threadIdx.x == 0) {
            stats[2 * qi] = m;
            stats[2 * qi + 1] = z;
        }
        __syncthreads();
    }
    if (vec_ok && dh % V == 0 && lpk <= 32 && (32 % lpk) == 0) {
        // Weighted sum of values with 16-byte loads: as for the scores, a warp reads 32/lpk whole
        // value rows per step; lane `part` of each row accumulates V consecutive entries, then the
        // rows of a warp are summed with shuffles and the warps through shared memory.
        int kpw = 32 / lpk, sub = lane / lpk, part_e = (lane - sub * lpk) * V;
        float acc[8][V];
#pragma unroll
        for (int qi = 0; qi < 8; ++qi)
#pragma unroll
            for (int t = 0; t < V; ++t) acc[qi][t] = 0.f;
        for (int j = warp * kpw + sub; j < n; j += nwarps * kpw) {
            float vv[V];
            load16(values + (long)j * dh + part_e, vv);
#pragma unroll
            for (int qi = 0; qi < 8; ++qi) {
                if (qi < g) {
                    float pj = p[qi * n + j];
#pragma unroll
                    for (int t = 0; t < V; ++t) acc[qi][t] += pj * vv[t];
                }
            }
        }
#pragma unroll
        for (int qi = 0; qi < 8; ++qi) {
            if (qi < g) {
#pragma unroll
                for (int t = 0; t < V; ++t) {
                    float v = acc[qi][t];
                    for (int o = lpk; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                    if (sub == 0) part[(warp * g + qi) * dh + part_e + t] = v;
                }
            }
        }
    } else {
        // Weighted sum of values: warp w takes keys [j0, j1), lane covers e = lane + 32u.
        int per = (n + nwarps - 1) / nwarps;
        int j0 = warp * per, j1 = min(n, j0 + per);
        float acc[8][4];
#pragma unroll
        for (int qi = 0; qi < 8; ++qi)
#pragma unroll
            for (int u = 0; u < 4; ++u) acc[qi][u] = 0.f;
        for (int j = j0; j < j1; ++j) {
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                int e = lane + 32 * u;
                if (e < dh) {
                    float v = ld(values, (long)j * dh + e);
#pragma unroll
                    for (int qi = 0; qi < 8; ++qi) if (qi < g) acc[qi][u] += p[qi * n + j] * v;
                }
            }
        }
#pragma unroll
        for (int qi = 0; qi < 8; ++qi) {
            if (qi < g) {
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    int e = lane + 32 * u;
                    if (e < dh) part[(warp * g + qi) * dh + e] = acc[qi][u];
                }
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < g * dh; i += blockDim.x) {
        int qi = i / dh, e = i - qi * dh;
        float s = 0.f;
        for (int w = 0; w < nwarps; ++w) s += part[(w * g + qi) * dh + e];
        if (splits == 1) {
            st(out, ((long)b * g + qi) * dm + h * dh + e, s);
        } else {
            partial[((((long)b * heads + h) * splits + split) * g + qi) * (dh + 2) + e] = s;
        }
    }
    if (splits > 1 && threadIdx.x < g) {
        long at = ((((long)b * heads + h) * splits + split) * g + threadIdx.x) * (dh + 2) + dh;
        partial[at] = stats[2 * threadIdx.x];
        partial[at + 1] = stats[2 * threadIdx.x + 1];
    }
}

// Merges cross_attn_decode's splits: out = sum_z e^(m_z - M) o_z / sum_z e^(m_z - M) z_z with
// M = max_z m_z. grid (images*g*heads), block >= dh threads.
template <typename T>
__device__ void cross_attn_combine(const float* partial, T* out, int images, int g, int heads, int dh,
                                   int splits) {
    int idx = blockIdx.x, h = idx % heads, qi = (idx / heads) % g, b = idx / (heads * g);
    if (b >= images) return;
    long step = (long)g * (dh + 2);
    const float* base = partial + ((((long)b * heads + h) * splits) * g + qi) * (dh + 2);
    float mx = NEG_INF;
    for (int z = 0; z < splits; ++z) mx = fmaxf(mx, base[z * step + dh]);
    float total = 0.f;
    for (int z = 0; z < splits; ++z) total += base[z * step + dh + 1] * expf(base[z * step + dh] - mx);
    float inv = 1.0f / total;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0.f;
        for (int z = 0; z < splits; ++z) acc += base[z * step + e] * expf(base[z * step + dh] - mx);
        st(out, ((long)b * g + qi) * heads * dh + h * dh + e, acc * inv);
    }
}

// One query per row attends over positions 0..len of its own cache, after writing this step's
// key/value at position len - 1.
// grid (heads, rows); shared: (dh + len + 32) floats. out: (rows, heads*dh).
template <typename T>
__device__ void self_attn_decode(const T* qkv, const T* bias, T* kv, T* out,
                                 int rows, int heads, int cap, int dh, int len) {
    extern __shared__ float smem[];
    float* q = smem;
    float* p = smem + dh;
    float* scratch = p + len;
    int h = blockIdx.x, r = blockIdx.y, dm = heads * dh;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    T* keys = kv + ((long)r * heads + h) * cap * dh;
    T* values = kv + (((long)rows + r) * heads + h) * cap * dh;
    // This step's query, and its key/value written into the cache at position len - 1 (this
    // block owns row r, head h of the cache; the writes are visible to the block after the sync).
    long src = (long)r * 3 * dm + h * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        q[e] = ld(qkv, src + e) + ld(bias, h * dh + e);
        st(keys, (long)(len - 1) * dh + e, ld(qkv, src + dm + e) + ld(bias, dm + h * dh + e));
        st(values, (long)(len - 1) * dh + e, ld(qkv, src + 2 * dm + e) + ld(bias, 2 * dm + h * dh + e));
    }
    __syncthreads();
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


// Reduces each row's per-lane partial sums over the warp; lane 0 adds the bias, applies GELU and
// writes out[r, o].
template <typename T, typename O>
__device__ __forceinline__ void gemv_finish(float* acc, const T* bias, O* out, int rows, int o, int outn, int has_bias, int gelu) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        if (r < rows) {
            float s = warp_sum(acc[r]);
            if (lane == 0) {
                if (has_bias) s += ld(bias, o);
                if (gelu) s = 0.5f * s * (1.0f + erff(s * 0.70710678118654752f));
                st(out, (long)r * outn + o, s);
            }
        }
    }
}

template <typename T, typename O>
__device__ void gemv(const T* x, const T* w, const T* bias, O* out, int rows, int in, int outn, int has_bias, int gelu) {
    const int V = 16 / sizeof(T);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o = blockIdx.x * (blockDim.x >> 5) + warp;
    if (o >= outn) return;
    float acc[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) acc[r] = 0.f;
    const T* wr = w + (long)o * in;
    for (int k = lane * V; k < in; k += 32 * V) {
        float wv[V];
        load16(wr + k, wv);
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            if (r < rows) {
                float xv[V];
                load16(x + (long)r * in + k, xv);
#pragma unroll
                for (int j = 0; j < V; ++j) acc[r] += wv[j] * xv[j];
            }
        }
    }
    gemv_finish(acc, bias, out, rows, o, outn, has_bias, gelu);
}

// ---------------------------------------------------------------------------------------------
// Small-batch products with a GGML-quantized weight, weight-only: out[r, o] = x[r] . dq(w[o])
// (+ bias[o]) (GELU), the activations exact and the weight decoded in registers (never written
// out dense). `w` is the row-major sequence of GGML blocks (q8_0, q4_0, q4k, q6k). One warp per
// output feature, each lane decoding 8 consecutive weights per step; rows <= 8, in % QK == 0.
// ---------------------------------------------------------------------------------------------

// An f16 stored at a 2-byte aligned address.
__device__ __forceinline__ float half_at(const unsigned char* p) {
    unsigned short h = *reinterpret_cast<const unsigned short*>(p);
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// q8_0: {f16 d; int8 q[32]}, w = d * q.
struct BlockQ8_0 {
    static const int QK = 32, BYTES = 34;
    // Weights k..k+7 of `row` (k % 8 == 0).
    __device__ static void decode8(const unsigned char* row, int k, float* w) {
        const unsigned char* b = row + (k / QK) * BYTES;
        float d = half_at(b);
        const signed char* q = reinterpret_cast<const signed char*>(b + 2 + k % QK);
#pragma unroll
        for (int j = 0; j < 8; ++j) w[j] = d * (float)q[j];
    }
};

// q4_0: {f16 d; u8 q[16]}, element e < 16 in the low nibble of q[e], e >= 16 in the high nibble
// of q[e - 16]; w = d * (nibble - 8).
struct BlockQ4_0 {
    static const int QK = 32, BYTES = 18;
    __device__ static void decode8(const unsigned char* row, int k, float* w) {
        const unsigned char* b = row + (k / QK) * BYTES;
        float d = half_at(b);
        int e = k % QK, shift = e >= 16 ? 4 : 0;
        const unsigned char* q = b + 2 + (e & 15);
#pragma unroll
        for (int j = 0; j < 8; ++j) w[j] = d * (float)((int)((q[j] >> shift) & 0xF) - 8);
    }
};

// q4k: {f16 d; f16 dmin; u8 scales[12]; u8 q[128]} per 256 weights, in 4 chunks of 64: chunk c's
// first 32 weights in the low nibbles of q[32c..32c+32), the next 32 in the high nibbles; each
// 32-weight group g = 2c + high has a 6-bit scale and min packed in `scales`;
// w = d * scale_g * nibble - dmin * min_g.
struct BlockQ4K {
    static const int QK = 256, BYTES = 144;
    __device__ static void decode8(const unsigned char* row, int k, float* w) {
        const unsigned char* b = row + (k / QK) * BYTES;
        float d = half_at(b), dmin = half_at(b + 2);
        const unsigned char* sc = b + 4;
        int e = k % QK, c = e / 64, high = (e / 32) & 1, g = 2 * c + high;
        int scale, mn;
        if (g < 4) {
            scale = sc[g] & 63;
            mn = sc[g + 4] & 63;
        } else {
            scale = (sc[g + 4] & 0xF) | ((sc[g - 4] >> 6) << 4);
            mn = (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4);
        }
        float d1 = d * (float)scale, m1 = dmin * (float)mn;
        const unsigned char* q = b + 16 + c * 32 + e % 32;
        int shift = high ? 4 : 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) w[j] = d1 * (float)((q[j] >> shift) & 0xF) - m1;
    }
};

// q6k: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} per 256 weights, in 2 halves of 128, each in
// 4 quarters of 32: weight l of quarter t of half h has its low 4 bits in ql[64h + 32(t & 1) + l]
// (high nibble for t >= 2) and its top 2 bits in qh[32h + l] >> 2t; each 16 weights share a scale,
// scales[8h + 2t + l / 16]; w = d * scale * (q - 32).
struct BlockQ6K {
    static const int QK = 256, BYTES = 210;
    __device__ static void decode8(const unsigned char* row, int k, float* w) {
        const unsigned char* b = row + (k / QK) * BYTES;
        int e = k % QK, h = e / 128, t = (e % 128) / 32, l = e % 32;
        const unsigned char* ql = b + 64 * h + 32 * (t & 1) + l;
        const unsigned char* qh = b + 128 + 32 * h + l;
        const signed char* sc = reinterpret_cast<const signed char*>(b + 192);
        float ds = half_at(b + 208) * (float)sc[8 * h + 2 * t + l / 16];
        int lshift = t >= 2 ? 4 : 0, hshift = 2 * t;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            int q = ((ql[j] >> lshift) & 0xF) | (((qh[j] >> hshift) & 3) << 4);
            w[j] = ds * (float)(q - 32);
        }
    }
};

// 8 consecutive activations (16-byte aligned).
__device__ __forceinline__ void load8(const float* p, float* v) { load16(p, v); load16(p + 4, v + 4); }
__device__ __forceinline__ void load8(const f16raw* p, float* v) { load16(p, v); }
__device__ __forceinline__ void load8(const bf16raw* p, float* v) { load16(p, v); }

template <typename B, typename T, typename O>
__device__ void qgemv(const T* x, const unsigned char* w, const T* bias, O* out, int rows, int in, int outn, int has_bias, int gelu) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o = blockIdx.x * (blockDim.x >> 5) + warp;
    if (o >= outn) return;
    float acc[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) acc[r] = 0.f;
    const unsigned char* wr = w + (long)o * (in / B::QK) * B::BYTES;
    for (int k = lane * 8; k < in; k += 32 * 8) {
        float wv[8];
        B::decode8(wr, k, wv);
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            if (r < rows) {
                float xv[8];
                load8(x + (long)r * in + k, xv);
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[r] += wv[j] * xv[j];
            }
        }
    }
    gemv_finish(acc, bias, out, rows, o, outn, has_bias, gelu);
}


// ---------------------------------------------------------------------------------------------
// Beam search helpers (f32 logits)
// ---------------------------------------------------------------------------------------------

// out[r] = log_softmax(x[r]) (eos column -inf when eos >= 0) + running[r]. grid: rows; shared 32 floats.
extern "C" __global__ void beam_scores_f32(const float* x, const float* running, float* out, int n, int eos) {
    __shared__ float scratch[32];
    long off = (long)blockIdx.x * n;
    float m = NEG_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[off + i]);
    m = block_max(m, scratch);
    float z = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) z += expf(x[off + i] - m);
    z = block_sum(z, scratch);
    float lz = logf(z);
    float add = running[blockIdx.x];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = (x[off + i] - m) - lz;
        if (i == eos) v = NEG_INF;
        out[off + i] = v + add;
    }
}

// Better candidate: larger value, then smaller index.
__device__ __forceinline__ bool better(float v, int i, float w, int j) {
    return v > w || (v == w && i < j);
}

// Top k (<= 16) of each row of x (rows, n), largest first (ties: lower index first).
// out (rows, 2, k): values, then the indices as floats (exact below 2^24). grid: rows, block: 256.
extern "C" __global__ void topk_rows_f32(const float* x, float* out_rows, int n, int k) {
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ int winner_thread;
    long off = (long)blockIdx.x * n;
    float lv[16];
    int li[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) { lv[j] = NEG_INF; li[j] = 0x7fffffff; }
    float last_v = NEG_INF;
    int last_i = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[off + i];
        if (better(v, i, last_v, last_i)) {
            // insert, keeping lv sorted (best first)
            float cv = v;
            int ci = i;
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                if (j < k && better(cv, ci, lv[j], li[j])) {
                    float tv = lv[j]; int ti = li[j];
                    lv[j] = cv; li[j] = ci;
                    cv = tv; ci = ti;
                }
            }
#pragma unroll
            for (int j = 0; j < 16; ++j) if (j == k - 1) { last_v = lv[j]; last_i = li[j]; }
        }
    }
    int head = 0;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int out = 0; out < k; ++out) {
        float bv = NEG_INF;
        int bi = 0x7fffffff;
#pragma unroll
        for (int j = 0; j < 16; ++j) if (j == head) { bv = lv[j]; bi = li[j]; }
        int bt = threadIdx.x;
        // warp argmax
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            int ot = __shfl_xor_sync(0xffffffffu, bt, o);
            if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; bt = ot; }
        }
        __syncthreads();
        if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
        __shared__ int st_thread[32];
        if (lane == 0) st_thread[warp] = bt;
        __syncthreads();
        if (warp == 0) {
            float wv = lane < nwarps ? sv[lane] : NEG_INF;
            int wi = lane < nwarps ? si[lane] : 0x7fffffff;
            int wt = lane < nwarps ? st_thread[lane] : 0;
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, wv, o);
                int oi = __shfl_xor_sync(0xffffffffu, wi, o);
                int ot = __shfl_xor_sync(0xffffffffu, wt, o);
                if (better(ov, oi, wv, wi)) { wv = ov; wi = oi; wt = ot; }
            }
            if (lane == 0) {
                out_rows[(long)blockIdx.x * 2 * k + out] = wv;
                out_rows[(long)blockIdx.x * 2 * k + k + out] = (float)wi;
                winner_thread = wt;
            }
        }
        __syncthreads();
        if (threadIdx.x == winner_thread) head++;
    }
}

// x[r, col] = value for every row (min-length rule on f32 logits). grid: ceil(rows / 256).
extern "C" __global__ void set_column_f32(float* x, int rows, int n, int col, float value) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) x[(long)r * n + col] = value;
}

// First index of the maximum of each row (torch.argmax). grid: rows, block: 256.
extern "C" __global__ void argmax_rows_f32(const float* x, unsigned int* out, int n) {
    __shared__ float sv[32];
    __shared__ int si[32];
    long off = (long)blockIdx.x * n;
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[off + i];
        if (better(v, i, bv, bi)) { bv = v; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        bv = lane < nwarps ? sv[lane] : NEG_INF;
        bi = lane < nwarps ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0u : (unsigned int)bi;
    }
}


#define INSTANTIATE(T, S)                                                                              \
extern "C" __global__ void bias_residual_ln_##S(const T* x, const T* r, const T* p, T* o, int d, float eps) { \
    bias_residual_ln(x, r, p, o, d, eps);                                                              \
}                                                                                                      \
extern "C" __global__ void bias_residual_ln2_##S(const T* x, const T* r, const T* p, T* o, long rows, int d, float eps) { \
    bias_residual_ln2(x, r, p, o, rows, d, eps);                                                       \
}                                                                                                      \
extern "C" __global__ void layer_norm_rows_##S(const T* x, const T* p, T* o, int d, float eps) {       \
    layer_norm_rows(x, p, o, d, eps);                                                                  \
}                                                                                                      \
extern "C" __global__ void embed_ln_##S(const unsigned int* ids, const T* w, const T* pos, const T* p, T* o, int d, int t, int past, float eps) { \
    embed_ln(ids, w, pos, p, o, d, t, past, eps);                                                      \
}                                                                                                      \
extern "C" __global__ void bias_gelu_##S(const T* x, const T* b, T* o, int d, long rows) { bias_gelu(x, b, o, d, rows); } \
extern "C" __global__ void bias_to_f32_##S(const T* x, const T* b, float* o, int d, long rows) { bias_to_f32(x, b, o, d, rows); } \
extern "C" __global__ void self_attn_decode_##S(const T* qkv, const T* b, T* kv, T* o, int rows, int heads, int cap, int dh, int len) { \
    self_attn_decode(qkv, b, kv, o, rows, heads, cap, dh, len);                                        \
}                                                                                                      \
extern "C" __global__ void cross_attn_decode_##S(const T* q, const T* b, const T* kv, T* o, float* part, int images, int g, int heads, int n, int stride, int dh, int vec_ok, int chunk) { \
    cross_attn_decode(q, b, kv, o, part, images, g, heads, n, stride, dh, vec_ok, chunk);              \
}                                                                                                      \
extern "C" __global__ void cross_attn_combine_##S(const float* part, T* o, int images, int g, int heads, int dh, int splits) { \
    cross_attn_combine(part, o, images, g, heads, dh, splits);                                         \
}                                                                                                      \
extern "C" __global__ void split_heads_##S(const T* x, const T* b, T* o, int bsz, int n, int npad, int heads, int dh, int nproj) { \
    split_heads(x, b, o, bsz, n, npad, heads, dh, nproj);                                              \
}                                                                                                      \
extern "C" __global__ void merge_heads_##S(const T* x, T* o, int bsz, int heads, int n, int dh) {      \
    merge_heads(x, o, bsz, heads, n, dh);                                                              \
}                                                                                                      \
extern "C" __global__ void softmax_rows_##S(const T* x, T* o, long rows, int n, int stride) { softmax_rows(x, o, rows, n, stride); } \
extern "C" __global__ void patchify_##S(const float* px, T* o, int b, int g, int p) { patchify(px, o, b, g, p); } \
extern "C" __global__ void vision_embed_##S(const T* x, const T* t, T* o, int b, int np, int d) { vision_embed(x, t, o, b, np, d); } \
extern "C" __global__ void gemv_##S(const T* x, const T* w, const T* b, T* o, int rows, int in, int outn, int has_bias, int gelu) { \
    gemv<T, T>(x, w, b, o, rows, in, outn, has_bias, gelu);                                            \
}                                                                                                      \
extern "C" __global__ void gemv_f32out_##S(const T* x, const T* w, const T* b, float* o, int rows, int in, int outn, int has_bias, int gelu) { \
    gemv<T, float>(x, w, b, o, rows, in, outn, has_bias, gelu);                                        \
}

INSTANTIATE(float, f32)
INSTANTIATE(f16raw, f16)
INSTANTIATE(bf16raw, bf16)

#define INSTANTIATE_QGEMV(B, Q, T, S)                                                                  \
extern "C" __global__ void qgemv_##Q##_##S(const T* x, const unsigned char* w, const T* b, T* o, int rows, int in, int outn, int has_bias, int gelu) { \
    qgemv<B, T, T>(x, w, b, o, rows, in, outn, has_bias, gelu);                                        \
}                                                                                                      \
extern "C" __global__ void qgemv_##Q##_f32out_##S(const T* x, const unsigned char* w, const T* b, float* o, int rows, int in, int outn, int has_bias, int gelu) { \
    qgemv<B, T, float>(x, w, b, o, rows, in, outn, has_bias, gelu);                                    \
}
#define INSTANTIATE_QGEMV_ALL(B, Q)                                                                    \
INSTANTIATE_QGEMV(B, Q, float, f32)                                                                    \
INSTANTIATE_QGEMV(B, Q, f16raw, f16)                                                                   \
INSTANTIATE_QGEMV(B, Q, bf16raw, bf16)

INSTANTIATE_QGEMV_ALL(BlockQ8_0, q8_0)
INSTANTIATE_QGEMV_ALL(BlockQ4_0, q4_0)
INSTANTIATE_QGEMV_ALL(BlockQ4K, q4k)
INSTANTIATE_QGEMV_ALL(BlockQ6K, q6k)
