// groupnorm.cu -- GroupNorm over time-major activations with per-request lengths (S3Gen).
//
//   out[b, t, c] = (x[b, t, c] - mean[b, g]) * rsqrt(var[b, g] + eps) * weight[c] + bias[c]
//
// for t < len_b, with g = c / (C / G) and mean, biased variance over the len_b · C/G values
// x[b, t', g·C/G .. (g+1)·C/G) with t' < len_b: torch.nn.GroupNorm(G, C) applied to each request's
// valid frames alone (a padded batch normalises like its requests one at a time). Frames t >= len_b
// are written 0 without reading x; a request of length 0 is all zeros. len_b = lens[b], or T when
// lens is null. Statistics in f32, two passes (the mean, then the centred sum of squares), as
// layernorm.cu. x is an f32 stream [B, T, C]; weight and bias bf16 [C]; out bf16 [B, T, C], or f32
// when out_f32 is set. len_b outside 0..=T (it lives on the device, the host cannot check it) makes
// every element of batch b NaN (the Cpu op returns an error). The host guarantees T·C < 2^31.
//
// Launch: grid = (B·G), block = (GROUPNORM_BLOCK); one block per (batch item, group), the groups
// of an item in consecutive blocks (B·G < 2^31, checked by the host). Each thread walks the
// group's [T, C/G] slab in row-major order with a stride of blockDim.x elements (consecutive threads
// read consecutive channels of a frame, then the next frame: a warp reads runs of C/G contiguous
// floats). Three sweeps: sum and centred sum of squares over the valid frames (block reductions),
// then the output over all T frames. Small groups leave most of a block idle, and only B·G blocks
// run (16 for S3Gen's [2, 814, 256] with G = 8): fine for a layer this size, not a roofline kernel.
#include "common.cuh"

#define GROUPNORM_BLOCK 512

// Mirrors tts_kernels::ops::groupnorm::GroupNormParams (#[repr(C)], 64 bytes).
struct GroupNormParams {
    const float* x;        // [B, T, C] f32
    const bf16_t* weight;  // [C] bf16
    const bf16_t* bias;    // [C] bf16, or null: no bias
    const int* lens;       // [B] valid frames, or null: T
    void* out;             // [B, T, C] bf16, or f32 with out_f32
    unsigned batch, t, channels, groups;
    float eps;
    unsigned out_f32;
};
static_assert(sizeof(GroupNormParams) == 64, "GroupNormParams must match its Rust mirror");

extern "C" __global__ void __launch_bounds__(GROUPNORM_BLOCK) group_norm_bf16(const GroupNormParams p) {
    __shared__ float scratch[32];
    const unsigned b = blockIdx.x / p.groups, g = blockIdx.x - b * p.groups;
    if (b >= p.batch) return;  // uniform over the block
    const unsigned cpg = p.channels / p.groups;   // channels per group (>= 1)
    const int len_raw = p.lens ? p.lens[b] : (int)p.t;
    const bool bad = len_raw < 0 || len_raw > (int)p.t;
    const unsigned len = bad ? 0u : (unsigned)len_raw;
    const size_t base = (size_t)b * p.t * p.channels + (size_t)g * cpg;  // x[b, 0, g·cpg]
    const float* x = p.x + base;
    // Element k = threadIdx.x + i·blockDim.x of the slab is (frame k / cpg, channel k % cpg): the
    // thread starts at (t0, j0) and steps by (dt, dj) with a carry, so no division in the loops.
    const unsigned t0 = threadIdx.x / cpg, j0 = threadIdx.x - t0 * cpg;
    const unsigned dt = blockDim.x / cpg, dj = blockDim.x - dt * cpg;

    float s = 0.0f;
    for (unsigned t = t0, j = j0; t < len;) {
        s += x[(size_t)t * p.channels + j];
        t += dt;
        j += dj;
        if (j >= cpg) { j -= cpg; ++t; }
    }
    const float n = (float)(len * cpg);  // < 2^31 values (T·C < 2^31)
    const float mean = block_sum(s, scratch) / n;  // NaN when len = 0: never used then
    float ss = 0.0f;
    for (unsigned t = t0, j = j0; t < len;) {
        const float d = x[(size_t)t * p.channels + j] - mean;
        ss += d * d;
        t += dt;
        j += dj;
        if (j >= cpg) { j -= cpg; ++t; }
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / n + p.eps);

    for (unsigned t = t0, j = j0; t < p.t;) {
        const unsigned c = g * cpg + j;
        float y = 0.0f;
        if (bad) {
            y = quiet_nan();
        } else if (t < len) {
            y = (x[(size_t)t * p.channels + j] - mean) * inv * bf16_to_f32(p.weight[c]);
            if (p.bias) y += bf16_to_f32(p.bias[c]);
        }
        const size_t at = base + (size_t)t * p.channels + j;
        if (p.out_f32) ((float*)p.out)[at] = y;
        else ((bf16_t*)p.out)[at] = f32_to_bf16(y);
        t += dt;
        j += dj;
        if (j >= cpg) { j -= cpg; ++t; }
    }
}
