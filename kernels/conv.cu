// conv.cu -- 1-D convolutions as im2col + GEMM and transposed convolutions as GEMM + col2im
// (S3Gen's estimator, HiFT). Layout: time-major [B, T, C] everywhere.
//
// im2col_1d: out[b, t, c·K + j] = src_b(t·stride + j·dilation − pad_left, c), where
//   src_b(i, c) = x[b, i / upsample, c] for 0 <= i < S_b = len_b · upsample (nearest-neighbour
//   upsampling), len_b = lens[b] (L_in when lens is null). Outside 0..S_b a position reads 0
//   (reflect == 0) or its reflection about the first / last sample (reflect == 1: −i reads i,
//   S_b − 1 + i reads S_b − 1 − i), and 0 when still outside after one reflection. Column c·K + j
//   is the column of a PyTorch Conv1d weight (C_out, C_in, K) viewed as [C_out, C_in·K], so the
//   GEMM out · Wᵀ is the convolution. x and out are each f32 or bf16 (x_f32 / out_f32); the value
//   is copied (one rounding when f32 -> bf16). len_b outside 0..=L_in (it lives on the device, the
//   host cannot check it) makes every element of batch b NaN (the Cpu op returns an error).
//   The host guarantees (L_out − 1)·stride + (K − 1)·dilation, pad_left and L_in·upsample are
//   below 2^31, so positions fit in 64-bit signed arithmetic with room to spare.
//   Launch: grid = (ceil(B·L_out·C·K / CONV_BLOCK)), block = (CONV_BLOCK); one thread per output
//   element in output order, so writes are fully coalesced along the C·K columns of a row; the
//   reads of a warp hit the K source rows of one or two output rows.
//
// col2im_transpose_1d: the overlap-add half of ConvTranspose1d after its GEMM
//   (cols = x · W with W the torch weight (C_in, C_out, K) as [C_out·K, C_in]):
//   out[b, t, c] = Σ_j cols[b, i, c·K + j] (+ bias[c]) over j < K with i·stride + j − pad = t and
//   i < len_b, summed in f32 for increasing j, the bias (bf16) added last. A gather: one thread per
//   output element visits its ceil(K / stride) taps (j ≡ t + pad mod stride), so no atomics and a
//   deterministic order (the Cpu reference sums in the same order). cols and out f32. len_b outside
//   0..=L_in gives NaN for batch b.
//   Launch: grid = (ceil(B·L_out·C / CONV_BLOCK)), block = (CONV_BLOCK).
//
// depthwise_conv1d: a zero-padded, stride-1 depthwise convolution over C channels that start at
//   column col_offset of rows `row` wide (the v part of fused QKV rows, for the S3Tokenizer's FSMN
//   memory), with the input itself optionally added:
//   out[b, t, c] = Σ_j w[j, c] · x[b, t + j − pad_left, col_offset + c] (+ x[b, t, col_offset + c])
//   over taps j < K whose row lies in 0..L, summed in f32 for increasing j, each product and sum
//   rounded alone (__fmul_rn / __fadd_rn: no FMA), the residual added last: the Cpu twin's order,
//   so both give the same bits from the same inputs. x and out are each f32 or bf16 (x_f32 /
//   out_f32); w f32 tap-major [K, C].
//   Launch: grid = (ceil(B·L·C / CONV_BLOCK)), block = (CONV_BLOCK); one thread per output element,
//   consecutive threads on consecutive channels (coalesced reads of each tap's row and writes).
#include "common.cuh"

#define CONV_BLOCK 256

// Mirrors tts_kernels::ops::conv::Im2colParams (#[repr(C)], 72 bytes).
struct Im2colParams {
    const void* x;    // [B, L_in, C] f32 (x_f32) or bf16
    const int* lens;  // [B] valid input rows, or null: L_in
    void* out;        // [B, L_out, C·K] f32 (out_f32) or bf16
    unsigned batch, l_in, l_out, channels, kernel, stride, dilation, pad_left, upsample;
    unsigned reflect, x_f32, out_f32;
};
static_assert(sizeof(Im2colParams) == 72, "Im2colParams must match its Rust mirror");

// Mirrors tts_kernels::ops::conv::Col2imParams (#[repr(C)], 64 bytes).
struct Col2imParams {
    const float* cols;    // [B, L_in, C·K] f32
    const int* lens;      // [B] valid input rows, or null: L_in
    const bf16_t* bias;   // [C] bf16, or null
    float* out;           // [B, L_out, C] f32
    unsigned batch, l_in, l_out, channels, kernel, stride, pad;
    unsigned pad_;
};
static_assert(sizeof(Col2imParams) == 64, "Col2imParams must match its Rust mirror");

// Mirrors tts_kernels::ops::conv::DepthwiseConvParams (#[repr(C)], 64 bytes).
struct DepthwiseConvParams {
    const void* x;   // [B, L, row] f32 (x_f32) or bf16; the C channels at col_offset
    const float* w;  // [K, C] f32, tap-major
    void* out;       // [B, L, C] f32 (out_f32) or bf16
    unsigned batch, len, row, col_offset, channels, taps, pad_left, residual, x_f32, out_f32;
};
static_assert(sizeof(DepthwiseConvParams) == 64, "DepthwiseConvParams must match its Rust mirror");

extern "C" __global__ void __launch_bounds__(CONV_BLOCK) im2col_1d(const Im2colParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned ck = p.channels * p.kernel;
    const size_t row = i / ck;
    if (row >= (size_t)p.batch * p.l_out) return;
    const unsigned col = (unsigned)(i - row * ck);
    const unsigned b = (unsigned)(row / p.l_out), t = (unsigned)(row - (size_t)b * p.l_out);
    const unsigned c = col / p.kernel, j = col - c * p.kernel;
    const int len = p.lens ? p.lens[b] : (int)p.l_in;
    float v;
    if (len < 0 || len > (int)p.l_in) {
        v = quiet_nan();
    } else {
        const long long s = (long long)len * p.upsample;
        long long pos = (long long)t * p.stride + (long long)j * p.dilation - (long long)p.pad_left;
        if (p.reflect) {
            if (pos < 0) pos = -pos;
            else if (pos >= s) pos = 2 * (s - 1) - pos;
        }
        v = 0.0f;
        if (pos >= 0 && pos < s) {
            const size_t at = ((size_t)b * p.l_in + (size_t)(pos / p.upsample)) * p.channels + c;
            v = p.x_f32 ? ((const float*)p.x)[at] : bf16_to_f32(((const bf16_t*)p.x)[at]);
        }
    }
    if (p.out_f32) ((float*)p.out)[i] = v;
    else ((bf16_t*)p.out)[i] = f32_to_bf16(v);
}

extern "C" __global__ void __launch_bounds__(CONV_BLOCK) col2im_transpose_1d(const Col2imParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t row = i / p.channels;
    if (row >= (size_t)p.batch * p.l_out) return;
    const unsigned c = (unsigned)(i - row * p.channels);
    const unsigned b = (unsigned)(row / p.l_out), t = (unsigned)(row - (size_t)b * p.l_out);
    const int len = p.lens ? p.lens[b] : (int)p.l_in;
    if (len < 0 || len > (int)p.l_in) {
        p.out[i] = quiet_nan();
        return;
    }
    const unsigned long long tp = (unsigned long long)t + p.pad;
    const size_t ck = (size_t)p.channels * p.kernel;
    const float* base = p.cols + (size_t)b * p.l_in * ck + (size_t)c * p.kernel;
    float acc = 0.0f;
    for (unsigned long long j = tp % p.stride; j < p.kernel && j <= tp; j += p.stride) {
        const unsigned long long src = (tp - j) / p.stride;
        if (src < (unsigned long long)len) acc += base[src * ck + j];
    }
    if (p.bias) acc += bf16_to_f32(p.bias[c]);
    p.out[i] = acc;
}

__device__ __forceinline__ float depthwise_load(const DepthwiseConvParams& p, size_t at) {
    return p.x_f32 ? ((const float*)p.x)[at] : bf16_to_f32(((const bf16_t*)p.x)[at]);
}

extern "C" __global__ void __launch_bounds__(CONV_BLOCK) depthwise_conv1d(const DepthwiseConvParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t bt = i / p.channels;
    if (bt >= (size_t)p.batch * p.len) return;
    const unsigned c = (unsigned)(i - bt * p.channels);
    const unsigned b = (unsigned)(bt / p.len), t = (unsigned)(bt - (size_t)b * p.len);
    const size_t base = (size_t)b * p.len;
    const long long first = (long long)t - (long long)p.pad_left;
    float acc = 0.0f;
    for (unsigned j = 0; j < p.taps; ++j) {
        const long long s = first + j;
        if (s < 0 || s >= (long long)p.len) continue;
        const float v = depthwise_load(p, (base + (size_t)s) * p.row + p.col_offset + c);
        acc = __fadd_rn(acc, __fmul_rn(p.w[(size_t)j * p.channels + c], v));
    }
    if (p.residual) acc = __fadd_rn(acc, depthwise_load(p, (base + t) * p.row + p.col_offset + c));
    if (p.out_f32) ((float*)p.out)[i] = acc;
    else ((bf16_t*)p.out)[i] = f32_to_bf16(acc);
}
