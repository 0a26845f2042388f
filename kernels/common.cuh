// common.cuh -- helpers shared by every kernel file (textually included; the Rust build inlines it
// into each file's embedded source, so NVRTC needs no include path).
//
// bf16 is carried as its raw 16 bits (`bf16_t`), not as `__nv_bfloat16`: the kernels then need no
// CUDA toolkit header at run time (NVRTC has no built-in cuda_bf16.h) and the CPU shim of the Emu
// backend runs exactly the code the GPU runs. Conversions round to nearest-even, like cvt.rn.bf16.f32.
#pragma once

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fff;  // NaN -> canonical NaN
    u += 0x7fffu + ((u >> 16) & 1u);                             // round to nearest, ties to even
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float quiet_nan() { return __uint_as_float(0x7fc00000u); }

// -inf as a float (no <cmath> / INFINITY at run time in NVRTC).
__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

// Sum over the 32 lanes of a warp (float, double or unsigned long long); every lane gets the total,
// summed in the same xor-butterfly order on every lane.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Maximum over the 32 lanes of a warp; every lane gets it.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Sum over the whole block; every thread gets the total. blockDim.x must be a multiple of 32
// (at most 1024) and every thread of the block must call it. `scratch` is 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();  // scratch may be reused by the caller right after
    return v;
}

// sin and cos of an f32 angle, within 1 ulp of libm / torch, with no stack frame.
// CUDA's precise sinf/cosf carry a Payne-Hanek path for huge arguments that needs a local memory
// array (a stack frame, which the NVRTC gate forbids), and __sinf/__cosf are far too coarse for large
// angles. This reduces by π/2 in double with a 25+53-bit π/2 (exact for |a| < 2^28, as musl's sinf)
// and evaluates fdlibm's double kernels: the f32 results are correctly rounded but for rare
// double-rounding ties. |a| >= 2^26 or NaN gives NaN.
__device__ __forceinline__ void sincos_f32(float a, float* s_out, float* c_out) {
    if (!(fabsf(a) < 67108864.0f)) {  // 2^26; also NaN / inf
        *s_out = quiet_nan();
        *c_out = quiet_nan();
        return;
    }
    const double invpio2 = 6.36619772367581382433e-01;
    const double pio2_1 = 1.57079631090164184570e+00;   // the first 25 bits of π/2
    const double pio2_1t = 1.58932547735281966916e-08;  // π/2 − pio2_1
    const double x = (double)a;
    const double fn = rint(x * invpio2);
    const double y = (x - fn * pio2_1) - fn * pio2_1t;  // |y| <= π/4 (+ a hair)
    const int n = (int)fn;
    const double z = y * y;
    // fdlibm __kernel_sin / __kernel_cos (|y| <= π/4), double precision
    const double sn =
        y + y * z *
                (-1.66666666666666324348e-01 +
                 z * (8.33333333332248946124e-03 +
                      z * (-1.98412698298579493134e-04 +
                           z * (2.75573137070700676789e-06 + z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))));
    const double cs =
        1.0 - 0.5 * z +
        z * z *
            (4.16666666666666019037e-02 +
             z * (-1.38888888888741095749e-03 +
                  z * (2.48015872894767294178e-05 +
                       z * (-2.75573143513906633035e-07 + z * (2.08757232129817482790e-09 + z * -1.13596475577881948265e-11)))));
    const float fs = (float)sn, fc = (float)cs;
    switch (n & 3) {  // a = y + n·π/2
        case 0: *s_out = fs; *c_out = fc; break;
        case 1: *s_out = fc; *c_out = -fs; break;
        case 2: *s_out = -fs; *c_out = -fc; break;
        default: *s_out = -fc; *c_out = fs; break;
    }
}

// RoPE, HF rotate_half (non-interleaved), shared by rope.cu and the fused decode attention of
// attention.cu so that both store exactly the same bits. For element pair (x[i], x[i + D/2]) of a
// head at position pos: a = (float)pos · inv_freq[i] (one f32 multiply, as torch), then
//   y[i] = x[i]·cos a − x[i+D/2]·sin a,   y[i+D/2] = x[i+D/2]·cos a + x[i]·sin a   (f32, rounded to bf16).
__device__ __forceinline__ void rope_cos_sin(int pos, float inv_freq, float* c, float* s) {
    sincos_f32((float)pos * inv_freq, s, c);
}

__device__ __forceinline__ void rope_rotate_bf16(bf16_t x0, bf16_t x1, float c, float s, bf16_t* y0, bf16_t* y1) {
    const float a = bf16_to_f32(x0), b = bf16_to_f32(x1);
    *y0 = f32_to_bf16(a * c - b * s);
    *y1 = f32_to_bf16(b * c + a * s);
}
