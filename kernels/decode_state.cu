// decode_state.cu -- advances the per-row state of T3's batched decode step, on the device.
//
// After the sampler drew next_token[q] for every live request q, each CFG row pair (2q, 2q+1)
// moves one position on: tokens[r] = next_token[q] (the input of the next step), positions[r] += 1
// (RoPE position = KV-cache index), speech_pos[r] += 1 (learned speech position), lens[r] =
// positions[r] + 1 (how many cache positions attention reads). A request the sampler marked done
// (state[q][1] != 0) gets lens = 0 on both rows: attention skips it from then on, and nothing else
// of it changes. Nothing is read back to the host, so the step can be replayed as a graph.
//
// Launch: grid = (ceil(n_req / ADVANCE_BLOCK)), block = (ADVANCE_BLOCK).
#include "common.cuh"

#define ADVANCE_BLOCK 128
#define SAMPLE_STATE 4  // the sampler's state row: hist_len, done, max_new_tokens, stop_token

// Mirrors tts_kernels::ops::decode_state::AdvanceParams (#[repr(C)], 56 bytes).
struct AdvanceParams {
    const int* next_token;  // [n_req]
    const int* state;       // [n_req, SAMPLE_STATE] (the sampler's)
    int* tokens;            // [2 n_req]
    int* positions;         // [2 n_req]
    int* speech_pos;        // [2 n_req]
    int* lens;              // [2 n_req]
    unsigned n_req, pad_;
};
static_assert(sizeof(AdvanceParams) == 56, "AdvanceParams must match its Rust mirror");

// nvrtc-gate: reads-own-writes (positions are incremented in place and read back)
extern "C" __global__ void __launch_bounds__(ADVANCE_BLOCK) advance_decode_state(const AdvanceParams p) {
    const unsigned q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= p.n_req) return;
    const bool done = p.state[q * SAMPLE_STATE + 1] != 0;
    for (unsigned r = 2 * q; r < 2 * q + 2; r++) {
        if (done) {
            p.lens[r] = 0;
        } else {
            p.tokens[r] = p.next_token[q];
            p.positions[r] += 1;
            p.speech_pos[r] += 1;
            p.lens[r] = p.positions[r] + 1;
        }
    }
}
