//! One layer of PyTorch's `nn.LSTM` (`batch_first`, unidirectional, zero initial state), run over a
//! batch of equal-length sequences at once.
//!
//! Per step, with gates in PyTorch's order i, f, g, o (rows `[0,H)`, `[H,2H)`, `[2H,3H)`, `[3H,4H)`
//! of the weights):
//! `z = W_ih·x_t + b_ih + W_hh·h + b_hh`, `i,f,o = σ(z)`, `g = tanh(z)`, `c = f⊙c + i⊙g`,
//! `h = o⊙tanh(c)`.
//!
//! Speed:
//! - the input projection `W_ih·x_t + b_ih + b_hh` of every step and every sequence is one GEMM per
//!   layer;
//! - each step then adds `h·W_hhᵀ` for all sequences: the hidden units are split into chunks of
//!   [`UNITS_PER_TASK`], one rayon task each, whose task multiplies `h` by its units' four gate rows
//!   of `W_hh` (one GEMM) and updates those units' `c` and `h`, so the step's gate arithmetic runs in
//!   parallel too;
//! - the weights are packed once at load for tts-kernels' panel GEMM ([`gemm_panels`]): the
//!   recurrence's GEMMs are small (rows = sequences) and many (one per step), where a GEMM that
//!   packs its weight on every call (or a GEMV per row) spends much of its time outside the
//!   multiply-adds.
//!
//! Every output element is summed in the same order whatever the chunking or the batch (the panel
//! GEMM sums each row alone), so a sequence's result does not depend on the others.
use rayon::prelude::*;
use tts_kernels::cpu::{gemm_panels, pack_gemm, packed_gemm_len};

/// Hidden units per parallel task of the recurrence (its GEMM has `4·32 = 128` columns: 8 panels).
pub const UNITS_PER_TASK: usize = 32;

/// One LSTM layer's weights.
pub struct LstmLayer {
    /// Input width.
    pub input: usize,
    /// Hidden width H.
    pub hidden: usize,
    /// `weight_ih` `[4H][input]`, packed by [`pack_gemm`].
    w_ih: Vec<f32>,
    /// `bias_ih + bias_hh`, `[4H]`.
    bias: Vec<f32>,
    /// `weight_hh` by chunks of hidden units: chunk `q` (units `j0 = 32q ..j0 + u`) holds the rows
    /// `k·H + j0 + j` (gate `k` = i, f, g, o; `j < u`) as a `[4u][H]` weight, packed.
    w_hh: Vec<Vec<f32>>,
}

fn packed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut p = vec![0f32; packed_gemm_len(n, k)];
    pack_gemm(w, n, k, &mut p);
    p
}

/// The running state of one chunk of hidden units over the batch.
struct ChunkState {
    /// First unit.
    j0: usize,
    /// Units.
    u: usize,
    /// Cell state `[batch][u]`.
    c: Vec<f32>,
    /// Hidden state of the step just computed, `[batch][u]`.
    h: Vec<f32>,
    /// `h_prev·W_hhᵀ` for these units, `[batch][4u]`.
    rec: Vec<f32>,
}

/// `eˣ` in f32, branch-free so that the gate loop vectorizes (libm's `expf` is a call per value:
/// a fifth of the encoder's time): Cephes' `expf` (`2ⁿ·e^r`, `|r| ≤ ln2/2`, degree-7 polynomial,
/// about 1 ulp), `x` clamped to `[−87, 88]` (results stay normal).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12582912.0; // 1.5·2²³: adding it rounds to an integer (|v| < 2²²)
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `1 / (1 + e⁻ˣ)`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh x`: Cephes' odd polynomial below |x| = 0.625 (where `(e²ˣ − 1)/(e²ˣ + 1)` would cancel),
/// that quotient above; both computed and one selected, branch-free.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328e-1) * z * x + x;
    let e = exp(2.0 * x.clamp(-9.0, 9.0));
    let large = (e - 1.0) / (e + 1.0);
    if x.abs() < 0.625 { small } else { large }
}

impl LstmLayer {
    /// A layer from PyTorch's tensors (`weight_ih_l{k}` `[4H, input]`, `weight_hh_l{k}` `[4H, H]`,
    /// `bias_ih_l{k}`, `bias_hh_l{k}` `[4H]`); the two biases are summed once here.
    pub fn new(input: usize, hidden: usize, w_ih: &[f32], w_hh: &[f32], b_ih: &[f32], b_hh: &[f32]) -> LstmLayer {
        assert!(w_ih.len() == 4 * hidden * input && w_hh.len() == 4 * hidden * hidden, "LstmLayer::new: weight sizes");
        assert!(b_ih.len() == 4 * hidden && b_hh.len() == 4 * hidden, "LstmLayer::new: bias sizes");
        let bias = b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect();
        let w_hh = (0..hidden)
            .step_by(UNITS_PER_TASK)
            .map(|j0| {
                let u = UNITS_PER_TASK.min(hidden - j0);
                let rows: Vec<f32> = (0..4)
                    .flat_map(|k| (0..u).flat_map(move |j| &w_hh[(k * hidden + j0 + j) * hidden..][..hidden]))
                    .copied()
                    .collect();
                packed(&rows, 4 * u, hidden)
            })
            .collect();
        LstmLayer { input, hidden, w_ih: packed(w_ih, 4 * hidden, input), bias, w_hh }
    }

    /// Runs the layer over `batch` sequences of `steps` steps. `x` is time-major,
    /// `[steps][batch][input]`; returns every step's hidden state, `[steps][batch][H]` (the last
    /// step's rows are `h_n`).
    pub fn forward(&self, x: &[f32], steps: usize, batch: usize) -> Vec<f32> {
        let (h4, hid) = (4 * self.hidden, self.hidden);
        assert_eq!(x.len(), steps * batch * self.input, "LstmLayer::forward: input size");
        // input projection of every step at once: [steps·batch][4H]
        let mut pre = vec![0f32; steps * batch * h4];
        gemm_panels(x, &self.w_ih, Some(&self.bias), &mut pre, steps * batch, h4, self.input);
        let mut out = vec![0f32; steps * batch * hid];
        let mut chunks: Vec<ChunkState> = (0..hid)
            .step_by(UNITS_PER_TASK)
            .map(|j0| {
                let u = UNITS_PER_TASK.min(hid - j0);
                ChunkState { j0, u, c: vec![0f32; batch * u], h: vec![0f32; batch * u], rec: vec![0f32; batch * 4 * u] }
            })
            .collect();
        for t in 0..steps {
            let (done, now) = out.split_at_mut(t * batch * hid);
            let h_prev = (t > 0).then(|| &done[(t - 1) * batch * hid..]);
            let z = &pre[t * batch * h4..(t + 1) * batch * h4];
            chunks.par_iter_mut().zip(&self.w_hh).for_each(|(s, w)| {
                let (j0, u) = (s.j0, s.u);
                match h_prev {
                    Some(h) => gemm_panels(h, w, None, &mut s.rec, batch, 4 * u, hid),
                    None => s.rec.fill(0.0), // h₀ = 0
                }
                for b in 0..batch {
                    let zb = &z[b * h4..(b + 1) * h4];
                    let (zi, zf, zg, zo) =
                        (&zb[j0..][..u], &zb[hid + j0..][..u], &zb[2 * hid + j0..][..u], &zb[3 * hid + j0..][..u]);
                    let rb = &s.rec[b * 4 * u..(b + 1) * 4 * u];
                    let (ri, rf, rg, ro) = (&rb[..u], &rb[u..2 * u], &rb[2 * u..3 * u], &rb[3 * u..]);
                    let (cb, hb) = (&mut s.c[b * u..(b + 1) * u], &mut s.h[b * u..(b + 1) * u]);
                    for j in 0..u {
                        let i = sigmoid(zi[j] + ri[j]);
                        let f = sigmoid(zf[j] + rf[j]);
                        let g = tanh(zg[j] + rg[j]);
                        let o = sigmoid(zo[j] + ro[j]);
                        cb[j] = f * cb[j] + i * g;
                        hb[j] = o * tanh(cb[j]);
                    }
                }
            });
            let h_t = &mut now[..batch * hid];
            for s in &chunks {
                for (b, hb) in s.h.chunks_exact(s.u).enumerate() {
                    h_t[b * hid + s.j0..][..s.u].copy_from_slice(hb);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tts_kernels::testing::fresh_seed;

    use super::*;

    /// A naive f64 LSTM over one sequence `[steps][input]`, separate biases, returning h per step.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        steps: usize,
        input: usize,
        hid: usize,
        w_ih: &[f32],
        w_hh: &[f32],
        b_ih: &[f32],
        b_hh: &[f32],
    ) -> Vec<f64> {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut h, mut c) = (vec![0f64; hid], vec![0f64; hid]);
        let mut out = Vec::new();
        for t in 0..steps {
            let z: Vec<f64> = (0..4 * hid)
                .map(|r| {
                    let a: f64 = (0..input).map(|k| w_ih[r * input + k] as f64 * x[t * input + k] as f64).sum();
                    let b: f64 = (0..hid).map(|k| w_hh[r * hid + k] as f64 * h[k]).sum();
                    a + b_ih[r] as f64 + b + b_hh[r] as f64
                })
                .collect();
            for j in 0..hid {
                let (i, f, g, o) = (sig(z[j]), sig(z[hid + j]), z[2 * hid + j].tanh(), sig(z[3 * hid + j]));
                c[j] = f * c[j] + i * g;
                h[j] = o * c[j].tanh();
            }
            out.extend_from_slice(&h);
        }
        out
    }

    #[test]
    fn exp_sigmoid_and_tanh_are_within_a_few_ulp() {
        let mut worst = [0f64; 3];
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 1e-5 * (1.0 + (i as f32).abs() * 2e-6); // dense near 0, out to ±100
            let rel = |got: f32, want: f64| ((got as f64 - want) / want.abs().max(f32::MIN_POSITIVE as f64)).abs();
            // (below −87 both are clamped: sigmoid(x) < 2e-38 there, not relatively exact)
            if x.abs() < 80.0 {
                worst[0] = worst[0].max(rel(exp(x), (x as f64).exp()));
                worst[1] = worst[1].max(rel(sigmoid(x), 1.0 / (1.0 + (-(x as f64)).exp())));
            }
            worst[2] = worst[2].max(rel(tanh(x), (x as f64).tanh()));
        }
        println!("worst relative errors: exp {:.2e} sigmoid {:.2e} tanh {:.2e}", worst[0], worst[1], worst[2]);
        // f32's ulp is 1.19e-7 relative at most
        assert!(worst.iter().all(|&w| w < 4e-7), "{worst:?}");
        assert_eq!((tanh(0.0), tanh(f32::MAX), tanh(-f32::MAX)), (0.0, 1.0, -1.0));
        assert!(sigmoid(-1e30) < 1e-37 && sigmoid(1e30) == 1.0 && sigmoid(f32::NAN).is_nan() == exp(f32::NAN).is_nan());
    }

    #[test]
    fn lstm_layer_matches_a_naive_f64_lstm() {
        let seed = fresh_seed();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        // odd sizes (not multiples of the 16-column panels, 6-row tiles or 32-unit tasks); batches of 1 to 19
        for (input, hid, steps, batch) in [(7, 13, 11, 3), (40, 37, 29, 19), (5, 1, 4, 1), (9, 70, 6, 5)] {
            let scale = 1.0 / (hid as f32).sqrt();
            let mut r = |n: usize, s: f32| (0..n).map(|_| rng.random_range(-s..s)).collect::<Vec<f32>>();
            let (w_ih, w_hh) = (r(4 * hid * input, 2.0 * scale), r(4 * hid * hid, 2.0 * scale));
            let (b_ih, b_hh) = (r(4 * hid, 0.5), r(4 * hid, 0.5));
            let x = r(steps * batch * input, 1.5); // time-major [steps][batch][input]
            let layer = LstmLayer::new(input, hid, &w_ih, &w_hh, &b_ih, &b_hh);
            let got = layer.forward(&x, steps, batch);
            assert_eq!(got.len(), steps * batch * hid);
            for b in 0..batch {
                let seq: Vec<f32> =
                    (0..steps).flat_map(|t| x[(t * batch + b) * input..(t * batch + b + 1) * input].to_vec()).collect();
                let want = naive(&seq, steps, input, hid, &w_ih, &w_hh, &b_ih, &b_hh);
                for t in 0..steps {
                    for j in 0..hid {
                        let (g, w) = (got[(t * batch + b) * hid + j] as f64, want[t * hid + j]);
                        assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "sizes {input}/{hid} t {t} b {b} j {j}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
