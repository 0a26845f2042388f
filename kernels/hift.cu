// hift.cu -- the signal stages of the HiFT vocoder (chatterbox hifigan.py): the harmonic NSF source
// (SineGen + SourceModuleHnNSF) and the inverse STFT of its output (HiFTGenerator._istft / decode).
// f32 in and out; the arithmetic follows the reference's f32 operations one by one (products are
// rounded separately with __fmul_rn / __fadd_rn where torch does so, never fused into an FMA).
//
// 1. hift_source: for batch b and sample n < N = Nm·upsample, with F0 = f0[b, n / upsample]
//    (nearest upsampling), uv = F0 > 10 and, for k = 1..9, F_k = (F0·k) / sample_rate (f32):
//      cs_k[n]  = Σ_{m<=n} F_k[m]  accumulated in f64, rounded to f32 (torch's CPU cumsum)
//      θ_k      = (f32)(2π) · (cs_k % 1)   (torch's remainder: fmod, + 1 when negative)
//      e_k      = (0.1·sin(θ_k + phases[b, k−1]))·uv + amp·noise[b, k−1, n],
//                 amp = 0.003 (voiced) or 0.1/3 (unvoiced)
//      out[b,n] = tanh(Σ_k l_weight[k−1]·e_k + l_bias[0])      (summed in f32 for increasing k)
//    Samples n >= lens[b]·upsample are 0; lens[b] outside 0..=Nm (device data, not checkable on the
//    host) makes the whole row NaN (the Cpu op returns an error).
//    The cumulative sum: F_k is constant over each run of `upsample` samples, so
//    cs_k[n] = (f32)(P_k[m] + (r + 1)·F_k[m]) with n = m·upsample + r and the frame prefix
//    P_k[m] = Σ_{j<m} upsample·F_k[j] in f64. Each term is exact in f64 and so is every partial sum
//    while it needs <= 53 bits (the f32 steps of real f0 contours down to ~2^-33, sums up to ~2^17
//    for minutes of audio), in which case the result equals the reference's sequential per-sample
//    sum exactly; only contours mixing tiny and huge steps can differ, in the last bit of cs.
//    sin: sincos_f32 (common.cuh; correctly rounded but for rare double-rounding ties, within 1 ulp
//    of torch's sinf). tanhf: CUDA's, within 2 ulp.
//    Launch: grid = (ceil(Nm / frames_per_block), B), block = (SRC_BLOCK); block x owns frames
//    m0 = x·frames_per_block .. m0 + frames_per_block (frames_per_block <= SRC_MAX_FRAMES, the host
//    picks about SRC_BLOCK / upsample). The block first sums upsample·F_k over the frames before m0
//    (a strided loop and a block reduction in f64, in any order: exact as argued above), then 9
//    threads extend the prefix over the block's own frames in shared memory, then every thread
//    computes samples (threads stride over the block's samples; 9 sincos each).
//
// 2. hift_istft: torch.istft(n_fft 16, hop 4, win_length 16, periodic Hann window (scipy, f32),
//    center=True, onesided, normalized=False) of mag·cos(ph) + i·mag·sin(ph), with
//    mag = min(exp(x[k]), 100), ph = sin(x[9 + k]) for k = 0..8, x = spec[b, f] (18 values), then
//    clamped to ±clamp. For output sample n (uncut position p = n + 8: center=True trims 8 at each
//    end), over the <= 4 frames f < lens[b] with 4f <= p < 4f + 16, i = p − 4f:
//      frame_f(i) = (1/16)·(re_0 + (−1)^i·re_8 + 2·Σ_{k=1..7} (re_k·cos(2πki/16) − im_k·sin(2πki/16)))
//      out[b, n]  = clamp(Σ_f w[i]·frame_f(i) / Σ_f w[i]², ±clamp)
//    i.e. the exact overlap-added window envelope of the frames present (edges included). Samples
//    n >= (lens[b] − 1)·4 are 0; lens[b] outside 1..=F gives a NaN row.
//    Launch: grid = (ceil(out_len / ISTFT_BLOCK), B), block = (ISTFT_BLOCK). A block's 256 outputs
//    touch at most ISTFT_MAX_FRAMES frames: their 9 complex bins are computed once into shared
//    memory (exp, sin, sincos per (frame, bin); the 1/16 and the factor 2 folded in), then each
//    thread gathers its <= 4 frames with 16-entry cos / sin / window tables (no atomics).
#include "common.cuh"

#define SRC_BLOCK 256
#define SRC_WARPS (SRC_BLOCK / 32)
#define SRC_MAX_FRAMES 32
#define HIFT_H 9
#define ISTFT_BLOCK 256
// frames touching ISTFT_BLOCK consecutive outputs: f_hi − f_lo <= (ISTFT_BLOCK − 1 + 15) / 4
#define ISTFT_MAX_FRAMES ((ISTFT_BLOCK + 14) / 4 + 1)

// scipy.signal.get_window("hann", 16, fftbins=True).astype(np.float32)
__constant__ float HIFT_HANN16[16] = {
    0.0f, 0.03806023299694061f, 0.1464466154575348f, 0.30865827202796936f,
    0.5f, 0.6913416981697083f,  0.8535534143447876f, 0.9619397521018982f,
    1.0f, 0.9619397521018982f,  0.8535534143447876f, 0.6913416981697083f,
    0.5f, 0.30865827202796936f, 0.1464466154575348f, 0.03806023299694061f};
// cos(2πm/16), sin(2πm/16), rounded to f32
__constant__ float HIFT_COS16[16] = {
    1.0f,  0.92387953251128674f,  0.70710678118654752f,  0.38268343236508977f,
    0.0f,  -0.38268343236508977f, -0.70710678118654752f, -0.92387953251128674f,
    -1.0f, -0.92387953251128674f, -0.70710678118654752f, -0.38268343236508977f,
    0.0f,  0.38268343236508977f,  0.70710678118654752f,  0.92387953251128674f};
__constant__ float HIFT_SIN16[16] = {
    0.0f,  0.38268343236508977f,  0.70710678118654752f,  0.92387953251128674f,
    1.0f,  0.92387953251128674f,  0.70710678118654752f,  0.38268343236508977f,
    0.0f,  -0.38268343236508977f, -0.70710678118654752f, -0.92387953251128674f,
    -1.0f, -0.92387953251128674f, -0.70710678118654752f, -0.38268343236508977f};

// Mirrors tts_kernels::ops::hift::HiftSourceParams (#[repr(C)], 80 bytes).
struct HiftSourceParams {
    const float* f0;        // [B, Nm] Hz
    const int* lens;        // [B] valid frames, or null: Nm
    const float* phases;    // [B, 9] initial phases (radians)
    const float* noise;     // [B, 9, N] standard normal draws, N = Nm·upsample
    const float* l_weight;  // [9] l_linear.weight
    const float* l_bias;    // [1] l_linear.bias
    float* out;             // [B, N]
    unsigned batch, n_frames, upsample, frames_per_block;
    float sample_rate;
    unsigned pad_;
};
static_assert(sizeof(HiftSourceParams) == 80, "HiftSourceParams must match its Rust mirror");

// Mirrors tts_kernels::ops::hift::HiftIstftParams (#[repr(C)], 40 bytes).
struct HiftIstftParams {
    const float* spec;  // [B, F, 18] conv_post output, time-major
    const int* lens;    // [B] valid frames, or null: F
    float* out;         // [B, out_len], out_len = (F − 1)·4
    unsigned batch, frames, out_len;
    float clamp;
};
static_assert(sizeof(HiftIstftParams) == 40, "HiftIstftParams must match its Rust mirror");

// F_k = f0 * k / sample_rate, as torch evaluates `f0 * (i + 1) / self.sampling_rate` in f32.
__device__ __forceinline__ float harmonic_step(float f0, unsigned k, float sr) { return __fmul_rn(f0, (float)k) / sr; }

extern "C" __global__ void __launch_bounds__(SRC_BLOCK) hift_source(const HiftSourceParams p) {
    __shared__ double red[SRC_WARPS][HIFT_H];
    __shared__ double pre[SRC_MAX_FRAMES][HIFT_H];  // P_k[m0 + i]
    const unsigned b = blockIdx.y;
    const unsigned m0 = blockIdx.x * p.frames_per_block;
    if (b >= p.batch || m0 >= p.n_frames) return;
    const unsigned m1 = min(m0 + p.frames_per_block, p.n_frames);
    const size_t n_total = (size_t)p.n_frames * p.upsample;
    const size_t s0 = (size_t)m0 * p.upsample, s1 = (size_t)m1 * p.upsample;
    float* out = p.out + (size_t)b * n_total;
    const int len = p.lens ? p.lens[b] : (int)p.n_frames;
    if (len < 0 || len > (int)p.n_frames) {  // block-uniform
        for (size_t s = s0 + threadIdx.x; s < s1; s += blockDim.x) out[s] = quiet_nan();
        return;
    }
    if (m0 >= (unsigned)len) {  // block-uniform: only padding
        for (size_t s = s0 + threadIdx.x; s < s1; s += blockDim.x) out[s] = 0.0f;
        return;
    }
    const float* f0 = p.f0 + (size_t)b * p.n_frames;
    const float sr = p.sample_rate;
    const double up = (double)p.upsample;

    // 1. Σ_{j<m0} upsample·F_k[j]: a strided partial sum per thread, then a block reduction.
    double acc[HIFT_H];
#pragma unroll
    for (int k = 0; k < HIFT_H; k++) acc[k] = 0.0;
    for (unsigned j = threadIdx.x; j < m0; j += blockDim.x) {
        const float f = f0[j];
#pragma unroll
        for (int k = 0; k < HIFT_H; k++) acc[k] += up * (double)harmonic_step(f, k + 1, sr);
    }
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < HIFT_H; k++) {
        double v = acc[k];
        v = warp_sum(v);
        if (lane == 0) red[warp][k] = v;
    }
    __syncthreads();
    // 2. the prefix over this block's valid frames, one thread per harmonic
    const unsigned m_end = min(m1, (unsigned)len);
    if (threadIdx.x < HIFT_H) {
        const unsigned k = threadIdx.x;
        double s = 0.0;
        for (unsigned w = 0; w < (blockDim.x >> 5); w++) s += red[w][k];
        for (unsigned m = m0; m < m_end; m++) {
            pre[m - m0][k] = s;
            s += up * (double)harmonic_step(f0[m], k + 1, sr);
        }
    }
    __syncthreads();

    // 3. the samples
    const float* ph = p.phases + (size_t)b * HIFT_H;
    const float* noise = p.noise + (size_t)b * HIFT_H * n_total;
    const float bias = p.l_bias[0];
    const float unvoiced_amp = 0.1f / 3.0f;
    const size_t valid = (size_t)len * p.upsample;
    for (size_t s = s0 + threadIdx.x; s < s1; s += blockDim.x) {
        if (s >= valid) {
            out[s] = 0.0f;
            continue;
        }
        const unsigned m = (unsigned)(s / p.upsample);
        const double r1 = (double)(s - (size_t)m * p.upsample + 1);
        const float f = f0[m];
        const bool voiced = f > 10.0f;
        const float uv = voiced ? 1.0f : 0.0f;
        const float amp = voiced ? 0.003f : unvoiced_amp;
        float y = 0.0f;
#pragma unroll
        for (unsigned k = 0; k < HIFT_H; k++) {
            const float fk = harmonic_step(f, k + 1, sr);
            const float cs = (float)(pre[m - m0][k] + r1 * (double)fk);
            float frac = copysignf(__fadd_rn(cs, -truncf(cs)), cs);  // fmodf(cs, 1), exactly
            if (frac < 0.0f) frac = __fadd_rn(frac, 1.0f);
            float sn, cn;
            sincos_f32(__fadd_rn(__fmul_rn(6.28318530717958647692f, frac), ph[k]), &sn, &cn);
            const float e = __fadd_rn(__fmul_rn(__fmul_rn(0.1f, sn), uv), __fmul_rn(amp, noise[(size_t)k * n_total + s]));
            y = __fadd_rn(y, __fmul_rn(p.l_weight[k], e));
        }
        out[s] = tanhf(__fadd_rn(y, bias));
    }
}

extern "C" __global__ void __launch_bounds__(ISTFT_BLOCK) hift_istft(const HiftIstftParams p) {
    __shared__ float sa[ISTFT_MAX_FRAMES][HIFT_H];  // re_k·c_k/16, c_k = 1 (k = 0, 8) or 2
    __shared__ float sb[ISTFT_MAX_FRAMES][HIFT_H];  // im_k·2/16 (0 for k = 0, 8)
    __shared__ float tcos[16], tsin[16], twin[16], twin2[16];
    const unsigned b = blockIdx.y;
    const unsigned n0 = blockIdx.x * ISTFT_BLOCK;
    if (b >= p.batch || n0 >= p.out_len) return;
    float* out = p.out + (size_t)b * p.out_len;
    const unsigned n = n0 + threadIdx.x;
    const int len = p.lens ? p.lens[b] : (int)p.frames;
    if (len < 1 || len > (int)p.frames) {  // block-uniform
        if (n < p.out_len) out[n] = quiet_nan();
        return;
    }
    const unsigned valid = (unsigned)(len - 1) * 4u;
    if (n0 >= valid) {  // block-uniform: only padding
        if (n < p.out_len) out[n] = 0.0f;
        return;
    }
    // the frames touching uncut positions n0 + 8 ..= min(n0 + ISTFT_BLOCK, valid) − 1 + 8
    const unsigned p_lo = n0 + 8u, p_hi = min(n0 + ISTFT_BLOCK, valid) - 1u + 8u;
    const unsigned f_lo = p_lo >= 15u ? (p_lo - 12u) / 4u : 0u;  // ceil((p − 15) / 4)
    const unsigned f_hi = min(p_hi / 4u, (unsigned)len - 1u);
    const unsigned nf = f_hi - f_lo + 1u;
    if (threadIdx.x < 16) {
        const float w = HIFT_HANN16[threadIdx.x];
        tcos[threadIdx.x] = HIFT_COS16[threadIdx.x];
        tsin[threadIdx.x] = HIFT_SIN16[threadIdx.x];
        twin[threadIdx.x] = w;
        twin2[threadIdx.x] = __fmul_rn(w, w);
    }
    for (unsigned q = threadIdx.x; q < nf * HIFT_H; q += blockDim.x) {
        const unsigned fl = q / HIFT_H, k = q - fl * HIFT_H;
        const float* x = p.spec + ((size_t)b * p.frames + f_lo + fl) * (2 * HIFT_H);
        float mag = expf(x[k]);
        if (mag > 100.0f) mag = 100.0f;  // NaN stays NaN, as torch.clip
        float ph, unused, s, c;
        sincos_f32(x[HIFT_H + k], &ph, &unused);
        sincos_f32(ph, &s, &c);
        const bool edge = k == 0 || k == HIFT_H - 1;
        sa[fl][k] = __fmul_rn(mag, c) * (edge ? 0.0625f : 0.125f);
        sb[fl][k] = edge ? 0.0f : __fmul_rn(mag, s) * 0.125f;
    }
    __syncthreads();
    if (n >= p.out_len) return;
    if (n >= valid) {
        out[n] = 0.0f;
        return;
    }
    const unsigned pp = n + 8u;
    const unsigned fa = pp >= 15u ? (pp - 12u) / 4u : 0u;
    const unsigned fb = min(pp / 4u, (unsigned)len - 1u);
    float y = 0.0f, env = 0.0f;
    for (unsigned f = fa; f <= fb; f++) {
        const unsigned i = pp - 4u * f;
        const float* a = sa[f - f_lo];
        const float* bb = sb[f - f_lo];
        float v = 0.0f;
#pragma unroll
        for (unsigned k = 0; k < HIFT_H; k++) {
            const unsigned m = (k * i) & 15u;
            v += a[k] * tcos[m] - bb[k] * tsin[m];
        }
        y += twin[i] * v;
        env += twin2[i];
    }
    float r = y / env;
    if (r < -p.clamp) r = -p.clamp;
    else if (r > p.clamp) r = p.clamp;
    out[n] = r;
}
