// batchnorm.cu -- eval-mode BatchNorm as a per-channel affine map over time-major activations
// (CAMPPlus), with an optional residual and ReLU:
//
//   out[r, c] = act(x[r, col_offset + c]·scale[c] + shift[c] (+ residual[r, c]))
//
// for r < rows, c < C, where x's rows are `row` values wide (col_offset + C <= row: BatchNorm of the
// first C columns of a CAM-dense block's growing feature map) and act is ReLU (`y > 0 ? y : 0`, NaN
// giving 0) when relu is set, else the identity. scale = γ/√(var + ε) and shift = β − mean·scale are
// folded on the host (f32 [C] each). The product, the sum and the residual add are each rounded
// alone (__fmul_rn / __fadd_rn: no FMA), in that order: the Cpu twin's (tts_kernels::cpu::batch_norm)
// order, so both give the same bits from the same inputs. x, residual and out are each f32 or bf16
// (the *_f32 flags); bf16 inputs are widened exactly, a bf16 output is rounded once.
//
// Launch: grid = (ceil(rows·C / BN_BLOCK)), block = (BN_BLOCK); one thread per output element,
// consecutive threads on consecutive channels (coalesced reads and writes).
#include "common.cuh"

#define BN_BLOCK 256

// Mirrors tts_kernels::ops::batchnorm::BatchNormParams (#[repr(C)], 72 bytes).
struct BatchNormParams {
    const void* x;         // [rows, row] f32 (x_f32) or bf16; the C channels at col_offset
    const float* scale;    // [C] f32
    const float* shift;    // [C] f32
    const void* residual;  // [rows, C] f32 (res_f32) or bf16, or null
    void* out;             // [rows, C] f32 (out_f32) or bf16
    unsigned rows, row, col_offset, channels, relu, x_f32, res_f32, out_f32;
};
static_assert(sizeof(BatchNormParams) == 72, "BatchNormParams must match its Rust mirror");

__device__ __forceinline__ float bn_load(const void* p, size_t i, unsigned is_f32) {
    return is_f32 ? ((const float*)p)[i] : bf16_to_f32(((const bf16_t*)p)[i]);
}

extern "C" __global__ void __launch_bounds__(BN_BLOCK) batch_norm(const BatchNormParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t r = i / p.channels;
    if (r >= p.rows) return;
    const unsigned c = (unsigned)(i - r * p.channels);
    float y = __fadd_rn(__fmul_rn(bn_load(p.x, r * p.row + p.col_offset + c, p.x_f32), p.scale[c]), p.shift[c]);
    if (p.residual) y = __fadd_rn(y, bn_load(p.residual, i, p.res_f32));
    if (p.relu) y = y > 0.0f ? y : 0.0f;
    if (p.out_f32) ((float*)p.out)[i] = y;
    else ((bf16_t*)p.out)[i] = f32_to_bf16(y);
}
