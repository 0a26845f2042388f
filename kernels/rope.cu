// rope.cu -- rotary position embedding of fused QKV rows, with the KV-cache write (T3's Llama layers).
//
// qkv rows are [q | k | v] (heads·D each, the output of the fused QKV GEMM). For row r with
// p = positions[r] and s = slots[r]:
//   q_out[r, h]          = rope(q_h, p)
//   k_cache[s, h, p, :]  = rope(k_h, p)
//   v_cache[s, h, p, :]  = v_h
// RoPE is HF's rotate_half (non-interleaved): with a_i = (float)p · inv_freq[i] (one f32 multiply,
// as torch), for i < D/2:  x'[i] = x[i]·cos a_i − x[i+D/2]·sin a_i,  x'[i+D/2] = x[i+D/2]·cos a_i + x[i]·sin a_i
// (rope_cos_sin / rope_rotate_bf16 in common.cuh, shared with the fused decode kernel of attention.cu).
// Positions and slots live on the device (a captured decode step replays with new values). A
// position outside 0..max_len or a slot outside 0..n_slots cannot be reported from the device: the
// row's q_out is written as NaN and nothing is written to the caches (the Cpu op returns an error).
//
// sin/cos: CUDA's precise sinf/cosf carry a Payne-Hanek path for huge arguments that needs a local
// memory array (a stack frame, which the NVRTC gate forbids), and __sinf/__cosf are far too coarse
// for angles up to thousands of radians. sincos_f32 (common.cuh) reduces by π/2 in double with a 25+53-bit
// π/2 (exact for |a| < 2^28, as musl's sinf) and evaluates fdlibm's double kernels: the f32 results
// are correctly rounded but for rare double-rounding ties, i.e. within 1 ulp of libm / torch.
// |a| >= 2^26 (impossible for positions < 2^26 with inv_freq <= 1) gives NaN.
//
// Launch: grid = (rows), block = (ROPE_BLOCK); one block per row, the D/2 (cos, sin) pairs of the
// row's position computed once into shared memory and shared by the q and k heads.
#include "common.cuh"

#define ROPE_BLOCK 128
#define ROPE_MAX_HALF 128  // head_dim <= 256

// Mirrors tts_kernels::ops::rope::RopeKvParams (#[repr(C)], 80 bytes).
struct RopeKvParams {
    const bf16_t* qkv;       // [rows, 3·heads·D] bf16
    const int* positions;    // [rows]
    const int* slots;        // [rows]
    const float* inv_freq;   // [D/2] f32
    bf16_t* q_out;           // [rows, heads·D] bf16
    bf16_t* k_cache;         // [n_slots, heads, max_len, D] bf16
    bf16_t* v_cache;         // [n_slots, heads, max_len, D] bf16
    unsigned rows, heads, head_dim, max_len, n_slots;
    unsigned pad_;
};
static_assert(sizeof(RopeKvParams) == 80, "RopeKvParams must match its Rust mirror");

extern "C" __global__ void __launch_bounds__(ROPE_BLOCK) rope_kv_write_bf16(const RopeKvParams p) {
    __shared__ float cos_t[ROPE_MAX_HALF];
    __shared__ float sin_t[ROPE_MAX_HALF];
    const unsigned row = blockIdx.x;
    if (row >= p.rows) return;
    const unsigned D = p.head_dim, half = D >> 1;
    const size_t hd = (size_t)p.heads * D;
    const int pos = p.positions[row], slot = p.slots[row];
    bf16_t* qo = p.q_out + row * hd;
    if (pos < 0 || pos >= (int)p.max_len || slot < 0 || slot >= (int)p.n_slots) {  // block-uniform
        const bf16_t nan = f32_to_bf16(quiet_nan());
        for (size_t j = threadIdx.x; j < hd; j += blockDim.x) qo[j] = nan;
        return;
    }
    for (unsigned i = threadIdx.x; i < half; i += blockDim.x) {
        float c, s;
        rope_cos_sin(pos, p.inv_freq[i], &c, &s);
        cos_t[i] = c;
        sin_t[i] = s;
    }
    __syncthreads();
    const bf16_t* src = p.qkv + row * 3 * hd;
    const unsigned pairs = p.heads * half;
    for (unsigned j = threadIdx.x; j < pairs; j += blockDim.x) {
        const unsigned h = j / half, i = j - h * half;
        const unsigned o = h * D + i;  // element i of head h within q (and k, v)
        const float c = cos_t[i], s = sin_t[i];
        rope_rotate_bf16(src[o], src[o + half], c, s, &qo[o], &qo[o + half]);
        const size_t at = (((size_t)slot * p.heads + h) * p.max_len + (unsigned)pos) * D + i;
        rope_rotate_bf16(src[hd + o], src[hd + o + half], c, s, &p.k_cache[at], &p.k_cache[at + half]);
        p.v_cache[at] = src[2 * hd + o];
        p.v_cache[at + half] = src[2 * hd + o + half];
    }
}
