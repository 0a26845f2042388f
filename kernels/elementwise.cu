// elementwise.cu -- bias and residual adds around GEMMs.
//
// add_bias_bf16:     y[r, j] += bias[j]                         (y bf16, in place)
// fill_rows_bf16:    y[r, j] = bias[j]                          (y bf16: the C operand of a GEMM
//                                                                with beta = 1, so that the bias is
//                                                                added before the single rounding)
// fill_rows_f32:     y[r, j] = bias[j]                          (y f32, bias bf16: the same for a
//                                                                GEMM with an f32 output)
// fill_rows_f32_f32: y[r, j] = bias[j]                          (y and bias f32: an f32 GEMM)
// add_residual_bf16: residual[r, j] += x[r, j] (+ bias[j])      (residual f32; x, bias bf16)
//
// Both compute in f32; add_bias_bf16 rounds once to bf16.
// Launch: grid = (ceil(rows * cols / EW_BLOCK)), block = (EW_BLOCK).
#include "common.cuh"

#define EW_BLOCK 256

// Mirrors tts_kernels::ops::elementwise::BiasParams (#[repr(C)], 32 bytes).
struct BiasParams {
    const bf16_t* x;     // add_residual: [rows, cols] bf16; add_bias: unused (null)
    const bf16_t* bias;  // [cols] bf16, or null (add_residual only)
    void* y;             // add_bias: [rows, cols] bf16; add_residual: [rows, cols] f32
    unsigned rows, cols;
};
static_assert(sizeof(BiasParams) == 32, "BiasParams must match its Rust mirror");

// nvrtc-gate: reads-own-writes (y += bias in place)
extern "C" __global__ void __launch_bounds__(EW_BLOCK) add_bias_bf16(const BiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    bf16_t* y = (bf16_t*)p.y;
    y[i] = f32_to_bf16(bf16_to_f32(y[i]) + bf16_to_f32(p.bias[i % p.cols]));
}

extern "C" __global__ void __launch_bounds__(EW_BLOCK) fill_rows_bf16(const BiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    ((bf16_t*)p.y)[i] = p.bias[i % p.cols];
}

extern "C" __global__ void __launch_bounds__(EW_BLOCK) fill_rows_f32(const BiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    ((float*)p.y)[i] = bf16_to_f32(p.bias[i % p.cols]);
}

extern "C" __global__ void __launch_bounds__(EW_BLOCK) fill_rows_f32_f32(const BiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    ((float*)p.y)[i] = ((const float*)p.bias)[i % p.cols];
}

// nvrtc-gate: reads-own-writes (y += x in place)
extern "C" __global__ void __launch_bounds__(EW_BLOCK) add_residual_bf16(const BiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    float* y = (float*)p.y;
    float v = bf16_to_f32(p.x[i]);
    if (p.bias) v += bf16_to_f32(p.bias[i % p.cols]);
    y[i] += v;
}
