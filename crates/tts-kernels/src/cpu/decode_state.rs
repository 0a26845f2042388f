//! T3's per-row decode state (mirrors `kernels/decode_state.cu`).

/// Columns of the sampler's per-request state row; column 1 is the done flag.
pub const SAMPLE_STATE_COLS: usize = 4;

/// Moves every live request's two CFG rows one position on and feeds them the sampled token;
/// a done request's rows get `lens = 0` (attention skips them). Slices: `next_token`, `state`
/// [n_req] and [n_req, 4]; `tokens`, `positions`, `speech_pos`, `lens` [2·n_req].
pub fn advance(
    next_token: &[i32],
    state: &[i32],
    tokens: &mut [i32],
    positions: &mut [i32],
    speech_pos: &mut [i32],
    lens: &mut [i32],
) {
    for (q, &t) in next_token.iter().enumerate() {
        let done = state[q * SAMPLE_STATE_COLS + 1] != 0;
        for r in 2 * q..2 * q + 2 {
            if done {
                lens[r] = 0;
            } else {
                tokens[r] = t;
                positions[r] += 1;
                speech_pos[r] += 1;
                lens[r] = positions[r] + 1;
            }
        }
    }
}
