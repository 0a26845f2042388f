use bytemuck::{Pod, Zeroable};

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, blocks_for, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

/// Threads per block of `advance_decode_state`; mirrors ADVANCE_BLOCK in decode_state.cu.
pub(crate) const ADVANCE_BLOCK: u32 = 128;

/// Mirrors `AdvanceParams` in kernels/decode_state.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct AdvanceParams {
    pub next_token: u64,
    pub state: u64,
    pub tokens: u64,
    pub positions: u64,
    pub speech_pos: u64,
    pub lens: u64,
    pub n_req: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<AdvanceParams>() == 56);

/// The per-row state of T3's batched decode step, advanced after the sampler: every live request's
/// rows (2q, 2q+1) take the sampled token as their next input and move one position on; a done
/// request's rows get `lens = 0` so that attention skips them.
///
/// Shapes (all i32): `next_token` `[n_req]`, `state` `[n_req, 4]` (the sampler's: column 1 = done),
/// `tokens`, `positions`, `speech_pos`, `lens` `[2·n_req]`.
pub fn advance_decode_state(
    next_token: View<'_>,
    state: View<'_>,
    mut tokens: ViewMut<'_>,
    mut positions: ViewMut<'_>,
    mut speech_pos: ViewMut<'_>,
    mut lens: ViewMut<'_>,
) -> Result<()> {
    const OP: &str = "advance_decode_state";
    let dev = same_device(
        OP,
        next_token.device(),
        &[state.device(), tokens.device(), positions.device(), speech_pos.device(), lens.device()],
    )?;
    let n = next_token.len();
    if state.len() != n * cpu::SAMPLE_STATE_COLS {
        return Err(Error::shape(OP, format!("state {:?} for {n} requests", state.shape())));
    }
    for (what, v) in [
        ("tokens", tokens.as_view()),
        ("positions", positions.as_view()),
        ("speech_pos", speech_pos.as_view()),
        ("lens", lens.as_view()),
    ] {
        if v.len() != 2 * n {
            return Err(Error::shape(OP, format!("{what} {:?} for {n} requests", v.shape())));
        }
        expect_dtype(OP, what, &v, DType::I32)?;
    }
    expect_dtype(OP, "next_token", &next_token, DType::I32)?;
    expect_dtype(OP, "state", &state, DType::I32)?;
    if n == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let (t, p, s, l) =
                (tokens.host_i32_mut()?, positions.host_i32_mut()?, speech_pos.host_i32_mut()?, lens.host_i32_mut()?);
            cpu::advance(next_token.host_i32()?, state.host_i32()?, t, p, s, l);
            Ok(())
        }
        _ => {
            let p = AdvanceParams {
                next_token: next_token.addr(),
                state: state.addr(),
                tokens: tokens.addr(),
                positions: positions.addr(),
                speech_pos: speech_pos.addr(),
                lens: lens.addr(),
                n_req: u32_param(OP, "n_req", n)?,
                pad: 0,
            };
            let grid = blocks_for(OP, n, ADVANCE_BLOCK)?;
            launch(dev, "advance_decode_state", LaunchDims::new([grid, 1, 1], [ADVANCE_BLOCK, 1, 1], 0), &p)
        }
    }
}
