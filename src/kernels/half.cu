// What the NVRTC kernels of src/kernels/ share, compiled in front of each kernel.cu (no headers):
// 16-bit values as raw bits, loaded into f32 and stored from f32 with round-to-nearest-even (NaN
// kept as a quiet NaN), the conversions candle's to_dtype makes.

typedef unsigned short u16;

__device__ __forceinline__ float half_ld_bf16(u16 x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ u16 half_st_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}
__device__ __forceinline__ float half_ld_f16(u16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}
__device__ __forceinline__ u16 half_st_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

