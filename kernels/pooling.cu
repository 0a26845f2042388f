// pooling.cu -- poolings over time of time-major activations [T, C] (CAMPPlus's CAM layer and its
// statistics pooling). One thread per channel walks the frames in order, sums in f32, each add
// rounded alone: the Cpu twins (tts_kernels::cpu::{segment_mean, stats_pool}) sum in the same
// order, so both give the same bits from the same inputs; segment_gate's sigmoid goes through expf
// (libm-level agreement). x, z, y and out are each f32 or bf16 (the *_f32 flags).
//
// 1. segment_mean: the CAM layer's context, the mean over all frames plus the mean over each
//    segment of seg_len frames (the last one shorter):
//      out[s, c] = total_c / T + seg_s,c / n_s,   seg_s,c = Σ_{f in segment s} x[f, c] (in order),
//      total_c = Σ_s seg_s,c (in order),          n_s = frames of segment s,
//    for s < S = ceil(T / seg_len). Two sweeps over the frames (the total, then each segment's sum):
//    nothing read is written.
// 2. segment_gate: y[f, c] *= sigmoid(z[f / seg_len, c]), sigmoid(v) = 1 / (1 + expf(-v)), the
//    product rounded once (in place: y is read and written).
// 3. stats_pool: statistics pooling, out[c] = mean_c, out[C + c] = std_c, the mean Σ_f x[f, c] / T,
//    the unbiased std √(Σ_f (x[f, c] − mean_c)² / (T − 1)) (two sweeps; T >= 2, checked by the host).
//
// Launch: segment_mean and stats_pool: grid = (ceil(C / POOL_BLOCK)), block = (POOL_BLOCK), one
// thread per channel (consecutive threads read consecutive channels of a frame: coalesced).
// segment_gate: grid = (ceil(T·C / POOL_BLOCK)), block = (POOL_BLOCK), one thread per element.
#include "common.cuh"

#define POOL_BLOCK 256

// Mirrors tts_kernels::ops::pooling::PoolParams (#[repr(C)], 48 bytes).
struct PoolParams {
    const void* x;  // [T, C] f32 (x_f32) or bf16 (segment_gate: z [S, C])
    void* out;      // segment_mean: [S, C]; stats_pool: [2C]; segment_gate: y [T, C]; f32 (out_f32) or bf16
    unsigned frames, channels, seg_len, segments, x_f32, out_f32, pad_[2];
};
static_assert(sizeof(PoolParams) == 48, "PoolParams must match its Rust mirror");

__device__ __forceinline__ float pool_load(const void* p, size_t i, unsigned is_f32) {
    return is_f32 ? ((const float*)p)[i] : bf16_to_f32(((const bf16_t*)p)[i]);
}

__device__ __forceinline__ void pool_store(void* p, size_t i, unsigned is_f32, float v) {
    if (is_f32) ((float*)p)[i] = v;
    else ((bf16_t*)p)[i] = f32_to_bf16(v);
}

extern "C" __global__ void __launch_bounds__(POOL_BLOCK) segment_mean(const PoolParams p) {
    const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.channels) return;
    float total = 0.0f;
    for (unsigned s = 0; s < p.segments; ++s) {
        const unsigned f1 = min(p.frames, (s + 1) * p.seg_len);
        float seg = 0.0f;
        for (unsigned f = s * p.seg_len; f < f1; ++f) seg = __fadd_rn(seg, pool_load(p.x, (size_t)f * p.channels + c, p.x_f32));
        total = __fadd_rn(total, seg);
    }
    const float mean = total / (float)p.frames;
    for (unsigned s = 0; s < p.segments; ++s) {
        const unsigned f0 = s * p.seg_len, f1 = min(p.frames, f0 + p.seg_len);
        float seg = 0.0f;
        for (unsigned f = f0; f < f1; ++f) seg = __fadd_rn(seg, pool_load(p.x, (size_t)f * p.channels + c, p.x_f32));
        pool_store(p.out, (size_t)s * p.channels + c, p.out_f32, __fadd_rn(mean, seg / (float)(f1 - f0)));
    }
}

// nvrtc-gate: reads-own-writes (y is scaled in place)
extern "C" __global__ void __launch_bounds__(POOL_BLOCK) segment_gate(const PoolParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t f = i / p.channels;
    if (f >= p.frames) return;
    const unsigned c = (unsigned)(i - f * p.channels);
    const float z = pool_load(p.x, (size_t)(f / p.seg_len) * p.channels + c, p.x_f32);
    const float g = 1.0f / __fadd_rn(1.0f, expf(-z));
    pool_store(p.out, i, p.out_f32, __fmul_rn(pool_load(p.out, i, p.out_f32), g));
}

extern "C" __global__ void __launch_bounds__(POOL_BLOCK) stats_pool(const PoolParams p) {
    const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.channels) return;
    float sum = 0.0f;
    for (unsigned f = 0; f < p.frames; ++f) sum = __fadd_rn(sum, pool_load(p.x, (size_t)f * p.channels + c, p.x_f32));
    const float mean = sum / (float)p.frames;
    float ss = 0.0f;
    for (unsigned f = 0; f < p.frames; ++f) {
        const float d = __fadd_rn(pool_load(p.x, (size_t)f * p.channels + c, p.x_f32), -mean);
        ss = __fadd_rn(ss, __fmul_rn(d, d));
    }
    pool_store(p.out, c, p.out_f32, mean);
    pool_store(p.out, (size_t)p.channels + c, p.out_f32, sqrtf(ss / (float)(p.frames - 1)));
}
