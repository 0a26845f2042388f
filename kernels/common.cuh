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

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
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
