// pointwise.cu -- pointwise activations with a padding mask, per-batch broadcasts, channel
// concatenation and the flow-matching Euler step (S3Gen). Math in f32 everywhere. Tensors marked
// "f32 or bf16" carry a flag in the params struct (`*_f32` != 0: f32, else bf16), so each op has one
// entry point whatever its dtype combination; bf16 inputs are widened exactly, bf16 outputs are
// rounded once (nearest even). Products that feed an add are written __fmul_rn so that NVRTC does
// not fuse them into an FMA: the results then match the f32 reference (torch, the Cpu ops) bit for
// bit up to the libm-level functions (expf, erff, log1pf, tanhf, expm1f; sin via sincos_f32).
//
// 1. pw_activation: out[i] = act(x[i]) over [rows, C] (any rank, C = the last dim), act one of
//      0 identity  x
//      1 silu      x / (1 + exp(-x))
//      2 gelu      0.5·x·(1 + erf(x·√½))                       (torch GELU, approximate='none')
//      3 mish      x·tanh(log1p(exp(x)))                       (ATen's torch.nn.Mish; no threshold)
//      4 leaky     x > 0 ? x : slope·x                          (param = slope)
//      5 elu       x > 0 ? x : expm1(x)                         (alpha 1)
//      6 abs       |x|
//      7 scale     s·x                                          (param = s)
//      8 snake     x + (1 / (α_c + 1e-9))·sin(α_c·x)²           (hifigan.py Snake, alpha_logscale False;
//                                                                α [C] f32; |α_c·x| >= 2^26 gives NaN)
//    With `lens` ([B] i32) the tensor is [B, N, C] (rows = B·N, n = N) and every element of a row
//    t >= lens[b] is written 0 without reading x (the reference's `* mask`). x may equal out (in place).
// 2. pw_add_batch_bias: y[b, t, c] += v[b, c];  y [B, N, C] f32, v [B, C] f32.
// 3. pw_add_scaled: y[i] += s·x[i];  y f32, x f32 or bf16.
// 4. pw_write_cols: dst[b, t, offset + c] = src[b, t', c] with t' = t (src_n == N) or 0 (src_n == 1);
//    src [B, src_n, Cs], dst [B, N, Cd]; each f32 or bf16.
// 5. pw_cfm_euler_cfg (flow_matching.py:139-141): for i over x [B, N, C] f32 with v [2B, N, C] f32
//    (conditional rows first): x[i] = x[i] + dt·((1 + cfg)·v[i] − cfg·v[B·N·C + i]); then, with est,
//    the new x[b, t, c] is stored to est[b, t, c] and est[B + b, t, c] of est [2B, N, C_in] (f32 or
//    bf16). (1 + cfg) arrives precomputed in f32 as cfg1.
//
// Launch (all five): grid = (ceil(elements / PW_BLOCK)), block = (PW_BLOCK), one thread per element
// (per element of src for pw_write_cols, of x for pw_cfm_euler_cfg).
#include "common.cuh"

#define PW_BLOCK 256

#define PW_IDENTITY 0
#define PW_SILU 1
#define PW_GELU 2
#define PW_MISH 3
#define PW_LEAKY_RELU 4
#define PW_ELU 5
#define PW_ABS 6
#define PW_SCALE 7
#define PW_SNAKE 8

// Mirrors tts_kernels::ops::pointwise::PwActParams (#[repr(C)], 64 bytes).
struct PwActParams {
    const void* x;       // [rows, cols] f32 or bf16 (x_f32)
    void* out;           // [rows, cols] f32 or bf16 (out_f32); may be x itself
    const float* alpha;  // [cols] f32 (snake), else null
    const int* lens;     // [rows / n] i32, or null: no mask
    unsigned rows, cols;
    unsigned n;     // rows per batch (the N of [B, N, C]) when lens is set
    unsigned kind;  // PW_*
    float param;    // leaky: slope; scale: s
    unsigned x_f32, out_f32, pad_;
};
static_assert(sizeof(PwActParams) == 64, "PwActParams must match its Rust mirror");

// Mirrors tts_kernels::ops::pointwise::PwBiasParams (#[repr(C)], 32 bytes).
struct PwBiasParams {
    float* y;        // [rows, cols] f32, rows = B·N
    const float* v;  // [B, cols] f32
    unsigned rows, cols, n, pad_;
};
static_assert(sizeof(PwBiasParams) == 32, "PwBiasParams must match its Rust mirror");

// Mirrors tts_kernels::ops::pointwise::PwScaledParams (#[repr(C)], 32 bytes).
struct PwScaledParams {
    float* y;       // [rows, cols] f32
    const void* x;  // [rows, cols] f32 or bf16 (x_f32)
    unsigned rows, cols;
    float scale;
    unsigned x_f32;
};
static_assert(sizeof(PwScaledParams) == 32, "PwScaledParams must match its Rust mirror");

// Mirrors tts_kernels::ops::pointwise::PwColsParams (#[repr(C)], 48 bytes).
struct PwColsParams {
    const void* src;  // [B, src_n, cs] f32 or bf16 (src_f32)
    void* dst;        // [B, n, cd] f32 or bf16 (dst_f32)
    unsigned rows;    // B·n (rows of dst)
    unsigned n, src_n, cs, cd, offset;
    unsigned src_f32, dst_f32;
};
static_assert(sizeof(PwColsParams) == 48, "PwColsParams must match its Rust mirror");

// Mirrors tts_kernels::ops::pointwise::PwEulerParams (#[repr(C)], 56 bytes).
struct PwEulerParams {
    float* x;        // [rows, cols] f32, rows = B·N
    const float* v;  // [2·rows, cols] f32: conditional rows, then unconditional
    void* est;       // [2·rows, c_in] f32 or bf16 (est_f32), or null
    unsigned rows, cols, c_in, est_f32;
    float dt, cfg1, cfg;  // cfg1 = 1 + cfg (rounded to f32 on the host)
    unsigned pad_;
};
static_assert(sizeof(PwEulerParams) == 56, "PwEulerParams must match its Rust mirror");

namespace {

__device__ __forceinline__ float pw_load(const void* p, size_t i, unsigned is_f32) {
    return is_f32 ? static_cast<const float*>(p)[i] : bf16_to_f32(static_cast<const bf16_t*>(p)[i]);
}

__device__ __forceinline__ void pw_store(void* p, size_t i, unsigned is_f32, float v) {
    if (is_f32) {
        static_cast<float*>(p)[i] = v;
    } else {
        static_cast<bf16_t*>(p)[i] = f32_to_bf16(v);
    }
}

__device__ __forceinline__ float pw_act(const PwActParams& p, float x, unsigned c) {
    switch (p.kind) {
        case PW_SILU: return x / (1.0f + expf(-x));
        case PW_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
        case PW_MISH: return x * tanhf(log1pf(expf(x)));
        case PW_LEAKY_RELU: return x > 0.0f ? x : x * p.param;
        case PW_ELU: return x > 0.0f ? x : expm1f(x);
        case PW_ABS: return fabsf(x);
        case PW_SCALE: return x * p.param;
        case PW_SNAKE: {
            const float al = p.alpha[c];
            float s, co;
            sincos_f32(x * al, &s, &co);
            return x + __fmul_rn(1.0f / (al + 1e-9f), __fmul_rn(s, s));
        }
        default: return x;  // PW_IDENTITY
    }
}

}  // namespace

// nvrtc-gate: reads-own-writes (out may be x itself)
extern "C" __global__ void __launch_bounds__(PW_BLOCK) pw_activation(const PwActParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    if (p.lens) {
        const size_t row = i / p.cols;
        const long long b = (long long)(row / p.n), t = (long long)(row % p.n);
        if (t >= (long long)p.lens[b]) {
            pw_store(p.out, i, p.out_f32, 0.0f);
            return;
        }
    }
    const float x = pw_load(p.x, i, p.x_f32);
    pw_store(p.out, i, p.out_f32, pw_act(p, x, (unsigned)(i % p.cols)));
}

// nvrtc-gate: reads-own-writes (y += v in place)
extern "C" __global__ void __launch_bounds__(PW_BLOCK) pw_add_batch_bias(const PwBiasParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    const size_t row = i / p.cols, c = i % p.cols;
    p.y[i] += p.v[(row / p.n) * p.cols + c];
}

// nvrtc-gate: reads-own-writes (y += s·x in place)
extern "C" __global__ void __launch_bounds__(PW_BLOCK) pw_add_scaled(const PwScaledParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cols) return;
    p.y[i] += __fmul_rn(p.scale, pw_load(p.x, i, p.x_f32));
}

extern "C" __global__ void __launch_bounds__(PW_BLOCK) pw_write_cols(const PwColsParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.rows * p.cs) return;
    const size_t row = i / p.cs, c = i % p.cs;
    const size_t b = row / p.n, t = p.src_n == 1 ? 0 : row % p.n;
    const float v = pw_load(p.src, (b * p.src_n + t) * p.cs + c, p.src_f32);
    pw_store(p.dst, row * p.cd + p.offset + c, p.dst_f32, v);
}

// nvrtc-gate: reads-own-writes (x is updated in place)
extern "C" __global__ void __launch_bounds__(PW_BLOCK) pw_cfm_euler_cfg(const PwEulerParams p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t len = (size_t)p.rows * p.cols;
    if (i >= len) return;
    const float d = __fmul_rn(p.cfg1, p.v[i]) - __fmul_rn(p.cfg, p.v[len + i]);
    const float xn = p.x[i] + __fmul_rn(p.dt, d);
    p.x[i] = xn;
    if (p.est) {
        const size_t r = i / p.cols, c = i % p.cols;
        pw_store(p.est, r * p.c_in + c, p.est_f32, xn);
        pw_store(p.est, ((size_t)p.rows + r) * p.c_in + c, p.est_f32, xn);
    }
}
