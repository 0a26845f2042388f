// swiglu.cu -- the gated activation of the Llama MLP.
//
// swiglu_bf16: the Llama MLP gate, out[r, i] = silu(gu[r, i]) * gu[r, I + i], where gu is the output
// of one GEMM with the gate and up projections stacked ([gate; up], 2I columns per row) and
// silu(g) = g / (1 + exp(-g)). Math in f32, one rounding to bf16.
//
// Launch: grid = (ceil(rows * I / ACT_BLOCK)), block = (ACT_BLOCK).
#include "common.cuh"

#define ACT_BLOCK 256

// Mirrors tts_kernels::ops::swiglu::SwigluParams (#[repr(C)], 24 bytes).
struct SwigluParams {
    const bf16_t* gate_up;  // [rows, 2 * inner] bf16
    bf16_t* out;            // [rows, inner] bf16
    unsigned rows, inner;
};
static_assert(sizeof(SwigluParams) == 24, "SwigluParams must match its Rust mirror");

extern "C" __global__ void __launch_bounds__(ACT_BLOCK) swiglu_bf16(const SwigluParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.inner) return;
    const size_t r = i / p.inner, c = i % p.inner;
    const bf16_t* row = p.gate_up + r * 2 * p.inner;
    const float g = bf16_to_f32(row[c]);
    const float u = bf16_to_f32(row[p.inner + c]);
    p.out[i] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
}
