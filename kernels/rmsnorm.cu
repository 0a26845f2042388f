// rmsnorm.cu -- RMSNorm with a fused residual add (Llama / T3 decoder layers).
//
//   residual[r, :] += x[r, :]                      (skipped when x is null)
//   out[r, :] = residual[r, :] * rsqrt(mean(residual[r, :]^2) + eps) * weight[:]
//
// as in HF LlamaRMSNorm (statistics in f32). The residual stream stays f32 across the 30 layers;
// x (a GEMM output) and out (a GEMM input) are bf16.
//
// Launch: grid = (rows), block = (RMSNORM_BLOCK) threads; one block per row.
#include "common.cuh"

#define RMSNORM_BLOCK 256

// Mirrors tts_kernels::ops::rmsnorm::AddRmsNormParams (#[repr(C)], 48 bytes).
struct AddRmsNormParams {
    const bf16_t* x;       // [rows, cols] bf16, or null: no residual add
    float* residual;       // [rows, cols] f32, updated in place
    const bf16_t* weight;  // [cols] bf16
    bf16_t* out;           // [rows, cols] bf16
    unsigned rows, cols;
    float eps;
    unsigned pad_;
};
static_assert(sizeof(AddRmsNormParams) == 48, "AddRmsNormParams must match its Rust mirror");


// nvrtc-gate: reads-own-writes (the residual is updated in place and read back)
extern "C" __global__ void __launch_bounds__(RMSNORM_BLOCK) add_rmsnorm_bf16(const AddRmsNormParams p) {
    __shared__ float scratch[32];
    const unsigned row = blockIdx.x;
    if (row >= p.rows) return;
    const size_t base = (size_t)row * p.cols;
    float* res = p.residual + base;
    float ss = 0.0f;
    for (unsigned j = threadIdx.x; j < p.cols; j += blockDim.x) {
        float h = res[j];
        if (p.x) {
            h += bf16_to_f32(p.x[base + j]);
            res[j] = h;
        }
        ss += h * h;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)p.cols + p.eps);
    // each thread re-reads only the elements it wrote itself: no barrier needed
    for (unsigned j = threadIdx.x; j < p.cols; j += blockDim.x)
        p.out[base + j] = f32_to_bf16(res[j] * inv * bf16_to_f32(p.weight[j]));
}
