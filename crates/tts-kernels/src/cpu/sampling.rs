//! The T3 token sampler (kernels/sampling.cu): logits processors, softmax and a counter-based draw.
//!
//! [`sampler_stages`] returns every intermediate of the processor chain (for parity with the
//! reference's recorded stages); [`draw_token`] draws from the processed logits; [`sample_request`]
//! is one decode step of one request (what the Cpu backend of `ops::sample_tokens` runs per row).
//!
//! Pipelines (chatterbox-tts 0.1.7, transformers 5.2.0 processor semantics):
//! - **English** (`T3.inference`): CFG `c + w(c − u)` → repetition penalty over the whole history
//!   (BOS included) → `/T` (skipped at 1) → min_p → top_p (runs at 1.0 too) → top_k (our extension).
//! - **Turbo** (`T3.inference_turbo`): `c/T` → top_k → top_p (only if < 1) → repetition penalty over
//!   `history[1..n]` (`history[0..1]` on the first step). No CFG, no min_p.
//!
//! The decisions are made in order-independent arithmetic so that this reference and the kernel
//! agree exactly (not only within a tolerance) given the same `exp` (the Emu shim uses the same libm):
//! - min_p removes `exp(x − max) < min_p` (HF's `probs < min_p · max(probs)` with the normaliser cancelled);
//! - top_p counts probability mass in 64-bit fixed point: a kept token weighs `floor(exp(x − max) · 2^40)`;
//!   in ascending order (ties by index, as a stable sort) the prefix whose cumulative mass is
//!   `<= floor((1 − top_p) · total)` is removed, the last token always kept. At top_p ≥ 1 the rule is
//!   HF's own: remove exactly the tokens whose f32 probability `exp(x − max) · (1/sum)` is 0 (the
//!   kernel skips that pass: it cannot change a probability or a draw, only `-inf` positions);
//! - top_k removes `x < k-th largest` (ties kept), `−0 == +0`;
//! - the draw uses the same fixed-point weights: with `r` the first word of Philox4x32-10 (key = seed,
//!   counter = (step, 0, 0, 0): not the batch slot, so a request draws the same tokens in any slot;
//!   requests need distinct seeds), `target = floor(r · total / 2^32)` and the token is the first
//!   index whose inclusive prefix weight exceeds `target` (inverse CDF with u = r / 2^32).
//!
//! Against HF's float cumsum this differs only for a token whose cumulative probability lies within
//! float rounding of `1 − top_p` (and by `< V · 2^-40` of probability mass in the draw).

/// Fixed-point scale of probability mass: a token with `exp(x − max) = e` weighs `floor(e · 2^40)`.
pub const MASS_SHIFT: u32 = 40;
/// Largest vocabulary the fixed-point sums allow (`V · 2^40 < 2^63`).
pub const MAX_SAMPLER_VOCAB: usize = 1 << 23;

/// `done` codes of the sampler state.
pub const DONE_RUNNING: i32 = 0;
/// The stop token was drawn (it is appended to the history and written to `next_token`).
pub const DONE_STOP: i32 = 1;
/// `max_new_tokens` tokens have been generated.
pub const DONE_MAX_TOKENS: i32 = 2;
/// `hist_len < 1`, the history has no room for another token, or no token could be drawn.
pub const DONE_ERROR: i32 = 3;

/// Which processor chain a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// `T3.inference` of the English model (CFG, penalty, temperature, min_p, top_p, then top_k).
    English,
    /// `T3.inference_turbo` (temperature, top_k, top_p, penalty; no CFG, no min_p).
    Turbo,
}

/// Per-request sampler settings. On a device they live in two tensors, one f32 row
/// ([`SamplerSettings::f32_row`]) and one i32 row ([`SamplerSettings::i32_row`]) per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerSettings {
    pub pipeline: Pipeline,
    /// > 0; the division is skipped at exactly 1.0.
    pub temperature: f32,
    /// CFG weight `w` of `c + w(c − u)` (English only).
    pub cfg_weight: f32,
    /// > 0; 1.0 is a no-op.
    pub repetition_penalty: f32,
    /// In [0, 1]; 0 is off (English only).
    pub min_p: f32,
    /// In [0, 1].
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// Philox key of this request's draws.
    pub seed: u64,
}

impl SamplerSettings {
    /// `ChatterboxTTS.generate`'s defaults (T 0.8, CFG 0.5, penalty 1.2, min_p 0.05, top_p 1.0).
    pub const ENGLISH_DEFAULT: SamplerSettings = SamplerSettings {
        pipeline: Pipeline::English,
        temperature: 0.8,
        cfg_weight: 0.5,
        repetition_penalty: 1.2,
        min_p: 0.05,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };

    /// The f32 settings row: `[temperature, cfg_weight, repetition_penalty, min_p, top_p, 0, 0, 0]`.
    pub fn f32_row(&self) -> [f32; 8] {
        [self.temperature, self.cfg_weight, self.repetition_penalty, self.min_p, self.top_p, 0.0, 0.0, 0.0]
    }

    /// The i32 settings row: `[top_k, pipeline (0 English, 1 Turbo), seed bits 0..32, seed bits 32..64]`
    /// (the seed's bits stored unchanged).
    pub fn i32_row(&self) -> [i32; 4] {
        let pipeline = match self.pipeline {
            Pipeline::English => 0,
            Pipeline::Turbo => 1,
        };
        [self.top_k.min(i32::MAX as u32) as i32, pipeline, self.seed as u32 as i32, (self.seed >> 32) as u32 as i32]
    }

    /// Decodes the two settings rows (what the kernel reads; a pipeline other than 1 is English, a
    /// negative top_k is off).
    pub fn from_rows(f: &[f32], i: &[i32]) -> SamplerSettings {
        SamplerSettings {
            pipeline: if i[1] == 1 { Pipeline::Turbo } else { Pipeline::English },
            temperature: f[0],
            cfg_weight: f[1],
            repetition_penalty: f[2],
            min_p: f[3],
            top_p: f[4],
            top_k: i[0].max(0) as u32,
            seed: (i[2] as u32 as u64) | ((i[3] as u32 as u64) << 32),
        }
    }

    /// Checks the ranges HF enforces (the kernel cannot report errors: validate before uploading).
    pub fn validate(&self) -> Result<(), String> {
        let t = self.temperature;
        if !(t.is_finite() && t > 0.0) {
            return Err(format!("temperature {t} must be finite and > 0"));
        }
        let p = self.repetition_penalty;
        if !(p.is_finite() && p > 0.0) {
            return Err(format!("repetition_penalty {p} must be finite and > 0"));
        }
        if !self.cfg_weight.is_finite() {
            return Err(format!("cfg_weight {} must be finite", self.cfg_weight));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p {} must be in [0, 1]", self.top_p));
        }
        if self.top_k > i32::MAX as u32 {
            return Err(format!("top_k {} does not fit an i32", self.top_k));
        }
        Ok(())
    }
}

/// Per-request decode state, one i32 row `[hist_len, done, max_new_tokens, stop_token]` on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplerState {
    /// Valid entries of the request's history row (1 = BOS only). Tokens generated = `hist_len − 1`.
    pub hist_len: i32,
    /// [`DONE_RUNNING`], [`DONE_STOP`], [`DONE_MAX_TOKENS`] or [`DONE_ERROR`].
    pub done: i32,
    pub max_new_tokens: i32,
    /// Drawing this token finishes the request (6562 in the real model).
    pub stop_token: i32,
}

impl SamplerState {
    /// A fresh request whose history holds only the BOS.
    pub fn new(max_new_tokens: i32, stop_token: i32) -> SamplerState {
        SamplerState { hist_len: 1, done: DONE_RUNNING, max_new_tokens, stop_token }
    }
    pub fn row(&self) -> [i32; 4] {
        [self.hist_len, self.done, self.max_new_tokens, self.stop_token]
    }
    pub fn from_row(r: &[i32]) -> SamplerState {
        SamplerState { hist_len: r[0], done: r[1], max_new_tokens: r[2], stop_token: r[3] }
    }
}

/// Every stage of the processor chain of one request. A stage the pipeline does not have, or that
/// is off, equals its input. Removed tokens are `-inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerStages {
    /// English: `c + w(c − u)`; Turbo: `c`.
    pub cfg: Vec<f32>,
    /// After the repetition penalty (Turbo: the last processor, so equal to `processed`).
    pub rep: Vec<f32>,
    /// After `/temperature` (English: of `rep`; Turbo: of `cfg`).
    pub temp: Vec<f32>,
    /// After min_p (English only).
    pub min_p: Vec<f32>,
    /// After top_p.
    pub top_p: Vec<f32>,
    /// After top_k.
    pub top_k: Vec<f32>,
    /// The final logits.
    pub processed: Vec<f32>,
    /// `softmax(processed)`.
    pub probs: Vec<f32>,
}

/// A total order on float bits (NaN excluded) with `−0 == +0`; the kernel's `order_key`.
pub fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b << 1 == 0 {
        0x8000_0000
    } else if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Fixed-point mass `floor(e · 2^40)` of a token with `e = exp(x − max)` in [0, 1].
pub fn mass_weight(e: f32) -> u64 {
    if e >= 1.0 {
        1 << MASS_SHIFT
    } else if e > 0.0 {
        (e * (1u64 << MASS_SHIFT) as f32) as u64
    } else {
        0
    }
}

fn penalise(x: f32, p: f32) -> f32 {
    if x < 0.0 { x * p } else { x / p }
}

/// The history entries a pipeline penalises: English all of `history`, Turbo `history[1..]`
/// (`history[..1]` when it holds only the BOS).
pub fn penalised_history(pipeline: Pipeline, history: &[i32]) -> &[i32] {
    match pipeline {
        Pipeline::English => history,
        Pipeline::Turbo if history.len() > 1 => &history[1..],
        Pipeline::Turbo => history,
    }
}

/// HF `RepetitionPenaltyLogitsProcessor` over `ids` (each distinct in-range id once).
fn apply_penalty(x: &mut [f32], ids: &[i32], p: f32) {
    let mut seen = vec![false; x.len()];
    for &t in ids {
        if t >= 0 && (t as usize) < x.len() && !seen[t as usize] {
            seen[t as usize] = true;
            x[t as usize] = penalise(x[t as usize], p);
        }
    }
}

fn max_of(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Sum of `exp(x − max)` accumulated in f64 (then rounded to f32).
fn exp_sum(x: &[f32], max: f32) -> f32 {
    x.iter().map(|&v| (v - max).exp() as f64).sum::<f64>() as f32
}

/// top_p < 1 in fixed point (see the module docs): removes in place.
fn top_p_fixed(x: &mut [f32], max: f32, top_p: f32) {
    let w: Vec<u64> = x.iter().map(|&v| mass_weight((v - max).exp())).collect();
    let total: u64 = w.iter().sum();
    if total == 0 {
        x.fill(f32::NEG_INFINITY); // only with NaN inputs; the draw then fails (DONE_ERROR)
        return;
    }
    let thr = (1.0f64 - top_p as f64) as f32;
    let r = ((thr as f64 * total as f64) as u64).min(total - 1);
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by_key(|&j| (order_key(x[j]), j));
    let mut cum = 0u64;
    for j in order {
        cum += w[j];
        if cum > r {
            break;
        }
        x[j] = f32::NEG_INFINITY;
    }
}

/// top_p ≥ 1: HF removes exactly the tokens whose f32 probability is 0.
fn top_p_zero_rule(x: &mut [f32], max: f32) {
    let inv = 1.0f32 / exp_sum(x, max);
    for v in x.iter_mut() {
        if (*v - max).exp() * inv == 0.0 {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// HF `TopKLogitsWarper`: removes `x < k-th largest` (ties kept); no-op for k = 0 or k ≥ V.
fn top_k(x: &mut [f32], k: u32) {
    let k = k as usize;
    if k == 0 || k >= x.len() {
        return;
    }
    let mut keys: Vec<u32> = x.iter().map(|&v| order_key(v)).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let kth = keys[k - 1];
    for v in x.iter_mut() {
        if order_key(*v) < kth {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Softmax as the kernel computes it: `exp(x − max) · (1 / sum)`.
fn softmax(x: &[f32]) -> Vec<f32> {
    let m = max_of(x);
    let inv = 1.0f32 / exp_sum(x, m);
    x.iter().map(|&v| (v - m).exp() * inv).collect()
}

/// Every stage of `settings.pipeline` for one request: `cond`, `uncond` are its two logits rows
/// (`uncond` is unused by Turbo), `history` its full history row (`[BOS, tokens so far..]`; the
/// pipeline picks the penalised part, see [`penalised_history`]).
pub fn sampler_stages(cond: &[f32], uncond: &[f32], history: &[i32], s: &SamplerSettings) -> SamplerStages {
    let ids = penalised_history(s.pipeline, history);
    let div_t = |x: &[f32]| -> Vec<f32> {
        if s.temperature != 1.0 { x.iter().map(|&v| v / s.temperature).collect() } else { x.to_vec() }
    };
    match s.pipeline {
        Pipeline::English => {
            let w = s.cfg_weight;
            let cfg: Vec<f32> = cond.iter().zip(uncond).map(|(&c, &u)| c + w * (c - u)).collect();
            let mut rep = cfg.clone();
            apply_penalty(&mut rep, ids, s.repetition_penalty);
            let temp = div_t(&rep);
            let max = max_of(&temp);
            let mut min_p = temp.clone();
            if s.min_p > 0.0 {
                for v in min_p.iter_mut() {
                    if (*v - max).exp() < s.min_p {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            let mut top_p = min_p.clone();
            if s.top_p < 1.0 {
                top_p_fixed(&mut top_p, max, s.top_p);
            } else {
                top_p_zero_rule(&mut top_p, max);
            }
            let mut tk = top_p.clone();
            top_k(&mut tk, s.top_k);
            let probs = softmax(&tk);
            SamplerStages { cfg, rep, temp, min_p, top_p, top_k: tk.clone(), processed: tk, probs }
        }
        Pipeline::Turbo => {
            let cfg = cond.to_vec();
            let temp = div_t(&cfg);
            let max = max_of(&temp);
            let mut tk = temp.clone();
            top_k(&mut tk, s.top_k);
            let mut top_p = tk.clone();
            if s.top_p < 1.0 {
                top_p_fixed(&mut top_p, max, s.top_p);
            }
            let mut rep = top_p.clone();
            apply_penalty(&mut rep, ids, s.repetition_penalty);
            let probs = softmax(&rep);
            SamplerStages { cfg, rep: rep.clone(), min_p: temp.clone(), temp, top_p, top_k: tk, processed: rep, probs }
        }
    }
}

/// Philox4x32-10 (Random123): 10 rounds of the 4×32 Philox bijection of `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(0x9E37_79B9);
            k[1] = k[1].wrapping_add(0xBB67_AE85);
        }
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The uniform of a draw as a 32-bit integer `r` (u = r / 2^32): the first Philox4x32-10 word for
/// key = `seed` (low word first) and counter = (`step`, `request`, 0, 0).
pub fn draw_bits(seed: u64, step: u32, request: u32) -> u32 {
    philox4x32_10([step, request, 0, 0], [seed as u32, (seed >> 32) as u32])[0]
}

/// Inverse-CDF draw from `processed` logits with the 32-bit uniform `r`: the first index whose
/// inclusive prefix of fixed-point weights exceeds `floor(r · total / 2^32)`. `None` when every
/// weight is 0 (only with NaN logits).
pub fn draw_with_bits(processed: &[f32], r: u32) -> Option<usize> {
    let m = max_of(processed);
    let w: Vec<u64> = processed.iter().map(|&v| mass_weight((v - m).exp())).collect();
    let total: u64 = w.iter().sum();
    if total == 0 {
        return None;
    }
    let target = ((r as u128 * total as u128) >> 32) as u64;
    let mut cum = 0u64;
    w.iter().position(|&wj| {
        cum += wj;
        cum > target
    })
}

/// One draw of request `request` at decode step `step` (tokens generated so far).
pub fn draw_token(processed: &[f32], seed: u64, step: u32, request: u32) -> Option<usize> {
    draw_with_bits(processed, draw_bits(seed, step, request))
}

/// The per-request buffers one decode step updates.
pub struct RequestIo<'a> {
    /// The request's history row (`max_hist` entries; the first `state[0]` are valid).
    pub history: &'a mut [i32],
    /// `[hist_len, done, max_new_tokens, stop_token]`.
    pub state: &'a mut [i32],
    pub next_token: &'a mut i32,
    /// The final probabilities (`V` entries), when wanted.
    pub probs: Option<&'a mut [f32]>,
}

/// One decode step of request number `request` of a batch, as the kernel does it: nothing if it is
/// done; otherwise the processor chain, one draw (Philox counter = (hist_len − 1, 0, 0, 0); `_request`,
/// the batch slot, is deliberately not part of it),
/// the token appended to the history and written to `next_token`, and `done` set on the stop token or
/// when `max_new_tokens` tokens have been generated.
pub fn sample_request(cond: &[f32], uncond: &[f32], settings: &SamplerSettings, _request: u32, io: RequestIo<'_>) {
    let st = SamplerState::from_row(io.state);
    if st.done != DONE_RUNNING {
        return;
    }
    if st.hist_len < 1 {
        io.state[1] = DONE_ERROR;
        return;
    }
    if st.hist_len > st.max_new_tokens {
        io.state[1] = DONE_MAX_TOKENS;
        return;
    }
    let n = st.hist_len as usize;
    if n >= io.history.len() {
        io.state[1] = DONE_ERROR;
        return;
    }
    let stages = sampler_stages(cond, uncond, &io.history[..n], settings);
    if let Some(p) = io.probs {
        p.copy_from_slice(&stages.probs);
    }
    // the counter leaves out the slot (`request`): a request draws the same tokens in any batch slot
    let Some(tok) = draw_token(&stages.processed, settings.seed, (n - 1) as u32, 0) else {
        io.state[1] = DONE_ERROR;
        return;
    };
    io.history[n] = tok as i32;
    *io.next_token = tok as i32;
    io.state[0] = st.hist_len + 1;
    if tok as i32 == st.stop_token {
        io.state[1] = DONE_STOP;
    } else if st.hist_len >= st.max_new_tokens {
        io.state[1] = DONE_MAX_TOKENS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_f32;

    #[test]
    fn philox_matches_the_random123_known_answers() {
        // Random123 kat_vectors, "philox4x32 10" lines: counter, key → output
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn order_key_is_the_float_order() {
        let v = [f32::NEG_INFINITY, -3.5, -1e-40, -0.0, 0.0, 1e-40, 2.0, f32::MAX, f32::INFINITY];
        for w in v.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
            assert_eq!(order_key(w[0]) == order_key(w[1]), w[0] == w[1], "{w:?}");
        }
    }

    #[test]
    fn repetition_penalty_applies_once_per_distinct_token() {
        let mut x = vec![2.0, -2.0, 3.0, 0.0];
        apply_penalty(&mut x, &[0, 1, 0, 1, 0, 7, -1, 3], 2.0);
        assert_eq!(x, [1.0, -4.0, 3.0, 0.0]);
    }

    #[test]
    fn top_k_keeps_ties_and_counts_duplicates() {
        let mut x = vec![1.0, 3.0, 3.0, 2.0, 3.0, -0.0];
        top_k(&mut x, 2);
        assert_eq!(x, [f32::NEG_INFINITY, 3.0, 3.0, f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY]);
        let mut z = vec![0.0, -0.0, -1.0];
        top_k(&mut z, 1);
        assert_eq!(z[..2], [0.0, -0.0]); // -0 == +0: a tie, kept
        assert_eq!(z[2], f32::NEG_INFINITY);
    }

    /// HF TopPLogitsWarper in float arithmetic (softmax, ascending stable sort, cumsum, `<= 1 − p`).
    fn hf_top_p(x: &[f32], top_p: f32) -> (Vec<bool>, f64) {
        let probs = softmax(x);
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by_key(|&j| (order_key(x[j]), j));
        let thr = (1.0f64 - top_p as f64) as f32;
        let mut removed = vec![false; x.len()];
        let (mut cum, mut margin) = (0f64, f64::INFINITY);
        for (i, &j) in order.iter().enumerate() {
            cum += probs[j] as f64;
            margin = margin.min((cum - thr as f64).abs());
            removed[j] = i + 1 < order.len() && (cum as f32) <= thr;
        }
        (removed, margin)
    }

    #[test]
    fn fixed_point_top_p_matches_float_top_p_away_from_the_threshold() {
        let (mut checked, mut skipped) = (0, 0);
        for seed in 0..200u64 {
            let v = 1 + (seed as usize * 37) % 300;
            let x: Vec<f32> = random_f32(seed, v, 1.0 + (seed % 5) as f32);
            let top_p = [0.1, 0.5, 0.8, 0.95, 0.99][seed as usize % 5];
            let (want, margin) = hf_top_p(&x, top_p);
            if margin < 1e-6 {
                skipped += 1; // within float rounding of the threshold: either answer is right
                continue;
            }
            let mut got = x.clone();
            top_p_fixed(&mut got, max_of(&x), top_p);
            let got: Vec<bool> = got.iter().map(|v| *v == f32::NEG_INFINITY).collect();
            assert_eq!(got, want, "seed {seed} V {v} top_p {top_p}");
            checked += 1;
        }
        assert!(skipped < 5 && checked > 190, "{checked} checked, {skipped} at the threshold");
    }

    #[test]
    fn top_p_with_ties_removes_in_index_order() {
        // four equal tokens: each has probability 1/4; top_p 0.5 removes cumulative <= 0.5, i.e. the
        // first two in a stable ascending sort (lowest indices)
        let mut x = vec![1.0f32; 4];
        top_p_fixed(&mut x, 1.0, 0.5);
        assert_eq!(x, [f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, 1.0]);
        // top_p 0 keeps only the last in order: the highest index among the maxima
        let mut y = vec![2.0f32, 1.0, 2.0, 0.5];
        top_p_fixed(&mut y, 2.0, 0.0);
        assert_eq!(y, [f32::NEG_INFINITY, f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn top_p_one_removes_only_zero_probability_tokens() {
        // exp(-95) ≈ 5.5e-42 is subnormal but ~3900 ulps above zero: kept. (exp(-103) ≈ 1.8e-45 sits at
        // the smallest subnormal, where a libm — or Miri's deliberately inexact exp — may round either
        // way; that is no property of ours to test.) exp(-200) is 0 in f32 however it rounds: removed.
        let x = vec![0.0f32, -50.0, -200.0, f32::NEG_INFINITY, -95.0];
        let mut y = x.clone();
        top_p_zero_rule(&mut y, 0.0);
        assert_eq!(y, [0.0, -50.0, f32::NEG_INFINITY, f32::NEG_INFINITY, -95.0]);
    }

    #[test]
    fn draw_inverts_the_fixed_point_cdf() {
        // weights 2^40 · [1, 1, 0, 1] → thirds: r below 1/3 → 0, then 1, then 3; never 2
        let x = [0.0f32, 0.0, f32::NEG_INFINITY, 0.0];
        assert_eq!(draw_with_bits(&x, 0), Some(0));
        assert_eq!(draw_with_bits(&x, 0x5555_5555), Some(0));
        assert_eq!(draw_with_bits(&x, 0x5555_5556), Some(1));
        assert_eq!(draw_with_bits(&x, 0xaaaa_aaab), Some(3));
        assert_eq!(draw_with_bits(&x, u32::MAX), Some(3));
        assert_eq!(draw_with_bits(&[f32::NAN], 5), None);
    }

    #[test]
    fn settings_rows_round_trip() {
        let s = SamplerSettings {
            pipeline: Pipeline::Turbo,
            top_k: 50,
            seed: 0xdead_beef_8000_0001,
            ..SamplerSettings::ENGLISH_DEFAULT
        };
        assert_eq!(SamplerSettings::from_rows(&s.f32_row(), &s.i32_row()), s);
        assert!(s.validate().is_ok());
        assert!(SamplerSettings { temperature: 0.0, ..s }.validate().is_err());
        assert!(SamplerSettings { top_p: 1.5, ..s }.validate().is_err());
    }
}
