// sampling.cu -- the T3 token sampler: one decode step of every request of a batch, entirely on the
// device (nothing is read back per token, so the step can be captured in a CUDA graph).
//
// Per request q (one block), with c = logits[2q], u = logits[2q+1] (f32, V wide) and the request's
// settings / state rows (layout: tts_kernels::ops::sampling, docs repeated at SampleParams):
//
//   english (chatterbox 0.1.7 T3.inference):
//     x = c + w·(c − u)                                   CFG (no fused multiply-add, as torch)
//     x[t] = x[t] < 0 ? x[t]·p : x[t]/p  for t in set(history[0..n])   (BOS included)
//     x /= T                                              (skipped when T == 1)
//     min_p:  remove exp(x − max) < min_p                 (= probs < min_p·max(probs))
//     top_p:  remove the ascending-order prefix whose cumulative probability is <= 1 − top_p
//             (HF runs it at top_p == 1 too, where it removes exactly the tokens whose f32
//             probability is 0: such tokens have weight 0 and probability 0 here either way, and
//             top_k after it cannot remove a token of nonzero probability because of them, so the
//             kernel skips that pass; the Cpu reference applies it for HF's -inf positions)
//     top_k:  remove x < k-th largest (ties kept)         (our extension, 0 = off)
//   turbo (T3.inference_turbo): x = c / T → top_k → top_p (only if < 1) → repetition penalty over
//     history[1..n] (history[0..1] on the first step, as inference_turbo's input_ids).
//   Then probs = softmax(x), one token drawn by inverse CDF with a Philox4x32-10 uniform
//   (key = the request's 64-bit seed, counter = (step, 0, 0, 0): the slot index is left out so a
//   request draws the same tokens whichever batch slot it occupies), appended to the history.
//
// Exactness. Every decision is made in arithmetic that does not depend on summation order, so Cpu
// (crates/tts-kernels/src/cpu/sampling.rs, which implements the same rules with sorts and
// sequential loops) and this kernel agree bit for bit on the host shim, and run to run on a GPU:
//   - probability mass for top_p and for the draw is counted in 64-bit fixed point: a kept token's
//     weight is floor(exp(x − max) · 2^40), the top token weighs exactly 2^40; sums are exact;
//   - min_p compares exp(x − max) with min_p (the softmax normaliser cancels on both sides);
//   - top_k counts tokens (integers); orders use a total order on float bits (−0 == +0).
//   The only float sum is the softmax normaliser of probs_out.
//
// The working logits are never stored: every pass recomputes x from c, u and the history bitmap
// (dynamic shared memory, one bit per vocab entry), so any V up to SAMPLE_MAX_VOCAB works with
// ~V/8 bytes of shared memory and no local arrays. top_p (< 1) and top_k each cost a 32-step
// binary search over the float order (one pass over the row per step).
//
// Launch: grid = (n_req), block = (min(SAMPLE_BLOCK, roundup32(V))), dynamic smem = 4·ceil(V/32).
#include "common.cuh"

#define SAMPLE_BLOCK 256
#define SAMPLE_SETTINGS_F32 8  // temperature, cfg_weight, repetition_penalty, min_p, top_p, 3 reserved
#define SAMPLE_SETTINGS_I32 4  // top_k, pipeline, seed low 32 bits, seed high 32 bits
#define SAMPLE_STATE 4         // hist_len, done, max_new_tokens, stop_token

#define SAMPLE_PIPELINE_TURBO 1
#define SAMPLE_DONE_STOP 1        // the stop token was drawn
#define SAMPLE_DONE_MAX_TOKENS 2  // max_new_tokens tokens were generated
#define SAMPLE_DONE_ERROR 3       // hist_len < 1, history full, or no token could be drawn

// Mirrors tts_kernels::ops::sampling::SampleParams (#[repr(C)], 72 bytes).
struct SampleParams {
    const float* logits;    // [2·n_req, vocab] f32: row 2q conditional, 2q+1 unconditional
    const float* settings;  // [n_req, SAMPLE_SETTINGS_F32] f32
    const int* settings_i;  // [n_req, SAMPLE_SETTINGS_I32] i32
    int* history;           // [n_req, max_hist] i32: BOS + tokens generated so far
    int* state;             // [n_req, SAMPLE_STATE] i32
    int* next_token;        // [n_req] i32
    float* probs_out;       // [n_req, vocab] f32, or null
    unsigned n_req, vocab, max_hist, pad_;
};
static_assert(sizeof(SampleParams) == 72, "SampleParams must match its Rust mirror");


typedef unsigned long long u64_t;

// ---------------------------------------------------------------- Philox4x32-10 (Random123)
__device__ __forceinline__ unsigned philox_mulhilo(unsigned a, unsigned b, unsigned* hi) {
    const u64_t p = (u64_t)a * (u64_t)b;
    *hi = (unsigned)(p >> 32);
    return (unsigned)p;
}

// First output word of Philox4x32-10 for counter (c0, c1, c2, c3) and key (k0, k1).
__device__ __forceinline__ unsigned philox4x32_10_first(unsigned c0, unsigned c1, unsigned c2, unsigned c3,
                                                        unsigned k0, unsigned k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned hi0, hi1;
        const unsigned lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
        const unsigned lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return c0;
}

// ---------------------------------------------------------------- float order and weights
// A total order on floats as unsigned keys (NaN excluded); −0 and +0 get the same key.
__device__ __forceinline__ unsigned order_key(float x) {
    const unsigned b = __float_as_uint(x);
    if ((b << 1) == 0u) return 0x80000000u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Fixed-point probability mass of a token with e = exp(x − max) in [0, 1]: floor(e · 2^40).
__device__ __forceinline__ u64_t mass_weight(float e) {
    if (e >= 1.0f) return 1ull << 40;
    if (e > 0.0f) return (u64_t)(e * 1099511627776.0f);
    return 0ull;  // also NaN
}

__device__ __forceinline__ unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }

// ---------------------------------------------------------------- block collectives
// blockDim.x is a multiple of 32; every thread of the block calls these.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : neg_inf();
    v = warp_max(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ u64_t block_sum_u64(u64_t v, u64_t* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0ull;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// Exclusive prefix sum over the threads of the block (in thread order); *total gets the sum.
__device__ __forceinline__ u64_t block_scan_u64(u64_t v, u64_t* scratch, u64_t* total) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    u64_t x = v;
#pragma unroll
    for (unsigned off = 1; off < 32; off <<= 1) {
        const u64_t y = __shfl_up_sync(0xffffffffu, x, off);
        if (lane >= off) x += y;
    }
    if (lane == 31) scratch[warp] = x;
    __syncthreads();
    if (warp == 0) {
        u64_t s = lane < nwarps ? scratch[lane] : 0ull;
#pragma unroll
        for (unsigned off = 1; off < 32; off <<= 1) {
            const u64_t y = __shfl_up_sync(0xffffffffu, s, off);
            if (lane >= off) s += y;
        }
        scratch[lane] = s;
    }
    __syncthreads();
    const u64_t base = warp > 0 ? scratch[warp - 1] : 0ull;
    *total = scratch[nwarps - 1];
    __syncthreads();
    return base + x - v;
}

__device__ __forceinline__ void shared_or(unsigned* word, unsigned mask) {
    unsigned old = *word;
    while ((old & mask) != mask) {
        const unsigned prev = atomicCAS(word, old, old | mask);
        if (prev == old) break;
        old = prev;
    }
}

// ---------------------------------------------------------------- one request's logits processors
#define ST_MINP 1u  // english min_p
#define ST_TOPP 2u  // top_p
#define ST_TOPK 4u  // top_k
#define ST_POST 8u  // turbo: the repetition penalty after the warpers

struct Row {
    const float* cond;
    const float* uncond;
    const unsigned* bits;  // history bitmap (shared memory)
    float temperature, cfg_weight, penalty, min_p;
    bool turbo;
    // parameters of the removal rules, filled in pipeline order
    float max_x;        // max over the row of the values before any removal
    unsigned topp_key;  // top_p: remove key < topp_key, and key == topp_key with index < topp_tie_index
    unsigned topp_tie_index;
    unsigned topk_key;  // top_k: remove key < topk_key
};

__device__ __forceinline__ float penalise(float x, float p) { return x < 0.0f ? x * p : x / p; }

__device__ __forceinline__ bool in_history(const Row& r, unsigned j) { return (r.bits[j >> 5] >> (j & 31u)) & 1u; }

// The value of token j before any removal: english CFG → penalty → temperature, turbo temperature.
__device__ __forceinline__ float base_value(const Row& r, unsigned j) {
    float x;
    if (r.turbo) {
        x = r.cond[j];
    } else {
        const float c = r.cond[j], u = r.uncond[j];
        x = c + __fmul_rn(r.cfg_weight, c - u);
        if (in_history(r, j)) x = penalise(x, r.penalty);
    }
    if (r.temperature != 1.0f) x = x / r.temperature;
    return x;
}

// The value of token j after the processors in `stages` (a removed token is −inf).
__device__ __forceinline__ float processed_value(const Row& r, unsigned j, unsigned stages) {
    const float x = base_value(r, j);
    const unsigned key = order_key(x);
    bool removed = false;
    if ((stages & ST_MINP) && expf(x - r.max_x) < r.min_p) removed = true;
    if ((stages & ST_TOPP) && (key < r.topp_key || (key == r.topp_key && j < r.topp_tie_index))) removed = true;
    if ((stages & ST_TOPK) && key < r.topk_key) removed = true;
    if (removed) return neg_inf();
    if ((stages & ST_POST) && in_history(r, j)) return penalise(x, r.penalty);
    return x;
}

// Exact fixed-point mass of the tokens kept by `stages` whose key is <= `key_le` (all: 0xffffffff).
__device__ __forceinline__ u64_t mass_upto(const Row& r, unsigned V, unsigned stages, unsigned key_le, u64_t* scratch) {
    u64_t m = 0;
    for (unsigned j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = processed_value(r, j, stages);
        if (order_key(x) <= key_le) m += mass_weight(expf(x - r.max_x));
    }
    return block_sum_u64(m, scratch);
}

// top_p < 1 over the tokens kept by `stages` (HF TopPLogitsWarper, ties in index order as a stable
// sort): sets topp_key / topp_tie_index.
__device__ __forceinline__ void plan_top_p(Row& r, unsigned V, unsigned stages, float top_p, u64_t* scratch,
                                           unsigned* s_index) {
    const u64_t total = mass_upto(r, V, stages, 0xffffffffu, scratch);
    const float thr = (float)(1.0 - (double)top_p);
    u64_t R = (u64_t)((double)thr * (double)total);  // remove while cumulative mass <= R
    if (R >= total) R = total - 1;                    // always keep the last (the top token)
    // smallest key b with mass(key <= b) > R
    unsigned lo = 0u, hi = 0xffffffffu;
    while (lo < hi) {
        const unsigned mid = lo + ((hi - lo) >> 1);
        if (mass_upto(r, V, stages, mid, scratch) > R) hi = mid;
        else lo = mid + 1u;
    }
    r.topp_key = lo;
    r.topp_tie_index = 0u;
    const u64_t below = lo > 0u ? mass_upto(r, V, stages, lo - 1u, scratch) : 0ull;
    const u64_t w_tie = mass_weight(expf(key_value(lo) - r.max_x));  // > 0, or mass(<= lo) would be <= R
    // tied tokens removed (lowest indices first): floor((R − below) / w_tie) < V, found bit by bit
    // (a 64-bit division would be a subroutine call with a stack frame)
    const u64_t rest = R - below;
    u64_t n_removed = 0ull;
    if (w_tie > 0ull)
        for (u64_t bit = 1ull << 23; bit != 0ull; bit >>= 1)
            if ((n_removed | bit) * w_tie <= rest) n_removed |= bit;
    if (n_removed == 0ull) return;
    // index of the (n_removed+1)-th token with key == lo: contiguous chunks, prefix counts
    const unsigned chunk = (V + blockDim.x - 1u) / blockDim.x;
    const unsigned j0 = umin(threadIdx.x * chunk, V), j1 = umin(j0 + chunk, V);
    u64_t mine = 0;
    for (unsigned j = j0; j < j1; ++j) mine += order_key(processed_value(r, j, stages)) == lo ? 1ull : 0ull;
    u64_t count_total;
    u64_t before = block_scan_u64(mine, scratch, &count_total);
    if (before <= n_removed && n_removed < before + mine) {
        for (unsigned j = j0; j < j1; ++j) {
            if (order_key(processed_value(r, j, stages)) != lo) continue;
            if (before == n_removed) {
                *s_index = j;
                break;
            }
            ++before;
        }
    }
    __syncthreads();
    r.topp_tie_index = *s_index;
    __syncthreads();
}

// top_k over the values after `stages` (HF TopKLogitsWarper: remove x < k-th largest, ties kept).
__device__ __forceinline__ void plan_top_k(Row& r, unsigned V, unsigned stages, unsigned k, u64_t* scratch) {
    // largest key b with count(key >= b) >= k
    unsigned lo = 0u, hi = 0xffffffffu;
    while (lo < hi) {
        const unsigned mid = hi - ((hi - lo) >> 1);
        u64_t n = 0;
        for (unsigned j = threadIdx.x; j < V; j += blockDim.x) n += order_key(processed_value(r, j, stages)) >= mid ? 1ull : 0ull;
        if (block_sum_u64(n, scratch) >= (u64_t)k) lo = mid;
        else hi = mid - 1u;
    }
    r.topk_key = lo;
}

// min 1 block per SM: with max-threads alone ptxas aims at a higher occupancy (40-48 registers)
// and spills; one block per request never needs more than one block per SM.
// nvrtc-gate: reads-own-writes (the state and history rows are read and written)
extern "C" __global__ void __launch_bounds__(SAMPLE_BLOCK, 1) sample_tokens_f32(const SampleParams p) {
    __shared__ float f_scratch[32];
    __shared__ u64_t u_scratch[32];
    __shared__ int s_state[SAMPLE_STATE];
    __shared__ unsigned s_index;
    extern __shared__ unsigned sample_bits[];  // ceil(V/32) words: the history bitmap

    const unsigned q = blockIdx.x, V = p.vocab;
    if (q >= p.n_req) return;
    int* state = p.state + (size_t)q * SAMPLE_STATE;
    if (threadIdx.x < SAMPLE_STATE) s_state[threadIdx.x] = state[threadIdx.x];
    __syncthreads();
    const int hist_len = s_state[0], max_new = s_state[2], stop_token = s_state[3];
    if (s_state[1] != 0) return;  // finished: no work at all
    if (hist_len < 1 || hist_len - 1 >= max_new || hist_len >= (int)p.max_hist) {
        if (threadIdx.x == 0) state[1] = (hist_len >= 1 && hist_len - 1 >= max_new) ? SAMPLE_DONE_MAX_TOKENS : SAMPLE_DONE_ERROR;
        return;
    }
    const unsigned step = (unsigned)(hist_len - 1);  // tokens generated so far

    const float* set = p.settings + (size_t)q * SAMPLE_SETTINGS_F32;
    const int* seti = p.settings_i + (size_t)q * SAMPLE_SETTINGS_I32;
    Row r;
    r.cond = p.logits + (size_t)(2u * q) * V;
    r.uncond = r.cond + V;
    r.bits = sample_bits;
    r.temperature = set[0];
    r.cfg_weight = set[1];
    r.penalty = set[2];
    r.min_p = set[3];
    const float top_p = set[4];
    const int top_k = seti[0];
    r.turbo = seti[1] == SAMPLE_PIPELINE_TURBO;
    const unsigned seed_lo = (unsigned)seti[2], seed_hi = (unsigned)seti[3];
    r.max_x = 0.0f;
    r.topp_key = 0u;
    r.topp_tie_index = 0u;
    r.topk_key = 0u;

    // history bitmap: english penalises history[0..n] (BOS included), turbo history[1..n]
    // (history[0..1] on the first step)
    const unsigned nwords = (V + 31u) / 32u;
    for (unsigned w = threadIdx.x; w < nwords; w += blockDim.x) sample_bits[w] = 0u;
    __syncthreads();
    const int* hist = p.history + (size_t)q * p.max_hist;
    int h0 = 0, h1 = hist_len;
    if (r.turbo) {
        if (hist_len > 1) h0 = 1;
        else h1 = 1;
    }
    for (int i = h0 + (int)threadIdx.x; i < h1; i += (int)blockDim.x) {
        const int t = hist[i];
        if (t >= 0 && (unsigned)t < V) shared_or(&sample_bits[(unsigned)t >> 5], 1u << ((unsigned)t & 31u));
    }
    __syncthreads();

    // max of the values before removals: the top token survives every processor, so this is the
    // softmax max of every stage (except after turbo's final penalty)
    float mx = neg_inf();
    for (unsigned j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, base_value(r, j));
    r.max_x = block_max(mx, f_scratch);

    // english: min_p → top_p → top_k; turbo: top_k → top_p → penalty. One call site per search
    // (each is a 32-step loop over the row; two inlined copies would double the code).
    unsigned stages = (!r.turbo && r.min_p > 0.0f) ? ST_MINP : 0u;
    const bool do_top_k = top_k > 0 && (unsigned)top_k < V;
    for (int pass = 0; pass < 2; ++pass) {
        if ((pass == 0) != r.turbo) {
            if (top_p < 1.0f) {  // (english top_p == 1: see the top of the file)
                plan_top_p(r, V, stages, top_p, u_scratch, &s_index);
                stages |= ST_TOPP;
            }
        } else if (do_top_k) {
            plan_top_k(r, V, stages, (unsigned)top_k, u_scratch);
            stages |= ST_TOPK;
        }
    }
    if (r.turbo) stages |= ST_POST;

    // final softmax max (turbo's penalty changes values after the warpers)
    float mf = r.max_x;
    if (r.turbo) {
        float m = neg_inf();
        for (unsigned j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, processed_value(r, j, stages));
        mf = block_max(m, f_scratch);
    }

    // draw: fixed-point weights in contiguous per-thread chunks (index order), one block scan
    const unsigned chunk = (V + blockDim.x - 1u) / blockDim.x;
    const unsigned j0 = umin(threadIdx.x * chunk, V), j1 = umin(j0 + chunk, V);
    u64_t wsum = 0;
    float esum = 0.0f;
    for (unsigned j = j0; j < j1; ++j) {
        const float e = expf(processed_value(r, j, stages) - mf);
        wsum += mass_weight(e);
        esum += e;
    }
    if (threadIdx.x == 0) s_index = 0xffffffffu;
    u64_t total;
    const u64_t before = block_scan_u64(wsum, u_scratch, &total);  // (its barriers publish s_index)
    const unsigned rnd = philox4x32_10_first(step, 0u, 0u, 0u, seed_lo, seed_hi);  // not the slot: batch-invariant
    // target = floor(rnd · total / 2^32) < total, exactly (total < 2^63)
    const u64_t target = (u64_t)rnd * (total >> 32) + (((u64_t)rnd * (total & 0xffffffffull)) >> 32);
    if (total > 0ull && before <= target && target < before + wsum) {
        u64_t cum = before;
        for (unsigned j = j0; j < j1; ++j) {
            cum += mass_weight(expf(processed_value(r, j, stages) - mf));
            if (cum > target) {
                s_index = j;
                break;
            }
        }
    }
    const float inv_sum = 1.0f / block_sum(esum, f_scratch);  // its barriers publish s_index
    const unsigned token = s_index;

    if (p.probs_out) {
        float* out = p.probs_out + (size_t)q * V;
        for (unsigned j = threadIdx.x; j < V; j += blockDim.x) out[j] = expf(processed_value(r, j, stages) - mf) * inv_sum;
    }
    if (threadIdx.x == 0) {
        if (token >= V) {
            state[1] = SAMPLE_DONE_ERROR;
        } else {
            p.history[(size_t)q * p.max_hist + (size_t)hist_len] = (int)token;
            p.next_token[q] = (int)token;
            state[0] = hist_len + 1;
            if ((int)token == stop_token) state[1] = SAMPLE_DONE_STOP;
            else if (hist_len >= max_new) state[1] = SAMPLE_DONE_MAX_TOKENS;
        }
    }
}
