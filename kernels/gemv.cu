// gemv.cu -- the decode GEMV family: y[r, n] = Σ_k x[r, k] · w[n, k] for the few rows (m) of a decode
// step, with a prologue that produces x and an epilogue that consumes y, so that a Llama layer's
// norm → projection, projection → SwiGLU and projection → residual add are one launch each.
//
// Prologues (x is what the unfused op would have written, bf16):
//   RMSNORM  x[r, k] = bf16(h[r, k] · inv[r] · norm_w[k]),  inv[r] = rsqrt(Σ_k h[r, k]² / K + eps)
//            (h f32, norm_w bf16). Every block computes inv[r] of the rows itself (redundant across
//            blocks, no grid sync) in exactly the summation order of add_rmsnorm_bf16 (rmsnorm.cu:
//            GEMV_BLOCK == RMSNORM_BLOCK threads, thread t sums k = t, t + 256, ..., then the warp and
//            block butterflies of block_sum): x is bit for bit what add_rmsnorm writes.
//   PLAIN    x[r, k] bf16 as given.
// Epilogues (acc = the f32 dot product, fixed summation order; see below):
//   gemv_rmsnorm_bf16         out[r, n] = bf16(acc)                    RMSNORM; w [N, K], out [m, N] bf16
//   gemv_rmsnorm_f32          out[r, n] = acc                          RMSNORM; w [N, K], out [m, N] f32
//   gemv_rmsnorm_swiglu_bf16  g = bf16(acc(w[n])), u = bf16(acc(w[I + n])),
//                             out[r, n] = bf16(silu(g) · u)           RMSNORM; w [2I, K] = [gate; up], out [m, I]
//                             (g and u rounded as linear writes them, then swiglu_bf16's formula)
//   gemv_add_residual_f32     h[r, n] += acc                           PLAIN; w [N, K], h [m, N] f32 (no rounding)
// All tensors row-major; w is bf16 in PyTorch layout [out, in].
//
// Launch: grid = (ceil(units / (GEMV_WARPS / wk))), block = (GEMV_BLOCK) = 8 warps, no dynamic
// shared memory (17 KB static); __launch_bounds__(256, 2) (without the minimum ptxas for sm_90 caps
// the RMSNorm variants at 64 registers and spills; they take 72). A unit is two weight rows: two output columns (2u, 2u + 1), or one
// SwiGLU column u (its gate row u and up row I + u). Warp w of block b takes unit
// b · (8 / wk) + w / wk; wk ∈ {1, 2, 4} warps share a unit by splitting its K (the host picks wk from
// N and K only, to have enough blocks for small N). For each tile of GEMV_ROWS = 8 rows (any m: the
// tiles loop, and the block's weight slice stays in L1/L2 after the first) and each chunk of
// GEMV_KC = 1024 values of K, the block stages x of the tile (bf16) in shared memory; then per step
// of GEMV_STEP = 256 values each lane reads 8 consecutive weights of each of its two rows (one
// 16-byte load each when w rows are 16-byte aligned, i.e. `vec`; else 8 predicated 2-byte loads,
// which also covers K % 8 != 0) and 8 values of x per row of the tile from shared memory, with the
// next step's weights loaded before this step's FMAs. Every weight byte is read from DRAM once per
// launch (once per tile from L2 beyond 8 rows).
// Summation order of acc (deterministic, independent of m, of a row's tile and of `vec`): lane l of
// the warp (split) owning steps s accumulates k = s·256 + 8l + e, e = 0..7, in that order with
// fused multiply-adds (__fmaf_rn: the same bits on a GPU and in the shim); the 32 lanes are summed by
// the xor butterfly (16, 8, 4, 2, 1), then the wk splits in order.
#include "common.cuh"

#define GEMV_BLOCK 256
#define GEMV_WARPS 8
#define GEMV_ROWS 8    // rows per tile (the reductions below assume 8)
#define GEMV_KC 1024   // K values per staged chunk
#define GEMV_STEP 256  // K values per warp step: 32 lanes × 8

// Mirrors tts_kernels::ops::gemv::GemvParams (#[repr(C)], 56 bytes).
struct GemvParams {
    const void* x;         // [m, K]: h f32 (RMSNORM) or x bf16 (PLAIN)
    const bf16_t* norm_w;  // [K] bf16 (RMSNORM), else null
    const bf16_t* w;       // [N, K] or [2I, K] bf16
    void* out;             // [m, N] bf16 / f32, [m, I] bf16 (SwiGLU), or h [m, N] f32 (residual add)
    unsigned m, n, k;      // rows, output columns (N, or I for SwiGLU), K
    unsigned wk;           // warps per unit splitting K: 1, 2 or 4
    unsigned vec;          // 1: w (and x of PLAIN) at 16-byte aligned addresses and K % 8 == 0
    float eps;             // RMSNORM
};
static_assert(sizeof(GemvParams) == 56, "GemvParams must match its Rust mirror");

namespace {

enum GemvEpi { GEMV_OUT_BF16, GEMV_OUT_F32, GEMV_SWIGLU, GEMV_ADD_F32 };

// One xor stage of gemv_warp_sums over n values (n = N, N/2, ..., 2): lanes keep the lower or upper
// half of their values, add the partner's copy of it (own + partner, as warp_sum) and recurse on
// the kept half.
template <int N, int n>
__device__ __forceinline__ void gemv_halve(float (&t)[N], unsigned lane) {
    if constexpr (n > 1) {
        constexpr int off = 16 * n / N;
        const bool upper = (lane & (unsigned)off) != 0;
#pragma unroll
        for (int j = 0; j < n / 2; j++) {
            const float send = upper ? t[j] : t[j + n / 2];  // the half the partner keeps
            const float keep = upper ? t[j + n / 2] : t[j];
            t[j] = keep + __shfl_xor_sync(0xffffffffu, send, off);
        }
        gemv_halve<N, n / 2>(t, lane);
    }
}

// Sums of N values per lane over the 32 lanes of a warp with N + log2(32/N) - 1 shuffles instead of
// 5·N: each xor stage (16, 8, ...) halves the values a lane keeps, then full butterflies. Lane l
// returns the total of value l / (32 / N). The additions are those of warp_sum (own + partner, same
// stage order), so every total is bit for bit warp_sum's.
template <int N>
__device__ __forceinline__ float gemv_warp_sums(float (&t)[N]) {
    static_assert(N >= 2 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two");
    gemv_halve<N, N>(t, threadIdx.x & 31u);
    float v = t[0];
#pragma unroll
    for (int off = 16 / N; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ void gemv_unpack8(const uint4& u, float (&f)[8]) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int c = 0; c < 4; c++) {
        f[2 * c] = __uint_as_float(w[c] << 16);
        f[2 * c + 1] = __uint_as_float(w[c] & 0xffff0000u);
    }
}

// 8 consecutive bf16 from src (avail >= 1 of them exist): one 16-byte load when vec, else 2-byte
// loads with zeros past the end.
__device__ __forceinline__ uint4 gemv_load8(const bf16_t* src, unsigned avail, unsigned vec) {
    if (vec) return *reinterpret_cast<const uint4*>(src);
    unsigned w[4];
#pragma unroll
    for (unsigned c = 0; c < 4; c++) {
        const unsigned lo = 2 * c < avail ? (unsigned)src[2 * c] : 0u;
        const unsigned hi = 2 * c + 1 < avail ? (unsigned)src[2 * c + 1] : 0u;
        w[c] = lo | (hi << 16);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

template <bool NORM, int EPI>
__device__ __forceinline__ void gemv_impl(const GemvParams& p) {
    __shared__ uint4 xs[GEMV_ROWS][GEMV_KC / 8];      // x of the tile, one chunk of K: 8 bf16 per group
    __shared__ float red[GEMV_WARPS][2 * GEMV_ROWS];  // per warp: lane sums of (weight row c, row r)
    __shared__ float ssum[GEMV_WARPS][GEMV_ROWS];     // RMSNORM: per warp sums of squares
    __shared__ float inv_s[GEMV_ROWS];                // RMSNORM: inverse RMS of the tile's rows

    const unsigned tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
    const unsigned wk = p.wk, kw = warp % wk;
    const unsigned unit = blockIdx.x * (GEMV_WARPS / wk) + warp / wk;
    const unsigned K = p.k;
    bool has0, has1;
    size_t n0, n1;  // the unit's weight rows
    if (EPI == GEMV_SWIGLU) {
        has0 = has1 = unit < p.n;
        n0 = unit;
        n1 = (size_t)p.n + unit;
    } else {
        n0 = 2 * (size_t)unit;
        n1 = n0 + 1;
        has0 = n0 < p.n;
        has1 = n1 < p.n;
    }
    const bf16_t* w0 = p.w + (has0 ? n0 * K : 0);
    const bf16_t* w1 = p.w + (has1 ? n1 * K : 0);

    for (unsigned r0 = 0; r0 < p.m; r0 += GEMV_ROWS) {  // row tiles (block-uniform)
        const unsigned rows = min(p.m - r0, (unsigned)GEMV_ROWS);
        if (NORM) {
            // sums of squares as add_rmsnorm_bf16: per thread k = tid, tid + 256, ..., then block_sum
            const float* h = static_cast<const float*>(p.x) + (size_t)r0 * K;
            float ss[GEMV_ROWS];
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) ss[r] = 0.0f;
            for (unsigned j = tid; j < K; j += GEMV_BLOCK) {
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) {
                    if ((unsigned)r < rows) {
                        const float v = h[(size_t)r * K + j];
                        ss[r] += v * v;
                    }
                }
            }
            const float t = gemv_warp_sums<GEMV_ROWS>(ss);  // lanes 4r..4r+3: row r
            if ((lane & 3u) == 0) ssum[warp][lane >> 2] = t;
            __syncthreads();
            if (warp < rows) {  // warp r finishes row r as block_sum's second stage
                float v = lane < GEMV_WARPS ? ssum[lane][warp] : 0.0f;
                v = warp_sum(v);
                if (lane == 0) inv_s[warp] = rsqrtf(v / (float)K + p.eps);
            }
        }

        float acc0[GEMV_ROWS], acc1[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) acc0[r] = acc1[r] = 0.0f;

        for (unsigned k0 = 0; k0 < K; k0 += GEMV_KC) {  // chunks of K (block-uniform)
            const unsigned kc = min(K - k0, (unsigned)GEMV_KC);
            __syncthreads();  // xs free; inv_s written
            // groups of 8 consecutive values (zeros past K), one 16-byte shared store each
            const unsigned groups = (kc + 7) / 8;
            for (unsigned i = tid; i < rows * groups; i += GEMV_BLOCK) {
                const unsigned r = i / groups, j0 = 8 * (i - r * groups);
                if (NORM) {
                    const float* h = static_cast<const float*>(p.x) + (size_t)(r0 + r) * K + k0 + j0;
                    const bf16_t* nw = p.norm_w + k0 + j0;
                    const float inv = inv_s[r];
                    unsigned w[4];
#pragma unroll
                    for (unsigned c = 0; c < 4; c++) {
                        // add_rmsnorm_bf16's expression, element by element
                        const unsigned lo = j0 + 2 * c < kc ? f32_to_bf16(h[2 * c] * inv * bf16_to_f32(nw[2 * c])) : 0u;
                        const unsigned hi = j0 + 2 * c + 1 < kc ? f32_to_bf16(h[2 * c + 1] * inv * bf16_to_f32(nw[2 * c + 1])) : 0u;
                        w[c] = lo | (hi << 16);
                    }
                    xs[r][j0 / 8] = make_uint4(w[0], w[1], w[2], w[3]);
                } else {
                    const bf16_t* x = static_cast<const bf16_t*>(p.x) + (size_t)(r0 + r) * K + k0 + j0;
                    xs[r][j0 / 8] = gemv_load8(x, kc - j0, p.vec);
                }
            }
            __syncthreads();

            if (has0) {  // warp-uniform
                const unsigned steps = (kc + GEMV_STEP - 1) / GEMV_STEP;
                uint4 a = make_uint4(0u, 0u, 0u, 0u), b = a;
                unsigned s = kw;
                {
                    const unsigned kk = s * GEMV_STEP + 8 * lane;
                    if (s < steps && kk < kc) {
                        a = gemv_load8(w0 + k0 + kk, K - k0 - kk, p.vec);
                        if (has1) b = gemv_load8(w1 + k0 + kk, K - k0 - kk, p.vec);
                    }
                }
                for (; s < steps; s += wk) {
                    const unsigned kk = s * GEMV_STEP + 8 * lane;
                    // the next step's weights in flight while this step computes
                    uint4 an = make_uint4(0u, 0u, 0u, 0u), bn = an;
                    {
                        const unsigned kn = (s + wk) * GEMV_STEP + 8 * lane;
                        if (s + wk < steps && kn < kc) {
                            an = gemv_load8(w0 + k0 + kn, K - k0 - kn, p.vec);
                            if (has1) bn = gemv_load8(w1 + k0 + kn, K - k0 - kn, p.vec);
                        }
                    }
                    if (kk < kc) {
                        float wa[8], wb[8];
                        gemv_unpack8(a, wa);
                        gemv_unpack8(b, wb);
#pragma unroll
                        for (int r = 0; r < GEMV_ROWS; r++) {
                            if ((unsigned)r < rows) {
                                float xv[8];
                                gemv_unpack8(xs[r][kk / 8], xv);
#pragma unroll
                                for (int e = 0; e < 8; e++) acc0[r] = __fmaf_rn(wa[e], xv[e], acc0[r]);
#pragma unroll
                                for (int e = 0; e < 8; e++) acc1[r] = __fmaf_rn(wb[e], xv[e], acc1[r]);
                            }
                        }
                    }
                    a = an;
                    b = bn;
                }
            }
        }

        // lane sums: value q = c·8 + r (weight row c of the unit, row r of the tile) ends in lanes 2q, 2q+1
        float t[2 * GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            t[r] = acc0[r];
            t[GEMV_ROWS + r] = acc1[r];
        }
        const float sum = gemv_warp_sums<2 * GEMV_ROWS>(t);
        if ((lane & 1u) == 0) red[warp][lane >> 1] = sum;
        __syncthreads();
        if (kw == 0 && has0) {  // the first warp of a unit writes it (the K splits in order)
            const float* rw = red[warp];
            if (EPI == GEMV_SWIGLU) {
                if (lane < rows) {
                    float g = rw[lane], u = rw[GEMV_ROWS + lane];
                    for (unsigned j = 1; j < wk; j++) {
                        g += rw[j * 2 * GEMV_ROWS + lane];
                        u += rw[j * 2 * GEMV_ROWS + GEMV_ROWS + lane];
                    }
                    g = bf16_to_f32(f32_to_bf16(g));  // the GEMM output linear would have written
                    u = bf16_to_f32(f32_to_bf16(u));
                    bf16_t* out = static_cast<bf16_t*>(p.out);
                    out[(size_t)(r0 + lane) * p.n + n0] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
                }
            } else {
                const unsigned c = lane / GEMV_ROWS, r = lane % GEMV_ROWS;
                if (lane < 2 * GEMV_ROWS && r < rows && (c == 0 || has1)) {
                    float v = rw[lane];
                    for (unsigned j = 1; j < wk; j++) v += rw[j * 2 * GEMV_ROWS + lane];
                    const size_t at = (size_t)(r0 + r) * p.n + (c ? n1 : n0);
                    if (EPI == GEMV_OUT_BF16) static_cast<bf16_t*>(p.out)[at] = f32_to_bf16(v);
                    if (EPI == GEMV_OUT_F32) static_cast<float*>(p.out)[at] = v;
                    if (EPI == GEMV_ADD_F32) {
                        float* h = static_cast<float*>(p.out);
                        h[at] = h[at] + v;
                    }
                }
            }
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(GEMV_BLOCK, 2) gemv_rmsnorm_bf16(const GemvParams p) { gemv_impl<true, GEMV_OUT_BF16>(p); }
extern "C" __global__ void __launch_bounds__(GEMV_BLOCK, 2) gemv_rmsnorm_f32(const GemvParams p) { gemv_impl<true, GEMV_OUT_F32>(p); }
extern "C" __global__ void __launch_bounds__(GEMV_BLOCK, 2) gemv_rmsnorm_swiglu_bf16(const GemvParams p) { gemv_impl<true, GEMV_SWIGLU>(p); }
// nvrtc-gate: reads-own-writes (h += acc in place)
extern "C" __global__ void __launch_bounds__(GEMV_BLOCK, 2) gemv_add_residual_f32(const GemvParams p) { gemv_impl<false, GEMV_ADD_F32>(p); }
