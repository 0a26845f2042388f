// layernorm.cu -- LayerNorm over the last dim (T3 perceiver; S3Gen conformer and estimator later).
//
//   out[r, :] = (x[r, :] - mean) * rsqrt(var + eps) * weight[:] + bias[:]
//
// with the biased variance, as torch.nn.LayerNorm; mean and variance in f32, two passes (mean, then
// the centred sum of squares) for accuracy. x is an f32 residual stream; weight and bias bf16; out bf16,
// or f32 when out_f32 is set (S3Gen keeps its normalised streams in f32).
//
// Launch: grid = (rows), block = (LAYERNORM_BLOCK); one block per row.
#include "common.cuh"

#define LAYERNORM_BLOCK 256

// Mirrors tts_kernels::ops::norm::LayerNormParams (#[repr(C)], 48 bytes).
struct LayerNormParams {
    const float* x;        // [rows, cols] f32
    const bf16_t* weight;  // [cols] bf16
    const bf16_t* bias;    // [cols] bf16, or null: no bias
    void* out;             // [rows, cols] bf16, or f32 with out_f32
    unsigned rows, cols;
    float eps;
    unsigned out_f32;
};
static_assert(sizeof(LayerNormParams) == 48, "LayerNormParams must match its Rust mirror");

extern "C" __global__ void __launch_bounds__(LAYERNORM_BLOCK) layer_norm_bf16(const LayerNormParams p) {
    __shared__ float scratch[32];
    const unsigned row = blockIdx.x;
    if (row >= p.rows) return;
    const float* x = p.x + (size_t)row * p.cols;
    float s = 0.0f;
    for (unsigned j = threadIdx.x; j < p.cols; j += blockDim.x) s += x[j];
    const float mean = block_sum(s, scratch) / (float)p.cols;
    float ss = 0.0f;
    for (unsigned j = threadIdx.x; j < p.cols; j += blockDim.x) {
        const float d = x[j] - mean;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)p.cols + p.eps);
    const size_t base = (size_t)row * p.cols;
    for (unsigned j = threadIdx.x; j < p.cols; j += blockDim.x) {
        float y = (x[j] - mean) * inv * bf16_to_f32(p.weight[j]);
        if (p.bias) y += bf16_to_f32(p.bias[j]);
        if (p.out_f32) ((float*)p.out)[base + j] = y;
        else ((bf16_t*)p.out)[base + j] = f32_to_bf16(y);
    }
}
