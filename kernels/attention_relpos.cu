// attention_relpos.cu -- multi-head self-attention with relative positions (ESPnet
// RelPositionMultiHeadedAttention, S3Gen's conformer encoder), in the closed form of
// matrix_ac + rel_shift(matrix_bd): for batch b, query i, head h (vectors of D = head_dim values),
//
//   score[i, j] = ((q_i + u_h)·k_j + (q_i + v_h)·pos[T − 1 − i + j]) · scale,   j < n = kv_lens[b]
//   out[b, i, h] = Σ_j softmax(score[i])_j · v_j
//
// (n = T without kv_lens). pos row r holds the projected encoding of relative position T − 1 − r,
// so the keys of query i use the contiguous pos rows T − 1 − i .. T − 2 − i + n. A query that sees
// no key (n == 0) gets zeros; n outside 0..=T gives NaN rows (the Cpu op returns an error).
//
// Layouts: q, k, v, out [B, T, heads·D] bf16; pos [2T − 1, heads·D] bf16 (shared by the batch);
// bias_u, bias_v [heads, D] f32; kv_lens [B] i32 or null. D <= RELPOS_MAX_D.
// Math in f32: q + u and q + v rounded to f32, the two dot products each summed in order of d,
// (ac + bd)·scale, an online (streaming) softmax, one rounding of the output to bf16.
//
// Launch: grid = (ceil(T / RELPOS_WARPS), heads, B), block = (RELPOS_BLOCK): one warp per query
// (the style of attention_dense_bf16). Lanes split the keys for the scores (32 keys per step, each lane
// a whole dot product, with 16-byte loads of k and pos rows when `vec`: D % 8 == 0 and k, pos
// 16-byte aligned), the step's probabilities go through shared memory, and lanes split the head dims
// (d = lane + 32c) for the weighted sum of v. Static shared memory: (2·RELPOS_MAX_D + 32) floats
// per warp.
#include "common.cuh"

#define RELPOS_BLOCK 128
#define RELPOS_WARPS 4
#define RELPOS_MAX_D 256

// Mirrors tts_kernels::ops::attention_relpos::AttentionRelposParams (#[repr(C)], 88 bytes).
struct AttentionRelposParams {
    const bf16_t* q;       // [B, T, heads·D] bf16
    const bf16_t* k;       // [B, T, heads·D] bf16
    const bf16_t* v;       // [B, T, heads·D] bf16
    const bf16_t* pos;     // [2T − 1, heads·D] bf16
    const float* bias_u;   // [heads, D] f32
    const float* bias_v;   // [heads, D] f32
    const int* kv_lens;    // [B] i32, or null: T keys
    bf16_t* out;           // [B, T, heads·D] bf16
    unsigned batch, t, heads, head_dim;
    float scale;
    unsigned vec;  // 1: D % 8 == 0 and k, pos 16-byte aligned
};
static_assert(sizeof(AttentionRelposParams) == 88, "AttentionRelposParams must match its Rust mirror");

namespace {

// element e of 8 bf16 held in a uint4 (little-endian pairs)
__device__ __forceinline__ float relpos_get(const uint4& u, int e) {
    const unsigned w = (e >> 1) == 0 ? u.x : (e >> 1) == 1 ? u.y : (e >> 1) == 2 ? u.z : u.w;
    return __uint_as_float((e & 1) ? (w & 0xffff0000u) : (w << 16));
}

}  // namespace

extern "C" __global__ void __launch_bounds__(RELPOS_BLOCK) attention_relpos_bf16(const AttentionRelposParams p) {
    __shared__ float qsh[RELPOS_WARPS][2][RELPOS_MAX_D];  // q + u, q + v of each warp's query
    __shared__ float wsh[RELPOS_WARPS][32];               // the probabilities of a step's 32 keys
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned b = blockIdx.z, h = blockIdx.y, i = blockIdx.x * RELPOS_WARPS + warp;
    if (i >= p.t) return;  // warp-uniform; the kernel has no block barrier
    const unsigned D = p.head_dim, T = p.t;
    const size_t hd = (size_t)p.heads * D;
    bf16_t* o = p.out + ((size_t)b * T + i) * hd + h * D;
    const int n = p.kv_lens ? p.kv_lens[b] : (int)T;
    if (n < 0 || n > (int)T) {
        const bf16_t nan = f32_to_bf16(quiet_nan());
        for (unsigned d = lane; d < D; d += 32) o[d] = nan;
        return;
    }
    float* qu = qsh[warp][0];
    float* qv = qsh[warp][1];
    float* wp = wsh[warp];
    const bf16_t* qr = p.q + ((size_t)b * T + i) * hd + h * D;
    for (unsigned d = lane; d < D; d += 32) {
        const float x = bf16_to_f32(qr[d]);
        qu[d] = x + p.bias_u[h * D + d];
        qv[d] = x + p.bias_v[h * D + d];
    }
    __syncwarp();
    const bf16_t* kb = p.k + ((size_t)b * T) * hd + h * D;
    const bf16_t* vb = p.v + ((size_t)b * T) * hd + h * D;
    const bf16_t* pb = p.pos + (size_t)(T - 1 - i) * hd + h * D;  // the pos row of key 0

    float m = neg_inf(), l = 0.0f, acc[8];
#pragma unroll
    for (int c = 0; c < 8; c++) acc[c] = 0.0f;
    for (int j0 = 0; j0 < n; j0 += 32) {  // warp-uniform
        const int j = j0 + (int)lane;
        float s = neg_inf();
        if (j < n) {
            const bf16_t* kr = kb + (size_t)j * hd;
            const bf16_t* pr = pb + (size_t)j * hd;
            float ac = 0.0f, bd = 0.0f;
            if (p.vec) {
                for (unsigned d = 0; d < D; d += 8) {
                    const uint4 ku = *reinterpret_cast<const uint4*>(kr + d);
                    const uint4 pu = *reinterpret_cast<const uint4*>(pr + d);
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        ac += qu[d + e] * relpos_get(ku, e);
                        bd += qv[d + e] * relpos_get(pu, e);
                    }
                }
            } else {
                for (unsigned d = 0; d < D; d++) {
                    ac += qu[d] * bf16_to_f32(kr[d]);
                    bd += qv[d] * bf16_to_f32(pr[d]);
                }
            }
            s = (ac + bd) * p.scale;
        }
        const float mx = fmaxf(m, warp_max(s));  // finite: key j0 is visible
        const float corr = expf(m - mx);
        const float pj = expf(s - mx);
        l = l * corr + pj;  // this lane's keys; summed over the warp at the end
#pragma unroll
        for (int c = 0; c < 8; c++) acc[c] *= corr;
        __syncwarp();  // the previous step's probabilities have been read
        wp[lane] = pj;
        __syncwarp();
        const int cnt = n - j0 < 32 ? n - j0 : 32;
        for (int kk = 0; kk < cnt; kk++) {
            const float w = wp[kk];
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
