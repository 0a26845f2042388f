// attention.cu -- softmax attention: over a static KV cache (T3 decode and causal prefill) and over
// contiguous sequences (the T3 Perceiver, S3Gen's transformer blocks). bf16 in and out; scores,
// softmax statistics and accumulators in f32; online (streaming) softmax throughout.
//
// 1. attention_cached_d<D>_bf16 (D = 32, 64, ..., 256), for each (row r, head h):
//      out[r, h] = softmax(scale · q[r, h] · K[s, h, 0..len]ᵀ) · V[s, h, 0..len],  s = slots[r], len = lens[r]
//    Caches are [n_slots, heads, max_len, D]. Only positions < len are read, so a decode step costs
//    what the live context costs, whatever max_len is; the launch configuration depends on rows,
//    heads and max_len only (lengths live on the device: capture-safe). len == 0 is an inactive row
//    (zeros, nothing read); len outside 0..=max_len or (len > 0) a slot outside 0..n_slots gives a
//    NaN row (the Cpu op returns an error).
//    Launch: grid = (rows, heads, n_splits), block = (32·nwarps), nwarps in 1..=ATTN_MAX_WARPS,
//    dynamic shared memory = 4·nwarps·(D + 2) bytes.
//    Within a warp, L = D/E lanes hold one position's row (E <= 8 bf16 each, one 16-byte load for
//    E = 8), so a warp reads 32/L consecutive positions with one coalesced load per lane; every
//    lane group keeps its own running max / sum / accumulator, U positions in flight per lane, and
//    the groups are merged by shuffles, then the warps through shared memory. With n_splits > 1
//    (flash-decoding, for few rows × heads and long contexts) block z takes the z-th slice of
//    0..len (sliced on the device from len, in multiples of 32) and writes (max, sum, acc[D]) in
//    f32 to `partial`; attention_cached_combine_bf16 merges the slices.
// 1b. rope_attention_decode_d<D>_bf16: rope_kv_write_bf16 (rope.cu) and attention_cached_d<D>_bf16 fused for
//    decode rows: with p = positions[r], s = slots[r], len = lens[r],
//      k_cache[s, h, p] = rope(k_h, p),  v_cache[s, h, p] = v_h,  q' = rope(q_h, p) (bf16, in shared memory),
//      __syncthreads(),  out[r, h] = softmax(scale · q' · K[s, h, 0..len]ᵀ) · V[s, h, 0..len]
//    with the rotation of rope.cu (common.cuh) and attention_cached_core, the code of attention_cached_d<D>:
//    at the same nwarps and n_splits the output and the cache rows equal the unfused pair's
//    (rope_kv_write, then attention_cached_d<D> [+ combine]) bit for bit.
//    n_splits == 1: one block per (row r, head h). n_splits > 1 (flash-decoding, when rows × heads
//    blocks would leave most SMs idle): block z of (r, h) takes the z-th slice of 0..len exactly as
//    attention_cached_d<D> does and writes its (max, sum, acc[D]) to `partial`; attention_cached_combine_bf16
//    then writes out. Every block rotates q itself; only the block whose slice holds position p (block
//    0 when p >= len) writes the new cache row, and it is the only block of the row that reads it:
//    no block reads a cache row another block writes in the same launch.
//    len == 0: a finished row, zeros, nothing written (position and slot not looked at). len > 0 with
//    len outside 1..=max_len, p outside 0..max_len or s outside 0..n_slots: a NaN row and nothing
//    written (the Cpu op returns an error); with splits the slices of such a row carry a NaN sum, so
//    the combine writes NaN. Precondition: no two rows with len > 0 share a slot (a block could read
//    another block's row while it is written; the Cpu op checks it).
//    Launch: grid = (rows, heads, n_splits), block = (32·nwarps) with the nwarps attention_cached_d<D>
//    takes for rows · heads · n_splits blocks, dynamic shared memory = 4·nwarps·(D + 2) bytes (+ D bf16
//    of static shared memory for q').
//    It reads cache rows it has just written, so its loads must be coherent: no __restrict__ on
//    those pointers and no read-only (LDG.CONSTANT) loads anywhere in it (the NVRTC gate checks the
//    SASS of every entry point marked `nvrtc-gate: reads-own-writes`).
// 2. attention_cached_combine_bf16: grid = (rows, heads), block = (ATTN_COMBINE_BLOCK).
// 3. attention_dense_d64_bf16 (head_dim 64) and attention_dense_bf16 (any head_dim <= 256), for each batch b,
//    query i, head h:  out[b, i, h] = softmax(scale · q[b, i, h] · k[b, j, h]ᵀ over visible j) · v[b, j, h]
//    with key j visible when j < kv_lens[b] (all lk keys when kv_lens is null) and, if causal,
//    j <= i. A query that sees no key gets zeros; kv_lens[b] outside 0..=lk gives NaN rows.
//    attention_dense_d64_bf16: grid = (ceil(lq / 64), heads, batch), block = (128): 64 queries × 32-key
//    tiles in shared memory (FlashAttention-1 on CUDA cores), each thread a 4 × 4 block of scores
//    and a 4 queries × 8 dims block of the output. attention_dense_bf16: grid = (ceil(lq / 4), heads,
//    batch), block = (128): one warp per query, lanes split the keys for the scores and the head
//    dims for the weighted sum.
#include "common.cuh"

#define ATTN_MAX_WARPS 16
#define ATTN_COMBINE_BLOCK 256
#define ATTN_DENSE_BLOCK 128
#define ATTN_DENSE_WARPS 4

// Mirrors tts_kernels::ops::attention::AttentionCachedParams (#[repr(C)], 80 bytes).
struct AttentionCachedParams {
    const bf16_t* q;        // [rows, heads·D] bf16
    const bf16_t* k_cache;  // [n_slots, heads, max_len, D] bf16
    const bf16_t* v_cache;  // [n_slots, heads, max_len, D] bf16
    const int* slots;       // [rows]
    const int* lens;        // [rows]
    bf16_t* out;            // [rows, heads·D] bf16 (written when n_splits == 1)
    float* partial;         // [rows, heads, n_splits, D + 2] f32 (n_splits > 1), else null
    unsigned rows, heads, max_len, n_slots, n_splits;
    float scale;
};
static_assert(sizeof(AttentionCachedParams) == 80, "AttentionCachedParams must match its Rust mirror");

// Mirrors tts_kernels::ops::attention::RopeAttentionParams (#[repr(C)], 96 bytes).
struct RopeAttentionParams {
    const bf16_t* qkv;      // [rows, 3·heads·D] bf16, [q | k | v]
    const int* positions;   // [rows]
    const int* slots;       // [rows]
    const int* lens;        // [rows]
    const float* inv_freq;  // [D/2] f32
    bf16_t* k_cache;        // [n_slots, heads, max_len, D] bf16
    bf16_t* v_cache;        // [n_slots, heads, max_len, D] bf16
    bf16_t* out;            // [rows, heads·D] bf16 (written when n_splits == 1)
    float* partial;         // [rows, heads, n_splits, D + 2] f32 (n_splits > 1), else null
    unsigned rows, heads, max_len, n_slots, n_splits;
    float scale;
};
static_assert(sizeof(RopeAttentionParams) == 96, "RopeAttentionParams must match its Rust mirror");

// Mirrors tts_kernels::ops::attention::AttentionCombineParams (#[repr(C)], 56 bytes).
struct AttentionCombineParams {
    const float* partial;  // [rows, heads, n_splits, D + 2] f32: (max, sum, acc[D]) per slice
    const int* slots;      // [rows]
    const int* lens;       // [rows]
    bf16_t* out;           // [rows, heads·D] bf16
    unsigned rows, heads, head_dim, n_splits, max_len, n_slots;
};
static_assert(sizeof(AttentionCombineParams) == 56, "AttentionCombineParams must match its Rust mirror");

// Mirrors tts_kernels::ops::attention::AttentionDenseParams (#[repr(C)], 72 bytes).
struct AttentionDenseParams {
    const bf16_t* q;      // [batch, lq, heads·head_dim] bf16
    const bf16_t* k;      // [batch, lk, heads·head_dim] bf16
    const bf16_t* v;      // [batch, lk, heads·head_dim] bf16
    const int* kv_lens;   // [batch] valid keys per batch, or null: all lk
    bf16_t* out;          // [batch, lq, heads·head_dim] bf16
    unsigned batch, lq, lk, heads, head_dim;
    float scale;
    unsigned causal;
    unsigned pad_;
};
static_assert(sizeof(AttentionDenseParams) == 72, "AttentionDenseParams must match its Rust mirror");

// attention_cached_d*: the per-warp partial results, nwarps · (D + 2) floats (dynamic: sized by the launch).
extern __shared__ float attn_red[];

namespace {

__device__ __forceinline__ int attn_imin(int a, int b) { return a < b ? a : b; }

// The reference point of an online-softmax rescale: the running max, or 0 while nothing was seen
// (so that exp(-inf - ref) = 0 instead of NaN).
__device__ __forceinline__ float attn_ref(float m) { return m == neg_inf() ? 0.0f : m; }

// E consecutive bf16 values kept as raw bits (two per 32-bit word when E is even): a lane's share
// of one cache row, loaded with the widest aligned accesses (16 bytes when E % 8 == 0).
// No __restrict__ on `src`: the fused decode kernel loads cache rows it wrote in the same launch, and a
// restrict-qualified pointer lets the compiler turn these loads into non-coherent read-only ones.
template <int E>
struct AttnRaw {
    static constexpr int W = (E % 2 == 0) ? E / 2 : E;
    unsigned w[W];
    __device__ __forceinline__ void load(const bf16_t* src) {
        if constexpr (E % 8 == 0) {
#pragma unroll
            for (int c = 0; c < E / 8; c++) {
                const uint4 u = reinterpret_cast<const uint4*>(src)[c];
                w[4 * c] = u.x;
                w[4 * c + 1] = u.y;
                w[4 * c + 2] = u.z;
                w[4 * c + 3] = u.w;
            }
        } else if constexpr (E % 2 == 0) {
#pragma unroll
            for (int c = 0; c < W; c++) w[c] = reinterpret_cast<const unsigned*>(src)[c];
        } else {
#pragma unroll
            for (int c = 0; c < W; c++) w[c] = src[c];
        }
    }
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int c = 0; c < W; c++) w[c] = 0u;
    }
    // element e (little-endian pairs: element 2c in the low half of word c)
    __device__ __forceinline__ float get(int e) const {
        if constexpr (E % 2 == 0) {
            const unsigned u = w[e >> 1];
            return __uint_as_float((e & 1) ? (u & 0xffff0000u) : (u << 16));
        } else {
            return __uint_as_float(w[e] << 16);
        }
    }
};

// Lanes per cache row for head dim D: E = D / L values each, at most 8 (one 16-byte load).
template <int D>
struct AttnGeom {
    static constexpr int L = D <= 32 ? 4 : D <= 64 ? 8 : D <= 128 ? 16 : 32;
    static constexpr int E = D / L;
    static constexpr int G = 32 / L;  // lane groups (positions) per warp
    static constexpr int U = 4;       // positions in flight per lane group
    static_assert(D % 32 == 0 && D <= 256 && E * L == D && E <= 8, "unsupported head dim");
};

// The attention of one (row, head) over positions start..end of its cache slot, by the whole block
// (every thread calls it). q_head: the head's D query values (bf16; global or shared memory, 16-byte
// aligned); k_head, v_head: the (slot, head) plane [max_len, D] of each cache. Writes out_head (D
// values, bf16) when part is null, else the slice's (max, sum, acc[D]) in f32 to part.
// Deliberately no __restrict__ on the cache pointers: the fused decode kernel reads positions it
// wrote itself earlier in the same launch (coherent loads, never the read-only path).
template <int D>
__device__ __forceinline__ void attention_cached_core(const bf16_t* q_head, const bf16_t* k_head, const bf16_t* v_head, int start,
                                                 int end, float scale, bf16_t* out_head, float* part) {
    using Gm = AttnGeom<D>;
    constexpr int L = Gm::L, E = Gm::E, G = Gm::G, U = Gm::U;
    float* red = attn_red;  // [nwarps][D + 2]: per warp max, sum, acc[D]

    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const unsigned sub = lane % L;
    const int grp = (int)(warp * G + lane / L), ngrp = (int)(nwarps * G);

    float qv[E];
    {
        AttnRaw<E> r;
        r.load(q_head + sub * E);
#pragma unroll
        for (int e = 0; e < E; e++) qv[e] = r.get(e) * scale;
    }
    const bf16_t* kp = k_head + sub * E;
    const bf16_t* vp = v_head + sub * E;

    float m = neg_inf(), l = 0.0f, acc[E];
#pragma unroll
    for (int e = 0; e < E; e++) acc[e] = 0.0f;

    for (int p0 = start; p0 < end; p0 += ngrp * U) {  // block-uniform trip count
        AttnRaw<E> kr[U], vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int pos = p0 + u * ngrp + grp;
            if (pos < end) {
                kr[u].load(kp + (size_t)pos * D);
                vr[u].load(vp + (size_t)pos * D);
            } else {
                kr[u].zero();
                vr[u].zero();
            }
        }
        float s[U];
        float mx = m;
#pragma unroll
        for (int u = 0; u < U; u++) {
            float t = 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++) t += qv[e] * kr[u].get(e);
#pragma unroll
            for (int off = L / 2; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
            s[u] = (p0 + u * ngrp + grp < end) ? t : neg_inf();
            mx = fmaxf(mx, s[u]);
        }
        const float ref = attn_ref(mx);
        const float corr = expf(m - ref);
        l *= corr;
#pragma unroll
        for (int e = 0; e < E; e++) acc[e] *= corr;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const float w = expf(s[u] - ref);
            l += w;
#pragma unroll
            for (int e = 0; e < E; e++) acc[e] += w * vr[u].get(e);
        }
        m = mx;
    }

    // merge the lane groups of the warp (same sub-slice of D, different positions)
#pragma unroll
    for (int off = L; off < 32; off <<= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, off);
        const float lo = __shfl_xor_sync(0xffffffffu, l, off);
        const float mn = fmaxf(m, mo);
        const float ref = attn_ref(mn);
        const float c1 = expf(m - ref), c2 = expf(mo - ref);
        l = l * c1 + lo * c2;
#pragma unroll
        for (int e = 0; e < E; e++) {
            const float ao = __shfl_xor_sync(0xffffffffu, acc[e], off);
            acc[e] = acc[e] * c1 + ao * c2;
        }
        m = mn;
    }
    // merge the warps
    if (lane < (unsigned)L) {
#pragma unroll
        for (int e = 0; e < E; e++) red[warp * (D + 2) + 2 + sub * E + e] = acc[e];
        if (lane == 0) {
            red[warp * (D + 2)] = m;
            red[warp * (D + 2) + 1] = l;
        }
    }
    __syncthreads();
    float mall = neg_inf();
    for (unsigned w = 0; w < nwarps; w++) mall = fmaxf(mall, red[w * (D + 2)]);
    const float ref = attn_ref(mall);
    for (unsigned d = threadIdx.x; d < (unsigned)D; d += blockDim.x) {
        float a = 0.0f, lsum = 0.0f;
        for (unsigned w = 0; w < nwarps; w++) {
            const float* rw = red + w * (D + 2);
            const float c = expf(rw[0] - ref);
            lsum += rw[1] * c;
            a += rw[2 + d] * c;
        }
        if (!part) {
            out_head[d] = f32_to_bf16(a / lsum);  // lsum >= 1: end > start
        } else {
            part[2 + d] = a;
            if (d == 0) {
                part[0] = mall;  // -inf for an empty slice (then sum and acc are 0)
                part[1] = lsum;
            }
        }
    }
}

// Slice `split` of 0..len when the keys are cut into n_splits slices: multiples of 32 positions, the
// last ones possibly empty (start == end == len).
__device__ __forceinline__ void attn_slice(int len, unsigned n_splits, unsigned split, int* start, int* end) {
    const int chunk = (((len + (int)n_splits - 1) / (int)n_splits) + 31) & ~31;
    *start = attn_imin((int)split * chunk, len);
    *end = attn_imin(*start + chunk, len);
}

template <int D>
__device__ __forceinline__ void attention_cached_impl(const AttentionCachedParams& p) {
    const unsigned row = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
    if (row >= p.rows) return;
    const int len = p.lens[row], slot = p.slots[row];
    const size_t hd = (size_t)p.heads * D;
    const bool bad = len < 0 || len > (int)p.max_len || (len > 0 && (slot < 0 || slot >= (int)p.n_slots));
    if (bad || len == 0) {  // block-uniform; with splits the combine kernel writes these rows
        if (p.n_splits == 1) {
            const bf16_t v = bad ? f32_to_bf16(quiet_nan()) : (bf16_t)0;
            for (unsigned d = threadIdx.x; d < (unsigned)D; d += blockDim.x) p.out[row * hd + h * D + d] = v;
        }
        return;
    }
    int start = 0, end = len;
    float* part = nullptr;
    if (p.n_splits > 1) {
        attn_slice(len, p.n_splits, split, &start, &end);
        part = p.partial + (((size_t)row * p.heads + h) * p.n_splits + split) * (D + 2);
    }
    const size_t base = (((size_t)slot * p.heads + h) * p.max_len) * D;
    attention_cached_core<D>(p.q + row * hd + h * D, p.k_cache + base, p.v_cache + base, start, end, p.scale,
                        p.out + row * hd + h * D, part);
}

// The fused decode step of one (row, head) (and one key slice with n_splits > 1): RoPE of q and k at
// positions[row], k and v written into the cache slot by the block whose slice holds the position, a
// block barrier, then attention_cached_core over the block's slice of the slot with the rotated q from
// shared memory. The rotation (rope_cos_sin / rope_rotate_bf16) and the attention are the code of
// rope_kv_write_bf16 and attention_cached_d*_bf16: with the same launch width (nwarps) and n_splits the
// results are those of the unfused pair bit for bit.
template <int D>
__device__ __forceinline__ void rope_attention_decode_impl(const RopeAttentionParams& p) {
    __shared__ __align__(16) bf16_t q_rot[D];
    constexpr unsigned half = D / 2;
    const unsigned row = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
    if (row >= p.rows) return;
    const size_t hd = (size_t)p.heads * D;
    bf16_t* out = p.out + row * hd + h * D;
    // with splits: this block's (max, sum, acc[D]); the combine kernel writes out
    float* part = p.n_splits > 1 ? p.partial + (((size_t)row * p.heads + h) * p.n_splits + split) * (D + 2) : nullptr;
    const int len = p.lens[row];
    if (len == 0) {  // a finished row: zeros (the combine's, with splits); nothing looked at, nothing written
        if (!part)
            for (unsigned d = threadIdx.x; d < (unsigned)D; d += blockDim.x) out[d] = (bf16_t)0;
        return;
    }
    const int pos = p.positions[row], slot = p.slots[row];
    const bool bad = len < 0 || len > (int)p.max_len || pos < 0 || pos >= (int)p.max_len || slot < 0 ||
                     slot >= (int)p.n_slots;
    if (bad) {  // block-uniform: a NaN row and nothing written to the caches
        if (!part) {
            const bf16_t nan = f32_to_bf16(quiet_nan());
            for (unsigned d = threadIdx.x; d < (unsigned)D; d += blockDim.x) out[d] = nan;
        } else {
            // the combine cannot see the position: a NaN sum makes its merge NaN (max -inf: weight
            // exp(-inf - 0) = 0, and NaN · 0 = NaN)
            for (unsigned d = threadIdx.x; d < (unsigned)D + 2u; d += blockDim.x) part[d] = d == 0 ? neg_inf() : quiet_nan();
        }
        return;
    }
    int start = 0, end = len;
    if (part) attn_slice(len, p.n_splits, split, &start, &end);
    // exactly one block of the row writes the new cache row: the one that reads it (split 0 when
    // the row does not attend to its own position, len <= pos)
    const bool writer = pos < len ? (pos >= start && pos < end) : split == 0;
    const bf16_t* src = p.qkv + row * 3 * hd + h * D;
    const size_t plane = (((size_t)slot * p.heads + h) * p.max_len) * D;
    bf16_t* kc = p.k_cache + plane + (size_t)pos * D;
    bf16_t* vc = p.v_cache + plane + (size_t)pos * D;
    for (unsigned i = threadIdx.x; i < half; i += blockDim.x) {
        float c, s;
        rope_cos_sin(pos, p.inv_freq[i], &c, &s);
        rope_rotate_bf16(src[i], src[i + half], c, s, &q_rot[i], &q_rot[i + half]);
        if (writer) {
            rope_rotate_bf16(src[hd + i], src[hd + i + half], c, s, &kc[i], &kc[i + half]);
            vc[i] = src[2 * hd + i];
            vc[i + half] = src[2 * hd + i + half];
        }
    }
    __syncthreads();  // q_rot and the new cache row are visible to the whole block
    attention_cached_core<D>(q_rot, p.k_cache + plane, p.v_cache + plane, start, end, p.scale, out, part);
}

}  // namespace

// One entry point per supported head dim (the build script and NVRTC want them spelled out).
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d32_bf16(const AttentionCachedParams p) { attention_cached_impl<32>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d64_bf16(const AttentionCachedParams p) { attention_cached_impl<64>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d96_bf16(const AttentionCachedParams p) { attention_cached_impl<96>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d128_bf16(const AttentionCachedParams p) { attention_cached_impl<128>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d160_bf16(const AttentionCachedParams p) { attention_cached_impl<160>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d192_bf16(const AttentionCachedParams p) { attention_cached_impl<192>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d224_bf16(const AttentionCachedParams p) { attention_cached_impl<224>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attention_cached_d256_bf16(const AttentionCachedParams p) { attention_cached_impl<256>(p); }

// nvrtc-gate: reads-own-writes (each block reads the KV-cache row it wrote; see 1b above)
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d32_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<32>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d64_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<64>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d96_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<96>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d128_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<128>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d160_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<160>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d192_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<192>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d224_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<224>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) rope_attention_decode_d256_bf16(const RopeAttentionParams p) { rope_attention_decode_impl<256>(p); }

extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_BLOCK) attention_cached_combine_bf16(const AttentionCombineParams p) {
    const unsigned row = blockIdx.x, h = blockIdx.y, D = p.head_dim;
    if (row >= p.rows) return;
    const int len = p.lens[row], slot = p.slots[row];
    bf16_t* o = p.out + ((size_t)row * p.heads + h) * D;
    const bool bad = len < 0 || len > (int)p.max_len || (len > 0 && (slot < 0 || slot >= (int)p.n_slots));
    if (bad || len == 0) {
        const bf16_t v = bad ? f32_to_bf16(quiet_nan()) : (bf16_t)0;
        for (unsigned d = threadIdx.x; d < D; d += blockDim.x) o[d] = v;
        return;
    }
    const float* part = p.partial + ((size_t)row * p.heads + h) * p.n_splits * (D + 2);
    float mall = neg_inf();
    for (unsigned s = 0; s < p.n_splits; s++) mall = fmaxf(mall, part[s * (D + 2)]);
    const float ref = attn_ref(mall);  // finite: slice 0 is never empty when len > 0
    for (unsigned d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.0f, lsum = 0.0f;
        for (unsigned s = 0; s < p.n_splits; s++) {
            const float* ps = part + s * (D + 2);
            const float c = expf(ps[0] - ref);
            lsum += ps[1] * c;
            a += ps[2 + d] * c;
        }
        o[d] = f32_to_bf16(a / lsum);
    }
}

// ---- dense attention, head_dim 64: 64 queries × 32-key tiles through shared memory
#define ATTN_DQ 64  // queries per block
#define ATTN_DK 32  // keys per tile

namespace {

__device__ __forceinline__ float attn_f4(const float4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// 8 bf16 (16 bytes) to f32
__device__ __forceinline__ void attn_load8(const bf16_t* __restrict__ src, float (&x)[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(src);
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int c = 0; c < 4; c++) {
        x[2 * c] = __uint_as_float(w[c] << 16);
        x[2 * c + 1] = __uint_as_float(w[c] & 0xffff0000u);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(ATTN_DENSE_BLOCK) attention_dense_d64_bf16(const AttentionDenseParams p) {
    __shared__ __align__(16) float qs[64][ATTN_DQ];      // [d][query], pre-scaled
    __shared__ __align__(16) float ks[64][ATTN_DK + 4];  // [d][key]
    __shared__ __align__(16) float vs[ATTN_DK][64];      // [key][d]
    __shared__ __align__(16) float ps[ATTN_DQ][ATTN_DK + 4];  // [query][key] probabilities of the tile

    const unsigned t = threadIdx.x;
    const unsigned b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATTN_DQ;
    const size_t hd = (size_t)p.heads * 64;
    // thread (tq, tk): queries tq*4..+4; scores of keys tk*4..+4; output dims tk*4..+4 and 32+tk*4..+4
    const unsigned tq = t >> 3, tk = t & 7;
    const int n = p.kv_lens ? p.kv_lens[b] : (int)p.lk;
    bf16_t* ob = p.out + ((size_t)b * p.lq) * hd + h * 64;
    if (n < 0 || n > (int)p.lk) {  // block-uniform
        const bf16_t nan = f32_to_bf16(quiet_nan());
        for (unsigned c = t; c < ATTN_DQ * 64; c += blockDim.x)
            if (q0 + c / 64 < p.lq) ob[(q0 + c / 64) * hd + c % 64] = nan;
        return;
    }
    const int kend = p.causal ? attn_imin(n, (int)(q0 + ATTN_DQ)) : n;  // keys any query of the block sees

    const bf16_t* qb = p.q + ((size_t)b * p.lq) * hd + h * 64;
    for (unsigned c = t; c < ATTN_DQ * 8; c += blockDim.x) {  // 8 bf16 per step; lanes take consecutive queries
        const unsigned qi = c % ATTN_DQ, d0 = (c / ATTN_DQ) * 8;
        float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (q0 + qi < p.lq) attn_load8(qb + (q0 + qi) * hd + d0, x);
#pragma unroll
        for (int e = 0; e < 8; e++) qs[d0 + e][qi] = x[e] * p.scale;
    }

    float o[4][8], mrow[4], lrow[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        mrow[i] = neg_inf();
        lrow[i] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) o[i][j] = 0.0f;
    }
    const bf16_t* kb = p.k + ((size_t)b * p.lk) * hd + h * 64;
    const bf16_t* vb = p.v + ((size_t)b * p.lk) * hd + h * 64;

    for (int j0 = 0; j0 < kend; j0 += ATTN_DK) {  // block-uniform
        for (unsigned c = t; c < ATTN_DK * 8; c += blockDim.x) {
            // K transposed: lanes take consecutive keys (conflict-free stores)
            const unsigned kk = c % ATTN_DK, d0 = (c / ATTN_DK) * 8;
            float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (j0 + (int)kk < kend) attn_load8(kb + (size_t)(j0 + kk) * hd + d0, x);
#pragma unroll
            for (int e = 0; e < 8; e++) ks[d0 + e][kk] = x[e];
            // V as is: 8 lanes per key row (coalesced loads)
            const unsigned vk = c / 8, v0 = (c % 8) * 8;
            float y[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (j0 + (int)vk < kend) attn_load8(vb + (size_t)(j0 + vk) * hd + v0, y);
            *reinterpret_cast<float4*>(&vs[vk][v0]) = make_float4(y[0], y[1], y[2], y[3]);
            *reinterpret_cast<float4*>(&vs[vk][v0 + 4]) = make_float4(y[4], y[5], y[6], y[7]);
        }
        __syncthreads();

        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
#pragma unroll 8
        for (int d = 0; d < 64; d++) {
            const float4 a = *reinterpret_cast<const float4*>(&qs[d][tq * 4]);
            const float4 c = *reinterpret_cast<const float4*>(&ks[d][tk * 4]);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) s[i][j] += attn_f4(a, i) * attn_f4(c, j);
        }

#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int qi = (int)(q0 + tq * 4 + i);
            float mx = neg_inf();
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int kj = j0 + (int)(tk * 4 + j);
                if (kj >= kend || (p.causal && kj > qi)) s[i][j] = neg_inf();
                mx = fmaxf(mx, s[i][j]);
            }
            // the 8 threads of a query row are lanes tq*8..+8 of one warp
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            const float mn = fmaxf(mrow[i], mx);
            const float ref = attn_ref(mn);
            const float corr = expf(mrow[i] - ref);
            lrow[i] *= corr;
#pragma unroll
            for (int j = 0; j < 8; j++) o[i][j] *= corr;
            float pr[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                pr[j] = expf(s[i][j] - ref);
                lrow[i] += pr[j];
            }
            *reinterpret_cast<float4*>(&ps[tq * 4 + i][tk * 4]) = make_float4(pr[0], pr[1], pr[2], pr[3]);
            mrow[i] = mn;
        }
        __syncthreads();

#pragma unroll 2
        for (int k0 = 0; k0 < ATTN_DK; k0 += 4) {
            float4 pr[4];
#pragma unroll
            for (int i = 0; i < 4; i++) pr[i] = *reinterpret_cast<const float4*>(&ps[tq * 4 + i][k0]);
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const float4 v1 = *reinterpret_cast<const float4*>(&vs[k0 + kk][tk * 4]);
                const float4 v2 = *reinterpret_cast<const float4*>(&vs[k0 + kk][32 + tk * 4]);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float w = attn_f4(pr[i], kk);
                    o[i][0] += w * v1.x;
                    o[i][1] += w * v1.y;
                    o[i][2] += w * v1.z;
                    o[i][3] += w * v1.w;
                    o[i][4] += w * v2.x;
                    o[i][5] += w * v2.y;
                    o[i][6] += w * v2.z;
                    o[i][7] += w * v2.w;
                }
            }
        }
        __syncthreads();  // the next tile overwrites ks, vs, ps
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        float lsum = lrow[i];
        lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
        lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
        lsum += __shfl_xor_sync(0xffffffffu, lsum, 4);
        const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;  // no visible key: zeros
        const unsigned qi = q0 + tq * 4 + i;
        if (qi < p.lq) {
            bf16_t* orow = ob + qi * hd;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                orow[tk * 4 + j] = f32_to_bf16(o[i][j] * inv);
                orow[32 + tk * 4 + j] = f32_to_bf16(o[i][4 + j] * inv);
            }
        }
    }
}

// ---- dense attention, any head_dim <= 256: one warp per query
extern "C" __global__ void __launch_bounds__(ATTN_DENSE_BLOCK) attention_dense_bf16(const AttentionDenseParams p) {
    __shared__ float qsh[ATTN_DENSE_WARPS][256];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned b = blockIdx.z, h = blockIdx.y, i = blockIdx.x * ATTN_DENSE_WARPS + warp;
    if (i >= p.lq) return;  // warp-uniform; the kernel has no block barrier
    const unsigned D = p.head_dim;
    const size_t hd = (size_t)p.heads * D;
    bf16_t* o = p.out + ((size_t)b * p.lq + i) * hd + h * D;
    int n = p.kv_lens ? p.kv_lens[b] : (int)p.lk;
    if (n < 0 || n > (int)p.lk) {
        const bf16_t nan = f32_to_bf16(quiet_nan());
        for (unsigned d = lane; d < D; d += 32) o[d] = nan;
        return;
    }
    if (p.causal) n = attn_imin(n, (int)i + 1);
    float* qw = qsh[warp];
    const bf16_t* qr = p.q + ((size_t)b * p.lq + i) * hd + h * D;
    for (unsigned d = lane; d < D; d += 32) qw[d] = bf16_to_f32(qr[d]) * p.scale;
    __syncwarp();
    const bf16_t* kb = p.k + ((size_t)b * p.lk) * hd + h * D;
    const bf16_t* vb = p.v + ((size_t)b * p.lk) * hd + h * D;

    float m = neg_inf(), l = 0.0f, acc[8];
#pragma unroll
    for (int c = 0; c < 8; c++) acc[c] = 0.0f;
    for (int j0 = 0; j0 < n; j0 += 32) {  // warp-uniform
        const int j = j0 + (int)lane;
        float s = neg_inf();
        if (j < n) {
            const bf16_t* kr = kb + (size_t)j * hd;
            float a = 0.0f;
            for (unsigned d = 0; d < D; d++) a += qw[d] * bf16_to_f32(kr[d]);
            s = a;
        }
        const float mx = fmaxf(m, warp_max(s));  // finite: key j0 is visible
        const float corr = expf(m - mx);
        const float pj = expf(s - mx);
        l = l * corr + pj;  // this lane's keys; summed over the warp at the end
#pragma unroll
        for (int c = 0; c < 8; c++) acc[c] *= corr;
        const int cnt = attn_imin(32, n - j0);
        for (int kk = 0; kk < cnt; kk++) {
            const float w = __shfl_sync(0xffffffffu, pj, kk);
            const bf16_t* vr = vb + (size_t)(j0 + kk) * hd;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const unsigned d = lane + 32u * c;
                if (d < D) acc[c] += w * bf16_to_f32(vr[d]);
            }
        }
        m = mx;
    }
    const float lsum = warp_sum(l);
    const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;  // no visible key: zeros
#pragma unroll
    for (int c = 0; c < 8; c++) {
        const unsigned d = lane + 32u * c;
        if (d < D) o[d] = f32_to_bf16(acc[c] * inv);
    }
}
