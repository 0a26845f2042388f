// embedding.cu -- token-embedding gather with a learned-position add (T3 text and speech inputs).
//
//   out[r, :] = (ids[r] >= 0 ? table[ids[r], :] : 0) + (pos[r] >= 0 ? pos_table[pos[r], :] : 0)
//
// A negative id leaves out the token embedding (the CFG unconditional row keeps only the text
// positions); a negative position leaves out the position embedding. Ids and positions live on the
// device so that a captured decode step can replay with new values. An id or position past the end
// of its table cannot be reported from the device: its whole row is written as NaN (the Cpu op
// returns an error instead).
//
// Launch: grid = (rows, ceil(dim / EMBED_BLOCK)), block = (EMBED_BLOCK).
#include "common.cuh"

#define EMBED_BLOCK 128

// Mirrors tts_kernels::ops::embedding::EmbedParams (#[repr(C)], 56 bytes).
struct EmbedParams {
    const int* ids;           // [rows] token ids
    const int* pos;           // [rows] learned-position indices, or null: no position add
    const bf16_t* table;      // [vocab, dim] bf16
    const bf16_t* pos_table;  // [n_pos, dim] bf16 (ignored when pos is null)
    float* out;               // [rows, dim] f32 (the residual stream)
    unsigned rows, dim, vocab, n_pos;
};
static_assert(sizeof(EmbedParams) == 56, "EmbedParams must match its Rust mirror");


extern "C" __global__ void __launch_bounds__(EMBED_BLOCK) embed_pos_bf16(const EmbedParams p) {
    const unsigned row = blockIdx.x;
    const unsigned j = blockIdx.y * blockDim.x + threadIdx.x;
    if (row >= p.rows || j >= p.dim) return;
    const int id = p.ids[row];
    const int ps = p.pos ? p.pos[row] : -1;
    float v;
    if (id >= (int)p.vocab || ps >= (int)p.n_pos) {
        v = quiet_nan();
    } else {
        v = id >= 0 ? bf16_to_f32(p.table[(size_t)id * p.dim + j]) : 0.0f;
        if (ps >= 0) v += bf16_to_f32(p.pos_table[(size_t)ps * p.dim + j]);
    }
    p.out[(size_t)row * p.dim + j] = v;
}
