use bytemuck::{Pod, Zeroable};

use crate::cpu::RequestIo;
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::launch::{LaunchDims, launch, u32_param};
use crate::ops::expect_dtype;
use crate::tensor::same_device;
use crate::{DType, View, ViewMut, cpu};

pub use crate::cpu::{DONE_ERROR, DONE_MAX_TOKENS, DONE_RUNNING, DONE_STOP, Pipeline, SamplerSettings, SamplerState};

/// Max threads per block of `sample_tokens_f32` (one block per request); mirrors SAMPLE_BLOCK in
/// sampling.cu. Small vocabularies get `roundup32(V)` threads.
pub const SAMPLE_BLOCK: u32 = 256;
/// Columns of the f32 settings tensor: `[temperature, cfg_weight, repetition_penalty, min_p, top_p,
/// reserved ×3]` ([`SamplerSettings::f32_row`]).
pub const SAMPLE_SETTINGS_F32: usize = 8;
/// Columns of the i32 settings tensor: `[top_k, pipeline (0 English, 1 Turbo), seed low 32 bits,
/// seed high 32 bits]` ([`SamplerSettings::i32_row`]).
pub const SAMPLE_SETTINGS_I32: usize = 4;
/// Columns of the state tensor: `[hist_len, done, max_new_tokens, stop_token]` ([`SamplerState`]).
pub const SAMPLE_STATE: usize = 4;
/// Largest vocabulary: the kernel's history bitmap is V/8 bytes of dynamic shared memory, 48 KiB
/// here. With the kernel's static scratch (about 400 bytes) the largest vocabularies pass the 48 KiB
/// a launch gets without opting in; the launch code then opts in (`launch.rs`), which every
/// supported device allows.
pub const SAMPLE_MAX_VOCAB: usize = 48 * 1024 * 8;

/// Mirrors `SampleParams` in kernels/sampling.cu (device addresses as u64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SampleParams {
    pub logits: u64,
    pub settings: u64,
    pub settings_i: u64,
    pub history: u64,
    pub state: u64,
    pub next_token: u64,
    pub probs_out: u64,
    pub n_req: u32,
    pub vocab: u32,
    pub max_hist: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<SampleParams>() == 72);

/// Block size and dynamic shared memory (bytes, the history bitmap) of a `sample_tokens_f32` launch
/// for vocabulary `vocab`. The launch checks static + dynamic shared memory against the device and
/// opts in above 48 KiB (`launch.rs`).
pub fn sample_launch_config(vocab: usize) -> (u32, u32) {
    let block = (vocab.div_ceil(32) * 32).clamp(32, SAMPLE_BLOCK as usize) as u32;
    (block, (vocab.div_ceil(32) * 4) as u32)
}

/// One decode step of the T3 sampler for a batch of `n_req` requests (one CUDA block each), with every
/// per-step value on the device (CUDA-graph friendly; nothing is read back).
///
/// For each request `q` that is not done: the processor chain of its pipeline on
/// `c = logits[2q]`, `u = logits[2q + 1]` (see [`crate::cpu::sampler_stages`]), one token drawn by
/// inverse CDF with Philox4x32-10 (key = its seed, counter = (tokens generated so far, 0, 0, 0): the
/// batch slot is not part of it, so give every request its own seed),
/// appended to `history[q]`, written to `next_token[q]`; `hist_len += 1`; `done` becomes
/// [`DONE_STOP`] on the stop token or [`DONE_MAX_TOKENS`] once `max_new_tokens` tokens exist. A request
/// already done is not touched (nor its `next_token` / `probs_out` rows). A request that cannot
/// sample (`hist_len < 1`, or no room left in its history row) gets [`DONE_ERROR`].
///
/// Shapes and dtypes (every backend):
/// - `logits`: `[2·n_req, V]` f32 (conditional and unconditional row per request; Turbo ignores the
///   second), `1 <= V <= SAMPLE_MAX_VOCAB`;
/// - `settings`: `[n_req, 8]` f32, `settings_i`: `[n_req, 4]` i32 (layouts: [`SAMPLE_SETTINGS_F32`],
///   [`SAMPLE_SETTINGS_I32`]);
/// - `history`: `[n_req, max_hist]` i32 (`history[q][0]` = BOS; size `max_hist > max_new_tokens`);
/// - `state`: `[n_req, 4]` i32 ([`SAMPLE_STATE`]);
/// - `next_token`: `[n_req]` i32; `probs_out`: `[n_req, V]` f32, the final probabilities.
///
/// Settings are validated on Cpu (an error); on Cuda/Emu they live on the device and are not read
/// back: validate them with [`SamplerSettings::validate`] before uploading.
pub fn sample_tokens(
    logits: View<'_>,
    settings: View<'_>,
    settings_i: View<'_>,
    mut history: ViewMut<'_>,
    mut state: ViewMut<'_>,
    mut next_token: ViewMut<'_>,
    mut probs_out: Option<ViewMut<'_>>,
) -> Result<()> {
    const OP: &str = "sample_tokens";
    let mut devs = vec![settings.device(), settings_i.device(), history.device(), state.device(), next_token.device()];
    if let Some(p) = &probs_out {
        devs.push(p.device());
    }
    let dev = same_device(OP, logits.device(), &devs)?;
    let n_req = settings.rows();
    let vocab = logits.row_len();
    if logits.rows() != 2 * n_req || vocab == 0 || vocab > SAMPLE_MAX_VOCAB {
        return Err(Error::shape(
            OP,
            format!("logits {:?} for {n_req} requests (want [2·n_req, V], 1 <= V <= {SAMPLE_MAX_VOCAB})", logits.shape()),
        ));
    }
    let check = |what: &str, shape: &[usize], rows: usize, cols: usize| -> Result<()> {
        let ok = shape.first() == Some(&rows) && shape[1..].iter().product::<usize>() == cols;
        if ok { Ok(()) } else { Err(Error::shape(OP, format!("{what} {shape:?}, want [{rows}, {cols}]"))) }
    };
    check("settings", settings.shape(), n_req, SAMPLE_SETTINGS_F32)?;
    check("settings_i", settings_i.shape(), n_req, SAMPLE_SETTINGS_I32)?;
    check("state", state.shape(), n_req, SAMPLE_STATE)?;
    let max_hist = history.row_len();
    if history.rows() != n_req || max_hist == 0 {
        return Err(Error::shape(OP, format!("history {:?} for {n_req} requests", history.shape())));
    }
    if next_token.len() != n_req {
        return Err(Error::shape(OP, format!("next_token {:?} for {n_req} requests", next_token.shape())));
    }
    if let Some(p) = &probs_out {
        check("probs_out", p.shape(), n_req, vocab)?;
    }
    expect_dtype(OP, "logits", &logits, DType::F32)?;
    expect_dtype(OP, "settings", &settings, DType::F32)?;
    expect_dtype(OP, "settings_i", &settings_i, DType::I32)?;
    expect_dtype(OP, "history", &history.as_view(), DType::I32)?;
    expect_dtype(OP, "state", &state.as_view(), DType::I32)?;
    expect_dtype(OP, "next_token", &next_token.as_view(), DType::I32)?;
    if let Some(p) = &probs_out {
        expect_dtype(OP, "probs_out", &p.as_view(), DType::F32)?;
    }
    if n_req == 0 {
        return Ok(());
    }
    match &*dev.inner {
        Backend::Cpu => {
            let (lg, sf, si) = (logits.host_f32()?, settings.host_f32()?, settings_i.host_i32()?);
            let all: Vec<SamplerSettings> = (0..n_req)
                .map(|q| {
                    let s = SamplerSettings::from_rows(
                        &sf[q * SAMPLE_SETTINGS_F32..(q + 1) * SAMPLE_SETTINGS_F32],
                        &si[q * SAMPLE_SETTINGS_I32..(q + 1) * SAMPLE_SETTINGS_I32],
                    );
                    s.validate().map(|()| s).map_err(|e| Error::invalid(OP, format!("request {q}: {e}")))
                })
                .collect::<Result<_>>()?;
            let hist = history.host_i32_mut()?;
            let st = state.host_i32_mut()?;
            let nt = next_token.host_i32_mut()?;
            let mut probs = probs_out.as_mut().map(|p| p.host_f32_mut()).transpose()?;
            for (q, s) in all.iter().enumerate() {
                let cond = &lg[2 * q * vocab..(2 * q + 1) * vocab];
                let uncond = &lg[(2 * q + 1) * vocab..(2 * q + 2) * vocab];
                let io = RequestIo {
                    history: &mut hist[q * max_hist..(q + 1) * max_hist],
                    state: &mut st[q * SAMPLE_STATE..(q + 1) * SAMPLE_STATE],
                    next_token: &mut nt[q],
                    probs: probs.as_mut().map(|p| &mut p[q * vocab..(q + 1) * vocab]),
                };
                cpu::sample_request(cond, uncond, s, q as u32, io);
            }
            Ok(())
        }
        _ => {
            let p = SampleParams {
                logits: logits.addr(),
                settings: settings.addr(),
                settings_i: settings_i.addr(),
                history: history.addr(),
                state: state.addr(),
                next_token: next_token.addr(),
                probs_out: probs_out.as_ref().map_or(0, |p| p.addr()),
                n_req: u32_param(OP, "n_req", n_req)?,
                vocab: u32_param(OP, "vocab", vocab)?,
                max_hist: u32_param(OP, "max_hist", max_hist)?,
                pad: 0,
            };
            let (block, smem) = sample_launch_config(vocab);
            launch(dev, "sample_tokens_f32", LaunchDims::new([p.n_req, 1, 1], [block, 1, 1], smem), &p)
        }
    }
}
